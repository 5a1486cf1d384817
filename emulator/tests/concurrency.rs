//! Many writers and many watchers at once: every watcher sees every event, in order.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube_emulator::Emulator;
use serde_json::json;

const WRITERS: usize = 16;
const WATCHERS: usize = 100;
/// Each writer creates this many ConfigMaps and patches each once.
const OBJECTS_PER_WRITER: usize = 25;
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_watcher_sees_every_event_in_order() {
    let emu = Emulator::builder().start().await.unwrap();
    let client = emu.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = emu.resource_version().to_string();
    let expected = WRITERS * OBJECTS_PER_WRITER * 2;

    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let api = api.clone();
        let start = start.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(280), &start)
                .await
                .unwrap()
                .boxed();
            let mut seen: Vec<(u64, String)> = Vec::new();
            while seen.len() < expected {
                let event = tokio::time::timeout(DEADLINE, stream.try_next())
                    .await
                    .expect("watch stalled")
                    .expect("watch failed")
                    .expect("watch ended early");
                let obj = match event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => o,
                    WatchEvent::Bookmark(_) => continue,
                    WatchEvent::Error(e) => panic!("watch error: {e:?}"),
                };
                let rv: u64 = obj.resource_version().unwrap().parse().unwrap();
                seen.push((rv, obj.name_any()));
            }
            seen
        }));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let api = api.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..OBJECTS_PER_WRITER {
                let name = format!("w{w}-{i}");
                let cm: ConfigMap =
                    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "0"}}))
                        .unwrap();
                let created = api.create(&PostParams::default(), &cm).await.unwrap();
                written.push(created.resource_version().unwrap().parse::<u64>().unwrap());
                let patched = api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"v": "1"}})),
                    )
                    .await
                    .unwrap();
                written.push(patched.resource_version().unwrap().parse::<u64>().unwrap());
            }
            written
        }));
    }
    let mut written = BTreeSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    assert_eq!(
        written.len(),
        expected,
        "every write got its own resourceVersion"
    );

    for (i, watcher) in watchers.into_iter().enumerate() {
        let seen = tokio::time::timeout(DEADLINE, watcher)
            .await
            .expect("watcher timed out")
            .unwrap();
        assert_eq!(seen.len(), expected, "watcher {i} saw every event");
        assert!(
            seen.windows(2).all(|p| p[0].0 < p[1].0),
            "watcher {i}: resourceVersions strictly increase"
        );
        let rvs: BTreeSet<u64> = seen.iter().map(|(rv, _)| *rv).collect();
        assert_eq!(rvs, written, "watcher {i} saw exactly the writes");
    }
}
