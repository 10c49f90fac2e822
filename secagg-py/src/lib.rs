//! `secagg._native`: the Rust half of the Python package `secagg` (see `python/secagg/`).
//!
//! A thin layer over `secagg-core`'s public API, with no logic of its own: each method turns its
//! Python arguments into the core's typed options (the way `secagg-cli/src/commands/*.rs` turn
//! command-line options into them), calls one core function, and turns the result into plain
//! Python values: the core's serialisable summaries become `dict`s (the same fields as the CLI's
//! `--format json`), keys become Python `int`s. A core [`secagg_core::Error`] becomes the
//! exception of its kind from `secagg._errors` (message, hint, exit code).
//!
//! Long calls (a negotiation, encryption and decryption of many parameters) run with the GIL
//! released. A negotiation runs in a helper thread while the calling thread watches for Ctrl-C
//! (Python's signal check) and for a [`CancelToken`]: either sets the core's cancel flag
//! ([`secagg_core::session::negotiate_cancellable`]), so that the party aborts the session with
//! nothing stored.
// PyO3's macros expand to code that needs no `unsafe` of ours: forbid it outright.
#![forbid(unsafe_code)]

mod fedbiomed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use num_bigint::{BigInt, BigUint};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use secagg_core::agent::{self, Nodes, RunRequest};
use secagg_core::aggregate::{
    self, Biprime, CiphertextFile, DecryptRequest, EncryptRequest, UnsignedFiles,
};
use secagg_core::certificate::{self, Fingerprint, GeneratedKeyType, DEFAULT_VALIDITY_DAYS};
use secagg_core::engine::{CancelFlag, Engine, MpSpdzEngine, NativeEngine, SecretKey};
use secagg_core::error::ErrorReport;
use secagg_core::fedbiomed as core_fedbiomed;
use secagg_core::home::{Home as CoreHome, PUBLIC_FILE_MODE};
use secagg_core::identity::{self, InitOptions};
use secagg_core::mpspdz::MpSpdzRoot;
use secagg_core::registration::{self, CertificateSource, RegisterRequest};
use secagg_core::roster::{self, ExportOptions, ImportOptions, UnverifiedRoster};
use secagg_core::session::{self, SessionRequest};
use secagg_core::{Endpoint, Error, ErrorKind, PartyId, Role, SessionId};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// How often a waiting negotiation looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// What a long call's worker returns: its result and the warnings it collected.
type Worked<T> = (Result<T, Error>, Vec<String>);

/// Runs `work` (which returns a result and its warnings) on a thread with the GIL released,
/// checking for Ctrl-C every [`SIGNAL_POLL`] while it runs (signals are only seen in the main
/// thread): on one, `flag` is set so that `work` stops, and the `KeyboardInterrupt` is returned
/// beside its result. Returns as soon as `work` is done (regression: it slept a whole poll
/// interval first, so every `session_run` and `negotiate` took at least 50 ms).
fn interruptible<T: Send>(
    py: Python<'_>,
    flag: &CancelFlag,
    what: &str,
    work: impl FnOnce() -> Worked<T> + Send,
) -> (Worked<T>, Option<PyErr>) {
    py.allow_threads(|| {
        std::thread::scope(|s| {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let worker = s.spawn(move || {
                let _ = done_tx.send(work());
            });
            let mut interrupt: Option<PyErr> = None;
            let done = loop {
                match done_rx.recv_timeout(SIGNAL_POLL) {
                    Ok(done) => break done,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if interrupt.is_none() {
                            if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                                flag.cancel();
                                interrupt = Some(e);
                            }
                        }
                    }
                    // The worker ended without a result: it panicked (joined here, so that the
                    // scope does not panic in turn).
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = worker.join();
                        break (
                            Err(Error::internal(format!("the {what} thread panicked"))),
                            Vec::new(),
                        );
                    }
                }
            };
            (done, interrupt)
        })
    })
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A core error on its way to Python.
pub(crate) struct CoreError(Error);

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
fn raise_report(py: Python<'_>, r: &ErrorReport, report: Option<PyObject>) -> PyErr {
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

type CoreResult<T> = Result<T, CoreError>;

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

fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError(Error::invalid(msg))
}

// ---------------------------------------------------------------------------------------------
// Conversions

/// A serialisable core value as plain Python values (dict, list, str, int, float, bool, None).
fn to_py<T: Serialize>(py: Python<'_>, v: &T) -> PyResult<PyObject> {
    let v = serde_json::to_value(v)
        .map_err(|e| PyRuntimeError::new_err(format!("internal error: {e}")))?;
    value_to_py(py, &v)
}

fn value_to_py(py: Python<'_>, v: &Value) -> PyResult<PyObject> {
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
fn to_dict<'py, T: Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyDict>> {
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
fn json_text(obj: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if obj.is_instance_of::<PyDict>() || obj.is_instance_of::<PyList>() {
        let json = obj.py().import("json")?;
        return Ok(Some(json.call_method1("dumps", (obj,))?.extract()?));
    }
    Ok(None)
}

fn session_id(s: &str) -> CoreResult<SessionId> {
    Ok(SessionId::parse(s)?)
}

fn party_id(s: &str) -> CoreResult<PartyId> {
    Ok(PartyId::parse(s)?)
}

/// A party id to look a registration up by: a custom id is accepted (it may have been registered
/// with `allow_custom_id`); looking up changes nothing.
fn lookup_id(s: &str) -> CoreResult<PartyId> {
    Ok(PartyId::parse_entry(s, true)?)
}

fn role(s: &str) -> CoreResult<Role> {
    Ok(s.parse()?)
}

/// The biprime argument: `None` (Fed-BioMed's `default_biprime0`), an int, or the path of a
/// Fed-BioMed biprime JSON file.
fn biprime_arg(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Biprime> {
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

// ---------------------------------------------------------------------------------------------
// Cancellation

/// A flag that stops a running `Home.negotiate` from another thread: `token.cancel()`.
///
/// The negotiation then aborts at its next wait, tells its peers, stores nothing and raises
/// `secagg.PeerFailure` ("… cancelled the negotiation …"), unless this party had already stored
/// its key (then the session finishes normally). Ctrl-C does the same in the main thread and
/// raises `KeyboardInterrupt`. A token can serve one negotiation or several.
#[pyclass(frozen, module = "secagg._native")]
#[derive(Default)]
struct CancelToken {
    flag: CancelFlag,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Asks the negotiations using this token to stop.
    fn cancel(&self) {
        self.flag.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!("CancelToken(cancelled={})", self.cancelled_str())
    }
}

impl CancelToken {
    fn cancelled_str(&self) -> &'static str {
        if self.flag.is_cancelled() {
            "True"
        } else {
            "False"
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The home

/// A party's secagg home directory (what the CLI's `--home` names): its identity, its store of
/// registered peers, and its negotiated keys (contexts).
///
/// Every method is one call of secagg-core, as the `secagg` command makes it; results are plain
/// dicts with the fields of the CLI's `--format json` output, keys are ints. Errors raise
/// `secagg.Error` subclasses carrying `message`, `hint` and `exit_code`.
#[pyclass(frozen, module = "secagg._native")]
struct Home {
    root: PathBuf,
}

impl Home {
    fn core(&self) -> CoreHome {
        CoreHome::new(&self.root)
    }
}

#[pymethods]
impl Home {
    #[new]
    fn new(path: PathBuf) -> Self {
        Home { root: path }
    }

    /// The home directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.root.clone()
    }

    fn __repr__(&self) -> String {
        format!("Home({:?})", self.root.display().to_string())
    }

    /// Creates this party's identity (`secagg init`): party id, endpoint, private key (0600) and
    /// self-signed certificate. Returns the identity (as `identity()`).
    #[pyo3(signature = (role, ip=None, port=None, key_type="p256", id=None, days=DEFAULT_VALIDITY_DAYS, force=false, allow_custom_id=false))]
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
    ) -> PyResult<PyObject> {
        let opts = InitOptions {
            role: self::role(role)?,
            id,
            host: Some(ip.unwrap_or_else(|| identity::DEFAULT_HOST.to_owned())),
            port,
            key_type: key_type.parse::<GeneratedKeyType>().map_err(CoreError)?,
            validity_days: days,
            force,
            allow_custom_id,
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

    /// The registration instructions as text (Fed-BioMed's layout, with the fingerprint).
    fn registration_instructions(&self, py: Python<'_>) -> PyResult<String> {
        let id = unlocked(py, || identity::load(&self.core()))?;
        Ok(registration::instructions_text(&id))
    }

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
        let role = role.map(self::role).transpose()?;
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

    /// Runs this party's side of a key negotiation (`secagg negotiate`) and stores the key.
    ///
    /// Every party of the session calls it with the same `session` (a uuid, or Fed-BioMed's
    /// `secagg_<uuid>`) and `parties` (researcher first). Blocks, with the GIL released, until
    /// the session succeeded (returns the report: never the key, see `context`), failed, or
    /// timed out (`timeout` seconds; default 60 for `native`, 90 for `mp-spdz`). Ctrl-C in the
    /// main thread, or `cancel.cancel()` from another, stops it with nothing stored (native
    /// engine; see `CancelToken`).
    #[pyo3(signature = (session, parties, timeout=None, engine="native", key_bits=None, listen=None, mpspdz_root=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn negotiate(
        &self,
        py: Python<'_>,
        session: &str,
        parties: Vec<String>,
        timeout: Option<f64>,
        engine: &str,
        key_bits: Option<u32>,
        listen: Option<String>,
        mpspdz_root: Option<PathBuf>,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<PyObject> {
        let home = self.core();
        let session_id = session_id(session)?;
        let parties = parties
            .iter()
            .map(|p| PartyId::parse(p.trim()).map_err(|e| CoreError(e.context("in parties"))))
            .collect::<CoreResult<Vec<_>>>()?;
        let engine: Box<dyn Engine + Send + Sync> = match engine {
            "native" => Box::new(NativeEngine),
            "mp-spdz" => {
                let root = MpSpdzRoot::locate(mpspdz_root.as_deref()).map_err(CoreError)?;
                Box::new(MpSpdzEngine::new(root, &home))
            }
            other => {
                return Err(invalid(format!(
                    "unknown engine `{other}`: expected `native` or `mp-spdz`"
                ))
                .into())
            }
        };
        let timeout = match timeout {
            None => engine.default_timeout(),
            Some(t) if t.is_finite() && (0.001..=86_400.0).contains(&t) => {
                Duration::from_secs_f64(t)
            }
            Some(t) => {
                return Err(
                    invalid(format!("timeout {t} s is out of range (0.001 to 86400)")).into(),
                )
            }
        };
        let listen = listen
            .map(|l| {
                l.parse::<SocketAddr>()
                    .map_err(|_| invalid(format!("listen address `{l}` is not IP:PORT")))
            })
            .transpose()?;
        let req = SessionRequest {
            session_id,
            parties,
            timeout,
            key_bits,
            prime: None,
            listen,
            endpoint: None,
        };
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        let ((result, warnings), interrupt) = interruptible(py, &flag, "negotiation", || {
            let mut warnings: Vec<String> = Vec::new();
            let mut warn = |w: &str| warnings.push(w.to_owned());
            let r = session::negotiate_cancellable(&home, &req, engine.as_ref(), &mut warn, &flag);
            (r, warnings)
        });
        match (result, interrupt) {
            // Interrupted and stopped: nothing stored; Python's own KeyboardInterrupt.
            (Err(_), Some(interrupt)) => Err(interrupt),
            (Err(e), None) => Err(CoreError(e).into()),
            // Interrupted after the key was stored: the session finished, its key is final.
            (Ok(report), _) => {
                let d = to_dict(py, &report)?;
                d.set_item("warnings", warnings)?;
                Ok(d.into_any().unbind())
            }
        }
    }

    /// Every stored context (negotiated key) without the keys, newest first
    /// (`secagg context list --format json`).
    fn contexts(&self, py: Python<'_>) -> PyResult<PyObject> {
        let list: Vec<_> = unlocked(py, || session::list_contexts(&self.core()))?
            .iter()
            .map(|c| c.summary(false))
            .collect();
        to_py(py, &list)
    }

    /// One stored context (`secagg context show`); with `reveal_key=True` it has `key`: the
    /// server key `sk0` (a negative int) at the researcher, the user key `sk_i` at a node.
    /// Raises `NotFound` when none is stored for `session`.
    #[pyo3(signature = (session, reveal_key=false))]
    fn context(&self, py: Python<'_>, session: &str, reveal_key: bool) -> PyResult<PyObject> {
        let id = session_id(session)?;
        let c = unlocked(py, || session::get_context(&self.core(), &id))?;
        let summary = c.summary(reveal_key);
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

    /// (node) Encrypts `params` for training round `round` with this node's key of `session`
    /// (`secagg aggregate encrypt`). Returns the ciphertext file as a dict (`json.dump` it to
    /// get the CLI's file). `biprime`: None (Fed-BioMed's default), an int, or a Fed-BioMed
    /// biprime JSON file.
    #[pyo3(signature = (session, round, params, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE, biprime=None))]
    fn encrypt(
        &self,
        py: Python<'_>,
        session: &str,
        round: u64,
        params: Vec<f64>,
        clipping_range: u32,
        biprime: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let biprime = biprime_arg(biprime)?;
        let req = EncryptRequest {
            clipping_range,
            ..EncryptRequest::new(session_id(session)?, round, params)
        };
        let home = self.core();
        let file = py
            .allow_threads(|| aggregate::encrypt_round(&home, &req, &biprime, None))
            .map_err(CoreError)?;
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
        let avg = py
            .allow_threads(|| aggregate::decrypt_round(&home, &req, &biprime, None))
            .map_err(CoreError)?;
        to_py(py, &avg)
    }

    // -----------------------------------------------------------------------------------------
    // Rosters (`secagg roster …`)

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
        let plan = py
            .allow_threads(|| -> Result<_, Error> {
                let (from, bytes) = agent::pull_roster(&home, from.as_ref())?;
                let file = UnverifiedRoster::parse(&bytes, &format!("from the agent of {from}"))?;
                let own = identity::load(&home)?;
                roster::import(&own, &file, &opts, None, OffsetDateTime::now_utc())
            })
            .map_err(CoreError)?;
        to_py(py, &plan)
    }

    // -----------------------------------------------------------------------------------------
    // Through the party agents (`secagg session run`, `secagg federation check`)

    /// (researcher) Runs a whole key negotiation through the nodes' agents (`secagg session
    /// run`): every node's agent (`secagg serve`) is asked to join, then this party runs its own
    /// side and stores the server key, only once every node has durably stored its key.
    ///
    /// `parties`: the nodes in session order (this researcher may be listed first or left out),
    /// or `all=True` for every registered node (sorted by id); exactly one of the two.
    /// `session`: a uuid or `secagg_<uuid>` (default: a new one). `timeout`: seconds for the
    /// whole session. `engine="mp-spdz"`: every node's agent runs its `shamir-party.x` (agents
    /// started with `--mpspdz-ports A-B --mpspdz-root DIR`), and so does this party, from
    /// `mpspdz_root` (default: `MPSPDZ_ROOT`, as `negotiate`), on `mpspdz_port` (default: this
    /// party's endpoint port, which must then be free). Blocks with the GIL released; Ctrl-C, or
    /// `cancel` (a :class:`CancelToken`) set from another thread, stops it: before the start, no
    /// node is started; after it, this party stops its side unless the server key is already
    /// stored (then the session completed and its report is returned), and the nodes still
    /// running are cancelled.
    ///
    /// Returns the CLI's JSON report when the session succeeded (`session_id`, `engine`, `ok`,
    /// `parties`: one row per party with `party_id`, `role`, `state` — `confirmed`, `stored`,
    /// `refused`, `unreachable`, `cancelled`, `failed` —, `key`, `ms`, `error`; `total_ms`,
    /// `key_fingerprint`, plus `warnings`). When it did not (where the CLI exits non-zero), raises
    /// the exception of the failure's kind (a refusal by policy `AuthenticationFailure`, a limit
    /// `Conflict`, an unreachable agent `PeerFailure`, a timeout `Timeout`, …) with that same
    /// report as `.report`, so that the rows say which party failed and why.
    #[pyo3(signature = (parties=None, all=false, session=None, engine="native", timeout=60.0, key_bits=None, mpspdz_root=None, mpspdz_port=None, cancel=None, wait_for_agents=None))]
    #[allow(clippy::too_many_arguments)]
    fn session_run(
        &self,
        py: Python<'_>,
        parties: Option<Vec<String>>,
        all: bool,
        session: Option<&str>,
        engine: &str,
        timeout: f64,
        key_bits: Option<u32>,
        mpspdz_root: Option<PathBuf>,
        mpspdz_port: Option<u16>,
        cancel: Option<PyRef<'_, CancelToken>>,
        wait_for_agents: Option<f64>,
    ) -> PyResult<PyObject> {
        let mut run_options = match engine {
            "native" => {
                if mpspdz_root.is_some() || mpspdz_port.is_some() {
                    return Err(invalid(
                        "`mpspdz_root` and `mpspdz_port` are for engine=\"mp-spdz\"",
                    )
                    .into());
                }
                agent::RunOptions::default()
            }
            "mp-spdz" => agent::RunOptions {
                mpspdz: Some(agent::RunMpSpdz {
                    root: MpSpdzRoot::locate(mpspdz_root.as_deref()).map_err(CoreError)?,
                    port: mpspdz_port,
                }),
                ..Default::default()
            },
            other => {
                return Err(invalid(format!(
                    "unknown engine `{other}`: expected `native` or `mp-spdz`"
                ))
                .into())
            }
        };
        let timeout = seconds("timeout", timeout)?;
        run_options.wait_for_agents = wait_for_agents
            .map(|w| seconds("wait_for_agents", w))
            .transpose()?;
        let session_id = session.map(session_id).transpose()?;
        let home = self.core();
        let nodes = match (parties, all) {
            (Some(_), true) => {
                return Err(invalid("give either `parties` or `all=True`, not both").into())
            }
            (None, false) => {
                return Err(
                    invalid("say which nodes take part: `parties=[…]` or `all=True`").into(),
                )
            }
            (None, true) => Nodes::All,
            (Some(parties), false) => Nodes::Listed(
                parties
                    .iter()
                    .map(|p| {
                        PartyId::parse(p.trim()).map_err(|e| CoreError(e.context("in parties")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let req = RunRequest {
            session_id: session_id.unwrap_or_else(SessionId::generate),
            nodes,
            timeout,
            key_bits,
        };
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        run_options.cancel = Some(flag.clone());
        let ((result, warnings), interrupt) = interruptible(py, &flag, "session", || {
            let mut warnings: Vec<String> = Vec::new();
            let mut warn = |w: &str| warnings.push(w.to_owned());
            let r = agent::run_session_with(&home, &req, &run_options, &mut warn);
            (r, warnings)
        });
        let (report, error) = result.map_err(CoreError)?;
        let d = to_dict(py, &report)?;
        d.set_item("warnings", warnings)?;
        let obj = d.into_any().unbind();
        match (error, interrupt) {
            // Interrupted and stopped (no server key): Python's own KeyboardInterrupt.
            (Some(_), Some(interrupt)) => Err(interrupt),
            (Some(e), None) => Err(raise_report(py, &ErrorReport::of(&e), Some(obj))),
            // Interrupted after the server key was stored: the session finished.
            (None, _) => Ok(obj),
        }
    }

    /// A node's side of one session it knows only by its party list (Fed-BioMed's
    /// `exec_shamir` at a node): listens on this party's endpoint for the request of the list's
    /// researcher for a session among exactly `parties` (others are refused, and the wait goes
    /// on), runs it, and returns its session id once this node's key is stored and confirmed.
    /// Raises `Timeout` when no such request came within `wait` seconds, the session's failure
    /// otherwise. Runs with the GIL released; Ctrl-C or `cancel` stops it.
    #[pyo3(signature = (parties, wait=60.0, cancel=None))]
    fn serve_one_session(
        &self,
        py: Python<'_>,
        parties: Vec<String>,
        wait: f64,
        cancel: Option<PyRef<'_, CancelToken>>,
    ) -> PyResult<String> {
        let parties = parties
            .iter()
            .map(|p| PartyId::parse(p.trim()).map_err(|e| CoreError(e.context("in parties"))))
            .collect::<CoreResult<Vec<_>>>()?;
        let flag = cancel.map(|c| c.flag.clone()).unwrap_or_default();
        let req = agent::OneSession {
            parties,
            wait: seconds("wait", wait)?,
            cancel: Some(flag.clone()),
        };
        let home = self.core();
        let ((result, _), interrupt) = interruptible(py, &flag, "session", || {
            (agent::serve_one(&home, &req), Vec::new())
        });
        match (result, interrupt) {
            (Ok(sid), _) => Ok(sid.to_string()),
            (Err(_), Some(interrupt)) => Err(interrupt),
            (Err(e), None) => Err(CoreError(e).into()),
        }
    }

    /// Contacts the agent of every registered party (or of `parties`) and reports per party
    /// (`secagg federation check --format json`'s `parties`): `party_id`, `role`, `endpoint`,
    /// `ok`, `reachable`, `mutual_tls`, `secagg_version`, `protocol_version`, `clock_skew_ms`,
    /// `certificate_days_left`, `roster_serial`, `sessions`, `ms`, `problem` (`unreachable`,
    /// `not_an_agent`, `wrong_certificate`, `not_registered_there`, `clock_skew`,
    /// `version_mismatch`, `certificate_invalid`, `timeout`) and `message`.
    ///
    /// Returns the rows when every party passed. Otherwise (where the CLI exits non-zero) raises
    /// the CLI's exception, naming each failed party — of the first failed party's kind: a wrong
    /// certificate or this party not registered there `AuthenticationFailure`, a timeout
    /// `Timeout`, an invalid certificate `InvalidInput`, anything else `PeerFailure` — with the
    /// rows as `.report`. `all=True` is the default's explicit spelling. Runs with the GIL
    /// released.
    #[pyo3(signature = (parties=None, all=false, max_clock_skew=60.0))]
    fn federation_check(
        &self,
        py: Python<'_>,
        parties: Option<Vec<String>>,
        all: bool,
        max_clock_skew: f64,
    ) -> PyResult<PyObject> {
        if all && parties.is_some() {
            return Err(invalid("give either `parties` or `all=True`, not both").into());
        }
        let max_skew = seconds("max_clock_skew", max_clock_skew)?;
        let only = parties
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        PartyId::parse(p.trim()).map_err(|e| CoreError(e.context("in parties")))
                    })
                    .collect::<CoreResult<Vec<_>>>()
            })
            .transpose()?;
        let home = self.core();
        let rows = py
            .allow_threads(|| agent::check_federation(&home, only.as_deref(), max_skew))
            .map_err(CoreError)?;
        let obj = to_py(py, &rows)?;
        match agent::federation_failure(&rows) {
            Some(e) => Err(raise_report(py, &ErrorReport::of(&e), Some(obj))),
            None => Ok(obj),
        }
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

/// A duration argument in seconds, in the CLI's range (1 ms to 24 h).
fn seconds(name: &str, t: f64) -> CoreResult<Duration> {
    if t.is_finite() && (0.001..=86_400.0).contains(&t) {
        Ok(Duration::from_secs_f64(t))
    } else {
        Err(invalid(format!(
            "{name} {t} s is out of range (0.001 to 86400)"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Module functions

/// Every error kind: `name`, `exit_code` and `description`, in exit-code order (the CLI's
/// table, from the core's single list).
#[pyfunction]
fn error_kinds(py: Python<'_>) -> PyResult<PyObject> {
    let kinds: Vec<Value> = ErrorKind::ALL
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name(),
                "exit_code": k.exit_code(),
                "description": k.description(),
            })
        })
        .collect();
    value_to_py(py, &Value::Array(kinds))
}

/// A fresh session id (uuid4); with `fedbiomed=True` in Fed-BioMed's `secagg_<uuid>` form.
#[pyfunction]
#[pyo3(signature = (fedbiomed=false))]
fn new_session_id(fedbiomed: bool) -> String {
    let id = SessionId::generate();
    if fedbiomed {
        id.fedbiomed_form()
    } else {
        id.to_string()
    }
}

/// The uuid form of a session id (`secagg_<uuid>` or any uuid spelling), as stored; raises
/// `InvalidInput` for anything else.
#[pyfunction]
fn normalize_session_id(session: &str) -> PyResult<String> {
    Ok(session_id(session)?.to_string())
}

/// Checks a party id (`researcher_…` / `node_…`); returns its role. Raises `InvalidInput`.
#[pyfunction]
fn party_role(party_id: &str) -> PyResult<String> {
    Ok(self::party_id(party_id)?.role().to_string())
}

/// Generates a key pair and a self-signed certificate (`CN=*`, `O=<party_id>`, X.509 v3,
/// serverAuth + clientAuth) without a home: returns `(key_pem, certificate_pem)`. `party_id`
/// may be a Fed-BioMed custom id.
#[pyfunction]
#[pyo3(signature = (party_id, key_type="p256", days=DEFAULT_VALIDITY_DAYS))]
fn generate_certificate(party_id: &str, key_type: &str, days: u32) -> PyResult<(String, String)> {
    let id = PartyId::parse_custom(party_id).map_err(CoreError)?;
    let g = certificate::generate(
        &id,
        key_type.parse().map_err(CoreError)?,
        days,
        OffsetDateTime::now_utc(),
    )
    .map_err(CoreError)?;
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", g.certificate.der.clone()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok((g.key_pem.to_string(), pem))
}

/// Reads a biprime in Fed-BioMed's JSON form (`{"secagg_id": …, "biprime": <integer>,
/// "max_keysize": …}`, the text of a file such as Fed-BioMed's `biprime0.json`) as secagg reads
/// `--biprime FILE`, checking the value (odd, 512 to 1024 bits). Returns `(secagg_id, biprime)`;
/// raises `InvalidInput`.
#[pyfunction]
fn read_biprime(text: &str) -> PyResult<(String, BigUint)> {
    let b = Biprime::from_fedbiomed_json(text).map_err(CoreError)?;
    Ok((b.name.clone(), b.n().clone()))
}

/// The line of MP-SPDZ's ip file for the endpoint `ip`:`port` (without its newline), by the
/// core's rule: an IPv4 address or a host name as is, an IPv4-mapped IPv6 address as IPv4, any
/// other IPv6 address refused (`InvalidInput`: MP-SPDZ splits at the first `:`).
#[pyfunction]
fn ip_file_line(ip: &str, port: u32) -> PyResult<String> {
    let endpoint = Endpoint::new(ip, port).map_err(CoreError)?;
    Ok(secagg_core::mpspdz::ip_file_line(&endpoint).map_err(CoreError)?)
}

/// Joye–Libert encryption with a node's key, bit-compatible with Fed-BioMed v4.5.0's
/// `SecaggCrypter.encrypt`: `params` quantised with `clipping_range`, packed for `num_nodes`
/// nodes, encrypted for round `round`. Returns the ciphertexts (ints).
#[pyfunction]
#[pyo3(signature = (num_nodes, round, params, key, biprime, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE))]
fn jl_encrypt(
    py: Python<'_>,
    num_nodes: usize,
    round: u64,
    params: Vec<f64>,
    key: BigInt,
    biprime: BigUint,
    clipping_range: u32,
) -> PyResult<Vec<BigUint>> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    let q = aggregate::quantize(&params, clipping_range).map_err(CoreError)?;
    Ok(py
        .allow_threads(|| aggregate::encrypt(&q, &key, round, num_nodes, &biprime))
        .map_err(CoreError)?)
}

/// Joye–Libert aggregation and decryption with the server key: the product of every node's
/// ciphertexts (`ciphertexts[i]` from node i), decrypted for round `round`, unpacked into
/// `count` sums of quantised values (default: every value the ciphertexts can hold).
#[pyfunction]
#[pyo3(signature = (num_nodes, round, ciphertexts, key, biprime, count=None))]
fn jl_decrypt_sums(
    py: Python<'_>,
    num_nodes: usize,
    round: u64,
    ciphertexts: Vec<Vec<BigUint>>,
    key: BigInt,
    biprime: BigUint,
    count: Option<usize>,
) -> PyResult<Vec<u64>> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    Ok(py
        .allow_threads(|| {
            let aggregated = aggregate::aggregate(&ciphertexts, &biprime)?;
            let count =
                count.unwrap_or(aggregated.len() * aggregate::elements_per_plaintext(num_nodes));
            aggregate::decrypt(&aggregated, &key, round, num_nodes, count, &biprime)
        })
        .map_err(CoreError)?)
}

/// The average of `num_nodes` nodes' values from the sums of their quantised values, back in
/// the original scale (Fed-BioMed's reverse quantisation).
#[pyfunction]
#[pyo3(signature = (sums, num_nodes, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE))]
fn jl_average(sums: Vec<u64>, num_nodes: usize, clipping_range: u32) -> Vec<f64> {
    aggregate::average(&sums, num_nodes, clipping_range)
}

/// The Python module `secagg._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_BIPRIME0", aggregate::DEFAULT_BIPRIME0)?;
    m.add("DEFAULT_CLIPPING_RANGE", aggregate::DEFAULT_CLIPPING_RANGE)?;
    m.add("DEFAULT_KEY_BITS", secagg_core::engine::DEFAULT_KEY_BITS)?;
    m.add_class::<Home>()?;
    m.add_class::<CancelToken>()?;
    m.add_function(wrap_pyfunction!(error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(new_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(party_role, m)?)?;
    m.add_function(wrap_pyfunction!(generate_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(read_biprime, m)?)?;
    m.add_function(wrap_pyfunction!(ip_file_line, m)?)?;
    m.add_function(wrap_pyfunction!(jl_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(jl_decrypt_sums, m)?)?;
    m.add_function(wrap_pyfunction!(jl_average, m)?)?;
    fedbiomed::register(m)?;
    Ok(())
}
