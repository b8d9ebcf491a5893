"""The ledger: a retained, tamper-evident log of evidence (Art. 49(2), 41, 34, 36).

Records are appended to an RFC 9162 Merkle tree, personal data is sealed per subject, checkpoints are
signed as C2SP signed notes, and an auditor verifies an exported bundle offline with a public key.
"""

from .bundle import export_bundle
from .crypto import MasterKey
from .ledger import Ledger
from .note import Checkpoint, Signer, Verifier
from .postgres import PostgresStore
from .process import ProcessLedger
from .replica import ReplicaLedger
from .retention import Retention
from .store import SQLiteStore, Store
from .verify import VerifyReport, verify_bundle, verify_database, verify_path, verify_postgres

__all__ = [
    "Checkpoint",
    "Ledger",
    "MasterKey",
    "PostgresStore",
    "ProcessLedger",
    "ReplicaLedger",
    "Retention",
    "SQLiteStore",
    "Signer",
    "Store",
    "Verifier",
    "VerifyReport",
    "export_bundle",
    "verify_bundle",
    "verify_database",
    "verify_path",
    "verify_postgres",
]
