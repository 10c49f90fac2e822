//! Rendering: human text and tables on stdout, messages on stderr, `--format json` as one JSON
//! document on stdout, and errors as `error: …` / `hint: …` (or, with `--error-format json`, one
//! JSON error document on stderr) with an exit code per error kind.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use comfy_table::{presets, ColumnConstraint, ContentArrangement, Table, Width};
use secagg_core::error::ErrorReport;
use secagg_core::ErrorKind;
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

/// The `--format` option of every command that shows data, defined once and flattened into each
/// command's arguments. Text is for people and may change between versions; JSON is for scripts.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct FormatArg {
    /// Output format: `text` for people (`table` is an alias), or `json`: one JSON document on
    /// stdout, for scripts.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Set once stdout is found closed (EPIPE: the reader of a pipe went away, as in `secagg … | head
/// -1`); later output is dropped.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first other error writing stdout (a full disk behind `> file`), reported when the command ends.
static STDOUT_ERROR: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes to stdout; every `print!`/`println!` of this crate comes here (see `main.rs`).
///
/// `std`'s `println!` panics when stdout is a pipe whose reader is gone (Rust ignores SIGPIPE, so
/// the write fails with EPIPE): exit 101 and a panic message. Like ripgrep, secagg ends quietly
/// instead, but rather than exiting on the spot (ripgrep exits 0 at once) it drops the output and
/// lets the command finish what it was doing, since a half-done store change or a demo directory
/// left behind would be worse; the exit status is then the command's own (0 on success). Other
/// write errors are kept for [`finish_stdout`] to report.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        record_stdout_error(e);
    }
}

fn record_stdout_error(e: std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        return;
    }
    let mut slot = STDOUT_ERROR.lock().unwrap_or_else(|p| p.into_inner());
    slot.get_or_insert(e);
}

/// Flushes stdout at the end of a command; the first write error other than a closed pipe, if
/// any, becomes the command's error (output that was lost must not look like success).
pub fn finish_stdout() -> anyhow::Result<()> {
    if !STDOUT_CLOSED.load(Ordering::Relaxed) {
        if let Err(e) = std::io::stdout().lock().flush() {
            record_stdout_error(e);
        }
    }
    let slot = STDOUT_ERROR
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match slot {
        Some(e) => Err(secagg_core::Error::io("while writing to stdout", e).into()),
        None => Ok(()),
    }
}

/// Writes to stderr, ignoring errors: with stderr closed there is nowhere left to report them,
/// and `std`'s `eprintln!` would panic instead.
pub fn write_stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    println!("{text}");
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
    let terminal = std::io::stdout().is_terminal();
    if terminal {
        t.load_preset(presets::UTF8_HORIZONTAL_ONLY);
    } else {
        t.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
    }
    // On a terminal, cells wrap so that the table fits its width (fingerprints and ids made
    // tables 150–300 columns wide); `--wide`, pipes and files keep one line per row.
    t.set_content_arrangement(if terminal && !WIDE.load(Ordering::Relaxed) {
        ContentArrangement::Dynamic
    } else {
        ContentArrangement::Disabled
    });
    t.set_header(header.iter().copied());
    t
}

/// Cells shorter than this never wrap when a table is fitted to the terminal: dates, ports,
/// states and kinds stay whole, and only long values (ids, fingerprints) wrap.
const UNBROKEN: u16 = 12;

/// Prints a table of [`list_table`] on stdout, fitted to the terminal: each column at least as
/// wide as its header's longest word and its content up to [`UNBROKEN`] characters, the long
/// values wrapping in the room left (on a terminal too narrow for that, only the header words
/// stay whole).
pub fn print_table(mut t: Table) {
    let headers: Vec<u16> = t
        .header()
        .map(|h| {
            h.cell_iter()
                .map(|c| {
                    c.content()
                        .split_whitespace()
                        .map(|w| w.chars().count() as u16)
                        .max()
                        .unwrap_or(1)
                })
                .collect()
        })
        .unwrap_or_default();
    let contents = t.column_max_content_widths();
    // + 2: comfy-table counts the cell's padding in a column's width.
    let mut floors: Vec<u16> = contents
        .iter()
        .enumerate()
        .map(|(i, content)| {
            headers
                .get(i)
                .copied()
                .unwrap_or(1)
                .max((*content).min(UNBROKEN))
                + 2
        })
        .collect();
    // A terminal too narrow even for those floors (80 columns and a 10-column list): only the
    // headers' words stay whole, and every value may wrap.
    let needed: u16 = floors.iter().sum::<u16>() + floors.len() as u16;
    if t.width().is_some_and(|w| needed > w) {
        floors = headers.iter().map(|h| h + 2).collect();
    }
    for (i, floor) in floors.into_iter().enumerate() {
        if let Some(c) = t.column_mut(i) {
            c.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(floor)));
        }
    }
    write_stdout(format_args!("{t}\n"));
}

/// `--wide`: tables never wrap.
static WIDE: AtomicBool = AtomicBool::new(false);

/// Records `--wide` for [`list_table`].
pub fn set_wide(wide: bool) {
    WIDE.store(wide, Ordering::Relaxed);
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

/// The report of `err`: the kind of the `secagg_core::Error` in its chain; failing that, the
/// CLI's own failures are classified by their cause (an I/O error, such as a temporary directory
/// that cannot be created, is a storage error), so every error has a kind and no failure falls
/// through to a bare exit 1 unless it really is unexpected.
pub fn error_report(err: &anyhow::Error) -> ErrorReport {
    let message = format!("{err:#}");
    if let Some(core) = err
        .chain()
        .find_map(|e| e.downcast_ref::<secagg_core::Error>())
    {
        return ErrorReport::new(core.kind(), message, core.hint().map(str::to_owned));
    }
    let kind = if err.chain().any(|e| e.is::<std::io::Error>()) {
        ErrorKind::Storage
    } else if let Some(j) = err
        .chain()
        .find_map(|e| e.downcast_ref::<serde_json::Error>())
    {
        // Writing JSON fails on I/O (storage) or on a value JSON cannot hold (a bug).
        if j.is_io() {
            ErrorKind::Storage
        } else {
            ErrorKind::Internal
        }
    } else {
        ErrorKind::Internal
    };
    ErrorReport::new(kind, message, None)
}

/// Reports `err` on stderr and returns its exit code: `error: …` and `hint: …` lines for people,
/// or, when `json` (`--error-format json`), one [`ErrorReport`] JSON document on one line, for
/// the program that started secagg.
pub fn report_error(err: &anyhow::Error, json: bool) -> i32 {
    print_report(&error_report(err), json)
}

/// The report of a secagg error met outside a command (a value rejected while parsing the
/// arguments).
pub fn core_error_report(err: &secagg_core::Error) -> ErrorReport {
    ErrorReport::new(err.kind(), err.to_string(), err.hint().map(str::to_owned))
}

/// Prints `report` as [`report_error`] does and returns its exit code.
pub fn print_report(report: &ErrorReport, json: bool) -> i32 {
    if json {
        // Serialising plain strings and a unit enum cannot fail.
        let line = serde_json::to_string(&report).unwrap_or_default();
        eprintln!("{line}");
    } else {
        eprintln!("error: {}", report.message);
        if let Some(h) = &report.hint {
            eprintln!("hint: {h}");
        }
    }
    report.exit_code
}
