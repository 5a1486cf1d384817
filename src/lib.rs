//! ringfence: staged configuration rollouts for Kubernetes.

pub mod cli;
#[cfg(feature = "emulator")]
pub mod emulator;
