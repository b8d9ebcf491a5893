"""A ledger whose writer is its own process, so the serving process keeps its core for requests.

A model server's event loop runs on one core under one GIL. The in-process writer thread seals,
hashes and commits every record on that same core, and each time it takes the GIL the loop waits.
:class:`ProcessLedger` keeps the :class:`~aiobligations.ledger.Ledger` API and its queue, but its
writer thread only batches what callers queue and sends it, over a Unix socket pair, to a child
process (``python -m aiobligations.ledger._writer``) that runs an ordinary ledger over the same
SQLite file: it builds deferred records, seals, hashes, commits, signs checkpoints, and answers
with acknowledgements. Reads (records, proofs, the checkpoint) happen in the serving process on
read-only SQLite connections, which WAL lets run beside the writer.

Nothing is lost when the child dies: every item stays in the parent until the child acknowledges
it as committed. A new child is started at once (with back-off while it cannot start); it reports
the last sequence number it committed (stored in the same transaction as the records), so the
parent drops what is already stored and sends the rest again, in order: nothing twice, nothing
missing. A caller waiting on a record that was stored but whose acknowledgement died with the
child gets a :class:`~aiobligations.errors.LedgerError` saying so. While no child runs, the queue
fills and ``submit`` raises :class:`~aiobligations.errors.LedgerFull` (which the hub spools).

The child gets its keys over the socket pair, never on its command line or in its environment. It
exits when the parent closes the socket, or dies (end of file): it stores what it received, signs
a final checkpoint and closes the database.
"""

from __future__ import annotations

import marshal
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from ..errors import ConfigurationError, LedgerError
from ._framing import _error_from_wire, _error_wire, _recv, _send
from .crypto import MasterKey, SubjectCrypto
from .ledger import (
    _OP_DEFER,
    _OP_ERASE,
    _OP_FLUSH,
    _OP_RECORD,
    _OP_REMOTE,
    _OP_SIGN,
    Ledger,
    _build,
    _factory_name,
    _resolve_factory,
    _Waiter,
)
from .note import Signer
from .records import PreparedRecord
from .retention import DAY, Retention
from .store import SQLiteStore

__all__ = ["ProcessLedger"]

log = structlog.get_logger("aiobligations.ledger")

# -- the parent's side -----------------------------------------------------------------------------


class ProcessLedger(Ledger):
    """A :class:`Ledger` whose sealing, hashing and commits run in a child process.

    Same API and guarantees as :class:`Ledger` (``append`` returns a durable index, ``submit``
    never blocks on disk, ``flush``, ``erase_subject``, reads and proofs); what changes is where
    the CPU work happens. :class:`aiobligations.Obligations` builds one when the profile says
    ``[ledger] writer = "process"`` (the default).

    Example:
        >>> ledger = ProcessLedger("ledger.db", origin="example.com/ai/ledger", signer=signer,
        ...                        master_key=MasterKey.generate())  # doctest: +SKIP

    Args:
        path: The SQLite file (created by the child if missing; its folder must exist).
        origin, signer, master_key, queue_size, on_full, full_timeout, max_batch,
        checkpoint_interval, retention, history_interval, batch_delay: As for :class:`Ledger`.
            ``batch_delay`` (default 10 ms) is how long the parent gathers records nobody waits
            on before it sends them, in one frame, to the child: each wake-up of the sending
            thread takes the GIL from the event loop, so fewer, larger frames cost the loop less.
            A record nobody waits on is durable within about this delay plus one commit.
        start_timeout: How long to wait for the child to open the ledger.

    Raises:
        ConfigurationError, UnusableInput, LedgerError: the child could not open the ledger
            (the same errors :class:`Ledger` raises), or did not answer within ``start_timeout``.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
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
        batch_delay: float = 0.01,
        start_timeout: float = 30.0,
    ) -> None:
        self._configure(origin=origin, signer=signer, queue_size=queue_size, on_full=on_full,
                        full_timeout=full_timeout, max_batch=max_batch, checkpoint_interval=checkpoint_interval,
                        retention=retention, history_interval=history_interval, batch_delay=batch_delay)
        self.path = Path(path)
        self._start_timeout = start_timeout
        self._token = os.urandom(8).hex()
        self._factory_names: dict[Any, tuple[str, tuple[int, ...]]] = {}
        self._seq = 0
        self._unacked: OrderedDict[int, tuple[int, Any, Any]] = OrderedDict()
        self._ack_lock = threading.Lock()  # Guards _unacked; never held across a blocking call.
        self._conn_lock = threading.Lock()  # Held while sending, and while a new child starts.
        self._connected = threading.Event()
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: IO[bytes] | None = None
        self._config = {
            "path": str(self.path),
            "origin": origin,
            "signer_name": signer.name,
            "signer_key": signer.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            "master_key": master_key._raw,
            "queue_size": max(queue_size * 2, 1024),
            "max_batch": max_batch,
            "checkpoint_interval": checkpoint_interval,
            # In days: a plain number is a number of days to Retention.
            "retention": {kind: seconds / DAY for kind, seconds in retention.as_dict().items()}
            if retention is not None else None,
            "history_interval": history_interval,
            "token": self._token,
        }
        ready = self._spawn()
        self._connected.set()
        try:
            store = SQLiteStore(self.path, create=False, readonly=True)
            state = store.open()
        except BaseException:
            self._stop_child(timeout=5.0)
            raise
        self._store = store
        secret = master_key.unwrap(store.get_meta("pseudonym_secret") or b"", SubjectCrypto.secret_label)
        self._adopt(state, SubjectCrypto(master_key, secret))
        self._take_state(ready["size"], ready["checkpoint"], ready["signed_size"])
        self._start()
        self._receiver = threading.Thread(target=self._receive, name="aiobligations-ledger-receiver", daemon=True)
        self._receiver.start()

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"ProcessLedger(origin={self.origin!r}, size={self._size}, writer_pid={pid})"

    @property
    def writer_pid(self) -> int | None:
        """The process id of the current writer process (for monitoring and CPU pinning)."""
        return self._process.pid if self._process is not None else None

    @property
    def accepting(self) -> bool:
        """Whether :meth:`submit` would take a record now (a writer process runs, queue not full)."""
        return self._connected.is_set() and super().accepting

    # -- the child -----------------------------------------------------------------------------

    def _spawn(self) -> dict[str, Any]:
        """Start a child, hand it the configuration, and wait until it has the ledger open."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "aiobligations.ledger._writer", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
            )
        except OSError as exc:
            parent.close()
            child.close()
            raise LedgerError(f"cannot start the ledger's writer process: {exc}") from None
        child.close()
        reader = parent.makefile("rb", buffering=1 << 16)
        try:
            parent.settimeout(self._start_timeout)
            _send(parent, self._config)
            ready = _recv(reader)
            parent.settimeout(None)
        except OSError as exc:
            ready = ("failed", ("LedgerError", f"no answer from the writer process: {exc}"))
        if not (isinstance(ready, tuple) and ready and ready[0] == "ready"):
            reader.close()
            parent.close()
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if isinstance(ready, tuple) and len(ready) == 2 and ready[0] == "failed":
                raise _error_from_wire(ready[1])
            raise LedgerError(f"the ledger's writer process exited ({process.returncode}) before opening the ledger")
        self._process, self._sock, self._reader = process, parent, reader
        return ready[1]

    def _stop_child(self, timeout: float) -> None:
        process, sock = self._process, self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if process is not None:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("ledger_writer_process_killed", pid=process.pid, reason=f"did not exit within {timeout} s")
                process.kill()
                process.wait()

    # -- sending (the writer thread) -------------------------------------------------------------

    def _idle_timeout(self) -> float | None:
        return None  # The child signs idle checkpoints on its own clock.

    def _write(self, items: list[tuple[int, Any, Any]], *, sign: bool = False) -> None:
        if not items:
            return
        frame = [(*self._wire(op, payload), waiter) for op, payload, waiter in items]
        while not self._connected.wait(0.2):
            if self._stopping:
                self._abandon(frame)
                return
        with self._conn_lock:
            with self._ack_lock:
                wire = []
                for op, payload, waiter in frame:
                    seq = self._seq
                    self._seq = seq + 1
                    self._unacked[seq] = (op, payload, waiter)
                    wire.append((seq, op, payload, waiter is not None))
            if self._sock is None or not self._connected.is_set():
                return  # A new child is starting: it gets everything unacknowledged, these included.
            try:
                try:
                    _send(self._sock, wire)
                except (ValueError, TypeError):
                    # marshal refused an item before a byte was written: make every item plain.
                    _send(self._sock, self._make_plain(wire))
            except OSError:
                # The child is gone; the receiver starts another and sends everything
                # unacknowledged again. Until then this thread waits and the queue fills.
                self._connected.clear()

    def _make_plain(self, wire: list[tuple[int, int, Any, bool]]) -> list[tuple[int, int, Any, bool]]:
        """Replace the items ``marshal`` cannot carry, in the frame and among the unacknowledged."""
        fixed = []
        with self._ack_lock:
            for seq, op, payload, waits in wire:
                entry = self._unacked.get(seq)
                op, payload, waiter = self._plain(op, payload, entry[2] if entry is not None else None)
                if entry is not None:
                    self._unacked[seq] = (op, payload, waiter)
                fixed.append((seq, op, payload, waits))
        return fixed

    @staticmethod
    def _plain(op: int, payload: Any, waiter: Any) -> tuple[int, Any, Any]:
        """An item whose payload ``marshal`` cannot carry, made one it can.

        A deferred record whose arguments are not plain values is built here instead (a factory
        that then fails gives ``record.build_failed``, as it would in the writer).
        """
        try:
            marshal.dumps(payload)
            return op, payload, waiter
        except (ValueError, TypeError):
            pass
        if op == _OP_DEFER:
            name, args = payload[0], payload[1]
            try:
                factory = _resolve_factory(name)
            except LedgerError:
                factory = name
            return _OP_RECORD, _prepared_wire(_build(factory, args)), waiter
        raise LedgerError(f"a ledger item cannot be sent to the writer process: {payload!r:.200}")

    def _abandon(self, frame: list[tuple[int, Any, Any]]) -> None:
        """Closing with no writer process: release the waiters; count the records lost."""
        error = LedgerError("the ledger closed while its writer process was down")
        lost = sum(1 for op, _, waiter in frame if waiter is None and op in (_OP_RECORD, _OP_DEFER))
        if lost:
            log.error("ledger_records_lost", records=lost, reason="the writer process was down at close")
        Ledger._release([(waiter, error) for _, _, waiter in frame if waiter is not None])

    def _wire(self, op: int, payload: Any) -> tuple[int, Any]:
        """An item as plain values for the child: ``(op, payload)``.

        A deferred record travels as ``(factory name, args, out-of-band positions)``.
        """
        if op == _OP_DEFER:
            factory, args = payload
            known = self._factory_names.get(factory)
            if known is None:
                try:
                    known = self._factory_names[factory] = (
                        _factory_name(factory), tuple(getattr(factory, "out_of_band_args", ())))
                except LedgerError:
                    op, payload = _OP_RECORD, _build(factory, args)  # Not importable by name: built here.
            if known is not None:
                return op, (known[0], args, known[1])
        if op == _OP_RECORD:
            return op, _prepared_wire(payload)
        return op, payload

    # -- receiving -------------------------------------------------------------------------------

    def _take_state(self, size: int, checkpoint: str | None, signed_size: int) -> None:
        if size > self._size:
            self._size = size
        if checkpoint is not None and signed_size >= self._signed_size:
            self._checkpoint = checkpoint
            self._signed_size = signed_size

    def _receive(self) -> None:
        while True:
            try:
                reader = self._reader
                message = _recv(reader) if reader is not None else None
                if message is None:
                    if self._stopping:
                        return
                    self._restart()
                    if self._stopping:
                        return
                    continue
                self._acknowledged(message)
            except Exception as exc:  # pragma: no cover - a bug; the receiver must not die.
                log.error("ledger_receiver_error", error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def _acknowledged(self, message: tuple[Any, ...]) -> None:
        _, done, acks, size, checkpoint, signed_size = message
        self._take_state(size, checkpoint, signed_size)
        results = []
        with self._ack_lock:
            unacked = self._unacked
            for seq, failed, value in acks:
                entry = unacked.pop(seq, None)
                if entry is not None:
                    results.append((entry[2], _error_from_wire(value) if failed else value))
            for _, _, waiter in self._pop_through(done):
                if waiter is not None:  # pragma: no cover - waited items are acknowledged by name.
                    results.append((waiter, LedgerError("the ledger's writer gave no answer for this item")))
        Ledger._release(results)

    def _restart(self) -> None:
        """The child died: start another, drop what it stored, send the rest again (in order)."""
        self._connected.clear()
        process = self._process
        code = process.wait() if process is not None else None
        with self._ack_lock:
            pending = len(self._unacked)
        log.error("ledger_writer_process_died", returncode=code, unacknowledged=pending)
        delay = 0.05
        while not self._stopping:
            with self._conn_lock:
                if self._reader is not None:
                    self._reader.close()
                if self._sock is not None:
                    self._sock.close()
                self._sock = self._reader = None
                try:
                    ready = self._spawn()
                except Exception as exc:
                    log.error("ledger_writer_process_start_failed", error=f"{type(exc).__name__}: {exc}",
                              retry_in_s=delay)
                    self._fail_waiters(LedgerError(f"the ledger's writer process cannot start: {exc}"))
                else:
                    self._resend(ready)
                    self._connected.set()
                    log.warning("ledger_writer_process_restarted", pid=self.writer_pid)
                    return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _resend(self, ready: dict[str, Any]) -> None:
        if ready.get("master_key_used") == "pending" and self._config.get("pending_master_key"):
            self._adopt_master(self._config["pending_master_key"])  # The dead writer had rotated.
        self._take_state(ready["size"], ready["checkpoint"], ready["signed_size"])
        stored = ready.get("writer_seq")
        results = []
        with self._ack_lock:
            if stored is not None and stored[0] == self._token:
                for op, _, waiter in self._pop_through(stored[1]):
                    if waiter is not None:
                        value: Any = self._size if op in (_OP_FLUSH, _OP_SIGN) else LedgerError(
                            "the ledger's writer process stored this record, then died before saying "
                            "at which index"
                        )
                        results.append((waiter, value))
            wire = [(seq, op, payload, waiter is not None) for seq, (op, payload, waiter) in self._unacked.items()]
        Ledger._release(results)
        if wire:
            assert self._sock is not None
            _send(self._sock, wire)

    def _pop_through(self, last: int) -> list[tuple[int, Any, Any]]:
        """Remove and return the unacknowledged items up to sequence number ``last`` (under ``_ack_lock``)."""
        unacked = self._unacked
        popped = []
        while unacked:
            seq = next(iter(unacked))
            if seq > last:
                break
            popped.append(unacked.pop(seq))
        return popped

    def _fail_waiters(self, error: LedgerError) -> None:
        """Callers waiting on items the dead child never acknowledged get ``error``."""
        results = []
        with self._ack_lock:
            for seq in [seq for seq, entry in self._unacked.items() if entry[2] is not None]:
                results.append((self._unacked.pop(seq)[2], error))
        Ledger._release(results)

    # -- maintenance ------------------------------------------------------------------------------

    def _remote(self, name: str, args: tuple[Any, ...]) -> Any:
        waiter = _Waiter()
        self._enqueue((_OP_REMOTE, (name, args), waiter))
        return waiter.wait(None)

    def rotate_master_key(self, new: MasterKey) -> int:
        """Re-wrap every subject key under ``new`` (in the writer process); see :meth:`Ledger.rotate_master_key`."""
        # A writer started while the rotation is under way (or after it, if its answer was lost)
        # tries the new key when the old one no longer opens the ledger.
        self._config["pending_master_key"] = new._raw
        try:
            count = self._remote("rotate", (new._raw,))
        except BaseException:
            if self._config.get("master_key") != new._raw:
                self._config.pop("pending_master_key", None)
            raise
        self._adopt_master(new._raw, new)
        return count

    def _adopt_master(self, raw: bytes, key: MasterKey | None = None) -> None:
        self._crypto.master = key if key is not None else MasterKey(raw)
        self._config["master_key"] = raw
        self._config.pop("pending_master_key", None)

    def prune(self, end: int | None = None, *, now: float | None = None) -> int:
        """Delete expired records (in the writer process); see :meth:`Ledger.prune`."""
        first = self._remote("prune", (end, now))
        state = self._store.reload_state()
        self.reader.set_pruned(state.pruned_start, state.pruned_frontier)
        return first

    # -- closing ----------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, have the child sign a final checkpoint and exit, and close. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            if self._forked:
                # The socket and the writer process are the parent's: shutting the socket down here
                # would cut the parent off from its writer.
                self._closed = True
                return
            if self._thread.is_alive() and self._connected.is_set():
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
            self._stopping = True
            self._thread.join()
            with self._ack_lock:
                lost = sum(1 for op, _, waiter in self._unacked.values() if op in (_OP_RECORD, _OP_DEFER))
            if lost:
                log.error("ledger_records_lost", records=lost, reason="the writer process did not store them")
            with self._conn_lock:  # A writer being started now is the one stopped.
                self._stop_child(timeout=30.0 if timeout is None else max(timeout, 1.0))
            self._receiver.join(10.0)
            if self._reader is not None:
                self._reader.close()
            if self._sock is not None:
                self._sock.close()
            self._store.close()
            self._closed = True


# -- the child's side ------------------------------------------------------------------------------


class _Seq:
    """The child's stand-in for a waiter in the parent: the item's sequence number."""

    __slots__ = ("seq", "waits")

    def __init__(self, seq: int, waits: bool) -> None:
        self.seq = seq
        self.waits = waits


class _ChildLedger(Ledger):
    """The ledger the writer process runs; it acknowledges what it commits to the parent."""

    def __init__(self, config: dict[str, Any], sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._token = config["token"]
        retention = Retention(config["retention"]) if config["retention"] is not None else None
        super().__init__(
            SQLiteStore(config["path"]),
            origin=config["origin"],
            signer=Signer(config["signer_name"], Ed25519PrivateKey.from_private_bytes(config["signer_key"])),
            master_key=MasterKey(config["master_key"]),
            queue_size=config["queue_size"],
            on_full="wait",
            full_timeout=3600.0,
            max_batch=config["max_batch"],
            checkpoint_interval=config["checkpoint_interval"],
            retention=retention,
            history_interval=config["history_interval"],
            batch_delay=0.0,  # The parent already gathered the batch.
        )

    def send(self, message: Any) -> None:
        with self._send_lock:
            try:
                _send(self._sock, message)
            except OSError:
                pass  # The parent is gone; the main loop sees the end of file and closes.

    def _batch_meta(self, items: list[tuple[int, Any, Any]]) -> list[tuple[str, bytes]]:
        last = -1
        for item in items:
            waiter = item[2]
            if type(waiter) is _Seq and waiter.seq > last:
                last = waiter.seq
        return [("writer_seq", f"{self._token}:{last}".encode())] if last >= 0 else []

    def _release(self, results: list[tuple[Any, Any]]) -> None:  # type: ignore[override]
        done = -1
        acks = []
        local = []
        for waiter, value in results:
            if type(waiter) is _Seq:
                if isinstance(value, BaseException):
                    acks.append((waiter.seq, True, _error_wire(value)))
                else:
                    if waiter.seq > done:
                        done = waiter.seq
                    if waiter.waits:
                        acks.append((waiter.seq, False, value))
            elif waiter is not None:
                local.append((waiter, value))
        if local:
            Ledger._release(local)
        if done >= 0 or acks:
            self.acknowledge(done, acks)

    def acknowledge(self, done: int, acks: list[tuple[int, bool, Any]]) -> None:
        """Tell the parent: items up to ``done`` are stored; ``acks`` answer the waited ones by number."""
        self.send(("ack", done, acks, self._size, self._checkpoint, self._signed_size))

    def ready(self) -> dict[str, Any]:
        stored = self._store.get_meta("writer_seq")
        writer_seq = None
        if stored:
            token, _, seq = stored.decode().partition(":")
            writer_seq = (token, int(seq))
        return {"size": self._size, "checkpoint": self._checkpoint, "signed_size": self._signed_size,
                "writer_seq": writer_seq, "pid": os.getpid()}

    def remote(self, name: str, args: tuple[Any, ...]) -> Any:
        if name == "prune":
            end, now = args
            return self.prune(end, now=now)
        if name == "rotate":
            return self.rotate_master_key(MasterKey(args[0]))
        raise LedgerError(f"unknown ledger operation {name!r}")


def _prepared_wire(record: PreparedRecord) -> tuple[Any, ...]:
    """A prepared record as plain values, in :class:`PreparedRecord`'s argument order."""
    return (record.kind, record.body, record.subject, record.personal, record.interaction_id)


def _item(op: int, payload: Any) -> tuple[int, Any]:
    if op == _OP_RECORD:
        return op, PreparedRecord(*payload)
    if op == _OP_DEFER:
        return op, (payload[0], payload[1])  # (factory name, args); the out-of-band positions are spent.
    if op in (_OP_ERASE, _OP_FLUSH, _OP_SIGN):
        return op, payload
    raise LedgerError(f"unknown ledger item {op!r}")


def _serve(fd: int) -> int:
    """The writer process: open the ledger, then store what the parent sends until it hangs up."""
    sock = socket.socket(fileno=fd)
    reader = sock.makefile("rb", buffering=1 << 16)
    config = _recv(reader)
    if not isinstance(config, dict):
        return 2
    used = "configured"
    try:
        try:
            ledger = _ChildLedger(config, sock)
        except ConfigurationError:
            pending = config.get("pending_master_key")
            if not pending:
                raise
            ledger = _ChildLedger({**config, "master_key": pending}, sock)  # A rotation went through.
            used = "pending"
    except Exception as exc:
        try:
            _send(sock, ("failed", _error_wire(exc)))
        except OSError:
            pass
        return 1
    ledger.send(("ready", {**ledger.ready(), "master_key_used": used}))
    try:
        while True:
            frame = _recv(reader)
            if frame is None:
                break
            for seq, op, payload, waits in frame:
                waiter = _Seq(seq, waits)
                if op == _OP_REMOTE:
                    try:
                        value, failed = ledger.remote(*payload), False
                    except Exception as exc:
                        value, failed = _error_wire(exc), True
                    ledger.acknowledge(-1, [(seq, failed, value)])
                    continue
                op, item = _item(op, payload)
                ledger._enqueue((op, item, waiter))
    finally:
        ledger.close()
    return 0

