//! Webhook gate: POST the evaluation's context as JSON; 2xx passes, 4xx/5xx fails with the
//! body's first line as the reason, and a timeout or connection error is inconclusive (an
//! unreachable judge never counts as healthy). TLS certificates are verified.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::{Verdict, WebhookGate};
use crate::engine::{GatePurpose, GateRequest, GateResult, RolloutMeta};

/// Longest reason kept from a response body.
const MAX_REASON: usize = 200;

/// What the endpoint receives.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload<'a> {
    /// `namespace/name` of the ConfigRollout.
    pub rollout: String,
    pub namespace: &'a str,
    pub gate: &'a str,
    pub revision: &'a str,
    pub ring: &'a str,
    pub ring_index: usize,
    pub namespaces: &'a [String],
    /// `baseline` (before the ring is touched) or `check` (during the bake).
    pub purpose: &'static str,
}

impl<'a> WebhookPayload<'a> {
    pub fn new(rollout: &'a RolloutMeta, req: &'a GateRequest) -> Self {
        Self {
            rollout: format!("{}/{}", rollout.namespace, rollout.name),
            namespace: &rollout.namespace,
            gate: &req.gate,
            revision: &req.revision,
            ring: &req.ring_name,
            ring_index: req.ring,
            namespaces: &req.namespaces,
            purpose: match req.purpose {
                GatePurpose::Baseline => "baseline",
                GatePurpose::Check => "check",
            },
        }
    }
}

/// Evaluates webhook gates with one shared HTTP client.
#[derive(Clone, Debug)]
pub struct WebhookProvider {
    http: reqwest::Client,
}

impl WebhookProvider {
    /// Needs a rustls crypto provider installed process-wide.
    pub fn new() -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ringfence/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http })
    }

    pub async fn evaluate(
        &self,
        gate: &WebhookGate,
        timeout: Duration,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> GateResult {
        let payload = WebhookPayload::new(rollout, req);
        let (verdict, message) = match self
            .http
            .post(&gate.url)
            .timeout(timeout)
            .json(&payload)
            .send()
            .await
        {
            Err(e) if e.is_timeout() => (
                Verdict::Inconclusive,
                format!("webhook did not answer within {timeout:?}"),
            ),
            Err(e) => (
                Verdict::Inconclusive,
                format!("webhook unreachable: {}", error_chain(&e)),
            ),
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let reason = first_line(&body);
                if status.is_success() {
                    (Verdict::Pass, format!("webhook answered {status}"))
                } else if status.is_client_error() || status.is_server_error() {
                    let reason = if reason.is_empty() {
                        "no reason given".to_string()
                    } else {
                        reason
                    };
                    (
                        Verdict::Fail,
                        format!("webhook answered {status}: {reason}"),
                    )
                } else {
                    (
                        Verdict::Inconclusive,
                        format!("webhook answered unexpected {status}"),
                    )
                }
            }
        };
        GateResult {
            gate: req.gate.clone(),
            ring: req.ring,
            purpose: req.purpose,
            verdict,
            value: None,
            baseline: None,
            threshold: None,
            message,
            at: now,
        }
    }
}

/// The first non-empty line, trimmed and cut to a bounded length.
fn first_line(body: &str) -> String {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    match line.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;
    use std::sync::{Arc, Mutex};

    fn request() -> (RolloutMeta, GateRequest) {
        let meta = RolloutMeta {
            namespace: "platform".into(),
            name: "flags".into(),
            ..RolloutMeta::default()
        };
        let req = GateRequest {
            gate: "smoke".into(),
            ring: 1,
            ring_name: "early".into(),
            purpose: GatePurpose::Check,
            revision: "abc123".into(),
            namespaces: vec!["cell-1".into(), "cell-2".into()],
            unchanged_namespaces: vec![],
            baseline: None,
            definition: crate::api::Gate {
                name: "smoke".into(),
                interval: "30s".into(),
                failure_limit: 1,
                prometheus: None,
                webhook: None,
            },
        };
        (meta, req)
    }

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.ok() });
        format!("http://{addr}/check")
    }

    async fn eval(url: String, timeout: Duration) -> GateResult {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = WebhookProvider::new().unwrap();
        let (meta, req) = request();
        let gate = WebhookGate {
            url,
            timeout: "1s".into(),
        };
        provider
            .evaluate(&gate, timeout, &meta, &req, Timestamp::UNIX_EPOCH)
            .await
    }

    #[tokio::test]
    async fn success_passes_and_sends_the_context() {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let router = Router::new().route(
            "/check",
            post(move |body: axum::Json<serde_json::Value>| async move {
                *sink.lock().unwrap() = Some(body.0);
                StatusCode::NO_CONTENT
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Pass, "{}", result.message);
        assert_eq!((result.gate.as_str(), result.ring), ("smoke", 1));
        let body = seen.lock().unwrap().clone().unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "rollout": "platform/flags", "namespace": "platform", "gate": "smoke",
                "revision": "abc123", "ring": "early", "ringIndex": 1,
                "namespaces": ["cell-1", "cell-2"], "purpose": "check",
            })
        );
    }

    #[tokio::test]
    async fn client_and_server_errors_fail_with_the_first_line() {
        let router = Router::new().route(
            "/check",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "\n  checkout smoke test failed  \ndetails",
                )
            }),
        );
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Fail);
        assert!(
            result.message.ends_with(": checkout smoke test failed"),
            "{}",
            result.message
        );

        let router = Router::new().route("/check", post(|| async { StatusCode::FORBIDDEN }));
        let result = eval(serve(router).await, Duration::from_secs(5)).await;
        assert_eq!(result.verdict, Verdict::Fail);
        assert!(result.message.contains("403"), "{}", result.message);
    }

    #[tokio::test]
    async fn timeout_is_inconclusive() {
        let router = Router::new().route(
            "/check",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                StatusCode::OK
            }),
        );
        let result = eval(serve(router).await, Duration::from_millis(200)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
    }

    #[tokio::test]
    async fn connection_error_is_inconclusive() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = eval(format!("http://{addr}/check"), Duration::from_secs(2)).await;
        assert_eq!(result.verdict, Verdict::Inconclusive, "{}", result.message);
        assert!(result.message.starts_with("webhook unreachable"));
    }

    #[test]
    fn reasons_are_bounded() {
        assert_eq!(first_line(""), "");
        let long = "é".repeat(500);
        assert_eq!(first_line(&long).chars().count(), MAX_REASON + 1);
    }
}
