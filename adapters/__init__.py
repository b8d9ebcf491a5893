"""The edges of aiobligations: logging, structlog and OpenTelemetry (and, later, storage backends).

Adapters import the core and implement its protocols; the core never imports them.
"""

from .logs import LedgerHandler, LedgerProcessor
from .otel import annotate_span, current_trace_ids

__all__ = ["LedgerHandler", "LedgerProcessor", "annotate_span", "current_trace_ids"]
