"""Fed-BioMed v4.5.0 component layouts on disk, built from the contract
(``../shared/reference/fedbiomed-v4-contract.md`` §3, §6): ``<root>/etc/config_<name>.ini``,
the MP-SPDZ certificate under ``<root>/etc/certs/``, ``<root>/var/db_<id>.json`` (TinyDB, table
``Certificates``) and ``<root>/var/tmp``. What the adapter is handed by Fed-BioMed's code is the
``environ`` of such a component (``DB_PATH``, ``TMP_DIR``, ``ID``, ``MPSPDZ_*``)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List

from secagg import fedbiomed as fb


class Component:
    """One Fed-BioMed component (its root directory) and the ``environ`` its code would see."""

    def __init__(self, root: Path, role: str, port: int) -> None:
        self.root = root
        self.role = role
        self.id = f"{role}_{uuid.uuid4()}"
        etc, var = root / "etc", root / "var"
        certs = etc / "certs" / f"cert_{self.id}"
        for d in (certs, var / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        key, pem = fb.CertificateManager.generate_self_signed_ssl_certificate(
            str(certs), component_id=self.id)
        (etc / f"config_{role}.ini").write_text(
            "[default]\n"
            f"id = {self.id}\n"
            f"component = {role.upper()}\n"
            "\n[mpspdz]\n"
            f"private_key = {os.path.relpath(key, etc)}\n"
            f"public_key = {os.path.relpath(pem, etc)}\n"
            "mpspdz_ip = 127.0.0.1\n"
            f"mpspdz_port = {port}\n"
            "allow_default_biprimes = True\n"
        )
        self.environ: Dict[str, Any] = {
            "ID": self.id,
            "DB_PATH": str(var / f"db_{self.id}.json"),
            "TMP_DIR": str(var / "tmp"),
            "MPSPDZ_IP": "127.0.0.1",
            "MPSPDZ_PORT": port,
            "MPSPDZ_CERTIFICATE_KEY": key,
            "MPSPDZ_CERTIFICATE_PEM": pem,
        }

    @property
    def certificate(self) -> str:
        return Path(self.environ["MPSPDZ_CERTIFICATE_PEM"]).read_text()

    def document(self) -> Dict[str, Any]:
        """This component's document in another component's ``Certificates`` table."""
        return {
            "party_id": self.id,
            "certificate": self.certificate,
            "ip": self.environ["MPSPDZ_IP"],
            "port": self.environ["MPSPDZ_PORT"],
            "component": self.role.upper(),
        }

    def write_tinydb(self, others: List["Component"]) -> None:
        """The TinyDB file as Fed-BioMed leaves it after ``certificate register`` of ``others``
        (and another table, which the import must skip)."""
        table = {str(i + 1): o.document() for i, o in enumerate(others)}
        Path(self.environ["DB_PATH"]).write_text(json.dumps(
            {"Certificates": table, "Datasets": {"1": {"name": "x", "shape": [3, 2]}}}))


def federation(root: Path, ports: List[int]) -> List[Component]:
    """A researcher and ``len(ports) - 1`` nodes, each in its own root, each having registered
    every other the Fed-BioMed way (its TinyDB file)."""
    comps = [Component(root / f"c{i}", "researcher" if i == 0 else "node", p)
             for i, p in enumerate(ports)]
    for c in comps:
        c.write_tinydb([o for o in comps if o is not c])
    return comps
