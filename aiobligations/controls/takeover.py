"""The takeover switch (Art. 52(4), 37): people take the AI routes over, for all of them or some.

Each switch is a ``control`` record::

    {"kind": "control", "control": "takeover", "state": "on" | "off",
     "route": glob pattern or null (every AI route), "reason": str,
     "fallback": path or null (hand requests to this path of the app instead of answering 503),
     "by": str, "at": RFC 3339 UTC}

Switches are kept per ``route``: ``on`` for a pattern sets that pattern's switch; ``off`` with a
pattern ends that one, and ``off`` without one ends every switch. The patterns are matched against
the paths of the requests the route policy calls AI routes (``fnmatch`` globs, case-sensitive).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidControl

__all__ = ["Takeover", "check_fallback", "check_route", "fold_takeover"]

_MAX_PATTERN = 500


def check_route(route: Any) -> str | None:
    """
    Check a route pattern: ``None`` (every AI route) or a glob starting with ``/``.

    Raises:
        InvalidControl: Not a string starting with ``/``, too long, or holding control characters.
    """
    if route is None:
        return None
    if (not isinstance(route, str) or not route.startswith("/") or len(route) > _MAX_PATTERN
            or any(ord(c) < 0x20 or c == "\x7f" for c in route)):
        raise InvalidControl(f"a route pattern must be a path or glob starting with '/', such as "
                             f"'/v1/images/*', got {route!r:.60}")
    try:
        re.compile(fnmatch.translate(route))
    except re.error as exc:  # pragma: no cover - fnmatch escapes what it does not translate.
        raise InvalidControl(f"the route pattern {route!r:.60} does not compile ({exc})") from None
    return route


def check_fallback(path: Any, *, reserved: tuple[str, ...] = ()) -> str | None:
    """
    Check a human-fallback path: ``None``, or a plain path of the app (no glob, query or fragment).

    Args:
        path: The path requests are handed to while the switch is on.
        reserved: Prefixes the fallback may not be under (the middleware's own endpoints).

    Raises:
        InvalidControl: Not a plain path starting with ``/``, or under a reserved prefix.
    """
    if path is None:
        return None
    if (not isinstance(path, str) or not path.startswith("/") or path.startswith("//") or len(path) > _MAX_PATTERN
            or any(c in path for c in "*?[]#") or any(ord(c) <= 0x20 or c == "\x7f" for c in path)):
        raise InvalidControl(f"a fallback must be a plain path of the app starting with '/', such as '/human', "
                             f"got {path!r:.60}")
    if path.startswith(reserved):
        raise InvalidControl(f"the fallback {path!r} is one of the middleware's own endpoints")
    return path


@dataclass(frozen=True)
class Takeover:
    """
    One takeover switch that is on.

    Args:
        route: The glob of AI paths it covers, or ``None`` for every AI route.
        reason: Why people took over (may be empty).
        fallback: The path of the app that gets the requests instead, or ``None`` (503).
        by: The operator's id.
        at: When it was switched on.
        index: The ledger index of its record.

    .. versionadded:: 0.2.0
    """

    route: str | None
    reason: str
    fallback: str | None
    by: str | None
    at: datetime
    index: int
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.route is not None:
            object.__setattr__(self, "_regex", re.compile(fnmatch.translate(self.route)))

    def covers(self, path: str) -> bool:
        """Whether this switch covers a request to ``path`` (an AI route)."""
        return self._regex is None or self._regex.match(path) is not None

    def as_dict(self) -> dict[str, Any]:
        """The switch as JSON values."""
        return {"route": self.route, "reason": self.reason, "fallback": self.fallback, "by": self.by,
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
                "index": self.index}


def fold_takeover(switches: dict[str | None, Takeover], record: Mapping[str, Any], index: int) -> bool:
    """
    Fold one ``control`` record of ``control: takeover`` into ``switches`` (route → Takeover).

    Malformed records are skipped (the ledger is the truth; ``verify`` reports altered rows).

    Returns:
        Whether the record changed anything.
    """
    state = record.get("state")
    route = record.get("route")
    at = record.get("at")
    if state not in ("on", "off") or not (route is None or isinstance(route, str)) or not isinstance(at, str):
        return False
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return False
    if state == "off":
        if route is None:
            changed = bool(switches)
            switches.clear()
            return changed
        return switches.pop(route, None) is not None
    fallback = record.get("fallback")
    reason = record.get("reason")
    by = record.get("by")
    try:
        check_route(route)
        switches[route] = Takeover(route, reason if isinstance(reason, str) else "",
                                   fallback if isinstance(fallback, str) and fallback.startswith("/") else None,
                                   by if isinstance(by, str) else None, moment, index)
    except (InvalidControl, re.error):
        return False
    return True
