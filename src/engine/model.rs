//! The engine's inputs and outputs: plain data, no IO.
//!
//! The controller observes the world into [`World`], asks [`super::gate_requests`]
//! which gates to evaluate, evaluates them into [`GateResult`]s, then calls
//! [`super::decide`] and carries out the [`Decision`] in order.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;

use super::address::AddressPolicy;
use super::revision::{ResolvedConfig, RevisionKey};
use crate::api::{
    ABORT_ANNOTATION, ConfigRolloutSpec, ConfigRolloutStatus, Gate, HandledRequests,
    PROMOTE_ANNOTATION, Phase, RETRY_ANNOTATION, ValidationRule, Verdict,
};

/// Everything `decide` looks at.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub rollout: &'a RolloutMeta,
    pub spec: &'a ConfigRolloutSpec,
    /// Status as persisted in the API; the only memory the engine has.
    pub status: &'a ConfigRolloutStatus,
    pub world: &'a World,
    pub settings: &'a Settings,
    pub now: Timestamp,
}

/// Identity of the rollout and the manual requests on it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolloutMeta {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// Values of the `ringfence.dev/{promote,abort,retry}` annotations.
    pub requests: Requests,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub promote: Option<String>,
    pub abort: Option<String>,
    pub retry: Option<String>,
}

/// The manual requests, by annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Promote,
    Abort,
    Retry,
}

impl Request {
    pub const ALL: [Request; 3] = [Request::Promote, Request::Abort, Request::Retry];

    /// The annotation whose value asks for this request.
    pub fn annotation(self) -> &'static str {
        match self {
            Request::Promote => PROMOTE_ANNOTATION,
            Request::Abort => ABORT_ANNOTATION,
            Request::Retry => RETRY_ANNOTATION,
        }
    }

    /// Whether the request means nothing in `phase`: such a request is recorded as
    /// handled and dropped, never acted on later. Requests that only wait (a retry
    /// during a rollback, a promote while paused) mean something.
    pub fn means_nothing_in(self, phase: Option<Phase>) -> bool {
        match self {
            Request::Promote => !matches!(phase, Some(Phase::Progressing) | Some(Phase::Paused)),
            Request::Abort => !matches!(
                phase,
                Some(Phase::Progressing) | Some(Phase::Paused) | Some(Phase::Failed)
            ),
            Request::Retry => matches!(
                phase,
                None | Some(Phase::Pending) | Some(Phase::Progressing) | Some(Phase::Succeeded)
            ),
        }
    }

    /// The id this request carries in `requests`.
    pub fn asked(self, requests: &Requests) -> Option<&str> {
        match self {
            Request::Promote => requests.promote.as_deref(),
            Request::Abort => requests.abort.as_deref(),
            Request::Retry => requests.retry.as_deref(),
        }
    }

    /// The id of the last such request acted on, as `status.handledRequests` records it.
    pub fn handled(self, handled: &HandledRequests) -> Option<&str> {
        match self {
            Request::Promote => handled.promote.as_deref(),
            Request::Abort => handled.abort.as_deref(),
            Request::Retry => handled.retry.as_deref(),
        }
    }
}

/// Operator-wide configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Namespaces whose rollouts may target any namespace.
    pub trusted_namespaces: BTreeSet<String>,
    /// Keys Secret revisions, so that they reveal nothing about the data.
    pub revision_key: RevisionKey,
    /// Where gates may call.
    pub gate_addresses: AddressPolicy,
}

impl Settings {
    /// No trusted namespaces and the default address policy.
    pub fn new(revision_key: RevisionKey) -> Self {
        Self {
            trusted_namespaces: BTreeSet::new(),
            revision_key,
            gate_addresses: AddressPolicy::default(),
        }
    }
}

/// What the controller observed, as of one reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    /// The configuration to roll out, or why it could not be read (e.g. the source object is missing).
    pub config: Option<Result<ResolvedConfig, String>>,
    /// The rules of `spec.config.validationRef`, or why they could not be read; None without one.
    pub validation: Option<Result<Vec<ValidationRule>, String>>,
    /// Every namespace the controller can see, with its labels: the local cluster's and
    /// those of each reachable member cluster.
    pub namespaces: Vec<NamespaceInfo>,
    /// Registered member clusters, by name.
    pub clusters: BTreeMap<String, ClusterInfo>,
    /// Current state of the target object in each namespace that has one (or that a ring
    /// resolves to), by target key. A target of an unreachable cluster that was never seen
    /// has no entry: its state is unknown.
    pub targets: BTreeMap<String, TargetState>,
    /// Prior content recorded durably, per target namespace, for the current rollback point.
    pub priors: BTreeMap<String, PriorRecord>,
    /// Targets whose prior record exists but cannot be trusted (malformed, or its content
    /// does not match its recorded hash), with why: never restored from.
    pub unreadable_priors: BTreeMap<String, String>,
    /// Consumer workloads per target namespace (only when `spec.workloads` is set).
    pub workloads: BTreeMap<String, Vec<WorkloadState>>,
    /// Why the rings' targets could not be read back from the layout records that
    /// `status.layout` names; None when they were (or status names none). While set, the
    /// rings in status have no targets, and nothing is written but restores.
    pub layout_missing: Option<String>,
    /// Targets that another ConfigRollout manages: namespace to `namespace/name` of that rollout.
    pub claimed_by_others: BTreeMap<String, String>,
    /// Results of the evaluations that [`super::gate_requests`] asked for.
    pub gate_results: Vec<GateResult>,
    /// Secrets in the rollout's namespace named by a gate's `authSecretRef`, by name
    /// (`None`: not found). A name absent here was not observed and is not used.
    pub gate_credentials: BTreeMap<String, Option<CredentialsSecret>>,
}

/// What decides whether a Secret may lend its credentials to a gate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialsSecret {
    /// The Secret's `type`.
    pub type_: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A registered member cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Its labels: those of its cluster Secret, except ringfence's own.
    pub labels: BTreeMap<String, String>,
    /// The namespace its cluster Secret lets target it (`ringfence.dev/allow-from`).
    pub allow_from: Option<String>,
    /// Why it cannot be used now (not answering, or a bad kubeconfig); None while it answers
    /// and its namespaces and targets have been listed since it last came back.
    pub unreachable: Option<String>,
}

/// A target's key: its namespace in the local cluster, `cluster/namespace` in a member
/// cluster (neither a namespace nor a cluster name can contain `/`).
pub fn target_key(cluster: Option<&str>, namespace: &str) -> String {
    match cluster {
        Some(c) => format!("{c}/{namespace}"),
        None => namespace.to_string(),
    }
}

/// The member cluster (None: local) and namespace of a target key.
pub fn split_target(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((c, ns)) => (Some(c), ns),
        None => (None, key),
    }
}

impl World {
    /// Why the cluster of target `key` cannot be used now; None for a local target or a
    /// member that answers.
    pub fn unreachable(&self, key: &str) -> Option<String> {
        self.cluster_unreachable(split_target(key).0?)
    }

    /// Why member `cluster` cannot be used now; None while it answers.
    pub fn cluster_unreachable(&self, cluster: &str) -> Option<String> {
        match self.clusters.get(cluster) {
            None => Some(format!("cluster {cluster} is not registered")),
            Some(info) => info
                .unreachable
                .as_ref()
                .map(|why| format!("cluster {cluster} cannot be reached: {why}")),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// The target key of the namespace: its name locally, `cluster/name` in a member.
    pub name: String,
    /// The member cluster it is in; None: local.
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Being deleted: never written.
    pub terminating: bool,
}

/// The target object in one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetState {
    pub exists: bool,
    /// `ringfence.dev/revision` annotation, if any.
    pub revision: Option<String>,
    /// [`super::revision_of`] over the object's current data.
    pub content_hash: Option<String>,
    /// `ringfence.dev/rollout` annotation, if any.
    pub rollout: Option<String>,
    /// Field manager of the most recent change, from `managedFields`.
    pub last_manager: Option<String>,
}

impl TargetState {
    /// Whether the target holds `revision` as written by the rollout `key`.
    pub(crate) fn holds_revision(&self, revision: &str, key: &str) -> bool {
        self.exists
            && self.content_hash.as_deref() == Some(revision)
            && self.revision.as_deref() == Some(revision)
            && self.rollout.as_deref() == Some(key)
    }
}

/// What a target held before the current rollback point's first overwrite.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriorRecord {
    pub existed: bool,
    /// Content hash of the recorded data (None when it did not exist).
    pub content_hash: Option<String>,
    /// Revision annotation the target carried then (what restored workloads are stamped with).
    pub revision: Option<String>,
    /// The real prior was lost, and a retry accepted that: the target is written, never
    /// restored, and a rollback names it as not restored.
    pub lost: bool,
}

/// A consumer workload in a target namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    pub kind: WorkloadKind,
    pub name: String,
    /// `ringfence.dev/revision` on the pod template.
    pub stamped_revision: Option<String>,
    /// observedGeneration caught up and updated = ready = available = desired.
    pub rolled_out: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Why a gate is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatePurpose {
    /// Before a ring's targets are written: the value becomes the ring's baseline.
    Baseline,
    /// During the bake: judged against thresholds.
    Check,
}

/// An evaluation the controller must run before calling `decide`.
#[derive(Clone, Debug, PartialEq)]
pub struct GateRequest {
    pub gate: String,
    pub ring: usize,
    pub ring_name: String,
    pub purpose: GatePurpose,
    pub revision: String,
    /// The ring's target namespaces.
    pub namespaces: Vec<String>,
    /// Targets of every ring not yet on the revision (the `compareTo: unchanged` population).
    pub unchanged_namespaces: Vec<String>,
    /// Baseline recorded for this ring, for `Check`s.
    pub baseline: Option<f64>,
    /// The gate as the rollout is judged by now: the spec's, or the last valid one's
    /// while the spec is invalid.
    pub definition: Gate,
}

/// The outcome of one evaluation, judged by the gate provider.
#[derive(Clone, Debug, PartialEq)]
pub struct GateResult {
    pub gate: String,
    pub ring: usize,
    pub purpose: GatePurpose,
    pub verdict: Verdict,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub threshold: Option<f64>,
    /// Why: e.g. `error-rate 4.1% > baseline 0.2% + 0.5%`, or the provider's error.
    pub message: String,
    pub at: Timestamp,
}

/// What to do now, in order; later actions assume earlier ones succeeded.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Record the current content (or absence) of these targets durably, before anything overwrites them.
    RecordPriors { namespaces: Vec<String> },
    /// Record that these targets' priors are lost (a retry accepted it), so the rollout
    /// may write them; a rollback will name them as not restored.
    RecordLostPriors { namespaces: Vec<String> },
    /// Server-side apply the resolved config with this revision to these targets.
    WriteTargets {
        revision: String,
        namespaces: Vec<String>,
    },
    /// Put back the recorded prior content (delete where it did not exist).
    RestoreTargets { namespaces: Vec<String> },
    /// Set the pod-template revision annotation on these workloads.
    StampWorkloads {
        namespace: String,
        revision: String,
        workloads: Vec<(WorkloadKind, String)>,
    },
}

/// Why carrying out a decision's actions failed, as the status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The API server refused the write (403): RBAC does not allow it.
    WriteForbidden,
    /// The API server rejected the object (400, 413, 422): e.g. too large or invalid.
    WriteRejected,
    /// The target namespace no longer exists.
    TargetNamespaceGone,
    /// Another writer kept changing the object (409 after retries).
    WriteConflict,
    /// The prior-content records could not be read or written.
    PriorsUnavailable,
    /// Another rollout's prior record claims the target.
    TargetConflict,
    /// The API server did not answer, or answered with a server error.
    ApiUnavailable,
    /// A read the decision needs failed: refused by the API server, or not answered.
    ReadFailed,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WriteForbidden => "WriteForbidden",
            Self::WriteRejected => "WriteRejected",
            Self::TargetNamespaceGone => "TargetNamespaceGone",
            Self::WriteConflict => "WriteConflict",
            Self::PriorsUnavailable => "PriorsUnavailable",
            Self::TargetConflict => "TargetConflict",
            Self::ApiUnavailable => "ApiUnavailable",
            Self::ReadFailed => "ReadFailed",
        }
    }
}

/// Actions that could not be carried out, for [`super::report_failure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionFailure {
    pub reason: FailureReason,
    /// What was being done, e.g. `write revision abc` or `restore prior content`.
    pub what: String,
    /// Target namespaces that failed (empty when the failure is not about targets).
    pub targets: Vec<String>,
    /// Targets the failed action covered in all.
    pub of: usize,
    /// The API's own reason for the first failure, bounded.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes Event to publish about the rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub type_: EventType,
    /// CamelCase: RingStarted, RingPromoted, GateFailed, ProgressDeadlineExceeded,
    /// RollbackStarted, RollbackCompleted, RolloutSucceeded, RolloutFailed, RolloutSuperseded,
    /// RolloutPaused, RolloutResumed, PromoteRefused, InvalidSpec, TargetDrifted,
    /// ClusterUnreachable.
    pub reason: &'static str,
    pub note: String,
}

/// The engine's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// The status to write once the actions succeeded (written only if it differs).
    pub status: ConfigRolloutStatus,
    pub events: Vec<EventNote>,
    /// Latest time to decide again (bake end, next gate evaluation, deadline); None = only on change.
    pub requeue_at: Option<Timestamp>,
}
