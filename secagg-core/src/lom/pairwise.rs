//! What a LOM context holds: a node's pairwise secrets (one per other node), and the key
//! confirmation tags by which the researcher checks, without learning any secret, that every
//! pair of nodes derived the same one.
//!
//! A tag is `HMAC-SHA256(secret, "secagg lom pair confirmation v1\0" ‖ session ‖ 0 ‖ lo ‖ 0 ‖
//! hi)` with `lo`/`hi` the two node ids in byte order: a PRF of the secret under a label no
//! other use of it shares (the masks use it as a ChaCha20 key), so it reveals nothing about the
//! secret, and equal tags from both ends mean both hold the same secret.

use ring::hmac;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::prf::Key32;
use crate::party::SessionId;

/// Bytes of a key confirmation tag.
pub const TAG_LEN: usize = 32;

/// One node's pairwise secrets of a context, in party order; or, at the researcher, none (it
/// holds no secret) and the fingerprint of the confirmation tags it checked.
pub struct PairwiseSet {
    /// `(peer id, secret)`, one per other node of the context.
    pub secrets: Vec<(String, Zeroizing<Key32>)>,
    /// What `context show` prints: `SHA256:<hex>` of the set (a node) or of every pair's tag
    /// (the researcher). Safe to print.
    pub fingerprint: String,
}

impl std::fmt::Debug for PairwiseSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairwiseSet")
            .field(
                "peers",
                &self.secrets.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("secrets", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl PairwiseSet {
    /// A node's set, fingerprinted.
    pub fn of_node(secrets: Vec<(String, Zeroizing<Key32>)>) -> Self {
        let mut h = Sha256::new();
        h.update(b"secagg lom pairwise set v1\0");
        for (id, secret) in &secrets {
            h.update((id.len() as u32).to_be_bytes());
            h.update(id.as_bytes());
            h.update(secret.as_slice());
        }
        let fingerprint = format!("SHA256:{}", hex::encode(h.finalize()));
        PairwiseSet {
            secrets,
            fingerprint,
        }
    }

    /// The researcher's record: no secret, the fingerprint of the tags of every pair (in the
    /// order the caller checked them).
    pub fn of_researcher(tags: &[[u8; TAG_LEN]]) -> Self {
        let mut h = Sha256::new();
        h.update(b"secagg lom pair tags v1\0");
        for t in tags {
            h.update(t);
        }
        PairwiseSet {
            secrets: Vec::new(),
            fingerprint: format!("SHA256:{}", hex::encode(h.finalize())),
        }
    }

    /// The secret shared with `peer`, if it is one of the set's.
    pub fn secret_with(&self, peer: &str) -> Option<&Key32> {
        self.secrets
            .iter()
            .find(|(id, _)| id == peer)
            .map(|(_, s)| &**s)
    }
}

/// The key confirmation tag of the secret of nodes `a` and `b` in `session`.
pub fn pair_tag(secret: &Key32, session: &SessionId, a: &str, b: &str) -> [u8; TAG_LEN] {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(b"secagg lom pair confirmation v1\0");
    ctx.update(session.as_uuid().as_bytes());
    ctx.update(&[0]);
    ctx.update(lo.as_bytes());
    ctx.update(&[0]);
    ctx.update(hi.as_bytes());
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The salt of a context's KDF (reference §4: v6's `secagg_id` as UTF-8, so that the secret
/// equals v6's for the same key pairs).
pub fn kdf_salt(session: &SessionId) -> String {
    format!("secagg_{}", session.as_uuid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_symmetric_and_bound_to_secret_session_and_pair() {
        let s = SessionId::generate();
        let k = [7u8; 32];
        let t = pair_tag(&k, &s, "node_a", "node_b");
        assert_eq!(t, pair_tag(&k, &s, "node_b", "node_a"));
        assert_ne!(t, pair_tag(&[8u8; 32], &s, "node_a", "node_b"));
        assert_ne!(t, pair_tag(&k, &SessionId::generate(), "node_a", "node_b"));
        assert_ne!(t, pair_tag(&k, &s, "node_a", "node_c"));
        // The separator keeps ("node_a", "bnode_b") and ("node_ab", "node_b") apart.
        assert_ne!(
            pair_tag(&k, &s, "node_a", "node_ab"),
            pair_tag(&k, &s, "node_aa", "node_b")
        );
    }

    #[test]
    fn fingerprints_change_with_any_secret_and_debug_hides_them() {
        let a = PairwiseSet::of_node(vec![("node_b".into(), Zeroizing::new([1u8; 32]))]);
        let b = PairwiseSet::of_node(vec![("node_b".into(), Zeroizing::new([2u8; 32]))]);
        assert_ne!(a.fingerprint, b.fingerprint);
        assert!(a.fingerprint.starts_with("SHA256:"));
        let dbg = format!("{a:?}");
        assert!(
            dbg.contains("<redacted>") && !dbg.contains("[1, 1"),
            "{dbg}"
        );
        assert_eq!(a.secret_with("node_b"), Some(&[1u8; 32]));
        assert_eq!(a.secret_with("node_c"), None);
    }
}
