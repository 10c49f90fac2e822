//! `secagg`: set up secure aggregation for a federated-learning federation.
//!
//! The command-line tool as a library: [`run`] is the whole CLI, called by the `secagg` binary
//! (`main.rs`) and by the Python package's `secagg` console script (`secagg._cli`), so that a
//! `pip install` gives sites the same command as `cargo install`.
#![forbid(unsafe_code)]

// This crate's `print!`/`println!`/`eprint!`/`eprintln!` shadow `std`'s (a `macro_rules!` defined
// before the modules is in scope in all of them). `std`'s panic when stdout is a closed pipe
// (`secagg … | head -1`); these drop the output and let the command end quietly (see
// `output::write_stdout`), so no command can forget to.
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}
macro_rules! println {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! eprint {
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!($($arg)*)) };
}
macro_rules! eprintln {
    () => { $crate::output::write_stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

mod commands;
mod output;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use commands::{
    agent, aggregate, certificate, context, demo, deploy, identity, init, mpspdz, negotiate,
    roster, vpn,
};

/// The `--help` section listing the exit codes, generated from `secagg_core::ErrorKind` (the one
/// place they are defined) so that help, code and README cannot disagree.
fn exit_codes_help() -> String {
    let mut text = String::from("Exit codes:");
    for (code, meaning) in secagg_core::error::exit_codes() {
        text.push_str(&format!("\n  {code:>2}  {meaning}"));
    }
    text
}

/// How failures are reported (`--error-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ErrorFormat {
    /// `error: …` and `hint: …` lines, for people.
    Text,
    /// One JSON line: kind, exit_code, message, hint.
    Json,
}

/// Set up secure aggregation for a federated-learning federation: identities and certificates,
/// registration of the other parties, and key negotiation.
#[derive(Debug, Parser)]
#[command(name = "secagg", version, after_help = exit_codes_help(), max_term_width = 100)]
struct Cli {
    /// This party's home directory (identity, store); default ./.secagg.
    #[arg(long, global = true, env = secagg_core::home::HOME_ENV, value_name = "DIR")]
    home: Option<PathBuf>,
    /// How a failure is reported on stderr: `text` (`error:` and `hint:` lines) or `json` (one
    /// line: kind, exit_code, message, hint), for programs that run secagg and read why it failed.
    /// Default: `json` when the command's `--format` is json, else `text`.
    #[arg(long, global = true, value_enum)]
    error_format: Option<ErrorFormat>,
    /// Tables on a terminal keep every row on one line, however wide, instead of wrapping cells
    /// to the terminal's width (output to a pipe or file is never wrapped; `--format json` has
    /// every field).
    #[arg(long, global = true)]
    wide: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create this party's identity (party id, endpoint, key, certificate).
    Init(init::InitArgs),
    /// Show or change this party's identity.
    #[command(subcommand)]
    Identity(identity::IdentityCommand),
    /// This party's certificate and the registered peers' certificates.
    #[command(subcommand)]
    Certificate(certificate::CertificateCommand),
    /// Signed rosters: the researcher vouches for the federation's parties, the nodes import it
    /// (O(N) out-of-band checks instead of N(N−1)).
    #[command(subcommand)]
    Roster(roster::RosterCommand),
    /// Run this party's side of a key negotiation and store the resulting key.
    Negotiate(negotiate::NegotiateArgs),
    /// Negotiated keys stored by `negotiate`.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Joye–Libert secure aggregation with the negotiated keys: nodes encrypt, the researcher
    /// decrypts the average.
    #[command(subcommand)]
    Aggregate(aggregate::AggregateCommand),
    /// Run a whole federation on this machine (each party its own process) and verify the keys.
    Demo(demo::DemoArgs),
    /// MP-SPDZ engine support: check an installation (`doctor`).
    #[command(subcommand)]
    Mpspdz(mpspdz::MpspdzCommand),
    /// WireGuard VPN: peer registry and configurations (server) and client configuration (peers).
    #[command(subcommand)]
    Vpn(vpn::VpnCommand),
    /// Deployment containers: build, configure, start, stop, status, clean.
    #[command(subcommand)]
    Deploy(deploy::DeployCommand),
    /// Run this party's agent: joins the sessions that researchers registered here request.
    ///
    /// By default, session requests are taken only from researchers registered here by hand
    /// (`certificate register`, a bundle, a Fed-BioMed store): a roster vouches for nodes, so a
    /// researcher that a roster registered is refused until it is named with --allow-researcher
    /// or registered by hand. With --allow-researcher, exactly the researchers named.
    Serve(agent::ServeArgs),
    /// Run a whole session from the researcher through the nodes' agents.
    #[command(subcommand)]
    Session(agent::SessionCommand),
    /// Check the federation: every registered party's agent, reachable and mutually pinned.
    #[command(subcommand)]
    Federation(agent::FederationCommand),
}

/// Rewrites Fed-BioMed's two-letter short options (`-pk`, `-pi`), which clap cannot express, to
/// their long forms, so commands copied from Fed-BioMed instructions keep working.
fn fedbiomed_short_options(
    args: impl Iterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    args.map(|a| {
        let Some(s) = a.to_str() else { return a };
        for (short, long) in [("-pk", "--public-key"), ("-pi", "--party-id")] {
            if s == short {
                return long.into();
            }
            if let Some(v) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                return format!("{long}={v}").into();
            }
        }
        a
    })
    .collect()
}

/// The secagg error behind a value clap rejected: arguments typed by secagg's own parsers
/// (`PartyId`, `SessionId`, `PeerType`, `Host`, …) fail with the parser's `InvalidInput` error,
/// which is reported like any other failure of that kind (its message and hint, exit 3) rather
/// than as a clap usage error (exit 2), so that parsing at the boundary changes no exit code.
fn invalid_value(e: &clap::Error) -> Option<&secagg_core::Error> {
    if e.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    std::error::Error::source(e)?.downcast_ref::<secagg_core::Error>()
}

/// Whether the raw arguments ask for errors as JSON: `--error-format json`, or `--format json`
/// (a script that reads the data as JSON reads the failure as JSON too, never prose). Read from
/// the raw arguments because a value rejected while parsing them is reported before `Cli` exists,
/// and because `--format` belongs to each command's own arguments.
fn json_errors_requested(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<_> = args
        .iter()
        .take_while(|a| *a != "--")
        .map(|a| a.to_string_lossy())
        .collect();
    let explicit_text = args
        .windows(2)
        .any(|w| w[0] == "--error-format" && w[1] == "text")
        || args.iter().any(|a| a == "--error-format=text");
    !explicit_text
        && (args
            .windows(2)
            .any(|w| (w[0] == "--error-format" || w[0] == "--format") && w[1] == "json")
            || args
                .iter()
                .any(|a| a == "--error-format=json" || a == "--format=json"))
}

/// Runs the `secagg` command line `args` (the program name first) and returns its exit status.
/// Help, version and usage errors exit the process at once (as clap does).
pub fn run(args: Vec<OsString>) -> u8 {
    // `secagg demo` blocks SIGINT/SIGTERM to take them on a thread, and its `secagg negotiate`
    // children inherit that mask across exec: give them the default behaviour back.
    secagg_core::processes::unblock_termination_signals();
    let args = fedbiomed_short_options(args.into_iter());
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => match invalid_value(&e) {
            Some(invalid) => {
                let report = output::core_error_report(invalid);
                return output::print_report(&report, json_errors_requested(&args)) as u8;
            }
            None => e.exit(),
        },
    };
    let json_errors = match cli.error_format {
        Some(f) => f == ErrorFormat::Json,
        None => json_errors_requested(&args),
    };
    output::set_wide(cli.wide);
    let home_given = cli.home.is_some();
    let home = cli
        .home
        .unwrap_or_else(|| PathBuf::from(secagg_core::home::DEFAULT_HOME));
    let result = match cli.command {
        Command::Init(a) => init::run(&home, a),
        Command::Identity(c) => identity::run(&home, c),
        Command::Certificate(c) => certificate::run(&home, c),
        Command::Roster(c) => roster::run(&home, c),
        Command::Negotiate(a) => negotiate::run(&home, a),
        Command::Context(c) => context::run(&home, c),
        Command::Aggregate(c) => aggregate::run(&home, c),
        Command::Demo(a) => demo::run(home_given, a),
        Command::Mpspdz(c) => mpspdz::run(&home, c),
        Command::Vpn(c) => vpn::run(&home, c),
        Command::Deploy(c) => deploy::run(&home, c),
        Command::Serve(a) => agent::serve(&home, a),
        Command::Session(c) => agent::session(&home, c),
        Command::Federation(c) => agent::federation(&home, c),
    };
    // Output lost to a full disk must not look like success; a closed pipe is not an error.
    let result = result.and_then(|()| output::finish_stdout());
    match result {
        Ok(()) => 0,
        Err(e) => output::report_error(&e, json_errors) as u8,
    }
}
