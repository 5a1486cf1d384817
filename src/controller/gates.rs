//! Gate dispatch: each requested evaluation goes to the provider its gate names.
//!
//! Credentials named by `authSecretRef` are read once per reconcile by [`read_credentials`]:
//! the engine judges whether they may be lent from that read (`World::gate_credentials`),
//! and the evaluator sends them only after the same check on the same read, so a Secret
//! relabelled in between lends nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};

use super::error::Error;
use crate::api::{ConfigRollout, Gate, PrometheusGate, Verdict, parse_duration};
use crate::engine::{
    AddressPolicy, CredentialsSecret, GateRequest, GateResult, RolloutMeta, check_credentials,
};
use crate::gates::GateContext;
use crate::gates::prometheus::{PrometheusAuth, PrometheusProvider};
use crate::gates::webhook::WebhookProvider;
use crate::metrics::GateProvider;

/// Used when a gate's timeout does not parse (admission normally rejects it).
const FALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The Secrets a rollout's gates name for credentials, as read in one reconcile.
#[derive(Default)]
pub struct GateCredentials {
    /// By Secret name; `None`: not found.
    secrets: BTreeMap<String, Option<ReadSecret>>,
}

struct ReadSecret {
    meta: CredentialsSecret,
    /// Parsed only when the Secret consents.
    auth: Option<Result<PrometheusAuth, String>>,
}

impl GateCredentials {
    /// What the engine judges: type and labels, never data.
    pub fn observed(&self) -> BTreeMap<String, Option<CredentialsSecret>> {
        self.secrets
            .iter()
            .map(|(name, read)| (name.clone(), read.as_ref().map(|r| r.meta.clone())))
            .collect()
    }

    fn auth(&self, namespace: &str, name: &str) -> Result<&PrometheusAuth, String> {
        let secret = format!("{namespace}/{name}");
        match self.secrets.get(name) {
            None => Err(format!("auth Secret {secret} was not read")),
            Some(None) => Err(format!("auth Secret {secret} not found")),
            Some(Some(read)) => {
                check_credentials(&read.meta)
                    .map_err(|why| format!("auth Secret {secret} is not used, as {why}"))?;
                match &read.auth {
                    Some(Ok(auth)) => Ok(auth),
                    Some(Err(why)) => Err(why.clone()),
                    None => Err(format!("auth Secret {secret} was not read")),
                }
            }
        }
    }
}

/// Reads every Secret the rollout's Prometheus gates name in `authSecretRef`.
pub async fn read_credentials(
    client: &Client,
    rollout: &ConfigRollout,
) -> Result<GateCredentials, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let mut out = GateCredentials::default();
    for gate in &rollout.spec.gates {
        let Some(name) = gate
            .prometheus
            .as_ref()
            .and_then(|p| p.auth_secret_ref.as_ref())
            .map(|r| r.name.clone())
        else {
            continue;
        };
        if out.secrets.contains_key(&name) {
            continue;
        }
        let found = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("read a gate's auth Secret", e))?;
        let read = found.map(|secret| {
            let meta = CredentialsSecret {
                type_: secret.type_.clone(),
                labels: secret.labels().clone(),
            };
            let auth = check_credentials(&meta)
                .is_ok()
                .then(|| parse_auth(&namespace, &name, &secret));
            ReadSecret { meta, auth }
        });
        out.secrets.insert(name, read);
    }
    Ok(out)
}

/// Credentials from the auth Secret; errors name the Secret and key, never a value.
fn parse_auth(namespace: &str, name: &str, secret: &Secret) -> Result<PrometheusAuth, String> {
    let data = secret.data.clone().unwrap_or_default();
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

pub struct GateEvaluator {
    webhook: WebhookProvider,
    prometheus: PrometheusProvider,
}

impl GateEvaluator {
    /// Providers that call only what `policy` allows.
    pub fn new(policy: AddressPolicy) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        Ok(Self {
            webhook: WebhookProvider::new(policy.clone())?,
            prometheus: PrometheusProvider::new(policy)?,
        })
    }

    /// Runs every requested evaluation concurrently, each with the gate definition the
    /// request carries.
    pub async fn evaluate(
        &self,
        credentials: &GateCredentials,
        rollout: &RolloutMeta,
        requests: &[GateRequest],
        now: Timestamp,
    ) -> Vec<(GateProvider, GateResult)> {
        join_all(
            requests
                .iter()
                .map(|req| self.evaluate_one(credentials, rollout, req, now)),
        )
        .await
    }

    async fn evaluate_one(
        &self,
        credentials: &GateCredentials,
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
                let result = self
                    .prometheus(credentials, gate, prom, rollout, req, now)
                    .await;
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
        credentials: &GateCredentials,
        gate: &Gate,
        prom: &PrometheusGate,
        rollout: &RolloutMeta,
        req: &GateRequest,
        now: Timestamp,
    ) -> GateResult {
        let auth = match &prom.auth_secret_ref {
            None => None,
            Some(source) => match credentials.auth(&rollout.namespace, &source.name) {
                Ok(auth) => Some(auth),
                Err(message) => return inconclusive(req, now, &message),
            },
        };
        let ctx = GateContext {
            rollout_namespace: rollout.namespace.clone(),
            rollout_name: rollout.name.clone(),
        };
        self.prometheus.evaluate(gate, req, &ctx, auth, now).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::GATE_CREDENTIALS_LABEL;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, label: Option<&str>) -> Secret {
        let mut s = Secret {
            type_: Some(type_.into()),
            data: Some([("token".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Secret::default()
        };
        if let Some(v) = label {
            s.metadata.labels = Some([(GATE_CREDENTIALS_LABEL.to_string(), v.to_string())].into());
        }
        s
    }

    fn read(secret: &Secret) -> GateCredentials {
        let meta = CredentialsSecret {
            type_: secret.type_.clone(),
            labels: secret.labels().clone(),
        };
        let auth = Some(parse_auth("platform", "auth", secret));
        GateCredentials {
            secrets: [("auth".to_string(), Some(ReadSecret { meta, auth }))].into(),
        }
    }

    #[test]
    fn only_consenting_secrets_lend_credentials() {
        let ok = read(&secret("Opaque", Some("true")));
        assert_eq!(
            ok.auth("platform", "auth"),
            Ok(&PrometheusAuth::Bearer {
                token: "s3cret".into()
            })
        );
        for refused in [
            secret("Opaque", None),
            secret("Opaque", Some("false")),
            secret("kubernetes.io/service-account-token", Some("true")),
        ] {
            let err = read(&refused).auth("platform", "auth").unwrap_err();
            assert!(
                err.starts_with("auth Secret platform/auth is not used"),
                "{err}"
            );
            assert!(!err.contains("s3cret"));
        }
        let none = GateCredentials::default();
        assert!(
            none.auth("platform", "auth")
                .unwrap_err()
                .contains("not read")
        );
    }
}
