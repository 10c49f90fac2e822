//! The WireGuard VPN of a deployment: the server's peer registry and the configurations of the
//! server and of its peers.
//!
//! The same shape as Fed-BioMed's `configure_peer.py` (see the README, "VPN and containers"), made
//! correct:
//! - **server side** ([`server`]): `init` makes the server's key pair and records its public
//!   address and the VPN network; `genconf` allocates the first free address of the peer type's
//!   pool, makes a pre-shared key and writes the peer's `config.env` (Fed-BioMed's template);
//!   `add`/`remove` set or clear the peer's public key; `removeconf` deletes the peer and frees its
//!   address; [`server::server_config`] renders the server's WireGuard configuration. Every change is
//!   one store transaction, and files are replaced atomically, so a refused command changes nothing.
//! - **peer side** ([`client`]): `keygen` makes the peer's key pair (the private key never leaves
//!   the peer), and [`client::client_config`] turns a `config.env` into the peer's WireGuard
//!   configuration.
//!
//! Layout under the home directory:
//! ```text
//! store.sqlite                          vpn_server and vpn_peers tables (server side)
//! vpn/                                  0700
//!   peers/<type>/<id>/config.env        a peer's configuration (0600; holds its pre-shared key)
//!   wg.key, wg.pub                      this peer's key pair (peer side; wg.key 0600)
//! ```

pub mod client;
pub mod config_env;
pub mod keys;
pub mod net;
pub mod server;
pub mod wgconf;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::home::Home;

/// Default UDP port of the server (Fed-BioMed's `VPN_SERVER_PORT`).
pub const DEFAULT_PORT: u16 = 51820;
/// Keepalive interval peers use towards the server, in seconds (as Fed-BioMed's clients).
pub const PERSISTENT_KEEPALIVE: u16 = 25;
/// MTU of the tunnel interface in the wg-quick form (as Fed-BioMed's clients).
pub const MTU: u16 = 1420;
/// Longest peer id accepted.
pub const MAX_PEER_ID_LEN: usize = 64;

/// The kind of a VPN peer, which decides its address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerType {
    /// Services of the deployment (mqtt, restful): part 0 of the network.
    Management,
    /// Hospital nodes: part 1.
    Node,
    /// Researchers: part 2.
    Researcher,
}

impl PeerType {
    /// Every type, in pool order.
    pub const ALL: [PeerType; 3] = [PeerType::Management, PeerType::Node, PeerType::Researcher];

    /// The name used on the command line and in paths.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Management => "management",
            PeerType::Node => "node",
            PeerType::Researcher => "researcher",
        }
    }

    /// Which quarter of the VPN network is this type's pool.
    pub fn pool_index(self) -> u8 {
        match self {
            PeerType::Management => 0,
            PeerType::Node => 1,
            PeerType::Researcher => 2,
        }
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeerType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PeerType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!("unknown VPN peer type `{}`", s.escape_debug()))
                    .with_hint("the peer types are management, node and researcher")
            })
    }
}

impl Serialize for PeerType {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A VPN peer id: 1–64 characters among letters, digits, `_`, `.` and `-` (it names a directory),
/// not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(String);

impl PeerName {
    /// Validates a peer id.
    pub fn parse(s: &str) -> Result<Self> {
        let hint = "a VPN peer id is 1 to 64 letters, digits, `_`, `.` or `-` (e.g. researcher1, NODETAG, node_7c1e…)";
        if s.is_empty() {
            return Err(Error::invalid("VPN peer id is empty").with_hint(hint));
        }
        if s.len() > MAX_PEER_ID_LEN {
            return Err(Error::invalid(format!(
                "VPN peer id is {} bytes long, the limit is {MAX_PEER_ID_LEN}",
                s.len()
            ))
            .with_hint(hint));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(Error::invalid(format!(
                "VPN peer id `{}` contains the character {bad:?}",
                s.escape_debug()
            ))
            .with_hint(hint));
        }
        if s == "." || s == ".." {
            return Err(Error::invalid(format!("VPN peer id `{s}` is not allowed")).with_hint(hint));
        }
        Ok(PeerName(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PeerName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `<home>/vpn/`.
pub fn vpn_dir(home: &Home) -> PathBuf {
    home.root().join("vpn")
}

/// `<home>/vpn/peers/`.
pub fn peers_dir(home: &Home) -> PathBuf {
    vpn_dir(home).join("peers")
}

/// `<home>/vpn/peers/<type>/<id>/`.
pub fn peer_dir(home: &Home, kind: PeerType, name: &PeerName) -> PathBuf {
    peers_dir(home).join(kind.as_str()).join(name.as_str())
}

/// `<home>/vpn/peers/<type>/<id>/config.env`.
pub fn peer_config_path(home: &Home, kind: PeerType, name: &PeerName) -> PathBuf {
    peer_dir(home, kind, name).join("config.env")
}

/// `<home>/vpn/wg.key` (a peer's private key).
pub fn private_key_path(home: &Home) -> PathBuf {
    vpn_dir(home).join("wg.key")
}

/// `<home>/vpn/wg.pub` (a peer's public key).
pub fn public_key_path(home: &Home) -> PathBuf {
    vpn_dir(home).join("wg.pub")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_types_and_names() {
        assert_eq!("node".parse::<PeerType>().unwrap(), PeerType::Node);
        let e = "nodes".parse::<PeerType>().unwrap_err();
        assert!(e.to_string().contains("unknown VPN peer type `nodes`"));
        assert!(PeerName::parse("NODETAG").is_ok());
        assert!(PeerName::parse("node_7c1e-a.b").is_ok());
        assert!(PeerName::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "..", ".", "a/b", "a b", "é", &"a".repeat(65)] {
            assert!(PeerName::parse(bad).is_err(), "{bad:?}");
        }
    }
}
