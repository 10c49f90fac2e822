//! `Home`'s methods that negotiate keys: this party's side of a session (`secagg negotiate`), a
//! whole session run through the party agents (`secagg session run`), a node's side of one
//! session it knows by its party list (Fed-BioMed's `exec_shamir`), and the check of every
//! party's agent (`secagg federation check`). The long ones run on a worker thread with the GIL
//! released, stopped by Ctrl-C or a `CancelToken` (`crate::cancel`).

use std::net::SocketAddr;
use std::path::PathBuf;

use pyo3::prelude::*;
use secagg_core::agent::{self, Nodes, RunRequest};
use secagg_core::engine::{ContextScheme, Engine, MpSpdzEngine, NativeEngine};
use secagg_core::error::ErrorReport;
use secagg_core::mpspdz::MpSpdzRoot;
use secagg_core::session::{self, SessionRequest};
use secagg_core::SessionId;

use super::Home;
use crate::cancel::{interruptible, CancelToken};
use crate::convert::{party_list, seconds, session_id, to_dict, to_py};
use crate::errors::{invalid, raise_report, unlocked, CoreError};

#[pymethods]
impl Home {
    /// Runs this party's side of a key negotiation (`secagg negotiate`) and stores the key.
    ///
    /// Every party of the session calls it with the same `session` (a uuid, or Fed-BioMed's
    /// `secagg_<uuid>`) and `parties` (researcher first). Blocks, with the GIL released, until
    /// the session succeeded (returns the report: never the key, see `context`), failed, or
    /// timed out (`timeout` seconds; default 60 for `native`, 90 for `mp-spdz`). Ctrl-C in the
    /// main thread, or `cancel.cancel()` from another, stops it with nothing stored (native
    /// engine; see `CancelToken`).
    ///
    /// `scheme="lom"` negotiates a LOM context instead of keys: a secret per pair of nodes, agreed
    /// directly between the nodes (native engine); `min_nodes` (default 3) is the fewest nodes
    /// this party accepts such a context with.
    #[pyo3(signature = (session, parties, timeout=None, engine="native", key_bits=None, listen=None, mpspdz_root=None, cancel=None, scheme="jl", min_nodes=None, dropout_threshold=None))]
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
        scheme: &str,
        min_nodes: Option<usize>,
        dropout_threshold: Option<u32>,
    ) -> PyResult<PyObject> {
        let home = self.core();
        let scheme = ContextScheme::parse(scheme).map_err(CoreError)?;
        let session_id = session_id(session)?;
        let parties = party_list(&parties)?;
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
            Some(t) => seconds("timeout", t)?,
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
            scheme,
            min_nodes,
            dropout_threshold,
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
    ///
    /// `scheme="lom"` sets up a LOM context (a secret per pair of nodes, agreed directly between
    /// the nodes' agents; the researcher holds none), refused with fewer than `min_nodes` nodes
    /// (default 3; each node applies its own minimum too).
    #[pyo3(signature = (parties=None, all=false, session=None, engine="native", timeout=60.0, key_bits=None, mpspdz_root=None, mpspdz_port=None, cancel=None, wait_for_agents=None, scheme="jl", min_nodes=None, dropout_threshold=None))]
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
        scheme: &str,
        min_nodes: Option<usize>,
        dropout_threshold: Option<u32>,
    ) -> PyResult<PyObject> {
        let scheme = ContextScheme::parse(scheme).map_err(CoreError)?;
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
            (Some(parties), false) => Nodes::Listed(party_list(&parties)?),
        };
        let req = RunRequest {
            session_id: session_id.unwrap_or_else(SessionId::generate),
            nodes,
            timeout,
            key_bits,
            scheme,
            min_nodes,
            dropout_threshold,
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
        let parties = party_list(&parties)?;
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
        let only = parties.as_deref().map(party_list).transpose()?;
        let home = self.core();
        let rows = unlocked(py, || {
            agent::check_federation(&home, only.as_deref(), max_skew)
        })?;
        let obj = to_py(py, &rows)?;
        match agent::federation_failure(&rows) {
            Some(e) => Err(raise_report(py, &ErrorReport::of(&e), Some(obj))),
            None => Ok(obj),
        }
    }
}
