//! The session plan: who takes part, in which order, with which certificates and parameters —
//! checked once by [`NegotiationPlan::new`], then trusted by every engine. A leaf of the engine
//! module (it uses only the crate's party types, field bounds and errors), so that engine support
//! code such as MP-SPDZ run directories can use it without depending on the engines.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use num_bigint::BigUint;
use num_integer::Integer;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::field;
use crate::party::{Endpoint, Host, PartyId, Role, SessionId};

/// One party of a session as the local party knows it: id, MPC endpoint and the certificate
/// registered for it (DER). The certificate is *pinned*: a connection to or from this party is
/// accepted only if the peer presents exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartyEntry {
    /// The party id; its prefix gives the role.
    pub id: PartyId,
    /// Where the party listens for negotiation connections.
    pub endpoint: Endpoint,
    /// The registered certificate, DER.
    pub certificate_der: Vec<u8>,
}

/// The parts of a [`NegotiationPlan`], as the caller assembles them; [`NegotiationPlan::new`]
/// checks them and turns them into a plan.
pub struct PlanParts {
    /// The session id, shared by all parties.
    pub session_id: SessionId,
    /// Party 0 is the researcher, then the nodes, in session order.
    pub parties: Vec<PartyEntry>,
    /// This party's index in `parties`.
    pub my_index: usize,
    /// This party's private key (PKCS#8 DER), matching `parties[my_index].certificate_der`.
    pub my_key_pkcs8_der: Zeroizing<Vec<u8>>,
    /// Where to listen; `None` derives it from the own endpoint: an IP literal gives that
    /// `ip:port`, a host name gives `0.0.0.0:port`. Only parties with a lower-indexed peer
    /// (every party but the researcher) listen.
    pub listen: Option<SocketAddr>,
    /// Key length `k`: node keys are uniform in `[0, 2^k)`.
    pub key_bits: u32,
    /// The field prime; must satisfy `p > (n − 1) · 2^k`.
    pub prime: BigUint,
    /// Deadline for the whole session, counted from the start of `negotiate`.
    pub timeout: Duration,
    /// What the session produces: a Joye–Libert key per party, or pairwise LOM secrets.
    pub scheme: ContextScheme,
    /// LOM sessions: the dropout threshold t of the context (`None`: no dropout tolerance).
    pub dropout_threshold: Option<u32>,
}

/// What a session produces, and so which scheme its context serves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ContextScheme {
    /// Joye–Libert: every node a user key `sk_i`, the researcher the server key `sk0 = −Σ sk_i`
    /// (Shamir sharing among all parties).
    #[default]
    Jl,
    /// LOM: every pair of nodes a 32-byte secret from P-256 ECDH run directly between the two
    /// nodes; the researcher holds no secret, only the record that every node stored its set.
    Lom,
}

impl ContextScheme {
    /// The name stored, shown and given on the command line (`jl`, `lom`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContextScheme::Jl => "jl",
            ContextScheme::Lom => "lom",
        }
    }

    /// The scheme named `s` (`jl`, `lom`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "jl" => Ok(ContextScheme::Jl),
            "lom" => Ok(ContextScheme::Lom),
            other => Err(Error::invalid(format!(
                "unknown scheme `{}`: expected `jl` (Joye–Libert) or `lom` (low-overhead masking)",
                other.escape_debug()
            ))),
        }
    }
}

impl fmt::Display for ContextScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PlanParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanParts")
            .field("session_id", &self.session_id)
            .field(
                "parties",
                &self
                    .parties
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("my_index", &self.my_index)
            .field("my_key_pkcs8_der", &"<redacted>")
            .field("listen", &self.listen)
            .field("key_bits", &self.key_bits)
            .field("prime_bits", &self.prime.bits())
            .field("timeout", &self.timeout)
            .field("scheme", &self.scheme)
            .field("dropout_threshold", &self.dropout_threshold)
            .finish()
    }
}

/// Everything one party needs to run its side of a negotiation, checked.
///
/// The only way to get one is [`NegotiationPlan::new`], which runs every check that needs no
/// network; engines trust a plan and do not check it again. All parties of a session must agree
/// on the session id, the parties (same order, same ids, same certificates), the key length and
/// the prime; the native engine checks this in its first message and refuses any mismatch.
pub struct NegotiationPlan(PlanParts);

impl fmt::Debug for NegotiationPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("NegotiationPlan").field(&self.0).finish()
    }
}

/// Smallest session: the researcher and two nodes (with one node, the researcher would learn
/// its key from `sk0 = −sk_1`).
pub const MIN_PARTIES: usize = 3;

/// Largest session secagg accepts. Far above any federation seen in practice; it bounds memory
/// and the number of concurrent connections a malformed plan can cause.
pub const MAX_PARTIES: usize = 1000;

/// Checks a session's ordered party list: [`MIN_PARTIES`] to [`MAX_PARTIES`] parties, the
/// researcher first and only first, no id twice. The one definition of these rules, applied by
/// [`NegotiationPlan::new`] and, before the store is read, by [`crate::session`].
pub fn check_party_ids(ids: &[PartyId]) -> Result<()> {
    let n = ids.len();
    if n < MIN_PARTIES {
        return Err(Error::invalid(format!(
            "a session needs at least 3 parties (the researcher and at least 2 nodes), got {n}"
        ))
        .with_hint(
            "add nodes to the session; with a single node the researcher could compute its key",
        ));
    }
    if n > MAX_PARTIES {
        return Err(Error::invalid(format!(
            "the session has {n} parties, secagg supports at most {MAX_PARTIES}"
        )));
    }
    if ids[0].role() != Role::Researcher {
        return Err(Error::invalid(format!(
            "the first party must be the researcher (party 0 of the session is `{}`)",
            ids[0]
        ))
        .with_hint("list the researcher first, then the nodes"));
    }
    if let Some((i, extra)) = ids
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, id)| id.role() != Role::Node)
    {
        // An id without a prefix is a researcher's by Fed-BioMed's rule: most often a mistyped
        // node id (`nod_…`), which "a second researcher" alone would not reveal.
        if extra.is_custom() {
            return Err(Error::invalid(format!(
                "`{extra}` (party {i}) does not start with `node_`, so it is not a node's id: by Fed-BioMed's rule an id without the `node_` prefix is a researcher's, and only party 0 may be a researcher"
            ))
            .with_hint(format!(
                "check the spelling of `{extra}`: a node's id starts with `node_` (see `secagg certificate list`)"
            )));
        }
        return Err(Error::invalid(format!(
            "`{extra}` is a second researcher (party {i}): only party 0 may be a researcher"
        ))
        .with_hint("a session has exactly one researcher, listed first"));
    }
    // Quadratic, but n ≤ MAX_PARTIES and this runs once per session; it names the first pair.
    for (j, id) in ids.iter().enumerate() {
        if let Some(i) = ids[..j].iter().position(|x| x == id) {
            return Err(Error::invalid(format!(
                "party `{id}` is listed twice in the session (positions {i} and {j})"
            )));
        }
    }
    Ok(())
}

impl NegotiationPlan {
    /// Checks `parts` before any network activity and makes them a plan.
    ///
    /// Refuses (as [`Error::InvalidInput`]): a party list that is not [`MIN_PARTIES`] to [`MAX_PARTIES`] parties,
    /// the researcher first and only first, no id twice; one
    /// certificate used by two parties or an empty one; `my_index` out of range; an empty private
    /// key; an even or composite prime; a key length below [`MIN_KEY_BITS`](crate::engine::MIN_KEY_BITS) or
    /// not below the prime's bit length; a prime
    /// too small for `n` and `k` (the message gives the maximum node count); a zero timeout.
    pub fn new(parts: PlanParts) -> Result<Self> {
        let n = parts.parties.len();
        let ids: Vec<PartyId> = parts.parties.iter().map(|p| p.id.clone()).collect();
        check_party_ids(&ids)?;
        for i in 0..n {
            for j in i + 1..n {
                if parts.parties[i].certificate_der == parts.parties[j].certificate_der {
                    return Err(Error::invalid(format!(
                        "parties `{}` and `{}` have the same certificate",
                        parts.parties[i].id, parts.parties[j].id
                    ))
                    .with_hint("each party needs its own certificate; re-register the one that copied the other's"));
                }
            }
            if parts.parties[i].certificate_der.is_empty() {
                return Err(Error::invalid(format!(
                    "party `{}` has an empty certificate",
                    parts.parties[i].id
                )));
            }
        }
        if parts.my_index >= n {
            return Err(Error::invalid(format!(
                "this party's index {} is outside the session's {n} parties",
                parts.my_index
            )));
        }
        if parts.my_key_pkcs8_der.is_empty() {
            return Err(Error::invalid(format!(
                "no private key given for party `{}`",
                parts.parties[parts.my_index].id
            )));
        }
        if parts.prime.is_even() || parts.prime < BigUint::from(3u32) {
            return Err(Error::invalid(format!(
                "the prime must be an odd prime, got a {}-bit even number or a number below 3",
                parts.prime.bits()
            )));
        }
        if !field::is_probable_prime(&parts.prime) {
            return Err(Error::invalid(format!(
                "the {}-bit modulus given as prime is not prime (Miller–Rabin)",
                parts.prime.bits()
            ))
            .with_hint("use the default Fed-BioMed prime or a verified prime"));
        }
        field::check_key_bits(parts.key_bits, &parts.prime)?;
        field::check_bound(&parts.prime, parts.key_bits, n)?;
        if parts.timeout.is_zero() {
            return Err(Error::invalid("the negotiation timeout must be positive"));
        }
        if let Some(t) = parts.dropout_threshold {
            if parts.scheme != ContextScheme::Lom {
                return Err(Error::invalid(
                    "a dropout threshold applies only to LOM contexts (--scheme lom)",
                ));
            }
            crate::lom::dropout::check_threshold(t as usize, n - 1)?;
        }
        Ok(NegotiationPlan(parts))
    }

    /// The parts back, e.g. to change one and build a new plan with [`Self::new`].
    pub fn into_parts(self) -> PlanParts {
        self.0
    }

    /// What the session produces.
    pub fn scheme(&self) -> ContextScheme {
        self.0.scheme
    }

    /// The LOM context's dropout threshold, if it survives dropouts.
    pub fn dropout_threshold(&self) -> Option<u32> {
        self.0.dropout_threshold
    }

    /// The session id, shared by all parties.
    pub fn session_id(&self) -> SessionId {
        self.0.session_id
    }

    /// The parties: the researcher, then the nodes, in session order.
    pub fn parties(&self) -> &[PartyEntry] {
        &self.0.parties
    }

    /// This party's index in [`Self::parties`] (0 = researcher).
    pub fn my_index(&self) -> usize {
        self.0.my_index
    }

    /// This party's private key (PKCS#8 DER).
    pub fn my_key_pkcs8_der(&self) -> &Zeroizing<Vec<u8>> {
        &self.0.my_key_pkcs8_der
    }

    /// The listen address given explicitly, if any (see [`Self::listen_addr`]).
    pub fn listen(&self) -> Option<SocketAddr> {
        self.0.listen
    }

    /// Key length `k`.
    pub fn key_bits(&self) -> u32 {
        self.0.key_bits
    }

    /// The field prime.
    pub fn prime(&self) -> &BigUint {
        &self.0.prime
    }

    /// Deadline for the whole session, counted from the start of `negotiate`.
    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// Number of parties `n`.
    pub fn n(&self) -> usize {
        self.0.parties.len()
    }

    /// This party's entry.
    pub fn me(&self) -> &PartyEntry {
        &self.0.parties[self.0.my_index]
    }

    /// This party's role: party 0 is the researcher, every other party a node.
    pub fn my_role(&self) -> Role {
        if self.0.my_index == 0 {
            Role::Researcher
        } else {
            Role::Node
        }
    }

    /// The address to listen on: [`Self::listen`] or the one derived from the own endpoint.
    pub fn listen_addr(&self) -> SocketAddr {
        if let Some(a) = self.0.listen {
            return a;
        }
        let ep = &self.me().endpoint;
        match ep.host {
            Host::Ip(ip) => SocketAddr::new(ip, ep.port),
            Host::Name(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), ep.port),
        }
    }
}
