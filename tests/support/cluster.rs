//! An emulated cluster with the CRD installed and a controller that tests start, stop and
//! restart, plus helpers that poll with deadlines and dump state when one passes.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_emulator::{Emulator, EmulatorBuilder, EmulatorHandle, RequestMatch};
use ringfence::api::ConfigRollout;
use ringfence::controller::{Operator, Options, RevisionKeySource};
use ringfence::engine::{AddressPolicy, RevisionKey};
use ringfence::leader::{LeaderConfig, LeaderElection, LeaderError, Timing};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::background::{self, Background};

/// How long a test waits for a state before failing with a dump.
pub const DEADLINE: Duration = Duration::from_secs(90);
/// Where the controller under test looks for cluster Secrets.
pub const CLUSTER_NAMESPACE: &str = "ringfence-system";

pub struct Cluster {
    pub emu: EmulatorHandle,
    pub client: Client,
    controller: Option<Background>,
    pub metrics_addr: Option<SocketAddr>,
    pub trusted: Vec<String>,
    /// The controller's key for Secret revisions, the same across restarts.
    pub revision_key: RevisionKey,
    /// Where the controller's gates may call.
    pub gate_addresses: AddressPolicy,
}

/// The tests' webhooks and Prometheus listen on 127.0.0.1, which gates may not call by
/// default: allowed here by naming it.
pub fn test_gate_addresses() -> AddressPolicy {
    AddressPolicy::new(vec!["127.0.0.1/32".parse().expect("CIDR")])
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(Emulator::builder()).await
    }

    /// An emulator that authenticates every request (so the request log names its user)
    /// and authorizes it by RBAC; [`Cluster::client`] is the administrator.
    pub async fn start_authorized() -> Self {
        Self::start_with(Emulator::builder().authorization(true)).await
    }

    async fn start_with(builder: EmulatorBuilder) -> Self {
        super::background::arm_watchdog();
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Custom resources are admitted as kube-apiserver admits them: the CRD's schema
        // and CEL rules, so a test cannot write a rollout a real cluster would refuse.
        let emu = builder
            .admission(kube_emulator::validation::admission_hook())
            .start()
            .await
            .expect("emulator starts");
        let crd = serde_json::to_value(ringfence::api::crd()).unwrap();
        emu.apply(&crd).expect("CRD installs");
        let client = emu.client();
        Self {
            emu,
            client,
            controller: None,
            metrics_addr: None,
            trusted: Vec::new(),
            revision_key: RevisionKey::generate(),
            gate_addresses: test_gate_addresses(),
        }
    }

    /// Starts a controller instance (a fresh process, as far as state goes).
    pub async fn start_controller(&mut self) {
        assert!(self.controller.is_none(), "a controller is already running");
        let options = Options {
            namespace: None,
            trusted_namespaces: self.trusted.iter().cloned().collect(),
            revision_key: RevisionKeySource::Fixed(self.revision_key.clone()),
            gate_addresses: self.gate_addresses.clone(),
            concurrency: 4,
            max_inflight_writes: 32,
            cluster_namespace: CLUSTER_NAMESPACE.into(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            health_addr: "127.0.0.1:0".parse().unwrap(),
            instance: Some("test".into()),
            leader: None,
        };
        let operator = Operator::new(self.client.clone(), options)
            .await
            .expect("controller starts");
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.controller = Some(background::spawn(async move {
            let mut tx = Some(tx);
            let run = operator.run(std::future::pending(), move |addrs| {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(addrs[0]);
                }
            });
            if let Err(e) = run.await {
                panic!("controller failed: {e}");
            }
        }));
        self.metrics_addr = rx.await.ok();
    }

    /// Kills the controller abruptly, as a crash would.
    pub async fn kill_controller(&mut self) {
        if let Some(task) = self.controller.take() {
            task.stop().await;
        }
    }

    /// Makes every write to ConfigMaps in `namespace` fail with `code`, until the faults
    /// are cleared.
    pub fn fail_config_map_writes(&self, namespace: &str, code: u16) {
        for verb in ["create", "update", "patch", "delete"] {
            self.emu.faults().fail_fraction(
                1.0,
                RequestMatch::any()
                    .verb(verb)
                    .resource("configmaps")
                    .namespace(namespace),
                code,
                1,
            );
        }
    }

    pub async fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
        }))
        .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
    }

    pub async fn config_map(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<&str, &str> = data.iter().copied().collect();
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "data": data,
        }))
        .unwrap();
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &cm)
            .await
            .expect("configmap created");
    }

    pub async fn get_config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .expect("configmap read")
    }

    /// Creates (or updates) a rollout with server-side apply as a user would.
    pub async fn apply_rollout(&self, ns: &str, rollout: Value) {
        let name = rollout["metadata"]["name"].as_str().unwrap().to_string();
        let mut body = rollout;
        body["apiVersion"] = json!("ringfence.dev/v1alpha1");
        body["kind"] = json!("ConfigRollout");
        body["metadata"]["namespace"] = json!(ns);
        Api::<ConfigRollout>::namespaced(self.client.clone(), ns)
            .patch(
                &name,
                &PatchParams::apply("test-user").force(),
                &Patch::Apply(&body),
            )
            .await
            .expect("rollout applied");
    }

    pub async fn annotate_rollout(&self, ns: &str, name: &str, key: &str, value: &str) {
        Api::<ConfigRollout>::namespaced(self.client.clone(), ns)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("rollout annotated");
    }

    pub async fn rollout(&self, ns: &str, name: &str) -> ConfigRollout {
        Api::<ConfigRollout>::namespaced(self.client.clone(), ns)
            .get(name)
            .await
            .expect("rollout read")
    }

    /// Polls until `check` holds for the rollout; on the deadline, panics with a dump.
    pub async fn wait_rollout(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&ConfigRollout) -> bool,
    ) -> ConfigRollout {
        let api = Api::<ConfigRollout>::namespaced(self.client.clone(), ns);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = api.get(name).await
                && check(&r)
            {
                return r;
            }
            if tokio::time::Instant::now() > deadline {
                self.dump(ns, name).await;
                panic!("timed out waiting for {ns}/{name}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls an arbitrary condition with the same deadline and dump.
    pub async fn wait_for<F, Fut>(&self, ns: &str, name: &str, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !check().await {
            if tokio::time::Instant::now() > deadline {
                self.dump(ns, name).await;
                panic!("timed out waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Prints the rollout's status and the latest writes the emulator served.
    pub async fn dump(&self, ns: &str, name: &str) {
        let api = Api::<ConfigRollout>::namespaced(self.client.clone(), ns);
        match api.get(name).await {
            Ok(r) => eprintln!(
                "--- {ns}/{name} (generation {:?}) status:\n{}",
                r.metadata.generation,
                serde_json::to_string_pretty(&r.status).unwrap_or_default()
            ),
            Err(e) => eprintln!("--- {ns}/{name} unreadable: {e}"),
        }
        let log = self.emu.request_log().entries();
        eprintln!("--- last requests ({} total):", log.len());
        for r in log.iter().rev().take(80).rev() {
            eprintln!("{r}");
        }
    }

    /// Writes a Deployment's status as a kubelet and deployment controller would.
    pub async fn set_deployment_status(&self, ns: &str, name: &str, ready: i32) {
        let api = Api::<Deployment>::namespaced(self.client.clone(), ns);
        let Ok(d) = api.get(name).await else { return };
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = json!({"status": {
            "observedGeneration": d.metadata.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }});
        let _ = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await;
    }

    pub async fn deployment(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
            },
        }))
        .unwrap();
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await
            .expect("deployment created");
    }

    /// Writes the controller made since `seq` (excluding events).
    pub fn controller_writes_since(&self, seq: u64) -> Vec<String> {
        self.emu
            .request_log()
            .since(seq)
            .into_iter()
            .filter(|r| {
                r.is_write()
                    && r.resource != "events"
                    && r.field_manager.as_deref() == Some("ringfence")
            })
            .map(|r| {
                format!(
                    "{} {}/{} {}/{}",
                    r.verb, r.resource, r.subresource, r.namespace, r.name
                )
            })
            .collect()
    }

    /// Target data by namespace, for every namespace holding one named `name`.
    pub async fn targets(&self, name: &str) -> BTreeMap<String, ConfigMap> {
        Api::<ConfigMap>::all(self.client.clone())
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .expect("targets listed")
            .items
            .into_iter()
            .map(|cm| (cm.namespace().unwrap_or_default(), cm))
            .collect()
    }
}

/// One controller replica as a pod runs it: its own client (so its own user), its own
/// leader election, an operator that acts only while leading.
pub struct Replica {
    pub identity: String,
    pub leader: watch::Receiver<bool>,
    election: JoinHandle<Result<(), LeaderError>>,
    operator: JoinHandle<()>,
}

impl Replica {
    pub async fn start(
        client: Client,
        identity: &str,
        lease_namespace: &str,
        timing: Timing,
    ) -> Self {
        let config = LeaderConfig {
            lease_name: "ringfence".into(),
            namespace: lease_namespace.into(),
            identity: identity.into(),
            timing,
        };
        let election = LeaderElection::new(client.clone(), config).expect("valid timing");
        let leader = election.subscribe();
        let options = Options {
            namespace: None,
            trusted_namespaces: Default::default(),
            // As the chart configures it: every replica reads (or the first creates) one key.
            revision_key: RevisionKeySource::Secret {
                namespace: lease_namespace.into(),
                name: "ringfence-revision-key".into(),
                create: true,
            },
            gate_addresses: test_gate_addresses(),
            concurrency: 4,
            max_inflight_writes: 32,
            cluster_namespace: CLUSTER_NAMESPACE.into(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            health_addr: "127.0.0.1:0".parse().unwrap(),
            instance: Some(identity.into()),
            leader: Some(leader.clone()),
        };
        let operator = Operator::new(client, options)
            .await
            .expect("controller starts");
        let operator = tokio::spawn(async move {
            if let Err(e) = operator.run(std::future::pending(), |_| {}).await {
                panic!("controller failed: {e}");
            }
        });
        let election = tokio::spawn(election.run(std::future::pending()));
        Self {
            identity: identity.into(),
            leader,
            election,
            operator,
        }
    }

    /// Waits (up to `within`) until this replica leads.
    pub async fn wait_leading(&mut self, within: Duration) {
        tokio::time::timeout(within, self.leader.wait_for(|l| *l))
            .await
            .unwrap_or_else(|_| panic!("{} did not become leader in {within:?}", self.identity))
            .expect("election running");
    }

    pub fn leads(&self) -> bool {
        *self.leader.borrow()
    }

    /// Kills the replica as a crash would: nothing is released, the Lease must expire.
    pub async fn kill(mut self) {
        self.election.abort();
        self.operator.abort();
        let _ = (&mut self.election).await;
        let _ = (&mut self.operator).await;
    }
}

/// A replica left running stops with the test body, not in the runtime's shutdown.
impl Drop for Replica {
    fn drop(&mut self) {
        self.election.abort();
        self.operator.abort();
    }
}

/// Phase of a rollout as text ("" when unset).
pub fn phase(r: &ConfigRollout) -> String {
    r.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_default()
}

/// Status, reason and message of a rollout's condition (empty when it has none).
pub fn condition(r: &ConfigRollout, type_: &str) -> (String, String, String) {
    r.status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

/// Data of a ConfigMap as a plain map.
pub fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// A plain HTTP GET against the controller's health/metrics server.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
