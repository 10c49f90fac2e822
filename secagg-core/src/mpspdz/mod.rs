//! The MP-SPDZ engine: the negotiation run through MP-SPDZ v0.3.4's `shamir-party.x`, with secagg
//! preparing everything from the store and supervising the process.
//!
//! - [`locate`]: the MP-SPDZ build (`--mpspdz-root` / `MPSPDZ_ROOT`);
//! - [`program`]: the `server_key` program source and its compile cache per (n, prime);
//! - [`workdir`]: the per-run directory (`Programs/`, `Player-Data/`, ip file, input);
//! - [`hashlink`]: OpenSSL subject-hash links computed in Rust;
//! - [`certcheck`]: MP-SPDZ v0.3.4's certificate checks, applied before launching;
//! - [`errors`]: MP-SPDZ's failure lines mapped to error kinds;
//! - [`output`]: parsing the researcher's output and lifting it to the integer server key;
//! - [`engine`]: [`MpSpdzEngine`], the [`crate::engine::Engine`] implementation;
//! - [`doctor`]: `secagg mpspdz doctor`.
//!
//! The process itself is run by [`crate::supervise`].

pub mod certcheck;
pub mod doctor;
pub mod engine;
pub mod errors;
pub mod hashlink;
pub mod locate;
pub mod output;
pub mod program;
pub mod workdir;

pub use engine::MpSpdzEngine;
pub use locate::MpSpdzRoot;
