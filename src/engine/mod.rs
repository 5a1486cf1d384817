//! The sans-IO rollout engine: from spec, persisted status, the observed world
//! and the clock to the next actions and status. No async, no IO, no clock reads.

mod model;

pub use model::*;
