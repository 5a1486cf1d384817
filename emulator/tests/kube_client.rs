//! The emulator as kube-rs sees it: CRUD, apply, status, watches, runtime.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, WatchEvent,
    WatchParams,
};
use kube::runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher};
use kube::{Client, CustomResource, ResourceExt};
use kube_emulator::{AdmissionHook, Emulator, EmulatorHandle, FieldViolation, RequestMatch};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Generous: the machine running tests may be loaded.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "test.ringfence.dev",
    version = "v1",
    kind = "Widget",
    namespaced
)]
#[kube(status = "WidgetStatus")]
pub struct WidgetSpec {
    pub replicas: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    pub observed_generation: Option<i64>,
    pub ready: Option<bool>,
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.ringfence.dev"},
        "spec": {
            "group": "test.ringfence.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"}
                ],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "replicas": {"type": "integer"},
                        "color": {"type": "string", "default": "blue"}
                    }},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}}
            }]
        }
    }))
    .unwrap()
}

async fn start() -> EmulatorHandle {
    Emulator::builder().start().await.unwrap()
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

async fn install_widgets(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "a stored CRD is established at once");
}

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn widget(name: &str, replicas: i64) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            replicas,
            color: None,
        },
    )
}

/// Polls `check` until it holds or the deadline passes.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while start.elapsed() < DEADLINE {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn configmap_crud_and_errors() {
    let emu = start().await;
    let client = emu.client();
    namespace(&client, "crud").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "crud");

    let created = api
        .create(&PostParams::default(), &cm("a", &[], &[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created.resource_version().unwrap().parse().unwrap();

    let again = api_error(
        api.create(&PostParams::default(), &cm("a", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let mut generated = cm("", &[], &[]);
    generated.metadata.generate_name = Some("gen-".into());
    let generated = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);

    let mut changed = api.get("a").await.unwrap();
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    let replaced = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    let rv2: u64 = replaced.resource_version().unwrap().parse().unwrap();
    assert!(rv2 > rv1);

    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"x": "y"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap().len(), 2);
    let json_patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(json!([{"op": "remove", "path": "/data/x"}])).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(json_patched.data.unwrap().len(), 1);

    let missing_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let err = api_error(
        missing_ns
            .create(&PostParams::default(), &cm("b", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert!(
        err.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        err.message
    );

    let not_found = api_error(api.get("zzz").await.unwrap_err());
    assert_eq!(not_found.code, 404);
    assert_eq!(not_found.message, "configmaps \"zzz\" not found");

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("a").await.unwrap().is_none());

    // Stale resourceVersion on update and on patch.
    let stale = generated.clone();
    api.patch(
        &generated.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"n": "1"}})),
    )
    .await
    .unwrap();
    let err = api_error(
        api.replace(&generated.name_any(), &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    let stale_rv = stale.resource_version().unwrap();
    let err = api_error(
        api.patch(
            &generated.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": stale_rv}, "data": {"n": "2"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn unknown_paths_and_bad_bodies_are_statuses() {
    let emu = start().await;
    let (code, body) = raw(&emu, "GET", "/apis/nothing.example/v1/things", "", b"").await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    let (code, body) = raw(
        &emu,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{not json",
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
    let (code, _) = raw(
        &emu,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/x",
        "text/plain",
        b"{}",
    )
    .await;
    assert_eq!(code, 415);
    let (code, body) = raw(
        &emu,
        "PUT",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"{}",
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, _) = raw(
        &emu,
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b",
        "",
        b"",
    )
    .await;
    assert_eq!(code, 400);
}

/// Sends a bare HTTP/1.1 request and reads until the server closes the connection.
async fn exchange(
    emu: &EmulatorHandle,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(emu.addr()).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        emu.admin_token(),
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(out)
}

/// A bare HTTP/1.1 request, for what typed clients cannot send.
async fn raw(
    emu: &EmulatorHandle,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let out = exchange(emu, method, path, content_type, body)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let code: u16 = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    // Either a content-length body or a single chunk.
    let json_start = body.find(['{', '[']).unwrap_or(0);
    let json_end = body.rfind(['}', ']']).map_or(body.len(), |e| e + 1);
    (
        code,
        serde_json::from_str(&body[json_start..json_end]).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn custom_resources_status_subresource_and_generation() {
    let emu = start().await;
    let client = emu.client();
    install_widgets(&client).await;
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");

    let mut w = widget("w1", 1);
    w.status = Some(WidgetStatus {
        observed_generation: Some(9),
        ready: Some(true),
    });
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.spec.color.as_deref(),
        Some("blue"),
        "schema default applied"
    );

    let spec = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));

    let labelled = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(2),
        "metadata changes keep generation"
    );

    let with_status = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 99}, "status": {"observedGeneration": 2, "ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status.metadata.generation,
        Some(2),
        "status writes keep generation"
    );
    assert_eq!(with_status.spec.replicas, 2, "status writes ignore spec");
    assert_eq!(with_status.status.as_ref().unwrap().ready, Some(true));

    let mut main = api.get("w1").await.unwrap();
    main.status = Some(WidgetStatus {
        observed_generation: Some(0),
        ready: Some(false),
    });
    main.spec.replicas = 3;
    let replaced = api
        .replace("w1", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.as_ref().unwrap().ready,
        Some(true),
        "main writes ignore status"
    );
    assert_eq!(replaced.metadata.generation, Some(3));

    let applied = api
        .patch_status(
            "w1",
            &PatchParams::apply("status-writer").force(),
            &Patch::Apply(json!({
                "apiVersion": "test.ringfence.dev/v1", "kind": "Widget",
                "metadata": {"name": "w1"},
                "status": {"observedGeneration": 3}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        applied.status.as_ref().unwrap().observed_generation,
        Some(3)
    );
    let entry = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));

    let mut status_only = api.get_status("w1").await.unwrap();
    status_only.status = Some(WidgetStatus {
        observed_generation: Some(3),
        ready: Some(false),
    });
    let replaced = api
        .replace_status("w1", &PostParams::default(), &status_only)
        .await
        .unwrap();
    assert_eq!(replaced.status.unwrap().ready, Some(false));

    let list = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    api.delete("w1", &DeleteParams::default()).await.unwrap();
    assert!(api.get_opt("w1").await.unwrap().is_none());
}

#[tokio::test]
async fn server_side_apply_tracks_managers_and_conflicts() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let applied = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});

    api.patch(
        "ssa",
        &PatchParams::apply("alpha"),
        &Patch::Apply(applied(json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    // Same value: shared ownership, no conflict.
    api.patch(
        "ssa",
        &PatchParams::apply("beta"),
        &Patch::Apply(applied(json!({"a": "1"}))),
    )
    .await
    .unwrap();

    let err = api_error(
        api.patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(applied(json!({"b": "3"}))),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"alpha\": .data.b"
    );

    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(applied(json!({"b": "3"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["b"], "3");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, vec!["alpha".to_string(), "beta".to_string()]);

    // alpha no longer applies a; beta stopped applying it too: it goes. b is beta's now.
    let after = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied(json!({"c": "4"}))),
        )
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), vec!["b", "c"]);

    // A plain update takes ownership, so a later apply of another value conflicts with it.
    api.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"c": "edited"}})),
    )
    .await
    .unwrap();
    let err = api_error(
        api.patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied(json!({"c": "4"}))),
        )
        .await
        .unwrap_err(),
    );
    assert!(err.message.contains(".data.c"), "{}", err.message);

    // Apply creates missing objects, YAML bodies included.
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let created = api
        .patch(
            "from-yaml",
            &PatchParams::apply("yaml"),
            &Patch::Apply(
                serde_json::to_value(serde_saphyr::from_str::<Value>(yaml).unwrap()).unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["k"], "v");
}

#[tokio::test]
async fn selectors_and_pagination() {
    let emu = start().await;
    let client = emu.client();
    namespace(&client, "sel").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "sel");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        let mut labels = vec![("tier", tier)];
        if i % 5 == 0 {
            labels.push(("canary", "yes"));
        }
        api.create(
            &PostParams::default(),
            &cm(&format!("cm-{i:02}"), &labels, &[]),
        )
        .await
        .unwrap();
    }
    let count = |sel: &'static str| {
        let api = api.clone();
        async move {
            api.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(count("tier=front").await, 13);
    assert_eq!(count("tier==back").await, 12);
    assert_eq!(count("tier!=front").await, 12);
    assert_eq!(count("tier in (front,back)").await, 25);
    assert_eq!(count("tier notin (front)").await, 12);
    assert_eq!(count("canary").await, 5);
    assert_eq!(count("!canary").await, 20);
    assert_eq!(count("canary,tier=back").await, 2);

    let by_name = api
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let not_name = api
        .list(&ListParams::default().fields("metadata.name!=cm-07,metadata.namespace=sel"))
        .await
        .unwrap();
    assert_eq!(not_name.items.len(), 24);

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        names.extend(page.items.iter().map(|c| c.name_any()));
        // Writes between pages do not show: continuation is a consistent snapshot.
        api.create(
            &PostParams::default(),
            &cm(&format!("late-{pages}"), &[], &[]),
        )
        .await
        .unwrap();
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => {
                lp = ListParams::default().limit(10).continue_token(&token)
            }
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    assert!(names.windows(2).all(|w| w[0] < w[1]));

    // Exact resourceVersion reads the past; a compacted one is Gone.
    let rv = first_rv.unwrap().unwrap();
    let exact = api
        .list(
            &ListParams::default()
                .at(&rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 25);
    assert_eq!(
        exact.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
}

#[tokio::test]
async fn too_old_resource_versions_are_gone() {
    let emu = Emulator::builder().history_limit(5).start().await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let first = api
        .create(&PostParams::default(), &cm("old", &[], &[]))
        .await
        .unwrap();
    for i in 0..10 {
        api.create(&PostParams::default(), &cm(&format!("n{i}"), &[], &[]))
            .await
            .unwrap();
    }
    let rv = first.resource_version().unwrap();
    let err = api_error(
        api.list(
            &ListParams::default()
                .at(&rv)
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (410, "Expired"));

    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_events_bookmarks_and_selector_transitions() {
    let emu = Emulator::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let start_rv = emu.resource_version().to_string();
    let mut stream = api
        .watch(
            &WatchParams::default().labels("app=web").timeout(30),
            &start_rv,
        )
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("x", &[("app", "web")], &[]))
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "1"}})),
    )
    .await
    .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("other", &[], &[]))
        .await
        .unwrap();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    api.delete("x", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut bookmark = false;
    let mut last_rv = 0u64;
    while seen.len() < 5 || !bookmark {
        let ev = tokio::time::timeout(DEADLINE, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let (kind, obj) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(b) => {
                let rv: u64 = b.metadata.resource_version.parse().unwrap();
                assert!(rv >= last_rv);
                bookmark = true;
                continue;
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        };
        let rv: u64 = obj.resource_version().unwrap().parse().unwrap();
        assert!(rv > last_rv, "resourceVersions increase");
        last_rv = rv;
        seen.push((kind, obj.name_any()));
    }
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        vec!["ADDED", "MODIFIED", "DELETED", "ADDED", "DELETED"]
    );
    assert!(seen.iter().all(|(_, n)| n == "x"));
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let mut c = cm("fin", &[], &[]);
    c.metadata.finalizers = Some(vec!["test/hold".into()]);
    api.create(&PostParams::default(), &c).await.unwrap();
    api.delete("fin", &DeleteParams::default()).await.unwrap();
    let marked = api.get("fin").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    let err = api_error(
        api.patch(
            "fin",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["test/hold", "new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("fin").await.unwrap().is_none());

    // Preconditions.
    let c = api
        .create(&PostParams::default(), &cm("pre", &[], &[]))
        .await
        .unwrap();
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("nope".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        api_error(api.delete("pre", &wrong).await.unwrap_err()).code,
        409
    );
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: c.uid(),
            resource_version: c.resource_version(),
        }),
        ..Default::default()
    };
    api.delete("pre", &right).await.unwrap();
}

fn owned_by(name: &str, owner: &ConfigMap, finalizer: Option<&str>) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "finalizers": finalizer.map(|f| vec![f]).unwrap_or_default(),
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(),
                                 "uid": owner.uid().unwrap(), "blockOwnerDeletion": true}]
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn owner_references_cascade() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let pp = PostParams::default();

    // Background: dependents go with the owner.
    let owner = api.create(&pp, &cm("owner-bg", &[], &[])).await.unwrap();
    api.create(&pp, &owned_by("dep-bg", &owner, None))
        .await
        .unwrap();
    api.delete("owner-bg", &DeleteParams::background())
        .await
        .unwrap();
    assert!(api.get_opt("dep-bg").await.unwrap().is_none());

    // Foreground: the owner waits for its dependents.
    let owner = api.create(&pp, &cm("owner-fg", &[], &[])).await.unwrap();
    api.create(&pp, &owned_by("dep-fg", &owner, Some("test/hold")))
        .await
        .unwrap();
    api.delete("owner-fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = api.get("owner-fg").await.unwrap();
    assert!(
        waiting
            .finalizers()
            .contains(&"foregroundDeletion".to_string())
    );
    assert!(
        api.get("dep-fg")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "dep-fg",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("dep-fg").await.unwrap().is_none());
    assert!(api.get_opt("owner-fg").await.unwrap().is_none());

    // Orphan: dependents stay, without the reference.
    let owner = api.create(&pp, &cm("owner-or", &[], &[])).await.unwrap();
    api.create(&pp, &owned_by("dep-or", &owner, None))
        .await
        .unwrap();
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("owner-or", &orphan).await.unwrap();
    assert!(api.get_opt("owner-or").await.unwrap().is_none());
    let dep = api.get("dep-or").await.unwrap();
    assert!(dep.owner_references().is_empty());
}

#[tokio::test]
async fn namespace_deletion_removes_contents() {
    let emu = start().await;
    let client = emu.client();
    namespace(&client, "doomed").await;
    install_widgets(&client).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "doomed");
    cms.create(&PostParams::default(), &cm("a", &[], &[]))
        .await
        .unwrap();
    let mut held = widget("held", 1);
    held.metadata.finalizers = Some(vec!["test/hold".into()]);
    widgets.create(&PostParams::default(), &held).await.unwrap();

    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    assert!(cms.get_opt("a").await.unwrap().is_none());
    let ns = nss.get("doomed").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let err = api_error(
        cms.create(&PostParams::default(), &cm("b", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);

    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(nss.get_opt("doomed").await.unwrap().is_none());
}

#[tokio::test]
async fn deleting_a_crd_deletes_its_objects() {
    let emu = start().await;
    let client = emu.client();
    install_widgets(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    widgets
        .create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.test.ringfence.dev", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        crds.get_opt("widgets.test.ringfence.dev")
            .await
            .unwrap()
            .is_none()
    );
    let err = api_error(widgets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 404);
    // Re-registering starts empty.
    install_widgets(&client).await;
    assert!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn watcher_and_reflector_survive_expiry_and_dropped_watches() {
    let emu = Emulator::builder()
        .history_limit(10)
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let client = emu.client();
    namespace(&client, "refl").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "refl");
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("pre-{i}"), &[], &[]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while stream.next().await.is_some() {}
    });
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();

    let faults = emu.faults();
    let watches = || {
        emu.request_log()
            .count(|r| r.verb == "watch" && r.resource == "configmaps")
    };
    let lists = || {
        emu.request_log()
            .count(|r| r.verb == "list" && r.resource == "configmaps")
    };
    for round in 0..4 {
        let before = watches();
        match round {
            0 => faults.close_watches(),
            // The next watch is told its resourceVersion expired: the watcher must relist.
            1 => {
                faults.expire_next_watch(Some("configmaps"));
                faults.close_watches();
            }
            // Drop the watch and write more than the history keeps, so resuming needs a relist.
            _ => faults.close_watches(),
        }
        for i in 0..15 {
            let name = format!("r{round}-{i}");
            api.create(&PostParams::default(), &cm(&name, &[], &[]))
                .await
                .unwrap();
            if i % 3 == 0 {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"x": "y"}})),
                )
                .await
                .unwrap();
            }
            if i % 4 == 0 {
                api.delete(&name, &DeleteParams::default()).await.unwrap();
            }
        }
        api.delete(&format!("pre-{round}"), &DeleteParams::default())
            .await
            .unwrap();
        eventually("the watcher watches again", || {
            let now = watches();
            async move { now > before }
        })
        .await;
    }

    let expected = || {
        let api = api.clone();
        async move {
            let mut v: Vec<(String, String)> = api
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .iter()
                .map(|c| (c.name_any(), c.resource_version().unwrap()))
                .collect();
            v.sort();
            v
        }
    };
    let want = expected().await;
    eventually("reflector matches the final list", || {
        let reader = reader.clone();
        let want = want.clone();
        async move {
            let mut have: Vec<(String, String)> = reader
                .state()
                .iter()
                .map(|c| (c.name_any(), c.resource_version().unwrap()))
                .collect();
            have.sort();
            have == want
        }
    })
    .await;
    assert!(lists() >= 2, "expiry forced a relist");
    driver.abort();
}

#[derive(Clone)]
struct Ctx {
    api: Api<Widget>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let status = json!({
        "apiVersion": "test.ringfence.dev/v1", "kind": "Widget",
        "metadata": {"name": w.name_any()},
        "status": {"observedGeneration": w.metadata.generation, "ready": w.spec.replicas > 0}
    });
    ctx.api
        .patch_status(
            &w.name_any(),
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(status),
        )
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_reconciles_on_changes() {
    let emu = start().await;
    let client = emu.client();
    install_widgets(&client).await;
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Ctx { api: api.clone() }))
        .for_each(|_| async {});
    let driver = tokio::spawn(controller);

    api.create(&PostParams::default(), &widget("c1", 0))
        .await
        .unwrap();
    let observed = |generation: i64, ready: bool| {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move {
                api.get("c1").await.ok().and_then(|w| w.status)
                    == Some(WidgetStatus {
                        observed_generation: Some(generation),
                        ready: Some(ready),
                    })
            }
        }
    };
    eventually("first reconcile", observed(1, false)).await;
    api.patch(
        "c1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    eventually("reconcile after a spec change", observed(2, true)).await;

    // At rest the controller does not write.
    let writes_before = emu
        .request_log()
        .count(|r| r.is_write() && r.resource == "widgets");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes_after = emu
        .request_log()
        .count(|r| r.is_write() && r.resource == "widgets");
    assert!(
        writes_after <= writes_before + 1,
        "{writes_before} -> {writes_after}"
    );
    driver.abort();
}

#[tokio::test]
async fn fault_injection_and_request_log() {
    let emu = start().await;
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let faults = emu.faults();
    faults.fail_next(
        2,
        RequestMatch::any().verb("create").resource("configmaps"),
        500,
    );
    for _ in 0..2 {
        let err = api_error(
            api.create(&PostParams::default(), &cm("f", &[], &[]))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, 500);
    }
    api.create(&PostParams::default(), &cm("f", &[], &[]))
        .await
        .unwrap();
    api.get("f").await.unwrap();

    faults.fail_fraction(0.5, RequestMatch::any().verb("get").name("f"), 409, 42);
    let mut failed = 0;
    for _ in 0..40 {
        if api.get("f").await.is_err() {
            failed += 1;
        }
    }
    assert!((5..35).contains(&failed), "about half fail: {failed}");
    faults.clear();
    api.get("f").await.unwrap();

    faults.delay(RequestMatch::any().verb("list"), Duration::from_millis(300));
    let t = tokio::time::Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    faults.clear();

    let log = emu.request_log();
    let creates: Vec<_> = log
        .entries()
        .into_iter()
        .filter(|r| r.verb == "create" && r.resource == "configmaps")
        .collect();
    assert_eq!(
        creates.iter().map(|r| r.code).collect::<Vec<_>>(),
        vec![500, 500, 201]
    );
    assert!(creates.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(creates[2].namespace, "default");
    assert!(log.count(|r| r.is_write()) >= 3);
}

/// Waits for an item `wanted` selects from a watcher's output.
async fn until<T>(
    items: &mut tokio::sync::mpsc::UnboundedReceiver<T>,
    what: &str,
    wanted: impl Fn(&T) -> bool,
) {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = items.recv().await {
            if wanted(&item) {
                return;
            }
        }
        panic!("the watcher stopped before: {what}");
    })
    .await;
    assert!(found.is_ok(), "timed out waiting for: {what}");
}

#[tokio::test]
async fn partition_cuts_the_network_until_healed() {
    let emu = start().await;
    let faults = emu.faults();
    let api: Api<ConfigMap> = Api::namespaced(emu.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut raw_watch = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
    let driver = tokio::spawn(async move {
        let mut stream = stream.boxed();
        while let Some(item) = stream.next().await {
            let _ = tx.send(item);
        }
    });
    until(&mut events, "the watcher's initial list", |e| {
        matches!(e, Ok(watcher::Event::InitDone))
    })
    .await;
    let watches = || {
        emu.request_log()
            .count(|r| r.verb == "watch" && r.resource == "configmaps")
    };
    eventually("both watches are open", || {
        let open = watches();
        async move { open == 2 }
    })
    .await;

    faults.partition(true);
    assert!(faults.partitioned());
    let seen = emu.request_log().last_seq();
    let ended = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(_)) = raw_watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the open watch ends");
    until(&mut events, "the watcher fails", Result::is_err).await;
    let failed = tokio::time::timeout(Duration::from_secs(5), api.list(&ListParams::default()))
        .await
        .expect("a partitioned list fails at once");
    match failed {
        Err(kube::Error::Api(s)) => panic!("expected a connection error, got status {s:?}"),
        Err(_) => {}
        Ok(_) => panic!("a list got through the partition"),
    }
    emu.apply(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "during", "namespace": "default"}
    }))
    .unwrap();
    assert_eq!(
        emu.request_log().since(seen),
        vec![],
        "no request reached the server"
    );

    faults.partition(false);
    eventually("the same client lists again", || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.is_ok() }
    })
    .await;
    until(&mut events, "the watcher sees what changed meanwhile", |e| {
        matches!(e, Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) if c.name_any() == "during")
    })
    .await;
    driver.abort();
}

#[tokio::test]
async fn partition_through_the_fault_endpoint() {
    let emu = start().await;
    let body = br#"{"action": "partition", "on": true}"#;
    // The reply is lost too: the partition cuts the connection that asked for it.
    let reply = exchange(&emu, "POST", "/_emulator/faults", "application/json", body).await;
    assert!(reply.unwrap_or_default().is_empty());
    assert!(emu.faults().partitioned());
    let reply = exchange(&emu, "GET", "/api/v1/namespaces/default", "", b"").await;
    assert!(reply.unwrap_or_default().is_empty(), "dropped unanswered");

    // Nothing reaches the endpoint while partitioned, so the same JSON form ends it in process.
    let off = serde_json::from_str(r#"{"action": "partition", "on": false}"#).unwrap();
    emu.faults().configure(off);
    let (code, _) = raw(&emu, "GET", "/api/v1/namespaces/default", "", b"").await;
    assert_eq!(code, 200);
    let off = br#"{"action": "partition", "on": false}"#;
    let (code, _) = raw(&emu, "POST", "/_emulator/faults", "application/json", off).await;
    assert_eq!(code, 200, "the endpoint accepts the healing form too");
}

#[tokio::test]
async fn admission_hook_rejects_with_field_errors() {
    let hook: AdmissionHook = Arc::new(|crd: &Value, version: &str, obj: &Value| {
        assert_eq!(crd["spec"]["group"], "test.ringfence.dev");
        assert_eq!(version, "v1");
        match obj.pointer("/spec/replicas").and_then(Value::as_i64) {
            Some(r) if r < 0 => vec![FieldViolation::new(
                "spec.replicas",
                "FieldValueInvalid",
                format!("Invalid value: {r}: must be greater than or equal to 0"),
            )],
            _ => Vec::new(),
        }
    });
    let emu = Emulator::builder().admission(hook).start().await.unwrap();
    let client = emu.client();
    install_widgets(&client).await;
    let api: Api<Widget> = Api::namespaced(client, "default");
    let err = api_error(
        api.create(&PostParams::default(), &widget("bad", -1))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.test.ringfence.dev \"bad\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.replicas");
    assert_eq!(causes[0].reason, "FieldValueInvalid");

    api.create(&PostParams::default(), &widget("good", 1))
        .await
        .unwrap();
    let err = api_error(
        api.patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -5}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(api.get("good").await.unwrap().spec.replicas, 1);
}

#[tokio::test]
async fn rbac_authorizes_service_accounts() {
    let emu = Emulator::builder()
        .authorization(true)
        .start()
        .await
        .unwrap();
    let admin = emu.client();
    namespace(&admin, "team").await;
    let token = emu.service_account_token("team", "bot");
    let bot: Api<ConfigMap> = Api::namespaced(emu.client_for_token(&token), "team");

    let err = api_error(bot.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        err.message,
        "configmaps is forbidden: User \"system:serviceaccount:team:bot\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"team\""
    );

    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), "team");
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
        })).unwrap())
        .await
        .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), "team");
    bindings
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "bot-reads"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "team"}]
        })).unwrap())
        .await
        .unwrap();
    bot.list(&ListParams::default()).await.unwrap();
    let err = api_error(
        bot.create(&PostParams::default(), &cm("x", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);

    let anonymous = kube::Client::try_from(kube::Config::new(emu.url().parse().unwrap())).unwrap();
    let anon: Api<ConfigMap> = Api::namespaced(anonymous, "team");
    assert_eq!(
        api_error(anon.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );
    let user = emu
        .request_log()
        .entries()
        .into_iter()
        .rev()
        .find(|r| r.user.is_some())
        .unwrap();
    assert!(user.user.unwrap().starts_with("system:"));
}

#[tokio::test]
async fn written_kubeconfigs_work_for_kube_clients() {
    let emu = Emulator::builder()
        .authorization(true)
        .start()
        .await
        .unwrap();
    let path =
        std::env::temp_dir().join(format!("kube-emulator-{}.kubeconfig", std::process::id()));
    emu.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path);
    let _ = std::fs::remove_file(&path);
    let kubeconfig = kubeconfig.unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let nss: Api<Namespace> = Api::all(client);
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
}

#[tokio::test]
async fn recorded_events_show_through_the_core_api() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder};

    let emu = start().await;
    let client = emu.client();
    install_widgets(&client).await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("noisy", 1))
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), "widget-controller".into());
    let event = Event {
        type_: EventType::Normal,
        reason: "Scaled".into(),
        note: Some("scaled to 1".into()),
        action: "Scale".into(),
        secondary: None,
    };
    recorder.publish(&event, &w.object_ref(&())).await.unwrap();
    recorder.publish(&event, &w.object_ref(&())).await.unwrap();

    let core: Api<CoreEvent> = Api::namespaced(client, "default");
    let selector = format!(
        "involvedObject.name=noisy,involvedObject.kind=Widget,involvedObject.uid={}",
        w.uid().unwrap()
    );
    let events = core
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 1, "a repeated event is one series");
    let e = &events[0];
    assert_eq!(e.message.as_deref(), Some("scaled to 1"));
    assert_eq!(e.reason.as_deref(), Some("Scaled"));
    assert_eq!(e.reporting_component.as_deref(), Some("widget-controller"));
    assert_eq!(e.series.as_ref().and_then(|s| s.count), Some(2));
}

#[tokio::test]
async fn fault_and_log_endpoints_speak_json() {
    let emu = start().await;
    let body = br#"{"action": "failNext", "count": 1, "code": 503, "match": {"verb": "get", "resource": "namespaces"}}"#;
    let (code, _) = raw(&emu, "POST", "/_emulator/faults", "application/json", body).await;
    assert_eq!(code, 200);
    let (code, status) = raw(&emu, "GET", "/api/v1/namespaces/default", "", b"").await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (503, Some("ServiceUnavailable"))
    );
    let (code, _) = raw(&emu, "GET", "/api/v1/namespaces/default", "", b"").await;
    assert_eq!(code, 200);
    let (code, _) = raw(
        &emu,
        "POST",
        "/_emulator/faults",
        "application/json",
        b"{\"action\": \"nonsense\"}",
    )
    .await;
    assert_eq!(code, 400);

    let (code, log) = raw(&emu, "GET", "/_emulator/requests", "", b"").await;
    assert_eq!(code, 200);
    let gets: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verb"] == "get" && r["resource"] == "namespaces")
        .map(|r| r["code"].as_u64().unwrap())
        .collect();
    assert_eq!(gets, vec![503, 200]);
}
