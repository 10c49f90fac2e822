//! Fed-BioMed v4's secagg element managers (`SecaggServkeyManager`, `SecaggBiprimeManager`) over a
//! secagg home: their rules, each call one transaction of the store (so that concurrent processes
//! at one home never lose an entry, as JSON side files did).
//!
//! Fed-BioMed stores whatever its code hands it. Here a server-key entry only *attaches* a key
//! this home negotiated to Fed-BioMed's `secagg_id` and job: [`servkey_add`] finds the confirmed
//! context with exactly those parties whose key is the one given (compared by fingerprint), and
//! refuses otherwise; the key stays in the `contexts` table and [`servkey_remove`] erases it.
//! Biprimes are stored as Fed-BioMed stores them (its default biprime files, and the dynamic
//! entries its code adds); until default biprimes are set, `default_biprime0` is Fed-BioMed's
//! built-in one ([`crate::aggregate::DEFAULT_BIPRIME0`]).

use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::aggregate::DEFAULT_BIPRIME0;
use crate::contexts::KeyState;
use crate::engine::SecretKey;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::store::contexts;
use crate::store::fedbiomed_elements as rows;
pub use crate::store::fedbiomed_elements::{BiprimeKind, BiprimeRow, ServkeyRow};
use crate::store::Store;

/// Fed-BioMed's id of its default biprime.
pub const DEFAULT_BIPRIME_ID: &str = "default_biprime0";
/// The `max_keysize` of Fed-BioMed's default biprime file.
pub const DEFAULT_MAX_KEYSIZE: i64 = 2048;

/// A server-key entry with its key, as `SecaggServkeyManager.get` returns it.
pub struct ServkeyEntry {
    /// The entry.
    pub row: ServkeyRow,
    /// The key this party holds for it (`sk0` at the researcher, `sk_i` at a node). Secret.
    pub key_decimal: Zeroizing<String>,
}

fn other_job(secagg_id: &str, job_id: Option<&str>, doing: &str) -> Error {
    Error::conflict(format!(
        "error {doing} servkey element: an entry exists for secagg_id={secagg_id} but does not belong to current job job_id={}",
        job_id.unwrap_or("None")
    ))
}

/// The entry `secagg_id` with its key, `None` when there is none. An entry of another job is a
/// conflict (as in Fed-BioMed); an entry whose key was deleted from the home (`context delete`,
/// `context prune`) is `NotFound`.
pub fn servkey_get(
    home: &Home,
    secagg_id: &str,
    job_id: Option<&str>,
) -> Result<Option<ServkeyEntry>> {
    let mut store = Store::open_party(home)?;
    store.read(|tx| {
        let Some(row) = rows::servkey(tx, secagg_id)? else {
            return Ok(None);
        };
        if row.job_id.as_deref() != job_id {
            return Err(other_job(secagg_id, job_id, "getting"));
        }
        let Some(ctx) = contexts::get(tx, &row.session_id)? else {
            return Err(Error::not_found(format!(
                "the key of secagg_id={secagg_id} (session {}) was deleted from this home",
                row.session_id
            ))
            .with_hint("set the secagg context up again (a new secagg_id), or remove the entry"));
        };
        Ok(Some(ServkeyEntry {
            row,
            key_decimal: ctx.key_decimal,
        }))
    })
}

/// Attaches the key `server_key` (decimal), negotiated by this home for `parties`, to
/// `secagg_id` and `job_id`; returns the session id of its context.
///
/// Refused: an existing entry `secagg_id` (`Conflict`, as Fed-BioMed); a key that no confirmed
/// context of exactly these parties holds (`VerificationFailed`: nothing unchecked is stored); a
/// context already attached to another entry (`Conflict`).
pub fn servkey_add(
    home: &Home,
    secagg_id: &str,
    parties: &[String],
    server_key: &str,
    job_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<String> {
    if secagg_id.is_empty() {
        return Err(Error::invalid("a secagg_id must be a non-empty string"));
    }
    let fingerprint = SecretKey::from_decimal(server_key)
        .map_err(|e| e.context("in context['server_key']"))?
        .fingerprint();
    let mut store = Store::open_party(home)?;
    store.write(|tx| {
        if rows::servkey(tx, secagg_id)?.is_some() {
            return Err(Error::conflict(format!(
                "error adding element in table \"SecaggServkey\": an entry already exists for secagg_id={secagg_id}"
            )));
        }
        let context = contexts::list(tx)?.into_iter().find(|c| {
            c.parties == parties && c.key_fingerprint == fingerprint && c.state == KeyState::Confirmed
        });
        let Some(context) = context else {
            return Err(Error::verification(format!(
                "the server_key given for secagg_id={secagg_id} is not a confirmed key this home negotiated with the parties {}",
                parties.join(", ")
            ))
            .with_hint("a key enters the home only through a negotiation (MPCController.exec_shamir, Home.negotiate, Home.session_run)"));
        };
        if let Some(taken) = rows::servkey_of_session(tx, &context.session_id)? {
            return Err(Error::conflict(format!(
                "the key given for secagg_id={secagg_id} is already the key of secagg_id={}",
                taken.secagg_id
            )));
        }
        let row = ServkeyRow {
            secagg_id: secagg_id.to_owned(),
            session_id: context.session_id.clone(),
            parties: parties.to_vec(),
            job_id: job_id.map(str::to_owned),
        };
        rows::insert_servkey(tx, &row, now)?;
        Ok(context.session_id)
    })
}

/// Removes the entry `secagg_id` and erases its key; false when there is no entry. An entry of
/// another job is a conflict (as in Fed-BioMed).
pub fn servkey_remove(home: &Home, secagg_id: &str, job_id: Option<&str>) -> Result<bool> {
    let mut store = Store::open_party(home)?;
    store.write_erasing(|tx| {
        let Some(row) = rows::servkey(tx, secagg_id)? else {
            return Ok(false);
        };
        if row.job_id.as_deref() != job_id {
            return Err(other_job(secagg_id, job_id, "removing"));
        }
        rows::delete_servkey(tx, secagg_id)?;
        contexts::delete(tx, &row.session_id)?;
        Ok(true)
    })
}

fn builtin_default() -> BiprimeRow {
    BiprimeRow {
        secagg_id: DEFAULT_BIPRIME_ID.to_owned(),
        kind: BiprimeKind::Default,
        parties: None,
        biprime: DEFAULT_BIPRIME0.to_owned(),
        max_keysize: DEFAULT_MAX_KEYSIZE,
    }
}

fn find_biprime(tx: &rusqlite::Connection, secagg_id: &str) -> Result<Option<BiprimeRow>> {
    if let Some(row) = rows::biprime(tx, secagg_id)? {
        return Ok(Some(row));
    }
    if secagg_id == DEFAULT_BIPRIME_ID && !rows::default_biprimes_set(tx)? {
        return Ok(Some(builtin_default()));
    }
    Ok(None)
}

/// The biprime entry `secagg_id`, `None` when there is none.
pub fn biprime_get(home: &Home, secagg_id: &str) -> Result<Option<BiprimeRow>> {
    let mut store = Store::open_party(home)?;
    store.read(|tx| find_biprime(tx, secagg_id))
}

/// Adds a dynamic biprime entry (what Fed-BioMed's `SecaggBiprimeManager.add` stores); an
/// existing entry `secagg_id` is a conflict (as in Fed-BioMed). Stored as given: whoever uses
/// it as a Joye–Libert modulus checks it then (`Biprime` refuses anything but an odd number of
/// 512 to 1024 bits).
pub fn biprime_add(
    home: &Home,
    secagg_id: &str,
    parties: Option<Vec<String>>,
    biprime: &str,
    max_keysize: i64,
    now: OffsetDateTime,
) -> Result<()> {
    if secagg_id.is_empty() {
        return Err(Error::invalid("a secagg_id must be a non-empty string"));
    }
    check_decimal(biprime, secagg_id)?;
    let mut store = Store::open_party(home)?;
    store.write(|tx| {
        if find_biprime(tx, secagg_id)?.is_some() {
            return Err(Error::conflict(format!(
                "error adding element in table \"SecaggBiprime\": an entry already exists for secagg_id={secagg_id}"
            )));
        }
        let row = BiprimeRow {
            secagg_id: secagg_id.to_owned(),
            kind: BiprimeKind::Dynamic,
            parties,
            biprime: biprime.to_owned(),
            max_keysize,
        };
        rows::upsert_biprime(tx, &row, now)
    })
}

/// Removes the dynamic biprime `secagg_id`; false when there is none. A default biprime cannot be
/// removed (`InvalidInput`, as Fed-BioMed's FB623).
pub fn biprime_remove(home: &Home, secagg_id: &str) -> Result<bool> {
    let mut store = Store::open_party(home)?;
    store.write(|tx| match find_biprime(tx, secagg_id)? {
        None => Ok(false),
        Some(row) if row.kind == BiprimeKind::Default => Err(Error::invalid(format!(
            "not authorized to remove non-dynamic biprime \"{secagg_id}\""
        ))
        .with_hint("default biprimes change with update_default_biprimes")),
        Some(_) => rows::delete_biprime(tx, secagg_id),
    })
}

/// Replaces the default biprimes with `defaults` (`(secagg_id, biprime, max_keysize)`, already
/// checked by the caller), in one transaction. An entry with the id of a new default is replaced
/// (as Fed-BioMed's upsert does).
pub fn biprime_set_defaults(
    home: &Home,
    defaults: &[(String, String, i64)],
    now: OffsetDateTime,
) -> Result<()> {
    for (id, biprime, _) in defaults {
        check_decimal(biprime, id)?;
    }
    let mut store = Store::open_party(home)?;
    store.write(|tx| {
        rows::delete_default_biprimes(tx)?;
        for (id, biprime, max_keysize) in defaults {
            let row = BiprimeRow {
                secagg_id: id.clone(),
                kind: BiprimeKind::Default,
                parties: None,
                biprime: biprime.clone(),
                max_keysize: *max_keysize,
            };
            rows::upsert_biprime(tx, &row, now)?;
        }
        rows::mark_default_biprimes_set(tx)
    })
}

/// Every registered party with its document id (stable across upserts), in registration order,
/// as Fed-BioMed's `CertificateManager.list` orders its documents.
pub fn certificate_documents(home: &Home) -> Result<Vec<(String, i64)>> {
    let mut store = Store::open_party(home)?;
    store.read(|tx| crate::store::peers::document_ids(tx))
}

fn check_decimal(text: &str, secagg_id: &str) -> Result<()> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 4096 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(format!(
            "the biprime of secagg_id={secagg_id} is not an integer of at most 4096 digits"
        )));
    }
    Ok(())
}
