//! LOM with dropout tolerance (issue 24), the arithmetic: the self-mask, its t-of-n Shamir
//! shares, and the researcher's recovery of a sum over the survivors only.
//!
//! Per round τ, node u draws a fresh 32-byte seed b_u (OS CSPRNG), shares it t-of-n among the
//! context's nodes (over the prime field of the Mersenne prime 2^521 − 1, larger than any seed),
//! and masks
//!
//! `y_u = x_u + PRG(b_u) + Σ_v ±PRG(s_uv(τ))  (mod 2^w)`
//!
//! where `s_uv(τ)` is the pair's **per-round seed** ([`round_seed`]: the LOM stream's seed, a
//! PRF of the context's pairwise secret; revealing it for one round says nothing of the others).
//! The researcher, given the survivors U1 (whose vectors it holds):
//! - for every u in U1, t shares of b_u ⇒ b_u ⇒ removes PRG(b_u);
//! - for every dropped d and every v in U1, `s_vd(τ)` ⇒ removes the mask v added for d, which d's
//!   missing vector would have cancelled.
//!
//! A node reveals, per (τ, u), either its share of b_u (u survived) or its per-round seed with u
//! (u dropped), never both: with both, the researcher could unmask u's vector alone. That rule is
//! the protocol's (recorded durably before sending); this module only computes.

use num_bigint::BigUint;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use super::mask::{PairSecret, Stream};
use super::prf::{self, Key32, Scratch, NONCE_LEN};
use crate::error::{Error, Result};
use crate::field::{self, PrimeField};

/// The field the self-mask seeds are shared over: the Mersenne prime 2^521 − 1 (a 256-bit seed is
/// an element; shares are 66 bytes).
pub fn seed_field() -> PrimeField {
    let p = (BigUint::from(1u32) << 521u32) - BigUint::from(1u32);
    PrimeField::new(p).expect("2^521 - 1 is an odd prime")
}

/// The length of a share of a self-mask seed: an element of [`seed_field`], 66 bytes big-endian.
pub const SHARE_LEN: usize = 66;

/// The default threshold of `n` nodes: the smallest t > n/2 (an honest majority must agree to
/// reveal anything).
pub fn default_threshold(n: usize) -> usize {
    n / 2 + 1
}

/// Refuses a threshold that lets a minority reconstruct a self-mask (t ≤ n/2), or one no set of
/// nodes reaches (t > n).
pub fn check_threshold(t: usize, n: usize) -> Result<()> {
    if t <= n / 2 {
        return Err(Error::invalid(format!(
            "a dropout threshold of {t} among {n} nodes is at most half of them: a minority could reconstruct a node's self-mask"
        ))
        .with_hint(format!("use at least {}", default_threshold(n))));
    }
    if t > n {
        return Err(Error::invalid(format!(
            "a dropout threshold of {t} is more than the {n} nodes of the context"
        )));
    }
    Ok(())
}

/// A fresh self-mask seed b_u(τ) from the OS CSPRNG.
pub fn new_self_seed() -> Zeroizing<Key32> {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(seed.as_mut_slice());
    seed
}

/// The t-of-n shares of `seed`: share `i` (0-based) is the polynomial at x = i + 1, for the
/// node at index `i` of the context's node list, as fixed-length bytes.
pub fn share_seed(seed: &Key32, t: usize, n: usize) -> Result<Vec<Zeroizing<Vec<u8>>>> {
    check_threshold(t, n)?;
    let f = seed_field();
    let mut secret = BigUint::from_bytes_be(seed);
    let shares = f.share(&secret, t - 1, n, &mut OsRng);
    field::wipe(&mut secret);
    Ok(shares?
        .into_iter()
        .map(|mut s| {
            let bytes = f.to_fixed_bytes(&s);
            field::wipe(&mut s);
            bytes
        })
        .collect())
}

/// b_u from shares `(x, share)` (x = the holder's index + 1): at least `t`; with more, every
/// share must lie on the polynomial of the first t ([`Error::Verification`] otherwise: a
/// holder sent a wrong one).
pub fn recover_seed(shares: &[(u32, &[u8])], t: usize) -> Result<Zeroizing<Key32>> {
    if shares.len() < t {
        return Err(Error::invalid(format!(
            "{} shares of a self-mask seed, {t} needed",
            shares.len()
        )));
    }
    let f = seed_field();
    let points = shares
        .iter()
        .map(|(x, s)| Ok((BigUint::from(*x), f.element_from_bytes(s)?)))
        .collect::<Result<Vec<_>>>()?;
    if shares.len() > t && !f.inconsistent_points(&points, t - 1)?.is_empty() {
        return Err(Error::verification(
            "the shares of a self-mask seed do not lie on one polynomial: a node sent a wrong share",
        ));
    }
    let mut value = f.interpolate_zero(&points[..t])?;
    let bytes = value.to_bytes_be();
    field::wipe(&mut value);
    if bytes.len() > 32 {
        return Err(Error::verification(
            "the reconstructed self-mask seed is not 32 bytes: the shares are not of one seed",
        ));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed[32 - bytes.len()..].copy_from_slice(&bytes);
    Ok(seed)
}

/// The per-round seed of a pair for `stream` (the one the LOM mask of that round and label
/// uses): what a survivor reveals for a dropped peer instead of the context's secret.
pub fn round_seed(secret: &Key32, stream: Stream, nonce: &[u8; NONCE_LEN]) -> Result<Key32> {
    stream.seed(secret, nonce)
}

/// A node's masked vector: LOM's pairwise masks ([`super::mask::protect`]) plus PRG(`self_seed`).
pub fn protect(
    me: &str,
    secrets: &[PairSecret<'_>],
    nodes: usize,
    stream: Stream,
    x: &[u64],
    nonce: &[u8; NONCE_LEN],
    self_seed: &Key32,
) -> Result<Vec<u64>> {
    let mut y = super::mask::protect(me, secrets, nodes, stream, x, nonce)?;
    let mut scratch = Scratch::default();
    prf::apply_vector(
        self_seed,
        stream.round,
        nonce,
        stream.width,
        &mut y,
        true,
        &mut scratch,
    )?;
    y.iter_mut().for_each(|v| *v = stream.width.reduce(*v));
    Ok(y)
}

/// A mask a survivor added for a peer that dropped: the survivor's id, the dropped peer's, and
/// their per-round seed.
pub struct Dangling<'a> {
    /// The survivor whose vector carries the mask.
    pub survivor: &'a str,
    /// The peer that dropped.
    pub dropped: &'a str,
    /// Their per-round seed ([`round_seed`]).
    pub seed: &'a Key32,
}

/// Removes from `sum` (the survivors' vectors added mod 2^w) every survivor's self-mask and every
/// mask a survivor added for a dropped peer, leaving the plain sum over the survivors. The
/// streams are spread over the cores.
pub fn unmask(
    sum: &mut [u64],
    stream: Stream,
    nonce: &[u8; NONCE_LEN],
    self_seeds: &[&Key32],
    dangling: &[Dangling<'_>],
) -> Result<()> {
    // Each mask to remove, with the sign to remove it with (the opposite of how it was added).
    let mut removals: Vec<(&Key32, bool)> = self_seeds.iter().map(|s| (*s, false)).collect();
    for d in dangling {
        // The survivor added the pair's vector when the dropped peer's id sorts first.
        let added = d.dropped.as_bytes() < d.survivor.as_bytes();
        removals.push((d.seed, !added));
    }
    // One accumulator per core, each removing its share of the streams in place: one 8-byte
    // word per value per core allocated, not one vector per stream.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(removals.len())
        .max(1);
    let chunks: Vec<&[(&Key32, bool)]> = removals
        .chunks(removals.len().div_ceil(workers).max(1))
        .collect();
    let len = sum.len();
    let partials = crate::parallel::map_indexed(chunks.len(), |c| {
        let mut acc = vec![0u64; len];
        let mut scratch = Scratch::default();
        for (seed, add) in chunks[c] {
            prf::apply_vector(
                seed,
                stream.round,
                nonce,
                stream.width,
                &mut acc,
                *add,
                &mut scratch,
            )?;
        }
        Ok(acc)
    })?;
    for acc in partials {
        for (s, v) in sum.iter_mut().zip(&acc) {
            *s = s.wrapping_add(*v);
        }
    }
    sum.iter_mut().for_each(|v| *v = stream.width.reduce(*v));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lom::{mask, Profile};

    static SALT: std::sync::LazyLock<Key32> = std::sync::LazyLock::new(|| {
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        s
    });

    struct Federation {
        ids: Vec<String>,
        secrets: Vec<Vec<Key32>>,
    }

    fn federation(n: usize) -> Federation {
        let ids: Vec<String> = (0..n).map(|i| format!("node_{i:02}")).collect();
        // secrets[i][j] == secrets[j][i]: one random secret per pair, from its ordered ids.
        let pair_secret = |i: usize, j: usize| -> Key32 {
            let (lo, hi) = (i.min(j), i.max(j));
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(lo as u64).to_be_bytes());
            s[8..16].copy_from_slice(&(hi as u64).to_be_bytes());
            // Make it unpredictable across test runs while keeping the symmetry.
            let salt = *SALT;
            for (b, k) in s.iter_mut().zip(salt.iter()) {
                *b ^= k;
            }
            s
        };
        let secrets = (0..n)
            .map(|i| (0..n).map(|j| pair_secret(i, j)).collect())
            .collect();
        Federation { ids, secrets }
    }

    fn pairs<'a>(f: &'a Federation, i: usize) -> Vec<PairSecret<'a>> {
        (0..f.ids.len())
            .filter(|&j| j != i)
            .map(|j| PairSecret {
                peer: &f.ids[j],
                secret: &f.secrets[i][j],
            })
            .collect()
    }

    /// 10 nodes, t = 6: `dropped_before` never send their vector; the others do, and
    /// `silent_after` of those then answer nothing (their self-masks come from the others'
    /// shares). The recovered sum is the plain sum over the survivors. (A survivor silent in the
    /// unmasking step cannot reveal its per-round seed with a node that dropped before masking;
    /// the protocol, `aggregate::lom_dropout`, shares those seeds t-of-n too, so that both kinds
    /// at once still unmask: `tests/e2e_dropout.rs`.)
    fn round(dropped_before: &[usize], silent_after: &[usize]) {
        let n = 10;
        let t = 6;
        let f = federation(n);
        let stream = Profile::Secagg.stream(7, 0);
        let nonce = [3u8; 16];
        let xs: Vec<Vec<u64>> = (0..n)
            .map(|i| (0..50).map(|k| (i * 1000 + k) as u64).collect())
            .collect();
        let seeds: Vec<Zeroizing<Key32>> = (0..n).map(|_| new_self_seed()).collect();
        // Step 1: every node shares its seed; holder j keeps shares[u][j].
        let shares: Vec<Vec<Zeroizing<Vec<u8>>>> =
            seeds.iter().map(|s| share_seed(s, t, n).unwrap()).collect();
        // Step 2: the survivors of step 1 mask.
        let survivors: Vec<usize> = (0..n).filter(|i| !dropped_before.contains(i)).collect();
        let ys: Vec<Vec<u64>> = survivors
            .iter()
            .map(|&i| {
                protect(
                    &f.ids[i],
                    &pairs(&f, i),
                    n,
                    stream,
                    &xs[i],
                    &nonce,
                    &seeds[i],
                )
                .unwrap()
            })
            .collect();
        let mut sum = mask::sum(&ys, stream.width).unwrap();
        // Step 4: the nodes that still answer reveal.
        let answering: Vec<usize> = survivors
            .iter()
            .copied()
            .filter(|i| !silent_after.contains(i))
            .collect();
        assert!(answering.len() >= t);
        let recovered: Vec<Zeroizing<Key32>> = survivors
            .iter()
            .map(|&u| {
                let held: Vec<(u32, &[u8])> = answering
                    .iter()
                    .map(|&j| (j as u32 + 1, shares[u][j].as_slice()))
                    .collect();
                recover_seed(&held, t).unwrap()
            })
            .collect();
        for (u, r) in survivors.iter().zip(&recovered) {
            assert_eq!(**r, *seeds[*u]);
        }
        // Only the nodes still answering reveal their per-round seeds with the dropped.
        let round_seeds: Vec<(usize, usize, Key32)> = answering
            .iter()
            .flat_map(|&v| dropped_before.iter().map(move |&d| (v, d)))
            .map(|(v, d)| (v, d, round_seed(&f.secrets[v][d], stream, &nonce).unwrap()))
            .collect();
        let dangling: Vec<Dangling<'_>> = round_seeds
            .iter()
            .map(|(v, d, s)| Dangling {
                survivor: &f.ids[*v],
                dropped: &f.ids[*d],
                seed: s,
            })
            .collect();
        let self_seeds: Vec<&Key32> = recovered.iter().map(|s| &**s).collect();
        unmask(&mut sum, stream, &nonce, &self_seeds, &dangling).unwrap();
        let plain: Vec<u64> = (0..50)
            .map(|k| survivors.iter().map(|&i| xs[i][k]).sum())
            .collect();
        assert_eq!(sum, plain);
    }

    #[test]
    fn three_of_ten_drop_before_masking_and_the_survivors_sum_is_exact() {
        round(&[2, 5, 9], &[]);
    }

    #[test]
    fn four_go_silent_after_masking_and_their_self_masks_come_from_the_others_shares() {
        round(&[], &[1, 7, 3, 8]);
    }

    #[test]
    fn fewer_than_t_shares_or_a_wrong_share_is_refused() {
        let seed = new_self_seed();
        let shares = share_seed(&seed, 6, 10).unwrap();
        let held: Vec<(u32, &[u8])> = (0..5)
            .map(|j| (j + 1, shares[j as usize].as_slice()))
            .collect();
        assert_eq!(
            recover_seed(&held, 6).unwrap_err().kind(),
            crate::ErrorKind::InvalidInput
        );
        let mut bad = shares[3].to_vec();
        bad[40] ^= 1;
        let mut held: Vec<(u32, &[u8])> = (0..7)
            .map(|j| (j + 1, shares[j as usize].as_slice()))
            .collect();
        held[3] = (4, &bad);
        assert_eq!(
            recover_seed(&held, 6).unwrap_err().kind(),
            crate::ErrorKind::Verification
        );
    }

    #[test]
    fn thresholds_of_a_minority_are_refused() {
        assert_eq!(default_threshold(10), 6);
        assert_eq!(default_threshold(7), 4);
        assert!(check_threshold(5, 10).is_err());
        assert!(check_threshold(11, 10).is_err());
        check_threshold(6, 10).unwrap();
        assert!(share_seed(&[1u8; 32], 3, 6).is_err());
    }

    #[test]
    fn a_vector_alone_stays_masked_without_its_self_seed() {
        // The pairwise masks of a node that dropped after masking would be known to a researcher
        // holding every per-round seed with it; the self-mask still hides its vector.
        let f = federation(3);
        let stream = Profile::Secagg.stream(1, 0);
        let nonce = [0u8; 16];
        let x = vec![5u64; 8];
        let seed = new_self_seed();
        let y = protect(&f.ids[0], &pairs(&f, 0), 3, stream, &x, &nonce, &seed).unwrap();
        let mut only_pairs = y.clone();
        let seeds: Vec<Key32> = (1..3)
            .map(|j| round_seed(&f.secrets[0][j], stream, &nonce).unwrap())
            .collect();
        // Remove the pairwise masks as a researcher with every per-round seed would.
        for (j, s) in (1..3).zip(&seeds) {
            let added = f.ids[j].as_bytes() < f.ids[0].as_bytes();
            let mut scratch = Scratch::default();
            prf::apply_vector(
                s,
                1,
                &nonce,
                stream.width,
                &mut only_pairs,
                !added,
                &mut scratch,
            )
            .unwrap();
        }
        assert_ne!(only_pairs, x, "the self-mask still hides the vector");
    }

    /// Flower weakness 1 (reference `flower-secaggplus.md`): Flower's PRG is NumPy's Mersenne
    /// Twister seeded with 32 bits of the secret, so 2^32 guesses find a mask. Here the self-mask
    /// seed is 256 bits from the OS CSPRNG and keys ChaCha20 whole: seeds equal in any 32 bits
    /// (the first four bytes, as a 32-bit seeding would keep) still give unrelated masks, and
    /// flipping any one bit of the seed changes the mask.
    #[test]
    fn flower_weakness_1_the_self_mask_depends_on_every_bit_of_a_256_bit_seed() {
        let drawn: std::collections::HashSet<Key32> = (0..2000).map(|_| *new_self_seed()).collect();
        assert_eq!(drawn.len(), 2000);
        // No two of 2000 draws share their first 32 bits by more than chance (expected 0.0005).
        let low: std::collections::HashSet<[u8; 4]> =
            drawn.iter().map(|s| [s[0], s[1], s[2], s[3]]).collect();
        assert!(low.len() >= 1999);
        let f = federation(3);
        let stream = Profile::Secagg.stream(1, 0);
        let nonce = [0u8; 16];
        let x = vec![0u64; 64];
        let seed = new_self_seed();
        let base = protect(&f.ids[0], &pairs(&f, 0), 3, stream, &x, &nonce, &seed).unwrap();
        for bit in [0usize, 31, 32, 100, 200, 255] {
            let mut other: Key32 = *seed;
            other[bit / 8] ^= 1 << (bit % 8);
            let y = protect(&f.ids[0], &pairs(&f, 0), 3, stream, &x, &nonce, &other).unwrap();
            let same = y.iter().zip(&base).filter(|(a, b)| a == b).count();
            assert_eq!(
                same, 0,
                "flipping bit {bit} of the seed left {same} of 64 words equal"
            );
        }
    }
}
