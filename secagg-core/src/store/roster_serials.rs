//! The `roster_serials` table: the last serial number of a signed roster per issuer. On a
//! researcher, the row under its own id is the last roster it exported; on any party, the row of
//! another researcher is the last roster imported from it, so an older one is refused (rollback).

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::party::PartyId;

/// The last serial recorded for `issuer`, if any.
pub fn get(conn: &Connection, issuer: &PartyId) -> Result<Option<u64>> {
    let serial: Option<i64> = conn
        .query_row(
            "SELECT last_serial FROM roster_serials WHERE issuer = ?1",
            params![issuer.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| Error::store("while reading roster serial numbers", e))?;
    serial
        .map(|s| {
            u64::try_from(s).map_err(|_| {
                Error::invalid(format!(
                    "in the store, the roster serial of `{issuer}` is negative ({s})"
                ))
            })
        })
        .transpose()
}

/// Records `serial` as the last one of `issuer` (the caller has checked it is higher).
pub fn set(conn: &Connection, issuer: &PartyId, serial: u64, now: OffsetDateTime) -> Result<()> {
    let serial = i64::try_from(serial)
        .map_err(|_| Error::invalid(format!("roster serial {serial} is too large")))?;
    conn.execute(
        "INSERT INTO roster_serials (issuer, last_serial, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (issuer) DO UPDATE SET last_serial = excluded.last_serial,
                                            updated_at = excluded.updated_at",
        params![issuer.as_str(), serial, now.unix_timestamp()],
    )
    .map_err(|e| Error::store("while recording a roster serial number", e))?;
    Ok(())
}

/// The issuer and serial of the roster recorded last (by time of recording), if any: on a node,
/// the roster it imported last.
pub fn latest(conn: &Connection) -> Result<Option<(String, u64)>> {
    let row: Option<(String, i64)> = conn
        .query_row(
            "SELECT issuer, last_serial FROM roster_serials ORDER BY updated_at DESC, issuer LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| Error::store("while reading roster serial numbers", e))?;
    row.map(|(issuer, s)| {
        u64::try_from(s).map(|s| (issuer.clone(), s)).map_err(|_| {
            Error::invalid(format!(
                "in the store, the roster serial of `{issuer}` is negative ({s})"
            ))
        })
    })
    .transpose()
}
