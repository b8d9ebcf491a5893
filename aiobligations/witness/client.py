"""The ledger's side of witnessing: a background thread that asks witnesses to cosign checkpoints.

It runs in whichever process signs the ledger's checkpoints. At most every ``interval`` seconds it
reads the latest signed checkpoint from the store and sends it to every witness that has not
cosigned it, with a consistency proof from the size that witness last cosigned; the cosignatures
are kept in the store beside the checkpoint. It never touches the append path: a slow or dead
witness only delays cosignatures, which catch up when it answers again (with back-off between
failed attempts). While fewer than ``quorum`` witnesses have cosigned the latest checkpoint for
longer than ``lagging_after`` seconds, it logs ``witness.lagging``. A witness that has cosigned a
tree this log cannot extend (a rollback, or a fork) is an alarm: a ``witness.conflict`` record in
the ledger, and a ``witness.conflict`` error in the log.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ..errors import ConfigurationError
from ..ledger.note import Verifier
from ..ledger.reader import checkpoint_of
from ._rounds import Rounds, check_seconds
from .cosignature import CosignatureError, WitnessVerifier, format_add_checkpoint, split_note

__all__ = ["CONFLICT_KIND", "ConflictWatch", "WitnessClient", "WitnessServer", "WitnessSettings", "cosigned_checkpoint"]

log = structlog.get_logger("aiobligations.witness")

CONFLICT_KIND = "witness.conflict"
"""The kind of the ledger record written when a witness answers with a conflict."""


@dataclass(frozen=True)
class WitnessServer:
    """One witness: where it listens and its verifier key.

    Attributes:
        url: The submission prefix; ``/add-checkpoint`` is appended.
        verifier: The witness's cosignature/v1 key.

    .. versionadded:: 0.2.0
    """

    url: str
    verifier: WitnessVerifier


@dataclass(frozen=True)
class WitnessSettings:
    """The profile's ``[witnesses]``: who to ask, how many must answer, how often.

    Attributes:
        servers: The witnesses.
        quorum: How many cosignatures a checkpoint needs before auditors should trust it.
        interval: Seconds between rounds (at most one checkpoint sent per round).
        lagging_after: Seconds without a quorum before ``witness.lagging`` is logged.
        timeout: Seconds to wait for one witness's answer.
        max_backoff: The longest wait before retrying a witness that failed.

    .. versionadded:: 0.2.0
    """

    servers: tuple[WitnessServer, ...]
    quorum: int = 1
    interval: float = 10.0
    lagging_after: float = 300.0
    timeout: float = 10.0
    max_backoff: float = 300.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigurationError("[witnesses] servers must list at least one witness")
        if not 1 <= self.quorum <= len(self.servers):
            raise ConfigurationError(
                f"[witnesses] quorum must be between 1 and the number of servers ({len(self.servers)}), "
                f"got {self.quorum}")
        check_seconds("witnesses", self, ("interval", "lagging_after", "timeout", "max_backoff"))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> WitnessSettings:
        """
        Read the profile's ``[witnesses]`` table (or :meth:`as_dict`'s output).

        Args:
            raw: ``{"quorum": K, "servers": [{"url": …, "key": VKEY}, …], "interval": …,
                "lagging_after": …}``.

        Returns:
            The settings.

        Raises:
            ConfigurationError: If a value is missing or invalid; the message names it.
        """
        if not isinstance(raw, Mapping):
            raise ConfigurationError("[witnesses] must be a table")
        servers = raw.get("servers")
        if not isinstance(servers, list):
            raise ConfigurationError('[witnesses] servers must be a list of { url = "…", key = "…" }')
        parsed = []
        for number, server in enumerate(servers, 1):
            if not isinstance(server, Mapping) or not isinstance(server.get("url"), str) \
                    or not isinstance(server.get("key"), str):
                raise ConfigurationError(f"[witnesses] server {number} needs a url and a key (strings)")
            url = server["url"].rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError(f"[witnesses] server {number}: the url must be http(s)://…, got {url!r}")
            try:
                verifier = WitnessVerifier.from_key(server["key"])
            except CosignatureError as exc:
                raise ConfigurationError(f"[witnesses] server {number}: {exc}") from None
            parsed.append(WitnessServer(url, verifier))
        quorum = raw.get("quorum", 1)
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            raise ConfigurationError(f"[witnesses] quorum must be an integer, got {quorum!r}")
        options = {name: raw[name] for name in ("interval", "lagging_after", "timeout", "max_backoff") if name in raw}
        return cls(tuple(parsed), quorum, **options)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a writer process's configuration; :meth:`from_dict` reads them back."""
        return {"quorum": self.quorum, "interval": self.interval, "lagging_after": self.lagging_after,
                "timeout": self.timeout, "max_backoff": self.max_backoff,
                "servers": [{"url": s.url, "key": s.verifier.verifier_key} for s in self.servers]}


class _Peer:
    """What the client knows of one witness."""

    def __init__(self, server: WitnessServer, size: int | None) -> None:
        self.server = server
        self.key = server.verifier.verifier_key
        self.size = size  # The size it last cosigned, as far as we know (None: ask).
        self.failures = 0
        self.next_try = 0.0
        self.conflict: str | None = None


class WitnessClient(Rounds):
    """The background thread that collects cosignatures for one ledger.

    Args:
        store: The ledger's store (read for checkpoints and proofs, written for cosignatures).
        settings: The witnesses.
        log_verifier: The log's own verifier (the checkpoints it sends must verify with it).
        consistency_proof: ``(size1, size2) -> hashes``, the ledger's consistency proofs.
        record: Appends a record to the ledger (for ``witness.conflict``); must not block.

    .. versionadded:: 0.2.0
    """

    NAME = "witness"

    def __init__(self, store: Any, settings: WitnessSettings, *, log_verifier: Verifier,
                 consistency_proof: Callable[[int, int], list[bytes]],
                 record: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self.settings = settings
        self.log_verifier = log_verifier
        self.consistency_proof = consistency_proof
        self.record = record
        known = store.witness_sizes()
        self.peers = [_Peer(server, known.get(server.verifier.verifier_key)) for server in settings.servers]
        self._unquorate_since: float | None = None
        self._lagging_logged = 0.0
        self._start_rounds(settings.interval)

    def round(self) -> int:
        """
        Send the latest checkpoint to every witness that has not cosigned it (those not backing off).

        Returns:
            How many witnesses have cosigned the latest checkpoint after this round.
        """
        size, note = self.store.tree_head()
        if note is None:
            return 0
        checkpoint = checkpoint_of(note)
        size = checkpoint.size
        now = time.monotonic()
        for peer in self.peers:
            if self._stop.is_set():
                break
            if peer.size == size and self._has(size, peer.key) or peer.next_try > now:
                continue
            self._ask(peer, size, note)
        done = {witness for _, witness, _, _ in self.store.cosignatures(size)}
        cosigned = sum(1 for peer in self.peers if peer.key in done)
        self._check_quorum(size, cosigned)
        return cosigned

    def _has(self, size: int, key: str) -> bool:
        return any(witness == key for _, witness, _, _ in self.store.cosignatures(size))

    def _ask(self, peer: _Peer, size: int, note: str) -> None:
        # At most three exchanges: learn the witness's size from a 409, then send the proof from it.
        for _ in range(3):
            old = peer.size if peer.size is not None and peer.size <= size else 0
            if peer.size is not None and peer.size > size:
                self._conflict(peer, size, f"the witness has cosigned size {peer.size}, larger than this log's {size}")
                return
            try:
                proof = self.consistency_proof(old, size) if 0 < old < size else []
            except Exception as exc:  # The records the proof needs were pruned since the witness's size.
                self._failed(peer, f"no consistency proof from the witness's size {old} to {size} "
                                   f"({type(exc).__name__}: {exc})")
                return
            status, body = self._post(peer, format_add_checkpoint(old, proof, note))
            if status == 200:
                self._accept(peer, size, note, body)
                return
            if status == 409:
                try:
                    peer.size = int(body.strip())
                except ValueError:
                    self._failed(peer, f"409 with an unreadable size {body[:40]!r}")
                    return
                if peer.size > size:
                    self._conflict(peer, size, f"the witness has cosigned size {peer.size}, larger than this log's {size}")
                    return
                continue
            if status == 422 and old > 0:
                self._conflict(peer, size, f"the witness refuses the consistency proof from its size {old}: "
                                           f"the tree it cosigned is not a prefix of this one")
                return
            self._failed(peer, f"HTTP {status}: {body.strip()[:200]}" if status else body)
            return
        self._failed(peer, "the witness kept changing its size")

    def _post(self, peer: _Peer, body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(peer.server.url + "/add-checkpoint", data=body, method="POST",
                                         headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:  # noqa: S310
                return int(response.status), response.read(1 << 16).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read(1 << 16).decode("utf-8", "replace")
        except (OSError, ValueError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    def _accept(self, peer: _Peer, size: int, note: str, body: str) -> None:
        text, _ = split_note(note)
        kept = 0
        for line in body.splitlines():
            try:
                peer.server.verifier.verify_line(text, line)
            except CosignatureError:
                continue  # Lines of other keys are ignored, as the spec says.
            self.store.add_cosignature(size, peer.key, note, line + "\n")
            kept += 1
        if not kept:
            self._failed(peer, "200 without a valid cosignature by the configured key")
            return
        peer.size = size
        peer.failures = 0
        peer.next_try = 0.0
        if peer.conflict is not None:
            log.info("witness.conflict_cleared", witness=peer.server.url)
            peer.conflict = None
        log.debug("witness.cosigned", witness=peer.server.url, size=size)

    def _failed(self, peer: _Peer, why: str) -> None:
        peer.failures += 1
        delay = min(self.settings.max_backoff, self.settings.interval * 2 ** min(peer.failures - 1, 16))
        peer.next_try = time.monotonic() + delay
        log.warning("witness.failed", witness=peer.server.url, error=why, retry_in=round(delay, 3))

    def _conflict(self, peer: _Peer, size: int, why: str) -> None:
        self._failed(peer, why)
        if peer.conflict == why:
            return  # Reported already; keep retrying quietly in case the operator resolves it.
        peer.conflict = why
        log.error("witness.conflict", witness=peer.server.url, witness_key=peer.key, size=size, reason=why)
        try:
            self.record({"kind": CONFLICT_KIND, "witness": peer.key, "url": peer.server.url,
                         "size": size, "witness_size": peer.size, "reason": why})
        except Exception as exc:  # A closed or full ledger: the structlog error above still stands.
            log.error("witness.conflict_not_recorded", error=f"{type(exc).__name__}: {exc}")

    def _check_quorum(self, size: int, cosigned: int) -> None:
        now = time.monotonic()
        if cosigned >= self.settings.quorum:
            self._unquorate_since = None
            return
        if self._unquorate_since is None:
            self._unquorate_since = now
        waited = now - self._unquorate_since
        if waited >= self.settings.lagging_after and now - self._lagging_logged >= self.settings.lagging_after:
            self._lagging_logged = now
            log.warning("witness.lagging", size=size, cosignatures=cosigned, quorum=self.settings.quorum,
                        seconds=round(waited, 1))


def cosigned_checkpoint(store: Any, note: str | None = None) -> str | None:
    """
    A checkpoint with the witnesses' cosignature lines appended.

    Args:
        store: The ledger's store.
        note: A signed checkpoint of the ledger; default the latest one that has cosignatures (or,
            with none anywhere, the latest signed checkpoint).

    Returns:
        The note with every kept cosignature of its size appended, or ``None`` with no checkpoint.

    .. versionadded:: 0.2.0
    """
    if note is None:
        sizes = store.witness_sizes()  # One indexed lookup per witness, not every cosignature kept.
        rows = store.cosignatures(max(sizes.values())) if sizes else []
        if rows:
            note = rows[0][2]
        else:
            note = store.tree_head()[1]
            if note is None:
                return None
    size = checkpoint_of(note).size
    out = note
    for _, _, kept_note, line in store.cosignatures(size):
        if kept_note == note and line not in out:
            out += line
    return out


class ConflictWatch:
    """The ``witness.conflict`` records of a ledger, followed incrementally, for the transparency document.

    :meth:`current` never touches the ledger on the caller's thread: it returns what is known and,
    at most every ``interval`` seconds, starts a short thread that reads the records written since
    (only the new index range is scanned).

    Args:
        ledger: The ledger (any kind: every process sees every record).
        interval: Seconds between two looks at the ledger.

    .. versionadded:: 0.2.0
    """

    def __init__(self, ledger: Any, *, interval: float = 5.0) -> None:
        self.ledger = ledger
        self.interval = interval
        self._seen = 0
        self._conflicts: tuple[dict[str, Any], ...] = ()
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> tuple[dict[str, Any], ...]:
        """The conflicts known now (oldest first); refreshes in the background when due."""
        now = time.monotonic()
        if now - self._checked >= self.interval and self._lock.acquire(blocking=False):
            self._checked = now
            threading.Thread(target=self._refresh_locked, name="aiobligations-witness-conflicts", daemon=True).start()
        return self._conflicts

    def refresh(self) -> tuple[dict[str, Any], ...]:
        """Read the records written since the last look, now, on this thread; return every conflict."""
        with self._lock:
            self._read()
        return self._conflicts

    def _refresh_locked(self) -> None:
        try:
            self._read()
        except Exception as exc:  # A closed or unreachable ledger: keep what is known, try again later.
            log.warning("witness.conflicts_unread", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._lock.release()

    def _read(self) -> None:
        end = self.ledger.durable_size()
        start = max(self._seen, self.ledger.first_index)
        found = []
        for index in self.ledger.indices_of((CONFLICT_KIND,), start, end):
            record = self.ledger.read(index)
            found.append({"index": index, "ts": record.get("ts"), "witness": record.get("witness"),
                          "size": record.get("size"), "witness_size": record.get("witness_size"),
                          "reason": record.get("reason")})
        self._seen = max(self._seen, end)
        if found:
            self._conflicts = (*self._conflicts, *found)
