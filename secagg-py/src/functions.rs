//! The module-level functions of `secagg._native` that need no home: error kinds, session and
//! party ids, certificates and biprimes, and the Joye–Libert primitives Fed-BioMed's
//! `SecaggCrypter` uses; `register(m)` adds them to the module.

use num_bigint::{BigInt, BigUint};
use pyo3::prelude::*;
use secagg_core::aggregate::{self, Biprime};
use secagg_core::certificate::{self, DEFAULT_VALIDITY_DAYS};
use secagg_core::engine::SecretKey;
use secagg_core::{Endpoint, ErrorKind, PartyId, SessionId};
use serde_json::Value;
use time::OffsetDateTime;

use crate::convert::{self, session_id, value_to_py};
use crate::errors::{unlocked, CoreError};

/// Every error kind: `name`, `exit_code` and `description`, in exit-code order (the CLI's
/// table, from the core's single list).
#[pyfunction]
fn error_kinds(py: Python<'_>) -> PyResult<PyObject> {
    let kinds: Vec<Value> = ErrorKind::ALL
        .iter()
        .map(|k| {
            serde_json::json!({
                "name": k.name(),
                "exit_code": k.exit_code(),
                "description": k.description(),
            })
        })
        .collect();
    value_to_py(py, &Value::Array(kinds))
}

/// A fresh session id (uuid4); with `fedbiomed=True` in Fed-BioMed's `secagg_<uuid>` form.
#[pyfunction]
#[pyo3(signature = (fedbiomed=false))]
fn new_session_id(fedbiomed: bool) -> String {
    let id = SessionId::generate();
    if fedbiomed {
        id.fedbiomed_form()
    } else {
        id.to_string()
    }
}

/// The uuid form of a session id (`secagg_<uuid>` or any uuid spelling), as stored; raises
/// `InvalidInput` for anything else.
#[pyfunction]
fn normalize_session_id(session: &str) -> PyResult<String> {
    Ok(session_id(session)?.to_string())
}

/// Checks a party id (`researcher_…` / `node_…`); returns its role. Raises `InvalidInput`.
#[pyfunction]
fn party_role(party_id: &str) -> PyResult<String> {
    Ok(convert::party_id(party_id)?.role().to_string())
}

/// Generates a key pair and a self-signed certificate (`CN=*`, `O=<party_id>`, X.509 v3,
/// serverAuth + clientAuth) without a home: returns `(key_pem, certificate_pem)`. `party_id`
/// may be a Fed-BioMed custom id.
#[pyfunction]
#[pyo3(signature = (party_id, key_type="p256", days=DEFAULT_VALIDITY_DAYS))]
fn generate_certificate(party_id: &str, key_type: &str, days: u32) -> PyResult<(String, String)> {
    let id = PartyId::parse_custom(party_id).map_err(CoreError)?;
    let g = certificate::generate(
        &id,
        key_type.parse().map_err(CoreError)?,
        days,
        OffsetDateTime::now_utc(),
    )
    .map_err(CoreError)?;
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", g.certificate.der.clone()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok((g.key_pem.to_string(), pem))
}

/// Reads a biprime in Fed-BioMed's JSON form (`{"secagg_id": …, "biprime": <integer>,
/// "max_keysize": …}`, the text of a file such as Fed-BioMed's `biprime0.json`) as secagg reads
/// `--biprime FILE`, checking the value (odd, 512 to 1024 bits). Returns `(secagg_id, biprime)`;
/// raises `InvalidInput`.
#[pyfunction]
fn read_biprime(text: &str) -> PyResult<(String, BigUint)> {
    let b = Biprime::from_fedbiomed_json(text).map_err(CoreError)?;
    Ok((b.name.clone(), b.n().clone()))
}

/// The line of MP-SPDZ's ip file for the endpoint `ip`:`port` (without its newline), by the
/// core's rule: an IPv4 address or a host name as is, an IPv4-mapped IPv6 address as IPv4, any
/// other IPv6 address refused (`InvalidInput`: MP-SPDZ splits at the first `:`).
#[pyfunction]
fn ip_file_line(ip: &str, port: u32) -> PyResult<String> {
    let endpoint = Endpoint::new(ip, port).map_err(CoreError)?;
    Ok(secagg_core::mpspdz::ip_file_line(&endpoint).map_err(CoreError)?)
}

/// Joye–Libert encryption with a node's key, bit-compatible with Fed-BioMed v4.5.0's
/// `SecaggCrypter.encrypt`: `params` quantised with `clipping_range`, packed for `num_nodes`
/// nodes, encrypted for round `round`. Returns the ciphertexts (ints).
#[pyfunction]
#[pyo3(signature = (num_nodes, round, params, key, biprime, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE))]
fn jl_encrypt(
    py: Python<'_>,
    num_nodes: usize,
    round: u64,
    params: Vec<f64>,
    key: BigInt,
    biprime: BigUint,
    clipping_range: u32,
) -> PyResult<Vec<BigUint>> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    let q = aggregate::quantize(&params, clipping_range).map_err(CoreError)?;
    unlocked(py, || {
        aggregate::encrypt(&q, &key, round, num_nodes, &biprime)
    })
}

/// Joye–Libert aggregation and decryption with the server key: the product of every node's
/// ciphertexts (`ciphertexts[i]` from node i), decrypted for round `round`, unpacked into
/// `count` sums of quantised values (default: every value the ciphertexts can hold).
#[pyfunction]
#[pyo3(signature = (num_nodes, round, ciphertexts, key, biprime, count=None))]
fn jl_decrypt_sums(
    py: Python<'_>,
    num_nodes: usize,
    round: u64,
    ciphertexts: Vec<Vec<BigUint>>,
    key: BigInt,
    biprime: BigUint,
    count: Option<usize>,
) -> PyResult<Vec<u64>> {
    let biprime = Biprime::new("biprime", biprime).map_err(CoreError)?;
    let key = SecretKey::from_bigint(&key);
    unlocked(py, || {
        let aggregated = aggregate::aggregate(&ciphertexts, &biprime)?;
        let count =
            count.unwrap_or(aggregated.len() * aggregate::elements_per_plaintext(num_nodes));
        aggregate::decrypt(&aggregated, &key, round, num_nodes, count, &biprime)
    })
}

/// The average of `num_nodes` nodes' values from the sums of their quantised values, back in
/// the original scale (Fed-BioMed's reverse quantisation).
#[pyfunction]
#[pyo3(signature = (sums, num_nodes, clipping_range=aggregate::DEFAULT_CLIPPING_RANGE))]
fn jl_average(sums: Vec<u64>, num_nodes: usize, clipping_range: u32) -> Vec<f64> {
    aggregate::average(&sums, num_nodes, clipping_range)
}

/// Registers this module's functions in `m`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(error_kinds, m)?)?;
    m.add_function(wrap_pyfunction!(new_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(normalize_session_id, m)?)?;
    m.add_function(wrap_pyfunction!(party_role, m)?)?;
    m.add_function(wrap_pyfunction!(generate_certificate, m)?)?;
    m.add_function(wrap_pyfunction!(read_biprime, m)?)?;
    m.add_function(wrap_pyfunction!(ip_file_line, m)?)?;
    m.add_function(wrap_pyfunction!(jl_encrypt, m)?)?;
    m.add_function(wrap_pyfunction!(jl_decrypt_sums, m)?)?;
    m.add_function(wrap_pyfunction!(jl_average, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    Ok(())
}

/// Runs the `secagg` command line `args` (program name first), as the `secagg` binary does,
/// with the GIL released; returns its exit status. For the package's console script
/// (`secagg._cli`), which runs nothing else in its process: the command may take the process's
/// signals (`serve`, `demo`) and exit it (help, version, usage errors).
#[pyfunction]
fn cli_main(py: Python<'_>, args: Vec<std::ffi::OsString>) -> u8 {
    py.allow_threads(|| secagg_cli::run(args))
}
