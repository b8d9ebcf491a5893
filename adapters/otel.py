"""OpenTelemetry: the ids that link evidence records to traces (Art. 34 traceability)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

__all__ = ["annotate_span", "current_trace_ids"]


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace id (32 hex digits) and span id (16), or ``(None, None)``.

    Works with only the OpenTelemetry API installed: without an SDK there is never a valid span.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_span_if_recording() -> Any:
    """The current span when it records (an SDK is configured and sampled it), else ``None``.

    The middleware asks once per request, so that finding the model and usage in the bodies (for
    the GenAI attributes) is only paid for when a span will keep them.
    """
    span = trace.get_current_span()
    return span if span.is_recording() else None


def annotate_span(attributes: Mapping[str, Any], span: Any = None) -> None:
    """Set attributes on ``span`` (default: the current span) if it is recording; ``None`` values are skipped.

    Compliance facts (the interaction id, the disclosure mode) and the GenAI semantic-convention
    names for model and usage go on the span the app is already in: never a span of our own per
    request or per ASGI message.
    """
    if span is None:
        span = trace.get_current_span()
    if not span.is_recording():
        return
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key, value)
