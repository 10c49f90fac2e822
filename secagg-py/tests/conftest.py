"""Shared helpers: a federation of homes on loopback ports, parties run in threads."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest

import secagg

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def free_ports(n: int) -> List[int]:
    """``n`` distinct free loopback ports (every probe socket held until all are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def real_mpspdz_root() -> Path:
    """The MP-SPDZ build of ``MPSPDZ_ROOT``; the test is skipped, saying why, without one."""
    root = os.environ.get("MPSPDZ_ROOT")
    if not root:
        pytest.skip("MPSPDZ_ROOT is not set (an MP-SPDZ v0.3.4 build with GFP_MOD_SZ=33)")
    return Path(root)


def free_ports_below_ephemeral(n: int) -> List[int]:
    """``n`` ports free now on every address, below the kernel's ephemeral range (32768 and up by
    default), so that no outgoing connection (real MP-SPDZ makes many) takes one before the
    program that is to listen there binds it. Probing starts at a place derived from the process
    id, so that parallel test processes rarely probe the same ports."""
    found: List[int] = []
    port = 22_000 + (os.getpid() % 400) * 20
    while len(found) < n:
        assert port < 32_000, "no free ports left below 32000"
        s = socket.socket()
        try:
            s.bind(("0.0.0.0", port))
            found.append(port)
        except OSError:
            pass
        finally:
            s.close()
        port += 1
    return found


class Federation:
    """A researcher and ``nodes`` nodes, each its own home under ``root``, every one registered
    with every other through its registration bundle."""

    def __init__(self, root: Path, nodes: int) -> None:
        ports = free_ports(nodes + 1)
        self.homes: List[secagg.Home] = []
        self.ids: List[str] = []
        for i, port in enumerate(ports):
            home = secagg.Home(root / f"party{i}")
            ident = home.init("researcher" if i == 0 else "node", ip="127.0.0.1", port=port)
            self.homes.append(home)
            self.ids.append(ident["party_id"])
        bundles = [h.bundle() for h in self.homes]
        for i, home in enumerate(self.homes):
            for j, b in enumerate(bundles):
                if i != j:
                    home.register_bundle(b, expect_fingerprint=b["fingerprint"])

    def run(
        self,
        session: str,
        which: Optional[List[int]] = None,
        timeout: float = 20.0,
        call: Optional[Callable[[int, secagg.Home], Any]] = None,
    ) -> Dict[int, Any]:
        """Runs the negotiation of ``session`` for the parties ``which`` (default all), each in
        its own thread; returns each party's report or exception."""
        which = list(range(len(self.homes))) if which is None else which
        results: Dict[int, Any] = {}

        def party(i: int) -> None:
            try:
                if call is not None:
                    results[i] = call(i, self.homes[i])
                else:
                    results[i] = self.homes[i].negotiate(session, self.ids, timeout=timeout)
            except BaseException as e:  # noqa: B036 - recorded for the test to assert on
                results[i] = e

        threads = [threading.Thread(target=party, args=(i,)) for i in which]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results


@pytest.fixture
def federation(tmp_path: Path) -> Callable[[int], Federation]:
    return lambda nodes=2: Federation(tmp_path, nodes)


@pytest.fixture
def fixtures() -> Path:
    assert FIXTURES.is_dir(), FIXTURES
    return FIXTURES


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def secagg_bin() -> Path:
    """The `secagg` binary, for the tests that need real agents (`secagg serve`): $SECAGG_BIN,
    else built with `cargo build -p secagg-cli` (a no-op when `scripts/test`'s `cargo test`
    already built it) in $CARGO_TARGET_DIR or the workspace's `target/`."""
    given = os.environ.get("SECAGG_BIN")
    if given:
        path = Path(given)
        assert path.is_file(), f"SECAGG_BIN={given} is not a file"
        return path
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "secagg-cli", "--bin", "secagg"],
        cwd=REPO,
        check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    path = target / "debug" / "secagg"
    assert path.is_file(), path
    return path


class Agent:
    """A running `secagg --home HOME serve`, its log (stderr) in a file next to the home."""

    def __init__(
        self, binary: Path, home: secagg.Home, *args: str, env: Optional[Dict[str, str]] = None
    ) -> None:
        self.home = home
        self.log = Path(str(home.path) + ".agent.log")
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "--home", str(home.path), "serve", *args],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        deadline = time.monotonic() + 20
        while "listening:" not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the agent of {home.path} did not start:\n{self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kills the agent (SIGKILL: it is gone at once) and waits for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log_file.close()


@pytest.fixture
def agents(secagg_bin: Path):
    """Starts agents: ``agents(home, *args, env={...})``; every one is killed when the test
    ends. ``env`` adds environment variables (e.g. the test build's ``SECAGG_FAULT`` hook)."""
    started: List[Agent] = []

    def start(home: secagg.Home, *args: str, env: Optional[Dict[str, str]] = None) -> Agent:
        a = Agent(secagg_bin, home, *args, env=env)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()
