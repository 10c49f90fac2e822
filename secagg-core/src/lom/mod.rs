//! LOM (Low-Overhead Masking), Fed-BioMed v6's default secure-aggregation scheme, bit for bit:
//! every node masks its quantized, weighted vector with pseudo-random vectors it shares pairwise
//! with every other node, so that the masks cancel in the sum the researcher computes.
//!
//! - [`encoding`]: v6's float encoding (quantize, weight, average, reverse);
//! - [`prf`]: v6's ChaCha20-based PRF (`eval_key`, `eval_vector`), and secagg's per-label seed;
//! - [`mask`]: masking (`protect`) and the researcher's sum;
//! - [`dh`]: P-256 ECDH and the KDF that turns it into a pairwise secret;
//! - [`Profile`] and [`nonce`]: v6's choices (the nonce from the first 16 bytes of the id, one
//!   mask per round for every vector) or secagg's (the whole session id, a stream per vector).
//!
//! What v6 leaves to its overlay (the researcher relays the nodes' DH public keys under a key
//! published in its repository) is the agents' job in secagg: see the LOM issue.

pub mod dh;
pub mod encoding;
pub mod mask;
pub mod prf;

use crate::party::SessionId;

/// Which construction a context uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Fed-BioMed v6 bit for bit, for federations that mix v6 and secagg nodes: the nonce is
    /// the first 16 bytes of `secagg_<uuid>` (8 hex digits vary), and every vector of a round
    /// (weights, validation value) takes the same mask.
    FedbiomedV6,
    /// secagg's: the nonce is the session's whole uuid, and each vector label has its own
    /// stream.
    Secagg,
}

/// The ChaCha20 IV of a context with session `session` under `profile`.
///
/// v6: `utf8("secagg_<uuid>").zfill(16)[:16]` (its `SecaggLomCrypter(nonce=secagg_id)`); secagg:
/// the uuid's 16 bytes.
pub fn nonce(session: &SessionId, profile: Profile) -> [u8; prf::NONCE_LEN] {
    match profile {
        Profile::FedbiomedV6 => v6_nonce(&format!("secagg_{}", session.as_uuid())),
        Profile::Secagg => *session.as_uuid().as_bytes(),
    }
}

/// v6's nonce of any id: its UTF-8 bytes, left-padded with ASCII `0` to 16 if shorter, cut to 16.
pub fn v6_nonce(id: &str) -> [u8; prf::NONCE_LEN] {
    let bytes = id.as_bytes();
    let mut out = [b'0'; prf::NONCE_LEN];
    if bytes.len() >= prf::NONCE_LEN {
        out.copy_from_slice(&bytes[..prf::NONCE_LEN]);
    } else {
        out[prf::NONCE_LEN - bytes.len()..].copy_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests;
