"""Fed-BioMed v4.5.0's secure-aggregation classes, backed by a secagg home.

The classes and method signatures that Fed-BioMed v4.5.0's node and researcher code call
(``fedbiomed/common/certificate_manager.py``, ``mpc_controller.py``, ``secagg_manager.py``,
``secagg/_secagg_crypter.py``), so that such code can use secagg instead: certificates are
registered in the home's store (validated first), keys come from secagg's negotiation and
aggregation uses secagg's Joye–Libert implementation (bit-compatible with Fed-BioMed's).

Where secagg deliberately differs — it validates what Fed-BioMed stored blindly — the call raises
the ``secagg`` exception of the kind (``InvalidInput``, ``NotFound``, ``Conflict``,
``VerificationFailed``, …) instead of Fed-BioMed's ``FedbiomedCertificateError`` /
``FedbiomedSecaggError``; each method's docstring says what differs. ``FedbiomedError`` is an
alias of ``secagg.Error`` for ``except`` clauses written for Fed-BioMed.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _native
from ._errors import Conflict, Error, InvalidInput, NotFound, VerificationFailed

__all__ = [
    "NODE",
    "RESEARCHER",
    "FedbiomedError",
    "CertificateManager",
    "MPCController",
    "SecaggServkeyManager",
    "SecaggBiprimeManager",
    "SecaggCrypter",
    "SERVER_KEY_ELEMENT",
    "BIPRIME_ELEMENT",
    "DEFAULT_BIPRIME_ID",
]

#: Fed-BioMed's ``ComponentType`` names, as stored in a certificate document's ``component``.
NODE = "NODE"
RESEARCHER = "RESEARCHER"
#: Fed-BioMed's ``SecaggElementTypes.SERVER_KEY``, the ``secagg_elem`` of a server-key entry.
SERVER_KEY_ELEMENT = 0
#: Fed-BioMed's ``SecaggElementTypes.BIPRIME``.
BIPRIME_ELEMENT = 1
#: The ``secagg_id`` of Fed-BioMed v4.5.0's default biprime (``envs/common/default_biprimes/
#: biprime0.json``), whose value is ``secagg.DEFAULT_BIPRIME0``.
DEFAULT_BIPRIME_ID = "default_biprime0"
#: The ``max_keysize`` of that file.
DEFAULT_MAX_KEYSIZE = 2048

FedbiomedError = Error

PathLike = Union[str, "os.PathLike[str]"]


def _component_name(component: Any) -> str:
    """``"NODE"`` / ``"RESEARCHER"`` from a string or Fed-BioMed's ``ComponentType`` member."""
    return str(getattr(component, "name", component)).upper()


def _document(peer: Dict[str, Any]) -> Dict[str, Any]:
    """Fed-BioMed's certificate document of a registered peer."""
    return {
        "party_id": peer["party_id"],
        "certificate": peer["certificate"],
        "ip": peer["ip"],
        "port": peer["port"],
        "component": peer["component"],
    }


def _write_private(path: str, text: str) -> None:
    """Writes a secret file with mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _write_public(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


class CertificateManager:
    """Fed-BioMed's ``CertificateManager`` over a secagg home's peer store.

    ``db_path`` names the secagg home directory (Fed-BioMed: its TinyDB JSON file; import one
    with ``secagg.Home(path).import_fedbiomed(db_json)``). A document is
    ``{party_id, certificate, ip, port, component}``; a *document id* is the 1-based position of
    the party in ``list()`` (the store is keyed by party id, not by TinyDB ids).
    """

    def __init__(self, db_path: Optional[PathLike] = None) -> None:
        self._home: Optional[_native.Home] = None
        if db_path is not None:
            self.set_db(db_path)

    def set_db(self, db_path: PathLike) -> None:
        """Uses the secagg home ``db_path``."""
        self._home = _native.Home(db_path)

    @property
    def home(self) -> _native.Home:
        """The secagg home behind this manager."""
        if self._home is None:
            raise NotFound("no secagg home is set", "call set_db(path of the secagg home)")
        return self._home

    def _doc_id(self, party_id: str) -> int:
        ids = [p["party_id"] for p in self.home.peers()]
        return ids.index(party_id) + 1

    def insert(
        self,
        certificate: str,
        party_id: str,
        component: Any,
        ip: str,
        port: int,
        upsert: bool = False,
    ) -> Union[int, List[int]]:
        """Registers ``certificate`` (PEM text) for ``party_id`` at ``ip:port``.

        Returns the document id (a one-element list with ``upsert``, as TinyDB's upsert).
        Differences: the certificate is validated before it is stored (one X.509 v3 certificate,
        valid now, supported key, self-signature; ``InvalidInput`` otherwise), as are the party
        id, ip and port; ``component`` must be the one the id implies (``node_…`` is a NODE,
        ``researcher_…`` a RESEARCHER; ``InvalidInput``); an existing party id without
        ``upsert`` raises ``Conflict`` (Fed-BioMed: FB619), and so does a certificate already
        registered under another id.
        """
        expected = NODE if _native.party_role(party_id) == "node" else RESEARCHER
        if _component_name(component) != expected:
            raise InvalidInput(
                f"party `{party_id}` is a {expected}, not a {_component_name(component)}",
                "give the component that matches the party id (a node id starts with `node_`)",
            )
        # Bytes: the text is the certificate itself, never taken for a path.
        data = certificate.encode() if isinstance(certificate, str) else certificate
        self.home.register(data, party_id, ip, int(port), upsert=upsert)
        doc_id = self._doc_id(party_id)
        return [doc_id] if upsert else doc_id

    def get(self, party_id: str) -> Optional[Dict[str, Any]]:
        """The document of ``party_id``, or ``None`` when it is not registered.
        Difference: a malformed party id raises ``InvalidInput``."""
        home = self.home
        try:
            return _document(home.peer(party_id))
        except NotFound:
            return None

    def delete(self, party_id: str) -> List[int]:
        """Deletes the registration of ``party_id``; returns the removed document ids (``[]``
        when it was not registered)."""
        home = self.home
        try:
            doc_id = self._doc_id(party_id)
        except ValueError:
            return []
        home.delete_peer(party_id)
        return [doc_id]

    def list(self, verbose: bool = False) -> List[Dict[str, Any]]:
        """Every document; ``verbose`` also prints them as a table without the certificate."""
        docs = [_document(self.home.peer(p["party_id"])) for p in self.home.peers()]
        if verbose:
            cols = ["party_id", "component", "ip", "port"]
            rows = [[str(d[c]) for c in cols] for d in docs]
            widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
            print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
            for r in rows:
                print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        return docs

    def register_certificate(
        self,
        certificate_path: PathLike,
        party_id: str,
        ip: str,
        port: int,
        upsert: bool = False,
    ) -> Union[int, List[int]]:
        """Registers the certificate file ``certificate_path`` (PEM or DER); the component is the
        one the id implies, as in Fed-BioMed. Same checks as ``insert``; a missing file raises
        ``NotFound``."""
        self.home.register(os.fspath(certificate_path), party_id, ip, int(port), upsert=upsert)
        doc_id = self._doc_id(party_id)
        return [doc_id] if upsert else doc_id

    def write_mpc_certificates_for_experiment(
        self,
        parties: List[str],
        path_certificates: PathLike,
        path_ips: PathLike,
        self_id: str,
        self_ip: str,
        self_port: int,
        self_private_key: PathLike,
        self_public_key: PathLike,
    ) -> Tuple[str, List[str]]:
        """Writes MP-SPDZ's ``Player-Data``: ``P<i>.pem`` for every party in ``parties`` order
        (this party's key as ``P<i>.key``, mode 0600) and the ip file ``<path_ips>/ip_addresses``
        (``ip:port`` per line, same order). Returns ``(ip_file, written paths)``.

        Raises ``InvalidInput`` if a path is not a directory, ``NotFound`` if a party is not
        registered (or this party's key or certificate file is missing). Difference: every party
        is looked up before anything is written, so a refusal leaves no file behind (Fed-BioMed
        removes what it wrote).
        """
        path_certificates = os.path.abspath(os.fspath(path_certificates))
        path_ips = os.path.abspath(os.fspath(path_ips))
        for what, p in (("path_certificates", path_certificates), ("path_ips", path_ips)):
            if not os.path.isdir(p):
                raise InvalidInput(f"`{what}` ({p}) is not a directory")
        # (index, certificate, key, ip-file line): every party checked, and its line made by the
        # core's rule (an IPv6 literal refused), before anything is written.
        plan: List[Tuple[int, str, Optional[str], str]] = []
        for index, party in enumerate(parties):
            if party == self_id:
                try:
                    with open(self_private_key) as f:
                        key = f.read()
                    with open(self_public_key) as f:
                        pem = f.read()
                except FileNotFoundError as e:
                    raise NotFound(f"cannot read this party's key or certificate: {e}") from e
                plan.append((index, pem, key, _native.ip_file_line(self_ip, int(self_port))))
                continue
            doc = self.get(party)
            if doc is None:
                raise NotFound(
                    f"party `{party}` is not registered: the certificate of every party of the "
                    f"experiment must be",
                    f"{self_id} must register the certificate of {party}",
                )
            line = _native.ip_file_line(doc["ip"], int(doc["port"]))
            plan.append((index, doc["certificate"], None, line))
        ip_file = os.path.join(path_ips, "ip_addresses")
        written: List[str] = []
        lines = []
        for index, pem, key, line in plan:
            if key is not None:
                key_path = os.path.join(path_certificates, f"P{index}.key")
                _write_private(key_path, key)
                written.append(key_path)
            pem_path = os.path.join(path_certificates, f"P{index}.pem")
            _write_public(pem_path, pem)
            written.append(pem_path)
            lines.append(line + "\n")
        _write_public(ip_file, "".join(lines))
        return ip_file, written

    @staticmethod
    def generate_self_signed_ssl_certificate(
        certificate_folder: PathLike,
        certificate_name: str = "MPSPDZ_certificate",
        component_id: str = "unknown",
    ) -> Tuple[str, str]:
        """Writes ``<certificate_name>.key`` (0600) and ``.pem`` in ``certificate_folder``
        (absolute, existing): a self-signed certificate ``CN=*``, ``O=<component_id>``, valid
        5 years. Returns ``(key_path, pem_path)``.

        Difference: an ECDSA P-256 key, not RSA-2048 (secagg's default, accepted by MP-SPDZ and
        by every secagg party; Fed-BioMed's RSA certificates are accepted when registered), a
        128-bit random serial and the serverAuth + clientAuth key usages.
        """
        folder = os.fspath(certificate_folder)
        if not os.path.isabs(folder):
            raise InvalidInput(f"certificate path should be absolute: {folder}")
        if not os.path.isdir(folder):
            raise InvalidInput(f"certificate path is not a directory: {folder}")
        key_pem, cert_pem = _native.generate_certificate(component_id)
        key_file = os.path.join(folder, f"{certificate_name}.key")
        pem_file = os.path.join(folder, f"{certificate_name}.pem")
        _write_private(key_file, key_pem)
        _write_public(pem_file, cert_pem)
        return key_file, pem_file


class MPCController:
    """The equivalent of Fed-BioMed's ``MPCController``: runs this party's side of the server-key
    negotiation, with secagg's native engine (or MP-SPDZ through secagg) instead of Fed-BioMed's
    ``fedbiomed_mpc`` script.

    ``home`` (secagg's addition) is the party's secagg home; the directories are Fed-BioMed's
    (``<tmp_dir>/MPC/<component_id>/<uuid4>/MP-SPDZ/Player-Data``) for code that expects them.
    """

    def __init__(
        self,
        tmp_dir: PathLike,
        component_type: Any,
        component_id: str,
        home: Optional[PathLike] = None,
    ) -> None:
        self._component_type = component_type
        self._component_id = component_id
        self._tmp_dir = os.path.join(os.fspath(tmp_dir), "MPC", component_id, str(uuid.uuid4()))
        self._mpc_data_dir = os.path.join(self._tmp_dir, "MP-SPDZ", "Player-Data")
        os.makedirs(self._mpc_data_dir, exist_ok=True)
        self._home = _native.Home(home) if home is not None else None

    @property
    def mpc_data_dir(self) -> str:
        """``<tmp_dir>/MPC/<component_id>/<uuid>/MP-SPDZ/Player-Data``."""
        return self._mpc_data_dir

    @property
    def tmp_dir(self) -> str:
        """``<tmp_dir>/MPC/<component_id>/<uuid>``."""
        return self._tmp_dir

    def exec_shamir(
        self,
        party_number: int,
        num_parties: int,
        ip_addresses: Optional[PathLike],
        *,
        secagg_id: str,
        parties: List[str],
        timeout: Optional[float] = None,
        engine: str = "native",
        cancel: Optional[_native.CancelToken] = None,
    ) -> str:
        """Runs the server-key negotiation of session ``secagg_id`` among ``parties``
        (researcher first) as party ``party_number`` of ``num_parties``; returns ``secagg_id``.

        Differences: the session id and party list are needed (keyword-only), because secagg
        binds the session to them; the key is not written to ``Output-P0-0`` / ``Input-P<i>-0``
        but stored in the home (``sk0`` at the researcher, ``sk_i`` at a node, with
        ``sk0 + Σ sk_i = 0``), where ``SecaggServkeyManager.get`` reads it. ``party_number``,
        ``num_parties`` and, when it is given and exists, the ip file written by
        ``write_mpc_certificates_for_experiment`` are checked against the party list and the
        registered endpoints (``InvalidInput`` on any mismatch) rather than trusted.
        """
        if self._home is None:
            raise NotFound("this MPCController has no secagg home", "pass home=… to the constructor")
        me = self._home.identity()
        if num_parties != len(parties):
            raise InvalidInput(f"num_parties is {num_parties} but {len(parties)} parties are listed")
        if not 0 <= party_number < len(parties) or parties[party_number] != me["party_id"]:
            raise InvalidInput(
                f"party_number {party_number} is not this party ({me['party_id']}) in {parties}"
            )
        if ip_addresses is not None and os.path.isfile(ip_addresses):
            with open(ip_addresses) as f:
                given = [line.strip() for line in f if line.strip()]
            endpoints = [me if p == me["party_id"] else self._home.peer(p) for p in parties]
            expected = [_native.ip_file_line(e["ip"], int(e["port"])) for e in endpoints]
            if given != expected:
                raise InvalidInput(
                    f"the ip file {ip_addresses} lists {given}, the registered endpoints are "
                    f"{expected}",
                    "write it again with write_mpc_certificates_for_experiment",
                )
        self._home.negotiate(secagg_id, parties, timeout=timeout, engine=engine, cancel=cancel)
        return secagg_id


class SecaggServkeyManager:
    """Fed-BioMed's ``SecaggServkeyManager`` over the keys a secagg home negotiated.

    An entry is ``{secagg_id, parties, context: {'server_key': int}, job_id, secagg_elem}``;
    ``server_key`` is the key this party stored for the session: the server key ``sk0`` at the
    researcher, the node's user key at a node (as in Fed-BioMed, where both sides use this table).
    Keys enter the store only through ``Home.negotiate`` (or ``MPCController.exec_shamir``);
    ``add`` attaches the session to a job after checking it. Job ids are kept in
    ``<home>/fedbiomed-servkey-jobs.json``.
    """

    def __init__(self, db_path: PathLike) -> None:
        self._home = _native.Home(db_path)
        self._jobs_path = os.path.join(os.fspath(db_path), "fedbiomed-servkey-jobs.json")

    def _jobs(self) -> Dict[str, Optional[str]]:
        try:
            with open(self._jobs_path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        if not isinstance(data, dict):
            raise InvalidInput(f"{self._jobs_path} is not a JSON object")
        return data

    def _save_jobs(self, jobs: Dict[str, Optional[str]]) -> None:
        tmp = self._jobs_path + ".tmp"
        _write_private(tmp, json.dumps(jobs, indent=1, sort_keys=True))
        os.replace(tmp, self._jobs_path)

    def _check_job(self, secagg_id: str, session: str, job_id: Optional[str]) -> None:
        jobs = self._jobs()
        if session in jobs and jobs[session] != job_id:
            raise Conflict(
                f"secagg context `{secagg_id}` belongs to job `{jobs[session]}`, not to the "
                f"current job `{job_id}`"
            )

    def get(self, secagg_id: str, job_id: Optional[str]) -> Optional[Dict[str, Any]]:
        """The entry of ``secagg_id`` (``secagg_<uuid>`` or a uuid), ``None`` when no key is
        stored for it. Raises ``Conflict`` when it is attached to another job. Difference: a key
        still unconfirmed (the researcher's confirmation never arrived) raises ``InvalidInput``
        instead of being handed out."""
        session = _native.normalize_session_id(secagg_id)
        try:
            ctx = self._home.context(session, reveal_key=True)
        except NotFound:
            return None
        self._check_job(secagg_id, session, job_id)
        if ctx["state"] != "confirmed":
            raise InvalidInput(
                f"the key of secagg context `{secagg_id}` is unconfirmed: the negotiation may not "
                f"have completed at the researcher",
                f"confirm it with `secagg context confirm {session}` once the researcher lists it",
            )
        return {
            "secagg_id": secagg_id,
            "parties": ctx["parties"],
            "context": {"server_key": ctx["key"]},
            "job_id": self._jobs().get(session, job_id),
            "secagg_elem": SERVER_KEY_ELEMENT,
        }

    def add(
        self,
        secagg_id: str,
        parties: List[str],
        context: Dict[str, int],
        job_id: Optional[str],
    ) -> None:
        """Attaches the negotiated session ``secagg_id`` to ``job_id``.

        Differences: the key must have been negotiated by this home (``NotFound`` otherwise),
        ``parties`` must be the session's (``InvalidInput``) and ``context['server_key']`` the key
        stored for it (``VerificationFailed``): nothing unchecked is stored. An entry that was
        already added raises ``Conflict`` (as Fed-BioMed).
        """
        session = _native.normalize_session_id(secagg_id)
        jobs = self._jobs()
        if session in jobs:
            raise Conflict(f"secagg context `{secagg_id}` was already added")
        ctx = self._home.context(session, reveal_key=True)
        if list(parties) != ctx["parties"]:
            raise InvalidInput(
                f"secagg context `{secagg_id}` was negotiated by {ctx['parties']}, not {list(parties)}"
            )
        if not isinstance(context, dict) or context.get("server_key") != ctx["key"]:
            raise VerificationFailed(
                f"the server_key given for secagg context `{secagg_id}` is not the key negotiated "
                f"for it"
            )
        jobs[session] = job_id
        self._save_jobs(jobs)

    def remove(self, secagg_id: str, job_id: Optional[str]) -> bool:
        """Deletes the key of ``secagg_id``; ``False`` when none is stored. Raises ``Conflict``
        when it is attached to another job."""
        session = _native.normalize_session_id(secagg_id)
        try:
            self._home.context(session)
        except NotFound:
            return False
        self._check_job(secagg_id, session, job_id)
        self._home.delete_context(session)
        jobs = self._jobs()
        if session in jobs:
            del jobs[session]
            self._save_jobs(jobs)
        return True


class SecaggBiprimeManager:
    """Fed-BioMed's ``SecaggBiprimeManager`` (table ``SecaggBiprime``) over a secagg home.

    secagg, like Fed-BioMed v4.5.0 in practice, uses public *default* biprimes only: Fed-BioMed's
    dynamic biprimes are a placeholder in v4.5.0 (a random dummy with ``max_keysize`` 0, "not
    implemented yet"). An entry is ``{secagg_id, parties: None, context: {'biprime': int,
    'max_keysize': int}}``, ``job_id`` is unused (as in Fed-BioMed).

    The default biprimes are Fed-BioMed's ``default_biprime0`` (``secagg.DEFAULT_BIPRIME0``)
    until ``update_default_biprimes`` sets others (from a directory of Fed-BioMed biprime files,
    as Fed-BioMed's component start does); they are kept in ``<home>/fedbiomed-biprimes.json``.
    The biprime of an entry is what ``Home.encrypt`` / ``Home.decrypt`` and ``SecaggCrypter``
    take as ``biprime``.

    Differences, each raising the ``secagg`` exception instead of ``FedbiomedSecaggError``:
    ``add`` (storing a dynamic biprime) raises ``InvalidInput``: secagg does not take a biprime
    whose factorisation someone may know; ``remove`` of a default biprime raises
    ``InvalidInput`` (Fed-BioMed refuses it too, FB623); every biprime file is checked as secagg
    checks ``--biprime FILE`` (an odd number of 512 to 1024 bits) besides Fed-BioMed's format
    check (``secagg_id`` a non-empty string, ``biprime`` and ``max_keysize`` integers), and a
    refused file changes nothing (``InvalidInput``).
    """

    def __init__(self, db_path: PathLike) -> None:
        self._home = _native.Home(db_path)
        self._path = os.path.join(os.fspath(db_path), "fedbiomed-biprimes.json")

    def _defaults(self) -> Dict[str, Dict[str, int]]:
        try:
            with open(self._path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {
                DEFAULT_BIPRIME_ID: {
                    "biprime": int(_native.DEFAULT_BIPRIME0),
                    "max_keysize": DEFAULT_MAX_KEYSIZE,
                }
            }
        if not isinstance(data, dict) or not isinstance(data.get("default_biprimes"), list):
            raise InvalidInput(f"{self._path} is not secagg's list of default biprimes")
        return {
            e["secagg_id"]: {"biprime": int(e["biprime"]), "max_keysize": int(e["max_keysize"])}
            for e in data["default_biprimes"]
        }

    def get(self, secagg_id: str, job_id: None = None) -> Optional[Dict[str, Any]]:
        """The entry of the default biprime ``secagg_id`` (``{secagg_id, parties: None,
        context: {'biprime': int, 'max_keysize': int}}``), ``None`` when there is none."""
        entry = self._defaults().get(secagg_id)
        if entry is None:
            return None
        return {"secagg_id": secagg_id, "parties": None, "context": dict(entry)}

    def add(
        self,
        secagg_id: str,
        parties: List[str],
        context: Dict[str, int],
        job_id: None = None,
    ) -> None:
        """Fed-BioMed stores a dynamic biprime here. Difference: refused (``InvalidInput``).
        secagg uses the public default biprimes only (``get(DEFAULT_BIPRIME_ID)``)."""
        raise InvalidInput(
            f"secagg does not store dynamic biprimes (`{secagg_id}`): it uses the public default "
            f"biprimes only (Fed-BioMed v4.5.0's dynamic biprime is a dummy)",
            f"use the default biprime `{DEFAULT_BIPRIME_ID}` (secagg.DEFAULT_BIPRIME0)",
        )

    def remove(self, secagg_id: str, job_id: None = None) -> bool:
        """``False`` when no biprime ``secagg_id`` exists; a default biprime cannot be removed
        (``InvalidInput``, as Fed-BioMed's FB623)."""
        if secagg_id in self._defaults():
            raise InvalidInput(
                f"not authorized to remove the default biprime `{secagg_id}`",
                "default biprimes change with update_default_biprimes",
            )
        return False

    def update_default_biprimes(
        self, allow_default_biprimes: bool, default_biprimes_dir: PathLike
    ) -> None:
        """Replaces the default biprimes with those of the ``*.json`` files in
        ``default_biprimes_dir`` (Fed-BioMed's ``{"secagg_id", "biprime", "max_keysize"}``), or
        with none when ``allow_default_biprimes`` is false. Every file is checked before anything
        changes (``InvalidInput`` names the refused file)."""
        entries: List[Dict[str, Any]] = []
        if allow_default_biprimes:
            directory = os.fspath(default_biprimes_dir)
            try:
                names = sorted(os.listdir(directory))
            except OSError as e:
                raise InvalidInput(f"cannot read the default biprimes directory {directory}: {e}")
            for name in names:
                if not name.endswith(".json"):
                    continue
                path = os.path.join(directory, name)
                try:
                    with open(path) as f:
                        text = f.read()
                    doc = json.loads(text)
                except (OSError, ValueError) as e:
                    raise InvalidInput(f"cannot parse default biprime file `{name}`: {e}")
                if (
                    not isinstance(doc, dict)
                    or not isinstance(doc.get("secagg_id"), str)
                    or not doc["secagg_id"]
                    or type(doc.get("biprime")) is not int
                    or type(doc.get("max_keysize")) is not int
                ):
                    raise InvalidInput(
                        f"bad biprime format in file `{name}`: expected a non-empty string "
                        f"`secagg_id` and integers `biprime` and `max_keysize`"
                    )
                try:
                    _native.read_biprime(text)
                except InvalidInput as e:
                    raise InvalidInput(f"bad biprime in file `{name}`: {e.message}", e.hint)
                entries.append(
                    {
                        "secagg_id": doc["secagg_id"],
                        "biprime": str(doc["biprime"]),
                        "max_keysize": doc["max_keysize"],
                    }
                )
        tmp = self._path + ".tmp"
        _write_public(tmp, json.dumps({"default_biprimes": entries}, indent=1))
        os.replace(tmp, self._path)


class SecaggCrypter:
    """Fed-BioMed's ``SecaggCrypter`` over secagg's Joye–Libert implementation: ciphertexts are
    bit-identical to Fed-BioMed v4.5.0's, the secret exponentiations constant-time and spread
    over the cores (the GIL is released)."""

    def encrypt(
        self,
        num_nodes: int,
        current_round: int,
        params: List[float],
        key: int,
        biprime: int,
        clipping_range: Optional[int] = None,
        weight: Optional[int] = None,
    ) -> List[int]:
        """Quantises ``params`` (clipped to ``[-clipping_range, clipping_range]``, default 3),
        packs them for ``num_nodes`` nodes and encrypts them for round ``current_round`` with the
        node's ``key``. ``weight`` is accepted and unused, as in Fed-BioMed v4.5.0.
        Raises ``InvalidInput`` for non-float parameters, a non-int key, a non-finite value or a
        biprime that is not an odd number of 512 to 1024 bits."""
        if not isinstance(params, list) or not all(isinstance(p, float) for p in params):
            raise InvalidInput("the parameters to encrypt must be a list of floats")
        if not isinstance(key, int):
            raise InvalidInput("the key must be an int")
        cr = _native.DEFAULT_CLIPPING_RANGE if clipping_range is None else clipping_range
        return _native.jl_encrypt(num_nodes, current_round, params, key, biprime, cr)

    def aggregate(
        self,
        current_round: int,
        num_nodes: int,
        params: List[List[int]],
        key: int,
        biprime: int,
        total_sample_size: int,
        clipping_range: Optional[int] = None,
        count: Optional[int] = None,
    ) -> List[float]:
        """Multiplies the nodes' ciphertexts (``params[i]`` from node i), decrypts the sum with
        the server ``key`` and returns the average of the nodes' parameters.
        ``total_sample_size`` is unused, as in Fed-BioMed v4.5.0 (a plain average).

        ``count`` (secagg's addition) is the number of parameters: give it to get exactly them.
        Without it, as in Fed-BioMed, trailing zero sums (the padding of the last plaintext) are
        dropped. Difference: Fed-BioMed also drops zero sums at the end of every other plaintext
        (a value every node clipped to the lower bound), which shifts the values after them;
        secagg keeps every value but the last plaintext's padding.
        """
        if len(params) != num_nodes:
            raise InvalidInput(
                f"{len(params)} nodes sent parameters, the crypter expects {num_nodes}"
            )
        if not all(isinstance(p, list) and all(isinstance(c, int) for c in p) for p in params):
            raise InvalidInput("the parameters to aggregate must be lists of ints")
        cr = _native.DEFAULT_CLIPPING_RANGE if clipping_range is None else clipping_range
        sums = _native.jl_decrypt_sums(num_nodes, current_round, params, key, biprime, count)
        if count is None:
            while sums and sums[-1] == 0:
                sums.pop()
        return _native.jl_average(sums, num_nodes, cr)
