//! Core errors on their way to Python: [`CoreError`] turns a [`secagg_core::Error`] into the
//! exception of its kind from `secagg._errors` (message, hint, exit code; [`raise_report`] also
//! attaches a report), and [`unlocked`] runs one core call with the GIL released and maps its
//! error.

use pyo3::prelude::*;
use secagg_core::error::ErrorReport;
use secagg_core::Error;

/// A core error on its way to Python.
pub(crate) struct CoreError(pub(crate) Error);

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError(e)
    }
}

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        Python::with_gil(|py| raise_report(py, &ErrorReport::of(&e.0), None))
    }
}

/// The exception of `report`'s kind (`secagg._errors`), with `report` attached as `.report` when
/// given (an import's per-document outcome).
pub(crate) fn raise_report(py: Python<'_>, r: &ErrorReport, report: Option<PyObject>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py
            .import("secagg._errors")?
            .getattr("exception_class")?
            .call1((r.kind.name(),))?;
        let exc = cls.call1((
            r.message.clone(),
            r.hint.clone(),
            r.exit_code,
            r.kind.name(),
        ))?;
        if let Some(rep) = report {
            exc.setattr("report", rep)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

pub(crate) type CoreResult<T> = Result<T, CoreError>;

/// Runs one core call with the GIL released, mapping its error to the Python exception: every
/// call that may wait (the store's write lock, up to its 30 s busy timeout; a file; the network;
/// key computations) goes through here, so that a server process's other Python threads run
/// meanwhile.
pub(crate) fn unlocked<T: Send>(
    py: Python<'_>,
    call: impl FnOnce() -> Result<T, Error> + Send,
) -> PyResult<T> {
    py.allow_threads(call).map_err(|e| CoreError(e).into())
}

pub(crate) fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError(Error::invalid(msg))
}
