//! Unit tests of rings across clusters: resolution per cluster, permission, and a
//! partitioned member that is never taken for healthy.

use std::collections::BTreeMap;

use super::model::*;
use super::testkit::*;
use super::{decide, gate_requests};
use crate::api::{LOCAL_CLUSTER, Phase, RingPhase, Verdict};

fn member(labels: &[(&str, &str)]) -> ClusterInfo {
    ClusterInfo {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        allow_from: None,
        unreachable: None,
    }
}

fn member_ns(cluster: &str, name: &str, labels: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo {
        cluster: Some(cluster.into()),
        ..ns_labelled(&target_key(Some(cluster), name), labels)
    }
}

/// Canary in `eu` (listed), then `broad` over every prod cluster by namespace label.
fn fleet() -> Sim {
    let mut spec = spec_with_rings(&[("canary", &["checkout"]), ("broad", &[])]);
    spec.rings[0].clusters = Some(vec!["eu".into()]);
    spec.rings[1].namespaces = None;
    spec.rings[1].namespace_selector = Some(selector(&[("app", "checkout")]));
    spec.rings[1].cluster_selector = Some(selector(&[("tier", "prod")]));
    spec.gates = vec![webhook_gate("smoke", "1m", 1)];
    spec.rings[0].bake = "2m".into();
    let mut sim = Sim::new(spec);
    sim.world.namespaces = vec![
        ns("checkout"),
        member_ns("eu", "checkout", &[("app", "checkout")]),
        member_ns("us", "checkout", &[("app", "checkout")]),
        member_ns("us", "cart", &[]),
        member_ns("dev", "checkout", &[("app", "checkout")]),
    ];
    sim.world.clusters = BTreeMap::from([
        ("eu".to_string(), member(&[("tier", "prod")])),
        ("us".to_string(), member(&[("tier", "prod")])),
        ("dev".to_string(), member(&[("tier", "dev")])),
    ]);
    sim
}

fn condition<'a>(sim: &'a Sim, type_: &str) -> (&'a str, &'a str, &'a str) {
    sim.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or(("", "", ""), |c| {
            (c.status.as_str(), c.reason.as_str(), c.message.as_str())
        })
}

fn targets(sim: &Sim) -> Vec<Vec<String>> {
    sim.status.rings.iter().map(|r| r.targets.clone()).collect()
}

fn run_until(sim: &mut Sim, done: impl Fn(&Sim) -> bool) {
    for _ in 0..50 {
        if done(sim) {
            return;
        }
        sim.step();
        sim.advance(30);
    }
    panic!("never got there: {:?}", sim.status.message);
}

fn ring_phase(sim: &Sim, index: usize) -> Option<RingPhase> {
    sim.status.rings.get(index).map(|r| r.phase)
}

#[test]
fn rings_resolve_in_each_of_their_clusters() {
    let mut sim = fleet();
    sim.step();
    assert_eq!(
        targets(&sim),
        vec![
            vec!["eu/checkout".to_string()],
            vec!["us/checkout".to_string()]
        ]
    );
    // eu/checkout matched broad too, but belongs to the first ring that selects it.
    assert_eq!(
        sim.status.rings[1].duplicates,
        vec!["eu/checkout".to_string()]
    );
    run_until(&mut sim, |s| s.status.phase == Some(Phase::Succeeded));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    for key in ["eu/checkout", "us/checkout"] {
        assert_eq!(
            sim.world.targets[key].content_hash.as_deref(),
            Some(sim.revision().as_str())
        );
    }
    assert!(
        !sim.world.targets.contains_key("checkout"),
        "the hub is not a target"
    );
}

#[test]
fn local_in_a_cluster_list_is_the_hub() {
    let mut sim = fleet();
    sim.spec.rings[0].clusters = Some(vec![LOCAL_CLUSTER.into(), "eu".into()]);
    sim.step();
    assert_eq!(
        targets(&sim)[0],
        vec!["checkout".to_string(), "eu/checkout".into()]
    );
}

#[test]
fn an_unregistered_cluster_is_invalid_and_named() {
    let mut sim = fleet();
    sim.spec.rings[0].clusters = Some(vec!["ap".into()]);
    let decision = sim.step();
    assert!(decision.actions.is_empty());
    let (status, reason, message) = condition(&sim, "Valid");
    assert_eq!((status, reason), ("False", "ClusterNotFound"));
    assert!(message.contains("ap"), "{message}");
}

#[test]
fn a_member_cluster_must_permit_the_rollout() {
    let mut sim = fleet();
    sim.settings.trusted_namespaces.clear();
    let decision = sim.step();
    assert!(decision.actions.is_empty(), "{:?}", decision.actions);
    let (status, reason, message) = condition(&sim, "Valid");
    assert_eq!((status, reason), ("False", "TargetNotPermitted"));
    assert!(
        message.contains("eu") && message.contains("us"),
        "{message}"
    );
    // Even a cluster that does not answer is refused for what it is, not waited for.
    sim.world.clusters.get_mut("eu").unwrap().unreachable = Some("timeout".into());
    sim.step();
    assert_eq!(condition(&sim, "Valid").1, "TargetNotPermitted");
    for info in sim.world.clusters.values_mut() {
        info.allow_from = Some(ROLLOUT_NS.into());
        info.unreachable = None;
    }
    sim.step();
    assert_eq!(condition(&sim, "Valid").0, "True");
    assert_eq!(targets(&sim)[0], vec!["eu/checkout".to_string()]);
}

#[test]
fn a_revision_waits_for_its_clusters_to_answer_before_it_resolves() {
    let mut sim = fleet();
    sim.world.clusters.get_mut("us").unwrap().unreachable = Some("connection refused".into());
    let decision = sim.step();
    assert!(decision.actions.is_empty());
    let (status, reason, message) = condition(&sim, "Valid");
    assert_eq!((status, reason), ("False", "ClusterUnreachable"));
    assert!(
        message.contains("cluster us cannot be reached: connection refused"),
        "{message}"
    );
    sim.world.clusters.get_mut("us").unwrap().unreachable = None;
    sim.step();
    assert_eq!(condition(&sim, "Valid").0, "True");
}

/// Runs `fleet()` until the canary ring bakes, then partitions `eu`.
fn partitioned_in_bake() -> Sim {
    let mut sim = fleet();
    run_until(&mut sim, |s| ring_phase(s, 0) == Some(RingPhase::Verifying));
    sim.world.clusters.get_mut("eu").unwrap().unreachable = Some("connection reset".into());
    sim
}

#[test]
fn a_partitioned_member_is_never_healthy_and_its_ring_holds() {
    let mut sim = partitioned_in_bake();
    assert!(
        gate_requests(&sim.inputs()).is_empty(),
        "no gate is evaluated for it"
    );
    let announced = |d: &Decision| {
        d.events
            .iter()
            .filter(|e| e.reason == "ClusterUnreachable")
            .count()
    };
    let first = sim.step();
    assert_eq!(announced(&first), 1, "{:?}", first.events);
    assert!(first.events.iter().any(|e| e.note.contains("cluster eu")));
    // Well past the bake: still not promoted, gates Inconclusive, and status says why.
    for _ in 0..6 {
        let decision = sim.step();
        assert!(decision.actions.is_empty(), "{:?}", decision.actions);
        assert_eq!(announced(&decision), 0, "announced once");
        sim.advance(60);
    }
    assert_eq!(ring_phase(&sim, 0), Some(RingPhase::Verifying));
    assert_eq!(sim.status.phase, Some(Phase::Progressing));
    let gate = &sim.status.rings[0].gates[0];
    assert_eq!(gate.verdict, Some(Verdict::Inconclusive));
    assert!(gate.message.as_deref().unwrap_or("").contains("cluster eu"));
    let (status, reason, message) = condition(&sim, "Progressing");
    assert_eq!(
        (status, reason),
        ("False", "ClusterUnreachable"),
        "{message}"
    );
    assert!(
        message.contains("cluster eu cannot be reached"),
        "{message}"
    );
    // A promote request does not override it.
    sim.meta.requests.promote = Some("p1".into());
    let decision = sim.step();
    assert!(decision.events.iter().any(|e| e.reason == "PromoteRefused"));
    assert_eq!(ring_phase(&sim, 0), Some(RingPhase::Verifying));
    // Back before the deadline: the ring is judged afresh and promoted after its bake.
    sim.world.clusters.get_mut("eu").unwrap().unreachable = None;
    run_until(&mut sim, |s| ring_phase(s, 0) == Some(RingPhase::Promoted));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn a_partition_that_lasts_the_deadline_fails_the_ring_and_the_rollback_waits_for_it() {
    let mut sim = partitioned_in_bake();
    sim.step();
    sim.advance(11 * 60);
    sim.step();
    assert_eq!(
        sim.status.phase,
        Some(Phase::RollingBack),
        "{:?}",
        sim.status.message
    );
    let rollback = sim.status.rollback.clone().unwrap();
    assert_eq!(rollback.reason, "ProgressDeadlineExceeded");
    assert!(
        rollback.message.contains("cluster eu"),
        "{}",
        rollback.message
    );
    // The rollback cannot restore eu/checkout while eu does not answer: it never
    // completes, and says what it waits for.
    for _ in 0..5 {
        sim.step();
        sim.advance(60);
    }
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    let (status, reason, message) = condition(&sim, "Progressing");
    assert_eq!(
        (status, reason),
        ("False", "ClusterUnreachable"),
        "{message}"
    );
    assert!(message.contains("the rollback waits"), "{message}");
    // It comes back: the target is restored, then the rollout is RolledBack.
    sim.world.clusters.get_mut("eu").unwrap().unreachable = None;
    run_until(&mut sim, |s| s.status.phase == Some(Phase::RolledBack));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    assert!(
        !sim.world.targets.contains_key("eu/checkout"),
        "restored to absent"
    );
}

#[test]
fn a_member_never_seen_is_unknown_not_absent() {
    let mut sim = partitioned_in_bake();
    sim.meta.requests.abort = Some("a1".into());
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    // The controller restarted during the partition: it never saw eu's targets.
    sim.world.targets.remove("eu/checkout");
    sim.world.clusters.remove("eu");
    for _ in 0..3 {
        let decision = sim.step();
        assert!(decision.actions.is_empty(), "{:?}", decision.actions);
    }
    assert_eq!(
        sim.status.phase,
        Some(Phase::RollingBack),
        "not complete while unknown"
    );
    let (_, reason, message) = condition(&sim, "Progressing");
    assert_eq!(reason, "ClusterUnreachable");
    assert!(
        message.contains("cluster eu is not registered"),
        "{message}"
    );
}

#[test]
fn writes_wait_for_a_member_that_does_not_answer() {
    let mut sim = fleet();
    sim.world.clusters.get_mut("eu").unwrap().unreachable = None;
    sim.step();
    assert_eq!(ring_phase(&sim, 0), Some(RingPhase::Applying));
    sim.world.clusters.get_mut("eu").unwrap().unreachable = Some("timeout".into());
    for _ in 0..3 {
        let decision = sim.step();
        assert!(decision.actions.is_empty(), "{:?}", decision.actions);
        assert!(decision.requeue_at.is_some(), "it looks again");
    }
    assert_eq!(ring_phase(&sim, 0), Some(RingPhase::Applying));
    sim.advance(11 * 60);
    sim.step();
    assert_eq!(sim.status.phase, Some(Phase::RollingBack));
    sim.world.clusters.get_mut("eu").unwrap().unreachable = None;
    run_until(&mut sim, |s| s.status.phase == Some(Phase::RolledBack));
    assert!(sim.violations.is_empty(), "{:?}", sim.violations);
}

#[test]
fn decisions_are_pure_under_a_partition() {
    let sim = partitioned_in_bake();
    assert_eq!(decide(&sim.inputs()), decide(&sim.inputs()));
}
