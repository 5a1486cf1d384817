//! The sans-IO rollout engine: from spec, persisted status, the observed world
//! and the clock to the next actions and status. No async, no IO, no clock reads.
//!
//! # How the controller uses it
//!
//! Each reconcile: observe the world into a [`World`], run the evaluations
//! [`gate_requests`] says are due, put their results in `world.gate_results`,
//! call [`decide`], carry out `actions` in order, and only when every action
//! succeeded write `status` (if it differs) and publish `events`. The status
//! is the engine's only memory, so a restart at any point resumes from it.
//!
//! # The state machine
//!
//! ```text
//!             new revision / retry / rings changed
//!   Pending ─────────────────────────────► Progressing ◄──── resume ──── Paused
//!                                            │   │   │  ───── spec.paused ──►
//!             ┌──────── ring k: Applying ─► Verifying ─► Promoted ─► ring k+1 …
//!             │                              │                         │
//!             │              gate fails / deadline / abort        last ring
//!             │                              ▼                         ▼
//!             │        RollingBack ─► RolledBack               Succeeded
//!             │        (automatic)        (no automatic) ─► Failed
//! ```
//!
//! * **Applying**: baselines are measured first (gates judged against the
//!   ring's value before it was touched) and persisted; then the prior content
//!   of the ring's targets is recorded and at most `maxConcurrent` targets are
//!   written per decision. A target counts as written when it is observed
//!   holding the revision (`content_hash == revision`).
//! * **Verifying**: workloads are stamped (with `restart`) and must roll out
//!   within `progressDeadline` from the ring's start; every gate is evaluated
//!   every `interval`. `healthySince` is when workloads were ready and every
//!   gate's latest verdict became Pass; a Fail or an Inconclusive verdict
//!   clears it. `failureLimit` consecutive Fails fail the ring.
//! * **Promoted** once healthy for the whole `bake` (or on a promote request,
//!   unless a gate's latest verdict is Fail). The next ring starts Applying.
//!
//! Every transition is returned with no actions of the new state: the
//! controller persists it first, and the next decision acts on it. So no
//! target of ring k+1 is written before ring k's promotion is persisted, and
//! a rollback's restores only start once RollingBack is persisted.
//!
//! * **RollingBack** restores every target with a prior record (later rings
//!   and superseded revisions' targets first, then the current ring, then
//!   earlier ones), re-stamps restarted workloads, and becomes **RolledBack**
//!   only once every target is observed holding its prior. Priors are
//!   forgotten after RolledBack and Succeeded are persisted.
//! * **Paused** (`spec.paused`) holds forward progress: no writes, no gate
//!   evaluations, no promotion. The bake and progress deadline do not count
//!   paused time: on resume `healthySince` moves on by the pause and the
//!   ring's `pausedSeconds` extends its deadline. A rollback in progress, and
//!   an abort request, are not held: restoring is the safe direction.
//! * A new revision during Progressing (or after Failed) restarts from the
//!   first ring with the priors kept; during RollingBack it waits until the
//!   rollback completed. Adding, removing or renaming rings restarts the same
//!   revision from the first ring (targets already on it are not rewritten).
//!
//! # Manual requests
//!
//! Each request id (annotation value) is acted on once and recorded in
//! `status.handledRequests`. *promote* ends the Verifying ring's bake now
//! (it does not wait for workloads) but is refused, with a PromoteRefused
//! event, while a gate's latest verdict is Fail; a request made while the
//! ring is still Applying waits for Verifying. *abort* rolls back now.
//! *retry* re-runs a RolledBack or Failed revision from the first ring.
//! Requests that mean nothing in the current phase are recorded and dropped,
//! so a stale annotation never fires later by surprise.
//!
//! # Drift
//!
//! Targets of verified or promoted rings that do not hold the revision, or
//! that another field manager changed last, are reported (`Ready=False`
//! reason Drifted, a TargetDrifted event when the set changes) and never
//! rewritten outside a rollout.

mod address;
mod clock;
mod conditions;
mod decide;
mod failure;
mod gate_access;
mod gates;
mod invalid;
mod layout;
mod message;
mod model;
mod preview;
mod revision;
mod rings;
mod rollback;
mod status;
mod validate;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod decide_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;

pub use address::{AddressPolicy, Cidr, HostPattern};
pub use decide::decide;
pub use failure::report_failure;
pub use gate_access::{GATE_CREDENTIALS_LABEL, check_credentials};
pub use gates::gate_requests;
pub use layout::{FIRST_TARGETS, Layout, LayoutRing, hash_of};
pub use model::*;
pub use preview::{Preview, Refusal, RingPreview, Skip, Timing, preview};
pub use revision::{ResolvedConfig, RevisionKey, RevisionKeyTooShort, revision_of};
pub(crate) use rings::{Scope, listed};
