//! ringfence: staged configuration rollouts for Kubernetes.

pub mod api;
pub mod cli;
pub mod controller;
pub mod demo;
pub mod engine;
pub mod gates;
pub mod leader;
pub mod metrics;
pub mod plugin;
pub mod server;
pub mod stdout;
pub mod telemetry;
pub mod validation;
