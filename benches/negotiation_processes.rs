//! Key negotiation as it runs in production: every party a separate `secagg negotiate` process
//! (release build) over mutual TLS on 127.0.0.1. The federation (homes, certificates,
//! registrations) is prepared once; each iteration is one fresh session, timed from the first
//! process start to the last exit, keys checked.
//!
//! Run with `cargo bench -p secagg-cli --bench negotiation_processes`; figures in benches/README.md.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use secagg_core::demo;
use secagg_core::processes::{run_parties, NegotiateCommand};

fn run_session(fed: &demo::Federation) -> Duration {
    let session = secagg_core::session::new_session_id();
    let ids = fed.party_ids();
    let commands: Vec<NegotiateCommand> = fed
        .parties
        .iter()
        .map(|p| {
            NegotiateCommand::new(env!("CARGO_BIN_EXE_secagg"), p.home.root(), &session, &ids)
                .timeout(Duration::from_secs(30))
        })
        .collect();
    let started = Instant::now();
    let exits = run_parties(
        ids.iter().map(String::as_str).zip(&commands),
        Duration::from_secs(60),
    )
    .expect("spawn");
    let elapsed = started.elapsed();
    for e in &exits {
        assert!(e.success(), "{} failed: {}", e.party, e.failure());
    }
    assert!(
        demo::verify(fed, &session.parse().unwrap())
            .unwrap()
            .verified
    );
    elapsed
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("negotiation_processes");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    for parties in [3usize, 10, 30] {
        let fed = demo::prepare(&dir.path().join(format!("fed{parties}")), parties - 1).unwrap();
        g.bench_function(format!("{parties}_parties"), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_session(&fed)).sum())
        });
    }
    g.finish();
}

criterion_group!(processes, benches);
criterion_main!(processes);
