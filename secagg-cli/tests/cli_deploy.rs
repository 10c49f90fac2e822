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
            vec![format!("{pre} down --volumes --remove-orphans --rmi all")],
        ),
        (
            vec!["clean", "--images", "gui", "gui2"],
            vec![
                format!("{pre} rm --stop --force --volumes gui gui2"),
                format!("{} image rm --force fedbiomed/vpn-gui", docker.display()),
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
    assert!(lines.contains(
        &format!(
            "mkdir -p -m 700 {}",
            home.join("deploy/node/run_mounts/envs/common").display()
        )
        .as_str()
    ));
    assert!(!r.stdout.contains("researcher"), "only node and gui");
    // Not a VPN server home: the node's config.env is not there, and it says so.
    assert!(
        r.stderr
            .contains("warning: node: no VPN server in this home"),
        "{}",
        r.stderr
    );
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
        vec!["deploy", "start", "node3"],
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

/// One service of a compose file as the generator writes it: scalar keys (`container_name`,
/// `build.context`, …) and lists (`environment`, `volumes`, `build.args`, …), quotes removed.
#[derive(Debug, Default)]
struct ComposeService {
    scalars: std::collections::BTreeMap<String, String>,
    lists: std::collections::BTreeMap<String, Vec<String>>,
}

/// Reads the `services:` of a compose file written in the generator's block style (two spaces a
/// level, lists as `- item`).
fn compose_services(text: &str) -> Vec<(String, ComposeService)> {
    let mut out: Vec<(String, ComposeService)> = Vec::new();
    let mut in_services = false;
    let mut path: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if indent == 0 {
            in_services = body == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            out.push((body.trim_end_matches(':').to_owned(), Default::default()));
            path.clear();
            continue;
        }
        let level = indent / 2 - 2;
        let svc = &mut out.last_mut().unwrap().1;
        if let Some(item) = body.strip_prefix("- ") {
            svc.lists
                .entry(path.join("."))
                .or_default()
                .push(item.trim_matches('"').to_owned());
            continue;
        }
        let (k, v) = body.split_once(':').unwrap();
        path.truncate(level);
        path.push(k.to_owned());
        let v = v.trim();
        if !v.is_empty() {
            svc.scalars
                .insert(path.join("."), v.trim_matches('"').to_owned());
        }
    }
    out
}

/// An environment entry as the container sees it with the `.env` defaults: `NAME=${NAME}` is a
/// pass-through (written `NAME`, as upstream writes it), `NAME=${NAME:-d}` is `NAME=d`.
fn effective_env(entry: &str) -> String {
    match entry.split_once('=') {
        Some((name, v)) if v == format!("${{{name}}}") => name.to_owned(),
        Some((name, v)) => match v
            .strip_prefix(&format!("${{{name}:-"))
            .and_then(|d| d.strip_suffix('}'))
        {
            Some(default) => format!("{name}={default}"),
            None => entry.to_owned(),
        },
        None => entry.to_owned(),
    }
}

/// Fed-BioMed v4.5.0's `envs/vpn/docker/docker-compose.yml`, service by service, as facts: image,
/// build context (`None`: no build) and dockerfile, build args, environment, ports, volumes, and
/// whether it runs WireGuard (cap_add net_admin + sys_module, device /dev/net/tun).
struct Upstream {
    name: &'static str,
    image: &'static str,
    context: Option<&'static str>,
    dockerfile: Option<&'static str>,
    args: &'static [&'static str],
    env: &'static [&'static str],
    ports: &'static [&'static str],
    volumes: &'static [&'static str],
    wireguard: bool,
}

const IDS: [&str; 4] = [
    "CONTAINER_UID",
    "CONTAINER_GID",
    "CONTAINER_USER",
    "CONTAINER_GROUP",
];
const IDS_MPSPDZ: [&str; 6] = [
    "CONTAINER_UID",
    "CONTAINER_GID",
    "CONTAINER_USER",
    "CONTAINER_GROUP",
    "MPSPDZ_COMMIT",
    "MPSPDZ_URL",
];
/// Upstream's build context of the node, researcher and gui images (its repository's root);
/// secagg's is the checkout named by FEDBIOMED_DIR (README: "Differences from Fed-BioMed's compose file").
const UPSTREAM_REPO_ROOT: &str = "../../..";

const UPSTREAM: [Upstream; 8] = [
    Upstream {
        name: "vpnserver",
        image: "fedbiomed/vpn-vpnserver",
        context: Some("./vpnserver/build_files"),
        dockerfile: None,
        args: &IDS,
        env: &IDS,
        ports: &["51820:51820/udp"],
        volumes: &["./vpnserver/run_mounts/config:/config"],
        wireguard: true,
    },
    Upstream {
        name: "mqtt",
        image: "fedbiomed/vpn-mqtt",
        context: Some("./mqtt/build_files"),
        dockerfile: None,
        args: &IDS,
        env: &IDS,
        ports: &[],
        volumes: &["./mqtt/run_mounts/config:/config"],
        wireguard: true,
    },
    Upstream {
        name: "restful",
        image: "fedbiomed/vpn-restful",
        context: Some("./restful/build_files"),
        dockerfile: None,
        args: &IDS,
        env: &[
            "CONTAINER_UID",
            "CONTAINER_GID",
            "CONTAINER_USER",
            "CONTAINER_GROUP",
            "PRODUCTION=1",
            "DJANGO_SUPERUSER_USERNAME=admin",
            "DJANGO_SUPERUSER_EMAIL=dummy@fedbiomed.org",
            "DJANGO_SUPERUSER_PASSWORD=admin123",
        ],
        ports: &[],
        volumes: &[
            "./restful/run_mounts/app:/app",
            "./restful/run_mounts/config:/config",
        ],
        wireguard: true,
    },
    Upstream {
        name: "researcher",
        image: "fedbiomed/vpn-researcher",
        context: Some(UPSTREAM_REPO_ROOT),
        dockerfile: Some("envs/vpn/docker/researcher/build_files/Dockerfile"),
        args: &IDS_MPSPDZ,
        env: &IDS,
        ports: &[
            "${RESEARCHER_HOST:-127.0.0.1}:8888:8888",
            "${RESEARCHER_HOST:-127.0.0.1}:6006:6007",
            "14000",
        ],
        volumes: &[
            "./researcher/run_mounts/config:/config",
            "./researcher/run_mounts/data:/data",
            "./researcher/run_mounts/etc:/fedbiomed/etc",
            "./researcher/run_mounts/samples:/fedbiomed/notebooks/samples",
            "./researcher/run_mounts/runs:/fedbiomed/runs",
            "./researcher/run_mounts/var:/fedbiomed/var",
        ],
        wireguard: true,
    },
    Upstream {
        name: "node",
        image: "fedbiomed/vpn-node",
        context: Some(UPSTREAM_REPO_ROOT),
        dockerfile: Some("envs/vpn/docker/node/build_files/Dockerfile"),
        args: &IDS_MPSPDZ,
        env: &IDS,
        ports: &["14001"],
        volumes: &[
            "./node/run_mounts/config:/config",
            "./node/run_mounts/data:/data",
            "./node/run_mounts/etc:/fedbiomed/etc",
            "./node/run_mounts/var:/fedbiomed/var",
            "./node/run_mounts/envs/common:/fedbiomed/envs/common",
        ],
        wireguard: true,
    },
    Upstream {
        name: "node2",
        image: "fedbiomed/vpn-node",
        context: None,
        dockerfile: None,
        args: &[],
        env: &IDS,
        ports: &["14002"],
        volumes: &[
            "./node2/run_mounts/config:/config",
            "./node2/run_mounts/data:/data",
            "./node2/run_mounts/etc:/fedbiomed/etc",
            "./node2/run_mounts/var:/fedbiomed/var",
            "./node2/run_mounts/envs/common:/fedbiomed/envs/common",
        ],
        wireguard: true,
    },
    Upstream {
        name: "gui",
        image: "fedbiomed/vpn-gui",
        context: Some(UPSTREAM_REPO_ROOT),
        dockerfile: Some("envs/vpn/docker/gui/build_files/Dockerfile"),
        args: &IDS,
        env: &[
            "SSL_ON=true",
            "GUI_SERVER_NAME",
            "NGINX_PORT_SSL=8443",
            "NGINX_PORT_NOSSL=8484",
            "CONTAINER_UID",
            "CONTAINER_GID",
            "CONTAINER_USER",
            "CONTAINER_GROUP",
        ],
        ports: &[
            "${GUI_SERVER_IP:-127.0.0.1}:8484:8484",
            "${GUI_SERVER_IP:-127.0.0.1}:8443:8443",
        ],
        volumes: &[
            "./gui/run_mounts/certs:/certs",
            "./node/run_mounts/data:/data",
            "./node/run_mounts/etc:/fedbiomed/etc",
            "./node/run_mounts/var:/fedbiomed/var",
            "./node/run_mounts/envs/common:/fedbiomed/envs/common",
        ],
        wireguard: false,
    },
    Upstream {
        name: "gui2",
        image: "fedbiomed/vpn-gui",
        context: None,
        dockerfile: None,
        args: &[],
        env: &[
            "SSL_ON=true",
            "GUI_SERVER_NAME",
            "NGINX_PORT_SSL=8444",
            "NGINX_PORT_NOSSL=8485",
            "CONTAINER_UID",
            "CONTAINER_GID",
            "CONTAINER_USER",
            "CONTAINER_GROUP",
        ],
        ports: &[
            "${GUI_SERVER_IP:-127.0.0.1}:8485:8485",
            "${GUI_SERVER_IP:-127.0.0.1}:8444:8444",
        ],
        volumes: &[
            "./gui2/run_mounts/certs:/certs",
            "./node2/run_mounts/data:/data",
            "./node2/run_mounts/etc:/fedbiomed/etc",
            "./node2/run_mounts/var:/fedbiomed/var",
            "./node2/run_mounts/envs/common:/fedbiomed/envs/common",
        ],
        wireguard: false,
    },
];

#[test]
fn compose_file_matches_fedbiomed_v4_5_0_services_mounts_and_variables() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    let home = dir.path().join("home");
    deploy(&home, &docker, &["configure"]).ok();
    let deploy_dir = home.join("deploy");
    let text = fs::read_to_string(deploy_dir.join("docker-compose.yml")).unwrap();
    assert!(text.contains("version: \"3.7\""));
    let services = compose_services(&text);
    let names: Vec<&str> = services.iter().map(|(n, _)| n.as_str()).collect();
    // Upstream's runnable services; node-gpu, node2-gpu and the build-only base images are the
    // README's documented differences.
    assert_eq!(
        names,
        [
            "vpnserver",
            "mqtt",
            "restful",
            "researcher",
            "node",
            "node2",
            "gui",
            "gui2"
        ]
    );
    let env_file = fs::read_to_string(deploy_dir.join(".env")).unwrap();
    for (u, (name, got)) in UPSTREAM.iter().zip(&services) {
        assert_eq!(u.name, name);
        let scalar = |k: &str| got.scalars.get(k).map(String::as_str);
        let list = |k: &str| got.lists.get(k).cloned().unwrap_or_default();
        let cn = format!("fedbiomed-vpn-{name}");
        assert_eq!(scalar("container_name"), Some(cn.as_str()), "{name}");
        assert_eq!(scalar("hostname"), Some(cn.as_str()), "{name}");
        assert_eq!(scalar("image"), Some(u.image), "{name}");
        let context = u.context.map(|c| {
            if c == UPSTREAM_REPO_ROOT {
                "${FEDBIOMED_DIR:-./fedbiomed}"
            } else {
                c
            }
        });
        assert_eq!(scalar("build.context"), context, "{name}");
        assert_eq!(scalar("build.dockerfile"), u.dockerfile, "{name}");
        let args: Vec<String> = list("build.args")
            .iter()
            .map(|a| effective_env(a))
            .collect();
        assert_eq!(args, u.args, "{name} build args");
        let env: Vec<String> = list("environment")
            .iter()
            .map(|a| effective_env(a))
            .collect();
        assert_eq!(env, u.env, "{name} environment");
        assert_eq!(list("ports"), u.ports, "{name} ports");
        assert_eq!(list("volumes"), u.volumes, "{name} volumes");
        let (caps, devices) = if u.wireguard {
            (vec!["net_admin", "sys_module"], vec!["/dev/net/tun"])
        } else {
            (vec![], vec![])
        };
        assert_eq!(list("cap_add"), caps, "{name}");
        assert_eq!(list("devices"), devices, "{name}");
        // Upstream has no restart policy, no networks (the default one) and no runtime for
        // these services; secagg adds only depends_on (README's difference table).
        assert!(scalar("restart").is_none() && list("networks").is_empty());
        let after_vpnserver = ["mqtt", "restful", "researcher"].contains(&name.as_str());
        assert_eq!(
            list("depends_on"),
            if after_vpnserver {
                vec!["vpnserver".to_owned()]
            } else {
                vec![]
            },
            "{name}"
        );
        // Every mount's host directory exists (none is left for docker to create as root).
        for v in u.volumes {
            let host = v.split(':').next().unwrap();
            assert!(deploy_dir.join(host).is_dir(), "{host}");
        }
        // Every ${VAR} the file uses without a default has a value in .env.
        for e in list("environment").iter().chain(&list("build.args")) {
            if let Some((var, _)) = e.split_once("=${") {
                if !e.contains(":-") {
                    assert!(env_file.contains(&format!("\n{var}=")), "{var} not in .env");
                }
            }
        }
    }
    for line in [
        "MPSPDZ_URL=https://github.com/data61/MP-SPDZ.git",
        "MPSPDZ_COMMIT=cd25c2e9f192a14be2430f48e8d4e3855cb68dc0",
        "FEDBIOMED_DIR=./fedbiomed",
        "RESEARCHER_HOST=127.0.0.1",
        "GUI_SERVER_IP=127.0.0.1",
    ] {
        assert!(env_file.lines().any(|l| l == line), "{line} not in .env");
    }
    // The README lists the differences this test allows.
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    for needle in [
        "`../../..`",
        "`${FEDBIOMED_DIR:-./fedbiomed}`",
        "`depends_on`",
        "`node-gpu`",
        "`base`",
        "`${DJANGO_SUPERUSER_PASSWORD:-admin123}`",
        "`CONTAINER_UID=${CONTAINER_UID}`",
    ] {
        assert!(
            readme.contains(needle),
            "README's difference table: {needle}"
        );
    }
}

#[test]
fn configure_writes_the_vpnservers_config_env_and_wg0_conf_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let docker = fake_docker(dir.path());
    let home = dir.path().join("server");
    secagg(
        &home,
        &["vpn", "init", "--public-addr", "vpn.example.org:51821"],
    )
    .ok();
    secagg(&home, &["vpn", "genconf", "node", "hospital1"]).ok();
    let key = "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=";
    secagg(&home, &["vpn", "add", "node", "hospital1", key]).ok();
    deploy(&home, &docker, &["configure", "vpnserver", "node", "node2"]).ok();
    let config = home.join("deploy/vpnserver/run_mounts/config");
    let env = fs::read_to_string(config.join("config.env")).unwrap();
    // The variables Fed-BioMed's vpnserver entrypoint requires (check_vpn_environ) and its
    // config.env.sample sets, with this registry's values.
    let vars: Vec<&str> = env.lines().filter(|l| l.starts_with("export ")).collect();
    assert_eq!(
        vars,
        [
            "export USE_WG_KERNEL_MOD=false",
            "export VPN_SERVER_PUBLIC_ADDR=vpn.example.org",
            "export VPN_SERVER_PORT=51821",
            "export VPN_IP=10.220.0.1",
            "export VPN_SUBNET_PREFIX=14",
            "export VPN_MANAGEMENT_IP_ASSIGN=10.220.0.0/16",
            "export VPN_NODE_IP_ASSIGN=10.221.0.0/16",
            "export VPN_RESEARCHER_IP_ASSIGN=10.222.0.0/16",
        ]
    );
    // wireguard/wg0.conf, which the entrypoint loads instead of making a new key: the server
    // configuration of `secagg vpn server-config`, private.
    let wg = config.join("wireguard/wg0.conf");
    assert_eq!(
        fs::read_to_string(&wg).unwrap(),
        secagg(&home, &["vpn", "server-config", "--stdout"])
            .ok()
            .stdout
    );
    for f in [config.join("config.env"), wg] {
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // node2 is registered as Fed-BioMed's NODE2TAG, next to NODETAG.
    let list = secagg(&home, &["vpn", "list", "--format", "json"])
        .ok()
        .json();
    let peers: Vec<String> = list["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["id"].as_str().unwrap(),
                p["address"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        peers,
        [
            "hospital1 10.221.0.2",
            "NODETAG 10.221.0.3",
            "NODE2TAG 10.221.0.4"
        ]
    );
    assert!(home
        .join("deploy/node2/run_mounts/config/config.env")
        .is_file());
    // Dry run: the step is shown, nothing is written.
    let other = dir.path().join("other");
    secagg(&other, &["vpn", "init", "--public-addr", "192.0.2.1"]).ok();
    let r = deploy(&other, &docker, &["configure", "vpnserver", "--dry-run"]);
    r.ok();
    assert!(
        r.stdout
            .contains("config/config.env (mode 600) and secagg vpn server-config -o"),
        "{}",
        r.stdout
    );
    assert!(!other.join("deploy").exists());
}
