//! Fault injection (failures, latency, dropped and expired watches, network
//! partitions) and the request log tests read to see what a client did.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::authz::Attributes;

/// Which requests a fault applies to; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestMatch {
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: Option<String>,
    pub group: Option<String>,
    /// Plural resource name, e.g. `configmaps`.
    pub resource: Option<String>,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl RequestMatch {
    /// Matches every resource request.
    pub fn any() -> Self {
        RequestMatch::default()
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    pub fn group(mut self, group: &str) -> Self {
        self.group = Some(group.into());
        self
    }

    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn subresource(mut self, subresource: &str) -> Self {
        self.subresource = Some(subresource.into());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub(crate) fn matches(&self, a: &Attributes) -> bool {
        let ok = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        ok(&self.verb, a.verb)
            && ok(&self.group, a.group)
            && ok(&self.resource, a.resource)
            && ok(&self.subresource, a.subresource)
            && ok(&self.namespace, a.namespace)
            && ok(&self.name, a.name)
    }
}

/// A fault as the JSON endpoint `POST /_emulator/faults` accepts it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum FaultRequest {
    #[serde(rename_all = "camelCase")]
    FailNext {
        count: usize,
        code: u16,
        #[serde(default, rename = "match")]
        matcher: RequestMatch,
    },
    #[serde(rename_all = "camelCase")]
    FailFraction {
        fraction: f64,
        code: u16,
        #[serde(default)]
        seed: u64,
        #[serde(default, rename = "match")]
        matcher: RequestMatch,
    },
    #[serde(rename_all = "camelCase")]
    Delay {
        millis: u64,
        #[serde(default, rename = "match")]
        matcher: RequestMatch,
    },
    CloseWatches,
    #[serde(rename_all = "camelCase")]
    ExpireNextWatch {
        #[serde(default)]
        resource: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Partition {
        on: bool,
    },
    Clear,
}

enum Rule {
    FailNext {
        remaining: usize,
        code: u16,
        matcher: RequestMatch,
    },
    FailFraction {
        fraction: f64,
        code: u16,
        matcher: RequestMatch,
        rng: Box<StdRng>,
    },
    Delay {
        latency: Duration,
        matcher: RequestMatch,
    },
}

impl Rule {
    fn apply(&mut self, a: &Attributes, outcome: &mut Outcome) {
        match self {
            Rule::FailNext {
                remaining,
                code,
                matcher,
            } => {
                if *remaining == 0 || outcome.fail.is_some() || !matcher.matches(a) {
                    return;
                }
                *remaining -= 1;
                outcome.fail = Some(*code);
            }
            Rule::FailFraction {
                fraction,
                code,
                matcher,
                rng,
            } => {
                if outcome.fail.is_some() || !matcher.matches(a) {
                    return;
                }
                let fail = rng.random_bool(*fraction);
                outcome.fail = fail.then_some(*code);
            }
            Rule::Delay { latency, matcher } => {
                if !matcher.matches(a) {
                    return;
                }
                outcome.delay = Some(outcome.delay.unwrap_or_default() + *latency);
            }
        }
    }
}

#[derive(Default)]
struct FaultState {
    rules: Vec<Rule>,
    /// Pending forced 410s for new watches, optionally for one resource.
    expiries: Vec<Option<String>>,
}

struct FaultsInner {
    state: Mutex<FaultState>,
    /// Lets requests skip the lock entirely when no fault is configured.
    active: AtomicBool,
    closer: watch::Sender<u64>,
    /// Odd while partitioned; bumped on every change, so a connection opened
    /// before a partition stays dead after it, even one idle throughout.
    network: AtomicU64,
}

/// What happens to one request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    pub delay: Option<Duration>,
    pub fail: Option<u16>,
}

/// Fault injection controls; clones share state.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: Arc::new(FaultsInner {
                state: Mutex::new(FaultState::default()),
                active: AtomicBool::new(false),
                closer: watch::channel(0).0,
                network: AtomicU64::new(0),
            }),
        }
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        match self.inner.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn add(&self, rule: Rule) {
        self.lock().rules.push(rule);
        self.inner.active.store(true, Ordering::SeqCst);
    }

    /// Fails the next `count` matching requests with `code` (a Status body).
    pub fn fail_next(&self, count: usize, matcher: RequestMatch, code: u16) {
        self.add(Rule::FailNext {
            remaining: count,
            code,
            matcher,
        });
    }

    /// Fails each matching request with probability `fraction`, drawn from an RNG seeded with `seed`.
    pub fn fail_fraction(&self, fraction: f64, matcher: RequestMatch, code: u16, seed: u64) {
        self.add(Rule::FailFraction {
            fraction: fraction.clamp(0.0, 1.0),
            code,
            matcher,
            rng: Box::new(StdRng::seed_from_u64(seed)),
        });
    }

    /// Delays every matching request by `latency`.
    pub fn delay(&self, matcher: RequestMatch, latency: Duration) {
        self.add(Rule::Delay { latency, matcher });
    }

    /// Ends every open watch stream now, as an API server restart would.
    pub fn close_watches(&self) {
        self.inner.closer.send_modify(|n| *n += 1);
    }

    /// Answers the next watch (of `resource`, or any) with a 410 Expired event.
    pub fn expire_next_watch(&self, resource: Option<&str>) {
        self.lock().expiries.push(resource.map(str::to_string));
        self.inner.active.store(true, Ordering::SeqCst);
    }

    /// Starts or ends a network partition: while on, new connections are
    /// dropped unanswered and open ones (watches included) fail on their next
    /// read or write. In-process calls such as `EmulatorHandle::apply` still work.
    pub fn partition(&self, on: bool) {
        let changed = self
            .inner
            .network
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |e| {
                let partitioned = !e.is_multiple_of(2);
                (partitioned != on).then_some(e + 1)
            })
            .is_ok();
        if changed && on {
            // Idle watch streams would otherwise notice only at their next event.
            self.close_watches();
        }
    }

    /// Whether a partition is on.
    pub fn partitioned(&self) -> bool {
        self.connection_epoch().is_none()
    }

    /// The epoch a connection opened now belongs to; `None` while partitioned.
    pub(crate) fn connection_epoch(&self) -> Option<u64> {
        let e = self.inner.network.load(Ordering::SeqCst);
        e.is_multiple_of(2).then_some(e)
    }

    /// Removes every configured fault and ends a partition.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.expiries.clear();
        self.inner.active.store(false, Ordering::SeqCst);
        drop(state);
        self.partition(false);
    }

    /// Applies a fault described by the JSON endpoint.
    pub fn configure(&self, request: FaultRequest) {
        match request {
            FaultRequest::FailNext {
                count,
                code,
                matcher,
            } => self.fail_next(count, matcher, code),
            FaultRequest::FailFraction {
                fraction,
                code,
                seed,
                matcher,
            } => self.fail_fraction(fraction, matcher, code, seed),
            FaultRequest::Delay { millis, matcher } => {
                self.delay(matcher, Duration::from_millis(millis))
            }
            FaultRequest::CloseWatches => self.close_watches(),
            FaultRequest::ExpireNextWatch { resource } => {
                self.expire_next_watch(resource.as_deref())
            }
            FaultRequest::Partition { on } => self.partition(on),
            FaultRequest::Clear => self.clear(),
        }
    }

    pub(crate) fn check(&self, a: &Attributes) -> Outcome {
        let mut outcome = Outcome::default();
        if !self.inner.active.load(Ordering::SeqCst) {
            return outcome;
        }
        let mut state = self.lock();
        for rule in state.rules.iter_mut() {
            rule.apply(a, &mut outcome);
        }
        state
            .rules
            .retain(|r| !matches!(r, Rule::FailNext { remaining: 0, .. }));
        outcome
    }

    /// Consumes a pending forced expiry for a watch of `resource`.
    pub(crate) fn take_watch_expiry(&self, resource: &str) -> bool {
        if !self.inner.active.load(Ordering::SeqCst) {
            return false;
        }
        let mut state = self.lock();
        let pos = state
            .expiries
            .iter()
            .position(|r| r.as_deref().is_none_or(|r| r == resource));
        pos.map(|p| state.expiries.remove(p)).is_some()
    }

    pub(crate) fn watch_closer(&self) -> watch::Receiver<u64> {
        self.inner.closer.subscribe()
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub seq: u64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    pub method: String,
    pub path: String,
    /// Kubernetes verb; empty for non-resource requests (discovery, version).
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    /// The authenticated user, when authentication is on.
    pub user: Option<String>,
    pub field_manager: Option<String>,
}

/// One line for logs and test failures: sequence, time, verb, resource/subresource,
/// namespace/name, status code, and the user and field manager when known.
impl fmt::Display for RequestRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6} {} {:<7} {}/{} {}/{} {} user={} manager={}",
            self.seq,
            self.time,
            self.verb,
            self.resource,
            self.subresource,
            self.namespace,
            self.name,
            self.code,
            self.user.as_deref().unwrap_or("-"),
            self.field_manager.as_deref().unwrap_or("-"),
        )
    }
}

impl RequestRecord {
    /// create, update, patch, delete or deletecollection.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

struct LogState {
    next: u64,
    entries: VecDeque<RequestRecord>,
    limit: usize,
}

/// The request log; clones share it. The oldest entries go beyond its limit.
#[derive(Clone)]
pub struct RequestLog {
    inner: Arc<Mutex<LogState>>,
}

impl RequestLog {
    pub(crate) fn new(limit: usize) -> Self {
        RequestLog {
            inner: Arc::new(Mutex::new(LogState {
                next: 1,
                entries: VecDeque::new(),
                limit,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn push(&self, mut record: RequestRecord) {
        let mut log = self.lock();
        record.seq = log.next;
        log.next += 1;
        log.entries.push_back(record);
        while log.entries.len() > log.limit {
            log.entries.pop_front();
        }
    }

    pub fn entries(&self) -> Vec<RequestRecord> {
        self.lock().entries.iter().cloned().collect()
    }

    /// Entries with a sequence number above `seq`.
    pub fn since(&self, seq: u64) -> Vec<RequestRecord> {
        self.lock()
            .entries
            .iter()
            .filter(|r| r.seq > seq)
            .cloned()
            .collect()
    }

    /// The sequence number of the latest entry (0 when none).
    pub fn last_seq(&self) -> u64 {
        self.lock().next - 1
    }

    pub fn count(&self, predicate: impl Fn(&RequestRecord) -> bool) -> usize {
        self.lock().entries.iter().filter(|r| predicate(r)).count()
    }

    pub fn clear(&self) {
        self.lock().entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(verb: &'a str, resource: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: "",
            namespace: "ns",
            name,
        }
    }

    #[test]
    fn fail_next_counts_down_matching_requests_only() {
        let f = Faults::default();
        f.fail_next(
            2,
            RequestMatch::any().verb("update").resource("configmaps"),
            500,
        );
        assert_eq!(f.check(&attrs("get", "configmaps", "a")).fail, None);
        assert_eq!(f.check(&attrs("update", "configmaps", "a")).fail, Some(500));
        assert_eq!(f.check(&attrs("update", "configmaps", "b")).fail, Some(500));
        assert_eq!(f.check(&attrs("update", "configmaps", "c")).fail, None);
    }

    #[test]
    fn fractions_are_reproducible() {
        let run = || {
            let f = Faults::default();
            f.fail_fraction(0.5, RequestMatch::any(), 503, 7);
            (0..200)
                .map(|_| f.check(&attrs("get", "configmaps", "a")).fail.is_some())
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let failed = a.iter().filter(|x| **x).count();
        assert!((50..150).contains(&failed), "{failed}");
    }

    #[test]
    fn expiries_and_json_requests() {
        let f = Faults::default();
        let req: FaultRequest =
            serde_json::from_str(r#"{"action": "expireNextWatch", "resource": "configmaps"}"#)
                .unwrap();
        f.configure(req);
        assert!(!f.take_watch_expiry("secrets"));
        assert!(f.take_watch_expiry("configmaps"));
        assert!(!f.take_watch_expiry("configmaps"));
        let req: FaultRequest =
            serde_json::from_str(r#"{"action": "delay", "millis": 5, "match": {"verb": "get"}}"#)
                .unwrap();
        f.configure(req);
        assert_eq!(
            f.check(&attrs("get", "x", "y")).delay,
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn partitions_retire_earlier_connections() {
        let f = Faults::default();
        let mut closed = f.watch_closer();
        let before = f.connection_epoch().unwrap();
        let on: FaultRequest =
            serde_json::from_str(r#"{"action": "partition", "on": true}"#).unwrap();
        f.configure(on.clone());
        assert!(f.partitioned());
        assert!(closed.has_changed().unwrap(), "open watches are ended");
        closed.mark_unchanged();
        f.configure(on);
        assert!(
            !closed.has_changed().unwrap(),
            "only a new partition ends watches"
        );
        f.configure(serde_json::from_str(r#"{"action": "partition", "on": false}"#).unwrap());
        let after = f.connection_epoch().unwrap();
        assert_ne!(
            before, after,
            "connections from before the partition stay dead"
        );
        f.partition(false);
        assert_eq!(f.connection_epoch(), Some(after));
        f.partition(true);
        f.clear();
        assert!(!f.partitioned());
    }

    #[test]
    fn log_keeps_a_bounded_tail() {
        let log = RequestLog::new(2);
        for verb in ["get", "create", "patch"] {
            log.push(RequestRecord {
                seq: 0,
                time: String::new(),
                method: String::new(),
                path: String::new(),
                verb: verb.into(),
                group: String::new(),
                version: String::new(),
                resource: String::new(),
                subresource: String::new(),
                namespace: String::new(),
                name: String::new(),
                code: 200,
                user: None,
                field_manager: None,
            });
        }
        assert_eq!(log.entries().len(), 2);
        assert_eq!(log.last_seq(), 3);
        assert_eq!(log.count(RequestRecord::is_write), 2);
        assert_eq!(log.since(2).len(), 1);
    }
}
