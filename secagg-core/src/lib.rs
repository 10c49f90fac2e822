//! `secagg-core`: secure-aggregation setup for a federated-learning federation.
//!
//! A federation is one researcher and N ≥ 2 nodes. Each party has an identity (party id, key,
//! X.509 certificate, MPC endpoint, see [`identity`]), registers the other parties' certificates
//! in its local store ([`store`], [`registration`]), and then runs a key negotiation with them
//! ([`engine`]) so that the researcher holds a server key `sk0` and each node a user key `sk_i`
//! with `sk0 + Σ sk_i = 0` over the integers.
//!
//! This crate does no printing and no argument parsing; the `secagg` binary is a thin layer over it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certificate;
pub mod demo;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod fault;
pub mod fedbiomed;
pub mod field;
pub mod fs_secure;
pub mod home;
pub mod identity;
pub mod loopback;
pub mod mpspdz;
pub mod party;
pub mod registration;
pub mod session;
pub mod store;
pub mod supervise;
pub mod transport;
pub mod vpn;

pub use error::{Error, ErrorKind, Result};
pub use party::{Endpoint, Host, PartyId, Role, SessionId};
