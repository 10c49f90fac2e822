//! Negotiation connections kept open between sessions (party agents only).
//!
//! A 100-party session opens 4,950 node-to-node connections; even resumed, each TLS handshake
//! costs about half a millisecond of CPU, more than a whole session may take on two cores. Two
//! party agents therefore keep the connection of a session that ended cleanly and run a later
//! session of theirs on it. What makes that safe:
//!
//! - **Directional.** Only the party that *dialed* a connection (the TLS client) ever starts a
//!   session on it again: it keeps it here, keyed by the peer's label and the name derived from
//!   its own certificate and the peer certificate it pinned ([`super::tls::server_name`]). The
//!   party that accepted it only waits for the next hello on it ([`Pool::keep_accepted`]) and
//!   hands it to its agent, which routes it exactly as the first hello of a newly accepted
//!   connection (the client certificate identified against the peers registered *now*, then
//!   against the session's expected parties, the hello against the session's own). The two ends
//!   can thus never start two different sessions on one connection.
//! - **Clean end only.** A connection is kept only after a session that succeeded at both ends
//!   and whose frames were all read: each side sends an `End` frame after its session succeeded
//!   and keeps the connection only once the peer's `End` arrived too (its reader stops right
//!   after it, so the next session's frames are never read by this one). A failure, abort,
//!   cancel, timeout, or any unexpected frame closes the connection instead (`crate::transport::mesh`).
//! - **Pinned.** A kept connection is only taken for a session whose plan has, for that party,
//!   the very certificate it was pinned to when dialed (the key), and that certificate is
//!   checked again on the connection. Every session still exchanges its own hello, which binds
//!   the session id, the party list with every certificate, and the parameters.
//! - **Alive.** An idle connection is watched: anything the peer sends on it (it must send
//!   nothing), its close, a failed TCP keepalive (a peer gone without a word, see
//!   [`KEEPALIVE_IDLE`]), or the idle timeout closes it. A kept connection that fails before the
//!   peer's hello (the peer agent restarted meanwhile) is replaced by a fresh dial, transparently.
//! - **Bounded.** At most [`MAX_IDLE_PER_PEER`] idle connections per peer and [`MAX_IDLE`] in
//!   all, each way; the accepting side waits [`ACCEPTED_IDLE_MARGIN`] longer than the dialing
//!   side, so that the dialing side normally closes an idle connection first.
//!
//! A one-shot `secagg negotiate` keeps nothing and never sends `End`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::frame::{read_frame, Frame};

/// The client side of a negotiation connection.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// The server side of a negotiation connection.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Idle connections kept per peer, each way: enough for as many concurrent sessions between two
/// agents as one researcher may run (`crate::agent::DEFAULT_MAX_SESSIONS_PER_RESEARCHER`).
pub const MAX_IDLE_PER_PEER: usize = 16;

/// Idle connections kept in all, each way (two file descriptors per kept pair of agents, one
/// at each end; well under a default limit of 1,024 open files even with both ways full).
pub const MAX_IDLE: usize = 384;

/// How much longer the accepting side waits for a hello on an idle connection than the dialing
/// side keeps it.
pub const ACCEPTED_IDLE_MARGIN: Duration = Duration::from_secs(10);

/// How long a party that ended a session cleanly waits for its peer's `End` before it closes
/// the connection instead of keeping it (the peers of one session end at slightly different
/// times: each when the researcher's confirmation reached it).
pub const END_WAIT: Duration = Duration::from_secs(5);

/// Default idle time of a kept connection (`secagg serve --keep-connections`).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);

/// TCP keepalive of a kept connection: the kernel probes the peer after this much silence, ...
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... then this often, ...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and gives the connection up after this many unanswered probes (about a minute in all).
pub const KEEPALIVE_PROBES: u32 = 3;

/// Has the kernel probe a kept connection while it is idle, so that a peer gone without a word
/// (its host lost power, or a firewall between the hosts silently dropped the flow) is noticed
/// while the connection waits in the pool: its watcher's read fails and closes it. Otherwise the
/// next session would find out, and on a silently dropped flow it would wait for its deadline.
/// The probes also keep a stateful firewall's entry for the flow alive. Best effort: a socket
/// that refuses the option works as before.
fn keep_alive(tcp: &TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes);
}

/// What identifies the connections that may serve a party of a later session: its label,
/// [`super::tls::server_name`] of this party's certificate and the peer certificate pinned, and
/// the endpoint it was dialed at (a party re-registered at another address, even with the same
/// certificate, is dialed there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    label: String,
    pin: String,
    endpoint: String,
}

impl PoolKey {
    /// The key of `label` pinned as `pin` (a [`super::tls::server_name`]) at `endpoint`.
    pub fn new(label: &str, pin: &str, endpoint: &str) -> Self {
        PoolKey {
            label: label.to_owned(),
            pin: pin.to_owned(),
            endpoint: endpoint.to_owned(),
        }
    }
}

/// Connection counters of an agent, since it started (its status reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCounts {
    /// Negotiation connections this agent dialed anew (a TLS handshake each).
    pub dialed: u64,
    /// Sessions this agent started on a connection it had dialed and kept.
    pub reused: u64,
    /// Sessions that reached this agent on a connection it had accepted and kept.
    pub reused_accepted: u64,
    /// Kept connections that turned out dead when a session tried them (replaced by a dial).
    pub stale: u64,
    /// Connections kept after a clean end of their session, both ways.
    pub kept: u64,
    /// Connections closed after a session instead of kept: no clean end (failure, abort, no
    /// `End` from the peer in time) or the limits reached.
    pub not_kept: u64,
    /// Idle connections closed: the peer closed them or sent something, or the idle time ran out.
    pub closed_idle: u64,
    /// Idle connections now: dialed by this agent.
    pub idle_dialed: u64,
    /// Idle connections now: accepted by this agent, waiting for a hello.
    pub idle_accepted: u64,
}

/// A kept accepted connection on which the peer sent its next frame: the agent routes it as the
/// first frame of a new connection.
pub struct Reopened {
    /// The server side of the connection.
    pub stream: ServerStream,
    /// Where it comes from.
    pub addr: SocketAddr,
    /// The frame the peer sent (a hello, if the peer follows the protocol).
    pub frame: Frame,
}

struct Entry {
    id: u64,
    /// Asks the idle connection's watcher for the stream.
    take: oneshot::Sender<oneshot::Sender<ClientStream>>,
}

#[derive(Default)]
struct Idle {
    dialed: HashMap<PoolKey, VecDeque<Entry>>,
    dialed_total: usize,
    accepted: HashMap<String, usize>,
    accepted_total: usize,
    next_id: u64,
}

#[derive(Default)]
struct Counters {
    dialed: AtomicU64,
    reused: AtomicU64,
    reused_accepted: AtomicU64,
    stale: AtomicU64,
    kept: AtomicU64,
    not_kept: AtomicU64,
    closed_idle: AtomicU64,
}

/// The kept connections of one agent (see the module documentation).
pub struct Pool {
    idle_time: Duration,
    state: Mutex<Idle>,
    counters: Counters,
    reopened: mpsc::UnboundedSender<Reopened>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({:?})", self.counts())
    }
}

impl Pool {
    /// A pool whose idle dialed connections close after `idle_time`; the next frame on a kept
    /// accepted connection goes to `reopened`.
    pub fn new(idle_time: Duration, reopened: mpsc::UnboundedSender<Reopened>) -> Arc<Self> {
        Arc::new(Pool {
            idle_time,
            state: Mutex::new(Idle::default()),
            counters: Counters::default(),
            reopened,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters now.
    pub fn counts(&self) -> PoolCounts {
        let c = &self.counters;
        let s = self.state();
        PoolCounts {
            dialed: c.dialed.load(Ordering::Relaxed),
            reused: c.reused.load(Ordering::Relaxed),
            reused_accepted: c.reused_accepted.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            kept: c.kept.load(Ordering::Relaxed),
            not_kept: c.not_kept.load(Ordering::Relaxed),
            closed_idle: c.closed_idle.load(Ordering::Relaxed),
            idle_dialed: s.dialed_total as u64,
            idle_accepted: s.accepted_total as u64,
        }
    }

    pub(crate) fn count_dialed(&self) {
        self.counters.dialed.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_reused(&self) {
        self.counters.reused.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_reused_accepted(&self) {
        self.counters
            .reused_accepted
            .fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_stale(&self) {
        self.counters.stale.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn count_not_kept(&self) {
        self.counters.not_kept.fetch_add(1, Ordering::Relaxed);
    }

    /// An idle connection dialed earlier for `key`, taken out of the pool (the most recently
    /// kept first: the likeliest alive), or `None`.
    pub async fn take(&self, key: &PoolKey) -> Option<ClientStream> {
        loop {
            let entry = {
                let mut s = self.state();
                let queue = s.dialed.get_mut(key)?;
                let entry = queue.pop_back()?;
                if queue.is_empty() {
                    s.dialed.remove(key);
                }
                s.dialed_total -= 1;
                entry
            };
            let (tx, rx) = oneshot::channel();
            // A watcher that just saw its connection die drops the request: try the next one.
            if entry.take.send(tx).is_ok() {
                if let Ok(stream) = rx.await {
                    return Some(stream);
                }
            }
        }
    }

    /// Keeps `stream`, dialed for `key`, after a clean end of its session; closes it when the
    /// limits are reached.
    pub fn keep_dialed(self: &Arc<Self>, key: PoolKey, stream: ClientStream) {
        keep_alive(stream.get_ref().0);
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut s = self.state();
            let queued = s.dialed.get(&key).map_or(0, VecDeque::len);
            if queued >= MAX_IDLE_PER_PEER || s.dialed_total >= MAX_IDLE {
                None
            } else {
                let id = s.next_id;
                s.next_id += 1;
                s.dialed
                    .entry(key.clone())
                    .or_default()
                    .push_back(Entry { id, take: tx });
                s.dialed_total += 1;
                Some(id)
            }
        };
        match id {
            Some(id) => {
                self.counters.kept.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(self.clone().watch_dialed(key, id, stream, rx));
            }
            None => {
                self.count_not_kept();
                tokio::spawn(close(tokio_rustls::TlsStream::Client(stream)));
            }
        }
    }

    /// Holds an idle dialed connection until a session takes it; closes it if the peer sends
    /// anything or closes it (a kept connection carries nothing between sessions), or after the
    /// idle time.
    async fn watch_dialed(
        self: Arc<Self>,
        key: PoolKey,
        id: u64,
        mut stream: ClientStream,
        mut take: oneshot::Receiver<oneshot::Sender<ClientStream>>,
    ) {
        let until = Instant::now() + self.idle_time;
        let mut byte = [0u8; 1];
        // `read` is cancel-safe: when a session takes the connection first, nothing was read.
        let expired = tokio::select! {
            asked = &mut take => {
                if let Ok(reply) = asked {
                    // The taker removed the entry; if it gave up meanwhile, the stream closes.
                    let _ = reply.send(stream);
                }
                return;
            }
            _ = stream.read(&mut byte) => false,
            _ = sleep_until(until) => true,
        };
        let removed = {
            let mut s = self.state();
            let mut removed = false;
            if let Some(queue) = s.dialed.get_mut(&key) {
                let before = queue.len();
                queue.retain(|e| e.id != id);
                removed = queue.len() < before;
                if queue.is_empty() {
                    s.dialed.remove(&key);
                }
            }
            if removed {
                s.dialed_total -= 1;
            }
            removed
        };
        if !removed {
            // A session popped the entry between the wake-up and the lock; its request finds
            // the watcher gone and it tries the next connection.
            return;
        }
        self.counters.closed_idle.fetch_add(1, Ordering::Relaxed);
        if expired {
            close(tokio_rustls::TlsStream::Client(stream)).await;
        }
    }

    /// Keeps `stream`, accepted from the party labelled `label`, after a clean end of its
    /// session: waits for the peer's next frame and hands it to the agent ([`Reopened`]);
    /// closes it when the limits are reached, when the peer closes it, or after the idle time.
    pub fn keep_accepted(self: &Arc<Self>, label: &str, stream: ServerStream, addr: SocketAddr) {
        keep_alive(stream.get_ref().0);
        let admitted = {
            let mut s = self.state();
            let held = s.accepted.get(label).copied().unwrap_or(0);
            if held >= MAX_IDLE_PER_PEER || s.accepted_total >= MAX_IDLE {
                false
            } else {
                *s.accepted.entry(label.to_owned()).or_default() += 1;
                s.accepted_total += 1;
                true
            }
        };
        if !admitted {
            self.count_not_kept();
            tokio::spawn(close(tokio_rustls::TlsStream::Server(stream)));
            return;
        }
        self.counters.kept.fetch_add(1, Ordering::Relaxed);
        let pool = self.clone();
        let label = label.to_owned();
        tokio::spawn(async move {
            let mut stream = stream;
            let until = Instant::now() + pool.idle_time + ACCEPTED_IDLE_MARGIN;
            let next = read_frame(&mut stream, until, &label).await;
            {
                let mut s = pool.state();
                if let Some(held) = s.accepted.get_mut(&label) {
                    *held -= 1;
                    if *held == 0 {
                        s.accepted.remove(&label);
                    }
                }
                s.accepted_total -= 1;
            }
            match next {
                Ok(Some(frame)) => {
                    let _ = pool.reopened.send(Reopened {
                        stream,
                        addr,
                        frame,
                    });
                }
                _ => {
                    pool.counters.closed_idle.fetch_add(1, Ordering::Relaxed);
                    close(tokio_rustls::TlsStream::Server(stream)).await;
                }
            }
        });
    }
}

/// Closes `stream` with TLS close_notify, bounded.
async fn close(mut stream: tokio_rustls::TlsStream<TcpStream>) {
    let until = Instant::now() + super::mesh::ABORT_GRACE;
    let _ = timeout_at(until, stream.shutdown()).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::transport::frame::{write_frame, MsgType};
    use crate::transport::pinned_verifier::PinnedClientVerifier;
    use crate::transport::tls::{self, resumption_tests_support::party};
    use tokio::net::TcpListener;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A pinned mutual TLS connection from a new party `a` to a new party `b`: both ends.
    pub(crate) async fn pair() -> (ClientStream, ServerStream) {
        let (a, a_pin) = party("node_a");
        let (b, b_pin) = party("node_b");
        let provider = tls::provider();
        let verifier = PinnedClientVerifier::new(vec![(0, a_pin)], &provider);
        let server = tls::server_config(&b, verifier, &provider).unwrap();
        let client = tls::client_config_without_resumption(&a, b_pin.clone(), &provider).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            TlsAcceptor::from(server).accept(tcp).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let c = TlsConnector::from(client)
            .connect(tls::server_name(&a, &b_pin), tcp)
            .await
            .unwrap();
        (c, accept.await.unwrap())
    }

    fn pool() -> (Arc<Pool>, mpsc::UnboundedReceiver<Reopened>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Pool::new(Duration::from_secs(30), tx), rx)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < end, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_kept_connection_is_taken_only_for_the_party_pin_and_endpoint_it_was_kept_for() {
        let (pool, _rx) = pool();
        let (c, _s) = pair().await;
        let key = PoolKey::new("node_b", "pin-of-the-old-certificate", "10.0.0.2:7001");
        pool.keep_dialed(key.clone(), c);
        assert_eq!(pool.counts().idle_dialed, 1);
        // Another certificate registered for the same party, another party, or (regression: it
        // reused the connection to the old address) the same party and certificate re-registered
        // at another address: nothing.
        for (label, pin, endpoint) in [
            ("node_b", "pin-of-the-new-certificate", "10.0.0.2:7001"),
            ("node_c", "pin-of-the-old-certificate", "10.0.0.2:7001"),
            ("node_b", "pin-of-the-old-certificate", "10.0.0.9:7001"),
        ] {
            let other = PoolKey::new(label, pin, endpoint);
            assert!(pool.take(&other).await.is_none(), "{other:?}");
        }
        assert_eq!(pool.counts().idle_dialed, 1);
        assert!(pool.take(&key).await.is_some());
        assert!(pool.take(&key).await.is_none());
        let c = pool.counts();
        assert_eq!((c.idle_dialed, c.kept, c.closed_idle), (0, 1, 0));
    }

    /// The kernel's settings of a kept connection's socket: keepalive on, and its timings.
    fn keepalive_of(tcp: &TcpStream) -> (bool, Duration, Duration, u32) {
        let sock = socket2::SockRef::from(tcp);
        (
            sock.keepalive().unwrap(),
            sock.tcp_keepalive_time().unwrap(),
            sock.tcp_keepalive_interval().unwrap(),
            sock.tcp_keepalive_retries().unwrap(),
        )
    }

    /// Both ends of a kept connection have the kernel probe it while idle, so a peer gone without
    /// a word is noticed in the pool, not by the next session.
    #[tokio::test]
    async fn kept_connections_are_probed_by_tcp_keepalive_at_both_ends() {
        let (pool, mut reopened) = pool();
        let key = PoolKey::new("node_b", "pin", "127.0.0.1:7001");
        let (c, s) = pair().await;
        let expected = (true, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES);
        assert!(!keepalive_of(c.get_ref().0).0, "off before it is kept");
        pool.keep_dialed(key.clone(), c);
        pool.keep_accepted("node_a", s, "127.0.0.1:1".parse().unwrap());
        let mut c = pool.take(&key).await.expect("the kept connection");
        assert_eq!(keepalive_of(c.get_ref().0), expected);
        // The accepted end is handed back with the next frame on it.
        write_frame(
            &mut c,
            &Frame::new(MsgType::Hello, b"next".to_vec()),
            Instant::now() + Duration::from_secs(2),
            "node_b",
        )
        .await
        .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), reopened.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(keepalive_of(r.stream.get_ref().0), expected);
    }

    #[tokio::test]
    async fn an_idle_connection_is_dropped_when_the_peer_closes_or_sends_anything() {
        let (pool, _rx) = pool();
        let key = PoolKey::new("node_b", "pin", "127.0.0.1:7001");
        let (c1, s1) = pair().await;
        let (c2, mut s2) = pair().await;
        pool.keep_dialed(key.clone(), c1);
        pool.keep_dialed(key.clone(), c2);
        assert_eq!(pool.counts().idle_dialed, 2);
        drop(s1);
        // A peer must send nothing on an idle connection: a frame there poisons it.
        let soon = Instant::now() + Duration::from_secs(2);
        write_frame(
            &mut s2,
            &Frame::new(MsgType::Share, vec![1; 8]),
            soon,
            "node_a",
        )
        .await
        .unwrap();
        until("both are closed", || pool.counts().closed_idle == 2).await;
        assert_eq!(pool.counts().idle_dialed, 0);
        assert!(pool.take(&key).await.is_none());
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_per_peer_limit_are_closed() {
        let (pool, _rx) = pool();
        let key = PoolKey::new("node_b", "pin", "127.0.0.1:7001");
        let mut servers = Vec::new();
        for _ in 0..MAX_IDLE_PER_PEER + 1 {
            let (c, s) = pair().await;
            servers.push(s);
            pool.keep_dialed(key.clone(), c);
        }
        let c = pool.counts();
        assert_eq!(c.idle_dialed, MAX_IDLE_PER_PEER as u64);
        assert_eq!(c.not_kept, 1);
        // The one over the limit is closed: its peer reads the end of the stream.
        let mut last = servers.pop().unwrap();
        let soon = Instant::now() + Duration::from_secs(2);
        assert!(read_frame(&mut last, soon, "node_a")
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn a_kept_accepted_connection_hands_the_next_frame_to_the_agent() {
        let (pool, mut rx) = pool();
        let (mut c, s) = pair().await;
        let addr = c.get_ref().0.local_addr().unwrap();
        pool.keep_accepted("node_a", s, addr);
        assert_eq!(pool.counts().idle_accepted, 1);
        let soon = Instant::now() + Duration::from_secs(2);
        write_frame(
            &mut c,
            &Frame::new(MsgType::Hello, vec![7; 3]),
            soon,
            "node_b",
        )
        .await
        .unwrap();
        let r = timeout_at(soon, rx.recv()).await.unwrap().unwrap();
        assert_eq!(r.frame.kind, MsgType::Hello);
        assert_eq!(&r.frame.payload[..], &[7, 7, 7]);
        assert_eq!(r.addr, addr);
        assert_eq!(pool.counts().idle_accepted, 0);
        // One that the peer closes is closed here too, and counted.
        let (c, s) = pair().await;
        pool.keep_accepted("node_a", s, addr);
        drop(c);
        until("it is closed", || pool.counts().closed_idle == 1).await;
        assert_eq!(pool.counts().idle_accepted, 0);
    }
}
