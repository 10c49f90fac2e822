//! Ids people can type (issue 23, item 4): `session new` makes a session id, and lookups take a
//! unique prefix of a stored session or registered party id, as git and docker do; an ambiguous
//! one is refused (exit 3) listing the candidates, and nothing is picked silently.

use std::process::Command;

#[path = "../../tests/support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_secagg");

fn secagg(home: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--home")
        .arg(home)
        .args(args)
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn session_new_prints_fresh_ids_secagg_takes() {
    let a = Command::new(BIN).args(["session", "new"]).output().unwrap();
    let b = Command::new(BIN)
        .args(["session", "new", "--fedbiomed"])
        .output()
        .unwrap();
    let (a, b) = (
        String::from_utf8(a.stdout).unwrap(),
        String::from_utf8(b.stdout).unwrap(),
    );
    let a = secagg_core::SessionId::parse(a.trim()).unwrap();
    assert!(b.starts_with("secagg_"), "{b}");
    let b = secagg_core::SessionId::parse(b.trim()).unwrap();
    assert_ne!(a, b);
}

#[test]
fn unique_prefixes_find_contexts_and_parties_and_ambiguous_ones_are_refused() {
    let (homes, root) = support::kept_demo(2);
    let researcher = homes[0].as_str();
    let contexts = json(&secagg(
        researcher,
        &["context", "list", "--format", "json"],
    ));
    let session = contexts["contexts"][0]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A session by its first 8 characters.
    let shown = json(&secagg(
        researcher,
        &["context", "show", &session[..8], "--format", "json"],
    ));
    assert_eq!(shown["session_id"], session.as_str());
    // A prefix of nothing stored: not found (exit 4), nothing guessed.
    let other = if session.starts_with("ffff") {
        "eeee"
    } else {
        "ffff"
    };
    assert_eq!(
        secagg(researcher, &["context", "show", other])
            .status
            .code(),
        Some(4)
    );

    // Parties: both nodes start with `node_`: ambiguous, refused with both listed.
    let peers = json(&secagg(
        researcher,
        &["certificate", "list", "--format", "json"],
    ));
    let ids: Vec<String> = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["party_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let ambiguous = secagg(researcher, &["certificate", "show", "node_"]);
    assert_eq!(ambiguous.status.code(), Some(3));
    let text = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        text.contains("ambiguous") && ids.iter().all(|id| text.contains(id.as_str())),
        "{text}"
    );
    // The shortest prefix that tells them apart finds each.
    let distinct = (5..ids[0].len())
        .find(|&n| ids[0][..n] != ids[1][..n])
        .unwrap();
    for id in &ids {
        let shown = json(&secagg(
            researcher,
            &[
                "certificate",
                "show",
                &id[..distinct + 1],
                "--format",
                "json",
            ],
        ));
        assert_eq!(shown["party_id"], id.as_str());
    }
    // Delete by prefix: the right one goes, read back by a fresh process.
    let out = secagg(
        researcher,
        &["certificate", "delete", &ids[1][..distinct + 1], "--yes"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = json(&secagg(
        researcher,
        &["certificate", "list", "--format", "json"],
    ));
    let left: Vec<&str> = left["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["party_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, [ids[0].as_str()]);
    // An unregistered whole id is still "not registered".
    let gone = secagg(researcher, &["certificate", "show", &ids[1]]);
    assert_eq!(
        gone.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    std::fs::remove_dir_all(root).unwrap();
}
