//! `secagg certificate import-fedbiomed` with Fed-BioMed v4 TinyDB files.

#[path = "../../tests/support/mod.rs"]
mod support;

use secagg_core::ErrorKind;
use support::*;

fn import(home: &std::path::Path, file: &str, extra: &[&str]) -> Run {
    let p = fixtures().join("fedbiomed").join(file);
    let mut a = vec!["certificate", "import-fedbiomed", p.to_str().unwrap()];
    a.extend_from_slice(extra);
    secagg(home, &a)
}

#[test]
fn imports_all_entries_with_int_and_string_ports() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let r = import(&home, "db_node.json", &["--format", "json"]);
    let j = r.ok().json();
    assert_eq!(j["entries"], 3);
    let imported = j["imported"].as_array().unwrap();
    assert_eq!(
        imported
            .iter()
            .map(|e| e["document_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    let peers = peers_json(&home);
    let peers = peers["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    let db: serde_json::Value = {
        // Read only the Certificates table: the file also holds 2048-bit integers elsewhere.
        let text = std::fs::read_to_string(fixtures().join("fedbiomed/db_node.json")).unwrap();
        let start = text.find("\"Certificates\": ").unwrap() + "\"Certificates\": ".len();
        let mut de = serde_json::Deserializer::from_str(&text[start..]);
        serde::Deserialize::deserialize(&mut de).unwrap()
    };
    for (doc_id, doc) in db.as_object().unwrap() {
        let p = peers
            .iter()
            .find(|p| p["party_id"] == doc["party_id"])
            .unwrap_or_else(|| panic!("doc {doc_id} missing"));
        assert_eq!(p["ip"], doc["ip"]);
        let port = doc["port"]
            .as_u64()
            .or_else(|| doc["port"].as_str().and_then(|s| s.parse().ok()))
            .unwrap();
        assert_eq!(p["port"].as_u64().unwrap(), port);
        assert_eq!(p["component"], doc["component"]);
        assert!(p["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("#{doc_id}")));
    }
    // Again without --upsert: conflict, nothing changes; with --upsert: all unchanged.
    let before = peers_json(&home);
    import(&home, "db_node.json", &[]).fails_with(5, "document 1");
    assert_eq!(peers_json(&home), before);
    let again = import(&home, "db_node.json", &["--upsert", "--format", "json"])
        .ok()
        .json();
    assert!(again["imported"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "unchanged"));
}

#[test]
fn a_bad_entry_refuses_the_whole_file_and_names_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    for (file, code, needle) in [
        ("db_bad_entry.json", 3, "document 2"),
        ("db_bad_entry.json", 3, "certificate expired on"),
        ("db_garbage_entry.json", 3, "document 3"),
        ("db_bad_port.json", 3, "port 70000 is out of range"),
        ("not_json.json", 3, "not a Fed-BioMed TinyDB file"),
    ] {
        import(&home, file, &[]).fails_with(code, needle);
        assert_eq!(
            peers_json(&home)["peers"].as_array().unwrap().len(),
            0,
            "{file} imported something"
        );
    }
    secagg(
        &home,
        &["certificate", "import-fedbiomed", "/nonexistent/db.json"],
    )
    .fails_as(ErrorKind::NotFound);
}

#[test]
fn empty_databases_import_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    for file in ["db_empty.json", "db_no_certificates.json"] {
        let r = import(&home, file, &["--format", "json"]);
        let j = r.ok().json();
        assert_eq!(j["entries"], 0, "{file}");
        let text = import(&home, file, &[]);
        text.ok();
        assert!(
            text.stderr.contains("no certificates to import"),
            "{}",
            text.stderr
        );
    }
}

/// The bytes of every file of the home's store (main file, and WAL when present).
fn store_bytes(home: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("store.sqlite"))
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no store in {}", home.display());
    out
}

/// A failure whose report came first: exit `code`, and `error: …` containing `needle` as the
/// last error line (or JSON error report) on stderr (the notes and warnings of the report precede it).
fn fails_after_report(r: &Run, code: i32, needle: &str) {
    assert_eq!(r.code, code, "stdout: {}\nstderr: {}", r.stdout, r.stderr);
    let err = r
        .stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .map(str::to_owned)
        .or_else(|| r.error().map(|e| e.message))
        .unwrap_or_else(|| panic!("no error line\nstderr: {}", r.stderr));
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

fn doc_ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dry_run_reports_every_document_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let before = store_bytes(&home);
    // All valid: exit 0, every document "new", store unchanged.
    let j = import(&home, "db_node.json", &["--dry-run", "--format", "json"])
        .ok()
        .json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(doc_ids(&j["imported"]), ["1", "2", "3"]);
    assert!(j["imported"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "created" && e["party_id"].is_string()));
    assert_eq!(j["refused"].as_array().unwrap().len(), 0);
    assert_eq!(store_bytes(&home), before);
    assert_eq!(peers_json(&home)["peers"].as_array().unwrap().len(), 0);

    // A bad document: the report names it with its reason, the exit code is the import's.
    let r = import(&home, "db_bad_entry.json", &["--dry-run"]);
    fails_after_report(&r, 3, "document 2");
    assert!(
        r.stdout.contains("document 1 (party researcher_"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(": new,"), "{}", r.stdout);
    assert!(
        r.stdout.contains("document 2 (party node_") && r.stdout.contains("refused: "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("certificate expired on"), "{}", r.stdout);
    assert!(r.stderr.contains("nothing was written"), "{}", r.stderr);
    assert_eq!(store_bytes(&home), before);

    // After a real import: unchanged with --upsert, refused (conflict) without.
    import(&home, "db_node.json", &[]).ok();
    let before = store_bytes(&home);
    let j = import(
        &home,
        "db_node.json",
        &["--dry-run", "--upsert", "--format", "json"],
    )
    .ok()
    .json();
    assert!(j["imported"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"] == "unchanged"));
    let r = import(&home, "db_node.json", &["--dry-run", "--format", "json"]);
    fails_after_report(&r, 5, "already registered");
    let j = r.json();
    assert_eq!(doc_ids(&j["refused"]), ["1", "2", "3"]);
    assert_eq!(j["refused"][0]["kind"], "conflict");
    assert!(j["refused"][0]["hint"]
        .as_str()
        .unwrap()
        .contains("--upsert"));
    assert_eq!(store_bytes(&home), before);
}

#[test]
fn skip_invalid_imports_the_valid_documents_and_lists_the_refused_ones() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let r = import(&home, "db_bad_entry.json", &["--skip-invalid"]);
    r.ok();
    assert!(
        r.stderr.contains("warning: document 2 (party node_")
            && r.stderr.contains("refused: ")
            && r.stderr.contains("certificate expired on"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("imported 2 of 3 entries"), "{}", r.stderr);
    let peers = peers_json(&home);
    let mut sources: Vec<String> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["source"]
                .as_str()
                .unwrap()
                .rsplit('#')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    sources.sort();
    assert_eq!(sources, ["1", "3"]);

    // A garbage document, in JSON.
    let dir2 = tempfile::tempdir().unwrap();
    let home2 = node_home(dir2.path(), "me");
    let j = import(
        &home2,
        "db_garbage_entry.json",
        &["--skip-invalid", "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(doc_ids(&j["imported"]), ["1", "2"]);
    assert_eq!(doc_ids(&j["refused"]), ["3"]);
    assert_eq!(j["refused"][0]["kind"], "invalid_input");
    assert!(!j["refused"][0]["reason"].as_str().unwrap().is_empty());

    // Every document refused: the first refusal's exit code, nothing written, the list printed.
    let before = store_bytes(&home2);
    let r = import(&home2, "db_bad_port.json", &["--skip-invalid"]);
    fails_after_report(&r, 3, "none of the 1 documents could be imported");
    assert!(
        r.stderr.contains("port 70000 is out of range"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("warning: document 1"), "{}", r.stderr);
    assert_eq!(store_bytes(&home2), before);
}

#[test]
fn the_same_party_twice_refuses_both_documents_under_skip_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let text = std::fs::read_to_string(fixtures().join("fedbiomed/db_node.json")).unwrap();
    let start = text.find("\"Certificates\": ").unwrap() + "\"Certificates\": ".len();
    let mut de = serde_json::Deserializer::from_str(&text[start..]);
    let mut certs: serde_json::Map<String, serde_json::Value> =
        serde::Deserialize::deserialize(&mut de).unwrap();
    let mut copy = certs["3"].clone();
    copy["port"] = serde_json::json!(15000);
    certs.insert("4".into(), copy);
    let db = dir.path().join("db_dup.json");
    std::fs::write(
        &db,
        serde_json::json!({ "Certificates": certs }).to_string(),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["certificate", "import-fedbiomed", db.to_str().unwrap()];
        a.extend_from_slice(extra);
        secagg(&home, &a)
    };
    run(&[]).fails_with(5, "document 4 also registers this party");
    assert_eq!(peers_json(&home)["peers"].as_array().unwrap().len(), 0);
    let j = run(&["--skip-invalid", "--format", "json"]).ok().json();
    assert_eq!(doc_ids(&j["imported"]), ["1", "2"]);
    assert_eq!(doc_ids(&j["refused"]), ["3", "4"]);
}

#[test]
fn the_out_of_band_note_is_printed_once_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "me");
    let r = import(&home, "db_node.json", &[]);
    r.ok();
    assert_eq!(r.stderr.matches("out of band").count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("fingerprints of 3 certificates were not checked"),
        "{}",
        r.stderr
    );
    // Nothing new on a second, unchanged import: no note.
    let r = import(&home, "db_node.json", &["--upsert"]);
    r.ok();
    assert!(!r.stderr.contains("out of band"), "{}", r.stderr);
}
