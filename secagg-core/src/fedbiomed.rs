//! Interoperability with Fed-BioMed v4 files: importing the `Certificates` table of a TinyDB file
//! (`var/db_<id>.json`).
//!
//! Fed-BioMed stores whatever it was given; secagg validates every entry exactly like
//! [`crate::registration::register`] and imports all or nothing, naming a
//! bad entry by its TinyDB document id.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::fs_secure;
use crate::home::Home;
use crate::identity;
use crate::party::{Endpoint, PartyId};
use crate::registration::{self, CertificateSource, RegisterRequest, Registered};
use crate::store::Store;

/// Largest TinyDB file read.
pub const MAX_TINYDB_BYTES: u64 = 256 * 1024 * 1024;

/// Only the `Certificates` table is read; other tables (which may hold 2048-bit integers that a
/// generic JSON value could not represent) are skipped unparsed.
#[derive(Deserialize)]
struct TinyDb {
    #[serde(rename = "Certificates", default)]
    certificates: Option<BTreeMap<String, serde_json::Value>>,
}

/// The outcome of an import.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The file read.
    pub source: String,
    /// Entries in its `Certificates` table.
    pub entries: usize,
    /// One line per entry, in document-id order.
    pub imported: Vec<ImportedEntry>,
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

fn doc_order(id: &str) -> (u64, String) {
    (id.parse().unwrap_or(u64::MAX), id.to_owned())
}

/// Reads the requests out of a TinyDB file without validating them against a store.
pub fn read_tinydb_requests(path: &Path, upsert: bool) -> Result<Vec<(String, RegisterRequest)>> {
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
    let mut out = Vec::with_capacity(docs.len());
    for (doc_id, doc) in docs {
        let dctx = format!("{ctx}: document {doc_id}");
        let obj = doc
            .as_object()
            .ok_or_else(|| Error::invalid("is not a JSON object").context(&dctx))?;
        let text = |key: &str| -> Result<String> {
            match obj.get(key) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(Error::invalid(format!("`{key}` is not a string")).context(&dctx)),
                None => Err(Error::invalid(format!("`{key}` is missing")).context(&dctx)),
            }
        };
        let party_text = text("party_id")?;
        let dctx = format!("{dctx} (party `{party_text}`)");
        let party_id = PartyId::parse(&party_text).map_err(|e| e.context(&dctx))?;
        let port: u32 = match obj.get("port") {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    Error::invalid(format!("port {n} is out of range")).context(&dctx)
                })?,
            // Fed-BioMed's certificate-dev-setup stores ports as strings.
            Some(serde_json::Value::String(s)) => {
                u32::from(crate::party::parse_port(s).map_err(|e| e.context(&dctx))?)
            }
            Some(_) => {
                return Err(Error::invalid("`port` is neither a number nor a string").context(&dctx))
            }
            None => return Err(Error::invalid("`port` is missing").context(&dctx)),
        };
        let ip = text("ip")?;
        let certificate = text("certificate")?;
        if let Some(component) = obj.get("component").and_then(|c| c.as_str()) {
            let expected = party_id.role().component();
            if component != expected {
                return Err(Error::invalid(format!(
                    "component is `{component}` but the party id names a {expected}"
                ))
                .context(&dctx));
            }
        }
        let endpoint = Endpoint::new(&ip, port).map_err(|e| e.context(&dctx))?;
        out.push((
            doc_id.clone(),
            RegisterRequest {
                party_id,
                endpoint,
                certificate: CertificateSource::Bytes {
                    bytes: certificate.into_bytes(),
                    name: format!("of document {doc_id}"),
                },
                expect_fingerprint: None,
                upsert,
                source: format!("fedbiomed {}#{doc_id}", path.display()),
            },
        ));
    }
    Ok(out)
}

/// Imports every certificate of a Fed-BioMed TinyDB file into the store of `home`, all or nothing.
pub fn import_tinydb(
    home: &Home,
    path: &Path,
    upsert: bool,
    now: OffsetDateTime,
) -> Result<ImportReport> {
    let own = identity::load(home)?;
    let ctx = format!("while importing `{}`", path.display());
    let requests = read_tinydb_requests(path, upsert)?;
    // Validation (parsing, signature checks) dominates large imports; spread it over the cores.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = requests.len().div_ceil(workers).max(1);
    let prepared: Vec<(String, PartyId, registration::PreparedRegistration)> =
        std::thread::scope(|s| {
            let handles: Vec<_> = requests
                .chunks(chunk)
                .map(|part| {
                    let (own, ctx) = (&own, &ctx);
                    s.spawn(move || {
                        part.iter()
                            .map(|(doc_id, req)| {
                                registration::prepare(req, own, now)
                                    .map(|p| (doc_id.clone(), req.party_id.clone(), p))
                                    .map_err(|e| {
                                        e.context(format!(
                                            "{ctx}: document {doc_id} (party `{}`)",
                                            req.party_id
                                        ))
                                    })
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(requests.len());
            for h in handles {
                all.extend(
                    h.join()
                        .map_err(|_| Error::Internal("a validation thread panicked".into()))??,
                );
            }
            Ok::<_, Error>(all)
        })?;
    // The same party twice in one file is ambiguous: refuse rather than let the later one win.
    let mut seen = std::collections::HashMap::new();
    for (doc_id, party, _) in &prepared {
        if let Some(first) = seen.insert(party.clone(), doc_id.clone()) {
            return Err(Error::conflict(format!(
                "{ctx}: documents {first} and {doc_id} both register party `{party}`"
            )));
        }
    }
    let mut store = Store::open_party(home)?;
    let imported = store.write(|tx| {
        prepared
            .iter()
            .map(|(doc_id, party, p)| {
                registration::apply(tx, p)
                    .map(|registered| ImportedEntry {
                        document_id: doc_id.clone(),
                        registered,
                    })
                    .map_err(|e| e.context(format!("{ctx}: document {doc_id} (party `{party}`)")))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(ImportReport {
        source: path.display().to_string(),
        entries: requests.len(),
        imported,
    })
}
