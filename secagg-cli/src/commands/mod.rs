//! One module per command group; each parses into an args struct and calls one core function.

pub mod aggregate;
pub mod certificate;
pub mod context;
pub mod demo;
pub mod deploy;
pub mod identity;
pub mod init;
pub mod mpspdz;
pub mod negotiate;
pub mod roster;
pub mod vpn;
