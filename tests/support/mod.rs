//! The one helper module of every test that drives the real `secagg` binary: the CLI tests in
//! `secagg-cli/tests/` (`#[path = "../../tests/support/mod.rs"] mod support;`) and the
//! end-to-end tests here. It runs single commands against real homes ([`secagg`], [`Run`]) and
//! whole sessions of `secagg negotiate` processes through the core's runner ([`negotiate`],
//! [`run_parties`]), the same code `secagg demo` uses.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use secagg_core::contexts::ContextRecord;
use secagg_core::demo::Federation;
use secagg_core::error::ErrorReport;

pub mod agents;
pub mod small_disk;
pub mod wg_lab;
use secagg_core::processes::{self, NegotiateCommand, PartyExit};
use secagg_core::ErrorKind;

/// Environment variables of the caller that would change what `secagg` does (a test that wants
/// an MP-SPDZ root sets `MPSPDZ_ROOT` or `--mpspdz-root` itself).
const SCRUBBED_ENV: [&str; 4] = ["SECAGG_HOME", "MPSPDZ_ROOT", "MPSPDZ_IP", "MPSPDZ_PORT"];

/// The `secagg` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_secagg")
}

/// A free TCP port on loopback (bound, then released), for a party's endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `count` consecutive TCP ports free now on every address, below the kernel's ephemeral range
/// (32768 and up by default), so that no outgoing connection (MP-SPDZ makes many) takes one
/// before the test's process binds it. Each call probes on from where the last one stopped,
/// starting at a place derived from the process id, so parallel tests and test binaries rarely
/// probe the same ports.
pub fn free_ports_below_ephemeral(count: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 600) as u16 * 20,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let first = NEXT.fetch_add(count, Ordering::SeqCst);
        assert!(first < 32_000, "no free ports left below 32000");
        if (0..count).all(|k| std::net::TcpListener::bind(("0.0.0.0", first + k)).is_ok()) {
            return first;
        }
    }
}

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The `secagg` binary under test, with none of the caller's SECAGG_HOME / MPSPDZ_* variables.
pub fn secagg_command() -> Command {
    let mut c = Command::new(bin());
    for k in SCRUBBED_ENV {
        c.env_remove(k);
    }
    c
}

/// Output of one run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Asserts exit `code` and an `error: …` on stderr containing `needle`: for failures whose
    /// text is the point (a hint, a named party or file).
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        self.fails_as(
            ErrorKind::from_exit_code(code).unwrap_or_else(|| panic!("{code} is no error kind")),
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\nstderr: {}",
            self.stderr
        );
        self
    }
    /// Asserts that the command failed as `kind` (its exit code) with an `error: …` on stderr.
    pub fn fails_as(&self, kind: ErrorKind) -> &Self {
        assert_eq!(
            self.code,
            kind.exit_code(),
            "expected {kind:?}\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: ") || self.error().is_some(),
            "stderr: {}",
            self.stderr
        );
        self
    }
    /// The error report on stderr of a command run with `--error-format json`.
    pub fn error(&self) -> Option<ErrorReport> {
        ErrorReport::find_in(&self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `secagg --home <home> <args>` with a clean environment (no SECAGG_HOME/MPSPDZ_*).
pub fn secagg(home: &Path, args: &[&str]) -> Run {
    secagg_env(home, args, &[])
}

/// Runs `secagg` with extra environment variables.
pub fn secagg_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = secagg_command();
    c.arg("--home").arg(home).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    finish(c.output().expect("run secagg"))
}

/// Creates a home with a node identity (`node_self`) and returns it.
pub fn node_home(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    secagg(
        &home,
        &[
            "init",
            "--role",
            "node",
            "--id",
            &format!("node_{name}"),
            "--ip",
            "10.221.0.9",
        ],
    )
    .ok();
    home
}

/// The registered peers as JSON (`certificate list --format json`), for before/after comparisons.
pub fn peers_json(home: &Path) -> serde_json::Value {
    secagg(home, &["certificate", "list", "--format", "json"])
        .ok()
        .json()
}

/// The fixture manifest.
pub fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).unwrap();
    serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
}

/// Manifest entry of `file` (e.g. `certs/ecdsa_p256.pem`).
pub fn fixture(file: &str) -> (PathBuf, Option<String>, Option<String>) {
    let m = manifest();
    let e = m
        .iter()
        .find(|e| e["file"] == file)
        .unwrap_or_else(|| panic!("{file} not in manifest"));
    (
        fixtures().join(file),
        e["party_id"].as_str().map(str::to_owned),
        e["sha256_fingerprint"].as_str().map(str::to_owned),
    )
}

/// `secagg --home HOME negotiate --session SESSION --parties PARTIES --format json --error-format json` of the binary
/// under test, with a clean environment; add `.timeout(…)`, `.engine(…)`, `.arg(…)` as needed.
pub fn negotiate(home: &Path, session: &str, parties: &[String]) -> NegotiateCommand {
    SCRUBBED_ENV.iter().fold(
        NegotiateCommand::new(bin(), home, session, parties),
        |c, k| c.env_remove(k),
    )
}

/// Runs one party's command (see [`negotiate`]) to its end, for tests of a single party: its
/// own `--timeout` bounds it.
pub fn run_one(command: &NegotiateCommand) -> Run {
    finish(command.command().output().expect("run secagg negotiate"))
}

/// A duration as the tests write it (`"20s"`, `"1500ms"`).
pub fn duration(s: &str) -> Duration {
    match s.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().unwrap()),
        None => Duration::from_secs(s.strip_suffix('s').unwrap_or(s).parse().unwrap()),
    }
}

/// Runs one party per command (labelled by its home's directory name) and waits for all of them,
/// killing those still running after `deadline`.
pub fn run_parties(commands: &[NegotiateCommand], deadline: Duration) -> Vec<PartyExit> {
    let labels: Vec<String> = commands
        .iter()
        .map(|c| c.home().display().to_string())
        .collect();
    processes::run_parties(labels.iter().map(String::as_str).zip(commands), deadline)
        .expect("start the parties")
}

/// What each party's store holds for `session` (index = party index: the researcher's server
/// key first), read from the stores directly; `None` where there is no key.
pub fn stored(fed: &Federation, session: &str) -> Vec<Option<ContextRecord>> {
    fed.parties
        .iter()
        .map(
            |p| match secagg_core::session::get_context(&p.home, &session.parse().unwrap()) {
                Ok(c) => Some(c),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => panic!("reading the store of {}: {e}", p.party_id),
            },
        )
        .collect()
}

/// The kind a party's failure reported on stderr (`--error-format json`), for assertions.
pub fn error_kind(exit: &PartyExit) -> Option<ErrorKind> {
    exit.error().map(|r| r.kind)
}

/// Starts one party's `secagg negotiate … --format json` (see [`negotiate`]), plus `extra`, for
/// tests that need the process itself (its pid, to kill it); `parties` comma-separated.
pub fn spawn_negotiate(
    home: &Path,
    session: &str,
    parties: &str,
    timeout: &str,
    extra: &[&std::ffi::OsStr],
) -> std::process::Child {
    let ids: Vec<String> = parties.split(',').map(str::to_owned).collect();
    negotiate(home, session, &ids)
        .timeout(duration(timeout))
        .args(extra)
        .command()
        .spawn()
        .expect("spawn secagg negotiate")
}

/// How one process started by [`spawn_negotiate`] ended.
pub struct Exit {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// When it had ended, counted from `started` (an upper bound: processes are reaped in order).
    pub after: Duration,
}

impl Exit {
    /// The kind its failure reported on stderr.
    pub fn kind(&self) -> Option<ErrorKind> {
        ErrorReport::find_in(&self.stderr).map(|r| r.kind)
    }
}

/// Waits for every child, in order.
pub fn wait_all(children: Vec<std::process::Child>, started: std::time::Instant) -> Vec<Exit> {
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("wait");
            Exit {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                after: started.elapsed(),
            }
        })
        .collect()
}

/// A fresh MP-SPDZ root under `dir` holding the test doubles of `tests/support/mpspdz-double/`
/// (copied: the engine writes nothing there, but a test must not depend on the checkout's
/// permissions or leave anything in it).
pub fn mpspdz_double_root(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/mpspdz-double");
    let root = dir.join("mpspdz-double");
    std::fs::create_dir_all(root.join("Compiler")).unwrap();
    for f in ["shamir-party.x", "compile.py", "Compiler/README.md"] {
        std::fs::copy(src.join(f), root.join(f)).unwrap();
    }
    for f in ["shamir-party.x", "compile.py"] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

/// Live processes whose command line or working directory mentions `needle` (e.g. the
/// federation directory).
pub fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if (cmd.contains(needle) || cwd.contains(needle)) && processes::process_alive(pid) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Files anywhere under the federation's homes that hold secrets MP-SPDZ or secagg's run left.
pub fn secret_leftovers(fed: &Federation) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !p.is_symlink() {
                walk(&p, out);
            } else if name.starts_with("Memory-")
                || name.starts_with("Input-P")
                || name.starts_with("Output-P")
                || (name.ends_with(".key") && name.starts_with('P'))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in &fed.parties {
        walk(&p.home.root().join("runs"), &mut out);
    }
    out
}

/// The real MP-SPDZ build of `MPSPDZ_ROOT`, or `None` after printing why a test is skipped.
pub fn real_mpspdz_root() -> Option<PathBuf> {
    let Some(root) = std::env::var_os("MPSPDZ_ROOT").filter(|v| !v.is_empty()) else {
        eprintln!("skipped: MPSPDZ_ROOT is not set (point it at an MP-SPDZ v0.3.4 build made with MOD = -DGFP_MOD_SZ=33)");
        return None;
    };
    let root = PathBuf::from(root);
    if !root.join("shamir-party.x").is_file() || !root.join("compile.py").is_file() {
        eprintln!(
            "skipped: MPSPDZ_ROOT={} has no shamir-party.x or compile.py",
            root.display()
        );
        return None;
    }
    Some(root)
}

/// The key stored in `home` for `session`, as `secagg context show --reveal-key` prints it.
pub fn revealed_key(home: &Path, session: &str) -> String {
    let shown = secagg(
        home,
        &[
            "context",
            "show",
            session,
            "--reveal-key",
            "--format",
            "json",
        ],
    );
    shown.ok();
    shown.json()["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {}", shown.stdout))
        .to_owned()
}

/// Writes the registration bundle of the party in `home` to `out`, replacing it if it exists
/// (`secagg certificate registration-instructions --format json --force -o OUT`), which must
/// succeed.
pub fn export_bundle(home: &Path, out: &Path) {
    secagg(
        home,
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
            "--force",
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .ok();
}

/// A `secagg demo --nodes N --keep` federation (negotiated once): its homes, researcher first,
/// as the demo prints them, and the kept directory to remove afterwards.
pub fn kept_demo(nodes: usize) -> (Vec<String>, PathBuf) {
    let out = secagg_command()
        .args(["demo", "--nodes", &nodes.to_string(), "--keep"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let homes: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.split_once(": secagg --home ").map(|(_, r)| r))
        .map(|r| r.trim_end_matches(" context list").to_owned())
        .collect();
    assert_eq!(homes.len(), nodes + 1, "{stderr}");
    let root = Path::new(&homes[0])
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    (homes, root)
}
