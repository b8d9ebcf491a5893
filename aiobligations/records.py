"""The interaction record: one shape for every AI interaction, whichever way it reached the model.

The ASGI middleware (an HTTP request) and ``@obligations.inference`` (a function call) both end an
interaction by filling an :class:`InteractionRecord` with plain values, and both hand it to the
ledger with :meth:`~aiobligations.ledger.Ledger.submit_deferred`; the ledger's writer (by default
the shared writer process, off the serving core) builds the record dict with
:func:`interaction_record`: it finds the model and the token usage in the captured bodies, turns
bodies into JSON-ready evidence and seals what is personal. Being a tuple of plain values, an
:class:`InteractionRecord` costs the request path almost nothing and crosses to the writer process
as it is; its captured bodies (:data:`BODY_FIELDS`) travel beside the frame, without a copy.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from .ledger.records import format_ts

__all__ = [
    "BODY_FIELDS",
    "InteractionRecord",
    "body_text",
    "find_string_field",
    "find_true",
    "find_usage",
    "interaction_record",
]


class InteractionRecord(NamedTuple):
    """What is known of one AI interaction when it ends, as plain values.

    ``channel`` says which fields apply: ``"http"`` (the middleware: route, method, status, byte
    counts, captured bodies, the disclosure it made) or ``"inference"`` (a decorated function:
    ``call``, ``fields`` and the captured ``personal`` input and output, already JSON-ready).
    Times: ``started`` is a Unix time, ``duration`` and ``first_byte`` seconds since the start.
    """

    channel: str
    interaction_id: str
    outcome: str
    started: float
    duration: float
    subject: str | None = None
    error: str | None = None
    # -- http ------------------------------------------------------------------------------
    route: str | None = None
    method: str | None = None
    status: int | None = None
    first_byte: float | None = None
    header_disclosed: bool = False
    body_notice: str = "none"
    first_contact: bool = False
    document_version: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    labels_applied: int | None = None
    label_error: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    capture: bool = False
    request_chunks: Sequence[bytes] = ()
    response_chunks: Sequence[bytes] = ()
    capture_limit: int = 0
    truncated: bool = False
    # -- inference -------------------------------------------------------------------------
    call: str | None = None
    fields: dict[str, Any] | None = None
    personal: dict[str, Any] | None = None
    capture_skipped: bool = False
    # -- http, at the end so that positional records built before it still read ----------------
    # The model the middleware named when the response started (the app's response header, else
    # the request, else the route's configuration, else the profile's default when the whole
    # request was seen and names none); None when it could not tell.
    model: str | None = None


BODY_FIELDS = ("request_chunks", "response_chunks")
"""The fields of an :class:`InteractionRecord` holding captured bodies (lists of bytes)."""


def body_text(data: bytes) -> dict[str, Any]:
    """A body as JSON-ready evidence: UTF-8 text when it is, base64 otherwise."""
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


_STRING_VALUE = re.compile(rb'\s*:\s*"((?:[^"\\]|\\.){0,512})"')
_TRUE_VALUE = re.compile(rb"\s*:\s*true\b")
# A usage object, allowing one level of nested objects (OpenAI's *_tokens_details).
# Runs of plain characters, not one character at a time, and possessive, so a body without the
# closing brace fails at once instead of backtracking through every way of splitting the runs. The
# window bounds the search to 2 KiB of object.
_USAGE_OBJECT = re.compile(rb"\s*:\s*(\{(?:[^{}]++|\{[^{}]*+\})*+\})")
_USAGE_WINDOW = 2056


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
            raw = match.group(1)
            try:
                if b"\\" not in raw:
                    # The common case, nothing escaped (the middleware asks this on every request).
                    text = raw.decode()
                    if text.isprintable():
                        return text
                value = json.loads('"' + raw.decode() + '"')
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
    match = _USAGE_OBJECT.match(data[at + 7 : at + 7 + _USAGE_WINDOW])
    if match is None:
        return {}
    try:
        usage = json.loads(match.group(1).decode())
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


def interaction_record(*values: Any) -> dict[str, Any]:
    """Build the ``interaction`` record of one interaction from its :class:`InteractionRecord` values.

    The ledger calls it on its side (see :meth:`aiobligations.ledger.Ledger.submit_deferred`), so
    the caller pays only for a tuple of plain values.

    Returns:
        For ``http``: ``kind``, ``interaction_id``, ``route``, ``method``, ``status``, ``outcome``,
        ``started``, ``duration_ms``, ``disclosure``, byte counts, ``subject``, then what is known
        of ``first_byte_ms``, ``error``, ``labels``, ``model``, ``stream``, ``usage``,
        ``trace_id``/``span_id``, and ``personal`` (the captured bodies, sealed). For
        ``inference``: ``kind``, ``interaction_id``, ``call``, ``outcome``, ``started``,
        ``duration_ms``, ``disclosure``, the caller's ``fields``, then ``error``, ``subject`` and
        ``personal`` (input and output, sealed) or ``capture`` (why nothing was kept).
    """
    i = InteractionRecord(*values)
    if i.channel == "inference":
        return _inference_record(i)
    record: dict[str, Any] = {
        "kind": "interaction",
        "interaction_id": i.interaction_id,
        "route": i.route,
        "method": i.method,
        "status": i.status,
        "outcome": i.outcome,
        "started": format_ts(i.started),
        "duration_ms": round(i.duration * 1000, 3),
        "disclosure": {
            "header": i.header_disclosed,
            "body": i.body_notice,
            "notice": "first-contact" if i.first_contact else "short",
            "document": i.document_version,
        },
        "request_bytes": i.request_bytes,
        "response_bytes": i.response_bytes,
        "subject": i.subject,
    }
    if i.first_byte is not None:
        record["first_byte_ms"] = round(i.first_byte * 1000, 3)
    if i.error is not None:
        record["error"] = i.error
    if i.labels_applied is not None:
        record["labels"] = {"applied": i.labels_applied, "error": i.label_error}
    request = b"".join(i.request_chunks)
    response = b"".join(i.response_chunks)
    failed = i.status is not None and i.status >= 400
    if failed:
        # An error answer is no AI content: it disclosed nothing and used up no notice. The model
        # asked for is kept as asked, not as the model that served (none did).
        record["disclosure"]["header"] = False
        record["disclosure"]["notice"] = "none"
        record["error"] = i.error or f"http_{i.status}"
        code = find_string_field(response, b"code")
        if code:
            record["error_code"] = code[:100]
        requested = i.model or find_string_field(request, b"model")
        if requested:
            record["requested_model"] = requested[:200]
    else:
        # The model that served: the one the response body names (it arrives after the headers,
        # so only the record can use it), else the one the middleware disclosed in the header.
        model = find_string_field(response, b"model") or i.model or find_string_field(request, b"model")
        if model:
            record["model"] = model[:200]
    if find_true(request, b"stream"):
        record["stream"] = True
    usage = find_usage(response)
    if usage:
        record["usage"] = usage
    if i.trace_id:
        record["trace_id"], record["span_id"] = i.trace_id, i.span_id
    if i.capture:
        record["personal"] = {
            "request": body_text(request),
            "response": body_text(response),
            "capture_limit": i.capture_limit,
            "truncated": i.truncated,
        }
    return record


def _inference_record(i: InteractionRecord) -> dict[str, Any]:
    record: dict[str, Any] = {
        "kind": "interaction",
        "interaction_id": i.interaction_id,
        "call": i.call,
        "outcome": i.outcome,
        "started": format_ts(i.started),
        "duration_ms": round(i.duration * 1000, 3),
        "disclosure": {"notice": "available", "channel": "inference"},
        **(i.fields or {}),
    }
    if i.error is not None:
        record["error"] = i.error
    if i.subject:
        record["subject"] = i.subject
        if i.personal is not None:
            record["personal"] = i.personal
    elif i.capture_skipped:
        # Without a subject nothing can be sealed; inputs and outputs are left out, not stored in clear.
        record["capture"] = "skipped: no subject to seal it for"
    return record


#: The positions of :data:`BODY_FIELDS`: a writer process gets them without a copy.
interaction_record.out_of_band_args = tuple(InteractionRecord._fields.index(name) for name in BODY_FIELDS)  # type: ignore[attr-defined]
