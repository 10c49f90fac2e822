"""A long-running researcher: one Python process runs session after session through warm agents.

`cargo bench -p secagg-cli --bench session_run` times one `secagg session run` *process* per
session (its start, identity and store, 9 full TLS handshakes). A Fed-BioMed researcher is a
long-running Python process instead: this script times `secagg.Home.session_run(all=True)` called
again and again in one process, through the agents (`secagg serve`) of a federation that
`secagg demo --keep` prepares. Figures in benches/README.md.

    python3 -m venv /tmp/pyrel && /tmp/pyrel/bin/pip install maturin
    (. /tmp/pyrel/bin/activate && cd secagg-py && maturin develop --release)
    cargo build --release -p secagg-cli
    /tmp/pyrel/bin/python benches/python_session_run.py [NODES] [SESSIONS]

The agents are the `secagg` binary in `SECAGG_BIN` (default: target/release/secagg).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import secagg

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("SECAGG_BIN", str(ROOT / "target" / "release" / "secagg"))


def prepare(nodes: int, workdir: Path) -> Path:
    """A federation of a researcher and `nodes` nodes on loopback (`secagg demo --keep`)."""
    out = subprocess.run(
        [BIN, "--home", str(workdir / "demo-home"), "demo", "--nodes", str(nodes), "--keep"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    kept = re.search(r"kept the federation in (\S+)", out.stderr + out.stdout)
    if not kept:
        sys.exit(f"secagg demo did not say where it kept the federation:\n{out.stderr}")
    return Path(kept.group(1)) / "federation"


def start_agents(fed: Path) -> list:
    homes = sorted(h for h in fed.glob("node*") if h.is_dir())
    agents = []
    for home in homes:
        log = open(home.with_suffix(".agent.log"), "w")
        agents.append(
            subprocess.Popen(
                [BIN, "--home", str(home), "serve", "--max-sessions", "64"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
    for home in homes:
        log = home.with_suffix(".agent.log")
        until = time.monotonic() + 60
        while "listening:" not in log.read_text():
            if time.monotonic() > until:
                sys.exit(f"agent did not start: {log}")
            time.sleep(0.01)
    return agents


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    sessions = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    workdir = Path(tempfile.mkdtemp(prefix="secagg-pybench-"))
    agents = []
    try:
        fed = prepare(nodes, workdir)
        agents = start_agents(fed)
        researcher = secagg.Home(str(fed / "researcher"))
        times = []
        for _ in range(sessions):
            started = time.perf_counter()
            researcher.session_run(all=True)
            times.append(time.perf_counter() - started)
        first, rest = times[0], sorted(times[5:])
        n = len(rest)
        print(
            f"{nodes + 1} parties, one Python process, {sessions} sessions: first {first * 1e3:.1f} ms; "
            f"then median {rest[n // 2] * 1e3:.1f} ms (p10 {rest[n // 10] * 1e3:.1f}, "
            f"p90 {rest[9 * n // 10] * 1e3:.1f})"
        )
    finally:
        for a in agents:
            a.kill()
            a.wait()
        shutil.rmtree(workdir, ignore_errors=True)
        kept = locals().get("fed")
        if kept:
            shutil.rmtree(kept.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
