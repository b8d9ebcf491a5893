"""Bounded capture of request and response bodies as they pass, never holding a stream back."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

__all__ = ["BodyCapture", "body_text", "find_string_field", "find_true", "find_usage"]


class BodyCapture:
    """Keeps the first ``limit`` bytes of a body and counts all of them.

    Args:
        limit: The most bytes kept; the rest is only counted.
    """

    __slots__ = ("_chunks", "_kept", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._kept = 0
        self._chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        """Tee one chunk: count it and keep what still fits."""
        if not chunk:
            return
        self.size += len(chunk)
        room = self.limit - self._kept
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self._chunks.append(piece)
            self._kept += len(piece)

    @property
    def truncated(self) -> bool:
        """Whether more was seen than kept."""
        return self.size > self._kept

    def value(self) -> bytes:
        """The kept bytes."""
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0] if self._chunks else b""


def body_text(data: bytes) -> dict[str, Any]:
    """A body as JSON-ready evidence: UTF-8 text when it is, base64 otherwise."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


_STRING_VALUE = re.compile(rb'\s*:\s*"((?:[^"\\]|\\.){0,512})"')
_TRUE_VALUE = re.compile(rb"\s*:\s*true\b")
# A usage object, allowing one level of nested objects (OpenAI's *_tokens_details).
_USAGE_OBJECT = re.compile(rb"\s*:\s*(\{(?:[^{}]|\{[^{}]*\}){0,2048}\})")


def find_string_field(data: bytes, name: bytes) -> str | None:
    """The first string value of a ``"name":`` member in a JSON body, found without parsing it.

    A request body can be megabytes of messages with ``model`` after them; a substring search is
    what the middleware can afford per request. Inside JSON strings quotes are escaped, so the key
    pattern cannot match message text.
    """
    key = b'"' + name + b'"'
    at = data.find(key)
    while at != -1:
        match = _STRING_VALUE.match(data, at + len(key))
        if match is not None:
            try:
                value = json.loads(b'"' + match.group(1) + b'"')
            except ValueError:
                return None
            return value if isinstance(value, str) else None
        at = data.find(key, at + 1)
    return None


def find_true(data: bytes, name: bytes) -> bool:
    """Whether a JSON body has a ``"name": true`` member (e.g. ``stream``)."""
    key = b'"' + name + b'"'
    at = data.find(key)
    return at != -1 and _TRUE_VALUE.match(data, at + len(key)) is not None


def find_usage(data: bytes) -> dict[str, int]:
    """Token usage from an OpenAI-compatible response, a JSON object or an event stream.

    The last ``"usage"`` object wins: in a stream it comes in the final chunk.
    """
    at = data.rfind(b'"usage"')
    if at == -1:
        return {}
    match = _USAGE_OBJECT.match(data, at + 7)
    if match is None:
        return {}
    try:
        usage = json.loads(match.group(1))
    except ValueError:
        return {}
    if not isinstance(usage, dict):
        return {}
    found = {}
    for ours, theirs in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):
        value = usage.get(theirs, usage.get(ours))
        if isinstance(value, int) and not isinstance(value, bool):
            found[ours] = value
    return found
