"""LOM contexts from Python: ``session_run(scheme="lom")`` through real agents, then
``Home.lom_encrypt`` at every node and ``Home.lom_decrypt`` at the researcher, NumPy arrays in and
out; the refusals (a round twice, a JL context, a missing node)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import secagg
from test_roster_agent import _roster_federation


def test_a_lom_round_from_python_gives_the_weighted_average(tmp_path, agents):
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 3)
    running = [agents(h) for h in homes]
    report = researcher.session_run(all=True, timeout=30, scheme="lom")
    assert report["ok"] is True, report
    session = report["session_id"]
    for h in [researcher] + homes:
        ctx = h.context(session)
        assert ctx["scheme"] == "lom" and ctx["state"] == "confirmed", ctx
        assert "key" not in h.context(session, reveal_key=True)

    rng = np.random.default_rng(7)
    params = [rng.uniform(-1, 1, 10_000) for _ in homes]
    weights = [3, 5, 11]
    files = []
    for h, p, w in zip(homes, params, weights):
        f = h.lom_encrypt(session, 1, p, weight=w)
        assert isinstance(f["values"], np.ndarray) and f["values"].dtype == np.uint64
        assert f["count"] == 10_000 and f["clipped"] == (0, 0)
        files.append(f)
    # One file through a JSON file on disk, as the CLI writes it.
    on_disk = tmp_path / "node1.json"
    as_json = dict(files[0])
    as_json["values"] = as_json["values"].tolist()
    del as_json["clipped"]
    on_disk.write_text(json.dumps(as_json))
    avg = researcher.lom_decrypt(session, 1, [on_disk, files[1], files[2]])
    want = sum(w * p for p, w in zip(params, weights)) / sum(weights)
    assert isinstance(avg["average"], np.ndarray)
    # v6's quantisation truncates: up to two steps of 2c/(T-1) = 6/8191 off.
    assert np.max(np.abs(avg["average"] - want)) < 2 * 6 / 8191
    assert avg["total_weight"] == sum(weights) and avg["nodes"] == 3

    # The same round twice: refused, nothing returned.
    with pytest.raises(secagg.Conflict):
        homes[0].lom_encrypt(session, 1, params[0], weight=3)
    assert homes[0].context(session)["rounds_used"] == [1]
    # A node's vector missing: refused, no average.
    with pytest.raises(secagg.InvalidInput):
        researcher.lom_decrypt(session, 1, files[1:])
    # Another round's vector in place of one: its masks do not cancel; refused, not averaged.
    other = homes[2].lom_encrypt(session, 2, params[2], weight=11)
    with pytest.raises(secagg.InvalidInput):
        researcher.lom_decrypt(session, 1, [files[0], files[1], other])
    for a in running:
        a.stop()


def test_lom_calls_refuse_a_joye_libert_context(tmp_path, agents):
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 2)
    running = [agents(h) for h in homes]
    session = researcher.session_run(all=True, timeout=30)["session_id"]
    with pytest.raises(secagg.InvalidInput) as e:
        homes[0].lom_encrypt(session, 1, np.zeros(3))
    assert "not a LOM one" in e.value.message
    for a in running:
        a.stop()


def test_a_secagg_lom_context_drives_fedbiomed_6_4_1s_own_crypter(tmp_path, agents):
    """The documented way for a v6 node: its DH context from secagg's store
    (``secagg.fedbiomed.v6.dh_context``), agreed between the agents, fed to fedbiomed 6.4.1's
    own ``SecaggLomCrypter``; its masked vectors equal ``Home.lom_encrypt(profile="fedbiomed-v6")``
    and secagg's drop-in ``SecaggLomCrypter``, value for value."""
    import random

    from secagg.fedbiomed import v6
    from test_lom_v6 import fedbiomed_v6

    researcher, homes, _, _, _ = _roster_federation(tmp_path, 3)
    running = [agents(h) for h in homes]
    session = researcher.session_run(all=True, timeout=30, scheme="lom")["session_id"]
    entries = [v6.dh_context(h, session) for h in homes]
    ids = entries[0]["parties"]
    assert sorted(ids) == sorted(h.identity()["party_id"] for h in homes)
    by_id = {h.identity()["party_id"]: (h, e) for h, e in zip(homes, entries)}
    secrets = {}
    for me, (_, e) in by_id.items():
        for peer, s in v6.secrets_of(e).items():
            pair = "|".join(sorted((me, peer)))
            assert secrets.setdefault(pair, s) == s, "both ends hold the same secret"
    rng = random.Random(3)
    params = [[rng.uniform(-3, 3) for _ in range(50)] for _ in ids]
    weights = [rng.randint(1, 1000) for _ in ids]
    tau = 4
    request = {
        "nonce_hex": bytes(16).hex(),
        "secagg_id": entries[0]["secagg_id"],
        "secrets": {k: __import__("base64").b64encode(v).decode() for k, v in secrets.items()},
        "node_ids": ids,
        "tau": tau,
        "x": [[1, 2, 3] for _ in ids],
        "params": params,
        "weights": weights,
        "clipping_range": 3,
        "too_big": 1 << 62,
        "jl": {"biprime": secagg.DEFAULT_BIPRIME0, "keys": ["1", "2", "3"], "params": [[0.5]] * 3},
    }
    theirs = fedbiomed_v6(request)["encrypt"]
    crypter = v6.SecaggLomCrypter(nonce=entries[0]["secagg_id"])
    for me, p, w, want in zip(ids, params, weights, theirs):
        home, entry = by_id[me]
        ours = home.lom_encrypt(session, tau, np.array(p), weight=w, profile="fedbiomed-v6")
        assert ours["values"].tolist() == want
        assert crypter.encrypt(tau, me, p, v6.secrets_of(entry), ids, weight=w) == want
    avg = v6.SecaggLomCrypter().aggregate(theirs, sum(weights), clipping_range=3)
    plain = [sum(w * p[k] for p, w in zip(params, weights)) / sum(weights) for k in range(50)]
    assert max(abs(a - b) for a, b in zip(avg, plain)) < 2 * 6 / 8191
    # The researcher holds no DH context: refused.
    with pytest.raises(secagg.InvalidInput):
        v6.dh_context(researcher, session)
    for a in running:
        a.stop()


def test_v6_drop_ins_refuse_what_v6_would_average_into_noise():
    from secagg.fedbiomed import v6

    ids = ["node_a", "node_b", "node_c"]
    secret = {("node_a", "node_b"): b"\x01" * 32, ("node_a", "node_c"): b"\x02" * 32,
              ("node_b", "node_c"): b"\x03" * 32}

    def secrets_of(me):
        return {p: secret[tuple(sorted((me, p)))] for p in ids if p != me}

    crypter = v6.SecaggLomCrypter(nonce="secagg_7f3c9a52-1b2d-4e8f-9a6b-3c4d5e6f7a8b")
    masked = [crypter.encrypt(1, me, [0.5, -0.5], secrets_of(me), ids, weight=10) for me in ids]
    assert max(abs(a - b) for a, b in zip(crypter.aggregate(masked, 30), [0.5, -0.5])) < 2e-3
    with pytest.raises(secagg.VerificationFailed):
        crypter.aggregate(masked[:2], 20)
    lom = v6.LOM(b"\x00" * 16)
    ys = [lom.protect(me, secrets_of(me), 7, [5, 6], ids) for me in ids]
    assert lom.aggregate(ys) == [15, 18]
    with pytest.raises(secagg.InvalidInput):
        v6.LOM(b"short")


def test_a_round_survives_a_node_dropping_out_from_python(tmp_path, agents):
    """Issue 24 through ``Home``: five nodes, threshold three; one node dies after sharing its
    self-mask (its agent killed), the researcher unmasks the four others' exact average and names
    the dropped node; fewer files than the threshold raise ``InvalidInput`` and give nothing."""
    researcher, homes, _, _, _ = _roster_federation(tmp_path, 5)
    running = [agents(h) for h in homes]
    report = researcher.session_run(all=True, timeout=30, scheme="lom", dropout_threshold=3)
    assert report["ok"] is True, report
    session = report["session_id"]
    for h in [researcher] + homes:
        assert h.context(session)["dropout_threshold"] == 3
    # A threshold a minority reaches is refused before any agent is asked.
    with pytest.raises(secagg.InvalidInput) as e:
        researcher.session_run(all=True, timeout=30, scheme="lom", dropout_threshold=2)
    assert "at most half" in e.value.message

    rng = np.random.default_rng(24)
    params = [rng.uniform(-1, 1, 1_000) for _ in homes]
    weights = [2, 3, 5, 7, 11]
    files = {}
    for i, (h, p, w) in enumerate(zip(homes, params, weights)):
        f = h.lom_encrypt(session, 1, p, weight=w)
        assert f["dropout_threshold"] == 3
        assert len(f["shares"]["holders"]) == 5 - min(i, 1), f["shares"]
        files[i] = f
        if i == 0:
            # Node 0 shared its self-mask and masked, but its vector never reaches the
            # researcher and its agent dies.
            running[0].stop()
    survivors = [1, 2, 3, 4]
    with pytest.raises(secagg.InvalidInput) as e:
        researcher.lom_decrypt(session, 1, [files[i] for i in survivors[:2]])
    assert "fewer than its dropout threshold 3" in e.value.message
    avg = researcher.lom_decrypt(session, 1, [files[i] for i in survivors])
    want = sum(weights[i] * params[i] for i in survivors) / sum(weights[i] for i in survivors)
    assert np.max(np.abs(avg["average"] - want)) < 2 * 6 / 8191
    assert avg["nodes"] == 4
    assert avg["dropouts"]["before_masking"] == [homes[0].identity()["party_id"]]
    assert avg["dropouts"]["while_unmasking"] == []
    # Each survivor revealed its round seed with node 0 and a share of every survivor.
    for i in survivors:
        kinds = {r["party"]: r["revealed"] for r in homes[i].context(session)["reveals"]}
        assert kinds.pop(homes[0].identity()["party_id"]) == "seed"
        assert set(kinds.values()) == {"share"} and len(kinds) == 4
    for a in running[1:]:
        a.stop()
