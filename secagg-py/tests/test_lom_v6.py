"""secagg's LOM against fedbiomed 6.4.1's own code (the PyPI package, which scripts/test installs
into a prefix of its own, `SECAGG_FEDBIOMED_V6`): on random inputs for 2 to 10 nodes, secagg's
masked vectors, sums, float pipeline and DH-derived secrets equal fedbiomed's, value for value.
Without that package the test fails: it does not skip."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import secagg
from secagg import _native

HERE = Path(__file__).resolve().parent


def fedbiomed_v6(request: dict) -> dict:
    """fedbiomed 6.4.1's outputs for `request` (fedbiomed_v6_reference.py, its own process)."""
    prefix = os.environ.get("SECAGG_FEDBIOMED_V6")
    found = sorted(Path(prefix).glob("lib/python3*/site-packages/fedbiomed")) if prefix else []
    if not found:
        pytest.fail("SECAGG_FEDBIOMED_V6 does not name the prefix fedbiomed 6.4.1 was installed "
                    "into (scripts/test installs it with pip install --prefix)")
    # fedbiomed looks for its package data (share/fedbiomed) under the user base.
    env = {**os.environ, "PYTHONUSERBASE": prefix,
           "PYTHONPATH": os.pathsep.join([str(found[-1].parent), str(HERE / "v6_stubs")])}
    run = subprocess.run([sys.executable, str(HERE / "fedbiomed_v6_reference.py"), json.dumps(request)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize("nodes", [2, 3, 5, 10])
def test_lom_equals_fedbiomed_6_4_1(nodes):
    rng = random.Random(nodes)
    secagg_id = f"secagg_{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    ids = sorted(f"node_{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in range(nodes))
    rng.shuffle(ids)
    secrets = {"|".join(sorted((a, b))): bytes(rng.getrandbits(8) for _ in range(32))
               for i, a in enumerate(ids) for b in ids[i + 1:]}
    n_values = rng.randint(1, 300)
    # fedbiomed 6.4 masks u64 words: values below 2^(63 - ceil(log2 n)).
    room = 63 - (nodes - 1).bit_length()
    request = {
        "nonce_hex": bytes(rng.getrandbits(8) for _ in range(16)).hex(),
        "secagg_id": secagg_id,
        "secrets": {k: base64.b64encode(v).decode() for k, v in secrets.items()},
        "node_ids": ids,
        "tau": rng.randint(0, 10_000),
        "x": [[rng.getrandbits(room) for _ in range(n_values)] for _ in ids],
        "params": [[rng.uniform(-4, 4) for _ in range(n_values)] for _ in ids],
        "weights": [rng.randint(1, 2**16 // nodes) for _ in ids],
        "clipping_range": rng.choice([None, 3, 5]),
    "too_big": 1 << room,
    "jl": {
        "biprime": secagg.DEFAULT_BIPRIME0,
        "keys": [str(rng.getrandbits(2040)) for _ in ids],
        "params": [[rng.uniform(-4, 4) for _ in range(rng.randint(1, 70))]] * nodes,
    },
    }
    v6 = fedbiomed_v6(request)

    def secrets_of(me):
        return {p: secrets["|".join(sorted((me, p)))] for p in ids if p != me}

    nonce = bytes.fromhex(request["nonce_hex"])
    mine = [_native.lom_protect(me, secrets_of(me), request["tau"], x, ids, nonce)
            for me, x in zip(ids, request["x"])]
    assert mine == v6["protect"]
    assert [sum(col) % 2**64 for col in zip(*mine)] == v6["aggregate"]
    assert [sum(col) for col in zip(*request["x"])] == v6["aggregate"]
    encrypted = [_native.lom_encrypt(me, secrets_of(me), request["tau"], p, ids,
                                     _native.lom_v6_nonce(secagg_id), weight=w,
                                     clipping_range=request["clipping_range"])[0]
                 for me, p, w in zip(ids, request["params"], request["weights"])]
    assert encrypted == v6["encrypt"]
    assert _native.lom_decrypt(encrypted, sum(request["weights"]),
                               request["clipping_range"]) == v6["average"]
    # Refusals agree too: a value one bit too large for the sum over n nodes.
    too_big = [[1 << room] for _ in ids]
    with pytest.raises(secagg.InvalidInput):
        _native.lom_protect(ids[0], secrets_of(ids[0]), 1, too_big[0], ids, nonce)
    assert v6["refuses_too_big"] is True
    # Joye-Libert with v6's encoding: the same ciphertexts, the same averages.
    jl = request["jl"]
    keys = [int(k) for k in jl["keys"]]
    cts = [_native.jl_v6_encrypt(nodes, request["tau"], p, k, int(jl["biprime"]),
                                 clipping_range=request["clipping_range"], weight=w)[0]
           for p, k, w in zip(jl["params"], keys, request["weights"])]
    assert [[str(c) for c in cs] for cs in cts] == v6["jl_encrypt"]
    assert _native.jl_v6_decrypt(request["tau"], nodes, cts, -sum(keys), int(jl["biprime"]),
                                 sum(request["weights"]), request["clipping_range"],
                                 len(jl["params"][0])) == v6["jl_average"]
    for d in v6["dh"]:
        mine = _native.lom_dh_secret(bytes.fromhex(d["scalar_u"]), bytes.fromhex(d["public_v"]),
                                     secagg_id.encode(), d["u"], d["v"])
        assert mine.hex() == d["secret"]
