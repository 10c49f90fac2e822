//! One session served, then stop: a node's side of a session it knows only by its party list.
//!
//! Fed-BioMed's `MPCController.exec_shamir(party_number, num_parties, ip_addresses)` is called
//! at every party with the party list (its `P<i>.pem` files) but no session id: the researcher
//! names the session. A node then runs [`serve_one`]: an agent on its endpoint that accepts
//! exactly one session request, from the list's researcher and among exactly that list (any
//! other is refused and the wait goes on), runs it as any agent session (key stored
//! `unconfirmed`, then `confirmed` on the researcher's word) and returns its session id. The
//! researcher's side is [`super::run_session_with`] with [`super::RunOptions::wait_for_agents`],
//! because its nodes start listening only once the request reached them.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::server::{list_ids, serve, AgentEvent, AgentOptions, Log, Shutdown};
use crate::engine::CancelFlag;
use crate::error::{Error, Result};
use crate::home::Home;
use crate::identity;
use crate::party::{PartyId, Role, SessionId};

/// What [`serve_one`] waits for.
#[derive(Debug, Clone)]
pub struct OneSession {
    /// The session's parties, researcher first, this node among them.
    pub parties: Vec<PartyId>,
    /// How long to wait for the researcher's request; the session itself then runs until the
    /// deadline the researcher gave it.
    pub wait: Duration,
    /// Set by another thread (Ctrl-C in Python) to stop waiting; a running session is aborted
    /// as when its agent stops (nothing is confirmed that the researcher did not confirm).
    pub cancel: Option<CancelFlag>,
}

/// How the one session went, as the agent's events tell it.
#[derive(Default)]
struct Progress {
    started: bool,
    outcome: Option<Result<SessionId>>,
    last_refusal: Option<String>,
}

/// Serves one session among `req.parties` at this node's endpoint and returns its id once this
/// node's key is stored and confirmed. Fails when the session fails (nothing confirmed), when no
/// request came within `req.wait` (naming the last refused request, if any), or when cancelled.
pub fn serve_one(home: &Home, req: &OneSession) -> Result<SessionId> {
    let own = identity::load(home)?;
    check_parties(&own.party_id, &req.parties)?;
    let progress = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
    let (stop, shutdown) = Shutdown::new();
    let opts = AgentOptions {
        listen: None,
        endpoint: None,
        allow_researchers: vec![req.parties[0].clone()],
        max_sessions: 1,
        max_sessions_per_researcher: 1,
        grace: Duration::from_secs(2),
        mpspdz: None,
        keep_connections: None,
        only_parties: Some(req.parties.clone()),
        accept_rosters_from: None,
        min_nodes: None,
    };
    let log: Log = {
        let progress = progress.clone();
        let stop = stop.clone();
        Arc::new(move |e: &AgentEvent| {
            let (lock, wake) = &*progress;
            let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
            if observe(&mut p, e) {
                stop.stop();
                wake.notify_all();
            }
        })
    };
    let watchdog = {
        let progress = progress.clone();
        let stop = stop.clone();
        let (wait, cancel) = (req.wait, req.cancel.clone());
        let researcher = req.parties[0].clone();
        std::thread::spawn(move || watch(&progress, &stop, &researcher, wait, cancel))
    };
    let served = serve(home, opts, log, shutdown);
    {
        let (lock, wake) = &*progress;
        let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
        if p.outcome.is_none() {
            p.outcome = Some(Err(Error::internal("the agent stopped without a session")));
        }
        wake.notify_all();
    }
    let _ = watchdog.join();
    served?;
    let (lock, _) = &*progress;
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    p.outcome
        .take()
        .unwrap_or_else(|| Err(Error::internal("the agent stopped without a session")))
}

/// The list has the shape of a session's (`negotiate`'s own check: at least 3 parties, the
/// researcher first, no duplicates) and names this party as one of its nodes.
fn check_parties(me: &PartyId, parties: &[PartyId]) -> Result<()> {
    crate::engine::check_party_ids(parties)?;
    if me.role() != Role::Node || !parties.contains(me) {
        return Err(Error::invalid(format!(
            "{me} is not a node of the session among {}",
            list_ids(parties)
        )));
    }
    Ok(())
}

/// Records what event `e` says about the one session; true when it ended (the agent may stop).
fn observe(p: &mut Progress, e: &AgentEvent) -> bool {
    let session = || e.session.as_deref().and_then(|s| SessionId::parse(s).ok());
    match e.event {
        "refused" => p.last_refusal = Some(e.message.clone()),
        "started" => p.started = true,
        "succeeded" => {
            p.outcome = Some(session().ok_or_else(|| Error::internal("a session without an id")));
            return true;
        }
        // A session that failed, or was cancelled before it started (another party refused):
        // the end of the one session. A running session's cancellation ends with `failed` or
        // `succeeded`, so a `cancelled` after the start is not the end.
        "failed" => return end_with_failure(p, e),
        "cancelled" if !p.started => return end_with_failure(p, e),
        _ => {}
    }
    false
}

fn end_with_failure(p: &mut Progress, e: &AgentEvent) -> bool {
    if e.session.is_none() || p.outcome.is_some() {
        return false;
    }
    p.outcome = Some(Err(Error::peer(e.message.clone())));
    true
}

/// Stops the agent when nothing started within `wait`, or when `cancel` is set.
fn watch(
    progress: &(Mutex<Progress>, Condvar),
    stop: &super::ShutdownHandle,
    researcher: &PartyId,
    wait: Duration,
    cancel: Option<CancelFlag>,
) {
    let (lock, wake) = progress;
    let deadline = Instant::now() + wait;
    let mut p = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if p.outcome.is_some() {
            return;
        }
        if cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            p.outcome = Some(Err(Error::peer(
                "cancelled while waiting for or running the session",
            )));
            stop.stop();
            stop.stop();
            return;
        }
        let now = Instant::now();
        if !p.started && now >= deadline {
            let why = match &p.last_refusal {
                Some(r) => format!("; the last request was refused: {r}"),
                None => String::new(),
            };
            p.outcome = Some(Err(Error::timeout(format!(
                "no session request from {researcher} came within {:.0} s{why}",
                wait.as_secs_f64()
            ))
            .with_hint(format!("check that {researcher} runs its side of the session and can reach this party's endpoint"))));
            stop.stop();
            return;
        }
        // Woken by every event; the cancel flag is polled.
        p = wake
            .wait_timeout(p, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
