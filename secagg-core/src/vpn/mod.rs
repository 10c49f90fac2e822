//! WireGuard VPN peer management (under construction).
