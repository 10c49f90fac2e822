"""Flower SecAgg+ primitives, timed in-process: the reference figures for our own SecAgg+ numbers.

Drives flwr's own functions (``flwr.common.secure_aggregation``, ``flwr.supercore.primitives``)
exactly as ``flwr/client/mod/secure_aggregation/secaggplus_mod.py`` (client) and
``flwr/server/workflow/secure_aggregation/secaggplus_workflow.py`` (server) call them, without a
Flower server, grid or messages. 10 clients, 1,000,000 float32 parameters, num_shares 10,
reconstruction threshold 6, Flower's defaults (modulus 2^32, quantization range 2^22, clipping
+-8.0, max_weight 1000). Inputs (key pairs, shares, masked vectors of 10 simulated clients) are built
outside the timed regions; each region is the median of 5 runs. The unmasked sums are checked against
the true weighted average of the clients' vectors, so a wrong measurement fails loudly.

Not run by CI. flwr is not a dependency of this project: install it in a venv outside the repo,

    python3 -m venv /tmp/flwr-venv && /tmp/flwr-venv/bin/pip install flwr==1.42.0
    /tmp/flwr-venv/bin/python benches/flower_secaggplus.py
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np
from flwr import __version__ as flwr_version
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt, encrypt, generate_shared_key)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine, factor_extract, get_parameters_shape, parameters_addition, parameters_mod,
    parameters_multiply, parameters_subtraction)
from flwr.common.secure_aggregation.quantization import dequantize, quantize
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen, share_keys_plaintext_concat, share_keys_plaintext_separate)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key, bytes_to_public_key, generate_key_pairs, private_key_to_bytes,
    public_key_to_bytes)

N_PARAMS, N_CLIENTS, NUM_SHARES, THRESHOLD, N_DROPPED, RUNS = 1_000_000, 10, 10, 6, 3, 5
CLIP, Q_RANGE, MOD, MAX_WEIGHT = 8.0, 1 << 22, 1 << 32, 1000.0  # SecAggPlusWorkflow's defaults


class Laps:
    """Splits one timed run into named parts (summed when a name repeats)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.parts[name] = self.parts.get(name, 0.0) + now - self.last
        self.last = now


def bench(fn, check=None):
    """Median of RUNS runs of fn(laps) in ms, with the median of each part; check(result) untimed."""
    totals, parts = [], {}
    for _ in range(RUNS):
        laps = Laps()
        t0 = time.perf_counter()
        result = fn(laps)
        totals.append(time.perf_counter() - t0)
        for k, v in laps.parts.items():
            parts.setdefault(k, []).append(v)
        if check is not None:
            check(result)
    return statistics.median(totals) * 1e3, {k: statistics.median(v) * 1e3 for k, v in parts.items()}


# ---- client side: secaggplus_mod.py ---------------------------------------------------------

def client_setup(laps: Laps) -> dict:
    """_setup: two key pairs (sk1/pk1 for pairwise masks, sk2/pk2 to encrypt shares), PEM bytes."""
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    st = {"sk1": private_key_to_bytes(sk1), "pk1": public_key_to_bytes(pk1),
          "sk2": private_key_to_bytes(sk2), "pk2": public_key_to_bytes(pk2)}
    laps("2 key pairs (P-384, PEM)")
    return st


def client_share_keys(me: int, st: dict, public_keys: dict, laps: Laps) -> dict:
    """_share_keys: self-mask seed, Shamir shares of it and of sk1, one share encrypted per peer."""
    st["rd_seed"] = os.urandom(32)
    b_shares = create_shares(st["rd_seed"], THRESHOLD, NUM_SHARES)
    sk1_shares = create_shares(st["sk1"], THRESHOLD, NUM_SHARES)
    laps("Shamir split (seed + sk1)")
    st["rd_seed_shares"], st["sk1_shares"], st["ss2"], out = {}, {}, {}, {}
    for idx, (nid, (_, pk2)) in enumerate(public_keys.items()):
        if nid == me:  # own share kept
            st["rd_seed_shares"][me], st["sk1_shares"][me] = b_shares[idx], sk1_shares[idx]
            continue
        shared_key = generate_shared_key(bytes_to_private_key(st["sk2"]), bytes_to_public_key(pk2))
        laps("9 key derivations (ECDH P-384 + HKDF)")
        st["ss2"][nid] = shared_key
        plaintext = share_keys_plaintext_concat(me, nid, b_shares[idx], sk1_shares[idx])
        out[nid] = encrypt(shared_key, plaintext)  # Fernet
        laps("9 share encryptions (Fernet)")
    return out  # destination -> ciphertext, relayed by the server


def client_receive_shares(me: int, st: dict, incoming: dict, laps: Laps) -> list[int]:
    """_collect_masked_vectors, first part: decrypt the 9 relayed ciphertexts, keep the shares."""
    for src, ciphertext in incoming.items():
        a_src, dst, b_share, sk1_share = share_keys_plaintext_separate(
            decrypt(st["ss2"][src], ciphertext))
        assert (a_src, dst) == (src, me)
        st["rd_seed_shares"][src], st["sk1_shares"][src] = b_share, sk1_share
    laps("decrypt 9 shares")
    return list(incoming)


def client_mask(me: int, st: dict, peers: list[int], public_keys: dict, params: list,
                num_examples: int, laps: Laps) -> list:
    """_collect_masked_vectors, from 'Fit' on: weight, quantize, self mask, 9 pairwise masks, mod."""
    q_ratio = round(num_examples / MAX_WEIGHT * Q_RANGE)
    params = parameters_multiply(params, q_ratio / Q_RANGE)
    quantized = factor_combine(q_ratio, quantize(params, CLIP, Q_RANGE))
    laps("weight + quantize")
    dims = [a.shape for a in quantized]
    quantized = parameters_addition(quantized, pseudo_rand_gen(st["rd_seed"], MOD, dims))
    laps("self mask")
    for nid in peers:
        shared_key = generate_shared_key(bytes_to_private_key(st["sk1"]),
                                         bytes_to_public_key(public_keys[nid][0]))
        laps("9 pairwise key derivations")
        mask = pseudo_rand_gen(shared_key, MOD, dims)
        quantized = (parameters_addition if me > nid else parameters_subtraction)(quantized, mask)
        laps("9 pairwise masks")
    out = parameters_mod(quantized, MOD)
    laps("mod")
    return out  # Flower then serializes with ndarray_to_bytes (not timed here)


# ---- server side: secaggplus_workflow.py ----------------------------------------------------

def server_unmask(masked: dict, shares: dict, dead: list[int], public_keys: dict, laps: Laps):
    """collect_masked_vectors_stage's sum, then unmask_stage: rebuild secrets, remove masks."""
    vecs = list(masked.values())
    agg = vecs[0]
    for v in vecs[1:]:
        agg = parameters_addition(agg, v)
    agg = parameters_mod(agg, MOD)
    laps("sum masked vectors")
    for nid, share_list in shares.items():
        secret = combine_shares(share_list)
        if nid not in dead:
            laps("rebuild self-mask seeds")
            agg = parameters_subtraction(agg, pseudo_rand_gen(secret, MOD, get_parameters_shape(agg)))
            laps("remove self masks")
            continue
        laps("rebuild dropped sk1s")
        for other in (n for n in public_keys if n != nid):  # all 9 neighbours, dropped ones too
            shared_key = generate_shared_key(bytes_to_private_key(secret),
                                             bytes_to_public_key(public_keys[other][0]))
            laps("dropped pairwise key derivations")
            mask = pseudo_rand_gen(shared_key, MOD, get_parameters_shape(agg))
            agg = (parameters_addition if nid > other else parameters_subtraction)(agg, mask)
            laps("remove dropped pairwise masks")
    q_total_ratio, recon = factor_extract(parameters_mod(agg, MOD))
    result = dequantize(recon, CLIP, Q_RANGE)
    for vec in result:
        vec += -(len(masked) - 1) * CLIP
        vec *= Q_RANGE / q_total_ratio
    laps("mod + dequantize")
    return result


def main() -> None:
    rng = np.random.default_rng(7)
    nids = [int(x) for x in rng.integers(1, 2**63, N_CLIENTS)]  # Flower's node IDs: random u64
    examples = {nid: int(n) for nid, n in zip(nids, rng.integers(100, 1001, N_CLIENTS))}
    params = {nid: [rng.normal(0, 0.5, N_PARAMS).astype(np.float32)] for nid in nids}
    # num_shares == sample count, so every client's neighbour set is all 10 (incl. itself).

    # Untimed: a whole round's inputs for 10 clients, through the same functions.
    st = {nid: client_setup(Laps()) for nid in nids}
    public_keys = {nid: (st[nid]["pk1"], st[nid]["pk2"]) for nid in nids}
    relayed = {nid: {} for nid in nids}
    for src in nids:
        for dst, ct in client_share_keys(src, st[src], public_keys, Laps()).items():
            relayed[dst][src] = ct
    peers = {nid: client_receive_shares(nid, st[nid], relayed[nid], Laps()) for nid in nids}
    masked = {nid: client_mask(nid, st[nid], peers[nid], public_keys, params[nid], examples[nid],
                               Laps()) for nid in nids}

    def expected(active):
        """Flower's result: the average weighted by the quantized weights q_ratio/Q."""
        w = {n: round(examples[n] / MAX_WEIGHT * Q_RANGE) / Q_RANGE for n in active}
        num = sum(params[n][0].astype(np.float64) * np.float32(w[n]) for n in active)
        return num / sum(w.values()), sum(w.values())

    def checker(active):
        exp, w_sum = expected(active)
        # per client: stochastic rounding (< 1 step) + float32 rounding in quantize (~1/4 step)
        tol = len(active) * 1.5 * (2 * CLIP / Q_RANGE) / w_sum

        def check(result):
            err = float(np.max(np.abs(result[0] - exp)))
            assert err <= tol, f"unmasked sum off by {err} > {tol}"
            errors.append(err)
        return check

    dead = nids[-N_DROPPED:]
    # unmask_stage: each responding client sends its share of every active client's seed and of
    # every dropped client's sk1; Flower combines *all* shares it receives (10, or 7 with dropout).
    def unmask_inputs(responders, dropped, k):
        shares = {owner: [st[r]["sk1_shares" if owner in dropped else "rd_seed_shares"][owner]
                          for r in responders][:k] for owner in nids}
        return {n: masked[n] for n in responders}, shares

    rows, errors = [], []
    me, st0 = nids[0], st[nids[0]]

    def a(laps):  # key setup: _setup + _share_keys
        s = client_setup(laps)
        keys = {**public_keys, me: (s["pk1"], s["pk2"])}
        client_share_keys(me, s, keys, laps)
    rows.append(("(a) one client: key setup (2 key pairs, Shamir 6-of-10 of seed + sk1, "
                 "9 derivations + encryptions)", *bench(a)))
    rows.append(("(b) one client: masking 1M float32 (quantize, self mask, 9 pairwise masks "
                 "incl. derivations)", *bench(lambda l: client_mask(
                     me, st0, peers[me], public_keys, params[me], examples[me], l))))
    for label, dropped, k in (
            ("(c) server: unmask, no dropout, Flower as shipped (each seed from all 10 shares)",
             [], None),
            ("(c6) same, each seed from exactly 6 shares (threshold)", [], THRESHOLD),
            ("(d) server: unmask, 3 of 10 dropped, as shipped (7 shares per secret, 27 pairwise)",
             dead, None),
            ("(d6) same, each secret from exactly 6 shares", dead, THRESHOLD)):
        survivors = [n for n in nids if n not in dropped]
        vecs, shares = unmask_inputs(survivors, dropped, k)
        rows.append((label, *bench(lambda l: server_unmask(vecs, shares, dropped, public_keys, l),
                                   checker(survivors))))
    rows.append(("(e) one client: share keys alone (seed, Shamir split, 9 derivations + "
                 "encryptions)", *bench(lambda l: client_share_keys(me, dict(st0), public_keys, l))))
    rows.append(("(f) one client: decrypt the 9 relayed shares (start of stage 2)",
                 *bench(lambda l: client_receive_shares(me, dict(st0), relayed[me], l))))

    print(f"flwr {flwr_version}, Python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs; median of {RUNS} runs\n")
    print("| work | median ms |\n|---|---:|")
    for label, total, parts in rows:
        split = ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
        print(f"| {label} [{split}] | {total:.1f} |")
    print(f"\nunmasked average vs true weighted average: max abs error {max(errors):.2e} "
          f"(all {len(errors)} checked runs within quantization error)")


if __name__ == "__main__":
    main()
