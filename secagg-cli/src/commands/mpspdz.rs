//! `secagg mpspdz …`: the MP-SPDZ engine's tooling.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use secagg_core::home::Home;
use secagg_core::mpspdz::doctor::{self, CheckStatus, DoctorOptions};
use secagg_core::mpspdz::locate::ROOT_ENV;

use crate::output::{self, Format, FormatArg};

/// MP-SPDZ engine tooling.
#[derive(Debug, Subcommand)]
pub enum MpspdzCommand {
    /// Check that an MP-SPDZ v0.3.4 build can run secagg's sessions: the binary starts, the
    /// compiler works, the binary supports the prime's size (a real 3-party loopback run), and each
    /// listed party's certificate passes MP-SPDZ's TLS checks. Exits 9 if any check failed.
    Doctor(DoctorArgs),
}

/// `secagg mpspdz doctor` arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The MP-SPDZ build (directory with shamir-party.x and compile.py).
    #[arg(long, env = ROOT_ENV, value_name = "DIR")]
    mpspdz_root: Option<PathBuf>,
    /// Party ids in session order (researcher first); each one's certificate is checked as P<index>.
    /// Without it, this party's own certificate is checked.
    #[arg(long, value_delimiter = ',')]
    parties: Vec<String>,
    /// Skip the 3-party loopback self-test (the prime-size check).
    #[arg(long)]
    no_self_test: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Runs `secagg mpspdz …`.
pub fn run(home: &Path, cmd: MpspdzCommand) -> anyhow::Result<()> {
    match cmd {
        MpspdzCommand::Doctor(a) => run_doctor(home, a),
    }
}

fn run_doctor(home: &Path, a: DoctorArgs) -> anyhow::Result<()> {
    let home = Home::new(home);
    let report = doctor::doctor(
        &home,
        &DoctorOptions {
            root: a.mpspdz_root,
            parties: a.parties,
            prime: secagg_core::engine::fedbiomed_prime(),
            key_bits: secagg_core::engine::DEFAULT_KEY_BITS,
            self_test: !a.no_self_test,
        },
    );
    match a.output.format {
        Format::Json => output::print_json(&report)?,
        Format::Text => {
            let mut t = output::table(&["check", "status", "detail"]);
            for i in &report.items {
                let status = match i.status {
                    CheckStatus::Ok => "ok",
                    CheckStatus::Failed => "FAILED",
                    CheckStatus::Skipped => "skipped",
                    CheckStatus::Info => "info",
                };
                let detail = match &i.hint {
                    Some(h) => format!("{}\nhint: {h}", i.detail),
                    None => i.detail.clone(),
                };
                t.add_row(vec![i.check.clone(), status.to_owned(), detail]);
            }
            output::print_table(t);
        }
    }
    report.verdict()?;
    Ok(())
}
