//! Contexts: the keys this party holds from key negotiations, and their states.
//!
//! A context holds a secret (the server key `sk0` for the researcher, the user key `sk_i` for a
//! node) as signed decimal text, so it can be handed to Fed-BioMed's Joye–Libert code unchanged.
//! The store file is 0600; the key is only read back on explicit request.
//!
//! Every context has a [`KeyState`]. The researcher stores its server key only at the end of a
//! successful session, `confirmed`. A node stores its key `unconfirmed` before it acknowledges the
//! researcher's finish, and marks it `confirmed` when the researcher's confirmation arrives: an
//! unconfirmed key belongs to a session whose researcher may hold no server key, so it is never
//! presented as ready. [`UNCONFIRMED_EXPIRY`] after it was stored, an unconfirmed key is
//! *expired*, and `secagg context prune` deletes it.
//!
//! This module holds the types (a leaf: the store's `contexts` table and the use cases in
//! [`crate::session`] both build on it); listing, showing, confirming and pruning contexts are in
//! [`crate::session`].

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::certificate::format_time;
use crate::engine::ContextScheme;
use crate::error::{Error, Result};
use crate::party::Role;

/// How long after it was stored an unconfirmed key expires (and `secagg context prune` deletes it
/// without being told an age). A week leaves time to ask the researcher whether the session
/// completed there (`secagg context confirm` then keeps the key).
pub const UNCONFIRMED_EXPIRY: time::Duration = time::Duration::days(7);

/// Whether a stored key is known to be usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// A node's key, stored before the researcher stored the server key; the researcher's final
    /// confirmation has not arrived (yet). It is usable only if the researcher's session
    /// completed: ask the researcher before using it.
    Unconfirmed,
    /// Ready: the server key of the session is stored at the researcher (for the researcher's own
    /// context, it is that server key).
    Confirmed,
}

impl KeyState {
    /// The name stored and shown (`unconfirmed`, `confirmed`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Unconfirmed => "unconfirmed",
            KeyState::Confirmed => "confirmed",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "unconfirmed" => Ok(KeyState::Unconfirmed),
            "confirmed" => Ok(KeyState::Confirmed),
            other => Err(Error::invalid(format!("unknown key state `{other}`"))),
        }
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored negotiation outcome.
#[derive(Clone)]
pub struct ContextRecord {
    /// Session id (uuid text).
    pub session_id: String,
    /// This party's role in the session.
    pub role: Role,
    /// This party's index in the party list.
    pub party_index: u32,
    /// Party ids in session order (researcher first).
    pub parties: Vec<String>,
    /// Engine that produced it (`native`, `mp-spdz`).
    pub engine: String,
    /// Key bit length of the session.
    pub key_bits: u32,
    /// The key, signed decimal. Secret.
    pub key_decimal: Zeroizing<String>,
    /// Fingerprint of the key (safe to print).
    pub key_fingerprint: String,
    /// When it was stored.
    pub created_at: OffsetDateTime,
    /// Whether the key is known to be usable.
    pub state: KeyState,
    /// When it was confirmed (`None` while unconfirmed, and for contexts stored before states
    /// existed).
    pub confirmed_at: Option<OffsetDateTime>,
    /// What the context serves: a Joye–Libert key (`key_decimal`), or LOM pairwise secrets (a
    /// node's in the store's `lom_secrets`; `key_decimal` is empty).
    pub scheme: ContextScheme,
    /// LOM contexts that survive dropouts: the threshold t of nodes whose shares rebuild a
    /// self-mask (`None`: every node's vector is needed, as in Fed-BioMed).
    pub dropout_threshold: Option<u32>,
}

impl ContextRecord {
    /// When an unconfirmed key expires (`None` for a confirmed one).
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        (self.state == KeyState::Unconfirmed).then(|| self.created_at + UNCONFIRMED_EXPIRY)
    }

    /// True for an unconfirmed key past its expiry at `now`.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }
}

impl std::fmt::Debug for ContextRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextRecord")
            .field("session_id", &self.session_id)
            .field("role", &self.role)
            .field("scheme", &self.scheme)
            .field("state", &self.state)
            .field("key_decimal", &"<redacted>")
            .field("key_fingerprint", &self.key_fingerprint)
            .finish_non_exhaustive()
    }
}

/// What `context list` and `context show` print (no key unless asked).
#[derive(Debug, Clone, Serialize)]
pub struct ContextSummary {
    /// Session id.
    pub session_id: String,
    /// Role.
    pub role: Role,
    /// Index in the party list.
    pub party_index: u32,
    /// `jl` (a Joye–Libert key) or `lom` (pairwise secrets).
    pub scheme: ContextScheme,
    /// LOM contexts that survive dropouts: the threshold t.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropout_threshold: Option<u32>,
    /// Dropout-tolerant LOM contexts, at a node: what it revealed to the researcher, per round
    /// and party.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reveals: Option<Vec<RevealRecord>>,
    /// LOM contexts: the rounds this party masked under it (a node), in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds_used: Option<Vec<u64>>,
    /// Party ids in order.
    pub parties: Vec<String>,
    /// Engine.
    pub engine: String,
    /// Key bit length.
    pub key_bits: u32,
    /// Key fingerprint.
    pub key_fingerprint: String,
    /// When stored (RFC 3339).
    pub created_at: String,
    /// `confirmed` (ready) or `unconfirmed` (the researcher's confirmation never arrived: usable
    /// only if the session completed at the researcher).
    pub state: KeyState,
    /// For an unconfirmed key: when it expires and `secagg context prune` deletes it (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// For an unconfirmed key: whether it has expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
    /// The key, only when revealed on request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl ContextRecord {
    /// A summary; the key is included only if `reveal_key`.
    pub fn summary(&self, reveal_key: bool) -> ContextSummary {
        let now = OffsetDateTime::now_utc();
        ContextSummary {
            session_id: self.session_id.clone(),
            role: self.role,
            party_index: self.party_index,
            scheme: self.scheme,
            dropout_threshold: self.dropout_threshold,
            rounds_used: None,
            reveals: None,
            parties: self.parties.clone(),
            engine: self.engine.clone(),
            key_bits: self.key_bits,
            key_fingerprint: self.key_fingerprint.clone(),
            created_at: format_time(self.created_at),
            state: self.state,
            expires_at: self.expires_at().map(format_time),
            expired: self.expires_at().map(|_| self.is_expired_at(now)),
            // A LOM context has no key to reveal (its secrets are per pair and never printed).
            key: (reveal_key && self.scheme == ContextScheme::Jl)
                .then(|| self.key_decimal.to_string()),
        }
    }
}

/// One reveal record, as `context show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevealRecord {
    /// The round.
    pub round: u64,
    /// The label.
    pub label: u64,
    /// The party it is about.
    pub party: String,
    /// `share` (of its self-mask) or `seed` (this node's round seed with it).
    pub revealed: &'static str,
}
