//! Label selector syntax, checked as kube-apiserver checks a selector in a
//! built-in object (a custom resource's selectors are only typed by its schema).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use regex::Regex;
use std::sync::LazyLock;

use super::schema::{FieldViolation, reason};

static NAME_PART: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("a valid regex")
});
static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("a valid regex")
});
static DNS_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("a valid regex"));

/// Why `key` is not a label key (a qualified name: optional DNS subdomain prefix and `/`,
/// then a name of at most 63 characters).
pub fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && let Some(problem) = dns_subdomain_error(prefix)
    {
        return Some(format!("prefix part {problem}"));
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    if !NAME_PART.is_match(name) {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
                .into(),
        );
    }
    None
}

/// Why `value` is not a label value (empty, or a name part of at most 63 characters).
pub fn label_value_error(value: &str) -> Option<String> {
    if value.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !value.is_empty() && !NAME_PART.is_match(value) {
        return Some(
            "a valid label must be an empty string or consist of alphanumeric characters, \
             '-', '_' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    None
}

/// Why `name` is not a DNS subdomain (RFC 1123), the rule for most object names.
pub fn dns_subdomain_error(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if !DNS_SUBDOMAIN.is_match(name) {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    None
}

/// Why `name` is not a DNS label (RFC 1123), the rule for namespace names.
pub fn dns_label_error(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    if !DNS_LABEL.is_match(name) {
        return Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character"
                .into(),
        );
    }
    None
}

const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Every syntax problem of `selector`, with fields under `path`.
pub fn validate_label_selector(selector: &LabelSelector, path: &str) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        let field = format!("{path}.matchLabels[{key}]");
        if let Some(problem) = label_key_error(key) {
            out.push(invalid(field.clone(), key, format!("label key {problem}")));
        }
        if let Some(problem) = label_value_error(value) {
            out.push(invalid(field, value, format!("label value {problem}")));
        }
    }
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}.matchExpressions[{i}]");
        if let Some(problem) = label_key_error(&expression.key) {
            out.push(invalid(
                format!("{field}.key"),
                &expression.key,
                format!("label key {problem}"),
            ));
        }
        let values = expression.values.as_deref().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => out.push(FieldViolation {
                field: format!("{field}.values"),
                reason: reason::REQUIRED.into(),
                message: "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    .into(),
            }),
            "In" | "NotIn" => {
                for (j, value) in values.iter().enumerate() {
                    if let Some(problem) = label_value_error(value) {
                        out.push(invalid(
                            format!("{field}.values[{j}]"),
                            value,
                            format!("label value {problem}"),
                        ));
                    }
                }
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => out.push(FieldViolation {
                field: format!("{field}.values"),
                reason: reason::FORBIDDEN.into(),
                message:
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                        .into(),
            }),
            "Exists" | "DoesNotExist" => {}
            other => out.push(FieldViolation {
                field: format!("{field}.operator"),
                reason: reason::NOT_SUPPORTED.into(),
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    serde_json::Value::from(other),
                    OPERATORS.map(|o| format!("{o:?}")).join(", ")
                ),
            }),
        }
    }
    out
}

fn invalid(field: String, value: &str, detail: String) -> FieldViolation {
    FieldViolation {
        field,
        reason: reason::INVALID.into(),
        message: format!(
            "Invalid value: {}: {detail}",
            serde_json::Value::from(value)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn selector(labels: &[(&str, &str)], expressions: &[(&str, &str, &[&str])]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            match_expressions: Some(
                expressions
                    .iter()
                    .map(|(key, op, values)| LabelSelectorRequirement {
                        key: key.to_string(),
                        operator: op.to_string(),
                        values: (!values.is_empty())
                            .then(|| values.iter().map(|v| v.to_string()).collect()),
                    })
                    .collect(),
            ),
        }
    }

    fn fields(selector: &LabelSelector) -> Vec<String> {
        validate_label_selector(selector, "sel")
            .into_iter()
            .map(|v| format!("{}: {}", v.field, v.message))
            .collect()
    }

    #[test]
    fn valid_selectors_pass() {
        let s = selector(
            &[
                ("ring", "early"),
                ("app.kubernetes.io/name", "checkout"),
                ("empty", ""),
            ],
            &[
                ("tier", "In", &["a", "b"]),
                ("x", "NotIn", &["c"]),
                ("y", "Exists", &[]),
                ("z", "DoesNotExist", &[]),
            ],
        );
        assert!(fields(&s).is_empty(), "{:?}", fields(&s));
        assert!(fields(&LabelSelector::default()).is_empty());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key_error("a/b/c").is_some());
        assert!(label_key_error("Example.com/x").is_some());
        assert!(label_key_error("example.com/").is_some());
        assert!(label_key_error(&"a".repeat(64)).is_some());
        assert!(label_key_error("-a").is_some());
        assert!(label_key_error("a_b.c-d").is_none());
        assert!(label_value_error("").is_none());
        assert!(label_value_error("has space").is_some());
        assert!(label_value_error(&"v".repeat(64)).is_some());
        let f = fields(&selector(&[("bad key", "ok"), ("ok", "bad value!")], &[]));
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(
            f[0].starts_with(
                "sel.matchLabels[bad key]: Invalid value: \"bad key\": label key name part"
            ),
            "{f:?}"
        );
        assert!(
            f[1].starts_with("sel.matchLabels[ok]: Invalid value: \"bad value!\": label value"),
            "{f:?}"
        );
    }

    #[test]
    fn operators_and_their_values() {
        let f = fields(&selector(
            &[],
            &[
                ("a", "In", &[]),
                ("b", "Exists", &["x"]),
                ("c", "Equals", &["x"]),
                ("d", "NotIn", &["ok", "no way"]),
            ],
        ));
        assert_eq!(
            f,
            [
                "sel.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "sel.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "sel.matchExpressions[2].operator: Unsupported value: \"Equals\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\"",
                "sel.matchExpressions[3].values[1]: Invalid value: \"no way\": label value a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ]
        );
    }

    #[test]
    fn object_names() {
        assert!(dns_subdomain_error("checkout-flags.v2").is_none());
        assert!(dns_subdomain_error("Checkout").is_some());
        assert!(dns_label_error("cell-eu-1").is_none());
        assert!(dns_label_error("cell.eu").is_some());
    }
}
