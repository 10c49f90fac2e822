//! The every-step fault sweep of `e2e_all_or_nothing`, run through party agents that keep their
//! node-to-node connections between sessions.
//!
//! What it proves. With the nodes' long-running agents (`secagg serve`, which keep the
//! negotiation connections between them for later sessions) and the researcher's `secagg session
//! run --all`, a crash or a failure of one party at any step of the protocol
//! - never breaks the all-or-nothing invariant: a stored server key implies that every node
//!   stored its key, and then `sk0 + Σ sk_i = 0`; no node key is confirmed without a server key;
//! - ends the session at every party well before its deadline, `session run` exiting 0 only with
//!   a stored server key and otherwise naming the faulty node or saying why; a crash is a SIGKILL
//!   and a failure leaves the agent running;
//! - leaves the federation usable: the next session, run by the same agents (only the faulty one
//!   restarted, without its fault) on the connections they kept, succeeds and its keys cancel.
//!
//! How. One federation per test, its node agents started once. Each case is one step × one
//! action (`crash`, `fail`) of the test build's fault hook (`SECAGG_FAULT`, see
//! `secagg-core/src/fault.rs`): every node step in the agent of every node (that agent restarted
//! with the fault in its environment), every researcher step in the `session run` process. One
//! session runs; once every agent still alive has logged how its side ended, the stores are read;
//! then the faulty agent is restarted without the fault and a clean session must succeed. The
//! sweep counts its runs (a step skipped fails it), checks that both sides of the invariant
//! happened (some runs ended with a stored server key, some without), and that faulty sessions
//! did run on connections the agents had kept from earlier sessions. `--nocapture` shows one
//! line per case: how `session run` ended and what each store holds.

use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use secagg_core::contexts::KeyState;
use secagg_core::demo::{self, Federation};
use secagg_core::fault::{Step, FAULT_ENV};
use secagg_core::session;
use support::agents::{
    assert_lom_round, assert_verified, connection_counts, context_of, contexts, federation,
    mpspdz_engine_args, mpspdz_serve_args, researcher, Agent,
};
use support::{secagg_command, small_disk, stored};

mod support;

/// The deadline of every session: no party may need it, failures are relayed at once.
const SESSION_TIMEOUT: &str = "20s";

/// How soon a faulty session must have ended everywhere (`session run` and every agent alive).
const ENDS_WITHIN: Duration = Duration::from_secs(12);

/// The signal a `crash` kills its process with.
const SIGKILL: i32 = 9;

/// What the fault does at its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// The process SIGKILLs itself.
    Crash,
    /// The step fails (at a store step, the store write fails).
    Fail,
}

impl Action {
    const BOTH: [Action; 2] = [Action::Crash, Action::Fail];

    fn name(self) -> &'static str {
        match self {
            Action::Crash => "crash",
            Action::Fail => "fail",
        }
    }
}

/// The process a fault is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultyProcess {
    /// The agent of node `i` (its party index).
    NodeAgent(usize),
    /// The researcher's `session run`.
    SessionRun,
}

/// One run of the sweep: `action` at `step` in `process`.
#[derive(Debug, Clone, Copy)]
struct Case {
    process: FaultyProcess,
    step: Step,
    action: Action,
}

impl Case {
    /// The value of [`FAULT_ENV`] for this case.
    fn fault(&self) -> String {
        format!("{}:{}", self.step.name(), self.action.name())
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.process {
            FaultyProcess::NodeAgent(i) => write!(f, "{} in the agent of node {i}", self.fault()),
            FaultyProcess::SessionRun => write!(f, "{} in session run", self.fault()),
        }
    }
}

/// Every case of the sweep: each of `steps` a node passes × both actions in the agent of each
/// node, then each of `steps` the researcher passes × both actions in `session run`.
fn cases(nodes: usize, steps: &[Step]) -> Vec<Case> {
    let at = |process: FaultyProcess, applies: fn(Step) -> bool| {
        steps
            .iter()
            .copied()
            .filter(move |&s| applies(s))
            .flat_map(move |step| {
                Action::BOTH.map(|action| Case {
                    process,
                    step,
                    action,
                })
            })
    };
    (1..=nodes)
        .flat_map(|node| at(FaultyProcess::NodeAgent(node), Step::is_node_step))
        .chain(at(FaultyProcess::SessionRun, Step::is_researcher_step))
        .collect()
}

/// The engine of the sweep's sessions.
enum SweepEngine {
    /// The native engine: node-to-node connections kept by the agents between sessions.
    Native,
    /// MP-SPDZ: `root` is a real build or the test double; party `i`'s `shamir-party.x` takes a
    /// port of the four from `ports[i]` (the researcher's rotate from session to session).
    MpSpdz { root: PathBuf, ports: Vec<u16> },
    /// LOM contexts (`--scheme lom`) on the native protocol: pairwise secrets, not keys.
    Lom,
}

impl SweepEngine {
    /// MP-SPDZ at `root`, with four free ports for each of the `nodes + 1` parties.
    fn mpspdz(root: PathBuf, nodes: usize) -> SweepEngine {
        let ports = (0..=nodes)
            .map(|_| support::free_ports_below_ephemeral(4))
            .collect();
        SweepEngine::MpSpdz { root, ports }
    }

    /// The fault steps this engine passes.
    fn steps(&self) -> Vec<Step> {
        match self {
            SweepEngine::Native | SweepEngine::Lom => Step::ALL.to_vec(),
            SweepEngine::MpSpdz { .. } => Step::MPSPDZ.to_vec(),
        }
    }

    /// The arguments of the agent of `node` beyond `serve`.
    fn agent_args(&self, node: usize) -> Vec<String> {
        match self {
            SweepEngine::Native | SweepEngine::Lom => vec![],
            SweepEngine::MpSpdz { root, ports } => {
                mpspdz_serve_args(ports[node]..=ports[node] + 3, root)
            }
        }
    }

    /// The arguments of the `k`-th `session run` that choose the engine.
    fn run_args(&self, k: u16) -> Vec<String> {
        match self {
            SweepEngine::Native => vec![],
            SweepEngine::MpSpdz { root, ports } => mpspdz_engine_args(root, ports[0] + k % 4),
            SweepEngine::Lom => vec!["--scheme".into(), "lom".into()],
        }
    }

    /// Checks what the parties of `session` hold, the researcher's context stored: keys cancel
    /// (`sk0 + Σ sk_i = 0`); LOM secrets agree pair by pair, shown by a round whose average
    /// comes out right (every node's set confirmed first, as its operator would once the
    /// researcher says the context is there).
    fn verify(&self, fed: &Federation, session: &str) -> Result<(), String> {
        match self {
            SweepEngine::Lom => {
                for p in &fed.parties[1..] {
                    let all = contexts(p.home.root());
                    if context_of(&all, session).is_some_and(|c| c["state"] == "unconfirmed") {
                        support::secagg(p.home.root(), &["context", "confirm", session]).ok();
                    }
                }
                let round = LOM_ROUNDS.with(|r| {
                    let k = r.get() + 1;
                    r.set(k);
                    k
                });
                assert_lom_round(fed, session, round);
                Ok(())
            }
            _ => {
                let v = demo::verify(fed, &session.parse().unwrap()).map_err(|e| e.to_string())?;
                if v.verified {
                    Ok(())
                } else {
                    Err("sk0 + Σ sk_i != 0".into())
                }
            }
        }
    }
}

thread_local! {
    /// LOM rounds run so far (each verification masks a fresh round number).
    static LOM_ROUNDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How a `session run` ended.
struct SessionRun {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// A federation with a running agent for every node.
struct Fleet {
    dir: tempfile::TempDir,
    fed: Federation,
    engine: SweepEngine,
    /// `agents[i - 1]` serves node `i`.
    agents: Vec<Agent>,
    /// Sessions run so far.
    sessions: std::cell::Cell<u16>,
}

impl Fleet {
    fn start(nodes: usize, engine: SweepEngine) -> Fleet {
        let (dir, fed) = federation(nodes);
        let agents = (1..=nodes)
            .map(|node| Fleet::start_agent(&fed, &engine, node, None))
            .collect();
        Fleet {
            dir,
            fed,
            engine,
            agents,
            sessions: Default::default(),
        }
    }

    /// Starts the agent of `node`, with `fault` in its environment if given.
    fn start_agent(
        fed: &Federation,
        engine: &SweepEngine,
        node: usize,
        fault: Option<&str>,
    ) -> Agent {
        let env: Vec<(&str, &str)> = fault.map(|f| (FAULT_ENV, f)).into_iter().collect();
        let args = engine.agent_args(node);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Agent::start(fed.parties[node].home.root(), &args, &env)
    }

    fn agent(&mut self, node: usize) -> &mut Agent {
        &mut self.agents[node - 1]
    }

    /// Replaces the agent of `node` by a new one, with `fault` in its environment if given. The
    /// old one is killed if it still runs, and the connections it kept die with it.
    fn restart(&mut self, node: usize, fault: Option<&str>) {
        self.agent(node).kill();
        self.agents[node - 1] = Fleet::start_agent(&self.fed, &self.engine, node, fault);
    }

    /// Runs `session run --all --session <session>` at the researcher, with `env`, to its end:
    /// killed, failing the test, if it outlives its own deadline by far.
    fn session_run(&self, session: &str, env: &[(&str, &str)]) -> SessionRun {
        let out = |name: &str| -> PathBuf { self.dir.path().join(format!("{session}.{name}")) };
        let mut c = secagg_command();
        c.arg("--home").arg(researcher(&self.fed)).args([
            "session",
            "run",
            "--all",
            "--session",
            session,
            "--format",
            "json",
            "--timeout",
            SESSION_TIMEOUT,
        ]);
        let k = self.sessions.get();
        self.sessions.set(k.wrapping_add(1));
        c.args(self.engine.run_args(k));
        for (k, v) in env {
            c.env(k, v);
        }
        let started = Instant::now();
        let mut child = c
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out("stdout")).unwrap())
            .stderr(std::fs::File::create(out("stderr")).unwrap())
            .spawn()
            .expect("spawn secagg session run");
        let limit = support::duration(SESSION_TIMEOUT) * 2;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("session run of {session} hung past {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        SessionRun {
            status,
            stdout: std::fs::read_to_string(out("stdout")).unwrap(),
            stderr: std::fs::read_to_string(out("stderr")).unwrap(),
            took: started.elapsed(),
        }
    }

    /// For each node (`[i - 1]` for node `i`), how many times a session of its agent ran on a
    /// negotiation connection kept from an earlier session, at either end (`federation check`;
    /// `None` while the agent is down).
    fn kept_connection_reuses(&self) -> Vec<Option<u64>> {
        connection_counts(&self.fed)
            .iter()
            .map(|c| Some(c["reused"].as_u64()? + c["reused_accepted"].as_u64()?))
            .collect()
    }
}

/// What a failing case reports: how `session run` ended, what every store holds, and how every
/// agent's side of `session` ended.
fn describe(fleet: &Fleet, session: &str, run: &SessionRun) -> String {
    let keys = stored(&fleet.fed, session);
    let mut s = format!(
        "session run: {:?} after {:?}\nstdout: {}\nstderr: {}\n",
        run.status,
        run.took,
        run.stdout.trim(),
        run.stderr.trim()
    );
    for (i, (p, k)) in fleet.fed.parties.iter().zip(&keys).enumerate() {
        s.push_str(&format!(
            "party {i} ({}): stored {:?}\n",
            p.party_id,
            k.as_ref().map(|c| c.state)
        ));
    }
    for (i, a) in fleet.agents.iter().enumerate() {
        s.push_str(&format!(
            "agent of node {}: {}\n",
            i + 1,
            a.session_end(session)
                .unwrap_or_else(|| "(no end logged)".into())
        ));
    }
    s
}

/// Asserts the invariant and its corollaries on the stores after `session`, and returns whether
/// the server key is stored.
fn assert_all_or_nothing(fleet: &Fleet, session: &str, run: &SessionRun, case: &Case) -> bool {
    let keys = stored(&fleet.fed, session);
    let server_key = keys[0].is_some();
    let why = || describe(fleet, session, run);
    // `session run` tells the truth about the server key.
    if run.status.success() {
        assert!(
            server_key,
            "{case}: session run exited 0 without a server key\n{}",
            why()
        );
    } else if run.status.code().is_some() && server_key {
        // Only once the key is final (confirmations going out) may a failing researcher keep it,
        // and then it says so.
        assert!(
            run.stderr.contains("is stored and final"),
            "{case}: session run failed but kept a server key\n{}",
            why()
        );
    }
    // A confirmed node key means the server key is stored.
    for (i, k) in keys.iter().enumerate().skip(1) {
        if k.as_ref().is_some_and(|c| c.state == KeyState::Confirmed) {
            assert!(
                server_key,
                "{case}: node {i} confirmed its key without a server key\n{}",
                why()
            );
        }
    }
    // The invariant.
    if server_key {
        if let Some(i) = keys.iter().position(Option::is_none) {
            panic!(
                "{case}: the server key is stored but node {i} holds no key\n{}",
                why()
            );
        }
        // A healthy researcher confirms to every node once the server key is stored, and a
        // healthy node waits for that word whatever another node does after its own
        // acknowledgement (regression: another node's abort made it keep its key unconfirmed).
        if let FaultyProcess::NodeAgent(faulty) = case.process {
            for (i, k) in keys
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(i, _)| *i != faulty)
            {
                assert_eq!(
                    k.as_ref().map(|c| c.state),
                    Some(KeyState::Confirmed),
                    "{case}: the server key is stored but healthy node {i} did not confirm its key\n{}",
                    why()
                );
            }
        }
        if let Err(e) = fleet.engine.verify(&fleet.fed, session) {
            panic!("{case}: {e}\n{}", why());
        }
    }
    server_key
}

/// Runs `case`'s faulty session and checks it; returns whether its server key is stored.
fn run_faulty_session(fleet: &mut Fleet, case: &Case) -> bool {
    let fault = case.fault();
    let env: Vec<(&str, &str)> = match case.process {
        FaultyProcess::NodeAgent(node) => {
            fleet.restart(node, Some(&fault));
            vec![]
        }
        FaultyProcess::SessionRun => vec![(FAULT_ENV, fault.as_str())],
    };
    let session = session::new_session_id();
    let started = Instant::now();
    let run = fleet.session_run(&session, &env);
    let deadline = started + ENDS_WITHIN;

    // The faulty process: a crash is a SIGKILL; a failure reports one, and leaves an agent up.
    match (case.process, case.action) {
        (FaultyProcess::NodeAgent(node), Action::Crash) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let ended = fleet.agent(node).wait_status(left);
            assert_eq!(
                ended.signal(),
                Some(SIGKILL),
                "{case}: the agent ended {ended:?}"
            );
        }
        (FaultyProcess::NodeAgent(node), Action::Fail) => {
            let agent = fleet.agent(node);
            let line = agent.wait_session_end(&session, deadline);
            assert!(
                line.contains(" failed: "),
                "{case}: its agent logged {line}"
            );
            assert!(
                agent.child.try_wait().unwrap().is_none(),
                "{case}: the agent stopped after a failed session:\n{}",
                agent.log_text()
            );
        }
        (FaultyProcess::SessionRun, Action::Crash) => {
            assert_eq!(
                run.status.signal(),
                Some(SIGKILL),
                "{case}\n{}",
                describe(fleet, &session, &run)
            );
        }
        (FaultyProcess::SessionRun, Action::Fail) => {
            assert!(
                !run.status.success() && run.status.code().is_some(),
                "{case}\n{}",
                describe(fleet, &session, &run)
            );
            assert!(
                run.stderr
                    .contains(&format!("injected fault at step `{}`", case.step.name())),
                "{case}: session run does not say why it failed\n{}",
                describe(fleet, &session, &run)
            );
        }
    }
    // Every agent still up ended its side of the session, well before the deadline.
    for agent in &mut fleet.agents {
        if agent.child.try_wait().unwrap().is_none() {
            agent.wait_session_end(&session, deadline);
        }
    }
    assert!(
        run.took < ENDS_WITHIN,
        "{case}: session run took {:?}\n{}",
        run.took,
        describe(fleet, &session, &run)
    );
    // A failing session run that was not killed names the faulty node.
    if let (FaultyProcess::NodeAgent(node), Some(code)) = (case.process, run.status.code()) {
        let id = &fleet.fed.parties[node].party_id;
        assert!(
            code == 0 || run.stderr.contains(id.as_str()),
            "{case}: session run failed without naming {id}\n{}",
            describe(fleet, &session, &run)
        );
    }
    let server_key = assert_all_or_nothing(fleet, &session, &run, case);
    eprintln!(
        "{case}: session run {} in {:.0} ms; stored {:?}",
        match (run.status.code(), run.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, s) => format!("signal {s:?}"),
        },
        run.took.as_secs_f64() * 1e3,
        stored(&fleet.fed, &session)
            .iter()
            .map(|k| k.as_ref().map(|c| c.state))
            .collect::<Vec<_>>()
    );
    server_key
}

/// After `case`: its faulty agent restarted without the fault, a clean session through the same
/// agents succeeds and its keys verify.
fn assert_recovers(fleet: &mut Fleet, case: &Case) {
    if let FaultyProcess::NodeAgent(node) = case.process {
        fleet.restart(node, None);
    }
    assert_clean_session(fleet, &format!("after {case}"));
}

/// A session without fault succeeds, every key confirmed, and its keys cancel.
fn assert_clean_session(fleet: &Fleet, when: &str) {
    let session = session::new_session_id();
    let run = fleet.session_run(&session, &[]);
    assert!(
        run.status.success(),
        "{when}: the clean session failed\n{}",
        describe(fleet, &session, &run)
    );
    match fleet.engine {
        SweepEngine::Lom => {
            for p in &fleet.fed.parties {
                let all = contexts(p.home.root());
                let c = context_of(&all, &session).expect("stored");
                assert_eq!(c["state"], "confirmed", "{when}: {}: {c}", p.party_id);
            }
            fleet.engine.verify(&fleet.fed, &session).unwrap();
        }
        _ => assert_verified(&fleet.fed, &session),
    }
}

/// The sweep over a federation of a researcher and `nodes` nodes, its sessions run with `engine`.
fn sweep(nodes: usize, engine: SweepEngine) {
    let started = Instant::now();
    let steps = engine.steps();
    let native = matches!(engine, SweepEngine::Native | SweepEngine::Lom);
    let mut fleet = Fleet::start(nodes, engine);
    // A first session, so that the first case already finds kept connections (and, for MP-SPDZ,
    // the compiled program).
    assert_clean_session(&fleet, "first");
    let cases = cases(nodes, &steps);
    let (mut runs, mut server_key_stored, mut on_kept_connections) = (0, 0, 0);
    for case in &cases {
        let reuses_before = fleet.kept_connection_reuses();
        if run_faulty_session(&mut fleet, case) {
            server_key_stored += 1;
        }
        // Counted by the agents that ran the whole case (the faulty one was restarted).
        let reuses_after = fleet.kept_connection_reuses();
        let reused = (1..=nodes)
            .filter(|&node| case.process != FaultyProcess::NodeAgent(node))
            .any(|node| reuses_after[node - 1] > reuses_before[node - 1]);
        if reused {
            on_kept_connections += 1;
        }
        runs += 1;
        assert_recovers(&mut fleet, case);
    }
    eprintln!(
        "{runs} faulty sessions through {nodes} node agents in {:.1} s: the server key was stored in {server_key_stored}, {on_kept_connections} ran on kept connections",
        started.elapsed().as_secs_f64()
    );
    // Every case ran: both actions at each node step of every node, and at each researcher step
    // (native: connected and 9 more node steps, connected and 5 more researcher steps; MP-SPDZ:
    // 4 node steps, 2 researcher steps).
    let (node_steps, researcher_steps) = if native { (10, 6) } else { (4, 2) };
    assert_eq!(runs, 2 * (node_steps * nodes + researcher_steps));
    // Both sides of the invariant: faults late enough leave a stored server key.
    assert!(
        server_key_stored > 0 && server_key_stored < runs,
        "{server_key_stored} of {runs}"
    );
    // Failed native sessions ran on connections kept from earlier ones (the point of this
    // sweep); MP-SPDZ keeps none.
    if native {
        assert!(
            on_kept_connections > 0,
            "no faulty session reused a kept connection"
        );
    }
}

#[test]
fn fault_sweep_every_party_every_step_through_agents_three_parties() {
    sweep(2, SweepEngine::Native);
}

/// With a third node, two agents keep their connection while the third is the faulty one.
#[test]
fn fault_sweep_every_party_every_step_through_agents_four_parties() {
    sweep(3, SweepEngine::Native);
}

/// LOM contexts through the agents (issue 22): at every step of every party, the researcher
/// never holds a context some node lacks, and the sets stored agree (a round averages right).
#[test]
fn fault_sweep_lom_every_party_every_step_through_agents_four_parties() {
    sweep(3, SweepEngine::Lom);
}

/// MP-SPDZ sessions through the agents, with the test double of `shamir-party.x`: the invariant
/// holds at every step of the engine (a node confirms its key only on the researcher's word,
/// sent once the server key is stored; regression: a node confirmed as soon as its run ended, so a
/// researcher failing before it stored the server key left every node's key confirmed).
#[test]
fn fault_sweep_mp_spdz_every_party_every_step_through_agents_test_double() {
    let dir = tempfile::tempdir().unwrap();
    let root = support::mpspdz_double_root(dir.path());
    sweep(3, SweepEngine::mpspdz(root, 3));
}

/// The same with real MP-SPDZ (`MPSPDZ_ROOT`); skipped, saying why, without it.
#[test]
fn fault_sweep_mp_spdz_every_party_every_step_through_agents_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    sweep(3, SweepEngine::mpspdz(root, 3));
}

/// The row of `node` in a `session run --format json` output.
fn row_of<'a>(report: &'a serde_json::Value, party: &str) -> &'a serde_json::Value {
    report["parties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["party_id"] == party)
        .unwrap_or_else(|| panic!("no row of {party}: {report}"))
}

/// Checks a session that failed because `node` could not store its key: `session run` exits
/// 10 (storage), `node`'s row says storage and names it, and no key is usable anywhere.
fn assert_storage_failure_of(fleet: &Fleet, session: &str, run: &SessionRun, node: usize) {
    let what = describe(fleet, session, run);
    assert_eq!(run.status.code(), Some(10), "{what}");
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect(&what);
    let party = fleet.fed.party_ids()[node].to_string();
    let row = row_of(&report, &party);
    assert_eq!(row["error"]["kind"], "storage", "{what}");
    assert_eq!(row["error"]["exit_code"], 10, "{what}");
    assert!(
        run.stderr.contains(&party),
        "the error names the node: {what}"
    );
    // All or nothing: no server key, and no node holds a confirmed key (another node may hold
    // its key unconfirmed, as after any failure past its acknowledgement).
    let keys = stored(&fleet.fed, session);
    assert!(keys[0].is_none(), "{what}");
    assert!(
        keys.iter()
            .flatten()
            .all(|c| c.state == secagg_core::contexts::KeyState::Unconfirmed),
        "{what}"
    );
}

/// Regression (issue 20, item 9): a node whose store could not be written (its disk full) was
/// reported to the researcher as a peer failure (exit 6, "peer_failure" in its row), which
/// sends the operator to the network. It is that node's storage failure: its row says 10.
/// Once with the store write failing by the fault hook, then (as root) on a real full disk:
/// the node's home moved onto a small tmpfs that is then filled.
#[test]
fn a_node_whose_disk_is_full_is_reported_as_its_storage_failure() {
    let mut fleet = Fleet::start(2, SweepEngine::Native);
    fleet.restart(1, Some("node-before-store:fail"));
    let session = session::new_session_id();
    let run = fleet.session_run(&session, &[]);
    assert_storage_failure_of(&fleet, &session, &run, 1);
    fleet.restart(1, None);
    assert_clean_session(&fleet, "after the injected storage failure");

    fleet.agent(2).kill();
    let disk = match small_disk::SmallDisk::mount_at(fleet.fed.parties[2].home.root(), 4096) {
        Ok(d) => d,
        Err(reason) => {
            println!("skipped the real full disk: {reason}");
            return;
        }
    };
    fleet.restart(2, None);
    assert_clean_session(&fleet, "on the small disk");
    disk.fill_leaving(0);
    // A full disk fails the first write that needs a new page; a write into WAL pages already
    // allocated may still succeed, so a few sessions are allowed before the one that fails.
    let mut failed = None;
    for _ in 0..6 {
        let session = session::new_session_id();
        let run = fleet.session_run(&session, &[]);
        if !run.status.success() {
            failed = Some((session, run));
            break;
        }
    }
    let (session, run) = failed.expect("no session failed on the full disk");
    assert_storage_failure_of(&fleet, &session, &run, 2);
    disk.free();
    assert_clean_session(&fleet, "once the disk has room again");
    fleet.agent(2).kill();
    drop(disk);
}
