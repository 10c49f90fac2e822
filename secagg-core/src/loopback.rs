//! Free TCP ports on 127.0.0.1, for federations that run on one machine: `secagg demo`, the MP-SPDZ
//! doctor's self-test, tests and benchmarks.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::{Error, Result};

/// Asks the OS for `n` free TCP ports on 127.0.0.1. The ports are released before returning, so
/// another program could take one in between; the negotiation then fails with a clear bind error.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("while looking for free loopback ports", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("while looking for free loopback ports", e))
}
