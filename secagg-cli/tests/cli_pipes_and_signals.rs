//! How `secagg` ends when its output goes nowhere (stdout or stderr a pipe whose reader is gone)
//! and when `secagg demo` is interrupted (SIGINT, SIGTERM): quietly, without a panic, leaving no
//! demo directory (it holds private keys) and no process behind.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secagg_core::ErrorKind;
use support::{bin, node_home, processes_mentioning};

/// One end of a socket pair whose other end is already closed: a write to it fails with EPIPE,
/// deterministically (the reader is gone before the process starts), as at `secagg … | true`
/// once `true` has exited.
fn closed_pipe() -> Stdio {
    let (ours, _theirs) = UnixStream::pair().unwrap();
    // `_theirs` is dropped here: nobody will ever read.
    Stdio::from(OwnedFd::from(ours))
}

struct Ended {
    code: Option<i32>,
    stderr: String,
}

/// Runs `secagg --home HOME ARGS` with stdout going to a closed pipe.
fn with_stdout_closed(home: &Path, args: &[&str]) -> Ended {
    let out = Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SECAGG_HOME")
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    Ended {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_its_own_status() {
    // Regression: `secagg certificate registration-instructions | true` panicked ("failed
    // printing to stdout: Broken pipe", exit 101).
    let t = tempfile::tempdir().unwrap();
    let home = node_home(t.path(), "n1");
    for args in [
        &["certificate", "registration-instructions"][..],
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
        ],
        &["certificate", "list", "--format", "json"],
        &["certificate", "list"],
        &["identity", "show"],
        &["identity", "show", "--format", "json"],
        &["context", "list"],
        &["context", "list", "--format", "json"],
    ] {
        let r = with_stdout_closed(&home, args);
        assert!(
            !r.stderr.contains("panicked") && !r.stderr.contains("Broken pipe"),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        // Notes for people (e.g. "no registered peers") may remain; nothing about the pipe.
        assert!(
            !r.stderr.contains("error") && !r.stderr.contains("stdout"),
            "{args:?} was not quiet: {}",
            r.stderr
        );
    }
    // A failing command keeps its exit code (and still reports on stderr).
    let r = with_stdout_closed(&home, &["certificate", "show", "node_nobody"]);
    assert_eq!(
        r.code,
        Some(ErrorKind::NotFound.exit_code()),
        "{}",
        r.stderr
    );
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
}

#[test]
fn a_full_disk_behind_stdout_is_a_file_system_error_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let home = node_home(t.path(), "n1");
    let out = Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["identity", "show"])
        .env_remove("SECAGG_HOME")
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(ErrorKind::Storage.exit_code()),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("error: while writing to stdout"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_closed_stderr_does_not_turn_an_error_into_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let home = node_home(t.path(), "n1");
    let st = Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["certificate", "show", "node_nobody"])
        .env_remove("SECAGG_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(ErrorKind::NotFound.exit_code()), "{st:?}");
}

// ---- secagg demo interrupted ----

/// Starts `secagg demo ARGS` with TMPDIR set to `tmp`, so its `secagg-demo-*` directory is there.
fn spawn_demo(tmp: &Path, args: &[&str], env: &[(&str, &Path)]) -> Child {
    let mut c = Command::new(bin());
    c.arg("demo")
        .args(args)
        .env_remove("SECAGG_HOME")
        .env_remove("MPSPDZ_ROOT")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// The `secagg-demo-*` directories under `tmp`.
fn demo_dirs(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("secagg-demo-"))
        .map(|e| e.path())
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Sends `signal` to the demo, then checks it ended with 128 + signal, saying so, and that its
/// directory and every process working in it are gone.
fn interrupt_and_check(mut demo: Child, tmp: &Path, signal: &str, code: i32) {
    let dir = demo_dirs(tmp).pop().expect("the demo directory exists");
    let st = Command::new("kill")
        .args(["-s", signal, &demo.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let ended = wait_until(Duration::from_secs(15), || {
        demo.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = demo.kill();
    }
    let out = demo.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ended, "the demo did not end after {signal}");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{signal}: status {:?} (signal {:?}); stderr: {stderr}",
        out.status,
        out.status.signal()
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !dir.exists(),
        "{signal} left the demo directory {} (private keys) behind",
        dir.display()
    );
    let needle = dir.display().to_string();
    let gone = wait_until(Duration::from_secs(5), || {
        processes_mentioning(&needle).is_empty()
    });
    assert!(
        gone,
        "{signal} left processes behind: {:?}",
        processes_mentioning(&needle)
    );
}

#[test]
fn sigint_during_the_demo_setup_removes_the_demo_directory() {
    // Regression: Ctrl-C left /tmp/secagg-demo-* with every party's private key (Drop-only cleanup).
    let t = tempfile::tempdir().unwrap();
    // 30 nodes take a few seconds to set up (identities, N² registrations): time to interrupt.
    let demo = spawn_demo(t.path(), &["--nodes", "30"], &[]);
    let started = wait_until(Duration::from_secs(20), || {
        demo_dirs(t.path())
            .iter()
            .any(|d| d.join("federation").join("bundles").is_dir())
    });
    assert!(started, "no demo directory appeared");
    interrupt_and_check(demo, t.path(), "INT", 130);
}

/// A fake MP-SPDZ root whose `shamir-party.x` hangs (and whose `compile.py` writes the two
/// compiled files), so that the demo's parties are all running when it is interrupted.
fn hanging_mpspdz_root(dir: &Path) -> PathBuf {
    let root = dir.join("fake-mpspdz");
    std::fs::create_dir_all(root.join("Compiler")).unwrap();
    std::fs::write(
        root.join("compile.py"),
        "import os\nos.makedirs('Programs/Schedules', exist_ok=True)\nos.makedirs('Programs/Bytecode', exist_ok=True)\nopen('Programs/Schedules/server_key.sch', 'w').write('sch')\nopen('Programs/Bytecode/server_key-0.bc', 'w').write('bc')\n",
    )
    .unwrap();
    let bin = root.join("shamir-party.x");
    // `started` tells the test that the party runs; `exec` keeps the parent-death signal.
    std::fs::write(&bin, "#!/bin/sh\ntouch started\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// Files named `name` anywhere under `dir`.
fn count_named(dir: &Path, name: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                count_named(&p, name)
            } else {
                usize::from(e.file_name() == name)
            }
        })
        .sum()
}

#[test]
fn sigterm_during_the_negotiation_removes_the_demo_directory_and_its_processes() {
    let t = tempfile::tempdir().unwrap();
    let root = hanging_mpspdz_root(t.path());
    let tmp = t.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let demo = spawn_demo(
        &tmp,
        &["--nodes", "2", "--engine", "mp-spdz", "--timeout", "60s"],
        &[("MPSPDZ_ROOT", &root)],
    );
    // Every party's shamir-party.x has started: the demo is waiting for its `secagg negotiate`s.
    let running = wait_until(Duration::from_secs(30), || {
        demo_dirs(&tmp)
            .iter()
            .map(|d| count_named(d, "started"))
            .sum::<usize>()
            == 3
    });
    assert!(running, "the demo's parties did not start");
    interrupt_and_check(demo, &tmp, "TERM", 143);
}
