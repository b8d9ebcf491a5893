"""The PostgreSQL store: one ledger shared by every replica of a service, on every host.

:class:`PostgresStore` implements the same :class:`~aiobligations.ledger.store.Store` protocol as
the embedded SQLite store, so export, verify, receipts, pruning and crypto-shredding behave the
same. It adds what replicas need (see :mod:`aiobligations.ledger.replica`):

- a **queue** table that any process appends to concurrently (a record is acknowledged once its
  queue row is committed), and that the one elected sequencer drains in batches;
- **leadership**: the sequencer holds a session-level advisory lock on the very connection it
  writes through, so a sequencer whose session ended can no longer write anything;
- named locks across hosts (advisory locks), and versioned schema migrations.

Everything lives in one PostgreSQL schema (default ``aiobligations``), so several ledgers can share
a database. Needs psycopg 3 and psycopg-pool (``pip install aiobligations[postgres]``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigurationError, LedgerError, UnusableInput
from .store import Batch, StoreState, _blob, _pack, state_from

try:
    import psycopg
    from psycopg_pool import ConnectionPool
except ImportError:  # pragma: no cover - exercised only without the extra.
    psycopg = None  # type: ignore[assignment]
    ConnectionPool = None  # type: ignore[assignment,misc]

__all__ = ["MIGRATIONS", "PostgresStore", "QueueRow", "parse_sequenced", "redact_url", "sequenced_payload"]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")

QueueRow = tuple[int, bytes, int, int, str, bytes, "str | None", bytes, "str | None", bool]
"""A drained queue row: (qid, peer, seq, op, kind, body, pseudonym, sealed, interaction id, waits)."""

# Each migration is (version, what it does, its statements). A migration runs in one transaction
# under an advisory lock, so replicas starting together apply it once. Never edit a released one:
# add the next.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "the ledger tables, the queue and the sequencer's progress per peer", """
CREATE TABLE {s}.meta (key text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE {s}.records (
    idx bigint PRIMARY KEY,
    ts double precision NOT NULL,
    kind text NOT NULL,
    leaf bytea NOT NULL,
    data bytea NOT NULL,
    entry bytea
);
CREATE TABLE {s}.nodes (level int NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE {s}.checkpoints (size bigint PRIMARY KEY, ts double precision NOT NULL, note text NOT NULL);
CREATE TABLE {s}.interactions (interaction_id text PRIMARY KEY, idx bigint NOT NULL);
CREATE TABLE {s}.subject_keys (pseudonym text PRIMARY KEY, wrapped bytea NOT NULL, master_id text NOT NULL);
CREATE TABLE {s}.queue (
    qid bigserial PRIMARY KEY,
    peer bytea NOT NULL,
    seq bigint NOT NULL,
    op smallint NOT NULL,
    kind text NOT NULL,
    body bytea NOT NULL,
    pseudonym text,
    sealed bytea NOT NULL,
    interaction_id text,
    waits boolean NOT NULL,
    UNIQUE (peer, seq)
);
CREATE TABLE {s}.peers (peer bytea PRIMARY KEY, seq bigint NOT NULL, seen double precision NOT NULL);
-- The sequencer stores a whole batch with one call: one round trip, so one wait on the network
-- (under a busy interpreter each wait can cost a thread switch interval to get the GIL back).
CREATE FUNCTION {s}.store_batch(
    r_idx bigint[], r_ts float8[], r_kind text[], r_leaf bytea[], r_data bytea[], r_entry bytea[],
    n_level int[], n_idx bigint[], n_hash bytea[],
    k_pseudonym text[], k_wrapped bytea[], k_master text[], erased text[],
    i_id text[], i_idx bigint[],
    m_key text[], m_value bytea[],
    c_size bigint, c_ts float8, c_note text,
    q_ids bigint[], p_peer bytea[], p_seq bigint[], p_seen float8[],
    channel text, payload text, take int)
    RETURNS SETOF {s}.queue LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.subject_keys SELECT * FROM unnest(k_pseudonym, k_wrapped, k_master)
        ON CONFLICT (pseudonym) DO UPDATE SET wrapped = excluded.wrapped, master_id = excluded.master_id;
    DELETE FROM {s}.subject_keys WHERE pseudonym = ANY(erased);
    INSERT INTO {s}.records SELECT * FROM unnest(r_idx, r_ts, r_kind, r_leaf, r_data, r_entry);
    INSERT INTO {s}.nodes SELECT * FROM unnest(n_level, n_idx, n_hash);
    INSERT INTO {s}.interactions SELECT * FROM unnest(i_id, i_idx) ON CONFLICT DO NOTHING;
    INSERT INTO {s}.meta SELECT * FROM unnest(m_key, m_value) ON CONFLICT (key) DO UPDATE SET value = excluded.value;
    IF c_note IS NOT NULL THEN
        INSERT INTO {s}.checkpoints VALUES (c_size, c_ts, c_note)
            ON CONFLICT (size) DO UPDATE SET ts = excluded.ts, note = excluded.note;
    END IF;
    DELETE FROM {s}.queue WHERE qid = ANY(q_ids);
    INSERT INTO {s}.peers SELECT * FROM unnest(p_peer, p_seq, p_seen)
        ON CONFLICT (peer) DO UPDATE SET seq = greatest(peers.seq, excluded.seq), seen = excluded.seen;
    PERFORM pg_notify(channel, payload);
    -- And the next batch, in the same round trip.
    RETURN QUERY SELECT * FROM {s}.queue ORDER BY qid LIMIT take;
END $$;
-- Token buckets of the request endpoints, shared by every replica (keys are keyed digests, never
-- the subject or address itself); times are the database's clock, the one clock all hosts share.
CREATE TABLE {s}.rate_limits (
    namespace text NOT NULL, mark bytea NOT NULL, tokens float8 NOT NULL, at float8 NOT NULL,
    PRIMARY KEY (namespace, mark));
CREATE FUNCTION {s}.rate_acquire(ns text[], marks bytea[], bursts float8[], rates float8[], spend boolean)
    RETURNS float8[] LANGUAGE plpgsql AS $$
DECLARE
    now float8 := extract(epoch FROM clock_timestamp());
    waits float8[] := '{{}}';
    levels float8[] := '{{}}';
    level float8;
    t float8;
    a float8;
BEGIN
    INSERT INTO {s}.rate_limits SELECT n, m, b, now FROM unnest(ns, marks, bursts) AS x(n, m, b)
        ON CONFLICT DO NOTHING;
    FOR i IN 1 .. coalesce(array_length(ns, 1), 0) LOOP
        SELECT tokens, at INTO t, a FROM {s}.rate_limits WHERE namespace = ns[i] AND mark = marks[i] FOR UPDATE;
        level := least(bursts[i], t + greatest(0, now - a) * rates[i]);
        levels := levels || level;
        waits := waits || CASE WHEN level >= 1 THEN 0::float8 ELSE (1 - level) / rates[i] END;
    END LOOP;
    IF spend AND coalesce((SELECT max(w) FROM unnest(waits) w), 0) = 0 THEN
        FOR i IN 1 .. coalesce(array_length(ns, 1), 0) LOOP
            UPDATE {s}.rate_limits SET tokens = levels[i] - 1, at = now WHERE namespace = ns[i] AND mark = marks[i];
        END LOOP;
    END IF;
    RETURN waits;
END $$;
-- A replica queues a batch with one call too.
CREATE FUNCTION {s}.enqueue(
    q_peer bytea[], q_seq bigint[], q_op smallint[], q_kind text[], q_body bytea[], q_pseudonym text[],
    q_sealed bytea[], q_interaction text[], q_waits boolean[], channel text)
    RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {s}.queue (peer, seq, op, kind, body, pseudonym, sealed, interaction_id, waits)
        SELECT * FROM unnest(q_peer, q_seq, q_op, q_kind, q_body, q_pseudonym, q_sealed, q_interaction, q_waits)
        ON CONFLICT (peer, seq) DO NOTHING;
    PERFORM pg_notify(channel, '');
END $$;
"""),
    (2, "witnesses' cosignatures of checkpoints", """
CREATE TABLE {s}.cosignatures (
    size bigint NOT NULL, witness text NOT NULL, note text NOT NULL, line text NOT NULL,
    PRIMARY KEY (size, witness));
"""),
    (3, "RFC 3161 timestamps of checkpoints; cosignatures indexed by witness", """
CREATE TABLE {s}.timestamps (
    size bigint NOT NULL, tsa text NOT NULL, note text NOT NULL, response bytea NOT NULL,
    PRIMARY KEY (size, tsa));
-- Each witness's latest cosigned size, without reading every cosignature ever kept.
CREATE INDEX cosignatures_by_witness ON {s}.cosignatures (witness, size);
"""),
]

# Every session commits durably whatever the database's or role's default: an acknowledged record
# must survive a crash of the database server.
_OPTIONS = "-c synchronous_commit=on"
_OPTIONS_READONLY = "-c default_transaction_read_only=on"

LOCK_MIGRATE = 0
LOCK_SEQUENCER = 1


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def _int32(data: bytes) -> int:
    return int.from_bytes(data[:4], "big", signed=True)


def _need_psycopg() -> None:
    if psycopg is None:
        raise ConfigurationError(
            "a PostgreSQL ledger needs psycopg 3 and psycopg-pool: pip install 'aiobligations[postgres]'"
        )


class PostgresStore:
    """A ledger kept in PostgreSQL (15 or newer), shared by every process and host that opens it.

    Args:
        url: A libpq connection URL, ``postgresql://user@host:5432/dbname``. Put the password in
            the environment (``PGPASSWORD``) or a ``.pgpass`` file rather than in the URL.
        schema: The PostgreSQL schema holding this ledger's tables (one ledger per schema).
        readonly: Open read-only (``verify``): no migration, no writes.
        migrate: Apply pending schema migrations when opening (else a database behind this
            version is refused; run ``aiobligations db upgrade``).
        pool_size: The most connections kept for reads.
        connect_timeout: Seconds to wait for a connection.

    .. versionadded:: 0.3.0
    """

    def __init__(self, url: str, *, schema: str = "aiobligations", readonly: bool = False, migrate: bool = True,
                 pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        _need_psycopg()
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ConfigurationError(f"a PostgreSQL ledger url starts with postgresql://, got {url!r}")
        if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"the ledger's schema must be a lower-case identifier of at most 40 characters, got {schema!r}")
        self.url = url
        self.schema = schema
        self.path = f"{redact_url(url)} (schema {schema})"
        self._readonly = readonly
        self._migrate = migrate
        self._pool_size = pool_size
        self._timeout = connect_timeout
        self._lock_class = _int32(hashlib.sha256(b"aiobligations/" + schema.encode()).digest())
        self.channel_queued = f"{schema}_queued"
        self.channel_sequenced = f"{schema}_sequenced"
        self._pool: Any = None
        self._pool_lock = threading.Lock()
        self._writer: Any = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self.url)!r}, schema={self.schema!r})"

    # -- connections -------------------------------------------------------------------------

    def connect(self, *, autocommit: bool = True) -> Any:
        """A new connection of this store's own (the caller closes it).

        Raises:
            LedgerError: the database cannot be reached.
        """
        options = _OPTIONS_READONLY if self._readonly else _OPTIONS
        try:
            return psycopg.connect(self.url, autocommit=autocommit, connect_timeout=max(1, int(self._timeout)),
                                   application_name="aiobligations", options=options)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot connect to the ledger's database {redact_url(self.url)}: {_reason(exc)}") from None

    def _reads(self) -> Any:
        """A pooled connection for one read (``with store._reads() as conn``)."""
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                if self._closed:
                    raise LedgerError("the store is closed")
                if self._pool is None:
                    options = _OPTIONS_READONLY if self._readonly else _OPTIONS
                    self._pool = ConnectionPool(
                        self.url, min_size=1, max_size=self._pool_size, open=True, timeout=self._timeout,
                        name=f"aiobligations-{self.schema}",
                        kwargs={"autocommit": True, "application_name": "aiobligations", "options": options,
                                "connect_timeout": max(1, int(self._timeout))})
                pool = self._pool
        return pool.connection()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        stale = 0
        while True:
            conn = None
            try:
                with self._reads() as conn:
                    rows: list[tuple[Any, ...]] = conn.execute(sql, params).fetchall()
                    return rows
            except psycopg.OperationalError as exc:
                # A pooled connection that died while idle (the database restarted, the network was
                # cut) is dropped by the pool as it comes back broken: try another, as many as it holds.
                if conn is not None and conn.broken and stale < self._pool_size:
                    stale += 1
                    continue
                raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None
            except psycopg.Error as exc:
                raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None
            except Exception as exc:
                if type(exc).__name__ == "PoolTimeout":
                    raise LedgerError(f"the ledger's database {redact_url(self.url)} cannot be reached") from None
                raise

    def _write_conn(self) -> Any:
        if self._writer is None or self._writer.closed:
            self._writer = self.connect()
        return self._writer

    # -- schema --------------------------------------------------------------------------------

    def version(self, conn: Any = None) -> int:
        """The schema version the database is at (0: no ledger here yet)."""
        name = f"{self.schema}.migrations"

        def read(c: Any) -> int:
            if c.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
                return 0
            return int(c.execute(f"SELECT coalesce(max(version), 0) FROM {name}").fetchone()[0])

        if conn is not None:
            return read(conn)
        try:
            with self._reads() as pooled:
                return read(pooled)
        except psycopg.Error as exc:
            raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None

    def upgrade(self) -> list[int]:
        """Apply the pending migrations, in order, each once whoever runs it; return those applied.

        Raises:
            UnusableInput: the database is at a newer version than this aiobligations knows.
            LedgerError: the database cannot be reached or refused a statement.
        """
        latest = MIGRATIONS[-1][0]
        applied: list[int] = []
        conn = self.connect(autocommit=False)
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (self._lock_class, LOCK_MIGRATE))
                # Only when missing: a role that owns a schema made for it need not create schemas.
                if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone() is None:
                    conn.execute(f"CREATE SCHEMA {self.schema}")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {self.schema}.migrations ("
                             "version int PRIMARY KEY, description text NOT NULL, applied double precision NOT NULL)")
                current = self.version(conn)
                if current > latest:
                    raise UnusableInput(
                        f"{self.path}: the ledger's schema is at version {current}, newer than this "
                        f"aiobligations knows ({latest}); upgrade aiobligations")
                for version, description, statements in MIGRATIONS:
                    if version <= current:
                        continue
                    conn.execute(statements.format(s=self.schema))
                    conn.execute(f"INSERT INTO {self.schema}.migrations VALUES (%s, %s, %s)",
                                 (version, description, time.time()))
                    applied.append(version)
            conn.commit()
        except psycopg.Error as exc:
            raise LedgerError(f"the schema migration failed: {_reason(exc)}") from None
        finally:
            conn.close()
        return applied

    def open(self) -> StoreState:
        """Open (migrating a new or older database unless ``migrate=False``) and return the state.

        Raises:
            UnusableInput: no ledger here (read-only), or a schema version this code cannot use.
            LedgerError: the database cannot be reached.
        """
        latest = MIGRATIONS[-1][0]
        current = self.version()
        if current != latest:
            if self._readonly or not self._migrate or current > latest:
                if current == 0:
                    raise UnusableInput(f"{self.path}: no aiobligations ledger in this database")
                raise UnusableInput(
                    f"{self.path}: the ledger's schema is at version {current}, this aiobligations needs "
                    f"{latest}; run `aiobligations db upgrade`" if current < latest else
                    f"{self.path}: the ledger's schema is at version {current}, newer than this "
                    f"aiobligations knows ({latest}); upgrade aiobligations")
            self.upgrade()
        return self.reload_state()

    def reload_state(self) -> StoreState:
        """Read the persisted state (what a new sequencer starts from)."""
        return self._state(self._query)

    def state_on(self, conn: Any) -> StoreState:
        """The persisted state read through ``conn`` (the sequencer's own connection)."""
        return self._state(lambda sql, params=(): conn.execute(sql, params).fetchall())

    def _state(self, query: Any) -> StoreState:
        meta = {key: _blob(value) for key, value in query(
            f"SELECT key, value FROM {self.schema}.meta WHERE key IN ('tree', 'last_ts', 'checkpoint', 'pruned')")}
        return state_from(meta, query(f"SELECT max(idx) FROM {self.schema}.records")[0][0])

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        """A metadata value, or ``None``."""
        rows = self._query(f"SELECT value FROM {self.schema}.meta WHERE key=%s", (key,))
        return bytes(rows[0][0]) if rows else None

    def put_meta(self, values: dict[str, bytes]) -> None:
        """Set metadata values durably and atomically."""
        conn = self._write_conn()
        try:
            with conn.transaction():
                self._upsert_meta(conn, list(values.items()))
        except psycopg.Error as exc:
            raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None

    def _upsert_meta(self, conn: Any, rows: list[tuple[str, bytes]]) -> None:
        if rows:
            keys, values = zip(*rows)
            conn.execute(f"INSERT INTO {self.schema}.meta SELECT * FROM unnest(%s::text[], %b::bytea[]) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (list(keys), list(values)))

    def drop_meta(self, keys: Sequence[str]) -> None:
        """Delete metadata values."""
        conn = self._write_conn()
        with conn.transaction():
            conn.execute(f"DELETE FROM {self.schema}.meta WHERE key = ANY(%s)", (list(keys),))

    def meta_with_prefix(self, prefix: str) -> dict[str, bytes]:
        """Every metadata value whose key starts with ``prefix``."""
        rows = self._query(f"SELECT key, value FROM {self.schema}.meta WHERE left(key, %s) = %s",
                           (len(prefix), prefix))
        return {key: bytes(value) for key, value in rows}

    def tree_head(self) -> tuple[int, str | None]:
        """The durable tree size and latest checkpoint, as stored now (whoever wrote them)."""
        rows = dict(self._query(f"SELECT key, value FROM {self.schema}.meta WHERE key IN ('tree', 'checkpoint')"))
        tree = rows.get("tree")
        checkpoint = rows.get("checkpoint")
        return (int.from_bytes(bytes(tree[:8]), "big") if tree else 0,
                bytes(checkpoint).decode() if checkpoint else None)

    # -- writing (the sequencer, through the connection that holds its lock) ----------------------

    def write_batch(self, batch: Batch, conn: Any = None, queue: Any = None, take: int = 0) -> list[QueueRow]:
        """Store one batch atomically and durably (on ``conn``, the sequencer's, if given).

        ``queue`` (from the sequencer) is ``(qids, progress, entries)``: the queue rows the batch
        consumes, each peer's last sequenced number, and (index → entry) of the records someone
        waits on. They are removed, noted and stored in the same transaction. With ``take``, the
        next ``take`` queue rows come back in the same round trip (the sequencer's next batch).

        Raises:
            psycopg.Error: nothing of the batch is stored.
        """
        if conn is None:
            conn = self._write_conn()
        s = self.schema
        qids, progress, entries = queue if queue is not None else ((), (), {})
        records = list(zip(*batch.records)) if batch.records else [()] * 5
        nodes = list(zip(*batch.nodes)) if batch.nodes else [()] * 3
        keys = list(zip(*batch.new_keys)) if batch.new_keys else [()] * 3
        interactions = list(zip(*batch.interactions)) if batch.interactions else [()] * 2
        meta = [("tree", batch.size.to_bytes(8, "big") + _pack(batch.frontier)),
                ("last_ts", repr(batch.last_ts).encode())]
        if batch.checkpoint is not None:
            meta.append(("checkpoint", batch.checkpoint.encode()))
        meta.extend(batch.extra_meta)
        history = batch.checkpoint if batch.checkpoint is not None and batch.checkpoint_history else None
        peers = list(zip(*progress)) if progress else [()] * 3
        get = entries.get
        # One statement, so one round trip and one transaction (autocommit): see store_batch.
        taken: list[QueueRow] = conn.execute(
            f"SELECT qid, peer, seq, op, kind, body, pseudonym, sealed, interaction_id, waits FROM {s}.store_batch(%b::int8[], %b::float8[], %s::text[], %b::bytea[], %b::bytea[], %b::bytea[], "
            "%b::int4[], %b::int8[], %b::bytea[], %s::text[], %b::bytea[], %s::text[], %s::text[], "
            "%s::text[], %b::int8[], %s::text[], %b::bytea[], %s, %s, %s, %b::int8[], %b::bytea[], %b::int8[], "
            "%b::float8[], %s, %s, %s)",
            ([*records[0]], [*records[1]], [*records[2]], [*records[3]], [*records[4]], [get(i) for i in records[0]],
             [*nodes[0]], [*nodes[1]], [*nodes[2]], [*keys[0]], [*keys[1]], [*keys[2]], list(batch.erased),
             [*interactions[0]], [*interactions[1]], [k for k, _ in meta], [v for _, v in meta],
             batch.size, batch.last_ts, history, list(qids), [*peers[0]], [*peers[1]], [*peers[2]],
             self.channel_sequenced, sequenced_payload(batch.size, progress, entries), take)).fetchall()
        return taken

    def enqueue(self, conn: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert queue rows and wake the sequencer, in one transaction and one round trip.

        A row already queued (sent again after a commit whose answer was lost) is kept once.
        """
        columns = [list(column) for column in zip(*rows)]
        conn.execute(f"SELECT {self.schema}.enqueue(%b::bytea[], %b::int8[], %b::int2[], %s::text[], %b::bytea[], "
                     "%s::text[], %b::bytea[], %s::text[], %b::bool[], %s)", (*columns, self.channel_queued))

    def take_queue(self, conn: Any, limit: int) -> list[QueueRow]:
        """The oldest ``limit`` queue rows, in queue order (read in the sequencer's transaction)."""
        rows: list[QueueRow] = conn.execute(
            f"SELECT qid, peer, seq, op, kind, body, pseudonym, sealed, interaction_id, waits FROM {self.schema}.queue "
            "ORDER BY qid LIMIT %s", (limit,)).fetchall()
        return rows

    def progress(self, conn: Any = None) -> dict[bytes, int]:
        """Every peer's last sequenced number."""
        sql = f"SELECT peer, seq FROM {self.schema}.peers"
        rows = conn.execute(sql).fetchall() if conn is not None else self._query(sql)
        return {bytes(peer): int(seq) for peer, seq in rows}

    def forget_peers(self, conn: Any, older_than: float) -> int:
        """Drop the progress of peers silent since ``older_than`` (their queue rows are long gone)."""
        with conn.transaction():
            cursor = conn.execute(
                f"DELETE FROM {self.schema}.peers p WHERE seen < %s AND NOT EXISTS "
                f"(SELECT 1 FROM {self.schema}.queue q WHERE q.peer = p.peer)", (older_than,))
        dropped: int = cursor.rowcount
        return dropped

    def peer_seq(self, peer: bytes) -> int:
        """The last sequenced number of one peer (-1 if none yet)."""
        rows = self._query(f"SELECT seq FROM {self.schema}.peers WHERE peer=%s", (peer,))
        return int(rows[0][0]) if rows else -1

    def entries(self, peer: bytes, start: int, end: int) -> dict[bytes, int]:
        """(entry → index) of the records in ``[start, end)`` that ``peer`` waits on (a range scan)."""
        rows = self._query(f"SELECT entry, idx FROM {self.schema}.records WHERE idx >= %s AND idx < %s "
                           "AND entry IS NOT NULL AND substring(entry from 1 for 8) = %s", (start, end, peer))
        return {bytes(entry): int(idx) for entry, idx in rows}

    def try_lead(self, conn: Any) -> bool:
        """Try to take the sequencer's lock on ``conn`` (a session lock: it ends with the session)."""
        return bool(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._lock_class, LOCK_SEQUENCER)).fetchone()[0])

    def sequencer_pid(self) -> int | None:
        """The PostgreSQL backend pid of the session holding the sequencer's lock, if any."""
        # pg_locks keeps the int4 keys as oids; cast back to int they are the signed keys we took.
        rows = self._query("SELECT pid FROM pg_locks WHERE locktype='advisory' AND classid::int = %s "
                           "AND objid::int = %s AND granted AND database = "
                           "(SELECT oid FROM pg_database WHERE datname = current_database())",
                           (self._lock_class, LOCK_SEQUENCER))
        return int(rows[0][0]) if rows else None

    def indices_of(self, kinds: Sequence[str], start: int, end: int) -> list[int]:
        """The indices of stored records of these kinds in ``[start, end)``, in order."""
        return [row[0] for row in self._query(
            f"SELECT idx FROM {self.schema}.records WHERE idx >= %s AND idx < %s AND kind = ANY(%s) ORDER BY idx",
            (start, end, list(kinds)))]

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock named ``name`` across every process and host using this ledger.

        A PostgreSQL advisory lock, held by a connection of its own for the block; if the holder
        dies, its session ends and the lock with it.
        """
        if not name.isidentifier():
            raise ConfigurationError(f"a lock name must be an identifier, got {name!r}")
        key = _int32(hashlib.sha256(b"lock/" + name.encode()).digest()) | 0x100  # Never 0 or 1.
        conn = self.connect()
        try:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", (self._lock_class, key))
            yield
        finally:
            conn.close()  # Ending the session releases the lock.

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections (never use or close them here)."""
        self._pool = None
        self._pool_lock = threading.Lock()
        self._writer = None

    def replace_keys(self, rows: Sequence[tuple[str, bytes, str]], meta: dict[str, bytes], conn: Any = None) -> None:
        """Rewrite wrapped keys and metadata in one transaction (master key rotation), on ``conn``
        (the sequencer's) if given."""
        if conn is None:
            conn = self._write_conn()
        with conn.transaction():
            conn.cursor().executemany(f"UPDATE {self.schema}.subject_keys SET wrapped=%s, master_id=%s "
                                      "WHERE pseudonym=%s", [(w, m, p) for p, w, m in rows])
            self._upsert_meta(conn, list(meta.items()))

    def prune(self, end: int, frontier: Sequence[bytes], conn: Any = None) -> None:
        """Delete records before ``end``, keeping the compact range of ``[0, end)``."""
        if conn is None:
            conn = self._write_conn()
        with conn.transaction():
            conn.execute(f"DELETE FROM {self.schema}.records WHERE idx < %s", (end,))
            self._upsert_meta(conn, [("pruned", end.to_bytes(8, "big") + _pack(frontier))])

    # -- reading -------------------------------------------------------------------------------

    def get_keys(self, pseudonyms: Sequence[str]) -> dict[str, tuple[bytes, str]]:
        """The wrapped keys that exist among ``pseudonyms``."""
        rows = self._query(f"SELECT pseudonym, wrapped, master_id FROM {self.schema}.subject_keys "
                           "WHERE pseudonym = ANY(%s)", (list(dict.fromkeys(pseudonyms)),))
        return {p: (bytes(w), m) for p, w, m in rows}

    def all_keys(self) -> list[tuple[str, bytes, str]]:
        """Every wrapped subject key."""
        return [(p, bytes(w), m) for p, w, m in self._query(f"SELECT pseudonym, wrapped, master_id FROM {self.schema}.subject_keys")]

    def iter_records(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (index, leaf hash, leaf bytes) for ``start <= index < end`` in order, in pages."""
        at = start
        while at < end:
            rows = self._query(f"SELECT idx, leaf, data FROM {self.schema}.records WHERE idx >= %s AND idx < %s "
                               "ORDER BY idx LIMIT 2048", (at, end))
            if not rows:
                return
            for index, leaf, data in rows:
                yield index, _raw(leaf), _raw(data)
            at = rows[-1][0] + 1

    def get_record(self, index: int) -> tuple[float, str, bytes] | None:
        """(ts, kind, leaf bytes) of one record, or ``None``."""
        rows = self._query(f"SELECT ts, kind, data FROM {self.schema}.records WHERE idx=%s", (index,))
        return (rows[0][0], rows[0][1], bytes(rows[0][2])) if rows else None

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Leaf hashes of ``[start, end)``; raise :class:`LedgerError` if any is missing."""
        rows = self._query(f"SELECT leaf FROM {self.schema}.records WHERE idx >= %s AND idx < %s ORDER BY idx",
                           (start, end))
        if len(rows) != end - start:
            raise LedgerError(f"records {start}..{end - 1} are not all stored (pruned?)")
        return [bytes(r[0]) for r in rows]

    def node_hashes(self, level: int, start: int, end: int) -> list[bytes]:
        """Stored interior hashes at ``level`` for indices ``[start, end)``."""
        rows = self._query(f"SELECT hash FROM {self.schema}.nodes WHERE level=%s AND idx >= %s AND idx < %s "
                           "ORDER BY idx", (level, start, end))
        if len(rows) != end - start:
            raise LedgerError(f"interior hashes at level {level}, {start}..{end - 1} are missing")
        return [bytes(r[0]) for r in rows]

    def ts_at(self, index: int) -> float | None:
        """The sequencing time of record ``index``, or ``None``."""
        rows = self._query(f"SELECT ts FROM {self.schema}.records WHERE idx=%s", (index,))
        return rows[0][0] if rows else None

    def kinds_in(self, start: int, end: int) -> Iterator[tuple[int, float, str]]:
        """Yield (index, ts, kind) for stored records in ``[start, end)``."""
        at = start
        while at < end:
            rows = self._query(f"SELECT idx, ts, kind FROM {self.schema}.records WHERE idx >= %s AND idx < %s "
                               "ORDER BY idx LIMIT 8192", (at, end))
            if not rows:
                return
            yield from rows
            at = rows[-1][0] + 1

    def find_interaction(self, interaction_id: str) -> int | None:
        """The index of the ``interaction`` record with this id, or ``None``."""
        if "\x00" in interaction_id:
            return None  # PostgreSQL text cannot hold NUL, so no stored id has one.
        rows = self._query(f"SELECT idx FROM {self.schema}.interactions WHERE interaction_id=%s", (interaction_id,))
        return int(rows[0][0]) if rows else None

    def checkpoints(self) -> list[tuple[int, float, str]]:
        """The kept history of signed checkpoints, oldest first."""
        return [(int(a), b, c) for a, b, c in self._query(f"SELECT size, ts, note FROM {self.schema}.checkpoints ORDER BY size")]

    # -- cosignatures (the witness client's thread) ----------------------------------------------

    def add_cosignature(self, size: int, witness: str, note: str, line: str) -> None:
        """Keep a witness's cosignature of the checkpoint ``note`` of ``size`` (from any thread)."""
        try:
            with self._reads() as conn:
                conn.execute(
                    f"INSERT INTO {self.schema}.cosignatures VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (size, witness) DO UPDATE SET note = excluded.note, line = excluded.line",
                    (size, witness, note, line))
        except psycopg.Error as exc:
            raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None

    def cosignatures(self, size: int | None = None) -> list[tuple[int, str, str, str]]:
        """Kept cosignatures as (size, witness, note, line): of one checkpoint size, or all, by size."""
        sql = f"SELECT size, witness, note, line FROM {self.schema}.cosignatures"
        rows = (self._query(sql + " ORDER BY size, witness") if size is None
                else self._query(sql + " WHERE size = %s ORDER BY witness", (size,)))
        return [(int(a), b, c, d) for a, b, c, d in rows]

    def add_timestamp(self, size: int, tsa: str, note: str, response: bytes) -> None:
        """Keep a timestamp authority's RFC 3161 ``response`` for the checkpoint ``note`` (any thread)."""
        try:
            with self._reads() as conn:
                conn.execute(
                    f"INSERT INTO {self.schema}.timestamps VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (size, tsa) DO UPDATE SET note = excluded.note, response = excluded.response",
                    (size, tsa, note, bytes(response)))
        except psycopg.Error as exc:
            raise LedgerError(f"the ledger's database failed: {_reason(exc)}") from None

    def timestamps(self, size: int | None = None) -> list[tuple[int, str, str, bytes]]:
        """Kept timestamps as (size, TSA URL, note, DER response): of one checkpoint size, or all."""
        sql = f"SELECT size, tsa, note, response FROM {self.schema}.timestamps"
        rows = (self._query(sql + " ORDER BY size, tsa") if size is None
                else self._query(sql + " WHERE size = %s ORDER BY tsa", (size,)))
        return [(int(a), b, c, bytes(d)) for a, b, c, d in rows]

    def witness_sizes(self) -> dict[str, int]:
        """The largest checkpoint size each witness (by verifier key) has cosigned."""
        from .store import _WITNESS_SIZES

        rows = self._query(_WITNESS_SIZES.format(t=f"{self.schema}.cosignatures"))
        return {witness: int(size) for witness, size in rows}

    def close(self) -> None:
        """Close every connection; idempotent."""
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def sequenced_payload(size: int, progress: Sequence[tuple[bytes, int, float]],
                      entries: dict[int, bytes] | None = None) -> str:
    """The sequencer's notification: the new size, each peer's last sequenced number, and where
    the records someone waits on went, so that no peer has to ask.

    ``"1234;0a1b2c3d4e5f6071:17:15@1230,17@1233;…"`` (peer, last number, then number@index of
    each waited-on record). When that would not fit a notification (8,000 bytes), the indices are
    left out (``:?``), and if even that does not fit, the peers too (``";*"``): listeners then
    read the tables.
    """
    placed: dict[bytes, list[str]] = {}
    for index, entry in (entries or {}).items():
        placed.setdefault(entry[:8], []).append(f"{int.from_bytes(entry[8:], 'big')}@{index}")
    text = str(size) + "".join(f";{peer.hex()}:{seq}:{','.join(placed.get(peer, ()))}" for peer, seq, _ in progress)
    if len(text) < 7900:
        return text
    text = str(size) + "".join(f";{peer.hex()}:{seq}:?" for peer, seq, _ in progress)
    return text if len(text) < 7900 else f"{size};*"


def parse_sequenced(payload: str) -> tuple[int, dict[bytes, tuple[int, dict[int, int] | None]] | None]:
    """The size and, per peer, (last sequenced number, {number: index} or ``None``: ask) of a
    notification; ``None`` for the peers: read the tables."""
    size_text, _, rest = payload.partition(";")
    size = int(size_text) if size_text.isdigit() else -1
    if rest == "*":
        return size, None
    progress: dict[bytes, tuple[int, dict[int, int] | None]] = {}
    for part in rest.split(";") if rest else ():
        peer, _, tail = part.partition(":")
        seq, _, placed = tail.partition(":")
        try:
            where = None if placed == "?" else {
                int(a): int(b) for a, b in (pair.split("@") for pair in placed.split(",") if pair)}
            progress[bytes.fromhex(peer)] = (int(seq), where)
        except ValueError:
            continue
    return size, progress


def _raw(value: Any) -> Any:
    """bytea arrives as bytes; anything else (an edited column type) is passed on for verify to refuse."""
    return bytes(value) if isinstance(value, memoryview) else value


def _reason(exc: BaseException) -> str:
    """One line about a database error, without the connection string."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
