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
