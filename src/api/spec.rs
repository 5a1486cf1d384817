//! The parts of a `ConfigRollout` spec: what is rolled out, where, and how
//! health is judged.
//!
//! Admission rules live on the types (`x_kube(validation = ...)`) so the CRD a
//! cluster enforces, `ringfence validate` and the emulator share one source.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration such as `30s`, `5m`, `1h30m` or `1.5s`: what [`super::parse_duration`] accepts.
///
/// `[.]` rather than `\.`: the pattern is embedded in CEL string literals, where `\.` is
/// an invalid escape that makes a real API server reject the CRD.
pub const DURATION_PATTERN: &str = r"^([0-9]+([.][0-9]+)?(ms|s|m|h))+$";

/// Regex for a percentage `maxConcurrent` from 1% to 100%.
pub const PERCENT_PATTERN: &str = r"^(100|[1-9][0-9]?)%$";

/// A ConfigMap or Secret key, as kube-apiserver's `IsConfigMapKey` defines it
/// (`k8s.io/apimachinery/pkg/util/validation`): besides this, at most 253 characters,
/// and neither `.` nor `..` nor anything starting with `..`.
pub const CONFIG_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// A glob over keys in a validation rule: key characters, `*` and `?`.
pub const KEY_GLOB_PATTERN: &str = r"^[-._a-zA-Z0-9*?]+$";

/// The kind of object rolled out.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum ConfigKind {
    #[default]
    ConfigMap,
    Secret,
}

impl ConfigKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::ConfigMap => "ConfigMap",
            ConfigKind::Secret => "Secret",
        }
    }
}

/// The configuration object and its content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.data) || has(self.sourceRef)").message("set data or sourceRef: the content to roll out"))]
#[x_kube(validation = Rule::new("!has(self.data) || !has(self.sourceRef)").message("set data or sourceRef, not both"))]
#[x_kube(validation = Rule::new("!has(self.validation) || !has(self.validationRef)").message("set validation or validationRef, not both"))]
#[x_kube(validation = Rule::new("self.kind != 'Secret' || !has(self.data)").message("a Secret is rolled out from sourceRef only: inline data would put secret values in the ConfigRollout").field_path(".data").reason(Reason::FieldValueForbidden))]
pub struct ConfigSpec {
    /// `ConfigMap` (default) or `Secret`.
    #[serde(default)]
    pub kind: ConfigKind,

    /// Name of the object written in every target namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,

    /// Inline data (ConfigMap only).
    // Keys as kube-apiserver checks them on the ConfigMap. The estimated cost of a rule
    // over map keys is small: the API server sizes a key by its declared type, not by
    // the request. The total counts characters, never more than the bytes the API
    // server counts, so it refuses only data a ConfigMap could not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 256))]
    #[x_kube(validation = Rule::new(format!("self.all(k, size(k) <= 253 && k.matches('{CONFIG_KEY_PATTERN}'))")).message("keys must consist of alphanumeric characters, '-', '_' or '.', at most 253 of them"))]
    #[x_kube(validation = Rule::new("self.all(k, k != '.' && !k.startsWith('..'))").message("keys must not be '.' or '..' or start with '..'"))]
    #[x_kube(validation = Rule::new("self.map(k, size(self[k])).sum() <= 1048576").message("the values must total at most 1 MiB (1048576 bytes), what a ConfigMap can hold"))]
    pub data: Option<BTreeMap<String, String>>,

    /// Copy the data from an object of the same kind in the rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,

    /// Rules the data must follow before any ring is written: a format and a JSON Schema per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub validation: Vec<ValidationRule>,

    /// Read the rules from the `validation.yaml` key of a ConfigMap in the rollout's namespace instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_ref: Option<SourceRef>,
}

/// What a data value must be, checked before any ring is written.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.key) != has(self.keyPattern)").message("set exactly one of key and keyPattern"))]
pub struct ValidationRule {
    /// The key this rule checks; it must be present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = CONFIG_KEY_PATTERN))]
    pub key: Option<String>,

    /// The keys this rule checks, as a glob: `*` matches any characters, `?` one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = KEY_GLOB_PATTERN))]
    pub key_pattern: Option<String>,

    /// How the value is read.
    #[serde(default)]
    pub format: ValueFormat,

    /// JSON Schema (draft 2020-12) for the value as read: the document for `json` and `yaml`,
    /// the number, boolean or string for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub schema: Option<serde_json::Value>,
}

/// How a data value is read.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ValueFormat {
    /// A JSON document.
    Json,
    /// A YAML document.
    Yaml,
    /// A decimal 64-bit integer.
    Int,
    /// A finite decimal number.
    Float,
    /// `true` or `false`.
    Bool,
    /// A Go duration such as `300ms`, `1.5h` or `2h45m`.
    Duration,
    /// An absolute URL.
    Url,
    /// A regular expression (RE2 syntax).
    Regex,
    /// Any text.
    #[default]
    String,
}

/// A JSON Schema: any object, kept as written.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "JSON Schema (draft 2020-12) for the value as read: the document for `json` and `yaml`, the number, boolean or string for the others.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An object in the rollout's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// One ring: a set of namespaces written together and baked together.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.namespaces) || has(self.namespaceSelector)").message("set namespaces or namespaceSelector: the ring's targets"))]
#[x_kube(validation = Rule::new("!has(self.namespaces) || !has(self.namespaceSelector)").message("set namespaces or namespaceSelector, not both"))]
#[x_kube(validation = Rule::new("!has(self.clusters) || !has(self.clusterSelector)").message("set clusters or clusterSelector, not both"))]
pub struct Ring {
    /// Ring name, unique in the rollout.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Explicit target namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 1000),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub namespaces: Option<Vec<String>>,

    /// Target namespaces chosen by label (in each of the ring's clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Clusters the ring's namespaces are in: names of registered member clusters, or
    /// `local` for the cluster ringfence runs in. Without clusters or clusterSelector the
    /// ring is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 100),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    pub clusters: Option<Vec<String>>,

    /// Registered member clusters chosen by the labels of their cluster Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,

    /// How long the ring must stay healthy before promotion.
    #[serde(default = "default_bake")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    pub bake: String,

    /// Targets written at a time inside the ring: a count (at least 1) or a percentage (1% to 100%).
    // `minimum`/`maximum` (an IntOrString holds an int32) and `pattern` each apply to
    // their own type; CEL would need `type()` to tell an int from a string, and
    // client-side CEL (kube-cel) lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 1, "maximum" = i32::MAX, "maxLength" = 4, "pattern" = PERCENT_PATTERN))]
    pub max_concurrent: Option<IntOrString>,
}

fn default_bake() -> String {
    "0s".to_string()
}

/// Workloads that consume the configuration in each target namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// Deployments, StatefulSets and DaemonSets matching this selector.
    pub selector: LabelSelector,

    /// Stamp the pod template with the revision so pods reload the config.
    #[serde(default)]
    pub restart: bool,
}

/// What happens when a gate fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPolicy {
    /// Roll back on its own when a gate fails (otherwise the rollout stops as Failed).
    #[serde(default = "default_true")]
    pub automatic: bool,
}

impl Default for RollbackPolicy {
    fn default() -> Self {
        Self { automatic: true }
    }
}

fn default_true() -> bool {
    true
}

/// A health gate, evaluated every `interval` during each ring's bake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.prometheus) || has(self.webhook)").message("set a provider: prometheus or webhook"))]
#[x_kube(validation = Rule::new("!has(self.prometheus) || !has(self.webhook)").message("set one provider only: prometheus or webhook"))]
pub struct Gate {
    /// Gate name, unique in the rollout.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Time between evaluations.
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('1s')")).message("must be at least 1s"))]
    pub interval: String,

    /// Consecutive failing evaluations that fail the ring.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,

    /// Judge a PromQL query against thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,

    /// Ask an HTTP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookGate>,
}

fn default_interval() -> String {
    "30s".to_string()
}

fn default_failure_limit() -> u32 {
    1
}

/// What a gate's baseline is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CompareTo {
    /// The ring's own value before its targets were written.
    #[default]
    Before,
    /// Namespaces not yet on the new revision, at the same moment.
    Unchanged,
}

/// What an evaluation without data counts as.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnNoData {
    /// Inconclusive: neither pass nor fail; the bake does not advance.
    #[default]
    Wait,
    Pass,
    Fail,
}

/// A PromQL query judged against an absolute ceiling and/or its baseline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.max) || has(self.maxIncrease) || has(self.maxRatio)").message("set at least one threshold: max, maxIncrease or maxRatio"))]
pub struct PrometheusGate {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("must be an http:// or https:// URL"))]
    pub address: String,

    /// PromQL template; placeholders: `{{ namespaces }}`, `{{ ring }}`, `{{ revision }}`, `{{ rollout }}`, `{{ namespace }}`.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// Absolute ceiling for the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max: Option<f64>,

    /// Allowed absolute rise over the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_increase: Option<f64>,

    /// Allowed relative rise over the baseline (1.5 allows +50%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_ratio: Option<f64>,

    /// Baseline for `maxIncrease` and `maxRatio`.
    #[serde(default)]
    pub compare_to: CompareTo,

    /// Window averaged for the `before` baseline.
    #[serde(default = "default_baseline_window")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    pub baseline_window: String,

    /// What an empty result counts as.
    #[serde(default)]
    pub on_no_data: OnNoData,

    /// Query timeout.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('1s')")).message("must be at least 1s"))]
    pub timeout: String,

    /// Secret in the rollout's namespace with `token` (bearer) or `username` and `password` (basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SourceRef>,
}

fn default_baseline_window() -> String {
    "5m".to_string()
}

fn default_timeout() -> String {
    "10s".to_string()
}

/// An HTTP endpoint that judges health: 2xx passes, 4xx/5xx fails.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookGate {
    /// URL that receives a JSON POST per evaluation.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("must be an http:// or https:// URL"))]
    pub url: String,

    /// Time to wait for an answer; a timeout is inconclusive.
    #[serde(default = "default_timeout")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message("must be a duration such as 30s, 5m or 1h30m"))]
    #[x_kube(validation = Rule::new(format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('1s')")).message("must be at least 1s"))]
    pub timeout: String,
}
