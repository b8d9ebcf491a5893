"""The demo service wrapped in ``ObligationsMiddleware``, built at import time, for multi-worker servers.

``uvicorn --workers N`` and gunicorn need an import string, and each worker (or, with gunicorn
``--preload``, the master before it forks) imports this module. Three variants, each reading the
profile named by ``AIOBLIGATIONS_CONFIG``:

* ``app``: the middleware built without a hub, which loads the profile itself once per process,
  as ``vllm serve --middleware aiobligations.middleware.ObligationsMiddleware`` does;
* ``explicit_app``: a hub opened with ``Obligations.from_file`` and passed to the middleware,
  closed the way the examples close theirs: when the server runs the lifespan's shutdown (before
  uvicorn returns and re-raises SIGTERM), and at exit in a process that serves nothing (gunicorn's
  master under ``--preload``).
* ``fail_closed_app``: as ``app``, with the middleware's ``failure="fail_closed"`` (503 while the
  ledger cannot take records).

Each sits inside a small probe, outside the middleware, so the tests can tell the processes apart:
every response carries ``X-Worker-Pid``, and ``GET /_workers/probe`` answers with the worker's pid,
the pid of the ledger's writer process as that worker knows it, and (``leading``) whether the
worker is the sequencer of a ledger kept in PostgreSQL (``null`` for other ledgers).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
from typing import Any

from aiobligations import Obligations
from aiobligations.demo import build_app
from aiobligations.middleware import CONFIG_ENV, ObligationsMiddleware

PROBE_PATH = "/_workers/probe"
PID_HEADER = "x-worker-pid"
STREAM_DELAY = 0.002  # Seconds between streamed tokens: short, so hundreds of streams stay quick.


class _Probe:
    """Tags every response with the serving process's pid; answers ``GET /_workers/probe`` itself."""

    def __init__(self, app: ObligationsMiddleware) -> None:
        self.app = app
        self.ledger = app.obligations.ledger

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pid = str(os.getpid()).encode()
        if scope["path"] == PROBE_PATH:
            # "leading": whether this process is the sequencer of a ledger kept in PostgreSQL (else None).
            body = json.dumps({"pid": os.getpid(), "writer_pid": getattr(self.ledger, "writer_pid", None),
                               "leading": getattr(getattr(self.ledger, "_writer", None), "leading", None)}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (PID_HEADER.encode(), pid)]})
            await send({"type": "http.response.body", "body": body})
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (PID_HEADER.encode(), pid)]}
            await send(message)

        await self.app(scope, receive, tagged)


class _ClosesOnShutdown:
    """Closes the hub (flushing the ledger) when the app has shut down, before the server is told so."""

    def __init__(self, app: Any, hub: Obligations) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await asyncio.to_thread(self.hub.close)
            await send(message)

        await self.app(scope, receive, closing)


def _explicit() -> _Probe:
    hub = Obligations.from_file(os.environ[CONFIG_ENV])
    atexit.register(hub.close)  # Idempotent; for a process that never runs a lifespan.
    return _Probe(ObligationsMiddleware(_ClosesOnShutdown(build_app(stream_delay=STREAM_DELAY), hub),
                                        obligations=hub))


def __getattr__(name: str) -> Any:
    # Built on first access, so a server importing one variant does not open the ledger twice.
    if name == "app":
        value = _Probe(ObligationsMiddleware(build_app(stream_delay=STREAM_DELAY)))
    elif name == "fail_closed_app":
        value = _Probe(ObligationsMiddleware(build_app(stream_delay=STREAM_DELAY), failure="fail_closed"))
    elif name == "explicit_app":
        value = _explicit()
    else:
        raise AttributeError(name)
    globals()[name] = value
    return value
