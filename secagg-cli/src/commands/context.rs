//! `secagg context`: negotiated keys stored by `secagg negotiate`.

use std::path::Path;

use clap::{Args, Subcommand};
use secagg_core::home::Home;
use secagg_core::session;
use serde::Serialize;

use crate::output::{self, Format};

/// List, show or delete negotiated contexts (server key / user keys).
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// List stored contexts (no keys).
    List(ListArgs),
    /// Show one context; the key itself only with --reveal-key.
    Show(ShowArgs),
    /// Delete a stored context (its key is gone for good).
    Delete(DeleteArgs),
}

/// Arguments of `context list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Arguments of `context show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Session id.
    session: String,
    /// Print the key (a secret: the server key or this node's user key).
    #[arg(long)]
    reveal_key: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Arguments of `context delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Session id.
    session: String,
}

#[derive(Serialize)]
struct ContextList {
    contexts: Vec<secagg_core::store::contexts::ContextSummary>,
}

/// Runs `secagg context …`.
pub fn run(home: &Path, cmd: ContextCommand) -> anyhow::Result<()> {
    let home = Home::new(home);
    match cmd {
        ContextCommand::List(a) => {
            let contexts: Vec<_> = session::list_contexts(&home)?
                .iter()
                .map(|c| c.summary(false))
                .collect();
            match a.format {
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
                        "engine",
                        "key fingerprint",
                        "created",
                    ]);
                    for c in &contexts {
                        t.add_row(vec![
                            c.session_id.clone(),
                            c.role.to_string(),
                            c.party_index.to_string(),
                            c.parties.len().to_string(),
                            c.engine.clone(),
                            c.key_fingerprint.clone(),
                            c.created_at.clone(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        ContextCommand::Show(a) => {
            let c = session::get_context(&home, &a.session)?.summary(a.reveal_key);
            match a.format {
                Format::Json => output::print_json(&c)?,
                Format::Text => {
                    let mut fields = vec![
                        ("session", c.session_id.clone()),
                        ("role", c.role.to_string()),
                        ("index", c.party_index.to_string()),
                        ("parties", c.parties.join(",")),
                        ("engine", c.engine.clone()),
                        ("key bits", c.key_bits.to_string()),
                        ("key fingerprint", c.key_fingerprint.clone()),
                        ("created", c.created_at.clone()),
                    ];
                    if let Some(k) = &c.key {
                        fields.push(("key", k.clone()));
                    }
                    output::print_fields(&fields);
                }
            }
        }
        ContextCommand::Delete(a) => {
            let c = session::delete_context(&home, &a.session)?;
            println!(
                "deleted context of session {} ({})",
                c.session_id, c.key_fingerprint
            );
        }
    }
    Ok(())
}
