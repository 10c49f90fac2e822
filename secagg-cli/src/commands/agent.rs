//! `secagg serve` (the party agent), `secagg session run` (a whole session from the researcher,
//! through the agents) and `secagg federation check` (the preflight check of every agent).

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use secagg_core::agent::{
    self, AgentEvent, AgentMpSpdz, AgentOptions, CheckRow, Nodes, PartyState, RunMpSpdz,
    RunOptions, RunReport, RunRequest, Shutdown,
};
use secagg_core::home::Home;
use secagg_core::mpspdz::MpSpdzRoot;
use secagg_core::processes::{signal_name, TerminationSignals};
use secagg_core::{Error, PartyId, SessionId};

use super::negotiate::{
    parse_dropout_threshold, parse_duration, parse_min_nodes, EngineArg, SchemeArg,
};
use crate::output::{self, Format, FormatArg};

/// How the agent's log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL session=… peer=… event: message`.
    #[default]
    Text,
    /// One JSON object per line (`time`, `level`, `event`, `session`, `peer`, `message`).
    Json,
}

/// Run this party's agent: accept session requests from registered researchers and run this
/// party's side of their sessions, several at once, on this party's endpoint.
///
/// Every connection is pinned mutual TLS (the client must present the certificate registered
/// here for one of this party's peers). Runs in the foreground and logs one line per event on
/// stderr, never a key. SIGTERM or SIGINT stops accepting, lets running sessions finish within
/// --grace (then aborts them) and exits 0; a second signal aborts at once.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (a node):\n  secagg serve --allow-researcher researcher_0b2f… --log-format json"
)]
pub struct ServeArgs {
    /// Accept session requests only from this researcher (repeatable; name every researcher to
    /// accept), whether registered by hand or by a roster. Default: every researcher registered
    /// here by hand, none that a roster registered. Each ID must be a researcher registered here
    /// (the agent refuses to start otherwise, listing the registered ones).
    #[arg(long = "allow-researcher", value_name = "ID")]
    allow_researcher: Vec<PartyId>,
    /// When researcher ID asks to join a session naming parties this node does not know, pull
    /// ID's latest roster from its agent and import it first (the checks and serial rules of
    /// `roster import`; parties its older rosters brought that it no longer lists are removed).
    /// Growing the federation is then registering the new node and `roster export` at the
    /// researcher. ID must be a researcher registered here.
    #[arg(long, value_name = "ID")]
    accept_rosters_from: Option<PartyId>,
    /// Sessions joined or running at once, in all; more are refused (not queued).
    #[arg(long, default_value_t = agent::DEFAULT_MAX_SESSIONS, value_name = "N")]
    max_sessions: usize,
    /// Sessions joined or running at once for one researcher; more are refused.
    #[arg(long, default_value_t = agent::DEFAULT_MAX_SESSIONS_PER_RESEARCHER, value_name = "N")]
    max_sessions_per_researcher: usize,
    /// After SIGTERM/SIGINT: how long running sessions may take to finish before they are
    /// aborted (e.g. 10s, 500ms).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    grace: Duration,
    /// Address to listen on (default: this party's endpoint, or 0.0.0.0:<port> for a host name;
    /// MPSPDZ_IP / MPSPDZ_PORT, when set, override the stored endpoint).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// Log lines as text or JSON.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// Run MP-SPDZ sessions (`session run --engine mp-spdz`), giving each running session's
    /// shamir-party.x one port of this range (e.g. 14100-14131); without it they are refused.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_port_range)]
    mpspdz_ports: Option<RangeInclusive<u16>>,
    /// The MP-SPDZ v0.3.4 build for MP-SPDZ sessions (with --mpspdz-ports).
    #[arg(long, env = secagg_core::mpspdz::locate::ROOT_ENV, value_name = "DIR")]
    mpspdz_root: Option<PathBuf>,
    /// Keep each negotiation connection to another node's agent open this long after a
    /// session that succeeded at both ends, and run later sessions on it instead of a new TLS
    /// handshake (still pinned to the registered certificate; every session exchanges its own
    /// hello). 0s: close every connection after its session.
    #[arg(long, value_parser = parse_keep, default_value = "120s", value_name = "DURATION")]
    keep_connections: Duration,
    /// Refuse LOM sessions (`session run --scheme lom`) of fewer nodes than N, this one
    /// included (default 3): the researcher cannot shrink a context below this node's policy.
    #[arg(long, value_name = "N", value_parser = parse_min_nodes)]
    min_nodes: Option<usize>,
}

/// A duration as `parse_duration` reads it, or zero (`0`, `0s`: keep nothing).
fn parse_keep(s: &str) -> Result<Duration, String> {
    if matches!(s.trim(), "0" | "0s" | "0ms") {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// Parses `FIRST-LAST` (or one port).
fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| secagg_core::party::parse_port(p).map_err(|e| e.to_string());
    let (a, b) = (port(a)?, port(b)?);
    if a > b {
        return Err(format!(
            "the range {a}-{b} is empty: its first port is after its last"
        ));
    }
    Ok(a..=b)
}

fn log_line(format: LogFormat, e: &AgentEvent) -> String {
    match format {
        LogFormat::Json => serde_json::to_string(e).unwrap_or_default(),
        LogFormat::Text => {
            let mut s = format!(
                "{} {:<5}",
                e.time,
                match e.level {
                    agent::Level::Info => "info",
                    agent::Level::Warn => "warn",
                    agent::Level::Error => "error",
                }
            );
            if let Some(sid) = &e.session {
                s.push_str(&format!(" session={sid}"));
            }
            if let Some(p) = &e.peer {
                s.push_str(&format!(" peer={p}"));
            }
            s.push_str(&format!(" {}: {}", e.event, e.message));
            s
        }
    }
}

/// Runs `secagg serve`.
pub fn serve(home: &Path, a: ServeArgs) -> anyhow::Result<()> {
    let home = Home::new(home);
    if a.max_sessions == 0 || a.max_sessions_per_researcher == 0 {
        return Err(Error::invalid(
            "--max-sessions and --max-sessions-per-researcher must be at least 1",
        )
        .into());
    }
    let mpspdz = match (a.mpspdz_ports, a.mpspdz_root.as_deref()) {
        (Some(ports), root) => Some(AgentMpSpdz {
            root: MpSpdzRoot::locate(root).map_err(|e| {
                e.context("--mpspdz-ports needs an MP-SPDZ build (--mpspdz-root or MPSPDZ_ROOT)")
            })?,
            ports,
        }),
        (None, _) => None,
    };
    let endpoint = crate::commands::identity::effective_endpoint(&home)?;
    let format = a.log_format;
    let log: agent::Log = Arc::new(move |e: &AgentEvent| eprintln!("{}", log_line(format, e)));
    // Blocked before any thread starts, so that every thread inherits the mask and the signal
    // thread below is the one that takes them.
    let signals = TerminationSignals::block()?;
    let (handle, shutdown) = Shutdown::new();
    let signal_log = log.clone();
    std::thread::spawn(move || {
        let mut count = 0;
        while let Ok(sig) = signals.wait() {
            count += 1;
            let time = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            signal_log(&AgentEvent {
                time,
                level: agent::Level::Info,
                event: "signal",
                session: None,
                peer: None,
                message: if count == 1 {
                    format!("{} received: stopping", signal_name(sig))
                } else {
                    format!(
                        "{} received again: aborting running sessions",
                        signal_name(sig)
                    )
                },
            });
            handle.stop();
        }
    });
    let opts = AgentOptions {
        listen: a.listen,
        endpoint,
        allow_researchers: a.allow_researcher,
        max_sessions: a.max_sessions,
        max_sessions_per_researcher: a.max_sessions_per_researcher,
        grace: a.grace,
        mpspdz,
        keep_connections: Some(a.keep_connections).filter(|d| !d.is_zero()),
        only_parties: None,
        accept_rosters_from: a.accept_rosters_from,
        min_nodes: a.min_nodes,
    };
    agent::serve(&home, opts, log, shutdown)?;
    Ok(())
}

/// Sessions run from the researcher through the nodes' agents.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Run a whole key negotiation from the researcher: every node's agent (`secagg serve`) is
    /// asked to join, and this party runs its own side.
    Run(RunArgs),
    /// Print a fresh session id (a random uuid), for `negotiate --session` and the like; no
    /// home is needed.
    New(NewArgs),
}

/// Arguments of `session new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Fed-BioMed's form, `secagg_<uuid>` (secagg takes both).
    #[arg(long)]
    fedbiomed: bool,
}

/// Arguments of `session run`.
///
/// Exits 0 only when the server key is stored, which the protocol allows only once every node has
/// durably stored its key. Otherwise it names each party that failed and why.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (the researcher):\n  secagg session run --all\n  secagg session run --parties node_7c1e…,node_e039… --timeout 30s --format json"
)]
pub struct RunArgs {
    /// The session's nodes, comma-separated, in session order (the researcher, this party, may
    /// be listed first or left out).
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    parties: Vec<String>,
    /// Every registered node.
    #[arg(long)]
    all: bool,
    /// Session id (a uuid; Fed-BioMed's `secagg_<uuid>` names the same session); default: a new one.
    #[arg(long)]
    session: Option<SessionId>,
    /// Negotiation engine (mp-spdz: every node's agent must run with --mpspdz-ports).
    #[arg(long, value_enum, default_value_t)]
    engine: EngineArg,
    /// What to negotiate: jl (Joye–Libert keys) or lom (a secret per pair of nodes, agreed
    /// directly between the nodes' agents; for `aggregate --scheme lom`).
    #[arg(long, value_enum, default_value_t)]
    scheme: SchemeArg,
    /// With --scheme lom: refuse to run with fewer nodes than N (default 3); each node's agent
    /// applies its own --min-nodes too.
    #[arg(long, value_name = "N", value_parser = parse_min_nodes)]
    min_nodes: Option<usize>,
    /// With --scheme lom: a context whose rounds survive nodes dropping out. Each round's
    /// self-masks are shared T-of-n between the nodes, and the researcher unmasks the average of
    /// the nodes whose files it holds, as long as at least T nodes answer. T must be more than
    /// half of the nodes (an honest majority), at most all of them.
    #[arg(long, value_name = "T", value_parser = parse_dropout_threshold)]
    dropout_threshold: Option<u32>,
    /// MP-SPDZ v0.3.4 build for this party's side (--engine mp-spdz).
    #[arg(long, env = secagg_core::mpspdz::locate::ROOT_ENV, value_name = "DIR")]
    mpspdz_root: Option<PathBuf>,
    /// Port of this party's shamir-party.x (--engine mp-spdz; default: this party's endpoint
    /// port, which must then be free).
    #[arg(long, value_name = "PORT")]
    mpspdz_port: Option<u16>,
    /// Deadline for the whole session (e.g. 60s, 1500ms, 2m).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Key bit length (default 2040, see `secagg negotiate --help`).
    #[arg(long)]
    key_bits: Option<u32>,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg session …`.
pub fn session(home: &Path, c: SessionCommand) -> anyhow::Result<()> {
    let a = match c {
        SessionCommand::Run(a) => a,
        SessionCommand::New(n) => {
            let id = SessionId::generate();
            if n.fedbiomed {
                println!("secagg_{id}");
            } else {
                println!("{id}");
            }
            return Ok(());
        }
    };
    let home = Home::new(home);
    let opts = RunOptions {
        mpspdz: match a.engine {
            EngineArg::MpSpdz => Some(RunMpSpdz {
                root: MpSpdzRoot::locate(a.mpspdz_root.as_deref())?,
                port: match a.mpspdz_port {
                    Some(p) => Some(secagg_core::party::validate_port(p.into())?),
                    None => None,
                },
            }),
            EngineArg::Native => {
                if a.mpspdz_port.is_some() {
                    return Err(Error::invalid("--mpspdz-port is for --engine mp-spdz")
                        .with_hint("add --engine mp-spdz, or leave --mpspdz-port out")
                        .into());
                }
                None
            }
        },
        // Ctrl-C ends this process; the agents see their control connections close and stop.
        cancel: None,
        wait_for_agents: None,
    };
    let nodes = if a.all {
        Nodes::All
    } else {
        Nodes::Listed(
            a.parties
                .iter()
                .map(|p| PartyId::parse(p.trim()).map_err(|e| e.context("in --parties")))
                .collect::<Result<_, _>>()?,
        )
    };
    let req = RunRequest {
        session_id: a.session.unwrap_or_else(SessionId::generate),
        nodes,
        timeout: a.timeout,
        key_bits: a.key_bits,
        scheme: a.scheme.into(),
        min_nodes: a.min_nodes,
        dropout_threshold: a.dropout_threshold,
    };
    let mut warn = |w: &str| output::warn(w);
    let (report, error) = agent::run_session_with(&home, &req, &opts, &mut warn)?;
    match a.output.format {
        Format::Json => output::print_json(&report)?,
        Format::Text => print_run(&report),
    }
    match error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn print_run(r: &RunReport) {
    let mut t = output::list_table(&["party", "role", "state", "key", "time", "error"]);
    for p in &r.parties {
        t.add_row(vec![
            p.party_id.clone(),
            p.role.to_string(),
            p.state.as_str().to_owned(),
            p.key.clone(),
            p.ms.map(|m| format!("{m:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            p.error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        ]);
    }
    output::print_table(t);
    if r.ok {
        output::note(format!(
            "session {}: server key stored ({}), every node stored its key; {:.1} ms",
            r.session_id,
            r.key_fingerprint.as_deref().unwrap_or(""),
            r.total_ms
        ));
    }
    let stored = r
        .parties
        .iter()
        .filter(|p| matches!(p.state, PartyState::Confirmed | PartyState::Stored))
        .count();
    if !r.ok && stored > 0 {
        output::note(format!(
            "{stored} part{} of session {} kept a key; see `secagg context list` there",
            if stored == 1 { "y" } else { "ies" },
            r.session_id
        ));
    }
}

/// The federation as a whole.
#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Contact every registered party's agent and report, per party: reachable, pinned mutual TLS
    /// both ways, versions, clock skew, days until its certificate expires, roster serial.
    Check(CheckArgs),
}

/// Arguments of `federation check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The parties to check, comma-separated (default: every registered party).
    #[arg(long, value_delimiter = ',', conflicts_with = "all")]
    parties: Vec<PartyId>,
    /// Every registered party (the default).
    #[arg(long)]
    all: bool,
    /// Largest clock difference accepted.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    max_clock_skew: Duration,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg federation …`.
pub fn federation(home: &Path, c: FederationCommand) -> anyhow::Result<()> {
    let FederationCommand::Check(a) = c;
    let home = Home::new(home);
    let only = (!a.parties.is_empty()).then_some(a.parties.as_slice());
    let rows = agent::check_federation(&home, only, a.max_clock_skew)?;
    match a.output.format {
        Format::Json => output::print_json(&serde_json::json!({ "parties": rows }))?,
        Format::Text => print_check(&rows),
    }
    match agent::federation_failure(&rows) {
        None => Ok(()),
        Some(e) => Err(e.into()),
    }
}

fn print_check(rows: &[CheckRow]) {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let mut t = output::list_table(&[
        "party",
        "role",
        "endpoint",
        "reachable",
        "mutual TLS",
        "version",
        "clock skew",
        "cert days",
        "roster",
        "result",
    ]);
    for r in rows {
        t.add_row(vec![
            r.party_id.clone(),
            r.role.to_string(),
            r.endpoint.clone(),
            yes(r.reachable),
            yes(r.mutual_tls),
            match (&r.secagg_version, r.protocol_version) {
                (Some(v), Some(p)) => format!("{v} (protocol {p})"),
                _ => "-".into(),
            },
            r.clock_skew_ms
                .map(|s| format!("{:+.1} s", s as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
            r.certificate_days_left.to_string(),
            r.roster_serial
                .map(|s| format!("#{s}"))
                .unwrap_or_else(|| "-".into()),
            match (&r.problem, &r.message) {
                (None, _) => "ok".into(),
                (Some(p), Some(m)) => format!("{}: {m}", p.as_str()),
                (Some(p), None) => p.as_str().to_owned(),
            },
        ]);
    }
    output::print_table(t);
}
