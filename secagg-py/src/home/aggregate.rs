//! `Home`'s methods for a training round's Joye–Libert aggregation (`secagg aggregate …`): a
//! node encrypts its parameters, the researcher decrypts their average.

use std::path::PathBuf;

use pyo3::prelude::*;
use secagg_core::aggregate::{self, CiphertextFile, DecryptRequest, EncryptRequest, UnsignedFiles};

use super::Home;
use crate::convert::{biprime_arg, json_text, session_id, to_py};
use crate::errors::{unlocked, CoreError};

#[pymethods]
impl Home {
    /// (node) Encrypts `params` for training round `round` with this node's key of `session`
    /// (`secagg aggregate encrypt`). Returns the ciphertext file as a dict (`json.dump` it to
    /// get the CLI's file). `biprime`: None (Fed-BioMed's default), an int, or a Fed-BioMed
    /// biprime JSON file.
    /// `profile="fedbiomed-v6"` encodes as Fed-BioMed v6 does (T = 8192, `weight` multiplied in,
    /// wider elements); the researcher's `decrypt` reads the profile from the files and returns
    /// the weighted average.
    #[pyo3(signature = (session, round, params, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE, biprime=None, profile="fedbiomed-v4", weight=None))]
    #[allow(clippy::too_many_arguments)]
    fn encrypt(
        &self,
        py: Python<'_>,
        session: &str,
        round: u64,
        params: Vec<f64>,
        clipping_range: u32,
        biprime: Option<&Bound<'_, PyAny>>,
        profile: &str,
        weight: Option<u64>,
    ) -> PyResult<PyObject> {
        let biprime = biprime_arg(biprime)?;
        let req = EncryptRequest {
            clipping_range,
            profile: aggregate::JlProfile::parse(profile).map_err(CoreError)?,
            weight,
            ..EncryptRequest::new(session_id(session)?, round, params)
        };
        let home = self.core();
        let file = unlocked(py, || aggregate::encrypt_round(&home, &req, &biprime, None))?;
        to_py(py, &file)
    }

    /// (researcher) Decrypts the average of round `round` from one ciphertext file per node
    /// (`secagg aggregate decrypt`): each a dict from `encrypt` or the path of its JSON file.
    /// Every file must be signed by the node it names (`encrypt` signs); `allow_unsigned=True`
    /// accepts unsigned files and marks the result `"authenticated": False`. Raises
    /// `AuthenticationFailure` for a file that does not verify, `VerificationFailed` when the
    /// decrypted values are not sums honest nodes can make.
    #[pyo3(signature = (session, round, files, biprime=None, allow_unsigned=false))]
    fn decrypt(
        &self,
        py: Python<'_>,
        session: &str,
        round: u64,
        files: Vec<Bound<'_, PyAny>>,
        biprime: Option<&Bound<'_, PyAny>>,
        allow_unsigned: bool,
    ) -> PyResult<PyObject> {
        let biprime = biprime_arg(biprime)?;
        let session = session_id(session)?;
        let mut parsed = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            parsed.push(match json_text(f)? {
                Some(t) => {
                    let name = format!("{i} (a dict)");
                    let file = CiphertextFile::parse(t.as_bytes(), &name).map_err(CoreError)?;
                    (name, file)
                }
                None => {
                    let path: PathBuf = f.extract()?;
                    let file = CiphertextFile::read(&path).map_err(CoreError)?;
                    (format!("`{}`", path.display()), file)
                }
            });
        }
        let req = DecryptRequest {
            session,
            round,
            files: parsed,
            unsigned: if allow_unsigned {
                UnsignedFiles::Accept
            } else {
                UnsignedFiles::Refuse
            },
        };
        let home = self.core();
        let avg = unlocked(py, || aggregate::decrypt_round(&home, &req, &biprime, None))?;
        to_py(py, &avg)
    }
}
