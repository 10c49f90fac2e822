//! Setting up a 100-party federation on one machine through the signed roster (issue 10): 100
//! identities, the researcher registering the 99 node bundles in one transaction, one roster
//! export, and each node registering the researcher and importing the roster (signature, serial,
//! expiry and all 99 entries checked, one transaction per node). The same as `secagg demo
//! --nodes 99`'s setup, without the negotiation.
//!
//! Run with `cargo bench -p secagg-core --bench federation_setup`; figures are in benches/README.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use secagg_core::demo;

fn setup(c: &mut Criterion) {
    let mut g = c.benchmark_group("federation_setup");
    g.sample_size(10).measurement_time(Duration::from_secs(30));
    for parties in [10usize, 100] {
        g.bench_function(format!("roster_{parties}_parties"), |b| {
            b.iter_with_large_drop(|| {
                let dir = tempfile::tempdir().unwrap();
                let fed = demo::prepare(&dir.path().join("fed"), parties - 1).unwrap();
                assert_eq!(fed.parties.len(), parties);
                dir
            })
        });
    }
    g.finish();
}

criterion_group!(benches, setup);
criterion_main!(benches);
