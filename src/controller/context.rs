//! What every reconcile shares.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use super::error::Error;
use super::events::Events;
use super::gates::GateEvaluator;
use crate::api::ConfigRollout;
use crate::engine::Settings;
use crate::metrics::Metrics;

/// Namespace → (the record's resourceVersion, why it is unreadable).
pub type CorruptRecords = HashMap<String, (String, String)>;

pub struct Context {
    pub client: Client,
    pub events: Events,
    pub metrics: std::sync::Arc<Metrics>,
    pub gates: GateEvaluator,
    pub settings: Settings,
    /// The controller's cache of rollouts (for "claimed by another rollout" and trigger mapping).
    pub rollouts: Store<DeserializeGuard<ConfigRollout>>,
    /// Namespace labels, from a metadata-only watch.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The one namespace whose rollouts are watched, if not all.
    pub watch_namespace: Option<String>,
    /// Consecutive failed reconciles per rollout (`namespace/name`), for backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Leadership: `None` always leads; see [`leads`].
    pub leader: Option<watch::Receiver<bool>>,
    /// Prior records found corrupt when read whole: rollout uid → namespace → (the
    /// record's resourceVersion, why). A listing shows only metadata, so this is how the
    /// engine learns of them; a record written again is judged afresh.
    pub corrupt_priors: Mutex<HashMap<String, CorruptRecords>>,
    /// Target writes in flight at once per rollout.
    pub max_inflight_writes: usize,
    /// Managed targets and prior records, from watches.
    pub cache: std::sync::Arc<super::cache::Cache>,
    /// The hub and its member clusters: where each target lives.
    pub fleet: std::sync::Arc<super::members::Fleet>,
    /// Ring layouts written or read, and which rollouts target each namespace.
    pub layouts: std::sync::Arc<super::layout::Layouts>,
    /// The versions this replica's last status writes left.
    pub written: OwnWrites,
}

/// The resourceVersion of each rollout (`namespace/name`) as this replica's last status
/// write left it: a cached rollout at that version is exactly what a fresh read returns,
/// since any later write would have changed it.
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, String>>);

impl OwnWrites {
    /// Remembers the version a status write of rollout `key` produced (None forgets it).
    pub fn wrote(&self, key: &str, version: Option<String>) {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match version {
            Some(v) => written.insert(key.to_string(), v),
            None => written.remove(key),
        };
    }

    /// Forgets the rollouts not in `live` (`namespace/name` keys).
    pub fn retain(&self, live: &HashSet<String>) {
        let mut written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        written.retain(|key, _| live.contains(key));
    }

    /// Whether `version` of rollout `key` is the one this replica's last status write left.
    pub fn is(&self, key: &str, version: Option<&str>) -> bool {
        let written = self.0.lock().unwrap_or_else(|p| p.into_inner());
        version.is_some_and(|v| written.get(key).is_some_and(|w| w == v))
    }
}

/// Whether a leadership signal says "lead": it reads `true` and its election is still
/// running (a sender dropped mid-term, e.g. by a panic, must not leave it `true`).
pub fn leads(leader: Option<&watch::Receiver<bool>>) -> bool {
    leader.is_none_or(|rx| rx.has_changed().is_ok() && *rx.borrow())
}

impl Context {
    /// Whether this replica may act now.
    pub fn leads(&self) -> bool {
        leads(self.leader.as_ref())
    }

    /// Fencing: call before every write batch, so a reconcile in flight when leadership
    /// ends stops before its next write.
    pub fn ensure_leading(&self) -> Result<(), Error> {
        if self.leads() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Counts a failure and returns how many happened in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn prior_unreadable(&self, uid: &str, namespace: &str, version: &str, why: &str) {
        self.corrupt_priors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uid.to_string())
            .or_default()
            .insert(
                namespace.to_string(),
                (version.to_string(), why.to_string()),
            );
    }

    /// Namespace → (record resourceVersion, why) of the rollout's corrupt records.
    pub fn unreadable_priors(&self, uid: &str) -> Vec<(String, (String, String))> {
        self.corrupt_priors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_follows_the_signal_and_ends_with_the_election() {
        assert!(leads(None));
        let (tx, rx) = watch::channel(false);
        assert!(!leads(Some(&rx)));
        tx.send_replace(true);
        assert!(leads(Some(&rx)));
        tx.send_replace(false);
        assert!(!leads(Some(&rx)));
        tx.send_replace(true);
        drop(tx);
        assert!(!leads(Some(&rx)), "a dropped election leads no more");
    }

    #[test]
    fn only_the_version_of_the_last_own_write_counts() {
        let writes = OwnWrites::default();
        writes.wrote("p/a", Some("7".into()));
        assert!(writes.is("p/a", Some("7")));
        assert!(!writes.is("p/a", Some("8")), "someone wrote since");
        assert!(!writes.is("p/b", Some("7")));
        assert!(!writes.is("p/a", None));
        writes.wrote("p/a", Some("9".into()));
        assert!(!writes.is("p/a", Some("7")), "only the last write");
        writes.wrote("p/a", None);
        assert!(!writes.is("p/a", Some("9")), "forgotten");
        writes.wrote("p/b", Some("1".into()));
        writes.retain(&HashSet::new());
        assert!(
            !writes.is("p/b", Some("1")),
            "a deleted rollout is forgotten"
        );
    }
}
