//! `secagg init`: create this party's identity.

use std::path::{Path, PathBuf};

use clap::Args;
use secagg_core::certificate::{GeneratedKeyType, DEFAULT_VALIDITY_DAYS};
use secagg_core::home::Home;
use secagg_core::identity::{self, FedbiomedComponent, InitOptions};
use secagg_core::Role;
use time::OffsetDateTime;

use crate::commands::identity::{print_identity, report_adoption};
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
    /// Role of this party (with --from-fedbiomed: optional, checked against the adopted id).
    #[arg(long, value_enum, required_unless_present = "from_fedbiomed")]
    role: Option<RoleArg>,
    /// Party id (`researcher_…` / `node_…`); default: the role's prefix and a fresh uuid4.
    #[arg(long, conflicts_with = "from_fedbiomed")]
    id: Option<String>,
    /// A display name for people ("CHU Lyon", up to 64 characters): carried in bundles and
    /// rosters and shown in the other parties' lists beside the id; never used for identity.
    #[arg(long, conflicts_with = "from_fedbiomed")]
    name: Option<String>,
    /// Adopt a Fed-BioMed v4 component's identity instead of making one: PATH is its root
    /// directory (holding etc/config_*.ini), its etc/ or its configuration file. Keeps its party
    /// id, key, certificate and endpoint ([mpspdz] mpspdz_ip/mpspdz_port unless --ip/--port or
    /// MPSPDZ_IP/MPSPDZ_PORT are given), so peers need not register it again.
    #[arg(long, value_name = "PATH")]
    from_fedbiomed: Option<PathBuf>,
    /// Address other parties use to reach this party's key negotiation (IPv4, IPv6 or host name);
    /// default 127.0.0.1.
    #[arg(long, env = "MPSPDZ_IP")]
    ip: Option<String>,
    /// Port of this party's key negotiation; default 14000 for a researcher, 14001 for a node.
    #[arg(long, env = "MPSPDZ_PORT")]
    port: Option<u32>,
    /// Key algorithm of the new key.
    #[arg(long, value_enum, default_value_t, conflicts_with = "from_fedbiomed")]
    key_type: KeyTypeArg,
    /// Certificate validity in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS, conflicts_with = "from_fedbiomed")]
    days: u32,
    /// Replace an existing identity (the old key and certificate are kept in identity/previous/).
    #[arg(long)]
    force: bool,
    /// Accept a party id (--id, or the adopted Fed-BioMed id) without the `researcher_`/`node_`
    /// prefix, as a Fed-BioMed deployment with custom ids has. Its role follows Fed-BioMed's
    /// rule: a node id starts with `node_`, every other id is a researcher's.
    #[arg(long)]
    allow_custom_id: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg init`.
pub fn run(home: &Path, args: InitArgs) -> anyhow::Result<()> {
    let home = Home::new(home);
    if let Some(path) = &args.from_fedbiomed {
        return adopt_fedbiomed(&home, path, &args);
    }
    let role = args
        .role
        .ok_or_else(|| anyhow::anyhow!("--role is required"))?;
    let opts = InitOptions {
        role: role.into(),
        id: args.id,
        host: Some(args.ip.unwrap_or_else(|| identity::DEFAULT_HOST.to_owned())),
        port: args.port,
        key_type: args.key_type.into(),
        validity_days: args.days,
        force: args.force,
        allow_custom_id: args.allow_custom_id,
        name: args.name,
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

/// `secagg init --from-fedbiomed PATH`: adopts a Fed-BioMed component's identity.
fn adopt_fedbiomed(home: &Home, path: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let component = FedbiomedComponent::read(path)?;
    let id =
        secagg_core::PartyId::parse_entry(&component.id, args.allow_custom_id).map_err(|e| {
            e.context(format!(
                "in [default] id of `{}`",
                component.config_file.display()
            ))
        })?;
    if let Some(role) = args.role {
        let role = Role::from(role);
        if id.role() != role {
            return Err(secagg_core::Error::invalid(format!(
                "`{}` is the configuration of {} {id}, not of a {role}",
                component.config_file.display(),
                id.role(),
            ))
            .with_hint("drop --role, or give the configuration of the component you mean")
            .into());
        }
    }
    let opts = identity::ImportOptions {
        id: component.id.clone(),
        key: component.key.clone(),
        cert: component.cert.clone(),
        host: args.ip.clone().unwrap_or_else(|| component.host.clone()),
        port: args.port.unwrap_or(component.port),
        force: args.force,
        allow_custom_id: args.allow_custom_id,
    };
    let now = OffsetDateTime::now_utc();
    let adoption = identity::import(home, &opts, now)?;
    let source = format!("`{}`", component.config_file.display());
    report_adoption(&adoption, &source, args.output.format, now)
}
