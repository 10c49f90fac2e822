//! Negotiation sessions backed by the local store: from a session id and an ordered party list to
//! a validated [`NegotiationPlan`], and from an engine's [`Outcome`] to a stored context.
//!
//! Everything that can be checked without the network is checked here, before any traffic: the
//! session id, n ≥ 3, researcher first, no duplicates, this party in the list, every other party
//! registered with a certificate that is valid now, no context already stored for the session, and
//! (in [`NegotiationPlan::validate`]) the prime bound p > (n−1)·2^k.

use std::net::SocketAddr;
use std::time::Duration;

use num_bigint::BigUint;
use serde::Serialize;
use time::OffsetDateTime;

use crate::certificate::{format_time, ValidityStatus};
use crate::engine::{Engine, NegotiationPlan, Outcome, PartyEntry};
use crate::error::{Error, Result};
use crate::field;
use crate::home::Home;
use crate::identity;
use crate::party::{PartyId, Role};
use crate::registration::{not_registered, open_existing_store};
use crate::store::contexts::{self, ContextRecord};
use crate::store::peers;

/// Default whole-session deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a party asks for when it runs its side of a session.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Session id (a uuid, agreed by all parties).
    pub session_id: String,
    /// Party ids in session order, researcher first.
    pub parties: Vec<String>,
    /// Whole-session deadline.
    pub timeout: Duration,
    /// Key bit length; `None` is [`field::DEFAULT_KEY_BITS`].
    pub key_bits: Option<u32>,
    /// Field prime; `None` is Fed-BioMed's 2050-bit prime.
    pub prime: Option<BigUint>,
    /// Where to listen; `None` derives it from this party's endpoint.
    pub listen: Option<SocketAddr>,
}

/// Parses a session id (a uuid in any of its usual spellings).
pub fn parse_session_id(s: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(s.trim()).map_err(|_| {
        Error::invalid(format!("session id `{}` is not a uuid", s.escape_debug()))
            .with_hint("all parties must use the same session id, e.g. one made by `uuidgen`")
    })
}

/// Builds and validates this party's plan for `req` from the identity and store of `home`.
pub fn plan(home: &Home, req: &SessionRequest, now: OffsetDateTime) -> Result<NegotiationPlan> {
    let session_id = parse_session_id(&req.session_id)?;
    let own = identity::load(home)?;
    let mut ids = Vec::with_capacity(req.parties.len());
    for p in &req.parties {
        ids.push(PartyId::parse(p.trim()).map_err(|e| e.context("in --parties"))?);
    }
    if ids.len() < crate::engine::MIN_PARTIES {
        return Err(Error::invalid(format!(
            "a session needs at least 3 parties (the researcher and 2 nodes), got {}",
            ids.len()
        )));
    }
    if ids[0].role() != Role::Researcher {
        return Err(Error::invalid(format!(
            "the first party must be the researcher, got `{}`",
            ids[0]
        ))
        .with_hint("list the researcher first, then the nodes"));
    }
    if let Some(extra) = ids.iter().skip(1).find(|id| id.role() == Role::Researcher) {
        return Err(Error::invalid(format!(
            "`{extra}` is a second researcher: a session has one researcher, listed first"
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(Error::invalid(format!("party `{id}` is listed twice")));
        }
    }
    let my_index = ids
        .iter()
        .position(|id| *id == own.party_id)
        .ok_or_else(|| {
            Error::invalid(format!(
                "this party (`{}`) is not in the party list",
                own.party_id
            ))
            .with_hint("every party runs the session with the same list, which includes itself")
        })?;
    let mut store = open_existing_store(home)?;
    let parties = store.read(|tx| {
        if contexts::get(tx, &session_id.to_string())?.is_some() {
            return Err(Error::conflict(format!(
                "a context for session `{session_id}` is already stored"
            ))
            .with_hint("each negotiation needs a new session id"));
        }
        let mut missing = Vec::new();
        let mut entries = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if i == my_index {
                entries.push(PartyEntry {
                    id: id.clone(),
                    endpoint: own.endpoint.clone(),
                    certificate_der: own.certificate.der.clone(),
                });
                continue;
            }
            match peers::get(tx, id)? {
                None => missing.push(id.to_string()),
                Some(p) => {
                    match p.status_at(now) {
                        ValidityStatus::Expired => {
                            return Err(Error::invalid(format!(
                                "the registered certificate of `{id}` expired on {}",
                                format_time(p.not_after)
                            ))
                            .with_hint(format!(
                            "ask `{id}` for a renewed certificate and register it with --upsert"
                        )))
                        }
                        ValidityStatus::NotYetValid => {
                            return Err(Error::invalid(format!(
                                "the registered certificate of `{id}` is not valid before {}",
                                format_time(p.not_before)
                            )))
                        }
                        _ => {}
                    }
                    entries.push(PartyEntry {
                        id: id.clone(),
                        endpoint: p.endpoint.clone(),
                        certificate_der: p.certificate_der.clone(),
                    });
                }
            }
        }
        match missing.len() {
            0 => Ok(entries),
            1 => Err(not_registered(&PartyId::parse(&missing[0])?)),
            _ => Err(
                Error::not_found(format!("parties not registered: {}", missing.join(", ")))
                    .with_hint(
                    "register every other party of the session with `secagg certificate register`",
                ),
            ),
        }
    })?;
    if own.certificate.status_at(now) == ValidityStatus::Expired {
        return Err(Error::invalid(format!(
            "this party's certificate expired on {}",
            format_time(own.certificate.not_after)
        ))
        .with_hint(
            "renew it with `secagg certificate generate --force` and have every peer register it",
        ));
    }
    let plan = NegotiationPlan {
        session_id,
        parties,
        my_index,
        my_key_pkcs8_der: own.private_key_der()?,
        listen: req.listen,
        key_bits: req.key_bits.unwrap_or(field::DEFAULT_KEY_BITS),
        prime: req.prime.clone().unwrap_or_else(field::fedbiomed_prime),
        timeout: req.timeout,
    };
    plan.validate()?;
    Ok(plan)
}

/// What `secagg negotiate` reports (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct NegotiationReport {
    /// Session id.
    pub session_id: String,
    /// Engine name.
    pub engine: String,
    /// This party's role.
    pub role: Role,
    /// This party's index (0 = researcher).
    pub party_index: usize,
    /// Party ids in order.
    pub parties: Vec<String>,
    /// Key bit length.
    pub key_bits: u32,
    /// Fingerprint of the negotiated key.
    pub key_fingerprint: String,
    /// Milliseconds spent connecting (TLS handshakes).
    pub connect_ms: f64,
    /// Milliseconds spent exchanging shares.
    pub exchange_ms: f64,
    /// Milliseconds spent reconstructing and confirming.
    pub finish_ms: f64,
    /// Total milliseconds.
    pub total_ms: f64,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs this party's side of a session with `engine` and stores the result. Nothing is stored
/// unless the engine reports success.
pub fn negotiate(
    home: &Home,
    req: &SessionRequest,
    engine: &dyn Engine,
) -> Result<NegotiationReport> {
    let plan = plan(home, req, OffsetDateTime::now_utc())?;
    let parties: Vec<String> = plan.parties.iter().map(|p| p.id.to_string()).collect();
    let (session_id, my_index, key_bits) =
        (plan.session_id.to_string(), plan.my_index, plan.key_bits);
    let outcome: Outcome = engine.negotiate(plan)?;
    let record = ContextRecord {
        session_id: session_id.clone(),
        role: outcome.role,
        party_index: my_index as u32,
        parties: parties.clone(),
        engine: engine.name().to_owned(),
        key_bits,
        key_decimal: outcome.key.to_decimal(),
        key_fingerprint: outcome.key.fingerprint(),
        created_at: OffsetDateTime::now_utc(),
    };
    let mut store = open_existing_store(home)?;
    store.write(|tx| contexts::insert(tx, &record))?;
    let t = outcome.timings;
    Ok(NegotiationReport {
        session_id,
        engine: engine.name().to_owned(),
        role: outcome.role,
        party_index: my_index,
        parties,
        key_bits,
        key_fingerprint: record.key_fingerprint,
        connect_ms: ms(t.connect),
        exchange_ms: ms(t.exchange),
        finish_ms: ms(t.finish),
        total_ms: ms(t.total),
    })
}

/// Every stored context of `home`, newest first.
pub fn list_contexts(home: &Home) -> Result<Vec<ContextRecord>> {
    open_existing_store(home)?.read(|tx| contexts::list(tx))
}

/// The stored context of `session_id`.
pub fn get_context(home: &Home, session_id: &str) -> Result<ContextRecord> {
    let id = parse_session_id(session_id)?.to_string();
    open_existing_store(home)?
        .read(|tx| contexts::get(tx, &id))?
        .ok_or_else(|| no_context(&id))
}

/// Deletes the stored context of `session_id`.
pub fn delete_context(home: &Home, session_id: &str) -> Result<ContextRecord> {
    let id = parse_session_id(session_id)?.to_string();
    open_existing_store(home)?.write(|tx| {
        let c = contexts::get(tx, &id)?.ok_or_else(|| no_context(&id))?;
        contexts::delete(tx, &id)?;
        Ok(c)
    })
}

fn no_context(id: &str) -> Error {
    Error::not_found(format!("no context is stored for session `{id}`"))
        .with_hint("see `secagg context list`")
}

/// A fresh random session id (uuid4).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
