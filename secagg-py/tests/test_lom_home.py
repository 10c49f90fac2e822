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
