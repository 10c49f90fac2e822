//! Key-negotiation engines: the interface every engine implements, the session plan, and the
//! negotiated key.
//!
//! A negotiation gives the researcher (party 0) a *server key* `sk0` and every node `i` a
//! *user key* `sk_i` with `sk0 + Σ sk_i = 0` over the integers. The caller assembles
//! [`PlanParts`] (session id, ordered party list with registered certificates, its own index and
//! private key, field parameters, deadline), [`NegotiationPlan::new`] checks them once, and the
//! plan goes to an [`Engine`], which trusts it. The engine
//! returns an [`Outcome`] only if the whole session succeeded; any failure of any party makes
//! every party return an error.
//!
//! Keys are handed to a [`KeySink`] (the store in [`crate::session`], memory in tests) at the
//! steps that keep the all-or-nothing invariant: **a stored server key implies that every node of
//! the session has durably stored its key.** A node stores its key *unconfirmed* before it lets
//! the researcher finish; the researcher stores `sk0` only once every node said it stored its key,
//! then confirms to the nodes. A failure before that leaves no server key, and the nodes' keys
//! stay unconfirmed (see [`crate::contexts`]).
//!
//! Engines: [`NativeEngine`] (in-process Rust, the default: Shamir sharing over pinned mutual TLS
//! 1.3) and [`MpSpdzEngine`] (MP-SPDZ's `shamir-party.x`, prepared and supervised with the support
//! code of [`crate::mpspdz`]).
//!
//! The field parameters a plan takes: [`fedbiomed_prime`] (the prime of Fed-BioMed's Joye–Libert
//! setup) and key lengths from [`MIN_KEY_BITS`] up, [`DEFAULT_KEY_BITS`] by default.

use std::time::Duration;

use crate::error::Result;
use crate::party::Role;

pub(crate) mod key;
pub(crate) mod mpspdz;
pub(crate) mod native;
pub(crate) mod plan;

pub use key::SecretKey;
pub use mpspdz::MpSpdzEngine;
pub use native::{negotiate_async, NativeEngine};
pub(crate) use plan::check_party_ids;
pub use plan::{ContextScheme, NegotiationPlan, PartyEntry, PlanParts, MAX_PARTIES, MIN_PARTIES};

pub use crate::supervise::CancelFlag;

pub use crate::field::{fedbiomed_prime, DEFAULT_KEY_BITS, FEDBIOMED_PRIME_DECIMAL, MIN_KEY_BITS};

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
    /// What the session gave this party.
    pub material: Material,
    /// Where the time went.
    pub timings: PhaseTimings,
}

/// What a session gives a party.
#[derive(Debug)]
pub enum Material {
    /// A Joye–Libert session's key: `sk0` (negative) for the researcher, `sk_i` for a node.
    Key(SecretKey),
    /// A LOM session's pairwise secrets (a node), or the record of the tags checked (the
    /// researcher).
    Pairwise(crate::lom::PairwiseSet),
}

impl Material {
    /// The key of a Joye–Libert session.
    pub fn key(&self) -> Option<&SecretKey> {
        match self {
            Material::Key(k) => Some(k),
            Material::Pairwise(_) => None,
        }
    }

    /// The fingerprint (safe to print) of what is stored.
    pub fn fingerprint(&self) -> String {
        match self {
            Material::Key(k) => k.fingerprint(),
            Material::Pairwise(p) => p.fingerprint.clone(),
        }
    }
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

    /// [`Engine::negotiate`] that another thread can stop early by setting `cancel` (e.g. on
    /// Ctrl-C in the Python package).
    ///
    /// Cancellation keeps the all-or-nothing invariant: it is honoured only at the waits before
    /// this party hands its key to `sink` (a node: up to the researcher's `Finish`; the
    /// researcher: up to the last node's acknowledgement). There the party aborts the session as
    /// on any failure (its peers are told), returns an [`Error::PeerFailure`](crate::Error)
    /// saying it was cancelled, and has stored nothing. Once its key is stored the party
    /// finishes the session (bounded by the deadline), since the others may already rely on it.
    ///
    /// The default implementation ignores `cancel`. The MP-SPDZ engine kills `shamir-party.x`
    /// instead: a node stored its key before it started (and keeps it, unconfirmed), and the
    /// researcher stores the server key only from a run that completed.
    fn negotiate_cancellable(
        &self,
        plan: NegotiationPlan,
        sink: &mut dyn KeySink,
        cancel: &CancelFlag,
    ) -> Result<Outcome> {
        let _ = cancel;
        self.negotiate(plan, sink)
    }
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
    /// LOM sessions' [`KeySink::store`]: durably stores a node's pairwise secrets (unconfirmed),
    /// or the researcher's record of the session (confirmed). Sinks that only take keys refuse.
    fn store_pairwise(&mut self, set: &crate::lom::PairwiseSet) -> Result<()> {
        let _ = set;
        Err(crate::error::Error::Internal(
            "this negotiation's key sink cannot store LOM pairwise secrets".into(),
        ))
    }
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
    /// The set handed to [`KeySink::store_pairwise`], if any.
    pub stored_pairwise: Option<crate::lom::PairwiseSet>,
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
    fn store_pairwise(&mut self, set: &crate::lom::PairwiseSet) -> Result<()> {
        self.stored_pairwise = Some(crate::lom::PairwiseSet {
            secrets: set.secrets.clone(),
            fingerprint: set.fingerprint.clone(),
        });
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
mod native_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field;
    use crate::field::fedbiomed_prime;
    use crate::party::{Endpoint, PartyId, SessionId};
    use num_bigint::{BigInt, BigUint};
    use zeroize::Zeroizing;

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
            scheme: ContextScheme::Jl,
            dropout_threshold: None,
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
        let e = check_party_ids(&ids(&["researcher_r", "researcher_s", "node_b"])).unwrap_err();
        assert!(e.to_string().contains("is a second researcher"), "{e}");
    }

    /// Issue 23, item 10: a mistyped node id (`nod_a`) was reported as "a second researcher".
    #[test]
    fn a_mistyped_node_id_is_named_as_such_not_as_a_second_researcher() {
        let parties = vec![
            PartyId::parse("researcher_r").unwrap(),
            PartyId::parse_entry("nod_a", true).unwrap(),
            PartyId::parse("node_b").unwrap(),
        ];
        let e = check_party_ids(&parties).unwrap_err();
        assert!(
            e.to_string()
                .contains("`nod_a` (party 1) does not start with `node_`"),
            "{e}"
        );
        assert!(!e.to_string().contains("is a second researcher"), "{e}");
        assert!(e.hint().unwrap().contains("spelling of `nod_a`"), "{e:?}");
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
