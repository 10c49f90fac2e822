"""The exceptions of ``secagg``: one class per error kind of secagg-core.

Every exception carries what the CLI would show: ``message`` (what went wrong), ``hint`` (what to
do, or ``None``), ``exit_code`` (the ``secagg`` command's exit status for this kind) and ``kind``
(the stable name of the kind, as in ``--error-format json``). The kinds and exit codes come from
secagg-core's single list (``secagg._native.error_kinds()``); the classes below only name them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

from . import _native

__all__ = [
    "Error",
    "InternalError",
    "InvalidInput",
    "NotFound",
    "Conflict",
    "PeerFailure",
    "Timeout",
    "AuthenticationFailure",
    "ExternalToolFailure",
    "StorageError",
    "VerificationFailed",
    "exception_class",
]


class Error(Exception):
    """Base class of every secagg error."""

    kind: str = "internal"
    exit_code: int = 1
    description: str = ""
    #: The result that came with the failure, when there is one: ``Home.import_fedbiomed``'s
    #: report, ``Home.session_run``'s report (one row per party, saying which failed and why),
    #: ``Home.federation_check``'s rows. ``None`` otherwise.
    report: Any = None

    def __init__(
        self,
        message: str,
        hint: Optional[str] = None,
        exit_code: Optional[int] = None,
        kind: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\nhint: {self.hint}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, hint={self.hint!r}, "
            f"exit_code={self.exit_code!r})"
        )


class InternalError(Error):
    """A bug or an impossible state."""


class InvalidInput(Error, ValueError):
    """Malformed or refused input: certificate, party id, address, port, file, argument."""


class NotFound(Error, LookupError):
    """Something needed does not exist: identity, registered peer, stored context, file."""


class Conflict(Error):
    """The operation would overwrite or duplicate something that exists."""


class PeerFailure(Error):
    """A peer was unreachable, aborted, disconnected or broke the protocol (or this party's
    negotiation was cancelled)."""


class Timeout(Error):
    """A deadline expired."""


class AuthenticationFailure(Error):
    """A fingerprint mismatch, or a peer presented a certificate other than the registered one."""


class ExternalToolFailure(Error):
    """An external program (MP-SPDZ, wg, docker, openssl) is missing or failed."""


class StorageError(Error):
    """A file-system or store (SQLite) operation failed."""


class VerificationFailed(Error):
    """A computed result failed its consistency check (e.g. a negotiated key)."""


_BY_KIND: Dict[str, Type[Error]] = {
    "internal": InternalError,
    "invalid_input": InvalidInput,
    "not_found": NotFound,
    "conflict": Conflict,
    "peer_failure": PeerFailure,
    "timeout": Timeout,
    "authentication": AuthenticationFailure,
    "external_tool": ExternalToolFailure,
    "storage": StorageError,
    "verification": VerificationFailed,
}

# Kind names, exit codes and descriptions from the core (a kind added there without a class here
# fails loudly at import, and in the tests).
for _k in _native.error_kinds():
    _cls = _BY_KIND[_k["name"]]
    _cls.kind = _k["name"]
    _cls.exit_code = _k["exit_code"]
    _cls.description = _k["description"]


def exception_class(kind: str) -> Type[Error]:
    """The exception class of error kind ``kind`` (``"not_found"`` → ``NotFound``)."""
    return _BY_KIND.get(kind, Error)
