//! secagg's own cost around `shamir-party.x`: preparing a run directory (program copied from a
//! warm compile cache, certificates, key, hash links, ip file, node input) and tearing it down
//! (secrets removed, directory deleted). Target: under 50 ms per party per run.
//!
//! Runs without MP-SPDZ: the cache entry is filled by a test-double compiler once, then every
//! iteration is a cache hit.

use std::hint::black_box;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use secagg_core::certificate::{self, GeneratedKeyType};
use secagg_core::engine::{NegotiationPlan, PartyEntry, PlanParts};
use secagg_core::mpspdz::{bench as prepare, MpSpdzRoot};
use secagg_core::{Endpoint, PartyId, SessionId};
use time::OffsetDateTime;
use zeroize::Zeroizing;

fn plan(n: usize, my_index: usize) -> NegotiationPlan {
    let now = OffsetDateTime::now_utc();
    let mut parties = Vec::new();
    let mut my_key = None;
    for j in 0..n {
        let id = PartyId::parse(&if j == 0 {
            "researcher_bench".to_owned()
        } else {
            format!("node_bench{j}")
        })
        .unwrap();
        let g = certificate::generate(&id, GeneratedKeyType::P256, 10, now).unwrap();
        if j == my_index {
            my_key =
                Some(certificate::private_key_der_matching(&g.key_pem, &g.certificate).unwrap());
        }
        parties.push(PartyEntry {
            id,
            endpoint: Endpoint::new("127.0.0.1", 20000 + j as u32).unwrap(),
            certificate_der: g.certificate.der.clone(),
        });
    }
    NegotiationPlan::new(PlanParts {
        session_id: SessionId::generate(),
        parties,
        my_index,
        my_key_pkcs8_der: Zeroizing::new(my_key.unwrap().to_vec()),
        listen: None,
        key_bits: secagg_core::engine::DEFAULT_KEY_BITS,
        prime: secagg_core::engine::fedbiomed_prime(),
        timeout: Duration::from_secs(90),
        scheme: secagg_core::engine::ContextScheme::Jl,
        dropout_threshold: None,
    })
    .expect("a well-formed plan")
}

fn fake_root(dir: &std::path::Path) -> MpSpdzRoot {
    std::fs::create_dir_all(dir.join("Compiler")).unwrap();
    std::fs::write(
        dir.join("compile.py"),
        "import os\nos.makedirs('Programs/Schedules', exist_ok=True)\nos.makedirs('Programs/Bytecode', exist_ok=True)\nopen('Programs/Schedules/server_key.sch', 'w').write('s' * 1500)\nopen('Programs/Bytecode/server_key-0.bc', 'w').write('b' * 5000)\n",
    )
    .unwrap();
    let bin = dir.join("shamir-party.x");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    MpSpdzRoot::new(dir).unwrap()
}

fn bench(c: &mut Criterion) {
    let t = tempfile::tempdir().unwrap();
    let root = fake_root(&t.path().join("mpspdz"));
    let cache = t.path().join("home/mpspdz-cache");
    let runs = t.path().join("home/runs");
    let mut g = c.benchmark_group("mpspdz_prepare_teardown");
    for (n, idx) in [(3usize, 1usize), (10, 1), (10, 0)] {
        let p = plan(n, idx);
        prepare::warm_cache(&root, &cache, n, p.prime()).unwrap();
        g.bench_function(format!("n{n}_party{idx}_warm_cache"), |b| {
            b.iter(|| {
                black_box(prepare::prepare_and_remove(&root, &cache, &runs, &p).unwrap());
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
