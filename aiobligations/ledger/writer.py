"""Writers: what a :class:`~aiobligations.ledger.Ledger` hands its records to.

A writer owns a bounded queue and one thread that takes the queue in batches. What it does with a
batch is the writer's kind:

- :class:`ThreadWriter` sequences it (:class:`~aiobligations.ledger.sequencer.Sequencer`) and
  commits it to its store, in this process (``[ledger] writer = "thread"``);
- :class:`~aiobligations.ledger.process.PeerWriter` sends it to the ledger's shared writer
  process, which runs a :class:`ThreadWriter` for every process of the service (the default).

The ledger's public API is the same over either; only where the CPU work happens changes.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog

from ..errors import ConfigurationError, LedgerClosed, LedgerError, LedgerFull
from ._items import OP_CALL, OP_DEFER, OP_ERASE, OP_RECORD, OP_SIGN, Item, Waiter, release, waits
from .sequencer import Sequencer
from .store import Store

__all__ = ["ThreadWriter", "Writer"]

log = structlog.get_logger("aiobligations.ledger")

_ON_FULL = ("raise", "wait")

FORKED = (
    "this ledger was opened before the process forked, and its writer thread belongs to the parent. "
    'Use the shared writer process ([ledger] writer = "process", the default), which forked '
    "workers join, or open the ledger in each worker after the fork (no --preload)"
)


class Writer:
    """A bounded queue drained in batches by one thread; subclasses say what a batch becomes.

    Args:
        queue_size: How many records may wait.
        on_full: ``"raise"`` :class:`LedgerFull` at once when the queue is full, or ``"wait"`` up
            to ``full_timeout`` seconds for room.
        full_timeout: See ``on_full``.
        max_batch: The most items taken in one batch.
        batch_delay: When only items nobody waits on are queued, wait this long (seconds) before
            taking a batch, so that more share it. 0 takes them at once.
    """

    def __init__(self, *, queue_size: int, on_full: str, full_timeout: float, max_batch: int,
                 batch_delay: float) -> None:
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigurationError(f"queue_size must be a positive integer, got {queue_size!r}")
        if on_full not in _ON_FULL:
            raise ConfigurationError(f"on_full must be 'raise' or 'wait', got {on_full!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigurationError(f"max_batch must be a positive integer, got {max_batch!r}")
        if batch_delay < 0:
            raise ConfigurationError(f"batch_delay must be >= 0, got {batch_delay!r}")
        self.queue_size = queue_size
        self.on_full = on_full
        self.full_timeout = full_timeout
        self.max_batch = max_batch
        self.batch_delay = batch_delay
        self.forked = False

    # -- what a kind of writer provides ------------------------------------------------------------

    remote = False
    """Whether the records are sequenced in another process (maintenance then runs there, by name)."""

    @property
    def size(self) -> int:
        """How many records are durably sequenced (as far as this process knows)."""
        raise NotImplementedError

    @property
    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note this process knows."""
        raise NotImplementedError

    @property
    def signed_size(self) -> int:
        """The size the latest checkpoint covers."""
        raise NotImplementedError

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """Run maintenance (``prune``, ``rotate``) by name where the records are sequenced."""
        raise NotImplementedError

    def handle(self, items: list[Item]) -> None:
        """Do what this writer does with a batch (on the writer's thread)."""
        raise NotImplementedError

    def idle_timeout(self) -> float | None:
        """How long the thread may sleep with an empty queue (``None``: until woken)."""
        return None

    def on_idle(self) -> None:
        """The queue is empty and the thread woke: e.g. sign a due checkpoint."""

    def resume_after_fork(self) -> bool:
        """In a forked child: whether this writer can serve the child after all (a peer can)."""
        return False

    @property
    def pid(self) -> int | None:
        """The process that sequences the records, if not this one."""
        return None

    def close(self, timeout: float | None = 30.0) -> None:
        """Store (or hand over) everything queued, sign a final checkpoint, and stop. Idempotent."""
        raise NotImplementedError

    # -- the queue ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread, with a fresh queue."""
        self.forked = False
        _WRITERS.add(self)
        self.queue: deque[Item] = deque()
        self.waiting = 0  # Queued items someone waits on; approximate, read without a lock.
        self.wake = threading.Event()
        self.room = threading.Condition()
        self.room_waiters = 0
        self.closing = False
        self.give_up = False
        self.closed = False
        self.close_lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="aiobligations-ledger-writer", daemon=True)
        self.thread.start()

    @property
    def accepting(self) -> bool:
        """Whether a record would be taken now (not closed, queue not full)."""
        return not self.closing and len(self.queue) < self.queue_size

    def enqueue(self, item: Item) -> None:
        """Queue an item; apply the full-queue policy to records.

        Raises:
            LedgerFull: the queue is full and the policy is ``"raise"`` (or the wait timed out).
            LedgerClosed: the writer is closed (or belongs to the parent of a forked process).
        """
        if self.closing and not (self.forked and self.resume_after_fork()):
            raise LedgerClosed(FORKED if self.forked else "the ledger is closed")
        queue = self.queue
        if len(queue) >= self.queue_size and item[0] in (OP_RECORD, OP_DEFER):
            if self.on_full == "raise":
                raise LedgerFull(
                    f"the ledger queue is full ({self.queue_size} records waiting); "
                    "the disk is too slow or the writer has failed"
                )
            deadline = time.monotonic() + self.full_timeout
            with self.room:
                self.room_waiters += 1
                try:
                    while len(queue) >= self.queue_size:
                        left = deadline - time.monotonic()
                        if left <= 0 or self.closing:
                            raise LedgerFull(f"the ledger queue stayed full for {self.full_timeout} s")
                        self.room.wait(left)
                finally:
                    self.room_waiters -= 1
        if item[2] is not None:
            self.waiting += 1
        queue.append(item)
        if not self.wake.is_set():
            self.wake.set()

    def in_writer(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the writer's thread after everything queued so far; return its result."""
        waiter = Waiter()
        self.enqueue((OP_CALL, function, waiter))
        return waiter.wait(None)

    def sign_finally(self, timeout: float | None) -> None:
        """Have everything queued stored and a final checkpoint signed, within ``timeout`` seconds.

        If that fails, what is still queued is given up (its loss is logged by the writer).
        """
        waiter = Waiter()
        try:
            self.enqueue((OP_SIGN, None, waiter))
            waiter.wait(timeout)
        except LedgerError as exc:
            log.error("ledger_close_failed", error=str(exc))
            self.give_up = True

    def stop(self) -> None:
        """Let the thread finish what is queued and end; wait for it."""
        self.closing = True
        self.wake.set()
        with self.room:
            self.room.notify_all()
        self.thread.join()

    def _loop(self) -> None:
        queue = self.queue
        wake = self.wake
        while True:
            if not queue:
                if self.closing:
                    return
                wake.wait(self.idle_timeout())
            wake.clear()
            if not queue:
                if self.closing:
                    return
                self.on_idle()
                continue
            if self.batch_delay and not self.waiting and len(queue) < self.max_batch and not self.closing:
                # Nobody waits on these records (they came from submit), so a moment's delay costs
                # no caller anything and lets a busy service's records share one commit, one fsync
                # and one signature instead of paying for them two or three records at a time.
                time.sleep(self.batch_delay)
            count = min(len(queue), self.max_batch)
            pop = queue.popleft
            items = []
            call = None
            for _ in range(count):
                item = pop()
                if item[2] is not None:
                    self.waiting -= 1
                if item[0] == OP_CALL:
                    call = item
                    break
                items.append(item)
            if self.room_waiters:
                with self.room:
                    self.room.notify_all()
            if items:
                self.handle(items)
            if call is not None:
                try:
                    value = call[1]()
                except Exception as exc:
                    value = exc
                release([(call[2], value)])

    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except BaseException as exc:  # pragma: no cover - a bug; the writer must not die.
                log.error("ledger_writer_error", error=f"{type(exc).__name__}: {exc}")


class ThreadWriter(Writer):
    """Sequences and commits batches in this process, to ``store``, in group commits.

    Nothing in memory changes until a batch is committed, so a failure anywhere leaves the ledger
    as it was: waiters get the error, records nobody waits for are queued again.

    Args:
        store: The opened store (its write connection belongs to this writer's thread).
        sequencer: The tree's state and rules.
        deliver: Hands each waiter its value (default :func:`~aiobligations.ledger._items.release`;
            the shared writer process passes one that answers its peers).
        batch_meta: Extra ``meta`` rows to store with each batch (the shared writer process notes
            each peer's last stored number).
        **options: As for :class:`Writer`.
    """

    def __init__(self, store: Store, sequencer: Sequencer, *,
                 deliver: Callable[[list[tuple[Any, Any]]], None] = release,
                 batch_meta: Callable[[list[Item]], list[tuple[str, bytes]]] | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        self.store = store
        self.sequencer = sequencer
        self.deliver = deliver
        self.batch_meta = batch_meta
        self.start()

    @property
    def size(self) -> int:
        """How many records are durably sequenced."""
        return self.sequencer.size

    @property
    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note."""
        return self.sequencer.checkpoint

    @property
    def signed_size(self) -> int:
        """The size the latest checkpoint covers."""
        return self.sequencer.signed_size

    def idle_timeout(self) -> float | None:
        """Until a checkpoint falls due (with ``checkpoint_interval``), else forever."""
        return self.sequencer.idle_timeout()

    def on_idle(self) -> None:
        """Sign the checkpoint that fell due while the queue was empty."""
        if self.sequencer.unsigned:
            self.write([], sign=True)

    def handle(self, items: list[Item]) -> None:
        """Commit the batch (see :meth:`write`)."""
        self.write(items)

    def write(self, items: list[Item], *, sign: bool = False) -> None:
        """Sequence, seal, hash and commit one batch; then release its waiters."""
        sequencer = self.sequencer
        sequencer.build_deferred(items)
        new_keys: dict[str, bytes] = {}
        try:
            batch, results = sequencer.sequence(
                items, new_keys, sign=sign, extra_meta=self.batch_meta(items) if self.batch_meta else None)
            self.store.write_batch(batch)
        except Exception as exc:
            self._failed(items, new_keys, exc)
            return
        sequencer.adopt(batch)
        self.deliver(results)

    def _failed(self, items: list[Item], new_keys: dict[str, bytes], exc: Exception) -> None:
        """A batch did not commit: nothing of it is stored.

        A caller waiting on its own record gets the error and decides what to do. Records nobody
        waits for go back to the head of the queue and are retried, never silently dropped (a
        persistent failure then fills the queue and ``submit`` raises :class:`LedgerFull`); so do
        flushes, which complete once what came before them is stored. Only when :meth:`close` gave
        up waiting are the remaining records abandoned, and then the loss is logged with its count.
        """
        self.sequencer.forget_keys(new_keys)
        log.error("ledger_write_failed", error=f"{type(exc).__name__}: {exc}", records=len(items))
        error = LedgerError(f"the ledger could not store the record: {type(exc).__name__}: {exc}")
        retry = []
        results = []
        for item in items:
            op, _, waiter = item
            if op in (OP_RECORD, OP_ERASE) and waits(waiter):
                results.append((waiter, error))
            elif self.give_up:
                results.append((waiter, error))
            else:
                retry.append(item)
        if self.give_up:
            lost = sum(1 for op, _, waiter in items if op == OP_RECORD and not waits(waiter))
            if lost:
                log.error("ledger_records_lost", records=lost, reason="the store kept failing while closing")
        self.waiting += sum(1 for item in retry if item[2] is not None)
        self.queue.extendleft(reversed(retry))
        self.deliver(results)
        if retry:
            time.sleep(0.05)  # Back off before retrying; the store is failing.

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, sign a final checkpoint, stop the thread and close the store. Idempotent."""
        with self.close_lock:
            if self.closed:
                return
            if self.forked:
                self.closed = True  # The thread, the store and the lock belong to the parent.
                return
            if self.thread.is_alive():
                self.sign_finally(timeout)
            self.stop()
            self.store.close()
            self.closed = True


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child must not write through, or close, a writer its parent started."""
    for writer in list(_WRITERS):
        writer.forked = True
        writer.closing = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
