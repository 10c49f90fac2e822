//! `secagg negotiate`: run this party's side of a key negotiation.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use secagg_core::engine::{ContextScheme, Engine, MpSpdzEngine, NativeEngine};
use secagg_core::home::Home;
use secagg_core::mpspdz::MpSpdzRoot;
use secagg_core::session::{self, NegotiationReport, SessionRequest};
use secagg_core::{PartyId, SessionId};

use crate::output::{self, Format, FormatArg};

/// Engine argument.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum EngineArg {
    /// secagg's own engine: Shamir sharing over pinned mutual TLS 1.3, in-process.
    #[default]
    Native,
    /// MP-SPDZ v0.3.4's shamir-party.x, prepared and supervised by secagg (needs --mpspdz-root).
    #[value(name = "mp-spdz")]
    MpSpdz,
}

impl EngineArg {
    /// The engine's name, for callers that start party processes instead of an engine (the
    /// demo); the engine defines it.
    pub fn name(self) -> &'static str {
        match self {
            EngineArg::Native => NativeEngine::NAME,
            EngineArg::MpSpdz => MpSpdzEngine::NAME,
        }
    }

    /// The engine's default deadline, for callers that start party processes instead of an
    /// engine (the demo); the engine defines it.
    pub fn default_timeout(self) -> Duration {
        match self {
            EngineArg::Native => NativeEngine::DEFAULT_TIMEOUT,
            EngineArg::MpSpdz => MpSpdzEngine::DEFAULT_TIMEOUT,
        }
    }
}

/// What a session produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SchemeArg {
    /// Joye–Libert: a user key per node, the server key at the researcher (Fed-BioMed v4).
    #[default]
    Jl,
    /// LOM (Fed-BioMed v6's default masking): a secret per pair of nodes, agreed by P-256 ECDH
    /// directly between the nodes; the researcher holds none.
    Lom,
}

impl From<SchemeArg> for ContextScheme {
    fn from(s: SchemeArg) -> Self {
        match s {
            SchemeArg::Jl => ContextScheme::Jl,
            SchemeArg::Lom => ContextScheme::Lom,
        }
    }
}

/// Parses `--dropout-threshold`: a number of nodes, at least 2 (the plan checks it against the
/// context's nodes: more than half of them, at most all).
pub fn parse_dropout_threshold(s: &str) -> Result<u32, String> {
    let t: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of nodes"))?;
    if t < 2 {
        return Err(format!(
            "{t} is too few: one node's share alone would rebuild another node's self-mask"
        ));
    }
    Ok(t)
}

/// Parses `--min-nodes`: at least 2 (a LOM context of one node is its vector in the clear).
pub fn parse_min_nodes(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of nodes"))?;
    if n < 2 {
        return Err(format!(
            "{n} is too few: with one node the average is that node's vector"
        ));
    }
    Ok(n)
}

/// Parses `90`, `90s`, `1500ms`, `2m` into a duration (at least 1 ms, at most one day).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (use e.g. 60s, 1500ms, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" | "min" => v * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}` (use ms, s or m)")),
    };
    if !(0.001..=86_400.0).contains(&secs) {
        return Err(format!("`{s}` is out of range (1ms to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Run this party's side of a key negotiation with the registered peers and store the result.
///
/// Every party of the session runs this with the same --session and --parties (researcher first).
/// The researcher obtains the server key, each node its user key; the summary shows a fingerprint
/// of the key, never the key (see `secagg context show --reveal-key`).
#[derive(Debug, Args)]
#[command(
    after_help = "Example (run by every party, with its own --home):\n  secagg negotiate --session 3f0c…-uuid --parties researcher_…,node_…,node_… --timeout 60s"
)]
pub struct NegotiateArgs {
    /// Session id: a uuid that every party of the session uses (Fed-BioMed's `secagg_<uuid>`
    /// names the same session).
    #[arg(long)]
    session: String,
    /// Party ids in session order, comma-separated, the researcher first.
    #[arg(long, value_delimiter = ',', required = true)]
    parties: Vec<String>,
    /// Deadline for the whole session (e.g. 60s, 1500ms, 2m); every wait is bounded by it.
    /// Default: 60s for the native engine, 90s for mp-spdz.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Negotiation engine.
    #[arg(long, value_enum, default_value_t)]
    engine: EngineArg,
    /// What to negotiate: jl (Joye–Libert keys) or lom (pairwise secrets between the nodes, for
    /// `aggregate --scheme lom`; native engine only).
    #[arg(long, value_enum, default_value_t)]
    scheme: SchemeArg,
    /// With --scheme lom: refuse a session of fewer nodes than N, this one included (default 3).
    #[arg(long, value_name = "N", value_parser = parse_min_nodes)]
    min_nodes: Option<usize>,
    /// With --scheme lom: a context whose rounds survive nodes dropping out, as long as T nodes
    /// answer (more than half of the nodes; every party must give the same T).
    #[arg(long, value_name = "T", value_parser = parse_dropout_threshold)]
    dropout_threshold: Option<u32>,
    /// Key bit length: at least 256 (shorter keys would make the aggregation masks guessable)
    /// and below the prime's size; default 2040, Fed-BioMed's, which fits the 2050-bit prime for
    /// up to 975 nodes.
    #[arg(long)]
    key_bits: Option<u32>,
    /// Address to listen on (default: this party's endpoint, or 0.0.0.0:<port> for a host name;
    /// MPSPDZ_IP / MPSPDZ_PORT, when set, override the stored endpoint for this run).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// MP-SPDZ build for --engine mp-spdz (directory with shamir-party.x and compile.py).
    #[arg(long, env = secagg_core::mpspdz::locate::ROOT_ENV, value_name = "DIR")]
    mpspdz_root: Option<PathBuf>,
    /// With --engine mp-spdz: keep the run directory <home>/runs/<session> (secrets are still removed).
    #[arg(long)]
    keep_run_dir: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg negotiate`.
pub fn run(home: &Path, a: NegotiateArgs) -> anyhow::Result<()> {
    let home = Home::new(home);
    // Text becomes typed values here, at the boundary; the core takes only parsed ids.
    let session_id = SessionId::parse(&a.session)?;
    let parties = a
        .parties
        .iter()
        .map(|p| PartyId::parse_custom(p.trim()).map_err(|e| e.context("in --parties")))
        .collect::<Result<Vec<_>, _>>()?;
    let (engine, kept_run_dir): (Box<dyn Engine>, Option<PathBuf>) = match a.engine {
        EngineArg::Native => (Box::new(NativeEngine), None),
        EngineArg::MpSpdz => {
            let root = MpSpdzRoot::locate(a.mpspdz_root.as_deref())?;
            let engine = MpSpdzEngine::new(root, &home).keep_run_dir(a.keep_run_dir);
            let kept = a.keep_run_dir.then(|| engine.run_dir(&session_id));
            (Box::new(engine), kept)
        }
    };
    // MPSPDZ_IP / MPSPDZ_PORT override the stored endpoint for this run (own entry and listen
    // address), as Fed-BioMed reads them at every start.
    let endpoint = crate::commands::identity::effective_endpoint(&home)?;
    let req = SessionRequest {
        session_id,
        parties,
        timeout: a.timeout.unwrap_or_else(|| engine.default_timeout()),
        key_bits: a.key_bits,
        prime: None,
        listen: a.listen,
        endpoint,
        scheme: a.scheme.into(),
        min_nodes: a.min_nodes,
        dropout_threshold: a.dropout_threshold,
    };
    // Warnings (a stranger's connection dropped, a confirmation not delivered) go to stderr as
    // they happen; they never carry a key.
    let mut warn = |w: &str| output::warn(w);
    let r = session::negotiate(&home, &req, engine.as_ref(), &mut warn);
    if let Some(dir) = kept_run_dir {
        output::note(format!(
            "kept the run directory {} (secret files removed)",
            dir.display()
        ));
    }
    let r = r?;
    match a.output.format {
        Format::Json => output::print_json(&r)?,
        Format::Text => print_report(&r),
    }
    Ok(())
}

fn print_report(r: &NegotiationReport) {
    let what = match (r.scheme, r.role) {
        (ContextScheme::Lom, secagg_core::Role::Researcher) => "LOM context",
        (ContextScheme::Lom, secagg_core::Role::Node) => "pairwise secrets",
        (_, secagg_core::Role::Researcher) => "server key",
        (_, secagg_core::Role::Node) => "user key",
    };
    output::note(format!(
        "negotiated the {what} of session {} as party {} of {} ({}) with the {} engine",
        r.session_id,
        r.party_index,
        r.parties.len(),
        r.role,
        r.engine
    ));
    output::print_fields(&[
        ("session", r.session_id.clone()),
        ("role", r.role.to_string()),
        ("parties", r.parties.join(",")),
        ("scheme", r.scheme.to_string()),
        (
            "key",
            format!("{} ({} bits, stored)", r.key_fingerprint, r.key_bits),
        ),
        (
            "time",
            format!(
                "{:.1} ms (connect {:.1}, exchange {:.1}, finish {:.1})",
                r.total_ms, r.connect_ms, r.exchange_ms, r.finish_ms
            ),
        ),
    ]);
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
