//! `secagg init`: create this party's identity.

use std::path::Path;

use clap::Args;
use secagg_core::certificate::{GeneratedKeyType, DEFAULT_VALIDITY_DAYS};
use secagg_core::home::Home;
use secagg_core::identity::{self, InitOptions};
use secagg_core::Role;
use time::OffsetDateTime;

use crate::commands::identity::print_identity;
use crate::output::{self, Format, FormatArg};

/// Role argument.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    /// The researcher (party 0, receives the server key).
    Researcher,
    /// A data-holding node.
    Node,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Researcher => Role::Researcher,
            RoleArg::Node => Role::Node,
        }
    }
}

/// Key type argument.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum KeyTypeArg {
    /// ECDSA P-256 (default; fast, accepted by MP-SPDZ).
    #[default]
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl From<KeyTypeArg> for GeneratedKeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::P256 => GeneratedKeyType::P256,
            KeyTypeArg::P384 => GeneratedKeyType::P384,
            KeyTypeArg::Ed25519 => GeneratedKeyType::Ed25519,
        }
    }
}

/// Create this party's identity: party id, MPC endpoint, private key and certificate.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  secagg init --role researcher --ip 10.222.0.2\n  secagg --home /srv/secagg init --role node --ip 10.221.0.3 --port 14002"
)]
pub struct InitArgs {
    /// Role of this party.
    #[arg(long, value_enum)]
    role: RoleArg,
    /// Party id (`researcher_…` / `node_…`); default: the role's prefix and a fresh uuid4.
    #[arg(long)]
    id: Option<String>,
    /// Address other parties use to reach this party's key negotiation (IPv4, IPv6 or host name).
    #[arg(long, env = "MPSPDZ_IP", default_value = identity::DEFAULT_HOST)]
    ip: String,
    /// Port of this party's key negotiation; default 14000 for a researcher, 14001 for a node.
    #[arg(long, env = "MPSPDZ_PORT")]
    port: Option<u32>,
    /// Key algorithm of the new key.
    #[arg(long, value_enum, default_value_t)]
    key_type: KeyTypeArg,
    /// Certificate validity in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    days: u32,
    /// Replace an existing identity (the old key and certificate are kept in identity/previous/).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg init`.
pub fn run(home: &Path, args: InitArgs) -> anyhow::Result<()> {
    let home = Home::new(home);
    let opts = InitOptions {
        role: args.role.into(),
        id: args.id,
        host: Some(args.ip),
        port: args.port,
        key_type: args.key_type.into(),
        validity_days: args.days,
        force: args.force,
    };
    let now = OffsetDateTime::now_utc();
    let id = identity::init(&home, &opts, now)?;
    let summary = id.summary(now);
    match args.output.format {
        Format::Json => output::print_json(&summary)?,
        Format::Text => {
            output::note(format!(
                "created identity {} in {}",
                id.party_id,
                home.root().display()
            ));
            print_identity(&summary);
        }
    }
    if identity::is_loopback(&id.endpoint) {
        output::warn(format!(
            "endpoint {} is a loopback address: parties on other machines cannot reach it (set --ip or MPSPDZ_IP, or run `secagg identity set-endpoint`)",
            id.endpoint
        ));
    }
    if args.output.format == Format::Text {
        output::note("next: send your registration instructions to every other party: secagg certificate registration-instructions");
    }
    Ok(())
}
