"""The ledger: an append-only, tamper-evident, retained log of evidence.

:class:`Ledger` is the API every part of aiobligations writes its evidence through and reads it
back with. It is composed over a *writer* (:mod:`aiobligations.ledger.writer`): a bounded queue and
one thread that takes it in batches. Where the batches go is the writer's kind: a
:class:`~aiobligations.ledger.writer.ThreadWriter` seals, hashes and commits them here (group
commit, through the pure :class:`~aiobligations.ledger.sequencer.Sequencer`), a
:class:`~aiobligations.ledger.process.PeerWriter` hands them to the ledger's shared writer process.
Either way an index returned by :meth:`Ledger.append` names a durable record.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError, LedgerBroken, LedgerError, RetentionError, UnusableInput
from ._items import ERASE_PSEUDONYM, OP_DEFER, OP_ERASE, OP_FLUSH, OP_RECORD, OP_SIGN, Waiter
from .crypto import MasterKey, SubjectCrypto, sealing_aad
from .note import Signer, Verifier
from .reader import TreeReader
from .records import parse_record, prepare, record_mac_key, verify_mac
from .retention import Retention
from .sequencer import Sequencer
from .store import SQLiteStore, Store, StoreState
from .writer import ThreadWriter, Writer

if TYPE_CHECKING:
    from ..witness.client import WitnessClient, WitnessSettings
    from ..witness.timestamp import TimestampClient, TimestampSettings

__all__ = ["Ledger", "checked_prune_end", "prunable_end", "rewrapped_keys"]


class _ReloadableStore(Protocol):
    def reload_state(self) -> StoreState: ...


class Ledger:
    """An append-only Merkle log of records, with sealed personal data and signed checkpoints.

    Most users get one from :class:`aiobligations.Obligations` (whose default writer is the shared
    writer process, see :func:`~aiobligations.ledger.process.ProcessLedger`); build one directly,
    with a writer thread of its own, for tools and tests.

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
        witnesses: Witnesses to ask for cosignatures of the checkpoints this ledger signs (a
            background thread; see :mod:`aiobligations.witness.client`). ``None``: none.
        timestamps: RFC 3161 timestamp authorities to timestamp the checkpoints this ledger signs
            (a background thread; see :mod:`aiobligations.witness.timestamp`). ``None``: none.

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
        witnesses: WitnessSettings | None = None,
        timestamps: TimestampSettings | None = None,
    ) -> None:
        self._open_thread_writer(
            store, origin=origin, signer=signer, master_key=master_key, retention=retention,
            checkpoint_interval=checkpoint_interval, history_interval=history_interval,
            options={"queue_size": queue_size, "on_full": on_full, "full_timeout": full_timeout,
                     "max_batch": max_batch, "batch_delay": batch_delay},
        )
        if witnesses is not None:
            self.start_witnesses(witnesses)
        if timestamps is not None:
            self.start_timestamps(timestamps)

    def _open_thread_writer(self, store: Store, *, origin: str, signer: Signer, master_key: MasterKey,
                            retention: Retention | None, checkpoint_interval: float, history_interval: float,
                            options: dict[str, Any]) -> None:
        """Open ``store`` and write to it from a thread of this process (``options``: the writer's)."""
        _check_options(origin, checkpoint_interval)
        state = store.open()
        try:
            if state.stored_end != state.size:
                raise UnusableInput(
                    f"{store!r}: the tree state says {state.size} records but the last stored index is "
                    f"{state.stored_end - 1}; run `aiobligations verify` on it"
                )
            crypto = SubjectCrypto(master_key, _ledger_secret(store, origin, signer, master_key))
            sequencer = Sequencer(origin=origin, signer=signer, crypto=crypto, state=state, get_keys=store.get_keys,
                                  checkpoint_interval=checkpoint_interval, history_interval=history_interval)
            writer = ThreadWriter(store, sequencer, **options)
        except BaseException:
            store.close()
            raise
        self._bind(store, writer, crypto, origin=origin, signer=signer, retention=retention, state=state)

    @classmethod
    def _composed(cls, store: Store, writer: Writer, crypto: SubjectCrypto, *, origin: str, signer: Signer,
                  retention: Retention | None, state: StoreState) -> Ledger:
        """A ledger over a writer built elsewhere (a peer of the shared writer process)."""
        ledger = cls.__new__(cls)
        ledger._bind(store, writer, crypto, origin=origin, signer=signer, retention=retention, state=state)
        return ledger

    def _bind(self, store: Store, writer: Writer, crypto: SubjectCrypto, *, origin: str, signer: Signer,
              retention: Retention | None, state: StoreState) -> None:
        self.origin = origin
        self.signer = signer
        self.verifier = Verifier.from_key(signer.verifier_key)
        self._mac_key = record_mac_key(signer.private_key)
        self.retention = retention or Retention()
        self._store = store
        self._writer = writer
        self._crypto = crypto
        self.reader = TreeReader(store, state.pruned_start, state.pruned_frontier)
        self.witnesses: WitnessClient | None = None
        self.timestamper: TimestampClient | None = None

    def start_witnesses(self, settings: WitnessSettings) -> WitnessClient:
        """Ask witnesses to cosign this ledger's checkpoints, from a background thread.

        Call it only where checkpoints are signed (a ledger with its own writer thread, or the
        shared writer process); :meth:`close` stops it.

        Args:
            settings: The witnesses, quorum and intervals.

        Returns:
            The running client.

        .. versionadded:: 0.2.0
        """
        from ..witness.client import WitnessClient

        if self.witnesses is not None:
            self.witnesses.close()
        self.witnesses = WitnessClient(self._store, settings, log_verifier=self.verifier,
                                       consistency_proof=self.reader.consistency_proof,
                                       record=self.submit).start()
        return self.witnesses

    def start_timestamps(self, settings: TimestampSettings) -> TimestampClient:
        """Have RFC 3161 timestamp authorities timestamp this ledger's checkpoints (a background thread).

        Call it only where checkpoints are signed; :meth:`close` stops it.

        Args:
            settings: The TSAs and intervals.

        Returns:
            The running client.

        .. versionadded:: 0.2.0
        """
        from ..witness.timestamp import TimestampClient

        if self.timestamper is not None:
            self.timestamper.close()
        self.timestamper = TimestampClient(self._store, settings).start()
        return self.timestamper

    def timestamps(self, size: int) -> list[tuple[str, bytes]]:
        """The RFC 3161 responses kept for the checkpoint of ``size``, as (TSA URL, DER response).

        .. versionadded:: 0.2.0
        """
        return [(tsa, response) for _, tsa, _, response in self._store.timestamps(size)]

    @property
    def witnessed_checkpoint(self) -> str | None:
        """The latest checkpoint witnesses cosigned, with their cosignature lines appended.

        ``None`` while no witness has cosigned any checkpoint of this ledger.

        .. versionadded:: 0.2.0
        """
        from ..witness.client import cosigned_checkpoint

        if not self._store.witness_sizes():
            return None
        return cosigned_checkpoint(self._store)

    def cosignatures(self, size: int) -> list[str]:
        """The witnesses' cosignature lines kept for the checkpoint of ``size``.

        .. versionadded:: 0.2.0
        """
        return [line for _, _, _, line in self._store.cosignatures(size)]

    def __repr__(self) -> str:
        pid = self._writer.pid
        where = f", writer_pid={pid}" if pid is not None else ""
        return f"{type(self).__name__}(origin={self.origin!r}, size={self.size}{where})"

    # -- writing -------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """How many records are durably sequenced (as far as this process has heard)."""
        return self._writer.size

    @property
    def writer_pid(self) -> int | None:
        """The process that seals and commits the records: the shared writer process, or ``None``
        when this process's own thread does (``writer = "thread"``)."""
        return self._writer.pid

    def pseudonym(self, subject: str) -> str:
        """The keyed pseudonym that stands for ``subject`` in this ledger's records."""
        return self._crypto.pseudonym(subject)

    @property
    def master_key(self) -> MasterKey:
        """The master key (for sealing what must wait outside the ledger, such as the spool)."""
        return self._crypto.master

    @property
    def accepting(self) -> bool:
        """Whether :meth:`submit` would take a record now (not closed, queue not full, writer reachable)."""
        return self._writer.accepting

    def submit(self, record: Mapping[str, Any]) -> None:
        """Queue a record without waiting for it to be written (the request path's way).

        Args:
            record: A dict with a ``kind``; see :func:`aiobligations.ledger.records.prepare`.

        Raises:
            TypeError, ValueError: the record is invalid (raised here, in the caller's hands).
            LedgerFull: the queue is full and the policy is ``"raise"``.
            LedgerClosed: the ledger is closed.
        """
        self._writer.enqueue((OP_RECORD, prepare(record), None))

    def submit_deferred(self, factory: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
        """Queue a record that the writer builds later as ``factory(*args)`` (the cheapest request path).

        The request path then pays only for a tuple: building the record's dict, finding fields in
        bodies and serialising JSON happen on the writer's side, off the event loop (in the writer
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
        self._writer.enqueue((OP_DEFER, (factory, args), None))

    def append(self, record: Mapping[str, Any], *, timeout: float | None = None) -> int:
        """Append a record and return its index once it is durably stored.

        Raises:
            LedgerError: the write failed, or did not finish within ``timeout`` seconds.
        """
        waiter = Waiter()
        self._writer.enqueue((OP_RECORD, prepare(record), waiter))
        return int(waiter.wait(timeout))

    async def aappend(self, record: Mapping[str, Any]) -> int:
        """Async twin of :meth:`append`. Cancelling the wait does not withdraw the record."""
        prepared = prepare(record)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._writer.enqueue((OP_RECORD, prepared, (loop, future)))
        return await future

    def flush(self, timeout: float | None = None) -> int:
        """Wait until everything queued before this call is durable; return the log size."""
        waiter = Waiter()
        self._writer.enqueue((OP_FLUSH, None, waiter))
        return int(waiter.wait(timeout))

    async def aflush(self) -> int:
        """Async twin of :meth:`flush`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._writer.enqueue((OP_FLUSH, None, (loop, future)))
        return await future

    def erase_subject(self, subject: str) -> int:
        """Crypto-shred a subject: delete its key and append a PII-free ``subject.erased`` record.

        Everything sealed for the subject becomes unreadable, in this database and in every export
        and backup of the records; every Merkle proof still verifies.

        Returns:
            The index of the ``subject.erased`` record.
        """
        if not isinstance(subject, str) or not subject:
            raise ConfigurationError("subject must be a non-empty string")
        if subject.startswith("\x00"):
            raise ConfigurationError("a subject id cannot start with NUL")  # That prefix names a pseudonym (erase_pseudonym).
        waiter = Waiter()
        self._writer.enqueue((OP_ERASE, subject, waiter))
        return int(waiter.wait(None))

    def subject_pseudonyms(self) -> list[str]:
        """The pseudonyms of every subject whose key exists (not yet erased), sorted.

        .. versionadded:: 0.2.0
        """
        return sorted(pseudonym for pseudonym, _, _ in self._store.all_keys())

    def erase_pseudonym(self, pseudonym: str) -> int:
        """Crypto-shred the subject behind ``pseudonym``, as :meth:`erase_subject` does by the subject's id.

        For erasing every subject when their ids are not known (a service's termination, Art. 50):
        the ledger keeps pseudonyms only.

        Returns:
            The index of the ``subject.erased`` record.

        Raises:
            ValueError: ``pseudonym`` is not one (22 URL-safe base64 characters).

        .. versionadded:: 0.2.0
        """
        return self.erase_pseudonyms([pseudonym])[0]

    def erase_pseudonyms(self, pseudonyms: list[str], *, chunk: int = 1000) -> list[int]:
        """Crypto-shred many subjects by pseudonym, ``chunk`` at a time in one commit each.

        As :meth:`erase_pseudonym` for each, but queued together so that the writer commits them
        in batches (one erasure per commit costs milliseconds; a service ending with a million
        subjects must not take hours).

        Returns:
            The indices of the ``subject.erased`` records, in order.

        Raises:
            ValueError: One is not a pseudonym (nothing is erased then).

        .. versionadded:: 0.2.0
        """
        for pseudonym in pseudonyms:
            if not isinstance(pseudonym, str) or not re.fullmatch(r"[A-Za-z0-9_-]{22}", pseudonym):
                raise ConfigurationError(f"not a pseudonym: {pseudonym!r:.40}")
        indices: list[int] = []
        for start in range(0, len(pseudonyms), max(1, chunk)):
            waiters = []
            for pseudonym in pseudonyms[start:start + max(1, chunk)]:
                waiter = Waiter()
                self._writer.enqueue((OP_ERASE, ERASE_PSEUDONYM + pseudonym, waiter))
                waiters.append(waiter)
            indices.extend(int(waiter.wait(None)) for waiter in waiters)
        return indices

    def sign_checkpoint(self) -> str:
        """Sign a checkpoint now for everything queued before this call; return the signed note."""
        waiter = Waiter()
        self._writer.enqueue((OP_SIGN, None, waiter))
        waiter.wait(None)
        checkpoint = self._writer.checkpoint
        assert checkpoint is not None
        return checkpoint

    # -- closing -------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, sign a final checkpoint, stop the writer and close the store. Idempotent.

        Args:
            timeout: How long to wait for queued records to be stored. If the store keeps failing
                past it, the records still queued are abandoned and their count is logged as an
                error: a process that is shutting down cannot keep them anywhere else.
        """
        for client in (getattr(self, "witnesses", None), getattr(self, "timestamper", None)):
            if client is not None:
                client.close()
        self._writer.close(timeout)
        if self._writer.remote:
            self._store.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._writer.closed

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------

    @property
    def checkpoint(self) -> str | None:
        """The latest signed checkpoint note, or ``None`` before the first one."""
        return self._writer.checkpoint

    def read(self, index: int) -> dict[str, Any]:
        """Return record ``index``, with ``personal`` opened while the subject's key exists.

        When the subject was erased, the record keeps its ``sealed`` value and has no ``personal``.
        The record's ``mac`` is checked and left out.

        Raises:
            IndexError: no record ``index`` is stored (never written, or pruned).
            LedgerBroken: the record's mac does not match (it was altered in the store), or its
                subject's key exists but its sealed value does not open.
        """
        found = self._store.get_record(index)
        if found is None:
            raise IndexError(f"no record {index} in the ledger")
        if verify_mac(self._mac_key, found[2]) is False:
            raise LedgerBroken("the record's mac does not match: it was altered in the store", index=index)
        record = parse_record(found[2])
        record.pop("mac", None)
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
        if not self.reader.first_index <= index < size <= self.size:
            raise ConfigurationError(f"no record {index} in a tree of {size} (the log has {self.size})")
        return self.reader.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The RFC 9162 consistency proof from tree size ``size1`` to ``size2``."""
        if not 0 < size1 <= size2 <= self.size:
            raise ConfigurationError(f"no consistency proof from {size1} to {size2} (the log has {self.size})")
        return self.reader.consistency_proof(size1, size2)

    def rotate_master_key(self, new: MasterKey) -> int:
        """Re-wrap every subject key and the ledger secret under ``new``; records are untouched.

        Runs where the records are sequenced (the shared writer process, by default), in order
        with them.

        Returns:
            How many subject keys were re-wrapped.
        """
        if self._writer.remote:
            count = self._writer.call("rotate", (new,))
            self._crypto.master = new
            return int(count)

        def rotate() -> int:
            rows, meta = rewrapped_keys(self._store, self._crypto.master, new)
            self._store.replace_keys(rows, meta)
            self._crypto.master = new
            return len(rows)

        return int(self._writer.in_writer(rotate))

    def prunable(self, now: float | None = None) -> int:
        """The end of the longest prefix whose every record has passed its retention period."""
        return prunable_end(self._store, self.retention, self.reader.first_index, self._writer.signed_size, now)

    def prune(self, end: int | None = None, *, now: float | None = None) -> int:
        """Delete the records before ``end`` (default: every expired record at the head of the log).

        The compact range of the pruned prefix is kept, so the remaining records still verify
        against old and new checkpoints.

        Returns:
            The new first stored index.

        Raises:
            RetentionError: a record before ``end`` is still inside its retention period.
        """
        if self._writer.remote:
            first = int(self._writer.call("prune", (end, now)))
            # Both stores a remote writer works with (SQLite, PostgreSQL) can re-read their state.
            state = cast(_ReloadableStore, self._store).reload_state()
            self.reader.set_pruned(state.pruned_start, state.pruned_frontier)
            return first
        end = checked_prune_end(self._store, self.retention, end, self.prunable(now))
        if end <= self.reader.first_index:
            return self.reader.first_index
        def prune() -> int:
            hashes = self.reader.compact_range(0, end)
            self._store.prune(end, hashes)
            self.reader.set_pruned(end, hashes)
            return end

        return int(self._writer.in_writer(prune))

    def find_interaction(self, interaction_id: str) -> int | None:
        """The index of the ``interaction`` record with this id (one indexed lookup), or ``None``.

        An id that is not text a record could hold (not a string, or not encodable as UTF-8, such
        as one with a lone surrogate) names no record.
        """
        if not isinstance(interaction_id, str):
            return None
        try:
            interaction_id.encode()
        except UnicodeEncodeError:
            return None
        return self._store.find_interaction(interaction_id)

    def leaf(self, index: int) -> bytes | None:
        """The exact stored bytes of record ``index`` (its Merkle leaf), or ``None`` if not stored."""
        found = self._store.get_record(index)
        return None if found is None else bytes(found[2])

    def durable_size(self) -> int:
        """How many records are durably stored now, whichever process of the service wrote them.

        :attr:`size` is what this process has heard of; this asks the store.
        """
        return self._store.tree_head()[0]

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
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


def prunable_end(store: Store, retention: Retention, first: int, signed_size: int, now: float | None) -> int:
    """The end of the longest prefix from ``first`` whose every record has passed its retention
    period (only signed records are considered)."""
    now = time.time() if now is None else now
    end = first
    for index, ts, kind in store.kinds_in(first, signed_size):
        if ts + retention.period(kind) > now:
            break
        end = index + 1
    return end


def checked_prune_end(store: Store, retention: Retention, end: int | None, limit: int) -> int:
    """``end`` (default ``limit``), refused if it reaches a record still inside its retention.

    Raises:
        RetentionError: record ``limit`` is before ``end`` and inside its retention period.
    """
    if end is None:
        return limit
    if end > limit:
        found = store.get_record(limit)
        kind = found[1] if found else "?"
        raise RetentionError(
            f"record {limit} ({kind}) is inside its retention period of "
            f"{retention.describe(kind)}; nothing was pruned"
        )
    return end


def rewrapped_keys(store: Store, old: MasterKey, new: MasterKey) -> tuple[list[tuple[str, bytes, str]], dict[str, bytes]]:
    """Every subject key and the pseudonym secret re-wrapped from ``old`` to ``new``: the rows and
    meta values :meth:`Store.replace_keys` writes in one transaction (master key rotation)."""
    rows = []
    for pseudonym, wrapped, _ in store.all_keys():
        label = SubjectCrypto.wrap_label(pseudonym)
        rows.append((pseudonym, new.wrap(old.unwrap(wrapped, label), label), new.key_id))
    secret = old.unwrap(store.get_meta("pseudonym_secret") or b"", SubjectCrypto.secret_label)
    meta = {"pseudonym_secret": new.wrap(secret, SubjectCrypto.secret_label), "master_id": new.key_id.encode()}
    return rows, meta


def _check_options(origin: str, checkpoint_interval: float) -> None:
    if checkpoint_interval < 0:
        raise ConfigurationError(f"checkpoint_interval must be >= 0, got {checkpoint_interval!r}")
    if not origin or "\n" in origin:
        raise ConfigurationError(f"origin must be one non-empty line, got {origin!r}")


def _ledger_secret(store: Store, origin: str, signer: Signer, master: MasterKey) -> bytes:
    """Check the store belongs to this log and key; return its pseudonym secret (made when new).

    Raises:
        ConfigurationError: another origin, another signing key, or a master key that does not
            open it.
    """
    stored_origin = store.get_meta("origin")
    stored_vkey = store.get_meta("verifier_key")
    if stored_origin is None:
        secret = os.urandom(32)
        store.put_meta({
            "origin": origin.encode(),
            "verifier_key": signer.verifier_key.encode(),
            "pseudonym_secret": master.wrap(secret, SubjectCrypto.secret_label),
            "master_id": master.key_id.encode(),
        })
        return secret
    if stored_origin.decode() != origin:
        raise ConfigurationError(f"this ledger's origin is {stored_origin.decode()!r}, not {origin!r}")
    if stored_vkey is not None and stored_vkey.decode() != signer.verifier_key:
        raise ConfigurationError(f"this ledger is signed by {stored_vkey.decode()}, not by the configured key")
    blob = store.get_meta("pseudonym_secret")
    if blob is None:
        raise ConfigurationError("the ledger database has no pseudonym secret (damaged?)")
    try:
        return master.unwrap(blob, SubjectCrypto.secret_label)
    except LedgerError:
        raise ConfigurationError(
            "the configured master key does not open this ledger (wrong master key file?)"
        ) from None
