//! End to end through real MP-SPDZ: whole federations on loopback, every party a real
//! `secagg negotiate --engine mp-spdz` process that prepares and supervises its own
//! `shamir-party.x`. Needs an MP-SPDZ v0.3.4 build for 2050-bit primes (`MPSPDZ_ROOT`); each test
//! prints `skipped: …` and passes when it is not available.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use secagg_core::demo::{self, Federation};
use secagg_core::ErrorKind;
use support::{processes_mentioning, secagg_command as secagg, secret_leftovers, Exit};

mod support;

fn mpspdz_root() -> Option<PathBuf> {
    support::real_mpspdz_root()
}

fn spawn_party(home: &Path, root: &Path, session: &str, parties: &str, timeout: &str) -> Child {
    let engine: [&OsStr; 4] = [
        "--engine".as_ref(),
        "mp-spdz".as_ref(),
        "--mpspdz-root".as_ref(),
        root.as_os_str(),
    ];
    support::spawn_negotiate(home, session, parties, timeout, &engine)
}

fn run_session(fed: &Federation, root: &Path, timeout: &str) -> (String, Vec<Exit>, Duration) {
    let session = secagg_core::session::new_session_id();
    let parties = fed.party_ids().join(",");
    let started = Instant::now();
    let children: Vec<_> = fed
        .parties
        .iter()
        .map(|p| spawn_party(p.home.root(), root, &session, &parties, timeout))
        .collect();
    let exits = support::wait_all(children, started);
    (session, exits, started.elapsed())
}

#[test]
fn three_and_five_parties_negotiate_through_mp_spdz() {
    let Some(root) = mpspdz_root() else { return };
    for nodes in [2usize, 4] {
        let dir = tempfile::tempdir().unwrap();
        let fed = demo::prepare(&dir.path().join("fed"), nodes).unwrap();
        // First session compiles into each home's cache; the second one measures a warm run.
        for round in 0..2 {
            let (session, exits, elapsed) = run_session(&fed, &root, "60s");
            for (p, e) in fed.parties.iter().zip(&exits) {
                assert_eq!(e.code, Some(0), "{}: {}", p.party_id, e.stderr);
                let j: serde_json::Value = serde_json::from_str(&e.stdout).unwrap();
                assert_eq!(j["engine"], "mp-spdz");
            }
            let v = demo::verify(&fed, &session.parse().unwrap()).unwrap();
            assert!(v.verified, "sk0 + Σ sk_i != 0 for {} parties", nodes + 1);
            eprintln!(
                "{} parties, {} cache: {:.0} ms from process start to last exit",
                nodes + 1,
                if round == 0 { "cold" } else { "warm" },
                elapsed.as_secs_f64() * 1e3
            );
            let left = secret_leftovers(&fed);
            assert!(left.is_empty(), "secret files left: {left:?}");
            for p in &fed.parties {
                assert!(!p.home.root().join("runs").join(&session).exists());
                let cache = p.home.root().join("mpspdz-cache");
                assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
            }
            let orphans = processes_mentioning(&dir.path().display().to_string());
            assert!(orphans.is_empty(), "processes left: {orphans:?}");
        }
    }
}

#[test]
fn relative_homes_negotiate_through_mp_spdz() {
    // Regression: with a relative --home (or the default ./.secagg) every party exited 9, `Error
    // opening .secagg/runs/<session>/ip-addresses`: shamir-party.x runs in the run directory.
    let Some(root) = mpspdz_root() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), 2).unwrap();
    let session = secagg_core::session::new_session_id();
    let started = Instant::now();
    let ids = fed.party_ids();
    let children: Vec<Child> = fed
        .parties
        .iter()
        .map(|p| {
            let home = p.home.root();
            support::negotiate(Path::new(home.file_name().unwrap()), &session, &ids)
                .current_dir(home.parent().unwrap())
                .timeout(Duration::from_secs(60))
                .engine("mp-spdz")
                .arg("--mpspdz-root")
                .arg(&root)
                .command()
                .spawn()
                .unwrap()
        })
        .collect();
    let exits = support::wait_all(children, started);
    for (p, e) in fed.parties.iter().zip(&exits) {
        assert_eq!(e.code, Some(0), "{}: {}", p.party_id, e.stderr);
    }
    assert!(
        demo::verify(&fed, &session.parse().unwrap())
            .unwrap()
            .verified
    );
}

#[test]
fn a_killed_party_makes_the_others_fail_within_the_deadline() {
    let Some(root) = mpspdz_root() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), 3).unwrap();
    // Warm every cache so the parties start shamir-party.x together.
    let (_, exits, _) = run_session(&fed, &root, "60s");
    assert!(exits.iter().all(|e| e.code == Some(0)));

    let session = secagg_core::session::new_session_id();
    let parties = fed.party_ids().join(",");
    let victim = &fed.parties[2];
    let deadline = Duration::from_secs(20);
    let started = Instant::now();
    // Everyone but the victim runs; the victim's secagg and shamir-party.x are started, then
    // killed (SIGKILL) once its shamir-party.x is running.
    let mut children: Vec<(usize, Child)> = fed
        .parties
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(i, p)| {
            (
                i,
                spawn_party(p.home.root(), &root, &session, &parties, "20s"),
            )
        })
        .collect();
    let mut victim_child = spawn_party(victim.home.root(), &root, &session, &parties, "20s");
    let victim_home = victim.home.root().display().to_string();
    let end = Instant::now() + Duration::from_secs(10);
    let mut killed = false;
    while Instant::now() < end {
        let procs = processes_mentioning(&format!("{victim_home}/runs"));
        if let Some((pid, _)) = procs.iter().find(|(_, c)| c.contains("shamir-party.x")) {
            let _ = victim_child.kill();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(killed, "the victim's shamir-party.x never started");
    let _ = victim_child.wait();
    children.sort_by_key(|(i, _)| *i);
    let exits = support::wait_all(
        children.into_iter().map(|(_, c)| c).collect(),
        Instant::now(),
    );
    let elapsed = started.elapsed();
    // The killed party may have been past the computation already; otherwise all others fail.
    let failed = exits.iter().filter(|e| e.code != Some(0)).count();
    eprintln!(
        "killed party: {failed} of {} others failed after {:.1} s: {:?}",
        exits.len(),
        elapsed.as_secs_f64(),
        exits
            .iter()
            .map(|e| e.stderr.lines().next().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
    );
    assert!(elapsed < deadline + Duration::from_secs(10), "{elapsed:?}");
    for e in &exits {
        if e.code != Some(0) {
            assert!(
                matches!(
                    e.kind(),
                    Some(ErrorKind::PeerFailure | ErrorKind::Timeout | ErrorKind::Authentication)
                ),
                "unexpected exit {:?}: {}",
                e.code,
                e.stderr
            );
        }
    }
    assert!(failed > 0, "nobody noticed the killed party");
    // Nothing stored by the researcher when it failed, no secrets and no processes left.
    if exits[0].code != Some(0) {
        assert!(
            secagg_core::session::get_context(&fed.parties[0].home, &session.parse().unwrap())
                .is_err()
        );
    }
    let left = secret_leftovers(&fed);
    // The victim was SIGKILLed and could not clean up: only its own run directory may remain.
    assert!(
        left.iter().all(|p| p.starts_with(victim.home.root())),
        "secret files left: {left:?}"
    );
    let orphans = processes_mentioning(&dir.path().display().to_string());
    assert!(orphans.is_empty(), "processes left: {orphans:?}");
}

#[test]
fn demo_runs_with_the_mp_spdz_engine() {
    let Some(root) = mpspdz_root() else { return };
    let out = secagg()
        .args([
            "demo", "--nodes", "3", "--engine", "mp-spdz", "--format", "json",
        ])
        .env("MPSPDZ_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["engine"], "mp-spdz");
    assert_eq!(j["verified"], true);
}
