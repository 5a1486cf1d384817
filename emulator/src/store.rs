//! Objects, the cluster-wide resourceVersion, and the event history watches replay.
//!
//! One mutex guards all objects; it is held only for map operations and
//! never across an `await`. Objects are immutable once stored (`Arc`), so
//! reads clone pointers, and each object's JSON is rendered at most once
//! however many watchers and readers ask for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::meta;

/// A stored object and its JSON rendering, computed on first use.
#[derive(Debug)]
pub(crate) struct StoredObject {
    value: Value,
    json: OnceLock<Bytes>,
}

impl StoredObject {
    pub fn new(value: Value) -> Self {
        StoredObject {
            value,
            json: OnceLock::new(),
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            // Serialising a `Value` cannot fail: its keys are strings.
            Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default())
        })
    }

    pub fn rv(&self) -> u64 {
        meta::resource_version(&self.value)
    }
}

pub(crate) type ObjRef = Arc<StoredObject>;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub(crate) type Key = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub(crate) struct StoreEvent {
    pub rv: u64,
    pub kind: EventType,
    pub resource: String,
    pub object: ObjRef,
    /// The object before the change (for MODIFIED and DELETED).
    pub previous: Option<ObjRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    NotFound,
    AlreadyExists,
    /// The object's resourceVersion is not the one the caller based its change on.
    Stale,
    NamespaceMissing,
    NamespaceTerminating,
}

/// The requested resourceVersion is older than the retained history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expired;

pub(crate) struct ListPage {
    pub items: Vec<ObjRef>,
    pub rv: u64,
    /// Key of the last returned item when more remain.
    pub next: Option<Key>,
}

/// What a new watch starts from.
pub(crate) struct Subscription {
    /// Current objects, when the watch asked for no resourceVersion.
    pub initial: Vec<ObjRef>,
    /// Retained events after the requested resourceVersion.
    pub backlog: Vec<Arc<StoreEvent>>,
    pub receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pub rv: u64,
}

struct Inner {
    rv: u64,
    buckets: HashMap<String, BTreeMap<Key, ObjRef>>,
    history: VecDeque<Arc<StoreEvent>>,
    /// Highest resourceVersion whose event is no longer retained.
    compacted: u64,
}

pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoreEvent>>,
    history_limit: usize,
}

fn range<'a, V>(
    bucket: &'a BTreeMap<Key, V>,
    namespace: Option<&'a str>,
    after: Option<&Key>,
) -> impl Iterator<Item = (&'a Key, &'a V)> + 'a {
    let start = match (namespace, after) {
        (_, Some(after)) => Bound::Excluded(after.clone()),
        (Some(ns), None) => Bound::Included((ns.to_string(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    bucket
        .range((start, Bound::Unbounded))
        .take_while(move |(k, _)| namespace.is_none_or(|ns| k.0 == ns))
}

fn page<'a>(
    entries: impl Iterator<Item = (&'a Key, &'a ObjRef)>,
    limit: Option<usize>,
    filter: &dyn Fn(&Value) -> bool,
) -> (Vec<ObjRef>, Option<Key>) {
    let mut items = Vec::new();
    let mut entries = entries.peekable();
    while let Some((k, o)) = entries.next() {
        if !filter(o.value()) {
            continue;
        }
        items.push(o.clone());
        if limit.is_some_and(|l| items.len() >= l) {
            let more = entries.any(|(_, o)| filter(o.value()));
            return (items, more.then(|| k.clone()));
        }
    }
    (items, None)
}

impl Store {
    pub fn new(history_limit: usize, watch_buffer: usize) -> Self {
        let (events, _) = broadcast::channel(watch_buffer.max(16));
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                buckets: HashMap::new(),
                history: VecDeque::new(),
                compacted: 1,
            }),
            events,
            history_limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, resource: &str, key: &Key) -> Option<ObjRef> {
        self.lock().buckets.get(resource)?.get(key).cloned()
    }

    fn record(&self, inner: &mut Inner, event: StoreEvent) {
        let event = Arc::new(event);
        inner.history.push_back(event.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        if inner.history.is_empty() {
            inner.compacted = inner.rv;
        }
        // No receivers is not an error: nobody is watching.
        let _ = self.events.send(event);
    }

    fn stamp(inner: &mut Inner, mut value: Value) -> (u64, ObjRef) {
        inner.rv += 1;
        let rv = inner.rv;
        meta::set_meta(&mut value, "resourceVersion", json!(rv.to_string()));
        (rv, Arc::new(StoredObject::new(value)))
    }

    fn check_namespace(inner: &Inner, namespace: &str) -> Result<(), StoreError> {
        let ns = inner
            .buckets
            .get("namespaces")
            .and_then(|b| b.get(&(String::new(), namespace.to_string())))
            .ok_or(StoreError::NamespaceMissing)?;
        if meta::is_terminating(ns.value()) {
            return Err(StoreError::NamespaceTerminating);
        }
        Ok(())
    }

    /// Stores a new object; a namespaced one needs its namespace to exist and not be terminating.
    pub fn create(&self, resource: &str, key: Key, value: Value) -> Result<ObjRef, StoreError> {
        let mut inner = self.lock();
        if !key.0.is_empty() {
            Self::check_namespace(&inner, &key.0)?;
        }
        if inner
            .buckets
            .get(resource)
            .is_some_and(|b| b.contains_key(&key))
        {
            return Err(StoreError::AlreadyExists);
        }
        let (rv, obj) = Self::stamp(&mut inner, value);
        inner
            .buckets
            .entry(resource.to_string())
            .or_default()
            .insert(key, obj.clone());
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                kind: EventType::Added,
                resource: resource.to_string(),
                object: obj.clone(),
                previous: None,
            },
        );
        Ok(obj)
    }

    /// Replaces an object, provided it is still at `expected_rv`.
    pub fn update(
        &self,
        resource: &str,
        key: &Key,
        expected_rv: u64,
        value: Value,
    ) -> Result<ObjRef, StoreError> {
        let mut inner = self.lock();
        let previous = inner
            .buckets
            .get(resource)
            .and_then(|b| b.get(key))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if previous.rv() != expected_rv {
            return Err(StoreError::Stale);
        }
        let (rv, obj) = Self::stamp(&mut inner, value);
        if let Some(bucket) = inner.buckets.get_mut(resource) {
            bucket.insert(key.clone(), obj.clone());
        }
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                kind: EventType::Modified,
                resource: resource.to_string(),
                object: obj.clone(),
                previous: Some(previous),
            },
        );
        Ok(obj)
    }

    /// Removes an object, provided it is still at `expected_rv`. `last_state`
    /// is what the DELETED event carries (the stored object when `None`).
    pub fn delete(
        &self,
        resource: &str,
        key: &Key,
        expected_rv: u64,
        last_state: Option<Value>,
    ) -> Result<ObjRef, StoreError> {
        let mut inner = self.lock();
        let previous = inner
            .buckets
            .get(resource)
            .and_then(|b| b.get(key))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if previous.rv() != expected_rv {
            return Err(StoreError::Stale);
        }
        if let Some(bucket) = inner.buckets.get_mut(resource) {
            bucket.remove(key);
        }
        let value = last_state.unwrap_or_else(|| previous.value().clone());
        let (rv, obj) = Self::stamp(&mut inner, value);
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                kind: EventType::Deleted,
                resource: resource.to_string(),
                object: obj.clone(),
                previous: Some(previous),
            },
        );
        Ok(obj)
    }

    /// The current objects, optionally one namespace, in key order.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        after: Option<&Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> ListPage {
        let inner = self.lock();
        let rv = inner.rv;
        let Some(bucket) = inner.buckets.get(resource) else {
            return ListPage {
                items: Vec::new(),
                rv,
                next: None,
            };
        };
        let (items, next) = page(range(bucket, namespace, after), limit, filter);
        ListPage { items, rv, next }
    }

    /// The objects as they were at `rv`, rebuilt by undoing later events.
    pub fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: u64,
        after: Option<&Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Result<ListPage, Expired> {
        let inner = self.lock();
        if rv < inner.compacted {
            return Err(Expired);
        }
        // What each key changed since `rv` held then (None: absent), from the first event
        // after `rv`; every other key holds now what it held then. So a page costs the
        // events since `rv` plus the page, as etcd's range at a revision does, not a copy
        // of the whole resource.
        let first_after = inner.history.partition_point(|e| e.rv <= rv);
        let mut then: BTreeMap<Key, Option<ObjRef>> = BTreeMap::new();
        for event in inner.history.range(first_after..) {
            let obj = event.object.value();
            if event.resource != resource || namespace.is_some_and(|ns| ns != meta::namespace(obj))
            {
                continue;
            }
            let key = (
                meta::namespace(obj).to_string(),
                meta::name(obj).to_string(),
            );
            let held = match (&event.kind, &event.previous) {
                (EventType::Added, _) => None,
                (_, Some(previous)) => Some(previous.clone()),
                (_, None) => continue,
            };
            then.entry(key).or_insert(held);
        }
        let empty = BTreeMap::new();
        let bucket = inner.buckets.get(resource).unwrap_or(&empty);
        let mut now = range(bucket, namespace, after).peekable();
        let mut changed = range(&then, namespace, after).peekable();
        let merged = std::iter::from_fn(move || {
            loop {
                let order = match (now.peek(), changed.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some((a, _)), Some((b, _))) => a.cmp(b),
                };
                // A key changed since `rv` is taken from what it held then.
                if order == std::cmp::Ordering::Equal {
                    now.next();
                }
                let take_now = order == std::cmp::Ordering::Less;
                if take_now {
                    return now.next();
                }
                if let Some((key, Some(held))) = changed.next() {
                    return Some((key, held));
                }
            }
        });
        let (items, next) = page(merged, limit, filter);
        Ok(ListPage {
            items,
            rv: rv.min(inner.rv),
            next,
        })
    }

    /// Starts a watch: from `from` (events after it), or from the current
    /// objects when `from` is `None`. The receiver sees every later event.
    pub fn subscribe(
        &self,
        resource: &str,
        namespace: Option<&str>,
        from: Option<u64>,
    ) -> Result<Subscription, Expired> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        match from {
            None => {
                let initial = inner
                    .buckets
                    .get(resource)
                    .map(|b| range(b, namespace, None).map(|(_, o)| o.clone()).collect())
                    .unwrap_or_default();
                Ok(Subscription {
                    initial,
                    backlog: Vec::new(),
                    receiver,
                    rv: inner.rv,
                })
            }
            Some(from) if from < inner.compacted => Err(Expired),
            Some(from) => {
                let start = inner.history.partition_point(|e| e.rv <= from);
                let backlog = inner
                    .history
                    .range(start..)
                    .filter(|e| e.resource == resource)
                    .cloned()
                    .collect();
                Ok(Subscription {
                    initial: Vec::new(),
                    backlog,
                    receiver,
                    rv: inner.rv,
                })
            }
        }
    }

    /// Every stored object with its resource, for garbage collection.
    pub fn all_objects(&self) -> Vec<(String, ObjRef)> {
        let inner = self.lock();
        inner
            .buckets
            .iter()
            .flat_map(|(r, b)| b.values().map(move |o| (r.clone(), o.clone())))
            .collect()
    }

    pub fn count(&self, resource: &str) -> usize {
        self.lock().buckets.get(resource).map_or(0, BTreeMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(ns: &str, name: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name}})
    }

    fn key(ns: &str, name: &str) -> Key {
        (ns.to_string(), name.to_string())
    }

    fn store_with_namespace(limit: usize) -> Store {
        let s = Store::new(limit, 64);
        s.create(
            "namespaces",
            key("", "a"),
            json!({"metadata": {"name": "a"}}),
        )
        .unwrap();
        s
    }

    #[test]
    fn writes_check_namespace_and_resource_version() {
        let s = store_with_namespace(100);
        assert_eq!(
            s.create("configmaps", key("b", "x"), cm("b", "x"))
                .unwrap_err(),
            StoreError::NamespaceMissing
        );
        let first = s.create("configmaps", key("a", "x"), cm("a", "x")).unwrap();
        assert_eq!(
            s.create("configmaps", key("a", "x"), cm("a", "x"))
                .unwrap_err(),
            StoreError::AlreadyExists
        );
        assert_eq!(
            s.update("configmaps", &key("a", "x"), first.rv() - 1, cm("a", "x"))
                .unwrap_err(),
            StoreError::Stale
        );
        let second = s
            .update("configmaps", &key("a", "x"), first.rv(), cm("a", "x"))
            .unwrap();
        assert!(second.rv() > first.rv());
    }

    #[test]
    fn list_at_rebuilds_past_state_and_expires() {
        let s = store_with_namespace(3);
        let a = s.create("configmaps", key("a", "1"), cm("a", "1")).unwrap();
        let b = s.create("configmaps", key("a", "2"), cm("a", "2")).unwrap();
        s.delete("configmaps", &key("a", "1"), a.rv(), None)
            .unwrap();
        let now = s.list("configmaps", Some("a"), None, None, &|_| true);
        assert_eq!(now.items.len(), 1);
        let then = s
            .list_at("configmaps", Some("a"), b.rv(), None, None, &|_| true)
            .unwrap();
        assert_eq!(then.items.len(), 2);
        s.create("configmaps", key("a", "3"), cm("a", "3")).unwrap();
        assert!(
            s.list_at("configmaps", None, a.rv() - 1, None, None, &|_| true)
                .is_err()
        );
    }

    #[test]
    fn pages_at_a_past_version_show_exactly_that_version() {
        let s = store_with_namespace(100);
        let mut held = Vec::new();
        for i in 0..6 {
            let name = i.to_string();
            held.push(
                s.create("configmaps", key("a", &name), cm("a", &name))
                    .unwrap(),
            );
        }
        let at = held[5].rv();
        let mut changed = cm("a", "2");
        changed["data"] = json!({"v": "changed"});
        s.update("configmaps", &key("a", "2"), held[2].rv(), changed)
            .unwrap();
        s.delete("configmaps", &key("a", "3"), held[3].rv(), None)
            .unwrap();
        s.create("configmaps", key("a", "25"), cm("a", "25"))
            .unwrap();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .list_at("configmaps", None, at, after.as_ref(), Some(2), &|_| true)
                .unwrap();
            seen.extend(page.items.iter().map(|o| o.value().clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let want: Vec<Value> = held.iter().map(|o| o.value().clone()).collect();
        assert_eq!(
            seen, want,
            "as it was: before the update, the delete and the create"
        );
    }

    #[test]
    fn pages_carry_the_last_key() {
        let s = store_with_namespace(100);
        for i in 0..5 {
            s.create(
                "configmaps",
                key("a", &i.to_string()),
                cm("a", &i.to_string()),
            )
            .unwrap();
        }
        let p = s.list("configmaps", None, None, Some(2), &|_| true);
        assert_eq!(p.items.len(), 2);
        let next = p.next.unwrap();
        let p2 = s.list("configmaps", None, Some(&next), Some(10), &|_| true);
        assert_eq!(p2.items.len(), 3);
        assert!(p2.next.is_none());
    }
}
