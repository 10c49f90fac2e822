//! End to end: Joye–Libert aggregation with keys negotiated by real `secagg negotiate` processes.
//! Each node encrypts its parameters (a JSON array, a NumPy `.npy` file) with `secagg aggregate
//! encrypt`; the researcher decrypts the average from the files with `secagg aggregate decrypt`,
//! and the result equals the average of the inputs within the quantisation error. Then every
//! mistake an operator can make with the files is refused by name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secagg_core::demo::{self, Federation};
use secagg_core::ErrorKind;
use support::{negotiate, run_parties, secagg};

mod support;

fn negotiated(nodes: usize) -> (tempfile::TempDir, Federation, String) {
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), nodes).unwrap();
    let session = secagg_core::session::new_session_id();
    let ids = fed.party_ids();
    let commands: Vec<_> = fed
        .parties
        .iter()
        .map(|p| negotiate(p.home.root(), &session, &ids).timeout(Duration::from_secs(30)))
        .collect();
    for exit in run_parties(&commands, Duration::from_secs(60)) {
        assert!(exit.success(), "{:?}", exit.failure());
    }
    (dir, fed, session)
}

/// A `.npy` file of float64 values, as numpy.save writes it.
fn npy(path: &Path, values: &[f64]) {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

fn encrypt(home: &Path, session: &str, round: &str, params: &Path, out: &Path) -> support::Run {
    secagg(
        home,
        &[
            "aggregate",
            "encrypt",
            "--session",
            session,
            "--round",
            round,
            "--params",
            params.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
}

fn decrypt(home: &Path, session: &str, round: &str, files: &[&PathBuf]) -> support::Run {
    decrypt_with(home, session, round, &[], files)
}

fn decrypt_with(
    home: &Path,
    session: &str,
    round: &str,
    options: &[&str],
    files: &[&PathBuf],
) -> support::Run {
    let mut args = vec![
        "aggregate",
        "decrypt",
        "--session",
        session,
        "--round",
        round,
        "--format",
        "json",
    ];
    args.extend(options);
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    secagg(home, &args)
}

#[test]
fn nodes_encrypt_and_the_researcher_decrypts_only_the_average() {
    let (dir, fed, session) = negotiated(2);
    let d = dir.path();
    let a: Vec<f64> = (0..150).map(|i| ((i as f64) * 0.37).sin() * 2.5).collect();
    let b: Vec<f64> = (0..150).map(|i| ((i as f64) * 0.11).cos() - 0.5).collect();
    std::fs::write(d.join("a.json"), serde_json::to_string(&a).unwrap()).unwrap();
    npy(&d.join("b.npy"), &b);
    let (fa, fb) = (d.join("ct-a.json"), d.join("ct-b.json"));
    let (node1, node2, researcher) = (
        fed.parties[1].home.root(),
        fed.parties[2].home.root(),
        fed.parties[0].home.root(),
    );
    encrypt(node1, &session, "7", &d.join("a.json"), &fa).ok();
    encrypt(node2, &session, "7", &d.join("b.npy"), &fb).ok();
    let ct: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fa).unwrap()).unwrap();
    assert_eq!(ct["format"], "secagg-ciphertexts");
    assert_eq!(ct["count"], 150);
    assert_eq!(ct["nodes"], 2);
    assert_eq!(ct["party_id"], fed.party_ids()[1].as_str());
    assert_eq!(ct["ciphertexts"].as_array().unwrap().len(), 3); // 64 values per ciphertext
                                                                // The file holds ciphertexts, not the parameters.
    assert!(!std::fs::read_to_string(&fa).unwrap().contains("0.37"));

    let out = decrypt(researcher, &session, "7", &[&fa, &fb]).ok().json();
    let avg: Vec<f64> = out["average"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(avg.len(), 150);
    assert_eq!(out["nodes"], 2);
    // Quantisation step: 2c / TR = 6e-4 per value, averaged.
    for (i, v) in avg.iter().enumerate() {
        let want = (a[i] + b[i]) / 2.0;
        assert!((v - want).abs() <= 7e-4, "parameter {i}: {v} vs {want}");
    }
    // Text output: one value per line.
    let text = secagg(
        researcher,
        &[
            "aggregate",
            "decrypt",
            "--session",
            &session,
            "--round",
            "7",
            fa.to_str().unwrap(),
            fb.to_str().unwrap(),
        ],
    );
    assert_eq!(text.ok().stdout.lines().count(), 150);
}

#[test]
fn wrong_files_rounds_roles_and_inputs_are_refused_by_name() {
    let (dir, fed, session) = negotiated(2);
    let d = dir.path();
    let params = d.join("p.json");
    std::fs::write(&params, "[0.5, -0.25, 1.0]").unwrap();
    let (node1, node2, researcher) = (
        fed.parties[1].home.root(),
        fed.parties[2].home.root(),
        fed.parties[0].home.root(),
    );
    let (f1, f2, f2r2) = (d.join("1.json"), d.join("2.json"), d.join("2-r2.json"));
    encrypt(node1, &session, "1", &params, &f1).ok();
    encrypt(node2, &session, "1", &params, &f2).ok();
    encrypt(node2, &session, "2", &params, &f2r2).ok();

    // A missing node: the masks cannot cancel.
    decrypt(researcher, &session, "1", &[&f1]).fails_with(3, "no ciphertext file from");
    // A file of another round.
    decrypt(researcher, &session, "1", &[&f1, &f2r2])
        .fails_with(3, "it is from round 2, not round 1");
    // The same node twice.
    decrypt(researcher, &session, "1", &[&f1, &f1]).fails_with(3, "a second file from");
    // Another session.
    let other = secagg_core::session::new_session_id();
    decrypt(researcher, &other, "1", &[&f1, &f2]).fails_as(ErrorKind::NotFound);
    let mut foreign: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f2).unwrap()).unwrap();
    foreign["session_id"] = serde_json::json!(other);
    let ff = d.join("foreign.json");
    std::fs::write(&ff, foreign.to_string()).unwrap();
    decrypt(researcher, &session, "1", &[&f1, &ff])
        .fails_with(3, &format!("it is from session {other}"));
    // Not a ciphertext file.
    decrypt(researcher, &session, "1", &[&f1, &params])
        .fails_with(3, "is not a secagg ciphertext file");
    // Roles: a node cannot decrypt, the researcher does not encrypt.
    decrypt(node1, &session, "1", &[&f1, &f2])
        .fails_with(3, "only the researcher holds the server key");
    encrypt(researcher, &session, "1", &params, &d.join("r.json"))
        .fails_with(3, "nodes encrypt, the researcher decrypts");
    // Inputs: non-finite values and garbage are named; nothing is written.
    let nan = d.join("nan.npy");
    npy(&nan, &[0.5, f64::NAN]);
    let out = d.join("never.json");
    encrypt(node1, &session, "1", &nan, &out).fails_with(3, "parameter 1 is NaN");
    npy(&nan, &[f64::NEG_INFINITY]);
    encrypt(node1, &session, "1", &nan, &out).fails_with(3, "parameter 0 is -inf");
    let bad = d.join("bad.json");
    std::fs::write(&bad, "[0.5, \"x\"]").unwrap();
    encrypt(node1, &session, "1", &bad, &out).fails_with(3, "element 1 is not a number");
    std::fs::write(&bad, "[0.5, 1e999]").unwrap();
    encrypt(node1, &session, "1", &bad, &out).fails_with(3, "number out of range");
    assert!(!out.exists());
    // An existing output file is not overwritten without --force.
    encrypt(node1, &session, "1", &params, &f1).fails_as(ErrorKind::Conflict);
}

/// A ciphertext file as JSON, to edit as an attacker or a careless operator would.
fn edited(path: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(to, v.to_string()).unwrap();
    to.to_path_buf()
}

fn add_one(v: &mut serde_json::Value, k: usize) {
    let c: num_bigint::BigUint = v["ciphertexts"][k].as_str().unwrap().parse().unwrap();
    v["ciphertexts"][k] = serde_json::json!((c + 1u32).to_string());
}

fn unsigned(v: &mut serde_json::Value) {
    v.as_object_mut().unwrap().remove("signature");
}

fn decrypt_allowing_unsigned(home: &Path, session: &str, files: &[&PathBuf]) -> support::Run {
    decrypt_with(home, session, "1", &["--allow-unsigned"], files)
}

/// Regression (issue 20, item 2): each of these files decrypted to noise, printed as an average
/// (values like 9.06 with clipping range 3) with exit 0. Now a file whose signature does not
/// verify is refused (8), an unsigned one too unless accepted explicitly, a ciphertext out of
/// range or of the wrong shape is refused before parsing (3), and noise is never a result (11).
/// No refusal prints anything on stdout.
#[test]
fn ciphertext_files_that_do_not_verify_never_give_an_average() {
    let (dir, fed, session) = negotiated(2);
    let d = dir.path();
    let params = d.join("p.json");
    std::fs::write(&params, "[0.5, -0.25, 1.0, 2.0]").unwrap();
    let (node1, node2, researcher) = (
        fed.parties[1].home.root(),
        fed.parties[2].home.root(),
        fed.parties[0].home.root(),
    );
    let ids = fed.party_ids();
    let (f1, f2, f2r2) = (d.join("1.json"), d.join("2.json"), d.join("2-r2.json"));
    encrypt(node1, &session, "1", &params, &f1).ok();
    encrypt(node2, &session, "1", &params, &f2).ok();
    encrypt(node2, &session, "2", &params, &f2r2).ok();
    let refused = |run: &support::Run, code: i32, needle: &str| {
        run.fails_with(code, needle);
        assert!(run.stdout.is_empty(), "a refusal printed: {}", run.stdout);
    };
    let e = |name: &str| d.join(name);

    // Signed files that were changed: refused as unauthenticated, with or without
    // --allow-unsigned.
    let relabelled = edited(&f1, &e("relabelled.json"), |v| {
        v["party_id"] = serde_json::json!(ids[2].as_str())
    });
    let other_round = edited(&f2r2, &e("other-round.json"), |v| v["round"] = 1.into());
    let altered = edited(&f2, &e("altered.json"), |v| add_one(v, 0));
    for (file, partner) in [(&relabelled, &f1), (&other_round, &f1), (&altered, &f1)] {
        let run = decrypt(researcher, &session, "1", &[partner, file]);
        refused(
            &run,
            8,
            "the ciphertext file's signature does not verify with the certificate registered for",
        );
        refused(
            &decrypt_allowing_unsigned(researcher, &session, &[partner, file]),
            8,
            "does not verify",
        );
    }
    // Unsigned: refused unless accepted, and then marked unauthenticated.
    let bare = edited(&f1, &e("bare.json"), unsigned);
    let run = decrypt(researcher, &session, "1", &[&bare, &f2]);
    refused(&run, 8, "is not signed");
    refused(&run, 8, "--allow-unsigned");
    let run = decrypt_allowing_unsigned(researcher, &session, &[&bare, &f2]);
    let out = run.ok().json();
    assert_eq!(out["authenticated"], false);
    assert_eq!(
        out["unsigned_files_from"],
        serde_json::json!([ids[1].as_str()])
    );
    assert!(
        run.stderr.contains("UNAUTHENTICATED result"),
        "{}",
        run.stderr
    );
    let signed = decrypt(researcher, &session, "1", &[&f1, &f2]).ok().json();
    assert_eq!(signed["authenticated"], true);
    assert_eq!(signed["average"], out["average"]);

    // Unsigned and changed: the bounds and the decryption's own check refuse it.
    let n2 = {
        let n = secagg_core::aggregate::Biprime::default_biprime0()
            .n()
            .clone();
        &n * &n
    };
    let digits = n2.to_string().len();
    let bare_bad = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        edited(&f1, &e(name), |v| {
            unsigned(v);
            edit(v)
        })
    };
    for (name, edit, code, needle) in [
        (
            "plus-one.json",
            &(|v: &mut serde_json::Value| add_one(v, 0)) as &dyn Fn(&mut serde_json::Value),
            11,
            "round 1 does not decrypt to an average",
        ),
        (
            "zero.json",
            &|v| v["ciphertexts"][0] = "0".into(),
            3,
            "ciphertext 0 is 0",
        ),
        (
            "n2.json",
            &|v| v["ciphertexts"][0] = n2.to_string().into(),
            3,
            "ciphertext 0 is not below N²",
        ),
        (
            "huge.json",
            &|v| v["ciphertexts"][0] = "7".repeat(5_000_000).into(),
            3,
            "ciphertext 0 has 5000000 digits",
        ),
        (
            "leading-zero.json",
            &|v| v["ciphertexts"][0] = format!("0{}", v["ciphertexts"][0].as_str().unwrap()).into(),
            3,
            "leading zero",
        ),
        (
            "count.json",
            &|v| v["count"] = 200.into(),
            3,
            "200 parameters packed for 2 nodes make 4 ciphertexts, the file holds 1",
        ),
        (
            "empty.json",
            &|v| v["count"] = 0.into(),
            3,
            "it holds no parameters",
        ),
    ] {
        let file = bare_bad(name, edit);
        refused(
            &decrypt_allowing_unsigned(researcher, &session, &[&file, &f2]),
            code,
            needle,
        );
    }
    assert_eq!(digits, 617, "N² − 1 of the default biprime has 617 digits");

    // Not UTF-8: invalid input, not a storage error.
    let latin1 = e("latin1.json");
    let mut bytes = std::fs::read(&f1).unwrap();
    bytes.insert(1, 0xe9);
    std::fs::write(&latin1, bytes).unwrap();
    refused(
        &decrypt(researcher, &session, "1", &[&latin1, &f2]),
        3,
        "is not a secagg ciphertext file",
    );

    // Empty parameters are refused when encrypting; nothing is written.
    let out = e("never.json");
    std::fs::write(e("empty-params.json"), "[]").unwrap();
    encrypt(node1, &session, "1", &e("empty-params.json"), &out)
        .fails_with(3, "no parameters to encrypt");
    npy(&e("empty.npy"), &[]);
    encrypt(node1, &session, "1", &e("empty.npy"), &out).fails_with(3, "no parameters to encrypt");
    assert!(!out.exists());
}

#[test]
fn an_unconfirmed_key_is_not_used_to_encrypt() {
    let (_dir, fed, session) = negotiated(2);
    let node1 = fed.parties[1].home.root();
    // Mark the key unconfirmed as a node whose confirmation got lost would have it.
    let db = node1.join("store.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE contexts SET state = 'unconfirmed' WHERE session_id = ?1",
        [&session],
    )
    .unwrap();
    drop(conn);
    let params = node1.parent().unwrap().join("p.json");
    std::fs::write(&params, "[0.5]").unwrap();
    let out = node1.parent().unwrap().join("ct.json");
    encrypt(node1, &session, "1", &params, &out)
        .fails_with(3, "is unconfirmed")
        .fails_with(3, "secagg context confirm");
    assert!(!out.exists());
}

#[test]
fn demo_aggregate_runs_a_round_on_the_negotiated_keys() {
    let out = support::secagg_command()
        .args([
            "demo",
            "--nodes",
            "3",
            "--aggregate",
            "--parameters",
            "300",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["verified"], true);
    let g = &j["aggregation"];
    assert_eq!(g["verified"], true);
    assert_eq!(g["parameters"], 300);
    assert_eq!(g["nodes"], 3);
    assert!(g["max_error"].as_f64().unwrap() <= 6e-4);
    // Without --aggregate there is no aggregation section; --parameters alone is a usage error.
    let plain = support::secagg_command()
        .args(["demo", "--nodes", "2", "--format", "json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap();
    assert!(j.get("aggregation").is_none());
    let usage = support::secagg_command()
        .args(["demo", "--parameters", "5"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

/// Regression (issue 23, item 13): `encrypt` clipped out-of-range values silently (100 → 3),
/// and `decrypt -o avg.json` wrote one number per line into a `.json` file. Now the clipping
/// is reported with its count and range, and the format follows the file's extension (or a
/// contradicting `--format text` is refused, writing nothing).
#[test]
fn clipping_is_reported_and_the_output_format_follows_a_json_file() {
    let (dir, fed, session) = negotiated(2);
    let d = dir.path();
    let (node1, node2, researcher) = (
        fed.parties[1].home.root(),
        fed.parties[2].home.root(),
        fed.parties[0].home.root(),
    );
    std::fs::write(d.join("p1.json"), "[100, 0.5, -4.25]").unwrap();
    std::fs::write(d.join("p2.json"), "[1, 0.5, -1]").unwrap();
    let (f1, f2) = (d.join("1.json"), d.join("2.json"));
    let run = encrypt(node1, &session, "1", &d.join("p1.json"), &f1);
    run.ok();
    assert!(
        run.stderr
            .contains("2 of 3 parameters are outside the clipping range [-3, 3]")
            && run.stderr.contains("the largest magnitude is 100"),
        "{}",
        run.stderr
    );
    let run = encrypt(node2, &session, "1", &d.join("p2.json"), &f2);
    run.ok();
    assert!(!run.stderr.contains("clipping range"), "{}", run.stderr);

    let decrypt_to = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "aggregate",
            "decrypt",
            "--session",
            &session,
            "--round",
            "1",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        args.extend([f1.to_str().unwrap(), f2.to_str().unwrap()]);
        secagg(researcher, &args)
    };
    let json = d.join("avg.json");
    decrypt_to(&json, &[]).ok();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["average"].as_array().unwrap().len(), 3);
    assert!(
        (v["average"][0].as_f64().unwrap() - 2.0).abs() < 1e-3,
        "{v}"
    ); // (3 + 1) / 2
    let refused = d.join("refused.json");
    decrypt_to(&refused, &["--format", "text"]).fails_with(3, "a .json file");
    assert!(!refused.exists());
    let txt = d.join("avg.txt");
    decrypt_to(&txt, &[]).ok();
    assert_eq!(std::fs::read_to_string(&txt).unwrap().lines().count(), 3);
}

/// Issue 22, item 3: Joye–Libert the v6 way on secagg's negotiated keys: each node encodes as
/// Fed-BioMed v6 (T = 8192, its weight multiplied in), the researcher reads the profile from the
/// signed files and gets the weighted average; a mix of encodings, and a weight with v4's, are
/// refused.
#[test]
fn jl_with_fedbiomed_v6_encoding_gives_the_weighted_average() {
    let (dir, fed, session) = negotiated(3);
    let d = dir.path();
    let inputs: Vec<Vec<f64>> = (1..=3)
        .map(|n| {
            (0..40)
                .map(|i| ((i * n) as f64 * 0.3).sin() * 2.0)
                .collect()
        })
        .collect();
    let weights = [5u64, 17, 40];
    let mut files = Vec::new();
    for (i, (x, w)) in inputs.iter().zip(weights).enumerate() {
        let params = d.join(format!("v6-{i}.json"));
        std::fs::write(&params, serde_json::to_string(x).unwrap()).unwrap();
        let out = d.join(format!("v6-{i}.ct.json"));
        let w = w.to_string();
        secagg(
            fed.parties[i + 1].home.root(),
            &[
                "aggregate",
                "encrypt",
                "--session",
                &session,
                "--round",
                "3",
                "--params",
                params.to_str().unwrap(),
                "--profile",
                "fedbiomed-v6",
                "--weight",
                &w,
                "-o",
                out.to_str().unwrap(),
            ],
        )
        .ok();
        files.push(out);
    }
    let refs: Vec<&PathBuf> = files.iter().collect();
    let avg = decrypt(fed.parties[0].home.root(), &session, "3", &refs)
        .ok()
        .json();
    assert_eq!(avg["profile"], "fedbiomed-v6", "{avg}");
    assert_eq!(avg["total_weight"], 62);
    let total: u64 = weights.iter().sum();
    for (k, got) in avg["average"].as_array().unwrap().iter().enumerate() {
        let want: f64 = inputs
            .iter()
            .zip(weights)
            .map(|(x, w)| x[k] * w as f64)
            .sum::<f64>()
            / total as f64;
        assert!(
            (got.as_f64().unwrap() - want).abs() < 2.0 * 6.0 / 8191.0,
            "{k}: {avg}"
        );
    }
    // A v4 file among v6 ones: refused by name.
    let v4 = d.join("v4.ct.json");
    let params = d.join("v6-0.json");
    encrypt(fed.parties[1].home.root(), &session, "3", &params, &v4).ok();
    decrypt(
        fed.parties[0].home.root(),
        &session,
        "3",
        &[&v4, &files[1], &files[2]],
    )
    .fails_with(3, "every node must encrypt with the same --profile");
    // A weight with v4's encoding, and an unknown profile: refused before anything is read.
    secagg(
        fed.parties[1].home.root(),
        &[
            "aggregate",
            "encrypt",
            "--session",
            &session,
            "--round",
            "4",
            "--params",
            params.to_str().unwrap(),
            "--weight",
            "3",
        ],
    )
    .fails_with(3, "fedbiomed-v6");
    secagg(
        fed.parties[1].home.root(),
        &[
            "aggregate",
            "encrypt",
            "--session",
            &session,
            "--round",
            "4",
            "--params",
            params.to_str().unwrap(),
            "--profile",
            "fedbiomed-v5",
        ],
    )
    .fails_with(3, "unknown Joye–Libert profile");
    // The weight is signed: a file whose weight was raised does not verify.
    let mut raised: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    raised["weight"] = serde_json::json!(6);
    let raised_path = d.join("raised.json");
    std::fs::write(&raised_path, raised.to_string()).unwrap();
    decrypt(
        fed.parties[0].home.root(),
        &session,
        "3",
        &[&raised_path, &files[1], &files[2]],
    )
    .fails_as(ErrorKind::Authentication);
}
