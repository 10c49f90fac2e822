//! Supervision of external processes (MP-SPDZ's `shamir-party.x`); [`parties`] runs a session's
//! parties as `secagg negotiate` processes.
//!
//! A supervised child runs in a **process group of its own** (`setpgid(0, 0)` through
//! [`CommandExt::process_group`]), with stdin from `/dev/null` and stdout and stderr both appended to
//! one log file. Writing straight to a file means there is no pipe that could fill up and block
//! the child while the parent waits (the deadlock Fed-BioMed's `wait()` on piped output risks).
//!
//! [`Supervised::wait`] enforces a deadline and an optional cancel flag; on expiry, on
//! cancellation, and when a [`Supervised`] is dropped before it finished, the **whole process
//! group** gets `SIGKILL`, so helper processes the child started die with it. After the child
//! exited (on any path) the group is killed once more and secagg waits, bounded, until no member
//! of it is left: no orphan survives a supervised run.
//!
//! If secagg itself dies without unwinding (SIGKILL, OOM killer), no destructor runs; so the
//! child is started through util-linux's `setpriv --pdeathsig KILL` when `setpriv` is installed
//! (it is on Debian), and the kernel kills it when the thread that spawned it ends; a shell step
//! after the `prctl` checks that secagg is still its parent, so a secagg killed right after the
//! spawn (before the signal was set) does not leave the program running either. That needs no
//! unsafe `pre_exec`. Consequence: spawn and wait from the same, long-lived thread.
//!
//! Limits: a process that moves itself to another process group or session escapes the group
//! kill; the leftover check reads `/proc` and is a no-op where there is none; without `setpriv`,
//! a SIGKILLed secagg leaves its child running.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

pub mod parties;

/// Default deadline of a supervised MP-SPDZ party (it can wait forever in a TLS handshake).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(90);

/// How long to wait for the members of a killed process group to disappear.
pub const GROUP_EXIT_BOUND: Duration = Duration::from_secs(5);

/// How often the cancel flag is looked at while waiting.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A flag another thread sets to stop a supervised process, or a native negotiation, early.
/// Clones share the flag. Public as [`crate::engine::CancelFlag`].
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    set: AtomicBool,
    /// Why, when the canceller said so ([`CancelFlag::cancel_because`]).
    reason: std::sync::OnceLock<String>,
}

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the flag: a supervisor kills the process group, a native negotiation stops at its
    /// next wait (see [`crate::engine::Engine::negotiate_cancellable`]).
    pub fn cancel(&self) {
        self.0.set.store(true, Ordering::SeqCst);
    }
    /// [`Self::cancel`], saying why: a native negotiation aborts with this reason (its peers see
    /// it) instead of a plain "cancelled". The first reason given is kept.
    pub fn cancel_because(&self, reason: impl Into<String>) {
        let _ = self.0.reason.set(reason.into());
        self.cancel();
    }
    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }
    /// The reason given to [`Self::cancel_because`], if any.
    pub fn reason(&self) -> Option<&str> {
        self.0.reason.get().map(String::as_str)
    }
}

/// How a supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It exited (by itself, or killed by a signal nobody in secagg sent).
    Exited(ExitStatus),
    /// The deadline expired; the process group was killed.
    TimedOut,
    /// The cancel flag was set; the process group was killed.
    Cancelled,
}

/// The result of [`Supervised::wait`].
#[derive(Debug, Clone)]
pub struct Finished {
    /// How it ended.
    pub ending: Ending,
    /// Time from spawn to the end.
    #[cfg_attr(not(test), allow(dead_code))] // the tests check deadlines with it
    pub elapsed: Duration,
    /// Members of the group still alive [`GROUP_EXIT_BOUND`] after the final kill (normally empty).
    #[cfg_attr(not(test), allow(dead_code))] // the tests check the group kill with it
    pub leftover: Vec<u32>,
}

impl Finished {
    /// The exit status when the child exited by itself.
    #[cfg(test)] // the engine matches on the ending itself
    pub fn status(&self) -> Option<ExitStatus> {
        match self.ending {
            Ending::Exited(s) => Some(s),
            _ => None,
        }
    }
}

/// Describes an exit status for people: `exit code 1`, or `killed by signal 6 (SIGABRT: …)`.
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(6) => "killed by signal 6 (SIGABRT: the program aborted after an uncaught exception; \
                    shells report this as exit code 134)"
            .to_owned(),
        Some(9) => "killed by signal 9 (SIGKILL)".to_owned(),
        Some(11) => "killed by signal 11 (SIGSEGV: the program crashed)".to_owned(),
        Some(15) => "killed by signal 15 (SIGTERM)".to_owned(),
        Some(s) => format!("killed by signal {s}"),
        None => format!("ended with status {status}"),
    }
}

/// A child process running in its own process group, its output going to a log file.
///
/// Dropping it before [`Self::wait`] returned kills the whole group.
#[derive(Debug)]
pub struct Supervised {
    pgid: i32,
    started: Instant,
    exit_rx: mpsc::Receiver<std::io::Result<ExitStatus>>,
    done: bool,
}

impl Supervised {
    /// Starts `cmd` in a new process group with stdin from `/dev/null` and stdout + stderr
    /// appended to `log_path` (created 0600: the log may quote paths and peer names).
    ///
    /// `what` names the program in errors (`shamir-party.x`).
    pub fn spawn(cmd: Command, log_path: &Path, what: &str) -> Result<Self> {
        let mut cmd = with_parent_death_signal(cmd);
        let log = open_log(log_path)?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io_path("duplicating the log file handle of", log_path, e))?;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2));
        let child = cmd.spawn().map_err(|e| {
            let base = Error::external(format!(
                "cannot start {what} (`{}`): {e}",
                cmd.get_program().to_string_lossy()
            ));
            match e.kind() {
                std::io::ErrorKind::NotFound => {
                    base.with_hint("check --mpspdz-root / MPSPDZ_ROOT and `secagg mpspdz doctor`")
                }
                std::io::ErrorKind::PermissionDenied => {
                    base.with_hint("the program file must be executable")
                }
                _ => base,
            }
        })?;
        let pgid = i32::try_from(child.id())
            .map_err(|_| Error::Internal("child process id out of range".into()))?;
        let (tx, exit_rx) = mpsc::channel();
        spawn_waiter(child, tx);
        Ok(Supervised {
            pgid,
            started: Instant::now(),
            exit_rx,
            done: false,
        })
    }

    /// The process id of the child, which is also its process group id.
    #[cfg(test)] // only the tests need it
    pub fn pid(&self) -> u32 {
        self.pgid as u32
    }

    /// Waits until the child exits, `deadline` (counted from spawn) expires, or `cancel` is set.
    ///
    /// On expiry or cancellation the whole group is killed. On every path the group is killed
    /// once more after the child ended (helpers it left behind) and secagg waits up to
    /// [`GROUP_EXIT_BOUND`] for the group to be empty.
    pub fn wait(mut self, deadline: Duration, cancel: Option<&CancelFlag>) -> Result<Finished> {
        let end = self.started + deadline;
        let ending = loop {
            if cancel.is_some_and(CancelFlag::is_cancelled) {
                self.kill_group_and_reap();
                break Ending::Cancelled;
            }
            let now = Instant::now();
            if now >= end {
                self.kill_group_and_reap();
                break Ending::TimedOut;
            }
            let step = if cancel.is_some() {
                (end - now).min(CANCEL_POLL)
            } else {
                end - now
            };
            match self.exit_rx.recv_timeout(step) {
                Ok(Ok(status)) => break Ending::Exited(status),
                Ok(Err(e)) => {
                    self.kill_group_and_reap();
                    self.done = true;
                    return Err(Error::io("while waiting for a supervised process", e));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.kill_group_and_reap();
                    self.done = true;
                    return Err(Error::Internal(
                        "the waiter of a supervised process disappeared".into(),
                    ));
                }
            }
        };
        let elapsed = self.started.elapsed();
        // The leader is gone; kill whatever it left in its group and wait for it to vanish.
        kill_group(self.pgid);
        let leftover = wait_group_empty(self.pgid, GROUP_EXIT_BOUND);
        self.done = true;
        Ok(Finished {
            ending,
            elapsed,
            leftover,
        })
    }

    fn kill_group_and_reap(&mut self) {
        kill_group(self.pgid);
        // The waiter thread reaps the leader; SIGKILL makes this prompt.
        let _ = self.exit_rx.recv_timeout(GROUP_EXIT_BOUND);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !self.done {
            self.kill_group_and_reap();
            kill_group(self.pgid);
            let _ = wait_group_empty(self.pgid, GROUP_EXIT_BOUND);
        }
    }
}

/// Where util-linux's `setpriv` is installed, if anywhere.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// The shell step between `setpriv`'s `prctl(PR_SET_PDEATHSIG)` and the program; `$0` is the pid
/// of the secagg process that spawned it. The kernel sends the signal only for a parent that dies
/// *after* it was set: a secagg killed right after the spawn (before `setpriv` ran) would leave
/// the program running with nobody to stop it. So once the signal is set, the parent is checked:
/// the shell's `$PPID` (its parent when it started, after the `prctl`) must still be that pid,
/// or the program never starts (exit 125).
const PARENT_GUARD: &str = r#"[ "$PPID" = "$0" ] || exit 125; exec "$@""#;

/// Rewrites `cmd` so that the kernel kills it if this process dies ([`with_parent_death_signal_of`]
/// with this process's pid).
fn with_parent_death_signal(cmd: Command) -> Command {
    with_parent_death_signal_of(cmd, std::process::id())
}

/// Rewrites `cmd` as `setpriv --pdeathsig KILL -- /bin/sh -c PARENT_GUARD <parent> <program>
/// <args…>` (same working directory and environment changes), so the kernel kills the child if
/// its parent `parent` dies, and it never starts if `parent` died before that was set
/// ([`PARENT_GUARD`]); `cmd` unchanged where `setpriv` or `/bin/sh` is not installed. Both exec
/// the next step, so the pid and process group stay the program's.
fn with_parent_death_signal_of(cmd: Command, parent: u32) -> Command {
    let Some(setpriv) = setpriv() else { return cmd };
    if !program_exists(&cmd) || !Path::new("/bin/sh").is_file() {
        // Let the spawn fail as itself ("not found"), not as setpriv's exit code 127.
        return cmd;
    }
    let mut wrapped = Command::new(setpriv);
    wrapped
        .args(["--pdeathsig", "KILL", "--", "/bin/sh", "-c", PARENT_GUARD])
        .arg(parent.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

/// Whether `cmd`'s program can be found: the path itself when it has a `/`, else on `PATH`.
fn program_exists(cmd: &Command) -> bool {
    let program = Path::new(cmd.get_program());
    if program.components().count() > 1 {
        let program = match cmd.get_current_dir() {
            Some(dir) if program.is_relative() => dir.join(program),
            _ => program.to_owned(),
        };
        return program.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn spawn_waiter(mut child: Child, tx: mpsc::Sender<std::io::Result<ExitStatus>>) {
    thread::spawn(move || {
        let r = child.wait();
        let _ = tx.send(r);
    });
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io_path("opening log file", path, e))
}

/// Sends `SIGKILL` to every process of group `pgid`; a group that no longer exists is fine.
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// SIGINT and SIGTERM, taken from their default action (killing the process on the spot, no
/// destructor run) and received on a thread instead, so that a command holding secrets on disk
/// can delete them before it exits.
///
/// Built on `sigwait` (nix's safe API): the signals are *blocked* in the thread that calls
/// [`Self::block`] and, as the mask is inherited, in every thread it starts afterwards, so call it
/// before starting any thread. A thread then takes them with [`Self::wait`]. The mask is also
/// inherited across `exec`; every `secagg` process therefore calls
/// [`unblock_termination_signals`] first thing, so the ones a blocking parent starts can still be
/// stopped.
#[derive(Debug, Clone)]
pub struct TerminationSignals {
    set: SigSet,
}

fn termination_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread (and the threads it starts from now on).
    pub fn block() -> Result<Self> {
        let set = termination_set();
        set.thread_block()
            .map_err(|e| Error::io("while blocking SIGINT and SIGTERM", std::io::Error::from(e)))?;
        Ok(TerminationSignals { set })
    }

    /// Waits until SIGINT or SIGTERM arrives and returns its number (2 or 15).
    pub fn wait(&self) -> Result<i32> {
        self.set
            .wait()
            .map(|sig| sig as i32)
            .map_err(|e| Error::io("while waiting for a signal", std::io::Error::from(e)))
    }
}

/// The name of signal `signo` (`SIGINT`), or its number.
pub fn signal_name(signo: i32) -> String {
    Signal::try_from(signo)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {signo}"))
}

/// Unblocks SIGINT and SIGTERM in the calling thread: a process started by one that blocked them
/// (see [`TerminationSignals`]) inherits the blocked mask, and could not be interrupted otherwise.
pub fn unblock_termination_signals() {
    // Cannot fail with a valid set and `SIG_UNBLOCK`.
    let _ = termination_set().thread_unblock();
}

/// Process ids of the live (non-zombie) processes whose process group is `pgid`, from `/proc`.
/// Empty where `/proc` is not available.
pub fn live_group_members(pgid: i32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((state, group)) = proc_state_and_pgid(pid) {
            if group == pgid && state != 'Z' && state != 'X' {
                out.push(pid);
            }
        }
    }
    out
}

/// Whether process `pid` exists and is not a zombie (`/proc`).
pub fn process_alive(pid: u32) -> bool {
    matches!(proc_state_and_pgid(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

fn proc_state_and_pgid(pid: u32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Waits (polling `/proc`, at most `bound`) until group `pgid` has no live member; returns the
/// members still alive at the end.
pub fn wait_group_empty(pgid: i32, bound: Duration) -> Vec<u32> {
    let end = Instant::now() + bound;
    let mut pause = Duration::from_millis(1);
    loop {
        let left = live_group_members(pgid);
        if left.is_empty() || Instant::now() >= end {
            return left;
        }
        kill_group(pgid);
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The last `max_lines` lines of the log at `path` (lossy UTF-8), for quoting in errors.
pub fn log_tail(path: &Path, max_lines: usize) -> Vec<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(max_lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
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
    fn captures_stdout_and_stderr_in_the_log_and_reports_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let s = Supervised::spawn(sh("echo out; echo err >&2; exit 3"), &log, "sh").unwrap();
        let f = s.wait(Duration::from_secs(10), None).unwrap();
        assert_eq!(f.status().unwrap().code(), Some(3));
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
        assert_eq!(crate::fs_secure::mode_of(&log).unwrap(), 0o600);
        assert!(f.leftover.is_empty());
    }

    #[test]
    fn large_output_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        // 2 MB on each stream: far beyond a pipe buffer.
        let s = Supervised::spawn(
            sh("head -c 2000000 /dev/zero | tr '\\0' a; head -c 2000000 /dev/zero | tr '\\0' b >&2"),
            &log,
            "sh",
        )
        .unwrap();
        let f = s.wait(Duration::from_secs(30), None).unwrap();
        assert!(f.status().unwrap().success());
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 4_000_000);
    }

    #[test]
    fn deadline_kills_the_whole_group_and_leaves_no_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let started = Instant::now();
        let s = Supervised::spawn(
            sh("sleep 1000 & echo child $!; sleep 1000 & echo child $!; sleep 1000"),
            &log,
            "sh",
        )
        .unwrap();
        let pgid = s.pid() as i32;
        let f = s.wait(Duration::from_millis(500), None).unwrap();
        assert_eq!(f.ending, Ending::TimedOut);
        assert!(f.elapsed >= Duration::from_millis(500));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(f.leftover.is_empty(), "{:?}", f.leftover);
        let text = std::fs::read_to_string(&log).unwrap();
        let children: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("child "))
            .map(|p| p.trim().parse().unwrap())
            .collect();
        assert_eq!(children.len(), 2, "{text}");
        for pid in children {
            assert!(!process_alive(pid), "background child {pid} survived");
        }
        assert!(live_group_members(pgid).is_empty());
    }

    #[test]
    fn a_child_dies_with_the_thread_that_spawned_it_even_without_cleanup() {
        // Regression: a SIGKILLed secagg (no destructor runs) used to leave shamir-party.x
        // running. Forgetting the handle and ending the spawning thread stands in for that.
        if setpriv().is_none() {
            eprintln!("skipped: setpriv (util-linux) is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let pid = thread::spawn(move || {
            let s = Supervised::spawn(sh("exec sleep 1000"), &log, "sh").unwrap();
            let pid = s.pid();
            // Only once the child is `sleep` has setpriv set the signal (in real use the
            // spawning thread waits for the child, so this window never matters).
            let comm = format!("/proc/{pid}/comm");
            let start = Instant::now();
            while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep") {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "child never became sleep"
                );
                thread::sleep(Duration::from_millis(5));
            }
            std::mem::forget(s);
            pid
        })
        .join()
        .unwrap();
        let start = Instant::now();
        while process_alive(pid) && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !process_alive(pid),
            "child {pid} outlived the thread that spawned it"
        );
    }

    /// Regression: a secagg SIGKILLed in the moment between spawning `shamir-party.x` and
    /// `setpriv` setting the parent-death signal left it running (found by killing `session run`
    /// as soon as its run appeared). The guard after the `prctl` sees a parent other than the
    /// one that spawned it (standing in for a dead one) and never starts the program.
    #[test]
    fn a_child_whose_parent_died_before_the_death_signal_was_set_never_starts() {
        if setpriv().is_none() {
            eprintln!("skipped: setpriv (util-linux) is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("started");
        let program = sh(&format!("touch {}", marker.display()));
        let not_our_pid = std::process::id() + 1;
        let status = with_parent_death_signal_of(program, not_our_pid)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(125));
        assert!(!marker.exists(), "the program ran without its parent");
        // With the real parent, it runs.
        let program = sh(&format!("touch {}", marker.display()));
        let status = with_parent_death_signal(program).status().unwrap();
        assert!(status.success());
        assert!(marker.exists());
    }

    #[test]
    fn cancel_and_drop_kill_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let s = Supervised::spawn(sh("sleep 1000 & sleep 1000"), &log, "sh").unwrap();
        let pgid = s.pid() as i32;
        let cancel = CancelFlag::new();
        let c2 = cancel.clone();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            c2.cancel();
        });
        let f = s.wait(Duration::from_secs(60), Some(&cancel)).unwrap();
        t.join().unwrap();
        assert_eq!(f.ending, Ending::Cancelled);
        assert!(f.elapsed < Duration::from_secs(10));
        assert!(live_group_members(pgid).is_empty());

        let log = dir.path().join("d.log");
        let s = Supervised::spawn(sh("sleep 1000 & sleep 1000"), &log, "sh").unwrap();
        let pgid = s.pid() as i32;
        // Wait (bounded) until the background sleep exists, so the drop has a group to kill.
        let end = Instant::now() + Duration::from_secs(5);
        while live_group_members(pgid).len() < 2 && Instant::now() < end {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(live_group_members(pgid).len() >= 2);
        drop(s);
        assert!(live_group_members(pgid).is_empty());
    }

    #[test]
    fn helpers_left_by_a_finished_child_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        let s = Supervised::spawn(sh("sleep 1000 & echo child $!; exit 0"), &log, "sh").unwrap();
        let pgid = s.pid() as i32;
        let f = s.wait(Duration::from_secs(10), None).unwrap();
        assert!(f.status().unwrap().success());
        assert!(live_group_members(pgid).is_empty());
    }

    #[test]
    fn missing_program_is_an_external_tool_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = Supervised::spawn(
            Command::new(dir.path().join("nope.x")),
            &dir.path().join("l"),
            "nope.x",
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool);
        assert!(e.to_string().contains("cannot start nope.x"), "{e}");
    }

    #[test]
    fn abort_status_is_explained() {
        let st = ExitStatus::from_raw(6);
        assert!(describe_status(st).contains("SIGABRT"));
        assert_eq!(describe_status(ExitStatus::from_raw(3 << 8)), "exit code 3");
    }
}
