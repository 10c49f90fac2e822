"""secagg.fedbiomed: Fed-BioMed v4.5.0's calls, with Fed-BioMed-shaped inputs and outputs."""

from __future__ import annotations

import json
import os
import random
import stat

import pytest

import secagg
from secagg import fedbiomed as fb
from conftest import real_mpspdz_root

DOC_KEYS = {"party_id", "certificate", "ip", "port", "component"}


def test_certificate_manager_documents(federation, tmp_path):
    fed = federation(2)
    # A fourth party's home, whose manager registers the federation's certificates.
    me = secagg.Home(tmp_path / "me")
    me.init("node", ip="127.0.0.1", port=15000)
    cm = fb.CertificateManager(db_path=me.path)
    researcher, node1, node2 = (h.bundle() for h in fed.homes)

    def position(party_id):  # a document id is the party's 1-based position in list()
        return [d["party_id"] for d in cm.list()].index(party_id) + 1

    # insert: PEM text, component as Fed-BioMed gives it (a string or an enum's name).
    doc_id = cm.insert(researcher["certificate"], researcher["party_id"], fb.RESEARCHER,
                       "127.0.0.1", researcher["port"])
    assert doc_id == position(researcher["party_id"]) == 1
    doc_id = cm.insert(node1["certificate"], node1["party_id"], "NODE", "10.221.0.3", 14002)
    assert doc_id == position(node1["party_id"])
    doc = cm.get(node1["party_id"])
    assert set(doc) == DOC_KEYS
    assert doc["certificate"].strip() == node1["certificate"].strip()
    assert (doc["ip"], doc["port"], doc["component"]) == ("10.221.0.3", 14002, "NODE")
    assert cm.get("node_unknown") is None
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
    assert doc_id == position(node2["party_id"])
    assert cm.get(node2["party_id"])["component"] == "NODE"
    docs = cm.list(verbose=True)
    assert [d["party_id"] for d in docs] == [p["party_id"] for p in me.peers()]
    assert all(set(d) == DOC_KEYS for d in docs) and len(docs) == 3
    # delete: the removed ids, then none.
    before = position(node2["party_id"])
    assert cm.delete(node2["party_id"]) == [before]
    assert cm.delete(node2["party_id"]) == []
    assert cm.get(node2["party_id"]) is None


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
    with pytest.raises(secagg.InvalidInput):
        fb.CertificateManager.generate_self_signed_ssl_certificate("relative/dir")


def test_mpc_controller_and_servkey_manager(federation, tmp_path):
    fed = federation(2)
    secagg_id = secagg.new_session_id(fedbiomed=True)
    assert secagg_id.startswith("secagg_")
    controllers = [
        fb.MPCController(str(tmp_path / "tmp"), "NODE" if i else "RESEARCHER", fed.ids[i],
                         home=h.path)
        for i, h in enumerate(fed.homes)
    ]
    c0 = controllers[0]
    assert c0.mpc_data_dir.startswith(c0.tmp_dir) and os.path.isdir(c0.mpc_data_dir)
    assert c0.mpc_data_dir.endswith(os.path.join("MP-SPDZ", "Player-Data"))
    assert os.path.join("MPC", fed.ids[0]) in c0.tmp_dir
    # A wrong party number is refused before any traffic.
    with pytest.raises(secagg.InvalidInput):
        c0.exec_shamir(1, 3, None, secagg_id=secagg_id, parties=fed.ids)
    results = fed.run(secagg_id, call=lambda i, h: controllers[i].exec_shamir(
        i, 3, None, secagg_id=secagg_id, parties=fed.ids, timeout=20.0))
    assert results == {0: secagg_id, 1: secagg_id, 2: secagg_id}, results
    managers = [fb.SecaggServkeyManager(h.path) for h in fed.homes]
    entries = [m.get(secagg_id, "job_1") for m in managers]
    for e in entries:
        assert set(e) == {"secagg_id", "parties", "context", "job_id", "secagg_elem"}
        assert e["secagg_id"] == secagg_id and e["parties"] == fed.ids
        assert e["secagg_elem"] == fb.SERVER_KEY_ELEMENT and e["job_id"] == "job_1"
    keys = [e["context"]["server_key"] for e in entries]
    assert keys[0] + keys[1] + keys[2] == 0 and keys[0] < 0
    # add: checked against the negotiated context; once only; then bound to its job.
    m0 = managers[0]
    with pytest.raises(secagg.InvalidInput):
        m0.add(secagg_id, list(reversed(fed.ids)), {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.VerificationFailed):
        m0.add(secagg_id, fed.ids, {"server_key": keys[0] + 1}, "job_1")
    m0.add(secagg_id, fed.ids, {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.Conflict):
        m0.add(secagg_id, fed.ids, {"server_key": keys[0]}, "job_1")
    with pytest.raises(secagg.Conflict):
        m0.get(secagg_id, "job_2")
    with pytest.raises(secagg.Conflict):
        m0.remove(secagg_id, "job_2")
    with pytest.raises(secagg.NotFound):
        m0.add(secagg.new_session_id(fedbiomed=True), fed.ids, {"server_key": 1}, "job_1")
    assert m0.remove(secagg_id, "job_1") is True
    assert m0.get(secagg_id, "job_1") is None
    assert m0.remove(secagg_id, "job_1") is False
    assert fed.homes[0].contexts() == []
    # The ip file, when given, must match the registered endpoints.
    bad_ips = tmp_path / "ips"
    bad_ips.write_text("10.0.0.1:1\n10.0.0.2:2\n10.0.0.3:3\n")
    with pytest.raises(secagg.InvalidInput):
        controllers[1].exec_shamir(1, 3, str(bad_ips), secagg_id=secagg.new_session_id(),
                                   parties=fed.ids)


def test_exec_shamir_with_real_mp_spdz(federation, tmp_path):
    """Fed-BioMed's call, ``exec_shamir(..., engine="mp-spdz")``, with a real MP-SPDZ build
    (found through ``MPSPDZ_ROOT``, as Fed-BioMed's nodes find theirs): every party's
    ``shamir-party.x`` runs and the keys land where ``SecaggServkeyManager`` reads them."""
    real_mpspdz_root()
    fed = federation(2)
    secagg_id = secagg.new_session_id(fedbiomed=True)
    controllers = [
        fb.MPCController(str(tmp_path / "tmp"), "NODE" if i else "RESEARCHER", fed.ids[i],
                         home=h.path)
        for i, h in enumerate(fed.homes)
    ]
    results = fed.run(secagg_id, call=lambda i, h: controllers[i].exec_shamir(
        i, 3, None, secagg_id=secagg_id, parties=fed.ids, timeout=60.0, engine="mp-spdz"))
    assert results == {0: secagg_id, 1: secagg_id, 2: secagg_id}, results
    keys = [fb.SecaggServkeyManager(h.path).get(secagg_id, "job_1")["context"]["server_key"]
            for h in fed.homes]
    assert keys[0] + keys[1] + keys[2] == 0 and keys[0] < 0
    assert all(h.context(secagg_id)["engine"] == "mp-spdz" for h in fed.homes)


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
    # Dynamic biprimes are not taken; default ones are not removed; absent ones: False.
    with pytest.raises(secagg.InvalidInput):
        bm.add("secagg_x", ["researcher_a", "node_b"], {"biprime": 15, "max_keysize": 0})
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
