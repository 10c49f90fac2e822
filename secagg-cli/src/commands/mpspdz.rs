//! `secagg mpspdz` (under construction).

use std::path::Path;

use clap::Subcommand;

/// Under construction.
#[derive(Debug, Subcommand)]
pub enum MpspdzCommand {
    /// Not available yet.
    Status,
}

/// Runs `secagg mpspdz …`.
pub fn run(_home: &Path, _cmd: MpspdzCommand) -> anyhow::Result<()> {
    anyhow::bail!("`secagg mpspdz` is not available yet")
}
