//! Revisions: the content hash of resolved configuration data.

use sha2::{Digest, Sha256};

use super::model::ResolvedConfig;
use crate::api::ConfigKind;

/// Hex characters kept from the SHA-256: short enough for a printer column,
/// long enough that two revisions of one rollout never collide in practice.
const REVISION_LEN: usize = 10;

/// The revision of a configuration: a short hex SHA-256 over its kind and its
/// entries in key order, each key and value length-prefixed so that `a=bc`
/// and `ab=c` differ. The controller hashes observed targets with the same
/// function, so "target holds revision R" is `content_hash == Some(R)`.
pub fn revision_of(config: &ResolvedConfig) -> String {
    let mut hasher = Sha256::new();
    let kind: &[u8] = match config.kind {
        ConfigKind::ConfigMap => b"ConfigMap",
        ConfigKind::Secret => b"Secret",
    };
    update_prefixed(&mut hasher, kind);
    hasher.update((config.data.len() as u64).to_be_bytes());
    // BTreeMap iterates in key order: the hash is canonical.
    for (key, value) in &config.data {
        update_prefixed(&mut hasher, key.as_bytes());
        update_prefixed(&mut hasher, value);
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(REVISION_LEN);
    for byte in digest.iter().take(REVISION_LEN / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

fn update_prefixed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(kind: ConfigKind, entries: &[(&str, &str)]) -> ResolvedConfig {
        ResolvedConfig {
            kind,
            data: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn revision_is_stable_short_hex() {
        let a = revision_of(&config(ConfigKind::ConfigMap, &[("retries", "3")]));
        assert_eq!(
            a,
            revision_of(&config(ConfigKind::ConfigMap, &[("retries", "3")]))
        );
        assert_eq!(a.len(), REVISION_LEN);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn revision_is_length_prefixed() {
        let a = revision_of(&config(ConfigKind::ConfigMap, &[("a", "bc")]));
        let b = revision_of(&config(ConfigKind::ConfigMap, &[("ab", "c")]));
        assert_ne!(a, b);
    }

    #[test]
    fn revision_depends_on_kind_and_every_entry() {
        let base = revision_of(&config(ConfigKind::ConfigMap, &[("a", "1"), ("b", "2")]));
        assert_ne!(
            base,
            revision_of(&config(ConfigKind::Secret, &[("a", "1"), ("b", "2")]))
        );
        assert_ne!(
            base,
            revision_of(&config(ConfigKind::ConfigMap, &[("a", "1"), ("b", "3")]))
        );
        assert_ne!(
            base,
            revision_of(&config(ConfigKind::ConfigMap, &[("a", "1")]))
        );
        assert_ne!(
            revision_of(&config(ConfigKind::ConfigMap, &[])),
            revision_of(&config(ConfigKind::ConfigMap, &[("", "")]))
        );
    }
}
