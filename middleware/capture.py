"""Bounded capture of request and response bodies as they pass, never holding a stream back."""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["BodyCapture", "body_text", "json_fields"]


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


def json_fields(data: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """Top-level fields of a JSON object body, or ``{}`` when it is not one."""
    if not data.startswith(b"{"):
        return {}
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {name: value[name] for name in names if name in value}
