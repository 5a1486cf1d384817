//! Gate providers: turn the engine's `GateRequest`s into judged `GateResult`s.
//!
//! Each provider is a thin adapter (HTTP) around pure parsing and judging code,
//! so most of the logic is unit-tested without a network.

pub mod webhook;
