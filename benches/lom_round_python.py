"""The Python side of ``benches/lom_round.rs`` (issue 22: a Python call costs at most 1.5x the
core call for 1,000,000 values): ``Home.lom_encrypt`` of a 1,000,000-value float64 NumPy array at
one node of a 10-node LOM context, and ``Home.lom_decrypt`` of the 10 files, each the median of
10 runs.

Run with a release build of the package (``maturin develop --release``) and the release
``secagg`` command on PATH, which sets up the context (``secagg demo --scheme lom --nodes 10
--keep``):

    python benches/lom_round_python.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time

import numpy as np

import secagg

N = 1_000_000


def median_ms(f, runs: int = 10) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    out = subprocess.run(
        ["secagg", "demo", "--scheme", "lom", "--nodes", "10", "--keep", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    demo = json.loads(out.stdout)
    directory = demo["directory"]
    session = demo["session_id"]
    homes = [
        secagg.Home(f"{directory}/federation/{'researcher' if i == 0 else f'node{i}'}")
        for i in range(11)
    ]
    try:
        values = ((np.arange(N) % 6000) / 1000.0 - 3.0).astype(np.float64)
        rounds = iter(range(1000, 2000))
        enc = median_ms(lambda: homes[1].lom_encrypt(session, next(rounds), values, weight=100))
        files = [h.lom_encrypt(session, 1, values, weight=100) for h in homes[1:]]
        dec = median_ms(lambda: homes[0].lom_decrypt(session, 1, files))
        print(f"Home.lom_encrypt 1e6 float64 (NumPy), 10-node context: {enc:.1f} ms")
        print(f"Home.lom_decrypt 10 x 1e6 (NumPy): {dec:.1f} ms")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
