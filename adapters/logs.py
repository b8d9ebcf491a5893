"""Copy the service's own log events into the ledger (Art. 49(2): logs it generates automatically).

Two entry points, one record shape:

- :class:`LedgerHandler`, a stdlib :class:`logging.Handler`;
- :class:`LedgerProcessor`, a structlog processor.

Each event becomes a ``kind: log`` record linked to the current interaction and to the current
OpenTelemetry trace and span. Both only *submit*: they never wait on disk and never raise into the
caller. When the ledger's queue is full an event cannot be kept; the handler counts it and the next
event that gets through is preceded by a ``log.dropped`` record saying how many were lost, so a gap
is itself on the record.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from aiobligations.errors import LedgerError
from aiobligations.interaction import current_interaction_id
from aiobligations.ledger.ledger import Ledger

from .otel import current_trace_ids

__all__ = ["LedgerHandler", "LedgerProcessor"]

_WRITER_THREAD = "aiobligations-ledger-writer"
_LEVELS = logging.getLevelNamesMapping()
_STDLIB_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


def _json_safe(value: Any, depth: int = 0) -> Any:
    """Turn a log field into something JSON can hold, without ever raising."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 4 and isinstance(value, Mapping):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    try:
        return repr(value)
    except Exception:  # A broken __repr__ must not lose the event.
        return f"<unrepresentable {type(value).__name__}>"


class _Sink:
    """Builds log records and submits them, counting what a full queue turned away."""

    def __init__(self, ledger: Ledger, subject_key: str | None, personal_keys: Iterable[str]) -> None:
        self.ledger = ledger
        self.subject_key = subject_key
        self.personal_keys = frozenset(personal_keys)
        self._dropped = 0
        self._lock = threading.Lock()

    def emit(self, level: str, logger: str, event: str, fields: Mapping[str, Any]) -> None:
        # Events logged by the ledger's own writer thread would wait on themselves; they go to the
        # other handlers only.
        if threading.current_thread().name == _WRITER_THREAD:
            return
        record: dict[str, Any] = {"kind": "log", "level": level, "logger": logger}
        interaction_id = current_interaction_id()
        if interaction_id is not None:
            record["interaction_id"] = interaction_id
        trace_id, span_id = current_trace_ids()
        if trace_id is not None:
            record["trace_id"] = trace_id
            record["span_id"] = span_id
        subject = fields.get(self.subject_key) if self.subject_key else None
        personal: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in fields.items():
            if key == self.subject_key:
                continue
            if key in self.personal_keys:
                personal[key] = _json_safe(value)
            else:
                extra[key] = _json_safe(value)
        if isinstance(subject, str) and subject:
            record["subject"] = subject
            if "event" in self.personal_keys:
                personal["event"] = event
            else:
                record["event"] = event
            if personal:
                record["personal"] = personal
        else:
            # Without a subject nothing can be sealed, so fields marked personal are left out
            # rather than stored in clear.
            record["event"] = event if "event" not in self.personal_keys else "[personal, no subject]"
        if extra:
            record["fields"] = extra
        try:
            if self._dropped:
                with self._lock:
                    dropped, self._dropped = self._dropped, 0
                if dropped:
                    try:
                        self.ledger.submit({"kind": "log.dropped", "count": dropped})
                    except LedgerError:
                        with self._lock:
                            self._dropped += dropped
                        raise
            self.ledger.submit(record)
        except LedgerError:
            with self._lock:
                self._dropped += 1

    @property
    def dropped(self) -> int:
        """Events turned away by a full or closed ledger and not yet reported."""
        return self._dropped


class LedgerHandler(logging.Handler):
    """A :mod:`logging` handler that copies records into the ledger as ``kind: log``.

    Args:
        ledger: The ledger (``obligations.ledger``).
        level: The lowest level copied.
        subject_key: The name of an ``extra=`` field holding the person the event is about; with it,
            the fields in ``personal_keys`` are sealed under that subject's key.
        personal_keys: ``extra=`` fields holding personal data (``"event"`` seals the message).

    Example:
        >>> logging.getLogger().addHandler(LedgerHandler(obligations.ledger))  # doctest: +SKIP

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        ledger: Ledger,
        level: int | str = logging.INFO,
        *,
        subject_key: str | None = "subject",
        personal_keys: Iterable[str] = (),
    ) -> None:
        super().__init__(level)
        self._sink = _Sink(ledger, subject_key, personal_keys)

    @property
    def dropped(self) -> int:
        """Events a full ledger queue turned away that are not yet reported in a ``log.dropped``."""
        return self._sink.dropped

    def emit(self, record: logging.LogRecord) -> None:
        """Submit one log record; never raises, never waits on disk."""
        try:
            fields = {k: v for k, v in record.__dict__.items() if k not in _STDLIB_ATTRS}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exception"] = record.exc_info[0].__name__
            self._sink.emit(record.levelname.lower(), record.name, record.getMessage(), fields)
        except Exception:
            self.handleError(record)


class LedgerProcessor:
    """A structlog processor that copies each event into the ledger and passes it on unchanged.

    Put it before the renderer in the processor chain.

    Args:
        ledger: The ledger (``obligations.ledger``).
        level: The lowest level copied (needs ``structlog.stdlib.add_log_level`` or a bound logger
            that passes the method name, as structlog's default does).
        subject_key: The event key holding the person the event is about.
        personal_keys: Event keys holding personal data, sealed under the subject's key.

    Example:
        >>> structlog.configure(processors=[LedgerProcessor(obligations.ledger), ...])  # doctest: +SKIP

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        ledger: Ledger,
        level: int | str = logging.INFO,
        *,
        subject_key: str | None = "subject",
        personal_keys: Iterable[str] = (),
    ) -> None:
        self._level = level if isinstance(level, int) else _LEVELS[level.upper()]
        self._sink = _Sink(ledger, subject_key, personal_keys)

    @property
    def dropped(self) -> int:
        """Events a full ledger queue turned away that are not yet reported."""
        return self._sink.dropped

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level = str(event_dict.get("level", method_name)).lower()
        if _LEVELS.get(level.upper(), logging.INFO) < self._level:
            return event_dict
        try:
            fields = {k: v for k, v in event_dict.items() if k not in ("event", "level", "logger", "timestamp")}
            name = event_dict.get("logger") or getattr(logger, "name", None) or ""
            self._sink.emit(level, str(name), str(event_dict.get("event", "")), fields)
        except Exception:  # A processor that raises would break the app's logging call.
            pass
        return event_dict
