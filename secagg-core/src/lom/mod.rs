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
pub mod dropout;
pub mod encoding;
pub mod mask;
pub mod pairwise;
pub mod prf;

use crate::error::{Error, Result};
use crate::party::SessionId;

pub use encoding::Clipped;
pub use mask::{PairSecret, Stream};
pub use pairwise::PairwiseSet;
pub use prf::Width;

/// A node's masked vector and what quantization clipped.
#[derive(Debug, Clone)]
pub struct Masked {
    /// The masked values (v6's `SecaggLomCrypter.encrypt` output), words of the stream's width.
    pub values: Vec<u64>,
    /// Values outside the clipping range (reported, never silent).
    pub clipped: Clipped,
}

/// A node's whole pipeline (v6's `SecaggLomCrypter.encrypt`): quantize `params` with clipping
/// range `c`, multiply by `weight` (the node's sample count, ≤ 131,071), mask with the pairwise
/// `secrets` of a context of `nodes` nodes for `stream`.
#[allow(clippy::too_many_arguments)]
pub fn encrypt(
    me: &str,
    secrets: &[PairSecret<'_>],
    nodes: usize,
    stream: Stream,
    params: &[f64],
    weight: Option<u64>,
    c: u32,
    nonce: &[u8; prf::NONCE_LEN],
) -> Result<Masked> {
    let (q, clipped) = quantize_weighted(params, weight, c)?;
    let values = mask::protect(me, secrets, nodes, stream, &q, nonce)?;
    Ok(Masked { values, clipped })
}

/// `params` quantized with clipping range `c` and multiplied by `weight` (≤ 131,071): what a
/// node masks.
pub fn quantize_weighted(
    params: &[f64],
    weight: Option<u64>,
    c: u32,
) -> Result<(Vec<u64>, Clipped)> {
    let (mut q, clipped) = encoding::quantize(params, c)?;
    if let Some(w) = weight {
        encoding::check_weight(w)?;
        // q ≤ 8191 and w < 2^17: the product fits easily in u64.
        q.iter_mut().for_each(|v| *v *= w);
    }
    Ok((q, clipped))
}

/// The researcher's side (v6's `SecaggLomCrypter.aggregate`): the sum of every node's masked
/// vector (words of `width`), averaged by `total_weight` and reverse-quantized with clipping
/// range `c`.
///
/// Beyond v6 (which returns noise): a sum above `total_weight · (T − 1)`, which no honest round
/// gives, is refused (`VerificationFailed`). When a node's vector is missing, altered or of
/// another round, its masks do not cancel and the sums are near-uniform words, so this refuses
/// such a round with overwhelming probability instead of returning an average.
pub fn decrypt<V: AsRef<[u64]>>(
    vectors: &[V],
    width: Width,
    total_weight: u64,
    c: u32,
) -> Result<Vec<f64>> {
    if total_weight == 0 {
        return Err(Error::invalid("the total weight (sample count) is 0"));
    }
    let sums = mask::sum(vectors, width)?;
    average_sums(&sums, vectors.len(), total_weight, c)
}

/// The average of `nodes` vectors from their unmasked `sums`, refused like [`decrypt`]'s when a
/// sum is above what `total_weight` allows (a dropout round: the sums once the self-masks and
/// dangling masks are removed).
pub fn average_sums(sums: &[u64], nodes: usize, total_weight: u64, c: u32) -> Result<Vec<f64>> {
    if total_weight == 0 {
        return Err(Error::invalid("the total weight (sample count) is 0"));
    }
    let largest = u128::from(total_weight) * u128::from(encoding::TARGET_RANGE - 1);
    if let Some(i) = sums.iter().position(|&s| u128::from(s) > largest) {
        return Err(Error::verification(format!(
            "the {nodes} masked vectors do not sum to an average: value {i} sums to {}, above the largest sum {largest} of a total weight of {total_weight}",
            sums[i]
        ))
        .with_hint("a node's vector is missing, altered or of another round (or the total weight is wrong): no result is given; collect every node's vector of the round again"));
    }
    encoding::average(sums, total_weight, c)
}

/// Which construction a context uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// fedbiomed 6.0–6.3 bit for bit (the reference's §3 and §13 vectors): 32-bit words, the
    /// nonce the first 16 bytes of `secagg_<uuid>` (8 hex digits vary), and every vector of a
    /// round (weights, validation value) the same mask.
    FedbiomedV63,
    /// fedbiomed 6.4 bit for bit, for federations that mix it with secagg nodes: as 6.3 with
    /// 64-bit words (counters and vector words of 8 bytes).
    FedbiomedV64,
    /// secagg's: 64-bit words, the nonce the session's whole uuid, and each vector label its
    /// own stream.
    Secagg,
}

impl Profile {
    /// The stream of vector `label` (0: the weights) in round `round`; v6's profiles have one
    /// stream per round, whatever the label.
    pub fn stream(self, round: u64, label: u64) -> Stream {
        match self {
            Profile::FedbiomedV63 => Stream {
                round,
                width: Width::W32,
                label: None,
            },
            Profile::FedbiomedV64 => Stream {
                round,
                width: Width::W64,
                label: None,
            },
            Profile::Secagg => Stream {
                round,
                width: Width::W64,
                label: Some(label),
            },
        }
    }

    /// The word size of the profile's vectors.
    pub fn width(self) -> Width {
        self.stream(0, 0).width
    }
}

/// The ChaCha20 IV of a context with session `session` under `profile`.
///
/// v6: `utf8("secagg_<uuid>").zfill(16)[:16]` (its `SecaggLomCrypter(nonce=secagg_id)`); secagg:
/// the uuid's 16 bytes.
pub fn nonce(session: &SessionId, profile: Profile) -> [u8; prf::NONCE_LEN] {
    match profile {
        Profile::FedbiomedV63 | Profile::FedbiomedV64 => {
            v6_nonce(&format!("secagg_{}", session.as_uuid()))
        }
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
