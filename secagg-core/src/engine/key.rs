//! The negotiated key, held so that it is wiped when dropped and compared in constant time. A leaf
//! of the engine module.

use std::fmt;

use num_bigint::{BigInt, BigUint, Sign};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// A negotiated key: a signed integer (the researcher's `sk0` is negative, node keys are in
/// `[0, 2^k)`).
///
/// Held as sign + big-endian magnitude bytes in a zeroizing buffer, so the key is wiped when
/// dropped. Limits: conversions to [`BigInt`] ([`Self::to_bigint`], [`Self::to_decimal`]) make
/// num-bigint copies that are not wiped, and the computations that produced the key used
/// num-bigint temporaries that were freed without wiping.
///
/// `Debug` never shows the value; [`Self::fingerprint`] is safe to print. Equality is
/// constant-time in the value (it reveals only the longer of the two lengths).
#[derive(Clone)]
pub struct SecretKey {
    negative: bool,
    /// Big-endian magnitude without leading zeros (empty for 0).
    magnitude: Zeroizing<Vec<u8>>,
}

impl SecretKey {
    /// Builds a key from a signed integer.
    pub fn from_bigint(v: &BigInt) -> Self {
        let (sign, mut bytes) = v.to_bytes_be();
        let negative = sign == Sign::Minus;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let magnitude = Zeroizing::new(bytes[start..].to_vec());
        bytes.zeroize();
        SecretKey {
            negative: negative && !magnitude.is_empty(),
            magnitude,
        }
    }

    /// Builds a non-negative key.
    pub fn from_biguint(v: &BigUint) -> Self {
        Self::from_bigint(&BigInt::from(v.clone()))
    }

    /// The key as a signed integer (a copy num-bigint will not wipe).
    pub fn to_bigint(&self) -> BigInt {
        let sign = if self.magnitude.is_empty() {
            Sign::NoSign
        } else if self.negative {
            Sign::Minus
        } else {
            Sign::Plus
        };
        BigInt::from_bytes_be(sign, &self.magnitude)
    }

    /// The magnitude, big-endian without leading zeros (empty for 0): for computing with the key
    /// in constant time (Joye–Libert masks) without a num-bigint copy.
    pub(crate) fn magnitude_be(&self) -> &[u8] {
        &self.magnitude
    }

    /// True for a negative key (the researcher's).
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The key in decimal, `-` for negative keys (the form Fed-BioMed stores).
    pub fn to_decimal(&self) -> Zeroizing<String> {
        Zeroizing::new(self.to_bigint().to_str_radix(10))
    }

    /// Parses a decimal integer with an optional leading `-`.
    pub fn from_decimal(s: &str) -> Result<Self> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                "a key must be a decimal integer with an optional leading `-`",
            ));
        }
        let v: BigInt = s
            .parse()
            .map_err(|_| Error::invalid("a key must be a decimal integer"))?;
        Ok(Self::from_bigint(&v))
    }

    /// `SHA256:` + lowercase hex of SHA-256 over [`Self::to_decimal`]: lets two people check that
    /// they hold the same key without showing it.
    pub fn fingerprint(&self) -> String {
        let dec = self.to_decimal();
        format!("SHA256:{}", hex::encode(Sha256::digest(dec.as_bytes())))
    }

    /// Bit length of the magnitude.
    pub fn bits(&self) -> u64 {
        match self.magnitude.first() {
            None => 0,
            Some(&b) => (self.magnitude.len() as u64 - 1) * 8 + u64::from(8 - b.leading_zeros()),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        // Left-pad both magnitudes to the same length so the comparison time depends only on the
        // longer length, not on where the values differ.
        let len = self.magnitude.len().max(other.magnitude.len());
        let mut a = Zeroizing::new(vec![0u8; len]);
        let mut b = Zeroizing::new(vec![0u8; len]);
        a[len - self.magnitude.len()..].copy_from_slice(&self.magnitude);
        b[len - other.magnitude.len()..].copy_from_slice(&other.magnitude);
        let same_sign = (self.negative as u8).ct_eq(&(other.negative as u8));
        bool::from(same_sign & a.as_slice().ct_eq(b.as_slice()))
    }
}

impl Eq for SecretKey {}
