//! The `vpn_peers` table: the VPN server's registry of peers (type, id, address, pre-shared key,
//! public key once added, config file).
//!
//! Addresses are stored as integers; the `UNIQUE` constraints on the address and the public key
//! make a duplicate impossible even if a caller forgot to check.

use std::net::Ipv4Addr;

use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::vpn::keys::{PresharedKey, PublicKey};
use crate::vpn::peer::{PeerName, PeerType};

/// One VPN peer.
#[derive(Debug, Clone)]
pub struct VpnPeerRecord {
    /// Peer type (which pool).
    pub kind: PeerType,
    /// Peer id.
    pub name: PeerName,
    /// VPN address.
    pub address: Ipv4Addr,
    /// Pre-shared key (secret).
    pub preshared_key: PresharedKey,
    /// The peer's public key, once `add`ed (cleared by `remove`).
    pub public_key: Option<PublicKey>,
    /// Where its `config.env` was written.
    pub config_path: String,
    /// When `genconf` ran.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str =
    "peer_type, peer_id, address, preshared_key, public_key, config_path, created_at, updated_at";

fn db(ctx: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::store(ctx.to_owned(), e)
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<VpnPeerRecord> {
    let bad = |col: usize, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    };
    let ts = |col: usize, t: i64| {
        OffsetDateTime::from_unix_timestamp(t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                col,
                rusqlite::types::Type::Integer,
                Box::new(e),
            )
        })
    };
    let kind: String = row.get(0)?;
    let name: String = row.get(1)?;
    let psk: String = row.get(3)?;
    let pk: Option<String> = row.get(4)?;
    Ok(VpnPeerRecord {
        kind: kind.parse().map_err(|e| bad(0, e))?,
        name: PeerName::parse(&name).map_err(|e| bad(1, e))?,
        address: Ipv4Addr::from(row.get::<_, u32>(2)?),
        preshared_key: PresharedKey::parse_named(&psk, "pre-shared key").map_err(|e| bad(3, e))?,
        public_key: pk
            .map(|k| PublicKey::parse(&k))
            .transpose()
            .map_err(|e| bad(4, e))?,
        config_path: row.get(5)?,
        created_at: ts(6, row.get(6)?)?,
        updated_at: ts(7, row.get(7)?)?,
    })
}

/// The peer `kind/name`, if registered.
pub fn get(conn: &Connection, kind: PeerType, name: &PeerName) -> Result<Option<VpnPeerRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM vpn_peers WHERE peer_type = ?1 AND peer_id = ?2"
    ))
    .and_then(|mut st| {
        st.query_row(params![kind.as_str(), name.as_str()], from_row)
            .optional()
    })
    .map_err(db("while reading a VPN peer"))
}

/// The peer holding `public_key`, if any.
pub fn find_by_public_key(conn: &Connection, key: &PublicKey) -> Result<Option<VpnPeerRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM vpn_peers WHERE public_key = ?1"
    ))
    .and_then(|mut st| st.query_row([key.to_string()], from_row).optional())
    .map_err(db("while looking up a VPN public key"))
}

/// The addresses in use between `lo` and `hi` inclusive, ascending.
pub fn addresses_in(conn: &Connection, lo: u32, hi: u32) -> Result<Vec<u32>> {
    let mut st = conn
        .prepare_cached(
            "SELECT address FROM vpn_peers WHERE address BETWEEN ?1 AND ?2 ORDER BY address",
        )
        .map_err(db("while reading VPN addresses"))?;
    let rows = st
        .query_map(params![lo, hi], |r| r.get::<_, u32>(0))
        .map_err(db("while reading VPN addresses"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db("while reading VPN addresses"))
}

/// Inserts a new peer.
pub fn insert(conn: &Connection, p: &VpnPeerRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO vpn_peers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    ))
    .and_then(|mut st| {
        st.execute(params![
            p.kind.as_str(),
            p.name.as_str(),
            u32::from(p.address),
            p.preshared_key.to_base64().as_str(),
            p.public_key.map(|k| k.to_string()),
            p.config_path,
            p.created_at.unix_timestamp(),
            p.updated_at.unix_timestamp(),
        ])
    })
    .map_err(db("while registering a VPN peer"))?;
    Ok(())
}

/// Sets (or clears) the public key of `kind/name`.
pub fn set_public_key(
    conn: &Connection,
    kind: PeerType,
    name: &PeerName,
    key: Option<&PublicKey>,
    now: OffsetDateTime,
) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE vpn_peers SET public_key = ?3, updated_at = ?4 WHERE peer_type = ?1 AND peer_id = ?2",
            params![
                kind.as_str(),
                name.as_str(),
                key.map(|k| k.to_string()),
                now.unix_timestamp()
            ],
        )
        .map_err(db("while updating a VPN peer"))?;
    if n != 1 {
        return Err(Error::Internal(format!(
            "update of VPN peer {kind}/{name} touched {n} rows"
        )));
    }
    Ok(())
}

/// Deletes `kind/name`; returns whether it existed.
pub fn delete(conn: &Connection, kind: PeerType, name: &PeerName) -> Result<bool> {
    let n = conn
        .execute(
            "DELETE FROM vpn_peers WHERE peer_type = ?1 AND peer_id = ?2",
            params![kind.as_str(), name.as_str()],
        )
        .map_err(db("while deleting a VPN peer"))?;
    Ok(n > 0)
}

/// Every peer, ordered by type, then address.
pub fn list(conn: &Connection) -> Result<Vec<VpnPeerRecord>> {
    let mut st = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM vpn_peers ORDER BY peer_type, address"
        ))
        .map_err(db("while listing VPN peers"))?;
    let rows = st
        .query_map([], from_row)
        .map_err(db("while listing VPN peers"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db("while listing VPN peers"))
}

/// Number of peers.
pub fn count(conn: &Connection) -> Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM vpn_peers", [], |r| r.get(0))
        .map_err(db("while counting VPN peers"))
}
