//! One reconcile: observe → evaluate gates → engine decides → apply actions → events → status.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, field};

use super::context::Context;
use super::error::{Error, backoff};
use super::gates;
use super::observe::{Observed, observe, rollout_key};
use super::priors::{PriorStore, RecordError};
use super::status;
use super::targets::{Desired, TargetWriter};
use super::workloads;
use crate::api::{
    ABORT_ANNOTATION, ConfigRollout, ConfigRolloutStatus, PROMOTE_ANNOTATION, RETRY_ANNOTATION,
};
use crate::engine::{
    self, Action as EngineAction, ActionFailure, Decision, FailureReason, Inputs, Layout, Requests,
    RolloutMeta, hash_of,
};

/// How long a reconcile waits for the watch caches before backing off.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(30);
/// Smallest requeue delay, so a deadline already in the past cannot spin the controller.
const MIN_REQUEUE: Duration = Duration::from_millis(10);

pub fn rollout_meta(rollout: &ConfigRollout) -> RolloutMeta {
    let annotation = |k: &str| rollout.annotations().get(k).cloned();
    RolloutMeta {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        generation: rollout.metadata.generation.unwrap_or(0),
        requests: Requests {
            promote: annotation(PROMOTE_ANNOTATION),
            abort: annotation(ABORT_ANNOTATION),
            retry: annotation(RETRY_ANNOTATION),
        },
    }
}

/// Entry point for the kube Controller.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ConfigRollout>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let key = format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    );
    let span = tracing::info_span!("reconcile", rollout = %key, revision = field::Empty);
    let started = Instant::now();
    let result = async {
        let result = match &guard.0 {
            Ok(_) => reconcile_rollout(&guard, &ctx).await,
            Err(invalid) => Err(Error::InvalidObject(invalid.error.clone())),
        };
        if let Err(e) = &result {
            // Logged here, inside the span, so the line carries the rollout and revision.
            tracing::warn!(category = e.category(), error = %e, "reconcile failed");
        }
        result
    }
    .instrument(span)
    .await;
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

/// Permanent errors wait for a change; transient ones back off per object.
pub fn error_policy(
    guard: Arc<DeserializeGuard<ConfigRollout>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    // Leadership regained re-triggers every rollout.
    if matches!(err, Error::NotLeader) {
        return Action::await_change();
    }
    ctx.metrics.reconcile_failed(err.category());
    if err.is_permanent() {
        return Action::await_change();
    }
    let key = format!(
        "{}/{}",
        guard.namespace().unwrap_or_default(),
        guard.name_any()
    );
    Action::requeue(backoff(ctx.failed(&key)))
}

async fn reconcile_rollout(
    guard: &DeserializeGuard<ConfigRollout>,
    ctx: &Context,
) -> Result<Action, Error> {
    // A standby reads nothing and writes nothing; gaining leadership re-triggers every rollout.
    if !ctx.leads() {
        return Ok(Action::await_change());
    }
    // An empty namespace cache would look like every target namespace is gone.
    let synced = async {
        super::watches::store_ready(&ctx.namespaces).await
            && super::watches::store_ready(&ctx.rollouts).await
            && {
                ctx.cache.wait_until_ready().await;
                true
            }
    };
    if !tokio::time::timeout(CACHE_SYNC_WAIT, synced)
        .await
        .unwrap_or(false)
    {
        return Err(Error::NotReady);
    }
    let ns = guard.namespace().unwrap_or_default();
    let api: Api<ConfigRollout> = Api::namespaced(ctx.client.clone(), &ns);
    let key = format!("{ns}/{}", guard.name_any());
    // Deciding from a stale status could repeat a step that was already undone, so the
    // cached rollout is used only when it is this replica's own last status write (nothing
    // was written since, or its version would differ); otherwise it is read fresh.
    let cached = ctx
        .rollouts
        .get(&ObjectRef::from_obj(guard))
        .and_then(|g| g.0.as_ref().ok().cloned())
        .filter(|r| ctx.written.is(&key, r.resource_version().as_deref()));
    let rollout = match cached {
        Some(rollout) => rollout,
        None => {
            let read = api
                .get_opt(&guard.name_any())
                .await
                .map_err(|e| Error::kube("read ConfigRollout", e))?;
            let Some(rollout) = read else {
                ctx.written.wrote(&key, None);
                return Ok(Action::await_change());
            };
            rollout
        }
    };
    if rollout.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let meta = rollout_meta(&rollout);
    let read = async {
        let mut observed = observe(ctx, &rollout).await?;
        let credentials = gates::read_credentials(&ctx.client, &rollout).await?;
        observed.world.gate_credentials = credentials.observed();
        Ok::<_, Error>((observed, credentials))
    };
    let (mut observed, credentials) = match read.await {
        Ok(read) => read,
        Err(e) => {
            // Nothing can be decided without these reads: say so where SREs look.
            if let Some(failure) = e.read_failure() {
                let status = rollout.status.clone().unwrap_or_default();
                report(ctx, &api, &rollout, &status, &failure, Timestamp::now()).await?;
            }
            return Err(e);
        }
    };
    if let Some(Ok(config)) = &observed.world.config {
        let revision = engine::revision_of(config, &ctx.settings.revision_key);
        tracing::Span::current().record("revision", revision.as_str());
    }
    let current_status = observed.status.clone();

    let now = Timestamp::now();
    let requests = engine::gate_requests(&Inputs {
        rollout: &meta,
        spec: &rollout.spec,
        status: &current_status,
        world: &observed.world,
        settings: &ctx.settings,
        now,
    });
    if !requests.is_empty() {
        for (provider, result) in ctx
            .gates
            .evaluate(&credentials, &meta, &requests, now)
            .await
        {
            ctx.metrics.gate_evaluated(provider, result.verdict);
            observed.world.gate_results.push(result);
        }
    }
    let now = Timestamp::now();
    let decision = engine::decide(&Inputs {
        rollout: &meta,
        spec: &rollout.spec,
        status: &current_status,
        world: &observed.world,
        settings: &ctx.settings,
        now,
    });

    // Stored when it changed, or again when its records were lost and the rings were
    // resolved afresh (the same rings hash the same).
    let layout_changed = decision.status.layout.is_some()
        && (decision.status.layout != current_status.layout
            || observed.world.layout_missing.is_some());
    let acted = async {
        if layout_changed {
            store_layout(ctx, &rollout, &decision.status).await?;
        }
        apply_actions(ctx, &rollout, &mut observed, &decision).await
    };
    if let Err(e) = acted.await {
        // The decided status may assume what failed: report the failure on the persisted one.
        if let Error::Actions { failure, .. } = &e {
            report(ctx, &api, &rollout, &current_status, failure, now).await?;
        }
        return Err(e);
    }
    let mut desired = decision.status.clone();
    desired.observed_generation = Some(meta.generation);
    ctx.ensure_leading()?;
    // A refused write (a 409: someone wrote since) means the next reconcile reads afresh.
    let written = status::write(&api, &rollout, &desired)
        .await
        .inspect_err(|_| ctx.written.wrote(&key, None))?;
    if let Some(written) = written {
        tracing::debug!(phase = ?desired.phase, "status written");
        ctx.written.wrote(&key, written.resource_version());
    }
    // A rollout's first layout has no older records to delete (one left by a crash before
    // the first status write goes with the next change of layout).
    let had_layout = current_status.layout.is_some() || observed.world.layout_missing.is_some();
    if layout_changed
        && had_layout
        && let Some(layout) = &desired.layout
    {
        ctx.layouts.prune(&ctx.client, &rollout, &layout.hash).await;
    }
    // Events and metrics describe transitions: only once the status recording them is persisted.
    record_metrics(ctx, &decision, now);
    ctx.ensure_leading()?;
    ctx.events
        .publish(&rollout.object_ref(&()), &decision.events)
        .await;

    Ok(match decision.requeue_at {
        Some(at) => {
            let wait =
                Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
            Action::requeue(wait.max(MIN_REQUEUE))
        }
        None => Action::await_change(),
    })
}

/// Marks the persisted `status` with what could not be done, and warns once.
async fn report(
    ctx: &Context,
    api: &Api<ConfigRollout>,
    rollout: &ConfigRollout,
    status: &ConfigRolloutStatus,
    failure: &ActionFailure,
    now: Timestamp,
) -> Result<(), Error> {
    let generation = rollout.metadata.generation.unwrap_or_default();
    let (reported, events) = engine::report_failure(status, failure, generation, now);
    ctx.ensure_leading()?;
    match status::write(api, rollout, &reported).await {
        Ok(Some(written)) => ctx
            .written
            .wrote(&rollout_key(rollout), written.resource_version()),
        Ok(None) => {}
        Err(write) => {
            ctx.written.wrote(&rollout_key(rollout), None);
            tracing::warn!(error = %write, "could not report the failure in status");
        }
    }
    ctx.events.publish(&rollout.object_ref(&()), &events).await;
    Ok(())
}

async fn apply_actions(
    ctx: &Context,
    rollout: &ConfigRollout,
    observed: &mut Observed,
    decision: &Decision,
) -> Result<(), Error> {
    let config = &rollout.spec.config;
    let writer = TargetWriter::new(
        ctx.fleet.clone(),
        config.kind,
        &config.name,
        ctx.max_inflight_writes,
        ctx.settings.revision_key.clone(),
    );
    let store = PriorStore::new(
        ctx.fleet.clone(),
        rollout,
        ctx.settings.revision_key.clone(),
    )?;
    let mut recorded: BTreeSet<String> = observed.priors.current.keys().cloned().collect();
    for action in &decision.actions {
        ctx.ensure_leading()?;
        match action {
            EngineAction::RecordPriors { namespaces } => {
                let scope = observed.world.namespaces.len();
                let failures = store.record(namespaces, &observed.priors, scope).await;
                let failed: BTreeSet<&str> = failures.iter().map(|(ns, _)| ns.as_str()).collect();
                recorded.extend(
                    namespaces
                        .iter()
                        .filter(|ns| !failed.contains(ns.as_str()))
                        .cloned(),
                );
                records_failed("record prior content", namespaces.len(), failures)?;
                tracing::info!(targets = namespaces.len(), "recorded prior contents");
            }
            EngineAction::RecordLostPriors { namespaces } => {
                let failures = store.record_lost(namespaces, &observed.priors).await;
                records_failed("record lost prior content", namespaces.len(), failures)?;
                recorded.extend(namespaces.iter().cloned());
                tracing::warn!(
                    targets = namespaces.len(),
                    "retry accepted that the prior content of these targets is lost"
                );
            }
            EngineAction::WriteTargets {
                revision,
                namespaces,
            } => {
                let Some(Ok(resolved)) = &observed.world.config else {
                    return Err(Error::InvalidSpec("no configuration to write".into()));
                };
                // Never overwrite a target whose prior content is not on record: rollback
                // could not be exact.
                if let Some(ns) = namespaces.iter().find(|ns| !recorded.contains(*ns)) {
                    return Err(Error::MissingPrior(ns.clone()));
                }
                let desired = Desired::revision(resolved, revision, &rollout_key(rollout));
                let failures = writer.write_batch(namespaces, &desired).await;
                if !failures.is_empty() {
                    return Err(actions_failed(
                        &format!("write revision {revision}"),
                        namespaces.len(),
                        failures,
                    ));
                }
                tracing::info!(targets = namespaces.len(), %revision, "wrote targets");
            }
            EngineAction::RestoreTargets { namespaces } => {
                let failures = writer.restore_batch(namespaces, &store).await;
                if !failures.is_empty() {
                    let uid = rollout.uid().unwrap_or_default();
                    for (ns, e) in &failures {
                        if let Error::UnreadablePrior { why, .. } = e
                            && let Some(record) = observed.priors.current.get(ns)
                        {
                            let version = record.resource_version.clone().unwrap_or_default();
                            ctx.prior_unreadable(&uid, ns, &version, why);
                        }
                    }
                    return Err(actions_failed(
                        "restore prior content",
                        namespaces.len(),
                        failures,
                    ));
                }
                tracing::info!(
                    targets = namespaces.len(),
                    "restored targets to their prior content"
                );
            }
            EngineAction::StampWorkloads {
                namespace,
                revision,
                workloads: list,
            } => {
                let stamped = match ctx.fleet.place(namespace) {
                    Ok(place) => {
                        workloads::stamp(&place.client, &place.namespace, revision, list).await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = stamped {
                    return Err(actions_failed(
                        "restart workloads",
                        1,
                        vec![(namespace.clone(), e)],
                    ));
                }
                tracing::info!(%namespace, workloads = list.len(), %revision, "stamped workloads");
            }
        }
    }
    Ok(())
}

/// Stores the rings' targets of `status` before the status naming them is written;
/// nothing when they are unknown (lost, and not resolved again by this decision).
async fn store_layout(
    ctx: &Context,
    rollout: &ConfigRollout,
    status: &ConfigRolloutStatus,
) -> Result<(), Error> {
    let layout = Layout::of(status);
    let hash = hash_of(&layout.encode());
    if status.layout.as_ref().map(|l| l.hash.as_str()) != Some(hash.as_str()) {
        return Ok(());
    }
    match ctx.layouts.write(&ctx.client, rollout, &layout).await {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Actions {
            failure: ActionFailure {
                reason: e.failure_reason(),
                what: "write the ring layout".into(),
                targets: Vec::new(),
                of: 0,
                detail: e.detail(),
            },
            category: e.category(),
        }),
    }
}

/// Recording failures of one action, as one error the status reports.
fn records_failed(
    what: &str,
    of: usize,
    failures: Vec<(String, RecordError)>,
) -> Result<(), Error> {
    if failures.is_empty() {
        return Ok(());
    }
    let failures = failures
        .into_iter()
        .map(|(ns, e)| (ns, record_error(e)))
        .collect();
    Err(actions_failed(what, of, failures))
}

fn record_error(e: RecordError) -> Error {
    match e {
        RecordError::Api(e) => e,
        RecordError::Claimed(other) => Error::Actions {
            failure: ActionFailure {
                reason: FailureReason::TargetConflict,
                what: "record prior content".into(),
                targets: Vec::new(),
                of: 0,
                detail: format!("the target is claimed by rollout {other}"),
            },
            category: "target-conflict",
        },
        RecordError::PriorLost(revision) => Error::Priors(format!(
            "the target already holds revision {revision} of this rollout but has no record: its prior content was lost"
        )),
    }
}

/// Per-target failures of one action, as one error the status reports.
fn actions_failed(what: &str, of: usize, mut failures: Vec<(String, Error)>) -> Error {
    failures.sort_by(|a, b| a.0.cmp(&b.0));
    // The most telling failure decides the reason: one that needs a person before a transient one.
    let first = failures
        .iter()
        .min_by_key(|(_, e)| matches!(e.failure_reason(), FailureReason::ApiUnavailable))
        .map(|(_, e)| (e.failure_reason(), e.category(), e.detail()));
    let (reason, category, detail) =
        first.unwrap_or((FailureReason::ApiUnavailable, "api", String::new()));
    Error::Actions {
        failure: ActionFailure {
            reason,
            what: what.to_string(),
            targets: failures.into_iter().map(|(ns, _)| ns).collect(),
            of,
            detail,
        },
        category,
    }
}

fn record_metrics(ctx: &Context, decision: &Decision, now: Timestamp) {
    for note in &decision.events {
        match note.reason {
            "RingPromoted" => ctx.metrics.promoted(),
            "RollbackStarted" => {
                let reason = decision
                    .status
                    .rollback
                    .as_ref()
                    .map_or("", |r| r.reason.as_str());
                ctx.metrics.rollback_started(reason);
            }
            "RollbackIncomplete" => ctx.metrics.rollback_incomplete(),
            "RollbackCompleted" => {
                let started = decision
                    .status
                    .rollback
                    .as_ref()
                    .and_then(|r| r.started_at.as_ref());
                if let Some(took) =
                    started.and_then(|s| Duration::try_from(now.duration_since(s.0)).ok())
                {
                    ctx.metrics.rollback_completed(took);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConfigRolloutSpec;
    use serde_json::json;

    #[test]
    fn manual_requests_come_from_annotations() {
        let spec: ConfigRolloutSpec = serde_json::from_value(json!({
            "config": {"name": "flags", "data": {}},
            "rings": [{"name": "a", "namespaces": ["x"]}],
        }))
        .unwrap();
        let mut r = ConfigRollout::new("flags", spec);
        r.metadata.namespace = Some("platform".into());
        r.metadata.generation = Some(3);
        r.metadata.annotations =
            Some([(PROMOTE_ANNOTATION.to_string(), "req-1".to_string())].into());
        let meta = rollout_meta(&r);
        assert_eq!(meta.generation, 3);
        assert_eq!(meta.requests.promote.as_deref(), Some("req-1"));
        assert_eq!(meta.requests.abort, None);
    }
}
