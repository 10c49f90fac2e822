//! `secagg._native`: the Rust half of the Python package `secagg` (see `python/secagg/`).
//!
//! A thin layer over `secagg-core`'s public API, with no logic of its own: each method turns its
//! Python arguments into the core's typed options (the way `secagg-cli/src/commands/*.rs` turn
//! command-line options into them), calls one core function, and turns the result into plain
//! Python values: the core's serialisable summaries become `dict`s (the same fields as the CLI's
//! `--format json`), keys become Python `int`s. A core [`secagg_core::Error`] becomes the
//! exception of its kind from `secagg._errors` (message, hint, exit code).
//!
//! Long calls (a negotiation, encryption and decryption of many parameters) run with the GIL
//! released. A negotiation runs in a helper thread while the calling thread watches for Ctrl-C
//! (Python's signal check) and for a `CancelToken`: either sets the core's cancel flag
//! ([`secagg_core::session::negotiate_cancellable`]), so that the party aborts the session with
//! nothing stored.
//!
//! One module per area, as pydantic-core and tokenizers lay out their bindings:
//!
//! - `errors`: core errors as `secagg._errors` exceptions, and `unlocked`, the one helper that
//!   runs a core call with the GIL released and maps its error;
//! - `convert`: core values as plain Python values, and the small parsers of arguments;
//! - `cancel`: `CancelToken` and `interruptible`, the Ctrl-C watch of a long call;
//! - `home`: the `Home` class, its methods in one `#[pymethods]` block per area (`home/*.rs`:
//!   identity, peers, negotiation, contexts, aggregate, roster), which pyo3's
//!   `multiple-pymethods` feature collects into the one class;
//! - `functions`: the module-level functions that need no home;
//! - `fedbiomed`: the state of `secagg.fedbiomed` (a component's home, its element entries).
//!
//! This file declares them and registers everything in the module `_native`.
// PyO3's macros expand to code that needs no `unsafe` of ours: forbid it outright.
#![forbid(unsafe_code)]

mod cancel;
mod convert;
mod errors;
mod fedbiomed;
mod functions;
mod home;
mod lom;

use pyo3::prelude::*;
use secagg_core::aggregate;

use crate::cancel::CancelToken;
use crate::home::Home;

/// The Python module `secagg._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_BIPRIME0", aggregate::DEFAULT_BIPRIME0)?;
    m.add("DEFAULT_CLIPPING_RANGE", aggregate::DEFAULT_CLIPPING_RANGE)?;
    m.add("DEFAULT_KEY_BITS", secagg_core::engine::DEFAULT_KEY_BITS)?;
    m.add_class::<Home>()?;
    m.add_class::<CancelToken>()?;
    functions::register(m)?;
    fedbiomed::register(m)?;
    lom::register(m)?;
    Ok(())
}
