"""A loopback TCP proxy in front of PostgreSQL that a test can cut and restore: the database "goes away".

:class:`Proxy` listens on ``127.0.0.1:<free port>`` and forwards every connection to the real server
(``127.0.0.1:5432``), two threads per connection. :meth:`Proxy.cut` resets every proxied connection
(both ends, with ``SO_LINGER`` 0, so each side sees its connection broken at once, as when a
network link or the database host fails) and, until :meth:`Proxy.restore`, resets every new
connection as soon as it is accepted: to a client the database is unreachable, quickly (no connect
timeout to wait out). Nothing here sleeps: threads block on sockets, and cutting shuts those down.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Proxy", "proxied"]

_LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST, not FIN.
_CHUNK = 1 << 16


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # Wakes a thread blocked in recv() on it.
    with contextlib.suppress(OSError):
        sock.close()


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``; :meth:`cut` makes the upstream unreachable."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.upstream = upstream
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.accepted = 0
        self.refused = 0  # Connections reset at once while cut.
        self.severed = 0  # Connections reset by a cut.
        self._thread = threading.Thread(target=self._accept, name="pgproxy-accept", daemon=True)
        self._thread.start()

    def url(self, database: str = "test", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    @property
    def connections(self) -> int:
        """How many client connections are proxied now."""
        with self._lock:
            return len(self._open) // 2

    def cut(self) -> int:
        """Reset every proxied connection and refuse new ones until :meth:`restore`; how many were cut."""
        with self._lock:
            self._cut = True
            sockets = list(self._open)
            self._open.clear()
        for sock in sockets:
            _reset(sock)
        self.severed += len(sockets) // 2
        return len(sockets) // 2

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        """Stop listening and reset everything still proxied."""
        with self._lock:
            self._closed = True
            sockets = list(self._open)
            self._open.clear()
        _reset(self._listener)
        for sock in sockets:
            _reset(sock)
        self._thread.join(10)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # Closed.
            with self._lock:
                closed, cut = self._closed, self._cut
            if closed or cut:
                self.refused += cut
                _reset(client)
                if closed:
                    return
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._cut or self._closed:  # Cut while connecting.
                    _reset(client)
                    _reset(server)
                    continue
                self._open.update((client, server))
                self.accepted += 1
            done = [0]  # Directions of this pair that have ended.
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target, done), name="pgproxy-pump",
                                 daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, done: list[int]) -> None:
        try:
            while data := source.recv(_CHUNK):
                target.sendall(data)
        except OSError:
            broken = True  # A cut, or either end reset: end the pair at once.
        else:
            broken = False  # An orderly end: pass it on, the other direction may still carry data.
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)
        with self._lock:
            done[0] += 1
            finished = broken or done[0] == 2
            mine = finished and (source in self._open or target in self._open)
            if finished:
                self._open.discard(source)
                self._open.discard(target)
        if mine:
            for sock in (source, target):
                if broken:
                    _reset(sock)
                else:
                    with contextlib.suppress(OSError):
                        sock.close()


@contextmanager
def proxied(upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> Iterator[Proxy]:
    """A :class:`Proxy` for the block; closed (every connection reset) on the way out."""
    proxy = Proxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
