//! Joye–Libert secure aggregation with the negotiated keys, bit-compatible with Fed-BioMed v4.
//!
//! Nodes encrypt their model updates with their user key `sk_i`; the researcher multiplies the
//! ciphertexts and decrypts only the sum with the server key `sk0` (`sk0 + Σ sk_i = 0`). Every
//! step is Fed-BioMed v4.5.0's (`fedbiomed/common/secagg/_jls.py`, `_secagg_crypter.py`), so
//! ciphertexts are bit-identical:
//!
//! - [`quantize`]: clip to `[−c, c]`, map to `[0, TR − 1]` with `TR` = [`TARGET_RANGE`];
//! - [`pack`]: `floor(1024 / e)` values per plaintext, `e` = [`element_bits`] (14 bits plus room
//!   for the sum of `n` nodes), the first value in the lowest bits;
//! - [`tau`] and [`hash`]: the per-batch tag `τ_k = (k << 512) | round` and `H(τ) = SHA-256(τ as
//!   1024 big-endian bytes ‖ 0x01)` (bytes, not bits: Fed-BioMed's `bits_size // 2`);
//! - [`encrypt`]: `c_k = (N·x_k + 1) · H(τ_k)^{sk_i} mod N²`;
//! - [`aggregate`]: `C_k = Π_i c_{i,k} mod N²`;
//! - [`decrypt`]: `V_k = C_k · H(τ_k)^{sk0} mod N²`, `X_k = (V_k − 1) / N mod N`, unpacked.
//!
//! One difference, on purpose: Fed-BioMed's unpacking stops at the first zero remainder, so
//! trailing zero values vanish from its result; here the element count is known and every value
//! is returned (ciphertexts are unchanged).
//!
//! The exponent is a secret key, so `H^{sk}` is computed in time independent of the key's value
//! (OpenSSL's constant-time Montgomery exponentiation, in the crate-private module
//! `aggregate::secret_pow`; the inverse for the negative server key is crypto-bigint's
//! constant-time inversion), unlike GMP's `powm`, which Fed-BioMed uses. Ciphertexts are
//! independent, so encryption and decryption use every core.

pub mod ciphertext_file;
pub mod lom_dropout;
pub mod lom_round;
pub mod masked_file;
mod one_per_node;
pub mod params;
pub mod round;
mod secret_pow;
pub mod v6;

pub use ciphertext_file::{
    CiphertextFile, FileSignature, CIPHERTEXT_FORMAT, CIPHERTEXT_VERSION,
    MAX_CIPHERTEXT_FILE_BYTES, PROFILE_FEDBIOMED_V6,
};
pub use lom_round::{
    decrypt_lom, encrypt_lom, LomAverage, LomDecryptRequest, LomEncryptRequest, LomMasked,
};
pub use masked_file::MaskedFile;
pub use params::read_params;
pub use round::{
    decrypt_round, encrypt_round, DecryptRequest, EncryptRequest, JlProfile, RoundAverage,
    UnsignedFiles,
};

use crypto_bigint::modular::{MontyForm, MontyParams};
use crypto_bigint::{Invert, Odd, U2048};
use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, Zero};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::engine::key::SecretKey;
use crate::error::{Error, Result};

/// Values are quantised to `[0, TARGET_RANGE − 1]`.
pub const TARGET_RANGE: u32 = 10_000;
/// Fed-BioMed's default clipping range `c`: values are clipped to `[−c, c]` first.
pub const DEFAULT_CLIPPING_RANGE: u32 = 3;
/// Bits of one quantised value: `ceil(log2 TARGET_RANGE)`.
pub const VALUE_BITS: u32 = 14;
/// Bits of one plaintext (Fed-BioMed's key size 2048 / 2).
pub const PLAINTEXT_BITS: u32 = 1024;
/// Bytes of `τ` fed to SHA-256: Fed-BioMed's `bits_size // 2` with its key size of 2048 (so 1024
/// bytes, most of them leading zeros).
const TAU_BYTES: usize = 1024;
/// Limbs of the fixed-size integers mod `N²` (2048 bits).
const LIMBS: usize = U2048::LIMBS;

/// Fed-BioMed v4.5.0's default public biprime `default_biprime0` (1024 bits), from
/// `envs/common/default_biprimes/biprime0.json`: a public parameter, whose factors nobody holds.
pub const DEFAULT_BIPRIME0: &str = "158820908809271716671659880613366104677813341255487834154303909761107215283569995523817428402987962641429395032343305343341950966867458277812575065022203120547706127493272939455658018882112230042773163870472621818892994896895819790062496734944602899772583591514631486212290112369502692304700112819186167541107";

/// The public modulus `N` (a product of two unknown primes) and what is derived from it.
#[derive(Clone)]
pub struct Biprime {
    /// Its name (`default_biprime0`, or the `secagg_id` of a Fed-BioMed biprime file).
    pub name: String,
    n: BigUint,
    n2: BigUint,
    params: MontyParams<LIMBS>,
    modulus: secret_pow::Modulus,
}

impl std::fmt::Debug for Biprime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Biprime({}, {} bits)", self.name, self.n.bits())
    }
}

impl Biprime {
    /// A biprime from its value; refuses an even `N` or one whose square does not fit 2048 bits.
    pub fn new(name: &str, n: BigUint) -> Result<Self> {
        if n.is_even() || n.bits() < 512 || n.bits() > 1024 {
            return Err(Error::invalid(format!(
                "the biprime `{name}` must be an odd number of 512 to 1024 bits, got {} bits",
                n.bits()
            )));
        }
        let n2 = &n * &n;
        let odd = Odd::new(to_fixed(&n2)?)
            .into_option()
            .ok_or_else(|| Error::Internal("N² is even".into()))?;
        // The modulus is public: a variable-time setup leaks nothing.
        let params = MontyParams::new_vartime(odd);
        let modulus = secret_pow::Modulus::new(&n2.to_bytes_be())?;
        Ok(Biprime {
            name: name.to_owned(),
            n,
            n2,
            params,
            modulus,
        })
    }

    /// Fed-BioMed's default biprime, [`DEFAULT_BIPRIME0`].
    pub fn default_biprime0() -> Self {
        let n = DEFAULT_BIPRIME0.parse().expect("a decimal constant");
        Self::new("default_biprime0", n).expect("a valid constant")
    }

    /// A biprime from Fed-BioMed's JSON form, `{"secagg_id": …, "biprime": <integer>, …}`. The
    /// integer is read from the text itself (a JSON number this large does not survive a float).
    pub fn from_fedbiomed_json(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!("not a Fed-BioMed biprime file: {why}")).with_hint(
                "expected {\"secagg_id\": \"…\", \"biprime\": <integer>, \"max_keysize\": 2048}",
            )
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(&format!("invalid JSON ({e})")))?;
        let name = value
            .get("secagg_id")
            .or_else(|| value.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("biprime")
            .to_owned();
        let at = text
            .find("\"biprime\"")
            .ok_or_else(|| bad("no \"biprime\" field"))?;
        let rest = text[at + "\"biprime\"".len()..]
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("no value after \"biprime\""))?
            .trim_start();
        let rest = rest.strip_prefix('"').unwrap_or(rest);
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return Err(bad("\"biprime\" is not a decimal integer"));
        }
        Self::new(&name, digits.parse().map_err(|_| bad("bad integer"))?)
    }

    /// `N`.
    pub fn n(&self) -> &BigUint {
        &self.n
    }

    /// Decimal digits of the largest ciphertext, `N² − 1`: no well-formed ciphertext is longer.
    pub fn max_ciphertext_digits(&self) -> usize {
        (&self.n2 - 1u32).to_str_radix(10).len()
    }

    /// Refuses a ciphertext outside `0 < c < N²` (no encryption gives one), with the reason.
    pub fn check_ciphertext(&self, c: &BigUint) -> std::result::Result<(), &'static str> {
        if c.is_zero() {
            Err("is 0, which no encryption gives")
        } else if c >= &self.n2 {
            Err("is not below N²")
        } else {
            Ok(())
        }
    }
}

fn to_fixed(v: &BigUint) -> Result<U2048> {
    let bytes = v.to_bytes_be();
    if bytes.len() > U2048::BYTES {
        return Err(Error::Internal(format!(
            "a {}-bit value does not fit 2048 bits",
            v.bits()
        )));
    }
    let mut buf = Zeroizing::new([0u8; U2048::BYTES]);
    buf[U2048::BYTES - bytes.len()..].copy_from_slice(&bytes);
    Ok(U2048::from_be_slice(&buf[..]))
}

fn from_fixed(v: &U2048) -> BigUint {
    BigUint::from_bytes_be(&v.to_be_bytes())
}

/// Quantises `values` exactly as Fed-BioMed v4 does: `trunc(min(TR − 1, ((clamp(x, −c, c) + c)·TR)
/// / (2c)))` in float64, in that order. Refuses non-finite values, naming the first one.
pub fn quantize(values: &[f64], clipping_range: u32) -> Result<Vec<u32>> {
    let c = f64::from(clipping_range);
    let tr = f64::from(TARGET_RANGE);
    values
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if !x.is_finite() {
                return Err(Error::invalid(format!(
                    "parameter {i} is {x}: only finite numbers can be aggregated"
                )));
            }
            let clipped = x.clamp(-c, c);
            let q = ((clipped + c) * tr / (2.0 * c)).min(tr - 1.0);
            Ok(q.trunc() as u32)
        })
        .collect()
}

/// What [`quantize`] clips: how many finite values lie outside `[−c, c]`, and the largest
/// magnitude among them (so that a caller can say so; clipping itself is Fed-BioMed's rule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clipped {
    /// Values outside `[−c, c]`.
    pub count: usize,
    /// The largest `|x|` among them.
    pub largest_magnitude: f64,
}

/// The values of `values` that [`quantize`] would clip with `clipping_range`, if any.
pub fn clipped(values: &[f64], clipping_range: u32) -> Option<Clipped> {
    let c = f64::from(clipping_range);
    let outside = values.iter().filter(|x| x.is_finite() && x.abs() > c);
    let (count, largest_magnitude) = outside.fold((0, 0.0f64), |(n, m), x| (n + 1, m.max(x.abs())));
    (count > 0).then_some(Clipped {
        count,
        largest_magnitude,
    })
}

/// The inverse of [`quantize`] for averaged values: `((q / TR)·(2c)) − c` in float64, in that order.
pub fn reverse_quantize(values: &[f64], clipping_range: u32) -> Vec<f64> {
    let c = f64::from(clipping_range);
    let tr = f64::from(TARGET_RANGE);
    values.iter().map(|&q| ((q / tr) * (2.0 * c)) - c).collect()
}

/// Bits per packed element for a federation of `nodes` nodes: `14 + ceil(log2(nodes + 1))`, room
/// for the sum of every node's value.
pub fn element_bits(nodes: usize) -> u32 {
    VALUE_BITS + (usize::BITS - nodes.leading_zeros())
}

/// Elements per plaintext: `floor(1024 / element_bits(nodes))`.
pub fn elements_per_plaintext(nodes: usize) -> usize {
    (PLAINTEXT_BITS / element_bits(nodes)) as usize
}

/// Packs quantised values into plaintexts, first value in the lowest bits.
pub fn pack(values: &[u32], nodes: usize) -> Vec<BigUint> {
    let values: Vec<u64> = values.iter().map(|&v| u64::from(v)).collect();
    pack_bits(&values, element_bits(nodes), elements_per_plaintext(nodes))
}

/// Packs `values` in elements of `e` bits, `per` to a plaintext, first value in the lowest bits.
pub(crate) fn pack_bits(values: &[u64], e: u32, per: usize) -> Vec<BigUint> {
    values
        .chunks(per)
        .map(|chunk| {
            chunk
                .iter()
                .rev()
                .fold(BigUint::zero(), |acc, &q| (acc << e) | BigUint::from(q))
        })
        .collect()
}

/// Unpacks `count` element sums from plaintexts made by [`pack`] for `nodes` nodes.
pub fn unpack(plaintexts: &[BigUint], nodes: usize, count: usize) -> Vec<u64> {
    unpack_bits(
        plaintexts,
        element_bits(nodes),
        elements_per_plaintext(nodes),
        count,
    )
}

/// Unpacks `count` elements of `e` bits, `per` to a plaintext.
pub(crate) fn unpack_bits(plaintexts: &[BigUint], e: u32, per: usize, count: usize) -> Vec<u64> {
    let mask = (BigUint::one() << e) - 1u32;
    let mut out = Vec::with_capacity(count);
    for p in plaintexts {
        let mut x = p.clone();
        for _ in 0..per {
            if out.len() == count {
                break;
            }
            let v = &x & &mask;
            out.push(v.iter_u64_digits().next().unwrap_or(0));
            x >>= e;
        }
    }
    out
}

/// The tag of batch `k` in training round `round`: `(k << 512) | round`.
pub fn tau(batch: usize, round: u64) -> BigUint {
    (BigUint::from(batch) << 512u32) | BigUint::from(round)
}

/// Fed-BioMed's hash `H(τ)`: SHA-256 of `τ` as 1024 big-endian bytes followed by the byte 1, read
/// as a big-endian integer; while it shares a factor with `N²`, SHA-256 of `τ ‖ 2`, `τ ‖ 3`, … is
/// appended (in practice never).
pub fn hash(t: &BigUint, biprime: &Biprime) -> BigUint {
    let bytes = t.to_bytes_be();
    let mut block = vec![0u8; TAU_BYTES.saturating_sub(bytes.len())];
    block.extend_from_slice(&bytes);
    let mut digest = Vec::new();
    for counter in 1u8..=u8::MAX {
        let mut h = Sha256::new();
        h.update(&block);
        h.update([counter]);
        digest.extend_from_slice(&h.finalize());
        let v = BigUint::from_bytes_be(&digest);
        if v.gcd(&biprime.n2).is_one() {
            return v;
        }
    }
    unreachable!("a hash sharing a factor with N² 255 times in a row")
}

/// `H(τ_k)^key` mod `N²` for the batches `0..batches` of `round`, in time independent of the key's
/// value: `H^|key|` for each batch on all cores, then, for a negative key (the server key), one
/// constant-time inversion for all batches (Montgomery's trick: invert the product, then peel
/// each inverse off with two multiplications), instead of one inversion per batch.
fn masks(
    batches: usize,
    round: u64,
    key: &SecretKey,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<MontyForm<LIMBS>>> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    // The exponent goes from the key's zeroizing bytes to a secure, constant-time-flagged OpenSSL
    // integer, with no num-bigint copy in between.
    let magnitude = key.magnitude_be();
    if magnitude.len() > U2048::BYTES {
        return Err(Error::invalid(format!(
            "a {}-byte key is too long for the aggregation modulus",
            magnitude.len()
        )));
    }
    let exponent = secret_pow::SecretExponent::new(magnitude)?;
    let powered = crate::parallel::map_indexed(batches, |k| {
        let h = hash(&tau(k, round), biprime);
        let bytes = secret_pow::pow(&h.to_bytes_be(), &exponent, &biprime.modulus)?;
        let mut buf = Zeroizing::new([0u8; U2048::BYTES]);
        buf[U2048::BYTES - bytes.len()..].copy_from_slice(&bytes);
        let p = MontyForm::new(&U2048::from_be_slice(&buf[..]), biprime.params);
        if let Some(report) = progress {
            report(
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
                batches,
            );
        }
        Ok(p)
    })?;
    if !key.is_negative() || powered.is_empty() {
        return Ok(powered);
    }
    // prefix[k] = P_0 · … · P_k
    let mut prefix = Vec::with_capacity(powered.len());
    let mut acc = MontyForm::one(biprime.params);
    for p in &powered {
        acc *= p;
        prefix.push(acc);
    }
    let mut inverse = acc.invert().into_option().ok_or_else(|| {
        Error::Internal("H(τ) is not invertible modulo N² (impossible for a biprime)".into())
    })?;
    // inverse = (P_0 · … · P_k)⁻¹ at step k: P_k⁻¹ = inverse · prefix[k − 1].
    let mut out = vec![MontyForm::one(biprime.params); powered.len()];
    for k in (0..powered.len()).rev() {
        out[k] = if k == 0 {
            inverse
        } else {
            inverse * prefix[k - 1]
        };
        inverse *= powered[k];
    }
    Ok(out)
}

/// Called with (ciphertexts done, ciphertexts in all) as the exponentiations finish, from any
/// worker thread: for a progress display.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

/// Encrypts quantised `values` for training round `round` with a node's key, for a federation of
/// `nodes` nodes: one ciphertext per plaintext of [`pack`].
pub fn encrypt_with_progress(
    values: &[u32],
    key: &SecretKey,
    round: u64,
    nodes: usize,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<BigUint>> {
    if nodes == 0 {
        return Err(Error::invalid("a federation has at least one node"));
    }
    if let Some(bad) = values.iter().find(|&&q| q >= TARGET_RANGE) {
        return Err(Error::invalid(format!(
            "quantised value {bad} is out of range (at most {})",
            TARGET_RANGE - 1
        )));
    }
    let plaintexts = pack(values, nodes);
    encrypt_plaintexts(&plaintexts, key, round, biprime, progress)
}

/// `c_k = (N·x_k + 1) · H(τ_k)^key mod N²` for every plaintext `x_k` of round `round`.
pub(crate) fn encrypt_plaintexts(
    plaintexts: &[BigUint],
    key: &SecretKey,
    round: u64,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<BigUint>> {
    let masks = masks(plaintexts.len(), round, key, biprime, progress)?;
    crate::parallel::map_indexed(plaintexts.len(), |k| {
        let m = (&biprime.n * &plaintexts[k] + 1u32) % &biprime.n2;
        let c = MontyForm::new(&to_fixed(&m)?, biprime.params) * masks[k];
        Ok(from_fixed(&c.retrieve()))
    })
}

/// Multiplies the nodes' ciphertexts element-wise modulo `N²`. Every node must send as many
/// ciphertexts.
pub fn aggregate(ciphertexts: &[Vec<BigUint>], biprime: &Biprime) -> Result<Vec<BigUint>> {
    let first = ciphertexts
        .first()
        .ok_or_else(|| Error::invalid("no ciphertexts to aggregate"))?;
    if let Some((i, c)) = ciphertexts
        .iter()
        .enumerate()
        .find(|(_, c)| c.len() != first.len())
    {
        return Err(Error::invalid(format!(
            "node {i} sent {} ciphertexts, node 0 sent {}: they encrypted vectors of different lengths",
            c.len(),
            first.len()
        )));
    }
    for (i, node) in ciphertexts.iter().enumerate() {
        for (k, c) in node.iter().enumerate() {
            biprime
                .check_ciphertext(c)
                .map_err(|why| Error::invalid(format!("node {i}'s ciphertext {k} {why}")))?;
        }
    }
    crate::parallel::map_indexed(first.len(), |k| {
        Ok(ciphertexts
            .iter()
            .fold(BigUint::one(), |acc, c| (acc * &c[k]) % &biprime.n2))
    })
}

/// Decrypts aggregated ciphertexts of round `round` with the server key: the `count` sums of the
/// `nodes` nodes' quantised values.
pub fn decrypt_with_progress(
    aggregated: &[BigUint],
    server_key: &SecretKey,
    round: u64,
    nodes: usize,
    count: usize,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<u64>> {
    check_count(
        aggregated.len(),
        elements_per_plaintext(nodes),
        nodes,
        count,
    )?;
    let plaintexts = decrypt_plaintexts(aggregated, server_key, round, biprime, progress)?;
    check_unused_bits(&plaintexts, round, nodes, count)?;
    let sums = unpack(&plaintexts, nodes, count);
    check_sums(&sums, round, nodes)?;
    Ok(sums)
}

/// Refuses asking `ciphertexts` aggregated ciphertexts of `per` values each for more than they
/// hold.
pub(crate) fn check_count(
    ciphertexts: usize,
    per: usize,
    nodes: usize,
    count: usize,
) -> Result<()> {
    if count > ciphertexts * per {
        return Err(Error::invalid(format!(
            "{ciphertexts} ciphertexts hold at most {} values for {nodes} nodes, {count} were asked for",
            ciphertexts * per
        )));
    }
    Ok(())
}

/// `X_k` from `V_k = C_k · H(τ_k)^{sk0} mod N² = 1 + N·X_k` for every aggregated ciphertext.
pub(crate) fn decrypt_plaintexts(
    aggregated: &[BigUint],
    server_key: &SecretKey,
    round: u64,
    biprime: &Biprime,
    progress: Option<Progress<'_>>,
) -> Result<Vec<BigUint>> {
    let masks = masks(aggregated.len(), round, server_key, biprime, progress)?;
    crate::parallel::map_indexed(aggregated.len(), |k| {
        let c = MontyForm::new(&to_fixed(&(&aggregated[k] % &biprime.n2))?, biprime.params);
        let v = from_fixed(&(c * masks[k]).retrieve());
        // V = 1 + N·X mod N²: X = (V − 1) / N.
        Ok(((v + &biprime.n2 - 1u32) % &biprime.n2 / &biprime.n) % &biprime.n)
    })
}

/// The refusal of a round whose decrypted plaintexts no honest round gives
/// ([`Error::Verification`]). A ciphertext altered, of another round or session, or encrypted
/// with a key that the server key does not cancel decrypts to noise, which [`check_unused_bits`]
/// and [`check_sums`] refuse with overwhelming probability (each slot alone passes with
/// probability below 0.61, and a plaintext holds up to 68 slots, or zero bits above its last
/// one); the averages of sums that pass are within `[−c, c]` by construction.
pub(crate) fn not_an_average(round: u64, why: String) -> Error {
    Error::verification(format!(
        "round {round} does not decrypt to an average: {why}"
    ))
    .with_hint("a ciphertext file was altered, is of another round or session, or a node encrypted with a key other than the one negotiated: no result is given; collect the round's files again from every node")
}

/// Refuses a plaintext with a bit set above the last slot that holds one of the `count` values.
fn check_unused_bits(plaintexts: &[BigUint], round: u64, nodes: usize, count: usize) -> Result<()> {
    check_unused_bits_of(
        plaintexts,
        round,
        element_bits(nodes),
        elements_per_plaintext(nodes),
        count,
    )
}

/// [`check_unused_bits`] for elements of `e` bits, `per` to a plaintext.
pub(crate) fn check_unused_bits_of(
    plaintexts: &[BigUint],
    round: u64,
    e: u32,
    per: usize,
    count: usize,
) -> Result<()> {
    let e = u64::from(e);
    for (k, p) in plaintexts.iter().enumerate() {
        let used_bits = per.min(count.saturating_sub(k * per)) as u64 * e;
        if p.bits() > used_bits {
            return Err(not_an_average(
                round,
                format!(
                    "plaintext {k} has bits set above its last value ({used_bits} bits used, bit {} set)",
                    p.bits() - 1
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a sum above the largest that `nodes` nodes can make, `nodes · (TR − 1)`.
fn check_sums(sums: &[u64], round: u64, nodes: usize) -> Result<()> {
    let max_sum = nodes as u64 * u64::from(TARGET_RANGE - 1);
    match sums.iter().position(|&v| v > max_sum) {
        Some(i) => Err(not_an_average(
            round,
            format!(
                "value {i} sums to {}, above the largest sum {max_sum} of {nodes} nodes",
                sums[i]
            ),
        )),
        None => Ok(()),
    }
}

/// [`encrypt_with_progress`] without a progress display.
pub fn encrypt(
    values: &[u32],
    key: &SecretKey,
    round: u64,
    nodes: usize,
    biprime: &Biprime,
) -> Result<Vec<BigUint>> {
    encrypt_with_progress(values, key, round, nodes, biprime, None)
}

/// [`decrypt_with_progress`] without a progress display.
pub fn decrypt(
    aggregated: &[BigUint],
    server_key: &SecretKey,
    round: u64,
    nodes: usize,
    count: usize,
    biprime: &Biprime,
) -> Result<Vec<u64>> {
    decrypt_with_progress(aggregated, server_key, round, nodes, count, biprime, None)
}

/// The average of `nodes` nodes' values from their quantised sums, back in the original scale.
pub fn average(sums: &[u64], nodes: usize, clipping_range: u32) -> Vec<f64> {
    let means: Vec<f64> = sums.iter().map(|&s| s as f64 / nodes as f64).collect();
    reverse_quantize(&means, clipping_range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &BigUint) -> String {
        format!("{v:064x}")
    }

    fn key(d: &str) -> SecretKey {
        SecretKey::from_decimal(d).unwrap()
    }

    fn sha_of_decimal(v: &BigUint) -> String {
        ::hex::encode(Sha256::digest(v.to_str_radix(10).as_bytes()))
    }

    #[test]
    fn hash_vectors() {
        let b = Biprime::default_biprime0();
        assert_eq!(
            hex(&hash(&BigUint::zero(), &b)),
            "98a48fd8c9d7dea4d99ead0be0ec707ba2909c2d9be4d69cb4dfd377395de609"
        );
        assert_eq!(
            hex(&hash(&BigUint::one(), &b)),
            "b1104d3e2c124baedd8628f4b91a9051171eb125c27493120e4b7b65481662fa"
        );
        assert_eq!(
            hex(&hash(&BigUint::from(2u32), &b)),
            "c0aed69817f95379f3b1888997540d86031b94fd8d1a357a7c31ae9cbd54b44c"
        );
        assert_eq!(
            hex(&hash(&tau(1, 1), &b)),
            "514756a21fc7549c17801d596089b99fea4e088919c3c48e031c3223ed66cdf7"
        );
    }

    #[test]
    fn quantisation_vectors() {
        assert_eq!(
            quantize(&[-3.5, -3.0, -0.0006, 0.0, 0.5, 2.9994, 3.0, 4.0], 3).unwrap(),
            vec![0, 0, 4999, 5000, 5833, 9998, 9999, 9999]
        );
        assert_eq!(
            reverse_quantize(&[0.0, 1.0, 4999.0, 5000.0, 5833.0, 9998.0, 9999.0], 3),
            vec![
                -3.0,
                -2.9994,
                -0.0005999999999999339,
                0.0,
                0.49980000000000047,
                2.9988,
                2.9993999999999996
            ]
        );
        let e = quantize(&[0.0, f64::NAN], 3).unwrap_err();
        assert!(e.to_string().contains("parameter 1 is NaN"), "{e}");
        assert!(quantize(&[f64::INFINITY], 3).is_err());
    }

    #[test]
    fn element_sizes_match_fedbiomed() {
        for (n, e, per) in [
            (1, 15, 68),
            (2, 16, 64),
            (3, 16, 64),
            (4, 17, 60),
            (7, 17, 60),
            (8, 18, 56),
            (15, 18, 56),
            (16, 19, 53),
            (31, 19, 53),
            (32, 20, 51),
        ] {
            assert_eq!(
                (element_bits(n), elements_per_plaintext(n)),
                (e, per),
                "n={n}"
            );
        }
    }

    #[test]
    fn end_to_end_vector_of_fedbiomed_v4() {
        let b = Biprime::default_biprime0();
        let (sk1, sk2) = (key("12345678901234567890"), key("98765432109876543210"));
        let q1 = quantize(&[0.5, -0.25, 1.0], 3).unwrap();
        let q2 = quantize(&[0.1, 0.2, -3.0], 3).unwrap();
        assert_eq!(q1, vec![5833, 4583, 6666]);
        assert_eq!(q2, vec![5166, 5333, 0]);
        let c1 = encrypt(&q1, &sk1, 1, 2, &b).unwrap();
        let c2 = encrypt(&q2, &sk2, 1, 2, &b).unwrap();
        assert_eq!(c1.len(), 1);
        assert_eq!(c1[0].bits(), 2044);
        assert_eq!(
            sha_of_decimal(&c1[0]),
            "9a08aeb32b9f9993e31a8549b835dd509df6386a84e0900f7cae9735cec6bcb3"
        );
        assert_eq!(
            sha_of_decimal(&c2[0]),
            "e201fd4b8353eae85fbe3ca729a790cf4c50ec826e645b4ed496c4da2bb7bdf0"
        );
        let sk0 = key("-111111111011111111100");
        let agg = aggregate(&[c1, c2], &b).unwrap();
        let sums = decrypt(&agg, &sk0, 1, 2, 3, &b).unwrap();
        assert_eq!(sums, vec![10999, 9916, 6666]);
        assert_eq!(
            average(&sums, 2, 3),
            vec![0.2997000000000005, -0.02519999999999989, -1.0002]
        );
        // A wrong round or key gives noise, which is refused, never returned as sums.
        for (round, key) in [(2, sk0.clone()), (1, self::key("-111111111011111111101"))] {
            let e = decrypt(&agg, &key, round, 2, 3, &b).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Verification, "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("round {round} does not decrypt")),
                "{e}"
            );
        }
    }

    #[test]
    fn trailing_zero_values_are_kept() {
        let b = Biprime::default_biprime0();
        let (sk1, sk2) = (key("5"), key("7"));
        let sk0 = key("-12");
        let q = vec![1, 0, 0];
        let agg = aggregate(
            &[
                encrypt(&q, &sk1, 3, 2, &b).unwrap(),
                encrypt(&q, &sk2, 3, 2, &b).unwrap(),
            ],
            &b,
        )
        .unwrap();
        assert_eq!(decrypt(&agg, &sk0, 3, 2, 3, &b).unwrap(), vec![2, 0, 0]);
    }

    #[test]
    fn fedbiomed_biprime_json() {
        let text = format!(
            "{{\"secagg_id\": \"default_biprime0\", \"biprime\": {DEFAULT_BIPRIME0}, \"max_keysize\": 2048}}"
        );
        let b = Biprime::from_fedbiomed_json(&text).unwrap();
        assert_eq!(b.name, "default_biprime0");
        assert_eq!(b.n(), Biprime::default_biprime0().n());
        assert!(Biprime::from_fedbiomed_json("{\"biprime\": 12}").is_err());
        assert!(Biprime::from_fedbiomed_json("not json").is_err());
    }

    mod prop {
        use super::*;
        use num_bigint::RandBigInt;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(12))]
            #[test]
            fn decrypting_the_aggregate_gives_the_quantised_sum(
                nodes in 1usize..=32,
                len in 1usize..=70,
                seed in any::<u64>(),
            ) {
                use rand::{Rng, SeedableRng};
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let b = Biprime::default_biprime0();
                let mut sum_keys = BigUint::zero();
                let mut expected = vec![0u64; len];
                let mut cts = Vec::new();
                for _ in 0..nodes {
                    let k = rng.gen_biguint(2040);
                    sum_keys += &k;
                    let values: Vec<f64> = (0..len).map(|_| rng.gen_range(-4.0..4.0)).collect();
                    let q = quantize(&values, 3).unwrap();
                    for (e, &v) in expected.iter_mut().zip(&q) {
                        *e += u64::from(v);
                    }
                    cts.push(encrypt(&q, &SecretKey::from_biguint(&k), 9, nodes, &b).unwrap());
                }
                let sk0 = SecretKey::from_bigint(&-num_bigint::BigInt::from(sum_keys));
                let agg = aggregate(&cts, &b).unwrap();
                prop_assert_eq!(decrypt(&agg, &sk0, 9, nodes, len, &b).unwrap(), expected);
            }
        }
    }
}
