//! `secagg certificate register|list|show|delete` against every fixture, with real stores.

#[path = "../../tests/support/mod.rs"]
mod support;

use secagg_core::ErrorKind;
use support::*;

/// Words the error must contain for each refusal slug of `fixtures/manifest.json`.
fn expected_error(slug: &str) -> &'static [&'static str] {
    match slug {
        "expired" => &["certificate expired on"],
        "not_yet_valid" => &["certificate is not valid before"],
        "not_v3" => &["X.509 version 1, secagg needs version 3"],
        "multiple_certificates" => &["holds 2 certificates"],
        "private_key" => &["holds a private key"],
        "truncated" => &["truncated"],
        "not_a_certificate" => &[
            "not an X.509 certificate",
            "neither a PEM nor a DER",
            "no PEM block found",
        ],
        "empty" => &["the file is empty"],
        "weak_key" => &["1024-bit RSA key, the minimum is 2048 bits"],
        "unsupported_key_type" => &["key type DSA is not supported"],
        "bad_signature" => &["signature does not verify"],
        other => panic!("unknown slug {other}"),
    }
}

#[test]
fn every_fixture_is_accepted_or_refused_as_the_manifest_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in manifest() {
        let file = entry["file"].as_str().unwrap();
        let slug = entry["expected"].as_str().unwrap();
        let home = node_home(dir.path(), &format!("h{checked}"));
        let party = entry["party_id"]
            .as_str()
            .unwrap_or("node_unnamed")
            .to_owned();
        let path = fixtures().join(file);
        let before = peers_json(&home);
        let r = secagg(
            &home,
            &[
                "certificate",
                "register",
                "-pk",
                path.to_str().unwrap(),
                "-pi",
                &party,
                "--ip",
                "10.221.0.3",
                "--port",
                "14002",
                "--format",
                "json",
            ],
        );
        if slug == "accepted" {
            r.ok();
            let j = r.json();
            assert_eq!(j["action"], "created", "{file}");
            assert_eq!(j["fingerprint"], entry["sha256_fingerprint"], "{file}");
            let peers = peers_json(&home);
            let list = peers["peers"].as_array().unwrap();
            assert_eq!(list.len(), 1, "{file}");
            assert_eq!(list[0]["party_id"], party.as_str());
            assert_eq!(list[0]["key_type"], entry["key_type"], "{file}");
            assert_eq!(list[0]["status"], "valid");
        } else {
            assert_eq!(
                r.code, 3,
                "{file}: expected invalid input, got {}: {}",
                r.code, r.stderr
            );
            let needles = expected_error(slug);
            assert!(
                needles.iter().any(|n| r.stderr.contains(n)),
                "{file} ({slug}): stderr lacks {needles:?}: {}",
                r.stderr
            );
            assert!(
                r.stderr
                    .contains(&format!("while reading certificate `{}`", path.display()))
                    || !r.stderr.contains("while reading"),
                "{}",
                r.stderr
            );
            assert_eq!(
                peers_json(&home),
                before,
                "{file}: store changed by a refused registration"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
}

#[test]
fn refusals_leave_the_store_unchanged_with_specific_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let (p256, p256_id, p256_fp) = fixture("certs/ecdsa_p256.pem");
    let (ed, ed_id, _) = fixture("certs/ed25519.pem");
    let (om, _, _) = fixture("certs/o_mismatch.pem");
    let (p256, p256_id, p256_fp) = (
        p256.to_str().unwrap().to_owned(),
        p256_id.unwrap(),
        p256_fp.unwrap(),
    );
    let reg = |args: &[&str]| {
        let mut a = vec!["certificate", "register"];
        a.extend_from_slice(args);
        secagg(&home, &a)
    };
    reg(&[
        "-pk",
        &p256,
        "-pi",
        &p256_id,
        "--ip",
        "10.221.0.3",
        "--port",
        "14002",
        "--expect-fingerprint",
        &p256_fp,
    ])
    .ok();
    let (no_o, _, _) = fixture("certs/no_o.pem");
    let no_o = no_o.to_str().unwrap().to_owned();
    reg(&[
        "-pk",
        &no_o,
        "-pi",
        "node_noo",
        "--ip",
        "10.221.0.5",
        "--port",
        "14005",
    ])
    .ok();
    let before = peers_json(&home);
    let ed_path = ed.to_str().unwrap();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec![
                "-pk",
                &p256,
                "-pi",
                &p256_id,
                "--ip",
                "10.221.0.3",
                "--port",
                "14002",
            ],
            5,
            "is already registered",
        ),
        (
            vec![
                "-pk",
                &no_o,
                "-pi",
                "node_other",
                "--ip",
                "10.221.0.3",
                "--port",
                "14002",
            ],
            5,
            "is already registered for `node_noo`",
        ),
        (
            vec![
                "-pk",
                &p256,
                "-pi",
                "node_other",
                "--ip",
                "10.221.0.3",
                "--port",
                "14002",
            ],
            3,
            "belongs to",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                ed_id.as_deref().unwrap(),
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
                "--expect-fingerprint",
                &p256_fp,
            ],
            8,
            "fingerprint is not the expected one",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                ed_id.as_deref().unwrap(),
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
                "--expect-fingerprint",
                "SHA256:12",
            ],
            3,
            "is not a SHA-256 fingerprint",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                "node_me",
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
            ],
            3,
            "own id",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                "hospital",
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
            ],
            3,
            "does not start with",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                ed_id.as_deref().unwrap(),
                "--ip",
                "10.221.0.4",
                "--port",
                "0",
            ],
            3,
            "port 0 is out of range",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                ed_id.as_deref().unwrap(),
                "--ip",
                "10.221.0.4",
                "--port",
                "65536",
            ],
            3,
            "port 65536 is out of range",
        ),
        (
            vec![
                "-pk",
                ed_path,
                "-pi",
                ed_id.as_deref().unwrap(),
                "--ip",
                "not an ip!",
                "--port",
                "14003",
            ],
            3,
            "neither an IP address nor a host name",
        ),
        (
            vec![
                "-pk",
                om.to_str().unwrap(),
                "-pi",
                "node_x",
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
            ],
            3,
            "belongs to `node_someone-else`",
        ),
        (
            vec![
                "-pk",
                "/nonexistent/cert.pem",
                "-pi",
                "node_x",
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
            ],
            4,
            "does not exist",
        ),
        (
            vec![
                "-pk",
                "/tmp",
                "-pi",
                "node_x",
                "--ip",
                "10.221.0.4",
                "--port",
                "14003",
            ],
            3,
            "is not a regular file",
        ),
    ];
    for (args, code, needle) in cases {
        reg(&args).fails_with(code, needle);
        assert_eq!(peers_json(&home), before, "store changed by {args:?}");
    }
    // Own certificate under another id.
    let own = home.join("identity/cert.pem");
    reg(&[
        "-pk",
        own.to_str().unwrap(),
        "-pi",
        "node_mine",
        "--ip",
        "10.221.0.4",
        "--port",
        "14003",
    ])
    .fails_with(3, "own certificate");
    // Usage errors: missing options, or both forms at once.
    assert_eq!(
        reg(&["-pk", &p256, "--ip", "1.2.3.4", "--port", "1"]).code,
        2
    );
    assert_eq!(reg(&["--bundle", "x.json", "-pi", "node_a"]).code, 2);
    assert_eq!(
        reg(&["-pk", &p256, "-pi", "node_a", "--ip", "1.2.3.4", "--port", "x"]).code,
        2
    );
    assert_eq!(peers_json(&home), before);
}

#[test]
fn upsert_replaces_certificate_and_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let (ed, _, ed_fp) = fixture("certs/ed25519.pem");
    let (no_o, _, no_o_fp) = fixture("certs/no_o.pem");
    let reg = |path: &std::path::Path, ip: &str, upsert: bool| {
        let mut a = vec![
            "certificate",
            "register",
            "--public-key",
            path.to_str().unwrap(),
            "--party-id",
            "node_peer",
            "--ip",
            ip,
            "--port",
            "14009",
            "--format",
            "json",
        ];
        if upsert {
            a.push("--upsert");
        }
        secagg(&home, &a)
    };
    // ed25519.pem names its own party in O=, so use no_o.pem for the id `node_peer`.
    let _ = ed;
    assert_eq!(
        reg(&no_o, "10.0.0.1", false).ok().json()["action"],
        "created"
    );
    assert_eq!(
        reg(&no_o, "10.0.0.1", true).ok().json()["action"],
        "unchanged"
    );
    let j = reg(&no_o, "peer.example.org", true).ok().json();
    assert_eq!(j["action"], "updated");
    let show = secagg(
        &home,
        &["certificate", "show", "node_peer", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(show["ip"], "peer.example.org");
    assert_eq!(show["fingerprint"], no_o_fp.unwrap());
    assert!(show["certificate"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let _ = ed_fp;
}

#[test]
fn der_fedbiomed_rsa_and_ipv6_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let (der, der_id, der_fp) = fixture("certs/ecdsa_p256.der");
    let (rsa, rsa_id, _) = fixture("certs/fedbiomed_rsa2048_researcher.pem");
    secagg(
        &home,
        &[
            "certificate",
            "register",
            "-pk",
            der.to_str().unwrap(),
            "-pi",
            der_id.as_deref().unwrap(),
            "--ip",
            "fd00::3",
            "--port",
            "14002",
        ],
    )
    .ok();
    secagg(
        &home,
        &[
            "certificate",
            "register",
            "-pk",
            rsa.to_str().unwrap(),
            "-pi",
            rsa_id.as_deref().unwrap(),
            "--ip",
            "localhost",
            "--port",
            "14000",
        ],
    )
    .ok();
    let list = peers_json(&home);
    let peers = list["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    let der_row = peers
        .iter()
        .find(|p| p["party_id"] == der_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(der_row["ip"], "fd00::3");
    assert_eq!(der_row["fingerprint"], der_fp.unwrap());
    let rsa_row = peers
        .iter()
        .find(|p| p["party_id"] == rsa_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(rsa_row["component"], "RESEARCHER");
    assert_eq!(rsa_row["key_type"], "rsa2048");
    // show --pem gives back the exact certificate.
    let pem = secagg(
        &home,
        &["certificate", "show", der_id.as_deref().unwrap(), "--pem"],
    );
    pem.ok();
    let expected = std::fs::read_to_string(fixtures().join("certs/ecdsa_p256.pem")).unwrap();
    assert_eq!(pem.stdout.trim(), expected.trim());
    // The human table shows the short fingerprint and status.
    let table = secagg(&home, &["certificate", "list"]);
    table.ok();
    assert!(
        table.stdout.contains("rsa2048")
            && table.stdout.contains("valid")
            && table.stdout.contains("RESEARCHER"),
        "{}",
        table.stdout
    );
}

#[test]
fn bundle_round_trip_and_tampered_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let a = node_home(dir.path(), "a");
    let b = node_home(dir.path(), "b");
    let bundle = dir.path().join("a.json");
    export_bundle(&a, &bundle);
    let fp = secagg(&a, &["identity", "show", "--format", "json"])
        .ok()
        .json()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    // A bundle whose fingerprint was altered is refused, and so is a wrong expected fingerprint.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let other = secagg(&b, &["identity", "show", "--format", "json"])
        .ok()
        .json()["fingerprint"]
        .clone();
    j["fingerprint"] = other.clone();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_string(&j).unwrap()).unwrap();
    secagg(
        &b,
        &["certificate", "register", "--bundle", bad.to_str().unwrap()],
    )
    .fails_with(3, "the bundle is damaged");
    secagg(
        &b,
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
            "--expect-fingerprint",
            other.as_str().unwrap(),
        ],
    )
    .fails_with(8, "fingerprint is not the expected one");
    std::fs::write(&bad, "{\"format\": \"x\"}").unwrap();
    secagg(
        &b,
        &["certificate", "register", "--bundle", bad.to_str().unwrap()],
    )
    .fails_with(3, "not a registration bundle");
    assert_eq!(peers_json(&b)["peers"].as_array().unwrap().len(), 0);
    // The genuine bundle, checked against the fingerprint received out of band.
    let r = secagg(
        &b,
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
            "--expect-fingerprint",
            &fp.to_lowercase(),
        ],
    );
    r.ok();
    assert!(
        r.stdout
            .contains("registered node_a (node) at 10.221.0.9:14001"),
        "{}",
        r.stdout
    );
    assert!(!r.stderr.contains("was not checked"), "{}", r.stderr);
    let peers = peers_json(&b);
    assert_eq!(peers["peers"][0]["fingerprint"], fp.as_str());
    assert!(peers["peers"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("bundle "));
}

#[test]
fn delete_is_non_interactive_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let (p, id, _) = fixture("certs/ecdsa_p384.pem");
    let id = id.unwrap();
    secagg(
        &home,
        &[
            "certificate",
            "register",
            "-pk",
            p.to_str().unwrap(),
            "-pi",
            &id,
            "--ip",
            "10.0.0.2",
            "--port",
            "14002",
        ],
    )
    .ok();
    secagg(&home, &["certificate", "delete", "node_unknown"])
        .fails_with(4, "party `node_unknown` is not registered");
    let r = secagg(&home, &["certificate", "delete", &id]);
    r.ok();
    assert!(r.stdout.contains(&format!("deleted {id}")));
    assert_eq!(peers_json(&home)["peers"].as_array().unwrap().len(), 0);
    secagg(&home, &["certificate", "show", &id]).fails_as(ErrorKind::NotFound);
}

/// Issue 23, item 5: fingerprints were 95 characters to read by phone, and a mismatch printed
/// both in full with nothing pointing at the difference. `identity show` gives a 43-character
/// form to read out, `--expect-fingerprint` takes it (and every other form), and a mismatch
/// shows where the two differ, in the form that was given.
#[test]
fn a_short_fingerprint_is_read_out_accepted_and_a_mismatch_points_at_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    secagg(&a, &["init", "--role", "node", "--id", "node_a"]).ok();
    secagg(
        &b,
        &["init", "--role", "researcher", "--id", "researcher_b"],
    )
    .ok();
    let shown = secagg(&a, &["identity", "show", "--format", "json"])
        .ok()
        .json();
    let readable = shown["fingerprint_readable"].as_str().unwrap().to_owned();
    assert!(
        readable.starts_with("SHA256:") && readable.len() == 7 + 43,
        "{readable}"
    );
    let text = secagg(&a, &["identity", "show"]);
    assert!(text.ok().stdout.contains(&readable), "{}", text.stdout);
    let bundle = dir.path().join("a.json");
    secagg(
        &a,
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
            "-o",
            bundle.to_str().unwrap(),
        ],
    )
    .ok();
    // One character changed: refused, with a marker under it.
    let mut wrong: Vec<char> = readable.chars().collect();
    let at = 20;
    wrong[at] = if wrong[at] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    let refused = secagg(
        &b,
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
            "--expect-fingerprint",
            &wrong,
        ],
    );
    refused.fails_with(8, "fingerprint is not the expected one");
    assert!(
        refused.stderr.contains(&format!("expected  {wrong}")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!("actual    {readable}")),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&format!(
            "{}^ first difference at character {}",
            " ".repeat(at),
            at + 1
        )),
        "{}",
        refused.stderr
    );
    // The readable form itself: registered.
    secagg(
        &b,
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
            "--expect-fingerprint",
            &readable,
        ],
    )
    .ok();
}

/// Issue 23, item 4: a display name per party (`init --name`), carried in bundles and rosters,
/// shown in the other parties' lists beside the id, never used for identity.
#[test]
fn display_names_travel_in_bundles_and_rosters_and_show_in_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (lab, lyon, nice) = (
        dir.path().join("lab"),
        dir.path().join("lyon"),
        dir.path().join("nice"),
    );
    secagg(
        &lab,
        &[
            "init",
            "--role",
            "researcher",
            "--id",
            "researcher_lab",
            "--name",
            "Inria lab",
        ],
    )
    .ok();
    secagg(
        &lyon,
        &[
            "init",
            "--role",
            "node",
            "--id",
            "node_lyon",
            "--name",
            "  CHU Lyon ",
        ],
    )
    .ok();
    // Two parties may share a name: it is not an identity.
    secagg(
        &nice,
        &[
            "init",
            "--role",
            "node",
            "--id",
            "node_nice",
            "--name",
            "CHU Lyon",
        ],
    )
    .ok();
    let shown = secagg(&lyon, &["identity", "show", "--format", "json"])
        .ok()
        .json();
    assert_eq!(shown["name"], "CHU Lyon", "trimmed");
    assert_eq!(shown["party_id"], "node_lyon");
    // A name with a control character is refused, and nothing is created.
    let bad = dir.path().join("bad");
    secagg(&bad, &["init", "--role", "node", "--name", "CHU\u{1b}[31m"])
        .fails_with(3, "control character");
    assert!(!bad.join("identity").exists());

    let bundle = |home: &std::path::Path, name: &str| {
        let out = home.with_file_name(name);
        secagg(
            home,
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
        out
    };
    let (b_lab, b_lyon, b_nice) = (
        bundle(&lab, "lab.json"),
        bundle(&lyon, "lyon.json"),
        bundle(&nice, "nice.json"),
    );
    let fp = |home: &std::path::Path| {
        secagg(home, &["identity", "show", "--format", "json"])
            .ok()
            .json()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (fp_lab, fp_lyon, fp_nice) = (fp(&lab), fp(&lyon), fp(&nice));
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b_lyon).unwrap()).unwrap();
    assert_eq!(text["name"], "CHU Lyon");
    secagg(
        &lab,
        &[
            "certificate",
            "register",
            "--bundle",
            b_lyon.to_str().unwrap(),
            b_nice.to_str().unwrap(),
            "--expect-fingerprint",
            &format!("node_lyon={fp_lyon}"),
            "--expect-fingerprint",
            &format!("node_nice={fp_nice}"),
        ],
    )
    .ok();
    // Read back by fresh processes: JSON and the text table.
    let listed = secagg(&lab, &["certificate", "list", "--format", "json"])
        .ok()
        .json();
    let names: Vec<(String, String)> = listed["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["party_id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("node_lyon".to_owned(), "CHU Lyon".to_owned()),
            ("node_nice".to_owned(), "CHU Lyon".to_owned())
        ]
    );
    let table = secagg(&lab, &["certificate", "list"]);
    assert!(table.ok().stdout.contains("CHU Lyon"), "{}", table.stdout);
    // Through a roster: node_nice learns node_lyon's name, and the researcher's from its bundle.
    secagg(
        &nice,
        &[
            "certificate",
            "register",
            "--bundle",
            b_lab.to_str().unwrap(),
            "--expect-fingerprint",
            &fp_lab,
        ],
    )
    .ok();
    let roster = dir.path().join("roster.json");
    secagg(&lab, &["roster", "export", "-o", roster.to_str().unwrap()]).ok();
    secagg(
        &nice,
        &["roster", "import", roster.to_str().unwrap(), "--yes"],
    )
    .ok();
    let at_nice = secagg(&nice, &["certificate", "list", "--format", "json"])
        .ok()
        .json();
    let name_of = |id: &str| {
        at_nice["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["party_id"] == id)
            .map(|p| p["name"].clone())
            .unwrap()
    };
    assert_eq!(name_of("node_lyon"), "CHU Lyon");
    assert_eq!(name_of("researcher_lab"), "Inria lab");
}
