//! The LOM session kind of the native protocol: pairwise secrets agreed directly between nodes.
//!
//! Same connections, deadlines, aborts and store steps as a key session (the module above);
//! only the exchange differs. With `n` parties (the researcher and `n − 1` nodes):
//!
//! 1. every node draws a fresh P-256 key pair and sends its public key (`DhPublic`) to every
//!    other node over their own pinned mutual-TLS connection: the researcher relays nothing;
//! 2. every node derives, for each other node, the secret `SHA-256(00000001 ‖ Z ‖ salt ‖ lo ‖
//!    hi)` (reference §4, salt `secagg_<uuid>`) and sends the researcher one key confirmation
//!    tag per pair ([`crate::lom::pairwise::pair_tag`], `PairTags`);
//! 3. the researcher checks that both ends of every pair sent the same tag
//!    ([`Error::Verification`] otherwise) and sends `Finish`;
//! 4. every node stores its set durably, unconfirmed, then acknowledges;
//! 5. once every node acknowledged, the researcher stores its record of the context (no secret)
//!    and confirms to every node, which marks its set confirmed.
//!
//! So the all-or-nothing invariant of keys holds for secrets: **a context the researcher holds
//! implies every node durably stored its complete set.** A DH public key from the researcher is
//! refused as substitution ([`Error::Authentication`], in the reader of the module above).

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Session;
use crate::error::{Error, Result};
use crate::fault::{self, Step};
use crate::lom::dh::{self, KeyPair};
use crate::lom::pairwise::{self, PairwiseSet, TAG_LEN};
use crate::transport::frame::{Frame, MsgType};

impl Session<'_> {
    /// Node side of a LOM session. Returns the stored set and the time when the exchange ended.
    pub(super) async fn run_lom_node(&mut self) -> Result<(PairwiseSet, std::time::Duration)> {
        let n = self.plan.n();
        let me = self.plan.my_index();
        let keys = KeyPair::generate()?;
        let public = keys.public_sec1()?;
        fault::at(Step::NodeBeforeSendShares)?;
        for j in (1..n).filter(|&j| j != me) {
            self.send(j, &Frame::new(MsgType::DhPublic, public.clone()))
                .await?;
        }
        fault::at(Step::NodeAfterSendShares)?;
        let set = self.receive_publics(&keys, &public).await?;
        drop(keys);
        let tags = self.tags_of(&set);
        fault::at(Step::NodeBeforeSendSum)?;
        self.send(0, &Frame::new(MsgType::PairTags, tags)).await?;
        fault::at(Step::NodeAfterSendSum)?;
        let exchange_done = self.started.elapsed();
        self.node_store_and_confirm(|sink| sink.store_pairwise(&set))
            .await?;
        Ok((set, exchange_done))
    }

    /// Every other node's public key (one each, in any order), turned into this node's set.
    async fn receive_publics(&mut self, keys: &KeyPair, own: &[u8]) -> Result<PairwiseSet> {
        let n = self.plan.n();
        let me = self.plan.my_index();
        let salt = pairwise::kdf_salt(&self.plan.session_id());
        let my_id = self.labels[me].clone();
        let mut secrets: Vec<Option<Zeroizing<[u8; 32]>>> = (0..n).map(|_| None).collect();
        for _ in 0..n - 2 {
            let (j, f) = self.next().await?;
            let label = &self.labels[j];
            if f.kind != MsgType::DhPublic {
                return Err(Error::peer(format!(
                    "protocol violation by {label}: sent its {} before the DH public keys were exchanged",
                    f.kind.name()
                ))
                .with_origin(label.as_str(), None));
            }
            if f.payload.as_slice() == own {
                return Err(Error::authentication(format!(
                    "{label} sent this node's own DH public key back: a reflected key would make the pair's secret known to whoever chose it"
                ))
                .with_origin(label.as_str(), None));
            }
            let z = keys.shared_x(&f.payload).map_err(|e| {
                Error::peer(format!(
                    "protocol violation by {label}: its DH public key is not a P-256 point: {e}"
                ))
                .with_origin(label.as_str(), None)
            })?;
            secrets[j] = Some(Zeroizing::new(dh::pairwise_secret(
                &z,
                salt.as_bytes(),
                &my_id,
                label,
            )));
        }
        let set = (1..n)
            .filter(|&j| j != me)
            .map(|j| {
                let s = secrets[j]
                    .take()
                    .ok_or_else(|| Error::Internal(format!("no secret with {}", self.labels[j])))?;
                Ok((self.labels[j].clone(), s))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PairwiseSet::of_node(set))
    }

    /// This node's tag of each pair it is in, in party order, concatenated.
    fn tags_of(&self, set: &PairwiseSet) -> Vec<u8> {
        let sid = self.plan.session_id();
        let me = &self.labels[self.plan.my_index()];
        set.secrets
            .iter()
            .flat_map(|(peer, secret)| pairwise::pair_tag(secret, &sid, me, peer))
            .collect()
    }

    /// Researcher side of a LOM session. Returns its record and the time when the exchange
    /// ended.
    pub(super) async fn run_lom_researcher(
        &mut self,
    ) -> Result<(PairwiseSet, std::time::Duration)> {
        let tags = self.receive_tags().await?;
        let exchange_done = self.started.elapsed();
        let checked = self.check_pairs(&tags)?;
        // Stored only once every node acknowledged its durably stored set.
        let record = PairwiseSet::of_researcher(&checked);
        self.researcher_store_and_confirm(|sink| sink.store_pairwise(&record))
            .await?;
        Ok((record, exchange_done))
    }

    /// Each node's tags (index 0 unused), each of the right length.
    async fn receive_tags(&mut self) -> Result<Vec<Vec<u8>>> {
        let n = self.plan.n();
        let mut tags = vec![Vec::new(); n];
        for _ in 1..n {
            let (j, f) = self.next().await?;
            if f.payload.len() != (n - 2) * TAG_LEN {
                return Err(Error::peer(format!(
                    "protocol violation by {}: sent {} bytes of pair tags, expected {} ({} pairs)",
                    self.labels[j],
                    f.payload.len(),
                    (n - 2) * TAG_LEN,
                    n - 2
                ))
                .with_origin(self.labels[j].as_str(), None));
            }
            tags[j] = f.payload.to_vec();
        }
        Ok(tags)
    }

    /// Checks that both nodes of every pair sent the same tag; returns the tags pair by pair.
    fn check_pairs(&self, tags: &[Vec<u8>]) -> Result<Vec<[u8; TAG_LEN]>> {
        let n = self.plan.n();
        // Node i's tags list the other nodes in party order: j's position skips i itself.
        let tag = |i: usize, j: usize| {
            let pos = if j < i { j - 1 } else { j - 2 };
            &tags[i][pos * TAG_LEN..(pos + 1) * TAG_LEN]
        };
        let mut checked = Vec::with_capacity((n - 1) * (n - 2) / 2);
        let mut mismatched = Vec::new();
        for i in 1..n {
            for j in i + 1..n {
                let (a, b) = (tag(i, j), tag(j, i));
                if bool::from(a.ct_eq(b)) {
                    let mut t = [0u8; TAG_LEN];
                    t.copy_from_slice(a);
                    checked.push(t);
                } else {
                    mismatched.push(format!("{} and {}", self.labels[i], self.labels[j]));
                }
            }
        }
        if !mismatched.is_empty() {
            return Err(Error::verification(format!(
                "session {}: the pairwise secrets of {} do not match: a node computed or sent a wrong value",
                self.plan.session_id(),
                mismatched.join(", ")
            ))
            .with_hint("nothing was stored; run the session again, and if it keeps failing check the secagg versions of those nodes"));
        }
        Ok(checked)
    }
}
