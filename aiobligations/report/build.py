"""Build the audit report: verify the ledger, then compute every figure against that checkpoint.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, LedgerBroken, UnusableInput
from ..ledger.merkle import CompactRange
from ..ledger.note import NoteError
from ..ledger.reader import checkpoint_of
from ..ledger.records import format_ts, parse_record, parse_ts
from ..ledger.retention import DAY, FLOORS
from ..ledger.store import SQLiteStore, Store
from ..ledger.verify import verify_path
from ..profile import Profile, load_profile
from .collect import (
    Collector,
    ControlEvent,
    DisclosureFigures,
    ErasureFigures,
    Incident,
    LabelFigures,
    RequestFigures,
    RetentionFigures,
)

if TYPE_CHECKING:
    from ..obligations import Obligations

__all__ = ["CheckpointInfo", "Report", "build_report"]


@dataclass(frozen=True)
class CheckpointInfo:
    """The signed checkpoint a report was computed against, for the auditor to check it themselves.

    Attributes:
        origin: The log's origin (the note's first line).
        size: The tree size: the report reads records ``[first_index, size)``.
        root: The root hash, base64, as in the note.
        note: The whole signed note.
        key: The verifier key the note was verified with.
        first_index: The first stored record (records before it were pruned).

    .. versionadded:: 0.2.0
    """

    origin: str
    size: int
    root: str
    note: str
    key: str
    first_index: int


@dataclass
class Report:
    """The audit report's figures: one section per provider article the SDK serves.

    Build it with :func:`build_report`; :meth:`html` renders it. The same checkpoint and window
    always give the same report, byte for byte.

    .. versionadded:: 0.2.0
    """

    checkpoint: CheckpointInfo
    provider: dict[str, str]
    window: tuple[str | None, str | None]
    as_of: str
    """The time the figures are taken at: the window's end, or the last record the checkpoint signs."""
    records: int
    first_record: str | None
    last_record: str | None
    kinds: dict[str, int]
    configured: dict[str, list[tuple[str, str]]]
    """What the profile configures, per section: (setting, value) pairs."""
    disclosure: DisclosureFigures
    labels: LabelFigures
    requests: RequestFigures
    incidents: list[Incident]
    takeovers: list[ControlEvent]
    terminations: list[ControlEvent]
    retention: RetentionFigures
    erasures: ErasureFigures
    other_controls: list[ControlEvent] = field(default_factory=list)

    def html(self) -> str:
        """The report as one self-contained HTML page (inline CSS and SVG, no script, no fetch)."""
        from .render import render_html  # jinja2: the report extra.

        return render_html(self)


def _profile_of(source: Any) -> tuple[Profile, Any]:
    if isinstance(source, Profile):
        return source, None
    if isinstance(source, (str, os.PathLike)):
        return load_profile(source), None
    profile = getattr(source, "profile", None)
    if isinstance(profile, Profile):
        return profile, source
    raise ConfigurationError(
        f"build_report needs a Profile, an Obligations or a profile's path, got {type(source).__name__}"
    )


def _verifier_key(profile: Profile, hub: Any) -> str:
    signer = getattr(getattr(hub, "ledger", None), "signer", None)
    if signer is not None:
        return str(signer.verifier_key)
    from ..keys import load_signer

    return load_signer(profile.ledger.signing_key, profile.ledger.origin).verifier_key


def _open_store(profile: Profile) -> Store:
    if profile.ledger.url is not None:
        from ..ledger.postgres import PostgresStore

        return PostgresStore(profile.ledger.url, schema=profile.ledger.schema, readonly=True)
    if not Path(profile.ledger.path).is_file():
        raise UnusableInput(f"{profile.ledger.path}: no ledger there yet")
    return SQLiteStore(profile.ledger.path, create=False, readonly=True)


def _seconds(value: datetime | float | None, name: str) -> float | None:
    if value is None or isinstance(value, float | int) and not isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(f"{name} must be a timezone-aware datetime, got {value!r}")
        return value.timestamp()
    raise ConfigurationError(f"{name} must be a datetime, got {type(value).__name__}")


def build_report(
    profile_or_obligations: Profile | Obligations | str | os.PathLike[str],
    *,
    start: datetime | float | None = None,
    end: datetime | float | None = None,
    key: str | None = None,
    checkpoint: str | None = None,
) -> Report:
    """Verify the profile's ledger, then compute the audit report against its latest signed checkpoint.

    The ledger (SQLite or PostgreSQL, as ``[ledger]`` says) is opened read-only, so the report can
    run beside the service. Its latest signed checkpoint is read first; the whole ledger is verified
    with the pinned key (and shown consistent with that checkpoint); then the records
    ``[first stored, checkpoint size)`` are read once, re-hashed against the checkpoint's root, and
    counted. Sealed personal data is never opened.

    Args:
        profile_or_obligations: A :class:`~aiobligations.profile.Profile`, a running
            :class:`~aiobligations.Obligations` (flushed first), or the path of ``aiobligations.toml``.
        start: Only records sequenced at or after this time count (verification still covers all).
        end: Only records sequenced before this time count; it is also the time the report's
            deadlines are judged at, when it comes before the checkpoint's last record.
        key: The verifier key to pin (``name+id+key``); default: the profile's signing key's.
        checkpoint: An earlier signed checkpoint note to compute against instead of the latest (an
            auditor recomputing a report they were given); it must verify and the log must be
            consistent with it.

    Returns:
        The :class:`Report`.

    Raises:
        LedgerBroken: verification failed, or the records changed between verification and reading;
            no report is made.
        UnusableInput: the ledger is missing or has no signed checkpoint yet, or the given checkpoint
            is not a checkpoint note, is signed by another key, or covers records already pruned.
        ConfigurationError: the profile or an argument is invalid.

    .. versionadded:: 0.2.0
    """
    begin, finish = _seconds(start, "start"), _seconds(end, "end")
    if begin is not None and finish is not None and finish < begin:
        raise ConfigurationError("end is before start")
    profile, hub = _profile_of(profile_or_obligations)
    if hub is not None:
        hub.ledger.flush()
    trusted = key or _verifier_key(profile, hub)
    store = _open_store(profile)
    try:
        state = store.open()
        note = checkpoint if checkpoint is not None else state.checkpoint
        if not note:
            raise UnusableInput(f"{store}: the ledger has no signed checkpoint yet")
        if checkpoint is not None:
            try:
                checkpoint_of(checkpoint)
            except NoteError as exc:
                raise UnusableInput(f"the checkpoint given is not a signed checkpoint note ({exc})") from None
        target: Any = profile.ledger.url if profile.ledger.url is not None else profile.ledger.path
        # Verify everything, and that the log stays consistent with the checkpoint read above (the
        # service may sign newer ones meanwhile): the report is computed against exactly this one.
        verify_path(target, key=trusted, since_checkpoint=note, schema=profile.ledger.schema)
        signed = checkpoint_of(note)  # Its signature was checked by the verification.
        collector = Collector(start=begin, end=finish)
        if signed.size < state.pruned_start:
            raise UnusableInput(f"the checkpoint given has {signed.size} records, but records before "
                                f"{state.pruned_start} were pruned: its report can no longer be computed")
        last_seconds = _read(store, state.pruned_start, state.pruned_frontier, signed.size, signed.root, collector)
        # Only those up to this checkpoint: a newer one signed meanwhile must not change the report.
        history = [row for row in store.checkpoints() if isinstance(row[0], int) and row[0] <= signed.size]
    finally:
        store.close()
    as_of = last_seconds if finish is None or last_seconds is None else min(finish, last_seconds)
    as_of = as_of if as_of is not None else (finish or 0.0)
    info = CheckpointInfo(signed.origin, signed.size, base64.b64encode(signed.root).decode(), note,
                          trusted, state.pruned_start)
    return _assemble(profile, info, collector, as_of, begin, finish, len(history))


def _read(store: Store, first: int, frontier: list[bytes], size: int, root: bytes, collector: Collector) -> float | None:
    """Feed ``[first, size)`` to the collector, re-hashing it against ``root``; the last record's time."""
    try:
        tree = CompactRange.from_hashes(0, first, frontier)
    except ValueError as exc:
        raise LedgerBroken(f"the pruned prefix's compact range is unusable ({exc})") from None
    expected = first
    last: float | None = None
    for index, _leaf, data in store.iter_records(first, size):
        if index != expected:
            break
        data = bytes(data)
        tree.append(sha256(b"\x00" + data).digest())
        try:
            record = parse_record(data)
            last = parse_ts(record["ts"])
        except (ValueError, KeyError, TypeError):
            raise LedgerBroken("the record is not a JSON object with a time", index=index) from None
        collector.feed(index, record)
        expected += 1
    if expected != size:
        raise LedgerBroken("the record is missing: pruned or deleted after verification; run the report again",
                           index=expected)
    if tree.root() != root:
        raise LedgerBroken("the records read do not hash to the verified checkpoint's root: changed after "
                           "verification")
    return last


def _table(profile: Profile, name: str) -> dict[str, Any] | None:
    """A table of the profile's TOML, or ``None`` when it is absent or not a table."""
    found = profile.raw.get(name)
    return found if isinstance(found, dict) else None


def _configured(profile: Profile) -> dict[str, list[tuple[str, str]]]:
    disclosure = _table(profile, "disclosure") or {}
    labels = _table(profile, "labels")
    requests = _table(profile, "requests") or {}

    def flag(name: str, default: bool) -> str:
        value = (labels or {}).get(name, default)
        return "on" if value is True else "off" if value is False else str(value)

    label_rows = [
        ("implicit label (GB 45438 metadata)", flag("implicit", True)),
        ("explicit label (caption, audio cue, text)", flag("explicit", False)),
        ("explicit wording", str((labels or {}).get("explicit_wording", "AI生成"))),
        ("invisible watermark (images)", flag("watermark", False)),
        ("C2PA content credentials", flag("c2pa", labels is not None)),
    ]
    retention = profile.ledger.retention
    return {
        "disclosure": [
            ("AI-Disclosure mode", str(disclosure.get("mode", "ai-originated"))),
            ("notice language", str(disclosure.get("language", "zh"))),
            ("custom short notice", "yes" if disclosure.get("notice") else "no (built-in)"),
            ("transparency document", "/.well-known/ai-transparency and /ai/transparency"),
            ("filing number", profile.service.filing_number or "(none configured)"),
            ("licence number", profile.service.licence_number or "(none configured)"),
        ],
        "labels": label_rows,
        "requests": [
            ("deadline", f"{requests.get('deadline_days', 15)} working days (mainland China's calendar)"),
        ],
        "retention": [
            (kind, f"{period / DAY:.0f} days (floor {FLOORS.get(kind, FLOORS['default']) / DAY:.0f})")
            for kind, period in sorted(retention.as_dict().items())
        ],
        "ledger": [
            ("store", "PostgreSQL" if profile.ledger.url else "SQLite"),
            ("origin", profile.ledger.origin),
            ("checkpoint interval", f"{profile.ledger.checkpoint_interval:g} s"),
        ],
    }


def _assemble(profile: Profile, info: CheckpointInfo, collector: Collector, as_of: float, begin: float | None,
              finish: float | None, checkpoints_kept: int) -> Report:
    days = (_table(profile, "requests") or {}).get("deadline_days", 15)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
        raise ConfigurationError(f"[requests] deadline_days must be a whole number from 1 to 365, got {days!r}")
    periods = profile.ledger.retention.as_dict()
    retention = RetentionFigures(
        rows=collector.retention(periods, FLOORS, as_of),
        pruned_before=info.first_index,
        pruned_hashes=bin(info.first_index).count("1"),
        checkpoints_kept=checkpoints_kept,
    )
    controls = ("takeover", "termination")
    return Report(
        checkpoint=info,
        provider={
            "name": profile.provider.name,
            "service": profile.service.name,
            "model": profile.service.model,
            "contact": profile.provider.contact,
        },
        window=(format_ts(begin) if begin is not None else None, format_ts(finish) if finish is not None else None),
        as_of=format_ts(as_of),
        records=collector.in_window,
        first_record=collector.first_ts,
        last_record=collector.last_ts,
        kinds=dict(sorted(collector.kinds.items())),
        configured=_configured(profile),
        disclosure=collector.disclosure(),
        labels=collector.labels(),
        requests=collector.requests(deadline_days=days, now=datetime.fromtimestamp(as_of, UTC)),
        incidents=collector.incidents(),
        takeovers=collector.controls("takeover"),
        terminations=collector.controls("termination"),
        retention=retention,
        erasures=collector.erasures(),
        other_controls=collector.controls_except(controls),
    )
