//! Party agents (`secagg serve`) as real processes on loopback, each node in its own home, and
//! what the agent tests read back: the stored contexts, `sk0 + Σ sk_i = 0`, the agents'
//! connection counters. Shared by `e2e_agent` and `e2e_agent_faults`.

use std::io::Read;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use secagg_core::demo::{self, Federation};

use super::{secagg, secagg_command, secagg_env, Run};

/// `secagg session run --scheme lom --session SESSION --format json --timeout 60s` and `extra`
/// (`--all` or `--parties …`, …) at the researcher.
pub fn lom_session_run(fed: &Federation, session: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "session",
        "run",
        "--scheme",
        "lom",
        "--session",
        session,
        "--format",
        "json",
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    secagg(researcher(fed), &args)
}

/// `secagg aggregate decrypt --scheme lom` at the researcher of `files` for `round`, with
/// `extra` arguments and `env`.
pub fn lom_decrypt(
    fed: &Federation,
    session: &str,
    round: u64,
    files: &[&Path],
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let round = round.to_string();
    let mut args = vec![
        "aggregate",
        "decrypt",
        "--scheme",
        "lom",
        "--session",
        session,
        "--round",
        &round,
    ];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend_from_slice(extra);
    secagg_env(researcher(fed), &args, env)
}

/// `secagg aggregate encrypt --scheme lom` at `home` of the parameters in file `params` for
/// `round`, writing `out`, with `extra` arguments and `env`.
pub fn lom_encrypt(
    home: &Path,
    session: &str,
    round: u64,
    (params, out): (&Path, &Path),
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let round = round.to_string();
    let mut args = vec![
        "aggregate",
        "encrypt",
        "--scheme",
        "lom",
        "--session",
        session,
        "--round",
        &round,
        "--params",
        params.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    secagg_env(home, &args, env)
}

/// A running `secagg serve`, its stderr (the log) in a file.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
    pub home: PathBuf,
}

impl Agent {
    pub fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Agent {
        let log = home.with_extension(format!("agent-{}.log", rand_suffix()));
        let file = std::fs::File::create(&log).unwrap();
        let mut c = secagg_command();
        c.arg("--home").arg(home).arg("serve").args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn secagg serve");
        let agent = Agent {
            child,
            log,
            home: home.to_owned(),
        };
        agent.wait_for("listening:", Duration::from_secs(20));
        agent
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.log)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    pub fn wait_for(&self, needle: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "agent of {} never logged {needle:?}:\n{}",
            self.home.display(),
            self.log_text()
        );
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for the agent to exit (at most `limit`) and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        self.wait_status(limit).code()
    }

    /// Waits for the agent to exit (at most `limit`) and returns how it ended (with the signal
    /// that killed it, if one did).
    pub fn wait_status(&mut self, limit: Duration) -> ExitStatus {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("agent of {} did not exit in {limit:?}", self.home.display());
    }

    /// Stops the agent at once (SIGKILL, if it still runs) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }

    /// The log line that says how this agent's side of `session` ended (`succeeded`, `failed`,
    /// or `cancelled` before it started), if it has ended.
    pub fn session_end(&self, session: &str) -> Option<String> {
        let tag = format!(" session={session} ");
        self.log_text()
            .lines()
            .find(|l| {
                l.contains(&tag)
                    && (l.contains(" succeeded: ")
                        || l.contains(" failed: ")
                        || l.contains(" cancelled: session not started"))
            })
            .map(str::to_owned)
    }

    /// Waits until this agent's side of `session` ended (at the latest `until`) and returns the
    /// log line saying how.
    pub fn wait_session_end(&self, session: &str, until: Instant) -> String {
        loop {
            if let Some(line) = self.session_end(session) {
                return line;
            }
            if Instant::now() > until {
                panic!(
                    "the agent of {} did not end session {session} in time:\n{}",
                    self.home.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    secagg_core::session::new_session_id()[..8].to_owned()
}

pub fn federation(nodes: usize) -> (tempfile::TempDir, Federation) {
    let dir = tempfile::tempdir().unwrap();
    let f = demo::prepare(&dir.path().join("fed"), nodes).unwrap();
    (dir, f)
}

pub fn agents(fed: &Federation, args: &[&str]) -> Vec<Agent> {
    fed.parties[1..]
        .iter()
        .map(|p| Agent::start(p.home.root(), args, &[]))
        .collect()
}

pub fn researcher(fed: &Federation) -> &Path {
    fed.parties[0].home.root()
}

/// `secagg session run --all --format json --timeout 30s` at the researcher.
pub fn session_run_all(fed: &Federation) -> super::Run {
    secagg(
        researcher(fed),
        &[
            "session",
            "run",
            "--all",
            "--format",
            "json",
            "--timeout",
            "30s",
        ],
    )
}

pub fn contexts(home: &Path) -> Vec<serde_json::Value> {
    secagg(home, &["context", "list", "--format", "json"])
        .ok()
        .json()["contexts"]
        .as_array()
        .unwrap()
        .clone()
}

pub fn context_of<'a>(
    all: &'a [serde_json::Value],
    session: &str,
) -> Option<&'a serde_json::Value> {
    all.iter().find(|c| c["session_id"] == session)
}

/// The stored keys of `session` cancel (`sk0 + Σ sk_i = 0`), every node's confirmed.
pub fn assert_verified(fed: &Federation, session: &str) {
    let v = demo::verify(fed, &session.parse().unwrap()).unwrap();
    assert!(v.verified, "sk0 + Σ sk_i != 0 for {session}");
    for p in &fed.parties {
        let all = contexts(p.home.root());
        let c = context_of(&all, session).unwrap();
        assert_eq!(c["state"], "confirmed", "{}: {c}", p.party_id);
    }
}

/// No party holds a server key for `session` (the invariant's side that a failure may not break).
pub fn assert_no_server_key(fed: &Federation, session: &str) {
    assert!(
        context_of(&contexts(researcher(fed)), session).is_none(),
        "the researcher stored a server key for failed session {session}"
    );
}
/// No party of the federation stored anything for `session`: no partial key anywhere.
pub fn assert_nobody_stored(fed: &Federation, session: &str) {
    for p in &fed.parties {
        assert!(
            context_of(&contexts(p.home.root()), session).is_none(),
            "{} kept a key of session {session}",
            p.party_id
        );
    }
}

/// Every node agent's connection counters (`federation check`), by node index (1-based).
pub fn connection_counts(fed: &Federation) -> Vec<serde_json::Value> {
    let check = secagg(
        researcher(fed),
        &["federation", "check", "--format", "json"],
    );
    let rows = check.json()["parties"].as_array().unwrap().clone();
    fed.parties[1..]
        .iter()
        .map(|p| {
            let row = rows
                .iter()
                .find(|r| r["party_id"] == p.party_id.as_str())
                .unwrap_or_else(|| panic!("no check row for {}", p.party_id));
            row["connections"].clone()
        })
        .collect()
}

pub fn total(counts: &[serde_json::Value], field: &str) -> u64 {
    counts
        .iter()
        .map(|c| {
            c[field]
                .as_u64()
                .unwrap_or_else(|| panic!("no {field} in {c}"))
        })
        .sum()
}

/// `secagg serve` arguments that let an agent run MP-SPDZ sessions: its `shamir-party.x` on a
/// port of `ports`, the build at `root`.
pub fn mpspdz_serve_args(ports: RangeInclusive<u16>, root: &Path) -> Vec<String> {
    vec![
        "--mpspdz-ports".into(),
        format!("{}-{}", ports.start(), ports.end()),
        "--mpspdz-root".into(),
        root.display().to_string(),
    ]
}

/// `session run` arguments that choose MP-SPDZ: the build at `root`, the researcher's
/// `shamir-party.x` on `port`.
pub fn mpspdz_engine_args(root: &Path, port: u16) -> Vec<String> {
    vec![
        "--engine".into(),
        "mp-spdz".into(),
        "--mpspdz-root".into(),
        root.display().to_string(),
        "--mpspdz-port".into(),
        port.to_string(),
    ]
}

/// One LOM round over the context `session`, every step a fresh process: each node masks its own
/// parameters (node `i`: `[i, −i/2, 0.25 + i/10]`, weight `i + 1`) for `round`, the researcher
/// unmasks; asserts that the result is the weighted average of the nodes' parameters (within
/// the quantisation's precision) and returns the masked files.
pub fn assert_lom_round(fed: &Federation, session: &str, round: u64) -> Vec<PathBuf> {
    let dir = fed.dir.join(format!("lom-{session}-{round}"));
    std::fs::create_dir_all(&dir).unwrap();
    let nodes = fed.parties.len() - 1;
    let params = |i: usize| vec![i as f64 * 0.5, -(i as f64) / 4.0, 0.25 + i as f64 / 10.0];
    let mut files = Vec::new();
    let (mut sums, mut total) = (vec![0.0f64; 3], 0.0f64);
    for i in 1..=nodes {
        let p = dir.join(format!("params-{i}.json"));
        std::fs::write(&p, serde_json::to_string(&params(i)).unwrap()).unwrap();
        let out = dir.join(format!("masked-{i}.json"));
        let weight = (i + 1).to_string();
        lom_encrypt(
            fed.parties[i].home.root(),
            session,
            round,
            (&p, &out),
            &["--weight", &weight],
            &[],
        )
        .ok();
        for (s, v) in sums.iter_mut().zip(params(i)) {
            *s += v * (i + 1) as f64;
        }
        total += (i + 1) as f64;
        files.push(out);
    }
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let avg = lom_decrypt(fed, session, round, &paths, &["--format", "json"], &[])
        .ok()
        .json();
    let got: Vec<f64> = avg["average"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{avg}");
    for (g, s) in got.iter().zip(&sums) {
        let want = s / total;
        // Quantisation to 2·3/8191 per value, averaged: well within 1e-3.
        assert!(
            (g - want).abs() < 1e-3,
            "average {got:?}, expected {want} ({avg})"
        );
    }
    assert_eq!(avg["total_weight"], total as u64);
    assert_eq!(avg["nodes"], nodes);
    files
}
