//! Property tests: random rollouts driven through random sequences of world
//! events (gate verdicts, time passing, actions failing partway, which is
//! also what a controller crash and restart looks like to the engine, new
//! revisions and manual requests) on the simulated controller, checking the
//! design's safety invariants after every step, then driven to completion.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::decide;
use super::model::*;
use super::testkit::*;
use crate::api::{ConfigRolloutSpec, Phase, RingPhase, Verdict};

#[derive(Clone, Debug)]
struct RingCase {
    size: usize,
    bake_secs: u64,
    max_concurrent: Option<IntOrString>,
    by_selector: bool,
    /// The member cluster (`m0`, `m1`) the ring is in; None: local.
    cluster: Option<u8>,
}

#[derive(Clone, Debug)]
struct GateCase {
    baseline: bool,
    interval_secs: u64,
    failure_limit: u32,
}

#[derive(Clone, Debug)]
struct RolloutCase {
    rings: Vec<RingCase>,
    gates: Vec<GateCase>,
    workloads: bool,
    restart: bool,
    automatic: bool,
    deadline_mins: u64,
    /// What each namespace holds before the rollout: None = no target, else one of a few contents.
    initial: Vec<Option<u8>>,
}

#[derive(Clone, Debug)]
enum Event {
    Reconcile,
    Advance(i64),
    SetVerdict(usize, Verdict),
    /// The next reconcile fails at this action: the controller crashed or an
    /// API call failed; only persisted status and API objects remain.
    CrashAt(usize),
    NewRevision,
    Pause(bool),
    Abort,
    Promote,
    Retry,
    /// A prior record vanishes (its finalizer stripped and deleted by hand).
    LoseRecord(usize),
    /// A prior record's content no longer matches its hash.
    CorruptRecord(usize),
    /// The spec turns invalid (its source is deleted), or valid again.
    BreakSpec(bool),
    /// A member cluster stops answering, or answers again.
    Partition(u8, bool),
}

fn ring_case() -> impl Strategy<Value = RingCase> {
    let max_concurrent = prop_oneof![
        Just(None),
        (1i32..=3).prop_map(|n| Some(IntOrString::Int(n))),
        prop::sample::select(vec!["25%", "50%", "100%"])
            .prop_map(|p| Some(IntOrString::String(p.to_string()))),
    ];
    (
        1usize..=5,
        prop::sample::select(vec![0u64, 30, 120, 600]),
        max_concurrent,
        any::<bool>(),
        prop::option::of(0u8..2),
    )
        .prop_map(
            |(size, bake_secs, max_concurrent, by_selector, cluster)| RingCase {
                size,
                bake_secs,
                max_concurrent,
                by_selector,
                cluster,
            },
        )
}

fn gate_case() -> impl Strategy<Value = GateCase> {
    (
        any::<bool>(),
        prop::sample::select(vec![30u64, 60, 300]),
        1u32..=3,
    )
        .prop_map(|(baseline, interval_secs, failure_limit)| GateCase {
            baseline,
            interval_secs,
            failure_limit,
        })
}

fn rollout_case() -> impl Strategy<Value = RolloutCase> {
    (
        prop::collection::vec(ring_case(), 1..=4),
        prop::collection::vec(gate_case(), 0..=2),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        1u64..=20,
        prop::collection::vec(prop::option::of(0u8..3), 20),
    )
        .prop_map(
            |(rings, gates, workloads, restart, automatic, deadline_mins, initial)| RolloutCase {
                rings,
                gates,
                workloads: workloads || restart,
                restart,
                automatic,
                deadline_mins,
                initial,
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    let verdict = prop_oneof![
        Just(Verdict::Pass),
        Just(Verdict::Fail),
        Just(Verdict::Inconclusive)
    ];
    prop_oneof![
        8 => Just(Event::Reconcile),
        4 => (1i64..=900).prop_map(Event::Advance),
        3 => (0usize..2, verdict).prop_map(|(g, v)| Event::SetVerdict(g, v)),
        2 => (0usize..3).prop_map(Event::CrashAt),
        1 => Just(Event::NewRevision),
        1 => any::<bool>().prop_map(Event::Pause),
        1 => Just(Event::Abort),
        1 => Just(Event::Promote),
        1 => Just(Event::Retry),
        1 => (0usize..64).prop_map(Event::LoseRecord),
        1 => (0usize..64).prop_map(Event::CorruptRecord),
        1 => any::<bool>().prop_map(Event::BreakSpec),
        2 => (0u8..2, any::<bool>()).prop_map(|(c, down)| Event::Partition(c, down)),
    ]
}

fn namespace(ring: usize, i: usize) -> String {
    format!("r{ring}-n{i}")
}

fn member(c: u8) -> String {
    format!("m{c}")
}

fn build(case: &RolloutCase) -> Sim {
    let names: Vec<Vec<String>> = case
        .rings
        .iter()
        .enumerate()
        .map(|(k, r)| (0..r.size).map(|i| namespace(k, i)).collect())
        .collect();
    let lists: Vec<(String, Vec<&str>)> = names
        .iter()
        .enumerate()
        .map(|(k, ns)| (format!("ring{k}"), ns.iter().map(String::as_str).collect()))
        .collect();
    let refs: Vec<(&str, &[&str])> = lists
        .iter()
        .map(|(n, l)| (n.as_str(), l.as_slice()))
        .collect();
    let mut spec: ConfigRolloutSpec = spec_with_rings(&refs);
    for (k, (ring, rc)) in spec.rings.iter_mut().zip(&case.rings).enumerate() {
        ring.bake = format!("{}s", rc.bake_secs);
        ring.max_concurrent = rc.max_concurrent.clone();
        if rc.by_selector {
            ring.namespaces = None;
            ring.namespace_selector = Some(selector(&[("ring", &format!("ring{k}"))]));
        }
        ring.clusters = rc.cluster.map(|c| vec![member(c)]);
    }
    spec.gates = case
        .gates
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let interval = format!("{}s", g.interval_secs);
            if g.baseline {
                baseline_gate(&format!("g{i}"), &interval, g.failure_limit)
            } else {
                webhook_gate(&format!("g{i}"), &interval, g.failure_limit)
            }
        })
        .collect();
    spec.workloads = case.workloads.then(|| workloads(case.restart));
    spec.rollback.automatic = case.automatic;
    spec.progress_deadline = format!("{}m", case.deadline_mins);
    let mut sim = Sim::new(spec);
    sim.world.clusters = (0..2)
        .map(|c| (member(c), ClusterInfo::default()))
        .collect();
    // Target keys: a member ring's namespaces are `m0/r1-n0`.
    let keys: Vec<Vec<String>> = names
        .iter()
        .zip(&case.rings)
        .map(|(ns, rc)| {
            let cluster = rc.cluster.map(member);
            ns.iter()
                .map(|n| target_key(cluster.as_deref(), n))
                .collect()
        })
        .collect();
    sim.world.namespaces = keys
        .iter()
        .zip(&case.rings)
        .enumerate()
        .flat_map(|(k, (ns, rc))| {
            ns.iter().map(move |n| NamespaceInfo {
                cluster: rc.cluster.map(member),
                ..ns_labelled(n, &[("ring", &format!("ring{k}"))])
            })
        })
        .collect();
    for (i, n) in keys.iter().flatten().enumerate() {
        if case.workloads {
            sim.world.workloads.insert(
                n.clone(),
                vec![WorkloadState {
                    kind: WorkloadKind::Deployment,
                    name: "checkout".into(),
                    stamped_revision: None,
                    rolled_out: true,
                }],
            );
        }
        if let Some(Some(v)) = case.initial.get(i) {
            sim.world
                .targets
                .insert(n.clone(), target(&format!("pre{v}"), "kubectl"));
        }
    }
    sim.reset_rollback_point();
    sim
}

/// Invariants that hold after every step, whatever happened.
fn check(sim: &Sim) -> Result<(), TestCaseError> {
    prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    if sim.status.phase == Some(Phase::Succeeded) {
        let revision = sim.status.revision.clone();
        for ring in &sim.status.rings {
            prop_assert_eq!(ring.phase, RingPhase::Promoted);
            for n in &ring.targets {
                let held = sim
                    .world
                    .targets
                    .get(n)
                    .and_then(|t| t.content_hash.clone());
                prop_assert_eq!(&held, &revision, "{} after success", n);
            }
        }
    }
    Ok(())
}

fn nth_key<V>(map: &std::collections::BTreeMap<String, V>, i: usize) -> Option<String> {
    let len = map.len();
    (len > 0)
        .then(|| map.keys().nth(i % len).cloned())
        .flatten()
}

fn advance_to(sim: &mut Sim, at: Option<Timestamp>) {
    let secs = at.map_or(60, |t| t.duration_since(sim.now).as_secs().max(1));
    sim.advance(secs);
}

fn run(case: RolloutCase, events: Vec<Event>) -> Result<(), TestCaseError> {
    let mut sim = build(&case);
    let mut ids = 0u32;
    let mut next_id = || {
        ids += 1;
        format!("req-{ids}")
    };
    for event in events {
        match event {
            Event::Reconcile => {
                prop_assert_eq!(decide(&sim.inputs()), decide(&sim.inputs()));
                let before: Vec<RingPhase> = sim.status.rings.iter().map(|r| r.phase).collect();
                sim.step();
                for (i, ring) in sim.status.rings.iter().enumerate() {
                    let promoted = ring.phase == RingPhase::Promoted
                        && before.get(i).is_some_and(|p| *p != RingPhase::Promoted);
                    let cut_off = ring.targets.iter().find_map(|t| sim.world.unreachable(t));
                    prop_assert!(
                        !(promoted && cut_off.is_some()),
                        "ring {} promoted while {:?}",
                        ring.name,
                        cut_off
                    );
                }
            }
            Event::Advance(secs) => sim.advance(secs),
            Event::SetVerdict(gate, verdict) => {
                sim.verdicts.insert(format!("g{gate}"), verdict);
            }
            Event::CrashAt(at) => {
                sim.fail_at = Some(at);
                sim.step();
            }
            Event::NewRevision => {
                let value = next_id();
                sim.set_config(&value);
            }
            Event::Pause(paused) => sim.spec.paused = paused,
            Event::Abort => sim.meta.requests.abort = Some(next_id()),
            Event::Promote => sim.meta.requests.promote = Some(next_id()),
            Event::Retry => sim.meta.requests.retry = Some(next_id()),
            Event::LoseRecord(i) => {
                if let Some(ns) = nth_key(&sim.world.priors, i) {
                    sim.world.priors.remove(&ns);
                }
            }
            Event::CorruptRecord(i) => {
                if let Some(ns) = nth_key(&sim.world.priors, i)
                    && sim.world.priors.get(&ns).is_some_and(|p| !p.lost)
                {
                    sim.world.priors.remove(&ns);
                    sim.world.unreadable_priors.insert(ns, "corrupt".into());
                }
            }
            Event::BreakSpec(broken) => {
                sim.world.config = Some(if broken {
                    Err("source deleted".into())
                } else {
                    Ok(resolved(&sim.spec))
                });
            }
            Event::Partition(c, down) => {
                if let Some(info) = sim.world.clusters.get_mut(&member(c)) {
                    info.unreachable = down.then(|| "partitioned".to_string());
                }
            }
        }
        check(&sim)?;
    }

    // Calm weather: everything passes, nothing fails, nobody pauses. The
    // rollout must finish from wherever it is, with every target on the
    // revision and no ring skipped.
    sim.verdicts.clear();
    sim.spec.paused = false;
    sim.fail_at = None;
    sim.world.config = Some(Ok(resolved(&sim.spec)));
    for info in sim.world.clusters.values_mut() {
        info.unreachable = None;
    }
    for _ in 0..3000 {
        let decision = sim.step();
        check(&sim)?;
        let idle = decision.actions.is_empty();
        match sim.status.phase {
            Some(Phase::Succeeded) if idle && decision.requeue_at.is_none() => {
                prop_assert!(sim.world.priors.is_empty());
                let mut promoted = sim
                    .status
                    .rings
                    .iter()
                    .map(|r| r.promoted_at.clone().map(|t| t.0));
                let mut last = None;
                for at in promoted.by_ref() {
                    prop_assert!(at.is_some() && at >= last, "rings promoted in order");
                    last = at;
                }
                return Ok(());
            }
            Some(Phase::RolledBack) | Some(Phase::Failed) if idle => {
                sim.meta.requests.retry = Some(next_id());
            }
            _ if idle && decision.requeue_at.is_none_or(|t| t > sim.now) => {
                advance_to(&mut sim, decision.requeue_at);
            }
            _ => {}
        }
    }
    prop_assert!(false, "rollout never finished: {:?}", sim.status.message);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn invariants_hold_under_random_events_and_faults(
        case in rollout_case(),
        events in prop::collection::vec(event(), 0..60),
    ) {
        run(case, events)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever slipped past admission, `decide` answers with a decision
    /// (Valid=False for what it cannot use), never a panic.
    #[test]
    fn decide_never_panics_on_malformed_specs(
        bake in "\\PC{0,12}",
        deadline in "\\PC{0,12}",
        interval in "\\PC{0,12}",
        max_concurrent in prop_oneof![
            any::<i32>().prop_map(IntOrString::Int),
            "\\PC{0,6}".prop_map(IntOrString::String),
        ],
        failure_limit in any::<u32>(),
    ) {
        let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
        spec.rings[0].bake = bake;
        spec.rings[0].max_concurrent = Some(max_concurrent);
        spec.progress_deadline = deadline;
        spec.gates = vec![webhook_gate("smoke", &interval, failure_limit)];
        let mut sim = Sim::new(spec);
        for _ in 0..6 {
            let decision = sim.step();
            let valid = sim.status.conditions.iter().any(|c| c.type_ == "Valid" && c.status == "True");
            prop_assert!(valid || decision.actions.is_empty());
        }
        prop_assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }
}
