//! Rollback: which targets to restore, in which order, how restored
//! workloads are re-stamped, and when a rollback is complete.
//!
//! The rollback point is what every target held before the first revision
//! since the last stable one overwrote it (`world.priors`). It can span
//! superseded revisions, so targets outside the current layout are restored too.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{Action, PriorRecord, TargetState, WorkloadKind, WorkloadState, World};
use super::rings::alive_namespaces;
use crate::api::ConfigRolloutStatus;

/// Targets with a prior record, in restore order: targets of rings after the
/// current one (or of no ring: written by a superseded revision) first, then
/// the current ring, then earlier rings from the latest back to the first.
/// The ring most likely to be hurting is restored before healthy ones.
pub(crate) fn restore_order(
    status: &ConfigRolloutStatus,
    priors: &BTreeMap<String, PriorRecord>,
) -> Vec<String> {
    let current = status
        .current_ring
        .as_deref()
        .and_then(|name| status.rings.iter().position(|r| r.name == name));
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut tail: Vec<String> = Vec::new();
    if let Some(current) = current {
        for ring in status.rings.iter().take(current.saturating_add(1)).rev() {
            for target in &ring.targets {
                if priors.contains_key(target) && placed.insert(target.as_str()) {
                    tail.push(target.clone());
                }
            }
        }
    }
    let mut order: Vec<String> = priors
        .keys()
        .filter(|ns| !placed.contains(ns.as_str()))
        .cloned()
        .collect();
    order.extend(tail);
    order
}

/// Whether a target holds exactly its recorded prior (absent if it was absent).
pub(crate) fn holds_prior(target: Option<&TargetState>, prior: &PriorRecord) -> bool {
    if prior.lost {
        return false;
    }
    match target {
        Some(t) if t.exists => prior.existed && t.content_hash == prior.content_hash,
        _ => !prior.existed,
    }
}

/// Whether target `key` was seen holding its prior: a target of a cluster that cannot be
/// reached counts only by what was last seen of it, and one never seen is unknown.
pub(crate) fn seen_holding_prior(world: &World, key: &str, prior: &PriorRecord) -> bool {
    match world.targets.get(key) {
        None if world.unreachable(key).is_some() => false,
        target => holds_prior(target, prior),
    }
}

/// The revision restored workloads are stamped with: the one the prior
/// content carried, else the stable revision, else the prior content's own
/// hash. Any value other than the rolled-back revision makes pods reload.
pub(crate) fn restore_stamp(prior: &PriorRecord, stable: Option<&str>) -> String {
    prior
        .revision
        .clone()
        .or_else(|| stable.map(str::to_string))
        .or_else(|| prior.content_hash.clone())
        .unwrap_or_else(|| "none".to_string())
}

/// Stamp actions for workloads in restored namespaces that a rollout stamped
/// and that do not carry the restore stamp yet. Workloads never stamped were
/// never restarted by a rollout and are left alone.
pub(crate) fn restamp_actions(
    order: &[String],
    priors: &BTreeMap<String, PriorRecord>,
    workloads: &BTreeMap<String, Vec<WorkloadState>>,
    stable: Option<&str>,
) -> Vec<Action> {
    order
        .iter()
        .filter_map(|ns| {
            let prior = priors.get(ns).filter(|p| !p.lost)?;
            let stamp = restore_stamp(prior, stable);
            let stale: Vec<(WorkloadKind, String)> = workloads
                .get(ns)?
                .iter()
                .filter(|w| w.stamped_revision.as_ref().is_some_and(|s| *s != stamp))
                .map(|w| (w.kind, w.name.clone()))
                .collect();
            (!stale.is_empty()).then(|| Action::StampWorkloads {
                namespace: ns.clone(),
                revision: stamp,
                workloads: stale,
            })
        })
        .collect()
}

/// Targets the rollout `key` overwrote since the rollback point (they carry its
/// annotation with a revision other than `stable`) whose prior is not on record,
/// or whose record cannot be trusted or was accepted as lost: nothing is ever
/// restored there.
pub(crate) fn priors_missing(world: &World, key: &str, stable: Option<&str>) -> Vec<String> {
    let mut missing = priors_unknown(world, key, stable);
    missing.extend(
        world
            .priors
            .iter()
            .filter(|(_, p)| p.lost)
            .map(|(ns, _)| ns.clone()),
    );
    missing.sort();
    missing
}

/// The missing priors no one has accepted as lost yet: they hold forward progress.
pub(crate) fn priors_unknown(world: &World, key: &str, stable: Option<&str>) -> Vec<String> {
    let alive = alive_namespaces(&world.namespaces);
    let mut missing: BTreeSet<&str> = world
        .targets
        .iter()
        .filter(|(ns, t)| {
            t.exists
                && t.rollout.as_deref() == Some(key)
                && t.revision.is_some()
                && t.revision.as_deref() != stable
                && !world.priors.contains_key(ns.as_str())
                && alive.contains(ns.as_str())
        })
        .map(|(ns, _)| ns.as_str())
        .collect();
    missing.extend(world.unreadable_priors.keys().map(String::as_str));
    missing.into_iter().map(str::to_string).collect()
}

/// Records the persisted status counts that the store does not hold and that
/// the `named` missing targets do not account for: a store that lost records
/// is never taken at its word.
pub(crate) fn priors_lost_unnamed(
    persisted: &ConfigRolloutStatus,
    world: &World,
    named: usize,
) -> u32 {
    let recorded = persisted.priors.as_ref().map_or(0, |p| p.recorded);
    let found = world.priors.len() + world.unreadable_priors.len();
    let found = u32::try_from(found).unwrap_or(u32::MAX);
    let named = u32::try_from(named).unwrap_or(u32::MAX);
    recorded.saturating_sub(found).saturating_sub(named)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PriorsStatus, RingStatus};
    use crate::engine::model::NamespaceInfo;

    fn prior(hash: Option<&str>) -> PriorRecord {
        PriorRecord {
            existed: hash.is_some(),
            content_hash: hash.map(str::to_string),
            revision: None,
            lost: false,
        }
    }

    #[test]
    fn priors_are_missing_where_overwritten_unrecorded_untrusted_or_lost() {
        let written = |revision: &str| TargetState {
            exists: true,
            revision: Some(revision.into()),
            content_hash: Some(revision.into()),
            rollout: Some("platform/r".into()),
            last_manager: None,
        };
        let alive = |name: &str| NamespaceInfo {
            name: name.into(),
            ..NamespaceInfo::default()
        };
        let world = World {
            namespaces: ["a", "b", "c", "d"].map(alive).to_vec(),
            targets: BTreeMap::from([
                ("a".into(), written("new")),
                ("b".into(), written("new")),
                ("c".into(), written("stable")),
            ]),
            priors: BTreeMap::from([
                ("b".into(), prior(Some("old"))),
                (
                    "d".into(),
                    PriorRecord {
                        lost: true,
                        ..prior(None)
                    },
                ),
            ]),
            unreadable_priors: BTreeMap::from([("e".into(), "bad hash".into())]),
            ..World::default()
        };
        let stable = Some("stable");
        assert_eq!(priors_unknown(&world, "platform/r", stable), ["a", "e"]);
        assert_eq!(
            priors_missing(&world, "platform/r", stable),
            ["a", "d", "e"]
        );
        assert_eq!(priors_unknown(&world, "platform/other", stable), ["e"]);
        let persisted = ConfigRolloutStatus {
            priors: Some(PriorsStatus {
                epoch: 1,
                recorded: 6,
            }),
            ..ConfigRolloutStatus::default()
        };
        // 6 recorded, 3 found, 2 named: 1 lost that no target names.
        assert_eq!(priors_lost_unnamed(&persisted, &world, 2), 1);
    }

    #[test]
    fn rollback_restores_later_rings_then_current_then_earlier() {
        let ring = |name: &str, targets: &[&str]| RingStatus {
            name: name.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            ..RingStatus::default()
        };
        let status = ConfigRolloutStatus {
            current_ring: Some("two".into()),
            rings: vec![
                ring("one", &["a"]),
                ring("two", &["b", "c"]),
                ring("three", &["d"]),
            ],
            ..ConfigRolloutStatus::default()
        };
        let priors: BTreeMap<String, PriorRecord> = ["a", "b", "c", "d", "z"]
            .iter()
            .map(|ns| (ns.to_string(), prior(Some("old"))))
            .collect();
        assert_eq!(
            restore_order(&status, &priors),
            vec!["d", "z", "b", "c", "a"]
        );
    }

    #[test]
    fn holds_prior_means_same_content_or_absent() {
        let present = |hash: &str| TargetState {
            exists: true,
            content_hash: Some(hash.into()),
            ..TargetState::default()
        };
        assert!(holds_prior(Some(&present("old")), &prior(Some("old"))));
        assert!(!holds_prior(Some(&present("new")), &prior(Some("old"))));
        assert!(!holds_prior(None, &prior(Some("old"))));
        assert!(holds_prior(None, &prior(None)));
        assert!(!holds_prior(Some(&present("new")), &prior(None)));
    }

    #[test]
    fn restore_stamp_prefers_prior_revision_then_stable() {
        let mut p = prior(Some("hash"));
        assert_eq!(restore_stamp(&p, None), "hash");
        assert_eq!(restore_stamp(&p, Some("stable")), "stable");
        p.revision = Some("r0".into());
        assert_eq!(restore_stamp(&p, Some("stable")), "r0");
    }
}
