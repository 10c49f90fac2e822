//! **Security-critical**: certificate *pinning* verifiers for rustls.
//!
//! secagg parties have self-signed certificates with subject `CN=*` (what MP-SPDZ needs), so
//! neither a CA chain nor a host name can authenticate them. Instead each party registers every
//! peer's certificate out of band, and a TLS connection is accepted only if the peer presents
//! **exactly the registered certificate** (byte-equal DER, compared in constant time):
//!
//! - [`PinnedServerVerifier`] (dialing side) accepts exactly one certificate, the one registered
//!   for the party being dialed;
//! - [`PinnedClientVerifier`] (accepting side) requires a client certificate and accepts exactly
//!   the certificates of the parties expected to dial in; [`PinnedClientVerifier::identify`] then
//!   says which party the connection belongs to.
//!
//! What is deliberately **not** checked: names (there are none), chains/intermediates (ignored;
//! they carry no trust here), validity dates, key usage and other extensions (registration checks
//! these before a certificate is stored; Fed-BioMed's RSA certificates have no extensions at all).
//!
//! What **is** checked, and must stay so: the handshake signature (TLS 1.3 `CertificateVerify`),
//! with the ring provider's signature algorithms, against the public key of the pinned
//! certificate. Without it anyone could replay a registered certificate without holding its key.
//! The public key is taken from the pinned certificate when the verifier is built
//! ([`PinnedCert::new`]) and the signature is verified with
//! `rustls::crypto::verify_tls13_signature_with_raw_key`, so certificates that webpki would
//! refuse to *parse* as end-entity certificates (e.g. unknown critical extensions) still work, and
//! the key type is checked up front: ECDSA P-256/P-384, Ed25519, RSA ≥ 2048 bits.
//! TLS 1.2 signatures are refused: the configs built in `transport::tls` are TLS 1.3 only.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use subtle::{Choice, ConstantTimeEq};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::certificate;
use crate::error::{Error, Result};

/// A registered certificate with the public key extracted from it.
#[derive(Clone)]
pub struct PinnedCert {
    label: String,
    der: Vec<u8>,
    spki: Vec<u8>,
}

impl fmt::Debug for PinnedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinnedCert({})", self.label)
    }
}

impl PinnedCert {
    /// Parses `der` (the certificate registered for the party named `label`) and extracts its
    /// public key. Refuses unparseable certificates and unsupported key types, naming the party.
    pub fn new(label: &str, der: &[u8]) -> Result<Self> {
        let bad = |why: String| {
            Error::invalid(format!("the certificate registered for {label} {why}")).with_hint(
                format!(
                    "re-register {label} with a supported certificate ({})",
                    certificate::SUPPORTED_KEYS
                ),
            )
        };
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| bad(format!("cannot be parsed: {e}")))?;
        if !rest.is_empty() {
            return Err(bad("has trailing bytes after the certificate".into()));
        }
        let spki = cert.public_key();
        match certificate::key_type_of(spki) {
            Err(what) => return Err(bad(format!("has an unsupported key type ({what})"))),
            Ok(k) => {
                if let Some(weakness) = k.weakness() {
                    return Err(bad(format!("has {weakness}")));
                }
            }
        }
        Ok(PinnedCert {
            label: label.to_owned(),
            der: der.to_vec(),
            spki: spki.raw.to_vec(),
        })
    }

    /// The party this certificate was registered for.
    #[cfg(test)] // only the tests need it
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The registered certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether `presented` is exactly this certificate (constant time, as the dialing side checks).
    pub fn is(&self, presented: &[u8]) -> bool {
        bool::from(self.matches(presented))
    }

    /// The certificate's SubjectPublicKeyInfo, DER.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// Constant-time byte equality with a presented certificate (a length difference returns
    /// early; lengths of certificates are public anyway).
    fn matches(&self, presented: &[u8]) -> Choice {
        self.der.as_slice().ct_eq(presented)
    }

    fn verify_tls13(
        &self,
        message: &[u8],
        dss: &DigitallySignedStruct,
        algs: &WebPkiSupportedAlgorithms,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let spki = SubjectPublicKeyInfoDer::from(self.spki.as_slice());
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, algs)
    }
}

fn unknown_certificate() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::General("secagg peers use TLS 1.3 only".into())
}

/// Dialing side: accepts exactly one certificate, the one registered for the dialed party.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    expected: PinnedCert,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedServerVerifier {
    /// A verifier pinning `expected`; signatures are checked with `provider`'s algorithms.
    pub fn new(expected: PinnedCert, provider: &rustls::crypto::CryptoProvider) -> Arc<Self> {
        Arc::new(PinnedServerVerifier {
            expected,
            algs: provider.signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if bool::from(self.expected.matches(end_entity)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(unknown_certificate())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        // rustls passes the certificate accepted above; re-check so that the key used is
        // certainly the pinned one.
        if !bool::from(self.expected.matches(cert)) {
            return Err(unknown_certificate());
        }
        self.expected.verify_tls13(message, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepting side: requires a client certificate and accepts exactly the certificates of the
/// parties expected to dial in.
#[derive(Debug)]
pub struct PinnedClientVerifier {
    /// `(party index, certificate)` of every party allowed to dial in.
    expected: Vec<(usize, PinnedCert)>,
    /// Position in `expected` by certificate DER.
    by_der: HashMap<Vec<u8>, usize>,
    algs: WebPkiSupportedAlgorithms,
}

impl PinnedClientVerifier {
    /// A verifier accepting the certificates in `expected` (party index, certificate).
    pub fn new(
        expected: Vec<(usize, PinnedCert)>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Arc<Self> {
        let by_der = expected
            .iter()
            .enumerate()
            .map(|(position, (_, cert))| (cert.der().to_vec(), position))
            .collect();
        Arc::new(PinnedClientVerifier {
            expected,
            by_der,
            algs: provider.signature_verification_algorithms,
        })
    }

    /// The party index whose pinned certificate equals `presented`, if any: one hash lookup.
    ///
    /// Not constant-time, on purpose: certificates are public (bundles, rosters), and whether a
    /// presented certificate is registered here shows anyway in how the handshake ends. An agent
    /// pins every registered party, so the former comparison against each of them, byte by byte
    /// in constant time, cost ~0.1 ms per handshake with 100 parties, twice per connection, and
    /// was the largest single cost of a 100-party session (regression: `subtle::black_box` at
    /// the top of the profile).
    pub fn identify(&self, presented: &[u8]) -> Option<usize> {
        self.pinned(presented).map(|(index, _)| index)
    }

    fn pinned(&self, presented: &[u8]) -> Option<(usize, &PinnedCert)> {
        let (index, cert) = &self.expected[*self.by_der.get(presented)?];
        Some((*index, cert))
    }

    /// The labels of the parties allowed to dial in (for error messages).
    #[cfg(test)] // only the tests need it
    pub fn expected_labels(&self) -> Vec<&str> {
        self.expected.iter().map(|(_, c)| c.label()).collect()
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the client then presents its only certificate.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        match self.identify(end_entity) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(unknown_certificate()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        let (_, pinned) = self.pinned(cert).ok_or_else(unknown_certificate)?;
        pinned.verify_tls13(message, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["*".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../fixtures/certs/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read(&path).unwrap();
        pem::parse(text).unwrap().into_contents()
    }

    #[test]
    fn supported_and_refused_key_types() {
        PinnedCert::new("node_a", &cert(&rcgen::PKCS_ECDSA_P256_SHA256)).unwrap();
        PinnedCert::new("node_a", &cert(&rcgen::PKCS_ECDSA_P384_SHA384)).unwrap();
        PinnedCert::new("node_a", &cert(&rcgen::PKCS_ED25519)).unwrap();
        PinnedCert::new("node_a", &fixture("fedbiomed_rsa2048.pem")).unwrap();
        PinnedCert::new("node_a", &fixture("rsa3072.pem")).unwrap();
        let e = PinnedCert::new("node_a", &fixture("rsa1024.pem")).unwrap_err();
        assert!(e.to_string().contains("1024-bit RSA key"), "{e}");
        assert!(e.to_string().contains("node_a"), "{e}");
        let e = PinnedCert::new("node_b", &fixture("dsa2048.pem")).unwrap_err();
        assert!(e.to_string().contains("unsupported key type"), "{e}");
        let e = PinnedCert::new("node_c", b"garbage").unwrap_err();
        assert!(
            e.to_string()
                .contains("registered for node_c cannot be parsed"),
            "{e}"
        );
    }

    #[test]
    fn verifiers_accept_exactly_the_pinned_certificates() {
        let provider = rustls::crypto::ring::default_provider();
        let a = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let b = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let c = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        let server = PinnedServerVerifier::new(PinnedCert::new("node_a", &a).unwrap(), &provider);
        let name = ServerName::try_from("secagg.invalid").unwrap();
        let now = UnixTime::now();
        assert!(server
            .verify_server_cert(&CertificateDer::from(a.clone()), &[], &name, &[], now)
            .is_ok());
        assert!(server
            .verify_server_cert(&CertificateDer::from(b.clone()), &[], &name, &[], now)
            .is_err());
        let mut truncated = a.clone();
        truncated.pop();
        assert!(server
            .verify_server_cert(&CertificateDer::from(truncated), &[], &name, &[], now)
            .is_err());
        let client = PinnedClientVerifier::new(
            vec![
                (1, PinnedCert::new("node_a", &a).unwrap()),
                (2, PinnedCert::new("node_b", &b).unwrap()),
            ],
            &provider,
        );
        assert_eq!(client.identify(&a), Some(1));
        assert_eq!(client.identify(&b), Some(2));
        assert_eq!(client.identify(&c), None);
        assert!(client
            .verify_client_cert(&CertificateDer::from(b), &[], now)
            .is_ok());
        assert!(client
            .verify_client_cert(&CertificateDer::from(c), &[], now)
            .is_err());
        assert!(client.client_auth_mandatory());
        assert_eq!(client.expected_labels(), vec!["node_a", "node_b"]);
        assert!(!server.supported_verify_schemes().is_empty());
    }
}
