//! TLS 1.3 configurations for the negotiation mesh, and classification of TLS/IO errors.
//!
//! Always the ring provider, passed explicitly (`builder_with_provider`), never a process-global
//! default provider, so that the crate behaves the same whatever else the process installed.
//! Resumption and session tickets are off (every connection is a fresh, fully authenticated
//! handshake, and a server ticket left unread could turn a clean close into a reset), and SNI is
//! not sent (peers have no names).

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, ServerConfig, SignatureScheme};

use super::pinned_verifier::{PinnedCert, PinnedClientVerifier, PinnedServerVerifier};
use crate::error::{Error, Result};

/// The crypto provider of all secagg TLS connections: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This party's TLS identity: its certificate and signing key, loaded once.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    certified: Arc<CertifiedKey>,
}

impl LocalIdentity {
    /// Loads `key_pkcs8_der` for `cert_der`; `label` names the party in errors. Checks that the
    /// key belongs to the certificate.
    pub fn new(
        label: &str,
        cert_der: &[u8],
        key_pkcs8_der: &[u8],
        provider: &CryptoProvider,
    ) -> Result<Self> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8_der.to_vec()));
        let signing = provider.key_provider.load_private_key(key).map_err(|e| {
            Error::invalid(format!(
                "the private key of {label} cannot be used for TLS: {e}"
            ))
            .with_hint("the key must be PKCS#8 DER for ECDSA P-256/P-384, Ed25519 or RSA")
        })?;
        // Check the key belongs to the certificate by comparing the public key bits (not the
        // whole SubjectPublicKeyInfo, whose encoding of parameters may legitimately differ).
        let own = PinnedCert::new(label, cert_der)?;
        if let Some(spki) = signing.public_key() {
            if public_key_bits(&spki) != public_key_bits(own.spki()) {
                return Err(Error::invalid(format!(
                    "the private key of {label} does not belong to its certificate"
                ))
                .with_hint("check that the identity's key and certificate files belong together"));
            }
        }
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], signing);
        Ok(LocalIdentity {
            certified: Arc::new(certified),
        })
    }
}

fn public_key_bits(spki: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
        .ok()
        .map(|(_, k)| k.subject_public_key.data.to_vec())
}

#[derive(Debug)]
struct AlwaysPresent(Arc<CertifiedKey>);

impl ResolvesClientCert for AlwaysPresent {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for AlwaysPresent {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn version_error(e: rustls::Error) -> Error {
    Error::Internal(format!("cannot configure TLS 1.3 with ring: {e}"))
}

/// Client config for dialing the party whose registered certificate is `peer`: pins it, and
/// presents `me` as the client certificate.
pub fn client_config(
    me: &LocalIdentity,
    peer: PinnedCert,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(version_error)?
        .dangerous()
        .with_custom_certificate_verifier(PinnedServerVerifier::new(peer, provider))
        .with_client_cert_resolver(Arc::new(AlwaysPresent(me.certified.clone())));
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Server config for accepting the parties in `verifier`'s set, presenting `me`.
pub fn server_config(
    me: &LocalIdentity,
    verifier: Arc<PinnedClientVerifier>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(version_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysPresent(me.certified.clone())));
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// What a TLS failure means for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// Our verifier refused the certificate the peer presented.
    PeerCertificateRefused,
    /// The peer sent an alert refusing our certificate.
    OurCertificateRefused,
    /// Anything else (network error, reset, garbage, version mismatch).
    Other,
}

/// The rustls error inside an I/O error from tokio-rustls, if any.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Classifies an I/O error from a TLS handshake or TLS stream.
pub fn classify(e: &std::io::Error) -> TlsFailure {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(_))
        | Some(rustls::Error::NoCertificatesPresented) => TlsFailure::PeerCertificateRefused,
        Some(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRequired
            | AlertDescription::AccessDenied
            | AlertDescription::DecryptError,
        )) => TlsFailure::OurCertificateRefused,
        _ => TlsFailure::Other,
    }
}

/// Turns an I/O error on the connection with `peer` into a crate error: a refused certificate
/// is [`Error::Authentication`], anything else [`Error::PeerFailure`].
pub fn io_error(peer: &str, doing: &str, e: std::io::Error) -> Error {
    match classify(&e) {
        TlsFailure::PeerCertificateRefused => Error::authentication(format!(
            "{peer} presented a certificate other than the one registered for it"
        ))
        .with_hint(format!(
            "{peer} may have a new identity: check its fingerprint out of band and register its current certificate"
        )),
        TlsFailure::OurCertificateRefused => Error::authentication(format!(
            "{peer} refused this party's certificate: it has a different certificate registered for this party"
        ))
        .with_hint(format!(
            "ask {peer} to register this party's current certificate (check the fingerprint)"
        )),
        TlsFailure::Other => Error::peer(format!("connection with {peer} failed while {doing}: {e}")),
    }
}
