//! A LOM round from a home (issue 22): a node's `aggregate::encrypt_lom` of 1,000,000 floats in a
//! 10-node context (context and secrets read from the store, quantize, weight, 9 pair streams,
//! the file signed, the round recorded with an fsync), and the researcher's `decrypt_lom` of the
//! 10 signed files (checks, 10 signatures, sum, average). Also the context's setup itself: 11
//! parties (threads) running the native protocol's LOM session over loopback TLS, each storing
//! into its own home. The Python binding of the same calls is timed by `lom_round_python.py`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use secagg_core::aggregate::{self, LomDecryptRequest};
use secagg_core::demo::{self, Federation};
use secagg_core::engine::{ContextScheme, NativeEngine};
use secagg_core::session::{self, SessionRequest};
use secagg_core::{PartyId, SessionId};

#[path = "common/lom.rs"]
mod common;
use common::{params, request};

const N: usize = 1_000_000;
const NODES: usize = 10;

/// Sets up a LOM context among every party of `fed`, each party its own thread.
fn lom_context(fed: &Federation) -> SessionId {
    let session = SessionId::generate();
    let parties: Vec<PartyId> = fed
        .party_ids()
        .iter()
        .map(|p| PartyId::parse(p).unwrap())
        .collect();
    let handles: Vec<_> = fed
        .parties
        .iter()
        .map(|p| {
            let req = SessionRequest {
                session_id: session,
                parties: parties.clone(),
                timeout: Duration::from_secs(60),
                key_bits: None,
                prime: None,
                listen: None,
                endpoint: None,
                scheme: ContextScheme::Lom,
                dropout_threshold: None,
                min_nodes: None,
            };
            let home = p.home.clone();
            std::thread::spawn(move || session::negotiate(&home, &req, &NativeEngine, &mut |_| {}))
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("a party failed");
    }
    session
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), NODES).unwrap();
    let started = Instant::now();
    let session = lom_context(&fed);
    eprintln!(
        "LOM context of {NODES} nodes set up (11 threads, loopback TLS, 11 stores) in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut g = c.benchmark_group("lom_round");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("lom context setup, 10 nodes (threads, TLS, stores)", |b| {
        b.iter(|| lom_context(&fed))
    });
    let round = Cell::new(1000u64);
    let values = params(0, N);
    g.bench_function(
        "encrypt_lom 1e6 floats from the home (read, mask, sign, record)",
        |b| {
            b.iter(|| {
                round.set(round.get() + 1);
                let req = request(session, round.get(), values.clone());
                aggregate::encrypt_lom(&fed.parties[1].home, &req).unwrap()
            })
        },
    );
    let files: Vec<_> = fed.parties[1..]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let f = aggregate::encrypt_lom(&p.home, &request(session, 1, params(i, N))).unwrap();
            (p.party_id.clone(), f.file)
        })
        .collect();
    let req = LomDecryptRequest {
        session,
        round: 1,
        label: 0,
        files,
    };
    g.bench_function(
        "decrypt_lom 10 x 1e6 from signed files (checks, signatures, unmask)",
        |b| b.iter(|| aggregate::decrypt_lom(&fed.parties[0].home, &req).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
