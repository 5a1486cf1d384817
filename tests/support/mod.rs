//! Shared support for integration tests: an emulated cluster with a controller, a real
//! Prometheus server, a test exporter whose error rates a test controls, RBAC bookkeeping,
//! and guards for tasks a test runs beside them.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod background;
pub mod cluster;
pub mod exporter;
pub mod prometheus;
pub mod rbac;
pub mod tempdir;
