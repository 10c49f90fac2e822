//! Data parallelism over the machine's cores, for the CPU-bound batches (Joye–Libert
//! exponentiations, certificate validation of a roster's entries).

use crate::error::{Error, Result};

/// Runs `f` on every index of `0..len` on all cores, keeping the order.
pub(crate) fn map_indexed<T: Send>(
    len: usize,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(len.max(1));
    let chunk = len.div_ceil(workers.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..len)
            .step_by(chunk)
            .map(|start| {
                let f = &f;
                s.spawn(move || {
                    (start..(start + chunk).min(len))
                        .map(f)
                        .collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(len);
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| Error::Internal("a worker thread panicked".into()))??,
            );
        }
        Ok(out)
    })
}
