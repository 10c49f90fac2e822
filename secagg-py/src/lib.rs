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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use num_bigint::{BigInt, BigUint};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use secagg_core::aggregate::{self, Biprime, CiphertextFile, EncryptRequest};
use secagg_core::certificate::{self, GeneratedKeyType, DEFAULT_VALIDITY_DAYS};
use secagg_core::engine::{CancelFlag, Engine, MpSpdzEngine, NativeEngine, SecretKey};
use secagg_core::error::ErrorReport;
use secagg_core::fedbiomed;
use secagg_core::home::Home as CoreHome;
use secagg_core::identity::{self, InitOptions};
use secagg_core::mpspdz::MpSpdzRoot;
use secagg_core::registration::{self, CertificateSource, RegisterRequest};
use secagg_core::session::{self, SessionRequest};
use secagg_core::{Endpoint, Error, ErrorKind, PartyId, Role, SessionId};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

/// How often a waiting negotiation looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Errors

/// A core error on its way to Python.
struct CoreError(Error);

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
fn decimal_to_int(py: Python<'_>, s: &str) -> PyResult<PyObject> {
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
        let id = identity::init(&self.core(), &opts, now).map_err(CoreError)?;
        to_py(py, &id.summary(now))
    }

    /// This party's identity (`secagg identity show`): party id, role, ip, port, key type,
    /// fingerprint, validity. The stored endpoint (`MPSPDZ_IP`/`MPSPDZ_PORT` are not read).
    fn identity(&self, py: Python<'_>) -> PyResult<PyObject> {
        let id = identity::load(&self.core()).map_err(CoreError)?;
        to_py(py, &id.summary(OffsetDateTime::now_utc()))
    }

    /// Changes the stored endpoint (`secagg identity set-endpoint`); peers must register it again.
    fn set_endpoint(&self, py: Python<'_>, ip: &str, port: u32) -> PyResult<PyObject> {
        let id = identity::set_endpoint(&self.core(), ip, port).map_err(CoreError)?;
        to_py(py, &id.summary(OffsetDateTime::now_utc()))
    }

    /// The registration bundle others register this party with (`registration-instructions
    /// --format json`): format, version, party_id, role, ip, port, certificate, fingerprint.
    fn bundle(&self, py: Python<'_>) -> PyResult<PyObject> {
        let id = identity::load(&self.core()).map_err(CoreError)?;
        to_py(py, &registration::bundle(&id))
    }

    /// The registration instructions as text (Fed-BioMed's layout, with the fingerprint).
    fn registration_instructions(&self) -> PyResult<String> {
        let id = identity::load(&self.core()).map_err(CoreError)?;
        Ok(registration::instructions_text(&id))
    }

    /// Validates and pins a peer's certificate and endpoint (`secagg certificate register`).
    /// `certificate` is PEM text (a `str` holding `-----BEGIN`), PEM or DER `bytes`, or a path.
    #[pyo3(signature = (certificate, party_id, ip, port, upsert=false, expect_fingerprint=None))]
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
    ) -> PyResult<PyObject> {
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
            party_id: self::party_id(party_id)?,
            endpoint: Endpoint::new(ip, port).map_err(CoreError)?,
            certificate,
            expect_fingerprint,
            upsert,
            source,
        };
        let r = registration::register(&self.core(), &req, OffsetDateTime::now_utc())
            .map_err(CoreError)?;
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
        let r = registration::register(&self.core(), &req, OffsetDateTime::now_utc())
            .map_err(CoreError)?;
        to_py(py, &r)
    }

    /// Every registered peer (`secagg certificate list --format json`), by party id.
    fn peers(&self, py: Python<'_>) -> PyResult<PyObject> {
        let now = OffsetDateTime::now_utc();
        let peers: Vec<_> = registration::list(&self.core())
            .map_err(CoreError)?
            .iter()
            .map(|p| p.summary(now))
            .collect();
        to_py(py, &peers)
    }

    /// One registered peer with its certificate PEM, subject and validity start
    /// (`secagg certificate show ID --format json`). Raises `NotFound` if not registered.
    fn peer(&self, py: Python<'_>, party_id: &str) -> PyResult<PyObject> {
        let p = registration::show(&self.core(), &self::party_id(party_id)?).map_err(CoreError)?;
        let d = to_dict(py, &p.summary(OffsetDateTime::now_utc()))?;
        d.set_item("subject", &p.subject)?;
        d.set_item("not_before", certificate::format_time(p.not_before))?;
        d.set_item("certificate", p.certificate_pem())?;
        Ok(d.into_any().unbind())
    }

    /// Deletes a registration (`secagg certificate delete ID --yes`); returns what was deleted.
    /// Raises `NotFound` if not registered.
    fn delete_peer(&self, py: Python<'_>, party_id: &str) -> PyResult<PyObject> {
        let p =
            registration::delete(&self.core(), &self::party_id(party_id)?).map_err(CoreError)?;
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
        let options = fedbiomed::ImportOptions {
            upsert,
            dry_run,
            skip_invalid,
            allow_custom_ids,
        };
        let report =
            fedbiomed::import_tinydb_with(&self.core(), &path, &options, OffsetDateTime::now_utc())
                .map_err(CoreError)?;
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
        let (result, warnings, interrupt) = py.allow_threads(|| {
            std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    let mut warnings: Vec<String> = Vec::new();
                    let mut warn = |w: &str| warnings.push(w.to_owned());
                    let r = session::negotiate_cancellable(
                        &home,
                        &req,
                        engine.as_ref(),
                        &mut warn,
                        &flag,
                    );
                    (r, warnings)
                });
                let mut interrupt: Option<PyErr> = None;
                while !worker.is_finished() {
                    std::thread::sleep(SIGNAL_POLL);
                    if interrupt.is_none() {
                        // Ctrl-C (only seen in the main thread): stop the session.
                        if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                            flag.cancel();
                            interrupt = Some(e);
                        }
                    }
                }
                let (r, w) = worker.join().unwrap_or_else(|_| {
                    (
                        Err(Error::internal("the negotiation thread panicked")),
                        Vec::new(),
                    )
                });
                (r, w, interrupt)
            })
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
        let list: Vec<_> = session::list_contexts(&self.core())
            .map_err(CoreError)?
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
        let c = session::get_context(&self.core(), &session_id(session)?).map_err(CoreError)?;
        let summary = c.summary(reveal_key);
        let d = to_dict(py, &summary)?;
        if let Some(k) = &summary.key {
            d.set_item("key", decimal_to_int(py, k)?)?;
        }
        Ok(d.into_any().unbind())
    }

    /// Deletes a stored context (`secagg context delete`); returns what was deleted (no key).
    fn delete_context(&self, py: Python<'_>, session: &str) -> PyResult<PyObject> {
        let c = session::delete_context(&self.core(), &session_id(session)?).map_err(CoreError)?;
        to_py(py, &c.summary(false))
    }

    /// Marks a node's unconfirmed key confirmed (`secagg context confirm`).
    fn confirm_context(&self, py: Python<'_>, session: &str) -> PyResult<PyObject> {
        let c = session::confirm_context(&self.core(), &session_id(session)?).map_err(CoreError)?;
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
    #[pyo3(signature = (session, round, files, biprime=None))]
    fn decrypt(
        &self,
        py: Python<'_>,
        session: &str,
        round: u64,
        files: Vec<Bound<'_, PyAny>>,
        biprime: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        let biprime = biprime_arg(biprime)?;
        let session = session_id(session)?;
        let mut parsed = Vec::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let (name, text) = match json_text(f)? {
                Some(t) => (format!("{i} (a dict)"), t),
                None => {
                    let path: PathBuf = f.extract()?;
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        CoreError(Error::io_path("reading ciphertext file", &path, e))
                    })?;
                    (format!("`{}`", path.display()), text)
                }
            };
            let file: CiphertextFile = serde_json::from_str(&text).map_err(|e| {
                CoreError(
                    Error::invalid(format!("{name} is not a secagg ciphertext file: {e}"))
                        .with_hint("give the files written by `encrypt` on the nodes"),
                )
            })?;
            parsed.push((name, file));
        }
        let home = self.core();
        let avg = py
            .allow_threads(|| {
                aggregate::decrypt_round(&home, &session, round, &parsed, &biprime, None)
            })
            .map_err(CoreError)?;
        to_py(py, &avg)
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
    m.add_function(wrap_pyfunction!(jl_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(jl_decrypt_sums, m)?)?;
    m.add_function(wrap_pyfunction!(jl_average, m)?)?;
    Ok(())
}
