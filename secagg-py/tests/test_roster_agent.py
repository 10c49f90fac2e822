"""secagg.Home's roster calls (export, show, import, pull) and the calls through the party agents
(session_run, federation_check), with real `secagg serve` processes on loopback."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest

import secagg
from conftest import free_ports, free_ports_below_ephemeral, real_mpspdz_root


def _homes(root: Path, nodes: int) -> Tuple[secagg.Home, List[secagg.Home]]:
    """A researcher and ``nodes`` nodes, each its own home with a free loopback port; nobody
    registered yet."""
    ports = free_ports(nodes + 1)
    researcher = secagg.Home(root / "researcher")
    researcher.init("researcher", ip="127.0.0.1", port=ports[0])
    homes = []
    for i, port in enumerate(ports[1:]):
        h = secagg.Home(root / f"node{i + 1}")
        h.init("node", ip="127.0.0.1", port=port)
        homes.append(h)
    return researcher, homes


def _roster_federation(root: Path, nodes: int = 2):
    """The roster path: the researcher registers every node's bundle and exports a roster; each
    node registers the researcher's bundle and imports the roster. Returns (researcher, nodes,
    roster path, export summary, import plans)."""
    researcher, homes = _homes(root, nodes)
    for n in homes:
        b = n.bundle()
        researcher.register_bundle(b, expect_fingerprint=b["fingerprint"])
    path = root / "roster.json"
    exported = researcher.roster_export(path)
    rb = researcher.bundle()
    plans = []
    for n in homes:
        n.register_bundle(rb, expect_fingerprint=rb["fingerprint"])
        plans.append(n.roster_import(path))
    return researcher, homes, path, exported, plans


def test_roster_export_then_import_at_every_node(tmp_path):
    researcher, homes = _homes(tmp_path, 2)
    rid = researcher.identity()["party_id"]
    nids = [h.identity()["party_id"] for h in homes]
    fps = {h.identity()["party_id"]: h.identity()["fingerprint"] for h in homes}
    for n in homes:
        b = n.bundle()
        researcher.register_bundle(b, expect_fingerprint=b["fingerprint"])

    path = tmp_path / "roster.json"
    exported = researcher.roster_export(path, valid_days=7)
    assert exported["issuer"] == rid
    assert exported["serial"] == 1
    assert exported["parties"] == 3
    assert exported["omitted"] == []
    assert exported["file"] == str(path)
    assert json.loads(path.read_text()) == exported["roster"]
    assert exported["roster"]["issuer"] == rid
    # A second export without force= refuses to overwrite the file, and spends no serial.
    with pytest.raises(secagg.Conflict):
        researcher.roster_export(path)
    # The researcher sees its own roster without a plan.
    shown = researcher.roster_show(path)
    assert shown["import"] is None
    listed = [p["party_id"] for p in shown["roster"]["parties"]]
    assert listed[0] == rid and sorted(listed[1:]) == sorted(nids)

    rb = researcher.bundle()
    for i, n in enumerate(homes):
        me, other = nids[i], nids[1 - i]
        # Before the researcher is registered here, the roster has no known issuer.
        with pytest.raises(secagg.NotFound):
            n.roster_import(path)
        n.register_bundle(rb, expect_fingerprint=rb["fingerprint"])
        # show: the plan, nothing written.
        shown = n.roster_show(path)
        assert shown["roster"]["serial"] == 1
        plan = shown["import"]
        assert plan["applied"] is False
        changes = {c["party_id"]: c["change"] for c in plan["changes"]}
        assert changes == {rid: "unchanged", me: "this_party", other: "new"}
        assert [p["party_id"] for p in n.peers()] == [rid]
        # A wrong out-of-band fingerprint refuses the whole roster.
        with pytest.raises(secagg.AuthenticationFailure):
            n.roster_import(path, expect_fingerprints={other: fps[me]})
        assert [p["party_id"] for p in n.peers()] == [rid]
        # import: the call is the confirmation.
        applied = n.roster_import(path, expect_fingerprints=[f"{other}={fps[other]}"])
        assert applied["applied"] is True
        assert applied["issuer"] == rid and applied["serial"] == 1
        assert applied["previous_serial"] is None
        assert {c["party_id"]: c["change"] for c in applied["changes"]} == changes
        peers = {p["party_id"]: p for p in n.peers()}
        assert set(peers) == {rid, other}
        assert peers[other]["origin"] == f"roster {rid} #1"
        assert peers[other]["fingerprint"] == fps[other]
        assert peers[rid]["origin"] == "manual"
        # Replaying the same roster: Conflict, nothing changes.
        with pytest.raises(secagg.Conflict) as e:
            n.roster_import(path)
        assert e.value.exit_code == 5
        assert "already imported" in e.value.message
        assert {p["party_id"]: p for p in n.peers()} == peers

    # Only the researcher issues rosters.
    with pytest.raises(secagg.InvalidInput):
        homes[0].roster_export()


def test_a_tampered_roster_is_refused_and_changes_nothing(tmp_path):
    researcher, homes = _homes(tmp_path, 2)
    for n in homes:
        b = n.bundle()
        researcher.register_bundle(b, expect_fingerprint=b["fingerprint"])
    exported = researcher.roster_export()  # no file: the roster comes back as a dict
    assert exported["file"] is None
    roster = exported["roster"]
    payload = json.loads(base64.b64decode(roster["payload"]))
    # Redirect the other node to an attacker's port.
    payload["parties"][-1]["port"] = 1
    tampered = dict(roster, payload=base64.b64encode(json.dumps(payload).encode()).decode())
    node = homes[0]
    rb = researcher.bundle()
    node.register_bundle(rb, expect_fingerprint=rb["fingerprint"])
    before = node.peers()
    with pytest.raises(secagg.AuthenticationFailure) as e:
        node.roster_import(tampered)
    assert e.value.exit_code == 8
    assert "signature does not verify" in e.value.message
    with pytest.raises(secagg.AuthenticationFailure):
        node.roster_show(json.dumps(tampered).encode())
    assert node.peers() == before
    # Not a roster at all.
    with pytest.raises(secagg.InvalidInput):
        node.roster_import({"format": "something else"})
    # The genuine one (as bytes) still imports.
    plan = node.roster_import(json.dumps(roster).encode())
    assert plan["applied"] and len(node.peers()) == 2


def test_a_newer_roster_prunes_with_prune(tmp_path):
    researcher, homes, path, exported, plans = _roster_federation(tmp_path, 2)
    rid = researcher.identity()["party_id"]
    gone = homes[1].identity()["party_id"]
    researcher.delete_peer(gone)
    newer = tmp_path / "roster2.json"
    assert researcher.roster_export(newer)["serial"] == 2
    node = homes[0]
    # Without prune the party stays; the import is recorded (serial 2).
    kept = node.roster_import(newer)
    assert kept["previous_serial"] == 1
    assert gone in [p["party_id"] for p in node.peers()]
    third = tmp_path / "roster3.json"
    researcher.roster_export(third)
    pruned = node.roster_import(third, prune=True)
    assert {c["party_id"]: c["change"] for c in pruned["changes"]}[gone] == "removed"
    assert [p["party_id"] for p in node.peers()] == [rid]


def _keys_sum_to_zero(researcher: secagg.Home, nodes: List[secagg.Home], session: str) -> None:
    sk0 = researcher.context(session, reveal_key=True)["key"]
    sks = [n.context(session, reveal_key=True)["key"] for n in nodes]
    assert sk0 < 0
    assert sk0 + sum(sks) == 0


def test_session_run_through_agents_and_federation_check(tmp_path, agents):
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 3)
    rid = researcher.identity()["party_id"]
    nids = sorted(h.identity()["party_id"] for h in homes)
    running = [agents(h) for h in homes]

    checked = researcher.federation_check()
    assert sorted(r["party_id"] for r in checked) == nids
    assert all(r["ok"] and r["reachable"] and r["mutual_tls"] for r in checked), checked
    assert all(r["problem"] is None for r in checked)

    report = researcher.session_run(all=True, timeout=30)
    assert report["ok"] is True
    session = report["session_id"]
    assert [p["party_id"] for p in report["parties"]] == [rid] + nids
    assert all(p["state"] == "confirmed" for p in report["parties"]), report
    assert all(p["error"] is None for p in report["parties"])
    assert report["key_fingerprint"]
    _keys_sum_to_zero(researcher, homes, session)
    for h in homes:
        ctx = h.context(session)
        assert ctx["state"] == "confirmed" and ctx["parties"] == [rid] + nids

    # A chosen session id and a subset of the nodes, in the given order (researcher listed first).
    chosen = secagg.new_session_id(fedbiomed=True)
    subset = [nids[2], nids[0]]
    report = researcher.session_run(parties=[rid] + subset, session=chosen, timeout=30)
    assert report["session_id"] == secagg.normalize_session_id(chosen)
    assert [p["party_id"] for p in report["parties"]] == [rid] + subset
    by_id = {h.identity()["party_id"]: h for h in homes}
    _keys_sum_to_zero(researcher, [by_id[i] for i in subset], chosen)
    with pytest.raises(secagg.NotFound):
        by_id[nids[1]].context(chosen)

    # One agent stopped: federation_check names it unreachable; session_run fails naming it,
    # with the per-party rows on the exception and no server key stored.
    stopped = homes[1]
    stopped_id = stopped.identity()["party_id"]
    running[1].stop()
    with pytest.raises(secagg.PeerFailure) as e:
        researcher.federation_check(all=True)
    assert e.value.exit_code == 6
    assert stopped_id in e.value.message
    rows = {r["party_id"]: r for r in e.value.report}
    assert rows[stopped_id]["ok"] is False
    assert rows[stopped_id]["reachable"] is False
    assert rows[stopped_id]["problem"] == "unreachable"
    assert all(rows[i]["ok"] for i in nids if i != stopped_id)
    # Only the running ones: no failure.
    only = researcher.federation_check(parties=[i for i in nids if i != stopped_id])
    assert len(only) == 2 and all(r["ok"] for r in only)

    with pytest.raises(secagg.PeerFailure) as e:
        researcher.session_run(all=True, timeout=20)
    rep = e.value.report
    assert rep["ok"] is False
    states = {p["party_id"]: p["state"] for p in rep["parties"]}
    assert states[stopped_id] == "unreachable"
    assert all(states[i] == "cancelled" for i in nids if i != stopped_id), states
    assert rep["key_fingerprint"] is None
    with pytest.raises(secagg.NotFound):
        researcher.context(rep["session_id"])
    for h in homes:
        with pytest.raises(secagg.NotFound):
            h.context(rep["session_id"])


def test_session_run_refusals(tmp_path):
    researcher, homes = _homes(tmp_path, 2)
    with pytest.raises(secagg.InvalidInput):
        researcher.session_run()  # neither parties nor all
    with pytest.raises(secagg.InvalidInput):
        researcher.session_run(parties=["node_x"], all=True)
    with pytest.raises(secagg.InvalidInput) as e:
        researcher.session_run(all=True, mpspdz_port=5000)
    assert "for engine=\"mp-spdz\"" in e.value.message
    with pytest.raises(secagg.InvalidInput):
        researcher.session_run(all=True, timeout=0)
    with pytest.raises(secagg.InvalidInput):
        researcher.session_run(parties=["not-a-party-id"])
    nids = [h.identity()["party_id"] for h in homes]
    nid = nids[0]
    # Too few parties (the researcher could compute the only node's key).
    with pytest.raises(secagg.InvalidInput) as e:
        researcher.session_run(parties=[nid], timeout=5)
    assert "at least 3 parties" in e.value.message
    # Nodes that are not registered here.
    with pytest.raises(secagg.NotFound):
        researcher.session_run(parties=nids, timeout=5)
    # A node does not run sessions.
    rb = researcher.bundle()
    homes[0].register_bundle(rb, expect_fingerprint=rb["fingerprint"])
    with pytest.raises(secagg.InvalidInput) as e:
        homes[0].session_run(parties=[researcher.identity()["party_id"], nids[1]])
    assert "must be the researcher" in e.value.message
    with pytest.raises(secagg.NotFound):
        researcher.federation_check(parties=[nid])


def test_roster_pull_from_the_researchers_agent(tmp_path, agents):
    researcher, homes = _homes(tmp_path, 2)
    rid = researcher.identity()["party_id"]
    for n in homes:
        b = n.bundle()
        researcher.register_bundle(b, expect_fingerprint=b["fingerprint"])
    node, other = homes
    other_id = other.identity()["party_id"]
    # No researcher registered yet.
    with pytest.raises(secagg.NotFound):
        node.roster_pull()
    rb = researcher.bundle()
    node.register_bundle(rb, expect_fingerprint=rb["fingerprint"])
    researcher.roster_export()
    agents(researcher)
    plan = node.roster_pull(from_party=rid)
    assert plan["applied"] and plan["serial"] == 1
    peers = {p["party_id"]: p for p in node.peers()}
    assert peers[other_id]["origin"] == f"roster {rid} #1"
    # Pulling the same roster again is a replay.
    with pytest.raises(secagg.Conflict):
        node.roster_pull()


def _mpspdz_double(root: Path) -> Path:
    """A copy of the repository's MP-SPDZ test double (tests/support/mpspdz-double: a stand-in
    for `shamir-party.x` and `compile.py` that checks its invocation and makes keys summing to 0,
    since no MP-SPDZ build can run in CI), executable."""
    src = Path(__file__).resolve().parents[2] / "tests" / "support" / "mpspdz-double"
    dst = root / "mpspdz-double"
    shutil.copytree(src, dst)
    for f in ("shamir-party.x", "compile.py"):
        (dst / f).chmod(0o755)
    return dst


@pytest.mark.parametrize("build", ["test double", "real MP-SPDZ"])
def test_session_run_with_mp_spdz_through_agents(tmp_path, agents, build):
    mpspdz = real_mpspdz_root() if build == "real MP-SPDZ" else _mpspdz_double(tmp_path)
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 2)
    ports = free_ports_below_ephemeral(3)
    for h, port in zip(homes, ports[1:]):
        agents(h, "--mpspdz-ports", f"{port}-{port}", "--mpspdz-root", str(mpspdz))
    report = researcher.session_run(
        all=True, engine="mp-spdz", mpspdz_root=mpspdz, mpspdz_port=ports[0], timeout=60
    )
    assert report["ok"] is True and report["engine"] == "mp-spdz", report
    assert all(p["state"] == "confirmed" for p in report["parties"]), report
    assert sorted(p["mpspdz_port"] for p in report["parties"]) == sorted(ports)
    _keys_sum_to_zero(researcher, homes, report["session_id"])


def _no_key_anywhere(researcher: secagg.Home, nodes: List[secagg.Home], session: str) -> None:
    """No server key at the researcher; no node holds a confirmed key."""
    with pytest.raises(secagg.NotFound):
        researcher.context(session)
    for n in nodes:
        try:
            assert n.context(session)["state"] != "confirmed"
        except secagg.NotFound:
            pass


def test_session_run_cancelled_before_it_starts_starts_no_node(tmp_path, agents):
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 2)
    for h in homes:
        agents(h)
    token = secagg.CancelToken()
    token.cancel()
    session = secagg.new_session_id()
    with pytest.raises(secagg.PeerFailure) as e:
        researcher.session_run(all=True, session=session, timeout=20, cancel=token)
    assert "cancelled by its caller before it started" in e.value.message
    assert e.value.report["ok"] is False
    for h in homes:
        with pytest.raises(secagg.NotFound):
            h.context(session)
    _no_key_anywhere(researcher, homes, session)


def test_session_run_cancelled_mid_session_stores_no_server_key(tmp_path, agents):
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 2)
    # The test build's fault hook holds one node 5 s after its start: the session is running
    # when the token is set.
    agents(homes[0], env={"SECAGG_FAULT": "agent-started:sleep=5000"})
    agents(homes[1])
    token = secagg.CancelToken()
    threading.Timer(0.5, token.cancel).start()
    session = secagg.new_session_id()
    started = time.monotonic()
    try:
        researcher.session_run(all=True, session=session, timeout=30, cancel=token)
    except secagg.Error as e:
        error = e
    else:
        pytest.fail(
            "the session was not held: SECAGG_BIN must be the test build of secagg (made by "
            "`cargo test`, with its fault hook), not a plain `cargo build`"
        )
    elapsed = time.monotonic() - started
    assert elapsed < 4.5, f"the cancelled session took {elapsed:.1f} s"
    assert "cancelled" in error.message, error.message
    _no_key_anywhere(researcher, homes, session)


def test_a_roster_registers_another_researcher_only_when_named(tmp_path):
    """Issue 20: a roster vouches for nodes; a second researcher in it is refused unless the
    importer names it (`allow_researchers`, the CLI's --allow-researcher)."""
    researcher, homes = _homes(tmp_path, 1)
    node = homes[0]
    other = secagg.Home(tmp_path / "other")
    other.init("researcher", ip="127.0.0.1", port=free_ports(1)[0])
    oid = other.identity()["party_id"]
    for h in (node, other):
        b = h.bundle()
        researcher.register_bundle(b, expect_fingerprint=b["fingerprint"])
    path = tmp_path / "roster.json"
    researcher.roster_export(path)
    rb = researcher.bundle()
    node.register_bundle(rb, expect_fingerprint=rb["fingerprint"])
    shown = node.roster_show(path)["import"]["other_researchers"]
    assert [(r["party_id"], r["refused"]) for r in shown] == [(oid, True)]
    with pytest.raises(secagg.AuthenticationFailure):
        node.roster_import(path)
    assert len(node.peers()) == 1
    plan = node.roster_import(path, allow_researchers=[oid])
    assert plan["other_researchers"][0]["named"] is True
    peers = {p["party_id"]: p for p in node.peers()}
    assert peers[oid]["origin"].startswith("roster ")
