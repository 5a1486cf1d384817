//! Webhook gate: POST the evaluation's context as JSON; 2xx passes, 4xx/5xx fails with an
//! excerpt of the body's first line as the reason, and a timeout, a connection error or an
//! address the policy refuses is inconclusive (an unreachable judge never counts as
//! healthy). TLS certificates are verified.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::answer::excerpt;
use crate::api::{Verdict, WebhookGate};
use crate::engine::{AddressPolicy, GatePurpose, GateRequest, GateResult, RolloutMeta};

/// Bytes of a response body read for its first line.
const MAX_BODY_READ: usize = 16 * 1024;

/// What the endpoint receives.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload<'a> {
    /// `namespace/name` of the ConfigRollout.
    pub rollout: String,
    pub namespace: &'a str,
    pub gate: &'a str,
    pub revision: &'a str,
    pub ring: &'a str,
    pub ring_index: usize,
    pub namespaces: &'a [String],
    /// `baseline` (before the ring is touched) or `check` (during the bake).
    pub purpose: &'static str,
}

impl<'a> WebhookPayload<'a> {
    pub fn new(rollout: &'a RolloutMeta, req: &'a GateRequest) -> Self {
        Self {
            rollout: format!("{}/{}", rollout.namespace, rollout.name),
            namespace: &rollout.namespace,
            gate: &req.gate,
            revision: &req.revision,
            ring: &req.ring_name,
            ring_index: req.ring,
            namespaces: &req.namespaces,
            purpose: match req.purpose {
                GatePurpose::Baseline => "baseline",
                GatePurpose::Check => "check",
            },
        }
    }
}

/// Evaluates webhook gates with one shared HTTP client.
#[derive(Clone, Debug)]
pub struct WebhookProvider {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl WebhookProvider {
    /// Calls only what `policy` allows. Needs a rustls crypto provider installed process-wide.
    pub fn new(policy: Arc<AddressPolicy>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: super::http::client(policy.clone())?,
            policy,
        })
    }

    pub async fn evaluate(
        &self,
        gate: &WebhookGate,
        timeout: Duration,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> GateResult {
        let (verdict, message) = match self.policy.check_url(&gate.url) {
            Err(why) => (Verdict::Inconclusive, format!("webhook not called: {why}")),
            Ok(()) => self.call(gate, timeout, rollout, req).await,
        };
        GateResult {
            gate: req.gate.clone(),
            ring: req.ring,
            purpose: req.purpose,
            verdict,
            value: None,
            baseline: None,
            threshold: None,
            message,
            at: now,
        }
    }

    async fn call(
        &self,
        gate: &WebhookGate,
        timeout: Duration,
        rollout: &RolloutMeta,
        req: &GateRequest,
    ) -> (Verdict, String) {
        let payload = WebhookPayload::new(rollout, req);
        match self
            .http
            .post(&gate.url)
            .timeout(timeout)
            .json(&payload)
            .send()
            .await
        {
            Err(e) if e.is_timeout() => (
                Verdict::Inconclusive,
                format!("webhook did not answer within {timeout:?}"),
            ),
            Err(e) => (
                Verdict::Inconclusive,
                format!("webhook unreachable: {}", excerpt(&error_chain(&e))),
            ),
            Ok(mut resp) => {
                let status = resp.status();
                let reason = first_line(&read_head(&mut resp).await);
                if status.is_success() {
                    (Verdict::Pass, format!("webhook answered {status}"))
                } else if status.is_client_error() || status.is_server_error() {
                    let reason = if reason.is_empty() {
                        "no reason given".to_string()
                    } else {
                        reason
                    };
                    (
                        Verdict::Fail,
                        format!("webhook answered {status}: {reason}"),
                    )
                } else {
                    (
                        Verdict::Inconclusive,
                        format!("webhook answered unexpected {status}"),
                    )
                }
            }
        }
    }
}

/// The start of a response body: enough for its first line, never all of a huge answer.
async fn read_head(resp: &mut reqwest::Response) -> String {
    let mut head = Vec::new();
    while head.len() < MAX_BODY_READ {
        match resp.chunk().await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            _ => break,
        }
    }
    head.truncate(MAX_BODY_READ);
    String::from_utf8_lossy(&head).into_owned()
}

/// An excerpt of the first line with something printable on it (headers are never read).
fn first_line(body: &str) -> String {
    body.lines()
        .map(excerpt)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    fn request() -> (RolloutMeta, GateRequest) {
        let meta = RolloutMeta {
            namespace: "platform".into(),
            name: "flags".into(),
            ..RolloutMeta::default()
        };
        let req = GateRequest {
            gate: "smoke".into(),
            ring: 1,
            ring_name: "early".into(),
            purpose: GatePurpose::Check,
            revision: "abc123".into(),
            namespaces: vec!["cell-1".into(), "cell-2".into()],
            unchanged_namespaces: vec![],
            baseline: None,
            definition: crate::api::Gate {
                name: "smoke".into(),
                interval: "30s".into(),
                failure_limit: 1,
                prometheus: None,
                webhook: None,
            },
        };
        (meta, req)
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.ok() });
        format!("http://{addr}/check")
    }

    /// The tests' servers listen on 127.0.0.1, which the default policy refuses.
    fn loopback() -> Arc<AddressPolicy> {
        Arc::new(AddressPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]))
    }

    async fn eval(url: String, timeout: Duration) -> GateResult {
        eval_with(loopback(), url, timeout).await
    }

    async fn eval_with(policy: Arc<AddressPolicy>, url: String, timeout: Duration) -> GateResult {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = WebhookProvider::new(policy).unwrap();
        let (meta, req) = request();
        let gate = WebhookGate {
            url,
            timeout: "1s".into(),
        };
        provider
            .evaluate(&gate, timeout, &meta, &req, Timestamp::UNIX_EPOCH)
            .await
    }

    #[tokio::test]
    async fn success_passes_and_sends_the_context() {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let router = Router::new().route(
            "/check",
            post(move |body: axum::Json<serde_json::Value>| async move {
                *sink.lock().unwrap() = Some(body.0);
                StatusCode::NO_CONTENT
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Pass, "{}", result.message);
        assert_eq!((result.gate.as_str(), result.ring), ("smoke", 1));
        let body = seen.lock().unwrap().clone().unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "rollout": "platform/flags", "namespace": "platform", "gate": "smoke",
                "revision": "abc123", "ring": "early", "ringIndex": 1,
                "namespaces": ["cell-1", "cell-2"], "purpose": "check",
            })
        );
    }

    #[tokio::test]
    async fn client_and_server_errors_fail_with_the_first_line() {
        let router = Router::new().route(
            "/check",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "\n  checkout smoke test failed  \ndetails",
                )
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Fail);
        assert!(
            result.message.ends_with(": checkout smoke test failed"),
            "{}",
            result.message
        );

        let router = Router::new().route("/check", post(|| async { StatusCode::FORBIDDEN }));
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Fail);
        assert!(result.message.contains("403"), "{}", result.message);
    }

    #[tokio::test]
    async fn timeout_is_inconclusive() {
        let router = Router::new().route(
            "/check",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                StatusCode::OK
            }),
        );
        let result = eval(serve(router).await, Duration::from_millis(200)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
    }

    #[tokio::test]
    async fn connection_error_is_inconclusive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = eval(format!("http://{addr}/check"), Duration::from_secs(2)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert!(result.message.starts_with("webhook unreachable"));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(first_line(""), "");
        assert_eq!(first_line("\n \x1b\n second"), "second");
        let long = "é".repeat(500);
        assert_eq!(
            first_line(&long).chars().count(),
            crate::gates::answer::MAX_EXCERPT
        );
    }

    /// A server that counts the requests it receives.
    async fn counting(status: StatusCode) -> (String, Arc<Mutex<usize>>) {
        let hits = Arc::new(Mutex::new(0));
        let sink = hits.clone();
        let router = Router::new().route(
            "/check",
            post(move || async move {
                *sink.lock().unwrap() += 1;
                status
            }),
        );
        (serve(router).await, hits)
    }

    #[tokio::test]
    async fn refused_addresses_are_not_called() {
        let (url, hits) = counting(StatusCode::OK).await;
        let result = eval_with(
            Arc::new(AddressPolicy::default()),
            url.clone(),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert!(
            result
                .message
                .starts_with("webhook not called: address 127.0.0.1 is loopback"),
            "{}",
            result.message
        );
        // A name the allow-list admits is still not called at a refused address.
        let by_name = url.replace("127.0.0.1", "localhost");
        let named = Arc::new(AddressPolicy::new(vec!["localhost".parse().unwrap()]));
        let result = eval_with(named, by_name, Duration::from_secs(2)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert!(
            result
                .message
                .contains("gate address policy refuses localhost"),
            "{}",
            result.message
        );
        assert_eq!(*hits.lock().unwrap(), 0, "nothing was sent");
    }

    #[tokio::test]
    async fn redirects_to_refused_addresses_are_not_followed() {
        let router = Router::new().route(
            "/check",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(2)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert!(
            result.message.contains("redirect refused") && result.message.contains("link-local"),
            "{}",
            result.message
        );
    }

    #[tokio::test]
    async fn answers_are_cut_and_cleaned_before_they_reach_a_message() {
        let body = format!(
            "\x1b]0;owned\x07{}\r\nX-Secret: header-like",
            "A".repeat(100_000)
        );
        let router = Router::new().route(
            "/check",
            post(move || async move {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [("x-internal-token", "do-not-copy")],
                    body,
                )
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Fail);
        let reason = result
            .message
            .strip_prefix("webhook answered 500 Internal Server Error: ")
            .unwrap_or_else(|| panic!("{}", result.message));
        assert_eq!(reason.chars().count(), crate::gates::answer::MAX_EXCERPT);
        assert!(
            !result.message.chars().any(char::is_control),
            "{:?}",
            result.message
        );
        assert!(!result.message.contains("do-not-copy") && !result.message.contains("X-Secret"));
    }
}
