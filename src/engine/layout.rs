//! The ring layout of a revision: every ring's targets, as resolved when the revision
//! started. It lives in layout records beside the rollout, not in its status, so a
//! status stays a few KiB at any fleet size; status keeps counts, the first few names
//! and the hash the records must match. The engine defines the document and its hash;
//! the controller stores it and fills the rings back in before deciding.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{ConfigRolloutStatus, LayoutStatus};

/// How many target names a ring shows in status.
pub const FIRST_TARGETS: usize = 5;

/// Every ring's targets and duplicates, in spec order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    pub rings: Vec<LayoutRing>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct LayoutRing {
    pub name: String,
    pub targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<String>,
}

impl Layout {
    /// The layout a status describes (its rings as the engine holds them).
    pub fn of(status: &ConfigRolloutStatus) -> Self {
        Self {
            rings: status
                .rings
                .iter()
                .map(|r| LayoutRing {
                    name: r.name.clone(),
                    targets: r.targets.clone(),
                    duplicates: r.duplicates.clone(),
                })
                .collect(),
        }
    }

    /// The document the records hold.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a document back; `hash` is what status says it must hash to.
    pub fn decode(document: &str, hash: &str) -> Result<Self, String> {
        if hash_of(document) != hash {
            return Err("its content does not match the hash in status.layout".into());
        }
        serde_json::from_str(document).map_err(|e| format!("it does not parse: {e}"))
    }

    /// Puts the targets back into the rings of `status`; the ring names must agree.
    pub fn fill(&self, status: &mut ConfigRolloutStatus) -> Result<(), String> {
        let names_agree = self
            .rings
            .iter()
            .map(|r| &r.name)
            .eq(status.rings.iter().map(|r| &r.name));
        if !names_agree {
            return Err("its rings are not the rings in status".into());
        }
        for (ring, layout) in status.rings.iter_mut().zip(&self.rings) {
            ring.targets.clone_from(&layout.targets);
            ring.duplicates.clone_from(&layout.duplicates);
        }
        Ok(())
    }
}

/// SHA-256 of a layout document, in hex.
pub fn hash_of(document: &str) -> String {
    let digest = Sha256::digest(document.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets what status keeps of the layout: per ring the counts and first names, and the
/// hash of the whole.
pub(crate) fn summarize(status: &mut ConfigRolloutStatus) {
    let mut total: u32 = 0;
    for ring in &mut status.rings {
        ring.target_count = u32::try_from(ring.targets.len()).unwrap_or(u32::MAX);
        ring.first_targets = ring.targets.iter().take(FIRST_TARGETS).cloned().collect();
        ring.duplicate_count = u32::try_from(ring.duplicates.len()).unwrap_or(u32::MAX);
        total = total.saturating_add(ring.target_count);
    }
    status.layout = (!status.rings.is_empty()).then(|| LayoutStatus {
        hash: hash_of(&Layout::of(status).encode()),
        targets: total,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RingStatus;

    fn status(rings: &[(&str, &[&str])]) -> ConfigRolloutStatus {
        ConfigRolloutStatus {
            rings: rings
                .iter()
                .map(|(name, targets)| RingStatus {
                    name: name.to_string(),
                    targets: targets.iter().map(|t| t.to_string()).collect(),
                    ..RingStatus::default()
                })
                .collect(),
            ..ConfigRolloutStatus::default()
        }
    }

    #[test]
    fn a_layout_round_trips_through_its_record_and_status_keeps_only_a_summary() {
        let names: Vec<String> = (0..10_000).map(|i| format!("cell-{i:05}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut full = status(&[("canary", &refs[..100]), ("rest", &refs[100..])]);
        summarize(&mut full);
        let layout = full.layout.clone().unwrap();
        assert_eq!(layout.targets, 10_000);
        assert_eq!(full.rings[1].target_count, 9_900);
        assert_eq!(full.rings[1].first_targets.len(), FIRST_TARGETS);

        let stored = serde_json::to_string(&full).unwrap();
        assert!(stored.len() < 4096, "status is {} bytes", stored.len());
        let mut read: ConfigRolloutStatus = serde_json::from_str(&stored).unwrap();
        assert!(
            read.rings[1].targets.is_empty(),
            "targets are not in status"
        );

        let document = Layout::of(&full).encode();
        Layout::decode(&document, &layout.hash)
            .unwrap()
            .fill(&mut read)
            .unwrap();
        assert_eq!(read.rings, full.rings);
    }

    #[test]
    fn a_damaged_or_foreign_layout_is_never_filled_in() {
        let mut full = status(&[("canary", &["a"]), ("rest", &["b", "c"])]);
        summarize(&mut full);
        let hash = full.layout.clone().unwrap().hash;
        let document = Layout::of(&full).encode();
        let damaged = document.replace("\"b\"", "\"x\"");
        assert!(
            Layout::decode(&damaged, &hash)
                .unwrap_err()
                .contains("hash")
        );

        let other = status(&[("first", &["a"]), ("rest", &["b", "c"])]);
        let err = Layout::of(&other).fill(&mut full.clone()).unwrap_err();
        assert!(err.contains("rings"), "{err}");
    }
}
