//! `secagg deploy`: build, configure, start, stop, show and clean the deployment's containers
//! through `docker compose` (or `docker-compose`).

use std::path::Path;

use clap::{Args, Subcommand};
use secagg_core::deploy::{self, Options, Verb};
use secagg_core::home::Home;

use crate::output::{self, Format};

const SERVICES_HELP: &str = "Services: vpnserver, mqtt, restful, researcher (server machine); node, gui, and node2, gui2 \
for a second node (node machine), as in Fed-BioMed's envs/vpn/docker/docker-compose.yml. None named = all. The compose project lives in <home>/deploy/. Set SECAGG_DOCKER / SECAGG_DOCKER_COMPOSE to use \
other docker / docker-compose programs.";

/// Drive the deployment's containers (compose project in <home>/deploy/).
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Build the images (from <home>/deploy/<service>/build_files/).
    Build(VerbArgs),
    /// Write the compose project; on a VPN server home, also write the vpnserver's config.env and
    /// wireguard/wg0.conf, register the selected VPN clients (mqtt, restful, researcher1, NODETAG,
    /// NODE2TAG) and copy their config.env into their mounts.
    Configure(VerbArgs),
    /// Start the containers (`up --detach`).
    Start(VerbArgs),
    /// Stop and remove the containers.
    Stop(VerbArgs),
    /// Show the containers (`ps --all`).
    Status(VerbArgs),
    /// Remove the containers and their volumes (with --images, the images too).
    Clean(CleanArgs),
}

/// Arguments shared by the verbs.
#[derive(Debug, Args)]
#[command(after_help = SERVICES_HELP)]
pub struct VerbArgs {
    /// Services (none = all).
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
    /// Print the exact commands (and files) without running (or writing) anything.
    #[arg(long)]
    dry_run: bool,
    /// Output format of --dry-run.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Arguments of `deploy clean`.
#[derive(Debug, Args)]
#[command(after_help = SERVICES_HELP)]
pub struct CleanArgs {
    #[command(flatten)]
    common: VerbArgs,
    /// Also remove the images.
    #[arg(long)]
    images: bool,
}

/// Runs `secagg deploy …`.
pub fn run(home: &Path, cmd: DeployCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    let (verb, a, options) = match cmd {
        DeployCommand::Build(a) => (Verb::Build, a, Options::default()),
        DeployCommand::Configure(a) => (Verb::Configure, a, Options::default()),
        DeployCommand::Start(a) => (Verb::Start, a, Options::default()),
        DeployCommand::Stop(a) => (Verb::Stop, a, Options::default()),
        DeployCommand::Status(a) => (Verb::Status, a, Options::default()),
        DeployCommand::Clean(c) => (Verb::Clean, c.common, Options { images: c.images }),
    };
    // Refuse unknown services before looking for an engine.
    deploy::select(&a.services)?;
    let (tool, warning) = deploy::tool_for(a.dry_run)?;
    if let Some(w) = warning {
        output::warn(w);
    }
    let plan = deploy::plan(&home, verb, &a.services, tool, &options)?;
    // What the services will miss, shown with the plan or once it is carried out.
    let show_warnings = || {
        for w in &plan.warnings {
            output::warn(w);
        }
    };
    if a.dry_run {
        show_warnings();
        if let Some(e) = deploy::missing_project(&plan) {
            output::warn(format!("{e} (run `secagg deploy configure` first)"));
        }
        match a.format {
            Format::Json => output::print_json(&plan)?,
            Format::Text => {
                output::note(format!(
                    "dry run: secagg deploy {verb} would do ({}):",
                    plan.services.join(" ")
                ));
                for s in &plan.steps {
                    println!("{s}");
                }
            }
        }
        return Ok(());
    }
    deploy::execute(&home, &plan)?;
    show_warnings();
    if verb == Verb::Configure {
        output::note(format!(
            "compose project written to {}",
            plan.compose_file.display()
        ));
    }
    Ok(())
}
