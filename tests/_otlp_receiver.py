"""A real OTLP/HTTP logs receiver on loopback, for the exporter's tests (tests/test_otlp.py).

It accepts ``POST /v1/logs`` with a protobuf ``ExportLogsServiceRequest`` (gzip or deflate
encoded, or not), keeps every raw body as received and every decoded log record, and can be told
to answer 503, to hang, or to stop listening (so that connections are refused) for a while.
Everything waits on a condition variable; nothing sleeps.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)


def any_value(value: Any) -> Any:
    """A protobuf ``AnyValue`` as a Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


@dataclass
class Received:
    """One decoded log record, with its resource's and scope's attributes."""

    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int
    severity_number: int
    severity_text: str
    trace_id: bytes
    span_id: bytes

    @property
    def index(self) -> int:
        return int(self.attributes["aiobligations.index"])


class Receiver:
    """The collector stand-in. ``mode`` is ``"ok"`` (200), ``"unavailable"`` (503) or ``"hang"``
    (hold the request until :meth:`release`, then 503)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.bodies: list[bytes] = []  # Raw request bodies, as they came over the wire.
        self.plain: list[bytes] = []  # The same, decompressed.
        self.headers: list[dict[str, str]] = []
        self.records: list[Received] = []
        self.attempts = 0
        self.hanging = 0
        self.mode = "ok"
        self.fail_from: int | None = None  # From this attempt on (1 is the first), answer 503.
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/logs"

    # -- control ---------------------------------------------------------------------------------

    def listen(self) -> None:
        """Accept connections (again, on the same port)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name.
                receiver._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def refuse(self) -> None:
        """Stop listening: new connections are refused until :meth:`listen`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def set_mode(self, mode: str) -> None:
        with self.changed:
            self.mode = mode
            if mode != "hang":
                self._release.set()
            else:
                self._release.clear()
            self.changed.notify_all()

    def release(self) -> None:
        """Let hanging requests answer (503)."""
        self._release.set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a request arrives); ``False`` on timeout."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def indices(self) -> list[int]:
        with self.changed:
            return [record.index for record in self.records]

    def close(self) -> None:
        self._release.set()
        self.refuse()

    # -- serving ---------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if request.path != "/v1/logs":
            request.send_error(404)
            return
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        encoding = (request.headers.get("Content-Encoding") or "").lower()
        plain = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw) if encoding == "deflate" else raw
        with self.changed:
            self.attempts += 1
            self.bodies.append(raw)
            self.plain.append(plain)
            self.headers.append({key.lower(): value for key, value in request.headers.items()})
            mode = self.mode
            if self.fail_from is not None and self.attempts >= self.fail_from:
                mode = "unavailable"
            if mode == "hang":
                self.hanging += 1
            self.changed.notify_all()
        if mode == "hang":
            self._release.wait(180)  # A watchdog: tests release it long before.
            mode = "unavailable"
        if mode == "unavailable":
            self._answer(request, 503, b"")
            return
        message = ExportLogsServiceRequest()
        message.ParseFromString(plain)
        decoded = []
        for resource_logs in message.resource_logs:
            resource = {kv.key: any_value(kv.value) for kv in resource_logs.resource.attributes}
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    decoded.append(Received(
                        body=any_value(record.body),
                        attributes={kv.key: any_value(kv.value) for kv in record.attributes},
                        resource=resource, scope=scope_logs.scope.name, time_unix_nano=record.time_unix_nano,
                        severity_number=record.severity_number, severity_text=record.severity_text,
                        trace_id=record.trace_id, span_id=record.span_id))
        with self.changed:
            self.records.extend(decoded)
            self.changed.notify_all()
        self._answer(request, 200, ExportLogsServiceResponse().SerializeToString())

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Type", "application/x-protobuf")
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # The exporter gave up waiting (its timeout) and closed the connection.
