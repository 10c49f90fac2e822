//! Identity and registration costs: `init` of an identity, one `register`, importing 10,000
//! registrations from a Fed-BioMed TinyDB file, and listing 10,000 peers as JSON.
//!
//! Run with `cargo bench -p secagg-core --bench registration`; figures are in benches/README.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use secagg_core::certificate::{generate, GeneratedKeyType};
use secagg_core::home::Home;
use secagg_core::identity::{self, InitOptions};
use secagg_core::registration::{self, CertificateSource, RegisterRequest};
use secagg_core::{fedbiomed, Endpoint, PartyId, Role};
use time::OffsetDateTime;

fn init_options(key_type: GeneratedKeyType) -> InitOptions {
    InitOptions {
        role: Role::Node,
        id: None,
        host: Some("10.221.0.2".into()),
        port: Some(14001),
        key_type,
        validity_days: 1825,
        force: false,
        allow_custom_id: false,
        name: None,
    }
}

fn new_home(dir: &std::path::Path) -> Home {
    let home = Home::new(dir.join(uuid_like()));
    identity::init(
        &home,
        &init_options(GeneratedKeyType::P256),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    home
}

fn uuid_like() -> String {
    format!("h{}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A Fed-BioMed TinyDB text with `n` distinct P-256 node certificates.
fn tinydb(n: usize) -> String {
    let now = OffsetDateTime::now_utc();
    let mut docs = serde_json::Map::new();
    for i in 0..n {
        let id = PartyId::parse(&format!("node_bench{i:05}")).unwrap();
        let g = generate(&id, GeneratedKeyType::P256, 365, now).unwrap();
        docs.insert(
            (i + 1).to_string(),
            serde_json::json!({
                "certificate": g.certificate.pem,
                "party_id": id.as_str(),
                "component": "NODE",
                "ip": format!("10.221.{}.{}", i / 250, i % 250 + 2),
                "port": 14001 + (i % 1000) as u64,
            }),
        );
    }
    serde_json::json!({ "Certificates": docs }).to_string()
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();

    for (name, kt) in [
        ("init/p256", GeneratedKeyType::P256),
        ("init/ed25519", GeneratedKeyType::Ed25519),
    ] {
        c.bench_function(name, |b| {
            b.iter_batched(
                || Home::new(dir.path().join(uuid_like())),
                |home| identity::init(&home, &init_options(kt), OffsetDateTime::now_utc()).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }

    let home = new_home(dir.path());
    let now = OffsetDateTime::now_utc();
    let peer_pems: Vec<String> = (0..2000)
        .map(|i| {
            let id = PartyId::parse(&format!("node_r{i:05}")).unwrap();
            generate(&id, GeneratedKeyType::P256, 365, now)
                .unwrap()
                .certificate
                .pem
        })
        .collect();
    let mut next = 0usize;
    c.bench_function("register/one", |b| {
        b.iter(|| {
            let i = next % peer_pems.len();
            next += 1;
            let req = RegisterRequest {
                party_id: PartyId::parse(&format!("node_r{i:05}")).unwrap(),
                endpoint: Endpoint::new("10.221.0.3", 14002).unwrap(),
                certificate: CertificateSource::Bytes {
                    bytes: peer_pems[i].clone().into_bytes(),
                    name: "bench".into(),
                },
                expect_fingerprint: None,
                upsert: true,
                source: "bench".into(),
                name: None,
            };
            black_box(registration::register(&home, &req, now).unwrap())
        })
    });

    let db_path = dir.path().join("db_10000.json");
    std::fs::write(&db_path, tinydb(10_000)).unwrap();
    let mut g = c.benchmark_group("10k");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("import_fedbiomed", |b| {
        b.iter_batched(
            || new_home(dir.path()),
            |home| {
                let r = fedbiomed::import_tinydb(&home, &db_path, false, now).unwrap();
                assert_eq!(r.imported.len(), 10_000);
            },
            BatchSize::PerIteration,
        )
    });
    let full = new_home(dir.path());
    fedbiomed::import_tinydb(&full, &db_path, false, now).unwrap();
    g.bench_function("list_json", |b| {
        b.iter(|| {
            let peers = registration::list(&full).unwrap();
            let summaries: Vec<_> = peers.iter().map(|p| p.summary(now)).collect();
            let json = serde_json::to_string(&summaries).unwrap();
            assert!(json.len() > 1_000_000);
            black_box(json)
        })
    });
    g.finish();
}

criterion_group!(registration_benches, benches);
criterion_main!(registration_benches);
