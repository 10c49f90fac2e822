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
//! - `eval_vector(seed, τ, n)` = ChaCha20(key = seed, IV = nonce) over the big-endian words
//!   τ, τ+1, …, τ+n−1, read back as little-endian words: `u32`s up to fedbiomed 6.3 (the
//!   reference's §3.3), `u64`s since 6.4 ([`Width`]).

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

/// The word size of a context's vectors: fedbiomed 6.3 masks `u32`s (counters and words of 4
/// bytes), fedbiomed 6.4 `u64`s (8 bytes); secagg's own profile takes 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 32-bit words (fedbiomed ≤ 6.3).
    W32,
    /// 64-bit words (fedbiomed 6.4).
    W64,
}

impl Width {
    /// Bits per word.
    pub fn bits(self) -> u32 {
        match self {
            Width::W32 => 32,
            Width::W64 => 64,
        }
    }

    fn bytes(self) -> usize {
        self.bits() as usize / 8
    }

    /// `v` reduced to a word (mod 2^bits).
    pub fn reduce(self, v: u64) -> u64 {
        match self {
            Width::W32 => v & u64::from(u32::MAX),
            Width::W64 => v,
        }
    }
}

/// Adds (`add`) or subtracts the `mask.len()` words of v6's `PRF.eval_vector(seed, tau, n)` to
/// `mask`, wrapping (callers reduce to the width at the end). `scratch` is reused between calls.
pub fn apply_vector(
    seed: &Key32,
    tau: u64,
    nonce: &[u8; NONCE_LEN],
    width: Width,
    mask: &mut [u64],
    add: bool,
    scratch: &mut Scratch,
) -> Result<()> {
    check_round(tau, mask.len() as u64, width)?;
    scratch.fill_counters(tau, mask.len(), width);
    let Scratch { input, output, .. } = scratch;
    chacha20(seed, nonce, input, output)?;
    let apply = |m: &mut u64, v: u64| {
        *m = if add {
            m.wrapping_add(v)
        } else {
            m.wrapping_sub(v)
        }
    };
    match width {
        Width::W32 => {
            for (m, w) in mask.iter_mut().zip(output.chunks_exact(4)) {
                apply(m, u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]])));
            }
        }
        Width::W64 => {
            for (m, w) in mask.iter_mut().zip(output.chunks_exact(8)) {
                let mut b = [0u8; 8];
                b.copy_from_slice(w);
                apply(m, u64::from_le_bytes(b));
            }
        }
    }
    Ok(())
}

/// v6's `PRF.eval_vector(seed, tau, n)` as words of `width`.
pub fn eval_vector(
    seed: &Key32,
    tau: u64,
    n: usize,
    nonce: &[u8; NONCE_LEN],
    width: Width,
) -> Result<Vec<u64>> {
    let mut v = vec![0u64; n];
    apply_vector(
        seed,
        tau,
        nonce,
        width,
        &mut v,
        true,
        &mut Scratch::default(),
    )?;
    Ok(v.into_iter().map(|x| width.reduce(x)).collect())
}

/// v6's limits: 6.3 needs `n + 1000 ≤ 2^32` and counters `τ + i` below 2^32, 6.4 `n + 1000 ≤
/// 2^61` and counters below 2^64 (`OverflowError` in v6 otherwise).
fn check_round(tau: u64, n: u64, width: Width) -> Result<()> {
    let (max_len, max_counter) = match width {
        Width::W32 => (1u64 << 32, u64::from(u32::MAX)),
        Width::W64 => (1u64 << 61, u64::MAX),
    };
    if n + MAX_ROUND > max_len {
        return Err(Error::invalid(format!(
            "a LOM vector holds at most {} values, not {n}",
            max_len - MAX_ROUND
        )));
    }
    if n > 0 && tau.checked_add(n - 1).is_none_or(|last| last > max_counter) {
        return Err(Error::invalid(format!(
            "round {tau} with {n} values needs counters beyond 2^{} − 1",
            width.bits()
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
    filled: Option<(u64, usize, Width)>,
}

impl Scratch {
    fn fill_counters(&mut self, tau: u64, n: usize, width: Width) {
        if self.filled == Some((tau, n, width)) {
            return;
        }
        self.filled = Some((tau, n, width));
        self.input.clear();
        self.input.reserve(width.bytes() * n);
        // `check_round` made every τ + i fit in the width.
        for i in 0..n as u64 {
            let counter = tau + i;
            match width {
                Width::W32 => self
                    .input
                    .extend_from_slice(&(counter as u32).to_be_bytes()),
                Width::W64 => self.input.extend_from_slice(&counter.to_be_bytes()),
            }
        }
        self.output.resize(width.bytes() * n, 0);
    }
}
