"""Fed-BioMed v4.5.0's secure-aggregation classes, backed by secagg: a drop-in.

Fed-BioMed's node and researcher code builds ``CertificateManager``, ``MPCController``,
``SecaggServkeyManager``, ``SecaggBiprimeManager`` and ``SecaggCrypter`` with the arguments it
always passes (the component's TinyDB path ``environ['DB_PATH']``, its ``TMP_DIR`` and id) and
uses what they return as it always did. These classes take exactly those arguments and keep each
call's contract; :func:`install` puts them in place of Fed-BioMed's own (its modules, the
instances those modules built at import, and Fed-BioMed's ``certificate`` CLI), so that a site
enables secagg without editing Fed-BioMed.

**Where the state lives.** The TinyDB path ``<root>/var/db_<id>.json`` maps to the secagg home
``<root>/var/db_<id>.secagg/`` (:func:`home_for`). On first use that home is created by adopting
the component's own identity (``secagg init --from-fedbiomed``: the certificate, key, id and
MP-SPDZ ip/port of the ``etc/*.ini`` whose ``[default] id`` is ``<id>``) and importing the
TinyDB ``Certificates`` table, every entry validated, all or nothing; the error says what to do
when that cannot be done. A path that is a secagg home directory is used as such. Certificates
are the home's registered peers; server-key and biprime entries are tables of the home's store
(one transaction per call: processes sharing a home never lose an update).

**Negotiation.** ``MPCController.exec_shamir(party_number, num_parties, ip_addresses)`` runs
secagg's authenticated native negotiation instead of MP-SPDZ: the researcher (party 0) names a
fresh session and asks its nodes; each node serves exactly one session among the parties of the
``P<i>.pem`` files that ``write_mpc_certificates_for_experiment`` wrote (no session id reaches
``exec_shamir``), checked against the registered certificates and endpoints. It returns the path
of the file Fed-BioMed then reads (``Output-P0-0``: the server key; ``Input-P<i>-0``: the node's
key), mode 0600; ``SecaggServkeyManager.add`` attaches the key to Fed-BioMed's ``secagg_id`` and
deletes that file and this party's ``P<i>.key`` copy.

**Errors.** Every adapter error is a :class:`secagg.Error` of its kind; when ``fedbiomed`` is
importable it is also an instance of the Fed-BioMed class that the replaced call raises
(``FedbiomedCertificateError``, ``FedbiomedMPCControllerError``, ``FedbiomedSecaggError``,
``FedbiomedSecaggCrypterError``), with secagg's message and hint. No raw ``OSError`` escapes.

**Intended differences** (each also in its method's docstring and in the README): certificates
are validated before they are stored (one X.509 v3 certificate, valid now, supported key,
self-signature), a party cannot register itself, the component must be the one the id implies;
a server-key entry can only attach a key this home negotiated (confirmed, same parties);
``generate_self_signed_ssl_certificate`` makes an ECDSA P-256 key; a port comes back as an
``int``; ``SecaggCrypter.aggregate`` keeps interior zero sums that Fed-BioMed drops.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, Union

from .. import _native
from .._errors import (
    Conflict,
    Error,
    InvalidInput,
    NotFound,
    StorageError,
)

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
    "DEFAULT_TIMEOUT",
    "home_for",
    "install",
]

_log = logging.getLogger("secagg.fedbiomed")

#: Fed-BioMed's ``ComponentType`` names, as stored in a certificate document's ``component``.
NODE = "NODE"
RESEARCHER = "RESEARCHER"
#: Fed-BioMed's ``SecaggElementTypes.SERVER_KEY``.
SERVER_KEY_ELEMENT = 0
#: Fed-BioMed's ``SecaggElementTypes.BIPRIME``.
BIPRIME_ELEMENT = 1
#: The ``secagg_id`` of Fed-BioMed v4.5.0's default biprime (``envs/common/default_biprimes/
#: biprime0.json``), whose value is ``secagg.DEFAULT_BIPRIME0``.
DEFAULT_BIPRIME_ID = "default_biprime0"
#: The ``max_keysize`` of that file.
DEFAULT_MAX_KEYSIZE = 2048
#: Seconds ``exec_shamir`` waits for the session (the researcher for its nodes to listen, a node
#: for the researcher's request), then for the session itself; ``SECAGG_FEDBIOMED_TIMEOUT``
#: overrides it.
DEFAULT_TIMEOUT = 60.0

#: For ``except`` clauses written for Fed-BioMed: every adapter error is a ``secagg.Error``.
FedbiomedError = Error

PathLike = Union[str, "os.PathLike[str]"]
F = TypeVar("F", bound=Callable[..., Any])


# ---------------------------------------------------------------------------------------------
# Errors: secagg's kinds, as Fed-BioMed's classes when Fed-BioMed is importable

_FEDBIOMED_CLASS = {
    "certificate": "FedbiomedCertificateError",
    "mpc": "FedbiomedMPCControllerError",
    "secagg": "FedbiomedSecaggError",
    "crypter": "FedbiomedSecaggCrypterError",
}
_combined: Dict[Tuple[type, type], type] = {}
_combined_lock = threading.Lock()


def _fedbiomed_class(area: str) -> Optional[type]:
    """Fed-BioMed's exception class for ``area``, or ``None`` when Fed-BioMed is not importable
    (or has no such class)."""
    try:
        from fedbiomed.common import exceptions  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - any failure to import means: no Fed-BioMed here
        return None
    cls = getattr(exceptions, _FEDBIOMED_CLASS[area], None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _as_fedbiomed(err: Error, area: str) -> Error:
    """``err`` as an instance of both its secagg class and Fed-BioMed's class for ``area``."""
    fb = _fedbiomed_class(area)
    if fb is None or isinstance(err, fb):
        return err
    key = (type(err), fb)
    with _combined_lock:
        cls = _combined.get(key)
        if cls is None:
            cls = type(
                type(err).__name__,
                (type(err), fb),
                {
                    "__module__": __name__,
                    "__doc__": f"{type(err).__doc__} (also Fed-BioMed's {fb.__name__})",
                },
            )
            _combined[key] = cls
    new = cls(err.message, err.hint, err.exit_code, err.kind)
    new.report = err.report
    return new


def _from_os_error(e: OSError) -> Error:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"{e.strerror}: {e.filename}" if e.filename else str(e))
    if isinstance(e, (NotADirectoryError, IsADirectoryError)):
        return InvalidInput(f"{e.strerror}: {e.filename}" if e.filename else str(e))
    return StorageError(str(e))


def _raises(area: str) -> Callable[[F], F]:
    """Makes every ``secagg.Error`` (and ``OSError``) leaving the call an instance of Fed-BioMed's
    class for ``area`` too."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Error as e:
                raise _as_fedbiomed(e, area).with_traceback(e.__traceback__) from None
            except OSError as e:
                raise _as_fedbiomed(_from_os_error(e), area) from e

        return call  # type: ignore[return-value]

    return wrap


# ---------------------------------------------------------------------------------------------
# Homes

_homes: Dict[str, str] = {}
_homes_lock = threading.Lock()


def home_for(db_path: PathLike) -> str:
    """The secagg home of the Fed-BioMed component whose TinyDB file is ``db_path``
    (``<dir>/<stem>.secagg``, or ``db_path`` itself when it is a secagg home), created on first
    use by adopting the component (see the module documentation)."""
    key = os.path.abspath(os.fspath(db_path))
    with _homes_lock:
        home = _homes.get(key)
        if home is None:
            info = _native.fedbiomed_home(key)
            if info["created"]:
                _log.info(
                    "secagg home %s created for Fed-BioMed component %s (%s certificate(s) "
                    "imported from %s)",
                    info["home"],
                    info["party_id"],
                    info["imported"] if info["imported"] is not None else "no",
                    key,
                )
                for w in info.get("warnings") or []:
                    _log.warning("%s", w)
            home = os.fspath(info["home"])
            _homes[key] = home
    return home


def _timeout() -> float:
    text = os.environ.get("SECAGG_FEDBIOMED_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"SECAGG_FEDBIOMED_TIMEOUT is not a number of seconds: {text!r}")
    if not 0 < value <= 600:
        raise InvalidInput(f"SECAGG_FEDBIOMED_TIMEOUT must be within (0, 600] seconds: {text!r}")
    return value


def _component_name(component: Any) -> str:
    """``"NODE"`` / ``"RESEARCHER"`` from a string or Fed-BioMed's ``ComponentType`` member."""
    return str(getattr(component, "name", component)).upper()


def _write_private(path: str, text: str) -> None:
    """Writes a secret file with mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _write_public(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        _log.warning("cannot remove %s: %s", path, e)


# ---------------------------------------------------------------------------------------------
# CertificateManager


def _document(peer: Dict[str, Any]) -> Dict[str, Any]:
    """Fed-BioMed's certificate document of a registered peer."""
    return {
        "party_id": peer["party_id"],
        "certificate": peer["certificate"],
        "ip": peer["ip"],
        "port": peer["port"],
        "component": peer["component"],
    }


class CertificateManager:
    """Fed-BioMed's ``CertificateManager`` over a secagg home's registered peers.

    ``db_path`` is what Fed-BioMed passes (the component's TinyDB file; see :func:`home_for`) or
    a secagg home directory. A document is ``{party_id, certificate, ip, port, component}``; its
    document id is stable (an upsert keeps it) and ``list()`` is in registration order, as
    TinyDB's.
    """

    def __init__(self, db_path: Optional[PathLike] = None) -> None:
        self._db_path: Optional[str] = None
        if db_path is not None:
            self.set_db(db_path)

    @_raises("certificate")
    def set_db(self, db_path: PathLike) -> None:
        """Uses the home of ``db_path`` (found, or created, on first use)."""
        self._db_path = os.path.abspath(os.fspath(db_path))

    @property
    def home(self) -> "_native.Home":
        """The secagg home behind this manager."""
        if self._db_path is None:
            raise _as_fedbiomed(
                NotFound("no database is set", "call set_db(environ['DB_PATH'])"), "certificate"
            )
        try:
            return _native.Home(home_for(self._db_path))
        except Error as e:
            raise _as_fedbiomed(e, "certificate") from None

    def _doc_ids(self) -> List[Tuple[str, int]]:
        return _native.fedbiomed_certificate_documents(self.home.path)

    def _doc_id(self, party_id: str) -> int:
        for party, doc_id in self._doc_ids():
            if party == party_id:
                return doc_id
        raise NotFound(f"party `{party_id}` is not registered")

    @_raises("certificate")
    def insert(
        self,
        certificate: str,
        party_id: str,
        component: Any,
        ip: str,
        port: Union[int, str],
        upsert: bool = False,
    ) -> Union[int, List[int]]:
        """Registers ``certificate`` (PEM text) for ``party_id`` at ``ip:port``; returns the
        document id (a one-element list with ``upsert``, as TinyDB's upsert).

        An existing party id without ``upsert`` raises (``Conflict``; Fed-BioMed: FB619).
        Differences: the certificate is validated before it is stored (one X.509 v3 certificate,
        valid now, supported key, self-signature), as are the ip and port; this party's own id
        and a certificate already registered under another id are refused; ``component`` must be
        the one the id implies (``node_…`` is a NODE, any other id a RESEARCHER: Fed-BioMed's
        rule), ``InvalidInput`` otherwise.
        """
        role = "node" if _component_name(component) == NODE else "researcher"
        data = certificate.encode() if isinstance(certificate, str) else certificate
        self.home.register(
            data, party_id, ip, int(port), upsert=upsert, role=role, allow_custom_id=True
        )
        doc_id = self._doc_id(party_id)
        return [doc_id] if upsert else doc_id

    @_raises("certificate")
    def get(self, party_id: str) -> Optional[Dict[str, Any]]:
        """The document of ``party_id``, or ``None`` when no such party is registered (a
        malformed id included, as in Fed-BioMed)."""
        home = self.home
        try:
            return _document(home.peer(party_id))
        except (NotFound, InvalidInput):
            return None

    @_raises("certificate")
    def delete(self, party_id: str) -> List[int]:
        """Deletes the registration of ``party_id``; returns the removed document ids (``[]``
        when it was not registered)."""
        home = self.home
        try:
            doc_id = self._doc_id(party_id)
        except NotFound:
            return []
        home.delete_peer(party_id)
        return [doc_id]

    @_raises("certificate")
    def list(self, verbose: bool = False) -> List[Dict[str, Any]]:
        """Every document, in registration order; ``verbose`` also prints them as a table
        without the certificate (with ``tabulate`` when it is installed, as Fed-BioMed)."""
        home = self.home
        docs = []
        for party, doc_id in self._doc_ids():
            try:
                docs.append(_document(home.peer(party)))
            except NotFound:  # deleted by another process meanwhile
                continue
        if verbose:
            _print_documents(docs)
        return docs

    @_raises("certificate")
    def register_certificate(
        self,
        certificate_path: PathLike,
        party_id: str,
        ip: str,
        port: Union[int, str],
        upsert: bool = False,
    ) -> Union[int, List[int]]:
        """Registers the certificate file ``certificate_path`` (PEM or DER); the component is the
        one the id implies, as in Fed-BioMed. Same checks as ``insert``; a missing file raises
        (``NotFound``)."""
        role = "node" if party_id.startswith("node_") else "researcher"
        self.home.register(
            os.fspath(certificate_path),
            party_id,
            ip,
            int(port),
            upsert=upsert,
            role=role,
            allow_custom_id=True,
        )
        doc_id = self._doc_id(party_id)
        return [doc_id] if upsert else doc_id

    @_raises("certificate")
    def write_mpc_certificates_for_experiment(
        self,
        parties: List[str],
        path_certificates: PathLike,
        path_ips: PathLike,
        self_id: str,
        self_ip: str,
        self_port: Union[int, str],
        self_private_key: PathLike,
        self_public_key: PathLike,
    ) -> Tuple[str, List[str]]:
        """Writes MP-SPDZ's ``Player-Data``: ``P<i>.pem`` for every party in ``parties`` order
        (this party's key as ``P<i>.key``, mode 0600) and the ip file ``<path_ips>/ip_addresses``
        (``ip:port`` per line, same order, by secagg's rule: an IPv6 literal is refused).
        Returns ``(ip_file, written paths)``.

        Raises if a path is not a directory (``InvalidInput``) or a party is not registered
        (``NotFound``). Difference: every party is looked up before anything is written, so a
        refusal leaves no file behind (Fed-BioMed removes what it wrote). The ``P<i>.key`` copy
        is deleted again by ``MPCController.exec_shamir`` (secagg's negotiation uses the home's
        key).
        """
        for what, p in (("path_certificates", path_certificates), ("path_ips", path_ips)):
            if not os.path.isdir(p):
                raise InvalidInput(
                    f"specified `{what}` argument should be a directory; {os.fspath(p)} is not a "
                    f"directory or does not exist"
                )
        path_certificates = os.path.abspath(os.fspath(path_certificates))
        path_ips = os.path.abspath(os.fspath(path_ips))
        plan = self._mpc_plan(parties, self_id, self_ip, self_port, self_private_key, self_public_key)
        ip_file = os.path.join(path_ips, "ip_addresses")
        _remove_quietly(ip_file)
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

    def _mpc_plan(
        self,
        parties: List[str],
        self_id: str,
        self_ip: str,
        self_port: Union[int, str],
        self_private_key: PathLike,
        self_public_key: PathLike,
    ) -> List[Tuple[int, str, Optional[str], str]]:
        """(index, certificate, key, ip-file line) of every party, all checked before anything
        is written."""
        plan: List[Tuple[int, str, Optional[str], str]] = []
        for index, party in enumerate(parties):
            if party == self_id:
                with open(self_private_key) as f:
                    key = f.read()
                with open(self_public_key) as f:
                    pem = f.read()
                plan.append((index, pem, key, _native.ip_file_line(self_ip, int(self_port))))
                continue
            doc = self.get(party)
            if doc is None:
                raise NotFound(
                    f"certificate for {party} is not existing: the certificate of every party of "
                    f"the experiment must be registered",
                    f"{self_id} must register the certificate of {party}",
                )
            line = _native.ip_file_line(doc["ip"], int(doc["port"]))
            plan.append((index, doc["certificate"], None, line))
        return plan

    @staticmethod
    @_raises("certificate")
    def generate_self_signed_ssl_certificate(
        certificate_folder: PathLike,
        certificate_name: str = "MPSPDZ_certificate",
        component_id: str = "unknown",
    ) -> Tuple[str, str]:
        """Writes ``<certificate_name>.key`` (0600) and ``.pem`` in the existing directory
        ``certificate_folder``: a self-signed certificate ``CN=*``, ``O=<component_id>``, valid
        5 years. Returns ``(key_path, pem_path)``, absolute.

        Difference: an ECDSA P-256 key, not RSA-2048 (secagg's default, accepted by MP-SPDZ and
        by every secagg party; Fed-BioMed's RSA certificates are accepted when registered), a
        128-bit random serial and the serverAuth + clientAuth key usages.
        """
        folder = os.path.abspath(os.fspath(certificate_folder))
        if not os.path.isdir(folder):
            raise InvalidInput(f"certificate path is not a directory: {folder}")
        key_pem, cert_pem = _native.generate_certificate(component_id)
        key_file = os.path.join(folder, f"{certificate_name}.key")
        pem_file = os.path.join(folder, f"{certificate_name}.pem")
        _write_private(key_file, key_pem)
        _write_public(pem_file, cert_pem)
        return key_file, pem_file


def _print_documents(docs: List[Dict[str, Any]]) -> None:
    cols = ["party_id", "component", "ip", "port"]
    rows = [[str(d[c]) for c in cols] for d in docs]
    try:
        from tabulate import tabulate  # type: ignore[import-untyped]

        print(tabulate(rows, headers=cols))
        return
    except ImportError:
        pass
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


# ---------------------------------------------------------------------------------------------
# MPCController

#: Key files ``exec_shamir`` wrote and ``SecaggServkeyManager.add`` deletes, by (home, session).
_key_files: Dict[Tuple[str, str], str] = {}
_key_files_lock = threading.Lock()


class MPCController:
    """Fed-BioMed's ``MPCController``: runs this party's side of the server-key negotiation, with
    secagg's authenticated native engine instead of Fed-BioMed's ``fedbiomed_mpc`` script.

    The directories are Fed-BioMed's (``<tmp_dir>/MPC/<component_id>/<uuid4>/MP-SPDZ/
    Player-Data``). The secagg home is ``home`` (secagg's addition) or, as Fed-BioMed lays a
    component out (``TMP_DIR`` is ``<root>/var/tmp``, ``DB_PATH`` is ``<root>/var/db_<id>.json``),
    the home of ``<parent of tmp_dir>/db_<component_id>.json`` (:func:`home_for`).
    """

    @_raises("mpc")
    def __init__(
        self,
        tmp_dir: PathLike,
        component_type: Any,
        component_id: str,
        home: Optional[PathLike] = None,
    ) -> None:
        self._component_type = component_type
        self._component_id = component_id
        tmp_dir = os.path.abspath(os.fspath(tmp_dir))
        self._tmp_dir = os.path.join(tmp_dir, "MPC", component_id, str(uuid.uuid4()))
        self._mpc_data_dir = os.path.join(self._tmp_dir, "MP-SPDZ", "Player-Data")
        os.makedirs(self._mpc_data_dir, mode=0o700, exist_ok=True)
        if home is not None:
            self._db_path = os.path.abspath(os.fspath(home))
        else:
            self._db_path = os.path.join(os.path.dirname(tmp_dir), f"db_{component_id}.json")

    @property
    def mpc_data_dir(self) -> str:
        """``<tmp_dir>/MPC/<component_id>/<uuid>/MP-SPDZ/Player-Data``."""
        return self._mpc_data_dir

    @property
    def tmp_dir(self) -> str:
        """``<tmp_dir>/MPC/<component_id>/<uuid>``."""
        return self._tmp_dir

    @property
    def home(self) -> "_native.Home":
        """The secagg home of this component."""
        return _native.Home(home_for(self._db_path))

    @_raises("mpc")
    def exec_shamir(
        self,
        party_number: int,
        num_parties: int,
        ip_addresses: PathLike,
        *,
        timeout: Optional[float] = None,
    ) -> str:
        """Runs the server-key negotiation as party ``party_number`` of ``num_parties`` and
        returns the path of the file holding this party's result: ``<tmp_dir>/Output-P0-0``
        (the server key ``sk0``, signed decimal) at the researcher, ``<tmp_dir>/Input-P<i>-0``
        (the node's key ``sk_i``) at a node, with ``sk0 + Σ sk_i = 0``. Mode 0600; deleted by
        ``SecaggServkeyManager.add``.

        The parties are those of the ``P<i>.pem`` files in ``mpc_data_dir`` (written by
        ``write_mpc_certificates_for_experiment``), each of which must be the registered
        certificate of a party (this party's own at ``party_number``); the ip file must list
        their registered endpoints. The researcher names a fresh session and asks its nodes
        (waiting for them to listen); a node serves exactly one session among these parties,
        requested by their researcher. Each waits ``timeout`` seconds (secagg's addition;
        default ``SECAGG_FEDBIOMED_TIMEOUT`` or 60). The key is also stored in the home (a
        node's confirmed only once the researcher confirmed it).
        """
        wait = _timeout() if timeout is None else float(timeout)
        home = self.home
        try:
            me = home.identity()
            parties = self._parties(home, me, party_number, num_parties)
            self._check_ip_file(home, me, parties, ip_addresses)
            if party_number == 0:
                # Up to `wait` for the nodes to listen, as long again for the session itself.
                report = home.session_run(
                    parties=parties[1:],
                    session=_native.new_session_id(False),
                    timeout=min(2 * wait, 600.0),
                    wait_for_agents=wait,
                )
                session = report["session_id"]
                path = os.path.join(self._tmp_dir, "Output-P0-0")
            else:
                session = home.serve_one_session(parties, wait=wait)
                path = os.path.join(self._tmp_dir, f"Input-P{party_number}-0")
        finally:
            _remove_quietly(os.path.join(self._mpc_data_dir, f"P{party_number}.key"))
        key = home.context(session, reveal_key=True)["key"]
        _write_private(path, f"{key}\n")
        with _key_files_lock:
            _key_files[(os.fspath(home.path), session)] = path
        return path

    def _parties(
        self, home: "_native.Home", me: Dict[str, Any], party_number: int, num_parties: int
    ) -> List[str]:
        """The party ids of ``P0.pem`` … ``P<n-1>.pem``, matched to registered certificates by
        fingerprint."""
        if not isinstance(num_parties, int) or num_parties < 3:
            raise InvalidInput(f"num_parties must be an int of at least 3, not {num_parties!r}")
        if not isinstance(party_number, int) or not 0 <= party_number < num_parties:
            raise InvalidInput(f"party_number {party_number!r} is not in 0..{num_parties - 1}")
        by_fingerprint = {p["fingerprint"]: p["party_id"] for p in home.peers()}
        by_fingerprint[me["fingerprint"]] = me["party_id"]
        parties = []
        for index in range(num_parties):
            pem_path = os.path.join(self._mpc_data_dir, f"P{index}.pem")
            with open(pem_path, "rb") as f:
                fingerprint = _native.certificate_fingerprint(f.read(), pem_path)
            party = by_fingerprint.get(fingerprint)
            if party is None:
                raise NotFound(
                    f"{pem_path} is not the certificate of a registered party",
                    "write the party files with write_mpc_certificates_for_experiment",
                )
            parties.append(party)
        if parties[party_number] != me["party_id"]:
            raise InvalidInput(
                f"party_number {party_number} is {parties[party_number]}, not this party "
                f"({me['party_id']})"
            )
        return parties

    def _check_ip_file(
        self,
        home: "_native.Home",
        me: Dict[str, Any],
        parties: List[str],
        ip_addresses: PathLike,
    ) -> None:
        with open(ip_addresses) as f:
            given = [line.strip() for line in f if line.strip()]
        endpoints = [me if p == me["party_id"] else home.peer(p) for p in parties]
        expected = [_native.ip_file_line(e["ip"], int(e["port"])) for e in endpoints]
        if given != expected:
            raise InvalidInput(
                f"the ip file {os.fspath(ip_addresses)} lists {given}, the registered endpoints "
                f"are {expected}",
                "write it again with write_mpc_certificates_for_experiment (MPSPDZ_IP and "
                "MPSPDZ_PORT must be this party's registered endpoint)",
            )


def _forget_key_file(home: str, session: str) -> None:
    with _key_files_lock:
        path = _key_files.pop((home, session), None)
    if path is not None:
        _remove_quietly(path)


# ---------------------------------------------------------------------------------------------
# Secagg element managers


class SecaggServkeyManager:
    """Fed-BioMed's ``SecaggServkeyManager`` (table ``SecaggServkey``) over a secagg home.

    An entry is ``{secagg_id, parties, job_id, context: {'server_key': int}}``, where
    ``server_key`` is the key this party holds: ``sk0`` at the researcher, the node's ``sk_i``
    at a node (as in Fed-BioMed, where both sides use this table). ``db_path`` as for
    ``CertificateManager``.
    """

    @_raises("secagg")
    def __init__(self, db_path: PathLike) -> None:
        self._db_path = os.path.abspath(os.fspath(db_path))

    def _home(self) -> str:
        return home_for(self._db_path)

    @_raises("secagg")
    def get(self, secagg_id: str, job_id: Optional[str]) -> Optional[Dict[str, Any]]:
        """The entry ``secagg_id``, ``None`` when there is none. An entry of another job raises
        (``Conflict``; Fed-BioMed: FB623). Difference: an entry whose key was deleted from the
        home (``secagg context delete`` / ``prune``) raises ``NotFound``."""
        return _native.fedbiomed_servkey_get(self._home(), secagg_id, job_id)

    @_raises("secagg")
    def add(
        self,
        secagg_id: str,
        parties: List[str],
        context: Dict[str, int],
        job_id: Optional[str],
    ) -> None:
        """Adds the entry ``secagg_id``; an existing one raises (``Conflict``, as Fed-BioMed).

        Difference: the entry attaches a key this home negotiated (``exec_shamir``,
        ``Home.negotiate``, ``Home.session_run``): ``context['server_key']`` must be the
        confirmed key of a session among exactly ``parties`` (``VerificationFailed``
        otherwise), so nothing unchecked is stored. The key file ``exec_shamir`` returned is
        deleted.
        """
        if not isinstance(context, dict) or type(context.get("server_key")) is not int:
            raise InvalidInput("context must be a dict whose `server_key` is an int")
        if not isinstance(parties, list) or not all(isinstance(p, str) for p in parties):
            raise InvalidInput("parties must be a list of party ids")
        home = self._home()
        session = _native.fedbiomed_servkey_add(
            home, secagg_id, parties, context["server_key"], job_id
        )
        _forget_key_file(os.fspath(home), session)

    @_raises("secagg")
    def remove(self, secagg_id: str, job_id: Optional[str]) -> bool:
        """Removes the entry ``secagg_id`` and erases its key from the home; ``False`` when
        there is none. An entry of another job raises (``Conflict``; Fed-BioMed: FB623)."""
        return _native.fedbiomed_servkey_remove(self._home(), secagg_id, job_id)


class SecaggBiprimeManager:
    """Fed-BioMed's ``SecaggBiprimeManager`` (table ``SecaggBiprime``) over a secagg home.

    An entry is ``{secagg_id, parties, context: {'biprime': int, 'max_keysize': int}}``;
    ``job_id`` is unused, as in Fed-BioMed. Until ``update_default_biprimes`` sets them (as
    Fed-BioMed's component start does), the default biprime is Fed-BioMed's
    ``default_biprime0`` (``secagg.DEFAULT_BIPRIME0``). Dynamic entries are stored as
    Fed-BioMed stores them (v4.5.0's are a dummy with ``max_keysize`` 0); ``SecaggCrypter`` and
    ``Home.encrypt`` refuse any biprime that is not an odd number of 512 to 1024 bits.
    """

    @_raises("secagg")
    def __init__(self, db_path: PathLike) -> None:
        self._db_path = os.path.abspath(os.fspath(db_path))

    def _home(self) -> str:
        return home_for(self._db_path)

    @_raises("secagg")
    def get(self, secagg_id: str, job_id: None = None) -> Optional[Dict[str, Any]]:
        """The entry ``secagg_id``, ``None`` when there is none."""
        entry = _native.fedbiomed_biprime_get(self._home(), secagg_id)
        if entry is not None:
            del entry["default"]
        return entry

    @_raises("secagg")
    def add(
        self,
        secagg_id: str,
        parties: Optional[List[str]],
        context: Dict[str, int],
        job_id: None = None,
    ) -> None:
        """Adds the dynamic biprime ``secagg_id``; an existing entry raises (``Conflict``, as
        Fed-BioMed)."""
        if (
            not isinstance(context, dict)
            or type(context.get("biprime")) is not int
            or type(context.get("max_keysize")) is not int
        ):
            raise InvalidInput("context must be a dict with int `biprime` and `max_keysize`")
        _native.fedbiomed_biprime_add(
            self._home(), secagg_id, parties, context["biprime"], context["max_keysize"]
        )

    @_raises("secagg")
    def remove(self, secagg_id: str, job_id: None = None) -> bool:
        """Removes the dynamic biprime ``secagg_id``; ``False`` when there is none. A default
        biprime raises (``InvalidInput``; Fed-BioMed: FB623)."""
        return _native.fedbiomed_biprime_remove(self._home(), secagg_id)

    @_raises("secagg")
    def update_default_biprimes(
        self, allow_default_biprimes: bool, default_biprimes_dir: PathLike
    ) -> None:
        """Replaces the default biprimes with those of the ``*.json`` files in
        ``default_biprimes_dir`` (Fed-BioMed's ``{"secagg_id", "biprime", "max_keysize"}``), or
        with none when ``allow_default_biprimes`` is false, in one transaction. Every file is
        checked before anything changes (``InvalidInput`` names the refused file); difference:
        also as secagg checks ``--biprime FILE`` (an odd number of 512 to 1024 bits)."""
        entries: List[Tuple[str, int, int]] = []
        if allow_default_biprimes:
            directory = os.fspath(default_biprimes_dir)
            for name in sorted(os.listdir(directory)):
                if name.endswith(".json"):
                    entries.append(_read_default_biprime(os.path.join(directory, name), name))
        _native.fedbiomed_set_default_biprimes(self._home(), entries)


def _read_default_biprime(path: str, name: str) -> Tuple[str, int, int]:
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
            f"bad biprime format in file `{name}`: expected a non-empty string `secagg_id` and "
            f"integers `biprime` and `max_keysize`"
        )
    try:
        _native.read_biprime(text)
    except InvalidInput as e:
        raise InvalidInput(f"bad biprime in file `{name}`: {e.message}", e.hint)
    return doc["secagg_id"], doc["biprime"], doc["max_keysize"]


# ---------------------------------------------------------------------------------------------
# SecaggCrypter


class SecaggCrypter:
    """Fed-BioMed's ``SecaggCrypter`` over secagg's Joye–Libert implementation: ciphertexts are
    bit-identical to Fed-BioMed v4.5.0's, the secret exponentiations constant-time and spread
    over the cores (the GIL is released)."""

    @_raises("crypter")
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

    @_raises("crypter")
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


# ---------------------------------------------------------------------------------------------
# install(): the one switch

#: Fed-BioMed v4.5.0's modules and the classes of theirs that this module replaces.
_REPLACED: Dict[str, Dict[str, type]] = {
    "fedbiomed.common.certificate_manager": {"CertificateManager": CertificateManager},
    "fedbiomed.common.mpc_controller": {"MPCController": MPCController},
    "fedbiomed.common.secagg_manager": {
        "SecaggServkeyManager": SecaggServkeyManager,
        "SecaggBiprimeManager": SecaggBiprimeManager,
    },
    "fedbiomed.common.secagg._secagg_crypter": {"SecaggCrypter": SecaggCrypter},
    "fedbiomed.common.secagg": {"SecaggCrypter": SecaggCrypter},
}

_install_lock = threading.Lock()


def install() -> Dict[str, int]:
    """Puts this module's classes in place of Fed-BioMed's, so that Fed-BioMed's unmodified
    node and researcher code (and its ``fedbiomed_run … certificate …`` CLI) runs on secagg.

    Replaces the classes in the modules that define them, and in every ``fedbiomed`` module
    already imported: names bound to a replaced class, and instances Fed-BioMed built at import
    (``node/secagg.py``'s ``_CManager``, ``node/secagg_manager.py``'s ``SKManager`` and the
    dict of its ``SecaggManager``, …), rebuilt on the same database path. Call it first thing
    (before Fed-BioMed's node or researcher modules are imported, nothing needs rebuilding), or
    run a Fed-BioMed entry point with it: ``python -m secagg.fedbiomed MODULE ARGS…``.
    ``SECAGG_FEDBIOMED=1`` does the same for every Python process, unmodified Fed-BioMed commands
    included (``secagg._fedbiomed_hook``, through the package's ``secagg_fedbiomed.pth``).
    Idempotent. Returns what was replaced: ``{"classes": n, "instances": m}``. Raises
    ``NotFound`` when ``fedbiomed`` cannot be imported, ``InvalidInput`` when it is not
    Fed-BioMed v4's layout.
    """
    import importlib

    with _install_lock:
        originals: Dict[type, type] = {}
        for module_name, classes in _REPLACED.items():
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise NotFound(
                    f"cannot import {module_name}: {e}",
                    "install Fed-BioMed v4.5 in this environment, or call install() from its "
                    "component's Python",
                ) from None
            for name, ours in classes.items():
                theirs = getattr(module, name, None)
                if not isinstance(theirs, type):
                    raise InvalidInput(
                        f"{module_name} has no class {name}: secagg.fedbiomed replaces "
                        f"Fed-BioMed v4's classes"
                    )
                if theirs is not ours:
                    originals[theirs] = ours
                    setattr(module, name, ours)
        replaced = {"classes": len(originals), "instances": 0}
        if originals:
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("fedbiomed"):
                    replaced["instances"] += _replace_in(vars(module), originals, module)
        return replaced


def _replace_in(namespace: Dict[str, Any], originals: Dict[type, type], owner: Any) -> int:
    """Rebinds, in ``namespace`` (a module's, or a dict one of its classes holds), every name
    bound to a replaced class or to an instance of one; returns how many instances."""
    rebuilt = 0
    for name, value in list(namespace.items()):
        if isinstance(value, type):
            if value in originals:
                _set(owner, namespace, name, originals[value])
            elif getattr(value, "__module__", "").startswith("fedbiomed"):
                for attr, inner in list(vars(value).items()):
                    if isinstance(inner, dict):
                        rebuilt += _replace_in(inner, originals, inner)
        elif type(value) in originals:
            _set(owner, namespace, name, _rebuild(value, originals[type(value)]))
            rebuilt += 1
    return rebuilt


def _set(owner: Any, namespace: Dict[str, Any], name: str, value: Any) -> None:
    if isinstance(owner, dict):
        owner[name] = value
    else:
        setattr(owner, name, value)


def _rebuild(instance: Any, ours: type) -> Any:
    """Our equivalent of a Fed-BioMed manager built at import, on the same database."""
    if ours is SecaggCrypter:
        return SecaggCrypter()
    db_path = _tinydb_path(instance)
    if ours is CertificateManager:
        return CertificateManager(db_path)
    if db_path is None:
        raise InvalidInput(
            f"cannot tell the database of Fed-BioMed's {type(instance).__name__} instance",
            "call secagg.fedbiomed.install() before Fed-BioMed's node or researcher modules are "
            "imported",
        )
    return ours(db_path)


def _tinydb_path(instance: Any) -> Optional[str]:
    """The file of the TinyDB database a Fed-BioMed manager opened, if it has one."""
    db = getattr(instance, "_db", None)
    storage = getattr(db, "storage", None) or getattr(db, "_storage", None)
    handle = getattr(storage, "_handle", None)
    name = getattr(handle, "name", None)
    return name if isinstance(name, str) else None


def _main(argv: List[str]) -> int:
    """``python -m secagg.fedbiomed MODULE ARGS…``: runs a Fed-BioMed entry point (e.g.
    ``fedbiomed.node.cli``) as ``python -m MODULE ARGS…`` would, after :func:`install`."""
    import runpy

    if not argv or argv[0] in ("-h", "--help"):
        print(_main.__doc__.strip() if _main.__doc__ else "", file=sys.stderr)
        return 0 if argv else 2
    try:
        install()
    except Error as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    sys.argv = argv
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    return 0

