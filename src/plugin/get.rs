//! `kubectl ringfence get [NAME] [-w]`: a tree per rollout, or one line per rollout.
//!
//! Watching redraws the tree in place on a terminal; elsewhere (a pipe, a CI log) it
//! appends one timestamped line per fact that changed, as `kubectl get -w` appends rows.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};

use super::{PluginError, Session, ago, columns, number, qualified_target, split_target};
use crate::api::{ConfigRollout, GateStatus, Phase, RingPhase, RingStatus, Verdict};
use crate::demo::Style;
use crate::engine::FIRST_TARGETS;
use crate::stdout::print;

/// How objects are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The tree (one line per rollout without a name).
    Text,
    Json,
    Yaml,
}

fn phase_text(phase: Option<Phase>) -> String {
    phase.map_or_else(|| "Pending".to_string(), |p| format!("{p:?}"))
}

fn paint_phase(style: Style, phase: Option<Phase>) -> String {
    let text = phase_text(phase);
    match phase {
        Some(Phase::Succeeded) => style.green(&text),
        Some(Phase::RollingBack | Phase::RolledBack | Phase::Failed) => style.red(&text),
        _ => style.yellow(&text),
    }
}

fn paint_ring(style: Style, phase: RingPhase) -> String {
    let text = format!("{:<10}", format!("{phase:?}"));
    match phase {
        RingPhase::Promoted => style.green(&text),
        RingPhase::Failed | RingPhase::RolledBack => style.red(&text),
        RingPhase::Pending => style.dim(&text),
        RingPhase::Applying | RingPhase::Verifying => style.yellow(&text),
    }
}

fn paint_verdict(style: Style, verdict: Option<Verdict>) -> String {
    match verdict {
        Some(Verdict::Pass) => style.green("Pass"),
        Some(Verdict::Fail) => style.red("Fail"),
        Some(Verdict::Inconclusive) => style.yellow("Inconclusive"),
        None => style.dim("not evaluated"),
    }
}

fn opt_number(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), number)
}

/// The configured failure limit of a gate, from the spec (or the last valid one).
fn failure_limit(rollout: &ConfigRollout, gate: &str) -> Option<u32> {
    let last = rollout
        .status
        .as_ref()
        .and_then(|s| s.last_valid_spec.as_ref());
    rollout
        .spec
        .gates
        .iter()
        .chain(last.into_iter().flat_map(|l| &l.gates))
        .find(|g| g.name == gate)
        .map(|g| g.failure_limit)
}

fn gate_line(rollout: &ConfigRollout, gate: &GateStatus, now: Timestamp, style: Style) -> String {
    let limit = failure_limit(rollout, &gate.name).map_or_else(String::new, |l| format!("/{l}"));
    let evaluated = gate
        .last_evaluated
        .as_ref()
        .map_or_else(|| "never".to_string(), |t| ago(t, now));
    format!(
        "gate {}  {}  value {}  baseline {}  threshold {}  failures {}{limit}  evaluated {evaluated}",
        style.bold(&gate.name),
        paint_verdict(style, gate.verdict),
        opt_number(gate.value),
        opt_number(gate.baseline),
        opt_number(gate.threshold),
        gate.consecutive_failures,
    )
}

fn ring_line(ring: &RingStatus, width: usize, now: Timestamp, style: Style) -> String {
    let when = |label: &str, t: &Option<_>| match t {
        Some(t) => format!("  {label} {}", ago(t, now)),
        None => String::new(),
    };
    format!(
        "ring {:<width$}  {}  {}/{} updated{}{}{}",
        style.bold(&ring.name),
        paint_ring(style, ring.phase),
        ring.updated,
        ring.target_count,
        when("started", &ring.started_at),
        when("healthy since", &ring.healthy_since),
        when("promoted", &ring.promoted_at),
        width = width + style.bold("").len(),
    )
}

/// The targets of a ring shown for a glance: `firstTargets` as the API holds them (the
/// full `targets` only in process, where the first of them are shown).
fn shown_targets(ring: &RingStatus) -> &[String] {
    if ring.first_targets.is_empty() {
        &ring.targets[..ring.targets.len().min(FIRST_TARGETS)]
    } else {
        &ring.first_targets
    }
}

/// The header of a ring's targets.
const CLUSTER: &str = "CLUSTER";

/// A ring's targets as CLUSTER and NAMESPACE columns (`local` for the cluster ringfence
/// runs in), the cluster column `width` wide; then how many more the ring has.
fn target_lines(ring: &RingStatus, width: usize) -> Vec<String> {
    let shown = shown_targets(ring);
    if shown.is_empty() {
        return Vec::new();
    }
    let mut out = vec![format!("{CLUSTER:<width$}  NAMESPACE")];
    for key in shown {
        let (cluster, namespace) = split_target(key);
        out.push(format!("{cluster:<width$}  {namespace}"));
    }
    let total = usize::try_from(ring.target_count).unwrap_or(usize::MAX);
    if total > shown.len() {
        out.push(format!("… {} more", total - shown.len()));
    }
    out
}

/// The tree of one rollout.
pub fn tree(rollout: &ConfigRollout, now: Timestamp, style: Style) -> String {
    let mut out = Vec::new();
    let status = rollout.status.clone().unwrap_or_default();
    let mut head = format!(
        "{}/{}  revision {}  {}",
        rollout.namespace().unwrap_or_default(),
        style.bold(&rollout.name_any()),
        status.revision.as_deref().unwrap_or("-"),
        paint_phase(style, status.phase),
    );
    if let Some(progress) = &status.ring_progress {
        head.push_str(&format!("  ring {progress}"));
    }
    if let Some(health) = &status.health {
        head.push_str(&format!("  health {health}"));
    }
    out.push(head);
    if let Some(message) = &status.message {
        out.push(format!("  {message}"));
    }
    let generation = rollout.metadata.generation.unwrap_or(0);
    let mut facts = vec![format!(
        "stable revision {}",
        status.stable_revision.as_deref().unwrap_or("-")
    )];
    match status.observed_generation {
        None => facts.push("not observed by the controller yet".to_string()),
        Some(g) if g < generation => facts.push(format!(
            "generation {generation} not observed yet (status is of generation {g})"
        )),
        Some(_) => {}
    }
    if rollout.spec.paused {
        facts.push("spec.paused".to_string());
    }
    out.push(format!("  {}", facts.join(", ")));

    let width = status
        .rings
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0);
    // Targets are listed only for a rollout across clusters, where where they are is the
    // question; one cluster column for every ring, so that all the rings' targets line up.
    let across_clusters = status
        .rings
        .iter()
        .flat_map(shown_targets)
        .any(|key| key.contains('/'));
    let cluster_width = status
        .rings
        .iter()
        .flat_map(shown_targets)
        .map(|key| split_target(key).0.chars().count())
        .chain([CLUSTER.len()])
        .max()
        .unwrap_or(0);
    for (i, ring) in status.rings.iter().enumerate() {
        let last = i + 1 == status.rings.len();
        let (branch, stem) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        out.push(format!("  {branch}{}", ring_line(ring, width, now, style)));
        if ring.duplicate_count > 0 {
            out.push(format!(
                "  {stem}   {} duplicate namespace(s) held by an earlier ring",
                ring.duplicate_count
            ));
        }
        if across_clusters {
            for line in target_lines(ring, cluster_width) {
                out.push(format!("  {stem}   {line}"));
            }
        }
        for (j, gate) in ring.gates.iter().enumerate() {
            let (gbranch, gstem) = if j + 1 == ring.gates.len() {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            out.push(format!(
                "  {stem}{gbranch}{}",
                gate_line(rollout, gate, now, style)
            ));
            if gate.verdict != Some(Verdict::Pass)
                && let Some(message) = &gate.message
            {
                out.push(format!("  {stem}{gstem}   {}", style.dim(message)));
            }
        }
    }
    if !status.conditions.is_empty() {
        out.push("  conditions".to_string());
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    format!("    {}", c.type_),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.extend(columns(&rows).lines().map(str::to_string));
    }
    if let Some(rollback) = &status.rollback {
        let ended = match &rollback.completed_at {
            Some(t) => format!("ended {}", ago(t, now)),
            None => "in progress".to_string(),
        };
        let started = rollback
            .started_at
            .as_ref()
            .map_or_else(String::new, |t| format!("started {}, ", ago(t, now)));
        // status.rollback keeps the last one; once a revision moves on it is history.
        let last = if matches!(
            status.phase,
            Some(Phase::RollingBack | Phase::RolledBack | Phase::Failed)
        ) {
            ""
        } else {
            "last "
        };
        out.push(format!(
            "  {last}rollback of {}: {}  {started}{ended}",
            rollback.revision,
            style.red(&rollback.reason),
        ));
        out.push(format!("    {}", rollback.message));
        for gate in &rollback.gates {
            out.push(format!("    {}", gate_line(rollout, gate, now, style)));
        }
        if rollback.unrestored > 0 {
            out.push(format!(
                "    {} targets not restored: {}",
                rollback.unrestored,
                if across_clusters {
                    rollback
                        .unrestored_targets
                        .iter()
                        .map(|key| qualified_target(key))
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    rollback.unrestored_targets.join(", ")
                }
            ));
        }
    }
    out.push(String::new());
    out.join("\n")
}

/// One row per rollout, like `kubectl get` with the CRD's columns.
pub fn list(rollouts: &[ConfigRollout], all_namespaces: bool, now: Timestamp) -> String {
    if rollouts.is_empty() {
        return String::new();
    }
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "REVISION",
            "PHASE",
            "RING",
            "HEALTH",
            "AGE",
            "MESSAGE",
        ]
        .iter()
        .skip(usize::from(!all_namespaces))
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for rollout in rollouts {
        rows.push(row(rollout, all_namespaces, now));
    }
    columns(&rows)
}

fn row(rollout: &ConfigRollout, all_namespaces: bool, now: Timestamp) -> Vec<String> {
    let status = rollout.status.clone().unwrap_or_default();
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut row = Vec::new();
    if all_namespaces {
        row.push(rollout.namespace().unwrap_or_default());
    }
    row.extend([
        rollout.name_any(),
        dash(status.revision),
        phase_text(status.phase),
        dash(status.ring_progress),
        dash(status.health),
        rollout.metadata.creation_timestamp.as_ref().map_or_else(
            || "-".to_string(),
            |t| ago(t, now).trim_end_matches(" ago").to_string(),
        ),
        status.message.unwrap_or_default(),
    ]);
    row
}

/// The rollout as separate facts without relative times: what a watch that cannot
/// redraw prints when one of them changes.
pub fn facts(rollout: &ConfigRollout) -> Vec<String> {
    let status = rollout.status.clone().unwrap_or_default();
    let mut out = vec![format!(
        "{} revision {} {}{}: {}",
        rollout.name_any(),
        status.revision.as_deref().unwrap_or("-"),
        phase_text(status.phase),
        status
            .ring_progress
            .as_ref()
            .map_or_else(String::new, |p| format!(", ring {p}")),
        status.message.as_deref().unwrap_or(""),
    )];
    for ring in &status.rings {
        out.push(format!(
            "  ring {} {:?} {}/{} updated",
            ring.name, ring.phase, ring.updated, ring.target_count
        ));
        for gate in &ring.gates {
            let limit =
                failure_limit(rollout, &gate.name).map_or_else(String::new, |l| format!("/{l}"));
            out.push(format!(
                "  gate {} in {}: {} value {} baseline {} threshold {} failures {}{limit}",
                gate.name,
                ring.name,
                gate.verdict
                    .map_or_else(|| "not evaluated".to_string(), |v| format!("{v:?}")),
                opt_number(gate.value),
                opt_number(gate.baseline),
                opt_number(gate.threshold),
                gate.consecutive_failures,
            ));
        }
    }
    for c in &status.conditions {
        out.push(format!("  condition {}={} {}", c.type_, c.status, c.reason));
    }
    if let Some(rollback) = &status.rollback {
        out.push(format!(
            "  rollback of {} {}: {} ({})",
            rollback.revision,
            if rollback.completed_at.is_some() {
                "completed"
            } else {
                "started"
            },
            rollback.reason,
            rollback.message
        ));
    }
    out
}

/// Prints `rollouts` once in `format`.
pub fn render(
    rollouts: &[ConfigRollout],
    named: bool,
    all_namespaces: bool,
    format: Format,
    now: Timestamp,
    style: Style,
) -> Result<String, PluginError> {
    Ok(match format {
        Format::Text if named => rollouts.iter().map(|r| tree(r, now, style)).collect(),
        Format::Text => list(rollouts, all_namespaces, now),
        Format::Json if named => pretty_json(rollouts)?,
        Format::Json => pretty_json(&list_object(rollouts))?,
        Format::Yaml if named => yaml(&rollouts)?,
        Format::Yaml => yaml(&list_object(rollouts))?,
    })
}

fn list_object(rollouts: &[ConfigRollout]) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": rollouts})
}

fn pretty_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, PluginError> {
    // One object is printed bare, as `kubectl get NAME -o json` does.
    let value = serde_json::to_value(value).map_err(|e| PluginError::Input(e.to_string()))?;
    let value = match value {
        serde_json::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        other => other,
    };
    serde_json::to_string_pretty(&value)
        .map(|s| s + "\n")
        .map_err(|e| PluginError::Input(e.to_string()))
}

fn yaml<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, PluginError> {
    let value = serde_json::to_value(value).map_err(|e| PluginError::Input(e.to_string()))?;
    let value = match value {
        serde_json::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        other => other,
    };
    serde_saphyr::to_string(&value).map_err(|e| PluginError::Input(e.to_string()))
}

/// `get` without `-w`.
pub async fn get(
    session: &Session,
    name: Option<&str>,
    format: Format,
    style: Style,
) -> Result<String, PluginError> {
    let rollouts = match name {
        Some(name) => vec![session.rollout(name).await?],
        None => {
            let list = session
                .scope()
                .list(&Default::default())
                .await
                .map_err(|e| session.error("list rollouts", e))?;
            if list.items.is_empty() {
                return Err(PluginError::Input(if session.all_namespaces {
                    "no ConfigRollouts found".to_string()
                } else {
                    format!("no ConfigRollouts found in namespace {}", session.namespace)
                }));
            }
            list.items
        }
    };
    render(
        &rollouts,
        name.is_some(),
        session.all_namespaces,
        format,
        Timestamp::now(),
        style,
    )
}

/// How a watch shows changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Redraw the whole view in place (a terminal).
    Redraw,
    /// Append what changed.
    Append,
}

/// Clear the screen and move home: every redraw starts at the top, whatever wrapped.
const CLEAR: &str = "\x1b[H\x1b[2J";
/// On a terminal, relative times are refreshed this often even when nothing changed.
const TICK: Duration = Duration::from_secs(1);

/// `get -w`: runs until interrupted, or until the named rollout is deleted.
pub async fn watch(
    session: &Session,
    name: Option<&str>,
    format: Format,
    display: Display,
    style: Style,
) -> Result<(), PluginError> {
    // Fail fast and clearly when the rollout or the API is not there.
    if let Some(name) = name {
        session.rollout(name).await?;
    } else {
        session
            .scope()
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|e| session.error("list rollouts", e))?;
    }
    let config = match name {
        Some(name) => watcher::Config::default().fields(&format!("metadata.name={name}")),
        None => watcher::Config::default(),
    };
    let mut events = watcher(session.scope(), config).default_backoff().boxed();
    let mut seen: BTreeMap<(String, String), ConfigRollout> = BTreeMap::new();
    let mut printed_facts: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut printed_rows: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tick.tick(), if display == Display::Redraw && !seen.is_empty() => {
                draw(&seen, name.is_some(), session.all_namespaces, format, style)?;
                continue;
            }
        };
        let Some(event) = event else {
            return Ok(());
        };
        let changed: Vec<(String, String)> = match event {
            Ok(watcher::Event::Apply(r)) => {
                let k = key(&r);
                seen.insert(k.clone(), r);
                vec![k]
            }
            // The initial list (and each relist) is shown once it is complete.
            Ok(watcher::Event::Init) => {
                seen.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(r)) => {
                seen.insert(key(&r), r);
                continue;
            }
            Ok(watcher::Event::InitDone) => seen.keys().cloned().collect(),
            Ok(watcher::Event::Delete(r)) => {
                let (ns, n) = key(&r);
                seen.remove(&(ns.clone(), n.clone()));
                print(&format!("{ns}/{n} deleted\n"))?;
                if name.is_some() {
                    return Ok(());
                }
                continue;
            }
            Err(e) => {
                eprintln!("watch interrupted, retrying: {}", super::one_line(&e));
                continue;
            }
        };
        match (display, format) {
            (Display::Redraw, Format::Text) => {
                draw(&seen, name.is_some(), session.all_namespaces, format, style)?
            }
            (_, Format::Json | Format::Yaml) => {
                for k in &changed {
                    if let Some(r) = seen.get(k) {
                        let text = render(
                            std::slice::from_ref(r),
                            true,
                            false,
                            format,
                            Timestamp::now(),
                            style,
                        )?;
                        let sep = if format == Format::Yaml { "---\n" } else { "" };
                        print(&format!("{sep}{text}"))?;
                    }
                }
            }
            (Display::Append, Format::Text) => {
                let stamp = Timestamp::now().strftime("%H:%M:%S").to_string();
                let mut text = String::new();
                for k in &changed {
                    let Some(r) = seen.get(k) else { continue };
                    if name.is_some() {
                        let now = facts(r);
                        let before = printed_facts.get(k).cloned().unwrap_or_default();
                        for fact in now.iter().filter(|f| !before.contains(f)) {
                            text.push_str(&format!("{stamp} {fact}\n"));
                        }
                        printed_facts.insert(k.clone(), now);
                    } else {
                        // Without the age column, a row changes only when the rollout does.
                        let mut cells = row(r, session.all_namespaces, Timestamp::now());
                        let age = cells.len() - 2;
                        cells.remove(age);
                        let line = cells.join("  ");
                        if printed_rows.get(k) != Some(&line) {
                            text.push_str(&format!("{stamp} {line}\n"));
                            printed_rows.insert(k.clone(), line);
                        }
                    }
                }
                print(&text)?;
            }
        }
    }
}

fn key(r: &ConfigRollout) -> (String, String) {
    (r.namespace().unwrap_or_default(), r.name_any())
}

fn draw(
    seen: &BTreeMap<(String, String), ConfigRollout>,
    named: bool,
    all_namespaces: bool,
    format: Format,
    style: Style,
) -> Result<(), PluginError> {
    let rollouts: Vec<ConfigRollout> = seen.values().cloned().collect();
    let text = render(
        &rollouts,
        named,
        all_namespaces,
        format,
        Timestamp::now(),
        style,
    )?;
    let mut stdout = std::io::stdout().lock();
    match write!(stdout, "{CLEAR}{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;

    fn at(ago: i64) -> String {
        Timestamp::from_second(NOW - ago).unwrap().to_string()
    }

    /// A rollout rolling back: canary promoted, early failed by its gate.
    fn rolling_back() -> ConfigRollout {
        serde_json::from_value(json!({
            "apiVersion": "ringfence.dev/v1alpha1",
            "kind": "ConfigRollout",
            "metadata": {"name": "flags", "namespace": "platform", "generation": 2, "creationTimestamp": at(600)},
            "spec": {
                "config": {"name": "flags", "data": {"a": "1"}},
                "rings": [{"name": "canary", "namespaces": ["c1"]}, {"name": "early", "namespaces": ["e1", "e2"]}],
                "gates": [{"name": "error-rate", "failureLimit": 2, "webhook": {"url": "http://x"}}],
            },
            "status": {
                "observedGeneration": 2,
                "revision": "bbbb",
                "stableRevision": "aaaa",
                "phase": "RollingBack",
                "ringProgress": "2/2 early",
                "health": "Failing",
                "message": "Rolling back revision bbbb: gate error-rate failed in ring early.",
                "rings": [
                    {"name": "canary", "phase": "Promoted", "targetCount": 1, "updated": 1,
                     "startedAt": at(300), "healthySince": at(290), "promotedAt": at(200),
                     "gates": [{"name": "error-rate", "verdict": "Pass", "value": 0.002, "threshold": 0.007, "consecutiveFailures": 0, "lastEvaluated": at(200)}]},
                    {"name": "early", "phase": "Failed", "targetCount": 2, "duplicateCount": 1, "updated": 2,
                     "startedAt": at(190),
                     "gates": [{"name": "error-rate", "verdict": "Fail", "value": 0.08, "baseline": 0.002, "threshold": 0.007,
                                "consecutiveFailures": 2, "lastEvaluated": at(5), "message": "0.08 > 0.007"}]},
                ],
                "conditions": [{"type": "RolledBack", "status": "False", "reason": "RollingBack", "message": "restoring 2 targets",
                                "lastTransitionTime": at(5)}],
                "rollback": {"revision": "bbbb", "reason": "GateFailed", "message": "gate error-rate failed 2 times in ring early",
                             "startedAt": at(4), "gates": [{"name": "error-rate", "verdict": "Fail", "value": 0.08, "consecutiveFailures": 2}]},
            },
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(NOW).unwrap()
    }

    const PLAIN: Style = Style { color: false };

    #[test]
    fn the_tree_shows_rings_gates_conditions_and_the_rollback() {
        let text = tree(&rolling_back(), now(), PLAIN);
        let expected = "\
platform/flags  revision bbbb  RollingBack  ring 2/2 early  health Failing
  Rolling back revision bbbb: gate error-rate failed in ring early.
  stable revision aaaa
  ├─ ring canary  Promoted    1/1 updated  started 5m ago  healthy since 4m50s ago  promoted 3m20s ago
  │  └─ gate error-rate  Pass  value 0.002  baseline -  threshold 0.007  failures 0/2  evaluated 3m20s ago
  └─ ring early   Failed      2/2 updated  started 3m10s ago
        1 duplicate namespace(s) held by an earlier ring
     └─ gate error-rate  Fail  value 0.08  baseline 0.002  threshold 0.007  failures 2/2  evaluated 5s ago
           0.08 > 0.007
  conditions
    RolledBack  False  RollingBack  restoring 2 targets
  rollback of bbbb: GateFailed  started 4s ago, in progress
    gate error-rate failed 2 times in ring early
    gate error-rate  Fail  value 0.08  baseline -  threshold -  failures 2/2  evaluated never
";
        assert_eq!(text, expected, "\n{text}");
        assert!(tree(&rolling_back(), now(), Style { color: true }).contains("\x1b[31mFail"));
        let mut retried = rolling_back();
        retried.status.as_mut().unwrap().phase = Some(Phase::Progressing);
        assert!(tree(&retried, now(), PLAIN).contains("\n  last rollback of bbbb: GateFailed"));
    }

    #[test]
    fn each_rings_targets_show_their_cluster() {
        let mut r = rolling_back();
        let status = r.status.as_mut().unwrap();
        status.rings[0].first_targets = vec!["eu-west-1/checkout".into(), "checkout".into()];
        (status.rings[0].target_count, status.rings[0].updated) = (2, 2);
        status.rings[1].first_targets = vec!["e1".into(), "us-east-2/e2".into()];
        (status.rings[1].target_count, status.rings[1].updated) = (7, 7);
        let rollback = status.rollback.as_mut().unwrap();
        rollback.unrestored = 2;
        rollback.unrestored_targets = vec!["e1".into(), "us-east-2/e2".into()];
        let text = tree(&r, now(), PLAIN);
        let expected = "\
  ├─ ring canary  Promoted    2/2 updated  started 5m ago  healthy since 4m50s ago  promoted 3m20s ago
  │     CLUSTER    NAMESPACE
  │     eu-west-1  checkout
  │     local      checkout
  │  └─ gate error-rate  Pass  value 0.002  baseline -  threshold 0.007  failures 0/2  evaluated 3m20s ago
  └─ ring early   Failed      7/7 updated  started 3m10s ago
        1 duplicate namespace(s) held by an earlier ring
        CLUSTER    NAMESPACE
        local      e1
        us-east-2  e2
        … 5 more
     └─ gate error-rate  Fail  value 0.08  baseline 0.002  threshold 0.007  failures 2/2  evaluated 5s ago
";
        assert!(text.contains(expected), "\n{text}");
        assert!(
            text.contains("    2 targets not restored: local/e1, us-east-2/e2\n"),
            "\n{text}"
        );

        // The full targets, when held in process, are shown as firstTargets would be.
        let ring = &mut r.status.as_mut().unwrap().rings[1];
        ring.first_targets.clear();
        ring.targets = (1..=6).map(|i| format!("e{i}")).collect();
        ring.targets.push("us-east-2/e7".into());
        let text = tree(&r, now(), PLAIN);
        assert!(
            text.contains("        CLUSTER    NAMESPACE\n        local      e1\n"),
            "\n{text}"
        );
        assert!(
            text.contains("        local      e5\n        … 2 more\n"),
            "\n{text}"
        );

        // A rollout of the local cluster only lists no targets: its tree is as it was.
        let status = r.status.as_mut().unwrap();
        status.rings[0].first_targets = vec!["checkout".into()];
        status.rings[1].targets.pop();
        status.rollback.as_mut().unwrap().unrestored_targets = vec!["e1".into()];
        let text = tree(&r, now(), PLAIN);
        assert!(!text.contains("CLUSTER"), "\n{text}");
        assert!(text.contains("targets not restored: e1\n"), "\n{text}");
    }

    #[test]
    fn a_rollout_without_status_says_what_is_missing() {
        let mut r = rolling_back();
        r.status = None;
        r.spec.paused = true;
        let text = tree(&r, now(), PLAIN);
        assert_eq!(
            text,
            "platform/flags  revision -  Pending\n  stable revision -, not observed by the controller yet, spec.paused\n"
        );
    }

    #[test]
    fn the_list_has_one_row_per_rollout() {
        let mut other = rolling_back();
        other.metadata.name = Some("other".into());
        other.status = None;
        let text = list(&[rolling_back(), other.clone()], false, now());
        assert_eq!(
            text,
            "\
NAME   REVISION  PHASE        RING       HEALTH   AGE  MESSAGE
flags  bbbb      RollingBack  2/2 early  Failing  10m  Rolling back revision bbbb: gate error-rate failed in ring early.
other  -         Pending      -          -        10m
"
        );
        assert!(list(&[other], true, now()).starts_with("NAMESPACE  NAME"));
        assert_eq!(list(&[], true, now()), "");
    }

    #[test]
    fn facts_change_with_the_state_not_with_the_clock() {
        let r = rolling_back();
        let mut later = r.clone();
        let status = later.status.as_mut().unwrap();
        status.rings[1].gates[0].last_evaluated = None;
        assert_eq!(
            facts(&r),
            facts(&later),
            "a new evaluation time alone is no news"
        );
        let status = later.status.as_mut().unwrap();
        status.rings[1].gates[0].value = Some(0.09);
        status.rollback.as_mut().unwrap().completed_at = status.rings[0].started_at.clone();
        let before = facts(&r);
        let new: Vec<String> = facts(&later)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        assert_eq!(
            new,
            [
                "  gate error-rate in early: Fail value 0.09 baseline 0.002 threshold 0.007 failures 2/2",
                "  rollback of bbbb completed: GateFailed (gate error-rate failed 2 times in ring early)",
            ]
        );
    }

    #[test]
    fn json_and_yaml_print_the_object_or_a_list() {
        let r = rolling_back();
        let one = render(
            std::slice::from_ref(&r),
            true,
            false,
            Format::Json,
            now(),
            PLAIN,
        )
        .unwrap();
        let back: ConfigRollout = serde_json::from_str(&one).unwrap();
        assert_eq!(back, r);
        let many = render(
            &[r.clone(), r.clone()],
            false,
            false,
            Format::Yaml,
            now(),
            PLAIN,
        )
        .unwrap();
        let value: serde_json::Value = serde_saphyr::from_str(&many).unwrap();
        assert_eq!(value["kind"], "List");
        assert_eq!(value["items"].as_array().unwrap().len(), 2);
    }
}
