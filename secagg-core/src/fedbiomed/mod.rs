//! Interoperability with Fed-BioMed v4 files: importing the `Certificates` table of a TinyDB file
//! (`var/db_<id>.json`).
//!
//! Fed-BioMed stores whatever it was given; secagg validates every entry exactly like
//! [`crate::registration::register`] and imports all or nothing, naming a
//! bad entry by its TinyDB document id. [`ImportOptions`] rehearse the import (a dry run that
//! writes nothing) or import the valid entries and report the refused ones.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, ErrorKind, Result};
use crate::fs_secure;
use crate::home::Home;
use crate::identity;
use crate::party::{Endpoint, PartyId};
use crate::registration::{self, Action, CertificateSource, RegisterRequest, Registered};
use crate::store::Store;

pub mod component_home;
pub mod elements;

/// Largest TinyDB file read.
pub const MAX_TINYDB_BYTES: u64 = 256 * 1024 * 1024;

/// Only the `Certificates` table is read; other tables (which may hold 2048-bit integers that a
/// generic JSON value could not represent) are skipped unparsed.
#[derive(Deserialize)]
struct TinyDb {
    #[serde(rename = "Certificates", default)]
    certificates: Option<BTreeMap<String, serde_json::Value>>,
}

/// How an import treats the documents it reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Replace existing registrations of the same party ids.
    pub upsert: bool,
    /// Validate everything and report what would happen, writing nothing.
    pub dry_run: bool,
    /// Import the valid documents and report the refused ones, instead of refusing the file.
    pub skip_invalid: bool,
    /// Accept party ids without the `researcher_`/`node_` prefix ([`PartyId::parse_custom`]),
    /// which Fed-BioMed stores as it got them. Their role follows Fed-BioMed's rule (a node id
    /// starts with `node_`), which is also how Fed-BioMed set the document's `component`.
    pub allow_custom_ids: bool,
}

/// The outcome of an import (or, with [`ImportOptions::dry_run`], of its rehearsal).
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The file read.
    pub source: String,
    /// Entries in its `Certificates` table.
    pub entries: usize,
    /// True when nothing was written (`--dry-run`): `imported` then says what would happen.
    pub dry_run: bool,
    /// One line per imported (or importable) entry, in document-id order.
    pub imported: Vec<ImportedEntry>,
    /// Every refused entry with its reason, in document-id order.
    pub refused: Vec<RefusedEntry>,
}

/// One imported document.
#[derive(Debug, Clone, Serialize)]
pub struct ImportedEntry {
    /// TinyDB document id.
    pub document_id: String,
    /// The registration.
    #[serde(flatten)]
    pub registered: Registered,
}

/// One refused document.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedEntry {
    /// TinyDB document id.
    pub document_id: String,
    /// The party id the document names, as written (absent when it has none).
    pub party_id: Option<String>,
    /// The kind of the refusal (the exit code it gives on its own).
    pub kind: ErrorKind,
    /// Why it was refused.
    pub reason: String,
    /// What to do about it, when known.
    pub hint: Option<String>,
}

impl ImportReport {
    /// The number of imported entries whose fingerprint was not checked out of band (new or
    /// changed certificates: every one, since a TinyDB file carries no expected fingerprint).
    pub fn unchecked_fingerprints(&self) -> usize {
        self.imported
            .iter()
            .filter(|e| {
                !e.registered.fingerprint_checked && e.registered.action != Action::Unchanged
            })
            .count()
    }

    /// The error the import fails with, if it does: with `skip_invalid`, when every document was
    /// refused; otherwise (a dry run) when any was, as the real import would. The error is the
    /// one of the first refused document.
    pub fn failure(&self, options: &ImportOptions) -> Option<Error> {
        let first = self.refused.first()?;
        if options.skip_invalid && !self.imported.is_empty() {
            return None;
        }
        let mut msg = format!(
            "while importing `{}`: document {}",
            self.source, first.document_id
        );
        if let Some(p) = &first.party_id {
            msg.push_str(&format!(" (party `{p}`)"));
        }
        msg.push_str(&format!(": {}", first.reason));
        if options.skip_invalid {
            msg = format!(
                "none of the {} documents could be imported; {msg}",
                self.refused.len()
            );
        }
        let err = match first.kind {
            ErrorKind::NotFound => Error::not_found(msg),
            ErrorKind::Conflict => Error::conflict(msg),
            ErrorKind::Authentication => Error::authentication(msg),
            _ => Error::invalid(msg),
        };
        Some(match &first.hint {
            Some(h) => err.with_hint(h.clone()),
            None => err,
        })
    }
}

fn doc_order(id: &str) -> (u64, String) {
    (id.parse().unwrap_or(u64::MAX), id.to_owned())
}

/// One document of the `Certificates` table: its id, the party id it names (as written), and
/// the request it makes or why it cannot make one.
type ParsedDocument = (String, Option<String>, Result<RegisterRequest>);

fn read_tinydb_documents(
    path: &Path,
    upsert: bool,
    allow_custom_ids: bool,
) -> Result<Vec<ParsedDocument>> {
    let ctx = format!("while importing `{}`", path.display());
    let bytes = fs_secure::read_limited(path, MAX_TINYDB_BYTES, "Fed-BioMed database")?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        // TinyDB treats an empty file as an empty database.
        return Ok(Vec::new());
    }
    let db: TinyDb = serde_json::from_slice(&bytes).map_err(|e| {
        Error::invalid(format!("not a Fed-BioMed TinyDB file ({e})"))
            .with_hint("give the node's or researcher's `var/db_<id>.json`")
            .context(&ctx)
    })?;
    let mut docs: Vec<(String, serde_json::Value)> =
        db.certificates.unwrap_or_default().into_iter().collect();
    docs.sort_by_key(|(id, _)| doc_order(id));
    Ok(docs
        .into_iter()
        .map(|(doc_id, doc)| {
            let party = doc
                .get("party_id")
                .and_then(|p| p.as_str())
                .map(str::to_owned);
            let req = parse_document(path, &doc_id, &doc, upsert, allow_custom_ids);
            (doc_id, party, req)
        })
        .collect())
}

/// The request of one document (errors without the file and document context).
fn parse_document(
    path: &Path,
    doc_id: &str,
    doc: &serde_json::Value,
    upsert: bool,
    allow_custom_ids: bool,
) -> Result<RegisterRequest> {
    let obj = doc
        .as_object()
        .ok_or_else(|| Error::invalid("is not a JSON object"))?;
    let text = |key: &str| -> Result<String> {
        match obj.get(key) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::invalid(format!("`{key}` is not a string"))),
            None => Err(Error::invalid(format!("`{key}` is missing"))),
        }
    };
    let party_id = PartyId::parse_entry(&text("party_id")?, allow_custom_ids)?;
    let port: u32 = match obj.get("port") {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| Error::invalid(format!("port {n} is out of range")))?,
        // Fed-BioMed's certificate-dev-setup stores ports as strings.
        Some(serde_json::Value::String(s)) => u32::from(crate::party::parse_port(s)?),
        Some(_) => return Err(Error::invalid("`port` is neither a number nor a string")),
        None => return Err(Error::invalid("`port` is missing")),
    };
    let ip = text("ip")?;
    let certificate = text("certificate")?;
    if let Some(component) = obj.get("component").and_then(|c| c.as_str()) {
        let expected = party_id.role().component();
        if component != expected {
            return Err(Error::invalid(format!(
                "component is `{component}` but the party id names a {expected}"
            )));
        }
    }
    let endpoint = Endpoint::new(&ip, port)?;
    Ok(RegisterRequest {
        party_id,
        endpoint,
        certificate: CertificateSource::Bytes {
            bytes: certificate.into_bytes(),
            name: format!("of document {doc_id}"),
        },
        expect_fingerprint: None,
        upsert,
        source: format!("fedbiomed {}#{doc_id}", path.display()),
        name: None,
    })
}

fn doc_context(path: &Path, doc_id: &str, party: Option<&str>) -> String {
    match party {
        Some(p) => format!(
            "while importing `{}`: document {doc_id} (party `{p}`)",
            path.display()
        ),
        None => format!("while importing `{}`: document {doc_id}", path.display()),
    }
}

/// Reads the requests out of a TinyDB file without validating them against a store; the first
/// bad document refuses the file.
pub fn read_tinydb_requests(path: &Path, upsert: bool) -> Result<Vec<(String, RegisterRequest)>> {
    read_tinydb_documents(path, upsert, false)?
        .into_iter()
        .map(|(doc_id, party, req)| {
            req.map(|r| (doc_id.clone(), r))
                .map_err(|e| e.context(doc_context(path, &doc_id, party.as_deref())))
        })
        .collect()
}

/// Imports every certificate of a Fed-BioMed TinyDB file into the store of `home`, all or nothing.
pub fn import_tinydb(
    home: &Home,
    path: &Path,
    upsert: bool,
    now: OffsetDateTime,
) -> Result<ImportReport> {
    import_tinydb_with(
        home,
        path,
        &ImportOptions {
            upsert,
            ..ImportOptions::default()
        },
        now,
    )
}

/// A document on its way through the import: validated (prepared) or refused.
enum Step {
    Ready(PartyId, Box<registration::PreparedRegistration>),
    Refused(Error),
}

/// Imports the certificates of a Fed-BioMed TinyDB file into the store of `home` as `options`
/// say. Without `skip_invalid` and `dry_run`, the first refused document is the error and
/// nothing is written; otherwise the report lists every document (see
/// [`ImportReport::failure`] for the error the command then exits with). A dry run writes
/// nothing: its checks that need the store run in a transaction that is rolled back.
pub fn import_tinydb_with(
    home: &Home,
    path: &Path,
    options: &ImportOptions,
    now: OffsetDateTime,
) -> Result<ImportReport> {
    let own = identity::load(home)?;
    let docs = read_tinydb_documents(path, options.upsert, options.allow_custom_ids)?;
    let entries = docs.len();
    // Validation (parsing, signature checks) dominates large imports; spread it over the cores.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = docs.len().div_ceil(workers).max(1);
    let mut steps: Vec<(String, Option<String>, Step)> = std::thread::scope(|s| {
        let handles: Vec<_> = docs
            .chunks(chunk)
            .map(|part| {
                let own = &own;
                s.spawn(move || {
                    part.iter()
                        .map(|(doc_id, party, req)| {
                            let step = match req {
                                Ok(req) => match registration::prepare(req, own, now) {
                                    Ok(p) => Step::Ready(req.party_id.clone(), Box::new(p)),
                                    Err(e) => Step::Refused(e),
                                },
                                Err(e) => Step::Refused(clone_error(e)),
                            };
                            (doc_id.clone(), party.clone(), step)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(docs.len());
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| Error::Internal("a validation thread panicked".into()))?,
            );
        }
        Ok::<_, Error>(all)
    })?;
    // The same party twice in one file is ambiguous: refuse every document naming it rather
    // than let the later one win.
    let mut by_party: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for (doc_id, _, step) in &steps {
        if let Step::Ready(party, _) = step {
            by_party
                .entry(party.to_string())
                .or_default()
                .push(doc_id.clone());
        }
    }
    for (doc_id, _, step) in &mut steps {
        let Step::Ready(party, _) = step else {
            continue;
        };
        let docs = &by_party[party.as_str()];
        if docs.len() > 1 {
            let others: Vec<&str> = docs
                .iter()
                .filter(|d| *d != doc_id)
                .map(String::as_str)
                .collect();
            *step = Step::Refused(
                Error::conflict(format!(
                    "document {} also registers this party",
                    others.join(", ")
                ))
                .with_hint("keep one document per party in the file"),
            );
        }
    }
    let strict = !options.skip_invalid && !options.dry_run;
    if strict {
        if let Some(i) = steps
            .iter()
            .position(|(_, _, s)| matches!(s, Step::Refused(_)))
        {
            let (doc_id, party, step) = steps.swap_remove(i);
            if let Step::Refused(e) = step {
                return Err(e.context(doc_context(path, &doc_id, party.as_deref())));
            }
        }
    }
    let mut store = Store::open_party(home)?;
    let run = |tx: &rusqlite::Transaction<'_>| -> Result<(Vec<ImportedEntry>, Vec<RefusedEntry>)> {
        let mut imported = Vec::new();
        let mut refused = Vec::new();
        for (doc_id, party, step) in &steps {
            let refuse = |e: &Error| RefusedEntry {
                document_id: doc_id.clone(),
                party_id: party.clone(),
                kind: e.kind(),
                reason: e.to_string(),
                hint: e.hint().map(str::to_owned),
            };
            match step {
                Step::Refused(e) => refused.push(refuse(e)),
                Step::Ready(_, p) => {
                    savepoint(tx, "SAVEPOINT fedbiomed_doc")?;
                    match registration::apply(tx, p) {
                        Ok(registered) => {
                            savepoint(tx, "RELEASE fedbiomed_doc")?;
                            imported.push(ImportedEntry {
                                document_id: doc_id.clone(),
                                registered,
                            });
                        }
                        Err(e) if !strict => {
                            savepoint(tx, "ROLLBACK TO fedbiomed_doc; RELEASE fedbiomed_doc")?;
                            refused.push(refuse(&e));
                        }
                        Err(e) => {
                            return Err(e.context(doc_context(path, doc_id, party.as_deref())))
                        }
                    }
                }
            }
        }
        Ok((imported, refused))
    };
    // With `skip_invalid`, every refused document's changes were rolled back to its savepoint,
    // so the commit holds exactly the imported ones (nothing when every one was refused).
    let (imported, refused) = if options.dry_run {
        store.rehearse(run)?
    } else {
        store.write(run)?
    };
    Ok(ImportReport {
        source: path.display().to_string(),
        entries,
        dry_run: options.dry_run,
        imported,
        refused,
    })
}

fn savepoint(tx: &rusqlite::Transaction<'_>, sql: &str) -> Result<()> {
    tx.execute_batch(sql)
        .map_err(|e| Error::store("while importing one document", e))
}

/// A copy of a parse error (kind, message and hint; parse errors carry nothing else).
fn clone_error(e: &Error) -> Error {
    let err = match e.kind() {
        ErrorKind::NotFound => Error::not_found(e.to_string()),
        ErrorKind::Conflict => Error::conflict(e.to_string()),
        _ => Error::invalid(e.to_string()),
    };
    match e.hint() {
        Some(h) => err.with_hint(h),
        None => err,
    }
}
