//! Label and field selectors as they appear in `labelSelector` and `fieldSelector`.

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed `labelSelector`; every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

/// Splits on commas that are not inside a parenthesised value list.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn value_list(rest: &str) -> Option<Vec<String>> {
    let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let bad = || format!("unable to parse requirement: {term:?}");
            let requirement = if let Some(key) = term.strip_prefix('!') {
                (key.trim().to_string(), LabelOp::DoesNotExist)
            } else if let Some((key, value)) = term.split_once("!=") {
                (
                    key.trim().to_string(),
                    LabelOp::NotEquals(value.trim().to_string()),
                )
            } else if let Some((key, value)) = term.split_once("==") {
                (
                    key.trim().to_string(),
                    LabelOp::Equals(value.trim().to_string()),
                )
            } else if let Some((key, value)) = term.split_once('=') {
                (
                    key.trim().to_string(),
                    LabelOp::Equals(value.trim().to_string()),
                )
            } else if let Some((key, rest)) = term.split_once(" notin ") {
                (
                    key.trim().to_string(),
                    LabelOp::NotIn(value_list(rest).ok_or_else(bad)?),
                )
            } else if let Some((key, rest)) = term.split_once(" in ") {
                (
                    key.trim().to_string(),
                    LabelOp::In(value_list(rest).ok_or_else(bad)?),
                )
            } else {
                (term.to_string(), LabelOp::Exists)
            };
            if !valid_key(&requirement.0) {
                return Err(bad());
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                LabelOp::Equals(v) => value == Some(v.as_str()),
                LabelOp::NotEquals(v) => value != Some(v.as_str()),
                LabelOp::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                LabelOp::NotIn(vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
                LabelOp::Exists => value.is_some(),
                LabelOp::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// A parsed `fieldSelector`. Any dotted path is accepted (the real server
/// allows a per-kind list); a missing field compares as the empty string.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    requirements: Vec<(Vec<String>, bool, String)>,
}

fn field_text(obj: &Value, path: &[String]) -> String {
    let mut cur = obj;
    for part in path {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field selector: {term:?}"));
            }
            requirements.push((path, equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|(path, equal, value)| (field_text(obj, path) == *value) == *equal)
    }

    /// The name an equality on `metadata.name` pins, letting a watch skip other objects cheaply.
    pub fn required_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(p, eq, _)| *eq && p.len() == 2 && p[0] == "metadata" && p[1] == "name")
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_operators() {
        let l = labels(json!({"app": "web", "tier": "front", "ring": "early"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "tier in (front, back)",
            "ring notin (broad)",
            "app",
            "!missing",
            "app=web,tier in (front),!missing",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "tier in (back)",
            "ring notin (early)",
            "missing",
            "!app",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        assert!(
            LabelSelector::parse("missing notin (x)")
                .unwrap()
                .matches(None)
        );
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
    }

    #[test]
    fn field_paths() {
        let obj =
            json!({"metadata": {"name": "a", "namespace": "ns"}, "involvedObject": {"uid": "u"}});
        let sel = FieldSelector::parse("metadata.name=a,metadata.namespace!=other").unwrap();
        assert!(sel.matches(&obj));
        assert_eq!(sel.required_name(), Some("a"));
        assert!(
            FieldSelector::parse("involvedObject.uid==u")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !FieldSelector::parse("metadata.name=b")
                .unwrap()
                .matches(&obj)
        );
        assert!(FieldSelector::parse("spec.missing=").unwrap().matches(&obj));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
