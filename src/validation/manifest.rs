//! Offline checks of ConfigRollout manifests, as `ringfence validate` runs them.
//!
//! First exactly what the API server enforces at `kubectl apply`: the document
//! is admitted through [`CompiledCrd`] built from the generated CRD (the one
//! source of truth), after the request-level checks kube-apiserver makes
//! (`apiVersion`, `kind`, `metadata.name`). Then what only a program can check:
//! label selector syntax, query template placeholders, URLs and duration ranges;
//! and the configuration data (see [`super::data`]): inline data, and the
//! `sourceRef` and `validationRef` objects found among the sources given.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde_json::Value;

use super::data::{self, DataProblem, Origin, RULES_KEY, Subject};
use crate::api::{ConfigKind, ConfigRollout, ValidationRule, parse_duration};
use crate::gates::template::placeholders;
use kube_emulator::validation::schema::{CompiledCrd, FieldViolation, SchemaError, reason};
use kube_emulator::validation::selector::{
    dns_label_error, dns_subdomain_error, validate_label_selector,
};

/// A YAML text that is not a stream of documents.
#[derive(Debug, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ParseError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// What is wrong with one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentReport {
    /// `metadata.name`, or `(document N)` (counted from 1) when it has none.
    pub name: String,
    pub violations: Vec<FieldViolation>,
}

/// Checks ConfigRollout manifests against the generated CRD.
#[derive(Debug)]
pub struct ManifestValidator {
    crd: CompiledCrd,
    /// ConfigMaps and Secrets that `sourceRef` and `validationRef` may name.
    sources: Vec<Value>,
}

impl ManifestValidator {
    /// Compiles the generated CRD. An error here is a bug in the CRD itself.
    pub fn new() -> Result<Self, SchemaError> {
        let crd = serde_json::to_value(crate::api::crd())
            .map_err(|_| SchemaError::NotACrd("does not serialize"))?;
        Ok(Self {
            crd: CompiledCrd::new(&crd)?,
            sources: Vec::new(),
        })
    }

    /// Adds ConfigMap and Secret manifests for `sourceRef` and `validationRef` to find
    /// by kind and name; without them that data and those rules are not checked.
    pub fn with_sources(mut self, objects: Vec<Value>) -> Self {
        self.sources.extend(objects);
        self
    }

    /// Parses `text` (YAML, `---`-separated documents; empty ones are skipped) and
    /// checks every document.
    pub fn check_text(&self, text: &str) -> Result<Vec<DocumentReport>, ParseError> {
        let documents = parse_documents(text)?;
        Ok(documents
            .iter()
            .enumerate()
            .map(|(i, doc)| self.check_document(i + 1, doc))
            .collect())
    }

    /// Checks one document; `number` (from 1) names it when it has no name.
    pub fn check_document(&self, number: usize, document: &Value) -> DocumentReport {
        let name = document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map_or_else(|| format!("(document {number})"), str::to_string);
        DocumentReport {
            name,
            violations: self.violations(document),
        }
    }

    fn violations(&self, document: &Value) -> Vec<FieldViolation> {
        let Some(object) = document.as_object() else {
            return vec![violation(
                "",
                reason::TYPE_INVALID,
                format!(
                    "Invalid value: {:?}: a manifest must be a mapping (a Kubernetes object)",
                    kind_of(document)
                ),
            )];
        };
        let mut out = type_meta_violations(document);
        if !out.is_empty() {
            // Another kind of object: its schema is not ours to check.
            return out;
        }
        out.extend(metadata_violations(document.get("metadata")));

        // The status subresource: the API server drops status on create.
        let mut object = Value::Object(object.clone());
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
        let version = ConfigRollout::version(&());
        let (stored, schema_violations) = match self.crd.validate(&version, &object) {
            Ok(result) => result,
            Err(error) => {
                return vec![violation(
                    "",
                    reason::INVALID,
                    format!("cannot validate: {error}"),
                )];
            }
        };
        out.extend(schema_violations);

        // The program's checks need the typed object; a document the schema
        // rejects may not deserialize, and its problems are already reported.
        if let Ok(rollout) = serde_json::from_value::<ConfigRollout>(stored) {
            let known: Vec<String> = out.iter().map(|v| v.field.clone()).collect();
            out.extend(
                program_violations(&rollout)
                    .into_iter()
                    .chain(self.data_violations(&rollout))
                    .filter(|v| !known.contains(&v.field)),
            );
        }
        out
    }
}

impl ManifestValidator {
    fn source(&self, rollout: &ConfigRollout, kind: &str, name: &str) -> Option<&Value> {
        let namespace = rollout.metadata.namespace.as_deref();
        self.sources.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && namespace
                    .is_none_or(|ns| o["metadata"]["namespace"].as_str().is_none_or(|n| n == ns))
        })
    }

    /// The data and rules checks of [`data::check`], where the data and rules are known.
    fn data_violations(&self, rollout: &ConfigRollout) -> Vec<FieldViolation> {
        let config = &rollout.spec.config;
        let mut out = Vec::new();
        let (rules, rules_origin) = match &config.validation_ref {
            None => (
                Some(config.validation.clone()),
                "spec.config.validation".to_string(),
            ),
            Some(r) => {
                let origin = format!("ConfigMap {} {RULES_KEY}", r.name);
                match self.source(rollout, "ConfigMap", &r.name) {
                    None => (None, origin),
                    Some(object) => match parse_rules(object) {
                        Ok(rules) => (Some(rules), origin),
                        Err(why) => {
                            out.push(violation("spec.config.validationRef", reason::INVALID, why));
                            (None, origin)
                        }
                    },
                }
            }
        };
        let kind = config.kind.as_str();
        let (data, data_origin) = match (&config.data, &config.source_ref) {
            (Some(inline), _) => (
                Some(Ok(inline
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect())),
                "spec.config.data".to_string(),
            ),
            (None, Some(s)) => (
                self.source(rollout, kind, &s.name)
                    .map(|object| source_data(config.kind, object)),
                format!("{kind} {} data", s.name),
            ),
            (None, None) => (None, String::new()),
        };
        let origin = Origin {
            data: &data_origin,
            rules: &rules_origin,
        };
        let rules = rules.unwrap_or_default();
        let problems = match data {
            Some(Ok(data)) => data::check(config.kind, &data, &rules),
            Some(Err(problem)) => {
                out.push(violation("spec.config.sourceRef", reason::INVALID, problem));
                data::check_rules(&rules)
            }
            None => data::check_rules(&rules),
        };
        out.extend(problems.iter().map(|p| problem_violation(p, &origin)));
        out
    }
}

fn problem_violation(problem: &DataProblem, origin: &Origin) -> FieldViolation {
    let reason = match problem.subject {
        Subject::Data => reason::TOO_LONG,
        _ => reason::INVALID,
    };
    violation(&problem.field(origin), reason, problem.detail())
}

fn parse_rules(configmap: &Value) -> Result<Vec<ValidationRule>, String> {
    let name = configmap["metadata"]["name"].as_str().unwrap_or_default();
    let text = configmap["data"][RULES_KEY]
        .as_str()
        .ok_or_else(|| format!("ConfigMap {name} has no key {RULES_KEY}"))?;
    serde_saphyr::from_str(text).map_err(|e| {
        format!(
            "ConfigMap {name} {RULES_KEY} is not a list of rules: {}",
            e.without_snippet()
        )
    })
}

/// The data of a ConfigMap (`data` and base64 `binaryData`) or Secret (base64 `data`,
/// then `stringData` over it, as the API server merges them) manifest.
fn source_data(kind: ConfigKind, object: &Value) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let fields: [(&str, bool); 2] = match kind {
        ConfigKind::ConfigMap => [("data", false), ("binaryData", true)],
        ConfigKind::Secret => [("data", true), ("stringData", false)],
    };
    let mut out = BTreeMap::new();
    for (field, base64) in fields {
        let Some(map) = object.get(field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in map {
            let text = value.as_str().ok_or_else(|| {
                format!(
                    "{name} {field}[{}] is not a string",
                    Value::from(key.as_str())
                )
            })?;
            let bytes = if base64 {
                B64.decode(text).map_err(|_| {
                    format!(
                        "{name} {field}[{}] is not base64",
                        Value::from(key.as_str())
                    )
                })?
            } else {
                text.as_bytes().to_vec()
            };
            out.insert(key.clone(), bytes);
        }
    }
    Ok(out)
}

/// The documents of a YAML stream, as JSON values.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, ParseError> {
    serde_saphyr::from_multiple::<Value>(text).map_err(|error| {
        let location = error.location();
        ParseError {
            line: location.map_or(0, |l| l.line()),
            column: location.map_or(0, |l| l.column()),
            message: error.without_snippet().to_string(),
        }
    })
}

fn violation(field: &str, reason: &str, message: String) -> FieldViolation {
    FieldViolation {
        field: field.to_string(),
        reason: reason.to_string(),
        message,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn quoted(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => Value::String(s.clone()).to_string(),
        Some(other) => format!("{:?}", kind_of(other)),
        None => "\"\"".to_string(),
    }
}

/// `apiVersion` and `kind` must name a ConfigRollout of the served version.
fn type_meta_violations(document: &Value) -> Vec<FieldViolation> {
    let api_version = ConfigRollout::api_version(&());
    let kind = ConfigRollout::kind(&());
    let mut out = Vec::new();
    for (field, expected) in [
        ("apiVersion", api_version.as_ref()),
        ("kind", kind.as_ref()),
    ] {
        match document.get(field) {
            Some(Value::String(actual)) if actual == expected => {}
            None => out.push(violation(field, reason::REQUIRED, "Required value".into())),
            actual => out.push(violation(
                field,
                reason::NOT_SUPPORTED,
                format!(
                    "Unsupported value: {}: supported values: {expected:?}",
                    quoted(actual)
                ),
            )),
        }
    }
    out
}

/// The API server's checks of a custom resource's name and namespace.
fn metadata_violations(metadata: Option<&Value>) -> Vec<FieldViolation> {
    let Some(metadata) = metadata.and_then(Value::as_object) else {
        return vec![violation(
            "metadata.name",
            reason::REQUIRED,
            "Required value: name is required".into(),
        )];
    };
    let mut out = Vec::new();
    match metadata.get("name") {
        Some(Value::String(name)) if !name.is_empty() => {
            if let Some(problem) = dns_subdomain_error(name) {
                out.push(violation(
                    "metadata.name",
                    reason::INVALID,
                    format!("Invalid value: {}: {problem}", quoted(metadata.get("name"))),
                ));
            }
        }
        None | Some(Value::Null | Value::String(_)) => out.push(violation(
            "metadata.name",
            reason::REQUIRED,
            "Required value: name is required".into(),
        )),
        Some(other) => out.push(violation(
            "metadata.name",
            reason::TYPE_INVALID,
            format!(
                "Invalid value: {:?}: must be of type string",
                kind_of(other)
            ),
        )),
    }
    match metadata.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(ns)) => {
            if let Some(problem) = dns_label_error(ns) {
                out.push(violation(
                    "metadata.namespace",
                    reason::INVALID,
                    format!(
                        "Invalid value: {}: {problem}",
                        quoted(metadata.get("namespace"))
                    ),
                ));
            }
        }
        Some(other) => out.push(violation(
            "metadata.namespace",
            reason::TYPE_INVALID,
            format!(
                "Invalid value: {:?}: must be of type string",
                kind_of(other)
            ),
        )),
    }
    // The API server decodes metadata as an ObjectMeta before any validation.
    if out.is_empty()
        && let Err(error) = serde_json::from_value::<ObjectMeta>(Value::Object(metadata.clone()))
    {
        out.push(violation(
            "metadata",
            reason::TYPE_INVALID,
            format!("Invalid value: \"object\": {error}"),
        ));
    }
    out
}

/// What the API server cannot check but the controller would refuse.
fn program_violations(rollout: &ConfigRollout) -> Vec<FieldViolation> {
    let spec = &rollout.spec;
    let mut out = Vec::new();
    let mut duration = |field: String, value: &str| {
        if let Err(error) = parse_duration(value) {
            out.push(violation(&field, reason::INVALID, error.to_string()));
        }
    };
    duration("spec.progressDeadline".into(), &spec.progress_deadline);
    for (i, ring) in spec.rings.iter().enumerate() {
        duration(format!("spec.rings[{i}].bake"), &ring.bake);
    }
    for (i, gate) in spec.gates.iter().enumerate() {
        duration(format!("spec.gates[{i}].interval"), &gate.interval);
        if let Some(prometheus) = &gate.prometheus {
            duration(
                format!("spec.gates[{i}].prometheus.timeout"),
                &prometheus.timeout,
            );
            duration(
                format!("spec.gates[{i}].prometheus.baselineWindow"),
                &prometheus.baseline_window,
            );
        }
        if let Some(webhook) = &gate.webhook {
            duration(format!("spec.gates[{i}].webhook.timeout"), &webhook.timeout);
        }
    }

    for (i, ring) in spec.rings.iter().enumerate() {
        if let Some(selector) = &ring.namespace_selector {
            out.extend(validate_label_selector(
                selector,
                &format!("spec.rings[{i}].namespaceSelector"),
            ));
        }
    }
    if let Some(workloads) = &spec.workloads {
        out.extend(validate_label_selector(
            &workloads.selector,
            "spec.workloads.selector",
        ));
    }
    for (i, gate) in spec.gates.iter().enumerate() {
        if let Some(prometheus) = &gate.prometheus {
            if let Err(error) = placeholders(&prometheus.query) {
                out.push(violation(
                    &format!("spec.gates[{i}].prometheus.query"),
                    reason::INVALID,
                    error.to_string(),
                ));
            }
            if let Some(problem) = http_url_error(&prometheus.address) {
                out.push(url_violation(
                    &format!("spec.gates[{i}].prometheus.address"),
                    &prometheus.address,
                    &problem,
                ));
            }
        }
        if let Some(webhook) = &gate.webhook
            && let Some(problem) = http_url_error(&webhook.url)
        {
            out.push(url_violation(
                &format!("spec.gates[{i}].webhook.url"),
                &webhook.url,
                &problem,
            ));
        }
    }
    out
}

fn url_violation(field: &str, value: &str, problem: &str) -> FieldViolation {
    violation(
        field,
        reason::INVALID,
        format!("Invalid value: {}: {problem}", Value::from(value)),
    )
}

/// Why `value` is not an absolute http(s) URL with a host.
fn http_url_error(value: &str) -> Option<String> {
    match url::Url::parse(value) {
        Err(error) => Some(format!("not a URL: {error}")),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => {
            Some(format!("scheme {:?} is not http or https", url.scheme()))
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => Some("the URL has no host".into()),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(http_url_error("http://prometheus.monitoring:9090"), None);
        assert_eq!(http_url_error("https://[::1]/x"), None);
        assert!(
            http_url_error("ftp://x")
                .unwrap()
                .contains("scheme \"ftp\"")
        );
        assert!(http_url_error("http//x").unwrap().starts_with("not a URL"));
        assert!(http_url_error("http://:80").is_some());
        assert!(http_url_error("http://exa mple.com").is_some());
    }

    #[test]
    fn the_emulators_admission_rejects_a_config_rollout_the_schema_rejects() {
        let crd = serde_json::to_value(crate::api::crd()).unwrap();
        let hook = kube_emulator::validation::admission_hook();
        let bad = serde_json::json!({
            "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"config": {"name": "cfg", "data": {"a": "b"}},
                     "rings": [{"name": "canary", "namespaces": ["a"], "bake": "15"}]},
        });
        let violations = hook(&crd, "v1alpha1", &bad);
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, "spec.rings[0].bake");
        let mut good = bad.clone();
        good["spec"]["rings"][0]["bake"] = serde_json::json!("15s");
        assert_eq!(hook(&crd, "v1alpha1", &good), vec![]);
    }

    #[test]
    fn a_valid_manifest_has_no_violations_and_documents_are_named() {
        let validator = ManifestValidator::new().unwrap();
        let text = "---\napiVersion: ringfence.dev/v1alpha1\nkind: ConfigRollout\nmetadata: {name: a}\n\
                    spec:\n  config: {name: c, data: {k: v}}\n  rings: [{name: r, namespaces: [x]}]\n---\n---\n[]\n";
        let reports = validator.check_text(text).unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0],
            DocumentReport {
                name: "a".into(),
                violations: vec![]
            }
        );
        assert_eq!(reports[1].name, "(document 2)");
        assert_eq!(reports[1].violations[0].reason, reason::TYPE_INVALID);
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let error = parse_documents("a: b\nc: [d\n").unwrap_err();
        assert!(error.line >= 2, "{error}");
        assert!(error.column >= 1, "{error}");
    }
}
