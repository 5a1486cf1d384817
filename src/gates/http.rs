//! The HTTP client gates call with: it calls only addresses the operator's
//! [`AddressPolicy`] allows, checked where the connection is made.
//!
//! - Names are resolved by [`PolicyResolver`], which drops every refused address, so a
//!   name that starts resolving to the metadata endpoint (DNS rebinding) is not called.
//! - IP literals are not resolved: providers call [`AddressPolicy::check_url`] before
//!   each request.
//! - Redirects are followed only to URLs the policy allows.
//! - Proxies from the environment are not used: through a proxy the policy could not see
//!   the address actually called.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

use crate::engine::AddressPolicy;

/// Redirects followed at most, as reqwest does by default.
const MAX_REDIRECTS: usize = 10;

/// A client for gates under `policy`. Needs a rustls crypto provider installed process-wide.
pub fn client(policy: Arc<AddressPolicy>) -> Result<reqwest::Client, reqwest::Error> {
    let redirects = policy.clone();
    reqwest::Client::builder()
        .user_agent(concat!("ringfence/", env!("CARGO_PKG_VERSION")))
        .no_proxy()
        .dns_resolver(Arc::new(PolicyResolver { policy }))
        .redirect(redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match redirects.check_url(attempt.url().as_str()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(format!("redirect refused: {why}")),
            }
        }))
        .build()
}

/// The system resolver, keeping only the addresses the policy allows.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.check_ip(Some(&host), addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or_else(|| format!("{host} has no address"));
                return Err(Box::new(Refused(format!(
                    "gate address policy refuses {host}: {why}"
                ))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(policy: AddressPolicy, name: &str) -> Result<Vec<SocketAddr>, String> {
        let resolver = PolicyResolver::new(Arc::new(policy));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime
            .block_on(resolver.resolve(name.parse().unwrap()))
            .map(|addrs| addrs.collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn resolved_addresses_are_checked_even_for_allowed_names() {
        // `localhost` resolves to loopback from /etc/hosts, without a DNS server.
        let named = AddressPolicy::new(vec!["localhost".parse().unwrap()]);
        let err = resolve(named, "localhost").unwrap_err();
        assert!(err.contains("loopback"), "{err}");

        let loopback = AddressPolicy::new(vec![
            "localhost".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
            "::1".parse().unwrap(),
        ]);
        let addrs = resolve(loopback, "localhost").unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
