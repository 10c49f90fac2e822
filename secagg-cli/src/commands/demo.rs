//! `secagg demo`: a whole federation on this machine, each party its own OS process.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secagg_core::demo::{self, Federation};
use secagg_core::processes::{self, NegotiateCommand, PartyProcesses, Stopper, TerminationSignals};
use secagg_core::SessionId;
use serde::Serialize;

use crate::commands::negotiate::{parse_duration, EngineArg, SchemeArg};
use crate::output::{self, Format, FormatArg};

/// Run a whole negotiation on this machine: one researcher and N nodes, each with its own home and
/// certificate, set up through a signed roster (bundles to the researcher, one roster to every
/// node), each party a separate `secagg negotiate` process over mutual TLS on 127.0.0.1, and the
/// keys checked: sk0 + Σ sk_i = 0. Exits 0 only if verified.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes (the researcher comes on top).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=200))]
    nodes: u16,
    /// Negotiation engine.
    #[arg(long, value_enum, default_value_t)]
    engine: EngineArg,
    /// What to negotiate: jl (Joye–Libert keys, checked by sk0 + Σ sk_i = 0) or lom (a secret
    /// per pair of nodes, checked pair by pair; at least 3 nodes).
    #[arg(long, value_enum, default_value_t)]
    scheme: SchemeArg,
    /// Deadline for the negotiation (default: 60s native, 90s mp-spdz).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// MP-SPDZ build for --engine mp-spdz (directory with shamir-party.x and compile.py).
    #[arg(long, env = secagg_core::mpspdz::locate::ROOT_ENV, value_name = "DIR")]
    mpspdz_root: Option<PathBuf>,
    /// With --engine mp-spdz: keep each party's run directory (secrets removed); implies --keep.
    #[arg(long)]
    keep_run_dir: bool,
    /// Keep the federation's homes and bundles (the directory is printed) instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// After the negotiation, run one round of secure aggregation with the keys: every node
    /// encrypts a random vector, the researcher decrypts the average, and it is checked against
    /// the plain average within the quantisation error.
    #[arg(long)]
    aggregate: bool,
    /// With --aggregate: parameters per node.
    #[arg(long, default_value_t = 1000, requires = "aggregate", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    parameters: u32,
    #[command(flatten)]
    output: FormatArg,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    engine: &'static str,
    scheme: &'static str,
    parties: usize,
    nodes: usize,
    session_id: String,
    verified: bool,
    elapsed_ms: f64,
    setup_ms: f64,
    server_key_bits: u64,
    party_ids: Vec<String>,
    reports: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregation: Option<demo::AggregateCheck>,
}

/// What an interrupted demo must clean up: the demo directory (every party's private key is in
/// it) and the parties' processes. Its mutex is also a gate: the main thread holds it while it
/// writes in the directory, and the interrupt handler takes it and keeps it until the process
/// exits, so the main thread stops at its next step instead of racing the deletion. The parties
/// are stopped through their runner's [`Stopper`], which also refuses any later start.
#[derive(Default)]
struct DemoState {
    tmp: Option<tempfile::TempDir>,
    keep: bool,
    parties: Option<Stopper>,
}

fn lock(state: &Mutex<DemoState>) -> MutexGuard<'_, DemoState> {
    // Poisoned only if a step panicked; the state itself is still right.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for SIGINT or SIGTERM, then stops the parties, deletes the demo directory (unless
/// `--keep`) and exits with 128 + the signal's number, as a shell reports a process the signal
/// killed (130, 143). Without this, Ctrl-C killed the demo on the spot, leaving the directory
/// with every party's private key in the temporary directory.
fn handle_interrupts(signals: TerminationSignals, state: Arc<Mutex<DemoState>>) {
    let Ok(signo) = signals.wait() else { return };
    // Never released: the process ends while holding it.
    let mut st = lock(&state);
    if let Some(parties) = &st.parties {
        // SIGKILL, then reaped; each party's shamir-party.x dies with it (parent-death signal).
        parties.stop();
    }
    let done = match st.tmp.take() {
        Some(tmp) if st.keep => format!("kept the federation in {}", tmp.keep().display()),
        Some(tmp) => {
            let path = tmp.keep();
            match remove_tree(&path) {
                Ok(()) => format!("deleted {}", path.display()),
                Err(e) => format!(
                    "could not delete {} ({e}): delete it by hand, it holds private keys",
                    path.display()
                ),
            }
        }
        None => "nothing left on disk".to_owned(),
    };
    output::write_stderr(format_args!(
        "error: interrupted by {}: stopped the demo's parties; {done}\n",
        processes::signal_name(signo)
    ));
    std::process::exit(128 + signo);
}

/// Deletes `path` and everything in it, retrying briefly: a killed party's `shamir-party.x` may
/// still be writing for the moment it takes the parent-death signal to reach it.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    let mut attempt = 0;
    loop {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt >= 20 => return Err(e),
            Err(_) => {
                attempt += 1;
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs `secagg demo`.
/// Names the `secagg` command for the demo's parties when this process's executable is not it.
pub const SELF_EXE_ENV: &str = "SECAGG_EXE";

/// Commands to look at the kept homes, ready to paste.
fn print_kept_homes(federation: &demo::Federation) {
    for p in &federation.parties {
        output::note(format!(
            "  {}: secagg --home {} context list",
            p.party_id,
            p.home.root().display()
        ));
    }
}

/// Runs `secagg demo`. `home_given`: `--home` or `SECAGG_HOME` was set, which the demo does not
/// use (it makes a home per party in a directory of its own).
pub fn run(home_given: bool, a: DemoArgs) -> anyhow::Result<()> {
    if home_given {
        output::warn("the demo makes its own homes (one per party, in a new directory): --home / SECAGG_HOME is not used");
    }
    // First, before any thread starts: the mask is inherited by the threads started afterwards.
    let signals = TerminationSignals::block()?;
    let state = Arc::new(Mutex::new(DemoState::default()));
    {
        let state = Arc::clone(&state);
        thread::spawn(move || handle_interrupts(signals, state));
    }
    let result = run_demo(a, &state);
    // If an interrupt is being handled, this blocks until its thread ends the process. Parties
    // left running by an error were killed when their runner was dropped.
    let mut st = lock(&state);
    // Deletes the directory (`tempfile`), unless it was kept.
    drop(st.tmp.take());
    result
}

fn run_demo(a: DemoArgs, state: &Mutex<DemoState>) -> anyhow::Result<()> {
    let engine_name = a.engine.name();
    let timeout = a.timeout.unwrap_or(a.engine.default_timeout());
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    let lom = a.scheme == SchemeArg::Lom;
    if lom {
        if let EngineArg::MpSpdz = a.engine {
            return Err(
                secagg_core::Error::invalid("--scheme lom runs on the native engine only").into(),
            );
        }
        if usize::from(a.nodes) < secagg_core::session::DEFAULT_MIN_NODES {
            return Err(secagg_core::Error::invalid(format!(
                "--scheme lom needs at least {} nodes (with 2, each node learns the other's vector from the average)",
                secagg_core::session::DEFAULT_MIN_NODES
            ))
            .into());
        }
        extra.push("--scheme".into());
        extra.push("lom".into());
    }
    if let EngineArg::MpSpdz = a.engine {
        // Fail before creating the federation when MP-SPDZ cannot be found.
        let root = secagg_core::mpspdz::MpSpdzRoot::locate(a.mpspdz_root.as_deref())?;
        root.check_binary()?;
        extra.push("--mpspdz-root".into());
        extra.push(root.path().into());
        if a.keep_run_dir {
            extra.push("--keep-run-dir".into());
        }
    }
    let keep = a.keep || a.keep_run_dir;
    let dir: PathBuf = {
        // Created under the gate, so an interrupt cannot come between creating and recording it.
        let mut st = lock(state);
        let tmp = tempfile::Builder::new()
            .prefix("secagg-demo-")
            .tempdir()
            .map_err(|e| secagg_core::Error::io("while creating the demo directory", e))?;
        let dir = tmp.path().to_owned();
        st.tmp = Some(tmp);
        st.keep = keep;
        dir
    };
    let interactive = std::io::stderr().is_terminal() && a.output.format == Format::Text;
    let started = Instant::now();
    let federation = demo::prepare_gated(&dir.join("federation"), usize::from(a.nodes), state)?;
    let setup = started.elapsed();
    let result = negotiate_all(
        &federation,
        engine_name,
        &extra,
        timeout,
        interactive,
        state,
    );
    let directory = if keep {
        let kept = lock(state).tmp.take().map(tempfile::TempDir::keep);
        let kept = kept.unwrap_or(dir);
        output::note(format!("kept the federation in {}", kept.display()));
        print_kept_homes(&federation);
        Some(kept.display().to_string())
    } else {
        None
    };
    let (session_id, elapsed, reports) = result?;
    let (v, aggregation) = {
        let _gate = lock(state);
        let v = if lom {
            demo::verify_lom(&federation, &session_id)?
        } else {
            demo::verify(&federation, &session_id)?
        };
        let aggregation = match (a.aggregate && v.verified, lom) {
            (false, _) => None,
            (true, false) => Some(demo::aggregate_check(
                &federation,
                &session_id,
                a.parameters as usize,
            )?),
            (true, true) => Some(demo::aggregate_check_lom(
                &federation,
                &session_id,
                a.parameters as usize,
            )?),
        };
        (v, aggregation)
    };
    let summary = DemoSummary {
        engine: engine_name,
        scheme: if lom { "lom" } else { "jl" },
        parties: federation.parties.len(),
        nodes: federation.parties.len() - 1,
        session_id: session_id.to_string(),
        verified: v.verified,
        elapsed_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        setup_ms: (setup.as_secs_f64() * 1e6).round() / 1e3,
        server_key_bits: v.server_key_bits,
        party_ids: federation.party_ids(),
        reports,
        directory,
        aggregation,
    };
    match a.output.format {
        Format::Json => output::print_json(&summary)?,
        Format::Text => output::print_fields(&[
            ("engine", summary.engine.to_owned()),
            (
                "parties",
                format!(
                    "{} (1 researcher, {} nodes), each its own process",
                    summary.parties, summary.nodes
                ),
            ),
            ("session", summary.session_id.clone()),
            (
                "negotiation",
                format!("{:.1} ms (process start to last exit)", summary.elapsed_ms),
            ),
            (
                "setup",
                format!(
                    "{:.1} ms (identities, bundles, registrations, roster export and imports)",
                    summary.setup_ms
                ),
            ),
            if lom {
                (
                    "pairwise secrets",
                    format!(
                        "{} pairs, agreed directly between the nodes",
                        summary.nodes * (summary.nodes - 1) / 2
                    ),
                )
            } else {
                ("server key", format!("{} bits", summary.server_key_bits))
            },
            (
                "verified",
                match (summary.verified, lom) {
                    (true, false) => "yes: sk0 + Σ sk_i = 0".into(),
                    (true, true) => "yes: both nodes of every pair hold the same secret".into(),
                    (false, _) => "NO".into(),
                },
            ),
            (
                "aggregation",
                match &summary.aggregation {
                    None => "not run (--aggregate runs one round)".into(),
                    Some(g) => format!(
                        "{}: {} parameters from {} nodes, {} in {:.0} ms, average {} in {:.0} ms, largest error {:.1e}",
                        if g.verified { "verified" } else { "WRONG" },
                        g.parameters,
                        g.nodes,
                        if lom { "masked" } else { "encrypted" },
                        g.encrypt_ms,
                        if lom { "unmasked" } else { "decrypted" },
                        g.decrypt_ms,
                        g.max_error
                    ),
                },
            ),
        ]),
    }
    if summary.aggregation.as_ref().is_some_and(|g| !g.verified) {
        return Err(secagg_core::Error::verification(
            "the decrypted average differs from the plain average by more than the quantisation error",
        )
        .into());
    }
    if !v.verified {
        return Err(secagg_core::Error::verification(if lom {
            "the nodes' pairwise secrets do not agree"
        } else {
            "the negotiated keys do not sum to zero"
        })
        .into());
    }
    Ok(())
}

fn negotiate_all(
    federation: &Federation,
    engine: &str,
    extra: &[std::ffi::OsString],
    timeout: Duration,
    interactive: bool,
    state: &Mutex<DemoState>,
) -> anyhow::Result<(SessionId, Duration, Vec<serde_json::Value>)> {
    // The parties run `secagg negotiate`: this very binary, or, when the CLI runs inside the
    // Python package's console script (whose executable is the Python interpreter), the script
    // it names in SECAGG_EXE.
    let exe = match std::env::var_os(SELF_EXE_ENV) {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::current_exe()
            .map_err(|e| secagg_core::Error::io("while locating the secagg binary", e))?,
    };
    let session_id = SessionId::generate();
    let party_ids = federation.party_ids();
    let bar = if interactive {
        let b = ProgressBar::new(federation.parties.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} negotiating: {pos}/{len} parties done {elapsed}",
            )
            .unwrap(),
        );
        b.enable_steady_tick(Duration::from_millis(80));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut processes = PartyProcesses::new();
    // Recorded before the first start: an interrupt stops every party started from now on.
    lock(state).parties = Some(processes.stopper());
    let started = Instant::now();
    for p in &federation.parties {
        let cmd = NegotiateCommand::new(&exe, p.home.root(), session_id.to_string(), &party_ids)
            .timeout(timeout)
            .engine(engine)
            .args(extra)
            // Every demo party has its own loopback endpoint: a run-time override meant for this
            // shell's own party would give them all the same one.
            .env_remove(secagg_core::identity::IP_ENV)
            .env_remove(secagg_core::identity::PORT_ENV);
        processes.spawn(&p.party_id, cmd.command())?;
    }
    // The parties enforce the deadline themselves; this margin only guards against a stuck process.
    let exits = processes.wait(timeout + Duration::from_secs(5), |_| bar.inc(1));
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for exit in &exits {
        if exit.success() {
            reports.push(exit.report().unwrap_or(serde_json::Value::Null));
        } else {
            let code = exit
                .code()
                .filter(|_| !exit.killed_at_deadline)
                .map(|c| c.to_string())
                .unwrap_or_else(|| "signal".into());
            failures.push(format!("{} (exit {code}): {}", exit.party, exit.failure()));
        }
    }
    if !failures.is_empty() {
        return Err(secagg_core::Error::peer(format!(
            "{} of {} parties failed:\n  {}",
            failures.len(),
            federation.parties.len(),
            failures.join("\n  ")
        ))
        .into());
    }
    Ok((session_id, elapsed, reports))
}
