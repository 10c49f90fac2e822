//! Pairwise secrets as Fed-BioMed v6 derives them (reference §4): P-256 ECDH, then NIST SP
//! 800-56A's single-step KDF with SHA-256, `secret = SHA-256(00000001 ‖ Z ‖ salt ‖ min(u, v) ‖
//! max(u, v))`, where Z is the shared point's x-coordinate (32 bytes) and the salt the session id
//! (v6: the DH context's `secagg_id`, as UTF-8).
//!
//! The key pair is fresh per context and the private key never leaves this process (OpenSSL, as
//! v6 through `cryptography`).

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::prf::Key32;
use crate::error::{Error, Result};

fn ossl(doing: &str) -> impl Fn(openssl::error::ErrorStack) -> Error + '_ {
    move |e| Error::internal(format!("{doing} (OpenSSL): {e}"))
}

fn group() -> Result<EcGroup> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ossl("loading P-256"))
}

/// This node's key pair for one context.
pub struct KeyPair {
    key: PKey<Private>,
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate() -> Result<Self> {
        let group = group()?;
        let ec = EcKey::generate(&group).map_err(ossl("generating a P-256 key"))?;
        Ok(KeyPair {
            key: PKey::from_ec_key(ec).map_err(ossl("wrapping a P-256 key"))?,
        })
    }

    /// The key pair of the private scalar `scalar` (32 bytes big-endian): test vectors only.
    pub fn from_scalar(scalar: &[u8; 32]) -> Result<Self> {
        let group = group()?;
        let d = BigNum::from_slice(scalar).map_err(ossl("reading a scalar"))?;
        let mut ctx = BigNumContext::new().map_err(ossl("allocating"))?;
        let mut q = EcPoint::new(&group).map_err(ossl("allocating a point"))?;
        q.mul_generator2(&group, &d, &mut ctx)
            .map_err(ossl("computing a public key"))?;
        let ec = EcKey::from_private_components(&group, &d, &q).map_err(ossl("building a key"))?;
        ec.check_key()
            .map_err(|_| Error::invalid("the scalar is not a valid P-256 private key"))?;
        Ok(KeyPair {
            key: PKey::from_ec_key(ec).map_err(ossl("wrapping a P-256 key"))?,
        })
    }

    /// The public key as a SEC1 uncompressed point (65 bytes), as sent to the other nodes.
    pub fn public_sec1(&self) -> Result<Vec<u8>> {
        let ec = self.key.ec_key().map_err(ossl("reading the key"))?;
        let mut ctx = BigNumContext::new().map_err(ossl("allocating"))?;
        ec.public_key()
            .to_bytes(ec.group(), PointConversionForm::UNCOMPRESSED, &mut ctx)
            .map_err(ossl("encoding the public key"))
    }

    /// Z: the x-coordinate of this key times the other node's public key `peer_sec1` (a SEC1
    /// point, checked to be on P-256).
    pub fn shared_x(&self, peer_sec1: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let group = group()?;
        let mut ctx = BigNumContext::new().map_err(ossl("allocating"))?;
        let point = EcPoint::from_bytes(&group, peer_sec1, &mut ctx)
            .map_err(|_| Error::invalid("the other node's public key is not a P-256 point"))?;
        let ec: EcKey<Public> = EcKey::from_public_key(&group, &point)
            .map_err(|_| Error::invalid("the other node's public key is not a P-256 point"))?;
        ec.check_key()
            .map_err(|_| Error::invalid("the other node's public key is not a valid P-256 key"))?;
        let peer = PKey::from_ec_key(ec).map_err(ossl("wrapping a public key"))?;
        let mut deriver = Deriver::new(&self.key).map_err(ossl("starting ECDH"))?;
        deriver.set_peer(&peer).map_err(ossl("starting ECDH"))?;
        Ok(Zeroizing::new(
            deriver.derive_to_vec().map_err(ossl("computing ECDH"))?,
        ))
    }
}

/// The pairwise secret of nodes `a` and `b` from their shared `z`, for the session `salt`.
pub fn pairwise_secret(z: &[u8], salt: &[u8], a: &str, b: &str) -> Key32 {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    h.update(salt);
    h.update(lo.as_bytes());
    h.update(hi.as_bytes());
    h.finalize().into()
}
