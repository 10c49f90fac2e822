//! Prime-field arithmetic and Shamir secret sharing for the native key negotiation.
//!
//! The negotiation (see [`crate::engine`]) works in the field `Z/pZ` for a large prime `p`,
//! by default Fed-BioMed's 2050-bit prime ([`FEDBIOMED_PRIME_DECIMAL`]). Each node shares a key
//! `sk_i ∈ [0, 2^k)` with a random polynomial of degree `t`; the researcher interpolates the sum of
//! the keys at 0. Because `p > (n−1)·2^k` (checked by [`check_bound`]) the sum never wraps
//! around `p`, so the field element *is* the integer sum and the researcher's key is its
//! negation over the integers ([`lift_server_key`]).
//!
//! Evaluation points: share `j` is `f(j + 1)`, i.e. party `j` (0 = researcher) owns the point
//! `x = j + 1`; 0 is never a share point because `f(0)` is the secret.
//!
//! Secrets live in [`BigUint`], which does not zeroize its heap memory; [`wipe`] clears a value
//! in place before it is dropped, which is the best num-bigint allows (temporaries created inside
//! num-bigint's arithmetic are freed without being cleared).

use std::sync::{Mutex, OnceLock};

use num_bigint::{BigInt, BigUint, RandBigInt, Sign};
use num_integer::Integer;
use num_traits::{One, Zero};
use rand::{CryptoRng, RngCore};

use crate::error::{Error, Result};

/// Fed-BioMed's default secure-aggregation prime: 2050 bits, 618 decimal digits.
///
/// With [`DEFAULT_KEY_BITS`] = 2040 it allows up to 975 nodes (see `max_nodes`).
pub const FEDBIOMED_PRIME_DECIMAL: &str = "123138538989760918145912706373991678791735745390046229548850740764370544277374142497222078896994062717843805797864357495119378281326173703490481220040588642444588151409865659259979862133888167310737990183467265845348172604470196555592488015185331657153581044199926649837421658384794175910189308025225843370841016894092268276621720745698713727112598235461607056433686768623441119666676430366377651135864786366095851599883436171157557788226539721735986189400561355505735009036920858762732568833712305375016701768388879819267725923148490513799546980507717381629426700840207978158792333663397646354487847846520814264565827";

/// Default key length in bits (Fed-BioMed's choice): keys are uniform in `[0, 2^2040)`.
pub const DEFAULT_KEY_BITS: u32 = 2040;

/// Number of Miller–Rabin rounds used by [`is_probable_prime`] (error ≤ 4^-40 per call).
pub const MILLER_RABIN_ROUNDS: usize = 40;

/// Fed-BioMed's prime as a number (see [`FEDBIOMED_PRIME_DECIMAL`]).
pub fn fedbiomed_prime() -> BigUint {
    static PRIME: OnceLock<BigUint> = OnceLock::new();
    PRIME
        .get_or_init(|| {
            FEDBIOMED_PRIME_DECIMAL
                .parse()
                .expect("the Fed-BioMed prime constant is a valid decimal number")
        })
        .clone()
}

/// Small primes used to reject most composites before Miller–Rabin (cheap, and it also handles
/// tiny inputs exactly).
const SMALL_PRIMES: [u32; 54] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173, 179, 181, 191, 193,
    197, 199, 211, 223, 227, 229, 233, 239, 241, 251,
];

/// Miller–Rabin probabilistic primality test with [`MILLER_RABIN_ROUNDS`] random bases drawn
/// from the OS random generator, after trial division by the primes below 256.
///
/// Exact for `n < 65 536` (trial division); for larger `n` a composite passes with probability at
/// most 4^-40. Used for user-supplied primes; the Fed-BioMed prime is recognised without
/// re-testing (its primality is checked by this module's tests), because 40 rounds on 2050 bits
/// take a noticeable fraction of a second and every party of a session would repeat them.
pub fn is_probable_prime(n: &BigUint) -> bool {
    if *n == fedbiomed_prime() {
        return true;
    }
    // Cache user primes already accepted in this process: a demo runs many parties in one process.
    static ACCEPTED: OnceLock<Mutex<Vec<BigUint>>> = OnceLock::new();
    let cache = ACCEPTED.get_or_init(|| Mutex::new(Vec::new()));
    if cache
        .lock()
        .map(|c| c.iter().any(|p| p == n))
        .unwrap_or(false)
    {
        return true;
    }
    let prime = miller_rabin(n, MILLER_RABIN_ROUNDS, &mut rand::rngs::OsRng);
    if prime {
        if let Ok(mut c) = cache.lock() {
            if c.len() < 16 {
                c.push(n.clone());
            }
        }
    }
    prime
}

/// Miller–Rabin with `rounds` random bases from `rng` (no cache, no fast path); see
/// [`is_probable_prime`].
pub fn miller_rabin<R: RngCore + ?Sized>(n: &BigUint, rounds: usize, rng: &mut R) -> bool {
    let two = BigUint::from(2u32);
    if *n < two {
        return false;
    }
    for &sp in SMALL_PRIMES.iter() {
        let sp = BigUint::from(sp);
        if *n == sp {
            return true;
        }
        if (n % &sp).is_zero() {
            return false;
        }
    }
    // n is odd and > 251 here. Write n − 1 = d · 2^s with d odd.
    let one = BigUint::one();
    let n_minus_1 = n - &one;
    let s = n_minus_1
        .trailing_zeros()
        .expect("n − 1 is non-zero for n > 251");
    let d = &n_minus_1 >> s;
    let n_minus_2 = n - &two;
    'rounds: for _ in 0..rounds {
        // Base uniform in [2, n − 2).
        let a = rng.gen_biguint_range(&two, &n_minus_2);
        let mut x = a.modpow(&d, n);
        if x == one || x == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n_minus_1 {
                continue 'rounds;
            }
            if x == one {
                return false;
            }
        }
        return false;
    }
    true
}

/// The largest number of nodes (key holders) for which `p > nodes · 2^key_bits`, i.e. for which
/// the sum of `nodes` keys of `key_bits` bits cannot wrap around `prime`.
///
/// A session has `nodes + 1` parties (the researcher holds no key). Returns 0 when even a single
/// key does not fit.
pub fn max_nodes(prime: &BigUint, key_bits: u32) -> BigUint {
    if prime.is_zero() {
        return BigUint::zero();
    }
    // Largest m with m · 2^k ≤ p − 1, i.e. m · 2^k < p.
    (prime - 1u32) >> key_bits
}

/// Smallest key length a session may use.
///
/// A node masks its Joye–Libert ciphertexts with `H(τ)^sk_i`; generic discrete-logarithm attacks on
/// an exponent of `k` bits (Pollard's kangaroo) cost about `2^(k/2)` group operations, so
/// `k ≥ 256` keeps the key at the 128-bit level. Fed-BioMed uses 2040-bit keys (the default here);
/// shorter keys only make sense for experiments, and nothing below this floor is accepted.
pub const MIN_KEY_BITS: u32 = 256;

/// Checks a key length before anything is allocated for it: at least [`MIN_KEY_BITS`], and less
/// than the prime's bit length (the node keys must fit below the prime with room for their sum;
/// [`check_bound`] then checks the exact bound for the session's node count).
pub fn check_key_bits(key_bits: u32, prime: &BigUint) -> Result<()> {
    if key_bits < MIN_KEY_BITS {
        return Err(Error::invalid(format!(
            "a key length of {key_bits} bits is too short: at least {MIN_KEY_BITS} bits are needed to keep the aggregation masks secure"
        ))
        .with_hint(format!(
            "leave --key-bits out to use the default of {DEFAULT_KEY_BITS} bits (what Fed-BioMed uses), or give a value from {MIN_KEY_BITS} to {}",
            prime.bits().saturating_sub(2)
        )));
    }
    if u64::from(key_bits) >= prime.bits() {
        return Err(Error::invalid(format!(
            "a key length of {key_bits} bits does not fit the {}-bit prime: keys and their sum must stay below the prime",
            prime.bits()
        ))
        .with_hint(format!(
            "give --key-bits from {MIN_KEY_BITS} to {} (the default is {DEFAULT_KEY_BITS})",
            prime.bits().saturating_sub(2)
        )));
    }
    Ok(())
}

/// Checks `p > (n − 1) · 2^key_bits` for a session of `n` parties (`n − 1` nodes each holding a key
/// in `[0, 2^key_bits)`), so that the interpolated sum of the keys is their exact integer sum.
///
/// The error is [`Error::InvalidInput`] and says the maximum node count for this prime and key
/// size.
pub fn check_bound(prime: &BigUint, key_bits: u32, n_parties: usize) -> Result<()> {
    let nodes = n_parties.saturating_sub(1);
    let need = BigUint::from(nodes) << key_bits;
    if *prime > need {
        return Ok(());
    }
    let max = max_nodes(prime, key_bits);
    Err(Error::invalid(format!(
        "the prime ({} bits) is too small for {nodes} nodes with {key_bits}-bit keys: it must exceed (nodes)·2^{key_bits}, so at most {max} nodes fit",
        prime.bits()
    ))
    .with_hint("use fewer nodes, a shorter key (--key-bits) or a larger prime (the default Fed-BioMed prime allows 975 nodes with 2040-bit keys)"))
}

/// The negotiation threshold for `n` parties: `t = ⌊(n − 1) / 2⌋`, the polynomial degree that an
/// honest majority tolerates (any `t` parties learn nothing, any `t + 1` reconstruct).
pub fn threshold(n_parties: usize) -> usize {
    n_parties.saturating_sub(1) / 2
}

/// Clears a secret [`BigUint`] in place, digit by digit, before it is dropped.
///
/// num-bigint offers no zeroize hook; `assign_from_slice` empties the digit vector and writes the
/// zeros into its existing allocation (as many digits as the value had) before normalising it to
/// 0. Copies made by earlier arithmetic inside num-bigint are out of reach. (It used to clear bit
/// by bit, 2,000 calls per key-sized value, 2 % of an agent's time per session.)
pub fn wipe(x: &mut BigUint) {
    let zeros = vec![0u32; x.bits().div_ceil(32) as usize];
    x.assign_from_slice(&zeros);
}

/// The prime field `Z/pZ`. Elements are [`BigUint`] values in `[0, p)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimeField {
    p: BigUint,
}

impl PrimeField {
    /// The field modulo `p`. Refuses `p < 3` and even `p`; primality itself is the caller's
    /// business (see [`is_probable_prime`]) because testing it is costly.
    pub fn new(p: BigUint) -> Result<Self> {
        if p < BigUint::from(3u32) || p.is_even() {
            return Err(Error::invalid(format!(
                "the field modulus {p} is not an odd prime"
            )));
        }
        Ok(PrimeField { p })
    }

    /// The modulus `p`.
    #[cfg(test)] // the crate's code passes the prime itself
    pub fn modulus(&self) -> &BigUint {
        &self.p
    }

    /// Length in bytes of a canonical big-endian encoding of an element (the length of `p`).
    pub fn element_len(&self) -> usize {
        self.p.bits().div_ceil(8) as usize
    }

    /// `a mod p`.
    pub fn reduce(&self, a: &BigUint) -> BigUint {
        a % &self.p
    }

    /// `a + b mod p` (inputs in `[0, p)`).
    pub fn add(&self, a: &BigUint, b: &BigUint) -> BigUint {
        let s = a + b;
        if s >= self.p {
            s - &self.p
        } else {
            s
        }
    }

    /// `a − b mod p` (inputs in `[0, p)`).
    pub fn sub(&self, a: &BigUint, b: &BigUint) -> BigUint {
        if a >= b {
            a - b
        } else {
            &self.p - (b - a)
        }
    }

    /// `−a mod p`.
    #[cfg(test)] // only the tests need it
    pub fn neg(&self, a: &BigUint) -> BigUint {
        if a.is_zero() {
            BigUint::zero()
        } else {
            &self.p - a
        }
    }

    /// `a · b mod p`.
    pub fn mul(&self, a: &BigUint, b: &BigUint) -> BigUint {
        (a * b) % &self.p
    }

    /// `a^-1 mod p`, or an error for `a ≡ 0`.
    pub fn inverse(&self, a: &BigUint) -> Result<BigUint> {
        let a = self.reduce(a);
        a.modinv(&self.p)
            .ok_or_else(|| Error::Internal("inverse of zero in the prime field".into()))
    }

    /// A uniform element of `[0, p)`.
    pub fn random<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> BigUint {
        rng.gen_biguint_below(&self.p)
    }

    /// Encodes `a` (in `[0, p)`) big-endian on exactly [`Self::element_len`] bytes, so that the
    /// length of a message does not depend on the value.
    pub fn to_fixed_bytes(&self, a: &BigUint) -> zeroize::Zeroizing<Vec<u8>> {
        let len = self.element_len();
        let mut out = zeroize::Zeroizing::new(vec![0u8; len]);
        let raw = zeroize::Zeroizing::new(a.to_bytes_be());
        out[len - raw.len()..].copy_from_slice(&raw);
        out
    }

    /// Decodes an element written by [`Self::to_fixed_bytes`]; refuses a wrong length or a value
    /// `≥ p` (a peer that sends one is broken or malicious).
    pub fn element_from_bytes(&self, bytes: &[u8]) -> Result<BigUint> {
        if bytes.len() != self.element_len() {
            return Err(Error::invalid(format!(
                "field element has {} bytes, expected {}",
                bytes.len(),
                self.element_len()
            )));
        }
        let v = BigUint::from_bytes_be(bytes);
        if v >= self.p {
            return Err(Error::invalid("field element is not below the prime"));
        }
        Ok(v)
    }

    /// Evaluates the polynomial with `coefficients` (constant term first) at `x` (Horner).
    pub fn eval_poly(&self, coefficients: &[BigUint], x: &BigUint) -> BigUint {
        let mut acc = BigUint::zero();
        for c in coefficients.iter().rev() {
            acc = self.add(&self.mul(&acc, x), c);
        }
        acc
    }

    /// Shamir-shares `secret` (in `[0, p)`) among `n` parties with a uniformly random polynomial
    /// `f` of degree `t` and `f(0) = secret`: share `j` (0-based) is `f(j + 1)`.
    ///
    /// Requires `t < n` (otherwise the secret could never be reconstructed) and `n < p`.
    pub fn share<R: RngCore + CryptoRng + ?Sized>(
        &self,
        secret: &BigUint,
        t: usize,
        n: usize,
        rng: &mut R,
    ) -> Result<Vec<BigUint>> {
        if t >= n {
            return Err(Error::invalid(format!(
                "cannot share among {n} parties with threshold {t}: the degree must be below the number of parties"
            )));
        }
        if *secret >= self.p {
            return Err(Error::invalid("the secret to share is not below the prime"));
        }
        if BigUint::from(n) >= self.p {
            return Err(Error::invalid(format!(
                "{n} parties need more evaluation points than the field has"
            )));
        }
        let mut coefficients = Vec::with_capacity(t + 1);
        coefficients.push(secret.clone());
        for _ in 0..t {
            coefficients.push(self.random(rng));
        }
        let shares = (1..=n)
            .map(|x| self.eval_poly(&coefficients, &BigUint::from(x)))
            .collect();
        for c in coefficients.iter_mut() {
            wipe(c);
        }
        Ok(shares)
    }

    /// Inverses of the Lagrange denominators `Π_{m≠j} (x_j − x_m)` of the distinct points `xs`;
    /// they do not depend on where the polynomial is evaluated, so they are computed once.
    fn inverse_denominators(&self, xs: &[BigUint]) -> Result<Vec<BigUint>> {
        let mut inv = Vec::with_capacity(xs.len());
        for (j, xj) in xs.iter().enumerate() {
            let mut den = BigUint::one();
            for (m, xm) in xs.iter().enumerate() {
                if m == j {
                    continue;
                }
                let d = self.sub(xj, xm);
                if d.is_zero() {
                    return Err(Error::invalid(
                        "interpolation points are not distinct modulo the prime",
                    ));
                }
                den = self.mul(&den, &d);
            }
            inv.push(self.inverse(&den)?);
        }
        Ok(inv)
    }

    /// `Σ_j y_j · inv_den_j · Π_{m≠j} (x0 − x_m)`: the Lagrange form evaluated at `x0`.
    fn lagrange_eval(
        &self,
        xs: &[BigUint],
        ys: &[&BigUint],
        inv_den: &[BigUint],
        x0: &BigUint,
    ) -> BigUint {
        let x0 = self.reduce(x0);
        let mut acc = BigUint::zero();
        for (j, (y, w)) in ys.iter().zip(inv_den).enumerate() {
            let mut term = self.mul(&self.reduce(y), w);
            for (m, xm) in xs.iter().enumerate() {
                if m != j {
                    term = self.mul(&term, &self.sub(&x0, xm));
                }
            }
            acc = self.add(&acc, &term);
        }
        acc
    }

    /// Interpolates the polynomial through `points` (distinct `x` values, reduced mod p) and
    /// evaluates it at `x0`. With `t + 1` points of a degree-`t` polynomial this is exact.
    pub fn interpolate_at(&self, points: &[(BigUint, BigUint)], x0: &BigUint) -> Result<BigUint> {
        if points.is_empty() {
            return Err(Error::invalid("interpolation needs at least one point"));
        }
        let xs: Vec<BigUint> = points.iter().map(|(x, _)| self.reduce(x)).collect();
        let ys: Vec<&BigUint> = points.iter().map(|(_, y)| y).collect();
        let inv_den = self.inverse_denominators(&xs)?;
        Ok(self.lagrange_eval(&xs, &ys, &inv_den, x0))
    }

    /// Reconstructs the secret `f(0)` from points `(x, f(x))`; give at least `t + 1` of them.
    pub fn interpolate_zero(&self, points: &[(BigUint, BigUint)]) -> Result<BigUint> {
        self.interpolate_at(points, &BigUint::zero())
    }

    /// Returns the indices (into `points`) of the points that do **not** lie on the polynomial of
    /// degree `≤ t` through the first `t + 1` points; empty means all points are consistent.
    ///
    /// With `points.len() > t + 1` this detects any single wrong value (and any set of wrong values
    /// that does not itself form a degree-`t` polynomial with the rest).
    pub fn inconsistent_points(
        &self,
        points: &[(BigUint, BigUint)],
        t: usize,
    ) -> Result<Vec<usize>> {
        if points.len() < t + 1 {
            return Err(Error::invalid(format!(
                "{} points are not enough to determine a polynomial of degree {t}",
                points.len()
            )));
        }
        let base = &points[..t + 1];
        let xs: Vec<BigUint> = base.iter().map(|(x, _)| self.reduce(x)).collect();
        let ys: Vec<&BigUint> = base.iter().map(|(_, y)| y).collect();
        let inv_den = self.inverse_denominators(&xs)?;
        let mut bad = Vec::new();
        for (i, (x, y)) in points.iter().enumerate().skip(t + 1) {
            let expected = self.lagrange_eval(&xs, &ys, &inv_den, x);
            if expected != self.reduce(y) {
                bad.push(i);
            }
        }
        Ok(bad)
    }

    /// True iff all `points` lie on one polynomial of degree `≤ t` (see
    /// [`Self::inconsistent_points`]).
    #[cfg(test)] // only the tests need it
    pub fn is_consistent(&self, points: &[(BigUint, BigUint)], t: usize) -> Result<bool> {
        Ok(self.inconsistent_points(points, t)?.is_empty())
    }
}

/// Shamir points for party indices: `(j + 1, value_j)` for `j = 0..values.len()`.
#[cfg(test)] // the engine builds its points as it receives the sums
pub fn points_from_sums(values: &[BigUint]) -> Vec<(BigUint, BigUint)> {
    values
        .iter()
        .enumerate()
        .map(|(j, v)| (BigUint::from(j + 1), v.clone()))
        .collect()
}

/// The researcher's key from the interpolated sum `S ∈ [0, p)` of the node keys: `sk0 = −S` over
/// the integers (valid because the bound `p > (n−1)·2^k` guarantees `S` is the exact sum).
pub fn lift_server_key(sum: &BigUint) -> BigInt {
    BigInt::from_biguint(Sign::Minus, sum.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{CryptoRng, Rng, RngCore, SeedableRng};

    fn mersenne127() -> BigUint {
        (BigUint::one() << 127u32) - 1u32
    }

    #[test]
    fn fedbiomed_prime_has_2050_bits_and_is_prime() {
        let p = fedbiomed_prime();
        assert_eq!(FEDBIOMED_PRIME_DECIMAL.len(), 618);
        assert_eq!(p.bits(), 2050);
        // Bypass the fast path of is_probable_prime: really run the test.
        let mut rng = StdRng::seed_from_u64(1);
        assert!(miller_rabin(&p, MILLER_RABIN_ROUNDS, &mut rng));
        assert!(
            !miller_rabin(&(&p + 2u32), 8, &mut rng) || !miller_rabin(&(&p + 4u32), 8, &mut rng)
        );
        assert!(!miller_rabin(&(&p * 3u32), 8, &mut rng));
        assert_eq!(max_nodes(&p, DEFAULT_KEY_BITS), BigUint::from(975u32));
    }

    #[test]
    fn miller_rabin_known_values() {
        let mut rng = StdRng::seed_from_u64(7);
        let primes: [u128; 8] = [
            2,
            3,
            251,
            257,
            65_537,
            2_147_483_647,
            (1u128 << 61) - 1,
            (1u128 << 89) - 1,
        ];
        for p in primes {
            assert!(miller_rabin(&BigUint::from(p), 40, &mut rng), "{p}");
        }
        assert!(miller_rabin(&mersenne127(), 40, &mut rng));
        // Composites including Carmichael numbers and a strong pseudoprime to small bases.
        let composites: [u128; 10] = [
            0,
            1,
            4,
            561,
            1105,
            1729,
            65_535,
            3_215_031_751,
            (1u128 << 67) - 1, // 193707721 · 761838257287
            341_550_071_728_321,
        ];
        for c in composites {
            assert!(!miller_rabin(&BigUint::from(c), 40, &mut rng), "{c}");
        }
        assert!(!miller_rabin(
            &(mersenne127() * mersenne127()),
            40,
            &mut rng
        ));
        assert!(is_probable_prime(&mersenne127()));
        assert!(!is_probable_prime(&((BigUint::one() << 128u32) + 1u32)));
    }

    #[test]
    fn field_operations() {
        let f = PrimeField::new(BigUint::from(101u32)).unwrap();
        let a = BigUint::from(57u32);
        let b = BigUint::from(80u32);
        assert_eq!(f.add(&a, &b), BigUint::from(36u32));
        assert_eq!(f.sub(&a, &b), BigUint::from(78u32));
        assert_eq!(f.mul(&a, &b), BigUint::from((57 * 80) % 101u32));
        assert_eq!(f.neg(&a), BigUint::from(44u32));
        assert_eq!(f.neg(&BigUint::zero()), BigUint::zero());
        let inv = f.inverse(&a).unwrap();
        assert_eq!(f.mul(&a, &inv), BigUint::one());
        assert!(f.inverse(&BigUint::zero()).is_err());
        assert!(f.inverse(&BigUint::from(202u32)).is_err());
        assert!(PrimeField::new(BigUint::from(100u32)).is_err());
        assert!(PrimeField::new(BigUint::from(2u32)).is_err());
        assert_eq!(f.element_len(), 1);
        assert_eq!(f.to_fixed_bytes(&a).as_slice(), &[57u8]);
        assert!(f.element_from_bytes(&[101]).is_err());
        assert!(f.element_from_bytes(&[1, 2]).is_err());
        assert_eq!(f.element_from_bytes(&[100]).unwrap(), BigUint::from(100u32));
    }

    #[test]
    fn fixed_bytes_are_fixed_length() {
        let f = PrimeField::new(fedbiomed_prime()).unwrap();
        assert_eq!(f.element_len(), 257);
        let one = f.to_fixed_bytes(&BigUint::one());
        assert_eq!(one.len(), 257);
        assert_eq!(f.element_from_bytes(&one).unwrap(), BigUint::one());
    }

    #[test]
    fn bound_and_max_nodes() {
        let p = BigUint::from(1_000_003u32); // prime
        assert_eq!(max_nodes(&p, 10), BigUint::from(976u32)); // 976·1024 = 999 424 < p
        assert!(check_bound(&p, 10, 977).is_ok()); // 976 nodes
        let e = check_bound(&p, 10, 978).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("at most 976 nodes"), "{e}");
        assert!(check_bound(&fedbiomed_prime(), DEFAULT_KEY_BITS, 976).is_ok());
        assert!(check_bound(&fedbiomed_prime(), DEFAULT_KEY_BITS, 977).is_err());
        assert_eq!(threshold(3), 1);
        assert_eq!(threshold(4), 1);
        assert_eq!(threshold(5), 2);
        assert_eq!(threshold(30), 14);
    }

    #[test]
    fn wipe_clears_value() {
        let mut x = fedbiomed_prime();
        wipe(&mut x);
        assert!(x.is_zero());
    }

    #[test]
    fn consistency_check_rejects_a_tampered_share() {
        let f = PrimeField::new(fedbiomed_prime()).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let secret = rng.gen_biguint(2040);
        let shares = f.share(&secret, 2, 5, &mut rng).unwrap();
        let mut pts = points_from_sums(&shares);
        assert!(f.is_consistent(&pts, 2).unwrap());
        assert_eq!(f.interpolate_zero(&pts[2..5]).unwrap(), secret);
        pts[4].1 = f.add(&pts[4].1, &BigUint::one());
        assert_eq!(f.inconsistent_points(&pts, 2).unwrap(), vec![4]);
        // A tampered base point makes every other point disagree.
        let mut pts = points_from_sums(&shares);
        pts[0].1 = f.add(&pts[0].1, &BigUint::one());
        assert_eq!(f.inconsistent_points(&pts, 2).unwrap(), vec![3, 4]);
        assert!(f.inconsistent_points(&pts[..2], 2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn field_laws(a in any::<u128>(), b in any::<u128>(), c in any::<u128>()) {
            let f = PrimeField::new(mersenne127()).unwrap();
            let (a, b, c) = (f.reduce(&a.into()), f.reduce(&b.into()), f.reduce(&c.into()));
            prop_assert_eq!(f.add(&f.sub(&a, &b), &b), a.clone());
            prop_assert_eq!(f.mul(&a, &f.add(&b, &c)), f.add(&f.mul(&a, &b), &f.mul(&a, &c)));
            prop_assert_eq!(f.add(&a, &f.neg(&a)), BigUint::zero());
            if !a.is_zero() {
                prop_assert_eq!(f.mul(&a, &f.inverse(&a).unwrap()), BigUint::one());
            }
        }

        #[test]
        fn share_interpolate_round_trip(seed in any::<u64>(), n in 2usize..24, t_frac in 0.0f64..1.0) {
            let mut rng = StdRng::seed_from_u64(seed);
            let f = PrimeField::new(mersenne127()).unwrap();
            let t = ((n - 1) as f64 * t_frac) as usize; // 0..=n−2, so there is a spare point
            let secret = f.random(&mut rng);
            let shares = f.share(&secret, t, n, &mut rng).unwrap();
            prop_assert_eq!(shares.len(), n);
            let pts = points_from_sums(&shares);
            prop_assert!(f.is_consistent(&pts, t).unwrap());
            // Any t+1 points reconstruct: take a random subset.
            let mut idx: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() { idx.swap(i, rng.gen_range(0..=i)); }
            let subset: Vec<_> = idx[..t + 1].iter().map(|&i| pts[i].clone()).collect();
            prop_assert_eq!(f.interpolate_zero(&subset).unwrap(), secret.clone());
            // Tampering any point beyond the first t+1 is detected.
            let k = rng.gen_range(t + 1..n);
            let mut bad = pts.clone();
            bad[k].1 = f.add(&bad[k].1, &BigUint::from(rng.gen_range(1u32..1000)));
            prop_assert_eq!(f.inconsistent_points(&bad, t).unwrap(), vec![k]);
        }
    }

    /// Runs the arithmetic of one negotiation (no network) and returns (sk0, node keys).
    fn simulate<R: RngCore + CryptoRng>(
        f: &PrimeField,
        n: usize,
        key_bits: u32,
        rng: &mut R,
    ) -> (BigInt, Vec<BigUint>) {
        let t = threshold(n);
        let keys: Vec<BigUint> = (1..n).map(|_| rng.gen_biguint(key_bits.into())).collect();
        let mut sums = vec![BigUint::zero(); n];
        for k in &keys {
            let shares = f.share(k, t, n, rng).unwrap();
            for (j, s) in shares.iter().enumerate() {
                sums[j] = f.add(&sums[j], s);
            }
        }
        let pts = points_from_sums(&sums);
        assert!(f.is_consistent(&pts, t).unwrap());
        let s = f.interpolate_zero(&pts[..t + 1]).unwrap();
        (lift_server_key(&s), keys)
    }

    #[test]
    fn sum_identity_over_integers_1000_sessions() {
        // A 127-bit prime with 122-bit keys keeps 1 000 sessions fast while pushing the sum close
        // to the bound: 29 · 2^122 < 2^127 − 1.
        let f = PrimeField::new(mersenne127()).unwrap();
        let mut rng = StdRng::seed_from_u64(0x5eca66);
        for _ in 0..1000 {
            let n = rng.gen_range(3..=30);
            let key_bits = rng.gen_range(1..=122);
            check_bound(f.modulus(), key_bits, n).unwrap();
            let (sk0, keys) = simulate(&f, n, key_bits, &mut rng);
            let total: BigInt = keys.iter().map(|k| BigInt::from(k.clone())).sum();
            assert_eq!(&sk0 + total, BigInt::zero(), "n={n} k={key_bits}");
        }
    }

    #[test]
    fn sum_identity_with_fedbiomed_prime_at_the_bound() {
        let f = PrimeField::new(fedbiomed_prime()).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        for n in [3usize, 4, 7, 12] {
            let (sk0, keys) = simulate(&f, n, DEFAULT_KEY_BITS, &mut rng);
            let total: BigInt = keys.iter().map(|k| BigInt::from(k.clone())).sum();
            assert!(sk0.sign() == Sign::Minus);
            assert_eq!(&sk0 + total, BigInt::zero());
        }
        // Keys at the maximum value: the sum must still not wrap.
        let n = 10;
        let max_key = (BigUint::one() << DEFAULT_KEY_BITS) - 1u32;
        let mut sums = vec![BigUint::zero(); n];
        for _ in 1..n {
            for (j, s) in f
                .share(&max_key, threshold(n), n, &mut rng)
                .unwrap()
                .iter()
                .enumerate()
            {
                sums[j] = f.add(&sums[j], s);
            }
        }
        let s = f
            .interpolate_zero(&points_from_sums(&sums)[..threshold(n) + 1])
            .unwrap();
        assert_eq!(s, max_key * BigUint::from(n - 1));
    }
}
