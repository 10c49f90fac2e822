//! Helpers for driving the real `secagg` binary against real homes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `secagg` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_secagg")
}

/// The repository's `fixtures/` directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
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
    pub fn fails_with(&self, code: i32, needle: &str) -> &Self {
        assert_eq!(
            self.code, code,
            "wrong exit code\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\nstderr: {}",
            self.stderr
        );
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        self
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
    let out = Command::new(bin())
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SECAGG_HOME")
        .env_remove("MPSPDZ_IP")
        .env_remove("MPSPDZ_PORT")
        .output()
        .expect("run secagg");
    finish(out)
}

/// Runs `secagg` with extra environment variables.
pub fn secagg_env(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("SECAGG_HOME")
        .env_remove("MPSPDZ_IP")
        .env_remove("MPSPDZ_PORT");
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
