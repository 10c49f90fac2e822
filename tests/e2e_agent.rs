//! End to end: party agents (`secagg serve`) as real processes on loopback, each node in its own
//! home, driven by the researcher's `secagg session run` and `secagg federation check`.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use secagg_core::demo::{self, Federation};
use secagg_core::ErrorKind;
use support::agents::{
    agents, assert_no_server_key, assert_nobody_stored, assert_verified, connection_counts,
    context_of, contexts, federation, mpspdz_engine_args, mpspdz_serve_args, researcher, total,
    Agent,
};
use support::{secagg, secagg_command, Run};

mod support;

fn session_run(fed: &Federation, extra: &[&str]) -> Run {
    let mut args = vec!["session", "run", "--format", "json", "--timeout", "20s"];
    args.extend_from_slice(extra);
    secagg(researcher(fed), &args)
}

/// Waits for a `session run` that a stopped node must make fail fast: it ends within `bound` of
/// `spawned` as a peer failure; returns its stderr and its JSON report.
fn failed_fast_by_a_node(
    run: Child,
    spawned: Instant,
    bound: Duration,
) -> (String, serde_json::Value) {
    let out = run.wait_with_output().unwrap();
    let elapsed = spawned.elapsed();
    assert!(elapsed < bound, "took {elapsed:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(ErrorKind::PeerFailure.exit_code()),
        "{stderr}"
    );
    let report = serde_json::from_slice(&out.stdout).unwrap();
    (stderr, report)
}

/// `session run --all` (JSON) at the researcher, in the background, its output piped.
fn spawn_session_run(fed: &Federation, timeout: &str) -> Child {
    spawn_at_researcher(
        fed,
        [
            "session",
            "run",
            "--all",
            "--format",
            "json",
            "--timeout",
            timeout,
        ]
        .map(String::from),
    )
}

/// `secagg ARGS` in the researcher's home, in the background, its output piped.
fn spawn_at_researcher(fed: &Federation, args: impl IntoIterator<Item = String>) -> Child {
    secagg_command()
        .arg("--home")
        .arg(researcher(fed))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn session_of(run: &Run) -> String {
    run.json()["session_id"].as_str().unwrap().to_owned()
}

#[test]
fn five_agents_one_session_then_eight_concurrent_sessions() {
    let (_dir, fed) = federation(5);
    let _agents = agents(&fed, &[]);
    // One session: every row confirmed, and the stored keys cancel.
    let started = Instant::now();
    let run = session_run(&fed, &["--all"]);
    let one = started.elapsed();
    run.ok();
    let j = run.json();
    assert_eq!(j["ok"], true);
    let rows = j["parties"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    for r in rows {
        assert_eq!(r["state"], "confirmed", "{r}");
        assert_eq!(r["key"], "confirmed", "{r}");
        assert!(r["ms"].as_f64().unwrap() > 0.0);
    }
    let session = session_of(&run);
    assert_verified(&fed, &session);
    // The log has the session id, and never a key.
    let key = secagg(
        fed.parties[1].home.root(),
        &[
            "context",
            "show",
            &session,
            "--reveal-key",
            "--format",
            "json",
        ],
    )
    .ok()
    .json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = _agents[0].log_text();
    assert!(log.contains(&format!("session={session}")), "{log}");
    assert!(!log.contains(&key[..40]), "the agent logged a key");
    // Eight concurrent sessions through the same agents, each with its own id.
    let started = Instant::now();
    let children: Vec<_> = (0..8).map(|_| spawn_session_run(&fed, "30s")).collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let eight = started.elapsed();
    let mut sessions = Vec::new();
    for o in &outs {
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        sessions.push(j["session_id"].as_str().unwrap().to_owned());
    }
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions.len(), 8);
    for s in &sessions {
        assert_verified(&fed, s);
    }
    // Between warm agents, the negotiation connections of later sessions resumed the TLS
    // sessions of the first one (tickets pinned to each agent's registered certificate): every
    // node agent reports resumed handshakes (it dials the nodes after it, or accepts the nodes
    // before it). Each `session run` is a new process: its control connection to an agent (on
    // which the negotiation with that node runs too) is a full handshake, and so is the status
    // request of this check (always full).
    let check = secagg(
        researcher(&fed),
        &["federation", "check", "--format", "json"],
    );
    check.ok();
    let mut resumed_total = 0;
    // The concurrent sessions also ran on the node-to-node connections kept from the first
    // one (one per pair; the others were dialed, resuming), isolated by their hellos.
    let reused: u64 = check.json()["parties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["connections"]["reused"].as_u64().unwrap())
        .sum();
    assert!(reused > 0, "{}", check.stdout);
    for row in check.json()["parties"].as_array().unwrap() {
        let resumed = row["tls_handshakes"]["resumed"].as_u64().unwrap();
        let full = row["tls_handshakes"]["full"].as_u64().unwrap();
        assert!(resumed > 0, "{row}");
        assert!(full > 9, "{row}");
        resumed_total += resumed;
    }
    eprintln!(
        "measured: one 6-party session run {:.0} ms; 8 concurrent 6-party sessions {:.0} ms wall; {resumed_total} TLS handshakes resumed between the node agents",
        one.as_secs_f64() * 1e3,
        eight.as_secs_f64() * 1e3
    );
}

#[test]
fn policy_refusal_names_the_node_and_nothing_is_stored() {
    let (dir, fed) = federation(3);
    let other = "researcher_00000000-0000-4000-8000-000000000000";
    // The other researcher is registered at node 2 (an agent refuses to start naming an
    // unregistered one; see `an_agent_refuses_to_allow_a_researcher_not_registered_there`).
    let other_home = dir.path().join("other");
    secagg(
        &other_home,
        &["init", "--role", "researcher", "--id", other],
    )
    .ok();
    let bundle = dir.path().join("other.json");
    let b = secagg(
        &other_home,
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
        ],
    );
    std::fs::write(&bundle, &b.ok().stdout).unwrap();
    secagg(
        fed.parties[2].home.root(),
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .ok();
    let _a1 = Agent::start(fed.parties[1].home.root(), &[], &[]);
    let a2 = Agent::start(
        fed.parties[2].home.root(),
        &["--allow-researcher", other],
        &[],
    );
    let _a3 = Agent::start(fed.parties[3].home.root(), &[], &[]);
    let run = session_run(&fed, &["--all"]);
    run.fails_with(
        ErrorKind::Authentication.exit_code(),
        &format!(
            "{} refused the session: the policy of {} does not allow researcher {}",
            fed.parties[2].party_id, fed.parties[2].party_id, fed.parties[0].party_id
        ),
    );
    let j = run.json();
    assert_eq!(j["ok"], false);
    for r in j["parties"].as_array().unwrap() {
        let expected = if r["party_id"] == fed.parties[2].party_id.as_str() {
            "refused"
        } else {
            "cancelled"
        };
        assert_eq!(r["state"], expected, "{r}");
    }
    let session = session_of(&run);
    for p in &fed.parties {
        assert!(context_of(&contexts(p.home.root()), &session).is_none());
    }
    assert!(a2.log_text().contains("refused the session request"));
    // The allowed researcher works.
    drop(a2);
    let _a2 = Agent::start(
        fed.parties[2].home.root(),
        &["--allow-researcher", &fed.parties[0].party_id],
        &[],
    );
    let run = session_run(&fed, &["--all"]);
    run.ok();
    assert_verified(&fed, &session_of(&run));
}

#[test]
fn an_unregistered_researcher_is_refused_and_a_running_session_is_not_disturbed() {
    let (dir, fed) = federation(3);
    // Every node is held 600 ms after connecting, so the stranger arrives mid-session.
    let agents: Vec<Agent> = fed.parties[1..]
        .iter()
        .map(|p| {
            Agent::start(
                p.home.root(),
                &[],
                &[("SECAGG_FAULT", "connected:sleep=600")],
            )
        })
        .collect();
    // A researcher the nodes never registered, which registered them.
    let stranger = dir.path().join("stranger");
    secagg(&stranger, &["init", "--role", "researcher", "--port", "1"]).ok();
    for p in &fed.parties[1..] {
        let bundle = fed.dir.join("bundles").join(format!("{}.json", p.party_id));
        secagg(
            &stranger,
            &[
                "certificate",
                "register",
                "--bundle",
                bundle.to_str().unwrap(),
            ],
        )
        .ok();
    }
    let legit = spawn_session_run(&fed, "20s");
    agents[0].wait_for("started:", Duration::from_secs(10));
    let bad = secagg(&stranger, &["session", "run", "--all", "--timeout", "5s"]);
    bad.fails_with(
        ErrorKind::Authentication.exit_code(),
        "refused this party's certificate",
    );
    let out = legit.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_verified(&fed, j["session_id"].as_str().unwrap());
    assert!(
        agents[0].log_text().contains("stranger:"),
        "{}",
        agents[0].log_text()
    );
    // The stranger's federation check says why, per node.
    let check = secagg(&stranger, &["federation", "check", "--format", "json"]);
    assert_eq!(check.code, ErrorKind::Authentication.exit_code());
    for r in check.json()["parties"].as_array().unwrap() {
        assert_eq!(r["problem"], "not_registered_there", "{r}");
    }
}

/// Regression (issue 20, item 6): a registered peer's malformed request was logged raw inside
/// serde's message, so its bytes could end the agent's log line, forge the next one and reach
/// the operator's terminal as escape sequences. Sent here by a real TLS client (`openssl
/// s_client`) presenting the researcher's registered certificate.
#[test]
fn a_registered_peers_malformed_request_cannot_forge_a_log_line() {
    let (_dir, fed) = federation(2);
    let agents = agents(&fed, &[]);
    let node = secagg_core::identity::load(&fed.parties[1].home).unwrap();
    let identity = researcher(&fed).join("identity");
    let mut client = std::process::Command::new("openssl")
        .args(["s_client", "-tls1_3", "-quiet", "-connect"])
        .arg(format!("127.0.0.1:{}", node.endpoint.port))
        .arg("-cert")
        .arg(identity.join("cert.pem"))
        .arg("-key")
        .arg(identity.join("key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client (the Debian package openssl)");
    // A request frame (length, type 8, JSON) whose `op` decodes to a newline, a forged line and
    // an ANSI escape: serde quotes an unknown variant as it is.
    let payload = br#"{"op":"\n2026-01-01 INFO forged line\u001b[31m"}"#;
    let mut frame = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    frame.push(8);
    frame.extend_from_slice(payload);
    {
        use std::io::Write;
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(&frame).unwrap();
    }
    agents[0].wait_for("cannot read the request of", Duration::from_secs(10));
    let _ = client.kill();
    let _ = client.wait();
    let log = agents[0].log_text();
    assert!(!log.contains('\u{1b}'), "a raw escape in the log:\n{log:?}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "a forged line in the log:\n{log}"
    );
    let refused = log
        .lines()
        .find(|l| l.contains("cannot read the request of"))
        .unwrap();
    assert!(
        refused.contains(&format!("peer={} refused:", fed.parties[0].party_id))
            && refused.contains(r"unknown variant `\n2026-01-01 INFO forged line\u{1b}[31m`"),
        "{refused}"
    );
}

#[test]
fn limits_are_refused_with_a_clear_error() {
    let (_dir, fed) = federation(2);
    let env = [("SECAGG_FAULT", "connected:sleep=3000")];
    let a1 = Agent::start(
        fed.parties[1].home.root(),
        &["--max-sessions-per-researcher", "1"],
        &env,
    );
    let _a2 = Agent::start(fed.parties[2].home.root(), &["--max-sessions", "1"], &env);
    let first = spawn_session_run(&fed, "20s");
    a1.wait_for("started:", Duration::from_secs(10));
    let second = session_run(&fed, &["--all"]);
    second.fails_with(
        ErrorKind::Conflict.exit_code(),
        "the limit per researcher (--max-sessions-per-researcher 1)",
    );
    second.fails_with(
        ErrorKind::Conflict.exit_code(),
        "its limit (--max-sessions 1)",
    );
    assert_no_server_key(&fed, &session_of(&second));
    let out = first.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_verified(&fed, j["session_id"].as_str().unwrap());
    // The slots are free again.
    session_run(&fed, &["--all"]).ok();
}

#[test]
fn sigterm_lets_a_running_session_finish_then_exits_zero() {
    let (_dir, fed) = federation(2);
    let mut a1 = Agent::start(
        fed.parties[1].home.root(),
        &["--grace", "10s"],
        &[("SECAGG_FAULT", "connected:sleep=2000")],
    );
    let _a2 = Agent::start(fed.parties[2].home.root(), &[], &[]);
    let run = spawn_session_run(&fed, "20s");
    a1.wait_for("started:", Duration::from_secs(10));
    // The signal must land once the researcher's negotiation connection reached the agent (a
    // stopping agent accepts no connection), while the fault holds the session after
    // connecting: "started" is logged just before the connections are made, so wait a little.
    std::thread::sleep(Duration::from_millis(500));
    a1.signal("TERM");
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a1.wait(Duration::from_secs(15)), Some(0));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_verified(&fed, j["session_id"].as_str().unwrap());
    let log = a1.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(log.contains("stopped: agent stopped"), "{log}");
    // The agent is down: the next session is refused naming it, with nothing stored; restarted,
    // it works at once.
    let down = session_run(&fed, &["--all"]);
    down.fails_with(
        ErrorKind::PeerFailure.exit_code(),
        &format!("cannot reach the agent of {}", fed.parties[1].party_id),
    );
    let _a1 = Agent::start(fed.parties[1].home.root(), &[], &[]);
    let again = session_run(&fed, &["--all"]);
    again.ok();
    assert_verified(&fed, &session_of(&again));
}

#[test]
fn sigterm_past_the_grace_period_aborts_the_session_and_leaves_no_key() {
    let (_dir, fed) = federation(2);
    let mut a1 = Agent::start(
        fed.parties[1].home.root(),
        &["--grace", "200ms"],
        &[("SECAGG_FAULT", "agent-started:sleep=3000")],
    );
    let _a2 = Agent::start(fed.parties[2].home.root(), &[], &[]);
    let spawned = Instant::now();
    let run = spawn_session_run(&fed, "30s");
    a1.wait_for("started:", Duration::from_secs(10));
    let stopped = Instant::now();
    a1.signal("TERM");
    assert_eq!(a1.wait(Duration::from_secs(15)), Some(0));
    assert!(stopped.elapsed() < Duration::from_secs(5));
    // The node's abort fails the researcher's side at once: a peer failure naming the node and
    // its reason, long before the 30 s deadline (whether or not the researcher's connection
    // reached the agent before it stopped listening).
    let (stderr, j) = failed_fast_by_a_node(run, spawned, Duration::from_secs(12));
    // Its reason is in the error whichever came first: its own abort on the connection the
    // session ran on with the researcher, or the abort of another party that saw it go.
    assert!(
        stderr.contains(&format!(
            "{} aborted the session, reporting: \\\"the agent of {0} was stopped and aborted session",
            fed.parties[1].party_id
        )) || stderr.contains(&format!(
            "relayed the abort of {}, reporting: \\\"the agent of {0} was stopped and aborted session",
            fed.parties[1].party_id
        )),
        "{stderr}"
    );
    assert_nobody_stored(&fed, j["session_id"].as_str().unwrap());
    assert!(
        a1.log_text().contains("aborting 1 session(s)"),
        "{}",
        a1.log_text()
    );
}

/// SIGTERM past the grace period while the node's side is still connecting (another node's agent
/// is slow to start it): the connection phase aborts to the peers connected so far, the
/// researcher among them, with the reason. Regression: the phase was dropped, so the researcher
/// only saw the node close its connection, without why.
#[test]
fn sigterm_past_the_grace_period_while_connecting_tells_the_researcher_why() {
    let (_dir, fed) = federation(2);
    let mut a1 = Agent::start(fed.parties[1].home.root(), &["--grace", "200ms"], &[]);
    // Node 2's side starts 3 s late: node 1 waits for it in its connection phase.
    let _a2 = Agent::start(
        fed.parties[2].home.root(),
        &[],
        &[("SECAGG_FAULT", "agent-started:sleep=3000")],
    );
    let spawned = Instant::now();
    let run = spawn_session_run(&fed, "30s");
    a1.wait_for("started:", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    a1.signal("TERM");
    assert_eq!(a1.wait(Duration::from_secs(15)), Some(0));
    let (stderr, j) = failed_fast_by_a_node(run, spawned, Duration::from_secs(8));
    assert!(
        stderr.contains(&format!(
            "{} aborted the session, reporting: \\\"session",
            fed.parties[1].party_id
        )) && stderr.contains(&format!(
            "the agent of {} was stopped and aborted session",
            fed.parties[1].party_id
        )),
        "{stderr}"
    );
    let session = j["session_id"].as_str().unwrap();
    // Its row says so too (the other node's row: no report, the session failed first).
    let row = |id: &str| {
        j["parties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["party_id"] == id)
            .unwrap()
            .clone()
    };
    let stopped = row(fed.parties[1].party_id.as_str());
    assert_eq!(stopped["state"], "failed", "{stopped}");
    assert!(
        stopped["error"]["message"]
            .as_str()
            .unwrap()
            .contains("was stopped and aborted session"),
        "{stopped}"
    );
    let other = row(fed.parties[2].party_id.as_str());
    assert!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no report (the session failed first"),
        "{other}"
    );
    assert_nobody_stored(&fed, session);
}

#[test]
fn an_agent_killed_mid_session_fails_the_session_by_name_and_a_restarted_one_works() {
    let (_dir, fed) = federation(3);
    let mut a1 = Agent::start(
        fed.parties[1].home.root(),
        &[],
        &[("SECAGG_FAULT", "node-after-store:crash")],
    );
    let _others: Vec<Agent> = fed.parties[2..]
        .iter()
        .map(|p| Agent::start(p.home.root(), &[], &[]))
        .collect();
    let started = Instant::now();
    let run = support::agents::session_run_all(&fed);
    // Well before the 30 s deadline: the vanished agent fails the session at once.
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
    run.fails_with(ErrorKind::PeerFailure.exit_code(), &fed.parties[1].party_id);
    assert_eq!(a1.wait(Duration::from_secs(5)), None, "killed by SIGKILL");
    let session = session_of(&run);
    assert_no_server_key(&fed, &session);
    // The killed node kept its key unconfirmed (stored before the crash), the others nothing
    // confirmed: the invariant holds.
    let c = context_of(&contexts(fed.parties[1].home.root()), &session).cloned();
    assert_eq!(c.unwrap()["state"], "unconfirmed");
    for p in &fed.parties[2..] {
        if let Some(c) = context_of(&contexts(p.home.root()), &session) {
            assert_eq!(c["state"], "unconfirmed");
        }
    }
    let _a1 = Agent::start(fed.parties[1].home.root(), &[], &[]);
    let again = session_run(&fed, &["--all"]);
    again.ok();
    assert_verified(&fed, &session_of(&again));
}

#[test]
fn federation_check_tells_offline_wrong_certificate_and_not_registered_apart() {
    let (_dir, fed) = federation(4);
    let r = researcher(&fed);
    let ok = Agent::start(fed.parties[1].home.root(), &[], &[]);
    // Node 2: offline. Node 3: a new certificate under the same id (not re-registered here).
    // Node 4: does not know the researcher.
    let n3 = fed.parties[3].home.root();
    let port = secagg(n3, &["identity", "show", "--format", "json"])
        .ok()
        .json()["port"]
        .as_u64()
        .unwrap()
        .to_string();
    secagg(
        n3,
        &[
            "init",
            "--role",
            "node",
            "--id",
            &fed.parties[3].party_id,
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--force",
        ],
    )
    .ok();
    let _a3 = Agent::start(n3, &[], &[]);
    let n4 = fed.parties[4].home.root();
    secagg(
        n4,
        &["certificate", "delete", &fed.parties[0].party_id, "--yes"],
    )
    .ok();
    let _a4 = Agent::start(n4, &[], &[]);
    let check = secagg(r, &["federation", "check", "--format", "json"]);
    assert_ne!(check.code, 0);
    let rows = check.json()["parties"].as_array().unwrap().clone();
    let row = |i: usize| {
        rows.iter()
            .find(|x| x["party_id"] == fed.parties[i].party_id.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(row(1)["ok"], true, "{}", row(1));
    assert_eq!(row(1)["mutual_tls"], true);
    assert_eq!(row(1)["protocol_version"], 2);
    assert!(row(1)["clock_skew_ms"].as_i64().unwrap().abs() < 5000);
    assert!(row(1)["certificate_days_left"].as_i64().unwrap() >= 29);
    assert_eq!(row(2)["problem"], "unreachable", "{}", row(2));
    assert_eq!(row(3)["problem"], "wrong_certificate", "{}", row(3));
    assert_eq!(row(4)["problem"], "not_registered_there", "{}", row(4));
    let text = secagg(r, &["federation", "check"]);
    for i in 2..=4 {
        assert!(
            text.stderr.contains(&fed.parties[i].party_id),
            "{}",
            text.stderr
        );
    }
    // Only the healthy node: exit 0.
    secagg(
        r,
        &["federation", "check", "--parties", &fed.parties[1].party_id],
    )
    .ok();
    drop(ok);
}

/// `roster pull`: a node fetches the researcher's latest roster from its agent and imports it
/// with the same checks as a file; a researcher that has not exported one says so.
#[test]
fn roster_pull_fetches_the_latest_roster_from_the_researchers_agent() {
    let (dir, fed) = federation(2);
    let node = fed.parties[1].home.root();
    // A researcher agent whose party never exported: a fresh federation's researcher did (the
    // demo's setup), so remove the served copy to see the refusal first.
    let latest = researcher(&fed).join("roster.json");
    std::fs::remove_file(&latest).unwrap();
    let _agent = Agent::start(researcher(&fed), &[], &[]);
    secagg(node, &["roster", "pull", "--yes"]).fails_with(4, "has not exported a roster yet");

    // The researcher registers a third node and exports roster #2.
    let port = support::free_port().to_string();
    let newcomer = dir.path().join("newcomer");
    secagg(
        &newcomer,
        &[
            "init",
            "--role",
            "node",
            "--id",
            "node_newcomer",
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
        ],
    )
    .ok();
    let bundle = dir.path().join("newcomer.json");
    support::export_bundle(&newcomer, &bundle);
    secagg(
        researcher(&fed),
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .ok();
    secagg(
        researcher(&fed),
        &[
            "roster",
            "export",
            "-o",
            dir.path().join("r2.json").to_str().unwrap(),
        ],
    )
    .ok();
    assert!(latest.exists());

    let r = secagg(node, &["roster", "pull", "--yes", "--format", "json"]);
    r.ok();
    assert_eq!(r.json()["serial"], 2);
    let peers = support::peers_json(node);
    let newcomer_row = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["party_id"] == "node_newcomer")
        .expect("the pulled roster registered the newcomer");
    assert_eq!(
        newcomer_row["origin"],
        format!("roster {} #2", fed.parties[0].party_id)
    );
    // Pulling again is a replay of #2: refused, nothing changes.
    secagg(node, &["roster", "pull", "--yes"]).fails_with(5, "already imported");

    // `status` carries the serial of the roster each party holds: the researcher the last it
    // exported (#2), a node the last it imported from the asking researcher (#2 pulled just
    // now; #1 for the node that imported only the demo's roster).
    let rid = fed.parties[0].party_id.as_str();
    let check = secagg(
        node,
        &["federation", "check", "--parties", rid, "--format", "json"],
    );
    check.ok();
    let row = &check.json()["parties"][0];
    assert_eq!(row["roster_serial"], 2, "{row}");
    assert_eq!(row["roster_issuer"], rid, "{row}");
    let _nodes = agents(&fed, &[]);
    let ids = format!("{},{}", fed.parties[1].party_id, fed.parties[2].party_id);
    let check = secagg(
        researcher(&fed),
        &["federation", "check", "--parties", &ids, "--format", "json"],
    );
    check.ok();
    let rows = check.json()["parties"].as_array().unwrap().clone();
    assert_eq!(rows[0]["roster_serial"], 2, "{}", rows[0]);
    assert_eq!(rows[1]["roster_serial"], 1, "{}", rows[1]);
    assert_eq!(rows[1]["roster_issuer"], rid, "{}", rows[1]);
    let text = secagg(
        researcher(&fed),
        &["federation", "check", "--parties", &ids],
    );
    text.ok();
    assert!(
        text.stdout.contains("#2") && text.stdout.contains("#1"),
        "{}",
        text.stdout
    );
}

/// The arguments of `session run --all` with MP-SPDZ ([`mpspdz_engine_args`]), JSON output.
fn mpspdz_run_args(root: &Path, port: u16, timeout: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "session",
        "run",
        "--all",
        "--timeout",
        timeout,
        "--format",
        "json",
    ]
    .map(String::from)
    .to_vec();
    args.extend(mpspdz_engine_args(root, port));
    args
}

/// `session run --all` with MP-SPDZ ([`mpspdz_run_args`]) at the researcher, with `env`, to its end.
fn mpspdz_run(
    fed: &Federation,
    root: &Path,
    port: u16,
    timeout: &str,
    env: &[(&str, &str)],
) -> Run {
    let args = mpspdz_run_args(root, port, timeout);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    support::secagg_env(researcher(fed), &args, env)
}

/// A node agent for MP-SPDZ sessions on `ports` with the build at `root`
/// ([`mpspdz_serve_args`]), plus `args`, with `env`.
fn mpspdz_agent(
    home: &Path,
    ports: std::ops::RangeInclusive<u16>,
    root: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Agent {
    let serve = mpspdz_serve_args(ports, root);
    let mut all: Vec<&str> = serve.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    Agent::start(home, &all, env)
}

/// A free port for each party's `shamir-party.x`, the researcher's first (`--mpspdz-port`).
fn mpspdz_ports(fed: &Federation) -> Vec<u16> {
    (0..fed.parties.len())
        .map(|_| support::free_ports_below_ephemeral(1))
        .collect()
}

/// [`mpspdz_agent`]s for every node, each with `env`; returns them and [`mpspdz_ports`].
fn mpspdz_agents(fed: &Federation, root: &Path, env: &[(&str, &str)]) -> (Vec<Agent>, Vec<u16>) {
    let ports = mpspdz_ports(fed);
    let agents = fed.parties[1..]
        .iter()
        .zip(&ports[1..])
        .map(|(p, &port)| mpspdz_agent(p.home.root(), port..=port, root, &[], env))
        .collect();
    (agents, ports)
}

/// Runs one `session run --engine mp-spdz` through fresh [`mpspdz_agents`], then checks the keys
/// sum to zero and every party's run directory is gone; returns the report and the ports.
fn mpspdz_session(
    fed: &Federation,
    root: &Path,
    env: &[(&str, &str)],
    timeout: &str,
) -> (serde_json::Value, Vec<u16>) {
    let (_agents, ports) = mpspdz_agents(fed, root, env);
    let run = mpspdz_run(fed, root, ports[0], timeout, env);
    run.ok();
    let report = run.json();
    assert_eq!(report["engine"], "mp-spdz");
    let session = report["session_id"].as_str().unwrap().to_owned();
    // sk0 + Σ sk_i = 0, every key confirmed.
    assert_verified(fed, &session);
    // Secrets and run directories gone everywhere (the engine's cleanup, run by each agent).
    for p in &fed.parties {
        let dir = p.home.root().join("runs").join(&session);
        assert!(!dir.exists(), "{} kept {}", p.party_id, dir.display());
    }
    (report, ports)
}

/// `session run --engine mp-spdz` through 5 agents, with the test double of `shamir-party.x`
/// (tests/support/mpspdz-double), which checks the invocation, the run directory and that every
/// party got the same ip file with the ports the agents chose.
#[test]
fn mp_spdz_session_through_the_agents_with_the_test_double() {
    let (dir, fed) = federation(4);
    let root = support::mpspdz_double_root(dir.path());
    let calls = dir.path().join("double-calls");
    std::fs::create_dir(&calls).unwrap();
    let env = [("SECAGG_MPSPDZ_DOUBLE_LOG", calls.to_str().unwrap())];
    let started = Instant::now();
    let (report, ports) = mpspdz_session(&fed, &root, &env, "30s");
    eprintln!(
        "measured: one 5-party MP-SPDZ session run (test double) {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let session = report["session_id"].as_str().unwrap();
    // Each party's row reports the port of its shamir-party.x: the one its agent was given
    // (rows are in session order, `--all` sorts the nodes by id).
    let rows = report["parties"].as_array().unwrap();
    let mut in_order = Vec::new();
    for row in rows {
        let i = fed
            .parties
            .iter()
            .position(|p| row["party_id"] == p.party_id.as_str())
            .unwrap();
        assert_eq!(row["mpspdz_port"], ports[i], "{row}");
        in_order.push(ports[i]);
    }
    // One invocation per party, all with the very same ip file: the registered host and the
    // port each agent chose, in session order.
    let expected: String = in_order
        .iter()
        .map(|p| format!("127.0.0.1:{p}\n"))
        .collect();
    for i in 0..fed.parties.len() {
        let path = calls.join(format!("{session}-P{i}.json"));
        let call: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(call["ip_file"], expected, "party {i}");
        assert_eq!(call["n"], 5);
        assert_eq!(call["args"][0], i.to_string());
        assert_eq!(call["args"][5], "server_key");
    }
}

/// The same through real MP-SPDZ (`MPSPDZ_ROOT`); skipped, saying why, without it.
#[test]
fn mp_spdz_session_through_the_agents_with_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    let (_dir, fed) = federation(3);
    let started = Instant::now();
    mpspdz_session(&fed, &root, &[], "90s");
    eprintln!(
        "measured: one 4-party MP-SPDZ session run (real MP-SPDZ) {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// A node agent SIGKILLed while its real `shamir-party.x` runs: that `shamir-party.x` does not
/// outlive it (parent-death signal), the researcher ends the session well before
/// its deadline naming the node, nobody confirms a key, and no process is left. Secrets are gone
/// except in the killed agent's own run directory, which the next MP-SPDZ run in its home removes;
/// the next session through a restarted agent succeeds. Real MP-SPDZ (`MPSPDZ_ROOT`); skipped,
/// saying why, without it.
#[test]
fn mp_spdz_an_agent_killed_mid_run_fails_the_session_by_name_with_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    let (dir, fed) = federation(3);
    // Every home's compile cache warm, so that the parties start shamir-party.x together.
    mpspdz_session(&fed, &root, &[], "90s");

    let (mut agents, ports) = mpspdz_agents(&fed, &root, &[]);
    let victim = &fed.parties[2];
    let started = Instant::now();
    let run = spawn_at_researcher(&fed, mpspdz_run_args(&root, ports[0], "60s"));
    let party_x = running_shamir_party(victim.home.root());
    agents[1].child.kill().unwrap();
    agents[1].child.wait().unwrap();

    // Well before the 60 s deadline, naming the node.
    let (stderr, report) = failed_fast_by_a_node(run, started, Duration::from_secs(20));
    assert!(stderr.contains(&victim.party_id), "{stderr}");
    eprintln!(
        "measured: real MP-SPDZ session failed {:.0} ms after its start: {}",
        started.elapsed().as_secs_f64() * 1e3,
        stderr.lines().next().unwrap_or_default()
    );
    // The other nodes in a word each; the chains of why stay in their rows.
    for p in &fed.parties[1..] {
        if p.party_id != victim.party_id {
            assert!(
                stderr.contains(&format!("{} (key: ", p.party_id)),
                "{stderr}"
            );
        }
    }
    assert!(!stderr.contains("cancelled session"), "{stderr}");
    let session = report["session_id"].as_str().unwrap().to_owned();
    let row = report["parties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["party_id"] == victim.party_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["state"], "failed", "{row}");
    assert_no_server_key(&fed, &session);
    for p in &fed.parties[1..] {
        if let Some(c) = context_of(&contexts(p.home.root()), &session) {
            assert_eq!(c["state"], "unconfirmed", "{}", p.party_id);
        }
    }
    assert_no_shamir_party_left(dir.path(), party_x);
    assert_secrets_left_only_by(&fed, Some(victim.home.root()));

    // Restarted agents: the next session succeeds, and the killed run's directory is gone.
    drop(agents);
    mpspdz_session(&fed, &root, &[], "90s");
    assert!(!victim.home.root().join("runs").join(&session).exists());
    assert_secrets_left_only_by(&fed, None);
}

/// Secret files of MP-SPDZ runs ([`support::secret_leftovers`]) are left only in the home of
/// `killed`, the one party SIGKILLed (which could not clean up), and none anywhere without one.
fn assert_secrets_left_only_by(fed: &Federation, killed: Option<&Path>) {
    let secrets = support::secret_leftovers(fed);
    match killed {
        Some(home) => assert!(
            secrets.iter().all(|p| p.starts_with(home)),
            "secret files left: {secrets:?}"
        ),
        None => assert_eq!(secrets, Vec::<std::path::PathBuf>::new()),
    }
}

/// The pid of the `shamir-party.x` running in `home`'s run directory, once there is one (20 s
/// at most).
fn running_shamir_party(home: &Path) -> u32 {
    let runs = format!("{}/runs", home.display());
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let procs = support::processes_mentioning(&runs);
        if let Some((pid, _)) = procs.iter().find(|(_, c)| c.contains("shamir-party.x")) {
            return *pid;
        }
        assert!(
            Instant::now() < until,
            "no shamir-party.x started in {runs}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// No `shamir-party.x` (`party_x` among them) is left under `dir` (bounded: the kernel and the
/// agents reap them within moments; call it once no agent can start one any more); agents may
/// still run.
fn assert_no_shamir_party_left(dir: &Path, party_x: u32) {
    let dir = dir.display().to_string();
    let left = || -> Vec<(u32, String)> {
        support::processes_mentioning(&dir)
            .into_iter()
            .filter(|(_, c)| !c.contains(" serve"))
            .collect()
    };
    let alive = || secagg_core::processes::process_alive(party_x);
    let until = Instant::now() + Duration::from_secs(20);
    while (alive() || !left().is_empty()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "shamir-party.x {party_x} survived");
    assert_eq!(left(), Vec::new(), "processes left");
}

/// SIGTERM to a node agent while its real `shamir-party.x` runs (another node's agent holds the
/// session back, so the run waits for it) and the grace period ends first: the agent kills its
/// `shamir-party.x`, removes the run's secrets and exits 0; the researcher fails naming it, well
/// before its deadline; no server key, no confirmed key, no process and no secret file anywhere.
/// Real MP-SPDZ (`MPSPDZ_ROOT`); skipped, saying why, without it.
#[test]
fn mp_spdz_sigterm_past_the_grace_period_kills_the_run_and_leaves_no_secret_with_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    let (dir, fed) = federation(3);
    mpspdz_session(&fed, &root, &[], "90s");

    let ports = mpspdz_ports(&fed);
    let home = |i: usize| fed.parties[i].home.root();
    let only = |i: usize| ports[i]..=ports[i];
    let mut victim = mpspdz_agent(home(1), only(1), &root, &["--grace", "200ms"], &[]);
    let _on_time = mpspdz_agent(home(2), only(2), &root, &[], &[]);
    let _late = mpspdz_agent(
        home(3),
        only(3),
        &root,
        &[],
        &[("SECAGG_FAULT", "agent-started:sleep=4000")],
    );
    let started = Instant::now();
    let run = spawn_at_researcher(&fed, mpspdz_run_args(&root, ports[0], "60s"));
    let party_x = running_shamir_party(home(1));
    victim.signal("TERM");
    assert_eq!(victim.wait(Duration::from_secs(10)), Some(0));
    let log = victim.log_text();
    assert!(log.contains("aborting 1 session(s)"), "{log}");

    let (stderr, report) = failed_fast_by_a_node(run, started, Duration::from_secs(20));
    let victim_id = &fed.parties[1].party_id;
    assert!(
        stderr.contains(&format!(
            "the agent of {victim_id} was stopped and aborted session"
        )),
        "{stderr}"
    );
    let session = report["session_id"].as_str().unwrap().to_owned();
    assert_no_server_key(&fed, &session);
    for p in &fed.parties[1..] {
        if let Some(c) = context_of(&contexts(p.home.root()), &session) {
            assert_eq!(c["state"], "unconfirmed", "{}", p.party_id);
        }
    }
    assert_no_shamir_party_left(dir.path(), party_x);
    // A stopped agent cleans up after itself: nothing secret is left, its own run included.
    assert_secrets_left_only_by(&fed, None);
    assert!(!home(1).join("runs").join(&session).exists());
}

/// Three MP-SPDZ sessions at once through the same agents, with real MP-SPDZ and cold program
/// caches (so the three runs in each home race to compile the same program): each agent gives
/// each session a port of its own range, and every session stores keys that sum to 0 with no run
/// directory left. Real MP-SPDZ (`MPSPDZ_ROOT`); skipped, saying why, without it.
#[test]
fn mp_spdz_three_concurrent_sessions_through_the_agents_with_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    let (_dir, fed) = federation(3);
    // Three consecutive free ports per party.
    let ranges: Vec<u16> = (0..fed.parties.len())
        .map(|_| support::free_ports_below_ephemeral(3))
        .collect();
    let _agents: Vec<Agent> = fed.parties[1..]
        .iter()
        .zip(&ranges[1..])
        .map(|(p, &first)| mpspdz_agent(p.home.root(), first..=first + 2, &root, &[], &[]))
        .collect();
    let runs: Vec<Child> = (0..3)
        .map(|k| spawn_at_researcher(&fed, mpspdz_run_args(&root, ranges[0] + k, "90s")))
        .collect();
    let mut used_ports = std::collections::HashSet::new();
    for run in runs {
        let out = run.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let session = report["session_id"].as_str().unwrap();
        assert_verified(&fed, session);
        for row in report["parties"].as_array().unwrap() {
            assert!(
                used_ports.insert(row["mpspdz_port"].as_u64().unwrap()),
                "port given twice: {row}"
            );
        }
        for p in &fed.parties {
            assert!(!p.home.root().join("runs").join(session).exists());
        }
    }
    assert_eq!(used_ports.len(), 3 * fed.parties.len());
    assert_secrets_left_only_by(&fed, None);
}

/// The researcher's `session run` SIGKILLed while the real `shamir-party.x` processes run: its
/// own `shamir-party.x` dies with it, every node agent sees its control connection close and
/// kills its run at once (not at the 60 s deadline), no key is confirmed and no server key
/// stored, and the next session through the same agents succeeds and sweeps the killed run's
/// directory. Real MP-SPDZ (`MPSPDZ_ROOT`); skipped, saying why, without it.
#[test]
fn mp_spdz_the_researcher_killed_mid_run_stops_every_node_with_real_mp_spdz() {
    let Some(root) = support::real_mpspdz_root() else {
        return;
    };
    let (dir, fed) = federation(3);
    mpspdz_session(&fed, &root, &[], "90s");
    let (agents, ports) = mpspdz_agents(&fed, &root, &[]);
    let mut run = spawn_at_researcher(&fed, mpspdz_run_args(&root, ports[0], "60s"));
    let party_x = running_shamir_party(researcher(&fed));
    run.kill().unwrap();
    run.wait().unwrap();
    // Every agent ends its side at once, not at the 60 s deadline, and keeps serving.
    for a in &agents {
        a.wait_for("failed", Duration::from_secs(5));
    }
    assert_no_shamir_party_left(dir.path(), party_x);
    let sessions: Vec<String> = std::fs::read_dir(researcher(&fed).join("runs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    assert_no_server_key(&fed, session);
    for p in &fed.parties[1..] {
        if let Some(c) = context_of(&contexts(p.home.root()), session) {
            assert_eq!(c["state"], "unconfirmed", "{}", p.party_id);
        }
    }
    // Only the SIGKILLed researcher could not clean up after itself.
    assert_secrets_left_only_by(&fed, Some(researcher(&fed)));

    let next = mpspdz_run(&fed, &root, ports[0], "60s", &[]);
    next.ok();
    assert_verified(&fed, &session_of(&next));
    assert!(!researcher(&fed).join("runs").join(session).exists());
    assert_secrets_left_only_by(&fed, None);
}

/// MP-SPDZ sessions need a free port of the agent's range: an exhausted range (its one port held
/// by another program) is refused at once, with the option named, and nothing is stored; an
/// agent started without --mpspdz-ports refuses MP-SPDZ sessions saying how to enable them.
#[test]
fn mp_spdz_refusals_an_exhausted_port_range_and_an_agent_without_mp_spdz() {
    let (dir, fed) = federation(2);
    let root = support::mpspdz_double_root(dir.path());
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let range = format!("{port}-{port}");
    let _a1 = mpspdz_agent(fed.parties[1].home.root(), port..=port, &root, &[], &[]);
    let _a2 = Agent::start(fed.parties[2].home.root(), &[], &[]);
    // In this order, so that the exit code is the first refusal's (the exhausted range).
    let nodes = format!("{},{}", fed.parties[1].party_id, fed.parties[2].party_id);
    let engine = mpspdz_engine_args(&root, support::free_port());
    let mut args = vec![
        "session",
        "run",
        "--parties",
        &nodes,
        "--format",
        "json",
        "--timeout",
        "20s",
    ];
    args.extend(engine.iter().map(String::as_str));
    let run = secagg(researcher(&fed), &args);
    run.fails_with(
        ErrorKind::Conflict.exit_code(),
        &format!("--mpspdz-ports {range}"),
    );
    assert!(
        run.stderr.contains("every port of its range"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("does not run MP-SPDZ sessions: it was started without --mpspdz-ports"),
        "{}",
        run.stderr
    );
    // Each refusal keeps its own hint in the report.
    let row = &run.json()["parties"][2];
    assert_eq!(row["state"], "refused");
    assert!(
        row["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("secagg serve --mpspdz-ports FIRST-LAST --mpspdz-root DIR"),
        "{row}"
    );
    let session = session_of(&run);
    for p in &fed.parties {
        assert!(context_of(&contexts(p.home.root()), &session).is_none());
    }
    drop(held);
}

/// Starts `secagg serve` for `home` inside namespace `ns`, its log at `log`, and waits until it
/// listens. The process joins the lab (killed when the lab goes); returns its index there.
fn serve_in_namespace(
    lab: &mut support::wg_lab::Lab,
    ns: &str,
    home: &Path,
    log: &Path,
    args: &[&str],
) -> usize {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, support::bin(), "--home"])
        .arg(home)
        .arg("serve")
        .args(args)
        .env_remove("MPSPDZ_IP")
        .env_remove("MPSPDZ_PORT")
        .env_remove("SECAGG_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn secagg serve in its namespace");
    lab.processes.push(child);
    let until = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("listening:")
    {
        assert!(
            Instant::now() < until,
            "agent never listened: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.processes.len() - 1
}

/// [`serve_in_namespace`] for every node of the lab (`clients` and `homes` in party order, the
/// researcher first), node `i` with `args(i)`; returns their indexes in the lab's processes.
fn serve_nodes_in_namespaces(
    lab: &mut support::wg_lab::Lab,
    root: &Path,
    clients: &[support::wg_lab::Client],
    homes: &[std::path::PathBuf],
    args: impl Fn(usize) -> Vec<String>,
) -> Vec<usize> {
    (1..clients.len())
        .map(|i| {
            let c = &clients[i];
            let log = root.join(format!("agent-{}.log", c.party_id));
            let args = args(i);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            serve_in_namespace(lab, &c.ns, &homes[i], &log, &args)
        })
        .collect()
}

/// Every peer of the lab's tunnel sent its server more than `min` bytes since `before`
/// ([`support::wg_lab::received_per_peer`]).
fn assert_every_peer_sent(srv_ns: &str, srv_if: &str, before: &[(String, u64)], min: u64) {
    let after = support::wg_lab::received_per_peer(srv_ns, srv_if);
    assert_eq!(after.len(), before.len(), "{after:?}");
    for (key, rx) in &after {
        let grew = rx - before.iter().find(|(k, _)| k == key).map_or(0, |(_, r)| *r);
        assert!(
            grew > min,
            "peer {key} sent only {grew} bytes through the tunnel"
        );
    }
}

/// `secagg --home HOME ARGS` inside namespace `ns` (bounded to 60 s).
fn secagg_in_namespace(ns: &str, home: &Path, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", ns, support::bin(), "--home"])
        .arg(home)
        .args(args)
        .env_remove("MPSPDZ_IP")
        .env_remove("MPSPDZ_PORT")
        .env_remove("SECAGG_HOME");
    support::wg_lab::run_bounded(c, Duration::from_secs(60))
}

/// The lab's parties as a [`Federation`] (for [`assert_verified`]).
fn lab_federation(
    root: &Path,
    clients: &[support::wg_lab::Client],
    homes: &[std::path::PathBuf],
) -> Federation {
    Federation {
        dir: root.to_owned(),
        parties: clients
            .iter()
            .zip(homes)
            .map(|(c, home)| demo::DemoParty {
                party_id: c.party_id.to_owned(),
                home: secagg_core::home::Home::new(home),
            })
            .collect(),
    }
}

/// The lab's researcher runs `session run` over its nodes in the order of the lab (so the first
/// node dials the second); the session must succeed with keys that sum to 0.
fn verified_lab_session(
    researcher_ns: &str,
    fed: &Federation,
    extra: &[&str],
) -> (serde_json::Value, std::time::Duration) {
    let nodes: Vec<&str> = fed.parties[1..]
        .iter()
        .map(|p| p.party_id.as_str())
        .collect();
    let nodes = nodes.join(",");
    let mut args = vec![
        "session",
        "run",
        "--parties",
        &nodes,
        "--format",
        "json",
        "--timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let run = secagg_in_namespace(researcher_ns, fed.parties[0].home.root(), &args);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_verified(fed, report["session_id"].as_str().unwrap());
    (report, took)
}

/// Each node agent's connection counters (in party order), from a `federation check` that the
/// lab's researcher runs in its namespace; every agent must answer, pinned both ways.
fn lab_connection_counts(researcher_ns: &str, fed: &Federation) -> Vec<serde_json::Value> {
    let check = secagg_in_namespace(
        researcher_ns,
        fed.parties[0].home.root(),
        &["federation", "check", "--format", "json"],
    );
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = rows["parties"].as_array().unwrap();
    for row in rows {
        assert_eq!(row["mutual_tls"], true, "{row}");
        assert!(
            row["endpoint"].as_str().unwrap().starts_with("10.221."),
            "{row}"
        );
    }
    fed.parties[1..]
        .iter()
        .map(|p| {
            rows.iter()
                .find(|r| r["party_id"] == p.party_id.as_str())
                .unwrap_or_else(|| panic!("no check row for {}", p.party_id))["connections"]
                .clone()
        })
        .collect()
}

/// `session run` through node agents over a real WireGuard tunnel: the researcher and each node
/// in its own network namespace (the lab of `tests/e2e_vpn_tunnel.rs`, `support::wg_lab`),
/// registered at their VPN addresses; the agents run in the nodes' namespaces, `federation
/// check` and `session run` in the researcher's. Skipped, saying why, without root, namespaces
/// or wireguard-go.
#[test]
fn session_run_through_agents_over_a_real_wireguard_tunnel() {
    use support::wg_lab::{
        parties_at_vpn_addresses, received_per_peer, standard_lab, StandardLab, Tunnel,
    };
    let started = Instant::now();
    // Interface and namespace names must differ from e2e_vpn_tunnel's, which may run at the
    // same time in another process (they are tagged by process id, and this one by "a" too).
    let tag = format!("a{}", std::process::id());
    let Some(StandardLab {
        dir,
        mut lab,
        clients,
        tunnel: Tunnel {
            srv_ns,
            srv_if,
            vpn_ips,
        },
    }) = standard_lab(&tag)
    else {
        return;
    };
    let root = dir.path();
    let homes = parties_at_vpn_addresses(root, &clients, &vpn_ips);
    let tunnel_ready = started.elapsed();

    // Each node's agent in its namespace, on its VPN endpoint.
    serve_nodes_in_namespaces(&mut lab, root, &clients, &homes, |_| vec![]);
    let fed = lab_federation(root, &clients, &homes);

    // Every agent answers through the tunnel, pinned both ways.
    lab_connection_counts(&clients[0].ns, &fed);

    // One session, driven from the researcher's namespace.
    let before = received_per_peer(&srv_ns, &srv_if);
    let (_, took) = verified_lab_session(&clients[0].ns, &fed, &[]);

    // The session's traffic crossed the tunnel: the server received bytes from every peer (the
    // nodes' connections to each other are forwarded by it).
    assert_every_peer_sent(&srv_ns, &srv_if, &before, 2_000);
    println!(
        "measured: tunnel up in {:.1} s; session run through the agents over WireGuard {} ms (process start included)",
        tunnel_ready.as_secs_f64(),
        took.as_millis()
    );
}

/// `session run --engine mp-spdz` through node agents over the real WireGuard tunnel, with real
/// MP-SPDZ: every `shamir-party.x` in its party's namespace, dialing the others at their VPN
/// addresses on the ports the agents chose. Needs what the tunnel test needs and `MPSPDZ_ROOT`;
/// skipped, saying why, without either.
#[test]
fn mp_spdz_session_run_over_a_real_wireguard_tunnel_with_real_mp_spdz() {
    use support::wg_lab::{
        parties_at_vpn_addresses, received_per_peer, standard_lab, StandardLab, Tunnel,
    };
    let Some(mpspdz) = support::real_mpspdz_root() else {
        return;
    };
    let tag = format!("m{}", std::process::id());
    let Some(StandardLab {
        dir,
        mut lab,
        clients,
        tunnel: Tunnel {
            srv_ns,
            srv_if,
            vpn_ips,
        },
    }) = standard_lab(&tag)
    else {
        return;
    };
    let root = dir.path();
    let homes = parties_at_vpn_addresses(root, &clients, &vpn_ips);
    let ports: [u16; 3] = [15000, 15001, 15002];
    serve_nodes_in_namespaces(&mut lab, root, &clients, &homes, |i| {
        mpspdz_serve_args(ports[i]..=ports[i], &mpspdz)
    });
    let fed = lab_federation(root, &clients, &homes);
    let before = received_per_peer(&srv_ns, &srv_if);
    let engine = mpspdz_engine_args(&mpspdz, ports[0]);
    let engine: Vec<&str> = engine.iter().map(String::as_str).collect();
    let (report, took) = verified_lab_session(&clients[0].ns, &fed, &engine);
    assert_eq!(report["engine"], "mp-spdz");
    for row in report["parties"].as_array().unwrap() {
        let i = clients
            .iter()
            .position(|c| row["party_id"] == c.party_id)
            .unwrap();
        assert_eq!(row["mpspdz_port"], ports[i], "{row}");
    }
    // MP-SPDZ's traffic crossed the tunnel: each peer sent the server more than the agents'
    // control messages alone would.
    assert_every_peer_sent(&srv_ns, &srv_if, &before, 10_000);
    eprintln!(
        "measured: one 3-party MP-SPDZ session run over WireGuard (real MP-SPDZ, compile included) {} ms",
        took.as_millis()
    );
}

/// A kept node-to-node connection whose peer vanished without a word (its host lost power: no
/// FIN and no reset ever reached the node that keeps it) is found dead when the next session
/// tries it and is replaced by a fresh dial, and that session succeeds. On loopback a killed
/// agent's close always arrives and the idle watch drops the connection first; only a cut link
/// reaches this fallback of `transport::pool` with real agents. Same lab and skips as
/// [`session_run_through_agents_over_a_real_wireguard_tunnel`].
#[test]
fn a_kept_connection_to_a_node_that_lost_power_is_redialed_and_the_next_session_succeeds() {
    use support::wg_lab::{
        must, ns_exec, parties_at_vpn_addresses, probe_tunnel, standard_lab, StandardLab, Tunnel,
    };
    let tag = format!("p{}", std::process::id());
    let Some(StandardLab {
        dir,
        mut lab,
        clients,
        tunnel: Tunnel { vpn_ips, .. },
    }) = standard_lab(&tag)
    else {
        return;
    };
    let root = dir.path();
    let homes = parties_at_vpn_addresses(root, &clients, &vpn_ips);
    let agent_at = serve_nodes_in_namespaces(&mut lab, root, &clients, &homes, |_| vec![]);
    let fed = lab_federation(root, &clients, &homes);
    let researcher_ns = clients[0].ns.as_str();

    // The first node dials the second and keeps the connection after the clean end (which the
    // two nodes finish shortly after the researcher has its result).
    verified_lab_session(researcher_ns, &fed, &[]);
    let until = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let counts = lab_connection_counts(researcher_ns, &fed);
        if counts[0]["idle_dialed"] == 1 && counts[1]["idle_accepted"] == 1 {
            break counts;
        }
        assert!(Instant::now() < until, "nothing kept: {counts:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counts[0]["dialed"], 1, "{counts:?}");
    // The first node's `End` may still wait for its acknowledgement (a delayed ACK under load):
    // retransmitted after the power cut, it would draw a reset from the restarted host that the
    // idle watch sees before the next session tries the connection, and the test would not
    // reach the fallback it pins (CI once saw `closed_idle` 1 and `stale` 0).
    wait_until_acknowledged(&clients[1].ns, &vpn_ips[2]);

    // The second node's host loses power: its link goes first, so nothing the dying agent's
    // kernel sends gets out; then its TCP sockets go the way a reboot takes them (`ss -K`
    // destroys the killed agent's orphans, which would otherwise retry their FIN for minutes).
    let lost = &clients[2];
    let veth = format!("vc{}x{tag}", lost.underlay);
    must("ip", &["-n", &lost.ns, "link", "set", &veth, "down"]);
    let agent = &mut lab.processes[agent_at[1]];
    agent.kill().unwrap();
    agent.wait().unwrap();
    ns_exec(&lost.ns, &["ss", "-K", "-t", "state", "all"]);
    let left = ns_exec(&lost.ns, &["ss", "-H", "-t", "-a"]);
    assert_eq!(left.trim(), "", "TCP sockets survived the power cut");
    // Power back: the link and its route, the tunnel, and the agent.
    must("ip", &["-n", &lost.ns, "link", "set", &veth, "up"]);
    let gw = format!("172.31.{}.1", lost.underlay);
    must(
        "ip",
        &[
            "-n",
            &lost.ns,
            "route",
            "replace",
            "172.30.0.1/32",
            "via",
            &gw,
        ],
    );
    probe_tunnel(&lost.ns, "10.220.0.1", &lost.iface);
    let log = root.join(format!("agent-{}-after-power-cut.log", lost.party_id));
    serve_in_namespace(&mut lab, &lost.ns, &homes[2], &log, &[]);

    // The first node never heard of it: it still keeps the connection as alive (else this test
    // would not reach the fallback it pins).
    let counts = lab_connection_counts(researcher_ns, &fed);
    assert_eq!(counts[0]["idle_dialed"], 1, "{counts:?}");
    assert_eq!(counts[0]["stale"], 0, "{counts:?}");

    // The next session tries the dead connection (the restarted host answers its hello with a
    // reset), dials anew and succeeds; the one after runs on the new connection.
    verified_lab_session(researcher_ns, &fed, &[]);
    let counts = lab_connection_counts(researcher_ns, &fed);
    assert_eq!(counts[0]["stale"], 1, "{counts:?}");
    assert_eq!(counts[0]["dialed"], 2, "{counts:?}");
    verified_lab_session(researcher_ns, &fed, &[]);
    let counts = lab_connection_counts(researcher_ns, &fed);
    assert_eq!(counts[0]["reused"], 1, "{counts:?}");
    assert_eq!(counts[0]["dialed"], 2, "{counts:?}");
}

/// Waits until every TCP connection in namespace `ns` to `peer_ip` has all its bytes
/// acknowledged by the peer (`ss`'s Send-Q is 0); there must be at least one such connection.
fn wait_until_acknowledged(ns: &str, peer_ip: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = support::wg_lab::ns_exec(ns, &["ss", "-H", "-t", "-n", "dst", peer_ip]);
        assert!(!out.trim().is_empty(), "no connection to {peer_ip} in {ns}");
        let unacked = out
            .lines()
            .any(|line| line.split_whitespace().nth(2) != Some("0"));
        if !unacked {
            return;
        }
        assert!(Instant::now() < until, "never acknowledged: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node whose `shamir-party.x` fails ends the MP-SPDZ session at once: the researcher's own
/// `shamir-party.x` (which would wait for the missing node until the deadline) is killed, the
/// command names the node and exits with its kind of error well before the deadline; no server
/// key anywhere, the failed node keeps its key unconfirmed (stored before its run, as
/// `negotiate --engine mp-spdz` does), and no run directory is left.
#[test]
fn mp_spdz_a_failing_node_ends_the_session_at_once() {
    let (dir, fed) = federation(3);
    let root = support::mpspdz_double_root(dir.path());
    let ports = mpspdz_ports(&fed);
    let fail = [("SECAGG_MPSPDZ_DOUBLE_FAIL", "1")];
    let _agents: Vec<Agent> = fed.parties[1..]
        .iter()
        .zip(&ports[1..])
        .enumerate()
        .map(|(i, (p, port))| {
            let env: &[(&str, &str)] = if i == 0 { &fail } else { &[] };
            mpspdz_agent(p.home.root(), *port..=*port, &root, &[], env)
        })
        .collect();
    let started = Instant::now();
    let run = mpspdz_run(&fed, &root, ports[0], "40s", &[]);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    let failed = &fed.parties[1].party_id;
    run.fails_with(
        ErrorKind::ExternalTool.exit_code(),
        &format!("failed at {failed}"),
    );
    assert!(
        run.stderr.contains("SECAGG_MPSPDZ_DOUBLE_FAIL"),
        "{}",
        run.stderr
    );
    let session = session_of(&run);
    assert_no_server_key(&fed, &session);
    let c = context_of(&contexts(fed.parties[1].home.root()), &session).cloned();
    assert_eq!(c.unwrap()["state"], "unconfirmed");
    // The other node ended at once too (its shamir-party.x would have waited for the deadline):
    // cancelled by the researcher, or, when its run saw the researcher's killed shamir-party.x
    // go before the cancel arrived, failed by it; either way it keeps its key unconfirmed.
    let report = run.json();
    let other = report["parties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["party_id"] == fed.parties[2].party_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(other["state"], "failed", "{other}");
    assert_eq!(other["key"], "unconfirmed", "{other}");
    let why = other["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("cancelled session") || why.contains("shamir-party.x failed"),
        "{other}"
    );
    for p in &fed.parties {
        let dir = p.home.root().join("runs").join(&session);
        assert!(!dir.exists(), "{} kept {}", p.party_id, dir.display());
    }
}

/// One `session run` with every node in order, which must succeed with keys that sum to 0.
fn verified_session(fed: &Federation) {
    let run = session_in_order(fed, &[]);
    run.ok();
    assert_verified(fed, &session_of(&run));
}

/// `session run` over the nodes in this order (the researcher first): node `i` dials the nodes
/// after it, so the tests know which agent keeps which connection.
fn session_in_order(fed: &Federation, env: &[(&str, &str)]) -> Run {
    let nodes: Vec<&str> = fed.parties[1..]
        .iter()
        .map(|p| p.party_id.as_str())
        .collect();
    let list = nodes.join(",");
    support::secagg_env(
        researcher(fed),
        &[
            "session",
            "run",
            "--parties",
            &list,
            "--format",
            "json",
            "--timeout",
            "20s",
        ],
        env,
    )
}

/// Sessions run back to back through the same agents run on the node-to-node connections of the
/// first one (no TLS handshake between nodes), and every session still stores keys that sum to 0.
#[test]
fn consecutive_sessions_reuse_node_connections_and_every_key_sums_to_zero() {
    let (_dir, fed) = federation(4);
    let _agents = agents(&fed, &[]);
    // 4 nodes: 6 node-to-node connections per session.
    for _ in 0..4 {
        verified_session(&fed);
    }
    let counts = connection_counts(&fed);
    let (dialed, reused) = (total(&counts, "dialed"), total(&counts, "reused"));
    assert_eq!(dialed + reused, 4 * 6, "{counts:?}");
    // At least the last three sessions should run on kept connections; a connection whose
    // clean end had not completed yet when the next session started is dialed anew, hence ≥.
    assert!(reused >= 12, "{counts:?}");
    assert_eq!(total(&counts, "stale"), 0, "{counts:?}");
    // Both ends saw each reuse: the accepting agents routed every hello that came on a kept
    // connection.
    assert_eq!(total(&counts, "reused_accepted"), reused, "{counts:?}");
    assert_eq!(total(&counts, "not_kept"), 0, "{counts:?}");
    // The last node only accepts; the first only dials (besides the researcher's connections).
    assert_eq!(counts[3]["dialed"], 0, "{counts:?}");
    assert_eq!(counts[0]["reused_accepted"], 0, "{counts:?}");
}

/// Each node agent's TLS handshakes completed so far (full and resumed), in party order, and the
/// node-to-node connections the agents dialed anew in all, from one `federation check` (whose own
/// status connection to each agent is counted too).
fn handshakes_and_dials(fed: &Federation) -> (Vec<u64>, u64) {
    let check = secagg(
        researcher(fed),
        &["federation", "check", "--format", "json"],
    );
    check.ok();
    let rows = check.json()["parties"].as_array().unwrap().clone();
    let mut handshakes = Vec::new();
    let mut dialed = 0;
    for p in &fed.parties[1..] {
        let row = rows
            .iter()
            .find(|r| r["party_id"] == p.party_id.as_str())
            .unwrap_or_else(|| panic!("no check row for {}", p.party_id));
        let tls = &row["tls_handshakes"];
        handshakes.push(tls["full"].as_u64().unwrap() + tls["resumed"].as_u64().unwrap());
        dialed += row["connections"]["dialed"].as_u64().unwrap();
    }
    (handshakes, dialed)
}

/// A native `session run` opens one connection per node, the control connection its join came
/// on, and the negotiation with that node runs on it (regression guard for the performance fix
/// that removed the second connection and handshake per node and session).
#[test]
fn a_session_run_negotiates_with_each_node_on_its_control_connection() {
    let (_dir, fed) = federation(3);
    let _agents = agents(&fed, &[]);
    // The warm-up session dials the node-to-node connections the next ones reuse.
    verified_session(&fed);
    let (before, dialed_before) = handshakes_and_dials(&fed);
    let sessions = 3;
    for _ in 0..sessions {
        verified_session(&fed);
    }
    let (after, dialed_after) = handshakes_and_dials(&fed);
    // Per node: one handshake per session (the researcher's control connection) and the second
    // check's status connection; plus, in all, one per node-to-node connection dialed anew (one
    // whose clean end had not completed when the next session started).
    let new: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let nodes = (fed.parties.len() - 1) as u64;
    assert_eq!(
        new,
        nodes * (sessions + 1) + (dialed_after - dialed_before),
        "handshakes per node before {before:?}, after {after:?}; node-to-node dials {dialed_before} -> {dialed_after}"
    );
}

/// A running agent keeps its store connections open between sessions (`store::pool`), so the
/// store's write-ahead log is no longer deleted after each session; deleting a key while the
/// agent runs must still leave no copy of it in `store.sqlite`, `-wal` or `-shm`.
#[test]
fn a_key_deleted_while_the_agent_runs_leaves_no_copy_in_the_store_files() {
    let (_dir, fed) = federation(2);
    let _agents = agents(&fed, &[]);
    let run = session_in_order(&fed, &[]);
    run.ok();
    let session = session_of(&run);
    assert_verified(&fed, &session);
    // One more session, so that the agent's kept connections have written since the first.
    verified_session(&fed);
    let node = fed.parties[1].home.root();
    let key = support::revealed_key(node, &session);
    assert!(key.len() > 100, "{key}");
    let files = ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"];
    let holding_the_key = || -> Vec<&str> {
        files
            .into_iter()
            .filter(|f| {
                std::fs::read(node.join(f))
                    .is_ok_and(|b| b.windows(key.len()).any(|w| w == key.as_bytes()))
            })
            .collect()
    };
    // The search works: the stored key is found before the delete.
    assert!(!holding_the_key().is_empty());
    secagg(node, &["context", "delete", &session]).ok();
    assert_eq!(
        holding_the_key(),
        Vec::<&str>::new(),
        "the deleted key is still in these files"
    );
    // The agent goes on with its kept connections.
    verified_session(&fed);
}

/// A node agent restarted between sessions: the connections kept to and from the old process
/// are dropped (closed by the watch on idle connections, or found dead when a session tries one)
/// and replaced by fresh dials; the next sessions succeed and reuse again.
#[test]
fn a_restarted_node_agent_gets_fresh_connections_and_the_next_sessions_succeed() {
    let (_dir, fed) = federation(3);
    let mut agents = agents(&fed, &[]);
    verified_session(&fed);
    // Node 2 is dialed by node 1 and dials node 3: both of its kept connections die with it.
    agents[1].child.kill().unwrap();
    agents[1].child.wait().unwrap();
    agents[1] = Agent::start(fed.parties[2].home.root(), &[], &[]);
    for _ in 0..2 {
        verified_session(&fed);
    }
    let counts = connection_counts(&fed);
    // Node 1's connection to the old node 2 was closed idle or found stale, then dialed anew.
    let n1 = &counts[0];
    assert!(
        n1["closed_idle"].as_u64().unwrap() + n1["stale"].as_u64().unwrap() >= 1,
        "{n1}"
    );
    assert!(n1["dialed"].as_u64().unwrap() >= 3, "{n1}");
    // The third session reused the connections the second one dialed.
    assert!(total(&counts, "reused") >= 3, "{counts:?}");
}

/// A session that fails midway (the researcher fails after the nodes exchanged their shares and
/// aborts): the node-to-node connections it ran on are closed, not kept, and the next sessions
/// succeed with keys that sum to 0.
#[test]
fn a_session_failed_midway_does_not_poison_later_sessions() {
    let (_dir, fed) = federation(4);
    let _agents = agents(&fed, &[]);
    let first = session_in_order(&fed, &[]);
    first.ok();
    let failed = session_in_order(
        &fed,
        &[("SECAGG_FAULT", "researcher-before-send-finish:fail")],
    );
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    let failed_session = session_of(&failed);
    assert_no_server_key(&fed, &failed_session);
    let before = connection_counts(&fed);
    // The failed session ran on the kept connections, and none of them was kept again.
    assert!(total(&before, "reused") >= 1, "{before:?}");
    assert!(total(&before, "not_kept") >= 1, "{before:?}");
    assert_eq!(
        total(&before, "idle_dialed") + total(&before, "idle_accepted"),
        0,
        "{before:?}"
    );
    for _ in 0..2 {
        verified_session(&fed);
    }
    let after = connection_counts(&fed);
    assert!(
        total(&after, "reused") > total(&before, "reused"),
        "{after:?}"
    );
    assert_eq!(total(&after, "stale"), 0, "{after:?}");
}

/// A party re-registered with another certificate (and endpoint) while its old agent still runs
/// and still holds the connections kept from the last session: the next session must not run on
/// them (they are pinned to the old certificate), but dial the party at its registered endpoint.
#[test]
fn a_connection_kept_for_a_replaced_certificate_is_never_reused() {
    let (_dir, fed) = federation(3);
    let agents = agents(&fed, &[]);
    verified_session(&fed);
    // Node 3 is dialed by nodes 1 and 2, which now keep a connection to its agent each.
    let n3 = &fed.parties[3];
    let port = support::free_port().to_string();
    secagg(
        n3.home.root(),
        &[
            "init",
            "--role",
            "node",
            "--id",
            &n3.party_id,
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
            "--force",
        ],
    )
    .ok();
    let cert = n3.home.root().join("identity/cert.pem");
    for p in &fed.parties[..3] {
        secagg(
            p.home.root(),
            &[
                "certificate",
                "register",
                "-pk",
                cert.to_str().unwrap(),
                "-pi",
                &n3.party_id,
                "--ip",
                "127.0.0.1",
                "--port",
                &port,
                "--upsert",
            ],
        )
        .ok();
    }
    // The old agent (old certificate, old port) keeps running; the new one serves the new
    // registration.
    let _new = Agent::start(n3.home.root(), &[], &[]);
    let run = session_in_order(&fed, &[]);
    run.ok();
    let session = session_of(&run);
    assert_verified(&fed, &session);
    assert!(
        !agents[2].log_text().contains(&session),
        "the old agent of node 3 saw session {session}:\n{}",
        agents[2].log_text()
    );
    // Node 1 reused its connection to node 2 and dialed the new node 3.
    let counts = connection_counts(&fed);
    assert_eq!(counts[0]["reused"], 1, "{counts:?}");
    assert_eq!(counts[0]["dialed"], 3, "{counts:?}");
}

/// Regression (issue 23, item 9): an endpoint IP that is not on this machine (EADDRNOTAVAIL)
/// got the "another program may use this port" hint. Each cause of a failed listen has its own
/// hint: an address not on this machine, a port in use. (192.0.2.1 is TEST-NET-1: binding to it
/// fails locally, nothing is sent.)
#[test]
fn an_agent_that_cannot_listen_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("node");
    secagg(
        &home,
        &[
            "init",
            "--role",
            "node",
            "--ip",
            "192.0.2.1",
            "--port",
            "14999",
        ],
    )
    .ok();
    secagg(&home, &["serve"])
        .fails_with(3, "cannot listen on 192.0.2.1:14999 for its agent")
        .fails_with(3, "192.0.2.1 is not an address of this machine");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    secagg(
        &home,
        &[
            "identity",
            "set-endpoint",
            "--ip",
            "127.0.0.1",
            "--port",
            &port,
        ],
    )
    .ok();
    let run = secagg(&home, &["serve"]);
    run.fails_with(3, &format!("uses port {port}"));
    assert!(
        !run.stderr.contains("not an address of this machine"),
        "{}",
        run.stderr
    );
}

/// Regression (issue 23, item 10): `serve --allow-researcher` took an id registered nowhere (a
/// typo) without a word, and every session of the researcher meant was then refused. The agent
/// now refuses to start, listing the researchers registered there; a node's id is refused too.
#[test]
fn an_agent_refuses_to_allow_a_researcher_not_registered_there() {
    let (_dir, fed) = federation(2);
    let node = fed.parties[1].home.root();
    let typo = format!("{}x", fed.parties[0].party_id);
    secagg(node, &["serve", "--allow-researcher", &typo])
        .fails_with(
            4,
            &format!("--allow-researcher {typo} names no party registered here"),
        )
        .fails_with(
            4,
            &format!(
                "the researchers registered here: {}",
                fed.parties[0].party_id
            ),
        );
    let other_node = fed.parties[2].party_id.to_string();
    secagg(node, &["serve", "--allow-researcher", &other_node]).fails_with(3, "names a node");
    // `--accept-rosters-from` (issue 23, item 2) is checked the same way, naming its option.
    secagg(node, &["serve", "--accept-rosters-from", &typo]).fails_with(
        4,
        &format!("--accept-rosters-from {typo} names no party registered here"),
    );
    secagg(node, &["serve", "--accept-rosters-from", &other_node]).fails_with(
        3,
        &format!("--accept-rosters-from {other_node} names a node"),
    );
}
