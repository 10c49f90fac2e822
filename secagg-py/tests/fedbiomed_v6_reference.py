"""Runs fedbiomed 6.4.1's own secagg code (the PyPI package) on the inputs of a JSON request
(argv[1]) and prints its outputs as JSON: the reference secagg's LOM is compared with
(`test_lom_v6.py`). Run with PYTHONPATH = the package's directory and `v6_stubs` (torch)."""

import base64
import json
import sys

from cryptography.hazmat.primitives import serialization
from fedbiomed.common.secagg import DHKey, DHKeyAgreement, LOM, SecaggCrypter, SecaggLomCrypter

req = json.loads(sys.argv[1])
out = {}

# LOM.protect / aggregate for every node, with raw integer inputs.
nonce = bytes.fromhex(req["nonce_hex"])
secrets = {pair: base64.b64decode(s) for pair, s in req["secrets"].items()}
ids = req["node_ids"]


def secrets_of(me):
    return {p: secrets["|".join(sorted((me, p)))] for p in ids if p != me}


lom = LOM(nonce)
out["protect"] = [lom.protect(me, secrets_of(me), req["tau"], x, ids)
                  for me, x in zip(ids, req["x"])]
out["aggregate"] = LOM().aggregate(out["protect"])
try:
    lom.protect(ids[0], secrets_of(ids[0]), 1, [req["too_big"]], ids)
    out["refuses_too_big"] = False
except Exception:  # noqa: BLE001 - fedbiomed raises its FedbiomedSecaggError
    out["refuses_too_big"] = True

# The float pipeline: SecaggLomCrypter.encrypt at every node, aggregate at the researcher.
crypter = SecaggLomCrypter(nonce=req["secagg_id"])
out["encrypt"] = [crypter.encrypt(current_round=req["tau"], node_id=me, params=p,
                                  pairwise_secrets=secrets_of(me), node_ids=ids,
                                  clipping_range=req["clipping_range"], weight=w)
                  for me, p, w in zip(ids, req["params"], req["weights"])]
out["average"] = SecaggLomCrypter().aggregate(out["encrypt"], sum(req["weights"]),
                                             clipping_range=req["clipping_range"])

# Joye-Libert with v6's encoding: SecaggCrypter.encrypt at every node with its key, aggregate
# with the server key -sum(sk_i).
jl = req["jl"]
biprime = int(jl["biprime"])
keys_jl = [int(k) for k in jl["keys"]]
out["jl_encrypt"] = [SecaggCrypter().encrypt(num_nodes=len(ids), current_round=req["tau"],
                                             params=p, key=k, biprime=biprime,
                                             clipping_range=req["clipping_range"], weight=w)
                     for p, k, w in zip(jl["params"], keys_jl, req["weights"])]
out["jl_average"] = SecaggCrypter().aggregate(
    current_round=req["tau"], num_nodes=len(ids), params=out["jl_encrypt"], key=-sum(keys_jl),
    biprime=biprime, total_sample_size=sum(req["weights"]),
    clipping_range=req["clipping_range"], num_expected_params=len(jl["params"][0]))
out["jl_encrypt"] = [[str(c) for c in cs] for cs in out["jl_encrypt"]]

# DH: fresh v6 keys; the agreed secret, and each key's scalar and SEC1 point for secagg.
keys = [DHKey() for _ in ids]
out["dh"] = []
for (u, ku), (v, kv) in [((ids[0], keys[0]), (ids[1], keys[1])),
                         ((ids[-1], keys[-1]), (ids[0], keys[0]))]:
    agreed = DHKeyAgreement(u, ku, req["secagg_id"].encode()).agree(v, kv.export_public_key())
    out["dh"].append({
        "u": u, "v": v,
        "scalar_u": ku.private_key.private_numbers().private_value.to_bytes(32, "big").hex(),
        "public_v": kv.public_key.public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint).hex(),
        "secret": agreed.hex(),
    })
print(json.dumps(out))
