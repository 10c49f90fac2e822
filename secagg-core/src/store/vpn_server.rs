//! The `vpn_server` table: the one WireGuard server of this home (its key pair, public address,
//! listen port and VPN network), written by `secagg vpn init`.

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::party::Endpoint;
use crate::vpn::keys::{PrivateKey, PublicKey};
use crate::vpn::net::Ipv4Net;

/// The VPN server's settings.
#[derive(Debug, Clone)]
pub struct VpnServerRecord {
    /// The server's WireGuard private key (a secret; the store is 0600).
    pub private_key: PrivateKey,
    /// Its public key (derived; stored for queries and checked on load).
    pub public_key: PublicKey,
    /// Where peers reach the server (host and UDP port).
    pub public_endpoint: Endpoint,
    /// The VPN network.
    pub network: Ipv4Net,
    /// When `init` ran.
    pub created_at: OffsetDateTime,
}

fn db(ctx: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::store(ctx.to_owned(), e)
}

/// The server record, if `vpn init` ran.
pub fn get(conn: &Connection) -> Result<Option<VpnServerRecord>> {
    let row = conn
        .query_row(
            "SELECT private_key, public_key, public_host, port, network, created_at FROM vpn_server WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()
        .map_err(db("while reading the VPN server settings"))?;
    let Some((sk, pk, host, port, network, created)) = row else {
        return Ok(None);
    };
    let bad = |e: Error| e.context("in the store, VPN server settings");
    let private_key = PrivateKey::parse_named(&sk, "server private key").map_err(bad)?;
    let public_key = PublicKey::parse_named(&pk, "server public key").map_err(bad)?;
    if private_key.public_key() != public_key {
        return Err(Error::invalid(
            "in the store, the VPN server's public key does not match its private key",
        )
        .with_hint(
            "the store was edited by hand; run `secagg vpn init --force` to make a new key pair",
        ));
    }
    Ok(Some(VpnServerRecord {
        private_key,
        public_key,
        public_endpoint: Endpoint::new(&host, port).map_err(bad)?,
        network: Ipv4Net::parse(&network).map_err(bad)?,
        created_at: OffsetDateTime::from_unix_timestamp(created)
            .map_err(|e| Error::Internal(format!("bad timestamp in vpn_server: {e}")))?,
    }))
}

/// Inserts or replaces the server record.
pub fn put(conn: &Connection, r: &VpnServerRecord) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO vpn_server (id, private_key, public_key, public_host, port, network, created_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            r.private_key.to_base64().as_str(),
            r.public_key.to_string(),
            r.public_endpoint.host.to_string(),
            r.public_endpoint.port,
            r.network.to_string(),
            r.created_at.unix_timestamp(),
        ],
    )
    .map_err(db("while saving the VPN server settings"))?;
    Ok(())
}
