//! The `lom_announcements` table: the survivor set U1 the researcher announced to this node for
//! each round of a dropout-tolerant LOM context. Recorded once: a second, different announcement
//! for the same round is refused, so the researcher cannot tell this node two stories.

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::lom_rounds::to_sql;
use crate::error::{Error, Result};

/// The survivors announced for (`round`, `label`) of `session_id`, if any (sorted ids).
pub fn get(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
) -> Result<Option<Vec<String>>> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let text: Option<String> = conn
        .prepare_cached(
            "SELECT survivors FROM lom_announcements WHERE session_id = ?1 AND round = ?2 AND label = ?3",
        )
        .and_then(|mut st| st.query_row(params![session_id, r, l], |row| row.get(0)).optional())
        .map_err(|e| Error::store("while reading a survivor announcement", e))?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            Error::Internal(format!("a stored survivor announcement is not a list: {e}"))
        })
    })
    .transpose()
}

/// Records `survivors` (sorted ids) for (`round`, `label`) of `session_id`; the caller checked
/// that none is recorded ([`get`]) in the same transaction.
pub fn insert(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
    survivors: &[String],
    at: OffsetDateTime,
) -> Result<()> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let text = serde_json::to_string(survivors).map_err(|e| Error::Internal(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO lom_announcements (session_id, round, label, survivors, announced_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| st.execute(params![session_id, r, l, text, at.unix_timestamp()]))
    .map_err(|e| Error::store("while recording a survivor announcement", e))?;
    Ok(())
}

/// Deletes the announcements of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM lom_announcements WHERE session_id = ?1",
        [session_id],
    )
    .map_err(|e| Error::store("while deleting survivor announcements", e))?;
    Ok(())
}
