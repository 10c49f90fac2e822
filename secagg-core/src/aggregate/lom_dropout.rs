//! LOM rounds that survive nodes dropping out (issue 24): the protocol steps around the
//! arithmetic of [`crate::lom::dropout`], through the agents.
//!
//! Per round τ = (round, label) of a LOM context with dropout threshold t among n nodes:
//!
//! 1. **Share** ([`share_self_seed`], at a node masking): the node draws a fresh self-mask seed
//!    b_u(τ), keeps its own share, and sends every other node its t-of-n share directly, over
//!    pinned mutual TLS to that node's agent ([`accept_share`] stores it durably before
//!    answering). Fewer than t holders and the node gives up: nobody could unmask its vector.
//! 2. **Mask**: `y_u = x_u + PRG(b_u) + Σ ±PRG(s_uv(τ))`; the file carries t, signed.
//! 3. **Survivors** ([`record_announcement`], [`announced`]): the researcher announces U1 (the
//!    nodes whose files it holds, at least t) to every node of U1, which records it once; a
//!    second, different U1 for the same τ is refused.
//! 4. **Unmask** ([`prepare_reveal`] then [`reveal`], at each survivor): the survivor first asks
//!    every other survivor's agent which U1 it was told (any that answers with another, or with
//!    none, fails the reveal: the researcher told two stories); then, in one transaction, it
//!    records what it reveals per (τ, party) and refuses any τ it revealed before, and only then
//!    answers: its share of b_u for every u in U1, its round seed with every dropped d (never
//!    the context's pairwise secret: the next rounds stay protected).
//!
//! The researcher ([`unmask_survivors`]) rebuilds each b_u from the shares (t or more, checked
//! for consistency), removes the self-masks and the dangling pairwise masks, and returns the
//! average over U1, naming who dropped before masking and who went silent while unmasking.
//!
//! **Beyond the design**: step 1 also shares, t-of-n, the node's round seed with every
//! other node (never the context's pairwise secret). A survivor that goes silent in step 4 would
//! otherwise take its round seeds with the dropped nodes with it, and a round with nodes dropped
//! before masking *and* a survivor silent after could not be unmasked; now the answering
//! survivors reveal their shares of the silent one's seeds with the dropped nodes (only those:
//! what a survivor reveals about a dropped node is still seed material, never a share of its
//! self-mask), and the round completes whenever t survivors answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::lom_round::{lom_context, MaskedView};
use crate::agent::client::{ask_each, AgentAddress, Dialer};
use crate::agent::{Reply, Request, AGENT_PROTOCOL_VERSION};
use crate::contexts::ContextRecord;
use crate::error::{Error, Result};
use crate::lom::dropout::{self, Dangling};
use crate::lom::prf::{Key32, NONCE_LEN};
use crate::lom::{self, PairSecret, Profile, Stream};
use crate::party::{PartyId, Role, SessionId};
use crate::store::lom_reveals::{self, Revealed};
use crate::store::{lom_announcements, lom_rounds, lom_secrets, lom_shares, peers, Store};

/// How long a node waits for another node's agent to store its share, and a survivor for
/// another's announced set.
pub const NODE_TO_NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many rounds' shares a node keeps from each other node of a context: a round is revealed
/// (and its shares erased) soon after it is masked, so only rounds this node was never asked
/// to reveal (it dropped, or the researcher gave up on them) pile up; beyond this many, the
/// oldest go, and a registered node flooding shares cannot fill the store.
pub const KEPT_SHARE_ROUNDS: usize = 1024;

/// A LOM stream's nonce.
type Nonce = [u8; NONCE_LEN];

/// One round of a dropout-tolerant context: (round, label).
pub type Tau = (u64, u64);

/// A LOM context with dropout tolerance, as one party sees it.
pub(crate) struct DropoutContext {
    pub(crate) record: ContextRecord,
    /// The threshold t.
    pub(crate) t: usize,
    /// The nodes, in party order (index i holds share x = i + 1).
    pub(crate) nodes: Vec<String>,
}

impl DropoutContext {
    /// The context of `session` where this party has role `want`; refused when it has no
    /// dropout threshold.
    pub(crate) fn load(store: &mut Store, session: &SessionId, want: Role) -> Result<Self> {
        let record = lom_context(store, session, want)?;
        Self::of(record)
    }

    pub(crate) fn of(record: ContextRecord) -> Result<Self> {
        let t = record.dropout_threshold.ok_or_else(|| {
            Error::invalid(format!(
                "LOM context {} has no dropout threshold: every node's vector is needed, and nothing is shared or revealed",
                record.session_id
            ))
            .with_hint("set one up with `secagg session run --scheme lom --dropout-threshold T`")
        })? as usize;
        let nodes = record.parties[1..].to_vec();
        Ok(DropoutContext { record, t, nodes })
    }

    fn sid(&self) -> &str {
        &self.record.session_id
    }

    fn me(&self) -> &str {
        &self.record.parties[self.record.party_index as usize]
    }

    fn researcher(&self) -> &str {
        &self.record.parties[0]
    }

    /// The index among the nodes of `id`.
    fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n == id)
    }

    /// Refuses `who` unless it is a node of the context other than this party.
    fn check_other_node(&self, who: &PartyId, doing: &str) -> Result<usize> {
        match self.node_index(who.as_str()) {
            Some(i) if who.as_str() != self.me() => Ok(i),
            _ => Err(Error::authentication(format!(
                "`{who}` is not another node of LOM context {}: only its nodes may {doing}",
                self.sid()
            ))),
        }
    }

    /// Refuses `who` unless it is the context's researcher.
    fn check_researcher(&self, who: &PartyId, doing: &str) -> Result<()> {
        if who.as_str() != self.researcher() {
            return Err(Error::authentication(format!(
                "`{who}` is not the researcher of LOM context {}: only `{}` may {doing}",
                self.sid(),
                self.researcher()
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: share (the masking node, then each other node's agent).

/// What the share step of one node did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShareReport {
    /// The nodes that hold a share of this node's self-mask (itself included).
    pub holders: Vec<String>,
    /// The nodes that did not take one, with why.
    pub missed: Vec<(String, String)>,
}

/// The secrets a node shares in step 1, each t-of-n: its self-mask seed, and its round seed with
/// every other node (so that, if it goes silent while unmasking, the survivors can still give
/// the researcher its seeds with the nodes that dropped before masking).
struct RoundSecrets {
    /// The self-mask seed, for the masking.
    seed: Zeroizing<Key32>,
    /// Its shares, by holder index.
    self_shares: Vec<Zeroizing<Vec<u8>>>,
    /// (other node, the shares of this node's round seed with it, by holder index).
    pair_shares: Vec<(String, Vec<Zeroizing<Vec<u8>>>)>,
}

impl RoundSecrets {
    fn draw(
        dc: &DropoutContext,
        pairs: &[PairSecret<'_>],
        stream: Stream,
        nonce: &Nonce,
    ) -> Result<Self> {
        let n = dc.nodes.len();
        let seed = dropout::new_self_seed();
        let self_shares = dropout::share_seed(&seed, dc.t, n)?;
        let pair_shares = pairs
            .iter()
            .map(|p| {
                let round_seed = Zeroizing::new(dropout::round_seed(p.secret, stream, nonce)?);
                Ok((
                    p.peer.to_owned(),
                    dropout::share_seed(&round_seed, dc.t, n)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(RoundSecrets {
            seed,
            self_shares,
            pair_shares,
        })
    }

    /// What node `holder` (index `h`) gets: its share of the self-mask seed, and of the round
    /// seed with every node but itself (it knows its own).
    fn request_for(&self, dc: &DropoutContext, tau: Tau, holder: &str, h: usize) -> Request {
        Request::LomShare {
            version: AGENT_PROTOCOL_VERSION,
            session_id: dc.sid().to_owned(),
            round: tau.0,
            label: tau.1,
            share: hex::encode(self.self_shares[h].as_slice()),
            seed_shares: self
                .pair_shares
                .iter()
                .filter(|(about, _)| about != holder)
                .map(|(about, shares)| (about.clone(), hex::encode(shares[h].as_slice())))
                .collect(),
        }
    }
}

/// Step 1 at node `dc.me()`: draws b_u(τ), stores its own share, has every other node's agent
/// store its shares (of b_u and of its round seeds with the others, `pairs`), and returns the
/// seed once at least t nodes hold a share of it.
pub(crate) fn share_self_seed(
    signer: &crate::identity::Identity,
    store: &mut Store,
    dc: &DropoutContext,
    tau: Tau,
    (pairs, stream, nonce): (&[PairSecret<'_>], Stream, &Nonce),
) -> Result<(Zeroizing<Key32>, ShareReport)> {
    let me = dc.me().to_owned();
    let my_index = dc.node_index(&me).expect("a node of its own context");
    let secrets = RoundSecrets::draw(dc, pairs, stream, nonce)?;
    let now = OffsetDateTime::now_utc();
    store.write(|tx| {
        ensure_context(tx, dc.sid())?;
        let own = &secrets.self_shares[my_index];
        lom_shares::insert(tx, dc.sid(), tau, (&me, &me), own, now).map(|_| ())
    })?;
    let targets = other_nodes(store, dc, &[me.as_str()])?;
    let requests: Vec<Request> = targets
        .iter()
        .map(|a| {
            let h = dc.node_index(&a.label).expect("a node");
            secrets.request_for(dc, tau, &a.label, h)
        })
        .collect();
    let dialer = Dialer::new(signer, &signer.private_key_der()?)?;
    let answers = block_on(ask_each(
        Arc::new(dialer),
        targets.clone(),
        requests,
        Instant::now() + NODE_TO_NODE_TIMEOUT,
    ))?;
    let report = share_report(me, &targets, answers);
    if report.holders.len() < dc.t {
        let why: Vec<String> = report
            .missed
            .iter()
            .map(|(w, e)| format!("{w}: {e}"))
            .collect();
        return Err(Error::peer(format!(
            "only {} of the {} nodes hold a share of this node's self-mask for round {} label {}, fewer than the threshold {}: nobody could unmask its vector ({})",
            report.holders.len(),
            dc.nodes.len(),
            tau.0,
            tau.1,
            dc.t,
            why.join("; ")
        ))
        .with_hint("round numbers are used once: mask with the next round when the other nodes' agents run"));
    }
    crate::fault::at(crate::fault::Step::DropoutShared)?;
    Ok((secrets.seed, report))
}

fn share_report(me: String, targets: &[AgentAddress], answers: Vec<Result<Reply>>) -> ShareReport {
    let mut report = ShareReport {
        holders: vec![me],
        missed: Vec::new(),
    };
    for (target, answer) in targets.iter().zip(answers) {
        let who = target.label.clone();
        match answer {
            Ok(Reply::Stored) => report.holders.push(who),
            Ok(Reply::Refused { error }) => {
                let why = error.report_from(&target.label).message;
                report.missed.push((who, why))
            }
            Ok(other) => report.missed.push((
                who,
                format!(
                    "answered {} instead of storing the shares",
                    reply_name(&other)
                ),
            )),
            Err(e) => report.missed.push((who, e.to_string())),
        }
    }
    report
}

/// At node v's agent: stores the shares from node `from` for τ (`share_hex`, of its self-mask
/// seed; `seed_shares`, of its round seed with each other node but v), durably and all at once,
/// before the agent answers. The same shares again are accepted (a retried send); another share
/// of any of those secrets refuses them all.
pub(crate) fn accept_share(
    store: &mut Store,
    from: &PartyId,
    session: &SessionId,
    tau: Tau,
    share_hex: &str,
    seed_shares: &[(String, String)],
) -> Result<()> {
    let dc = DropoutContext::load(store, session, Role::Node)?;
    dc.check_other_node(from, "send self-mask shares")?;
    let mut rows = vec![(from.as_str(), decode_share(from, share_hex)?)];
    for (about, hex_share) in seed_shares {
        let fine = dc.node_index(about).is_some() && about != from.as_str() && about != dc.me();
        if !fine || rows.iter().any(|(a, _)| a == about) {
            return Err(Error::invalid(format!(
                "`{from}` sent a share of its round seed with `{}`, which is no other node of LOM context {session}, or twice",
                about.escape_debug()
            )));
        }
        rows.push((about.as_str(), decode_share(from, hex_share)?));
    }
    let now = OffsetDateTime::now_utc();
    let keep = KEPT_SHARE_ROUNDS * dc.nodes.len();
    let stored = store.write(|tx| {
        ensure_context(tx, dc.sid())?;
        let mut all = Vec::with_capacity(rows.len());
        for (about, share) in &rows {
            all.push(lom_shares::insert(tx, dc.sid(), tau, (from.as_str(), about), share, now)?);
        }
        if all.contains(&lom_shares::Stored::Different) {
            // Nothing of this request is kept: the transaction is rolled back.
            return Err(Error::conflict(format!(
                "`{from}` already sent this node other shares for round {} label {} of LOM context {}: a node's secrets of a round are drawn once",
                tau.0, tau.1, session
            )));
        }
        // The cap is enforced about every 64 rows stored (a count over the sender's rows costs
        // in proportion to them): a flood overshoots it by at most that.
        if tx.last_insert_rowid() % 64 < rows.len() as i64 {
            lom_shares::keep_latest(tx, dc.sid(), from.as_str(), keep)?;
        }
        Ok(())
    });
    stored?;
    crate::fault::at(crate::fault::Step::DropoutShareStored)
}

fn decode_share(from: &PartyId, hex_share: &str) -> Result<Zeroizing<Vec<u8>>> {
    let share = Zeroizing::new(
        hex::decode(hex_share)
            .map_err(|_| Error::invalid(format!("a share from `{from}` is not hexadecimal")))?,
    );
    if share.len() != dropout::SHARE_LEN {
        return Err(Error::invalid(format!(
            "a share from `{from}` is {} bytes, not {}",
            share.len(),
            dropout::SHARE_LEN
        )));
    }
    Ok(share)
}

// ---------------------------------------------------------------------------------------------
// Steps 3 and 4 at a survivor's agent.

/// At a survivor's agent: records the survivors the researcher announced for τ (sorted, each a
/// node, at least t, this node among them, and this node masked τ). The same set again is
/// accepted; another is refused for ever.
pub(crate) fn record_announcement(
    store: &mut Store,
    researcher: &PartyId,
    session: &SessionId,
    tau: Tau,
    survivors: &[String],
) -> Result<()> {
    let dc = DropoutContext::load(store, session, Role::Node)?;
    dc.check_researcher(researcher, "announce survivors")?;
    check_survivor_list(&dc, survivors)?;
    if !survivors.iter().any(|s| s == dc.me()) {
        return Err(Error::invalid(format!(
            "the survivors announced for round {} label {} do not include this node: it has nothing to reveal",
            tau.0, tau.1
        )));
    }
    let sid = dc.sid().to_owned();
    store.write(|tx| {
        ensure_context(tx, &sid)?;
        if !lom_rounds::contains(tx, &sid, tau.0, tau.1)? {
            return Err(Error::verification(format!(
                "the researcher announced this node as a survivor of round {} label {} of LOM context {sid}, but this node never masked that round",
                tau.0, tau.1
            )));
        }
        match lom_announcements::get(tx, &sid, tau)? {
            Some(old) if old == survivors => Ok(()),
            Some(old) => Err(Error::conflict(format!(
                "the researcher announced other survivors for round {} label {} before ({}): one set per round, or it could learn one node's vector from two sums",
                tau.0,
                tau.1,
                old.join(", ")
            ))),
            None => {
                lom_announcements::insert(tx, &sid, tau, survivors, OffsetDateTime::now_utc())
            }
        }
    })?;
    crate::fault::at(crate::fault::Step::DropoutAnnounced)
}

/// Survivors: sorted, distinct nodes of the context, at least t of them.
fn check_survivor_list(dc: &DropoutContext, survivors: &[String]) -> Result<()> {
    if survivors.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid(
            "the survivor list is not sorted and free of repeats",
        ));
    }
    if let Some(s) = survivors.iter().find(|s| dc.node_index(s).is_none()) {
        return Err(Error::invalid(format!(
            "`{}` in the survivor list is not a node of LOM context {}",
            s.escape_debug(),
            dc.sid()
        )));
    }
    if survivors.len() < dc.t {
        return Err(Error::invalid(format!(
            "{} survivors are fewer than the threshold {}: the round cannot be unmasked",
            survivors.len(),
            dc.t
        )));
    }
    Ok(())
}

/// At a survivor's agent: the survivors announced to this node for τ, for another survivor
/// (`asker`, a node of the context) to compare with its own.
pub(crate) fn announced(
    store: &mut Store,
    asker: &PartyId,
    session: &SessionId,
    tau: Tau,
) -> Result<Option<Vec<String>>> {
    let dc = DropoutContext::load(store, session, Role::Node)?;
    dc.check_other_node(asker, "compare announced survivors")?;
    let sid = dc.sid().to_owned();
    store.read(|tx| lom_announcements::get(tx, &sid, tau))
}

/// What a survivor must check before revealing: its announced set and where the other
/// survivors' agents are.
pub(crate) struct RevealPlan {
    dc: DropoutContext,
    tau: Tau,
    survivors: Vec<String>,
    /// The other survivors' agents.
    pub(crate) others: Vec<AgentAddress>,
}

/// At a survivor's agent, for the researcher's reveal request: the announced set, which the
/// caller then compares with the other survivors' ([`compare_announcements`]).
pub(crate) fn prepare_reveal(
    store: &mut Store,
    researcher: &PartyId,
    session: &SessionId,
    tau: Tau,
) -> Result<RevealPlan> {
    let dc = DropoutContext::load(store, session, Role::Node)?;
    dc.check_researcher(researcher, "ask for reveals")?;
    let sid = dc.sid().to_owned();
    let survivors = store
        .read(|tx| lom_announcements::get(tx, &sid, tau))?
        .ok_or_else(|| {
            Error::invalid(format!(
                "no survivors were announced to this node for round {} label {} of LOM context {sid}: nothing is revealed before",
                tau.0, tau.1
            ))
        })?;
    let me = dc.me().to_owned();
    let skip: Vec<&str> = dc
        .nodes
        .iter()
        .filter(|n| !survivors.contains(n) || **n == me)
        .map(|n| n.as_str())
        .collect();
    let others = other_nodes(store, &dc, &skip)?;
    Ok(RevealPlan {
        dc,
        tau,
        survivors,
        others,
    })
}

/// The comparison of one survivor's announced set with another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// The same set.
    Same,
    /// Its agent did not answer (it dropped): it reveals nothing either.
    Unreachable(String),
}

/// Compares `plan`'s set with each other survivor's answer ([`announced`], in `answers`, in the
/// order of `plan.others`). Another set, or none, is the researcher telling two stories: the
/// reveal is refused. Returns who could not be asked.
pub(crate) fn compare_announcements(
    plan: &RevealPlan,
    answers: Vec<Result<Reply>>,
) -> Result<Vec<Comparison>> {
    let mut out = Vec::with_capacity(answers.len());
    for (other, answer) in plan.others.iter().zip(answers) {
        let who = &other.label;
        let story = |what: String| {
            Error::verification(format!(
                "the researcher told {who} {what} for round {} label {} of LOM context {}, and this node the survivors {}: nothing is revealed",
                plan.tau.0,
                plan.tau.1,
                plan.dc.sid(),
                plan.survivors.join(", ")
            ))
            .with_origin(plan.dc.researcher(), None)
        };
        match answer {
            Ok(Reply::Survivors { survivors: Some(s) }) if s == plan.survivors => {
                out.push(Comparison::Same)
            }
            Ok(Reply::Survivors { survivors: Some(s) }) => {
                return Err(story(format!("the survivors {}", s.join(", "))))
            }
            Ok(Reply::Survivors { survivors: None }) => {
                return Err(story("no survivors".to_owned()))
            }
            Ok(Reply::Refused { error }) => {
                return Err(Error::verification(format!(
                    "{who} would not say which survivors it was told: {}",
                    error.report_from(who).message
                )))
            }
            Ok(other) => {
                return Err(Error::peer(format!(
                    "{who} answered {} to a survivors question",
                    reply_name(&other)
                )))
            }
            Err(e) => out.push(Comparison::Unreachable(e.to_string())),
        }
    }
    Ok(out)
}

/// What a survivor reveals for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reveal {
    /// Its share of b_u (hex) for each survivor u whose share it holds.
    pub shares: Vec<(String, String)>,
    /// Its round seed (hex) with each dropped node.
    pub seeds: Vec<(String, String)>,
    /// Its share (hex) of another survivor v's round seed with a dropped node d: (v, d, share),
    /// for the researcher to rebuild that seed if v goes silent.
    #[serde(default)]
    pub seed_shares: Vec<(String, String, String)>,
}

impl Drop for Reveal {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, s) in self.shares.iter_mut().chain(self.seeds.iter_mut()) {
            s.zeroize();
        }
        for (_, _, s) in self.seed_shares.iter_mut() {
            s.zeroize();
        }
    }
}

/// Step 4 at a survivor, once the announcements compared equal: records what it reveals per
/// party (refusing a round it revealed before, and either kind for a party it revealed the
/// other for), in one transaction, then reads the shares and computes the round seeds.
pub(crate) fn reveal(store: &mut Store, plan: &RevealPlan) -> Result<Reveal> {
    let (dc, tau) = (&plan.dc, plan.tau);
    let sid = dc.sid().to_owned();
    let me = dc.me().to_owned();
    let kinds: Vec<(String, Revealed)> = dc
        .nodes
        .iter()
        .filter(|n| **n != me)
        .map(|n| {
            let kind = if plan.survivors.contains(n) {
                Revealed::Share
            } else {
                Revealed::Seed
            };
            (n.clone(), kind)
        })
        .collect();
    let dropped: Vec<String> = kinds
        .iter()
        .filter(|(_, k)| *k == Revealed::Seed)
        .map(|(p, _)| p.clone())
        .collect();
    let now = OffsetDateTime::now_utc();
    // One transaction: the record of what is revealed, and the round's shares read and erased
    // (a round is revealed once, so they serve nothing after it).
    let (held, secrets) = store.write(|tx| {
        ensure_context(tx, &sid)?;
        let before = lom_reveals::get(tx, &sid, tau)?;
        if let Some((party, kind)) = before.first() {
            return Err(Error::conflict(format!(
                "this node revealed round {} label {} of LOM context {sid} before (its {} for `{party}`, and more): a round is revealed once",
                tau.0,
                tau.1,
                kind.as_str()
            )));
        }
        for (party, kind) in &kinds {
            lom_reveals::insert(tx, &sid, tau, party, *kind, now)?;
        }
        lom_reveals::insert(tx, &sid, tau, &me, Revealed::Share, now)?;
        let held = lom_shares::get(tx, &sid, tau)?;
        lom_shares::delete_round(tx, &sid, tau)?;
        let secrets = match dropped.is_empty() {
            true => Vec::new(),
            false => lom_secrets::get(tx, &sid, &dropped)?,
        };
        Ok((held, secrets))
    })?;
    crate::fault::at(crate::fault::Step::DropoutRevealRecorded)?;
    let mut out = Reveal::default();
    for held in held {
        // Only shares of survivors' secrets: of a survivor's self-mask, or of its round seed
        // with a dropped node (what this node reveals about that dropped node).
        if !plan.survivors.contains(&held.from) {
            continue;
        }
        let share = hex::encode(held.share.as_slice());
        if held.about == held.from {
            out.shares.push((held.from, share));
        } else if !plan.survivors.contains(&held.about) {
            out.seed_shares.push((held.from, held.about, share));
        }
    }
    if !secrets.is_empty() {
        let session = SessionId::parse(&sid)?;
        let stream = Profile::Secagg.stream(tau.0, tau.1);
        let nonce = lom::nonce(&session, Profile::Secagg);
        for (peer, secret) in secrets {
            let seed = Zeroizing::new(dropout::round_seed(&secret, stream, &nonce)?);
            out.seeds.push((peer, hex::encode(seed.as_slice())));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The researcher.

/// Who dropped out of a round, and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropouts {
    /// Nodes whose masked vector the researcher does not hold (dropped before or while masking).
    pub before_masking: Vec<String>,
    /// Survivors that revealed nothing: silent or refusing at the announcement or the reveal.
    pub while_unmasking: Vec<Silent>,
}

/// A survivor that revealed nothing, the step where it went silent, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silent {
    /// The node.
    pub party: String,
    /// `announcement` or `reveal`.
    pub step: &'static str,
    /// What it answered, or why it could not be reached.
    pub reason: String,
}

/// The researcher's steps 3 and 4 for the survivors' files `files` (checked and verified by the
/// caller): announces, collects the reveals, and returns the plain sum of the survivors'
/// vectors (words of the profile's width) and who dropped.
pub(crate) fn unmask_survivors(
    home: &crate::home::Home,
    store: &mut Store,
    dc: &DropoutContext,
    tau: Tau,
    files: &[MaskedView<'_>],
) -> Result<(Vec<u64>, Dropouts)> {
    let mut survivors: Vec<String> = files.iter().map(|f| f.file.party_id.clone()).collect();
    survivors.sort();
    let mut dropouts = Dropouts {
        before_masking: dc
            .nodes
            .iter()
            .filter(|n| !survivors.contains(n))
            .cloned()
            .collect(),
        while_unmasking: Vec::new(),
    };
    if survivors.len() < dc.t {
        return Err(too_few(dc, tau, &survivors, &dropouts));
    }
    let targets = other_nodes(store, dc, &skip_all_but(dc, &survivors))?;
    let (dialer, _) = Dialer::for_home(home)?;
    let dialer = Arc::new(dialer);
    let reveals = block_on(announce_then_reveal(
        dialer,
        dc,
        tau,
        &survivors,
        targets,
        &mut dropouts,
    ))??;
    let width = Profile::Secagg.width();
    let vectors: Vec<&[u64]> = files.iter().map(|f| f.values).collect();
    let mut sum = lom::mask::sum(&vectors, width)?;
    let silent = |e: Error| match dropouts.while_unmasking.is_empty() {
        true => e,
        false => {
            let why: Vec<String> = dropouts
                .while_unmasking
                .iter()
                .map(|s| format!("{} at the {}: {}", s.party, s.step, s.reason))
                .collect();
            let hint = e.hint().map(str::to_owned);
            let e = Error::peer(format!("{e} (silent while unmasking: {})", why.join("; ")));
            match hint {
                Some(h) => e.with_hint(h),
                None => e,
            }
        }
    };
    let self_seeds = recover_self_seeds(dc, tau, &survivors, &reveals).map_err(silent)?;
    let round_seeds = dangling_seeds(dc, tau, &survivors, &dropouts, &reveals).map_err(silent)?;
    let dangling: Vec<Dangling<'_>> = round_seeds
        .iter()
        .map(|(v, d, s)| Dangling {
            survivor: v,
            dropped: d,
            seed: s,
        })
        .collect();
    let seeds: Vec<&Key32> = self_seeds.iter().map(|s| &**s).collect();
    let session = SessionId::parse(dc.sid())?;
    dropout::unmask(
        &mut sum,
        Profile::Secagg.stream(tau.0, tau.1),
        &lom::nonce(&session, Profile::Secagg),
        &seeds,
        &dangling,
    )?;
    Ok((sum, dropouts))
}

impl Dropouts {
    /// Records `party`, which answered `answer` at `step` instead of what the step asks for.
    fn silent(&mut self, party: &str, step: &'static str, answer: Result<Reply>) {
        let reason = match answer {
            Ok(Reply::Refused { error }) => format!(
                "refused: {}",
                crate::transport::mesh::escape_peer_text(&error.message)
            ),
            Ok(other) => format!("answered {}", reply_name(&other)),
            Err(e) => e.to_string(),
        };
        self.while_unmasking.push(Silent {
            party: party.to_owned(),
            step,
            reason,
        });
    }
}

fn too_few(dc: &DropoutContext, tau: Tau, survivors: &[String], d: &Dropouts) -> Error {
    Error::invalid(format!(
        "{} masked files for round {} label {} of LOM context {}, fewer than its dropout threshold {}: the round cannot be unmasked (missing: {})",
        survivors.len(),
        tau.0,
        tau.1,
        dc.sid(),
        dc.t,
        d.before_masking.join(", ")
    ))
    .with_hint("no result is given and nothing was asked of the nodes; collect more files, or go on with the next round")
}

fn skip_all_but<'a>(dc: &'a DropoutContext, keep: &[String]) -> Vec<&'a str> {
    dc.nodes
        .iter()
        .filter(|n| !keep.contains(n))
        .map(|n| n.as_str())
        .collect()
}

/// Announces U1 to every survivor, then asks those that recorded it to reveal. A survivor that
/// does not answer either step, or refuses it (it saw another survivor told another set, it
/// revealed the round before, its store failed), reveals nothing: it is recorded in `dropouts`
/// with why, and the round goes on if the others' reveals suffice.
async fn announce_then_reveal(
    dialer: Arc<Dialer>,
    dc: &DropoutContext,
    tau: Tau,
    survivors: &[String],
    targets: Vec<AgentAddress>,
    dropouts: &mut Dropouts,
) -> Result<BTreeMap<String, Reveal>> {
    let announcement = Request::LomAnnounce {
        version: AGENT_PROTOCOL_VERSION,
        session_id: dc.sid().to_owned(),
        round: tau.0,
        label: tau.1,
        survivors: survivors.to_vec(),
    };
    let announce = vec![announcement; targets.len()];
    let until = Instant::now() + NODE_TO_NODE_TIMEOUT;
    let answers = ask_each(dialer.clone(), targets.clone(), announce, until).await;
    let mut announced = Vec::new();
    for (target, answer) in targets.into_iter().zip(answers) {
        match answer {
            Ok(Reply::Stored) => announced.push(target),
            answer => dropouts.silent(&target.label, "announcement", answer),
        }
    }
    crate::fault::at(crate::fault::Step::DropoutResearcherAnnounced)?;
    // Every survivor that recorded U1 checks it against the others before revealing: the
    // comparison needs them all recorded, hence two rounds of requests.
    let reveal = Request::LomReveal {
        version: AGENT_PROTOCOL_VERSION,
        session_id: dc.sid().to_owned(),
        round: tau.0,
        label: tau.1,
    };
    let reveal_req = vec![reveal; announced.len()];
    let until = Instant::now() + 2 * NODE_TO_NODE_TIMEOUT;
    let answers = ask_each(dialer, announced.clone(), reveal_req, until).await;
    let mut reveals = BTreeMap::new();
    for (target, answer) in announced.into_iter().zip(answers) {
        match answer {
            Ok(Reply::Revealed(r)) => {
                reveals.insert(target.label, r);
            }
            answer => dropouts.silent(&target.label, "reveal", answer),
        }
    }
    Ok(reveals)
}

/// b_u for every survivor u, from the shares the answering survivors revealed.
fn recover_self_seeds(
    dc: &DropoutContext,
    tau: Tau,
    survivors: &[String],
    reveals: &BTreeMap<String, Reveal>,
) -> Result<Vec<Zeroizing<Key32>>> {
    let mut out = Vec::with_capacity(survivors.len());
    for u in survivors {
        let held = shares_revealed(dc, reveals, |r| {
            r.shares
                .iter()
                .filter(|(of, _)| of == u)
                .map(|(_, share)| share)
                .collect()
        })?;
        if held.len() < dc.t {
            return Err(Error::peer(format!(
                "only {} shares of the self-mask of {u} arrived for round {} label {}, fewer than the threshold {}: the round cannot be unmasked, and no result is given",
                held.len(),
                tau.0,
                tau.1,
                dc.t
            ))
            .with_hint("too many survivors went silent while unmasking; go on with the next round"));
        }
        let refs: Vec<(u32, &[u8])> = held.iter().map(|(x, s)| (*x, s.as_slice())).collect();
        let seed = dropout::recover_seed(&refs, dc.t).map_err(|e| {
            e.context(format!(
                "the shares of the self-mask of {u} (round {} label {})",
                tau.0, tau.1
            ))
        })?;
        out.push(seed);
    }
    Ok(out)
}

/// The shares of one secret that the answering survivors revealed (`pick` finds them in a
/// reveal), each with its x (the holder's node index + 1), decoded.
fn shares_revealed(
    dc: &DropoutContext,
    reveals: &BTreeMap<String, Reveal>,
    pick: impl Fn(&Reveal) -> Vec<&String>,
) -> Result<Vec<(u32, Zeroizing<Vec<u8>>)>> {
    let mut held = Vec::new();
    for (holder, r) in reveals {
        let x = dc.node_index(holder).expect("a survivor is a node") as u32 + 1;
        for share in pick(r) {
            let bytes = hex::decode(share).map_err(|_| {
                Error::peer(format!("{holder} revealed a share that is not hexadecimal"))
            })?;
            held.push((x, Zeroizing::new(bytes)));
        }
    }
    Ok(held)
}

/// (survivor, dropped, round seed) for every survivor and every node dropped before masking:
/// revealed by the survivor itself, or, when it went silent, rebuilt from the shares of it that
/// the answering survivors revealed.
fn dangling_seeds(
    dc: &DropoutContext,
    tau: Tau,
    survivors: &[String],
    dropouts: &Dropouts,
    reveals: &BTreeMap<String, Reveal>,
) -> Result<Vec<(String, String, Zeroizing<Key32>)>> {
    let mut out = Vec::new();
    for d in &dropouts.before_masking {
        for v in survivors {
            let seed = match reveals.get(v) {
                Some(r) => revealed_seed(v, d, r)?,
                None => rebuilt_seed(dc, tau, (v, d), reveals)?,
            };
            out.push((v.clone(), d.clone(), seed));
        }
    }
    Ok(out)
}

/// The round seed with `d` that survivor `v` revealed in `r`.
fn revealed_seed(v: &str, d: &str, r: &Reveal) -> Result<Zeroizing<Key32>> {
    let (_, seed) = r.seeds.iter().find(|(with, _)| with == d).ok_or_else(|| {
        Error::peer(format!(
            "{v} revealed no round seed with {d}, which dropped before masking"
        ))
    })?;
    let bytes = Zeroizing::new(
        hex::decode(seed)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                Error::peer(format!(
                    "{v} revealed a round seed that is not 32 hexadecimal bytes"
                ))
            })?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Silent survivor `v`'s round seed with dropped `d`, from t or more of the answering
/// survivors' shares of it (checked for consistency beyond t).
fn rebuilt_seed(
    dc: &DropoutContext,
    tau: Tau,
    (v, d): (&str, &str),
    reveals: &BTreeMap<String, Reveal>,
) -> Result<Zeroizing<Key32>> {
    let held = shares_revealed(dc, reveals, |r| {
        r.seed_shares
            .iter()
            .filter(|(of, with, _)| of == v && with == d)
            .map(|(_, _, share)| share)
            .collect()
    })?;
    if held.len() < dc.t {
        return Err(Error::peer(format!(
            "{v} went silent while unmasking round {} label {} of LOM context {}, and only {} shares of its round seed with {d} (which dropped before masking) arrived, fewer than the threshold {}: the mask between them cannot be removed, and no result is given",
            tau.0,
            tau.1,
            dc.sid(),
            held.len(),
            dc.t
        ))
        .with_hint("too many survivors went silent while unmasking; go on with the next round"));
    }
    let refs: Vec<(u32, &[u8])> = held.iter().map(|(x, s)| (*x, s.as_slice())).collect();
    dropout::recover_seed(&refs, dc.t).map_err(|e| {
        e.context(format!(
            "the shares of the round seed of {v} with {d} (round {} label {})",
            tau.0, tau.1
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Refuses, inside a write transaction, a context deleted since it was read (by `context delete`
/// or `prune` in another process): nothing is then written for it.
fn ensure_context(tx: &rusqlite::Connection, sid: &str) -> Result<()> {
    match crate::store::contexts::get(tx, sid)? {
        Some(_) => Ok(()),
        None => Err(Error::not_found(format!(
            "LOM context {sid} was deleted here meanwhile"
        ))),
    }
}

/// The agents of the context's nodes, but those in `skip`, from this party's store.
fn other_nodes(store: &mut Store, dc: &DropoutContext, skip: &[&str]) -> Result<Vec<AgentAddress>> {
    let wanted: Vec<&String> = dc
        .nodes
        .iter()
        .filter(|n| !skip.contains(&n.as_str()))
        .collect();
    store.read(|tx| {
        wanted
            .iter()
            .map(|id| {
                let party = PartyId::parse_custom(id)?;
                let peer = peers::get(tx, &party)?.ok_or_else(|| {
                    Error::not_found(format!(
                        "`{id}`, a node of LOM context {}, is no longer registered here",
                        dc.sid()
                    ))
                })?;
                Ok(AgentAddress {
                    label: id.to_string(),
                    endpoint: peer.endpoint,
                    certificate_der: peer.certificate_der,
                })
            })
            .collect()
    })
}

fn reply_name(r: &Reply) -> &'static str {
    match r {
        Reply::Accepted { .. } => "accepted",
        Reply::Refused { .. } => "refused",
        Reply::Result { .. } => "a session result",
        Reply::Status(_) => "a status",
        Reply::Roster { .. } | Reply::RosterFollows { .. } => "a roster",
        Reply::Stored => "stored",
        Reply::Survivors { .. } => "survivors",
        Reply::Revealed(_) => "a reveal",
    }
}

/// Runs `f` on a runtime of its own (the callers are synchronous: the CLI and Python).
fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("while starting the runtime", e))?;
    Ok(rt.block_on(f))
}
