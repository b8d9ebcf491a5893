"""Bounded capture of request and response bodies as they pass, never holding a stream back."""

from __future__ import annotations

# The record and the body helpers live in the core (the ledger's writer builds records from them);
# they are re-exported here, where the middleware's users have always found them.
from aiobligations.records import (
    InteractionRecord,
    body_text,
    find_string_field,
    find_true,
    find_usage,
    interaction_record,
)

__all__ = [
    "BodyCapture",
    "InteractionRecord",
    "body_text",
    "find_string_field",
    "find_true",
    "find_usage",
    "interaction_record",
]


class BodyCapture:
    """Keeps the first ``limit`` bytes of a body and counts all of them.

    Args:
        limit: The most bytes kept; the rest is only counted.
    """

    __slots__ = ("kept", "kept_bytes", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: How many bytes passed.
        self.size = 0
        #: How many of them are kept.
        self.kept_bytes = 0
        #: The kept bytes, as the chunks they arrived in (no copy; join them to read them).
        self.kept: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        """Tee one chunk: count it and keep what still fits."""
        if not chunk:
            return
        self.size += len(chunk)
        room = self.limit - self.kept_bytes
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self.kept.append(piece)
            self.kept_bytes += len(piece)

    @property
    def truncated(self) -> bool:
        """Whether more was seen than kept."""
        return self.size > self.kept_bytes

    def value(self) -> bytes:
        """The kept bytes, joined (the chunks are then replaced by the one joined chunk)."""
        if len(self.kept) > 1:
            self.kept = [b"".join(self.kept)]
        return self.kept[0] if self.kept else b""
