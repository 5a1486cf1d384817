//! Two controller replicas with leader election against one emulator: a rollout over three
//! rings has exactly one writer at a time, survives its leader crashing mid-rollout, and
//! the standby takes over within the lease math.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube_emulator::{RequestRecord, UserInfo};
use ringfence::api::REVISION_ANNOTATION;
use ringfence::leader::Timing;
use serde_json::json;
use support::cluster::{Cluster, Replica, data, phase};

const NS: &str = "platform";
const LEASE_NS: &str = "ringfence-system";
const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(2),
    renew_deadline: Duration::from_millis(1500),
    retry_period: Duration::from_millis(250),
};
/// Scheduling delay allowed on a loaded machine, beyond the lease math.
const SLACK: Duration = Duration::from_secs(3);
const RUNS: usize = 5;

/// Cells 1..=6 in rings of 1, 2 and 3; odd cells already hold a target.
async fn cells(c: &Cluster) {
    c.namespace(NS, &[]).await;
    c.namespace(LEASE_NS, &[]).await;
    for i in 1..=6 {
        let ns = format!("cell-{i}");
        c.namespace(&ns, &[("ringfence.dev/allow-from", NS)]).await;
        if i % 2 == 1 {
            c.config_map(&ns, "checkout-flags", &[("retries", "1")])
                .await;
        }
    }
}

fn rollout() -> serde_json::Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "checkout-flags", "data": {"retries": "7"}},
            "rings": [
                {"name": "one", "namespaces": ["cell-1"], "bake": "2s"},
                {"name": "two", "namespaces": ["cell-2", "cell-3"], "bake": "2s"},
                {"name": "three", "namespaces": ["cell-4", "cell-5", "cell-6"], "bake": "1s"},
            ],
        },
    })
}

/// A replica authenticating as its own user, so the request log tells replicas apart.
async fn replica(c: &Cluster, name: &str) -> Replica {
    let token = format!("token-{name}");
    c.emu
        .add_token(&token, UserInfo::user(name, &["system:masters"]));
    Replica::start(c.emu.client_for_token(&token), name, LEASE_NS, TIMING).await
}

/// Writes that act on the world (everything but the Lease itself).
fn writes(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter()
        .filter(|r| r.is_write() && r.resource != "leases")
        .collect()
}

/// One run: the leader is killed after ring one was written; returns the time from the
/// kill to the standby leading.
async fn failover_run(run: usize) -> Duration {
    let c = Cluster::start_authorized().await;
    cells(&c).await;
    let mut first = replica(&c, "replica-a").await;
    first.wait_leading(Duration::from_secs(30)).await;
    let mut second = replica(&c, "replica-b").await;
    tokio::time::sleep(TIMING.retry_period * 2).await;
    assert!(!second.leads(), "a second replica must wait for the Lease");

    c.apply_rollout(NS, rollout()).await;
    // Mid-rollout: ring one holds the new content, rings two and three do not yet.
    c.wait_for(NS, "flags", "ring one written", || async {
        c.get_config_map("cell-2", "checkout-flags").await.is_none()
            && c.get_config_map("cell-1", "checkout-flags")
                .await
                .is_some_and(|cm| data(&cm).get("retries").map(String::as_str) == Some("7"))
    })
    .await;
    let killed_at = Instant::now();
    first.kill().await;
    second
        .wait_leading(TIMING.lease_duration + TIMING.retry_period + SLACK * 2)
        .await;
    let failover = killed_at.elapsed();

    let r = c
        .wait_rollout(NS, "flags", "Succeeded after the failover", |r| {
            phase(r) == "Succeeded"
        })
        .await;
    let revision = r.status.and_then(|s| s.revision).expect("revision");
    for i in 1..=6 {
        let cm = c
            .get_config_map(&format!("cell-{i}"), "checkout-flags")
            .await
            .unwrap_or_else(|| panic!("cell-{i} target"));
        assert_eq!(
            data(&cm),
            BTreeMap::from([("retries".to_string(), "7".to_string())]),
            "cell-{i}"
        );
        assert_eq!(
            cm.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION)),
            Some(&revision),
            "cell-{i} revision"
        );
    }

    // One writer per term: every write of the first replica precedes every write of the
    // second, and each wrote part of the rollout.
    let log = c.emu.request_log().entries();
    let writes = writes(&log);
    let by = |user: &str| -> Vec<&RequestRecord> {
        writes
            .iter()
            .copied()
            .filter(|r| r.user.as_deref() == Some(user))
            .collect()
    };
    let (a, b) = (by("replica-a"), by("replica-b"));
    let dump = || {
        writes
            .iter()
            .filter(|r| r.user.as_deref() != Some("system:admin"))
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        !a.is_empty() && !b.is_empty(),
        "both led a term:\n{}",
        dump()
    );
    let last_a = a.iter().map(|r| r.seq).max().unwrap_or(0);
    let first_b = b.iter().map(|r| r.seq).min().unwrap_or(0);
    assert!(
        last_a < first_b,
        "writes of the two replicas interleave:\n{}",
        dump()
    );
    assert!(
        b.iter()
            .any(|r| r.resource == "configmaps" && r.namespace == "cell-6"),
        "the new leader finished the rollout:\n{}",
        dump()
    );
    assert!(
        failover <= TIMING.lease_duration + TIMING.retry_period + SLACK,
        "failover took {failover:?}"
    );
    eprintln!(
        "run {run}: failover {failover:?}; writes by replica-a {}, by replica-b {}",
        a.len(),
        b.len()
    );
    second.kill().await;
    c.emu.shutdown().await;
    failover
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_mid_rollout_hands_over_to_one_writer() {
    let mut times = Vec::new();
    for run in 1..=RUNS {
        times.push(failover_run(run).await);
    }
    times.sort();
    eprintln!(
        "failover (kill → standby leads) over {RUNS} runs: median {:?}, all {times:?}",
        times[RUNS / 2]
    );
}
