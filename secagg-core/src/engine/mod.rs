//! Key-negotiation engines: the interface every engine implements, the session plan, and the
//! negotiated key.
//!
//! A negotiation gives the researcher (party 0) a *server key* `sk0` and every node `i` a
//! *user key* `sk_i` with `sk0 + Σ sk_i = 0` over the integers. The caller assembles
//! [`PlanParts`] (session id, ordered party list with registered certificates, its own index and
//! private key, field parameters, deadline), [`NegotiationPlan::new`] checks them once, and the
//! plan goes to an [`Engine`], which trusts it. The engine
//! returns an [`Outcome`] only if the whole session succeeded; any failure of any party makes
//! every party return an error (see [`native`] for how that is ensured).
//!
//! Engines: [`NativeEngine`] (in-process Rust, the default) and [`MpSpdzEngine`] (MP-SPDZ's
//! `shamir-party.x`, prepared and supervised with the support code of [`crate::mpspdz`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use num_bigint::{BigInt, BigUint, Sign};
use num_integer::Integer;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::field;
use crate::party::{Endpoint, Host, PartyId, Role, SessionId};

pub mod mpspdz;
pub mod native;

pub use mpspdz::MpSpdzEngine;
pub use native::{negotiate_async, NativeEngine};

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
    /// Refuses (as [`Error::InvalidInput`]): a party list that [`check_party_ids`] refuses; one
    /// certificate used by two parties or an empty one; `my_index` out of range; an empty private
    /// key; an even or composite prime; a key length outside [`field::check_key_bits`]; a prime
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
        Ok(NegotiationPlan(parts))
    }

    /// The parts back, e.g. to change one and build a new plan with [`Self::new`].
    pub fn into_parts(self) -> PlanParts {
        self.0
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

/// A negotiated key: a signed integer (the researcher's `sk0` is negative, node keys are in
/// `[0, 2^k)`).
///
/// Held as sign + big-endian magnitude bytes in a zeroizing buffer, so the key is wiped when
/// dropped. Limits: conversions to [`BigInt`] ([`Self::to_bigint`], [`Self::to_decimal`]) make
/// num-bigint copies that are not wiped, and the computations that produced the key used
/// num-bigint temporaries that were freed without wiping.
///
/// `Debug` never shows the value; [`Self::fingerprint`] is safe to print. Equality is
/// constant-time in the value (it reveals only the longer of the two lengths).
#[derive(Clone)]
pub struct SecretKey {
    negative: bool,
    /// Big-endian magnitude without leading zeros (empty for 0).
    magnitude: Zeroizing<Vec<u8>>,
}

impl SecretKey {
    /// Builds a key from a signed integer.
    pub fn from_bigint(v: &BigInt) -> Self {
        let (sign, mut bytes) = v.to_bytes_be();
        let negative = sign == Sign::Minus;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let magnitude = Zeroizing::new(bytes[start..].to_vec());
        bytes.zeroize();
        SecretKey {
            negative: negative && !magnitude.is_empty(),
            magnitude,
        }
    }

    /// Builds a non-negative key.
    pub fn from_biguint(v: &BigUint) -> Self {
        Self::from_bigint(&BigInt::from(v.clone()))
    }

    /// The key as a signed integer (a copy num-bigint will not wipe).
    pub fn to_bigint(&self) -> BigInt {
        let sign = if self.magnitude.is_empty() {
            Sign::NoSign
        } else if self.negative {
            Sign::Minus
        } else {
            Sign::Plus
        };
        BigInt::from_bytes_be(sign, &self.magnitude)
    }

    /// True for a negative key (the researcher's).
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The key in decimal, `-` for negative keys (the form Fed-BioMed stores).
    pub fn to_decimal(&self) -> Zeroizing<String> {
        Zeroizing::new(self.to_bigint().to_str_radix(10))
    }

    /// Parses a decimal integer with an optional leading `-`.
    pub fn from_decimal(s: &str) -> Result<Self> {
        let digits = s.strip_prefix('-').unwrap_or(s);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid(
                "a key must be a decimal integer with an optional leading `-`",
            ));
        }
        let v: BigInt = s
            .parse()
            .map_err(|_| Error::invalid("a key must be a decimal integer"))?;
        Ok(Self::from_bigint(&v))
    }

    /// `SHA256:` + lowercase hex of SHA-256 over [`Self::to_decimal`]: lets two people check that
    /// they hold the same key without showing it.
    pub fn fingerprint(&self) -> String {
        let dec = self.to_decimal();
        format!("SHA256:{}", hex::encode(Sha256::digest(dec.as_bytes())))
    }

    /// Bit length of the magnitude.
    pub fn bits(&self) -> u64 {
        match self.magnitude.first() {
            None => 0,
            Some(&b) => (self.magnitude.len() as u64 - 1) * 8 + u64::from(8 - b.leading_zeros()),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        // Left-pad both magnitudes to the same length so the comparison time depends only on the
        // longer length, not on where the values differ.
        let len = self.magnitude.len().max(other.magnitude.len());
        let mut a = Zeroizing::new(vec![0u8; len]);
        let mut b = Zeroizing::new(vec![0u8; len]);
        a[len - self.magnitude.len()..].copy_from_slice(&self.magnitude);
        b[len - other.magnitude.len()..].copy_from_slice(&other.magnitude);
        let same_sign = (self.negative as u8).ct_eq(&(other.negative as u8));
        bool::from(same_sign & a.as_slice().ct_eq(b.as_slice()))
    }
}

impl Eq for SecretKey {}

/// Wall-clock time of the phases of one negotiation, as seen by one party.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseTimings {
    /// Listening, dialing, TLS handshakes and the session-binding hello with every peer.
    pub connect: Duration,
    /// Sharing the key and exchanging the share sums.
    pub exchange: Duration,
    /// Researcher: verification, interpolation, finish and acknowledgements; node: waiting for
    /// the researcher's finish and acknowledging it.
    pub finish: Duration,
    /// The whole negotiation, including validation.
    pub total: Duration,
}

impl PhaseTimings {
    /// The phases from the instants (as time since the start) at which connecting and exchanging
    /// ended, and the total.
    pub fn from_marks(connected: Duration, exchanged: Duration, total: Duration) -> Self {
        PhaseTimings {
            connect: connected,
            exchange: exchanged.saturating_sub(connected),
            finish: total.saturating_sub(exchanged),
            total,
        }
    }
}

/// The result of a successful negotiation for one party.
#[derive(Debug)]
pub struct Outcome {
    /// This party's role.
    pub role: Role,
    /// The negotiated key: `sk0` (negative) for the researcher, `sk_i` for a node.
    pub key: SecretKey,
    /// Where the time went.
    pub timings: PhaseTimings,
}

/// A key-negotiation engine.
pub trait Engine {
    /// Short name used on the command line (`native`, `mp-spdz`).
    fn name(&self) -> &'static str;
    /// The whole-session deadline to use when the caller gives none.
    fn default_timeout(&self) -> Duration;
    /// Runs this party's side of the session described by `plan`; blocks until the session
    /// succeeded, failed or hit its deadline. Returns a key only if the whole session succeeded.
    ///
    /// The engine hands the key to `sink` at the step that keeps the all-or-nothing invariant
    /// (see [`KeySink`]): a node stores its key before it lets the researcher finish, the
    /// researcher stores the server key only once every node has stored its own.
    fn negotiate(&self, plan: NegotiationPlan, sink: &mut dyn KeySink) -> Result<Outcome>;
}

/// Where an engine makes the negotiated key durable, and where it reports what the operator
/// should know.
///
/// The invariant every engine keeps: **a stored server key implies that every node of the session
/// has durably stored its key.** So:
/// - a node calls [`KeySink::store`] when the researcher says the session verified, and only
///   after it returned `Ok` tells the researcher so; the key is *unconfirmed* until the
///   researcher's final word, when the node calls [`KeySink::confirm`];
/// - the researcher calls [`KeySink::store`] once every node said it stored its key, and only
///   then sends its final word.
///
/// `store` must not return before the key is durable (fsynced); an error from it makes the party
/// abort the session.
pub trait KeySink: Send {
    /// Durably stores this party's key: a node's as unconfirmed, the researcher's server key.
    fn store(&mut self, key: &SecretKey) -> Result<()>;
    /// Node: the researcher confirmed the session; marks the stored key confirmed.
    /// Researcher: the server key is final, the confirmations are about to go out (from now on a
    /// failure must not undo the stored server key, since nodes may already hold confirmed keys).
    fn confirm(&mut self) -> Result<()>;
    /// Something the operator should see that does not stop the session (e.g. a connection from
    /// a stranger was dropped). Must not contain secrets; engines never pass any.
    fn warn(&mut self, message: &str);
}

/// A [`KeySink`] that keeps the key in memory: for tests, benchmarks and in-process demos that
/// have no store. It never fails.
#[derive(Debug, Default)]
pub struct MemorySink {
    /// The key handed to [`KeySink::store`], if any.
    pub stored: Option<SecretKey>,
    /// Whether [`KeySink::confirm`] was called.
    pub confirmed: bool,
    /// Every warning, in order.
    pub warnings: Vec<String>,
}

impl KeySink for MemorySink {
    fn store(&mut self, key: &SecretKey) -> Result<()> {
        self.stored = Some(key.clone());
        Ok(())
    }
    fn confirm(&mut self) -> Result<()> {
        self.confirmed = true;
        Ok(())
    }
    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::fedbiomed_prime;

    fn entry(id: &str, port: u16, cert: u8) -> PartyEntry {
        PartyEntry {
            id: PartyId::parse(id).unwrap(),
            endpoint: Endpoint::new("127.0.0.1", port.into()).unwrap(),
            certificate_der: vec![cert; 8],
        }
    }

    fn parts(parties: Vec<PartyEntry>) -> PlanParts {
        PlanParts {
            session_id: SessionId::generate(),
            parties,
            my_index: 0,
            my_key_pkcs8_der: Zeroizing::new(vec![1]),
            listen: None,
            key_bits: field::DEFAULT_KEY_BITS,
            prime: fedbiomed_prime(),
            timeout: Duration::from_secs(5),
        }
    }

    fn three() -> Vec<PartyEntry> {
        vec![
            entry("researcher_r", 14000, 1),
            entry("node_a", 14001, 2),
            entry("node_b", 14002, 3),
        ]
    }

    #[test]
    fn new_accepts_a_good_plan() {
        let p = NegotiationPlan::new(parts(three())).unwrap();
        assert_eq!(p.n(), 3);
        assert_eq!(p.my_role(), Role::Researcher);
        assert!(format!("{p:?}").contains("<redacted>"));
    }

    #[test]
    fn new_refusals() {
        let msg = |p: PlanParts| {
            let e = NegotiationPlan::new(p).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
            e.to_string()
        };
        assert!(msg(parts(three()[..2].to_vec())).contains("at least 2 nodes"));
        let mut swapped = three();
        swapped.swap(0, 1);
        assert!(msg(parts(swapped)).contains("party 0 of the session is `node_a`"));
        let mut two_res = three();
        two_res[2] = entry("researcher_x", 14002, 3);
        assert!(msg(parts(two_res)).contains("only party 0 may be a researcher"));
        let mut dup = three();
        dup[2] = entry("node_a", 14002, 3);
        assert!(msg(parts(dup)).contains("`node_a` is listed twice"));
        let mut same_cert = three();
        same_cert[2].certificate_der = same_cert[1].certificate_der.clone();
        assert!(msg(parts(same_cert)).contains("same certificate"));
        let mut p = parts(three());
        p.my_index = 3;
        assert!(msg(p).contains("index 3"));
        let mut p = parts(three());
        p.key_bits = 1;
        assert!(msg(p).contains("too short"));
        let mut p = parts(three());
        p.key_bits = u32::MAX;
        assert!(msg(p).contains("does not fit"));
        let mut p = parts(three());
        p.prime = BigUint::from(1_000_000u32);
        assert!(msg(p).contains("odd prime"));
        let mut p = parts(three());
        p.prime = BigUint::from(1_000_001u32); // 101 · 9901
        assert!(msg(p).contains("not prime"));
        let mut p = parts(three());
        p.key_bits = 2049; // the 2050-bit prime holds one 2049-bit key, not the sum of two
        assert!(msg(p).contains("at most 1 nodes"));
        let mut p = parts(three());
        p.timeout = Duration::ZERO;
        assert!(msg(p).contains("timeout"));
    }

    #[test]
    fn party_list_messages_name_both_spellings_of_each_rule() {
        // The CLI's tests and the engine's tests look for these phrases; one message serves both.
        let ids =
            |v: &[&str]| -> Vec<PartyId> { v.iter().map(|s| PartyId::parse(s).unwrap()).collect() };
        let e = check_party_ids(&ids(&["researcher_r", "node_a"])).unwrap_err();
        assert!(e.to_string().contains("at least 3 parties"), "{e}");
        let e = check_party_ids(&ids(&["node_a", "researcher_r", "node_b"])).unwrap_err();
        assert!(
            e.to_string().contains("first party must be the researcher"),
            "{e}"
        );
        let e = check_party_ids(&ids(&["researcher_r", "node_a", "node_a"])).unwrap_err();
        assert!(e.to_string().contains("(positions 1 and 2)"), "{e}");
        check_party_ids(&ids(&["researcher_r", "node_a", "node_b"])).unwrap();
    }

    #[test]
    fn listen_address_derivation() {
        let mut p = parts(three());
        p.my_index = 1;
        let plan = NegotiationPlan::new(p).unwrap();
        assert_eq!(plan.listen_addr(), "127.0.0.1:14001".parse().unwrap());
        let mut p = plan.into_parts();
        p.parties[1].endpoint = Endpoint::new("node1.example.org", 14001).unwrap();
        let plan = NegotiationPlan::new(p).unwrap();
        assert_eq!(plan.listen_addr(), "0.0.0.0:14001".parse().unwrap());
        let mut p = plan.into_parts();
        p.listen = Some("127.0.0.1:5".parse().unwrap());
        let plan = NegotiationPlan::new(p).unwrap();
        assert_eq!(plan.listen_addr(), "127.0.0.1:5".parse().unwrap());
    }

    #[test]
    fn secret_key_round_trip_and_redaction() {
        let v: BigInt = "-123456789012345678901234567890".parse().unwrap();
        let k = SecretKey::from_bigint(&v);
        assert!(k.is_negative());
        assert_eq!(k.to_bigint(), v);
        assert_eq!(k.to_decimal().as_str(), "-123456789012345678901234567890");
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
        let back = SecretKey::from_decimal("-123456789012345678901234567890").unwrap();
        assert_eq!(back, k);
        assert_ne!(
            SecretKey::from_decimal("123456789012345678901234567890").unwrap(),
            k
        );
        assert_ne!(
            SecretKey::from_decimal("-123456789012345678901234567891").unwrap(),
            k
        );
        assert_eq!(
            SecretKey::from_decimal("-0").unwrap(),
            SecretKey::from_decimal("0").unwrap()
        );
        assert_eq!(
            SecretKey::from_decimal("0007").unwrap(),
            SecretKey::from_decimal("7").unwrap()
        );
        for bad in ["", "-", "12a", "+5", " 1", "1.0"] {
            assert!(SecretKey::from_decimal(bad).is_err(), "{bad:?}");
        }
        // SHA-256("-1") from a reference implementation.
        assert_eq!(
            SecretKey::from_decimal("-1").unwrap().fingerprint(),
            "SHA256:1bad6b8cf97131fceab8543e81f7757195fbb1d36b376ee994ad1cf17699c464"
        );
        assert_eq!(SecretKey::from_decimal("255").unwrap().bits(), 8);
        assert_eq!(SecretKey::from_decimal("256").unwrap().bits(), 9);
    }
}
