//! The `peers` table: the certificates and endpoints of registered parties, as [`PeerRecord`]s
//! (defined in [`crate::peers`]).

use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::certificate::Fingerprint;
use crate::error::{Error, Result};
use crate::party::{Endpoint, PartyId};
use crate::peers::PeerRecord;

const COLUMNS: &str = "party_id, role, host, port, certificate_der, fingerprint, key_type, subject, not_before, not_after, registered_at, updated_at, source, name";

fn ts(t: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<PeerRecord> {
    let bad = |col: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    };
    let party_id: String = row.get(0)?;
    // Checked when registered (custom ids only with the explicit option), so read leniently.
    let party_id = PartyId::parse_custom(&party_id).map_err(|e| bad(0, e))?;
    let host: String = row.get(2)?;
    let port: u32 = row.get(3)?;
    let endpoint = Endpoint::new(&host, port).map_err(|e| bad(2, e))?;
    let fingerprint: String = row.get(5)?;
    let key_type: String = row.get(6)?;
    let role: String = row.get(1)?;
    Ok(PeerRecord {
        role: role.parse().map_err(|e| bad(1, e))?,
        party_id,
        endpoint,
        certificate_der: row.get(4)?,
        fingerprint: Fingerprint::parse(&fingerprint).map_err(|e| bad(5, e))?,
        key_type: key_type.parse().map_err(|e| bad(6, e))?,
        subject: row.get(7)?,
        not_before: ts(row.get(8)?)?,
        not_after: ts(row.get(9)?)?,
        registered_at: ts(row.get(10)?)?,
        updated_at: ts(row.get(11)?)?,
        source: row.get(12)?,
        name: row.get(13)?,
    })
}

fn db(ctx: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::store(ctx.to_owned(), e)
}

/// The peer registered as `party_id`, if any.
pub fn get(conn: &Connection, party_id: &PartyId) -> Result<Option<PeerRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM peers WHERE party_id = ?1"))
        .and_then(|mut st| st.query_row([party_id.as_str()], from_row).optional())
        .map_err(db("while reading a peer"))
}

/// The party id under which the certificate with `fingerprint` is registered, if any.
pub fn find_by_fingerprint(conn: &Connection, fingerprint: &Fingerprint) -> Result<Option<String>> {
    conn.prepare_cached("SELECT party_id FROM peers WHERE fingerprint = ?1")
        .and_then(|mut st| {
            st.query_row([fingerprint.to_string()], |r| r.get(0))
                .optional()
        })
        .map_err(db("while looking up a fingerprint"))
}

/// Every registered party id with its row id, in registration order: the stable document ids
/// that Fed-BioMed's `CertificateManager` reports (an upsert keeps the row, and its id).
pub fn document_ids(conn: &Connection) -> Result<Vec<(String, i64)>> {
    let mut st = conn
        .prepare_cached("SELECT party_id, rowid FROM peers ORDER BY rowid")
        .map_err(db("while listing peers"))?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db("while listing peers"))?;
    Ok(rows)
}

/// Inserts a new peer (the caller has checked that neither id nor fingerprint exist).
pub fn insert(conn: &Connection, p: &PeerRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO peers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))
    .and_then(|mut st| st.execute(params![
            p.party_id.as_str(),
            p.role.as_str(),
            p.endpoint.host.to_string(),
            p.endpoint.port,
            p.certificate_der,
            p.fingerprint.to_string(),
            p.key_type.to_string(),
            p.subject,
            p.not_before.unix_timestamp(),
            p.not_after.unix_timestamp(),
            p.registered_at.unix_timestamp(),
            p.updated_at.unix_timestamp(),
            p.source,
            p.name,
        ]))
    .map_err(db("while registering a peer"))?;
    Ok(())
}

/// Replaces the endpoint, certificate and source of an existing peer, keeping `registered_at`.
pub fn update(conn: &Connection, p: &PeerRecord) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE peers SET host = ?2, port = ?3, certificate_der = ?4, fingerprint = ?5, key_type = ?6,
                subject = ?7, not_before = ?8, not_after = ?9, updated_at = ?10, source = ?11,
                name = ?12
             WHERE party_id = ?1",
            params![
                p.party_id.as_str(),
                p.endpoint.host.to_string(),
                p.endpoint.port,
                p.certificate_der,
                p.fingerprint.to_string(),
                p.key_type.to_string(),
                p.subject,
                p.not_before.unix_timestamp(),
                p.not_after.unix_timestamp(),
                p.updated_at.unix_timestamp(),
                p.source,
                p.name,
            ],
        )
        .map_err(db("while updating a peer"))?;
    if n != 1 {
        return Err(Error::Internal(format!(
            "update of `{}` touched {n} rows",
            p.party_id
        )));
    }
    Ok(())
}

/// Deletes the peer `party_id`; returns whether it existed.
pub fn delete(conn: &Connection, party_id: &PartyId) -> Result<bool> {
    let n = conn
        .execute("DELETE FROM peers WHERE party_id = ?1", [party_id.as_str()])
        .map_err(db("while deleting a peer"))?;
    Ok(n > 0)
}

/// Every registered peer, ordered by party id.
pub fn list(conn: &Connection) -> Result<Vec<PeerRecord>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM peers ORDER BY party_id"))
        .map_err(db("while listing peers"))?;
    let rows = stmt
        .query_map([], from_row)
        .map_err(db("while listing peers"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db("while listing peers"))
}
