"""The termination endpoint for operators (Art. 50): plan, cancel, run the deletion, show the plan.

``GET {prefix}/operator/termination`` shows the plan (``{"plan": … | null, "ended", "earliest_end"}``);
``POST`` with ``{"action": "plan", "end": "YYYY-MM-DD"}``, ``{"action": "cancel"}`` or
``{"action": "run", "early"?: bool}`` takes a step. Operators sign in as for the request desk
(``Authorization: Bearer <token>``; none → 401, unknown → 403). A step that is not allowed (too
little notice, another plan standing, cancelling after the end) is 409; a bad body 400/422.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Any

import structlog

from aiobligations.controls.termination import TerminationState

from .controls import answer_control
from .requests import RequestEndpoints, _BadRequest
from .types import Receive, Scope, Send

__all__ = ["TerminationEndpoints"]

log = structlog.get_logger("aiobligations.middleware.controls")


class TerminationEndpoints:
    """Serves ``{prefix}/operator/termination`` (see the module's docstring).

    Args:
        termination: The termination state the hub follows.
        prefix: Where the ``/ai`` endpoints live.
        authorize: Names the operator of a request or raises the 401/403 (the request desk's check).

    .. versionadded:: 0.2.0
    """

    def __init__(self, termination: TerminationState, *, prefix: str, authorize: Callable[[Scope], str]) -> None:
        self.termination = termination
        self._authorize = authorize
        self.path = f"{prefix}/operator/termination"

    def handles(self, path: str) -> bool:
        """Whether ``path`` is this endpoint."""
        return path == self.path

    def _view(self) -> dict[str, Any]:
        termination = self.termination
        plan = termination.plan
        return {"plan": plan.as_dict() if plan else None, "ended": termination.ended() is not None,
                "earliest_end": termination.earliest_end().isoformat()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one request; every failure is a JSON error with a fitting 4xx status."""
        await answer_control(send, lambda: self._operate(scope, receive))

    async def _operate(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        operator = self._authorize(scope)
        termination = self.termination
        if scope["method"] == "GET":
            await asyncio.to_thread(termination.refresh)
            return 200, self._view()
        if scope["method"] != "POST":
            raise _BadRequest(405, "method_not_allowed", "use GET or POST", [(b"allow", b"GET, POST")])
        payload = await RequestEndpoints._json(scope, receive)
        action = payload.get("action")
        members = {"plan": {"action", "end"}, "cancel": {"action"}, "run": {"action", "early"}}
        allowed = members.get(action) if isinstance(action, str) else None
        if allowed is None:
            raise _BadRequest(422, "invalid_request", "'action' must be \"plan\", \"cancel\" or \"run\"")
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise _BadRequest(422, "invalid_request", f"unknown members: {', '.join(unknown)[:200]}")
        result: dict[str, Any] = {}
        if action == "plan":
            end = payload.get("end")
            try:
                day = date.fromisoformat(end) if isinstance(end, str) else None
            except ValueError:
                day = None
            if day is None:
                raise _BadRequest(422, "invalid_request", "'end' must be a date \"YYYY-MM-DD\"")
            await asyncio.to_thread(lambda: termination.plan_termination(day, by=operator))
        elif action == "cancel":
            result["changed"] = await asyncio.to_thread(lambda: termination.cancel(by=operator))
        else:
            early = payload.get("early", False)
            if not isinstance(early, bool):
                raise _BadRequest(422, "invalid_request", "'early' must be true or false")
            result["shredded"] = await asyncio.to_thread(lambda: termination.run(by=operator, early=early))
        log.info("operator_control", operator=operator, control="termination", action=action)
        return 200, {**result, **self._view()}
