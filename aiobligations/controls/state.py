"""``ControlState``: the incidents and takeover switches, folded in from the ledger by every process.

The ledger is the system of record: each incident step is an ``incident`` record and each switch a
``control`` record. Every process of a service (each worker, each replica, the CLI) builds its own
state by reading those records, then follows the log: a background thread asks the ledger for its
durable size every ``interval`` seconds (0.5 by default) and folds in what is new, whichever process
wrote it. The request path never reads the ledger: it reads :attr:`ControlState.snapshot`, an
immutable :class:`ControlSnapshot` swapped in whole when something changes (one attribute read).

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import ConfigurationError, ObligationError
from ..ledger.follow import LogFold
from .errors import IncidentClosed, IncidentNotFound, InvalidControl
from .incidents import (
    INCIDENT_FIELDS,
    Incident,
    check_text,
    fold_incident,
    is_incident_id,
    new_incident_id,
    timestamp,
)
from .takeover import Takeover, check_fallback, check_route, fold_takeover

if TYPE_CHECKING:
    from ..obligations import Obligations

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_RETRY_AFTER",
    "ControlSettings",
    "ControlSnapshot",
    "ControlState",
    "Halt",
    "close_incident",
    "open_incident",
    "takeover_off",
    "takeover_on",
    "update_incident",
]

log = structlog.get_logger("aiobligations.controls")

DEFAULT_INTERVAL = 0.5
"""Seconds between two looks at the ledger by the follower thread."""

DEFAULT_RETRY_AFTER = 120
"""The ``Retry-After`` seconds of a 503 while AI routes are taken over or suspended."""

_FOLLOWED = ("incident", "control")  # The takeover's are those with "control": "takeover".


@dataclass(frozen=True)
class ControlSettings:
    """
    The profile's ``[controls]`` table.

    Args:
        fallback: The app path that gets AI requests while they are taken over (``None``: 503).
        retry_after: The ``Retry-After`` seconds of the 503.
        interval: Seconds between two looks at the ledger (0.05 to 1; a switch reaches every
            process within about this long).

    .. versionadded:: 0.2.0
    """

    fallback: str | None = None
    retry_after: int = DEFAULT_RETRY_AFTER
    interval: float = DEFAULT_INTERVAL

    @classmethod
    def from_profile(cls, raw: Mapping[str, Any]) -> ControlSettings:
        """Read ``[controls]`` from the parsed profile.

        Raises:
            ConfigurationError: A value is invalid; the message names it.
        """
        section = raw.get("controls", {})
        if not isinstance(section, Mapping):
            raise ConfigurationError("[controls] must be a table")
        try:
            fallback = check_fallback(section.get("fallback"))
        except InvalidControl as exc:
            raise ConfigurationError(f"[controls] fallback: {exc}") from None
        retry = section.get("retry_after", DEFAULT_RETRY_AFTER)
        if isinstance(retry, bool) or not isinstance(retry, int) or not 1 <= retry <= 86_400:
            raise ConfigurationError(f"[controls] retry_after must be whole seconds from 1 to 86400, got {retry!r}")
        interval = section.get("poll_interval", DEFAULT_INTERVAL)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.05 <= interval <= 1:
            raise ConfigurationError(f"[controls] poll_interval must be seconds from 0.05 to 1, got {interval!r}")
        return cls(fallback=fallback, retry_after=retry, interval=float(interval))


@dataclass(frozen=True)
class Halt:
    """
    Why a request to an AI route is not served by the model: a takeover, or a suspending incident.

    .. versionadded:: 0.2.0
    """

    takeover: Takeover | None = None
    incident: Incident | None = None

    @property
    def fallback(self) -> str | None:
        """The path that takes the request instead (from the switch), if any."""
        return self.takeover.fallback if self.takeover is not None else None


@dataclass(frozen=True)
class ControlSnapshot:
    """
    What the controls are at one point of the log; immutable, read by the request path.

    Args:
        takeovers: The switches that are on.
        incidents: Every incident, by id.
        seen: The ledger size this snapshot folds in.

    .. versionadded:: 0.2.0
    """

    takeovers: tuple[Takeover, ...] = ()
    incidents: Mapping[str, Incident] = field(default_factory=lambda: MappingProxyType({}))
    seen: int = 0
    open_incidents: tuple[Incident, ...] = field(init=False)
    halting: bool = field(init=False)
    """Whether any AI request is halted now (a switch is on, or an open incident suspends)."""

    def __post_init__(self) -> None:
        opened = tuple(sorted((i for i in self.incidents.values() if i.open), key=lambda i: i.opened))
        object.__setattr__(self, "open_incidents", opened)
        object.__setattr__(self, "halting", bool(self.takeovers) or any(i.suspend for i in opened))

    def halt(self, path: str) -> Halt | None:
        """Why a request to the AI route ``path`` is halted, or ``None`` when it is served.

        A switch covering the path wins (it may name a fallback); else the first suspending incident.
        """
        if not self.halting:
            return None
        for takeover in self.takeovers:
            if takeover.covers(path):
                return Halt(takeover=takeover)
        for incident in self.open_incidents:
            if incident.suspend:
                return Halt(incident=incident)
        return None


class ControlState(LogFold):
    """
    Incidents and takeover switches, kept as ledger records and followed by every process.

    Building it reads every ``incident`` and ``control`` record of the ledger, so a state built
    after a restart knows every open incident and every switch that is on. Its methods are
    thread-safe; each step waits for its durable append (call them from a worker thread in async
    code). Steps are checked and recorded under the ledger's cross-process lock, so two processes
    switching at once record one change.

    Args:
        obligations: The hub whose ledger holds the records.
        clock: Returns the current time, timezone-aware (default: the system clock, UTC).
        settings: The ``[controls]`` settings (default: read from the hub's profile).

    Raises:
        ConfigurationError: The profile's ``[controls]`` table is invalid.

    .. versionadded:: 0.2.0
    """

    KINDS = _FOLLOWED
    LOCK = "controls"
    NAME = "controls"

    def __init__(self, obligations: Obligations, *, clock: Callable[[], datetime] | None = None,
                 settings: ControlSettings | None = None) -> None:
        self.obligations = obligations
        self.settings = settings if settings is not None else ControlSettings.from_profile(obligations.profile.raw)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._start_fold(obligations.ledger, interval=self.settings.interval)
        self._incidents: dict[str, Incident] = {}
        self._switches: dict[str | None, Takeover] = {}
        self._changed = False
        self.snapshot = ControlSnapshot()
        """The state now, for the request path: replaced whole, never changed in place."""
        self.last_appended: tuple[int, str] | None = None
        """The ledger index and ``at`` of the last record this state appended (``None`` before one)."""
        try:
            self.refresh()
        except ObligationError as exc:  # The database may be away at start-up: the follower retries.
            log.warning("controls_unavailable", error=f"{type(exc).__name__}: {exc}")

    # -- following the log ---------------------------------------------------------------------

    def refresh(self) -> ControlSnapshot:
        """Fold in the records stored since the last look (whichever process wrote them); return the snapshot."""
        with self._lock:
            self._catch_up()
            return self.snapshot

    def _fold(self, record: Mapping[str, Any], index: int) -> None:
        if record.get("kind") == "incident":
            self._changed |= fold_incident(self._incidents, record, index)
        elif record.get("control") == "takeover":
            self._changed |= fold_takeover(self._switches, record, index)

    def _folded(self, end: int) -> None:
        if self._changed:
            self._changed = False
            self.snapshot = ControlSnapshot(tuple(self._switches.values()), MappingProxyType(dict(self._incidents)),
                                            end)

    def _append(self, record: dict[str, Any]) -> int:
        index = super()._append(record)
        self.last_appended = (index, str(record["at"]))
        return index

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidControl(f"the clock must return an aware datetime, got {now!r}")
        return now.astimezone(UTC)

    @staticmethod
    def _by(by: Any) -> str:
        if not isinstance(by, str) or not by.strip() or len(by) > 200:
            raise InvalidControl(f"by must be a non-empty operator id, got {by!r:.40}")
        return by

    # -- incidents -----------------------------------------------------------------------------

    def open_incident(self, *, title: str, scope: str, measures: str, user_actions: str, contact: str,
                      by: str, course: str | None = None, severity: str | None = None,
                      suspend: bool = False) -> Incident:
        """
        Open an incident (Art. 37): record it, and publish its user notice while it is open.

        Args:
            title: A short title users will read.
            scope: Who and what is affected (影响范围).
            measures: The remedial measures taken (已采取的补救措施).
            user_actions: What users can do to reduce harm (使用者可以采取的减轻危害的措施).
            contact: How to reach the provider about it (联系方式).
            by: The operator's id.
            course: The course of events so far (发生过程), when known.
            severity: A free label, e.g. ``"high"``.
            suspend: Suspend every AI route while the incident is open (Art. 37: while the risk
                is unresolved).

        Returns:
            The open incident. When an open incident has exactly these texts and this suspension
            already (a retried request), it is returned and nothing is recorded.

        Raises:
            InvalidControl: A field is missing, empty or too long.
        """
        texts = {"title": title, "scope": scope, "measures": measures, "user_actions": user_actions,
                 "contact": contact, "course": course, "severity": severity}
        for name, value in texts.items():
            check_text(name, value, required=name not in ("course", "severity"))
        if not isinstance(suspend, bool):
            raise InvalidControl(f"suspend must be true or false, got {suspend!r:.20}")
        by = self._by(by)
        with self._exclusive():
            for current in self._incidents.values():
                if current.open and current.suspend == suspend and all(
                        getattr(current, name) == value for name, value in texts.items()):
                    return current
            now = self._now()
            incident_id = new_incident_id(now)
            while incident_id in self._incidents:
                incident_id = new_incident_id(now)
            record: dict[str, Any] = {"kind": "incident", "incident_id": incident_id, "step": "open"}
            record.update({name: value for name, value in texts.items() if value is not None})
            record.update({"suspend": suspend, "by": by, "at": timestamp(now)})
            self._append(record)
            incident = self._incidents[incident_id]
        log.warning("incident_opened", incident_id=incident_id, suspend=suspend, by=by)
        return incident

    def update_incident(self, incident_id: str, *, by: str, suspend: bool | None = None,
                        **fields: str | None) -> Incident:
        """
        Update an open incident: record only the fields that change.

        Args:
            incident_id: The incident.
            by: The operator's id.
            suspend: Start (``True``) or end (``False``) the suspension; ``None`` leaves it.
            **fields: Any of ``title``, ``scope``, ``measures``, ``user_actions``, ``contact``,
                ``course``, ``severity``; ``None`` leaves a field as it is.

        Returns:
            The incident. When nothing changes, nothing is recorded (idempotent).

        Raises:
            IncidentNotFound: No such incident.
            IncidentClosed: It is closed.
            InvalidControl: An unknown field, or an empty or too long text.
        """
        unknown = sorted(set(fields) - set(INCIDENT_FIELDS))
        if unknown:
            raise InvalidControl(f"unknown incident fields: {', '.join(unknown)}")
        given = {name: check_text(name, value) for name, value in fields.items() if value is not None}
        if suspend is not None and not isinstance(suspend, bool):
            raise InvalidControl(f"suspend must be true or false, got {suspend!r:.20}")
        by = self._by(by)
        with self._exclusive():
            current = self._get(incident_id)
            if not current.open:
                raise IncidentClosed(f"incident {incident_id} is closed; it cannot be updated")
            changes: dict[str, Any] = {k: v for k, v in given.items() if getattr(current, k) != v}
            if suspend is not None and suspend != current.suspend:
                changes["suspend"] = suspend
            if not changes:
                return current
            record = {"kind": "incident", "incident_id": incident_id, "step": "update", **changes,
                      "by": by, "at": timestamp(self._now())}
            self._append(record)
            incident = self._incidents[incident_id]
        log.warning("incident_updated", incident_id=incident_id, changed=sorted(changes), by=by)
        return incident

    def close_incident(self, incident_id: str, *, resolution: str, by: str) -> Incident:
        """
        Close an open incident, with the resolution users will read.

        Raises:
            IncidentNotFound: No such incident.
            IncidentClosed: It is closed already.
            InvalidControl: The resolution is empty or too long.
        """
        check_text("resolution", resolution)
        by = self._by(by)
        with self._exclusive():
            current = self._get(incident_id)
            if not current.open:
                raise IncidentClosed(f"incident {incident_id} is closed already")
            self._append({"kind": "incident", "incident_id": incident_id, "step": "close",
                          "resolution": resolution, "by": by, "at": timestamp(self._now())})
            incident = self._incidents[incident_id]
        log.warning("incident_closed", incident_id=incident_id, by=by)
        return incident

    def _get(self, incident_id: str) -> Incident:
        found = self._incidents.get(incident_id) if is_incident_id(incident_id) else None
        if found is None:
            raise IncidentNotFound(f"no incident {incident_id!r:.40}")
        return found

    def incident(self, incident_id: str) -> Incident:
        """One incident, open or closed.

        Raises:
            IncidentNotFound: No such incident.
        """
        with self._lock:
            self._catch_up()
            return self._get(incident_id)

    def incidents(self, *, open_only: bool = False) -> list[Incident]:
        """Every incident (or only the open ones), oldest first."""
        with self._lock:
            self._catch_up()
            found = sorted(self._incidents.values(), key=lambda i: i.opened)
        return [i for i in found if i.open] if open_only else found

    # -- the takeover switch -------------------------------------------------------------------

    def takeover_on(self, *, by: str, route: str | None = None, reason: str = "",
                    fallback: str | None = None) -> bool:
        """
        Take AI routes over (Art. 52(4)): answer them with 503, or hand them to ``fallback``.

        Args:
            by: The operator's id.
            route: A glob of AI paths (``/v1/images/*``), or ``None`` for every AI route.
            reason: Why (kept in the record; not shown to users).
            fallback: The app path that gets the requests instead of a 503. ``None`` records no
                fallback: the middleware then uses its profile's ``[controls] fallback``, if any.

        Returns:
            ``True`` when recorded; ``False`` when that switch was on already with the same
            fallback (nothing recorded: switching on twice is one switch).

        Raises:
            InvalidControl: A bad pattern, fallback or reason.
        """
        route = check_route(route)
        fallback = check_fallback(fallback)
        if not isinstance(reason, str) or len(reason) > 5_000:
            raise InvalidControl("reason must be a string of at most 5000 characters")
        by = self._by(by)
        with self._exclusive():
            current = self._switches.get(route)
            if current is not None and current.fallback == fallback:
                return False
            self._append({"kind": "control", "control": "takeover", "state": "on", "route": route,
                          "reason": reason, "fallback": fallback, "by": by, "at": timestamp(self._now())})
        log.warning("takeover_on", route=route, fallback=fallback, by=by)
        return True

    def takeover_off(self, *, by: str, route: str | None = None, reason: str = "") -> bool:
        """
        End a takeover: the switch on ``route``, or every switch when ``route`` is ``None``.

        Returns:
            ``True`` when recorded; ``False`` when no such switch was on (nothing recorded).

        Raises:
            InvalidControl: A bad pattern or reason.
        """
        route = check_route(route)
        if not isinstance(reason, str) or len(reason) > 5_000:
            raise InvalidControl("reason must be a string of at most 5000 characters")
        by = self._by(by)
        with self._exclusive():
            if not self._switches or (route is not None and route not in self._switches):
                return False
            self._append({"kind": "control", "control": "takeover", "state": "off", "route": route,
                          "reason": reason, "fallback": None, "by": by, "at": timestamp(self._now())})
        log.warning("takeover_off", route=route, by=by)
        return True

    def takeovers(self) -> tuple[Takeover, ...]:
        """The switches that are on now."""
        return self.refresh().takeovers

    def __repr__(self) -> str:
        snapshot = self.snapshot
        return (f"ControlState(open_incidents={len(snapshot.open_incidents)}, "
                f"takeovers={len(snapshot.takeovers)}, seen={snapshot.seen})")


def open_incident(obligations: Obligations, **fields: Any) -> Incident:
    """Open an incident through ``obligations.controls`` (see :meth:`ControlState.open_incident`)."""
    return obligations.controls.open_incident(**fields)


def update_incident(obligations: Obligations, incident_id: str, **fields: Any) -> Incident:
    """Update an incident through ``obligations.controls`` (see :meth:`ControlState.update_incident`)."""
    return obligations.controls.update_incident(incident_id, **fields)


def close_incident(obligations: Obligations, incident_id: str, *, resolution: str, by: str) -> Incident:
    """Close an incident through ``obligations.controls`` (see :meth:`ControlState.close_incident`)."""
    return obligations.controls.close_incident(incident_id, resolution=resolution, by=by)


def takeover_on(obligations: Obligations, **options: Any) -> bool:
    """Switch a takeover on through ``obligations.controls`` (see :meth:`ControlState.takeover_on`)."""
    return obligations.controls.takeover_on(**options)


def takeover_off(obligations: Obligations, **options: Any) -> bool:
    """Switch takeovers off through ``obligations.controls`` (see :meth:`ControlState.takeover_off`)."""
    return obligations.controls.takeover_off(**options)
