"""OpenTelemetry: the ids that link evidence records to traces (Art. 34 traceability)."""

from __future__ import annotations

from opentelemetry import trace

__all__ = ["current_trace_ids"]


def current_trace_ids() -> tuple[str | None, str | None]:
    """The current span's trace id (32 hex digits) and span id (16), or ``(None, None)``.

    Works with only the OpenTelemetry API installed: without an SDK there is never a valid span.
    """
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
