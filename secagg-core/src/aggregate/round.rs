//! One aggregation round of a negotiated session, from a home: a node encrypts its parameters with
//! its stored user key into a [`CiphertextFile`]; the researcher checks that it holds one file
//! from every node of the session, all of this session and round, and decrypts their average with
//! the server key.
//!
//! Every node's ciphertexts are needed: the server key cancels the masks only when every node's
//! ciphertexts are multiplied in (`sk0 = −Σ sk_i`).

use std::collections::BTreeSet;

use num_bigint::BigUint;
use serde::{Deserialize, Serialize};

use super::{Biprime, DEFAULT_CLIPPING_RANGE};
use crate::contexts::{ContextRecord, KeyState};
use crate::engine::SecretKey;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::party::{Role, SessionId};
use crate::session;

/// The `format` field of a ciphertext file.
pub const CIPHERTEXT_FORMAT: &str = "secagg-ciphertexts";
/// The version of the ciphertext file format this build writes and reads.
pub const CIPHERTEXT_VERSION: u32 = 1;

/// What a node sends the researcher for one round: its ciphertexts and what they belong to.
/// Ciphertexts are decimal strings (JSON numbers of 2048 bits would not survive most parsers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiphertextFile {
    /// Always [`CIPHERTEXT_FORMAT`].
    pub format: String,
    /// [`CIPHERTEXT_VERSION`].
    pub version: u32,
    /// The session whose keys were used.
    pub session_id: String,
    /// The training round (part of every batch's tag).
    pub round: u64,
    /// The node that encrypted.
    pub party_id: String,
    /// Number of nodes in the session (decides the packing).
    pub nodes: usize,
    /// Number of parameters encrypted.
    pub count: usize,
    /// Clipping range `c` used by the quantisation.
    pub clipping_range: u32,
    /// Name of the biprime.
    pub biprime: String,
    /// The ciphertexts, decimal.
    pub ciphertexts: Vec<String>,
}

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
}

impl EncryptRequest {
    /// A request with the default clipping range.
    pub fn new(session: SessionId, round: u64, values: Vec<f64>) -> Self {
        EncryptRequest {
            session,
            round,
            values,
            clipping_range: DEFAULT_CLIPPING_RANGE,
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
    let (ctx, key) = context(home, &req.session, Role::Node)?;
    let nodes = ctx.parties.len().saturating_sub(1);
    let q = super::quantize(&req.values, req.clipping_range)?;
    let ciphertexts = super::encrypt_with_progress(&q, &key, req.round, nodes, biprime, progress)?;
    Ok(CiphertextFile {
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
    })
}

/// Decrypts the average of one round from every node's ciphertext file (each named by where it
/// came from, for errors) with the server key of the session.
pub fn decrypt_round(
    home: &Home,
    session: &SessionId,
    round: u64,
    files: &[(String, CiphertextFile)],
    biprime: &Biprime,
    progress: Option<super::Progress<'_>>,
) -> Result<RoundAverage> {
    let (ctx, sk0) = context(home, session, Role::Researcher)?;
    let nodes: Vec<&String> = ctx.parties.iter().skip(1).collect();
    let first = &files
        .first()
        .ok_or_else(|| Error::invalid("no ciphertext files given"))?
        .1;
    let mut seen = BTreeSet::new();
    for (name, f) in files {
        let bad = |why: String| Error::invalid(format!("ciphertext file {name}: {why}"));
        if f.format != CIPHERTEXT_FORMAT || f.version != CIPHERTEXT_VERSION {
            return Err(bad(format!(
                "format `{}` version {} is not `{CIPHERTEXT_FORMAT}` version {CIPHERTEXT_VERSION}",
                f.format, f.version
            )));
        }
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
        if !nodes.iter().any(|n| **n == f.party_id) {
            return Err(bad(format!(
                "`{}` is not a node of session {session}",
                f.party_id
            )));
        }
        if !seen.insert(f.party_id.clone()) {
            return Err(bad(format!("a second file from `{}`", f.party_id)));
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
    let missing: Vec<&str> = nodes
        .iter()
        .filter(|n| !seen.contains(n.as_str()))
        .map(|n| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "no ciphertext file from {}: the server key cancels the masks only when every node's ciphertexts are aggregated",
            missing.join(", ")
        ))
        .with_hint("collect one file from every node of the session for this round"));
    }
    let mut all = Vec::with_capacity(files.len());
    for (name, f) in files {
        let cts = f
            .ciphertexts
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.parse::<BigUint>().map_err(|_| {
                    Error::invalid(format!(
                        "ciphertext file {name}: ciphertext {i} is not a decimal integer"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        all.push(cts);
    }
    let aggregated = super::aggregate(&all, biprime)?;
    let sums = super::decrypt_with_progress(
        &aggregated,
        &sk0,
        round,
        nodes.len(),
        first.count,
        biprime,
        progress,
    )?;
    Ok(RoundAverage {
        session_id: session.to_string(),
        round,
        nodes: nodes.len(),
        count: first.count,
        average: super::average(&sums, nodes.len(), first.clipping_range),
    })
}
