//! Modular exponentiation with a **secret exponent** (a negotiated key), in time independent of
//! the exponent's value: the one place where the Joye–Libert code computes with a key.
//!
//! The kernel is OpenSSL's `BN_mod_exp_mont_consttime` (libcrypto, reached through the safe
//! `openssl` crate), the routine OpenSSL itself uses for RSA private-key operations: Montgomery
//! arithmetic with a fixed window over every window of the exponent, and a precomputed table read
//! with scatter/gather so that neither the sequence of operations nor the memory accesses depend on
//! the exponent's bits. On x86-64 it runs OpenSSL's MULX/ADCX/ADOX assembly when the CPU has
//! them, which is why it is used instead of a pure-Rust kernel: with `unsafe` forbidden here, the
//! fastest constant-time Rust kernels measured (crypto-bigint 0.6, a hand-written CIOS loop with
//! dedicated squaring) took 5.3 ms per exponentiation mod a 2048-bit `N²` where OpenSSL takes
//! about 2 ms (benches/README.md).
//!
//! What the running time does depend on: the exponent's length in 64-bit words (OpenSSL runs the
//! loop over all of them), which for a key of the negotiated length is public, and differs only
//! when the top 56 bits of a random 2040-bit key are all zero (probability 2⁻⁵⁶).
//!
//! Secret hygiene: the exponent and the result live in OpenSSL's secure-heap `BIGNUM`s (zeroed
//! when freed) and are cleared explicitly on drop; the byte copies made here are zeroizing; the
//! scratch context is a secure `BN_CTX`. OpenSSL clears its own precomputed table.

use std::sync::Arc;

use openssl::bn::{BigNum, BigNumContext};
use openssl::error::ErrorStack;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

fn openssl_error(what: &str, e: ErrorStack) -> Error {
    Error::Internal(format!("openssl: while {what}: {e}"))
}

/// A public odd modulus, ready for exponentiation.
#[derive(Clone)]
pub(crate) struct Modulus {
    value: Arc<BigNum>,
    bytes: usize,
}

impl Modulus {
    /// `m` big-endian; must be odd (Montgomery arithmetic).
    pub(crate) fn new(m_be: &[u8]) -> Result<Self> {
        let value = BigNum::from_slice(m_be).map_err(|e| openssl_error("reading a modulus", e))?;
        if !value.is_bit_set(0) {
            return Err(Error::Internal("an even modulus".into()));
        }
        let bytes = value.num_bytes() as usize;
        Ok(Modulus {
            value: Arc::new(value),
            bytes,
        })
    }
}

/// A secret exponent: a copy of a key's magnitude in a secure `BIGNUM` flagged constant-time.
pub(crate) struct SecretExponent(BigNum);

impl SecretExponent {
    /// The exponent from its big-endian magnitude.
    pub(crate) fn new(magnitude_be: &[u8]) -> Result<Self> {
        let mut e = BigNum::new_secure().map_err(|e| openssl_error("allocating a key", e))?;
        e.copy_from_slice(magnitude_be)
            .map_err(|e| openssl_error("reading a key", e))?;
        // BN_mod_exp takes the constant-time path when the exponent carries this flag.
        e.set_const_time();
        Ok(SecretExponent(e))
    }
}

impl Drop for SecretExponent {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// `base^exponent mod m` as `m`'s width in big-endian bytes (zeroizing: the result of a secret
/// exponent is secret too). `base` must be below `m`.
pub(crate) fn pow(
    base_be: &[u8],
    exponent: &SecretExponent,
    modulus: &Modulus,
) -> Result<Zeroizing<Vec<u8>>> {
    let base = BigNum::from_slice(base_be).map_err(|e| openssl_error("reading a base", e))?;
    let mut ctx =
        BigNumContext::new_secure().map_err(|e| openssl_error("allocating a context", e))?;
    let mut result = BigNum::new_secure().map_err(|e| openssl_error("allocating", e))?;
    result
        .mod_exp(&base, &exponent.0, &modulus.value, &mut ctx)
        .map_err(|e| openssl_error("exponentiating", e))?;
    let out = result
        .to_vec_padded(modulus.bytes as i32)
        .map(Zeroizing::new)
        .map_err(|e| openssl_error("writing a result", e));
    result.clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_bigint::BigUint;
    use proptest::prelude::*;

    fn modulus_of(m: &BigUint) -> Modulus {
        Modulus::new(&m.to_bytes_be()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Agrees with num-bigint's (variable-time) `modpow` for random bases, exponents of every
        /// length (including 0 and 1) and odd moduli.
        #[test]
        fn agrees_with_num_bigint(
            base in proptest::collection::vec(any::<u8>(), 0..64),
            exp in proptest::collection::vec(any::<u8>(), 0..80),
            m in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let mut m = BigUint::from_bytes_be(&m);
            m |= BigUint::from(1u32);
            prop_assume!(m > BigUint::from(1u32));
            let b = BigUint::from_bytes_be(&base) % &m;
            let e = BigUint::from_bytes_be(&exp);
            let got = pow(&b.to_bytes_be(), &SecretExponent::new(&e.to_bytes_be()).unwrap(), &modulus_of(&m)).unwrap();
            prop_assert_eq!(got.len(), m.to_bytes_be().len());
            prop_assert_eq!(BigUint::from_bytes_be(&got), b.modpow(&e, &m));
        }
    }

    #[test]
    fn the_exponent_is_flagged_constant_time() {
        let e = SecretExponent::new(&[0x12, 0x34]).unwrap();
        assert!(e.0.is_const_time());
    }

    #[test]
    fn an_even_modulus_is_refused() {
        assert!(Modulus::new(&[0x10]).is_err());
    }
}
