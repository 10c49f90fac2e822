//! The `peers` table: the certificates and endpoints of registered parties.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use time::OffsetDateTime;

use crate::certificate::{self, Certificate, Fingerprint, KeyType, ValidityStatus};
use crate::error::{Error, Result};
use crate::party::{Endpoint, PartyId, Role};

/// One registered peer.
#[derive(Debug, Clone)]
pub struct PeerRecord {
    /// Party id.
    pub party_id: PartyId,
    /// Role (from the id prefix).
    pub role: Role,
    /// MPC endpoint.
    pub endpoint: Endpoint,
    /// The pinned certificate, DER.
    pub certificate_der: Vec<u8>,
    /// SHA-256 of `certificate_der`.
    pub fingerprint: Fingerprint,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Subject line.
    pub subject: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// First registration.
    pub registered_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Where the registration came from (`file <path>`, `bundle <path>`, `fedbiomed <path>#<doc>`).
    pub source: String,
}

impl PeerRecord {
    /// Builds a record for a validated certificate (`key_type` must be supported).
    pub fn new(
        party_id: PartyId,
        endpoint: Endpoint,
        cert: &Certificate,
        source: String,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let key_type = cert
            .key_type
            .ok_or_else(|| Error::Internal("unsupported key type reached the store".into()))?;
        Ok(PeerRecord {
            role: party_id.role(),
            party_id,
            endpoint,
            certificate_der: cert.der.clone(),
            fingerprint: cert.fingerprint,
            key_type,
            subject: cert.subject.clone(),
            not_before: cert.not_before,
            not_after: cert.not_after,
            registered_at: now,
            updated_at: now,
            source,
        })
    }

    /// The pinned certificate, parsed.
    pub fn certificate(&self) -> Result<Certificate> {
        Certificate::from_der(self.certificate_der.clone())
            .map_err(|e| e.context(format!("in the store, certificate of `{}`", self.party_id)))
    }

    /// The certificate as PEM.
    pub fn certificate_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("CERTIFICATE", self.certificate_der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Status of the certificate at `now`.
    pub fn status_at(&self, now: OffsetDateTime) -> ValidityStatus {
        ValidityStatus::of(self.not_before, self.not_after, now)
    }

    /// A printable, serializable summary at `now`.
    pub fn summary(&self, now: OffsetDateTime) -> PeerSummary {
        PeerSummary {
            party_id: self.party_id.to_string(),
            component: self.role.component(),
            ip: self.endpoint.host.to_string(),
            port: self.endpoint.port,
            key_type: self.key_type,
            fingerprint: self.fingerprint,
            not_after: certificate::format_time(self.not_after),
            days_left: (self.not_after - now).whole_days(),
            status: self.status_at(now),
            registered_at: certificate::format_time(self.registered_at),
            updated_at: certificate::format_time(self.updated_at),
            source: self.source.clone(),
        }
    }
}

/// What `certificate list` shows of a peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSummary {
    /// Party id.
    pub party_id: String,
    /// `NODE` or `RESEARCHER` (Fed-BioMed's column).
    pub component: &'static str,
    /// MPC host.
    pub ip: String,
    /// MPC port.
    pub port: u16,
    /// Key algorithm.
    pub key_type: KeyType,
    /// Full fingerprint.
    pub fingerprint: Fingerprint,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Days until expiry (negative once expired).
    pub days_left: i64,
    /// valid / expiring / expired / not_yet_valid.
    pub status: ValidityStatus,
    /// First registration (RFC 3339).
    pub registered_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Origin of the registration.
    pub source: String,
}

const COLUMNS: &str = "party_id, role, host, port, certificate_der, fingerprint, key_type, subject, not_before, not_after, registered_at, updated_at, source";

fn ts(t: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<PeerRecord> {
    let bad = |col: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    };
    let party_id: String = row.get(0)?;
    let party_id = PartyId::parse(&party_id).map_err(|e| bad(0, e))?;
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

/// Inserts a new peer (the caller has checked that neither id nor fingerprint exist).
pub fn insert(conn: &Connection, p: &PeerRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO peers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
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
        ]))
    .map_err(db("while registering a peer"))?;
    Ok(())
}

/// Replaces the endpoint, certificate and source of an existing peer, keeping `registered_at`.
pub fn update(conn: &Connection, p: &PeerRecord) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE peers SET host = ?2, port = ?3, certificate_der = ?4, fingerprint = ?5, key_type = ?6,
                subject = ?7, not_before = ?8, not_after = ?9, updated_at = ?10, source = ?11
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

/// Number of registered peers.
pub fn count(conn: &Connection) -> Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM peers", [], |r| r.get(0))
        .map_err(db("while counting peers"))
}
