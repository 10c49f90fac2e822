//! `secagg roster …`: the researcher's signed roster (export), and verifying and importing it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use secagg_core::home::{Home, PUBLIC_FILE_MODE};
use secagg_core::roster::{
    self, Change, ExportOptions, ImportOptions, ImportPlan, Roster, UnverifiedRoster,
};
use secagg_core::PartyId;
use serde::Serialize;
use time::OffsetDateTime;

use crate::commands::identity::load_effective;
use crate::output::{self, Format, FormatArg};

/// `secagg roster` subcommands.
#[derive(Debug, Subcommand)]
pub enum RosterCommand {
    /// (researcher) Sign a roster of this researcher and every party registered here, for the
    /// nodes to import instead of registering each other.
    Export(ExportArgs),
    /// Verify a roster and show its parties and what importing it would change here.
    Show(ShowArgs),
    /// Verify a roster issued by a researcher registered here and register its parties, all or
    /// nothing.
    Import(ImportArgs),
    /// Fetch the researcher's latest roster from its agent (`secagg serve`) and import it, with
    /// the same checks as `import`.
    Pull(PullArgs),
}

/// Arguments of `roster pull`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (a node; the researcher runs `secagg serve`):\n  secagg roster pull --yes"
)]
pub struct PullArgs {
    /// The researcher to pull from (default: the one researcher registered here).
    #[arg(long, value_name = "ID", value_parser = PartyId::parse_custom)]
    from: Option<PartyId>,
    /// Apply the changes without asking (asked on a terminal; required otherwise when the roster
    /// registers, changes or removes parties).
    #[arg(long, short = 'y', conflicts_with = "dry_run")]
    yes: bool,
    /// Fetch and verify the roster and show what importing it would change, as `roster show`
    /// does for a file; import nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    check: CheckArgs,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `roster export`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  secagg roster export -o roster.json      # then send roster.json to every node"
)]
pub struct ExportArgs {
    /// Write the roster to FILE (atomically; an existing FILE only with --force) instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long, requires = "output")]
    force: bool,
    /// Days until the roster expires (1 to 366).
    #[arg(long, default_value_t = roster::DEFAULT_VALIDITY_DAYS, value_name = "DAYS")]
    valid_days: u32,
    /// `text`: a summary on stderr (the roster itself goes to FILE or stdout); `json`: with -o,
    /// the summary as JSON on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Options shared by `show` and `import`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Remove parties that came from this issuer's rosters and are no longer listed (parties
    /// registered by hand are never removed).
    #[arg(long)]
    prune: bool,
    /// Let the roster replace the certificate of a party registered here by hand (check its
    /// fingerprint with the party out of band first).
    #[arg(long)]
    allow_replace: bool,
    /// Accept party ids without the `researcher_`/`node_` prefix (Fed-BioMed custom ids).
    #[arg(long)]
    allow_custom_ids: bool,
    /// ID=FP: refuse the roster unless it lists party ID with certificate fingerprint FP, received
    /// out of band. Repeatable.
    #[arg(long = "expect-fingerprint", value_name = "ID=FP", value_parser = parse_expectation)]
    expect_fingerprint: Vec<(PartyId, String)>,
    /// Accept researcher ID from this roster (repeatable). A roster vouches for nodes: one that
    /// registers or changes a researcher other than its issuer is refused unless each is named
    /// here, and so is a roster whose issuer a roster brought in. Check its fingerprint out of
    /// band first; this party's agent takes its session requests only with `secagg serve
    /// --allow-researcher ID`.
    #[arg(long = "allow-researcher", value_name = "ID", value_parser = parse_researcher)]
    allow_researcher: Vec<PartyId>,
}

fn parse_researcher(s: &str) -> Result<PartyId, String> {
    let id = PartyId::parse_custom(s.trim()).map_err(|e| e.to_string())?;
    if id.role() != secagg_core::Role::Researcher {
        return Err(format!(
            "`{id}` is a node: --allow-researcher names researchers"
        ));
    }
    Ok(id)
}

impl CheckArgs {
    fn options(&self) -> ImportOptions {
        ImportOptions {
            prune: self.prune,
            allow_replace: self.allow_replace,
            allow_custom_ids: self.allow_custom_ids,
            expect_fingerprints: self.expect_fingerprint.clone(),
            allow_researchers: self.allow_researcher.clone(),
        }
    }
}

fn parse_expectation(s: &str) -> Result<(PartyId, String), String> {
    let (id, fp) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ID=FP (e.g. node_7c1e=SHA256:3A:0F:…)"))?;
    let id = PartyId::parse_custom(id.trim()).map_err(|e| e.to_string())?;
    secagg_core::certificate::Fingerprint::parse(fp.trim()).map_err(|e| e.to_string())?;
    Ok((id, fp.trim().to_owned()))
}

/// Arguments of `roster show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The roster file.
    file: PathBuf,
    #[command(flatten)]
    check: CheckArgs,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `roster import`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (a node, after registering the researcher with --expect-fingerprint):\n  secagg roster import roster.json --yes"
)]
pub struct ImportArgs {
    /// The roster file (from `secagg roster export`).
    file: PathBuf,
    /// Apply the changes without asking (asked on a terminal; required otherwise when the roster
    /// registers, changes or removes parties).
    #[arg(long, short = 'y')]
    yes: bool,
    #[command(flatten)]
    check: CheckArgs,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg roster …`.
pub fn run(home: &Path, cmd: RosterCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    match cmd {
        RosterCommand::Export(a) => export(&home, a),
        RosterCommand::Show(a) => {
            let file = UnverifiedRoster::read(&a.file)?;
            show(&home, &file, &a.check, a.output.format)
        }
        RosterCommand::Import(a) => {
            let file = UnverifiedRoster::read(&a.file)?;
            let review = "review it with `secagg roster show FILE`, then import with --yes";
            import(&home, &file, a.yes, &a.check, a.output.format, review)
        }
        RosterCommand::Pull(a) => {
            let (from, bytes) = secagg_core::agent::pull_roster(&home, a.from.as_ref())?;
            let file = UnverifiedRoster::parse(&bytes, &format!("from the agent of {from}"))?;
            if a.dry_run {
                return show(&home, &file, &a.check, a.output.format);
            }
            let review = "review it with `secagg roster pull --dry-run`, then pull with --yes";
            import(&home, &file, a.yes, &a.check, a.output.format, review)
        }
    }
}

#[derive(Serialize)]
struct ExportSummary<'a> {
    issuer: &'a str,
    serial: u64,
    issued_at: &'a str,
    expires_at: &'a str,
    parties: usize,
    omitted: &'a [String],
    file: Option<String>,
}

fn export(home: &Home, a: ExportArgs) -> anyhow::Result<()> {
    let id = load_effective(home)?;
    if let Some(path) = &a.output {
        home.check_output(path, a.force)?;
    }
    let opts = ExportOptions {
        validity_days: a.valid_days,
    };
    let exported = roster::export(&id, &opts, OffsetDateTime::now_utc())?;
    let text = exported.file.to_text();
    for o in &exported.omitted {
        output::warn(o);
    }
    let r = &exported.roster;
    match &a.output {
        Some(path) => home.write_output(path, text.as_bytes(), PUBLIC_FILE_MODE, a.force)?,
        None => output::write_stdout(format_args!("{text}")),
    }
    let summary = ExportSummary {
        issuer: &r.issuer,
        serial: r.serial,
        issued_at: &r.issued_at,
        expires_at: &r.expires_at,
        parties: r.parties.len(),
        omitted: &exported.omitted,
        file: a.output.as_ref().map(|p| p.display().to_string()),
    };
    if a.format == Format::Json && a.output.is_some() {
        output::print_json(&summary)?;
    } else {
        output::note(format!(
            "roster #{} of {}: {} parties, expires {}{}",
            r.serial,
            r.issuer,
            r.parties.len(),
            r.expires_at,
            a.output
                .as_ref()
                .map(|p| format!(", written to {}", p.display()))
                .unwrap_or_default()
        ));
        output::note("next: each node registers this researcher (checking its fingerprint out of band), then runs `secagg roster import FILE`");
    }
    Ok(())
}

#[derive(Serialize)]
struct Shown<'a> {
    roster: &'a Roster,
    import: Option<&'a ImportPlan>,
    /// The researchers listed besides the issuer (nodes refuse them unless named).
    other_researchers: Vec<&'a str>,
}

/// `roster show FILE`, and `roster pull --dry-run` with the fetched roster.
fn show(
    home: &Home,
    file: &UnverifiedRoster,
    check: &CheckArgs,
    format: Format,
) -> anyhow::Result<()> {
    let own = load_effective(home)?;
    let (r, plan) = roster::show(&own, file, &check.options(), OffsetDateTime::now_utc())?;
    match format {
        Format::Json => output::print_json(&Shown {
            roster: &r,
            import: plan.as_ref(),
            other_researchers: r.other_researchers().map(|e| e.party_id.as_str()).collect(),
        })?,
        Format::Text => {
            output::print_fields(&[
                ("issuer", r.issuer.clone()),
                ("issuer fingerprint", r.issuer_fingerprint.to_string()),
                ("serial", r.serial.to_string()),
                ("issued", r.issued_at.clone()),
                ("expires", r.expires_at.clone()),
                ("signature", "verified".to_owned()),
            ]);
            match &plan {
                Some(plan) => print_plan(plan),
                None => {
                    let mut t =
                        output::list_table(&["party id", "component", "endpoint", "fingerprint"]);
                    let others: Vec<_> = r.other_researchers().collect();
                    for e in r.parties.iter().filter(|e| !others.contains(e)) {
                        t.add_row(vec![
                            e.party_id.clone(),
                            e.role.component().to_owned(),
                            format!("{}:{}", e.ip, e.port),
                            e.fingerprint.to_string(),
                        ]);
                    }
                    output::print_table(t);
                    print_issued_researchers(&others);
                    output::note("this party issued the roster");
                }
            }
        }
    }
    Ok(())
}

fn change_label(c: Change) -> &'static str {
    match c {
        Change::ThisParty => "this party",
        Change::New => "new",
        Change::Unchanged => "unchanged",
        Change::EndpointChanged => "endpoint changed",
        Change::Replaced => "certificate replaced",
        Change::Removed => "removed (--prune)",
    }
}

/// The researchers of this party's own roster besides itself, apart: nodes refuse them unless
/// they name them.
fn print_issued_researchers(others: &[&roster::RosterEntry]) {
    if others.is_empty() {
        return;
    }
    let mut t = output::list_table(&["other researcher", "endpoint", "fingerprint"]);
    for e in others {
        t.add_row(vec![
            e.party_id.clone(),
            format!("{}:{}", e.ip, e.port),
            e.fingerprint.to_string(),
        ]);
    }
    output::print_table(t);
    output::warn(format!(
        "the roster lists {} researcher(s) besides this one: a roster vouches for nodes, and nodes import it only if they name each with --allow-researcher",
        others.len()
    ));
}

/// The researchers a roster lists besides its issuer, apart from the nodes, and whether the
/// import takes them.
fn print_other_researchers(plan: &ImportPlan) {
    if plan.other_researchers.is_empty() {
        return;
    }
    let mut t = output::list_table(&[
        "other researcher",
        "change",
        "endpoint",
        "fingerprint",
        "import",
    ]);
    for r in &plan.other_researchers {
        let verdict = if r.refused {
            format!("refused: name it with --allow-researcher {}", r.party_id)
        } else if r.named {
            "accepted (--allow-researcher)".to_owned()
        } else {
            "accepted (nothing changes)".to_owned()
        };
        t.add_row(vec![
            r.party_id.clone(),
            change_label(r.change).to_owned(),
            r.endpoint.clone(),
            r.fingerprint.to_string(),
            verdict,
        ]);
    }
    output::print_table(t);
    if plan.other_researchers.iter().any(|r| r.refused) {
        output::warn("a roster vouches for nodes: the import refuses the researchers marked refused above unless each is named with --allow-researcher (check its fingerprint out of band first)");
    }
}

fn print_plan(plan: &ImportPlan) {
    let mut t = output::list_table(&["party id", "component", "change", "endpoint", "fingerprint"]);
    let others: Vec<&str> = plan
        .other_researchers
        .iter()
        .map(|r| r.party_id.as_str())
        .collect();
    for c in plan
        .changes
        .iter()
        .filter(|c| !others.contains(&c.party_id.as_str()))
    {
        let endpoint = match &c.previous_endpoint {
            Some(old) => format!("{old} → {}", c.endpoint),
            None => c.endpoint.clone(),
        };
        let fingerprint = match &c.previous_fingerprint {
            Some(old) => format!("{old} → {}", c.fingerprint),
            None => c.fingerprint.to_string(),
        };
        t.add_row(vec![
            c.party_id.clone(),
            c.component.to_owned(),
            change_label(c.change).to_owned(),
            endpoint,
            fingerprint,
        ]);
    }
    output::print_table(t);
    print_other_researchers(plan);
    let mut warned = std::collections::BTreeSet::new();
    for w in &plan.warnings {
        if warned.insert(w) {
            output::warn(w);
        }
    }
    output::note(format!(
        "roster #{} of {}{}: {} new, {} endpoint changed, {} replaced, {} removed, {} unchanged",
        plan.serial,
        plan.issuer,
        plan.previous_serial
            .map(|s| format!(" (last imported: #{s})"))
            .unwrap_or_default(),
        plan.count(Change::New),
        plan.count(Change::EndpointChanged),
        plan.count(Change::Replaced),
        plan.count(Change::Removed),
        plan.count(Change::Unchanged),
    ));
}

fn import(
    home: &Home,
    file: &UnverifiedRoster,
    yes: bool,
    check: &CheckArgs,
    format: Format,
    review: &str,
) -> anyhow::Result<()> {
    let own = load_effective(home)?;
    let opts = check.options();
    let now = OffsetDateTime::now_utc();
    let confirmed = if yes {
        None
    } else {
        let plan = roster::plan_import(&own, file, &opts, now)?;
        if plan.writes() {
            if !std::io::stdin().is_terminal() {
                return Err(secagg_core::Error::invalid(format!(
                    "roster #{} of {} would register or change {} parties, and there is no terminal to confirm on",
                    plan.serial,
                    plan.issuer,
                    plan.changes.iter().filter(|c| c.change.writes()).count()
                ))
                .with_hint(review)
                .into());
            }
            print_plan(&plan);
            eprint!("import these changes? [y/N] ");
            std::io::stderr().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
                output::note("nothing imported");
                return Ok(());
            }
        }
        Some(plan)
    };
    let plan = roster::import(&own, file, &opts, confirmed.as_ref(), now)?;
    match format {
        Format::Json => output::print_json(&plan)?,
        Format::Text => {
            if confirmed.is_none() || !plan.writes() {
                print_plan(&plan);
            }
            output::note(format!(
                "imported roster #{} of {}",
                plan.serial, plan.issuer
            ));
        }
    }
    Ok(())
}
