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
//!   configuration; `keygen --import` adopts an existing private key.
//! - **migration** ([`fedbiomed`]): adopting a Fed-BioMed v4 VPN server's key, peers, addresses
//!   and pre-shared keys.
//!
//! The domain types ([`peer`], [`keys`], [`net`]) are leaves: they use nothing of the crate but
//! its errors, so the store's VPN tables (the crate-private `store::vpn_server` and `store::vpn_peers`)
//! and the server logic both build on them without depending on each other's internals.
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
pub mod fedbiomed;
pub mod keys;
pub mod net;
pub mod peer;
pub mod server;
pub mod wgconf;

use std::path::PathBuf;

use crate::home::Home;

pub use peer::{PeerName, PeerType, MAX_PEER_ID_LEN};

/// Default UDP port of the server (Fed-BioMed's `VPN_SERVER_PORT`).
pub const DEFAULT_PORT: u16 = 51820;
/// Keepalive interval peers use towards the server, in seconds (as Fed-BioMed's clients).
pub const PERSISTENT_KEEPALIVE: u16 = 25;
/// MTU of the tunnel interface in the wg-quick form (as Fed-BioMed's clients).
pub const MTU: u16 = 1420;
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
