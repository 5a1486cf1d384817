//! What the author of a ConfigRollout cannot make the operator do: learn anything about
//! Secret data from its revision, borrow credentials from Secrets that did not consent,
//! or call addresses the operator refuses.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use ringfence::api::{ConfigRollout, REVISION_ANNOTATION};
use ringfence::controller::{REVISION_KEY_FIELD, RevisionKeySource, load_revision_key};
use ringfence::engine::{GATE_CREDENTIALS_LABEL, RevisionKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::cluster::{Cluster, phase};

const NS: &str = "platform";
/// A weak secret, the kind an attacker would guess.
const PASSWORD: &str = "hunter2";

fn condition(r: &ConfigRollout, type_: &str) -> Option<(String, String, String)> {
    r.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn cells(c: &Cluster, n: usize) {
    c.namespace(NS, &[]).await;
    for i in 1..=n {
        c.namespace(&format!("cell-{i}"), &[("ringfence.dev/allow-from", NS)])
            .await;
    }
}

fn secret(name: &str, type_: &str, labels: Value, data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "type": type_,
        "stringData": data,
    })
}

/// The old revision: an unkeyed SHA-256 over the same encoding.
fn unkeyed_digest(entries: &[(&str, &str)]) -> String {
    fn prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend((bytes.len() as u64).to_be_bytes());
        out.extend(bytes);
    }
    let mut encoded = Vec::new();
    prefixed(&mut encoded, b"Secret");
    encoded.extend((entries.len() as u64).to_be_bytes());
    for (k, v) in entries {
        prefixed(&mut encoded, k.as_bytes());
        prefixed(&mut encoded, v.as_bytes());
    }
    hex(&Sha256::digest(&encoded))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything computable from the secret without the key.
fn guessable(entries: &[(&str, &str)]) -> Vec<String> {
    let old = unkeyed_digest(entries);
    let mut out = vec![old[..10].to_string(), old];
    for (_, v) in entries {
        let plain = hex(&Sha256::digest(v.as_bytes()));
        out.extend([v.to_string(), B64.encode(v), plain[..10].to_string(), plain]);
    }
    out
}

#[test]
fn the_old_unkeyed_revision_is_what_the_test_looks_for() {
    // The pre-key revision of {token: hunter2}, as released versions computed it.
    assert_eq!(&unkeyed_digest(&[("token", "hunter2")])[..10], "823daafe7d");
}

/// Records every webhook payload; answers 200.
async fn recording_webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let router = Router::new().route(
        "/check",
        post(move |Json(body): Json<Value>| async move {
            sink.lock().unwrap().push(body);
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    (format!("http://{addr}/check"), seen)
}

/// A Prometheus answering every query with 0, recording the Authorization headers it got.
async fn recording_prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let router = Router::new().route(
        "/api/v1/query",
        post(move |headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            sink.lock().unwrap().push(auth);
            Json(json!({"status": "success", "data": {"resultType": "scalar", "result": [0, "0"]}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_revision_reveals_nothing_computable_without_the_key() {
    let mut c = Cluster::start().await;
    cells(&c, 2).await;
    let entries = [("password", PASSWORD)];
    c.emu
        .apply(&secret(
            "db-source",
            "Opaque",
            json!({}),
            json!({"password": PASSWORD}),
        ))
        .expect("source Secret");
    let (url, payloads) = recording_webhook().await;
    c.start_controller().await;
    c.apply_rollout(
        NS,
        json!({
            "metadata": {"name": "creds"},
            "spec": {
                "config": {"kind": "Secret", "name": "db-creds", "sourceRef": {"name": "db-source"}},
                "rings": [
                    {"name": "one", "namespaces": ["cell-1"], "bake": "1s"},
                    {"name": "two", "namespaces": ["cell-2"], "bake": "1s"},
                ],
                "gates": [{"name": "smoke", "interval": "1s", "webhook": {"url": url}}],
            },
        }),
    )
    .await;
    let r = c
        .wait_rollout(NS, "creds", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let revision = r.status.as_ref().and_then(|s| s.revision.clone()).unwrap();

    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    seen.insert("status".into(), serde_json::to_string(&r.status).unwrap());
    let events = Api::<Event>::all(c.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    seen.insert(
        "events".into(),
        serde_json::to_string(&events.items).unwrap(),
    );
    for cell in ["cell-1", "cell-2"] {
        let target = Api::<Secret>::namespaced(c.client.clone(), cell)
            .get("db-creds")
            .await
            .unwrap();
        assert_eq!(
            target.data.as_ref().unwrap()["password"].0,
            PASSWORD.as_bytes()
        );
        let annotations = target.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(REVISION_ANNOTATION), Some(&revision));
        seen.insert(
            format!("{cell} metadata"),
            serde_json::to_string(&target.metadata).unwrap(),
        );
    }
    let payloads = payloads.lock().unwrap().clone();
    assert!(
        payloads.iter().any(|p| p["revision"] == revision.as_str()),
        "the webhook was told the revision: {payloads:?}"
    );
    seen.insert(
        "webhook payloads".into(),
        serde_json::to_string(&payloads).unwrap(),
    );

    for guess in guessable(&entries) {
        assert_ne!(revision, guess);
        for (place, text) in &seen {
            assert!(
                !text.contains(&guess),
                "{place} holds {guess:?}, computable from the secret without the key:\n{text}"
            );
        }
    }
}

fn prometheus_rollout(address: &str) -> Value {
    json!({
        "metadata": {"name": "flags"},
        "spec": {
            "config": {"name": "flags", "data": {"retries": "3"}},
            "rings": [{"name": "one", "namespaces": ["cell-1"], "bake": "1s"}],
            "gates": [{
                "name": "error-rate", "interval": "1s",
                "prometheus": {
                    "address": address, "query": "vector(0)", "max": 1,
                    "authSecretRef": {"name": "prom-auth"},
                },
            }],
        },
    })
}

async fn wait_invalid(c: &Cluster, reason: &str) -> String {
    let r = c
        .wait_rollout(NS, "flags", reason, |r| {
            condition(r, "Valid").is_some_and(|(s, why, _)| s == "False" && why == reason)
        })
        .await;
    condition(&r, "Valid")
        .map(|(_, _, m)| m)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_credentials_are_borrowed_only_from_consenting_secrets() {
    let mut c = Cluster::start().await;
    cells(&c, 1).await;
    let (address, seen) = recording_prometheus().await;
    // Any Secret in the namespace, e.g. one a workload uses, has not consented.
    c.emu
        .apply(&secret(
            "prom-auth",
            "Opaque",
            json!({}),
            json!({"token": "tok-123"}),
        ))
        .expect("Secret");
    c.start_controller().await;
    c.apply_rollout(NS, prometheus_rollout(&address)).await;
    let message = wait_invalid(&c, "CredentialsNotPermitted").await;
    assert!(
        message.contains("gates[error-rate]") && message.contains("platform/prom-auth"),
        "{message}"
    );
    assert!(
        c.get_config_map("cell-1", "flags").await.is_none(),
        "nothing written"
    );

    // A ServiceAccount token never lends itself, labelled or not.
    let labels = json!({GATE_CREDENTIALS_LABEL: "true"});
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .delete("prom-auth", &Default::default())
        .await
        .unwrap();
    c.emu
        .apply(&secret(
            "prom-auth",
            "kubernetes.io/service-account-token",
            labels.clone(),
            json!({"token": "sa-token"}),
        ))
        .expect("token Secret");
    c.wait_rollout(NS, "flags", "refused as a ServiceAccount token", |r| {
        condition(r, "Valid").is_some_and(|(_, _, m)| m.contains("ServiceAccount token"))
    })
    .await;
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent");

    // Consent, given by the label on an ordinary Secret, is noticed without a spec change.
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .delete("prom-auth", &Default::default())
        .await
        .unwrap();
    c.emu
        .apply(&secret(
            "prom-auth",
            "Opaque",
            json!({}),
            json!({"token": "tok-123"}),
        ))
        .expect("Secret");
    Api::<Secret>::namespaced(c.client.clone(), NS)
        .patch(
            "prom-auth",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": labels}})),
        )
        .await
        .unwrap();
    c.wait_rollout(NS, "flags", "Succeeded", |r| phase(r) == "Succeeded")
        .await;
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|a| a == "Bearer tok-123"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gates_may_not_call_refused_addresses() {
    let mut c = Cluster::start().await;
    cells(&c, 1).await;
    c.start_controller().await;
    for (url, refused) in [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        // Loopback beyond what the tests allow (127.0.0.1) stays refused.
        ("http://127.0.0.2:15000/quitquitquit", "loopback"),
    ] {
        c.apply_rollout(
            NS,
            json!({
                "metadata": {"name": "flags"},
                "spec": {
                    "config": {"name": "flags", "data": {"retries": "3"}},
                    "rings": [{"name": "one", "namespaces": ["cell-1"]}],
                    "gates": [{"name": "smoke", "webhook": {"url": url}}],
                },
            }),
        )
        .await;
        let r = c
            .wait_rollout(NS, "flags", url, |r| {
                condition(r, "Valid").is_some_and(|(s, why, m)| {
                    s == "False" && why == "GateAddressNotPermitted" && m.contains(refused)
                })
            })
            .await;
        let (_, _, message) = condition(&r, "Valid").unwrap();
        assert!(
            message.starts_with("gates[smoke].webhook.url:"),
            "{message}"
        );
    }
    assert!(
        c.get_config_map("cell-1", "flags").await.is_none(),
        "nothing written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_generated_revision_key() {
    let c = Cluster::start().await;
    c.namespace("ringfence-system", &[]).await;
    let source = RevisionKeySource::Secret {
        namespace: "ringfence-system".into(),
        name: "ringfence-revision-key".into(),
        create: true,
    };
    // Started together, both find no Secret; one creates it, the other reads theirs.
    let (a, b) = tokio::join!(
        load_revision_key(&c.client, &source),
        load_revision_key(&c.client, &source)
    );
    let (a, b) = (a.expect("first replica"), b.expect("second replica"));
    assert_eq!(a, b);
    let again = load_revision_key(&c.client, &source)
        .await
        .expect("restart");
    assert_eq!(a, again, "a restart reads the same key");
    let stored = Api::<Secret>::namespaced(c.client.clone(), "ringfence-system")
        .get("ringfence-revision-key")
        .await
        .unwrap();
    assert_eq!(stored.data.unwrap()[REVISION_KEY_FIELD].0, a.as_bytes());

    let given = RevisionKeySource::Secret {
        namespace: "ringfence-system".into(),
        name: "given-key".into(),
        create: false,
    };
    let err = load_revision_key(&c.client, &given)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ringfence-system/given-key") && err.contains("does not exist"),
        "{err}"
    );
    c.emu
        .apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "given-key", "namespace": "ringfence-system"},
            "stringData": {"key": "too-short"},
        }))
        .unwrap();
    let err = load_revision_key(&c.client, &given)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`key`") && err.contains("at least 32 bytes"),
        "{err}"
    );
    let long = "k".repeat(RevisionKey::MIN_LEN);
    c.emu
        .apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "given-key", "namespace": "ringfence-system"},
            "stringData": {"key": long},
        }))
        .unwrap();
    let key = load_revision_key(&c.client, &given)
        .await
        .expect("a given key");
    assert_eq!(key.as_bytes(), long.as_bytes());
}
