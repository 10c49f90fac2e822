//! The native engine: semi-honest, honest-majority Shamir key negotiation in Rust, the same
//! security model as MP-SPDZ's `shamir-party.x`.
//!
//! After the connection phase ([`crate::transport::mesh`]), with `n` parties and
//! `t = ⌊(n − 1)/2⌋`:
//!
//! 1. every node `i` draws `sk_i` uniformly in `[0, 2^k)` from the OS CSPRNG, shares it with a
//!    random polynomial of degree `t` and sends share `j` to party `j` (keeping its own);
//! 2. every party sums the shares it holds (the researcher has no input) and every node sends its
//!    sum to the researcher;
//! 3. the researcher checks that the `n` sums lie on one polynomial of degree `t`
//!    ([`Error::Verification`] otherwise), interpolates `S = Σ sk_i` at 0 and sets `sk0 = −S`
//!    over the integers (exact because `p > (n−1)·2^k`), then sends `Finish` to every node;
//! 4. every node answers `Ack` and only then returns its key; the researcher returns after all
//!    acknowledgements.
//!
//! So no party returns a key unless the researcher verified the whole session. (The one residual
//! case is inherent to any protocol: a node that dies after receiving `Finish` but before its
//! `Ack` arrives makes the researcher fail while the other nodes succeed; the researcher's
//! failure means no key is stored on its side, so the session is simply re-run.)
//!
//! On any failure a party sends `Abort{reason}` to every peer it is connected to (best effort,
//! bounded), closes everything and returns the error; peers then fail at once with
//! [`Error::PeerFailure`] naming it. Every wait is bounded by the session deadline.
//!
//! Secret hygiene: shares, sums and keys are [`BigUint`]s wiped in place when dropped
//! ([`field::wipe`]); frame payloads are zeroizing buffers. num-bigint temporaries and rustls'
//! internal plaintext buffers are out of reach.

use std::collections::VecDeque;
use std::ops::Deref;
use std::time::Instant as StdInstant;

use num_bigint::{BigUint, RandBigInt};
use num_traits::Zero;
use rand::rngs::OsRng;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::{Engine, NegotiationPlan, Outcome, PhaseTimings, SecretKey};
use crate::error::{Error, ErrorKind, Result};
use crate::field::{self, PrimeField};
use crate::transport::frame::{write_frame, Frame, MsgType};
use crate::transport::mesh::{self, abort_all, peer_aborted, Mesh, ReadEvent};

/// The in-process Rust engine. `negotiate` runs a private single-threaded tokio runtime; use
/// [`negotiate_async`] from inside an existing runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct NativeEngine;

impl Engine for NativeEngine {
    fn name(&self) -> &'static str {
        "native"
    }

    fn negotiate(&self, plan: NegotiationPlan) -> Result<Outcome> {
        // One thread is plenty: the work is a handful of TLS handshakes and big-number
        // operations, and parties are separate processes (or threads in tests and the bench).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("while starting the negotiation runtime", e))?;
        rt.block_on(negotiate_async(plan))
    }
}

/// Runs this party's side of the session described by `plan` (see the module documentation).
/// The deadline is `plan.timeout` from now.
pub async fn negotiate_async(plan: NegotiationPlan) -> Result<Outcome> {
    let started = StdInstant::now();
    let deadline = Instant::now() + plan.timeout;
    plan.validate()?;
    let field = PrimeField::new(plan.prime.clone())?;
    let mesh = mesh::establish(&plan, deadline).await?;
    let connect = started.elapsed();
    let mut session = Session::start(&plan, field, mesh, deadline, started);
    let result = if plan.my_index == 0 {
        session.run_researcher().await
    } else {
        session.run_node().await
    };
    match result {
        Ok((key, exchange_done)) => {
            session.close().await;
            let total = started.elapsed();
            Ok(Outcome {
                role: plan.my_role(),
                key,
                timings: PhaseTimings::from_marks(connect, exchange_done, total),
            })
        }
        Err(e) => {
            session.abort(&e).await;
            Err(e)
        }
    }
}

/// A [`BigUint`] wiped in place when dropped.
struct Secret(BigUint);

impl Deref for Secret {
    type Target = BigUint;
    fn deref(&self) -> &BigUint {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        field::wipe(&mut self.0);
    }
}

struct Session<'a> {
    plan: &'a NegotiationPlan,
    field: PrimeField,
    labels: Vec<String>,
    mesh: Mesh,
    /// Messages still owed by each peer, in order. A peer that owes nothing may close.
    expect: Vec<VecDeque<MsgType>>,
    deadline: Instant,
    started: StdInstant,
}

impl<'a> Session<'a> {
    fn start(
        plan: &'a NegotiationPlan,
        field: PrimeField,
        mesh: Mesh,
        deadline: Instant,
        started: StdInstant,
    ) -> Self {
        let n = plan.n();
        let me = plan.my_index;
        let labels: Vec<String> = plan.parties.iter().map(|p| p.id.to_string()).collect();
        let expect = (0..n)
            .map(|j| {
                let mut q = VecDeque::new();
                if j == me {
                    // nothing from ourselves
                } else if me == 0 {
                    q.extend([MsgType::Share, MsgType::Sum, MsgType::Ack]);
                } else if j == 0 {
                    q.push_back(MsgType::Finish);
                } else {
                    q.push_back(MsgType::Share);
                }
                q
            })
            .collect();
        Session {
            plan,
            field,
            labels,
            mesh,
            expect,
            deadline,
            started,
        }
    }

    async fn send(&mut self, j: usize, frame: &Frame) -> Result<()> {
        let w = self.mesh.writers[j]
            .as_mut()
            .ok_or_else(|| Error::Internal(format!("no connection to party {j}")))?;
        write_frame(w, frame, self.deadline, &self.labels[j]).await
    }

    /// The next frame some peer owes us; fails on abort, premature close, protocol violation or
    /// the deadline.
    async fn next(&mut self) -> Result<(usize, Frame)> {
        loop {
            let (j, ev) = match self.mesh.next_event(self.deadline).await {
                Some(x) => x,
                None => return Err(self.timeout_error()),
            };
            let label = &self.labels[j];
            match ev {
                ReadEvent::Frame(f) if f.kind == MsgType::Abort => {
                    return Err(peer_aborted(label, &f.payload))
                }
                ReadEvent::Frame(f) => match self.expect[j].front() {
                    Some(&k) if k == f.kind => {
                        self.expect[j].pop_front();
                        return Ok((j, f));
                    }
                    Some(&k) => {
                        return Err(Error::peer(format!(
                            "protocol violation by {label}: sent a {} message, expected its {}",
                            f.kind.name(),
                            k.name()
                        )))
                    }
                    None => {
                        return Err(Error::peer(format!(
                            "protocol violation by {label}: sent a {} message after its last expected message",
                            f.kind.name()
                        )))
                    }
                },
                ReadEvent::Closed(_) if self.expect[j].is_empty() => continue,
                ReadEvent::Closed(Some(e)) if e.kind() == ErrorKind::Timeout => {
                    return Err(self.timeout_error())
                }
                ReadEvent::Closed(Some(e)) => return Err(e),
                ReadEvent::Closed(None) => {
                    let what = self.expect[j].front().map(|k| k.name()).unwrap_or("messages");
                    return Err(Error::peer(format!(
                        "{label} closed the connection before sending its {what}"
                    ))
                    .with_hint(format!("{label} may have crashed or been stopped; see its output")));
                }
            }
        }
    }

    fn timeout_error(&self) -> Error {
        let waiting: Vec<String> = self
            .expect
            .iter()
            .enumerate()
            .filter_map(|(j, q)| {
                q.front()
                    .map(|k| format!("{} ({})", self.labels[j], k.name()))
            })
            .collect();
        Error::timeout(format!(
            "session {}: {} timed out after {:.1}s waiting for {}",
            self.plan.session_id,
            self.labels[self.plan.my_index],
            self.plan.timeout.as_secs_f64(),
            waiting.join(", ")
        ))
        .with_hint("the listed parties stopped answering; check that they are still running and reachable, or give the session a longer timeout")
    }

    fn decode_element(&self, j: usize, f: &Frame) -> Result<Secret> {
        self.field
            .from_fixed_bytes(&f.payload)
            .map(Secret)
            .map_err(|e| {
                Error::peer(format!(
                    "protocol violation by {}: bad {}: {e}",
                    self.labels[j],
                    f.kind.name()
                ))
            })
    }

    fn element_frame(&self, kind: MsgType, v: &BigUint) -> Frame {
        Frame {
            kind,
            payload: self.field.to_fixed_bytes(v),
        }
    }

    /// Node side. Returns the key and the time when the exchange phase ended.
    async fn run_node(&mut self) -> Result<(SecretKey, std::time::Duration)> {
        let n = self.plan.n();
        let me = self.plan.my_index;
        let t = field::threshold(n);
        let key = Secret(OsRng.gen_biguint(u64::from(self.plan.key_bits)));
        let shares: Vec<Secret> = self
            .field
            .share(&key, t, n, &mut OsRng)?
            .into_iter()
            .map(Secret)
            .collect();
        for j in (0..n).filter(|&j| j != me) {
            let f = self.element_frame(MsgType::Share, &shares[j]);
            self.send(j, &f).await?;
        }
        let mut sum = Secret(shares[me].0.clone());
        drop(shares);
        for _ in 0..n - 2 {
            let (j, f) = self.next().await?;
            if f.kind != MsgType::Share {
                return Err(Error::peer(format!(
                    "protocol violation by {}: sent its {} before the shares were exchanged",
                    self.labels[j],
                    f.kind.name()
                )));
            }
            let v = self.decode_element(j, &f)?;
            sum = Secret(self.field.add(&sum, &v));
        }
        let f = self.element_frame(MsgType::Sum, &sum);
        drop(sum);
        self.send(0, &f).await?;
        let exchange_done = self.started.elapsed();
        let (_, finish) = self.next().await?;
        debug_assert_eq!(finish.kind, MsgType::Finish);
        self.send(0, &Frame::new(MsgType::Ack, Vec::new())).await?;
        Ok((SecretKey::from_biguint(&key), exchange_done))
    }

    /// Researcher side. Returns `sk0` and the time when the exchange phase ended.
    async fn run_researcher(&mut self) -> Result<(SecretKey, std::time::Duration)> {
        let n = self.plan.n();
        let t = field::threshold(n);
        let mut sums: Vec<Option<Secret>> = (0..n).map(|_| None).collect();
        let mut own = Secret(BigUint::zero());
        let (mut shares_left, mut sums_left) = (n - 1, n - 1);
        while shares_left + sums_left > 0 {
            let (j, f) = self.next().await?;
            let v = self.decode_element(j, &f)?;
            match f.kind {
                MsgType::Share => {
                    own = Secret(self.field.add(&own, &v));
                    shares_left -= 1;
                }
                MsgType::Sum => {
                    sums[j] = Some(v);
                    sums_left -= 1;
                }
                other => {
                    return Err(Error::Internal(format!(
                        "unexpected {} message in the exchange phase",
                        other.name()
                    )))
                }
            }
        }
        let exchange_done = self.started.elapsed();
        sums[0] = Some(own);
        let sums: Vec<Secret> = sums
            .into_iter()
            .map(|s| s.ok_or_else(|| Error::Internal("missing share sum".into())))
            .collect::<Result<_>>()?;
        let points: Vec<(BigUint, Secret)> = sums
            .iter()
            .enumerate()
            .map(|(j, s)| (BigUint::from(j + 1), Secret(s.0.clone())))
            .collect();
        drop(sums);
        let plain: Vec<(BigUint, BigUint)> = points
            .iter()
            .map(|(x, y)| (x.clone(), y.0.clone()))
            .collect();
        let bad = self.field.inconsistent_points(&plain, t);
        let sum = self.field.interpolate_zero(&plain[..t + 1]);
        for (_, mut y) in plain {
            field::wipe(&mut y);
        }
        let bad = bad?;
        if !bad.is_empty() {
            let names: Vec<&str> = bad.iter().map(|&i| self.labels[i].as_str()).collect();
            return Err(Error::verification(format!(
                "session {}: the share sums do not lie on one polynomial of degree {t}: the sums of {} disagree with those of the first {} parties; a party computed or sent a wrong value",
                self.plan.session_id,
                names.join(", "),
                t + 1
            ))
            .with_hint("run the negotiation again; if it keeps failing, check the secagg versions of the parties"));
        }
        let sum = Secret(sum?);
        let max = BigUint::from(n - 1) << self.plan.key_bits;
        if *sum >= max {
            return Err(Error::verification(format!(
                "session {}: the interpolated key sum has {} bits, more than {} node keys of {} bits can add up to",
                self.plan.session_id,
                sum.bits(),
                n - 1,
                self.plan.key_bits
            )));
        }
        let sk0 = SecretKey::from_bigint(&field::lift_server_key(&sum));
        drop(sum);
        for j in 1..n {
            self.send(j, &Frame::new(MsgType::Finish, Vec::new()))
                .await?;
        }
        for _ in 1..n {
            self.next().await?; // acknowledgements (the only messages still expected)
        }
        Ok((sk0, exchange_done))
    }

    /// Closes every connection after success (TLS close_notify), bounded.
    async fn close(&mut self) {
        let until = Instant::now() + mesh::ABORT_GRACE;
        let mut set = JoinSet::new();
        for (_, mut w) in self.mesh.take_writers() {
            set.spawn(async move {
                let _ = timeout_at(until, w.shutdown()).await;
            });
        }
        let _ = timeout_at(until, async { while set.join_next().await.is_some() {} }).await;
        self.mesh.stop_readers();
    }

    /// Tells every peer why we give up, closes everything.
    async fn abort(&mut self, e: &Error) {
        let writers = self
            .mesh
            .take_writers()
            .into_iter()
            .map(|(j, w)| (self.labels[j].clone(), w))
            .collect();
        abort_all(writers, &crate::transport::mesh::abort_reason(e)).await;
        self.mesh.stop_readers();
    }
}
