"""Witnesses: a C2SP tlog-witness anyone can run, and the ledger's client that asks witnesses.

- :mod:`aiobligations.witness.cosignature`: cosignature/v1 lines, witness keys, ``add-checkpoint`` bodies.
- :mod:`aiobligations.witness.server`: the witness, an ASGI app (``aiobligations witness serve``).
- :mod:`aiobligations.witness.client`: the ledger's background thread that collects cosignatures.
"""

from .client import WitnessClient, WitnessServer, WitnessSettings, cosigned_checkpoint
from .cosignature import Cosignature, CosignatureError, WitnessSigner, WitnessVerifier

__all__ = [
    "Cosignature",
    "CosignatureError",
    "WitnessClient",
    "WitnessServer",
    "WitnessSettings",
    "WitnessSigner",
    "WitnessVerifier",
    "cosigned_checkpoint",
]
