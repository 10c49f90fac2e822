//! **Security-critical**: signing a document (a roster, a ciphertext file) with this party's
//! identity key, and verifying it against the certificate registered for its signer.
//!
//! The signed message is a fixed domain-separation label, one per [`Purpose`], followed by the
//! payload bytes exactly as the caller gives them (a roster's payload as it appears, base64-decoded,
//! in the file; a ciphertext file's canonical encoding), so verification never depends on how JSON
//! is re-serialised. The labels keep a signature for one purpose from ever verifying for another,
//! and from being mistaken for a TLS 1.3 handshake signature made with the same key (those start
//! with 64 spaces).
//!
//! The algorithm is chosen by the **verifier's** registered certificate, never by the file: an
//! ECDSA P-256 certificate verifies only ECDSA P-256/SHA-256 (ASN.1) signatures, P-384 only
//! P-384/SHA-384, Ed25519 only Ed25519, RSA only RSA-PSS/SHA-256 (2048 to 8192 bits). The scheme
//! name in the file must agree, which makes a mismatch a clear error instead of a failed
//! verification, but it is never trusted to pick the algorithm.
//!
//! Signing goes through rustls' ring key provider, the same code that signs the TLS handshakes
//! with this key, so every key type an identity can have signs here too.

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::SignatureScheme;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certificate::{self, KeyType};
use crate::error::{Error, Result};

/// What a signature is for: each purpose has its own domain-separation label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A roster the researcher issues (`secagg roster export`).
    Roster,
    /// A node's ciphertext file of one aggregation round (`secagg aggregate encrypt`).
    Ciphertexts,
    /// A node's masked vector of one LOM round (`secagg aggregate encrypt --scheme lom`).
    MaskedVector,
}

impl Purpose {
    /// Prefixed to the payload before signing and verifying.
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Roster => b"secagg roster signature v1\n",
            Purpose::Ciphertexts => b"secagg ciphertext file signature v1\n",
            Purpose::MaskedVector => b"secagg lom masked file signature v1\n",
        }
    }

    /// What is signed, in messages.
    fn noun(self) -> &'static str {
        match self {
            Purpose::Roster => "the roster",
            Purpose::Ciphertexts => "the ciphertext file",
            Purpose::MaskedVector => "the masked file",
        }
    }

    /// What to do when the signature does not verify.
    fn hint(self, signer: &str) -> String {
        match self {
            Purpose::Roster => format!(
                "the roster was changed after it was signed, or not signed by `{signer}`'s registered key (if `{signer}` renewed its certificate, register the new one, checking its fingerprint, then import again)"
            ),
            Purpose::Ciphertexts | Purpose::MaskedVector => format!(
                "the file was changed after `{signer}` signed it, or it is another party's file relabelled: do not aggregate it; ask `{signer}` to encrypt again (if `{signer}` renewed its certificate, register the new one, checking its fingerprint)"
            ),
        }
    }
}

/// The signature scheme a key type signs with, as written in the file.
pub fn scheme_name(key: KeyType) -> &'static str {
    match key {
        KeyType::P256 => "ecdsa_secp256r1_sha256",
        KeyType::P384 => "ecdsa_secp384r1_sha384",
        KeyType::Ed25519 => "ed25519",
        KeyType::Rsa(_) => "rsa_pss_rsae_sha256",
    }
}

fn rustls_scheme(key: KeyType) -> SignatureScheme {
    match key {
        KeyType::P256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        KeyType::P384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        KeyType::Ed25519 => SignatureScheme::ED25519,
        KeyType::Rsa(_) => SignatureScheme::RSA_PSS_SHA256,
    }
}

fn message(purpose: Purpose, payload: &[u8]) -> Vec<u8> {
    let label = purpose.label();
    let mut m = Vec::with_capacity(label.len() + payload.len());
    m.extend_from_slice(label);
    m.extend_from_slice(payload);
    m
}

/// Signs `payload` for `purpose` with the PKCS#8 key `key_pkcs8_der` whose certificate has key
/// type `key`. Returns the scheme name and the signature.
pub fn sign(
    purpose: Purpose,
    payload: &[u8],
    key_pkcs8_der: &[u8],
    key: KeyType,
) -> Result<(&'static str, Vec<u8>)> {
    let what = purpose.noun();
    let provider = rustls::crypto::ring::default_provider();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| Error::invalid(format!("this party's private key cannot sign {what}: {e}")))?;
    let signer = signing
        .choose_scheme(&[rustls_scheme(key)])
        .ok_or_else(|| {
            Error::invalid(format!(
                "this party's private key cannot sign with {} (its certificate's key type)",
                scheme_name(key)
            ))
        })?;
    let signature = signer
        .sign(&message(purpose, payload))
        .map_err(|e| Error::Internal(format!("signing {what} failed: {e}")))?;
    Ok((scheme_name(key), signature))
}

/// Verifies `signature` over `payload` for `purpose` with the public key of `certificate_der`
/// (the certificate registered for `signer`), with the one algorithm that certificate's key type
/// allows. `scheme` is the name the file gives, which must be that algorithm's.
///
/// Errors are [`Error::Authentication`] for a signature that does not verify (or names another
/// scheme) and [`Error::InvalidInput`] for a certificate that cannot verify anything.
pub fn verify(
    purpose: Purpose,
    payload: &[u8],
    scheme: &str,
    signature: &[u8],
    certificate_der: &[u8],
    signer: &str,
) -> Result<()> {
    let what = purpose.noun();
    let (rest, cert) = X509Certificate::from_der(certificate_der).map_err(|e| {
        Error::invalid(format!(
            "the certificate registered for `{signer}` cannot be parsed: {e}"
        ))
    })?;
    if !rest.is_empty() {
        return Err(Error::invalid(format!(
            "the certificate registered for `{signer}` has trailing bytes"
        )));
    }
    let spki = cert.public_key();
    let key = certificate::key_type_of(spki).map_err(|what| {
        Error::invalid(format!(
            "the certificate registered for `{signer}` has an unsupported key ({what})"
        ))
    })?;
    let expected = scheme_name(key);
    if scheme != expected {
        return Err(Error::authentication(format!(
            "{what} is signed with `{scheme}`, but `{signer}`'s registered key signs with `{expected}`"
        ))
        .with_hint(purpose.hint(signer)));
    }
    let alg: &dyn ring::signature::VerificationAlgorithm = match key {
        KeyType::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        KeyType::P384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
        KeyType::Ed25519 => &ring::signature::ED25519,
        KeyType::Rsa(_) => &ring::signature::RSA_PSS_2048_8192_SHA256,
    };
    let public_key = ring::signature::UnparsedPublicKey::new(alg, &spki.subject_public_key.data);
    public_key
        .verify(&message(purpose, payload), signature)
        .map_err(|_| {
            Error::authentication(format!(
                "{what}'s signature does not verify with the certificate registered for `{signer}`"
            ))
            .with_hint(purpose.hint(signer))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::GeneratedKeyType;

    fn key_and_cert(kind: GeneratedKeyType) -> (Vec<u8>, Vec<u8>, KeyType) {
        let id = crate::PartyId::parse("researcher_sig").unwrap();
        let g = certificate::generate(&id, kind, 30, time::OffsetDateTime::now_utc()).unwrap();
        let key = certificate::private_key_der_matching(&g.key_pem, &g.certificate).unwrap();
        (
            key.to_vec(),
            g.certificate.der.clone(),
            g.certificate.key_type.unwrap(),
        )
    }

    /// Fed-BioMed's RSA-2048 identity (fixtures), which `identity import` adopts.
    fn rsa_key_and_cert() -> (Vec<u8>, Vec<u8>, KeyType) {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let pem = std::fs::read(fixtures.join("certs/fedbiomed_rsa2048_researcher.pem")).unwrap();
        let cert = certificate::Certificate::parse(&pem, "fixture").unwrap();
        let key_pem =
            std::fs::read_to_string(fixtures.join("keys/fedbiomed_rsa2048_researcher.key"))
                .unwrap();
        let key = certificate::private_key_der_matching(&key_pem, &cert).unwrap();
        (key.to_vec(), cert.der.clone(), cert.key_type.unwrap())
    }

    #[test]
    fn every_identity_key_type_signs_and_verifies_and_a_changed_byte_is_refused() {
        let keys = [
            key_and_cert(GeneratedKeyType::P256),
            key_and_cert(GeneratedKeyType::P384),
            key_and_cert(GeneratedKeyType::Ed25519),
            rsa_key_and_cert(),
        ];
        for (key, cert, key_type) in keys {
            let kind = key_type;
            let payload = b"{\"serial\":1}";
            let (scheme, sig) = sign(Purpose::Roster, payload, &key, key_type).unwrap();
            verify(
                Purpose::Roster,
                payload,
                scheme,
                &sig,
                &cert,
                "researcher_sig",
            )
            .unwrap();
            let mut changed = payload.to_vec();
            changed[2] ^= 1;
            let e = verify(
                Purpose::Roster,
                &changed,
                scheme,
                &sig,
                &cert,
                "researcher_sig",
            )
            .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Authentication, "{kind:?}");
            let mut bad_sig = sig.clone();
            let last = bad_sig.len() - 1;
            bad_sig[last] ^= 1;
            assert!(verify(
                Purpose::Roster,
                payload,
                scheme,
                &bad_sig,
                &cert,
                "researcher_sig"
            )
            .is_err());
            // The scheme comes from the registered certificate, not from the file.
            let e = verify(
                Purpose::Roster,
                payload,
                "ed25519",
                &sig,
                &cert,
                "researcher_sig",
            );
            if key_type != KeyType::Ed25519 {
                assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::Authentication);
            }
        }
    }

    #[test]
    fn a_signature_by_another_key_is_refused() {
        let (key, _, key_type) = key_and_cert(GeneratedKeyType::P256);
        let (_, other_cert, _) = key_and_cert(GeneratedKeyType::P256);
        let (scheme, sig) = sign(Purpose::Roster, b"payload", &key, key_type).unwrap();
        let e = verify(
            Purpose::Roster,
            b"payload",
            scheme,
            &sig,
            &other_cert,
            "researcher_x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }

    #[test]
    fn a_signature_for_one_purpose_never_verifies_for_another() {
        let (key, cert, key_type) = key_and_cert(GeneratedKeyType::P256);
        let (scheme, sig) = sign(Purpose::Roster, b"payload", &key, key_type).unwrap();
        let e = verify(Purpose::Ciphertexts, b"payload", scheme, &sig, &cert, "x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Authentication);
        assert!(
            e.to_string()
                .contains("the ciphertext file's signature does not verify"),
            "{e}"
        );
        let (scheme, sig) = sign(Purpose::Ciphertexts, b"payload", &key, key_type).unwrap();
        verify(Purpose::Ciphertexts, b"payload", scheme, &sig, &cert, "x").unwrap();
        assert!(verify(Purpose::Roster, b"payload", scheme, &sig, &cert, "x").is_err());
    }
}
