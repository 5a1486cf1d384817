//! Emulator throughput and latency per verb, beside the same client work
//! against a plain loopback HTTP echo handler.
//!
//! `cargo bench --bench emulator` creates 10,000 ConfigMaps across 1,000
//! namespaces with 100 open watches, then gets, lists and patches them.
//! Of the watches, 10 see the whole cluster (as an operator's informers do)
//! and 90 one namespace each (as test clients do); every watch must receive
//! every event it selects. Scale the workload with `RINGFENCE_BENCH_SCALE=0.1`
//! (or a first argument).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use kube_emulator::Emulator;

const CONCURRENCY: usize = 16;
const WATCHES: usize = 100;
/// Watches over all namespaces; the others watch one namespace each.
const CLUSTER_WATCHES: usize = 10;

#[derive(Clone, Copy, PartialEq)]
enum Verb {
    Create,
    Get,
    List,
    Patch,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Patch => "patch",
        }
    }
}

struct Workload {
    objects: usize,
    namespaces: usize,
}

impl Workload {
    fn count(&self, verb: Verb) -> usize {
        match verb {
            Verb::List => self.namespaces,
            _ => self.objects,
        }
    }

    fn request(
        &self,
        http: &reqwest::Client,
        base: &str,
        verb: Verb,
        i: usize,
    ) -> reqwest::RequestBuilder {
        let ns = format!("ns-{}", i % self.namespaces);
        let collection = format!("{base}/api/v1/namespaces/{ns}/configmaps");
        match verb {
            Verb::Create => http
                .post(&collection)
                .header("content-type", "application/json")
                .body(format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i}","labels":{{"app":"bench"}}}},"data":{{"k":"v"}}}}"#
                )),
            Verb::Get => http.get(format!("{collection}/cm-{i}")),
            Verb::List => http.get(&collection),
            Verb::Patch => http
                .patch(format!("{collection}/cm-{i}"))
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"data":{"k":"v2"}}"#),
        }
    }
}

struct PhaseResult {
    requests: usize,
    failures: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl PhaseResult {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

async fn phase(http: &reqwest::Client, base: &str, w: &Arc<Workload>, verb: Verb) -> PhaseResult {
    let count = w.count(verb);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base, w, next) = (http.clone(), base.to_string(), w.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return (latencies, failures);
                }
                let t = Instant::now();
                let ok = match w.request(&http, &base, verb, i).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                latencies.push(t.elapsed());
                if !ok {
                    failures += 1;
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.expect("bench task");
        latencies.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    PhaseResult {
        requests: count,
        failures,
        elapsed,
        latencies,
    }
}

/// A loopback server answering every request with its body (or `{}`).
async fn echo_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(|body: Bytes| async move {
        let body = if body.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            body
        };
        ([("content-type", "application/json")], body)
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn scale() -> f64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<f64>().ok())
        .or_else(|| std::env::var("RINGFENCE_BENCH_SCALE").ok()?.parse().ok())
        .unwrap_or(1.0)
        .clamp(0.001, 10.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = scale();
    let w = Arc::new(Workload {
        objects: ((10_000.0 * s) as usize).max(10),
        namespaces: ((1_000.0 * s) as usize).max(1),
    });
    println!(
        "emulator bench: {} ConfigMaps in {} namespaces, {WATCHES} watches, {CONCURRENCY} concurrent clients (scale {s})",
        w.objects, w.namespaces
    );

    let emu = Emulator::builder().start().await.expect("emulator starts");
    let token = emu.admin_token().to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .build()
        .expect("http client");
    let base = emu.url();

    for n in 0..w.namespaces {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"ns-{n}"}}}}"#);
        let r = http
            .post(format!("{base}/api/v1/namespaces"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("namespace create");
        assert!(r.status().is_success(), "namespace create: {}", r.status());
    }

    let rv = emu.resource_version();
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut expected_events = 0;
    let mut watches = Vec::new();
    for n in 0..WATCHES {
        let path = if n < CLUSTER_WATCHES {
            expected_events += w.objects * 2;
            "/api/v1/configmaps".to_string()
        } else {
            let ns = (n - CLUSTER_WATCHES) % w.namespaces;
            expected_events += (0..w.objects).filter(|i| i % w.namespaces == ns).count() * 2;
            format!("/api/v1/namespaces/ns-{ns}/configmaps")
        };
        let mut r = http
            .get(format!("{base}{path}?watch=true&resourceVersion={rv}"))
            .send()
            .await
            .expect("watch");
        let delivered = delivered.clone();
        watches.push(tokio::spawn(async move {
            while let Ok(Some(chunk)) = r.chunk().await {
                let events = chunk.iter().filter(|b| **b == b'\n').count();
                delivered.fetch_add(events, Ordering::Relaxed);
            }
        }));
    }

    let echo = echo_server().await;
    let verbs = [Verb::Create, Verb::Get, Verb::List, Verb::Patch];
    let mut rows = Vec::new();
    for verb in verbs {
        let emulated = phase(&http, &base, &w, verb).await;
        let baseline = phase(&http, &echo, &w, verb).await;
        rows.push((verb, emulated, baseline));
    }

    let writes = w.objects * 2;
    let wait = Instant::now();
    while delivered.load(Ordering::Relaxed) < writes * WATCHES
        && wait.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "\n{:<7} | {:>12} {:>9} {:>9} | {:>12} {:>9} {:>9} | {:>6} | failures",
        "verb", "emulator/s", "p50", "p99", "baseline/s", "p50", "p99", "ratio"
    );
    for (verb, e, b) in &rows {
        println!(
            "{:<7} | {:>12.0} {:>9} {:>9} | {:>12.0} {:>9} {:>9} | {:>5.2}x | {}",
            verb.name(),
            e.rate(),
            ms(e.percentile(0.5)),
            ms(e.percentile(0.99)),
            b.rate(),
            ms(b.percentile(0.5)),
            ms(b.percentile(0.99)),
            e.rate() / b.rate(),
            e.failures + b.failures,
        );
    }
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "\nwatch events delivered: {got} of {expected_events} ({CLUSTER_WATCHES} cluster-wide and {} namespace watches)",
        WATCHES - CLUSTER_WATCHES
    );
    let failures: usize = rows.iter().map(|(_, e, _)| e.failures).sum();
    for w in watches {
        w.abort();
    }
    emu.shutdown().await;
    assert_eq!(failures, 0, "emulator requests failed");
    assert_eq!(got, expected_events, "watches missed events");
}
