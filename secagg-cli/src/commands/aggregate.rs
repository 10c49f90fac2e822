//! `secagg aggregate`: Joye–Libert secure aggregation with the negotiated keys.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use secagg_core::aggregate::{
    self, Biprime, CiphertextFile, DecryptRequest, EncryptRequest, JlProfile, LomDecryptRequest,
    LomEncryptRequest, MaskedFile, RoundAverage, UnsignedFiles,
};
use secagg_core::home::{Home, PUBLIC_FILE_MODE};
use secagg_core::party::SessionId;

use super::negotiate::SchemeArg;
use crate::output::{self, Format};

/// Encrypt model parameters with this node's key, or decrypt their average at the researcher.
///
/// Each node encrypts its parameters for a training round with the user key it negotiated for the
/// session and sends the ciphertext file to the researcher; the researcher decrypts, from one file
/// per node, only the average. Bit-compatible with Fed-BioMed v4's Joye–Libert crypter.
#[derive(Debug, Subcommand)]
pub enum AggregateCommand {
    /// (node) Encrypt this node's parameters for one round.
    Encrypt(EncryptArgs),
    /// (researcher) Decrypt the average of one round from every node's ciphertext file.
    Decrypt(DecryptArgs),
}

/// Options shared by both directions.
#[derive(Debug, Args)]
pub struct RoundArgs {
    /// The negotiated session whose keys (jl) or pairwise secrets (lom) to use.
    #[arg(long)]
    session: String,
    /// The training round (every node and the researcher must use the same).
    #[arg(long)]
    round: u64,
    /// The scheme of the session's context: jl (Joye–Libert keys) or lom (pairwise secrets,
    /// `session run --scheme lom`).
    #[arg(long, value_enum, default_value_t)]
    scheme: SchemeArg,
    /// The public modulus, as Fed-BioMed's biprime JSON file (default: Fed-BioMed's
    /// default_biprime0, which Fed-BioMed v4 uses). Joye–Libert only.
    #[arg(long, value_name = "FILE")]
    biprime: Option<PathBuf>,
    /// LOM: which vector of the round this is (0: the model's weights; 1, 2, …: auxiliary
    /// variables, the validation value); each is masked with its own stream and only once.
    #[arg(long, default_value_t = 0, value_name = "N")]
    label: u64,
}

/// Arguments of `aggregate encrypt`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (node):\n  secagg aggregate encrypt --session 3f0c… --round 1 --params weights.npy -o round1.json"
)]
pub struct EncryptArgs {
    #[command(flatten)]
    round: RoundArgs,
    /// The parameters: a JSON array of numbers, or a NumPy .npy file of float32/float64 values.
    #[arg(long, value_name = "FILE")]
    params: PathBuf,
    /// Clipping range c: values are clipped to [-c, c] before quantisation (Fed-BioMed's default 3;
    /// every node must use the same).
    #[arg(long, default_value_t = aggregate::DEFAULT_CLIPPING_RANGE)]
    clipping_range: u32,
    /// This node's weight (its sample count, 1 to 131071); the researcher then gets the
    /// weighted average. Every node weights, or none. LOM, or Joye–Libert with --profile
    /// fedbiomed-v6 (v4's encoding has no weight).
    #[arg(long, value_name = "W")]
    weight: Option<u64>,
    /// The encoding, the same at every node. LOM: secagg (default: a stream per label, the whole
    /// session id as nonce), fedbiomed-v6 (fedbiomed 6.4 bit for bit, for federations mixing
    /// secagg and Fed-BioMed nodes) or fedbiomed-v6.3 (6.0–6.3). Joye–Libert: fedbiomed-v4
    /// (default) or fedbiomed-v6 (T = 8192, weighted; the researcher reads it from the files).
    #[arg(long, value_name = "PROFILE")]
    profile: Option<String>,
    /// Write the ciphertext file to FILE instead of stdout (an existing FILE only with --force).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing -o FILE.
    #[arg(long, requires = "output")]
    force: bool,
}

/// Arguments of `aggregate decrypt`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every file must be signed by the node it names, with the key whose certificate is registered here \
(`aggregate encrypt` signs); a file that does not verify is refused (exit 8). The average is printed only if every \
decrypted value is one that honest nodes can make; otherwise the round is refused (exit 11).\n\n\
Example (researcher):\n  secagg aggregate decrypt --session 3f0c… --round 1 node1-round1.json node2-round1.json"
)]
pub struct DecryptArgs {
    #[command(flatten)]
    round: RoundArgs,
    /// One ciphertext file from every node of the session. A LOM context made with
    /// --dropout-threshold T takes files from at least T nodes: the survivors' agents are then
    /// asked for what unmasks the round, and who dropped is reported.
    #[arg(required = true, value_name = "CIPHERTEXT_FILE")]
    files: Vec<PathBuf>,
    /// Accept files that carry no signature (written by hand or by an older secagg); the result
    /// is then marked unauthenticated (`"authenticated": false`, and a warning). A file whose
    /// signature does not verify is refused regardless.
    #[arg(long)]
    allow_unsigned: bool,
    /// Write the result to FILE instead of stdout (an existing FILE only with --force).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace an existing -o FILE.
    #[arg(long, requires = "output")]
    force: bool,
    /// Output format: `text` (one value per line) or `json`. Default: `json` when -o names a
    /// `.json` file, `text` otherwise; `--format text` with a `.json` file is refused.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

fn biprime(path: Option<&Path>) -> anyhow::Result<Biprime> {
    Ok(match path {
        None => Biprime::default_biprime0(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("while reading biprime file `{}`", p.display()))?;
            Biprime::from_fedbiomed_json(&text)
                .map_err(|e| e.context(format!("in `{}`", p.display())))?
        }
    })
}

fn emit(home: &Home, output: Option<&Path>, force: bool, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            home.write_output(path, text.as_bytes(), PUBLIC_FILE_MODE, force)?;
            output::note(format!("written to {}", path.display()));
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// Runs `secagg aggregate …`.
pub fn run(home: &Path, cmd: AggregateCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    match cmd {
        AggregateCommand::Encrypt(a) if a.round.scheme == SchemeArg::Lom => encrypt_lom(&home, a),
        AggregateCommand::Decrypt(a) if a.round.scheme == SchemeArg::Lom => decrypt_lom(&home, a),
        AggregateCommand::Encrypt(a) => {
            refuse_lom_options(&a.round)?;
            let profile = match a.profile.as_deref() {
                None => JlProfile::FedbiomedV4,
                Some(p) => JlProfile::parse(p)?,
            };
            let session = SessionId::parse(&a.round.session)?;
            if let Some(p) = &a.output {
                home.check_output(p, a.force)?;
            }
            let biprime = biprime(a.round.biprime.as_deref())?;
            let values = aggregate::read_params(&a.params)?;
            if let Some(clipped) = aggregate::clipped(&values, a.clipping_range) {
                output::warn(format!(
                    "{} of {} parameters are outside the clipping range [-{c}, {c}] and are clipped to it (the largest magnitude is {}); every node must use the same --clipping-range, so raise it for all if these values matter",
                    clipped.count,
                    values.len(),
                    clipped.largest_magnitude,
                    c = a.clipping_range
                ));
            }
            let req = EncryptRequest {
                clipping_range: a.clipping_range,
                profile,
                weight: a.weight,
                ..EncryptRequest::new(session, a.round.round, values)
            };
            let bar = progress_bar("encrypting", true);
            let report = |done: usize, total: usize| tick(&bar, done, total);
            let file =
                aggregate::encrypt_round(&home, &req, &biprime, bar.as_ref().map(|_| &report as _));
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let file = file?;
            let text = serde_json::to_string_pretty(&file)? + "\n";
            output::note(format!(
                "encrypted {} parameters of round {} into {} ciphertexts with {}'s key of session {}",
                file.count,
                file.round,
                file.ciphertexts.len(),
                file.party_id,
                file.session_id
            ));
            emit(&home, a.output.as_deref(), a.force, &text)
        }
        AggregateCommand::Decrypt(a) => {
            refuse_lom_options(&a.round)?;
            let session = SessionId::parse(&a.round.session)?;
            if let Some(p) = &a.output {
                home.check_output(p, a.force)?;
            }
            let biprime = biprime(a.round.biprime.as_deref())?;
            let mut files = Vec::with_capacity(a.files.len());
            for p in &a.files {
                files.push((format!("`{}`", p.display()), CiphertextFile::read(p)?));
            }
            let req = DecryptRequest {
                session,
                round: a.round.round,
                files,
                unsigned: if a.allow_unsigned {
                    UnsignedFiles::Accept
                } else {
                    UnsignedFiles::Refuse
                },
            };
            let format = decrypt_format(a.format, a.output.as_deref())?;
            let bar = progress_bar("decrypting", format == Format::Text);
            let report = |done: usize, total: usize| tick(&bar, done, total);
            let avg =
                aggregate::decrypt_round(&home, &req, &biprime, bar.as_ref().map(|_| &report as _));
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let avg = avg?;
            if !avg.authenticated {
                output::warn(format!(
                    "UNAUTHENTICATED result: the files from {} carry no signature (accepted with --allow-unsigned), so nothing shows these nodes wrote them",
                    avg.unsigned_files_from.join(", ")
                ));
            }
            output::note(format!(
                "decrypted the average of {} parameters over {} nodes, round {} of session {}",
                avg.count, avg.nodes, avg.round, avg.session_id
            ));
            let text = match format {
                Format::Json => serde_json::to_string_pretty(&avg)? + "\n",
                Format::Text => text_average(&avg),
            };
            emit(&home, a.output.as_deref(), a.force, &text)
        }
    }
}

/// Refuses the LOM-only option with `--scheme jl` (it would be ignored silently).
fn refuse_lom_options(r: &RoundArgs) -> anyhow::Result<()> {
    if r.label != 0 {
        return Err(secagg_core::Error::invalid(
            "--label is for --scheme lom; a Joye–Libert round encrypts one vector",
        )
        .with_hint("add --scheme lom if the session is a LOM context, or leave --label out")
        .into());
    }
    Ok(())
}

/// `aggregate encrypt --scheme lom`: mask, record the round, then write the signed file.
fn encrypt_lom(home: &Home, a: EncryptArgs) -> anyhow::Result<()> {
    let session = SessionId::parse(&a.round.session)?;
    if a.round.biprime.is_some() {
        return Err(secagg_core::Error::invalid("--biprime is for --scheme jl").into());
    }
    if let Some(p) = &a.output {
        home.check_output(p, a.force)?;
    }
    let req = LomEncryptRequest {
        session,
        round: a.round.round,
        label: a.round.label,
        values: aggregate::read_params(&a.params)?,
        weight: a.weight,
        clipping_range: a.clipping_range,
        profile: aggregate::masked_file::parse_profile(a.profile.as_deref().unwrap_or("secagg"))?,
    };
    let masked = aggregate::encrypt_lom(home, &req)?;
    let c = masked.clipped;
    if c.below + c.above > 0 {
        output::warn(format!(
            "{} of {} parameters are outside the clipping range [-{r}, {r}] ({} below, {} above) and were clipped to it; every node must use the same --clipping-range, so raise it for all if these values matter",
            c.below + c.above,
            req.values.len(),
            c.below,
            c.above,
            r = a.clipping_range
        ));
    }
    if let Some(shares) = &masked.shares {
        for (node, why) in &shares.missed {
            output::warn(format!(
                "{node} holds no share of this round's self-mask: {why}"
            ));
        }
        output::note(format!(
            "self-mask shared with {} of {} nodes (this one included)",
            shares.holders.len(),
            shares.holders.len() + shares.missed.len()
        ));
    }
    let f = &masked.file;
    let text = serde_json::to_string(f)? + "\n";
    output::note(format!(
        "masked {} parameters of round {} (label {}) with {}'s pairwise secrets of LOM context {} ({} profile); this round and label are now used",
        f.count, f.round, f.label, f.party_id, f.session_id, f.profile
    ));
    emit(home, a.output.as_deref(), a.force, &text)
}

/// `aggregate decrypt --scheme lom`: check and sum every node's masked file.
fn decrypt_lom(home: &Home, a: DecryptArgs) -> anyhow::Result<()> {
    let session = SessionId::parse(&a.round.session)?;
    if a.round.biprime.is_some() || a.allow_unsigned {
        return Err(secagg_core::Error::invalid(
            "--biprime and --allow-unsigned are for --scheme jl (LOM files are always signed)",
        )
        .into());
    }
    if let Some(p) = &a.output {
        home.check_output(p, a.force)?;
    }
    let mut files = Vec::with_capacity(a.files.len());
    for p in &a.files {
        files.push((format!("`{}`", p.display()), MaskedFile::read(p)?));
    }
    let req = LomDecryptRequest {
        session,
        round: a.round.round,
        label: a.round.label,
        files,
    };
    let format = decrypt_format(a.format, a.output.as_deref())?;
    let avg = aggregate::decrypt_lom(home, &req)?;
    if let Some(d) = &avg.dropouts {
        if !d.before_masking.is_empty() {
            output::warn(format!(
                "dropped before masking (no file): {}; the average is over the other nodes",
                d.before_masking.join(", ")
            ));
        }
        for s in &d.while_unmasking {
            output::warn(format!(
                "{} went silent at the {} ({}); its self-mask was rebuilt from the other nodes' shares",
                s.party, s.step, s.reason
            ));
        }
    }
    output::note(format!(
        "unmasked the average of {} parameters over {} nodes (total weight {}), round {} label {} of LOM context {}",
        avg.count, avg.nodes, avg.total_weight, avg.round, avg.label, avg.session_id
    ));
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&avg)? + "\n",
        Format::Text => lines(&avg.average),
    };
    emit(home, a.output.as_deref(), a.force, &text)
}

/// One value per line.
fn lines(values: &[f64]) -> String {
    let mut s = String::with_capacity(values.len() * 22);
    for v in values {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// The output format of `decrypt`: as given, else inferred from a `-o` file's `.json`
/// extension (regression: `-o avg.json` wrote one number per line into a `.json` file).
fn decrypt_format(given: Option<Format>, output: Option<&Path>) -> anyhow::Result<Format> {
    let json_file = output
        .and_then(|p| p.extension())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    match (given, json_file) {
        (Some(Format::Text), true) => Err(secagg_core::Error::invalid(format!(
            "--format text would write one value per line into `{}`, a .json file",
            output.map(|p| p.display().to_string()).unwrap_or_default()
        ))
        .with_hint("drop --format text (a .json file gets JSON), or name the file .txt")
        .into()),
        (Some(f), _) => Ok(f),
        (None, true) => Ok(Format::Json),
        (None, false) => Ok(Format::Text),
    }
}

/// A progress bar on stderr, only when stderr is a terminal and the output is for people (never
/// in JSON output or when a program reads stderr).
fn progress_bar(what: &str, for_people: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !for_people || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} ciphertexts, {{eta}} left"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn tick(bar: &Option<indicatif::ProgressBar>, done: usize, total: usize) {
    if let Some(b) = bar {
        b.set_length(total as u64);
        b.set_position(done as u64);
    }
}

/// One value per line (what a shell script or `numpy.loadtxt` reads).
fn text_average(avg: &RoundAverage) -> String {
    let mut s = String::with_capacity(avg.average.len() * 22);
    for v in &avg.average {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}
