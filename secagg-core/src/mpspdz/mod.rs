//! MP-SPDZ support: what [`crate::engine::MpSpdzEngine`] (the negotiation run through MP-SPDZ
//! v0.3.4's `shamir-party.x`) needs to prepare a run and supervise the process, and the doctor.
//!
//! Public:
//! - [`locate`]: the MP-SPDZ build (`--mpspdz-root` / `MPSPDZ_ROOT`);
//! - [`doctor`]: `secagg mpspdz doctor` (its self-test runs the engine, so it is the one part of
//!   this module that depends on [`crate::engine`]).
//!
//! Crate-private, used by the engine:
//! - `program`: the `server_key` program source and its compile cache per (n, prime);
//! - `workdir`: the per-run directory (`Programs/`, `Player-Data/`, ip file, input);
//! - `hashlink`: OpenSSL subject-hash links computed in Rust;
//! - `certcheck`: MP-SPDZ v0.3.4's certificate checks, applied before launching;
//! - `errors`: MP-SPDZ's failure lines mapped to error kinds;
//! - `output`: parsing the researcher's output and lifting it to the integer server key.
//!
//! The engine itself lives in `engine/mpspdz.rs`, beside the native one, and the process is run
//! by the crate's process supervisor.

pub(crate) mod certcheck;
pub mod doctor;
pub(crate) mod errors;
pub(crate) mod hashlink;
pub mod locate;
pub(crate) mod output;
pub(crate) mod program;
pub(crate) mod workdir;

pub use locate::MpSpdzRoot;
pub use workdir::ip_file_line;

/// For `benches/mpspdz_prepare.rs` only, not part of the API: the bench times secagg's own work
/// around `shamir-party.x` (the compile cache and the run directory), which lives in this
/// module's crate-private internals, and a bench can reach only the public API.
#[doc(hidden)]
pub mod bench {
    use std::ffi::OsString;
    use std::path::Path;

    use num_bigint::BigUint;

    use super::program::ProgramCache;
    use super::workdir;
    use super::MpSpdzRoot;
    use crate::engine::NegotiationPlan;
    use crate::error::{Error, Result};

    /// Fills the compile cache in `cache_dir` for `n` parties and `prime`.
    pub fn warm_cache(
        root: &MpSpdzRoot,
        cache_dir: &Path,
        n: usize,
        prime: &BigUint,
    ) -> Result<()> {
        ProgramCache::new(cache_dir).get_or_compile(root, n, prime)?;
        Ok(())
    }

    /// What the MP-SPDZ engine does before and after running `shamir-party.x`, without running
    /// it: takes the program from the (warm) cache, prepares the run directory under `runs_dir`,
    /// then removes the secrets and the directory. Returns the party's command-line arguments.
    pub fn prepare_and_remove(
        root: &MpSpdzRoot,
        cache_dir: &Path,
        runs_dir: &Path,
        plan: &NegotiationPlan,
    ) -> Result<Vec<OsString>> {
        let program = ProgramCache::new(cache_dir).get_or_compile(root, plan.n(), plan.prime())?;
        if program.compiled_now {
            return Err(Error::Internal("the compile cache was cold".into()));
        }
        let run = workdir::prepare(runs_dir, plan, &program)?;
        let args = run.args();
        run.remove_secrets()?;
        run.remove()?;
        Ok(args)
    }
}
