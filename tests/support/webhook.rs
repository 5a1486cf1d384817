//! A webhook gate endpoint whose checks of ring two fail while a test says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::Json;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// Serves on a free loopback port and returns the URL. While `fail` is set, checks of
/// ring two answer 500 with a reason of two lines; everything else answers 200.
pub async fn serve(fail: Arc<AtomicBool>) -> String {
    let router = Router::new().route(
        "/check",
        post(move |Json(body): Json<Value>| {
            let fail = fail.load(Ordering::Relaxed);
            async move {
                if fail && body["ring"] == "two" && body["purpose"] == "check" {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "error rate 12% in ring two\nmore detail",
                    )
                } else {
                    (StatusCode::OK, "ok")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the webhook");
    let addr = listener.local_addr().expect("webhook address");
    tokio::spawn(async move { axum::serve(listener, router).await.ok() });
    format!("http://{addr}/check")
}

/// [`serve`] with a setting that never changes.
pub async fn serve_fixed(fail_ring_two: bool) -> String {
    serve(Arc::new(AtomicBool::new(fail_ring_two))).await
}
