//! Thin orchestration of the deployment's containers over `docker compose` (or the older
//! `docker-compose`), as Fed-BioMed's `fedbiomed_vpn` script does, for the seed deployment's
//! services: `vpnserver`, `mqtt`, `restful`, `researcher` on the server machine, `node`, `gui` on a
//! node machine.
//!
//! [`plan`] turns a verb and a service selection into [`Step`]s (files to write, commands to run);
//! `--dry-run` shows them, [`execute`] carries them out. The compose project lives in
//! `<home>/deploy/` (`docker-compose.yml`, `.env`, and `<service>/run_mounts/…` for the mounts);
//! images are built from `<home>/deploy/<service>/build_files/` (put or link the Dockerfiles
//! there). Before running anything, [`detect_engine`] checks that a container engine answers and
//! says clearly what is missing.
//!
//! `configure` on a VPN server home (one where `secagg vpn init` ran) also registers the VPN
//! clients among the selected services (mqtt and restful as `management`, researcher as
//! `researcher researcher1`, node as `node NODETAG`, as Fed-BioMed does) unless they already are,
//! and copies each one's `config.env` into `<service>/run_mounts/config/`.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::home::Home;
use crate::vpn::{self, server as vpn_server, PeerName, PeerType};

/// Environment variable naming the `docker` program (default `docker`).
pub const DOCKER_ENV: &str = "SECAGG_DOCKER";
/// Environment variable naming the `docker-compose` v1 program (default `docker-compose`).
pub const DOCKER_COMPOSE_ENV: &str = "SECAGG_DOCKER_COMPOSE";
/// Compose project name.
pub const PROJECT: &str = "secagg";

/// Which machine a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The researcher's / VPN server's machine.
    Server,
    /// A hospital node's machine.
    Node,
}

/// A service of the deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Compose service name.
    pub name: &'static str,
    /// Where it runs.
    pub side: Side,
    /// Its VPN peer registration (type, id), if it is a VPN client.
    #[serde(skip)]
    pub vpn_peer: Option<(PeerType, &'static str)>,
    /// Mount directories under `<service>/run_mounts/`.
    #[serde(skip)]
    pub mounts: &'static [&'static str],
}

/// The seed deployment's services, in start order.
pub const SERVICES: [Service; 6] = [
    Service {
        name: "vpnserver",
        side: Side::Server,
        vpn_peer: None,
        mounts: &["config"],
    },
    Service {
        name: "mqtt",
        side: Side::Server,
        vpn_peer: Some((PeerType::Management, "mqtt")),
        mounts: &["config"],
    },
    Service {
        name: "restful",
        side: Side::Server,
        vpn_peer: Some((PeerType::Management, "restful")),
        mounts: &["config"],
    },
    Service {
        name: "researcher",
        side: Side::Server,
        vpn_peer: Some((PeerType::Researcher, "researcher1")),
        mounts: &["config", "data", "etc", "var", "samples", "runs"],
    },
    Service {
        name: "node",
        side: Side::Node,
        vpn_peer: Some((PeerType::Node, "NODETAG")),
        mounts: &["config", "data", "etc", "var", "common"],
    },
    Service {
        name: "gui",
        side: Side::Node,
        vpn_peer: None,
        mounts: &["certs"],
    },
];

/// The verbs of `secagg deploy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Build the images.
    Build,
    /// Write the compose project (and, on a VPN server, the VPN clients' configurations).
    Configure,
    /// Start the containers (`up -d`).
    Start,
    /// Stop and remove the containers.
    Stop,
    /// Show the containers.
    Status,
    /// Remove containers and their volumes (and, with `images`, the images).
    Clean,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Build => "build",
            Verb::Configure => "configure",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Status => "status",
            Verb::Clean => "clean",
        })
    }
}

/// Which compose program runs the project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ComposeTool {
    /// `docker compose` (the v2 plugin).
    Plugin {
        /// The docker program.
        docker: String,
    },
    /// `docker-compose` (v1, end of life).
    Standalone {
        /// The docker-compose program.
        program: String,
    },
}

impl ComposeTool {
    /// The default tool (`docker compose`, honouring `SECAGG_DOCKER`), used by `--dry-run` when no
    /// engine was detected.
    pub fn default_plugin() -> Self {
        ComposeTool::Plugin {
            docker: docker_program(),
        }
    }

    fn prefix(&self) -> Vec<String> {
        match self {
            ComposeTool::Plugin { docker } => vec![docker.clone(), "compose".into()],
            ComposeTool::Standalone { program } => vec![program.clone()],
        }
    }
}

fn docker_program() -> String {
    std::env::var(DOCKER_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "docker".into())
}

fn compose_v1_program() -> String {
    std::env::var(DOCKER_COMPOSE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "docker-compose".into())
}

/// What [`detect_engine`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Engine {
    /// The compose program.
    pub tool: ComposeTool,
    /// Set when falling back to `docker-compose` v1.
    pub warning: Option<String>,
}

fn probe(program: &str, args: &[&str]) -> std::result::Result<(), String> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("not installed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The compose tool for a run: for real, the detected engine (an error when there is none; its
/// warning, if any, is returned for the caller to show); for a dry run, which only shows the
/// commands, the detected tool or else the default `docker compose`, never an error.
pub fn tool_for(dry_run: bool) -> Result<(ComposeTool, Option<String>)> {
    if dry_run {
        return Ok((
            detect_engine()
                .map(|e| e.tool)
                .unwrap_or_else(|_| ComposeTool::default_plugin()),
            None,
        ));
    }
    let engine = detect_engine()?;
    Ok((engine.tool, engine.warning))
}

/// Checks that a container engine answers (`docker info`) and finds the compose program
/// (`docker compose`, else `docker-compose` with a warning).
pub fn detect_engine() -> Result<Engine> {
    let docker = docker_program();
    let hint = "install Docker Engine with the compose plugin and start it (`systemctl start docker`), or run where one is; `secagg deploy … --dry-run` prints the commands without running them";
    match probe(&docker, &["info", "--format", "{{.ServerVersion}}"]) {
        Ok(()) => {}
        Err(why) if why == "not installed" => {
            return Err(Error::external(format!(
                "no container engine: `{docker}` is not installed"
            ))
            .with_hint(hint))
        }
        Err(why) => {
            return Err(Error::external(format!(
                "no container engine: the docker client is installed but the daemon does not answer (`{docker} info`: {why})"
            ))
            .with_hint(hint))
        }
    }
    if probe(&docker, &["compose", "version"]).is_ok() {
        return Ok(Engine {
            tool: ComposeTool::Plugin { docker },
            warning: None,
        });
    }
    let v1 = compose_v1_program();
    if probe(&v1, &["version"]).is_ok() {
        return Ok(Engine {
            tool: ComposeTool::Standalone { program: v1.clone() },
            warning: Some(format!(
                "`{docker} compose` is not available, using `{v1}` (compose v1, no longer maintained)"
            )),
        });
    }
    Err(Error::external(format!(
        "docker answers but neither `{docker} compose` nor `{v1}` is installed"
    ))
    .with_hint("install the compose plugin (Debian: apt-get install docker-compose-plugin)"))
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Create a directory (0700).
    CreateDir {
        /// The directory.
        path: PathBuf,
    },
    /// Write a file atomically.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its content.
        #[serde(skip)]
        content: String,
        /// Its mode.
        mode: u32,
    },
    /// Register a VPN client on this VPN server (`secagg vpn genconf TYPE ID`) if it is not yet.
    VpnGenconf {
        /// Peer type.
        #[serde(rename = "type")]
        kind: PeerType,
        /// Peer id.
        id: PeerName,
    },
    /// Copy a peer's `config.env` into a service's config mount (0600).
    CopyConfig {
        /// The peer's config.env.
        from: PathBuf,
        /// Where the service reads it.
        to: PathBuf,
    },
    /// Run a command.
    Run {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateDir { path } => {
                write!(f, "mkdir -p -m 700 {}", quote(&path.to_string_lossy()))
            }
            Step::WriteFile { path, mode, .. } => {
                write!(
                    f,
                    "write {} (mode {mode:o})",
                    quote(&path.to_string_lossy())
                )
            }
            Step::VpnGenconf { kind, id } => {
                write!(f, "secagg vpn genconf {kind} {id} (unless it exists)")
            }
            Step::CopyConfig { from, to } => write!(
                f,
                "install -m 600 {} {}",
                quote(&from.to_string_lossy()),
                quote(&to.to_string_lossy())
            ),
            Step::Run { argv } => {
                let parts: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                f.write_str(&parts.join(" "))
            }
        }
    }
}

/// Options of a plan.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `clean`: also remove the images.
    pub images: bool,
}

/// What will be (or was) done.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The verb.
    pub verb: Verb,
    /// Selected services (all when none were named).
    pub services: Vec<&'static str>,
    /// The compose project's directory.
    pub project_dir: PathBuf,
    /// The compose file.
    pub compose_file: PathBuf,
    /// The compose program.
    pub tool: ComposeTool,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// `<home>/deploy/`.
pub fn project_dir(home: &Home) -> PathBuf {
    home.root().join("deploy")
}

/// Validates service names (none = all), keeping the deployment's order and dropping repeats.
pub fn select(names: &[String]) -> Result<Vec<&'static Service>> {
    for n in names {
        if !SERVICES.iter().any(|s| s.name == n) {
            let all: Vec<&str> = SERVICES.iter().map(|s| s.name).collect();
            return Err(Error::invalid(format!(
                "unknown service `{}`",
                n.escape_debug()
            ))
            .with_hint(format!(
                "the services are {} (server machine: vpnserver mqtt restful researcher; node machine: node gui)",
                all.join(", ")
            )));
        }
    }
    Ok(SERVICES
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect())
}

/// Builds the plan of `verb` on `names` (none = every service) with `tool`.
pub fn plan(
    home: &Home,
    verb: Verb,
    names: &[String],
    tool: ComposeTool,
    options: &Options,
) -> Result<Plan> {
    let selected = select(names)?;
    let dir = project_dir(home);
    let file = dir.join("docker-compose.yml");
    let mut base = tool.prefix();
    base.extend([
        "--project-name".into(),
        PROJECT.into(),
        "--file".into(),
        file.to_string_lossy().into_owned(),
    ]);
    let svc: Vec<String> = if names.is_empty() {
        Vec::new()
    } else {
        selected.iter().map(|s| s.name.to_owned()).collect()
    };
    let run = |args: &[&str], with_services: bool| {
        let mut argv = base.clone();
        argv.extend(args.iter().map(|a| a.to_string()));
        if with_services {
            argv.extend(svc.iter().cloned());
        }
        Step::Run { argv }
    };
    let mut steps = Vec::new();
    match verb {
        Verb::Build => steps.push(run(&["build"], true)),
        Verb::Configure => {
            steps.push(Step::CreateDir { path: dir.clone() });
            steps.push(Step::WriteFile {
                path: file.clone(),
                content: compose_file(),
                mode: PUBLIC_FILE_MODE,
            });
            steps.push(Step::WriteFile {
                path: dir.join(".env"),
                content: env_file(),
                mode: PUBLIC_FILE_MODE,
            });
            let vpn_server_here = vpn_server::list(home).is_ok();
            for s in &selected {
                for m in s.mounts {
                    steps.push(Step::CreateDir {
                        path: dir.join(s.name).join("run_mounts").join(m),
                    });
                }
                steps.push(Step::CreateDir {
                    path: dir.join(s.name).join("build_files"),
                });
                if let (Some((kind, id)), true) = (s.vpn_peer, vpn_server_here) {
                    let name = PeerName::parse(id)?;
                    steps.push(Step::VpnGenconf {
                        kind,
                        id: name.clone(),
                    });
                    steps.push(Step::CopyConfig {
                        from: vpn::peer_config_path(home, kind, &name),
                        to: dir.join(s.name).join("run_mounts/config/config.env"),
                    });
                }
            }
            steps.push(run(&["config", "--quiet"], false));
        }
        Verb::Start => steps.push(run(&["up", "--detach"], true)),
        Verb::Stop => {
            if svc.is_empty() {
                steps.push(run(&["down"], false));
            } else {
                steps.push(run(&["stop"], true));
                steps.push(run(&["rm", "--force"], true));
            }
        }
        Verb::Status => steps.push(run(&["ps", "--all"], true)),
        Verb::Clean => {
            if svc.is_empty() {
                let mut args = vec!["down", "--volumes", "--remove-orphans"];
                if options.images {
                    args.extend(["--rmi", "local"]);
                }
                steps.push(run(&args, false));
            } else {
                steps.push(run(&["rm", "--stop", "--force", "--volumes"], true));
                if options.images {
                    let mut argv = vec![
                        docker_program(),
                        "image".into(),
                        "rm".into(),
                        "--force".into(),
                    ];
                    argv.extend(svc.iter().map(|s| format!("{PROJECT}/{s}:latest")));
                    steps.push(Step::Run { argv });
                }
            }
        }
    }
    Ok(Plan {
        verb,
        services: selected.iter().map(|s| s.name).collect(),
        project_dir: dir,
        compose_file: file,
        tool,
        steps,
    })
}

/// Whether the compose project `plan` needs is missing (every verb but `configure` needs it).
pub fn missing_project(plan: &Plan) -> Option<Error> {
    (plan.verb != Verb::Configure && !plan.compose_file.is_file()).then(|| {
        Error::not_found(format!(
            "no compose project in `{}`",
            plan.project_dir.display()
        ))
        .with_hint("run `secagg deploy configure` first")
    })
}

/// Carries out `plan`, step by step; stops at the first failure, naming the command.
pub fn execute(home: &Home, plan: &Plan) -> Result<()> {
    if let Some(e) = missing_project(plan) {
        return Err(e);
    }
    for step in &plan.steps {
        match step {
            Step::CreateDir { path } => fs_secure::create_private_dir(path)?,
            Step::WriteFile {
                path,
                content,
                mode,
            } => fs_secure::write_atomic(path, content.as_bytes(), *mode)?,
            Step::VpnGenconf { kind, id } => {
                vpn_server::ensure_peer(home, *kind, id, OffsetDateTime::now_utc())?;
            }
            Step::CopyConfig { from, to } => {
                let bytes = fs_secure::read_limited(from, 64 * 1024, "config.env")?;
                fs_secure::write_atomic(to, &bytes, SECRET_FILE_MODE)?;
            }
            Step::Run { argv } => {
                let status = Command::new(&argv[0])
                    .args(&argv[1..])
                    .current_dir(&plan.project_dir)
                    .stdin(Stdio::null())
                    .status()
                    .map_err(|e| {
                        Error::external(format!("cannot run `{}`: {e}", argv[0]))
                            .with_hint("check that the container engine is installed")
                    })?;
                if !status.success() {
                    return Err(Error::external(format!("`{step}` failed ({status})"))
                        .with_hint("see the messages of the container engine above"));
                }
            }
        }
    }
    Ok(())
}

/// The `.env` file compose reads (defaults that keep every UI on loopback).
fn env_file() -> String {
    "# Written by `secagg deploy configure`; compose reads it for the ${…} variables of docker-compose.yml.\n\
# Host addresses of the local UIs (loopback by default, as in Fed-BioMed).\n\
RESEARCHER_HOST=127.0.0.1\nGUI_SERVER_IP=127.0.0.1\n"
        .to_owned()
}

/// The compose file of the seed deployment (compose format 3.7, accepted by compose v1 and v2).
pub fn compose_file() -> String {
    r#"# Compose project of a secagg / Fed-BioMed VPN deployment, written by `secagg deploy configure`.
# Server machine: vpnserver, mqtt, restful, researcher. Node machine: node, gui.
# Images are built from ./<service>/build_files (put or link the Dockerfiles there).
# Only vpnserver is reachable from outside (UDP 51820); mqtt (10.220.0.2:1883) and restful
# (10.220.0.3:8000) are reached through the VPN, as are the secure-aggregation endpoints of the
# researcher (14000) and nodes (14001+). The UIs listen on loopback unless .env says otherwise.
version: "3.7"

x-vpn-client: &vpn-client
  cap_add:
    - NET_ADMIN
  devices:
    - /dev/net/tun
  restart: unless-stopped

services:
  vpnserver:
    image: secagg/vpnserver:latest
    build: ./vpnserver/build_files
    cap_add:
      - NET_ADMIN
      - SYS_MODULE
    devices:
      - /dev/net/tun
    ports:
      - "51820:51820/udp"
    volumes:
      - ./vpnserver/run_mounts/config:/config
    restart: unless-stopped

  mqtt:
    <<: *vpn-client
    image: secagg/mqtt:latest
    build: ./mqtt/build_files
    volumes:
      - ./mqtt/run_mounts/config:/config
    depends_on:
      - vpnserver

  restful:
    <<: *vpn-client
    image: secagg/restful:latest
    build: ./restful/build_files
    volumes:
      - ./restful/run_mounts/config:/config
    depends_on:
      - vpnserver

  researcher:
    <<: *vpn-client
    image: secagg/researcher:latest
    build: ./researcher/build_files
    ports:
      - "${RESEARCHER_HOST:-127.0.0.1}:8888:8888"
      - "${RESEARCHER_HOST:-127.0.0.1}:6006:6007"
      - "14000"
    volumes:
      - ./researcher/run_mounts/config:/config
      - ./researcher/run_mounts/data:/data
      - ./researcher/run_mounts/etc:/fedbiomed/etc
      - ./researcher/run_mounts/var:/fedbiomed/var
      - ./researcher/run_mounts/samples:/fedbiomed/notebooks/samples
      - ./researcher/run_mounts/runs:/fedbiomed/runs
    depends_on:
      - vpnserver

  node:
    <<: *vpn-client
    image: secagg/node:latest
    build: ./node/build_files
    ports:
      - "14001"
    volumes:
      - ./node/run_mounts/config:/config
      - ./node/run_mounts/data:/data
      - ./node/run_mounts/etc:/fedbiomed/etc
      - ./node/run_mounts/var:/fedbiomed/var
      - ./node/run_mounts/common:/fedbiomed/envs/common

  gui:
    image: secagg/gui:latest
    build: ./gui/build_files
    ports:
      - "${GUI_SERVER_IP:-127.0.0.1}:8484:8484"
      - "${GUI_SERVER_IP:-127.0.0.1}:8443:8443"
    volumes:
      - ./gui/run_mounts/certs:/certs
      - ./node/run_mounts/data:/data
      - ./node/run_mounts/etc:/fedbiomed/etc
      - ./node/run_mounts/var:/fedbiomed/var
    restart: unless-stopped
"#
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match s {
                Step::Run { argv } => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commands_per_verb() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let tool = ComposeTool::Plugin {
            docker: "docker".into(),
        };
        let o = Options::default();
        let cfg = plan(&home, Verb::Configure, &[], tool.clone(), &o).unwrap();
        let f = cfg.compose_file.display().to_string();
        let pre = format!("docker compose --project-name secagg --file {f}");
        assert_eq!(argv(&cfg), [format!("{pre} config --quiet")]);
        // Nothing written by planning; the other verbs need the project.
        assert!(!home.root().exists());
        let start = plan(&home, Verb::Start, &[], tool.clone(), &o).unwrap();
        assert_eq!(
            missing_project(&start).unwrap().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(
            execute(&home, &start).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        fs_secure::create_private_dir(&project_dir(&home)).unwrap();
        std::fs::write(&cfg.compose_file, compose_file()).unwrap();
        let s = |v, n: &[&str]| {
            let names: Vec<String> = n.iter().map(|s| s.to_string()).collect();
            argv(&plan(&home, v, &names, tool.clone(), &o).unwrap())
        };
        assert_eq!(s(Verb::Build, &["node"]), [format!("{pre} build node")]);
        assert_eq!(
            s(Verb::Start, &["node", "vpnserver", "node"]),
            [format!("{pre} up --detach vpnserver node")]
        );
        assert_eq!(s(Verb::Stop, &[]), [format!("{pre} down")]);
        assert_eq!(
            s(Verb::Stop, &["gui"]),
            [format!("{pre} stop gui"), format!("{pre} rm --force gui")]
        );
        assert_eq!(s(Verb::Status, &[]), [format!("{pre} ps --all")]);
        assert_eq!(
            s(Verb::Clean, &[]),
            [format!("{pre} down --volumes --remove-orphans")]
        );
        let e = select(&["node2".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown service `node2`"));
        let v1 = ComposeTool::Standalone {
            program: "docker-compose".into(),
        };
        assert!(argv(&plan(&home, Verb::Build, &[], v1, &o).unwrap())[0]
            .starts_with("docker-compose --project-name secagg"));
    }
}
