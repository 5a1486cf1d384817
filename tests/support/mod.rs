//! Shared support for integration tests: an emulated cluster with a controller, the Helm
//! chart rendered by real Helm, a real Prometheus server, a test exporter whose error rates a test controls, a webhook gate
//! endpoint, RBAC bookkeeping, and guards for tasks a test runs beside them.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod background;
pub mod chart;
pub mod cluster;
pub mod exporter;
pub mod prometheus;
pub mod rbac;
pub mod tempdir;
pub mod webhook;
