"""secagg.fedbiomed: Fed-BioMed v4.5.0's calls, with Fed-BioMed-shaped inputs and outputs."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest

import secagg
import fedbiomed_layout as layout
from secagg import fedbiomed as fb
from conftest import REPO, free_ports


def _secagg_bin():
    """The `secagg` binary scripts/test built (or $SECAGG_BIN)."""
    given = os.environ.get("SECAGG_BIN")
    if given:
        return given
    subprocess.run(["cargo", "build", "--quiet", "-p", "secagg-cli", "--bin", "secagg"],
                   cwd=REPO, check=True)
    return REPO / "target" / "debug" / "secagg"

DOC_KEYS = {"party_id", "certificate", "ip", "port", "component"}


def test_certificate_manager_documents(federation, tmp_path):
    fed = federation(2)
    # A fourth party's home, whose manager registers the federation's certificates.
    me = secagg.Home(tmp_path / "me")
    me.init("node", ip="127.0.0.1", port=15000)
    cm = fb.CertificateManager(db_path=me.path)
    researcher, node1, node2 = (h.bundle() for h in fed.homes)

    ids = {}

    def position(party_id):  # a document id is stable: the one insert returned
        return ids[party_id]

    # insert: PEM text, component as Fed-BioMed gives it (a string or an enum's name).
    doc_id = cm.insert(researcher["certificate"], researcher["party_id"], fb.RESEARCHER,
                       "127.0.0.1", researcher["port"])
    assert doc_id == 1
    ids[researcher["party_id"]] = doc_id
    doc_id = cm.insert(node1["certificate"], node1["party_id"], "NODE", "10.221.0.3", 14002)
    assert doc_id == 2
    ids[node1["party_id"]] = doc_id
    doc = cm.get(node1["party_id"])
    assert set(doc) == DOC_KEYS
    assert doc["certificate"].strip() == node1["certificate"].strip()
    assert (doc["ip"], doc["port"], doc["component"]) == ("10.221.0.3", 14002, "NODE")
    assert cm.get("node_unknown") is None
    assert cm.get("Test-ID") is None  # a malformed id: no such document, as in Fed-BioMed
    # An existing party without upsert: Conflict (Fed-BioMed: FB619); with upsert: a list.
    with pytest.raises(secagg.Conflict):
        cm.insert(node1["certificate"], node1["party_id"], "NODE", "10.221.0.3", 14002)
    assert cm.insert(node1["certificate"], node1["party_id"], "NODE", "10.221.0.9", "14009",
                     upsert=True) == [position(node1["party_id"])]
    assert cm.get(node1["party_id"])["port"] == 14009
    # secagg validates what Fed-BioMed stored blindly.
    with pytest.raises(secagg.InvalidInput):
        cm.insert(node2["certificate"], node2["party_id"], "RESEARCHER", "10.221.0.4", 14003)
    with pytest.raises(secagg.InvalidInput):
        cm.insert("not a certificate", node2["party_id"], "NODE", "10.221.0.4", 14003)
    with pytest.raises(secagg.InvalidInput):
        cm.insert(node2["certificate"], node2["party_id"], "NODE", "10.221.0.4", 99999)
    assert cm.get(node2["party_id"]) is None
    # register_certificate: from a file, component from the id.
    pem_file = tmp_path / "node2.pem"
    pem_file.write_text(node2["certificate"])
    doc_id = cm.register_certificate(str(pem_file), node2["party_id"], "127.0.0.1", node2["port"])
    assert doc_id == 3
    ids[node2["party_id"]] = doc_id
    assert cm.get(node2["party_id"])["component"] == "NODE"
    docs = cm.list(verbose=True)
    # Registration order (TinyDB's document order), not sorted by id.
    assert [d["party_id"] for d in docs] == [researcher["party_id"], node1["party_id"],
                                             node2["party_id"]]
    assert all(set(d) == DOC_KEYS for d in docs) and len(docs) == 3
    # delete: the removed ids, then none.
    before = position(node2["party_id"])
    assert cm.delete(node2["party_id"]) == [before]
    assert cm.delete(node2["party_id"]) == []
    assert cm.delete("Test-ID") == []
    assert cm.get(node2["party_id"]) is None
    # A custom id (no `node_`/`researcher_` prefix) is a researcher's, by Fed-BioMed's rule.
    custom = secagg.Home(tmp_path / "custom")
    custom.init("researcher", id="Test-ID", allow_custom_id=True, ip="127.0.0.1", port=15010)
    custom_id = cm.insert(custom.bundle()["certificate"], "Test-ID", "RESEARCHER", "127.0.0.1",
                          15010)
    assert custom_id not in (ids[researcher["party_id"]], ids[node1["party_id"]])
    assert cm.insert(custom.bundle()["certificate"], "Test-ID", "RESEARCHER", "127.0.0.1",
                     15011, upsert=True) == [custom_id]
    assert cm.get("Test-ID")["component"] == "RESEARCHER"


def test_certificate_manager_without_a_home_says_so():
    cm = fb.CertificateManager()
    with pytest.raises(secagg.NotFound):
        cm.get("node_a")


def test_write_mpc_certificates_for_experiment(federation, tmp_path):
    fed = federation(2)
    cm = fb.CertificateManager(fed.homes[1].path)  # node 1 writes MP-SPDZ's Player-Data
    ident = fed.homes[1].identity()
    home1 = fed.homes[1].path
    key = os.path.join(home1, "identity", "key.pem")
    cert = os.path.join(home1, "identity", "cert.pem")
    certs_dir, ips_dir = tmp_path / "Player-Data", tmp_path / "ips"
    certs_dir.mkdir()
    ips_dir.mkdir()
    ip_file, written = cm.write_mpc_certificates_for_experiment(
        fed.ids, str(certs_dir), str(ips_dir), ident["party_id"], "127.0.0.1", ident["port"],
        key, cert)
    assert ip_file == os.path.join(str(ips_dir), "ip_addresses")
    assert written == [
        str(certs_dir / "P0.pem"), str(certs_dir / "P1.key"), str(certs_dir / "P1.pem"),
        str(certs_dir / "P2.pem"),
    ]
    for i, h in enumerate(fed.homes):
        assert (certs_dir / f"P{i}.pem").read_text().strip() == h.bundle()["certificate"].strip()
    assert stat.S_IMODE(os.stat(certs_dir / "P1.key").st_mode) == 0o600
    assert (certs_dir / "P1.key").read_text() == open(key).read()
    ports = [h.identity()["port"] for h in fed.homes]
    assert open(ip_file).read() == "".join(f"127.0.0.1:{p}\n" for p in ports)
    # An unregistered party: NotFound, and nothing is written.
    empty_certs, empty_ips = tmp_path / "c2", tmp_path / "i2"
    empty_certs.mkdir()
    empty_ips.mkdir()
    with pytest.raises(secagg.NotFound):
        cm.write_mpc_certificates_for_experiment(
            fed.ids + ["node_not-registered"], str(empty_certs), str(empty_ips),
            ident["party_id"], "127.0.0.1", ident["port"], key, cert)
    assert list(empty_certs.iterdir()) == [] and list(empty_ips.iterdir()) == []
    with pytest.raises(secagg.InvalidInput):
        cm.write_mpc_certificates_for_experiment(
            fed.ids, str(tmp_path / "missing"), str(ips_dir), ident["party_id"], "127.0.0.1",
            ident["port"], key, cert)
    # The ip-file line is the core's (issue 21, item 5): Python's f"{ip}:{port}" wrote IPv6
    # literals that MP-SPDZ splits at the first `:`. Now refused, before anything is written.
    with pytest.raises(secagg.InvalidInput) as e:
        cm.write_mpc_certificates_for_experiment(
            fed.ids, str(empty_certs), str(empty_ips), ident["party_id"], "fd00::1",
            ident["port"], key, cert)
    assert "IPv6" in e.value.message
    assert list(empty_certs.iterdir()) == [] and list(empty_ips.iterdir()) == []


def test_ip_file_lines_follow_the_core_rule():
    from secagg import _native
    assert _native.ip_file_line("127.0.0.1", 14001) == "127.0.0.1:14001"
    assert _native.ip_file_line("::ffff:10.0.0.7", 14001) == "10.0.0.7:14001"
    assert _native.ip_file_line("node1.example.org", 14001) == "node1.example.org:14001"
    with pytest.raises(secagg.InvalidInput) as e:
        _native.ip_file_line("fd00::1", 14001)
    assert "MP-SPDZ cannot use" in e.value.message


def test_generate_self_signed_ssl_certificate(tmp_path):
    node_id = "node_" + "1" * 8
    key_path, pem_path = fb.CertificateManager.generate_self_signed_ssl_certificate(
        str(tmp_path), component_id=node_id)
    assert key_path == str(tmp_path / "MPSPDZ_certificate.key")
    assert pem_path == str(tmp_path / "MPSPDZ_certificate.pem")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    # The certificate is one a secagg party accepts for that party id.
    h = secagg.Home(tmp_path / "h")
    h.init("researcher")
    r = h.register(pem_path, node_id, "127.0.0.1", 14001)
    assert r["party_id"] == node_id and r["component"] == "NODE"
    # A relative folder, as Fed-BioMed accepts it: the paths come back absolute.
    os.chdir(tmp_path)
    (tmp_path / "relative").mkdir()
    key2, pem2 = fb.CertificateManager.generate_self_signed_ssl_certificate("relative")
    assert key2 == str(tmp_path / "relative" / "MPSPDZ_certificate.key") and os.path.isfile(pem2)
    with pytest.raises(secagg.InvalidInput):
        fb.CertificateManager.generate_self_signed_ssl_certificate("missing/dir")


def _run_parties(comps, secagg_id, job_id, stagger=0.0):
    """Runs ``fedbiomed_party.py`` for every component, each its own process (the researcher
    first, the nodes ``stagger`` seconds later, as their requests arrive); returns their
    outputs."""
    script = os.path.join(os.path.dirname(__file__), "fedbiomed_party.py")
    parties = [c.id for c in comps]
    procs = []
    for i, c in enumerate(comps):
        spec = {"environ": c.environ, "parties": parties, "secagg_id": secagg_id,
                "job_id": job_id}
        procs.append(subprocess.Popen(
            [sys.executable, script, json.dumps(spec)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "SECAGG_FEDBIOMED_TIMEOUT": "30"}))
        if i == 0 and stagger:
            time.sleep(stagger)
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=90)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def test_tinydb_path_adopts_the_component_on_first_use(tmp_path):
    comps = layout.federation(tmp_path, free_ports(3))
    node = comps[1]
    db_path = node.environ["DB_PATH"]
    home = tmp_path / "c1" / "var" / f"db_{node.id}.secagg"
    assert not home.exists()
    cm = fb.CertificateManager(db_path=db_path)  # as node/secagg.py builds it at import
    assert not home.exists()  # nothing happens before the first use
    docs = cm.list()
    # The component's own identity, its TinyDB certificates, in the TinyDB's order.
    assert fb.home_for(db_path) == str(home)
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert [d["party_id"] for d in docs] == [comps[0].id, comps[2].id]
    assert docs[0]["certificate"].strip() == comps[0].certificate.strip()
    assert (docs[0]["ip"], docs[0]["port"], docs[0]["component"]) == (
        "127.0.0.1", comps[0].environ["MPSPDZ_PORT"], "RESEARCHER")
    # A fresh process (the CLI) reads the same home: the adopted identity and its peers.
    shown = subprocess.run([str(_secagg_bin()), "--home", str(home), "identity", "show",
                            "--format", "json"], capture_output=True, text=True, check=True)
    ident = json.loads(shown.stdout)
    assert ident["party_id"] == node.id and ident["port"] == node.environ["MPSPDZ_PORT"]
    listed = subprocess.run([str(_secagg_bin()), "--home", str(home), "certificate", "list",
                             "--format", "json"], capture_output=True, text=True, check=True)
    assert sorted(p["party_id"] for p in json.loads(listed.stdout)["peers"]) == sorted(
        [comps[0].id, comps[2].id])
    # Every other manager of the component shares that home.
    assert fb.SecaggBiprimeManager(db_path).get(fb.DEFAULT_BIPRIME_ID) is not None
    assert fb.MPCController(node.environ["TMP_DIR"], fb.NODE, node.id).home.path == home
    # A secagg home given directly keeps working.
    assert fb.CertificateManager(str(home)).get(comps[2].id)["party_id"] == comps[2].id


def test_an_adoption_that_cannot_be_done_says_why_and_leaves_nothing(tmp_path):
    comps = layout.federation(tmp_path, free_ports(3))
    node = comps[1]
    db_path = node.environ["DB_PATH"]
    home = fb.home_for.__module__ and (tmp_path / "c1" / "var" / f"db_{node.id}.secagg")
    # A TinyDB entry that secagg refuses (a private key where a certificate belongs).
    doc = json.loads(open(db_path).read())
    doc["Certificates"]["2"]["certificate"] = open(node.environ["MPSPDZ_CERTIFICATE_KEY"]).read()
    with open(db_path, "w") as f:
        json.dump(doc, f)
    with pytest.raises(secagg.InvalidInput) as e:
        fb.CertificateManager(db_path).list()
    assert "document 2" in str(e.value) or "2" in e.value.message, e.value
    assert not home.exists()
    assert [p.name for p in home.parent.iterdir() if p.name.startswith(".")] == []
    # No configuration of that id: NotFound, naming the way to do it by hand.
    other = tmp_path / "c1" / "var" / "db_node_0000.json"
    with pytest.raises(secagg.NotFound) as e:
        fb.SecaggServkeyManager(str(other)).get("secagg_x", "job")
    assert "init --from-fedbiomed" in (e.value.hint or "")
    assert not (tmp_path / "c1" / "var" / "db_node_0000.secagg").exists()
    # Not a Fed-BioMed database name: InvalidInput.
    with pytest.raises(secagg.InvalidInput):
        fb.CertificateManager(str(tmp_path / "whatever.json")).list()


def test_processes_adopting_one_component_at_once_share_one_home(tmp_path):
    comps = layout.federation(tmp_path, free_ports(3))
    db_path = comps[2].environ["DB_PATH"]
    code = ("import json, sys\nfrom secagg import _native\n"
            "print(json.dumps(_native.fedbiomed_home(sys.argv[1]), default=str))")
    procs = [subprocess.Popen([sys.executable, "-c", code, db_path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    home = tmp_path / "c2" / "var" / f"db_{comps[2].id}.secagg"
    assert {r["home"] for r in results} == {str(home)}
    assert sum(1 for r in results if r["created"] and r.get("imported") == 2) >= 1
    # One identity, both certificates, no temporary directory left behind.
    assert fb.CertificateManager(db_path).home.identity()["party_id"] == comps[2].id
    assert len(fb.CertificateManager(db_path).list()) == 2
    assert [p.name for p in home.parent.iterdir() if p.name.startswith(".")] == []


def test_servkey_setup_driven_as_fedbiomed_drives_it(tmp_path):
    """A researcher and three nodes, each its own Fed-BioMed component and process, run
    Fed-BioMed's server-key setup call by call; then a Joye-Libert round with the keys."""
    comps = layout.federation(tmp_path, free_ports(4))
    secagg_id, job_id = "secagg_" + str(uuid.uuid4()), "job_" + str(uuid.uuid4())
    outs = _run_parties(comps, secagg_id, job_id, stagger=1.0)
    parties = [c.id for c in comps]
    for i, (c, out) in enumerate(zip(comps, outs)):
        assert out["get_before"] is None
        tmp = os.path.join(c.environ["TMP_DIR"], "MPC", c.id)
        assert out["output"].startswith(tmp)
        assert out["output"].endswith("Output-P0-0" if i == 0 else f"Input-P{i}-0")
        assert out["output_mode"] == 0o600
        # The key file and the private-key copy are gone once the key is in the store.
        assert not out["output_exists_after_add"] and not out["own_key_copy_exists"]
        entry = out["get_after"]
        assert set(entry) == {"secagg_id", "parties", "job_id", "context"}
        assert (entry["secagg_id"], entry["parties"], entry["job_id"]) == (
            secagg_id, parties, job_id)
    # Read back by this (fresh) process: sk0 + sum sk_i = 0 over the integers.
    keys = [fb.SecaggServkeyManager(c.environ["DB_PATH"]).get(secagg_id, job_id)["context"]
            ["server_key"] for c in comps]
    assert keys[0] < 0 and sum(keys) == 0
    assert [k["context"]["server_key"] for k in (o["get_after"] for o in outs)] == keys
    # A Joye-Libert round as Fed-BioMed's node and researcher run it.
    biprime = fb.SecaggBiprimeManager(comps[0].environ["DB_PATH"]).get(
        fb.DEFAULT_BIPRIME_ID)["context"]["biprime"]
    rng = random.Random(21)
    params = [[rng.uniform(-2, 2) for _ in range(40)] for _ in comps[1:]]
    cts = [fb.SecaggCrypter().encrypt(3, 1, p, keys[i + 1], biprime, weight=5)
           for i, p in enumerate(params)]
    avg = fb.SecaggCrypter().aggregate(1, 3, cts, keys[0], biprime, 15, count=40)
    for k in range(40):
        assert abs(avg[k] - sum(p[k] for p in params) / 3) < 2e-3
    # The same secagg_id again: every party already has it (Fed-BioMed's setup would reply
    # "already existing"); a second add raises Fed-BioMed's conflict.
    with pytest.raises(secagg.Conflict):
        fb.SecaggServkeyManager(comps[1].environ["DB_PATH"]).add(
            secagg_id, parties, {"server_key": keys[1]}, job_id)


def test_servkey_manager_attaches_only_keys_the_home_negotiated(federation, tmp_path):
    fed = federation(2)
    session = secagg.new_session_id()
    assert all(isinstance(r, dict) for r in fed.run(session).values())
    keys = [h.context(session, reveal_key=True)["key"] for h in fed.homes]
    m0 = fb.SecaggServkeyManager(fed.homes[0].path)  # a secagg home given directly
    secagg_id = "secagg_" + str(uuid.uuid4())
    assert m0.get(secagg_id, "job_1") is None  # negotiated, not added yet: no entry
    with pytest.raises(secagg.VerificationFailed):  # another party order
        m0.add(secagg_id, list(reversed(fed.ids)), {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.VerificationFailed):  # not the negotiated key
        m0.add(secagg_id, fed.ids, {"server_key": keys[0] + 1}, "job_1")
    with pytest.raises(secagg.InvalidInput):
        m0.add(secagg_id, fed.ids, {"server_key": str(keys[0])}, "job_1")
    m0.add(secagg_id, fed.ids, {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.Conflict):  # the entry exists
        m0.add(secagg_id, fed.ids, {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.Conflict):  # the key is another entry's
        m0.add("secagg_other", fed.ids, {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.Conflict):
        m0.get(secagg_id, "job_2")
    with pytest.raises(secagg.Conflict):
        m0.remove(secagg_id, "job_2")
    assert m0.get(secagg_id, "job_1")["context"]["server_key"] == keys[0]
    # Another process's manager at the same home sees it at once (one store, no side file).
    assert fb.SecaggServkeyManager(fed.homes[0].path).get(secagg_id, "job_1") is not None
    assert not any(p.name.endswith(".json") for p in fed.homes[0].path.iterdir())
    assert m0.remove(secagg_id, "job_1") is True
    assert m0.get(secagg_id, "job_1") is None and m0.remove(secagg_id, "job_1") is False
    assert fed.homes[0].contexts() == []  # the key is erased with the entry
    # An entry whose key was pruned says so.
    fb.SecaggServkeyManager(fed.homes[1].path).add(secagg_id, fed.ids,
                                                   {"server_key": keys[1]}, None)
    fed.homes[1].delete_context(session)
    with pytest.raises(secagg.NotFound) as e:
        fb.SecaggServkeyManager(fed.homes[1].path).get(secagg_id, None)
    assert "was deleted" in e.value.message


def test_exec_shamir_checks_what_it_is_given(federation, tmp_path):
    fed = federation(2)
    mpc = fb.MPCController(str(tmp_path / "tmp"), fb.NODE, fed.ids[1], home=fed.homes[1].path)
    assert mpc.mpc_data_dir == os.path.join(mpc.tmp_dir, "MP-SPDZ", "Player-Data")
    assert os.path.join("MPC", fed.ids[1]) in mpc.tmp_dir
    # No party files: NotFound, not a raw OSError.
    with pytest.raises(secagg.NotFound):
        mpc.exec_shamir(1, 3, str(tmp_path / "ips"))
    cm = fb.CertificateManager(fed.homes[1].path)
    key = os.path.join(fed.homes[1].path, "identity", "key.pem")
    cert = os.path.join(fed.homes[1].path, "identity", "cert.pem")
    port = fed.homes[1].identity()["port"]
    ip_file, _ = cm.write_mpc_certificates_for_experiment(
        fed.ids, mpc.mpc_data_dir, mpc.tmp_dir, fed.ids[1], "127.0.0.1", port, key, cert)
    with pytest.raises(secagg.InvalidInput):  # party 2 is another party
        mpc.exec_shamir(2, 3, ip_file)
    with pytest.raises(secagg.InvalidInput):
        mpc.exec_shamir(1, 2, ip_file)
    # An ip file that is not the registered endpoints.
    bad = tmp_path / "bad_ips"
    bad.write_text("10.0.0.1:1\n10.0.0.2:2\n10.0.0.3:3\n")
    with pytest.raises(secagg.InvalidInput) as e:
        mpc.exec_shamir(1, 3, str(bad))
    assert "registered endpoints" in e.value.message
    # The node's private-key copy is gone after any exec_shamir.
    assert not os.path.exists(os.path.join(mpc.mpc_data_dir, "P1.key"))
    # No researcher request within the wait: Timeout, naming the researcher.
    ip_file, _ = cm.write_mpc_certificates_for_experiment(
        fed.ids, mpc.mpc_data_dir, mpc.tmp_dir, fed.ids[1], "127.0.0.1", port, key, cert)
    with pytest.raises(secagg.Timeout) as e:
        mpc.exec_shamir(1, 3, ip_file, timeout=0.5)
    assert fed.ids[0] in e.value.message
    assert fed.homes[1].contexts() == []


def test_a_node_serves_only_the_session_of_its_party_list(federation, tmp_path):
    """A researcher asking a waiting node for a session among other parties is refused, and the
    node keeps waiting for its own."""
    fed = federation(3)
    waiting = {}

    def node1():
        try:
            waiting["session"] = fed.homes[1].serve_one_session(fed.ids[:3], wait=20)
        except BaseException as e:  # noqa: B036 - recorded for the test to assert on
            waiting["session"] = e

    t = threading.Thread(target=node1)
    t.start()
    with pytest.raises(secagg.Error) as e:  # nodes 1, 2, 3: not node 1's list
        fed.homes[0].session_run(parties=fed.ids[1:], timeout=10, wait_for_agents=5)
    assert "waits for a session among" in str(e.value.report or e.value)
    server2 = threading.Thread(
        target=lambda: waiting.setdefault("node2", fed.homes[2].serve_one_session(fed.ids[:3], wait=20)))
    server2.start()
    report = fed.homes[0].session_run(parties=fed.ids[1:3], timeout=20, wait_for_agents=10)
    t.join()
    server2.join()
    assert waiting["session"] == report["session_id"] == waiting["node2"]
    keys = [h.context(report["session_id"], reveal_key=True)["key"] for h in fed.homes[:3]]
    assert sum(keys) == 0
    assert all(h.context(report["session_id"])["state"] == "confirmed" for h in fed.homes[:3])


class _StandInExceptions:
    """A stand-in for ``fedbiomed.common.exceptions`` (Fed-BioMed v4.5 is not on PyPI): its four
    classes with v4.5's hierarchy. The real module is checked by
    ``test_against_fedbiomed_v45_source`` where a checkout is given."""

    def __init__(self):
        class FedbiomedError(Exception):
            pass

        for name in ("FedbiomedCertificateError", "FedbiomedMPCControllerError",
                     "FedbiomedSecaggError", "FedbiomedSecaggCrypterError"):
            setattr(self, name, type(name, (FedbiomedError,), {}))
        self.FedbiomedError = FedbiomedError


def test_errors_are_fedbiomeds_classes_when_fedbiomed_is_there(federation, tmp_path, monkeypatch):
    import types
    fake = _StandInExceptions()
    pkg = types.ModuleType("fedbiomed")
    common = types.ModuleType("fedbiomed.common")
    exc = types.ModuleType("fedbiomed.common.exceptions")
    exc.__dict__.update({k: v for k, v in vars(fake).items()})
    monkeypatch.setitem(sys.modules, "fedbiomed", pkg)
    monkeypatch.setitem(sys.modules, "fedbiomed.common", common)
    monkeypatch.setitem(sys.modules, "fedbiomed.common.exceptions", exc)
    pkg.common, common.exceptions = common, exc
    fed = federation(2)
    cm = fb.CertificateManager(fed.homes[0].path)
    with pytest.raises(fake.FedbiomedCertificateError) as e:
        cm.insert("not a certificate", "node_x", "NODE", "127.0.0.1", 14000)
    assert isinstance(e.value, secagg.InvalidInput) and isinstance(e.value, fake.FedbiomedError)
    assert "certificate" in e.value.message
    with pytest.raises(fake.FedbiomedCertificateError) as e:  # not a raw FileNotFoundError
        cm.register_certificate(str(tmp_path / "missing.pem"), "node_x", "127.0.0.1", 14000)
    assert isinstance(e.value, secagg.Error)
    mpc = fb.MPCController(str(tmp_path / "tmp"), fb.NODE, fed.ids[1], home=fed.homes[1].path)
    with pytest.raises(fake.FedbiomedMPCControllerError) as e:
        mpc.exec_shamir(1, 3, str(tmp_path / "no-ip-file"))
    assert isinstance(e.value, secagg.NotFound)
    m = fb.SecaggServkeyManager(fed.homes[0].path)
    with pytest.raises(fake.FedbiomedSecaggError) as e:
        m.add("secagg_x", fed.ids, {"server_key": 1}, "job")
    assert isinstance(e.value, secagg.VerificationFailed)
    with pytest.raises(fake.FedbiomedSecaggCrypterError):
        fb.SecaggCrypter().encrypt(3, 1, [1], 1, int(secagg.DEFAULT_BIPRIME0))
    # Without Fed-BioMed: secagg's classes only.
    monkeypatch.delitem(sys.modules, "fedbiomed.common.exceptions")
    monkeypatch.setitem(sys.modules, "fedbiomed.common.exceptions", None)
    del common.exceptions
    with pytest.raises(secagg.InvalidInput) as e:
        cm.insert("not a certificate", "node_x", "NODE", "127.0.0.1", 14000)
    assert type(e.value) is secagg.InvalidInput


STAND_IN_FEDBIOMED = {
    # A stand-in for Fed-BioMed v4.5's module layout (not its code): the modules that define the
    # replaced classes, and modules that bind them and build instances at import, as
    # node/secagg.py, node/secagg_manager.py and node/round.py do.
    "fedbiomed/__init__.py": "",
    "fedbiomed/common/__init__.py": "",
    "fedbiomed/common/exceptions.py": (
        "class FedbiomedError(Exception): pass\n"
        "class FedbiomedCertificateError(FedbiomedError): pass\n"
        "class FedbiomedMPCControllerError(FedbiomedError): pass\n"
        "class FedbiomedSecaggError(FedbiomedError): pass\n"
        "class FedbiomedSecaggCrypterError(FedbiomedError): pass\n"),
    "fedbiomed/common/tinydb_standin.py": (
        "class _Handle:\n    def __init__(self, name): self.name = name\n"
        "class _Storage:\n    def __init__(self, name): self._handle = _Handle(name)\n"
        "class TinyDB:\n    def __init__(self, path): self._storage = _Storage(path)\n"
        "    @property\n    def storage(self): return self._storage\n"),
    "fedbiomed/common/certificate_manager.py": (
        "from fedbiomed.common.tinydb_standin import TinyDB\n"
        "class CertificateManager:\n"
        "    def __init__(self, db_path=None):\n"
        "        self._db = TinyDB(db_path) if db_path else None\n"),
    "fedbiomed/common/mpc_controller.py": "class MPCController:\n    pass\n",
    "fedbiomed/common/secagg_manager.py": (
        "from fedbiomed.common.tinydb_standin import TinyDB\n"
        "class SecaggServkeyManager:\n"
        "    def __init__(self, db_path): self._db = TinyDB(db_path)\n"
        "class SecaggBiprimeManager(SecaggServkeyManager):\n    pass\n"),
    "fedbiomed/common/secagg/__init__.py": "from ._secagg_crypter import SecaggCrypter\n",
    "fedbiomed/common/secagg/_secagg_crypter.py": "class SecaggCrypter:\n    pass\n",
    "fedbiomed/node/__init__.py": "",
    "fedbiomed/node/secagg_manager.py": (
        "import os\n"
        "from fedbiomed.common.secagg_manager import SecaggServkeyManager, SecaggBiprimeManager\n"
        "SKManager = SecaggServkeyManager(os.environ['DB_PATH'])\n"
        "BPrimeManager = SecaggBiprimeManager(os.environ['DB_PATH'])\n"
        "class SecaggManager:\n"
        "    element2class = {'SERVER_KEY': SKManager, 'BIPRIME': BPrimeManager}\n"),
    "fedbiomed/node/secagg.py": (
        "import os\n"
        "from fedbiomed.common.certificate_manager import CertificateManager\n"
        "from fedbiomed.common.mpc_controller import MPCController\n"
        "_CManager = CertificateManager(db_path=os.environ['DB_PATH'])\n"),
}


def test_install_replaces_fedbiomeds_classes_and_import_time_instances(tmp_path):
    """In a fresh interpreter with a stand-in of Fed-BioMed's module layout whose node modules
    were imported first (so their import-time instances are Fed-BioMed's), install() leaves
    only secagg's classes and instances, on the same database path."""
    for rel, text in STAND_IN_FEDBIOMED.items():
        path = tmp_path / "site" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    comps = layout.federation(tmp_path / "fb", free_ports(3))
    db_path = comps[1].environ["DB_PATH"]
    code = (
        "import json, fedbiomed.node.secagg as ns, fedbiomed.node.secagg_manager as nsm\n"
        "import fedbiomed.common.secagg as cs\n"
        "from secagg import fedbiomed as fb\n"
        "r = fb.install()\n"
        "again = fb.install()\n"
        "from fedbiomed.common.certificate_manager import CertificateManager as late\n"
        "print(json.dumps({\n"
        "  'replaced': r, 'again': again,\n"
        "  'cm': type(ns._CManager) is fb.CertificateManager,\n"
        "  'cls': ns.CertificateManager is fb.CertificateManager and ns.MPCController is fb.MPCController,\n"
        "  'sk': type(nsm.SKManager) is fb.SecaggServkeyManager,\n"
        "  'dict': all(type(v).__module__ == 'secagg.fedbiomed' for v in nsm.SecaggManager.element2class.values()),\n"
        "  'crypter': cs.SecaggCrypter is fb.SecaggCrypter,\n"
        "  'late': late is fb.CertificateManager,\n"
        "  'docs': [d['party_id'] for d in ns._CManager.list()],\n"
        "}))\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "DB_PATH": db_path}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got.pop("replaced") == {"classes": 5, "instances": 5}
    assert got.pop("again") == {"classes": 0, "instances": 0}
    assert got.pop("docs") == [comps[0].id, comps[2].id]
    assert all(got.values()), got
    # The runner: python -m secagg.fedbiomed MODULE ARGS... installs, then runs the module.
    (tmp_path / "site" / "fedbiomed" / "node" / "cli.py").write_text(
        "import sys\nfrom fedbiomed.common import certificate_manager as c\n"
        "print(c.CertificateManager.__module__, sys.argv[1:])\n")
    out = subprocess.run([sys.executable, "-m", "secagg.fedbiomed", "fedbiomed.node.cli",
                          "certificate", "list"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "secagg.fedbiomed ['certificate', 'list']"
    # Without Fed-BioMed: install() says so.
    out = subprocess.run([sys.executable, "-m", "secagg.fedbiomed", "fedbiomed.node.cli"],
                         env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True)
    assert out.returncode != 0 and "cannot import fedbiomed" in out.stderr

def test_secagg_crypter_round_trip_with_negotiated_keys(federation):
    fed = federation(3)
    session = secagg.new_session_id(fedbiomed=True)
    results = fed.run(session)
    assert all(isinstance(r, dict) for r in results.values()), results
    keys = [h.context(session, reveal_key=True)["key"] for h in fed.homes]
    biprime = int(secagg.DEFAULT_BIPRIME0)
    crypter = fb.SecaggCrypter()
    rng = random.Random(4)
    n_params = 150  # more than one plaintext (1024 // 16 = 64 values each for 3 nodes)
    params = [[rng.uniform(-2.5, 2.5) for _ in range(n_params)] for _ in range(3)]
    cts = [crypter.encrypt(3, 2, p, keys[i + 1], biprime, weight=10) for i, p in enumerate(params)]
    assert all(isinstance(c, int) for c in cts[0]) and len(cts[0]) == 3
    avg = crypter.aggregate(2, 3, cts, keys[0], biprime, total_sample_size=30)
    assert len(avg) == n_params
    for k in range(n_params):
        want = sum(p[k] for p in params) / 3
        assert abs(avg[k] - want) < 2e-3, (k, avg[k], want)
    exact = crypter.aggregate(2, 3, cts, keys[0], biprime, 30, count=n_params)
    assert exact == avg
    # Another round's masks do not cancel: the noise is refused, never returned as an average.
    with pytest.raises(secagg.VerificationFailed) as e:
        crypter.aggregate(3, 3, cts, keys[0], biprime, 30, count=n_params)
    assert "round 3 does not decrypt to an average" in e.value.message
    # An altered ciphertext: the same.
    altered = [list(c) for c in cts]
    altered[1][0] += 1
    with pytest.raises(secagg.VerificationFailed):
        crypter.aggregate(2, 3, altered, keys[0], biprime, 30, count=n_params)
    # Fed-BioMed's argument checks.
    with pytest.raises(secagg.InvalidInput):
        crypter.encrypt(3, 2, [1, 2, 3], keys[1], biprime)
    with pytest.raises(secagg.InvalidInput):
        crypter.encrypt(3, 2, [1.0], str(keys[1]), biprime)
    with pytest.raises(secagg.InvalidInput):
        crypter.aggregate(2, 4, cts, keys[0], biprime, 30)
    with pytest.raises(secagg.InvalidInput):
        crypter.encrypt(3, 2, [1.0], keys[1], biprime + 1)  # an even modulus


def test_crypter_ciphertexts_decrypt_through_a_home(federation):
    """The adapter's ciphertexts are the core's: the same key and round give the same values."""
    fed = federation(2)
    session = secagg.new_session_id()
    assert all(isinstance(r, dict) for r in fed.run(session).values())
    params = [0.5, -0.25, 1.5]
    key1 = fed.homes[1].context(session, reveal_key=True)["key"]
    via_home = fed.homes[1].encrypt(session, 1, params)
    via_crypter = fb.SecaggCrypter().encrypt(2, 1, params, key1, int(secagg.DEFAULT_BIPRIME0))
    assert [int(c) for c in via_home["ciphertexts"]] == via_crypter


def test_biprime_manager_defaults(tmp_path):
    home = secagg.Home(tmp_path / "me")
    home.init("node", ip="127.0.0.1", port=15000)
    bm = fb.SecaggBiprimeManager(home.path)
    entry = bm.get(fb.DEFAULT_BIPRIME_ID)
    assert entry == {
        "secagg_id": "default_biprime0",
        "parties": None,
        "context": {"biprime": int(secagg.DEFAULT_BIPRIME0), "max_keysize": 2048},
    }
    assert type(entry["context"]["biprime"]) is int
    assert entry["context"]["biprime"].bit_length() == 1024
    assert bm.get("secagg_" + secagg.new_session_id()) is None
    # A dynamic biprime is stored as Fed-BioMed stores it (v4.5.0's is a dummy, max_keysize 0),
    # once; it can be removed, a default one cannot; an absent one: False.
    bm.add("secagg_x", ["researcher_a", "node_b"], {"biprime": 15, "max_keysize": 0})
    assert bm.get("secagg_x") == {"secagg_id": "secagg_x", "parties": ["researcher_a", "node_b"],
                                  "context": {"biprime": 15, "max_keysize": 0}}
    with pytest.raises(secagg.Conflict):
        bm.add("secagg_x", None, {"biprime": 15, "max_keysize": 0})
    with pytest.raises(secagg.Conflict):
        bm.add(fb.DEFAULT_BIPRIME_ID, None, {"biprime": 15, "max_keysize": 0})
    with pytest.raises(secagg.InvalidInput):
        bm.add("secagg_y", None, {"biprime": "15", "max_keysize": 0})
    # ... and refused as a Joye-Libert modulus.
    with pytest.raises(secagg.InvalidInput):
        fb.SecaggCrypter().encrypt(2, 1, [0.5], 1, bm.get("secagg_x")["context"]["biprime"])
    assert bm.remove("secagg_x") is True and bm.get("secagg_x") is None
    with pytest.raises(secagg.InvalidInput):
        bm.remove(fb.DEFAULT_BIPRIME_ID)
    assert bm.remove("secagg_unknown") is False

    # update_default_biprimes from Fed-BioMed-shaped files (its biprime0.json, and another).
    d = tmp_path / "default_biprimes"
    d.mkdir()
    n0 = int(secagg.DEFAULT_BIPRIME0)
    (d / "biprime0.json").write_text(
        '{"secagg_id": "default_biprime0", "biprime": %d, "max_keysize": 2048}' % n0)
    other = n0 - 2**1000  # odd, 1024 bits: a value secagg accepts
    (d / "biprime1.json").write_text(json.dumps(
        {"secagg_id": "default_biprime1", "biprime": other, "max_keysize": 2048}))
    (d / "README.txt").write_text("not a biprime file: ignored")
    bm.update_default_biprimes(True, d)
    assert bm.get("default_biprime1")["context"]["biprime"] == other
    assert bm.get("default_biprime0")["context"]["biprime"] == n0
    # Kept in the home: another manager of the same home sees them.
    assert fb.SecaggBiprimeManager(home.path).get("default_biprime1") is not None

    # A refused file changes nothing.
    (d / "bad.json").write_text(json.dumps(
        {"secagg_id": "even", "biprime": 2**1023, "max_keysize": 2048}))
    with pytest.raises(secagg.InvalidInput) as e:
        bm.update_default_biprimes(True, d)
    assert "bad.json" in e.value.message
    assert bm.get("default_biprime1") is not None
    (d / "bad.json").write_text(json.dumps({"secagg_id": "", "biprime": n0, "max_keysize": 2048}))
    with pytest.raises(secagg.InvalidInput):
        bm.update_default_biprimes(True, d)
    (d / "bad.json").write_text("{not json")
    with pytest.raises(secagg.InvalidInput):
        bm.update_default_biprimes(True, d)
    (d / "bad.json").unlink()
    # Not allowed: no default biprime any more.
    bm.update_default_biprimes(False, d)
    assert bm.get("default_biprime0") is None and bm.get("default_biprime1") is None


def test_biprime_manager_biprime_encrypts_with_the_home(federation):
    fed = federation(2)
    session = secagg.new_session_id()
    fed.run(session)
    biprime = fb.SecaggBiprimeManager(fed.homes[0].path).get(fb.DEFAULT_BIPRIME_ID)
    n = biprime["context"]["biprime"]
    files = [fed.homes[1].encrypt(session, 1, [0.5], biprime=n),
             fed.homes[2].encrypt(session, 1, [1.5], biprime=n)]
    assert abs(fed.homes[0].decrypt(session, 1, files, biprime=n)["average"][0] - 1.0) < 1e-3


def test_secagg_fedbiomed_1_installs_at_interpreter_start_through_the_pth_file(tmp_path):
    """`SECAGG_FEDBIOMED=1 fedbiomed_run …`: the wheel's secagg_fedbiomed.pth (run by `site`, here
    through site.addsitedir on a directory holding it) makes Fed-BioMed's modules load with
    secagg's classes, import-time instances included; unset, nothing of secagg is imported."""
    for rel, text in STAND_IN_FEDBIOMED.items():
        path = tmp_path / "site" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pth_dir = tmp_path / "pth"
    pth_dir.mkdir()
    (pth_dir / "secagg_fedbiomed.pth").write_text(
        (REPO / "secagg-py" / "secagg_fedbiomed.pth").read_text())
    comps = layout.federation(tmp_path / "fb", free_ports(3))
    code = (
        "import site, sys, json\n"
        f"site.addsitedir({str(pth_dir)!r})\n"
        "loaded_early = 'secagg' in sys.modules\n"
        "import fedbiomed.node.secagg as ns, fedbiomed.node.secagg_manager as nsm\n"
        "from fedbiomed.common.secagg import SecaggCrypter\n"
        "print(json.dumps({'early': loaded_early,\n"
        "  'cm': type(ns._CManager).__module__, 'sk': type(nsm.SKManager).__module__,\n"
        "  'crypter': SecaggCrypter.__module__}))\n")
    base = {**os.environ, "PYTHONPATH": str(tmp_path / "site"),
            "DB_PATH": comps[1].environ["DB_PATH"]}
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        env={**base, "SECAGG_FEDBIOMED": "1"})
    assert on.returncode == 0, on.stderr
    assert json.loads(on.stdout) == {"early": True, "cm": "secagg.fedbiomed",
                                     "sk": "secagg.fedbiomed", "crypter": "secagg.fedbiomed"}
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**base, "SECAGG_FEDBIOMED": "0"})
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout) == {"early": False, "cm": "fedbiomed.common.certificate_manager",
                                      "sk": "fedbiomed.common.secagg_manager",
                                      "crypter": "fedbiomed.common.secagg._secagg_crypter"}
