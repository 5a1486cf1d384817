//! The `ConfigRollout` resource: its spec's top level, and the kind, columns
//! and status the CRD declares.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::spec::{ConfigSpec, DURATION_PATTERN, Gate, Ring, RollbackPolicy, WorkloadSpec};
use super::status::ConfigRolloutStatus;

/// A staged rollout of one configuration object across rings of namespaces.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    doc = "A ConfigRollout writes one configuration object (ConfigMap or Secret) ring by ring into target namespaces, gates each ring on health signals and rolls back automatically.",
    group = "ringfence.dev",
    version = "v1alpha1",
    kind = "ConfigRollout",
    plural = "configrollouts",
    singular = "configrollout",
    shortname = "cro",
    category = "ringfence",
    namespaced,
    status = "ConfigRolloutStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.revision","description":"Content hash of the configuration being rolled out"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ring","type":"string","jsonPath":".status.ringProgress","description":"Current ring as position/total and name"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRolloutSpec {
    /// What is rolled out: the object written in every target namespace.
    pub config: ConfigSpec,

    /// Where, in order: each ring is promoted before the next one is touched.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(validation = Rule::new("self.all(r, self.exists_one(o, o.name == r.name))").message("ring names must be unique"))]
    pub rings: Vec<Ring>,

    /// Consumers of the configuration in each target namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadSpec>,

    /// How health is judged during each ring's bake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(g, self.exists_one(o, o.name == g.name))").message("gate names must be unique"))]
    pub gates: Vec<Gate>,

    /// How long a ring's workloads may take to roll out and become healthy.
    #[serde(default = "default_progress_deadline")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('1s')")).message("must be at least 1s"))]
    pub progress_deadline: String,

    /// What happens when a gate fails.
    #[serde(default)]
    pub rollback: RollbackPolicy,

    /// Hold the rollout where it is (GitOps-friendly pause).
    #[serde(default)]
    pub paused: bool,
}

fn default_progress_deadline() -> String {
    "10m".to_string()
}
