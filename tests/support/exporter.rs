//! A metrics endpoint serving `http_requests_total{namespace, code}` counters
//! whose error rate each test sets per namespace.
//!
//! Counters advance with wall time, at every scrape and every change, as if
//! each namespace served `request_rate` requests per second of which
//! `error_rate` answered 500 and the rest 200. Between changes the ratio of
//! the two counters' rates is exactly the error rate, whatever the scrape
//! timing, so tests can wait for an exact value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::task::JoinHandle;

/// Requests per second of a namespace unless a test says otherwise.
pub const DEFAULT_REQUEST_RATE: f64 = 100.0;

#[derive(Clone, Copy)]
struct Cell {
    request_rate: f64,
    error_rate: f64,
    ok: f64,
    errors: f64,
}

struct Cells {
    cells: BTreeMap<String, Cell>,
    advanced: Instant,
}

impl Cells {
    fn advance(&mut self) {
        let now = Instant::now();
        let seconds = now.duration_since(self.advanced).as_secs_f64();
        self.advanced = now;
        for cell in self.cells.values_mut() {
            let requests = cell.request_rate * seconds;
            cell.errors += requests * cell.error_rate;
            cell.ok += requests * (1.0 - cell.error_rate);
        }
    }

    fn cell(&mut self, namespace: &str) -> &mut Cell {
        self.cells.entry(namespace.to_string()).or_insert(Cell {
            request_rate: DEFAULT_REQUEST_RATE,
            error_rate: 0.0,
            ok: 0.0,
            errors: 0.0,
        })
    }
}

type Shared = Arc<Mutex<Cells>>;

/// The exporter; stops serving when dropped.
pub struct Exporter {
    addr: SocketAddr,
    cells: Shared,
    server: JoinHandle<()>,
}

impl Exporter {
    /// Serves `/metrics` on a free loopback port.
    pub async fn start() -> Self {
        let cells: Shared = Arc::new(Mutex::new(Cells {
            cells: BTreeMap::new(),
            advanced: Instant::now(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the exporter");
        let addr = listener.local_addr().expect("exporter address");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(cells.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("exporter serves");
        });
        Self {
            addr,
            cells,
            server,
        }
    }

    /// `host:port` to scrape.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, this share of the namespace's requests fails with 500.
    pub fn set_error_rate(&self, namespace: &str, error_rate: f64) {
        let mut cells = self.cells.lock().expect("exporter state");
        cells.advance();
        cells.cell(namespace).error_rate = error_rate;
    }

    /// From now on, the namespace serves this many requests per second (0 = idle).
    pub fn set_request_rate(&self, namespace: &str, per_second: f64) {
        let mut cells = self.cells.lock().expect("exporter state");
        cells.advance();
        cells.cell(namespace).request_rate = per_second;
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn metrics(State(cells): State<Shared>) -> String {
    let mut cells = cells.lock().expect("exporter state");
    cells.advance();
    let mut out = String::from(
        "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n",
    );
    for (namespace, cell) in &cells.cells {
        for (code, count) in [("200", cell.ok), ("500", cell.errors)] {
            let _ = writeln!(
                out,
                "http_requests_total{{namespace=\"{namespace}\",code=\"{code}\"}} {count}"
            );
        }
    }
    out
}
