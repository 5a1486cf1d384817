//! A real Prometheus server per test: Debian's `prometheus` binary with a
//! temporary config and data directory, scraping every second.
//!
//! When the binary is missing, [`PrometheusServer::start`] fails the test with
//! the command that installs it: a test that did not run never passes.

use std::fmt::{Display, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tempdir::{self, TempDir};

/// Generous, because the test machines are small and shared.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const START_ATTEMPTS: usize = 3;

/// A running Prometheus; killed when dropped.
pub struct PrometheusServer {
    child: Child,
    address: String,
    dir: TempDir,
    client: reqwest::Client,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `scrape_targets` (`host:port`, path `/metrics`)
    /// every second, and waits until it is ready.
    pub async fn start<T: Display>(scrape_targets: &[T]) -> Self {
        let Some(binary) = find_binary() else {
            panic!(
                "no `prometheus` binary is on PATH, so this test cannot run; install it with `apt-get install -y prometheus`"
            );
        };
        super::background::arm_watchdog();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");

        let targets: Vec<String> = scrape_targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: exporter\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        // A port taken between picking and binding makes Prometheus exit: try again.
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempdir::tempdir().expect("temporary directory");
            let config_path = dir.path().join("prometheus.yml");
            std::fs::write(&config_path, &config).expect("write the Prometheus config");
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("spawn prometheus");
            let mut server = Self {
                child,
                address: format!("http://127.0.0.1:{port}"),
                dir,
                client: client.clone(),
            };
            if server.wait_ready().await {
                return server;
            }
            last_log = server.log_tail();
        }
        panic!(
            "Prometheus did not become ready after {START_ATTEMPTS} attempts; last log:\n{last_log}"
        );
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The value of a one-series instant query, or None (no data, several series, error).
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let query: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let response = self
            .client
            .get(format!("{}/api/v1/query?query={query}", self.address))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let result = body.pointer("/data/result")?.as_array()?;
        match result.as_slice() {
            [one] => one.pointer("/value/1")?.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Polls `promql` until its value satisfies `ok`, panicking with the
    /// last value and Prometheus's log after `timeout`.
    pub async fn wait_for(&self, promql: &str, ok: impl Fn(f64) -> bool, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.value(promql).await;
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for `{promql}`; last value {value:?}; Prometheus log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The end of Prometheus's own log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let mut tail = String::new();
        for line in &lines[lines.len().saturating_sub(30)..] {
            let _ = writeln!(tail, "{line}");
        }
        tail
    }

    /// True once `/-/ready` answers 200; false if the process exits first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{}/-/ready", self.address);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "Prometheus was not ready within {READY_TIMEOUT:?}; log:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port()
}
