//! Joye–Libert aggregation (`secagg_core::aggregate`): encryption and decryption throughput with
//! the default 1024-bit biprime and 2040-bit keys, one constant-time exponentiation per
//! ciphertext, and a check that the time does not depend on the key (keys of very different
//! Hamming weight). Figures in benches/README.md.
//!
//! `cargo bench -p secagg-core --bench aggregation`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use num_bigint::BigUint;
use num_traits::One;
use secagg_core::aggregate::{self, Biprime};
use secagg_core::engine::SecretKey;

fn key_with_bits(ones: bool) -> SecretKey {
    // 2040-bit keys: all ones, or a single top bit then zeros.
    let k = if ones {
        (BigUint::one() << 2040u32) - 1u32
    } else {
        BigUint::one() << 2039u32
    };
    SecretKey::from_biguint(&k)
}

fn bench(c: &mut Criterion) {
    let b = Biprime::default_biprime0();
    let key = key_with_bits(true);
    let mut g = c.benchmark_group("aggregation");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    // One ciphertext (64 values for 2 nodes): one exponentiation mod N².
    let q64: Vec<u32> = (0..64).map(|i| (i * 97) % 10_000).collect();
    g.bench_function("encrypt_1_ciphertext_1_thread_equiv", |bch| {
        bch.iter(|| aggregate::encrypt(&q64, &key, 1, 2, &b).unwrap())
    });
    // 10,000 parameters for 2 nodes: 157 ciphertexts on all cores.
    let q10k: Vec<u32> = (0..10_000).map(|i| (i * 97) % 10_000).collect();
    g.bench_function("encrypt_10000_params", |bch| {
        bch.iter(|| aggregate::encrypt(&q10k, &key, 1, 2, &b).unwrap())
    });
    let cts = vec![
        aggregate::encrypt(&q10k, &key, 1, 2, &b).unwrap(),
        aggregate::encrypt(&q10k, &key_with_bits(false), 1, 2, &b).unwrap(),
    ];
    // A realistic server key: −(sk_1 + sk_2), 2041 bits (a short one would make decryption look
    // faster than it is, the exponentiation's time following the key's length in words).
    let sk0 = SecretKey::from_bigint(&-(key.to_bigint() + key_with_bits(false).to_bigint()));
    g.bench_function("aggregate_and_decrypt_10000_params_2_nodes", |bch| {
        bch.iter_batched(
            || cts.clone(),
            |cts| {
                let agg = aggregate::aggregate(&cts, &b).unwrap();
                aggregate::decrypt(&agg, &sk0, 1, 2, 10_000, &b).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    // Key independence: the same work with a dense and a sparse key of the same length, interleaved.
    let (dense, sparse) = (key_with_bits(true), key_with_bits(false));
    let (mut td, mut ts) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..40 {
        let t = Instant::now();
        aggregate::encrypt(&q64, &dense, 1, 2, &b).unwrap();
        td += t.elapsed();
        let t = Instant::now();
        aggregate::encrypt(&q64, &sparse, 1, 2, &b).unwrap();
        ts += t.elapsed();
    }
    println!(
        "key independence: dense key (2040 ones) {:.3} ms, sparse key (one 1) {:.3} ms per ciphertext, ratio {:.3}",
        td.as_secs_f64() * 1e3 / 40.0,
        ts.as_secs_f64() * 1e3 / 40.0,
        td.as_secs_f64() / ts.as_secs_f64()
    );
    // The scale, once (too long for criterion's repetitions): 1,000,000 parameters of 2
    // and of 10 nodes, encrypted on every core, then 10 nodes' ciphertexts aggregated and decrypted.
    if std::env::var_os("SECAGG_BENCH_MILLION").is_some() {
        let q1m: Vec<u32> = (0..1_000_000).map(|i| (i * 97) % 10_000).collect();
        for nodes in [2usize, 10] {
            let t = Instant::now();
            let cts = aggregate::encrypt(&q1m, &key, 1, nodes, &b).unwrap();
            let e = t.elapsed();
            println!(
                "1,000,000 parameters, {nodes} nodes: encrypt {} ciphertexts in {:.2} s ({:.3} ms per ciphertext on all cores)",
                cts.len(),
                e.as_secs_f64(),
                e.as_secs_f64() * 1e3 / cts.len() as f64
            );
            if nodes == 10 {
                let all = vec![cts; 10];
                let t = Instant::now();
                let agg = aggregate::aggregate(&all, &b).unwrap();
                let a = t.elapsed();
                let sk0 =
                    SecretKey::from_bigint(&-(key.to_bigint() * num_bigint::BigInt::from(10)));
                let sums = aggregate::decrypt(&agg, &sk0, 1, nodes, q1m.len(), &b).unwrap();
                let d = t.elapsed();
                assert_eq!(sums[1], u64::from(q1m[1]) * 10);
                println!(
                    "1,000,000 parameters, 10 nodes: aggregate {:.2} s, aggregate + decrypt {:.2} s",
                    a.as_secs_f64(),
                    d.as_secs_f64()
                );
            }
        }
    }
}

criterion_group!(aggregation, bench);
criterion_main!(aggregation);
