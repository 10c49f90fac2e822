//! Rendering: human text and tables on stdout, messages on stderr, `--format json` as one JSON
//! document on stdout, and errors as `error: …` / `hint: …` with an exit code per error kind.

use std::io::{IsTerminal, Write};

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

/// Output format of a command that shows data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text or table.
    #[value(alias = "table")]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A table styled for the terminal, wrapped to its width (plain ASCII, one line per row, when
/// stdout is not a terminal).
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    if std::io::stdout().is_terminal() {
        // Wrap long cells to the terminal's width instead of overflowing it.
        t.load_preset(presets::UTF8_FULL_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Dynamic);
    } else {
        // Piped output keeps one line per row, for grep and friends.
        t.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    t.set_header(header.iter().copied());
    t
}

/// A table for listings (ids, fingerprints, dates): compact, and never wrapping a cell, because
/// users copy ids from it and a wrapped id cannot be pasted back. Wide rows overflow instead.
pub fn list_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    if std::io::stdout().is_terminal() {
        t.load_preset(presets::UTF8_HORIZONTAL_ONLY);
    } else {
        t.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
    }
    t.set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.iter().copied());
    t
}

/// Prints aligned `key  value` lines on stdout.
pub fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in fields {
        println!("{k:<width$}  {v}");
    }
}

/// Prints a note for the user on stderr.
pub fn note(msg: impl std::fmt::Display) {
    eprintln!("{msg}");
}

/// Prints a warning on stderr.
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("warning: {msg}");
}

/// Reports `err` on stderr and returns the exit code of its kind.
pub fn report_error(err: &anyhow::Error) -> i32 {
    let core = err
        .chain()
        .find_map(|e| e.downcast_ref::<secagg_core::Error>());
    eprintln!("error: {err:#}");
    match core {
        Some(e) => {
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            e.kind().exit_code()
        }
        None => 1,
    }
}
