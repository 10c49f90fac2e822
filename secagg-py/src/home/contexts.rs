//! `Home`'s methods for the stored contexts, the negotiated keys (`secagg context …`).

use pyo3::prelude::*;
use secagg_core::session;

use super::Home;
use crate::convert::{decimal_to_int, session_id, to_dict, to_py};
use crate::errors::unlocked;

#[pymethods]
impl Home {
    /// Every stored context (negotiated key, or LOM context with `rounds_used` at a node)
    /// without the keys, newest first (`secagg context list --format json`).
    fn contexts(&self, py: Python<'_>) -> PyResult<PyObject> {
        let list = unlocked(py, || session::context_summaries(&self.core()))?;
        to_py(py, &list)
    }

    /// One stored context (`secagg context show`); with `reveal_key=True` it has `key`: the
    /// server key `sk0` (a negative int) at the researcher, the user key `sk_i` at a node.
    /// Raises `NotFound` when none is stored for `session`.
    #[pyo3(signature = (session, reveal_key=false))]
    fn context(&self, py: Python<'_>, session: &str, reveal_key: bool) -> PyResult<PyObject> {
        let id = session_id(session)?;
        let summary = unlocked(py, || {
            session::context_summary(&self.core(), &id, reveal_key)
        })?;
        let d = to_dict(py, &summary)?;
        if let Some(k) = &summary.key {
            d.set_item("key", decimal_to_int(py, k)?)?;
        }
        Ok(d.into_any().unbind())
    }

    /// Deletes a stored context (`secagg context delete`); returns what was deleted (no key).
    fn delete_context(&self, py: Python<'_>, session: &str) -> PyResult<PyObject> {
        let id = session_id(session)?;
        let c = unlocked(py, || session::delete_context(&self.core(), &id))?;
        to_py(py, &c.summary(false))
    }

    /// Marks a node's unconfirmed key confirmed (`secagg context confirm`).
    fn confirm_context(&self, py: Python<'_>, session: &str) -> PyResult<PyObject> {
        let id = session_id(session)?;
        let c = unlocked(py, || session::confirm_context(&self.core(), &id))?;
        to_py(py, &c.summary(false))
    }
}
