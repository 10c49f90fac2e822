//! The `lom_reveals` table: what this node revealed to the researcher for each round of a
//! dropout-tolerant LOM context, per party: its share of that party's self-mask seed (the party
//! survived) or its round seed with that party (the party dropped). Written in the transaction
//! that decides the reveal, before anything is sent; the other kind is then refused for ever:
//! with both, the researcher could unmask that party's vector alone.

use rusqlite::{params, Connection};
use time::OffsetDateTime;

use super::lom_rounds::to_sql;
use crate::contexts::RevealRecord;
use crate::error::{Error, Result};

/// What a node reveals about one party in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Revealed {
    /// Its share of the party's self-mask seed.
    Share,
    /// Its round seed with the party.
    Seed,
}

impl Revealed {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Revealed::Share => "share",
            Revealed::Seed => "seed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "share" => Ok(Revealed::Share),
            "seed" => Ok(Revealed::Seed),
            other => Err(Error::Internal(format!(
                "a stored reveal kind `{}` is unknown",
                other.escape_debug()
            ))),
        }
    }
}

/// What was revealed for (`round`, `label`) of `session_id`, by party.
pub fn get(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
) -> Result<Vec<(String, Revealed)>> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    let mut st = conn
        .prepare_cached(
            "SELECT party_id, kind FROM lom_reveals WHERE session_id = ?1 AND round = ?2 AND label = ?3 ORDER BY party_id",
        )
        .map_err(|e| Error::store("while reading reveal records", e))?;
    let rows = st
        .query_map(params![session_id, r, l], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::store("while reading reveal records", e))?;
    rows.into_iter()
        .map(|(p, k)| Ok((p, Revealed::parse(&k)?)))
        .collect()
}

/// Records that `kind` is revealed about `party_id` in (`round`, `label`) of `session_id`; the
/// caller checked ([`get`]) in the same transaction that nothing else was.
pub fn insert(
    conn: &Connection,
    session_id: &str,
    (round, label): (u64, u64),
    party_id: &str,
    kind: Revealed,
    at: OffsetDateTime,
) -> Result<()> {
    let (r, l) = (to_sql(round, "round")?, to_sql(label, "label")?);
    conn.prepare_cached(
        "INSERT INTO lom_reveals (session_id, round, label, party_id, kind, revealed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            session_id,
            r,
            l,
            party_id,
            kind.as_str(),
            at.unix_timestamp()
        ])
    })
    .map_err(|e| Error::store("while recording a reveal", e))?;
    Ok(())
}

/// Every reveal record of `session_id`, by round, label and party.
pub fn all(conn: &Connection, session_id: &str) -> Result<Vec<RevealRecord>> {
    let mut st = conn
        .prepare_cached(
            "SELECT round, label, party_id, kind FROM lom_reveals WHERE session_id = ?1 ORDER BY round, label, party_id",
        )
        .map_err(|e| Error::store("while reading reveal records", e))?;
    let rows = st
        .query_map([session_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| Error::store("while reading reveal records", e))?;
    rows.into_iter()
        .map(|(round, label, party, kind)| {
            Ok(RevealRecord {
                round: round as u64,
                label: label as u64,
                party,
                revealed: Revealed::parse(&kind)?.as_str(),
            })
        })
        .collect()
}

/// Deletes the reveal records of `session_id`.
pub fn delete(conn: &Connection, session_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM lom_reveals WHERE session_id = ?1",
        [session_id],
    )
    .map_err(|e| Error::store("while deleting reveal records", e))?;
    Ok(())
}
