//! Listening on this party's endpoint: the error when the port cannot be bound, whose hint
//! depends on why (regression: an endpoint IP that is not on this host, EADDRNOTAVAIL, got the
//! "another program uses this port" hint, which sent admins looking for a process that did not
//! exist).

use std::net::SocketAddr;

use crate::error::Error;

/// The error of `who` failing to listen on `addr` for `what` with `e`, with the hint for that
/// kind of failure.
pub(crate) fn bind_error(who: &str, addr: SocketAddr, what: &str, e: &std::io::Error) -> Error {
    let message = format!("{who} cannot listen on {addr} for {what}: {e}");
    let ip = addr.ip();
    let port = addr.port();
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "another program (a `secagg negotiate`, another agent or another service) uses port {port}: stop it, or change this party's endpoint port (`secagg identity set-endpoint`; every peer must then register it again)"
        ),
        std::io::ErrorKind::AddrNotAvailable => format!(
            "{ip} is not an address of this machine (`ip -brief address` lists them): if it is the VPN address, bring the VPN interface up first; otherwise set this party's endpoint to an address of this machine (`secagg identity set-endpoint`; every peer must then register it again)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "port {port} is below 1024, which needs privileges: use a port of 1024 or more (`secagg identity set-endpoint`)"
        ),
        _ => "check this party's endpoint (`secagg identity show`) and the machine's network configuration".to_owned(),
    };
    Error::invalid(message).with_hint(hint)
}
