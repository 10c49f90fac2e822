//! A LOM round that survives dropouts (issue 24), through warm agents: ten nodes' agents
//! (`agent::serve`, one thread each, real TLS on loopback, real stores), a context with dropout
//! threshold 6 set up through them, and a plain LOM context beside it.
//!
//! - the extra share round: `encrypt_lom` of one parameter in the dropout context (draw the
//!   self-mask seed, 10 shares, 9 sent to the other agents in parallel, each stored with an fsync
//!   before its answer) against the same call in the plain context;
//! - a node's `encrypt_lom` of 1,000,000 floats, dropout context against plain;
//! - the researcher's `decrypt_lom` of 7 files of 1,000,000 (3 nodes dropped before masking):
//!   signatures, the announcement and the reveal through the 7 survivors' agents (each compares
//!   its announcement with the 6 others' first), 7 self-mask seeds rebuilt from 7 shares each, 7
//!   self masks and 21 dangling pairwise masks removed, the average.

use std::cell::Cell;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use secagg_core::agent::{self, AgentOptions, Nodes, RunOptions, RunRequest, Shutdown};
use secagg_core::aggregate::{self, LomDecryptRequest};
use secagg_core::demo::{self, Federation};
use secagg_core::engine::ContextScheme;
use secagg_core::SessionId;

#[path = "common/lom.rs"]
mod common;
use common::{params, request};

const N: usize = 1_000_000;
const NODES: usize = 10;
const THRESHOLD: u32 = 6;

fn options() -> AgentOptions {
    AgentOptions {
        listen: None,
        endpoint: None,
        allow_researchers: Vec::new(),
        max_sessions: 16,
        max_sessions_per_researcher: 16,
        grace: Duration::from_millis(100),
        mpspdz: None,
        keep_connections: Some(agent::DEFAULT_KEEP_CONNECTIONS),
        only_parties: None,
        accept_rosters_from: None,
        min_nodes: None,
    }
}

/// Starts every node's agent (a thread each) and waits until all listen.
fn start_agents(fed: &Federation) -> Vec<agent::ShutdownHandle> {
    let mut stops = Vec::new();
    for p in &fed.parties[1..] {
        let (handle, shutdown) = Shutdown::new();
        let listening = Arc::new(Mutex::new(false));
        let seen = listening.clone();
        let home = p.home.clone();
        std::thread::spawn(move || {
            let log = Arc::new(move |e: &agent::AgentEvent| {
                if e.event == "listening" {
                    *seen.lock().unwrap() = true;
                }
            });
            agent::serve(&home, options(), log, shutdown)
        });
        while !*listening.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(5));
        }
        stops.push(handle);
    }
    stops
}

fn context(fed: &Federation, dropout_threshold: Option<u32>) -> SessionId {
    let req = RunRequest {
        session_id: SessionId::generate(),
        nodes: Nodes::All,
        timeout: Duration::from_secs(60),
        key_bits: None,
        scheme: ContextScheme::Lom,
        min_nodes: None,
        dropout_threshold,
    };
    let (report, error) = agent::run_session_with(
        &fed.parties[0].home,
        &req,
        &RunOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(error.is_none(), "{error:?}");
    report.session_id.parse().unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let fed = demo::prepare(&dir.path().join("fed"), NODES).unwrap();
    let stops = start_agents(&fed);
    let plain = context(&fed, None);
    let dropout = context(&fed, Some(THRESHOLD));
    let node = &fed.parties[1].home;
    let round = Cell::new(0u64);
    let next = || {
        round.set(round.get() + 1);
        round.get()
    };

    let mut g = c.benchmark_group("lom_dropout_round");
    g.sample_size(20);
    let one = params(0, 1);
    g.bench_function("encrypt_lom 1 float, plain context", |b| {
        b.iter(|| aggregate::encrypt_lom(node, &request(plain, next(), one.clone())).unwrap())
    });
    g.bench_function(
        "encrypt_lom 1 float, dropout context (+ share round over 9 warm agents)",
        |b| {
            b.iter(|| {
                let m =
                    aggregate::encrypt_lom(node, &request(dropout, next(), one.clone())).unwrap();
                assert_eq!(m.shares.unwrap().holders.len(), NODES);
            })
        },
    );
    g.sample_size(10);
    let values = params(0, N);
    g.bench_function("encrypt_lom 1e6 floats, plain context", |b| {
        b.iter(|| aggregate::encrypt_lom(node, &request(plain, next(), values.clone())).unwrap())
    });
    g.bench_function("encrypt_lom 1e6 floats, dropout context", |b| {
        b.iter(|| aggregate::encrypt_lom(node, &request(dropout, next(), values.clone())).unwrap())
    });
    let inputs: Vec<Vec<f64>> = (0..NODES).map(|i| params(i, N)).collect();
    g.bench_function(
        "decrypt_lom 7 x 1e6, 3 dropped (announce, reveal through 7 agents, recover, unmask)",
        |b| {
            b.iter_batched(
                || {
                    // A fresh round (a round is revealed once): nodes 4–10 mask, 1–3 dropped.
                    let r = next();
                    let files = fed.parties[4..]
                        .iter()
                        .zip(&inputs[3..])
                        .map(|(p, x)| {
                            let m =
                                aggregate::encrypt_lom(&p.home, &request(dropout, r, x.clone()))
                                    .unwrap();
                            (p.party_id.clone(), m.file)
                        })
                        .collect();
                    LomDecryptRequest {
                        session: dropout,
                        round: r,
                        label: 0,
                        files,
                    }
                },
                |req| {
                    let avg = aggregate::decrypt_lom(&fed.parties[0].home, &req).unwrap();
                    assert_eq!(avg.dropouts.as_ref().unwrap().before_masking.len(), 3);
                    avg
                },
                BatchSize::PerIteration,
            )
        },
    );
    g.finish();
    for s in stops {
        s.stop();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
