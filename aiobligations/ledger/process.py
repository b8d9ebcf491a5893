"""The shared writer process's peers: how a serving process hands its records to the one writer.

The ledger's writer process (:mod:`aiobligations.ledger.daemon`) seals, hashes and commits for every
process of the service. :class:`PeerWriter` is the writer a :class:`~aiobligations.ledger.Ledger`
uses in each of them: its thread only gathers what callers queue and sends it, in frames, over a
Unix socket. Reads (records, proofs, the checkpoint) stay in the serving process, on read-only
SQLite connections beside the writer (WAL allows it). :func:`ProcessLedger` opens such a ledger.

Nothing is lost when the writer process dies: every item stays in the peer until the writer
acknowledges it as committed. The peers reach the next writer at once (whichever starts it first
serves; back-off while none can start); it reports the last number of each peer's it committed
(stored in the same transaction as the records), so each peer drops what is already stored and
sends the rest again, in order: nothing twice, nothing missing. A caller waiting on a record that
was stored but whose acknowledgement died with the writer gets a
:class:`~aiobligations.errors.LedgerError` saying so. While no writer runs, the queue fills and
``submit`` raises :class:`~aiobligations.errors.LedgerFull` (which the hub spools).

The keys reach a writer the peer starts over a socket pair, never its command line or environment.
"""

from __future__ import annotations

import contextlib
import hmac
import marshal
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from ..errors import LedgerError
from ._flock import held
from ._framing import (
    SocketReader,
    _error_from_wire,
    _recv,
    _send,
    auth_key,
    proof,
    writer_address,
)
from ._items import (
    OP_DEFER,
    OP_FLUSH,
    OP_RECORD,
    OP_REMOTE,
    OP_SIGN,
    Item,
    Waiter,
    build,
    factory_name,
    release,
    resolve_factory,
)
from .crypto import MasterKey, SubjectCrypto
from .ledger import Ledger, _check_options
from .note import Signer
from .records import PreparedRecord
from .retention import DAY, Retention
from .store import SQLiteStore
from .writer import Writer

if TYPE_CHECKING:
    from ..witness.client import WitnessSettings
    from ..witness.timestamp import TimestampSettings

__all__ = ["PeerWriter", "ProcessLedger"]

log = structlog.get_logger("aiobligations.ledger")

class PeerWriter(Writer):
    """A writer that hands batches to the ledger's shared writer process (starting it if none runs).

    Built by :func:`ProcessLedger`; see the module's description for what it guarantees.
    """

    remote = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        origin: str,
        signer: Signer,
        master_key: MasterKey,
        queue_size: int,
        on_full: str,
        full_timeout: float,
        max_batch: int,
        checkpoint_interval: float,
        retention: Retention | None,
        history_interval: float,
        batch_delay: float,
        start_timeout: float,
        witnesses: dict[str, Any] | None = None,
        timestamps: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(queue_size=queue_size, on_full=on_full, full_timeout=full_timeout, max_batch=max_batch,
                         batch_delay=batch_delay)
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
        self._reader: SocketReader | None = None
        self._config: dict[str, Any] = {
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
            "witnesses": witnesses,
            "timestamps": timestamps,
            "token": self._token,
            "address": writer_address(self.path),
        }
        self._auth = auth_key(self._config["signer_key"], origin)
        self._writer_pid: int | None = None
        self._closed_event = threading.Event()
        self._last_peer = False
        self._fork_pending = False
        self._fork_lock = threading.Lock()
        self._size = 0
        self._checkpoint: str | None = None
        self._signed_size = 0
        self.crypto: SubjectCrypto | None = None  # The ledger's, once it is composed.
        self.store: SQLiteStore | None = None  # The ledger's read-only store, for a fork.
        ready = self._connect()
        self._connected.set()
        self._take_state(ready["size"], ready["checkpoint"], ready["signed_size"])

    def begin(self) -> None:
        """Start the sending and receiving threads (once the ledger over this writer exists)."""
        self.start()
        self._start_receiver()
        _PEERS.add(self)

    def hang_up(self) -> None:
        """Drop the connection before :meth:`begin` (the ledger could not be composed)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    @property
    def size(self) -> int:
        """How many records the writer process has durably sequenced (its latest word)."""
        return self._size

    @property
    def checkpoint(self) -> str | None:
        """The latest checkpoint the writer process signed (its latest word)."""
        return self._checkpoint

    @property
    def signed_size(self) -> int:
        """The size that checkpoint covers."""
        return self._signed_size

    # -- after a fork ------------------------------------------------------------------------------

    def resume_after_fork(self) -> bool:
        """In a forked child (gunicorn ``--preload``), become a peer of the writer process of its own.

        The parent's connection, threads and unacknowledged items stay the parent's: the child
        starts afresh with a new token, its own connection to the same writer process and its own
        threads. Runs on the child's first write, so a fork that only execs costs nothing.
        """
        with self._fork_lock:
            if not self._fork_pending:
                return not self.closing
            self._token = os.urandom(8).hex()
            self._config = {**self._config, "token": self._token}
            self._seq = 0
            self._unacked = OrderedDict()
            self._ack_lock = threading.Lock()
            self._conn_lock = threading.Lock()
            self._connected = threading.Event()
            self._closed_event = threading.Event()
            self._stopping = False
            self._process = None
            # The parent's socket: closing our copy of the descriptor leaves the parent's connection
            # be (a close, never a shutdown).
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    os.close(self._sock.detach())
            self._sock = self._reader = None
            self.start()
            self._start_receiver()
            self._fork_pending = False
            return True

    def _start_receiver(self) -> None:
        self._receiver = threading.Thread(target=self._receive, name="aiobligations-ledger-receiver", daemon=True)
        self._receiver.start()

    @property
    def pid(self) -> int | None:
        """The process id of the ledger's writer process (shared by every process of the service)."""
        return self._writer_pid

    @property
    def accepting(self) -> bool:
        """Whether :meth:`submit` would take a record now (a writer process runs, queue not full)."""
        return self._connected.is_set() and super().accepting

    # -- the writer process ------------------------------------------------------------------------

    def _connect(self) -> dict[str, Any]:
        """Connect to the ledger's writer process, starting one if none runs; return its greeting.

        Several processes may start one at the same moment: the one that takes the file's lock
        serves, the others answer "busy" and their starters connect to the one that serves.

        Raises:
            ConfigurationError, UnusableInput, LedgerError: the writer could not open the ledger,
                or none could be reached within ``start_timeout``.
        """
        deadline = time.monotonic() + self._start_timeout
        busy = "no writer process answered"
        pause = 0.02
        while True:
            ready = self._dial()
            if ready is not None:
                return ready
            # One starter at a time: workers that start together wait here, then find its writer.
            with self._spawn_lock():
                ready = self._dial()
                if ready is not None:
                    return ready
                started = self._spawn()
            if isinstance(started, dict):
                return started
            busy = started
            if time.monotonic() > deadline:
                raise LedgerError(
                    f"{busy}. The processes of a service share one writer process per ledger, but a "
                    "ledger opened with writer = \"thread\" keeps the file to itself: close it, or "
                    "open it with writer = \"process\""
                )
            time.sleep(pause)  # A writer is stopping (its lock is about to go), or the file is held.
            pause = min(pause * 2, 0.5)

    @contextlib.contextmanager
    def _spawn_lock(self) -> Iterator[None]:
        """Held while this process starts a writer (``<database>.spawn.lock``); released if it dies."""
        with contextlib.ExitStack() as stack:
            with contextlib.suppress(OSError):  # The folder's problem is the writer's to report.
                stack.enter_context(held(f"{self.path}.spawn.lock"))
            yield

    def _dial(self) -> dict[str, Any] | None:
        """Connect to a running writer process and prove we hold the key; ``None`` if none answers."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._start_timeout)
            sock.connect(self._config["address"])
            reader = SocketReader(sock)
            challenge = _recv(reader, limit=4096)
            if not (isinstance(challenge, tuple) and len(challenge) == 2 and challenge[0] == "challenge"
                    and isinstance(challenge[1], bytes)):
                raise OSError("no challenge")
            ours = os.urandom(16)
            _send(sock, ("hello", self._token, proof(self._auth, b"peer", challenge[1], ours), ours))
            ready = _recv(reader, limit=1 << 20)
            if not (isinstance(ready, tuple) and len(ready) == 2 and ready[0] == "ready"
                    and isinstance(ready[1], dict)):
                raise OSError("no greeting")
            if not hmac.compare_digest(ready[1].get("proof", b""), proof(self._auth, b"writer", ours, challenge[1])):
                raise LedgerError(
                    f"the process listening at {self._config['address']!r} does not hold this ledger's key"
                )
            sock.settimeout(None)
        except OSError:
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        self._sock, self._reader = sock, reader
        self._hand_over_process()
        self._writer_pid = ready[1].get("pid")
        return ready[1]

    def _hand_over_process(self) -> None:
        """Stop tracking the writer we started; it may serve other processes for a long time yet.

        It stays registered so that it is reaped once it exits (no zombie, no warning).
        """
        if self._process is not None:
            _STARTED.append(self._process)
            self._process = None
        _reap_started()

    def _spawn(self) -> dict[str, Any] | str:
        """Start a writer process and hand it the configuration; its greeting, or why it is busy."""
        _reap_started()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "aiobligations.ledger._writer", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
                start_new_session=True,  # Not in the service's process group: it stops when its peers leave.
            )
        except OSError as exc:
            parent.close()
            child.close()
            raise LedgerError(f"cannot start the ledger's writer process: {exc}") from None
        child.close()
        reader = SocketReader(parent)
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
            if isinstance(ready, tuple) and len(ready) == 2 and ready[0] == "busy":
                return str(ready[1])
            if isinstance(ready, tuple) and len(ready) == 2 and ready[0] == "failed":
                raise _error_from_wire(ready[1])
            raise LedgerError(f"the ledger's writer process exited ({process.returncode}) before opening the ledger")
        self._process, self._sock, self._reader = process, parent, reader
        self._writer_pid = process.pid
        greeting: dict[str, Any] = ready[1]
        return greeting

    def _leave(self, timeout: float) -> None:
        """Say goodbye to the writer process: it stores what we sent, and stops if we were the last."""
        sock = self._sock
        if sock is not None:
            try:
                _send(sock, ("bye",))
            except OSError:
                pass
            else:
                if not self._closed_event.wait(timeout):
                    log.error("ledger_writer_no_goodbye", pid=self._writer_pid,
                              reason=f"no answer within {timeout} s")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        process = self._process
        if process is not None and self._closed_event.is_set() and self._last_peer:
            try:
                process.wait(timeout)  # Ours, and it stops now: reap it.
            except subprocess.TimeoutExpired:
                log.error("ledger_writer_process_killed", pid=process.pid, reason=f"did not exit within {timeout} s")
                process.kill()
                process.wait()
        self._hand_over_process()

    # -- sending (the writer thread) -------------------------------------------------------------

    def handle(self, items: list[Item]) -> None:
        """Number the batch's items, keep them until acknowledged, and send them in one frame."""
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
        if op == OP_DEFER:
            name, args = payload[0], payload[1]
            try:
                factory = resolve_factory(name)
            except LedgerError:
                factory = name
            return OP_RECORD, _prepared_wire(build(factory, args)), waiter
        raise LedgerError(f"a ledger item cannot be sent to the writer process: {payload!r:.200}")

    def _abandon(self, frame: list[tuple[int, Any, Any]]) -> None:
        """Closing with no writer process: release the waiters; count the records lost."""
        error = LedgerError("the ledger closed while its writer process was down")
        lost = sum(1 for op, _, waiter in frame if waiter is None and op in (OP_RECORD, OP_DEFER))
        if lost:
            log.error("ledger_records_lost", records=lost, reason="the writer process was down at close")
        release([(waiter, error) for _, _, waiter in frame if waiter is not None])

    def _wire(self, op: int, payload: Any) -> tuple[int, Any]:
        """An item as plain values for the writer process: ``(op, payload)``.

        A deferred record travels as ``(factory name, args, out-of-band positions)``.
        """
        if op == OP_DEFER:
            factory, args = payload
            known = self._factory_names.get(factory)
            if known is None:
                try:
                    known = self._factory_names[factory] = (
                        factory_name(factory), tuple(getattr(factory, "out_of_band_args", ())))
                except LedgerError:
                    op, payload = OP_RECORD, build(factory, args)  # Not importable by name: built here.
            if known is not None:
                # marshal carries plain tuples only (an InteractionRecord is a named one).
                return op, (known[0], args if type(args) is tuple else tuple(args), known[1])
        if op == OP_RECORD:
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
                    self._restart(died=reader is not None)
                    continue
                kind = message[0]
                if kind == "ack":
                    self._acknowledged(message)
                elif kind == "state":
                    self._take_state(*message[1:])
                elif kind == "closed":
                    self._last_peer = bool(message[1])
                    self._closed_event.set()
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
        release(results)

    def _restart(self, *, died: bool = True) -> None:
        """The writer died: reach (or start) the next, drop what it stored, send the rest again (in order)."""
        self._connected.clear()
        process = self._process
        code = None
        if process is not None:  # We started it: reap it.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(5.0)
        with self._ack_lock:
            pending = len(self._unacked)
        if died:
            log.error("ledger_writer_process_died", pid=self._writer_pid, returncode=code, unacknowledged=pending)
        delay = 0.05
        while not self._stopping:
            with self._conn_lock:
                if self._reader is not None:
                    self._reader.close()
                if self._sock is not None:
                    self._sock.close()
                self._sock = self._reader = None
                try:
                    ready = self._connect()
                except Exception as exc:
                    log.error("ledger_writer_process_start_failed", error=f"{type(exc).__name__}: {exc}",
                              retry_in_s=delay)
                    self._fail_waiters(LedgerError(f"the ledger's writer process cannot start: {exc}"))
                else:
                    self._resend(ready)
                    self._connected.set()
                    if died:
                        log.warning("ledger_writer_process_reached", pid=self.pid)
                    else:
                        log.info("ledger_writer_process_joined", pid=self.pid)
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
                        value: Any = self._size if op in (OP_FLUSH, OP_SIGN) else LedgerError(
                            "the ledger's writer process stored this record, then died before saying "
                            "at which index"
                        )
                        results.append((waiter, value))
            wire = [(seq, op, payload, waiter is not None) for seq, (op, payload, waiter) in self._unacked.items()]
        release(results)
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
        release(results)

    # -- maintenance ------------------------------------------------------------------------------

    def call(self, name: str, args: tuple[Any, ...]) -> Any:
        """Run maintenance in the writer process, in order with the records: ``prune`` or ``rotate``."""
        if name == "rotate":
            return self._rotate(args[0])
        return self._remote(name, args)

    def _remote(self, name: str, args: tuple[Any, ...]) -> Any:
        waiter = Waiter()
        self.enqueue((OP_REMOTE, (name, args), waiter))
        return waiter.wait(None)

    def _rotate(self, new: MasterKey) -> int:
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
        return int(count)

    def _adopt_master(self, raw: bytes, key: MasterKey | None = None) -> None:
        if self.crypto is not None:
            self.crypto.master = key if key is not None else MasterKey(raw)
        self._config["master_key"] = raw
        self._config.pop("pending_master_key", None)

    # -- closing ----------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Hand over everything queued, have the writer sign a checkpoint, and leave it. Idempotent."""
        with self.close_lock:
            if self.closed:
                return
            if self.forked:
                # Forked and never written through: the socket and the writer are the parent's;
                # shutting the socket down here would cut the parent off from its writer.
                self.closed = True
                return
            if self.thread.is_alive() and not self._connected.is_set():
                self._connected.wait(self._start_timeout if timeout is None else min(timeout, self._start_timeout))
            if self.thread.is_alive() and self._connected.is_set():
                self.sign_finally(timeout)
            self._stopping = True
            self.stop()
            with self._conn_lock:  # A writer being started now is the one we leave.
                self._leave(timeout=30.0 if timeout is None else max(timeout, 1.0))
            self._receiver.join(10.0)
            with self._ack_lock:
                lost = sum(1 for op, _, waiter in self._unacked.values() if op in (OP_RECORD, OP_DEFER))
            if lost:
                log.error("ledger_records_lost", records=lost, reason="the writer process did not store them")
            if self._reader is not None:
                self._reader.close()
            if self._sock is not None:
                self._sock.close()
            self.closed = True


def _prepared_wire(record: PreparedRecord) -> tuple[Any, ...]:
    """A prepared record as plain values, in :class:`PreparedRecord`'s argument order."""
    return (record.kind, record.body, record.subject, record.personal, record.interaction_id)


_PEERS: weakref.WeakSet[PeerWriter] = weakref.WeakSet()
_STARTED: list[subprocess.Popen[bytes]] = []
"""Writer processes this process started that may still serve other processes: reaped when they exit."""


def _reap_started() -> None:
    _STARTED[:] = [process for process in _STARTED if process.poll() is None]


def _after_fork_in_child() -> None:
    """A forked child resumes its peers on first write, as peers of their own."""
    for writer in list(_PEERS):
        if not writer.closed:
            writer._fork_lock = threading.Lock()  # The parent's may have been held by a thread.
            writer._fork_pending = True
            if writer.store is not None:
                writer.store.after_fork()


if hasattr(os, "register_at_fork"):
    # Registered after the module writer.py's own hook, so it runs after it (after-fork hooks run
    # in registration order): that one marks every writer forked and closing first.
    os.register_at_fork(after_in_child=_after_fork_in_child)


def ProcessLedger(  # noqa: N802 - reads as the kind of ledger it opens, as it did when it was a class.
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
    witnesses: WitnessSettings | None = None,
    timestamps: TimestampSettings | None = None,
) -> Ledger:
    """Open the ledger in the SQLite file ``path`` as a peer of its shared writer process.

    Same API and guarantees as a :class:`Ledger` with a thread of its own (``append`` returns a
    durable index, ``submit`` never blocks on disk, ``flush``, ``erase_subject``, reads and
    proofs); what changes is where the CPU work happens, and that every process of the service
    (workers, a CLI run beside them) writes one log through one writer. :class:`aiobligations.Obligations`
    opens one when the profile says ``[ledger] writer = "process"`` (the default).

    Example:
        >>> ledger = ProcessLedger("ledger.db", origin="example.com/ai/ledger", signer=signer,
        ...                        master_key=MasterKey.generate())  # doctest: +SKIP

    Args:
        path: The SQLite file (created by the writer if missing; its folder must exist).
        origin, signer, master_key, queue_size, on_full, full_timeout, max_batch,
        checkpoint_interval, retention, history_interval, batch_delay: As for :class:`Ledger`.
            The writer process takes the checkpoint and retention settings of the process that
            started it (every process of a service shares one profile). ``batch_delay`` (default
            10 ms) is how long this process gathers records nobody waits on before it sends them,
            in one frame: each wake-up of the sending thread takes the GIL from the event loop, so
            fewer, larger frames cost the loop less. A record nobody waits on is durable within
            about this delay plus one commit.
        start_timeout: How long to wait for a writer process to open the ledger.
        witnesses: Witnesses the writer process asks for cosignatures of the checkpoints it signs
            (the settings of the process that starts it, like the checkpoint settings).
        timestamps: RFC 3161 timestamp authorities the writer process asks, likewise.

    Returns:
        A :class:`Ledger` whose ``writer_pid`` is the writer process's.

    Raises:
        ConfigurationError, UnusableInput, LedgerError: the writer could not open the ledger (the
            same errors :class:`Ledger` raises), or did not answer within ``start_timeout``.

    .. versionadded:: 0.2.0
    """
    _check_options(origin, checkpoint_interval)
    writer = PeerWriter(path, origin=origin, signer=signer, master_key=master_key, queue_size=queue_size,
                        on_full=on_full, full_timeout=full_timeout, max_batch=max_batch,
                        checkpoint_interval=checkpoint_interval, retention=retention,
                        history_interval=history_interval, batch_delay=batch_delay, start_timeout=start_timeout,
                        witnesses=witnesses.as_dict() if witnesses is not None else None,
                        timestamps=timestamps.as_dict() if timestamps is not None else None)
    try:
        store = SQLiteStore(path, create=False, readonly=True)
        state = store.open()
    except BaseException:
        writer.hang_up()
        raise
    secret = master_key.unwrap(store.get_meta("pseudonym_secret") or b"", SubjectCrypto.secret_label)
    crypto = SubjectCrypto(master_key, secret)
    writer.crypto = crypto
    writer.store = store
    ledger = Ledger._composed(store, writer, crypto, origin=origin, signer=signer, retention=retention, state=state)
    writer.begin()
    return ledger
