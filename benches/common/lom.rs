//! What the LOM benches share: parameters and a node's masking request.

use secagg_core::aggregate::LomEncryptRequest;
use secagg_core::lom::Profile;
use secagg_core::SessionId;

/// `n` parameters spread over the clipping range [−3, 3), shifted by `seed`.
pub fn params(seed: usize, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (((i + seed) % 6000) as f64) / 1000.0 - 3.0)
        .collect()
}

/// A node's request to mask `values` for `round` (label 0, weight 100, secagg's profile).
pub fn request(session: SessionId, round: u64, values: Vec<f64>) -> LomEncryptRequest {
    LomEncryptRequest {
        session,
        round,
        label: 0,
        values,
        weight: Some(100),
        clipping_range: 3,
        profile: Profile::Secagg,
    }
}
