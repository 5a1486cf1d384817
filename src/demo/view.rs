//! The demo's live progress view: a pure rendering of a rollout's status into
//! lines, so it is tested without a terminal.

use crate::api::{ConfigRolloutStatus, RingPhase, Verdict};

/// Terminal styling; plain when colours are off.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// A progress bar of `width` cells for `done` of `total`.
pub fn bar(done: u32, total: u32, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        (done.min(total) as usize * width)
            .div_ceil(total as usize)
            .min(width)
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The member clusters of a ring's targets (`<cluster>/<namespace>`), in order of
/// appearance; none for a ring in the local cluster, whose targets are plain namespaces.
fn member_clusters(targets: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for cluster in targets
        .iter()
        .filter_map(|t| t.split_once('/').map(|(c, _)| c))
    {
        if !out.contains(&cluster) {
            out.push(cluster);
        }
    }
    out
}

/// One block of lines describing the rollout now.
pub fn render(status: &ConfigRolloutStatus, style: Style) -> Vec<String> {
    let mut lines = Vec::new();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".to_string());
    let phase = match phase.as_str() {
        "Succeeded" => style.green(&phase),
        "RolledBack" | "Failed" | "RollingBack" => style.red(&phase),
        _ => style.yellow(&phase),
    };
    lines.push(format!(
        "{} revision {}  {}  {}",
        style.bold("rollout"),
        status.revision.as_deref().unwrap_or("-"),
        phase,
        status.message.as_deref().unwrap_or("")
    ));
    for ring in &status.rings {
        let total = ring.target_count;
        let phase = format!("{:?}", ring.phase);
        let phase = match ring.phase {
            RingPhase::Promoted => style.green(&phase),
            RingPhase::Failed | RingPhase::RolledBack => style.red(&phase),
            RingPhase::Pending => style.dim(&phase),
            _ => style.yellow(&phase),
        };
        let mut line = format!(
            "  {:<8} {} {:>2}/{:<2} {:<10}",
            ring.name,
            bar(ring.updated, total, 10),
            ring.updated,
            total,
            phase
        );
        let clusters = member_clusters(&ring.first_targets);
        if !clusters.is_empty() {
            line.push_str(&format!(" {:<10}", clusters.join(",")));
        }
        for gate in &ring.gates {
            let value = gate
                .value
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".to_string());
            let verdict = match gate.verdict {
                Some(Verdict::Pass) => style.green("pass"),
                Some(Verdict::Fail) => style.red("FAIL"),
                Some(Verdict::Inconclusive) => style.yellow("wait"),
                None => style.dim("-"),
            };
            line.push_str(&format!("  {}={} {}", gate.name, value, verdict));
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GateStatus, Phase, RingStatus};

    #[test]
    fn bar_fills_proportionally() {
        assert_eq!(bar(0, 4, 8), "[........]");
        assert_eq!(bar(2, 4, 8), "[####....]");
        assert_eq!(bar(4, 4, 8), "[########]");
        assert_eq!(bar(9, 4, 8), "[########]");
        assert_eq!(bar(1, 0, 4), "[....]");
    }

    #[test]
    fn renders_rings_and_gates_without_colour_codes() {
        let status = ConfigRolloutStatus {
            revision: Some("abc123".into()),
            phase: Some(Phase::Progressing),
            message: Some("ring early (2/3): baking".into()),
            rings: vec![RingStatus {
                name: "early".into(),
                phase: RingPhase::Verifying,
                target_count: 3,
                updated: 3,
                gates: vec![GateStatus {
                    name: "error-rate".into(),
                    verdict: Some(Verdict::Fail),
                    value: Some(0.041),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let lines = render(&status, Style { color: false });
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("abc123") && lines[0].contains("Progressing"));
        assert!(lines[1].contains("3/3") && lines[1].contains("error-rate=0.0410 FAIL"));
        assert!(!lines.concat().contains('\x1b'));
        let coloured = render(&status, Style { color: true });
        assert!(coloured.concat().contains('\x1b'));
    }

    #[test]
    fn names_the_member_clusters_of_a_ring() {
        let ring = |name: &str, targets: &[&str]| RingStatus {
            name: name.into(),
            target_count: targets.len() as u32,
            first_targets: targets.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let status = ConfigRolloutStatus {
            rings: vec![
                ring("local", &["cell-1"]),
                ring("us", &["us-east-1/cell-1", "us-east-1/cell-2"]),
                ring("both", &["eu-west-1/cell-1", "us-east-1/cell-1"]),
            ],
            ..Default::default()
        };
        let lines = render(&status, Style { color: false });
        assert!(lines[1].trim_end().ends_with("Pending"), "{}", lines[1]);
        assert!(lines[2].contains(" us-east-1"), "{}", lines[2]);
        assert!(lines[3].contains(" eu-west-1,us-east-1"), "{}", lines[3]);
    }
}
