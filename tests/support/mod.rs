//! Shared support for integration tests: a real Prometheus server and a test
//! exporter whose error rates a test controls.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod exporter;
pub mod prometheus;
pub mod rbac;
