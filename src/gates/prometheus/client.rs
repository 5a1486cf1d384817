//! One instant query over the Prometheus HTTP API.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::{PrometheusAuth, QueryError, excerpt, promql_duration, response};

/// Answers larger than this are not Prometheus answering a one-series query.
const MAX_BODY: usize = 8 << 20;

pub(super) struct InstantQuery<'a> {
    pub address: &'a str,
    pub promql: &'a str,
    pub time: Timestamp,
    pub timeout: Duration,
    pub auth: Option<&'a PrometheusAuth>,
}

/// `POST <address>/api/v1/query`: a form body keeps long rendered queries
/// (hundreds of namespaces) out of URL length limits.
pub(super) async fn instant(
    client: &reqwest::Client,
    q: &InstantQuery<'_>,
) -> Result<Option<f64>, QueryError> {
    let url = format!("{}/api/v1/query", q.address.trim_end_matches('/'));
    let millis = q.time.as_millisecond();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", q.promql)
        .append_pair(
            "time",
            &format!("{}.{:03}", millis.div_euclid(1000), millis.rem_euclid(1000)),
        )
        // Lets Prometheus give up on the evaluation when we do.
        .append_pair("timeout", &promql_duration(q.timeout))
        .finish();
    let mut request = client
        .post(&url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(q.timeout)
        .body(form);
    request = match q.auth {
        Some(PrometheusAuth::Bearer { token }) => request.bearer_auth(token),
        Some(PrometheusAuth::Basic { username, password }) => {
            request.basic_auth(username, Some(password))
        }
        None => request,
    };

    let mut response = request.send().await.map_err(|e| transport(e, q))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(e, q))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(QueryError::Malformed(format!(
                "answer larger than {} MiB",
                MAX_BODY >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    response::parse(status, &body)
}

fn transport(e: reqwest::Error, q: &InstantQuery<'_>) -> QueryError {
    if e.is_timeout() {
        QueryError::Timeout {
            address: q.address.to_string(),
            timeout: promql_duration(q.timeout),
        }
    } else if e.is_builder() {
        QueryError::InvalidAddress {
            address: q.address.to_string(),
            reason: root_cause(&e),
        }
    } else {
        QueryError::Unreachable {
            address: q.address.to_string(),
            reason: root_cause(&e),
        }
    }
}

/// The innermost cause (e.g. `Connection refused (os error 111)`), which is
/// the part that tells an operator what went wrong. An excerpt, as a TLS error
/// may quote what the server presented.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    excerpt(&cause.to_string())
}
