//! `pause`, `resume` (`spec.paused`) and `promote`, `abort`, `retry` (a request annotation
//! with a fresh id, acknowledged in `status.handledRequests`).
//!
//! Whether a request means anything now is the engine's own rule
//! ([`Request::means_nothing_in`]): a request it would drop is not sent.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use super::{PluginError, Session};
use crate::api::{ConfigRollout, Phase, RingPhase, Verdict};
use crate::engine::Request;

/// What the user asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    Pause,
    Resume,
    Request(Request),
}

impl Ask {
    fn verb(self) -> &'static str {
        match self {
            Ask::Pause => "pause",
            Ask::Resume => "resume",
            Ask::Request(Request::Promote) => "promote",
            Ask::Request(Request::Abort) => "abort",
            Ask::Request(Request::Retry) => "retry",
        }
    }
}

/// Whether to send the request, judged from the rollout as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Send it; the controller acts on it at once.
    Send,
    /// Send it; the controller acts on it later, for this reason.
    Waits(String),
    /// Nothing to send: the rollout already is as asked.
    AlreadyDone(String),
    /// Not sent: the controller would drop it, for this reason.
    MeansNothing(String),
}

fn phase_name(phase: Option<Phase>) -> String {
    phase.map_or_else(|| "not started".to_string(), |p| format!("{p:?}"))
}

fn active_ring(rollout: &ConfigRollout) -> Option<(usize, RingPhase)> {
    rollout
        .status
        .as_ref()?
        .rings
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(r.phase, RingPhase::Applying | RingPhase::Verifying))
        .map(|(i, r)| (i, r.phase))
}

pub fn assess(ask: Ask, rollout: &ConfigRollout) -> Assessment {
    let phase = rollout.status.as_ref().and_then(|s| s.phase);
    let paused = rollout.spec.paused;
    match ask {
        Ask::Pause if paused => Assessment::AlreadyDone("spec.paused is already true".into()),
        Ask::Pause if phase == Some(Phase::RollingBack) => Assessment::Waits(
            "a rollback in progress is not held by a pause: it finishes, and the next revision waits"
                .into(),
        ),
        Ask::Pause => Assessment::Send,
        Ask::Resume if !paused => Assessment::AlreadyDone("spec.paused is already false".into()),
        Ask::Resume => Assessment::Send,
        Ask::Request(request) if request.means_nothing_in(phase) => {
            let why = match request {
                Request::Promote => "there is no bake to end",
                Request::Abort => "there is nothing in flight to roll back",
                Request::Retry => "only a RolledBack or Failed revision is retried",
            };
            Assessment::MeansNothing(format!(
                "{} means nothing while the rollout is {}: {why}",
                ask.verb(),
                phase_name(phase)
            ))
        }
        Ask::Request(Request::Promote) if paused || phase == Some(Phase::Paused) => {
            Assessment::Waits("the rollout is paused: the bake ends once it is resumed".into())
        }
        Ask::Request(Request::Promote)
            if active_ring(rollout).is_some_and(|(_, p)| p == RingPhase::Applying) =>
        {
            Assessment::Waits(
                "the ring is still being written: its bake ends once it is verifying".into(),
            )
        }
        Ask::Request(Request::Retry) if phase == Some(Phase::RollingBack) => {
            Assessment::Waits("the revision is retried once the rollback completed".into())
        }
        Ask::Request(_) => Assessment::Send,
    }
}

/// The change that asks for `ask`, and the line saying what it asked.
pub fn patch(ask: Ask, rollout: &ConfigRollout, id: &str) -> (serde_json::Value, String) {
    let target = format!(
        "configrollout {}/{}",
        rollout.namespace().unwrap_or_default(),
        rollout.name_any()
    );
    match ask {
        Ask::Pause | Ask::Resume => {
            let paused = ask == Ask::Pause;
            (
                json!({"spec": {"paused": paused}}),
                format!("{target}: set spec.paused={paused}"),
            )
        }
        Ask::Request(request) => (
            json!({"metadata": {"annotations": {request.annotation(): id}}}),
            format!(
                "{target}: asked to {} ({}={id})",
                ask.verb(),
                request.annotation()
            ),
        ),
    }
}

/// How a request ended, once the controller has answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Done as asked (false: refused or dropped).
    pub done: bool,
    pub line: String,
}

/// The outcome of `ask` (sent with `id`, producing `generation` for a spec change),
/// judged from `before` (as it was when sent) and `now`; None while it is pending.
pub fn outcome(
    ask: Ask,
    id: &str,
    generation: i64,
    before: &ConfigRollout,
    now: &ConfigRollout,
) -> Option<Outcome> {
    let status = now.status.clone().unwrap_or_default();
    let summary = format!(
        "{}: {}",
        phase_name(status.phase),
        status.message.as_deref().unwrap_or("")
    );
    let request = match ask {
        Ask::Pause | Ask::Resume => {
            return status
                .observed_generation
                .is_some_and(|g| g >= generation)
                .then(|| Outcome {
                    done: true,
                    line: format!("{} observed: {summary}", ask.verb()),
                });
        }
        Ask::Request(request) => request,
    };
    let handled = status
        .handled_requests
        .as_ref()
        .and_then(|h| request.handled(h));
    if handled != Some(id) {
        return None;
    }
    let was = before.status.as_ref().and_then(|s| s.phase);
    let done = match request {
        Request::Promote => active_ring(before).is_some_and(|(i, _)| {
            status
                .rings
                .get(i)
                .is_some_and(|r| r.phase == RingPhase::Promoted)
        }),
        Request::Abort => {
            matches!(
                status.phase,
                Some(Phase::RollingBack | Phase::RolledBack | Phase::Failed)
            ) && status
                .rollback
                .as_ref()
                .is_some_and(|r| r.reason == "Aborted")
        }
        Request::Retry => was != status.phase && status.phase != Some(Phase::RolledBack),
    };
    let line = if done {
        format!("{} {id} handled: {summary}", ask.verb())
    } else if request == Request::Promote && !request.means_nothing_in(status.phase) {
        let failing: Vec<String> = active_ring(before)
            .and_then(|(i, _)| status.rings.get(i))
            .map(|r| {
                r.gates
                    .iter()
                    .filter(|g| g.verdict == Some(Verdict::Fail))
                    .map(|g| g.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        if failing.is_empty() {
            format!("promote {id} refused: {summary}")
        } else {
            format!(
                "promote {id} refused: gate {} is failing ({summary})",
                failing.join(", ")
            )
        }
    } else {
        format!(
            "{} {id} dropped: it meant nothing once the rollout was {summary}",
            ask.verb()
        )
    };
    Some(Outcome { done, line })
}

/// A request id no one else picks: the time and a random suffix.
pub fn fresh_id(now: Timestamp) -> String {
    format!("{}-{:04x}", now.as_second(), rand::random::<u16>())
}

/// Sends `ask` to the rollout `name`, saying each step; with `wait`, watches until it is
/// answered. True when it was done as asked (or nothing needed doing).
pub async fn run(
    session: &Session,
    name: &str,
    ask: Ask,
    wait: Option<Duration>,
    mut say: impl FnMut(&str),
) -> Result<bool, PluginError> {
    let before = session.rollout(name).await?;
    match assess(ask, &before) {
        Assessment::MeansNothing(why) => {
            say(&format!("not sent: {why}"));
            return Ok(false);
        }
        Assessment::AlreadyDone(why) => {
            say(&format!("nothing to do: {why}"));
            return Ok(true);
        }
        Assessment::Waits(why) => say(&format!("note: {why}")),
        Assessment::Send => {}
    }
    let id = fresh_id(Timestamp::now());
    let (body, asked) = patch(ask, &before, &id);
    let after = session
        .rollouts()
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| session.error("send the request", e))?;
    say(&asked);
    let Some(timeout) = wait else {
        return Ok(true);
    };
    let generation = after.metadata.generation.unwrap_or(0);
    let answered = async {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut objects = watcher(session.rollouts(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(object) = objects.next().await {
            match object {
                Ok(now) => {
                    if let Some(outcome) = outcome(ask, &id, generation, &before, &now) {
                        return Ok(outcome);
                    }
                }
                Err(e) => eprintln!("watch interrupted, retrying: {}", super::one_line(&e)),
            }
        }
        Err(PluginError::Input(
            "the watch ended before an answer".into(),
        ))
    };
    match tokio::time::timeout(timeout, answered).await {
        Ok(Ok(outcome)) => {
            say(&outcome.line);
            Ok(outcome.done)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => {
            say(&format!(
                "no answer within {}: is the controller running? The request stays pending.",
                super::short_duration(timeout)
            ));
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rollout(status: serde_json::Value, paused: bool) -> ConfigRollout {
        serde_json::from_value(json!({
            "apiVersion": "ringfence.dev/v1alpha1",
            "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform", "generation": 3},
            "spec": {
                "paused": paused,
                "config": {"name": "flags", "data": {"a": "1"}},
                "rings": [{"name": "one", "namespaces": ["c1"]}, {"name": "two", "namespaces": ["c2"]}],
            },
            "status": status,
        }))
        .unwrap()
    }

    fn verifying(gate_verdict: &str) -> serde_json::Value {
        json!({
            "observedGeneration": 3, "revision": "r1", "phase": "Progressing", "message": "baking",
            "rings": [
                {"name": "one", "phase": "Verifying", "gates": [{"name": "g", "verdict": gate_verdict}]},
                {"name": "two", "phase": "Pending"},
            ],
        })
    }

    const PROMOTE: Ask = Ask::Request(Request::Promote);
    const ABORT: Ask = Ask::Request(Request::Abort);
    const RETRY: Ask = Ask::Request(Request::Retry);

    #[test]
    fn requests_are_judged_by_the_engines_rules() {
        let succeeded = rollout(json!({"phase": "Succeeded"}), false);
        for ask in [PROMOTE, ABORT, RETRY] {
            assert!(
                matches!(assess(ask, &succeeded), Assessment::MeansNothing(_)),
                "{ask:?}"
            );
        }
        let Assessment::MeansNothing(why) = assess(ABORT, &succeeded) else {
            unreachable!()
        };
        assert_eq!(
            why,
            "abort means nothing while the rollout is Succeeded: there is nothing in flight to roll back"
        );
        let progressing = rollout(verifying("Pass"), false);
        assert_eq!(assess(PROMOTE, &progressing), Assessment::Send);
        assert_eq!(assess(ABORT, &progressing), Assessment::Send);
        assert!(matches!(
            assess(RETRY, &progressing),
            Assessment::MeansNothing(_)
        ));
        assert!(matches!(
            assess(Ask::Resume, &progressing),
            Assessment::AlreadyDone(_)
        ));
        assert_eq!(assess(Ask::Pause, &progressing), Assessment::Send);
        let paused = rollout(verifying("Pass"), true);
        assert!(matches!(assess(PROMOTE, &paused), Assessment::Waits(_)));
        assert!(matches!(
            assess(Ask::Pause, &paused),
            Assessment::AlreadyDone(_)
        ));
        let rolling_back = rollout(json!({"phase": "RollingBack"}), false);
        assert!(matches!(assess(RETRY, &rolling_back), Assessment::Waits(_)));
        assert!(matches!(
            assess(ABORT, &rolling_back),
            Assessment::MeansNothing(_)
        ));
        let failed = rollout(json!({"phase": "Failed"}), false);
        assert_eq!(assess(ABORT, &failed), Assessment::Send);
        assert_eq!(assess(RETRY, &failed), Assessment::Send);
    }

    #[test]
    fn the_patch_is_the_annotation_with_the_id_or_the_spec_field() {
        let r = rollout(verifying("Pass"), false);
        let (body, line) = patch(ABORT, &r, "42-beef");
        assert_eq!(
            body,
            json!({"metadata": {"annotations": {"ringfence.dev/abort": "42-beef"}}})
        );
        assert_eq!(
            line,
            "configrollout platform/flags: asked to abort (ringfence.dev/abort=42-beef)"
        );
        let (body, _) = patch(Ask::Pause, &r, "unused");
        assert_eq!(body, json!({"spec": {"paused": true}}));
        let id = fresh_id(Timestamp::from_second(1_700_000_000).unwrap());
        assert!(id.starts_with("1700000000-") && id.len() == 15, "{id}");
    }

    fn handled(mut status: serde_json::Value, request: &str, id: &str) -> serde_json::Value {
        status["handledRequests"] = json!({request: id});
        status
    }

    #[test]
    fn outcomes_wait_for_the_acknowledgement_of_this_id() {
        let before = rollout(verifying("Pass"), false);
        assert_eq!(outcome(PROMOTE, "id1", 3, &before, &before), None);
        let other = rollout(handled(verifying("Pass"), "promote", "older"), false);
        assert_eq!(outcome(PROMOTE, "id1", 3, &before, &other), None);

        let mut promoted = handled(verifying("Pass"), "promote", "id1");
        promoted["rings"][0]["phase"] = json!("Promoted");
        let o = outcome(PROMOTE, "id1", 3, &before, &rollout(promoted, false)).unwrap();
        assert!(o.done, "{o:?}");
        assert_eq!(o.line, "promote id1 handled: Progressing: baking");

        let refused = rollout(handled(verifying("Fail"), "promote", "id1"), false);
        let o = outcome(PROMOTE, "id1", 3, &before, &refused).unwrap();
        assert!(!o.done);
        assert_eq!(
            o.line,
            "promote id1 refused: gate g is failing (Progressing: baking)"
        );

        let aborted = rollout(
            json!({"phase": "RollingBack", "message": "restoring",
                   "rollback": {"revision": "r1", "reason": "Aborted", "message": "abort requested (id2)"},
                   "handledRequests": {"abort": "id2"}}),
            false,
        );
        let o = outcome(ABORT, "id2", 3, &before, &aborted).unwrap();
        assert!(o.done);
        assert_eq!(o.line, "abort id2 handled: RollingBack: restoring");

        let dropped = rollout(
            json!({"phase": "Succeeded", "message": "done", "handledRequests": {"abort": "id3"}}),
            false,
        );
        let o = outcome(ABORT, "id3", 3, &before, &dropped).unwrap();
        assert!(!o.done);
        assert!(o.line.contains("dropped"), "{o:?}");
    }

    #[test]
    fn a_spec_change_is_answered_by_its_generation() {
        let before = rollout(verifying("Pass"), false);
        let mut status = verifying("Pass");
        assert_eq!(
            outcome(Ask::Pause, "", 4, &before, &rollout(status.clone(), true)),
            None
        );
        status["observedGeneration"] = json!(4);
        status["phase"] = json!("Paused");
        let o = outcome(Ask::Pause, "", 4, &before, &rollout(status, true)).unwrap();
        assert_eq!(o.line, "pause observed: Paused: baking");
    }
}
