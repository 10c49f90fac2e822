//! The `Home` class: a party's secagg home directory. This module holds the struct, its
//! constructor, `path` and `repr`; its other methods are grouped by area, one `#[pymethods] impl
//! Home` block per submodule (pyo3's `multiple-pymethods` feature collects them into the one
//! Python class):
//!
//! - `identity`: this party's identity and what others register it with;
//! - `peers`: the registered peers (by hand, from a bundle, from a Fed-BioMed TinyDB);
//! - `negotiation`: key negotiations, run here or through the party agents, and the federation
//!   check;
//! - `contexts`: the stored negotiated keys;
//! - `aggregate`: Joye–Libert encryption and decryption of a training round;
//! - `lom`: LOM masking and unmasking of a training round, NumPy arrays in and out;
//! - `roster`: signed rosters (export, show, import, pull).

mod aggregate;
mod contexts;
mod identity;
mod lom;
mod negotiation;
mod peers;
mod roster;

use std::path::PathBuf;

use pyo3::prelude::*;
use secagg_core::home::Home as CoreHome;

/// A party's secagg home directory (what the CLI's `--home` names): its identity, its store of
/// registered peers, and its negotiated keys (contexts).
///
/// Every method is one call of secagg-core, as the `secagg` command makes it; results are plain
/// dicts with the fields of the CLI's `--format json` output, keys are ints. Errors raise
/// `secagg.Error` subclasses carrying `message`, `hint` and `exit_code`.
#[pyclass(frozen, module = "secagg._native")]
pub(crate) struct Home {
    root: PathBuf,
}

impl Home {
    fn core(&self) -> CoreHome {
        CoreHome::new(&self.root)
    }
}

#[pymethods]
impl Home {
    #[new]
    fn new(path: PathBuf) -> Self {
        Home { root: path }
    }

    /// The home directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.root.clone()
    }

    fn __repr__(&self) -> String {
        format!("Home({:?})", self.root.display().to_string())
    }
}
