"""Replicas on PostgreSQL: many processes on many hosts, one totally ordered, verifiable log.

The design follows Trillian's split between a queue and a sequencer:

- **Appending.** Every process (each worker of each replica) has a :class:`ReplicaWriter`. Its
  thread takes the process's records in batches, builds deferred records, replaces each subject by
  its keyed pseudonym, seals the personal part under a key derived from the pseudonym secret (bound to
  the row's peer and number), and inserts the batch into the ``queue`` table in one transaction.
  Once that commits the records are durable: **acknowledged**. Each process is a *peer* with a
  random 8-byte token and numbers its rows 1, 2, 3…; it inserts a batch only after the previous one
  committed, so a peer's rows become visible in order.
- **Sequencing.** Every process is a candidate; the one holding the PostgreSQL advisory lock is the
  sequencer. It drains the queue in queue order, assigns indices, seals each personal part under
  the subject's key, extends the Merkle tree, signs checkpoints, and writes the records, interior
  hashes, tree state and each peer's last sequenced number — and deletes the queue rows — in one
  transaction, on the same session that holds the lock. A sequencer whose session ended (its
  process died, or the network cut it off) can therefore write nothing more; another candidate
  takes the lock within ``election_interval`` seconds and starts from what is stored.
- **Exactly once.** A peer that lost its connection in the middle of a commit does not know whether
  the batch landed, so it inserts it again (``ON CONFLICT DO NOTHING``); the sequencer drops any
  row whose number is not above the peer's last sequenced number. Nothing acknowledged is lost and
  nothing is doubled.
- **Waiting.** :meth:`~aiobligations.ledger.Ledger.append` returns an index, so it waits for the
  sequencer: the sequencer notifies (``LISTEN``/``NOTIFY``) after each batch and the peer looks up
  the indices of the rows someone waits on (stored with the record as its ``entry``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ConfigurationError, LedgerError, UnusableInput
from ._items import (
    OP_CALL,
    OP_DEFER,
    OP_ERASE,
    OP_RECORD,
    OP_SIGN,
    Item,
    Waiter,
    build,
    erased_pseudonym,
    release,
    waits,
)
from .crypto import MasterKey, SubjectCrypto
from .note import Signer, Verifier
from .postgres import PostgresStore, _reason, parse_sequenced, psycopg
from .ledger import Ledger, _check_options, _ledger_secret, checked_prune_end, prunable_end, rewrapped_keys
from .reader import TreeReader, checkpoint_of
from .records import PreparedRecord, prepare
from .retention import Retention
from .sequencer import Sequencer
from .writer import Writer

__all__ = ["QueueSeal", "ReplicaLedger", "ReplicaWriter", "queue_label"]

log = structlog.get_logger("aiobligations.ledger")

_QUEUE_LABEL = b"aiobligations/queue\n"
_PEER_SILENCE = 86400.0  # A peer's progress row is dropped after a day without rows.


def queue_label(entry: bytes) -> bytes:
    """What a queued personal part is bound to: its peer and number (so a row cannot be moved)."""
    return _QUEUE_LABEL + entry


class QueueSeal:
    """Seals and authenticates a queued row until the sequencer takes it.

    Each row's ``sealed`` value is AES-256-GCM over the record's personal part (empty when it has
    none), with every other field of the row as associated data, under a key derived from the
    ledger's pseudonym secret. Only replicas hold that secret, so a row written or edited by
    someone with database access alone does not open: the sequencer stores it as
    ``ledger.queue_row_forged``. The secret survives master key rotations (they re-wrap it, never
    change it), so rows queued by a replica still on the old master key open for a sequencer on the
    new one.
    """

    def __init__(self, secret: bytes, origin: str) -> None:
        key = hmac.new(secret, b"aiobligations/queue-key\n" + origin.encode(), hashlib.sha256).digest()
        self._aead = AESGCM(key)

    @staticmethod
    def _frame(row: tuple[Any, ...]) -> bytes:
        """The row's fields but ``sealed``, each framed by its length (-1: null), as associated data."""
        peer, seq, op, kind, body, pseudonym, _, interaction_id, row_waits = row[:9]
        kind_b = kind.encode("utf-8", "surrogatepass")
        pseudonym_b = b"" if pseudonym is None else pseudonym.encode()
        interaction_b = b"" if interaction_id is None else interaction_id.encode("utf-8", "surrogatepass")
        return _QUEUE_LABEL + b"%s%d:%d:%d:%s%d:%s%d:%s%d:%s%d" % (
            peer, seq, op, len(kind_b), kind_b, len(body), body,
            -1 if pseudonym is None else len(pseudonym_b), pseudonym_b,
            -1 if interaction_id is None else len(interaction_b), interaction_b, bool(row_waits))

    def seal(self, row: tuple[Any, ...], personal: bytes | None, nonce: bytes | None = None) -> bytes:
        """The ``sealed`` value of ``row`` (its other fields as they will be stored), holding
        ``personal``; ``nonce``: 12 fresh random bytes (a batch draws all of its nonces at once)."""
        if nonce is None:
            nonce = os.urandom(12)
        # A personal part is compact JSON, never empty: an empty plaintext means "none".
        return nonce + self._aead.encrypt(nonce, personal or b"", self._frame(row))

    def open(self, row: tuple[Any, ...], sealed: bytes) -> bytes | None:
        """The personal part of a stored row (``None`` if it has none).

        Raises:
            LedgerError: the row was not written by a replica of this ledger, or was edited since.
        """
        try:
            data = self._aead.decrypt(sealed[:12], sealed[12:], self._frame(row))
        except (InvalidTag, ValueError):
            raise LedgerError("a queued row does not open (written or edited outside the replicas)") from None
        return data or None


def _entry(peer: bytes, seq: int) -> bytes:
    return peer + seq.to_bytes(8, "big")


class ReplicaWriter(Writer):
    """Hands records to the ledger's queue in PostgreSQL, and stands for election as its sequencer.

    Args:
        store: The opened :class:`~aiobligations.ledger.postgres.PostgresStore`.
        crypto: Pseudonyms and the master key (every replica shares them).
        origin, signer, retention, checkpoint_interval, history_interval: As for
            :class:`~aiobligations.ledger.Ledger`; used while this process is the sequencer.
        candidate: Whether this process may become the sequencer.
        election_interval: How often a candidate tries to take the sequencer's lock (seconds).
        confirm_timeout: How long a caller waiting on its record waits for the database to come
            back before it gets an error (the record itself is kept and retried unless it waits).
        **options: As for :class:`~aiobligations.ledger.writer.Writer`.
    """

    remote = True

    def __init__(self, store: PostgresStore, crypto: SubjectCrypto, *, origin: str, signer: Signer,
                 retention: Retention, checkpoint_interval: float, history_interval: float,
                 candidate: bool = True, election_interval: float = 0.5, confirm_timeout: float = 10.0,
                 queue_seal: QueueSeal, leftovers: str | None = None, witnesses: Any = None,
                 timestamps: Any = None, **options: Any) -> None:
        super().__init__(**options)
        self.witnesses = witnesses
        self.timestamps = timestamps
        self.queue_seal = queue_seal
        self.leftovers = leftovers
        self.store = store
        self.crypto = crypto
        self.origin = origin
        self.signer = signer
        self.retention = retention
        self.checkpoint_interval = checkpoint_interval
        self.history_interval = history_interval
        self.candidate = candidate
        self.election_interval = election_interval
        self.confirm_timeout = confirm_timeout
        self.leading = False
        self._begin()

    def _begin(self) -> None:
        self.peer = os.urandom(8)
        self.seq = 0
        self.failing = False
        self._conn: Any = None
        self._pending: dict[int, tuple[Any, int]] = {}  # seq -> (waiter, size when queued): records, erasures
        self._flushes: list[tuple[int, Any]] = []  # (seq, waiter), for flushes and signatures
        self._pending_lock = threading.Lock()
        self._size, _ = self.store.tree_head()
        self._stop = threading.Event()
        self._calls: deque[tuple[Callable[[Any, Sequencer], Any], Waiter]] = deque()
        self._handover_until = 0.0
        self.start()
        self._listener = threading.Thread(target=self._listen, name="aiobligations-ledger-listener", daemon=True)
        self._listener.start()
        self._seat = threading.Thread(target=self._campaign, name="aiobligations-ledger-sequencer", daemon=True)
        if self.candidate:
            self._seat.start()

    # -- what the ledger reads ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The tree size as last heard from the sequencer."""
        return self._size

    @property
    def checkpoint(self) -> str | None:
        """The latest signed checkpoint, as stored now."""
        return self.store.tree_head()[1]

    @property
    def signed_size(self) -> int:
        """The size the latest checkpoint covers."""
        note = self.checkpoint
        return checkpoint_of(note).size if note else 0

    @property
    def accepting(self) -> bool:
        """Whether a record would be taken now (not closed, queue not full, database reachable)."""
        return not self.failing and super().accepting

    def enqueue(self, item: Item) -> None:
        """Queue an item; records are refused while the database is unreachable (so they are spooled)."""
        if self.failing and item[0] in (OP_RECORD, OP_DEFER):
            raise LedgerError("the ledger's database cannot be reached; the record was not taken")
        super().enqueue(item)

    def resume_after_fork(self) -> bool:
        """A forked child (gunicorn ``--preload``) becomes a peer of its own, with fresh connections."""
        with self.close_lock:
            if not self.forked:
                return True
            self.store.after_fork()
            self.leading = False
            self._begin()
            return True

    # -- appending (the writer thread) --------------------------------------------------------------

    def handle(self, items: list[Item]) -> None:
        """Insert one batch into the queue; register the waiters; retry while the database is down."""
        crypto = self.crypto
        pseudonym = crypto.pseudonym
        seal = self.queue_seal.seal
        peer = self.peer
        rows = []
        waiting: list[tuple[int, int, Any]] = []
        nonces = os.urandom(12 * len(items))  # One system call for the batch, not one per record.
        for position, (op, payload, waiter) in enumerate(items):
            if op == OP_DEFER:
                op, payload = OP_RECORD, build(*payload)
            self.seq += 1
            seq = self.seq
            nonce = nonces[12 * position : 12 * position + 12]
            if op == OP_RECORD:
                subject = payload.subject
                # PostgreSQL text cannot hold NUL: such an id stays in the record but is not indexed
                # (PostgresStore.find_interaction finds none), instead of failing the batch forever.
                interaction_id = payload.interaction_id
                if interaction_id is not None and "\x00" in interaction_id:
                    interaction_id = None
                row = (peer, seq, OP_RECORD, payload.kind, payload.body,
                       None if subject is None else pseudonym(subject), None, interaction_id, waits(waiter))
                personal = payload.personal
            elif op == OP_ERASE:
                row = (peer, seq, OP_ERASE, "subject.erased", b"", erased_pseudonym(payload, pseudonym), None, None,
                       True)
                personal = None
            else:
                row = (peer, seq, op, "", b"", None, None, None, True)
                personal = None
            rows.append((*row[:6], seal(row, personal, nonce), *row[7:]))
            if waiter is not None:
                waiting.append((seq, op, waiter))
        floor = self._size  # Its index will be at least this.
        with self._pending_lock:
            for seq, op, waiter in waiting:
                if op in (OP_RECORD, OP_ERASE):
                    self._pending[seq] = (waiter, floor)
                else:
                    self._flushes.append((seq, waiter))
        self._insert(rows, waiting)

    def _insert(self, rows: list[tuple[Any, ...]], waiting: list[tuple[int, int, Any]]) -> None:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = self.store.connect()
                self.store.enqueue(conn, rows)
            except psycopg.DataError as exc:
                # Not the database being away: these rows can never be stored as they are (text
                # PostgreSQL refuses, say). Store each good one, and in place of a bad one a
                # record saying that one was refused, so nothing is retried forever or lost silently.
                log.error("ledger_queue_rows_refused", error=_reason(exc), records=len(rows))
                rows = self._sift(rows)
                continue
            except (LedgerError, psycopg.Error) as exc:
                attempt += 1
                if not self.failing:
                    log.error("ledger_queue_failed", error=_reason(exc), records=len(rows))
                self.failing = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if waiting and (self.give_up or time.monotonic() - started > self.confirm_timeout):
                    error = LedgerError(f"the ledger's database cannot be reached: {_reason(exc)}")
                    self._fail(waiting, error)
                    waiting = []
                if self.give_up:
                    kept = [row for row in rows if row[2] == OP_RECORD and not row[8]]
                    if kept and not self._keep(kept):
                        log.error("ledger_records_lost", records=len(kept),
                                  reason="the database stayed unreachable while closing")
                    return
                time.sleep(min(0.05 * attempt, 0.5))
                continue
            if self.failing:
                log.info("ledger_queue_recovered", after_s=round(time.monotonic() - started, 3))
            self.failing = False
            return

    def _keep(self, rows: list[tuple[Any, ...]]) -> bool:
        """Write rows the database could not take before close to the leftovers file, for the next
        replica that opens the ledger on this host to queue; whether they were kept.

        The rows are already sealed and authenticated (personal parts encrypted, subjects
        pseudonymous), and keep their peer and number, so queueing them later stores each once.
        """
        if self.leftovers is None:
            return False
        lines = b"".join(json.dumps({
            "peer": row[0].hex(), "seq": row[1], "op": row[2], "kind": row[3],
            "body": base64.b64encode(row[4]).decode(), "pseudonym": row[5],
            "sealed": base64.b64encode(row[6]).decode(), "interaction_id": row[7],
        }, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n" for row in rows)
        try:
            fd = os.open(self.leftovers, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, lines)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("ledger_leftovers_failed", path=self.leftovers, error=exc.strerror or type(exc).__name__)
            return False
        log.warning("ledger_records_kept", records=len(rows), path=self.leftovers,
                    reason="the database stayed unreachable while closing; queued at the next start")
        return True

    def queue_leftovers(self) -> int:
        """Queue the rows an earlier process of this host kept when it closed without the database;
        return how many. Called when a replica opens (the database answered)."""
        if self.leftovers is None:
            return 0
        claimed = f"{self.leftovers}.{os.getpid()}.queueing"
        try:
            os.rename(self.leftovers, claimed)  # Atomic: one process of the host takes the file.
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("ledger_leftovers_failed", path=self.leftovers, error=exc.strerror or type(exc).__name__)
            return 0
        rows, bad = [], 0
        with open(claimed, "rb") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    rows.append((bytes.fromhex(item["peer"]), int(item["seq"]), int(item["op"]), item["kind"],
                                 base64.b64decode(item["body"]), item["pseudonym"], base64.b64decode(item["sealed"]),
                                 item["interaction_id"], False))
                except (ValueError, KeyError, TypeError):
                    bad += 1  # A torn last line (a crash while writing): the sequencer would refuse it anyway.
        try:
            if rows:
                with self.store.connect() as conn:
                    for at in range(0, len(rows), 1000):
                        self.store.enqueue(conn, rows[at : at + 1000])
        except (LedgerError, psycopg.Error) as exc:
            os.rename(claimed, self.leftovers)  # Next time, then.
            log.error("ledger_leftovers_failed", path=self.leftovers, error=_reason(exc))
            return 0
        os.unlink(claimed)
        log.info("ledger_leftovers_queued", records=len(rows), unreadable_lines=bad)
        return len(rows)

    def _sift(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows with each one the database refuses replaced by a ``ledger.record_refused`` record."""
        kept = []
        for row in rows:
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = self.store.connect()
                conn.execute("SELECT %s::text, %s::text, %s::text", (row[3], row[5], row[7]))
                kept.append(row)
            except psycopg.DataError as exc:
                body = b',"error":%s' % json.dumps(f"{type(exc).__name__}: {_reason(exc)}"[:300]).encode()
                refused = (row[0], row[1], OP_RECORD, "ledger.record_refused", body, None, None, None, row[8])
                kept.append((*refused[:6], self.queue_seal.seal(refused, None), *refused[7:]))
        return kept

    def _fail(self, waiting: list[tuple[int, int, Any]], error: LedgerError) -> None:
        failed = []
        with self._pending_lock:
            for seq, _, waiter in waiting:
                if self._pending.pop(seq, None) is not None:
                    failed.append((waiter, error))
            seqs = {seq for seq, _, _ in waiting}
            kept = [(seq, w) for seq, w in self._flushes if seq not in seqs]
            failed.extend((w, error) for seq, w in self._flushes if seq in seqs)
            self._flushes = kept
        release(failed)

    # -- hearing from the sequencer (the listener thread) --------------------------------------------

    def _listen(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = self.store.connect()
                    conn.execute(f"LISTEN {self.store.channel_sequenced}")
                    self._settle(None)  # Whatever was sequenced while nobody listened.
                heard = False
                for note in conn.notifies(timeout=0.5, stop_after=1):
                    heard = True
                    size, progress = parse_sequenced(note.payload)
                    self._size = max(self._size, size)
                    if progress is None:
                        self._settle(None)
                    elif self.peer in progress:
                        self._settle(*progress[self.peer])
                if not heard:
                    self._settle(None)  # Polled: in case a notification was missed.
            except (LedgerError, psycopg.Error) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if not self._stop.is_set():
                    log.warning("ledger_listener_reconnecting", error=_reason(exc))
                self._stop.wait(0.5)
        if conn is not None:
            conn.close()

    def _settle(self, done: int | None, placed: dict[int, int] | None = None) -> None:
        """Release the waiters whose rows the sequencer has stored (``done``: this peer's last
        sequenced number, as notified, with ``placed``: the indices of its waited-on records;
        ``None``: read them from the database)."""
        with self._pending_lock:
            if not self._pending and not self._flushes:
                return
        if done is None:
            done = self.store.peer_seq(self.peer)
            self._size = max(self._size, self.store.tree_head()[0])
        size = self._size
        results: list[tuple[Any, Any]] = []
        with self._pending_lock:
            ready = {seq: self._pending.pop(seq) for seq in [seq for seq in self._pending if seq <= done]}
            flushes = [(seq, w) for seq, w in self._flushes if seq <= done]
            if flushes:
                self._flushes = [(seq, w) for seq, w in self._flushes if seq > done]
        if ready and placed is not None and all(seq in placed for seq in ready):
            results.extend((waiter, placed[seq]) for seq, (waiter, _) in ready.items())
            ready = {}
        if ready:
            start = min(floor for _, floor in ready.values())
            try:
                found = self.store.entries(self.peer, start, max(size, self.store.tree_head()[0])
                                           if size <= start else size)
            except LedgerError:
                with self._pending_lock:
                    self._pending.update(ready)  # Asked again on the next notification or poll.
                raise
            for seq, (waiter, _) in ready.items():
                index = found.get(_entry(self.peer, seq))
                results.append((waiter, index if index is not None else LedgerError(
                    "the sequencer did not store the record (its queue row was unreadable)")))
        results.extend((w, size) for _, w in flushes)
        release(results)

    # -- sequencing (the seat thread, while elected) --------------------------------------------------

    def _campaign(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if time.monotonic() < self._handover_until and not self._calls:
                    self._stop.wait(0.1)
                    continue
                if conn is None or conn.closed:
                    conn = self.store.connect()
                if self.store.try_lead(conn):
                    clients = self._start_witnesses()
                    try:
                        self._lead(conn)
                    finally:
                        for client in clients:
                            client.close(1.0)
                        self.leading = False
                        conn.close()  # Ends the session, and with it the lock.
                        conn = None
                    continue
                if self._calls:
                    conn.execute("SELECT pg_notify(%s, %s)", (f"{self.store.schema}_handover", self.peer.hex()))
                    self._stop.wait(0.1)
                else:
                    self._stop.wait(self.election_interval)
            except (LedgerError, psycopg.Error) as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if not self._stop.is_set():
                    log.warning("ledger_sequencer_seat_error", error=_reason(exc))
                self._stop.wait(self.election_interval)
            except Exception as exc:  # pragma: no cover - a bug; the seat must not die silently.
                log.error("ledger_sequencer_failed", error=f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                    conn = None
                self._stop.wait(self.election_interval)
        if conn is not None:
            conn.close()  # The candidate's session, never elected this time.

    def _start_witnesses(self) -> list[Any]:
        """The elected sequencer signs the checkpoints, so it is the replica that asks the witnesses
        (and the timestamp authorities)."""
        from ..witness.client import WitnessClient
        from ..witness.timestamp import TimestampClient

        clients: list[Any] = []
        try:
            if self.witnesses is not None:
                state = self.store.reload_state()
                reader = TreeReader(self.store, state.pruned_start, state.pruned_frontier)
                clients.append(WitnessClient(
                    self.store, self.witnesses, log_verifier=Verifier.from_key(self.signer.verifier_key),
                    consistency_proof=reader.consistency_proof,
                    record=lambda record: self.enqueue((OP_RECORD, prepare(record), None))).start())
            if self.timestamps is not None:
                clients.append(TimestampClient(self.store, self.timestamps).start())
        except Exception as exc:  # Witnessing must never keep the log from being sequenced.
            log.error("witness.start_failed", error=f"{type(exc).__name__}: {exc}")
        return clients

    def _lead(self, conn: Any) -> None:
        store = self.store
        state = store.state_on(conn)
        if state.stored_end != state.size:
            log.error("ledger_sequencer_refused", reason=(
                f"the tree state says {state.size} records but the last stored index is {state.stored_end - 1}; "
                "run `aiobligations verify`"))
            self._stop.wait(30)
            return
        current = (store.get_meta("master_id") or b"").decode()
        if current and current != self.crypto.master.key_id:
            # The master key was rotated by another replica: sealing with the old one would store
            # subject keys nobody else can open. Leave the seat to a replica with the current key.
            log.error("ledger_sequencer_declined", reason=(
                "this process's master key is not the ledger's current one (rotated elsewhere); "
                "restart it with the new key"))
            self._stop.wait(10 * self.election_interval)
            return
        secret = self.crypto.master.unwrap(store.get_meta("pseudonym_secret") or b"", SubjectCrypto.secret_label)
        # A fresh crypto: keys cached while another process led may have been erased since.
        crypto = SubjectCrypto(self.crypto.master, secret)
        sequencer = Sequencer(origin=self.origin, signer=self.signer, crypto=crypto, state=state,
                              get_keys=store.get_keys, checkpoint_interval=self.checkpoint_interval,
                              history_interval=self.history_interval, pseudonymous=True)
        progress = store.progress(conn)
        store.forget_peers(conn, time.time() - _PEER_SILENCE)
        handover = threading.Event()
        channel = f"{store.schema}_handover"
        conn.execute(f"LISTEN {store.channel_queued}")
        conn.execute(f"LISTEN {channel}")
        # A sequencer that stopped without dying (SIGSTOP, a hung host) must not keep the seat: it
        # queries at least every second, so a session idle for 10 s is ended by the server, and
        # with it the lock. Keepalives end the session of a host that vanished from the network.
        conn.execute("SET idle_session_timeout = '10s'")
        conn.execute("SET tcp_keepalives_idle = 5")
        conn.execute("SET tcp_keepalives_interval = 2")
        conn.execute("SET tcp_keepalives_count = 3")
        self.leading = True
        rows = None
        log.info("ledger_sequencer_elected", size=state.size, pid=os.getpid())
        while True:
            while self._calls:
                function, waiter = self._calls.popleft()
                try:
                    value = function(conn, sequencer)
                except Exception as exc:
                    value = exc
                release([(waiter, value)])
            if handover.is_set():
                log.info("ledger_sequencer_handover")
                self._handover_until = time.monotonic() + 3.0
                return
            stopping = self._stop.is_set()
            taken, rows = self._sequence_once(conn, sequencer, progress, sign=stopping and sequencer.unsigned,
                                              rows=rows)
            if stopping:
                return  # What was queued is stored and signed; closing the session hands over.
            if taken:
                continue  # Take what queued meanwhile before sleeping.
            timeout = sequencer.idle_timeout()
            timeout = 1.0 if timeout is None else min(1.0, timeout)
            # Notifications that came while a batch was being written wait in psycopg's backlog.
            for note in conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                if note.channel == channel and note.payload != self.peer.hex():
                    handover.set()

    def _sequence_once(self, conn: Any, sequencer: Sequencer, progress: dict[bytes, int], *,
                       sign: bool = False, rows: list[Any] | None = None) -> tuple[int, list[Any] | None]:
        """Sequence and store one batch (``rows``, or taken from the queue now); return how many
        rows it took and the next batch, fetched in the same round trip as the store (or ``None``)."""
        if rows is None:
            rows = self.store.take_queue(conn, self.max_batch)
        if not rows:
            if sign or (sequencer.unsigned and (sequencer.idle_timeout() or 0.0) <= 0.0):
                return 0, self._commit(conn, sequencer, [], [], {}, sign=True)
            return 0, None
        items: list[Item] = []
        advance: dict[bytes, int] = {}
        unseal = self.queue_seal.open
        for _qid, peer, seq, op, kind, body, pseudonym, sealed, interaction_id, row_waits in rows:
            peer = bytes(peer)
            body = bytes(body)
            try:
                personal = unseal((peer, seq, op, kind, body, pseudonym, None, interaction_id, row_waits),
                                  bytes(sealed))
            except LedgerError:
                # Not written by a replica: someone with access to the database alone. Stored as
                # that fact (so it shows in the log and its audits), never as the record it claims.
                log.error("ledger_queue_row_forged", peer=peer.hex(), seq=seq)
                items.append((OP_RECORD, PreparedRecord(
                    "ledger.queue_row_forged", b',"peer":"%s","seq":%d' % (peer.hex().encode(), seq), None, None),
                    None))
                continue
            if seq <= progress.get(peer, 0) or seq <= advance.get(peer, 0):
                continue  # Sent again after a commit whose answer was lost: already stored.
            advance[peer] = seq
            entry = _entry(peer, seq) if row_waits else None
            if op == OP_RECORD:
                if not kind or (body and not body.startswith(b",")):
                    log.error("ledger_queue_row_unreadable", peer=peer.hex(), seq=seq)
                    record = PreparedRecord("ledger.queue_row_unreadable",
                                            b',"peer":"%s","seq":%d' % (peer.hex().encode(), seq), None, None)
                else:
                    record = PreparedRecord(kind, body, pseudonym, personal, interaction_id)
                items.append((OP_RECORD, record, entry))
            elif op == OP_ERASE and pseudonym:
                items.append((OP_ERASE, pseudonym, entry))
            elif op == OP_SIGN:
                sign = True
        following = self._commit(conn, sequencer, items, [row[0] for row in rows], advance, sign=sign)
        progress.update(advance)
        return len(rows), following

    def _commit(self, conn: Any, sequencer: Sequencer, items: list[Item], qids: list[int],
                advance: dict[bytes, int], *, sign: bool) -> list[Any] | None:
        """Sequence ``items``, store the batch, and return the next queue rows (``None``: none)."""
        new_keys: dict[str, bytes] = {}
        batch, results = sequencer.sequence(items, new_keys, sign=sign)
        entries = {index: waiter for waiter, index in results if type(waiter) is bytes}
        now = time.time()
        try:
            following = self.store.write_batch(batch, conn, queue=(qids, [(p, s, now) for p, s in advance.items()],
                                                                   entries), take=self.max_batch) or None
        except BaseException:
            sequencer.forget_keys(new_keys)
            raise
        sequencer.adopt(batch)
        self._size = max(self._size, batch.size)
        return following

    # -- maintenance, run by whoever is the sequencer -------------------------------------------------

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """Run ``prune`` or ``rotate`` as the sequencer (asking the current one to hand over)."""
        if name == "prune":
            return self._as_sequencer(lambda conn, seq: self._prune(conn, seq, *args))
        if name == "rotate":
            return self._as_sequencer(lambda conn, seq: self._rotate(conn, seq, args[0]))
        raise LedgerError(f"unknown maintenance call {name!r}")

    def _as_sequencer(self, function: Callable[[Any, Sequencer], Any], timeout: float = 60.0) -> Any:
        if not self.candidate:
            raise LedgerError("this process does not stand for sequencer; run maintenance from one that does")
        waiter = Waiter()
        self._calls.append((function, waiter))
        return waiter.wait(timeout)

    def _prune(self, conn: Any, sequencer: Sequencer, end: int | None, now: float | None) -> int:
        store = self.store
        state = store.state_on(conn)
        reader = TreeReader(store, state.pruned_start, state.pruned_frontier)
        limit = prunable_end(store, self.retention, reader.first_index, sequencer.signed_size, now)
        end = checked_prune_end(store, self.retention, end, limit)
        if end <= reader.first_index:
            return reader.first_index
        store.prune(end, reader.compact_range(0, end), conn)
        return end

    def _rotate(self, conn: Any, sequencer: Sequencer, new: MasterKey) -> int:
        rows, meta = rewrapped_keys(self.store, self.crypto.master, new)
        self.store.replace_keys(rows, meta, conn)  # On the session that holds the sequencer's lock.
        self.crypto.master = new
        sequencer.crypto.master = new
        return len(rows)

    # -- closing ------------------------------------------------------------------------------------

    def _sequencer_alive(self) -> bool:
        try:
            return self.store.sequencer_pid() is not None
        except LedgerError:
            return False

    def _queued_finally(self, timeout: float | None) -> None:
        """Have everything queued so far committed to the queue table, within ``timeout`` seconds."""
        waiter = Waiter()
        try:
            self.enqueue((OP_CALL, lambda: None, waiter))
            waiter.wait(timeout)
        except LedgerError as exc:
            log.error("ledger_close_failed", error=str(exc))
            self.give_up = True

    def _wake_threads(self) -> None:
        """Wake this process's listener and sequencer from their waits on the database."""
        own = self._conn is None or self._conn.closed
        try:
            conn = self.store.connect() if own else self._conn
            try:
                conn.execute("SELECT pg_notify(%s, ''), pg_notify(%s, '')",
                             (self.store.channel_queued, self.store.channel_sequenced))
            finally:
                if own:
                    conn.close()
        except (LedgerError, psycopg.Error):
            pass  # They wake within a second anyway.

    def close(self, timeout: float | None = 30.0) -> None:
        """Hand everything queued to the database, wait for it to be sequenced (within ``timeout``),
        then stop; the sequencer, if this process is it, signs a final checkpoint and hands over."""
        with self.close_lock:
            if self.closed:
                return
            if self.forked:
                self.closed = True
                return
            if self.thread.is_alive():
                if self.candidate or self._sequencer_alive():
                    self.sign_finally(timeout)  # Stored, sequenced and signed (by us or the sequencer).
                else:
                    self._queued_finally(timeout)  # Nobody sequences now: durable in the queue suffices.
            self.stop()
            self._stop.set()
            self._wake_threads()
            if self.candidate:
                self._seat.join()
            self._listener.join()
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            with self._pending_lock:
                left = [w for w, _ in self._pending.values()] + [w for _, w in self._flushes]
                self._pending.clear()
                self._flushes = []
            release([(w, LedgerError("the ledger closed before the record was sequenced")) for w in left])
            self.closed = True


def ReplicaLedger(  # noqa: N802 - reads as the kind of ledger it opens, like ProcessLedger.
    url: str,
    *,
    origin: str,
    signer: Signer,
    master_key: MasterKey,
    schema: str = "aiobligations",
    queue_size: int = 65536,
    on_full: str = "raise",
    full_timeout: float = 5.0,
    max_batch: int = 4096,
    checkpoint_interval: float = 0.0,
    retention: Retention | None = None,
    history_interval: float = 60.0,
    batch_delay: float = 0.002,
    candidate: bool = True,
    election_interval: float = 0.5,
    migrate: bool = True,
    leftovers: str | os.PathLike[str] | None = None,
    witnesses: Any = None,
    timestamps: Any = None,
) -> Ledger:
    """Open the ledger kept in PostgreSQL at ``url`` as one replica among many.

    Same API as every :class:`~aiobligations.ledger.Ledger`. ``submit`` never waits; ``append``
    returns the record's index once the elected sequencer stored it; reads, proofs, receipts,
    export and verify read the shared tables. Every process that opens the ledger stands for
    election as its sequencer (``candidate``), so the log keeps being sequenced as long as any of
    them runs.

    Example:
        >>> ledger = ReplicaLedger("postgresql://ledger@db.internal/evidence", origin="example.com/ai/ledger",
        ...                        signer=signer, master_key=master)  # doctest: +SKIP

    Args:
        url: The database (``postgresql://…``; keep the password out of it, in ``PGPASSWORD``).
        schema: The PostgreSQL schema of this ledger's tables.
        candidate: Whether this process may become the sequencer.
        election_interval: How often a candidate tries the sequencer's lock: the longest a log goes
            unsequenced after its sequencer dies, plus the time PostgreSQL takes to notice.
        migrate: Apply pending schema migrations on open.
        leftovers: A file of this host where records the database could not take before this
            process closed are kept (sealed), to be queued by the next replica that opens the ledger
            on this host; without it they are lost, and logged as such.
        witnesses: A :class:`~aiobligations.witness.client.WitnessSettings`: whichever replica is
            the elected sequencer asks these witnesses to cosign the checkpoints it signs.
        timestamps: A :class:`~aiobligations.witness.timestamp.TimestampSettings`: the elected
            sequencer has the checkpoints it signs timestamped by these authorities.
        origin, signer, master_key, queue_size, on_full, full_timeout, max_batch,
        checkpoint_interval, retention, history_interval, batch_delay: As for :class:`Ledger`.

    Raises:
        ConfigurationError: another origin, signing key or master key than the ledger's.
        UnusableInput: the schema is at a version this code cannot use.
        LedgerError: the database cannot be reached.

    .. versionadded:: 0.3.0
    """
    _check_options(origin, checkpoint_interval)
    store = PostgresStore(url, schema=schema, migrate=migrate)
    try:
        state = store.open()
        with store.lock("create"):
            secret = _ledger_secret(store, origin, signer, master_key)
        if state.stored_end != state.size:
            raise UnusableInput(
                f"{store!r}: the tree state says {state.size} records but the last stored index is "
                f"{state.stored_end - 1}; run `aiobligations verify` on it")
        crypto = SubjectCrypto(master_key, secret)
        writer = ReplicaWriter(store, crypto, queue_seal=QueueSeal(secret, origin), origin=origin, signer=signer, retention=retention or Retention(),
                               checkpoint_interval=checkpoint_interval, history_interval=history_interval,
                               candidate=candidate, election_interval=election_interval,
                               queue_size=queue_size, on_full=on_full, full_timeout=full_timeout,
                               max_batch=max_batch, batch_delay=batch_delay,
                               leftovers=None if leftovers is None else os.fspath(leftovers), witnesses=witnesses,
                               timestamps=timestamps)
        try:
            writer.queue_leftovers()
        except Exception as exc:  # Never keep a replica from opening: the file stays for next time.
            log.error("ledger_leftovers_failed", path=writer.leftovers, error=f"{type(exc).__name__}: {exc}")
    except BaseException:
        store.close()
        raise
    if not isinstance(retention, (Retention, type(None))):
        raise ConfigurationError("retention must be a Retention")
    return Ledger._composed(store, writer, crypto, origin=origin, signer=signer, retention=retention, state=state)

