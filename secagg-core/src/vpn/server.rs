//! The VPN server's side: its settings and its registry of peers (`secagg vpn init`, `genconf`,
//! `add`, `remove`, `removeconf`, `list`, `server-config`).
//!
//! Differences from Fed-BioMed's `configure_peer.py`, on purpose:
//! - addresses are allocated **first-free** from the type's pool inside the store's transaction
//!   (no unlocked counter file written before validation); an address is reused only after its
//!   peer is deleted with `removeconf` (`remove` only withdraws the public key and keeps the
//!   address reserved), and a full pool is an explicit error;
//! - public keys are validated (base64 of 32 bytes) before anything is written, and one key cannot
//!   belong to two peers;
//! - `genconf` of an existing peer and `add`/`remove` of an unknown one are errors, not a warning
//!   with exit status 0.

use std::cell::Cell;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::certificate::format_time;
use crate::error::{Error, Result};
use crate::fs_secure::{self, SECRET_FILE_MODE};
use crate::home::Home;
use crate::party::Endpoint;
use crate::store::vpn_peers::{self, VpnPeerRecord};
use crate::store::vpn_server::{self, VpnServerRecord};
use crate::store::Store;
use crate::vpn::config_env::{self, PeerConfig};
use crate::vpn::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::vpn::net::{self, Ipv4Net};
use crate::vpn::wgconf::{self, ConfigForm};
use crate::vpn::{self as vpn, PeerName, PeerType, MTU};

/// What `vpn init` is asked to do, parsed (the caller turns `HOST[:PORT]` into an [`Endpoint`]
/// with [`config_env::parse_endpoint`] and the network into an [`Ipv4Net`] with
/// [`Ipv4Net::parse_vpn`]).
#[derive(Debug, Clone)]
pub struct InitRequest {
    /// Where peers reach the server (UDP port default [`vpn::DEFAULT_PORT`]).
    pub public_endpoint: Endpoint,
    /// The VPN network; `None` is [`net::DEFAULT_NETWORK`].
    pub network: Option<Ipv4Net>,
    /// Replace existing settings and key pair.
    pub force: bool,
}

/// One address pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// The pool (Fed-BioMed's `VPN_<TYPE>_IP_ASSIGN`).
    pub pool: Ipv4Net,
    /// First address handed out.
    pub first: Ipv4Addr,
    /// Last address handed out.
    pub last: Ipv4Addr,
    /// How many addresses the pool can hand out.
    pub capacity: u64,
    /// How many are taken.
    pub used: u64,
}

/// The server's settings, as shown by `init` and `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    /// The server's public key.
    pub public_key: PublicKey,
    /// `host:port` peers connect to.
    pub endpoint: String,
    /// UDP listen port.
    pub listen_port: u16,
    /// The VPN network.
    pub network: Ipv4Net,
    /// The server's VPN address (network + 1).
    pub server_address: Ipv4Addr,
    /// The pools.
    pub pools: Vec<PoolInfo>,
    /// When `init` ran.
    pub created_at: String,
}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct Initialized {
    /// The new settings.
    #[serde(flatten)]
    pub server: ServerInfo,
    /// The public key replaced by `--force`, if any.
    pub replaced_public_key: Option<PublicKey>,
}

fn capacity(network: &Ipv4Net, kind: PeerType) -> u64 {
    let (lo, hi) = network.allocatable(kind);
    u64::from(hi - lo) + 1
}

fn server_info(conn: &rusqlite::Connection, s: &VpnServerRecord) -> Result<ServerInfo> {
    let mut pools = Vec::new();
    for kind in PeerType::ALL {
        let (lo, hi) = s.network.allocatable(kind);
        pools.push(PoolInfo {
            kind,
            pool: s.network.pool(kind),
            first: Ipv4Addr::from(lo),
            last: Ipv4Addr::from(hi),
            capacity: capacity(&s.network, kind),
            used: vpn_peers::addresses_in(conn, lo, hi)?.len() as u64,
        });
    }
    Ok(ServerInfo {
        public_key: s.public_key,
        endpoint: s.public_endpoint.to_string(),
        listen_port: s.public_endpoint.port,
        network: s.network,
        server_address: s.network.server_address(),
        pools,
        created_at: format_time(s.created_at),
    })
}

fn no_server(home: &Home) -> Error {
    Error::not_found(format!(
        "no VPN server is set up in `{}`",
        home.root().display()
    ))
    .with_hint("run `secagg vpn init --public-addr HOST[:PORT]` on the VPN server first (or point --home at its directory)")
}

/// Opens the store of an initialised server home without creating anything.
fn open_existing(home: &Home) -> Result<Store> {
    if !home.store_path().is_file() {
        return Err(no_server(home));
    }
    Store::open(&home.store_path())
}

fn require_server(conn: &rusqlite::Connection, home: &Home) -> Result<VpnServerRecord> {
    vpn_server::get(conn)?.ok_or_else(|| no_server(home))
}

/// `vpn init`: makes the server's key pair and records its public address and network.
///
/// Refuses to replace existing settings without `force`, and even with it while peers are
/// registered (their `config.env` files hold the old key and addresses).
pub fn init(home: &Home, req: &InitRequest, now: OffsetDateTime) -> Result<Initialized> {
    let public_endpoint = req.public_endpoint.clone();
    let network = match req.network {
        Some(n) => n,
        None => Ipv4Net::parse_vpn(net::DEFAULT_NETWORK)?,
    };
    fs_secure::create_private_dir(home.root())?;
    fs_secure::create_private_dir(&vpn::vpn_dir(home))?;
    let mut store = Store::create(&home.store_path())?;
    store.write(|tx| {
        let previous = vpn_server::get(tx)?;
        if let Some(p) = &previous {
            if !req.force {
                return Err(Error::conflict(format!(
                    "a VPN server is already set up in `{}` (public key {}, endpoint {}, network {})",
                    home.root().display(),
                    p.public_key,
                    p.public_endpoint,
                    p.network
                ))
                .with_hint("run again with --force to make a new key pair (every peer then needs a new config.env)"));
            }
            let n = vpn_peers::count(tx)?;
            if n > 0 {
                return Err(Error::conflict(format!(
                    "{n} VPN peer(s) are registered with the current server key and network"
                ))
                .with_hint("delete them with `secagg vpn removeconf TYPE ID` first (see `secagg vpn list`)"));
            }
        }
        let private_key = PrivateKey::generate();
        let record = VpnServerRecord {
            public_key: private_key.public_key(),
            private_key,
            public_endpoint,
            network,
            created_at: now,
        };
        vpn_server::put(tx, &record)?;
        Ok(Initialized {
            server: server_info(tx, &record)?,
            replaced_public_key: previous.map(|p| p.public_key),
        })
    })
}

/// What `genconf` made.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// Peer id.
    pub id: PeerName,
    /// Its VPN address.
    pub address: Ipv4Addr,
    /// Where its `config.env` was written.
    pub config_path: PathBuf,
}

fn peer_config(s: &VpnServerRecord, p: &VpnPeerRecord) -> PeerConfig {
    PeerConfig {
        kind: p.kind,
        name: p.name.clone(),
        server_vpn_ip: s.network.server_address(),
        vpn_ip: p.address,
        network: s.network,
        server_endpoint: s.public_endpoint.clone(),
        server_public_key: s.public_key,
        preshared_key: p.preshared_key.clone(),
    }
}

fn relative_config_path(kind: PeerType, name: &PeerName) -> String {
    format!("vpn/peers/{kind}/{name}/config.env")
}

/// `vpn genconf TYPE ID`: allocates the first free address of the type's pool, makes a
/// pre-shared key, registers the peer and writes its `config.env` (0600).
pub fn genconf(
    home: &Home,
    kind: PeerType,
    name: &PeerName,
    now: OffsetDateTime,
) -> Result<Generated> {
    let mut store = open_existing(home)?;
    let dir = vpn::peer_dir(home, kind, name);
    let path = vpn::peer_config_path(home, kind, name);
    // Directories this call created, removed again if the command fails.
    let created: Cell<Option<PathBuf>> = Cell::new(None);
    let result = store.write(|tx| {
        let server = require_server(tx, home)?;
        if let Some(existing) = vpn_peers::get(tx, kind, name)? {
            return Err(Error::conflict(format!(
                "VPN peer {kind}/{name} already exists (address {}, config `{}`)",
                existing.address,
                home.root().join(&existing.config_path).display()
            ))
            .with_hint(format!("send that config.env again, or delete the peer with `secagg vpn removeconf {kind} {name}` and run genconf again for a new address and pre-shared key")));
        }
        let range = server.network.allocatable(kind);
        let used = vpn_peers::addresses_in(tx, range.0, range.1)?;
        let address = net::first_free(range, &used).ok_or_else(|| {
            Error::conflict(format!(
                "the {kind} pool {} is full ({} addresses, all taken)",
                server.network.pool(kind),
                capacity(&server.network, kind)
            ))
            .with_hint(format!("free an address with `secagg vpn removeconf {kind} ID`, or set up the server with a larger --network"))
        })?;
        let record = VpnPeerRecord {
            kind,
            name: name.clone(),
            address: Ipv4Addr::from(address),
            preshared_key: PresharedKey::generate(),
            public_key: None,
            config_path: relative_config_path(kind, name),
            created_at: now,
            updated_at: now,
        };
        vpn_peers::insert(tx, &record)?;
        let text = Zeroizing::new(config_env::render(&peer_config(&server, &record)));
        let first_missing = first_missing_ancestor(&dir);
        fs_secure::create_private_dir(&dir)?;
        created.set(first_missing);
        fs_secure::write_atomic(&path, text.as_bytes(), SECRET_FILE_MODE)?;
        Ok(Generated {
            kind,
            id: name.clone(),
            address: record.address,
            config_path: path.clone(),
        })
    });
    if result.is_err() {
        if let Some(d) = created.take() {
            let _ = fs::remove_dir_all(d);
        }
    }
    result
}

/// Registers `kind/name` with [`genconf`] unless it exists; returns whether it was created.
pub fn ensure_peer(
    home: &Home,
    kind: PeerType,
    name: &PeerName,
    now: OffsetDateTime,
) -> Result<bool> {
    let exists = open_existing(home)?.read(|tx| {
        require_server(tx, home)?;
        Ok(vpn_peers::get(tx, kind, name)?.is_some())
    })?;
    if exists {
        return Ok(false);
    }
    genconf(home, kind, name, now).map(|_| true)
}

/// The outermost directory of `dir` that does not exist yet (what creating `dir` would add).
fn first_missing_ancestor(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing = Some(d.to_path_buf());
        cur = d.parent();
    }
    missing
}

/// What `add` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddAction {
    /// The peer had no key.
    Added,
    /// The peer's previous key was replaced (as WireGuard moves the /32 to the new key).
    Replaced,
    /// The peer already had this key.
    Unchanged,
}

/// The outcome of `add`.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// Peer id.
    pub id: PeerName,
    /// Its VPN address.
    pub address: Ipv4Addr,
    /// The key now registered.
    pub public_key: PublicKey,
    /// The key it replaced, if any.
    pub previous_public_key: Option<PublicKey>,
    /// What happened.
    pub action: AddAction,
}

fn unknown_peer(kind: PeerType, name: &PeerName) -> Error {
    Error::not_found(format!("VPN peer {kind}/{name} does not exist")).with_hint(format!(
        "create it with `secagg vpn genconf {kind} {name}` first (see `secagg vpn list`)"
    ))
}

/// `vpn add TYPE ID PUBLIC_KEY`: registers the peer's public key (parsed by the caller, e.g.
/// with [`PublicKey::parse_named`] naming the peer).
pub fn add(
    home: &Home,
    kind: PeerType,
    name: &PeerName,
    key: &PublicKey,
    now: OffsetDateTime,
) -> Result<Added> {
    let key = *key;
    let mut store = open_existing(home)?;
    store.write(|tx| {
        let server = require_server(tx, home)?;
        let peer = vpn_peers::get(tx, kind, name)?.ok_or_else(|| unknown_peer(kind, name))?;
        if key == server.public_key {
            return Err(Error::invalid(format!(
                "{key} is the VPN server's own public key, not the key of {kind}/{name}"
            ))
            .with_hint("give the key the peer printed with `secagg vpn keygen` (or `wg pubkey`)"));
        }
        if let Some(other) = vpn_peers::find_by_public_key(tx, &key)? {
            if (other.kind, &other.name) != (kind, name) {
                return Err(Error::conflict(format!(
                    "public key {key} already belongs to VPN peer {}/{} ({})",
                    other.kind, other.name, other.address
                ))
                .with_hint(
                    "each peer needs its own key pair: run `secagg vpn keygen` on that peer",
                ));
            }
        }
        let action = match peer.public_key {
            None => AddAction::Added,
            Some(k) if k == key => AddAction::Unchanged,
            Some(_) => AddAction::Replaced,
        };
        if action != AddAction::Unchanged {
            vpn_peers::set_public_key(tx, kind, name, Some(&key), now)?;
        }
        Ok(Added {
            kind,
            id: name.clone(),
            address: peer.address,
            public_key: key,
            previous_public_key: peer.public_key.filter(|k| *k != key),
            action,
        })
    })
}

/// The outcome of `remove` / `removeconf`.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// Peer id.
    pub id: PeerName,
    /// Its VPN address (reserved after `remove`, free after `removeconf`).
    pub address: Ipv4Addr,
    /// The public key withdrawn, if the peer had one.
    pub removed_public_key: Option<PublicKey>,
    /// The config file deleted (`removeconf`).
    pub removed_config: Option<PathBuf>,
}

/// `vpn remove TYPE ID`: withdraws the peer's public key (it leaves the server configuration);
/// the peer, its address and its `config.env` stay, so `add` can bring it back.
pub fn remove(
    home: &Home,
    kind: PeerType,
    name: &PeerName,
    now: OffsetDateTime,
) -> Result<Removed> {
    let mut store = open_existing(home)?;
    store.write(|tx| {
        require_server(tx, home)?;
        let peer = vpn_peers::get(tx, kind, name)?.ok_or_else(|| unknown_peer(kind, name))?;
        if peer.public_key.is_some() {
            vpn_peers::set_public_key(tx, kind, name, None, now)?;
        }
        Ok(Removed {
            kind,
            id: name.clone(),
            address: peer.address,
            removed_public_key: peer.public_key,
            removed_config: None,
        })
    })
}

/// `vpn removeconf TYPE ID`: deletes the peer and its `config.env`; its address becomes free.
pub fn removeconf(home: &Home, kind: PeerType, name: &PeerName) -> Result<Removed> {
    let mut store = open_existing(home)?;
    let dir = vpn::peer_dir(home, kind, name);
    let trash = dir.with_file_name(format!(".removed-{name}-{}", uuid::Uuid::new_v4().simple()));
    let moved = Cell::new(false);
    let result = store.write(|tx| {
        require_server(tx, home)?;
        let peer = vpn_peers::get(tx, kind, name)?.ok_or_else(|| unknown_peer(kind, name))?;
        vpn_peers::delete(tx, kind, name)?;
        // Move the directory aside inside the transaction; it is deleted once the deletion is
        // committed, and moved back if the commit fails.
        if dir.exists() {
            fs::rename(&dir, &trash).map_err(|e| Error::io_path("moving away", &dir, e))?;
            moved.set(true);
        }
        Ok(Removed {
            kind,
            id: name.clone(),
            address: peer.address,
            removed_public_key: peer.public_key,
            removed_config: moved.get().then(|| vpn::peer_config_path(home, kind, name)),
        })
    });
    match &result {
        Ok(_) if moved.get() => {
            let _ = fs::remove_dir_all(&trash);
        }
        Err(_) if moved.get() => {
            let _ = fs::rename(&trash, &dir);
        }
        _ => {}
    }
    result
}

/// One peer as `list` shows it (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct PeerSummary {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// Peer id.
    pub id: PeerName,
    /// VPN address.
    pub address: Ipv4Addr,
    /// `address/32`, the peer's AllowedIPs on the server.
    pub allowed_ips: String,
    /// The registered public key, if any.
    pub public_key: Option<PublicKey>,
    /// `active` (in the server configuration) or `no_key` (waiting for `add`).
    pub status: &'static str,
    /// Its `config.env`.
    pub config_path: PathBuf,
    /// When `genconf` ran.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// What `list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The server's settings.
    pub server: ServerInfo,
    /// Every peer, by type then address.
    pub peers: Vec<PeerSummary>,
}

/// `vpn list`.
pub fn list(home: &Home) -> Result<Listing> {
    let mut store = open_existing(home)?;
    store.read(|tx| {
        let server = require_server(tx, home)?;
        let peers = vpn_peers::list(tx)?
            .into_iter()
            .map(|p| PeerSummary {
                kind: p.kind,
                allowed_ips: format!("{}/32", p.address),
                status: if p.public_key.is_some() {
                    "active"
                } else {
                    "no_key"
                },
                config_path: home.root().join(&p.config_path),
                created_at: format_time(p.created_at),
                updated_at: format_time(p.updated_at),
                id: p.name,
                address: p.address,
                public_key: p.public_key,
            })
            .collect();
        Ok(Listing {
            server: server_info(tx, &server)?,
            peers,
        })
    })
}

/// `vpn server-config`: the server's WireGuard configuration (a secret), with one `[Peer]` per
/// peer that has a public key (AllowedIPs = its address/32, its pre-shared key).
pub fn server_config(home: &Home, form: ConfigForm) -> Result<Zeroizing<String>> {
    let mut store = open_existing(home)?;
    store.read(|tx| {
        let server = require_server(tx, home)?;
        let peers = vpn_peers::list(tx)?;
        let waiting = peers.iter().filter(|p| p.public_key.is_none()).count();
        let mut comments = vec![
            format!(
                "secagg VPN server, network {}, address {}, endpoint {}",
                server.network,
                server.network.server_address(),
                server.public_endpoint
            ),
            match form {
                ConfigForm::Wg => "apply with `wg setconf IFACE FILE` (or `wg syncconf`)".into(),
                ConfigForm::WgQuick => "apply with `wg-quick up FILE`".into(),
            },
        ];
        if waiting > 0 {
            comments.push(format!(
                "{waiting} peer(s) without a public key are left out (`secagg vpn add`)"
            ));
        }
        let sections: Vec<wgconf::Peer<'_>> = peers
            .iter()
            .filter_map(|p| {
                p.public_key.map(|k| wgconf::Peer {
                    comment: format!("{}/{}", p.kind, p.name),
                    public_key: k,
                    preshared_key: &p.preshared_key,
                    endpoint: None,
                    allowed_ips: format!("{}/32", p.address),
                    persistent_keepalive: None,
                })
            })
            .collect();
        let iface = wgconf::Interface {
            comments,
            private_key: &server.private_key,
            listen_port: Some(server.public_endpoint.port),
            address: (server.network.server_address(), server.network.prefix()),
            mtu: MTU,
        };
        Ok(wgconf::render(form, &iface, &sections))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn endpoint(addr: &str) -> Endpoint {
        config_env::parse_endpoint(addr, Some(vpn::DEFAULT_PORT)).unwrap()
    }

    // The commands with their arguments as text, parsed as the CLI parses them, so that the
    // tests read like the command lines they stand for.
    fn genconf_text(home: &Home, kind: &str, id: &str, now: OffsetDateTime) -> Result<Generated> {
        genconf(home, kind.parse()?, &PeerName::parse(id)?, now)
    }

    fn add_text(
        home: &Home,
        kind: &str,
        id: &str,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Added> {
        add(
            home,
            kind.parse()?,
            &PeerName::parse(id)?,
            &PublicKey::parse(key)?,
            now,
        )
    }

    fn remove_text(home: &Home, kind: &str, id: &str, now: OffsetDateTime) -> Result<Removed> {
        remove(home, kind.parse()?, &PeerName::parse(id)?, now)
    }

    fn removeconf_text(home: &Home, kind: &str, id: &str) -> Result<Removed> {
        removeconf(home, kind.parse()?, &PeerName::parse(id)?)
    }

    fn server(network: &str) -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().join("vpnserver"));
        init(
            &home,
            &InitRequest {
                public_endpoint: endpoint("vpn.example.org"),
                network: Some(Ipv4Net::parse_vpn(network).unwrap()),
                force: false,
            },
            now(),
        )
        .unwrap();
        (dir, home)
    }

    /// Everything observable about the registry and the peer files.
    fn snapshot(home: &Home) -> (String, Vec<(PathBuf, Vec<u8>)>) {
        let l = list(home).unwrap();
        let mut files = Vec::new();
        let mut stack = vec![vpn::vpn_dir(home)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    files.push((p.clone(), Vec::new()));
                    stack.push(p);
                } else {
                    files.push((p.clone(), fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        (serde_json::to_string(&l).unwrap(), files)
    }

    #[test]
    fn fedbiomed_first_allocations() {
        let (_d, home) = server("10.220.0.0/14");
        let a = |k: &str, id: &str| {
            genconf_text(&home, k, id, now())
                .unwrap()
                .address
                .to_string()
        };
        assert_eq!(a("management", "mqtt"), "10.220.0.2");
        assert_eq!(a("management", "restful"), "10.220.0.3");
        assert_eq!(a("researcher", "researcher1"), "10.222.0.2");
        assert_eq!(a("node", "NODETAG"), "10.221.0.2");
        assert_eq!(a("node", "NODE2TAG"), "10.221.0.3");
        let p = vpn::peer_config_path(&home, PeerType::Node, &PeerName::parse("NODETAG").unwrap());
        assert_eq!(fs_secure::mode_of(&p).unwrap(), 0o600);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("export VPN_SERVER_ENDPOINT=vpn.example.org:51820\n"));
    }

    #[test]
    fn refused_commands_change_nothing() {
        let (_d, home) = server("10.9.0.0/28");
        genconf_text(&home, "node", "n1", now()).unwrap();
        genconf_text(&home, "node", "n2", now()).unwrap();
        let key = PrivateKey::generate().public_key().to_string();
        add_text(&home, "node", "n1", &key, now()).unwrap();
        let before = snapshot(&home);
        let e = genconf_text(&home, "node", "n3", now()).unwrap_err();
        assert!(e.to_string().contains("pool 10.9.0.4/30 is full"), "{e}");
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert_eq!(
            genconf_text(&home, "nodes", "n3", now())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::InvalidInput
        );
        assert!(genconf_text(&home, "node", "a/b", now()).is_err());
        assert_eq!(
            genconf_text(&home, "node", "n1", now()).unwrap_err().kind(),
            crate::ErrorKind::Conflict
        );
        assert!(add_text(&home, "node", "n2", "bad", now()).is_err());
        assert_eq!(
            add_text(&home, "node", "n2", &key, now())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Conflict
        );
        assert_eq!(
            add_text(&home, "node", "zz", &key, now())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::NotFound
        );
        assert!(remove_text(&home, "researcher", "n1", now()).is_err());
        assert!(removeconf_text(&home, "management", "n1").is_err());
        let srv = list(&home).unwrap().server.public_key.to_string();
        assert!(add_text(&home, "node", "n2", &srv, now()).is_err());
        assert_eq!(snapshot(&home), before);
    }

    #[test]
    fn remove_keeps_the_address_and_removeconf_frees_it() {
        let (_d, home) = server("10.9.0.0/28");
        genconf_text(&home, "researcher", "r1", now()).unwrap();
        genconf_text(&home, "researcher", "r2", now()).unwrap();
        let k = PrivateKey::generate().public_key().to_string();
        add_text(&home, "researcher", "r1", &k, now()).unwrap();
        let r = remove_text(&home, "researcher", "r1", now()).unwrap();
        assert_eq!(r.removed_public_key.unwrap().to_string(), k);
        // Still reserved: the pool is full.
        assert!(genconf_text(&home, "researcher", "r3", now()).is_err());
        let r = removeconf_text(&home, "researcher", "r1").unwrap();
        assert!(r.removed_config.is_some());
        assert!(
            !vpn::peer_dir(&home, PeerType::Researcher, &PeerName::parse("r1").unwrap()).exists()
        );
        assert_eq!(
            genconf_text(&home, "researcher", "r3", now())
                .unwrap()
                .address
                .to_string(),
            "10.9.0.10"
        );
        // No trash left behind.
        let names: Vec<_> = fs::read_dir(vpn::peers_dir(&home).join("researcher"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn add_replaces_a_key_and_server_config_lists_active_peers() {
        let (_d, home) = server("10.220.0.0/14");
        genconf_text(&home, "node", "n1", now()).unwrap();
        genconf_text(&home, "node", "n2", now()).unwrap();
        let k1 = PrivateKey::generate().public_key();
        let k2 = PrivateKey::generate().public_key();
        assert_eq!(
            add_text(&home, "node", "n1", &k1.to_string(), now())
                .unwrap()
                .action,
            AddAction::Added
        );
        assert_eq!(
            add_text(&home, "node", "n1", &k1.to_string(), now())
                .unwrap()
                .action,
            AddAction::Unchanged
        );
        let r = add_text(&home, "node", "n1", &k2.to_string(), now()).unwrap();
        assert_eq!(r.action, AddAction::Replaced);
        assert_eq!(r.previous_public_key, Some(k1));
        let conf = server_config(&home, ConfigForm::Wg).unwrap();
        assert!(conf.contains(&format!("PublicKey = {k2}\n")));
        assert!(!conf.contains(&k1.to_string()));
        assert!(conf.contains("AllowedIPs = 10.221.0.2/32\n"));
        assert!(!conf.contains("10.221.0.3"), "n2 has no key");
        assert!(!conf.contains("Address"));
        assert!(server_config(&home, ConfigForm::WgQuick)
            .unwrap()
            .contains("Address = 10.220.0.1/14\n"));
    }

    #[test]
    fn init_refuses_without_force_and_with_peers() {
        let (_d, home) = server("10.220.0.0/14");
        let req = InitRequest {
            public_endpoint: endpoint("1.2.3.4:5000"),
            network: None,
            force: false,
        };
        assert_eq!(
            init(&home, &req, now()).unwrap_err().kind(),
            crate::ErrorKind::Conflict
        );
        genconf_text(&home, "node", "n1", now()).unwrap();
        let forced = InitRequest {
            force: true,
            ..req.clone()
        };
        assert!(init(&home, &forced, now())
            .unwrap_err()
            .to_string()
            .contains("1 VPN peer"));
        removeconf_text(&home, "node", "n1").unwrap();
        let old = list(&home).unwrap().server.public_key;
        let r = init(&home, &forced, now()).unwrap();
        assert_eq!(r.replaced_public_key, Some(old));
        assert_eq!(r.server.endpoint, "1.2.3.4:5000");
        // Commands on a home without a server name the problem and create nothing.
        let dir = tempfile::tempdir().unwrap();
        let empty = Home::new(dir.path().join("none"));
        assert_eq!(
            genconf_text(&empty, "node", "n", now()).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert!(!empty.root().exists());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Genconf(PeerType, u8),
        Remove(PeerType, u8),
        Removeconf(PeerType, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let kind = prop_oneof![
            Just(PeerType::Management),
            Just(PeerType::Node),
            Just(PeerType::Researcher)
        ];
        (kind, 0u8..6, 0u8..10).prop_map(|(k, id, which)| match which {
            0..=5 => Op::Genconf(k, id),
            6..=7 => Op::Remove(k, id),
            _ => Op::Removeconf(k, id),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Against a model: first-free allocation inside the type's pool, no duplicates,
        /// explicit exhaustion (a /28 leaves two addresses per pool), `remove` keeps the address
        /// reserved, only `removeconf` frees it.
        #[test]
        fn allocation_matches_the_model(ops in proptest::collection::vec(op(), 1..30)) {
            let (_d, home) = server("10.9.0.0/28");
            let net = Ipv4Net::parse("10.9.0.0/28").unwrap();
            let mut model: BTreeMap<(PeerType, u8), u32> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Genconf(k, id) => {
                        let r = genconf_text(&home, k.as_str(), &format!("p{id}"), now());
                        let (lo, hi) = net.allocatable(k);
                        let used: BTreeSet<u32> = model.iter().filter(|((mk, _), _)| *mk == k).map(|(_, a)| *a).collect();
                        let expected = (lo..=hi).find(|a| !used.contains(a));
                        match (model.contains_key(&(k, id)), expected) {
                            (true, _) => prop_assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::Conflict),
                            (false, None) => {
                                let e = r.unwrap_err();
                                prop_assert!(e.to_string().contains("is full"), "{}", e);
                            }
                            (false, Some(a)) => {
                                prop_assert_eq!(u32::from(r.unwrap().address), a);
                                model.insert((k, id), a);
                            }
                        }
                    }
                    Op::Remove(k, id) => {
                        let r = remove_text(&home, k.as_str(), &format!("p{id}"), now());
                        prop_assert_eq!(r.is_ok(), model.contains_key(&(k, id)));
                    }
                    Op::Removeconf(k, id) => {
                        let r = removeconf_text(&home, k.as_str(), &format!("p{id}"));
                        prop_assert_eq!(r.is_ok(), model.remove(&(k, id)).is_some());
                    }
                }
                let l = list(&home).unwrap();
                let mut seen = BTreeSet::new();
                for p in &l.peers {
                    prop_assert!(seen.insert(p.address), "duplicate {}", p.address);
                    let (lo, hi) = net.allocatable(p.kind);
                    prop_assert!((lo..=hi).contains(&u32::from(p.address)));
                    prop_assert!(p.config_path.is_file());
                }
                prop_assert_eq!(l.peers.len(), model.len());
            }
        }
    }
}
