//! `secagg demo`: a whole federation on this machine, each party its own OS process.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secagg_core::demo::{self, Federation};
use secagg_core::supervise::{self, TerminationSignals};
use serde::Serialize;

use crate::commands::negotiate::{parse_duration, EngineArg};
use crate::output::{self, Format};

/// Run a whole negotiation on this machine: one researcher and N nodes, each with its own home and
/// certificate, registration bundles exchanged, each party a separate `secagg negotiate` process
/// over mutual TLS on 127.0.0.1, and the keys checked: sk0 + Σ sk_i = 0. Exits 0 only if verified.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of nodes (the researcher comes on top).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=200))]
    nodes: u16,
    /// Negotiation engine.
    #[arg(long, value_enum, default_value_t)]
    engine: EngineArg,
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
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Debug, Serialize)]
struct DemoSummary {
    engine: &'static str,
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
}

/// A party's process: its output drained by two threads (the `Child` is in [`DemoState`]).
struct Running {
    party: String,
    stdout: thread::JoinHandle<String>,
    stderr: thread::JoinHandle<String>,
}

/// What an interrupted demo must clean up: the demo directory (every party's private key is in
/// it) and the parties' processes. Its mutex is also a gate: the main thread holds it while it
/// writes in the directory or spawns or reaps a process, and the interrupt handler takes it and
/// keeps it until the process exits, so the main thread stops at its next step instead of
/// racing the deletion.
#[derive(Default)]
struct DemoState {
    tmp: Option<tempfile::TempDir>,
    keep: bool,
    children: Vec<Child>,
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
    for child in &mut st.children {
        // SIGKILL, then reaped; each party's shamir-party.x dies with it (parent-death signal).
        let _ = child.kill();
        let _ = child.wait();
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
        supervise::signal_name(signo)
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

fn drain(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Runs `secagg demo`.
pub fn run(_home: &Path, a: DemoArgs) -> anyhow::Result<()> {
    // First, before any thread starts: the mask is inherited by the threads started afterwards.
    let signals = TerminationSignals::block()?;
    let state = Arc::new(Mutex::new(DemoState::default()));
    {
        let state = Arc::clone(&state);
        thread::spawn(move || handle_interrupts(signals, state));
    }
    let result = run_demo(a, &state);
    // If an interrupt is being handled, this blocks until its thread ends the process.
    let mut st = lock(&state);
    for child in &mut st.children {
        // Parties left running by an error (e.g. a later party failed to start).
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    // Deletes the directory (`tempfile`), unless it was kept.
    drop(st.tmp.take());
    result
}

fn run_demo(a: DemoArgs, state: &Mutex<DemoState>) -> anyhow::Result<()> {
    let engine_name = a.engine.name();
    let timeout = a.timeout.unwrap_or(a.engine.default_timeout());
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
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
            .context("while creating the demo directory")?;
        let dir = tmp.path().to_owned();
        st.tmp = Some(tmp);
        st.keep = keep;
        dir
    };
    let interactive = std::io::stderr().is_terminal() && a.format == Format::Text;
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
        Some(kept.display().to_string())
    } else {
        None
    };
    let (session_id, elapsed, reports) = result?;
    let v = {
        let _gate = lock(state);
        demo::verify(&federation, &session_id)?
    };
    let summary = DemoSummary {
        engine: engine_name,
        parties: federation.parties.len(),
        nodes: federation.parties.len() - 1,
        session_id,
        verified: v.verified,
        elapsed_ms: (elapsed.as_secs_f64() * 1e6).round() / 1e3,
        setup_ms: (setup.as_secs_f64() * 1e6).round() / 1e3,
        server_key_bits: v.server_key_bits,
        party_ids: federation.party_ids(),
        reports,
        directory,
    };
    match a.format {
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
                    "{:.1} ms (identities, bundles, registrations)",
                    summary.setup_ms
                ),
            ),
            ("server key", format!("{} bits", summary.server_key_bits)),
            (
                "verified",
                if summary.verified {
                    "yes: sk0 + Σ sk_i = 0".into()
                } else {
                    "NO".into()
                },
            ),
        ]),
    }
    if !v.verified {
        return Err(
            secagg_core::Error::verification("the negotiated keys do not sum to zero").into(),
        );
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
) -> anyhow::Result<(String, Duration, Vec<serde_json::Value>)> {
    let exe = std::env::current_exe().context("while locating the secagg binary")?;
    let session_id = uuid_v4();
    let parties = federation.party_ids().join(",");
    let timeout_arg = format!("{}ms", timeout.as_millis());
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
    let started = Instant::now();
    let mut running = Vec::new();
    for p in &federation.parties {
        // Spawned and recorded under the gate: an interrupt kills every party it started.
        let mut st = lock(state);
        let mut child = Command::new(&exe)
            .arg("--home")
            .arg(p.home.root())
            .args([
                "negotiate",
                "--session",
                &session_id,
                "--parties",
                &parties,
                "--timeout",
                &timeout_arg,
                "--engine",
                engine,
                "--format",
                "json",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("while starting the process of {}", p.party_id))?;
        let stdout = drain(child.stdout.take().expect("piped"));
        let stderr = drain(child.stderr.take().expect("piped"));
        st.children.push(child);
        running.push(Running {
            party: p.party_id.clone(),
            stdout,
            stderr,
        });
    }
    // The parties enforce the deadline themselves; this margin only guards against a stuck process.
    let hard_deadline = started + timeout + Duration::from_secs(5);
    let mut statuses = vec![None; running.len()];
    while statuses.iter().any(Option::is_none) {
        let mut st = lock(state);
        for (i, child) in st.children.iter_mut().enumerate() {
            if statuses[i].is_none() {
                if let Some(status) = child.try_wait()? {
                    statuses[i] = Some(status);
                    bar.inc(1);
                }
            }
        }
        if Instant::now() > hard_deadline {
            for (i, child) in st.children.iter_mut().enumerate() {
                if statuses[i].is_none() {
                    let _ = child.kill();
                    statuses[i] = child.wait().ok();
                }
            }
            break;
        }
        drop(st);
        thread::sleep(Duration::from_millis(1));
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (r, st) in running.into_iter().zip(statuses) {
        let out = r.stdout.join().unwrap_or_default();
        let err = r.stderr.join().unwrap_or_default();
        match st {
            Some(s) if s.success() => {
                reports.push(serde_json::from_str(&out).unwrap_or(serde_json::Value::Null))
            }
            other => {
                let first = err
                    .lines()
                    .find(|l| l.starts_with("error: "))
                    .unwrap_or("error: killed or crashed");
                let code = other
                    .and_then(|s| s.code())
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "signal".into());
                failures.push(format!(
                    "{} (exit {code}): {}",
                    r.party,
                    first.trim_start_matches("error: ")
                ));
            }
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

fn uuid_v4() -> String {
    secagg_core::session::new_session_id()
}
