"""Bounded capture of request and response bodies as they pass, never holding a stream back."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any

from aiobligations.ledger.records import format_ts

__all__ = ["BodyCapture", "body_text", "find_string_field", "find_true", "find_usage", "interaction_record"]


class BodyCapture:
    """Keeps the first ``limit`` bytes of a body and counts all of them.

    Args:
        limit: The most bytes kept; the rest is only counted.
    """

    __slots__ = ("kept", "kept_bytes", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: How many bytes passed.
        self.size = 0
        #: How many of them are kept.
        self.kept_bytes = 0
        #: The kept bytes, as the chunks they arrived in (no copy; join them to read them).
        self.kept: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        """Tee one chunk: count it and keep what still fits."""
        if not chunk:
            return
        self.size += len(chunk)
        room = self.limit - self.kept_bytes
        if room > 0:
            piece = chunk if len(chunk) <= room else chunk[:room]
            self.kept.append(piece)
            self.kept_bytes += len(piece)

    @property
    def truncated(self) -> bool:
        """Whether more was seen than kept."""
        return self.size > self.kept_bytes

    def value(self) -> bytes:
        """The kept bytes, joined (the chunks are then replaced by the one joined chunk)."""
        if len(self.kept) > 1:
            self.kept = [b"".join(self.kept)]
        return self.kept[0] if self.kept else b""


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


def interaction_record(
    interaction_id: str, route: str, method: str, status: int | None, outcome: str, started: float,
    duration: float, first_byte: float | None, header_disclosed: bool, body_notice: str,
    first_contact: bool, document_version: str, request_bytes: int, response_bytes: int, subject: str,
    error: str | None, labels_applied: int | None, label_error: str | None, trace_id: str | None,
    span_id: str | None, capture: bool, request_chunks: Sequence[bytes], response_chunks: Sequence[bytes],
    capture_limit: int, truncated: bool,
) -> dict[str, Any]:
    """Build the ``interaction`` record of one request from what the middleware gathered.

    The ledger calls it on its side (see :meth:`aiobligations.ledger.Ledger.submit_deferred`), so
    the event loop pays only for a tuple of plain values (``duration`` and ``first_byte`` are
    seconds since the request arrived): the dict, the model and usage found in
    the bodies, and the bodies as JSON-ready evidence are made here, in the writer.

    Returns:
        The record, ready for the ledger: ``kind``, ``interaction_id``, ``route``, ``method``,
        ``status``, ``outcome``, ``started``, ``duration_ms``, ``disclosure``, byte counts, ``subject``,
        then what is known of ``first_byte_ms``, ``error``, ``labels``, ``model``, ``stream``,
        ``usage``, ``trace_id``/``span_id``, and ``personal`` (the captured bodies, sealed).
    """
    record: dict[str, Any] = {
        "kind": "interaction",
        "interaction_id": interaction_id,
        "route": route,
        "method": method,
        "status": status,
        "outcome": outcome,
        "started": format_ts(started),
        "duration_ms": round(duration * 1000, 3),
        "disclosure": {
            "header": header_disclosed,
            "body": body_notice,
            "notice": "first-contact" if first_contact else "short",
            "document": document_version,
        },
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "subject": subject,
    }
    if first_byte is not None:
        record["first_byte_ms"] = round(first_byte * 1000, 3)
    if error is not None:
        record["error"] = error
    if labels_applied is not None:
        record["labels"] = {"applied": labels_applied, "error": label_error}
    request = b"".join(request_chunks)
    model = find_string_field(request, b"model")
    if model:
        record["model"] = model[:200]
    if find_true(request, b"stream"):
        record["stream"] = True
    response = b"".join(response_chunks)
    del response_chunks
    usage = find_usage(response)
    if usage:
        record["usage"] = usage
    if trace_id:
        record["trace_id"], record["span_id"] = trace_id, span_id
    if capture:
        record["personal"] = {
            "request": body_text(request),
            "response": body_text(response),
            "capture_limit": capture_limit,
            "truncated": truncated,
        }
    return record


#: The arguments of :func:`interaction_record` that hold captured bodies: a writer process gets them
#: without a copy (see :mod:`aiobligations.ledger.process`).
interaction_record.out_of_band_args = (21, 22)  # type: ignore[attr-defined]
