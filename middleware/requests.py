"""The Art. 39 endpoints: ask for an explanation, read it, complain; general and IP complaints.

Only the subject of an interaction may ask about it or read the answer. The subject comes from the
request's identity (the app's identity hook, a digest of the API key, or the first-party cookie),
never from the body. An unknown id and someone else's id get the same 404, so ids cannot be probed.
The desk writes every step to the ledger, so its calls run on a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Any

from aiobligations.requests.workflow import InvalidRequest, InvalidTransition, NotFound, Request, RequestDesk

__all__ = ["MAX_BODY", "RequestEndpoints", "request_view"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 64 << 10
"""The largest request body these endpoints read; larger ones get 413."""

_NOT_FOUND = (404, "not_found", "no such request of yours")


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def request_view(request: Request) -> dict[str, Any]:
    """What a subject sees of their request (step indices and operator ids are for operators)."""
    return {
        "id": request.id,
        "interaction_id": request.interaction_id,
        "status": request.state,
        "received": _iso(request.received),
        "due": _iso(request.current_due or request.due),
        "answered_at": _iso(request.answered_at),
        "answer": request.answer,
        "factors": dict(request.factors) if request.factors else None,
        "reason": request.reason,
        "complaint": request.complaint,
        "outcome": request.outcome,
    }


class RequestEndpoints:
    """Serves ``{prefix}/explanations…`` and ``{prefix}/complaints`` over a :class:`RequestDesk`.

    Args:
        desk: The request desk, or a function returning it (the desk reads the ledger when it is
            built, so a service that never gets a request never pays for that).
        prefix: Where the ``/ai`` endpoints live.
        subject_of: Names the subject of a request, or returns ``None`` when it has no identity.

    .. versionadded:: 0.1.0
    """

    def __init__(self, desk: RequestDesk | Callable[[], RequestDesk], *, prefix: str,
                 subject_of: Callable[[Scope], str | None]) -> None:
        self._desk = desk
        self._explanations = f"{prefix}/explanations"
        self._complaints = f"{prefix}/complaints"
        self._subject_of = subject_of

    @property
    def desk(self) -> RequestDesk:
        """The request desk (built on first use when a factory was given)."""
        if not isinstance(self._desk, RequestDesk):
            self._desk = self._desk()
        return self._desk

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of these endpoints."""
        return path in (self._explanations, self._complaints) or path.startswith(self._explanations + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one request; every failure is a JSON error with a fitting 4xx status."""
        try:
            status, body = await self._route(scope, receive)
        except _BadRequest as exc:
            status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        except NotFound:
            status, body = _NOT_FOUND[0], {"error": {"code": _NOT_FOUND[1], "message": _NOT_FOUND[2]}}
        except InvalidTransition as exc:
            status, body = 409, {"error": {"code": "invalid_transition", "message": str(exc)}}
        except InvalidRequest as exc:
            status, body = 422, {"error": {"code": "invalid_request", "message": str(exc)}}
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                   (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _route(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"], scope["method"]
        subject = self._subject_of(scope)
        if path == self._explanations:
            self._method(method, "POST")
            payload = await self._json(receive)
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
            return 201, {"id": request.id, "status": request.state, "due": _iso(request.due)}
        if path == self._complaints:
            self._method(method, "POST")
            payload = await self._json(receive)
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
            return 201, {"id": complaint.id, "status": complaint.state, "due": _iso(complaint.due)}
        rest = path[len(self._explanations) + 1 :]
        request_id, _, tail = rest.partition("/")
        if subject is None or not request_id or tail not in ("", "complaints"):
            raise NotFound("no identity or no such path")
        if tail == "":
            self._method(method, "GET")
            return 200, request_view(await asyncio.to_thread(self.desk.get, request_id, subject))
        self._method(method, "POST")
        payload = await self._json(receive)
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
    async def _json(receive: Receive) -> dict[str, Any]:
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
        try:
            payload = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(400, "invalid_json", "the body must be a JSON object") from None
        if not isinstance(payload, dict):
            raise _BadRequest(400, "invalid_json", "the body must be a JSON object")
        return payload


def _field(payload: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = payload.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(422, "invalid_request", f"{name!r} must be a non-empty string")
    return value
