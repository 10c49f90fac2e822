//! LOM masking (issue 22's targets): one node's encrypt of 1,000,000 floats in a 10-node context
//! (quantize + weight + 9 pairwise ChaCha20 streams), the researcher's decrypt of 10 × 1,000,000,
//! and one pair stream alone (OpenSSL's `EVP_chacha20`, as Fed-BioMed v6 uses it). Words of
//! fedbiomed 6.4 (u64); the 6.3 words (u32) take half the keystream.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use secagg_core::lom::{self, mask::PairSecret, prf, Profile, Width};

const N: usize = 1_000_000;

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("node_{i:08}-0000-4000-8000-000000000000"))
        .collect()
}

fn bench(c: &mut Criterion) {
    let nonce = lom::v6_nonce("secagg_7f3c9a52-1b2d-4e8f-9a6b-3c4d5e6f7a8b");
    let nodes = ids(10);
    let secrets: Vec<[u8; 32]> = (0..9u8).map(|i| [i + 1; 32]).collect();
    let pairs: Vec<PairSecret<'_>> = nodes[1..]
        .iter()
        .zip(&secrets)
        .map(|(peer, secret)| PairSecret { peer, secret })
        .collect();
    let params: Vec<f64> = (0..N).map(|i| ((i % 6000) as f64) / 1000.0 - 3.0).collect();

    let mut g = c.benchmark_group("lom");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    for (name, profile) in [
        ("6.4, u64", Profile::FedbiomedV64),
        ("6.3, u32", Profile::FedbiomedV63),
    ] {
        let stream = profile.stream(1, 0);
        g.bench_function(
            format!("encrypt 1e6 floats, 10-node context (9 pair streams), {name}"),
            |b| {
                b.iter(|| {
                    lom::encrypt(&nodes[0], &pairs, 10, stream, &params, Some(100), 3, &nonce)
                        .unwrap()
                })
            },
        );
    }
    let vectors: Vec<Vec<u64>> = (0..10).map(|i| vec![i as u64; N]).collect();
    g.bench_function("decrypt 10 x 1e6 (sum, average, reverse)", |b| {
        b.iter(|| lom::decrypt(&vectors, Width::W64, 1000, 3).unwrap())
    });
    g.throughput(Throughput::Bytes(8 * N as u64));
    g.bench_function("one pair stream of 1e6 u64 words (8 MB of ChaCha20)", |b| {
        let seed = [9u8; 32];
        b.iter_batched(
            || vec![0u64; N],
            |mut v| {
                let mut scratch = prf::Scratch::default();
                prf::apply_vector(&seed, 1, &nonce, Width::W64, &mut v, true, &mut scratch)
                    .unwrap();
                v
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Issue 24's figures: 1,000,000 parameters, 10 nodes, t = 6. A node's masking with its
/// self-mask (plain LOM plus one stream) against plain LOM; the researcher's recovery with 3 nodes
/// dropped before masking (7 seeds rebuilt from 6 shares each, 7 self-mask streams and 21 dangling
/// pair streams removed, the 7 vectors summed); the shares of one seed.
fn dropout(c: &mut Criterion) {
    use secagg_core::lom::dropout::{self, Dangling};
    let nonce = [7u8; 16];
    let nodes = ids(10);
    let secrets: Vec<[u8; 32]> = (0..9u8).map(|i| [i + 1; 32]).collect();
    let pairs: Vec<PairSecret<'_>> = nodes[1..]
        .iter()
        .zip(&secrets)
        .map(|(peer, secret)| PairSecret { peer, secret })
        .collect();
    let x: Vec<u64> = (0..N as u64).map(|i| i % 8191 * 100).collect();
    let stream = Profile::Secagg.stream(1, 0);
    let seed = dropout::new_self_seed();
    let mut g = c.benchmark_group("lom_dropout");
    g.sample_size(20);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("plain LOM protect 1e6, 10 nodes (9 streams)", |b| {
        b.iter(|| lom::mask::protect(&nodes[0], &pairs, 10, stream, &x, &nonce).unwrap())
    });
    g.bench_function("protect with self-mask 1e6, 10 nodes (10 streams)", |b| {
        b.iter(|| dropout::protect(&nodes[0], &pairs, 10, stream, &x, &nonce, &seed).unwrap())
    });
    g.bench_function("share one self-mask seed 6-of-10", |b| {
        b.iter(|| dropout::share_seed(&seed, 6, 10).unwrap())
    });
    // The researcher: 7 survivors' vectors (any words: the cost does not depend on them).
    let ys: Vec<Vec<u64>> = (0..7).map(|i| vec![i as u64; N]).collect();
    let seeds: Vec<_> = (0..7).map(|_| dropout::new_self_seed()).collect();
    let shares: Vec<Vec<_>> = seeds
        .iter()
        .map(|s| dropout::share_seed(s, 6, 10).unwrap())
        .collect();
    let round_seeds: Vec<[u8; 32]> = (0..21u8).map(|i| [i + 50; 32]).collect();
    let dangling: Vec<Dangling<'_>> = round_seeds
        .iter()
        .enumerate()
        .map(|(k, s)| Dangling {
            survivor: &nodes[k % 7],
            dropped: &nodes[7 + k % 3],
            seed: s,
        })
        .collect();
    g.bench_function(
        "researcher unmask with recovery: 7 of 10 survive, 3 dropped (7 seeds from shares, 28 streams)",
        |b| {
            b.iter(|| {
                let recovered: Vec<_> = shares
                    .iter()
                    .map(|sh| {
                        let held: Vec<(u32, &[u8])> = (0..6)
                            .map(|j| (j as u32 + 1, sh[j].as_slice()))
                            .collect();
                        dropout::recover_seed(&held, 6).unwrap()
                    })
                    .collect();
                let self_seeds: Vec<&[u8; 32]> = recovered.iter().map(|s| &**s).collect();
                let mut sum = lom::mask::sum(&ys, Width::W64).unwrap();
                dropout::unmask(&mut sum, stream, &nonce, &self_seeds, &dangling).unwrap();
                sum
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench, dropout);
criterion_main!(benches);
