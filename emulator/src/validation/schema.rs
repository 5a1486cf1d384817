//! Admission of an object against a CRD version's `openAPIV3Schema`, in the order
//! kube-apiserver uses:
//!
//! 1. prune: unknown fields are dropped (and reported, as with strict field
//!    validation); a `null` where the schema is not `nullable` is dropped, or
//!    replaced by the field's `default`;
//! 2. default: absent fields with a `default` get it, recursively;
//! 3. structural checks: `type`, `enum`, `pattern`, lengths, bounds, item and
//!    property counts, `required`, list-type uniqueness, `allOf`/`anyOf`/`oneOf`/`not`;
//! 4. CEL (`x-kubernetes-validations`, evaluated by kube-cel). Like kube-apiserver,
//!    CEL is skipped when a structural check failed in a way that makes rules
//!    meaningless (a wrong type, a missing required field, an unsupported enum
//!    value, too long or too many), and one violation says so.
//!
//! Nothing here knows ConfigRollout: the API emulator admits every custom
//! resource through [`CompiledCrd`], and `ringfence validate` does the same.

use std::collections::HashMap;
use std::fmt;

use regex::Regex;
use serde_json::{Map, Value};

/// Reasons, as kube-apiserver names them in a `Status`'s `details.causes`.
pub mod reason {
    pub const INVALID: &str = "FieldValueInvalid";
    pub const REQUIRED: &str = "FieldValueRequired";
    pub const NOT_SUPPORTED: &str = "FieldValueNotSupported";
    pub const TOO_LONG: &str = "FieldValueTooLong";
    pub const TOO_MANY: &str = "FieldValueTooMany";
    pub const FORBIDDEN: &str = "FieldValueForbidden";
    pub const TYPE_INVALID: &str = "FieldValueTypeInvalid";
    pub const DUPLICATE: &str = "FieldValueDuplicate";
}

/// One problem with one field, as kube-apiserver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field, e.g. `spec.rings[1].bake`; empty for the whole object.
    pub field: String,
    /// One of the [`reason`] constants.
    pub reason: String,
    /// What kube-apiserver says after the field, e.g.
    /// `Invalid value: "15": must be a duration such as 30s, 5m or 1h30m`.
    pub message: String,
}

impl FieldViolation {
    pub fn new(
        field: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// A CRD that cannot be used for admission; a real API server would refuse it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("not a CustomResourceDefinition: {0}")]
    NotACrd(&'static str),
    #[error("the CRD has no version {0:?}")]
    UnknownVersion(String),
    #[error("version {0:?} of the CRD has no openAPIV3Schema")]
    NoSchema(String),
    #[error("{path}: pattern {pattern:?} is not a valid regular expression")]
    Pattern {
        path: String,
        pattern: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("{path}: CEL rule does not compile: {message}")]
    Cel { path: String, message: String },
}

/// Validates `object` against version `version` of `crd` (a whole
/// CustomResourceDefinition as JSON). Returns the object as it would be stored
/// (unknown fields pruned, defaults applied) and every violation.
///
/// Compiles the CRD on every call: keep a [`CompiledCrd`] to admit many objects.
pub fn validate_object(
    crd: &Value,
    version: &str,
    object: &Value,
) -> Result<(Value, Vec<FieldViolation>), SchemaError> {
    CompiledCrd::new(crd)?.validate(version, object)
}

/// A CRD with its patterns and CEL rules compiled once.
pub struct CompiledCrd {
    versions: Vec<CompiledVersion>,
}

struct CompiledVersion {
    name: String,
    schema: Value,
    cel: kube_cel::CompiledSchema,
    has_rules: bool,
    patterns: HashMap<String, Regex>,
}

impl fmt::Debug for CompiledCrd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledCrd")
            .field("versions", &self.versions().collect::<Vec<_>>())
            .finish()
    }
}

impl CompiledCrd {
    /// Compiles every version's schema; fails where kube-apiserver would refuse the CRD
    /// (a pattern that is not a regex, a CEL rule that does not compile).
    pub fn new(crd: &Value) -> Result<Self, SchemaError> {
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .ok_or(SchemaError::NotACrd("no spec.versions"))?;
        let mut compiled = Vec::new();
        for version in versions {
            let name = version
                .get("name")
                .and_then(Value::as_str)
                .ok_or(SchemaError::NotACrd("a version has no name"))?
                .to_string();
            let schema = version
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .ok_or_else(|| SchemaError::NoSchema(name.clone()))?;
            let mut patterns = HashMap::new();
            collect_patterns(&schema, "", &mut patterns)?;
            let cel = kube_cel::compile_schema(&schema);
            cel_compilation_errors(&cel, "")?;
            let has_rules = has_rules(&cel);
            compiled.push(CompiledVersion {
                name,
                schema,
                cel,
                has_rules,
                patterns,
            });
        }
        Ok(Self { versions: compiled })
    }

    /// Names of the versions this CRD serves a schema for.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        self.versions.iter().map(|v| v.name.as_str())
    }

    /// Admits `object` as version `version`: see [`validate_object`].
    pub fn validate(
        &self,
        version: &str,
        object: &Value,
    ) -> Result<(Value, Vec<FieldViolation>), SchemaError> {
        let compiled = self
            .versions
            .iter()
            .find(|v| v.name == version)
            .ok_or_else(|| SchemaError::UnknownVersion(version.to_string()))?;
        Ok(compiled.admit(object))
    }

    /// The `openAPIV3Schema` of a version, e.g. for kube-cel's static analysis.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| &v.schema)
    }

    /// The compiled CEL rules of a version.
    pub fn cel(&self, version: &str) -> Option<&kube_cel::CompiledSchema> {
        self.versions
            .iter()
            .find(|v| v.name == version)
            .map(|v| &v.cel)
    }
}

/// Fields kube-apiserver accepts at the root of every custom resource, and at the
/// root of an embedded resource, whether or not the schema declares them.
const RESOURCE_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl CompiledVersion {
    fn admit(&self, object: &Value) -> (Value, Vec<FieldViolation>) {
        let mut object = object.clone();
        let mut violations = Vec::new();
        prune_and_default(&self.schema, &mut object, "", true, &mut violations);
        let mut checker = Checker {
            patterns: &self.patterns,
            out: Vec::new(),
        };
        checker.check(&self.schema, &object, "", true);
        violations.append(&mut checker.out);

        if !self.has_rules {
            return (object, violations);
        }
        if violations.iter().any(is_blocking) {
            violations.push(FieldViolation {
                field: String::new(),
                reason: reason::INVALID.into(),
                message: "some validation rules were not checked because the object was invalid; \
                          correct the existing errors to complete validation"
                    .into(),
            });
        } else if let Err(errors) = kube_cel::validate_compiled(&self.cel, &object, None) {
            violations.extend(
                errors
                    .into_vec()
                    .into_iter()
                    .map(|e| cel_violation(e, &object)),
            );
        }
        (object, violations)
    }
}

/// kube-apiserver's `hasBlockingErr`: after these, CEL rules are not evaluated.
fn is_blocking(v: &FieldViolation) -> bool {
    [
        reason::NOT_SUPPORTED,
        reason::REQUIRED,
        reason::TOO_LONG,
        reason::TOO_MANY,
        reason::TYPE_INVALID,
    ]
    .contains(&v.reason.as_str())
}

fn cel_violation(error: kube_cel::ValidationError, object: &Value) -> FieldViolation {
    let reason = error
        .reason
        .clone()
        .unwrap_or_else(|| reason::INVALID.to_string());
    let value =
        lookup(object, &error.field_path).map_or_else(|| "\"object\"".to_string(), render_value);
    let message = match (reason.as_str(), error.kind) {
        (reason::FORBIDDEN, kube_cel::ErrorKind::ValidationFailure) => {
            format!("Forbidden: {}", error.message)
        }
        (reason::REQUIRED, kube_cel::ErrorKind::ValidationFailure) => {
            format!("Required value: {}", error.message)
        }
        (reason::DUPLICATE, kube_cel::ErrorKind::ValidationFailure) => {
            format!("Duplicate value: {value}: {}", error.message)
        }
        _ => format!("Invalid value: {value}: {}", error.message),
    };
    FieldViolation {
        field: error.field_path,
        reason,
        message,
    }
}

/// Finds the value at a kube-cel field path such as `spec.rings[1].bake`. A map key
/// containing `.` or `[` is ambiguous there; the caller then falls back to a type name.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split('[').filter(|i| !i.is_empty()) {
            current = current.get(index.strip_suffix(']')?.parse::<usize>().ok()?)?;
        }
    }
    Some(current)
}

/// A value as kube-apiserver prints it after `Invalid value:`: scalars as they are,
/// strings quoted, objects and arrays by their type. Long strings are shortened.
fn render_value(value: &Value) -> String {
    const MAX: usize = 120;
    match value {
        Value::Null => "\"null\"".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > MAX => {
            let short: String = s.chars().take(MAX).collect();
            format!("{}...", Value::String(short))
        }
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "\"array\"".into(),
        Value::Object(_) => "\"object\"".into(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn child_path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

fn key_path(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn is_nullable(schema: &Value) -> bool {
    flag(schema, "nullable")
}

fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
}

fn type_of(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

/// `additionalProperties` as a schema, when it is one (`true` means "any value").
fn additional_schema(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

fn allows_additional(schema: &Value) -> bool {
    matches!(
        schema.get("additionalProperties"),
        Some(Value::Object(_)) | Some(Value::Bool(true))
    )
}

/// Pruning, null handling and defaulting, in kube-apiserver's order. Fields kept
/// by `x-kubernetes-preserve-unknown-fields` are not looked into.
fn prune_and_default(
    schema: &Value,
    value: &mut Value,
    path: &str,
    root: bool,
    out: &mut Vec<FieldViolation>,
) {
    match value {
        Value::Object(map)
            if type_of(schema) == Some("object") || schema.get("properties").is_some() =>
        {
            let properties = schema.get("properties").and_then(Value::as_object);
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let declared = properties.and_then(|p| p.get(&key));
                let field_schema = declared.or_else(|| additional_schema(schema));
                let is_map_entry = declared.is_none();
                let field = if is_map_entry && allows_additional(schema) {
                    key_path(path, &key)
                } else {
                    child_path(path, &key)
                };
                match field_schema {
                    Some(field_schema) => {
                        if map.get(&key).is_some_and(Value::is_null) && !is_nullable(field_schema) {
                            match field_schema.get("default") {
                                Some(default) => {
                                    map.insert(key.clone(), default.clone());
                                }
                                // A map entry's null is kept: its type check reports it.
                                None if !is_map_entry => {
                                    map.remove(&key);
                                    continue;
                                }
                                None => {}
                            }
                        }
                        if let Some(child) = map.get_mut(&key) {
                            prune_and_default(field_schema, child, &field, false, out);
                        }
                    }
                    None if allows_additional(schema) || preserves_unknown(schema) => {}
                    None if embedded && RESOURCE_FIELDS.contains(&key.as_str()) => {}
                    None => {
                        map.remove(&key);
                        out.push(FieldViolation {
                            field,
                            reason: reason::FORBIDDEN.into(),
                            message: format!("Forbidden: unknown field {:?}", key),
                        });
                    }
                }
            }
            if let Some(properties) = properties {
                for (key, field_schema) in properties {
                    if !map.contains_key(key)
                        && let Some(default) = field_schema.get("default")
                    {
                        let mut default = default.clone();
                        prune_and_default(
                            field_schema,
                            &mut default,
                            &child_path(path, key),
                            false,
                            out,
                        );
                        map.insert(key.clone(), default);
                    }
                }
            }
        }
        Value::Object(map) => {
            if let Some(field_schema) = additional_schema(schema) {
                for (key, child) in map.iter_mut() {
                    prune_and_default(field_schema, child, &key_path(path, key), false, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    if item.is_null()
                        && !is_nullable(item_schema)
                        && let Some(default) = item_schema.get("default")
                    {
                        *item = default.clone();
                    }
                    prune_and_default(item_schema, item, &index_path(path, i), false, out);
                }
            }
        }
        // JSON has one number type: an integral float is an integer, and is stored as one.
        Value::Number(n) if type_of(schema) == Some("integer") && !(n.is_i64() || n.is_u64()) => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        _ => {}
    }
}

struct Checker<'a> {
    patterns: &'a HashMap<String, Regex>,
    out: Vec<FieldViolation>,
}

impl Checker<'_> {
    fn push(&mut self, field: &str, reason: &str, message: String) {
        self.out.push(FieldViolation {
            field: field.to_string(),
            reason: reason.to_string(),
            message,
        });
    }

    fn invalid(&mut self, field: &str, value: &Value, detail: impl fmt::Display) {
        self.push(
            field,
            reason::INVALID,
            format!("Invalid value: {}: {detail}", render_value(value)),
        );
    }

    /// Checks `value` against every keyword of `schema`. Returns after a type
    /// mismatch: the other keywords would only repeat it.
    fn check(&mut self, schema: &Value, value: &Value, path: &str, root: bool) {
        if value.is_null() {
            if !is_nullable(schema)
                && (type_of(schema).is_some() || flag(schema, "x-kubernetes-int-or-string"))
            {
                let expected = type_of(schema).unwrap_or("integer or string");
                self.push(
                    path,
                    reason::TYPE_INVALID,
                    format!("Invalid value: \"null\": must be of type {expected}"),
                );
            }
            return;
        }
        if !self.check_type(schema, value, path) {
            return;
        }
        if let Some(Value::Array(allowed)) = schema.get("enum")
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed
                .iter()
                .map(|a| match a {
                    Value::String(s) => format!("{s:?}"),
                    other => format!("{:?}", other.to_string()),
                })
                .collect();
            self.push(
                path,
                reason::NOT_SUPPORTED,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    render_value(value),
                    supported.join(", ")
                ),
            );
        }
        match value {
            Value::String(s) => self.check_string(schema, value, s, path),
            Value::Number(_) => self.check_number(schema, value, path),
            Value::Array(items) => self.check_array(schema, value, items, path),
            Value::Object(map) => self.check_object(schema, map, path, root),
            _ => {}
        }
        self.check_junctors(schema, value, path);
    }

    fn check_type(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let actual = type_name(value);
        let ok = match type_of(schema) {
            Some("number") => matches!(value, Value::Number(_)),
            Some("integer") => actual == "integer",
            Some(expected) => expected == actual,
            None if flag(schema, "x-kubernetes-int-or-string") => {
                matches!(actual, "integer" | "string")
            }
            None => true,
        };
        if !ok {
            let expected = type_of(schema).unwrap_or("integer or string");
            self.push(
                path,
                reason::TYPE_INVALID,
                format!("Invalid value: {actual:?}: must be of type {expected}"),
            );
        }
        ok
    }

    fn check_string(&mut self, schema: &Value, value: &Value, s: &str, path: &str) {
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            self.push(
                path,
                reason::TOO_LONG,
                format!("Too long: may not be more than {max} characters"),
            );
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            self.invalid(
                path,
                value,
                format_args!("should be at least {min} chars long"),
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && let Some(regex) = self.patterns.get(pattern)
            && !regex.is_match(s)
        {
            self.invalid(path, value, format_args!("should match '{pattern}'"));
        }
        let format_ok = match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => s.parse::<jiff::Timestamp>().is_ok(),
            Some("byte") => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(s).is_ok()
            }
            _ => true,
        };
        if !format_ok {
            let format = schema
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or_default();
            self.invalid(path, value, format_args!("must be of type {format}"));
        }
    }

    fn check_number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(n) = value.as_f64() else { return };
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if flag(schema, "exclusiveMinimum") {
                if n <= min {
                    self.invalid(path, value, format_args!("should be greater than {min}"));
                }
            } else if n < min {
                self.invalid(
                    path,
                    value,
                    format_args!("should be greater than or equal to {min}"),
                );
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if flag(schema, "exclusiveMaximum") {
                if n >= max {
                    self.invalid(path, value, format_args!("should be less than {max}"));
                }
            } else if n > max {
                self.invalid(
                    path,
                    value,
                    format_args!("should be less than or equal to {max}"),
                );
            }
        }
        if let Some(factor) = schema
            .get("multipleOf")
            .and_then(Value::as_f64)
            .filter(|f| *f > 0.0)
        {
            let q = n / factor;
            if (q - q.round()).abs() > 1e-9 {
                self.invalid(
                    path,
                    value,
                    format_args!("should be a multiple of {factor}"),
                );
            }
        }
    }

    fn check_array(&mut self, schema: &Value, value: &Value, items: &[Value], path: &str) {
        let len = items.len() as u64;
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.push(
                path,
                reason::TOO_MANY,
                format!("Too many: {len}: must have at most {max} items"),
            );
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.invalid(
                path,
                value,
                format_args!("should have at least {min} items"),
            );
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        let path = index_path(path, i);
                        self.push(
                            &path,
                            reason::DUPLICATE,
                            format!("Duplicate value: {}", render_value(item)),
                        );
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let key_of = |item: &Value| -> Vec<Option<Value>> {
                    keys.iter().map(|k| item.get(*k).cloned()).collect()
                };
                for (i, item) in items.iter().enumerate() {
                    let key = key_of(item);
                    if items[..i].iter().any(|other| key_of(other) == key) {
                        let shown: Map<String, Value> = keys
                            .iter()
                            .zip(&key)
                            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
                            .collect();
                        let path = index_path(path, i);
                        self.push(
                            &path,
                            reason::DUPLICATE,
                            format!("Duplicate value: {}", Value::Object(shown)),
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &index_path(path, i), false);
            }
        }
    }

    fn check_object(&mut self, schema: &Value, map: &Map<String, Value>, path: &str, root: bool) {
        let len = map.len() as u64;
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && len > max
        {
            self.push(
                path,
                reason::TOO_MANY,
                format!("Too many: {len}: must have at most {max} items"),
            );
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
            && len < min
        {
            let object = Value::Object(Map::new());
            self.invalid(
                path,
                &object,
                format_args!("should have at least {min} properties"),
            );
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    self.push(
                        &child_path(path, field),
                        reason::REQUIRED,
                        "Required value".into(),
                    );
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, child) in map {
            if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                self.check(field_schema, child, &child_path(path, key), false);
            } else if let Some(field_schema) = additional_schema(schema) {
                self.check(field_schema, child, &key_path(path, key), false);
            } else if root
                && key != "metadata"
                && RESOURCE_FIELDS.contains(&key.as_str())
                && !child.is_string()
            {
                let actual = type_name(child);
                let field = child_path(path, key);
                self.push(
                    &field,
                    reason::TYPE_INVALID,
                    format!("Invalid value: {actual:?}: must be of type string"),
                );
            }
        }
    }

    /// `allOf`, `anyOf`, `oneOf` and `not` only add value checks (structural schemas
    /// declare fields outside of them), so a branch is checked like any schema.
    fn check_junctors(&mut self, schema: &Value, value: &Value, path: &str) {
        if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
            for branch in branches {
                self.check(branch, value, path, false);
            }
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
            && !branches.is_empty()
            && !branches.iter().any(|b| self.passes(b, value, path))
        {
            self.invalid(path, value, "must validate at least one schema (anyOf)");
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array)
            && !branches.is_empty()
            && branches
                .iter()
                .filter(|b| self.passes(b, value, path))
                .count()
                != 1
        {
            self.invalid(path, value, "must validate one and only one schema (oneOf)");
        }
        if let Some(not) = schema.get("not").filter(|n| n.is_object())
            && self.passes(not, value, path)
        {
            self.invalid(path, value, "must not validate the schema (not)");
        }
    }

    fn passes(&self, schema: &Value, value: &Value, path: &str) -> bool {
        let mut trial = Checker {
            patterns: self.patterns,
            out: Vec::new(),
        };
        trial.check(schema, value, path, false);
        trial.out.is_empty()
    }
}

fn collect_patterns(
    schema: &Value,
    path: &str,
    out: &mut HashMap<String, Regex>,
) -> Result<(), SchemaError> {
    match schema {
        Value::Object(map) => {
            if let Some(pattern) = map.get("pattern").and_then(Value::as_str)
                && !out.contains_key(pattern)
            {
                let regex = Regex::new(pattern).map_err(|source| SchemaError::Pattern {
                    path: path.to_string(),
                    pattern: pattern.to_string(),
                    source: Box::new(source),
                })?;
                out.insert(pattern.to_string(), regex);
            }
            for (key, child) in map {
                // `enum`, `default` and `example` hold values, not schemas.
                if !matches!(
                    key.as_str(),
                    "enum" | "default" | "example" | "x-kubernetes-validations"
                ) {
                    collect_patterns(child, &child_path(path, key), out)?;
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_patterns(item, &index_path(path, i), out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn has_rules(schema: &kube_cel::CompiledSchema) -> bool {
    !schema.validations.is_empty()
        || schema.properties.values().any(has_rules)
        || schema.items.as_deref().is_some_and(has_rules)
        || schema
            .additional_properties
            .as_deref()
            .is_some_and(has_rules)
        || schema
            .all_of
            .iter()
            .chain(&schema.any_of)
            .chain(&schema.one_of)
            .any(has_rules)
}

fn cel_compilation_errors(
    schema: &kube_cel::CompiledSchema,
    path: &str,
) -> Result<(), SchemaError> {
    if let Some(error) = schema.compilation_errors().first() {
        return Err(SchemaError::Cel {
            path: path.to_string(),
            message: error.to_string(),
        });
    }
    for (name, child) in &schema.properties {
        cel_compilation_errors(child, &child_path(path, name))?;
    }
    if let Some(items) = &schema.items {
        cel_compilation_errors(items, &format!("{path}[*]"))?;
    }
    if let Some(additional) = &schema.additional_properties {
        cel_compilation_errors(additional, &format!("{path}[*]"))?;
    }
    for branch in schema
        .all_of
        .iter()
        .chain(&schema.any_of)
        .chain(&schema.one_of)
    {
        cel_compilation_errors(branch, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
