//! The `kubectl ringfence` plugin: a live per-ring, per-gate view of rollouts, the manual
//! requests, the history of revisions and a plan of what a rollout would do.
//!
//! Rendering is pure (a function of the ConfigRollout and the clock) and tested here; the
//! async functions around it only read and patch the API.

pub mod get;
pub mod history;
pub mod plan;
pub mod requests;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::api::{ConfigRollout, LOCAL_CLUSTER};

/// The usual kubectl connection flags.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub all_namespaces: bool,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
    pub all_namespaces: bool,
    cluster: String,
}

/// What stops a plugin command: each is one line for the user.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot reach the Kubernetes API at {cluster}: {reason}")]
    Unreachable { cluster: String, reason: String },
    #[error(
        "the ConfigRollout CRD (configrollouts.ringfence.dev) is not installed in this cluster"
    )]
    CrdMissing,
    #[error("configrollout {name:?} not found in namespace {namespace}{hint}")]
    NotFound {
        name: String,
        namespace: String,
        /// Where a rollout of that name does exist, when one does.
        hint: String,
    },
    #[error("{what}: {reason}")]
    Api { what: String, reason: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Session {
    pub async fn connect(connection: &Connection) -> Result<Self, PluginError> {
        let options = KubeConfigOptions {
            context: connection.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &connection.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| PluginError::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        }
        .map_err(|e| PluginError::Kubeconfig(one_line(&e)))?;
        let cluster = config.cluster_url.to_string();
        let namespace = connection
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| PluginError::Kubeconfig(one_line(&e)))?;
        Ok(Self {
            client,
            namespace,
            all_namespaces: connection.all_namespaces,
            cluster,
        })
    }

    pub fn rollouts(&self) -> Api<ConfigRollout> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The rollouts of the namespace, or of every namespace with `-A`.
    pub fn scope(&self) -> Api<ConfigRollout> {
        if self.all_namespaces {
            Api::all(self.client.clone())
        } else {
            self.rollouts()
        }
    }

    /// Reads one rollout; when it is not there, says where one of that name is.
    pub async fn rollout(&self, name: &str) -> Result<ConfigRollout, PluginError> {
        match self.rollouts().get(name).await {
            Ok(rollout) => Ok(rollout),
            Err(kube::Error::Api(status)) if status.code == 404 && !missing_crd(&status) => {
                Err(self.not_found(name).await)
            }
            Err(e) => Err(self.error("read the rollout", e)),
        }
    }

    async fn not_found(&self, name: &str) -> PluginError {
        // Best effort: a user who may not list every namespace still gets the plain answer.
        let elsewhere: Vec<String> = Api::<ConfigRollout>::all(self.client.clone())
            .list_metadata(
                &kube::api::ListParams::default().fields(&format!("metadata.name={name}")),
            )
            .await
            .map(|list| {
                list.items
                    .into_iter()
                    .filter_map(|m| m.metadata.namespace)
                    .collect()
            })
            .unwrap_or_default();
        let hint = match elsewhere.first() {
            Some(ns) => format!(" (there is one in namespace {ns}: add -n {ns})"),
            None => String::new(),
        };
        PluginError::NotFound {
            name: name.to_string(),
            namespace: self.namespace.clone(),
            hint,
        }
    }

    /// A kube error as one line, telling an unreachable API and a missing CRD apart.
    pub fn error(&self, what: &str, error: kube::Error) -> PluginError {
        match error {
            kube::Error::Api(status) if status.code == 404 && missing_crd(&status) => {
                PluginError::CrdMissing
            }
            kube::Error::Api(status) => PluginError::Api {
                what: what.to_string(),
                reason: if status.message.is_empty() {
                    format!("{} ({})", status.reason, status.code)
                } else {
                    status.message.clone()
                },
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => PluginError::Unreachable {
                cluster: self.cluster.clone(),
                reason: one_line(&error),
            },
            other => PluginError::Api {
                what: what.to_string(),
                reason: one_line(&other),
            },
        }
    }
}

/// Whether a 404 is about the resource type rather than one object: a missing CRD
/// answers with no object name in its details.
fn missing_crd(status: &kube::core::Status) -> bool {
    status.details.as_ref().is_none_or(|d| d.name.is_empty())
}

/// An error and its causes on one line, each cause once.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out.replace('\n', " ")
}

/// A duration the way kubectl prints ages: `45s`, `3m10s`, `2h5m`, `3d4h`.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 if (s % 3600) < 60 => format!("{}h", s / 3600),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// `3m10s ago` (or `just now`); a time in the future (clock skew) reads as now.
pub fn ago(time: &Time, now: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(time.0.as_second());
    match u64::try_from(secs) {
        Ok(s) if s > 0 => format!("{} ago", short_duration(Duration::from_secs(s))),
        _ => "just now".to_string(),
    }
}

/// A gate value with four significant digits: `0.0021`, `0.007`, `12.5`.
pub fn number(v: f64) -> String {
    if !v.is_finite() || v == 0.0 {
        return v.to_string();
    }
    let magnitude = v.abs().log10().floor();
    let decimals = (3.0 - magnitude).clamp(0.0, 12.0);
    // `decimals` is a small whole number.
    let text = format!("{v:.*}", decimals as usize);
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A target key split into its cluster and namespace: `cluster/namespace` for a target
/// in a member cluster, a plain `namespace` for one in the cluster ringfence runs in
/// (whose cluster is [`LOCAL_CLUSTER`]). Neither a cluster name nor a namespace holds a `/`.
pub fn split_target(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((LOCAL_CLUSTER, key))
}

/// A target key as `cluster/namespace`, the local cluster named too.
pub fn qualified_target(key: &str) -> String {
    let (cluster, namespace) = split_target(key);
    format!("{cluster}/{namespace}")
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_ages() {
        let d = |s| short_duration(Duration::from_secs(s));
        assert_eq!(
            [d(0), d(45), d(60), d(190), d(3600), d(7500), d(90000)],
            ["0s", "45s", "1m", "3m10s", "1h", "2h5m", "1d1h"]
        );
        let now = Timestamp::from_second(1_000).unwrap();
        let at = |s| Time(Timestamp::from_second(s).unwrap());
        assert_eq!(ago(&at(810), now), "3m10s ago");
        assert_eq!(ago(&at(1_000), now), "just now");
        assert_eq!(ago(&at(2_000), now), "just now");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(0.0021), "0.0021");
        assert_eq!(number(0.002 + 0.005), "0.007");
        assert_eq!(number(12.5), "12.5");
        assert_eq!(number(0.08), "0.08");
        assert_eq!(number(1234.56), "1235");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(-0.5), "-0.5");
    }

    #[test]
    fn a_target_key_names_its_cluster_or_the_local_one() {
        assert_eq!(split_target("checkout"), ("local", "checkout"));
        assert_eq!(
            split_target("eu-west-1/checkout"),
            ("eu-west-1", "checkout")
        );
        assert_eq!(split_target(""), ("local", ""));
        assert_eq!(qualified_target("checkout"), "local/checkout");
        assert_eq!(qualified_target("eu-west-1/checkout"), "eu-west-1/checkout");
    }

    #[test]
    fn columns_align_but_never_pad_the_last() {
        let rows = vec![
            vec![
                "NAME".to_string(),
                "PHASE".to_string(),
                "MESSAGE".to_string(),
            ],
            vec!["a-long-name".to_string(), "Ok".to_string(), "m".to_string()],
        ];
        assert_eq!(
            columns(&rows),
            "NAME         PHASE  MESSAGE\na-long-name  Ok     m\n"
        );
    }

    #[test]
    fn errors_fit_on_one_line_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner\nsecond line")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(one_line(&Outer(Inner)), "outer: inner second line");
    }
}
