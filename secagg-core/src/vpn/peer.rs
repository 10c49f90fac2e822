//! VPN peer identities: the peer type (which decides the address pool) and the peer id.
//!
//! A leaf module: it uses nothing of the crate but its errors, so that the store's VPN tables and
//! the VPN server can both use it (see the [`crate::vpn`] module docs).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

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

impl FromStr for PeerName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PeerName::parse(s)
    }
}

impl Serialize for PeerName {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
