"""Ledger records sent to an OpenTelemetry collector as log records, over OTLP/HTTP.

The ledger stays the system of record. :class:`LedgerExporter` is a *follower* that sends a copy of
every record, as an OpenTelemetry log record, to the collector the provider already runs, so the
evidence also reaches its usual log pipeline:

- **It never blocks the request path.** A background thread reads records from the ledger's store,
  from a durable *cursor* (the next index to export), and calls the OTLP/HTTP log exporter of
  ``opentelemetry-exporter-otlp-proto-http`` itself, in batches. Appending never waits for it.
- **It never loses a record.** The cursor advances, durably, only once the collector acknowledged
  a batch; while the collector is down or refuses, the records wait in the ledger and the exporter
  retries with a bounded backoff (0.5 s, doubling, at most 30 s); after a restart it resumes from
  the cursor. Delivery is **at least once**: a crash between the collector's acknowledgement and
  the cursor's save sends that batch again, so every log record carries its ledger index
  (``aiobligations.index``) and a collector or backend can drop duplicates by ``(origin, index)``.
- **Personal data stays sealed.** The log body is the record's exact stored bytes, its Merkle
  leaf, which holds only the subject's pseudonym and the AES-GCM ``sealed`` ciphertext. Nothing is
  decrypted (:meth:`aiobligations.ledger.Ledger.read` is never called).
- **One exporter per ledger.** Every process of a service may run one; only the one holding an
  exclusive lock exports, and another takes over within a few seconds when it dies: an ``flock``
  on ``<ledger file>.otlp.lock`` for a SQLite ledger (cursor in ``<ledger file>.otlp-cursor``), a
  PostgreSQL session-level advisory lock for a PostgreSQL ledger (cursor in the ledger's ``meta``
  table, key ``otlp_cursor``).

Each log record has severity INFO, the record's sequencing time (``ts``) as its timestamp, the
record's stored JSON as its body (a string) and these attributes: ``aiobligations.index``,
``aiobligations.kind``, ``aiobligations.origin``, ``aiobligations.leaf_sha256`` (the RFC 9162 leaf
hash, hex) and, when the record has them, ``aiobligations.interaction_id`` and
``aiobligations.trace_id`` (a well-formed W3C trace and span id also become the log record's
trace context). The resource carries ``service.name``.

Needs ``pip install 'aiobligations[otlp]'``; the OpenTelemetry packages are imported only when an
exporter is made.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import os
import re
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import structlog

from ..errors import (
    ConfigurationError,
    LedgerError,
    LedgerLocked,
    ObligationError,
    UnusableInput,
)
from . import _flock

__all__ = [
    "CURSOR_META_KEY",
    "INSTALL_HINT",
    "PG_LOCK_KEY",
    "ExportFailed",
    "LedgerExporter",
    "OTLPSettings",
    "exporter_from_profile",
    "open_exporter",
    "redact_endpoint",
]

log = structlog.get_logger("aiobligations.ledger")

INSTALL_HINT = "pip install 'aiobligations[otlp]'"
"""What to install for the exporter (opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http)."""

CURSOR_META_KEY = "otlp_cursor"
"""The ``meta`` key of a PostgreSQL ledger's cursor (its value: the next index, in decimal)."""

PG_LOCK_KEY = 7
"""The second key of the PostgreSQL advisory lock the exporting session holds (the first is the
ledger's lock class, derived from its schema)."""

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_MAX_BATCH = 10_000
_CURSOR_LIMIT = 4096
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_EXPORTERS: weakref.WeakSet[LedgerExporter] = weakref.WeakSet()


class ExportFailed(LedgerError):
    """The collector did not acknowledge a batch (down, refusing, or too slow).

    Nothing is lost: the cursor stays before the batch, which is sent again on the next pass.

    Attributes:
        exported: How many records the pass had exported (and acknowledged) before the failure.
    """

    def __init__(self, message: str, *, exported: int = 0) -> None:
        super().__init__(message)
        self.exported = exported


class _LockLost(Exception):
    """The exporter's lock went away with its PostgreSQL session: stop and campaign again."""


# -- the OpenTelemetry packages, imported when first needed ---------------------------------------


_OTEL: SimpleNamespace | None = None


def _otel() -> SimpleNamespace:
    """The OpenTelemetry classes the exporter uses (imported once, on first use).

    Raises:
        ConfigurationError: the ``otlp`` extra is not installed.
    """
    global _OTEL
    if _OTEL is not None:
        return _OTEL
    try:
        from opentelemetry import trace
        from opentelemetry._logs import SeverityNumber
        from opentelemetry.context.context import Context
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError as exc:
        raise ConfigurationError(
            f"the OTLP exporter needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http "
            f"({exc.name or 'a module'} is missing): {INSTALL_HINT}"
        ) from None
    readable_log_record: type | None = None
    api_log_record: type | None = None
    try:  # SDK 1.39 and later: the exporter takes ReadableLogRecord (an API LogRecord and a resource).
        from opentelemetry._logs import LogRecord as APILogRecord
        from opentelemetry.sdk._logs import ReadableLogRecord

        readable_log_record, api_log_record = ReadableLogRecord, APILogRecord
    except ImportError:
        pass
    namespace = SimpleNamespace(
        trace=trace, SeverityNumber=SeverityNumber, Context=Context, OTLPLogExporter=OTLPLogExporter,
        Resource=Resource, InstrumentationScope=InstrumentationScope, ReadableLogRecord=readable_log_record,
        APILogRecord=api_log_record, LogData=None, SDKLogRecord=None, sdk_context=False,
    )
    if readable_log_record is None:  # pragma: no cover - older SDKs (before 1.39) take LogData.
        # Names the installed SDK's stubs no longer have (they left in 1.39).
        from opentelemetry.sdk._logs import LogData  # type: ignore[attr-defined]
        from opentelemetry.sdk._logs import LogRecord as SDKLogRecord  # type: ignore[attr-defined]

        namespace.LogData = LogData
        namespace.SDKLogRecord = SDKLogRecord
        # From 1.35 the trace ids are given as a context (the ids still work, with a warning).
        namespace.sdk_context = "context" in inspect.signature(SDKLogRecord.__init__).parameters
    _OTEL = namespace
    return namespace


def redact_endpoint(endpoint: str) -> str:
    """``endpoint`` without user info, query or fragment (they may hold credentials), for messages and logs."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
    except ValueError:
        return "<endpoint>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_endpoint(endpoint: object) -> str | None:
    """What is wrong with ``endpoint`` as an OTLP/HTTP URL, or ``None``."""
    if not isinstance(endpoint, str) or not endpoint:
        return "must be a URL such as http://collector:4318/v1/logs"
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port.
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return f"must be an http:// or https:// URL, got scheme {parts.scheme!r}" if parts.scheme else \
            "must be an http:// or https:// URL such as http://collector:4318/v1/logs"
    if not parts.hostname:
        return "has no host"
    if any(c in endpoint for c in "\r\n\x00 "):
        return "must not contain spaces or control characters"
    return None


def _check_headers(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            return f"header name {name!r} is not a valid HTTP header name"
        if not isinstance(value, str):
            return f"header {name} must be a string"
        if any(c in value for c in "\r\n\x00"):
            return f"header {name} must not contain line breaks or NUL"
    return None


def _ts_ns(text: Any) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 time (exactly, to the microsecond), or ``None``."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _describe(exc: BaseException) -> str:
    """One line about an error, safe for the log: our own messages, else only the type's name."""
    if isinstance(exc, (ObligationError, OSError)):
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return type(exc).__name__


# -- where the cursor lives and who holds the lock ---------------------------------------------------


class _FileGuard:
    """A SQLite ledger's exporter lock (an ``flock``) and cursor (a small JSON file), beside it."""

    def __init__(self, ledger_path: Path, origin: str) -> None:
        self.lock_path = ledger_path.with_name(ledger_path.name + ".otlp.lock")
        self.cursor_path = ledger_path.with_name(ledger_path.name + ".otlp-cursor")
        self._origin = origin
        self._fd: int | None = None
        self._cursor: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        _flock.track(fd)  # A child forked from this process must not keep the lock held.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()}\n".encode(), 0)
        self._fd = fd
        self._cursor = None
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        self._cursor = None
        if fd is not None:
            _flock.untrack(fd)
            os.close(fd)  # Releases the lock.

    def forget(self) -> None:
        """In a forked child: the descriptor was closed by the fork hook of ``_flock``; never touch it."""
        self._fd = None
        self._cursor = None

    def peek(self) -> int:
        try:
            fd = os.open(self.cursor_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise UnusableInput(f"{self.cursor_path}: cannot read the OTLP exporter's cursor ({exc.strerror})") from None
        try:
            data = os.read(fd, _CURSOR_LIMIT + 1)
        finally:
            os.close(fd)
        try:
            value = json.loads(data) if len(data) <= _CURSOR_LIMIT else None
        except ValueError:
            value = None
        following = value.get("next") if isinstance(value, dict) else None
        if (not isinstance(value, dict) or isinstance(following, bool) or not isinstance(following, int)
                or following < 0):
            raise UnusableInput(
                f"{self.cursor_path}: not an OTLP exporter cursor; fix it, or delete it to send every record again")
        origin = value.get("origin")
        if origin is not None and origin != self._origin:
            raise UnusableInput(
                f"{self.cursor_path}: the cursor belongs to the ledger {origin!r}, not {self._origin!r}; "
                "delete it to send every record of this one")
        return following

    def load(self) -> int:
        if self._cursor is None:
            self._cursor = self.peek()
        return self._cursor

    def save(self, following: int) -> None:
        """Write the cursor atomically and durably: a temporary file, fsync, rename, fsync the folder."""
        data = json.dumps({"next": following, "origin": self._origin, "saved": round(time.time(), 3)}).encode()
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.cursor_path)
        folder = os.open(self.cursor_path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self._cursor = following


class _PostgresGuard:
    """A PostgreSQL ledger's exporter lock (an advisory lock held by a session of its own) and cursor
    (a ``meta`` row written through that same session)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._conn: Any = None  # The session holding the lock.
        self._spare: Any = None  # A standby's session, kept for its next try.

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> bool:
        conn, self._spare = self._spare, None
        if conn is None or conn.closed:
            conn = self._store.connect()
        try:
            got = bool(conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                    (self._store._lock_class, PG_LOCK_KEY)).fetchone()[0])
        except BaseException:
            conn.close()
            raise
        if not got:
            self._spare = conn
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        for conn in (self._conn, self._spare):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()  # Ending the session releases the lock.
        self._conn = self._spare = None

    def forget(self) -> None:
        """In a forked child: drop the parent's sessions without closing them (that would end the parent's)."""
        self._conn = self._spare = None

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        try:
            return self._conn.execute(sql, params)
        except Exception as exc:  # noqa: BLE001 - any failure of the session ends the lease.
            # The session (and with it the lock) may be gone: campaign again, never export unlocked.
            self.release()
            raise _LockLost(_describe(exc)) from None

    @staticmethod
    def _parse(value: Any) -> int:
        text = bytes(value).decode("ascii", "replace")
        if not text.isdigit():
            raise UnusableInput(f"the ledger's meta row {CURSOR_META_KEY!r} is not a decimal index; "
                                "fix it, or delete it to send every record again")
        return int(text)

    def peek(self) -> int:
        value = self._store.get_meta(CURSOR_META_KEY)
        return 0 if value is None else self._parse(value)

    def load(self) -> int:
        # Read through the lock's own session each time: it also proves the session, and so the lock, alive.
        row = self._run(f"SELECT value FROM {self._store.schema}.meta WHERE key = %s", (CURSOR_META_KEY,)).fetchone()
        return 0 if row is None else self._parse(row[0])

    def save(self, following: int) -> None:
        self._run(f"INSERT INTO {self._store.schema}.meta VALUES (%s, %s) "
                  "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                  (CURSOR_META_KEY, str(following).encode()))


def _guard_for(store: Any, origin: str) -> _FileGuard | _PostgresGuard:
    from .store import SQLiteStore

    if isinstance(store, SQLiteStore):
        return _FileGuard(Path(store.path), origin)
    from .postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return _PostgresGuard(store)
    raise ConfigurationError(
        f"the OTLP exporter follows SQLite and PostgreSQL ledgers, not a {type(store).__name__}")


# -- the exporter ---------------------------------------------------------------------------------------


class LedgerExporter:
    """Send every record of a ledger to an OpenTelemetry collector as a log record (OTLP/HTTP).

    A follower: :meth:`start` runs a background thread that exports records from a durable cursor
    in batches and advances the cursor only once the collector acknowledged them; see the module's
    documentation for the guarantees (at least once, never blocking, sealed personal data, one
    exporter per ledger).

    Example:
        >>> exporter = LedgerExporter(ledger, "http://collector:4318/v1/logs",
        ...                           service_name="Example Assistant")  # doctest: +SKIP
        >>> exporter.start()  # doctest: +SKIP
        >>> exporter.close(timeout=5.0)  # doctest: +SKIP

    Args:
        ledger: The ledger to follow (a :class:`aiobligations.ledger.Ledger` on a SQLite or
            PostgreSQL store). Its records are read from its store, never decrypted.
        endpoint: The collector's OTLP/HTTP logs URL, ``http(s)://host:4318/v1/logs``.
        headers: HTTP headers for every request (an API key, for example). Never logged.
        timeout: Seconds one export request may take, the exporter's own retries included.
        batch_size: The most records in one request (halved after a failure, down to one, and
            restored once batches are acknowledged again).
        poll_interval: Seconds between looks at the ledger when everything has been exported.
        service_name: The resource's ``service.name`` (default: OpenTelemetry's own).
        lock_interval: Seconds between attempts to take the exporter's lock while another
            process holds it.

    Raises:
        ConfigurationError: an argument is invalid, the ledger's store is of another kind, or the
            OpenTelemetry packages are not installed (``pip install 'aiobligations[otlp]'``).

    .. versionadded:: 0.3.0
    """

    def __init__(self, ledger: Any, endpoint: str, *, headers: Mapping[str, str] | None = None,
                 timeout: float = 10.0, batch_size: int = 512, poll_interval: float = 1.0,
                 service_name: str | None = None, lock_interval: float = 5.0) -> None:
        problem = _check_endpoint(endpoint)
        if problem:
            raise ConfigurationError(f"the OTLP endpoint {problem}")
        headers = dict(headers or {})
        problem = _check_headers(headers)
        if problem:
            raise ConfigurationError(f"the OTLP {problem}")
        for name, value, low, high in (("timeout", timeout, 0.0, 300.0), ("poll_interval", poll_interval, 0.0, 3600.0),
                                       ("lock_interval", lock_interval, 0.0, 3600.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ConfigurationError(f"{name} must be a number of seconds above {low:g} and at most {high:g}, "
                                         f"got {value!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= _MAX_BATCH:
            raise ConfigurationError(f"batch_size must be a whole number from 1 to {_MAX_BATCH}, got {batch_size!r}")
        if service_name is not None and not isinstance(service_name, str):
            raise ConfigurationError(f"service_name must be a string, got {type(service_name).__name__}")
        otel = _otel()
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.batch_size = batch_size
        self.poll_interval = float(poll_interval)
        self.lock_interval = float(lock_interval)
        self.origin: str = ledger.origin
        self._headers = headers
        self._store = ledger._store
        self._guard = _guard_for(self._store, self.origin)
        self._owned: Any = None  # A store this exporter opened itself (open_exporter), closed with it.
        self._resource = otel.Resource.create({"service.name": service_name} if service_name else {})
        from .. import __version__

        self._scope = otel.InstrumentationScope("aiobligations.ledger", __version__)
        self._no_span = otel.trace.set_span_in_context(otel.trace.INVALID_SPAN, otel.Context())
        self._client: Any = None
        self._exported = 0
        self._failures = 0
        self._ahead_warned = False
        self._reset_threading()
        _EXPORTERS.add(self)

    def _reset_threading(self) -> None:
        self._pass_lock = threading.Lock()  # One pass at a time; guards the lock and the client.
        self._state_lock = threading.Lock()
        self._wake = threading.Event()  # Set by close(): stop idling or backing off.
        self._abort = threading.Event()  # Set when close() gives up: stop at once.
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"LedgerExporter({redact_endpoint(self.endpoint)!r}, origin={self.origin!r}, exported={self._exported})"

    # -- state -------------------------------------------------------------------------------------

    @property
    def cursor(self) -> int:
        """The next index to export, as durably stored now (0 before anything was exported).

        Raises:
            UnusableInput: the stored cursor is damaged or belongs to another ledger.
        """
        return self._guard.peek()  # Written atomically (rename, or one row): no lock needed to read it.

    @property
    def exported(self) -> int:
        """How many records this exporter has sent and seen acknowledged."""
        return self._exported

    @property
    def failures(self) -> int:
        """Failed attempts in a row by the background thread (0 once a batch is acknowledged again)."""
        return self._failures

    @property
    def holding(self) -> bool:
        """Whether this exporter holds the ledger's exporter lock (it is the one exporting)."""
        return self._guard.held

    # -- running -----------------------------------------------------------------------------------

    def start(self) -> LedgerExporter:
        """Start the background thread (once; later calls do nothing) and return the exporter.

        Raises:
            LedgerError: the exporter was closed.
        """
        with self._state_lock:
            if self._closed:
                raise LedgerError("the OTLP exporter is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aiobligations-otlp", daemon=True)
                self._thread.start()
                log.info("otlp_exporter_started", endpoint=redact_endpoint(self.endpoint), origin=self.origin,
                         batch_size=self.batch_size)
        return self

    def export_pending(self) -> int:
        """Export every record durably stored now, in batches, and return how many were sent.

        One synchronous pass (the CLI's, and tests'). It takes the exporter's lock for the pass
        unless this exporter already holds it.

        Raises:
            LedgerLocked: another exporter (another process) holds the lock.
            ExportFailed: the collector did not acknowledge a batch; ``exported`` says how many
                records were acknowledged before. The cursor stays before the failed batch.
            UnusableInput: the stored cursor is damaged or belongs to another ledger.
            LedgerError: the ledger's store cannot be read, or the exporter is closed.
        """
        if self._closed:
            raise LedgerError("the OTLP exporter is closed")
        total = 0
        with self._pass_lock:
            taken = False
            if not self._guard.held:
                if not self._guard.acquire():
                    raise LedgerLocked(
                        f"another process exports this ledger's records to OpenTelemetry (it holds the "
                        f"exporter's lock{self._lock_where()})")
                taken = True
            try:
                until = self._store.tree_head()[0]
                while True:
                    try:
                        count = self._export_batch(self.batch_size, until)
                    except ExportFailed as exc:
                        exc.exported = total
                        raise
                    except _LockLost as exc:
                        raise LedgerError(f"lost the exporter's lock: {exc}") from None
                    if not count:
                        return total
                    total += count
            finally:
                if taken and (self._thread is None or not self._thread.is_alive()):
                    self._guard.release()

    def close(self, timeout: float = 5.0) -> None:
        """Export what can be exported within ``timeout`` seconds, then stop and release the lock.

        Idempotent. Records not exported by then stay in the ledger, behind the durable cursor,
        for the next exporter. An export request still in flight when the time is up finishes in
        the background (within the exporter's ``timeout``) and still saves the cursor.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._deadline = time.monotonic() + max(0.0, timeout)
            self._wake.set()
            thread.join(max(0.0, timeout))
            if thread.is_alive():
                self._abort.set()
                client, self._client = self._client, None
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.shutdown()  # Cuts the SDK's own retry waits short.
                thread.join(min(1.0, self.timeout))
                if thread.is_alive():
                    log.warning("otlp_exporter_close_timeout", timeout_s=timeout,
                                reason="an export request is still in flight; it finishes in the background")
        else:
            with self._pass_lock:
                self._guard.release()
                self._shutdown_client()
        if self._owned is not None and (thread is None or not thread.is_alive()):
            self._owned.close()
        log.info("otlp_exporter_stopped", exported=self._exported, origin=self.origin)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        batch = self.batch_size
        standby_noted = False
        lock_error: str | None = None
        try:
            while not self._abort.is_set():
                closing = self._wake.is_set()
                if closing and time.monotonic() >= self._deadline:
                    break
                with self._pass_lock:
                    holding = self._guard.held
                    if not holding:
                        try:
                            holding = self._guard.acquire()
                            lock_error = None
                        except Exception as exc:  # noqa: BLE001 - logged; tried again later.
                            if _describe(exc) != lock_error:
                                lock_error = _describe(exc)
                                log.warning("otlp_lock_unavailable", error=lock_error, retry_in_s=self.lock_interval)
                        if holding:
                            standby_noted = False
                            log.info("otlp_exporter_leading", origin=self.origin, pid=os.getpid())
                if not holding:
                    if closing:
                        break
                    if not standby_noted and lock_error is None:
                        standby_noted = True
                        log.info("otlp_exporter_standby", origin=self.origin,
                                 reason=f"another process holds the exporter's lock{self._lock_where()}")
                    self._wake.wait(self.lock_interval)
                    continue
                try:
                    with self._pass_lock:
                        count = self._export_batch(batch)
                except _LockLost as exc:
                    log.warning("otlp_lock_lost", error=str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - logged; retried with backoff, nothing lost.
                    failures += 1
                    self._failures = failures
                    batch = max(1, batch // 2)
                    delay = min(_BACKOFF_FIRST * 2 ** min(failures - 1, 16), _BACKOFF_MAX)
                    log.warning("otlp_export_failed", error=_describe(exc), failures=failures, retry_in_s=delay,
                                next_batch=batch)
                    if closing:
                        remaining = self._deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._abort.wait(min(delay, remaining))
                    else:
                        self._wake.wait(delay)
                    continue
                if failures:
                    log.info("otlp_export_recovered", after_failures=failures)
                    failures = self._failures = 0
                if count:
                    batch = min(self.batch_size, batch * 2)
                    continue
                if closing:
                    break
                self._wake.wait(self.poll_interval)
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - a bug; must not die silently.
            log.error("otlp_exporter_crashed", error=_describe(exc))
        finally:
            with self._pass_lock:
                self._guard.release()
                self._shutdown_client()
            if self._owned is not None and self._closed:
                self._owned.close()

    def _lock_where(self) -> str:
        if isinstance(self._guard, _FileGuard):
            try:
                holder = self._guard.lock_path.read_text().strip()
            except (OSError, UnicodeDecodeError):
                holder = ""
            return f", {holder}" if holder.startswith("process ") else ""
        return ""

    # -- one batch -----------------------------------------------------------------------------------

    def _first_index(self) -> int:
        pruned = self._store.get_meta("pruned")
        return int.from_bytes(pruned[:8], "big") if pruned else 0

    def _export_batch(self, limit: int, until: int | None = None) -> int:
        """Export the next batch of at most ``limit`` durable records; return how many (0: none pending).

        Called with ``_pass_lock`` held and the exporter's lock taken.
        """
        size = self._store.tree_head()[0]
        cursor = self._guard.load()
        first = self._first_index()
        if cursor < first:
            log.warning("otlp_records_skipped", skipped=first - cursor, first=first, origin=self.origin,
                        reason="pruned from the ledger before they were exported")
            self._guard.save(first)
            cursor = first
        if cursor > size:
            if not self._ahead_warned:
                self._ahead_warned = True
                log.error("otlp_cursor_ahead", cursor=cursor, size=size, origin=self.origin,
                          reason="the cursor is past the ledger's end: was the ledger replaced? "
                                 "Delete the cursor to send every record again")
            return 0
        end = min(size if until is None else min(size, until), cursor + limit)
        if end <= cursor:
            return 0
        rows = list(self._store.iter_records(cursor, end))
        if not rows:
            if not self._ahead_warned and self._first_index() <= cursor:
                self._ahead_warned = True  # Once: the thread polls again and again.
                log.error("otlp_records_missing", start=cursor, end=end, origin=self.origin,
                          reason="the ledger says they are stored but they are not: run `aiobligations verify`")
            return 0
        self._ahead_warned = False
        if rows[0][0] != cursor:
            log.warning("otlp_records_skipped", skipped=rows[0][0] - cursor, first=rows[0][0], origin=self.origin,
                        reason="pruned from the ledger before they were exported")
        records = [self._log_record(index, leaf, data) for index, leaf, data in rows]
        result = self._ensure_client().export(records)
        if getattr(result, "name", None) != "SUCCESS":
            raise ExportFailed(f"the collector at {redact_endpoint(self.endpoint)} did not acknowledge records "
                               f"{rows[0][0]}..{rows[-1][0]}")
        self._exported += len(rows)  # Acknowledged, whether or not the cursor's save below succeeds.
        self._guard.save(rows[-1][0] + 1)
        return len(rows)

    def _ensure_client(self) -> Any:
        if self._client is None:
            otel = _otel()
            self._client = otel.OTLPLogExporter(endpoint=self.endpoint, headers=self._headers or None,
                                                timeout=self.timeout)
        return self._client

    def _shutdown_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def _log_record(self, index: int, leaf: bytes, data: bytes) -> Any:
        """The OpenTelemetry log record of one stored record (its bytes untouched, nothing decrypted)."""
        otel = _otel()
        attributes: dict[str, Any] = {
            "aiobligations.index": int(index),
            "aiobligations.origin": self.origin,
            "aiobligations.leaf_sha256": bytes(leaf).hex(),
        }
        body: Any
        fields: Any = None
        try:
            body = bytes(data).decode("utf-8")
            fields = json.loads(body)
        except UnicodeDecodeError:
            body = bytes(data)  # Not text (a damaged store): sent as bytes, still exactly the leaf.
        except ValueError:
            pass
        timestamp = None
        context = self._no_span
        trace_id = span_id = 0
        if isinstance(fields, dict):
            kind = fields.get("kind")
            if isinstance(kind, str):
                attributes["aiobligations.kind"] = kind
            for key in ("interaction_id", "trace_id"):
                value = fields.get(key)
                if isinstance(value, str) and value:
                    attributes[f"aiobligations.{key}"] = value
            timestamp = _ts_ns(fields.get("ts"))
            trace, span = fields.get("trace_id"), fields.get("span_id")
            if isinstance(trace, str) and isinstance(span, str) and _TRACE_ID.match(trace) and _SPAN_ID.match(span):
                trace_id, span_id = int(trace, 16), int(span, 16)
                if trace_id and span_id:
                    context = otel.trace.set_span_in_context(otel.trace.NonRecordingSpan(otel.trace.SpanContext(
                        trace_id, span_id, is_remote=True)), otel.Context())
                else:
                    trace_id = span_id = 0
        if otel.ReadableLogRecord is not None:
            record = otel.APILogRecord(timestamp=timestamp, context=context, severity_text="INFO",
                                       severity_number=otel.SeverityNumber.INFO, body=body, attributes=attributes)
            return otel.ReadableLogRecord(log_record=record, resource=self._resource,
                                          instrumentation_scope=self._scope)
        # pragma: no cover - older SDKs (tested by hand with 1.25 and 1.36).
        trace_context: dict[str, Any] = {"context": context} if otel.sdk_context else {
            "trace_id": trace_id, "span_id": span_id, "trace_flags": otel.trace.TraceFlags(0)}
        record = otel.SDKLogRecord(timestamp=timestamp, severity_text="INFO", severity_number=otel.SeverityNumber.INFO,
                                   body=body, resource=self._resource, attributes=attributes, **trace_context)
        return otel.LogData(log_record=record, instrumentation_scope=self._scope)

    def _forget_after_fork(self) -> None:
        """In a forked child: the parent's thread, lock and connections are the parent's; start afresh."""
        closed = self._closed
        self._guard.forget()
        self._client = None  # Its HTTP connections are shared with the parent.
        self._reset_threading()
        self._closed = closed


def _after_fork_in_child() -> None:
    for exporter in list(_EXPORTERS):
        exporter._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the profile's [otlp] table ------------------------------------------------------------------------


_KNOWN_KEYS = ("batch_size", "endpoint", "headers", "timeout")


@dataclass(frozen=True)
class OTLPSettings:
    """The profile's ``[otlp]`` table: where and how to export the ledger's records.

    Example (``aiobligations.toml``)::

        [otlp]
        endpoint = "http://collector:4318/v1/logs"
        headers = { "x-api-key" = "env:OTLP_API_KEY" }
        timeout = 10
        batch_size = 512

    Attributes:
        endpoint: The collector's OTLP/HTTP logs URL (http or https).
        headers: HTTP headers, with ``env:NAME`` values already read from the environment (never
            shown by ``repr``).
        timeout: Seconds one export request may take.
        batch_size: The most records in one request.
    """

    endpoint: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float = 10.0
    batch_size: int = 512

    @classmethod
    def parse(cls, table: Any, *, source: str = "profile", environ: Mapping[str, str] | None = None) -> OTLPSettings:
        """Validate an ``[otlp]`` table.

        Args:
            table: The parsed TOML table.
            source: The file it came from, for messages.
            environ: Where ``env:NAME`` values are read (default ``os.environ``).

        Raises:
            ConfigurationError: one message naming every problem found.
        """
        environ = os.environ if environ is None else environ
        errors: list[str] = []
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [otlp] must be a table")
        unknown = sorted(str(key) for key in table if key not in _KNOWN_KEYS)
        if unknown:
            errors.append(f"[otlp] has unknown keys {', '.join(unknown)} (known: {', '.join(_KNOWN_KEYS)})")
        endpoint = table.get("endpoint")
        if endpoint is None or endpoint == "":
            errors.append("[otlp] endpoint is missing (the collector's logs URL, e.g. http://collector:4318/v1/logs)")
            endpoint = ""
        else:
            if isinstance(endpoint, str) and endpoint.startswith("env:"):
                name = endpoint[4:]
                endpoint = environ.get(name, "") if name.isidentifier() else ""
                if not endpoint:
                    errors.append(f"[otlp] endpoint names the environment variable {name}, which is not set")
            problem = _check_endpoint(endpoint) if endpoint else None
            if problem:
                errors.append(f"[otlp] endpoint {problem}")
        headers: dict[str, str] = {}
        raw_headers = table.get("headers", {})
        if not isinstance(raw_headers, Mapping):
            errors.append("[otlp] headers must be a table of header names and values")
            raw_headers = {}
        for name, value in raw_headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                errors.append(f"[otlp] headers: {name!r} is not a valid HTTP header name")
                continue
            if not isinstance(value, str):
                errors.append(f"[otlp] headers.{name} must be a string (or env:NAME), got {type(value).__name__}")
                continue
            if value.startswith("env:"):
                variable = value[4:]
                if not variable.isidentifier():
                    errors.append(f"[otlp] headers.{name} = 'env:NAME' needs a variable name")
                    continue
                if variable not in environ:
                    errors.append(f"[otlp] headers.{name} names the environment variable {variable}, which is not set")
                    continue
                value = environ[variable]
            if any(c in value for c in "\r\n\x00"):
                errors.append(f"[otlp] headers.{name} must not contain line breaks or NUL")  # Never the value.
                continue
            headers[name] = value
        timeout = table.get("timeout", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
            errors.append(f"[otlp] timeout must be a number of seconds above 0 and at most 300, got {timeout!r}")
            timeout = 10.0
        batch_size = table.get("batch_size", 512)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= _MAX_BATCH:
            errors.append(f"[otlp] batch_size must be a whole number from 1 to {_MAX_BATCH}, got {batch_size!r}")
            batch_size = 512
        if errors:
            raise ConfigurationError(f"{source}: " + "; ".join(errors))
        return cls(endpoint=endpoint, headers=headers, timeout=float(timeout), batch_size=batch_size)

    @classmethod
    def from_profile(cls, profile: Any) -> OTLPSettings | None:
        """The profile's ``[otlp]`` settings, or ``None`` when it has no such table.

        Also checks that the OpenTelemetry packages are installed, so that a profile asking for an
        exporter fails at start-up rather than later.

        Raises:
            ConfigurationError: the table is invalid, or ``pip install 'aiobligations[otlp]'`` is needed.
        """
        table = profile.raw.get("otlp")
        if table is None:
            return None
        settings = cls.parse(table, source=str(profile.path) if profile.path is not None else "profile")
        _otel()
        return settings

    def exporter(self, ledger: Any, *, service_name: str | None = None, **options: Any) -> LedgerExporter:
        """A (not yet started) :class:`LedgerExporter` of ``ledger`` with these settings."""
        return LedgerExporter(ledger, self.endpoint, headers=self.headers, timeout=self.timeout,
                              batch_size=self.batch_size, service_name=service_name, **options)


def exporter_from_profile(obligations_or_profile: Any, ledger: Any = None) -> LedgerExporter | None:
    """The exporter the profile's ``[otlp]`` table asks for (not started), or ``None`` without one.

    Args:
        obligations_or_profile: A :class:`aiobligations.Profile`, or an
            :class:`aiobligations.Obligations` (its profile, and its ledger unless ``ledger`` is given).
        ledger: The ledger to follow.

    Raises:
        ConfigurationError: the ``[otlp]`` table is invalid or the OpenTelemetry packages are missing.
    """
    profile = getattr(obligations_or_profile, "profile", obligations_or_profile)
    if ledger is None:
        ledger = getattr(obligations_or_profile, "ledger", None)
        if ledger is None:
            raise ConfigurationError("exporter_from_profile needs the ledger to follow")
    settings = OTLPSettings.from_profile(profile)
    if settings is None:
        return None
    return settings.exporter(ledger, service_name=profile.service.name or None)


class _StoreView:
    """What an exporter needs of a ledger (its store and origin), for a store opened without a writer."""

    def __init__(self, store: Any, origin: str) -> None:
        self._store = store
        self.origin = origin


def open_exporter(profile: Any, *, endpoint: str | None = None, **options: Any) -> LedgerExporter:
    """An exporter of the profile's ledger that reads its store directly, without joining its writer.

    For tools run beside the service (``aiobligations export-otlp``): a SQLite ledger is opened
    read-only, a PostgreSQL one without migrating. The exporter closes the store when it closes.

    Args:
        profile: The provider's profile.
        endpoint: The collector's URL (default: the profile's ``[otlp] endpoint``). The profile's
            ``[otlp] headers`` are sent only to the profile's own endpoint.
        options: More :class:`LedgerExporter` arguments.

    Raises:
        ConfigurationError: no endpoint, or an invalid ``[otlp]`` table.
        UnusableInput: the ledger does not exist or cannot be opened.
    """
    settings = OTLPSettings.from_profile(profile)
    if endpoint is None:
        if settings is None:
            raise ConfigurationError("no collector to export to: give --endpoint, or an [otlp] endpoint in the profile")
        endpoint = settings.endpoint
    problem = _check_endpoint(endpoint)
    if problem:
        raise ConfigurationError(f"the OTLP endpoint {problem}")
    if settings is not None:
        if endpoint == settings.endpoint:
            options.setdefault("headers", settings.headers)
        options.setdefault("timeout", settings.timeout)
        options.setdefault("batch_size", settings.batch_size)
    options.setdefault("service_name", profile.service.name or None)
    _otel()
    ledger_settings = profile.ledger
    store: Any
    if ledger_settings.url is not None:
        from .postgres import PostgresStore

        store = PostgresStore(ledger_settings.url, schema=ledger_settings.schema, migrate=False)
    else:
        from .store import SQLiteStore

        store = SQLiteStore(ledger_settings.path, create=False, readonly=True)
    try:
        store.open()
        origin = store.get_meta("origin")
        exporter = LedgerExporter(_StoreView(store, origin.decode() if origin else ledger_settings.origin),
                                  endpoint, **options)
    except BaseException:
        store.close()
        raise
    exporter._owned = store
    return exporter
