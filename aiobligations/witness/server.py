"""A C2SP tlog-witness: an ASGI app that cosigns checkpoints consistent with what it saw before.

``POST /add-checkpoint`` takes an ``old <size>`` line, a consistency proof, an empty line and a
signed checkpoint; it answers as c2sp.org/tlog-witness says (200 with a cosignature line, 400, 403,
404, 409 with the latest cosigned size as ``text/x.tlog.size``, 422). ``GET /<sha256(origin) hex>
/checkpoint`` serves the latest checkpoint it cosigned, with the log's and its own signatures.

The state is one SQLite file: the latest cosigned checkpoint per log, and every validly signed
checkpoint that contradicts it (a fork, a rewrite), kept as evidence. The check and the update are
one transaction under one lock, so two requests cannot roll a log back. Nothing changes on a
refused request, except that a contradiction signed by the log's own key is recorded as evidence.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..ledger import merkle
from ..ledger.note import BadSignature, Checkpoint, MalformedNote, UnknownKey, Verifier
from .cosignature import CosignatureError, WitnessSigner, parse_add_checkpoint

__all__ = ["Fork", "WitnessApp", "WitnessState"]

log = structlog.get_logger("aiobligations.witness")

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_EMPTY_ROOT = hashlib.sha256(b"").digest()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latest (
    origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL,
    cosigned TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS forks (
    id INTEGER PRIMARY KEY, origin TEXT NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL,
    old_size INTEGER NOT NULL, note TEXT NOT NULL, known_note TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Fork:
    """Evidence: a checkpoint signed by a log's key that contradicts one the witness cosigned.

    .. versionadded:: 0.2.0
    """

    origin: str
    at: float
    reason: str
    old_size: int
    note: str
    known_note: str


class WitnessState:
    """The witness's durable state in one SQLite file (created readable by its owner only).

    Args:
        path: The database file.

    .. versionadded:: 0.2.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        self.lock = threading.Lock()

    def latest(self, origin: str) -> tuple[int, bytes, str, str] | None:
        """(size, root, log-signed note, cosigned note) of the latest cosigned checkpoint, or ``None``."""
        row = self._conn.execute("SELECT size, root, note, cosigned FROM latest WHERE origin=?", (origin,)).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), row[2], row[3])

    def set_latest(self, origin: str, size: int, root: bytes, note: str, cosigned: str) -> None:
        """Record a newly cosigned checkpoint durably."""
        with self._conn:
            self._conn.execute("INSERT OR REPLACE INTO latest VALUES (?,?,?,?,?,?)",
                               (origin, size, root, note, cosigned, time.time()))

    def add_fork(self, origin: str, reason: str, old_size: int, note: str, known_note: str) -> None:
        """Keep a contradicting checkpoint as evidence."""
        with self._conn:
            self._conn.execute("INSERT INTO forks (origin, at, reason, old_size, note, known_note) VALUES (?,?,?,?,?,?)",
                               (origin, time.time(), reason, old_size, note, known_note))

    def forks(self, origin: str | None = None) -> list[Fork]:
        """The recorded forks, oldest first (of one log, or all)."""
        sql = "SELECT origin, at, reason, old_size, note, known_note FROM forks"
        rows = (self._conn.execute(sql + " WHERE origin=? ORDER BY id", (origin,)) if origin is not None
                else self._conn.execute(sql + " ORDER BY id"))
        return [Fork(*row) for row in rows]

    def snapshot(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Every row of both tables (tests compare them before and after a refused request)."""
        return (self._conn.execute("SELECT * FROM latest ORDER BY origin").fetchall(),
                self._conn.execute("SELECT * FROM forks ORDER BY id").fetchall())

    def close(self) -> None:
        """Close the database."""
        self._conn.close()


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


class WitnessApp:
    """The witness as an ASGI app (serve it with uvicorn, as ``aiobligations witness serve`` does).

    Args:
        signer: The witness's cosigning key.
        logs: The verifier keys of the logs it witnesses; a log's origin is its key's name, unless
            given as an ``(origin, verifier)`` pair.
        state: Where the latest cosigned checkpoints and the forks are kept.
        max_body: The largest request body accepted, in bytes (413 beyond).
        rate: Requests per second allowed per client address (429 beyond), refilled continuously.
        burst: How many requests a client may make at once.
        clock: The source of cosignature timestamps (tests pass a fixed one).

    .. versionadded:: 0.2.0
    """

    def __init__(self, signer: WitnessSigner, logs: Iterable[Verifier | tuple[str, Verifier]], state: WitnessState, *,
                 max_body: int = 64 * 1024, rate: float = 20.0, burst: float = 40.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.signer = signer
        self.state = state
        self.max_body = max_body
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.logs: dict[str, list[Verifier]] = {}
        for log_ in logs:
            origin, verifier = log_ if isinstance(log_, tuple) else (log_.name, log_)
            self.logs.setdefault(origin, []).append(verifier)
        self._by_hash = {hashlib.sha256(origin.encode()).hexdigest(): origin for origin in self.logs}
        self._buckets: dict[str, _Bucket] = {}

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        client = scope.get("client")
        if not self._admit(client[0] if client else "-"):
            await _respond(send, 429, "too many requests\n", headers=[(b"retry-after", b"1")])
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == "/add-checkpoint":
            if method != "POST":
                await _respond(send, 405, "use POST\n", headers=[(b"allow", b"POST")])
                return
            body = await _read_body(scope, receive, self.max_body)
            if body is None:
                await _respond(send, 413, f"the body is larger than {self.max_body} bytes\n")
                return
            status, text, content_type = await asyncio.to_thread(self.add_checkpoint, body)
            await _respond(send, status, text, content_type=content_type)
            return
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 2 and parts[1] == "checkpoint" and parts[0] in self._by_hash:
            latest = self.state.latest(self._by_hash[parts[0]])
            if latest is not None:
                await _respond(send, 200, latest[3])
                return
        await _respond(send, 404, "not found\n")

    def _admit(self, address: str) -> bool:
        now = time.monotonic()
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) > 10_000:
                self._buckets.clear()  # Bounded memory under a flood of addresses.
            bucket = self._buckets[address] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def add_checkpoint(self, body: bytes) -> tuple[int, str, str]:
        """
        Handle one ``add-checkpoint`` body.

        Args:
            body: The request body.

        Returns:
            (HTTP status, response body, content type), as c2sp.org/tlog-witness prescribes.
        """
        try:
            old, proof, note = parse_add_checkpoint(body)
        except CosignatureError as exc:
            return 400, f"{exc}\n", "text/plain"
        origin = note.split("\n", 1)[0]
        verifiers = self.logs.get(origin)
        if verifiers is None:
            return 404, "unknown log\n", "text/plain"
        text = None
        try:
            for verifier in verifiers:
                try:
                    text = verifier.verify(note)
                    break
                except UnknownKey:
                    continue
            if text is None:
                return 403, "no signature by a known key of this log\n", "text/plain"
            checkpoint = Checkpoint.parse(text)
        except BadSignature:
            return 403, "the log's signature does not verify\n", "text/plain"
        except MalformedNote as exc:
            return 400, f"{exc}\n", "text/plain"
        if old > checkpoint.size:
            return 400, "the old size is larger than the checkpoint's\n", "text/plain"
        if checkpoint.size == 0 and checkpoint.root != _EMPTY_ROOT:
            return 422, "an empty tree must have the empty root\n", "text/plain"
        with self.state.lock:
            latest = self.state.latest(origin)
            size, root, known = (latest[0], latest[1], latest[2]) if latest else (0, _EMPTY_ROOT, "")
            if old != size:
                if latest is not None and checkpoint.size == size and checkpoint.root != root:
                    self._fork(origin, "same size, different root", old, note, known)
                return 409, f"{size}\n", "text/x.tlog.size"
            if old == 0:
                if proof:
                    return 422, "a proof from the empty tree must be empty\n", "text/plain"
            else:
                try:
                    merkle.verify_consistency(old, checkpoint.size, proof, root, checkpoint.root)
                except merkle.InvalidProof as exc:
                    self._fork(origin, f"inconsistent: {exc}", old, note, known)
                    return 422, f"{exc}\n", "text/plain"
            line = self.signer.cosign(text, int(self.clock()))
            self.state.set_latest(origin, checkpoint.size, checkpoint.root, note, note + line)
        log.info("witness.cosigned", origin=origin, size=checkpoint.size)
        return 200, line, "text/plain; charset=utf-8"

    def _fork(self, origin: str, reason: str, old: int, note: str, known: str) -> None:
        self.state.add_fork(origin, reason, old, note, known)
        log.error("witness.fork", origin=origin, reason=reason,
                  root=base64.b64encode(Checkpoint.parse(note[: note.rfind("\n\n") + 1]).root).decode())


async def _read_body(scope: _Scope, receive: _Receive, limit: int) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                if int(value) > limit:
                    return None
            except ValueError:
                return None
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: _Send, status: int, text: str, *, content_type: str = "text/plain; charset=utf-8",
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
