//! `secagg init`, `identity show`, `certificate generate`, `registration-instructions`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use support::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_a_private_home_and_show_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let r = secagg(
        &home,
        &[
            "init",
            "--role",
            "node",
            "--ip",
            "10.221.0.3",
            "--port",
            "14002",
            "--format",
            "json",
        ],
    );
    r.ok();
    let j = r.json();
    let id = j["party_id"].as_str().unwrap();
    assert!(id.starts_with("node_") && id.len() == 5 + 36, "{id}");
    assert_eq!(j["role"], "node");
    assert_eq!(j["ip"], "10.221.0.3");
    assert_eq!(j["port"], 14002);
    assert_eq!(j["key_type"], "p256");
    assert_eq!(j["status"], "valid");
    assert!(j["days_left"].as_i64().unwrap() >= 5 * 365 - 1);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("identity")), 0o700);
    assert_eq!(mode(&home.join("identity/key.pem")), 0o600);
    assert_eq!(mode(&home.join("store.sqlite")), 0o600);
    let key = std::fs::read_to_string(home.join("identity/key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        !r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"),
        "key printed"
    );

    let show = secagg(&home, &["identity", "show", "--format", "json"]);
    show.ok();
    assert_eq!(show.json()["fingerprint"], j["fingerprint"]);
    let text = secagg(&home, &["identity", "show"]);
    text.ok();
    assert!(
        text.stdout.contains(id) && text.stdout.contains("10.221.0.3:14002"),
        "{}",
        text.stdout
    );
}

#[test]
fn init_defaults_follow_role_and_mpspdz_environment() {
    let dir = tempfile::tempdir().unwrap();
    let r = secagg(
        &dir.path().join("r"),
        &["init", "--role", "researcher", "--format", "json"],
    );
    let j = r.ok().json();
    assert!(j["party_id"].as_str().unwrap().starts_with("researcher_"));
    assert_eq!(j["ip"], "127.0.0.1");
    assert_eq!(j["port"], 14000);
    assert!(
        r.stderr.contains("loopback"),
        "expected a loopback warning: {}",
        r.stderr
    );
    let n = secagg(
        &dir.path().join("n"),
        &["init", "--role", "node", "--format", "json"],
    );
    assert_eq!(n.ok().json()["port"], 14001);
    let e = secagg_env(
        &dir.path().join("e"),
        &["init", "--role", "node", "--format", "json"],
        &[("MPSPDZ_IP", "10.221.0.7"), ("MPSPDZ_PORT", "14005")],
    );
    let j = e.ok().json();
    assert_eq!(
        (j["ip"].as_str().unwrap(), j["port"].as_u64().unwrap()),
        ("10.221.0.7", 14005)
    );
}

#[test]
fn init_refuses_to_overwrite_and_force_keeps_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    secagg(&home, &["init", "--role", "node", "--id", "node_a"]).ok();
    let key_before = std::fs::read(home.join("identity/key.pem")).unwrap();
    let cert_before = std::fs::read(home.join("identity/cert.pem")).unwrap();
    secagg(&home, &["init", "--role", "node"]).fails_with(5, "already holds an identity (node_a)");
    assert_eq!(
        std::fs::read(home.join("identity/key.pem")).unwrap(),
        key_before,
        "key changed"
    );
    assert_eq!(
        std::fs::read(home.join("identity/cert.pem")).unwrap(),
        cert_before
    );

    secagg(
        &home,
        &["init", "--role", "node", "--id", "node_b", "--force"],
    )
    .ok();
    assert_ne!(
        std::fs::read(home.join("identity/key.pem")).unwrap(),
        key_before
    );
    let prev: Vec<_> = std::fs::read_dir(home.join("identity/previous"))
        .unwrap()
        .collect();
    assert_eq!(prev.len(), 1);
    let archived = prev[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::read(archived.join("key.pem")).unwrap(),
        key_before,
        "old key not kept"
    );
    assert_eq!(mode(&archived.join("key.pem")), 0o600);
    assert_eq!(mode(&archived), 0o700);
}

#[test]
fn init_rejects_bad_input_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    for (args, needle) in [
        (
            vec!["--id", "hospital1"],
            "does not start with `researcher_` or `node_`",
        ),
        (
            vec!["--id", "researcher_x"],
            "names a researcher but the role is node",
        ),
        (vec!["--port", "0"], "port 0 is out of range"),
        (vec!["--port", "70000"], "port 70000 is out of range"),
        (
            vec!["--ip", "10.0.0.300"],
            "neither an IP address nor a host name",
        ),
        (vec!["--days", "0"], "validity of 0 days"),
    ] {
        let mut a = vec!["init", "--role", "node"];
        a.extend(args);
        secagg(&home, &a).fails_with(3, needle);
        assert!(!home.exists(), "{a:?} created the home");
    }
    // A usage error is exit 2.
    assert_eq!(secagg(&home, &["init", "--role", "boss"]).code, 2);
}

#[test]
fn commands_without_identity_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("nothing-here");
    for args in [
        vec!["identity", "show"],
        vec!["certificate", "list"],
        vec!["certificate", "registration-instructions"],
    ] {
        let r = secagg(&home, &args);
        r.fails_with(4, "no secagg identity in");
        assert!(r.stderr.contains("makes a NEW identity"), "{}", r.stderr);
    }
    assert!(!home.exists(), "a read command created the home");
}

/// Regression (issue 23, item 7): from the wrong directory, the default home `./.secagg` was
/// reported as a relative path and the hint said to run `init`, which makes a second identity.
/// The message names the absolute path, and the hint says to point --home / SECAGG_HOME first.
#[test]
fn no_identity_in_the_default_home_names_the_absolute_path_and_warns_init_makes_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = secagg_command()
        .current_dir(dir.path())
        .args(["identity", "show"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let absolute = dir.path().canonicalize().unwrap().join(".secagg");
    assert!(
        stderr.contains(&format!("no secagg identity in `{}`", absolute.display()))
            || stderr.contains(&format!(
                "no secagg identity in `{}`",
                dir.path().join(".secagg").display()
            )),
        "{stderr}"
    );
    assert!(stderr.contains("SECAGG_HOME"), "{stderr}");
    assert!(stderr.contains("makes a NEW identity"), "{stderr}");
}

#[test]
fn generate_needs_force_and_reports_both_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let old = secagg(&home, &["init", "--role", "node", "--format", "json"])
        .ok()
        .json();
    secagg(&home, &["certificate", "generate"]).fails_with(5, "already has a certificate");
    let r = secagg(
        &home,
        &[
            "certificate",
            "generate",
            "--force",
            "--key-type",
            "ed25519",
            "--format",
            "json",
        ],
    );
    let j = r.ok().json();
    assert_eq!(j["old_fingerprint"], old["fingerprint"]);
    assert_ne!(j["new_fingerprint"], old["fingerprint"]);
    let now = secagg(&home, &["identity", "show", "--format", "json"])
        .ok()
        .json();
    assert_eq!(now["fingerprint"], j["new_fingerprint"]);
    assert_eq!(now["key_type"], "ed25519");
    assert_eq!(
        now["party_id"], old["party_id"],
        "party id must survive renewal"
    );
    let text = secagg(&home, &["certificate", "generate", "-f"]);
    text.ok();
    assert!(
        text.stderr
            .contains("every other party must now register the new certificate"),
        "{}",
        text.stderr
    );
}

#[test]
fn registration_instructions_text_and_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let me = secagg(
        &home,
        &[
            "init",
            "--role",
            "node",
            "--id",
            "node_h1",
            "--ip",
            "10.221.0.3",
            "--port",
            "14002",
            "--format",
            "json",
        ],
    )
    .ok()
    .json();
    let fp = me["fingerprint"].as_str().unwrap();
    let t = secagg(&home, &["certificate", "registration-instructions"]);
    t.ok();
    assert!(t.stdout.starts_with("Hi There!\n\n\nPlease find following certificate to register\n\n-----BEGIN CERTIFICATE-----\n"), "{}", t.stdout);
    let cmd = "secagg certificate register -pk [PATH WHERE CERTIFICATE IS SAVED] -pi node_h1 --ip 10.221.0.3 --port 14002 --expect-fingerprint <FINGERPRINT READ OUT BY THE OPERATOR OF node_h1>";
    assert!(t.stdout.contains(cmd), "{}", t.stdout);
    // Regression (issue 23, item 1): the message carried the fingerprint in a ready
    // `--expect-fingerprint`, so pasting it checked the certificate against itself. The message
    // to send has no fingerprint at all; the operator gets it on stderr, to read out.
    let readable = me["fingerprint_readable"].as_str().unwrap();
    assert!(
        !t.stdout.contains(fp) && !t.stdout.contains(readable),
        "{}",
        t.stdout
    );
    assert!(
        t.stderr.contains(readable) && t.stderr.contains("read this fingerprint out"),
        "{}",
        t.stderr
    );
    // The placeholder cannot pass: pasted into a shell it is a redirection from a missing file.
    let pasted = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} --home {} certificate register -pk /dev/null -pi node_x --ip 10.0.0.1 --port 1 --expect-fingerprint <FINGERPRINT READ OUT BY THE OPERATOR OF node_h1>", env!("CARGO_BIN_EXE_secagg"), home.display()))
        .output()
        .unwrap();
    assert!(!pasted.status.success());
    assert!(t
        .stdout
        .contains(" 1- Copy certificate content into a file e.g 'Hospital1.pem'"));

    let out = dir.path().join("bundle.json");
    secagg(
        &home,
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
            "-o",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(b["format"], "secagg-registration-bundle");
    assert_eq!(b["version"], 1);
    assert_eq!(b["party_id"], "node_h1");
    assert_eq!(b["role"], "node");
    assert_eq!(b["ip"], "10.221.0.3");
    assert_eq!(b["port"], 14002);
    assert_eq!(b["fingerprint"], fp);
    assert!(b["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

/// Our certificates, as OpenSSL sees them (skipped where openssl is not installed).
#[test]
fn generated_certificate_passes_openssl_inspection() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    secagg(&home, &["init", "--role", "node", "--id", "node_ossl"]).ok();
    let cert = home.join("identity/cert.pem");
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Version: 3 (0x2)"), "{text}");
    assert!(text.contains("Subject: CN = *, O = node_ossl"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&serial.stdout);
    let hex = serial.trim().trim_start_matches("serial=");
    assert_eq!(hex.len(), 32, "128-bit serial expected: {serial}");
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-check_ss_sig",
            "-purpose",
            "sslclient",
            "-CAfile",
        ])
        .arg(&cert)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-check_ss_sig",
            "-purpose",
            "sslserver",
            "-CAfile",
        ])
        .arg(&cert)
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // The private key matches the certificate.
    let pk_cert = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let pk_key = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(home.join("identity/key.pem"))
        .output()
        .unwrap();
    assert_eq!(pk_cert.stdout, pk_key.stdout);
}

fn fingerprint(home: &std::path::Path) -> String {
    secagg(home, &["identity", "show", "--format", "json"])
        .ok()
        .json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Regression (issue 20, item 7): `init` on a full disk exited 10 but left an empty `identity/`
/// and a 0-byte `store.sqlite`, and every later `init`, even `--force`, refused with exit 3. Now,
/// on a real full disk (a small tmpfs) with every amount of free space from none to enough, a
/// failed `init` leaves nothing of a new home, and a retry once there is room succeeds.
#[test]
fn init_on_a_full_disk_leaves_nothing_and_a_retry_succeeds() {
    let disk = match small_disk::SmallDisk::mount(2048) {
        Ok(d) => d,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let init = ["init", "--role", "node", "--id", "node_disk"];
    let mut failed = 0;
    for free_pages in 0..40u64 {
        let home = disk.path().join(format!("home-{free_pages}"));
        disk.fill_leaving(free_pages * 4096);
        let run = secagg(&home, &init);
        if run.code != 0 {
            failed += 1;
            run.fails_as(secagg_core::ErrorKind::Storage);
            let left: Vec<_> = std::fs::read_dir(&home)
                .map(|d| d.map(|e| e.unwrap().file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{free_pages} free pages: left {left:?}");
        }
        disk.free();
        if run.code != 0 {
            secagg(&home, &init).ok();
        }
        assert!(fingerprint(&home).starts_with("SHA256:"), "{free_pages}");
        secagg(&home, &["certificate", "list"]).ok();
        std::fs::remove_dir_all(&home).unwrap();
    }
    assert!(
        failed > 3,
        "the sweep never hit a full disk ({failed} failures)"
    );
}

/// The same sweep for `init --force` over an existing identity: a failed replacement leaves the
/// old identity in use (same certificate, its key still matching) and a retry succeeds.
#[test]
fn init_force_on_a_full_disk_keeps_the_old_identity() {
    let disk = match small_disk::SmallDisk::mount(2048) {
        Ok(d) => d,
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let home = disk.path().join("home");
    secagg(&home, &["init", "--role", "node", "--id", "node_old"]).ok();
    let mut failed = 0;
    for free_pages in 0..12u64 {
        let before = fingerprint(&home);
        disk.fill_leaving(free_pages * 4096);
        let run = secagg(
            &home,
            &["init", "--role", "node", "--id", "node_new", "--force"],
        );
        disk.free();
        if run.code != 0 {
            failed += 1;
            run.fails_as(secagg_core::ErrorKind::Storage);
            assert_eq!(fingerprint(&home), before, "{free_pages} free pages");
            // The key still matches the certificate.
            let cert = std::fs::read(home.join("identity/cert.pem")).unwrap();
            let cert = secagg_core::certificate::Certificate::parse(&cert, "cert").unwrap();
            let key = std::fs::read_to_string(home.join("identity/key.pem")).unwrap();
            secagg_core::certificate::private_key_der_matching(&key, &cert).unwrap();
        }
        secagg(
            &home,
            &["init", "--role", "node", "--id", "node_new", "--force"],
        )
        .ok();
        assert_ne!(fingerprint(&home), before);
    }
    assert!(
        failed > 1,
        "the sweep never hit a full disk ({failed} failures)"
    );
}

/// What a power cut during `init` leaves (an empty `identity/`, a 0-byte store, no identity) is
/// not a damaged store holding anything: `init` makes the home over it.
#[test]
fn init_over_what_an_interrupted_init_left_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    std::fs::create_dir_all(home.join("identity")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(
        home.join("identity"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let store = home.join("store.sqlite");
    std::fs::write(&store, b"").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o600)).unwrap();
    secagg(&home, &["init", "--role", "node", "--id", "node_again"]).ok();
    secagg(&home, &["certificate", "list"]).ok();
    assert!(std::fs::metadata(&store).unwrap().len() > 0);
}
