"""Running the demo: wrap the app in ``ObligationsMiddleware`` and serve it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import ConfigurationError
from ..keys import init_project
from ..obligations import Obligations
from .app import build_app

__all__ = [
    "KEEP_ALIVE_TIMEOUT",
    "LIMIT_CONCURRENCY",
    "MAX_INCOMPLETE_EVENT_SIZE",
    "REQUEST_TIMEOUT",
    "run_demo",
    "server_settings",
    "wrap",
]

logger = logging.getLogger(__name__)

# The HTTP contract's default prefix for the provider's endpoints.
_TRANSPARENCY_PATH = "/ai/transparency"


def wrap(app: Any, obligations: Obligations) -> Any:
    """Wrap an ASGI app in ``aiobligations.middleware.ObligationsMiddleware``.

    Args:
        app: The ASGI application, such as :func:`aiobligations.demo.build_app`'s.
        obligations: The hub whose profile and ledger the middleware uses.

    Returns:
        ``ObligationsMiddleware(app, obligations=obligations)``; the bare app, with a warning
        logged, while the middleware cannot be imported.

    .. versionadded:: 0.1.0
    """
    # TODO(middleware): drop this fallback once aiobligations.middleware.ObligationsMiddleware
    # exists; from then on a missing middleware is a broken install and must fail loudly.
    try:
        middleware = importlib.import_module("aiobligations.middleware").ObligationsMiddleware
    except (ImportError, AttributeError) as exc:
        logger.warning("ObligationsMiddleware is not available (%s); serving the demo unwrapped", exc)
        return app
    return middleware(app, obligations=obligations)


REQUEST_TIMEOUT = 15.0
"""Seconds a connection has to deliver a whole request (line, headers and body), from the moment it
opens or its previous response ends; then it is closed. uvicorn has no such bound of its own (its
keep-alive timer runs only between requests and any byte stops it), so a client that sends half a
request line and waits (slowloris) would hold the connection for ever."""

KEEP_ALIVE_TIMEOUT = 5
"""Seconds an idle keep-alive connection stays open after a response (uvicorn ``--timeout-keep-alive``)."""

MAX_INCOMPLETE_EVENT_SIZE = 16 << 10
"""The most bytes of an unfinished request line and headers kept (h11 ``max_incomplete_event_size``);
more is a 400."""

LIMIT_CONCURRENCY = 1000
"""Connections and tasks at once; beyond, uvicorn answers 503 at once (``--limit-concurrency``)."""


def _request_deadline_protocol(timeout: float) -> type:
    """An h11 protocol for uvicorn that closes a connection not delivering a whole request in ``timeout`` s."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class RequestDeadlineH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request to arrive whole (slowloris)."""

        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                logger.info("closing a connection that did not deliver a request in %s s", timeout)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                self._disarm()  # The whole request is in: the app has it.

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # The next request on this connection gets the same deadline.

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return RequestDeadlineH11Protocol


def server_settings(server: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments that bound connections, from a profile's ``[server]`` table.

    The table's keys (all optional): ``forwarded_allow_ips`` (a list of proxy addresses or networks
    whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed; default none, so the client
    address is the TCP peer and rotating ``X-Forwarded-For`` changes nothing), ``request_timeout``
    (:data:`REQUEST_TIMEOUT`), ``keep_alive_timeout`` (:data:`KEEP_ALIVE_TIMEOUT`),
    ``limit_concurrency`` (:data:`LIMIT_CONCURRENCY`).

    Raises:
        ConfigurationError: A value has the wrong type or is out of range.

    .. versionadded:: 0.1.0
    """
    if server is not None and not isinstance(server, Mapping):
        raise ConfigurationError("[server] must be a table")
    server = dict(server or {})
    unknown = set(server) - {"forwarded_allow_ips", "request_timeout", "keep_alive_timeout", "limit_concurrency"}
    if unknown:
        raise ConfigurationError(f"[server] has unknown keys: {', '.join(sorted(unknown))}")
    proxies = server.get("forwarded_allow_ips", [])
    if not isinstance(proxies, list) or not all(isinstance(p, str) and p.strip() for p in proxies):
        raise ConfigurationError("[server] forwarded_allow_ips must be a list of addresses or networks")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy.strip(), strict=False)
        except ValueError:
            raise ConfigurationError(f"[server] forwarded_allow_ips: {proxy!r} is not an address or network") from None

    def number(key: str, default: float, kind: type) -> Any:
        value = server.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
            raise ConfigurationError(f"[server] {key} must be a number of seconds (0 to 3600), got {value!r}")
        return kind(value)

    request_timeout = number("request_timeout", REQUEST_TIMEOUT, float)
    limit = server.get("limit_concurrency", LIMIT_CONCURRENCY)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"[server] limit_concurrency must be an int, 1 or more, got {limit!r}")
    return {
        "http": _request_deadline_protocol(request_timeout),
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": ",".join(p.strip() for p in proxies),  # Never FORWARDED_ALLOW_IPS's default.
        "timeout_keep_alive": number("keep_alive_timeout", KEEP_ALIVE_TIMEOUT, int),
        "h11_max_incomplete_event_size": MAX_INCOMPLETE_EVENT_SIZE,
        "limit_concurrency": limit,
        "timeout_graceful_shutdown": 10,
    }


def _announce(message: str) -> None:
    print(f"aiobligations demo: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_exit_signals() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into a recorded number while the server runs.

    uvicorn catches these signals to shut down gracefully and afterwards re-raises them with the
    handlers it found. Left at their defaults, SIGTERM would then kill the process before the
    ledger is flushed and SIGINT would surface as a ``KeyboardInterrupt``; with these handlers
    installed, the re-raised signal is only recorded and ``run_demo`` returns normally.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread; uvicorn skips them too.
        yield received
        return

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, record) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _announcing_server(config: Any, obligations: Obligations) -> Any:
    """Return a ``uvicorn.Server`` that prints its real address once it listens (port 0 works)."""
    import uvicorn

    class DemoServer(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if not self.started:
                return
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            _announce(f"serving on {base}/ (OpenAI base_url {base}/v1)")
            _announce(f"transparency page: {base}{_TRANSPARENCY_PATH}")
            _announce(f"ledger: {obligations.profile.ledger.path}")

    return DemoServer(config)


def run_demo(*, config: Path, port: int = 8000, host: str = "127.0.0.1") -> None:
    """Serve the demo AI service, wrapped by ``ObligationsMiddleware``, until SIGTERM or Ctrl-C.

    If ``config`` does not exist, a development profile and keys are written into its folder
    first (announced on stderr). The profile's ``[server]`` table bounds connections and says which
    proxies' forwarded headers to believe (none by default): see :func:`server_settings`. On SIGTERM or Ctrl-C uvicorn shuts down gracefully, the ledger is
    flushed and closed, and the function returns normally.

    Args:
        config: The profile, ``aiobligations.toml``.
        port: The TCP port; 0 picks a free one (the address is printed on stderr).
        host: The interface to listen on.

    Raises:
        ConfigurationError: the profile or its keys are missing, invalid or cannot be written.
        SystemExit: uvicorn could not start, for example because the port is taken.

    .. versionadded:: 0.1.0
    """
    import uvicorn  # Only the demo needs a server; importing aiobligations.demo does not.

    config = Path(config)
    if not config.exists():
        folder = config.parent
        written = init_project(folder)
        if written != config:
            written.rename(config)
        _announce(f"no profile at {config}; wrote a development profile and keys into {folder.resolve()}")
    obligations = Obligations.from_file(config)
    # The signal handlers stay quiet through the flush too, so a second SIGTERM cannot cut it short.
    with _quiet_exit_signals() as received:
        try:
            app = wrap(build_app(), obligations)
            settings = server_settings(obligations.profile.raw.get("server"))
            uvicorn_config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on", **settings)
            if not received:  # A signal that came while starting up means: don't start.
                _announcing_server(uvicorn_config, obligations).run()
        finally:
            obligations.close()
            _announce(f"ledger flushed and closed: {obligations.profile.ledger.path}")
