"""secagg: secure-aggregation setup for Fed-BioMed-style federations, from Python.

A thin layer over the Rust library secagg-core (the one behind the ``secagg`` command):

- :class:`Home` — a party's home directory: its identity (``init``, ``identity``, ``bundle``),
  the peers it registered (``register``, ``register_bundle``, ``peers``, ``peer``,
  ``delete_peer``, ``import_fedbiomed``), signed rosters (``roster_export``, ``roster_show``,
  ``roster_import``, ``roster_pull``), key negotiation (``negotiate``, or ``session_run`` through
  the nodes' agents, which ``federation_check`` checks), the negotiated keys (``contexts``,
  ``context``, ``delete_context``) and Joye–Libert aggregation (``encrypt``, ``decrypt``).
  Results are plain dicts (the fields of the CLI's ``--format json``), keys are ints.
- :class:`CancelToken` — stops a running negotiation from another thread (Ctrl-C does it in the
  main thread).
- The exceptions :class:`Error` and one subclass per error kind, with ``message``, ``hint`` and
  ``exit_code``.
- :mod:`secagg.fedbiomed` — Fed-BioMed v4.5.0's ``CertificateManager``, ``MPCController``,
  ``SecaggServkeyManager``, ``SecaggBiprimeManager`` and ``SecaggCrypter`` backed by a secagg
  home, a drop-in (``install()``, or ``SECAGG_FEDBIOMED=1``).

Example (one party; every party does the same with its own home)::

    import secagg
    home = secagg.Home("/srv/secagg")
    me = home.init("node", ip="10.221.0.3", port=14002)
    home.register_bundle(researcher_bundle, expect_fingerprint=fingerprint_read_out_by_phone)
    home.negotiate(session_id, [researcher_id, me["party_id"], other_node_id], timeout=60)
    key = home.context(session_id, reveal_key=True)["key"]
"""

from ._native import (
    DEFAULT_BIPRIME0,
    DEFAULT_CLIPPING_RANGE,
    DEFAULT_KEY_BITS,
    CancelToken,
    Home,
    __version__,
    error_kinds,
    generate_certificate,
    new_session_id,
    normalize_session_id,
    party_role,
    read_biprime,
)
from ._errors import (
    AuthenticationFailure,
    Conflict,
    Error,
    ExternalToolFailure,
    InternalError,
    InvalidInput,
    NotFound,
    PeerFailure,
    StorageError,
    Timeout,
    VerificationFailed,
)

__all__ = [
    "Home",
    "CancelToken",
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
    "error_kinds",
    "new_session_id",
    "normalize_session_id",
    "party_role",
    "generate_certificate",
    "read_biprime",
    "DEFAULT_BIPRIME0",
    "DEFAULT_CLIPPING_RANGE",
    "DEFAULT_KEY_BITS",
    "__version__",
]
