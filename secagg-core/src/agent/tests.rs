//! In-process tests of the agent's request checks that the CLI cannot reach: a client that
//! passes pinned TLS but is not entitled to request the session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::client::Dialer;
use super::server::{serve, AgentOptions, Shutdown};
use super::{Reply, Request, AGENT_PROTOCOL_VERSION};
use crate::demo;
use crate::ErrorKind;

pub(super) fn options() -> AgentOptions {
    AgentOptions {
        listen: None,
        endpoint: None,
        allow_researchers: Vec::new(),
        max_sessions: 4,
        max_sessions_per_researcher: 2,
        grace: Duration::from_millis(100),
        mpspdz: None,
        keep_connections: Some(super::DEFAULT_KEEP_CONNECTIONS),
        only_parties: None,
        accept_rosters_from: None,
        min_nodes: None,
    }
}

/// Sends `request` from the party `from` of `fed` to the agent of party `to`.
pub(super) fn ask(fed: &demo::Federation, from: usize, to: usize, request: &Request) -> Reply {
    let (dialer, _) = Dialer::for_home(&fed.parties[from].home).unwrap();
    let peer = crate::registration::show(
        &fed.parties[from].home,
        &crate::PartyId::parse(&fed.parties[to].party_id).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let until = Instant::now() + Duration::from_secs(5);
        dialer
            .ask(
                &fed.parties[to].party_id,
                &peer.endpoint,
                &peer.certificate_der,
                request,
                until,
            )
            .await
            .map(|(_, reply)| reply)
            .unwrap_or_else(|e| panic!("{e:?}"))
    })
}

fn join(fed: &demo::Federation, researcher: &str) -> Request {
    let mut parties = vec![researcher.to_owned()];
    parties.extend(fed.parties[1..].iter().map(|p| p.party_id.clone()));
    Request::Join {
        version: AGENT_PROTOCOL_VERSION,
        session_id: crate::session::new_session_id(),
        parties,
        engine: "native".into(),
        key_bits: crate::engine::DEFAULT_KEY_BITS,
        timeout_ms: 5_000,
        scheme: crate::engine::ContextScheme::Jl,
        dropout_threshold: None,
    }
}

pub(super) fn refused(reply: Reply) -> (ErrorKind, String) {
    match reply {
        Reply::Refused { error } => (error.kind, error.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_node_cannot_request_sessions_nor_a_researcher_another_researchers_session() {
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), 3).unwrap();
    let (handle, shutdown) = Shutdown::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log_events = events.clone();
    let home = fed.parties[1].home.clone();
    let agent = std::thread::spawn(move || {
        serve(
            &home,
            options(),
            Arc::new(move |e| log_events.lock().unwrap().push(e.clone())),
            shutdown,
        )
    });
    let listening = std::time::Instant::now();
    while !events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.event == "listening")
    {
        assert!(listening.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    // A registered node, pretending to be the researcher of a session.
    let (kind, message) = refused(ask(&fed, 2, 1, &join(&fed, &fed.parties[2].party_id)));
    assert_eq!(kind, ErrorKind::Authentication);
    assert!(
        message.contains("accepts session requests only from researchers"),
        "{message}"
    );
    // The registered researcher, asking for a session whose researcher is another one.
    let other = crate::PartyId::generate(crate::Role::Researcher).to_string();
    let (kind, message) = refused(ask(&fed, 0, 1, &join(&fed, &other)));
    assert_eq!(kind, ErrorKind::Authentication);
    assert!(message.contains("whose researcher is"), "{message}");
    // A list the plan refuses (this node left out) is refused with the plan's own words.
    let mut bad = join(&fed, &fed.parties[0].party_id);
    if let Request::Join { parties, .. } = &mut bad {
        parties.remove(1);
        parties.push(fed.parties[2].party_id.clone());
    }
    let (kind, message) = refused(ask(&fed, 0, 1, &bad));
    assert_eq!(kind, ErrorKind::InvalidInput);
    assert!(
        message.contains("is not in the party list") || message.contains("listed twice"),
        "{message}"
    );
    // A `confirm`, `cancel` or `start` on a connection that joined no session is refused, and
    // nothing runs: even the registered researcher confirms only a session it runs there.
    for (request, asked) in [
        (Request::Confirm, "confirm"),
        (Request::Cancel, "cancel"),
        (
            Request::Start {
                mpspdz_endpoints: None,
            },
            "start",
        ),
    ] {
        let (kind, message) = refused(ask(&fed, 0, 1, &request));
        assert_eq!(kind, ErrorKind::PeerFailure, "{message}");
        assert!(
            message.contains(&format!("to {asked} a session it did not join")),
            "{message}"
        );
    }
    // Status answers anyone registered, naming the client as the agent identified it.
    match ask(
        &fed,
        2,
        1,
        &Request::Status {
            version: AGENT_PROTOCOL_VERSION,
        },
    ) {
        Reply::Status(s) => {
            assert_eq!(s.party_id, fed.parties[1].party_id);
            assert_eq!(s.client_id, fed.parties[2].party_id);
            assert_eq!(s.sessions, 0);
        }
        other => panic!("{other:?}"),
    }
    handle.stop();
    agent.join().unwrap().unwrap();
    let events = events.lock().unwrap();
    assert!(events.iter().any(|e| e.event == "stopped"));
    // Each refusal logged once: the three joins and the three requests without a session.
    assert_eq!(events.iter().filter(|e| e.event == "refused").count(), 6);
}

/// Issue 23, item 14: the README's list of agent log events omitted `roster`. Every event name
/// the agent logs (`shared.event(level, "NAME", …)`, `event: "NAME"` in the CLI) is in the list.
#[test]
fn the_readme_lists_every_agent_log_event() {
    let readme = include_str!("../../../README.md");
    let list = readme
        .split("with events ")
        .nth(1)
        .and_then(|rest| rest.split("; `--log-format json`").next())
        .expect("the README's agent log event list");
    let sources = [
        include_str!("server.rs"),
        include_str!("../../../secagg-cli/src/commands/agent.rs"),
    ];
    let mut names = Vec::new();
    for src in sources {
        let text: String = src.split_whitespace().collect::<Vec<_>>().join(" ");
        for part in text.split("shared.event(").skip(1) {
            if let Some(name) = part.split('"').nth(1) {
                names.push(name.to_owned());
            }
        }
        for part in text.split("event: \"").skip(1) {
            names.push(part.split('"').next().unwrap().to_owned());
        }
    }
    names.retain(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_') && !n.is_empty());
    names.sort();
    names.dedup();
    assert!(names.len() >= 12, "{names:?}");
    for name in &names {
        assert!(
            list.contains(&format!("`{name}`")),
            "`{name}` is missing from the README: {list}"
        );
    }
}
