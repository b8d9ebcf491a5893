"""A background thread that works in rounds: every ``interval`` seconds, or at once when poked."""

from __future__ import annotations

import threading
from typing import Self

import structlog

from ..errors import ConfigurationError

log = structlog.get_logger("aiobligations.witness")


def check_seconds(table: str, settings: object, names: tuple[str, ...]) -> None:
    """Raise ConfigurationError unless each named setting is a positive number of seconds."""
    for name in names:
        value = getattr(settings, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ConfigurationError(f"[{table}] {name} must be a positive number of seconds, got {value!r}")


class Rounds:
    """The thread of the ledger's witness and timestamp clients: ``round()`` every ``interval`` seconds.

    A subclass sets :attr:`NAME` (the thread's name and the log event's prefix), calls
    :meth:`_start_rounds` in ``__init__`` and implements :meth:`round`.
    """

    NAME = ""
    interval: float

    def _start_rounds(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"aiobligations-{self.NAME}", daemon=True)

    def round(self) -> int:
        """One round of work; returns how much was done."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread; returns ``self``."""
        self._thread.start()
        return self

    def poke(self) -> None:
        """Start a round now rather than at the next interval (tests, and after a final checkpoint)."""
        self._wake.set()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the thread (an answer in flight is waited for up to ``timeout``). Idempotent."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any one failure: log it, go on.
                log.error(f"{self.NAME}.round_failed", error=f"{type(exc).__name__}: {exc}")
            self._wake.wait(self.interval)
            self._wake.clear()
