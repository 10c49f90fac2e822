//! The `contexts` table: outcomes of successful key negotiations.
//!
//! A context holds a secret (the server key `sk0` for the researcher, the user key `sk_i` for a
//! node) as signed decimal text, so it can be handed to Fed-BioMed's Joye–Libert code unchanged.
//! The store file is 0600; the key is only read back on explicit request.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::certificate::format_time;
use crate::error::{Error, Result};
use crate::party::Role;

/// One stored negotiation outcome.
#[derive(Clone)]
pub struct ContextRecord {
    /// Session id (uuid text).
    pub session_id: String,
    /// This party's role in the session.
    pub role: Role,
    /// This party's index in the party list.
    pub party_index: u32,
    /// Party ids in session order (researcher first).
    pub parties: Vec<String>,
    /// Engine that produced it (`native`, `mp-spdz`).
    pub engine: String,
    /// Key bit length of the session.
    pub key_bits: u32,
    /// The key, signed decimal. Secret.
    pub key_decimal: Zeroizing<String>,
    /// Fingerprint of the key (safe to print).
    pub key_fingerprint: String,
    /// When it was stored.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for ContextRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextRecord")
            .field("session_id", &self.session_id)
            .field("role", &self.role)
            .field("key_decimal", &"<redacted>")
            .field("key_fingerprint", &self.key_fingerprint)
            .finish_non_exhaustive()
    }
}

/// What `context list` and `context show` print (no key unless asked).
#[derive(Debug, Clone, Serialize)]
pub struct ContextSummary {
    /// Session id.
    pub session_id: String,
    /// Role.
    pub role: Role,
    /// Index in the party list.
    pub party_index: u32,
    /// Party ids in order.
    pub parties: Vec<String>,
    /// Engine.
    pub engine: String,
    /// Key bit length.
    pub key_bits: u32,
    /// Key fingerprint.
    pub key_fingerprint: String,
    /// When stored (RFC 3339).
    pub created_at: String,
    /// The key, only when revealed on request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ContextRecord {
    /// A summary; the key is included only if `reveal_key`.
    pub fn summary(&self, reveal_key: bool) -> ContextSummary {
        ContextSummary {
            session_id: self.session_id.clone(),
            role: self.role,
            party_index: self.party_index,
            parties: self.parties.clone(),
            engine: self.engine.clone(),
            key_bits: self.key_bits,
            key_fingerprint: self.key_fingerprint.clone(),
            created_at: format_time(self.created_at),
            key: reveal_key.then(|| self.key_decimal.to_string()),
        }
    }
}

const COLUMNS: &str = "session_id, role, party_index, parties, engine, key_bits, key_decimal, key_fingerprint, created_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<ContextRecord> {
    let conv = |col: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e)
    };
    let role: String = row.get(1)?;
    let parties: String = row.get(3)?;
    let created: i64 = row.get(8)?;
    Ok(ContextRecord {
        session_id: row.get(0)?,
        role: role.parse().map_err(|e: Error| conv(1, Box::new(e)))?,
        party_index: row.get(2)?,
        parties: serde_json::from_str(&parties).map_err(|e| conv(3, Box::new(e)))?,
        engine: row.get(4)?,
        key_bits: row.get(5)?,
        key_decimal: Zeroizing::new(row.get(6)?),
        key_fingerprint: row.get(7)?,
        created_at: OffsetDateTime::from_unix_timestamp(created)
            .map_err(|e| conv(8, Box::new(e)))?,
    })
}

/// Stores a context; a context with the same session id is a conflict.
pub fn insert(conn: &Connection, c: &ContextRecord) -> Result<()> {
    if get(conn, &c.session_id)?.is_some() {
        return Err(Error::conflict(format!(
            "a context for session `{}` is already stored",
            c.session_id
        ))
        .with_hint(
            "use a new session id, or delete the old context with `secagg context delete`",
        ));
    }
    let parties = serde_json::to_string(&c.parties).map_err(|e| Error::Internal(e.to_string()))?;
    conn.execute(
        &format!("INSERT INTO contexts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            c.session_id,
            c.role.as_str(),
            c.party_index,
            parties,
            c.engine,
            c.key_bits,
            c.key_decimal.as_str(),
            c.key_fingerprint,
            c.created_at.unix_timestamp(),
        ],
    )
    .map_err(|e| Error::store("while storing a context", e))?;
    Ok(())
}

/// The context of `session_id`, if stored.
pub fn get(conn: &Connection, session_id: &str) -> Result<Option<ContextRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM contexts WHERE session_id = ?1"),
        [session_id],
        from_row,
    )
    .optional()
    .map_err(|e| Error::store("while reading a context", e))
}

/// Every stored context, newest first.
pub fn list(conn: &Connection) -> Result<Vec<ContextRecord>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {COLUMNS} FROM contexts ORDER BY created_at DESC, session_id"
        ))
        .map_err(|e| Error::store("while listing contexts", e))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(|e| Error::store("while listing contexts", e))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(|e| Error::store("while listing contexts", e))
}

/// Deletes the context of `session_id`; returns whether it existed.
pub fn delete(conn: &Connection, session_id: &str) -> Result<bool> {
    let n = conn
        .execute("DELETE FROM contexts WHERE session_id = ?1", [session_id])
        .map_err(|e| Error::store("while deleting a context", e))?;
    Ok(n > 0)
}
