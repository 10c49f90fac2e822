"""The `secagg` command the package installs (issue 23, item 15): `pip install` (here `maturin
develop`, as scripts/test does) puts it in the environment's bin/, and it is the whole CLI: its
version, a demo federation whose parties it starts through itself, and an agent that stops
cleanly on SIGTERM. Fails (does not skip) when the command is missing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import secagg
from conftest import free_ports

SCRIPT = Path(sys.executable).parent / "secagg"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), f"{SCRIPT}: the package did not install its `secagg` command"
    env = {k: v for k, v in os.environ.items() if k not in ("SECAGG_HOME", "SECAGG_EXE")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120, **kw)


def test_version_is_the_packages():
    out = run("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"secagg {secagg.__version__}"


def test_demo_runs_through_the_installed_command(tmp_path):
    out = run("demo", "--nodes", "3", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["verified"] is True and report["parties"] == 4


def test_errors_and_exit_codes_are_the_clis(tmp_path):
    out = run("--home", str(tmp_path / "none"), "certificate", "list")
    assert out.returncode == 4 and "no secagg identity" in out.stderr
    assert run("--no-such-option").returncode == 2


def test_an_agent_run_by_the_installed_command_stops_on_sigterm(tmp_path):
    home = tmp_path / "node"
    (port,) = free_ports(1)
    init = run("--home", str(home), "init", "--role", "node", "--port", str(port))
    assert init.returncode == 0, init.stderr
    log = tmp_path / "agent.log"
    with open(log, "wb") as err:
        agent = subprocess.Popen([str(SCRIPT), "--home", str(home), "serve"], stderr=err,
                                 stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while "listening" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
    assert "stopped: agent stopped" in log.read_text()
