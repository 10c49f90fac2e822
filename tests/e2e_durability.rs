//! End to end: a key reported stored is a key on disk, whatever else uses the same homes.
//!
//! Regression (issue 20, item 1): opening the store checked its file with `std::fs`, and closing
//! that descriptor dropped every POSIX lock the process held on the file, those of a node
//! agent's kept connections included. The next writer process then checkpointed and deleted the
//! WAL, and the agent went on committing keys into the deleted file: `session run` exited 0, the
//! agent logged "key stored and confirmed", and the node's store never had the key. Every check
//! here reads the keys through fresh `secagg` processes after the agents stopped: an agent's own
//! log (or its own connection) proves nothing.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use num_bigint::BigInt;
use secagg_core::demo::Federation;
use support::agents::{
    agents, federation, lom_decrypt, lom_encrypt, lom_session_run, researcher, Agent,
};
use support::{secagg, Run};

mod support;

/// `session run --all` at the researcher; the session id when it succeeded.
fn session_run(fed: &Federation) -> (Run, Option<String>) {
    let run = support::agents::session_run_all(fed);
    let session = (run.code == 0).then(|| run.json()["session_id"].as_str().unwrap().to_owned());
    (run, session)
}

/// Stops every agent with SIGTERM and waits for it to exit 0.
fn stop(agents: Vec<Agent>) {
    for a in &agents {
        a.signal("TERM");
    }
    for mut a in agents {
        assert_eq!(a.wait(Duration::from_secs(30)), Some(0), "{}", a.log_text());
    }
}

/// What a fresh `secagg context show --reveal-key` process reads for `session` in `home`:
/// `(state, key)`, or `None` when the home holds no such context.
fn read_by_a_fresh_process(home: &Path, session: &str) -> Option<(String, BigInt)> {
    let shown = secagg(
        home,
        &[
            "context",
            "show",
            session,
            "--reveal-key",
            "--format",
            "json",
        ],
    );
    if shown.code == 4 {
        return None;
    }
    let j = shown.ok().json();
    Some((
        j["state"].as_str().unwrap().to_owned(),
        j["key"].as_str().unwrap().parse().unwrap(),
    ))
}

/// Every party's key of `session`, read by fresh processes, is stored and confirmed, and the keys
/// cancel: `sk0 + Σ sk_i = 0`.
fn assert_on_disk_everywhere(fed: &Federation, session: &str) {
    let mut sum = BigInt::from(0);
    for p in &fed.parties {
        match read_by_a_fresh_process(p.home.root(), session) {
            Some((state, key)) => {
                assert_eq!(state, "confirmed", "{} for {session}", p.party_id);
                sum += key;
            }
            None => panic!(
                "{} has no key for session {session}, which the researcher reported succeeded",
                p.party_id
            ),
        }
    }
    assert_eq!(sum, BigInt::from(0), "sk0 + Σ sk_i != 0 for {session}");
}

/// The researcher's bundle as the demo federation wrote it.
fn researcher_bundle(fed: &Federation) -> PathBuf {
    fed.dir
        .join("bundles")
        .join(format!("{}.json", fed.parties[0].party_id))
}

/// A command that writes node 1's store (`certificate register --upsert` of the researcher's
/// bundle, unchanged), which must succeed.
fn upsert_at_node1(fed: &Federation) {
    secagg(
        fed.parties[1].home.root(),
        &[
            "certificate",
            "register",
            "--bundle",
            researcher_bundle(fed).to_str().unwrap(),
            "--upsert",
        ],
    )
    .ok();
}

/// The sequence of the report: a session, then `trigger` (something that makes an agent open
/// its store while it holds a connection to it), then a writer at node 1 (`writer`), then
/// another session, which exits 0; after the agents stopped, fresh processes read both sessions'
/// keys at every party.
fn keys_survive(trigger: impl FnOnce(&Federation), writer: impl FnOnce(&Federation)) {
    let (_dir, fed) = federation(3);
    let agents = agents(&fed, &[]);
    let (run, first) = session_run(&fed);
    let first = first.unwrap_or_else(|| panic!("{}", run.stderr));
    trigger(&fed);
    writer(&fed);
    let (run, second) = session_run(&fed);
    let second = second.unwrap_or_else(|| panic!("{}", run.stderr));
    stop(agents);
    assert_on_disk_everywhere(&fed, &first);
    assert_on_disk_everywhere(&fed, &second);
}

fn federation_check(fed: &Federation) {
    secagg(researcher(fed), &["federation", "check", "--all"]).ok();
}

#[test]
fn a_federation_check_then_an_upsert_at_a_node_does_not_lose_its_next_key() {
    keys_survive(federation_check, upsert_at_node1);
}

#[test]
fn a_federation_check_then_a_context_prune_at_a_node_does_not_lose_its_next_key() {
    keys_survive(federation_check, |fed| {
        secagg(fed.parties[1].home.root(), &["context", "prune"]).ok();
    });
}

#[test]
fn a_federation_check_then_a_negotiate_at_a_node_does_not_lose_its_next_key() {
    keys_survive(federation_check, |fed| {
        // A negotiation the others never join: it opens the store, then times out.
        let parties = fed.party_ids().join(",");
        let run = secagg(
            fed.parties[1].home.root(),
            &[
                "negotiate",
                "--session",
                &secagg_core::session::new_session_id(),
                "--parties",
                &parties,
                "--timeout",
                "1s",
            ],
        );
        assert_ne!(run.code, 0, "{}", run.stderr);
    });
}

#[test]
fn eight_concurrent_sessions_then_an_upsert_at_a_node_does_not_lose_its_next_key() {
    keys_survive(
        |fed| {
            let runs: Vec<_> = (0..8)
                .map(|_| {
                    let fed = fed.clone();
                    std::thread::spawn(move || session_run(&fed))
                })
                .collect();
            for r in runs {
                let (run, session) = r.join().unwrap();
                assert!(session.is_some(), "{}", run.stderr);
            }
        },
        upsert_at_node1,
    );
}

#[test]
fn a_stranger_connecting_during_sessions_then_an_upsert_does_not_lose_the_next_key() {
    keys_survive(
        |fed| {
            // The agent reloads its peers from the store for a new connection at most once a
            // second, through a kept connection if one is idle: strangers arrive after a pause,
            // while four sessions hold the agent's connections.
            for _ in 0..4 {
                std::thread::sleep(Duration::from_millis(1100));
                let stop = Arc::new(AtomicBool::new(false));
                let stranger = spawn_stranger(fed, stop.clone(), StrangerMix::TlsOnly);
                let runs: Vec<_> = (0..4)
                    .map(|_| {
                        let fed = fed.clone();
                        std::thread::spawn(move || session_run(&fed))
                    })
                    .collect();
                for r in runs {
                    let (run, session) = r.join().unwrap();
                    assert!(session.is_some(), "{}", run.stderr);
                }
                stop.store(true, Ordering::SeqCst);
                assert!(stranger.join().unwrap() > 0, "the stranger never connected");
            }
        },
        upsert_at_node1,
    );
}

/// What the stranger sends.
#[derive(Clone, Copy)]
enum StrangerMix {
    /// Only full TLS handshakes with a certificate nobody registered.
    TlsOnly,
    /// Those, raw partial ClientHellos and garbage, in turn.
    Everything,
}

/// A stranger that connects to every node agent in turn until `stop`: full TLS handshakes with a
/// self-signed certificate nobody registered (`openssl s_client`), and with
/// [`StrangerMix::Everything`] also a partial ClientHello then a reset, and garbage. Returns the
/// number of connections made.
fn spawn_stranger(
    fed: &Federation,
    stop: Arc<AtomicBool>,
    mix: StrangerMix,
) -> std::thread::JoinHandle<u64> {
    let ports: Vec<u16> = fed.parties[1..]
        .iter()
        .map(|p| secagg_core::identity::load(&p.home).unwrap().endpoint.port)
        .collect();
    let dir = fed.dir.join("stranger");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=*/O=node_stranger",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (the Debian package openssl)");
    assert!(made.success());
    std::thread::spawn(move || {
        let mut made = 0u64;
        while !stop.load(Ordering::SeqCst) {
            for &port in &ports {
                let kind = match mix {
                    StrangerMix::TlsOnly => 0,
                    StrangerMix::Everything => made % 3,
                };
                match kind {
                    0 => {
                        let _ = Command::new("openssl")
                            .args(["s_client", "-tls1_3", "-connect"])
                            .arg(format!("127.0.0.1:{port}"))
                            .arg("-cert")
                            .arg(&cert)
                            .arg("-key")
                            .arg(&key)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                    1 => {
                        // The first bytes of a TLS ClientHello, then a reset.
                        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                            let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);
                            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                        }
                    }
                    _ => {
                        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n\x1b[31mforged\n");
                        }
                    }
                }
                made += 1;
            }
        }
        made
    })
}

/// Runs `op` over and over in its own thread until `stop`; returns the thread, which yields how
/// many times it ran and the failures it saw that were not among `allowed` exit codes.
fn keep_running(
    stop: Arc<AtomicBool>,
    mut op: impl FnMut(u64) -> Run + Send + 'static,
    allowed: &'static [i32],
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let (mut n, mut bad) = (0u64, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            let run = op(n);
            if run.code != 0 && !allowed.contains(&run.code) {
                bad.push(format!("exit {}: {}", run.code, run.stderr));
            }
            n += 1;
        }
        (n, bad)
    })
}

/// The durability soak: agents serve sessions for about 40 s while other processes write and
/// read the same homes (register/upsert, register and delete an unrelated peer, prune, list,
/// show, federation check, roster export and import) and a stranger connects; then, after the
/// agents stopped, every session the researcher reported as succeeded has a confirmed key at
/// every node, read by fresh processes, and the keys sum to 0; and the researcher holds no
/// server key for a session it reported failed.
#[test]
fn durability_soak_sessions_beside_writers_readers_and_strangers() {
    let soak = Duration::from_secs(
        std::env::var("SECAGG_SOAK_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(40),
    );
    let (dir, fed) = federation(3);
    let agents = agents(&fed, &[]);
    // An unrelated party that the nodes register and delete again and again.
    let unrelated = dir.path().join("unrelated");
    secagg(
        &unrelated,
        &["init", "--role", "node", "--ip", "127.0.0.1", "--port", "9"],
    )
    .ok();
    let unrelated_bundle = dir.path().join("unrelated.json");
    support::export_bundle(&unrelated, &unrelated_bundle);
    let unrelated_id = secagg(&unrelated, &["identity", "show", "--format", "json"])
        .ok()
        .json()["party_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut threads = Vec::new();
    // Two researchers' `session run`s at once, recording what each reported.
    let mut drivers = Vec::new();
    for _ in 0..2 {
        let (fed, stop, outcomes, failures) = (
            fed.clone(),
            stop.clone(),
            outcomes.clone(),
            failures.clone(),
        );
        drivers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let session = secagg_core::session::new_session_id();
                let run = secagg(
                    researcher(&fed),
                    &[
                        "session",
                        "run",
                        "--all",
                        "--session",
                        &session,
                        "--format",
                        "json",
                        "--timeout",
                        "30s",
                    ],
                );
                if run.code != 0 {
                    failures.lock().unwrap().push(run.stderr.clone());
                }
                outcomes.lock().unwrap().push((session, run.code == 0));
            }
        }));
    }
    // At every node: writers and readers of its store, in random order.
    for (i, node) in fed.parties[1..].iter().enumerate() {
        let home = node.home.root().to_owned();
        let researcher_bundle = researcher_bundle(&fed);
        let (unrelated_bundle, unrelated_id) = (unrelated_bundle.clone(), unrelated_id.clone());
        // The newest roster the researcher exported during the soak (each export has a new
        // serial, so importing it writes), else the federation's first one.
        let (first_roster, soak_roster) = (
            fed.dir.join("roster.json"),
            dir.path().join("soak-roster.json"),
        );
        threads.push(keep_running(
            stop.clone(),
            move |n| {
                let b = researcher_bundle.to_str().unwrap();
                let u = unrelated_bundle.to_str().unwrap();
                let roster = if soak_roster.exists() {
                    &soak_roster
                } else {
                    &first_roster
                };
                let r = roster.to_str().unwrap();
                let op: &[&str] = match (n + i as u64) % 9 {
                    0 => &["certificate", "register", "--bundle", b, "--upsert"],
                    1 => &["certificate", "register", "--bundle", u, "--upsert"],
                    2 => &["certificate", "delete", &unrelated_id],
                    3 => &["context", "prune"],
                    4 => &["certificate", "list", "--format", "json"],
                    5 => &["context", "list", "--format", "json"],
                    6 => &["identity", "show"],
                    7 => &["roster", "import", r, "--yes"],
                    _ => &["certificate", "show", &unrelated_id],
                };
                secagg(&home, op)
            },
            // Deleting or showing the unrelated peer that is not registered (4), importing a
            // roster already imported (5): refusals, not failures.
            &[4, 5],
        ));
    }
    // At the researcher: checks and roster exports beside the sessions.
    {
        let (home, roster) = (
            researcher(&fed).to_owned(),
            dir.path().join("soak-roster.json"),
        );
        threads.push(keep_running(
            stop.clone(),
            move |n| {
                let r = roster.to_str().unwrap();
                let op: &[&str] = match n % 4 {
                    0 => &["federation", "check", "--all", "--format", "json"],
                    1 => &["roster", "export", "--force", "-o", r],
                    2 => &["certificate", "list"],
                    _ => &["context", "list", "--format", "json"],
                };
                secagg(&home, op)
            },
            &[],
        ));
    }
    let stranger = spawn_stranger(&fed, stop.clone(), StrangerMix::Everything);
    // LOM rounds that survive dropouts (issue 24) beside all of it: shares stored by the agents,
    // announcements and reveals, while the same stores are written and read.
    let lom = lom_dropout_rounds(&fed, stop.clone());

    std::thread::sleep(soak);
    stop.store(true, Ordering::SeqCst);
    for d in drivers {
        d.join().unwrap();
    }
    let mut ops = 0;
    for t in threads {
        let (n, bad) = t.join().unwrap();
        assert!(bad.is_empty(), "unexpected failures: {bad:#?}");
        ops += n;
    }
    let strangers = stranger.join().unwrap();
    let (lom_rounds, lom_bad) = lom.join().unwrap();
    assert!(
        lom_bad.is_empty(),
        "LOM rounds failed under the soak: {lom_bad:#?}"
    );
    assert!(lom_rounds >= 5, "only {lom_rounds} LOM rounds ran");
    eprintln!("measured: soak: {lom_rounds} dropout-tolerant LOM rounds averaged exactly");
    stop_agents_and_check(&fed, agents, &outcomes.lock().unwrap(), ops, strangers);
    let failed = failures.lock().unwrap();
    assert!(
        failed.is_empty(),
        "sessions failed under the soak: {failed:#?}"
    );
}

/// A LOM context with dropout threshold 2 among the three nodes, then rounds until `stop`: every
/// node masks, except one that drops before masking in two rounds of three; the researcher's
/// average must be exact over the nodes that masked. Returns the rounds run and what went wrong.
fn lom_dropout_rounds(
    fed: &Federation,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    let session = secagg_core::session::new_session_id();
    lom_session_run(fed, &session, &["--all", "--dropout-threshold", "2"]).ok();
    let fed = fed.clone();
    std::thread::spawn(move || {
        let (mut round, mut bad) = (0u64, Vec::new());
        let dir = fed.dir.join("soak-lom");
        std::fs::create_dir_all(&dir).unwrap();
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let dropped = (round % 3) as usize + 1; // one node in two rounds of three
            let skip = round % 3 != 0;
            let (mut files, mut sum, mut nodes) = (Vec::new(), 0.0f64, 0);
            for i in 1..fed.parties.len() {
                if skip && i == dropped {
                    continue;
                }
                let x = [i as f64 / 4.0, round as f64 / 1000.0];
                let p = dir.join(format!("p-{round}-{i}.json"));
                std::fs::write(&p, serde_json::to_string(&x).unwrap()).unwrap();
                let out = dir.join(format!("m-{round}-{i}.json"));
                let home = fed.parties[i].home.root();
                let run = lom_encrypt(home, &session, round, (&p, &out), &[], &[]);
                if run.code != 0 {
                    bad.push(format!("round {round}, node {i} masking: {}", run.stderr));
                }
                files.push(out);
                sum += x[0];
                nodes += 1;
            }
            let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            let run = lom_decrypt(&fed, &session, round, &paths, &["--format", "json"], &[]);
            if run.code != 0 {
                bad.push(format!("round {round} unmasking: {}", run.stderr));
                continue;
            }
            let avg = run.json();
            let got = avg["average"][0].as_f64().unwrap();
            if (got - sum / nodes as f64).abs() > 1e-3 || avg["nodes"] != nodes {
                bad.push(format!("round {round}: wrong average {avg}"));
            }
        }
        (round, bad)
    })
}

/// The soak's verdict, from fresh processes once the agents stopped.
fn stop_agents_and_check(
    fed: &Federation,
    agents: Vec<Agent>,
    outcomes: &[(String, bool)],
    ops: u64,
    strangers: u64,
) {
    stop(agents);
    let succeeded: Vec<&str> = outcomes
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(s, _)| s.as_str())
        .collect();
    assert!(
        succeeded.len() >= 10,
        "only {} sessions succeeded",
        succeeded.len()
    );
    for session in &succeeded {
        assert_on_disk_everywhere(fed, session);
    }
    for (session, _) in outcomes.iter().filter(|(_, ok)| !*ok) {
        assert!(
            read_by_a_fresh_process(researcher(fed), session).is_none(),
            "the researcher holds a server key for session {session}, which it reported failed"
        );
    }
    eprintln!(
        "measured: soak: {} sessions ({} succeeded), {ops} concurrent store commands, {strangers} stranger connections; every key read back by fresh processes",
        outcomes.len(),
        succeeded.len()
    );
}
