//! Joye–Libert the Fed-BioMed v6 way (reference `fedbiomed-v6-secagg.md` §5), on secagg's keys:
//! the same cryptosystem as v4 ([`super::encrypt_plaintexts`], [`super::decrypt_plaintexts`]),
//! with v6's encoding:
//!
//! - values quantized to [0, 8191] (T = 2^13, [`crate::lom::encoding`], shared with LOM) and
//!   multiplied by the node's weight (its sample count, ≤ 131,071);
//! - 30-bit values, elements of `30 + ⌈log2(n + 1)⌉` bits, `⌊1024 / e⌋` to a plaintext, first value
//!   in the lowest bits;
//! - decryption unpacks exactly the expected count and divides by the total weight, then
//!   reverses the quantization (the truncated average, as v6).
//!
//! secagg's server key `sk0 = −Σ sk_i` is v6's server key. Beyond v6, a decryption whose
//! plaintexts no honest round gives (bits above the last value, a sum above `total weight · 8191`)
//! is refused instead of returned.

use num_bigint::BigUint;

use super::{
    check_count, check_unused_bits_of, decrypt_plaintexts, encrypt_plaintexts, not_an_average,
    pack_bits, unpack_bits, Biprime, Progress, PLAINTEXT_BITS,
};
use crate::engine::key::SecretKey;
use crate::error::{Error, Result};
use crate::lom::encoding::{self, Clipped, TARGET_RANGE};

/// v6's value size: `⌈log2 T + log2 WEIGHT_RANGE⌉` = 13 + 17.
pub const VALUE_BITS: u32 = 30;

/// Bits per element for `nodes` nodes: `30 + ⌈log2(nodes + 1)⌉`.
pub fn element_bits(nodes: usize) -> u32 {
    VALUE_BITS + (usize::BITS - nodes.leading_zeros())
}

/// Elements per plaintext: `⌊1024 / element_bits(nodes)⌋`.
pub fn elements_per_plaintext(nodes: usize) -> usize {
    (PLAINTEXT_BITS / element_bits(nodes)) as usize
}

/// A node's ciphertexts and what quantization clipped.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// v6's `SecaggCrypter.encrypt` output.
    pub ciphertexts: Vec<BigUint>,
    /// Values outside the clipping range (reported, never silent).
    pub clipped: Clipped,
}

/// A node's side (v6's `SecaggCrypter.encrypt(num_nodes, current_round, params, key, biprime,
/// clipping_range, weight)`): quantize `params` with clipping range `c`, multiply by `weight`,
/// pack for `nodes` nodes and encrypt for round `round` with the node's `key`.
#[allow(clippy::too_many_arguments)]
pub fn encrypt(
    params: &[f64],
    weight: Option<u64>,
    c: u32,
    key: &SecretKey,
    round: u64,
    nodes: usize,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Encrypted> {
    if nodes == 0 {
        return Err(Error::invalid("a federation has at least one node"));
    }
    if params.is_empty() {
        return Err(Error::invalid("there are no parameters to encrypt"));
    }
    let (mut q, clipped) = encoding::quantize(params, c)?;
    if let Some(w) = weight {
        encoding::check_weight(w)?;
        q.iter_mut().for_each(|v| *v *= w);
    }
    let plaintexts = pack_bits(&q, element_bits(nodes), elements_per_plaintext(nodes));
    let ciphertexts = encrypt_plaintexts(&plaintexts, key, round, biprime, progress)?;
    Ok(Encrypted {
        ciphertexts,
        clipped,
    })
}

/// The researcher's side (v6's `SecaggCrypter.aggregate` after the product of the ciphertexts):
/// decrypt `aggregated` with the server key, unpack the `count` sums of `nodes` nodes, divide by
/// `total_weight` (the nodes' summed sample counts) and reverse the quantization.
#[allow(clippy::too_many_arguments)]
pub fn decrypt(
    aggregated: &[BigUint],
    server_key: &SecretKey,
    round: u64,
    nodes: usize,
    count: usize,
    total_weight: u64,
    c: u32,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<f64>> {
    let (e, per) = (element_bits(nodes), elements_per_plaintext(nodes));
    check_count(aggregated.len(), per, nodes, count)?;
    if total_weight == 0 {
        return Err(Error::invalid("the total weight (sample count) is 0"));
    }
    let plaintexts = decrypt_plaintexts(aggregated, server_key, round, biprime, progress)?;
    check_unused_bits_of(&plaintexts, round, e, per, count)?;
    let sums = unpack_bits(&plaintexts, e, per, count);
    let max_sum = u128::from(total_weight) * u128::from(TARGET_RANGE - 1);
    if let Some(i) = sums.iter().position(|&s| u128::from(s) > max_sum) {
        return Err(not_an_average(
            round,
            format!(
                "value {i} sums to {}, above the largest sum {max_sum} of a total weight of {total_weight}",
                sums[i]
            ),
        ));
    }
    encoding::average(&sums, total_weight, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate;
    use sha2::{Digest, Sha256};

    /// The reference's `jl_v6_end_to_end` vector (fedbiomed 6.3.3's own code made it).
    #[test]
    fn jl_v6_end_to_end() {
        assert_eq!((element_bits(2), elements_per_plaintext(2)), (32, 32));
        let biprime = Biprime::default_biprime0();
        let sk1 = SecretKey::from_decimal("12345678901234567890").unwrap();
        let sk2 = SecretKey::from_decimal("98765432109876543210").unwrap();
        let sk0 = SecretKey::from_decimal("-111111111011111111100").unwrap();
        let c1 = encrypt(&[0.5, -0.25, 1.0], Some(10), 3, &sk1, 1, 2, &biprime, None).unwrap();
        let c2 = encrypt(&[0.1, 0.2, -3.0], Some(30), 3, &sk2, 1, 2, &biprime, None).unwrap();
        let digest = |c: &BigUint| hex::encode(Sha256::digest(c.to_string().as_bytes()));
        assert_eq!(c1.ciphertexts.len(), 1);
        assert_eq!(
            digest(&c1.ciphertexts[0]),
            "465942e33b7ced9c5293290552080b3882b5b8ab9a859922e18b7e0ce1d2dc72"
        );
        assert_eq!(
            digest(&c2.ciphertexts[0]),
            "65d2a56073da6ec3a49990e923a2a1666fe9c2fe127f4c4483184f3f809e4539"
        );
        let product = aggregate(&[c1.ciphertexts, c2.ciphertexts], &biprime).unwrap();
        let average = decrypt(&product, &sk0, 1, 2, 3, 40, 3, &biprime, None).unwrap();
        assert_eq!(
            average,
            [0.19960932731046288, 0.08753509949945082, -2.00012208521548]
        );
        // Another round's masks do not cancel: refused, not returned.
        assert!(decrypt(&product, &sk0, 2, 2, 3, 40, 3, &biprime, None).is_err());
        // A total weight below the real one makes sums no honest round gives: refused.
        assert!(decrypt(&product, &sk0, 1, 2, 3, 4, 3, &biprime, None).is_err());
    }

    #[test]
    fn element_sizes_follow_v6s_table() {
        // n = 1: 31/33, 2–3: 32/32, 4–7: 33/31, 8–15: 34/30, 16–31: 35/29.
        for (n, e, per) in [
            (1, 31, 33),
            (3, 32, 32),
            (4, 33, 31),
            (15, 34, 30),
            (16, 35, 29),
        ] {
            assert_eq!(
                (element_bits(n), elements_per_plaintext(n)),
                (e, per),
                "n = {n}"
            );
        }
    }
}
