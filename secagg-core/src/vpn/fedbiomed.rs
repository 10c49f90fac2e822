//! Adopting a Fed-BioMed v4 VPN server's state (`secagg vpn import-fedbiomed DIR`).
//!
//! Fed-BioMed's vpnserver container keeps its state in `run_mounts/config/`:
//! ```text
//! config.env                              VPN_IP, VPN_SUBNET_PREFIX, VPN_SERVER_PUBLIC_ADDR,
//!                                         VPN_SERVER_PORT, VPN_{MANAGEMENT,NODE,RESEARCHER}_IP_ASSIGN
//! wireguard/wg0.conf                      `wg showconf wg0`: the server's private key, one [Peer]
//!                                         per added peer (public key, pre-shared key, address/32)
//! config_peers/<type>/<id>/config.env     each peer's configuration (its address and pre-shared key)
//! ip_assign/last_ip_assign_<type>         Fed-BioMed's address counters (not needed: secagg
//!                                         allocates first-free)
//! ```
//! Everything is read and cross-checked first; the server key, the peers (with their addresses,
//! pre-shared keys and public keys) and their `config.env` files are then written in one store
//! transaction. Any inconsistency refuses the whole import, naming the file, and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::fs_secure::{self, SECRET_FILE_MODE};
use crate::home::Home;
use crate::party::Endpoint;
use crate::store::vpn_peers::{self, VpnPeerRecord};
use crate::store::vpn_server::{self, VpnServerRecord};
use crate::store::Store;
use crate::vpn::config_env::{self, PeerConfig};
use crate::vpn::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::vpn::net::Ipv4Net;
use crate::vpn::{self as vpn, PeerName, PeerType};

/// Largest file read from a Fed-BioMed VPN directory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One adopted peer (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct ImportedPeer {
    /// Peer type.
    #[serde(rename = "type")]
    pub kind: PeerType,
    /// Peer id.
    pub id: PeerName,
    /// Its VPN address.
    pub address: Ipv4Addr,
    /// Its public key, when the server's `wg0.conf` had one (else it waits for `vpn add`).
    pub public_key: Option<PublicKey>,
    /// Its `config.env` in this home.
    pub config_path: PathBuf,
}

/// What `vpn import-fedbiomed` adopted.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    /// The directory read (Fed-BioMed's `run_mounts/config/`).
    pub source: PathBuf,
    /// The server's public key (the one every peer's `config.env` names).
    pub public_key: PublicKey,
    /// Where peers reach the server.
    pub endpoint: String,
    /// The VPN network.
    pub network: Ipv4Net,
    /// The peers, by type then id.
    pub peers: Vec<ImportedPeer>,
}

/// The `config` directory of a Fed-BioMed vpnserver: `dir` itself, or `dir/run_mounts/config`
/// when `dir` is the vpnserver's directory.
fn config_dir(dir: &Path) -> Result<PathBuf> {
    for candidate in [dir.to_path_buf(), dir.join("run_mounts").join("config")] {
        if candidate.join("config.env").is_file() {
            return Ok(candidate);
        }
    }
    if !dir.exists() {
        return Err(Error::not_found(format!(
            "`{}` does not exist",
            dir.display()
        )));
    }
    Err(Error::not_found(format!(
        "`{}` is not a Fed-BioMed VPN server directory: no `config.env` in it nor in `run_mounts/config/`",
        dir.display()
    ))
    .with_hint("give the vpnserver's `run_mounts/config/` directory (with config.env, wireguard/wg0.conf, config_peers/)"))
}

fn read_text(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(fs_secure::read_limited(path, MAX_FILE_BYTES, what)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::invalid(format!("`{}` is not UTF-8 text", path.display())))?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn inconsistent(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("`{}`: {msg}", path.display())).with_hint(
        "the Fed-BioMed VPN server's files disagree; fix or remove that file and import again",
    )
}

/// The server's settings from its `config.env`.
struct ServerEnv {
    network: Ipv4Net,
    endpoint: Endpoint,
}

fn read_server_env(path: &Path) -> Result<ServerEnv> {
    let text = read_text(path, "Fed-BioMed VPN server config.env")?;
    let vars = config_env::parse_vars(&text, &path.display().to_string())?;
    let get = |name: &str| -> Result<&str> {
        vars.get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| inconsistent(path, format!("{name} is not set")))
    };
    let vpn_ip: Ipv4Addr = get("VPN_IP")?
        .parse()
        .map_err(|_| inconsistent(path, "VPN_IP is not an IPv4 address"))?;
    let prefix: u8 = get("VPN_SUBNET_PREFIX")?
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| inconsistent(path, "VPN_SUBNET_PREFIX is not a prefix length"))?;
    let base = Ipv4Addr::from(u32::from(vpn_ip) & (u32::MAX << (32 - u32::from(prefix))));
    let network = Ipv4Net::parse_vpn(&format!("{base}/{prefix}"))
        .map_err(|e| e.context(format!("`{}`: VPN_IP/VPN_SUBNET_PREFIX", path.display())))?;
    if network.server_address() != vpn_ip {
        return Err(inconsistent(
            path,
            format!(
                "VPN_IP {vpn_ip} is not the network's first address {} (secagg's server address)",
                network.server_address()
            ),
        ));
    }
    for kind in PeerType::ALL {
        let name = format!("VPN_{}_IP_ASSIGN", kind.as_str().to_uppercase());
        let assign = Ipv4Net::parse(get(&name)?)
            .map_err(|e| e.context(format!("`{}`: {name}", path.display())))?;
        if assign != network.pool(kind) {
            return Err(inconsistent(
                path,
                format!(
                    "{name} is {assign}, secagg's {kind} pool of {network} is {} (the network split in four, as Fed-BioMed's defaults)",
                    network.pool(kind)
                ),
            ));
        }
    }
    let addr = get("VPN_SERVER_PUBLIC_ADDR")?;
    let port = vars
        .get("VPN_SERVER_PORT")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map_or_else(|| vpn::DEFAULT_PORT.to_string(), str::to_owned);
    let endpoint = config_env::parse_endpoint(&format!("{addr}:{port}"), None).map_err(|e| {
        e.context(format!(
            "`{}`: VPN_SERVER_PUBLIC_ADDR:VPN_SERVER_PORT",
            path.display()
        ))
    })?;
    Ok(ServerEnv { network, endpoint })
}

/// A `[Peer]` of `wg0.conf`.
struct WgPeer {
    public_key: PublicKey,
    preshared_key: PresharedKey,
    address: Ipv4Addr,
}

/// `wg0.conf` as `wg showconf` writes it.
struct WgConf {
    private_key: PrivateKey,
    listen_port: Option<u16>,
    peers: Vec<WgPeer>,
}

fn read_wg_conf(path: &Path) -> Result<WgConf> {
    let text = read_text(path, "Fed-BioMed VPN server wg0.conf")?;
    enum Section {
        None,
        Interface,
        Peer(BTreeMap<String, String>),
    }
    let mut private_key = None;
    let mut listen_port = None;
    let mut raw_peers: Vec<(usize, BTreeMap<String, String>)> = Vec::new();
    let mut section = Section::None;
    let mut section_line = 0;
    let finish =
        |section: Section, line: usize, peers: &mut Vec<(usize, BTreeMap<String, String>)>| {
            if let Section::Peer(p) = section {
                peers.push((line, p));
            }
        };
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.eq_ignore_ascii_case("[Interface]") {
            finish(
                std::mem::replace(&mut section, Section::Interface),
                section_line,
                &mut raw_peers,
            );
            section_line = i + 1;
            continue;
        }
        if line.eq_ignore_ascii_case("[Peer]") {
            finish(
                std::mem::replace(&mut section, Section::Peer(BTreeMap::new())),
                section_line,
                &mut raw_peers,
            );
            section_line = i + 1;
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .ok_or_else(|| inconsistent(path, format!("line {} is not `Key = value`", i + 1)))?;
        match &mut section {
            Section::None => {
                return Err(inconsistent(
                    path,
                    format!("line {} is outside any section", i + 1),
                ))
            }
            Section::Interface => match key.as_str() {
                "privatekey" => {
                    private_key = Some(PrivateKey::parse_named(
                        &value,
                        &format!("PrivateKey in `{}`", path.display()),
                    )?)
                }
                "listenport" => {
                    listen_port = Some(value.parse::<u16>().map_err(|_| {
                        inconsistent(path, format!("line {}: ListenPort is not a port", i + 1))
                    })?)
                }
                "fwmark" => {}
                other => {
                    return Err(inconsistent(
                        path,
                        format!("line {}: unexpected `{other}` in [Interface]", i + 1),
                    ))
                }
            },
            Section::Peer(p) => {
                if p.insert(key.clone(), value).is_some() {
                    return Err(inconsistent(
                        path,
                        format!("line {}: `{key}` twice in one [Peer]", i + 1),
                    ));
                }
            }
        }
    }
    finish(section, section_line, &mut raw_peers);
    let private_key =
        private_key.ok_or_else(|| inconsistent(path, "[Interface] has no PrivateKey"))?;
    let mut peers = Vec::new();
    for (line, p) in raw_peers {
        let at = |what: &str| format!("[Peer] at line {line}: {what}");
        let get = |k: &str, name: &str| {
            p.get(k)
                .ok_or_else(|| inconsistent(path, at(&format!("no {name}"))))
        };
        let public_key = PublicKey::parse_named(get("publickey", "PublicKey")?, "PublicKey")
            .map_err(|e| e.context(format!("`{}`: {}", path.display(), at(""))))?;
        let preshared_key =
            PresharedKey::parse_named(get("presharedkey", "PresharedKey")?, "PresharedKey")
                .map_err(|e| e.context(format!("`{}`: {}", path.display(), at(""))))?;
        let allowed = get("allowedips", "AllowedIPs")?;
        let address = allowed
            .strip_suffix("/32")
            .and_then(|a| a.trim().parse::<Ipv4Addr>().ok())
            .ok_or_else(|| {
                inconsistent(
                    path,
                    at(&format!(
                        "AllowedIPs `{allowed}` is not one IPv4 address/32 (as Fed-BioMed's `add` sets)"
                    )),
                )
            })?;
        for k in p.keys() {
            if !matches!(
                k.as_str(),
                "publickey" | "presharedkey" | "allowedips" | "endpoint" | "persistentkeepalive"
            ) {
                return Err(inconsistent(path, at(&format!("unexpected `{k}`"))));
            }
        }
        peers.push(WgPeer {
            public_key,
            preshared_key,
            address,
        });
    }
    Ok(WgConf {
        private_key,
        listen_port,
        peers,
    })
}

/// A peer's `config.env`, checked against the server's settings.
struct PeerEnv {
    kind: PeerType,
    name: PeerName,
    address: Ipv4Addr,
    preshared_key: PresharedKey,
    path: PathBuf,
}

fn read_peer_env(
    path: &Path,
    kind: PeerType,
    name: PeerName,
    server: &ServerEnv,
    server_key: &PublicKey,
) -> Result<PeerEnv> {
    let source = path.display().to_string();
    let text = read_text(path, "Fed-BioMed VPN peer config.env")?;
    let vars = config_env::parse_vars(&text, &source)?;
    let s = config_env::client_settings(&vars, &source)?;
    if s.server_public_key != *server_key {
        return Err(inconsistent(
            path,
            format!(
                "VPN_SERVER_PUBLIC_KEY {} is not the public key of wg0.conf's private key ({server_key})",
                s.server_public_key
            ),
        ));
    }
    if s.allowed_ips != server.network || s.prefix != server.network.prefix() {
        return Err(inconsistent(
            path,
            format!(
                "VPN_SERVER_ALLOWED_IPS {} / VPN_SUBNET_PREFIX {} do not match the server's network {}",
                s.allowed_ips, s.prefix, server.network
            ),
        ));
    }
    if s.server_endpoint != server.endpoint {
        return Err(inconsistent(
            path,
            format!(
                "VPN_SERVER_ENDPOINT {} is not the server's VPN_SERVER_PUBLIC_ADDR:VPN_SERVER_PORT {}",
                s.server_endpoint, server.endpoint
            ),
        ));
    }
    let (lo, hi) = server.network.allocatable(kind);
    let a = u32::from(s.vpn_ip);
    if a < lo || a > hi {
        return Err(inconsistent(
            path,
            format!(
                "VPN_IP {} is outside the {kind} addresses {}–{}",
                s.vpn_ip,
                Ipv4Addr::from(lo),
                Ipv4Addr::from(hi)
            ),
        ));
    }
    if let Some(id) = &s.fedbiomed_id {
        if id.trim() != name.as_str() {
            return Err(inconsistent(
                path,
                format!("its Fed-BioMed id `{id}` is not its directory's name `{name}`"),
            ));
        }
    }
    Ok(PeerEnv {
        kind,
        name,
        address: s.vpn_ip,
        preshared_key: s.preshared_key,
        path: path.to_path_buf(),
    })
}

fn read_peers(config: &Path, server: &ServerEnv, server_key: &PublicKey) -> Result<Vec<PeerEnv>> {
    let root = config.join("config_peers");
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    let list = |dir: &Path| -> Result<Vec<(String, PathBuf)>> {
        let mut v = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| Error::io_path("listing", dir, e))? {
            let e = e.map_err(|e| Error::io_path("listing", dir, e))?;
            v.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
        v.sort();
        Ok(v)
    };
    for (type_name, type_dir) in list(&root)? {
        let kind: PeerType = type_name.parse().map_err(|e: Error| {
            inconsistent(&type_dir, format!("not a peer type directory ({e})"))
        })?;
        if !type_dir.is_dir() {
            return Err(inconsistent(&type_dir, "is not a directory"));
        }
        for (id, peer_dir) in list(&type_dir)? {
            let name = PeerName::parse(&id)
                .map_err(|e| inconsistent(&peer_dir, format!("not a peer id ({e})")))?;
            let path = peer_dir.join("config.env");
            if !path.is_file() {
                return Err(inconsistent(&peer_dir, "has no config.env"));
            }
            out.push(read_peer_env(&path, kind, name, server, server_key)?);
        }
    }
    Ok(out)
}

/// `vpn import-fedbiomed DIR`: adopts the Fed-BioMed VPN server in `dir` (its `run_mounts/config/`
/// directory, or the vpnserver directory holding it) as this home's VPN server, keeping its key,
/// its peers' addresses, pre-shared keys and public keys, so that every existing peer keeps
/// working. Refuses when this home already has a VPN server.
pub fn import_server(home: &Home, dir: &Path, now: OffsetDateTime) -> Result<Imported> {
    let config = config_dir(dir)?;
    let server_env = read_server_env(&config.join("config.env"))?;
    let wg_path = config.join("wireguard").join("wg0.conf");
    if !wg_path.is_file() {
        return Err(Error::not_found(format!("`{}` does not exist", wg_path.display()))
            .with_hint("the server's key is in wireguard/wg0.conf; start Fed-BioMed's vpnserver once, or give the right directory"));
    }
    let wg = read_wg_conf(&wg_path)?;
    let server_key = wg.private_key.public_key();
    if let Some(p) = wg.listen_port {
        if p != server_env.endpoint.port {
            return Err(inconsistent(
                &wg_path,
                format!(
                    "ListenPort {p} is not config.env's VPN_SERVER_PORT {}",
                    server_env.endpoint.port
                ),
            ));
        }
    }
    let peers = read_peers(&config, &server_env, &server_key)?;
    // Addresses are unique among config.env files.
    let mut by_address: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        if let Some(j) = by_address.insert(p.address, i) {
            return Err(inconsistent(
                &p.path,
                format!(
                    "VPN_IP {} is also the address of `{}`",
                    p.address,
                    peers[j].path.display()
                ),
            ));
        }
    }
    // Every wg0.conf peer is one config.env's peer, with its pre-shared key.
    let mut keys: Vec<Option<PublicKey>> = vec![None; peers.len()];
    let mut seen_keys: HashMap<PublicKey, Ipv4Addr> = HashMap::new();
    for w in &wg.peers {
        if w.public_key == server_key {
            return Err(inconsistent(
                &wg_path,
                format!("peer {} has the server's own public key", w.address),
            ));
        }
        if let Some(a) = seen_keys.insert(w.public_key, w.address) {
            return Err(inconsistent(
                &wg_path,
                format!(
                    "public key {} belongs to two peers ({a} and {})",
                    w.public_key, w.address
                ),
            ));
        }
        let i = *by_address.get(&w.address).ok_or_else(|| {
            inconsistent(
                &wg_path,
                format!(
                    "peer {} (public key {}) has no config.env under config_peers/",
                    w.address, w.public_key
                ),
            )
        })?;
        if keys[i].is_some() {
            return Err(inconsistent(
                &wg_path,
                format!("two [Peer] sections have AllowedIPs {}/32", w.address),
            ));
        }
        if w.preshared_key.to_base64() != peers[i].preshared_key.to_base64() {
            return Err(inconsistent(
                &peers[i].path,
                format!(
                    "VPN_SERVER_PSK is not the pre-shared key wg0.conf has for {}",
                    w.address
                ),
            ));
        }
        keys[i] = Some(w.public_key);
    }

    fs_secure::create_private_dir(home.root())?;
    fs_secure::create_private_dir(&vpn::vpn_dir(home))?;
    let peers_dir = vpn::peers_dir(home);
    let peers_dir_existed = peers_dir.exists();
    let mut store = Store::create(&home.store_path())?;
    let mut written: Vec<PathBuf> = Vec::new();
    let result = store.write(|tx| {
        if let Some(existing) = vpn_server::get(tx)? {
            return Err(Error::conflict(format!(
                "a VPN server is already set up in `{}` (public key {})",
                home.root().display(),
                existing.public_key
            ))
            .with_hint("import into a new home (--home DIR)"));
        }
        if vpn_peers::count(tx)? > 0 {
            return Err(Error::conflict("this home already has VPN peers"));
        }
        let record = VpnServerRecord {
            public_key: server_key,
            private_key: wg.private_key.clone(),
            public_endpoint: server_env.endpoint.clone(),
            network: server_env.network,
            created_at: now,
        };
        vpn_server::put(tx, &record)?;
        let mut out = Vec::new();
        for (p, key) in peers.iter().zip(&keys) {
            let rec = VpnPeerRecord {
                kind: p.kind,
                name: p.name.clone(),
                address: p.address,
                preshared_key: p.preshared_key.clone(),
                public_key: *key,
                config_path: format!("vpn/peers/{}/{}/config.env", p.kind, p.name),
                created_at: now,
                updated_at: now,
            };
            vpn_peers::insert(tx, &rec)?;
            let dir = vpn::peer_dir(home, p.kind, &p.name);
            let path = vpn::peer_config_path(home, p.kind, &p.name);
            if path.exists() {
                return Err(Error::conflict(format!(
                    "`{}` exists already",
                    path.display()
                )));
            }
            let text = Zeroizing::new(config_env::render(&PeerConfig {
                kind: p.kind,
                name: p.name.clone(),
                server_vpn_ip: server_env.network.server_address(),
                vpn_ip: p.address,
                network: server_env.network,
                server_endpoint: server_env.endpoint.clone(),
                server_public_key: server_key,
                preshared_key: p.preshared_key.clone(),
            }));
            fs_secure::create_private_dir(&dir)?;
            fs_secure::write_atomic(&path, text.as_bytes(), SECRET_FILE_MODE)?;
            written.push(path.clone());
            out.push(ImportedPeer {
                kind: p.kind,
                id: p.name.clone(),
                address: p.address,
                public_key: *key,
                config_path: path,
            });
        }
        out.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        Ok(out)
    });
    match result {
        Ok(peers) => Ok(Imported {
            source: config,
            public_key: server_key,
            endpoint: server_env.endpoint.to_string(),
            network: server_env.network,
            peers,
        }),
        Err(e) => {
            // The transaction was rolled back; take back the files it wrote.
            for path in &written {
                let _ = fs::remove_file(path);
                if let Some(d) = path.parent() {
                    let _ = fs::remove_dir(d);
                    if let Some(t) = d.parent() {
                        let _ = fs::remove_dir(t);
                    }
                }
            }
            if !peers_dir_existed {
                let _ = fs::remove_dir(&peers_dir);
            }
            Err(e)
        }
    }
}
