"""Shared helpers: a federation of homes on loopback ports, parties run in threads."""

from __future__ import annotations

import os
import socket
import threading
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
