//! `meta.k8s.io/v1` Table responses, the server-side printing kubectl asks for.
//!
//! Custom resources get a Name column plus the CRD's
//! `additionalPrinterColumns` (or Age when it declares none); built-in kinds
//! get Name and Age, plus the usual columns for a few of them.

use serde_json::{Map, Value, json};

use crate::meta;
use crate::registry::ResourceType;

/// Whether the `Accept` header asks for a Table first.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// What a row's `object` carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(usize),
    All,
    Filter(Vec<String>, String),
}

/// A simple JSONPath as printer columns use: `.a.b`, `[0]`, `[*]`, `['k']`
/// and `[?(@.type=="Ready")]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath(Vec<Segment>);

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(s)
}

impl JsonPath {
    pub fn parse(path: &str) -> Option<JsonPath> {
        let p = path.trim();
        let p = p
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .unwrap_or(p);
        let p = p.strip_prefix('$').unwrap_or(p);
        let chars: Vec<char> = p.chars().collect();
        let mut segments = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let mut name = String::new();
                    i += 1;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if name.is_empty() {
                        return None;
                    }
                    segments.push(Segment::Field(name));
                }
                '[' => {
                    let close = (i..chars.len()).find(|&j| chars[j] == ']')?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    let inner = inner.trim();
                    let seg = if inner == "*" {
                        Segment::All
                    } else if let Ok(n) = inner.parse::<usize>() {
                        Segment::Index(n)
                    } else if let Some(expr) =
                        inner.strip_prefix("?(").and_then(|x| x.strip_suffix(')'))
                    {
                        let (lhs, rhs) = expr.split_once("==")?;
                        let field = lhs.trim().strip_prefix("@.")?;
                        Segment::Filter(
                            field.split('.').map(str::to_string).collect(),
                            unquote(rhs).to_string(),
                        )
                    } else {
                        Segment::Field(unquote(inner).to_string())
                    };
                    segments.push(seg);
                    i = close + 1;
                }
                _ => return None,
            }
        }
        Some(JsonPath(segments))
    }

    /// The first value the path selects.
    pub fn first<'v>(&self, obj: &'v Value) -> Option<&'v Value> {
        let mut current: Vec<&Value> = vec![obj];
        for seg in &self.0 {
            let mut next = Vec::new();
            for v in current {
                match seg {
                    Segment::Field(f) => next.extend(v.get(f.as_str())),
                    Segment::Index(n) => next.extend(v.get(*n)),
                    Segment::All => match v {
                        Value::Array(a) => next.extend(a.iter()),
                        Value::Object(m) => next.extend(m.values()),
                        _ => {}
                    },
                    Segment::Filter(field, expected) => {
                        if let Value::Array(items) = v {
                            next.extend(items.iter().filter(|item| {
                                let got = field.iter().try_fold(*item, |c, f| c.get(f.as_str()));
                                match got {
                                    Some(Value::String(s)) => s == expected,
                                    Some(other) => {
                                        serde_json::from_str::<Value>(expected).ok().as_ref()
                                            == Some(other)
                                    }
                                    None => false,
                                }
                            }))
                        }
                    }
                }
            }
            current = next;
        }
        current.into_iter().next()
    }
}

enum Source {
    Name,
    Age,
    Path(Option<JsonPath>),
    Computed(fn(&Value) -> Value),
}

struct Column {
    name: String,
    kind: String,
    format: String,
    description: String,
    priority: i64,
    source: Source,
}

fn column(name: &str, kind: &str, description: &str, source: Source) -> Column {
    Column {
        name: name.into(),
        kind: kind.into(),
        format: String::new(),
        description: description.into(),
        priority: 0,
        source,
    }
}

fn name_column() -> Column {
    Column {
        format: "name".into(),
        ..column(
            "Name",
            "string",
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically.",
            Source::Name,
        )
    }
}

fn age_column() -> Column {
    column(
        "Age",
        "string",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        Source::Age,
    )
}

fn count_keys(obj: &Value) -> Value {
    let n = ["data", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f).and_then(Value::as_object))
        .map(Map::len)
        .sum::<usize>();
    json!(n)
}

fn int_at(obj: &Value, pointer: &str, default: i64) -> i64 {
    obj.pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

fn builtin_columns(rt: &ResourceType) -> Vec<Column> {
    let mut cols = vec![name_column()];
    match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => cols.push(column(
            "Status",
            "string",
            "The status of the namespace",
            Source::Computed(|o| {
                json!(
                    o.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("Active")
                )
            }),
        )),
        ("", "configmaps") => cols.push(column(
            "Data",
            "string",
            "Number of keys",
            Source::Computed(count_keys),
        )),
        ("", "secrets") => {
            cols.push(column(
                "Type",
                "string",
                "The type of the secret",
                Source::Computed(|o| {
                    json!(o.get("type").and_then(Value::as_str).unwrap_or("Opaque"))
                }),
            ));
            cols.push(column(
                "Data",
                "string",
                "Number of keys",
                Source::Computed(count_keys),
            ));
        }
        ("apps", "deployments") => {
            cols.push(column(
                "Ready",
                "string",
                "Number of the pod with ready state",
                Source::Computed(|o| {
                    json!(format!(
                        "{}/{}",
                        int_at(o, "/status/readyReplicas", 0),
                        int_at(o, "/spec/replicas", 1)
                    ))
                }),
            ));
            cols.push(column(
                "Up-to-date",
                "integer",
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                Source::Computed(|o| json!(int_at(o, "/status/updatedReplicas", 0))),
            ));
            cols.push(column(
                "Available",
                "integer",
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                Source::Computed(|o| json!(int_at(o, "/status/availableReplicas", 0))),
            ));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            cols.push(column(
                "Created At",
                "date",
                "The time the CRD was created",
                Source::Computed(|o| json!(meta::meta_str(o, "creationTimestamp"))),
            ));
            return cols;
        }
        _ => {}
    }
    cols.push(age_column());
    cols
}

fn crd_columns(rt: &ResourceType, version: &str) -> Vec<Column> {
    let mut cols = vec![name_column()];
    let printer = rt
        .crd_version(version)
        .and_then(|v| v.get("additionalPrinterColumns"))
        .and_then(Value::as_array);
    match printer {
        Some(defs) if !defs.is_empty() => {
            for d in defs {
                let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let path = text("jsonPath");
                cols.push(Column {
                    name: text("name"),
                    kind: text("type"),
                    format: text("format"),
                    description: if text("description").is_empty() {
                        format!("Custom resource definition column (in JSONPath format): {path}")
                    } else {
                        text("description")
                    },
                    priority: d.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    source: Source::Path(JsonPath::parse(&path)),
                });
            }
        }
        _ => cols.push(age_column()),
    }
    cols
}

/// Renders a value as the API server's CRD printer does for the column type.
fn cell(kind: &str, v: Option<&Value>) -> Value {
    let Some(v) = v else {
        return Value::Null;
    };
    match (kind, v) {
        ("date", Value::String(s)) => json!(meta::age(s)),
        ("integer" | "number" | "boolean", Value::Number(_) | Value::Bool(_)) => v.clone(),
        ("string", Value::String(_)) => v.clone(),
        (_, Value::Null) => Value::Null,
        (_, Value::String(s)) => json!(s),
        (_, other) => json!(other.to_string()),
    }
}

/// Column definitions and rows for `objects`.
pub(crate) struct Table {
    columns: Vec<Column>,
    include: IncludeObject,
}

impl Table {
    pub fn new(rt: &ResourceType, version: &str, include: IncludeObject) -> Self {
        let columns = if rt.is_custom() {
            crd_columns(rt, version)
        } else {
            builtin_columns(rt)
        };
        Table { columns, include }
    }

    fn column_definitions(&self) -> Value {
        self.columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": c.kind,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect()
    }

    fn row(&self, obj: &Value) -> Value {
        let cells: Vec<Value> = self
            .columns
            .iter()
            .map(|c| match &c.source {
                Source::Name => json!(meta::name(obj)),
                Source::Age => json!(meta::age(meta::meta_str(obj, "creationTimestamp"))),
                Source::Path(path) => cell(&c.kind, path.as_ref().and_then(|p| p.first(obj))),
                Source::Computed(f) => f(obj),
            })
            .collect();
        let object = match self.include {
            IncludeObject::None => Value::Null,
            IncludeObject::Object => obj.clone(),
            IncludeObject::Metadata => {
                let mut m = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
                if let Some(map) = m.as_object_mut() {
                    map.remove("managedFields");
                }
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m})
            }
        };
        json!({"cells": cells, "object": object})
    }

    /// A Table of `objects` with the given list metadata.
    pub fn render<'a>(&self, objects: impl Iterator<Item = &'a Value>, list_meta: Value) -> Value {
        json!({
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": list_meta,
            "columnDefinitions": self.column_definitions(),
            "rows": objects.map(|o| self.row(o)).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths() {
        let obj = json!({
            "spec": {"rings": [{"name": "a"}, {"name": "b"}], "labels": {"app.kubernetes.io/name": "x"}},
            "status": {"conditions": [
                {"type": "Valid", "status": "True"},
                {"type": "Ready", "status": "False"}
            ], "count": 3}
        });
        let get = |p: &str| JsonPath::parse(p).unwrap().first(&obj).cloned();
        assert_eq!(get(".status.count"), Some(json!(3)));
        assert_eq!(get(".spec.rings[1].name"), Some(json!("b")));
        assert_eq!(get(".spec.rings[*].name"), Some(json!("a")));
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("False"))
        );
        assert_eq!(
            get("{.status.conditions[?(@.type=='Valid')].status}"),
            Some(json!("True"))
        );
        assert_eq!(
            get(".spec.labels.app\\.kubernetes\\.io/name"),
            Some(json!("x"))
        );
        assert_eq!(
            get(".spec.labels['app.kubernetes.io/name']"),
            Some(json!("x"))
        );
        assert_eq!(get(".status.missing"), None);
        assert!(JsonPath::parse("status").is_none());
        assert!(JsonPath::parse(".a[").is_none());
    }

    #[test]
    fn cells_follow_column_types() {
        assert_eq!(cell("integer", Some(&json!(2))), json!(2));
        assert_eq!(cell("string", Some(&json!(2))), json!("2"));
        assert_eq!(cell("string", None), Value::Null);
        assert_eq!(cell("date", Some(&json!("not a date"))), json!("<unknown>"));
    }

    #[test]
    fn accept_header() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
