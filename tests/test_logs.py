"""The service's own logs go into the ledger, linked to the interaction and the trace."""

from __future__ import annotations

import logging

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from aiobligations.adapters import LedgerHandler, LedgerProcessor
from aiobligations.interaction import current_interaction_id, interaction_scope, uuid7


@pytest.fixture
def logger():
    log = logging.getLogger("test.service")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.handlers.clear()


def test_stdlib_records_are_linked_to_interaction_and_trace(make_ledger, logger) -> None:
    ledger = make_ledger()
    logger.addHandler(LedgerHandler(ledger))
    tracer = TracerProvider().get_tracer("test")

    with tracer.start_as_current_span("inference") as span, interaction_scope("ia-1"):
        logger.warning("model slow: %d ms", 900, extra={"route": "/v1/chat"})
    logger.debug("below the handler's level")
    ledger.flush()

    assert 1 == ledger.size
    record = ledger.read(0)
    context = span.get_span_context()
    assert ("log", "warning", "test.service", "model slow: 900 ms") == (
        record["kind"], record["level"], record["logger"], record["event"])
    assert "ia-1" == record["interaction_id"]
    assert format(context.trace_id, "032x") == record["trace_id"]
    assert format(context.span_id, "016x") == record["span_id"]
    assert {"route": "/v1/chat"} == record["fields"]


def test_personal_fields_are_sealed_under_the_subject(make_ledger, logger) -> None:
    ledger = make_ledger()
    logger.addHandler(LedgerHandler(ledger, personal_keys=("prompt",)))

    logger.info("prompt received", extra={"subject": "alice", "prompt": "my secret", "tokens": 3})
    logger.info("no subject", extra={"prompt": "dropped, not stored in clear"})
    ledger.flush()

    sealed = ledger.read(0)
    assert {"prompt": "my secret"} == sealed["personal"]
    assert {"tokens": 3} == sealed["fields"]
    assert b"my secret" not in ledger._store.get_record(0)[2]
    assert "dropped" not in str(ledger.read(1))


def test_structlog_processor_passes_events_through(make_ledger) -> None:
    ledger = make_ledger()
    processor = LedgerProcessor(ledger, "info")

    event = processor(None, "info", {"event": "answer sent", "tokens": 12, "weird": object()})
    processor(None, "debug", {"event": "ignored"})
    ledger.flush()

    assert "answer sent" == event["event"]
    record = ledger.read(0)
    assert ("info", "answer sent", 12) == (record["level"], record["event"], record["fields"]["tokens"])
    assert record["fields"]["weird"].startswith("<object object")
    assert 1 == ledger.size


def test_structlog_configured_chain(make_ledger) -> None:
    ledger = make_ledger()
    structlog.configure(processors=[structlog.processors.add_log_level, LedgerProcessor(ledger),
                                    structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())
    try:
        rendered = structlog.get_logger("svc").info("hello", route="/x")
    finally:
        structlog.reset_defaults()
    ledger.flush()

    assert '"event": "hello"' in rendered
    assert "hello" == ledger.read(0)["event"]


def test_a_full_queue_is_counted_and_reported_not_silent(make_ledger, logger) -> None:
    ledger = make_ledger()
    handler = LedgerHandler(ledger)
    logger.addHandler(handler)
    ledger.close()

    logger.info("lost while closed")

    assert 1 == handler.dropped


def test_uuid7_is_time_ordered_and_versioned() -> None:
    first, second = uuid7(), uuid7()

    assert 7 == first.version and 7 == second.version
    assert first.int >> 80 <= second.int >> 80
    assert current_interaction_id() is None
