//! An in-process Kubernetes API server for tests and the demo.
//!
//! It serves HTTP on loopback, speaks JSON, and is accepted by kube-rs
//! clients and kubectl. Fidelity is aimed where an operator and kubectl
//! depend on it.
//!
//! # What it emulates
//!
//! - Discovery (`/version`, `/api`, `/apis`, group versions) and an OpenAPI
//!   v3 index that makes kubectl validate on the server instead of
//!   downloading schemas.
//! - Built-in kinds: Namespace, ConfigMap, Secret, Service, ServiceAccount,
//!   Event (core and `events.k8s.io`, one store seen through both),
//!   Deployment, StatefulSet, DaemonSet,
//!   Lease, CustomResourceDefinition, Role, ClusterRole, RoleBinding,
//!   ClusterRoleBinding, PodDisruptionBudget, NetworkPolicy, and the
//!   SelfSubjectAccessReview / SubjectAccessReview reviews.
//! - Custom resources, served as soon as their CRD is stored, with scope,
//!   short names, categories, status subresource, printer columns and the
//!   schema's `default`s; deleting the CRD deletes its objects.
//! - Create (with `generateName`), get, list, update, patch, delete,
//!   deletecollection; `dryRun`.
//! - Patches: JSON merge, JSON patch, strategic merge (approximated, see
//!   below), server-side apply with field ownership (`managedFields`),
//!   conflicts, `force`, and removal of fields a manager stops applying.
//!   Managers applying the same value co-own it; numbers compare by value
//!   (`1` and `1.0` are the same, as in a typed field).
//! - Metadata: uid, creationTimestamp, a cluster-wide resourceVersion,
//!   generation (bumped on changes outside metadata, and outside status for
//!   kinds with a status subresource), finalizers and deletionTimestamp,
//!   ownerReference garbage collection (background, foreground, orphan),
//!   namespace deletion with its contents.
//! - Optimistic concurrency (409 on a stale resourceVersion).
//! - The API server's limits, with its codes and messages (those of v1.33):
//!   request bodies up to 3 MiB (413); label keys and values, annotation
//!   keys and their 256 KiB total on every kind; ConfigMap and Secret data
//!   keys, 1 MiB of values (`binaryData` and Secret `data` counted decoded,
//!   `stringData` merged first; undecodable base64 is a 400), `immutable`
//!   data and flag, and a Secret's fixed `type`; an Event with an
//!   `eventTime` must name its reporter, action and reason (128 characters
//!   at most) and keep its message to 1024 (422 for all of these).
//! - Metadata-only clients (`PartialObjectMetadata` and its list, for get,
//!   list, watch and write responses).
//! - List and watch: label and field selectors, pagination with consistent
//!   continue tokens, `resourceVersion`/`resourceVersionMatch`, watch from a
//!   resourceVersion, selector transitions as ADDED/DELETED, bookmarks,
//!   `timeoutSeconds`, 410 Gone beyond the retained history.
//! - Table responses for `kubectl get` (printer columns, `-o wide`).
//! - Admission of custom resources through an [`AdmissionHook`];
//!   [`validation::admission_hook`] is kube-apiserver's own: the CRD's
//!   structural schema (pruning, defaulting, types, formats) and its CEL rules.
//! - Bearer-token authentication and RBAC authorization (off by default).
//! - Fault injection and a request log ([`Faults`], [`RequestLog`], also as
//!   JSON under `/_emulator/faults` and `/_emulator/requests`). An injected
//!   429 is priority and fairness' answer: `Retry-After: 1` and
//!   `details.retryAfterSeconds`. A network partition
//!   ([`Faults::partition`]) drops every connection.
//!
//! # What it deliberately does not
//!
//! - Run workloads: no pods, no controllers (Deployments never progress
//!   unless a test writes their status), no scheduler, no kubelet.
//! - Admission and conversion webhooks; schema validation unless the
//!   [`AdmissionHook`] above is installed; objects of a multi-version CRD are
//!   stored as written and only relabelled.
//! - Protobuf (only the request bodies kubectl's typed commands send are
//!   decoded: reviews, Namespace, ConfigMap, Secret, ServiceAccount),
//!   aggregated discovery, OpenAPI v2, `explain`, TLS, impersonation.
//! - Other built-in validation: object names, type-specific Secret keys
//!   (`kubernetes.io/tls` and the like), the stricter `events.k8s.io`
//!   checks, workload specs; and the total object size etcd enforces.
//! - Strategic merge patch is JSON merge patch in which the lists the
//!   built-in kinds declare mergeable (containers, volumes, env, ports,
//!   volumeMounts, conditions, ownerReferences by key; finalizers as a set)
//!   merge by key, honouring `$patch` and `$deleteFromPrimitiveList`.
//!   Server-side apply uses the same list rules for built-in kinds and
//!   `x-kubernetes-list-type` from the CRD schema for custom resources.
//! - Field selectors accept any dotted path (the real server allows a
//!   per-kind list); `sendInitialEvents`, `remainingItemCount` and
//!   aggregated ClusterRoles are not implemented.

mod admission;
mod authz;
mod convert;
mod discovery;
mod faults;
mod fields;
mod kubeconfig;
mod limits;
mod listener;
mod meta;
mod objects;
mod patch;
mod protobuf;
mod registry;
mod selectors;
mod server;
mod status;
mod store;
mod table;
pub mod validation;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use admission::{AdmissionHook, FieldViolation};
pub use authz::UserInfo;
pub use faults::{FaultRequest, Faults, RequestLog, RequestMatch, RequestRecord};

use objects::{Objects, Target, WriteOptions};
use server::{Auth, Shared};

/// Why the emulator could not start or load a manifest.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("{0}")]
    Rejected(String),
}

/// Entry point: `Emulator::builder().start().await`.
pub struct Emulator;

impl Emulator {
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
}

/// Settings of an emulator about to start.
pub struct EmulatorBuilder {
    history_limit: usize,
    authorization: bool,
    admission: Option<AdmissionHook>,
    port: u16,
    bookmark_interval: Duration,
    watch_buffer: usize,
    request_log_limit: usize,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            history_limit: 50_000,
            authorization: false,
            admission: None,
            port: 0,
            bookmark_interval: Duration::from_secs(5),
            watch_buffer: 65_536,
            request_log_limit: 200_000,
        }
    }
}

impl EmulatorBuilder {
    /// Events retained for watches and exact-resourceVersion lists; older
    /// resourceVersions get 410 Gone. Small values let tests force expiry.
    pub fn history_limit(mut self, events: usize) -> Self {
        self.history_limit = events;
        self
    }

    /// Require bearer tokens and enforce RBAC (the admin token bypasses it).
    pub fn authorization(mut self, on: bool) -> Self {
        self.authorization = on;
        self
    }

    /// Validates custom resources on every write.
    pub fn admission(mut self, hook: AdmissionHook) -> Self {
        self.admission = Some(hook);
        self
    }

    /// Listen on this loopback port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How often watches that allow bookmarks get one.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Events a watcher may lag behind before its stream is closed.
    pub fn watch_buffer(mut self, events: usize) -> Self {
        self.watch_buffer = events;
        self
    }

    /// Starts serving on `127.0.0.1`.
    pub async fn start(self) -> Result<EmulatorHandle, EmulatorError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(EmulatorError::Listen)?;
        let addr = listener.local_addr().map_err(EmulatorError::Listen)?;
        let faults = Faults::default();
        let listener = listener::PartitionListener::new(listener, faults.clone());
        let shared = Arc::new(Shared {
            objects: Objects {
                store: store::Store::new(self.history_limit, self.watch_buffer),
                registry: registry::Registry::new(),
                admission: self.admission,
            },
            faults,
            log: RequestLog::new(self.request_log_limit),
            auth: Auth::new(self.authorization),
            bookmark_interval: self.bookmark_interval,
        });
        let admin_token = random_token();
        shared.auth.add(&admin_token, UserInfo::admin());
        let handle_shared = shared.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = server::router(shared);
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "emulator server stopped");
            }
        });
        let handle = EmulatorHandle {
            shared: handle_shared,
            addr,
            admin_token,
            stop: Some(stop),
            task: Some(task),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            handle.apply(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        Ok(handle)
    }
}

fn random_token() -> String {
    let b: [u8; 24] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running emulator; dropping it stops the server.
pub struct EmulatorHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    admin_token: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token of the administrator identity, which bypasses authorization.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A kubeconfig for the administrator.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(&self.url(), "admin", &self.admin_token)
    }

    /// Writes [`Self::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Makes `token` authenticate as `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.shared.auth.add(token, user);
    }

    /// Registers a new token for the service account `namespace/name` and returns it.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = random_token();
        self.add_token(&token, UserInfo::service_account(namespace, name));
        token
    }

    /// A kubeconfig authenticating with `token`.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        kubeconfig::render(&self.url(), "token-user", token)
    }

    pub fn write_kubeconfig_for_token(
        &self,
        path: impl AsRef<Path>,
        token: &str,
    ) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_for_token(token))
    }

    /// A kube client acting as the administrator.
    pub fn client(&self) -> kube::Client {
        self.client_for_token(&self.admin_token)
    }

    /// A kube client authenticating with `token`.
    pub fn client_for_token(&self, token: &str) -> kube::Client {
        let uri = self
            .url()
            .parse()
            .expect("a socket address forms a valid URI");
        let mut config = kube::Config::new(uri);
        if let Ok(value) = format!("Bearer {token}").parse() {
            config
                .headers
                .push((axum::http::header::AUTHORIZATION, value));
        }
        kube::Client::try_from(config).expect("a plain-HTTP kube client always builds")
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Every request served, in order.
    pub fn request_log(&self) -> &RequestLog {
        &self.shared.log
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.objects.store.current_rv()
    }

    /// Creates or updates an object (server-side apply, forced, as manager
    /// `kube-emulator`), bypassing authorization and faults.
    pub fn apply(&self, obj: &Value) -> Result<(), EmulatorError> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let (group, version) = av.rsplit_once('/').unwrap_or(("", av));
        let rt = self
            .shared
            .objects
            .registry
            .all()
            .into_iter()
            .find(|t| t.group == group && t.kind == kind && t.versions.iter().any(|v| v == version))
            .ok_or_else(|| EmulatorError::Manifest(format!("no resource for {av} {kind}")))?;
        let name = meta::name(obj).to_string();
        let namespace = match (rt.namespaced, meta::namespace(obj)) {
            (false, _) => String::new(),
            (true, "") => "default".to_string(),
            (true, ns) => ns.to_string(),
        };
        let target = Target::new(&self.shared.objects.registry, rt, version, &namespace);
        let opts = WriteOptions {
            field_manager: Some("kube-emulator".into()),
            default_manager: String::new(),
            force: true,
            dry_run: false,
        };
        self.shared
            .objects
            .patch(
                &target,
                &name,
                false,
                patch::PatchType::Apply,
                obj.to_string().as_bytes(),
                &opts,
            )
            .map(|_| ())
            .map_err(|e| EmulatorError::Rejected(e.message))
    }

    /// Applies every object in a multi-document YAML (or JSON) manifest.
    pub fn apply_manifest(&self, text: &str) -> Result<usize, EmulatorError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(text)
            .map_err(|e| EmulatorError::Manifest(e.to_string()))?;
        let mut applied = 0;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let items = match doc.get("items").and_then(Value::as_array) {
                Some(items)
                    if doc
                        .get("kind")
                        .and_then(Value::as_str)
                        .is_some_and(|k| k.ends_with("List")) =>
                {
                    items.clone()
                }
                _ => vec![doc],
            };
            for item in items {
                self.apply(&item)?;
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Applies every `.yaml`, `.yml` and `.json` file in `dir` (e.g. `crds/`), in name order.
    pub fn apply_dir(&self, dir: impl AsRef<Path>) -> Result<usize, EmulatorError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
            })
            .collect();
        files.sort();
        let mut applied = 0;
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            applied += self
                .apply_manifest(&text)
                .map_err(|e| EmulatorError::Manifest(format!("{}: {e}", file.display())))?;
        }
        Ok(applied)
    }

    /// Stops serving: ends open watches and waits (briefly) for connections to close.
    pub async fn shutdown(mut self) {
        self.shared.faults.close_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shared.faults.close_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
