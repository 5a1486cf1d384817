//! Reconcile errors, classified so `error_policy`, metrics and events never see raw messages.

use std::time::Duration;

use crate::engine::{ActionFailure, FailureReason};

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed; usually transient.
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The ConfigRollout does not deserialize (e.g. written before the CRD schema was tightened).
    #[error("malformed ConfigRollout: {0}")]
    InvalidObject(String),

    /// The spec asks for something only the controller can reject (e.g. a selector that does not parse).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// The durable prior-content store is unreadable or inconsistent.
    #[error("prior-content store: {0}")]
    Priors(String),

    /// The watch caches the world is observed from have not synced yet.
    #[error("caches not synced yet")]
    NotReady,

    /// A restore was asked for a target without a recorded prior.
    #[error("no recorded prior content for target in namespace {0}")]
    MissingPrior(String),

    /// A prior record exists but cannot be trusted.
    #[error("prior record in namespace {namespace} is unreadable: {why}")]
    UnreadablePrior { namespace: String, why: String },

    /// Some of a decision's actions failed; the status says which and why.
    #[error("{}: {} target(s) failed: {}", .failure.what, .failure.targets.len(), .failure.detail)]
    Actions {
        failure: ActionFailure,
        category: &'static str,
    },

    /// Leadership ended mid-reconcile: the remaining writes are left to the new leader.
    #[error("no longer the leader")]
    NotLeader,

    /// A member cluster cannot be used: not registered, or its kubeconfig is unusable.
    #[error("cluster {cluster}: {why}")]
    ClusterUnreachable { cluster: String, why: String },
}

impl Error {
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Bounded label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube { source, .. } => match api_code(source) {
                Some(409) => "conflict",
                Some(403) => "forbidden",
                Some(404) => "not-found",
                Some(422 | 400) => "rejected",
                _ => "api",
            },
            Self::InvalidObject(_) => "invalid-object",
            Self::InvalidSpec(_) => "invalid-spec",
            Self::Priors(_) => "priors",
            Self::MissingPrior(_) => "missing-prior",
            Self::UnreadablePrior { .. } => "unreadable-prior",
            Self::Actions { category, .. } => category,
            Self::NotReady => "not-ready",
            Self::NotLeader => "not-leader",
            Self::ClusterUnreachable { .. } => "cluster-unreachable",
        }
    }

    /// The status reason for this error when it stops an action.
    pub fn failure_reason(&self) -> FailureReason {
        match self {
            Self::Kube {
                source: kube::Error::Api(status),
                ..
            } => match status.code {
                403 => FailureReason::WriteForbidden,
                400 | 413 | 422 => FailureReason::WriteRejected,
                404 if status.message.contains("namespaces") => FailureReason::TargetNamespaceGone,
                409 => FailureReason::WriteConflict,
                _ => FailureReason::ApiUnavailable,
            },
            Self::Kube { .. } => FailureReason::ApiUnavailable,
            Self::Priors(_) | Self::MissingPrior(_) | Self::UnreadablePrior { .. } => {
                FailureReason::PriorsUnavailable
            }
            Self::Actions { failure, .. } => failure.reason,
            _ => FailureReason::ApiUnavailable,
        }
    }

    /// A short reason for the status: the API's own message, bounded and on one line.
    pub fn detail(&self) -> String {
        let text = match self {
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        bounded_text(&text, 256)
    }

    /// What the status says when this error stops the reads a decision needs; None for
    /// what is not a failure to report (waiting for caches, leadership lost, a spec error).
    pub fn read_failure(&self) -> Option<ActionFailure> {
        let reason = match self.failure_reason() {
            _ if self.is_permanent() || matches!(self, Self::NotReady | Self::NotLeader) => {
                return None;
            }
            reason @ (FailureReason::PriorsUnavailable | FailureReason::TargetConflict) => reason,
            _ => FailureReason::ReadFailed,
        };
        let what = match self {
            Self::Kube { action, .. } => action.clone(),
            Self::Actions { failure, .. } => failure.what.clone(),
            _ => "read prior content".into(),
        };
        Some(ActionFailure {
            reason,
            what,
            targets: Vec::new(),
            of: 0,
            detail: self.detail(),
        })
    }

    /// Permanent errors wait for the object to change instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidObject(_) | Self::InvalidSpec(_))
    }
}

/// `text` on one line, control characters blanked, cut to at most `max` bytes.
pub fn bounded_text(text: &str, max: usize) -> String {
    let mut out = String::new();
    let budget = max.saturating_sub('…'.len_utf8());
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > budget {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// HTTP status of an API error, if the server answered.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Per-object exponential backoff for transient errors: 1s, 2s, 4s ... capped at 5 minutes.
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exp = consecutive_failures.saturating_sub(1).min(9);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> Error {
        Error::kube(
            "patch",
            kube::Error::Api(Box::new(Status::failure("x", "y").with_code(code))),
        )
    }

    #[test]
    fn categories_are_bounded_and_classify() {
        assert_eq!(api(409).category(), "conflict");
        assert_eq!(api(500).category(), "api");
        assert_eq!(api(403).category(), "forbidden");
        assert!(!api(500).is_permanent());
        assert!(Error::InvalidSpec("x".into()).is_permanent());
        assert_eq!(
            Error::InvalidObject("x".into()).category(),
            "invalid-object"
        );
    }

    #[test]
    fn read_failures_name_the_read_and_leave_out_what_is_not_a_failure() {
        let failure = api(403).read_failure().unwrap();
        assert_eq!(failure.reason, FailureReason::ReadFailed);
        assert_eq!(failure.what, "patch");
        assert!(failure.targets.is_empty());
        let priors = Error::Priors("gone".into()).read_failure().unwrap();
        assert_eq!(priors.reason, FailureReason::PriorsUnavailable);
        assert!(priors.detail.contains("gone"), "{priors:?}");
        for quiet in [
            Error::NotReady,
            Error::NotLeader,
            Error::InvalidSpec("x".into()),
        ] {
            assert_eq!(quiet.read_failure(), None, "{quiet}");
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(300));
    }
}
