//! A synthetic Prometheus for the demo: answers `/api/v1/query` with the error
//! rate the scenario has scripted for the series the query names.
//!
//! Each series is one namespace of one cluster, labelled `cluster` and
//! `namespace` (`cluster="local"` for the cluster the controller runs in, as
//! `{{ clusters }}` names it). It understands exactly the demo's query shapes:
//! the first `namespace=~"..."` matcher selects the namespaces and, when the
//! query has one, the first `cluster=~"..."` matcher the clusters (without it,
//! every cluster's). The answer is the selected series' mean error rate as a
//! one-sample vector (an empty vector when none match), so the real
//! Prometheus gate provider parses a real API response.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};

use axum::extract::{Form, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The `cluster` label of the series of the cluster the controller runs in.
const LOCAL: &str = crate::api::LOCAL_CLUSTER;

/// Scripted error rates, per cluster and namespace.
#[derive(Clone, Default)]
pub struct ErrorRates {
    rates: Arc<Mutex<BTreeMap<(String, String), f64>>>,
}

impl ErrorRates {
    /// Sets the rate of `namespace` in the local cluster.
    pub fn set(&self, namespace: &str, rate: f64) {
        self.set_in(LOCAL, namespace, rate);
    }

    /// Sets the rate of `namespace` in `cluster`.
    pub fn set_in(&self, cluster: &str, namespace: &str, rate: f64) {
        self.lock()
            .insert((cluster.to_string(), namespace.to_string()), rate);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), f64>> {
        // A poisoned lock only means a panicking writer; the map is still usable.
        self.rates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mean rate of the namespaces matching `pattern` (a PromQL `=~` regex, fully
    /// anchored), in every cluster.
    pub fn mean_matching(&self, pattern: &str) -> Option<f64> {
        self.mean_matching_in(None, pattern)
    }

    /// Mean rate of the namespaces matching `pattern` in the clusters matching
    /// `clusters` (both PromQL `=~` regexes, fully anchored; `None` is every cluster).
    pub fn mean_matching_in(&self, clusters: Option<&str>, pattern: &str) -> Option<f64> {
        let anchored = |p: &str| Regex::new(&format!("^(?:{p})$")).ok();
        let re = anchored(pattern)?;
        let clusters = match clusters {
            Some(p) => Some(anchored(p)?),
            None => None,
        };
        let rates = self.lock();
        let matched: Vec<f64> = rates
            .iter()
            .filter(|((cluster, ns), _)| {
                re.is_match(ns) && clusters.as_ref().is_none_or(|c| c.is_match(cluster))
            })
            .map(|(_, r)| *r)
            .collect();
        if matched.is_empty() {
            None
        } else {
            Some(matched.iter().sum::<f64>() / matched.len() as f64)
        }
    }
}

/// The running endpoint.
pub struct MetricsSource {
    pub addr: SocketAddr,
    pub rates: ErrorRates,
    task: JoinHandle<()>,
}

impl MetricsSource {
    pub async fn start(rates: ErrorRates) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/api/v1/query", get(query).post(query_form))
            .with_state(rates.clone());
        let task = tokio::spawn(async move {
            // The demo ends by dropping the task; a serve error only ends the demo's metrics.
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, rates, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MetricsSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct QueryParams {
    query: String,
    time: Option<String>,
}

async fn query(State(rates): State<ErrorRates>, Query(params): Query<QueryParams>) -> Json<Value> {
    Json(answer(&rates, &params.query, params.time.as_deref()))
}

async fn query_form(
    State(rates): State<ErrorRates>,
    Form(params): Form<QueryParams>,
) -> Json<Value> {
    Json(answer(&rates, &params.query, params.time.as_deref()))
}

/// The Prometheus API body for `query`.
fn answer(rates: &ErrorRates, query: &str, time: Option<&str>) -> Value {
    static MATCHER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"namespace=~"((?:[^"\\]|\\.)*)""#).expect("a valid regex literal")
    });
    static CLUSTER_MATCHER: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"cluster=~"((?:[^"\\]|\\.)*)""#).expect("a valid regex literal")
    });
    let Some(captures) = MATCHER.captures(query) else {
        return json!({
            "status": "error",
            "errorType": "bad_data",
            "error": "the demo metrics source only answers queries with a namespace=~\"...\" matcher",
        });
    };
    // PromQL strings escape backslashes; the regex engine wants them single.
    let pattern = captures[1].replace("\\\\", "\\");
    let clusters = CLUSTER_MATCHER
        .captures(query)
        .map(|c| c[1].replace("\\\\", "\\"));
    let at: f64 = time.and_then(|t| t.parse().ok()).unwrap_or(0.0);
    let result = match rates.mean_matching_in(clusters.as_deref(), &pattern) {
        Some(rate) => json!([{ "metric": {}, "value": [at, rate.to_string()] }]),
        None => json!([]),
    };
    json!({ "status": "success", "data": { "resultType": "vector", "result": result } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_mean_rate_of_matching_namespaces() {
        let rates = ErrorRates::default();
        rates.set("cell-1", 0.01);
        rates.set("cell-2", 0.03);
        rates.set("cell-10", 0.5);
        let body = answer(
            &rates,
            r#"rate(errors{namespace=~"cell-1|cell-2"}[1m])"#,
            Some("12"),
        );
        assert_eq!(body["status"], "success");
        let value = &body["data"]["result"][0]["value"];
        assert_eq!(value[0], 12.0);
        let rate: f64 = value[1].as_str().unwrap().parse().unwrap();
        assert!(
            (rate - 0.02).abs() < 1e-12,
            "anchored match must exclude cell-10, got {rate}"
        );
    }

    #[test]
    fn no_matching_namespace_is_an_empty_vector() {
        let rates = ErrorRates::default();
        rates.set("cell-1", 0.01);
        let body = answer(&rates, r#"x{namespace=~"other"}"#, None);
        assert_eq!(body["data"]["result"], json!([]));
    }

    #[test]
    fn escaped_regex_from_the_template_matches() {
        let rates = ErrorRates::default();
        rates.set("a.b", 0.2);
        rates.set("axb", 0.9);
        let body = answer(&rates, r#"x{namespace=~"a\\.b"}"#, None);
        let rate: f64 = body["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rate, 0.2);
    }

    #[test]
    fn a_cluster_matcher_selects_that_clusters_series_only() {
        let rates = ErrorRates::default();
        rates.set_in("eu-west-1", "cell-1", 0.01);
        rates.set_in("us-east-1", "cell-1", 0.09);
        rates.set("cell-1", 0.5);
        let mean = |query: &str| -> f64 {
            answer(&rates, query, None)["data"]["result"][0]["value"][1]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        };
        let us = mean(r#"x{cluster=~"us-east-1",namespace=~"cell-1"}"#);
        assert!((us - 0.09).abs() < 1e-12, "{us}");
        let both = mean(r#"x{cluster=~"eu-west-1|us-east-1",namespace=~"cell-1"}"#);
        assert!((both - 0.05).abs() < 1e-12, "{both}");
        assert_eq!(mean(r#"x{cluster=~"local",namespace=~"cell-1"}"#), 0.5);
        let body = answer(&rates, r#"x{cluster=~"us-east",namespace=~"cell-1"}"#, None);
        assert_eq!(body["data"]["result"], json!([]), "anchored");
    }

    #[test]
    fn query_without_matcher_is_a_prometheus_error() {
        let body = answer(&ErrorRates::default(), "up", None);
        assert_eq!(body["status"], "error");
    }
}
