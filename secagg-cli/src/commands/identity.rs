//! `secagg identity`: show or change this party's identity.

use std::path::Path;

use clap::{Args, Subcommand};
use secagg_core::home::Home;
use secagg_core::identity::{self, IdentitySummary};
use time::OffsetDateTime;

use crate::output::{self, Format, FormatArg};

/// Show or change this party's identity.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Show party id, role, endpoint, key type, certificate fingerprint and validity.
    Show(ShowArgs),
    /// Change the address and port other parties use to reach this party (e.g. once the VPN
    /// address is known). Peers must register the new endpoint (`register --upsert`).
    SetEndpoint(SetEndpointArgs),
}

/// Arguments of `identity show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `identity set-endpoint`.
#[derive(Debug, Args)]
pub struct SetEndpointArgs {
    /// New address (IPv4, IPv6 or host name).
    #[arg(long)]
    ip: String,
    /// New port.
    #[arg(long)]
    port: u32,
    #[command(flatten)]
    output: FormatArg,
}

/// Prints an identity summary as aligned fields.
pub fn print_identity(s: &IdentitySummary) {
    output::print_fields(&[
        ("party id", s.party_id.clone()),
        ("role", s.role.to_string()),
        ("endpoint", format!("{}:{}", s.ip, s.port)),
        (
            "key type",
            s.key_type
                .map(|k| k.to_string())
                .unwrap_or_else(|| "unsupported".into()),
        ),
        ("fingerprint", s.fingerprint.to_string()),
        ("valid from", s.not_before.clone()),
        (
            "valid until",
            format!("{} ({} days left, {})", s.not_after, s.days_left, s.status),
        ),
        ("home", s.home.clone()),
    ]);
}

/// Runs `secagg identity …`.
pub fn run(home: &Path, cmd: IdentityCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    let now = OffsetDateTime::now_utc();
    let (summary, format) = match cmd {
        IdentityCommand::Show(a) => (identity::load(&home)?.summary(now), a.output.format),
        IdentityCommand::SetEndpoint(a) => {
            let id = identity::set_endpoint(&home, &a.ip, a.port)?;
            output::note(format!(
                "endpoint is now {}: every peer must register it (`secagg certificate register --upsert …`)",
                id.endpoint
            ));
            (id.summary(now), a.output.format)
        }
    };
    match format {
        Format::Json => output::print_json(&summary)?,
        Format::Text => print_identity(&summary),
    }
    Ok(())
}
