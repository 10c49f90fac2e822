//! `secagg deploy` through the real binary. The exact compose commands of every verb are checked
//! with `--dry-run` and, through a stand-in `docker` program (SECAGG_DOCKER) that records its
//! arguments, when really run; a missing engine or daemon is reported with exit code 9; unknown
//! services are refused before anything happens.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::{secagg, secagg_env, Run};

/// A stand-in `docker`: appends its arguments to `<dir>/docker.log`; `info` fails when
/// `<dir>/no-daemon` exists, `compose version` when `<dir>/no-compose` exists, and any compose
/// command containing `fail-me` fails.
fn fake_docker(dir: &Path) -> PathBuf {
    let p = dir.join("docker");
    let log = dir.join("docker.log");
    fs::write(
        &p,
        format!(
            r#"#!/bin/sh
echo "$*" >> '{log}'
if [ "$1" = info ] && [ -e '{dir}/no-daemon' ]; then
  echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2
  exit 1
fi
if [ "$1" = compose ] && [ "$2" = version ] && [ -e '{dir}/no-compose' ]; then
  echo "docker: unknown command: docker compose" >&2
  exit 1
fi
case "$*" in *fail-me*) exit 3;; esac
exit 0
"#,
            log = log.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn log_lines(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("docker.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("info") && !l.starts_with("compose version"))
        .map(str::to_owned)
        .collect()
}

fn deploy(home: &Path, docker: &Path, args: &[&str]) -> Run {
    let mut all = vec!["deploy"];
    all.extend_from_slice(args);
    secagg_env(
        home,
        &all,
        &[
            ("SECAGG_DOCKER", docker.to_str().unwrap()),
            ("SECAGG_DOCKER_COMPOSE", "/nonexistent/docker-compose"),
        ],
    )
}

#[test]
fn dry_run_prints_the_exact_commands_of_every_verb_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    fs::write(dir.path().join("no-daemon"), "").unwrap();
    let home = dir.path().join("home");
    let file = home.join("deploy/docker-compose.yml");
    let pre = format!(
        "{} compose --project-name secagg --file {}",
        docker.display(),
        file.display()
    );
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["build"], vec![format!("{pre} build")]),
        (
            vec!["build", "node", "gui"],
            vec![format!("{pre} build node gui")],
        ),
        (
            vec!["start", "researcher", "vpnserver"],
            vec![format!("{pre} up --detach vpnserver researcher")],
        ),
        (vec!["start"], vec![format!("{pre} up --detach")]),
        (vec!["stop"], vec![format!("{pre} down")]),
        (
            vec!["stop", "node"],
            vec![format!("{pre} stop node"), format!("{pre} rm --force node")],
        ),
        (vec!["status"], vec![format!("{pre} ps --all")]),
        (vec!["status", "mqtt"], vec![format!("{pre} ps --all mqtt")]),
        (
            vec!["clean"],
            vec![format!("{pre} down --volumes --remove-orphans")],
        ),
        (
            vec!["clean", "--images"],
            vec![format!("{pre} down --volumes --remove-orphans --rmi local")],
        ),
        (
            vec!["clean", "--images", "gui"],
            vec![
                format!("{pre} rm --stop --force --volumes gui"),
                format!("{} image rm --force secagg/gui:latest", docker.display()),
            ],
        ),
    ];
    for (args, expected) in cases {
        let mut a = args.clone();
        a.push("--dry-run");
        let r = deploy(&home, &docker, &a);
        r.ok();
        let got: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(got, expected, "{args:?}");
        assert!(r.stderr.contains("no compose project"), "{}", r.stderr);
    }
    // configure: the files and directories, then the validation command.
    let r = deploy(&home, &docker, &["configure", "node", "gui", "--dry-run"]);
    r.ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[1], format!("write {} (mode 644)", file.display()));
    assert!(lines.contains(
        &format!(
            "mkdir -p -m 700 {}",
            home.join("deploy/node/run_mounts/data").display()
        )
        .as_str()
    ));
    assert!(!r.stdout.contains("researcher"), "only node and gui");
    assert_eq!(*lines.last().unwrap(), format!("{pre} config --quiet"));
    let j = deploy(
        &home,
        &docker,
        &["start", "node", "--dry-run", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(j["verb"], "start");
    assert_eq!(j["services"], serde_json::json!(["node"]));
    assert_eq!(j["steps"][0]["kind"], "run");
    // Nothing was written or run.
    assert!(!home.exists());
    assert!(log_lines(dir.path()).is_empty());
}

#[test]
fn without_a_container_engine_it_says_so_with_exit_code_9() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    fs::write(dir.path().join("no-daemon"), "").unwrap();
    let home = dir.path().join("home");
    for verb in ["build", "configure", "start", "stop", "status", "clean"] {
        deploy(&home, &docker, &[verb]).fails_with(9, "no container engine");
    }
    let r = deploy(&home, &docker, &["start"]);
    assert!(r.stderr.contains("daemon does not answer"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: ") && r.stderr.contains("--dry-run"));
    deploy(&home, Path::new("/nonexistent/docker"), &["status"])
        .fails_with(9, "`/nonexistent/docker` is not installed");
    // Daemon up but no compose at all.
    fs::remove_file(dir.path().join("no-daemon")).unwrap();
    fs::write(dir.path().join("no-compose"), "").unwrap();
    deploy(&home, &docker, &["status"]).fails_with(9, "neither");
    assert!(!home.exists());
    assert!(log_lines(dir.path()).is_empty());
}

#[test]
fn unknown_services_are_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    for args in [
        vec!["deploy", "start", "node2"],
        vec!["deploy", "build", "node", "mosquitto", "--dry-run"],
        vec!["deploy", "clean", "--images", "researcher2"],
    ] {
        secagg(&home, &args).fails_with(3, "unknown service");
    }
    assert!(!home.exists());
}

#[test]
fn verbs_run_compose_with_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    let home = dir.path().join("home");
    let file = home.join("deploy/docker-compose.yml");
    let pre = format!("compose --project-name secagg --file {}", file.display());
    // Before configure there is no project.
    deploy(&home, &docker, &["start"]).fails_with(4, "no compose project");
    deploy(&home, &docker, &["configure"]).ok();
    let compose = fs::read_to_string(&file).unwrap();
    for needle in [
        "version: \"3.7\"",
        "  vpnserver:",
        "\"51820:51820/udp\"",
        "  mqtt:",
        "  restful:",
        "  researcher:",
        "\"${RESEARCHER_HOST:-127.0.0.1}:8888:8888\"",
        "\"14000\"",
        "  node:",
        "\"14001\"",
        "  gui:",
        "/dev/net/tun",
    ] {
        assert!(compose.contains(needle), "{needle} missing");
    }
    assert!(home.join("deploy/.env").is_file());
    assert!(home.join("deploy/researcher/run_mounts/runs").is_dir());
    assert!(home.join("deploy/vpnserver/build_files").is_dir());
    deploy(&home, &docker, &["build", "node"]).ok();
    deploy(&home, &docker, &["start", "node", "gui"]).ok();
    deploy(&home, &docker, &["status"]).ok();
    deploy(&home, &docker, &["stop", "gui"]).ok();
    deploy(&home, &docker, &["clean"]).ok();
    assert_eq!(
        log_lines(dir.path()),
        [
            format!("{pre} config --quiet"),
            format!("{pre} build node"),
            format!("{pre} up --detach node gui"),
            format!("{pre} ps --all"),
            format!("{pre} stop gui"),
            format!("{pre} rm --force gui"),
            format!("{pre} down --volumes --remove-orphans"),
        ]
    );
    // A failing compose command is named, with the external-tool exit code.
    let bad_home = dir.path().join("fail-me");
    deploy(&bad_home, &docker, &["configure"]).fails_with(9, "config --quiet` failed");
}

#[test]
fn compose_v1_is_used_with_a_warning_when_the_plugin_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    fs::write(dir.path().join("no-compose"), "").unwrap();
    // docker-compose v1 stand-in: the same script, called as a separate program.
    let v1 = dir.path().join("docker-compose");
    fs::copy(&docker, &v1).unwrap();
    let home = dir.path().join("home");
    let r = secagg_env(
        &home,
        &["deploy", "configure", "vpnserver"],
        &[
            ("SECAGG_DOCKER", docker.to_str().unwrap()),
            ("SECAGG_DOCKER_COMPOSE", v1.to_str().unwrap()),
        ],
    );
    r.ok();
    assert!(
        r.stderr.contains("warning: ") && r.stderr.contains("compose v1"),
        "{}",
        r.stderr
    );
    let last = log_lines(dir.path()).pop().unwrap();
    assert_eq!(
        last,
        format!(
            "--project-name secagg --file {} config --quiet",
            home.join("deploy/docker-compose.yml").display()
        )
    );
}

#[test]
fn configure_on_a_vpn_server_registers_the_clients_and_installs_their_config() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    let home = dir.path().join("server");
    secagg(&home, &["vpn", "init", "--public-addr", "192.0.2.1"]).ok();
    deploy(
        &home,
        &docker,
        &["configure", "vpnserver", "mqtt", "restful", "researcher"],
    )
    .ok();
    let list = secagg(&home, &["vpn", "list", "--format", "json"])
        .ok()
        .json();
    let peers: Vec<String> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{} {}",
                p["type"].as_str().unwrap(),
                p["id"].as_str().unwrap(),
                p["address"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        peers,
        [
            "management/mqtt 10.220.0.2",
            "management/restful 10.220.0.3",
            "researcher/researcher1 10.222.0.2"
        ]
    );
    let installed = home.join("deploy/researcher/run_mounts/config/config.env");
    assert_eq!(
        fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(home.join("vpn/peers/researcher/researcher1/config.env")).unwrap()
    );
    // Configuring again keeps the registrations (no new addresses).
    deploy(&home, &docker, &["configure", "mqtt"]).ok();
    let again = secagg(&home, &["vpn", "list", "--format", "json"])
        .ok()
        .json();
    assert_eq!(again["peers"], list["peers"]);
}
