//! Fed-BioMed's custom party ids (issue 14): ids without the `researcher_`/`node_` prefix are
//! refused by default and accepted behind `--allow-custom-id` (`--allow-custom-ids` for a
//! Fed-BioMed store import), with the role stated and checked against Fed-BioMed's rule (a node
//! id starts with `node_`, every other id is a researcher's). Once registered, a custom id works
//! everywhere an id is taken: `certificate show/delete`, `negotiate --parties`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;

use secagg_core::ErrorKind;
use support::*;

fn init(home: &Path, role: &str, id: &str, port: u16, extra: &[&str]) -> Run {
    let port = port.to_string();
    let mut args = vec![
        "init",
        "--role",
        role,
        "--id",
        id,
        "--ip",
        "127.0.0.1",
        "--port",
        &port,
    ];
    args.extend_from_slice(extra);
    secagg(home, &args)
}

fn register_args<'a>(cert: &'a str, id: &'a str, port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "certificate",
        "register",
        "-pk",
        cert,
        "-pi",
        id,
        "--ip",
        "127.0.0.1",
        "--port",
        port,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn custom_party_ids_need_the_option_and_then_register_and_negotiate() {
    let dir = tempfile::tempdir().unwrap();
    let (rp, p1, p2) = (free_port(), free_port(), free_port());
    let researcher = dir.path().join("researcher");

    // Without the option: refused, naming the option, and nothing is created.
    init(&researcher, "researcher", "mylab", rp, &[]).fails_with(3, "--allow-custom-id");
    assert!(!researcher.join("config.toml").exists());
    // A custom id is a researcher's under Fed-BioMed's rule: stating "node" is refused.
    let n0 = dir.path().join("n0");
    init(&n0, "node", "hospital7", p1, &["--allow-custom-id"]).fails_with(3, "names a researcher");
    assert!(!n0.join("config.toml").exists());

    init(
        &researcher,
        "researcher",
        "mylab",
        rp,
        &["--allow-custom-id"],
    )
    .ok();
    let shown = secagg(&researcher, &["identity", "show", "--format", "json"]);
    shown.ok();
    assert_eq!(shown.json()["party_id"], "mylab");
    assert_eq!(shown.json()["role"], "researcher");

    let n1 = dir.path().join("n1");
    let n2 = dir.path().join("n2");
    init(&n1, "node", "node_one", p1, &[]).ok();
    init(&n2, "node", "node_two", p2, &[]).ok();

    let cert = researcher.join("identity/cert.pem");
    let cert = cert.to_str().unwrap();
    let rport = rp.to_string();
    let before = peers_json(&n1);
    // Refusals at registration, each leaving the store as it was.
    secagg(&n1, &register_args(cert, "mylab", &rport, &[]))
        .fails_as(ErrorKind::InvalidInput)
        .fails_with(3, "--allow-custom-id");
    secagg(
        &n1,
        &register_args(cert, "mylab", &rport, &["--allow-custom-id"]),
    )
    .fails_with(3, "state its role");
    secagg(
        &n1,
        &register_args(
            cert,
            "mylab",
            &rport,
            &["--allow-custom-id", "--role", "node"],
        ),
    )
    .fails_with(3, "names a researcher");
    assert_eq!(peers_json(&n1), before);
    secagg(
        &n1,
        &register_args(
            cert,
            "mylab",
            &rport,
            &["--allow-custom-id", "--role", "researcher"],
        ),
    )
    .ok();
    assert_eq!(peers_json(&n1)["peers"][0]["party_id"], "mylab");
    assert_eq!(peers_json(&n1)["peers"][0]["component"], "RESEARCHER");

    // A bundle with a custom id: refused without the option, registered with it.
    let bundle = dir.path().join("mylab.json");
    export_bundle(&researcher, &bundle);
    let bundle = bundle.to_str().unwrap();
    secagg(&n2, &["certificate", "register", "--bundle", bundle])
        .fails_with(3, "--allow-custom-id");
    assert_eq!(peers_json(&n2)["peers"].as_array().unwrap().len(), 0);
    secagg(
        &n2,
        &[
            "certificate",
            "register",
            "--bundle",
            bundle,
            "--allow-custom-id",
        ],
    )
    .ok();

    // The other registrations, all with the usual prefixes.
    for (home, peer, port) in [(&n1, &n2, p2), (&n2, &n1, p1)] {
        let id = if peer == &n1 { "node_one" } else { "node_two" };
        let c = peer.join("identity/cert.pem");
        secagg(
            home,
            &register_args(c.to_str().unwrap(), id, &port.to_string(), &[]),
        )
        .ok();
        secagg(
            &researcher,
            &register_args(c.to_str().unwrap(), id, &port.to_string(), &["--upsert"]),
        )
        .ok();
    }
    // A registered custom id is taken where ids are looked up.
    secagg(&n1, &["certificate", "show", "mylab"]).ok();

    let session = secagg_core::SessionId::generate().to_string();
    let parties = vec![
        "mylab".to_owned(),
        "node_one".to_owned(),
        "node_two".to_owned(),
    ];
    let cmds = vec![
        negotiate(&researcher, &session, &parties).timeout(duration("30s")),
        negotiate(&n1, &session, &parties).timeout(duration("30s")),
        negotiate(&n2, &session, &parties).timeout(duration("30s")),
    ];
    for e in run_parties(&cmds, duration("60s")) {
        assert_eq!(e.code(), Some(0), "{}", e.stderr);
    }
    let key = |home: &Path| -> num_bigint::BigInt { revealed_key(home, &session).parse().unwrap() };
    let total = key(&researcher) + key(&n1) + key(&n2);
    assert_eq!(total, num_bigint::BigInt::from(0), "sk0 + sk1 + sk2");

    // A custom id can be deleted like any other.
    secagg(&n1, &["certificate", "delete", "mylab", "--yes"]).ok();
    assert!(peers_json(&n1)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["party_id"] != "mylab"));
}

/// A Fed-BioMed TinyDB store holding a custom researcher id, as Fed-BioMed's CertificateManager
/// writes it (`component` from the `node_` prefix rule).
#[test]
fn fedbiomed_store_with_a_custom_id_imports_only_with_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let lab = dir.path().join("lab");
    init(
        &lab,
        "researcher",
        "mylab",
        free_port(),
        &["--allow-custom-id"],
    )
    .ok();
    let node = dir.path().join("node");
    init(&node, "node", "node_one", free_port(), &[]).ok();
    let pem = std::fs::read_to_string(lab.join("identity/cert.pem")).unwrap();
    let db = dir.path().join("db_NODE.json");
    std::fs::write(
        &db,
        serde_json::json!({ "Certificates": { "1": {
            "party_id": "mylab", "certificate": pem, "ip": "127.0.0.1", "port": 14000,
            "component": "RESEARCHER"
        }}})
        .to_string(),
    )
    .unwrap();
    let store = std::fs::read(node.join("store.sqlite")).ok();
    secagg(
        &node,
        &["certificate", "import-fedbiomed", db.to_str().unwrap()],
    )
    .fails_with(3, "--allow-custom-id");
    assert_eq!(std::fs::read(node.join("store.sqlite")).ok(), store);
    secagg(
        &node,
        &[
            "certificate",
            "import-fedbiomed",
            db.to_str().unwrap(),
            "--allow-custom-ids",
        ],
    )
    .ok();
    let peers = peers_json(&node);
    assert_eq!(peers["peers"][0]["party_id"], "mylab");
    assert_eq!(peers["peers"][0]["component"], "RESEARCHER");

    // The custom-id party itself moves to another home with `identity import`.
    let moved = dir.path().join("moved");
    let (key, cert) = (lab.join("identity/key.pem"), lab.join("identity/cert.pem"));
    let import = |extra: &[&str]| {
        let mut args = vec![
            "identity",
            "import",
            "--id",
            "mylab",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        secagg(&moved, &args)
    };
    import(&[]).fails_with(3, "--allow-custom-id");
    assert!(!moved.join("config.toml").exists());
    let r = import(&["--allow-custom-id", "--format", "json"]);
    r.ok();
    assert_eq!(r.json()["party_id"], "mylab");
    assert_eq!(r.json()["port"], 14000);
}
