"""Security incidents (Art. 37): open, update, close, each step an ``incident`` record in the ledger.

An incident's record holds the elements Art. 37 asks the provider to tell users and the authority:
the course of events and the scope (一), the measures taken and what users can do (二), and a
contact (三), plus whether the service is suspended while the incident is open. ``update`` records
carry only the fields that change; ``close`` carries the resolution. No personal data goes in
them: ``by`` is the operator's id.

Record shape::

    {"kind": "incident", "incident_id": "INC-20261204-3F9A2C", "step": "open" | "update" | "close",
     "title": str, "scope": str, "measures": str, "user_actions": str, "contact": str,
     "course": str (optional on open), "severity": str (optional), "suspend": bool,
     "resolution": str (on close), "by": str, "at": RFC 3339 UTC}

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidControl

__all__ = [
    "INCIDENT_FIELDS",
    "MAX_TEXT",
    "REQUIRED_FIELDS",
    "Incident",
    "IncidentStep",
    "check_text",
    "fold_incident",
    "is_incident_id",
    "new_incident_id",
    "timestamp",
]

INCIDENT_FIELDS = ("title", "scope", "measures", "user_actions", "contact", "course", "severity")
"""The text fields of an incident, in the order notices show them."""

REQUIRED_FIELDS = ("title", "scope", "measures", "user_actions", "contact")
"""The text fields every incident has from its opening (Art. 37(3) 一 to 三, and a title)."""

MAX_TEXT = 5_000
"""The most characters of one field (a title at most 200)."""

_ID = re.compile(r"INC-[0-9]{8}-[0-9A-F]{6}")


def timestamp(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with microseconds and a ``Z``, as every step's ``at``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def new_incident_id(now: datetime) -> str:
    """A fresh incident id: ``INC-``, the UTC date, and six random hex digits."""
    return f"INC-{now.astimezone(UTC):%Y%m%d}-{secrets.token_hex(3).upper()}"


def is_incident_id(value: object) -> bool:
    """Whether ``value`` has the shape of an incident id (``INC-YYYYMMDD-XXXXXX``)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_text(name: str, value: Any, *, required: bool = True) -> str | None:
    """
    Check one text field: a non-empty string of at most :data:`MAX_TEXT` characters of valid text.

    Args:
        name: The field's name (for the message).
        value: What was given.
        required: Whether ``None`` is refused.

    Returns:
        The text (unchanged), or ``None`` when it was ``None`` and not required.

    Raises:
        InvalidControl: Not a string, blank, too long, or holding an unpaired surrogate.
    """
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidControl(f"{name} must be a non-empty string, got {value!r:.40}")
    limit = 200 if name == "title" else MAX_TEXT
    if len(value) > limit:
        raise InvalidControl(f"{name} must be at most {limit} characters, got {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidControl(f"{name} is not valid text (it holds an unpaired surrogate)") from None
    return value


@dataclass(frozen=True)
class IncidentStep:
    """
    One step of an incident, as recorded in the ledger.

    Args:
        step: ``open``, ``update`` or ``close``.
        at: When it was taken (UTC).
        index: The ledger index of its record.
        by: The operator's id.
        changed: The fields the step set (every given field on ``open``).

    .. versionadded:: 0.2.0
    """

    step: str
    at: datetime
    index: int
    by: str | None
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Incident:
    """
    A security incident as its records tell it (Art. 37).

    ``course`` may be ``None`` until the provider knows it; notices then say it is being
    established. ``suspend`` is whether the service's AI routes are suspended while it is open.

    .. versionadded:: 0.2.0
    """

    id: str
    title: str
    scope: str
    measures: str
    user_actions: str
    contact: str
    opened: datetime
    updated: datetime
    course: str | None = None
    severity: str | None = None
    suspend: bool = False
    closed: datetime | None = None
    resolution: str | None = None
    history: tuple[IncidentStep, ...] = ()

    @property
    def open(self) -> bool:
        """Whether the incident is still open."""
        return self.closed is None

    def as_dict(self) -> dict[str, Any]:
        """The incident as JSON values (for operators and the audit report)."""
        return {
            "id": self.id,
            "status": "open" if self.open else "closed",
            "title": self.title,
            "scope": self.scope,
            "course": self.course,
            "measures": self.measures,
            "user_actions": self.user_actions,
            "contact": self.contact,
            "severity": self.severity,
            "suspend": self.suspend,
            "opened": timestamp(self.opened),
            "updated": timestamp(self.updated),
            "closed": timestamp(self.closed) if self.closed is not None else None,
            "resolution": self.resolution,
            "history": [{"step": s.step, "at": timestamp(s.at), "index": s.index, "by": s.by,
                         "changed": list(s.changed)} for s in self.history],
        }


def fold_incident(incidents: dict[str, Incident], record: Mapping[str, Any], index: int) -> bool:
    """
    Fold one ``incident`` record into ``incidents`` (id → Incident), in ledger order.

    The ledger is the truth: a malformed record or a step that does not fit (an update of an
    unknown incident) is skipped, never raised.

    Returns:
        Whether the record changed anything.
    """
    incident_id = record.get("incident_id")
    step = record.get("step")
    at = _parse(record.get("at"))
    if not isinstance(incident_id, str) or not is_incident_id(incident_id) or at is None or step not in (
            "open", "update", "close"):
        return False
    by = record.get("by") if isinstance(record.get("by"), str) else None
    texts = {name: record[name] for name in INCIDENT_FIELDS if isinstance(record.get(name), str)}
    suspend = record.get("suspend")
    current = incidents.get(incident_id)
    if step == "open":
        if current is not None or any(name not in texts for name in REQUIRED_FIELDS):
            return False
        changed = tuple(name for name in INCIDENT_FIELDS if name in texts)
        incidents[incident_id] = Incident(
            id=incident_id, opened=at, updated=at, suspend=suspend is True,
            history=(IncidentStep("open", at, index, by, changed),), **texts)
        return True
    if current is None or not current.open:
        return False
    if step == "update":
        changes: dict[str, Any] = dict(texts)
        if isinstance(suspend, bool):
            changes["suspend"] = suspend
        entry = IncidentStep("update", at, index, by, tuple(sorted(changes)))
        incidents[incident_id] = replace(current, updated=at, history=(*current.history, entry), **changes)
        return True
    resolution = record.get("resolution") if isinstance(record.get("resolution"), str) else None
    entry = IncidentStep("close", at, index, by, ("resolution",))
    incidents[incident_id] = replace(current, updated=at, closed=at, resolution=resolution,
                                     history=(*current.history, entry))
    return True
