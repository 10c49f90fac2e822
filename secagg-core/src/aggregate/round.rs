//! One aggregation round of a negotiated session, from a home: a node encrypts its parameters with
//! its stored user key into a [`CiphertextFile`] that it signs; the researcher checks that it holds
//! one file from every node of the session, all of this session and round, each signed by the node
//! it names and within bounds, and decrypts their average with the server key, which is given only
//! if every decrypted value is one that honest nodes can produce.
//!
//! Every node's ciphertexts are needed: the server key cancels the masks only when every node's
//! ciphertexts are multiplied in (`sk0 = −Σ sk_i`).

use serde::Serialize;

use super::one_per_node::OnePerNode;

use super::ciphertext_file::{
    CiphertextFile, CIPHERTEXT_FORMAT, CIPHERTEXT_VERSION, PROFILE_FEDBIOMED_V6,
};
use super::{Biprime, DEFAULT_CLIPPING_RANGE};
use crate::contexts::{ContextRecord, KeyState};
use crate::engine::SecretKey;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity;
use crate::party::{PartyId, Role, SessionId};
use crate::session;
use crate::store::{peers, Store};

/// A node's request to encrypt its parameters for one round.
#[derive(Debug, Clone)]
pub struct EncryptRequest {
    /// The negotiated session whose user key to use.
    pub session: SessionId,
    /// The training round.
    pub round: u64,
    /// The parameters (finite numbers).
    pub values: Vec<f64>,
    /// Clipping range `c` ([`DEFAULT_CLIPPING_RANGE`] unless the federation agreed another).
    pub clipping_range: u32,
    /// The encoding: Fed-BioMed v4's (the default) or v6's.
    pub profile: JlProfile,
    /// v6's encoding: the node's weight (its sample count, at most 131,071); the researcher then
    /// gets the weighted average. v4's encoding has no weight.
    pub weight: Option<u64>,
}

/// How a Joye–Libert round encodes the parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JlProfile {
    /// Fed-BioMed v4 (T = 10,000, 14-bit values packed for the node count, a plain average).
    #[default]
    FedbiomedV4,
    /// Fed-BioMed v6 (T = 8192, weighted, elements of `30 + ⌈log2(n + 1)⌉` bits, the average
    /// by the total weight; [`super::v6`]), on secagg's keys (`sk0 = −Σ sk_i` is v6's server key).
    FedbiomedV6,
}

impl JlProfile {
    /// The profile named `s` (`fedbiomed-v4`, `fedbiomed-v6`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fedbiomed-v4" => Ok(JlProfile::FedbiomedV4),
            "fedbiomed-v6" => Ok(JlProfile::FedbiomedV6),
            other => Err(Error::invalid(format!(
                "unknown Joye–Libert profile `{}`: expected `fedbiomed-v4` (the default) or `fedbiomed-v6`",
                other.escape_debug()
            ))),
        }
    }
}

impl EncryptRequest {
    /// A request with the default clipping range, v4's encoding.
    pub fn new(session: SessionId, round: u64, values: Vec<f64>) -> Self {
        EncryptRequest {
            session,
            round,
            values,
            clipping_range: DEFAULT_CLIPPING_RANGE,
            profile: JlProfile::FedbiomedV4,
            weight: None,
        }
    }
}

/// The researcher's result for one round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoundAverage {
    /// The session.
    pub session_id: String,
    /// The round.
    pub round: u64,
    /// Number of nodes whose parameters were averaged.
    pub nodes: usize,
    /// Number of parameters.
    pub count: usize,
    /// The average of every parameter over the nodes (in the quantisation's precision).
    pub average: Vec<f64>,
    /// Whether every file was signed by the node it names (false only when unsigned files were
    /// accepted with [`UnsignedFiles::Accept`]).
    pub authenticated: bool,
    /// The nodes whose files carried no signature (accepted with [`UnsignedFiles::Accept`]).
    pub unsigned_files_from: Vec<String>,
    /// The encoding, when not Fed-BioMed v4's (`fedbiomed-v6`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// v6's encoding: the total weight the sums were divided by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_weight: Option<u64>,
}

/// What to do with a ciphertext file that carries no signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsignedFiles {
    /// Refuse it ([`Error::Authentication`]): the default.
    #[default]
    Refuse,
    /// Accept it and mark the result unauthenticated (files made by hand, or by a build that
    /// did not sign). A file whose signature does not verify is refused regardless.
    Accept,
}

/// The researcher's request to decrypt one round.
#[derive(Debug, Clone)]
pub struct DecryptRequest {
    /// The negotiated session whose server key to use.
    pub session: SessionId,
    /// The training round.
    pub round: u64,
    /// One ciphertext file from every node, each named by where it came from (for errors).
    pub files: Vec<(String, CiphertextFile)>,
    /// What to do with unsigned files.
    pub unsigned: UnsignedFiles,
}

fn context(home: &Home, session: &SessionId, want: Role) -> Result<(ContextRecord, SecretKey)> {
    let c = session::get_context(home, session)?;
    if c.role != want {
        return Err(match want {
            Role::Node => Error::invalid(format!(
                "this party is the researcher of session {session}: nodes encrypt, the researcher decrypts"
            ))
            .with_hint("run `secagg aggregate decrypt` here, with the nodes' ciphertext files"),
            Role::Researcher => Error::invalid(format!(
                "this party is a node of session {session}: only the researcher holds the server key that decrypts"
            ))
            .with_hint("send the ciphertext file to the researcher"),
        });
    }
    if c.state != KeyState::Confirmed {
        return Err(Error::invalid(format!(
            "the key of session {session} is unconfirmed: the researcher's confirmation never arrived, so the session may not have completed there"
        ))
        .with_hint(format!(
            "ask the researcher whether `secagg context show {session}` lists the session; if it does, run `secagg context confirm {session}` and encrypt again"
        )));
    }
    let key = SecretKey::from_decimal(&c.key_decimal)?;
    Ok((c, key))
}

/// Encrypts a node's parameters for one round with the user key it stored for the session.
///
/// `progress`, if given, is called as ciphertexts are computed (see [`super::Progress`]).
pub fn encrypt_round(
    home: &Home,
    req: &EncryptRequest,
    biprime: &Biprime,
    progress: Option<super::Progress<'_>>,
) -> Result<CiphertextFile> {
    if req.values.is_empty() {
        return Err(
            Error::invalid("no parameters to encrypt (an empty vector)").with_hint(
                "give the model's parameters: a JSON array or a .npy file with at least one value",
            ),
        );
    }
    let (ctx, key) = context(home, &req.session, Role::Node)?;
    // Loaded before the (long) encryption, so that an identity that cannot sign fails first.
    let signer = identity::load(home)?;
    let nodes = ctx.parties.len().saturating_sub(1);
    let ciphertexts = match req.profile {
        JlProfile::FedbiomedV4 => {
            if req.weight.is_some() {
                return Err(Error::invalid(
                    "a weight is for Fed-BioMed v6's encoding: v4's averages the nodes unweighted",
                )
                .with_hint("add --profile fedbiomed-v6 (every node and the researcher), or leave the weight out"));
            }
            let q = super::quantize(&req.values, req.clipping_range)?;
            super::encrypt_with_progress(&q, &key, req.round, nodes, biprime, progress)?
        }
        JlProfile::FedbiomedV6 => {
            super::v6::encrypt(
                &req.values,
                req.weight,
                req.clipping_range,
                &key,
                req.round,
                nodes,
                biprime,
                progress,
            )?
            .ciphertexts
        }
    };
    let mut file = CiphertextFile {
        format: CIPHERTEXT_FORMAT.to_owned(),
        version: CIPHERTEXT_VERSION,
        session_id: req.session.to_string(),
        round: req.round,
        party_id: ctx.parties[ctx.party_index as usize].clone(),
        nodes,
        count: req.values.len(),
        clipping_range: req.clipping_range,
        biprime: biprime.name.clone(),
        ciphertexts: ciphertexts.iter().map(|c| c.to_str_radix(10)).collect(),
        profile: (req.profile == JlProfile::FedbiomedV6).then(|| PROFILE_FEDBIOMED_V6.to_owned()),
        weight: req.weight,
        signature: None,
    };
    file.sign(&signer)?;
    Ok(file)
}

/// Decrypts the average of one round from every node's ciphertext file with the server key of
/// the session. In order: each file's fields against the session and the others; its shape
/// (bounded before any parse); its signature against the certificate registered for the node it
/// names; every ciphertext in `0 < c < N²`; then the decryption, whose values must be sums that
/// honest nodes can make ([`Error::Verification`] otherwise).
///
/// `progress`, if given, is called as ciphertexts are decrypted (see [`super::Progress`]).
pub fn decrypt_round(
    home: &Home,
    req: &DecryptRequest,
    biprime: &Biprime,
    progress: Option<super::Progress<'_>>,
) -> Result<RoundAverage> {
    let (ctx, sk0) = context(home, &req.session, Role::Researcher)?;
    let nodes: Vec<&String> = ctx.parties.iter().skip(1).collect();
    let first = &req
        .files
        .first()
        .ok_or_else(|| Error::invalid("no ciphertext files given"))?
        .1;
    check_one_file_per_node(req, &nodes, first, biprime)?;
    let unsigned_files_from = check_signatures(home, req)?;
    let mut all = Vec::with_capacity(req.files.len());
    for (name, f) in &req.files {
        all.push(f.ciphertexts(name, biprime)?);
    }
    let aggregated = super::aggregate(&all, biprime)?;
    let (average, total_weight) = match first.profile.as_deref() {
        Some(PROFILE_FEDBIOMED_V6) => {
            let total_weight = total_weight(req)?;
            let average = super::v6::decrypt(
                &aggregated,
                &sk0,
                req.round,
                nodes.len(),
                first.count,
                total_weight,
                first.clipping_range,
                biprime,
                progress,
            )?;
            (average, Some(total_weight))
        }
        _ => {
            let sums = super::decrypt_with_progress(
                &aggregated,
                &sk0,
                req.round,
                nodes.len(),
                first.count,
                biprime,
                progress,
            )?;
            (
                super::average(&sums, nodes.len(), first.clipping_range),
                None,
            )
        }
    };
    Ok(RoundAverage {
        session_id: req.session.to_string(),
        round: req.round,
        nodes: nodes.len(),
        count: first.count,
        average,
        authenticated: unsigned_files_from.is_empty(),
        unsigned_files_from,
        profile: first.profile.clone(),
        total_weight,
    })
}

/// v6's encoding: the sum of the weights (see [`crate::lom::encoding::total_weight`]).
fn total_weight(req: &DecryptRequest) -> Result<u64> {
    let weights: Vec<(&str, Option<u64>)> = req
        .files
        .iter()
        .map(|(name, f)| (name.as_str(), f.weight))
        .collect();
    crate::lom::encoding::total_weight(&weights, "ciphertext file")
}

/// Checks that the files are one per node of the session, each in bounds
/// ([`CiphertextFile::check_shape`]), all of this session and round, packed alike and for the
/// biprime in use.
fn check_one_file_per_node(
    req: &DecryptRequest,
    nodes: &[&String],
    first: &CiphertextFile,
    biprime: &Biprime,
) -> Result<()> {
    let (session, round) = (&req.session, req.round);
    let mut taken = OnePerNode::new(nodes);
    for (name, f) in &req.files {
        let bad = |why: String| Error::invalid(format!("ciphertext file {name}: {why}"));
        if f.format != CIPHERTEXT_FORMAT || f.version != CIPHERTEXT_VERSION {
            return Err(bad(format!(
                "format `{}` version {} is not `{CIPHERTEXT_FORMAT}` version {CIPHERTEXT_VERSION}",
                f.format, f.version
            )));
        }
        f.check_shape(name, biprime)?;
        if f.session_id != session.to_string() {
            return Err(bad(format!(
                "it is from session {}, not {session}",
                f.session_id
            ))
            .with_hint("give the files of one session and round"));
        }
        if f.round != round {
            return Err(
                bad(format!("it is from round {}, not round {round}", f.round))
                    .with_hint("give the files of one session and round"),
            );
        }
        if f.nodes != nodes.len() {
            return Err(bad(format!(
                "it was packed for {} nodes, the session has {}",
                f.nodes,
                nodes.len()
            )));
        }
        taken.take(&f.party_id, session, bad)?;
        if f.profile != first.profile {
            return Err(bad(format!(
                "encoded as `{}`, the first file as `{}`",
                f.profile.as_deref().unwrap_or("fedbiomed-v4"),
                first.profile.as_deref().unwrap_or("fedbiomed-v4")
            ))
            .with_hint("every node must encrypt with the same --profile"));
        }
        if first.profile.is_none() && f.weight.is_some() {
            return Err(bad(
                "it carries a weight, which v4's encoding has not".into()
            ));
        }
        if (f.count, f.clipping_range, &f.biprime)
            != (first.count, first.clipping_range, &first.biprime)
        {
            return Err(bad(format!(
                "{} values, clipping range {}, biprime `{}`; the first file has {}, {}, `{}`",
                f.count,
                f.clipping_range,
                f.biprime,
                first.count,
                first.clipping_range,
                first.biprime
            )));
        }
        if f.biprime != biprime.name {
            return Err(bad(format!(
                "encrypted with biprime `{}`, decrypting with `{}`",
                f.biprime, biprime.name
            ))
            .with_hint("use the same --biprime as the nodes"));
        }
    }
    taken.finish(
        "ciphertext file",
        "the server key cancels the masks only when every node's ciphertexts are aggregated",
    )
}

/// Verifies every file's signature against the certificate registered here for the node it
/// names. Returns the nodes whose unsigned files were accepted ([`UnsignedFiles::Accept`]).
fn check_signatures(home: &Home, req: &DecryptRequest) -> Result<Vec<String>> {
    let mut store = Store::open_party_read_only(home)?;
    let mut unsigned = Vec::new();
    for (name, f) in &req.files {
        if f.signature.is_none() && req.unsigned == UnsignedFiles::Accept {
            unsigned.push(f.party_id.clone());
            continue;
        }
        let party = PartyId::parse_custom(&f.party_id)
            .map_err(|e| e.context(format!("in ciphertext file {name}")))?;
        let peer = store.read(|tx| peers::get(tx, &party))?.ok_or_else(|| {
            Error::not_found(format!(
                "`{party}` is not registered here: the signature of ciphertext file {name} cannot be checked"
            ))
            .with_hint(format!("register `{party}`'s certificate (`secagg certificate register`), checking its fingerprint"))
        })?;
        f.verify_signature(name, &peer.certificate_der)?;
    }
    Ok(unsigned)
}
