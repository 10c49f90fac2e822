"""The reference side of the Joye–Libert figures in benches/README.md: what Fed-BioMed v4's crypter
spends per ciphertext, measured with gmpy2 (the library it computes with) on this machine.

Fed-BioMed encrypts one packed plaintext x_k as (N·x_k + 1) · H(τ_k)^sk mod N² with gmpy2's
``powmod`` (GMP's variable-time ``mpz_powm``), one ciphertext after another on one core. This script
times that per-ciphertext work with the same modulus (``default_biprime0``), a 2040-bit key and the
same hash, so the Rust benchmark (``cargo bench -p secagg-core --bench aggregation``) can be
compared with it on the same machine in the same sitting:

    python3 -m venv /tmp/gmpy && /tmp/gmpy/bin/pip install gmpy2
    /tmp/gmpy/bin/python benches/gmpy2_reference.py

It is a model of Fed-BioMed's hot loop (not Fed-BioMed's code): it leaves out Fed-BioMed's
quantisation, packing and Python object overhead, so it is a lower bound on Fed-BioMed's time.
"""

import hashlib
import re
import secrets
import time
from pathlib import Path

import gmpy2

SOURCE = Path(__file__).resolve().parent.parent / "secagg-core" / "src" / "aggregate.rs"


def default_biprime0() -> int:
    text = SOURCE.read_text()
    return int(re.search(r'DEFAULT_BIPRIME0: &str = "(\d+)"', text).group(1))


def h(tau: int, n2: int) -> int:
    # SHA-256 of tau as 1024 big-endian bytes, then the byte 1 (Fed-BioMed's H).
    return int.from_bytes(hashlib.sha256(tau.to_bytes(1024, "big") + b"\x01").digest(), "big") % n2


def main() -> None:
    n = gmpy2.mpz(default_biprime0())
    n2 = n * n
    sk = gmpy2.mpz(secrets.randbits(2040) | (1 << 2039))
    base = gmpy2.mpz(h((7 << 512) | 1, int(n2)))
    reps = 300
    for _ in range(10):
        gmpy2.powmod(base, sk, n2)
    t = time.perf_counter()
    for _ in range(reps):
        gmpy2.powmod(base, sk, n2)
    one = (time.perf_counter() - t) / reps
    print(f"gmpy2 {gmpy2.version()}: one powmod, 2040-bit exponent mod N² (2048 bits): {one * 1e3:.3f} ms")

    # 10,000 parameters for 2 nodes: 157 ciphertexts of 64 values of 16 bits, one core.
    plaintexts = [secrets.randbits(1024) for _ in range(157)]
    t = time.perf_counter()
    for k, x in enumerate(plaintexts):
        mask = gmpy2.powmod(gmpy2.mpz(h((k << 512) | 1, int(n2))), sk, n2)
        _ = ((n * x + 1) * mask) % n2
    whole = time.perf_counter() - t
    print(
        f"encrypt 10,000 parameters (157 ciphertexts), Fed-BioMed's loop on one core: {whole * 1e3:.0f} ms"
        f" ({whole * 1e3 / 157:.3f} ms per ciphertext)"
    )
    per = whole / 157
    print(
        f"extrapolated, 1,000,000 parameters, 2 nodes (15,625 ciphertexts): {per * 15625:.1f} s;"
        f" 10 nodes (17,858 ciphertexts): {per * 17858:.1f} s"
    )


if __name__ == "__main__":
    main()
