"""Route policy: which requests are AI interactions, and what the middleware does on each."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiobligations.errors import ConfigurationError

__all__ = ["DEFAULT_AI_ROUTES", "Route", "RoutePolicy"]


@dataclass(frozen=True)
class Route:
    """Settings for the requests whose path matches ``pattern``.

    Args:
        pattern: A path, or a glob such as ``/v1/images/*``.
        methods: The HTTP methods it covers (upper case); empty means all.
        disclose: Send the disclosure headers.
        body_notice: Also put the notice in the body: a field in JSON objects, a first comment in
            an event stream, a banner in HTML.
        capture: Keep the request and response bodies (sealed, capped) in the interaction record.
        label: Label synthetic media in the response (GB 45438 labels, C2PA, watermark).
        text_label: Also put an explicit text label ("【本内容由人工智能生成】") into the content of
            chat completions (JSON responses). Off by default: it changes what the model said,
            which the disclosure notice and the interface around the text already cover (GB 45438
            §5.1 allows either).
        model: The model this route serves when neither the app's response (an ``OpenAI-Model``
            header) nor the request (a JSON ``model`` member) names one; it is what
            ``AI-Disclosure`` and the record then name, before the profile's ``[service] model``.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``model``.
    """

    pattern: str
    methods: frozenset[str] = frozenset({"POST"})
    disclose: bool = True
    body_notice: bool = True
    capture: bool = True
    label: bool = True
    text_label: bool = False
    model: str | None = None

    def __post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise ConfigurationError(f"a route pattern must start with '/', got {self.pattern!r}")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))


DEFAULT_AI_ROUTES: tuple[Route, ...] = (
    Route("/v1/chat/completions"),
    Route("/v1/completions"),
    Route("/v1/responses"),
    Route("/v1/images/*"),
    Route("/v1/audio/*"),
)
"""OpenAI-compatible generation routes, as served by vLLM and most model servers."""


class RoutePolicy:
    """Finds the :class:`Route` for a request; the first matching route wins.

    Matching runs on every request, so all patterns are compiled into one regular expression and
    recent paths are cached.

    Args:
        routes: The AI routes (default :data:`DEFAULT_AI_ROUTES`).

    .. versionadded:: 0.1.0
    """

    def __init__(self, routes: Iterable[Route] = DEFAULT_AI_ROUTES) -> None:
        self.routes: Sequence[Route] = tuple(routes)
        parts = [f"(?P<r{i}>{fnmatch.translate(route.pattern)[4:-3]})" for i, route in enumerate(self.routes)]
        self._regex = re.compile(f"(?s:{'|'.join(parts)})\\Z") if parts else None
        self._cache: dict[tuple[str, str], Route | None] = {}

    def match(self, method: str, path: str) -> Route | None:
        """The route covering ``method path``, or ``None`` when it is not an AI route."""
        key = (method, path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = None
        if self._regex is not None:
            match = self._regex.match(path)
            if match is not None:
                for i, route in enumerate(self.routes):
                    if match.group(f"r{i}") is not None and (not route.methods or method in route.methods):
                        found = route
                        break
                if found is None:
                    # The first route that matched the path did not take this method; look further.
                    for route in self.routes:
                        if fnmatch.fnmatchcase(path, route.pattern) and (not route.methods or method in route.methods):
                            found = route
                            break
        if len(self._cache) >= 4096:
            self._cache.clear()
        self._cache[key] = found
        return found
