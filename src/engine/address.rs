//! Where gates may call: the operator's address policy for webhook and Prometheus URLs.
//!
//! Gates run from the operator's network identity, so a rollout's author could otherwise
//! point one at the cloud metadata endpoint, a sidecar's admin port on loopback or the API
//! server (server-side request forgery). Some addresses are refused by default:
//!
//! - link-local (`169.254.0.0/16`, `fe80::/10`) and the cloud metadata endpoints
//!   (`100.100.100.200`, `fd00:ec2::254`, `metadata.google.internal`, `metadata`);
//! - loopback (`127.0.0.0/8`, `::1`, `localhost`) and "this host" (`0.0.0.0/8`, `::`):
//!   from the operator's pod they reach its own endpoints and its sidecars' admin APIs;
//! - multicast and broadcast;
//! - the API server's own addresses (added by the controller at start-up).
//!
//! The allow-list (`--gate-allowed-hosts`) holds host names (`prometheus.monitoring`),
//! name suffixes (`*.monitoring.svc`), addresses and CIDRs. Empty, any address not refused
//! is allowed; otherwise a URL's host must match a name entry, or every address it is
//! called at must lie in a CIDR entry. Broad entries never lift a refusal: a refused
//! address is allowed only by an entry that lies wholly inside a refused range (e.g.
//! `127.0.0.1/32` for tests), a refused name only by naming it.
//!
//! The check runs twice: on the URL when the rollout is validated (what can be judged
//! without DNS), and at connect time on every resolved address (DNS can change).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use url::{Host, Url};

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    /// The single address `ip`.
    pub fn host(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32)
                    == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128)
                    == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }

    /// Whether every address of `self` is in `other`.
    fn within(&self, other: &Cidr) -> bool {
        self.prefix >= other.prefix && other.contains(self.addr)
    }
}

fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let shift = u32::from(width - prefix.min(width));
    (bits >> shift) << shift
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {width}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One `--gate-allowed-hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this host name (lowercase, no trailing dot).
    Name(String),
    /// Any name ending in `.suffix` (written `*.suffix`).
    Suffix(String),
    /// Any address in this network.
    Net(Cidr),
}

impl HostPattern {
    fn matches_name(&self, name: &str) -> bool {
        match self {
            HostPattern::Name(n) => n == name,
            HostPattern::Suffix(s) => name
                .strip_suffix(s.as_str())
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            HostPattern::Net(_) => false,
        }
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty entry".into());
        }
        if s.contains('/') || s.parse::<IpAddr>().is_ok() || s.starts_with('[') {
            return s.parse().map(HostPattern::Net);
        }
        let (suffix, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = normalize(name);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            return Err(format!(
                "{s:?} is not a host name, *.suffix, IP address or CIDR"
            ));
        }
        Ok(if suffix {
            HostPattern::Suffix(name)
        } else {
            HostPattern::Name(name)
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
            HostPattern::Net(c) => c.fmt(f),
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Ranges refused unless an allow-list entry inside them names them on purpose.
const REFUSED_RANGES: [(Cidr, &str); 12] = [
    (Cidr::v4(169, 254, 0, 0, 16), "link-local"),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        Cidr::v4(100, 100, 100, 200, 32),
        "a cloud metadata endpoint",
    ),
    (
        Cidr::v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128),
        "a cloud metadata endpoint",
    ),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (Cidr::v4(0, 0, 0, 0, 8), "this host"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "this host"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
    (Cidr::v4(255, 255, 255, 255, 32), "broadcast"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved"),
];

/// Names refused unless the allow-list names them.
const REFUSED_NAMES: [(&str, &str); 3] = [
    ("metadata.google.internal", "a cloud metadata endpoint"),
    ("metadata", "a cloud metadata endpoint"),
    ("localhost", "loopback"),
];

/// The operator's address policy for gates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<HostPattern>,
    /// The API server's own addresses and names.
    api_server: Vec<HostPattern>,
}

impl AddressPolicy {
    pub fn new(allowed: Vec<HostPattern>) -> Self {
        Self {
            allowed,
            api_server: Vec::new(),
        }
    }

    pub fn allowed(&self) -> &[HostPattern] {
        &self.allowed
    }

    /// Refuses the API server's address (a name, an IP, or both once resolved).
    pub fn refuse_api_server(&mut self, host: HostPattern) {
        if !self.api_server.contains(&host) {
            self.api_server.push(host);
        }
    }

    /// Checks a gate URL as far as it can be judged without DNS.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "{url:?}: only http and https URLs are called, not {}",
                parsed.scheme()
            ));
        }
        match parsed.host() {
            None => Err(format!("{url:?} has no host")),
            Some(Host::Ipv4(ip)) => self.check_ip(None, IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_ip(None, IpAddr::V6(ip)),
            Some(Host::Domain(name)) => self.check_name(&normalize(name)),
        }
    }

    /// Checks an address that `name` resolved to (or an IP literal, with no name).
    pub fn check_ip(&self, name: Option<&str>, ip: IpAddr) -> Result<(), String> {
        let ip = ip.to_canonical();
        let named_on_purpose = |range: &Cidr| {
            self.allowed
                .iter()
                .any(|a| matches!(a, HostPattern::Net(n) if n.within(range) && n.contains(ip)))
        };
        let refused = REFUSED_RANGES
            .iter()
            .find(|(range, _)| range.contains(ip))
            .map(|(range, why)| (*range, *why))
            .or_else(|| {
                self.api_server.iter().find_map(|p| match p {
                    HostPattern::Net(n) if n.contains(ip) => Some((*n, "the API server")),
                    _ => None,
                })
            });
        if let Some((range, why)) = refused {
            if named_on_purpose(&range) {
                return Ok(());
            }
            return Err(format!(
                "address {ip} is {why}, which gates may not call unless --gate-allowed-hosts lists {}",
                Cidr::host(ip)
            ));
        }
        let name_allowed = name.is_some_and(|n| self.allowed.iter().any(|a| a.matches_name(n)));
        let ip_allowed = self
            .allowed
            .iter()
            .any(|a| matches!(a, HostPattern::Net(n) if n.contains(ip)));
        if self.allowed.is_empty() || name_allowed || ip_allowed {
            Ok(())
        } else {
            Err(format!(
                "address {ip}{} is not in --gate-allowed-hosts",
                name.map(|n| format!(" of {n}")).unwrap_or_default()
            ))
        }
    }

    fn check_name(&self, name: &str) -> Result<(), String> {
        let named = self
            .allowed
            .iter()
            .any(|a| matches!(a, HostPattern::Name(n) if n == name));
        let refused = REFUSED_NAMES
            .iter()
            .find(|(n, _)| *n == name || (*n == "localhost" && name.ends_with(".localhost")))
            .map(|(_, why)| *why)
            .or_else(|| {
                self.api_server
                    .iter()
                    .any(|p| p.matches_name(name))
                    .then_some("the API server")
            });
        if let Some(why) = refused {
            if named {
                return Ok(());
            }
            return Err(format!(
                "host {name} is {why}, which gates may not call unless --gate-allowed-hosts lists it"
            ));
        }
        let may_match = self.allowed.is_empty()
            || self.allowed.iter().any(|a| a.matches_name(name))
            || self
                .allowed
                .iter()
                .any(|a| matches!(a, HostPattern::Net(_)));
        if may_match {
            Ok(())
        } else {
            Err(format!("host {name} is not in --gate-allowed-hosts"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> AddressPolicy {
        AddressPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
    }

    #[test]
    fn the_default_refuses_metadata_link_local_and_loopback() {
        let p = AddressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]:8080/",
            "http://100.100.100.200/",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA.google.internal./",
            "http://127.0.0.1:9090/",
            "http://localhost:9090/",
            "http://api.localhost/",
            "http://[::1]/",
            "http://0.0.0.0:8080/",
            // The URL parser reads these as 169.254.169.254 and 127.0.0.1.
            "http://2852039166/",
            "http://0x7f.1/",
            "http://[::ffff:169.254.169.254]/",
            "http://224.0.0.1/",
        ] {
            assert!(p.check_url(url).is_err(), "{url} must be refused");
        }
        for url in [
            "http://prometheus.monitoring:9090",
            "https://10.0.0.7/check",
            "http://[2001:db8::1]/",
        ] {
            assert_eq!(p.check_url(url), Ok(()), "{url}");
        }
        let err = p.check_url("http://169.254.169.254/").unwrap_err();
        assert!(
            err.contains("link-local") && err.contains("169.254.169.254/32"),
            "{err}"
        );
    }

    #[test]
    fn only_http_urls_with_a_host_are_called() {
        let p = AddressPolicy::default();
        assert!(
            p.check_url("file:///etc/passwd")
                .unwrap_err()
                .contains("http")
        );
        assert!(p.check_url("not a url").is_err());
    }

    #[test]
    fn the_api_server_is_refused() {
        let mut p = AddressPolicy::default();
        p.refuse_api_server("10.96.0.1".parse().unwrap());
        p.refuse_api_server("kubernetes.default.svc".parse().unwrap());
        assert!(
            p.check_url("https://10.96.0.1/api")
                .unwrap_err()
                .contains("API server")
        );
        assert!(p.check_url("https://kubernetes.default.svc/").is_err());
        assert!(
            p.check_ip(Some("kubernetes"), "10.96.0.1".parse().unwrap())
                .is_err()
        );
        assert_eq!(p.check_url("https://10.96.0.2/"), Ok(()));
    }

    #[test]
    fn an_allow_list_admits_only_what_it_names() {
        let p = policy(&["prometheus.monitoring", "*.gates.svc", "10.20.0.0/16"]);
        assert_eq!(p.check_url("http://prometheus.monitoring:9090"), Ok(()));
        assert_eq!(p.check_url("http://smoke.gates.svc/check"), Ok(()));
        assert_eq!(p.check_url("http://10.20.3.4/"), Ok(()));
        assert!(p.check_url("http://10.21.0.1/").is_err());
        assert!(!HostPattern::Suffix("gates.svc".into()).matches_name("gates.svc"));
        // A name outside the list may still resolve into the CIDR: judged at connect time.
        assert_eq!(p.check_url("http://other.example/"), Ok(()));
        assert!(
            p.check_ip(Some("other.example"), "10.9.9.9".parse().unwrap())
                .is_err()
        );
        assert_eq!(
            p.check_ip(Some("other.example"), "10.20.9.9".parse().unwrap()),
            Ok(())
        );
        assert_eq!(
            p.check_ip(Some("prometheus.monitoring"), "10.9.9.9".parse().unwrap()),
            Ok(())
        );

        let names_only = policy(&["prometheus.monitoring"]);
        assert!(names_only.check_url("http://elsewhere.example/").is_err());
    }

    #[test]
    fn broad_entries_never_lift_a_refusal_but_naming_one_does() {
        let p = policy(&["0.0.0.0/0", "::/0", "*.internal"]);
        assert!(p.check_url("http://169.254.169.254/").is_err());
        assert!(p.check_url("http://metadata.google.internal/").is_err());
        assert!(p.check_url("http://127.0.0.1/").is_err());
        // A name that is allowed still cannot resolve to a refused address.
        assert!(
            p.check_ip(Some("db.internal"), "169.254.169.254".parse().unwrap())
                .is_err()
        );

        let tests = policy(&["127.0.0.1/32", "localhost"]);
        assert_eq!(tests.check_url("http://127.0.0.1:9090/"), Ok(()));
        assert_eq!(tests.check_url("http://localhost:9090/"), Ok(()));
        assert!(tests.check_url("http://127.0.0.2/").is_err());
        assert!(tests.check_url("http://169.254.169.254/").is_err());
    }

    #[test]
    fn entries_parse_with_clear_errors() {
        assert_eq!(
            "10.0.0.0/8".parse::<HostPattern>(),
            Ok(HostPattern::Net(Cidr::v4(10, 0, 0, 0, 8)))
        );
        assert_eq!(
            "Prometheus.Monitoring.".parse::<HostPattern>(),
            Ok(HostPattern::Name("prometheus.monitoring".into()))
        );
        assert_eq!(
            "*.svc".parse::<HostPattern>(),
            Ok(HostPattern::Suffix("svc".into()))
        );
        assert!(
            "10.0.0.0/33"
                .parse::<HostPattern>()
                .unwrap_err()
                .contains("prefix")
        );
        assert!("http://x".parse::<HostPattern>().is_err());
        assert!("".parse::<HostPattern>().is_err());
        assert_eq!(
            "fd00::/8".parse::<HostPattern>().unwrap().to_string(),
            "fd00::/8"
        );
    }
}
