//! `secagg deploy` (under construction).

use std::path::Path;

use clap::Subcommand;

/// Under construction.
#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// Not available yet.
    Status,
}

/// Runs `secagg deploy …`.
pub fn run(_home: &Path, _cmd: DeployCommand) -> anyhow::Result<()> {
    anyhow::bail!("`secagg deploy` is not available yet")
}
