//! Stopping a long call: [`CancelToken`] (set from another Python thread) and [`interruptible`],
//! which runs a call on a worker thread with the GIL released while watching for Ctrl-C.

use std::time::Duration;

use pyo3::prelude::*;
use secagg_core::engine::CancelFlag;
use secagg_core::Error;

/// A flag that stops a running `Home.negotiate` from another thread: `token.cancel()`.
///
/// The negotiation then aborts at its next wait, tells its peers, stores nothing and raises
/// `secagg.PeerFailure` ("… cancelled the negotiation …"), unless this party had already stored
/// its key (then the session finishes normally). Ctrl-C does the same in the main thread and
/// raises `KeyboardInterrupt`. A token can serve one negotiation or several.
#[pyclass(frozen, module = "secagg._native")]
#[derive(Default)]
pub(crate) struct CancelToken {
    pub(crate) flag: CancelFlag,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Asks the negotiations using this token to stop.
    fn cancel(&self) {
        self.flag.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.is_cancelled()
    }

    fn __repr__(&self) -> String {
        format!("CancelToken(cancelled={})", self.cancelled_str())
    }
}

impl CancelToken {
    fn cancelled_str(&self) -> &'static str {
        if self.flag.is_cancelled() {
            "True"
        } else {
            "False"
        }
    }
}

/// How often a waiting negotiation looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// What a long call's worker returns: its result and the warnings it collected.
type Worked<T> = (Result<T, Error>, Vec<String>);

/// Runs `work` (which returns a result and its warnings) on a thread with the GIL released,
/// checking for Ctrl-C every [`SIGNAL_POLL`] while it runs (signals are only seen in the main
/// thread): on one, `flag` is set so that `work` stops, and the `KeyboardInterrupt` is returned
/// beside its result. Returns as soon as `work` is done (regression: it slept a whole poll
/// interval first, so every `session_run` and `negotiate` took at least 50 ms).
pub(crate) fn interruptible<T: Send>(
    py: Python<'_>,
    flag: &CancelFlag,
    what: &str,
    work: impl FnOnce() -> Worked<T> + Send,
) -> (Worked<T>, Option<PyErr>) {
    py.allow_threads(|| {
        std::thread::scope(|s| {
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let worker = s.spawn(move || {
                let _ = done_tx.send(work());
            });
            let mut interrupt: Option<PyErr> = None;
            let done = loop {
                match done_rx.recv_timeout(SIGNAL_POLL) {
                    Ok(done) => break done,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        if interrupt.is_none() {
                            if let Err(e) = Python::with_gil(|py| py.check_signals()) {
                                flag.cancel();
                                interrupt = Some(e);
                            }
                        }
                    }
                    // The worker ended without a result: it panicked (joined here, so that the
                    // scope does not panic in turn).
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = worker.join();
                        break (
                            Err(Error::internal(format!("the {what} thread panicked"))),
                            Vec::new(),
                        );
                    }
                }
            };
            (done, interrupt)
        })
    })
}
