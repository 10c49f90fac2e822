//! The party agent (`secagg serve`) and its clients (`secagg session run`, `secagg federation
//! check`): one command at the researcher negotiates with the whole federation.
//!
//! An agent owns its party's endpoint. Every connection to it is pinned mutual TLS 1.3 exactly as
//! in a negotiation (the transport's verifiers: the client must present the certificate
//! registered for one of this party's peers, and it must hold its key), and its first frame says
//! what it is for:
//!
//! - **`Request` `{"op":"join",…}`** from a researcher: a session request (session id, ordered
//!   party list, engine, key length, timeout). The agent checks it: the client is a registered
//!   *researcher* (a node is refused), allowed by the policy (the researchers named with
//!   `--allow-researcher`, else those registered by hand: a roster vouches for nodes, and a
//!   researcher it brought in is refused until named or registered by hand), and party 0
//!   of the list; the list is checked exactly as `secagg negotiate` checks a plan
//!   ([`crate::session`]'s plan: list shape, this party in it, every party registered with a
//!   valid certificate, no key stored for the session yet, the prime bound); the limits on
//!   concurrent sessions (per researcher and in all) are not reached. It answers `Reply`
//!   `{"reply":"accepted"}` or `{"reply":"refused","error":{…}}`. Nothing is dialed yet.
//! - **`Request` `{"op":"start"}`** on the same connection, once every node accepted: the agent
//!   runs its side of the native session. Its negotiation with the researcher runs on this very
//!   connection (the researcher's hello follows the start: no second connection, no second TLS
//!   handshake); it dials the nodes after it and receives the other nodes' connections through
//!   its own port, routed by session id. It stores its key exactly as `negotiate` does
//!   (unconfirmed before its acknowledgement, confirmed on the researcher's final word); after
//!   a clean end at both ends (each side's `End`) it answers
//!   `{"reply":"result","state":…,"ms":…,"error":…}` on the same connection and closes; after a
//!   failure that connection carried its abort (with the reason) like any negotiation
//!   connection. A control connection closed before `start` cancels the session (nothing was
//!   sent or stored). An MP-SPDZ session's start carries the ip file; its control connection
//!   then only carries a `cancel` from the researcher and the result.
//! - **`Hello`** (the native protocol's first frame, which carries the session id): negotiation
//!   traffic from another party of a session; it is handed to that session, which checks the
//!   certificate against the parties expected to dial in and the hello against its own, as a
//!   negotiation checks a connection it accepted.
//! - **`Request` `{"op":"status"}`**: party id, role, versions, clock, certificate expiry, how
//!   many sessions run, the serial of the roster this party holds ([`StatusInfo`]).
//! - **`Request` `{"op":"roster","chunked":true}`** from any registered peer: the latest roster
//!   this party (a researcher) exported ([`crate::roster::latest_path`]), announced by its size
//!   and sent in data frames ([`roster_transfer`]: a roster of 64 parties already exceeds one
//!   frame), or none. The client verifies and imports it as a file ([`pull_roster`] then
//!   [`crate::roster`]): the agent is only a courier, the signature is what is trusted.
//!
//! - **`Request` `{"op":"lom_share"|"lom_announce"|"lom_survivors"|"lom_reveal",…}`**: the steps
//!   of a dropout-tolerant LOM round ([`crate::aggregate::lom_dropout`], served by `dropout.rs`):
//!   a self-mask share from another node of the context, stored before the answer; the
//!   researcher's survivor set, recorded once; another survivor asking which set this node was
//!   told; the researcher's reveal, after the comparison and a durable record of what is revealed.
//!
//! The all-or-nothing invariant holds per session because every session runs the unchanged
//! native protocol: the researcher stores `sk0` only once every node acknowledged a durably
//! stored key.

mod admission;
pub mod client;
mod dropout;
pub mod one_session;
pub(crate) mod roster_transfer;
pub mod server;
mod stranger_log;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::NegotiationPlan;
use crate::error::{Error, ErrorKind, ErrorReport, Result};
use crate::party::Endpoint;

pub use client::{
    check_federation, federation_failure, pull_roster, run_session, run_session_with, CheckProblem,
    CheckRow, Nodes, PartyRow, PartyState, RunMpSpdz, RunOptions, RunReport, RunRequest,
};
pub use one_session::{serve_one, OneSession};
pub use server::{
    serve, AgentEvent, AgentMpSpdz, AgentOptions, Level, Log, Shutdown, ShutdownHandle,
};

/// Version of the agent's request/reply messages. Version 2: a native session's negotiation
/// between the researcher and a node runs on the control connection its join came on. Version 3:
/// an MP-SPDZ node confirms its key only on the researcher's `confirm`. Version 4: a join names
/// the session's scheme (`lom`: pairwise secrets agreed between the nodes).
/// Version 5: LOM contexts that survive dropouts (a join's `dropout_threshold`, and the
/// `lom_share`, `lom_announce`, `lom_survivors` and `lom_reveal` requests).
pub const AGENT_PROTOCOL_VERSION: u16 = 5;

/// The secagg version an agent reports in its status.
pub const SECAGG_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest session timeout an agent accepts (a session holds a slot until its deadline).
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a new connection may take to finish its TLS handshake and send its first frame.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Default limit of concurrent sessions of one agent.
pub const DEFAULT_MAX_SESSIONS: usize = 64;

/// How long an agent keeps an idle negotiation connection to another node's agent by default.
pub const DEFAULT_KEEP_CONNECTIONS: Duration = crate::transport::pool::DEFAULT_IDLE;

/// Default limit of concurrent sessions one researcher may run through an agent.
pub const DEFAULT_MAX_SESSIONS_PER_RESEARCHER: usize = 16;

/// A request to an agent (the JSON payload of a `Request` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Join a session (researcher only).
    Join {
        version: u16,
        session_id: String,
        parties: Vec<String>,
        engine: String,
        key_bits: u32,
        timeout_ms: u64,
        /// What the session produces (absent before version 4: a Joye–Libert key).
        #[serde(default)]
        scheme: crate::engine::ContextScheme,
        /// LOM sessions: the context's dropout threshold (version 5; absent: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropout_threshold: Option<u32>,
    },
    /// Start the joined session (every node accepted).
    Start {
        /// MP-SPDZ sessions: the ip file's lines (`host:port` per party, in party order, each
        /// port the one that party's agent reserved), the same for every party.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mpspdz_endpoints: Option<Vec<String>>,
    },
    /// Cancel the started session on this control connection (the researcher's side failed).
    Cancel,
    /// MP-SPDZ sessions: the researcher stored the server key; the node confirms its key (which
    /// it keeps unconfirmed until then).
    Confirm,
    /// Report status.
    Status { version: u16 },
    /// Send the latest roster this (researcher) agent exported (`secagg roster pull`).
    Roster {
        version: u16,
        /// The client reads a roster of any size as [`Reply::RosterFollows`] and data frames;
        /// absent (false) from clients that read only one reply, which a roster over 64 KiB
        /// does not fit in.
        #[serde(default)]
        chunked: bool,
    },
    /// A node's share of its self-mask seed for one round of a dropout-tolerant LOM context
    /// (node to node; [`crate::aggregate::lom_dropout`]'s step 1). Answered `stored` once durable.
    LomShare {
        version: u16,
        session_id: String,
        round: u64,
        label: u64,
        /// The share of its self-mask seed, hexadecimal.
        share: String,
        /// The shares of its round seed with each other node but the receiver: (that node,
        /// hexadecimal share).
        #[serde(default)]
        seed_shares: Vec<(String, String)>,
    },
    /// The survivors of one round (researcher to each survivor; step 3). Answered `stored`.
    LomAnnounce {
        version: u16,
        session_id: String,
        round: u64,
        label: u64,
        /// Sorted node ids.
        survivors: Vec<String>,
    },
    /// Which survivors the researcher announced to this node (survivor to survivor; step 3's
    /// comparison). Answered `survivors`.
    LomSurvivors {
        version: u16,
        session_id: String,
        round: u64,
        label: u64,
    },
    /// Reveal what unmasks one round (researcher to each survivor; step 4). Answered `revealed`.
    LomReveal {
        version: u16,
        session_id: String,
        round: u64,
        label: u64,
    },
}

/// What an agent reports about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The agent's party id.
    pub party_id: String,
    /// The party id the agent identified this client as (from its pinned certificate).
    pub client_id: String,
    /// secagg version.
    pub secagg_version: String,
    /// The native negotiation protocol's version.
    pub protocol_version: u16,
    /// The agent protocol's version.
    pub agent_protocol_version: u16,
    /// The agent's clock, Unix milliseconds.
    pub time_unix_ms: i64,
    /// When the agent's certificate expires, Unix seconds.
    pub certificate_not_after_unix: i64,
    /// Sessions joined or running.
    pub sessions: usize,
    /// Serial of the roster this party holds ([`crate::roster::held_serial`]): a researcher,
    /// the last it exported; a node, the last it imported from the asking researcher.
    pub roster_serial: Option<u64>,
    /// Who issued that roster (absent from agents older than this field).
    #[serde(default)]
    pub roster_issuer: Option<String>,
    /// TLS handshakes the agent completed since it started, full and resumed (a resumed one
    /// used a session ticket it issued to that peer before).
    #[serde(default)]
    pub tls_handshakes: Option<HandshakeCounts>,
    /// Negotiation connections kept between sessions and reused (absent when the agent keeps
    /// none, and from older agents).
    #[serde(default)]
    pub connections: Option<ConnectionCounts>,
}

/// An agent's counters of negotiation connections kept between sessions.
pub use crate::transport::pool::PoolCounts as ConnectionCounts;

/// Completed TLS handshakes, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeCounts {
    /// Full handshakes (certificates exchanged and verified).
    pub full: u64,
    /// Resumed handshakes (PSK with ECDHE, from a ticket issued after a full one).
    pub resumed: u64,
}

/// An error as it travels between agent and client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl WireError {
    pub(crate) fn of(e: &Error) -> Self {
        WireError {
            kind: e.kind(),
            message: e.to_string(),
            hint: e.hint().map(str::to_owned),
        }
    }

    /// The error at the client, attributed to `party` (its text escaped: it is a peer's).
    pub(crate) fn report_from(&self, party: &str) -> ErrorReport {
        let message = format!(
            "{party}: {}",
            crate::transport::mesh::escape_peer_text(&self.message)
        );
        ErrorReport::new(
            self.kind,
            message,
            self.hint
                .as_deref()
                .map(crate::transport::mesh::escape_peer_text),
        )
    }
}

/// An agent's reply (the JSON payload of a `Reply` frame).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// The join request passed every check; the session waits for `start`.
    Accepted {
        /// MP-SPDZ sessions: the port this agent reserved for its `shamir-party.x`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mpspdz_port: Option<u16>,
    },
    /// The request was refused.
    Refused { error: WireError },
    /// The session ended at this agent.
    Result {
        /// `confirmed`, `unconfirmed` or `none` (no key stored).
        state: String,
        /// Milliseconds from `start` to the end.
        ms: f64,
        /// Why it failed, if it did.
        error: Option<WireError>,
    },
    /// The status.
    Status(StatusInfo),
    /// The latest exported roster file's text, if this agent's party exported one.
    Roster { roster: Option<String> },
    /// The latest exported roster file follows, `bytes` long, in data frames
    /// ([`roster_transfer`]).
    RosterFollows { bytes: u64 },
    /// A self-mask share or a survivor announcement is durably stored.
    Stored,
    /// The survivors announced to this node for a round (none yet: `None`).
    Survivors { survivors: Option<Vec<String>> },
    /// What a survivor reveals for a round.
    Revealed(crate::aggregate::lom_dropout::Reveal),
}

/// The plan of an MP-SPDZ session run through the agents: `plan` (every party at its
/// registered endpoint) with each party's endpoint replaced by its line of the ip file the
/// researcher handed out, and the time left until `deadline` as its timeout.
///
/// The lines must be `n` canonical ip-file lines (as [`crate::mpspdz::workdir::ip_file_line`]
/// writes them), so that every party writes the very same ip file; `my_port`, when given, must
/// be this party's line's port (the one its agent reserved).
pub(crate) fn mpspdz_plan(
    plan: NegotiationPlan,
    lines: &[String],
    my_port: Option<u16>,
    deadline: std::time::Instant,
) -> Result<NegotiationPlan> {
    let sid = plan.session_id();
    if lines.len() != plan.n() {
        return Err(Error::peer(format!(
            "the MP-SPDZ ip file of session {sid} has {} lines for {} parties",
            lines.len(),
            plan.n()
        )));
    }
    let mut endpoints = Vec::with_capacity(lines.len());
    for (j, line) in lines.iter().enumerate() {
        let who = &plan.parties()[j].id;
        let bad = |why: String| {
            Error::peer(format!(
                "line {} of the MP-SPDZ ip file of session {sid} (party {j}, `{who}`) is not usable: {why}",
                j + 1
            ))
        };
        let (host, port) = line
            .rsplit_once(':')
            .ok_or_else(|| bad("no `host:port`".into()))?;
        let port: u32 = port
            .parse()
            .map_err(|_| bad(format!("port `{}` is not a number", port.escape_debug())))?;
        let ep = Endpoint::new(host, port).map_err(|e| bad(e.to_string()))?;
        let canonical =
            crate::mpspdz::workdir::ip_file_line(&ep).map_err(|e| bad(e.to_string()))?;
        if &canonical != line {
            return Err(bad(format!(
                "`{}` is not in canonical form (`{canonical}`)",
                line.escape_debug()
            )));
        }
        endpoints.push(ep);
    }
    let me = plan.my_index();
    if let Some(p) = my_port {
        if endpoints[me].port != p {
            return Err(Error::peer(format!(
                "the MP-SPDZ ip file of session {sid} gives this party (`{}`) port {}, but its agent reserved port {p}",
                plan.me().id,
                endpoints[me].port
            )));
        }
    }
    let mut parts = plan.into_parts();
    for (party, ep) in parts.parties.iter_mut().zip(endpoints) {
        party.endpoint = ep;
    }
    parts.timeout = deadline.saturating_duration_since(std::time::Instant::now());
    if parts.timeout.is_zero() {
        return Err(Error::timeout(format!(
            "session {sid}: the deadline expired before MP-SPDZ could start"
        )));
    }
    NegotiationPlan::new(parts)
}

/// An error of `kind` with `message`, as this crate builds it (a storage failure elsewhere is
/// that party's storage failure, [`Error::PeerStorage`]; an internal error elsewhere is a peer
/// failure here).
pub(crate) fn error_of_kind(kind: ErrorKind, message: String) -> Error {
    match kind {
        ErrorKind::InvalidInput => Error::invalid(message),
        ErrorKind::NotFound => Error::not_found(message),
        ErrorKind::Conflict => Error::conflict(message),
        ErrorKind::Timeout => Error::timeout(message),
        ErrorKind::Authentication => Error::authentication(message),
        ErrorKind::Verification => Error::verification(message),
        ErrorKind::ExternalTool => Error::external(message),
        ErrorKind::Storage => Error::peer_storage(message),
        _ => Error::peer(message),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod dropout_tests;
