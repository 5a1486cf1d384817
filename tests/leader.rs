//! Leader election against the API emulator: one leader among several,
//! handover on release, failover time after the leader dies, and fencing of a
//! leader cut off from the API server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_emulator::{Emulator, EmulatorHandle};
use ringfence::leader::{LeaderConfig, LeaderElection, LeaderError, Timing};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

const NAMESPACE: &str = "ringfence-system";

/// Short enough for tests, with the chart's proportions.
const TIMING: Timing = Timing {
    lease_duration: Duration::from_secs(2),
    renew_deadline: Duration::from_millis(1500),
    retry_period: Duration::from_millis(250),
};

/// Scheduling and HTTP latency on a busy test machine.
const SLACK: Duration = Duration::from_millis(500);

async fn emulator() -> EmulatorHandle {
    let emu = Emulator::builder().start().await.expect("emulator starts");
    emu.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))
        .expect("namespace");
    emu
}

/// A kube client for `url` with the emulator's admin token.
fn client_via(emu: &EmulatorHandle, url: &str) -> kube::Client {
    let mut config = kube::Config::new(url.parse().expect("url"));
    let bearer = format!("Bearer {}", emu.admin_token())
        .parse()
        .expect("header");
    config
        .headers
        .push((axum::http::header::AUTHORIZATION, bearer));
    kube::Client::try_from(config).expect("client")
}

/// Leadership changes of every elector, in the order they happened.
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(Instant, String, bool)>>>);

impl Timeline {
    fn record(&self, identity: &str, mut signal: watch::Receiver<bool>) {
        let timeline = self.clone();
        let identity = identity.to_owned();
        tokio::spawn(async move {
            while signal.changed().await.is_ok() {
                let leading = *signal.borrow_and_update();
                timeline
                    .0
                    .lock()
                    .unwrap()
                    .push((Instant::now(), identity.clone(), leading));
            }
            timeline
                .0
                .lock()
                .unwrap()
                .push((Instant::now(), identity, false));
        });
    }

    /// The most electors that led at the same time.
    fn max_concurrent_leaders(&self) -> usize {
        let mut events = self.0.lock().unwrap().clone();
        events.sort_by_key(|(at, _, _)| *at);
        let mut leaders = std::collections::BTreeSet::new();
        let mut max = 0;
        for (_, identity, leading) in events {
            if leading {
                leaders.insert(identity);
            } else {
                leaders.remove(&identity);
            }
            max = max.max(leaders.len());
        }
        max
    }
}

struct Elector {
    identity: String,
    signal: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), LeaderError>>,
}

fn start(client: kube::Client, identity: &str, timeline: &Timeline) -> Elector {
    let config = LeaderConfig {
        lease_name: "ringfence".into(),
        namespace: NAMESPACE.into(),
        identity: identity.into(),
        timing: TIMING,
    };
    let election = LeaderElection::new(client, config).expect("valid timing");
    let signal = election.subscribe();
    timeline.record(identity, election.subscribe());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(election.run(async {
        let _ = stopped.await;
    }));
    Elector {
        identity: identity.into(),
        signal,
        stop: Some(stop),
        task,
    }
}

fn leader(electors: &[Elector]) -> Option<usize> {
    let leaders: Vec<usize> = (0..electors.len())
        .filter(|&i| *electors[i].signal.borrow())
        .collect();
    assert!(leaders.len() <= 1, "two leaders at once");
    leaders.first().copied()
}

async fn wait_for_leader(electors: &[Elector], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        if let Some(i) = leader(electors) {
            return i;
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn one_leader_among_three_and_a_fast_handover_on_release() {
    let emu = emulator().await;
    let timeline = Timeline::default();
    let mut electors: Vec<Elector> = ["a", "b", "c"]
        .iter()
        .map(|id| start(emu.client(), id, &timeline))
        .collect();

    let first = wait_for_leader(&electors, TIMING.lease_duration + SLACK).await;
    // Several renewals: leadership stays put and stays single.
    let until = Instant::now() + TIMING.lease_duration * 2;
    while Instant::now() < until {
        assert_eq!(
            leader(&electors),
            Some(first),
            "leadership moved without cause"
        );
        sleep(Duration::from_millis(5)).await;
    }

    let stopped = Instant::now();
    electors[first].stop.take().unwrap().send(()).unwrap();
    let done = electors.remove(first);
    done.task.await.unwrap().expect("a clean shutdown");
    let next = wait_for_leader(&electors, TIMING.lease_duration).await;
    let handover = stopped.elapsed();
    println!(
        "handover after release: {handover:?} to {}",
        electors[next].identity
    );
    assert!(
        handover <= TIMING.retry_period + SLACK,
        "a released Lease is taken within a retry period, took {handover:?}"
    );
    assert_eq!(timeline.max_concurrent_leaders(), 1);
}

#[tokio::test]
async fn failover_after_the_leader_dies_takes_at_most_lease_duration_plus_retry_period() {
    let emu = emulator().await;
    let timeline = Timeline::default();
    let mut electors = vec![
        start(emu.client(), "replica-0", &timeline),
        start(emu.client(), "replica-1", &timeline),
    ];
    let mut failovers = Vec::new();
    for round in 0..5 {
        let old = wait_for_leader(&electors, TIMING.lease_duration * 2 + SLACK).await;
        // Let the standby see a few renewals, as in a steady cluster.
        sleep(TIMING.retry_period * 3).await;
        // A crash: no release.
        electors[old].task.abort();
        let killed = Instant::now();
        let dead = electors.remove(old);
        let _ = dead.task.await;
        wait_for_leader(&electors, TIMING.lease_duration * 2 + SLACK).await;
        let failover = killed.elapsed();
        println!("round {round}: failover in {failover:?}");
        assert!(
            failover <= TIMING.lease_duration + TIMING.retry_period + SLACK,
            "failover took {failover:?}"
        );
        failovers.push(failover);
        electors.push(start(
            emu.client(),
            &format!("replica-{}", round + 2),
            &timeline,
        ));
    }
    failovers.sort();
    let median = failovers[failovers.len() / 2];
    println!(
        "failover median of 5: {median:?} (lease duration {:?}, retry period {:?})",
        TIMING.lease_duration, TIMING.retry_period
    );
    assert!(median <= TIMING.lease_duration + TIMING.retry_period);
    assert_eq!(timeline.max_concurrent_leaders(), 1);
}

/// A TCP proxy to the emulator that can black-hole traffic: connections stay
/// open but nothing passes, as in a network partition.
struct Partition {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Partition {
    async fn to(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    if !*cut.borrow() {
                        let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
                            _ = cut.wait_for(|c| *c) => {}
                        }
                    }
                    // Hold the connection without answering until the test ends.
                    std::future::pending::<()>().await;
                    drop(inbound);
                });
            }
        });
        Self { addr, cut }
    }
}

#[tokio::test]
async fn a_partitioned_leader_stops_before_another_replica_starts() {
    let emu = emulator().await;
    let timeline = Timeline::default();
    let partition = Partition::to(emu.addr()).await;
    let partitioned = client_via(&emu, &format!("http://{}", partition.addr));
    let mut a = start(partitioned, "partitioned", &timeline);
    let started = Instant::now();
    a.signal.wait_for(|l| *l).await.expect("a leads");
    assert!(started.elapsed() < TIMING.retry_period + SLACK);
    let b = start(emu.client(), "healthy", &timeline);
    sleep(TIMING.retry_period * 4).await;
    assert!(*a.signal.borrow() && !*b.signal.borrow());

    partition.cut.send_replace(true);
    let cut = Instant::now();
    let result = timeout(TIMING.lease_duration * 2, a.task)
        .await
        .expect("the partitioned leader gives up")
        .unwrap();
    let fenced = Instant::now();
    assert!(
        matches!(result, Err(LeaderError::Lost { .. })),
        "{result:?}"
    );
    assert!(!*a.signal.borrow(), "the leader signal is off once fenced");
    let mut b_signal = b.signal.clone();
    timeout(TIMING.lease_duration * 2, b_signal.wait_for(|l| *l))
        .await
        .expect("the healthy replica takes over")
        .unwrap();
    let acquired = Instant::now();

    println!(
        "cut at 0, fenced at {:?}, taken over at {:?}",
        fenced - cut,
        acquired - cut
    );
    assert!(fenced - cut <= TIMING.renew_deadline + SLACK, "fenced late");
    // At least lease duration - renew deadline apart, less how late this test
    // noticed the fence on a busy machine.
    let margin = TIMING.lease_duration - TIMING.renew_deadline;
    assert!(
        acquired - fenced >= margin / 2,
        "the new leader started {:?} after the old one stopped",
        acquired - fenced
    );
    assert_eq!(timeline.max_concurrent_leaders(), 1);
}
