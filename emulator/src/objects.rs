//! What happens to an object on create, update, patch and delete: server
//! metadata, generation, status subresource rules, field ownership,
//! admission, finalizers, and garbage collection of dependents, namespace
//! contents and custom resources of a deleted CRD.
//!
//! Writes are optimistic: read the current object, compute the new one
//! without holding the store lock, commit if the object did not change in
//! between, and otherwise start again (or answer 409 when the client named
//! the resourceVersion it based its change on).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::admission::{self, AdmissionHook};
use crate::convert;
use crate::fields::{self, ManagedEntry, Schema, Scope, Writer};
use crate::limits;
use crate::meta;
use crate::patch::{self, PatchError, PatchType};
use crate::registry::{Registry, ResourceType, resource_from_crd};
use crate::status::ApiError;
use crate::store::{Key, ObjRef, Store, StoreError, StoredObject};

const CRD_BUCKET: &str = "customresourcedefinitions.apiextensions.k8s.io";
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// The resource and version a request addresses, and its namespace ("" when cluster-scoped).
#[derive(Clone)]
pub(crate) struct Target {
    /// The resource whose objects are stored and written.
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: String,
    /// The resource the client addresses, when it shows `rt`'s objects in another form.
    pub view: Option<Arc<ResourceType>>,
}

impl Target {
    /// The target for requests to `rt`, resolving resources stored as another one.
    pub fn new(registry: &Registry, rt: Arc<ResourceType>, version: &str, namespace: &str) -> Self {
        match rt.stored_as.and_then(|core| registry.by_key(core)) {
            Some(stored) => Target {
                version: stored.preferred_version().to_string(),
                rt: stored,
                namespace: namespace.to_string(),
                view: Some(rt),
            },
            None => Target {
                rt,
                version: version.to_string(),
                namespace: namespace.to_string(),
                view: None,
            },
        }
    }

    /// A client's object in stored form.
    fn inbound(&self, obj: Value) -> Value {
        match &self.view {
            Some(_) => convert::event_to_core(obj),
            None => obj,
        }
    }

    /// A stored object in the client's form.
    fn outbound(&self, obj: &Value) -> Value {
        match &self.view {
            Some(_) => convert::event_from_core(obj),
            None => obj.clone(),
        }
    }

    fn key(&self, name: &str) -> Key {
        (self.namespace.clone(), name.to_string())
    }

    fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.plural, name)
    }

    fn stale(&self, name: &str) -> ApiError {
        ApiError::stale(&self.rt.group, &self.rt.plural, name)
    }

    fn schema(&self) -> Schema<'_> {
        if self.rt.is_custom() {
            Schema::crd(self.rt.schema(&self.version).or(Some(&Value::Null)))
        } else {
            Schema::builtin()
        }
    }

    fn scope(&self, status: bool) -> Scope {
        if status {
            Scope::Status
        } else {
            Scope::Main {
                status_reset: self.rt.status_subresource,
            }
        }
    }
}

/// Options every write carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOptions {
    pub field_manager: Option<String>,
    /// The manager named after the client's User-Agent, when `fieldManager` is absent.
    pub default_manager: String,
    pub force: bool,
    pub dry_run: bool,
}

impl WriteOptions {
    fn manager(&self) -> &str {
        self.field_manager
            .as_deref()
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.default_manager)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone)]
pub(crate) struct DeleteOptions {
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions {
            propagation: Propagation::Background,
            uid: None,
            resource_version: None,
            dry_run: false,
        }
    }
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body and query parameters (the body wins).
    pub fn parse(body: &[u8], query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let mut opts = DeleteOptions::default();
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        let policy = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or(query.get("propagationPolicy").map(String::as_str));
        let orphan = body
            .get("orphanDependents")
            .and_then(Value::as_bool)
            .or(query.get("orphanDependents").map(|v| v == "true"));
        opts.propagation = match (policy, orphan) {
            (Some("Foreground"), _) => Propagation::Foreground,
            (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
            (Some("Background") | None, _) => Propagation::Background,
            (Some(other), _) => {
                return Err(ApiError::new(
                    422,
                    format!("propagationPolicy: Unsupported value: {other:?}"),
                ));
            }
        };
        let text = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        opts.uid = text("/preconditions/uid");
        opts.resource_version = text("/preconditions/resourceVersion");
        opts.dry_run = body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
            || query.contains_key("dryRun");
        Ok(opts)
    }
}

/// How a write's managed fields are decided.
enum Ownership<'a> {
    /// A create, update or patch by this manager.
    Update(&'a str),
    /// Computed by server-side apply.
    Applied(Vec<ManagedEntry>),
}

/// The object logic shared by all handlers.
pub(crate) struct Objects {
    pub store: Store,
    pub registry: Registry,
    pub admission: Option<AdmissionHook>,
}

fn store_error(t: &Target, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => t.not_found(name),
        StoreError::AlreadyExists => ApiError::already_exists(&t.rt.group, &t.rt.plural, name),
        StoreError::Stale => t.stale(name),
        StoreError::NamespaceMissing => ApiError::namespace_not_found(&t.namespace),
        StoreError::NamespaceTerminating => ApiError::forbidden(
            &t.rt.group,
            &t.rt.plural,
            name,
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                crate::status::group_resource(&t.rt.group, &t.rt.plural),
                t.namespace
            ),
        ),
    }
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::Failed(m) => ApiError::new(422, m),
    }
}

/// Equal maps, ignoring the keys `skip` names and comparing values with `same`.
fn same_map(
    a: &Value,
    b: &Value,
    skip: &[&str],
    same: impl Fn(&str, &Value, &Value) -> bool,
) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept = |m: &'_ Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !skip.contains(&k.as_str()))
            .all(|(k, av)| b.get(k).is_some_and(|bv| same(k, av, bv)))
}

/// Whether a write changes nothing but what a no-op still touches: the
/// resourceVersion and managedFields timestamps.
fn unchanged(current: &Value, new: &Value) -> bool {
    same_map(current, new, &[], |k, a, b| match k {
        "metadata" => same_map(a, b, &["resourceVersion"], |k, a, b| match (k, a, b) {
            ("managedFields", Value::Array(x), Value::Array(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|(e, f)| same_map(e, f, &["time"], |_, a, b| a == b))
            }
            _ => fields::same_value(a, b),
        }),
        _ => fields::same_value(a, b),
    })
}

/// An object whose deletion completed: marked, and without finalizers.
fn is_removed(obj: &Value) -> bool {
    meta::is_terminating(obj) && meta::finalizers(obj).is_empty()
}

/// Top-level fields other than `metadata` (and `status` when it is a subresource) differ.
fn spec_changed(old: &Value, new: &Value, ignore_status: bool) -> bool {
    let skip: &[&str] = if ignore_status {
        &["metadata", "apiVersion", "kind", "status"]
    } else {
        &["metadata", "apiVersion", "kind"]
    };
    !same_map(old, new, skip, |_, a, b| a == b)
}

fn crd_status(crd: &Value, previous: Option<&Value>) -> Value {
    let now = meta::now_rfc3339();
    let mut names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(n) = names.as_object_mut() {
        let kind = n
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        n.entry("singular")
            .or_insert_with(|| json!(kind.to_lowercase()));
        n.entry("listKind")
            .or_insert_with(|| json!(format!("{kind}List")));
    }
    let storage: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut stored: Vec<Value> = previous
        .and_then(|p| p.get("storedVersions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in storage {
        if !stored.contains(&v) {
            stored.push(v);
        }
    }
    let conditions = previous
        .and_then(|p| p.get("conditions"))
        .cloned()
        .unwrap_or_else(|| {
            json!([
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": now}
            ])
        });
    json!({"conditions": conditions, "acceptedNames": names, "storedVersions": stored})
}

fn convert_string_data(obj: &mut Value) {
    use base64::Engine as _;
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let Some(Value::Object(string_data)) = map.remove("stringData") else {
        return;
    };
    let data = map.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

fn set_top(obj: &mut Value, key: &str, value: Option<Value>) {
    if let Some(map) = obj.as_object_mut() {
        match value {
            Some(v) => {
                map.insert(key.to_string(), v);
            }
            None => {
                map.remove(key);
            }
        }
    }
}

impl Objects {
    pub fn get(&self, t: &Target, name: &str) -> Result<ObjRef, ApiError> {
        self.store
            .get(&t.rt.bucket(), &t.key(name))
            .ok_or_else(|| t.not_found(name))
    }

    /// The object as a client of `version` sees it.
    pub fn present(rt: &ResourceType, version: &str, obj: &ObjRef) -> ObjRef {
        if rt.stored_as.is_some() {
            return Arc::new(StoredObject::new(convert::event_from_core(obj.value())));
        }
        let api_version = rt.api_version(version);
        if obj.value().get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str()) {
            return obj.clone();
        }
        let mut v = obj.value().clone();
        set_top(&mut v, "apiVersion", Some(json!(api_version)));
        Arc::new(StoredObject::new(v))
    }

    /// CRD defaults and the admission hook, for custom resources.
    fn admit(&self, t: &Target, obj: &mut Value) -> Result<(), ApiError> {
        let Some(crd) = t.rt.crd.as_deref() else {
            return Ok(());
        };
        if let Some(schema) = t.rt.schema(&t.version) {
            admission::apply_defaults(schema, obj);
        }
        if let Some(hook) = &self.admission {
            let violations = hook(crd, &t.version, obj);
            if !violations.is_empty() {
                return Err(admission::rejection(
                    &t.rt.group,
                    &t.rt.kind,
                    meta::name(obj),
                    &violations,
                ));
            }
        }
        Ok(())
    }

    /// Kind-specific rules of built-in kinds, for a new or changed object.
    fn prepare_kind(
        &self,
        t: &Target,
        obj: &mut Value,
        previous: Option<&Value>,
    ) -> Result<(), ApiError> {
        match (t.rt.group.as_str(), t.rt.plural.as_str()) {
            ("", "namespaces") => {
                let status = previous
                    .and_then(|p| p.get("status").cloned())
                    .unwrap_or_else(|| json!({"phase": "Active"}));
                set_top(obj, "status", Some(status));
                let spec = previous
                    .and_then(|p| p.get("spec").cloned())
                    .unwrap_or_else(|| json!({"finalizers": ["kubernetes"]}));
                set_top(obj, "spec", Some(spec));
            }
            ("", "secrets") => {
                convert_string_data(obj);
                if obj
                    .get("type")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    set_top(obj, "type", Some(json!("Opaque")));
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                resource_from_crd(obj).map_err(|m| {
                    ApiError::invalid(
                        &t.rt.group,
                        &t.rt.kind,
                        meta::name(obj),
                        vec![(String::new(), "FieldValueInvalid".into(), m)],
                    )
                })?;
                let status = crd_status(obj, previous.and_then(|p| p.get("status")));
                set_top(obj, "status", Some(status));
            }
            _ => {}
        }
        Ok(())
    }

    fn after_commit(&self, resource: &str, obj: &Value, removed: bool) {
        if resource != CRD_BUCKET {
            return;
        }
        if removed {
            if let Ok(rt) = resource_from_crd(obj) {
                self.registry.unregister(&rt.key());
            }
        } else if let Ok(rt) = resource_from_crd(obj) {
            self.registry.register(rt);
        }
    }

    /// The API server's limits on sizes, keys, labels and annotations, and immutability.
    fn check_limits(t: &Target, obj: &Value, previous: Option<&Value>) -> Result<(), ApiError> {
        let causes = limits::check(&t.rt.group, &t.rt.plural, obj, previous)?;
        if causes.is_empty() {
            return Ok(());
        }
        let shown = t.view.as_deref().unwrap_or(&t.rt);
        Err(ApiError::invalid(
            &shown.group,
            &shown.kind,
            meta::name(obj),
            causes,
        ))
    }

    fn check_kind(t: &Target, obj: &Value) -> Result<(), ApiError> {
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && !kind.is_empty()
            && kind != t.rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                t.rt.kind
            )));
        }
        if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
            && !av.is_empty()
            && av != t.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                t.api_version()
            )));
        }
        Ok(())
    }

    /// The kind, namespace and name in a body written to `name`'s URL agree with it.
    fn check_identity(t: &Target, obj: &Value, name: &str) -> Result<(), ApiError> {
        Self::check_kind(t, obj)?;
        Self::check_namespace(t, obj)?;
        if meta::name(obj) != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(obj)
            )));
        }
        Ok(())
    }

    fn check_namespace(t: &Target, obj: &Value) -> Result<(), ApiError> {
        let ns = meta::namespace(obj);
        if t.rt.namespaced && !ns.is_empty() && ns != t.namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    pub fn create(&self, t: &Target, body: Value, opts: &WriteOptions) -> Result<ObjRef, ApiError> {
        let body = if body.is_object() {
            t.inbound(body)
        } else {
            body
        };
        self.create_owned(t, body, opts, Ownership::Update(opts.manager()))
    }

    fn create_owned(
        &self,
        t: &Target,
        mut obj: Value,
        opts: &WriteOptions,
        ownership: Ownership,
    ) -> Result<ObjRef, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Self::check_kind(t, &obj)?;
        Self::check_namespace(t, &obj)?;
        if !meta::meta_str(&obj, "resourceVersion").is_empty() {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        set_top(&mut obj, "apiVersion", Some(json!(t.api_version())));
        set_top(&mut obj, "kind", Some(json!(t.rt.kind)));
        if t.rt.namespaced {
            meta::set_meta(&mut obj, "namespace", json!(t.namespace));
        } else {
            meta::remove_meta(&mut obj, "namespace");
        }
        let generate = meta::meta_str(&obj, "generateName").to_string();
        if meta::name(&obj).is_empty() && generate.is_empty() {
            return Err(ApiError::invalid(
                &t.rt.group,
                &t.rt.kind,
                "",
                vec![(
                    "metadata.name".into(),
                    "FieldValueRequired".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        meta::set_meta(&mut obj, "uid", json!(meta::new_uid()));
        meta::set_meta(&mut obj, "creationTimestamp", json!(meta::now_rfc3339()));
        meta::set_meta(&mut obj, "generation", json!(1));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            meta::remove_meta(&mut obj, k);
        }
        if t.rt.status_subresource {
            set_top(&mut obj, "status", None);
        }
        self.prepare_kind(t, &mut obj, None)?;
        self.admit(t, &mut obj)?;
        Self::check_limits(t, &obj, None)?;
        let entries = match ownership {
            Ownership::Applied(entries) => entries,
            Ownership::Update(manager) => {
                let mut entries = Vec::new();
                let time = meta::now_rfc3339();
                let api_version = t.api_version();
                let writer = Writer {
                    manager,
                    api_version: &api_version,
                    scope: Scope::Main {
                        status_reset: false,
                    },
                    time: &time,
                };
                fields::record_update(&mut entries, &json!({}), &obj, &writer, &t.schema());
                entries
            }
        };
        fields::write_managed(&mut obj, &entries);

        let resource = t.rt.bucket();
        for _ in 0..8 {
            let mut candidate = obj.clone();
            if meta::name(&candidate).is_empty() {
                meta::set_meta(
                    &mut candidate,
                    "name",
                    json!(format!("{generate}{}", meta::random_suffix())),
                );
            }
            let name = meta::name(&candidate).to_string();
            if opts.dry_run {
                return Ok(Arc::new(StoredObject::new(candidate)));
            }
            match self.store.create(&resource, t.key(&name), candidate) {
                Ok(stored) => {
                    self.after_commit(&resource, stored.value(), false);
                    return Ok(stored);
                }
                Err(StoreError::AlreadyExists) if meta::name(&obj).is_empty() => continue,
                Err(e) => return Err(store_error(t, &name, e)),
            }
        }
        Err(ApiError::already_exists(
            &t.rt.group,
            &t.rt.plural,
            &generate,
        ))
    }

    /// Builds the stored form of an update from the current object and the
    /// client's version of it.
    fn prepare_update(
        &self,
        t: &Target,
        status: bool,
        current: &Value,
        mut obj: Value,
        ownership: Ownership,
    ) -> Result<Value, ApiError> {
        if status {
            let new_status = obj.get("status").cloned();
            obj = current.clone();
            set_top(&mut obj, "status", new_status);
        } else {
            set_top(&mut obj, "apiVersion", Some(json!(t.api_version())));
            set_top(&mut obj, "kind", Some(json!(t.rt.kind)));
            if t.rt.status_subresource {
                set_top(&mut obj, "status", current.get("status").cloned());
            }
        }
        for k in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match meta::metadata(current).and_then(|m| m.get(k)) {
                Some(v) => meta::set_meta(&mut obj, k, v.clone()),
                None => meta::remove_meta(&mut obj, k),
            }
        }
        meta::remove_meta(&mut obj, "selfLink");
        if !status {
            self.prepare_kind(t, &mut obj, Some(current))?;
        }
        if meta::is_terminating(current) {
            let before = meta::finalizers(current);
            if meta::finalizers(&obj).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &t.rt.group,
                    &t.rt.kind,
                    meta::name(current),
                    vec![(
                        "metadata.finalizers".into(),
                        "FieldValueForbidden".into(),
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    )],
                ));
            }
        }
        if spec_changed(current, &obj, t.rt.status_subresource) {
            let generation = meta::metadata(current)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta::set_meta(&mut obj, "generation", json!(generation + 1));
        }
        self.admit(t, &mut obj)?;
        Self::check_limits(t, &obj, Some(current))?;
        let entries = match ownership {
            Ownership::Applied(entries) => entries,
            Ownership::Update(manager) => {
                let mut entries = fields::read_managed(current);
                let time = meta::now_rfc3339();
                let api_version = t.api_version();
                let writer = Writer {
                    manager,
                    api_version: &api_version,
                    scope: t.scope(status),
                    time: &time,
                };
                fields::record_update(&mut entries, current, &obj, &writer, &t.schema());
                entries
            }
        };
        fields::write_managed(&mut obj, &entries);
        Ok(obj)
    }

    /// Stores an update, or removes the object when it was being deleted and
    /// its last finalizer went. A write that changes nothing is not stored
    /// (no new resourceVersion, no event), as on a real server.
    fn commit_update(
        &self,
        t: &Target,
        name: &str,
        current: &ObjRef,
        obj: Value,
    ) -> Result<ObjRef, StoreError> {
        if unchanged(current.value(), &obj) {
            return Ok(current.clone());
        }
        let resource = t.rt.bucket();
        let key = t.key(name);
        if is_removed(&obj) {
            let gone = self
                .store
                .delete(&resource, &key, current.rv(), Some(obj))?;
            self.after_commit(&resource, gone.value(), true);
            return Ok(gone);
        }
        let stored = self.store.update(&resource, &key, current.rv(), obj)?;
        self.after_commit(&resource, stored.value(), false);
        Ok(stored)
    }

    pub fn update(
        &self,
        t: &Target,
        name: &str,
        status: bool,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<ObjRef, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let body = t.inbound(body);
        Self::check_identity(t, &body, name)?;
        let precondition = meta::resource_version(&body);
        loop {
            let current = self.get(t, name)?;
            if precondition != 0 && precondition != current.rv() {
                return Err(t.stale(name));
            }
            let obj = self.prepare_update(
                t,
                status,
                current.value(),
                body.clone(),
                Ownership::Update(opts.manager()),
            )?;
            if opts.dry_run {
                return Ok(Arc::new(StoredObject::new(obj)));
            }
            match self.commit_update(t, name, &current, obj) {
                Ok(stored) => return Ok(self.settle(stored)),
                Err(StoreError::Stale) if precondition == 0 => continue,
                Err(e) => return Err(store_error(t, name, e)),
            }
        }
    }

    pub fn patch(
        &self,
        t: &Target,
        name: &str,
        status: bool,
        patch_type: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<ObjRef, ApiError> {
        if patch_type == PatchType::Strategic && t.rt.is_custom() {
            return Err(ApiError::new(
                415,
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        if patch_type == PatchType::Apply {
            return self.apply(t, name, status, body, opts);
        }
        loop {
            let current = self.get(t, name)?;
            let base = t.outbound(current.value());
            let patched = match patch_type {
                PatchType::Merge => patch::merge_patch(&base, body),
                PatchType::Json => patch::json_patch(&base, body),
                _ => patch::strategic_patch(&base, body, &t.schema()),
            }
            .map_err(patch_error)?;
            let patched = t.inbound(patched);
            let precondition = meta::resource_version(&patched);
            if precondition != current.rv() {
                return Err(t.stale(name));
            }
            let obj = self.prepare_update(
                t,
                status,
                current.value(),
                patched,
                Ownership::Update(opts.manager()),
            )?;
            if opts.dry_run {
                return Ok(Arc::new(StoredObject::new(obj)));
            }
            match self.commit_update(t, name, &current, obj) {
                Ok(stored) => return Ok(self.settle(stored)),
                Err(StoreError::Stale) => continue,
                Err(e) => return Err(store_error(t, name, e)),
            }
        }
    }

    fn apply(
        &self,
        t: &Target,
        name: &str,
        status: bool,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<ObjRef, ApiError> {
        let Some(manager) = opts.field_manager.as_deref().filter(|m| !m.is_empty()) else {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                vec![(
                    "fieldManager".into(),
                    "FieldValueRequired".into(),
                    "Required value: is required for apply patch".into(),
                )],
            ));
        };
        let applied = patch::parse_apply_body(body).map_err(patch_error)?;
        for field in ["apiVersion", "kind"] {
            if applied
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!("{field} must be set")));
            }
        }
        let applied = t.inbound(applied);
        Self::check_identity(t, &applied, name)?;
        let precondition = meta::resource_version(&applied);
        let time = meta::now_rfc3339();
        let api_version = t.api_version();
        let writer = Writer {
            manager,
            api_version: &api_version,
            scope: t.scope(status),
            time: &time,
        };
        let schema = t.schema();
        loop {
            let Some(current) = self.store.get(&t.rt.bucket(), &t.key(name)) else {
                if status {
                    return Err(t.not_found(name));
                }
                let mut base = json!({"apiVersion": api_version, "kind": t.rt.kind, "metadata": {"name": name}});
                if t.rt.namespaced {
                    meta::set_meta(&mut base, "namespace", json!(t.namespace));
                }
                let mut entries = Vec::new();
                let merged =
                    fields::apply(&base, &applied, &mut entries, &writer, opts.force, &schema)
                        .map_err(|c| self.conflict(t, name, c))?;
                match self.create_owned(t, merged, opts, Ownership::Applied(entries)) {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other,
                }
            };
            if precondition != 0 && precondition != current.rv() {
                return Err(t.stale(name));
            }
            let mut entries = fields::read_managed(current.value());
            let merged = fields::apply(
                current.value(),
                &applied,
                &mut entries,
                &writer,
                opts.force,
                &schema,
            )
            .map_err(|c| self.conflict(t, name, c))?;
            let obj = self.prepare_update(
                t,
                status,
                current.value(),
                merged,
                Ownership::Applied(entries),
            )?;
            if opts.dry_run {
                return Ok(Arc::new(StoredObject::new(obj)));
            }
            match self.commit_update(t, name, &current, obj) {
                Ok(stored) => return Ok(self.settle(stored)),
                Err(StoreError::Stale) => continue,
                Err(e) => return Err(store_error(t, name, e)),
            }
        }
    }

    /// Collects garbage when a write completed a deletion.
    fn settle(&self, stored: ObjRef) -> ObjRef {
        if is_removed(stored.value()) {
            self.collect_garbage();
        }
        stored
    }

    fn conflict(&self, t: &Target, name: &str, conflicts: Vec<fields::Conflict>) -> ApiError {
        let total: usize = conflicts.iter().map(|c| c.fields.len()).sum();
        let message = match conflicts.as_slice() {
            [one] if one.fields.len() == 1 => format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                one.description, one.fields[0]
            ),
            many => {
                let mut sorted: Vec<&fields::Conflict> = many.iter().collect();
                sorted.sort_by(|a, b| a.manager.cmp(&b.manager));
                let lines: Vec<String> = sorted
                    .iter()
                    .flat_map(|c| {
                        std::iter::once(format!("conflicts with {}:", c.description))
                            .chain(c.fields.iter().map(|f| format!("- {f}")))
                    })
                    .collect();
                format!("Apply failed with {total} conflicts: {}", lines.join("\n"))
            }
        };
        let causes = conflicts
            .iter()
            .flat_map(|c| {
                c.fields.iter().map(|f| {
                    json!({"reason": "FieldManagerConflict",
                           "message": format!("conflict with {}", c.description), "field": f})
                })
            })
            .collect();
        ApiError::new(409, message)
            .with_causes(causes)
            .with_reason("Conflict")
            .with_target(&t.rt.group, &t.rt.plural, name)
    }

    /// Deletes one object, then collects what its deletion orphaned.
    pub fn delete(&self, t: &Target, name: &str, opts: &DeleteOptions) -> Result<ObjRef, ApiError> {
        let result = self.delete_one(&t.rt, &t.key(name), opts)?;
        self.collect_garbage();
        Ok(result)
    }

    /// Deletes every object the filter selects, then collects garbage once.
    pub fn delete_collection(
        &self,
        t: &Target,
        filter: &dyn Fn(&Value) -> bool,
        opts: &DeleteOptions,
    ) -> Result<Vec<ObjRef>, ApiError> {
        let ns =
            t.rt.namespaced
                .then_some(t.namespace.as_str())
                .filter(|n| !n.is_empty());
        let page = self.store.list(&t.rt.bucket(), ns, None, None, filter);
        let mut deleted = Vec::new();
        for obj in page.items {
            let key = (
                meta::namespace(obj.value()).to_string(),
                meta::name(obj.value()).to_string(),
            );
            match self.delete_one(&t.rt, &key, opts) {
                Ok(o) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        self.collect_garbage();
        Ok(deleted)
    }

    fn delete_one(
        &self,
        rt: &Arc<ResourceType>,
        key: &Key,
        opts: &DeleteOptions,
    ) -> Result<ObjRef, ApiError> {
        let resource = rt.bucket();
        let t = Target {
            rt: rt.clone(),
            version: rt.preferred_version().to_string(),
            namespace: key.0.clone(),
            view: None,
        };
        let name = key.1.as_str();
        loop {
            let current = self
                .store
                .get(&resource, key)
                .ok_or_else(|| t.not_found(name))?;
            let value = current.value();
            if let Some(uid) = &opts.uid
                && uid != meta::uid(value)
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(value)
                    ),
                ));
            }
            if let Some(rv) = &opts.resource_version
                && *rv != current.rv().to_string()
            {
                return Err(ApiError::conflict(
                    &rt.group,
                    &rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        current.rv()
                    ),
                ));
            }
            if opts.dry_run {
                return Ok(current);
            }
            let mut finalizers = meta::finalizers(value);
            let mut add = |f: &str| {
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(f.to_string());
                }
            };
            match opts.propagation {
                Propagation::Foreground => add(FOREGROUND),
                Propagation::Orphan => add(ORPHAN),
                Propagation::Background => {}
            }
            if resource == CRD_BUCKET {
                add(CRD_CLEANUP);
            }
            let is_namespace = resource == "namespaces";
            if finalizers.is_empty() && !is_namespace {
                match self.store.delete(&resource, key, current.rv(), None) {
                    Ok(gone) => {
                        self.after_commit(&resource, gone.value(), true);
                        return Ok(gone);
                    }
                    Err(StoreError::Stale) => continue,
                    Err(e) => return Err(store_error(&t, name, e)),
                }
            }
            if meta::is_terminating(value) && finalizers == meta::finalizers(value) {
                return Ok(current);
            }
            let mut obj = value.clone();
            if !meta::is_terminating(value) {
                meta::set_meta(&mut obj, "deletionTimestamp", json!(meta::now_rfc3339()));
                meta::set_meta(&mut obj, "deletionGracePeriodSeconds", json!(0));
            }
            meta::set_finalizers(&mut obj, finalizers);
            if is_namespace {
                set_top(&mut obj, "status", Some(json!({"phase": "Terminating"})));
            }
            match self.store.update(&resource, key, current.rv(), obj) {
                Ok(marked) => {
                    if is_namespace {
                        self.delete_namespace_contents(name);
                    } else if resource == CRD_BUCKET
                        && let Ok(cr) = resource_from_crd(marked.value())
                        && let Some(cr) = self.registry.by_key(&cr.key())
                    {
                        self.delete_all_of(&cr);
                    }
                    return Ok(marked);
                }
                Err(StoreError::Stale) => continue,
                Err(e) => return Err(store_error(&t, name, e)),
            }
        }
    }

    fn delete_namespace_contents(&self, namespace: &str) {
        for (resource, obj) in self.store.all_objects() {
            if meta::namespace(obj.value()) != namespace {
                continue;
            }
            if let Some(rt) = self.registry.by_key(&resource).filter(|rt| rt.namespaced) {
                let key = (namespace.to_string(), meta::name(obj.value()).to_string());
                // A failure leaves the object for the next collection pass.
                let _ = self.delete_one(&rt, &key, &DeleteOptions::default());
            }
        }
    }

    fn delete_all_of(&self, rt: &Arc<ResourceType>) {
        let page = self.store.list(&rt.bucket(), None, None, None, &|_| true);
        for obj in page.items {
            let key = (
                meta::namespace(obj.value()).to_string(),
                meta::name(obj.value()).to_string(),
            );
            // A failure leaves the object for the next collection pass.
            let _ = self.delete_one(rt, &key, &DeleteOptions::default());
        }
    }

    /// Removes `finalizer` from an object being deleted (deleting it when none remain).
    fn release(&self, resource: &str, obj: &ObjRef, finalizer: &str) {
        let Some(rt) = self.registry.by_key(resource) else {
            return;
        };
        let t = Target {
            version: rt.preferred_version().to_string(),
            namespace: meta::namespace(obj.value()).to_string(),
            rt,
            view: None,
        };
        let mut value = obj.value().clone();
        let remaining: Vec<String> = meta::finalizers(&value)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        meta::set_finalizers(&mut value, remaining);
        // Losing a race means another writer changed the object; the next pass retries.
        let _ = self.commit_update(&t, meta::name(obj.value()), obj, value);
    }

    /// Garbage collection, run after deletions: deletes objects whose owners
    /// are all gone (or being deleted in the foreground), completes
    /// foreground and orphan deletions, finalizes empty terminating
    /// namespaces and CRDs without instances. Repeats until nothing changes.
    pub fn collect_garbage(&self) {
        for _ in 0..64 {
            let all = self.store.all_objects();
            let live: HashSet<&str> = all.iter().map(|(_, o)| meta::uid(o.value())).collect();
            let mut dependents: HashMap<&str, usize> = HashMap::new();
            let mut foreground: HashSet<&str> = HashSet::new();
            let mut populated_namespaces: HashSet<&str> = HashSet::new();
            for (resource, o) in &all {
                let v = o.value();
                for owner in meta::owner_uids(v) {
                    *dependents.entry(owner).or_default() += 1;
                }
                if meta::is_terminating(v) && meta::finalizers(v).iter().any(|f| f == FOREGROUND) {
                    foreground.insert(meta::uid(v));
                }
                if resource != "namespaces" && !meta::namespace(v).is_empty() {
                    populated_namespaces.insert(meta::namespace(v));
                }
            }
            let mut acted = false;
            for (resource, o) in &all {
                let v = o.value();
                let owners = meta::owner_uids(v);
                if !owners.is_empty()
                    && !meta::is_terminating(v)
                    && (owners.iter().all(|u| !live.contains(u))
                        || owners.iter().any(|u| foreground.contains(u)))
                    && let Some(rt) = self.registry.by_key(resource)
                {
                    let key = (meta::namespace(v).to_string(), meta::name(v).to_string());
                    let _ = self.delete_one(&rt, &key, &DeleteOptions::default());
                    acted = true;
                    continue;
                }
                if !meta::is_terminating(v) {
                    continue;
                }
                let finalizers = meta::finalizers(v);
                let uid = meta::uid(v);
                if finalizers.iter().any(|f| f == ORPHAN) {
                    self.orphan_dependents(uid);
                    self.release(resource, o, ORPHAN);
                    acted = true;
                } else if finalizers.iter().any(|f| f == FOREGROUND)
                    && dependents.get(uid).copied().unwrap_or(0) == 0
                {
                    self.release(resource, o, FOREGROUND);
                    acted = true;
                } else if resource == "namespaces"
                    && finalizers.is_empty()
                    && !populated_namespaces.contains(meta::name(v))
                {
                    let key = (String::new(), meta::name(v).to_string());
                    let _ = self.store.delete(resource, &key, o.rv(), None);
                    acted = true;
                } else if resource == CRD_BUCKET
                    && finalizers.iter().any(|f| f == CRD_CLEANUP)
                    && resource_from_crd(v).is_ok_and(|cr| self.store.count(&cr.bucket()) == 0)
                {
                    self.release(resource, o, CRD_CLEANUP);
                    acted = true;
                }
            }
            if !acted {
                return;
            }
        }
    }

    /// Removes owner references to `uid` from every object.
    fn orphan_dependents(&self, uid: &str) {
        for (resource, o) in self.store.all_objects() {
            if !meta::owner_uids(o.value()).contains(&uid) {
                continue;
            }
            let mut value = o.value().clone();
            if let Some(Value::Array(refs)) =
                meta::metadata_mut(&mut value).and_then(|m| m.get_mut("ownerReferences"))
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            let key = (
                meta::namespace(&value).to_string(),
                meta::name(&value).to_string(),
            );
            // Losing a race leaves the reference; the next pass retries.
            let _ = self.store.update(&resource, &key, o.rv(), value);
        }
    }
}

/// A list response body.
pub(crate) fn list_body(
    rt: &ResourceType,
    version: &str,
    items: Vec<Value>,
    list_meta: Map<String, Value>,
) -> Value {
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(version),
        "metadata": list_meta,
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_changes_ignore_metadata_and_status_subresource() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"y": 1}});
        let mut b = a.clone();
        b["metadata"]["labels"]["a"] = json!("2");
        b["status"]["y"] = json!(2);
        assert!(!spec_changed(&a, &b, true));
        assert!(spec_changed(&a, &b, false));
        b["spec"]["x"] = json!(2);
        assert!(spec_changed(&a, &b, true));
    }

    #[test]
    fn no_op_writes_are_recognised() {
        let a = json!({"metadata": {"resourceVersion": "1", "managedFields": [{"manager": "m", "time": "t1"}]}, "data": {"k": "v"}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"][0]["time"] = json!("t2");
        assert!(unchanged(&a, &b));
        b["metadata"]["managedFields"][0]["manager"] = json!("n");
        assert!(!unchanged(&a, &b));
        let mut c = a.clone();
        c["data"]["k"] = json!("w");
        assert!(!unchanged(&a, &c));
        let mut d = a.clone();
        d["metadata"]["labels"] = json!({"x": "y"});
        assert!(!unchanged(&a, &d));
    }

    #[test]
    fn string_data_becomes_data() {
        let mut s = json!({"stringData": {"k": "v"}, "data": {"a": "YQ=="}});
        convert_string_data(&mut s);
        assert_eq!(s, json!({"data": {"a": "YQ==", "k": "dg=="}}));
    }

    #[test]
    fn delete_options_from_body_and_query() {
        let q: HashMap<String, String> =
            [("propagationPolicy".to_string(), "Orphan".to_string())].into();
        let o = DeleteOptions::parse(b"", &q).unwrap();
        assert_eq!(o.propagation, Propagation::Orphan);
        let o = DeleteOptions::parse(
            br#"{"propagationPolicy": "Foreground", "preconditions": {"uid": "u"}}"#,
            &q,
        )
        .unwrap();
        assert_eq!(o.propagation, Propagation::Foreground);
        assert_eq!(o.uid.as_deref(), Some("u"));
        assert!(DeleteOptions::parse(b"{bad", &HashMap::new()).is_err());
    }
}
