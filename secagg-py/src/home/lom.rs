//! `Home`'s methods for a LOM round (`secagg aggregate … --scheme lom`): a node masks its
//! parameters with the pairwise secrets of its LOM context, the researcher unmasks the weighted
//! average. Vectors cross as NumPy arrays (no Python object per value), the GIL released while
//! the core works.

use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use secagg_core::aggregate::{
    self, masked_file::parse_profile, LomDecryptRequest, LomEncryptRequest, MaskedFile,
};

use super::Home;
use crate::convert::{session_id, to_py};
use crate::errors::{invalid, unlocked, CoreError};

/// `obj` as f64 values: a float64 NumPy array is read in place (one copy), anything else
/// (float32 arrays, lists) is converted.
fn float_values(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, f64>>() {
        return Ok(match a.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => a.as_array().to_vec(),
        });
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, f32>>() {
        return Ok(a.as_array().iter().map(|&v| f64::from(v)).collect());
    }
    obj.extract::<Vec<f64>>().map_err(|_| {
        invalid("`params` must be a 1-D NumPy array of floats or a sequence of numbers").into()
    })
}

/// `obj` as u64 words: a uint64 NumPy array in place, else a sequence of ints.
fn word_values(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'_, u64>>() {
        return Ok(match a.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => a.as_array().to_vec(),
        });
    }
    obj.extract::<Vec<u64>>().map_err(|_| {
        invalid("a masked file's `values` must be a uint64 NumPy array or a list of ints").into()
    })
}

/// A masked file from a dict (`values` an array or a list) or the path of its JSON file.
fn masked_file(i: usize, obj: &Bound<'_, PyAny>) -> PyResult<(String, MaskedFile)> {
    if let Ok(d) = obj.downcast::<PyDict>() {
        let name = format!("{i} (a dict)");
        let rest = d.copy()?;
        let values = match rest.get_item("values")? {
            Some(v) => word_values(&v)?,
            None => return Err(invalid(format!("masked file {name} has no `values`")).into()),
        };
        rest.set_item("values", pyo3::types::PyList::empty(obj.py()))?;
        let json = obj.py().import("json")?;
        let text: String = json.call_method1("dumps", (rest,))?.extract()?;
        let mut file = MaskedFile::parse(text.as_bytes(), &name).map_err(CoreError)?;
        file.values = values;
        return Ok((name, file));
    }
    let path: PathBuf = obj.extract()?;
    let file = MaskedFile::read(&path).map_err(CoreError)?;
    Ok((format!("`{}`", path.display()), file))
}

#[pymethods]
impl Home {
    /// (node) Masks `params` (a 1-D NumPy array, or a sequence of numbers) for round `round`
    /// with this node's pairwise secrets of the LOM context `session` (`secagg aggregate encrypt
    /// --scheme lom`). `weight`: this node's sample count (every node weights, or none);
    /// `label`: which vector of the round (0: the weights); `profile`: `secagg` (default) or
    /// `fedbiomed-v6` / `fedbiomed-v6.3` (bit for bit). The round and label are recorded before
    /// the result is returned, and a second call for them raises `Conflict`.
    ///
    /// Returns the signed masked file as a dict whose `values` is a uint64 NumPy array (use
    /// `.tolist()` before `json.dump`), plus `clipped`: `[below, above]`, the values outside the
    /// clipping range.
    #[pyo3(signature = (session, round, params, weight=None, label=0, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE, profile="secagg"))]
    #[allow(clippy::too_many_arguments)]
    fn lom_encrypt<'py>(
        &self,
        py: Python<'py>,
        session: &str,
        round: u64,
        params: &Bound<'py, PyAny>,
        weight: Option<u64>,
        label: u64,
        clipping_range: u32,
        profile: &str,
    ) -> PyResult<PyObject> {
        let req = LomEncryptRequest {
            session: session_id(session)?,
            round,
            label,
            values: float_values(params)?,
            weight,
            clipping_range,
            profile: parse_profile(profile).map_err(CoreError)?,
        };
        let home = self.core();
        let mut masked = unlocked(py, || aggregate::encrypt_lom(&home, &req))?;
        let values = std::mem::take(&mut masked.file.values);
        let out = to_py(py, &masked.file)?;
        let d = out.bind(py).downcast::<PyDict>()?;
        d.set_item("values", PyArray1::from_vec(py, values))?;
        d.set_item("clipped", (masked.clipped.below, masked.clipped.above))?;
        Ok(out)
    }

    /// (researcher) Unmasks the weighted average of round `round` (vector `label`) of the LOM
    /// context `session` from one masked file per node: each a dict from `lom_encrypt` or the
    /// path of its JSON file (`secagg aggregate decrypt --scheme lom`). Every file must be
    /// signed by the node it names. Returns the CLI's JSON result with `average` a float64 NumPy
    /// array. Raises `VerificationFailed` when the sums are not ones honest nodes can make (a
    /// vector missing, altered or of another round).
    #[pyo3(signature = (session, round, files, label=0))]
    fn lom_decrypt(
        &self,
        py: Python<'_>,
        session: &str,
        round: u64,
        files: Vec<Bound<'_, PyAny>>,
        label: u64,
    ) -> PyResult<PyObject> {
        let mut parsed = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            parsed.push(masked_file(i, f)?);
        }
        let req = LomDecryptRequest {
            session: session_id(session)?,
            round,
            label,
            files: parsed,
        };
        let home = self.core();
        let mut avg = unlocked(py, || aggregate::decrypt_lom(&home, &req))?;
        let average = std::mem::take(&mut avg.average);
        let out = to_py(py, &avg)?;
        out.bind(py)
            .downcast::<PyDict>()?
            .set_item("average", PyArray1::from_vec(py, average))?;
        Ok(out)
    }
}
