//! The shipped systemd unit (`packaging/systemd/secagg-agent.service`, issue 23, item 11): its
//! `secagg serve` command line is one the binary accepts, and `systemd-analyze verify` finds no
//! error in it (with `ExecStart` pointing at this build), where systemd-analyze exists.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../packaging/systemd/secagg-agent.service");
const BIN: &str = env!("CARGO_BIN_EXE_secagg");

fn exec_start() -> &'static str {
    UNIT.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
}

#[test]
fn the_units_command_line_is_accepted_by_secagg_serve() {
    let line = exec_start();
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/secagg"), "{line}");
    // The arguments, with the EnvironmentFile's example in place of $SECAGG_SERVE_ARGS.
    let args: Vec<&str> = words
        .flat_map(|w| {
            if w == "$SECAGG_SERVE_ARGS" {
                vec!["--allow-researcher", "researcher_example"]
            } else {
                vec![w]
            }
        })
        .collect();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--home")
        .arg(home.path().join("none"))
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Parsed (not a usage error, exit 2): it stops at the missing identity (exit 4).
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("identity"), "{stderr}");
    for required in [
        "User=secagg",
        "StateDirectory=secagg",
        "StateDirectoryMode=0700",
        "Environment=SECAGG_HOME=/var/lib/secagg",
        "After=network-online.target wg-quick@wg0.service",
        "RestartSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "UMask=0077",
    ] {
        assert!(UNIT.contains(required), "the unit lacks {required}");
    }
}

#[test]
fn systemd_analyze_verify_finds_no_error_in_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("secagg-agent.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/secagg", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify reports problems as lines naming the unit file, even with exit status 0.
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains(&name)).collect();
    assert!(problems.is_empty(), "{problems:?}");
    assert!(Path::new(BIN).is_file());
}
