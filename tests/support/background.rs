//! Tasks a test starts beside the code under test, and a watchdog for the test binary.

use std::future::Future;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when the guard drops.
///
/// A detached task outlives the test body and runs into the runtime's shutdown, where a
/// stream that fails without ever returning `Pending` (a watch whose connection can no
/// longer be made) keeps its worker thread spinning and the shutdown waits on it forever.
pub struct Background(JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Background {
    /// Aborts the task and waits until it has stopped.
    pub async fn stop(mut self) {
        self.0.abort();
        let _ = (&mut self.0).await;
    }
}

pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Background {
    Background(tokio::spawn(task))
}

/// Seconds one test binary may run before it is presumed stuck, unless set in this variable.
const LIMIT_ENV: &str = "RINGFENCE_TEST_WATCHDOG_SECONDS";
const DEFAULT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Arms, once per test binary, a thread that prints every thread's stack and aborts the
/// process when the binary runs past its limit, so a stuck test fails with evidence
/// instead of stalling the whole suite.
pub fn arm_watchdog() {
    static ARMED: Once = Once::new();
    ARMED.call_once(|| {
        let limit = std::env::var(LIMIT_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(DEFAULT_LIMIT, Duration::from_secs);
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            eprintln!(
                "WATCHDOG: this test binary ran longer than {limit:?} ({LIMIT_ENV}); thread stacks follow, then it aborts"
            );
            let pid = std::process::id().to_string();
            let dumped = Command::new("gdb")
                .args(["-p", &pid, "-batch", "-ex", "thread apply all bt 40"])
                .status()
                .is_ok_and(|s| s.success());
            if !dumped {
                eprintln!("WATCHDOG: no stacks (install gdb to see them)");
            }
            std::process::abort();
        });
    });
}
