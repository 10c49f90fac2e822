//! The bindings of `secagg.fedbiomed`'s state: the home of a Fed-BioMed component (found from its
//! TinyDB path, adopted on first use) and Fed-BioMed's secagg element entries, kept in the home's
//! store (`secagg_core::fedbiomed`). Each function takes the home's path, runs one core call with
//! the GIL released and returns plain Python values (keys and biprimes as `int`s).

use std::path::PathBuf;

use num_bigint::BigInt;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use secagg_core::fedbiomed::elements::{BiprimeKind, BiprimeRow};
use secagg_core::fedbiomed::{component_home, elements};
use secagg_core::home::Home;
use time::OffsetDateTime;

use crate::convert::decimal_to_int;
use crate::errors::{unlocked, CoreError};

/// The secagg home of the Fed-BioMed component whose database is `db_path` (or `db_path` itself
/// when it is a secagg home), created on first use by adopting the component's identity and
/// importing its TinyDB certificates: `{home, created, party_id, imported, warnings}`.
#[pyfunction]
pub fn fedbiomed_home(py: Python<'_>, db_path: PathBuf) -> PyResult<PyObject> {
    let opened = unlocked(py, || {
        component_home::open(&db_path, OffsetDateTime::now_utc())
    })?;
    let d = PyDict::new(py);
    d.set_item("home", opened.home.root())?;
    d.set_item("created", opened.created.is_some())?;
    if let Some((adoption, report)) = &opened.created {
        d.set_item("party_id", adoption.identity.party_id.as_str())?;
        d.set_item("imported", report.as_ref().map(|r| r.entries))?;
        d.set_item("warnings", adoption.warnings.clone())?;
    }
    Ok(d.into_any().unbind())
}

/// The server-key entry `secagg_id` of job `job_id`, as Fed-BioMed's
/// `SecaggServkeyManager.get` returns it (`{secagg_id, parties, job_id, context: {server_key}}`),
/// or `None`.
#[pyfunction]
#[pyo3(signature = (home, secagg_id, job_id))]
pub fn fedbiomed_servkey_get(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
    job_id: Option<String>,
) -> PyResult<PyObject> {
    let home = Home::new(home);
    let entry = unlocked(py, || {
        elements::servkey_get(&home, &secagg_id, job_id.as_deref())
    })?;
    let Some(entry) = entry else {
        return Ok(py.None());
    };
    let context = PyDict::new(py);
    context.set_item("server_key", decimal_to_int(py, &entry.key_decimal)?)?;
    let d = PyDict::new(py);
    d.set_item("secagg_id", &entry.row.secagg_id)?;
    d.set_item("parties", &entry.row.parties)?;
    d.set_item("job_id", &entry.row.job_id)?;
    d.set_item("context", context)?;
    Ok(d.into_any().unbind())
}

/// Attaches the negotiated key `server_key` to `secagg_id` and `job_id`; returns the session id
/// of its context.
#[pyfunction]
#[pyo3(signature = (home, secagg_id, parties, server_key, job_id))]
pub fn fedbiomed_servkey_add(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
    parties: Vec<String>,
    server_key: BigInt,
    job_id: Option<String>,
) -> PyResult<String> {
    let home = Home::new(home);
    // The key text is dropped as soon as the call returns; Python keeps its own int.
    let key = server_key.to_string();
    unlocked(py, || {
        elements::servkey_add(
            &home,
            &secagg_id,
            &parties,
            &key,
            job_id.as_deref(),
            OffsetDateTime::now_utc(),
        )
    })
}

/// Removes the entry `secagg_id` of job `job_id` and erases its key; false when there was none.
#[pyfunction]
#[pyo3(signature = (home, secagg_id, job_id))]
pub fn fedbiomed_servkey_remove(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
    job_id: Option<String>,
) -> PyResult<bool> {
    let home = Home::new(home);
    unlocked(py, || {
        elements::servkey_remove(&home, &secagg_id, job_id.as_deref())
    })
}

fn biprime_entry(py: Python<'_>, row: &BiprimeRow) -> PyResult<PyObject> {
    let context = PyDict::new(py);
    context.set_item("biprime", decimal_to_int(py, &row.biprime)?)?;
    context.set_item("max_keysize", row.max_keysize)?;
    let d = PyDict::new(py);
    d.set_item("secagg_id", &row.secagg_id)?;
    d.set_item("parties", &row.parties)?;
    d.set_item("context", context)?;
    d.set_item("default", row.kind == BiprimeKind::Default)?;
    Ok(d.into_any().unbind())
}

/// The biprime entry `secagg_id` (`{secagg_id, parties, context: {biprime, max_keysize},
/// default}`), or `None`.
#[pyfunction]
pub fn fedbiomed_biprime_get(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
) -> PyResult<PyObject> {
    let home = Home::new(home);
    match unlocked(py, || elements::biprime_get(&home, &secagg_id))? {
        Some(row) => biprime_entry(py, &row),
        None => Ok(py.None()),
    }
}

/// Adds a dynamic biprime entry.
#[pyfunction]
#[pyo3(signature = (home, secagg_id, parties, biprime, max_keysize))]
pub fn fedbiomed_biprime_add(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
    parties: Option<Vec<String>>,
    biprime: BigInt,
    max_keysize: i64,
) -> PyResult<()> {
    let home = Home::new(home);
    let biprime = biprime.to_string();
    unlocked(py, || {
        elements::biprime_add(
            &home,
            &secagg_id,
            parties,
            &biprime,
            max_keysize,
            OffsetDateTime::now_utc(),
        )
    })
}

/// Removes the dynamic biprime `secagg_id`; false when there was none.
#[pyfunction]
pub fn fedbiomed_biprime_remove(
    py: Python<'_>,
    home: PathBuf,
    secagg_id: String,
) -> PyResult<bool> {
    let home = Home::new(home);
    unlocked(py, || elements::biprime_remove(&home, &secagg_id))
}

/// Replaces the default biprimes with `defaults` (`(secagg_id, biprime, max_keysize)` tuples).
#[pyfunction]
pub fn fedbiomed_set_default_biprimes(
    py: Python<'_>,
    home: PathBuf,
    defaults: Vec<(String, BigInt, i64)>,
) -> PyResult<()> {
    let home = Home::new(home);
    let defaults: Vec<(String, String, i64)> = defaults
        .into_iter()
        .map(|(id, b, m)| (id, b.to_string(), m))
        .collect();
    unlocked(py, || {
        elements::biprime_set_defaults(&home, &defaults, OffsetDateTime::now_utc())
    })
}

/// Every registered party with its stable document id, in registration order.
#[pyfunction]
pub fn fedbiomed_certificate_documents(
    py: Python<'_>,
    home: PathBuf,
) -> PyResult<Vec<(String, i64)>> {
    let home = Home::new(home);
    unlocked(py, || elements::certificate_documents(&home))
}

/// The fingerprint (`SHA256:AB:…`) of the certificate `data` (PEM or DER), as `peers()` shows
/// it; `name` says where it came from in an error.
#[pyfunction]
pub fn certificate_fingerprint(data: Vec<u8>, name: &str) -> PyResult<String> {
    let cert = secagg_core::certificate::Certificate::parse(&data, name).map_err(CoreError)?;
    Ok(cert.fingerprint.to_string())
}

/// Registers this module's functions in `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fedbiomed_home, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_servkey_get, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_servkey_add, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_servkey_remove, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_biprime_get, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_biprime_add, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_biprime_remove, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_set_default_biprimes, m)?)?;
    m.add_function(wrap_pyfunction!(fedbiomed_certificate_documents, m)?)?;
    m.add_function(wrap_pyfunction!(certificate_fingerprint, m)?)?;
    Ok(())
}
