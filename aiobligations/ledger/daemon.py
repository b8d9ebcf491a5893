"""The ledger's shared writer: one process per ledger file, for every serving process on the host.

Model servers run several worker processes (``uvicorn --workers N``, gunicorn, vLLM's API servers),
and all of them must write one log: one sequence of indices, one sequence of signed checkpoints.
So a ledger file has exactly one writer process. The first serving process that opens the ledger
starts it (``python -m aiobligations.ledger._writer``); it takes the file's writer lock, listens on
a Unix socket beside the database (see :func:`~aiobligations.ledger._framing.writer_address`), and
every other process of the service connects to it. Each process (a *peer*) hands it batches of
records; the writer seals, hashes and commits them in group commits and acknowledges each peer's
own items. When the last peer leaves, the writer stops listening, stores what it has, signs a
final checkpoint, releases the lock and exits. If it dies, the peers start another one (whichever
takes the lock first), and each sends again what the dead one had not stored.

Exactly once, per peer: every peer numbers its items; the writer stores, in the same transaction as
each batch, the last number of every peer that had items in it (a ``writer_seq:<token>`` row), and
tells a reconnecting peer that number, so the peer drops what is stored and resends the rest.

Who may connect: the socket is 0600 (or abstract, where the path is too long), the writer checks
the peer's user id (``SO_PEERCRED``), and both sides prove they hold the ledger's signing key with
an HMAC over fresh nonces before anything else is read or sent.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import socket
import threading
import time
from collections import deque
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import ConfigurationError, LedgerError, LedgerLocked
from ._framing import SocketReader, _error_wire, _recv, _send, auth_key, frame_bytes, peer_uid, proof
from .crypto import MasterKey
from ._items import OP_DEFER, OP_ERASE, OP_FLUSH, OP_RECORD, OP_REMOTE, OP_SIGN, Item, release
from .ledger import Ledger
from .note import Signer
from .records import PreparedRecord
from .retention import Retention
from .store import SQLiteStore

__all__ = ["SEQ_PREFIX", "serve"]

log = structlog.get_logger("aiobligations.ledger")

_HANDSHAKE_LIMIT = 4096
_MAX_OUTBOX = 100_000
_STALE_AFTER = 86_400.0
_STOP = object()
_HANDSHAKE_TIMEOUT = 5.0
SEQ_PREFIX = "writer_seq:"
"""The ``meta`` rows holding each peer's last stored sequence number: ``writer_seq:<token>``."""


class _Peer:
    """One connected serving process, with an outbox of its own.

    Messages to a peer (acknowledgements, new checkpoints) go through its outbox and its own
    sending thread, so a peer that stops reading (a stopped or wedged worker) never stalls the
    writer's thread and with it every other peer. A peer whose outbox passes
    :data:`_MAX_OUTBOX` messages is cut off: it reconnects and resends, and nothing it sent is
    stored twice.
    """

    __slots__ = ("bye", "reader", "sock", "token", "_cut", "_lock", "_outbox", "_ready", "_sender", "_sending")

    def __init__(self, sock: socket.socket, token: str, reader: SocketReader) -> None:
        self.sock = sock
        self.reader = reader
        self.token = token
        self.bye = False
        self._cut = False
        self._lock = threading.Lock()
        self._outbox: deque[Any] = deque()
        self._sending = False  # The sending thread holds a message it took from the outbox.
        self._ready = threading.Event()
        self._sender = threading.Thread(target=self._send_all, name="aiobligations-ledger-peer-out", daemon=True)
        self._sender.start()

    def send(self, message: Any) -> None:
        """Send a message to the peer, or queue it; never blocks.

        When nothing is queued before it, the message goes out at once, without waking the sending
        thread (most answers fit the socket's buffer); whatever does not fit is queued, in order.
        """
        if self._cut:
            return
        with self._lock:
            outbox = self._outbox
            if not outbox and not self._sending:
                data = frame_bytes(message)
                try:
                    sent = self.sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._cut = True  # The peer is gone; its reading thread sees the end of file.
                    return
                if sent == len(data):
                    return
                outbox.append(_Raw(data[sent:]))
            else:
                outbox.append(message)
            if len(outbox) > _MAX_OUTBOX:
                log.error("ledger_writer_peer_stalled", token=self.token, queued=len(outbox))
                self._cut = True
                outbox.clear()
                with contextlib.suppress(OSError):
                    self.sock.shutdown(socket.SHUT_RDWR)  # Its reading thread sees the end and lets it go.
        self._ready.set()

    def _send_all(self) -> None:
        outbox = self._outbox
        while True:
            self._ready.wait()
            self._ready.clear()
            while True:
                with self._lock:
                    if not outbox:
                        self._sending = False
                        break
                    message = outbox.popleft()
                    self._sending = True
                if message is _STOP:
                    return
                try:
                    if type(message) is _Raw:
                        self.sock.sendall(message.data)
                    else:
                        _send(self.sock, message)
                except OSError:
                    self._cut = True  # The peer is gone; its reading thread sees the end of file.
                    with self._lock:
                        outbox.clear()
                        self._sending = False
                    break

    def close(self) -> None:
        """Send what is queued (within a few seconds), then close the connection."""
        with self._lock:
            self._outbox.append(_STOP)
        self._ready.set()
        self._sender.join(5.0)
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class _Raw:
    """The rest of a frame the socket took only part of: sent as it is, before anything after it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Seq:
    """Stands in, in the writer's queue, for a peer's item: its sequence number and who sent it."""

    __slots__ = ("peer", "seq", "waits")

    def __init__(self, peer: _Peer, seq: int, waits: bool) -> None:
        self.peer = peer
        self.seq = seq
        self.waits = waits


class _Log:
    """The ledger the writer process runs, and what it tells its peers as batches commit."""

    def __init__(self, config: dict[str, Any], master: bytes) -> None:
        self.peers: list[_Peer] = []
        self._broadcast: str | None = None
        retention = Retention(config["retention"]) if config["retention"] is not None else None
        ledger = Ledger.__new__(Ledger)
        ledger._open_thread_writer(
            SQLiteStore(config["path"]),
            origin=config["origin"],
            signer=Signer(config["signer_name"], Ed25519PrivateKey.from_private_bytes(config["signer_key"])),
            master_key=MasterKey(master),
            retention=retention,
            checkpoint_interval=config["checkpoint_interval"],
            history_interval=config["history_interval"],
            options={
                "queue_size": config["queue_size"],
                "on_full": "wait",
                "full_timeout": 3600.0,
                "max_batch": config["max_batch"],
                "batch_delay": 0.0,  # The peers already gathered their batches.
                "deliver": self.deliver,
                "batch_meta": self.batch_meta,
            },
        )
        self.ledger = ledger
        self.writer = ledger._writer
        if config.get("witnesses"):
            # This process signs the checkpoints, so it is the one that asks the witnesses.
            from ..witness.client import WitnessSettings

            ledger.start_witnesses(WitnessSettings.from_dict(config["witnesses"]))
        if config.get("timestamps"):
            from ..witness.timestamp import TimestampSettings

            ledger.start_timestamps(TimestampSettings.from_dict(config["timestamps"]))

    def state(self) -> tuple[int, str | None, int]:
        writer = self.writer
        return writer.size, writer.checkpoint, writer.signed_size

    def batch_meta(self, items: list[Item]) -> list[tuple[str, bytes]]:
        """Each peer's last number in the batch, stored with it: what a new writer resumes from."""
        last: dict[str, int] = {}
        for item in items:
            waiter = item[2]
            if type(waiter) is _Seq and waiter.seq > last.get(waiter.peer.token, -1):
                last[waiter.peer.token] = waiter.seq
        now = b"%d" % time.time()
        return [(SEQ_PREFIX + token, b"%d %s" % (seq, now)) for token, seq in last.items()]

    def deliver(self, results: list[tuple[Any, Any]]) -> None:
        """Acknowledge to each peer what of its own is stored (or failed); tell the others the new state."""
        by_peer: dict[_Peer, tuple[list[int], list[tuple[int, bool, Any]]]] = {}
        local = []
        for waiter, value in results:
            if type(waiter) is _Seq:
                done, acks = by_peer.setdefault(waiter.peer, ([-1], []))
                if isinstance(value, BaseException):
                    acks.append((waiter.seq, True, _error_wire(value)))
                else:
                    if waiter.seq > done[0]:
                        done[0] = waiter.seq
                    if waiter.waits:
                        acks.append((waiter.seq, False, value))
            elif waiter is not None:
                local.append((waiter, value))
        if local:
            release(local)
        state = self.state()
        for peer, (done, acks) in by_peer.items():
            peer.send(("ack", done[0], acks, *state))
        if state[1] != self._broadcast:
            # Peers with nothing in this batch still learn the new size and checkpoint, so every
            # process serves the same checkpoint and finds the same records.
            self._broadcast = state[1]
            for peer in list(self.peers):
                if peer not in by_peer:
                    peer.send(("state", *state))

    def ready(self, token: str) -> dict[str, Any]:
        """What a peer needs on connecting: the tree's state and its own last stored number."""
        stored = self.ledger._store.get_meta(SEQ_PREFIX + token)
        size, checkpoint, signed_size = self.state()
        return {"size": size, "checkpoint": checkpoint, "signed_size": signed_size,
                "writer_seq": (token, int(stored.split()[0])) if stored else None, "pid": os.getpid()}

    def drop_stale(self, now: float) -> int:
        """Drop the sequence rows of peers gone for a day (killed workers never say goodbye).

        A peer whose writer died reconnects within seconds and needs its row; one silent for
        :data:`_STALE_AFTER` seconds is gone for good. Returns how many rows were dropped.
        """
        store = self.ledger._store
        stale = []
        for key, value in store.meta_with_prefix(SEQ_PREFIX).items():
            parts = value.split()
            written = float(parts[1]) if len(parts) > 1 else 0.0
            if now - written > _STALE_AFTER:
                stale.append(key)
        if stale:
            self.writer.in_writer(lambda: store.drop_meta(stale))
        return len(stale)

    def remote(self, name: str, args: tuple[Any, ...]) -> Any:
        if name == "prune":
            end, now = args
            return self.ledger.prune(end, now=now)
        if name == "rotate":
            return self.ledger.rotate_master_key(MasterKey(args[0]))
        raise LedgerError(f"unknown ledger operation {name!r}")

    def forget(self, token: str) -> None:
        """Drop a departed peer's sequence row (it left cleanly: nothing of it is left to resend)."""
        store = self.ledger._store
        self.writer.in_writer(lambda: store.drop_meta([SEQ_PREFIX + token]))


def _item(op: int, payload: Any) -> tuple[int, Any]:
    if op == OP_RECORD:
        return op, PreparedRecord(*payload)
    if op == OP_DEFER:
        return op, (payload[0], payload[1])  # (factory name, args); the out-of-band positions are spent.
    if op in (OP_ERASE, OP_FLUSH, OP_SIGN):
        return op, payload
    raise LedgerError(f"unknown ledger item {op!r}")


class _Server:
    """Accepts peers, reads their frames into the ledger's queue, and stops when the last one leaves."""

    def __init__(self, log_: _Log, listener: socket.socket, address: str | bytes, key: bytes) -> None:
        self.log = log_
        self.listener = listener
        self.address = address
        self.key = key
        self.lock = threading.Lock()
        self.peers: set[_Peer] = set()
        self.stopping = False
        self.last: _Peer | None = None

    def add(self, peer: _Peer) -> bool:
        with self.lock:
            if self.stopping:
                return False
            self.peers.add(peer)
            self.log.peers = list(self.peers)
        return True

    def serve(self) -> None:
        """Accept peers until the last one has left; then close the ledger and tell that peer."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                break  # Shut down by the last peer's leaving.
            # Each newcomer is greeted on a thread of its own: one that connects and says nothing
            # must not keep the others waiting.
            threading.Thread(target=self.admit, args=(conn,), name="aiobligations-ledger-hello", daemon=True).start()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
        with contextlib.suppress(OSError):
            self.listener.close()
        self.log.ledger.close()
        last = self.last
        if last is not None:
            if last.bye:
                last.send(("closed", True))
            last.close()

    def admit(self, conn: socket.socket) -> None:
        """Greet a newcomer; refuse it (logged, closed) if it is not a peer of this ledger."""
        try:
            self.handshake(conn)
        except Exception as exc:
            log.warning("ledger_writer_peer_refused", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                conn.close()

    def handshake(self, conn: socket.socket) -> None:
        if peer_uid(conn) != os.getuid():
            raise LedgerError("a process of another user tried to connect")
        conn.settimeout(_HANDSHAKE_TIMEOUT)
        ours = os.urandom(16)
        _send(conn, ("challenge", ours))
        reader = SocketReader(conn)
        hello = _recv(reader, limit=_HANDSHAKE_LIMIT)
        if not (isinstance(hello, tuple) and len(hello) == 4 and hello[0] == "hello"
                and isinstance(hello[1], str) and 0 < len(hello[1]) <= 64
                and isinstance(hello[2], bytes) and isinstance(hello[3], bytes) and len(hello[3]) == 16):
            raise LedgerError("a peer sent no valid hello")
        _, token, mac, theirs = hello
        if not hmac.compare_digest(mac, proof(self.key, b"peer", ours, theirs)):
            raise LedgerError("a peer does not hold this ledger's key")
        conn.settimeout(None)
        peer = _Peer(conn, token, reader)
        if not self.add(peer):
            raise LedgerError("the writer is stopping")
        peer.send(("ready", {**self.log.ready(token), "proof": proof(self.key, b"writer", theirs, ours)}))
        self.start(peer)

    def start(self, peer: _Peer) -> None:
        threading.Thread(target=self.read, args=(peer,), name="aiobligations-ledger-peer", daemon=True).start()

    def read(self, peer: _Peer) -> None:
        """Take one peer's frames into the queue, in order, until it leaves."""
        log_ = self.log
        writer = log_.writer
        try:
            while True:
                frame = _recv(peer.reader)
                if frame is None:
                    break
                if type(frame) is tuple:
                    if frame and frame[0] == "bye":
                        log_.ledger.flush()  # Everything it sent before is stored.
                        log_.forget(peer.token)
                        peer.bye = True
                        break
                    continue
                for seq, op, payload, waits in frame:
                    waiter = _Seq(peer, seq, waits)
                    if op == OP_REMOTE:
                        try:
                            value, failed = log_.remote(*payload), False
                        except Exception as exc:
                            value, failed = _error_wire(exc), True
                        peer.send(("ack", -1, [(seq, failed, value)], *log_.state()))
                        continue
                    op, item = _item(op, payload)
                    writer.enqueue((op, item, waiter))
        except Exception as exc:  # pragma: no cover - a bug; the peer is dropped, the writer goes on.
            log.error("ledger_writer_peer_error", error=f"{type(exc).__name__}: {exc}")
        self.leave(peer)

    def leave(self, peer: _Peer) -> None:
        with self.lock:
            self.peers.discard(peer)
            self.log.peers = list(self.peers)
            if self.peers or self.stopping:
                last = False
            else:
                last = self.stopping = True
                self.last = peer
        if last:
            # No new peer may join a writer that is closing: the listener goes first, so one that
            # connects from now on starts (and waits for) the next writer.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            return
        if peer.bye:
            peer.send(("closed", False))
        peer.close()


def _listen(address: str | bytes) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if isinstance(address, str):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)  # A dead writer's; we hold the lock, so nobody else listens there.
        old = os.umask(0o177)
        try:
            listener.bind(address)
        finally:
            os.umask(old)
    else:
        listener.bind(address)
    listener.listen(128)
    return listener


def serve(fd: int) -> int:
    """The writer process: open the ledger, listen for peers, store what they send until all leave.

    ``fd`` is a socket to the process that started it: its first peer, which sends the
    configuration (keys included: never on the command line or in the environment).
    """
    sock = socket.socket(fileno=fd)
    reader = SocketReader(sock)
    config = _recv(reader)
    if not isinstance(config, dict):
        return 2
    used = "configured"
    try:
        try:
            log_ = _Log(config, config["master_key"])
        except ConfigurationError:
            pending = config.get("pending_master_key")
            if not pending:
                raise
            log_ = _Log(config, pending)  # A rotation went through.
            used = "pending"
    except LedgerLocked as exc:
        _send_quietly(sock, ("busy", str(exc)))  # Another writer is starting or stopping: use that one.
        return 0
    except Exception as exc:
        _send_quietly(sock, ("failed", _error_wire(exc)))
        return 1
    try:
        listener = _listen(config["address"])
    except OSError as exc:
        log_.ledger.close()
        _send_quietly(sock, ("failed", ("LedgerError", f"the ledger's writer cannot listen: {exc}")))
        return 1
    log_.drop_stale(time.time())
    server = _Server(log_, listener, config["address"], auth_key(config["signer_key"], config["origin"]))
    first = _Peer(sock, config["token"], reader)
    server.add(first)
    first.send(("ready", {**log_.ready(first.token), "master_key_used": used}))
    server.start(first)
    server.serve()
    return 0


def _send_quietly(sock: socket.socket, message: Any) -> None:
    with contextlib.suppress(OSError):
        _send(sock, message)
