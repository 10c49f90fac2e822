//! Negotiation sessions backed by the local store: from a session id and an ordered party list to
//! a validated [`NegotiationPlan`], and from an engine's [`Outcome`] to a stored context.
//!
//! Everything that can be checked without the network is checked here, before any traffic: the
//! key length (before anything is allocated for it), the party list
//! (`engine::check_party_ids`: n ≥ 3, researcher first, no duplicates), this party in
//! the list, every other party registered with a certificate that is valid now, no context
//! already stored for the session, and (in [`NegotiationPlan::new`]) the prime bound
//! p > (n−1)·2^k. The session id and party ids arrive parsed ([`SessionRequest`]).
//!
//! The key reaches the store through [`StoreSink`], at the step of the protocol that keeps the
//! all-or-nothing invariant (see [`crate::engine::KeySink`]): a node's key is stored
//! `unconfirmed` before its acknowledgement and marked `confirmed` on the researcher's final word;
//! the researcher's server key is stored once every node acknowledged. Every wait, store locks
//! included, fits in the request's timeout.

use std::net::SocketAddr;
use std::time::Duration;

use num_bigint::BigUint;
use serde::Serialize;
use time::OffsetDateTime;

use crate::certificate::{format_time, ValidityStatus};
use crate::contexts::{ContextRecord, ContextSummary, KeyState, UNCONFIRMED_EXPIRY};
use crate::engine::{
    check_party_ids, CancelFlag, ContextScheme, Engine, KeySink, NegotiationPlan, Outcome,
    PartyEntry, PlanParts, SecretKey,
};
use crate::error::{Error, Result};
use crate::field;
use crate::home::Home;
use crate::identity::{self, Identity};
use crate::party::{PartyId, Role, SessionId};
use crate::registration::not_registered;
use crate::store::contexts;
use crate::store::lom_secrets;
use crate::store::peers;
use crate::store::pool::PooledStore;
use crate::store::Store;
use zeroize::Zeroizing;

/// Default whole-session deadline of the native engine (see [`Engine::default_timeout`]).
pub const DEFAULT_TIMEOUT: Duration = crate::engine::native::DEFAULT_TIMEOUT;

/// What a party asks for when it runs its side of a session, parsed: the caller turns text into
/// a [`SessionId`] and [`PartyId`]s (with [`SessionId::parse`], [`PartyId::parse`]).
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Session id, agreed by all parties.
    pub session_id: SessionId,
    /// Party ids in session order, researcher first.
    pub parties: Vec<PartyId>,
    /// Whole-session deadline.
    pub timeout: Duration,
    /// Key bit length; `None` is [`field::DEFAULT_KEY_BITS`].
    pub key_bits: Option<u32>,
    /// Field prime; `None` is Fed-BioMed's 2050-bit prime.
    pub prime: Option<BigUint>,
    /// Where to listen; `None` derives it from this party's endpoint.
    pub listen: Option<SocketAddr>,
    /// This party's endpoint for this session (its own entry of the plan, and where it listens
    /// unless `listen` is given); `None` is the stored one. `secagg negotiate` sets it from a
    /// run-time override (see [`identity::EndpointOverride`]).
    pub endpoint: Option<crate::party::Endpoint>,
    /// What the session produces: a Joye–Libert key (the default) or LOM pairwise secrets.
    pub scheme: ContextScheme,
    /// LOM sessions: the fewest distinct nodes (this one included) this party accepts a
    /// context with; `None` is [`DEFAULT_MIN_NODES`]. This party's policy, never the
    /// researcher's word.
    pub min_nodes: Option<usize>,
    /// LOM sessions: the context's dropout threshold t (`None`: every node's vector is needed).
    pub dropout_threshold: Option<u32>,
}

/// The fewest nodes of a LOM context a party accepts by default: with two, each node learns the
/// other's vector from the average; with three, a node's masks cancel against two others.
pub const DEFAULT_MIN_NODES: usize = 3;

/// Builds this party's plan for `req` from the identity and store of `home`. The plan's timeout
/// is what is left of `req.timeout` once the plan is built.
pub fn plan(home: &Home, req: &SessionRequest, now: OffsetDateTime) -> Result<NegotiationPlan> {
    plan_until(home, req, now, std::time::Instant::now() + req.timeout)
}

/// [`plan`], waiting for the store's lock at most until `deadline`, which also ends the plan's
/// timeout.
pub(crate) fn plan_until(
    home: &Home,
    req: &SessionRequest,
    now: OffsetDateTime,
    deadline: std::time::Instant,
) -> Result<NegotiationPlan> {
    // Early, so that an absurd key length is refused before anything is read.
    prime_and_key_bits(req)?;
    let own = identity::load(home)?;
    // Before the store is opened, so that a malformed list is not reported as unregistered ids.
    check_party_list(&own, &req.parties)?;
    let mut store = Store::open_party_until(home, deadline)?;
    plan_with(
        &mut store,
        &own,
        || own.private_key_der(),
        req,
        now,
        deadline,
    )
}

/// Refuses a LOM session with fewer nodes than this party's minimum.
fn check_min_nodes(req: &SessionRequest) -> Result<()> {
    if req.scheme != ContextScheme::Lom {
        return Ok(());
    }
    let min = req.min_nodes.unwrap_or(DEFAULT_MIN_NODES);
    let nodes = req.parties.len().saturating_sub(1);
    if nodes < min {
        return Err(Error::invalid(format!(
            "the LOM session lists {nodes} nodes, this party accepts at least {min} (counting itself)"
        ))
        .with_hint("with fewer nodes each one's masks cancel against too few others; add nodes, or lower the minimum with --min-nodes on every node if the federation accepts it"));
    }
    Ok(())
}

/// The session's prime and key length, the key length checked against the prime and named as
/// the option it came from (the plan checks it again, without the context).
fn prime_and_key_bits(req: &SessionRequest) -> Result<(BigUint, u32)> {
    let prime = req.prime.clone().unwrap_or_else(field::fedbiomed_prime);
    let key_bits = req.key_bits.unwrap_or(field::DEFAULT_KEY_BITS);
    field::check_key_bits(key_bits, &prime).map_err(|e| e.context("in --key-bits"))?;
    Ok((prime, key_bits))
}

/// Checks `ids` as a session's party list that includes this party; returns this party's index.
fn check_party_list(own: &Identity, ids: &[PartyId]) -> Result<usize> {
    check_party_ids(ids)?;
    ids.iter()
        .position(|id| *id == own.party_id)
        .ok_or_else(|| {
            Error::invalid(format!(
                "this party (`{}`) is not in the party list",
                own.party_id
            ))
            .with_hint("every party runs the session with the same list, which includes itself")
        })
}

/// [`plan_until`] for a process that holds this party's identity and an open store already
/// (the party agent, `session run`): reads the registered parties from `store` and this party's
/// private key from `my_key` (called once the rest checked out).
pub(crate) fn plan_with(
    store: &mut Store,
    own: &Identity,
    my_key: impl FnOnce() -> Result<Zeroizing<Vec<u8>>>,
    req: &SessionRequest,
    now: OffsetDateTime,
    deadline: std::time::Instant,
) -> Result<NegotiationPlan> {
    let (prime, key_bits) = prime_and_key_bits(req)?;
    let session_id = req.session_id;
    let ids = &req.parties;
    let my_index = check_party_list(own, ids)?;
    check_min_nodes(req)?;
    store.set_busy_timeout_until(deadline)?;
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
                    endpoint: req.endpoint.clone().unwrap_or_else(|| own.endpoint.clone()),
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
            _ if req.scheme == ContextScheme::Lom => Err(Error::invalid(format!(
                "the LOM session lists {} that this party never registered: {}",
                if missing.len() == 1 { "a party" } else { "parties" },
                missing.join(", ")
            ))
            .with_hint("a node masks only with parties whose certificates it pinned; a researcher cannot add parties no node registered (register them with `secagg certificate register` if they are genuine)")),
            1 => Err(not_registered(&PartyId::parse_custom(&missing[0])?)),
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
    let my_key_pkcs8_der = my_key()?;
    // The engine's deadline is what is left of the command's.
    let timeout = deadline.saturating_duration_since(std::time::Instant::now());
    if timeout.is_zero() {
        return Err(Error::timeout(format!(
            "session {session_id}: the {:.1}s timeout passed while preparing the session (waiting for the store)",
            req.timeout.as_secs_f64()
        ))
        .with_hint("another secagg process may hold this party's store; retry with a longer --timeout"));
    }
    NegotiationPlan::new(PlanParts {
        session_id,
        parties,
        my_index,
        my_key_pkcs8_der,
        listen: req.listen,
        key_bits,
        prime,
        timeout,
        scheme: req.scheme,
        dropout_threshold: req.dropout_threshold,
    })
}

/// What `secagg negotiate` reports (never the key itself).
#[derive(Debug, Clone, Serialize)]
pub struct NegotiationReport {
    /// Session id.
    pub session_id: String,
    /// Engine name.
    pub engine: String,
    /// `jl` (a Joye–Libert key) or `lom` (pairwise secrets).
    pub scheme: ContextScheme,
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

/// Runs this party's side of a session with `engine`, storing the key through a [`StoreSink`] at
/// the protocol's store step. Returns only when the session succeeded: the key is then stored
/// and, for a node, confirmed. `on_warning` receives what the operator should see but that does
/// not stop the session (e.g. a stranger's connection was dropped).
///
/// On failure nothing is stored, except in the one case the protocol cannot avoid: a node that
/// stored its key but did not receive the researcher's confirmation keeps it `unconfirmed`, and
/// the error says so. A researcher whose session fails after its server key was stored (which
/// only an injected fault can cause) deletes it again, so that its exit status tells the truth.
pub fn negotiate(
    home: &Home,
    req: &SessionRequest,
    engine: &dyn Engine,
    on_warning: &mut (dyn FnMut(&str) + Send),
) -> Result<NegotiationReport> {
    negotiate_inner(home, req, engine, on_warning, None)
}

/// [`negotiate`] that another thread can stop by setting `cancel` (the Python package does on
/// Ctrl-C). A session cancelled before this party stored its key fails with nothing stored; once
/// the key is stored, the session runs to its end (see [`Engine::negotiate_cancellable`], which
/// also says which engines honour it).
pub fn negotiate_cancellable(
    home: &Home,
    req: &SessionRequest,
    engine: &dyn Engine,
    on_warning: &mut (dyn FnMut(&str) + Send),
    cancel: &CancelFlag,
) -> Result<NegotiationReport> {
    negotiate_inner(home, req, engine, on_warning, Some(cancel))
}

fn negotiate_inner(
    home: &Home,
    req: &SessionRequest,
    engine: &dyn Engine,
    on_warning: &mut (dyn FnMut(&str) + Send),
    cancel: Option<&CancelFlag>,
) -> Result<NegotiationReport> {
    let deadline = std::time::Instant::now() + req.timeout;
    let plan = plan_until(home, req, OffsetDateTime::now_utc(), deadline)?;
    let mut sink = StoreSink::for_plan(home, &plan, engine.name(), deadline, on_warning)?;
    let result = match cancel {
        Some(c) => engine.negotiate_cancellable(plan, &mut sink, c),
        None => engine.negotiate(plan, &mut sink),
    };
    sink.report(result)
}

impl<'a> StoreSink<'a> {
    /// The sink of `plan`'s session in `home`, its store opened now (waiting for its lock at
    /// most until `deadline`), for an engine named `engine`.
    pub(crate) fn for_plan(
        home: &'a Home,
        plan: &NegotiationPlan,
        engine: &str,
        deadline: std::time::Instant,
        on_warning: &'a mut (dyn FnMut(&str) + Send),
    ) -> Result<Self> {
        let store = Store::open_party_until(home, deadline)?;
        Self::with_store(
            home,
            PooledStore::unpooled(store),
            plan,
            engine,
            deadline,
            on_warning,
        )
    }

    /// [`StoreSink::for_plan`] with a store connection the caller opened already (waiting for
    /// locks at most until `deadline` from now on).
    pub(crate) fn with_store(
        home: &'a Home,
        store: PooledStore,
        plan: &NegotiationPlan,
        engine: &str,
        deadline: std::time::Instant,
        on_warning: &'a mut (dyn FnMut(&str) + Send),
    ) -> Result<Self> {
        store.set_busy_timeout_until(deadline)?;
        let parties: Vec<String> = plan.parties().iter().map(|p| p.id.to_string()).collect();
        Ok(StoreSink {
            home,
            store,
            deadline,
            template: ContextRecord {
                session_id: plan.session_id().to_string(),
                role: plan.my_role(),
                party_index: plan.my_index() as u32,
                parties,
                engine: engine.to_owned(),
                key_bits: match plan.scheme() {
                    ContextScheme::Jl => plan.key_bits(),
                    ContextScheme::Lom => 256,
                },
                key_decimal: Default::default(),
                key_fingerprint: String::new(),
                created_at: OffsetDateTime::now_utc(),
                state: KeyState::Unconfirmed,
                confirmed_at: None,
                scheme: plan.scheme(),
                dropout_threshold: plan.dropout_threshold(),
            },
            stored_fingerprint: None,
            confirmed: false,
            on_warning,
        })
    }

    /// The report of the engine's `result`, or the error saying what is left in the store.
    pub(crate) fn report(&mut self, result: Result<Outcome>) -> Result<NegotiationReport> {
        let outcome: Outcome = match result {
            Ok(o) => o,
            Err(e) => return Err(self.explain_failure(e)),
        };
        let t = &self.template;
        let key_fingerprint = match (&self.stored_fingerprint, self.confirmed) {
            (Some(fp), true) => fp.clone(),
            _ => {
                return Err(Error::Internal(format!(
                    "the {} engine reported success for session {} without storing and confirming the key",
                    t.engine, t.session_id
                )))
            }
        };
        debug_assert_eq!(key_fingerprint, outcome.material.fingerprint());
        let timings = outcome.timings;
        Ok(NegotiationReport {
            session_id: t.session_id.clone(),
            engine: t.engine.clone(),
            scheme: t.scheme,
            role: outcome.role,
            party_index: t.party_index as usize,
            parties: t.parties.clone(),
            key_bits: t.key_bits,
            key_fingerprint,
            connect_ms: ms(timings.connect),
            exchange_ms: ms(timings.exchange),
            finish_ms: ms(timings.finish),
            total_ms: ms(timings.total),
        })
    }
}

/// The [`KeySink`] of a negotiation run from a home: stores the key in the home's store (each
/// write a durable, fsynced SQLite transaction, waiting for locks at most until the session's
/// deadline).
pub struct StoreSink<'a> {
    home: &'a Home,
    /// Opened before the negotiation starts, so that the protocol's store steps pay only for
    /// their transaction (a party agent's comes from its pool of open connections).
    store: PooledStore,
    deadline: std::time::Instant,
    /// Everything but the key, state and times.
    template: ContextRecord,
    stored_fingerprint: Option<String>,
    confirmed: bool,
    on_warning: &'a mut (dyn FnMut(&str) + Send),
}

impl std::fmt::Debug for StoreSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSink")
            .field("home", &self.home)
            .field("session_id", &self.template.session_id)
            .field("stored", &self.stored_fingerprint.is_some())
            .field("confirmed", &self.confirmed)
            .finish_non_exhaustive()
    }
}

impl StoreSink<'_> {
    /// The error to report for a failed session, saying what is left in the store.
    pub(crate) fn explain_failure(&mut self, e: Error) -> Error {
        let id = self.template.session_id.clone();
        if self.stored_fingerprint.is_none() {
            return e;
        }
        match self.template.role {
            Role::Researcher if self.confirmed => e.context(format!(
                "the server key of session {id} is stored and final (every node holds its key)"
            )),
            Role::Researcher => {
                let undone = Store::open_party_until(self.home, self.deadline_or_soon())
                    .and_then(|mut s| s.write_erasing(|tx| contexts::delete(tx, &id)));
                match undone {
                    Ok(_) => e.context(format!(
                        "the server key of session {id} was stored and has been deleted again"
                    )),
                    Err(d) => e.context(format!(
                        "the server key of session {id} is stored but the session failed, and deleting it failed too ({d}); delete it with `secagg context delete {id}`"
                    )),
                }
            }
            Role::Node if self.confirmed => {
                e.context(format!("the key of session {id} is stored and confirmed"))
            }
            Role::Node => {
                let e = e.context(format!(
                    "the key of session {id} is stored here but unconfirmed: the researcher's confirmation did not arrive"
                ));
                let hint = format!(
                    "ask the researcher whether `secagg context show {id}` lists the session there: if it does, keep this key with `secagg context confirm {id}`; if not, delete it with `secagg context delete {id}` (unconfirmed keys expire after {} days and `secagg context prune` deletes them)",
                    UNCONFIRMED_EXPIRY.whole_days()
                );
                let hint = match e.hint() {
                    Some(h) => format!("{h}; {hint}"),
                    None => hint,
                };
                e.with_hint(hint)
            }
        }
    }

    /// Lets the next store transaction wait for another process's lock only until the deadline.
    fn bound_lock_wait(&self) -> Result<()> {
        self.store.set_busy_timeout(
            self.deadline
                .saturating_duration_since(std::time::Instant::now()),
        )
    }

    /// The deadline, or a few seconds from now once it has passed (to clean up after it).
    fn deadline_or_soon(&self) -> std::time::Instant {
        self.deadline
            .max(std::time::Instant::now() + std::time::Duration::from_secs(5))
    }
}

impl StoreSink<'_> {
    /// The context record to store now with `fingerprint`: a node's unconfirmed, the
    /// researcher's confirmed (it stores only at the end of a successful session).
    fn record_now(&self, fingerprint: String) -> ContextRecord {
        let now = OffsetDateTime::now_utc();
        let mut record = self.template.clone();
        record.key_fingerprint = fingerprint;
        record.created_at = now;
        if record.role == Role::Researcher {
            record.state = KeyState::Confirmed;
            record.confirmed_at = Some(now);
        }
        record
    }
}

impl KeySink for StoreSink<'_> {
    fn store(&mut self, key: &SecretKey) -> Result<()> {
        let mut record = self.record_now(key.fingerprint());
        record.key_decimal = key.to_decimal();
        self.bound_lock_wait()?;
        // Durable (fsynced) before returning: a node acknowledges only once its key survives a
        // power cut, and the researcher confirms only once the server key does.
        self.store
            .write(|tx| contexts::insert(tx, &record))
            .map_err(|e| {
                e.context(format!(
                    "while storing the key of session {}",
                    record.session_id
                ))
            })?;
        self.stored_fingerprint = Some(record.key_fingerprint.clone());
        Ok(())
    }

    fn store_pairwise(&mut self, set: &crate::lom::PairwiseSet) -> Result<()> {
        let record = self.record_now(set.fingerprint.clone());
        self.bound_lock_wait()?;
        // One durable transaction: the context and its whole set, or nothing.
        self.store
            .write(|tx| {
                contexts::insert(tx, &record)?;
                lom_secrets::insert(tx, &record.session_id, &set.secrets)
            })
            .map_err(|e| {
                e.context(format!(
                    "while storing the pairwise secrets of session {}",
                    record.session_id
                ))
            })?;
        self.stored_fingerprint = Some(record.key_fingerprint.clone());
        Ok(())
    }

    fn confirm(&mut self) -> Result<()> {
        if self.template.role == Role::Researcher {
            self.confirmed = true;
            return Ok(());
        }
        let id = self.template.session_id.clone();
        self.bound_lock_wait()?;
        // Not fsynced: losing this change in a power cut leaves the key unconfirmed, the safe side.
        let changed = self
            .store
            .write_unsynced(|tx| contexts::confirm(tx, &id, OffsetDateTime::now_utc()))
            .map_err(|e| e.context(format!("while confirming the key of session {id}")))?;
        if !changed {
            return Err(Error::Internal(format!(
                "the key of session {id} to confirm is not stored as unconfirmed"
            )));
        }
        self.confirmed = true;
        Ok(())
    }

    fn warn(&mut self, message: &str) {
        (self.on_warning)(message);
    }
}

/// Every stored context of `home`, newest first. Opens the store read-only: no write lock taken
/// or waited for.
pub fn list_contexts(home: &Home) -> Result<Vec<ContextRecord>> {
    Store::open_party_read_only(home)?.read(|tx| contexts::list(tx))
}

/// What `context list` shows: every stored context's summary (no key), a LOM context's with the
/// rounds this party masked under it. One read-only store connection.
pub fn context_summaries(home: &Home) -> Result<Vec<ContextSummary>> {
    Store::open_party_read_only(home)?.read(|tx| {
        contexts::list(tx)?
            .iter()
            .map(|c| summary_with_rounds(tx, c, false))
            .collect()
    })
}

/// What `context show` shows: the summary of `session_id`'s context (its key only if
/// `reveal_key`), a LOM context's with the rounds this party masked under it.
pub fn context_summary(
    home: &Home,
    session_id: &SessionId,
    reveal_key: bool,
) -> Result<ContextSummary> {
    let id = session_id.to_string();
    Store::open_party_read_only(home)?.read(|tx| {
        let c = contexts::get(tx, &id)?.ok_or_else(|| no_context(&id))?;
        summary_with_rounds(tx, &c, reveal_key)
    })
}

fn summary_with_rounds(
    tx: &rusqlite::Connection,
    c: &ContextRecord,
    reveal_key: bool,
) -> Result<ContextSummary> {
    let mut s = c.summary(reveal_key);
    if c.scheme == ContextScheme::Lom && c.role == Role::Node {
        s.rounds_used = Some(crate::store::lom_rounds::rounds(tx, &c.session_id)?);
        if c.dropout_threshold.is_some() {
            s.reveals = Some(crate::store::lom_reveals::all(tx, &c.session_id)?);
        }
    }
    Ok(s)
}

/// The stored context of `session_id` (store opened read-only, as for [`list_contexts`]).
pub fn get_context(home: &Home, session_id: &SessionId) -> Result<ContextRecord> {
    get_context_in(&mut Store::open_party_read_only(home)?, session_id)
}

/// [`get_context`] on a store connection the caller holds.
pub(crate) fn get_context_in(store: &mut Store, session_id: &SessionId) -> Result<ContextRecord> {
    let id = session_id.to_string();
    store
        .read(|tx| contexts::get(tx, &id))?
        .ok_or_else(|| no_context(&id))
}

/// Deletes the stored context of `session_id` for good: `secure_delete` zeroes the row in the
/// file and the WAL is checkpointed and truncated, so the key's digits are left in none of
/// `store.sqlite`, `-wal` or `-shm`.
pub fn delete_context(home: &Home, session_id: &SessionId) -> Result<ContextRecord> {
    let id = session_id.to_string();
    Store::open_party(home)?.write_erasing(|tx| {
        let c = contexts::get(tx, &id)?.ok_or_else(|| no_context(&id))?;
        contexts::delete(tx, &id)?;
        Ok(c)
    })
}

/// Marks the unconfirmed key of `session_id` confirmed, by hand: for a node whose session
/// completed at the researcher (its `secagg context show` lists the server key) but whose
/// confirmation never arrived. Confirming an already confirmed context is a conflict.
pub fn confirm_context(home: &Home, session_id: &SessionId) -> Result<ContextRecord> {
    let id = session_id.to_string();
    Store::open_party(home)?.write(|tx| {
        let c = contexts::get(tx, &id)?.ok_or_else(|| no_context(&id))?;
        if c.state == KeyState::Confirmed {
            return Err(Error::conflict(format!(
                "the key of session `{id}` is already confirmed"
            )));
        }
        let now = OffsetDateTime::now_utc();
        contexts::confirm(tx, &id, now)?;
        Ok(ContextRecord {
            state: KeyState::Confirmed,
            confirmed_at: Some(now),
            ..c
        })
    })
}

/// How young an unconfirmed key is never pruned, whatever age is asked for: the longest session
/// deadline an agent accepts. A key that young may belong to a session still running: its node
/// acknowledged it, the researcher may be storing the server key and about to confirm, and
/// deleting it then would leave the researcher with a server key that no longer cancels.
pub const PRUNE_IN_FLIGHT_GUARD: time::Duration =
    time::Duration::seconds(crate::agent::MAX_SESSION_TIMEOUT.as_secs() as i64);

/// Deletes every unconfirmed key stored before `now − older_than` (with
/// [`UNCONFIRMED_EXPIRY`], the expired ones), erasing them like [`delete_context`], but never one
/// younger than [`PRUNE_IN_FLIGHT_GUARD`]. Returns what it deleted; confirmed keys are never
/// touched.
pub fn prune_unconfirmed(
    home: &Home,
    older_than: time::Duration,
    now: OffsetDateTime,
) -> Result<Vec<ContextRecord>> {
    let cutoff = now - older_than.max(PRUNE_IN_FLIGHT_GUARD);
    Store::open_party(home)?.write_erasing(|tx| {
        let doomed: Vec<ContextRecord> = contexts::list(tx)?
            .into_iter()
            .filter(|c| c.state == KeyState::Unconfirmed && c.created_at <= cutoff)
            .collect();
        for c in &doomed {
            contexts::delete(tx, &c.session_id)?;
        }
        Ok(doomed)
    })
}

fn no_context(id: &str) -> Error {
    Error::not_found(format!("no context is stored for session `{id}`"))
        .with_hint("see `secagg context list`")
}

/// A fresh random session id (uuid4), as text (see [`SessionId::generate`]).
pub fn new_session_id() -> String {
    SessionId::generate().to_string()
}
