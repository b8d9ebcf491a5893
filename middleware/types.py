"""The ASGI types the middleware's modules share (the ASGI 3 callable interface, loosely typed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
"""A connection's scope (``type``, ``path``, ``headers``…)."""
Message = MutableMapping[str, Any]
"""One ASGI event, received or sent."""
Receive = Callable[[], Awaitable[Message]]
"""Awaits the next event from the client."""
Send = Callable[[Message], Awaitable[None]]
"""Sends one event to the client."""
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""
