"""secagg.Home: identity, registration, negotiation, contexts, aggregation, from Python."""

from __future__ import annotations

import _thread
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

import secagg


def test_three_party_negotiation_from_python_threads(federation):
    fed = federation(2)
    session = secagg.new_session_id()
    results = fed.run(session)
    for i in range(3):
        assert isinstance(results[i], dict), results[i]
        assert results[i]["session_id"] == session
        assert results[i]["party_index"] == i
        assert results[i]["parties"] == fed.ids
        assert results[i]["engine"] == "native"
    assert results[0]["role"] == "researcher" and results[1]["role"] == "node"
    keys = [h.context(session, reveal_key=True)["key"] for h in fed.homes]
    assert all(type(k) is int for k in keys)
    assert keys[0] < 0 and all(0 <= k < 2**secagg.DEFAULT_KEY_BITS for k in keys[1:])
    assert keys[0] + sum(keys[1:]) == 0
    assert keys[1] != keys[2]
    for h, r in zip(fed.homes, [results[i] for i in range(3)]):
        listed = h.contexts()
        assert [c["session_id"] for c in listed] == [session]
        assert "key" not in listed[0] and "key" not in h.context(session)
        assert listed[0]["state"] == "confirmed"
        assert listed[0]["key_fingerprint"] == r["key_fingerprint"]
    # Fed-BioMed's spelling names the same session.
    assert fed.homes[1].context("secagg_" + session)["session_id"] == session


def test_the_gil_is_released_while_a_negotiation_waits(federation):
    fed = federation(2)
    session = secagg.new_session_id()
    outcome = {}

    def researcher():
        try:
            fed.homes[0].negotiate(session, fed.ids, timeout=1.5)
        except secagg.Error as e:
            outcome["error"] = e

    t = threading.Thread(target=researcher)
    t.start()
    time.sleep(0.1)
    ticks, end = 0, time.monotonic() + 0.8
    while time.monotonic() < end:
        ticks += 1
    assert t.is_alive(), "the negotiation should still be waiting for the nodes"
    # With the GIL held by the negotiation, this thread would not run at all for 1.5 s.
    assert ticks > 10_000, ticks
    t.join()
    assert isinstance(outcome["error"], secagg.Timeout)
    assert outcome["error"].exit_code == 7
    assert fed.homes[0].contexts() == []


@pytest.fixture
def ctrl_c_handled():
    """Python's own SIGINT handler for the test: a process started in the background (`cmd &`
    without job control, or under nohup) inherits SIGINT ignored, and `_thread.interrupt_main`
    then does nothing (regression: the Ctrl-C test failed when CI ran in the background)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_a_negotiation_with_nothing_stored(federation, ctrl_c_handled):
    fed = federation(2)
    session = secagg.new_session_id()
    # Node 1 runs (node 2 never starts); the researcher runs in the main thread and gets Ctrl-C.
    node = threading.Thread(
        target=lambda: fed.run(session, which=[1], timeout=5.0).get(1)
    )
    node.start()
    timer = threading.Timer(0.7, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fed.homes[0].negotiate(session, fed.ids, timeout=30.0)
    assert time.monotonic() - started < 3.0
    node.join()
    for h in fed.homes:
        assert h.contexts() == []


def test_a_cancel_token_stops_a_negotiation_and_its_peers_learn_it(federation):
    fed = federation(2)
    session = secagg.new_session_id()
    token = secagg.CancelToken()
    assert not token.cancelled

    def call(i, home):
        if i == 1:
            return home.negotiate(session, fed.ids, timeout=20.0, cancel=token)
        return home.negotiate(session, fed.ids, timeout=20.0)

    threading.Timer(0.7, token.cancel).start()
    started = time.monotonic()
    results = fed.run(session, which=[0, 1], call=call)
    assert time.monotonic() - started < 5.0
    assert token.cancelled
    assert isinstance(results[1], secagg.PeerFailure), results[1]
    assert "cancelled the negotiation" in results[1].message
    assert results[1].exit_code == 6 and results[1].hint
    assert isinstance(results[0], secagg.Error), results[0]
    for h in fed.homes:
        assert h.contexts() == []


def test_registration_peers_and_deletion(tmp_path, fixtures):
    a, b = secagg.Home(tmp_path / "a"), secagg.Home(tmp_path / "b")
    a.init("researcher")
    ib = b.init("node", ip="10.221.0.3", port=14002)
    bundle = b.bundle()
    assert bundle["party_id"] == ib["party_id"] and bundle["fingerprint"] == ib["fingerprint"]
    # From a bundle file, then the same again (unchanged with upsert).
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle))
    r = a.register_bundle(str(path), expect_fingerprint=ib["fingerprint"])
    assert r["action"] == "created" and r["fingerprint_checked"] is True
    assert r["component"] == "NODE" and (r["ip"], r["port"]) == ("10.221.0.3", 14002)
    assert a.register_bundle(bundle, upsert=True)["action"] == "unchanged"
    # A Fed-BioMed RSA certificate, given as PEM text and as a path.
    pem = (fixtures / "certs" / "fedbiomed_rsa2048.pem").read_text()
    fb_id = "node_" + "0" * 8 + "-fb"
    with pytest.raises(secagg.InvalidInput):  # the certificate's O= is another party's? no: a bad port
        a.register(pem, fb_id, "10.221.0.4", 70000)
    peers = a.peers()
    assert [p["party_id"] for p in peers] == [ib["party_id"]]
    detail = a.peer(ib["party_id"])
    assert detail["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert detail["fingerprint"] == ib["fingerprint"]
    gone = a.delete_peer(ib["party_id"])
    assert gone["party_id"] == ib["party_id"] and a.peers() == []
    with pytest.raises(secagg.NotFound):
        a.delete_peer(ib["party_id"])


def test_import_fedbiomed_tinydb(tmp_path, fixtures):
    h = secagg.Home(tmp_path / "h")
    h.init("node")
    report = h.import_fedbiomed(fixtures / "fedbiomed" / "db_node.json")
    assert report["entries"] == 3 and len(report["imported"]) == 3 and report["refused"] == []
    ports = sorted(p["port"] for p in h.peers())
    assert ports == [14000, 14002, 14003]
    # All or nothing: one bad document refuses the whole file, naming it.
    h2 = secagg.Home(tmp_path / "h2")
    h2.init("node")
    with pytest.raises(secagg.InvalidInput) as e:
        h2.import_fedbiomed(fixtures / "fedbiomed" / "db_bad_port.json")
    assert "port 70000 is out of range" in e.value.message and e.value.hint
    assert h2.peers() == []
    # With skip_invalid the good documents are imported and the report lists the refused one.
    report = h2.import_fedbiomed(fixtures / "fedbiomed" / "db_bad_entry.json", skip_invalid=True)
    assert len(report["refused"]) == 1 and "expired" in report["refused"][0]["reason"]
    assert len(h2.peers()) == len(report["imported"]) > 0


def test_every_exception_class_for_its_real_cause(tmp_path, federation, fixtures):
    kinds = {k["name"]: k for k in secagg.error_kinds()}
    assert len(kinds) == 10
    for name, cls in [
        ("internal", secagg.InternalError),
        ("invalid_input", secagg.InvalidInput),
        ("not_found", secagg.NotFound),
        ("conflict", secagg.Conflict),
        ("peer_failure", secagg.PeerFailure),
        ("timeout", secagg.Timeout),
        ("authentication", secagg.AuthenticationFailure),
        ("external_tool", secagg.ExternalToolFailure),
        ("storage", secagg.StorageError),
        ("verification", secagg.VerificationFailed),
    ]:
        assert issubclass(cls, secagg.Error)
        assert cls.kind == name and cls.exit_code == kinds[name]["exit_code"]

    h = secagg.Home(tmp_path / "h")
    # NotFound: no identity yet.
    with pytest.raises(secagg.NotFound) as e:
        h.identity()
    assert e.value.exit_code == 4 and e.value.hint
    # InvalidInput: an unknown role, a malformed party id, a port out of range.
    with pytest.raises(secagg.InvalidInput) as e:
        h.init("administrator")
    assert e.value.exit_code == 3 and isinstance(e.value, ValueError)
    me = h.init("researcher")
    cert = (fixtures / "certs" / "ecdsa_p256.pem").read_text()
    node_a = "node_98815683-1562-4cbb-84bb-289b6b064c01"  # the certificate's O=
    with pytest.raises(secagg.InvalidInput):
        h.register(cert, "hospital_1", "127.0.0.1", 14001)
    with pytest.raises(secagg.InvalidInput) as e:
        h.register(cert, "node_a", "127.0.0.1", 14001)
    assert "O=" + node_a in e.value.message
    with pytest.raises(secagg.InvalidInput):
        h.register(cert, node_a, "127.0.0.1", 0)
    # Conflict: a second identity without force; a party registered twice without upsert.
    with pytest.raises(secagg.Conflict) as e:
        h.init("node")
    assert e.value.exit_code == 5
    h.register(cert, node_a, "127.0.0.1", 14001)
    with pytest.raises(secagg.Conflict):
        h.register(cert, node_a, "127.0.0.1", 14001)
    # AuthenticationFailure: the fingerprint received out of band does not match.
    wrong = "SHA256:" + ":".join(["00"] * 32)
    with pytest.raises(secagg.AuthenticationFailure) as e:
        h.register(cert, node_a, "127.0.0.1", 14001, upsert=True, expect_fingerprint=wrong)
    assert e.value.exit_code == 8
    # ExternalToolFailure: the MP-SPDZ engine pointed at a directory that does not exist.
    with pytest.raises(secagg.ExternalToolFailure) as e:
        h.negotiate(secagg.new_session_id(), [me["party_id"], node_a, "node_b"],
                    engine="mp-spdz", mpspdz_root=str(tmp_path / "no-mpspdz"))
    assert e.value.exit_code == 9 and "MP-SPDZ root" in e.value.message
    # Timeout: peers that never start.
    fed = federation(2)
    with pytest.raises(secagg.Timeout) as e:
        fed.homes[0].negotiate(secagg.new_session_id(), fed.ids, timeout=0.5)
    assert e.value.exit_code == 7
    # PeerFailure: a peer that cancels (see the cancel test) — here, a peer that aborts because it
    # runs another party list.
    session = secagg.new_session_id()

    def call(i, home):
        ids = fed.ids if i == 0 else [fed.ids[0], fed.ids[2], fed.ids[1]]
        return home.negotiate(session, ids, timeout=10.0)

    results = fed.run(session, call=call)
    assert any(isinstance(r, secagg.PeerFailure) for r in results.values()), results
    assert all(isinstance(r, secagg.Error) for r in results.values()), results
    # StorageError: the home cannot be created (a file is in the way).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    with pytest.raises(secagg.StorageError) as e:
        secagg.Home(blocker / "home").init("node")
    assert e.value.exit_code == 10 and "Not a directory" in e.value.message
    # (A store that is not a database is refused as invalid input, naming the file.)
    s = secagg.Home(tmp_path / "s")
    s.init("node")
    store = tmp_path / "s" / "store.sqlite"
    store.write_bytes(b"this is not a SQLite database, page-sized" * 4096)
    with pytest.raises(secagg.InvalidInput) as e:
        s.peers()
    assert "not a secagg store" in e.value.message
    store.write_bytes(b"x" * 2900)  # cut short of a whole page: seen before SQLite opens it
    with pytest.raises(secagg.InvalidInput) as e:
        s.peers()
    assert "is truncated (2900 bytes" in e.value.message
    # VerificationFailed: a server key that is not the one negotiated (the adapter's check).
    from secagg.fedbiomed import SecaggServkeyManager

    results = fed.run(session := secagg.new_session_id())
    assert all(isinstance(r, dict) for r in results.values()), results
    m = SecaggServkeyManager(fed.homes[0].path)
    with pytest.raises(secagg.VerificationFailed) as e:
        m.add(session, fed.ids, {"server_key": 12345}, "job_1")
    assert e.value.exit_code == 11
    # The message, hint and exit code, as the CLI shows them.
    assert "hint:" in str(secagg.NotFound("m", "h")) and repr(secagg.Conflict("m")).startswith("Conflict(")


def test_encrypt_and_decrypt_a_round_through_homes(federation):
    fed = federation(3)
    session = secagg.new_session_id(fedbiomed=True)
    results = fed.run(session)
    assert all(isinstance(r, dict) for r in results.values()), results
    params = [[0.5, -1.25, 2.0, 0.0, 2.9], [0.25, 1.0, -2.0, 0.1, -3.5], [0.0, 0.5, 1.0, 0.2, 1.0]]
    files = [fed.homes[i + 1].encrypt(session, 7, p) for i, p in enumerate(params)]
    assert files[0]["round"] == 7 and files[0]["count"] == 5 and files[0]["nodes"] == 3
    with pytest.raises(secagg.InvalidInput):
        fed.homes[0].encrypt(session, 7, params[0])  # the researcher does not encrypt
    with pytest.raises(secagg.InvalidInput):
        fed.homes[0].decrypt(session, 7, files[:2])  # every node's file is needed
    avg = fed.homes[0].decrypt(session, 7, files)
    assert avg["count"] == 5 and avg["nodes"] == 3
    expected = [sum(max(-3.0, min(3.0, p[k])) for p in params) / 3 for k in range(5)]
    for got, want in zip(avg["average"], expected):
        assert abs(got - want) < 2e-3, (avg["average"], expected)
    assert avg["authenticated"] is True and avg["unsigned_files_from"] == []
    # Wrong round: the masks do not cancel, and the core refuses the file.
    with pytest.raises(secagg.InvalidInput):
        fed.homes[0].decrypt(session, 8, files)
    # Files are signed by their node: relabelled, refused; unsigned, refused unless allowed.
    relabelled = dict(files[0], party_id=files[1]["party_id"])
    with pytest.raises(secagg.AuthenticationFailure) as e:
        fed.homes[0].decrypt(session, 7, [relabelled, files[2], files[0]])
    assert "signature does not verify" in e.value.message
    bare = {k: v for k, v in files[0].items() if k != "signature"}
    with pytest.raises(secagg.AuthenticationFailure):
        fed.homes[0].decrypt(session, 7, [bare, files[1], files[2]])
    unauth = fed.homes[0].decrypt(session, 7, [bare, files[1], files[2]], allow_unsigned=True)
    assert unauth["authenticated"] is False and unauth["average"] == avg["average"]
    assert unauth["unsigned_files_from"] == [files[0]["party_id"]]


def test_register_custom_ids_need_the_flag_and_their_role(tmp_path):
    home = secagg.Home(tmp_path / "me")
    home.init("node", ip="127.0.0.1", port=15000)
    _, pem = secagg.generate_certificate("hospital-lyon")
    # Without allow_custom_id: refused, whatever the role.
    for role in (None, "researcher"):
        with pytest.raises(secagg.InvalidInput) as e:
            home.register(pem, "hospital-lyon", "127.0.0.1", 15001, role=role)
        assert "does not start with `researcher_` or `node_`" in e.value.message
        assert "allow-custom-id" in (e.value.hint or "")
    # With it, the role must be stated ...
    with pytest.raises(secagg.InvalidInput) as e:
        home.register(pem, "hospital-lyon", "127.0.0.1", 15001, allow_custom_id=True)
    assert "state its role" in e.value.message
    # ... and be the one Fed-BioMed's rule gives (no `node_` prefix: a researcher).
    with pytest.raises(secagg.InvalidInput) as e:
        home.register(pem, "hospital-lyon", "127.0.0.1", 15001, role="node", allow_custom_id=True)
    assert "Fed-BioMed's rule" in e.value.message
    with pytest.raises(secagg.InvalidInput):
        home.register(pem, "hospital-lyon", "127.0.0.1", 15001, role="lab", allow_custom_id=True)
    assert home.peers() == []
    r = home.register(pem, "hospital-lyon", "127.0.0.1", 15001, role="researcher",
                      allow_custom_id=True)
    assert r["party_id"] == "hospital-lyon" and r["component"] == "RESEARCHER"
    assert [p["party_id"] for p in home.peers()] == ["hospital-lyon"]
    # A role given for a prefixed id is checked against the prefix.
    _, node_pem = secagg.generate_certificate("node_b")
    with pytest.raises(secagg.InvalidInput):
        home.register(node_pem, "node_b", "127.0.0.1", 15002, role="researcher")
    assert home.register(node_pem, "node_b", "127.0.0.1", 15002, role="node")["component"] == "NODE"


_HOLD_STORE_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def test_a_call_waiting_for_the_store_releases_the_gil(tmp_path):
    """Regression (issue 21, item 5): `register` held the GIL for as long as it waited for the
    store's write lock (up to the 30 s busy timeout), freezing every other thread of a server
    process. Another process holds the lock; while `register` waits in a thread, the main thread
    keeps running Python; once the lock is released, the registration lands."""
    import subprocess
    import sys

    home = secagg.Home(tmp_path / "h")
    home.init("node", ip="127.0.0.1", port=15000)
    pid = "node_" + "ab" * 4 + "-peer"
    _, pem = secagg.generate_certificate(pid)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_STORE_LOCK, str(tmp_path / "h" / "store.sqlite")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = {}

        def register():
            try:
                result["ok"] = home.register(pem, pid, "127.0.0.1", 15001)
            except Exception as e:  # reported below
                result["error"] = e

        t = threading.Thread(target=register)
        t.start()
        ticks, start = 0, time.monotonic()
        while time.monotonic() - start < 0.5:
            ticks += 1
        assert t.is_alive(), result  # still waiting for the lock ...
        assert time.monotonic() - start < 2.0  # ... and this thread was never frozen by it
        assert ticks > 10_000, ticks
    finally:
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=10)
    t.join(timeout=30)
    assert "ok" in result, result
    assert [p["party_id"] for p in home.peers()] == [pid]
