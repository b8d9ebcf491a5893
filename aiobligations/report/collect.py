"""One pass over the ledger's records up to a verified checkpoint, into plain figures.

Nothing here opens a sealed ``personal`` part: the report counts what the clear part of each record
says (kinds, routes, statuses, label formats, request steps and deadlines, control switches), so
it needs no master key and shows no personal data. Every figure is computed from the exact bytes
that were hashed against the checkpoint's root, in the same pass.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from ..ledger.records import parse_ts
from ..requests.calendar import WeekdayCalendar
from ..requests.workflow import Complaint, Request, RequestDesk

__all__ = [
    "MAX_ROUTES",
    "Collector",
    "ControlEvent",
    "DisclosureFigures",
    "ErasureFigures",
    "Incident",
    "LabelFigures",
    "LabelRow",
    "MonthRow",
    "RequestFigures",
    "RetentionFigures",
    "RetentionRow",
    "RouteRow",
    "Tally",
    "month_of",
]

MAX_ROUTES = 25
"""Routes shown one by one; the rest are summed as "other routes"."""

_REQUEST_KINDS = ("explanation", "complaint", "subject.erased")
_LABEL_PARTS = ("implicit", "explicit", "watermark", "c2pa")
_NOTICE_FIELDS = ("title", "scope", "course", "measures", "user_actions", "contact", "severity")


def month_of(text: str | datetime) -> str:
    """The ``YYYY-MM`` month (UTC) of an RFC 3339 time or an aware datetime."""
    moment = text if isinstance(text, datetime) else datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.astimezone(UTC).strftime("%Y-%m")


@dataclass
class RouteRow:
    """Disclosure figures of one route (an HTTP path, or a decorated function).

    Attributes:
        route: The path as the interaction records hold it, or ``call NAME`` for a decorated function.
        interactions: Interaction records.
        answered: Those that were AI answers (HTTP status below 400, or a function's call).
        disclosed: AI answers that carried the disclosure (the ``AI-Disclosure`` header, or the
            notice made available to a decorated function's caller).
        errors: Error answers (status 400 or more): no AI content, so nothing to disclose.
        first_contact: Answers that carried the first-contact notice.
        body_notices: Answers with a notice in the body (JSON field, SSE comment or HTML banner).
    """

    route: str
    interactions: int = 0
    answered: int = 0
    disclosed: int = 0
    errors: int = 0
    first_contact: int = 0
    body_notices: int = 0

    @property
    def share(self) -> float | None:
        """Disclosed AI answers over AI answers, or ``None`` with none."""
        return self.disclosed / self.answered if self.answered else None


@dataclass
class DisclosureFigures:
    """Art. 38(1): interactions and their disclosure, by route."""

    routes: list[RouteRow] = field(default_factory=list)
    total: RouteRow = field(default_factory=lambda: RouteRow("all routes"))
    notices: dict[str, int] = field(default_factory=dict)
    """Body notice placements (``json-field``, ``sse-comment``, ``html-banner``, ``none``) → count."""
    outcomes: dict[str, int] = field(default_factory=dict)
    """Interaction outcomes (``completed``, ``disconnected``, ``error``) → count."""
    text_labels: int = 0
    """Interactions whose response body carried a text label (the middleware's ``labels`` field)."""
    text_label_errors: int = 0


@dataclass
class LabelRow:
    """Label records of one format and one label kind.

    Attributes:
        format: The media type labelled (``image/png``…).
        label: ``implicit`` (GB 45438 metadata), ``explicit`` (caption, audio cue or text),
            ``watermark`` or ``c2pa``.
        applied: Files that got this label.
        skipped: Files where this label was attempted and skipped (the reasons are counted apart).
        absent: Files without it and without a reason: turned off, or the format does not carry it.
        variants: For explicit labels, the kind drawn (``caption``, ``rhythm cue``, ``text``) → count.
    """

    format: str
    label: str
    applied: int = 0
    skipped: int = 0
    absent: int = 0
    variants: dict[str, int] = field(default_factory=dict)


@dataclass
class LabelFigures:
    """Art. 38(2), 70(1): output files labelled, by format and label kind."""

    files: int = 0
    rows: list[LabelRow] = field(default_factory=list)
    skips: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(format, label, reason, count), sorted."""
    roles: dict[str, int] = field(default_factory=dict)
    """``producer`` / ``propagator`` (whose GB 45438 label the file carries) → count."""


@dataclass
class Tally:
    """Requests or complaints counted against their deadline.

    Attributes:
        received: Received in the period.
        on_time: Decided (answered, rejected or resolved) by the deadline.
        late: Decided after the deadline, or undecided with the deadline passed.
        pending: Undecided and still within the deadline at the report's time.
    """

    received: int = 0
    on_time: int = 0
    late: int = 0
    pending: int = 0

    def count(self, decided: datetime | None, due: datetime, now: datetime) -> None:
        """Count one item decided at ``decided`` (or not yet) against ``due``, as of ``now``."""
        self.received += 1
        if decided is not None:
            if decided <= due:
                self.on_time += 1
            else:
                self.late += 1
        elif now > due:
            self.late += 1
        else:
            self.pending += 1

    @property
    def ratio(self) -> float | None:
        """On time over counted (on time and late), or ``None`` with nothing counted."""
        counted = self.on_time + self.late
        return self.on_time / counted if counted else None


@dataclass
class MonthRow:
    """One month (UTC, by the day received) of requests and complaints."""

    month: str
    explanations: Tally = field(default_factory=Tally)
    complaints: Tally = field(default_factory=Tally)
    """General, IP and report complaints (Art. 32, 70(4))."""
    appeals: Tally = field(default_factory=Tally)
    """Complaints about an explanation's answer (Art. 39)."""


@dataclass
class RequestFigures:
    """Art. 39, 32, 70(4): explanation requests and complaints against their deadlines."""

    deadline_days: int = 15
    recorded_deadlines: dict[int, int] = field(default_factory=dict)
    """The ``deadline_days`` the received records carry → count (a policy change shows here)."""
    months: list[MonthRow] = field(default_factory=list)
    explanations: Tally = field(default_factory=Tally)
    complaints: Tally = field(default_factory=Tally)
    appeals: Tally = field(default_factory=Tally)
    desk_ratio: float | None = None
    """:meth:`RequestDesk.on_time_ratio` over the same requests: the desk's own figure."""
    automated: int = 0
    """Requests answered by the registered explainer rather than a person."""
    categories: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)


@dataclass
class Incident:
    """Art. 37: one incident, folded from its ``incident`` records (the notice's latest texts)."""

    incident_id: str
    opened: str | None = None
    closed: str | None = None
    updates: int = 0
    suspend: bool = False
    """Whether any step suspended the service (Art. 37: while the risk is unresolved)."""
    notice: dict[str, str] = field(default_factory=dict)
    """The notice's fields (title, scope, course, measures, user_actions, contact, severity)."""
    resolution: str | None = None

    @property
    def missing(self) -> list[str]:
        """The notice fields Art. 37 asks for that the records never gave."""
        return [name for name in ("course", "scope", "measures", "user_actions", "contact") if not self.notice.get(name)]


@dataclass
class ControlEvent:
    """One takeover switch (Art. 52(4)) or termination step (Art. 50), as recorded."""

    index: int
    at: str
    control: str
    action: str
    """``on``/``off`` for a takeover; ``plan``/``cancel``/``shredded`` for a termination."""
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class RetentionRow:
    """One record kind: its retention period, its legal floor and what the checkpoint holds of it."""

    kind: str
    records: int
    period_days: float
    floor_days: float
    oldest: str | None = None
    past_period: int = 0
    """Records of this kind older than their period at the report's time (kept longer; prunable)."""


@dataclass
class RetentionFigures:
    """Art. 49(2), 41, 34: retention floors and prunings."""

    rows: list[RetentionRow] = field(default_factory=list)
    pruned_before: int = 0
    """Records ``[0, pruned_before)`` were pruned; their compact range still binds them to the root."""
    pruned_hashes: int = 0
    checkpoints_kept: int = 0


@dataclass
class ErasureFigures:
    """Crypto-shredding of subjects (``subject.erased`` records): counts only, never the pseudonyms."""

    total: int = 0
    months: dict[str, int] = field(default_factory=dict)


class _RequestLog:
    """Just enough of a :class:`~aiobligations.ledger.Ledger` for a :class:`RequestDesk` to fold
    the request records the report collected (the desk's own fold, over exactly these records)."""

    def __init__(self, records: Mapping[int, dict[str, Any]], end: int) -> None:
        self._records = records
        self._end = end

    def flush(self) -> None:
        """Nothing is queued: the records are already read."""

    def durable_size(self) -> int:
        return self._end

    def indices_of(self, kinds: Iterable[str], start: int, end: int) -> list[int]:
        wanted = set(kinds)
        return [i for i in sorted(self._records) if start <= i < end and self._records[i].get("kind") in wanted]

    def read(self, index: int) -> dict[str, Any]:
        return self._records[index]

    def lock(self, name: str) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()


class _Hub:
    def __init__(self, ledger: _RequestLog) -> None:
        self.ledger = ledger
        self.explainer_function = None


class Collector:
    """Takes the records of ``[first, size)`` in order and builds every section's figures.

    Args:
        start: Only records sequenced at or after this Unix time count (``None``: from the first).
        end: Only records sequenced before this Unix time count (``None``: up to the checkpoint).
    """

    def __init__(self, *, start: float | None, end: float | None) -> None:
        self.start = start
        self.end = end
        self.kinds: Counter[str] = Counter()
        self.first_ts: str | None = None
        self.last_ts: str | None = None
        self.last_checkpoint_ts: str | None = None
        self.in_window = 0
        self._routes: dict[str, RouteRow] = {}
        self._notices: Counter[str] = Counter()
        self._outcomes: Counter[str] = Counter()
        self._text_labels = self._text_label_errors = 0
        self._labels: dict[tuple[str, str], LabelRow] = {}
        self._skips: Counter[tuple[str, str, str]] = Counter()
        self._roles: Counter[str] = Counter()
        self._label_files = 0
        self._requests: dict[int, dict[str, Any]] = {}
        self._request_ids: set[str] = set()
        self._incidents: dict[str, Incident] = {}
        self._controls: list[ControlEvent] = []
        self._erasures: Counter[str] = Counter()
        self._oldest: dict[str, str] = {}
        # Sequencing times per kind, 8 bytes each, to count later which are past their period.
        self._kind_ts: dict[str, array[float]] = {}

    def feed(self, index: int, record: dict[str, Any]) -> None:
        """Count one record (records outside the time window are skipped, but were hashed)."""
        ts = record.get("ts")
        if not isinstance(ts, str):
            return
        seconds = parse_ts(ts)
        if self.start is not None and seconds < self.start:
            return
        if self.end is not None and seconds >= self.end:
            return
        self.in_window += 1
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        kind = str(record.get("kind"))
        self.kinds[kind] += 1
        self._oldest.setdefault(kind, ts)
        times = self._kind_ts.get(kind)
        if times is None:
            times = self._kind_ts[kind] = array("d")
        times.append(seconds)
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, index, record)

    # -- per kind ----------------------------------------------------------------------------------

    def _interaction(self, index: int, record: dict[str, Any]) -> None:
        call = record.get("call")
        route = str(record.get("route")) if call is None else f"call {call}"
        row = self._routes.setdefault(route, RouteRow(route))
        found = record.get("disclosure")
        disclosure: dict[str, Any] = found if isinstance(found, dict) else {}
        status = record.get("status")
        row.interactions += 1
        self._outcomes[str(record.get("outcome"))] += 1
        if call is not None:
            row.answered += 1
            row.disclosed += disclosure.get("notice") == "available"
        elif isinstance(status, int) and status >= 400:
            row.errors += 1
        else:
            row.answered += 1
            row.disclosed += disclosure.get("header") is True
            row.first_contact += disclosure.get("notice") == "first-contact"
            body = str(disclosure.get("body", "none"))
            self._notices[body] += 1
            row.body_notices += body != "none"
        labels = record.get("labels")
        if isinstance(labels, dict):
            self._text_labels += bool(labels.get("applied"))
            self._text_label_errors += labels.get("error") is not None

    def _label(self, index: int, record: dict[str, Any]) -> None:
        self._label_files += 1
        media = str(record.get("format"))
        if isinstance(record.get("role"), str):
            self._roles[record["role"]] += 1
        for part in _LABEL_PARTS:
            row = self._labels.setdefault((media, part), LabelRow(media, part))
            entry = record.get("gb45438" if part == "implicit" else part)
            if isinstance(entry, dict) and isinstance(entry.get("skipped"), str):
                row.skipped += 1
                self._skips[(media, part, entry["skipped"][:300])] += 1
            elif entry is not None:
                row.applied += 1
                if part == "explicit" and isinstance(entry, dict):
                    variant = str(entry.get("kind", "?"))
                    row.variants[variant] = row.variants.get(variant, 0) + 1
            else:
                row.absent += 1

    def _request(self, index: int, record: dict[str, Any]) -> None:
        if record.get("kind") == "subject.erased":
            self._erasures[month_of(record["ts"])] += 1
        if record.get("kind") != "subject.erased":
            # Only requests received inside the window count; a later step of an earlier one is left out.
            ident = record.get("request_id") or record.get("complaint_id")
            if record.get("step") == "received":
                self._request_ids.add(str(ident))
            elif str(ident) not in self._request_ids:
                return
        # Kept without the sealed part: the desk's fold reads only the clear fields.
        self._requests[index] = {key: value for key, value in record.items() if key not in ("sealed", "personal")}

    def _incident(self, index: int, record: dict[str, Any]) -> None:
        ident = record.get("incident_id")
        if not isinstance(ident, str):
            return
        incident = self._incidents.setdefault(ident, Incident(ident))
        step = record.get("step")
        at = str(record.get("at") or record.get("ts"))
        if step == "open":
            incident.opened = at
        elif step == "close":
            incident.closed = at
            if isinstance(record.get("resolution"), str):
                incident.resolution = record["resolution"]
        else:
            incident.updates += 1
        if record.get("suspend") is True:
            incident.suspend = True
        for name in _NOTICE_FIELDS:
            value = record.get(name)
            if isinstance(value, str) and value:
                incident.notice[name] = value

    def _control(self, index: int, record: dict[str, Any]) -> None:
        control = str(record.get("control"))
        at = str(record.get("at") or record.get("ts"))
        names: tuple[str, ...]
        if control == "takeover":
            action = str(record.get("state"))
            names = ("route", "reason", "fallback")
        elif control == "termination":
            action = str(record.get("action"))
            names = ("end", "announced", "delete_by", "subjects")
        else:
            action = str(record.get("action") or record.get("state"))
            names = ()
        details = {}
        for name in names:
            value = record.get(name)
            if name == "route" and value is None:
                value = "all AI routes"
            if value is not None:
                details[name] = str(value)
        self._controls.append(ControlEvent(index, at, control, action, details))

    # -- results -------------------------------------------------------------------------------------

    def disclosure(self) -> DisclosureFigures:
        """The disclosure section's figures."""
        rows = sorted(self._routes.values(), key=lambda r: (-r.interactions, r.route))
        shown, rest = rows[:MAX_ROUTES], rows[MAX_ROUTES:]
        if rest:
            other = RouteRow(f"{len(rest)} other routes")
            for row in rest:
                _add_row(other, row)
            shown.append(other)
        total = RouteRow("all routes")
        for row in rows:
            _add_row(total, row)
        return DisclosureFigures(shown, total, dict(sorted(self._notices.items())),
                                 dict(sorted(self._outcomes.items())), self._text_labels, self._text_label_errors)

    def labels(self) -> LabelFigures:
        """The labels section's figures."""
        rows = [self._labels[key] for key in sorted(self._labels)]
        for row in rows:
            row.variants = dict(sorted(row.variants.items()))
        skips = sorted((m, p, r, n) for (m, p, r), n in self._skips.items())
        return LabelFigures(self._label_files, rows, skips, dict(sorted(self._roles.items())))

    def requests(self, *, deadline_days: int, now: datetime) -> RequestFigures:
        """The requests section: the desk's own fold over the collected records, as of ``now``."""
        end = max(self._requests, default=-1) + 1
        # The calendar is never consulted: folding reads the deadlines the records store.
        desk = RequestDesk(cast(Any, _Hub(_RequestLog(self._requests, end))), deadline_days=deadline_days,
                           calendar=WeekdayCalendar())
        figures = RequestFigures(deadline_days=deadline_days)
        months: dict[str, MonthRow] = {}
        recorded: Counter[int] = Counter()
        for record in self._requests.values():
            if record.get("kind") == "explanation" and record.get("step") == "received":
                days = record.get("deadline_days")
                if isinstance(days, int):
                    recorded[days] += 1
        figures.recorded_deadlines = dict(sorted(recorded.items()))
        states: Counter[str] = Counter()
        for request in desk.requests():
            row = months.setdefault(month_of(request.received), MonthRow(month_of(request.received)))
            _count_request(request, now, row, figures)
            states[request.state] += 1
            figures.automated += request.automated
        categories: Counter[str] = Counter()
        for complaint in desk.complaints():
            row = months.setdefault(month_of(complaint.received), MonthRow(month_of(complaint.received)))
            _count_complaint(complaint, now, row, figures)
            categories[complaint.category] += 1
        figures.months = [months[key] for key in sorted(months)]
        figures.desk_ratio = desk.on_time_ratio(now=now)
        figures.categories = dict(sorted(categories.items()))
        figures.states = dict(sorted(states.items()))
        return figures

    def incidents(self) -> list[Incident]:
        """Every incident in the window, in the order they were opened."""
        return [self._incidents[key] for key in sorted(self._incidents, key=lambda k: (self._incidents[k].opened or "", k))]

    def controls(self, control: str) -> list[ControlEvent]:
        """The takeover or termination events, in log order."""
        return [event for event in self._controls if event.control == control]

    def controls_except(self, controls: Iterable[str]) -> list[ControlEvent]:
        """Control events of any other kind (a later feature's switch), in log order."""
        known = set(controls)
        return [event for event in self._controls if event.control not in known]

    def erasures(self) -> ErasureFigures:
        """The erasures section's figures."""
        return ErasureFigures(sum(self._erasures.values()), dict(sorted(self._erasures.items())))

    def retention(self, periods: Mapping[str, float], floors: Mapping[str, float], now: float) -> list[RetentionRow]:
        """One row per record kind seen, and per kind with a configured period."""
        day = 86_400.0
        rows = []
        for kind in sorted(set(self.kinds) | (set(periods) - {"default"})):
            period = periods.get(kind, periods["default"])
            floor = floors.get(kind, floors["default"])
            # Sequencing times never decrease along the log: the records past their period are a prefix.
            past = bisect_right(self._kind_ts.get(kind, array("d")), now - period)
            rows.append(RetentionRow(kind, self.kinds.get(kind, 0), round(period / day, 1), round(floor / day, 1),
                                     self._oldest.get(kind), past))
        return rows


def _add_row(total: RouteRow, row: RouteRow) -> None:
    for name in ("interactions", "answered", "disclosed", "errors", "first_contact", "body_notices"):
        setattr(total, name, getattr(total, name) + getattr(row, name))


def _count_request(request: Request, now: datetime, row: MonthRow, figures: RequestFigures) -> None:
    # The same rule as RequestDesk.on_time_ratio: decided by the due time, or late once it passed.
    row.explanations.count(request.answered_at, request.due, now)
    figures.explanations.count(request.answered_at, request.due, now)
    if request.complained_at is not None and request.complaint_due is not None:
        row.appeals.count(request.resolved_at, request.complaint_due, now)
        figures.appeals.count(request.resolved_at, request.complaint_due, now)


def _count_complaint(complaint: Complaint, now: datetime, row: MonthRow, figures: RequestFigures) -> None:
    row.complaints.count(complaint.resolved_at, complaint.due, now)
    figures.complaints.count(complaint.resolved_at, complaint.due, now)


_HANDLERS = {
    "interaction": Collector._interaction,
    "label": Collector._label,
    "explanation": Collector._request,
    "complaint": Collector._request,
    "subject.erased": Collector._request,
    "incident": Collector._incident,
    "control": Collector._control,
}

