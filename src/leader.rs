//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! controller replicas exactly one writes.
//!
//! The protocol is client-go's: the holder renews the Lease every
//! `retry_period`; a candidate may take it over once it has seen no change to
//! the Lease for the Lease's duration, measured on its own monotonic clock (so
//! clock skew between nodes does not matter). Every write is an update
//! conditional on the Lease's `resourceVersion`, so of two candidates at most
//! one wins.
//!
//! Fencing: a leader counts its claim from the moment it *sent* its last
//! successful renewal and stops acting `renew_deadline` after that, which is
//! before `lease_duration`. A candidate starts counting only after it sees
//! that renewal, which is later still. So the old leader has stopped before a
//! new one can start, by at least `lease_duration - renew_deadline`, the time
//! left for an in-flight write to finish.
//!
//! A leader that loses the Lease does not become a candidate again: [`run`]
//! returns [`LeaderError::Lost`] and the process should exit, so a fresh
//! process (without in-flight reconciles) competes again.
//!
//! Wiring: build a [`LeaderElection`] from [`LeaderElectionArgs::config`],
//! hand [`subscribe`]'s receiver to the controller, which keeps watching
//! (caches warm, `/readyz` ready) but reconciles and writes only while it reads
//! `true`, and spawn [`run`]; exit the process when that task ends with an
//! error or panics. Without `--leader-elect` the controller gets a receiver
//! that always reads `true`.
//!
//! [`run`]: LeaderElection::run
//! [`subscribe`]: LeaderElection::subscribe

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::api::parse_duration;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{info, warn};

/// Errors of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election timing: {0}")]
    InvalidTiming(String),
    #[error("lost leadership of Lease {lease}: {reason}")]
    Lost { lease: String, reason: String },
}

/// How long a claim lasts and how often it is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a claim is valid without renewal, as written to the Lease.
    pub lease_duration: Duration,
    /// The leader stops acting when it has not renewed for this long.
    pub renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// The fencing guarantee needs `lease_duration > renew_deadline`, and a
    /// leader needs several renewal attempts within its deadline.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |m: &str| Err(LeaderError::InvalidTiming(m.to_owned()));
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return invalid("the lease duration must be a whole number of seconds, at least 1s");
        }
        if self.renew_deadline >= self.lease_duration {
            return invalid("the renew deadline must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period.mul_f64(1.2) >= self.renew_deadline {
            return invalid(
                "the retry period must be positive and shorter than the renew deadline / 1.2",
            );
        }
        Ok(())
    }
}

/// Who competes for which Lease.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub namespace: String,
    /// Unique among replicas: see [`default_identity`].
    pub identity: String,
    pub timing: Timing,
}

/// Command-line flags of `ringfence controller` for leader election.
#[derive(clap::Args, Clone, Debug)]
pub struct LeaderElectionArgs {
    /// Elect one active replica through a Lease; the others stay Ready but idle.
    #[arg(long)]
    pub leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "ringfence")]
    pub leader_elect_lease_name: String,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ringfence-system")]
    pub leader_elect_namespace: String,
    /// How long a claim is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// The leader stops acting when it could not renew for this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Time between attempts to acquire or renew.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
}

impl LeaderElectionArgs {
    /// The election to run, or `None` when `--leader-elect` is off.
    pub fn config(&self) -> Result<Option<LeaderConfig>, LeaderError> {
        if !self.leader_elect {
            return Ok(None);
        }
        let timing = Timing {
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        };
        timing.validate()?;
        Ok(Some(LeaderConfig {
            lease_name: self.leader_elect_lease_name.clone(),
            namespace: self.leader_elect_namespace.clone(),
            identity: default_identity(),
            timing,
        }))
    }
}

/// The pod's name (or the host name) plus a random suffix: unique even when a
/// restarted container comes back under the same pod name.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ringfence".to_owned());
    format!("{base}_{:08x}", rand::rng().random::<u32>())
}

/// What the next attempt should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// No Lease exists: create it, holding it.
    Create,
    /// The Lease is free, ours from before, or expired: take it over.
    Acquire,
    /// We lead: renew.
    Renew,
    /// Someone else holds a live claim.
    Wait,
}

/// The last version of the Lease seen and when it was first seen.
#[derive(Clone, Debug)]
struct Observation {
    version: Option<String>,
    holder: Option<String>,
    duration: Duration,
    seen_at: Instant,
}

/// The timing rules of the election, without I/O: every method takes the
/// current instant, so tests drive the clock.
#[derive(Debug)]
pub(crate) struct Elector {
    identity: String,
    timing: Timing,
    observed: Option<Observation>,
    /// While leading: when the last successful acquire or renew was sent.
    renewed_at: Option<Instant>,
}

impl Elector {
    pub(crate) fn new(identity: String, timing: Timing) -> Self {
        Self {
            identity,
            timing,
            observed: None,
            renewed_at: None,
        }
    }

    /// Records the Lease as read (or written) at `now`. The expiry clock
    /// restarts only when the Lease changed since it was last seen.
    pub(crate) fn observe(&mut self, lease: Option<&Lease>, now: Instant) {
        let Some(lease) = lease else {
            self.observed = None;
            return;
        };
        let version = lease.metadata.resource_version.clone();
        if self
            .observed
            .as_ref()
            .is_some_and(|o| o.version.is_some() && o.version == version)
        {
            return;
        }
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let duration = spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|d| u64::try_from(d).ok())
            .map_or(self.timing.lease_duration, Duration::from_secs);
        self.observed = Some(Observation {
            version,
            holder,
            duration,
            seen_at: now,
        });
    }

    pub(crate) fn decide(&self, now: Instant) -> Next {
        if self.renewed_at.is_some() {
            return Next::Renew;
        }
        let Some(o) = &self.observed else {
            return Next::Create;
        };
        match &o.holder {
            None => Next::Acquire,
            Some(h) if *h == self.identity => Next::Acquire,
            Some(_) if now >= o.seen_at + o.duration => Next::Acquire,
            Some(_) => Next::Wait,
        }
    }

    /// When another holder's claim expires unless we see it renewed: the
    /// moment to try again, so a takeover is not late by a whole poll.
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.observed
            .as_ref()
            .filter(|o| o.holder.as_ref().is_some_and(|h| *h != self.identity))
            .map(|o| o.seen_at + o.duration)
    }

    /// The holder per the last observation is someone else.
    pub(crate) fn held_by_other(&self) -> bool {
        self.observed
            .as_ref()
            .and_then(|o| o.holder.as_ref())
            .is_some_and(|h| *h != self.identity)
    }

    /// An acquire or renew sent at `sent_at` succeeded.
    pub(crate) fn renewed(&mut self, sent_at: Instant) {
        self.renewed_at = Some(sent_at);
    }

    pub(crate) fn step_down(&mut self) {
        self.renewed_at = None;
    }

    /// When this replica must stop acting unless it renews first.
    pub(crate) fn fence_at(&self) -> Option<Instant> {
        self.renewed_at.map(|t| t + self.timing.renew_deadline)
    }

    pub(crate) fn is_leader(&self, now: Instant) -> bool {
        self.fence_at().is_some_and(|fence| now < fence)
    }
}

/// One replica's participation in the election. Create it, [`subscribe`] to
/// the leader signal, then drive it with [`run`].
///
/// [`subscribe`]: LeaderElection::subscribe
/// [`run`]: LeaderElection::run
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaderConfig,
    elector: Elector,
    /// The Lease as last read, whose resourceVersion conditions the next update.
    lease: Option<Lease>,
    signal: watch::Sender<bool>,
}

impl LeaderElection {
    pub fn new(client: Client, config: LeaderConfig) -> Result<Self, LeaderError> {
        config.timing.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            elector: Elector::new(config.identity.clone(), config.timing),
            config,
            lease: None,
            signal: watch::channel(false).0,
        })
    }

    /// `true` while this replica leads. Gate every write on it: it turns
    /// `false` at the renew deadline, before any other replica can lead. A
    /// closed channel means the election ended: stop writing.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.signal.subscribe()
    }

    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Competes for the Lease and renews it while leading, until `shutdown`
    /// resolves (then the Lease is released, so a standby takes over at once:
    /// resolve `shutdown` only once the controller stopped writing) or
    /// leadership is lost (an error: exit the process).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), LeaderError> {
        tokio::pin!(shutdown);
        info!(identity = %self.config.identity, lease = %self.config.lease_name, "leader election started");
        loop {
            let wake = tokio::select! {
                () = &mut shutdown => break,
                wake = self.step() => wake?,
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = sleep_until(wake) => {}
            }
        }
        self.release().await;
        Ok(())
    }

    /// One attempt; returns when to make the next one.
    async fn step(&mut self) -> Result<Instant, LeaderError> {
        if self.elector.decide(Instant::now()) == Next::Renew {
            return self.renew().await;
        }
        let now = Instant::now();
        match self.api.get_opt(&self.config.lease_name).await {
            Ok(lease) => self.seen(lease, now),
            Err(e) => warn!(error = %e, "reading the leader Lease failed"),
        }
        let next = self.elector.decide(now);
        if matches!(next, Next::Create | Next::Acquire) && self.acquire(next).await {
            info!(identity = %self.config.identity, "became leader");
            self.signal.send_replace(true);
        }
        let now = Instant::now();
        let next_poll = now + self.config.timing.retry_period;
        // An expiry already past means the last attempt failed: wait a full period.
        Ok(match self.elector.expires_at() {
            Some(expiry) if expiry > now => expiry.min(next_poll),
            _ => next_poll,
        })
    }

    async fn acquire(&mut self, next: Next) -> bool {
        let sent = Instant::now();
        let previous = self.lease.as_ref().and_then(|l| l.spec.as_ref());
        let changes_hands =
            previous.and_then(|s| s.holder_identity.as_deref()) != Some(&self.config.identity);
        let transitions =
            previous.and_then(|s| s.lease_transitions).unwrap_or(0) + i32::from(changes_hands);
        let now = MicroTime(Timestamp::now());
        let spec = LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.lease_seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let pp = PostParams::default();
        let result = if next == Next::Create {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.lease_name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            self.api.create(&pp, &lease).await
        } else {
            let mut lease = self.lease.clone().unwrap_or_default();
            lease.spec = Some(spec);
            self.api.replace(&self.config.lease_name, &pp, &lease).await
        };
        match result {
            Ok(lease) => {
                self.seen(Some(lease), sent);
                self.elector.renewed(sent);
                true
            }
            Err(e) if is_conflict(&e) => false,
            Err(e) => {
                warn!(error = %e, "acquiring the leader Lease failed");
                false
            }
        }
    }

    async fn renew(&mut self) -> Result<Instant, LeaderError> {
        let fence = self
            .elector
            .fence_at()
            .expect("renew is chosen only while leading");
        match timeout_at(fence, self.try_renew()).await {
            Ok(Ok(())) => {}
            Ok(Err(RenewError::HeldByOther)) => {
                return Err(self.lost("another replica holds the Lease"));
            }
            Ok(Err(RenewError::Api(e))) => warn!(error = %e, "renewing the leader Lease failed"),
            Err(_) => {}
        }
        let now = Instant::now();
        if !self.elector.is_leader(now) {
            return Err(self.lost("could not renew the Lease within the renew deadline"));
        }
        let fence = self.elector.fence_at().expect("still leading");
        Ok((now + self.config.timing.retry_period).min(fence))
    }

    /// Renews with the cached resourceVersion; on a conflict re-reads once.
    async fn try_renew(&mut self) -> Result<(), RenewError> {
        for _ in 0..2 {
            let sent = Instant::now();
            let mut lease = self.lease.clone().unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            spec.lease_duration_seconds = Some(self.lease_seconds());
            match self
                .api
                .replace(&self.config.lease_name, &PostParams::default(), &lease)
                .await
            {
                Ok(lease) => {
                    self.seen(Some(lease), sent);
                    self.elector.renewed(sent);
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {
                    let now = Instant::now();
                    let lease = self.api.get_opt(&self.config.lease_name).await?;
                    self.seen(lease, now);
                    if self.lease.is_none() || self.elector.held_by_other() {
                        return Err(RenewError::HeldByOther);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RenewError::Api(kube::Error::Service(
            "the Lease kept changing during renewal".into(),
        )))
    }

    /// Steps down and hands the Lease over: empty holder, so candidates take
    /// it at once.
    async fn release(&mut self) {
        let was_leader = self.elector.is_leader(Instant::now());
        self.stop_leading();
        if !was_leader {
            return;
        }
        let Some(mut lease) = self.lease.clone() else {
            return;
        };
        lease.spec = Some(LeaseSpec {
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::now())),
            lease_transitions: lease.spec.as_ref().and_then(|s| s.lease_transitions),
            ..LeaseSpec::default()
        });
        let deadline = Instant::now() + self.config.timing.retry_period;
        match timeout_at(
            deadline,
            self.api
                .replace(&self.config.lease_name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(Ok(_)) => info!(identity = %self.config.identity, "released the leader Lease"),
            Ok(Err(e)) => {
                warn!(error = %e, "releasing the leader Lease failed; it expires on its own")
            }
            Err(_) => warn!("releasing the leader Lease timed out; it expires on its own"),
        }
    }

    fn seen(&mut self, lease: Option<Lease>, now: Instant) {
        self.elector.observe(lease.as_ref(), now);
        self.lease = lease;
    }

    fn stop_leading(&mut self) {
        self.elector.step_down();
        self.signal.send_replace(false);
    }

    fn lost(&mut self, reason: &str) -> LeaderError {
        self.stop_leading();
        warn!(identity = %self.config.identity, reason, "lost leadership");
        LeaderError::Lost {
            lease: format!("{}/{}", self.config.namespace, self.config.lease_name),
            reason: reason.to_owned(),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.config.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

enum RenewError {
    HeldByOther,
    Api(kube::Error),
}

impl From<kube::Error> for RenewError {
    fn from(e: kube::Error) -> Self {
        Self::Api(e)
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ME: &str = "me";
    const OTHER: &str = "other";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn lease(version: &str, holder: Option<&str>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    fn elector(identity: &str) -> Elector {
        Elector::new(identity.to_owned(), Timing::default())
    }

    #[test]
    fn creates_a_missing_lease() {
        let e = elector(ME);
        assert_eq!(e.decide(Instant::now()), Next::Create);
    }

    #[test]
    fn acquires_a_free_or_own_lease_at_once() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        e.observe(Some(&lease("1", None, 15)), t0);
        assert_eq!(e.decide(t0), Next::Acquire);
        e.observe(Some(&lease("2", Some(""), 1)), t0);
        assert_eq!(
            e.decide(t0),
            Next::Acquire,
            "a released Lease has an empty holder"
        );
        e.observe(Some(&lease("3", Some(ME), 15)), t0);
        assert_eq!(e.decide(t0), Next::Acquire);
    }

    #[test]
    fn acquires_only_once_the_claim_expired_on_the_local_clock() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        e.observe(Some(&lease("1", Some(OTHER), 15)), t0);
        assert_eq!(e.decide(t0 + secs(14)), Next::Wait);
        // Seeing the same version again does not restart the clock.
        e.observe(Some(&lease("1", Some(OTHER), 15)), t0 + secs(10));
        assert_eq!(e.decide(t0 + secs(15)), Next::Acquire);
    }

    #[test]
    fn a_renewal_restarts_the_expiry_clock() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        e.observe(Some(&lease("1", Some(OTHER), 15)), t0);
        assert_eq!(e.expires_at(), Some(t0 + secs(15)));
        e.observe(Some(&lease("2", Some(OTHER), 15)), t0 + secs(10));
        assert_eq!(e.expires_at(), Some(t0 + secs(25)));
        assert_eq!(e.decide(t0 + secs(20)), Next::Wait);
        assert_eq!(e.decide(t0 + secs(25)), Next::Acquire);
    }

    #[test]
    fn the_holders_lease_duration_counts() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        e.observe(Some(&lease("1", Some(OTHER), 60)), t0);
        assert_eq!(e.decide(t0 + secs(30)), Next::Wait);
        assert_eq!(e.decide(t0 + secs(60)), Next::Acquire);
    }

    #[test]
    fn a_leader_renews_and_is_fenced_at_the_renew_deadline() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        assert!(!e.is_leader(t0));
        e.renewed(t0);
        assert_eq!(e.decide(t0 + secs(1)), Next::Renew);
        assert!(e.is_leader(t0 + secs(10) - Duration::from_millis(1)));
        assert!(
            !e.is_leader(t0 + secs(10)),
            "fenced at exactly the renew deadline"
        );
        e.renewed(t0 + secs(2));
        assert!(e.is_leader(t0 + secs(11)), "a renewal moves the fence");
        assert_eq!(e.fence_at(), Some(t0 + secs(12)));
        e.step_down();
        assert!(!e.is_leader(t0 + secs(3)));
    }

    #[test]
    fn sees_another_holder() {
        let t0 = Instant::now();
        let mut e = elector(ME);
        e.observe(Some(&lease("1", Some(ME), 15)), t0);
        assert!(!e.held_by_other());
        e.observe(Some(&lease("2", Some(OTHER), 15)), t0);
        assert!(e.held_by_other());
    }

    proptest! {
        /// The old leader is fenced before any candidate may acquire: the
        /// candidate sees the last renewal no earlier than it was sent.
        #[test]
        fn never_two_leaders(
            sent in 0u64..10_000,
            seen_after_ms in 0u64..5_000,
            duration_s in 2u64..60,
            deadline_frac in 0.2f64..0.99,
            probe_ms in 0u64..200_000,
        ) {
            let timing = Timing {
                lease_duration: secs(duration_s),
                renew_deadline: secs(duration_s).mul_f64(deadline_frac),
                retry_period: secs(duration_s).mul_f64(deadline_frac / 3.0),
            };
            let t0 = Instant::now();
            let sent = t0 + Duration::from_millis(sent);
            let mut leader = Elector::new(ME.into(), timing);
            leader.renewed(sent);
            let mut candidate = Elector::new(OTHER.into(), timing);
            let record = lease("7", Some(ME), i32::try_from(duration_s).unwrap());
            candidate.observe(Some(&record), sent + Duration::from_millis(seen_after_ms));
            let now = t0 + Duration::from_millis(probe_ms);
            prop_assert!(!(leader.is_leader(now) && candidate.decide(now) == Next::Acquire));
        }
    }

    #[test]
    fn timing_must_leave_a_fencing_margin() {
        assert!(Timing::default().validate().is_ok());
        let bad = |lease: u64, renew: u64, retry: u64| Timing {
            lease_duration: secs(lease),
            renew_deadline: secs(renew),
            retry_period: secs(retry),
        };
        assert!(
            bad(10, 10, 2).validate().is_err(),
            "renew deadline = lease duration"
        );
        assert!(
            bad(15, 10, 10).validate().is_err(),
            "retry period = renew deadline"
        );
        assert!(bad(15, 10, 0).validate().is_err());
        let fractional = Timing {
            lease_duration: Duration::from_millis(1500),
            ..Timing::default()
        };
        assert!(
            fractional.validate().is_err(),
            "leaseDurationSeconds is whole seconds"
        );
    }

    #[test]
    fn flags_default_to_the_chart_values() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            leader: LeaderElectionArgs,
        }
        Cli::command().debug_assert();
        let cli = Cli::parse_from([
            "ringfence",
            "--leader-elect",
            "--leader-elect-namespace=ops",
        ]);
        let config = cli.leader.config().unwrap().expect("enabled");
        assert_eq!(config.timing, Timing::default());
        assert_eq!(config.lease_name, "ringfence");
        assert_eq!(config.namespace, "ops");
        assert!(!config.identity.is_empty());
        let off = Cli::parse_from(["ringfence"]);
        assert!(off.leader.config().unwrap().is_none());
        let bad = Cli::parse_from([
            "ringfence",
            "--leader-elect",
            "--leader-elect-renew-deadline=20s",
        ]);
        assert!(bad.leader.config().is_err());
        assert!(Cli::try_parse_from(["ringfence", "--leader-elect-lease-duration=15"]).is_err());
    }
}
