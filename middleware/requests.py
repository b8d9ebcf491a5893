"""The Art. 39 endpoints: ask for an explanation, read it, complain; general and IP complaints.

Only the subject of an interaction may ask about it or read the answer. The subject comes from the
request's identity (the app's identity hook, a digest of the API key, or the first-party cookie),
never from the body. An unknown id and someone else's id get the same 404, so ids cannot be probed.
The desk writes every step to the ledger, so its calls run on a worker thread.

Operators work the queue under ``{prefix}/operator/…`` with ``Authorization: Bearer <token>``; the
tokens come from an environment variable (see :func:`load_operator_tokens`), never from the profile
file, and only their SHA-256 digests are kept. The subject's POSTs are rate limited per subject and
per client address (token buckets in memory, or shared by every worker process of the host in the
file beside the ledger, see :mod:`aiobligations.sharedstate`); over a limit the answer is 429 with
``Retry-After``.

This module routes; its parts live beside it: operator tokens in :mod:`.operators`, the buckets'
shapes and the in-process limiter in :mod:`.ratelimits`, what a request looks like to its subject
and to operators in :mod:`.views` (all re-exported here, where they used to be).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import structlog

from aiobligations.errors import ConfigurationError, LedgerBroken, LedgerError
from aiobligations.replicastate import PostgresRateLimiter, acquire_all_postgres
from aiobligations.requests.workflow import (
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RequestDesk,
)
from aiobligations.sharedstate import SharedRateLimiter, acquire_all

from .operators import MIN_TOKEN_LENGTH, OPERATOR_TOKENS_ENV, load_operator_tokens, token_digest
from .ratelimits import (
    DEFAULT_ADDRESS_LIMIT,
    DEFAULT_GLOBAL_LIMIT,
    DEFAULT_SUBJECT_LIMIT,
    GLOBAL_KEY,
    RateLimit,
    RateLimiter,
)
from .types import Receive, Scope, Send
from .views import complaint_view, iso, operator_request_view, request_view

__all__ = [
    "DEFAULT_ADDRESS_LIMIT",
    "DEFAULT_GLOBAL_LIMIT",
    "DEFAULT_SUBJECT_LIMIT",
    "MAX_BODY",
    "MIN_TOKEN_LENGTH",
    "OPERATOR_TOKENS_ENV",
    "REMIND_EVERY",
    "EvidenceAlarm",
    "RateLimit",
    "RateLimiter",
    "RequestEndpoints",
    "complaint_view",
    "is_json_media_type",
    "load_operator_tokens",
    "operator_request_view",
    "request_view",
    "token_digest",
]

log = structlog.get_logger("aiobligations.middleware.requests")


REMIND_EVERY = 3600.0
"""Seconds between two runs of the desk's reminders (due soon, overdue), triggered by requests."""

MAX_BODY = 64 << 10
"""The largest request body these endpoints read; larger ones get 413."""

_NOT_FOUND = (404, "not_found", "no such request of yours")


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


class EvidenceAlarm:
    """
    Raised the first time a request meets ledger evidence that does not read or verify (an altered row).

    The first break is logged once, at error level, as ``ledger_break_detected`` with the record's
    index and what did not match (no subject, no id of a person); later ones only count. Operators
    see the state on ``GET {prefix}/health`` (``"evidence": "break_detected"``) and should run
    ``aiobligations verify``. One alarm per middleware (one per process in a normal deployment).
    Thread-safe.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self.breaks = 0
        self.first_index: int | None = None
        self._lock = threading.Lock()

    @property
    def raised(self) -> bool:
        """Whether a break has been met."""
        return self.breaks > 0

    def report(self, index: int | None, reason: str) -> None:
        """Count one break; log it when it is the first."""
        with self._lock:
            self.breaks += 1
            first = self.breaks == 1
            if first:
                self.first_index = index
        if first:
            log.error("ledger_break_detected", index=index, reason=reason,
                      action="run `aiobligations verify` on the ledger")


class RequestEndpoints:
    """Serves ``{prefix}/explanations…``, ``{prefix}/complaints`` and ``{prefix}/operator/…``.

    Subject side: ``POST {prefix}/explanations``, ``GET {prefix}/explanations/{id}``,
    ``POST {prefix}/explanations/{id}/complaints``, ``POST {prefix}/complaints``; the POSTs are rate
    limited per subject and per client address (429 ``rate_limited`` with ``Retry-After``).

    Operator side (``Authorization: Bearer <token>``; none → 401, unknown → 403):
    ``GET {prefix}/operator/requests`` (open ones, most urgent first; ``?all=1`` for every one),
    ``GET {prefix}/operator/requests/{id}``, ``POST {prefix}/operator/requests/{id}/review`` (no body),
    ``…/answer`` (``{"text", "factors"?}``), ``…/reject`` (``{"reason"}``), ``…/resolve``
    (``{"outcome"}``), ``GET {prefix}/operator/complaints`` (open ones; ``?all=1``) and
    ``POST {prefix}/operator/complaints/{id}/resolve`` (``{"outcome"}``). Each step is recorded with
    ``by`` = the operator id the token maps to.

    Args:
        desk: The request desk, or a function returning it (the desk reads the ledger when it is
            built, so a service that never gets a request never pays for that).
        prefix: Where the ``/ai`` endpoints live.
        subject_of: Names the subject of a request, or returns ``None`` when it has no identity.
        operator_tokens: ``{sha256_hex(token): operator_id}``, e.g. from :func:`load_operator_tokens`.
            Empty (the default): every operator call gets 401 or 403.
        subject_limit: The per-subject limit on the subject's POSTs; ``None`` turns it off.
        address_limit: The per-address limit (``scope["client"][0]``, the peer's address unless the
            server is told to trust a proxy's forwarded headers); ``None`` turns it off.
        global_limit: One bucket for every POST that writes to the ledger (explanations,
            complaints), whoever and wherever it comes from; ``None`` turns it off.
        max_rate_keys: How many subjects (and, separately, addresses) the limiters remember. Shared
            limiters get 16 times as many slots (rounded up to a power of two), so that a key is
            almost never evicted early.
        clock: Monotonic seconds for the limiters (default :func:`time.monotonic`).
        shared_path: The shared-state file (``<ledger path>.shared``): the limits then hold for
            every process of the host using it (:class:`~aiobligations.sharedstate.SharedRateLimiter`,
            checked and spent under one lock), not per process. If the file cannot be created or
            opened (a read-only folder), the limiters stay in memory and a warning is logged.
        shared_secret: The key of the digests that stand for subjects and addresses in that file;
            required with ``shared_path``.
        alarm: Where breaks in the evidence are reported (a fresh :class:`EvidenceAlarm` by default).

    Raises:
        ConfigurationError: An option is invalid, or the shared-state file is unusable (a symbolic
            link, a FIFO, not a shared-state file, damaged).

    .. versionadded:: 0.1.0
    """

    def __init__(self, desk: RequestDesk | Callable[[], RequestDesk], *, prefix: str,
                 subject_of: Callable[[Scope], str | None],
                 operator_tokens: Mapping[str, str] | None = None,
                 subject_limit: RateLimit | None = DEFAULT_SUBJECT_LIMIT,
                 address_limit: RateLimit | None = DEFAULT_ADDRESS_LIMIT,
                 global_limit: RateLimit | None = DEFAULT_GLOBAL_LIMIT,
                 max_rate_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 shared_path: str | None = None,
                 shared_secret: bytes | None = None,
                 shared_store: Any = None,
                 alarm: EvidenceAlarm | None = None) -> None:
        self._desk = desk
        self.alarm = alarm or EvidenceAlarm()
        self._explanations = f"{prefix}/explanations"
        self._complaints = f"{prefix}/complaints"
        self._operator = f"{prefix}/operator/"
        self._subject_of = subject_of
        tokens = dict(operator_tokens or {})
        for digest, operator in tokens.items():
            if not isinstance(digest, str) or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ConfigurationError("operator_tokens must map SHA-256 hex digests (lowercase) to operator ids")
            if not isinstance(operator, str) or not operator:
                raise ConfigurationError("operator_tokens must map to non-empty operator ids")
        self._operator_tokens = tuple(tokens.items())
        self._clock = clock
        self._last_remind = float("-inf")
        self.subject_limiter: RateLimiter | SharedRateLimiter | PostgresRateLimiter | None = None
        self.address_limiter: RateLimiter | SharedRateLimiter | PostgresRateLimiter | None = None
        self.global_limiter: RateLimiter | SharedRateLimiter | PostgresRateLimiter | None = None
        self._limits_block = shared_store is not None  # A database round trip: run it off the event loop.
        if shared_store is not None:
            # Replicas on several hosts: the buckets live in the ledger's PostgreSQL schema.
            if not isinstance(shared_secret, bytes) or not shared_secret:
                raise ConfigurationError("shared_secret (non-empty bytes) is required with shared_store")
            if subject_limit is not None:
                self.subject_limiter = PostgresRateLimiter(subject_limit, shared_store, shared_secret, "subject")
            if address_limit is not None:
                self.address_limiter = PostgresRateLimiter(address_limit, shared_store, shared_secret, "address")
            if global_limit is not None:
                self.global_limiter = PostgresRateLimiter(global_limit, shared_store, shared_secret, "service")
            shared_path = None
        elif shared_path is not None:
            if not isinstance(shared_secret, bytes) or not shared_secret:
                raise ConfigurationError("shared_secret (non-empty bytes) is required with shared_path")
            if isinstance(max_rate_keys, bool) or not isinstance(max_rate_keys, int) or max_rate_keys < 1:
                raise ConfigurationError(f"max_keys must be an int, 1 or more, got {max_rate_keys!r}")
            slots = max(1024, 1 << (16 * max_rate_keys - 1).bit_length())
            try:
                if subject_limit is not None:
                    self.subject_limiter = SharedRateLimiter(subject_limit, shared_path, shared_secret, "subject",
                                                             slots=slots, clock=clock)
                if address_limit is not None:
                    self.address_limiter = SharedRateLimiter(address_limit, shared_path, shared_secret, "address",
                                                             slots=slots, clock=clock)
                if global_limit is not None:
                    self.global_limiter = SharedRateLimiter(global_limit, shared_path, shared_secret, "service",
                                                            slots=1024, clock=clock)
            except OSError as exc:
                for opened in (self.subject_limiter, self.address_limiter):
                    if isinstance(opened, SharedRateLimiter):
                        opened.close()
                self.subject_limiter = self.address_limiter = self.global_limiter = None
                log.warning("shared_state_unavailable", path=shared_path, part="rate_limits",
                            error=exc.strerror or type(exc).__name__, fallback="per_process")
                shared_path = None
        if shared_path is None and shared_store is None:
            self.subject_limiter = (RateLimiter(subject_limit, max_keys=max_rate_keys, clock=clock)
                                    if subject_limit is not None else None)
            self.address_limiter = (RateLimiter(address_limit, max_keys=max_rate_keys, clock=clock)
                                    if address_limit is not None else None)
            self.global_limiter = (RateLimiter(global_limit, max_keys=1, clock=clock)
                                   if global_limit is not None else None)

    @property
    def desk(self) -> RequestDesk:
        """The request desk (built on first use when a factory was given)."""
        if not isinstance(self._desk, RequestDesk):
            # Threads may race here; the factory (Obligations.requests) builds the desk only once.
            self._desk = self._desk()
        return self._desk

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of these endpoints."""
        return path in (self._explanations, self._complaints) or path.startswith(
            (self._explanations + "/", self._operator))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one request; every failure is a JSON error with a fitting 4xx status."""
        extra: list[tuple[bytes, bytes]] = []
        try:
            if scope["path"].startswith(self._operator):
                status, body = await self._operate(scope, receive)
            else:
                status, body = await self._route(scope, receive)
        except _BadRequest as exc:
            status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
            extra = exc.headers
        except NotFound:
            status, body = _NOT_FOUND[0], {"error": {"code": _NOT_FOUND[1], "message": _NOT_FOUND[2]}}
        except InvalidTransition as exc:
            status, body = 409, {"error": {"code": "invalid_transition", "message": str(exc)}}
        except InvalidRequest as exc:
            status, body = 422, {"error": {"code": "invalid_request", "message": str(exc)}}
        except LedgerBroken as exc:  # An altered row: the same 404 as an unknown id, and the alarm.
            self.alarm.report(exc.index, exc.reason)
            status, body = _NOT_FOUND[0], {"error": {"code": _NOT_FOUND[1], "message": _NOT_FOUND[2]}}
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   (b"cache-control", b"no-store"), *extra]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    # -- rate limits ---------------------------------------------------------------------------

    def _limit(self, scope: Scope, subject: str | None) -> None:
        """Spend one request of the subject's, the address's and the service's buckets, or raise 429
        (spending none)."""
        checks: list[tuple[str, RateLimiter | SharedRateLimiter | PostgresRateLimiter, str]] = []
        if self.subject_limiter is not None and subject is not None:
            checks.append(("subject", self.subject_limiter, subject))
        client = scope.get("client")
        if self.address_limiter is not None and client:
            checks.append(("address", self.address_limiter, str(client[0])))
        if self.global_limiter is not None:
            checks.append(("service", self.global_limiter, GLOBAL_KEY))
        if not checks:
            return
        now = self._clock()
        postgres = [(limiter, key) for _, limiter, key in checks if isinstance(limiter, PostgresRateLimiter)]
        shared = [(limiter, key) for _, limiter, key in checks if isinstance(limiter, SharedRateLimiter)]
        if len(postgres) == len(checks):
            # Every replica spends from the same rows: one call checks and spends them all.
            try:
                spent = acquire_all_postgres(postgres)
            except LedgerError:
                log.warning("rate_limits_unavailable", reason="the ledger's database cannot be reached")
                raise _BadRequest(503, "evidence_unavailable",
                                  "the service cannot record requests right now; try again shortly",
                                  [(b"retry-after", b"5")]) from None
            waits = [(waiting, which) for waiting, (which, _, _) in zip(spent, checks, strict=True)]
        elif len(shared) == len(checks):
            # Other processes spend from the same buckets: check and spend in one step, under their locks.
            spent = acquire_all(shared, now)
            waits = [(waiting, which) for waiting, (which, _, _) in zip(spent, checks, strict=True)]
        else:
            waits = [(limiter.wait(key, now), which) for which, limiter, key in checks]
            if max(waits)[0] == 0:
                for _, limiter, key in checks:
                    limiter.take(key, now)
        waiting, which = max(waits)
        if waiting > 0:
            seconds = max(1, math.ceil(waiting))
            log.info("rate_limited", limit=which, retry_after=seconds)  # No subject, no address.
            message = (f"the service takes too many requests now; try again in {seconds} s" if which == "service"
                       else f"too many requests from this {which}; try again in {seconds} s")
            raise _BadRequest(429, "rate_limited", message,
                              [(b"retry-after", str(seconds).encode())])

    async def limit_wait(self, scope: Scope, subject: str | None) -> int:
        """Spend one request of every bucket for a ledger-writing POST made elsewhere (the form pages).

        Returns:
            0 when the POST may go ahead, else the seconds to wait (nothing is spent then; also
            when the shared buckets cannot be reached).
        """
        try:
            if self._limits_block:
                await asyncio.to_thread(self._limit, scope, subject)
            else:
                self._limit(scope, subject)
        except _BadRequest as exc:
            for name, value in exc.headers:
                if name == b"retry-after":
                    return int(value)
            return 1
        return 0

    # -- the operators' side -------------------------------------------------------------------

    def _operator_of(self, scope: Scope) -> str:
        """The operator id the request's bearer token maps to; 401 without a token, 403 with a wrong one."""
        header = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                header = value
                break
        scheme, _, token = (header or b"").decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            log.info("operator_denied", reason="no_token")
            raise _BadRequest(401, "unauthorized", "an operator token is required (Authorization: Bearer …)",
                              [(b"www-authenticate", b'Bearer realm="aiobligations-operator"')])
        digest = token_digest(token)
        found = None
        for known, operator in self._operator_tokens:  # Compare with every one: no early exit.
            if hmac.compare_digest(known, digest):
                found = operator
        if found is None:
            log.info("operator_denied", reason="unknown_token")
            raise _BadRequest(403, "forbidden", "this token is not an operator's")
        return found

    async def _operate(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        operator = self._operator_of(scope)
        method = scope["method"]
        parts = scope["path"][len(self._operator):].split("/")
        query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
        every = query.get("all", ["0"])[-1].lower() in ("1", "true", "yes")
        desk = await asyncio.to_thread(lambda: self.desk)
        try:
            if parts == ["requests"]:
                self._method(method, "GET")
                found = await asyncio.to_thread(desk.requests if every else desk.open_requests)
                return 200, {"requests": [operator_request_view(r) for r in found]}
            if parts == ["complaints"]:
                self._method(method, "GET")
                complaints = await asyncio.to_thread(desk.complaints)
                return 200, {"complaints": [complaint_view(c) for c in complaints if every or c.state == "received"]}
            if len(parts) == 2 and parts[0] == "requests" and parts[1]:
                self._method(method, "GET")
                return 200, operator_request_view(await asyncio.to_thread(desk.request, parts[1]))
            if len(parts) == 3 and parts[0] == "requests" and parts[1] and parts[2] in _REQUEST_ACTIONS:
                self._method(method, "POST")
                request_id, action = parts[1], parts[2]
                payload = await self._json(scope, receive, empty_ok=action == "review")
                if action == "review":
                    request = await asyncio.to_thread(desk.start_review, request_id, by=operator)
                elif action == "answer":
                    factors = payload.get("factors")
                    if factors is not None and not isinstance(factors, dict):
                        raise _BadRequest(422, "invalid_request", "'factors' must be a JSON object")
                    request = await asyncio.to_thread(desk.answer, request_id, _field(payload, "text"),
                                                      factors=factors, by=operator)
                elif action == "reject":
                    request = await asyncio.to_thread(desk.reject, request_id, _field(payload, "reason"),
                                                      by=operator)
                else:
                    request = await asyncio.to_thread(desk.resolve, request_id, _field(payload, "outcome"),
                                                      by=operator)
                log.info("operator_step", operator=operator, request_id=request_id, step=request.state)
                return 200, operator_request_view(request)
            if len(parts) == 3 and parts[0] == "complaints" and parts[1] and parts[2] == "resolve":
                self._method(method, "POST")
                payload = await self._json(scope, receive)
                complaint = await asyncio.to_thread(desk.resolve_complaint, parts[1],
                                                    _field(payload, "outcome"), by=operator)
                log.info("operator_step", operator=operator, complaint_id=complaint.id, step=complaint.state)
                return 200, complaint_view(complaint)
        except NotFound as exc:
            raise _BadRequest(404, "not_found", str(exc)) from None
        raise _BadRequest(404, "not_found", "no such operator endpoint")

    # -- the subject's side --------------------------------------------------------------------

    def _remind_now_and_then(self) -> None:
        """Log due-soon and overdue reminders at most once an hour, riding on incoming requests."""
        now = self._clock()
        if now - self._last_remind < REMIND_EVERY:
            return
        self._last_remind = now
        asyncio.get_running_loop().run_in_executor(None, self._remind)

    def _remind(self) -> None:
        try:
            self.desk.remind()
        except Exception:  # pragma: no cover - a reminder must never break a request.
            pass

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        self._remind_now_and_then()
        path, method = scope["path"], scope["method"]
        subject = self._subject_of(scope)
        if method == "POST":
            if self._limits_block:
                await asyncio.to_thread(self._limit, scope, subject)
            else:
                self._limit(scope, subject)
        if path == self._explanations:
            self._method(method, "POST")
            payload = await self._json(scope, receive)
            if subject is None:
                raise NotFound("no identity")
            request = await asyncio.to_thread(
                self.desk.ask,
                _field(payload, "interaction_id"),
                subject,
                _field(payload, "question"),
                contact=_field(payload, "contact", required=False),
            )
            # The explainer, if any, answers in the background; the person gets the id at once.
            asyncio.get_running_loop().run_in_executor(None, self._process, request.id)
            return 201, {"id": request.id, "status": request.state, "due": iso(request.due)}
        if path == self._complaints:
            self._method(method, "POST")
            payload = await self._json(scope, receive)
            complaint = await asyncio.to_thread(
                self.desk.complaint,
                subject or "anonymous",
                _field(payload, "category"),
                _field(payload, "text"),
                work=_field(payload, "work", required=False),
                right_holder=_field(payload, "right_holder", required=False),
                output_ref=_field(payload, "output_ref", required=False),
                contact=_field(payload, "contact", required=False),
            )
            return 201, {"id": complaint.id, "status": complaint.state, "due": iso(complaint.due)}
        rest = path[len(self._explanations) + 1 :]
        request_id, _, tail = rest.partition("/")
        if subject is None or not request_id or tail not in ("", "complaints"):
            raise NotFound("no identity or no such path")
        if tail == "":
            self._method(method, "GET")
            return 200, request_view(await asyncio.to_thread(self.desk.get, request_id, subject))
        self._method(method, "POST")
        payload = await self._json(scope, receive)
        request = await asyncio.to_thread(self.desk.complain, request_id, subject, _field(payload, "text"))
        return 200, request_view(request)

    def _process(self, request_id: str) -> None:
        try:
            self.desk.process(request_id)
        except Exception:  # The desk logs explainer failures; the request stays in the human queue.
            pass

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method != allowed:
            raise _BadRequest(405, "method_not_allowed", f"use {allowed}")

    @staticmethod
    async def _json(scope: Scope, receive: Receive, *, empty_ok: bool = False) -> dict[str, Any]:
        # Only application/json: a cross-site form or fetch cannot send it without a CORS preflight,
        # so a text/plain or form post from another site is refused before anything is recorded.
        declared = [value for name, value in scope.get("headers") or () if name.lower() == b"content-type"]
        if declared or not empty_ok:
            if len(declared) != 1 or not is_json_media_type(declared[0]):
                raise _BadRequest(415, "unsupported_media_type",
                                  "the body must be sent as Content-Type: application/json (UTF-8)")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _BadRequest(400, "disconnected", "the request body did not arrive")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise _BadRequest(413, "payload_too_large", f"the body is larger than {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if empty_ok and not b"".join(chunks).strip():
            return {}
        if not declared:  # An operator's step with a body but no Content-Type.
            raise _BadRequest(415, "unsupported_media_type",
                              "the body must be sent as Content-Type: application/json (UTF-8)")
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(400, "invalid_json", "the body must be a JSON object") from None
        except RecursionError:  # Nested deeper than the parser goes: no request is that deep.
            raise _BadRequest(400, "invalid_json", "the body is nested too deeply") from None
        if not isinstance(payload, dict):
            raise _BadRequest(400, "invalid_json", "the body must be a JSON object")
        return payload


def is_json_media_type(value: bytes) -> bool:
    """Whether a ``Content-Type`` value is ``application/json``, with at most a UTF-8 ``charset``."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False
    kind, *params = text.split(";")
    if kind.strip().lower() != "application/json":
        return False
    for param in params:
        name, sep, arg = param.strip().partition("=")
        if not param.strip():
            continue
        if not sep or name.strip().lower() != "charset" or arg.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


_REQUEST_ACTIONS = frozenset({"review", "answer", "reject", "resolve"})


def _field(payload: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(422, "invalid_request", f"{name!r} must be a non-empty string")
    return value
