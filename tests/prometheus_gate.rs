//! The `prometheus` gate against a real Prometheus scraping a test exporter,
//! and against tiny local servers for what a real one cannot be made to do
//! (answer slowly, show the headers it received).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use k8s_openapi::jiff::Timestamp;
use ringfence::api::{CompareTo, Gate, OnNoData, PrometheusGate, Verdict};
use ringfence::engine::{GatePurpose, GateRequest, GateResult};
use ringfence::gates::GateContext;
use ringfence::gates::prometheus::{PrometheusAuth, PrometheusProvider, fmt_value};
use support::exporter::Exporter;
use support::prometheus::PrometheusServer;

/// The 5xx ratio, over a short window because Prometheus scrapes every second.
const ERROR_RATIO: &str = r#"(sum(rate(http_requests_total{namespace=~"{{ namespaces }}",code=~"5.."}[5s])) or vector(0)) / sum(rate(http_requests_total{namespace=~"{{ namespaces }}"}[5s]))"#;
/// Deadline for Prometheus to see a change: generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(120);

fn spec(address: &str, query: &str) -> PrometheusGate {
    PrometheusGate {
        address: address.to_string(),
        query: query.to_string(),
        max: None,
        max_increase: None,
        max_ratio: None,
        compare_to: CompareTo::Before,
        baseline_window: "10s".into(),
        on_no_data: OnNoData::Wait,
        timeout: "10s".into(),
        auth_secret_ref: None,
    }
}

fn request(
    purpose: GatePurpose,
    namespaces: &[&str],
    unchanged: &[&str],
    baseline: Option<f64>,
) -> GateRequest {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    GateRequest {
        gate: "error-rate".into(),
        ring: 0,
        ring_name: "canary".into(),
        purpose,
        revision: "rev1".into(),
        namespaces: owned(namespaces),
        unchanged_namespaces: owned(unchanged),
        baseline,
        definition: Gate {
            name: "error-rate".into(),
            interval: "1s".into(),
            failure_limit: 1,
            prometheus: None,
            webhook: None,
        },
    }
}

async fn evaluate_with(
    spec: PrometheusGate,
    req: &GateRequest,
    auth: Option<&PrometheusAuth>,
) -> GateResult {
    let gate = Gate {
        name: "error-rate".into(),
        interval: "1s".into(),
        failure_limit: 1,
        prometheus: Some(spec),
        webhook: None,
    };
    let ctx = GateContext {
        rollout_namespace: "platform".into(),
        rollout_name: "checkout-flags".into(),
    };
    let provider =
        PrometheusProvider::new(std::sync::Arc::new(support::cluster::test_gate_addresses()))
            .expect("HTTP client");
    let result = provider
        .evaluate(&gate, req, &ctx, auth, Timestamp::now())
        .await;
    assert_eq!(result.gate, "error-rate");
    assert_eq!(result.purpose, req.purpose);
    result
}

async fn evaluate(spec: PrometheusGate, req: &GateRequest) -> GateResult {
    evaluate_with(spec, req, None).await
}

fn ratio_of(namespace: &str) -> String {
    ERROR_RATIO.replace("{{ namespaces }}", namespace)
}

/// Within 2% (rate extrapolation near a change is not exact).
fn near(value: f64, target: f64) -> bool {
    (value - target).abs() <= target * 0.02 + 1e-9
}

/// An exporter with these error rates and a Prometheus that already sees them.
async fn start(cells: &[(&str, f64)]) -> (Exporter, PrometheusServer) {
    let exporter = Exporter::start().await;
    for (namespace, rate) in cells {
        exporter.set_error_rate(namespace, *rate);
    }
    let prometheus = PrometheusServer::start(&[exporter.addr()]).await;
    // Baselines average over a subquery, which needs a few samples of history.
    for (namespace, rate) in cells {
        let averaged = format!("avg_over_time(({})[10s:1s])", ratio_of(namespace));
        prometheus
            .wait_for(&averaged, |v| near(v, *rate), WAIT)
            .await;
    }
    (exporter, prometheus)
}

async fn wait_for_rate(prometheus: &PrometheusServer, namespace: &str, rate: f64) {
    prometheus
        .wait_for(&ratio_of(namespace), |v| near(v, rate), WAIT)
        .await;
}

#[tokio::test]
async fn a_flat_error_rate_passes_against_its_baseline() {
    let (_exporter, prometheus) = start(&[("cell-1", 0.01)]).await;
    let mut gate = spec(prometheus.address(), ERROR_RATIO);
    gate.max_increase = Some(0.01);

    let baseline = evaluate(
        gate.clone(),
        &request(GatePurpose::Baseline, &["cell-1"], &[], None),
    )
    .await;
    assert_eq!(baseline.verdict, Verdict::Pass, "{}", baseline.message);
    let b = baseline.value.expect("a baseline value");
    assert!(near(b, 0.01), "{b}");
    assert_eq!(baseline.baseline, Some(b));
    assert_eq!(
        baseline.message,
        format!(
            "error-rate in ring canary: baseline {} (average over the last 10s)",
            fmt_value(b)
        )
    );

    let check = evaluate(
        gate,
        &request(GatePurpose::Check, &["cell-1"], &[], Some(b)),
    )
    .await;
    assert_eq!(check.verdict, Verdict::Pass, "{}", check.message);
    let (v, t) = (check.value.unwrap(), check.threshold.unwrap());
    assert!(near(v, 0.01), "{v}");
    assert!((t - (b + 0.01)).abs() < 1e-12, "{t}");
    assert_eq!(check.baseline, Some(b));
    assert_eq!(
        check.message,
        format!(
            "error-rate in ring canary: {} <= {} (baseline {} + maxIncrease 0.01)",
            fmt_value(v),
            fmt_value(t),
            fmt_value(b)
        )
    );
}

#[tokio::test]
async fn a_jump_fails_with_the_values_in_the_message() {
    let (exporter, prometheus) = start(&[("cell-1", 0.01)]).await;
    let mut gate = spec(prometheus.address(), ERROR_RATIO);
    gate.max_increase = Some(0.05);
    gate.max = Some(0.5);
    let baseline = evaluate(
        gate.clone(),
        &request(GatePurpose::Baseline, &["cell-1"], &[], None),
    )
    .await;
    let b = baseline.value.expect("a baseline value");

    exporter.set_error_rate("cell-1", 0.2);
    wait_for_rate(&prometheus, "cell-1", 0.2).await;

    let check = evaluate(
        gate,
        &request(GatePurpose::Check, &["cell-1"], &[], Some(b)),
    )
    .await;
    assert_eq!(check.verdict, Verdict::Fail, "{}", check.message);
    let (v, t) = (check.value.unwrap(), check.threshold.unwrap());
    assert!(near(v, 0.2), "{v}");
    assert!(near(t, 0.06), "{t}");
    assert_eq!(
        check.message,
        format!(
            "error-rate in ring canary: {} > {} (baseline {} + maxIncrease 0.05)",
            fmt_value(v),
            fmt_value(t),
            fmt_value(b)
        )
    );
}

#[tokio::test]
async fn a_global_rise_fails_before_but_passes_unchanged() {
    let cells = [("cell-1", 0.01), ("cell-2", 0.01), ("cell-3", 0.01)];
    let (exporter, prometheus) = start(&cells).await;
    let mut gate = spec(prometheus.address(), ERROR_RATIO);
    gate.max_increase = Some(0.02);
    let baseline = evaluate(
        gate.clone(),
        &request(GatePurpose::Baseline, &["cell-1"], &[], None),
    )
    .await;
    let b = baseline.value.expect("a baseline value");

    // An incident that hits every cell, changed or not.
    for (cell, _) in cells {
        exporter.set_error_rate(cell, 0.1);
    }
    for (cell, _) in cells {
        wait_for_rate(&prometheus, cell, 0.1).await;
    }
    let unchanged = ["cell-2", "cell-3"];

    let before = evaluate(
        gate.clone(),
        &request(GatePurpose::Check, &["cell-1"], &unchanged, Some(b)),
    )
    .await;
    assert_eq!(before.verdict, Verdict::Fail, "{}", before.message);
    assert_eq!(before.baseline, Some(b));

    gate.compare_to = CompareTo::Unchanged;
    let same_moment = evaluate(
        gate.clone(),
        &request(GatePurpose::Check, &["cell-1"], &unchanged, Some(b)),
    )
    .await;
    assert_eq!(
        same_moment.verdict,
        Verdict::Pass,
        "{}",
        same_moment.message
    );
    assert!(near(same_moment.baseline.unwrap(), 0.1), "{same_moment:?}");
    assert!(
        same_moment
            .message
            .ends_with("; baseline from 2 unchanged namespaces now"),
        "{}",
        same_moment.message
    );

    // The last ring has no unchanged namespaces: the recorded baseline applies.
    let last_ring = evaluate(
        gate.clone(),
        &request(GatePurpose::Check, &["cell-1"], &[], Some(b)),
    )
    .await;
    assert_eq!(last_ring.verdict, Verdict::Fail, "{}", last_ring.message);
    assert_eq!(last_ring.baseline, Some(b));
    assert!(
        last_ring.message.ends_with(
            "; baseline recorded before the ring was written, as no unchanged namespaces are left"
        ),
        "{}",
        last_ring.message
    );
    // ... and without a recorded baseline nothing but max could judge it.
    let nothing = evaluate(
        gate.clone(),
        &request(GatePurpose::Check, &["cell-1"], &[], None),
    )
    .await;
    assert_eq!(
        nothing.verdict,
        Verdict::Inconclusive,
        "{}",
        nothing.message
    );
    assert!(
        nothing.message.ends_with(
            "cannot be judged: there is no baseline and max is not set; no unchanged namespaces are left"
        ),
        "{}",
        nothing.message
    );

    // A regression of the ring alone still fails against unchanged cells.
    exporter.set_error_rate("cell-1", 0.3);
    wait_for_rate(&prometheus, "cell-1", 0.3).await;
    let regression = evaluate(
        gate,
        &request(GatePurpose::Check, &["cell-1"], &unchanged, Some(b)),
    )
    .await;
    assert_eq!(regression.verdict, Verdict::Fail, "{}", regression.message);
    assert!(near(regression.threshold.unwrap(), 0.12), "{regression:?}");
}

#[tokio::test]
async fn no_data_and_nan_follow_on_no_data() {
    let (exporter, prometheus) = start(&[("cell-1", 0.01)]).await;
    // An idle namespace: counters exist but do not move, so the ratio is 0/0.
    exporter.set_request_rate("idle", 0.0);
    prometheus
        .wait_for(
            r#"count_over_time(http_requests_total{namespace="idle",code="200"}[5s])"#,
            |n| n >= 3.0,
            WAIT,
        )
        .await;

    let cases = [
        (OnNoData::Wait, Verdict::Inconclusive),
        (OnNoData::Pass, Verdict::Pass),
        (OnNoData::Fail, Verdict::Fail),
    ];
    for (on_no_data, verdict) in cases {
        let mut gate = spec(prometheus.address(), ERROR_RATIO);
        gate.max = Some(0.05);
        gate.on_no_data = on_no_data;

        let ghost = evaluate(
            gate.clone(),
            &request(GatePurpose::Check, &["ghost"], &[], None),
        )
        .await;
        assert_eq!(ghost.verdict, verdict, "{}", ghost.message);
        assert_eq!(ghost.value, None);
        assert_eq!(ghost.threshold, Some(0.05));
        assert!(
            ghost
                .message
                .starts_with("error-rate in ring canary: no data; "),
            "{}",
            ghost.message
        );

        let idle = evaluate(gate, &request(GatePurpose::Check, &["idle"], &[], None)).await;
        assert_eq!(idle.verdict, verdict, "{}", idle.message);
        assert_eq!(idle.value, None);
        assert!(
            idle.message.starts_with(
                "error-rate in ring canary: NaN, usually 0/0: no traffic in the window; "
            ),
            "{}",
            idle.message
        );
    }

    let mut gate = spec(prometheus.address(), ERROR_RATIO);
    gate.max = Some(0.05);
    gate.max_increase = Some(0.01);
    let baseline = evaluate(gate, &request(GatePurpose::Baseline, &["ghost"], &[], None)).await;
    assert_eq!(
        baseline.verdict,
        Verdict::Inconclusive,
        "{}",
        baseline.message
    );
    assert_eq!((baseline.value, baseline.baseline), (None, None));
    assert_eq!(
        baseline.message,
        "error-rate in ring canary: no baseline: no data over the last 10s nor now; checks are judged by max alone"
    );
}

#[tokio::test]
async fn unusable_answers_are_inconclusive_with_the_reason() {
    let (_exporter, prometheus) = start(&[("cell-1", 0.01)]).await;
    let check = |query: &str| {
        let mut gate = spec(prometheus.address(), query);
        gate.max = Some(0.05);
        gate.on_no_data = OnNoData::Pass;
        async move { evaluate(gate, &request(GatePurpose::Check, &["cell-1"], &[], None)).await }
    };

    let many = check(r#"rate(http_requests_total{namespace=~"{{ namespaces }}"}[5s])"#).await;
    assert_eq!(many.verdict, Verdict::Inconclusive, "{}", many.message);
    assert!(
        many.message.starts_with(
            "error-rate in ring canary: the query returned 2 series but a gate judges one value: aggregate it, e.g. with sum(...) or max(...) (series: {"
        ),
        "{}",
        many.message
    );
    assert!(many.message.contains(r#"code="500""#), "{}", many.message);

    let syntax = check("sum(rate(http_requests_total[5s])").await;
    assert_eq!(syntax.verdict, Verdict::Inconclusive, "{}", syntax.message);
    assert!(
        syntax
            .message
            .starts_with("error-rate in ring canary: Prometheus rejected the query (bad_data): "),
        "{}",
        syntax.message
    );
    assert!(syntax.message.contains("parse error"), "{}", syntax.message);

    let matrix = check(r#"http_requests_total{namespace=~"{{ namespaces }}"}[5s]"#).await;
    assert_eq!(matrix.verdict, Verdict::Inconclusive, "{}", matrix.message);
    assert!(
        matrix.message.contains("returned a matrix result"),
        "{}",
        matrix.message
    );

    let string = check(r#""hello""#).await;
    assert_eq!(string.verdict, Verdict::Inconclusive, "{}", string.message);
    assert!(
        string.message.contains("returned a string result"),
        "{}",
        string.message
    );

    let template = check("up{cluster=\"{{ region }}\"}").await;
    assert_eq!(
        template.verdict,
        Verdict::Inconclusive,
        "{}",
        template.message
    );
    assert!(
        template.message.starts_with(
            "error-rate in ring canary: query template: unknown placeholder {{ region }}"
        ),
        "{}",
        template.message
    );

    let scalar_query = format!("scalar({ERROR_RATIO})");
    let scalar = check(&scalar_query).await;
    assert_eq!(scalar.verdict, Verdict::Pass, "{}", scalar.message);
    assert!(near(scalar.value.unwrap(), 0.01), "{scalar:?}");

    // A scalar cannot be a subquery: the baseline falls back to the instant value.
    let mut gate = spec(prometheus.address(), &scalar_query);
    gate.max = Some(0.05);
    let baseline = evaluate(
        gate,
        &request(GatePurpose::Baseline, &["cell-1"], &[], None),
    )
    .await;
    assert_eq!(baseline.verdict, Verdict::Pass, "{}", baseline.message);
    assert!(
        baseline
            .message
            .ends_with("(instant value; no average over the last 10s)"),
        "{}",
        baseline.message
    );
}

/// Serves `router` on a free loopback port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_unreachable_prometheus_is_never_healthy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut gate = spec(&format!("http://127.0.0.1:{port}"), ERROR_RATIO);
    gate.max = Some(0.05);
    gate.on_no_data = OnNoData::Pass;
    for purpose in [GatePurpose::Baseline, GatePurpose::Check] {
        let result = evaluate(
            gate.clone(),
            &request(purpose, &["cell-1"], &[], Some(0.01)),
        )
        .await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert_eq!(result.value, None);
        let expected = format!(
            "error-rate in ring canary: cannot reach Prometheus at http://127.0.0.1:{port}: "
        );
        assert!(result.message.starts_with(&expected), "{}", result.message);
        assert!(
            result.message.to_lowercase().contains("connection refused"),
            "{}",
            result.message
        );
    }
}

#[tokio::test]
async fn an_invalid_address_is_inconclusive() {
    let mut gate = spec("http://prometheus monitoring:9090", ERROR_RATIO);
    gate.max = Some(0.05);
    let result = evaluate(gate, &request(GatePurpose::Check, &["cell-1"], &[], None)).await;
    assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
    assert!(
        result
            .message
            .starts_with(r#"error-rate in ring canary: invalid Prometheus address "http://prometheus monitoring:9090": "#),
        "{}",
        result.message
    );
}

#[tokio::test]
async fn a_slow_prometheus_times_out_as_inconclusive() {
    let address = serve(Router::new().route(
        "/api/v1/query",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late"
        }),
    ))
    .await;
    let mut gate = spec(&address, ERROR_RATIO);
    gate.max = Some(0.05);
    gate.timeout = "1s".into();
    let started = Instant::now();
    let result = evaluate(gate, &request(GatePurpose::Check, &["cell-1"], &[], None)).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
    assert_eq!(
        result.message,
        format!("error-rate in ring canary: Prometheus at {address} did not answer within 1s")
    );
}

#[derive(Default)]
struct Seen {
    authorization: Option<String>,
    form: Vec<(String, String)>,
}

/// A fake Prometheus that records what it was sent and answers one series.
async fn recording_server() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let address = serve(Router::new().route(
        "/prefix/api/v1/query",
        post(move |headers: HeaderMap, body: String| async move {
            record.lock().unwrap().push(Seen {
                authorization: headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                form: url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect(),
            });
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.001"]}]}}"#
        }),
    ))
    .await;
    (format!("{address}/prefix/"), seen)
}

#[tokio::test]
async fn credentials_and_the_rendered_query_are_sent() {
    let (address, seen) = recording_server().await;
    let query = r#"x{namespace=~"{{ namespaces }}",owner="{{ namespace }}/{{ rollout }}",ring="{{ ring }}",rev="{{ revision }}"}"#;
    let mut gate = spec(&address, query);
    gate.max = Some(0.05);
    let req = request(GatePurpose::Check, &["cell-1", "cell-2"], &[], None);

    let bearer = PrometheusAuth::Bearer {
        token: "s3cret".into(),
    };
    let basic = PrometheusAuth::Basic {
        username: "ops".into(),
        password: "pw".into(),
    };
    for auth in [Some(&bearer), Some(&basic), None] {
        let result = evaluate_with(gate.clone(), &req, auth).await;
        assert_eq!(result.verdict, Verdict::Pass, "{}", result.message);
        assert_eq!(result.value, Some(0.001));
    }

    let seen = seen.lock().unwrap();
    let headers: Vec<Option<&str>> = seen.iter().map(|s| s.authorization.as_deref()).collect();
    // base64("ops:pw") = b3BzOnB3
    assert_eq!(
        headers,
        [Some("Bearer s3cret"), Some("Basic b3BzOnB3"), None]
    );
    let form = &seen[0].form;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        field("query"),
        Some(
            r#"x{namespace=~"cell-1|cell-2",owner="platform/checkout-flags",ring="canary",rev="rev1"}"#
        )
    );
    assert_eq!(field("timeout"), Some("10s"));
    let time: f64 = field("time")
        .expect("a time")
        .parse()
        .expect("unix seconds");
    assert!(
        (time - Timestamp::now().as_second() as f64).abs() < 60.0,
        "{time}"
    );
}
