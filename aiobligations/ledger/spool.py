"""The ``fail_open`` spool: records the ledger could not take wait here, sealed, to be replayed.

A record carries personal data in clear until the ledger seals it, so each spooled line is
encrypted with the master key. Writing happens on a background thread: the event loop never
touches the disk. Replay runs when the spool is opened and whenever the ledger accepts again.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import structlog

from ..errors import LedgerError
from .ledger import Ledger

__all__ = ["Spool"]

log = structlog.get_logger("aiobligations.spool")

_LABEL = b"aiobligations/spool/v1\n"


class Spool:
    """A local, durable, encrypted holding file for records the ledger turned away.

    Args:
        path: The spool file.
        ledger: The ledger records are replayed into.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], ledger: Ledger) -> None:
        self.path = Path(path)
        self._ledger = ledger
        self._queue: SimpleQueue[dict[str, Any] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.pending = 0
        self._replaying = False
        self.replay()

    def put(self, record: dict[str, Any], *, reason: str) -> None:
        """Keep ``record`` for later; never blocks and never raises."""
        record = {**record, "spooled": reason}
        with self._lock:
            self.pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._write, name="aiobligations-spool", daemon=True)
                self._thread.start()
        self._queue.put(record)
        log.warning("ledger_record_spooled", reason=reason, interaction_id=record.get("interaction_id"))

    def _write(self) -> None:
        master = self._ledger.master_key
        while True:
            record = self._queue.get()
            if record is None:
                return
            batch = [record]
            while not self._queue.empty() and len(batch) < 1024:
                item = self._queue.get()
                if item is None:
                    break
                batch.append(item)
            try:
                lines = b"".join(
                    base64.b64encode(master.wrap(json.dumps(r, ensure_ascii=False).encode(), _LABEL)) + b"\n"
                    for r in batch
                )
                with open(self.path, "ab") as handle:
                    handle.write(lines)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(self.path, 0o600)
            except (OSError, TypeError, ValueError) as exc:
                log.error("spool_write_failed", error=f"{type(exc).__name__}: {exc}", records=len(batch))

    def replay_soon(self) -> None:
        """Replay on a background thread, unless a replay is already running."""
        with self._lock:
            if self._replaying or not self.pending:
                return
            self._replaying = True

        def run() -> None:
            try:
                self.replay()
            finally:
                self._replaying = False

        threading.Thread(target=run, name="aiobligations-spool-replay", daemon=True).start()

    def replay(self) -> int:
        """Submit every spooled record to the ledger and empty the spool; return how many.

        Records the ledger still cannot take stay in the spool.
        """
        with self._lock:
            if not self.path.exists():
                return 0
            master = self._ledger.master_key
            kept: list[bytes] = []
            replayed = 0
            for line in self.path.read_bytes().splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(master.unwrap(base64.b64decode(line), _LABEL))
                except (LedgerError, ValueError):
                    log.error("spool_line_unreadable")
                    kept.append(line)
                    continue
                try:
                    self._ledger.submit(record)
                    replayed += 1
                except LedgerError:
                    kept.append(line)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_bytes(b"".join(k + b"\n" for k in kept))
            os.replace(tmp, self.path)
            if not kept:
                self.path.unlink(missing_ok=True)
            self.pending = len(kept)
            if replayed:
                log.info("spool_replayed", records=replayed, kept=len(kept))
            return replayed
