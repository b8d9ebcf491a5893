"""Middleware speed: what ``ObligationsMiddleware`` costs a model server, printed as one JSON object.

Run it from the repository root::

    .venv/bin/python benchmarks/middleware.py            # full run (about 3.5 minutes on 2 cores)
    .venv/bin/python benchmarks/middleware.py --quick    # smoke run (under a minute)

The JSON object goes to stdout; progress goes to stderr. Every file (ledgers, keys, the server
module, the load generator's script) is written under a fresh temporary folder (``--tmp``, default
``/tmp``) that is removed at the end, even on failure; every server process is stopped.

Optional tools: ``opentelemetry-instrumentation-asgi`` (the OpenTelemetry comparison; without it
``in_process.otel`` is ``null`` and the ratio cannot pass) and ``wrk`` (Debian package ``wrk``; the
load generator; without it a Python asyncio keep-alive client in its own process is used, which is
slower than the servers it loads, so its ratios say less).

What each figure measures
-------------------------

``in_process``
    No server, no sockets: one event loop drives the ASGI callable directly, one request after the
    other, with prepared scope, ``receive`` and ``send`` (a fresh scope dict per request, as uvicorn
    makes one). The app is a raw ASGI app answering ``POST /v1/chat/completions`` with a 204-byte
    ``chat.completion`` JSON (``Content-Length`` set), after reading a 120-byte request body; the
    request carries the headers an OpenAI client sends, with ``Authorization: Bearer`` from 100
    rotating API keys (100 subjects). These variants are run:

    - ``bare``: the app itself;
    - ``ours``: ``ObligationsMiddleware(app, obligations=...)`` with every default (the route is
      an AI route: disclosure headers, the JSON notice field inserted, both bodies captured, one
      ``interaction`` record per request built, sealed and appended by the ledger's shared writer
      process (``[ledger] writer = "process"``, the default) to a SQLite ledger made by
      ``aiobligations.keys.init_project``, ``checkpoint_interval = 0``);
    - ``ours_new_person``: the same middleware, but every request is a new person's first: a
      browser's headers with no API key and no cookie, so each one gets a fresh cookie subject,
      the full first-contact notice, a ``Set-Cookie`` header, a mark in the shared first-contact
      table, and (in the writer) a new subject key, wrapped and stored;
    - ``otel``: ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware(app,
      tracer_provider=...)`` with default settings (a SERVER span plus its ``http receive`` and
      ``http send`` spans), an SDK ``TracerProvider`` with a ``SimpleSpanProcessor`` and an exporter
      that drops the spans (every span is built, ended and handed to the exporter on the request
      thread); no MeterProvider is set, so the instrument's metrics go to the API's no-op meter;
    - ``submit_similar`` (no app): ``Ledger.submit`` of interaction records like the middleware's,
      then ``flush``. The records are built, before the timed block, by the middleware's own record
      factory from the arguments it handed the ledger for 100 real requests (caught during the
      warm-up), each with a fresh interaction id: what a caller of ``submit`` would queue for the
      same requests, already JSON when it reaches the writer.

    After an untimed warm-up of each, ``--rounds`` rounds each run a block of ``--block``
    requests through every variant, in an order that rotates from round to round (so drift
    cancels). Inside a block every request is timed with ``perf_counter_ns`` (wall) and
    ``thread_time_ns`` (CPU of the event-loop thread). The block as a whole is timed too, in wall
    time and in process CPU time (all threads); for ``ours``, ``ours_new_person`` and
    ``submit_similar`` the timed block ends with ``obligations.ledger.flush()``, so it includes the
    writer process catching up: every record of the block built, sealed, hashed, committed and its
    checkpoint signed; ``writer_process_cpu_us_per_record`` is that writer process's CPU over the
    block per record (``in_process.writer_process_cpu_us_per_record`` sets the three side by side). ``gc.collect()`` runs before each
    block; the collector stays on.

    Reported per variant: per-request percentiles of wall and thread CPU, and the block figures per
    request (medians over rounds). ``ours_added`` and ``otel_added`` subtract ``bare``:

    - ``thread_cpu_us``: p50/p90/p99 of the per-request thread CPU minus the same percentile of
      ``bare`` (the request path's own cost, without the writer thread);
    - ``wall_us``: the same for per-request wall time (which includes the GIL stalls while the
      writer thread runs);
    - ``block_wall_incl_flush_us``: per round, (block wall of the variant − block wall of bare) /
      requests, median over rounds;
    - ``block_process_cpu_us``: the same in process CPU (event loop + writer thread + anything
      else): what the middleware costs the machine per request, all threads counted;
    - ``other_threads_cpu_us``: process CPU minus event-loop-thread CPU, per request (the writer).

    - ``block_machine_cpu_us``: process CPU plus the CPU of the ledger's writer process (every
      thread, from ``/proc/<pid>/task/*/schedstat``) over the same block, flush included: all the
      CPU the middleware costs the machine per request, in whichever process it is spent.

    The target (``ratio`` = ours/OTel ≤ 0.3, requests with an API key) is checked against
    ``ours_added_us_median`` = ``block_machine_cpu_us`` (``basis``), and likewise
    ``otel_added_us_median``: not the request thread's CPU alone. ``ratio_new_person`` is the same
    for a new person's first request. ``pass_added`` keeps the earlier issue's absolute target
    (≤ 60 µs per request, set on a faster machine; see ``machine.python_loop_ns``): reported, not
    part of ``pass``. ``block_wall_incl_flush_us`` is
    context: with the writer in its own process it measures how long the writer takes to drain a
    burst of 2,000 records queued in a few milliseconds (a pipeline running on the other core),
    not what a request costs.

``uvicorn``
    Each server is its own process: ``uvicorn`` (``--http`` / ``--loop``, default ``auto``: httptools
    and uvloop when installed, else h11 and asyncio; ``http_impl``/``loop_impl`` say which), access
    log off, serving a tiny module written to the temporary folder, with 1 worker and with 4
    (``uvicorn.run("bench_server:app", workers=4)``, as ``uvicorn --workers 4``: a supervisor and
    four worker processes, each a peer of the ledger's one shared writer process); the wrapped
    server is ``ObligationsMiddleware`` over the same app with a fresh ledger (every default: the
    ledger's writer is its own process, ``[ledger] writer = "process"``). With 1 worker on 2 cores,
    the server is pinned to CPU 0 and the load generator and the ledger's writer process (every
    thread of it) to CPU 1 (``pinning``): the serving core does the request path's work only, as on
    a machine with a core to spare. With 4 workers nothing is pinned: workers, writer process and
    load generator share every core. ``--writer-on-server-core`` adds
    ``trivial_writer_on_server_core``: the 1-worker trivial comparison with the writer process
    pinned to CPU 0 beside the server (context, no target: what one core does alone). Two
    endpoints: ``trivial`` (the 204-byte completion above, at once) and ``sleep_20ms`` (the same
    after ``await asyncio.sleep(0.02)``, like a model). The load generator keeps ``--connections``
    (64) keep-alive connections busy for ``--duration`` seconds (``wrk -t1``, bounded by its
    duration; or the Python client, bounded by its duration and by ``--max-requests`` per second of
    it); bare and wrapped servers run side by side, each warmed up (1 s; 2 s with 4 workers, so
    every worker serves and joins the writer first), then timed runs alternate (bare, wrapped,
    wrapped, bare, ...) ``--runs`` times each. After each wrapped run this process reads the
    ledger's record count from the database until it holds a record for every response and stops
    changing (``stored_within_s``), so ``records_per_response`` ≥ 1 shows every response left a
    record. CPU is read from ``/proc`` by this process: ``server_cpu_us_per_request`` is every
    server process's CPU (supervisor and workers, all threads) per response;
    ``writer_process_cpu_us_per_record`` the writer process's CPU per record over the same span
    (its backlog included); ``machine_cpu_us_per_request`` the two together;
    ``added_server_cpu_us_per_request`` is wrapped − bare, and ``added_machine_cpu_us_per_request``
    adds the writer's. With 1 worker the server also splits its CPU by thread
    (``server_threads_cpu_us_per_request``: the event loop's ``MainThread``, the thread that sends
    batches to the writer process, the one that takes its acknowledgements) and reports its own
    ``flush_ms``. ``server_runqueue_wait_us_per_request`` and ``writer_runqueue_wait_us_per_record``
    are the time those processes' threads were runnable but waited for a CPU (``schedstat``): with
    4 workers on 2 cores, or other work on the machine, this is where a saturated machine's time
    goes. Reported: requests/s (median of runs, and every run), latency percentiles from
    the load generator, ``ratio`` = wrapped / bare medians (``ratios`` lists all four); targets
    ≥ 0.97 for ``sleep_20ms`` with 1 and with 4 workers, ≥ 0.7 for ``trivial_4_workers``; the
    1-worker ``trivial`` ratio has no target in this issue (context). Any non-2xx response or
    socket error fails the run.

``streaming``
    ``ttfb``: the demo service's chat stream (``aiobligations.demo.build_app(stream_delay=0.002)``:
    Starlette, request JSON validated, 19 SSE events) served bare and wrapped by two uvicorn
    processes (pinned to CPU 0); one keep-alive connection to each from this process (CPU 1)
    sends ``"stream": true`` requests alternately to one then the other, ``--ttfb-requests`` each
    after 5 warm-ups. Time to first chunk = from the request's last byte written to the arrival
    of the first ``data:`` event (``ttfb_*_ms``, medians; ``*_headers_ms`` is the arrival of the
    status line). Target: wrapped ≤ bare + 1 ms.

    ``capture_10mb``: a raw ASGI app streams 10,000 SSE events of 1 KiB (each a distinct bytes
    object, as a model makes them: 10,240,000 bytes) to one client. The server runs under
    ``tracemalloc``; before the request it resets the traced peak and the kernel's VmHWM
    (``/proc/self/clear_refs``); halfway through the stream (5 MiB read, the client pausing) a
    second connection reads the traced memory (``held_mid_stream``); after the stream the server
    flushes the ledger (the record is sealed and stored) and reports the traced peak and VmHWM (the
    peak is read before the handler reads the record back). ``writer_process_vm_hwm_extra_bytes``
    is the writer process's own high-water mark over the same span (it joins, decodes, serialises,
    seals and encodes the capture: several transient copies of up to the cap, off the server).
    Bare and wrapped servers run one after the other. ``*_extra_bytes`` are wrapped − bare; the
    capture cap is the middleware's default ``capture_limit`` (1 MiB for each body).
    ``pass_held`` judges what the middleware holds while the stream flows; ``pass`` judges the
    whole request's peak, including building, serialising and sealing the record: the strict
    reading of "holds at most the capture cap". Both allow ``allowed_extra_bytes`` = cap + 5% +
    64 KiB (the kept chunks are ~1,000 bytes objects of 33 bytes' overhead each, in a list).

Every ``pass`` flag compares with the issue's targets; the top-level ``pass`` is all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _machine import git_state, python_loop_ns  # noqa: E402 - beside this script

ROOT = Path(__file__).resolve().parent.parent

TARGET_ADDED_US = 60.0
TARGET_OTEL_RATIO = 0.3
TARGET_TRIVIAL_4W_RATIO = 0.7  # trivial endpoint, uvicorn --workers 4
TARGET_SLEEP_RATIO = 0.97
TARGET_TTFB_ADDED_MS = 1.0
CAPTURE_CAP = 1 << 20
CAP_SLACK = 0.05  # Python's per-object overhead of ~1,000 kept chunks (33 B each) and their list.
CAP_SLACK_BYTES = 64 << 10
API_KEYS = 100
ROUTE = "/v1/chat/completions"

REQUEST_BODY = json.dumps({
    "model": "toy-1",
    "messages": [{"role": "user", "content": "What does the ledger keep, and for how long?"}],
}, separators=(",", ":")).encode()

COMPLETION_BODY = json.dumps({
    "id": "chatcmpl-0193b2c4a1b2", "object": "chat.completion", "created": 1764331200, "model": "toy-1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "It keeps evidence for six months."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
}, separators=(",", ":")).encode()

STREAM_REQUEST_BODY = json.dumps({
    "model": "toy-1", "stream": True,
    "messages": [{"role": "user", "content": "Say hello"}],
}, separators=(",", ":")).encode()

_START = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def _quiet_structlog() -> None:
    """Send structlog output (the ledger's and the middleware's errors only) to stderr."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def _percentile(ordered: Any, fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _us(ns: float) -> float:
    return round(ns / 1000, 2)


# -- 1. in process ----------------------------------------------------------------------------


def _raw_app() -> Callable[..., Any]:
    """The trivial AI endpoint: read the request body, answer a ~200-byte chat.completion."""
    length = str(len(COMPLETION_BODY)).encode()
    body = COMPLETION_BODY

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", length)]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app


def _header_sets() -> list[list[tuple[bytes, bytes]]]:
    """Request headers as the official OpenAI client sends them, one set per API key."""
    return [[
        (b"host", b"127.0.0.1:8000"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
        (b"accept", b"application/json"),
        (b"content-type", b"application/json"),
        (b"user-agent", b"OpenAI/Python 1.54.0"),
        (b"authorization", b"Bearer sk-bench-%04d-0123456789abcdef" % i),
        (b"content-length", str(len(REQUEST_BODY)).encode()),
    ] for i in range(API_KEYS)]


def _scope_template() -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": ROUTE, "raw_path": ROUTE.encode(), "root_path": "",
            "query_string": b"", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}


def _otel_app(app: Any) -> tuple[Any, Any, dict[str, Any]] | None:
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class NullExporter(SpanExporter):
        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Any) -> Any:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    exporter = NullExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    info = {
        "instrumentation": "opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware, default settings",
        "tracer_provider": "opentelemetry.sdk TracerProvider, SimpleSpanProcessor, exporter dropping spans",
        "meter_provider": "none set (API no-op)",
        "versions": {name: _version(name) for name in (
            "opentelemetry-instrumentation-asgi", "opentelemetry-sdk", "opentelemetry-api")},
    }
    return OpenTelemetryMiddleware(app, tracer_provider=provider), exporter, info


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _anonymous_headers() -> list[tuple[bytes, bytes]]:
    """A new person's first request: a browser's headers, no API key, no cookie."""
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"accept", b"application/json"),
        (b"content-type", b"application/json"),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
        (b"content-length", str(len(REQUEST_BODY)).encode()),
    ]


async def _check_responses(variants: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """One request through each variant: the wrapped ones must disclose, the others must not; a new
    person must get a cookie."""
    seen: dict[str, Any] = {}
    for name, variant in variants.items():
        if variant["app"] is None:
            continue
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": REQUEST_BODY, "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        await variant["app"]({**template, "headers": variant["headers"][0]}, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        names = {k.lower() for k, _ in start["headers"]}
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        seen[name] = {"status": start["status"], "disclosed": b"ai-disclosure" in names,
                      "cookie_set": b"set-cookie" in names,
                      "response_bytes": len(body), "notice_field": b'"ai_disclosure"' in body}
        wrapped = name.startswith("ours")
        if start["status"] != 200 or seen[name]["disclosed"] != wrapped or (
                seen[name]["cookie_set"] != (name == "ours_new_person")):
            raise RuntimeError(f"the {name} variant answered unexpectedly: {seen[name]}")
    return seen


async def _block(app: Any, n: int, template: dict[str, Any], headers: list[Any],
                 flush: Callable[[], Any] | None, writer_pid: int | None = None) -> dict[str, Any]:
    """``n`` requests through ``app``, each timed; the block timed as a whole (ending with ``flush``)."""
    perf, tcpu, pcpu = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    walls, cpus = array("q"), array("q")
    keys = len(headers)
    request = {"type": "http.request", "body": REQUEST_BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return dict(request)

    async def send(message: Any) -> None:
        return None

    w0 = _process_cpu_ns(writer_pid)
    p0, c0, t0 = pcpu(), tcpu(), perf()
    for i in range(n):
        scope = {**template, "headers": headers[i % keys]}
        a = perf()
        b = tcpu()
        await app(scope, receive, send)
        c = tcpu()
        d = perf()
        walls.append(d - a)
        cpus.append(c - b)
    if flush is not None:
        flush()
    t1, c1, p1 = perf(), tcpu(), pcpu()
    writer = _process_cpu_ns(writer_pid) - w0
    return {"walls": walls, "cpus": cpus, "wall": t1 - t0, "thread_cpu": c1 - c0, "process_cpu": p1 - p0,
            "machine_cpu": p1 - p0 + writer, "writer": writer}


def _submit_block(ledger: Any, records: list[dict[str, Any]], writer_pid: int | None) -> dict[str, Any]:
    """``Ledger.submit`` of every record (each call timed), then ``flush``: the same figures as a block."""
    perf, tcpu, pcpu = time.perf_counter_ns, time.thread_time_ns, time.process_time_ns
    walls, cpus = array("q"), array("q")
    submit = ledger.submit
    w0 = _process_cpu_ns(writer_pid)
    p0, c0, t0 = pcpu(), tcpu(), perf()
    for record in records:
        a = perf()
        b = tcpu()
        submit(record)
        c = tcpu()
        d = perf()
        walls.append(d - a)
        cpus.append(c - b)
    ledger.flush()
    t1, c1, p1 = perf(), tcpu(), pcpu()
    writer = _process_cpu_ns(writer_pid) - w0
    return {"walls": walls, "cpus": cpus, "wall": t1 - t0, "thread_cpu": c1 - c0, "process_cpu": p1 - p0,
            "machine_cpu": p1 - p0 + writer, "writer": writer}


def _similar_records(captured: list[tuple[Any, tuple[Any, ...]]], n: int) -> list[dict[str, Any]]:
    """``n`` interaction records built by the middleware's own record factory from the arguments it
    handed the ledger for real requests, each with a fresh interaction id: what a caller of
    ``submit`` would queue for the same requests."""
    from aiobligations.interaction import uuid7_text

    built = [factory(*args) for factory, args in captured]
    return [{**built[i % len(built)], "interaction_id": uuid7_text()} for i in range(n)]


def bench_in_process(tmp: Path, rounds: int, block: int, warmup: int) -> dict[str, Any]:
    from aiobligations.middleware import ObligationsMiddleware

    from aiobligations import Obligations
    from aiobligations.keys import init_project

    bare = _raw_app()
    obligations = Obligations.from_file(init_project(tmp / "in-process"))
    try:
        ledger = obligations.ledger
        writer_pid = getattr(ledger, "writer_pid", None)
        ours = ObligationsMiddleware(bare, obligations=obligations)
        template, headers = _scope_template(), _header_sets()
        variants: dict[str, dict[str, Any]] = {
            "bare": {"app": bare, "headers": headers, "flush": None, "writer_pid": None},
            "ours": {"app": ours, "headers": headers, "flush": ledger.flush, "writer_pid": writer_pid},
            "ours_new_person": {"app": ours, "headers": [_anonymous_headers()], "flush": ledger.flush,
                                "writer_pid": writer_pid},
        }
        otel = _otel_app(bare)
        otel_info: dict[str, Any] | None = None
        exporter = None
        if otel is not None:
            app, exporter, otel_info = otel
            variants["otel"] = {"app": app, "headers": headers, "flush": None, "writer_pid": None}
        else:
            progress("opentelemetry-instrumentation-asgi is not installed: no OpenTelemetry comparison")
        variants["submit_similar"] = {"app": None, "headers": headers, "flush": ledger.flush, "writer_pid": writer_pid}

        # What the middleware hands the ledger for real requests (record factory and arguments),
        # caught during the warm-up, to build the same records for a plain submit.
        captured: list[tuple[Any, tuple[Any, ...]]] = []
        submit_deferred = obligations.submit_deferred

        def catch(factory: Any, args: tuple[Any, ...]) -> None:
            if len(captured) < API_KEYS:
                captured.append((factory, args))
            submit_deferred(factory, args)

        async def run_block(name: str, n: int, timed_writer: bool) -> dict[str, Any]:
            variant = variants[name]
            pid = variant["writer_pid"] if timed_writer else None
            if variant["app"] is None:
                records = _similar_records(captured, n)
                gc.collect()
                return _submit_block(ledger, records, pid)
            gc.collect()
            return await _block(variant["app"], n, template, variant["headers"], variant["flush"], pid)

        async def main() -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
            checked = await _check_responses(variants, template)
            obligations.submit_deferred = catch  # type: ignore[method-assign]
            try:
                await run_block("ours", warmup, False)
            finally:
                del obligations.submit_deferred
            for name in variants:
                await run_block(name, warmup, False)
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            names = list(variants)
            for r in range(rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    results[name].append(await run_block(name, block, True))
                if r == 0 or (r + 1) % 5 == 0 or r + 1 == rounds:
                    means = {n: results[n][-1]["machine_cpu"] / block / 1000 for n in names}
                    progress(f"  round {r + 1}/{rounds}: machine CPU per request "
                             + ", ".join(f"{n} {v:.1f} us" for n, v in means.items())
                             + f"; load {os.getloadavg()[0]:.2f}")
            return checked, results

        progress(f"in process: {rounds} rounds of {block} requests per variant ({', '.join(variants)})")
        size0 = ledger.flush()
        checked, results = asyncio.run(main())
        records = ledger.flush() - size0
    finally:
        obligations.close()

    total = rounds * block
    per_variant = {name: _variant_figures(results[name], block) for name in results}
    out: dict[str, Any] = {
        "app": f"raw ASGI app: POST {ROUTE}, {len(REQUEST_BODY)}-byte request body read, "
               f"{len(COMPLETION_BODY)}-byte application/json chat.completion answered",
        "request_bytes": len(REQUEST_BODY),
        "response_bytes": len(COMPLETION_BODY),
        "response_bytes_wrapped": checked["ours"]["response_bytes"],
        "subjects": API_KEYS,
        "rounds": rounds,
        "block": block,
        "requests_per_variant": total,
        "ledger_records_written": records,
        "check": checked,
        **{name: per_variant.get(name) for name in ("bare", "ours", "ours_new_person", "otel", "submit_similar")},
        "otel_setup": otel_info,
        "otel_spans_exported": exporter.spans if exporter is not None else None,
    }
    out["ours_added"] = _added(results["ours"], results["bare"], block)
    out["ours_new_person_added"] = _added(results["ours_new_person"], results["bare"], block)
    out["otel_added"] = _added(results["otel"], results["bare"], block) if "otel" in results else None
    ours_added = out["ours_added"]["checked"]
    otel_added = out["otel_added"]["checked"] if out["otel_added"] else None
    out["ours_added_us_median"] = ours_added["us"]
    out["ours_added_basis"] = ours_added["basis"]
    out["ours_added_thread_cpu_us_median"] = out["ours_added"]["thread_cpu_us"]["p50"]
    out["ours_new_person_added_us_median"] = out["ours_new_person_added"]["checked"]["us"]
    out["otel_added_us_median"] = otel_added["us"] if otel_added else None
    out["otel_added_basis"] = otel_added["basis"] if otel_added else None
    out["ratio"] = round(ours_added["us"] / otel_added["us"], 3) if otel_added and otel_added["us"] > 0 else None
    out["ratio_new_person"] = (round(out["ours_new_person_added_us_median"] / otel_added["us"], 3)
                               if otel_added and otel_added["us"] > 0 else None)
    out["writer_process_cpu_us_per_record"] = {
        "interaction_record_from_the_middleware": per_variant["ours"]["writer_process_cpu_us_per_record"],
        "interaction_record_of_a_new_person": per_variant["ours_new_person"]["writer_process_cpu_us_per_record"],
        "plain_submit_of_a_similar_record": per_variant["submit_similar"]["writer_process_cpu_us_per_record"],
        "note": "the middleware's records are built in the writer (submit_deferred: the record factory, "
                "its JSON, then sealing); a plain submit arrives as JSON already (Ledger.submit prepares it "
                "in the caller, whose CPU is in submit_similar.block_process_cpu_us_per_request)",
    }
    out["target_added_us"] = TARGET_ADDED_US
    out["target_ratio"] = TARGET_OTEL_RATIO
    out["pass_added"] = ours_added["us"] <= TARGET_ADDED_US
    out["pass_ratio"] = out["ratio"] is not None and out["ratio"] <= TARGET_OTEL_RATIO
    out["pass"] = out["pass_ratio"]
    expected = 2 * total + total  # ours, a new person, and the plain submits
    if records < expected:
        out["pass"] = False
        out["error"] = f"only {records} ledger records for {expected} timed requests and submits"
    progress(f"  ours +{ours_added['us']:.1f} us ({ours_added['basis']}), new person "
             f"+{out['ours_new_person_added_us_median']:.1f} us, "
             + (f"OTel +{otel_added['us']:.1f} us, ratio {out['ratio']}" if otel_added else "no OTel"))
    return out


def _variant_figures(blocks: list[dict[str, Any]], block: int) -> dict[str, Any]:
    walls = sorted(v for b in blocks for v in b["walls"])
    cpus = sorted(v for b in blocks for v in b["cpus"])
    return {
        "wall_us": {p: _us(_percentile(walls, f)) for p, f in (("p50", .5), ("p90", .9), ("p99", .99))},
        "thread_cpu_us": {p: _us(_percentile(cpus, f)) for p, f in (("p50", .5), ("p90", .9), ("p99", .99))},
        "block_wall_us_per_request": _us(statistics.median(b["wall"] for b in blocks) / block),
        "block_thread_cpu_us_per_request": _us(statistics.median(b["thread_cpu"] for b in blocks) / block),
        "block_process_cpu_us_per_request": _us(statistics.median(b["process_cpu"] for b in blocks) / block),
        "block_machine_cpu_us_per_request": _us(statistics.median(b["machine_cpu"] for b in blocks) / block),
        "writer_process_cpu_us_per_record": _us(statistics.median(b["writer"] for b in blocks) / block),
    }


def _added(variant: list[dict[str, Any]], bare: list[dict[str, Any]], block: int) -> dict[str, Any]:
    """What a variant adds to bare: percentile differences, and per-round block differences."""
    figures: dict[str, Any] = {}
    for key in ("walls", "cpus"):
        mine = sorted(v for b in variant for v in b[key])
        base = sorted(v for b in bare for v in b[key])
        figures["wall_us" if key == "walls" else "thread_cpu_us"] = {
            p: _us(_percentile(mine, f) - _percentile(base, f)) for p, f in (("p50", .5), ("p90", .9), ("p99", .99))
        }
    per_round = {
        "block_wall_incl_flush_us": [(v["wall"] - b["wall"]) / block for v, b in zip(variant, bare)],
        "block_process_cpu_us": [(v["process_cpu"] - b["process_cpu"]) / block for v, b in zip(variant, bare)],
        "block_thread_cpu_us": [(v["thread_cpu"] - b["thread_cpu"]) / block for v, b in zip(variant, bare)],
        "block_machine_cpu_us": [(v["machine_cpu"] - b["machine_cpu"]) / block for v, b in zip(variant, bare)],
    }
    for key, values in per_round.items():
        figures[key] = _us(statistics.median(values))
        figures[key + "_rounds_min_max"] = [_us(min(values)), _us(max(values))]
    others = [((v["process_cpu"] - v["thread_cpu"]) - (b["process_cpu"] - b["thread_cpu"])) / block
              for v, b in zip(variant, bare)]
    figures["other_threads_cpu_us"] = _us(statistics.median(others))
    figures["checked"] = {"us": figures["block_machine_cpu_us"], "basis": "block_machine_cpu_us"}
    return figures


# -- servers ----------------------------------------------------------------------------------

_SERVER = r'''
"""A benchmark server: one ASGI app (chosen by BENCH_KIND), optionally wrapped, served by uvicorn."""
import asyncio, gc, json, os, resource, sys, threading, time

if os.environ.get("BENCH_CPU"):
    os.sched_setaffinity(0, {int(os.environ["BENCH_CPU"])})
if os.environ.get("BENCH_TRACEMALLOC") == "1":
    import tracemalloc
    tracemalloc.start()
else:
    tracemalloc = None

import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
import uvicorn

KIND = os.environ["BENCH_KIND"]
WRAP = os.environ["BENCH_WRAP"] == "1"
COMPLETION = os.environ["BENCH_COMPLETION"].encode()
CHUNKS = int(os.environ.get("BENCH_CHUNKS", "10000"))
CHUNK_BYTES = int(os.environ.get("BENCH_CHUNK_BYTES", "1024"))
obligations = None


async def read_body(receive):
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(COMPLETION)).encode())]


async def trivial(scope, receive, send):
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200, "headers": list(JSON_HEADERS)})
    await send({"type": "http.response.body", "body": COMPLETION, "more_body": False})


async def sleepy(scope, receive, send):
    await read_body(receive)
    await asyncio.sleep(0.02)
    await send({"type": "http.response.start", "status": 200, "headers": list(JSON_HEADERS)})
    await send({"type": "http.response.body", "body": COMPLETION, "more_body": False})


async def big(scope, receive, send):
    await read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
    for i in range(CHUNKS):
        head = b"data: %08d " % i
        # A new bytes object for every event, as a model makes them.
        chunk = head + b"x" * (CHUNK_BYTES - len(head) - 2) + b"\n\n"
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def thread_cpu():
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        out[name] = round(out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick, 3)
    return out


def process_cpu(pid):
    """CPU seconds of every thread of another process (the ledger's writer process)."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / tick


def pin_process(pid, cpu):
    """Pin every thread of ``pid`` to ``cpu`` (sched_setaffinity on a pid moves one thread only)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def status_kb(field, pid="self"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])


async def bench(scope, receive, send):
    await read_body(receive)
    path = scope["path"]
    info = {}
    if path == "/__bench/reset":
        gc.collect()
        if tracemalloc:
            tracemalloc.reset_peak()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            info["hwm_reset"] = True
        except OSError:
            info["hwm_reset"] = False
        pid = getattr(obligations.ledger, "writer_pid", None) if obligations is not None else None
        if pid is not None:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
    if path in ("/__bench/flush", "/__bench/last") and obligations is not None:
        t0 = time.perf_counter()
        info["ledger_size"] = obligations.ledger.flush()
        info["flush_s"] = time.perf_counter() - t0
        if tracemalloc:
            # The peak of serving and recording, before this handler reads the record back.
            info["traced_current"], info["traced_peak"] = tracemalloc.get_traced_memory()
        if path == "/__bench/last" and info["ledger_size"]:
            record = obligations.ledger.read(info["ledger_size"] - 1)
            personal = record.get("personal") or {}
            response = personal.get("response") or {}
            stored = obligations.ledger._store.get_record(info["ledger_size"] - 1)
            info["last_record"] = {
                "kind": record.get("kind"), "outcome": record.get("outcome"),
                "response_bytes": record.get("response_bytes"), "truncated": personal.get("truncated"),
                "capture_limit": personal.get("capture_limit"),
                "captured_response_chars": len(response.get("text", response.get("base64", ""))),
                "stored_record_bytes": len(stored[2]) if stored else None,
            }
        gc.collect()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info["cpu_s"] = usage.ru_utime + usage.ru_stime
    info["threads_cpu_s"] = thread_cpu()
    pid = getattr(obligations.ledger, "writer_pid", None) if obligations is not None else None
    info["pid"] = os.getpid()
    info["writer_pid"] = pid
    if pid is not None:
        info["writer_process_cpu_s"] = process_cpu(pid)
        info["writer_vm_hwm_kb"] = status_kb("VmHWM", pid)
        info["writer_vm_rss_kb"] = status_kb("VmRSS", pid)
    info["vm_rss_kb"] = status_kb("VmRSS")
    info["vm_hwm_kb"] = status_kb("VmHWM")
    if tracemalloc and "traced_peak" not in info:
        info["traced_current"], info["traced_peak"] = tracemalloc.get_traced_memory()
    body = json.dumps(info).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def build_app():
    """The served app; wrapped, it opens the project's ledger (a peer of the shared writer process)."""
    global obligations
    if KIND == "trivial":
        inner = trivial
    elif KIND == "sleep":
        inner = sleepy
    elif KIND == "big":
        inner = big
    else:
        from aiobligations.demo import build_app as demo_app
        inner = demo_app(stream_delay=float(os.environ.get("BENCH_STREAM_DELAY", "0.002")))

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/__bench/"):
            await bench(scope, receive, send)
            return
        await inner(scope, receive, send)

    if not WRAP:
        return app
    from aiobligations import Obligations
    from aiobligations.middleware import ObligationsMiddleware
    obligations = Obligations.from_file(os.environ["BENCH_CONFIG"])
    writer_pid = getattr(obligations.ledger, "writer_pid", None)
    if writer_pid is not None and os.environ.get("BENCH_WRITER_CPU"):
        pin_process(writer_pid, int(os.environ["BENCH_WRITER_CPU"]))
    return ObligationsMiddleware(app, obligations=obligations)


WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
OPTIONS = dict(host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning", access_log=False,
               lifespan="off", http=os.environ["BENCH_HTTP"], loop=os.environ["BENCH_LOOP"], backlog=2048)

if __name__ == "__main__":
    if WRAP:
        from aiobligations.keys import init_project
        os.environ["BENCH_CONFIG"] = str(init_project(os.environ["BENCH_PROJECT"]))
    if WORKERS > 1:
        # uvicorn --workers N: each worker imports this module as bench_server and builds its own
        # app (and its own peer of the one shared writer process); this process only supervises.
        uvicorn.run("bench_server:app", workers=WORKERS, **OPTIONS)
    else:
        app = build_app()
        try:
            uvicorn.Server(uvicorn.Config(app, **OPTIONS)).run()
        finally:
            if obligations is not None:
                obligations.close()
elif __name__ == "bench_server":
    app = build_app()
'''


def _descendants(root: int) -> list[int]:
    """``root`` and every process descending from it (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _process_cpu_ns(pid: int | None, field: int = 0) -> int:
    """CPU time of every thread of a process, from ``schedstat`` (nanoseconds); 0 if it is gone.

    ``field=1``: the time its threads were runnable but waited for a CPU instead.
    """
    if pid is None:
        return 0
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[field])
    return total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One uvicorn server process serving ``kind``, bare or wrapped; stopped on exit, always."""

    def __init__(self, tmp: Path, kind: str, wrap: bool, opts: dict[str, Any], *, tracemalloc: bool = False,
                 extra_env: dict[str, str] | None = None) -> None:
        self.kind, self.wrap = kind, wrap
        self.port = _free_port()
        self.workers = opts.get("workers", 1)
        tag = f"{kind}-{'wrapped' if wrap else 'bare'}-{self.port}"
        self.log = tmp / f"server-{tag}.log"
        self.db = tmp / f"project-{tag}" / "ledger.db" if wrap else None
        env = dict(os.environ, BENCH_KIND=kind, BENCH_WRAP="1" if wrap else "0", BENCH_PORT=str(self.port),
                   BENCH_COMPLETION=COMPLETION_BODY.decode(), BENCH_PROJECT=str(tmp / f"project-{tag}"),
                   BENCH_HTTP=opts["http"], BENCH_LOOP=opts["loop"], PYTHONDONTWRITEBYTECODE="1",
                   BENCH_TRACEMALLOC="1" if tracemalloc else "0", BENCH_WORKERS=str(self.workers),
                   **(extra_env or {}))
        if opts["server_cpu"] is not None:
            env["BENCH_CPU"] = str(opts["server_cpu"])
        if opts.get("writer_cpu") is not None:
            env["BENCH_WRITER_CPU"] = str(opts["writer_cpu"])
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([sys.executable, str(tmp / "bench_server.py")], cwd=str(tmp), env=env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.kind} server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            if self.workers == 1 or len(_descendants(self.process.pid)) > self.workers:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the {self.kind} server did not start in {timeout} s:\n{self.tail()}")

    def server_pids(self) -> list[int]:
        """The server's processes: uvicorn (the supervisor, with workers) and its descendants,
        but not the ledger's writer process (a descendant too, as the child of the worker that
        started it)."""
        pids = _descendants(self.process.pid)
        # With --workers, the supervisor also has a multiprocessing resource tracker: not a worker,
        # and idle.
        return [pid for pid in pids if pid != self.writer_pid]

    @property
    def writer_pid(self) -> int | None:
        if not self.wrap:
            return None
        if getattr(self, "_writer_pid", None) is None:
            self._writer_pid = self.get("/__bench/stats").get("writer_pid")
        return self._writer_pid

    def cpu_ns(self) -> dict[str, int]:
        """CPU nanoseconds so far: every server process (all threads), and the writer process; and
        the time they spent runnable, waiting for a CPU (``*_wait``)."""
        pids = self.server_pids()
        writer = self.writer_pid
        return {"server": sum(_process_cpu_ns(pid) for pid in pids), "writer": _process_cpu_ns(writer),
                "server_wait": sum(_process_cpu_ns(pid, 1) for pid in pids), "writer_wait": _process_cpu_ns(writer, 1)}

    def ledger_size(self, at_least: int = 0, settle: float = 0.3, timeout: float = 30.0) -> int | None:
        """Records stored in the wrapped server's ledger (read from the database: with several
        workers each has records of its own in flight), once there are ``at_least`` and the count
        has stopped changing for ``settle`` seconds (a busy writer's batch can take longer than
        that, hence ``at_least``), or ``timeout`` seconds have passed."""
        if self.db is None:
            return None
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while True:
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
            try:
                count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
            finally:
                conn.close()
            now = time.monotonic()
            if count != last:
                last, since = count, now
            elif (count >= at_least and now - since >= settle) or now > deadline:
                return count
            time.sleep(0.05)

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 60.0) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
        return json.loads(data)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            # The session may have left helpers behind; make sure the group is gone.
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.returncode not in (0, -signal.SIGTERM, None):
            progress(f"  note: the {self.kind} server exited with {self.process.returncode}")


@contextlib.contextmanager
def servers(*made: Callable[[], Server]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for make in made:
            started.append(make())
        yield started
    finally:
        for server in started:
            server.stop()


def _probe(port: int, path: str, body: bytes) -> dict[str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                        "Authorization": "Bearer sk-bench-probe"})
        response = conn.getresponse()
        response.read()
        return {k.lower(): v for k, v in response.getheaders()} | {":status": str(response.status)}
    finally:
        conn.close()


# -- load generation --------------------------------------------------------------------------

_WRK_SCRIPT = r'''
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-load-0123456789abcdef"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests": %%d, "duration_s": %%.6f, "bytes": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, ' ..
    '"latency_ms": {"p50": %%.3f, "p90": %%.3f, "p99": %%.3f, "max": %%.3f, "mean": %%.3f}}\n',
    summary.requests, summary.duration / 1e6, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
end
'''

_PY_LOAD = r'''
import asyncio, json, os, sys, time
args = json.loads(sys.stdin.read())
body = args["body"].encode()
request = (f"POST {args['path']} HTTP/1.1\r\nHost: 127.0.0.1:{args['port']}\r\n"
           "Content-Type: application/json\r\nAuthorization: Bearer sk-bench-load-0123456789abcdef\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
latencies, errors = [], {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
count = [0]


async def one(deadline):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", args["port"])
    except OSError:
        errors["connect"] += 1
        return
    try:
        while time.perf_counter() < deadline and count[0] < args["max_requests"]:
            count[0] += 1
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            if not lines[0].split(b" ")[1].startswith(b"2"):
                errors["status"] += 1
            fields = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
            fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
            if b"content-length" in fields:
                await reader.readexactly(int(fields[b"content-length"]))
            else:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            latencies.append(time.perf_counter() - t0)
    except (OSError, asyncio.IncompleteReadError):
        errors["read"] += 1
    finally:
        writer.close()


async def main():
    deadline = time.perf_counter() + args["duration"]
    started = time.perf_counter()
    await asyncio.gather(*(one(deadline) for _ in range(args["connections"])))
    return time.perf_counter() - started

seconds = asyncio.run(main())
latencies.sort()
def pct(f):
    return latencies[min(len(latencies), max(1, int(-(-f * len(latencies) // 1)))) - 1] * 1e3 if latencies else None
print("WRK_JSON " + json.dumps({"requests": len(latencies), "duration_s": seconds, "bytes": None, "errors": errors,
      "latency_ms": {"p50": pct(.5), "p90": pct(.9), "p99": pct(.99), "max": latencies[-1] * 1e3 if latencies else None,
                     "mean": sum(latencies) / len(latencies) * 1e3 if latencies else None}}))
'''


def _load(tool: str, tmp: Path, port: int, duration: float, connections: int, max_requests: int) -> dict[str, Any]:
    """Run the load generator against ``port`` (inherits this process's CPU affinity)."""
    if tool == "wrk":
        script = tmp / "post.lua"
        if not script.exists():
            script.write_text(_WRK_SCRIPT % {"body": REQUEST_BODY.decode()})
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                   "-s", str(script), f"http://127.0.0.1:{port}{ROUTE}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    else:
        payload = {"port": port, "path": ROUTE, "body": REQUEST_BODY.decode(), "duration": duration,
                   "connections": connections, "max_requests": max_requests}
        done = subprocess.run([sys.executable, "-c", _PY_LOAD], input=json.dumps(payload), capture_output=True,
                              text=True, timeout=duration + 60, check=False)
    found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"the load generator failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(found.group(1))
    result["rate"] = result["requests"] / result["duration_s"]
    return result


def _load_tool(choice: str) -> str:
    if choice == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if choice == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--load wrk: wrk is not installed (Debian: apt-get install wrk)")
    return choice


# -- 2. through uvicorn -----------------------------------------------------------------------


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """Run the block (and the load generators it starts) on ``cpus`` (``None``: leave as is)."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def bench_uvicorn(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "server": "uvicorn, access log off, lifespan off; raw ASGI app in its own process (with --workers 4: "
                  "four worker processes under uvicorn's supervisor, one shared ledger writer process)",
        "http_impl": opts["http"], "loop_impl": opts["loop"],
        "load_generator": ("wrk -t1 (keep-alive), POST with a Lua script" if opts["load"] == "wrk"
                           else "Python asyncio raw-socket HTTP/1.1 keep-alive client, one process"),
        "connections": opts["connections"], "duration_s": opts["duration"], "runs": opts["runs"],
        "pinning": opts["pinning"],
        "pinning_4_workers": "none: the four workers, the writer process and the load generator share every core",
    }
    one = {**opts, "workers": 1}
    four = {**opts, "workers": 4, "server_cpu": None, "writer_cpu": None}
    every_cpu = set(os.sched_getaffinity(0)) | ({opts["server_cpu"]} if opts["server_cpu"] is not None else set())
    endpoints = [("trivial", "trivial", None, one),
                 ("sleep", "sleep_20ms", TARGET_SLEEP_RATIO, one),
                 ("trivial", "trivial_4_workers", TARGET_TRIVIAL_4W_RATIO, four),
                 ("sleep", "sleep_20ms_4_workers", TARGET_SLEEP_RATIO, four)]
    if opts["server_cpu"] is not None and opts["writer_on_server_core"]:
        # Context, not a target: the ledger's writer process squeezed onto the server's own core.
        endpoints.append(("trivial", "trivial_writer_on_server_core", None,
                          {**one, "writer_cpu": opts["server_cpu"]}))
    endpoints = [endpoint for endpoint in endpoints if endpoint[1] not in opts["skip"]]
    for kind, name, target, server_opts in endpoints:
        workers = server_opts["workers"]
        progress(f"uvicorn: {name}, {workers} worker{'s' if workers > 1 else ''}, bare vs wrapped, "
                 f"{opts['runs']} runs of {opts['duration']} s each")
        # One worker: the load generator stays on its own core (this process's affinity, set by
        # main). Four workers: everything floats over every core.
        with _affinity(every_cpu if workers > 1 else None), \
                servers(lambda kind=kind, server_opts=server_opts: Server(tmp, kind, False, server_opts),
                        lambda kind=kind, server_opts=server_opts: Server(tmp, kind, True, server_opts)) \
                as (bare, wrapped):
            out[name] = _compare_servers(tmp, bare, wrapped, opts, target)
    out["ratios"] = {name: out[name]["ratio"] for _, name, _, _ in endpoints}
    out["pass"] = all(out[name]["pass"] for _, name, target, _ in endpoints if target is not None)
    return out


def _compare_servers(tmp: Path, bare: Server, wrapped: Server, opts: dict[str, Any],
                     target: float | None) -> dict[str, Any]:
    probes = {"bare": _probe(bare.port, ROUTE, REQUEST_BODY), "wrapped": _probe(wrapped.port, ROUTE, REQUEST_BODY)}
    if "ai-disclosure" not in probes["wrapped"] or "ai-disclosure" in probes["bare"]:
        raise RuntimeError(f"unexpected probe answers: {probes}")
    cap = opts["max_requests"]
    warm = 1.0 if bare.workers == 1 else 2.0  # Every worker serves, and joins the writer, before timing.
    for server in (bare, wrapped):  # Warm-up: untimed.
        warmed = _load(opts["load"], tmp, server.port, warm, opts["connections"], cap)
    wrapped.ledger_size(at_least=warmed["requests"])
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "wrapped": []}
    for r in range(opts["runs"]):
        order = [("bare", bare), ("wrapped", wrapped)]
        if r % 2:
            order.reverse()
        for label, server in order:
            detail = server.workers == 1  # One process: the server can tell its threads' CPU apart.
            before = server.get("/__bench/flush") if detail else None
            size0 = server.ledger_size()
            cpu0 = server.cpu_ns()
            load0 = os.getloadavg()[0]
            result = _load(opts["load"], tmp, server.port, opts["duration"], opts["connections"], cap)
            flush_started = time.perf_counter()
            after = server.get("/__bench/flush") if detail else None
            # Once every record of the run is stored: at least one per response.
            size1 = server.ledger_size(at_least=(size0 or 0) + result["requests"])
            settled_s = time.perf_counter() - flush_started
            cpu1 = server.cpu_ns()
            requests = max(1, result["requests"])
            errors = sum(result["errors"].values())
            run: dict[str, Any] = {
                "rate": round(result["rate"], 1),
                "requests": result["requests"],
                "latency_ms": {k: (round(v, 3) if v is not None else None) for k, v in result["latency_ms"].items()},
                "errors": errors,
                "server_cpu_us_per_request": round((cpu1["server"] - cpu0["server"]) / requests / 1000, 1),
                "server_runqueue_wait_us_per_request": round(
                    (cpu1["server_wait"] - cpu0["server_wait"]) / requests / 1000, 1),
                "load_average_1m": round(load0, 2),
            }
            if before is not None and after is not None:
                run["server_threads_cpu_us_per_request"] = {
                    name: round((cpu - before["threads_cpu_s"].get(name, 0.0)) / requests * 1e6, 1)
                    for name, cpu in after["threads_cpu_s"].items()}
            if label == "wrapped":
                records = (size1 or 0) - (size0 or 0)
                run["records_per_response"] = round(records / requests, 4)
                run["writer_process_cpu_us_per_record"] = round((cpu1["writer"] - cpu0["writer"]) / max(1, records) / 1000, 1)
                run["writer_runqueue_wait_us_per_record"] = round(
                    (cpu1["writer_wait"] - cpu0["writer_wait"]) / max(1, records) / 1000, 1)
                run["machine_cpu_us_per_request"] = round(
                    (cpu1["server"] - cpu0["server"] + cpu1["writer"] - cpu0["writer"]) / requests / 1000, 1)
                run["stored_within_s"] = round(settled_s, 2)
                if after is not None:
                    run["flush_ms"] = round(after["flush_s"] * 1000, 1)
            runs[label].append(run)
            progress(f"  {label:8s} {result['rate']:9,.0f} req/s  p50 {result['latency_ms']['p50']:.2f} ms"
                     f"  server CPU {run['server_cpu_us_per_request']:.0f} us/req"
                     + (f"  writer {run['writer_process_cpu_us_per_record']:.0f} us/record" if label == "wrapped" else "")
                     + f"  waiting for a CPU {run['server_runqueue_wait_us_per_request']:.0f} us/req  load {load0:.2f}")
    bare_rate = statistics.median(r["rate"] for r in runs["bare"])
    wrapped_rate = statistics.median(r["rate"] for r in runs["wrapped"])
    ratio = wrapped_rate / bare_rate
    cpu = {label: statistics.median(r["server_cpu_us_per_request"] for r in rs) for label, rs in runs.items()}
    clean = all(r["errors"] == 0 for rs in runs.values() for r in rs)
    recorded = all(r["records_per_response"] >= 1.0 for r in runs["wrapped"])
    writer = statistics.median(r["writer_process_cpu_us_per_record"] for r in runs["wrapped"])
    return {
        "workers": bare.workers,
        "bare_rps_median": round(bare_rate, 1),
        "wrapped_rps_median": round(wrapped_rate, 1),
        "ratio": round(ratio, 4),
        "ratio_per_run": [round(w["rate"] / b["rate"], 3) for b, w in zip(runs["bare"], runs["wrapped"])],
        "target_ratio": target,
        "bare_latency_ms_p50_median": round(statistics.median(r["latency_ms"]["p50"] for r in runs["bare"]), 3),
        "wrapped_latency_ms_p50_median": round(statistics.median(r["latency_ms"]["p50"] for r in runs["wrapped"]), 3),
        "server_cpu_us_per_request_median": {label: round(v, 1) for label, v in cpu.items()},
        "added_server_cpu_us_per_request": round(cpu["wrapped"] - cpu["bare"], 1),
        "writer_process_cpu_us_per_record_median": round(writer, 1),
        "added_machine_cpu_us_per_request": round(cpu["wrapped"] + writer - cpu["bare"], 1),
        "no_errors": clean,
        "every_response_recorded": recorded,
        "runs": runs,
        "pass": (ratio >= target if target is not None else True) and clean and recorded,
    }


def _median_or_none(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


# -- 3. streaming -----------------------------------------------------------------------------


def _stream_request(port: int, body: bytes, extra: str = "") -> bytes:
    return (f"POST {ROUTE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nAuthorization: Bearer sk-bench-stream-0123456789abcdef\r\n"
            f"{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


def _ttfb_once(sock: socket.socket, request: bytes) -> tuple[float, float]:
    """Send one streamed request on a keep-alive socket; return (status line, first data:) seconds."""
    perf = time.perf_counter
    sock.sendall(request)
    t0 = perf()
    buf = b""
    t_head = t_data = None
    while True:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the server closed the connection mid-response")
        now = perf()
        buf += data
        if t_head is None:
            t_head = now
        if t_data is None:
            split = buf.find(b"\r\n\r\n")
            if split >= 0 and b"data:" in buf[split:]:
                t_data = now
                if not buf.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected answer: {buf[:200]!r}")
                if b"transfer-encoding: chunked" not in buf[:split].lower():
                    raise RuntimeError("the stream is not chunked")
        if t_data is not None and buf.endswith(b"\r\n0\r\n\r\n"):
            return t_head - t0, t_data - t0


def bench_ttfb(tmp: Path, opts: dict[str, Any], requests: int) -> dict[str, Any]:
    progress(f"streaming: time to first chunk, demo chat stream, {requests} requests each, alternating")
    extra = {"BENCH_STREAM_DELAY": "0.002"}
    with servers(lambda: Server(tmp, "demo", False, opts, extra_env=extra),
                 lambda: Server(tmp, "demo", True, opts, extra_env=extra)) as (bare, wrapped):
        socks = {}
        try:
            for label, server in (("bare", bare), ("wrapped", wrapped)):
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks[label] = (sock, _stream_request(server.port, STREAM_REQUEST_BODY))
            times: dict[str, list[tuple[float, float]]] = {"bare": [], "wrapped": []}
            for i in range(requests + 5):
                order = ["bare", "wrapped"] if i % 2 == 0 else ["wrapped", "bare"]
                for label in order:
                    measured = _ttfb_once(*socks[label])
                    if i >= 5:
                        times[label].append(measured)
        finally:
            for sock, _ in socks.values():
                sock.close()
        size = wrapped.get("/__bench/flush")["ledger_size"]
    med = {label: (statistics.median(h for h, _ in ts) * 1e3, statistics.median(d for _, d in ts) * 1e3)
           for label, ts in times.items()}
    p90 = {label: _percentile(sorted(d for _, d in ts), 0.9) * 1e3 for label, ts in times.items()}
    added = med["wrapped"][1] - med["bare"][1]
    return {
        "app": "aiobligations.demo.build_app(stream_delay=0.002), POST /v1/chat/completions stream=true",
        "connection": "one keep-alive connection per server, requests sequential, bare and wrapped alternating",
        "measured": "request's last byte written -> first 'data:' event received (headers: status line received)",
        "requests_each": requests,
        "ttfb_bare_ms": round(med["bare"][1], 3),
        "ttfb_wrapped_ms": round(med["wrapped"][1], 3),
        "ttfb_added_ms": round(added, 3),
        "ttfb_bare_p90_ms": round(p90["bare"], 3),
        "ttfb_wrapped_p90_ms": round(p90["wrapped"], 3),
        "headers_bare_ms": round(med["bare"][0], 3),
        "headers_wrapped_ms": round(med["wrapped"][0], 3),
        "wrapped_ledger_records": size,
        "target_added_ms": TARGET_TTFB_ADDED_MS,
        "pass": added <= TARGET_TTFB_ADDED_MS and size >= requests + 5,
    }


def _big_stream(server: Server, pause_at: int) -> dict[str, Any]:
    """Read the whole 10 MB stream; at ``pause_at`` body bytes, sample the server's memory."""
    reset = server.get("/__bench/reset")
    sock = socket.create_connection(("127.0.0.1", server.port))
    mid: dict[str, Any] | None = None
    total = 0
    tail = b""
    started = time.perf_counter()
    try:
        sock.sendall(_stream_request(server.port, REQUEST_BODY))
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("closed before the headers")
            head += data
        split = head.index(b"\r\n\r\n") + 4
        first, tail = head[:split], head[split:]
        if not first.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {first[:200]!r}")
        total = len(tail)
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            if mid is None and total >= pause_at:
                time.sleep(0.2)  # Let the server fill the socket and block on its send.
                mid = server.get("/__bench/stats")
            data = sock.recv(1 << 20)
            if not data:
                raise RuntimeError("closed mid-stream")
            total += len(data)
            tail = (tail + data)[-16:]
    finally:
        sock.close()
    seconds = time.perf_counter() - started
    end = server.get("/__bench/last" if server.wrap else "/__bench/flush")
    assert mid is not None
    return {"reset": reset, "mid": mid, "end": end, "wire_bytes": total, "seconds": seconds}


def bench_capture(tmp: Path, opts: dict[str, Any], chunks: int, chunk_bytes: int) -> dict[str, Any]:
    size = chunks * chunk_bytes
    progress(f"streaming: capture of a {size / 1e6:.1f} MB stream ({chunks} x {chunk_bytes} B), bare then wrapped")
    extra = {"BENCH_CHUNKS": str(chunks), "BENCH_CHUNK_BYTES": str(chunk_bytes)}
    runs = {}
    for label, wrap in (("bare", False), ("wrapped", True)):
        with servers(lambda wrap=wrap: Server(tmp, "big", wrap, opts, tracemalloc=True, extra_env=extra)) as (server,):
            runs[label] = _big_stream(server, size // 2)
        r = runs[label]
        base = r["reset"]["traced_current"]
        progress(f"  {label:8s} traced peak +{(r['end']['traced_peak'] - base) / 2**20:.2f} MiB, "
                 f"mid-stream +{(r['mid']['traced_current'] - base) / 2**20:.2f} MiB, "
                 f"{r['seconds']:.2f} s")

    def figures(r: dict[str, Any]) -> dict[str, Any]:
        base = r["reset"]["traced_current"]
        return {
            "traced_held_mid_stream_bytes": r["mid"]["traced_current"] - base,
            "traced_peak_bytes": r["end"]["traced_peak"] - base,
            "vm_hwm_extra_bytes": (r["end"]["vm_hwm_kb"] - r["reset"]["vm_rss_kb"]) * 1024
            if r["reset"].get("hwm_reset") else None,
            "wire_bytes": r["wire_bytes"],
            "stream_s": round(r["seconds"], 3),
        }

    bare, wrapped = figures(runs["bare"]), figures(runs["wrapped"])
    held = wrapped["traced_held_mid_stream_bytes"] - bare["traced_held_mid_stream_bytes"]
    peak = wrapped["traced_peak_bytes"] - bare["traced_peak_bytes"]
    hwm = (wrapped["vm_hwm_extra_bytes"] - bare["vm_hwm_extra_bytes"]
           if wrapped["vm_hwm_extra_bytes"] is not None and bare["vm_hwm_extra_bytes"] is not None else None)
    limit = CAPTURE_CAP * (1 + CAP_SLACK) + CAP_SLACK_BYTES
    last = runs["wrapped"]["end"].get("last_record", {})
    return {
        "app": f"raw ASGI SSE: {chunks} events of {chunk_bytes} bytes, each a new bytes object",
        "response_bytes": size,
        "capture_cap_bytes": CAPTURE_CAP,
        "allowed_extra_bytes": int(limit),
        "memory": "tracemalloc in the server (Python allocations); VmHWM after /proc/self/clear_refs (all memory)",
        "bare": bare,
        "wrapped": wrapped,
        "held_mid_stream_extra_bytes": held,
        "peak_extra_bytes": peak,
        "peak_extra_over_cap": round(peak / CAPTURE_CAP, 2),
        "vm_hwm_extra_bytes": hwm,
        "writer_process_vm_hwm_extra_bytes": (
            (runs["wrapped"]["end"]["writer_vm_hwm_kb"] - runs["wrapped"]["reset"]["writer_vm_rss_kb"]) * 1024
            if runs["wrapped"]["end"].get("writer_vm_hwm_kb") and runs["wrapped"]["reset"].get("writer_vm_rss_kb")
            else None),
        "record": last,
        "pass_held": held <= limit,
        "pass": peak <= limit and held <= limit,
    }


# -- the machine ------------------------------------------------------------------------------


def machine(tmp: Path, opts: dict[str, Any]) -> dict[str, Any]:
    cpu_model = mem_mb = fs = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    with contextlib.suppress(OSError):
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(tmp).startswith(mount) and len(mount) > len(best):
                best, fs = mount, f"{kind} on {mount}"
    digest = hashlib.sha256()
    for folder in (ROOT / "middleware", ROOT / "aiobligations" / "ledger"):
        for source in sorted(folder.glob("*.py")):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    wrk = None
    if opts["load"] == "wrk":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10,
                                 check=False).stdout.split("\n")[0]
    cpus = os.cpu_count()
    return {
        "cpu_count": cpus,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cores_shared": "server and load generator share this machine's cores" + (
            f"; pinned: server CPU {opts['server_cpu']}, load generator and clients CPU {opts['client_cpu']}"
            if opts["server_cpu"] is not None else "; not pinned"),
        "cpu_model": cpu_model,
        "memory_mb": mem_mb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "uvicorn", "starlette", "h11", "httptools", "uvloop", "opentelemetry-sdk",
            "opentelemetry-instrumentation-asgi", "cryptography")},
        "wrk": wrk,
        "tmp_filesystem": fs,
        "gil_switch_interval_s": sys.getswitchinterval(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python_loop_ns": python_loop_ns(),
        **git_state(),
        "middleware_and_ledger_source_sha256": digest.hexdigest()[:16],
    }


# -- main -------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 20; quick 4)")
    parser.add_argument("--block", type=int, help="in-process requests per variant per round (default 2000; quick 500)")
    parser.add_argument("--runs", type=int, help="uvicorn runs of each server (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per uvicorn run (default 5; quick 2)")
    parser.add_argument("--max-requests", type=int, default=50_000,
                        help="per second of a run, the most requests the Python load generator sends "
                             "(wrk is bounded by --duration; default 50000)")
    parser.add_argument("--writer-on-server-core", action="store_true",
                        help="also run the trivial comparison with the writer process on the server's core (context)")
    parser.add_argument("--connections", type=int, default=64, help="load generator connections (default 64)")
    parser.add_argument("--ttfb-requests", type=int, help="streamed requests to each server (default 100; quick 20)")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk if installed (auto), or the Python client")
    parser.add_argument("--http", default="auto", choices=("auto", "h11", "httptools"), help="uvicorn --http")
    parser.add_argument("--loop", default="auto", choices=("auto", "asyncio", "uvloop"), help="uvicorn --loop")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the load generator")
    parser.add_argument("--skip", default="",
                        help="comma-separated parts to skip: in_process, uvicorn, streaming, or one uvicorn "
                             "comparison: trivial, sleep_20ms, trivial_4_workers, sleep_20ms_4_workers")
    parser.add_argument("--tmp", default="/tmp", help="where the temporary folder goes")
    args = parser.parse_args(argv)
    quick = args.quick
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    http_impl = args.http if args.http != "auto" else ("httptools" if importlib.util.find_spec("httptools") else "h11")
    loop_impl = args.loop if args.loop != "auto" else ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    usable = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(usable) >= 2
    opts: dict[str, Any] = {
        "http": http_impl, "loop": loop_impl, "load": _load_tool(args.load),
        "connections": args.connections,
        "runs": max(1, args.runs or (1 if quick else 3)),
        "duration": args.duration or (2.0 if quick else 5.0),
        "server_cpu": usable[0] if pin else None,
        "client_cpu": usable[1] if pin else None,
        "writer_cpu": usable[1] if pin else None,
        "writer_on_server_core": args.writer_on_server_core,
        "skip": skip,
    }
    opts["max_requests"] = int(args.max_requests * opts["duration"]) + 10_000
    opts["pinning"] = (f"server process on CPU {opts['server_cpu']}; load generator, this process and the "
                       f"ledger's writer process on CPU {opts['client_cpu']} (trivial_writer_on_server_core: "
                       f"the writer process on CPU {opts['server_cpu']} with the server)" if pin else "none")
    rounds = max(1, args.rounds or (4 if quick else 20))
    block = max(10, args.block or (500 if quick else 2000))
    ttfb_requests = max(1, args.ttfb_requests or (20 if quick else 100))

    signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_structlog()
    tmp = Path(tempfile.mkdtemp(prefix="aiobligations-bench-middleware-", dir=args.tmp))
    started = time.perf_counter()
    try:
        (tmp / "bench_server.py").write_text(_SERVER)
        result: dict[str, Any] = {
            "benchmark": "middleware",
            "mode": "quick" if quick else "full",
            "machine": machine(tmp, opts),
        }
        checks = []
        if "in_process" not in skip:
            result["in_process"] = bench_in_process(tmp, rounds, block, warmup=max(200, block // 4))
            checks.append(result["in_process"]["pass"])
            gc.collect()
        if pin:
            os.sched_setaffinity(0, {opts["client_cpu"]})
        try:
            if "uvicorn" not in skip:
                result["uvicorn"] = bench_uvicorn(tmp, opts)
                checks.append(result["uvicorn"]["pass"])
            if "streaming" not in skip:
                streaming = bench_ttfb(tmp, opts, ttfb_requests)
                streaming["capture_10mb"] = bench_capture(tmp, opts, 10_000, 1024)
                streaming["pass_ttfb"] = streaming["pass"]
                streaming["pass"] = streaming["pass_ttfb"] and streaming["capture_10mb"]["pass"]
                result["streaming"] = streaming
                checks.append(streaming["pass"])
        finally:
            if pin:
                os.sched_setaffinity(0, set(usable))
        result["pass"] = bool(checks) and all(checks)
        result["total_s"] = round(time.perf_counter() - started, 1)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
