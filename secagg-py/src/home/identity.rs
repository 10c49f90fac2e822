//! `Home`'s methods for this party's identity (`secagg init`, `secagg identity …`) and what peers
//! register it with (its bundle, its registration instructions).

use pyo3::prelude::*;
use secagg_core::certificate::{GeneratedKeyType, DEFAULT_VALIDITY_DAYS};
use secagg_core::identity::{self, InitOptions};
use secagg_core::registration;
use time::OffsetDateTime;

use super::Home;
use crate::convert::{self, to_py};
use crate::errors::{unlocked, CoreError};

#[pymethods]
impl Home {
    /// Creates this party's identity (`secagg init`): party id, endpoint, private key (0600) and
    /// self-signed certificate, and the optional display `name` (`--name`). Returns the identity
    /// (as `identity()`).
    #[pyo3(signature = (role, ip=None, port=None, key_type="p256", id=None, days=DEFAULT_VALIDITY_DAYS, force=false, allow_custom_id=false, name=None))]
    #[allow(clippy::too_many_arguments)]
    fn init(
        &self,
        py: Python<'_>,
        role: &str,
        ip: Option<String>,
        port: Option<u32>,
        key_type: &str,
        id: Option<String>,
        days: u32,
        force: bool,
        allow_custom_id: bool,
        name: Option<String>,
    ) -> PyResult<PyObject> {
        let opts = InitOptions {
            role: convert::role(role)?,
            id,
            host: Some(ip.unwrap_or_else(|| identity::DEFAULT_HOST.to_owned())),
            port,
            key_type: key_type.parse::<GeneratedKeyType>().map_err(CoreError)?,
            validity_days: days,
            force,
            allow_custom_id,
            name,
        };
        let now = OffsetDateTime::now_utc();
        let id = unlocked(py, || identity::init(&self.core(), &opts, now))?;
        to_py(py, &id.summary(now))
    }

    /// This party's identity (`secagg identity show`): party id, role, ip, port, key type,
    /// fingerprint, validity. The stored endpoint (`MPSPDZ_IP`/`MPSPDZ_PORT` are not read).
    fn identity(&self, py: Python<'_>) -> PyResult<PyObject> {
        let id = unlocked(py, || identity::load(&self.core()))?;
        to_py(py, &id.summary(OffsetDateTime::now_utc()))
    }

    /// Changes the stored endpoint (`secagg identity set-endpoint`); peers must register it again.
    fn set_endpoint(&self, py: Python<'_>, ip: &str, port: u32) -> PyResult<PyObject> {
        let id = unlocked(py, || identity::set_endpoint(&self.core(), ip, port))?;
        to_py(py, &id.summary(OffsetDateTime::now_utc()))
    }

    /// The registration bundle others register this party with (`registration-instructions
    /// --format json`): format, version, party_id, role, ip, port, certificate, fingerprint.
    fn bundle(&self, py: Python<'_>) -> PyResult<PyObject> {
        let id = unlocked(py, || identity::load(&self.core()))?;
        to_py(py, &registration::bundle(&id))
    }

    /// The registration instructions as text (Fed-BioMed's layout; the fingerprint is not in
    /// them: read `identity()["fingerprint"]` out separately).
    fn registration_instructions(&self, py: Python<'_>) -> PyResult<String> {
        let id = unlocked(py, || identity::load(&self.core()))?;
        Ok(registration::instructions_text(&id))
    }
}
