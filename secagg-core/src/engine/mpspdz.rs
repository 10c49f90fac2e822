//! [`MpSpdzEngine`]: the negotiation run through MP-SPDZ's `shamir-party.x`.
//!
//! The engine itself is here, beside the native one; what it needs to drive MP-SPDZ (locating the
//! build, the compile cache, run directories, hash links, certificate checks, log and output
//! parsing) is the support module [`crate::mpspdz`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::{CancelFlag, Engine, KeySink, Material, NegotiationPlan, Outcome, PhaseTimings};
use crate::error::{Error, Result};
use crate::fault::{self, Step};
use crate::home::Home;
use crate::mpspdz::certcheck;
use crate::mpspdz::errors::{self, LogContext};
use crate::mpspdz::locate::MpSpdzRoot;
use crate::mpspdz::output;
use crate::mpspdz::program::ProgramCache;
use crate::mpspdz::workdir::{self, PreparedRun};
use crate::party::{Role, SessionId};
use crate::supervise::{self, Ending, Supervised};

/// Runs this party's side of a session with MP-SPDZ v0.3.4's `shamir-party.x`.
///
/// Per negotiation: checks the plan and every certificate against MP-SPDZ's TLS checks, takes the
/// compiled program from the home's cache (compiling it on first use), writes the run directory
/// (`Programs/`, `Player-Data/`, ip file, input), runs `shamir-party.x` under supervision with the plan's timeout as deadline,
/// lifts the researcher's output to the integer server key, and removes every secret leftover
/// (and the run directory unless `keep_run_dir`).
///
/// Limit: a node's success means its own `shamir-party.x` exited 0; MP-SPDZ does not confirm to
/// the nodes that the researcher received its output.
#[derive(Debug, Clone)]
pub struct MpSpdzEngine {
    root: MpSpdzRoot,
    cache: ProgramCache,
    runs_dir: PathBuf,
    keep_run_dir: bool,
    /// Whether a node confirms its key as soon as its run completed (`negotiate`); a party agent
    /// confirms it only on the researcher's word instead ([`confirm_node_key`]).
    node_confirms_itself: bool,
}

/// What [`MpSpdzEngine::negotiate`] left on disk, for callers that want to report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunDirReport {
    /// The run directory.
    pub dir: PathBuf,
    /// Whether it was kept.
    pub kept: bool,
}

impl MpSpdzEngine {
    /// [`Engine::name`], for callers that need it without an engine (e.g. to start a party
    /// process with `--engine`).
    pub const NAME: &'static str = "mp-spdz";
    /// [`Engine::default_timeout`], for callers that need it without an engine (it needs an
    /// MP-SPDZ build).
    pub const DEFAULT_TIMEOUT: Duration = DEFAULT_TIMEOUT;

    /// An engine using the build at `root`, with the compile cache and run directories of `home`.
    pub fn new(root: MpSpdzRoot, home: &Home) -> Self {
        MpSpdzEngine {
            root,
            cache: ProgramCache::in_home(home),
            runs_dir: home.runs_dir(),
            keep_run_dir: false,
            node_confirms_itself: true,
        }
    }

    /// A node leaves its key unconfirmed after a successful run: its caller confirms it with
    /// [`confirm_node_key`] once the researcher said it stored the server key (the party agent
    /// does, over its control connection), so that a confirmed node key implies a stored server
    /// key, as with the native engine.
    pub(crate) fn confirmed_by_the_researcher(mut self) -> Self {
        self.node_confirms_itself = false;
        self
    }

    /// Uses another compile cache (e.g. one shared by several homes in a test).
    pub(crate) fn with_cache(mut self, cache: ProgramCache) -> Self {
        self.cache = cache;
        self
    }

    /// Keeps the run directory (secrets are still removed).
    pub fn keep_run_dir(mut self, keep: bool) -> Self {
        self.keep_run_dir = keep;
        self
    }

    /// The MP-SPDZ root.
    pub fn root(&self) -> &MpSpdzRoot {
        &self.root
    }

    /// The run directory a session uses.
    pub fn run_dir(&self, session_id: &SessionId) -> PathBuf {
        self.runs_dir.join(session_id.to_string())
    }

    /// The checks made before anything is written or launched: `--listen`, every certificate
    /// against MP-SPDZ's TLS checks, the binary. (The agent makes them when it accepts a session,
    /// so that a refusal comes before any party stored anything.)
    pub(crate) fn preflight(&self, plan: &NegotiationPlan) -> Result<()> {
        if plan.scheme() != super::ContextScheme::Jl {
            return Err(Error::invalid(format!(
                "the MP-SPDZ engine negotiates Joye–Libert keys only, not {} contexts",
                plan.scheme()
            ))
            .with_hint("run LOM sessions with the native engine (the default)"));
        }
        if let Some(l) = plan.listen() {
            if l.port() != plan.me().endpoint.port {
                return Err(Error::invalid(format!(
                    "--listen {l} is not possible with MP-SPDZ: shamir-party.x always listens on 0.0.0.0 at the port of its ip-file line ({})",
                    plan.me().endpoint.port
                ))
                .with_hint("change the registered endpoint instead (`secagg identity set-endpoint`)"));
            }
        }
        let now = OffsetDateTime::now_utc();
        for (j, p) in plan.parties().iter().enumerate() {
            let fatal: Vec<String> = certcheck::check(&p.certificate_der, j, now)
                .into_iter()
                .filter(|f| f.fatal)
                .map(|f| f.message)
                .collect();
            if !fatal.is_empty() {
                let whose = if j == plan.my_index() {
                    "this party's own certificate".to_owned()
                } else {
                    format!("the certificate registered for party {j} (`{}`)", p.id)
                };
                return Err(Error::invalid(format!(
                    "MP-SPDZ would refuse {whose}: {}",
                    fatal.join("; ")
                ))
                .with_hint("see `secagg mpspdz doctor --parties …`; renew the certificate with `secagg certificate generate --force` and register it again"));
            }
        }
        self.root.check_binary()?;
        Ok(())
    }

    fn run(
        &self,
        plan: &NegotiationPlan,
        run: &PreparedRun,
        started: Instant,
        cancel: Option<&CancelFlag>,
    ) -> Result<Outcome> {
        let t_prepared = started.elapsed();
        let deadline = plan.timeout().saturating_sub(t_prepared);
        if deadline.is_zero() {
            return Err(Error::timeout(
                "the negotiation deadline expired while preparing the MP-SPDZ run",
            ));
        }
        let log = run.log_path();
        let child = Supervised::spawn(run.command(&self.root), &log, "shamir-party.x")?;
        let finished = child.wait(deadline, cancel)?;
        let t_ran = started.elapsed();
        let lines = supervise::log_tail(&log, 200);
        let ctx = LogContext {
            party_ids: plan.parties().iter().map(|p| p.id.clone()).collect(),
            endpoints: run.endpoints.clone(),
        };
        match finished.ending {
            Ending::Exited(st) if st.success() => {}
            Ending::Exited(st) => {
                let generic = Error::external(format!(
                    "shamir-party.x failed ({}): {}",
                    supervise::describe_status(st),
                    errors::last_lines(&lines, 3)
                ));
                return Err(errors::classify(&lines, &ctx).unwrap_or(generic));
            }
            Ending::TimedOut => {
                let why = errors::classify(&lines, &ctx)
                    .map(|e| format!("; last problem: {e}"))
                    .unwrap_or_default();
                return Err(Error::timeout(format!(
                    "shamir-party.x did not finish within the {:.0} s deadline and was killed{why}",
                    plan.timeout().as_secs_f64()
                ))
                .with_hint("every party must start within about 30 s of the others; a party that accepts TCP but never completes TLS makes MP-SPDZ wait forever"));
            }
            Ending::Cancelled => {
                return Err(Error::peer(format!(
                    "session {}: {} cancelled its MP-SPDZ run (shamir-party.x killed)",
                    plan.session_id(),
                    plan.me().id
                )));
            }
        }
        let key = if plan.my_index() == 0 {
            let out = run.output_file();
            let bytes = match std::fs::read(&out) {
                Ok(b) => b,
                Err(e) => {
                    return Err(Error::external(format!(
                        "shamir-party.x exited successfully but wrote no output file `{}` ({e})",
                        out.display()
                    )))
                }
            };
            let r = output::parse_output(&bytes)?;
            output::lift_server_key(&r, plan.prime(), plan.key_bits(), plan.n() - 1)?
        } else {
            run.node_key
                .clone()
                .ok_or_else(|| Error::Internal("node key missing".into()))?
        };
        let total = started.elapsed();
        Ok(Outcome {
            role: plan.my_role(),
            material: Material::Key(key),
            timings: PhaseTimings::from_marks(t_prepared, t_ran, total),
        })
    }

    /// Runs the session and reports the run directory (see [`Engine::negotiate`]).
    pub(crate) fn negotiate_reporting(
        &self,
        plan: NegotiationPlan,
        sink: &mut dyn KeySink,
        cancel: Option<&CancelFlag>,
    ) -> (Result<Outcome>, RunDirReport) {
        let started = Instant::now();
        let report = RunDirReport {
            dir: self.run_dir(&plan.session_id()),
            kept: false,
        };
        if let Err(e) = self.preflight(&plan) {
            return (Err(e), report);
        }
        let program = match self
            .cache
            .get_or_compile(&self.root, plan.n(), plan.prime())
        {
            Ok(p) => p,
            Err(e) => return (Err(e), report),
        };
        let run = match workdir::prepare(&self.runs_dir, &plan, &program) {
            Ok(r) => r,
            Err(e) => return (Err(e), report),
        };
        // The invariant (a stored server key implies every node stored its key) holds because a
        // node stores its key before it starts shamir-party.x, and the researcher gets an output
        // only from a computation that every node joined with its key.
        let mut result = store_node_key(&run, sink)
            .and_then(|()| self.run(&plan, &run, started, cancel))
            .and_then(|outcome| finish_with_key(outcome, sink, self.node_confirms_itself));
        // Secrets go on every path; then the directory unless asked to keep it.
        let scrub = run.remove_secrets();
        let kept = self.keep_run_dir;
        let cleanup = if kept {
            scrub.map(|_| ())
        } else {
            run.remove().and(scrub.map(|_| ()))
        };
        if let Err(e) = cleanup {
            if result.is_ok() {
                result = Err(e.context("after a successful MP-SPDZ run, cleaning up failed"));
            }
        }
        if kept {
            let note = format!(
                "the run directory `{}` was kept (secrets removed); shamir-party.x's output is in {}",
                run.dir.display(),
                workdir::LOG_FILE
            );
            result = result.map_err(|e| {
                let hint = match e.hint() {
                    Some(h) => format!("{h}; {note}"),
                    None => note,
                };
                e.with_hint(hint)
            });
        }
        (
            result,
            RunDirReport {
                dir: run.dir.clone(),
                kept,
            },
        )
    }
}

/// Node: durably stores the key it is about to feed to shamir-party.x, as unconfirmed.
fn store_node_key(run: &PreparedRun, sink: &mut dyn KeySink) -> Result<()> {
    let Some(key) = &run.node_key else {
        return Ok(());
    };
    fault::at(Step::NodeBeforeStore)?;
    sink.store(key)?;
    fault::at(Step::NodeAfterStore)
}

/// After a successful run: the researcher stores the server key; a node marks its key confirmed
/// unless `node_confirms` is false (then its caller does, on the researcher's word). Without that
/// word (`secagg negotiate`), MP-SPDZ tells a node nothing about the researcher's output, so
/// there `confirmed` means that the computation, output to the researcher included, completed
/// (see the README).
fn finish_with_key(
    outcome: Outcome,
    sink: &mut dyn KeySink,
    node_confirms: bool,
) -> Result<Outcome> {
    match outcome.role {
        Role::Researcher => {
            fault::at(Step::ResearcherBeforeStore)?;
            let key = outcome
                .material
                .key()
                .ok_or_else(|| Error::Internal("an MP-SPDZ outcome without a key".into()))?;
            sink.store(key)?;
            fault::at(Step::ResearcherAfterStore)?;
            sink.confirm()?;
        }
        Role::Node if node_confirms => confirm_node_key(sink)?,
        Role::Node => {}
    }
    Ok(outcome)
}

/// A node marks its stored key confirmed (for an engine [`MpSpdzEngine::confirmed_by_the_researcher`],
/// once the researcher stored the server key).
pub(crate) fn confirm_node_key(sink: &mut dyn KeySink) -> Result<()> {
    fault::at(Step::NodeBeforeConfirm)?;
    sink.confirm()?;
    fault::at(Step::NodeAfterConfirm)
}

impl Engine for MpSpdzEngine {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    /// Longer than the native engine's: MP-SPDZ's own connection retries run for about a minute.
    fn default_timeout(&self) -> Duration {
        DEFAULT_TIMEOUT
    }

    fn negotiate(&self, plan: NegotiationPlan, sink: &mut dyn KeySink) -> Result<Outcome> {
        self.negotiate_reporting(plan, sink, None).0
    }

    /// Setting `cancel` kills shamir-party.x's process group (then the secrets are removed as on
    /// any failure). The invariant holds at any moment: a node stored its key before its
    /// shamir-party.x started (it keeps it, unconfirmed), and the researcher stores the server
    /// key only from the output of a run that was not killed.
    fn negotiate_cancellable(
        &self,
        plan: NegotiationPlan,
        sink: &mut dyn KeySink,
        cancel: &CancelFlag,
    ) -> Result<Outcome> {
        self.negotiate_reporting(plan, sink, Some(cancel)).0
    }
}

/// Default deadline for an MP-SPDZ negotiation when the user gives none.
pub const DEFAULT_TIMEOUT: Duration = supervise::DEFAULT_DEADLINE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemorySink;
    use crate::mpspdz::program::tests::{compile_count, fake_root};
    use crate::mpspdz::workdir::tests::plan_for;
    use std::os::unix::fs::PermissionsExt;

    fn engine_with_script(t: &std::path::Path, script: &str) -> (MpSpdzEngine, Home) {
        let root = fake_root(&t.join("mpspdz"));
        let bin = root.party_binary();
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = Home::new(t.join("home"));
        (MpSpdzEngine::new(root, &home), home)
    }

    #[test]
    fn a_node_run_with_a_fake_party_binary_returns_its_key_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        // Stands in for shamir-party.x: checks its cwd and arguments, leaves a memory dump.
        let (engine, home) = engine_with_script(
            t.path(),
            "#!/bin/sh\n[ -f Programs/Schedules/server_key.sch ] || exit 5\n[ \"$1\" = 1 ] || exit 6\n[ -f \"$5-P1-0\" ] || exit 7\necho shares > Player-Data/Memory-Sp-P1\necho 'Using security parameter 40' >&2\nexit 0\n",
        );
        let (plan, _) = plan_for(3, 1);
        let sid = plan.session_id();
        let mut sink = MemorySink::default();
        let out = engine.negotiate(plan, &mut sink).unwrap();
        assert_eq!(out.role, crate::party::Role::Node);
        // Stored before shamir-party.x ran, confirmed after it succeeded.
        assert_eq!(sink.stored.as_ref(), out.material.key());
        assert!(sink.confirmed);
        assert!(!out.material.key().unwrap().is_negative());
        assert!(out.material.key().unwrap().bits() <= 2040);
        assert!(!home.runs_dir().join(sid.to_string()).exists());
        assert_eq!(compile_count(engine.root().path()), 1);
    }

    #[test]
    fn researcher_output_is_lifted_and_missing_output_is_a_failure() {
        let t = tempfile::tempdir().unwrap();
        let (engine, home) = engine_with_script(
            t.path(),
            "#!/bin/sh\nprintf '%s\\n' -12345 > \"$5-P0-0\"\nexit 0\n",
        );
        let engine = engine.keep_run_dir(true);
        let (plan, _) = plan_for(3, 0);
        let sid = plan.session_id();
        let out = engine.negotiate(plan, &mut MemorySink::default()).unwrap();
        assert_eq!(out.role, crate::party::Role::Researcher);
        assert_eq!(
            out.material.key().unwrap().to_bigint(),
            num_bigint::BigInt::from(-12345)
        );
        // Kept, without secrets.
        let dir = home.runs_dir().join(sid.to_string());
        assert!(dir.join("ip-addresses").exists());
        assert!(!dir.join("Output-P0-0").exists());
        assert!(!dir.join("Player-Data/P0.key").exists());

        let (engine, _) = engine_with_script(&t.path().join("b"), "#!/bin/sh\nexit 0\n");
        let (plan, _) = plan_for(3, 0);
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool, "{e}");
        assert!(e.to_string().contains("no output file"), "{e}");
    }

    #[test]
    fn abort_with_a_known_line_is_classified_and_the_directory_removed() {
        let t = tempfile::tempdir().unwrap();
        let (engine, home) = engine_with_script(
            t.path(),
            "#!/bin/sh\necho 'Server-side handshake with P2 failed. Make sure both sides  have the necessary certificate' >&2\necho \"  what():  handshake: certificate verify failed\" >&2\nkill -ABRT $$\n",
        );
        let (plan, _) = plan_for(3, 1);
        let sid = plan.session_id();
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("`node_2`"), "{e}");
        assert!(!home.runs_dir().join(sid.to_string()).exists());

        let (engine, _) = engine_with_script(
            &t.path().join("b"),
            "#!/bin/sh\necho weird >&2\nkill -ABRT $$\n",
        );
        let (plan, _) = plan_for(3, 1);
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ExternalTool, "{e}");
        assert!(e.to_string().contains("SIGABRT"), "{e}");
        assert!(e.to_string().contains("weird"), "{e}");
    }

    #[test]
    fn deadline_kills_a_hanging_party() {
        let t = tempfile::tempdir().unwrap();
        let (engine, _) = engine_with_script(
            t.path(),
            "#!/bin/sh\nsleep 1000 &\necho $! > helper.pid\nsleep 1000\n",
        );
        let engine = engine.keep_run_dir(true);
        let (plan, _) = plan_for(3, 2);
        let mut parts = plan.into_parts();
        parts.timeout = Duration::from_millis(1500);
        let plan = NegotiationPlan::new(parts).unwrap();
        let dir = engine.run_dir(&plan.session_id());
        let started = Instant::now();
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Timeout, "{e}");
        assert!(started.elapsed() < Duration::from_secs(8));
        let pid: u32 = std::fs::read_to_string(dir.join("helper.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!supervise::process_alive(pid), "helper {pid} survived");
        assert!(e.hint().unwrap().contains("kept"), "{:?}", e.hint());
    }

    #[test]
    fn refusals_before_launch() {
        let t = tempfile::tempdir().unwrap();
        let (engine, _) = engine_with_script(t.path(), "#!/bin/sh\nexit 0\n");
        let (plan, _) = plan_for(3, 1);
        let mut parts = plan.into_parts();
        parts.parties[2].endpoint = crate::Endpoint::new("fd00::2", 1).unwrap();
        let plan = NegotiationPlan::new(parts).unwrap();
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("IPv6"), "{e}");

        let (plan, _) = plan_for(3, 1);
        let mut parts = plan.into_parts();
        parts.listen = Some("127.0.0.1:1".parse().unwrap());
        let plan = NegotiationPlan::new(parts).unwrap();
        let e = engine
            .negotiate(plan, &mut MemorySink::default())
            .unwrap_err();
        assert!(e.to_string().contains("--listen"), "{e}");
    }
}
