//! Reading MP-SPDZ's output and lifting it to the integer server key.
//!
//! `shamir-party.x` prints a field element `v` in *signed* form: `v` if `v < p/2`, else `v − p`.
//! The program reveals `r ≡ −S (mod p)` where `S = Σ sk_i` is the sum of the node keys. Fed-BioMed
//! v4 stored `r` itself, which equals `−S` only when `S < p/2` (wrong for 22 % of 3-node and 56 % of
//! 4-node sessions). Here the residue is lifted instead: since every `sk_i < 2^k` and there are
//! `n − 1` nodes, `S ∈ [0, (n−1)·2^k)`, and the plan guarantees `p > (n−1)·2^k`, so
//! `S = (−r) mod p` exactly and `sk0 = −S`. A residue whose lift breaks the bound cannot come from
//! honest inputs and is refused as a verification failure.

use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use num_traits::{Signed, Zero};

use crate::engine::key::SecretKey;
use crate::error::{Error, Result};

/// Largest output file accepted (a 2050-bit number has 618 digits).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// Parses the content of `<OF-prefix>-P0-0`: exactly one signed decimal integer, optionally
/// followed by one newline. Anything else (empty, several lines, garbage) is an error naming what
/// was found, without echoing the content.
pub fn parse_output(text: &[u8]) -> Result<BigInt> {
    let bad = |what: &str| {
        Error::external(format!(
            "the output of shamir-party.x is not one signed decimal integer: {what}"
        ))
    };
    if text.is_empty() {
        return Err(bad("the file is empty"));
    }
    if text.len() > MAX_OUTPUT_BYTES {
        return Err(bad("the file is too large"));
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    let digits = body.strip_prefix(b"-").unwrap_or(body);
    if digits.is_empty() {
        return Err(bad("no digits"));
    }
    if body.contains(&b'\n') {
        return Err(bad("more than one line"));
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad(
            "it contains characters other than digits and a leading `-`",
        ));
    }
    let s = std::str::from_utf8(body).map_err(|_| bad("not text"))?;
    s.parse::<BigInt>().map_err(|_| bad("unparsable"))
}

/// Lifts MP-SPDZ's signed residue `r ≡ −S (mod p)` to the server key `sk0 = −S` over the integers,
/// for `nodes` node keys of `key_bits` bits each.
///
/// Refused as [`Error::Verification`]: `|r| ≥ p` (MP-SPDZ never prints that) and a lift
/// `S ≥ nodes · 2^k` (no set of honest keys sums to it).
pub fn lift_server_key(
    r: &BigInt,
    prime: &BigUint,
    key_bits: u32,
    nodes: usize,
) -> Result<SecretKey> {
    if prime.is_zero() {
        return Err(Error::Internal("zero prime".into()));
    }
    if r.magnitude() >= prime {
        return Err(Error::verification(format!(
            "shamir-party.x returned a {}-bit value, outside the field of the {}-bit prime",
            r.bits(),
            prime.bits()
        ))
        .with_hint(
            "the program was compiled for another prime; delete <home>/mpspdz-cache and retry",
        ));
    }
    let p = BigInt::from_biguint(Sign::Plus, prime.clone());
    // S = (−r) mod p, in [0, p).
    let s = (-r).mod_floor(&p);
    let bound = BigInt::from(nodes) << key_bits;
    if s >= bound {
        return Err(Error::verification(format!(
            "the sum of the node keys lifted from shamir-party.x's output has {} bits, more than {nodes} keys of {key_bits} bits can sum to",
            s.bits()
        ))
        .with_hint("a node used a key outside [0, 2^k) or the parties disagree on the key length; run the session again with a new session id"));
    }
    debug_assert!(!s.is_negative());
    Ok(SecretKey::from_bigint(&-s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{fedbiomed_prime, DEFAULT_KEY_BITS};
    use num_traits::One;
    use rand::Rng;

    fn signed(v: &BigUint, p: &BigUint) -> BigInt {
        // MP-SPDZ's signed printing of v ∈ [0, p).
        let half = p >> 1u32;
        if v <= &half {
            BigInt::from(v.clone())
        } else {
            BigInt::from(v.clone()) - BigInt::from(p.clone())
        }
    }

    #[test]
    fn parse_accepts_one_signed_integer() {
        assert_eq!(parse_output(b"-123\n").unwrap(), BigInt::from(-123));
        assert_eq!(parse_output(b"456").unwrap(), BigInt::from(456));
        assert_eq!(parse_output(b"0\n").unwrap(), BigInt::zero());
        for bad in [
            &b""[..],
            b"\n",
            b"-\n",
            b"12 3\n",
            b"1\n2\n",
            b"abc\n",
            b"+5\n",
            b"1e5",
        ] {
            let e = parse_output(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::ExternalTool, "{bad:?}");
        }
    }

    #[test]
    fn lifting_positive_and_negative_residues() {
        let p = fedbiomed_prime();
        // Fed-BioMed's 2048-bit keys: with 3 nodes the sum exceeds p/2 most of the time, and
        // MP-SPDZ then prints a positive residue, which Fed-BioMed v4 stored as a wrong key. (With
        // secagg's default 2040-bit keys the residue is negative for up to 487 nodes.)
        let k = 2048;
        let mut rng = rand::thread_rng();
        let mut saw = (false, false);
        for nodes in [2usize, 3] {
            for _ in 0..60 {
                let keys: Vec<BigUint> = (0..nodes)
                    .map(|_| {
                        let bytes: Vec<u8> = (0..(k / 8)).map(|_| rng.gen()).collect();
                        BigUint::from_bytes_be(&bytes)
                    })
                    .collect();
                let sum: BigUint = keys.iter().sum();
                let neg = (&p - (&sum % &p)) % &p;
                let r = signed(&neg, &p);
                if r.is_negative() {
                    saw.0 = true;
                } else {
                    saw.1 = true;
                }
                let sk0 = lift_server_key(&r, &p, k, nodes).unwrap();
                assert_eq!(sk0.to_bigint(), -BigInt::from(sum));
            }
        }
        assert!(saw.0 && saw.1, "both signs must be exercised: {saw:?}");
    }

    #[test]
    fn lifting_small_field_edges() {
        let p = BigUint::from(1_000_003u32);
        // 2 nodes, 19-bit keys: 2·2^19 = 1 048 576 > p would break the bound; use 18 bits.
        let k = 18;
        // S = 0 → r = 0 → sk0 = 0.
        assert_eq!(
            lift_server_key(&BigInt::zero(), &p, k, 2)
                .unwrap()
                .to_bigint(),
            BigInt::zero()
        );
        // S = 2·(2^18 − 1) = 524 286 > p/2: printed positive as p − S = 475 717.
        let s = 2 * ((1u64 << 18) - 1);
        let r = BigInt::from(1_000_003u64 - s);
        assert_eq!(
            lift_server_key(&r, &p, k, 2).unwrap().to_bigint(),
            -BigInt::from(s)
        );
        // Just below p/2 printed negative.
        let r = BigInt::from(-5);
        assert_eq!(
            lift_server_key(&r, &p, k, 2).unwrap().to_bigint(),
            BigInt::from(-5)
        );
    }

    #[test]
    fn a_residue_violating_the_bound_is_a_verification_error() {
        let p = BigUint::from(1_000_003u32);
        // S = 600 000 ≥ 2·2^18 = 524 288: impossible for two 18-bit keys.
        let r = BigInt::from(1_000_003 - 600_000);
        let e = lift_server_key(&r, &p, 18, 2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Verification, "{e}");
        // Outside the field.
        let e = lift_server_key(&BigInt::from(1_000_003), &p, 18, 2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Verification);
        let big = -(BigInt::one() << 2100u32);
        let e = lift_server_key(&big, &fedbiomed_prime(), DEFAULT_KEY_BITS, 2).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Verification);
    }
}
