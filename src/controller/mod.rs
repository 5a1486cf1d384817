//! The operator's adapter to Kubernetes: a `kube::runtime::Controller` for ConfigRollout
//! whose reconcile observes the world, lets the engine decide and carries the decision out.
//!
//! `operator.rs` runs it: the watches of `watches.rs` trigger `reconcile.rs`, which reads
//! through `observe.rs`, asks the engine, and writes through `priors.rs`, `targets.rs`,
//! `workloads.rs` and `status.rs`.

mod cache;
mod calls;
mod context;
mod error;
mod events;
mod gates;
mod layout;
mod members;
mod observe;
mod observed;
mod operator;
mod priors;
mod reconcile;
mod record;
mod revision_key;
mod status;
mod targets;
mod watches;
mod workloads;

pub use error::Error;
pub use members::check_kubeconfig;
pub use observe::{observe_uncached, rollout_key};
pub use operator::{Operator, Options, RunError, shutdown_signal};
pub use priors::record_name;
pub use revision_key::{REVISION_KEY_FIELD, RevisionKeySource, load_revision_key};
