//! Fed-BioMed v6's schemes for Python: LOM (`secagg_core::lom`: `LOM.protect`,
//! `SecaggLomCrypter.encrypt` / `aggregate`, the pairwise-secret derivation) and Joye–Libert with
//! v6's encoding (`secagg_core::aggregate::v6`: `SecaggCrypter.encrypt` / `aggregate`), computed
//! by the core with the GIL released. Vectors are lists of ints or floats.

use std::collections::BTreeMap;

use num_bigint::{BigInt, BigUint};
use pyo3::prelude::*;
use secagg_core::aggregate::{aggregate, v6, Biprime};
use secagg_core::engine::SecretKey;
use secagg_core::lom::{self, dh, encoding, mask, prf, PairSecret, Stream, Width};

use crate::errors::{invalid, unlocked, CoreError, CoreResult};

fn nonce16(nonce: &[u8]) -> CoreResult<[u8; prf::NONCE_LEN]> {
    nonce.try_into().map_err(|_| {
        invalid(format!(
            "a LOM nonce is {} bytes, not {}",
            prf::NONCE_LEN,
            nonce.len()
        ))
    })
}

fn key32(what: &str, bytes: &[u8]) -> CoreResult<prf::Key32> {
    bytes
        .try_into()
        .map_err(|_| invalid(format!("{what} is 32 bytes, not {}", bytes.len())))
}

fn width(bits: u32) -> CoreResult<Width> {
    match bits {
        32 => Ok(Width::W32),
        64 => Ok(Width::W64),
        other => Err(invalid(format!(
            "a LOM word is 32 bits (fedbiomed 6.0-6.3) or 64 bits (fedbiomed 6.4), not {other}"
        ))),
    }
}

fn stream(round: u64, bits: u32, label: Option<u64>) -> CoreResult<Stream> {
    Ok(Stream {
        round,
        width: width(bits)?,
        label,
    })
}

/// The secrets of `node_id` with every other node of `node_ids`, from `secrets` (peer → 32
/// bytes), in a form the core takes.
fn secret_table(
    node_id: &str,
    secrets: &BTreeMap<String, Vec<u8>>,
    node_ids: &[String],
) -> CoreResult<Vec<(String, prf::Key32)>> {
    node_ids
        .iter()
        .filter(|p| p.as_str() != node_id)
        .map(|p| {
            let s = secrets
                .get(p)
                .ok_or_else(|| invalid(format!("no pairwise secret for node `{p}`")))?;
            Ok((
                p.clone(),
                key32(&format!("the pairwise secret of `{p}`"), s)?,
            ))
        })
        .collect()
}

/// The core's view of a secret table.
fn pairs(table: &[(String, prf::Key32)]) -> Vec<PairSecret<'_>> {
    table
        .iter()
        .map(|(peer, secret)| PairSecret { peer, secret })
        .collect()
}

/// v6's nonce of `secagg_id`: its UTF-8 bytes left-padded with `0` to 16, cut to 16.
#[pyfunction]
pub fn lom_v6_nonce(secagg_id: &str) -> Vec<u8> {
    lom::v6_nonce(secagg_id).to_vec()
}

/// v6's `LOM.protect(node_id, pairwise_secrets, tau, x_u_tau, node_ids)` with the context's
/// `nonce` (16 bytes), in words of `bits` (64: fedbiomed 6.4, 32: 6.0-6.3); `label` selects
/// secagg's per-label stream instead of v6's.
#[pyfunction]
#[pyo3(signature = (node_id, secrets, tau, x, node_ids, nonce, bits=64, label=None))]
#[allow(clippy::too_many_arguments)]
pub fn lom_protect(
    py: Python<'_>,
    node_id: String,
    secrets: BTreeMap<String, Vec<u8>>,
    tau: u64,
    x: Vec<u64>,
    node_ids: Vec<String>,
    nonce: Vec<u8>,
    bits: u32,
    label: Option<u64>,
) -> PyResult<Vec<u64>> {
    let nonce = nonce16(&nonce)?;
    let table = secret_table(&node_id, &secrets, &node_ids)?;
    let stream = stream(tau, bits, label)?;
    unlocked(py, || {
        mask::protect(&node_id, &pairs(&table), node_ids.len(), stream, &x, &nonce)
    })
}

/// v6's `SecaggLomCrypter.encrypt`: quantize `params` (clipping range `clipping_range`, default
/// 3), weight, mask. Returns `(masked values, (clipped below, clipped above))`.
#[pyfunction]
#[pyo3(signature = (node_id, secrets, tau, params, node_ids, nonce, weight=None, clipping_range=None, bits=64, label=None))]
#[allow(clippy::too_many_arguments)]
pub fn lom_encrypt(
    py: Python<'_>,
    node_id: String,
    secrets: BTreeMap<String, Vec<u8>>,
    tau: u64,
    params: Vec<f64>,
    node_ids: Vec<String>,
    nonce: Vec<u8>,
    weight: Option<u64>,
    clipping_range: Option<u32>,
    bits: u32,
    label: Option<u64>,
) -> PyResult<(Vec<u64>, (usize, usize))> {
    let nonce = nonce16(&nonce)?;
    let table = secret_table(&node_id, &secrets, &node_ids)?;
    let stream = stream(tau, bits, label)?;
    let c = clipping_range.unwrap_or(encoding::DEFAULT_CLIPPING_RANGE);
    let masked = unlocked(py, || {
        lom::encrypt(
            &node_id,
            &pairs(&table),
            node_ids.len(),
            stream,
            &params,
            weight,
            c,
            &nonce,
        )
    })?;
    Ok((masked.values, (masked.clipped.below, masked.clipped.above)))
}

/// v6's `SecaggLomCrypter.aggregate`: the sum of every node's masked vector, averaged by
/// `total_sample_size`, reverse-quantized; words of `bits`.
#[pyfunction]
#[pyo3(signature = (vectors, total_sample_size, clipping_range=None, bits=64))]
pub fn lom_decrypt(
    py: Python<'_>,
    vectors: Vec<Vec<u64>>,
    total_sample_size: u64,
    clipping_range: Option<u32>,
    bits: u32,
) -> PyResult<Vec<f64>> {
    let c = clipping_range.unwrap_or(encoding::DEFAULT_CLIPPING_RANGE);
    let width = width(bits)?;
    unlocked(py, || lom::decrypt(&vectors, width, total_sample_size, c))
}

/// The pairwise secret of nodes `a` and `b`: ECDH of the private scalar `private_scalar` (32
/// bytes big-endian) with the other node's SEC1 public key, then v6's KDF with `salt`. For
/// cross-checks against v6 (a live context never exposes its private key).
#[pyfunction]
pub fn lom_dh_secret(
    py: Python<'_>,
    private_scalar: Vec<u8>,
    peer_public_sec1: Vec<u8>,
    salt: Vec<u8>,
    a: String,
    b: String,
) -> PyResult<Vec<u8>> {
    let scalar = key32("a P-256 private scalar", &private_scalar)?;
    unlocked(py, || {
        let pair = dh::KeyPair::from_scalar(&scalar)?;
        let z = pair.shared_x(&peer_public_sec1)?;
        Ok(dh::pairwise_secret(&z, &salt, &a, &b).to_vec())
    })
}

/// The SEC1 uncompressed public key of the private scalar `private_scalar`.
#[pyfunction]
pub fn lom_dh_public(py: Python<'_>, private_scalar: Vec<u8>) -> PyResult<Vec<u8>> {
    let scalar = key32("a P-256 private scalar", &private_scalar)?;
    unlocked(py, || dh::KeyPair::from_scalar(&scalar)?.public_sec1())
}

/// v6's `SecaggCrypter.encrypt(num_nodes, current_round, params, key, biprime, clipping_range,
/// weight)`: Joye–Libert with v6's encoding (`secagg_core::aggregate::v6`). Returns
/// `(ciphertexts, (clipped below, clipped above))`.
#[pyfunction]
#[pyo3(signature = (num_nodes, current_round, params, key, biprime, clipping_range=None, weight=None))]
#[allow(clippy::too_many_arguments)]
pub fn jl_v6_encrypt(
    py: Python<'_>,
    num_nodes: usize,
    current_round: u64,
    params: Vec<f64>,
    key: BigInt,
    biprime: BigUint,
    clipping_range: Option<u32>,
    weight: Option<u64>,
) -> PyResult<(Vec<BigUint>, (usize, usize))> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    let c = clipping_range.unwrap_or(encoding::DEFAULT_CLIPPING_RANGE);
    let e = unlocked(py, || {
        v6::encrypt(
            &params,
            weight,
            c,
            &key,
            current_round,
            num_nodes,
            &biprime,
            None,
        )
    })?;
    Ok((e.ciphertexts, (e.clipped.below, e.clipped.above)))
}

/// v6's `SecaggCrypter.aggregate(current_round, num_nodes, params, key, biprime,
/// total_sample_size, clipping_range, num_expected_params)`: the product of every node's
/// ciphertexts, decrypted with the server key `key`, the `num_expected_params` averages.
#[pyfunction]
#[pyo3(signature = (current_round, num_nodes, params, key, biprime, total_sample_size, clipping_range=None, num_expected_params=1))]
#[allow(clippy::too_many_arguments)]
pub fn jl_v6_decrypt(
    py: Python<'_>,
    current_round: u64,
    num_nodes: usize,
    params: Vec<Vec<BigUint>>,
    key: BigInt,
    biprime: BigUint,
    total_sample_size: u64,
    clipping_range: Option<u32>,
    num_expected_params: usize,
) -> PyResult<Vec<f64>> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    let c = clipping_range.unwrap_or(encoding::DEFAULT_CLIPPING_RANGE);
    unlocked(py, || {
        let aggregated = aggregate(&params, &biprime)?;
        v6::decrypt(
            &aggregated,
            &key,
            current_round,
            num_nodes,
            num_expected_params,
            total_sample_size,
            c,
            &biprime,
            None,
        )
    })
}

/// Registers this module's functions in `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(lom_v6_nonce, m)?)?;
    m.add_function(wrap_pyfunction!(lom_protect, m)?)?;
    m.add_function(wrap_pyfunction!(lom_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(lom_decrypt, m)?)?;
    m.add_function(wrap_pyfunction!(lom_dh_secret, m)?)?;
    m.add_function(wrap_pyfunction!(lom_dh_public, m)?)?;
    m.add_function(wrap_pyfunction!(jl_v6_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(jl_v6_decrypt, m)?)?;
    Ok(())
}
