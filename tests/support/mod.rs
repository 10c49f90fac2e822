//! Helpers shared by the end-to-end tests: start `secagg negotiate` processes and collect how
//! they ended.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `secagg` binary under test, with none of the caller's SECAGG_HOME / MPSPDZ_* variables.
pub fn secagg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secagg"));
    c.env_remove("SECAGG_HOME")
        .env_remove("MPSPDZ_IP")
        .env_remove("MPSPDZ_PORT");
    c
}

/// Starts `secagg --home HOME negotiate … --format json`, plus `extra` (e.g. the engine options),
/// with stdout and stderr captured.
pub fn spawn_negotiate(
    home: &Path,
    session: &str,
    parties: &str,
    timeout: &str,
    extra: &[&OsStr],
) -> Child {
    secagg()
        .arg("--home")
        .arg(home)
        .args([
            "negotiate",
            "--session",
            session,
            "--parties",
            parties,
            "--timeout",
            timeout,
            "--format",
            "json",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn secagg negotiate")
}

/// How one process ended.
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

/// Waits for every child, in order.
pub fn wait_all(children: Vec<Child>, started: Instant) -> Vec<Exit> {
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
