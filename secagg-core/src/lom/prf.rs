//! LOM's pseudo-random function, exactly as Fed-BioMed v6 runs it (reference §3.1, §3.3).
//!
//! ChaCha20 with a 16-byte IV: OpenSSL's `EVP_chacha20`, which is what v6 calls through
//! `cryptography`. The IV's first 8 bytes are a little-endian 64-bit block counter (state words
//! 12–13, an overflow of word 12 carried into word 13) and its last 8 bytes the nonce. Using
//! the same implementation as v6 makes that counter handling identical by construction, where a
//! RustCrypto `chacha20` (its IETF variant has a 32-bit counter; its legacy one needs a seek by
//! byte offset that overflows `u64` for an ASCII counter) would have to emulate it. OpenSSL's
//! ChaCha20 is vectorised (SSSE3/AVX2/AVX-512 code paths); `benches/lom.rs` measures it here.
//!
//! - `eval_key(secret, τ)` = ChaCha20(key = secret, IV = nonce) over τ as 16 bytes big-endian,
//!   then 16 zero bytes: the 32-byte seed of round τ.
//! - `eval_vector(seed, τ, n)` = ChaCha20(key = seed, IV = nonce) over the big-endian `u32`s
//!   τ, τ+1, …, τ+n−1, read back as little-endian `u32`s.

use openssl::symm::{Cipher, Crypter, Mode};

use crate::error::{Error, Result};

/// Length of a LOM nonce (ChaCha20's IV as OpenSSL takes it).
pub const NONCE_LEN: usize = 16;

/// v6's bound on a vector's length: `n + 1000 ≤ 2^32` (`_lom._MAX_ROUND`).
const MAX_ROUND: u64 = 1000;

/// A 32-byte ChaCha20 key: a pairwise secret, or a round's seed derived from one.
pub type Key32 = [u8; 32];

/// ChaCha20 of `input` under `key` and the 16-byte `iv`, into `output` (same length).
fn chacha20(key: &Key32, iv: &[u8; NONCE_LEN], input: &[u8], output: &mut [u8]) -> Result<()> {
    let failed =
        |e: openssl::error::ErrorStack| Error::internal(format!("ChaCha20 (OpenSSL) failed: {e}"));
    let mut c = Crypter::new(Cipher::chacha20(), Mode::Encrypt, key, Some(iv)).map_err(failed)?;
    // OpenSSL may write up to one block more than given for block ciphers; a stream cipher writes
    // exactly `input.len()`, but the API asks for the room.
    let n = c.update(input, output).map_err(failed)?;
    if n != input.len() {
        return Err(Error::internal(format!(
            "ChaCha20 (OpenSSL) produced {n} bytes for {}",
            input.len()
        )));
    }
    Ok(())
}

/// The seed of round `tau` for the pairwise `secret` (v6's `PRF.eval_key`).
pub fn eval_key(secret: &Key32, tau: u64, nonce: &[u8; NONCE_LEN]) -> Result<Key32> {
    let plaintext = u128::from(tau).to_be_bytes();
    let mut seed = [0u8; 32];
    chacha20(secret, nonce, &plaintext, &mut seed[..16])?;
    Ok(seed)
}

/// secagg's per-label seed: ChaCha20 over the 16-byte block τ (8 bytes big-endian) ‖ `label`
/// (8 bytes big-endian), then 16 zero bytes: each (round, label) pair has its own block, hence
/// its own seed and stream.
pub fn eval_key_block(
    secret: &Key32,
    tau: u64,
    label: u64,
    nonce: &[u8; NONCE_LEN],
) -> Result<Key32> {
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(&tau.to_be_bytes());
    block[8..].copy_from_slice(&label.to_be_bytes());
    let mut seed = [0u8; 32];
    chacha20(secret, nonce, &block, &mut seed[..16])?;
    Ok(seed)
}

/// Adds (`add`) or subtracts the `mask.len()` words of v6's `PRF.eval_vector(seed, tau, n)` to
/// `mask`, wrapping mod 2^32. `scratch` is reused between calls (4n bytes in, 4n out).
pub fn apply_vector(
    seed: &Key32,
    tau: u64,
    nonce: &[u8; NONCE_LEN],
    mask: &mut [u32],
    add: bool,
    scratch: &mut Scratch,
) -> Result<()> {
    let n = mask.len() as u64;
    check_round(tau, n)?;
    scratch.fill_counters(tau, mask.len());
    let Scratch { input, output, .. } = scratch;
    chacha20(seed, nonce, input, output)?;
    for (m, w) in mask.iter_mut().zip(output.chunks_exact(4)) {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        *m = if add {
            m.wrapping_add(v)
        } else {
            m.wrapping_sub(v)
        };
    }
    Ok(())
}

/// v6's `PRF.eval_vector(seed, tau, n)`.
pub fn eval_vector(seed: &Key32, tau: u64, n: usize, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u32>> {
    let mut v = vec![0u32; n];
    apply_vector(seed, tau, nonce, &mut v, true, &mut Scratch::default())?;
    Ok(v)
}

/// v6's limits: a vector of `n` words needs `n + 1000 ≤ 2^32`, and its counters `τ + i` must fit
/// in 32 bits (`OverflowError` in v6).
fn check_round(tau: u64, n: u64) -> Result<()> {
    if n + MAX_ROUND > 1 << 32 {
        return Err(Error::invalid(format!(
            "a LOM vector holds at most {} values, not {n}",
            (1u64 << 32) - MAX_ROUND
        )));
    }
    if n > 0 && tau + n - 1 > u64::from(u32::MAX) {
        return Err(Error::invalid(format!(
            "round {tau} with {n} values needs counters beyond 2^32 − 1"
        )));
    }
    Ok(())
}

/// The plaintext (big-endian counters) and ciphertext buffers of [`apply_vector`], kept between
/// the pairs of one vector.
#[derive(Default)]
pub struct Scratch {
    input: Vec<u8>,
    output: Vec<u8>,
    /// The (τ, n) whose counters `input` holds: every pair of a vector uses the same ones.
    filled: Option<(u64, usize)>,
}

impl Scratch {
    fn fill_counters(&mut self, tau: u64, n: usize) {
        if self.filled == Some((tau, n)) {
            return;
        }
        self.filled = Some((tau, n));
        self.input.clear();
        self.input.reserve(4 * n);
        // `check_round` made every τ + i fit in a u32.
        let first = tau as u32;
        for i in 0..n as u32 {
            self.input
                .extend_from_slice(&first.wrapping_add(i).to_be_bytes());
        }
        self.output.resize(4 * n, 0);
    }
}
