//! One reconcile: observe → evaluate gates → engine decides → apply actions → events → status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::{Instrument, field};

use super::context::Context;
use super::error::{Error, backoff};
use super::gates;
use super::observe::{Observed, observe, rollout_key};
use super::priors::PriorStore;
use super::status;
use super::targets::{Desired, ObservedTarget, TargetWriter};
use super::workloads;
use crate::api::{ABORT_ANNOTATION, ConfigRollout, PROMOTE_ANNOTATION, RETRY_ANNOTATION};
use crate::engine::{self, Action as EngineAction, Decision, Inputs, Requests, RolloutMeta};

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
        ctx.namespaces.wait_until_ready().await.is_ok()
            && ctx.rollouts.wait_until_ready().await.is_ok()
    };
    if !tokio::time::timeout(CACHE_SYNC_WAIT, synced)
        .await
        .unwrap_or(false)
    {
        return Err(Error::NotReady);
    }
    let ns = guard.namespace().unwrap_or_default();
    let api: Api<ConfigRollout> = Api::namespaced(ctx.client.clone(), &ns);
    // Read fresh: the cache may not hold our own last status write yet, and deciding from a
    // stale status could repeat a step that was already undone.
    let Some(rollout) = api
        .get_opt(&guard.name_any())
        .await
        .map_err(|e| Error::kube("read ConfigRollout", e))?
    else {
        return Ok(Action::await_change());
    };
    if rollout.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }

    let meta = rollout_meta(&rollout);
    let mut observed = observe(ctx, &rollout).await?;
    let credentials = gates::read_credentials(&ctx.client, &rollout).await?;
    observed.world.gate_credentials = credentials.observed();
    if let Some(Ok(config)) = &observed.world.config {
        let revision = engine::revision_of(config, &ctx.settings.revision_key);
        tracing::Span::current().record("revision", revision.as_str());
    }
    let current_status = rollout.status.clone().unwrap_or_default();

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
            .evaluate(&credentials, &rollout.spec, &meta, &requests, now)
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

    apply_actions(ctx, &rollout, &mut observed, &decision).await?;
    let mut desired = decision.status.clone();
    desired.observed_generation = Some(meta.generation);
    ctx.ensure_leading()?;
    if status::write(&api, &rollout, &desired).await? {
        tracing::debug!(phase = ?desired.phase, "status written");
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

async fn apply_actions(
    ctx: &Context,
    rollout: &ConfigRollout,
    observed: &mut Observed,
    decision: &Decision,
) -> Result<(), Error> {
    let config = &rollout.spec.config;
    let writer = TargetWriter::new(
        ctx.client.clone(),
        config.kind,
        &config.name,
        ctx.settings.revision_key.clone(),
    );
    let store = PriorStore::new(ctx.client.clone(), rollout)?;
    for action in &decision.actions {
        ctx.ensure_leading()?;
        match action {
            EngineAction::RecordPriors { namespaces } => {
                let targets: Vec<(String, Option<&ObservedTarget>)> = namespaces
                    .iter()
                    .map(|ns| (ns.clone(), observed.targets.get(ns)))
                    .collect();
                observed.priors = store.record(&targets).await?;
                tracing::info!(targets = namespaces.len(), "recorded prior contents");
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
                if let Some(ns) = namespaces
                    .iter()
                    .find(|ns| !observed.priors.targets.contains_key(*ns))
                {
                    return Err(Error::MissingPrior(ns.clone()));
                }
                let desired = Desired::revision(resolved, revision, &rollout_key(rollout));
                writer
                    .write_batch(namespaces, &desired, &observed.targets)
                    .await?;
                tracing::info!(targets = namespaces.len(), %revision, "wrote targets");
            }
            EngineAction::RestoreTargets { namespaces } => {
                writer
                    .restore_batch(namespaces, &observed.priors, &observed.targets)
                    .await?;
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
                workloads::stamp(&ctx.client, namespace, revision, list).await?;
                tracing::info!(%namespace, workloads = list.len(), %revision, "stamped workloads");
            }
            EngineAction::ForgetPriors => {
                store.forget().await?;
                observed.priors = Default::default();
                tracing::info!("forgot prior contents: the rollback point moved on");
            }
        }
    }
    Ok(())
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
