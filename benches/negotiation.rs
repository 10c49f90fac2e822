//! Whole-session wall time of the native engine: n parties (the researcher and n − 1 nodes) as
//! threads of this process, real TLS 1.3 over 127.0.0.1, Fed-BioMed's 2050-bit prime, 2040-bit
//! keys. Each iteration is one complete session (listen, dial, handshakes, hello, sharing, sums,
//! verification, finish/ack), checked for sk0 + Σ sk_i = 0 outside the timed loop's hot path.
//!
//! Run: `cargo bench -p secagg-core --bench negotiation`.

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use num_bigint::BigInt;
use num_traits::Zero;
use secagg_core::engine::{fedbiomed_prime, DEFAULT_KEY_BITS};
use secagg_core::engine::{
    Engine, MemorySink, NativeEngine, NegotiationPlan, PartyEntry, PlanParts,
};
use secagg_core::{Endpoint, PartyId, SessionId};
use zeroize::Zeroizing;

struct Identity {
    id: PartyId,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

fn identities(n: usize) -> Vec<Identity> {
    (0..n)
        .map(|i| {
            let id = if i == 0 {
                "researcher_bench".to_string()
            } else {
                format!("node_bench{i}")
            };
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "*");
            let cert = params.self_signed(&key).unwrap();
            Identity {
                id: PartyId::parse(&id).unwrap(),
                cert_der: cert.der().to_vec(),
                key_der: key.serialize_der(),
            }
        })
        .collect()
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

/// One complete session; panics unless every party succeeds and the keys cancel.
fn session(parties: &[Identity]) {
    let ports = free_ports(parties.len());
    let entries: Vec<PartyEntry> = parties
        .iter()
        .zip(ports)
        .map(|(p, port)| PartyEntry {
            id: p.id.clone(),
            endpoint: Endpoint::new("127.0.0.1", port.into()).unwrap(),
            certificate_der: p.cert_der.clone(),
        })
        .collect();
    let session_id = SessionId::generate();
    let handles: Vec<_> = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let plan = NegotiationPlan::new(PlanParts {
                session_id,
                parties: entries.clone(),
                my_index: i,
                my_key_pkcs8_der: Zeroizing::new(p.key_der.clone()),
                listen: None,
                key_bits: DEFAULT_KEY_BITS,
                prime: fedbiomed_prime(),
                timeout: Duration::from_secs(30),
                scheme: secagg_core::engine::ContextScheme::Jl,
                dropout_threshold: None,
            })
            .expect("a well-formed plan");
            thread::spawn(move || NativeEngine.negotiate(plan, &mut MemorySink::default()))
        })
        .collect();
    let mut total = BigInt::zero();
    for h in handles {
        total += h
            .join()
            .unwrap()
            .expect("party failed")
            .material
            .key()
            .expect("a key session")
            .to_bigint();
    }
    assert!(total.is_zero());
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("negotiation");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for n in [3usize, 10, 30] {
        let parties = identities(n);
        group.bench_with_input(BenchmarkId::new("parties", n), &parties, |b, parties| {
            b.iter(|| session(parties))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
