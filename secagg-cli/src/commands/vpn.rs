//! `secagg vpn` (under construction).

use std::path::Path;

use clap::Subcommand;

/// Under construction.
#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// Not available yet.
    Status,
}

/// Runs `secagg vpn …`.
pub fn run(_home: &Path, _cmd: VpnCommand) -> anyhow::Result<()> {
    anyhow::bail!("`secagg vpn` is not available yet")
}
