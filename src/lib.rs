//! ringfence: staged configuration rollouts for Kubernetes.

pub mod api;
pub mod engine;
pub mod validation;
pub mod gates;
