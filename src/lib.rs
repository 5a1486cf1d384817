//! ringfence: staged configuration rollouts for Kubernetes.

pub mod api;
pub mod cli;
pub mod emulator;
pub mod engine;
pub mod gates;
pub mod leader;
pub mod validation;
