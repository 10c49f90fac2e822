//! Fed-BioMed v6's float encoding for secure aggregation (reference §2), exact to the float64
//! operation: quantization to [0, T−1] with T = 2^13, weighting by the node's sample count, and,
//! at the researcher, the truncated average and reverse quantization.

use crate::error::{Error, Result};

/// v6's `SAParameters.TARGET_RANGE`: quantized values lie in [0, T − 1].
pub const TARGET_RANGE: u64 = 1 << 13;
/// v6's `SAParameters.CLIPPING_RANGE`.
pub const DEFAULT_CLIPPING_RANGE: u32 = 3;
/// v6's `SAParameters.WEIGHT_RANGE`: a weight's bit length is at most 17 (≤ 131,071).
pub const WEIGHT_RANGE: u64 = 1 << 17;

/// One value quantized as v6 does: `trunc(min(T−1, ((clamp(x, −c, c) + c) · T) / (2c)))` in
/// float64, in that order.
pub fn quantize_one(x: f64, c: u32) -> u64 {
    let c = f64::from(c);
    let clamped = x.clamp(-c, c);
    let scaled = (clamped + c) * TARGET_RANGE as f64 / (2.0 * c);
    let top = (TARGET_RANGE - 1) as f64;
    // `as u64` truncates toward zero, as numpy's float → uint64 conversion does.
    if scaled < top {
        scaled as u64
    } else {
        TARGET_RANGE - 1
    }
}

/// What [`quantize`] saw: how many values lay outside [−c, c] (v6 logs it at info level only;
/// secagg reports the count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clipped {
    /// Values below −c.
    pub below: usize,
    /// Values above c.
    pub above: usize,
}

/// Quantizes `xs` with clipping range `c`, refusing a non-finite value (v6 would turn NaN into an
/// arbitrary integer).
pub fn quantize(xs: &[f64], c: u32) -> Result<(Vec<u64>, Clipped)> {
    check_clipping_range(c)?;
    let mut clipped = Clipped::default();
    let mut out = Vec::with_capacity(xs.len());
    for (i, &x) in xs.iter().enumerate() {
        if !x.is_finite() {
            return Err(Error::invalid(format!(
                "parameter {i} is {x}: only finite values can be aggregated"
            )));
        }
        let cf = f64::from(c);
        if x < -cf {
            clipped.below += 1;
        } else if x > cf {
            clipped.above += 1;
        }
        out.push(quantize_one(x, c));
    }
    Ok((out, clipped))
}

/// v6's weight check: `2^bit_length(weight) ≤ 2^17`, and a weight of at least 1.
pub fn check_weight(weight: u64) -> Result<()> {
    let bits = 64 - weight.leading_zeros();
    if weight == 0 || (1u128 << bits) > u128::from(WEIGHT_RANGE) {
        return Err(Error::invalid(format!(
            "the weight (sample count) {weight} is outside 1..={}",
            WEIGHT_RANGE - 1
        )));
    }
    Ok(())
}

fn check_clipping_range(c: u32) -> Result<()> {
    if c == 0 {
        return Err(Error::invalid("the clipping range must be at least 1"));
    }
    Ok(())
}

/// The researcher's side: sums `S_k` over every node (already unmasked) to averages, as v6's
/// `_apply_average` then `reverse_quantize`: `a_k = S_k / total` (float64), truncated to an
/// integer, then `−c + ((c − (−c)) / (T − 1)) · a_k`.
pub fn average(sums: &[u64], total_weight: u64, c: u32) -> Result<Vec<f64>> {
    check_clipping_range(c)?;
    if total_weight == 0 {
        return Err(Error::invalid("the total weight (sample count) is 0"));
    }
    let cf = f64::from(c);
    let step = (cf - -cf) / (TARGET_RANGE - 1) as f64;
    Ok(sums
        .iter()
        .map(|&s| {
            let a = s as f64 / total_weight as f64;
            -cf + step * (a as u64) as f64
        })
        .collect())
}

/// The total weight of a round: the sum of every file's weight (each checked), when every file
/// carries one, or the number of files when none does (each node then counts once); a mix is
/// refused. `weights` holds each file's name (for errors) and weight; `noun` names the files
/// (`masked file`, `ciphertext file`).
pub(crate) fn total_weight(weights: &[(&str, Option<u64>)], noun: &str) -> Result<u64> {
    let weighted = weights.iter().filter(|(_, w)| w.is_some()).count();
    if weighted == 0 {
        return Ok(weights.len() as u64);
    }
    if weighted != weights.len() {
        return Err(Error::invalid(format!(
            "some {noun}s carry a weight and others do not: the nodes must all weight, or none"
        )));
    }
    weights.iter().try_fold(0u64, |acc, (name, w)| {
        let w = w.unwrap_or(0);
        check_weight(w).map_err(|e| e.context(format!("in {noun} {name}")))?;
        Ok(acc + w)
    })
}
