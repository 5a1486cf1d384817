//! The `prometheus` gate: a PromQL query judged against thresholds.
//!
//! # Evaluation
//!
//! Each evaluation renders the query template (`{{ namespaces }}` becomes the
//! ring's namespaces as a regex alternation, see [`super::template`]) and sends
//! an instant query (`POST /api/v1/query` with `query` and `time`) at the
//! evaluation time. The answer must be one number:
//!
//! - an instant vector with **one** series, or a scalar: that is the value;
//! - an **empty** vector is *no data*; so is **NaN**, which a ratio returns as
//!   0/0 when there was no traffic. Both follow `onNoData` (`wait` is
//!   Inconclusive, `pass` and `fail` are what they say);
//! - **+Inf** exceeds every threshold (a `histogram_quantile` that lands in the
//!   `+Inf` bucket is too slow); **-Inf** is Inconclusive, as no health signal
//!   produces it;
//! - **several series** are rejected (Inconclusive), naming a few of them.
//!   Taking their max or sum silently would hide a missing aggregation, and
//!   which of the two is right depends on the query: aggregate explicitly with
//!   `sum(...)` or `max(...)`;
//! - a **matrix** (a bare range selector such as `x[5m]`) or a **string** is rejected.
//!
//! Every error is Inconclusive with the reason in the message: connection
//! refused, no answer within `timeout` (per request), an HTTP error, the
//! template, or PromQL that Prometheus rejects (its own `error` text is shown).
//! `onNoData` governs only the absence of data: an unreachable or failing
//! Prometheus is never healthy, and never counts as a failure either. The
//! engine holds the bake on Inconclusive without counting it.
//!
//! # Thresholds
//!
//! The threshold is the lowest of `max`, `baseline + maxIncrease` and
//! `baseline * maxRatio` among those set and computable; a value above it
//! fails, a value equal to it passes. Without a baseline only `max` applies
//! and the message says so; with neither, the check is Inconclusive. Note that
//! `maxRatio` over a baseline near zero allows almost nothing: for error
//! ratios, which are often zero, prefer `maxIncrease`.
//!
//! # Baselines
//!
//! - `compareTo: before` (default). Before a ring is written, the engine asks
//!   for a `Baseline` evaluation: the query over the ring's namespaces averaged
//!   over `baselineWindow`, as `avg_over_time((<query>)[<window>:<step>])` with
//!   a step of a thirtieth of the window (at least 1s). When that average has
//!   no data, is NaN (one 0/0 step poisons it) or is rejected (a scalar query
//!   cannot be a subquery), the instant value is used instead. With no data at
//!   all there is no baseline (Inconclusive): that ring's checks are judged by
//!   `max` alone.
//! - `compareTo: unchanged`. Every check also evaluates the same query over the
//!   namespaces not yet on the new revision, at the same moment, and uses that
//!   as the baseline. The last ring has no unchanged namespaces left; there,
//!   and whenever the unchanged namespaces have no data, the check falls back
//!   to the ring's `before` baseline (or to `max` alone without one). The
//!   message names the baseline used.
//!
//! # Choosing compareTo
//!
//! `before` compares a ring with itself a moment ago. It is right when the
//! change is the only thing moving and traffic is steady: an isolated change,
//! a ring whose error rate is stable from one bake to the next. It is wrong
//! when the world moves during the bake: a global incident, a dependency
//! outage or a daily traffic shift raises the ring's errors too, and `before`
//! blames the configuration and rolls it back.
//!
//! `unchanged` compares a ring with the cells that do not have the change yet,
//! at the same moment, so anything that hits everyone cancels out and only a
//! difference the change made remains. It is right for fleets of similar
//! cells and wherever global incidents or traffic shifts are common. It needs
//! the unchanged cells to be comparable (similar traffic mix) and falls back to
//! `before` in the last ring, where no unchanged cells remain.
//!
//! A `max` alongside either is a good backstop: it fails a ring that is
//! clearly broken, whatever the baseline did.
//!
//! # Examples
//!
//! HTTP 5xx ratio, allowed to rise by half a percentage point, never above 2%:
//!
//! ```yaml
//! prometheus:
//!   address: http://prometheus.monitoring:9090
//!   query: >
//!     (sum(rate(http_requests_total{namespace=~"{{ namespaces }}",code=~"5.."}[2m])) or vector(0))
//!     / sum(rate(http_requests_total{namespace=~"{{ namespaces }}"}[2m]))
//!   max: 0.02
//!   maxIncrease: 0.005
//!   compareTo: unchanged
//!   onNoData: wait
//! ```
//!
//! `or vector(0)` matters: a healthy service may have no 5xx series at all,
//! and without it the ratio would be empty (no data) instead of 0. Without
//! traffic the denominator is empty or 0, and the gate sees no data or NaN.
//!
//! gRPC error ratio, allowed to grow by half over its baseline:
//!
//! ```yaml
//! prometheus:
//!   address: http://prometheus.monitoring:9090
//!   query: >
//!     (sum(rate(grpc_server_handled_total{namespace=~"{{ namespaces }}",grpc_code!="OK"}[2m])) or vector(0))
//!     / sum(rate(grpc_server_handled_total{namespace=~"{{ namespaces }}"}[2m]))
//!   maxRatio: 1.5
//!   maxIncrease: 0.01
//!   compareTo: before
//!   baselineWindow: 15m
//! ```
//!
//! The lower threshold applies, so `maxRatio: 1.5` dominates for baselines
//! above 2%, `maxIncrease: 0.01` below that. To ignore client-caused codes,
//! use `grpc_code!~"OK|NotFound|InvalidArgument|Canceled"`.

mod client;
mod judge;
mod response;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub use judge::{Judgement, fmt_value, judge};

use super::GateContext;
use super::answer::excerpt;
use super::template::{self, TemplateError, TemplateVars};
use crate::api::{CompareTo, Gate, PrometheusGate, Verdict};
use crate::engine::{AddressPolicy, GatePurpose, GateRequest, GateResult};

/// Baseline subqueries sample the window this many times.
const BASELINE_STEPS: u32 = 30;

/// Credentials from the Secret named by `authSecretRef` (the controller reads it).
#[derive(Clone, PartialEq, Eq)]
pub enum PrometheusAuth {
    /// `Authorization: Bearer <token>`, from the Secret's `token` key.
    Bearer { token: String },
    /// HTTP basic auth, from the Secret's `username` and `password` keys.
    Basic { username: String, password: String },
}

/// Prints no Secret data (the username included), so credentials cannot leak into logs.
impl fmt::Debug for PrometheusAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bearer { .. } => "Bearer(<redacted>)",
            Self::Basic { .. } => "Basic(<redacted>)",
        })
    }
}

/// Why a query produced no number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("invalid Prometheus address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("Prometheus at {address} not called: {reason}")]
    Refused { address: String, reason: String },
    #[error("cannot reach Prometheus at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    #[error("Prometheus at {address} did not answer within {timeout}")]
    Timeout { address: String, timeout: String },
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("Prometheus rejected the query ({error_type}): {error}")]
    Rejected { error_type: String, error: String },
    #[error(
        "the query returned {count} series but a gate judges one value: aggregate it, e.g. with sum(...) or max(...) (series: {})",
        series_list(examples, *count)
    )]
    ManySeries { count: usize, examples: Vec<String> },
    #[error(
        "the query returned a {0} result, but a gate needs an instant vector with one series or a scalar (wrap a range selector such as [5m] in rate(...) or avg_over_time(...))"
    )]
    UnsupportedResult(String),
    #[error("unexpected answer from Prometheus: {0}")]
    Malformed(String),
}

/// The examples together are one excerpt of the answer.
fn series_list(examples: &[String], count: usize) -> String {
    let listed = examples.join(", ");
    if count > examples.len() {
        excerpt(&format!("{listed}, ..."))
    } else {
        excerpt(&listed)
    }
}

/// Why an evaluation produced no verdict from data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("gate {0} has no prometheus settings")]
    NotPrometheus(String),
    #[error("query template: {0}")]
    Template(#[from] TemplateError),
    #[error("{field} {value:?} is not a duration such as 30s, 5m or 1h30m")]
    Duration { field: &'static str, value: String },
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("querying the unchanged namespaces: {0}")]
    Unchanged(QueryError),
}

/// Evaluates `prometheus` gates over HTTP.
#[derive(Clone, Debug)]
pub struct PrometheusProvider {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl PrometheusProvider {
    /// A provider with its own HTTP client (rustls with the ring provider) that calls
    /// only what `policy` allows.
    pub fn new(policy: Arc<AddressPolicy>) -> Result<Self, reqwest::Error> {
        // Fails only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            client: super::http::client(policy.clone())?,
            policy,
        })
    }

    /// Evaluates `gate` for `req` at `now`. Never fails: every problem becomes
    /// an Inconclusive result whose message says what went wrong.
    pub async fn evaluate(
        &self,
        gate: &Gate,
        req: &GateRequest,
        ctx: &GateContext,
        auth: Option<&PrometheusAuth>,
        now: Timestamp,
    ) -> GateResult {
        let outcome = self
            .outcome(gate, req, ctx, auth, now)
            .await
            .unwrap_or_else(|e| Outcome {
                verdict: Verdict::Inconclusive,
                value: None,
                baseline: req.baseline,
                threshold: None,
                message: e.to_string(),
            });
        GateResult {
            gate: req.gate.clone(),
            ring: req.ring,
            purpose: req.purpose,
            verdict: outcome.verdict,
            value: outcome.value,
            baseline: outcome.baseline,
            threshold: outcome.threshold,
            message: format!(
                "{} in ring {}: {}",
                gate.name, req.ring_name, outcome.message
            ),
            at: now,
        }
    }

    async fn outcome(
        &self,
        gate: &Gate,
        req: &GateRequest,
        ctx: &GateContext,
        auth: Option<&PrometheusAuth>,
        now: Timestamp,
    ) -> Result<Outcome, EvalError> {
        let spec = gate
            .prometheus
            .as_ref()
            .ok_or_else(|| EvalError::NotPrometheus(gate.name.clone()))?;
        // An address that is no URL at all is reported as invalid when it is requested.
        if url::Url::parse(&spec.address).is_ok() {
            self.policy
                .check_url(&spec.address)
                .map_err(|reason| QueryError::Refused {
                    address: spec.address.clone(),
                    reason,
                })?;
        }
        let eval = Evaluation {
            client: &self.client,
            spec,
            req,
            ctx,
            auth,
            now,
            timeout: duration("timeout", &spec.timeout)?,
        };
        match req.purpose {
            GatePurpose::Baseline => eval.baseline().await,
            GatePurpose::Check => eval.check().await,
        }
    }
}

/// A result whose message follows `<gate> in ring <ring>: `.
struct Outcome {
    verdict: Verdict,
    value: Option<f64>,
    baseline: Option<f64>,
    threshold: Option<f64>,
    message: String,
}

struct Evaluation<'a> {
    client: &'a reqwest::Client,
    spec: &'a PrometheusGate,
    req: &'a GateRequest,
    ctx: &'a GateContext,
    auth: Option<&'a PrometheusAuth>,
    now: Timestamp,
    timeout: Duration,
}

impl Evaluation<'_> {
    async fn baseline(&self) -> Result<Outcome, EvalError> {
        let query = self.render(&self.req.namespaces)?;
        let window = duration("baselineWindow", &self.spec.baseline_window)?;
        let step = (window / BASELINE_STEPS).max(Duration::from_secs(1));
        let averaged = format!(
            "avg_over_time(({query})[{}:{}])",
            promql_duration(window),
            promql_duration(step)
        );
        let window_text = promql_duration(window);
        let (value, how) = match self.run(&averaged).await {
            Ok(Some(v)) if v.is_finite() => {
                (Some(v), format!("average over the last {window_text}"))
            }
            Ok(_) | Err(QueryError::Rejected { .. }) => (
                self.run(&query).await?.filter(|v| v.is_finite()),
                format!("instant value; no average over the last {window_text}"),
            ),
            Err(e) => return Err(e.into()),
        };
        Ok(match value {
            Some(v) => Outcome {
                verdict: Verdict::Pass,
                value: Some(v),
                baseline: Some(v),
                threshold: None,
                message: format!("baseline {} ({how})", fmt_value(v)),
            },
            None => Outcome {
                verdict: Verdict::Inconclusive,
                value: None,
                baseline: None,
                threshold: None,
                message: format!(
                    "no baseline: no data over the last {window_text} nor now; {}",
                    self.without_baseline()
                ),
            },
        })
    }

    /// What checks will do for want of a `before` baseline.
    fn without_baseline(&self) -> &'static str {
        match (self.spec.compare_to, self.spec.max) {
            (CompareTo::Unchanged, Some(_)) => {
                "checks compare with unchanged namespaces, and with max alone in the last ring"
            }
            (CompareTo::Unchanged, None) => {
                "checks compare with unchanged namespaces, and cannot be judged in the last ring (no max set)"
            }
            (CompareTo::Before, Some(_)) => "checks are judged by max alone",
            (CompareTo::Before, None) => "checks cannot be judged (no max set)",
        }
    }

    async fn check(&self) -> Result<Outcome, EvalError> {
        let query = self.render(&self.req.namespaces)?;
        let unchanged = &self.req.unchanged_namespaces;
        let (value, baseline, source) = match self.spec.compare_to {
            CompareTo::Before => (self.run(&query).await?, self.req.baseline, None),
            CompareTo::Unchanged => {
                let (value, reference) = if unchanged.is_empty() {
                    (
                        self.run(&query).await?,
                        Err("no unchanged namespaces are left"),
                    )
                } else {
                    let reference_query = self.render(unchanged)?;
                    let (value, reference) =
                        tokio::join!(self.run(&query), self.run(&reference_query));
                    let value = value?;
                    match reference.map_err(EvalError::Unchanged)? {
                        Some(b) if b.is_finite() => (value, Ok(b)),
                        _ => (value, Err("the unchanged namespaces have no data")),
                    }
                };
                match (reference, self.req.baseline) {
                    (Ok(b), _) => (
                        value,
                        Some(b),
                        Some(format!(
                            "baseline from {} unchanged namespaces now",
                            unchanged.len()
                        )),
                    ),
                    (Err(why), Some(recorded)) => (
                        value,
                        Some(recorded),
                        Some(format!(
                            "baseline recorded before the ring was written, as {why}"
                        )),
                    ),
                    (Err(why), None) => (value, None, Some(why.to_string())),
                }
            }
        };
        let judgement = judge(self.spec, value, baseline);
        let mut message = judgement.message;
        if let Some(source) = source {
            message.push_str("; ");
            message.push_str(&source);
        }
        Ok(Outcome {
            verdict: judgement.verdict,
            value: value.filter(|v| v.is_finite()),
            baseline: baseline.filter(|b| b.is_finite()),
            threshold: judgement.threshold,
            message,
        })
    }

    fn render(&self, namespaces: &[String]) -> Result<String, TemplateError> {
        template::render(
            &self.spec.query,
            &TemplateVars {
                namespaces,
                ring: &self.req.ring_name,
                revision: &self.req.revision,
                rollout: &self.ctx.rollout_name,
                namespace: &self.ctx.rollout_namespace,
            },
        )
    }

    async fn run(&self, promql: &str) -> Result<Option<f64>, QueryError> {
        client::instant(
            self.client,
            &client::InstantQuery {
                address: &self.spec.address,
                promql,
                time: self.now,
                timeout: self.timeout,
                auth: self.auth,
            },
        )
        .await
    }
}

/// Parses a Go-style duration (`30s`, `1.5m`, `1h30m`, `250ms`), as the CRD allows.
fn duration(field: &'static str, value: &str) -> Result<Duration, EvalError> {
    crate::api::parse_duration(value).map_err(|_| EvalError::Duration {
        field,
        value: value.to_string(),
    })
}

/// A PromQL duration literal (whole seconds, else milliseconds), since PromQL
/// takes neither fractions nor Go's `1.5m`.
fn promql_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_durations_are_whole_units() {
        assert_eq!(promql_duration(Duration::from_secs(300)), "300s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn auth_debug_redacts_secrets() {
        let bearer = PrometheusAuth::Bearer {
            token: "s3cret".into(),
        };
        let basic = PrometheusAuth::Basic {
            username: "ops".into(),
            password: "s3cret".into(),
        };
        assert_eq!(format!("{bearer:?}"), "Bearer(<redacted>)");
        assert_eq!(format!("{basic:?}"), "Basic(<redacted>)");
    }

    #[test]
    fn many_series_message_says_when_it_is_cut_short() {
        let e = QueryError::ManySeries {
            count: 5,
            examples: vec!["{a=\"1\"}".into()],
        };
        assert!(e.to_string().ends_with("(series: {a=\"1\"}, ...)"), "{e}");
    }
}
