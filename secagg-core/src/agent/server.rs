//! The agent itself: one listener, pinned mutual TLS, requests dispatched by their first frame,
//! sessions run concurrently and routed by session id (see the [module documentation](super)).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, timeout, timeout_at, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::admission::{self, LearnedAddresses, Origin, PendingHandshakes, Room};
use super::stranger_log::{Line, StrangerLog, STRANGER_LOG_INTERVAL};
use super::{
    roster_transfer, Reply, Request, StatusInfo, WireError, AGENT_PROTOCOL_VERSION,
    FIRST_FRAME_TIMEOUT, MAX_SESSION_TIMEOUT, SECAGG_VERSION,
};
use crate::engine::{
    CancelFlag, Engine, KeySink, MpSpdzEngine, NativeEngine, NegotiationPlan, SecretKey,
};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity;
use crate::mpspdz::MpSpdzRoot;
use crate::party::{Endpoint, Host, PartyId, Role, SessionId};
use crate::session::{self, SessionRequest, StoreSink};
use crate::store::pool::StorePool;
use crate::transport::frame::{read_frame, write_frame, Frame, MsgType};
use crate::transport::mesh::{abort_all, ControlLink, Hello, Routed, PROTOCOL_VERSION};
use crate::transport::pinned_verifier::{PinnedCert, PinnedClientVerifier};
use crate::transport::pool::{Pool, Reopened};
use crate::transport::tls::{self, classify, LocalIdentity, TlsFailure};
use crate::untrusted_text::{escape_bounded, single_line, LOG_TEXT_LIMIT};
use zeroize::Zeroizing;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where to listen; `None` derives it from the endpoint (an IP literal gives that `ip:port`,
    /// a host name `0.0.0.0:port`).
    pub listen: Option<SocketAddr>,
    /// This party's endpoint for its sessions; `None` is the stored one.
    pub endpoint: Option<Endpoint>,
    /// Researchers allowed to request sessions; empty: every researcher registered by hand
    /// (not one a roster brought in).
    pub allow_researchers: Vec<PartyId>,
    /// Sessions joined or running at once, in all.
    pub max_sessions: usize,
    /// Sessions joined or running at once for one researcher.
    pub max_sessions_per_researcher: usize,
    /// After a stop request: how long running sessions may take to finish before they are
    /// aborted.
    pub grace: Duration,
    /// MP-SPDZ sessions (`--engine mp-spdz`); `None`: refused.
    pub mpspdz: Option<AgentMpSpdz>,
    /// How long a negotiation connection to another node's agent is kept open after a session
    /// that ended cleanly, for a later session (`crate::transport::pool`); `None`: every
    /// connection is closed after its session.
    pub keep_connections: Option<Duration>,
    /// Accept only sessions among exactly these parties, in this order (the party list of the
    /// one session a Fed-BioMed `exec_shamir` runs, see [`super::one_session`]); `None`: any
    /// session the policy allows.
    pub only_parties: Option<Vec<PartyId>>,
    /// `--accept-rosters-from ID`: when this researcher asks to join a session naming parties
    /// this party does not know, the agent pulls the researcher's latest roster from its agent
    /// and imports it (the checks and serial rules of `roster import`, registrations it brought
    /// that it no longer lists pruned) before checking the join; `None`: such a join is refused.
    pub accept_rosters_from: Option<PartyId>,
    /// `--min-nodes N`: the fewest nodes (this one included) of a LOM session this agent joins;
    /// `None` is [`crate::session::DEFAULT_MIN_NODES`].
    pub min_nodes: Option<usize>,
}

/// How an agent runs MP-SPDZ sessions.
#[derive(Debug, Clone)]
pub struct AgentMpSpdz {
    /// The MP-SPDZ build whose `shamir-party.x` runs each session.
    pub root: MpSpdzRoot,
    /// The ports this agent may give its `shamir-party.x` runs, one per running session
    /// (MP-SPDZ listens on its own port, and the agent's is taken).
    pub ports: RangeInclusive<u16>,
}

/// How much an event matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Normal operation.
    Info,
    /// Something was refused or dropped; the agent goes on.
    Warn,
    /// A session failed, or a roster could not be sent.
    Error,
}

/// One line of the agent's log. Never carries a key.
#[derive(Debug, Clone, Serialize)]
pub struct AgentEvent {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// How much it matters.
    pub level: Level,
    /// What happened, a stable word (`listening`, `joined`, `refused`, `started`, `succeeded`,
    /// `failed`, `cancelled`, `stranger`, `status`, `stopping`, `stopped`, `warning`).
    pub event: &'static str,
    /// The session concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The peer concerned (party id, or remote address for a stranger), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Details.
    pub message: String,
}

/// Where the agent's events go.
pub type Log = Arc<dyn Fn(&AgentEvent) + Send + Sync>;

/// How far the agent's stop has gone; each stop request moves it one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StopLevel {
    /// Accepting connections and sessions.
    Running,
    /// No new connection or session; running sessions get the grace period to finish.
    Draining,
    /// Running sessions are aborted now.
    Aborting,
}

impl StopLevel {
    fn next(self) -> Self {
        match self {
            StopLevel::Running => StopLevel::Draining,
            StopLevel::Draining | StopLevel::Aborting => StopLevel::Aborting,
        }
    }
}

/// Asks a running agent to stop: the first call stops accepting and lets running sessions
/// finish within the grace period; the second aborts them at once.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<StopLevel>>);

impl ShutdownHandle {
    /// One more stop request (see the type's documentation).
    pub fn stop(&self) {
        self.0.send_modify(|level| *level = level.next());
    }
}

/// The agent's side of a [`ShutdownHandle`].
#[derive(Debug)]
pub struct Shutdown(Arc<watch::Sender<StopLevel>>);

impl Shutdown {
    /// A new pair.
    pub fn new() -> (ShutdownHandle, Shutdown) {
        let (tx, _) = watch::channel(StopLevel::Running);
        let tx = Arc::new(tx);
        (ShutdownHandle(tx.clone()), Shutdown(tx))
    }
}

struct Slot {
    researcher: PartyId,
    inbound: mpsc::UnboundedSender<Routed>,
    /// The port reserved for its `shamir-party.x` (MP-SPDZ sessions).
    mpspdz_port: Option<u16>,
    /// Parties of the session: the most negotiation connections it may receive at once.
    parties: usize,
}

struct PeerCache {
    loaded: Instant,
    config: Arc<ServerConfig>,
    verifier: Arc<PinnedClientVerifier>,
    ids: Vec<PartyId>,
}

/// How long the registered peers are cached for the TLS acceptor (a peer registered while the
/// agent runs is accepted at most this much later).
const PEER_CACHE_TTL: Duration = Duration::from_secs(1);

pub(super) struct Shared {
    home: Home,
    /// Open connections to this party's store, reused by every session and acceptor reload.
    pub(super) stores: Arc<StorePool>,
    /// This party's identity as the agent loaded it at its start: the one its TLS presents, so
    /// also the one its sessions' plans bind.
    pub(super) own: identity::Identity,
    /// This party's private key (PKCS#8 DER), for the plans' negotiation connections.
    pub(super) key_pkcs8_der: Zeroizing<Vec<u8>>,
    /// Issues the session tickets of every acceptor configuration (rebuilt every
    /// [`PEER_CACHE_TTL`]): peers resume their connections across sessions.
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    me: PartyId,
    certificate_not_after: i64,
    endpoint: Endpoint,
    local: LocalIdentity,
    provider: Arc<CryptoProvider>,
    opts: AgentOptions,
    sessions: Mutex<HashMap<SessionId, Slot>>,
    peers: Mutex<Option<PeerCache>>,
    log: Log,
    shutdown: Arc<watch::Sender<StopLevel>>,
    /// Notified whenever a session's slot is given up (a stop waits for the last one, an accept
    /// that ran out of descriptors for one to end).
    sessions_changed: tokio::sync::Notify,
    /// Negotiation connections kept between sessions (`--keep-connections`).
    pool: Option<Arc<Pool>>,
    /// The IP addresses of the registered peers' endpoints ([`admission`]), as of the last
    /// reload of [`Shared::peers`]. Apart from it: the accept loop reads it, and must not wait
    /// while a handshake reloads the peers from the store.
    endpoint_addresses: Mutex<Arc<HashSet<IpAddr>>>,
    /// Addresses registered peers authenticated from ([`admission`]).
    learned: Mutex<LearnedAddresses>,
    /// The strangers dropped in the current interval, for the log.
    strangers: StrangerLog,
}

impl Shared {
    /// Handshakes that may be pending at once before the oldest is evicted
    /// ([`crate::transport::mesh::pending_handshake_cap`]): every connection the running
    /// sessions may receive at once, plus the stranger budget.
    fn pending_handshake_cap(&self) -> usize {
        let expected: usize = self
            .sessions
            .lock()
            .map(|s| s.values().map(|slot| slot.parties).sum())
            .unwrap_or(0);
        crate::transport::mesh::pending_handshake_cap(expected)
    }

    pub(super) fn event(
        &self,
        level: Level,
        event: &'static str,
        session: Option<&SessionId>,
        peer: Option<&str>,
        message: impl Into<String>,
    ) {
        let time = OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        (self.log)(&AgentEvent {
            time,
            level,
            event,
            session: session.map(|s| s.to_string()),
            // Peer text is escaped where it enters a message; whatever was missed still cannot
            // start a line of its own or reach the terminal raw.
            peer: peer.map(|p| single_line(p).into_owned()),
            message: single_line(&message.into()).into_owned(),
        });
    }

    fn level(&self) -> StopLevel {
        *self.shutdown.borrow()
    }

    fn running_sessions(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Waits until no session runs (true) or `until` passes (false), woken by each slot given
    /// up instead of polling.
    async fn sessions_ended_by(&self, until: Instant) -> bool {
        loop {
            // Created before the check: a slot given up in between still wakes it.
            let changed = self.sessions_changed.notified();
            if self.running_sessions() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return self.running_sessions() == 0;
            }
        }
    }

    /// The TLS configuration accepting every registered peer, reloaded from the store at most
    /// every [`PEER_CACHE_TTL`].
    fn tls(&self) -> Result<(Arc<ServerConfig>, Arc<PinnedClientVerifier>, Vec<PartyId>)> {
        let mut cache = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.loaded.elapsed() < PEER_CACHE_TTL {
                return Ok((c.config.clone(), c.verifier.clone(), c.ids.clone()));
            }
        }
        let peers = tokio::task::block_in_place(|| {
            let mut store = self
                .stores
                .take_until(std::time::Instant::now() + crate::store::BUSY_TIMEOUT)?;
            store.read(|tx| crate::store::peers::list(tx))
        })?;
        let mut expected = Vec::with_capacity(peers.len());
        let mut ids = Vec::with_capacity(peers.len());
        let addresses: HashSet<IpAddr> = peers
            .iter()
            .filter_map(|p| match p.endpoint.host {
                Host::Ip(ip) => Some(admission::canonical(ip)),
                Host::Name(_) => None,
            })
            .collect();
        for p in peers {
            // A certificate the transport cannot pin is left out (a negotiation would refuse it
            // too); the peer is then a stranger here.
            if let Ok(cert) = PinnedCert::new(p.party_id.as_str(), &p.certificate_der) {
                expected.push((ids.len(), cert));
                ids.push(p.party_id);
            }
        }
        let verifier = PinnedClientVerifier::new(expected, &self.provider);
        let config = tls::server_config_resumable(
            &self.local,
            verifier.clone(),
            &self.provider,
            self.ticketer.clone(),
        )?;
        *cache = Some(PeerCache {
            loaded: Instant::now(),
            config: config.clone(),
            verifier: verifier.clone(),
            ids: ids.clone(),
        });
        *self
            .endpoint_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(addresses);
        Ok((config, verifier, ids))
    }

    /// Where a new connection from `ip` comes from ([`admission`]), by the peers as last loaded
    /// (the handshakes reload them every [`PEER_CACHE_TTL`] at most; never here, so that the
    /// accept loop does not wait for the store).
    fn origin(&self, ip: IpAddr) -> Origin {
        let ip = admission::canonical(ip);
        let endpoint = self
            .endpoint_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip);
        let learned = || {
            self.learned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .knows(ip, std::time::Instant::now())
        };
        match endpoint || learned() {
            true => Origin::Registered,
            false => Origin::Stranger,
        }
    }

    /// Logs (or counts) a pending handshake evicted to make room for a new connection.
    fn evicted(&self, evicted: admission::Evicted) {
        let line = match evicted.origin {
            Origin::Stranger => Line::Counted,
            Origin::Registered => self.strangers.line(),
        };
        if line == Line::Counted {
            self.strangers.evicted();
            return;
        }
        let addr = evicted.addr;
        self.event(
            Level::Warn,
            "stranger",
            None,
            Some(&addr.to_string()),
            format!(
                "evicted the pending handshake of {addr}, a registered peer's address: {} handshakes were pending, none of them a stranger's{}",
                self.pending_handshake_cap(),
                line.suffix()
            ),
        );
    }

    /// Logs how many strangers were dropped in the interval now ending without a line each.
    fn log_stranger_count(&self) {
        if let Some(count) = self.strangers.end_interval(std::time::Instant::now()) {
            self.event(Level::Warn, "stranger", None, None, count);
        }
    }

    /// Logs a stranger dropped from `addr` for `why`, or only counts it when this interval's
    /// strangers had their lines ([`StrangerLog`]).
    fn stranger(&self, addr: SocketAddr, why: &str) {
        let line = self.strangers.line();
        if line != Line::Counted {
            self.event(
                Level::Warn,
                "stranger",
                None,
                Some(&addr.to_string()),
                format!("dropped a connection from {addr}: {why}{}", line.suffix()),
            );
        }
    }
}

/// Removes a session's slot when dropped, whatever way its task ends.
struct SlotGuard {
    shared: Arc<Shared>,
    id: SessionId,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.sessions.lock() {
            s.remove(&self.id);
        }
        self.shared.sessions_changed.notify_waiters();
    }
}

/// Refuses an id given to `option` (`--allow-researcher`, `--accept-rosters-from`) that names no
/// registered researcher (regression: a typo, or an id not registered yet, was accepted without
/// a word, and every session of the researcher meant was then refused with no clue why): a
/// registered node is refused as a node, an unknown id with the researchers that are registered.
fn check_allowed_researchers(
    option: &str,
    allowed: &[PartyId],
    registered: &[crate::peers::PeerRecord],
) -> Result<()> {
    for id in allowed {
        match registered.iter().find(|p| p.party_id == *id) {
            Some(p) if p.role == Role::Researcher => {}
            Some(_) => {
                return Err(Error::invalid(format!(
                "{option} {id} names a node: only researchers request sessions and issue rosters"
            ))
                .with_hint("give the id of the researcher whose sessions this agent should take"))
            }
            None => {
                let researchers: Vec<&str> = registered
                    .iter()
                    .filter(|p| p.role == Role::Researcher)
                    .map(|p| p.party_id.as_str())
                    .collect();
                return Err(Error::not_found(format!(
                    "{option} {id} names no party registered here"
                ))
                .with_hint(if researchers.is_empty() {
                    "register the researcher's certificate first (`secagg certificate register --bundle FILE --expect-fingerprint FP`), then start the agent".to_owned()
                } else {
                    format!(
                        "check the spelling; the researchers registered here: {}",
                        researchers.join(", ")
                    )
                }));
            }
        }
    }
    Ok(())
}

/// Runs the agent of the party in `home` until `shutdown` is asked to stop (and the running
/// sessions finished or were aborted); events go to `log`. Fails before it listens if the
/// identity or store cannot be used, an `--allow-researcher` names no registered researcher,
/// or the address cannot be bound.
pub fn serve(home: &Home, opts: AgentOptions, log: Log, shutdown: Shutdown) -> Result<()> {
    let own = identity::load(home)?;
    let key = own.private_key_der()?;
    let provider = tls::provider();
    let local = LocalIdentity::new(own.party_id.as_str(), &own.certificate.der, &key, &provider)?;
    // The store must be usable before we accept anything.
    let stores = StorePool::new(home.clone());
    let registered = stores
        .take_until(std::time::Instant::now() + crate::store::BUSY_TIMEOUT)?
        .read(|tx| crate::store::peers::list(tx))?;
    check_allowed_researchers("--allow-researcher", &opts.allow_researchers, &registered)?;
    let accepted_issuer = opts.accept_rosters_from.as_slice();
    check_allowed_researchers("--accept-rosters-from", accepted_issuer, &registered)?;
    let endpoint = opts
        .endpoint
        .clone()
        .unwrap_or_else(|| own.endpoint.clone());
    if let Some(m) = &opts.mpspdz {
        if m.ports.is_empty() {
            return Err(Error::invalid(format!(
                "the MP-SPDZ port range {}-{} is empty",
                m.ports.start(),
                m.ports.end()
            ))
            .with_hint("give --mpspdz-ports FIRST-LAST with FIRST <= LAST"));
        }
        if m.ports.contains(&endpoint.port) {
            return Err(Error::invalid(format!(
                "the MP-SPDZ port range {}-{} contains the agent's own port {}",
                m.ports.start(),
                m.ports.end(),
                endpoint.port
            ))
            .with_hint("give --mpspdz-ports a range that leaves out the party's endpoint port"));
        }
        m.root.check_binary()?;
    }
    let listen = opts.listen.unwrap_or(match endpoint.host {
        Host::Ip(ip) => SocketAddr::new(ip, endpoint.port),
        Host::Name(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), endpoint.port),
    });
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| Error::io("while starting the agent's runtime", e))?;
    let (reopened_tx, reopened_rx) = mpsc::unbounded_channel();
    let pool = opts
        .keep_connections
        .filter(|d| !d.is_zero())
        .map(|idle| Pool::new(idle, reopened_tx));
    let shared = Arc::new(Shared {
        home: home.clone(),
        stores,
        key_pkcs8_der: key,
        ticketer: tls::ticketer()?,
        me: own.party_id.clone(),
        certificate_not_after: own.certificate.not_after.unix_timestamp(),
        own: own.clone(),
        endpoint,
        local,
        provider,
        opts,
        sessions: Mutex::new(HashMap::new()),
        peers: Mutex::new(None),
        log,
        shutdown: shutdown.0,
        sessions_changed: tokio::sync::Notify::new(),
        pool,
        endpoint_addresses: Mutex::new(Arc::new(HashSet::new())),
        learned: Mutex::new(LearnedAddresses::default()),
        strangers: StrangerLog::default(),
    });
    let result = rt.block_on(run(shared, listen, reopened_rx));
    // Every session has ended or been aborted by now; nothing left is worth waiting for.
    rt.shutdown_background();
    result
}

async fn run(
    shared: Arc<Shared>,
    listen: SocketAddr,
    mut reopened: mpsc::UnboundedReceiver<Reopened>,
) -> Result<()> {
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        crate::transport::listen::bind_error(shared.me.as_str(), listen, "its agent", &e)
    })?;
    shared.event(
        Level::Info,
        "listening",
        None,
        None,
        format!(
            "agent of {} listening on {listen} (secagg {SECAGG_VERSION}, native protocol {PROTOCOL_VERSION}, limits: {} sessions, {} per researcher; MP-SPDZ: {}; researchers allowed: {})",
            shared.me,
            shared.opts.max_sessions,
            shared.opts.max_sessions_per_researcher,
            match &shared.opts.mpspdz {
                Some(m) => format!(
                    "ports {}-{}, root {}",
                    m.ports.start(),
                    m.ports.end(),
                    m.root.path().display()
                ),
                None => "off".to_owned(),
            },
            if shared.opts.allow_researchers.is_empty() {
                "those registered here by hand".to_owned()
            } else {
                shared
                    .opts
                    .allow_researchers
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    );
    let mut stop = shared.shutdown.subscribe();
    // The next hello on a kept connection is routed like a new connection's first frame.
    let kept = shared.clone();
    tokio::spawn(async move {
        while let Some(r) = reopened.recv().await {
            tokio::spawn(reopen(kept.clone(), r));
        }
    });
    // Handshakes in progress are bounded like a negotiation's, but a stranger can evict only a
    // stranger's ([`admission`]); the registered addresses are known before the first one.
    let mut pending = PendingHandshakes::default();
    let primed = shared.clone();
    let _ = tokio::spawn(async move { primed.tls().map(|_| ()) }).await;
    let counts = tokio::spawn(log_stranger_counts(shared.clone()));
    let mut accept_failures = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, addr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        accept_failed(&shared, &e, &mut accept_failures).await;
                        continue;
                    }
                };
                accept_failures = 0;
                let _ = tcp.set_nodelay(true);
                let origin = shared.origin(addr.ip());
                match pending.make_room(origin, shared.pending_handshake_cap()) {
                    Room::Refuse => {
                        shared.strangers.refused();
                        continue;
                    }
                    Room::Admit(Some(evicted)) => shared.evicted(evicted),
                    Room::Admit(None) => {}
                }
                let shared = shared.clone();
                // Only the handshake and first frame are evictable: what follows (a session that
                // may run for its whole timeout) is a task of its own.
                let handle = tokio::spawn(async move {
                    if let Some((stream, peer, frame)) = first_contact(&shared, tcp, addr).await {
                        tokio::spawn(dispatch(shared, stream, addr, peer, frame));
                    }
                });
                pending.push(origin, addr, handle.abort_handle());
            }
            _ = stop.wait_for(|l| *l >= StopLevel::Draining) => break,
        }
    }
    drop(listener);
    counts.abort();
    shared.log_stranger_count();
    let running = shared.sessions.lock().map(|s| s.len()).unwrap_or(0);
    shared.event(
        Level::Info,
        "stopping",
        None,
        None,
        format!(
            "stop requested: no longer accepting connections; {running} session(s) joined or running get {:.1}s to finish",
            shared.opts.grace.as_secs_f64()
        ),
    );
    let grace_end = Instant::now() + shared.opts.grace;
    let ended = tokio::select! {
        ended = shared.sessions_ended_by(grace_end) => ended,
        _ = stop.wait_for(|l| *l >= StopLevel::Aborting) => false,
    };
    if !ended {
        // Counted before the abort goes out: the sessions end as soon as they see it.
        let running = shared.running_sessions();
        shared.shutdown.send_replace(StopLevel::Aborting);
        shared.event(
            Level::Warn,
            "stopping",
            None,
            None,
            format!("aborting {running} session(s) still running"),
        );
        shared
            .sessions_ended_by(Instant::now() + Duration::from_secs(5))
            .await;
    }
    shared.event(Level::Info, "stopped", None, None, "agent stopped");
    Ok(())
}

/// A failed `accept`: logged (the first of a streak, then every 1000th), and when the process or
/// the system ran out of descriptors or memory, a wait for a session to end (which frees some),
/// at most a second, instead of spinning on the error.
async fn accept_failed(shared: &Shared, e: &std::io::Error, streak: &mut u64) {
    *streak += 1;
    if *streak == 1 || *streak % 1000 == 0 {
        shared.event(
            Level::Warn,
            "accept-failed",
            None,
            None,
            format!("could not accept a connection ({e}; {streak} in a row)"),
        );
    }
    use nix::errno::Errno;
    let exhausted = e.raw_os_error().is_some_and(|n| {
        matches!(
            Errno::from_raw(n),
            Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
        )
    });
    if exhausted {
        let freed = shared.sessions_changed.notified();
        let _ = timeout(Duration::from_secs(1), freed).await;
    }
}

/// `ids` as `a, b, c`, for messages.
pub(super) fn list_ids(ids: &[PartyId]) -> String {
    ids.iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Logs the count of the strangers not logged one by one, every [`STRANGER_LOG_INTERVAL`].
async fn log_stranger_counts(shared: Arc<Shared>) {
    loop {
        sleep(STRANGER_LOG_INTERVAL).await;
        shared.log_stranger_count();
    }
}

/// The TLS handshake and the first frame of a new connection, bounded by
/// [`FIRST_FRAME_TIMEOUT`]. A connection that does not authenticate as a registered peer is
/// logged as a stranger and dropped.
async fn first_contact(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(TlsStream<TcpStream>, PartyId, Frame)> {
    let (config, verifier, ids) = match shared.tls() {
        Ok(x) => x,
        Err(e) => {
            shared.event(
                Level::Error,
                "stranger",
                None,
                Some(&addr.to_string()),
                format!("cannot read the registered peers to accept a connection: {e}"),
            );
            return None;
        }
    };
    let until = Instant::now() + FIRST_FRAME_TIMEOUT;
    let stranger = |why: String| shared.stranger(addr, &why);
    let mut stream = match timeout_at(until, TlsAcceptor::from(config).accept(tcp)).await {
        Err(_) => {
            stranger(format!(
                "it did not complete the TLS handshake within {} s",
                FIRST_FRAME_TIMEOUT.as_secs()
            ));
            return None;
        }
        Ok(Err(e)) => {
            let why = match classify(&e) {
                TlsFailure::PeerCertificateRefused => {
                    if matches!(
                        tls::rustls_error(&e),
                        Some(rustls::Error::NoCertificatesPresented)
                    ) {
                        "it presented no client certificate".to_owned()
                    } else {
                        "it presented a certificate registered for no peer of this party (an unregistered client)".to_owned()
                    }
                }
                TlsFailure::OurCertificateRefused => format!(
                    "it refused the certificate of {} (it has another one registered for this party)",
                    shared.me
                ),
                TlsFailure::Other => format!(
                    "it did not complete a TLS 1.3 handshake ({})",
                    escape_bounded(&e.to_string(), LOG_TEXT_LIMIT)
                ),
            };
            stranger(why);
            return None;
        }
        Ok(Ok(s)) => s,
    };
    let conn = stream.get_ref().1;
    tls::record_handshake(conn.handshake_kind());
    // After a full handshake the verifier accepted the certificate; a resumed one restored the
    // certificate its ticket was issued to, which must still be registered here now.
    let Some(peer) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| verifier.identify(c))
        .map(|j| ids[j].clone())
    else {
        stranger(
            "it resumed a TLS session for a certificate that is no longer registered here".into(),
        );
        return None;
    };
    shared
        .learned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .learn(addr.ip(), std::time::Instant::now());
    match read_frame(&mut stream, until, peer.as_str()).await {
        Ok(Some(frame)) => Some((stream, peer, frame)),
        Ok(None) => None, // a probe that connected and left (e.g. a reachability check)
        Err(e) => {
            shared.event(
                Level::Warn,
                "stranger",
                None,
                Some(peer.as_str()),
                format!("dropped a connection from {peer} at {addr}: {e}"),
            );
            None
        }
    }
}

async fn dispatch(
    shared: Arc<Shared>,
    mut stream: TlsStream<TcpStream>,
    addr: SocketAddr,
    peer: PartyId,
    frame: Frame,
) {
    match frame.kind {
        MsgType::Hello => route(&shared, stream, addr, &peer, &frame.payload).await,
        MsgType::Request => {
            let request: Request = match serde_json::from_slice(&frame.payload) {
                Ok(r) => r,
                Err(e) => {
                    // serde quotes the peer's bytes (an unknown `op`, a field's value) in its error.
                    let err = Error::peer(format!(
                        "{} cannot read the request of {peer}: {}",
                        shared.me,
                        escape_bounded(&e.to_string(), LOG_TEXT_LIMIT)
                    ))
                    .with_hint("run the same secagg version on every party");
                    refuse(&shared, &mut stream, &peer, None, &err, err.to_string()).await;
                    return;
                }
            };
            match request {
                Request::Status { .. } => {
                    // A store that cannot be read is reported in the log, not to the peer: the
                    // rest of the status is still worth answering.
                    let roster = match tokio::task::block_in_place(|| {
                        crate::roster::held_serial(&shared.home, &shared.me, &peer)
                    }) {
                        Ok(r) => r,
                        Err(e) => {
                            shared.event(
                                Level::Warn,
                                "warning",
                                None,
                                Some(peer.as_str()),
                                format!("cannot read the roster serial for a status answer: {e}"),
                            );
                            None
                        }
                    };
                    let info = StatusInfo {
                        party_id: shared.me.to_string(),
                        client_id: peer.to_string(),
                        secagg_version: SECAGG_VERSION.to_owned(),
                        protocol_version: PROTOCOL_VERSION,
                        agent_protocol_version: AGENT_PROTOCOL_VERSION,
                        time_unix_ms: (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                            as i64,
                        certificate_not_after_unix: shared.certificate_not_after,
                        sessions: shared.sessions.lock().map(|s| s.len()).unwrap_or(0),
                        tls_handshakes: Some({
                            let (full, resumed) = tls::handshake_counts();
                            super::HandshakeCounts { full, resumed }
                        }),
                        connections: shared.pool.as_ref().map(|p| p.counts()),
                        roster_serial: roster.as_ref().map(|r| r.1),
                        roster_issuer: roster.map(|r| r.0.to_string()),
                    };
                    shared.event(
                        Level::Info,
                        "status",
                        None,
                        Some(peer.as_str()),
                        format!("status asked by {peer}"),
                    );
                    reply(&mut stream, &peer, &Reply::Status(info)).await;
                    let _ = stream.shutdown().await;
                }
                Request::Roster { chunked, .. } => {
                    let path = crate::roster::latest_path(&shared.home);
                    let latest = tokio::task::block_in_place(|| roster_transfer::load(&path));
                    let sent = roster_transfer::send(&mut stream, peer.as_str(), latest, chunked);
                    let (level, outcome) = match sent.await {
                        Ok(sent) => (Level::Info, sent.to_string()),
                        Err(e) => (Level::Error, format!("failed: {e}")),
                    };
                    let message = format!("roster asked by {peer}: {outcome}");
                    shared.event(level, "roster", None, Some(peer.as_str()), message);
                    let _ = stream.shutdown().await;
                }
                Request::LomShare { .. }
                | Request::LomAnnounce { .. }
                | Request::LomSurvivors { .. }
                | Request::LomReveal { .. } => {
                    super::dropout::serve(&shared, &mut stream, &peer, request).await;
                    let _ = stream.shutdown().await;
                }
                Request::Start { .. } | Request::Cancel | Request::Confirm => {
                    let err = Error::peer(format!(
                        "{peer} asked {} to {} a session it did not join on this connection",
                        shared.me,
                        match request {
                            Request::Cancel => "cancel",
                            Request::Confirm => "confirm",
                            _ => "start",
                        }
                    ));
                    refuse(&shared, &mut stream, &peer, None, &err, err.to_string()).await;
                }
                Request::Join {
                    version,
                    session_id,
                    parties,
                    engine,
                    key_bits,
                    timeout_ms,
                    scheme,
                    dropout_threshold,
                } => {
                    let join = Join {
                        version,
                        session_id,
                        parties,
                        engine,
                        key_bits,
                        timeout: Duration::from_millis(timeout_ms),
                        scheme,
                        dropout_threshold,
                    };
                    joined(shared, stream, peer, join).await
                }
            }
        }
        other => {
            shared.event(
                Level::Warn,
                "stranger",
                None,
                Some(peer.as_str()),
                format!(
                    "dropped a connection from {peer} at {addr}: protocol violation: its first message was a {} message",
                    other.name()
                ),
            );
        }
    }
}

/// A kept connection (accepted from a node, whose session ended cleanly at both ends) on which
/// the peer sent its next frame: checked and routed as a new connection's first frame
/// ([`first_contact`], [`dispatch`]) — the certificate it was accepted with must be registered
/// for a peer *now*, and the frame must be a hello, which its session then checks like any.
async fn reopen(shared: Arc<Shared>, r: Reopened) {
    let Reopened {
        mut stream,
        addr,
        frame,
    } = r;
    let peer = shared.tls().ok().and_then(|(_, verifier, ids)| {
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| verifier.identify(c))
            .map(|j| ids[j].clone())
    });
    let problem = match (&peer, frame.kind) {
        (None, _) => Some(format!(
            "closed a kept connection from {addr}: the certificate it was accepted with is no longer registered here"
        )),
        (Some(p), kind) if kind != MsgType::Hello => Some(format!(
            "closed a kept connection from {p} at {addr}: protocol violation: it sent a {} message instead of a hello",
            kind.name()
        )),
        _ => None,
    };
    if let Some(why) = problem {
        shared.event(
            Level::Warn,
            "stranger",
            None,
            peer.as_ref().map(|p| p.as_str()),
            why,
        );
        let until = Instant::now() + crate::transport::mesh::ABORT_GRACE;
        let _ = timeout_at(until, stream.shutdown()).await;
        return;
    }
    let peer = peer.expect("checked above");
    if let Some(pool) = &shared.pool {
        pool.count_reused_accepted();
    }
    route(&shared, stream, addr, &peer, &frame.payload).await;
}

/// Hands a negotiation connection to its session, or tells the peer that no such session runs.
async fn route(
    shared: &Arc<Shared>,
    stream: TlsStream<TcpStream>,
    addr: SocketAddr,
    peer: &PartyId,
    payload: &[u8],
) {
    let abort = |stream: TlsStream<TcpStream>, reason: String| async move {
        let stream = tokio_rustls::TlsStream::Server(stream);
        abort_all(
            vec![(peer.to_string(), stream)],
            &format!("peer_failure:{reason}"),
        )
        .await;
    };
    let hello = match Hello::decode(payload, peer.as_str()) {
        Ok(h) => h,
        Err(e) => {
            shared.event(
                Level::Warn,
                "stranger",
                None,
                Some(peer.as_str()),
                e.to_string(),
            );
            abort(stream, e.to_string()).await;
            return;
        }
    };
    let sid = hello.session_id;
    let inbound = shared
        .sessions
        .lock()
        .ok()
        .and_then(|s| s.get(&sid).map(|slot| slot.inbound.clone()));
    let refused = match inbound {
        Some(tx) => match tx.send(Routed {
            stream,
            addr,
            hello,
        }) {
            Ok(()) => return,
            Err(back) => (
                back.0.stream,
                format!(
                    "session {sid} is no longer waiting for connections at {}",
                    shared.me
                ),
            ),
        },
        None => (
            stream,
            format!("no session {sid} is running at the agent of {}", shared.me),
        ),
    };
    shared.event(
        Level::Warn,
        "stranger",
        Some(&sid),
        Some(peer.as_str()),
        format!(
            "refused a negotiation connection from {peer}: {}",
            refused.1
        ),
    );
    abort(refused.0, refused.1).await;
}

struct Join {
    version: u16,
    session_id: String,
    parties: Vec<String>,
    engine: String,
    key_bits: u32,
    timeout: Duration,
    scheme: crate::engine::ContextScheme,
    dropout_threshold: Option<u32>,
}

/// Sends `r` (bounded by a second); a client that went away is not an error here.
pub(super) async fn reply(stream: &mut TlsStream<TcpStream>, peer: &PartyId, r: &Reply) {
    let payload = serde_json::to_vec(r).unwrap_or_default();
    let until = Instant::now() + Duration::from_secs(1);
    let _ = write_frame(
        stream,
        &Frame::new(MsgType::Reply, payload),
        until,
        peer.as_str(),
    )
    .await;
}

/// Logs `message` as a `refused` warning and answers `peer` with `err`.
pub(super) async fn refuse(
    shared: &Shared,
    stream: &mut TlsStream<TcpStream>,
    peer: &PartyId,
    session: Option<&SessionId>,
    err: &Error,
    message: String,
) {
    shared.event(
        Level::Warn,
        "refused",
        session,
        Some(peer.as_str()),
        message,
    );
    let error = WireError::of(err);
    reply(stream, peer, &Reply::Refused { error }).await;
}

/// The agent's policy on who may request sessions: the researchers named with
/// `--allow-researcher`, else those registered here by hand. A roster vouches for nodes: a
/// researcher it registered could otherwise run sessions here on the issuer's word alone.
fn check_policy(shared: &Shared, peer: &PartyId, deadline: std::time::Instant) -> Result<()> {
    let me = &shared.me;
    let named = &shared.opts.allow_researchers;
    if !named.is_empty() {
        if named.contains(peer) {
            return Ok(());
        }
        return Err(Error::authentication(format!(
            "the policy of {me} does not allow researcher {peer} to request sessions"
        ))
        .with_hint(format!(
            "the operator of {me} can allow it with `secagg serve --allow-researcher {peer}`"
        )));
    }
    let record = tokio::task::block_in_place(|| {
        let mut store = shared.stores.take_until(deadline)?;
        store.read(|tx| crate::store::peers::get(tx, peer))
    })?;
    match record {
        Some(r) if r.registered_by_hand() => Ok(()),
        Some(r) => Err(Error::authentication(format!(
            "the policy of {me} takes session requests only from researchers registered there by hand or named with --allow-researcher, and {peer} was registered by a roster ({})",
            crate::peers::origin(&r.source)
        ))
        .with_hint(format!(
            "the operator of {me} can allow it with `secagg serve --allow-researcher {peer}` (naming every researcher to accept), or register it by hand after checking its fingerprint out of band (`secagg certificate register --bundle FILE --upsert --expect-fingerprint FP`)"
        ))),
        None => Err(Error::authentication(format!(
            "{peer} is no longer registered at {me}"
        ))),
    }
}

/// Checks a join request; `Ok` holds the session's plan, inbound receiver, slot guard and, for
/// MP-SPDZ, the port reserved.
fn check_join(
    shared: &Arc<Shared>,
    peer: &PartyId,
    j: &Join,
    deadline: std::time::Instant,
) -> Result<Joined> {
    let me = &shared.me;
    if j.version != AGENT_PROTOCOL_VERSION {
        return Err(Error::peer(format!(
            "{peer} speaks agent protocol version {}, {me} speaks version {AGENT_PROTOCOL_VERSION}",
            j.version
        ))
        .with_hint("run the same secagg version on every party"));
    }
    if peer.role() != Role::Researcher {
        return Err(Error::authentication(format!(
            "{me} accepts session requests only from researchers, and {peer} is a node"
        )));
    }
    check_policy(shared, peer, deadline)?;
    if shared.level() >= StopLevel::Draining {
        return Err(Error::peer(format!("the agent of {me} is shutting down"))
            .with_hint("retry once it has been restarted"));
    }
    let mpspdz = match j.engine.as_str() {
        NativeEngine::NAME => None,
        MpSpdzEngine::NAME => match &shared.opts.mpspdz {
            Some(m) => Some(m),
            None => {
                return Err(Error::invalid(format!(
                    "the agent of {me} does not run MP-SPDZ sessions: it was started without --mpspdz-ports"
                ))
                .with_hint(format!(
                    "the operator of {me} can restart it with `secagg serve --mpspdz-ports FIRST-LAST --mpspdz-root DIR`; or use --engine native"
                )))
            }
        },
        other => {
            return Err(Error::invalid(format!(
                "the agent of {me} does not know the engine `{}`",
                crate::transport::mesh::escape_peer_text(other)
            ))
            .with_hint("use --engine native or --engine mp-spdz"))
        }
    };
    if j.timeout.is_zero() || j.timeout > MAX_SESSION_TIMEOUT {
        return Err(Error::invalid(format!(
            "the session timeout {:.1}s is outside what the agent of {me} accepts (up to {} s)",
            j.timeout.as_secs_f64(),
            MAX_SESSION_TIMEOUT.as_secs()
        )));
    }
    let session_id = SessionId::parse(&j.session_id)?;
    let parties = j
        .parties
        .iter()
        .map(|p| PartyId::parse(p))
        .collect::<Result<Vec<_>>>()?;
    if let Some(expected) = &shared.opts.only_parties {
        if &parties != expected {
            return Err(Error::invalid(format!(
                "{me} waits for a session among {}, and {peer} asked it to join one among {}",
                list_ids(expected),
                list_ids(&parties)
            ))
            .with_hint(
                "both sides must run the same secagg context setup (same parties, same order)",
            ));
        }
    }
    if parties.first() != Some(peer) {
        return Err(Error::authentication(format!(
            "{peer} asked {me} to join a session whose researcher is {}",
            parties
                .first()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "nobody".into())
        ))
        .with_hint("a researcher may request only its own sessions"));
    }
    // Reserve the slot first, under the lock: limits and duplicates are decided atomically.
    let (tx, rx) = mpsc::unbounded_channel();
    let mpspdz_port = {
        let mut sessions = shared.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.contains_key(&session_id) {
            return Err(Error::conflict(format!(
                "session {session_id} is already joined or running at {me}"
            ))
            .with_hint("each negotiation needs a new session id"));
        }
        if sessions.len() >= shared.opts.max_sessions {
            return Err(Error::conflict(format!(
                "{me} refuses session {session_id}: it already runs {} sessions, its limit (--max-sessions {})",
                sessions.len(),
                shared.opts.max_sessions
            ))
            .with_hint("retry when sessions have finished"));
        }
        let mine = sessions.values().filter(|s| s.researcher == *peer).count();
        if mine >= shared.opts.max_sessions_per_researcher {
            return Err(Error::conflict(format!(
                "{me} refuses session {session_id}: {peer} already runs {mine} sessions there, the limit per researcher (--max-sessions-per-researcher {})",
                shared.opts.max_sessions_per_researcher
            ))
            .with_hint("retry when your other sessions have finished"));
        }
        // MP-SPDZ: a port of the range that no other session holds and that can be bound now
        // (another program may hold some), decided under the same lock.
        let mpspdz_port = match mpspdz {
            None => None,
            Some(m) => {
                let taken: Vec<u16> = sessions.values().filter_map(|s| s.mpspdz_port).collect();
                let free = m.ports.clone().find(|p| {
                    !taken.contains(p)
                        && std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, *p)).is_ok()
                });
                match free {
                    Some(p) => Some(p),
                    None => {
                        let size = m.ports.end() - m.ports.start() + 1;
                        return Err(Error::conflict(format!(
                            "{me} refuses MP-SPDZ session {session_id}: every port of its range --mpspdz-ports {}-{} is in use ({} by its running MP-SPDZ sessions, {} by other programs)",
                            m.ports.start(),
                            m.ports.end(),
                            taken.len(),
                            size as usize - taken.len()
                        ))
                        .with_hint(format!(
                            "retry when sessions have finished; the operator of {me} can give the agent a wider --mpspdz-ports range"
                        )));
                    }
                }
            }
        };
        sessions.insert(
            session_id,
            Slot {
                researcher: peer.clone(),
                inbound: tx,
                mpspdz_port,
                parties: parties.len(),
            },
        );
        mpspdz_port
    };
    let guard = SlotGuard {
        shared: shared.clone(),
        id: session_id,
    };
    let req = SessionRequest {
        session_id,
        parties,
        timeout: j.timeout,
        key_bits: Some(j.key_bits),
        prime: None,
        listen: None,
        endpoint: Some(shared.endpoint.clone()),
        scheme: j.scheme,
        min_nodes: shared.opts.min_nodes,
        dropout_threshold: j.dropout_threshold,
    };
    // A LOM session masks only with parties this node pinned itself: the researcher's roster
    // may not bring new ones in mid-join (a dishonest researcher would list parties it runs).
    if j.scheme == crate::engine::ContextScheme::Jl {
        tokio::task::block_in_place(|| learn_new_parties(shared, peer, &req.parties, deadline))?;
    }
    // Exactly the checks of `secagg negotiate` (store read: off the async workers' hot path).
    let plan = tokio::task::block_in_place(|| {
        // MP-SPDZ's own checks (certificates as MP-SPDZ sees them, the binary), before this
        // party accepts: a refusal now leaves nothing stored anywhere.
        let mut store = shared.stores.take_until(deadline)?;
        let plan = session::plan_with(
            &mut store,
            &shared.own,
            || Ok(shared.key_pkcs8_der.clone()),
            &req,
            OffsetDateTime::now_utc(),
            deadline,
        )?;
        if let Some(m) = mpspdz {
            MpSpdzEngine::new(m.root.clone(), &shared.home).preflight(&plan)?;
        }
        Ok::<_, Error>(plan)
    })?;
    Ok(Joined {
        plan,
        inbound: rx,
        guard,
        sid: session_id,
        mpspdz_port,
    })
}

/// Before a join is checked: the parties it names that this party does not know, if any, are
/// learned from `researcher`'s latest roster when the agent accepts rosters from it
/// (`--accept-rosters-from`); otherwise the join is refused naming them and the real fix (a
/// roster pull here), where the plan's own check would only say "not registered".
fn learn_new_parties(
    shared: &Arc<Shared>,
    researcher: &PartyId,
    parties: &[PartyId],
    deadline: std::time::Instant,
) -> Result<()> {
    let unknown = unknown_parties(shared, parties, deadline)?;
    if unknown.is_empty() {
        return Ok(());
    }
    let me = &shared.me;
    if shared.opts.accept_rosters_from.as_ref() != Some(researcher) {
        return Err(Error::not_found(format!(
            "{me} does not know {}, named in the session of {researcher}",
            list_ids(&unknown)
        ))
        .with_hint(format!(
            "if {researcher} added {} to the federation: at {me}, run `secagg roster pull` (after {researcher} ran `secagg roster export`), or start its agent with --accept-rosters-from {researcher}",
            if unknown.len() == 1 { "it" } else { "them" }
        )));
    }
    let imported = pull_and_import(shared, researcher);
    if imported.is_ok() {
        // The new parties dial this agent during the session: its acceptor must know them now,
        // not a cache period later.
        *shared.peers.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    match &imported {
        Ok(plan) => shared.event(
            Level::Info,
            "roster",
            None,
            Some(researcher.as_str()),
            format!(
                "imported roster #{} of {researcher} for a session naming {}: {} new, {} endpoint changed, {} removed",
                plan.serial,
                list_ids(&unknown),
                plan.count(crate::roster::Change::New),
                plan.count(crate::roster::Change::EndpointChanged),
                plan.count(crate::roster::Change::Removed)
            ),
        ),
        Err(e) => shared.event(
            Level::Warn,
            "roster",
            None,
            Some(researcher.as_str()),
            format!("could not take the roster of {researcher}: {e}"),
        ),
    }
    let still = unknown_parties(shared, parties, deadline)?;
    match (imported, still.is_empty()) {
        (_, true) => Ok(()),
        (Err(e), false) => Err(e.context(format!(
            "{me} does not know {} and could not take {researcher}'s roster",
            list_ids(&still)
        ))),
        (Ok(plan), false) => Err(Error::not_found(format!(
            "{me} does not know {}: the latest roster of {researcher} (#{}) does not list {}",
            list_ids(&still),
            plan.serial,
            if still.len() == 1 { "it" } else { "them" }
        ))
        .with_hint(format!(
            "{researcher} registers the new node, then runs `secagg roster export` (its agent serves the latest export)"
        ))),
    }
}

/// The parties of `parties` other than this one that are not registered here.
fn unknown_parties(
    shared: &Shared,
    parties: &[PartyId],
    deadline: std::time::Instant,
) -> Result<Vec<PartyId>> {
    let registered = shared
        .stores
        .take_until(deadline)?
        .read(|tx| crate::store::peers::list(tx))?;
    Ok(parties
        .iter()
        .filter(|p| **p != shared.me && !registered.iter().any(|r| r.party_id == **p))
        .cloned()
        .collect())
}

/// Pulls `researcher`'s latest roster from its agent and imports it (pruning what its older
/// rosters brought and it no longer lists). The pull runs its own runtime, so on a thread of
/// its own, not on this agent's.
fn pull_and_import(shared: &Shared, researcher: &PartyId) -> Result<crate::roster::ImportPlan> {
    let home = shared.home.clone();
    let from = researcher.clone();
    let (_, bytes) = std::thread::spawn(move || super::pull_roster(&home, Some(&from)))
        .join()
        .map_err(|_| Error::internal("the roster pull panicked"))??;
    let file =
        crate::roster::UnverifiedRoster::parse(&bytes, &format!("from the agent of {researcher}"))?;
    let opts = crate::roster::ImportOptions {
        prune: true,
        ..Default::default()
    };
    crate::roster::import(&shared.own, &file, &opts, None, OffsetDateTime::now_utc())
}

/// A session this agent accepted, waiting for its start.
struct Joined {
    plan: NegotiationPlan,
    inbound: mpsc::UnboundedReceiver<Routed>,
    guard: SlotGuard,
    sid: SessionId,
    /// MP-SPDZ sessions: the port reserved for this party's `shamir-party.x`.
    mpspdz_port: Option<u16>,
}

async fn joined(shared: Arc<Shared>, mut stream: TlsStream<TcpStream>, peer: PartyId, j: Join) {
    let deadline = std::time::Instant::now() + j.timeout;
    let sid_text = j.session_id.clone();
    let Joined {
        plan,
        inbound,
        guard,
        sid,
        mpspdz_port,
    } = match check_join(&shared, &peer, &j, deadline) {
        Ok(x) => x,
        Err(e) => {
            let sid = SessionId::parse(&sid_text).ok();
            let message = format!("refused the session request of {peer}: {e}");
            refuse(&shared, &mut stream, &peer, sid.as_ref(), &e, message).await;
            let _ = stream.shutdown().await;
            return;
        }
    };
    shared.event(
        Level::Info,
        "joined",
        Some(&sid),
        Some(peer.as_str()),
        format!(
            "accepted the session request of {peer}: {} parties, this party is party {}, timeout {:.1}s, engine {}{}",
            plan.n(),
            plan.my_index(),
            j.timeout.as_secs_f64(),
            j.engine,
            mpspdz_port
                .map(|p| format!(", MP-SPDZ port {p}"))
                .unwrap_or_default()
        ),
    );
    reply(&mut stream, &peer, &Reply::Accepted { mpspdz_port }).await;
    let tokio_deadline = Instant::from_std(deadline);
    let mut stop = shared.shutdown.subscribe();
    let start = tokio::select! {
        started = await_start(&mut stream, &peer, plan, sid, mpspdz_port, deadline) => started,
        _ = stop.wait_for(|l| *l >= StopLevel::Draining) => Err(Error::peer(format!(
            "the agent of {} is shutting down; session {sid} was not started", shared.me
        ))),
    };
    let start = match start {
        Ok(start) => start,
        Err(e) => {
            shared.event(
                Level::Info,
                "cancelled",
                Some(&sid),
                Some(peer.as_str()),
                format!("session not started, nothing stored: {e}"),
            );
            result_reply(&mut stream, &peer, "none", 0.0, Some(&e)).await;
            drop(guard);
            return;
        }
    };
    shared.event(
        Level::Info,
        "started",
        Some(&sid),
        Some(peer.as_str()),
        "session started",
    );
    let started = std::time::Instant::now();
    let progress = Arc::new(AtomicU8::new(0));
    let cancel = CancelFlag::new();
    let is_mpspdz = matches!(start, Start::MpSpdz(_));
    // A native session's negotiation with the researcher runs on this very connection (no
    // second connection and handshake); it comes back after a clean end, for the report.
    let (give_back, given_back) = oneshot::channel();
    let mut control = Some(stream);
    // A native session's connections, held here until the engine takes them: the nodes' routed
    // to it, and the researcher's. An agent stopped before that aborts them itself.
    let unstarted = Mutex::new(match is_mpspdz {
        true => None,
        false => Some((
            inbound,
            control.take().map(|stream| ControlLink {
                peer: 0,
                stream: tokio_rustls::TlsStream::Server(stream),
                give_back,
            }),
        )),
    });
    // An MP-SPDZ node confirms its key only on the researcher's word, sent once the server key
    // is stored (the engine leaves it unconfirmed after the run; `run_mpspdz` waits for this).
    let (verdict_tx, verdict_rx) = std::sync::mpsc::channel::<Verdict>();
    let run = async {
        crate::fault::at(crate::fault::Step::AgentStarted)?;
        if let Some(pause) = crate::fault::pause_at(crate::fault::Step::AgentStarted) {
            sleep(pause).await;
        }
        match start {
            Start::MpSpdz(plan) => {
                run_mpspdz(
                    shared.clone(),
                    plan,
                    deadline,
                    progress.clone(),
                    sid,
                    cancel.clone(),
                    verdict_rx,
                )
                .await
            }
            Start::Native(plan) => {
                let connections = unstarted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| Error::peer("the session was stopped before it started"))?;
                run_native(
                    shared.clone(),
                    plan,
                    deadline,
                    connections,
                    progress.clone(),
                    sid,
                    cancel.clone(),
                )
                .await
            }
        }
    };
    tokio::pin!(run);
    // While an MP-SPDZ session runs, the control connection stays open: the researcher cancels
    // the session there (a `cancel` request, or closing it) once it failed on its side, so that
    // this party does not wait for its deadline (MP-SPDZ has no abort of its own to tell it). A
    // native session's researcher aborts it on the connection it runs on.
    enum Ended {
        Done(Result<session::NegotiationReport>),
        Stopped,
        Cancelled(String),
    }
    // Reads the researcher's requests on the control connection while the session runs: its
    // one `confirm` goes to the run; anything else ends the session, for the reason returned.
    let cancel_request = async {
        let Some(stream) = control.as_mut() else {
            return std::future::pending().await;
        };
        let mut confirmed = false;
        loop {
            let f = read_frame(stream, tokio_deadline, peer.as_str()).await;
            let request = match &f {
                Ok(Some(f)) if f.kind == MsgType::Request => {
                    serde_json::from_slice::<Request>(&f.payload).ok()
                }
                _ => None,
            };
            match (f, request) {
                (_, Some(Request::Confirm)) if is_mpspdz && !confirmed => {
                    confirmed = true;
                    let _ = verdict_tx.send(Verdict::Confirm);
                }
                (_, Some(Request::Cancel)) => return format!("{peer} cancelled session {sid}"),
                (Ok(Some(f)), _) => {
                    return format!(
                        "protocol violation by {peer}: sent a {} message while session {sid} ran",
                        f.kind.name()
                    )
                }
                (Ok(None), _) => {
                    return format!("{peer} closed the control connection of session {sid}")
                }
                (Err(e), _) => {
                    return format!("the control connection of session {sid} failed: {e}")
                }
            }
        }
    };
    let ended = tokio::select! {
        r = &mut run => Ended::Done(r),
        _ = stop.wait_for(|l| *l >= StopLevel::Aborting) => Ended::Stopped,
        why = cancel_request => Ended::Cancelled(why),
    };
    let result = match ended {
        Ended::Done(r) => r,
        Ended::Stopped => {
            let why = format!(
                "the agent of {} was stopped and aborted session {sid} after its grace period",
                shared.me
            );
            if is_mpspdz {
                // shamir-party.x runs on a thread of its own: have its process group killed and
                // the secrets removed before the slot (and its port) is given up; a run waiting
                // for the researcher's confirmation keeps its key unconfirmed.
                cancel.cancel();
                let _ = verdict_tx.send(Verdict::Withheld);
                let _ = run.await;
            } else {
                // The native engine aborts with this reason (its peers, the researcher among
                // them, learn why) if its key is not stored yet; otherwise it is dropped. Not
                // started yet: its connections get the abort here.
                cancel.cancel_because(why.clone());
                let held = unstarted.lock().unwrap_or_else(|p| p.into_inner()).take();
                match held {
                    Some(connections) => {
                        abort_unstarted(connections, shared.me.as_str(), peer.as_str(), &why).await
                    }
                    None => {
                        let _ = timeout(STOP_ABORT_WAIT, &mut run).await;
                    }
                }
            }
            Err(Error::peer(why))
        }
        Ended::Cancelled(why) => {
            shared.event(
                Level::Info,
                "cancelled",
                Some(&sid),
                Some(peer.as_str()),
                format!("cancelling the running session: {why}"),
            );
            // The engines honour the flag only where the invariant allows (the native engine:
            // before this node stores its key; MP-SPDZ: the key was stored before the run, and
            // the researcher gets no output from a killed run), so the run ends, then reports.
            cancel.cancel();
            let _ = verdict_tx.send(Verdict::Withheld);
            match run.await {
                Ok(r) => Ok(r),
                Err(e) => Err(e.context(why)),
            }
        }
    };
    let ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let state = match progress.load(Ordering::SeqCst) {
        2 => "confirmed",
        1 => "unconfirmed",
        _ => "none",
    };
    log_end(&shared, sid, &peer, &result, state, ms);
    // The slot goes before the result: a researcher that starts its next session on hearing it
    // must find the slot free.
    drop(guard);
    // A native session's connection is back only after a clean end at both ends; after a
    // failure the researcher had this party's abort on it instead.
    let mut stream = match control {
        Some(stream) => stream,
        // The run ended: the connection is on its way back, or closed.
        None if result.is_ok() => match given_back.await {
            Ok(tokio_rustls::TlsStream::Server(stream)) => stream,
            _ => return,
        },
        None => return,
    };
    result_reply(&mut stream, &peer, state, ms, result.as_ref().err()).await;
    let until = Instant::now() + Duration::from_secs(1);
    let _ = timeout_at(until, stream.shutdown()).await;
}

/// What the researcher's `start` turned an accepted session into: the plan to run.
enum Start {
    /// A native session, its plan as accepted.
    Native(NegotiationPlan),
    /// An MP-SPDZ session, its plan with the ip file the researcher handed every party.
    MpSpdz(NegotiationPlan),
}

/// Reads the researcher's `start` of the accepted session on its control connection and checks
/// it: an MP-SPDZ session's carries the ip file (this party's line with the port it reserved), a
/// native session's none. Anything else (another message, a close, the deadline) is the reason
/// the session never started.
async fn await_start(
    stream: &mut TlsStream<TcpStream>,
    peer: &PartyId,
    plan: NegotiationPlan,
    sid: SessionId,
    mpspdz_port: Option<u16>,
    deadline: std::time::Instant,
) -> Result<Start> {
    let frame = read_frame(stream, Instant::from_std(deadline), peer.as_str()).await?;
    let request = match frame {
        Some(f) if f.kind == MsgType::Request => serde_json::from_slice::<Request>(&f.payload).ok(),
        Some(f) => {
            return Err(Error::peer(format!(
                "protocol violation by {peer}: sent a {} message instead of the start of session {sid}",
                f.kind.name()
            )))
        }
        None => {
            return Err(Error::peer(format!(
                "{peer} closed the connection before starting session {sid} (another party refused or was unreachable)"
            )))
        }
    };
    match request {
        Some(Request::Start {
            mpspdz_endpoints: None,
        }) if mpspdz_port.is_none() => Ok(Start::Native(plan)),
        Some(Request::Start {
            mpspdz_endpoints: Some(lines),
        }) if mpspdz_port.is_some() => super::mpspdz_plan(plan, &lines, mpspdz_port, deadline)
            .map(Start::MpSpdz)
            .map_err(|e| e.context(format!("protocol violation by {peer}"))),
        Some(Request::Start { .. }) => Err(Error::peer(format!(
            "protocol violation by {peer}: the start of session {sid} {} an MP-SPDZ ip file",
            if mpspdz_port.is_some() {
                "lacks"
            } else {
                "carries"
            }
        ))),
        _ => Err(Error::peer(format!(
            "protocol violation by {peer}: expected the start of session {sid}"
        ))),
    }
}

/// Logs how a started session ended at this party (`state`: what it stored).
fn log_end(
    shared: &Shared,
    sid: SessionId,
    peer: &PartyId,
    result: &Result<session::NegotiationReport>,
    state: &str,
    ms: f64,
) {
    match result {
        Ok(_) => shared.event(
            Level::Info,
            "succeeded",
            Some(&sid),
            Some(peer.as_str()),
            format!("session succeeded in {ms:.1} ms: key stored and confirmed"),
        ),
        Err(e) => shared.event(
            Level::Error,
            "failed",
            Some(&sid),
            Some(peer.as_str()),
            format!(
                "session failed after {ms:.1} ms ({}): {e}",
                match state {
                    "confirmed" => "key stored and confirmed",
                    "unconfirmed" => "key stored, unconfirmed",
                    _ => "nothing stored",
                }
            ),
        ),
    }
}

/// Aborts a native session before the engine took its connections (the agent stops). The nodes'
/// connections already routed to it get the abort first: closed without it, a node would report
/// only the close, possibly before the researcher hears why (regression: a flaky SIGTERM test).
/// The researcher's hello, sent right after the start, is read before its abort so that closing
/// the connection does not reset it before the abort is read.
async fn abort_unstarted(
    (mut routed, link): (mpsc::UnboundedReceiver<Routed>, Option<ControlLink>),
    me: &str,
    researcher: &str,
    why: &str,
) {
    let reason = crate::transport::mesh::abort_reason(&Error::peer(why), me);
    routed.close();
    let mut nodes = Vec::new();
    while let Ok(r) = routed.try_recv() {
        nodes.push((
            r.addr.to_string(),
            tokio_rustls::TlsStream::Server(r.stream),
        ));
    }
    abort_all(nodes, &reason).await;
    if let Some(link) = link {
        let mut stream = link.stream;
        let until = Instant::now() + crate::transport::mesh::ABORT_GRACE;
        let _ = read_frame(&mut stream, until, researcher).await;
        abort_all(vec![(researcher.to_owned(), stream)], &reason).await;
    }
}

/// How long a native session stopped with the agent may take to send its abort (with why) to
/// its peers before it is dropped.
const STOP_ABORT_WAIT: Duration = Duration::from_millis(500);

async fn result_reply(
    stream: &mut TlsStream<TcpStream>,
    peer: &PartyId,
    state: &str,
    ms: f64,
    error: Option<&Error>,
) {
    let r = Reply::Result {
        state: state.to_owned(),
        ms,
        error: error.map(WireError::of),
    };
    reply(stream, peer, &r).await;
}

/// A [`KeySink`] for sessions run on the agent's multi-threaded runtime: the store's blocking,
/// fsynced writes run with `block_in_place` (other sessions move to other workers), and how far
/// the key got is recorded for the result report even if the session is aborted.
struct AgentSink<'a, 'b> {
    inner: &'a mut StoreSink<'b>,
    progress: Arc<AtomicU8>,
}

impl KeySink for AgentSink<'_, '_> {
    fn store(&mut self, key: &SecretKey) -> Result<()> {
        tokio::task::block_in_place(|| self.inner.store(key))?;
        self.progress.store(1, Ordering::SeqCst);
        Ok(())
    }
    fn store_pairwise(&mut self, set: &crate::lom::PairwiseSet) -> Result<()> {
        tokio::task::block_in_place(|| self.inner.store_pairwise(set))?;
        self.progress.store(1, Ordering::SeqCst);
        Ok(())
    }
    fn confirm(&mut self) -> Result<()> {
        tokio::task::block_in_place(|| self.inner.confirm())?;
        self.progress.store(2, Ordering::SeqCst);
        Ok(())
    }
    fn warn(&mut self, message: &str) {
        self.inner.warn(message);
    }
}

/// [`AgentSink`] for a session run on a blocking thread (MP-SPDZ): the store's writes block
/// that thread only.
struct BlockingSink<'a, 'b> {
    inner: &'a mut StoreSink<'b>,
    progress: Arc<AtomicU8>,
}

impl KeySink for BlockingSink<'_, '_> {
    fn store(&mut self, key: &SecretKey) -> Result<()> {
        self.inner.store(key)?;
        self.progress.store(1, Ordering::SeqCst);
        Ok(())
    }
    fn confirm(&mut self) -> Result<()> {
        self.inner.confirm()?;
        self.progress.store(2, Ordering::SeqCst);
        Ok(())
    }
    fn warn(&mut self, message: &str) {
        self.inner.warn(message);
    }
}

/// The researcher's word to an MP-SPDZ node whose run completed.
enum Verdict {
    /// The server key is stored: the node confirms its key.
    Confirm,
    /// The session ends without it (cancelled, the control connection lost, the agent stopped):
    /// the node keeps its key unconfirmed (the caller adds why the session ended).
    Withheld,
}

/// This party's side of an MP-SPDZ session: the engine of `secagg negotiate --engine mp-spdz`
/// (preparation, supervised `shamir-party.x` with the deadline and process-group kill, secret
/// cleanup), on a blocking thread; `cancel` kills the run. After a successful run the key stays
/// unconfirmed until `verdict` brings the researcher's confirmation (it stored the server key),
/// as a native session's does: a confirmed key always has a server key.
async fn run_mpspdz(
    shared: Arc<Shared>,
    plan: NegotiationPlan,
    deadline: std::time::Instant,
    progress: Arc<AtomicU8>,
    sid: SessionId,
    cancel: CancelFlag,
    verdict: std::sync::mpsc::Receiver<Verdict>,
) -> Result<session::NegotiationReport> {
    let m = shared
        .opts
        .mpspdz
        .clone()
        .ok_or_else(|| Error::Internal("MP-SPDZ session without MP-SPDZ settings".into()))?;
    let task = tokio::task::spawn_blocking(move || {
        let log = shared.clone();
        let mut warn = move |w: &str| log.event(Level::Warn, "warning", Some(&sid), None, w);
        let store = shared.stores.take_until(deadline)?;
        let mut sink = StoreSink::with_store(
            &shared.home,
            store,
            &plan,
            MpSpdzEngine::NAME,
            deadline,
            &mut warn,
        )?;
        let engine = MpSpdzEngine::new(m.root, &shared.home).confirmed_by_the_researcher();
        let result = {
            let mut s = BlockingSink {
                inner: &mut sink,
                progress,
            };
            engine
                .negotiate_cancellable(plan, &mut s, &cancel)
                .and_then(|outcome| {
                    let wait = deadline.saturating_duration_since(std::time::Instant::now());
                    match verdict.recv_timeout(wait) {
                        Ok(Verdict::Confirm) => {
                            crate::engine::mpspdz::confirm_node_key(&mut s)?;
                            Ok(outcome)
                        }
                        Ok(Verdict::Withheld) => Err(Error::peer("the session ended without it")),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            Err(Error::timeout(format!(
                            "session {sid}: no confirmation from the researcher before the deadline"
                        )))
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            Err(Error::Internal(
                                "the session ended without the researcher's word".into(),
                            ))
                        }
                    }
                })
        };
        sink.report(result)
    });
    task.await
        .map_err(|e| Error::Internal(format!("the MP-SPDZ run's thread failed: {e}")))?
}

async fn run_native(
    shared: Arc<Shared>,
    plan: NegotiationPlan,
    deadline: std::time::Instant,
    // The other nodes' connections as the acceptor routes them, and the researcher's.
    (inbound, researcher_link): (mpsc::UnboundedReceiver<Routed>, Option<ControlLink>),
    progress: Arc<AtomicU8>,
    sid: SessionId,
    cancel: CancelFlag,
) -> Result<session::NegotiationReport> {
    let log = shared.clone();
    let mut warn = move |w: &str| log.event(Level::Warn, "warning", Some(&sid), None, w);
    let mut sink = tokio::task::block_in_place(|| {
        let store = shared.stores.take_until(deadline)?;
        StoreSink::with_store(
            &shared.home,
            store,
            &plan,
            NativeEngine::NAME,
            deadline,
            &mut warn,
        )
    })?;
    let result = {
        let mut agent_sink = AgentSink {
            inner: &mut sink,
            progress,
        };
        crate::engine::native::negotiate_routed(
            plan,
            &mut agent_sink,
            Some(inbound),
            shared.pool.clone(),
            researcher_link.into_iter().collect(),
            Some(&cancel),
        )
        .await
    };
    tokio::task::block_in_place(|| sink.report(result))
}
