//! Issue 24: LOM rounds that survive nodes dropping out, every party a real process on loopback.
//! Ten nodes, threshold six: node agents killed (SIGKILL) after sharing, after masking and after
//! the survivors' announcement; the researcher's average is the exact weighted average of the
//! nodes whose files it holds, and it names who dropped. Too few survivors fail cleanly and the
//! next round works. What each node revealed is read back from its store by a fresh process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::agents::{
    context_of, contexts, federation, lom_decrypt, lom_encrypt, lom_session_run, researcher, Agent,
};
use support::secagg;

mod support;

struct Setup {
    _dir: tempfile::TempDir,
    fed: secagg_core::demo::Federation,
    agents: Vec<Agent>,
    session: String,
}

/// `nodes` nodes, each agent started with `fault(i)` (node i, 1-based) in its environment, and a
/// LOM context with dropout threshold `t` set up through them.
fn setup(nodes: usize, t: u32, fault: impl Fn(usize) -> Option<&'static str>) -> Setup {
    let (dir, fed) = federation(nodes);
    let agents = (1..=nodes)
        .map(|i| {
            let env: Vec<(&str, &str)> = fault(i)
                .map(|f| vec![("SECAGG_FAULT", f)])
                .unwrap_or_default();
            Agent::start(fed.parties[i].home.root(), &[], &env)
        })
        .collect();
    let session = secagg_core::session::new_session_id();
    let t = t.to_string();
    let report = lom_session_run(&fed, &session, &["--all", "--dropout-threshold", &t])
        .ok()
        .json();
    for row in report["parties"].as_array().unwrap() {
        assert_eq!(row["state"], "confirmed", "{report}");
    }
    // Every party recorded the threshold with its context (a fresh process reads it).
    for p in &fed.parties {
        let all = contexts(p.home.root());
        let c = context_of(&all, &session).unwrap();
        assert_eq!(c["dropout_threshold"], t.parse::<u64>().unwrap(), "{c}");
    }
    Setup {
        _dir: dir,
        fed,
        agents,
        session,
    }
}

/// Node i's parameters: within the default clipping range (3) for i ≤ 10.
fn params(i: usize) -> Vec<f64> {
    vec![i as f64 * 0.25, -(i as f64) / 8.0, 0.25 + i as f64 / 20.0]
}

fn weight(i: usize) -> u64 {
    i as u64 + 1
}

/// Node `i` masks its parameters for `round` (with `env`), writing `masked-<i>.json`.
fn mask(s: &Setup, i: usize, round: u64, env: &[(&str, &str)]) -> (support::Run, PathBuf) {
    mask_full(s, i, round, &[], env)
}

/// [`mask`] with `extra` arguments.
fn mask_with(s: &Setup, i: usize, round: u64, extra: &[&str]) -> (support::Run, PathBuf) {
    mask_full(s, i, round, extra, &[])
}

fn mask_full(
    s: &Setup,
    i: usize,
    round: u64,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (support::Run, PathBuf) {
    let dir = s.fed.dir.join(format!("round-{round}"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("params-{i}.json"));
    std::fs::write(&p, serde_json::to_string(&params(i)).unwrap()).unwrap();
    let out = dir.join(format!("masked-{i}.json"));
    let weight = weight(i).to_string();
    let home = s.fed.parties[i].home.root();
    let mut args = vec!["--weight", weight.as_str()];
    args.extend_from_slice(extra);
    let run = lom_encrypt(home, &s.session, round, (&p, &out), &args, env);
    (run, out)
}

/// The researcher unmasks `round` from `files`, writing the JSON result to `out`.
fn unmask(s: &Setup, round: u64, files: &[PathBuf], out: &Path) -> support::Run {
    unmask_env(s, round, files, out, &[])
}

/// [`unmask`] with `env` in the researcher's environment.
fn unmask_env(
    s: &Setup,
    round: u64,
    files: &[PathBuf],
    out: &Path,
    env: &[(&str, &str)],
) -> support::Run {
    let out = out.to_str().unwrap();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    lom_decrypt(&s.fed, &s.session, round, &paths, &["-o", out], env)
}

/// Asserts the result in `out` is the weighted average of nodes `nodes`' parameters.
fn assert_average_of(out: &Path, nodes: &[usize]) -> serde_json::Value {
    let avg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    let total: u64 = nodes.iter().map(|&i| weight(i)).sum();
    let mut sums = [0.0f64; 3];
    for &i in nodes {
        for (s, v) in sums.iter_mut().zip(params(i)) {
            *s += v * weight(i) as f64;
        }
    }
    let got: Vec<f64> = avg["average"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), 3, "{avg}");
    for (g, s) in got.iter().zip(sums) {
        let want = s / total as f64;
        // Quantisation to 2·3/8191 per value, averaged: well within 1e-3. A self-mask or a
        // dangling mask left in would give noise (or a refusal), not this.
        assert!(
            (g - want).abs() < 1e-3,
            "average {got:?}, expected {want}: {avg}"
        );
    }
    assert_eq!(avg["total_weight"], total, "{avg}");
    assert_eq!(avg["nodes"], nodes.len(), "{avg}");
    avg
}

fn ids(s: &Setup, nodes: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = nodes
        .iter()
        .map(|&i| s.fed.parties[i].party_id.clone())
        .collect();
    v.sort();
    v
}

/// What node `i` revealed for `round`, read by a fresh process: (party, `share` | `seed`).
fn revealed(s: &Setup, i: usize, round: u64) -> Vec<(String, String)> {
    let c = secagg(
        s.fed.parties[i].home.root(),
        &["context", "show", &s.session, "--format", "json"],
    )
    .ok()
    .json();
    c["reveals"]
        .as_array()
        .unwrap_or_else(|| panic!("no reveals in {c}"))
        .iter()
        .filter(|r| r["round"] == round)
        .map(|r| {
            (
                r["party"].as_str().unwrap().to_owned(),
                r["revealed"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn killed_by_sigkill(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[test]
fn ten_nodes_three_killed_after_sharing_the_seven_survivors_average_exactly() {
    let mut s = setup(10, 6, |_| None);
    let round = 1;
    // Nodes 1–3 share their self-masks, then die before masking (their processes SIGKILL
    // themselves at that step), and their agents are killed too.
    for i in 1..=3 {
        let (run, out) = mask(&s, i, round, &[("SECAGG_FAULT", "dropout-shared:crash")]);
        assert_eq!(
            run.code, -1,
            "node {i} should have been killed: {}",
            run.stderr
        );
        assert!(!out.exists(), "node {i} wrote a file");
        s.agents[i - 1].kill();
    }
    let mut files = Vec::new();
    for i in 4..=10 {
        let (run, out) = mask(&s, i, round, &[]);
        run.ok();
        // Its self-mask is held by the seven nodes whose agents still run.
        assert!(
            run.stderr.contains("self-mask shared with 7 of 10 nodes"),
            "{}",
            run.stderr
        );
        files.push(out);
    }
    let out = s.fed.dir.join("avg-1.json");
    let run = unmask(&s, round, &files, &out);
    run.ok();
    let avg = assert_average_of(&out, &(4..=10).collect::<Vec<_>>());
    assert_eq!(
        avg["dropouts"]["before_masking"],
        serde_json::json!(ids(&s, &[1, 2, 3])),
        "{avg}"
    );
    assert_eq!(avg["dropouts"]["while_unmasking"], serde_json::json!([]));
    assert!(
        run.stderr.contains("dropped before masking"),
        "{}",
        run.stderr
    );
    // Each survivor revealed a share for every survivor and a seed for every dropped node,
    // never both for one party.
    let dropped = ids(&s, &[1, 2, 3]);
    // The operator's view of it (text): one line per round.
    let shown = secagg(
        s.fed.parties[4].home.root(),
        &["context", "show", &s.session],
    );
    shown.ok();
    let line = format!("1/0: 7 shares, 3 seeds (with {})", dropped.join(", "));
    assert!(shown.stdout.contains(&line), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("dropout threshold"),
        "{}",
        shown.stdout
    );
    for i in 4..=10 {
        let r = revealed(&s, i, round);
        assert_eq!(r.len(), 10, "node {i}: {r:?}");
        for (party, kind) in &r {
            let want = if dropped.contains(party) {
                "seed"
            } else {
                "share"
            };
            assert_eq!(kind, want, "node {i} about {party}: {r:?}");
        }
    }
}

#[test]
fn two_killed_after_masking_and_two_after_the_announcement_all_ten_average_exactly() {
    // Nodes 9 and 10 record the researcher's announcement, then die when asked to reveal.
    let mut s = setup(10, 6, |i| (i >= 9).then_some("dropout-reveal-asked:crash"));
    let round = 3;
    let (_, files) = mask_all(&s, round, 0, &[]);
    assert_eq!(files.len(), 10);
    // Nodes 1 and 2 die after their vectors arrived.
    s.agents[0].kill();
    s.agents[1].kill();
    let out = s.fed.dir.join("avg-3.json");
    let run = unmask(&s, round, &files, &out);
    run.ok();
    let avg = assert_average_of(&out, &(1..=10).collect::<Vec<_>>());
    assert_eq!(avg["dropouts"]["before_masking"], serde_json::json!([]));
    let silent: Vec<String> = avg["dropouts"]["while_unmasking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["party"].as_str().unwrap().to_owned())
        .collect();
    // Nodes 1 and 2 were gone at the announcement, nodes 9 and 10 at the reveal.
    for p in avg["dropouts"]["while_unmasking"].as_array().unwrap() {
        let at_reveal = ids(&s, &[9, 10]).contains(&p["party"].as_str().unwrap().to_owned());
        let want = if at_reveal { "reveal" } else { "announcement" };
        assert_eq!(p["step"], want, "{p}");
    }
    let mut silent_sorted = silent.clone();
    silent_sorted.sort();
    assert_eq!(silent_sorted, ids(&s, &[1, 2, 9, 10]), "{avg}");
    for i in [9, 10] {
        let status = s.agents[i - 1].wait_status(Duration::from_secs(10));
        assert!(killed_by_sigkill(status), "agent {i}: {status:?}");
        // It recorded the announcement, revealed nothing.
        assert!(revealed(&s, i, round).is_empty());
    }
    for i in 3..=8 {
        let r = revealed(&s, i, round);
        assert_eq!(r.len(), 10, "node {i}: {r:?}");
        assert!(r.iter().all(|(_, k)| k == "share"), "node {i}: {r:?}");
    }
}

/// Both kinds of dropout in one round, which the design (self-mask shares only) cannot
/// unmask: nodes 1 and 2 die before masking, and survivors 9 and 10 die when asked to reveal.
/// Their round seeds with nodes 1 and 2 are rebuilt from the shares the six answering survivors
/// hold (each node shares its round seeds too), and the average of the eight is exact.
#[test]
fn two_dropped_before_masking_and_two_silent_survivors_in_one_round_average_exactly() {
    let mut s = setup(10, 6, |i| (i >= 9).then_some("dropout-reveal-asked:crash"));
    let round = 4;
    for i in 1..=2 {
        let (run, out) = mask(&s, i, round, &[("SECAGG_FAULT", "dropout-shared:crash")]);
        assert_eq!(run.code, -1, "node {i}: {}", run.stderr);
        assert!(!out.exists());
        s.agents[i - 1].kill();
    }
    let (masked, files) = mask_all(&s, round, 0, &[]);
    let survivors: Vec<usize> = (3..=10).collect();
    assert_eq!(masked, survivors);
    let out = s.fed.dir.join("avg-4.json");
    unmask(&s, round, &files, &out).ok();
    let avg = assert_average_of(&out, &survivors);
    assert_eq!(
        avg["dropouts"]["before_masking"],
        serde_json::json!(ids(&s, &[1, 2])),
        "{avg}"
    );
    let silent: Vec<&str> = avg["dropouts"]["while_unmasking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["party"].as_str().unwrap())
        .collect();
    let mut silent: Vec<String> = silent.into_iter().map(str::to_owned).collect();
    silent.sort();
    assert_eq!(silent, ids(&s, &[9, 10]), "{avg}");
    assert_reveal_records(&s, round, &survivors);
}

#[test]
fn fewer_survivors_than_the_threshold_fail_cleanly_and_the_next_round_works() {
    let mut s = setup(5, 3, |_| None);
    let (_, files) = mask_all(&s, 1, 0, &[]);
    assert_eq!(files.len(), 5);
    // Fed-BioMed v6's profiles have no self-mask: refused before the round is spent.
    let (run, out) = mask_with(&s, 1, 9, &["--profile", "fedbiomed-v6"]);
    run.fails_with(3, "only secagg's profile does");
    assert!(!out.exists());
    let shown = secagg(
        s.fed.parties[1].home.root(),
        &["context", "show", &s.session, "--format", "json"],
    )
    .ok()
    .json();
    assert_eq!(shown["rounds_used"], serde_json::json!([1]), "{shown}");
    // Two files of five, threshold three: refused before any node is asked anything.
    let out = s.fed.dir.join("avg-1.json");
    unmask(&s, 1, &files[..2], &out).fails_with(3, "fewer than its dropout threshold 3");
    assert!(!out.exists());
    for i in 1..=5 {
        assert!(revealed(&s, i, 1).is_empty(), "node {i} revealed");
    }
    // Five files, but only two agents answer: three shares of each self-mask are needed.
    for a in &mut s.agents[2..] {
        a.kill();
    }
    let run = unmask(&s, 1, &files, &out);
    run.fails_with(6, "fewer than the threshold 3");
    assert!(
        run.stderr.contains("silent while unmasking"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "a partial result was written");
    // The nodes come back; the next round works with every node.
    for i in 3..=5 {
        s.agents[i - 1] = Agent::start(s.fed.parties[i].home.root(), &[], &[]);
    }
    let (_, files) = mask_all(&s, 2, 0, &[]);
    assert_eq!(files.len(), 5);
    let out = s.fed.dir.join("avg-2.json");
    unmask(&s, 2, &files, &out).ok();
    let avg = assert_average_of(&out, &[1, 2, 3, 4, 5]);
    assert_eq!(avg["dropouts"]["before_masking"], serde_json::json!([]));
    // Round 1 again, now that every agent runs: the two nodes that revealed it refuse to
    // reveal it twice, and the three others' shares suffice for the same survivors.
    let again = s.fed.dir.join("avg-1-again.json");
    let run = unmask(&s, 1, &files_of_round(&s, 1), &again);
    run.ok();
    let avg = assert_average_of(&again, &[1, 2, 3, 4, 5]);
    let refusals = avg["dropouts"]["while_unmasking"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(refusals.len(), 2, "{avg}");
    for r in refusals {
        assert_eq!(r["step"], "reveal", "{r}");
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("a round is revealed once"),
            "{r}"
        );
    }
}

fn files_of_round(s: &Setup, round: u64) -> Vec<PathBuf> {
    (1..s.fed.parties.len())
        .map(|i| s.fed.dir.join(format!("round-{round}/masked-{i}.json")))
        .collect()
}

#[test]
fn a_minority_threshold_is_refused_and_nothing_is_stored() {
    let (_dir, fed) = federation(4);
    let _agents: Vec<Agent> = (1..=4)
        .map(|i| Agent::start(fed.parties[i].home.root(), &[], &[]))
        .collect();
    let session = secagg_core::session::new_session_id();
    lom_session_run(&fed, &session, &["--all", "--dropout-threshold", "2"])
        .fails_with(3, "at most half of them");
    secagg(
        researcher(&fed),
        &["session", "run", "--all", "--dropout-threshold", "3"],
    )
    .fails_with(3, "only to LOM contexts");
    for p in &fed.parties {
        assert!(context_of(&contexts(p.home.root()), &session).is_none());
    }
}

/// Restarts node `i`'s agent with `fault` (`STEP:ACTION`) in its environment, or none.
fn restart(s: &mut Setup, i: usize, fault: Option<&str>) {
    s.agents[i - 1].kill();
    let env: Vec<(&str, &str)> = fault.map(|f| vec![("SECAGG_FAULT", f)]).unwrap_or_default();
    s.agents[i - 1] = Agent::start(s.fed.parties[i].home.root(), &[], &env);
}

/// Every node masks `round` (node `faulty` with `env`); returns the nodes whose files exist and
/// the files. A node whose masking failed left no file.
fn mask_all(
    s: &Setup,
    round: u64,
    faulty: usize,
    env: &[(&str, &str)],
) -> (Vec<usize>, Vec<PathBuf>) {
    let (mut masked, mut files) = (Vec::new(), Vec::new());
    for i in 1..s.fed.parties.len() {
        let (run, out) = mask(s, i, round, if i == faulty { env } else { &[] });
        if run.code == 0 {
            masked.push(i);
            files.push(out);
        } else {
            assert!(
                !out.exists(),
                "node {i} failed and left a file: {}",
                run.stderr
            );
        }
    }
    (masked, files)
}

/// What every node recorded for `round` agrees with who masked: a share about every node that
/// masked, the round seed with every node that did not, never both (a node that revealed nothing
/// recorded nothing).
fn assert_reveal_records(s: &Setup, round: u64, masked: &[usize]) {
    let survivors = ids(s, masked);
    for i in 1..s.fed.parties.len() {
        for (party, kind) in revealed(s, i, round) {
            let want = if survivors.contains(&party) {
                "share"
            } else {
                "seed"
            };
            assert_eq!(kind, want, "node {i} about {party} in round {round}");
        }
    }
}

/// The fault sweep of issue 24: every step of a dropout round, crash and fail, at one node (its
/// agent, or its own masking process for `dropout-shared`). Five nodes, threshold three: one
/// faulty node never stops the round, so every faulty round must give the exact average of the
/// nodes that masked; no node's records ever show both kinds for one party; and a clean round
/// follows each fault (the faulty agent restarted without its fault) with all five nodes.
#[test]
fn fault_sweep_dropout_every_step_crash_and_fail_at_one_node() {
    let mut s = setup(5, 3, |_| None);
    let faulty = 2;
    let steps = [
        "dropout-shared",
        "dropout-share-stored",
        "dropout-announced",
        "dropout-reveal-asked",
        "dropout-reveal-recorded",
    ];
    let mut round = 0;
    for step in steps {
        for action in ["crash", "fail"] {
            let fault = format!("{step}:{action}");
            round += 1;
            let in_agent = step != "dropout-shared";
            if in_agent {
                restart(&mut s, faulty, Some(&fault));
            }
            let env = [("SECAGG_FAULT", fault.as_str())];
            let (masked, files) = mask_all(&s, round, faulty, if in_agent { &[] } else { &env });
            let expected: Vec<usize> = if in_agent {
                vec![1, 2, 3, 4, 5]
            } else {
                vec![1, 3, 4, 5]
            };
            assert_eq!(masked, expected, "{fault}");
            let out = s.fed.dir.join(format!("avg-{round}.json"));
            let run = unmask(&s, round, &files, &out);
            assert_eq!(run.code, 0, "{fault}: {}", run.stderr);
            let avg = assert_average_of(&out, &masked);
            assert_reveal_records(&s, round, &masked);
            if in_agent && step != "dropout-share-stored" {
                // The faulty agent revealed nothing the researcher received.
                let silent = avg["dropouts"]["while_unmasking"].to_string();
                assert!(
                    silent.contains(&s.fed.parties[faulty].party_id),
                    "{fault}: {avg}"
                );
            }
            // A clean round with every node.
            round += 1;
            restart(&mut s, faulty, None);
            let (masked, files) = mask_all(&s, round, 0, &[]);
            let out = s.fed.dir.join(format!("avg-{round}.json"));
            unmask(&s, round, &files, &out).ok();
            assert_average_of(&out, &masked);
            assert_eq!(masked.len(), 5, "after {fault}");
        }
    }
    // The researcher's own process, between the announcement and the reveal: it dies or fails
    // with no output; run again, the same announcement is accepted and the round completes.
    for action in ["crash", "fail"] {
        round += 1;
        let fault = format!("dropout-researcher-announced:{action}");
        let (masked, files) = mask_all(&s, round, 0, &[]);
        let out = s.fed.dir.join(format!("avg-{round}.json"));
        let run = unmask_env(&s, round, &files, &out, &[("SECAGG_FAULT", &fault)]);
        assert_ne!(run.code, 0, "{fault}");
        assert!(!out.exists(), "{fault}");
        for i in 1..=5 {
            assert!(
                revealed(&s, i, round).is_empty(),
                "{fault}: node {i} revealed"
            );
        }
        unmask(&s, round, &files, &out).ok();
        assert_average_of(&out, &masked);
        assert_reveal_records(&s, round, &masked);
    }
}
