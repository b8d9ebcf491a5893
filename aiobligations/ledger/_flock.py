"""Exclusive ``flock`` locks on files beside the ledger, safe across ``fork``.

A ``flock`` belongs to the open file, so a child forked while its parent holds one (gunicorn forks
its workers from a master that may be starting the ledger's writer) would keep the lock held for
as long as the child lives, and every other process would wait on it forever. The child therefore
closes its copies of the descriptors held here, right after the fork; the parent's lock is
untouched (a close, never an unlock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

__all__ = ["held", "track", "tracked", "untrack"]

_HELD: set[int] = set()


@contextlib.contextmanager
def held(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600, never followed if a link) for a block.

    Raises:
        OSError: the lock file cannot be opened.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    _HELD.add(fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # Releases the lock.


def track(fd: int) -> None:
    """Count ``fd``, a descriptor holding a lock, among those a forked child closes."""
    _HELD.add(fd)


def untrack(fd: int) -> None:
    """Stop counting ``fd`` (call it before closing the descriptor)."""
    _HELD.discard(fd)


@contextlib.contextmanager
def tracked(fd: int) -> Iterator[None]:
    """Count ``fd``, a descriptor holding a lock opened elsewhere, among those a forked child closes."""
    _HELD.add(fd)
    try:
        yield
    finally:
        _HELD.discard(fd)


def _after_fork_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
