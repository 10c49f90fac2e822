//! Thin orchestration of the deployment's containers over `docker compose` (or the older
//! `docker-compose`), as Fed-BioMed's `fedbiomed_vpn` script does, for its services: `vpnserver`,
//! `mqtt`, `restful`, `researcher` on the server machine, `node`, `gui` (and `node2`, `gui2` for a
//! second node) on a node machine.
//!
//! [`plan`] turns a verb and a service selection into [`Step`]s (files to write, commands to run);
//! `--dry-run` shows them, [`execute`] carries them out. The compose project lives in
//! `<home>/deploy/` (`docker-compose.yml`, `.env`, and `<service>/run_mounts/…` for the mounts).
//! The compose file is generated from [`SERVICES`] with Fed-BioMed v4.5.0's service names,
//! container and host names, images, build arguments, `CONTAINER_*` variables, mounts and ports,
//! so that Fed-BioMed's images run unchanged; vpnserver, mqtt and restful are built from
//! `<home>/deploy/<service>/build_files/`, node, researcher and gui from the Fed-BioMed checkout
//! named by `FEDBIOMED_DIR` in `.env`. Before running anything, [`detect_engine`] checks that a
//! container engine answers and says clearly what is missing.
//!
//! `configure` on a VPN server home (one where `secagg vpn init` ran) also writes the vpnserver's
//! `config.env` and `wireguard/wg0.conf` from the registry (so the container keeps secagg's server
//! key and peers), registers the VPN clients among the selected services (mqtt and restful as
//! `management`, researcher as `researcher researcher1`, node as `node NODETAG`, node2 as `node
//! NODE2TAG`, as Fed-BioMed does) unless they already are, and copies each one's `config.env` into
//! `<service>/run_mounts/config/`.

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::fs_secure::{self, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::home::Home;
use crate::vpn::wgconf::ConfigForm;
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

/// How a service's image is built (none: it reuses another service's image, as `node2` / `gui2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// From `./<service>/build_files` (its Dockerfile and entrypoint, as Fed-BioMed's).
    Local,
    /// From a Fed-BioMed checkout (`${FEDBIOMED_DIR}`, see `.env`) with its
    /// `envs/vpn/docker/<service>/build_files/Dockerfile`; `mpspdz`: the MP-SPDZ build arguments.
    Checkout {
        /// Pass `MPSPDZ_COMMIT` and `MPSPDZ_URL`.
        mpspdz: bool,
    },
}

/// A service of the deployment, with what its compose entry is generated from (the same
/// names, mounts and variables as Fed-BioMed v4.5.0's `envs/vpn/docker/docker-compose.yml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Compose service name.
    pub name: &'static str,
    /// Where it runs.
    pub side: Side,
    /// Its VPN peer registration (type, id), if it is a VPN client.
    #[serde(skip)]
    pub vpn_peer: Option<(PeerType, &'static str)>,
    /// Its image (Fed-BioMed's name, so that images built by `fedbiomed_vpn` are used as they are).
    #[serde(skip)]
    pub image: &'static str,
    /// How its image is built.
    #[serde(skip)]
    pub build: Option<Build>,
    /// Runs WireGuard (`net_admin`, `sys_module`, `/dev/net/tun`).
    #[serde(skip)]
    pub wireguard: bool,
    /// Environment entries besides the `CONTAINER_*` ones, before them when `env_first`.
    #[serde(skip)]
    pub environment: &'static [&'static str],
    /// Whether [`Service::environment`] comes before the `CONTAINER_*` entries (as in upstream's
    /// gui) or after them (restful).
    #[serde(skip)]
    pub env_first: bool,
    /// Published ports.
    #[serde(skip)]
    pub ports: &'static [&'static str],
    /// Mounts: (host directory relative to the project, container path).
    #[serde(skip)]
    pub volumes: &'static [(&'static str, &'static str)],
    /// Started after vpnserver (server machine's VPN clients).
    #[serde(skip)]
    pub after_vpnserver: bool,
}

impl Service {
    /// Container name and host name, as Fed-BioMed's (`fedbiomed-vpn-<service>`; `fedbiomed_vpn
    /// status` looks containers up by it).
    pub fn container_name(&self) -> String {
        format!("fedbiomed-vpn-{}", self.name)
    }
}

const NODE_VOLUMES: [(&str, &str); 5] = [
    ("node/run_mounts/config", "/config"),
    ("node/run_mounts/data", "/data"),
    ("node/run_mounts/etc", "/fedbiomed/etc"),
    ("node/run_mounts/var", "/fedbiomed/var"),
    ("node/run_mounts/envs/common", "/fedbiomed/envs/common"),
];
const NODE2_VOLUMES: [(&str, &str); 5] = [
    ("node2/run_mounts/config", "/config"),
    ("node2/run_mounts/data", "/data"),
    ("node2/run_mounts/etc", "/fedbiomed/etc"),
    ("node2/run_mounts/var", "/fedbiomed/var"),
    ("node2/run_mounts/envs/common", "/fedbiomed/envs/common"),
];

/// The deployment's services, in start order (Fed-BioMed's `fedbiomed_vpn` containers).
pub const SERVICES: [Service; 8] = [
    Service {
        name: "vpnserver",
        side: Side::Server,
        vpn_peer: None,
        image: "fedbiomed/vpn-vpnserver",
        build: Some(Build::Local),
        wireguard: true,
        environment: &[],
        env_first: false,
        ports: &["51820:51820/udp"],
        volumes: &[("vpnserver/run_mounts/config", "/config")],
        after_vpnserver: false,
    },
    Service {
        name: "mqtt",
        side: Side::Server,
        vpn_peer: Some((PeerType::Management, "mqtt")),
        image: "fedbiomed/vpn-mqtt",
        build: Some(Build::Local),
        wireguard: true,
        environment: &[],
        env_first: false,
        ports: &[],
        volumes: &[("mqtt/run_mounts/config", "/config")],
        after_vpnserver: true,
    },
    Service {
        name: "restful",
        side: Side::Server,
        vpn_peer: Some((PeerType::Management, "restful")),
        image: "fedbiomed/vpn-restful",
        build: Some(Build::Local),
        wireguard: true,
        environment: &[
            "PRODUCTION=1",
            "DJANGO_SUPERUSER_USERNAME=admin",
            "DJANGO_SUPERUSER_EMAIL=dummy@fedbiomed.org",
            "DJANGO_SUPERUSER_PASSWORD=${DJANGO_SUPERUSER_PASSWORD:-admin123}",
        ],
        env_first: false,
        ports: &[],
        volumes: &[
            ("restful/run_mounts/app", "/app"),
            ("restful/run_mounts/config", "/config"),
        ],
        after_vpnserver: true,
    },
    Service {
        name: "researcher",
        side: Side::Server,
        vpn_peer: Some((PeerType::Researcher, "researcher1")),
        image: "fedbiomed/vpn-researcher",
        build: Some(Build::Checkout { mpspdz: true }),
        wireguard: true,
        environment: &[],
        env_first: false,
        ports: &[
            "${RESEARCHER_HOST:-127.0.0.1}:8888:8888",
            "${RESEARCHER_HOST:-127.0.0.1}:6006:6007",
            "14000",
        ],
        volumes: &[
            ("researcher/run_mounts/config", "/config"),
            ("researcher/run_mounts/data", "/data"),
            ("researcher/run_mounts/etc", "/fedbiomed/etc"),
            (
                "researcher/run_mounts/samples",
                "/fedbiomed/notebooks/samples",
            ),
            ("researcher/run_mounts/runs", "/fedbiomed/runs"),
            ("researcher/run_mounts/var", "/fedbiomed/var"),
        ],
        after_vpnserver: true,
    },
    Service {
        name: "node",
        side: Side::Node,
        vpn_peer: Some((PeerType::Node, "NODETAG")),
        image: "fedbiomed/vpn-node",
        build: Some(Build::Checkout { mpspdz: true }),
        wireguard: true,
        environment: &[],
        env_first: false,
        ports: &["14001"],
        volumes: &NODE_VOLUMES,
        after_vpnserver: false,
    },
    Service {
        name: "node2",
        side: Side::Node,
        vpn_peer: Some((PeerType::Node, "NODE2TAG")),
        image: "fedbiomed/vpn-node",
        build: None,
        wireguard: true,
        environment: &[],
        env_first: false,
        ports: &["14002"],
        volumes: &NODE2_VOLUMES,
        after_vpnserver: false,
    },
    Service {
        name: "gui",
        side: Side::Node,
        vpn_peer: None,
        image: "fedbiomed/vpn-gui",
        build: Some(Build::Checkout { mpspdz: false }),
        wireguard: false,
        environment: &[
            "SSL_ON=true",
            "GUI_SERVER_NAME",
            "NGINX_PORT_SSL=8443",
            "NGINX_PORT_NOSSL=8484",
        ],
        env_first: true,
        ports: &[
            "${GUI_SERVER_IP:-127.0.0.1}:8484:8484",
            "${GUI_SERVER_IP:-127.0.0.1}:8443:8443",
        ],
        volumes: &[
            ("gui/run_mounts/certs", "/certs"),
            NODE_VOLUMES[1],
            NODE_VOLUMES[2],
            NODE_VOLUMES[3],
            NODE_VOLUMES[4],
        ],
        after_vpnserver: false,
    },
    Service {
        name: "gui2",
        side: Side::Node,
        vpn_peer: None,
        image: "fedbiomed/vpn-gui",
        build: None,
        wireguard: false,
        environment: &[
            "SSL_ON=true",
            "GUI_SERVER_NAME",
            "NGINX_PORT_SSL=8444",
            "NGINX_PORT_NOSSL=8485",
        ],
        env_first: true,
        ports: &[
            "${GUI_SERVER_IP:-127.0.0.1}:8485:8485",
            "${GUI_SERVER_IP:-127.0.0.1}:8444:8444",
        ],
        volumes: &[
            ("gui2/run_mounts/certs", "/certs"),
            NODE2_VOLUMES[1],
            NODE2_VOLUMES[2],
            NODE2_VOLUMES[3],
            NODE2_VOLUMES[4],
        ],
        after_vpnserver: false,
    },
];

/// The run-time identity variables every service gets (Fed-BioMed's images create and switch to
/// this account; `.env` holds the values of the user who ran `configure`).
pub const CONTAINER_VARS: [&str; 4] = [
    "CONTAINER_UID",
    "CONTAINER_GID",
    "CONTAINER_USER",
    "CONTAINER_GROUP",
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
    /// Write the vpnserver's Fed-BioMed configuration from this home's VPN registry: `config.env`
    /// (addresses and pools, 0600) and `wireguard/wg0.conf` (`secagg vpn server-config`: the
    /// server key and the registered peers, 0600), so that the vpnserver keeps secagg's key.
    VpnServerConfig {
        /// The vpnserver's config mount.
        dir: PathBuf,
        /// The `config.env` content.
        #[serde(skip)]
        config_env: String,
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
            Step::VpnServerConfig { dir, .. } => write!(
                f,
                "write {} (mode 600) and secagg vpn server-config -o {} (mode 600)",
                quote(&dir.join("config.env").to_string_lossy()),
                quote(&dir.join("wireguard/wg0.conf").to_string_lossy())
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
    /// What the plan leaves undone that the services will miss.
    pub warnings: Vec<String>,
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
                "the services are {} (server machine: vpnserver mqtt restful researcher; node machine: node gui, and node2 gui2 for a second node)",
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
    let mut warnings = Vec::new();
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
            let server = vpn_server::list(home).ok().map(|l| l.server);
            let mut dirs: Vec<PathBuf> = Vec::new();
            for s in &selected {
                for (host, _) in s.volumes {
                    let d = dir.join(host);
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
                if s.build == Some(Build::Local) {
                    dirs.push(dir.join(s.name).join("build_files"));
                }
            }
            steps.extend(dirs.into_iter().map(|path| Step::CreateDir { path }));
            let mut server_steps = Vec::new();
            for s in &selected {
                let config = dir.join(s.name).join("run_mounts/config");
                match (s.vpn_peer, &server) {
                    (Some((kind, id)), Some(_)) => {
                        let name = PeerName::parse(id)?;
                        steps.push(Step::VpnGenconf {
                            kind,
                            id: name.clone(),
                        });
                        steps.push(Step::CopyConfig {
                            from: vpn::peer_config_path(home, kind, &name),
                            to: config.join("config.env"),
                        });
                    }
                    (Some((kind, id)), None) => warnings.push(format!(
                        "{}: no VPN server in this home, so {} gets no config.env (copy the one of `secagg vpn genconf {kind} {id}` from the VPN server there)",
                        s.name,
                        config.display()
                    )),
                    (None, _) if s.name == "vpnserver" => match &server {
                        Some(info) => {
                            // Written after the registrations, so that wg0.conf lists them.
                            server_steps.push(Step::CreateDir {
                                path: config.join("wireguard"),
                            });
                            server_steps.push(Step::VpnServerConfig {
                                dir: config,
                                config_env: vpnserver_config_env(info),
                            });
                        }
                        None => warnings.push(format!(
                            "vpnserver: no VPN server in this home, so {} gets no config.env (run `secagg vpn init --public-addr HOST` here first, then `secagg deploy configure vpnserver`)",
                            config.display()
                        )),
                    },
                    (None, _) => {}
                }
            }
            steps.append(&mut server_steps);
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
                    args.extend(["--rmi", "all"]);
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
                    let mut images: Vec<&str> = Vec::new();
                    for s in &selected {
                        if !images.contains(&s.image) {
                            images.push(s.image);
                        }
                    }
                    argv.extend(images.iter().map(|i| i.to_string()));
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
        warnings,
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
            Step::VpnServerConfig { dir, config_env } => {
                let wg = vpn_server::server_config(home, ConfigForm::Wg)?;
                fs_secure::write_atomic(
                    &dir.join("config.env"),
                    config_env.as_bytes(),
                    SECRET_FILE_MODE,
                )?;
                fs_secure::write_atomic(
                    &dir.join("wireguard/wg0.conf"),
                    wg.as_bytes(),
                    SECRET_FILE_MODE,
                )?;
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

/// Fed-BioMed v4.5.0's pinned MP-SPDZ (its `.gitmodules` URL and `modules/MP-SPDZ` commit), the
/// build arguments `fedbiomed_vpn build` passes to the node and researcher images.
pub const MPSPDZ_URL: &str = "https://github.com/data61/MP-SPDZ.git";
/// See [`MPSPDZ_URL`].
pub const MPSPDZ_COMMIT: &str = "cd25c2e9f192a14be2430f48e8d4e3855cb68dc0";

fn id_output(arg: &str) -> String {
    Command::new("id")
        .arg(arg)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The current account as `fedbiomed_vpn` passes it (`id -u`, `id -g`, and `id -un`, `id -gn`
/// with every non-alphanumeric character replaced by `_`); empty values when `id` fails (the
/// images then use their build-time account).
fn container_ids() -> [(&'static str, String); 4] {
    let name = |s: String| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect()
    };
    [
        ("CONTAINER_UID", id_output("-u")),
        ("CONTAINER_GID", id_output("-g")),
        ("CONTAINER_USER", name(id_output("-un"))),
        ("CONTAINER_GROUP", name(id_output("-gn"))),
    ]
}

/// The `.env` file compose reads for the `${…}` variables (the shell's values win).
fn env_file() -> String {
    let mut s = String::from(
        "# Written by `secagg deploy configure`; compose reads it for the ${…} variables of docker-compose.yml\n\
# (a variable set in the shell wins).\n\
# Host addresses of the local UIs (loopback by default, as in Fed-BioMed).\n\
RESEARCHER_HOST=127.0.0.1\nGUI_SERVER_IP=127.0.0.1\n\
# The account the containers run as (what fedbiomed_vpn passes: id -u, id -g, id -un, id -gn).\n",
    );
    for (k, v) in container_ids() {
        s.push_str(&format!("{k}={v}\n"));
    }
    s.push_str(&format!(
        "# A Fed-BioMed v4.5.0 checkout: the node, researcher and gui images are built from it.\n\
FEDBIOMED_DIR=./fedbiomed\n\
# MP-SPDZ as pinned by Fed-BioMed v4.5.0 (build arguments of the node and researcher images).\n\
MPSPDZ_URL={MPSPDZ_URL}\nMPSPDZ_COMMIT={MPSPDZ_COMMIT}\n"
    ));
    s
}

fn render_service(out: &mut String, s: &Service) {
    let cn = s.container_name();
    let ids: Vec<String> = CONTAINER_VARS
        .iter()
        .map(|v| format!("{v}=${{{v}}}"))
        .collect();
    out.push_str(&format!(
        "  {}:\n    container_name: {cn}\n    hostname: {cn}\n",
        s.name
    ));
    match s.build {
        None => {}
        Some(b) => {
            out.push_str("    build:\n");
            let mut args = ids.clone();
            match b {
                Build::Local => {
                    out.push_str(&format!("      context: ./{}/build_files\n", s.name));
                }
                Build::Checkout { mpspdz } => {
                    out.push_str(&format!(
                        "      context: ${{FEDBIOMED_DIR:-./fedbiomed}}\n      dockerfile: envs/vpn/docker/{}/build_files/Dockerfile\n",
                        s.name
                    ));
                    if mpspdz {
                        args.push("MPSPDZ_COMMIT=${MPSPDZ_COMMIT}".into());
                        args.push("MPSPDZ_URL=${MPSPDZ_URL}".into());
                    }
                }
            }
            out.push_str("      args:\n");
            for a in &args {
                out.push_str(&format!("        - \"{a}\"\n"));
            }
        }
    }
    out.push_str(&format!("    image: {}\n    environment:\n", s.image));
    let mut env: Vec<String> = Vec::new();
    let extra = s.environment.iter().map(|e| e.to_string());
    if s.env_first {
        env.extend(extra);
        env.extend(ids);
    } else {
        env.extend(ids);
        env.extend(extra);
    }
    for e in &env {
        out.push_str(&format!("      - \"{e}\"\n"));
    }
    if !s.ports.is_empty() {
        out.push_str("    ports:\n");
        for p in s.ports {
            out.push_str(&format!("      - \"{p}\"\n"));
        }
    }
    if s.wireguard {
        out.push_str("    cap_add:\n      - net_admin\n      - sys_module\n    devices:\n      - /dev/net/tun\n");
    }
    out.push_str("    volumes:\n");
    for (host, inside) in s.volumes {
        out.push_str(&format!("      - ./{host}:{inside}\n"));
    }
    if s.after_vpnserver {
        out.push_str("    depends_on:\n      - vpnserver\n");
    }
}

/// The compose file of the deployment (compose format 3.7, accepted by compose v1 and v2),
/// generated from [`SERVICES`].
pub fn compose_file() -> String {
    let mut out = String::from(
        r#"# Compose project of a secagg / Fed-BioMed VPN deployment, written by `secagg deploy configure`
# with the services, names, mounts and variables of Fed-BioMed v4.5.0's envs/vpn/docker/docker-compose.yml.
# Server machine: vpnserver, mqtt, restful, researcher. Node machine: node, gui (node2, gui2: a second node).
# vpnserver, mqtt and restful are built from ./<service>/build_files; node, researcher and gui from the
# Fed-BioMed checkout named by FEDBIOMED_DIR (.env); node2 and gui2 reuse the node and gui images.
# Only vpnserver is reachable from outside (UDP 51820); mqtt (10.220.0.2:1883) and restful
# (10.220.0.3:8000) are reached through the VPN, as are the secure-aggregation endpoints of the
# researcher (14000) and nodes (14001, 14002). The UIs listen on loopback unless .env says otherwise.
version: "3.7"

services:
"#,
    );
    for (i, s) in SERVICES.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_service(&mut out, s);
    }
    out
}

/// The vpnserver's `config.env` (Fed-BioMed's `vpnserver/run_mounts/config/config.env`, which its
/// entrypoint sources), from this home's VPN registry.
pub fn vpnserver_config_env(server: &vpn_server::ServerInfo) -> String {
    let host = server
        .endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(&server.endpoint)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let pool = |kind: PeerType| {
        server
            .pools
            .iter()
            .find(|p| p.kind == kind)
            .map(|p| p.pool.to_string())
            .unwrap_or_default()
    };
    format!(
        "# Fed-BioMed VPN server configuration, written by `secagg deploy configure` from the VPN registry\n\
# of this home (`secagg vpn list`); the vpnserver entrypoint sources it.\n\
# force use of boringtun over wireguard kernel module\n\
export USE_WG_KERNEL_MOD=false\n\n\
export VPN_SERVER_PUBLIC_ADDR={host}\n\
export VPN_SERVER_PORT={port}\n\n\
export VPN_IP={ip}\n\
export VPN_SUBNET_PREFIX={prefix}\n\
export VPN_MANAGEMENT_IP_ASSIGN={m}\n\
export VPN_NODE_IP_ASSIGN={n}\n\
export VPN_RESEARCHER_IP_ASSIGN={r}\n",
        port = server.listen_port,
        ip = server.server_address,
        prefix = server.network.prefix(),
        m = pool(PeerType::Management),
        n = pool(PeerType::Node),
        r = pool(PeerType::Researcher),
    )
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
        let e = select(&["node3".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown service `node3`"));
        let v1 = ComposeTool::Standalone {
            program: "docker-compose".into(),
        };
        assert!(argv(&plan(&home, Verb::Build, &[], v1, &o).unwrap())[0]
            .starts_with("docker-compose --project-name secagg"));
    }

    #[test]
    fn vpnserver_config_is_written_after_the_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("h"));
        let tool = ComposeTool::default_plugin();
        let o = Options::default();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Not a VPN server: nothing to write into the config mounts, and the plan says so.
        let p = plan(
            &home,
            Verb::Configure,
            &names(&["vpnserver", "node2"]),
            tool.clone(),
            &o,
        )
        .unwrap();
        assert!(!p.steps.iter().any(|s| matches!(
            s,
            Step::VpnServerConfig { .. } | Step::VpnGenconf { .. } | Step::CopyConfig { .. }
        )));
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings[1].starts_with("node2: no VPN server in this home"));
        let req = vpn_server::InitRequest {
            public_endpoint: vpn::config_env::parse_endpoint("[2001:db8::1]:51821", Some(51820))
                .unwrap(),
            network: None,
            force: false,
        };
        vpn_server::init(&home, &req, OffsetDateTime::now_utc()).unwrap();
        let p = plan(
            &home,
            Verb::Configure,
            &names(&["vpnserver", "node2"]),
            tool,
            &o,
        )
        .unwrap();
        assert!(p.warnings.is_empty());
        let kinds: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::VpnGenconf { .. } => Some("genconf"),
                Step::CopyConfig { .. } => Some("copy"),
                Step::VpnServerConfig { .. } => Some("server"),
                Step::Run { .. } => Some("run"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["genconf", "copy", "server", "run"]);
        let env = p
            .steps
            .iter()
            .find_map(|s| match s {
                Step::VpnServerConfig { config_env, .. } => Some(config_env.clone()),
                _ => None,
            })
            .unwrap();
        assert!(
            env.contains("\nexport VPN_SERVER_PUBLIC_ADDR=2001:db8::1\n"),
            "{env}"
        );
        assert!(env.contains("\nexport VPN_SERVER_PORT=51821\n"));
        assert!(env.contains("\nexport VPN_NODE_IP_ASSIGN=10.221.0.0/16\n"));
    }
}
