//! The key session kind of the native protocol: Shamir sharing of every node's key, the share
//! sums checked and interpolated at the researcher (steps 1–6 of the module above).

use num_bigint::{BigUint, RandBigInt};
use num_traits::Zero;
use rand::rngs::OsRng;

use super::{Secret, Session};
use crate::engine::SecretKey;
use crate::error::{Error, Result};
use crate::fault::{self, Step};
use crate::field;
use crate::transport::frame::{Frame, MsgType};

impl Session<'_> {
    fn decode_element(&self, j: usize, f: &Frame) -> Result<Secret> {
        self.field
            .element_from_bytes(&f.payload)
            .map(Secret)
            .map_err(|e| {
                Error::peer(format!(
                    "protocol violation by {}: bad {}: {e}",
                    self.labels[j],
                    f.kind.name()
                ))
                .with_origin(self.labels[j].as_str(), None)
            })
    }

    fn element_frame(&self, kind: MsgType, v: &BigUint) -> Frame {
        Frame {
            kind,
            payload: self.field.to_fixed_bytes(v),
        }
    }

    /// Node side. Returns the key and the time when the exchange phase ended.
    pub(super) async fn run_node(&mut self) -> Result<(SecretKey, std::time::Duration)> {
        let n = self.plan.n();
        let me = self.plan.my_index();
        let t = field::threshold(n);
        let key = Secret(OsRng.gen_biguint(u64::from(self.plan.key_bits())));
        let shares: Vec<Secret> = self
            .field
            .share(&key, t, n, &mut OsRng)?
            .into_iter()
            .map(Secret)
            .collect();
        fault::at(Step::NodeBeforeSendShares)?;
        for j in (0..n).filter(|&j| j != me) {
            let f = self.element_frame(MsgType::Share, &shares[j]);
            self.send(j, &f).await?;
        }
        fault::at(Step::NodeAfterSendShares)?;
        let mut sum = Secret(shares[me].0.clone());
        drop(shares);
        for _ in 0..n - 2 {
            let (j, f) = self.next().await?;
            if f.kind != MsgType::Share {
                return Err(Error::peer(format!(
                    "protocol violation by {}: sent its {} before the shares were exchanged",
                    self.labels[j],
                    f.kind.name()
                ))
                .with_origin(self.labels[j].as_str(), None));
            }
            let v = self.decode_element(j, &f)?;
            sum = Secret(self.field.add(&sum, &v));
        }
        let f = self.element_frame(MsgType::Sum, &sum);
        drop(sum);
        fault::at(Step::NodeBeforeSendSum)?;
        self.send(0, &f).await?;
        fault::at(Step::NodeAfterSendSum)?;
        let exchange_done = self.started.elapsed();
        // The key must be durable before the researcher may store the server key (step 4).
        let key = SecretKey::from_biguint(&key);
        self.node_store_and_confirm(|sink| sink.store(&key)).await?;
        Ok((key, exchange_done))
    }

    /// Researcher side. Returns `sk0` and the time when the exchange phase ended.
    pub(super) async fn run_researcher(&mut self) -> Result<(SecretKey, std::time::Duration)> {
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
                self.plan.session_id(),
                names.join(", "),
                t + 1
            ))
            .with_hint("run the negotiation again; if it keeps failing, check the secagg versions of the parties"));
        }
        let sum = Secret(sum?);
        let max = BigUint::from(n - 1) << self.plan.key_bits();
        if *sum >= max {
            return Err(Error::verification(format!(
                "session {}: the interpolated key sum has {} bits, more than {} node keys of {} bits can add up to",
                self.plan.session_id(),
                sum.bits(),
                n - 1,
                self.plan.key_bits()
            )));
        }
        let sk0 = SecretKey::from_bigint(&field::lift_server_key(&sum));
        drop(sum);
        // Stored only once every node acknowledged its durably stored key (step 5).
        self.researcher_store_and_confirm(|sink| sink.store(&sk0))
            .await?;
        Ok((sk0, exchange_done))
    }
}
