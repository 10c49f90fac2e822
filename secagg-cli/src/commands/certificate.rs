//! `secagg certificate`: this party's certificate and the registry of peers' certificates.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use secagg_core::certificate::{format_time, DEFAULT_VALIDITY_DAYS};
use secagg_core::home::Home;
use secagg_core::home::PUBLIC_FILE_MODE;
use secagg_core::party::{validate_port, Endpoint, Host, PartyId};
use secagg_core::peers::PeerRecord;
use secagg_core::registration::{self, Action, CertificateSource, RegisterRequest, Registered};
use secagg_core::{fedbiomed, identity, lookup};
use serde::Serialize;
use time::OffsetDateTime;

use crate::commands::init::{KeyTypeArg, RoleArg};
use crate::output::{self, Format, FormatArg};

/// Manage this party's certificate and the certificates of registered peers.
#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Renew this party's key and certificate (same party id). Every peer must then register the
    /// new certificate.
    Generate(GenerateArgs),
    /// Print what other parties need to register this party: its certificate, fingerprint and the
    /// exact `secagg certificate register` command (or, with --format json, a registration bundle).
    RegistrationInstructions(InstructionsArgs),
    /// Register (pin) another party's certificate and MPC endpoint.
    Register(RegisterArgs),
    /// List registered peers with fingerprint, expiry and status.
    List(ListArgs),
    /// Show one registered peer.
    Show(ShowArgs),
    /// Delete a registered peer.
    Delete(DeleteArgs),
    /// Import the `Certificates` table of a Fed-BioMed v4 TinyDB file (var/db_<id>.json), all or
    /// nothing (or, with --skip-invalid, the valid documents; --dry-run reports without writing).
    ImportFedbiomed(ImportArgs),
}

/// Arguments of `certificate generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Replace the current certificate (required: peers will no longer accept the old one).
    #[arg(long, short = 'f')]
    force: bool,
    /// Key algorithm of the new key.
    #[arg(long, value_enum, default_value_t)]
    key_type: KeyTypeArg,
    /// Certificate validity in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    days: u32,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `certificate registration-instructions`.
#[derive(Debug, Args)]
pub struct InstructionsArgs {
    /// `text`: instructions for people; `json`: a registration bundle for `register --bundle`.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Write to FILE instead of stdout (atomically; an existing FILE only with --force; never a
    /// FIFO, directory or device, nor one of the home's own files).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    force: bool,
}

/// Arguments of `certificate register`.
#[derive(Debug, Args)]
#[command(
    after_help = "Fed-BioMed's short options -pk and -pi are accepted for --public-key and --party-id.\n\nExamples:\n  secagg certificate register -pk hospital1.pem -pi node_7c1e… --ip 10.221.0.3 --port 14002 --expect-fingerprint SHA256:3A:0F:…\n  secagg certificate register --bundle node_7c1e.json --expect-fingerprint SHA256:3A:0F:…"
)]
pub struct RegisterArgs {
    /// The party's certificate file (PEM or DER). Also -pk.
    #[arg(
        long = "public-key",
        value_name = "PATH",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    public_key: Option<PathBuf>,
    /// The party's id (`researcher_…` / `node_…`). Also -pi.
    #[arg(
        long = "party-id",
        value_name = "ID",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    party_id: Option<String>,
    /// The party's role, checked against its id (required for a custom id).
    #[arg(long, value_enum, conflicts_with = "bundle")]
    role: Option<RoleArg>,
    /// Accept a party id without the `researcher_`/`node_` prefix (a Fed-BioMed deployment with
    /// custom ids), stated with --role. Fed-BioMed's rule gives its role: a node id starts with
    /// `node_`, every other id is a researcher's.
    #[arg(long)]
    allow_custom_id: bool,
    /// Address of the party's key negotiation (IPv4, IPv6 or host name).
    #[arg(
        long,
        value_name = "IP_ADDRESS",
        required_unless_present = "bundle",
        conflicts_with = "bundle"
    )]
    ip: Option<Host>,
    /// Port of the party's key negotiation (1–65535).
    #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
    port: Option<u32>,
    /// Registration bundles (`registration-instructions --format json`) instead of the four
    /// options above; several bundles are registered in one transaction (all or none).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    bundle: Vec<PathBuf>,
    /// The fingerprint the party gave you through a trusted channel; registration is refused if the
    /// certificate does not match it. With several bundles: ID=FP, once per party.
    #[arg(long, value_name = "FP")]
    expect_fingerprint: Vec<String>,
    /// Replace the existing registration of this party id.
    #[arg(long)]
    upsert: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `certificate list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `certificate show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Party id (a registered one, so custom ids are accepted as registered), or a unique prefix
    /// of one (at least 4 characters).
    party_id: String,
    /// Print only the certificate PEM (to save it to a file).
    #[arg(long)]
    pem: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `certificate delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Party id (a registered one, so custom ids are accepted as registered), or a unique prefix
    /// of one (at least 4 characters).
    party_id: String,
    /// Do not ask for confirmation (it is asked only when stdin is a terminal).
    #[arg(long, short = 'y')]
    yes: bool,
}

/// Arguments of `certificate import-fedbiomed`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The TinyDB file (`var/db_<id>.json`).
    db_json: PathBuf,
    /// Replace existing registrations of the same party ids.
    #[arg(long)]
    upsert: bool,
    /// Report, per document, what the import would do (new, unchanged, updated, refused and
    /// why) and write nothing; exits as the import would.
    #[arg(long)]
    dry_run: bool,
    /// Import the valid documents and list every refused one (exit 0 when at least one was
    /// imported; when all were refused, the exit code of the first refusal).
    #[arg(long)]
    skip_invalid: bool,
    /// Accept party ids without the `researcher_`/`node_` prefix, which Fed-BioMed stores as
    /// given. Their role follows Fed-BioMed's rule (a node id starts with `node_`), which is
    /// also how Fed-BioMed set each document's `component`.
    #[arg(long)]
    allow_custom_ids: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg certificate …`.
pub fn run(home: &Path, cmd: CertificateCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    match cmd {
        CertificateCommand::Generate(a) => generate(&home, a),
        CertificateCommand::RegistrationInstructions(a) => instructions(&home, a),
        CertificateCommand::Register(a) => register(&home, a),
        CertificateCommand::List(a) => list(&home, a),
        CertificateCommand::Show(a) => show(&home, a),
        CertificateCommand::Delete(a) => delete(&home, a),
        CertificateCommand::ImportFedbiomed(a) => import(&home, a),
    }
}

fn generate(home: &Home, a: GenerateArgs) -> anyhow::Result<()> {
    let r = identity::renew(
        home,
        a.key_type.into(),
        a.days,
        a.force,
        OffsetDateTime::now_utc(),
    )?;
    match a.output.format {
        Format::Json => output::print_json(&r)?,
        Format::Text => {
            output::print_fields(&[
                ("party id", r.party_id.clone()),
                ("old fingerprint", r.old_fingerprint.to_string()),
                ("new fingerprint", r.new_fingerprint.to_string()),
                ("valid until", r.not_after.clone()),
                ("old key kept in", r.archived_to.clone()),
            ]);
            output::note("IMPORTANT: every other party must now register the new certificate (`secagg certificate register --upsert …`);\nsend them `secagg certificate registration-instructions` and the new fingerprint.");
        }
    }
    Ok(())
}

fn instructions(home: &Home, a: InstructionsArgs) -> anyhow::Result<()> {
    let id = crate::commands::identity::load_effective(home)?;
    let text = match a.format {
        Format::Text => registration::instructions_text(&id),
        Format::Json => serde_json::to_string_pretty(&registration::bundle(&id))? + "\n",
    };
    match a.output {
        Some(path) => {
            home.write_output(&path, text.as_bytes(), PUBLIC_FILE_MODE, a.force)?;
            output::note(format!("wrote {}", path.display()));
        }
        None => print!("{text}"),
    }
    // On the operator's side only (stderr), never in the message to send.
    output::note(registration::fingerprint_to_read_out(&id));
    if identity::is_loopback(&id.endpoint) {
        output::warn(format!(
            "your endpoint {} is a loopback address: parties on other machines cannot reach it (`secagg identity set-endpoint`)",
            id.endpoint
        ));
    }
    Ok(())
}

fn register(home: &Home, a: RegisterArgs) -> anyhow::Result<()> {
    if a.bundle.len() > 1 {
        return register_bundles(home, a);
    }
    if a.expect_fingerprint.len() > 1 {
        anyhow::bail!(secagg_core::Error::invalid(
            "--expect-fingerprint is given more than once for one certificate"
        ));
    }
    let expect_fingerprint = a.expect_fingerprint.into_iter().next();
    let req = match a.bundle.first() {
        Some(bundle) => registration::request_from_bundle(
            bundle,
            expect_fingerprint,
            a.upsert,
            a.allow_custom_id,
        )?,
        None => {
            let path = a.public_key.context("--public-key is required")?;
            let host = a.ip.context("--ip is required")?;
            let port = validate_port(a.port.context("--port is required")?)?;
            let raw_id = a.party_id.context("--party-id is required")?;
            let party_id = match a.role {
                Some(role) => PartyId::parse_with_role(&raw_id, role.into(), a.allow_custom_id)?,
                None => PartyId::parse_entry(&raw_id, a.allow_custom_id)?,
            };
            if party_id.is_custom() && a.role.is_none() {
                return Err(secagg_core::Error::invalid(format!(
                    "party id `{party_id}` has no `researcher_`/`node_` prefix: state its role"
                ))
                .with_hint("add --role researcher (Fed-BioMed's rule: an id not starting with `node_` is a researcher's)")
                .into());
            }
            RegisterRequest {
                party_id,
                endpoint: Endpoint { host, port },
                source: format!("file {}", path.display()),
                certificate: CertificateSource::File(path),
                expect_fingerprint,
                upsert: a.upsert,
                name: None,
            }
        }
    };
    let r = registration::register(home, &req, OffsetDateTime::now_utc())?;
    match a.output.format {
        Format::Json => output::print_json(&r)?,
        Format::Text => print_registered(&r),
    }
    Ok(())
}

/// `register --bundle A B …`: every bundle in one transaction; fingerprints as `ID=FP`.
fn register_bundles(home: &Home, a: RegisterArgs) -> anyhow::Result<()> {
    let mut expected = std::collections::BTreeMap::new();
    for e in &a.expect_fingerprint {
        let (id, fp) = e.split_once('=').filter(|(id, _)| PartyId::parse_custom(id).is_ok()).ok_or_else(|| {
            secagg_core::Error::invalid(format!(
                "--expect-fingerprint `{e}` does not name its party: with several bundles, give ID=FP for each"
            ))
            .with_hint("e.g. --expect-fingerprint node_7c1e=SHA256:3A:0F:…")
        })?;
        if expected.insert(id.to_owned(), fp.to_owned()).is_some() {
            anyhow::bail!(secagg_core::Error::invalid(format!(
                "--expect-fingerprint gives `{id}` twice"
            )));
        }
    }
    let mut reqs = Vec::with_capacity(a.bundle.len());
    for bundle in &a.bundle {
        let mut req = registration::request_from_bundle(bundle, None, a.upsert, a.allow_custom_id)?;
        req.expect_fingerprint = expected.remove(req.party_id.as_str());
        reqs.push(req);
    }
    if let Some(id) = expected.keys().next() {
        anyhow::bail!(secagg_core::Error::invalid(format!(
            "--expect-fingerprint names `{id}`, which none of the bundles registers"
        )));
    }
    let done = registration::register_all(home, &reqs, OffsetDateTime::now_utc())?;
    match a.output.format {
        Format::Json => output::print_json(&done)?,
        Format::Text => {
            for r in &done {
                print_registered_quiet(r);
            }
            let unchecked = done
                .iter()
                .filter(|r| !r.fingerprint_checked && r.action != Action::Unchanged)
                .count();
            if unchecked > 0 {
                output::note(format!("note: {unchecked} of {} fingerprints were not checked against ones received out of band; compare them with the parties (--expect-fingerprint ID=FP does it for you)", done.len()));
            }
        }
    }
    Ok(())
}

fn print_registered(r: &Registered) {
    print_registered_quiet(r);
    if !r.fingerprint_checked && r.action != Action::Unchanged {
        output::note("note: the fingerprint was not checked against one received out of band; compare it with the party (--expect-fingerprint does it for you)");
    }
}

/// A registration's line, its replaced certificate and its warnings, without the out-of-band
/// note (an import prints that once).
fn print_registered_quiet(r: &Registered) {
    let verb = match r.action {
        Action::Created => "registered",
        Action::Updated => "updated",
        Action::Unchanged => "unchanged",
    };
    println!(
        "{verb} {} ({}) at {}:{}  {}",
        r.party_id,
        r.component.to_lowercase(),
        r.ip,
        r.port,
        r.fingerprint
    );
    if let (Action::Updated, Some(prev)) = (r.action, r.previous_fingerprint) {
        if prev != r.fingerprint {
            output::note(format!("  replaced certificate {prev}"));
        }
    }
    for w in &r.warnings {
        output::warn(w);
    }
}

#[derive(Serialize)]
struct PeerList<'a> {
    peers: &'a [secagg_core::peers::PeerSummary],
}

fn list(home: &Home, a: ListArgs) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    let peers: Vec<_> = registration::list(home)?
        .iter()
        .map(|p| p.summary(now))
        .collect();
    match a.output.format {
        Format::Json => output::print_json(&PeerList { peers: &peers })?,
        Format::Text => {
            if peers.is_empty() {
                output::note(
                    "no registered peers (register one with `secagg certificate register`)",
                );
                return Ok(());
            }
            // The name column only when some party has a display name.
            let named = peers.iter().any(|p| p.name.is_some());
            let mut header = vec!["party id"];
            if named {
                header.push("name");
            }
            header.extend([
                "component",
                "ip",
                "port",
                "key",
                "fingerprint",
                "not after",
                "days left",
                "status",
                "origin",
            ]);
            let mut t = output::list_table(&header);
            for p in &peers {
                let mut row = vec![p.party_id.clone()];
                if named {
                    row.push(p.name.clone().unwrap_or_default());
                }
                row.extend([
                    p.component.to_owned(),
                    p.ip.clone(),
                    p.port.to_string(),
                    p.key_type.to_string(),
                    p.fingerprint.short(),
                    p.not_after[..10].to_owned(),
                    p.days_left.to_string(),
                    p.status_label(),
                    p.origin.clone(),
                ]);
                t.add_row(row);
            }
            output::print_table(t);
        }
    }
    Ok(())
}

trait StatusLabel {
    fn status_label(&self) -> String;
}

impl StatusLabel for secagg_core::peers::PeerSummary {
    fn status_label(&self) -> String {
        self.status.to_string()
    }
}

#[derive(Serialize)]
struct PeerDetail {
    #[serde(flatten)]
    summary: secagg_core::peers::PeerSummary,
    subject: String,
    not_before: String,
    certificate: String,
}

fn show(home: &Home, a: ShowArgs) -> anyhow::Result<()> {
    let p: PeerRecord = registration::show(home, &lookup::party(home, &a.party_id)?)?;
    if a.pem {
        print!("{}", p.certificate_pem());
        return Ok(());
    }
    let now = OffsetDateTime::now_utc();
    let s = p.summary(now);
    match a.output.format {
        Format::Json => output::print_json(&PeerDetail {
            summary: s,
            subject: p.subject.clone(),
            not_before: format_time(p.not_before),
            certificate: p.certificate_pem(),
        })?,
        Format::Text => output::print_fields(&[
            ("party id", s.party_id.clone()),
            ("name", s.name.clone().unwrap_or_else(|| "-".into())),
            ("component", s.component.to_owned()),
            ("endpoint", p.endpoint.to_string()),
            ("key type", s.key_type.to_string()),
            ("fingerprint", s.fingerprint.to_string()),
            ("subject", p.subject.clone()),
            ("valid from", format_time(p.not_before)),
            (
                "valid until",
                format!("{} ({} days left, {})", s.not_after, s.days_left, s.status),
            ),
            ("registered", s.registered_at.clone()),
            ("updated", s.updated_at.clone()),
            ("source", s.source.clone()),
        ]),
    }
    Ok(())
}

fn delete(home: &Home, a: DeleteArgs) -> anyhow::Result<()> {
    if !a.yes && std::io::stdin().is_terminal() {
        let p = registration::show(home, &lookup::party(home, &a.party_id)?)?;
        eprint!(
            "delete the registration of {} ({})? [y/N] ",
            p.party_id, p.fingerprint
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            output::note("nothing deleted");
            return Ok(());
        }
    }
    let p = registration::delete(home, &lookup::party(home, &a.party_id)?)?;
    println!("deleted {} ({})", p.party_id, p.fingerprint);
    Ok(())
}

fn import(home: &Home, a: ImportArgs) -> anyhow::Result<()> {
    let options = fedbiomed::ImportOptions {
        upsert: a.upsert,
        dry_run: a.dry_run,
        skip_invalid: a.skip_invalid,
        allow_custom_ids: a.allow_custom_ids,
    };
    let report =
        fedbiomed::import_tinydb_with(home, &a.db_json, &options, OffsetDateTime::now_utc())?;
    match a.output.format {
        Format::Json => output::print_json(&report)?,
        Format::Text if report.dry_run => print_import_rehearsal(&report),
        Format::Text => print_import(&report),
    }
    match report.failure(&options) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

fn party_label(party: Option<&str>) -> String {
    party.map_or_else(|| "no party id".to_owned(), |p| format!("party {p}"))
}

/// `--dry-run`: one line per document on stdout, in document order.
fn print_import_rehearsal(report: &fedbiomed::ImportReport) {
    let mut lines: Vec<(&str, String)> = report
        .imported
        .iter()
        .map(|e| {
            let r = &e.registered;
            let what = match r.action {
                Action::Created => "new",
                Action::Updated => "updated (--upsert)",
                Action::Unchanged => "unchanged",
            };
            (
                e.document_id.as_str(),
                format!(
                    "document {} ({}): {what}, {} at {}:{}  {}",
                    e.document_id,
                    party_label(Some(&r.party_id)),
                    r.component.to_lowercase(),
                    r.ip,
                    r.port,
                    r.fingerprint
                ),
            )
        })
        .chain(report.refused.iter().map(|e| {
            (
                e.document_id.as_str(),
                format!(
                    "document {} ({}): refused: {}",
                    e.document_id,
                    party_label(e.party_id.as_deref()),
                    e.reason
                ),
            )
        }))
        .collect();
    lines.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.to_string()));
    for (_, l) in &lines {
        println!("{l}");
    }
    output::note(format!(
        "dry run: {} of {} entries of {} would be imported, {} refused; nothing was written",
        report.imported.len(),
        report.entries,
        report.source,
        report.refused.len()
    ));
    fingerprint_note(report);
}

fn print_import(report: &fedbiomed::ImportReport) {
    if report.entries == 0 {
        output::note(format!("{}: no certificates to import", report.source));
    }
    for e in &report.imported {
        print!("document {}: ", e.document_id);
        print_registered_quiet(&e.registered);
    }
    for e in &report.refused {
        output::warn(format!(
            "document {} ({}) refused: {}",
            e.document_id,
            party_label(e.party_id.as_deref()),
            e.reason
        ));
    }
    let refused = if report.refused.is_empty() {
        String::new()
    } else {
        format!(", {} refused", report.refused.len())
    };
    output::note(format!(
        "imported {} of {} entries from {}{refused}",
        report.imported.len(),
        report.entries,
        report.source
    ));
    fingerprint_note(report);
}

/// The out-of-band note once for the whole file, with the count.
fn fingerprint_note(report: &fedbiomed::ImportReport) {
    let n = report.unchecked_fingerprints();
    if n > 0 {
        let certs = if n == 1 {
            "certificate"
        } else {
            "certificates"
        };
        output::note(format!("note: the fingerprints of {n} {certs} were not checked against ones received out of band; compare them with the parties (`secagg certificate list` shows them)"));
    }
}
