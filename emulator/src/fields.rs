//! Field ownership: `managedFields` in the `FieldsV1` format, and the merge,
//! conflict and removal rules of server-side apply.
//!
//! A [`FieldSet`] is the tree `fieldsV1` spells out: keys `f:<field>`,
//! `k:<json key>` (an item of a list keyed by some of its fields),
//! `v:<json value>` (an item of a set) and `i:<index>`; a node is a member
//! when the path itself is owned (`{}` or `"."` in `fieldsV1`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// How a list merges: replaced whole, merged by key fields, or as a set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListType {
    Atomic,
    Map(Vec<String>),
    Set,
}

/// Where list merge semantics come from: a CRD's OpenAPI schema
/// (`x-kubernetes-list-type`), or the rules of the built-in kinds.
#[derive(Clone, Copy)]
pub(crate) struct Schema<'a> {
    crd: Option<&'a Value>,
}

fn keys(names: &[&str]) -> ListType {
    ListType::Map(names.iter().map(|s| s.to_string()).collect())
}

/// List types of the built-in kinds the emulator serves (the subset of
/// Kubernetes' `patchMergeKey`/`listMapKeys` that these kinds use).
fn builtin_list_type(names: &[String]) -> ListType {
    let n: Vec<&str> = names.iter().map(String::as_str).collect();
    match n.as_slice() {
        ["metadata", "finalizers"] => ListType::Set,
        ["metadata", "ownerReferences"] => keys(&["uid"]),
        [
            ..,
            "containers" | "initContainers" | "ephemeralContainers",
            "ports",
        ] => keys(&["containerPort", "protocol"]),
        ["spec", "ports"] => keys(&["port", "protocol"]),
        [
            ..,
            "containers" | "initContainers" | "ephemeralContainers" | "volumes" | "env",
        ] => keys(&["name"]),
        [.., "volumeMounts"] => keys(&["mountPath"]),
        [.., "conditions"] => keys(&["type"]),
        _ => ListType::Atomic,
    }
}

fn crd_node<'s>(schema: &'s Value, names: &[String]) -> Option<&'s Value> {
    let mut node = schema;
    for name in names {
        while node.get("type").and_then(Value::as_str) == Some("array") {
            node = node.get("items")?;
        }
        node = node
            .get("properties")
            .and_then(|p| p.get(name))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
    }
    Some(node)
}

impl<'a> Schema<'a> {
    pub fn builtin() -> Self {
        Schema { crd: None }
    }

    pub fn crd(schema: Option<&'a Value>) -> Self {
        Schema { crd: schema }
    }

    pub fn list_type(&self, names: &[String]) -> ListType {
        match self.crd {
            Some(schema) if names.first().is_none_or(|n| n != "metadata") => {
                let Some(node) = crd_node(schema, names) else {
                    return ListType::Atomic;
                };
                match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListType::Map(
                        node.get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|k| {
                                k.iter()
                                    .filter_map(|s| s.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    Some("set") => ListType::Set,
                    _ => ListType::Atomic,
                }
            }
            _ => builtin_list_type(names),
        }
    }
}

/// A set of field paths, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Reads a `fieldsV1` tree.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = Self::node_from(v);
        set.member = false;
        set
    }

    fn node_from(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(map) = v.as_object() {
            set.member = map.is_empty();
            for (k, child) in map {
                if k == "." {
                    set.member = true;
                } else {
                    set.children.insert(k.clone(), Self::node_from(child));
                }
            }
        }
        set
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), json!({}));
        }
        for (k, c) in &self.children {
            if !c.is_empty() {
                map.insert(k.clone(), c.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.children.get(first)?.node(rest),
        }
    }

    #[cfg(test)]
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// Whether the path or anything beneath it is a member.
    pub fn owns_within(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| !n.is_empty())
    }

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    /// Removes every member of `other`.
    pub fn subtract(&mut self, other: &FieldSet) {
        if other.member {
            self.member = false;
        }
        for (k, c) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                mine.subtract(c);
            }
        }
        self.children.retain(|_, c| !c.is_empty());
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path.
    pub fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    fn remove_child(&mut self, key: &str) {
        self.children.remove(key);
    }
}

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let obj = item.as_object()?;
    let mut key = Map::new();
    for k in keys {
        if let Some(v) = obj.get(k) {
            key.insert(k.clone(), v.clone());
        }
    }
    (!key.is_empty()).then(|| format!("k:{}", Value::Object(key)))
}

fn object_fields(
    map: &Map<String, Value>,
    schema: &Schema,
    names: &mut Vec<String>,
    set: &mut FieldSet,
) {
    for (k, v) in map {
        names.push(k.clone());
        let child = set.children.entry(format!("f:{k}")).or_default();
        value_fields(v, schema, names, child);
        names.pop();
    }
}

fn value_fields(v: &Value, schema: &Schema, names: &mut Vec<String>, node: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => object_fields(m, schema, names, node),
        Value::Array(items) if !items.is_empty() => match schema.list_type(names) {
            ListType::Map(keys) => {
                let item_keys: Option<Vec<String>> =
                    items.iter().map(|i| item_key(i, &keys)).collect();
                match item_keys {
                    Some(item_keys) => {
                        for (item, key) in items.iter().zip(item_keys) {
                            let child = node.children.entry(key).or_default();
                            child.member = true;
                            if let Some(m) = item.as_object() {
                                object_fields(m, schema, names, child);
                            }
                        }
                    }
                    // Items without their key fields cannot be told apart: own the list whole.
                    None => node.member = true,
                }
            }
            ListType::Set => {
                for item in items {
                    node.children.entry(format!("v:{item}")).or_default().member = true;
                }
            }
            ListType::Atomic => node.member = true,
        },
        _ => node.member = true,
    }
}

/// The fields an object sets (what an applied configuration claims).
pub(crate) fn fieldset_of(obj: &Value, schema: &Schema) -> FieldSet {
    let mut set = FieldSet::default();
    if let Some(map) = obj.as_object() {
        object_fields(map, schema, &mut Vec::new(), &mut set);
    }
    set
}

fn step<'v>(cur: &'v Value, el: &str) -> Option<&'v Value> {
    if let Some(f) = el.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array()?;
    let pos = position(items, el)?;
    items.get(pos)
}

fn position(items: &[Value], el: &str) -> Option<usize> {
    if let Some(k) = el.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .position(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(v) = el.strip_prefix("v:") {
        let val: Value = serde_json::from_str(v).ok()?;
        return items.iter().position(|i| *i == val);
    }
    let i: usize = el.strip_prefix("i:")?.parse().ok()?;
    (i < items.len()).then_some(i)
}

pub(crate) fn value_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(obj, |cur, el| step(cur, el))
}

fn value_at_mut<'v>(obj: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = obj;
    for el in path {
        cur = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)?
        } else {
            let items = cur.as_array_mut()?;
            let pos = position(items, el)?;
            items.get_mut(pos)?
        };
    }
    Some(cur)
}

pub(crate) fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(parent) = value_at_mut(obj, parent) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(map) = parent.as_object_mut() {
            map.remove(f);
        }
    } else if let Some(items) = parent.as_array_mut()
        && let Some(pos) = position(items, last)
    {
        items.remove(pos);
    }
}

fn is_item(path: &[String]) -> bool {
    path.last()
        .is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"))
}

/// Equal as the API server compares values: numbers by value, so `1` and
/// `1.0` are the same (a typed field decodes both alike, and JSON from YAML
/// tools often drops the `.0`).
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| same_value(a, b)))
        }
        _ => a == b,
    }
}

/// Member paths of `new` that `old` lacks or holds with another value. A
/// list item counts as changed only when it is added; its fields count apart.
pub(crate) fn changed_fields(old: &Value, new: &Value, schema: &Schema) -> FieldSet {
    let mut out = FieldSet::default();
    for path in fieldset_of(new, schema).paths() {
        let before = value_at(old, &path);
        let changed = if is_item(&path) {
            before.is_none()
        } else {
            !match (before, value_at(new, &path)) {
                (Some(a), Some(b)) => same_value(a, b),
                (a, b) => a == b,
            }
        };
        if changed {
            out.insert(&path);
        }
    }
    out
}

/// Member paths of `old` that `new` no longer has.
pub(crate) fn removed_fields(old: &Value, new: &Value, schema: &Schema) -> FieldSet {
    let mut out = FieldSet::default();
    for path in fieldset_of(old, schema).paths() {
        if value_at(new, &path).is_none() {
            out.insert(&path);
        }
    }
    out
}

/// Which part of an object a write may own: the main resource (without
/// `status` when the kind has a status subresource) or only `status`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scope {
    Main { status_reset: bool },
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Scope::Main { .. } => "",
            Scope::Status => "status",
        }
    }
}

/// Fields the server owns, never tracked per manager.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn normalize(set: &mut FieldSet, scope: Scope) {
    set.remove_child("f:apiVersion");
    set.remove_child("f:kind");
    if let Some(m) = set.children.get_mut("f:metadata") {
        for k in SERVER_METADATA {
            m.remove_child(&format!("f:{k}"));
        }
    }
    match scope {
        Scope::Main { status_reset: true } => set.remove_child("f:status"),
        Scope::Status => set.children.retain(|k, _| k == "f:status"),
        Scope::Main {
            status_reset: false,
        } => {}
    }
    set.children.retain(|_, c| !c.is_empty());
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

pub(crate) fn read_managed(obj: &Value) -> Vec<ManagedEntry> {
    let Some(entries) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    entries
        .iter()
        .map(|e| ManagedEntry {
            manager: text(e, "manager"),
            operation: text(e, "operation"),
            api_version: text(e, "apiVersion"),
            time: text(e, "time"),
            subresource: text(e, "subresource"),
            fields: e
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
        })
        .collect()
}

pub(crate) fn write_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let rendered: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": e.fields.to_fields_v1(),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if rendered.is_empty() {
        crate::meta::remove_meta(obj, "managedFields");
    } else {
        crate::meta::set_meta(obj, "managedFields", Value::Array(rendered));
    }
}

/// Who is writing, and where.
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub scope: Scope,
    pub time: &'a str,
}

fn entry_mut<'e>(
    entries: &'e mut Vec<ManagedEntry>,
    w: &Writer,
    operation: &str,
) -> &'e mut ManagedEntry {
    let subresource = w.scope.subresource();
    let pos = entries.iter().position(|e| {
        e.manager == w.manager && e.operation == operation && e.subresource == subresource
    });
    let pos = match pos {
        Some(p) => p,
        None => {
            entries.push(ManagedEntry {
                manager: w.manager.to_string(),
                operation: operation.to_string(),
                api_version: w.api_version.to_string(),
                time: w.time.to_string(),
                subresource: subresource.to_string(),
                fields: FieldSet::default(),
            });
            entries.len() - 1
        }
    };
    let e = &mut entries[pos];
    e.api_version = w.api_version.to_string();
    e.time = w.time.to_string();
    e
}

/// Records a non-apply write (create, update, patch): the writer takes the
/// fields it changed from everyone else; removed fields lose their owners.
pub(crate) fn record_update(
    entries: &mut Vec<ManagedEntry>,
    old: &Value,
    new: &Value,
    writer: &Writer,
    schema: &Schema,
) {
    let mut changed = changed_fields(old, new, schema);
    normalize(&mut changed, writer.scope);
    let removed = removed_fields(old, new, schema);
    for e in entries.iter_mut() {
        e.fields.subtract(&removed);
        e.fields.subtract(&changed);
    }
    if !changed.is_empty() {
        entry_mut(entries, writer, "Update").fields.union(&changed);
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// A manager owning fields an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conflict {
    pub manager: String,
    /// The manager as the API server names it in messages (`"m" using v1 at …`).
    pub description: String,
    pub fields: Vec<String>,
}

fn describe_manager(e: &ManagedEntry) -> String {
    let mut out = format!("{:?}", e.manager);
    if !e.subresource.is_empty() {
        out.push_str(&format!(" with subresource {:?}", e.subresource));
    }
    if e.operation == "Update" {
        out.push_str(&format!(" using {}", e.api_version));
        if !e.time.is_empty() {
            out.push_str(&format!(" at {}", e.time));
        }
    }
    out
}

/// Renders a path as the API server does in conflict messages (`.spec.x[name="a"].y`).
pub(crate) fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(f) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = el.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// Merges an applied configuration into an object: maps recursively, keyed
/// lists item by item, sets as unions, everything else replaced.
pub(crate) fn merge_applied(
    cur: &mut Value,
    applied: &Value,
    schema: &Schema,
    names: &mut Vec<String>,
) {
    let (Some(c), Some(a)) = (cur.as_object_mut(), applied.as_object()) else {
        *cur = applied.clone();
        return;
    };
    for (k, av) in a {
        if av.is_null() {
            c.remove(k);
            continue;
        }
        names.push(k.clone());
        let list_type = if av.is_array() {
            schema.list_type(names)
        } else {
            ListType::Atomic
        };
        match (c.get_mut(k), av) {
            (Some(cv @ Value::Object(_)), Value::Object(_)) => merge_applied(cv, av, schema, names),
            (Some(Value::Array(items)), Value::Array(applied_items))
                if list_type != ListType::Atomic =>
            {
                for ai in applied_items {
                    let existing = match &list_type {
                        ListType::Map(keys) => {
                            item_key(ai, keys).and_then(|key| position(items, &key))
                        }
                        _ => items.iter().position(|i| i == ai),
                    };
                    match existing {
                        Some(pos) if matches!(list_type, ListType::Map(_)) => {
                            merge_applied(&mut items[pos], ai, schema, names)
                        }
                        Some(_) => {}
                        None => items.push(ai.clone()),
                    }
                }
            }
            _ => {
                c.insert(k.clone(), av.clone());
            }
        }
        names.pop();
    }
}

/// Server-side apply of `applied` onto `current` by `writer`. Returns the
/// merged object, or the conflicts when another manager owns a field the
/// apply would change and `force` is not set.
pub(crate) fn apply(
    current: &Value,
    applied: &Value,
    entries: &mut Vec<ManagedEntry>,
    writer: &Writer,
    force: bool,
    schema: &Schema,
) -> Result<Value, Vec<Conflict>> {
    let mut config = applied.clone();
    if let Some(map) = config.as_object_mut() {
        match writer.scope {
            Scope::Main { status_reset: true } => {
                map.remove("status");
            }
            Scope::Status => map.retain(|k, _| k == "status"),
            Scope::Main {
                status_reset: false,
            } => {}
        }
        if let Some(Value::Object(m)) = map.get_mut("metadata") {
            for k in SERVER_METADATA
                .iter()
                .filter(|k| !matches!(**k, "name" | "namespace"))
            {
                m.remove(*k);
            }
        }
    }
    let mut applied_set = fieldset_of(&config, schema);
    normalize(&mut applied_set, writer.scope);

    let mut merged = current.clone();
    merge_applied(&mut merged, &config, schema, &mut Vec::new());
    let mut changed = changed_fields(current, &merged, schema);
    normalize(&mut changed, writer.scope);

    let conflicts: Vec<Conflict> = entries
        .iter()
        .filter(|e| e.manager != writer.manager)
        .filter_map(|e| {
            let owned = changed.intersection(&e.fields);
            (!owned.is_empty()).then(|| Conflict {
                manager: e.manager.clone(),
                description: describe_manager(e),
                fields: owned.paths().iter().map(|p| render_path(p)).collect(),
            })
        })
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in entries.iter_mut().filter(|e| e.manager != writer.manager) {
        e.fields.subtract(&changed);
    }

    let previous = entries
        .iter()
        .find(|e| {
            e.manager == writer.manager
                && e.operation == "Apply"
                && e.subresource == writer.scope.subresource()
        })
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut dropped = previous;
    dropped.subtract(&applied_set);
    let mut others = FieldSet::default();
    for e in entries.iter().filter(|e| {
        !(e.manager == writer.manager
            && e.operation == "Apply"
            && e.subresource == writer.scope.subresource())
    }) {
        others.union(&e.fields);
    }
    // Parents before children: once an item or map goes, its fields go with it.
    let mut removed: Vec<Vec<String>> = Vec::new();
    for path in dropped.paths() {
        if removed.iter().any(|r| path.starts_with(r)) || others.owns_within(&path) {
            continue;
        }
        remove_at(&mut merged, &path);
        removed.push(path);
    }

    entry_mut(entries, writer, "Apply").fields = applied_set;
    entries.retain(|e| !e.fields.is_empty());
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager,
            api_version: "v1",
            scope: Scope::Main {
                status_reset: false,
            },
            time: "2025-01-01T00:00:00Z",
        }
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}
        });
        let set = FieldSet::from_fields_v1(&v);
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.contains(&path(&["f:metadata", "f:labels", "f:app"])));
        assert!(!set.contains(&path(&["f:metadata", "f:labels"])));
        assert!(set.contains(&path(&["f:spec", "f:containers", "k:{\"name\":\"c\"}"])));
    }

    #[test]
    fn fieldset_of_keyed_lists_and_sets() {
        let obj = json!({
            "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}, "args": [1, 2]}
        });
        let set = fieldset_of(&obj, &Schema::builtin());
        let paths: Vec<String> = set.paths().iter().map(|p| render_path(p)).collect();
        assert!(paths.contains(&".metadata.finalizers[=\"a\"]".to_string()));
        assert!(paths.contains(&".spec.template.spec.containers[name=\"c\"].image".to_string()));
        assert!(paths.contains(&".spec.args".to_string()));
        assert!(paths.contains(&".metadata.labels.x".to_string()));
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let schema = Schema::builtin();
        let mut entries = Vec::new();
        let empty = json!({"metadata": {"name": "x"}});
        let first = json!({"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}});
        let obj = apply(&empty, &first, &mut entries, &writer("one"), false, &schema).unwrap();
        assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));

        // Same value: shared ownership, no conflict.
        let same = json!({"metadata": {"name": "x"}, "data": {"a": "1"}});
        let obj = apply(&obj, &same, &mut entries, &writer("two"), false, &schema).unwrap();

        let other = json!({"metadata": {"name": "x"}, "data": {"b": "3"}});
        let err = apply(&obj, &other, &mut entries, &writer("two"), false, &schema).unwrap_err();
        assert_eq!(err[0].manager, "one");
        assert_eq!(err[0].fields, vec![".data.b".to_string()]);

        let obj = apply(&obj, &other, &mut entries, &writer("two"), true, &schema).unwrap();
        assert_eq!(obj["data"]["b"], "3");
        let one = entries.iter().find(|e| e.manager == "one").unwrap();
        assert!(!one.fields.contains(&path(&["f:data", "f:b"])));

        // "one" stops applying a, which nobody else owns any more: it goes.
        let only_c = json!({"metadata": {"name": "x"}, "data": {"c": "4"}});
        let obj = apply(&obj, &only_c, &mut entries, &writer("one"), false, &schema).unwrap();
        assert_eq!(obj["data"], json!({"b": "3", "c": "4"}));
        let obj = apply(
            &obj,
            &json!({"metadata": {"name": "x"}}),
            &mut entries,
            &writer("two"),
            false,
            &schema,
        )
        .unwrap();
        assert_eq!(obj["data"], json!({"c": "4"}));
    }

    #[test]
    fn equal_values_are_co_owned_whatever_their_number_form() {
        assert!(same_value(
            &json!({"m": [1, 2.5]}),
            &json!({"m": [1.0, 2.5]})
        ));
        assert!(!same_value(&json!(1), &json!(1.5)));
        assert!(!same_value(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!same_value(&json!(u64::MAX), &json!(-1)));
        let schema = Schema::builtin();
        let mut entries = Vec::new();
        let first = json!({"spec": {"versions": [{"name": "v1", "maximum": 100.0}]}});
        let obj = apply(
            &json!({}),
            &first,
            &mut entries,
            &writer("one"),
            false,
            &schema,
        )
        .unwrap();
        let same = json!({"spec": {"versions": [{"name": "v1", "maximum": 100}]}});
        apply(&obj, &same, &mut entries, &writer("two"), false, &schema).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(
            entries
                .iter()
                .all(|e| e.fields.contains(&path(&["f:spec", "f:versions"])))
        );
        let other = json!({"spec": {"versions": [{"name": "v1", "maximum": 99}]}});
        let err = apply(&obj, &other, &mut entries, &writer("three"), false, &schema).unwrap_err();
        let managers: Vec<&str> = err.iter().map(|c| c.manager.as_str()).collect();
        assert_eq!(managers, ["one", "two"]);
    }

    #[test]
    fn updates_take_ownership() {
        let schema = Schema::builtin();
        let mut entries = Vec::new();
        let empty = json!({});
        let applied = json!({"data": {"a": "1"}});
        let obj = apply(
            &empty,
            &applied,
            &mut entries,
            &writer("applier"),
            false,
            &schema,
        )
        .unwrap();
        let mut edited = obj.clone();
        edited["data"]["a"] = json!("2");
        record_update(&mut entries, &obj, &edited, &writer("editor"), &schema);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].manager, "editor");
        let err = apply(
            &edited,
            &applied,
            &mut entries,
            &writer("applier"),
            false,
            &schema,
        )
        .unwrap_err();
        assert_eq!(err[0].manager, "editor");
    }

    #[test]
    fn keyed_list_items_merge_and_drop() {
        let schema = Schema::builtin();
        let mut entries = Vec::new();
        let two = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let obj = apply(&json!({}), &two, &mut entries, &writer("m"), false, &schema).unwrap();
        let one = json!({"spec": {"containers": [{"name": "b", "image": "3"}]}});
        let obj = apply(&obj, &one, &mut entries, &writer("m"), false, &schema).unwrap();
        assert_eq!(
            obj["spec"]["containers"],
            json!([{"name": "b", "image": "3"}])
        );
    }

    #[test]
    fn status_scope_only_owns_status() {
        let schema = Schema::builtin();
        let mut entries = Vec::new();
        let w = Writer {
            scope: Scope::Status,
            ..writer("ctl")
        };
        let current = json!({"spec": {"a": 1}});
        let obj = apply(
            &current,
            &json!({"spec": {"a": 2}, "status": {"ok": true}}),
            &mut entries,
            &w,
            false,
            &schema,
        )
        .unwrap();
        assert_eq!(obj, json!({"spec": {"a": 1}, "status": {"ok": true}}));
        assert_eq!(entries[0].subresource, "status");
    }

    #[test]
    fn crd_schema_list_types() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "rings": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"tags": {"type": "array", "x-kubernetes-list-type": "set"}}}}
        }}}});
        let schema = Schema::crd(Some(&s));
        assert_eq!(
            schema.list_type(&path(&["spec", "rings"])),
            ListType::Map(vec!["name".into()])
        );
        assert_eq!(
            schema.list_type(&path(&["spec", "rings", "tags"])),
            ListType::Set
        );
        assert_eq!(
            schema.list_type(&path(&["spec", "other"])),
            ListType::Atomic
        );
        assert_eq!(
            schema.list_type(&path(&["metadata", "finalizers"])),
            ListType::Set
        );
    }
}
