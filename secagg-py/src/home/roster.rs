//! `Home`'s methods for signed rosters (`secagg roster …`): the researcher exports one, a node
//! shows, imports or pulls it; and the parsers of their roster and import-option arguments.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use secagg_core::agent;
use secagg_core::certificate::Fingerprint;
use secagg_core::home::PUBLIC_FILE_MODE;
use secagg_core::identity;
use secagg_core::roster::{self, ExportOptions, ImportOptions, UnverifiedRoster};
use secagg_core::PartyId;
use time::OffsetDateTime;

use super::Home;
use crate::convert::{json_text, to_py, value_to_py};
use crate::errors::{invalid, unlocked, CoreError};

#[pymethods]
impl Home {
    /// (researcher) Signs a roster of this researcher and every party registered here
    /// (`secagg roster export`), for the nodes to import instead of registering each other.
    ///
    /// With `path`, the roster is written there (atomically; an existing file only with
    /// `force=True`); in any case it is kept as the roster the agent serves (`roster_pull`).
    /// Returns the CLI's JSON summary (`issuer`, `serial`, `issued_at`, `expires_at`,
    /// `parties` (a count), `omitted` (parties left out, expired certificates), `file`) plus
    /// `roster`: the roster file itself as a dict, which `roster_import` also takes.
    /// `valid_days`: 1 to 366. Raises `InvalidInput` at a node.
    #[pyo3(signature = (path=None, valid_days=roster::DEFAULT_VALIDITY_DAYS, force=false))]
    fn roster_export(
        &self,
        py: Python<'_>,
        path: Option<PathBuf>,
        valid_days: u32,
        force: bool,
    ) -> PyResult<PyObject> {
        let home = self.core();
        let opts = ExportOptions {
            validity_days: valid_days,
        };
        let exported = unlocked(py, || {
            let id = identity::load(&home)?;
            if let Some(path) = &path {
                home.check_output(path, force)?;
            }
            let exported = roster::export(&id, &opts, OffsetDateTime::now_utc())?;
            if let Some(path) = &path {
                home.write_output(
                    path,
                    exported.file.to_text().as_bytes(),
                    PUBLIC_FILE_MODE,
                    force,
                )?;
            }
            Ok(exported)
        })?;
        let r = &exported.roster;
        let summary = serde_json::json!({
            "issuer": r.issuer,
            "serial": r.serial,
            "issued_at": r.issued_at,
            "expires_at": r.expires_at,
            "parties": r.parties.len(),
            "omitted": exported.omitted,
            "file": path.as_ref().map(|p| p.display().to_string()),
        });
        let d = value_to_py(py, &summary)?
            .into_bound(py)
            .downcast_into::<PyDict>()?;
        d.set_item("roster", to_py(py, &exported.file)?)?;
        Ok(d.into_any().unbind())
    }

    /// Verifies a roster and says what importing it would change here, writing nothing
    /// (`secagg roster show --format json`): `{"roster": …, "import": plan}` with the verified
    /// roster (issuer, issuer_fingerprint, serial, issued_at, expires_at, parties) and the import
    /// plan (`None` at the researcher that issued it). `roster` is the path of the file, the
    /// dict of `roster_export()["roster"]`, or the file's bytes. The options are
    /// `roster_import`'s; a roster that fails them raises here as it would there.
    #[pyo3(signature = (roster, prune=false, allow_replace=false, expect_fingerprints=None, allow_custom_ids=false, allow_researchers=None))]
    #[allow(clippy::too_many_arguments)]
    fn roster_show(
        &self,
        py: Python<'_>,
        roster: &Bound<'_, PyAny>,
        prune: bool,
        allow_replace: bool,
        expect_fingerprints: Option<&Bound<'_, PyAny>>,
        allow_custom_ids: bool,
        allow_researchers: Option<Vec<String>>,
    ) -> PyResult<PyObject> {
        let file = roster_arg(roster)?;
        let opts = import_options(
            prune,
            allow_replace,
            expect_fingerprints,
            allow_custom_ids,
            allow_researchers,
        )?;
        let (r, plan) = unlocked(py, || {
            let own = identity::load(&self.core())?;
            roster::show(&own, &file, &opts, OffsetDateTime::now_utc())
        })?;
        let d = PyDict::new(py);
        d.set_item("roster", to_py(py, &r)?)?;
        d.set_item("import", to_py(py, &plan)?)?;
        Ok(d.into_any().unbind())
    }

    /// Verifies a roster issued by a researcher registered here and registers its parties, all
    /// or nothing (`secagg roster import FILE --yes`). Returns the applied plan: `issuer`,
    /// `serial`, `previous_serial`, `expires_at`, `changes` (per party: `party_id`, `component`,
    /// `change` — `this_party`, `new`, `unchanged`, `endpoint_changed`, `replaced`, `removed` —,
    /// `endpoint`, `fingerprint`, and the previous endpoint, fingerprint and origin),
    /// `warnings`, `applied` (True).
    ///
    /// There is no prompt: calling this is the confirmation the CLI asks for on a terminal (its
    /// `--yes`). Review a roster first with `roster_show` when a person should decide.
    ///
    /// `roster`: a path, the dict of `roster_export()["roster"]`, or the file's bytes.
    /// `prune`: remove parties that came from this issuer's rosters and are no longer listed
    /// (hand registrations are never removed). `allow_replace`: let the roster replace the
    /// certificate of a party registered here by hand. `expect_fingerprints`: `{party_id:
    /// fingerprint}` (or `["ID=FP", …]`) received out of band; the roster is refused unless it
    /// lists each with exactly that certificate. `allow_custom_ids`: accept ids without the
    /// `researcher_`/`node_` prefix. `allow_researchers`: researcher ids the roster may register
    /// or change besides its issuer (the CLI's `--allow-researcher`: a roster vouches for nodes,
    /// so one that registers another researcher raises `AuthenticationFailure` unless it is
    /// named). A roster changed after it was signed, or not signed with the issuer's registered
    /// key, raises `AuthenticationFailure`; an unregistered issuer
    /// `NotFound`; a serial not newer than the last one imported from this issuer (a replay)
    /// `Conflict`; an expired roster or a refused entry `InvalidInput`. Nothing is written then.
    #[pyo3(signature = (roster, prune=false, allow_replace=false, expect_fingerprints=None, allow_custom_ids=false, allow_researchers=None))]
    #[allow(clippy::too_many_arguments)]
    fn roster_import(
        &self,
        py: Python<'_>,
        roster: &Bound<'_, PyAny>,
        prune: bool,
        allow_replace: bool,
        expect_fingerprints: Option<&Bound<'_, PyAny>>,
        allow_custom_ids: bool,
        allow_researchers: Option<Vec<String>>,
    ) -> PyResult<PyObject> {
        let file = roster_arg(roster)?;
        let opts = import_options(
            prune,
            allow_replace,
            expect_fingerprints,
            allow_custom_ids,
            allow_researchers,
        )?;
        let plan = unlocked(py, || {
            let own = identity::load(&self.core())?;
            roster::import(&own, &file, &opts, None, OffsetDateTime::now_utc())
        })?;
        to_py(py, &plan)
    }

    /// Fetches the latest roster of researcher `from_party` (default: the one researcher
    /// registered here) from its agent (`secagg serve`, over pinned mutual TLS) and imports it
    /// with `roster_import`'s checks and options (`secagg roster pull --yes`). Returns the
    /// applied plan. The network wait runs with the GIL released.
    #[pyo3(signature = (from_party=None, prune=false, allow_replace=false, expect_fingerprints=None, allow_custom_ids=false, allow_researchers=None))]
    #[allow(clippy::too_many_arguments)]
    fn roster_pull(
        &self,
        py: Python<'_>,
        from_party: Option<&str>,
        prune: bool,
        allow_replace: bool,
        expect_fingerprints: Option<&Bound<'_, PyAny>>,
        allow_custom_ids: bool,
        allow_researchers: Option<Vec<String>>,
    ) -> PyResult<PyObject> {
        let from = from_party
            .map(|f| PartyId::parse_custom(f.trim()))
            .transpose()
            .map_err(CoreError)?;
        let opts = import_options(
            prune,
            allow_replace,
            expect_fingerprints,
            allow_custom_ids,
            allow_researchers,
        )?;
        let home = self.core();
        let plan = unlocked(py, || {
            let (from, bytes) = agent::pull_roster(&home, from.as_ref())?;
            let file = UnverifiedRoster::parse(&bytes, &format!("from the agent of {from}"))?;
            let own = identity::load(&home)?;
            roster::import(&own, &file, &opts, None, OffsetDateTime::now_utc())
        })?;
        to_py(py, &plan)
    }
}

/// A roster argument: a path, a dict (the roster file's JSON), or the file's bytes.
fn roster_arg(obj: &Bound<'_, PyAny>) -> PyResult<UnverifiedRoster> {
    if let Some(text) = json_text(obj)? {
        return Ok(
            UnverifiedRoster::parse(text.as_bytes(), "(given as a dict)").map_err(CoreError)?,
        );
    }
    if obj.is_instance_of::<PyBytes>() {
        let bytes: Vec<u8> = obj.extract()?;
        return Ok(UnverifiedRoster::parse(&bytes, "(given as bytes)").map_err(CoreError)?);
    }
    let path: PathBuf = obj.extract()?;
    Ok(UnverifiedRoster::read(&path).map_err(CoreError)?)
}

/// The roster import options; `expect_fingerprints` is a `{party_id: fingerprint}` dict or a
/// list of `"ID=FP"` strings (the CLI's `--expect-fingerprint ID=FP`, checked the same way).
fn import_options(
    prune: bool,
    allow_replace: bool,
    expect_fingerprints: Option<&Bound<'_, PyAny>>,
    allow_custom_ids: bool,
    allow_researchers: Option<Vec<String>>,
) -> PyResult<ImportOptions> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(obj) = expect_fingerprints {
        if let Ok(d) = obj.downcast::<PyDict>() {
            for (k, v) in d.iter() {
                pairs.push((k.extract()?, v.extract()?));
            }
        } else {
            for item in obj.try_iter()? {
                let s: String = item?.extract()?;
                let (id, fp) = s.split_once('=').ok_or_else(|| {
                    invalid(format!(
                        "`{s}` is not ID=FP (e.g. node_7c1e=SHA256:3A:0F:…)"
                    ))
                })?;
                pairs.push((id.to_owned(), fp.to_owned()));
            }
        }
    }
    let mut expect = Vec::with_capacity(pairs.len());
    for (id, fp) in pairs {
        let id = PartyId::parse_custom(id.trim())
            .map_err(|e| CoreError(e.context("in expect_fingerprints")))?;
        Fingerprint::parse(fp.trim())
            .map_err(|e| CoreError(e.context("in expect_fingerprints")))?;
        expect.push((id, fp.trim().to_owned()));
    }
    let mut researchers = Vec::new();
    for id in allow_researchers.unwrap_or_default() {
        let id = PartyId::parse_custom(id.trim())
            .map_err(|e| CoreError(e.context("in allow_researchers")))?;
        researchers.push(id);
    }
    Ok(ImportOptions {
        prune,
        allow_replace,
        allow_custom_ids,
        expect_fingerprints: expect,
        allow_researchers: researchers,
    })
}
