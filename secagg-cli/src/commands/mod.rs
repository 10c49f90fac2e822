//! One module per command group; each parses into an args struct and calls one core function.

pub mod certificate;
pub mod context;
pub mod demo;
pub mod identity;
pub mod init;
pub mod negotiate;
