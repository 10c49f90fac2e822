//! TLS 1.3 configurations for the negotiation mesh, and classification of TLS/IO errors.
//!
//! Always the ring provider, passed explicitly (`builder_with_provider`), never a process-global
//! default provider, so that the crate behaves the same whatever else the process installed.
//! SNI is not sent (peers have no names).
//!
//! **Resumption.** Only a party agent's acceptor issues TLS 1.3 session tickets
//! ([`server_config_resumable`]; a one-shot `negotiate` never does: it would not be there for the
//! next session, and a ticket its peer left unread could turn a clean close into a reset). Every
//! client keeps the tickets it receives in one process-wide cache, under a name derived from the
//! pinned certificate it dialed *and* its own certificate ([`server_name`]), so a ticket is only
//! ever offered to the party whose registered certificate issued it, by the identity that earned
//! it; a registration changed on either side means another name, hence a full handshake. A
//! resumed handshake is PSK with (EC)DHE (fresh keys, forward secret; no 0-RTT), and the peer
//! certificates it restores are checked again: the client compares the server's with the pinned
//! one ([`is_pinned_server`]), the agent identifies the client's against the peers registered
//! *now*, as after a full handshake. Each session still exchanges its own hello, which binds the
//! session id, the party list and the parameters, on its own connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::{ClientSessionMemoryCache, ResolvesClientCert, Resumption, Tls12Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ProducesTickets;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::HandshakeKind;
use rustls::{AlertDescription, ClientConfig, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use super::pinned_verifier::{PinnedCert, PinnedClientVerifier, PinnedServerVerifier};
use crate::error::{Error, Result};

/// The crypto provider of all secagg TLS connections: ring, with TLS 1.3's SHA-256 suites
/// preferred (AES-128-GCM, then ChaCha20-Poly1305) over AES-256-GCM-SHA384: the key schedule and
/// transcript then hash with SHA-256, which ring runs on the CPU's SHA extensions, where SHA-384
/// runs in software (it was 4–5 % of an agent's time per session). Every suite stays on offer.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    Arc::new(provider)
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

/// TLS sessions a process keeps for resumption: enough for one per peer of a large federation.
const CLIENT_SESSIONS: usize = 4096;

/// The process-wide cache of session tickets received (see the module documentation).
fn client_sessions() -> Arc<ClientSessionMemoryCache> {
    static CACHE: OnceLock<Arc<ClientSessionMemoryCache>> = OnceLock::new();
    CACHE
        .get_or_init(|| Arc::new(ClientSessionMemoryCache::new(CLIENT_SESSIONS)))
        .clone()
}

/// The name under which a client dials `peer` as `me`: never sent (SNI is off) nor checked (the
/// certificate is pinned), it keys the ticket cache, so it is derived from both certificates.
pub fn server_name(me: &LocalIdentity, peer: &PinnedCert) -> ServerName<'static> {
    let mut h = Sha256::new();
    h.update(b"secagg resumption name v1\0");
    let own = me.certified.cert.first().map(|c| c.as_ref()).unwrap_or(&[]);
    h.update((own.len() as u64).to_be_bytes());
    h.update(own);
    h.update(peer.der());
    let name = format!("{}.secagg.invalid", hex::encode(&h.finalize()[..16]));
    ServerName::try_from(name).expect("a valid DNS name")
}

/// Whether the certificate a server presented, or that a resumed session restored, is exactly
/// `peer`. The verifier checks a full handshake; this re-checks after any handshake.
pub fn is_pinned_server(
    peer_certificates: Option<&[CertificateDer<'_>]>,
    peer: &PinnedCert,
) -> bool {
    peer_certificates
        .and_then(|c| c.first())
        .is_some_and(|c| peer.is(c.as_ref()))
}

static FULL_HANDSHAKES: AtomicU64 = AtomicU64::new(0);
static RESUMED_HANDSHAKES: AtomicU64 = AtomicU64::new(0);

/// Counts a completed handshake of this process by kind (for the agent's status).
pub fn record_handshake(kind: Option<HandshakeKind>) {
    match kind {
        Some(HandshakeKind::Resumed) => RESUMED_HANDSHAKES.fetch_add(1, Ordering::Relaxed),
        _ => FULL_HANDSHAKES.fetch_add(1, Ordering::Relaxed),
    };
}

/// Handshakes this process completed so far: (full, resumed).
pub fn handshake_counts() -> (u64, u64) {
    (
        FULL_HANDSHAKES.load(Ordering::Relaxed),
        RESUMED_HANDSHAKES.load(Ordering::Relaxed),
    )
}

/// A ticket issuer for [`server_config_resumable`] (one per agent: every configuration it builds
/// must accept the tickets of the previous ones).
pub fn ticketer() -> Result<Arc<dyn ProducesTickets>> {
    rustls::crypto::ring::Ticketer::new()
        .map_err(|e| Error::Internal(format!("cannot create a TLS ticket key: {e}")))
}

/// Client config for dialing the party whose registered certificate is `peer`: pins it, and
/// presents `me` as the client certificate. Dial with [`server_name`]`(me, peer)`, so that a
/// ticket this party got from `peer` (an agent) resumes the next connection to it.
///
/// One configuration per (own certificate, pinned certificate) is kept for the process's
/// lifetime: rustls resumes a ticket only with the very verifier and client credentials that
/// earned it, so this is what lets a later session resume, and it ties every ticket to the pin
/// it was verified against.
pub fn client_config(
    me: &LocalIdentity,
    peer: PinnedCert,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>> {
    static CONFIGS: OnceLock<Mutex<HashMap<String, Arc<ClientConfig>>>> = OnceLock::new();
    let key = server_name(me, &peer).to_str().into_owned();
    let mut configs = CONFIGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = configs.get(&key) {
        return Ok(c.clone());
    }
    let config = build_client_config(me, peer, provider, true)?;
    // Bounded like the ticket cache: past that many peers, start over (full handshakes again).
    if configs.len() >= CLIENT_SESSIONS {
        configs.clear();
    }
    configs.insert(key, config.clone());
    Ok(config)
}

/// [`client_config`] that neither offers nor keeps tickets: always a full handshake.
pub fn client_config_without_resumption(
    me: &LocalIdentity,
    peer: PinnedCert,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ClientConfig>> {
    build_client_config(me, peer, provider, false)
}

fn build_client_config(
    me: &LocalIdentity,
    peer: PinnedCert,
    provider: &Arc<CryptoProvider>,
    resume: bool,
) -> Result<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(version_error)?
        .dangerous()
        .with_custom_certificate_verifier(PinnedServerVerifier::new(peer, provider))
        .with_client_cert_resolver(Arc::new(AlwaysPresent(me.certified.clone())));
    config.enable_sni = false;
    config.resumption = if resume {
        Resumption::store(client_sessions()).tls12_resumption(Tls12Resumption::Disabled)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// Server config for accepting the parties in `verifier`'s set, presenting `me`.
pub fn server_config(
    me: &LocalIdentity,
    verifier: Arc<PinnedClientVerifier>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>> {
    let mut config = pinned_server_config(me, verifier, provider)?;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// TLS 1.3 only, the pinned client verifier, `me`'s certificate, no server-side session cache.
fn pinned_server_config(
    me: &LocalIdentity,
    verifier: Arc<PinnedClientVerifier>,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(version_error)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(AlwaysPresent(me.certified.clone())));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// [`server_config`] that issues session tickets from `ticketer` (a party agent's acceptor: its
/// peers resume their next connections; see the module documentation). Two tickets per
/// connection, so that concurrent sessions between the same two agents find one each.
pub fn server_config_resumable(
    me: &LocalIdentity,
    verifier: Arc<PinnedClientVerifier>,
    provider: &Arc<CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>> {
    let mut config = pinned_server_config(me, verifier, provider)?;
    config.ticketer = ticketer;
    config.send_tls13_tickets = 2;
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
        // In a negotiation, a party given the parties in another order expects other parties to
        // connect and refuses this one the same way (issue 23, item 8): both causes are named.
        TlsFailure::OurCertificateRefused => Error::authentication(format!(
            "{peer} refused this party's certificate: either it has another certificate registered for this party, or, in a negotiation, its party list differs from this one (order included), so it does not expect this party to connect"
        ))
        .with_hint(format!(
            "first check that every party gives the same parties in the same order, researcher first; if they do, ask {peer} to register this party's current certificate (check the fingerprint)"
        )),
        TlsFailure::Other => Error::peer(format!("connection with {peer} failed while {doing}: {e}")),
    }
}

#[cfg(test)]
pub(crate) mod resumption_tests_support {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A party: its identity and its certificate as peers pin it.
    pub(crate) fn party(name: &str) -> (LocalIdentity, PinnedCert) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["*".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, name);
        let cert = params.self_signed(&key).unwrap();
        let provider = provider();
        let id = LocalIdentity::new(name, cert.der(), &key.serialize_der(), &provider).unwrap();
        (id, PinnedCert::new(name, cert.der()).unwrap())
    }

    /// An agent-like acceptor for `me` (tickets from `ticketer`) accepting `clients`; answers one
    /// byte on every connection (so that the client reads, and keeps, the tickets).
    pub(super) async fn serve(
        me: &LocalIdentity,
        clients: Vec<PinnedCert>,
        ticketer: Arc<dyn ProducesTickets>,
    ) -> std::net::SocketAddr {
        let provider = provider();
        let verifier =
            PinnedClientVerifier::new(clients.into_iter().enumerate().collect(), &provider);
        let config = server_config_resumable(me, verifier, &provider, ticketer).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = TlsAcceptor::from(config.clone());
                tokio::spawn(async move {
                    if let Ok(mut s) = acceptor.accept(tcp).await {
                        let _ = s.write_all(b"x").await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    /// Dials `addr` as `me`, pinning `peer`: the handshake's kind, and whether the certificate
    /// it ended with is the pinned one.
    pub(super) async fn dial(
        me: &LocalIdentity,
        peer: &PinnedCert,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(Option<HandshakeKind>, bool)> {
        dial_with(
            client_config(me, peer.clone(), &provider()).unwrap(),
            me,
            peer,
            addr,
        )
        .await
    }

    /// [`dial`] with `config`.
    pub(super) async fn dial_with(
        config: Arc<ClientConfig>,
        me: &LocalIdentity,
        peer: &PinnedCert,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(Option<HandshakeKind>, bool)> {
        let tcp = TcpStream::connect(addr).await?;
        let mut s = TlsConnector::from(config)
            .connect(server_name(me, peer), tcp)
            .await?;
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await?;
        let conn = s.get_ref().1;
        Ok((
            conn.handshake_kind(),
            is_pinned_server(conn.peer_certificates(), peer),
        ))
    }
}

#[cfg(test)]
mod resumption_tests {
    use super::resumption_tests_support::*;
    use super::*;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;

    #[tokio::test]
    async fn the_second_connection_resumes_and_stays_pinned_to_that_certificate_only() {
        let (a, a_pin) = party("node_a");
        let (b, b_pin) = party("node_b");
        let (c, c_pin) = party("researcher_c");
        let (c2, c2_pin) = party("researcher_c2");
        let ticketer = ticketer().unwrap();
        let a_addr = serve(&a, vec![c_pin.clone(), c2_pin.clone()], ticketer.clone()).await;

        let first = dial(&c, &a_pin, a_addr).await.unwrap();
        assert_eq!(first, (Some(HandshakeKind::Full), true));
        let second = dial(&c, &a_pin, a_addr).await.unwrap();
        assert_eq!(second, (Some(HandshakeKind::Resumed), true));

        // Another identity of the client does not use the tickets the first one earned.
        let other = dial(&c2, &a_pin, a_addr).await.unwrap();
        assert_eq!(other, (Some(HandshakeKind::Full), true));

        // A (holding its ticket key) answers at an address where C expects B: C offers no
        // ticket of A's under B's name, so the handshake is a full one, and A's certificate is
        // refused by the pin on B.
        let impostor = serve(&a, vec![c_pin.clone()], ticketer).await;
        let e = dial(&c, &b_pin, impostor).await.unwrap_err();
        assert_eq!(classify(&e), TlsFailure::PeerCertificateRefused, "{e}");
        // B itself, reached as B, is of course fine (and a first contact: full).
        let b_addr = serve(&b, vec![c_pin], super::ticketer().unwrap()).await;
        assert_eq!(
            dial(&c, &b_pin, b_addr).await.unwrap(),
            (Some(HandshakeKind::Full), true)
        );
    }

    #[tokio::test]
    async fn a_config_without_resumption_always_does_a_full_handshake() {
        let (a, a_pin) = party("node_a");
        let (c, c_pin) = party("researcher_c");
        let addr = serve(&a, vec![c_pin], ticketer().unwrap()).await;
        dial(&c, &a_pin, addr).await.unwrap();
        let config = client_config_without_resumption(&c, a_pin.clone(), &provider()).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let s = TlsConnector::from(config)
            .connect(server_name(&c, &a_pin), tcp)
            .await
            .unwrap();
        assert_eq!(s.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
    }
}

#[cfg(test)]
mod handshake_cost {
    use super::resumption_tests_support::*;
    use super::*;

    /// Measures full and resumed handshakes (with the agent's configuration) over loopback:
    /// `cargo test --release -p secagg-core handshake_cost -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn full_and_resumed_handshakes() {
        let (a, a_pin) = party("node_a");
        let (c, c_pin) = party("node_c");
        let addr = serve(&a, vec![c_pin], ticketer().unwrap()).await;
        let rounds = 200;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let config = client_config_without_resumption(&c, a_pin.clone(), &provider()).unwrap();
            let (kind, pinned) = dial_with(config, &c, &a_pin, addr).await.unwrap();
            assert!(pinned && kind == Some(HandshakeKind::Full));
        }
        let full = started.elapsed() / rounds;
        dial(&c, &a_pin, addr).await.unwrap();
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let (kind, pinned) = dial(&c, &a_pin, addr).await.unwrap();
            assert!(pinned && kind == Some(HandshakeKind::Resumed));
        }
        let resumed = started.elapsed() / rounds;
        eprintln!(
            "measured: ECDSA P-256 mutual TLS 1.3 over loopback, connect + handshake + 1 byte: full {:.0} µs, resumed {:.0} µs",
            full.as_secs_f64() * 1e6,
            resumed.as_secs_f64() * 1e6
        );
    }
}
