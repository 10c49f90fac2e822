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

fn start_agent(home: &Path) -> (Agent, PathBuf) {
    let log = home.with_extension("agent.log");
    let extra = std::env::var("SECAGG_BENCH_AGENT_ARGS").unwrap_or_default();
    let child = secagg()
        .arg("--home")
        .arg(home)
        .args(["serve", "--max-sessions", "64"])
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

/// One `session run --all`; returns its wall time and the session id it reports.
fn session_run(researcher: &Path) -> (Duration, String) {
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
        let started: Vec<(Agent, PathBuf)> = fed.parties[1..]
            .iter()
            .map(|p| start_agent(p.home.root()))
            .collect();
        for (_, log) in &started {
            wait_listening(log);
        }
        let researcher = fed.parties[0].home.root().to_owned();
        // One session to warm the agents (and the page cache) before measuring.
        session_run(&researcher);
        let mut last = String::new();
        g.bench_function(format!("{parties}_parties_warm_agents"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (t, s) = session_run(&researcher);
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
        if std::env::var_os("SECAGG_BENCH_VERBOSE").is_some() {
            connection_summary(&researcher);
        }
        drop(started);
    }
    g.finish();
}

criterion_group!(session, benches);
criterion_main!(session);
