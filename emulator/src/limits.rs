//! The limits kube-apiserver enforces on what it stores: label and
//! annotation syntax and size on every kind; ConfigMap and Secret keys,
//! sizes and immutability; the lengths of new-style Events. Messages follow
//! the v1.33 validation code (`apimachinery/pkg/util/validation`,
//! `pkg/apis/core/validation`), the version the emulator reports.

use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use crate::status::ApiError;

/// Largest request body the API server reads (`--max-request-body-bytes`' default).
pub(crate) const MAX_REQUEST_BODY: usize = 3 * 1024 * 1024;
/// Largest total of a ConfigMap's or Secret's values (`core.MaxSecretSize`).
pub(crate) const MAX_DATA_BYTES: usize = 1024 * 1024;
/// Largest total of annotation keys and values (`TotalAnnotationSizeLimitB`).
pub(crate) const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// Longest message of an Event that has an `eventTime` (`NoteLengthLimit`).
pub(crate) const MAX_EVENT_MESSAGE: usize = 1024;
/// Longest reason, action and reportingInstance of such an Event.
const MAX_EVENT_FIELD: usize = 128;

const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_MAP_KEY_FMT: &str = "[-._a-zA-Z0-9]+";

fn anchored(fmt: &str) -> Regex {
    Regex::new(&format!("^(?:{fmt})$")).expect("the validation patterns are valid regexes")
}

static DNS1123_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")));
static QUALIFIED_NAME: LazyLock<Regex> = LazyLock::new(|| anchored(QUALIFIED_NAME_FMT));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!("({QUALIFIED_NAME_FMT})?")));
static CONFIG_MAP_KEY: LazyLock<Regex> = LazyLock::new(|| anchored(CONFIG_MAP_KEY_FMT));

/// One field error, as [`ApiError::invalid`] takes it: field, reason, message.
pub(crate) type Cause = (String, String, String);

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn invalid(field: &str, value: &str, detail: &str) -> Cause {
    (
        field.to_string(),
        "FieldValueInvalid".into(),
        format!("Invalid value: {}: {detail}", quote(value)),
    )
}

fn too_long(field: &str, max: usize) -> Cause {
    (
        field.to_string(),
        "FieldValueTooLong".into(),
        format!("Too long: must have at most {max} bytes"),
    )
}

fn forbidden(field: &str, detail: &str) -> Cause {
    (
        field.to_string(),
        "FieldValueForbidden".into(),
        format!("Forbidden: {detail}"),
    )
}

fn required(field: &str) -> Cause {
    (
        field.to_string(),
        "FieldValueRequired".into(),
        "Required value".into(),
    )
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let examples: String = examples
        .iter()
        .map(|e| format!("'{e}', "))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{msg} (e.g. {examples}regex used for validation is '{fmt}')")
}

fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            &format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*"),
            &["example.com"],
        ));
    }
    errs
}

/// A label key: an optional DNS subdomain prefix and '/', then a name.
fn qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !QUALIFIED_NAME.is_match(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

fn label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !LABEL_VALUE.is_match(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !CONFIG_MAP_KEY.is_match(value) {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            CONFIG_MAP_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".into());
    } else if value == ".." {
        errs.push("must not be '..'".into());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn string_map<'a>(obj: &'a Value, pointer: &str) -> Vec<(&'a String, &'a Value)> {
    let mut entries: Vec<_> = obj
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `metadata.labels` and `metadata.annotations`, checked on every kind.
pub(crate) fn metadata(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (key, value) in string_map(obj, "/metadata/labels") {
        for msg in qualified_name(key) {
            causes.push(invalid("metadata.labels", key, &msg));
        }
        let value = text(value);
        for msg in label_value(&value) {
            causes.push(invalid("metadata.labels", &value, &msg));
        }
    }
    let annotations = string_map(obj, "/metadata/annotations");
    let mut total = 0;
    for (key, value) in &annotations {
        // Annotation keys are label keys in which case does not matter.
        for msg in qualified_name(&key.to_lowercase()) {
            causes.push(invalid("metadata.annotations", key, &msg));
        }
        total += key.len() + text(value).len();
    }
    if total > MAX_ANNOTATION_BYTES {
        causes.push(too_long("metadata.annotations", MAX_ANNOTATION_BYTES));
    }
    causes
}

/// The 400 the API server answers when a body does not decode into the kind.
fn undecodable(kind: &str, why: String) -> ApiError {
    ApiError::bad_request(format!(
        "{kind} in version \"v1\" cannot be handled as a {kind}: {why}"
    ))
}

/// The decoded length of a base64 value, as `[]byte` fields decode it.
fn decoded_len(kind: &str, value: &Value) -> Result<usize, ApiError> {
    let encoded = match value {
        Value::String(s) => s,
        Value::Null => return Ok(0),
        other => {
            return Err(undecodable(
                kind,
                format!("json: cannot unmarshal {other} into a []byte map value"),
            ));
        }
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map(|b| b.len())
        .map_err(|e| {
            let at = match e {
                base64::DecodeError::InvalidByte(at, _) => at,
                base64::DecodeError::InvalidLastSymbol(at, _) => at,
                _ => encoded.len(),
            };
            undecodable(kind, format!("illegal base64 data at input byte {at}"))
        })
}

fn config_map(obj: &Value) -> Result<Vec<Cause>, ApiError> {
    let mut causes = Vec::new();
    let binary = obj.get("binaryData").and_then(Value::as_object);
    let mut total = 0;
    for (key, value) in string_map(obj, "/data") {
        let field = format!("data[{key}]");
        for msg in config_map_key(key) {
            causes.push(invalid(&field, key, &msg));
        }
        if binary.is_some_and(|b| b.contains_key(key)) {
            causes.push(invalid(
                &field,
                key,
                "duplicate of key present in binaryData",
            ));
        }
        total += text(value).len();
    }
    for (key, value) in string_map(obj, "/binaryData") {
        for msg in config_map_key(key) {
            causes.push(invalid(&format!("binaryData[{key}]"), key, &msg));
        }
        total += decoded_len("ConfigMap", value)?;
    }
    if total > MAX_DATA_BYTES {
        // The real server reports the whole object, on the empty path it prints as `[]`.
        causes.push(too_long("[]", MAX_DATA_BYTES));
    }
    Ok(causes)
}

/// A Secret after `stringData` was merged into `data`, as the real server validates it.
fn secret(obj: &Value) -> Result<Vec<Cause>, ApiError> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (key, value) in string_map(obj, "/data") {
        for msg in config_map_key(key) {
            causes.push(invalid(&format!("data[{key}]"), key, &msg));
        }
        total += decoded_len("Secret", value)?;
    }
    if total > MAX_DATA_BYTES {
        causes.push(too_long("data", MAX_DATA_BYTES));
    }
    Ok(causes)
}

/// A map field as Go decodes it: absent and `null` are the same nil map.
fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn is_immutable(obj: &Value) -> bool {
    obj.get("immutable").and_then(Value::as_bool) == Some(true)
}

/// ConfigMap and Secret updates: once `immutable` is set, the data and the
/// flag itself are fixed. A Secret's type never changes.
fn immutability(kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    const MSG: &str = "field is immutable when `immutable` is set";
    let mut causes = Vec::new();
    if kind == "Secret" && old.get("type") != new.get("type") {
        let ty = new.get("type").map(text).unwrap_or_default();
        causes.push(invalid("type", &ty, "field is immutable"));
    }
    if !is_immutable(old) {
        return causes;
    }
    if !is_immutable(new) {
        causes.push(forbidden("immutable", MSG));
    }
    let fields: &[&str] = if kind == "Secret" {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    for name in fields {
        if field(old, name) != field(new, name) {
            causes.push(forbidden(name, MSG));
        }
    }
    causes
}

/// Events with an `eventTime` (every `events.k8s.io` Event, and new-style
/// core ones) must name who reported them and keep their texts short.
fn event(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if field(obj, "eventTime").is_none_or(|t| t.as_str() == Some("")) {
        return causes;
    }
    let get = |name: &str| field(obj, name).map(text).unwrap_or_default();
    let controller = get("reportingComponent");
    if controller.is_empty() {
        causes.push(required("reportingController"));
    }
    for msg in qualified_name(&controller) {
        causes.push(invalid("reportingController", &controller, &msg));
    }
    for name in ["reportingInstance", "action", "reason"] {
        let value = get(name);
        if value.is_empty() {
            causes.push(required(name));
        }
        if value.len() > MAX_EVENT_FIELD {
            causes.push(invalid(
                name,
                "",
                &format!("can have at most {MAX_EVENT_FIELD} characters"),
            ));
        }
    }
    if get("message").len() > MAX_EVENT_MESSAGE {
        causes.push(invalid(
            "message",
            "",
            &format!("can have at most {MAX_EVENT_MESSAGE} characters"),
        ));
    }
    causes
}

/// Every limit that applies to `obj` of the core kind `plural` (empty for
/// other groups), given the object it replaces. A body that cannot be the
/// kind at all (invalid base64) is a 400, as the real decoder answers.
pub(crate) fn check(
    group: &str,
    plural: &str,
    obj: &Value,
    previous: Option<&Value>,
) -> Result<Vec<Cause>, ApiError> {
    let mut causes = metadata(obj);
    if group.is_empty() {
        match plural {
            "configmaps" => {
                causes.extend(config_map(obj)?);
                if let Some(old) = previous {
                    causes.extend(immutability("ConfigMap", old, obj));
                }
            }
            "secrets" => {
                causes.extend(secret(obj)?);
                if let Some(old) = previous {
                    causes.extend(immutability("Secret", old, obj));
                }
            }
            "events" => causes.extend(event(obj)),
            _ => {}
        }
    }
    // The real server drops repeated messages from one error list.
    let mut seen = Vec::new();
    causes.retain(|c| {
        let keep = !seen.contains(c);
        if keep {
            seen.push(c.clone());
        }
        keep
    });
    Ok(causes)
}

/// The 413 for a body over [`MAX_REQUEST_BODY`].
pub(crate) fn body_too_large() -> ApiError {
    ApiError::new(
        413,
        format!("Request entity too large: limit is {MAX_REQUEST_BODY}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(obj: Value) -> Vec<String> {
        metadata(&obj)
            .into_iter()
            .map(|(f, _, m)| format!("{f}: {m}"))
            .collect()
    }

    #[test]
    fn label_keys_and_values() {
        let ok = json!({"metadata": {"labels": {
            "app": "x", "example.com/name": "", "a.b-c_d": "v.1-2_3",
            &format!("{}/{}", "p".repeat(253), "n".repeat(63)): "v".repeat(63)
        }}});
        assert_eq!(messages(ok), Vec::<String>::new());
        assert_eq!(
            messages(json!({"metadata": {"labels": {"bad key": "ok"}}})),
            [
                "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
        let long_value = "v".repeat(64);
        assert_eq!(
            messages(json!({"metadata": {"labels": {"k": long_value}}})),
            [format!(
                "metadata.labels: Invalid value: \"{long_value}\": must be no more than 63 characters"
            )]
        );
        let long_name = "n".repeat(64);
        assert_eq!(
            messages(json!({"metadata": {"labels": {&long_name: "v"}}})),
            [format!(
                "metadata.labels: Invalid value: \"{long_name}\": name part must be no more than 63 characters"
            )]
        );
        let m = messages(
            json!({"metadata": {"labels": {"Example.com/x": "v", "/x": "v", "a/b/c": "v"}}}),
        );
        assert!(
            m[0].contains("\"/x\": prefix part must be non-empty"),
            "{m:?}"
        );
        assert!(
            m[1].contains("prefix part a lowercase RFC 1123 subdomain"),
            "{m:?}"
        );
        assert!(
            m[2].contains("\"a/b/c\": a qualified name must consist"),
            "{m:?}"
        );
        assert!(!messages(json!({"metadata": {"labels": {"k": "-v"}}})).is_empty());
    }

    #[test]
    fn annotation_keys_ignore_case_and_sizes_add_up() {
        assert!(
            messages(json!({"metadata": {"annotations": {"Example.COM/Key": "x"}}})).is_empty()
        );
        assert!(!messages(json!({"metadata": {"annotations": {"bad key": "x"}}})).is_empty());
        let at_limit =
            json!({"metadata": {"annotations": {"k": "v".repeat(MAX_ANNOTATION_BYTES - 1)}}});
        assert!(messages(at_limit).is_empty());
        let over = json!({"metadata": {"annotations": {"k": "v".repeat(MAX_ANNOTATION_BYTES - 1), "x": ""}}});
        assert_eq!(
            messages(over),
            ["metadata.annotations: Too long: must have at most 262144 bytes"]
        );
    }

    #[test]
    fn config_map_keys() {
        for good in ["a", "a.b", "_x-Y.9", ".hidden", &"k".repeat(253)] {
            assert!(config_map_key(good).is_empty(), "{good}");
        }
        assert_eq!(config_map_key("."), ["must not be '.'"]);
        assert_eq!(config_map_key(".."), ["must not be '..'"]);
        assert_eq!(config_map_key("..x"), ["must not start with '..'"]);
        assert_eq!(
            config_map_key(&"k".repeat(254)),
            ["must be no more than 253 characters"]
        );
        assert_eq!(config_map_key("a/b").len(), 1);
        assert_eq!(config_map_key("").len(), 1);
    }

    #[test]
    fn config_map_sizes_count_decoded_values() {
        let half = MAX_DATA_BYTES / 2;
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![0u8; n]);
        let at_limit = json!({"data": {"a": "x".repeat(half)}, "binaryData": {"b": b64(half)}});
        assert!(config_map(&at_limit).unwrap().is_empty());
        let over = json!({"data": {"a": "x".repeat(half + 1)}, "binaryData": {"b": b64(half)}});
        assert_eq!(config_map(&over).unwrap(), [too_long("[]", MAX_DATA_BYTES)]);
        let dup = json!({"data": {"a": ""}, "binaryData": {"a": ""}});
        assert_eq!(config_map(&dup).unwrap()[0].0, "data[a]");
        let err = config_map(&json!({"binaryData": {"b": "not base64!"}})).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("illegal base64 data"),
            "{}",
            err.message
        );
    }

    #[test]
    fn immutable_data_and_flag() {
        let old =
            json!({"immutable": true, "data": {"a": "1"}, "metadata": {"labels": {"x": "1"}}});
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["x"] = json!("2");
        assert!(immutability("ConfigMap", &old, &relabelled).is_empty());
        let changed = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(
            immutability("ConfigMap", &old, &changed),
            [forbidden(
                "data",
                "field is immutable when `immutable` is set"
            )]
        );
        let unset = json!({"immutable": false, "data": {"a": "1"}});
        assert_eq!(immutability("ConfigMap", &old, &unset)[0].0, "immutable");
        let mutable = json!({"data": {"a": "1"}});
        assert!(immutability("ConfigMap", &mutable, &changed).is_empty());
        let tls = json!({"type": "kubernetes.io/tls"});
        let opaque = json!({"type": "Opaque"});
        assert_eq!(immutability("Secret", &opaque, &tls)[0].0, "type");
    }

    #[test]
    fn new_style_events_are_bounded() {
        let event_at = |message: String| {
            json!({"eventTime": "2025-01-01T00:00:00.000000Z", "reportingComponent": "ringfence",
                   "reportingInstance": "r-0", "action": "Reconcile", "reason": "Promoted", "message": message})
        };
        assert!(event(&event_at("m".repeat(MAX_EVENT_MESSAGE))).is_empty());
        assert_eq!(
            event(&event_at("m".repeat(MAX_EVENT_MESSAGE + 1))),
            [invalid("message", "", "can have at most 1024 characters")]
        );
        // Old-style core events carry no such limit.
        assert!(event(&json!({"message": "m".repeat(4096), "reason": "r"})).is_empty());
        let bare = event(&json!({"eventTime": "2025-01-01T00:00:00Z"}));
        let fields: Vec<&str> = bare.iter().map(|c| c.0.as_str()).collect();
        assert!(
            fields.contains(&"reportingController") && fields.contains(&"action"),
            "{fields:?}"
        );
    }
}
