"""The exceptions aiobligations raises.

Every error is an :class:`ObligationError`, so one ``except`` catches them all. Messages name the
thing, the value received and, where it is obvious, the fix. None of them ever carries a secret or
personal data.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "LabelError",
    "LedgerBroken",
    "LedgerClosed",
    "LedgerError",
    "LedgerFull",
    "LedgerLocked",
    "ObligationError",
    "RetentionError",
    "UnusableInput",
]


class ObligationError(Exception):
    """Base class for errors raised by aiobligations."""


class ConfigurationError(ObligationError, ValueError):
    """An argument, a setting in ``aiobligations.toml`` or a key file is invalid."""


class LedgerError(ObligationError):
    """The ledger could not do what was asked."""


class LedgerFull(LedgerError):
    """The ledger's queue is full and its policy is to fail rather than wait."""


class LedgerClosed(LedgerError):
    """The ledger has been closed; nothing more can be appended."""


class LedgerLocked(LedgerError):
    """Another process holds the ledger file's writer lock (its shared writer, or a ``writer = "thread"`` ledger)."""


class RetentionError(LedgerError):
    """Pruning would delete a record that is still inside its retention floor."""


class LabelError(ObligationError, ValueError):
    """A file cannot be labelled or read: malformed, truncated, hostile or of an unsupported format."""


class UnusableInput(ObligationError):
    """A file to verify, export or read is missing, foreign or unreadable (CLI exit status 2)."""


class LedgerBroken(ObligationError):
    """Verification found a break: a record, a hash or a signature does not match (exit status 1).

    Attributes:
        index: The first record index found bad, or ``None`` when the break cannot be located
            at a record (for example a checkpoint whose signature fails).
        reason: What did not match, in one line.
    """

    def __init__(self, reason: str, *, index: int | None = None) -> None:
        self.index = index
        self.reason = reason
        where = f"record {index}: " if index is not None else ""
        super().__init__(f"{where}{reason}")
