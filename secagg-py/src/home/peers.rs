//! `Home`'s methods for the registered peers (`secagg certificate …`): registering one by hand or
//! from its bundle, listing, showing and deleting them, and importing a Fed-BioMed TinyDB.

use std::path::PathBuf;

use pyo3::prelude::*;
use secagg_core::certificate;
use secagg_core::error::ErrorReport;
use secagg_core::fedbiomed as core_fedbiomed;
use secagg_core::registration::{self, CertificateSource, RegisterRequest};
use secagg_core::{Endpoint, Error, PartyId};
use time::OffsetDateTime;

use super::Home;
use crate::convert::{self, json_text, lookup_id, to_dict, to_py};
use crate::errors::{raise_report, unlocked, CoreError};

#[pymethods]
impl Home {
    /// Validates and pins a peer's certificate and endpoint (`secagg certificate register`).
    /// `certificate` is PEM text (a `str` holding `-----BEGIN`), PEM or DER `bytes`, or a path.
    ///
    /// `party_id` must be `researcher_…` / `node_…` unless `allow_custom_id=True` (a Fed-BioMed
    /// deployment with custom ids, `--allow-custom-id`); a custom id also needs its `role`
    /// (`"researcher"` / `"node"`, `--role`), which must be the one Fed-BioMed's rule gives it (a
    /// node id starts with `node_`, every other id is a researcher's). A `role` given for a
    /// prefixed id is checked against it. Refusals raise `InvalidInput`.
    #[pyo3(signature = (certificate, party_id, ip, port, upsert=false, expect_fingerprint=None, role=None, allow_custom_id=false))]
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        py: Python<'_>,
        certificate: &Bound<'_, PyAny>,
        party_id: &str,
        ip: &str,
        port: u32,
        upsert: bool,
        expect_fingerprint: Option<String>,
        role: Option<&str>,
        allow_custom_id: bool,
    ) -> PyResult<PyObject> {
        // The CLI's checks (`certificate register --party-id … [--role …] [--allow-custom-id]`).
        let role = role.map(convert::role).transpose()?;
        let party_id = match role {
            Some(role) => PartyId::parse_with_role(party_id, role, allow_custom_id),
            None => PartyId::parse_entry(party_id, allow_custom_id),
        }
        .map_err(CoreError)?;
        if party_id.is_custom() && role.is_none() {
            return Err(CoreError(
                Error::invalid(format!(
                    "party id `{party_id}` has no `researcher_`/`node_` prefix: state its role"
                ))
                .with_hint("add role=\"researcher\" (Fed-BioMed's rule: an id not starting with `node_` is a researcher's)"),
            )
            .into());
        }
        let (certificate, source) = if let Ok(text) = certificate.extract::<String>() {
            if text.contains("-----BEGIN") {
                let name = "given as PEM text".to_owned();
                (
                    CertificateSource::Bytes {
                        bytes: text.into_bytes(),
                        name,
                    },
                    "python (PEM text)".to_owned(),
                )
            } else {
                let path = PathBuf::from(text);
                let source = format!("file {}", path.display());
                (CertificateSource::File(path), source)
            }
        } else if let Ok(bytes) = certificate.extract::<Vec<u8>>() {
            (
                CertificateSource::Bytes {
                    bytes,
                    name: "given as bytes".to_owned(),
                },
                "python (bytes)".to_owned(),
            )
        } else {
            let path: PathBuf = certificate.extract()?;
            let source = format!("file {}", path.display());
            (CertificateSource::File(path), source)
        };
        let req = RegisterRequest {
            party_id,
            endpoint: Endpoint::new(ip, port).map_err(CoreError)?,
            certificate,
            expect_fingerprint,
            upsert,
            source,
            name: None,
        };
        let r = unlocked(py, || {
            registration::register(&self.core(), &req, OffsetDateTime::now_utc())
        })?;
        to_py(py, &r)
    }

    /// Registers a peer from its registration bundle (`register --bundle`): the dict of
    /// `bundle()` or the path of its JSON file.
    #[pyo3(signature = (bundle, expect_fingerprint=None, upsert=false, allow_custom_id=false))]
    fn register_bundle(
        &self,
        py: Python<'_>,
        bundle: &Bound<'_, PyAny>,
        expect_fingerprint: Option<String>,
        upsert: bool,
        allow_custom_id: bool,
    ) -> PyResult<PyObject> {
        let req = match json_text(bundle)? {
            Some(text) => registration::request_from_bundle_bytes(
                text.as_bytes(),
                "(given as a dict)",
                expect_fingerprint,
                upsert,
                allow_custom_id,
            ),
            None => {
                let path: PathBuf = bundle.extract()?;
                registration::request_from_bundle(
                    &path,
                    expect_fingerprint,
                    upsert,
                    allow_custom_id,
                )
            }
        }
        .map_err(CoreError)?;
        let r = unlocked(py, || {
            registration::register(&self.core(), &req, OffsetDateTime::now_utc())
        })?;
        to_py(py, &r)
    }

    /// Every registered peer (`secagg certificate list --format json`), by party id.
    fn peers(&self, py: Python<'_>) -> PyResult<PyObject> {
        let now = OffsetDateTime::now_utc();
        let peers: Vec<_> = unlocked(py, || registration::list(&self.core()))?
            .iter()
            .map(|p| p.summary(now))
            .collect();
        to_py(py, &peers)
    }

    /// One registered peer with its certificate PEM, subject and validity start
    /// (`secagg certificate show ID --format json`). Raises `NotFound` if not registered (a
    /// custom id, registered with `allow_custom_id`, is looked up as any other).
    fn peer(&self, py: Python<'_>, party_id: &str) -> PyResult<PyObject> {
        let id = lookup_id(party_id)?;
        let p = unlocked(py, || registration::show(&self.core(), &id))?;
        let d = to_dict(py, &p.summary(OffsetDateTime::now_utc()))?;
        d.set_item("subject", &p.subject)?;
        d.set_item("not_before", certificate::format_time(p.not_before))?;
        d.set_item("certificate", p.certificate_pem())?;
        Ok(d.into_any().unbind())
    }

    /// Deletes a registration (`secagg certificate delete ID --yes`); returns what was deleted.
    /// Raises `NotFound` if not registered.
    fn delete_peer(&self, py: Python<'_>, party_id: &str) -> PyResult<PyObject> {
        let id = lookup_id(party_id)?;
        let p = unlocked(py, || registration::delete(&self.core(), &id))?;
        to_py(py, &p.summary(OffsetDateTime::now_utc()))
    }

    /// Registers the certificates of a Fed-BioMed v4 TinyDB file (`certificate
    /// import-fedbiomed`), all validated first. Returns the report; when the import is refused
    /// the exception carries it as `.report`.
    #[pyo3(signature = (path, upsert=false, dry_run=false, skip_invalid=false, allow_custom_ids=false))]
    fn import_fedbiomed(
        &self,
        py: Python<'_>,
        path: PathBuf,
        upsert: bool,
        dry_run: bool,
        skip_invalid: bool,
        allow_custom_ids: bool,
    ) -> PyResult<PyObject> {
        let options = core_fedbiomed::ImportOptions {
            upsert,
            dry_run,
            skip_invalid,
            allow_custom_ids,
        };
        let report = unlocked(py, || {
            core_fedbiomed::import_tinydb_with(
                &self.core(),
                &path,
                &options,
                OffsetDateTime::now_utc(),
            )
        })?;
        let obj = to_py(py, &report)?;
        match report.failure(&options) {
            Some(e) => Err(raise_report(py, &ErrorReport::of(&e), Some(obj))),
            None => Ok(obj),
        }
    }
}
