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

criterion_group!(benches, bench);
criterion_main!(benches);
