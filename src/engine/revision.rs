//! Revisions: the hash of resolved configuration data.
//!
//! A ConfigMap's revision is a plain content hash. A Secret's is keyed
//! (HMAC-SHA256 under the operator's [`RevisionKey`]): its revision is shown in
//! status, events, target annotations and webhook payloads, and a plain hash
//! of secret data would let anyone who reads those test guesses offline.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::api::ConfigKind;

/// The configuration data after `sourceRef` was followed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedConfig {
    pub kind: ConfigKind,
    /// Key to raw bytes (UTF-8 for ConfigMaps, decoded bytes for Secrets).
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Hex characters kept from the SHA-256: short enough for a printer column,
/// long enough that two revisions of one rollout never collide in practice.
const REVISION_LEN: usize = 10;

/// The operator's key for Secret revisions. Kept in a Secret of the operator's
/// namespace so that every replica and restart computes the same revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct RevisionKey(Arc<[u8]>);

impl RevisionKey {
    /// Shortest key accepted: the HMAC-SHA256 output size.
    pub const MIN_LEN: usize = 32;

    pub fn new(bytes: Vec<u8>) -> Result<Self, RevisionKeyTooShort> {
        if bytes.len() < Self::MIN_LEN {
            return Err(RevisionKeyTooShort(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// A fresh key from a cryptographically secure generator seeded by the operating system.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; Self::MIN_LEN];
        rand::fill(&mut bytes[..]);
        Self(bytes.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Never prints the key.
impl fmt::Debug for RevisionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevisionKey(<redacted>)")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a revision key needs at least {min} bytes, this one has {0}", min = RevisionKey::MIN_LEN)]
pub struct RevisionKeyTooShort(pub usize);

/// The revision of a configuration: a short hex hash over its kind and its
/// entries in key order, each key and value length-prefixed so that `a=bc`
/// and `ab=c` differ; keyed by `key` for Secrets. The controller hashes
/// observed targets with the same function, so "target holds revision R" is
/// `content_hash == Some(R)`.
pub fn revision_of(config: &ResolvedConfig, key: &RevisionKey) -> String {
    let digest: Vec<u8> = match config.kind {
        ConfigKind::ConfigMap => {
            let mut hasher = Sha256::new();
            encode(config, |bytes| hasher.update(bytes));
            hasher.finalize().to_vec()
        }
        ConfigKind::Secret => {
            // HMAC takes a key of any length; RevisionKey guarantees a strong one.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
                .expect("HMAC accepts keys of any length");
            encode(config, |bytes| mac.update(bytes));
            mac.finalize().into_bytes().to_vec()
        }
    };
    let mut hex = String::with_capacity(REVISION_LEN);
    for byte in digest.iter().take(REVISION_LEN / 2) {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The canonical byte encoding both hashes cover.
fn encode(config: &ResolvedConfig, mut sink: impl FnMut(&[u8])) {
    let kind: &[u8] = match config.kind {
        ConfigKind::ConfigMap => b"ConfigMap",
        ConfigKind::Secret => b"Secret",
    };
    prefixed(&mut sink, kind);
    sink(&(config.data.len() as u64).to_be_bytes());
    // BTreeMap iterates in key order: the hash is canonical.
    for (key, value) in &config.data {
        prefixed(&mut sink, key.as_bytes());
        prefixed(&mut sink, value);
    }
}

fn prefixed(sink: &mut impl FnMut(&[u8]), bytes: &[u8]) {
    sink(&(bytes.len() as u64).to_be_bytes());
    sink(bytes);
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A fixed key for tests that need stable Secret revisions.
    pub(crate) fn test_key() -> RevisionKey {
        RevisionKey::new(vec![7; RevisionKey::MIN_LEN]).unwrap()
    }

    fn config(kind: ConfigKind, entries: &[(&str, &str)]) -> ResolvedConfig {
        ResolvedConfig {
            kind,
            data: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn rev(kind: ConfigKind, entries: &[(&str, &str)]) -> String {
        revision_of(&config(kind, entries), &test_key())
    }

    #[test]
    fn revision_is_stable_short_hex() {
        let a = rev(ConfigKind::ConfigMap, &[("retries", "3")]);
        assert_eq!(a, rev(ConfigKind::ConfigMap, &[("retries", "3")]));
        assert_eq!(a.len(), REVISION_LEN);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn config_map_revisions_are_plain_content_hashes() {
        // Pinned: ConfigMap revisions must not change between versions or keys.
        let c = config(ConfigKind::ConfigMap, &[("retries", "3")]);
        assert_eq!(revision_of(&c, &test_key()), "1da3f63b63");
        assert_eq!(revision_of(&c, &RevisionKey::generate()), "1da3f63b63");
    }

    #[test]
    fn secret_revisions_are_keyed() {
        let c = config(ConfigKind::Secret, &[("token", "hunter2")]);
        let unkeyed = "823daafe7d";
        let a = revision_of(&c, &test_key());
        assert_ne!(a, unkeyed, "the plain hash of the secret data");
        assert_eq!(a, revision_of(&c, &test_key()), "stable under one key");
        assert_eq!(a.len(), REVISION_LEN);
        let other = RevisionKey::new(vec![8; RevisionKey::MIN_LEN]).unwrap();
        assert_ne!(a, revision_of(&c, &other), "depends on the key");
    }

    #[test]
    fn keys_are_long_enough_and_never_printed() {
        assert_eq!(RevisionKey::new(vec![1; 31]), Err(RevisionKeyTooShort(31)));
        let key = RevisionKey::new(b"0123456789abcdef0123456789abcdef-s3cret".to_vec()).unwrap();
        assert_eq!(format!("{key:?}"), "RevisionKey(<redacted>)");
        assert_ne!(RevisionKey::generate(), RevisionKey::generate());
        assert_eq!(
            RevisionKey::generate().as_bytes().len(),
            RevisionKey::MIN_LEN
        );
    }

    #[test]
    fn revision_is_length_prefixed() {
        let a = rev(ConfigKind::ConfigMap, &[("a", "bc")]);
        let b = rev(ConfigKind::ConfigMap, &[("ab", "c")]);
        assert_ne!(a, b);
        assert_ne!(
            rev(ConfigKind::Secret, &[("a", "bc")]),
            rev(ConfigKind::Secret, &[("ab", "c")])
        );
    }

    #[test]
    fn revision_depends_on_kind_and_every_entry() {
        let base = rev(ConfigKind::ConfigMap, &[("a", "1"), ("b", "2")]);
        assert_ne!(base, rev(ConfigKind::Secret, &[("a", "1"), ("b", "2")]));
        assert_ne!(base, rev(ConfigKind::ConfigMap, &[("a", "1"), ("b", "3")]));
        assert_ne!(base, rev(ConfigKind::ConfigMap, &[("a", "1")]));
        assert_ne!(
            rev(ConfigKind::ConfigMap, &[]),
            rev(ConfigKind::ConfigMap, &[("", "")])
        );
        assert_ne!(
            rev(ConfigKind::Secret, &[("a", "1")]),
            rev(ConfigKind::Secret, &[("a", "2")])
        );
    }
}
