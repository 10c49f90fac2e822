"""Drop-ins for Fed-BioMed v6's secure-aggregation classes (``fedbiomed.common.secagg``: ``LOM``,
``SecaggLomCrypter``, ``SecaggCrypter``), with v6's signatures and results, bit for bit with
fedbiomed 6.4 (64-bit LOM words; ``bits=32`` gives 6.0–6.3's), computed by secagg's Rust core
with the GIL released.

And the piece v6 lacks: :func:`dh_context` gives a v6 node its DH context from secagg's store,
shaped as v6's DH context entry, so that the pairwise secrets its ``SecaggLomCrypter`` masks with
were agreed directly between the nodes' agents over pinned mutual TLS (``secagg session run
--scheme lom``) instead of through v6's researcher-relayed overlay, where a dishonest researcher
can swap the DH keys.

Differences from v6, each a refusal where v6 returns a wrong result:

- ``SecaggLomCrypter.aggregate`` / ``SecaggCrypter.aggregate`` refuse (``VerificationFailed``)
  sums no honest round gives (a node's vector missing, altered or of another round), where v6
  returns noise as an average;
- non-finite parameters are refused, where v6 turns them into arbitrary integers.

Errors are ``secagg.Error`` subclasses; when Fed-BioMed is importable, also instances of its
``FedbiomedSecaggCrypterError``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from .. import _native
from .._errors import InvalidInput
from . import _raises

__all__ = ["LOM", "SecaggLomCrypter", "SecaggCrypter", "dh_context", "secrets_of"]

#: fedbiomed 6.4's LOM words.
BITS = 64


class LOM:
    """v6's ``LOM(nonce)``: ``protect`` masks one node's integer vector with its pairwise
    secrets, ``aggregate`` sums every node's masked vector (the masks cancel)."""

    def __init__(self, nonce: Optional[bytes] = None, bits: int = BITS) -> None:
        if nonce is None:
            nonce = os.urandom(16)
        if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != 16:
            raise InvalidInput("the LOM nonce must be 16 bytes")
        self._nonce = bytes(nonce)
        self._bits = bits

    @_raises("crypter")
    def protect(
        self,
        node_id: str,
        pairwise_secrets: Dict[str, bytes],
        tau: int,
        x_u_tau: List[int],
        node_ids: List[str],
    ) -> List[int]:
        """``x_u_tau`` masked for round ``tau`` (v6's ``LOM.protect``)."""
        return _native.lom_protect(
            node_id, pairwise_secrets, tau, list(x_u_tau), list(node_ids), self._nonce, self._bits
        )

    @_raises("crypter")
    def aggregate(self, x_u_tau: List[List[int]]) -> List[int]:
        """The element-wise sum of every node's masked vector, modulo 2^bits."""
        if not x_u_tau:
            raise InvalidInput("no vectors to aggregate")
        length = len(x_u_tau[0])
        if any(len(v) != length for v in x_u_tau):
            raise InvalidInput("the vectors to aggregate have different lengths")
        modulus = 1 << self._bits
        return [sum(col) % modulus for col in zip(*x_u_tau)]


class SecaggLomCrypter:
    """v6's ``SecaggLomCrypter(nonce=secagg_id)``: the float pipeline of LOM (quantize, weight,
    mask; sum, average, reverse)."""

    def __init__(self, nonce: Optional[str] = None, bits: int = BITS) -> None:
        self._nonce = _native.lom_v6_nonce(nonce) if nonce is not None else os.urandom(16)
        self._bits = bits

    @_raises("crypter")
    def encrypt(
        self,
        current_round: int,
        node_id: str,
        params: List[float],
        pairwise_secrets: Dict[str, bytes],
        node_ids: List[str],
        clipping_range: Optional[int] = None,
        weight: Optional[int] = None,
    ) -> List[int]:
        """``params`` quantized, weighted and masked for round ``current_round``."""
        values, _clipped = _native.lom_encrypt(
            node_id,
            pairwise_secrets,
            current_round,
            [float(p) for p in params],
            list(node_ids),
            self._nonce,
            weight=weight,
            clipping_range=clipping_range,
            bits=self._bits,
        )
        return values

    @_raises("crypter")
    def aggregate(
        self,
        params: List[List[int]],
        total_sample_size: int,
        clipping_range: Optional[int] = None,
    ) -> List[float]:
        """The average of the nodes' parameters, weighted by their sample sizes."""
        return _native.lom_decrypt(
            [list(p) for p in params], total_sample_size, clipping_range, self._bits
        )


class SecaggCrypter:
    """v6's ``SecaggCrypter``: Joye–Libert with v6's encoding (T = 8192, weighting, elements of
    ``30 + ceil(log2(n + 1))`` bits), on keys whose server key is ``-sum(sk_i)`` (secagg's
    ``sk0``)."""

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
        """``params`` encrypted for round ``current_round`` with the node's ``key``."""
        if not isinstance(key, int):
            raise InvalidInput("the key must be an int")
        ciphertexts, _clipped = _native.jl_v6_encrypt(
            num_nodes,
            current_round,
            [float(p) for p in params],
            key,
            biprime,
            clipping_range=clipping_range,
            weight=weight,
        )
        return ciphertexts

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
        num_expected_params: int = 1,
    ) -> List[float]:
        """The weighted average of the nodes' parameters, from their ciphertexts and the server
        ``key``; exactly ``num_expected_params`` values."""
        return _native.jl_v6_decrypt(
            current_round,
            num_nodes,
            [list(p) for p in params],
            key,
            biprime,
            total_sample_size,
            clipping_range,
            num_expected_params,
        )


@_raises("secagg")
def dh_context(home: Any, session: str, experiment_id: Optional[str] = None) -> Dict[str, Any]:
    """This node's LOM context ``session`` from the secagg home ``home`` (a path or a
    ``secagg.Home``), shaped as Fed-BioMed v6's DH context entry: ``{"secagg_version": "2",
    "secagg_id": "secagg_<uuid>", "parties": [...], "secagg_elem": 1, "experiment_id": ...,
    "context": {other node id: base64(secret)}}``. Only a confirmed context (every node stored
    its secrets) is given; the secrets are then the caller's to keep in memory.

    A v6 node masks with it as with its own::

        entry = secagg.fedbiomed.v6.dh_context(home, secagg_id)
        crypter = SecaggLomCrypter(nonce=entry["secagg_id"])
        masked = crypter.encrypt(current_round=tau, node_id=me, params=params,
                                 pairwise_secrets=secrets_of(entry),
                                 node_ids=entry["parties"], weight=n_samples)
    """
    from .. import Home

    h = home if isinstance(home, Home) else Home(home)
    result: Dict[str, Any] = h.lom_dh_context(session, experiment_id)
    return result


def secrets_of(entry: Dict[str, Any]) -> Dict[str, bytes]:
    """The pairwise secrets of a DH context entry (:func:`dh_context`'s or v6's own), as the
    bytes v6's ``LOM`` and ``SecaggLomCrypter`` take."""
    import base64

    return {peer: base64.b64decode(s) for peer, s in entry["context"].items()}
