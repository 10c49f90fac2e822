//! The agent's side of dropout-tolerant LOM rounds ([`crate::aggregate::lom_dropout`]): a node's
//! agent stores the self-mask shares other nodes send it, records the survivors the researcher
//! announces, tells other survivors which ones it was told, and reveals, each after the checks
//! and durable records of that module. Every answer is one reply on the connection the request
//! came on; every refusal is logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use super::client::{ask_each, Dialer};
use super::server::{reply, Level, Shared};
use super::{Reply, Request, AGENT_PROTOCOL_VERSION};
use crate::aggregate::lom_dropout::{self as protocol, Comparison, Tau};
use crate::error::{Error, Result};
use crate::party::{PartyId, SessionId};

/// How long a request may wait for the store.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// Answers one of the dropout requests (`lom_share`, `lom_announce`, `lom_survivors`,
/// `lom_reveal`) of `peer`.
pub(super) async fn serve(
    shared: &Arc<Shared>,
    stream: &mut TlsStream<TcpStream>,
    peer: &PartyId,
    request: Request,
) {
    let (what, session_id, tau) = match &request {
        Request::LomShare {
            session_id,
            round,
            label,
            ..
        } => ("share", session_id, (*round, *label)),
        Request::LomAnnounce {
            session_id,
            round,
            label,
            ..
        } => ("announcement", session_id, (*round, *label)),
        Request::LomSurvivors {
            session_id,
            round,
            label,
            ..
        } => ("survivors question", session_id, (*round, *label)),
        Request::LomReveal {
            session_id,
            round,
            label,
            ..
        } => ("reveal", session_id, (*round, *label)),
        _ => return,
    };
    let session = match SessionId::parse(session_id) {
        Ok(s) => s,
        Err(e) => return refused(shared, stream, peer, None, what, tau, e).await,
    };
    let answer = match request {
        Request::LomShare {
            share, seed_shares, ..
        } => store_step(shared, |store| {
            protocol::accept_share(store, peer, &session, tau, &share, &seed_shares)
                .map(|()| Reply::Stored)
        }),
        Request::LomAnnounce { survivors, .. } => store_step(shared, |store| {
            protocol::record_announcement(store, peer, &session, tau, &survivors)
                .map(|()| Reply::Stored)
        }),
        Request::LomSurvivors { .. } => store_step(shared, |store| {
            protocol::announced(store, peer, &session, tau)
                .map(|survivors| Reply::Survivors { survivors })
        }),
        Request::LomReveal { .. } => reveal(shared, peer, &session, tau).await,
        _ => return,
    };
    match answer {
        Ok(r) => {
            let told = match &r {
                Reply::Revealed(v) => format!(
                    "revealed round {} label {} to {peer}: {} self-mask shares, {} round seeds with dropped nodes",
                    tau.0,
                    tau.1,
                    v.shares.len(),
                    v.seeds.len()
                ),
                _ => format!("{what} of {peer} for round {} label {}: done", tau.0, tau.1),
            };
            shared.event(
                Level::Info,
                "dropout",
                Some(&session),
                Some(peer.as_str()),
                told,
            );
            reply(stream, peer, &r).await;
        }
        Err(e) => refused(shared, stream, peer, Some(&session), what, tau, e).await,
    }
}

/// Runs `f` on a store connection, off the async workers.
fn store_step<T>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut crate::store::Store) -> Result<T>,
) -> Result<T> {
    tokio::task::block_in_place(|| {
        let mut store = shared
            .stores
            .take_until(std::time::Instant::now() + STORE_WAIT)?;
        f(&mut store)
    })
}

/// Step 4: the announced set, compared with every other survivor's, then the durable record
/// and the reveal.
async fn reveal(
    shared: &Arc<Shared>,
    peer: &PartyId,
    session: &SessionId,
    tau: Tau,
) -> Result<Reply> {
    crate::fault::at(crate::fault::Step::DropoutRevealAsked)?;
    let plan = store_step(shared, |store| {
        protocol::prepare_reveal(store, peer, session, tau)
    })?;
    let dialer = Arc::new(Dialer::new(&shared.own, &shared.key_pkcs8_der)?);
    let question = Request::LomSurvivors {
        version: AGENT_PROTOCOL_VERSION,
        session_id: session.to_string(),
        round: tau.0,
        label: tau.1,
    };
    let questions = vec![question; plan.others.len()];
    let until = Instant::now() + protocol::NODE_TO_NODE_TIMEOUT;
    let answers = ask_each(dialer, plan.others.clone(), questions, until).await;
    let compared = protocol::compare_announcements(&plan, answers)?;
    let silent: Vec<&str> = plan
        .others
        .iter()
        .zip(&compared)
        .filter(|(_, c)| matches!(c, Comparison::Unreachable(_)))
        .map(|(o, _)| o.label.as_str())
        .collect();
    if !silent.is_empty() {
        shared.event(
            Level::Warn,
            "dropout",
            Some(session),
            Some(peer.as_str()),
            format!(
                "round {} label {}: could not compare the announced survivors with {} (unreachable); compared with the others",
                tau.0,
                tau.1,
                silent.join(", ")
            ),
        );
    }
    let revealed = store_step(shared, |store| protocol::reveal(store, &plan))?;
    Ok(Reply::Revealed(revealed))
}

async fn refused(
    shared: &Arc<Shared>,
    stream: &mut TlsStream<TcpStream>,
    peer: &PartyId,
    session: Option<&SessionId>,
    what: &str,
    tau: Tau,
    e: Error,
) {
    let message = format!(
        "refused the {what} of {peer} for round {} label {}: {e}",
        tau.0, tau.1
    );
    super::server::refuse(shared, stream, peer, session, &e, message).await;
}
