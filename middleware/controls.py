"""The controls' endpoints: incidents and the takeover switch for operators, incident notices for all.

Operators (``Authorization: Bearer <token>``, the same tokens as the request desk's; none → 401,
unknown → 403):

* ``GET {prefix}/operator/incidents`` (open ones; ``?all=1`` for every one);
* ``POST {prefix}/operator/incidents`` opens one: ``{"title", "scope", "measures", "user_actions",
  "contact", "course"?, "severity"?, "suspend"?: bool}`` → 201;
* ``GET {prefix}/operator/incidents/{id}``: the incident, its steps and both notices in both languages;
* ``POST {prefix}/operator/incidents/{id}``: ``{"step": "update", …fields}`` (the default) or
  ``{"step": "close", "resolution"}``; closing a closed incident is 409;
* ``GET {prefix}/operator/takeover`` and ``POST {prefix}/operator/takeover`` with
  ``{"state": "on" | "off", "route"?, "reason"?, "fallback"?}`` → ``{"changed": bool, …}``.

Everyone: ``GET {prefix}/incidents/{id}``, the user notice, as HTML (Chinese or English, by
``?lang=`` or ``Accept-Language``) or as JSON with both languages when ``Accept`` asks for JSON.

Bodies are hostile input: at most 64 KiB of ``application/json``, an object whose members are
strings (``suspend`` a boolean), every text bounded; anything else is a 4xx JSON error.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import structlog

from aiobligations.controls import (
    ControlError,
    ControlState,
    Incident,
    IncidentClosed,
    IncidentNotFound,
    InvalidControl,
    authority_notice,
    user_notice,
    user_notice_html,
)
from aiobligations.controls.incidents import INCIDENT_FIELDS, REQUIRED_FIELDS
from aiobligations.controls.takeover import check_fallback
from aiobligations.controls.termination import TerminationError
from aiobligations.disclosure import negotiate_language
from aiobligations.errors import LedgerError

from .requests import RequestEndpoints, _BadRequest
from .types import Receive, Scope, Send

if TYPE_CHECKING:
    from aiobligations.profile import Profile

__all__ = ["ControlEndpoints", "answer_control", "send_json"]

log = structlog.get_logger("aiobligations.middleware.controls")

_OPEN_FIELDS = frozenset({*INCIDENT_FIELDS, "suspend"})
_UPDATE_FIELDS = frozenset({*INCIDENT_FIELDS, "suspend", "step"})
_CLOSE_FIELDS = frozenset({"step", "resolution"})
_TAKEOVER_FIELDS = frozenset({"state", "route", "reason", "fallback"})



_FAILURES: tuple[tuple[type[Exception], int, str], ...] = (
    (IncidentNotFound, 404, "not_found"),
    (IncidentClosed, 409, "incident_closed"),
    (TerminationError, 409, "not_allowed"),
    (InvalidControl, 422, "invalid_request"),
    (ControlError, 400, "invalid_request"),
)
"""How a control's refusal is answered, first match wins."""


async def send_json(send: Send, status: int, body: dict[str, Any], extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send one JSON response (never cached)."""
    data = json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"cache-control", b"no-store"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def answer_control(send: Send, operate: Callable[[], Awaitable[tuple[int, dict[str, Any]] | None]]) -> None:
    """Run a control's handler and answer: its ``(status, body)`` as JSON, or the error its refusal maps to.

    Shared by the incidents, takeover and termination endpoints; a handler that answered itself
    returns ``None``. A ledger that cannot record the step is 503 ``evidence_unavailable`` with
    ``Retry-After``.
    """
    extra: list[tuple[bytes, bytes]] = []
    try:
        result = await operate()
        if result is None:
            return
        status, body = result
    except _BadRequest as exc:
        status, body, extra = exc.status, {"error": {"code": exc.code, "message": exc.message}}, exc.headers
    except LedgerError as exc:
        log.warning("control_unavailable", error=type(exc).__name__)
        status, body = 503, {"error": {"code": "evidence_unavailable",
                                       "message": "the ledger cannot record this now; try again shortly"}}
        extra = [(b"retry-after", b"5")]
    except ControlError as exc:
        status, code = next((status, code) for kind, status, code in _FAILURES if isinstance(exc, kind))
        body = {"error": {"code": code, "message": str(exc)}}
    await send_json(send, status, body, extra)


class ControlEndpoints:
    """Serves the incident and takeover endpoints (see the module's docstring).

    Args:
        controls: The control state, or a function returning it.
        prefix: Where the ``/ai`` endpoints live.
        authorize: Names the operator of a request or raises the 401/403 (the request desk's check).
        profile: The provider's profile, for the notices.
        language: The default language of the HTML notice.

    .. versionadded:: 0.2.0
    """

    def __init__(self, controls: ControlState | Callable[[], ControlState], *, prefix: str,
                 authorize: Callable[[Scope], str], profile: Profile | None = None, language: str = "zh") -> None:
        self._controls = controls
        self._authorize = authorize
        self._profile = profile
        self._language = language
        self._incidents = f"{prefix}/operator/incidents"
        self._takeover = f"{prefix}/operator/takeover"
        self._public = f"{prefix}/incidents/"
        self.reserved = (f"{prefix}/", "/.well-known/")

    @property
    def controls(self) -> ControlState:
        """The control state (built on first use when a factory was given)."""
        if not isinstance(self._controls, ControlState):
            self._controls = self._controls()
        return self._controls

    def incident_url(self, incident_id: str) -> str:
        """The public path of an incident's user notice."""
        return self._public + incident_id

    def handles(self, path: str) -> bool:
        """Whether ``path`` is one of these endpoints."""
        return (path in (self._incidents, self._takeover) or path.startswith((self._incidents + "/", self._public)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one request; every failure is a JSON error with a fitting 4xx status."""
        if scope["path"].startswith(self._public):
            await answer_control(send, lambda: self._notice(scope, send))
        else:
            await answer_control(send, lambda: self._operate(scope, receive))

    # -- the public notice ---------------------------------------------------------------------

    async def _notice(self, scope: Scope, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            raise _BadRequest(405, "method_not_allowed", "use GET", [(b"allow", b"GET, HEAD")])
        incident_id = scope["path"][len(self._public):]
        # The snapshot, not the ledger: no I/O on the event loop (at most one poll interval behind).
        incident = self.controls.snapshot.incidents.get(incident_id)
        if incident is None:
            raise IncidentNotFound("no such incident")
        accept = query_lang = language = None
        for name, value in scope.get("headers") or ():
            if name == b"accept":
                accept = value.decode("latin-1").lower()
            elif name == b"accept-language":
                language = value.decode("latin-1")
        query_lang = parse_qs((scope.get("query_string") or b"").decode("latin-1")).get("lang", [None])[0]
        wants_json = accept is not None and "application/json" in accept and "text/html" not in accept
        if wants_json:
            body = json.dumps({"id": incident.id, "status": "open" if incident.open else "closed",
                               "url": self.incident_url(incident.id),
                               **{lang: user_notice(incident, lang, profile=self._profile) for lang in ("zh", "en")}},
                              ensure_ascii=False).encode()
            content_type = b"application/json"
        else:
            lang = negotiate_language(language, query_lang, self._language)
            body = user_notice_html(incident, lang, profile=self._profile,
                                    url=self.incident_url(incident.id)).encode()
            content_type = b"text/html; charset=utf-8"
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                   (b"cache-control", b"no-cache"), (b"vary", b"accept, accept-language"),
                   (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                   # Every text is escaped; this is the second line: no script, no frame, nothing from elsewhere.
                   (b"content-security-policy",
                    b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    # -- operators -----------------------------------------------------------------------------

    def _view(self, incident: Incident, *, notices: bool = False) -> dict[str, Any]:
        view = incident.as_dict()
        view["url"] = self.incident_url(incident.id)
        if notices:
            view["notices"] = {
                "user": {lang: user_notice(incident, lang, profile=self._profile)["notice"] for lang in ("zh", "en")},
                "authority": {lang: authority_notice(incident, lang, profile=self._profile) for lang in ("zh", "en")},
            }
        return view

    def _status(self) -> dict[str, Any]:
        snapshot = self.controls.snapshot
        fallback = self.controls.settings.fallback
        return {"takeovers": [{**t.as_dict(), "fallback": t.fallback or fallback} for t in snapshot.takeovers],
                "suspending_incidents": [i.id for i in snapshot.open_incidents if i.suspend],
                "halting": snapshot.halting}

    async def _operate(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        operator = self._authorize(scope)
        method, path = scope["method"], scope["path"]
        controls = await asyncio.to_thread(lambda: self.controls)
        if path == self._takeover:
            if method == "GET":
                await asyncio.to_thread(controls.refresh)
                return 200, self._status()
            _method(method, "POST")
            payload = _strings(await RequestEndpoints._json(scope, receive), _TAKEOVER_FIELDS)
            state = payload.get("state")
            route, reason = payload.get("route"), payload.get("reason") or ""
            if state == "on":
                fallback = check_fallback(payload.get("fallback"), reserved=self.reserved)
                changed = await asyncio.to_thread(lambda: controls.takeover_on(
                    by=operator, route=route, reason=reason, fallback=fallback))
            elif state == "off":
                if "fallback" in payload:
                    raise _BadRequest(422, "invalid_request", "'fallback' goes with state 'on' only")
                changed = await asyncio.to_thread(lambda: controls.takeover_off(
                    by=operator, route=route, reason=reason))
            else:
                raise _BadRequest(422, "invalid_request", "'state' must be \"on\" or \"off\"")
            log.info("operator_control", operator=operator, control="takeover", state=state, changed=changed)
            return 200, {"changed": changed, **self._status()}
        if path == self._incidents:
            if method == "GET":
                query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
                every = query.get("all", ["0"])[-1].lower() in ("1", "true", "yes")
                found = await asyncio.to_thread(controls.incidents, open_only=not every)
                return 200, {"incidents": [self._view(i) for i in found]}
            _method(method, "POST")
            payload = _strings(await RequestEndpoints._json(scope, receive), _OPEN_FIELDS)
            fields: dict[str, Any] = {name: payload.get(name) for name in REQUIRED_FIELDS} | payload  # Missing: 422.
            known = {i.id for i in (await asyncio.to_thread(controls.refresh)).open_incidents}
            incident = await asyncio.to_thread(lambda: controls.open_incident(by=operator, **fields))
            log.info("operator_control", operator=operator, control="incident", step="open", incident_id=incident.id)
            # The same incident posted again (a retry) is the one already open: 200, nothing recorded.
            return (200 if incident.id in known else 201), self._view(incident)
        incident_id = path[len(self._incidents) + 1:]
        if method == "GET":
            return 200, self._view(await asyncio.to_thread(controls.incident, incident_id), notices=True)
        _method(method, "POST")
        payload = _strings(await RequestEndpoints._json(scope, receive), _UPDATE_FIELDS | _CLOSE_FIELDS)
        step = payload.pop("step", "update")
        if step == "close":
            _strings(payload, _CLOSE_FIELDS)
            resolution = payload.get("resolution")
            incident = await asyncio.to_thread(lambda: controls.close_incident(
                incident_id, resolution=resolution, by=operator))  # type: ignore[arg-type]
        elif step == "update":
            _strings(payload, _UPDATE_FIELDS)
            incident = await asyncio.to_thread(lambda: controls.update_incident(incident_id, by=operator, **payload))
        else:
            raise _BadRequest(422, "invalid_request", "'step' must be \"update\" or \"close\"")
        log.info("operator_control", operator=operator, control="incident", step=step, incident_id=incident_id)
        return 200, self._view(incident)


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise _BadRequest(405, "method_not_allowed", f"use {allowed}")


def _strings(payload: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    """Check a body's members: known names only, strings (``suspend`` a boolean), no nulls."""
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise _BadRequest(422, "invalid_request", f"unknown members: {', '.join(unknown)[:200]}")
    for name, value in payload.items():
        if name == "suspend":
            if not isinstance(value, bool):
                raise _BadRequest(422, "invalid_request", "'suspend' must be true or false")
        elif not isinstance(value, str):
            raise _BadRequest(422, "invalid_request", f"{name!r} must be a string")
    return payload
