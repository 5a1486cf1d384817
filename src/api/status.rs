//! `ConfigRollout` status: everything an SRE needs without reading logs, and
//! everything the controller needs to resume after a restart.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a ConfigRollout.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRolloutStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Content hash of the configuration being rolled out (or last rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,

    /// Last revision that reached every ring; the rollback point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Name of the ring being worked on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_ring: Option<String>,

    /// Position and name of the current ring, e.g. `2/3 early`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_progress: Option<String>,

    /// One word on health: Healthy, Progressing, Degraded, Failing or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,

    /// One human sentence: what is happening and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Per ring progress, in spec order, resolved when the revision started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rings: Vec<RingStatus>,

    /// Valid, Progressing, Healthy, Ready and RolledBack.
    // A map keyed by type, as Kubernetes conventions have it: server-side apply
    // merges conditions one by one instead of replacing the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Recent revisions and how they ended, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,

    /// The rollback in progress or last completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,

    /// Manual requests (annotation values) already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_requests: Option<HandledRequests>,

    /// When the current pause began; on resume the current ring's bake and
    /// progress deadline are moved on by the time spent paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Time>,

    /// The prior-content records that make the rollback exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priors: Option<PriorsStatus>,

    /// The layout records that hold every ring's targets for the current revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutStatus>,

    /// The judging rules of the last valid spec: a revision already written keeps being
    /// gated, and rolled back, by them when the spec turns invalid mid-rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_valid_spec: Option<LastValidSpec>,
}

/// Bookkeeping of the prior-content records, so a store that lost records is noticed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorsStatus {
    /// Rollback point the records belong to; it moves on (and older records stop
    /// counting) when a revision succeeds or is rolled back.
    #[serde(default)]
    pub epoch: u64,
    /// Records kept for this rollback point. Fewer found than this means records were lost.
    #[serde(default)]
    pub recorded: u32,
}

/// Which layout the records must hold: the rings' targets are read back only from
/// records whose content hashes to `hash`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayoutStatus {
    /// SHA-256 of the layout document the records hold, in hex.
    pub hash: String,
    /// Targets in every ring.
    #[serde(default)]
    pub targets: u32,
}

/// What a rollout in flight is judged by when its spec turns invalid.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastValidSpec {
    /// Generation of the spec these rules were taken from.
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::spec::Gate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<super::spec::WorkloadSpec>,
    pub progress_deadline: String,
    pub automatic_rollback: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Lifecycle of a revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Progressing,
    Paused,
    Succeeded,
    RollingBack,
    RolledBack,
    Failed,
}

/// Progress of one ring.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingStatus {
    pub name: String,

    pub phase: RingPhase,

    /// Target namespaces, resolved when the revision started. Never in the API object:
    /// they live in the layout records (`status.layout`), which the controller reads
    /// back before deciding, so status stays small at any fleet size.
    #[serde(skip)]
    #[schemars(skip)]
    pub targets: Vec<String>,

    /// Namespaces this ring selected that an earlier ring already holds; kept as `targets`.
    #[serde(skip)]
    #[schemars(skip)]
    pub duplicates: Vec<String>,

    /// How many targets the ring has.
    #[serde(default)]
    pub target_count: u32,

    /// The ring's first targets, for a glance; the layout records hold them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_targets: Vec<String>,

    /// How many namespaces this ring selected that an earlier ring already holds.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub duplicate_count: u32,

    /// Targets holding the revision.
    #[serde(default)]
    pub updated: u32,

    /// When the ring started (re-set once its baselines are measured, just before its first write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// Since when every gate and workload has been healthy without a break.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,

    /// Since when a cluster of the ring's targets has not answered (while it does not):
    /// the ring fails once that lasts `progressDeadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<Time>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,

    /// Seconds this ring spent paused; they extend its progress deadline.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub paused_seconds: u64,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
}

/// Where a ring is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RingPhase {
    #[default]
    Pending,
    Applying,
    Verifying,
    Promoted,
    Failed,
    RolledBack,
}

/// The outcome of one gate evaluation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// A gate's latest evaluation in one ring.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    pub name: String,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,

    /// Last measured value (absent when there was none or it was not finite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,

    /// Value the threshold is relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,

    /// Highest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,

    #[serde(default)]
    pub consecutive_failures: u32,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,

    /// Why the verdict is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A past revision and how it ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub revision: String,
    pub outcome: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why and when a revision is being, or was, rolled back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The revision rolled back.
    pub revision: String,
    /// CamelCase cause: GateFailed, ProgressDeadlineExceeded, Aborted.
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Gate values that caused it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateStatus>,
    /// Targets left unrestored because their prior content is unknown (lost or unreadable record).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub unrestored: u32,
    /// The first few of them, by namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unrestored_targets: Vec<String>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Request ids from the `ringfence.dev/{promote,abort,retry}` annotations already acted on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledRequests {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}
