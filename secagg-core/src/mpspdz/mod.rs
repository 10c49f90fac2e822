//! MP-SPDZ support: what [`crate::engine::MpSpdzEngine`] (the negotiation run through MP-SPDZ
//! v0.3.4's `shamir-party.x`) needs to prepare a run and supervise the process, and the doctor.
//!
//! - [`locate`]: the MP-SPDZ build (`--mpspdz-root` / `MPSPDZ_ROOT`);
//! - [`program`]: the `server_key` program source and its compile cache per (n, prime);
//! - [`workdir`]: the per-run directory (`Programs/`, `Player-Data/`, ip file, input);
//! - [`hashlink`]: OpenSSL subject-hash links computed in Rust;
//! - [`certcheck`]: MP-SPDZ v0.3.4's certificate checks, applied before launching;
//! - [`errors`]: MP-SPDZ's failure lines mapped to error kinds;
//! - [`output`]: parsing the researcher's output and lifting it to the integer server key;
//! - [`doctor`]: `secagg mpspdz doctor` (its self-test runs the engine, so it is the one part of
//!   this module that depends on [`crate::engine`]).
//!
//! The engine itself lives in [`crate::engine::mpspdz`], beside the native one.
//!
//! The process itself is run by [`crate::supervise`].

pub mod certcheck;
pub mod doctor;
pub mod errors;
pub mod hashlink;
pub mod locate;
pub mod output;
pub mod program;
pub mod workdir;

/// The engine, at its old path (it lives in [`crate::engine::mpspdz`]).
pub use crate::engine::MpSpdzEngine;
pub use locate::MpSpdzRoot;
