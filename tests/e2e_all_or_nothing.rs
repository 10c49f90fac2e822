//! The all-or-nothing invariant of key negotiation, proved by fault injection rather than luck:
//! **a stored server key implies that every node of the session durably stored its key**, and
//! then `sk0 + Σ sk_i = 0`.
//!
//! Every party is a real `secagg negotiate` process with a real store. The test build of `secagg`
//! has the test-only `fault-injection` feature (see `secagg-core/src/fault.rs`): `SECAGG_FAULT`
//! set on one party makes it SIGKILL itself (`crash`) or fail (`fail`; at a store step, the store
//! write fails) at a chosen protocol step. The sweep covers every party × every step of its role ×
//! both actions, for 3 and 5 parties; the kill loop SIGKILLs a random party at a random moment.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secagg_core::contexts::KeyState;
use secagg_core::demo::{self, Federation};
use secagg_core::engine::SecretKey;
use secagg_core::fault::{Step, FAULT_ENV};
use secagg_core::session;
use secagg_core::ErrorKind;
use support::secagg_command as secagg;
use support::stored;

mod support;

/// Every wait of a session is bounded by this; runs are expected to end far sooner.
const SESSION_TIMEOUT: &str = "20s";

/// The kill loop's session deadline (see there).
const KILL_LOOP_TIMEOUT: &str = "1s";

fn federation(nodes: usize) -> (tempfile::TempDir, Federation) {
    let dir = tempfile::tempdir().unwrap();
    let f = demo::prepare(&dir.path().join("fed"), nodes).unwrap();
    (dir, f)
}

/// One party's `secagg negotiate` with human output (stdout dropped, stderr kept): the
/// assertions read what a failing researcher says about a final key.
fn negotiate_cmd(home: &Path, session: &str, parties: &str, timeout: &str) -> Command {
    let ids: Vec<String> = parties.split(',').map(str::to_owned).collect();
    let mut c = support::negotiate(home, session, &ids)
        .timeout(support::duration(timeout))
        .json(false)
        .command();
    c.stdout(Stdio::null());
    c
}

/// How one party's process ended.
#[derive(Debug)]
struct Ended {
    /// `None` when killed by a signal.
    code: Option<i32>,
    stderr: String,
}

/// Waits for `child`, killing it (and failing the test) if it outlives `limit`.
fn wait_bounded(mut child: Child, limit: Instant, what: &str) -> Ended {
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Ended {
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
        }
        if Instant::now() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end in time: a party hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asserts the invariant and its corollaries for one run; `case` names the run in failures.
fn assert_all_or_nothing(fed: &Federation, session: &str, ends: &[Ended], case: &str) {
    let keys = stored(fed, session);
    let describe = || {
        ends.iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, (e, k))| {
                format!(
                    "party {i}: exit {:?}, stored {:?}; stderr: {}",
                    e.code,
                    k.as_ref().map(|c| c.state),
                    e.stderr.trim()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The researcher's exit status tells the truth about its server key.
    if ends[0].code == Some(0) {
        assert!(
            keys[0].is_some(),
            "{case}: researcher exited 0 without a server key\n{}",
            describe()
        );
    } else if ends[0].code.is_some() && keys[0].is_some() {
        // Only once the key is final (confirmations going out) may a failing researcher keep it,
        // and then it says so.
        assert!(
            ends[0].stderr.contains("is stored and final"),
            "{case}: researcher failed but kept a server key\n{}",
            describe()
        );
    }
    // A node that exited 0 holds a confirmed key; a confirmed node key means sk0 is stored.
    for (i, (e, k)) in ends.iter().zip(&keys).enumerate().skip(1) {
        if e.code == Some(0) {
            assert_eq!(
                k.as_ref().map(|c| c.state),
                Some(KeyState::Confirmed),
                "{case}: node {i} exited 0 without a confirmed key\n{}",
                describe()
            );
        }
        if k.as_ref().is_some_and(|c| c.state == KeyState::Confirmed) {
            assert!(
                keys[0].is_some(),
                "{case}: node {i} confirmed without a server key\n{}",
                describe()
            );
        }
    }
    // The invariant.
    if keys[0].is_some() {
        let mut sum = SecretKey::from_decimal("0").unwrap().to_bigint();
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_ref().unwrap_or_else(|| {
                panic!(
                    "{case}: the server key is stored but node {i} holds no key\n{}",
                    describe()
                )
            });
            sum += SecretKey::from_decimal(&k.key_decimal).unwrap().to_bigint();
        }
        assert_eq!(
            sum,
            SecretKey::from_decimal("0").unwrap().to_bigint(),
            "{case}: sk0 + Σ sk_i != 0"
        );
    }
}

/// Runs one session in which party `faulty` gets `fault` (`STEP:ACTION`), checks the invariant,
/// and returns how the parties ended.
fn run_with_fault(fed: &Federation, faulty: usize, fault: &str) -> Vec<Ended> {
    let session = session::new_session_id();
    let parties = fed.party_ids().join(",");
    let children: Vec<Child> = fed
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = negotiate_cmd(p.home.root(), &session, &parties, SESSION_TIMEOUT);
            if i == faulty {
                c.env(FAULT_ENV, fault);
            }
            c.spawn().unwrap()
        })
        .collect();
    let limit = Instant::now() + Duration::from_secs(40);
    let ends: Vec<Ended> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            wait_bounded(
                c,
                limit,
                &format!("party {i} with {fault} on party {faulty}"),
            )
        })
        .collect();
    assert_all_or_nothing(fed, &session, &ends, &format!("{fault} on party {faulty}"));
    ends
}

fn sweep(nodes: usize) {
    let (_dir, fed) = federation(nodes);
    let n = nodes + 1;
    let mut runs = 0;
    let mut sk0_stored = 0;
    for faulty in 0..n {
        for step in Step::ALL {
            let applies = if faulty == 0 {
                step.is_researcher_step()
            } else {
                step.is_node_step()
            };
            if !applies {
                continue;
            }
            for action in ["crash", "fail"] {
                let fault = format!("{}:{action}", step.name());
                let ends = run_with_fault(&fed, faulty, &fault);
                runs += 1;
                // The faulty party itself never reports success.
                assert_ne!(
                    ends[faulty].code,
                    Some(0),
                    "{fault} on party {faulty} exited 0"
                );
                if action == "crash" {
                    assert_eq!(ends[faulty].code, None, "{fault}: not killed by the signal");
                }
                if ends[0].code == Some(0) {
                    sk0_stored += 1;
                }
            }
        }
    }
    // Both sides of the invariant were exercised: faults late enough leave a stored server key.
    assert!(
        sk0_stored > 0 && sk0_stored < runs,
        "{sk0_stored} of {runs}"
    );
    let expected = 2 * (6 + nodes * 10);
    assert_eq!(runs, expected);
}

#[test]
fn fault_sweep_every_party_every_step_three_parties() {
    sweep(2);
}

#[test]
fn fault_sweep_every_party_every_step_five_parties() {
    sweep(4);
}

/// Regression: a node whose store is write-locked by another process acknowledged the finish
/// before storing, so the researcher exited 0 with `sk0` while that node, 30 s later, had no key.
#[test]
fn a_node_whose_store_is_locked_leaves_no_server_key_and_ends_within_the_timeout() {
    let (_dir, fed) = federation(2);
    let locked = &fed.parties[2];
    // Another process (here: this test) holds the write lock of node 2's store throughout.
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let store_path = locked.home.store_path();
    let holder = std::thread::spawn(move || {
        let store = rusqlite::Connection::open(&store_path).unwrap();
        store.execute_batch("BEGIN IMMEDIATE").unwrap();
        held_tx.send(()).unwrap();
        let _ = hold_rx.recv_timeout(Duration::from_secs(60));
        store.execute_batch("ROLLBACK").unwrap();
    });
    held_rx.recv().unwrap();
    let session = session::new_session_id();
    let parties = fed.party_ids().join(",");
    let started = Instant::now();
    let children: Vec<Child> = fed
        .parties
        .iter()
        .map(|p| {
            negotiate_cmd(p.home.root(), &session, &parties, "4s")
                .spawn()
                .unwrap()
        })
        .collect();
    let limit = Instant::now() + Duration::from_secs(20);
    let ends: Vec<Ended> = children
        .into_iter()
        .map(|c| wait_bounded(c, limit, "locked-store run"))
        .collect();
    let elapsed = started.elapsed();
    hold_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_all_or_nothing(&fed, &session, &ends, "locked store");
    for (i, e) in ends.iter().enumerate() {
        assert_ne!(e.code, Some(0), "party {i} succeeded: {}", e.stderr);
    }
    assert!(stored(&fed, &session)[0].is_none(), "no server key");
    assert_eq!(
        ends[2].code,
        Some(ErrorKind::Storage.exit_code()),
        "{}",
        ends[2].stderr
    );
    assert!(
        ends[2].stderr.contains("while storing the key of session"),
        "{}",
        ends[2].stderr
    );
    // --timeout bounds every wait, the store's lock included (it used to take the 30 s busy timeout).
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

/// A small, seedable xorshift generator (the seed is printed, so a failure can be replayed with
/// `KILL_LOOP_SEED`).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// SIGKILLs a random party at a random moment of a 3-party session, 200 times, and checks the
/// invariant after each run. The moments span a whole session (measured first), so every phase
/// is hit; the assertion is the same as the sweep's. A party killed before it connected leaves the
/// others waiting for the deadline, so the runs go in [`KILL_LOOP_LANES`] concurrent lanes, each
/// with its own federation (the waits cost no CPU).
#[test]
fn kill_loop_random_party_random_moment_200_runs() {
    let runs: usize = std::env::var("KILL_LOOP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed = std::env::var("KILL_LOOP_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill loop: {runs} runs in {KILL_LOOP_LANES} lanes, KILL_LOOP_SEED={seed}");
    let span_us = undisturbed_span_us();
    eprintln!("kill loop: an undisturbed session's first party exits after {span_us} µs");
    let lanes: Vec<_> = (0..KILL_LOOP_LANES)
        .map(|lane| {
            let lane_runs = runs / KILL_LOOP_LANES + usize::from(lane < runs % KILL_LOOP_LANES);
            let lane_seed = seed.wrapping_add(lane as u64).max(1);
            std::thread::spawn(move || kill_lane(lane, lane_seed, lane_runs, span_us))
        })
        .collect();
    let (mut hits, mut sk0_kept, mut done) = (0, 0, 0);
    for l in lanes {
        let (h, k, n) = l
            .join()
            .expect("a kill-loop lane failed (see its panic above)");
        hits += h;
        sk0_kept += k;
        done += n;
    }
    eprintln!(
        "kill loop: {hits} of {done} kills hit a running party; the server key was stored in {sk0_kept} runs"
    );
    assert_eq!(done, runs);
    assert!(hits > runs / 2, "kills mostly missed: {hits}");
    // Both outcomes happened: kills before and after the server key was stored.
    assert!(sk0_kept > 0 && sk0_kept < runs, "{sk0_kept} of {runs}");
}

/// Concurrent lanes of the kill loop.
const KILL_LOOP_LANES: usize = 4;

/// How long an undisturbed session takes, from spawning to the first exit (the fastest of three),
/// so that the kill moments fall while every party is still running.
fn undisturbed_span_us() -> u64 {
    // Measured under load like the loop's: sessions in half as many federations as lanes,
    // started at once (the lanes' sessions overlap, but are not started together: all lanes at
    // once measured 75 ms, and most kills then missed). Regression: measured alone, the span
    // was the 22 ms of an idle machine, shorter than the loop's sessions, so in a CI run no kill
    // came after the server key was stored and the loop's coverage check failed.
    let feds: Vec<_> = (0..KILL_LOOP_LANES / 2).map(|_| federation(2)).collect();
    let mut spans: Vec<u64> = (0..3)
        .flat_map(|_| {
            let started = Instant::now();
            let mut sessions: Vec<Vec<Child>> = feds
                .iter()
                .map(|(_dir, fed)| {
                    let session = session::new_session_id();
                    let parties = fed.party_ids().join(",");
                    fed.parties
                        .iter()
                        .map(|p| {
                            negotiate_cmd(p.home.root(), &session, &parties, SESSION_TIMEOUT)
                                .spawn()
                                .unwrap()
                        })
                        .collect()
                })
                .collect();
            let mut first_exit = vec![None; sessions.len()];
            loop {
                let mut running_total = 0;
                for (k, children) in sessions.iter_mut().enumerate() {
                    let running = children
                        .iter_mut()
                        .map(|c| c.try_wait().unwrap().is_none())
                        .filter(|&running| running)
                        .count();
                    if running < children.len() && first_exit[k].is_none() {
                        first_exit[k] = Some(started.elapsed().as_micros() as u64);
                    }
                    running_total += running;
                }
                if running_total == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            for children in sessions {
                for c in children {
                    assert!(c.wait_with_output().unwrap().status.success());
                }
            }
            first_exit
                .into_iter()
                .map(Option::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    spans.sort_unstable();
    spans[spans.len() / 2].max(1000)
}

/// One lane of the kill loop: `runs` sessions of its own 3-party federation. Returns (kills that
/// hit a running party, runs that ended with a stored server key, runs).
fn kill_lane(lane: usize, seed: u64, runs: usize, span_us: u64) -> (usize, usize, usize) {
    let mut rng = XorShift(seed);
    let (_dir, fed) = federation(2);
    let parties = fed.party_ids().join(",");
    let (mut killed_before_exit, mut sk0_kept) = (0, 0);
    // The kill moments' range follows the sessions' actual length in this lane: shrunk after a
    // kill that came too late (the victim had exited), grown slowly after a hit, so that about
    // four kills in five land in a running session whatever the load. Regression: a span
    // measured once, while the other tests of this binary still loaded the machine, was twice
    // the loop's sessions, and most kills missed (73 of 200 in a CI run).
    let mut span = span_us as f64;
    for run in 0..runs {
        let session = session::new_session_id();
        // A party killed before it connected leaves the others waiting for the deadline: keep it
        // short (an undisturbed session takes a few tens of milliseconds).
        let mut children: Vec<Child> = fed
            .parties
            .iter()
            .map(|p| {
                negotiate_cmd(p.home.root(), &session, &parties, KILL_LOOP_TIMEOUT)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let victim = rng.below(children.len() as u64) as usize;
        let at = Duration::from_micros(rng.below(span.max(1.0) as u64));
        std::thread::sleep(at);
        if children[victim].try_wait().unwrap().is_none() {
            killed_before_exit += 1;
            span = (span * 1.02).min(span_us as f64 * 2.0);
        } else {
            span = (span * 0.9).max(2_000.0);
        }
        let _ = children[victim].kill(); // SIGKILL
        let limit = Instant::now() + Duration::from_secs(40);
        let ends: Vec<Ended> = children
            .into_iter()
            .enumerate()
            .map(|(i, c)| wait_bounded(c, limit, &format!("lane {lane} run {run}, party {i}")))
            .collect();
        let case =
            format!("lane {lane} run {run}: party {victim} killed after {at:?} (lane seed {seed})");
        assert_all_or_nothing(&fed, &session, &ends, &case);
        if stored(&fed, &session)[0].is_some() {
            sk0_kept += 1;
        }
    }
    (killed_before_exit, sk0_kept, runs)
}

fn cli(home: &Path, args: &[&str]) -> std::process::Output {
    secagg()
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

/// The states as a user meets them: a researcher whose store fails after every Ack leaves the
/// nodes with unconfirmed keys, which `context list/show` flag, `context confirm` keeps and
/// `context prune` deletes (never a confirmed key).
#[test]
fn unconfirmed_keys_are_flagged_confirmable_and_prunable() {
    let (_dir, fed) = federation(2);
    // One good session first: its keys are confirmed everywhere and must survive every prune.
    let good = run_with_fault(&fed, 0, "none:none");
    assert!(good.iter().all(|e| e.code == Some(0)), "{good:?}");
    let session = session::new_session_id();
    let parties = fed.party_ids().join(",");
    let children: Vec<Child> = fed
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = negotiate_cmd(p.home.root(), &session, &parties, SESSION_TIMEOUT);
            if i == 0 {
                c.env(FAULT_ENV, "researcher-before-store:fail");
            }
            c.spawn().unwrap()
        })
        .collect();
    let limit = Instant::now() + Duration::from_secs(40);
    let ends: Vec<Ended> = children
        .into_iter()
        .map(|c| wait_bounded(c, limit, "unconfirmed run"))
        .collect();
    assert_all_or_nothing(&fed, &session, &ends, "researcher store failure");
    assert_eq!(
        ends[0].code,
        Some(ErrorKind::Storage.exit_code()),
        "{}",
        ends[0].stderr
    );
    for e in &ends[1..] {
        assert_ne!(e.code, Some(0));
        assert!(
            e.stderr.contains("is stored here but unconfirmed"),
            "{}",
            e.stderr
        );
        assert!(e.stderr.contains("secagg context confirm"), "{}", e.stderr);
    }
    let node1 = fed.parties[1].home.root();
    let node2 = fed.parties[2].home.root();

    // list: JSON state and expiry; text shows it and warns.
    let out = cli(node1, &["context", "list", "--format", "json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = j["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["session_id"] == session.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["state"], "unconfirmed");
    assert_eq!(row["expired"], false);
    assert!(row["expires_at"].as_str().is_some());
    assert!(row.get("key").is_none());
    let confirmed_rows = j["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "confirmed")
        .count();
    assert_eq!(confirmed_rows, 1);
    let out = cli(node1, &["context", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("unconfirmed (expires"), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 key is unconfirmed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // show, even with the key revealed, says it is unconfirmed.
    let out = cli(node1, &["context", "show", &session, "--reveal-key"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is unconfirmed"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("state"));

    // confirm: node 1 keeps its key (its operator checked with the researcher).
    let out = cli(node1, &["context", "confirm", &session]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stored(&fed, &session)[1].as_ref().unwrap().state,
        KeyState::Confirmed
    );
    let again = cli(node1, &["context", "confirm", &session]);
    assert_eq!(again.status.code(), Some(ErrorKind::Conflict.exit_code()));

    // prune: the fresh unconfirmed key of node 2 is not expired yet, so the default keeps it ...
    let out = cli(node2, &["context", "prune", "--format", "json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["contexts"].as_array().unwrap().len(), 0);
    assert!(stored(&fed, &session)[2].is_some());
    // ... an explicit age of 0 days keeps it too while it is younger than the longest session
    // deadline (regression: a prune during a session deleted the key a node had just
    // acknowledged, and the researcher stored a server key that no longer cancelled) ...
    let prune_now = || {
        cli(
            node2,
            &[
                "context",
                "prune",
                "--older-than-days",
                "0",
                "--format",
                "json",
            ],
        )
    };
    let out = prune_now();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["contexts"].as_array().unwrap().len(), 0, "{j}");
    assert!(stored(&fed, &session)[2].is_some());
    // ... and deletes it once it is older than that (aged here as eleven minutes passing would),
    // never the confirmed key of the good session.
    let db = rusqlite::Connection::open(node2.join("store.sqlite")).unwrap();
    db.execute(
        "UPDATE contexts SET created_at = created_at - 660 WHERE session_id = ?1",
        [&session],
    )
    .unwrap();
    drop(db);
    let out = prune_now();
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pruned = j["contexts"].as_array().unwrap();
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0]["session_id"], session.as_str());
    assert!(stored(&fed, &session)[2].is_none());
    let list = cli(node2, &["context", "list", "--format", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(j["contexts"].as_array().unwrap().len(), 1);
    assert_eq!(j["contexts"][0]["state"], "confirmed");
}
