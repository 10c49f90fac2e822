"""Type stubs of secagg._native, the Rust extension (see secagg/__init__.py)."""

import os

import numpy as np
import numpy.typing as npt
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, TypedDict, Union, final

PathLike = Union[str, "os.PathLike[str]"]

__version__: str
DEFAULT_BIPRIME0: str
DEFAULT_CLIPPING_RANGE: int
DEFAULT_KEY_BITS: int

class IdentitySummary(TypedDict):
    party_id: str
    role: Literal["researcher", "node"]
    ip: str
    port: int
    key_type: Optional[str]
    fingerprint: str
    fingerprint_readable: str
    name: Optional[str]
    not_before: str
    not_after: str
    days_left: int
    status: str
    home: str

class Bundle(TypedDict):
    format: str
    version: int
    party_id: str
    role: Literal["researcher", "node"]
    ip: str
    port: int
    certificate: str
    fingerprint: str

class Registered(TypedDict):
    party_id: str
    component: str
    ip: str
    port: int
    fingerprint: str
    previous_fingerprint: Optional[str]
    action: Literal["created", "updated", "unchanged"]
    fingerprint_checked: bool
    warnings: List[str]

class PeerSummary(TypedDict):
    party_id: str
    component: str
    ip: str
    port: int
    key_type: str
    fingerprint: str
    not_after: str
    days_left: int
    status: str
    registered_at: str
    updated_at: str
    source: str

class PeerDetail(PeerSummary):
    subject: str
    not_before: str
    certificate: str

class NegotiationReport(TypedDict):
    session_id: str
    engine: str
    scheme: Literal["jl", "lom"]
    role: Literal["researcher", "node"]
    party_index: int
    parties: List[str]
    key_bits: int
    key_fingerprint: str
    connect_ms: float
    exchange_ms: float
    finish_ms: float
    total_ms: float
    warnings: List[str]

class ContextSummary(TypedDict, total=False):
    session_id: str
    role: Literal["researcher", "node"]
    party_index: int
    scheme: Literal["jl", "lom"]
    dropout_threshold: int
    rounds_used: List[int]
    reveals: List["RevealRecord"]
    parties: List[str]
    engine: str
    key_bits: int
    key_fingerprint: str
    created_at: str
    state: Literal["confirmed", "unconfirmed"]
    expires_at: str
    expired: bool
    key: int

class RevealRecord(TypedDict):
    round: int
    label: int
    party: str
    revealed: Literal["share", "seed"]

class MaskedFile(TypedDict, total=False):
    format: str
    version: int
    session_id: str
    round: int
    label: int
    profile: str
    party_id: str
    nodes: int
    count: int
    clipping_range: int
    weight: Optional[int]
    values: npt.NDArray[np.uint64]
    signature: Dict[str, str]
    clipped: Tuple[int, int]
    dropout_threshold: int
    shares: "ShareReport"

class ShareReport(TypedDict):
    holders: List[str]
    missed: List[Tuple[str, str]]

class Silent(TypedDict):
    party: str
    step: Literal["announcement", "reveal"]
    reason: str

class Dropouts(TypedDict):
    before_masking: List[str]
    while_unmasking: List[Silent]

class _LomAverageBase(TypedDict):
    session_id: str
    round: int
    label: int
    profile: str
    nodes: int
    count: int
    total_weight: int
    average: npt.NDArray[np.float64]
    authenticated: bool

class LomAverage(_LomAverageBase, total=False):
    dropouts: Dropouts

class CiphertextFile(TypedDict):
    format: str
    version: int
    session_id: str
    round: int
    party_id: str
    nodes: int
    count: int
    clipping_range: int
    biprime: str
    ciphertexts: List[str]
    signature: "FileSignature"

class FileSignature(TypedDict):
    """A node's signature over its ciphertext file (``scheme``, base64 ``value``)."""
    scheme: str
    value: str

class _RoundAverageBase(TypedDict):
    session_id: str
    round: int
    nodes: int
    count: int
    average: List[float]
    authenticated: bool
    unsigned_files_from: List[str]

class RoundAverage(_RoundAverageBase, total=False):
    profile: str
    total_weight: int

class RosterFile(TypedDict):
    """A roster file as written to disk (``roster_export()["roster"]``)."""
    format: str
    version: int
    issuer: str
    payload: str
    signature_scheme: str
    signature: str

class RosterExport(TypedDict):
    issuer: str
    serial: int
    issued_at: str
    expires_at: str
    parties: int
    omitted: List[str]
    file: Optional[str]
    roster: RosterFile

class RosterEntry(TypedDict):
    party_id: str
    role: Literal["researcher", "node"]
    ip: str
    port: int
    certificate: str
    fingerprint: str

class VerifiedRoster(TypedDict):
    issuer: str
    issuer_fingerprint: str
    serial: int
    issued_at: str
    expires_at: str
    parties: List[RosterEntry]

class PlannedChange(TypedDict):
    party_id: str
    component: Literal["RESEARCHER", "NODE"]
    change: Literal[
        "this_party", "new", "unchanged", "endpoint_changed", "replaced", "removed"
    ]
    endpoint: str
    fingerprint: str
    previous_endpoint: Optional[str]
    previous_fingerprint: Optional[str]
    previous_origin: Optional[str]

class ListedResearcher(TypedDict):
    party_id: str
    endpoint: str
    fingerprint: str
    change: Literal["new", "unchanged", "endpoint_changed", "replaced"]
    named: bool  # given in allow_researchers
    refused: bool  # the import refuses the roster for it (it would register or change it, unnamed)

class ImportPlan(TypedDict):
    issuer: str
    serial: int
    previous_serial: Optional[int]
    expires_at: str
    changes: List[PlannedChange]
    warnings: List[str]
    # researchers the roster lists besides its issuer (also in changes), shown apart
    other_researchers: List[ListedResearcher]
    applied: bool

# "import" is the plan (None at the researcher that issued the roster); a Python keyword, hence
# the functional form.
RosterShown = TypedDict("RosterShown", {"roster": VerifiedRoster, "import": Optional[ImportPlan]})

class PartyError(TypedDict, total=False):
    kind: str
    exit_code: int
    message: str
    hint: str
    origin: str

class SessionPartyRow(TypedDict):
    party_id: str
    role: Literal["researcher", "node"]
    state: Literal["confirmed", "stored", "refused", "unreachable", "cancelled", "failed"]
    key: Literal["confirmed", "unconfirmed", "none", "unknown"]
    ms: Optional[float]
    error: Optional[PartyError]
    mpspdz_port: Optional[int]

class SessionRunReport(TypedDict):
    session_id: str
    engine: str
    ok: bool
    parties: List[SessionPartyRow]
    total_ms: float
    key_fingerprint: Optional[str]
    warnings: List[str]

class FederationCheckRow(TypedDict):
    party_id: str
    role: Literal["researcher", "node"]
    endpoint: str
    ok: bool
    reachable: bool
    mutual_tls: bool
    secagg_version: Optional[str]
    protocol_version: Optional[int]
    clock_skew_ms: Optional[int]
    certificate_days_left: int
    roster_serial: Optional[int]
    sessions: Optional[int]
    ms: float
    problem: Optional[
        Literal[
            "unreachable",
            "not_an_agent",
            "wrong_certificate",
            "not_registered_there",
            "clock_skew",
            "version_mismatch",
            "certificate_invalid",
            "timeout",
        ]
    ]
    message: Optional[str]

RosterArg = Union[RosterFile, Dict[str, Any], bytes, PathLike]
FingerprintExpectations = Union[Dict[str, str], Sequence[str], None]

class ErrorKindInfo(TypedDict):
    name: str
    exit_code: int
    description: str

@final
class CancelToken:
    """Stops a running ``Home.negotiate`` from another thread."""
    def __new__(cls) -> CancelToken: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

@final
class Home:
    """A party's secagg home directory."""
    def __new__(cls, path: PathLike) -> Home: ...
    @property
    def path(self) -> Path: ...
    def init(
        self,
        role: Literal["researcher", "node"],
        ip: Optional[str] = None,
        port: Optional[int] = None,
        key_type: Literal["p256", "p384", "ed25519"] = "p256",
        id: Optional[str] = None,
        days: int = ...,  # 1825 (DEFAULT_VALIDITY_DAYS)
        force: bool = False,
        allow_custom_id: bool = False,
        name: Optional[str] = None,
    ) -> IdentitySummary: ...
    def identity(self) -> IdentitySummary: ...
    def set_endpoint(self, ip: str, port: int) -> IdentitySummary: ...
    def bundle(self) -> Bundle: ...
    def registration_instructions(self) -> str: ...
    def register(
        self,
        certificate: Union[str, bytes, PathLike],
        party_id: str,
        ip: str,
        port: int,
        upsert: bool = False,
        expect_fingerprint: Optional[str] = None,
        role: Optional[Literal["researcher", "node"]] = None,
        allow_custom_id: bool = False,
    ) -> Registered: ...
    def register_bundle(
        self,
        bundle: Union[Bundle, Dict[str, Any], PathLike],
        expect_fingerprint: Optional[str] = None,
        upsert: bool = False,
        allow_custom_id: bool = False,
    ) -> Registered: ...
    def peers(self) -> List[PeerSummary]: ...
    def peer(self, party_id: str) -> PeerDetail: ...
    def delete_peer(self, party_id: str) -> PeerSummary: ...
    def import_fedbiomed(
        self,
        path: PathLike,
        upsert: bool = False,
        dry_run: bool = False,
        skip_invalid: bool = False,
        allow_custom_ids: bool = False,
    ) -> Dict[str, Any]: ...
    def negotiate(
        self,
        session: str,
        parties: Sequence[str],
        timeout: Optional[float] = None,
        engine: Literal["native", "mp-spdz"] = "native",
        key_bits: Optional[int] = None,
        listen: Optional[str] = None,
        mpspdz_root: Optional[PathLike] = None,
        cancel: Optional[CancelToken] = None,
        scheme: Literal["jl", "lom"] = "jl",
        min_nodes: Optional[int] = None,
        dropout_threshold: Optional[int] = None,
    ) -> NegotiationReport: ...
    def contexts(self) -> List[ContextSummary]: ...
    def context(self, session: str, reveal_key: bool = False) -> ContextSummary: ...
    def delete_context(self, session: str) -> ContextSummary: ...
    def confirm_context(self, session: str) -> ContextSummary: ...
    def encrypt(
        self,
        session: str,
        round: int,
        params: Sequence[float],
        clipping_range: int = ...,  # DEFAULT_CLIPPING_RANGE (3)
        biprime: Union[None, int, PathLike] = None,
        profile: Literal["fedbiomed-v4", "fedbiomed-v6"] = "fedbiomed-v4",
        weight: Optional[int] = None,
    ) -> CiphertextFile: ...
    def decrypt(
        self,
        session: str,
        round: int,
        files: Sequence[Union[CiphertextFile, Dict[str, Any], PathLike]],
        biprime: Union[None, int, PathLike] = None,
        allow_unsigned: bool = False,
    ) -> RoundAverage: ...
    def lom_encrypt(
        self,
        session: str,
        round: int,
        params: Union[npt.NDArray[np.float64], npt.NDArray[np.float32], Sequence[float]],
        weight: Optional[int] = None,
        label: int = 0,
        clipping_range: int = ...,  # DEFAULT_CLIPPING_RANGE (3)
        profile: Literal["secagg", "fedbiomed-v6", "fedbiomed-v6.4", "fedbiomed-v6.3"] = "secagg",
    ) -> MaskedFile: ...
    def lom_dh_context(
        self, session: str, experiment_id: Optional[str] = None
    ) -> Dict[str, Any]: ...
    def lom_decrypt(
        self,
        session: str,
        round: int,
        files: Sequence[Union[MaskedFile, Dict[str, Any], PathLike]],
        label: int = 0,
    ) -> LomAverage: ...
    def roster_export(
        self, path: Optional[PathLike] = None, valid_days: int = ..., force: bool = False
    ) -> RosterExport: ...
    def roster_show(
        self,
        roster: RosterArg,
        prune: bool = False,
        allow_replace: bool = False,
        expect_fingerprints: FingerprintExpectations = None,
        allow_custom_ids: bool = False,
        allow_researchers: Optional[Sequence[str]] = None,
    ) -> RosterShown: ...
    def roster_import(
        self,
        roster: RosterArg,
        prune: bool = False,
        allow_replace: bool = False,
        expect_fingerprints: FingerprintExpectations = None,
        allow_custom_ids: bool = False,
        allow_researchers: Optional[Sequence[str]] = None,
    ) -> ImportPlan: ...
    def roster_pull(
        self,
        from_party: Optional[str] = None,
        prune: bool = False,
        allow_replace: bool = False,
        expect_fingerprints: FingerprintExpectations = None,
        allow_custom_ids: bool = False,
        allow_researchers: Optional[Sequence[str]] = None,
    ) -> ImportPlan: ...
    def session_run(
        self,
        parties: Optional[Sequence[str]] = None,
        all: bool = False,
        session: Optional[str] = None,
        engine: Literal["native", "mp-spdz"] = "native",
        timeout: float = 60.0,
        key_bits: Optional[int] = None,
        mpspdz_root: Optional[PathLike] = None,
        mpspdz_port: Optional[int] = None,
        cancel: Optional[CancelToken] = None,
        wait_for_agents: Optional[float] = None,
        scheme: Literal["jl", "lom"] = "jl",
        min_nodes: Optional[int] = None,
        dropout_threshold: Optional[int] = None,
    ) -> SessionRunReport: ...
    def serve_one_session(
        self,
        parties: Sequence[str],
        wait: float = 60.0,
        cancel: Optional[CancelToken] = None,
    ) -> str: ...
    def federation_check(
        self,
        parties: Optional[Sequence[str]] = None,
        all: bool = False,
        max_clock_skew: float = 60.0,
    ) -> List[FederationCheckRow]: ...

def error_kinds() -> List[ErrorKindInfo]: ...
def new_session_id(fedbiomed: bool = False) -> str: ...
def normalize_session_id(session: str) -> str: ...
def party_role(party_id: str) -> Literal["researcher", "node"]: ...
def generate_certificate(
    party_id: str, key_type: str = "p256", days: int = ...  # 1825
) -> Tuple[str, str]: ...
def read_biprime(text: str) -> Tuple[str, int]: ...
def ip_file_line(ip: str, port: int) -> str: ...
def jl_encrypt(
    num_nodes: int,
    round: int,
    params: Sequence[float],
    key: int,
    biprime: int,
    clipping_range: int = ...,  # DEFAULT_CLIPPING_RANGE (3)
) -> List[int]: ...
def jl_decrypt_sums(
    num_nodes: int,
    round: int,
    ciphertexts: Sequence[Sequence[int]],
    key: int,
    biprime: int,
    count: Optional[int] = None,
) -> List[int]: ...
def jl_average(sums: Sequence[int], num_nodes: int, clipping_range: int = ...) -> List[float]: ...

class FedbiomedHome(TypedDict, total=False):
    home: Path
    created: bool
    party_id: str
    imported: Optional[int]
    warnings: List[str]

class ServkeyContext(TypedDict):
    server_key: int

class ServkeyEntry(TypedDict):
    secagg_id: str
    parties: List[str]
    job_id: Optional[str]
    context: ServkeyContext

class BiprimeContext(TypedDict):
    biprime: int
    max_keysize: int

class BiprimeEntry(TypedDict):
    secagg_id: str
    parties: Optional[List[str]]
    context: BiprimeContext
    default: bool

def fedbiomed_home(db_path: PathLike) -> FedbiomedHome: ...
def fedbiomed_servkey_get(
    home: PathLike, secagg_id: str, job_id: Optional[str]
) -> Optional[ServkeyEntry]: ...
def fedbiomed_servkey_add(
    home: PathLike, secagg_id: str, parties: Sequence[str], server_key: int, job_id: Optional[str]
) -> str: ...
def fedbiomed_servkey_remove(home: PathLike, secagg_id: str, job_id: Optional[str]) -> bool: ...
def fedbiomed_biprime_get(home: PathLike, secagg_id: str) -> Optional[BiprimeEntry]: ...
def fedbiomed_biprime_add(
    home: PathLike,
    secagg_id: str,
    parties: Optional[Sequence[str]],
    biprime: int,
    max_keysize: int,
) -> None: ...
def fedbiomed_biprime_remove(home: PathLike, secagg_id: str) -> bool: ...
def fedbiomed_set_default_biprimes(
    home: PathLike, defaults: Sequence[Tuple[str, int, int]]
) -> None: ...
def fedbiomed_certificate_documents(home: PathLike) -> List[Tuple[str, int]]: ...
def certificate_fingerprint(data: bytes, name: str) -> str: ...
def lom_v6_nonce(secagg_id: str) -> bytes: ...
def lom_protect(
    node_id: str,
    secrets: Dict[str, bytes],
    tau: int,
    x: Sequence[int],
    node_ids: Sequence[str],
    nonce: bytes,
    bits: int = 64,
    label: Optional[int] = None,
) -> List[int]: ...
def lom_encrypt(
    node_id: str,
    secrets: Dict[str, bytes],
    tau: int,
    params: Sequence[float],
    node_ids: Sequence[str],
    nonce: bytes,
    weight: Optional[int] = None,
    clipping_range: Optional[int] = None,
    bits: int = 64,
    label: Optional[int] = None,
) -> Tuple[List[int], Tuple[int, int]]: ...
def lom_decrypt(
    vectors: Sequence[Sequence[int]],
    total_sample_size: int,
    clipping_range: Optional[int] = None,
    bits: int = 64,
) -> List[float]: ...
def lom_dh_secret(
    private_scalar: bytes, peer_public_sec1: bytes, salt: bytes, a: str, b: str
) -> bytes: ...
def lom_dh_public(private_scalar: bytes) -> bytes: ...
def jl_v6_encrypt(
    num_nodes: int,
    current_round: int,
    params: Sequence[float],
    key: int,
    biprime: int,
    clipping_range: Optional[int] = None,
    weight: Optional[int] = None,
) -> Tuple[List[int], Tuple[int, int]]: ...
def jl_v6_decrypt(
    current_round: int,
    num_nodes: int,
    params: Sequence[Sequence[int]],
    key: int,
    biprime: int,
    total_sample_size: int,
    clipping_range: Optional[int] = None,
    num_expected_params: int = 1,
) -> List[float]: ...
def cli_main(args: Sequence[str]) -> int: ...
