//! `Home`'s methods for a LOM round (`secagg aggregate … --scheme lom`): a node masks its
//! parameters with the pairwise secrets of its LOM context, the researcher unmasks the weighted
//! average. Vectors cross as NumPy arrays (no Python object per value), the GIL released while
//! the core works.

use std::path::PathBuf;

use numpy::{PyArray1, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use secagg_core::aggregate::lom_round::MaskedView;
use secagg_core::aggregate::{self, masked_file::parse_profile, LomEncryptRequest, MaskedFile};

use super::Home;
use crate::convert::{session_id, to_py};
use crate::errors::{invalid, unlocked, CoreError};

/// A vector from Python: borrowed from a contiguous NumPy array of `T` (no copy), or owned
/// (converted from another array or a sequence).
enum Vector<'py, T: numpy::Element> {
    Borrowed(PyReadonlyArray1<'py, T>),
    Owned(Vec<T>),
}

impl<T: numpy::Element> Vector<'_, T> {
    fn as_slice(&self) -> &[T] {
        match self {
            // Contiguity was checked when the array was taken.
            Vector::Borrowed(a) => a.as_slice().unwrap_or(&[]),
            Vector::Owned(v) => v,
        }
    }
}

/// `obj` as a vector of `T`: a contiguous NumPy array of `T` borrowed, a strided one copied;
/// `None` when it is no 1-D array of `T`.
fn array_of<'py, T: numpy::Element + Clone>(obj: &Bound<'py, PyAny>) -> Option<Vector<'py, T>> {
    let a = obj.extract::<PyReadonlyArray1<'py, T>>().ok()?;
    Some(match a.as_slice() {
        Ok(_) => Vector::Borrowed(a),
        Err(_) => Vector::Owned(a.as_array().to_vec()),
    })
}

/// `obj` as f64 values: a float64 NumPy array (borrowed when contiguous); float32 arrays and
/// sequences converted.
fn float_values<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Vector<'py, f64>> {
    if let Some(v) = array_of::<f64>(obj) {
        return Ok(v);
    }
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, f32>>() {
        return Ok(Vector::Owned(
            a.as_array().iter().map(|&v| f64::from(v)).collect(),
        ));
    }
    obj.extract::<Vec<f64>>().map(Vector::Owned).map_err(|_| {
        invalid("`params` must be a 1-D NumPy array of floats or a sequence of numbers").into()
    })
}

/// `obj` as u64 words: a uint64 NumPy array (borrowed when contiguous), or a list of ints.
fn words<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Vector<'py, u64>> {
    if let Some(v) = array_of::<u64>(obj) {
        return Ok(v);
    }
    obj.extract::<Vec<u64>>().map(Vector::Owned).map_err(|_| {
        invalid("a masked file's `values` must be a uint64 NumPy array or a list of ints").into()
    })
}

/// A masked file from a dict (`values` an array or a list, not copied when a contiguous uint64
/// array) or the path of its JSON file; the file's own `values` are left empty.
fn masked_file<'py>(
    i: usize,
    obj: &Bound<'py, PyAny>,
) -> PyResult<(String, MaskedFile, Vector<'py, u64>)> {
    if let Ok(d) = obj.downcast::<PyDict>() {
        let name = format!("{i} (a dict)");
        let rest = d.copy()?;
        let values = match rest.get_item("values")? {
            Some(v) => words(&v)?,
            None => return Err(invalid(format!("masked file {name} has no `values`")).into()),
        };
        rest.set_item("values", pyo3::types::PyList::empty(obj.py()))?;
        let json = obj.py().import("json")?;
        let text: String = json.call_method1("dumps", (rest,))?.extract()?;
        let file = MaskedFile::parse(text.as_bytes(), &name).map_err(CoreError)?;
        return Ok((name, file, values));
    }
    let path: PathBuf = obj.extract()?;
    let mut file = MaskedFile::read(&path).map_err(CoreError)?;
    let values = Vector::Owned(std::mem::take(&mut file.values));
    Ok((format!("`{}`", path.display()), file, values))
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
    /// clipping range. In a context that survives dropouts (`session_run(…, dropout_threshold=T)`)
    /// the round's self-mask is first shared with the other nodes' agents, and `shares` says
    /// which nodes hold one (`holders`) and which did not, with why (`missed`).
    ///
    /// A contiguous float64 array is read in place while the GIL is released: do not write to
    /// it from another thread during the call.
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
        let values = float_values(params)?;
        let req = LomEncryptRequest {
            session: session_id(session)?,
            round,
            label,
            values: Vec::new(),
            weight,
            clipping_range,
            profile: parse_profile(profile).map_err(CoreError)?,
        };
        let home = self.core();
        let values = values.as_slice();
        let mut masked = unlocked(py, || {
            aggregate::lom_round::encrypt_lom_values(&home, &req, values)
        })?;
        let values = std::mem::take(&mut masked.file.values);
        let out = to_py(py, &masked.file)?;
        let d = out.bind(py).downcast::<PyDict>()?;
        d.set_item("values", PyArray1::from_vec(py, values))?;
        d.set_item("clipped", (masked.clipped.below, masked.clipped.above))?;
        if let Some(shares) = &masked.shares {
            d.set_item("shares", to_py(py, shares)?)?;
        }
        Ok(out)
    }

    /// (node) This node's confirmed LOM context of `session` in the shape of Fed-BioMed v6's DH
    /// context entry (its `SecaggManager` document): `secagg_version`, `secagg_id`
    /// (`secagg_<uuid>`), `parties` (the nodes, as v6 lists them), `secagg_elem` (1, DH),
    /// `experiment_id`, and `context`: `{other node id: base64(secret)}`. The secrets were agreed
    /// directly between the nodes' agents; returning them hands them to the caller (v6's
    /// crypter needs them), so keep the result in memory only.
    #[pyo3(signature = (session, experiment_id=None))]
    fn lom_dh_context(
        &self,
        py: Python<'_>,
        session: &str,
        experiment_id: Option<String>,
    ) -> PyResult<PyObject> {
        use base64::Engine as _;
        let sid = session_id(session)?;
        let home = self.core();
        let (ctx, secrets) = unlocked(py, || aggregate::lom_round::node_secrets(&home, &sid))?;
        let context = PyDict::new(py);
        for (peer, secret) in &secrets {
            let b64 = base64::engine::general_purpose::STANDARD.encode(secret.as_slice());
            context.set_item(peer, b64)?;
        }
        let d = PyDict::new(py);
        d.set_item("secagg_version", "2")?;
        d.set_item("secagg_id", sid.fedbiomed_form())?;
        // v6's LOM parties: the nodes only (its researcher filters itself out).
        d.set_item("parties", ctx.parties[1..].to_vec())?;
        d.set_item("secagg_elem", 1)?;
        d.set_item("experiment_id", experiment_id)?;
        d.set_item("context", context)?;
        Ok(d.into_any().unbind())
    }

    /// (researcher) Unmasks the weighted average of round `round` (vector `label`) of the LOM
    /// context `session` from one masked file per node: each a dict from `lom_encrypt` or the
    /// path of its JSON file (`secagg aggregate decrypt --scheme lom`). Every file must be
    /// signed by the node it names (uint64 arrays are read in place with the GIL released: do
    /// not write to them from another thread during the call). Returns the CLI's JSON result
    /// with `average` a float64 NumPy array. Raises `VerificationFailed` when the sums are not
    /// ones honest nodes can make (a vector missing, altered or of another round). In a context
    /// that survives dropouts, files from at least T nodes suffice: the survivors' agents are
    /// asked for what unmasks the round, and `dropouts` names who dropped before masking
    /// (`before_masking`) and who went silent while unmasking (`while_unmasking`).
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
        let views: Vec<MaskedView<'_>> = parsed
            .iter()
            .map(|(name, file, values)| MaskedView {
                name,
                file,
                values: values.as_slice(),
            })
            .collect();
        let session = session_id(session)?;
        let home = self.core();
        let mut avg = unlocked(py, || {
            aggregate::lom_round::decrypt_lom_views(&home, &session, round, label, &views)
        })?;
        let average = std::mem::take(&mut avg.average);
        let out = to_py(py, &avg)?;
        out.bind(py)
            .downcast::<PyDict>()?
            .set_item("average", PyArray1::from_vec(py, average))?;
        Ok(out)
    }
}
