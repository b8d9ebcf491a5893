"""``ObligationsMiddleware``: disclosure and evidence on every AI interaction, as pure ASGI.

Everything about one request lives in locals of :meth:`ObligationsMiddleware.__call__`, never on
``self``. Disclosure headers go out with ``http.response.start`` at once; event streams pass chunk by
chunk, teed into a bounded capture; only JSON and HTML bodies that get a notice are held until
complete (they are small, and their ``Content-Length`` must be fixed). The interaction closes into
one ``interaction`` record handed to ``ledger.submit``: the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import hashlib
import json
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import structlog

from aiobligations.adapters.otel import annotate_span, current_span_if_recording, current_trace_ids
from aiobligations.controls import Halt
from aiobligations.disclosure.header import ascii_safe, disclosure_header
from aiobligations.errors import ConfigurationError, LabelError, LedgerClosed
from aiobligations.interaction import _current as _current_interaction
from aiobligations.interaction import uuid7_text
from aiobligations.obligations import Obligations
from aiobligations.sharedstate import FirstContacts, shared_state_of

from aiobligations.records import InteractionRecord, find_string_field, find_usage, interaction_record
from aiobligations.requests.calendar import warn_if_next_year_uncovered

from .capture import BodyCapture
from .policy import Route, RoutePolicy
from .types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ObligationsMiddleware"]

Identity = Callable[[Scope], "str | None"]

log = structlog.get_logger("aiobligations.middleware")

CONFIG_ENV = "AIOBLIGATIONS_CONFIG"
"""The profile the middleware loads when it is given no ``obligations`` (vLLM's ``--middleware``)."""

_PASS, _JSON, _HTML, _SSE, _MEDIA = range(5)
_SHARED: dict[str, Obligations] = {}
_BODY_TAG = re.compile(rb"<body\b[^>]*>", re.I)
_HEAD_TAG = re.compile(rb"<head\b[^>]*>", re.I)
_FAILURE_POLICIES = ("fail_open", "fail_closed")
_HTML_LOOKAHEAD = 64 << 10
_MODEL_SNIFF = 64 << 10  # Request bytes read for its model when the route captures nothing.
_NOTICE_MODES = (_JSON, _HTML, _SSE)
_MODEL_HEADER = b"openai-model"


def _default_obligations() -> Obligations:
    """One hub per process for middleware built without arguments (vLLM ``--middleware``).

    Nobody else holds this hub, so it is closed (the ledger flushed) when the process exits.
    """
    path = os.environ.get(CONFIG_ENV, "aiobligations.toml")
    if path not in _SHARED:
        hub = _SHARED[path] = Obligations.from_file(path)
        atexit.register(hub.close)
    return _SHARED[path]


class ObligationsMiddleware:
    """Wrap an ASGI app so that every AI response discloses AI and leaves evidence in the ledger.

    Operators can take AI routes over (Art. 52(4)) or suspend them during a security incident
    (Art. 37) from any process of the service (see :mod:`aiobligations.controls`): the covered
    requests then go to a human fallback path of the app, or get 503 ``service_taken_over`` with
    ``Retry-After``. Each middleware follows the controls from a thread of its process; the request
    path only reads their current snapshot.

    Example:
        >>> app = ObligationsMiddleware(app, obligations=Obligations.from_file("aiobligations.toml"))  # doctest: +SKIP

    Args:
        app: The ASGI application (FastAPI, Starlette, vLLM's OpenAI server…).
        obligations: The hub. Without it, the profile named by ``AIOBLIGATIONS_CONFIG`` (default
            ``./aiobligations.toml``) is loaded once per process, which is what
            ``vllm serve --middleware aiobligations.middleware.ObligationsMiddleware`` needs.
        policy: Which routes are AI routes and what happens on them.
        identity: ``identity(scope)`` names the person behind a request (your own user id), or
            returns ``None`` to fall back to a hash of the API key, then a first-party cookie.
        capture_limit: The most bytes of each request and response body kept as evidence.
        buffer_limit: The largest JSON or HTML body that is held to insert a notice; bigger ones
            pass unchanged (the headers still disclose).
        prefix: Where the middleware's own endpoints live (the ``/.well-known`` paths do not move).
        failure: ``"fail_open"`` (serve, and spool records the ledger cannot take, to replay them
            later) or ``"fail_closed"`` (answer 503 while the ledger cannot take records).

    Raises:
        ConfigurationError: an option is invalid, or the default profile cannot be loaded, or the
            shared-state file beside the ledger is unusable (see :mod:`aiobligations.sharedstate`).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 Takeover and suspension of AI routes (the operator controls).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        obligations: Obligations | None = None,
        policy: RoutePolicy | None = None,
        identity: Identity | None = None,
        capture_limit: int = 1 << 20,
        buffer_limit: int = 8 << 20,
        failure: Literal["fail_open", "fail_closed"] = "fail_open",
        prefix: str = "/ai",
    ) -> None:
        if failure not in _FAILURE_POLICIES:
            raise ConfigurationError(f"failure must be 'fail_open' or 'fail_closed', got {failure!r}")
        if capture_limit < 0 or buffer_limit < 0:
            raise ConfigurationError("capture_limit and buffer_limit must be >= 0")
        self.app = app
        self._owns_hub = obligations is None
        self.obligations = obligations if obligations is not None else _default_obligations()
        self.policy = policy or RoutePolicy()
        self._identity = identity
        self._capture_limit = capture_limit
        self._buffer_limit = buffer_limit
        self._failure = failure
        self._ledger = self.obligations.ledger
        from .endpoints import Endpoints  # Import here: endpoints import the disclosure package.

        self.endpoints = Endpoints(self.obligations, prefix=prefix, subject_of=self._known_subject)
        disclosure = self.endpoints.disclosure
        self._cookie = disclosure.cookie_name
        self._cookie_prefix = (self._cookie + "=").encode()
        self._notice = self.endpoints.short_notice
        self._noticed: OrderedDict[str, None] = OrderedDict()
        # Who got the long notice, for every worker process of the host (a file beside the ledger).
        shared_path, shared_secret = shared_state_of(self.obligations)
        self._first_contacts: FirstContacts | None
        try:
            self._first_contacts = FirstContacts(shared_path, shared_secret)
        except OSError as exc:
            self._first_contacts = None
            log.warning("shared_state_unavailable", path=shared_path, part="first_contacts",
                        error=exc.strerror or type(exc).__name__, fallback="per_process")
        self._link_header = (b"link", b'</.well-known/ai-transparency>; rel="describedby"')
        # The JSON notice around its interaction id, rendered once (see Endpoints.json_notice_parts).
        self._notice_parts = {flag: self.endpoints.json_notice_parts(flag) for flag in (False, True)}
        # AI-Disclosure per model named: model -> (second, value of that second, value's prefix).
        self._dated: dict[str | None, tuple[int, bytes, bytes]] = {}
        self._default_model = self.obligations.profile.service.model or None
        # Every endpoint of ours lives under one of these; other paths skip the lookup.
        self._own_prefixes = (prefix.rstrip("/") + "/", "/.well-known/")
        self._fail_closed = failure == "fail_closed"
        # Incidents and the takeover switch: the request path reads one immutable snapshot; a
        # thread of this process follows the ledger (and is restarted in a forked worker).
        self._controls = self.endpoints.control_state
        self._controls.follow()
        self._retry_after = str(self._controls.settings.retry_after).encode()
        # The termination plan (Art. 50): from its end day AI routes answer 410; this process's
        # follower thread also shreds every subject on the deletion day (once, whichever process).
        self._termination = self.obligations.termination
        self._termination.follow()
        # The service's start-up: from 1 December, say so once when next year's holidays are unknown
        # (the hub itself stays quiet, so that a CLI command's error remains one line).
        warn_if_next_year_uncovered(self.obligations.calendar)

    def __repr__(self) -> str:
        return f"ObligationsMiddleware({self.app!r})"

    def _flush_on_shutdown(self, send: Send) -> Send:
        """Store every record before the server reports its shutdown complete.

        uvicorn and gunicorn's uvicorn worker end a worker by raising the stop signal again once
        the app has shut down, so ``atexit`` never runs there: the hub this middleware opened is
        closed here (and a hub the app passed in is flushed: the app closes it).
        """
        async def flushing(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                try:
                    if self._owns_hub:
                        await asyncio.to_thread(self.obligations.close)
                    else:
                        await asyncio.to_thread(self._ledger.flush, 30.0)
                except LedgerClosed:
                    pass  # The app's own shutdown closed its hub first.
                except Exception as exc:
                    log.error("ledger_flush_at_shutdown_failed", error=f"{type(exc).__name__}: {exc}")
            await send(message)

        return flushing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                send = self._flush_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(self._own_prefixes) and self.endpoints.handles(path):
            await self.endpoints(scope, receive, send)
            return
        route = self.policy.match(scope["method"], path)
        if route is None:
            await self.app(scope, receive, send)
            return
        if self._termination.plan is not None and self._termination.ended() is not None:
            await self._terminated(send)
            return
        snapshot = self._controls.snapshot
        if snapshot.halting:
            halt = snapshot.halt(path)
            if halt is not None:
                await self._halted(halt, scope, receive, send)
                return
        await self._interaction(route, scope, receive, send)

    async def _terminated(self, send: Send) -> None:
        """An AI route after the service's end (Art. 50): 410 Gone, pointing at the announcement."""
        plan = self._termination.plan
        url = self.endpoints.transparency_url
        end = plan.end.isoformat() if plan is not None else ""
        await self.endpoints.error(send, 410, "service_terminated",
                                   f"this AI service ended on {end}; the announcement is at {url}",
                                   extra=[(b"link", f'<{url}>; rel="alternate"; title="termination notice"'.encode()),
                                          (b"cache-control", b"no-store")])

    async def _halted(self, halt: Halt, scope: Scope, receive: Receive, send: Send) -> None:
        """An AI route while people have taken it over (Art. 52(4)) or an incident suspends it (Art. 37).

        With a fallback (the switch's, else the profile's ``[controls] fallback``) the request goes
        to the app at that path, unchanged otherwise: a human-staffed route that is no AI
        interaction. Without one, 503 with ``Retry-After``.
        """
        fallback = halt.fallback or self._controls.settings.fallback
        if fallback is not None and not fallback.startswith(self._own_prefixes):
            raw = fallback.encode("utf-8")
            await self.app({**scope, "path": fallback, "raw_path": raw}, receive, send)
            return
        extra = [(b"retry-after", self._retry_after), (b"cache-control", b"no-store")]
        if halt.incident is not None:
            url = self.endpoints.controls.incident_url(halt.incident.id)
            extra.append((b"link", f'<{url}>; rel="alternate"; title="incident notice"'.encode()))
            message = f"the AI service is suspended while a security incident is resolved; see {url}"
        else:
            message = "people have taken over this AI service for now; try again later"
        await self.endpoints.error(send, 503, "service_taken_over", message, extra=extra)

    # -- one AI interaction ------------------------------------------------------------------------

    async def _interaction(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        if self._fail_closed and not self._ledger.accepting:
            await self.endpoints.error(send, 503, "evidence_unavailable",
                                       "the service cannot record this interaction now; try again later")
            return
        interaction_id = uuid7_text()
        started = time.time()
        clock = time.perf_counter()
        subject, new_cookie = self._subject(scope)
        # Decided when the response starts, and only for one that will carry a body notice: an
        # error, a file or an empty answer never uses up the person's first contact.
        first_contact = False
        span = current_span_if_recording()
        if span is not None:
            annotate_span({"aiobligations.interaction_id": interaction_id,
                           "aiobligations.disclosure.mode": self.endpoints.disclosure.mode}, span)
        limit = self._capture_limit if route.capture else 0
        # Without capture, the start of the request is still read for the model it names.
        request_body = BodyCapture(limit or (_MODEL_SNIFF if route.disclose else 0))
        response_body = BodyCapture(limit)
        state: dict[str, Any] = {"status": None, "first_byte": None, "outcome": "completed", "mode": _PASS,
                                 "body_notice": "none", "done": False, "route": route, "labels": 0, "span": span,
                                 "request_done": False, "model": None}
        held: list[Any] = []  # [start message, body chunks...] while a JSON/HTML body is held.

        async def observe_receive() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                request_body.add(message.get("body", b""))
                if not message.get("more_body", False):
                    state["request_done"] = True
            elif kind == "http.disconnect" and not state["done"]:
                # Servers also send http.disconnect once a response is complete (uvicorn does, to
                # a streaming response still listening): only before that is it the client leaving.
                state["outcome"] = "disconnected"
            return message

        async def disclose_send(message: Message) -> None:
            nonlocal first_contact
            kind = message["type"]
            if kind == "http.response.start":
                status = state["status"] = message["status"]
                headers = list(message.get("headers", ()))
                mode = self._body_mode(route, scope["method"], status, headers)
                state["mode"] = mode
                if mode == _HTML:
                    state["lang"] = self.endpoints.language(scope)
                if status >= 400:
                    # An error (the app's) is no AI content: no AI-Disclosure, no notice, no first
                    # contact used up. The id still names its record.
                    state["model"] = find_string_field(request_body.value(), b"model")
                    if route.disclose:
                        headers.append((b"ai-interaction-id", interaction_id.encode()))
                else:
                    if route.disclose:
                        model = state["model"] = self._served_model(route, headers, request_body, state, scope)
                        headers.append((b"ai-disclosure", self._disclosure_value(model)))
                        headers.append((b"ai-interaction-id", interaction_id.encode()))
                        headers.append(self._link_header)
                    if route.body_notice and mode in _NOTICE_MODES:
                        first_contact = self._first_contact(subject, new_cookie)
                if new_cookie is not None:
                    headers.append((b"set-cookie", self._set_cookie(new_cookie, scope)))
                if mode == _SSE:
                    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                message = {**message, "headers": headers}
                if mode in (_JSON, _HTML, _MEDIA):
                    held.append(message)
                    return
                await send(message)
                return
            if kind != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not more:
                state["done"] = True
            if state["first_byte"] is None and body:
                state["first_byte"] = time.perf_counter()
            mode = state["mode"]
            if held:
                if (not more and len(held) == 1 and mode == _JSON and not route.text_label
                        and not (route.label and b'"b64_json"' in body)):
                    # The common case, a complete JSON answer in one message: the notice goes in here.
                    start = held.pop()
                    if route.body_notice:
                        body, noticed = self._json_notice(body, interaction_id, first_contact)
                        if noticed:
                            state["body_notice"] = "json-field"
                            _set_content_length(start["headers"], len(body))
                            message = {"type": "http.response.body", "body": body, "more_body": False}
                    response_body.add(body)
                    await send(start)
                    await send(message)
                    return
                held.append(body)
                if more and not self._ready(held, mode):
                    return
                await self._release_held(held, more, interaction_id, first_contact, state, response_body, send)
                held.clear()
                return
            if mode == _SSE and state["body_notice"] == "none":
                body = self._sse_notice(interaction_id, first_contact) + body
                state["body_notice"] = "sse-comment"
                message = {**message, "body": body}
            response_body.add(body)
            await send(message)

        token = _current_interaction.set(interaction_id)
        try:
            await self.app(scope, observe_receive, disclose_send)
        except BaseException as exc:
            state["outcome"] = "disconnected" if _is_disconnect(exc) else "error"
            state["error"] = type(exc).__name__
            raise
        finally:
            _current_interaction.reset(token)
            if held:
                state["outcome"] = state["outcome"] if state["outcome"] != "completed" else "error"
            self._record(route, scope, interaction_id, subject, first_contact, started, clock, state,
                         request_body, response_body)

    def _ready(self, held: list[Any], mode: int) -> bool:
        """Whether a body still arriving should be let go now.

        A JSON notice needs the whole object, so JSON is held up to ``buffer_limit``. A streamed
        HTML page is held only until its ``<body>`` tag has passed (or 64 KiB without one): the
        banner goes in, and the rest streams on.
        """
        size = sum(len(chunk) for chunk in held[1:])
        if mode == _HTML:
            return size > _HTML_LOOKAHEAD or _BODY_TAG.search(b"".join(held[1:])) is not None
        return size > self._buffer_limit

    async def _release_held(self, held: list[Any], more: bool, interaction_id: str, first_contact: bool,
                            state: dict[str, Any], response_body: BodyCapture, send: Send) -> None:
        """Send a held start and body, with the notice inserted where it can be.

        A complete body gets its ``Content-Length`` fixed. An HTML page still streaming loses its
        ``Content-Length`` (the server then chunks it). A JSON body that outgrew ``buffer_limit`` goes
        on unchanged.
        """
        start, chunks = held[0], held[1:]
        body = b"".join(chunks)
        inserted = False
        # Labelling draws, marks and signs: CPU work of tens of milliseconds per image, done on a
        # worker thread so the event loop keeps serving other requests meanwhile.
        if state["mode"] == _MEDIA and not more:
            body, inserted = await asyncio.to_thread(self._label_media, body, start, interaction_id, state)
        elif state["mode"] == _JSON and not more:
            if state["route"].label and b'"b64_json"' in body:
                body, labelled = await asyncio.to_thread(self._label_b64_images, body, interaction_id, state)
                inserted = labelled
            if state["route"].text_label:
                body, labelled = self._label_text(body, state)
                inserted = inserted or labelled
            if state["route"].body_notice:
                body, noticed = self._json_notice(body, interaction_id, first_contact)
                state["body_notice"] = "json-field" if noticed else "none"
                inserted = inserted or noticed
        elif state["mode"] == _HTML:
            body, inserted = self._html_notice(body, interaction_id, first_contact, state["lang"])
            state["body_notice"] = "html-banner" if inserted else "none"
        if inserted:
            _set_content_length(start["headers"], None if more else len(body))
        response_body.add(body)
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": more})

    # -- labels --------------------------------------------------------------------------------------

    def _label_media(self, body: bytes, start: Message, interaction_id: str,
                     state: dict[str, Any]) -> tuple[bytes, bool]:
        """Label a generated file served as it is (``image/*``, ``audio/*``, ``video/*``)."""
        media_type = None
        for key, value in start["headers"]:
            if key.lower() == b"content-type":
                media_type = value.decode("latin-1")
        try:
            labelled = self.obligations.label(body, media_type, interaction_id=interaction_id)
        except LabelError as exc:
            # An unlabelled file is still served (the headers disclose); the gap is on the record.
            state["label_error"] = str(exc)
            return body, False
        state["labels"] += 1
        return labelled, True

    def _label_text(self, body: bytes, state: dict[str, Any]) -> tuple[bytes, bool]:
        """Put the explicit text label into each chat completion's content."""
        if b'"choices"' not in body:
            return body, False
        from aiobligations.labels.explicit import label_chat_completion

        try:
            document = json.loads(body)
            count = label_chat_completion(document)
        except (ValueError, LabelError) as exc:
            state["label_error"] = f"{type(exc).__name__}: {exc}"
            return body, False
        if not count:
            return body, False
        state["labels"] += count
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(), True

    def _label_b64_images(self, body: bytes, interaction_id: str, state: dict[str, Any]) -> tuple[bytes, bool]:
        """Label the images of an OpenAI-compatible ``b64_json`` response, in place."""
        if b'"b64_json"' not in body:
            return body, False
        try:
            document = json.loads(body)
            items = document["data"]
            if not isinstance(items, list):
                return body, False
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
                    image = base64.b64decode(item["b64_json"], validate=True)
                    labelled = self.obligations.label(image, None, interaction_id=interaction_id)
                    item["b64_json"] = base64.b64encode(labelled).decode()
                    state["labels"] += 1
        except (ValueError, KeyError, TypeError, LabelError) as exc:
            state["label_error"] = f"{type(exc).__name__}: {exc}"
            return body, False
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode(), bool(state["labels"])

    # -- disclosure ----------------------------------------------------------------------------------

    def _body_mode(self, route: Route, method: str, status: int, headers: list[tuple[bytes, bytes]]) -> int:
        if method == "HEAD" or status in (204, 304) or not 200 <= status < 300:
            return _PASS
        content_type = b""
        for key, value in headers:
            lowered = key.lower()
            if lowered == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                return _PASS
            if lowered == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
        if route.label and content_type.startswith((b"image/", b"audio/", b"video/")):
            return _MEDIA
        if not route.body_notice:
            wants_json = route.label or route.text_label
            return _JSON if wants_json and content_type == b"application/json" else _PASS
        if content_type == b"text/event-stream":
            return _SSE
        if content_type == b"application/json" or content_type.endswith(b"+json"):
            return _JSON
        if content_type == b"text/html":
            return _HTML
        return _PASS

    def _sse_notice(self, interaction_id: str, first_contact: bool) -> bytes:
        lines = [f": {self._notice} ({interaction_id})"]
        if first_contact:
            lines.extend(f": {line}" for line in self.endpoints.first_contact_notice.splitlines() if line.strip())
        return ("\n".join(lines) + "\n\n").encode()

    def _json_notice(self, body: bytes, interaction_id: str, first_contact: bool) -> tuple[bytes, bool]:
        """Insert ``"ai_disclosure": {...}`` into a JSON object without re-serialising it."""
        stripped = body.rstrip()
        if not stripped.startswith(b"{") or not stripped.endswith(b"}") or b'"ai_disclosure"' in body:
            return body, False
        head, tail = self._notice_parts[first_contact]
        # Every member of a JSON object starts with a quoted key: without a quote it is empty.
        separator = b"," if stripped.find(b'"', 1) != -1 else b""
        return b"".join((stripped[:-1].rstrip(), separator, b'"ai_disclosure":', head, interaction_id.encode(),
                         tail, b"}")), True

    def _html_notice(self, body: bytes, interaction_id: str, first_contact: bool, lang: str) -> tuple[bytes, bool]:
        match = _BODY_TAG.search(body)
        if match is None:
            return body, False
        banner = self.endpoints.banner(interaction_id, first_contact, lang)
        body = body[: match.end()] + banner + body[match.end():]
        head = _HEAD_TAG.search(body)
        if head is not None:
            body = body[: head.end()] + self.endpoints.meta_tag + body[head.end():]
        return body, True

    # -- the model ------------------------------------------------------------------------------------

    def _served_model(self, route: Route, headers: list[tuple[bytes, bytes]], request_body: BodyCapture,
                      state: dict[str, Any], scope: Scope) -> str | None:
        """The model that serves this request, as far as is known when the response starts.

        In order: an ``OpenAI-Model`` header the app sets on its response, the request's JSON
        ``model`` member, the route's ``model``, and the profile's ``[service] model`` only when the
        whole request was seen and names no model (a request still unread, read past the capture
        limit, or not JSON, might name another one: then no model is named). The response body's
        own ``model`` comes after the headers; only the record can use it.
        """
        for key, value in headers:
            if key.lower() == _MODEL_HEADER and value.strip():
                return value.strip().decode("latin-1")[:200]
        model = find_string_field(request_body.value(), b"model")
        if model:
            return model[:200]
        if route.model:
            return route.model
        default = self._default_model
        if default is None or request_body.size != request_body.kept_bytes:
            return None
        content_type, has_body = b"", False
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                content_type = value.split(b";", 1)[0].strip().lower()
            elif key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
                has_body = True
        if not has_body and not request_body.size:
            return default
        if not state["request_done"]:
            return None
        if not request_body.size or content_type == b"application/json" or content_type.endswith(b"+json"):
            return default
        return None

    def _disclosure_value(self, model: str | None) -> bytes:
        """The ``AI-Disclosure`` value naming ``model``, dated now (made once a second per model)."""
        now = int(time.time())
        dated = self._dated
        cached = dated.get(model)
        if cached is not None and cached[0] == now:
            return cached[1]
        if cached is None:
            if len(dated) >= 256:  # Models come from requests: the table stays bounded.
                dated.clear()
            profile = self.obligations.profile
            settings = self.endpoints.disclosure
            extra: dict[str, Any] = {}
            if profile.service.filing_number:
                extra["filing"] = ascii_safe(profile.service.filing_number)
            if profile.service.licence_number:
                extra["licence"] = ascii_safe(profile.service.licence_number)
            prefix = disclosure_header(
                mode=settings.mode,
                provider=ascii_safe(profile.provider.name),
                model=ascii_safe(model) if model else None,
                extra=extra,
                form=settings.header_form,
            ).encode() + (b"; " if settings.header_form == ";" else b", ")
        else:
            prefix = cached[2]
        value = prefix + b"date=@%d" % now
        dated[model] = (now, value, prefix)
        return value

    # -- subjects ------------------------------------------------------------------------------------

    def _subject(self, scope: Scope) -> tuple[str, str | None]:
        """Who the interaction is with, and a new cookie value when one must be set."""
        if self._identity is not None:
            named = self._identity(scope)
            if named:
                return f"user:{named}", None
        cookie_value = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization" and value:
                # The key itself is a secret: only a digest of it names the subject.
                return "apikey:" + hashlib.sha256(value).hexdigest()[:32], None
            if key == b"cookie" and cookie_value is None:
                cookie_value = self._read_cookie(value)
        if cookie_value:
            return f"cookie:{cookie_value}", None
        fresh = secrets.token_urlsafe(18)
        return f"cookie:{fresh}", fresh

    def _known_subject(self, scope: Scope) -> str | None:
        """The subject a request identifies, or ``None``: never a fresh cookie."""
        subject, fresh = self._subject(scope)
        return None if fresh is not None else subject

    def _read_cookie(self, header: bytes) -> str | None:
        for part in header.split(b";"):
            part = part.strip()
            if part.startswith(self._cookie_prefix):
                value = part[len(self._cookie_prefix):].decode("latin-1")
                if 16 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
                    return value
        return None

    def _set_cookie(self, value: str, scope: Scope) -> bytes:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return f"{self._cookie}={value}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}".encode()

    def _first_contact(self, subject: str, new_cookie: str | None) -> bool:
        """Whether this subject gets the full notice: the first AI response the host gives them.

        Every worker process of the host shares the marks (:class:`~aiobligations.sharedstate.FirstContacts`),
        or, when the shared file could not be made, this process keeps its own. A reboot, or a mark
        evicted from a full table, forgets, so a person may see the full notice once more:
        over-disclosing is safe. A brand-new cookie is always a first contact.
        """
        contacts = self._first_contacts
        if contacts is not None:
            first = contacts.first(subject)  # Marks it, also for a new cookie's next request.
            return first or new_cookie is not None
        noticed = self._noticed
        if subject in noticed:
            noticed.move_to_end(subject)
            return False
        noticed[subject] = None
        if len(noticed) > 100_000:
            noticed.popitem(last=False)
        return True

    # -- evidence ------------------------------------------------------------------------------------

    def _record(self, route: Route, scope: Scope, interaction_id: str, subject: str, first_contact: bool,
                started: float, clock: float, state: dict[str, Any], request_body: BodyCapture,
                response_body: BodyCapture) -> None:
        """Close the interaction and hand it to the ledger; never raises.

        The request path only gathers plain values: the record's dict, the fields found in the
        bodies and its JSON are built from an :class:`~aiobligations.records.InteractionRecord` by
        :func:`~aiobligations.records.interaction_record`
        on the ledger's side (in its writer process by default), off this event loop.
        """
        try:
            now = time.perf_counter()
            first_byte = state["first_byte"]
            labels = state["labels"]
            label_error = state.get("label_error")
            span = state["span"]
            if span is not None:
                request = request_body.value()
                model = find_string_field(request, b"model")
                usage = find_usage(response_body.value())
                annotate_span({"gen_ai.request.model": model[:200] if model else None,
                               "gen_ai.usage.input_tokens": usage.get("input_tokens"),
                               "gen_ai.usage.output_tokens": usage.get("output_tokens")}, span)
            trace_id, span_id = current_trace_ids() if span is not None else _NO_TRACE
            limit = self._capture_limit if route.capture else 0
            record = InteractionRecord(
                "http", interaction_id, state["outcome"], started, now - clock, subject, state.get("error"),
                route=scope["path"],
                method=scope["method"],
                status=state["status"],
                first_byte=None if first_byte is None else first_byte - clock,
                header_disclosed=route.disclose and state["status"] is not None and state["status"] < 400,
                body_notice=state["body_notice"],
                first_contact=first_contact,
                document_version=self.endpoints.document_version,
                request_bytes=request_body.size,
                response_bytes=response_body.size,
                labels_applied=labels if (labels or label_error is not None) else None,
                label_error=label_error,
                trace_id=trace_id,
                span_id=span_id,
                capture=route.capture,
                request_chunks=request_body.kept if limit else (),
                response_chunks=response_body.kept,
                capture_limit=self._capture_limit,
                truncated=(request_body.size > (request_body.kept_bytes if limit else 0)
                           or response_body.size > response_body.kept_bytes),
                model=state["model"],
            )
            self.obligations.submit_deferred(interaction_record, record)
        except Exception as exc:  # pragma: no cover - evidence must never break the response.
            log.error("interaction_record_failed", error=f"{type(exc).__name__}: {exc}",
                      interaction_id=interaction_id)


_NO_TRACE = (None, None)


def _set_content_length(headers: list[tuple[bytes, bytes]], length: int | None) -> None:
    """Replace a held response's ``Content-Length`` in place (the list is the middleware's own copy).

    ``None`` drops it: a body still streaming is then chunked by the server.
    """
    for position in range(len(headers) - 1, -1, -1):
        if headers[position][0].lower() == b"content-length":
            del headers[position]
    if length is not None:
        headers.append((b"content-length", b"%d" % length))


def _is_disconnect(exc: BaseException) -> bool:
    name = type(exc).__name__
    return name in ("ClientDisconnect", "ClientDisconnected", "CancelledError", "OSError")
