//! One LOM round of a LOM context, from a home: a node masks its parameters with the pairwise
//! secrets it stored for the context into a [`MaskedFile`] that it signs; the researcher checks
//! that it holds one file from every node of the context, all of this context, round and label,
//! each signed by the node it names, and sums them: the masks cancel and only the (weighted)
//! average remains, given only if every sum is one honest nodes can make.
//!
//! **No round twice.** Masking two different vectors with the same masks lets whoever holds both
//! subtract them. So a node records (context, round, label) durably, in the same store as the
//! secrets, before it hands out a masked vector, and refuses a second vector for the same triple
//! ([`Error::Conflict`]). Everything that can fail on the input (quantisation, weight, the
//! context's state) fails before the record, so a bad input burns no round.

use serde::Serialize;

use super::lom_dropout::{self, DropoutContext, Dropouts, ShareReport};
use super::one_per_node::OnePerNode;
use time::OffsetDateTime;

use super::masked_file::{profile_name, MaskedFile, MASKED_FORMAT, MASKED_VERSION};
use crate::contexts::{ContextRecord, KeyState};
use crate::engine::ContextScheme;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity;
use crate::lom::{self, Clipped, PairSecret, Profile};
use crate::party::{PartyId, Role, SessionId};
use crate::session;
use crate::store::{lom_rounds, lom_secrets, peers, Store};

/// A node's request to mask its parameters for one round.
#[derive(Debug, Clone)]
pub struct LomEncryptRequest {
    /// The LOM context.
    pub session: SessionId,
    /// The training round.
    pub round: u64,
    /// The vector's label (0: the weights); secagg's profile masks each label with its own
    /// stream, v6's profiles the same mask for every label of a round.
    pub label: u64,
    /// The parameters (finite numbers).
    pub values: Vec<f64>,
    /// The node's weight (its sample count, at most 131,071), if the federation weights.
    pub weight: Option<u64>,
    /// Clipping range `c`.
    pub clipping_range: u32,
    /// The construction: secagg's (the default) or v6's, bit for bit.
    pub profile: Profile,
}

/// What a node gets: the signed file, and what quantisation clipped (reported, never silent).
#[derive(Debug, Clone)]
pub struct LomMasked {
    /// The file to send the researcher.
    pub file: MaskedFile,
    /// The values outside `[−c, c]`, clipped to it.
    pub clipped: Clipped,
    /// Dropout-tolerant contexts: which nodes hold a share of this round's self-mask.
    pub shares: Option<ShareReport>,
}

/// The researcher's request to unmask one round.
#[derive(Debug, Clone)]
pub struct LomDecryptRequest {
    /// The LOM context.
    pub session: SessionId,
    /// The training round.
    pub round: u64,
    /// The vector's label.
    pub label: u64,
    /// One masked file per node, each with a name for errors.
    pub files: Vec<(String, MaskedFile)>,
}

/// The researcher's result for one LOM round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LomAverage {
    /// The context.
    pub session_id: String,
    /// The round.
    pub round: u64,
    /// The label.
    pub label: u64,
    /// The profile the nodes masked with.
    pub profile: String,
    /// Number of nodes averaged.
    pub nodes: usize,
    /// Number of parameters.
    pub count: usize,
    /// The sum of the nodes' weights (the number of nodes when unweighted).
    pub total_weight: u64,
    /// The weighted average of every parameter (in the quantisation's precision).
    pub average: Vec<f64>,
    /// Always true: every file was signed by the node it names.
    pub authenticated: bool,
    /// Dropout-tolerant contexts: who dropped out of the round, and when (the average is over
    /// the other nodes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropouts: Option<Dropouts>,
}

/// The confirmed LOM context of `session` in which this party has role `want`.
/// Read from `store`, the connection the caller goes on with (one open per call).
pub(crate) fn lom_context(
    store: &mut Store,
    session: &SessionId,
    want: Role,
) -> Result<ContextRecord> {
    let c = session::get_context_in(store, session)?;
    if c.scheme != ContextScheme::Lom {
        return Err(Error::invalid(format!(
            "session {session} is a {} context, not a LOM one",
            c.scheme
        ))
        .with_hint("use --scheme jl with it, or set up a LOM context with `secagg session run --scheme lom`"));
    }
    if c.role != want {
        return Err(match want {
            Role::Node => Error::invalid(format!(
                "this party is the researcher of session {session}: nodes mask, the researcher unmasks"
            )),
            Role::Researcher => Error::invalid(format!(
                "this party is a node of session {session}: the researcher unmasks the sum"
            ))
            .with_hint("send the masked file to the researcher"),
        });
    }
    if c.state != KeyState::Confirmed {
        return Err(Error::invalid(format!(
            "the LOM context of session {session} is unconfirmed: the researcher's confirmation never arrived, so some node may lack its secrets"
        ))
        .with_hint(format!(
            "ask the researcher whether `secagg context show {session}` lists the context; if it does, run `secagg context confirm {session}`"
        )));
    }
    Ok(c)
}

/// A node's pairwise secrets: (other node's id, secret), in party order.
pub type PeerSecrets = Vec<(String, zeroize::Zeroizing<crate::lom::prf::Key32>)>;

/// A node's confirmed LOM context of `session` and its pairwise secrets (one per other node, in
/// party order), for code that masks elsewhere: Fed-BioMed v6's own crypter, given the context
/// in the shape of its DH context entry (`secagg.fedbiomed.v6.dh_context`). The caller then holds
/// the secrets, and the round record of [`encrypt_lom`] is its business.
pub fn node_secrets(home: &Home, session: &SessionId) -> Result<(ContextRecord, PeerSecrets)> {
    let mut store = Store::open_party_read_only(home)?;
    let ctx = lom_context(&mut store, session, Role::Node)?;
    let me = &ctx.parties[ctx.party_index as usize];
    let peers: Vec<String> = ctx.parties[1..]
        .iter()
        .filter(|p| *p != me)
        .cloned()
        .collect();
    let sid = ctx.session_id.clone();
    let secrets = store.read(|tx| lom_secrets::get(tx, &sid, &peers))?;
    Ok((ctx, secrets))
}

/// Masks a node's parameters for one round with its stored pairwise secrets (see the module
/// documentation for the order of the checks and the round record).
pub fn encrypt_lom(home: &Home, req: &LomEncryptRequest) -> Result<LomMasked> {
    encrypt_lom_values(home, req, &req.values)
}

/// [`encrypt_lom`] of `values` in place of the request's own (which are ignored): parameters
/// that live elsewhere, such as a NumPy array the Python binding borrows.
pub fn encrypt_lom_values(
    home: &Home,
    req: &LomEncryptRequest,
    values: &[f64],
) -> Result<LomMasked> {
    if values.is_empty() {
        return Err(Error::invalid("no parameters to mask (an empty vector)"));
    }
    let mut store = Store::open_party(home)?;
    let ctx = lom_context(&mut store, &req.session, Role::Node)?;
    let signer = identity::load(home)?;
    let me = ctx.parties[ctx.party_index as usize].clone();
    let peers: Vec<String> = ctx.parties[1..]
        .iter()
        .filter(|p| **p != me)
        .cloned()
        .collect();
    let sid = ctx.session_id.clone();
    let secrets = store.read(|tx| lom_secrets::get(tx, &sid, &peers))?;
    let pairs: Vec<PairSecret<'_>> = secrets
        .iter()
        .map(|(peer, s)| PairSecret {
            peer: peer.as_str(),
            secret: s,
        })
        .collect();
    let stream = req.profile.stream(req.round, req.label);
    let nonce = lom::nonce(&req.session, req.profile);
    let nodes = ctx.parties.len() - 1;
    let dropout_threshold = ctx.dropout_threshold;
    let (masked, shares) = match dropout_threshold {
        None => {
            let masked = lom::encrypt(
                &me,
                &pairs,
                nodes,
                stream,
                values,
                req.weight,
                req.clipping_range,
                &nonce,
            )?;
            (masked, None)
        }
        Some(_) => {
            let dc = DropoutContext::of(ctx)?;
            if req.profile != Profile::Secagg {
                return Err(Error::invalid(format!(
                    "LOM context {} survives dropouts, which only secagg's profile does (Fed-BioMed v6 has no self-masks)",
                    req.session
                ))
                .with_hint("leave out --profile"));
            }
            let (q, clipped) = lom::quantize_weighted(values, req.weight, req.clipping_range)?;
            // The round is spent before the self-mask is drawn and shared: a crash from here on
            // leaves shares at other nodes for a round this node never masks again.
            record_round(&mut store, &req.session, req.round, req.label)?;
            let tau = (req.round, req.label);
            let with = (pairs.as_slice(), stream, &nonce);
            let (seed, report) = lom_dropout::share_self_seed(&signer, &mut store, &dc, tau, with)?;
            let values = lom::dropout::protect(&me, &pairs, nodes, stream, &q, &nonce, &seed)?;
            (lom::Masked { values, clipped }, Some(report))
        }
    };
    drop(pairs);
    drop(secrets);
    let mut file = MaskedFile {
        format: MASKED_FORMAT.to_owned(),
        version: MASKED_VERSION,
        session_id: req.session.to_string(),
        round: req.round,
        label: req.label,
        profile: profile_name(req.profile).to_owned(),
        party_id: me,
        nodes,
        count: values.len(),
        clipping_range: req.clipping_range,
        weight: req.weight,
        dropout_threshold,
        values: masked.values,
        signature: None,
    };
    file.sign(&signer)?;
    if shares.is_none() {
        record_round(&mut store, &req.session, req.round, req.label)?;
    }
    Ok(LomMasked {
        file,
        clipped: masked.clipped,
        shares,
    })
}

/// Records (session, round, label) durably; a second time is a conflict.
fn record_round(store: &mut Store, session: &SessionId, round: u64, label: u64) -> Result<()> {
    let sid = session.to_string();
    let fresh =
        store.write(|tx| lom_rounds::record(tx, &sid, round, label, OffsetDateTime::now_utc()))?;
    if !fresh {
        return Err(Error::conflict(format!(
            "round {round} (label {label}) of LOM context {session} was masked before: masking a second vector with the same masks would let the researcher subtract them"
        ))
        .with_hint("the first masked file of this round stands; use the next round number for new parameters"));
    }
    Ok(())
}

/// One node's masked file whose words may live apart from it (the Python binding borrows them
/// from a NumPy array instead of copying 8 bytes a value).
#[derive(Debug, Clone, Copy)]
pub struct MaskedView<'a> {
    /// What names the file in errors.
    pub name: &'a str,
    /// The file (its own `values` are ignored).
    pub file: &'a MaskedFile,
    /// Its words.
    pub values: &'a [u64],
}

/// Unmasks the weighted average of one round from every node's masked file.
pub fn decrypt_lom(home: &Home, req: &LomDecryptRequest) -> Result<LomAverage> {
    let views: Vec<MaskedView<'_>> = req
        .files
        .iter()
        .map(|(name, f)| MaskedView {
            name,
            file: f,
            values: &f.values,
        })
        .collect();
    decrypt_lom_views(home, &req.session, req.round, req.label, &views)
}

/// [`decrypt_lom`] over views: the checks, the signatures, then the unmasking.
pub fn decrypt_lom_views(
    home: &Home,
    session: &SessionId,
    round: u64,
    label: u64,
    files: &[MaskedView<'_>],
) -> Result<LomAverage> {
    let req = RoundOf {
        session: *session,
        round,
        label,
        files,
    };
    let mut store = Store::open_party_read_only(home)?;
    let ctx = lom_context(&mut store, session, Role::Researcher)?;
    let nodes: Vec<&String> = ctx.parties.iter().skip(1).collect();
    let first = req
        .files
        .first()
        .ok_or_else(|| Error::invalid("no masked files given"))?;
    let first = first.file;
    // Checks every file's shape, the first's included (its words fit the profile's width).
    check_one_file_per_node(&req, &nodes, first, ctx.dropout_threshold)?;
    let width = first.profile()?.width();
    check_signatures(&mut store, &req)?;
    let total_weight = total_weight(&req)?;
    let in_round = |e: Error| {
        e.context(format!(
            "round {} of LOM context {}",
            req.round, req.session
        ))
    };
    let (average, dropouts) = match ctx.dropout_threshold {
        None => {
            let vectors: Vec<&[u64]> = req.files.iter().map(|v| v.values).collect();
            let average = lom::decrypt(&vectors, width, total_weight, first.clipping_range)
                .map_err(in_round)?;
            (average, None)
        }
        Some(_) => {
            let dc = DropoutContext::of(ctx)?;
            let tau = (req.round, req.label);
            let (sums, dropouts) =
                lom_dropout::unmask_survivors(home, &mut store, &dc, tau, req.files)
                    .map_err(in_round)?;
            let average =
                lom::average_sums(&sums, req.files.len(), total_weight, first.clipping_range)
                    .map_err(in_round)?;
            (average, Some(dropouts))
        }
    };
    Ok(LomAverage {
        session_id: req.session.to_string(),
        round: req.round,
        label: req.label,
        profile: first.profile.clone(),
        nodes: req.files.len(),
        count: first.count,
        total_weight,
        average,
        authenticated: true,
        dropouts,
    })
}

/// The files of one round being unmasked.
struct RoundOf<'a> {
    session: SessionId,
    round: u64,
    label: u64,
    files: &'a [MaskedView<'a>],
}

/// The sum of the weights (see [`lom::encoding::total_weight`]).
fn total_weight(req: &RoundOf<'_>) -> Result<u64> {
    let weights: Vec<(&str, Option<u64>)> =
        req.files.iter().map(|v| (v.name, v.file.weight)).collect();
    lom::encoding::total_weight(&weights, "masked file")
}

/// One file per node of the context, all of this context, round, label and profile, alike in
/// shape.
///
/// A dropout-tolerant context (`dropout_threshold`) takes files from a subset of the nodes, each
/// file masked for that threshold; [`lom_dropout::unmask_survivors`] requires at least t of them.
fn check_one_file_per_node(
    req: &RoundOf<'_>,
    nodes: &[&String],
    first: &MaskedFile,
    dropout_threshold: Option<u32>,
) -> Result<()> {
    let session = req.session;
    let mut taken = OnePerNode::new(nodes);
    for view in req.files {
        let (name, f) = (view.name, view.file);
        let bad = |why: String| Error::invalid(format!("masked file {name}: {why}"));
        f.check_shape(name, view.values)?;
        if f.session_id != session.to_string() {
            return Err(bad(format!(
                "it is from session {}, not {session}",
                f.session_id
            ))
            .with_hint("give the files of one session and round"));
        }
        if (f.round, f.label) != (req.round, req.label) {
            return Err(bad(format!(
                "it is round {} label {}, not round {} label {}",
                f.round, f.label, req.round, req.label
            ))
            .with_hint("give the files of one round and label"));
        }
        if f.nodes != nodes.len() {
            return Err(bad(format!(
                "it was masked for {} nodes, the context has {}",
                f.nodes,
                nodes.len()
            )));
        }
        if f.dropout_threshold != dropout_threshold {
            return Err(bad(match (f.dropout_threshold, dropout_threshold) {
                (Some(t), None) => format!(
                    "it was masked for a dropout threshold of {t}, and the context has none"
                ),
                (None, Some(t)) => {
                    format!("it has no self-mask, and the context's dropout threshold is {t}")
                }
                (f, c) => format!(
                    "it was masked for a dropout threshold of {f:?}, the context's is {c:?}"
                ),
            }));
        }
        taken.take(&f.party_id, &session, bad)?;
        if (f.count, f.clipping_range, &f.profile)
            != (first.count, first.clipping_range, &first.profile)
        {
            return Err(bad(format!(
                "{} values, clipping range {}, profile `{}`; the first file has {}, {}, `{}`",
                f.count,
                f.clipping_range,
                f.profile,
                first.count,
                first.clipping_range,
                first.profile
            )));
        }
    }
    if dropout_threshold.is_some() {
        if first.profile != profile_name(Profile::Secagg) {
            return Err(Error::invalid(format!(
                "masked file {}: profile `{}` in a context that survives dropouts, which masks with secagg's profile only",
                req.files[0].name, first.profile
            )));
        }
        return Ok(());
    }
    taken.finish(
        "masked file",
        "the pairwise masks cancel only in the sum over every node of the context",
    )
}

/// Verifies every file's signature against the certificate registered for the node it names,
/// the files spread over the cores (each verification hashes its whole vector).
fn check_signatures(store: &mut Store, req: &RoundOf<'_>) -> Result<()> {
    let mut certificates = Vec::with_capacity(req.files.len());
    for view in req.files {
        let (name, f) = (view.name, view.file);
        let party = PartyId::parse_custom(&f.party_id)
            .map_err(|e| e.context(format!("in masked file {name}")))?;
        let peer = store.read(|tx| peers::get(tx, &party))?.ok_or_else(|| {
            Error::not_found(format!(
                "`{party}` is not registered here: the signature of masked file {name} cannot be checked"
            ))
        })?;
        certificates.push(peer.certificate_der);
    }
    crate::parallel::map_indexed(req.files.len(), |i| {
        let v = &req.files[i];
        v.file.verify_signature(v.name, &certificates[i], v.values)
    })?;
    Ok(())
}

/// The rounds a node masked under its LOM context `session`, ascending (for `context show`).
pub fn rounds_used(home: &Home, session: &SessionId) -> Result<Vec<u64>> {
    let sid = session.to_string();
    Store::open_party_read_only(home)?.read(|tx| lom_rounds::rounds(tx, &sid))
}
