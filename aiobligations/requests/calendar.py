"""Working-day calendars and deadline arithmetic for users' requests."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from types import MappingProxyType
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import structlog

__all__ = [
    "CHINA_HOLIDAY_NOTICES",
    "DEFAULT_DEADLINE_DAYS",
    "DEFAULT_TIMEZONE",
    "ChinaCalendar",
    "WeekdayCalendar",
    "WorkingCalendar",
    "add_working_days",
    "is_overdue",
    "working_days_between",
]

log = structlog.get_logger("aiobligations.requests")

DEFAULT_DEADLINE_DAYS = 15
"""Working days a provider has to answer a request unless configured otherwise."""

DEFAULT_TIMEZONE: tzinfo = ZoneInfo("Asia/Shanghai")
"""Beijing time: the zone in which a day of receipt and a deadline's day are read."""

# A run of this many non-working days means the calendar is broken (every day a holiday), and
# the deadline loop must stop rather than spin forever.
_MAX_CONSECUTIVE_DAYS_OFF = 366


def _days(year: int, month: int, first: int, last_month: int | None = None, last: int | None = None) -> set[date]:
    """Every day from ``year-month-first`` to ``year-last_month-last`` inclusive (one day if no end)."""
    start = date(year, month, first)
    end = date(year, last_month if last_month is not None else month, last if last is not None else first)
    return {start + timedelta(days=offset) for offset in range((end - start).days + 1)}


def _year(days_off: Iterable[set[date]], working: Iterable[date]) -> tuple[frozenset[date], frozenset[date]]:
    return frozenset().union(*days_off), frozenset(working)


# Each entry is (days off, adjusted working days) exactly as the year's notice lists them. "Days
# off" are the whole breaks the notice announces (放假/放假调休), weekend days inside a break
# included; "adjusted working days" are the weekend days it names as working days (调休上班).
_CHINA_DATA: dict[int, tuple[frozenset[date], frozenset[date]]] = {
    # 国务院办公厅关于2024年部分节假日安排的通知 (国办发明电〔2023〕7号), 2023-10-25.
    # Before the 2024 amendment of 全国年节及纪念日放假办法: 11 statutory holiday days. The notice
    # only *encourages* employers to give New Year's Eve (2月9日) off, so it stays a working day.
    2024: _year(
        [
            _days(2024, 1, 1),  # 元旦: 1月1日放假，与周末连休.
            _days(2024, 2, 10, 2, 17),  # 春节: 2月10日至17日.
            _days(2024, 4, 4, 4, 6),  # 清明节: 4月4日至6日.
            _days(2024, 5, 1, 5, 5),  # 劳动节: 5月1日至5日.
            _days(2024, 6, 10),  # 端午节: 6月10日放假，与周末连休.
            _days(2024, 9, 15, 9, 17),  # 中秋节: 9月15日至17日.
            _days(2024, 10, 1, 10, 7),  # 国庆节: 10月1日至7日.
        ],
        [
            date(2024, 2, 4),  # 春节: 2月4日（星期日）上班.
            date(2024, 2, 18),  # 春节: 2月18日（星期日）上班.
            date(2024, 4, 7),  # 清明节: 4月7日（星期日）上班.
            date(2024, 4, 28),  # 劳动节: 4月28日（星期日）上班.
            date(2024, 5, 11),  # 劳动节: 5月11日（星期六）上班.
            date(2024, 9, 14),  # 中秋节: 9月14日（星期六）上班.
            date(2024, 9, 29),  # 国庆节: 9月29日（星期日）上班.
            date(2024, 10, 12),  # 国庆节: 10月12日（星期六）上班.
        ],
    ),
    # 国务院办公厅关于2025年部分节假日安排的通知 (国办发明电〔2024〕12号), 2024-11-12.
    # The first year under the amended 全国年节及纪念日放假办法 (State Council decision of November
    # 2024, in force 2025-01-01): New Year's Eve and 5月2日 were added, 13 statutory holiday days.
    2025: _year(
        [
            _days(2025, 1, 1),  # 元旦: 1月1日放假1天，不调休.
            _days(2025, 1, 28, 2, 4),  # 春节: 1月28日（除夕）至2月4日（正月初七）.
            _days(2025, 4, 4, 4, 6),  # 清明节: 4月4日至6日.
            _days(2025, 5, 1, 5, 5),  # 劳动节: 5月1日至5日.
            _days(2025, 5, 31, 6, 2),  # 端午节: 5月31日至6月2日.
            _days(2025, 10, 1, 10, 8),  # 国庆节、中秋节: 10月1日至8日.
        ],
        [
            date(2025, 1, 26),  # 春节: 1月26日（周日）上班.
            date(2025, 2, 8),  # 春节: 2月8日（周六）上班.
            date(2025, 4, 27),  # 劳动节: 4月27日（周日）上班.
            date(2025, 9, 28),  # 国庆节、中秋节: 9月28日（周日）上班.
            date(2025, 10, 11),  # 国庆节、中秋节: 10月11日（周六）上班.
        ],
    ),
    # 国务院办公厅关于2026年部分节假日安排的通知, 2025-11-04 (released by Xinhua the same day).
    2026: _year(
        [
            _days(2026, 1, 1, 1, 3),  # 元旦: 1月1日至3日.
            _days(2026, 2, 15, 2, 23),  # 春节: 2月15日（腊月二十八）至23日（正月初七）.
            _days(2026, 4, 4, 4, 6),  # 清明节: 4月4日至6日.
            _days(2026, 5, 1, 5, 5),  # 劳动节: 5月1日至5日.
            _days(2026, 6, 19, 6, 21),  # 端午节: 6月19日至21日.
            _days(2026, 9, 25, 9, 27),  # 中秋节: 9月25日至27日.
            _days(2026, 10, 1, 10, 7),  # 国庆节: 10月1日至7日.
        ],
        [
            date(2026, 1, 4),  # 元旦: 1月4日（周日）上班.
            date(2026, 2, 14),  # 春节: 2月14日（周六）上班.
            date(2026, 2, 28),  # 春节: 2月28日（周六）上班.
            date(2026, 5, 9),  # 劳动节: 5月9日（周六）上班.
            date(2026, 9, 20),  # 国庆节: 9月20日（周日）上班.
            date(2026, 10, 10),  # 国庆节: 10月10日（周六）上班.
        ],
    ),
}

CHINA_HOLIDAY_NOTICES: Mapping[int, tuple[frozenset[date], frozenset[date]]] = MappingProxyType(_CHINA_DATA)
"""
Year → (days off, adjusted working days) from the State Council General Office's annual notices.

Days off include the weekend days inside each announced break. Read-only; to add or correct days,
pass ``extra_holidays`` / ``extra_working_days`` to :class:`ChinaCalendar`.
"""


@runtime_checkable
class WorkingCalendar(Protocol):
    """
    **Protocol:** says which days are working days.

    Any object with this method will do; :class:`ChinaCalendar` and :class:`WeekdayCalendar` are
    the two that ship.

    .. versionadded:: 0.1.0
    """

    def is_working_day(self, day: date, /) -> bool:
        """
        Tell whether ``day`` is a working day.

        Args:
            day: A calendar date (not a datetime), already in the jurisdiction's own time zone.

        Returns:
            ``True`` for a working day.
        """
        ...


def _check_date(name: str, day: object) -> date:
    # A datetime is a date subclass but never equals one, so it would silently miss every set.
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"{name} must be a datetime.date, got {day!r}; pass value.date() for a datetime.")
    return day


class WeekdayCalendar:
    """
    Monday to Friday are working days, with no holidays: for tests and other jurisdictions.

    .. versionadded:: 0.1.0
    """

    def is_working_day(self, day: date, /) -> bool:
        """
        Tell whether ``day`` falls on Monday to Friday.

        Args:
            day: A calendar date.

        Returns:
            ``True`` from Monday to Friday.

        Raises:
            TypeError: If ``day`` is not a :class:`datetime.date` (or is a datetime).
        """
        return _check_date("day", day).weekday() < 5

    def __repr__(self) -> str:
        return "WeekdayCalendar()"


class ChinaCalendar:
    """
    Mainland China's working days: statutory holidays and adjusted working weekends (调休).

    The days come from the State Council General Office's annual notices on holiday arrangements,
    encoded in :data:`CHINA_HOLIDAY_NOTICES` (see :meth:`covers`). For a year without a notice
    here, Monday to Friday are working days, and a ``calendar_year_not_covered`` warning is
    logged once per year per calendar; update the package, or pass the days yourself.

    Args:
        extra_holidays: Further days off (a company holiday, or next year's holidays before the
            package knows them). They win over the notices.
        extra_working_days: Further working days. They win over the notices and over
            ``extra_holidays``.

    Raises:
        TypeError: If an extra day is not a :class:`datetime.date`.
        ValueError: If a day is both an extra holiday and an extra working day.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, extra_holidays: Iterable[date] = (), extra_working_days: Iterable[date] = ()) -> None:
        self._extra_holidays = frozenset(_check_date("extra_holidays item", day) for day in extra_holidays)
        self._extra_working_days = frozenset(_check_date("extra_working_days item", day) for day in extra_working_days)
        both = self._extra_holidays & self._extra_working_days
        if both:
            raise ValueError(
                f"{min(both).isoformat()} is in both extra_holidays and extra_working_days; keep it in one."
            )
        self._warned: set[int] = set()
        self._lock = threading.Lock()

    def covers(self, year: int) -> bool:
        """
        Tell whether a published notice for ``year`` is encoded.

        Args:
            year: A calendar year.

        Returns:
            ``True`` if the year's holidays and adjusted working days are known.
        """
        return year in _CHINA_DATA

    def is_working_day(self, day: date, /) -> bool:
        """
        Tell whether ``day`` is a working day in mainland China.

        Args:
            day: A calendar date in Beijing time.

        Returns:
            ``True`` for a working day: an extra working day, or a notice's adjusted working day,
            or a Monday to Friday that is neither an extra holiday nor a notice's day off.

        Raises:
            TypeError: If ``day`` is not a :class:`datetime.date` (or is a datetime).
        """
        _check_date("day", day)
        if day in self._extra_working_days:
            return True
        if day in self._extra_holidays:
            return False
        notice = _CHINA_DATA.get(day.year)
        if notice is None:
            self._warn_uncovered(day.year)
            return day.weekday() < 5
        days_off, working_days = notice
        if day in working_days:
            return True
        if day in days_off:
            return False
        return day.weekday() < 5

    def _warn_uncovered(self, year: int) -> None:
        with self._lock:
            if year in self._warned:
                return
            self._warned.add(year)
        log.warning(
            "calendar_year_not_covered",
            year=year,
            covered_years=sorted(_CHINA_DATA),
            fallback="monday_to_friday",
            fix="upgrade aiobligations or pass extra_holidays/extra_working_days to ChinaCalendar",
        )

    def __repr__(self) -> str:
        return (
            f"ChinaCalendar(extra_holidays={len(self._extra_holidays)} days, "
            f"extra_working_days={len(self._extra_working_days)} days)"
        )


def _local_date(name: str, moment: datetime, tz: tzinfo) -> date:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {moment!r}.")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware, got naive {moment.isoformat()}; "
            "attach a zone, e.g. .replace(tzinfo=ZoneInfo('Asia/Shanghai'))."
        )
    return moment.astimezone(tz).date()


def _next_working_day(day: date, calendar: WorkingCalendar) -> date:
    """The first working day strictly after ``day``."""
    for offset in range(1, _MAX_CONSECUTIVE_DAYS_OFF + 1):
        candidate = day + timedelta(days=offset)
        if calendar.is_working_day(candidate):
            return candidate
    raise ValueError(
        f"{calendar!r} has no working day in the {_MAX_CONSECUTIVE_DAYS_OFF} days after {day.isoformat()}; "
        "check its holidays."
    )


def add_working_days(
    start: datetime,
    days: int,
    calendar: WorkingCalendar,
    *,
    tz: tzinfo = DEFAULT_TIMEZONE,
) -> datetime:
    """
    Compute the deadline ``days`` working days after a request received at ``start``.

    The day of receipt is ``start``'s date in ``tz``, so a request at 00:30 Beijing time was
    received that day in Beijing although it is still the previous day in UTC. Counting starts on
    the first working day *after* the day of receipt, the usual reading of "within N working
    days": a request received on Monday with ``days=1`` is due by the end of Tuesday, and one
    received on a Saturday is due by the end of Monday. The deadline is the end of the Nth
    working day (23:59:59.999999 in ``tz``).

    ``days=0`` means the end of the day of receipt if that is a working day, otherwise the end of
    the next working day.

    Args:
        start: When the request was received; timezone-aware.
        days: Working days allowed, 0 or more (see :data:`DEFAULT_DEADLINE_DAYS`).
        calendar: Which days are working days, e.g. :class:`ChinaCalendar`.
        tz: The zone in which days begin and end.

    Returns:
        The deadline, timezone-aware in UTC.

    Raises:
        TypeError: If ``start`` is not a datetime or ``days`` is not an int.
        ValueError: If ``start`` is naive, ``days`` is negative, or the calendar has no working
            day within a year.

    .. versionadded:: 0.1.0
    """
    if isinstance(days, bool) or not isinstance(days, int):
        raise TypeError(f"days must be an int, got {days!r}.")
    if days < 0:
        raise ValueError(f"days must be 0 or more, got {days!r}.")
    day = _local_date("start", start, tz)
    if days == 0:
        if not calendar.is_working_day(day):
            day = _next_working_day(day, calendar)
    else:
        for _ in range(days):
            day = _next_working_day(day, calendar)
    return datetime.combine(day, time.max, tzinfo=tz).astimezone(UTC)


def working_days_between(
    start: datetime,
    end: datetime,
    calendar: WorkingCalendar,
    *,
    tz: tzinfo = DEFAULT_TIMEZONE,
) -> int:
    """
    Count the working days after ``start``'s day, up to and including ``end``'s day.

    Days are read in ``tz``, as in :func:`add_working_days`, so for ``n >= 1``
    ``working_days_between(start, add_working_days(start, n, cal), cal) == n``. (For ``n == 0``
    on a non-working day of receipt the count is 1: the deadline is the next working day's end.)
    Both moments on the same day give 0; an ``end`` before ``start`` gives the negative count.

    Args:
        start: The earlier moment, e.g. the request's receipt; timezone-aware.
        end: The later moment, e.g. now or a deadline; timezone-aware.
        calendar: Which days are working days.
        tz: The zone in which days begin and end.

    Returns:
        The number of working days in ``(start's day, end's day]``, negated if ``end`` comes first.

    Raises:
        TypeError: If ``start`` or ``end`` is not a datetime.
        ValueError: If ``start`` or ``end`` is naive.

    .. versionadded:: 0.1.0
    """
    first = _local_date("start", start, tz)
    last = _local_date("end", end, tz)
    sign = 1
    if last < first:
        first, last, sign = last, first, -1
    count = 0
    day = first
    while day < last:
        day += timedelta(days=1)
        if calendar.is_working_day(day):
            count += 1
    return sign * count


def is_overdue(deadline: datetime, now: datetime | None = None) -> bool:
    """
    Tell whether ``deadline`` has passed.

    Args:
        deadline: The deadline, e.g. from :func:`add_working_days`; timezone-aware.
        now: The moment to judge at; timezone-aware. Defaults to the current time.

    Returns:
        ``True`` once ``now`` is strictly after ``deadline``.

    Raises:
        TypeError: If ``deadline`` or ``now`` is not a datetime.
        ValueError: If ``deadline`` or ``now`` is naive.

    .. versionadded:: 0.1.0
    """
    if now is None:
        now = datetime.now(UTC)
    _local_date("deadline", deadline, UTC)
    _local_date("now", now, UTC)
    return now > deadline
