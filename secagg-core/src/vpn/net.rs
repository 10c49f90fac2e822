//! IPv4 networks and the per-type address pools of the VPN.
//!
//! As in Fed-BioMed, the VPN network (default `10.220.0.0/14`) is split in four equal parts:
//! part 0 holds the server (network + 1) and the management pool (mqtt, restful), part 1 the node
//! pool, part 2 the researcher pool; part 3 is unused. Peers get addresses from their pool
//! starting at the pool's network address + 2.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::vpn::peer::PeerType;

/// The default VPN network, Fed-BioMed's `VPN_IP/VPN_SUBNET_PREFIX` = 10.220.0.1/14.
pub const DEFAULT_NETWORK: &str = "10.220.0.0/14";
/// Longest prefix accepted for the VPN network: a /28 leaves two addresses per pool.
pub const MAX_PREFIX: u8 = 28;
/// Shortest prefix accepted for the VPN network.
pub const MIN_PREFIX: u8 = 8;

/// An IPv4 network: a network address (host bits zero) and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: u32,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl Ipv4Net {
    /// The network `addr/prefix`; `addr` must have its host bits zero.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(Error::invalid(format!(
                "prefix length /{prefix} is larger than 32"
            )));
        }
        let a = u32::from(addr);
        if a & !mask(prefix) != 0 {
            let net = Ipv4Addr::from(a & mask(prefix));
            return Err(Error::invalid(format!(
                "`{addr}/{prefix}` is not a network address (host bits are set)"
            ))
            .with_hint(format!("did you mean {net}/{prefix}?")));
        }
        Ok(Ipv4Net { addr: a, prefix })
    }

    /// Parses `a.b.c.d/len`.
    pub fn parse(s: &str) -> Result<Self> {
        let hint = "give an IPv4 network such as 10.220.0.0/14";
        let (a, p) = s.trim().split_once('/').ok_or_else(|| {
            Error::invalid(format!(
                "`{}` is not a network (no /prefix)",
                s.escape_debug()
            ))
            .with_hint(hint)
        })?;
        let addr: Ipv4Addr = a.parse().map_err(|_| {
            Error::invalid(format!("`{}` is not an IPv4 address", a.escape_debug())).with_hint(hint)
        })?;
        let prefix: u8 = p.parse().map_err(|_| {
            Error::invalid(format!(
                "`{}` is not a prefix length (0–32)",
                p.escape_debug()
            ))
            .with_hint(hint)
        })?;
        Ipv4Net::new(addr, prefix)
    }

    /// Parses and checks that it can be a VPN network (prefix /8 to /28, private range not
    /// required).
    pub fn parse_vpn(s: &str) -> Result<Self> {
        let n = Ipv4Net::parse(s)?;
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&n.prefix) {
            return Err(Error::invalid(format!(
                "VPN network {n} has prefix /{}, secagg needs /{MIN_PREFIX} to /{MAX_PREFIX}",
                n.prefix
            ))
            .with_hint("the network is split in four pools of at least four addresses; use e.g. 10.220.0.0/14 (Fed-BioMed's)"));
        }
        Ok(n)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses (2^(32 − prefix)).
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    /// The last address of the network.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr | !mask(self.prefix))
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.addr
    }

    /// The address at `offset` from the network address, if inside.
    pub fn nth(&self, offset: u64) -> Option<Ipv4Addr> {
        (offset < self.size()).then(|| Ipv4Addr::from(self.addr + offset as u32))
    }

    /// Part `i` (0–3) of the network split in four equal parts.
    pub fn quarter(&self, i: u8) -> Ipv4Net {
        debug_assert!(i < 4 && self.prefix <= 30);
        let prefix = self.prefix + 2;
        Ipv4Net {
            addr: self.addr + (u32::from(i) << (32 - prefix)),
            prefix,
        }
    }

    /// The server's address: network + 1 (Fed-BioMed's `VPN_IP`).
    pub fn server_address(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr + 1)
    }

    /// The pool of `kind`: its network (as Fed-BioMed's `VPN_<TYPE>_IP_ASSIGN`).
    pub fn pool(&self, kind: PeerType) -> Ipv4Net {
        self.quarter(kind.pool_index())
    }

    /// The range of addresses allocated to peers of `kind`: pool network + 2 to the pool's last
    /// address, inclusive (as `u32`).
    pub fn allocatable(&self, kind: PeerType) -> (u32, u32) {
        let pool = self.pool(kind);
        (pool.addr + 2, u32::from(pool.last()))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ipv4Net::parse(s)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The first address of `range` (inclusive bounds) not in `used` (sorted ascending), if any.
pub fn first_free(range: (u32, u32), used: &[u32]) -> Option<u32> {
    let (lo, hi) = range;
    let mut candidate = lo;
    for &u in used {
        if u < candidate {
            continue;
        }
        if u > candidate {
            break;
        }
        if candidate == hi {
            return None;
        }
        candidate += 1;
    }
    (candidate <= hi && lo <= hi).then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedbiomed_plan() {
        let n = Ipv4Net::parse_vpn(DEFAULT_NETWORK).unwrap();
        assert_eq!(n.server_address().to_string(), "10.220.0.1");
        assert_eq!(n.pool(PeerType::Management).to_string(), "10.220.0.0/16");
        assert_eq!(n.pool(PeerType::Node).to_string(), "10.221.0.0/16");
        assert_eq!(n.pool(PeerType::Researcher).to_string(), "10.222.0.0/16");
        let (lo, hi) = n.allocatable(PeerType::Node);
        assert_eq!(Ipv4Addr::from(lo).to_string(), "10.221.0.2");
        assert_eq!(Ipv4Addr::from(hi).to_string(), "10.221.255.255");
        assert!(n.contains("10.223.1.1".parse().unwrap()));
        assert!(!n.contains("10.224.0.0".parse().unwrap()));
    }

    #[test]
    fn bad_networks() {
        let e = Ipv4Net::parse("10.220.0.1/14").unwrap_err();
        assert_eq!(e.hint(), Some("did you mean 10.220.0.0/14?"));
        assert!(Ipv4Net::parse("10.220.0.0").is_err());
        assert!(Ipv4Net::parse("10.220.0.0/33").is_err());
        assert!(Ipv4Net::parse("fd00::/64").is_err());
        assert!(Ipv4Net::parse_vpn("10.0.0.0/29").is_err());
        assert!(Ipv4Net::parse_vpn("10.0.0.0/7").is_err());
        let small = Ipv4Net::parse_vpn("10.9.0.0/28").unwrap();
        assert_eq!(small.allocatable(PeerType::Researcher), {
            let b = u32::from(Ipv4Addr::new(10, 9, 0, 8));
            (b + 2, b + 3)
        });
    }

    #[test]
    fn first_free_fills_gaps() {
        assert_eq!(first_free((5, 9), &[]), Some(5));
        assert_eq!(first_free((5, 9), &[5, 6, 8]), Some(7));
        assert_eq!(first_free((5, 9), &[1, 5, 6, 7, 8]), Some(9));
        assert_eq!(first_free((5, 9), &[5, 6, 7, 8, 9]), None);
        assert_eq!(first_free((5, 9), &[6, 7]), Some(5));
    }
}
