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

/// Where [`free_ports_below_ephemeral`] probes next (0: not started yet).
static NEXT_BELOW_EPHEMERAL: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// First port [`free_ports_below_ephemeral`] probes from (plus an offset from the process id).
const BELOW_EPHEMERAL_START: u16 = 10_000;

/// End (exclusive) of what [`free_ports_below_ephemeral`] probes: well below the kernel's
/// ephemeral range (32768 and up by default); the end-to-end tests' own allocator probes
/// 20000–32000, so the two never hand out the same port in one test process.
const BELOW_EPHEMERAL_END: u16 = 20_000;

/// `n` TCP ports free now on every address, below the kernel's ephemeral range, for the parties
/// of a federation on one machine that listen later: an outgoing connection (this process makes
/// many: TLS to every agent) takes its local port from the ephemeral range, so it can never take
/// one of these between now and the bind, as it can a port [`free_ports`] found. Each call in a
/// process probes on from where the last stopped (from a place derived from the process id, so
/// that processes rarely probe the same ports); ports found taken are skipped. Falls back on
/// [`free_ports`] when the range is used up.
pub fn free_ports_below_ephemeral(n: usize) -> Result<Vec<u16>> {
    use std::sync::atomic::Ordering;
    let start = BELOW_EPHEMERAL_START + (std::process::id() % 400) as u16 * 20;
    let _ = NEXT_BELOW_EPHEMERAL.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let port = NEXT_BELOW_EPHEMERAL.fetch_add(1, Ordering::SeqCst);
        if port >= BELOW_EPHEMERAL_END {
            let rest = free_ports(n - out.len())?;
            out.extend(rest);
            break;
        }
        if TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            out.push(port);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_below_the_ephemeral_range_are_distinct_and_bindable() {
        let a = free_ports_below_ephemeral(5).unwrap();
        let b = free_ports_below_ephemeral(5).unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        assert!(all.iter().all(|p| *p < 32_768), "{all:?}");
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 10);
        for p in a {
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).unwrap();
        }
    }
}
