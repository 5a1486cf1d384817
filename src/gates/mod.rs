//! Gate providers: turn the engine's `GateRequest`s into judged `GateResult`s.
//!
//! Each provider is a thin adapter (HTTP) around pure parsing and judging code,
//! so most of the logic is unit-tested without a network. Every provider calls out through
//! [`http::client`], under the operator's address policy, and what an answer puts in a
//! result's message goes through [`answer::excerpt`].

pub mod answer;
pub mod http;
pub mod prometheus;
pub mod template;
pub mod webhook;

/// The rollout a gate belongs to, for query placeholders.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateContext {
    pub rollout_namespace: String,
    pub rollout_name: String,
}
