//! The connection phase: one mutually authenticated TLS 1.3 connection per pair of parties,
//! each bound to the session by a [`Hello`] exchange.
//!
//! Party `i` dials every party `j > i` and accepts from every party `j < i`: the researcher
//! (party 0) only dials and needs no inbound port, the last node only accepts, and every pair has
//! exactly one connection without any tie-breaking. A session run through the party agents
//! brings the researcher–node connections along instead ([`ControlLink`]: the connection the
//! researcher's join came on), which are then neither dialed nor accepted, only bound by the
//! same hello exchange. All dials run concurrently, with retry and
//! exponential backoff (5 ms doubling to 250 ms) until the session deadline, because peers start
//! at different times. Inbound handshakes also run concurrently, so a slow or garbage connection
//! cannot hold up the others.
//!
//! Failures that end the session all involve an expected party at its registered endpoint or
//! authenticated by its pinned certificate:
//! - the party we dial presents another certificate than the one registered for it, or refuses
//!   ours (its alert arrives after we authenticated it) → [`Error::Authentication`] naming it;
//! - an authenticated peer sends a Hello with another session id, party list/parameters, sender
//!   index or protocol version → [`Error::PeerFailure`] naming it;
//! - the deadline → [`Error::Timeout`] naming every party not connected, with the last error seen
//!   when dialing it and the number of inbound connections that were rejected.
//!
//! An inbound connection that does not authenticate as one of the parties expected to dial in
//! (no certificate, an unknown or self-signed one, a refusal of ours, garbage, a port scanner, an
//! idle TCP connection) cannot disturb the session: it is dropped, counted, and reported through
//! the caller's warning callback with its remote address (the first [`MAX_REJECTION_WARNINGS`]
//! one by one, then only the count). Each inbound handshake has its own [`HANDSHAKE_TIMEOUT`],
//! and at most [`MAX_PENDING_HANDSHAKES`] more than the session has parties run at once: a new
//! connection beyond that evicts the oldest pending one, so a flood of idle connections neither
//! exhausts file descriptors nor locks out a real peer (whose handshake takes milliseconds).
//!
//! Fail fast: every bound connection gets a reader task at once, so an `Abort` or a disconnect
//! of a connected peer ends the connection phase immediately. On failure, the connected peers get
//! an `Abort` frame at once, and the party then *lingers* for [`LINGER`] (listening and dialing
//! on, answering every new connection with `Abort` instead of a hello) so that peers that had not
//! reached it yet fail within a fraction of a second instead of at the deadline.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use super::frame::{read_frame, write_frame, Frame, MsgType};
use super::pinned_verifier::{PinnedCert, PinnedClientVerifier};
use super::pool::{Pool, PoolKey};
use super::tls::{self, classify, LocalIdentity, TlsFailure};
use crate::error::{Error, Result};
use crate::party::{Endpoint, Host, SessionId};
/// `text` from a peer made safe to print ([`crate::untrusted_text::escape`]).
pub use crate::untrusted_text::escape as escape_peer_text;
use zeroize::Zeroizing;

/// Version of the native protocol carried in [`Hello`].
pub const PROTOCOL_VERSION: u16 = 2;

/// First backoff delay between dial attempts.
pub const DIAL_BACKOFF_START: Duration = Duration::from_millis(5);
/// Largest backoff delay between dial attempts.
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// How long a failing party spends telling its peers (best effort).
pub const ABORT_GRACE: Duration = Duration::from_millis(250);

/// How long an inbound connection may take to complete the TLS handshake (a real peer needs
/// milliseconds; an idle or slow stranger is dropped after this).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Inbound TLS handshakes in progress at once beyond the session's own parties (the budget for
/// strangers); a new connection beyond that evicts the oldest.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Inbound handshakes that may be pending at once, where up to `expected_peers` real parties may
/// dial in together: the stranger budget on top of them. With a hundred parties on a loaded
/// machine real handshakes take long enough to pile up (regression: a fixed cap of 64 evicted
/// them, failing 100-party sessions with resets and broken pipes).
pub fn pending_handshake_cap(expected_peers: usize) -> usize {
    MAX_PENDING_HANDSHAKES + expected_peers
}

/// Rejected inbound connections reported one by one; the rest are only counted.
pub const MAX_REJECTION_WARNINGS: usize = 10;

/// One party as the connection phase knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshParty {
    /// How messages name the party (its party id).
    pub label: String,
    /// Where it listens; dialed if its index is above this party's.
    pub endpoint: Endpoint,
    /// The certificate it must present (DER), pinned: no other is accepted for it.
    pub certificate_der: Vec<u8>,
}

/// Everything the connection phase needs, and nothing about the protocol that runs over it: the
/// caller (an engine) computes it, including the transcript binding that both sides of every
/// connection must agree on.
pub struct MeshConfig {
    /// The session id carried in the hello and checked against the peer's.
    pub session_id: SessionId,
    /// Every party of the session, this one included, in session order.
    pub parties: Vec<MeshParty>,
    /// This party's index in `parties`.
    pub my_index: usize,
    /// This party's private key (PKCS#8 DER), matching its certificate.
    pub key_pkcs8_der: Zeroizing<Vec<u8>>,
    /// Where to listen for the parties of lower index (unused by party 0, which only dials).
    pub listen: SocketAddr,
    /// Hash of everything else the parties must agree on, carried in the hello; a peer whose
    /// binding differs is refused.
    pub binding: [u8; 32],
    /// The whole session's timeout, only to say in a timeout error how long was waited.
    pub timeout: Duration,
}

impl std::fmt::Debug for MeshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConfig")
            .field("session_id", &self.session_id)
            .field(
                "parties",
                &self.parties.iter().map(|p| &p.label).collect::<Vec<_>>(),
            )
            .field("my_index", &self.my_index)
            .field("key_pkcs8_der", &"<redacted>")
            .field("listen", &self.listen)
            .field("binding", &hex::encode(self.binding))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The session-binding first frame, sent both ways on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The sender's session id.
    pub session_id: SessionId,
    /// The sender's index in its party list.
    pub sender: u32,
    /// The sender's [`MeshConfig::binding`].
    pub binding: [u8; 32],
}

const HELLO_LEN: usize = 2 + 16 + 4 + 32;

impl Hello {
    /// The Hello of `config`'s own party.
    pub fn for_config(config: &MeshConfig) -> Self {
        Hello {
            version: PROTOCOL_VERSION,
            session_id: config.session_id,
            sender: config.my_index as u32,
            binding: config.binding,
        }
    }

    /// As a frame: version (u16 BE), session id (16 bytes), sender (u32 BE), binding (32 bytes).
    pub fn to_frame(&self) -> Frame {
        let mut p = Vec::with_capacity(HELLO_LEN);
        p.extend_from_slice(&self.version.to_be_bytes());
        p.extend_from_slice(self.session_id.as_uuid().as_bytes());
        p.extend_from_slice(&self.sender.to_be_bytes());
        p.extend_from_slice(&self.binding);
        Frame::new(MsgType::Hello, p)
    }

    /// Decodes a Hello payload from `peer`. The version is checked first, so that a future
    /// version with another layout gets a clear "unsupported version" error.
    pub fn decode(payload: &[u8], peer: &str) -> Result<Self> {
        if payload.len() < 2 {
            return Err(
                Error::peer(format!("protocol violation by {peer}: truncated hello"))
                    .with_origin(peer, None),
            );
        }
        let version = u16::from_be_bytes([payload[0], payload[1]]);
        if version != PROTOCOL_VERSION {
            return Err(Error::peer(format!(
                "{peer} speaks native protocol version {version}, this party speaks version {PROTOCOL_VERSION}"
            ))
            .with_hint("run the same secagg version on every party")
            .with_origin(peer, None));
        }
        if payload.len() != HELLO_LEN {
            return Err(Error::peer(format!(
                "protocol violation by {peer}: hello of {} bytes, expected {HELLO_LEN}",
                payload.len()
            ))
            .with_origin(peer, None));
        }
        let session_id = uuid::Uuid::from_slice(&payload[2..18])
            .expect("16 bytes")
            .into();
        let sender = u32::from_be_bytes(payload[18..22].try_into().expect("4 bytes"));
        let binding = payload[22..54].try_into().expect("32 bytes");
        Ok(Hello {
            version,
            session_id,
            sender,
            binding,
        })
    }
}

/// An established, session-bound connection to one peer.
pub struct Link {
    /// The peer's index in the party list.
    pub peer: usize,
    /// The TLS stream (client side if we dialed, server side if we accepted).
    pub stream: TlsStream<TcpStream>,
    /// How the connection may be kept after a clean end of the session (party agents, between
    /// two nodes); `None`: it is closed.
    pub keep: Option<Keep>,
}

/// How a connection is kept after a clean end of its session ([`super::pool`]).
#[derive(Debug)]
pub enum Keep {
    /// This party dialed it for the party and pinned certificate of the key: it may start a
    /// later session on it.
    Dialed(PoolKey),
    /// This party accepted it from this address: it waits for the peer's next hello on it.
    Accepted(SocketAddr),
    /// The control connection between the researcher and a node's agent ([`ControlLink`]): it
    /// goes back to its owner, who exchanges the node's report on it.
    Control(oneshot::Sender<TlsStream<TcpStream>>),
}

/// The control connection of a session run through the party agents (`crate::agent`), on which
/// the session's researcher asked the node's agent to join: already authenticated (pinned mutual
/// TLS) as the researcher's or the node's registered certificate, it carries their negotiation
/// too, instead of one more connection and TLS handshake per node. The hello exchange binds it
/// to the session as any other; after a clean end of this party's side (both `End`s), the
/// stream is sent back through `give_back`; after a failure it gets the abort and is closed.
pub struct ControlLink {
    /// The peer's index in the party list (0: the researcher, at a node).
    pub peer: usize,
    /// The stream, handshake done, the join and start exchanged.
    pub stream: TlsStream<TcpStream>,
    /// Where the stream goes after a clean end.
    pub give_back: oneshot::Sender<TlsStream<TcpStream>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link(peer {})", self.peer)
    }
}

/// The write half of a session connection.
pub type Writer = WriteHalf<TlsStream<TcpStream>>;

/// The read half of a session connection.
type Reader = ReadHalf<TlsStream<TcpStream>>;

/// What a connection's reader task reports.
#[derive(Debug)]
pub enum ReadEvent {
    /// A frame arrived.
    Frame(Frame),
    /// The peer's `End` on a connection that may be kept ([`Link::keep`]): its session
    /// succeeded and it sends nothing more for it. The reader stopped right after it, so that
    /// whatever follows (the next session's hello) is left unread.
    Ended,
    /// End of stream (`None`) or a read error (`Some`), after which the reader stops.
    Closed(Option<Error>),
}

/// All connections of one party once the connection phase succeeded.
///
/// Each connection is split: `writers[j]` writes to party `j` (`None` for this party itself),
/// and a reader task per connection forwards `(j, event)` to one channel, so a party notices an
/// abort or a disconnect of any peer at once, whatever it is waiting for. Readers started as
/// soon as each connection was bound, so frames that early peers sent during the connection
/// phase are kept, in order, and delivered first by [`Mesh::next_event`].
pub struct Mesh {
    /// Indexed by party.
    pub writers: Vec<Option<Writer>>,
    events: mpsc::UnboundedReceiver<(usize, ReadEvent)>,
    pending: VecDeque<(usize, ReadEvent)>,
    /// Indexed by party: the reader task, which returns its half after the peer's `End` on a
    /// connection that may be kept.
    readers: Vec<Option<JoinHandle<Option<Reader>>>>,
    /// Indexed by party: how the connection may be kept after a clean end.
    keep: Vec<Option<Keep>>,
    pool: Option<Arc<Pool>>,
    labels: Vec<String>,
    deadline: Instant,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<usize> = (0..self.writers.len())
            .filter(|&j| self.writers[j].is_some())
            .collect();
        write!(f, "Mesh(peers {peers:?})")
    }
}

impl Mesh {
    /// The next read event from any peer, or `None` once `deadline` passed (or every reader has
    /// stopped and nothing is pending).
    pub async fn next_event(&mut self, deadline: Instant) -> Option<(usize, ReadEvent)> {
        if let Some(ev) = self.pending.pop_front() {
            return Some(ev);
        }
        timeout_at(deadline, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Takes every writer (with the peer index) out of the mesh, e.g. to close or abort them.
    pub fn take_writers(&mut self) -> Vec<(usize, Writer)> {
        self.writers
            .iter_mut()
            .enumerate()
            .filter_map(|(j, w)| w.take().map(|w| (j, w)))
            .collect()
    }

    /// Stops the reader tasks.
    pub fn stop_readers(&mut self) {
        for r in self.readers.iter_mut().filter_map(Option::take) {
            r.abort();
        }
    }

    /// Ends the session's connections after this party's side succeeded: the connections that
    /// may be kept ([`Link::keep`]) get an `End` and go to the pool once the peer's `End`
    /// arrived too (in the background: the session does not wait for its peers to finish); the
    /// others are closed (TLS close_notify), bounded by [`ABORT_GRACE`].
    pub async fn close(&mut self) {
        let until = Instant::now() + ABORT_GRACE;
        let mut set = JoinSet::new();
        for (j, mut w) in self.take_writers() {
            match (self.keep[j].take(), &self.pool, self.readers[j].take()) {
                (Some(Keep::Control(give_back)), _, Some(reader)) => {
                    let end_by = (Instant::now() + super::pool::END_WAIT).min(self.deadline);
                    tokio::spawn(end_and_give_back(
                        self.labels[j].clone(),
                        give_back,
                        w,
                        reader,
                        end_by,
                    ));
                }
                (Some(keep), Some(pool), Some(reader)) => {
                    let end_by = (Instant::now() + super::pool::END_WAIT).min(self.deadline);
                    tokio::spawn(end_and_keep(
                        pool.clone(),
                        self.labels[j].clone(),
                        keep,
                        w,
                        reader,
                        end_by,
                    ));
                }
                (_, _, reader) => {
                    if let Some(r) = reader {
                        r.abort();
                    }
                    set.spawn(async move {
                        let _ = timeout_at(until, w.shutdown()).await;
                    });
                }
            }
        }
        let _ = timeout_at(until, async { while set.join_next().await.is_some() {} }).await;
        self.stop_readers();
    }
}

impl Drop for Mesh {
    /// Readers are tasks of their own (a kept connection's outlives the session): whatever way
    /// the session ends, the ones still running stop with it. A connection that could have been
    /// kept but was not handed to [`Mesh::close`] (the session failed) is counted as not kept.
    fn drop(&mut self) {
        self.stop_readers();
        if let Some(pool) = &self.pool {
            for keep in self.keep.iter().flatten() {
                if !matches!(keep, Keep::Control(_)) {
                    pool.count_not_kept();
                }
            }
        }
    }
}

/// Sends `End` on `writer` and waits for the peer's (its reader returning the read half), until
/// `until`: the whole stream back after a clean end at both ends.
async fn end_both_ways(
    label: &str,
    mut writer: Writer,
    reader: JoinHandle<Option<Reader>>,
    until: Instant,
) -> std::result::Result<TlsStream<TcpStream>, Writer> {
    let abort = reader.abort_handle();
    let ended = async {
        write_frame(
            &mut writer,
            &Frame::new(MsgType::End, Vec::new()),
            until,
            label,
        )
        .await
        .ok()?;
        timeout_at(until, reader).await.ok()?.ok()?
    };
    match ended.await {
        Some(reader) => Ok(reader.unsplit(writer)),
        None => {
            abort.abort();
            Err(writer)
        }
    }
}

/// After a clean end of this party's session on a control connection ([`ControlLink`]): the
/// stream back to its owner once both `End`s passed; otherwise it is closed (the owner's
/// receiver then fails).
async fn end_and_give_back(
    label: String,
    give_back: oneshot::Sender<TlsStream<TcpStream>>,
    writer: Writer,
    reader: JoinHandle<Option<Reader>>,
    until: Instant,
) {
    match end_both_ways(&label, writer, reader, until).await {
        Ok(stream) => {
            let _ = give_back.send(stream);
        }
        Err(mut writer) => {
            let _ = timeout_at(Instant::now() + ABORT_GRACE, writer.shutdown()).await;
        }
    }
}

/// After a clean end of this party's session: sends `End` to the peer and, once the peer's `End`
/// arrived (its reader returned the read half), keeps the connection in `pool`; otherwise (a
/// write error, the peer's abort or close, `until`) closes it.
async fn end_and_keep(
    pool: Arc<Pool>,
    label: String,
    keep: Keep,
    writer: Writer,
    reader: JoinHandle<Option<Reader>>,
    until: Instant,
) {
    let stream = match end_both_ways(&label, writer, reader, until).await {
        Ok(stream) => stream,
        Err(mut writer) => {
            pool.count_not_kept();
            let _ = timeout_at(Instant::now() + ABORT_GRACE, writer.shutdown()).await;
            return;
        }
    };
    match (stream, keep) {
        (TlsStream::Client(s), Keep::Dialed(key)) => pool.keep_dialed(key, s),
        (TlsStream::Server(s), Keep::Accepted(addr)) => pool.keep_accepted(&label, s, addr),
        (mut s, _) => {
            // Cannot happen (a dialed connection is a client's); close it rather than guess.
            pool.count_not_kept();
            let _ = timeout_at(Instant::now() + ABORT_GRACE, s.shutdown()).await;
        }
    }
}

enum Event {
    Connected(Box<Link>),
    Failed(Error),
    /// An inbound connection did not authenticate as an expected party and was dropped.
    Rejected(SocketAddr, Rejection),
}

/// Why an inbound connection was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rejection {
    NoCertificate,
    UnknownCertificate,
    RefusedOurCertificate,
    NotTls(String),
    HandshakeTimeout,
    /// Evicted as the oldest of this many pending handshakes.
    Evicted(usize),
}

impl Rejection {
    fn describe(&self, expected: &str, me: &str) -> String {
        match self {
            Rejection::NoCertificate => "presented no client certificate".to_owned(),
            Rejection::UnknownCertificate => format!(
                "presented a certificate registered for none of the parties expected to connect ({expected})"
            ),
            Rejection::RefusedOurCertificate => format!(
                "refused the certificate of {me} (if it is one of {expected}, that party has another certificate registered for {me} and must register the current one)"
            ),
            Rejection::NotTls(e) => format!("did not complete a TLS 1.3 handshake ({e})"),
            Rejection::HandshakeTimeout => format!(
                "did not complete the TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
            Rejection::Evicted(cap) => format!(
                "was still handshaking when more than {cap} connections were pending"
            ),
        }
    }
}

struct Ctx {
    labels: Vec<String>,
    endpoints: Vec<Endpoint>,
    hello: Hello,
    session_id: SessionId,
    deadline: Instant,
    /// This party's index in `labels`.
    me: usize,
    /// Set when this party has failed and lingers: new connections get this abort reason
    /// instead of a hello.
    abort_reason: Mutex<Option<String>>,
}

impl Ctx {
    /// This party's index.
    fn me(&self) -> usize {
        self.hello.sender as usize
    }
}

/// How long a party that failed during the connection phase keeps listening and dialing, only to
/// tell parties that had not reached it yet (they retry every ≤ 250 ms) that the session is
/// aborted, instead of letting them wait for the deadline.
pub const LINGER: Duration = Duration::from_millis(600);

/// Runs the connection phase for `config`'s party until every peer is connected and bound, or
/// the first failure, or `deadline`. See the module documentation for the failure semantics;
/// `warn` receives one line per dropped stranger (remote address and reason).
#[cfg(test)] // the engine builds a [`Connect`]
pub async fn establish(
    config: &MeshConfig,
    deadline: Instant,
    warn: &mut (dyn FnMut(String) + Send),
) -> Result<Mesh> {
    Connect::new(config, deadline).run(warn).await
}

/// One connection phase to run: its config and deadline ([`Connect::new`]), then one method per
/// other source of connections or of its end, then [`Connect::run`].
pub struct Connect<'a, S> {
    config: &'a MeshConfig,
    deadline: Instant,
    inbound: Option<mpsc::UnboundedReceiver<Routed>>,
    pool: Option<Arc<Pool>>,
    control: Vec<ControlLink>,
    stop: S,
}

impl<'a> Connect<'a, std::future::Pending<Error>> {
    /// The phase of `config`'s party, bounded by `deadline`: it listens on
    /// [`MeshConfig::listen`], dials its peers, keeps nothing and is never cancelled, unless
    /// told otherwise.
    pub fn new(config: &'a MeshConfig, deadline: Instant) -> Self {
        Connect {
            config,
            deadline,
            inbound: None,
            pool: None,
            control: Vec::new(),
            stop: std::future::pending(),
        }
    }
}

impl<'a, S: std::future::Future<Output = Error>> Connect<'a, S> {
    /// Takes the inbound connections from `inbound` (routed by a shared acceptor) instead of
    /// binding [`MeshConfig::listen`].
    pub fn inbound(mut self, inbound: Option<mpsc::UnboundedReceiver<Routed>>) -> Self {
        self.inbound = inbound;
        self
    }

    /// Uses a party agent's `pool` of kept connections: connections between two nodes are taken
    /// from it when it has one for the party and its pinned certificate, and marked to be kept
    /// after a clean end ([`Link::keep`]).
    pub fn pool(mut self, pool: Option<Arc<Pool>>) -> Self {
        self.pool = pool;
        self
    }

    /// The `control` connections of a session run through the agents, over which this party
    /// neither dials nor waits for the peer to dial.
    pub fn control(mut self, control: Vec<ControlLink>) -> Self {
        self.control = control;
        self
    }

    /// Ends the phase with `stop`'s error when it resolves first (the operator cancelled), as
    /// any other failure: the peers connected so far get the abort with its reason.
    pub fn stop_on<T: std::future::Future<Output = Error>>(self, stop: T) -> Connect<'a, T> {
        Connect {
            config: self.config,
            deadline: self.deadline,
            inbound: self.inbound,
            pool: self.pool,
            control: self.control,
            stop,
        }
    }

    /// Runs the phase until every peer is connected and bound, the first failure, `stop`, or
    /// the deadline; `warn` receives one line per dropped stranger.
    pub async fn run(self, warn: &mut (dyn FnMut(String) + Send)) -> Result<Mesh> {
        establish_with(self, warn).await
    }
}

/// An inbound connection that a shared acceptor (the party agent, `crate::agent`) took on this
/// party's port, authenticated as *some* registered peer and routed to this session by the session
/// id of the client's hello, which it already read. The session still checks, as for a connection
/// it accepted itself, that the certificate is pinned for one of the parties expected to dial in
/// and that the hello matches its own.
pub struct Routed {
    /// The server side of the TLS connection, handshake done.
    pub stream: tokio_rustls::server::TlsStream<TcpStream>,
    /// Where it came from.
    pub addr: SocketAddr,
    /// The client's hello, read by the acceptor.
    pub hello: Hello,
}

/// [`Connect::run`].
async fn establish_with(
    phase: Connect<'_, impl std::future::Future<Output = Error>>,
    warn: &mut (dyn FnMut(String) + Send),
) -> Result<Mesh> {
    let Connect {
        config,
        deadline,
        inbound,
        pool,
        control,
        stop,
    } = phase;
    let n = config.parties.len();
    let me = config.my_index;
    let labels: Vec<String> = config.parties.iter().map(|p| p.label.clone()).collect();
    let provider = tls::provider();
    let pinned = config
        .parties
        .iter()
        .map(|p| PinnedCert::new(&p.label, &p.certificate_der))
        .collect::<Result<Vec<_>>>()?;
    let identity = LocalIdentity::new(
        &labels[me],
        &config.parties[me].certificate_der,
        &config.key_pkcs8_der,
        &provider,
    )?;
    let ctx = Arc::new(Ctx {
        labels: labels.clone(),
        endpoints: config.parties.iter().map(|p| p.endpoint.clone()).collect(),
        hello: Hello::for_config(config),
        session_id: config.session_id,
        deadline,
        me,
        abort_reason: Mutex::new(None),
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let mut tasks = JoinSet::new();
    let last_dial_error: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; n]));

    // Every other party of the session is known to the acceptor: a party of lower index dials
    // in; one of higher index dialing in means the lists differ in order, which is reported as
    // such (`dialed_in_another_order`) rather than as a stranger's connection.
    let others = || -> Vec<(usize, PinnedCert)> {
        (0..n)
            .filter(|&j| j != me)
            .map(|j| (j, pinned[j].clone()))
            .collect()
    };
    if let (true, Some(inbound)) = (me > 0, inbound) {
        let verifier = PinnedClientVerifier::new(others(), &provider);
        tasks.spawn(routed_accept_loop(
            ctx.clone(),
            inbound,
            verifier,
            pool.is_some(),
            tx.clone(),
        ));
    } else if me > 0 {
        let addr = config.listen;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            super::listen::bind_error(&labels[me], addr, "negotiation connections", &e)
        })?;
        let verifier = PinnedClientVerifier::new(others(), &provider);
        let server = tls::server_config(&identity, verifier.clone(), &provider)?;
        tasks.spawn(accept_loop(
            ctx.clone(),
            listener,
            TlsAcceptor::from(server),
            verifier,
            tx.clone(),
        ));
    }
    let mut over_control = vec![false; n];
    for link in control {
        let j = link.peer;
        if j == me || j >= n || over_control[j] {
            return Err(Error::Internal(format!(
                "control connection for party {j} of {n}"
            )));
        }
        over_control[j] = true;
        let (ctx, tx) = (ctx.clone(), tx.clone());
        tasks.spawn(async move {
            let ev = match hello_exchange(&ctx, link.stream, j).await {
                Ok(bound) => Event::Connected(Box::new(Link {
                    keep: Some(Keep::Control(link.give_back)),
                    ..bound
                })),
                Err(e) => Event::Failed(e),
            };
            let _ = tx.send(ev);
        });
    }
    for (j, cert) in pinned.iter().enumerate().skip(me + 1) {
        if over_control[j] {
            continue;
        }
        let config = tls::client_config(&identity, cert.clone(), &provider)?;
        let name = tls::server_name(&identity, cert);
        // Only connections between two nodes (two agents) are kept: the researcher's side is
        // a one-shot process.
        let kept = match &pool {
            Some(pool) if me > 0 => Some((
                pool.clone(),
                PoolKey::new(&labels[j], &name.to_str(), &ctx.endpoints[j].to_string()),
            )),
            _ => None,
        };
        tasks.spawn(dial(
            ctx.clone(),
            j,
            (TlsConnector::from(config), name, cert.clone()),
            kept,
            tx.clone(),
            last_dial_error.clone(),
        ));
    }
    drop(tx);

    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let mut mesh = Mesh {
        writers: (0..n).map(|_| None).collect(),
        events: ev_rx,
        pending: VecDeque::new(),
        readers: (0..n).map(|_| None).collect(),
        keep: (0..n).map(|_| None).collect(),
        pool,
        labels: labels.clone(),
        deadline,
    };
    let mut missing = n - 1;
    let mut connecting_open = true;
    let mut rejected = 0usize;
    let mut last_rejection: Option<String> = None;
    let missing_list = |mesh: &Mesh, range: std::ops::Range<usize>| -> Vec<String> {
        range
            .filter(|&j| j != me && mesh.writers[j].is_none())
            .map(|j| labels[j].clone())
            .collect()
    };
    let timeout_error = |mesh: &Mesh, rejected: usize, last_rejection: &Option<String>| {
        let errors = last_dial_error
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let mut parts = Vec::new();
        for j in (0..n).filter(|&j| j != me && mesh.writers[j].is_none()) {
            if j > me {
                let mut s = format!("{} at {}", labels[j], ctx.endpoints[j]);
                if let Some(e) = &errors[j] {
                    s.push_str(&format!(" (last attempt: {e})"));
                }
                parts.push(s);
            } else {
                parts.push(format!("{} (did not connect to this party)", labels[j]));
            }
        }
        let rejections = match (rejected, last_rejection) {
            (0, _) | (_, None) => String::new(),
            (r, Some(last)) => format!(
                "; {r} inbound connection{} failed authentication and {} dropped, the last one {last}",
                if r == 1 { "" } else { "s" },
                if r == 1 { "was" } else { "were" }
            ),
        };
        Error::timeout(format!(
            "session {}: {} timed out after {:.1}s waiting for {}{rejections}",
            config.session_id,
            labels[me],
            config.timeout.as_secs_f64(),
            parts.join(", ")
        ))
        .with_hint("check that every listed party runs the negotiation for this session and that its endpoint is reachable from here (firewall, VPN)")
    };
    tokio::pin!(stop);
    while missing > 0 {
        let failure = tokio::select! {
            e = &mut stop => e,
            ev = rx.recv(), if connecting_open => match ev {
                None => {
                    connecting_open = false;
                    continue;
                }
                Some(Event::Connected(link)) => {
                    let j = link.peer;
                    if mesh.writers[j].is_some() {
                        Error::peer(format!(
                            "protocol violation by {}: it connected twice to {}",
                            labels[j], labels[me]
                        ))
                        .with_origin(labels[j].as_str(), None)
                    } else {
                        let (r, w) = tokio::io::split(link.stream);
                        mesh.writers[j] = Some(w);
                        let keepable = link.keep.is_some();
                        mesh.keep[j] = link.keep;
                        mesh.readers[j] = Some(tokio::spawn(read_loop(
                            r,
                            j,
                            labels[j].clone(),
                            deadline,
                            ev_tx.clone(),
                            keepable,
                        )));
                        missing -= 1;
                        continue;
                    }
                }
                Some(Event::Failed(e)) => e,
                Some(Event::Rejected(addr, why)) => {
                    let mut expected = missing_list(&mesh, 0..me).join(", ");
                    if expected.is_empty() {
                        expected = "none left".to_owned();
                    }
                    let text = format!("from {addr} {}", why.describe(&expected, &labels[me]));
                    rejected += 1;
                    if rejected <= MAX_REJECTION_WARNINGS {
                        warn(format!(
                            "session {}: dropped an inbound connection that failed authentication: it came {text}",
                            config.session_id
                        ));
                    } else if rejected == MAX_REJECTION_WARNINGS + 1 {
                        warn(format!(
                            "session {}: more inbound connections failed authentication; they are dropped and only counted from now on",
                            config.session_id
                        ));
                    }
                    last_rejection = Some(text);
                    continue;
                }
            },
            ev = mesh.events.recv() => match ev {
                Some((j, ReadEvent::Frame(f))) if f.kind == MsgType::Abort => {
                    peer_aborted(&labels[j], &f.payload)
                }
                Some((j, ev @ (ReadEvent::Frame(_) | ReadEvent::Ended))) => {
                    // A peer that finished its own connection phase started the protocol: keep it
                    // (an early `End` is the protocol's to refuse).
                    mesh.pending.push_back((j, ev));
                    continue;
                }
                Some((_, ReadEvent::Closed(Some(e)))) if e.kind() == crate::ErrorKind::Timeout => {
                    timeout_error(&mesh, rejected, &last_rejection)
                }
                Some((_, ReadEvent::Closed(Some(e)))) => e,
                Some((j, ReadEvent::Closed(None))) => Error::peer(format!(
                    "{} closed the connection while {} was still connecting to the other parties",
                    labels[j], labels[me]
                ))
                .with_hint(format!("{} may have failed; see its output", labels[j]))
                .with_origin(labels[j].as_str(), None),
                None => continue, // cannot happen: ev_tx is alive
            },
            _ = sleep_until(deadline) => {
                let e = timeout_error(&mesh, rejected, &last_rejection);
                tasks.abort_all();
                mesh.stop_readers();
                abort_writers(&labels, mesh.take_writers(), &abort_reason(&e, &labels[me])).await;
                return Err(e);
            }
        };
        return Err(fail(tasks, &ctx, rx, mesh, failure).await);
    }
    // Stops the listener and any stray handshakes.
    tasks.abort_all();
    if rejected > MAX_REJECTION_WARNINGS {
        warn(format!(
            "session {}: {rejected} inbound connections failed authentication and were dropped in all",
            config.session_id
        ));
    }
    Ok(mesh)
}

async fn abort_writers(labels: &[String], writers: Vec<(usize, Writer)>, reason: &str) {
    let writers = writers
        .into_iter()
        .map(|(j, w)| (labels[j].clone(), w))
        .collect();
    abort_all(writers, reason).await;
}

/// After a failure in the connection phase: tells the connected peers at once, then lingers
/// (see [`LINGER`]) so that the peers not connected yet learn about the abort too, and returns
/// `e`.
async fn fail(
    mut tasks: JoinSet<()>,
    ctx: &Ctx,
    mut rx: mpsc::UnboundedReceiver<Event>,
    mut mesh: Mesh,
    e: Error,
) -> Error {
    let reason = abort_reason(&e, &ctx.labels[ctx.me]);
    if let Ok(mut r) = ctx.abort_reason.lock() {
        *r = Some(reason.clone());
    }
    mesh.stop_readers();
    abort_writers(&ctx.labels, mesh.take_writers(), &reason).await;
    let until = (Instant::now() + LINGER).min(ctx.deadline);
    while let Ok(Some(ev)) = timeout_at(until, rx.recv()).await {
        if let Event::Connected(link) = ev {
            // Bound before the abort reason was set: abort it now.
            abort_all(vec![(ctx.labels[link.peer].clone(), link.stream)], &reason).await;
        }
    }
    tasks.abort_all();
    e
}

/// Best effort: sends `Abort{reason}` and closes each writer, all concurrently, giving up after
/// [`ABORT_GRACE`]. Used whenever a party fails, so that its peers fail fast instead of waiting
/// for the deadline.
pub async fn abort_all<W: AsyncWrite + Unpin + Send + 'static>(
    writers: Vec<(String, W)>,
    reason: &str,
) {
    if writers.is_empty() {
        return;
    }
    let frame = Frame::abort(reason);
    let mut set = JoinSet::new();
    let until = Instant::now() + ABORT_GRACE;
    for (label, mut w) in writers {
        let frame = frame.clone();
        set.spawn(async move {
            let _ = write_frame(&mut w, &frame, until, &label).await;
            let _ = timeout_at(until, w.shutdown()).await;
        });
    }
    let _ = timeout(ABORT_GRACE, async {
        while set.join_next().await.is_some() {}
    })
    .await;
    set.abort_all();
}

async fn resolve(ep: &Endpoint) -> std::io::Result<Vec<SocketAddr>> {
    match &ep.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, ep.port)]),
        Host::Name(name) => Ok(tokio::net::lookup_host((name.as_str(), ep.port))
            .await?
            .collect()),
    }
}

/// How a session on a kept connection began.
enum Reuse {
    /// The hello exchange succeeded.
    Bound(Box<Link>),
    /// The connection failed before the peer's hello arrived: it died while idle (e.g. the peer
    /// agent restarted). The session dials anew.
    Stale,
    /// The peer answered and the session fails, as it would on a new connection.
    Failed(Error),
}

/// The hello exchange on a connection taken from the pool ([`hello_exchange`], telling a dead
/// connection apart from the peer's answer).
async fn reuse(ctx: &Ctx, mut stream: TlsStream<TcpStream>, j: usize, key: PoolKey) -> Reuse {
    let label = &ctx.labels[j];
    let lingering = ctx.abort_reason.lock().ok().and_then(|r| r.clone());
    if let Some(reason) = lingering {
        abort_all(vec![(label.clone(), stream)], &reason).await;
        return Reuse::Failed(Error::peer("session already aborted"));
    }
    if write_frame(&mut stream, &ctx.hello.to_frame(), ctx.deadline, label)
        .await
        .is_err()
    {
        return Reuse::Stale;
    }
    let frame = match read_frame(&mut stream, ctx.deadline, label).await {
        Ok(Some(f)) => f,
        Err(e) if e.kind() == crate::ErrorKind::Timeout => return Reuse::Failed(e),
        // Closed or reset before any answer. (Had the peer read our hello and failed its side
        // meanwhile, the new connection would be refused as a second one: the session fails,
        // as it must.)
        Ok(None) | Err(_) => return Reuse::Stale,
    };
    let hello = match frame.kind {
        MsgType::Hello => Hello::decode(&frame.payload, label),
        MsgType::Abort => Err(peer_aborted(label, &frame.payload)),
        other => Err(Error::peer(format!(
            "protocol violation by {label}: sent a {} message before its hello",
            other.name()
        ))
        .with_origin(label, None)),
    };
    match hello.and_then(|h| check_hello(ctx, &h, j)) {
        Ok(()) => Reuse::Bound(Box::new(Link {
            peer: j,
            stream,
            keep: Some(Keep::Dialed(key)),
        })),
        Err(e) => Reuse::Failed(e),
    }
}

async fn dial(
    ctx: Arc<Ctx>,
    j: usize,
    (connector, name, pinned): (TlsConnector, ServerName<'static>, PinnedCert),
    kept: Option<(Arc<Pool>, PoolKey)>,
    tx: mpsc::UnboundedSender<Event>,
    last_error: Arc<Mutex<Vec<Option<String>>>>,
) {
    // The name is never sent (SNI is off) nor checked (the verifier pins the certificate): it
    // keys this process's tickets for this peer (`tls::server_name`).
    let label = &ctx.labels[j];
    if let Some((pool, key)) = &kept {
        // A connection kept for this party and this very pinned certificate (the key); its
        // certificate checked again all the same. Dead ones are dropped and the next tried.
        while let Some(stream) = pool.take(key).await {
            if !tls::is_pinned_server(stream.get_ref().1.peer_certificates(), &pinned) {
                pool.count_not_kept();
                continue;
            }
            match reuse(&ctx, TlsStream::Client(stream), j, key.clone()).await {
                Reuse::Bound(link) => {
                    pool.count_reused();
                    let _ = tx.send(Event::Connected(link));
                    return;
                }
                Reuse::Failed(e) => {
                    let _ = tx.send(Event::Failed(e));
                    return;
                }
                Reuse::Stale => pool.count_stale(),
            }
        }
    }
    let mut backoff = DIAL_BACKOFF_START;
    loop {
        let attempt = async {
            let addrs = resolve(&ctx.endpoints[j]).await?;
            let tcp = TcpStream::connect(&addrs[..]).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(name.clone(), tcp).await
        };
        match timeout_at(ctx.deadline, attempt).await {
            Err(_) => return,
            Ok(Ok(tls)) => {
                let conn = tls.get_ref().1;
                tls::record_handshake(conn.handshake_kind());
                // A resumed session skipped the verifier: its restored certificate must still
                // be the pinned one (it is, by the ticket's name; checked all the same).
                if !tls::is_pinned_server(conn.peer_certificates(), &pinned) {
                    let _ = tx.send(Event::Failed(
                        Error::authentication(format!(
                            "{label} at {} presented a certificate other than the one registered for it",
                            ctx.endpoints[j]
                        ))
                        .with_origin(label.as_str(), None),
                    ));
                    return;
                }
                if let Some((pool, _)) = &kept {
                    pool.count_dialed();
                }
                let ev = match hello_exchange(&ctx, TlsStream::Client(tls), j).await {
                    Ok(link) => Event::Connected(Box::new(Link {
                        keep: kept.map(|(_, key)| Keep::Dialed(key)),
                        ..link
                    })),
                    Err(e) => Event::Failed(e),
                };
                let _ = tx.send(ev);
                return;
            }
            Ok(Err(e)) => match classify(&e) {
                TlsFailure::OurCertificateRefused => {
                    let _ = tx.send(Event::Failed(refused_by_peer(&ctx, j)));
                    return;
                }
                TlsFailure::PeerCertificateRefused => {
                    let _ = tx.send(Event::Failed(tls::io_error(
                        &format!("{label} at {}", ctx.endpoints[j]),
                        "connecting",
                        e,
                    )));
                    return;
                }
                TlsFailure::Other => {
                    if let Ok(mut v) = last_error.lock() {
                        v[j] = Some(e.to_string());
                    }
                }
            },
        }
        sleep_until((Instant::now() + backoff).min(ctx.deadline)).await;
        backoff = (backoff * 2).min(DIAL_BACKOFF_MAX);
    }
}

/// Party `j` refused this party's certificate while this party dialed it. In a negotiation that
/// has two causes, which this side cannot tell apart: `j` has another certificate registered for
/// this party, or `j` was given the parties in another order (or other parties), so it expects
/// another party to dial it (regression: only the first was said, and admins re-registered
/// certificates when a `--parties` order was wrong).
fn refused_by_peer(ctx: &Ctx, j: usize) -> Error {
    let label = &ctx.labels[j];
    Error::authentication(format!(
        "{label} at {} refused this party's certificate: either it has another certificate registered for this party, or its party list differs from this one (order included), so it does not expect this party to connect",
        ctx.endpoints[j]
    ))
    .with_hint(format!(
        "first check that every party gives the same parties in the same order, researcher first (this party's: {}); if they do, ask {label} to register this party's current certificate (check the fingerprint)",
        ctx.labels.join(",")
    ))
    .with_origin(label.as_str(), None)
}

async fn accept_loop(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    verifier: Arc<PinnedClientVerifier>,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut handshakes = JoinSet::new();
    // Pending handshakes, oldest first, so that the oldest can be evicted when the cap is hit.
    let mut pending: VecDeque<(tokio::task::Id, SocketAddr, tokio::task::AbortHandle)> =
        VecDeque::new();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while let Some(done) = handshakes.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            pending.retain(|(i, _, _)| *i != id);
        }
        let cap = pending_handshake_cap(ctx.labels.len());
        if pending.len() >= cap {
            if let Some((_, old_addr, handle)) = pending.pop_front() {
                handle.abort();
                let _ = tx.send(Event::Rejected(old_addr, Rejection::Evicted(cap)));
            }
        }
        let _ = tcp.set_nodelay(true);
        let (ctx, acceptor, verifier, tx) =
            (ctx.clone(), acceptor.clone(), verifier.clone(), tx.clone());
        let handle = handshakes.spawn(async move {
            let until = (Instant::now() + HANDSHAKE_TIMEOUT).min(ctx.deadline);
            let tls = match timeout_at(until, acceptor.accept(tcp)).await {
                Err(_) => {
                    if Instant::now() < ctx.deadline {
                        let _ = tx.send(Event::Rejected(addr, Rejection::HandshakeTimeout));
                    }
                    return;
                }
                Ok(Err(e)) => {
                    let why = match classify(&e) {
                        TlsFailure::PeerCertificateRefused => {
                            if matches!(
                                tls::rustls_error(&e),
                                Some(rustls::Error::NoCertificatesPresented)
                            ) {
                                Rejection::NoCertificate
                            } else {
                                Rejection::UnknownCertificate
                            }
                        }
                        TlsFailure::OurCertificateRefused => Rejection::RefusedOurCertificate,
                        TlsFailure::Other => Rejection::NotTls(e.to_string()),
                    };
                    let _ = tx.send(Event::Rejected(addr, why));
                    return;
                }
                Ok(Ok(tls)) => tls,
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| verifier.identify(c));
            let ev = match peer {
                Some(j) if j > ctx.me() => {
                    Event::Failed(dialed_in_another_order(&ctx, TlsStream::Server(tls), j).await)
                }
                Some(j) => match hello_exchange(&ctx, TlsStream::Server(tls), j).await {
                    Ok(link) => Event::Connected(Box::new(link)),
                    Err(e) => Event::Failed(e),
                },
                None => Event::Failed(Error::Internal(
                    "an accepted TLS client has no pinned certificate".into(),
                )),
            };
            let _ = tx.send(ev);
        });
        pending.push_back((handle.id(), addr, handle));
    }
}

/// The inbound side for connections routed by a shared acceptor: the same identification as
/// [`accept_loop`] (the presented certificate must be pinned for one of the parties expected to
/// dial in, else the connection is dropped as a stranger's), then the hello exchange with the
/// hello the acceptor already read.
async fn routed_accept_loop(
    ctx: Arc<Ctx>,
    mut inbound: mpsc::UnboundedReceiver<Routed>,
    verifier: Arc<PinnedClientVerifier>,
    keepable: bool,
    tx: mpsc::UnboundedSender<Event>,
) {
    let mut exchanges = JoinSet::new();
    while let Some(routed) = inbound.recv().await {
        while exchanges.try_join_next().is_some() {}
        let peer = routed
            .stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| verifier.identify(c));
        let Some(j) = peer else {
            let _ = tx.send(Event::Rejected(routed.addr, Rejection::UnknownCertificate));
            continue;
        };
        if j > ctx.me() {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            exchanges.spawn(async move {
                let e = dialed_in_another_order(&ctx, TlsStream::Server(routed.stream), j).await;
                let _ = tx.send(Event::Failed(e));
            });
            continue;
        }
        let (ctx, tx) = (ctx.clone(), tx.clone());
        // A node's connection may be kept (the researcher's side is a one-shot process).
        let keep = (keepable && j > 0).then_some(Keep::Accepted(routed.addr));
        exchanges.spawn(async move {
            let ev =
                match answer_hello(&ctx, TlsStream::Server(routed.stream), j, routed.hello).await {
                    Ok(link) => Event::Connected(Box::new(Link { keep, ..link })),
                    Err(e) => Event::Failed(e),
                };
            let _ = tx.send(ev);
        });
    }
    // The acceptor is gone (agent shutting down): keep the handshakes already started.
    while exchanges.join_next().await.is_some() {}
}

/// Party `j`, which this party dials by its own list, dialed this party: the two were given the
/// parties in different orders (or different parties). Tells `j` so on the connection (an
/// abort with this party's list, which `j` reports) and fails the session with both lists'
/// meaning, instead of dropping `j` as a stranger while both wait for the deadline (regression:
/// admins saw "has a different certificate registered" and re-registered certificates).
async fn dialed_in_another_order(ctx: &Ctx, stream: TlsStream<TcpStream>, j: usize) -> Error {
    let label = &ctx.labels[j];
    let mine = ctx.labels.join(",");
    let reason = format!(
        "{} and {label} were given the parties in different orders: by {}'s list ({mine}) it dials {label}, and {label} dialed it",
        ctx.labels[ctx.me()],
        ctx.labels[ctx.me()]
    );
    abort_all(vec![(label.clone(), stream)], &reason).await;
    Error::invalid(format!(
        "{label} connected to this party, but by this party's list ({mine}) this party connects to {label}: the two were given the parties in different orders"
    ))
    .with_hint("give every party the same --parties, in the same order, researcher first")
}

/// Sends our Hello in answer to `hello`, already read from the peer, and checks it.
async fn answer_hello(
    ctx: &Ctx,
    mut stream: TlsStream<TcpStream>,
    j: usize,
    hello: Hello,
) -> Result<Link> {
    let label = &ctx.labels[j];
    let lingering = ctx.abort_reason.lock().ok().and_then(|r| r.clone());
    if let Some(reason) = lingering {
        abort_all(vec![(label.clone(), stream)], &reason).await;
        return Err(Error::peer("session already aborted"));
    }
    write_frame(&mut stream, &ctx.hello.to_frame(), ctx.deadline, label).await?;
    check_hello(ctx, &hello, j)?;
    Ok(Link {
        peer: j,
        stream,
        keep: None,
    })
}

/// Sends our Hello, reads the peer's and checks it against ours and against `j`, the party the
/// certificate identified.
async fn hello_exchange(ctx: &Ctx, mut stream: TlsStream<TcpStream>, j: usize) -> Result<Link> {
    let label = &ctx.labels[j];
    let lingering = ctx.abort_reason.lock().ok().and_then(|r| r.clone());
    if let Some(reason) = lingering {
        abort_all(vec![(label.clone(), stream)], &reason).await;
        return Err(Error::peer("session already aborted"));
    }
    write_frame(&mut stream, &ctx.hello.to_frame(), ctx.deadline, label).await?;
    let frame = read_frame(&mut stream, ctx.deadline, label)
        .await?
        .ok_or_else(|| {
            Error::peer(format!(
                "{label} closed the connection before sending its hello"
            ))
            .with_hint(format!("{label} may have failed; see its output"))
            .with_origin(label.as_str(), None)
        })?;
    match frame.kind {
        MsgType::Hello => {}
        MsgType::Abort => return Err(peer_aborted(label, &frame.payload)),
        other => {
            return Err(Error::peer(format!(
                "protocol violation by {label}: sent a {} message before its hello",
                other.name()
            ))
            .with_origin(label.as_str(), None))
        }
    }
    let hello = Hello::decode(&frame.payload, label)?;
    check_hello(ctx, &hello, j)?;
    Ok(Link {
        peer: j,
        stream,
        keep: None,
    })
}

/// Checks the peer's hello against ours and against `j`, the party its certificate identified.
fn check_hello(ctx: &Ctx, hello: &Hello, j: usize) -> Result<()> {
    let label = &ctx.labels[j];
    let same_hint = "every party must run the negotiation with the same session id, the same ordered party list (ids and registered certificates), key length, prime and scheme";
    if hello.session_id != ctx.session_id {
        return Err(Error::peer(format!(
            "{label} is negotiating session {}, not session {}",
            hello.session_id, ctx.session_id
        ))
        .with_hint(same_hint)
        .with_origin(label.as_str(), None));
    }
    if hello.binding != ctx.hello.binding {
        return Err(Error::peer(format!(
            "{label} has a different party list or parameters for session {} (party ids, order, registered certificates, key length, prime or scheme differ)",
            ctx.session_id
        ))
        .with_hint(same_hint)
        .with_origin(label.as_str(), None));
    }
    if hello.sender as usize != j {
        return Err(Error::peer(format!(
            "{label} claims to be party {} of the session but presented the certificate of party {j}",
            hello.sender
        ))
        .with_hint(same_hint)
        .with_origin(label.as_str(), None));
    }
    Ok(())
}

/// An `Abort` frame's payload (native protocol version 2): the failure as data, so that a party
/// told about it learns the kind and the party it started at without reading prose back.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct AbortReport {
    /// [`crate::ErrorKind::name`] of the failure.
    kind: String,
    /// The party it started at: the sender for its own failure, else the [`crate::error::Origin`]
    /// the sender was told or saw.
    origin: String,
    /// The origin's own words, or the sender's account of what it saw.
    message: String,
}

/// The payload of the `Abort` frame that party `me` sends because of `e` (see [`AbortReport`]),
/// at most [`MAX_ABORT_REASON`](super::frame::MAX_ABORT_REASON) bytes: the message is cut, at a
/// character boundary, until the JSON fits.
pub fn abort_reason(e: &Error, me: &str) -> String {
    // An origin travels on only when that party reported the failure itself (its abort): a
    // failure this party saw at a peer (a close, a violation, a hello that differs) is this
    // party's report, in its words; a disagreement such as another session id cannot be pinned
    // on either side from one side's view.
    let (origin, mut message) = match e.origin() {
        Some(crate::error::Origin {
            party,
            reason: Some(words),
        }) => (party.clone(), words.clone()),
        _ => (me.to_owned(), e.to_string()),
    };
    loop {
        let report = AbortReport {
            kind: e.kind().name().to_owned(),
            origin: origin.clone(),
            message: message.clone(),
        };
        let json = serde_json::to_string(&report).unwrap_or_default();
        if json.len() <= super::frame::MAX_ABORT_REASON || message.is_empty() {
            return json;
        }
        let keep = message
            .len()
            .saturating_sub(json.len() - super::frame::MAX_ABORT_REASON + 8);
        message = super::frame::truncate_utf8(&message, keep).to_owned();
    }
}

/// The error for an `Abort` frame received from `label`, of the kind the aborting party named
/// (peer failure when it named none, or one that only makes sense locally), its origin the one
/// the frame names ([`Error::origin`]). The words are the peer's: shown quoted, with control
/// characters escaped, so that they can neither inject terminal escapes nor fake
/// `error:`/`hint:` lines of ours; escaped once, here, however many parties relayed them.
pub fn peer_aborted(label: &str, payload: &[u8]) -> Error {
    let (kind, origin, words) = match serde_json::from_slice::<AbortReport>(payload) {
        Ok(r) => {
            // Only a plain party id is taken as the origin (it is shown and matched to rows).
            let origin = if plain_id(&r.origin) {
                r.origin
            } else {
                label.to_owned()
            };
            let words =
                super::frame::truncate_utf8(&r.message, super::frame::MAX_ABORT_REASON).to_owned();
            (r.kind, origin, words)
        }
        // A payload that is not a report: the sender's own words, whole.
        Err(_) => {
            let text = String::from_utf8_lossy(payload);
            let text = super::frame::truncate_utf8(&text, super::frame::MAX_ABORT_REASON);
            (String::new(), label.to_owned(), text.to_owned())
        }
    };
    let message = if origin == label {
        format!(
            "{label} aborted the session, reporting: \"{}\"",
            escape_peer_text(&words)
        )
    } else {
        format!(
            "{label} relayed the abort of {origin}, reporting: \"{}\"",
            escape_peer_text(&words)
        )
    };
    let e = match kind.as_str() {
        "timeout" => Error::timeout(message),
        "authentication" => Error::authentication(message),
        "verification" => Error::verification(message),
        // Its disk is full or its store failed: a storage failure of that party (exit 10 in
        // its row), not a broken peer.
        "storage" => Error::peer_storage(message),
        _ => Error::peer(message),
    };
    e.with_hint(
        "fix the problem reported by that party and run the negotiation again on every party",
    )
    .with_origin(origin, Some(words))
}

/// A party id as secagg writes them: letters, digits and `_-.@`, not empty.
fn plain_id(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'))
}

/// Forwards the frames of peer `j` to `tx` until the connection closes, fails, or the session
/// (holding the receiver) is gone. On a connection that may be kept (`keepable`), the peer's
/// `End` is its last frame of the session: the reader reports it and returns its half without
/// reading further, even once the session is gone (it may already have ended on this side).
async fn read_loop(
    mut r: Reader,
    j: usize,
    label: String,
    deadline: Instant,
    tx: mpsc::UnboundedSender<(usize, ReadEvent)>,
    keepable: bool,
) -> Option<Reader> {
    loop {
        let ev = match read_frame(&mut r, deadline, &label).await {
            Ok(Some(f)) if keepable && f.kind == MsgType::End => {
                let _ = tx.send((j, ReadEvent::Ended));
                return Some(r);
            }
            Ok(Some(f)) => ReadEvent::Frame(f),
            Ok(None) => ReadEvent::Closed(None),
            Err(e) => ReadEvent::Closed(Some(e)),
        };
        let last = matches!(ev, ReadEvent::Closed(_));
        if tx.send((j, ev)).is_err() || last {
            return None;
        }
    }
}

#[cfg(test)]
mod abort_relay_tests {
    use super::*;
    use crate::error::ErrorKind;

    /// Regression: a relayed abort was quoted and escaped again at every hop, so that with many
    /// parties the researcher's report nested `\\\"` ever deeper and hid who failed first.
    #[test]
    fn a_relayed_abort_names_its_origin_and_is_escaped_once() {
        let own = Error::timeout("disk \"full\"\nnow");
        let first = peer_aborted("node_a", abort_reason(&own, "node_a").as_bytes());
        let expected_words = "disk \\\"full\\\"\\nnow";
        assert_eq!(
            first.to_string(),
            format!("node_a aborted the session, reporting: \"{expected_words}\"")
        );
        assert_eq!(first.origin().map(|o| o.party.as_str()), Some("node_a"));
        let second = peer_aborted("node_b", abort_reason(&first, "node_x").as_bytes());
        assert_eq!(
            second.to_string(),
            format!("node_b relayed the abort of node_a, reporting: \"{expected_words}\"")
        );
        assert_eq!(second.kind(), ErrorKind::Timeout);
        let third = peer_aborted("node_c", abort_reason(&second, "node_b").as_bytes());
        assert_eq!(
            third.to_string(),
            format!("node_c relayed the abort of node_a, reporting: \"{expected_words}\"")
        );
        assert_eq!(third.kind(), ErrorKind::Timeout);
        assert_eq!(third.origin().map(|o| o.party.as_str()), Some("node_a"));
    }

    #[test]
    fn the_origin_travels_as_data_and_a_party_seen_failing_is_named() {
        // A failure this party saw at another (a closed connection) names that party here; the
        // abort it sends is its own report, in its words (as before origins were data).
        let seen = Error::peer("node_a closed the connection").with_origin("node_a", None);
        assert_eq!(seen.origin().map(|o| o.party.as_str()), Some("node_a"));
        let relayed = peer_aborted("node_b", abort_reason(&seen, "node_b").as_bytes());
        assert_eq!(relayed.origin().map(|o| o.party.as_str()), Some("node_b"));
        assert!(relayed.to_string().contains("node_a closed the connection"));
        // An abort relayed once more keeps naming the party that sent it first.
        let again = peer_aborted("node_c", abort_reason(&relayed, "node_c").as_bytes());
        assert_eq!(again.origin().map(|o| o.party.as_str()), Some("node_b"));
        // A party's own failure names itself.
        let own = peer_aborted(
            "node_ab",
            abort_reason(&Error::peer("x"), "node_ab").as_bytes(),
        );
        assert_eq!(own.origin().map(|o| o.party.as_str()), Some("node_ab"));
        // The report for the CLI's rows carries it too.
        assert_eq!(
            crate::error::ErrorReport::of(&relayed).origin.as_deref(),
            Some("node_b")
        );
        // An over-long message still makes a payload within the frame's limit, valid JSON.
        let long = Error::peer("é".repeat(5000));
        let payload = abort_reason(&long, "node_a");
        assert!(payload.len() <= crate::transport::frame::MAX_ABORT_REASON);
        assert!(serde_json::from_str::<AbortReport>(&payload).is_ok());
    }

    #[test]
    fn a_forged_origin_or_raw_text_is_still_escaped_and_attributed_to_the_sender() {
        // An origin that is not a party id is the sender's; raw text is the sender's words.
        let forged = serde_json::json!({
            "kind": "peer_failure",
            "origin": "node a\u{1b}[2J",
            "message": "x\u{1b}[2J\u{202e}",
        })
        .to_string();
        let e = peer_aborted("node_b", forged.as_bytes());
        let text = e.to_string();
        assert!(
            text.starts_with("node_b aborted the session, reporting: \""),
            "{text}"
        );
        for raw in ['\u{1b}', '\u{202e}'] {
            assert!(!text.contains(raw), "{text:?}");
        }
        assert_eq!(e.origin().map(|o| o.party.as_str()), Some("node_b"));
        let raw = peer_aborted("node_b", "timeout:x\u{1b}".as_bytes());
        assert_eq!(raw.kind(), ErrorKind::PeerFailure);
        assert!(!raw.to_string().contains('\u{1b}'));
    }

    /// Regression: the eviction warning still named the fixed 64 after the cap came to count
    /// the session's parties too.
    #[test]
    fn the_eviction_warning_names_the_cap_in_force() {
        let cap = pending_handshake_cap(100);
        assert_eq!(cap, MAX_PENDING_HANDSHAKES + 100);
        let text = Rejection::Evicted(cap).describe("", "node_a");
        assert!(
            text.contains(&format!("more than {cap} connections were pending")),
            "{text}"
        );
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::transport::pool::tests::pair;

    /// Party 0 (`node_a`) of a two-party session, dialing party 1 (`node_b`).
    fn ctx() -> Ctx {
        let session_id = SessionId::from(uuid::Uuid::new_v4());
        let hello = Hello {
            version: PROTOCOL_VERSION,
            session_id,
            sender: 0,
            binding: [5; 32],
        };
        Ctx {
            labels: vec!["node_a".into(), "node_b".into()],
            endpoints: vec![
                Endpoint::new("127.0.0.1", 1).unwrap(),
                Endpoint::new("127.0.0.1", 2).unwrap(),
            ],
            hello,
            session_id,
            deadline: Instant::now() + Duration::from_secs(5),
            me: 0,
            abort_reason: Mutex::new(None),
        }
    }

    fn key() -> PoolKey {
        PoolKey::new("node_b", "pin", "127.0.0.1:7001")
    }

    #[tokio::test]
    async fn a_kept_connection_closed_before_the_peers_hello_is_stale_not_a_failure() {
        let ctx = ctx();
        let (c, s) = pair().await;
        drop(s);
        let r = reuse(&ctx, TlsStream::Client(c), 1, key()).await;
        assert!(
            matches!(r, Reuse::Stale),
            "a dead kept connection must be redialed"
        );
    }

    #[tokio::test]
    async fn the_peers_answer_on_a_kept_connection_decides_as_on_a_new_one() {
        let ctx = ctx();
        // The peer binds the session: the link is marked to be kept again.
        let (c, mut s) = pair().await;
        let theirs = Hello {
            sender: 1,
            ..ctx.hello.clone()
        };
        let answer = tokio::spawn(async move {
            let f = read_frame(&mut s, ctx_deadline(), "node_a")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(f.kind, MsgType::Hello);
            write_frame(&mut s, &theirs.to_frame(), ctx_deadline(), "node_a")
                .await
                .unwrap();
            s
        });
        match reuse(&ctx, TlsStream::Client(c), 1, key()).await {
            Reuse::Bound(link) => assert!(matches!(link.keep, Some(Keep::Dialed(k)) if k == key())),
            _ => panic!("expected the session bound on the kept connection"),
        }
        let _s = answer.await.unwrap();
        // The peer aborts (e.g. no such session there): the session fails, no redial.
        let (c, mut s) = pair().await;
        tokio::spawn(async move {
            let _ = read_frame(&mut s, ctx_deadline(), "node_a").await;
            let _ = write_frame(
                &mut s,
                &Frame::abort("peer_failure:no session here"),
                ctx_deadline(),
                "node_a",
            )
            .await;
            s
        });
        match reuse(&ctx, TlsStream::Client(c), 1, key()).await {
            Reuse::Failed(e) => assert!(e.to_string().contains("no session here"), "{e}"),
            _ => panic!("expected the peer's abort"),
        }
        // Another session's hello: refused as on a new connection.
        let (c, mut s) = pair().await;
        let other = Hello {
            sender: 1,
            session_id: SessionId::from(uuid::Uuid::new_v4()),
            ..ctx.hello.clone()
        };
        tokio::spawn(async move {
            let _ = read_frame(&mut s, ctx_deadline(), "node_a").await;
            let _ = write_frame(&mut s, &other.to_frame(), ctx_deadline(), "node_a").await;
            s
        });
        match reuse(&ctx, TlsStream::Client(c), 1, key()).await {
            Reuse::Failed(e) => assert!(e.to_string().contains("is negotiating session"), "{e}"),
            _ => panic!("expected a session mismatch"),
        }
    }

    fn ctx_deadline() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }
}
