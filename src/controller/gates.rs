//! Gate dispatch: each requested evaluation goes to the provider its gate names.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use crate::api::{ConfigRolloutSpec, Verdict};
use crate::engine::{GateRequest, GateResult, RolloutMeta};
use crate::gates::webhook::WebhookProvider;
use crate::metrics::GateProvider;

/// Used when a gate's timeout does not parse (admission normally rejects it).
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct GateEvaluator {
    webhook: WebhookProvider,
}

impl GateEvaluator {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            webhook: WebhookProvider::new()?,
        })
    }

    /// Runs every requested evaluation concurrently.
    pub async fn evaluate(
        &self,
        spec: &ConfigRolloutSpec,
        rollout: &RolloutMeta,
        requests: &[GateRequest],
        now: Timestamp,
    ) -> Vec<(GateProvider, GateResult)> {
        join_all(
            requests
                .iter()
                .map(|req| self.evaluate_one(spec, rollout, req, now)),
        )
        .await
    }

    async fn evaluate_one(
        &self,
        spec: &ConfigRolloutSpec,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> (GateProvider, GateResult) {
        let gate = spec.gates.iter().find(|g| g.name == req.gate);
        match gate.map(|g| (&g.webhook, &g.prometheus)) {
            Some((Some(webhook), _)) => {
                let timeout = parse_timeout(&webhook.timeout);
                (
                    GateProvider::Webhook,
                    self.webhook
                        .evaluate(webhook, timeout, rollout, req, now)
                        .await,
                )
            }
            Some((None, Some(_))) => (
                GateProvider::Prometheus,
                inconclusive(
                    req,
                    now,
                    "the prometheus provider is not available in this build",
                ),
            ),
            _ => (
                GateProvider::Unknown,
                inconclusive(
                    req,
                    now,
                    &format!("gate {} has no provider in the spec", req.gate),
                ),
            ),
        }
    }
}

fn parse_timeout(text: &str) -> Duration {
    text.parse::<k8s_openapi::jiff::SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(FALLBACK_TIMEOUT)
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
