//! The `fedbiomed_servkeys`, `fedbiomed_biprimes` and `fedbiomed_settings` tables: Fed-BioMed's
//! secagg element entries, as `secagg.fedbiomed` keeps them (see [`crate::fedbiomed::elements`]
//! for their rules). Rows only: every check is the caller's, inside the same transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// A server-key entry: Fed-BioMed's `secagg_id` attached to the negotiated context whose key it
/// is, for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServkeyRow {
    /// Fed-BioMed's id of the entry (any non-empty text, as Fed-BioMed takes it).
    pub secagg_id: String,
    /// The session id of the context holding the key.
    pub session_id: String,
    /// The parties as Fed-BioMed gave them.
    pub parties: Vec<String>,
    /// The job the entry belongs to.
    pub job_id: Option<String>,
}

/// Whether a biprime came from Fed-BioMed's default biprime files or was added by its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiprimeKind {
    /// From a default biprime file (`update_default_biprimes`); cannot be removed.
    Default,
    /// Added by `SecaggBiprimeManager.add`; removable.
    Dynamic,
}

impl BiprimeKind {
    fn as_str(self) -> &'static str {
        match self {
            BiprimeKind::Default => "default",
            BiprimeKind::Dynamic => "dynamic",
        }
    }
}

/// A biprime entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiprimeRow {
    /// Fed-BioMed's id of the entry.
    pub secagg_id: String,
    /// Where it came from.
    pub kind: BiprimeKind,
    /// The parties it is restricted to (`None`: any).
    pub parties: Option<Vec<String>>,
    /// The biprime, decimal.
    pub biprime: String,
    /// Its `max_keysize`.
    pub max_keysize: i64,
}

fn json_list(col: usize, text: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn to_json(parties: &[String]) -> Result<String> {
    serde_json::to_string(parties).map_err(|e| Error::internal(e.to_string()))
}

fn servkey_from_row(r: &Row<'_>) -> rusqlite::Result<ServkeyRow> {
    let parties: String = r.get(2)?;
    Ok(ServkeyRow {
        secagg_id: r.get(0)?,
        session_id: r.get(1)?,
        parties: json_list(2, &parties)?,
        job_id: r.get(3)?,
    })
}

/// The server-key entry `secagg_id`, if any.
pub fn servkey(conn: &Connection, secagg_id: &str) -> Result<Option<ServkeyRow>> {
    conn.query_row(
        "SELECT secagg_id, session_id, parties, job_id FROM fedbiomed_servkeys WHERE secagg_id = ?1",
        [secagg_id],
        servkey_from_row,
    )
    .optional()
    .map_err(|e| Error::store("while reading Fed-BioMed server-key entries", e))
}

/// The server-key entry attached to `session_id`, if any.
pub fn servkey_of_session(conn: &Connection, session_id: &str) -> Result<Option<ServkeyRow>> {
    conn.query_row(
        "SELECT secagg_id, session_id, parties, job_id FROM fedbiomed_servkeys WHERE session_id = ?1",
        [session_id],
        servkey_from_row,
    )
    .optional()
    .map_err(|e| Error::store("while reading Fed-BioMed server-key entries", e))
}

/// Stores a server-key entry (the caller checked that neither its id nor its session is taken).
pub fn insert_servkey(conn: &Connection, row: &ServkeyRow, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "INSERT INTO fedbiomed_servkeys (secagg_id, session_id, parties, job_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            row.secagg_id,
            row.session_id,
            to_json(&row.parties)?,
            row.job_id,
            now.unix_timestamp()
        ],
    )
    .map_err(|e| Error::store("while storing a Fed-BioMed server-key entry", e))?;
    Ok(())
}

/// Deletes the server-key entry `secagg_id`; false when there was none.
pub fn delete_servkey(conn: &Connection, secagg_id: &str) -> Result<bool> {
    let n = conn
        .execute(
            "DELETE FROM fedbiomed_servkeys WHERE secagg_id = ?1",
            [secagg_id],
        )
        .map_err(|e| Error::store("while deleting a Fed-BioMed server-key entry", e))?;
    Ok(n > 0)
}

fn biprime_from_row(r: &Row<'_>) -> rusqlite::Result<BiprimeRow> {
    let kind: String = r.get(1)?;
    let parties: Option<String> = r.get(2)?;
    Ok(BiprimeRow {
        secagg_id: r.get(0)?,
        kind: if kind == "default" {
            BiprimeKind::Default
        } else {
            BiprimeKind::Dynamic
        },
        parties: parties.map(|p| json_list(2, &p)).transpose()?,
        biprime: r.get(3)?,
        max_keysize: r.get(4)?,
    })
}

/// The biprime entry `secagg_id`, if any.
pub fn biprime(conn: &Connection, secagg_id: &str) -> Result<Option<BiprimeRow>> {
    conn.query_row(
        "SELECT secagg_id, kind, parties, biprime, max_keysize FROM fedbiomed_biprimes WHERE secagg_id = ?1",
        [secagg_id],
        biprime_from_row,
    )
    .optional()
    .map_err(|e| Error::store("while reading Fed-BioMed biprime entries", e))
}

/// Stores a biprime entry, replacing one with the same id.
pub fn upsert_biprime(conn: &Connection, row: &BiprimeRow, now: OffsetDateTime) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO fedbiomed_biprimes (secagg_id, kind, parties, biprime, max_keysize, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            row.secagg_id,
            row.kind.as_str(),
            row.parties.as_deref().map(to_json).transpose()?,
            row.biprime,
            row.max_keysize,
            now.unix_timestamp()
        ],
    )
    .map_err(|e| Error::store("while storing a Fed-BioMed biprime entry", e))?;
    Ok(())
}

/// Deletes the biprime entry `secagg_id`; false when there was none.
pub fn delete_biprime(conn: &Connection, secagg_id: &str) -> Result<bool> {
    let n = conn
        .execute(
            "DELETE FROM fedbiomed_biprimes WHERE secagg_id = ?1",
            [secagg_id],
        )
        .map_err(|e| Error::store("while deleting a Fed-BioMed biprime entry", e))?;
    Ok(n > 0)
}

/// Deletes every default biprime.
pub fn delete_default_biprimes(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM fedbiomed_biprimes WHERE kind = 'default'", [])
        .map_err(|e| Error::store("while deleting Fed-BioMed default biprimes", e))?;
    Ok(())
}

/// Whether the default biprimes were ever set.
pub fn default_biprimes_set(conn: &Connection) -> Result<bool> {
    let set: Option<i64> = conn
        .query_row(
            "SELECT default_biprimes_set FROM fedbiomed_settings WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| Error::store("while reading Fed-BioMed settings", e))?;
    Ok(set == Some(1))
}

/// Records that the default biprimes were set.
pub fn mark_default_biprimes_set(conn: &Connection) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO fedbiomed_settings (id, default_biprimes_set) VALUES (1, 1)",
        [],
    )
    .map_err(|e| Error::store("while recording Fed-BioMed settings", e))?;
    Ok(())
}
