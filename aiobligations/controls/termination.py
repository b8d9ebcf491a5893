"""Termination (终止机制, Art. 50): announce 30 working days ahead, then delete users' personal information.

A plan is a ledger record (``{"kind": "control", "control": "termination", "action": "plan", …}``),
so every worker and replica follows it, and it survives restarts. While a plan stands, the
transparency document and page carry the announcement. From the end day (00:00 Beijing time) the
middleware answers AI routes with 410 and the announcement. On the deletion day every subject's key
is deleted (crypto-shredding: their sealed records no longer open, every proof still verifies) and
a ``shredded`` record counts them; ``aiobligations terminate run`` (for cron) and the service's own
background check both do it, once.

Days, in Beijing time, on the profile's working-day calendar:

* ``end`` is the termination day (终止之日), the first day without service. It must come after the
  30th working day following the announcement, so that 30 whole working days separate the two.
* ``delete_by`` is the 30th working day counted from ``end`` itself (the earlier reading of
  "自终止之日起三十个工作日内"), or fewer with ``[termination] delete_days``.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from ..errors import ConfigurationError, ObligationError
from ..ledger.follow import LogFold
from ..requests.calendar import DEFAULT_TIMEZONE, WorkingCalendar, add_working_days
from .errors import ControlError, InvalidControl

if TYPE_CHECKING:
    from ..obligations import Obligations

__all__ = [
    "DELETE_DAYS",
    "NOTICE_DAYS",
    "TerminationError",
    "TerminationPlan",
    "TerminationState",
    "announcement",
    "with_termination",
]

log = structlog.get_logger("aiobligations.controls")

NOTICE_DAYS = 30
"""Working days between the announcement and the end (Art. 50(一))."""

DELETE_DAYS = 30
"""Working days from the end within which users' personal information is deleted (Art. 50(二))."""

_DEFAULT_INTERVAL = 0.5


class TerminationError(ControlError):
    """A termination step is not allowed now: too little notice, a plan already set, or the end has passed.

    .. versionadded:: 0.2.0
    """


@dataclass(frozen=True)
class TerminationPlan:
    """
    A planned termination, as the ledger records it.

    Attributes:
        end: The termination day: the first day without service (Beijing time).
        announced: The day it was announced.
        delete_by: The last day to delete users' personal information.
        by: The operator who planned it.
        at: When it was recorded (RFC 3339 UTC).
        index: The ``plan`` record's ledger index.
        shredded: How many subjects were shredded, once done; ``None`` before.
        shredded_at: When (RFC 3339 UTC), once done.

    .. versionadded:: 0.2.0
    """

    end: date
    announced: date
    delete_by: date
    by: str
    at: str
    index: int
    shredded: int | None = None
    shredded_at: str | None = None

    @property
    def end_timestamp(self) -> float:
        """The start of the end day in Beijing, as a POSIX timestamp (the request path compares with it)."""
        return datetime.combine(self.end, time(0), tzinfo=DEFAULT_TIMEZONE).timestamp()

    @property
    def delete_timestamp(self) -> float:
        """The start of the deletion day in Beijing, as a POSIX timestamp."""
        return datetime.combine(self.delete_by, time(0), tzinfo=DEFAULT_TIMEZONE).timestamp()

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (days as ``YYYY-MM-DD``)."""
        return {"end": self.end.isoformat(), "announced": self.announced.isoformat(),
                "delete_by": self.delete_by.isoformat(), "by": self.by, "at": self.at, "index": self.index,
                "shredded": self.shredded, "shredded_at": self.shredded_at}


def announcement(plan: TerminationPlan, lang: str, *, provider: str = "", service: str = "") -> str:
    """
    The announcement users read (Art. 50(一): the termination plan and users' rights), in ``lang``.

    Args:
        plan: The plan.
        lang: ``"zh"`` or ``"en"``.
        provider: The provider's name in that language.
        service: The service's name.

    Returns:
        A few plain sentences.

    .. versionadded:: 0.2.0
    """
    end, delete_by = plan.end, plan.delete_by
    if lang == "en":
        who = f"{provider} will stop providing {service or 'this AI service'}" if provider else \
            f"{service or 'This AI service'} will stop"
        return (f"{who} on {end.isoformat()} (announced on {plan.announced.isoformat()}; AI Model Law 2.0, Art. 50). "
                f"Until then you can use it as before, ask for explanations and complain. "
                f"By {delete_by.isoformat()} we will delete the personal information we hold about you, including "
                f"the records kept as evidence (their keys are destroyed; what remains cannot be read). "
                f"Your rights and how to reach us are listed on this page.")
    who = f"{provider}将于{end.year}年{end.month}月{end.day}日终止提供{service or '本人工智能服务'}" if provider else \
        f"{service or '本人工智能服务'}将于{end.year}年{end.month}月{end.day}日终止"
    return (f"{who}（公示日期：{plan.announced.year}年{plan.announced.month}月{plan.announced.day}日；"
            f"依据《人工智能示范法2.0》第五十条）。在此之前，您可以照常使用，并可申请解释、提出投诉。"
            f"我们将在{delete_by.year}年{delete_by.month}月{delete_by.day}日前删除我们持有的您的个人信息，"
            f"包括作为证据保存的记录（其密钥将被销毁，剩余内容无法读取）。您的权利和联系方式见本页。")


def with_termination(document: dict[str, Any], plan: TerminationPlan | None, *, provider: Mapping[str, str] | None
                     = None, service: str = "", url: str = "") -> dict[str, Any]:
    """
    The transparency document with the termination announcement (``termination``), while a plan stands.

    Args:
        document: A transparency document.
        plan: The standing plan, or ``None`` (the document is returned without ``termination``).
        provider: The provider's name by language (``{"zh": …, "en": …}``).
        service: The service's name.
        url: Where the announcement is published (the transparency page).

    Returns:
        A new document.

    .. versionadded:: 0.2.0
    """
    document = {key: value for key, value in document.items() if key != "termination"}
    if plan is None:
        return document
    names = provider or {}
    document["termination"] = {
        "end": plan.end.isoformat(), "announced": plan.announced.isoformat(), "delete_by": plan.delete_by.isoformat(),
        "deleted": plan.shredded is not None, "url": url,
        "notice": {lang: announcement(plan, lang, provider=names.get(lang, ""), service=service) for lang in ("zh", "en")},
    }
    return document


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _day(name: str, value: Any) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise InvalidControl(f"{name} must be a date (YYYY-MM-DD), got {value!r:.40}")
    return value


def _delete_days(raw: Mapping[str, Any]) -> int:
    section = raw.get("termination", {})
    if not isinstance(section, Mapping):
        raise ConfigurationError("[termination] must be a table")
    days = section.get("delete_days", DELETE_DAYS)
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= DELETE_DAYS:
        raise ConfigurationError(f"[termination] delete_days must be a whole number of working days from 1 to "
                                 f"{DELETE_DAYS} (Art. 50), got {days!r:.40}")
    return days


class TerminationState(LogFold):
    """
    The service's termination plan, kept as ledger records and followed by every process.

    Building it reads the ledger's ``control`` records, so a state built after a restart knows the
    plan. Steps are checked and recorded under the ledger's cross-process lock, so two processes
    (or a cron job and the service) record one plan and one shredding.

    Args:
        obligations: The hub whose ledger holds the records (and whose profile gives the calendar).
        clock: Returns the current time, timezone-aware (default: the system clock).
        calendar: The working days (default: the hub's, from ``[requests] calendar``).

    Raises:
        ConfigurationError: ``[termination] delete_days`` is invalid.

    .. versionadded:: 0.2.0
    """

    KINDS = ("control",)  # The termination's are those with "control": "termination".
    LOCK = "termination"
    NAME = "termination"

    def __init__(self, obligations: Obligations, *, clock: Callable[[], datetime] | None = None,
                 calendar: WorkingCalendar | None = None) -> None:
        self.obligations = obligations
        self.calendar: WorkingCalendar = calendar if calendar is not None else obligations.calendar
        self.delete_days = _delete_days(obligations.profile.raw)
        controls = obligations.profile.raw.get("controls", {})
        interval = controls.get("poll_interval", _DEFAULT_INTERVAL) if isinstance(controls, Mapping) else None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._start_fold(obligations.ledger, interval=float(interval) if isinstance(interval, (int, float))
                         and 0.05 <= interval <= 1 else _DEFAULT_INTERVAL)
        self.plan: TerminationPlan | None = None
        """The standing plan (replaced whole; read by the request path), or ``None``."""
        try:
            self.refresh()
        except ObligationError as exc:  # The database may be away at start-up: the follower retries.
            log.warning("termination_unavailable", error=f"{type(exc).__name__}: {exc}")

    # -- following the log ---------------------------------------------------------------------

    def refresh(self) -> TerminationPlan | None:
        """Fold in the records stored since the last look (whichever process wrote them); return the plan."""
        with self._lock:
            self._catch_up()
            return self.plan

    def _fold(self, record: Mapping[str, Any], index: int) -> None:
        if record.get("control") == "termination":
            self.plan = _fold(self.plan, record, index)

    def _tick(self) -> None:
        """Fold in new records, and shred on the deletion day (also keys made since: a complaint after the end)."""
        plan = self.refresh()
        if plan is not None and self._now().timestamp() >= plan.delete_timestamp and (
                plan.shredded is None or self.ledger.subject_pseudonyms()):
            self.run(by="scheduler")

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise InvalidControl(f"the clock must return an aware datetime, got {now!r}")
        return now

    def today(self) -> date:
        """Today in Beijing time, by this state's clock."""
        return self._now().astimezone(DEFAULT_TIMEZONE).date()

    @staticmethod
    def _by(by: Any) -> str:
        if not isinstance(by, str) or not by.strip() or len(by) > 200:
            raise InvalidControl(f"by must be a non-empty operator id, got {by!r:.40}")
        return by

    # -- the request path ----------------------------------------------------------------------

    def ended(self, now: float | None = None) -> TerminationPlan | None:
        """The plan when the service has ended, else ``None`` (no I/O; for the request path).

        Args:
            now: A POSIX time (default: this state's clock).
        """
        plan = self.plan
        if plan is None:
            return None
        if now is None:
            now = self._now().timestamp()
        return plan if now >= plan.end_timestamp else None

    # -- steps ---------------------------------------------------------------------------------

    def earliest_end(self, today: date | None = None) -> date:
        """The first end day allowed if announced ``today``: the day after the 30th working day after it."""
        today = today if today is not None else self.today()
        start = datetime.combine(today, time(12), tzinfo=DEFAULT_TIMEZONE)
        last = add_working_days(start, NOTICE_DAYS, self.calendar).astimezone(DEFAULT_TIMEZONE).date()
        return last + timedelta(days=1)

    def deletion_day(self, end: date) -> date:
        """The last day to delete users' personal information for a service ending on ``end``."""
        start = datetime.combine(end - timedelta(days=1), time(12), tzinfo=DEFAULT_TIMEZONE)
        return add_working_days(start, self.delete_days, self.calendar).astimezone(DEFAULT_TIMEZONE).date()

    def plan_termination(self, end: date, *, by: str) -> TerminationPlan:
        """
        Plan the service's end on ``end`` and publish the announcement (Art. 50(一)).

        Args:
            end: The termination day: the first day without service (Beijing time).
            by: The operator's id.

        Returns:
            The plan. Planning the same end again returns the standing plan and records nothing.

        Raises:
            TerminationError: ``end`` leaves fewer than 30 working days after today, or another
                end is planned already (cancel it first).
            InvalidControl: ``end`` is not a date, or ``by`` is empty.
        """
        end = _day("end", end)
        by = self._by(by)
        with self._exclusive():
            current = self.plan
            if current is not None:
                if current.end == end:
                    return current
                raise TerminationError(f"a termination on {current.end.isoformat()} is planned already; "
                                       "cancel it first")
            today = self.today()
            earliest = self.earliest_end(today)
            if end < earliest:
                raise TerminationError(
                    f"the end {end.isoformat()} leaves fewer than {NOTICE_DAYS} working days after the announcement "
                    f"today ({today.isoformat()}); the earliest end is {earliest.isoformat()} (Art. 50)")
            delete_by = self.deletion_day(end)
            self._append({"kind": "control", "control": "termination", "action": "plan", "end": end.isoformat(),
                          "announced": today.isoformat(), "delete_by": delete_by.isoformat(), "by": by,
                          "at": _timestamp(self._now())})
            plan = self.plan
        if plan is None:  # pragma: no cover - the append above folded it in.
            raise TerminationError("the plan was recorded but not read back; run `aiobligations terminate status`")
        log.warning("termination_planned", end=end.isoformat(), delete_by=delete_by.isoformat(), by=by)
        covers = getattr(self.calendar, "covers", None)
        uncovered = [year for year in range(plan.announced.year, plan.delete_by.year + 1)
                     if covers is not None and not covers(year)]
        if uncovered:
            # Monday to Friday stood in for those years' holidays: the notice and the deadline may be off.
            log.warning("termination_calendar_uncovered", years=uncovered,
                        fix="load those years' holiday iCalendar files ([requests] calendar) and check the plan")
        return plan

    def cancel(self, *, by: str) -> bool:
        """
        Cancel the standing plan before its end; the announcement is withdrawn.

        Returns:
            ``True`` when recorded; ``False`` when no plan stands (nothing recorded).

        Raises:
            TerminationError: The end day has come: the service has ended.
        """
        by = self._by(by)
        with self._exclusive():
            plan = self.plan
            if plan is None:
                return False
            if self._now().timestamp() >= plan.end_timestamp:
                raise TerminationError(f"the service ended on {plan.end.isoformat()}; a plan cannot be cancelled "
                                       "after its end")
            self._append({"kind": "control", "control": "termination", "action": "cancel",
                          "end": plan.end.isoformat(), "announced": plan.announced.isoformat(),
                          "delete_by": plan.delete_by.isoformat(), "by": by, "at": _timestamp(self._now())})
        log.warning("termination_cancelled", end=plan.end.isoformat(), by=by)
        return True

    def run(self, *, by: str = "scheduler", early: bool = False) -> int | None:
        """
        Shred every subject once the deletion day has come (Art. 50(二)); the scheduler's step.

        Every subject key in the ledger is deleted (:meth:`aiobligations.ledger.Ledger.erase_pseudonyms`),
        then one ``shredded`` record counts them. Run again, it does nothing, unless keys were made
        since (a worker that had not yet seen the plan, a complaint sent after the end): those are
        shredded too, with another ``shredded`` record counting them.

        Args:
            by: Who runs it (an operator id, or ``"scheduler"``).
            early: Shred from the end day on, without waiting for the deletion day.

        Returns:
            The number of subjects shredded in all (the recorded count when nothing was left), or
            ``None`` when it is not time yet or no plan stands.
        """
        by = self._by(by)
        with self._exclusive():
            plan = self.plan
            if plan is None:
                return None
            left = self.ledger.subject_pseudonyms()
            if plan.shredded is not None and not left:
                return plan.shredded
            now = self._now().timestamp()
            if plan.shredded is None and now < (plan.end_timestamp if early else plan.delete_timestamp):
                return None
            # Keys created after this list was read are caught by a later run (the follower sweeps).
            count = len(self.ledger.erase_pseudonyms(left))
            self._append({"kind": "control", "control": "termination", "action": "shredded",
                          "end": plan.end.isoformat(), "announced": plan.announced.isoformat(),
                          "delete_by": plan.delete_by.isoformat(), "subjects": count, "by": by,
                          "at": _timestamp(self._now())})
        log.warning("termination_shredded", subjects=count, by=by)
        return self.plan.shredded if self.plan is not None and self.plan.shredded is not None else count

    def __repr__(self) -> str:
        plan = self.plan
        return f"TerminationState(plan={plan.end.isoformat() if plan else None})"


def _fold(plan: TerminationPlan | None, record: Mapping[str, Any], index: int) -> TerminationPlan | None:
    """The plan after one ``termination`` record."""
    action = record.get("action")
    try:
        end = date.fromisoformat(str(record.get("end")))
        announced = date.fromisoformat(str(record.get("announced")))
        delete_by = date.fromisoformat(str(record.get("delete_by")))
    except ValueError:
        log.error("termination_record_unreadable", index=index)
        return plan
    if action == "plan":
        return TerminationPlan(end=end, announced=announced, delete_by=delete_by, by=str(record.get("by", "")),
                               at=str(record.get("at", "")), index=index)
    if plan is None or plan.end != end:
        return plan
    if action == "cancel":
        return None
    if action == "shredded":
        subjects = record.get("subjects")
        count = subjects if isinstance(subjects, int) and not isinstance(subjects, bool) else 0
        return TerminationPlan(end=plan.end, announced=plan.announced, delete_by=plan.delete_by, by=plan.by,
                               at=plan.at, index=plan.index, shredded=(plan.shredded or 0) + count,
                               shredded_at=plan.shredded_at or str(record.get("at", "")))
    return plan
