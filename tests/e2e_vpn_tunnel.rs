//! End to end over a real WireGuard tunnel (being written).
