//! End to end: whole federations on loopback, every party a real `secagg negotiate` process
//! talking mutual TLS over real sockets, and the failures a deployment meets (a party that never
//! starts, one killed mid-session, a swapped certificate, a wrong session id).

use std::path::Path;
use std::time::{Duration, Instant};

use secagg_core::demo::{self, Federation};
use secagg_core::processes::{NegotiateCommand, PartyProcesses};
use secagg_core::ErrorKind;
use support::{error_kind, secagg_command as secagg};

mod support;

/// One party's `secagg negotiate` with `timeout` (e.g. `"30s"`).
fn party(home: &Path, session: &str, parties: &[String], timeout: &str) -> NegotiateCommand {
    support::negotiate(home, session, parties).timeout(support::duration(timeout))
}

/// Every wait of a test session is bounded by this; sessions end far sooner.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn stored_contexts(home: &Path) -> usize {
    let out = secagg()
        .arg("--home")
        .arg(home)
        .args(["context", "list", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["contexts"].as_array().unwrap().len()
}

fn federation(nodes: usize) -> (tempfile::TempDir, Federation) {
    let dir = tempfile::tempdir().unwrap();
    let f = demo::prepare(&dir.path().join("fed"), nodes).unwrap();
    (dir, f)
}

fn session_id() -> String {
    secagg_core::session::new_session_id()
}

#[test]
fn demo_verifies_three_and_ten_nodes() {
    for nodes in ["3", "10"] {
        let out = secagg()
            .args(["demo", "--nodes", nodes, "--format", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "demo {nodes}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["engine"], "native");
        assert_eq!(j["verified"], true);
        assert_eq!(
            j["parties"].as_u64().unwrap(),
            nodes.parse::<u64>().unwrap() + 1
        );
        assert!(j["elapsed_ms"].as_f64().unwrap() > 0.0);
        assert_eq!(
            j["reports"].as_array().unwrap().len(),
            j["parties"].as_u64().unwrap() as usize
        );
        assert!(j["server_key_bits"].as_u64().unwrap() > 2000);
        assert!(j.get("directory").is_none(), "not kept without --keep");
    }
    let bad = secagg().args(["demo", "--nodes", "1"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Issue 23, item 14: `demo --keep` printed only the parent directory, and `--home` (listed in
/// its help) was silently ignored.
#[test]
fn demo_keep_prints_a_ready_command_per_home_and_says_home_is_not_used() {
    let out = secagg()
        .args(["demo", "--nodes", "3", "--keep"])
        .env("SECAGG_HOME", "/nonexistent/home")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--home / SECAGG_HOME is not used"),
        "{stderr}"
    );
    let homes: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once(": secagg --home ").map(|(_, rest)| rest))
        .map(|rest| rest.trim_end_matches(" context list"))
        .collect();
    assert_eq!(homes.len(), 4, "{stderr}");
    for home in &homes {
        let listed = secagg()
            .args(["--home", home, "context", "list", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            listed.status.success(),
            "{home}: {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        assert_eq!(
            v.as_array()
                .map(|a| a.len())
                .or_else(|| v["contexts"].as_array().map(|a| a.len())),
            Some(1),
            "{v}"
        );
    }
    let kept = std::path::Path::new(homes[0])
        .parent()
        .and_then(|p| p.parent())
        .unwrap();
    std::fs::remove_dir_all(kept).unwrap();
}

#[test]
fn five_negotiate_processes_agree_and_store_only_fingerprints_in_output() {
    let (_dir, fed) = federation(4);
    let session = session_id();
    let parties = fed.party_ids();
    let cmds: Vec<_> = fed
        .parties
        .iter()
        .map(|p| party(p.home.root(), &session, &parties, "30s"))
        .collect();
    let exits = support::run_parties(&cmds, RUN_LIMIT);
    for (p, e) in fed.parties.iter().zip(&exits) {
        assert_eq!(e.code(), Some(0), "{}: {}", p.party_id, e.stderr);
        let j: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
        assert_eq!(j["session_id"], session.as_str());
        assert!(j["key_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:"));
    }
    let v = demo::verify(&fed, &session.parse().unwrap()).unwrap();
    assert!(v.verified, "sk0 + Σ sk_i != 0");
    // The key is never printed by negotiate, only by `context show --reveal-key`.
    let researcher = fed.parties[0].home.root();
    let show = secagg()
        .arg("--home")
        .arg(researcher)
        .args(["context", "show", &session, "--format", "json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert!(j.get("key").is_none());
    let key = support::revealed_key(researcher, &session);
    assert!(key.starts_with('-'), "the server key is minus a sum: {key}");
    for e in &exits {
        assert!(
            !e.stdout.contains(&key[1..40]) && !e.stderr.contains(&key[1..40]),
            "key leaked in output"
        );
    }
    // Running the same session again is refused before any traffic.
    let again = secagg()
        .arg("--home")
        .arg(researcher)
        .args([
            "negotiate",
            "--session",
            &session,
            "--parties",
            &parties.join(","),
        ])
        .output()
        .unwrap();
    assert_eq!(
        again.status.code(),
        Some(ErrorKind::Conflict.exit_code()),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[test]
fn a_party_that_never_starts_is_named_by_everyone_within_the_deadline() {
    let (_dir, fed) = federation(3);
    let session = session_id();
    let parties = fed.party_ids();
    let absent = &fed.parties[3];
    let cmds: Vec<_> = fed.parties[..3]
        .iter()
        .map(|p| party(p.home.root(), &session, &parties, "3s"))
        .collect();
    let exits = support::run_parties(&cmds, RUN_LIMIT);
    for (p, e) in fed.parties.iter().zip(&exits) {
        assert_eq!(
            error_kind(e),
            Some(ErrorKind::Timeout),
            "{}: expected timeout, got {:?}: {}",
            p.party_id,
            e.code(),
            e.stderr
        );
        assert_eq!(e.code(), Some(ErrorKind::Timeout.exit_code()));
        assert!(
            e.stderr.contains(&absent.party_id),
            "{} does not name the absent party: {}",
            p.party_id,
            e.stderr
        );
        assert!(
            e.after < Duration::from_secs(5),
            "{} took {:?}",
            p.party_id,
            e.after
        );
        assert_eq!(
            stored_contexts(p.home.root()),
            0,
            "{} stored a key",
            p.party_id
        );
    }
}

#[test]
fn a_party_killed_mid_session_makes_the_others_fail_fast() {
    let (_dir, fed) = federation(4);
    let session = session_id();
    let parties = fed.party_ids();
    let started = Instant::now();
    // Everyone but the last node starts: they connect to each other and wait for it. Then node 1,
    // already connected to the researcher and to node 2 and 3, is killed.
    let mut others = PartyProcesses::new();
    let mut victim = None;
    for (i, p) in fed.parties[..4].iter().enumerate() {
        let cmd = party(p.home.root(), &session, &parties, "20s").command();
        if i == 1 {
            let mut cmd = cmd;
            victim = Some(cmd.spawn().unwrap());
        } else {
            others.spawn(&p.party_id, cmd).unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    let mut victim = victim.unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = started.elapsed();
    let exits = others.wait(RUN_LIMIT, |_| {});
    let victim_id = &fed.parties[1].party_id;
    for (p, e) in [&fed.parties[0], &fed.parties[2], &fed.parties[3]]
        .iter()
        .zip(&exits)
    {
        assert_eq!(
            error_kind(e),
            Some(ErrorKind::PeerFailure),
            "{}: expected peer failure, got {:?}: {}",
            p.party_id,
            e.code(),
            e.stderr
        );
        assert_eq!(e.code(), Some(ErrorKind::PeerFailure.exit_code()));
        assert!(
            e.stderr.contains(victim_id.as_str()),
            "{} does not name the killed party: {}",
            p.party_id,
            e.stderr
        );
        assert!(
            e.after < killed_at + Duration::from_secs(2),
            "{} noticed only after {:?}",
            p.party_id,
            e.after
        );
        assert_eq!(stored_contexts(p.home.root()), 0);
    }
}

#[test]
fn a_party_presenting_another_certificate_is_refused_by_name() {
    let (_dir, fed) = federation(3);
    // node 2 renews its certificate after the others registered the old one.
    let impostor = &fed.parties[2];
    let out = secagg()
        .arg("--home")
        .arg(impostor.home.root())
        .args(["certificate", "generate", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let session = session_id();
    let parties = fed.party_ids();
    let cmds: Vec<_> = fed
        .parties
        .iter()
        .map(|p| party(p.home.root(), &session, &parties, "5s"))
        .collect();
    let exits = support::run_parties(&cmds, RUN_LIMIT);
    let mut named = 0;
    for (p, e) in fed.parties.iter().zip(&exits) {
        assert!(
            !e.success(),
            "{} succeeded with an impostor in the session",
            p.party_id
        );
        assert!(e.after < Duration::from_secs(7));
        assert_eq!(stored_contexts(p.home.root()), 0);
        if p.party_id != impostor.party_id
            && error_kind(e) == Some(ErrorKind::Authentication)
            && e.error()
                .is_some_and(|r| r.message.contains(&impostor.party_id))
        {
            named += 1;
        }
    }
    assert!(
        named >= 1,
        "nobody reported an authentication failure naming {}: {:?}",
        impostor.party_id,
        exits.iter().map(|e| &e.stderr).collect::<Vec<_>>()
    );
}

#[test]
fn a_party_with_another_session_id_is_refused() {
    let (_dir, fed) = federation(2);
    let session = session_id();
    let parties = fed.party_ids();
    let cmds: Vec<_> = fed
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            party(
                p.home.root(),
                &if i == 2 {
                    session_id()
                } else {
                    session.clone()
                },
                &parties,
                "5s",
            )
        })
        .collect();
    let exits = support::run_parties(&cmds, RUN_LIMIT);
    for (p, e) in fed.parties.iter().zip(&exits) {
        assert!(
            !e.success(),
            "{} succeeded across different sessions",
            p.party_id
        );
        assert!(e.after < Duration::from_secs(7));
        assert_eq!(stored_contexts(p.home.root()), 0);
    }
    assert!(
        exits.iter().any(|e| e.stderr.contains("session")),
        "no error mentions the session: {:?}",
        exits.iter().map(|e| &e.stderr).collect::<Vec<_>>()
    );
}

#[test]
fn negotiate_rejects_bad_sessions_before_any_traffic() {
    let (_dir, fed) = federation(2);
    let ids = fed.party_ids();
    let home = fed.parties[1].home.root();
    let run = |session: &str, parties: &str| {
        secagg()
            .arg("--home")
            .arg(home)
            .args([
                "negotiate",
                "--session",
                session,
                "--parties",
                parties,
                "--timeout",
                "2s",
            ])
            .output()
            .unwrap()
    };
    let s = session_id();
    let cases: Vec<(String, String, i32, &str)> = vec![
        ("not-a-uuid".into(), ids.join(","), 3, "is not a uuid"),
        (s.clone(), ids[..2].join(","), 3, "at least 3 parties"),
        (
            s.clone(),
            format!("{},{},{}", ids[1], ids[0], ids[2]),
            3,
            "first party must be the researcher",
        ),
        (
            s.clone(),
            format!("{},{},{},{}", ids[0], ids[1], ids[2], ids[1]),
            3,
            "listed twice",
        ),
        (
            s.clone(),
            format!("{},{},node_unknown", ids[0], ids[1]),
            4,
            "`node_unknown` is not registered",
        ),
        (
            s.clone(),
            format!("{},{},node_unknown", ids[0], ids[2]),
            3,
            "is not in the party list",
        ),
    ];
    for (session, parties, code, needle) in cases {
        let t = Instant::now();
        let out = run(&session, &parties);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{parties}: {err}");
        assert!(err.contains(needle), "{parties}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "validation must not wait for the network"
        );
    }
}

/// Regression (issue 8, item 3): `--key-bits 1` negotiated keys −1, 0, 1, 0, and
/// `--key-bits 4294967295` allocated 512 MiB (and could abort with a backtrace) before any check.
#[test]
fn key_lengths_outside_the_secure_range_are_refused_before_anything_runs() {
    let (_dir, fed) = federation(2);
    let ids = fed.party_ids().join(",");
    let home = fed.parties[1].home.root();
    let session = session_id();
    for (bits, needle) in [
        (
            "1",
            "a key length of 1 bits is too short: at least 256 bits",
        ),
        ("255", "too short"),
        ("2050", "does not fit the 2050-bit prime"),
        ("4294967295", "does not fit the 2050-bit prime"),
    ] {
        let t = Instant::now();
        let out = secagg()
            .arg("--home")
            .arg(home)
            .args(["negotiate", "--session", &session, "--parties", &ids])
            .args(["--timeout", "5s", "--key-bits", bits])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(ErrorKind::InvalidInput.exit_code()),
            "--key-bits {bits}: {err}"
        );
        assert!(err.contains(needle), "--key-bits {bits}: {err}");
        assert!(err.contains("hint:") && err.contains("2040"), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "--key-bits {bits}");
    }
    assert_eq!(stored_contexts(home), 0);
}

/// Issue 23, item 8: a node given the nodes in another order made the others report "has a
/// different certificate registered for this party", and admins re-registered certificates.
/// Now the parties say that the orders differ, and show both lists.
#[test]
fn a_party_list_in_another_order_is_named_as_a_possible_cause() {
    let (_dir, fed) = federation(2);
    let session = session_id();
    let ids = fed.party_ids();
    let swapped = vec![ids[0].clone(), ids[2].clone(), ids[1].clone()];
    let cmds: Vec<_> = fed
        .parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let list = if i == 2 { &swapped } else { &ids };
            party(p.home.root(), &session, list, "10s")
        })
        .collect();
    let exits = support::run_parties(&cmds, RUN_LIMIT);
    assert!(
        exits.iter().all(|e| e.code() != Some(0)),
        "no party may succeed"
    );
    // Whichever check sees it first (a node dialed by a party it should dial itself, with its
    // list; or the session binding exchanged with the researcher), every party is told that the
    // party lists (their order) differ; none to register certificates again.
    let all: Vec<&str> = exits.iter().map(|e| e.stderr.as_str()).collect();
    let names_the_order = |e: &&str| {
        e.contains("were given the parties in different orders") || e.contains("party ids, order")
    };
    assert!(
        all.iter().all(names_the_order)
            && !all.iter().any(|e| e.contains("registered for this party")),
        "{}",
        all.join("\n---\n")
    );
    // Nothing stored anywhere: no party has a context for the session.
    for p in &fed.parties {
        let shown = secagg()
            .args([
                "--home",
                p.home.root().to_str().unwrap(),
                "context",
                "show",
                &session,
            ])
            .output()
            .unwrap();
        assert!(!shown.status.success(), "{} stored a key", p.party_id);
    }
}
