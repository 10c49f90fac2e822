//! LOM's masking (reference §3.4–§3.5): a node adds, for every other node of the context, the
//! pairwise pseudo-random vector of round τ, with a sign fixed by the order of the two ids, so
//! that the masks cancel in the sum over all nodes; the researcher adds the masked vectors.

use super::prf::{self, Key32, Scratch, Width, NONCE_LEN};
use crate::error::{Error, Result};

/// The pairwise secret this node shares with one other node.
#[derive(Clone)]
pub struct PairSecret<'a> {
    /// The other node's id.
    pub peer: &'a str,
    /// The 32-byte secret both derived (see [`super::dh`]).
    pub secret: &'a Key32,
}

/// What the masked vector is for, with the round: which pseudo-random streams it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// The training round τ.
    pub round: u64,
    /// The word size of the context's vectors.
    pub width: Width,
    /// `None`: v6's derivation, the round's seed from τ alone (every vector of a round, weights
    /// and validation value alike, takes the same mask). `Some(label)`: secagg's default, a
    /// distinct seed per vector label (τ and the label in the seed's input block).
    pub label: Option<u64>,
}

impl Stream {
    /// The 32-byte seed of this stream for the pairwise `secret`.
    pub fn seed(&self, secret: &Key32, nonce: &[u8; NONCE_LEN]) -> Result<Key32> {
        match self.label {
            None => prf::eval_key(secret, self.round, nonce),
            Some(label) => prf::eval_key_block(secret, self.round, label, nonce),
        }
    }
}

/// `⌈log2 n⌉`: the bits a sum of `n` values needs beyond one value's.
fn sum_bits(n: usize) -> u32 {
    if n <= 1 {
        0
    } else {
        usize::BITS - (n - 1).leading_zeros()
    }
}

/// Masks `x` (v6's `LOM.protect`): `y = x + Σ_{p < me} v_p − Σ_{p > me} v_p (mod 2^w)` over the
/// other nodes `p` of the context, ids compared bytewise (Python's `str` order for these ids), w
/// the stream's width.
///
/// `nodes` is the context's node count (this one included); every value must leave room for the
/// sum over all nodes, as v6 checks it: with 32-bit words (fedbiomed 6.3) a value has at most
/// `32 − ⌈log2 nodes⌉` bits, with 64-bit words (6.4) fewer than `64 − ⌈log2 nodes⌉`.
/// `secrets` holds one entry per other node.
pub fn protect(
    me: &str,
    secrets: &[PairSecret<'_>],
    nodes: usize,
    stream: Stream,
    x: &[u64],
    nonce: &[u8; NONCE_LEN],
) -> Result<Vec<u64>> {
    if x.is_empty() {
        return Err(Error::invalid("there are no values to mask"));
    }
    if secrets.len() + 1 != nodes {
        return Err(Error::invalid(format!(
            "a context of {nodes} nodes needs {} pairwise secrets, {} given",
            nodes.saturating_sub(1),
            secrets.len()
        )));
    }
    check_room(x, nodes, stream.width)?;
    let mut mask = vec![0u64; x.len()];
    let mut scratch = Scratch::default();
    for pair in secrets {
        if pair.peer == me {
            return Err(Error::invalid(format!(
                "a pairwise secret is given for this node itself ({me})"
            )));
        }
        let seed = stream.seed(pair.secret, nonce)?;
        let add = pair.peer.as_bytes() < me.as_bytes();
        prf::apply_vector(
            &seed,
            stream.round,
            nonce,
            stream.width,
            &mut mask,
            add,
            &mut scratch,
        )?;
    }
    Ok(mask
        .iter()
        .zip(x)
        .map(|(m, &v)| stream.width.reduce(m.wrapping_add(v)))
        .collect())
}

/// v6's overflow check (its two versions differ by one bit at the limit).
fn check_room(x: &[u64], nodes: usize, width: Width) -> Result<()> {
    let node_bits = sum_bits(nodes);
    let largest = x.iter().map(|v| 64 - v.leading_zeros()).max().unwrap_or(0);
    let (fits, room) = match width {
        Width::W32 => (largest <= 32 - node_bits, 32 - node_bits),
        Width::W64 => (largest < 64 - node_bits, 63 - node_bits),
    };
    if !fits {
        return Err(Error::invalid(format!(
            "a value needs {largest} bits, and {room} are left for a sum over {nodes} nodes in {}-bit words: the sum could overflow",
            width.bits()
        ))
        .with_hint("lower the weight (sample count), or aggregate over fewer nodes"));
    }
    Ok(())
}

/// The element-wise sum mod 2^w of every node's masked vector (v6's `LOM.aggregate`): the plain
/// sum when every node of the context contributed.
pub fn sum<V: AsRef<[u64]>>(vectors: &[V], width: Width) -> Result<Vec<u64>> {
    let Some(first) = vectors.first().map(AsRef::as_ref) else {
        return Err(Error::invalid("there are no masked vectors to add"));
    };
    if let Some((i, v)) = vectors
        .iter()
        .map(AsRef::as_ref)
        .enumerate()
        .find(|(_, v)| v.len() != first.len())
    {
        return Err(Error::invalid(format!(
            "masked vector {i} has {} values, vector 0 has {}",
            v.len(),
            first.len()
        )));
    }
    let mut total = first.to_vec();
    for v in &vectors[1..] {
        for (t, &x) in total.iter_mut().zip(v.as_ref()) {
            *t = t.wrapping_add(x);
        }
    }
    Ok(total.into_iter().map(|t| width.reduce(t)).collect())
}
