"""Running the demo: wrap the app in ``ObligationsMiddleware`` and serve it with uvicorn."""

from __future__ import annotations

import contextlib
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ..keys import init_project
from ..obligations import Obligations
from .app import build_app

__all__ = ["run_demo", "wrap"]

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
    first (announced on stderr). On SIGTERM or Ctrl-C uvicorn shuts down gracefully, the ledger is
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
            uvicorn_config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on")
            if not received:  # A signal that came while starting up means: don't start.
                _announcing_server(uvicorn_config, obligations).run()
        finally:
            obligations.close()
            _announce(f"ledger flushed and closed: {obligations.profile.ledger.path}")
