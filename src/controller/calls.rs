//! How the controller makes API calls: retried where a retry is safe, and fanned out
//! across namespaces with a bound on how many are in flight.

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, stream};

use super::error::{Error, api_code};

/// Attempts for a write answered with 409 or 500 (kube's client already retries 429/503/504).
const WRITE_ATTEMPTS: u32 = 5;

/// Runs an API call, retrying 409 and 500 with jittered exponential backoff.
pub async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if matches!(api_code(&e), Some(409 | 500)) && attempt < WRITE_ATTEMPTS => {
                let base = 50u64 << attempt;
                let jitter = rand::random_range(0..=base);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                attempt += 1;
            }
            Err(e) => return Err(Error::kube(what, e)),
        }
    }
}

/// Runs `op` for every namespace, `parallelism` at a time; returns the failures by namespace.
pub async fn for_each_namespace<F, Fut, E>(
    namespaces: &[String],
    parallelism: usize,
    op: F,
) -> Vec<(String, E)>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    stream::iter(namespaces.iter().cloned().map(|ns| {
        let done = op(ns.clone());
        async move { (ns, done.await) }
    }))
    .buffer_unordered(parallelism)
    .filter_map(|(ns, r)| async move { r.err().map(|e| (ns, e)) })
    .collect()
    .await
}
