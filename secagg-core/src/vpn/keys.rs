//! WireGuard keys: X25519 private/public keys and pre-shared keys, in WireGuard's text form
//! (standard base64 of exactly 32 bytes, as `wg genkey`, `wg pubkey` and `wg genpsk` print them).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use serde::{Serialize, Serializer};
use x25519_dalek::{PublicKey as DalekPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Length of every WireGuard key in bytes.
pub const KEY_LEN: usize = 32;

const KEY_HINT: &str = "a WireGuard key is the base64 of exactly 32 bytes (44 characters ending in `=`), as `wg pubkey` or `secagg vpn keygen` print it";

fn decode(text: &str, what: &str) -> Result<[u8; KEY_LEN]> {
    let t = text.trim();
    if t.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")).with_hint(KEY_HINT));
    }
    let shown: String = t.chars().take(60).collect();
    let bytes = STANDARD.decode(t).map_err(|e| {
        Error::invalid(format!(
            "{what} `{}` is not valid base64 ({e})",
            shown.escape_debug()
        ))
        .with_hint(KEY_HINT)
    })?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        Error::invalid(format!(
            "{what} `{}` decodes to {} bytes, a WireGuard key has {KEY_LEN}",
            shown.escape_debug(),
            bytes.len()
        ))
        .with_hint(KEY_HINT)
    })
}

/// A WireGuard public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Parses the base64 text form; `what` names the value in errors ("public key of node/n1").
    pub fn parse_named(text: &str, what: &str) -> Result<Self> {
        let bytes = decode(text, what)?;
        if bytes == [0u8; KEY_LEN] {
            return Err(
                Error::invalid(format!("{what} is all zeros, not a real key")).with_hint(KEY_HINT),
            );
        }
        Ok(PublicKey(bytes))
    }

    /// Parses the base64 text form.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_named(text, "public key")
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A WireGuard private key (clamped X25519 scalar); wiped from memory when dropped and never
/// shown by `Debug`.
#[derive(Clone)]
pub struct PrivateKey(Zeroizing<[u8; KEY_LEN]>);

impl PrivateKey {
    /// A fresh key from the operating system's CSPRNG, clamped as `wg genkey` does.
    pub fn generate() -> Self {
        let mut b = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(b.as_mut());
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        PrivateKey(b)
    }

    /// Parses the base64 text form; `what` names the value in errors.
    pub fn parse_named(text: &str, what: &str) -> Result<Self> {
        let bytes = Zeroizing::new(decode(text, what)?);
        Ok(PrivateKey(bytes))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        let secret = StaticSecret::from(*self.0);
        PublicKey(DalekPublic::from(&secret).to_bytes())
    }

    /// The base64 text form (a secret: write it only to 0600 files).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<secret>)")
    }
}

/// A WireGuard pre-shared key (32 random bytes, as `wg genpsk` makes).
#[derive(Clone)]
pub struct PresharedKey(Zeroizing<[u8; KEY_LEN]>);

impl PresharedKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut b = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(b.as_mut());
        PresharedKey(b)
    }

    /// Parses the base64 text form; `what` names the value in errors.
    pub fn parse_named(text: &str, what: &str) -> Result<Self> {
        Ok(PresharedKey(Zeroizing::new(decode(text, what)?)))
    }

    /// The base64 text form (a secret).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.0))
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7748_public_key() {
        // RFC 7748 §6.1, Alice's key pair.
        let sk = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let pk = hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
            .unwrap();
        let sk = PrivateKey::parse_named(&STANDARD.encode(&sk), "k").unwrap();
        assert_eq!(sk.public_key().as_bytes().as_slice(), pk.as_slice());
    }

    #[test]
    fn generated_keys_round_trip_and_are_clamped() {
        let k = PrivateKey::generate();
        let text = k.to_base64();
        assert_eq!(text.len(), 44);
        let again = PrivateKey::parse_named(&text, "k").unwrap();
        assert_eq!(again.public_key(), k.public_key());
        let pk = k.public_key();
        assert_eq!(PublicKey::parse(&pk.to_string()).unwrap(), pk);
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        assert!(!format!("{k:?}").contains(text.as_str()));
    }

    #[test]
    fn bad_public_keys_are_named() {
        let e = PublicKey::parse("").unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        let e = PublicKey::parse("not base64!").unwrap_err();
        assert!(e.to_string().contains("not valid base64"), "{e}");
        let e = PublicKey::parse(&STANDARD.encode([1u8; 31])).unwrap_err();
        assert!(e.to_string().contains("31 bytes"), "{e}");
        let e = PublicKey::parse(&STANDARD.encode([1u8; 33])).unwrap_err();
        assert!(e.to_string().contains("33 bytes"), "{e}");
        let e = PublicKey::parse(&STANDARD.encode([0u8; 32])).unwrap_err();
        assert!(e.to_string().contains("all zeros"), "{e}");
        assert!(e.hint().unwrap().contains("32 bytes"));
        // Surrounding whitespace (a copied `wg pubkey` line) is accepted.
        let k = PrivateKey::generate().public_key();
        assert_eq!(PublicKey::parse(&format!(" {k}\n")).unwrap(), k);
    }
}
