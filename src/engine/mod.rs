//! The sans-IO rollout engine: from spec, persisted status, the observed world
//! and the clock to the next actions and status. No async, no IO, no clock reads.

mod model;

pub use model::*;

// Placeholder bodies until the engine lands on main.
pub fn decide(_inputs: &Inputs) -> Decision {
    unimplemented!("engine not merged yet")
}

pub fn gate_requests(_inputs: &Inputs) -> Vec<GateRequest> {
    unimplemented!("engine not merged yet")
}

pub fn revision_of(config: &ResolvedConfig) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in &config.data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    let d = h.finalize();
    d.iter().take(5).map(|b| format!("{b:02x}")).collect()
}
