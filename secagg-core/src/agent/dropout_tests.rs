//! A dishonest researcher against dropout-tolerant LOM rounds (issue 24), with a raw client that
//! passes pinned TLS: it tells two nodes different survivor sets, asks one node for both the
//! share of a node's self-mask and the round seed with it, replays an old round's requests,
//! injects a share. Real agents (in-process threads), real sockets, real stores; every refusal
//! asserted, and what the researcher received checked to be useless for unmasking one vector.
//!
//! Also the three weaknesses of Flower's SecAgg+ implementation (reference
//! `flower-secaggplus.md`) that secagg must not share: see the `flower_weakness_*` tests here
//! and in [`crate::lom::dropout`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::client::{run_session_with, Nodes, RunOptions, RunRequest};
use super::server::{serve, Shutdown, ShutdownHandle};
use super::tests::{ask, options, refused};
use super::{Reply, Request, AGENT_PROTOCOL_VERSION};
use crate::aggregate::lom_dropout::Reveal;
use crate::aggregate::lom_round::{encrypt_lom_values, LomEncryptRequest};
use crate::demo;
use crate::engine::ContextScheme;
use crate::lom::Profile;
use crate::{ErrorKind, SessionId};

struct Running {
    fed: demo::Federation,
    stops: Vec<ShutdownHandle>,
    threads: Vec<std::thread::JoinHandle<crate::Result<()>>>,
    session: SessionId,
}

impl Drop for Running {
    fn drop(&mut self) {
        for s in &self.stops {
            s.stop();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Four nodes' agents, a LOM context with threshold 3, and round 1 masked by every node.
fn federation_with_round_one(dir: &std::path::Path) -> Running {
    let fed = demo::prepare(&dir.join("fed"), 4).unwrap();
    let (mut stops, mut threads) = (Vec::new(), Vec::new());
    for p in &fed.parties[1..] {
        let (handle, shutdown) = Shutdown::new();
        let listening = Arc::new(Mutex::new(false));
        let seen = listening.clone();
        let home = p.home.clone();
        threads.push(std::thread::spawn(move || {
            let log = Arc::new(move |e: &super::AgentEvent| {
                if e.event == "listening" {
                    *seen.lock().unwrap() = true;
                }
            });
            serve(&home, options(), log, shutdown)
        }));
        let started = std::time::Instant::now();
        while !*listening.lock().unwrap() {
            if threads.last().unwrap().is_finished() {
                let ended = threads.pop().unwrap().join();
                panic!("an agent ended before it listened: {ended:?}");
            }
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        stops.push(handle);
    }
    let session = SessionId::generate();
    let req = RunRequest {
        session_id: session,
        nodes: Nodes::All,
        timeout: Duration::from_secs(30),
        key_bits: None,
        scheme: ContextScheme::Lom,
        min_nodes: None,
        dropout_threshold: Some(3),
    };
    let (_, error) = run_session_with(
        &fed.parties[0].home,
        &req,
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(error.is_none(), "{error:?}");
    for (i, p) in fed.parties[1..].iter().enumerate() {
        let req = LomEncryptRequest {
            session,
            round: 1,
            label: 0,
            values: Vec::new(),
            weight: None,
            clipping_range: 3,
            profile: Profile::Secagg,
        };
        let values = vec![i as f64 / 10.0; 8];
        let masked = encrypt_lom_values(&p.home, &req, &values).unwrap();
        assert_eq!(masked.shares.unwrap().holders.len(), 4);
    }
    Running {
        fed,
        stops,
        threads,
        session,
    }
}

fn announce(r: &Running, to: usize, round: u64, survivors: &[usize]) -> Reply {
    let mut ids: Vec<String> = survivors
        .iter()
        .map(|&i| r.fed.parties[i].party_id.clone())
        .collect();
    ids.sort();
    let request = Request::LomAnnounce {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round,
        label: 0,
        survivors: ids,
    };
    ask(&r.fed, 0, to, &request)
}

fn reveal(r: &Running, to: usize, round: u64) -> Reply {
    let request = Request::LomReveal {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round,
        label: 0,
    };
    ask(&r.fed, 0, to, &request)
}

fn revealed(reply: Reply) -> Reveal {
    match reply {
        Reply::Revealed(r) => r,
        other => panic!("expected a reveal, got {other:?}"),
    }
}

/// What node `i` recorded as revealed for `round`, read from its store by a fresh read.
fn reveal_records(r: &Running, i: usize, round: u64) -> Vec<(String, &'static str)> {
    let s = crate::session::context_summary(&r.fed.parties[i].home, &r.session, false).unwrap();
    s.reveals
        .unwrap()
        .into_iter()
        .filter(|x| x.round == round)
        .map(|x| (x.party, x.revealed))
        .collect()
}

/// The nodes whose shares node `i` holds for `round` (each once), read from its store.
fn shares_held(r: &Running, i: usize, round: u64) -> Vec<String> {
    let mut store = crate::store::Store::open_party_read_only(&r.fed.parties[i].home).unwrap();
    let sid = r.session.to_string();
    store
        .read(|tx| crate::store::lom_shares::get(tx, &sid, (round, 0)))
        .unwrap()
        .into_iter()
        .map(|s| s.from)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn a_share_for_a_context_deleted_meanwhile_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let r = federation_with_round_one(dir.path());
    assert_eq!(shares_held(&r, 1, 1).len(), 4);
    crate::session::delete_context(&r.fed.parties[1].home, &r.session).unwrap();
    let share = Request::LomShare {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round: 2,
        label: 0,
        share: "00".repeat(crate::lom::dropout::SHARE_LEN),
        seed_shares: vec![],
    };
    let (kind, message) = refused(ask(&r.fed, 2, 1, &share));
    assert_eq!(kind, ErrorKind::NotFound, "{message}");
    // The context's shares went with it, and the refused one was never written.
    assert!(shares_held(&r, 1, 1).is_empty());
    assert!(shares_held(&r, 1, 2).is_empty());
}

#[test]
fn a_researcher_telling_two_nodes_different_survivors_gets_nothing_from_either() {
    let dir = tempfile::tempdir().unwrap();
    let r = federation_with_round_one(dir.path());
    // Nodes 1 and 2 are told that all four survived; node 3 that node 4 dropped.
    for to in [1, 2] {
        assert!(matches!(announce(&r, to, 1, &[1, 2, 3, 4]), Reply::Stored));
    }
    assert!(matches!(announce(&r, 3, 1, &[1, 2, 3]), Reply::Stored));
    // Every one of them compares with the others before revealing, and refuses.
    for to in [1, 2, 3] {
        let (kind, message) = refused(reveal(&r, to, 1));
        assert_eq!(kind, ErrorKind::Verification, "{message}");
        assert!(message.contains("the researcher told"), "{message}");
        assert!(reveal_records(&r, to, 1).is_empty());
    }
    // The recorded announcement cannot be changed to agree afterwards.
    let (kind, message) = refused(announce(&r, 3, 1, &[1, 2, 3, 4]));
    assert_eq!(kind, ErrorKind::Conflict, "{message}");
    assert!(message.contains("announced other survivors"), "{message}");
}

/// Flower weakness 3: a client that answers for both secrets of one party.
#[test]
fn flower_weakness_3_a_node_never_reveals_both_the_share_and_the_round_seed_of_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let r = federation_with_round_one(dir.path());
    let d = r.fed.parties[4].party_id.clone();
    // Every node is told that everyone survived; node 1 reveals shares, no seed.
    for to in 1..=4 {
        assert!(matches!(announce(&r, to, 1, &[1, 2, 3, 4]), Reply::Stored));
    }
    let first = revealed(reveal(&r, 1, 1));
    assert!(first.seeds.is_empty(), "{:?}", first.seeds.len());
    assert!(first.shares.iter().any(|(of, _)| *of == d));
    // Then that node 4 dropped, to get the round seed with it: refused, twice over.
    let (kind, message) = refused(announce(&r, 1, 1, &[1, 2, 3]));
    assert_eq!(kind, ErrorKind::Conflict, "{message}");
    let (kind, message) = refused(reveal(&r, 1, 1));
    assert_eq!(kind, ErrorKind::Conflict, "{message}");
    assert!(message.contains("a round is revealed once"), "{message}");
    // The record, read back from the store: a share about node 4, nothing else about it.
    let records = reveal_records(&r, 1, 1);
    let about_d: Vec<_> = records.iter().filter(|(p, _)| *p == d).collect();
    assert_eq!(about_d, vec![&(d.clone(), "share")]);
    // What the researcher holds about node 4: one share (of three needed) and no round seed.
    assert_eq!(first.shares.iter().filter(|(of, _)| *of == d).count(), 1);
}

#[test]
fn an_old_rounds_requests_replayed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let r = federation_with_round_one(dir.path());
    for to in 1..=4 {
        assert!(matches!(announce(&r, to, 1, &[1, 2, 3, 4]), Reply::Stored));
    }
    for to in 1..=4 {
        let v = revealed(reveal(&r, to, 1));
        assert_eq!(v.shares.len(), 4);
        // Revealed once, the round's shares are erased from the node's store.
        assert!(shares_held(&r, to, 1).is_empty());
    }
    // Replayed: the reveal is refused; the same announcement changes nothing.
    for to in 1..=4 {
        assert!(matches!(announce(&r, to, 1, &[1, 2, 3, 4]), Reply::Stored));
        let (kind, message) = refused(reveal(&r, to, 1));
        assert_eq!(kind, ErrorKind::Conflict, "{message}");
    }
    // A round no node masked: nobody accepts survivors for it, nobody reveals.
    let (kind, message) = refused(announce(&r, 1, 2, &[1, 2, 3, 4]));
    assert_eq!(kind, ErrorKind::Verification, "{message}");
    assert!(message.contains("never masked that round"), "{message}");
    let (kind, message) = refused(reveal(&r, 1, 2));
    assert_eq!(kind, ErrorKind::InvalidInput, "{message}");
    assert!(message.contains("no survivors were announced"), "{message}");
}

/// Flower weakness 2: keys relayed by the server, unsigned. secagg's shares go node to node over
/// pinned mutual TLS; the researcher can neither send one nor ask another node's.
#[test]
fn flower_weakness_2_the_researcher_cannot_inject_a_share_nor_read_announcements() {
    let dir = tempfile::tempdir().unwrap();
    let r = federation_with_round_one(dir.path());
    let share = Request::LomShare {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round: 5,
        label: 0,
        share: "00".repeat(crate::lom::dropout::SHARE_LEN),
        seed_shares: vec![],
    };
    let (kind, message) = refused(ask(&r.fed, 0, 1, &share));
    assert_eq!(kind, ErrorKind::Authentication, "{message}");
    assert!(message.contains("is not another node"), "{message}");
    let question = Request::LomSurvivors {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round: 1,
        label: 0,
    };
    let (kind, _) = refused(ask(&r.fed, 0, 1, &question));
    assert_eq!(kind, ErrorKind::Authentication);
    // A node cannot announce survivors or ask for reveals either.
    let announce = Request::LomAnnounce {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round: 1,
        label: 0,
        survivors: vec![],
    };
    let (kind, message) = refused(ask(&r.fed, 2, 1, &announce));
    assert_eq!(kind, ErrorKind::Authentication, "{message}");
    // A node that already sent its share for a round cannot swap it for another.
    let swap = Request::LomShare {
        version: AGENT_PROTOCOL_VERSION,
        session_id: r.session.to_string(),
        round: 1,
        label: 0,
        share: "01".repeat(crate::lom::dropout::SHARE_LEN),
        seed_shares: vec![],
    };
    let (kind, message) = refused(ask(&r.fed, 2, 1, &swap));
    assert_eq!(kind, ErrorKind::Conflict, "{message}");
    assert!(message.contains("other shares"), "{message}");
    // Shares of round seeds with the sender itself, a stranger, or the receiver: refused.
    let node = |i: usize| r.fed.parties[i].party_id.clone();
    let share = "00".repeat(crate::lom::dropout::SHARE_LEN);
    for about in [node(2), "node_stranger".to_owned(), node(1)] {
        let odd = Request::LomShare {
            version: AGENT_PROTOCOL_VERSION,
            session_id: r.session.to_string(),
            round: 7,
            label: 0,
            share: share.clone(),
            seed_shares: vec![(about, share.clone())],
        };
        let (kind, message) = refused(ask(&r.fed, 2, 1, &odd));
        assert_eq!(kind, ErrorKind::InvalidInput, "{message}");
        assert!(message.contains("no other node"), "{message}");
    }
    assert!(shares_held(&r, 1, 7).is_empty());
}
