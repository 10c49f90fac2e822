//! The agents' clients: a whole session run from the researcher (`secagg session run`) and the
//! federation's preflight check (`secagg federation check`).

use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{error_of_kind, Reply, Request, StatusInfo, AGENT_PROTOCOL_VERSION};
use crate::engine::{CancelFlag, Engine, MpSpdzEngine, NativeEngine};
use crate::engine::{ContextScheme, NegotiationPlan};
use crate::error::{Error, ErrorKind, ErrorReport, Result};
use crate::home::Home;
use crate::identity;
use crate::party::{Endpoint, Host, PartyId, Role, SessionId};
use crate::registration;
use crate::session::{self, SessionRequest, StoreSink};
use crate::store::pool::PooledStore;
use crate::store::{peers, Store};
use crate::transport::frame::{write_frame, Frame, MsgType};
use crate::transport::mesh::{ControlLink, PROTOCOL_VERSION};
use crate::transport::pinned_verifier::PinnedCert;
use crate::transport::tls::{self, classify, LocalIdentity, TlsFailure};

/// How long contacting one agent (TCP, TLS, request, reply) may take at most.
pub const CONTACT_TIMEOUT: Duration = Duration::from_secs(10);

/// After the researcher's side ended: how long to wait for the nodes' own reports.
const REPORT_GRACE: Duration = Duration::from_secs(2);

/// A session to run from the researcher through the nodes' agents.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The session id.
    pub session_id: SessionId,
    /// The nodes taking part (this party, the researcher, comes first).
    pub nodes: Nodes,
    /// Whole-session deadline.
    pub timeout: Duration,
    /// Key length; `None` is the default.
    pub key_bits: Option<u32>,
    /// What the session produces: a Joye–Libert key (the default) or LOM pairwise secrets.
    pub scheme: ContextScheme,
    /// LOM sessions: the fewest nodes the researcher accepts (each node applies its own
    /// minimum too); `None` is [`session::DEFAULT_MIN_NODES`].
    pub min_nodes: Option<usize>,
    /// LOM sessions: the context's dropout threshold t (`None`: every node's vector is needed).
    pub dropout_threshold: Option<u32>,
}

/// Which nodes a session run includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// Every node registered at this party, in the order of their ids (`--all`).
    All,
    /// These nodes, in this order (`--parties`); a leading id of this party itself is skipped.
    Listed(Vec<PartyId>),
}

impl Nodes {
    /// The session's party list: `own` (the researcher) first, then the nodes.
    fn party_list(&self, own: &PartyId, store: &mut Store) -> Result<Vec<PartyId>> {
        let mut parties = vec![own.clone()];
        match self {
            Nodes::All => {
                let mut nodes: Vec<PartyId> = store
                    .read(|tx| peers::list(tx))?
                    .into_iter()
                    .filter(|p| p.role == Role::Node)
                    .map(|p| p.party_id)
                    .collect();
                nodes.sort();
                parties.extend(nodes);
            }
            Nodes::Listed(ids) => {
                let skip = usize::from(ids.first() == Some(own));
                parties.extend(ids[skip..].iter().cloned());
            }
        }
        Ok(parties)
    }
}

/// How a session is run (beyond [`RunRequest`]); the default is a native session.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run the session with MP-SPDZ (`--engine mp-spdz`): every node's agent runs its
    /// `shamir-party.x` on a port of its `--mpspdz-ports` range, this party runs its own.
    pub mpspdz: Option<RunMpSpdz>,
    /// Set by the caller (e.g. Ctrl-C in Python) to stop the session: before the start, no node
    /// is started (their agents see the control connection close); after it, this party's side
    /// stops as when a node fails, only before the server key is stored, and the nodes still
    /// running get a `cancel`. Nothing is stored here then.
    pub cancel: Option<CancelFlag>,
    /// How long to keep dialing a node whose agent refuses connections (not listening yet)
    /// before giving up, within the session's timeout; `None`: one attempt. A Fed-BioMed
    /// researcher sets it: its nodes start listening ([`super::serve_one`]) only once its
    /// request reached them.
    pub wait_for_agents: Option<Duration>,
}

/// The researcher's side of an MP-SPDZ session run through the agents.
#[derive(Debug, Clone)]
pub struct RunMpSpdz {
    /// The MP-SPDZ build whose `shamir-party.x` runs this party's side.
    pub root: crate::mpspdz::MpSpdzRoot,
    /// The port of this party's `shamir-party.x`; `None`: this party's endpoint port (which must
    /// then be free: not held by this party's own agent).
    pub port: Option<u16>,
}

/// Where one party of a session run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyState {
    /// Its key is stored and confirmed (the researcher: `sk0` stored).
    Confirmed,
    /// Its key is durably stored; its agent reported it unconfirmed (the confirmation was
    /// lost), or sent no report, though it acknowledged the stored key.
    Stored,
    /// Its agent refused the session request.
    Refused,
    /// Its agent could not be contacted (or did not authenticate).
    Unreachable,
    /// It accepted, but the session was not started because another party refused or was
    /// unreachable; nothing was stored.
    Cancelled,
    /// The session failed (see `key` for what it kept).
    Failed,
}

impl PartyState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PartyState::Confirmed => "confirmed",
            PartyState::Stored => "stored",
            PartyState::Refused => "refused",
            PartyState::Unreachable => "unreachable",
            PartyState::Cancelled => "cancelled",
            PartyState::Failed => "failed",
        }
    }
}

/// One party's row of a session run.
#[derive(Debug, Clone, Serialize)]
pub struct PartyRow {
    /// Party id.
    pub party_id: String,
    /// Role.
    pub role: Role,
    /// Where it ended.
    pub state: PartyState,
    /// What it holds for the session: `confirmed`, `unconfirmed`, `none` or `unknown`.
    pub key: String,
    /// Milliseconds its side took, as it reported.
    pub ms: Option<f64>,
    /// Why it failed.
    pub error: Option<ErrorReport>,
    /// MP-SPDZ sessions: the port of its `shamir-party.x` in the ip file every party used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpspdz_port: Option<u16>,
}

/// The result of a session run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Session id.
    pub session_id: String,
    /// Engine.
    pub engine: String,
    /// Whether the server key is stored (hence every node durably stored its key).
    pub ok: bool,
    /// One row per party, in session order.
    pub parties: Vec<PartyRow>,
    /// Milliseconds from the start of the command's work to the result.
    pub total_ms: f64,
    /// Fingerprint of the server key, when stored.
    pub key_fingerprint: Option<String>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Why an agent could not be talked to.
#[derive(Debug)]
pub(crate) enum DialError {
    Unreachable(String),
    WrongCertificate(Error),
    NotRegisteredThere(Error),
    NotAnAgent(String),
    Timeout,
}

impl DialError {
    fn into_error(self, label: &str, endpoint: &Endpoint) -> Error {
        match self {
            DialError::Unreachable(e) => Error::peer(format!(
                "cannot reach the agent of {label} at {endpoint}: {e}"
            ))
            .with_hint(format!("check that `secagg serve` runs at {label} and that its endpoint is reachable from here")),
            DialError::WrongCertificate(e) | DialError::NotRegisteredThere(e) => e,
            DialError::NotAnAgent(e) => Error::peer(format!(
                "{label} at {endpoint} does not answer as a secagg agent: {e}"
            ))
            .with_hint(format!("check that `secagg serve` (not `secagg negotiate` or another program) runs at {label}")),
            DialError::Timeout => Error::timeout(format!(
                "the agent of {label} at {endpoint} did not answer within {} s",
                CONTACT_TIMEOUT.as_secs()
            )),
        }
    }
}

pub(crate) struct Dialer {
    local: LocalIdentity,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl Dialer {
    pub(crate) fn for_home(home: &Home) -> Result<(Self, identity::Identity)> {
        let own = identity::load(home)?;
        let key = own.private_key_der()?;
        Ok((Self::new(&own, &key)?, own))
    }

    /// The dialer of `own`, whose private key is `key_pkcs8_der`.
    pub(crate) fn new(own: &identity::Identity, key_pkcs8_der: &[u8]) -> Result<Self> {
        let provider = tls::provider();
        let local = LocalIdentity::new(
            own.party_id.as_str(),
            &own.certificate.der,
            key_pkcs8_der,
            &provider,
        )?;
        Ok(Dialer { local, provider })
    }

    /// [`Self::ask`], dialing again (5 ms doubling to 250 ms) while the agent refuses connections,
    /// until `until`, when `keep_dialing`.
    pub(crate) async fn ask_until_listening(
        &self,
        label: &str,
        endpoint: &Endpoint,
        cert_der: &[u8],
        request: &Request,
        until: Instant,
        keep_dialing: bool,
    ) -> std::result::Result<(TlsStream<TcpStream>, Reply), DialError> {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.ask(label, endpoint, cert_der, request, until).await {
                Err(DialError::Unreachable(_))
                    if keep_dialing && Instant::now() + pause < until =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }

    /// Pinned mutual TLS to `label`'s agent, sends `request`, reads its first reply.
    pub(crate) async fn ask(
        &self,
        label: &str,
        endpoint: &Endpoint,
        cert_der: &[u8],
        request: &Request,
        until: Instant,
    ) -> std::result::Result<(TlsStream<TcpStream>, Reply), DialError> {
        let pinned = PinnedCert::new(label, cert_der).map_err(DialError::WrongCertificate)?;
        // A status request is the preflight's proof that pinned mutual TLS works both ways now:
        // always a full handshake (a resumed one would not show that the agent still accepts
        // this party's certificate, nor which of the two refused).
        let config = if matches!(request, Request::Status { .. }) {
            tls::client_config_without_resumption(&self.local, pinned.clone(), &self.provider)
        } else {
            tls::client_config(&self.local, pinned.clone(), &self.provider)
        }
        .map_err(|e| DialError::NotAnAgent(e.to_string()))?;
        let addrs: Vec<std::net::SocketAddr> = match &endpoint.host {
            Host::Ip(ip) => vec![std::net::SocketAddr::new(*ip, endpoint.port)],
            Host::Name(n) => {
                match timeout_at(until, tokio::net::lookup_host((n.as_str(), endpoint.port))).await
                {
                    Err(_) => return Err(DialError::Timeout),
                    Ok(Err(e)) => return Err(DialError::Unreachable(e.to_string())),
                    Ok(Ok(a)) => a.collect(),
                }
            }
        };
        let tcp = match timeout_at(until, TcpStream::connect(&addrs[..])).await {
            Err(_) => return Err(DialError::Timeout),
            Ok(Err(e)) => return Err(DialError::Unreachable(e.to_string())),
            Ok(Ok(t)) => t,
        };
        let _ = tcp.set_nodelay(true);
        // Keys this process's tickets for this agent (`tls::server_name`); never sent.
        let name = tls::server_name(&self.local, &pinned);
        let classify_tls = |e: std::io::Error, doing: &str| {
            match classify(&e) {
            TlsFailure::PeerCertificateRefused => {
                DialError::WrongCertificate(tls::io_error(&format!("{label} at {endpoint}"), doing, e))
            }
            TlsFailure::OurCertificateRefused => DialError::NotRegisteredThere(
                Error::authentication(format!(
                    "{label} refused this party's certificate: this party is not registered there, or with another certificate"
                ))
                .with_hint(format!("ask {label} to register this party's current certificate (check the fingerprint)")),
            ),
            TlsFailure::Other => DialError::NotAnAgent(format!("{doing}: {e}")),
        }
        };
        let mut stream =
            match timeout_at(until, TlsConnector::from(config).connect(name, tcp)).await {
                Err(_) => return Err(DialError::Timeout),
                Ok(Err(e)) => return Err(classify_tls(e, "during the TLS handshake")),
                Ok(Ok(s)) => s,
            };
        tls::record_handshake(stream.get_ref().1.handshake_kind());
        // A resumed session skipped the verifier: its restored certificate must still be the
        // pinned one (it is, by the ticket's name; checked all the same).
        if !tls::is_pinned_server(stream.get_ref().1.peer_certificates(), &pinned) {
            return Err(DialError::WrongCertificate(Error::authentication(format!(
                "{label} at {endpoint} presented a certificate other than the one registered for it"
            ))));
        }
        let payload =
            serde_json::to_vec(request).map_err(|e| DialError::NotAnAgent(e.to_string()))?;
        write_frame(
            &mut stream,
            &Frame::new(MsgType::Request, payload),
            until,
            label,
        )
        .await
        .map_err(|e| DialError::NotAnAgent(e.to_string()))?;
        let reply = read_reply(&mut stream, until, label).await.map_err(|e| match e {
            ReadError::Io(e) => classify_tls(e, "reading its reply"),
            ReadError::Timeout => DialError::Timeout,
            ReadError::Closed => DialError::NotAnAgent(
                "it closed the connection without answering (is it an agent? a `secagg negotiate` drops connections it does not expect)".into(),
            ),
            ReadError::Other(e) => DialError::NotAnAgent(e),
        })?;
        Ok((stream, reply))
    }
}

/// Where a party's agent is and the certificate pinned for it.
#[derive(Debug, Clone)]
pub(crate) struct AgentAddress {
    /// The party's id (names it in errors).
    pub label: String,
    /// Its registered endpoint.
    pub endpoint: Endpoint,
    /// Its registered certificate.
    pub certificate_der: Vec<u8>,
}

/// Sends `requests[i]` to `targets[i]`, all at once, each over its own pinned connection, and
/// returns each first reply (or why there was none) in the same order, by `until`.
pub(crate) async fn ask_each(
    dialer: std::sync::Arc<Dialer>,
    targets: Vec<AgentAddress>,
    requests: Vec<Request>,
    until: Instant,
) -> Vec<Result<Reply>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (target, request)) in targets.into_iter().zip(requests).enumerate() {
        let dialer = dialer.clone();
        tasks.spawn(async move {
            let asked = dialer
                .ask(
                    &target.label,
                    &target.endpoint,
                    &target.certificate_der,
                    &request,
                    until,
                )
                .await;
            let answer = match asked {
                Ok((mut stream, reply)) => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                    Ok(reply)
                }
                Err(e) => Err(e.into_error(&target.label, &target.endpoint)),
            };
            (i, answer)
        });
    }
    let mut out: Vec<Option<Result<Reply>>> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, answer)) => {
                if out.len() <= i {
                    out.resize_with(i + 1, || None);
                }
                out[i] = Some(answer);
            }
            Err(e) => return vec![Err(Error::Internal(format!("a request task failed: {e}")))],
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::Internal("a request went missing".into()))))
        .collect()
}

/// A node agent's answer to a join request: the open control connection and its reply.
type JoinAnswer = std::result::Result<(TlsStream<TcpStream>, Reply), Error>;

enum ReadError {
    Io(std::io::Error),
    Timeout,
    Closed,
    Other(String),
}

/// Reads a node's report of a started MP-SPDZ session; once our side ended (`word` no longer
/// pending), first sends the node our word (`confirm` once the server key is stored, else
/// `cancel`), then goes on reading its report.
async fn read_until_report<R, W>(
    rd: &mut R,
    wr: &mut W,
    word: &mut tokio::sync::watch::Receiver<Word>,
    until: Instant,
    label: &str,
) -> std::result::Result<Reply, ReadError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let reading = read_reply(rd, until, label);
    tokio::pin!(reading);
    let mut said = false;
    loop {
        let w = tokio::select! {
            r = &mut reading => return r,
            w = word.wait_for(|w| *w != Word::Pending), if !said => w.map(|w| *w).ok(),
        };
        said = true;
        let request = match w {
            Some(Word::Confirm) => Request::Confirm,
            Some(Word::Cancel) => Request::Cancel,
            Some(Word::Pending) | None => continue,
        };
        let request = serde_json::to_vec(&request).expect("serialisable");
        // Best effort: a node that already ended reports anyway.
        let _ = write_frame(wr, &Frame::new(MsgType::Request, request), until, label).await;
    }
}

/// The researcher's word to the nodes of an MP-SPDZ session, once its own side ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// Its side still runs.
    Pending,
    /// The server key is stored: each node confirms its key.
    Confirm,
    /// Its side failed: each node stops its run and keeps its key unconfirmed.
    Cancel,
}

/// A node's report as the researcher records it: `None` when none came in time.
fn node_report(
    read: std::result::Result<Reply, ReadError>,
) -> Option<std::result::Result<Reply, String>> {
    match read {
        Ok(r) => Some(Ok(r)),
        Err(ReadError::Timeout) => None,
        Err(ReadError::Closed) => Some(Err(
            "its agent closed the connection without a report (it stopped or crashed)".into(),
        )),
        Err(ReadError::Io(e)) => Some(Err(format!(
            "its agent's connection failed without a report: {e}"
        ))),
        Err(ReadError::Other(e)) => Some(Err(e)),
    }
}

/// Reads one `Reply` frame. Reads the raw TLS stream first so that a TLS alert (our certificate
/// refused) keeps its I/O error for classification.
async fn read_reply<R: tokio::io::AsyncRead + Unpin>(
    stream: &mut R,
    until: Instant,
    label: &str,
) -> std::result::Result<Reply, ReadError> {
    use tokio::io::AsyncReadExt;
    let mut header = [0u8; 4];
    match timeout_at(until, stream.read_exact(&mut header)).await {
        Err(_) => return Err(ReadError::Timeout),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(ReadError::Closed)
        }
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 || len > crate::transport::frame::MAX_FRAME_LEN {
        return Err(ReadError::Other(format!(
            "protocol violation by {label}: a frame of {len} bytes"
        )));
    }
    let mut body = vec![0u8; len];
    match timeout_at(until, stream.read_exact(&mut body)).await {
        Err(_) => return Err(ReadError::Timeout),
        Ok(Err(e)) => return Err(ReadError::Io(e)),
        Ok(Ok(_)) => {}
    }
    match MsgType::from_byte(body[0]) {
        // serde quotes the agent's bytes (an unknown `reply`, a field's value) in its error.
        Some(MsgType::Reply) => serde_json::from_slice(&body[1..]).map_err(|e| {
            ReadError::Other(format!(
                "cannot read its reply: {}",
                crate::untrusted_text::escape_bounded(
                    &e.to_string(),
                    crate::untrusted_text::LOG_TEXT_LIMIT
                )
            ))
        }),
        Some(MsgType::Abort) => Err(ReadError::Other(format!(
            "it answered with an abort: \"{}\"",
            crate::transport::mesh::escape_peer_text(&String::from_utf8_lossy(&body[1..]))
        ))),
        Some(other) => Err(ReadError::Other(format!(
            "it answered with a {} message",
            other.name()
        ))),
        None => Err(ReadError::Other(format!(
            "it answered with unknown message type {}",
            body[0]
        ))),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("while starting the runtime", e))
}

/// The error of a session its caller cancelled before it started.
fn cancelled_by_caller(session_id: &str) -> Error {
    Error::peer(format!(
        "session {session_id} was cancelled by its caller before it started"
    ))
    .with_hint("nothing was stored anywhere; run the session again, with a new session id")
}

/// Runs a whole session from the researcher: asks every node's agent to join, starts them once
/// all accepted, runs the researcher's own side, and collects every node's report.
///
/// `Err` only for failures before any agent was contacted (the request or this party's home);
/// otherwise the report, with the error when the session did not complete (the server key is
/// stored if and only if the error is `None`).
pub fn run_session(
    home: &Home,
    req: &RunRequest,
    on_warning: &mut (dyn FnMut(&str) + Send),
) -> Result<(RunReport, Option<Error>)> {
    run_session_with(home, req, &RunOptions::default(), on_warning)
}

/// [`run_session`] with [`RunOptions`] (e.g. an MP-SPDZ session).
///
/// MP-SPDZ: each node's agent reserves a port for its `shamir-party.x` when it accepts and
/// reports it; once all accepted, this party builds the one ip file (each party's registered
/// host with its port) and hands it to every node with the start, so that every party writes
/// the same file.
pub fn run_session_with(
    home: &Home,
    req: &RunRequest,
    opts: &RunOptions,
    on_warning: &mut (dyn FnMut(&str) + Send),
) -> Result<(RunReport, Option<Error>)> {
    let started = std::time::Instant::now();
    let deadline = started + req.timeout;
    // One identity load and one store connection for the whole run: the party list, the plan
    // and the server key's store steps.
    let own = identity::load(home)?;
    let mut store = PooledStore::unpooled(Store::open_party_until(home, deadline)?);
    let parties = req.nodes.party_list(&own.party_id, &mut store)?;
    let sreq = SessionRequest {
        session_id: req.session_id,
        parties: parties.clone(),
        timeout: req.timeout,
        key_bits: req.key_bits,
        prime: None,
        listen: None,
        endpoint: None,
        scheme: req.scheme,
        min_nodes: req.min_nodes,
        dropout_threshold: req.dropout_threshold,
    };
    let plan = session::plan_with(
        &mut store,
        &own,
        || own.private_key_der(),
        &sreq,
        OffsetDateTime::now_utc(),
        deadline,
    )?;
    if plan.my_index() != 0 {
        return Err(Error::invalid(format!(
            "`secagg session run` is run by the session's researcher, and this party (`{}`) is a node",
            plan.me().id
        ))
        .with_hint("nodes run `secagg serve`, which joins the sessions the researcher requests"));
    }
    let engine_name = match &opts.mpspdz {
        Some(_) => MpSpdzEngine::NAME,
        None => NativeEngine::NAME,
    };
    // MP-SPDZ: this party's own checks and port, before any agent is asked.
    let mpspdz = match &opts.mpspdz {
        None => None,
        Some(m) => Some(own_mpspdz_side(home, &plan, m)?),
    };
    let dialer = std::sync::Arc::new(Dialer::new(&own, plan.my_key_pkcs8_der())?);
    let nodes: Vec<(String, Endpoint, Vec<u8>)> = plan.parties()[1..]
        .iter()
        .map(|p| {
            (
                p.id.to_string(),
                p.endpoint.clone(),
                p.certificate_der.clone(),
            )
        })
        .collect();
    let join = Request::Join {
        version: AGENT_PROTOCOL_VERSION,
        session_id: req.session_id.to_string(),
        parties: parties.iter().map(|p| p.to_string()).collect(),
        engine: engine_name.to_owned(),
        key_bits: plan.key_bits(),
        timeout_ms: req.timeout.as_millis() as u64,
        scheme: req.scheme,
        dropout_threshold: req.dropout_threshold,
    };
    let rt = runtime()?;
    // 1. Every node's agent checks the request; nothing is dialed between parties yet.
    let contact = CONTACT_TIMEOUT.max(opts.wait_for_agents.unwrap_or_default());
    let join_until = Instant::from_std(deadline.min(std::time::Instant::now() + contact));
    let keep_dialing = opts.wait_for_agents.is_some();
    let answers = rt.block_on(ask_to_join(
        &dialer,
        &nodes,
        &join,
        join_until,
        keep_dialing,
    ));
    let mut rows: Vec<PartyRow> = Vec::with_capacity(nodes.len() + 1);
    rows.push(PartyRow {
        party_id: parties[0].to_string(),
        role: Role::Researcher,
        state: PartyState::Cancelled,
        key: "none".into(),
        ms: None,
        error: None,
        mpspdz_port: mpspdz.as_ref().map(|m| m.1),
    });
    let (node_rows, controls, mut refusals) =
        classify_answers(&nodes, answers, mpspdz.is_some(), engine_name);
    rows.extend(node_rows);
    let session_id = req.session_id.to_string();
    let report = |rows: Vec<PartyRow>, ok: bool, fp: Option<String>| RunReport {
        session_id: session_id.clone(),
        engine: engine_name.to_owned(),
        ok,
        parties: rows,
        total_ms: ms(started.elapsed()),
        key_fingerprint: fp,
    };
    // MP-SPDZ: the one ip file, each party's registered host with its port.
    let mut mpspdz_lines = None;
    if refusals.is_empty() {
        if let Some((_, my_port)) = &mpspdz {
            match mpspdz_ip_lines(&plan, &rows, *my_port) {
                Ok(lines) => mpspdz_lines = Some(lines),
                Err(r) => refusals.push(r),
            }
        }
    }
    if refusals.is_empty() && opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
        refusals.push(ErrorReport::of(&cancelled_by_caller(&session_id)));
    }
    if !refusals.is_empty() {
        // Closing the accepted control connections cancels the session at those agents.
        drop(controls);
        return Ok((
            report(rows, false, None),
            Some(not_started(&session_id, &refusals)),
        ));
    }
    // 2. Start every node, then run our own side; each node's report is collected meanwhile.
    //
    // A node that reports a failure (or whose agent vanishes) while our side still runs makes
    // the session fail: our side is cancelled at once instead of waiting for its deadline. The
    // native engine honours the cancel flag only before the server key is stored (up to the
    // last node's acknowledgement), so a stored server key still implies that every node
    // durably stored its key.
    let cancel = CancelFlag::new();
    // The caller's flag stops our side like a node's failure does (the engine checks `cancel`).
    if let Some(user) = opts.cancel.clone() {
        let cancel = cancel.clone();
        rt.spawn(async move {
            while !user.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        });
    }
    let labels: Vec<String> = nodes.iter().map(|(l, _, _)| l.clone()).collect();
    let side = OwnSide {
        home,
        store,
        plan,
        deadline,
        cancel: &cancel,
    };
    let (own, cause_at_end, replies) = match (&mpspdz, mpspdz_lines) {
        (Some((engine, port)), Some(lines)) => run_mpspdz_over_controls(
            &rt,
            side,
            &labels,
            controls,
            (engine, *port, lines),
            on_warning,
        ),
        _ => {
            let (own, replies) = run_native_over_controls(&rt, side, &labels, controls, on_warning);
            (own, None, replies)
        }
    };
    rt.shutdown_background();
    let ok = own.is_ok();
    rows[0].state = if ok {
        PartyState::Confirmed
    } else {
        PartyState::Failed
    };
    rows[0].key = if ok {
        "confirmed".into()
    } else {
        "none".into()
    };
    let node_errors = apply_replies(&mut rows[1..], replies, ok, mpspdz.is_none());
    match own {
        Ok(r) => {
            for row in &rows[1..] {
                if row.state != PartyState::Confirmed {
                    on_warning(&format!(
                        "{} holds its key of session {session_id} but did not report it confirmed; it stays unconfirmed there until its operator confirms it",
                        row.party_id
                    ));
                }
            }
            rows[0].ms = Some(r.total_ms);
            Ok((report(rows, true, Some(r.key_fingerprint)), None))
        }
        Err(e) => {
            rows[0].error = Some(ErrorReport::of(&e));
            // A native session's failing node reported on the connection it shared with this
            // party (its abort, or its close), not with a report: its row says so. The error
            // names it as data (its origin), relayed by whichever party saw it first.
            if mpspdz.is_none() {
                let own_error = ErrorReport::of(&e);
                if let Some(row) = e
                    .origin()
                    .and_then(|o| rows[1..].iter_mut().find(|r| r.party_id == o.party))
                {
                    row.state = PartyState::Failed;
                    row.error = Some(own_error);
                }
            }
            let err = failure(&session_id, &e, cause_at_end, &rows, &node_errors);
            Ok((report(rows, false, None), Some(err)))
        }
    }
}

/// This party's MP-SPDZ engine and the port of its `shamir-party.x`, checked before any agent is
/// asked: the build, the plan as MP-SPDZ sees it, and the port free.
fn own_mpspdz_side(
    home: &Home,
    plan: &NegotiationPlan,
    m: &RunMpSpdz,
) -> Result<(MpSpdzEngine, u16)> {
    let engine = MpSpdzEngine::new(m.root.clone(), home);
    engine.preflight(plan)?;
    let port = m.port.unwrap_or(plan.me().endpoint.port);
    if let Err(e) = std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)) {
        return Err(Error::conflict(format!(
            "port {port} for this party's shamir-party.x cannot be used: {e}"
        ))
        .with_hint(if m.port.is_none() {
            "this party's endpoint port is taken (by its own `secagg serve`?): give another with --mpspdz-port PORT"
        } else {
            "give another free port with --mpspdz-port PORT"
        }));
    }
    Ok((engine, port))
}

/// Step 1: sends `join` to every node's agent at once (dialing again until `until` while one is
/// not listening yet, when `keep_dialing`); each node's answer, in node order.
async fn ask_to_join(
    dialer: &std::sync::Arc<Dialer>,
    nodes: &[(String, Endpoint, Vec<u8>)],
    join: &Request,
    until: Instant,
    keep_dialing: bool,
) -> Vec<Option<JoinAnswer>> {
    let mut set = JoinSet::new();
    for (i, (label, endpoint, cert)) in nodes.iter().cloned().enumerate() {
        let (dialer, join) = (dialer.clone(), join.clone());
        set.spawn(async move {
            let r = dialer
                .ask_until_listening(&label, &endpoint, &cert, &join, until, keep_dialing)
                .await;
            (i, r.map_err(|e| e.into_error(&label, &endpoint)))
        });
    }
    let mut answers: Vec<Option<JoinAnswer>> = (0..nodes.len()).map(|_| None).collect();
    while let Some(Ok((i, r))) = set.join_next().await {
        answers[i] = Some(r);
    }
    answers
}

/// Step 1's outcome: one row per node, the control connection of each node that accepted (in
/// node order), and every refusal (a node that refused, could not be reached, or answered out of
/// protocol).
fn classify_answers(
    nodes: &[(String, Endpoint, Vec<u8>)],
    answers: Vec<Option<JoinAnswer>>,
    mpspdz: bool,
    engine_name: &str,
) -> (
    Vec<PartyRow>,
    Vec<Option<TlsStream<TcpStream>>>,
    Vec<ErrorReport>,
) {
    let mut rows = Vec::with_capacity(nodes.len());
    let mut controls = Vec::with_capacity(nodes.len());
    let mut refusals: Vec<ErrorReport> = Vec::new();
    for ((label, _, _), answer) in nodes.iter().zip(answers) {
        let mut row = PartyRow {
            party_id: label.clone(),
            role: Role::Node,
            state: PartyState::Cancelled,
            key: "none".into(),
            ms: None,
            error: None,
            mpspdz_port: None,
        };
        match answer {
            Some(Ok((stream, Reply::Accepted { mpspdz_port })))
                if mpspdz_port.is_some() == mpspdz =>
            {
                row.mpspdz_port = mpspdz_port;
                controls.push(Some(stream))
            }
            Some(Ok((_, Reply::Accepted { mpspdz_port }))) => {
                let e = Error::peer(format!(
                    "protocol violation by {label}: it accepted the {engine_name} session {} an MP-SPDZ port",
                    if mpspdz_port.is_some() { "with" } else { "without" }
                ));
                row.state = PartyState::Failed;
                row.error = Some(ErrorReport::of(&e));
                refusals.push(ErrorReport::of(&e));
                controls.push(None);
            }
            Some(Ok((_, Reply::Refused { error }))) => {
                let report = error.report_from(&format!("{label} refused the session"));
                row.state = PartyState::Refused;
                row.error = Some(report.clone());
                refusals.push(report);
                controls.push(None);
            }
            Some(Ok((_, other))) => {
                let e = Error::peer(format!(
                    "protocol violation by {label}: answered the session request with {other:?}"
                ));
                row.state = PartyState::Failed;
                row.error = Some(ErrorReport::of(&e));
                refusals.push(ErrorReport::of(&e));
                controls.push(None);
            }
            Some(Err(e)) => {
                row.state = PartyState::Unreachable;
                row.error = Some(ErrorReport::of(&e));
                refusals.push(ErrorReport::of(&e));
                controls.push(None);
            }
            None => {
                let e = Error::Internal(format!("no answer recorded for {label}"));
                row.state = PartyState::Failed;
                row.error = Some(ErrorReport::of(&e));
                refusals.push(ErrorReport::of(&e));
                controls.push(None);
            }
        }
        rows.push(row);
    }
    (rows, controls, refusals)
}

/// The MP-SPDZ ip file's lines: each party's registered host with the port its `shamir-party.x`
/// takes (this party's `my_port`, each node's as its agent reserved it).
fn mpspdz_ip_lines(
    plan: &NegotiationPlan,
    rows: &[PartyRow],
    my_port: u16,
) -> std::result::Result<Vec<String>, ErrorReport> {
    let mut lines = Vec::with_capacity(rows.len());
    for (j, row) in rows.iter().enumerate() {
        let port = if j == 0 {
            Some(my_port)
        } else {
            row.mpspdz_port
        };
        let ep = Endpoint {
            host: plan.parties()[j].endpoint.host.clone(),
            port: port.unwrap_or(0),
        };
        let line = crate::mpspdz::workdir::ip_file_line(&ep)
            .map_err(|e| ErrorReport::of(&e.context(format!("party {j} (`{}`)", row.party_id))))?;
        lines.push(line);
    }
    Ok(lines)
}

/// The error of a session no node was started for, from every refusal (the first one's kind and
/// hint).
fn not_started(session_id: &str, refusals: &[ErrorReport]) -> Error {
    let first = &refusals[0];
    let e = error_of_kind(
        first.kind,
        format!(
            "session {session_id} was not started and nothing was stored: {}",
            refusals
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    match &first.hint {
        Some(h) => e.with_hint(h.clone()),
        None => e,
    }
}

/// Fills each node's row from its agent's report (`ok`: this party's side succeeded, so the server
/// key is stored); returns what the failing nodes said.
fn apply_replies(
    rows: &mut [PartyRow],
    replies: Vec<Option<std::result::Result<Reply, String>>>,
    ok: bool,
    native: bool,
) -> Vec<String> {
    let mut node_errors = Vec::new();
    for (row, r) in rows.iter_mut().zip(replies) {
        match r {
            Some(Ok(Reply::Result { state, ms, error })) => {
                row.ms = Some(ms);
                row.key = state.clone();
                match error {
                    Some(e) => {
                        let rep = e.report_from(&row.party_id);
                        node_errors.push(rep.message.clone());
                        row.error = Some(rep);
                        row.state = if ok {
                            PartyState::Stored
                        } else {
                            PartyState::Failed
                        };
                    }
                    None if state == "confirmed" => row.state = PartyState::Confirmed,
                    None => {
                        row.state = if ok {
                            PartyState::Stored
                        } else {
                            PartyState::Failed
                        }
                    }
                }
            }
            Some(Ok(other)) => {
                row.state = if ok {
                    PartyState::Stored
                } else {
                    PartyState::Failed
                };
                row.key = "unknown".into();
                row.error = Some(ErrorReport::new(
                    ErrorKind::PeerFailure,
                    format!("{}: unexpected report {other:?}", row.party_id),
                    None,
                ));
            }
            Some(Err(e)) => {
                row.state = if ok {
                    PartyState::Stored
                } else {
                    PartyState::Failed
                };
                row.key = "unknown".into();
                let message = format!("{}: {e}", row.party_id);
                node_errors.push(message.clone());
                row.error = Some(ErrorReport::new(ErrorKind::PeerFailure, message, None));
            }
            None => {
                row.state = if ok {
                    PartyState::Stored
                } else {
                    PartyState::Failed
                };
                row.key = "unknown".into();
                row.error = Some(ErrorReport::new(
                    ErrorKind::PeerFailure,
                    if !ok && native {
                        // A native session's report comes only after a clean end: the connection
                        // it ran on carried the abort instead.
                        format!(
                            "{}: no report (the session failed first; its agent's log says how it ended there)",
                            row.party_id
                        )
                    } else {
                        format!("{}: no report from its agent", row.party_id)
                    },
                    None,
                ));
            }
        }
        if ok && row.key != "confirmed" {
            // sk0 is stored, so this node acknowledged a durably stored key.
            row.key = match row.key.as_str() {
                "unconfirmed" => "unconfirmed".into(),
                _ => "stored".into(),
            };
        }
    }
    node_errors
}

/// The error of a session started and failed: the node that failed first and why when one
/// reported it before this party's side ended, else this party's error and what the nodes said.
fn failure(
    session_id: &str,
    e: &Error,
    cause_at_end: Option<NodeFailure>,
    rows: &[PartyRow],
    node_errors: &[String],
) -> Error {
    match cause_at_end {
        // Our side was cancelled (or failed at the same moment) because a node failed:
        // that node and its reason are what the operator needs first.
        Some(c) => {
            let mut message = format!(
                "session {session_id} failed at {}: {}; the researcher stopped its side at once and stored no server key",
                c.party, c.reason
            );
            // The other nodes ended because of it: one short word each (their rows
            // carry the whole chain of why, which would repeat the session id and the
            // cause once per node here).
            let others: Vec<String> = rows[1..]
                .iter()
                .filter(|r| r.party_id != c.party)
                .map(|r| format!("{} (key: {})", r.party_id, r.key))
                .collect();
            if !others.is_empty() {
                message.push_str(&format!(
                    "; the other nodes ended too: {}; each party's row says how",
                    others.join(", ")
                ));
            }
            let err = error_of_kind(c.kind, message);
            match c.hint {
                Some(h) => err.with_hint(h),
                None => err.with_hint(format!(
                    "see the log of the agent of {}; no server key was stored, so run the session again with a new session id once it is fixed",
                    c.party
                )),
            }
        }
        None => {
            let mut message = format!("session {session_id} failed: {e}");
            if !node_errors.is_empty() {
                message.push_str(&format!("; the nodes report: {}", node_errors.join("; ")));
            }
            let mut err = error_of_kind(e.kind(), message);
            if let Some(h) = e.hint() {
                err = err.with_hint(h.to_owned());
            }
            err
        }
    }
}

/// What a node's agent reported at the end of a session: its result, what went wrong reading it
/// (as text), or nothing in time.
type NodeReply = Option<std::result::Result<Reply, String>>;

/// This party's side of a session run through the agents, and what it needs.
struct OwnSide<'a> {
    home: &'a Home,
    store: PooledStore,
    plan: NegotiationPlan,
    deadline: std::time::Instant,
    /// Set by a node's failure or the caller: stops this side before the server key is stored.
    cancel: &'a CancelFlag,
}

/// The researcher's side of an MP-SPDZ session run through the agents: every node's `start`
/// (with the ip file's `lines`) and report on its control connection, this party's
/// `shamir-party.x` meanwhile; a node that reports a failure first is the session's cause (and
/// cancels this side); after this side ends, each node gets the word to confirm or not.
fn run_mpspdz_over_controls(
    rt: &tokio::runtime::Runtime,
    OwnSide {
        home,
        store,
        plan,
        deadline,
        cancel,
    }: OwnSide<'_>,
    labels: &[String],
    controls: Vec<Option<TlsStream<TcpStream>>>,
    (engine, port, lines): (&MpSpdzEngine, u16, Vec<String>),
    on_warning: &mut (dyn FnMut(&str) + Send),
) -> (
    Result<session::NegotiationReport>,
    Option<NodeFailure>,
    Vec<NodeReply>,
) {
    let cause: std::sync::Arc<std::sync::Mutex<Option<NodeFailure>>> = Default::default();
    // Set once our side failed: every node still running gets a `cancel` on its control
    // connection (MP-SPDZ has no abort that would reach it otherwise).
    let (word_tx, word_rx) = tokio::sync::watch::channel(Word::Pending);
    let start = serde_json::to_vec(&Request::Start {
        mpspdz_endpoints: Some(lines.clone()),
    })
    .expect("serialisable");
    let collectors: Vec<tokio::task::JoinHandle<Option<std::result::Result<Reply, String>>>> =
        controls
            .into_iter()
            .zip(labels)
            .map(|(stream, label)| {
                let (label, start) = (label.clone(), start.clone());
                let (cancel, cause) = (cancel.clone(), cause.clone());
                let mut word_rx = word_rx.clone();
                let stream = stream.expect("every node accepted");
                let until = Instant::from_std(deadline) + REPORT_GRACE;
                rt.spawn(async move {
                    let (mut rd, mut wr) = tokio::io::split(stream);
                    let r = match write_frame(
                        &mut wr,
                        &Frame::new(MsgType::Request, start),
                        until,
                        &label,
                    )
                    .await
                    {
                        Err(e) => Some(Err(format!("could not start it: {e}"))),
                        Ok(()) => node_report(
                            read_until_report(&mut rd, &mut wr, &mut word_rx, until, &label).await,
                        ),
                    };
                    if let Some(failure) = NodeFailure::of(&label, &r) {
                        let mut c = cause.lock().unwrap_or_else(|p| p.into_inner());
                        // The first failure reported is the likeliest cause; the others often
                        // only saw the session abort.
                        if c.is_none() {
                            *c = Some(failure);
                        }
                        cancel.cancel();
                    }
                    let _ = rd.unsplit(wr).shutdown().await;
                    r
                })
            })
            .collect();
    let own = (|| {
        let mut sink =
            StoreSink::with_store(home, store, &plan, MpSpdzEngine::NAME, deadline, on_warning)?;
        let result = super::mpspdz_plan(plan, &lines, Some(port), deadline)
            .and_then(|plan| engine.negotiate_cancellable(plan, &mut sink, cancel));
        sink.report(result)
    })();
    // What a node reported before our side ended (later reports are consequences of our end).
    let cause_at_end = cause.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The server key is stored (our side succeeded) or not: each node confirms its key or
    // stops and keeps it unconfirmed.
    let _ = word_tx.send(if own.is_ok() {
        Word::Confirm
    } else {
        Word::Cancel
    });
    let grace_end = Instant::now() + REPORT_GRACE;
    let replies: Vec<Option<std::result::Result<Reply, String>>> = rt.block_on(async {
        let mut out = Vec::with_capacity(collectors.len());
        for c in collectors {
            let abort = c.abort_handle();
            match timeout_at(grace_end, c).await {
                Ok(Ok(r)) => out.push(r),
                _ => {
                    abort.abort();
                    out.push(None);
                }
            }
        }
        out
    });
    (own, cause_at_end, replies)
}

/// The researcher's side of a native session run through the agents: the negotiation with each
/// node runs on its control connection (no second connection and TLS handshake per node, see
/// [`ControlLink`]), started right after the `start`; after a clean end the node's report
/// comes on the same connection. A node that fails aborts the session on it like any peer, so
/// this side fails at once, naming it.
fn run_native_over_controls(
    rt: &tokio::runtime::Runtime,
    OwnSide {
        home,
        store,
        plan,
        deadline,
        cancel,
    }: OwnSide<'_>,
    labels: &[String],
    controls: Vec<Option<TlsStream<TcpStream>>>,
    on_warning: &mut (dyn FnMut(&str) + Send),
) -> (
    Result<session::NegotiationReport>,
    Vec<Option<std::result::Result<Reply, String>>>,
) {
    let start = serde_json::to_vec(&Request::Start {
        mpspdz_endpoints: None,
    })
    .expect("serialisable");
    let until = Instant::from_std(deadline);
    let (links, returned): (Vec<ControlLink>, Vec<_>) = rt.block_on(async {
        let mut links = Vec::with_capacity(controls.len());
        let mut returned = Vec::with_capacity(controls.len());
        for (i, stream) in controls.into_iter().enumerate() {
            let mut stream = stream.expect("every node accepted");
            // A failed write shows in the hello exchange on the same connection, naming the node.
            let frame = Frame::new(MsgType::Request, start.clone());
            let _ = write_frame(&mut stream, &frame, until, &labels[i]).await;
            let (give_back, back) = tokio::sync::oneshot::channel();
            links.push(ControlLink {
                peer: i + 1,
                stream: tokio_rustls::TlsStream::Client(stream),
                give_back,
            });
            returned.push(back);
        }
        (links, returned)
    });
    let own = (|| {
        let mut sink =
            StoreSink::with_store(home, store, &plan, NativeEngine::NAME, deadline, on_warning)?;
        let result = rt.block_on(crate::engine::native::negotiate_routed(
            plan,
            &mut sink,
            None,
            None,
            links,
            Some(cancel),
        ));
        sink.report(result)
    })();
    let grace_end = Instant::now() + REPORT_GRACE;
    let replies = rt.block_on(async {
        let mut out = Vec::with_capacity(returned.len());
        for (back, label) in returned.into_iter().zip(labels) {
            let r = match timeout_at(grace_end, back).await {
                Ok(Ok(tokio_rustls::TlsStream::Client(mut stream))) => {
                    let r = node_report(read_reply(&mut stream, grace_end, label).await);
                    let _ = timeout_at(grace_end, stream.shutdown()).await;
                    r
                }
                // After a failure the connection carried the abort and was closed.
                _ => None,
            };
            out.push(r);
        }
        out
    });
    (own, replies)
}

/// A node's failure, as its agent reported it (or its agent's disappearance).
#[derive(Debug, Clone)]
struct NodeFailure {
    party: String,
    kind: ErrorKind,
    reason: String,
    hint: Option<String>,
}

impl NodeFailure {
    /// The failure in a node's report, if it reports one (`None`: success, or no report yet).
    fn of(label: &str, r: &Option<std::result::Result<Reply, String>>) -> Option<NodeFailure> {
        match r {
            Some(Ok(Reply::Result { error: Some(e), .. })) => Some(NodeFailure {
                party: label.to_owned(),
                kind: e.kind,
                reason: crate::transport::mesh::escape_peer_text(&e.message),
                hint: e
                    .hint
                    .as_deref()
                    .map(crate::transport::mesh::escape_peer_text),
            }),
            Some(Ok(Reply::Result { error: None, .. })) | None => None,
            Some(Ok(other)) => Some(NodeFailure {
                party: label.to_owned(),
                kind: ErrorKind::PeerFailure,
                reason: format!("protocol violation: it reported {other:?}"),
                hint: None,
            }),
            Some(Err(e)) => Some(NodeFailure {
                party: label.to_owned(),
                kind: ErrorKind::PeerFailure,
                reason: e.clone(),
                hint: None,
            }),
        }
    }
}

/// Why a party failed the federation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckProblem {
    /// Nothing answers at its registered endpoint.
    Unreachable,
    /// Something answers, but not a secagg agent.
    NotAnAgent,
    /// It presented a certificate other than the one registered for it here.
    WrongCertificate,
    /// It refused this party's certificate: this party is not registered there (or with
    /// another certificate).
    NotRegisteredThere,
    /// Its clock differs from this party's by more than allowed.
    ClockSkew,
    /// It speaks another protocol version.
    VersionMismatch,
    /// Its registered certificate expired (or is not valid yet).
    CertificateInvalid,
    /// It did not answer in time.
    Timeout,
}

impl CheckProblem {
    /// The problem's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckProblem::Unreachable => "unreachable",
            CheckProblem::NotAnAgent => "not_an_agent",
            CheckProblem::WrongCertificate => "wrong_certificate",
            CheckProblem::NotRegisteredThere => "not_registered_there",
            CheckProblem::ClockSkew => "clock_skew",
            CheckProblem::VersionMismatch => "version_mismatch",
            CheckProblem::CertificateInvalid => "certificate_invalid",
            CheckProblem::Timeout => "timeout",
        }
    }
}

/// One party's row of the federation check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// Party id.
    pub party_id: String,
    /// Role.
    pub role: Role,
    /// Its registered endpoint.
    pub endpoint: String,
    /// Whether every check passed.
    pub ok: bool,
    /// A TCP connection to its endpoint succeeded.
    pub reachable: bool,
    /// Pinned mutual TLS succeeded both ways (its certificate is the registered one, and it
    /// accepted this party's).
    pub mutual_tls: bool,
    /// Its secagg version.
    pub secagg_version: Option<String>,
    /// Its native protocol version.
    pub protocol_version: Option<u16>,
    /// Its clock minus ours, in milliseconds (round-trip midpoint).
    pub clock_skew_ms: Option<i64>,
    /// Days until its registered certificate expires.
    pub certificate_days_left: i64,
    /// Serial of the roster it holds, if any (a researcher: the last it exported; a node: the
    /// last it imported from this party when this party is a researcher).
    pub roster_serial: Option<u64>,
    /// Who issued that roster.
    pub roster_issuer: Option<String>,
    /// TLS handshakes its agent completed since it started, full and resumed.
    pub tls_handshakes: Option<super::HandshakeCounts>,
    /// Negotiation connections its agent kept between sessions and reused.
    pub connections: Option<super::ConnectionCounts>,
    /// Sessions joined or running there.
    pub sessions: Option<usize>,
    /// Round trip of the status request, milliseconds (TLS handshake included).
    pub ms: f64,
    /// What failed.
    pub problem: Option<CheckProblem>,
    /// Why, in words.
    pub message: Option<String>,
}

/// The error a federation check ends with when some party failed, `None` when every party
/// passed: every failed party named with its problem, of the first failed party's kind (a wrong
/// certificate or a party that has not registered this one: authentication; a timeout: timeout;
/// an invalid certificate here: invalid input; otherwise: peer failure). The CLI exits with it,
/// the Python package raises it.
pub fn federation_failure(rows: &[CheckRow]) -> Option<Error> {
    let failed: Vec<&CheckRow> = rows.iter().filter(|r| !r.ok).collect();
    let first = failed.first()?;
    let message = format!(
        "federation check failed for {} of {} parties: {}",
        failed.len(),
        rows.len(),
        failed
            .iter()
            .map(|r| format!(
                "{}: {} ({})",
                r.party_id,
                r.problem.map(|p| p.as_str()).unwrap_or("failed"),
                r.message.as_deref().unwrap_or("")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let e = match first.problem {
        Some(CheckProblem::WrongCertificate | CheckProblem::NotRegisteredThere) => {
            Error::authentication(message)
        }
        Some(CheckProblem::Timeout) => Error::timeout(message),
        Some(CheckProblem::CertificateInvalid) => Error::invalid(message),
        _ => Error::peer(message),
    };
    Some(e.with_hint(
        "each party runs `secagg serve`, and every pair has registered each other's current certificate",
    ))
}

/// Contacts the agent of every registered peer (or of `parties`) and reports, per party, what
/// [`CheckRow`] lists. A clock differing by more than `max_skew` fails the party.
pub fn check_federation(
    home: &Home,
    parties: Option<&[PartyId]>,
    max_skew: Duration,
) -> Result<Vec<CheckRow>> {
    let peers = registration::list(home)?;
    let selected: Vec<_> = match parties {
        None => peers,
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                match peers.iter().find(|p| &p.party_id == id) {
                    Some(p) => out.push(p.clone()),
                    None => return Err(registration::not_registered(id)),
                }
            }
            out
        }
    };
    let (dialer, _own) = Dialer::for_home(home)?;
    let dialer = std::sync::Arc::new(dialer);
    let now = OffsetDateTime::now_utc();
    let rt = runtime()?;
    let rows = rt.block_on(async {
        let mut set = JoinSet::new();
        for (i, p) in selected.iter().cloned().enumerate() {
            let dialer = dialer.clone();
            set.spawn(async move {
                let label = p.party_id.to_string();
                let until = Instant::now() + CONTACT_TIMEOUT;
                let sent = std::time::Instant::now();
                let sent_wall = OffsetDateTime::now_utc();
                let r = dialer
                    .ask(
                        &label,
                        &p.endpoint,
                        &p.certificate_der,
                        &Request::Status {
                            version: AGENT_PROTOCOL_VERSION,
                        },
                        until,
                    )
                    .await;
                let rtt = sent.elapsed();
                (i, r.map(|(_, reply)| reply), rtt, sent_wall)
            });
        }
        let mut out = Vec::new();
        while let Some(Ok(x)) = set.join_next().await {
            out.push(x);
        }
        out.sort_by_key(|x| x.0);
        out
    });
    rt.shutdown_background();
    let mut out = Vec::with_capacity(selected.len());
    for ((_, reply, rtt, sent_wall), p) in rows.into_iter().zip(&selected) {
        let days_left = (p.not_after - now).whole_days();
        let mut row = CheckRow {
            party_id: p.party_id.to_string(),
            role: p.role,
            endpoint: p.endpoint.to_string(),
            ok: false,
            reachable: false,
            mutual_tls: false,
            secagg_version: None,
            protocol_version: None,
            clock_skew_ms: None,
            certificate_days_left: days_left,
            roster_serial: None,
            roster_issuer: None,
            tls_handshakes: None,
            connections: None,
            sessions: None,
            ms: ms(rtt),
            problem: None,
            message: None,
        };
        let fail = |row: &mut CheckRow, problem: CheckProblem, message: String| {
            row.problem = Some(problem);
            row.message = Some(message);
        };
        match reply {
            Err(DialError::Unreachable(e)) => fail(
                &mut row,
                CheckProblem::Unreachable,
                format!("nothing answers at {}: {e}", p.endpoint),
            ),
            Err(DialError::Timeout) => {
                row.reachable = true;
                fail(
                    &mut row,
                    CheckProblem::Timeout,
                    format!("no answer within {} s", CONTACT_TIMEOUT.as_secs()),
                )
            }
            Err(DialError::WrongCertificate(e)) => {
                row.reachable = true;
                fail(&mut row, CheckProblem::WrongCertificate, e.to_string())
            }
            Err(DialError::NotRegisteredThere(e)) => {
                row.reachable = true;
                fail(&mut row, CheckProblem::NotRegisteredThere, e.to_string())
            }
            Err(DialError::NotAnAgent(e)) => {
                row.reachable = true;
                fail(
                    &mut row,
                    CheckProblem::NotAnAgent,
                    format!("not running a secagg agent: {e}"),
                )
            }
            Ok(Reply::Status(s)) => {
                row.reachable = true;
                row.mutual_tls = true;
                apply_status(&mut row, &s, rtt, sent_wall, max_skew);
            }
            Ok(other) => {
                row.reachable = true;
                row.mutual_tls = true;
                fail(
                    &mut row,
                    CheckProblem::NotAnAgent,
                    format!("unexpected answer to a status request: {other:?}"),
                )
            }
        }
        if row.problem.is_none() && days_left < 0 {
            fail(
                &mut row,
                CheckProblem::CertificateInvalid,
                format!("its registered certificate expired {} days ago", -days_left),
            );
        }
        row.ok = row.problem.is_none();
        out.push(row);
    }
    Ok(out)
}

fn apply_status(
    row: &mut CheckRow,
    s: &StatusInfo,
    rtt: Duration,
    sent_wall: OffsetDateTime,
    max_skew: Duration,
) {
    row.secagg_version = Some(s.secagg_version.clone());
    row.protocol_version = Some(s.protocol_version);
    row.roster_serial = s.roster_serial;
    row.roster_issuer = s.roster_issuer.clone();
    row.tls_handshakes = s.tls_handshakes;
    row.connections = s.connections;
    row.sessions = Some(s.sessions);
    let mid = sent_wall + time::Duration::try_from(rtt / 2).unwrap_or(time::Duration::ZERO);
    let ours_ms = (mid.unix_timestamp_nanos() / 1_000_000) as i64;
    let skew = s.time_unix_ms - ours_ms;
    row.clock_skew_ms = Some(skew);
    if s.protocol_version != PROTOCOL_VERSION || s.agent_protocol_version != AGENT_PROTOCOL_VERSION
    {
        row.problem = Some(CheckProblem::VersionMismatch);
        row.message = Some(format!(
            "it speaks native protocol {} / agent protocol {} (secagg {}), this party {PROTOCOL_VERSION} / {AGENT_PROTOCOL_VERSION}",
            s.protocol_version, s.agent_protocol_version, s.secagg_version
        ));
    } else if skew.unsigned_abs() > max_skew.as_millis() as u64 {
        row.problem = Some(CheckProblem::ClockSkew);
        row.message = Some(format!(
            "its clock is {:.1} s {} this party's (more than {} s): certificate validity checks will disagree",
            skew.unsigned_abs() as f64 / 1000.0,
            if skew > 0 { "ahead of" } else { "behind" },
            max_skew.as_secs()
        ));
    }
}

/// Fetches the latest roster exported by researcher `from` (or by the one researcher registered
/// here) from its agent, over pinned mutual TLS. Returns the researcher's id and the roster file's
/// bytes, *unverified*: the caller verifies and imports them as a file ([`crate::roster`]).
pub fn pull_roster(home: &Home, from: Option<&PartyId>) -> Result<(PartyId, Vec<u8>)> {
    let peers = registration::list(home)?;
    let researcher = match from {
        Some(id) => peers
            .into_iter()
            .find(|p| &p.party_id == id)
            .ok_or_else(|| registration::not_registered(id))?,
        None => {
            let mut researchers: Vec<_> = peers
                .into_iter()
                .filter(|p| p.role == Role::Researcher)
                .collect();
            match researchers.len() {
                1 => researchers.remove(0),
                0 => {
                    return Err(Error::not_found("no researcher is registered here")
                        .with_hint("register the researcher first (its bundle, with --expect-fingerprint checked out of band)"))
                }
                n => {
                    return Err(Error::invalid(format!(
                        "{n} researchers are registered here: say which one to pull from"
                    ))
                    .with_hint("add --from RESEARCHER_ID"))
                }
            }
        }
    };
    if researcher.role != Role::Researcher {
        return Err(Error::invalid(format!(
            "`{}` is a node: rosters come from a researcher",
            researcher.party_id
        )));
    }
    let (dialer, _own) = Dialer::for_home(home)?;
    let label = researcher.party_id.to_string();
    let rt = runtime()?;
    let answer = rt.block_on(async {
        let (mut stream, reply) = dialer
            .ask(
                &label,
                &researcher.endpoint,
                &researcher.certificate_der,
                &Request::Roster {
                    version: AGENT_PROTOCOL_VERSION,
                    chunked: true,
                },
                Instant::now() + CONTACT_TIMEOUT,
            )
            .await
            .map_err(|e| e.into_error(&label, &researcher.endpoint))?;
        match reply {
            Reply::RosterFollows { bytes } => {
                super::roster_transfer::receive(&mut stream, &label, bytes)
                    .await
                    .map(Some)
            }
            // An agent of an older secagg sends a roster that fits in one reply this way.
            Reply::Roster { roster } => Ok(roster.map(String::into_bytes)),
            Reply::Refused { error } => {
                let report = error.report_from(&label);
                let refused = error_of_kind(error.kind, report.message);
                Err(match report.hint {
                    Some(hint) => refused.with_hint(hint),
                    None => refused,
                })
            }
            other => Err(Error::peer(format!(
                "{label} answered a roster request with {other:?}"
            ))),
        }
    });
    rt.shutdown_background();
    match answer? {
        Some(bytes) => Ok((researcher.party_id, bytes)),
        None => Err(
            Error::not_found(format!("{label} has not exported a roster yet"))
                .with_hint(format!("ask {label} to run `secagg roster export`")),
        ),
    }
}
