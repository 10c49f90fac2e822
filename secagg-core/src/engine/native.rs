//! The native engine: semi-honest, honest-majority Shamir key negotiation in Rust, the same
//! security model as MP-SPDZ's `shamir-party.x`, and LOM's pairwise secrets.
//!
//! This module owns what every session kind shares: the connection phase, the messages each
//! peer still owes, the deadline, aborts and the researcher's confirmations. A kind is one
//! submodule running its exchange and its store steps on it: `shamir` (the key session below)
//! and `pairwise` (LOM contexts, ECDH between the nodes; see its documentation). The plan's
//! [`ContextScheme`] picks the kind, and the session binding differs by kind, so two parties that
//! disagree fail at the hello.
//!
//! After the connection phase ([`crate::transport::mesh`]), with `n` parties and
//! `t = ⌊(n − 1)/2⌋`:
//!
//! 1. every node `i` draws `sk_i` uniformly in `[0, 2^k)` from the OS CSPRNG, shares it with a
//!    random polynomial of degree `t` and sends share `j` to party `j` (keeping its own);
//! 2. every party sums the shares it holds (the researcher has no input) and every node sends its
//!    sum to the researcher;
//! 3. the researcher checks that the `n` sums lie on one polynomial of degree `t`
//!    ([`Error::Verification`] otherwise), interpolates `S = Σ sk_i` at 0 and sets `sk0 = −S`
//!    over the integers (exact because `p > (n−1)·2^k`), then sends `Finish` to every node;
//! 4. every node durably stores its key as *unconfirmed* ([`KeySink::store`]) and only then
//!    answers `Ack`;
//! 5. once every node acknowledged, the researcher durably stores `sk0` and sends `Confirm` to
//!    every node (best effort: `sk0` is already stored, and every node holds its key);
//! 6. every node marks its key *confirmed* ([`KeySink::confirm`]) and returns.
//!
//! Hence the invariant: **a stored server key implies that every node of the session has durably
//! stored its key.** A failure (crash, store error, abort, deadline) before step 5 leaves no
//! server key, and the nodes that reached step 4 hold a key marked unconfirmed, which is never
//! presented as ready (see `secagg context`). A failure after step 5 leaves the server key and
//! every node key; a node that missed the confirmation keeps its (valid) key unconfirmed and
//! fails with an error saying so. The test-only [`fault`](crate::fault) hook marks every step.
//!
//! On any failure a party sends `Abort{reason}` to every peer it is connected to (best effort,
//! bounded), closes everything and returns the error; peers then fail at once with
//! [`Error::PeerFailure`] naming it. Every wait is bounded by the session deadline.
//!
//! Secret hygiene: shares, sums and keys are [`BigUint`]s wiped in place when dropped
//! ([`field::wipe`]); frame payloads are zeroizing buffers. num-bigint temporaries and rustls'
//! internal plaintext buffers are out of reach.

use std::collections::VecDeque;
use std::ops::Deref;
use std::time::Instant as StdInstant;

use num_bigint::BigUint;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::{
    CancelFlag, ContextScheme, Engine, KeySink, Material, NegotiationPlan, Outcome, PhaseTimings,
};
use crate::error::{Error, ErrorKind, Result};
use crate::fault::{self, Step};
use crate::field::{self, PrimeField};
use crate::transport::frame::{write_frame, Frame, MsgType};
use crate::transport::mesh::{
    self, abort_all, peer_aborted, Mesh, MeshConfig, MeshParty, ReadEvent,
};
use crate::transport::pool::Pool;

/// The in-process Rust engine. `negotiate` runs a private single-threaded tokio runtime; use
/// [`negotiate_async`] from inside an existing runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeEngine;

/// Default whole-session deadline of the native engine.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl NativeEngine {
    /// [`Engine::name`], for callers that need it without an engine (e.g. to start a party
    /// process with `--engine`).
    pub const NAME: &'static str = "native";
    /// [`Engine::default_timeout`], for callers that need it without an engine.
    pub const DEFAULT_TIMEOUT: std::time::Duration = DEFAULT_TIMEOUT;
}

impl Engine for NativeEngine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn default_timeout(&self) -> std::time::Duration {
        DEFAULT_TIMEOUT
    }

    fn negotiate(&self, plan: NegotiationPlan, sink: &mut dyn KeySink) -> Result<Outcome> {
        runtime()?.block_on(negotiate_async(plan, sink))
    }

    fn negotiate_cancellable(
        &self,
        plan: NegotiationPlan,
        sink: &mut dyn KeySink,
        cancel: &CancelFlag,
    ) -> Result<Outcome> {
        runtime()?.block_on(negotiate_routed(
            plan,
            sink,
            None,
            None,
            Vec::new(),
            Some(cancel),
        ))
    }
}

/// The private runtime of [`NativeEngine`]'s blocking calls. One thread is plenty: the work is a
/// handful of TLS handshakes and big-number operations, and parties are separate processes (or
/// threads in tests and the bench).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("while starting the negotiation runtime", e))
}

/// How often a negotiation looks at its cancel flag while it waits.
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Resolves once `cancel` is set (never when there is none).
async fn cancelled(cancel: Option<&CancelFlag>) {
    match cancel {
        Some(c) => {
            while !c.is_cancelled() {
                tokio::time::sleep(CANCEL_POLL).await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The error of a party whose operator cancelled the session (see
/// [`Engine::negotiate_cancellable`]).
fn cancelled_error(plan: &NegotiationPlan, cancel: Option<&CancelFlag>) -> Error {
    let hint =
        "nothing was stored here; run the session again on every party, with a new session id";
    match cancel.and_then(|c| c.reason()) {
        Some(reason) => Error::peer(format!(
            "session {}: {reason}, before storing a key",
            plan.session_id()
        ))
        .with_hint(hint),
        None => Error::peer(format!(
            "session {}: {} cancelled the negotiation before storing a key",
            plan.session_id(),
            plan.me().id
        ))
        .with_hint(hint),
    }
}

/// Runs this party's side of the session described by `plan` (see the module documentation),
/// handing the key to `sink` at the protocol's store and confirm steps. The deadline is
/// [`NegotiationPlan::timeout`] from now.
pub async fn negotiate_async(plan: NegotiationPlan, sink: &mut dyn KeySink) -> Result<Outcome> {
    negotiate_routed(plan, sink, None, None, Vec::new(), None).await
}

/// [`negotiate_async`], taking this party's inbound connections from `inbound` (routed to the
/// session by the party agent's shared acceptor) instead of listening itself, when given, with
/// the party agent's `pool` of connections kept between sessions, when given, over the
/// `control` connections between the researcher and the nodes' agents (see
/// [`mesh::ControlLink`]), and stopping at its waits when `cancel` is set before the key is
/// stored (see [`Engine::negotiate_cancellable`]).
pub(crate) async fn negotiate_routed(
    plan: NegotiationPlan,
    sink: &mut dyn KeySink,
    inbound: Option<tokio::sync::mpsc::UnboundedReceiver<mesh::Routed>>,
    pool: Option<std::sync::Arc<Pool>>,
    control: Vec<mesh::ControlLink>,
    cancel: Option<&CancelFlag>,
) -> Result<Outcome> {
    let started = StdInstant::now();
    let deadline = Instant::now() + plan.timeout();
    let field = PrimeField::new(plan.prime().clone())?;
    // Dropping the connection phase closes whatever it opened; peers see the party go away.
    let config = mesh_config(&plan);
    let mut warn = |w: String| sink.warn(&w);
    // A cancel in the connection phase aborts to the peers connected so far, with its reason.
    let stop = async {
        cancelled(cancel).await;
        cancelled_error(&plan, cancel)
    };
    let mesh = mesh::Connect::new(&config, deadline)
        .inbound(inbound)
        .pool(pool)
        .control(control)
        .stop_on(stop)
        .run(&mut warn)
        .await?;
    drop(config);
    let connect = started.elapsed();
    let mut session = Session::start(&plan, field, mesh, deadline, started, sink);
    session.cancel = cancel.cloned();
    let result = match (fault::at(Step::Connected), plan.scheme()) {
        (Err(e), _) => Err(e),
        (Ok(()), ContextScheme::Jl) if plan.my_index() == 0 => session
            .run_researcher()
            .await
            .map(|(k, t)| (Material::Key(k), t)),
        (Ok(()), ContextScheme::Jl) => session.run_node().await.map(|(k, t)| (Material::Key(k), t)),
        (Ok(()), ContextScheme::Lom) if plan.my_index() == 0 => session
            .run_lom_researcher()
            .await
            .map(|(p, t)| (Material::Pairwise(p), t)),
        (Ok(()), ContextScheme::Lom) => session
            .run_lom_node()
            .await
            .map(|(p, t)| (Material::Pairwise(p), t)),
    };
    match result {
        Ok((material, exchange_done)) => {
            session.close().await;
            let total = started.elapsed();
            Ok(Outcome {
                role: plan.my_role(),
                material,
                timings: PhaseTimings::from_marks(connect, exchange_done, total),
            })
        }
        Err(e) => {
            session.abort(&e).await;
            Err(e)
        }
    }
}

/// The connection phase's view of `plan`: parties labelled by id, the listen address, and the
/// native protocol's transcript binding ([`binding_hash`]).
pub(crate) fn mesh_config(plan: &NegotiationPlan) -> MeshConfig {
    MeshConfig {
        session_id: plan.session_id(),
        parties: plan
            .parties()
            .iter()
            .map(|p| MeshParty {
                label: p.id.to_string(),
                endpoint: p.endpoint.clone(),
                certificate_der: p.certificate_der.clone(),
            })
            .collect(),
        my_index: plan.my_index(),
        key_pkcs8_der: plan.my_key_pkcs8_der().clone(),
        listen: plan.listen_addr(),
        binding: binding_hash(plan),
        timeout: plan.timeout(),
    }
}

/// SHA-256 over everything the parties must agree on besides the session id: the ordered party
/// ids, the SHA-256 of each party's certificate DER, the key length and the prime, and for a
/// LOM session its scheme (a Joye–Libert session's binding is unchanged from version 1). Every
/// field is length-prefixed so that different lists cannot encode to the same bytes.
pub(crate) fn binding_hash(plan: &NegotiationPlan) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"secagg native session binding v1\0");
    h.update((plan.n() as u32).to_be_bytes());
    for p in plan.parties() {
        let id = p.id.as_str().as_bytes();
        h.update((id.len() as u32).to_be_bytes());
        h.update(id);
        h.update(Sha256::digest(&p.certificate_der));
    }
    h.update(plan.key_bits().to_be_bytes());
    let prime = plan.prime().to_bytes_be();
    h.update((prime.len() as u32).to_be_bytes());
    h.update(&prime);
    if plan.scheme() != ContextScheme::Jl {
        h.update(b"\0scheme\0");
        h.update(plan.scheme().as_str().as_bytes());
    }
    if let Some(t) = plan.dropout_threshold() {
        h.update(b"\0dropout threshold\0");
        h.update(t.to_be_bytes());
    }
    h.finalize().into()
}

// The session kinds: each runs its exchange and store steps over the machinery of this module
// (connections, expected messages, deadlines, aborts, confirmations).
mod pairwise;
mod shamir;

/// A [`BigUint`] wiped in place when dropped.
struct Secret(BigUint);

impl Deref for Secret {
    type Target = BigUint;
    fn deref(&self) -> &BigUint {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        field::wipe(&mut self.0);
    }
}

struct Session<'a> {
    plan: &'a NegotiationPlan,
    sink: &'a mut dyn KeySink,
    field: PrimeField,
    labels: Vec<String>,
    mesh: Mesh,
    /// Messages still owed by each peer, in order. A peer that owes nothing may close.
    expect: Vec<VecDeque<MsgType>>,
    deadline: Instant,
    started: StdInstant,
    /// Set by the operator to stop the session; looked at while waiting, until the key is
    /// handed to the sink (then cleared: see [`Engine::negotiate_cancellable`]).
    cancel: Option<CancelFlag>,
    /// Set on a node once it acknowledged its stored key: from then on only the researcher's word
    /// decides how the session ends (it may have stored the server key already), so another
    /// node's abort no longer ends this node's side.
    researcher_decides: bool,
}

impl<'a> Session<'a> {
    fn start(
        plan: &'a NegotiationPlan,
        field: PrimeField,
        mesh: Mesh,
        deadline: Instant,
        started: StdInstant,
        sink: &'a mut dyn KeySink,
    ) -> Self {
        let n = plan.n();
        let me = plan.my_index();
        let labels: Vec<String> = plan.parties().iter().map(|p| p.id.to_string()).collect();
        let lom = plan.scheme() == ContextScheme::Lom;
        let expect = (0..n)
            .map(|j| {
                let mut q = VecDeque::new();
                if j == me {
                    // nothing from ourselves
                } else if me == 0 && lom {
                    q.extend([MsgType::PairTags, MsgType::Ack]);
                } else if me == 0 {
                    q.extend([MsgType::Share, MsgType::Sum, MsgType::Ack]);
                } else if j == 0 {
                    q.extend([MsgType::Finish, MsgType::Confirm]);
                } else if lom {
                    q.push_back(MsgType::DhPublic);
                } else {
                    q.push_back(MsgType::Share);
                }
                q
            })
            .collect();
        Session {
            plan,
            sink,
            field,
            labels,
            mesh,
            expect,
            deadline,
            started,
            cancel: None,
            researcher_decides: false,
        }
    }

    async fn send(&mut self, j: usize, frame: &Frame) -> Result<()> {
        let w = self.mesh.writers[j]
            .as_mut()
            .ok_or_else(|| Error::Internal(format!("no connection to party {j}")))?;
        write_frame(w, frame, self.deadline, &self.labels[j]).await
    }

    /// The next frame some peer owes us; fails on abort, premature close, protocol violation or
    /// the deadline.
    async fn next(&mut self) -> Result<(usize, Frame)> {
        loop {
            // `next_event` only pops a queue or receives from a channel: dropping it when the
            // cancel flag wins loses no frame.
            let next = tokio::select! {
                x = self.mesh.next_event(self.deadline) => x,
                () = cancelled(self.cancel.as_ref()) => return Err(cancelled_error(self.plan, self.cancel.as_ref())),
            };
            let (j, ev) = match next {
                Some(x) => x,
                None => return Err(self.timeout_error()),
            };
            let label = &self.labels[j];
            match ev {
                ReadEvent::Frame(f) if f.kind == MsgType::Abort => {
                    let e = peer_aborted(label, &f.payload);
                    if self.researcher_decides && j != 0 {
                        // Regression: a node that failed after its own acknowledgement aborted
                        // to the others, which then gave up waiting for the researcher's
                        // confirmation and kept their valid keys unconfirmed although the
                        // server key was stored.
                        self.sink.warn(&format!(
                            "{e}; this node acknowledged its key already, so it waits for the researcher's word"
                        ));
                        continue;
                    }
                    return Err(e);
                }
                ReadEvent::Frame(f) if f.kind == MsgType::DhPublic && j == 0 => {
                    // Node-to-node key material only ever comes from that node, over the two
                    // nodes' own pinned connection: a researcher sending some is substituting.
                    return Err(Error::authentication(format!(
                        "the researcher {label} sent a DH public key: in a LOM session each node's key comes only from that node over its own pinned connection, so the researcher is substituting node-to-node key material"
                    ))
                    .with_hint("nothing was stored; do not run sessions for this researcher until its operator explains")
                    .with_origin(label.as_str(), None));
                }
                ReadEvent::Frame(f) => match self.expect[j].front() {
                    Some(&k) if k == f.kind => {
                        self.expect[j].pop_front();
                        return Ok((j, f));
                    }
                    Some(&k) => {
                        return Err(Error::peer(format!(
                            "protocol violation by {label}: sent a {} message, expected its {}",
                            f.kind.name(),
                            k.name()
                        ))
                        .with_origin(label.as_str(), None))
                    }
                    None => {
                        return Err(Error::peer(format!(
                            "protocol violation by {label}: sent a {} message after its last expected message",
                            f.kind.name()
                        ))
                        .with_origin(label.as_str(), None))
                    }
                },
                // A peer whose side succeeded (on a connection kept between agents): nothing
                // more comes from it, as after a close.
                ReadEvent::Ended if self.expect[j].is_empty() => continue,
                ReadEvent::Ended => {
                    let what = self.expect[j].front().map(|k| k.name()).unwrap_or("messages");
                    return Err(Error::peer(format!(
                        "protocol violation by {label}: ended the session before sending its {what}"
                    ))
                    .with_origin(label.as_str(), None));
                }
                ReadEvent::Closed(_) if self.expect[j].is_empty() => continue,
                ReadEvent::Closed(Some(e)) if e.kind() == ErrorKind::Timeout => {
                    return Err(self.timeout_error())
                }
                // A broken connection is that peer's failure unless the error names another.
                ReadEvent::Closed(Some(e)) if e.origin().is_none() => {
                    return Err(e.with_origin(label.as_str(), None))
                }
                ReadEvent::Closed(Some(e)) => return Err(e),
                ReadEvent::Closed(None) => {
                    let what = self.expect[j].front().map(|k| k.name()).unwrap_or("messages");
                    return Err(Error::peer(format!(
                        "{label} closed the connection before sending its {what}"
                    ))
                    .with_hint(format!("{label} may have crashed or been stopped; see its output"))
                    .with_origin(label.as_str(), None));
                }
            }
        }
    }

    fn timeout_error(&self) -> Error {
        let waiting: Vec<String> = self
            .expect
            .iter()
            .enumerate()
            .filter_map(|(j, q)| {
                q.front()
                    .map(|k| format!("{} ({})", self.labels[j], k.name()))
            })
            .collect();
        Error::timeout(format!(
            "session {}: {} timed out after {:.1}s waiting for {}",
            self.plan.session_id(),
            self.labels[self.plan.my_index()],
            self.plan.timeout().as_secs_f64(),
            waiting.join(", ")
        ))
        .with_hint("the listed parties stopped answering; check that they are still running and reachable, or give the session a longer timeout")
    }

    /// A node's end of a session, whatever its kind (steps 4 and 6): waits for the researcher's
    /// `Finish`, stores with `store` (from then on the session is no longer cancellable), only
    /// then acknowledges, and marks what it stored confirmed on the researcher's `Confirm`.
    async fn node_store_and_confirm(
        &mut self,
        store: impl FnOnce(&mut dyn KeySink) -> Result<()>,
    ) -> Result<()> {
        let (_, finish) = self.next().await?;
        debug_assert_eq!(finish.kind, MsgType::Finish);
        self.cancel = None;
        fault::at(Step::NodeBeforeStore)?;
        store(&mut *self.sink)?;
        fault::at(Step::NodeAfterStore)?;
        self.send(0, &Frame::new(MsgType::Ack, Vec::new())).await?;
        self.researcher_decides = true;
        fault::at(Step::NodeAfterSendAck)?;
        let (_, confirm) = self.next().await?;
        debug_assert_eq!(confirm.kind, MsgType::Confirm);
        fault::at(Step::NodeBeforeConfirm)?;
        self.sink.confirm()?;
        fault::at(Step::NodeAfterConfirm)?;
        Ok(())
    }

    /// The researcher's end of a session, whatever its kind, once its checks passed (step 3 to
    /// 5): `Finish` to every node, every node's acknowledgement (its part durably stored), and
    /// only then `store` (no longer cancellable) and the confirmations.
    async fn researcher_store_and_confirm(
        &mut self,
        store: impl FnOnce(&mut dyn KeySink) -> Result<()>,
    ) -> Result<()> {
        let n = self.plan.n();
        fault::at(Step::ResearcherBeforeSendFinish)?;
        for j in 1..n {
            self.send(j, &Frame::new(MsgType::Finish, Vec::new()))
                .await?;
        }
        fault::at(Step::ResearcherAfterSendFinish)?;
        for _ in 1..n {
            self.next().await?; // acknowledgements (the only messages still expected)
        }
        self.cancel = None;
        fault::at(Step::ResearcherBeforeStore)?;
        store(&mut *self.sink)?;
        fault::at(Step::ResearcherAfterStore)?;
        self.sink.confirm()?;
        self.confirm_all().await;
        fault::at(Step::ResearcherAfterSendConfirm)?;
        Ok(())
    }

    /// Sends `Confirm` to every node, concurrently and bounded by [`mesh::ABORT_GRACE`]. Best
    /// effort: the server key is stored and every node holds its key whatever happens here; a node
    /// that misses it keeps its key unconfirmed (and says so), so only a warning is due.
    async fn confirm_all(&mut self) {
        let until = Instant::now() + mesh::ABORT_GRACE;
        let mut set = JoinSet::new();
        let frame = Frame::new(MsgType::Confirm, Vec::new());
        let mut writers = Vec::new();
        for (j, w) in self.mesh.writers.iter_mut().enumerate() {
            if let Some(w) = w.take() {
                writers.push((j, w));
            }
        }
        for (j, mut w) in writers {
            let (label, frame) = (self.labels[j].clone(), frame.clone());
            set.spawn(async move {
                let sent = write_frame(&mut w, &frame, until, &label).await;
                (j, w, sent)
            });
        }
        while let Ok(Some(joined)) = timeout_at(until, set.join_next()).await {
            if let Ok((j, w, sent)) = joined {
                if let Err(e) = sent {
                    self.sink.warn(&format!(
                        "could not send the confirmation to {}: {e}; its key stays marked unconfirmed there until its operator confirms it",
                        self.labels[j]
                    ));
                }
                self.mesh.writers[j] = Some(w);
            }
        }
        set.abort_all();
        for j in 1..self.plan.n() {
            if self.mesh.writers[j].is_none() {
                self.sink.warn(&format!(
                    "the confirmation to {} did not go out in time; its key stays marked unconfirmed there until its operator confirms it",
                    self.labels[j]
                ));
            }
        }
    }

    /// Ends every connection after success: closed (TLS close_notify), or kept for a later
    /// session between two party agents ([`Mesh::close`]).
    async fn close(&mut self) {
        self.mesh.close().await;
    }

    /// Tells every peer why we give up, closes everything.
    async fn abort(&mut self, e: &Error) {
        let writers = self
            .mesh
            .take_writers()
            .into_iter()
            .map(|(j, w)| (self.labels[j].clone(), w))
            .collect();
        let me = &self.labels[self.plan.my_index()];
        abort_all(writers, &crate::transport::mesh::abort_reason(e, me)).await;
        self.mesh.stop_readers();
    }
}
