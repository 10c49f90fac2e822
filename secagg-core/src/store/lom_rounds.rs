//! The `lom_rounds` table: the (round, label) pairs a node masked a vector for under each LOM
//! context, so that secagg's profile never masks one twice (the same masks on two different
//! vectors would let the researcher subtract them).

use rusqlite::{params, Connection};
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Records (round, label) for `session_id` at `at`; returns false (and records nothing) if it
/// was recorded before.
pub fn record(
    conn: &Connection,
    session_id: &str,
    round: u64,
    label: u64,
    at: OffsetDateTime,
) -> Result<bool> {
    let (round, label) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO lom_rounds (session_id, round, label, used_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut st| st.execute(params![session_id, round, label, at.unix_timestamp()]))
        .map_err(|e| Error::store("while recording a masked round", e))?;
    Ok(n == 1)
}

/// The distinct rounds recorded for `session_id`, ascending.
pub fn rounds(conn: &Connection, session_id: &str) -> Result<Vec<u64>> {
    let mut st = conn
        .prepare_cached(
            "SELECT DISTINCT round FROM lom_rounds WHERE session_id = ?1 ORDER BY round",
        )
        .map_err(|e| Error::store("while listing masked rounds", e))?;
    let rows = st
        .query_map([session_id], |r| r.get::<_, i64>(0))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<i64>>>())
        .map_err(|e| Error::store("while listing masked rounds", e))?;
    Ok(rows.into_iter().map(|r| r as u64).collect())
}

/// Deletes the rounds of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute("DELETE FROM lom_rounds WHERE session_id = ?1", [session_id])
        .map_err(|e| Error::store("while deleting masked rounds", e))?;
    Ok(())
}

/// Rounds and labels are u64 on the command line; SQLite integers are i64.
pub(crate) fn to_sql(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid(format!("the {what} {v} is above {}", i64::MAX)))
}

/// Whether (`round`, `label`) is recorded for `session_id`.
pub fn contains(conn: &Connection, session_id: &str, round: u64, label: u64) -> Result<bool> {
    let (round, label) = (to_sql(round, "round")?, to_sql(label, "label")?);
    conn.prepare_cached(
        "SELECT count(*) FROM lom_rounds WHERE session_id = ?1 AND round = ?2 AND label = ?3",
    )
    .and_then(|mut st| st.query_row(params![session_id, round, label], |r| r.get::<_, i64>(0)))
    .map(|n| n > 0)
    .map_err(|e| Error::store("while reading masked rounds", e))
}
