//! The home's files and the store (issue 8, section 4): permission checks, secure delete, `-o FILE`
//! that overwrites nothing, empty or truncated stores, and read-only commands beside a writer.
//!
//! These tests usually run as root, which ignores file modes when opening files. The permission
//! checks look at the mode bits themselves, so root sees them like anyone else. What root cannot
//! show is that a read-only command *could not* have written a 0400 store. Two tests cover it:
//! one holds the store's write lock from another connection (a command that took or waited for the
//! write lock would hang there; as root the 0400 variant only shows the commands still answer),
//! and one runs the commands as `nobody` through setpriv on a 0400 store in a 0500 home, where a
//! write really fails (it skips itself, saying so, without root or setpriv).

#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secagg_core::ErrorKind;
use support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Stores a context row for `session` with `key` straight into the home's store (the columns of
/// schema v2; later columns have defaults), as `secagg negotiate` would have.
fn insert_context(home: &Path, session: &str, key: &str) {
    let store = rusqlite::Connection::open(home.join("store.sqlite")).unwrap();
    store
        .execute(
            "INSERT INTO contexts (session_id, role, party_index, parties, engine, key_bits,
                     key_decimal, key_fingerprint, created_at)
                 VALUES (?1, 'node', 1, '[\"researcher_a\",\"node_store\",\"node_b\"]', 'native',
                     2040, ?2, 'SHA256:00', 1700000000)",
            [session, key],
        )
        .unwrap();
}

/// 620 random decimal digits, like a 2040-bit key.
fn key_digits() -> String {
    let mut bytes = [0u8; 620];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    bytes.iter().map(|b| char::from(b'0' + b % 10)).collect()
}

fn store_files(home: &Path) -> Vec<PathBuf> {
    ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"]
        .iter()
        .map(|n| home.join(n))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn key_store_and_home_accessible_by_others_are_refused_with_the_chmod_that_fixes_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "perm");
    let key = home.join("identity/key.pem");
    let store = home.join("store.sqlite");
    let (cert, party, fp) = fixture("certs/ecdsa_p256.pem");
    let register = [
        "certificate",
        "register",
        "-pk",
        cert.to_str().unwrap(),
        "-pi",
        party.as_deref().unwrap(),
        "--ip",
        "10.221.0.3",
        "--port",
        "14002",
        "--expect-fingerprint",
        fp.as_deref().unwrap(),
    ];

    chmod(&key, 0o644);
    for args in [
        &["certificate", "list"][..],
        &["context", "list"],
        &["identity", "show"],
        &["certificate", "registration-instructions"],
        &register,
    ] {
        let r = secagg(&home, args);
        r.fails_with(
            3,
            &format!(
                "error: private key `{}` is accessible by group or others (mode 0644): refusing to use it\nhint: run `chmod 600 {}`",
                key.display(),
                key.display()
            ),
        );
    }
    chmod(&key, 0o600);

    // A world-readable store: nothing is read from it, and no new secret is written into it.
    chmod(&store, 0o644);
    let before = std::fs::read(&store).unwrap();
    for args in [
        &["certificate", "list"][..],
        &["context", "list"],
        &register,
    ] {
        secagg(&home, args).fails_with(
            3,
            &format!(
                "error: store `{}` is accessible by group or others (mode 0644): refusing to use it\nhint: run `chmod 600 {}`",
                store.display(),
                store.display()
            ),
        );
    }
    assert_eq!(std::fs::read(&store).unwrap(), before, "store changed");
    assert_eq!(
        mode(&store),
        0o644,
        "the check does not silently fix the mode"
    );
    chmod(&store, 0o600);

    chmod(&home, 0o777);
    for args in [
        &["certificate", "list"][..],
        &["context", "list"],
        &register,
    ] {
        secagg(&home, args).fails_with(
            3,
            &format!(
                "error: home directory `{}` is writable by group or others (mode 0777): refusing to use it\nhint: run `chmod 700 {}`",
                home.display(),
                home.display()
            ),
        );
    }
    chmod(&home, 0o700);

    // Regression (issue 20, item 8): a configuration or certificate that another local user can
    // write (and so rename the party, redirect its endpoint or swap the certificate) was used
    // silently. Readable is fine; writable is refused, with the chmod that fixes it.
    for (file, what) in [
        (home.join("config.toml"), "configuration"),
        (home.join("identity/cert.pem"), "certificate"),
    ] {
        let keep = mode(&file);
        chmod(&file, 0o644);
        secagg(&home, &["identity", "show"]).ok();
        for bad in [0o664, 0o646] {
            chmod(&file, bad);
            for args in [
                &["identity", "show"][..],
                &["certificate", "registration-instructions"],
                &register,
            ] {
                secagg(&home, args).fails_with(
                    3,
                    &format!(
                        "error: {what} `{}` is writable by group or others (mode {bad:04o}): refusing to use it\nhint: run `chmod go-w {}`",
                        file.display(),
                        file.display()
                    ),
                );
            }
        }
        chmod(&file, keep);
    }
    assert_eq!(
        peers_json(&home)["peers"].as_array().unwrap().len(),
        0,
        "nothing registered"
    );

    // The hinted fixes are enough.
    secagg(&home, &register).ok();
    assert_eq!(peers_json(&home)["peers"].as_array().unwrap().len(), 1);
}

#[test]
fn context_delete_leaves_no_trace_of_the_key_in_the_store_files() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "store");
    let session = "6f1c2a4e-0000-4000-8000-000000000001";
    let key = key_digits();
    insert_context(&home, session, &key);
    let shown = secagg(&home, &["context", "show", session, "--reveal-key"]);
    shown.ok();
    assert!(shown.stdout.contains(&key), "{}", shown.stdout);
    let on_disk: Vec<u8> = store_files(&home)
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(
        on_disk.windows(key.len()).any(|w| w == key.as_bytes()),
        "the key should be in the store files before the delete"
    );

    secagg(&home, &["context", "delete", session]).ok();

    for file in store_files(&home) {
        let bytes = std::fs::read(&file).unwrap();
        for w in key.as_bytes().windows(16) {
            assert!(
                !bytes.windows(16).any(|b| b == w),
                "`{}` still holds digits {:?} of the deleted key",
                file.display(),
                std::str::from_utf8(w).unwrap()
            );
        }
    }
    secagg(&home, &["context", "show", session]).fails_as(ErrorKind::NotFound);
    let help = secagg(&home, &["context", "delete", "--help"]);
    help.ok();
    assert!(help.stdout.contains("gone for good"), "{}", help.stdout);
}

#[test]
fn output_never_overwrites_home_files_non_regular_files_or_existing_files_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "out");
    let store = home.join("store.sqlite");
    let store_before = std::fs::read(&store).unwrap();
    let instructions = |out: &Path, force: bool| {
        let mut args = vec![
            "certificate",
            "registration-instructions",
            "--format",
            "json",
            "-o",
            out.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        secagg(&home, &args)
    };

    // The home's own files, by any spelling, with or without --force.
    let dotted = home.join("identity/../store.sqlite");
    for target in [
        store.clone(),
        dotted,
        home.join("store.sqlite-wal"),
        home.join("identity/key.pem"),
        home.join("identity/new.json"),
        home.join("config.toml"),
    ] {
        for force in [false, true] {
            instructions(&target, force).fails_with(3, "is one of the secagg home's own files");
        }
    }
    assert_eq!(
        std::fs::read(&store).unwrap(),
        store_before,
        "store replaced"
    );
    assert!(!home.join("identity/new.json").exists());
    secagg(&home, &["certificate", "list"]).ok();

    // A symbolic link to the store is the store.
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&store, &link).unwrap();
    instructions(&link, true).fails_with(3, "is one of the secagg home's own files");
    assert_eq!(std::fs::read(&store).unwrap(), store_before);

    // A FIFO (a reader would get the bundle, or the writer would block) and a directory.
    let fifo = dir.path().join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    for force in [false, true] {
        instructions(&fifo, force).fails_with(3, "is a FIFO (named pipe), not a regular file");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    let subdir = dir.path().join("adir");
    std::fs::create_dir(&subdir).unwrap();
    instructions(&subdir, true).fails_with(3, "is a directory, not a regular file");

    // An existing file: refused and unchanged without --force, replaced with it.
    let bundle = dir.path().join("bundle.json");
    std::fs::write(&bundle, "old content\n").unwrap();
    instructions(&bundle, false).fails_as(ErrorKind::Conflict);
    assert_eq!(std::fs::read_to_string(&bundle).unwrap(), "old content\n");
    instructions(&bundle, true).ok();
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    assert_eq!(j["party_id"], "node_out");

    // A new file is created; no temporary file is left beside it.
    let fresh = dir.path().join("fresh.json");
    instructions(&fresh, false).ok();
    assert!(fresh.is_file());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // `vpn server-config -o` follows the same rule.
    let vpn = dir.path().join("vpn");
    secagg(&vpn, &["vpn", "init", "--public-addr", "192.0.2.1"]).ok();
    let conf = dir.path().join("wg0.conf");
    std::fs::write(&conf, "keep me\n").unwrap();
    secagg(
        &vpn,
        &["vpn", "server-config", "-o", conf.to_str().unwrap()],
    )
    .fails_as(ErrorKind::Conflict);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "keep me\n");
    let vpn_store = vpn.join("store.sqlite");
    secagg(
        &vpn,
        &[
            "vpn",
            "server-config",
            "-o",
            vpn_store.to_str().unwrap(),
            "--force",
        ],
    )
    .fails_with(3, "is one of the secagg home's own files");
    secagg(
        &vpn,
        &[
            "vpn",
            "server-config",
            "-o",
            conf.to_str().unwrap(),
            "--force",
        ],
    )
    .ok();
    assert!(std::fs::read_to_string(&conf)
        .unwrap()
        .contains("[Interface]"));
    assert_eq!(mode(&conf), 0o600);
}

#[test]
fn empty_truncated_or_missing_store_is_an_error_and_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "empty");
    let store = home.join("store.sqlite");
    let session = "6f1c2a4e-0000-4000-8000-000000000002";
    insert_context(&home, session, "12345");
    let full = std::fs::read(&store).unwrap();
    let (cert, party, _) = fixture("certs/ecdsa_p256.pem");
    let register = [
        "certificate",
        "register",
        "-pk",
        cert.to_str().unwrap(),
        "-pi",
        party.as_deref().unwrap(),
        "--ip",
        "10.221.0.3",
        "--port",
        "14002",
    ];

    // 0 bytes: every command that uses the store refuses it, none treats it as new.
    std::fs::write(&store, b"").unwrap();
    let expected = format!(
        "error: store `{}` is empty (0 bytes): it is damaged, not a new store\nhint: restore it from a backup, or move it away",
        store.display()
    );
    for args in [
        &["certificate", "list"][..],
        &["context", "list"],
        &["context", "show", session],
        &["context", "delete", session],
        &register,
        &["init", "--role", "node", "--id", "node_empty", "--force"],
    ] {
        secagg(&home, args).fails_with(3, &expected);
        assert_eq!(std::fs::metadata(&store).unwrap().len(), 0, "{args:?}");
    }
    assert!(!home.join("store.sqlite-wal").exists());

    // Truncated: cut inside a page (seen by `stat`), or at a page boundary with the header
    // counting more pages (seen by SQLite when it reads the schema). Both refused, both untouched.
    let half_pages = full.len() / 2 / 4096 * 4096;
    assert!(half_pages >= 4096, "{}", full.len());
    for (cut, says) in [
        (half_pages + 100, "is truncated"),
        (half_pages, "is damaged: SQLite cannot read it"),
    ] {
        std::fs::write(&store, &full[..cut]).unwrap();
        secagg(&home, &["context", "list"]).fails_with(3, says);
        secagg(&home, &register).fails_with(3, says);
        assert_eq!(std::fs::read(&store).unwrap(), &full[..cut], "cut {cut}");
    }

    // Missing: only `init` creates a store.
    std::fs::remove_file(&store).unwrap();
    for args in [
        &["certificate", "list"][..],
        &["context", "list"],
        &register,
    ] {
        secagg(&home, args).fails_with(
            4,
            &format!("error: store `{}` does not exist", store.display()),
        );
        assert!(!store.exists(), "{args:?} created the store");
    }
    std::fs::write(&store, &full).unwrap();
    chmod(&store, 0o600); // restored as a backup would be: private
    let r = secagg(&home, &["context", "list", "--format", "json"]);
    r.ok();
    assert_eq!(r.json()["contexts"][0]["session_id"], session);
}

#[test]
fn read_only_commands_answer_while_another_process_holds_the_write_lock() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "ro");
    let (cert, party, _) = fixture("certs/ecdsa_p256.pem");
    let party = party.unwrap();
    secagg(
        &home,
        &[
            "certificate",
            "register",
            "-pk",
            cert.to_str().unwrap(),
            "-pi",
            &party,
            "--ip",
            "10.221.0.3",
            "--port",
            "14002",
        ],
    )
    .ok();
    let session = "6f1c2a4e-0000-4000-8000-000000000003";
    insert_context(&home, session, "424242");

    // Another connection holds `BEGIN IMMEDIATE` (the write lock) for the whole check. Before
    // issue 8 every command, `list` included, took the write lock on open and waited 30 s here.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let store = home.join("store.sqlite");
    let holder = std::thread::spawn(move || {
        let s = rusqlite::Connection::open(&store).unwrap();
        s.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        s.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();

    let check = |home: &Path| {
        let t = Instant::now();
        let peers = secagg(home, &["certificate", "list", "--format", "json"]);
        peers.ok();
        assert_eq!(peers.json()["peers"][0]["party_id"], party.as_str());
        let one = secagg(home, &["certificate", "show", &party, "--format", "json"]);
        one.ok();
        let contexts = secagg(home, &["context", "list", "--format", "json"]);
        contexts.ok();
        assert_eq!(contexts.json()["contexts"][0]["session_id"], session);
        let shown = secagg(home, &["context", "show", session, "--reveal-key"]);
        shown.ok();
        assert!(shown.stdout.contains("424242"), "{}", shown.stdout);
        secagg(home, &["identity", "show"]).ok();
        secagg(home, &["certificate", "registration-instructions"]).ok();
        // Six processes; each would have waited 30 s for the lock.
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "read-only commands took {:?} beside a writer",
            t.elapsed()
        );
    };
    check(&home);

    // A 0400 store: the read-only commands still answer (as root this shows only that; see the
    // module comment).
    let store = home.join("store.sqlite");
    chmod(&store, 0o400);
    check(&home);
    chmod(&store, 0o600);

    release_tx.send(()).unwrap();
    holder.join().unwrap();
}

fn sh_out(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn read_only_commands_serve_a_user_who_cannot_write_the_store_or_the_home() {
    // Root writes any file, so the read-only case needs another user: run the commands as
    // `nobody` through setpriv. Without root or setpriv this test can show nothing and says so.
    let (Some(uid), Some(nobody_uid), Some(nobody_gid)) = (
        sh_out("id", &["-u"]),
        sh_out("id", &["-u", "nobody"]),
        sh_out("id", &["-g", "nobody"]),
    ) else {
        eprintln!("skipped: `id` or user nobody missing");
        return;
    };
    if uid != "0" || sh_out("setpriv", &["--version"]).is_none() {
        eprintln!("skipped: needs root and setpriv to run commands as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755); // only the home itself is checked; nobody must reach it
    let home = node_home(dir.path(), "nobody");
    let (cert, party, _) = fixture("certs/ecdsa_p256.pem");
    let party = party.unwrap();
    secagg(
        &home,
        &[
            "certificate",
            "register",
            "-pk",
            cert.to_str().unwrap(),
            "-pi",
            &party,
            "--ip",
            "10.221.0.3",
            "--port",
            "14002",
        ],
    )
    .ok();
    let session = "6f1c2a4e-0000-4000-8000-000000000004";
    insert_context(&home, session, "777");
    let store = home.join("store.sqlite");
    assert!(sh_out("chown", &["-R", &nobody_uid, home.to_str().unwrap()]).is_some());
    chmod(&store, 0o400);
    chmod(&home, 0o500);
    let before = std::fs::read(&store).unwrap();
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .arg(format!("--reuid={nobody_uid}"))
            .arg(format!("--regid={nobody_gid}"))
            .arg("--clear-groups")
            .arg(bin())
            .arg("--home")
            .arg(&home)
            .args(args)
            .env_remove("SECAGG_HOME")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = as_nobody(&["certificate", "list", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&party), "{out}");
    let (code, out, err) = as_nobody(&["context", "show", session, "--reveal-key"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("777"), "{out}");
    let (code, _, err) = as_nobody(&["context", "list"]);
    assert_eq!(code, 0, "{err}");
    // A command that writes really cannot, which is what makes the reads above meaningful.
    let (code, _, err) = as_nobody(&["context", "delete", session]);
    assert_eq!(code, 10, "{err}");
    assert_eq!(std::fs::read(&store).unwrap(), before);
    assert!(!home.join("store.sqlite-wal").exists() && !home.join("store.sqlite-shm").exists());
    chmod(&home, 0o700);
}
