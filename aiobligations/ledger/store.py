"""Where the ledger keeps its bytes: the :class:`Store` protocol and the embedded SQLite store.

A store is dumb on purpose. The ledger's writer thread decides indices, hashes and checkpoints and
hands the store one :class:`Batch` at a time, which the store must make durable atomically: all of
it or none of it. Reads come from other threads.

What a store keeps:

- records: index, sequencing time, kind, leaf hash and the exact leaf bytes;
- interior hashes of perfect subtrees at every level that is a multiple of :data:`NODE_STRIDE`, so
  that opening the log never re-hashes it and a proof never needs all leaves in memory;
- the tree state (size and the compact range of ``[0, size)``) and the latest signed checkpoint;
- subject keys, wrapped by the master key, in a table apart from the records;
- after pruning, the compact range of the pruned prefix;
- witnesses' cosignatures and RFC 3161 timestamps of checkpoints (written by their client threads,
  not the writer).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from ..errors import ConfigurationError, LedgerError, LedgerLocked, UnusableInput
from . import _flock
from ._flock import held

__all__ = ["NODE_STRIDE", "Batch", "SQLiteStore", "Store", "StoreState", "state_from"]

NODE_STRIDE = 4
"""Interior hashes are stored for levels 4, 8, 12, …; the levels between are folded on demand."""

_SCHEMA_VERSION = b"1"
_APPLICATION_ID = 0x4149_4F42  # "AIOB": marks the file as ours for `verify` and `file(1)`.


@dataclass
class StoreState:
    """What a store knows when it is opened."""

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)
    last_ts: float = 0.0
    checkpoint: str | None = None
    pruned_start: int = 0
    pruned_frontier: list[bytes] = field(default_factory=list)
    stored_end: int = 0
    """One past the last stored index. The tree state is written in the same transaction as the
    records, so it equals ``size``; anything else means the file was edited outside aiobligations."""


@dataclass
class Batch:
    """One group commit, written atomically by :meth:`Store.write_batch`."""

    records: list[tuple[int, float, str, bytes, bytes]]
    """Rows of (index, ts, kind, leaf hash, leaf bytes)."""
    nodes: list[tuple[int, int, bytes]]
    """Rows of (level, index, hash) for the perfect subtrees completed by this batch."""
    size: int
    frontier: list[bytes]
    new_keys: list[tuple[str, bytes, str]] = field(default_factory=list)
    """Rows of (pseudonym, wrapped key, master key id)."""
    erased: list[str] = field(default_factory=list)
    """Pseudonyms whose keys are deleted in this batch."""
    interactions: list[tuple[str, int]] = field(default_factory=list)
    """(interaction id, index) of the ``interaction`` records in this batch."""
    checkpoint: str | None = None
    checkpoint_history: bool = False
    """Also keep this checkpoint in the history table (done at most every so often)."""
    last_ts: float = 0.0
    extra_meta: list[tuple[str, bytes]] = field(default_factory=list)
    """More ``meta`` rows to write in the same transaction (a writer process's last sequence number)."""


@runtime_checkable
class Store(Protocol):
    """**Protocol:** durable storage for one ledger. Other backends implement these methods.

    ``write_batch`` and ``prune`` are called from the ledger's writer thread only; every other
    method may be called from any thread.
    """

    def open(self) -> StoreState:
        """Open (creating if new) and return the persisted state."""
        ...

    def get_meta(self, key: str) -> bytes | None:
        """A metadata value (origin, verifier key, wrapped secrets), or ``None``."""
        ...

    def put_meta(self, values: dict[str, bytes]) -> None:
        """Set metadata values durably and atomically (before the writer starts)."""
        ...

    def write_batch(self, batch: Batch) -> object:
        """Store one batch atomically and durably, or raise and store none of it.

        The ledger ignores what it returns (PostgreSQL's returns its sequencer's queue rows).
        """
        ...

    def drop_meta(self, keys: Sequence[str]) -> None:
        """Delete metadata values (from the writer thread)."""
        ...

    def meta_with_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every metadata value whose key starts with ``prefix``."""
        ...

    def tree_head(self) -> tuple[int, str | None]:
        """The durable tree size and latest checkpoint, as stored now (whoever wrote them)."""
        ...

    def indices_of(self, kinds: Sequence[str], start: int, end: int) -> list[int]:
        """The indices of stored records of these kinds in ``[start, end)``, in order."""
        ...

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive lock named ``name`` across every process using this ledger (held by a block)."""
        ...

    def get_keys(self, pseudonyms: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """The wrapped keys (and master key ids) that exist among ``pseudonyms``."""
        ...

    def all_keys(self) -> list[tuple[str, bytes, str]]:
        """Every wrapped subject key, as (pseudonym, wrapped key, master key id)."""
        ...

    def replace_keys(self, rows: Sequence[tuple[str, bytes, str]], meta: dict[str, bytes]) -> None:
        """Rewrite wrapped keys and metadata in one transaction (master key rotation)."""
        ...

    def iter_records(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (index, leaf hash, leaf bytes) for stored records in ``[start, end)``, in order."""
        ...

    def get_record(self, index: int) -> tuple[float, str, bytes] | None:
        """(ts, kind, leaf bytes) of one record, or ``None``."""
        ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of ``[start, end)``; raise :class:`LedgerError` if any is missing."""
        ...

    def node_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored interior hashes at ``level`` for indices ``[start, end)``."""
        ...

    def ts_at(self, index: int) -> float | None:
        """The sequencing time of record ``index``, or ``None``."""
        ...

    def kinds_in(self, start: int, end: int) -> Iterator[tuple[int, float, str]]:
        """Yield (index, ts, kind) for stored records in ``[start, end)``."""
        ...

    def find_interaction(self, interaction_id: str) -> int | None:
        """The index of the ``interaction`` record with this id, or ``None``."""
        ...

    def prune(self, end: int, frontier: Sequence[bytes]) -> None:
        """Delete records before ``end``, keeping ``frontier``, the compact range of ``[0, end)``."""
        ...

    def checkpoints(self) -> list[tuple[int, float, str]]:
        """The kept history of signed checkpoints, as (size, ts, note), oldest first."""
        ...

    def add_cosignature(self, size: int, witness: str, note: str, line: str) -> None:
        """Keep a witness's cosignature ``line`` of the checkpoint ``note`` of ``size`` (any thread).

        ``witness`` is the witness's verifier key. A second line for the same size and witness
        replaces the first.
        """
        ...

    def cosignatures(self, size: int | None = None) -> list[tuple[int, str, str, str]]:
        """Kept cosignatures as (size, witness, note, line): of one checkpoint size, or all, by size."""
        ...

    def witness_sizes(self) -> dict[str, int]:
        """The largest checkpoint size each witness (by verifier key) has cosigned."""
        ...

    def add_timestamp(self, size: int, tsa: str, note: str, response: bytes) -> None:
        """Keep a timestamp authority's RFC 3161 ``response`` for the checkpoint ``note`` (any thread)."""
        ...

    def timestamps(self, size: int | None = None) -> list[tuple[int, str, str, bytes]]:
        """Kept timestamps as (size, TSA URL, note, DER response): of one checkpoint size, or all."""
        ...

    def close(self) -> None:
        """Release every connection; idempotent."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    idx INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    leaf BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, ts REAL NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS interactions (interaction_id TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subject_keys (
    pseudonym TEXT PRIMARY KEY,
    wrapped BLOB NOT NULL,
    master_id TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cosignatures (
    size INTEGER NOT NULL, witness TEXT NOT NULL, note TEXT NOT NULL, line TEXT NOT NULL,
    PRIMARY KEY (size, witness)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cosignatures_by_witness ON cosignatures (witness, size);
CREATE TABLE IF NOT EXISTS timestamps (
    size INTEGER NOT NULL, tsa TEXT NOT NULL, note TEXT NOT NULL, response BLOB NOT NULL,
    PRIMARY KEY (size, tsa)
) WITHOUT ROWID;
"""


# Each witness's largest cosigned size by a skip-scan of the (witness, size) index: one lookup per
# witness, however many cosignatures are kept (GROUP BY would read them all).
_WITNESS_SIZES = """
WITH RECURSIVE w(name) AS (
    SELECT min(witness) FROM {t}
    UNION ALL SELECT (SELECT min(witness) FROM {t} WHERE witness > w.name) FROM w WHERE w.name IS NOT NULL)
SELECT name, (SELECT max(size) FROM {t} WHERE witness = name) FROM w WHERE name IS NOT NULL
"""

_CHUNK = 256
_INSERTS: dict[tuple[str, int, int], str] = {}


def _insert_rows(conn: sqlite3.Connection, table: str, width: int, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert rows with multi-row ``INSERT … VALUES (…),(…)`` statements.

    One statement per chunk, rather than ``executemany``'s one step per row, matters beyond speed:
    SQLite gives up the GIL at every step, and under a busy event loop each step then waits up to a
    whole switch interval (5 ms) to get it back, which starves the writer. Chunk sizes are powers
    of two, so only a handful of statements are ever prepared and cached.
    """
    position = 0
    total = len(rows)
    while position < total:
        size = min(_CHUNK, 1 << ((total - position).bit_length() - 1))
        sql = _INSERTS.get((table, width, size))
        if sql is None:
            values = ",".join([f"({','.join('?' * width)})"] * size)
            sql = _INSERTS[table, width, size] = f"INSERT INTO {table} VALUES {values}"
        conn.execute(sql, [value for row in rows[position : position + size] for value in row])
        position += size


def state_from(meta: dict[str, bytes], last_index: int | None) -> StoreState:
    """The state that a store's ``meta`` rows (``tree``, ``last_ts``, ``checkpoint``, ``pruned``)
    and its highest stored index describe: every store keeps them the same way."""
    state = StoreState()
    tree = meta.get("tree")
    if tree:
        state.size = int.from_bytes(tree[:8], "big")
        state.frontier = _unpack(tree[8:])
    state.last_ts = float(meta.get("last_ts", b"0"))
    checkpoint = meta.get("checkpoint")
    state.checkpoint = checkpoint.decode() if checkpoint else None
    pruned = meta.get("pruned")
    if pruned:
        state.pruned_start = int.from_bytes(pruned[:8], "big")
        state.pruned_frontier = _unpack(pruned[8:])
    state.stored_end = state.pruned_start if last_index is None else int(last_index) + 1
    return state


def _blob(value: object) -> bytes:
    """A ``meta`` value as bytes, whatever type SQL typed by hand stored (TEXT, a number)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (int, float)):
        return repr(value).encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"cannot convert a {type(value).__name__} meta value to bytes")


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (it holds pseudonyms, times and kinds);
    SQLite then gives its WAL and shared-memory files the same permissions. An existing file that
    others can read is tightened, when this process owns it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            if info.st_mode & 0o077 and info.st_uid == os.getuid():
                os.chmod(path, 0o600)
        return
    except OSError:
        return  # SQLite reports it, with the reason, when it opens the file.
    os.close(fd)


def _pack(hashes: Sequence[bytes]) -> bytes:
    return b"".join(hashes)


def _unpack(blob: bytes | None) -> list[bytes]:
    if not blob:
        return []
    return [blob[i : i + 32] for i in range(0, len(blob), 32)]


class SQLiteStore:
    """The embedded default store: one SQLite file in WAL mode with ``synchronous=FULL``.

    Every batch is one transaction; SQLite makes it atomic and, with ``FULL``, durable when the
    commit returns, so a crash never leaves a torn tail to serve.

    Args:
        path: The database file. Its folder must exist and be writable.
        create: Create the file if it does not exist. When false, a missing file raises
            :class:`UnusableInput`.
        readonly: Open read-only (for ``verify``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False) -> None:
        self.path = Path(path)
        self._create = create
        self._readonly = readonly
        self._writer: sqlite3.Connection | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._lock_handle: IO[str] | None = None
        self._closed = False
        self._cosigner: sqlite3.Connection | None = None
        self._cosigner_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections -------------------------------------------------------------------------

    def _connect(self, *, write: bool) -> sqlite3.Connection:
        if not self._create and not self.path.exists():
            raise UnusableInput(f"{self.path}: no such ledger database")
        if write and not self._readonly:
            _create_private(self.path)
            uri = f"file:{self.path}?mode=rwc"
        else:
            uri = f"file:{self.path}?mode=ro"
        try:
            conn = sqlite3.connect(
                uri, uri=True, isolation_level=None, check_same_thread=False, cached_statements=64
            )
            conn.execute("PRAGMA busy_timeout=5000")
            if write and not self._readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                # Deleted subject keys must not linger in free pages of the file.
                conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            raise UnusableInput(f"{self.path}: cannot open the ledger database ({exc})") from None
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise LedgerError("the store is closed")
            conn = self._connect(write=False)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _lock(self) -> None:
        """Take the ledger's writer lock: two writers would both assign the same indices.

        The lock is an advisory ``flock`` on ``<database>.lock``; the kernel releases it when the
        process dies, so a crash never leaves a stale lock.
        """
        path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            handle = open(fd, "a+")  # noqa: SIM115 - held open until close().
        except OSError as exc:
            raise UnusableInput(f"{path}: cannot create the ledger's lock file ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LedgerLocked(
                f"{self.path} is already open for writing by {holder}; a ledger has one writer"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle
        _flock.track(handle.fileno())  # A child forked from this process must not keep it held.

    def open(self) -> StoreState:
        """Open (creating the schema if new) and return the persisted state.

        Raises:
            UnusableInput: the file is not an aiobligations ledger or cannot be opened.
            LedgerError: another process has the ledger open for writing.
        """
        if not self._readonly:
            if not self._create and not self.path.exists():
                raise UnusableInput(f"{self.path}: no such ledger database")
            self._lock()
        self._writer = conn = self._connect(write=True)
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and (app_id != _APPLICATION_ID or "records" not in tables):
                raise UnusableInput(f"{self.path}: not an aiobligations ledger database")
            if not tables:
                if self._readonly:
                    raise UnusableInput(f"{self.path}: empty database, not an aiobligations ledger")
                # One transaction, so a crash cannot leave a half-made ledger behind.
                conn.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={_APPLICATION_ID};"
                    f" INSERT INTO meta VALUES ('schema', x'{_SCHEMA_VERSION.hex()}'); COMMIT;"
                )
            elif self.get_meta("schema") != _SCHEMA_VERSION:
                raise UnusableInput(f"{self.path}: ledger schema version not supported by this aiobligations")
            elif not self._readonly and "interactions" not in tables:
                conn.execute(
                    "CREATE TABLE interactions (interaction_id TEXT PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID"
                )
            if not self._readonly and tables:
                conn.executescript(_SCHEMA)  # A ledger made before witnesses: add their tables (idempotent).
            return self._load_state()
        except sqlite3.DatabaseError as exc:
            raise UnusableInput(f"{self.path}: not a usable ledger database ({exc})") from None

    def reload_state(self) -> StoreState:
        """Read the persisted state again (a reader beside a writer process, after it pruned)."""
        return self._load_state()

    def _load_state(self) -> StoreState:
        conn = self._writer if self._writer is not None else self._reader()
        meta = {key: _blob(value) for key, value in conn.execute("SELECT key, value FROM meta")}
        return state_from(meta, conn.execute("SELECT max(idx) FROM records").fetchone()[0])

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        """Return a metadata value, or ``None``."""
        row = self._reader().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else _blob(row[0])

    def put_meta(self, values: dict[str, bytes]) -> None:
        """Set metadata values durably and atomically (used before the writer starts)."""
        conn = self._writer
        assert conn is not None
        with self._transaction(conn):
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        """Write one batch atomically and durably.

        Raises:
            sqlite3.Error: the write failed; nothing of the batch is stored.
        """
        conn = self._writer
        assert conn is not None
        with self._transaction(conn):
            if batch.new_keys:
                conn.executemany("INSERT OR REPLACE INTO subject_keys VALUES (?,?,?)", batch.new_keys)
            if batch.erased:
                conn.executemany("DELETE FROM subject_keys WHERE pseudonym=?", [(p,) for p in batch.erased])
            if batch.records:
                _insert_rows(conn, "records", 5, batch.records)
            if batch.nodes:
                _insert_rows(conn, "nodes", 3, batch.nodes)
            if batch.interactions:
                # The first record of an interaction id keeps it: ids are UUIDv7, a repeat is a replay.
                conn.executemany("INSERT OR IGNORE INTO interactions VALUES (?,?)", batch.interactions)
            meta = [
                ("tree", batch.size.to_bytes(8, "big") + _pack(batch.frontier)),
                ("last_ts", repr(batch.last_ts).encode()),
            ]
            if batch.checkpoint is not None:
                meta.append(("checkpoint", batch.checkpoint.encode()))
                if batch.checkpoint_history:
                    conn.execute(
                        "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?)",
                        (batch.size, batch.last_ts, batch.checkpoint),
                    )
            meta.extend(batch.extra_meta)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", meta)
        if batch.erased:
            # Push the deletion out of the WAL into the main file, whose freed pages secure_delete
            # has zeroed, so the key is gone from disk and not only from the table.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def drop_meta(self, keys: Sequence[str]) -> None:
        """Delete metadata values (from the writer thread)."""
        conn = self._writer
        assert conn is not None
        with self._transaction(conn):
            conn.executemany("DELETE FROM meta WHERE key=?", [(key,) for key in keys])

    def meta_with_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every metadata value whose key starts with ``prefix``."""
        rows = self._reader().execute(
            "SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
        )
        return {key: bytes(value) for key, value in rows}

    def tree_head(self) -> tuple[int, str | None]:
        """The durable tree size and latest checkpoint, as stored now (whoever wrote them)."""
        conn = self._reader()
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('tree', 'checkpoint')"))
        tree = rows.get("tree")
        checkpoint = rows.get("checkpoint")
        return (int.from_bytes(tree[:8], "big") if tree else 0,
                bytes(checkpoint).decode() if checkpoint else None)

    def indices_of(self, kinds: Sequence[str], start: int, end: int) -> list[int]:
        """The indices of stored records of these kinds in ``[start, end)``, in order."""
        marks = ",".join("?" * len(kinds))
        return [row[0] for row in self._reader().execute(
            f"SELECT idx FROM records WHERE idx >= ? AND idx < ? AND kind IN ({marks}) ORDER BY idx",
            (start, end, *kinds),
        )]

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock named ``name`` across every process using this ledger (held by a block).

        An advisory ``flock`` on ``<database>.<name>.lock``: the kernel releases it if the holder
        dies. Not reentrant: a process must not take the same lock twice at once.

        Raises:
            UnusableInput: the lock file cannot be created.
        """
        if not name.isidentifier():
            raise ConfigurationError(f"a lock name must be an identifier, got {name!r}")
        path = self.path.with_name(f"{self.path.name}.{name}.lock")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(held(path))
            except OSError as exc:
                raise UnusableInput(f"{path}: cannot create the lock file ({exc.strerror})") from None
            yield

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections (never use or close them here)."""
        self._local = threading.local()
        self._readers = []
        self._readers_lock = threading.Lock()
        self._writer = None
        self._lock_handle = None
        self._cosigner = None
        self._cosigner_lock = threading.Lock()

    def replace_keys(self, rows: Sequence[tuple[str, bytes, str]], meta: dict[str, bytes]) -> None:
        """Rewrite wrapped keys and metadata in one transaction (master key rotation)."""
        conn = self._writer
        assert conn is not None
        with self._transaction(conn):
            conn.executemany("UPDATE subject_keys SET wrapped=?, master_id=? WHERE pseudonym=?",
                             [(w, m, p) for p, w, m in rows])
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?,?)", list(meta.items()))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def prune(self, end: int, frontier: Sequence[bytes]) -> None:
        """Delete records before ``end``, keeping the compact range of ``[0, end)``."""
        conn = self._writer
        assert conn is not None
        with self._transaction(conn):
            conn.execute("DELETE FROM records WHERE idx < ?", (end,))
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('pruned', ?)",
                (end.to_bytes(8, "big") + _pack(frontier),),
            )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- reading -------------------------------------------------------------------------------

    def get_keys(self, pseudonyms: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """Return the wrapped keys that exist among ``pseudonyms``."""
        conn = self._reader()
        found: dict[str, tuple[bytes, str]] = {}
        unique = list(dict.fromkeys(pseudonyms))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for pseudonym, wrapped, master_id in conn.execute(
                f"SELECT pseudonym, wrapped, master_id FROM subject_keys WHERE pseudonym IN ({marks})", chunk
            ):
                found[pseudonym] = (bytes(wrapped), master_id)
        return found

    def all_keys(self) -> list[tuple[str, bytes, str]]:
        """Every wrapped subject key."""
        return [(p, bytes(w), m) for p, w, m in self._reader().execute("SELECT * FROM subject_keys")]

    def iter_records(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (index, leaf hash, leaf bytes) for ``start <= index < end`` in order."""
        cursor = self._reader().execute(
            "SELECT idx, leaf, data FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        )
        cursor.arraysize = 1024
        while rows := cursor.fetchmany():
            yield from rows

    def get_record(self, index: int) -> tuple[float, str, bytes] | None:
        """Return (ts, kind, leaf bytes) of one record, or ``None``."""
        row = self._reader().execute("SELECT ts, kind, data FROM records WHERE idx=?", (index,)).fetchone()
        return None if row is None else (row[0], row[1], bytes(row[2]))

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of records ``[start, end)``; raises :class:`LedgerError` if any is missing."""
        rows = self._reader().execute(
            "SELECT leaf FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if len(rows) != end - start:
            raise LedgerError(f"records {start}..{end - 1} are not all stored (pruned?)")
        return [bytes(r[0]) for r in rows]

    def node_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored hashes of perfect subtrees ``(level, start..end-1)``."""
        rows = self._reader().execute(
            "SELECT hash FROM nodes WHERE level=? AND idx >= ? AND idx < ? ORDER BY idx", (level, start, end)
        ).fetchall()
        if len(rows) != end - start:
            raise LedgerError(f"interior hashes at level {level}, {start}..{end - 1} are missing")
        return [bytes(r[0]) for r in rows]

    def ts_at(self, index: int) -> float | None:
        """The sequencing time of record ``index``, or ``None``."""
        row = self._reader().execute("SELECT ts FROM records WHERE idx=?", (index,)).fetchone()
        return None if row is None else row[0]

    def find_interaction(self, interaction_id: str) -> int | None:
        """The index of the ``interaction`` record with this id, or ``None``."""
        row = self._reader().execute("SELECT idx FROM interactions WHERE interaction_id=?", (interaction_id,)).fetchone()
        return None if row is None else int(row[0])

    def kinds_in(self, start: int, end: int) -> Iterator[tuple[int, float, str]]:
        """Yield (index, ts, kind) for records in ``[start, end)``."""
        yield from self._reader().execute(
            "SELECT idx, ts, kind FROM records WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        )

    def checkpoints(self) -> list[tuple[int, float, str]]:
        """The kept history of signed checkpoints, oldest first."""
        return list(self._reader().execute("SELECT size, ts, note FROM checkpoints ORDER BY size"))

    # -- cosignatures (the witness client's thread, on a connection of its own) ------------------

    def add_cosignature(self, size: int, witness: str, note: str, line: str) -> None:
        """Keep a witness's cosignature of the checkpoint ``note`` of ``size`` (from any thread)."""
        self._write_beside("INSERT OR REPLACE INTO cosignatures VALUES (?,?,?,?)", (size, witness, note, line))

    def _write_beside(self, sql: str, params: tuple[object, ...]) -> None:
        """One statement on the witness and timestamp clients' own connection, in its own transaction."""
        with self._cosigner_lock:
            if self._closed:
                raise LedgerError("the store is closed")
            if self._cosigner is None:
                self._cosigner = self._connect(write=True)
            with self._transaction(self._cosigner):
                self._cosigner.execute(sql, params)

    def cosignatures(self, size: int | None = None) -> list[tuple[int, str, str, str]]:
        """Kept cosignatures as (size, witness, note, line): of one checkpoint size, or all, by size."""
        sql = "SELECT size, witness, note, line FROM cosignatures"
        try:
            if size is None:
                rows = self._reader().execute(sql + " ORDER BY size, witness").fetchall()
            else:
                rows = self._reader().execute(sql + " WHERE size=? ORDER BY witness", (size,)).fetchall()
        except sqlite3.OperationalError:
            return []  # A ledger made before witnesses, opened read-only: no table, no cosignatures.
        return [(int(a), b, c, d) for a, b, c, d in rows]

    def add_timestamp(self, size: int, tsa: str, note: str, response: bytes) -> None:
        """Keep a timestamp authority's RFC 3161 ``response`` for the checkpoint ``note`` (any thread)."""
        self._write_beside("INSERT OR REPLACE INTO timestamps VALUES (?,?,?,?)", (size, tsa, note, bytes(response)))

    def timestamps(self, size: int | None = None) -> list[tuple[int, str, str, bytes]]:
        """Kept timestamps as (size, TSA URL, note, DER response): of one checkpoint size, or all."""
        sql = "SELECT size, tsa, note, response FROM timestamps"
        try:
            if size is None:
                rows = self._reader().execute(sql + " ORDER BY size, tsa").fetchall()
            else:
                rows = self._reader().execute(sql + " WHERE size=? ORDER BY tsa", (size,)).fetchall()
        except sqlite3.OperationalError:
            return []  # A ledger made before timestamps, opened read-only.
        return [(int(a), b, c, bytes(d)) for a, b, c, d in rows]

    def witness_sizes(self) -> dict[str, int]:
        """The largest checkpoint size each witness (by verifier key) has cosigned."""
        try:
            rows = self._reader().execute(_WITNESS_SIZES.format(t="cosignatures")).fetchall()
        except sqlite3.OperationalError:
            return {}
        return {witness: int(size) for witness, size in rows}

    def close(self) -> None:
        """Close every connection; idempotent."""
        self._closed = True
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        with self._cosigner_lock:
            if self._cosigner is not None:
                self._cosigner.close()
                self._cosigner = None
        if self._lock_handle is not None:
            _flock.untrack(self._lock_handle.fileno())
            self._lock_handle.close()  # Closing the file releases the lock.
            self._lock_handle = None
