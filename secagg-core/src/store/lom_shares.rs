//! The `lom_shares` table: the shares of other nodes' self-mask seeds a node received for each
//! round of a dropout-tolerant LOM context (and its own share of its own seed), one row per
//! (round, label, node that drew the seed). Secret: read only to answer the researcher's reveal
//! of that round, erased with the context (the store runs with `secure_delete`).

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::lom_rounds::to_sql;
use crate::error::{Error, Result};

/// What storing a share did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The share is new and now stored.
    New,
    /// The very same share was stored before (a retried send): nothing changed.
    Again,
    /// Another share from the same node for the same round was stored before: nothing changed.
    Different,
}

/// Stores `share` from `from_id` for (`round`, `label`) of `session_id`, unless one is there.
pub fn insert(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
    from_id: &str,
    share: &[u8],
    at: OffsetDateTime,
) -> Result<Stored> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let old: Option<Zeroizing<Vec<u8>>> = conn
        .prepare_cached(
            "SELECT share FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3 AND from_id = ?4",
        )
        .and_then(|mut st| {
            st.query_row(params![session_id, r, l, from_id], |row| {
                row.get(0).map(Zeroizing::new)
            })
            .optional()
        })
        .map_err(|e| Error::store("while reading a self-mask share", e))?;
    if let Some(old) = old {
        let same: bool = subtle::ConstantTimeEq::ct_eq(old.as_slice(), share).into();
        return Ok(if same {
            Stored::Again
        } else {
            Stored::Different
        });
    }
    conn.prepare_cached(
        "INSERT INTO lom_shares (session_id, round, label, from_id, share, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| st.execute(params![session_id, r, l, from_id, share, at.unix_timestamp()]))
    .map_err(|e| Error::store("while storing a self-mask share", e))?;
    Ok(Stored::New)
}

/// The shares stored for (`round`, `label`) of `session_id`: (node that drew the seed, share).
pub fn get(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
) -> Result<Vec<(String, Zeroizing<Vec<u8>>)>> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let mut st = conn
        .prepare_cached(
            "SELECT from_id, share FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3 ORDER BY from_id",
        )
        .map_err(|e| Error::store("while reading self-mask shares", e))?;
    let rows = st
        .query_map(params![session_id, r, l], |row| {
            Ok((row.get(0)?, Zeroizing::new(row.get(1)?)))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::store("while reading self-mask shares", e))?;
    Ok(rows)
}

/// Deletes the shares of (`round`, `label`) of `session_id` (once revealed, they serve nothing).
pub fn delete_round(conn: &Connection, session_id: &str, (round, label): (u64, u64)) -> Result<()> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    conn.execute(
        "DELETE FROM lom_shares WHERE session_id = ?1 AND round = ?2 AND label = ?3",
        params![session_id, r, l],
    )
    .map_err(|e| Error::store("while deleting self-mask shares", e))?;
    Ok(())
}

/// Deletes the shares of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute("DELETE FROM lom_shares WHERE session_id = ?1", [session_id])
        .map_err(|e| Error::store("while deleting self-mask shares", e))?;
    Ok(())
}
