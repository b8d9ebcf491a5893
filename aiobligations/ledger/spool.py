"""The ``fail_open`` spool: records the ledger could not take wait here, sealed, to be replayed.

A record carries personal data in clear until the ledger seals it, so each spooled line is
encrypted with the master key. Writing happens on a background thread: the event loop never
touches the disk. Replay runs when the spool is opened and whenever the ledger accepts again.

Several worker processes may share one spool file (one ledger, several workers). Every append and
every replay holds an exclusive ``flock`` on ``<spool>.lock`` beside it; a replay holds it from
reading the file to rewriting it, so each line is replayed by exactly one process and a line
appended meanwhile waits for the rewrite instead of being lost in it. A process notices lines that
others spooled with one ``os.stat`` at most once a second (:meth:`Spool.might_have_pending`).
The spool, its lock file and its temporary file are created 0600, and a symbolic link at any of
their paths is refused (the error is logged; nothing is written through it).
"""

from __future__ import annotations

import atexit
import base64
import errno
import fcntl
import hashlib
import json
import os
import stat
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import structlog

from ..errors import LedgerError
from ._flock import tracked
from .ledger import Ledger

__all__ = ["Spool"]

log = structlog.get_logger("aiobligations.spool")

_LABEL = b"aiobligations/spool/v1\n"
_BATCH = 1024
# Refuse a symbolic link as the last component; never block on a FIFO put in the spool's place.
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_SPOOLS: weakref.WeakSet[Spool] = weakref.WeakSet()


class Spool:
    """A local, durable, encrypted holding file for records the ledger turned away.

    Several processes may use one spool file at once; see the module's description.

    Args:
        path: The spool file.
        ledger: The ledger records are replayed into.

    .. versionadded:: 0.1.0
    """

    _STAT_INTERVAL = 1.0
    """Look at the file for lines other processes spooled at most this often (seconds)."""

    def __init__(self, path: str | os.PathLike[str], ledger: Ledger) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._ledger = ledger
        self._thread: threading.Thread | None = None
        self._clock = time.monotonic
        self._reset()
        self._in_file = 0  # Lines in the file we may replay, as this spool last saw it.
        self._seen: tuple[int, ...] | None = None  # The file's identity and size as this spool left it.
        self._checked = float("-inf")
        self._changed = False
        self._reported: set[bytes] = set()  # Unreadable lines already logged.
        _SPOOLS.add(self)
        self.replay()

    def _reset(self) -> None:
        """The in-memory state: fresh at start and in a forked child (the parent's is the parent's)."""
        self._queue: SimpleQueue[dict[str, Any] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._writer_running = False
        self._replaying = False
        self._replay_thread: threading.Thread | None = None
        self._queued = 0  # Put and not yet written.

    # -- counting ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many records wait: those queued here or in the file as this spool last saw it.

        When that is 0 it is 1 if the file changed since (another process spooled records), found
        with one ``os.stat`` at most once a second: cheap enough to read on every request.
        """
        count = self._queued + self._in_file
        if count:
            return count
        return 1 if self._file_changed() else 0

    def might_have_pending(self) -> bool:
        """Whether a replay may find something (as :attr:`pending`, without counting)."""
        return bool(self._queued or self._in_file or self._file_changed())

    def _file_changed(self) -> bool:
        now = self._clock()
        if now - self._checked < self._STAT_INTERVAL:
            return self._changed
        self._checked = now
        try:
            found = os.stat(self.path, follow_symlinks=False)
        except OSError:
            self._changed = False
        else:
            # A link is never replayed (the replay would only log it again); an empty file holds nothing.
            self._changed = (
                stat.S_ISREG(found.st_mode) and found.st_size > 0 and _signature(found) != self._seen
            )
        return self._changed

    def _saw(self, signature: tuple[int, ...] | None) -> None:
        """Remember the file as this spool left it (called with the flock held)."""
        self._seen = signature
        self._changed = False
        self._checked = self._clock()

    # -- writing -------------------------------------------------------------------------------

    def put(self, record: dict[str, Any], *, reason: str) -> None:
        """Keep ``record`` for later; never blocks and never raises.

        A record put after :meth:`close` starts the writer again: it is written all the same.
        """
        record = {**record, "spooled": reason}
        with self._lock:
            self._queued += 1
            # Queued under the lock: a writer that is stopping checks the queue under it too.
            self._queue.put(record)
            thread = self._thread
            if not self._writer_running or thread is None or not thread.is_alive():
                thread = threading.Thread(target=self._write, name="aiobligations-spool", daemon=True)
                try:
                    thread.start()
                except RuntimeError as exc:  # No thread to be had: the next put tries again.
                    self._writer_running = False
                    log.error("spool_writer_not_started", error=str(exc))
                else:
                    self._thread = thread
                    self._writer_running = True
        log.warning("ledger_record_spooled", reason=reason, interaction_id=record.get("interaction_id"))

    def _write(self) -> None:
        stopping = False
        while True:
            batch: list[dict[str, Any]] = []
            if not stopping:
                item = self._queue.get()
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
            while len(batch) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except Empty:
                    break
                if item is None:
                    stopping = True  # Keep gathering: what was queued before the stop is written.
                else:
                    batch.append(item)
            if batch:
                self._write_batch(batch)
            if stopping:
                with self._lock:
                    if self._queue.empty():
                        self._writer_running = False
                        return
                # A record was put after the stop: write it too, then stop.

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        lines: list[bytes] = []
        unwritable = 0
        try:
            master = self._ledger.master_key
            for record in batch:
                try:
                    text = json.dumps(record, ensure_ascii=False).encode()
                except (TypeError, ValueError) as exc:
                    log.error("spool_record_unwritable", error=_describe(exc),
                              interaction_id=record.get("interaction_id"))
                    unwritable += 1
                    continue
                lines.append(base64.b64encode(master.wrap(text, _LABEL)) + b"\n")
            if lines:
                self._append(b"".join(lines), len(lines))
        except Exception as exc:  # The writer must outlive any failure, or later records would wait forever.
            log.error("spool_write_failed", error=_describe(exc), records=len(batch) - unwritable,
                      path=str(self.path))
        finally:
            with self._lock:
                self._queued -= len(batch)

    def _append(self, data: bytes, count: int) -> None:
        """Append ``count`` whole lines to the spool, durably, under the flock."""
        with self._exclusive():
            fd = _open_private(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # A torn last line (a crash mid-write) must not swallow ours.
                _write_all(fd, data)
                os.fsync(fd)
                signature = _signature(os.fstat(fd))
            finally:
                os.close(fd)
            if not size:
                _sync_directory(self.path)
            with self._lock:  # Under the flock: no replay can come between the write and the count.
                self._in_file += count
                self._saw(signature)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the exclusive ``flock`` that every process sharing the spool takes to touch it.

        Each holder opens the lock file anew: ``flock`` excludes between open files, so this
        excludes threads of one process as well as processes. A child forked meanwhile closes its
        copy of the descriptor at once (:mod:`aiobligations.ledger._flock`), so it never keeps the
        lock held.
        """
        fd = _open_private(self.lock_path, os.O_RDWR | os.O_CREAT)
        try:
            with tracked(fd):
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
        finally:
            os.close(fd)  # Releases the lock.

    # -- replaying -----------------------------------------------------------------------------

    def replay_soon(self) -> None:
        """Replay on a background thread, unless a replay is already running or nothing waits.

        Cheap when nothing waits: at most one ``os.stat`` a second, for lines other processes spooled.
        """
        with self._lock:
            if self._replaying or not (self._in_file or self._file_changed()):
                return
            self._replaying = True
            thread = threading.Thread(target=self._replay_in_background, name="aiobligations-spool-replay",
                                      daemon=True)
            self._replay_thread = thread
            try:
                thread.start()
            except RuntimeError as exc:
                self._replaying = False
                log.error("spool_replay_not_started", error=str(exc))

    def _replay_in_background(self) -> None:
        try:
            self.replay()
        except Exception as exc:
            log.error("spool_replay_failed", error=_describe(exc), path=str(self.path))
        finally:
            with self._lock:
                self._replaying = False

    def replay(self) -> int:
        """Submit every spooled record to the ledger and empty the spool; return how many.

        Records the ledger still cannot take stay in the spool, and so do lines that cannot be read
        (another master key, damage) or records the ledger rejects as invalid; each of those is
        logged once. Other processes' appends and replays wait while this one runs.
        """
        try:
            os.lstat(self.path)
        except FileNotFoundError:  # Nothing to replay; no lock file is created for nothing.
            with self._lock:
                self._in_file = 0
                self._saw(None)
            return 0
        except OSError as exc:
            log.error("spool_replay_failed", error=_describe(exc), path=str(self.path))
            return 0
        try:
            with self._exclusive():
                return self._replay_locked()
        except OSError as exc:
            log.error("spool_replay_failed", error=_describe(exc), path=str(self.path))
            return 0

    def _replay_locked(self) -> int:
        try:
            fd = _open_private(self.path, os.O_RDONLY)
        except FileNotFoundError:  # Another process replayed it all.
            with self._lock:
                self._in_file = 0
                self._saw(None)
            return 0
        try:
            data = _read_all(fd)
            signature: tuple[int, ...] | None = _signature(os.fstat(fd))
        finally:
            os.close(fd)
        lines = data.splitlines()
        master = self._ledger.master_key
        kept: list[bytes] = []
        unreadable: list[bytes] = []
        rejected: list[tuple[bytes, str]] = []
        replayed = 0
        waiting = 0
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(master.unwrap(base64.b64decode(line), _LABEL))
            except (LedgerError, ValueError):
                kept.append(line)
                unreadable.append(line)
                continue
            try:
                self._ledger.submit(record)
            except LedgerError:
                # The ledger refuses again: keep this line and the rest, untried, in their order.
                rest = [other for other in lines[index:] if other.strip()]
                kept.extend(rest)
                waiting = len(rest)
                break
            except (TypeError, ValueError) as exc:  # Never valid: kept (nothing is dropped), not retried.
                kept.append(line)
                rejected.append((line, f"{type(exc).__name__}: {exc}"))
                continue
            except BaseException:
                # Whatever else happens, what was submitted must leave the file, or it would be
                # submitted twice; the rest stays.
                kept.extend(other for other in lines[index:] if other.strip())
                self._rewrite(kept, data)
                raise
            replayed += 1
        if replayed:
            # Stored before they leave the file: a crash now replays them again rather than losing them.
            flush = getattr(self._ledger, "flush", None)
            if flush is not None:
                try:
                    flush(30.0)
                except LedgerError as exc:
                    log.error("spool_replay_not_confirmed", error=_describe(exc), replayed=replayed)
                    return 0
        try:
            signature = self._rewrite(kept, data, signature)
        except OSError as exc:
            # The records submitted are still in the file: they will be submitted again (twice
            # rather than never).
            log.error("spool_rewrite_failed", error=_describe(exc), replayed=replayed, path=str(self.path))
            signature = None
            waiting = len(kept) + replayed
        with self._lock:
            self._in_file = waiting
            self._saw(signature)
        self._report(unreadable, rejected)
        if replayed:
            log.info("spool_replayed", records=replayed, kept=len(kept))
        return replayed

    def _rewrite(self, kept: list[bytes], data: bytes,
                 signature: tuple[int, ...] | None = None) -> tuple[int, ...] | None:
        """Replace the spool with ``kept`` (under the flock); return the new file's signature."""
        content = b"".join(line + b"\n" for line in kept)
        if content == data:
            return signature  # Nothing replayed: leave the file as it is.
        if not kept:
            self.path.unlink(missing_ok=True)
            _sync_directory(self.path)
            return None
        self._tmp_path.unlink(missing_ok=True)  # A crash's leftover; unlink removes a link, not its target.
        fd = _open_private(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            _write_all(fd, content)
            os.fsync(fd)
            new = _signature(os.fstat(fd))
        finally:
            os.close(fd)
        os.replace(self._tmp_path, self.path)
        _sync_directory(self.path)
        return new

    def _report(self, unreadable: list[bytes], rejected: list[tuple[bytes, str]]) -> None:
        """Log each line kept because it cannot be replayed, once per process."""
        fresh = [line for line in unreadable if _digest(line) not in self._reported]
        if fresh:
            self._reported.update(_digest(line) for line in fresh)
            log.error("spool_line_unreadable", lines=len(fresh), path=str(self.path))
        for line, error in rejected:
            if _digest(line) not in self._reported:
                self._reported.add(_digest(line))
                log.error("spool_record_rejected", error=error, path=str(self.path))

    # -- closing -------------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Write everything queued, then stop the writer; wait for a running replay. Idempotent.

        Args:
            timeout: How long to wait, in all. If the writer is still busy then (another process
                holds the spool's lock, a slow disk), it keeps going in the background and the
                records still queued are logged as an error.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            writer = self._thread if self._writer_running else None
            if writer is not None:
                self._queue.put(None)
            replayer = self._replay_thread
        current = threading.current_thread()
        if writer is not None and writer is not current:
            writer.join(max(0.0, deadline - time.monotonic()))
            if writer.is_alive():
                log.error("spool_close_timed_out", queued=self._queued, path=str(self.path))
        if replayer is not None and replayer is not current:
            replayer.join(max(0.0, deadline - time.monotonic()))

    def _after_fork_in_child(self) -> None:
        # The parent's threads, locks and queued records stay the parent's; the file is shared.
        self._reset()


def _open_private(path: Path, flags: int) -> int:
    """Open a regular file, never through a symbolic link; a created file is 0600, and so is a looser one."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link is in the spool's place; refusing to follow it",
                          str(path)) from None
        raise
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file; refusing to use it", str(path))
        if found.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _sync_directory(path: Path) -> None:
    """Make a file's creation, replacement or removal durable (best effort)."""
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _signature(found: os.stat_result) -> tuple[int, ...]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _digest(line: bytes) -> bytes:
    return hashlib.sha256(line).digest()[:16]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _close_all() -> None:
    """At exit, write what is still queued (the writer is a daemon thread)."""
    for spool in list(_SPOOLS):
        spool.close()


def _after_fork_in_child() -> None:
    for spool in list(_SPOOLS):
        spool._after_fork_in_child()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
