//! Adopting identities (`init --from-fedbiomed`, `identity import`), the run-time endpoint
//! override (`MPSPDZ_IP` / `MPSPDZ_PORT`) and Fed-BioMed's `secagg_<uuid>` session ids.
//!
//! The Fed-BioMed components are built here, in Fed-BioMed v4.5.0's layout
//! (`etc/config_<component>.ini`, `etc/certs/cert_<id>/MPSPDZ_certificate.{key,pem}`, key paths
//! relative to `etc/`), from the Fed-BioMed-shaped RSA-2048 fixtures of `fixtures/`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A Fed-BioMed v4 component directory made from fixture `stem` (`fedbiomed_rsa2048` or
/// `fedbiomed_rsa2048_researcher`): returns its root and party id. The key is 0644, as
/// Fed-BioMed writes it under a default umask.
fn fedbiomed_component(dir: &Path, stem: &str, ip: &str, port: u16) -> (PathBuf, String) {
    let (cert, id, _) = fixture(&format!("certs/{stem}.pem"));
    let id = id.unwrap();
    let root = dir.join(format!("fbm-{stem}"));
    let certs = root.join("etc/certs").join(format!("cert_{id}"));
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::create_dir_all(root.join("var")).unwrap();
    let key = certs.join("MPSPDZ_certificate.key");
    std::fs::copy(fixtures().join(format!("keys/{stem}.key")), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::copy(cert, certs.join("MPSPDZ_certificate.pem")).unwrap();
    let component = if id.starts_with("node_") {
        "node"
    } else {
        "researcher"
    };
    let ini = format!(
        "[default]\nid = {id}\ncomponent = {}\nversion = 1\n\n[mqtt]\nbroker_ip = localhost\nport = 1883\n\n\
         [mpspdz]\nprivate_key = certs/cert_{id}/MPSPDZ_certificate.key\npublic_key = certs/cert_{id}/MPSPDZ_certificate.pem\n\
         mpspdz_ip = {ip}\nmpspdz_port = {port}\nallow_default_biprimes = True\n\n",
        component.to_uppercase()
    );
    std::fs::write(root.join(format!("etc/config_{component}.ini")), ini).unwrap();
    (root, id)
}

fn register(home: &Path, cert: &Path, id: &str, port: u16) {
    secagg(
        home,
        &[
            "certificate",
            "register",
            "-pk",
            cert.to_str().unwrap(),
            "-pi",
            id,
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
    )
    .ok();
}

/// The migration the issue asks for: a researcher and a node adopt their Fed-BioMed identities;
/// a third party registered their Fed-BioMed certificates *before* the migration and registers
/// nothing again; the session runs with Fed-BioMed's `secagg_<uuid>` id at one party and the bare
/// uuid at the others, and the adopted node listens where MPSPDZ_PORT says (its stale stored
/// port is overridden at run time).
#[test]
fn adopted_fedbiomed_identities_negotiate_with_peers_that_registered_them_before() {
    let dir = tempfile::tempdir().unwrap();
    let (node_port, other_port, stale_port) = (free_port(), free_port(), free_port());
    let (fbm_researcher, researcher_id) = fedbiomed_component(
        dir.path(),
        "fedbiomed_rsa2048_researcher",
        "127.0.0.1",
        14000,
    );
    let (fbm_node, node_id) =
        fedbiomed_component(dir.path(), "fedbiomed_rsa2048", "127.0.0.1", stale_port);
    let researcher_cert = fixture("certs/fedbiomed_rsa2048_researcher.pem").0;
    let node_cert = fixture("certs/fedbiomed_rsa2048.pem").0;

    // Before the migration: a secagg node registers the Fed-BioMed parties' certificates (as it
    // would from their registration instructions), the node at its real port.
    let other = dir.path().join("other");
    secagg(
        &other,
        &[
            "init",
            "--role",
            "node",
            "--id",
            "node_other",
            "--ip",
            "127.0.0.1",
            "--port",
            &other_port.to_string(),
        ],
    )
    .ok();
    register(&other, &researcher_cert, &researcher_id, 14000);
    register(&other, &node_cert, &node_id, node_port);
    let registered_before = peers_json(&other);

    // The migration: each Fed-BioMed component is adopted, from its root and from its config file.
    let researcher = dir.path().join("researcher");
    let r = secagg(
        &researcher,
        &[
            "init",
            "--from-fedbiomed",
            fbm_researcher.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    r.ok();
    assert_eq!(r.json()["party_id"], researcher_id.as_str());
    assert_eq!(r.json()["key_type"], "rsa2048");
    assert!(
        r.stderr.contains("readable by group or others (mode 0644)"),
        "{}",
        r.stderr
    );
    assert_eq!(mode(&researcher.join("identity/key.pem")), 0o600);
    let node = dir.path().join("node");
    let config = fbm_node.join("etc/config_node.ini");
    let n = secagg(
        &node,
        &[
            "init",
            "--from-fedbiomed",
            config.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    n.ok();
    assert_eq!(n.json()["party_id"], node_id.as_str());
    assert_eq!(n.json()["port"], stale_port);
    assert_eq!(
        n.json()["fingerprint"],
        fixture("certs/fedbiomed_rsa2048.pem").2.unwrap().as_str()
    );
    // The adopted parties know their peers (as Fed-BioMed's TinyDB import would give them).
    let other_cert = other.join("identity/cert.pem");
    register(&researcher, &node_cert, &node_id, node_port);
    register(&researcher, &other_cert, "node_other", other_port);
    register(&node, &researcher_cert, &researcher_id, 14000);
    register(&node, &other_cert, "node_other", other_port);

    let uuid = secagg_core::SessionId::generate().to_string();
    let fbm_session = format!("secagg_{uuid}");
    let parties = vec![
        researcher_id.clone(),
        node_id.clone(),
        "node_other".to_owned(),
    ];
    let cmds = vec![
        negotiate(&researcher, &fbm_session, &parties).timeout(duration("30s")),
        negotiate(&node, &uuid, &parties)
            .timeout(duration("30s"))
            .env("MPSPDZ_PORT", node_port.to_string()),
        negotiate(&other, &uuid, &parties).timeout(duration("30s")),
    ];
    let exits = run_parties(&cmds, duration("60s"));
    for e in &exits {
        assert_eq!(e.code(), Some(0), "{}", e.stderr);
        assert_eq!(e.report().unwrap()["session_id"], uuid.as_str());
    }
    assert!(
        exits[1].stderr.contains(&format!(
            "MPSPDZ_PORT={node_port} overrides the stored endpoint 127.0.0.1:{stale_port}"
        )) && exits[1].stderr.contains("secagg identity set-endpoint"),
        "{}",
        exits[1].stderr
    );
    // No new registration anywhere: the peer's registrations are those of before the migration.
    assert_eq!(peers_json(&other), registered_before);
    // The keys cancel: sk0 = -(sk_1 + sk_2). Both spellings of the id find the context.
    let sk0 = revealed_key(&researcher, &uuid);
    assert_eq!(revealed_key(&researcher, &fbm_session), sk0);
    let int = |k: String| k.parse::<num_bigint::BigInt>().unwrap();
    let sum = int(revealed_key(&node, &fbm_session)) + int(revealed_key(&other, &uuid));
    assert_eq!(int(sk0), -sum);
}

#[test]
fn identity_import_checks_key_certificate_and_id_and_changes_nothing_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let (cert, id, fp) = fixture("certs/fedbiomed_rsa2048.pem");
    let (id, fp) = (id.unwrap(), fp.unwrap());
    let key = fixtures().join("keys/fedbiomed_rsa2048.key");
    let import = |home: &Path, id: &str, key: &Path, cert: &Path, extra: &[&str]| {
        let mut args = vec![
            "identity",
            "import",
            "--id",
            id,
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--ip",
            "10.221.0.3",
        ];
        args.extend_from_slice(extra);
        secagg(home, &args)
    };
    // A key of another certificate, a certificate for another id, one without O=.
    import(
        &home,
        &id,
        &fixtures().join("keys/ecdsa_p256.key"),
        &cert,
        &[],
    )
    .fails_with(3, "does not belong to the certificate");
    import(&home, "node_someone", &key, &cert, &[]).fails_with(3, "not `node_someone`");
    import(
        &home,
        "node_x",
        &fixtures().join("keys/no_o.key"),
        &fixtures().join("certs/no_o.pem"),
        &[],
    )
    .fails_with(3, "has no O=");
    import(
        &home,
        "node_x",
        &fixtures().join("keys/expired.key"),
        &fixtures().join("certs/expired.pem"),
        &[],
    )
    .fails_with(3, "expired");
    assert!(!home.exists(), "a refused import wrote something");

    // Accepted; the fixture key is 0600 in the repository? Whatever it is, the copy is 0600.
    let r = import(&home, &id, &key, &cert, &["--format", "json"]);
    r.ok();
    assert_eq!(r.json()["fingerprint"], fp.as_str());
    assert_eq!(r.json()["ip"], "10.221.0.3");
    assert_eq!(r.json()["port"], 14001);
    assert_eq!(mode(&home.join("identity/key.pem")), 0o600);
    assert!(!r.stdout.contains("PRIVATE KEY") && !r.stderr.contains("PRIVATE KEY"));

    // An existing identity is kept without --force; with it, it is archived.
    let other = fixture("certs/fedbiomed_rsa2048_researcher.pem");
    let other_key = fixtures().join("keys/fedbiomed_rsa2048_researcher.key");
    let other_id = other.1.unwrap();
    import(&home, &other_id, &other_key, &other.0, &[]).fails_with(5, "already holds an identity");
    assert_eq!(
        secagg(&home, &["identity", "show", "--format", "json"])
            .ok()
            .json()["party_id"],
        id.as_str()
    );
    let r = import(&home, &other_id, &other_key, &other.0, &["--force"]);
    r.ok();
    assert!(r.stderr.contains("identity/previous/"), "{}", r.stderr);
    let previous: Vec<_> = std::fs::read_dir(home.join("identity/previous"))
        .unwrap()
        .collect();
    assert_eq!(previous.len(), 1);
    let show = secagg(&home, &["identity", "show", "--format", "json"])
        .ok()
        .json();
    assert_eq!(show["party_id"], other_id.as_str());
    assert_eq!(show["port"], 14000);
}

#[test]
fn from_fedbiomed_refuses_what_it_cannot_adopt() {
    let dir = tempfile::tempdir().unwrap();
    let (root, id) = fedbiomed_component(dir.path(), "fedbiomed_rsa2048", "localhost", 14001);
    let home = dir.path().join("h");
    let root_s = root.to_str().unwrap();
    secagg(
        &home,
        &["init", "--from-fedbiomed", root_s, "--role", "researcher"],
    )
    .fails_with(3, "not of a researcher");
    let usage = secagg(
        &home,
        &["init", "--from-fedbiomed", root_s, "--id", "node_x"],
    );
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    // A config naming a key that is not there.
    let ini = root.join("etc/config_node.ini");
    let text = std::fs::read_to_string(&ini).unwrap();
    std::fs::write(&ini, text.replace("MPSPDZ_certificate.key", "missing.key")).unwrap();
    secagg(&home, &["init", "--from-fedbiomed", root_s]).fails_with(4, "missing.key");
    // No [mpspdz] section (Fed-BioMed before v4.2).
    std::fs::write(&ini, format!("[default]\nid = {id}\n")).unwrap();
    secagg(&home, &["init", "--from-fedbiomed", root_s]).fails_with(3, "[mpspdz]");
    // Two components in one etc/.
    std::fs::write(root.join("etc/config_node2.ini"), "[default]\n").unwrap();
    secagg(&home, &["init", "--from-fedbiomed", root_s])
        .fails_with(3, "2 Fed-BioMed configurations");
    assert!(!home.exists(), "a refused adoption wrote something");
}

/// `MPSPDZ_IP` / `MPSPDZ_PORT` override the stored endpoint for every command that prints or
/// uses it, each saying so on stderr with the `set-endpoint` command; the stored one is unchanged.
#[test]
fn mpspdz_environment_overrides_the_endpoint_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let home = node_home(dir.path(), "n1"); // 10.221.0.9:14001
    let env = [("MPSPDZ_IP", "10.221.0.44"), ("MPSPDZ_PORT", "14044")];
    let show = secagg_env(&home, &["identity", "show", "--format", "json"], &env);
    show.ok();
    assert_eq!(show.json()["ip"], "10.221.0.44");
    assert_eq!(show.json()["port"], 14044);
    let notice =
        "MPSPDZ_IP=10.221.0.44 MPSPDZ_PORT=14044 overrides the stored endpoint 10.221.0.9:14001";
    assert!(show.stderr.contains(notice), "{}", show.stderr);
    assert!(
        show.stderr
            .contains("secagg identity set-endpoint --ip 10.221.0.44 --port 14044"),
        "{}",
        show.stderr
    );
    let text = secagg_env(&home, &["certificate", "registration-instructions"], &env);
    text.ok();
    assert!(
        text.stdout.contains("--ip 10.221.0.44 --port 14044"),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains(notice), "{}", text.stderr);
    let bundle = secagg_env(
        &home,
        &[
            "certificate",
            "registration-instructions",
            "--format",
            "json",
        ],
        &[("MPSPDZ_PORT", "14045")],
    );
    bundle.ok();
    assert_eq!(bundle.json()["ip"], "10.221.0.9");
    assert_eq!(bundle.json()["port"], 14045);
    // Nothing stored changed; without the variables the stored endpoint is back, silently.
    let plain = secagg(&home, &["identity", "show", "--format", "json"]);
    plain.ok();
    assert_eq!(plain.json()["port"], 14001);
    assert!(!plain.stderr.contains("MPSPDZ"), "{}", plain.stderr);
    // A bad value is an error naming the variable.
    secagg_env(&home, &["identity", "show"], &[("MPSPDZ_PORT", "0")])
        .fails_with(3, "in MPSPDZ_PORT");
    secagg_env(&home, &["identity", "show"], &[("MPSPDZ_IP", "not a host")])
        .fails_with(3, "in MPSPDZ_IP");
    // set-endpoint makes it permanent.
    secagg_env(
        &home,
        &[
            "identity",
            "set-endpoint",
            "--ip",
            "10.221.0.44",
            "--port",
            "14044",
        ],
        &env,
    )
    .ok();
    let same = secagg_env(&home, &["identity", "show"], &env);
    same.ok();
    assert!(
        same.stderr.contains("equals the stored endpoint"),
        "{}",
        same.stderr
    );
}
