//! `secagg identity`: show or change this party's identity.

use std::path::Path;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use secagg_core::home::Home;
use secagg_core::identity::{self, Adoption, EndpointOverride, Identity, IdentitySummary};
use secagg_core::party::Endpoint;
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
    /// Adopt an existing key and certificate (e.g. a Fed-BioMed component's) as this party's
    /// identity, keeping its party id: peers that registered the certificate need not register
    /// anything again. See also `secagg init --from-fedbiomed`.
    Import(ImportArgs),
}

/// Arguments of `identity import`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (a Fed-BioMed node's files):\n  secagg identity import --id node_7c1e… --key etc/certs/cert_node_7c1e…/MPSPDZ_certificate.key \\\n      --cert etc/certs/cert_node_7c1e…/MPSPDZ_certificate.pem --ip 10.221.0.3 --port 14001"
)]
pub struct ImportArgs {
    /// Party id (`researcher_…` / `node_…`); the certificate's O= must equal it.
    #[arg(long)]
    id: String,
    /// Private key file (PEM, `BEGIN PRIVATE KEY`); copied into the home with mode 0600.
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Certificate file (PEM or DER) that the key belongs to.
    #[arg(long, value_name = "CERT")]
    cert: PathBuf,
    /// Address other parties use to reach this party's key negotiation.
    #[arg(long, env = "MPSPDZ_IP", default_value = identity::DEFAULT_HOST)]
    ip: String,
    /// Port of this party's key negotiation; default 14000 for a researcher, 14001 for a node.
    #[arg(long, env = "MPSPDZ_PORT")]
    port: Option<u32>,
    /// Replace an existing identity (the old key and certificate are kept in identity/previous/).
    #[arg(long)]
    force: bool,
    /// Accept a party id without the `researcher_`/`node_` prefix (a Fed-BioMed deployment with
    /// custom ids). Its role follows Fed-BioMed's rule: a node id starts with `node_`, every
    /// other id is a researcher's.
    #[arg(long)]
    allow_custom_id: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Loads this party's identity with the run-time endpoint override (`MPSPDZ_IP` /
/// `MPSPDZ_PORT`) applied, saying on stderr when one is in effect. For every command that prints
/// or uses the endpoint.
pub fn load_effective(home: &Home) -> anyhow::Result<Identity> {
    let mut id = identity::load(home)?;
    if let Some(o) = id.apply_endpoint_override(&EndpointOverride::from_env())? {
        output::warn(o.notice());
    }
    Ok(id)
}

/// The endpoint `negotiate` must use instead of the stored one (`MPSPDZ_IP` / `MPSPDZ_PORT`),
/// said on stderr; `None` without an override. Errors of loading the identity are left to the
/// session, which reports them in its own terms.
pub fn effective_endpoint(home: &Home) -> anyhow::Result<Option<Endpoint>> {
    let ov = EndpointOverride::from_env();
    if ov.is_empty() {
        return Ok(None);
    }
    let Ok(mut id) = identity::load(home) else {
        return Ok(None);
    };
    Ok(id.apply_endpoint_override(&ov)?.map(|o| {
        output::warn(o.notice());
        o.effective
    }))
}

/// Reports an adoption: warnings, what was adopted, where the old identity went.
pub fn report_adoption(
    a: &Adoption,
    source: &str,
    format: Format,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    for w in &a.warnings {
        output::warn(w);
    }
    let summary = a.identity.summary(now);
    match format {
        Format::Json => output::print_json(&summary)?,
        Format::Text => {
            output::note(format!(
                "adopted identity {} from {source} into {}: peers that registered its certificate need not register again",
                a.identity.party_id,
                a.identity.home.root().display()
            ));
            print_identity(&summary);
        }
    }
    if let Some(dir) = &a.archived_to {
        output::note(format!(
            "the replaced identity is kept in {}",
            dir.display()
        ));
    }
    if identity::is_loopback(&a.identity.endpoint) {
        output::warn(format!(
            "endpoint {} is a loopback address: parties on other machines cannot reach it (`secagg identity set-endpoint`)",
            a.identity.endpoint
        ));
    }
    Ok(())
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
        ("name", s.name.clone().unwrap_or_else(|| "-".into())),
        ("fingerprint", s.fingerprint_readable.clone()),
        ("  as hex", s.fingerprint.to_string()),
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
        IdentityCommand::Show(a) => (load_effective(&home)?.summary(now), a.output.format),
        IdentityCommand::Import(a) => {
            let port = a.port.unwrap_or(u32::from(
                match secagg_core::PartyId::parse_entry(&a.id, a.allow_custom_id)?.role() {
                    secagg_core::Role::Researcher => identity::DEFAULT_RESEARCHER_PORT,
                    secagg_core::Role::Node => identity::DEFAULT_NODE_PORT,
                },
            ));
            let opts = identity::ImportOptions {
                id: a.id,
                key: a.key,
                cert: a.cert,
                host: a.ip,
                port,
                force: a.force,
                allow_custom_id: a.allow_custom_id,
            };
            let adoption = identity::import(&home, &opts, now)?;
            let source = format!("`{}`", opts.cert.display());
            return report_adoption(&adoption, &source, a.output.format, now);
        }
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
