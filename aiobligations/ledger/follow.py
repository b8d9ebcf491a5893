"""State that is a fold over the ledger's records, the same in every process that follows them.

The request desk, the operator controls and the termination plan keep no state of their own: each is
what its records say, folded in order. Every process of a service (every worker, every replica)
follows the same log, so a step taken in one is seen by all as soon as it is stored, and a restart
rebuilds everything. :class:`LogFold` holds what the three have in common:

- :meth:`~LogFold._catch_up` folds in the records stored since the last look. The ``kind`` column
  only finds candidates; the record's own (hashed) bytes decide. A record that no longer reads as
  the log wrote it (:class:`~aiobligations.errors.LedgerBroken`: its mac or its sealed part does not
  check) is logged as ``<name>.record_altered`` and skipped, so one altered row cannot stop a process
  from folding in every later step; ``aiobligations verify`` names it too.
- :meth:`~LogFold._exclusive` holds the ledger's cross-process lock from the catch-up to the durable
  append, so two processes taking a step at once record one.
- :meth:`~LogFold._append` folds in what was written through the same path as a rebuild, so every
  process agrees by construction.
- :meth:`~LogFold.follow` starts a thread that calls :meth:`~LogFold._tick` every ``interval``
  seconds (for state the request path reads without touching the ledger); it logs once when the
  ledger is unreachable and once when it is back, and is restarted in a forked child (gunicorn
  ``--preload``).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import LedgerBroken, LedgerClosed

__all__ = ["LogFold"]

if TYPE_CHECKING:  # pragma: no cover
    from .ledger import Ledger

log = structlog.get_logger("aiobligations.ledger")

_FOLLOWING: weakref.WeakSet[LogFold] = weakref.WeakSet()


def _restart_after_fork() -> None:
    """In a forked child the follower threads did not come along: fresh locks, and the threads again."""
    for state in list(_FOLLOWING):
        stopped = state._stop.is_set()
        state._thread = None
        state._lock = threading.RLock()  # The parent's thread may have held it at the fork.
        state._holding = False
        state._stop = threading.Event()
        if stopped:
            state._stop.set()
        state.follow()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)


class LogFold:
    """
    **Base class:** state folded in from the ledger's records of some kinds, in every process alike.

    A subclass sets :attr:`KINDS`, :attr:`LOCK` and :attr:`NAME`, calls :meth:`_start_fold` in its
    ``__init__``, and implements :meth:`_fold` (and, if it keeps a snapshot, :meth:`_folded`).

    .. versionadded:: 0.2.0
    """

    KINDS: tuple[str, ...] = ()
    """The record kinds folded in."""
    LOCK = ""
    """The name of the ledger's cross-process lock that steps are taken under."""
    NAME = ""
    """Names the follower thread and the log events."""

    ledger: Ledger
    interval: float = 0.5
    """Seconds between two looks of the follower thread."""

    def _start_fold(self, ledger: Ledger, *, interval: float = 0.5) -> None:
        self.ledger = ledger
        self.interval = interval
        self._lock = threading.RLock()
        self._holding = False  # This process holds the cross-process lock (under self._lock).
        self._seen = 0  # The log is folded in up to here.
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failing = False

    def _fold(self, record: Mapping[str, Any], index: int) -> None:
        """Fold one stored record (of one of :attr:`KINDS`) into the state."""
        raise NotImplementedError

    def _folded(self, end: int) -> None:
        """Called after each pass that looked at the records up to ``end`` (e.g. to publish a snapshot)."""

    def _catch_up(self, end: int | None = None) -> None:
        """Fold in the records stored since the last look, whichever process wrote them."""
        ledger = self.ledger
        if end is None:
            end = ledger.durable_size()
        if end <= self._seen:
            return
        for index in ledger.indices_of(self.KINDS, self._seen, end):
            try:
                record = ledger.read(index)
            except IndexError:  # Pruned meanwhile.
                continue
            except LedgerBroken as exc:
                log.error(f"{self.NAME}.record_altered", index=index, reason=exc.reason,
                          action="run `aiobligations verify` on the ledger")
                continue
            # A row whose kind column was edited to a followed kind is not folded in.
            if record.get("kind") in self.KINDS:
                self._fold(record, index)
        self._seen = end
        self._folded(end)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the state across every process of the service: check a step and record it, undisturbed."""
        with self._lock:
            if self._holding:
                yield
                return
            with self.ledger.lock(self.LOCK):
                self._holding = True
                try:
                    self._catch_up()
                    yield
                finally:
                    self._holding = False

    def _append(self, record: dict[str, Any]) -> int:
        """Append a step and fold it in, read back through the same path as every other process's."""
        index = int(self.ledger.append(record))
        self._catch_up(max(index + 1, self._seen))
        return index

    # -- the follower thread ---------------------------------------------------------------------

    def _tick(self) -> None:
        """What the follower does every :attr:`interval` seconds (by default, fold in new records)."""
        with self._lock:
            self._catch_up()

    def follow(self) -> None:
        """Start the follower thread (once per process; idempotent; restarted in a forked child)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            thread = threading.Thread(target=self._follow, name=f"aiobligations-{self.NAME}", daemon=True)
            self._thread = thread
            _FOLLOWING.add(self)
        thread.start()

    @property
    def following(self) -> bool:
        """Whether the follower thread runs in this process."""
        return self._thread is not None and self._thread.is_alive()

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._tick()
            except LedgerClosed:
                return
            except Exception as exc:  # noqa: BLE001 - the follower must outlive an unreachable database.
                if not self._failing:
                    log.warning(f"{self.NAME}.follow_failed", error=f"{type(exc).__name__}: {exc}")
                self._failing = True
            else:
                if self._failing:
                    log.info(f"{self.NAME}.follow_resumed")
                self._failing = False

    def close(self) -> None:
        """Stop the follower thread. Idempotent."""
        self._stop.set()
        thread = self._thread
        _FOLLOWING.discard(self)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
