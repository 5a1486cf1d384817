//! Health and metrics over HTTP: `/healthz` (the process serves), `/readyz` (the
//! controller's caches have synced) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Set once the controller's watches have synced.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ready): State<Readiness>) -> impl IntoResponse {
    if ready.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

/// OpenMetrics to scrapers that ask for it (Prometheus does), the classic text format to
/// everything else (`curl ... | promtool check metrics`), as Go's client does.
async fn metrics(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            metrics.render_prometheus_text(),
        )
    };
    match body {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ready)
}

pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}

/// Binds the listeners (one when both addresses are equal) and returns the bound addresses
/// with a future that serves until `shutdown` resolves.
pub async fn bind(
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    ready: Readiness,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(
    Vec<SocketAddr>,
    impl std::future::Future<Output = std::io::Result<()>>,
)> {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let mut listeners = Vec::new();
    if health_addr == metrics_addr {
        listeners.push((
            TcpListener::bind(health_addr).await?,
            health_router(ready).merge(metrics_router(metrics)),
        ));
    } else {
        listeners.push((TcpListener::bind(health_addr).await?, health_router(ready)));
        listeners.push((
            TcpListener::bind(metrics_addr).await?,
            metrics_router(metrics),
        ));
    }
    let addrs = listeners
        .iter()
        .map(|(l, _)| l.local_addr())
        .collect::<std::io::Result<Vec<_>>>()?;
    let serve = async move {
        let servers = listeners.into_iter().map(|(listener, router)| {
            let stop = shutdown.clone();
            async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }
        });
        futures::future::try_join_all(servers).await.map(drop)
    };
    Ok((addrs, serve))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConfigRollout;
    use kube::core::DeserializeGuard;
    use kube::runtime::reflector;

    async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
        get_with(addr, path, "").await
    }

    async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\n{headers}connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let code = buf[9..12].parse().unwrap();
        (code, buf)
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let (store, _w) = reflector::store::<DeserializeGuard<ConfigRollout>>();
        let ready = Readiness::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (addrs, serve) = bind(
            addr,
            addr,
            ready.clone(),
            Arc::new(Metrics::new(store)),
            async {
                rx.await.ok();
            },
        )
        .await
        .unwrap();
        let task = tokio::spawn(serve);
        let a = addrs[0];
        assert_eq!(get_text(a, "/healthz").await.0, 200);
        assert_eq!(get_text(a, "/readyz").await.0, 503);
        ready.set_ready();
        assert_eq!(get_text(a, "/readyz").await.0, 200);
        let (code, body) = get_text(a, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("ringfence_rollouts"));
        assert!(body.contains("text/plain; version=0.0.4") && !body.contains("# EOF"));
        let accept = "accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n";
        let (_, body) = get_with(a, "/metrics", accept).await;
        assert!(body.contains("application/openmetrics-text") && body.contains("# EOF"));
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}
