"""The wire between a :class:`~aiobligations.ledger.process.ProcessLedger` and its writer process.

A frame is two lengths (``>II``), a ``marshal`` part (the peer is our own process: plain data
only) and raw bytes: the big byte lists a deferred record's factory names in its
``out_of_band_args``, written straight from the objects that hold them.
"""

from __future__ import annotations

import hashlib
import hmac
import marshal
import os
import socket
import struct
from typing import Any

from .. import errors
from ..errors import LedgerError
from ._items import OP_DEFER

_HEADER = struct.Struct(">II")  # Lengths of the marshal part and of the raw bytes after it.
_OUT_OF_BAND = 64 << 10  # Byte lists at least this big travel outside the marshal part.
_MARKER = "\x00aiobligations:out-of-band"
_MAX_IOV = 512


def _send(sock: socket.socket, message: Any) -> None:
    """Send one frame: a ``marshal`` part (the peer is our own process: plain data only) and raw bytes.

    The arguments a record factory names in its ``out_of_band_args`` (positions of lists of bytes:
    captured bodies, up to the capture cap each) are not copied into the marshal part when they are
    big: they are written straight from the objects that hold them (``sendmsg`` gathers them), and
    a marker with their length stands in. So sending a record never doubles what the serving
    process holds.
    """
    raw: list[bytes] = []
    if isinstance(message, list):
        message = [_detach(item, raw) if item[1] == OP_DEFER and item[2][2] else item for item in message]
    data = marshal.dumps(message)
    views = [memoryview(_HEADER.pack(len(data), sum(len(b) for b in raw))), memoryview(data)]
    views.extend(memoryview(b) for b in raw if b)
    position = 0
    while position < len(views):
        sent = sock.sendmsg(views[position : position + _MAX_IOV])
        while position < len(views) and sent >= len(views[position]):
            sent -= len(views[position])
            position += 1
        if sent:
            views[position] = views[position][sent:]


def frame_bytes(message: Any) -> bytes:
    """One whole frame as bytes, for a message with no out-of-band part (the writer's answers)."""
    data = marshal.dumps(message)
    return _HEADER.pack(len(data), 0) + data


def _detach(item: tuple[int, int, Any, bool], raw: list[bytes]) -> Any:
    """Move a deferred item's big byte lists out of its marshal part (see :func:`_send`)."""
    seq, op, (name, args, positions), waits = item
    moved = None
    for position in positions:
        value = args[position] if position < len(args) else None
        if type(value) is not list and type(value) is not tuple:
            continue
        size = 0
        for chunk in value:
            if type(chunk) is not bytes:
                size = -1
                break
            size += len(chunk)
        if size >= _OUT_OF_BAND:
            if moved is None:
                moved = list(args)
            raw.extend(value)
            moved[position] = (_MARKER, size)
    if moved is None:
        return item
    return (seq, op, (name, tuple(moved), positions), waits)


def _attach(frame: Any, raw: bytes) -> Any:
    """Put the raw bytes back where their markers stand (the child's half of :func:`_send`)."""
    if not raw or not isinstance(frame, list):
        return frame
    view = memoryview(raw)
    offset = 0
    for index, item in enumerate(frame):
        if item[1] != OP_DEFER or not item[2][2]:
            continue
        seq, op, (name, args, positions), waits = item
        restored = None
        for position in positions:
            value = args[position] if position < len(args) else None
            if type(value) is tuple and len(value) == 2 and value[0] == _MARKER:
                if restored is None:
                    restored = list(args)
                restored[position] = [bytes(view[offset : offset + value[1]])]
                offset += value[1]
        if restored is not None:
            frame[index] = (seq, op, (name, tuple(restored), positions), waits)
    return frame


def _recv(reader: SocketReader, limit: int | None = None) -> Any:
    """Read one frame, or ``None`` at end of file or a reset (the peer is gone).

    ``limit`` bounds the frame's size (a handshake from a peer not yet authenticated): a bigger
    one reads as ``None``, nothing of it is parsed.
    """
    try:
        header = reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return None
        length, raw_length = _HEADER.unpack(header)
        if limit is not None and length + raw_length > limit:
            return None
        data = reader.read(length)
        raw = reader.read(raw_length) if raw_length else b""
    except (OSError, ValueError):  # ValueError: the reader was closed under us.
        return None
    if len(data) < length or len(raw) < raw_length:
        return None
    return _attach(marshal.loads(data), raw)


def _error_wire(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)


def _error_from_wire(wire: Any) -> BaseException:
    name, message = wire
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        return LedgerError(f"{name}: {message}")
    return cls(message)


# -- where the shared writer listens, and how its peers know each other ---------------------------

_MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes; keep a margin.


def writer_address(path: str | os.PathLike[str]) -> str | bytes:
    """The address of the one writer of the ledger file ``path``, for every process on this host.

    A socket file beside the database (``<database>.writer``, 0600) when its path is short enough
    for a Unix socket address; otherwise a Linux abstract address named after the database's real
    path. Either way the writer checks each peer's user id and a key proof before taking anything.
    """
    real = os.path.realpath(path)
    candidate = real + ".writer"
    if len(os.fsencode(candidate)) <= _MAX_SOCKET_PATH:
        return candidate
    return b"\0aiobligations-writer-" + hashlib.sha256(os.fsencode(real)).hexdigest()[:40].encode()


def auth_key(signer_key: bytes, origin: str) -> bytes:
    """The key a writer and its peers prove to each other that they serve the same ledger.

    Derived from the checkpoint signing key, which every process of one service holds and which
    master-key rotation does not change.
    """
    return hmac.new(signer_key, b"aiobligations/ledger-writer-auth\n" + origin.encode(), hashlib.sha256).digest()


def proof(key: bytes, role: bytes, *nonces: bytes) -> bytes:
    """An HMAC over ``role`` and the handshake's nonces."""
    return hmac.new(key, role + b"\n" + b"".join(nonces), hashlib.sha256).digest()


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    uid: int = struct.unpack("3i", creds)[2]
    return uid


class SocketReader:
    """Reads exact byte counts from a socket through a buffer of its own, with no lock inside.

    ``socket.makefile`` would do the same with a lock that a forked child can inherit held (the
    parent's receiving thread sits in ``read``), and then even dropping the object deadlocks. This
    one can be dropped anywhere. Closing it leaves the socket open.
    """

    __slots__ = ("_buffer", "_size", "_sock")

    def __init__(self, sock: socket.socket, size: int = 1 << 16) -> None:
        self._sock = sock
        self._size = size
        self._buffer = bytearray()

    def read(self, count: int) -> bytes:
        """``count`` bytes, or fewer at end of file."""
        buffer = self._buffer
        if len(buffer) >= count:
            data = bytes(buffer[:count])
            del buffer[:count]
            return data
        if count - len(buffer) > self._size:
            # A big frame: receive it in place rather than through the buffer.
            out = bytearray(count)
            view = memoryview(out)
            have = len(buffer)
            view[:have] = buffer
            buffer.clear()
            while have < count:
                got = self._sock.recv_into(view[have:])
                if not got:
                    return bytes(out[:have])
                have += got
            return bytes(out)
        while len(buffer) < count:
            chunk = self._sock.recv(self._size)
            if not chunk:
                break
            buffer += chunk
        data = bytes(buffer[:count])
        del buffer[:count]
        return data

    def close(self) -> None:
        """Drop what is buffered (the socket is its owner's to close)."""
        self._buffer = bytearray()
