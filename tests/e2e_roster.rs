//! Issue 10: a federation set up in O(N) steps through a roster signed by the researcher, with
//! real processes and separate homes; and every refusal the issue lists, each leaving the
//! importing node's store byte-for-byte unchanged.
//!
//! Rosters that `secagg roster export` cannot produce (signed by a node, expired, with a bad
//! entry) are made here with the signer's real identity key through the same public signing
//! function the export uses (`secagg_core::signing::sign`), so they differ from a real
//! roster only in the one property under test.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use secagg_core::home::Home;
use secagg_core::{identity, ErrorKind};
use support::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Party {
    id: String,
    home: PathBuf,
    port: u16,
    bundle: PathBuf,
    fingerprint: String,
}

fn party(dir: &Path, role: &str, id: &str) -> Party {
    let home = dir.join(id);
    let port = free_port();
    secagg(
        &home,
        &[
            "init",
            "--role",
            role,
            "--id",
            id,
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ],
    )
    .ok();
    let bundle = dir.join(format!("{id}.json"));
    support::export_bundle(&home, &bundle);
    let fingerprint = bundle_fingerprint(&bundle);
    Party {
        id: id.to_owned(),
        home,
        port,
        bundle,
        fingerprint,
    }
}

fn bundle_fingerprint(bundle: &Path) -> String {
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
    b["fingerprint"].as_str().unwrap().to_owned()
}

/// The store file of `home` (each command checkpoints and closes it, so equal bytes mean an
/// unchanged store).
fn store_bytes(home: &Path) -> Vec<u8> {
    assert!(
        !home.join("store.sqlite-wal").exists() || {
            std::fs::metadata(home.join("store.sqlite-wal"))
                .unwrap()
                .len()
                == 0
        }
    );
    std::fs::read(home.join("store.sqlite")).unwrap()
}

fn export(researcher: &Party, out: &Path, extra: &[&str]) {
    let mut args = vec!["roster", "export", "--force", "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    secagg(&researcher.home, &args).ok();
}

fn import(node: &Party, roster: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["roster", "import", roster.to_str().unwrap(), "--yes"];
    args.extend_from_slice(extra);
    secagg(&node.home, &args)
}

/// Asserts that importing `roster` into `node` fails as `kind` with `needle` in the error and
/// leaves its store byte-for-byte as it was.
fn refused(node: &Party, roster: &Path, extra: &[&str], kind: ErrorKind, needle: &str) {
    let before = store_bytes(&node.home);
    let r = import(node, roster, extra);
    r.fails_as(kind);
    assert!(r.stderr.contains(needle), "lacks {needle:?}: {}", r.stderr);
    assert_eq!(
        store_bytes(&node.home),
        before,
        "store changed by {needle:?}"
    );
}

/// Registers `what` at `home` from its bundle, checking its fingerprint.
fn register_bundle(home: &Path, what: &Party) {
    secagg(
        home,
        &[
            "certificate",
            "register",
            "--bundle",
            what.bundle.to_str().unwrap(),
            "--expect-fingerprint",
            &what.fingerprint,
        ],
    )
    .ok();
}

fn peer_ids(home: &Path) -> Vec<String> {
    let mut ids: Vec<String> = peers_json(home)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["party_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn origin_of(home: &Path, id: &str) -> String {
    peers_json(home)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["party_id"] == id)
        .unwrap_or_else(|| panic!("{id} not registered"))["origin"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A roster file whose payload is `payload`, signed with the identity key of `signer`'s home.
fn forge(signer: &Path, payload: &serde_json::Value, out: &Path) {
    let id = identity::load(&Home::new(signer)).unwrap();
    let key = id.private_key_der().unwrap();
    let bytes = serde_json::to_vec(payload).unwrap();
    let (scheme, sig) = secagg_core::signing::sign(
        secagg_core::signing::Purpose::Roster,
        &bytes,
        &key,
        id.certificate.key_type.unwrap(),
    )
    .unwrap();
    let file = serde_json::json!({
        "format": "secagg-roster",
        "version": 1,
        "issuer": payload["issuer"],
        "payload": B64.encode(&bytes),
        "signature_scheme": scheme,
        "signature": B64.encode(sig),
    });
    std::fs::write(out, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
}

/// The signed payload of a roster file.
fn payload_of(roster: &Path) -> serde_json::Value {
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(roster).unwrap()).unwrap();
    serde_json::from_slice(&B64.decode(file["payload"].as_str().unwrap()).unwrap()).unwrap()
}

fn key_of(home: &Path, session: &str) -> num_bigint::BigInt {
    support::revealed_key(home, session).parse().unwrap()
}

#[test]
fn six_parties_set_up_through_one_roster_negotiate() {
    let dir = tempfile::tempdir().unwrap();
    let researcher = party(dir.path(), "researcher", "researcher_lab");
    let nodes: Vec<Party> = (1..=5)
        .map(|i| party(dir.path(), "node", &format!("node_h{i}")))
        .collect();

    // The O(N) registrations: the researcher registers every node's bundle in one command,
    // checking each fingerprint; each node registers the researcher's, checking its fingerprint.
    let mut args = vec!["certificate", "register", "--bundle"];
    let bundles: Vec<String> = nodes
        .iter()
        .map(|n| n.bundle.to_str().unwrap().to_owned())
        .collect();
    args.extend(bundles.iter().map(String::as_str));
    let expectations: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.fingerprint))
        .collect();
    for e in &expectations {
        args.extend(["--expect-fingerprint", e.as_str()]);
    }
    secagg(&researcher.home, &args).ok();
    for n in &nodes {
        register_bundle(&n.home, &researcher);
    }

    // One export, five imports.
    let roster = dir.path().join("roster.json");
    export(&researcher, &roster, &[]);
    let shown = secagg(
        &nodes[0].home,
        &[
            "roster",
            "show",
            roster.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    shown.ok();
    let plan = &shown.json()["import"];
    assert_eq!(plan["serial"], 1);
    assert_eq!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["change"] == "new")
            .count(),
        4
    );
    for n in &nodes {
        let r = import(n, &roster, &["--format", "json"]);
        r.ok();
        assert_eq!(r.json()["applied"], true);
        let mut expected: Vec<String> = std::iter::once(researcher.id.clone())
            .chain(nodes.iter().filter(|m| m.id != n.id).map(|m| m.id.clone()))
            .collect();
        expected.sort();
        assert_eq!(peer_ids(&n.home), expected);
        assert_eq!(origin_of(&n.home, &researcher.id), "manual");
        let other = nodes.iter().find(|m| m.id != n.id).unwrap();
        assert_eq!(origin_of(&n.home, &other.id), "roster researcher_lab #1");
    }

    // The 6-party negotiation, every party its own process.
    let session = secagg_core::SessionId::generate().to_string();
    let ids: Vec<String> = std::iter::once(researcher.id.clone())
        .chain(nodes.iter().map(|n| n.id.clone()))
        .collect();
    let cmds: Vec<_> = std::iter::once(&researcher.home)
        .chain(nodes.iter().map(|n| &n.home))
        .map(|h| negotiate(h, &session, &ids).timeout(duration("60s")))
        .collect();
    for e in run_parties(&cmds, duration("90s")) {
        assert_eq!(e.code(), Some(0), "{}", e.stderr);
    }
    let total = nodes
        .iter()
        .fold(key_of(&researcher.home, &session), |acc, n| {
            acc + key_of(&n.home, &session)
        });
    assert_eq!(total, num_bigint::BigInt::from(0));
    let _ = researcher.port;
}

#[test]
fn refused_rosters_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let researcher = party(dir.path(), "researcher", "researcher_lab");
    let n1 = party(dir.path(), "node", "node_one");
    let n2 = party(dir.path(), "node", "node_two");
    let n3 = party(dir.path(), "node", "node_three");
    for n in [&n1, &n2, &n3] {
        register_bundle(&researcher.home, n);
        register_bundle(&n.home, &researcher);
    }
    let good = dir.path().join("good.json");
    export(&researcher, &good, &[]);
    let path = |name: &str| dir.path().join(name);

    // One byte of the signed payload changed.
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&good).unwrap()).unwrap();
    let mut bytes = B64.decode(file["payload"].as_str().unwrap()).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    file["payload"] = B64.encode(&bytes).into();
    std::fs::write(path("tampered.json"), file.to_string()).unwrap();
    refused(
        &n1,
        &path("tampered.json"),
        &[],
        ErrorKind::Authentication,
        "does not verify",
    );

    // Signed by a node (registered here by hand), and by a researcher not registered here.
    register_bundle(&n1.home, &n2);
    let mut by_node = payload_of(&good);
    by_node["issuer"] = n2.id.clone().into();
    by_node["issuer_fingerprint"] = n2.fingerprint.clone().into();
    forge(&n2.home, &by_node, &path("by-node.json"));
    refused(
        &n1,
        &path("by-node.json"),
        &[],
        ErrorKind::Authentication,
        "a node",
    );
    let stranger = party(dir.path(), "researcher", "researcher_stranger");
    register_bundle(&stranger.home, &n1);
    export(&stranger, &path("stranger.json"), &[]);
    refused(
        &n1,
        &path("stranger.json"),
        &[],
        ErrorKind::NotFound,
        "is not registered here",
    );

    // Expired (signed by the registered researcher, expiry in the past).
    let mut expired = payload_of(&good);
    expired["serial"] = 1000.into();
    expired["expires_at"] = "2020-01-01T00:00:00Z".into();
    forge(&researcher.home, &expired, &path("expired.json"));
    refused(
        &n1,
        &path("expired.json"),
        &[],
        ErrorKind::InvalidInput,
        "expired on 2020-01-01",
    );

    // Entries with a bad certificate, a bad id, a bad endpoint.
    for (i, (field, value, needle)) in [
        (
            "certificate",
            serde_json::json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "certificate",
        ),
        (
            "party_id",
            serde_json::json!("nod_typo"),
            "does not start with",
        ),
        ("ip", serde_json::json!("bad host!"), "bad host!"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut bad = payload_of(&good);
        bad["serial"] = (2000 + i).into();
        let entry = bad["parties"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["party_id"] == n3.id.as_str())
            .unwrap();
        entry[field] = value;
        let file = path(&format!("bad-{field}.json"));
        forge(&researcher.home, &bad, &file);
        refused(&n1, &file, &[], ErrorKind::InvalidInput, needle);
    }

    // A fingerprint given out of band that the roster contradicts.
    refused(
        &n1,
        &good,
        &[
            "--expect-fingerprint",
            &format!("{}={}", n2.id, n3.fingerprint),
        ],
        ErrorKind::Authentication,
        "not the expected",
    );

    // A roster giving this node another certificate: node_one renews its key after the researcher
    // registered it; the researcher's roster still holds the old certificate.
    {
        let copy = dir.path().join("n1-copy");
        copy_dir(&n1.home, &copy);
        secagg(&copy, &["certificate", "generate", "--force"]).ok();
        let n1b = Party {
            id: n1.id.clone(),
            home: copy,
            port: n1.port,
            bundle: n1.bundle.clone(),
            fingerprint: n1.fingerprint.clone(),
        };
        refused(
            &n1b,
            &good,
            &[],
            ErrorKind::Authentication,
            "gives this party certificate",
        );
    }

    // Without --yes and without a terminal, a roster that changes something is not imported.
    let before = store_bytes(&n2.home);
    secagg(&n2.home, &["roster", "import", good.to_str().unwrap()]).fails_with(3, "--yes");
    assert_eq!(store_bytes(&n2.home), before);

    // The good roster imports; it cannot be imported again, nor can an older one after a newer.
    import(&n1, &good, &[]).ok();
    refused(&n1, &good, &[], ErrorKind::Conflict, "already imported");
    let newer = path("newer.json");
    export(&researcher, &newer, &[]);
    import(&n1, &newer, &[]).ok();
    refused(&n1, &good, &[], ErrorKind::Conflict, "older than #2");

    // A replacement of a party registered here by hand: node_two renews its certificate and the
    // researcher registers the new one; node_three registered node_two by hand before.
    register_bundle(&n3.home, &n2);
    import(&n3, &good, &[]).ok();
    assert_eq!(origin_of(&n3.home, &n2.id), "manual");
    secagg(&n2.home, &["certificate", "generate", "--force"]).ok();
    support::export_bundle(&n2.home, &n2.bundle);
    secagg(
        &researcher.home,
        &[
            "certificate",
            "register",
            "--upsert",
            "--bundle",
            n2.bundle.to_str().unwrap(),
        ],
    )
    .ok();
    let replaced = path("replaced.json");
    export(&researcher, &replaced, &[]);
    refused(&n3, &replaced, &[], ErrorKind::Conflict, "--allow-replace");
    import(&n3, &replaced, &["--allow-replace"]).ok();
    assert_eq!(origin_of(&n3.home, &n2.id), "roster researcher_lab #3");

    // A researcher whose registered certificate changed: it renews its key and exports; the nodes
    // still hold the old certificate.
    secagg(&researcher.home, &["certificate", "generate", "--force"]).ok();
    let renewed = path("renewed.json");
    export(&researcher, &renewed, &[]);
    refused(
        &n1,
        &renewed,
        &[],
        ErrorKind::Authentication,
        "does not verify",
    );
}

#[test]
fn prune_removes_only_what_this_issuers_rosters_brought() {
    let dir = tempfile::tempdir().unwrap();
    let researcher = party(dir.path(), "researcher", "researcher_lab");
    let n1 = party(dir.path(), "node", "node_one");
    let n2 = party(dir.path(), "node", "node_two");
    let n3 = party(dir.path(), "node", "node_three");
    let n4 = party(dir.path(), "node", "node_four");
    for n in [&n1, &n2, &n3, &n4] {
        register_bundle(&researcher.home, n);
        register_bundle(&n.home, &researcher);
    }
    // node_one registered node_four by hand; node_two and node_three come from the roster.
    register_bundle(&n1.home, &n4);
    let first = dir.path().join("first.json");
    export(&researcher, &first, &[]);
    import(&n1, &first, &[]).ok();
    assert_eq!(origin_of(&n1.home, &n2.id), "roster researcher_lab #1");
    // The researcher drops node_two and node_four.
    for id in [&n2.id, &n4.id] {
        secagg(&researcher.home, &["certificate", "delete", id, "--yes"]).ok();
    }
    let second = dir.path().join("second.json");
    export(&researcher, &second, &[]);
    // Without --prune nothing is removed.
    let plan = secagg(
        &n1.home,
        &[
            "roster",
            "show",
            second.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    plan.ok();
    assert!(plan.json()["import"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["change"] != "removed"));
    let r = import(&n1, &second, &["--prune", "--format", "json"]);
    r.ok();
    let report = r.json();
    let removed: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "removed")
        .map(|c| c["party_id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, vec![n2.id.as_str()]);
    assert_eq!(
        peer_ids(&n1.home),
        vec![n4.id.clone(), n3.id.clone(), researcher.id.clone()]
    );
}

/// Certificates of `n` nodes made in this process (200 `secagg init`s would dominate the test),
/// registered at `researcher` in one transaction exactly as `certificate register` registers
/// them. Returns each node's id and fingerprint.
fn register_generated_nodes(researcher: &Party, n: usize) -> Vec<(String, String)> {
    use secagg_core::certificate::{self, GeneratedKeyType};
    use secagg_core::registration::{self, CertificateSource, RegisterRequest};
    let now = time::OffsetDateTime::now_utc();
    let mut made = Vec::with_capacity(n);
    let requests: Vec<RegisterRequest> = (0..n)
        .map(|i| {
            let id = secagg_core::PartyId::parse(&format!("node_gen{i:03}")).unwrap();
            let g = certificate::generate(&id, GeneratedKeyType::P256, 30, now).unwrap();
            made.push((id.to_string(), g.certificate.fingerprint.to_string()));
            RegisterRequest {
                party_id: id,
                endpoint: secagg_core::Endpoint::new("127.0.0.1", 20_000 + i as u32).unwrap(),
                certificate: CertificateSource::Bytes {
                    bytes: g.certificate.pem.clone().into_bytes(),
                    name: format!("generated {i}"),
                },
                expect_fingerprint: None,
                upsert: false,
                source: format!("file generated-{i}.pem"),
                name: None,
            }
        })
        .collect();
    registration::register_all(&Home::new(&researcher.home), &requests, now).unwrap();
    made
}

/// Issue 20, item 3: a roster of 200 nodes (about 300 KB, where one frame carries 64 KiB) is
/// pulled from the researcher's agent by a real `roster pull` over a real socket, and a fresh
/// process finds all 200 in the node's store. Before the fix, the agent's one-frame reply failed
/// to encode, the agent logged "sent" anyway and the node exited 6, "does not answer as a secagg
/// agent". A roster the agent cannot send is then a failure on both sides.
#[test]
fn a_roster_of_200_nodes_pulls_from_the_researchers_agent() {
    let dir = tempfile::tempdir().unwrap();
    let researcher = party(dir.path(), "researcher", "researcher_lab");
    let node = party(dir.path(), "node", "node_puller");
    register_bundle(&researcher.home, &node);
    register_bundle(&node.home, &researcher);
    let generated = register_generated_nodes(&researcher, 200);
    let roster = dir.path().join("roster.json");
    export(&researcher, &roster, &[]);
    let size = std::fs::metadata(&roster).unwrap().len();
    assert!(
        size > 3 * 65_536,
        "three frames' worth or more; a roster of 202 parties is only {size} bytes"
    );

    let agent = support::agents::Agent::start(&researcher.home, &[], &[]);
    // Issue 23, item 3: a preview, as `roster show` gives for a file; nothing imported.
    let before = store_bytes(&node.home);
    let preview = secagg(
        &node.home,
        &["roster", "pull", "--dry-run", "--format", "json"],
    );
    preview.ok();
    let plan = &preview.json()["import"];
    let new = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "new")
        .count();
    assert_eq!(new, 200, "{plan}");
    assert_eq!(
        peer_ids(&node.home).len(),
        1,
        "the dry run imported nothing"
    );
    assert_eq!(store_bytes(&node.home), before);
    // Without --yes and without a terminal: refused, and the hint names the preview that exists
    // (it named `roster show FILE`, for a file the node does not have).
    let refused = secagg(&node.home, &["roster", "pull"]);
    refused.fails_as(ErrorKind::InvalidInput);
    assert!(
        refused.stderr.contains("secagg roster pull --dry-run")
            && !refused.stderr.contains("roster show FILE"),
        "{}",
        refused.stderr
    );
    let r = secagg(&node.home, &["roster", "pull", "--yes", "--format", "json"]);
    r.ok();
    assert_eq!(r.json()["applied"], true);
    // Read back by a fresh process: all 200, with the certificates the researcher registered.
    let peers = peers_json(&node.home);
    let rows = peers["peers"].as_array().unwrap();
    assert_eq!(rows.len(), 201, "the researcher and the 200 nodes");
    for (id, fingerprint) in &generated {
        let row = rows
            .iter()
            .find(|p| p["party_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is not registered after the pull"));
        assert_eq!(row["fingerprint"], fingerprint.as_str());
        assert_eq!(row["origin"], "roster researcher_lab #1");
    }
    agent.wait_for(
        &format!("roster asked by node_puller: sent ({size} bytes in"),
        std::time::Duration::from_secs(5),
    );

    // A roster the agent cannot send (larger than any import accepts): the node is told so, not
    // "does not answer as a secagg agent", and the agent logs a failure, not "sent".
    let too_big = secagg_core::roster::MAX_ROSTER_BYTES as usize + 1;
    std::fs::write(researcher.home.join("roster.json"), vec![b' '; too_big]).unwrap();
    let r = secagg(&node.home, &["roster", "pull", "--yes"]);
    r.fails_as(ErrorKind::InvalidInput);
    assert!(
        r.stderr
            .contains("researcher_lab: its latest roster cannot be read"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("does not answer"), "{}", r.stderr);
    agent.wait_for(
        "error peer=node_puller roster: roster asked by node_puller: failed: cannot read the latest exported roster",
        std::time::Duration::from_secs(5),
    );
    assert_eq!(peer_ids(&node.home).len(), 201);
}

/// The lab (issuer), another researcher and two nodes: the lab registered all three, the other
/// researcher both nodes; node_one registered only the lab, node_two the lab and the other
/// researcher. The lab's roster #1 is at the returned path.
struct TwoResearchers {
    dir: tempfile::TempDir,
    lab: Party,
    other: Party,
    n1: Party,
    n2: Party,
    roster: PathBuf,
}

fn two_researchers() -> TwoResearchers {
    let dir = tempfile::tempdir().unwrap();
    let lab = party(dir.path(), "researcher", "researcher_lab");
    let other = party(dir.path(), "researcher", "researcher_other");
    let n1 = party(dir.path(), "node", "node_one");
    let n2 = party(dir.path(), "node", "node_two");
    for p in [&n1, &n2, &other] {
        register_bundle(&lab.home, p);
    }
    for n in [&n1, &n2] {
        register_bundle(&other.home, n);
        register_bundle(&n.home, &lab);
    }
    register_bundle(&n2.home, &other);
    let roster = dir.path().join("roster.json");
    export(&lab, &roster, &[]);
    TwoResearchers {
        dir,
        lab,
        other,
        n1,
        n2,
        roster,
    }
}

/// Issue 20, item 4: a roster vouches for nodes. One that would register a researcher besides its
/// issuer is refused (exit 8, nothing written, as a fresh process shows) unless the importer
/// names it; `roster show` lists it apart; a researcher already registered here with the same
/// certificate passes; the rosters of a researcher that a roster brought in are refused unless it
/// is named too. Before the fix the roster registered the other researcher silently.
#[test]
fn a_roster_registers_another_researcher_only_when_the_importer_names_it() {
    let t = two_researchers();
    let (n1, other) = (&t.n1, &t.other);
    let roster = t.roster.to_str().unwrap();

    let shown = secagg(&n1.home, &["roster", "show", roster, "--format", "json"]);
    shown.ok();
    let j = shown.json();
    assert_eq!(
        j["other_researchers"],
        serde_json::json!(["researcher_other"])
    );
    let listed = &j["import"]["other_researchers"][0];
    assert_eq!(listed["party_id"], "researcher_other");
    assert_eq!(listed["change"], "new");
    assert_eq!(listed["refused"], true, "{listed}");
    let text = secagg(&n1.home, &["roster", "show", roster]);
    text.ok();
    assert!(text.stdout.contains("other researcher"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("refused: name it with --allow-researcher researcher_other"),
        "{}",
        text.stdout
    );

    refused(
        n1,
        &t.roster,
        &[],
        ErrorKind::Authentication,
        "the roster registers or changes researcher `researcher_other` besides its issuer `researcher_lab`",
    );
    assert_eq!(peer_ids(&n1.home), vec!["researcher_lab"]);
    let usage = secagg(
        &n1.home,
        &[
            "roster",
            "import",
            roster,
            "--yes",
            "--allow-researcher",
            "node_two",
        ],
    );
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(
        usage
            .stderr
            .contains("is a node: --allow-researcher names researchers"),
        "{}",
        usage.stderr
    );

    let r = import(n1, &t.roster, &["--allow-researcher", "researcher_other"]);
    r.ok();
    assert!(
        r.stderr
            .contains("takes its session requests only when started with `secagg serve --allow-researcher researcher_other`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        peer_ids(&n1.home),
        vec!["node_two", "researcher_lab", "researcher_other"]
    );
    assert_eq!(origin_of(&n1.home, &other.id), "roster researcher_lab #1");
    // node_two registered the other researcher by hand with this very certificate: nothing to
    // allow, and it stays manual.
    import(&t.n2, &t.roster, &[]).ok();
    assert_eq!(origin_of(&t.n2.home, &other.id), "manual");

    // The other researcher issues a roster: node_one, which has it only from the lab's roster,
    // refuses it unless it names it.
    let theirs = t.dir.path().join("theirs.json");
    export(other, &theirs, &[]);
    refused(
        n1,
        &theirs,
        &[],
        ErrorKind::Authentication,
        "the roster's issuer `researcher_other` was registered here by a roster (roster researcher_lab #1), not by hand",
    );
    import(n1, &theirs, &["--allow-researcher", "researcher_other"]).ok();
    let _ = (&t.lab, t.lab.port);
}

fn session_run(researcher: &Party, parties: &str) -> Run {
    secagg(
        &researcher.home,
        &[
            "session",
            "run",
            "--parties",
            parties,
            "--timeout",
            "20s",
            "--format",
            "json",
        ],
    )
}

/// Issue 20, item 4: an agent takes session requests only from researchers registered by hand
/// (or named with `serve --allow-researcher`). A researcher that node_one has from a roster is
/// refused, the error naming the policy and the fix, and nothing is stored; named, or once
/// registered by hand, its sessions run. Before the fix the first session ran.
#[test]
fn an_agent_refuses_sessions_of_a_researcher_a_roster_registered_until_it_is_named() {
    use support::agents::{contexts, Agent};
    let t = two_researchers();
    let (n1, n2, other) = (&t.n1, &t.n2, &t.other);
    import(n1, &t.roster, &["--allow-researcher", "researcher_other"]).ok();
    import(n2, &t.roster, &[]).ok();
    let _a2 = Agent::start(&n2.home, &[], &[]);

    let mut a1 = Agent::start(&n1.home, &[], &[]);
    let run = session_run(other, "node_one,node_two");
    run.fails_with(
        ErrorKind::Authentication.exit_code(),
        "node_one refused the session: the policy of node_one takes session requests only from researchers registered there by hand or named with --allow-researcher, and researcher_other was registered by a roster (roster researcher_lab #1)",
    );
    assert!(
        run.stderr
            .contains("secagg serve --allow-researcher researcher_other"),
        "{}",
        run.stderr
    );
    for p in [n1, n2, other] {
        assert!(contexts(&p.home).is_empty(), "{} stored a key", p.id);
    }
    assert!(a1.log_text().contains("refused"));

    a1.kill();
    let mut a1 = Agent::start(&n1.home, &["--allow-researcher", "researcher_other"], &[]);
    session_run(other, "node_one,node_two").ok();
    assert_eq!(contexts(&n1.home).len(), 1);

    // Registered by hand (its fingerprint checked), it needs no naming.
    a1.kill();
    secagg(
        &n1.home,
        &[
            "certificate",
            "register",
            "--upsert",
            "--bundle",
            other.bundle.to_str().unwrap(),
            "--expect-fingerprint",
            &other.fingerprint,
        ],
    )
    .ok();
    assert_eq!(origin_of(&n1.home, &other.id), "manual");
    let _a1 = Agent::start(&n1.home, &[], &[]);
    session_run(other, "node_one,node_two").ok();
    assert_eq!(contexts(&n1.home).len(), 2);
}

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Issue 23, item 2: adding a hospital broke `session run --all` for everyone until every node
/// ran `roster pull`, and the refusal named the wrong fix (`certificate register`). With
/// `serve --accept-rosters-from`, a node's agent takes the researcher's newer roster when a join
/// names a party it does not know: registering the new node and `roster export` at the
/// researcher are enough. A node without the option refuses naming the real fix. A 1 + 4 agent
/// federation, a node added and one removed, sessions before and after; keys read back by fresh
/// processes.
#[test]
fn a_node_added_or_removed_at_the_researcher_needs_no_step_at_the_other_nodes() {
    use support::agents::Agent;
    let dir = tempfile::tempdir().unwrap();
    let researcher = party(dir.path(), "researcher", "researcher_lab");
    let nodes: Vec<Party> = (1..=4)
        .map(|i| party(dir.path(), "node", &format!("node_h{i}")))
        .collect();
    for n in &nodes {
        register_bundle(&researcher.home, n);
        register_bundle(&n.home, &researcher);
    }
    let roster = dir.path().join("roster.json");
    export(&researcher, &roster, &[]);
    for n in &nodes {
        import(n, &roster, &[]).ok();
    }
    let _researcher_agent = Agent::start(&researcher.home, &[], &[]);
    let accept = ["--accept-rosters-from", "researcher_lab"];
    // node_h4 keeps the default policy: it refuses, naming the real fix.
    let mut agents: Vec<Agent> = nodes
        .iter()
        .map(|n| Agent::start(&n.home, if n.id == "node_h4" { &[] } else { &accept }, &[]))
        .collect();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "session",
            "run",
            "--all",
            "--timeout",
            "30s",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        secagg(&researcher.home, &args)
    };
    let sums_to_zero = |r: &Run, homes: &[&Path]| {
        let session = r.json()["session_id"].as_str().unwrap().to_owned();
        let total = homes
            .iter()
            .fold(key_of(&researcher.home, &session), |acc, h| {
                acc + key_of(h, &session)
            });
        assert_eq!(total, num_bigint::BigInt::from(0));
    };
    let before = run(&[]);
    before.ok();
    sums_to_zero(
        &before,
        &nodes.iter().map(|n| n.home.as_path()).collect::<Vec<_>>(),
    );

    // A fifth hospital: registered at the researcher, the roster exported; the new node
    // registers the researcher and starts its agent, nothing else anywhere.
    let h5 = party(dir.path(), "node", "node_h5");
    register_bundle(&researcher.home, &h5);
    register_bundle(&h5.home, &researcher);
    export(&researcher, &roster, &[]);
    // The researcher's running agent accepts a newly registered party within a second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    agents.push(Agent::start(&h5.home, &accept, &[]));
    let refused = run(&[]);
    refused.fails_as(ErrorKind::NotFound);
    assert!(
        refused.stderr.contains("node_h4 does not know node_h5")
            && refused.stderr.contains("secagg roster pull")
            && refused
                .stderr
                .contains("--accept-rosters-from researcher_lab"),
        "{}",
        refused.stderr
    );
    // The agents that accept rosters took #2 (logged); node_h4's operator pulls by hand.
    for (a, n) in agents.iter().zip(&nodes) {
        if n.id != "node_h4" {
            a.wait_for(
                "imported roster #2 of researcher_lab",
                std::time::Duration::from_secs(5),
            );
        }
    }
    secagg(&nodes[3].home, &["roster", "pull", "--yes"]).ok();
    let grown = run(&[]);
    grown.ok();
    let mut homes: Vec<&Path> = nodes.iter().map(|n| n.home.as_path()).collect();
    homes.push(&h5.home);
    sums_to_zero(&grown, &homes);
    assert_eq!(grown.json()["parties"].as_array().unwrap().len(), 6);

    // A hospital leaves: deleted at the researcher, a new roster exported. Sessions go on
    // without it at once; its registration at the others goes with the next roster they take.
    secagg(
        &researcher.home,
        &["certificate", "delete", "node_h2", "--yes"],
    )
    .ok();
    export(&researcher, &roster, &[]);
    let shrunk = run(&[]);
    shrunk.ok();
    let rows = shrunk.json()["parties"].as_array().unwrap().len();
    assert_eq!(rows, 5);
    let homes: Vec<&Path> = homes
        .into_iter()
        .filter(|h| !h.ends_with("node_h2"))
        .collect();
    sums_to_zero(&shrunk, &homes);
}
