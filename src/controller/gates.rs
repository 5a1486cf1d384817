//! Gate dispatch: each requested evaluation goes to the provider its gate names.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};

use crate::api::{Gate, PrometheusGate, Verdict, parse_duration};
use crate::engine::{GateRequest, GateResult, RolloutMeta};
use crate::gates::GateContext;
use crate::gates::prometheus::{PrometheusAuth, PrometheusProvider};
use crate::gates::webhook::WebhookProvider;
use crate::metrics::GateProvider;

/// Used when a gate's timeout does not parse (admission normally rejects it).
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GateEvaluator {
    webhook: WebhookProvider,
    prometheus: PrometheusProvider,
}

impl GateEvaluator {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            webhook: WebhookProvider::new()?,
            prometheus: PrometheusProvider::new()?,
        })
    }

    /// Runs every requested evaluation concurrently, each with the gate definition the
    /// request carries.
    pub async fn evaluate(
        &self,
        client: &Client,
        rollout: &RolloutMeta,
        requests: &[GateRequest],
        now: Timestamp,
    ) -> Vec<(GateProvider, GateResult)> {
        join_all(
            requests
                .iter()
                .map(|req| self.evaluate_one(client, rollout, req, now)),
        )
        .await
    }

    async fn evaluate_one(
        &self,
        client: &Client,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> (GateProvider, GateResult) {
        let gate = &req.definition;
        match (&gate.webhook, &gate.prometheus) {
            (Some(webhook), _) => {
                let timeout = parse_timeout(&webhook.timeout);
                let result = self
                    .webhook
                    .evaluate(webhook, timeout, rollout, req, now)
                    .await;
                (GateProvider::Webhook, result)
            }
            (None, Some(prom)) => {
                let result = self.prometheus(client, gate, prom, rollout, req, now).await;
                (GateProvider::Prometheus, result)
            }
            _ => (
                GateProvider::Unknown,
                inconclusive(req, now, &format!("gate {} has no provider", req.gate)),
            ),
        }
    }

    async fn prometheus(
        &self,
        client: &Client,
        gate: &Gate,
        prom: &PrometheusGate,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> GateResult {
        let auth = match &prom.auth_secret_ref {
            None => None,
            Some(source) => match read_auth(client, &rollout.namespace, &source.name).await {
                Ok(auth) => Some(auth),
                Err(message) => return inconclusive(req, now, &message),
            },
        };
        let ctx = GateContext {
            rollout_namespace: rollout.namespace.clone(),
            rollout_name: rollout.name.clone(),
        };
        self.prometheus
            .evaluate(gate, req, &ctx, auth.as_ref(), now)
            .await
    }
}

/// Credentials from the auth Secret; errors name the Secret and key, never a value.
async fn read_auth(client: &Client, namespace: &str, name: &str) -> Result<PrometheusAuth, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("cannot read auth Secret {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("auth Secret {namespace}/{name} not found"))?;
    let data = secret.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
    };
    match (text("token"), text("username"), text("password")) {
        (Some(token), _, _) => Ok(PrometheusAuth::Bearer { token }),
        (None, Some(username), Some(password)) => Ok(PrometheusAuth::Basic { username, password }),
        _ => Err(format!(
            "auth Secret {namespace}/{name} has neither `token` nor `username` and `password`"
        )),
    }
}

fn parse_timeout(text: &str) -> Duration {
    parse_duration(text).unwrap_or(FALLBACK_TIMEOUT)
}

fn inconclusive(req: &GateRequest, now: Timestamp, message: &str) -> GateResult {
    GateResult {
        gate: req.gate.clone(),
        ring: req.ring,
        purpose: req.purpose,
        verdict: Verdict::Inconclusive,
        value: None,
        baseline: None,
        threshold: None,
        message: message.to_string(),
        at: now,
    }
}
