"""The ledger: an append-only, tamper-evident, retained log of evidence.

One writer thread owns the log. Callers hand it records through a bounded queue; it drains the
queue in batches, assigns contiguous indices, seals personal data, serialises each record once,
extends the Merkle tree, signs a checkpoint and commits the whole batch in one transaction (group
commit). Only then are the callers' waits released, so an index returned by :meth:`Ledger.append`
always names a durable record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import importlib
import json
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from hashlib import sha256
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import (
    ConfigurationError,
    LedgerBroken,
    LedgerClosed,
    LedgerError,
    LedgerFull,
    RetentionError,
    UnusableInput,
)
from . import merkle
from .crypto import MasterKey, SubjectCrypto, sealing_aad
from .note import Checkpoint, Signer, Verifier
from .reader import TreeReader, checkpoint_of
from .records import PreparedRecord, format_ts, parse_record, prepare
from .retention import Retention
from .store import NODE_STRIDE, Batch, SQLiteStore, Store, StoreState

__all__ = ["Ledger"]

log = structlog.get_logger("aiobligations.ledger")

_OP_RECORD = 0
_OP_FLUSH = 1
_OP_ERASE = 2
_OP_SIGN = 3
_OP_CALL = 4
_OP_DEFER = 5  # A record built on the writer's side: payload (factory, args).
_OP_REMOTE = 6  # Maintenance a writer process runs by name: payload (name, args).

_ON_FULL = ("raise", "wait")


class _Waiter:
    """A thread's wait for one queued item: a lock released by the writer."""

    __slots__ = ("error", "lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value: Any = -1
        self.error: BaseException | None = None

    def wait(self, timeout: float | None) -> Any:
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            raise LedgerError(f"the ledger did not confirm the record within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value


def _resolve_futures(pairs: list[tuple[asyncio.Future[int], Any]]) -> None:
    for future, value in pairs:
        if future.done():
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


class Ledger:
    """An append-only Merkle log of records, with sealed personal data and signed checkpoints.

    Most users get one from :class:`aiobligations.Obligations`; build one directly for tools and tests.

    Args:
        store: Where the records live (for example :class:`SQLiteStore`).
        origin: The log's name, the first line of every checkpoint (e.g. ``example.com/ai/ledger``).
        signer: The Ed25519 checkpoint signer. Its name should equal ``origin``.
        master_key: The key that wraps subject keys.
        queue_size: How many records may wait for the writer.
        on_full: What :meth:`submit` and :meth:`append` do when the queue is full: ``"raise"``
            :class:`LedgerFull` at once, or ``"wait"`` up to ``full_timeout`` seconds for room.
        full_timeout: See ``on_full``.
        max_batch: The most records committed in one transaction.
        checkpoint_interval: 0 signs a checkpoint after every batch; a positive number signs at most
            every that many seconds (and when the ledger goes idle or closes).
        retention: Retention periods per record class (defaults: the legal floors).
        history_interval: Keep a signed checkpoint in the history table at most this often.
        batch_delay: When only records nobody waits on are queued (from :meth:`submit`), wait this
            long (seconds) before committing so that more share the commit. 0 commits at once.

    Raises:
        ConfigurationError: an argument is invalid, or the store belongs to another origin or key.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        store: Store,
        *,
        origin: str,
        signer: Signer,
        master_key: MasterKey,
        queue_size: int = 65536,
        on_full: str = "raise",
        full_timeout: float = 5.0,
        max_batch: int = 4096,
        checkpoint_interval: float = 0.0,
        retention: Retention | None = None,
        history_interval: float = 60.0,
        batch_delay: float = 0.002,
    ) -> None:
        self._configure(origin=origin, signer=signer, queue_size=queue_size, on_full=on_full,
                        full_timeout=full_timeout, max_batch=max_batch, checkpoint_interval=checkpoint_interval,
                        retention=retention, history_interval=history_interval, batch_delay=batch_delay)
        self._store = store
        state = store.open()
        try:
            if state.stored_end != state.size:
                raise UnusableInput(
                    f"{store!r}: the tree state says {state.size} records but the last stored index is "
                    f"{state.stored_end - 1}; run `aiobligations verify` on it"
                )
            crypto = SubjectCrypto(master_key, self._ledger_secret(master_key))
        except BaseException:
            store.close()
            raise
        self._adopt(state, crypto)
        self._start()

    def _configure(self, *, origin: str, signer: Signer, queue_size: int, on_full: str, full_timeout: float,
                   max_batch: int, checkpoint_interval: float, retention: Retention | None,
                   history_interval: float, batch_delay: float) -> None:
        """Check and keep the options (shared with the writer-process ledger)."""
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigurationError(f"queue_size must be a positive integer, got {queue_size!r}")
        if on_full not in _ON_FULL:
            raise ConfigurationError(f"on_full must be 'raise' or 'wait', got {on_full!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigurationError(f"max_batch must be a positive integer, got {max_batch!r}")
        if checkpoint_interval < 0:
            raise ConfigurationError(f"checkpoint_interval must be >= 0, got {checkpoint_interval!r}")
        if not origin or "\n" in origin:
            raise ConfigurationError(f"origin must be one non-empty line, got {origin!r}")
        if batch_delay < 0:
            raise ConfigurationError(f"batch_delay must be >= 0, got {batch_delay!r}")
        self.origin = origin
        self.signer = signer
        self.verifier = Verifier.from_key(signer.verifier_key)
        self.retention = retention or Retention()
        self._queue_size = queue_size
        self._on_full = on_full
        self._full_timeout = full_timeout
        self._max_batch = max_batch
        self._interval = checkpoint_interval
        self._history_interval = history_interval
        self._batch_delay = batch_delay

    def _adopt(self, state: StoreState, crypto: SubjectCrypto) -> None:
        """Take the opened store's state as this ledger's."""
        self._crypto = crypto
        self._size = state.size
        self._frontier = state.frontier
        self._last_ts = state.last_ts
        self._checkpoint = state.checkpoint
        self._signed_size = self._checkpoint_size(state.checkpoint)
        self._last_sign = 0.0
        self._last_history = 0.0
        self.reader = TreeReader(self._store, state.pruned_start, state.pruned_frontier)
        # Everything of the sealing associated data but the index and the pseudonym.
        self._aad_prefix = sealing_aad(self.origin, 0, "")[:-2]

    def _start(self) -> None:
        """Start the writer thread."""
        self._forked = False
        _LEDGERS.add(self)
        self._queue: deque[tuple[int, Any, Any]] = deque()
        self._waiting = 0  # Queued items someone waits on; approximate, read without a lock.
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._room_waiters = 0
        self._closing = False
        self._give_up = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="aiobligations-ledger-writer", daemon=True)
        self._thread.start()

    def _ledger_secret(self, master: MasterKey) -> bytes:
        """Check the store belongs to this log and key; return its pseudonym secret."""
        store = self._store
        stored_origin = store.get_meta("origin")
        stored_vkey = store.get_meta("verifier_key")
        if stored_origin is None:
            secret = os.urandom(32)
            store.put_meta({
                "origin": self.origin.encode(),
                "verifier_key": self.signer.verifier_key.encode(),
                "pseudonym_secret": master.wrap(secret, SubjectCrypto.secret_label),
                "master_id": master.key_id.encode(),
            })
            return secret
        if stored_origin.decode() != self.origin:
            raise ConfigurationError(
                f"this ledger's origin is {stored_origin.decode()!r}, not {self.origin!r}"
            )
        if stored_vkey is not None and stored_vkey.decode() != self.signer.verifier_key:
            raise ConfigurationError(
                f"this ledger is signed by {stored_vkey.decode()}, not by the configured key"
            )
        blob = store.get_meta("pseudonym_secret")
        if blob is None:
            raise ConfigurationError("the ledger database has no pseudonym secret (damaged?)")
        try:
            return master.unwrap(blob, SubjectCrypto.secret_label)
        except LedgerError:
            raise ConfigurationError(
                "the configured master key does not open this ledger (wrong master key file?)"
            ) from None

    @staticmethod
    def _checkpoint_size(note: str | None) -> int:
        return checkpoint_of(note).size if note else 0

    def __repr__(self) -> str:
        return f"Ledger(origin={self.origin!r}, size={self._size})"

    # -- writing -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many records are durably sequenced."""
        return self._size

    def pseudonym(self, subject: str) -> str:
        """The keyed pseudonym that stands for ``subject`` in this ledger's records."""
        return self._crypto.pseudonym(subject)

    @property
    def master_key(self) -> MasterKey:
        """The master key (for sealing what must wait outside the ledger, such as the spool)."""
        return self._crypto.master

    @property
    def accepting(self) -> bool:
        """Whether :meth:`submit` would take a record now (not closed, queue not full)."""
        return not self._closing and len(self._queue) < self._queue_size

    def _enqueue(self, item: tuple[int, Any, Any]) -> None:
        if self._closing and not (self._forked and self._resume_after_fork()):
            raise LedgerClosed(_FORKED if self._forked else "the ledger is closed")
        queue = self._queue
        if len(queue) >= self._queue_size and item[0] in (_OP_RECORD, _OP_DEFER):
            if self._on_full == "raise":
                raise LedgerFull(
                    f"the ledger queue is full ({self._queue_size} records waiting); "
                    "the disk is too slow or the writer has failed"
                )
            deadline = time.monotonic() + self._full_timeout
            with self._room:
                self._room_waiters += 1
                try:
                    while len(queue) >= self._queue_size:
                        left = deadline - time.monotonic()
                        if left <= 0 or self._closing:
                            raise LedgerFull(
                                f"the ledger queue stayed full for {self._full_timeout} s"
                            )
                        self._room.wait(left)
                finally:
                    self._room_waiters -= 1
        if item[2] is not None:
            self._waiting += 1
        queue.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def _resume_after_fork(self) -> bool:
        """Whether a forked child can write through this ledger after all (a writer process's peer can)."""
        return False

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue a record without waiting for it to be written (the request path's way).

        Args:
            record: A dict with a ``kind``; see :func:`aiobligations.ledger.records.prepare`.

        Raises:
            TypeError, ValueError: the record is invalid (raised here, in the caller's hands).
            LedgerFull: the queue is full and the policy is ``"raise"``.
            LedgerClosed: the ledger is closed.
        """
        self._enqueue((_OP_RECORD, prepare(record), None))

    def submit_deferred(self, factory: Any, args: tuple[Any, ...]) -> None:
        """Queue a record that the writer builds later as ``factory(*args)`` (the cheapest request path).

        The request path then pays only for a tuple: building the record's dict, finding fields in
        bodies and serialising JSON happen on the writer's side, off the event loop (in a writer
        process, off its core too). ``factory`` must be a module-level function of an
        ``aiobligations`` module returning a record dict, and ``args`` plain values (str, bytes,
        int, float, bool, None, and tuples, lists and dicts of them), so a writer process can
        import the one and receive the other. If ``factory`` raises, a ``record.build_failed``
        record (its name and the error, nothing personal) takes the record's place. A factory may
        name, in an ``out_of_band_args`` attribute, the positions of arguments that are lists of
        bytes (captured bodies): a writer process receives big ones without a copy.

        Raises:
            LedgerFull: the queue is full and the policy is ``"raise"``.
            LedgerClosed: the ledger is closed.
        """
        self._enqueue((_OP_DEFER, (factory, args), None))

    def append(self, record: Mapping[str, Any], *, timeout: float | None = None) -> int:
        """Append a record and return its index once it is durably stored.

        Raises:
            LedgerError: the write failed, or did not finish within ``timeout`` seconds.
        """
        waiter = _Waiter()
        self._enqueue((_OP_RECORD, prepare(record), waiter))
        return waiter.wait(timeout)

    async def aappend(self, record: Mapping[str, Any]) -> int:
        """Async twin of :meth:`append`. Cancelling the wait does not withdraw the record."""
        prepared = prepare(record)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._enqueue((_OP_RECORD, prepared, (loop, future)))
        return await future

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything queued before this call is durable; return the log size."""
        waiter = _Waiter()
        self._enqueue((_OP_FLUSH, None, waiter))
        return waiter.wait(timeout)

    async def aflush(self) -> int:
        """Async twin of :meth:`flush`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._enqueue((_OP_FLUSH, None, (loop, future)))
        return await future

    def erase_subject(self, subject: str) -> int:
        """Crypto-shred a subject: delete its key and append a PII-free ``subject.erased`` record.

        Everything sealed for the subject becomes unreadable, in this database and in every export
        and backup of the records; every Merkle proof still verifies.

        Returns:
            The index of the ``subject.erased`` record.
        """
        if not isinstance(subject, str) or not subject:
            raise ValueError("subject must be a non-empty string")
        waiter = _Waiter()
        self._enqueue((_OP_ERASE, subject, waiter))
        return waiter.wait(None)

    def sign_checkpoint(self) -> str:
        """Sign a checkpoint now for everything queued before this call; return the signed note."""
        waiter = _Waiter()
        self._enqueue((_OP_SIGN, None, waiter))
        waiter.wait(None)
        assert self._checkpoint is not None
        return self._checkpoint

    # -- the writer thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        queue = self._queue
        wake = self._wake
        while True:
            if not queue:
                if self._closing:
                    return
                wake.wait(self._idle_timeout())
            wake.clear()
            if not queue:
                if self._closing:
                    return
                if self._signed_size < self._size:
                    self._write([], sign=True)
                continue
            if self._batch_delay and not self._waiting and len(queue) < self._max_batch and not self._closing:
                # Nobody waits on these records (they came from submit), so a moment's delay costs
                # no caller anything and lets a busy service's records share one commit, one fsync
                # and one signature instead of paying for them two or three records at a time.
                time.sleep(self._batch_delay)
            count = min(len(queue), self._max_batch)
            pop = queue.popleft
            items = []
            call = None
            for _ in range(count):
                item = pop()
                if item[2] is not None:
                    self._waiting -= 1
                if item[0] == _OP_CALL:
                    call = item
                    break
                items.append(item)
            if self._room_waiters:
                with self._room:
                    self._room.notify_all()
            if items:
                self._write(items)
            if call is not None:
                self._call(call)

    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except BaseException as exc:  # pragma: no cover - a bug; the writer must not die.
                log.error("ledger_writer_error", error=f"{type(exc).__name__}: {exc}")

    def _call(self, item: tuple[int, Any, Any]) -> None:
        """Run a maintenance function on the writer thread, between batches."""
        try:
            value = item[1]()
        except Exception as exc:
            value = exc
        self._release([(item[2], value)])

    def _in_writer(self, function: Any) -> Any:
        """Run ``function`` on the writer thread after everything queued so far; return its result.

        The store's write connection belongs to the writer thread, so maintenance that writes
        (pruning, key rotation) runs there, in order with the records.
        """
        waiter = _Waiter()
        self._enqueue((_OP_CALL, function, waiter))
        return waiter.wait(None)

    def _idle_timeout(self) -> float | None:
        if self._interval and self._signed_size < self._size:
            return max(0.0, self._last_sign + self._interval - time.time())
        return None

    def _write(self, items: list[tuple[int, Any, Any]], *, sign: bool = False) -> None:
        """Sequence, seal, hash and commit one batch; then release its waiters.

        Nothing in memory changes until the batch is committed, so a failure anywhere leaves the
        ledger as it was: waiters get the error, records nobody waits for are queued again.
        """
        new_keys: dict[str, bytes] = {}
        for position, item in enumerate(items):
            if item[0] == _OP_DEFER:
                # Built once: if the batch fails, the retried item is the built record.
                items[position] = (_OP_RECORD, _build(*item[1]), item[2])
        try:
            results = self._commit(items, new_keys, sign)
        except Exception as exc:
            self._failed(items, new_keys, exc)
            return
        self._release(results)

    def _commit(self, items: list[tuple[int, Any, Any]], new_keys: dict[str, bytes], sign: bool) -> list[tuple[Any, Any]]:
        """Build the batch for ``items``, write it, and update the in-memory tree state."""
        # This loop is the ledger's hot path: every name it uses per record is a local.
        crypto = self._crypto
        pseudonym_of = crypto.pseudonym
        ts = max(time.time(), self._last_ts)
        ts_text = format_ts(ts).encode()
        aad_prefix = self._aad_prefix
        index = self._size
        frontier = list(self._frontier)
        rows: list[tuple[int, float, str, bytes, bytes]] = []
        nodes: list[tuple[int, int, bytes]] = []
        results: list[tuple[Any, Any]] = []
        erased: list[str] = []
        interactions: list[tuple[str, int]] = []
        ciphers = self._ciphers(items, new_keys)
        nonces = os.urandom(12 * len(items))
        node_hash = merkle.node_hash
        b64 = binascii.b2a_base64
        for position, (op, payload, waiter) in enumerate(items):
            if op == _OP_ERASE:
                pseudonym = pseudonym_of(payload)
                erased.append(pseudonym)
                crypto.forget(pseudonym)
                ciphers.pop(pseudonym, None)
                new_keys.pop(pseudonym, None)
                payload = PreparedRecord("subject.erased", b"", payload, None)
            elif op != _OP_RECORD:
                sign = sign or op == _OP_SIGN
                results.append((waiter, index))
                continue
            tail = b""
            subject = payload.subject
            if subject is not None:
                pseudonym = pseudonym_of(subject)
                tail = b',"subject":"%s"' % pseudonym.encode()
                if payload.personal is not None:
                    cipher = ciphers.get(pseudonym)
                    if cipher is None:
                        # The subject was erased earlier in this very batch: a fresh key.
                        key = _new_key()
                        new_keys[pseudonym] = key
                        cipher = ciphers[pseudonym] = crypto.remember(pseudonym, key)
                    aead, key_id = cipher
                    nonce = nonces[12 * position : 12 * position + 12]
                    aad = b"%s%d\n%s" % (aad_prefix, index, pseudonym.encode())
                    sealed = b64(key_id + nonce + aead.encrypt(nonce, payload.personal, aad), newline=False)
                    tail += b',"sealed":"%s"' % sealed
            data = b'{"v":1,"idx":%d,"ts":"%s","kind":%s%s%s}' % (
                index, ts_text, payload.kind_json, payload.body, tail
            )
            leaf = sha256(b"\x00" + data).digest()
            # Add the leaf to the compact range, noting the stored subtrees it completes.
            node = leaf
            level = 0
            at = index
            while at & 1:
                node = node_hash(frontier.pop(), node)
                level += 1
                at >>= 1
                if not level % NODE_STRIDE:
                    nodes.append((level, at, node))
            frontier.append(node)
            rows.append((index, ts, payload.kind, leaf, data))
            if payload.interaction_id is not None:
                interactions.append((payload.interaction_id, index))
            results.append((waiter, index))
            index += 1

        checkpoint = None
        history = False
        if rows or sign:
            if sign or not self._interval or ts - self._last_sign >= self._interval:
                root = merkle.CompactRange.from_hashes(0, index, frontier).root()
                checkpoint = self.signer.sign(Checkpoint(self.origin, index, root).to_text())
                history = ts - self._last_history >= self._history_interval
        batch = Batch(
            records=rows,
            nodes=nodes,
            size=index,
            frontier=frontier,
            new_keys=[
                (p, crypto.master.wrap(k, SubjectCrypto.wrap_label(p)), crypto.master.key_id)
                for p, k in new_keys.items()
            ],
            erased=erased,
            interactions=interactions,
            checkpoint=checkpoint,
            checkpoint_history=history,
            last_ts=ts,
            extra_meta=self._batch_meta(items),
        )
        self._store.write_batch(batch)
        self._size = index
        self._frontier = frontier
        self._last_ts = ts
        if checkpoint is not None:
            self._checkpoint = checkpoint
            self._signed_size = index
            self._last_sign = ts
            if history:
                self._last_history = ts
        return results

    def _batch_meta(self, items: list[tuple[int, Any, Any]]) -> list[tuple[str, bytes]]:
        """Extra ``meta`` rows to store with a batch (a writer process notes its progress)."""
        return []

    def _ciphers(self, items: list[tuple[int, Any, Any]], created: dict[str, bytes]) -> dict[str, Any]:
        """Open the key of every subject with personal data in ``items``.

        Returns the ciphers by pseudonym; keys created for subjects that had none are added to
        ``created``, to be wrapped and stored with the batch.
        """
        crypto = self._crypto
        ciphers: dict[str, Any] = {}
        missing: list[str] = []
        for op, payload, _ in items:
            if op == _OP_RECORD and payload.personal is not None:
                pseudonym = crypto.pseudonym(payload.subject)
                if pseudonym not in ciphers:
                    aead = crypto.cached_aead(pseudonym)
                    if aead is None:
                        missing.append(pseudonym)
                    else:
                        ciphers[pseudonym] = aead
        if missing:
            stored = self._store.get_keys(missing)
            for pseudonym in dict.fromkeys(missing):
                found = stored.get(pseudonym)
                if found is not None:
                    key = crypto.master.unwrap(found[0], SubjectCrypto.wrap_label(pseudonym))
                else:
                    key = created[pseudonym] = _new_key()
                ciphers[pseudonym] = crypto.remember(pseudonym, key)
        return ciphers

    def _failed(self, items: list[tuple[int, Any, Any]], new_keys: dict[str, bytes], exc: Exception) -> None:
        """A batch did not commit: nothing of it is stored.

        A caller waiting on its own record gets the error and decides what to do. Records nobody
        waits for go back to the head of the queue and are retried, never silently dropped (a
        persistent failure then fills the queue and ``submit`` raises :class:`LedgerFull`); so do
        flushes, which complete once what came before them is stored. Only when :meth:`close` gave
        up waiting are the remaining records abandoned, and then the loss is logged with its count.
        """
        for pseudonym in new_keys:
            self._crypto.forget(pseudonym)
        log.error("ledger_write_failed", error=f"{type(exc).__name__}: {exc}", records=len(items))
        error = LedgerError(f"the ledger could not store the record: {type(exc).__name__}: {exc}")
        retry = []
        results = []
        for item in items:
            op, _, waiter = item
            if op in (_OP_RECORD, _OP_ERASE) and _waits(waiter):
                results.append((waiter, error))
            elif self._give_up:
                results.append((waiter, error))
            else:
                retry.append(item)
        if self._give_up:
            lost = sum(1 for op, _, waiter in items if op == _OP_RECORD and not _waits(waiter))
            if lost:
                log.error("ledger_records_lost", records=lost, reason="the store kept failing while closing")
        self._waiting += sum(1 for item in retry if item[2] is not None)
        self._queue.extendleft(reversed(retry))
        self._release(results)
        if retry:
            time.sleep(0.05)  # Back off before retrying; the store is failing.

    @staticmethod
    def _release(results: list[tuple[Any, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], Any]]] = {}
        for waiter, value in results:
            if waiter is None:
                continue
            if type(waiter) is _Waiter:
                if isinstance(value, BaseException):
                    waiter.error = value
                else:
                    waiter.value = value
                waiter.lock.release()
            else:
                loop, future = waiter
                by_loop.setdefault(loop, []).append((future, value))
        for loop, pairs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve_futures, pairs)
            except RuntimeError:
                pass  # The caller's loop is closed; nobody is waiting any more.

    # -- closing -------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, sign a final checkpoint, stop the writer and close the store. Idempotent.

        Args:
            timeout: How long to wait for queued records to be stored. If the store keeps failing
                past it, the records still queued are abandoned and their count is logged as an
                error: a process that is shutting down cannot keep them anywhere else.
        """
        with self._close_lock:
            if self._closed:
                return
            if self._forked:
                self._closed = True  # The writer, the store and the lock belong to the parent.
                return
            if self._thread.is_alive():
                waiter = _Waiter()
                try:
                    self._enqueue((_OP_SIGN, None, waiter))
                    waiter.wait(timeout)
                except LedgerError as exc:
                    log.error("ledger_close_failed", error=str(exc))
                    self._give_up = True
            self._closing = True
            self._wake.set()
            with self._room:
                self._room.notify_all()
            self._thread.join()
            self._store.close()
            self._closed = True

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note, or ``None`` before the first one."""
        return self._checkpoint

    def read(self, index: int) -> dict[str, Any]:
        """Return record ``index``, with ``personal`` opened while the subject's key exists.

        When the subject was erased, the record keeps its ``sealed`` value and has no ``personal``.

        Raises:
            IndexError: no record ``index`` is stored (never written, or pruned).
        """
        found = self._store.get_record(index)
        if found is None:
            raise IndexError(f"no record {index} in the ledger")
        record = parse_record(found[2])
        sealed = record.get("sealed")
        if sealed is not None:
            pseudonym = record["subject"]
            plain = self._open_sealed(pseudonym, index, sealed)
            if plain is not None:
                del record["sealed"]
                record["personal"] = plain
        return record

    def _open_sealed(self, pseudonym: str, index: int, sealed: str) -> Any:
        """Open a record's sealed value, or return ``None`` when the key that sealed it is gone.

        Raises:
            LedgerBroken: the key exists but the value does not open: it was altered or moved
                from another record.
        """
        found = self._store.get_keys([pseudonym]).get(pseudonym)
        if found is None:
            return None
        key = self._crypto.master.unwrap(found[0], SubjectCrypto.wrap_label(pseudonym))
        aad = sealing_aad(self.origin, index, pseudonym)
        try:
            blob = base64.b64decode(sealed, validate=True)
            if blob[:4] != SubjectCrypto.key_id(key):
                return None  # Sealed under a key of this subject's that was erased.
            return json.loads(AESGCM(key).decrypt(blob[4:16], blob[16:], aad))
        except (InvalidTag, ValueError, binascii.Error):
            raise LedgerBroken("the sealed data does not open (altered or moved)", index=index) from None

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of record ``index`` in the tree of ``size`` records."""
        if not self.reader.first_index <= index < size <= self._size:
            raise ValueError(f"no record {index} in a tree of {size} (the log has {self._size})")
        return self.reader.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The RFC 9162 consistency proof from tree size ``size1`` to ``size2``."""
        if not 0 < size1 <= size2 <= self._size:
            raise ValueError(f"no consistency proof from {size1} to {size2} (the log has {self._size})")
        return self.reader.consistency_proof(size1, size2)

    def rotate_master_key(self, new: MasterKey) -> int:
        """Re-wrap every subject key and the ledger secret under ``new``; records are untouched.

        Returns:
            How many subject keys were re-wrapped.
        """
        def rotate() -> int:
            old = self._crypto.master
            rows = []
            for pseudonym, wrapped, _ in self._store.all_keys():
                label = SubjectCrypto.wrap_label(pseudonym)
                rows.append((pseudonym, new.wrap(old.unwrap(wrapped, label), label), new.key_id))
            secret = old.unwrap(self._store.get_meta("pseudonym_secret") or b"", SubjectCrypto.secret_label)
            meta = {
                "pseudonym_secret": new.wrap(secret, SubjectCrypto.secret_label),
                "master_id": new.key_id.encode(),
            }
            self._store.replace_keys(rows, meta)
            self._crypto.master = new
            return len(rows)

        return self._in_writer(rotate)

    def prunable(self, now: float | None = None) -> int:
        """The end of the longest prefix whose every record has passed its retention period."""
        now = time.time() if now is None else now
        end = self.reader.first_index
        for index, ts, kind in self._store.kinds_in(end, self._signed_size):
            if ts + self.retention.period(kind) > now:
                break
            end = index + 1
        return end

    def prune(self, end: int | None = None, *, now: float | None = None) -> int:
        """Delete the records before ``end`` (default: every expired record at the head of the log).

        The compact range of the pruned prefix is kept, so the remaining records still verify
        against old and new checkpoints.

        Returns:
            The new first stored index.

        Raises:
            RetentionError: a record before ``end`` is still inside its retention period.
        """
        limit = self.prunable(now)
        if end is None:
            end = limit
        if end > limit:
            found = self._store.get_record(limit)
            kind = found[1] if found else "?"
            raise RetentionError(
                f"record {limit} ({kind}) is inside its retention period of "
                f"{self.retention.describe(kind)}; nothing was pruned"
            )
        if end <= self.reader.first_index:
            return self.reader.first_index
        def prune() -> int:
            hashes = self.reader.compact_range(0, end)
            self._store.prune(end, hashes)
            self.reader.set_pruned(end, hashes)
            return end

        return self._in_writer(prune)

    def durable_size(self) -> int:
        """How many records are durably stored now, whichever process of the service wrote them.

        :attr:`size` is what this process has heard of; this asks the store.
        """
        return self._store.tree_head()[0]

    def lock(self, name: str) -> Any:
        """An exclusive lock named ``name`` shared by every process using this ledger.

        Use it as a context manager around a read-check-append sequence that must not interleave
        with another process's (the request desk's state transitions do).
        """
        return self._store.lock(name)

    def indices_of(self, kinds: tuple[str, ...], start: int, end: int) -> list[int]:
        """The indices of stored records of these kinds in ``[start, end)`` (for caches that follow the log)."""
        return self._store.indices_of(kinds, start, end)

    @property
    def first_index(self) -> int:
        """The first stored index (0 unless the log was pruned)."""
        return self.reader.first_index

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Any) -> Ledger:
        """Open (or create) a ledger in the SQLite file ``path``; other arguments as the constructor."""
        return cls(SQLiteStore(path), **kwargs)


_FORKED = (
    "this ledger was opened before the process forked, and its writer thread belongs to the parent. "
    "Use the shared writer process ([ledger] writer = \"process\", the default), which forked "
    "workers join, or open the ledger in each worker after the fork (no --preload)"
)
_LEDGERS: weakref.WeakSet[Ledger] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child must not write through, or close, a ledger its parent opened."""
    for ledger in list(_LEDGERS):
        ledger._forked = True
        ledger._closing = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

def _waits(waiter: Any) -> bool:
    """Whether someone waits on an item: a waiter, unless it says otherwise (a writer process's
    stand-in for a parent's item carries ``waits``)."""
    return waiter is not None and getattr(waiter, "waits", True)


_FACTORIES: dict[str, Any] = {}


def _resolve_factory(name: str) -> Any:
    """The record factory ``"module:function"`` names; only ``aiobligations`` modules qualify.

    Raises:
        LedgerError: the name is malformed, outside ``aiobligations``, or names nothing callable.
    """
    found = _FACTORIES.get(name)
    if found is not None:
        return found
    module_name, _, attribute = name.partition(":")
    if not attribute or not (module_name == "aiobligations" or module_name.startswith("aiobligations.")):
        raise LedgerError(f"{name!r} is not a record factory of aiobligations")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise LedgerError(f"cannot load the record factory {name!r}: {exc}") from None
    if not callable(found):
        raise LedgerError(f"the record factory {name!r} is not callable")
    _FACTORIES[name] = found
    return found


def _factory_name(factory: Any) -> str:
    """The ``"module:function"`` name a writer process resolves ``factory`` by.

    Raises:
        LedgerError: ``factory`` is not a module-level function of an ``aiobligations`` module.
    """
    if isinstance(factory, str):
        _resolve_factory(factory)
        return factory
    name = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
    if _resolve_factory(name) is not factory:
        raise LedgerError(f"{name!r} does not name the factory it was given")
    return name


def _build(factory: Any, args: tuple[Any, ...]) -> PreparedRecord:
    """Build and prepare a deferred record; a failure becomes a ``record.build_failed`` record."""
    name = factory if isinstance(factory, str) else getattr(factory, "__qualname__", repr(factory))
    try:
        function = _resolve_factory(factory) if isinstance(factory, str) else factory
        return prepare(function(*args))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("ledger_record_build_failed", factory=name, error=error)
        return prepare({"kind": "record.build_failed", "factory": name, "error": error})


def _new_key() -> bytes:
    """A fresh random AES-256 subject key."""
    return os.urandom(32)
