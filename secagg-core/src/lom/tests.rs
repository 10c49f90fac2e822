//! Fed-BioMed v6.3.3's test vectors (reference `fedbiomed-v6-secagg.md` §13), reproduced exactly.

use super::dh::{pairwise_secret, KeyPair};
use super::encoding::{average, quantize};
use super::mask::{protect, sum, PairSecret, Stream};
use super::prf::{eval_key, eval_vector, Key32, Width};
use super::v6_nonce;

fn key(hex_text: &str) -> Key32 {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

const ID_A: &str = "node_0a1b2c3d-0000-4000-8000-000000000001";
const ID_B: &str = "node_5e6f7a8b-0000-4000-8000-000000000002";
const ID_C: &str = "node_9c0d1e2f-0000-4000-8000-000000000003";
const SECAGG_ID: &str = "secagg_7f3c9a52-1b2d-4e8f-9a6b-3c4d5e6f7a8b";
const SECRET_AB: &str = "1f58e1949c2f85534ff88da5de13cb748d6593e709e8d40e1ce214396cfa6a9d";
const SECRET_AC: &str = "5afc12764daf62c8543ad4b5aec11fd495b1be1eb29428aa795a0ae2e7093635";
const SECRET_BC: &str = "6035120f05cdfa0b4fe9c5e28e326ef0df454671cebe7839f1b55aab4c75e27b";

/// fedbiomed 6.3's stream of round `round` (the vectors were made by 6.3.3).
const fn v6(round: u64) -> Stream {
    Stream {
        round,
        width: Width::W32,
        label: None,
    }
}

#[test]
fn dh_p256_concatkdf() {
    let scalar = |b: u8| [b; 32];
    let a = KeyPair::from_scalar(&scalar(0x11)).unwrap();
    let b = KeyPair::from_scalar(&scalar(0x22)).unwrap();
    let c = KeyPair::from_scalar(&scalar(0x33)).unwrap();
    assert_eq!(
        hex::encode(a.public_sec1().unwrap()),
        "040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794"
    );
    let b_pub = b.public_sec1().unwrap();
    assert_eq!(
        hex::encode(&b_pub),
        "04d65a93977caa3d1b081852ff57a79e465f1660577304baead505dd3a48589cf350185e895372df6221ea3a137557e473fddb6755f05bd507c3c533fce9c91285"
    );
    let z_ab = a.shared_x(&b_pub).unwrap();
    assert_eq!(
        hex::encode(&*z_ab),
        "ccfc261f58193c98ca4ad4a53bbac6f0ee29bc4d48438090446908622ca79af6"
    );
    assert_eq!(*z_ab, *b.shared_x(&a.public_sec1().unwrap()).unwrap());
    let salt = SECAGG_ID.as_bytes();
    // Both ends derive the same secret, whichever id comes first.
    assert_eq!(pairwise_secret(&z_ab, salt, ID_A, ID_B), key(SECRET_AB));
    assert_eq!(pairwise_secret(&z_ab, salt, ID_B, ID_A), key(SECRET_AB));
    let z_ac = a.shared_x(&c.public_sec1().unwrap()).unwrap();
    assert_eq!(pairwise_secret(&z_ac, salt, ID_C, ID_A), key(SECRET_AC));
    let z_bc = c.shared_x(&b_pub).unwrap();
    assert_eq!(pairwise_secret(&z_bc, salt, ID_B, ID_C), key(SECRET_BC));
    // Not a point: refused, not computed with.
    let mut bad = b_pub.clone();
    bad[64] ^= 1;
    assert!(a.shared_x(&bad).is_err());
}

#[test]
fn lom_1_raw() {
    let nonce: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f")
        .unwrap()
        .try_into()
        .unwrap();
    let secret = key("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    let seed = eval_key(&secret, 5, &nonce).unwrap();
    assert_eq!(
        hex::encode(seed),
        "eb469551a3974cf1e21803de586f7d3400000000000000000000000000000000"
    );
    assert_eq!(
        eval_vector(&seed, 5, 8, &nonce, Width::W32).unwrap(),
        [
            3516183850, 1783122595, 261274821, 290025612, 1943859803, 3643656604, 2443552024,
            2986695418
        ]
    );
    let xa: Vec<u64> = (0..8).collect();
    let xb: Vec<u64> = (1..=8).map(|i| 100 * i).collect();
    let ya = protect(
        "node_a",
        &[PairSecret {
            peer: "node_b",
            secret: &secret,
        }],
        2,
        v6(5),
        &xa,
        &nonce,
    )
    .unwrap();
    let yb = protect(
        "node_b",
        &[PairSecret {
            peer: "node_a",
            secret: &secret,
        }],
        2,
        v6(5),
        &xb,
        &nonce,
    )
    .unwrap();
    assert_eq!(
        ya,
        [
            778783446, 2511844702, 4033692477, 4004941687, 2351107497, 651310697, 1851415278,
            1308271885
        ]
    );
    assert_eq!(
        yb,
        [
            3516183950, 1783122795, 261275121, 290026012, 1943860303, 3643657204, 2443552724,
            2986696218
        ]
    );
    assert_eq!(
        sum(&[ya, yb], Width::W32).unwrap(),
        [100, 201, 302, 403, 504, 605, 706, 807]
    );
}

#[test]
fn lom_2_three_nodes() {
    let nonce = v6_nonce(SECAGG_ID);
    assert_eq!(hex::encode(nonce), "7365636167675f37663363396135322d");
    let (ab, ac, bc) = (key(SECRET_AB), key(SECRET_AC), key(SECRET_BC));
    let pair = |peer, secret| PairSecret { peer, secret };
    let ya = protect(
        ID_A,
        &[pair(ID_B, &ab), pair(ID_C, &ac)],
        3,
        v6(3),
        &[1, 2, 3, 4, 5],
        &nonce,
    )
    .unwrap();
    let yb = protect(
        ID_B,
        &[pair(ID_A, &ab), pair(ID_C, &bc)],
        3,
        v6(3),
        &[10, 20, 30, 40, 50],
        &nonce,
    )
    .unwrap();
    let yc = protect(
        ID_C,
        &[pair(ID_B, &bc), pair(ID_A, &ac)],
        3,
        v6(3),
        &[1000, 2000, 3000, 4000, 5000],
        &nonce,
    )
    .unwrap();
    assert_eq!(
        ya,
        [181022399, 3618194017, 3940613087, 2203225210, 2712032149]
    );
    assert_eq!(
        yb,
        [3456984639, 750410016, 522214522, 2818483360, 1366662167]
    );
    assert_eq!(
        yc,
        [656961269, 4221332581, 4127110016, 3568230066, 216278035]
    );
    assert_eq!(
        sum(&[ya, yb, yc], Width::W32).unwrap(),
        [1011, 2022, 3033, 4044, 5055]
    );
}

#[test]
fn lom_3_float_pipeline() {
    let nonce = v6_nonce(SECAGG_ID);
    let ab = key(SECRET_AB);
    let (qa, _) = quantize(&[0.0, -0.5, 1.25, 3.0, -3.5], 3).unwrap();
    assert_eq!(qa, [4096, 3413, 5802, 8191, 0]);
    let (qb, clipped) = quantize(&[0.1, 0.2, -0.3, 2.9, 0.0], 3).unwrap();
    assert_eq!(qb, [4232, 4369, 3686, 8055, 4096]);
    assert_eq!((clipped.below, clipped.above), (0, 0));
    let wa: Vec<u64> = qa.iter().map(|q| q * 10).collect();
    let wb: Vec<u64> = qb.iter().map(|q| q * 30).collect();
    let ya = protect(
        ID_A,
        &[PairSecret {
            peer: ID_B,
            secret: &ab,
        }],
        2,
        v6(1),
        &wa,
        &nonce,
    )
    .unwrap();
    let yb = protect(
        ID_B,
        &[PairSecret {
            peer: ID_A,
            secret: &ab,
        }],
        2,
        v6(1),
        &wb,
        &nonce,
    )
    .unwrap();
    assert_eq!(
        ya,
        [1031048629, 3886952510, 4248824469, 2492751702, 2928727639]
    );
    assert_eq!(
        yb,
        [3264086587, 408179986, 46311427, 1802539154, 1366362537]
    );
    let sums = sum(&[ya, yb], Width::W32).unwrap();
    assert_eq!(sums, [167920, 165200, 168600, 323560, 122880]);
    assert_eq!(
        average(&sums, 40, 3).unwrap(),
        [
            0.07508240752044948,
            0.02527163960444412,
            0.08753509949945082,
            2.925283848125992,
            -0.7497253082651687
        ]
    );
}

#[test]
fn quantize_matches_v6_examples_and_reports_clipping() {
    let (q, clipped) = quantize(&[-3.0, -1.0, 0.0, 1.0, 2.9999, 3.0, 10.0, -7.0], 3).unwrap();
    assert_eq!(q, [0, 2730, 4096, 5461, 8191, 8191, 8191, 0]);
    assert_eq!((clipped.below, clipped.above), (1, 1));
    assert!(quantize(&[f64::NAN], 3).is_err());
    assert!(quantize(&[1.0], 0).is_err());
}

#[test]
fn protect_refuses_what_v6_refuses() {
    let s = key(SECRET_AB);
    let nonce = v6_nonce(SECAGG_ID);
    let one = [PairSecret {
        peer: ID_B,
        secret: &s,
    }];
    // Two nodes leave 31 bits per value; 2^31 does not fit.
    assert!(protect(ID_A, &one, 2, v6(1), &[1 << 31], &nonce).is_err());
    assert!(protect(ID_A, &one, 2, v6(1), &[(1 << 31) - 1], &nonce).is_ok());
    assert!(protect(ID_A, &one, 2, v6(1), &[], &nonce).is_err());
    assert!(protect(ID_A, &one, 3, v6(1), &[1], &nonce).is_err()); // a secret missing
                                                                   // Counters beyond 2^32 − 1.
    assert!(protect(ID_A, &one, 2, v6(u64::from(u32::MAX)), &[1, 2], &nonce).is_err());
    // fedbiomed 6.4: 64-bit words, and a value of exactly 64 − ⌈log2 n⌉ bits is refused.
    let v64 = Stream {
        round: 1,
        width: Width::W64,
        label: None,
    };
    assert!(protect(ID_A, &one, 2, v64, &[(1 << 62) - 1], &nonce).is_ok());
    assert!(protect(ID_A, &one, 2, v64, &[1 << 62], &nonce).is_err());
}

#[test]
fn labelled_streams_differ_from_each_other_and_cancel_in_the_sum() {
    let nonce = [7u8; 16];
    let (ab, ac, bc) = (key(SECRET_AB), key(SECRET_AC), key(SECRET_BC));
    let pair = |peer, secret| PairSecret { peer, secret };
    let x = [5u64; 64];
    let weights = Stream {
        round: 2,
        width: Width::W64,
        label: Some(0),
    };
    let validation = Stream {
        round: 2,
        width: Width::W64,
        label: Some(1),
    };
    let a_w = protect(
        ID_A,
        &[pair(ID_B, &ab), pair(ID_C, &ac)],
        3,
        weights,
        &x,
        &nonce,
    )
    .unwrap();
    let a_v = protect(
        ID_A,
        &[pair(ID_B, &ab), pair(ID_C, &ac)],
        3,
        validation,
        &x,
        &nonce,
    )
    .unwrap();
    let a_v6 = protect(
        ID_A,
        &[pair(ID_B, &ab), pair(ID_C, &ac)],
        3,
        v6(2),
        &x,
        &nonce,
    )
    .unwrap();
    assert_ne!(a_w, a_v);
    assert_ne!(a_w, a_v6);
    let b_v = protect(
        ID_B,
        &[pair(ID_A, &ab), pair(ID_C, &bc)],
        3,
        validation,
        &x,
        &nonce,
    )
    .unwrap();
    let c_v = protect(
        ID_C,
        &[pair(ID_A, &ac), pair(ID_B, &bc)],
        3,
        validation,
        &x,
        &nonce,
    )
    .unwrap();
    assert_eq!(sum(&[a_v, b_v, c_v], Width::W64).unwrap(), vec![15u64; 64]);
}

/// A round missing a node's vector (or with one altered) leaves masks that do not cancel: v6
/// returns noise as an average; secagg refuses it.
#[test]
fn a_round_missing_a_vector_is_refused_not_averaged() {
    use super::{decrypt, Profile};
    let nonce = v6_nonce(SECAGG_ID);
    let (ab, ac, bc) = (key(SECRET_AB), key(SECRET_AC), key(SECRET_BC));
    let pair = |peer, secret| PairSecret { peer, secret };
    let stream = Profile::FedbiomedV64.stream(4, 0);
    let x = [4096u64 * 10; 50];
    let ya = protect(
        ID_A,
        &[pair(ID_B, &ab), pair(ID_C, &ac)],
        3,
        stream,
        &x,
        &nonce,
    )
    .unwrap();
    let yb = protect(
        ID_B,
        &[pair(ID_A, &ab), pair(ID_C, &bc)],
        3,
        stream,
        &x,
        &nonce,
    )
    .unwrap();
    let yc = protect(
        ID_C,
        &[pair(ID_A, &ac), pair(ID_B, &bc)],
        3,
        stream,
        &x,
        &nonce,
    )
    .unwrap();
    let all = decrypt(&[ya.clone(), yb.clone(), yc], Width::W64, 30, 3).unwrap();
    assert!(all.iter().all(|v| v.abs() < 1e-3), "{all:?}");
    let missing = decrypt(&[ya.clone(), yb], Width::W64, 20, 3).unwrap_err();
    assert!(
        missing.to_string().contains("do not sum to an average"),
        "{missing}"
    );
    let mut altered = ya;
    altered[7] ^= 1 << 40;
    assert!(decrypt(&[altered, vec![0; 50]], Width::W64, 30, 3).is_err());
}
