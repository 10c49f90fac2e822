//! LOM contexts through the party agents, every party a real process on loopback: the nodes
//! agree a secret per pair directly between their agents, the researcher holds none and marks
//! the context usable only once every node stored its set; masking and unmasking through the
//! CLI; the refusals a node makes on its own (too few nodes, a party it never registered, the
//! same round twice).

use std::path::Path;

use support::agents::{
    agents, assert_lom_round, context_of, contexts, federation, lom_decrypt, lom_session_run,
    researcher,
};
use support::secagg;

mod support;

#[test]
fn a_lom_context_through_agents_gives_the_weighted_average_and_no_round_twice() {
    let (_dir, fed) = federation(3);
    let _agents = agents(&fed, &[]);
    let session = secagg_core::session::new_session_id();
    let report = lom_session_run(&fed, &session, &["--all"]).ok().json();
    for row in report["parties"].as_array().unwrap() {
        assert_eq!(row["state"], "confirmed", "{report}");
    }
    // Every party's store, read by a fresh process: a confirmed LOM context; no key anywhere.
    for (i, p) in fed.parties.iter().enumerate() {
        let all = contexts(p.home.root());
        let c = context_of(&all, &session).unwrap();
        assert_eq!(c["scheme"], "lom", "{c}");
        assert_eq!(c["state"], "confirmed", "{c}");
        assert_eq!(c["role"], if i == 0 { "researcher" } else { "node" });
        let shown = secagg(
            p.home.root(),
            &[
                "context",
                "show",
                &session,
                "--reveal-key",
                "--format",
                "json",
            ],
        )
        .ok()
        .json();
        assert!(
            shown.get("key").is_none(),
            "a LOM context has no key: {shown}"
        );
    }
    let files = assert_lom_round(&fed, &session, 1);
    // The node recorded the round; a second vector for it is refused and the first stays.
    let node = fed.parties[1].home.root();
    let shown = secagg(node, &["context", "show", &session, "--format", "json"])
        .ok()
        .json();
    assert_eq!(shown["rounds_used"], serde_json::json!([1]), "{shown}");
    let first = std::fs::read(&files[0]).unwrap();
    let params = fed.dir.join("again.json");
    std::fs::write(&params, "[9.0, 9.0, 9.0]").unwrap();
    let again = fed.dir.join("again-masked.json");
    secagg(
        node,
        &[
            "aggregate",
            "encrypt",
            "--scheme",
            "lom",
            "--session",
            &session,
            "--round",
            "1",
            "--params",
            params.to_str().unwrap(),
            "--weight",
            "2",
            "-o",
            again.to_str().unwrap(),
        ],
    )
    .fails_with(5, "was masked before");
    assert!(!again.exists(), "no second masked file");
    assert_eq!(std::fs::read(&files[0]).unwrap(), first);
    // The next round works, and another label of round 1 too (its own stream).
    assert_lom_round(&fed, &session, 2);
    // A file relabelled as another node's is a second file from that node; a file with one
    // word changed does not verify.
    let decrypt = |files: &[&Path]| lom_decrypt(&fed, &session, 1, files, &[], &[]);
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[1]).unwrap()).unwrap();
    let mut relabelled = original.clone();
    relabelled["party_id"] = serde_json::Value::String(fed.parties[1].party_id.clone());
    let relabelled_path = fed.dir.join("relabelled.json");
    std::fs::write(&relabelled_path, relabelled.to_string()).unwrap();
    decrypt(&[&files[0], &relabelled_path, &files[2]]).fails_with(3, "a second file from");
    let mut altered = original;
    altered["values"][0] = serde_json::json!(altered["values"][0].as_u64().unwrap() ^ 1);
    let altered_path = fed.dir.join("altered.json");
    std::fs::write(&altered_path, altered.to_string()).unwrap();
    decrypt(&[&files[0], &altered_path, &files[2]]).fails_with(8, "masked file");
    // The genuine files still give the average.
    decrypt(&[&files[0], &files[1], &files[2]]).ok();
}

#[test]
fn nodes_refuse_a_lom_context_below_their_minimum_and_store_nothing() {
    let (_dir, fed) = federation(2);
    let _agents = agents(&fed, &[]);
    // The researcher's own default refuses first, before asking anyone.
    let session = secagg_core::session::new_session_id();
    lom_session_run(&fed, &session, &["--all"]).fails_with(3, "accepts at least 3");
    // A researcher that lowers its own minimum is refused by every node's.
    let report = lom_session_run(&fed, &session, &["--all", "--min-nodes", "2"]);
    assert_ne!(report.code, 0);
    let json = report.json();
    for row in json["parties"].as_array().unwrap().iter().skip(1) {
        assert_eq!(row["state"], "refused", "{json}");
        assert!(
            row["error"].to_string().contains("accepts at least 3"),
            "{json}"
        );
    }
    for p in &fed.parties {
        assert!(contexts(p.home.root()).is_empty(), "{}", p.party_id);
    }
}

#[test]
fn nodes_refuse_a_lom_party_list_padded_with_a_party_they_never_registered() {
    let (dir, fed) = federation(3);
    let _agents = agents(&fed, &[]);
    // A party only the researcher registered (a dishonest researcher's own "node").
    let sybil = support::node_home(dir.path(), "sybil");
    let bundle = dir.path().join("sybil.json");
    support::export_bundle(&sybil, &bundle);
    secagg(
        researcher(&fed),
        &[
            "certificate",
            "register",
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .ok();
    let session = secagg_core::session::new_session_id();
    let mut nodes: Vec<String> = fed.parties[1..]
        .iter()
        .map(|p| p.party_id.clone())
        .collect();
    nodes.push("node_sybil".into());
    let list = nodes.join(",");
    let report = lom_session_run(&fed, &session, &["--parties", &list]);
    assert_ne!(report.code, 0, "{}", report.stdout);
    let json = report.json();
    for row in json["parties"].as_array().unwrap().iter().skip(1).take(3) {
        assert_eq!(row["state"], "refused", "{json}");
        let e = row["error"].to_string();
        assert!(
            e.contains("never registered") && e.contains("node_sybil"),
            "{json}"
        );
    }
    for p in &fed.parties {
        assert!(contexts(p.home.root()).is_empty(), "{}", p.party_id);
    }
}

/// `secagg demo ARGS` (the demo makes its own homes: no `--home`).
fn demo(args: &[&str]) -> std::process::Output {
    support::secagg_command()
        .arg("demo")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn demo_scheme_lom_sets_up_checks_and_aggregates() {
    let out = demo(&[
        "--scheme",
        "lom",
        "--nodes",
        "3",
        "--aggregate",
        "--parameters",
        "2000",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["scheme"], "lom", "{json}");
    assert_eq!(json["verified"], true, "{json}");
    assert_eq!(json["aggregation"]["verified"], true, "{json}");
    assert_eq!(json["aggregation"]["parameters"], 2000);
    for (args, needle) in [
        (&["--scheme", "lom", "--nodes", "2"][..], "at least 3 nodes"),
        (
            &["--scheme", "lom", "--engine", "mp-spdz"][..],
            "native engine only",
        ),
    ] {
        let out = demo(args);
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle));
    }
}

/// `context delete` of a LOM context at a node erases its pairwise secrets and round records with
/// it, while the node's agent runs: the secret bytes are in no store file afterwards (the store
/// runs with secure_delete), and masking with the context is refused.
#[test]
fn a_deleted_lom_context_leaves_no_secret_in_the_store_files() {
    let (_dir, fed) = federation(3);
    let _agents = agents(&fed, &[]);
    let session = secagg_core::session::new_session_id();
    lom_session_run(&fed, &session, &["--all"]).ok();
    assert_lom_round(&fed, &session, 1);
    let node = fed.parties[1].home.root();
    // The secrets as stored, read by a connection of this test's own.
    let secrets: Vec<Vec<u8>> = {
        let conn = rusqlite::Connection::open_with_flags(
            node.join("store.sqlite"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut st = conn
            .prepare("SELECT secret FROM lom_secrets WHERE session_id = ?1")
            .unwrap();
        st.query_map([&session], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(secrets.len(), 2, "one secret per other node");
    let files = ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"];
    let holding = || -> Vec<&str> {
        files
            .into_iter()
            .filter(|f| {
                std::fs::read(node.join(f)).is_ok_and(|b| {
                    secrets
                        .iter()
                        .any(|s| b.windows(s.len()).any(|w| w == s.as_slice()))
                })
            })
            .collect()
    };
    assert!(!holding().is_empty(), "the search finds the stored secrets");
    secagg(node, &["context", "delete", &session]).ok();
    assert_eq!(
        holding(),
        Vec::<&str>::new(),
        "a deleted secret is still in these files"
    );
    let params = fed.dir.join("after-delete.json");
    std::fs::write(&params, "[0.5]").unwrap();
    secagg(
        node,
        &[
            "aggregate",
            "encrypt",
            "--scheme",
            "lom",
            "--session",
            &session,
            "--round",
            "2",
            "--params",
            params.to_str().unwrap(),
        ],
    )
    .fails_with(4, "no context is stored");
}

/// Two processes masking the same round of one context at the same moment (a retried job, an
/// operator's second terminal): exactly one gets a masked file, the other is refused (exit 5),
/// every time.
#[test]
fn the_same_round_masked_by_two_processes_at_once_gives_exactly_one_file() {
    let (_dir, fed) = federation(3);
    let _agents = agents(&fed, &[]);
    let session = secagg_core::session::new_session_id();
    lom_session_run(&fed, &session, &["--all"]).ok();
    let node = fed.parties[1].home.root();
    let params = fed.dir.join("p.json");
    std::fs::write(&params, "[0.25, -0.5]").unwrap();
    for round in 1..=6 {
        let round = round.to_string();
        let children: Vec<_> = (0..2)
            .map(|k| {
                let out = fed.dir.join(format!("r{round}-{k}.json"));
                support::secagg_command()
                    .arg("--home")
                    .arg(node)
                    .args([
                        "aggregate",
                        "encrypt",
                        "--scheme",
                        "lom",
                        "--session",
                        &session,
                        "--round",
                        &round,
                        "--params",
                        params.to_str().unwrap(),
                        "-o",
                        out.to_str().unwrap(),
                    ])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let codes: Vec<i32> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
            .collect();
        let mut sorted = codes.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 5], "round {round}: {codes:?}");
        let files = (0..2)
            .filter(|k| fed.dir.join(format!("r{round}-{k}.json")).exists())
            .count();
        assert_eq!(files, 1, "round {round}");
    }
}
