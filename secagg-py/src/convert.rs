//! Conversions between Python values and the core's: serialisable core values to plain Python
//! values ([`to_py`]), keys to `int`s, and the small parsers of arguments (session and party ids,
//! roles, biprimes, durations) shared by the methods and functions.

use std::path::PathBuf;
use std::time::Duration;

use num_bigint::{BigInt, BigUint};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use secagg_core::aggregate::Biprime;
use secagg_core::{Error, PartyId, Role, SessionId};
use serde::Serialize;
use serde_json::Value;

use crate::errors::{invalid, CoreError, CoreResult};

/// A serialisable core value as plain Python values (dict, list, str, int, float, bool, None).
pub(crate) fn to_py<T: Serialize>(py: Python<'_>, v: &T) -> PyResult<PyObject> {
    let v = serde_json::to_value(v)
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
    value_to_py(py, &v)
}

pub(crate) fn value_to_py(py: Python<'_>, v: &Value) -> PyResult<PyObject> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => pyo3::types::PyBool::new(py, *b)
            .to_owned()
            .into_any()
            .unbind(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                n.as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any().unbind(),
        Value::Array(a) => {
            let l = PyList::empty(py);
            for x in a {
                l.append(value_to_py(py, x)?)?;
            }
            l.into_any().unbind()
        }
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, value_to_py(py, x)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// A serialisable value as a dict, for adding fields.
pub(crate) fn to_dict<'py, T: Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyDict>> {
    Ok(to_py(py, v)?.into_bound(py).downcast_into::<PyDict>()?)
}

/// A decimal integer (a key) as a Python int.
pub(crate) fn decimal_to_int(py: Python<'_>, s: &str) -> PyResult<PyObject> {
    let v: BigInt = s
        .parse()
        .map_err(|_| PyRuntimeError::new_err("internal error: a stored key is not an integer"))?;
    Ok(v.into_pyobject(py)?.into_any().unbind())
}

/// A JSON-like argument as JSON text: a dict (or list) through Python's `json`, `None` for
/// anything else (then taken as a path).
pub(crate) fn json_text(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PyList>() {
        let json = obj.py().import("json")?;
        return Ok(Some(json.call_method1("dumps", (obj,))?.extract()?));
    }
    Ok(None)
}

pub(crate) fn session_id(s: &str) -> CoreResult<SessionId> {
    Ok(SessionId::parse(s)?)
}

pub(crate) fn party_id(s: &str) -> CoreResult<PartyId> {
    Ok(PartyId::parse(s)?)
}

/// A party id to look a registration up by: a custom id is accepted (it may have been registered
/// with `allow_custom_id`); looking up changes nothing.
pub(crate) fn lookup_id(s: &str) -> CoreResult<PartyId> {
    Ok(PartyId::parse_entry(s, true)?)
}

pub(crate) fn role(s: &str) -> CoreResult<Role> {
    Ok(s.parse()?)
}

/// A list of party ids (the `parties` argument), each trimmed; an error says it is in `parties`.
pub(crate) fn party_list(parties: &[String]) -> CoreResult<Vec<PartyId>> {
    parties
        .iter()
        .map(|p| PartyId::parse(p.trim()).map_err(|e| CoreError(e.context("in parties"))))
        .collect()
}

/// The biprime argument: `None` (Fed-BioMed's `default_biprime0`), an int, or the path of a
/// Fed-BioMed biprime JSON file.
pub(crate) fn biprime_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Biprime> {
    let Some(obj) = obj else {
        return Ok(Biprime::default_biprime0());
    };
    if let Ok(n) = obj.extract::<BigUint>() {
        return Ok(Biprime::new("biprime", n).map_err(CoreError)?);
    }
    let path: PathBuf = obj.extract()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CoreError(Error::io_path("reading biprime file", &path, e)))?;
    Ok(Biprime::from_fedbiomed_json(&text)
        .map_err(|e| CoreError(e.context(format!("in `{}`", path.display()))))?)
}

/// A duration argument in seconds, in the CLI's range (1 ms to 24 h).
pub(crate) fn seconds(name: &str, t: f64) -> CoreResult<Duration> {
    if t.is_finite() && (0.001..=86_400.0).contains(&t) {
        Ok(Duration::from_secs_f64(t))
    } else {
        Err(invalid(format!(
            "{name} {t} s is out of range (0.001 to 86400)"
        )))
    }
}
