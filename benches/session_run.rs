//! One negotiation through warm party agents, as an operator runs it: every node's `secagg serve`
//! (release build) already running, each iteration one `secagg session run --all` process at the
//! researcher, timed from its start to its exit (exit 0 required: every node stored its key). The
//! keys of the last session are checked (`sk0 + Σ sk_i = 0`).
//!
//! Run with `cargo bench -p secagg-cli --bench session_run`; figures in benches/README.md.
//! `SECAGG_BENCH_PARTIES=10,100` chooses the federation sizes; for A/B comparisons in one
//! sitting, `SECAGG_BENCH_BIN` runs another `secagg` binary (agents and `session run`) and
//! `SECAGG_BENCH_AGENT_ARGS` adds arguments to every `secagg serve` (e.g.
//! `--keep-connections 0s`).
//!
//! With `MPSPDZ_ROOT` pointing at an MP-SPDZ v0.3.4 build (`GFP_MOD_SZ=33`), the agents also run
//! MP-SPDZ sessions and each size up to 30 parties is measured with `--engine mp-spdz` too (the
//! program compiled once per size by the warm-up session, as an operator's second session finds it).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use secagg_core::demo;

struct Agent(Child);

/// The `secagg` binary under test (`SECAGG_BENCH_BIN`, default: this build's).
fn secagg() -> Command {
    Command::new(
        std::env::var_os("SECAGG_BENCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_secagg"))),
    )
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The MP-SPDZ build to measure too (`MPSPDZ_ROOT`), if any.
fn mpspdz_root() -> Option<PathBuf> {
    std::env::var_os("MPSPDZ_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Largest federation measured with MP-SPDZ (4 TLS connections per pair of `shamir-party.x`).
const MPSPDZ_MAX_PARTIES: usize = 30;

/// First port of the `shamir-party.x` port ranges: agent k takes `MPSPDZ_PORT_BASE + 4k` to
/// `+ 4k + 3`, the researcher `MPSPDZ_PORT_BASE - 1`.
const MPSPDZ_PORT_BASE: u16 = 21_001;

fn start_agent(home: &Path, k: usize, mpspdz: Option<&Path>) -> (Agent, PathBuf) {
    let log = home.with_extension("agent.log");
    let extra = std::env::var("SECAGG_BENCH_AGENT_ARGS").unwrap_or_default();
    let mut mpspdz_args = Vec::new();
    if let Some(root) = mpspdz {
        let first = MPSPDZ_PORT_BASE + 4 * k as u16;
        mpspdz_args.extend([
            "--mpspdz-ports".to_owned(),
            format!("{first}-{}", first + 3),
            "--mpspdz-root".to_owned(),
            root.display().to_string(),
        ]);
    }
    let child = secagg()
        .arg("--home")
        .arg(home)
        .args(["serve", "--max-sessions", "64"])
        .args(&mpspdz_args)
        .args(extra.split_whitespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn secagg serve");
    (Agent(child), log)
}

fn wait_listening(log: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let mut s = String::new();
        std::fs::File::open(log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        if s.contains("listening:") {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("agent never started: {}", log.display());
}

/// One `session run --all` (with MP-SPDZ when `mpspdz` is given); returns its wall time and the
/// session id it reports.
fn session_run(researcher: &Path, mpspdz: Option<&Path>) -> (Duration, String) {
    let mut engine = Vec::new();
    if let Some(root) = mpspdz {
        engine.extend([
            "--engine".to_owned(),
            "mp-spdz".to_owned(),
            "--mpspdz-root".to_owned(),
            root.display().to_string(),
            "--mpspdz-port".to_owned(),
            (MPSPDZ_PORT_BASE - 1).to_string(),
        ]);
    }
    let started = Instant::now();
    let out = secagg()
        .arg("--home")
        .arg(researcher)
        .args([
            "session",
            "run",
            "--all",
            "--timeout",
            "60s",
            "--format",
            "json",
        ])
        .args(&engine)
        .stdin(Stdio::null())
        .output()
        .expect("spawn secagg session run");
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "session run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    let session = v["session_id"].as_str().expect("a session id").to_owned();
    if std::env::var_os("SECAGG_BENCH_VERBOSE").is_some() {
        // The run as the command itself timed it (from its request to the last node's answer),
        // against the process's wall time (start, store, certificates, exit).
        eprintln!(
            "session run: {:.1} ms inside the command, {:.1} ms wall",
            v["total_ms"].as_f64().unwrap_or(f64::NAN),
            elapsed.as_secs_f64() * 1e3
        );
    }
    (elapsed, session)
}

/// Prints the node agents' connection counters summed (`federation check`): how many
/// node-to-node connections were dialed and how many sessions ran on kept ones.
fn connection_summary(researcher: &Path) {
    let out = secagg()
        .arg("--home")
        .arg(researcher)
        .args(["federation", "check", "--format", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("spawn secagg federation check");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let rows = v["parties"].as_array().cloned().unwrap_or_default();
    let sum = |field: &str| -> u64 {
        rows.iter()
            .filter_map(|r| r["connections"][field].as_u64())
            .sum()
    };
    eprintln!(
        "node agents' connections: {} dialed, {} sessions on kept ones, {} stale, {} not kept, {} TLS handshakes",
        sum("dialed"),
        sum("reused"),
        sum("stale"),
        sum("not_kept"),
        rows.iter()
            .filter_map(|r| Some(r["tls_handshakes"]["full"].as_u64()? + r["tls_handshakes"]["resumed"].as_u64()?))
            .sum::<u64>()
    );
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("session_run");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // SECAGG_BENCH_PARTIES=10,100 (the default) chooses the federation sizes.
    let sizes: Vec<usize> = std::env::var("SECAGG_BENCH_PARTIES")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SECAGG_BENCH_PARTIES: comma-separated party counts")
        })
        .collect();
    for parties in sizes {
        let fed = demo::prepare(&dir.path().join(format!("fed{parties}")), parties - 1).unwrap();
        let mpspdz = mpspdz_root().filter(|_| parties <= MPSPDZ_MAX_PARTIES);
        let started: Vec<(Agent, PathBuf)> = fed.parties[1..]
            .iter()
            .enumerate()
            .map(|(k, p)| start_agent(p.home.root(), k, mpspdz.as_deref()))
            .collect();
        for (_, log) in &started {
            wait_listening(log);
        }
        let researcher = fed.parties[0].home.root().to_owned();
        let engines: Vec<(&str, Option<&Path>)> = match &mpspdz {
            Some(root) => vec![("", None), ("_mp_spdz", Some(root.as_path()))],
            None => vec![("", None)],
        };
        for (suffix, engine) in engines {
            // One session to warm the agents (and the page cache, and MP-SPDZ's program cache)
            // before measuring.
            session_run(&researcher, engine);
            let mut last = String::new();
            g.bench_function(format!("{parties}_parties_warm_agents{suffix}"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let (t, s) = session_run(&researcher, engine);
                            last = s;
                            t
                        })
                        .sum()
                })
            });
            assert!(
                demo::verify(&fed, &last.parse().unwrap()).unwrap().verified,
                "the keys of session {last} do not sum to 0"
            );
        }
        if std::env::var_os("SECAGG_BENCH_VERBOSE").is_some() {
            connection_summary(&researcher);
        }
        drop(started);
    }
    g.finish();
}

criterion_group!(session, benches);
criterion_main!(session);
