//! Parties as OS processes: the one place that builds the `secagg negotiate` command line of a
//! party ([`NegotiateCommand`]) and runs a session's parties side by side ([`PartyProcesses`]).
//!
//! `secagg demo`, the end-to-end tests and the processes benchmark all start one `secagg
//! negotiate` per party and wait for them; they share this instead of each building the argv and
//! a wait loop of its own.
//!
//! A party that fails says why as data: started with `--error-format json` (the default here), a
//! failing `secagg` writes one [`ErrorReport`] JSON line on stderr, which [`PartyExit::error`]
//! reads back; nobody re-parses an `error:` line written for people.
//!
//! Unlike [`super::Supervised`] (one external program, output to a log file, its
//! own process group), these children are `secagg` processes whose stdout (the JSON report) and
//! stderr are captured in memory by a thread each, so a chatty party cannot block on a full pipe.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorReport, Result};

/// How often the runner looks for exited parties. Short, because the demo and the benchmark time
/// a negotiation from the first start to the last exit.
const POLL: Duration = Duration::from_millis(1);

/// The command line of one party's `secagg negotiate`:
/// `[WRAPPER…] SECAGG --home HOME negotiate --session S --parties P [--timeout T] [--engine E]
/// [--format json --error-format json] [EXTRA…]`.
#[derive(Debug, Clone)]
pub struct NegotiateCommand {
    program: PathBuf,
    wrapper: Vec<OsString>,
    home: PathBuf,
    session: String,
    parties: String,
    timeout: Option<Duration>,
    engine: Option<String>,
    json: bool,
    extra: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
}

impl NegotiateCommand {
    /// `program` (the `secagg` binary) negotiating session `session` among `parties` (party ids,
    /// researcher first) from `home`, with `--format json` (see [`Self::json`]).
    pub fn new(
        program: impl Into<PathBuf>,
        home: impl Into<PathBuf>,
        session: impl Into<String>,
        parties: &[impl AsRef<str>],
    ) -> Self {
        NegotiateCommand {
            program: program.into(),
            wrapper: Vec::new(),
            home: home.into(),
            session: session.into(),
            parties: parties
                .iter()
                .map(AsRef::as_ref)
                .collect::<Vec<_>>()
                .join(","),
            timeout: None,
            engine: None,
            json: true,
            extra: Vec::new(),
            env: Vec::new(),
            dir: None,
        }
    }

    /// `--timeout`, written in milliseconds (the party's default when not set).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// `--engine NAME` (the party's default when not set).
    pub fn engine(mut self, name: impl Into<String>) -> Self {
        self.engine = Some(name.into());
        self
    }

    /// Whether to pass `--format json --error-format json` (on by default): the report on stdout
    /// and, on failure, an [`ErrorReport`] on stderr are then machine-readable. Off gives the
    /// human text.
    pub fn json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }

    /// Appends `arg` after the standard options (e.g. `--mpspdz-root DIR`).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.extra.push(arg.as_ref().to_owned());
        self
    }

    /// Appends every one of `args` after the standard options.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.extra
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Runs the command through `wrapper` (e.g. `ip netns exec NS`), which must exec its last
    /// argument with the rest.
    pub fn wrapped_in<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, wrapper: I) -> Self {
        self.wrapper = wrapper.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self
    }

    /// Sets environment variable `key` for the party.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes environment variable `key` for the party.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Runs the party in `dir` (a relative home is then relative to it).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The home this party runs from.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The arguments after the `secagg` program, from `--home` on.
    pub fn argv(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["--home".into(), self.home.clone().into_os_string()];
        v.extend(
            [
                "negotiate",
                "--session",
                &self.session,
                "--parties",
                &self.parties,
            ]
            .map(OsString::from),
        );
        if let Some(t) = self.timeout {
            v.push("--timeout".into());
            v.push(format!("{}ms", t.as_millis().max(1)).into());
        }
        if let Some(e) = &self.engine {
            v.push("--engine".into());
            v.push(e.into());
        }
        if self.json {
            v.extend(["--format", "json", "--error-format", "json"].map(OsString::from));
        }
        v.extend(self.extra.iter().cloned());
        v
    }

    /// The process to start: stdin from `/dev/null`, stdout and stderr piped (the runner drains
    /// them).
    pub fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        c.args(self.argv());
        if let Some(dir) = &self.dir {
            c.current_dir(dir);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }
}

/// How one party's process ended.
#[derive(Debug, Clone)]
pub struct PartyExit {
    /// The label it was started with (its party id, normally).
    pub party: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Whether the runner killed it because the run's deadline expired.
    pub killed_at_deadline: bool,
    /// When its exit was seen, counted from the first start.
    pub after: Duration,
    /// Everything it wrote on stdout (with `--format json`, its report).
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl PartyExit {
    /// Its exit code; `None` when a signal killed it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Whether it exited 0 by itself.
    pub fn success(&self) -> bool {
        self.status.success() && !self.killed_at_deadline
    }

    /// The failure it reported (the [`ErrorReport`] line a `secagg … --error-format json` writes
    /// on stderr), if any.
    pub fn error(&self) -> Option<ErrorReport> {
        ErrorReport::find_in(&self.stderr)
    }

    /// Its stdout as JSON (the report of `negotiate --format json`), if it is JSON.
    pub fn report(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// Why it failed, in one line for people: the reported message, else how it ended.
    pub fn failure(&self) -> String {
        if self.killed_at_deadline {
            return "did not end in time and was killed".to_owned();
        }
        match self.error() {
            Some(r) => r.message,
            None => match self.code() {
                Some(code) => format!("exit code {code} without an error report"),
                None => "killed or crashed".to_owned(),
            },
        }
    }
}

/// One started party.
struct Slot {
    party: String,
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: Option<thread::JoinHandle<String>>,
    ended: Option<(ExitStatus, Duration, bool)>,
}

#[derive(Default)]
struct Shared {
    slots: Vec<Slot>,
    /// Set by [`Stopper::stop`]: every party was killed and no more may start.
    stopped: bool,
}

/// The processes of one session's parties, started one by one and awaited together.
///
/// Every process still running when this is dropped (a later spawn failed, the caller returned
/// early) is killed and reaped, and [`Stopper::stop`] does the same from another thread (a
/// signal handler), so no party outlives the run by accident.
pub struct PartyProcesses {
    shared: Arc<Mutex<Shared>>,
    started: Option<Instant>,
}

/// A handle that stops a [`PartyProcesses`] from another thread.
#[derive(Clone)]
pub struct Stopper(Arc<Mutex<Shared>>);

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // Poisoned only if a step panicked; the processes it holds still need killing.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn drain(r: Option<impl Read + Send + 'static>) -> Option<thread::JoinHandle<String>> {
    let mut r = r?;
    Some(thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    }))
}

fn kill_and_reap(slots: &mut [Slot]) {
    for s in slots.iter_mut().filter(|s| s.ended.is_none()) {
        if let Ok(None) = s.child.try_wait() {
            let _ = s.child.kill();
        }
        let _ = s.child.wait();
    }
}

impl Stopper {
    /// Kills (SIGKILL) and reaps every party started so far and refuses any later start. Returns
    /// once they are all gone.
    pub fn stop(&self) {
        let mut sh = lock(&self.0);
        sh.stopped = true;
        kill_and_reap(&mut sh.slots);
    }
}

impl Default for PartyProcesses {
    fn default() -> Self {
        Self::new()
    }
}

impl PartyProcesses {
    /// No party started yet.
    pub fn new() -> Self {
        PartyProcesses {
            shared: Arc::default(),
            started: None,
        }
    }

    /// A handle for stopping every party from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(Arc::clone(&self.shared))
    }

    /// Starts `cmd` (see [`NegotiateCommand::command`]) as party `party`, its stdout and stderr
    /// captured. Refused once [`Stopper::stop`] was called.
    pub fn spawn(&mut self, party: impl Into<String>, mut cmd: Command) -> Result<()> {
        let party = party.into();
        let mut sh = lock(&self.shared);
        if sh.stopped {
            return Err(Error::conflict(format!(
                "not starting the process of {party}: the run was stopped"
            )));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::io(
                    format!(
                        "while starting the process of {party} (`{}`)",
                        cmd.get_program().to_string_lossy()
                    ),
                    e,
                )
            })?;
        self.started.get_or_insert_with(Instant::now);
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        sh.slots.push(Slot {
            party,
            child,
            stdout,
            stderr,
            ended: None,
        });
        Ok(())
    }

    /// Starts one party per command, labelled with its party id; on a failed start the ones
    /// already started are killed (when the returned error drops `self`).
    pub fn spawn_all<'a>(
        commands: impl IntoIterator<Item = (&'a str, &'a NegotiateCommand)>,
    ) -> Result<Self> {
        let mut p = PartyProcesses::new();
        for (party, cmd) in commands {
            p.spawn(party, cmd.command())?;
        }
        Ok(p)
    }

    /// Waits until every party has ended, calling `on_exit` as each one does (its output is not
    /// collected yet at that point: `stdout` and `stderr` are empty); those still
    /// running `deadline` after the first start are killed (and marked
    /// [`PartyExit::killed_at_deadline`]). Returns the exits in start order.
    pub fn wait(self, deadline: Duration, mut on_exit: impl FnMut(&PartyExit)) -> Vec<PartyExit> {
        let started = self.started.unwrap_or_else(Instant::now);
        let end = started + deadline;
        loop {
            let mut sh = lock(&self.shared);
            let past_deadline = Instant::now() >= end;
            let mut running = 0;
            for s in sh.slots.iter_mut().filter(|s| s.ended.is_none()) {
                let status = match s.child.try_wait() {
                    Ok(Some(status)) => Some((status, false)),
                    // An error here means the child was already reaped (by `Stopper::stop`).
                    Ok(None) | Err(_) if past_deadline => {
                        let _ = s.child.kill();
                        s.child.wait().ok().map(|st| (st, true))
                    }
                    Err(_) => s.child.wait().ok().map(|st| (st, false)),
                    Ok(None) => None,
                };
                match status {
                    Some((status, killed)) => {
                        s.ended = Some((status, started.elapsed(), killed));
                        on_exit(&to_exit(s, false));
                    }
                    None => running += 1,
                }
            }
            if running == 0 {
                return sh.slots.iter_mut().map(|s| to_exit(s, true)).collect();
            }
            drop(sh);
            thread::sleep(POLL);
        }
    }
}

/// The exit of an ended slot; with `collect`, the captured output too (the draining threads end
/// once the process and whatever inherited its pipes are gone).
fn to_exit(s: &mut Slot, collect: bool) -> PartyExit {
    let (status, after, killed) = s.ended.expect("ended");
    let join = |h: &mut Option<thread::JoinHandle<String>>| {
        if collect {
            h.take().and_then(|h| h.join().ok()).unwrap_or_default()
        } else {
            String::new()
        }
    };
    PartyExit {
        party: s.party.clone(),
        status,
        killed_at_deadline: killed,
        after,
        stdout: join(&mut s.stdout),
        stderr: join(&mut s.stderr),
    }
}

impl Drop for PartyProcesses {
    fn drop(&mut self) {
        kill_and_reap(&mut lock(&self.shared).slots);
    }
}

/// Starts one party per command and waits for all of them (see [`PartyProcesses::wait`]).
pub fn run_parties<'a>(
    commands: impl IntoIterator<Item = (&'a str, &'a NegotiateCommand)>,
    deadline: Duration,
) -> Result<Vec<PartyExit>> {
    Ok(PartyProcesses::spawn_all(commands)?.wait(deadline, |_| {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn the_negotiate_argv_has_every_option_in_place() {
        let c = NegotiateCommand::new("/bin/secagg", "/h", "s-1", &["researcher_a", "node_b"])
            .timeout(Duration::from_secs(2))
            .engine("native")
            .arg("--keep-run-dir");
        let argv: Vec<String> = c
            .argv()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            argv,
            [
                "--home",
                "/h",
                "negotiate",
                "--session",
                "s-1",
                "--parties",
                "researcher_a,node_b",
                "--timeout",
                "2000ms",
                "--engine",
                "native",
                "--format",
                "json",
                "--error-format",
                "json",
                "--keep-run-dir"
            ]
        );
        let wrapped = c.wrapped_in(["ip", "netns", "exec", "ns1"]).command();
        assert_eq!(wrapped.get_program(), "ip");
        let args: Vec<&OsStr> = wrapped.get_args().collect();
        assert_eq!(args[..5], ["netns", "exec", "ns1", "/bin/secagg", "--home"]);
    }

    #[test]
    fn exits_are_collected_in_start_order_with_output_and_error_reports() {
        let mut p = PartyProcesses::new();
        p.spawn("a", sh("sleep 0.2; echo '{\"ok\":1}'")).unwrap();
        p.spawn(
            "b",
            sh(r#"echo 'warning: x' >&2; echo '{"kind":"peer_failure","exit_code":6,"message":"m","hint":"h"}' >&2; exit 6"#),
        )
        .unwrap();
        let mut seen = Vec::new();
        let exits = p.wait(Duration::from_secs(10), |e| seen.push(e.party.clone()));
        assert_eq!(seen, ["b", "a"]);
        assert!(exits[0].success());
        assert_eq!(exits[0].report().unwrap()["ok"], 1);
        assert_eq!(exits[1].code(), Some(6));
        let r = exits[1].error().unwrap();
        assert_eq!(r.kind, crate::ErrorKind::PeerFailure);
        assert_eq!(r.hint.as_deref(), Some("h"));
        assert_eq!(exits[1].failure(), "m");
    }

    #[test]
    fn the_deadline_kills_the_parties_still_running() {
        let started = Instant::now();
        let mut p = PartyProcesses::new();
        p.spawn("quick", sh("exit 0")).unwrap();
        p.spawn("stuck", sh("exec sleep 1000")).unwrap();
        let exits = p.wait(Duration::from_millis(300), |_| {});
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(exits[0].success() && !exits[0].killed_at_deadline);
        assert!(exits[1].killed_at_deadline && !exits[1].success());
        assert_eq!(exits[1].failure(), "did not end in time and was killed");
    }

    #[test]
    fn a_stopper_kills_everything_and_refuses_later_starts() {
        let mut p = PartyProcesses::new();
        p.spawn("a", sh("exec sleep 1000")).unwrap();
        let stopper = p.stopper();
        let t = thread::spawn(move || stopper.stop());
        t.join().unwrap();
        assert!(p.spawn("b", sh("exit 0")).is_err());
        let exits = p.wait(Duration::from_secs(10), |_| {});
        assert_eq!(exits.len(), 1);
        assert!(!exits[0].success());
    }

    #[test]
    fn a_failed_start_is_a_storage_error_and_dropping_kills_the_started_ones() {
        let mut p = PartyProcesses::new();
        p.spawn("a", sh("exec sleep 1000")).unwrap();
        let e = p
            .spawn("b", Command::new("/nonexistent/secagg"))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Storage);
        let pid = lock(&p.shared).slots[0].child.id();
        drop(p);
        assert!(!super::super::process_alive(pid));
    }
}
