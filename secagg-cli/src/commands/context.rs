//! `secagg context`: negotiated keys stored by `secagg negotiate`.

use std::path::Path;

use clap::{Args, Subcommand};
use secagg_core::contexts::{ContextSummary, KeyState};
use secagg_core::engine::ContextScheme;
use secagg_core::home::Home;
use secagg_core::lookup;
use secagg_core::session;
use serde::Serialize;

use crate::output::{self, Format, FormatArg};

/// List, show, confirm, prune or delete negotiated contexts (server key / user keys).
///
/// A node's key is `unconfirmed` from the moment it is stored (before the node acknowledges the
/// researcher's finish) until the researcher's confirmation arrives, which the researcher sends
/// only after storing the server key. An unconfirmed key is usable only if the session completed
/// at the researcher; it expires 7 days after it was stored, and `context prune` deletes it.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List stored contexts (no keys), with their state.
    List(ListArgs),
    /// Show one context; the key itself only with --reveal-key.
    Show(ShowArgs),
    /// Mark an unconfirmed key confirmed, after the researcher checked that `secagg context show
    /// SESSION` lists the session's server key there (the confirmation message got lost).
    Confirm(ConfirmArgs),
    /// Delete unconfirmed keys stored more than --older-than-days days ago (default: the 7-day
    /// expiry); confirmed keys are never touched, nor keys younger than 10 minutes (the longest
    /// session deadline: their session may still be running, and its confirmation still come).
    /// Deleted keys are erased like `context delete`.
    Prune(PruneArgs),
    /// Delete a stored context. Its key is gone for good: overwritten with zeros in the store, and
    /// the store's write-ahead log emptied, so no copy is left in store.sqlite, -wal or -shm.
    Delete(DeleteArgs),
}

/// Arguments of `context list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `context show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Session id, or a unique prefix of a stored one (at least 4 characters).
    session: String,
    /// Print the key (a secret: the server key or this node's user key).
    #[arg(long)]
    reveal_key: bool,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `context confirm`.
#[derive(Debug, Args)]
pub struct ConfirmArgs {
    /// Session id, or a unique prefix of a stored one (at least 4 characters).
    session: String,
}

/// Arguments of `context prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Delete unconfirmed keys stored at least this many days ago (0 deletes every unconfirmed key).
    #[arg(long, value_name = "DAYS", default_value_t = secagg_core::contexts::UNCONFIRMED_EXPIRY.whole_days() as u32)]
    older_than_days: u32,
    #[command(flatten)]
    output: FormatArg,
}

/// Arguments of `context delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Session id, or a unique prefix of a stored one (at least 4 characters).
    session: String,
}

#[derive(Serialize)]
struct ContextList {
    contexts: Vec<secagg_core::contexts::ContextSummary>,
}

/// Runs `secagg context …`.
pub fn run(home: &Path, cmd: ContextCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    match cmd {
        ContextCommand::List(a) => {
            let contexts = session::context_summaries(&home)?;
            match a.output.format {
                Format::Json => output::print_json(&ContextList { contexts })?,
                Format::Text if contexts.is_empty() => {
                    output::note("no stored contexts (run `secagg negotiate`)")
                }
                Format::Text => {
                    let mut t = output::list_table(&[
                        "session",
                        "role",
                        "index",
                        "parties",
                        "scheme",
                        "key fingerprint",
                        "created",
                        "state",
                    ]);
                    for c in &contexts {
                        t.add_row(vec![
                            c.session_id.clone(),
                            c.role.to_string(),
                            c.party_index.to_string(),
                            c.parties.len().to_string(),
                            // One column: a LOM context is always the native protocol's.
                            match c.scheme {
                                ContextScheme::Jl => format!("jl {}", c.engine),
                                ContextScheme::Lom => "lom".into(),
                            },
                            c.key_fingerprint.clone(),
                            c.created_at.clone(),
                            state_text(c),
                        ]);
                    }
                    output::print_table(t);
                    let unconfirmed = contexts
                        .iter()
                        .filter(|c| c.state == KeyState::Unconfirmed)
                        .count();
                    if unconfirmed > 0 {
                        output::warn(format!(
                            "{unconfirmed} key{} unconfirmed: the researcher's confirmation never arrived, so the session may not have completed there; see `secagg context confirm --help`",
                            if unconfirmed == 1 { " is" } else { "s are" }
                        ));
                    }
                }
            }
        }
        ContextCommand::Show(a) => {
            let c = session::context_summary(
                &home,
                &lookup::session(&home, &a.session)?,
                a.reveal_key,
            )?;
            if c.state == KeyState::Unconfirmed {
                output::warn(format!(
                    "the key of session {} is unconfirmed ({}): the researcher's confirmation never arrived; use it only once the researcher has checked that the session completed there, then run `secagg context confirm {}`",
                    c.session_id,
                    state_text(&c),
                    c.session_id
                ));
            }
            match a.output.format {
                Format::Json => output::print_json(&c)?,
                Format::Text => {
                    let mut fields = vec![
                        ("session", c.session_id.clone()),
                        ("role", c.role.to_string()),
                        ("index", c.party_index.to_string()),
                        ("parties", c.parties.join(",")),
                        ("scheme", c.scheme.to_string()),
                        ("engine", c.engine.clone()),
                        ("key bits", c.key_bits.to_string()),
                        ("key fingerprint", c.key_fingerprint.clone()),
                        ("created", c.created_at.clone()),
                        ("state", state_text(&c)),
                    ];
                    if let Some(t) = c.dropout_threshold {
                        fields.push(("dropout threshold", t.to_string()));
                    }
                    if let Some(r) = &c.rounds_used {
                        let used: Vec<String> = r.iter().map(u64::to_string).collect();
                        fields.push(("rounds used", used.join(",")));
                    }
                    if let Some(r) = &c.reveals {
                        fields.push(("revealed", revealed_text(r)));
                    }
                    if let Some(k) = &c.key {
                        fields.push(("key", k.clone()));
                    }
                    output::print_fields(&fields);
                }
            }
        }
        ContextCommand::Confirm(a) => {
            let c = session::confirm_context(&home, &lookup::session(&home, &a.session)?)?;
            output::note(format!(
                "confirmed the key of session {} ({})",
                c.session_id, c.key_fingerprint
            ));
        }
        ContextCommand::Prune(a) => {
            let deleted = session::prune_unconfirmed(
                &home,
                time::Duration::days(a.older_than_days.into()),
                time::OffsetDateTime::now_utc(),
            )?;
            let contexts: Vec<_> = deleted.iter().map(|c| c.summary(false)).collect();
            match a.output.format {
                Format::Json => output::print_json(&ContextList { contexts })?,
                Format::Text => {
                    for c in &contexts {
                        println!(
                            "deleted unconfirmed context of session {} ({}, stored {})",
                            c.session_id, c.key_fingerprint, c.created_at
                        );
                    }
                    output::note(format!(
                        "pruned {} unconfirmed key{} stored at least {} day{} ago",
                        contexts.len(),
                        if contexts.len() == 1 { "" } else { "s" },
                        a.older_than_days,
                        if a.older_than_days == 1 { "" } else { "s" }
                    ));
                }
            }
        }
        ContextCommand::Delete(a) => {
            let c = session::delete_context(&home, &lookup::session(&home, &a.session)?)?;
            println!(
                "deleted context of session {} ({})",
                c.session_id, c.key_fingerprint
            );
        }
    }
    Ok(())
}

/// `confirmed`, or `unconfirmed (expires …)` / `unconfirmed, expired …`.
fn state_text(c: &ContextSummary) -> String {
    match (c.state, &c.expires_at, c.expired) {
        (KeyState::Unconfirmed, Some(at), Some(true)) => format!("unconfirmed, expired {at}"),
        (KeyState::Unconfirmed, Some(at), _) => format!("unconfirmed (expires {at})"),
        (state, _, _) => state.to_string(),
    }
}

/// What a node revealed, one entry per round and label: `round/label: N shares, M seeds (ids)`,
/// the seeds naming the nodes they were revealed for (`--format json` lists every record).
fn revealed_text(records: &[secagg_core::contexts::RevealRecord]) -> String {
    let mut rounds: Vec<String> = Vec::new();
    for chunk in records.chunk_by(|a, b| (a.round, a.label) == (b.round, b.label)) {
        let shares = chunk.iter().filter(|x| x.revealed == "share").count();
        let seeds: Vec<&str> = chunk
            .iter()
            .filter(|x| x.revealed == "seed")
            .map(|x| x.party.as_str())
            .collect();
        let (round, label) = (chunk[0].round, chunk[0].label);
        rounds.push(match seeds.is_empty() {
            true => format!("{round}/{label}: {shares} shares"),
            false => format!(
                "{round}/{label}: {shares} shares, {} seeds (with {})",
                seeds.len(),
                seeds.join(", ")
            ),
        });
    }
    match rounds.is_empty() {
        true => "nothing yet".to_owned(),
        false => rounds.join("; "),
    }
}
