//! What gates may reach: the addresses they call and the credentials they borrow.
//!
//! Both are judged on the spec (and, for credentials, on what the controller observed of
//! the Secret), so a refusal is `Valid=False` naming the gate and nothing is sent. The
//! gate providers apply the same checks again when they connect or send.

use super::invalid::Invalid;
use super::model::{CredentialsSecret, Inputs};

/// A Secret consents to lend its credentials to gates by carrying this label set to `"true"`.
pub const GATE_CREDENTIALS_LABEL: &str = "ringfence.dev/gate-credentials";
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// Whether a Secret may lend its credentials to a gate: only by consent (the label), and
/// never a ServiceAccount token, which would lend a workload's API identity.
pub fn check_credentials(secret: &CredentialsSecret) -> Result<(), &'static str> {
    if secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN) {
        return Err("it is a ServiceAccount token, which is never sent to a gate");
    }
    if secret
        .labels
        .get(GATE_CREDENTIALS_LABEL)
        .map(String::as_str)
        != Some("true")
    {
        return Err("it is not labelled ringfence.dev/gate-credentials=true");
    }
    Ok(())
}

pub(crate) fn check_gates(inputs: &Inputs) -> Result<(), Invalid> {
    let policy = &inputs.settings.gate_addresses;
    let refused = |gate: &str, field: &str, why: String| {
        Invalid::new(
            "GateAddressNotPermitted",
            format!("gates[{gate}].{field}: {why}"),
        )
    };
    for gate in &inputs.spec.gates {
        if let Some(webhook) = &gate.webhook {
            policy
                .check_url(&webhook.url)
                .map_err(|why| refused(&gate.name, "webhook.url", why))?;
        }
        let Some(prom) = &gate.prometheus else {
            continue;
        };
        policy
            .check_url(&prom.address)
            .map_err(|why| refused(&gate.name, "prometheus.address", why))?;
        let Some(source) = &prom.auth_secret_ref else {
            continue;
        };
        let secret = format!("{}/{}", inputs.rollout.namespace, source.name);
        let verdict = match inputs.world.gate_credentials.get(&source.name) {
            None => Err("it has not been read yet"),
            // A missing Secret lends nothing; the gate reports it as it evaluates.
            Some(None) => Ok(()),
            Some(Some(observed)) => check_credentials(observed),
        };
        verdict.map_err(|why| {
            Invalid::new(
                "CredentialsNotPermitted",
                format!(
                    "gates[{}].prometheus.authSecretRef: Secret {secret} is not used, as {why}",
                    gate.name
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::Phase;
    use crate::api::SourceRef;
    use crate::engine::AddressPolicy;
    use crate::engine::testkit::*;

    fn labelled(value: &str) -> CredentialsSecret {
        CredentialsSecret {
            type_: Some("Opaque".into()),
            labels: BTreeMap::from([(GATE_CREDENTIALS_LABEL.to_string(), value.to_string())]),
        }
    }

    fn with_auth_gate() -> Sim {
        let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
        let mut gate = baseline_gate("error-rate", "30s", 1);
        if let Some(p) = gate.prometheus.as_mut() {
            p.auth_secret_ref = Some(SourceRef {
                name: "prom-auth".into(),
            });
        }
        spec.gates.push(gate);
        Sim::new(spec)
    }

    fn invalid(sim: &Sim) -> Option<(String, String)> {
        check_gates(&sim.inputs())
            .err()
            .map(|e| (e.reason.to_string(), e.message))
    }

    #[test]
    fn credentials_are_lent_only_by_consent() {
        let mut sim = with_auth_gate();
        let (reason, message) = invalid(&sim).expect("unobserved Secret is not used");
        assert_eq!(reason, "CredentialsNotPermitted");

        for (secret, why) in [
            (CredentialsSecret::default(), "not labelled"),
            (labelled("yes"), "not labelled"),
            (
                CredentialsSecret {
                    type_: Some(SERVICE_ACCOUNT_TOKEN.into()),
                    ..labelled("true")
                },
                "ServiceAccount token",
            ),
        ] {
            sim.world
                .gate_credentials
                .insert("prom-auth".into(), Some(secret));
            let (reason, message) = invalid(&sim).expect("refused");
            assert_eq!(reason, "CredentialsNotPermitted");
            assert!(
                message.contains("gates[error-rate]")
                    && message.contains("platform/prom-auth")
                    && message.contains(why),
                "{message}"
            );
        }
        assert!(message.contains("gates[error-rate]"), "{message}");

        sim.world
            .gate_credentials
            .insert("prom-auth".into(), Some(labelled("true")));
        assert_eq!(invalid(&sim), None);
        sim.world.gate_credentials.insert("prom-auth".into(), None);
        assert_eq!(
            invalid(&sim),
            None,
            "a missing Secret is the gate's to report"
        );
    }

    #[test]
    fn refused_credentials_make_the_rollout_invalid_and_request_no_gate() {
        let mut sim = with_auth_gate();
        sim.world
            .gate_credentials
            .insert("prom-auth".into(), Some(CredentialsSecret::default()));
        sim.step();
        let valid = sim
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Valid")
            .expect("Valid condition");
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "CredentialsNotPermitted")
        );
        assert!(crate::engine::gate_requests(&sim.inputs()).is_empty());
        assert_ne!(sim.status.phase, Some(Phase::Progressing));
    }

    #[test]
    fn refused_addresses_name_the_gate_and_field() {
        let mut spec = spec_with_rings(&[("canary", &["cell-a"])]);
        let mut gate = webhook_gate("smoke", "30s", 1);
        if let Some(w) = gate.webhook.as_mut() {
            w.url = "http://169.254.169.254/latest/meta-data/".into();
        }
        spec.gates.push(gate);
        let mut sim = Sim::new(spec);
        let (reason, message) = invalid(&sim).expect("refused");
        assert_eq!(reason, "GateAddressNotPermitted");
        assert!(
            message.starts_with("gates[smoke].webhook.url:") && message.contains("link-local"),
            "{message}"
        );

        let mut prom = baseline_gate("error-rate", "30s", 1);
        if let Some(p) = prom.prometheus.as_mut() {
            p.address = "http://10.0.0.1:9090".into();
        }
        sim.spec.gates = vec![prom];
        assert_eq!(invalid(&sim), None);
        sim.settings.gate_addresses = AddressPolicy::new(vec!["10.1.0.0/16".parse().unwrap()]);
        let (_, message) = invalid(&sim).expect("outside the allow-list");
        assert!(
            message.starts_with("gates[error-rate].prometheus.address:"),
            "{message}"
        );
    }
}
