"""The current AI interaction, carried in a context variable.

The middleware and ``@obligations.inference`` open an interaction for each AI call; anything that
runs inside it (the app's own log lines, for example) can find its id through
:func:`current_interaction_id` and link its evidence to it.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_interaction_id", "interaction_scope", "uuid7", "uuid7_text"]

_current: ContextVar[str | None] = ContextVar("aiobligations_interaction_id", default=None)


_random = threading.local()


def _random_bits80() -> int:
    """80 random bits from the OS, drawn 4 KiB at a time: one system call per 400 ids, not per id."""
    pool = getattr(_random, "pool", b"")
    if len(pool) < 10:
        pool = os.urandom(4000)
    _random.pool = pool[10:]
    return int.from_bytes(pool[:10], "big")


_MILLIS = (1 << 48) - 1
_CLEAR_VERSION_VARIANT = ~((0xF << 76) | (0x3 << 62))
_VERSION_VARIANT = (0x7 << 76) | (0x2 << 62)  # version 7, RFC 9562 variant


def _uuid7_int() -> int:
    """48 bits of Unix milliseconds, then random bits, with the version and variant set."""
    value = (((time.time_ns() // 1_000_000) & _MILLIS) << 80) | _random_bits80()
    return (value & _CLEAR_VERSION_VARIANT) | _VERSION_VARIANT


def uuid7() -> uuid.UUID:
    """A new RFC 9562 UUIDv7: 48 bits of Unix milliseconds, then random bits; sorts by time."""
    return uuid.UUID(int=_uuid7_int())


def uuid7_text() -> str:
    """A new UUIDv7 as its canonical text, without building a :class:`uuid.UUID` (the request path's way)."""
    text = "%032x" % _uuid7_int()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def current_interaction_id() -> str | None:
    """The id of the interaction the caller runs inside, or ``None``."""
    return _current.get()


@contextmanager
def interaction_scope(interaction_id: str) -> Iterator[str]:
    """Run a block as part of the interaction ``interaction_id``.

    Example:
        >>> with interaction_scope("0190c7c4-0000-7000-8000-000000000000"):
        ...     current_interaction_id()
        '0190c7c4-0000-7000-8000-000000000000'
    """
    token = _current.set(interaction_id)
    try:
        yield interaction_id
    finally:
        _current.reset(token)
