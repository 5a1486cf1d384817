//! The limits a real API server enforces, as clients meet them against the
//! emulator: object, request and event sizes, label and annotation syntax,
//! data keys, immutability, finalizers, apply co-ownership and throttling.

#[path = "support/tempdir.rs"]
mod tempdir;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::{Resource, ResourceExt};
use kube_emulator::{Emulator, EmulatorHandle, RequestMatch};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KUBECTL: &str = "/usr/bin/kubectl";
const CRD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
const DEADLINE: Duration = Duration::from_secs(30);

const MIB: usize = 1024 * 1024;
const INVALID_DATA_MSG: &str = "field is immutable when `immutable` is set";

async fn start() -> EmulatorHandle {
    Emulator::builder().start().await.unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The 422 a write got, checked for its code and reason.
fn invalid<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    let status = api_error(r.expect_err("the write must be refused"));
    assert_eq!(
        (status.code, status.reason.as_str()),
        (422, "Invalid"),
        "{status:?}"
    );
    status
}

fn causes(status: &kube::core::Status) -> Vec<(String, String)> {
    status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|c| (c.field.clone(), c.reason.clone()))
        .collect()
}

fn config_map(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

fn b64(bytes: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(vec![7u8; bytes])
}

async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    tokio::time::timeout(DEADLINE, stream.try_next())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("the watch stays open")
}

#[tokio::test]
async fn config_map_values_are_limited_to_one_mebibyte_summed_over_data_and_binary_data() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let half = MIB / 2;
    // Keys are not counted; binaryData counts decoded bytes.
    let at_limit: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "full"},
        "data": {"text": "t".repeat(half)},
        "binaryData": {"blob": b64(half)}
    }))
    .unwrap();
    api.create(&PostParams::default(), &at_limit).await.unwrap();

    let grow = api
        .patch(
            "full",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"one-more": "x"}})),
        )
        .await;
    let status = invalid(grow);
    assert_eq!(
        status.message,
        "ConfigMap \"full\" is invalid: []: Too long: must have at most 1048576 bytes"
    );
    assert_eq!(
        causes(&status),
        [("[]".to_string(), "FieldValueTooLong".to_string())]
    );

    let over = config_map("over", json!({"text": "t".repeat(MIB + 1)}));
    invalid(api.create(&PostParams::default(), &over).await);
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"},
                         "data": {"text": "t".repeat(MIB + 1)}});
    invalid(
        api.patch("applied", &PatchParams::apply("t"), &Patch::Apply(applied))
            .await,
    );
    assert!(api.get_opt("over").await.unwrap().is_none());
    assert!(api.get_opt("applied").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_values_are_limited_after_string_data_joins_data() {
    let emu = start().await;
    let api: Api<Secret> = Api::namespaced(emu.client(), "default");
    let secret = |name: &str, string_bytes: usize| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "data": {"a": b64(MIB / 2)},
            "stringData": {"b": "s".repeat(string_bytes)}
        }))
        .unwrap()
    };
    let stored = api
        .create(&PostParams::default(), &secret("full", MIB / 2))
        .await
        .unwrap();
    assert_eq!(stored.data.unwrap()["b"].0.len(), MIB / 2);
    let status = invalid(
        api.create(&PostParams::default(), &secret("over", MIB / 2 + 1))
            .await,
    );
    assert_eq!(
        status.message,
        "Secret \"over\" is invalid: data: Too long: must have at most 1048576 bytes"
    );
}

#[tokio::test]
async fn undecodable_binary_values_are_a_bad_request() {
    let emu = start().await;
    let api: Api<DynamicObject> = Api::namespaced_with(
        emu.client(),
        "default",
        &ApiResource::erase::<ConfigMap>(&()),
    );
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"},
        "binaryData": {"blob": "not base64!"}
    }))
    .unwrap();
    let status = api_error(api.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!(status.code, 400);
    assert!(
        status.message.starts_with(
            "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: illegal base64 data"
        ),
        "{}",
        status.message
    );
}

/// A create whose JSON body is padded with whitespace to exactly `len` bytes.
fn padded_create(len: usize) -> axum::http::Request<Vec<u8>> {
    let mut body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "padded"}})
        .to_string()
        .into_bytes();
    body.resize(len, b' ');
    axum::http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

#[tokio::test]
async fn request_bodies_are_limited_to_three_mebibytes() {
    let emu = start().await;
    let client = emu.client();
    let err = client
        .request_text(padded_create(3 * MIB + 1))
        .await
        .unwrap_err();
    let status = api_error(err);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728"
        )
    );
    client.request_text(padded_create(3 * MIB)).await.unwrap();

    // A typed client meets the limit before any validation of the object.
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let huge = config_map("huge", json!({"text": "t".repeat(3 * MIB)}));
    let status = api_error(api.create(&PostParams::default(), &huge).await.unwrap_err());
    assert_eq!(status.code, 413);
}

fn event(name: &str, note: String) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        action: Some("Reconcile".into()),
        reason: Some("Promoted".into()),
        note: Some(note),
        reporting_controller: Some("ringfence".into()),
        reporting_instance: Some("ringfence-0".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn event_notes_are_limited_to_one_kibibyte() {
    let emu = start().await;
    let events: Api<Event> = Api::namespaced(emu.client(), "default");
    events
        .create(&PostParams::default(), &event("at-limit", "n".repeat(1024)))
        .await
        .unwrap();
    let status = invalid(
        events
            .create(&PostParams::default(), &event("over", "n".repeat(1025)))
            .await,
    );
    // The real server validates the stored core form, so the field is `message`.
    assert_eq!(
        status.message,
        "Event.events.k8s.io \"over\" is invalid: message: Invalid value: \"\": can have at most 1024 characters"
    );

    // Core Events share the limit once they carry an eventTime; old-style ones have none.
    let core: Api<CoreEvent> = Api::namespaced(emu.client(), "default");
    let new_style: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "core-new"}, "involvedObject": {"namespace": "default"},
        "eventTime": "2025-01-01T00:00:00.000000Z", "reportingComponent": "ringfence",
        "reportingInstance": "ringfence-0", "action": "Reconcile", "reason": "Promoted",
        "message": "m".repeat(1025)
    }))
    .unwrap();
    let status = invalid(core.create(&PostParams::default(), &new_style).await);
    assert_eq!(
        causes(&status),
        [("message".to_string(), "FieldValueInvalid".to_string())]
    );
    let old_style: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "core-old"}, "involvedObject": {"namespace": "default"},
        "reason": "Promoted", "message": "m".repeat(4096)
    }))
    .unwrap();
    core.create(&PostParams::default(), &old_style)
        .await
        .unwrap();
}

fn labelled(name: &str, key: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {key: value}}})).unwrap()
}

#[tokio::test]
async fn label_keys_and_values_are_validated_on_every_write_and_kind() {
    let emu = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let longest_key = format!("{}/{}", "p".repeat(253), "n".repeat(63));
    cms.create(
        &PostParams::default(),
        &labelled("at-limit", &longest_key, &"v".repeat(63)),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &labelled("empty", "app", ""))
        .await
        .unwrap();

    let status = invalid(
        cms.create(&PostParams::default(), &labelled("bad", "bad key", "v"))
            .await,
    );
    assert_eq!(
        status.message,
        "ConfigMap \"bad\" is invalid: metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    let too_long = "v".repeat(64);
    let status = invalid(
        cms.create(&PostParams::default(), &labelled("long", "app", &too_long))
            .await,
    );
    assert_eq!(
        status.message,
        format!(
            "ConfigMap \"long\" is invalid: metadata.labels: Invalid value: \"{too_long}\": must be no more than 63 characters"
        )
    );
    for key in [
        format!("{}/n", "p".repeat(254)),
        format!("p/{}", "n".repeat(64)),
        "Upper.Case/x".to_string(),
    ] {
        let status = invalid(
            cms.create(&PostParams::default(), &labelled("key", &key, "v"))
                .await,
        );
        assert_eq!(causes(&status)[0].0, "metadata.labels", "{key}");
    }

    // Patch, update and apply meet the same rule.
    invalid(
        cms.patch(
            "empty",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "-dash"}}})),
        )
        .await,
    );
    let mut replaced = cms.get("empty").await.unwrap();
    replaced
        .labels_mut()
        .insert("a/b/c".to_string(), "v".to_string());
    invalid(
        cms.replace("empty", &PostParams::default(), &replaced)
            .await,
    );
    invalid(
        cms.patch(
            "empty",
            &PatchParams::apply("t"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "empty", "labels": {"ok": "no way"}}})),
        )
        .await,
    );
    assert_eq!(cms.get("empty").await.unwrap().labels()["app"], "");

    let namespaces: Api<Namespace> = Api::all(emu.client());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "cell", "labels": {"ring": "x y"}}}))
            .unwrap();
    invalid(namespaces.create(&PostParams::default(), &ns).await);

    emu.apply_dir(CRD_DIR).unwrap();
    let ar = ApiResource {
        group: "ringfence.dev".into(),
        version: "v1alpha1".into(),
        api_version: "ringfence.dev/v1alpha1".into(),
        kind: "ConfigRollout".into(),
        plural: "configrollouts".into(),
    };
    let rollouts: Api<DynamicObject> = Api::namespaced_with(emu.client(), "default", &ar);
    let cr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ringfence.dev/v1alpha1", "kind": "ConfigRollout",
        "metadata": {"name": "r", "labels": {"team": "$"}}, "spec": {}
    }))
    .unwrap();
    let status = invalid(rollouts.create(&PostParams::default(), &cr).await);
    assert!(
        status
            .message
            .starts_with("ConfigRollout.ringfence.dev \"r\" is invalid: metadata.labels:"),
        "{}",
        status.message
    );
}

fn annotated(name: &str, annotations: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap()
}

#[tokio::test]
async fn annotations_are_limited_in_key_syntax_and_total_size() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let limit = 256 * 1024;
    // Keys count with values; case does not matter in annotation keys.
    let at_limit = annotated(
        "at-limit",
        json!({"Example.COM/Key": "v".repeat(limit - 15 - 3), "abc": ""}),
    );
    api.create(&PostParams::default(), &at_limit).await.unwrap();
    let status = invalid(
        api.patch(
            "at-limit",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"abc": "x"}}})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "ConfigMap \"at-limit\" is invalid: metadata.annotations: Too long: must have at most 262144 bytes"
    );
    let status = invalid(
        api.create(
            &PostParams::default(),
            &annotated("bad", json!({"not valid!": "x"})),
        )
        .await,
    );
    assert_eq!(
        causes(&status),
        [(
            "metadata.annotations".to_string(),
            "FieldValueInvalid".to_string()
        )]
    );
}

#[tokio::test]
async fn data_keys_follow_the_config_key_rules() {
    let emu = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let longest = "k".repeat(253);
    cms.create(
        &PostParams::default(),
        &config_map("ok", json!({&longest: "", ".hidden": "", "a-b_C.9": ""})),
    )
    .await
    .unwrap();
    let status = invalid(
        cms.create(
            &PostParams::default(),
            &config_map("bad", json!({"bad key": "v"})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "ConfigMap \"bad\" is invalid: data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
    );
    for (key, message) in [
        (".", "must not be '.'"),
        ("..", "must not be '..'"),
        ("..data", "must not start with '..'"),
        (&*"k".repeat(254), "must be no more than 253 characters"),
    ] {
        let status = invalid(
            cms.create(
                &PostParams::default(),
                &config_map("bad", json!({key: "v"})),
            )
            .await,
        );
        assert!(
            status
                .message
                .ends_with(&format!("data[{key}]: Invalid value: \"{key}\": {message}")),
            "{}",
            status.message
        );
    }
    let dup: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "dup"}, "data": {"k": "v"}, "binaryData": {"k": "dg=="}}),
    )
    .unwrap();
    let status = invalid(cms.create(&PostParams::default(), &dup).await);
    assert!(
        status
            .message
            .ends_with("data[k]: Invalid value: \"k\": duplicate of key present in binaryData"),
        "{}",
        status.message
    );

    let secrets: Api<Secret> = Api::namespaced(emu.client(), "default");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"a/b": "v"}}))
            .unwrap();
    let status = invalid(secrets.create(&PostParams::default(), &secret).await);
    assert_eq!(
        causes(&status),
        [("data[a/b]".to_string(), "FieldValueInvalid".to_string())]
    );
}

#[tokio::test]
async fn immutable_config_maps_keep_their_data_but_not_their_metadata() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let prior: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "prior", "finalizers": ["ringfence.dev/prior"]},
        "immutable": true,
        "data": {"k": "v"},
        "binaryData": {"b": "dg=="}
    }))
    .unwrap();
    api.create(&PostParams::default(), &prior).await.unwrap();

    let status = invalid(
        api.patch(
            "prior",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "changed"}})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        format!("ConfigMap \"prior\" is invalid: data: Forbidden: {INVALID_DATA_MSG}")
    );
    let status = invalid(
        api.patch(
            "prior",
            &PatchParams::default(),
            &Patch::Merge(json!({"binaryData": null})),
        )
        .await,
    );
    assert_eq!(
        causes(&status),
        [("binaryData".to_string(), "FieldValueForbidden".to_string())]
    );
    let status = invalid(
        api.patch(
            "prior",
            &PatchParams::default(),
            &Patch::Merge(json!({"immutable": false})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        format!("ConfigMap \"prior\" is invalid: immutable: Forbidden: {INVALID_DATA_MSG}")
    );
    let mut replaced = api.get("prior").await.unwrap();
    replaced.data = None;
    invalid(
        api.replace("prior", &PostParams::default(), &replaced)
            .await,
    );
    let apply = |data: Value| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "prior"}, "immutable": true, "data": data}))
    };
    // Another value conflicts first; forced, it meets immutability.
    invalid(
        api.patch(
            "prior",
            &PatchParams::apply("other").force(),
            &apply(json!({"k": "x"})),
        )
        .await,
    );
    // Applying what is already there changes nothing and is allowed.
    api.patch(
        "prior",
        &PatchParams::apply("other"),
        &apply(json!({"k": "v"})),
    )
    .await
    .unwrap();

    // Metadata still changes: labels, annotations, finalizers; then delete completes.
    api.patch(
        "prior",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}})),
    )
    .await
    .unwrap();
    let marked = api
        .delete("prior", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a finalizer keeps the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.data.unwrap()["k"], "v");
    api.patch(
        "prior",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("prior").await.unwrap().is_none());
}

#[tokio::test]
async fn immutable_secrets_keep_data_and_string_data_and_no_secret_changes_type() {
    let emu = start().await;
    let api: Api<Secret> = Api::namespaced(emu.client(), "default");
    let prior: Secret = serde_json::from_value(json!({
        "metadata": {"name": "prior"}, "immutable": true, "stringData": {"k": "v"}
    }))
    .unwrap();
    api.create(&PostParams::default(), &prior).await.unwrap();
    for patch in [
        json!({"stringData": {"k": "changed"}}),
        json!({"stringData": {"new": "v"}}),
        json!({"data": {"k": "eA=="}}),
    ] {
        let status = invalid(
            api.patch("prior", &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        );
        assert_eq!(
            status.message,
            format!("Secret \"prior\" is invalid: data: Forbidden: {INVALID_DATA_MSG}"),
            "{patch}"
        );
    }
    // Restating the same value through stringData is no change.
    api.patch(
        "prior",
        &PatchParams::default(),
        &Patch::Merge(json!({"stringData": {"k": "v"}})),
    )
    .await
    .unwrap();

    let mutable = Secret {
        metadata: ObjectMeta {
            name: Some("mutable".into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), ByteString(b"v".to_vec()))].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &mutable).await.unwrap();
    let status = invalid(
        api.patch(
            "mutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Secret \"mutable\" is invalid: type: Invalid value: \"kubernetes.io/tls\": field is immutable"
    );
}

#[tokio::test]
async fn finalizers_hold_deleted_config_maps_for_full_and_metadata_watches() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let held: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["ringfence.dev/prior"]},
        "data": {"k": "v"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &held).await.unwrap();
    let rv = created.resource_version().unwrap();
    let wp = WatchParams::default().fields("metadata.name=held");
    let mut full = api.watch(&wp, &rv).await.unwrap().boxed();
    let mut metadata = api.watch_metadata(&wp, &rv).await.unwrap().boxed();

    let marked = api
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("a finalizer keeps the object");
    assert!(marked.metadata.deletion_timestamp.is_some());
    match next_event(&mut full).await {
        WatchEvent::Modified(cm) => {
            assert!(cm.metadata.deletion_timestamp.is_some());
            assert_eq!(cm.data.unwrap()["k"], "v");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    match next_event(&mut metadata).await {
        WatchEvent::Modified(m) => {
            assert!(m.metadata.deletion_timestamp.is_some());
            assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert!(
        api.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // Metadata-only lists carry metadata only.
    let listed = api.list_metadata(&ListParams::default()).await.unwrap();
    assert!(listed.items[0].metadata.deletion_timestamp.is_some());
    let raw = emu
        .client()
        .request_text(
            axum::http::Request::get("/api/v1/namespaces/default/configmaps")
                .header(
                    "accept",
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (&raw["kind"], &raw["apiVersion"]),
        (
            &json!("PartialObjectMetadataList"),
            &json!("meta.k8s.io/v1")
        )
    );
    assert_eq!(raw["items"][0]["kind"], "PartialObjectMetadata");
    assert!(raw["items"][0].get("data").is_none(), "{raw}");

    // A metadata-only client releases it, as an operator's finalizer handling does.
    let released = api
        .patch_metadata(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(released.metadata.name.as_deref(), Some("held"));
    assert!(matches!(
        next_event(&mut full).await,
        WatchEvent::Deleted(_)
    ));
    assert!(matches!(
        next_event(&mut metadata).await,
        WatchEvent::Deleted(_)
    ));
    assert!(api.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn delete_collection_by_label_honours_finalizers() {
    let emu = start().await;
    let api: Api<Secret> = Api::namespaced(emu.client(), "default");
    for (name, batch, finalizers) in [
        ("held", "one", json!(["ringfence.dev/prior"])),
        ("free", "one", json!([])),
        ("other", "two", json!([])),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"batch": batch}, "finalizers": finalizers},
            "stringData": {"k": "v"}
        }))
        .unwrap();
        api.create(&PostParams::default(), &s).await.unwrap();
    }
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("batch=one"),
        )
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(deleted.items.len(), 2);
    assert!(api.get_opt("free").await.unwrap().is_none());
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("other")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
}

#[tokio::test]
async fn throttled_requests_say_when_to_retry() {
    let emu = start().await;
    emu.faults().fail_next(
        1,
        RequestMatch::any().verb("get").resource("namespaces"),
        429,
    );
    let mut stream = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    let request = format!(
        "GET /api/v1/namespaces/default HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        emu.addr(),
        emu.admin_token()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(DEADLINE, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("retry-after: 1")),
        "{head}"
    );
    let status: Value = serde_json::from_str(body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);

    // kube's client honours it: the retry waits the second the server asked for.
    emu.faults().fail_next(
        1,
        RequestMatch::any().verb("get").resource("namespaces"),
        429,
    );
    let namespaces: Api<Namespace> = Api::all(emu.client());
    let started = Instant::now();
    namespaces.get("default").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// kubectl with its own kubeconfig and cache.
struct Kubectl {
    dir: tempdir::TempDir,
}

impl Kubectl {
    fn new(emu: &EmulatorHandle) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "{KUBECTL} is required by these tests (CI installs it); it is missing"
        );
        let dir = tempdir::tempdir().unwrap();
        emu.write_kubeconfig(dir.path().join("kubeconfig")).unwrap();
        Kubectl { dir }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(KUBECTL);
        cmd.arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs to completion: success, stdout, stderr.
    async fn run(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish"))
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_client_side_apply_meets_the_annotation_limit() {
    let emu = start().await;
    let k = Kubectl::new(&emu);
    // Client-side apply stores the whole object in an annotation, so data that
    // fits a ConfigMap can still be too big to apply.
    let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        "data": {"blob": "b".repeat(300 * 1024)}})
    .to_string();
    let (ok, stdout, stderr) = k.run(&["apply", "-f", "-"], &manifest).await;
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = k
        .run(&["apply", "--server-side", "-f", "-"], &manifest)
        .await;
    assert!(ok, "{stdout}{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_delete_by_label_waits_for_finalizers() {
    let emu = start().await;
    let k = Kubectl::new(&emu);
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    for (name, finalizers) in [
        ("held", json!(["ringfence.dev/prior"])),
        ("free", json!([])),
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"batch": "one"}, "finalizers": finalizers}
        }))
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut changes = api
        .watch(&WatchParams::default().fields("metadata.name=held"), &rv)
        .await
        .unwrap()
        .boxed();
    let delete = k
        .command(&["delete", "configmap", "-n", "default", "-l", "batch=one"])
        .spawn()
        .unwrap();
    match next_event(&mut changes).await {
        WatchEvent::Modified(cm) => assert!(cm.metadata.deletion_timestamp.is_some()),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(DEADLINE, delete.wait_with_output())
        .await
        .expect("kubectl delete returns once the finalizer is gone")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configmap \"held\" deleted"), "{stdout}");
    assert!(
        api.list(&ListParams::default().labels("batch=one"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_applying_the_same_crd_co_own_it() {
    let emu = start().await;
    let k = Kubectl::new(&emu);
    let (ok, stdout, stderr) = k.run(&["apply", "--server-side", "-f", CRD_DIR], "").await;
    assert!(ok, "{stdout}{stderr}");
    let api: Api<CustomResourceDefinition> = Api::all(emu.client());
    let mut crd = ringfence::api::crd();
    let name = crd.name_any();
    let applied = api
        .patch(&name, &PatchParams::apply("ringfence"), &Patch::Apply(&crd))
        .await
        .unwrap();
    let owners: Vec<String> = applied
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:versions").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(owners, ["kubectl", "ringfence"]);
    // kubectl re-applies its file: still the same value, still no conflict.
    let (ok, stdout, stderr) = k.run(&["apply", "--server-side", "-f", CRD_DIR], "").await;
    assert!(ok, "{stdout}{stderr}");

    // A different value is a conflict with the co-owner.
    crd.spec.versions[0].served = false;
    let status = api_error(
        api.patch(&name, &PatchParams::apply("ringfence"), &Patch::Apply(&crd))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("conflict with \"kubectl\""),
        "{}",
        status.message
    );
}
