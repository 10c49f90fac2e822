//! `secagg mpspdz doctor` and `secagg negotiate --engine mp-spdz` against fake MP-SPDZ roots (test
//! doubles: a `compile.py` that counts its invocations and a `shamir-party.x` shell script), with
//! real homes and stores. Runs without MP-SPDZ; the real thing is in `tests/e2e_mpspdz.rs`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secagg_core::demo::{self, Federation};
use secagg_core::processes::NegotiateCommand;
use secagg_core::{ErrorKind, SessionId};
use support::{run_one, secagg, secagg_env, Run};

/// `secagg` with `MPSPDZ_ROOT=root`.
fn secagg_root(home: &Path, args: &[&str], root: &Path) -> Run {
    secagg_env(home, args, &[("MPSPDZ_ROOT", root.to_str().unwrap())])
}

/// A fake MP-SPDZ root: `compile.py` (test double counting invocations in `compile-count`) and
/// `shamir-party.x` running `party_script`.
fn fake_root(dir: &Path, party_script: &str) -> PathBuf {
    let root = dir.join("fake-mpspdz");
    std::fs::create_dir_all(root.join("Compiler")).unwrap();
    std::fs::write(
        root.join("compile.py"),
        format!(
            "import os\nopen({:?}, 'a').write('x')\nos.makedirs('Programs/Schedules', exist_ok=True)\nos.makedirs('Programs/Bytecode', exist_ok=True)\nopen('Programs/Schedules/server_key.sch', 'w').write('sch ' + os.environ['SECAGG_MPSPDZ_PARTIES'])\nopen('Programs/Bytecode/server_key-0.bc', 'w').write('bc')\n",
            root.join("compile-count").display().to_string()
        ),
    )
    .unwrap();
    let bin = root.join("shamir-party.x");
    std::fs::write(&bin, party_script).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

fn compile_count(root: &Path) -> usize {
    std::fs::read_to_string(root.join("compile-count"))
        .map(|s| s.len())
        .unwrap_or(0)
}

fn federation(dir: &Path) -> Federation {
    demo::prepare(&dir.join("fed"), 2).unwrap()
}

#[test]
fn doctor_on_an_empty_root_names_each_missing_item_and_exits_9() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty-root");
    std::fs::create_dir(&empty).unwrap();
    let home = t.path().join("home");
    let r = secagg(
        &home,
        &[
            "mpspdz",
            "doctor",
            "--mpspdz-root",
            empty.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    // The error names the failed checks.
    r.fails_with(9, "failed binary, compiler");
    let j: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["ok"], false);
    let item = |name: &str| {
        j["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["check"].as_str().unwrap().starts_with(name))
            .unwrap()
            .clone()
    };
    assert_eq!(item("binary")["status"], "failed");
    assert!(item("binary")["detail"]
        .as_str()
        .unwrap()
        .contains("shamir-party.x"));
    assert_eq!(item("compiler")["status"], "failed");
    assert_eq!(item("prime")["status"], "skipped");
    assert_eq!(item("rehash")["status"], "info");

    // No root at all.
    let r = secagg(&home, &["mpspdz", "doctor"]);
    r.fails_as(ErrorKind::ExternalTool);
    assert!(r.stdout.contains("no MP-SPDZ root given"), "{}", r.stdout);

    // Text output lists the items too.
    let r = secagg(
        &home,
        &["mpspdz", "doctor", "--mpspdz-root", empty.to_str().unwrap()],
    );
    r.fails_as(ErrorKind::ExternalTool);
    assert!(
        r.stdout.contains("FAILED") && r.stdout.contains("compile.py"),
        "{}",
        r.stdout
    );
}

#[test]
fn doctor_checks_listed_certificates_and_unregistered_parties() {
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    let root = fake_root(
        t.path(),
        "#!/bin/sh\necho 'ERROR: incorrect number of arguments to ./shamir-party.x' >&2\nexit 1\n",
    );
    let mut ids = fed.party_ids();
    let home = fed.parties[1].home.root();
    let r = secagg_root(
        home,
        &[
            "mpspdz",
            "doctor",
            "--no-self-test",
            "--parties",
            &ids.join(","),
            "--format",
            "json",
        ],
        &root,
    );
    let j = r.ok().json();
    let certs: Vec<_> = j["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["check"].as_str().unwrap().starts_with("certificate of"))
        .collect();
    assert_eq!(certs.len(), 3);
    assert!(certs.iter().all(|c| c["status"] == "ok"), "{certs:?}");
    assert_eq!(compile_count(&root), 1);

    ids.push("node_unknown".into());
    let r = secagg_root(
        home,
        &[
            "mpspdz",
            "doctor",
            "--no-self-test",
            "--parties",
            &ids.join(","),
        ],
        &root,
    );
    r.fails_as(ErrorKind::ExternalTool);
    assert!(r.stdout.contains("node_unknown"), "{}", r.stdout);
    // Compiled once: the doctor warmed the home's cache.
    assert_eq!(compile_count(&root), 1);
}

#[test]
fn negotiate_without_a_root_is_an_external_tool_error() {
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    let r = run_one(
        &support::negotiate(fed.parties[0].home.root(), &uuid(), &fed.party_ids())
            .engine("mp-spdz"),
    );
    let e = r.fails_as(ErrorKind::ExternalTool).error().unwrap();
    // It says what is missing and how to give it.
    assert!(e.message.contains("no MP-SPDZ root given"), "{}", e.message);
    assert!(e.hint.is_some(), "{e:?}");
}

fn uuid() -> String {
    SessionId::generate().to_string()
}

/// One party's `secagg negotiate --engine mp-spdz --timeout 20s --format json --error-format
/// json` with `MPSPDZ_ROOT=root`; `.timeout(…)`, `.arg(…)` to change it.
fn mp_spdz(home: &Path, ids: &[String], session: &str, root: &Path) -> NegotiateCommand {
    support::negotiate(home, session, ids)
        .engine("mp-spdz")
        .timeout(Duration::from_secs(20))
        .env("MPSPDZ_ROOT", root)
}

/// Runs [`mp_spdz`] to its end.
fn negotiate(home: &Path, ids: &[String], session: &str, root: &Path) -> Run {
    run_one(&mp_spdz(home, ids, session, root))
}

#[test]
fn researcher_with_a_fake_party_binary_stores_the_lifted_key_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    // Party 0's stand-in writes a positive residue p − 5, which lifts to sk0 = −5 (Fed-BioMed v4
    // would have stored the positive number), and leaves a memory dump behind.
    let p = secagg_core::engine::fedbiomed_prime();
    let residue = (&p - 5u32).to_string();
    let script = format!(
        "#!/bin/sh\n[ -f Programs/Bytecode/server_key-0.bc ] || exit 5\necho shares > Player-Data/Memory-Sp-P0\nprintf '%s\\n' {residue} > \"$5-P0-0\"\nexit 0\n"
    );
    let root = fake_root(t.path(), &script);
    let home = fed.parties[0].home.root();
    let session = uuid();
    let j = negotiate(home, &fed.party_ids(), &session, &root)
        .ok()
        .json();
    assert_eq!(j["engine"], "mp-spdz");
    assert_eq!(j["role"], "researcher");
    let ctx =
        secagg_core::session::get_context(&fed.parties[0].home, &session.parse().unwrap()).unwrap();
    assert_eq!(ctx.engine, "mp-spdz");
    assert_eq!(ctx.key_decimal.as_str(), "-5");
    assert!(!home.join("runs").join(&session).exists());
    assert_eq!(compile_count(&root), 1);

    // Second session: cache reused, run directory kept without secrets.
    let session = uuid();
    let r = run_one(&mp_spdz(home, &fed.party_ids(), &session, &root).arg("--keep-run-dir"));
    assert!(
        r.ok().stderr.contains("kept the run directory"),
        "{}",
        r.stderr
    );
    assert_eq!(compile_count(&root), 1, "the second run recompiled");
    let run = home.join("runs").join(&session);
    assert!(run.join("ip-addresses").is_file());
    assert!(run.join("mpspdz.log").is_file());
    assert!(run.join("Player-Data/P0.pem").is_file());
    for secret in [
        "Player-Data/P0.key",
        "Player-Data/Memory-Sp-P0",
        "Output-P0-0",
    ] {
        assert!(!run.join(secret).exists(), "{secret} left behind");
    }
}

#[test]
fn failure_lines_become_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    let home = fed.parties[1].home.root();
    // Each failure is translated into a kind and a message naming its cause in secagg's terms.
    let cases = [
        (
            "echo 'Client-side handshake with P2 failed. Make sure both sides  have the necessary certificate' >&2\necho '  what():  handshake: certificate verify failed' >&2\nkill -ABRT $$",
            ErrorKind::Authentication,
            "TLS handshake with party 2",
        ),
        (
            "echo 'cannot connect from 127.0.0.1 to 127.0.0.1:1 after 25 attempts in one minute because Connection refused.' >&2\nkill -ABRT $$",
            ErrorKind::PeerFailure,
            "cannot connect",
        ),
        (
            "echo \"File Error : Missing 'Programs/Schedules/server_key.sch'. Did you compile 'server_key'?\" >&2\nkill -ABRT $$",
            ErrorKind::ExternalTool,
            "compiled program",
        ),
        ("echo 'No client after one minute' >&2\nkill -ABRT $$", ErrorKind::Timeout, "one minute"),
        ("echo 'IO-Error : not enough inputs in x' >&2\nkill -ABRT $$", ErrorKind::InvalidInput, "input"),
        ("echo something else >&2\nkill -ABRT $$", ErrorKind::ExternalTool, "SIGABRT"),
        ("sleep 1000 & sleep 1000", ErrorKind::Timeout, "did not finish"),
    ];
    for (i, (body, kind, needle)) in cases.iter().enumerate() {
        let dir = t.path().join(format!("case{i}"));
        std::fs::create_dir(&dir).unwrap();
        let root = fake_root(&dir, &format!("#!/bin/sh\n{body}\n"));
        let session = uuid();
        let mut command = mp_spdz(home, &fed.party_ids(), &session, &root);
        if body.starts_with("sleep") {
            command = command.timeout(Duration::from_secs(2));
        }
        let started = std::time::Instant::now();
        let r = run_one(&command);
        let e = r.fails_as(*kind).error().unwrap();
        assert!(e.message.contains(needle), "case {i}: {}", e.message);
        assert!(started.elapsed() < Duration::from_secs(15));
        assert!(!home.join("runs").join(&session).exists(), "case {i}");
        // A node stores its key (unconfirmed) before shamir-party.x starts, so that the
        // researcher can never hold a server key this node lacks; a failed run leaves it
        // unconfirmed, never confirmed, and says so.
        match secagg_core::session::get_context(&fed.parties[1].home, &session.parse().unwrap()) {
            Err(_) => {}
            Ok(c) => {
                assert_eq!(
                    c.state,
                    secagg_core::contexts::KeyState::Unconfirmed,
                    "case {i}: a failed session confirmed a key"
                );
                assert!(
                    r.stderr.contains("stored here but unconfirmed"),
                    "case {i}: {}",
                    r.stderr
                );
            }
        }
    }
}

/// A party stand-in that fails like MP-SPDZ does when a path it was given does not exist from its
/// own working directory (the run directory), and otherwise succeeds (the researcher writing
/// `-5`).
const PATH_CHECKING_PARTY: &str = "#!/bin/sh
[ -f \"$3\" ] || { echo \"Error opening $3\" >&2; exit 1; }
[ -d \"$(dirname \"$5\")\" ] || { echo \"Error opening $5\" >&2; exit 1; }
if [ \"$1\" = 0 ]; then
  printf '%s\\n' -5 > \"$5-P0-0\" || exit 1
else
  [ -f \"$5-P$1-0\" ] || { echo \"Error opening $5-P$1-0\" >&2; exit 1; }
fi
exit 0
";

#[test]
fn relative_and_default_homes_give_shamir_party_paths_that_exist_from_its_working_directory() {
    // Regression: with `./.secagg` or a relative --home, every party exited 9 with `Error opening
    // .secagg/runs/<session>/ip-addresses`: the paths were relative to secagg's working directory
    // while shamir-party.x runs in the run directory.
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    let root = fake_root(t.path(), PATH_CHECKING_PARTY);
    let ids = fed.party_ids();
    let session = uuid();
    // The researcher with the default home's path, `.secagg` relative to its working directory
    // (`--home .secagg` is what the default resolves to).
    let researcher_cwd = t.path().join("researcher-cwd");
    std::fs::create_dir(&researcher_cwd).unwrap();
    std::fs::rename(fed.parties[0].home.root(), researcher_cwd.join(".secagg")).unwrap();
    // A node with a relative --home.
    let node_home = fed.parties[1].home.root();
    let node_cwd = node_home.parent().unwrap();
    let node_rel = node_home.file_name().unwrap();
    for (cwd, home) in [
        (researcher_cwd.as_path(), Path::new(".secagg")),
        (node_cwd, Path::new(node_rel)),
    ] {
        let r = run_one(&mp_spdz(home, &ids, &session, &root).current_dir(cwd));
        assert_eq!(
            r.code,
            0,
            "home {} in {}: {}",
            home.display(),
            cwd.display(),
            r.stderr
        );
        assert!(!cwd.join(home).join("runs").join(&session).exists());
    }
    let session: SessionId = session.parse().unwrap();
    let ctx = secagg_core::session::get_context(
        &secagg_core::home::Home::new(researcher_cwd.join(".secagg")),
        &session,
    )
    .unwrap();
    assert_eq!(ctx.key_decimal.as_str(), "-5");
    assert!(secagg_core::session::get_context(&fed.parties[1].home, &session).is_ok());
}

#[test]
fn a_second_run_of_the_same_session_in_one_home_is_a_conflict_and_spares_the_first() {
    // Regression: the second run deleted `runs/<session>/` under the first one's shamir-party.x.
    // The researcher stores nothing before its run ends, so the second run gets as far as the
    // run directory.
    let t = tempfile::tempdir().unwrap();
    let fed = federation(t.path());
    let root = fake_root(
        t.path(),
        "#!/bin/sh\ntouch started\nsleep 2\n[ -f ip-addresses ] || { echo 'Error opening ip-addresses' >&2; exit 1; }\nprintf '%s\\n' -5 > \"$5-P0-0\" || exit 1\nexit 0\n",
    );
    let home = fed.parties[0].home.root();
    let session = uuid();
    let run_dir = home.join("runs").join(&session);
    let first = mp_spdz(home, &fed.party_ids(), &session, &root)
        .command()
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !run_dir.join("started").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the first run did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = negotiate(home, &fed.party_ids(), &session, &root);
    let e = second.fails_as(ErrorKind::Conflict).error().unwrap();
    // It names the session and says what to do.
    assert!(e.message.contains(&session), "{}", e.message);
    assert!(e.hint.is_some(), "{e:?}");
    assert!(
        run_dir.join("started").exists(),
        "the second run touched the first one's directory"
    );
    let first = first.wait_with_output().unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(!run_dir.exists());
    assert!(!home.join("runs").join(format!("{session}.lock")).exists());
    let ctx =
        secagg_core::session::get_context(&fed.parties[0].home, &session.parse().unwrap()).unwrap();
    assert_eq!(ctx.key_decimal.as_str(), "-5");
}
