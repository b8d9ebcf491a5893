"""Working-day calendars and deadline arithmetic for users' requests, terminations and filings.

Mainland China's calendar ships with the State Council's notices for the years this release knows;
later years load from an iCalendar file (see :func:`read_holiday_ics`), so a new year's holidays
need no new release.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import structlog

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..profile import Profile

__all__ = [
    "CHINA_HOLIDAY_NOTICES",
    "DEFAULT_DEADLINE_DAYS",
    "DEFAULT_TIMEZONE",
    "MAX_ICS_BYTES",
    "ChinaCalendar",
    "HolidaySchedule",
    "WeekdayCalendar",
    "WorkingCalendar",
    "add_working_days",
    "calendar_from_profile",
    "is_overdue",
    "read_holiday_ics",
    "warn_if_next_year_uncovered",
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


MAX_ICS_BYTES = 1 << 20
"""The largest holiday iCalendar file read (1 MiB; a year's notice is a few kilobytes)."""

# A year counts as covered by a file when the file lists at least this many days off in it: every
# notice's breaks add up to more than 20 days, while a break that spills over from the next
# year's notice (a New Year break starting on 31 December) is a few days.
_COVERED_MIN_DAYS_OFF = 10
# No announced break has been longer than a few weeks; a longer event is a mistake in the file.
_MAX_EVENT_DAYS = 60
_MAX_EVENTS = 10_000
_YEARS = range(2000, 2200)
# How published feeds mark a day: "班" (上班, 补班, 调休上班) for a working day wins over "休" / "假"
# (休, 放假, 假期, 调休) for a day off, because a makeup working day is often called "春节调休（班）".
_WORKING = re.compile(r"班|\b(?:working[ -]?day|work[ -]?day|make[ -]?up)\b", re.IGNORECASE)
_OFF = re.compile(r"[休假]|\b(?:day[ -]?off|holiday|rest[ -]?day)\b", re.IGNORECASE)


@dataclass(frozen=True)
class HolidaySchedule:
    """
    Days off and adjusted working days read from a holiday iCalendar file.

    Attributes:
        days_off: Days off, weekend days inside a break included.
        working_days: Weekend days that are working days (调休上班).
        years: The years the file covers (at least 10 days off listed in the year).
        source: Where it was read from (a path, or ``"<bytes>"``).
        skipped: How many events carried neither mark and were ignored (other festivals, 节气).

    .. versionadded:: 0.2.0
    """

    days_off: frozenset[date]
    working_days: frozenset[date]
    years: frozenset[int]
    source: str = "<bytes>"
    skipped: int = 0


def _ics_text(value: Any) -> str:
    """SUMMARY or CATEGORIES as plain text (CATEGORIES may be one property or several)."""
    if value is None:
        return ""
    values = value if isinstance(value, list) else [value]
    parts: list[str] = []
    for item in values:
        cats = getattr(item, "cats", None)
        parts.extend(str(cat) for cat in cats) if cats is not None else parts.append(str(item))
    return " ".join(parts)


def _ics_day(event: Any, name: str, source: str, summary: str) -> date | None:
    """An event's DTSTART or DTEND as a day in Beijing; ``None`` when absent."""
    if name not in event:
        return None
    value = event.decoded(name)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(DEFAULT_TIMEZONE)
        if value.time() != time(0):
            raise ConfigurationError(
                f"{source}: the event {summary!r:.60} has a time of day ({name} {value.isoformat()}); "
                "holidays and working days must be all-day events (DTSTART;VALUE=DATE:YYYYMMDD)"
            )
        return value.date()
    if isinstance(value, date):
        return value
    raise ConfigurationError(f"{source}: the event {summary!r:.60} has {name} {value!r:.40}, not a date")


def read_holiday_ics(source: str | os.PathLike[str] | bytes) -> HolidaySchedule:
    """
    Read days off and adjusted working days from an iCalendar file (RFC 5545).

    The convention, which published Chinese holiday feeds follow: every day is an all-day
    ``VEVENT`` (``DTSTART;VALUE=DATE``, ``DTEND`` the day after the last day, or no ``DTEND`` for
    one day). An event whose ``SUMMARY`` or ``CATEGORIES`` contains **班** (上班, 补班, 调休上班),
    or ``working day`` / ``workday`` / ``make-up``, lists adjusted working days; otherwise one
    containing **休** or **假** (休, 放假, 假期), or ``day off`` / ``holiday``, lists days off.
    Other events (festivals that are not days off, solar terms) are ignored and counted in
    ``skipped``. A year is covered when at least 10 of its days are listed as days off.

    Args:
        source: The file's path, or its bytes.

    Returns:
        The days it lists.

    Raises:
        ConfigurationError: The file is missing, larger than :data:`MAX_ICS_BYTES`, not
            iCalendar, has a marked event with a time of day, a recurrence rule, a bad or
            reversed date, a span over 60 days, or lists one day both as a day off and as a
            working day. The message names the file and the event.

    .. versionadded:: 0.2.0
    """
    import icalendar

    if isinstance(source, bytes):
        name, data = "<bytes>", source
    else:
        name = os.fspath(source)
        try:
            with open(source, "rb") as handle:
                data = handle.read(MAX_ICS_BYTES + 1)
        except FileNotFoundError:
            raise ConfigurationError(f"{name}: no such calendar file") from None
        except IsADirectoryError:
            raise ConfigurationError(f"{name}: is a folder, not an iCalendar file") from None
        except OSError as exc:
            raise ConfigurationError(f"{name}: cannot be read ({exc.strerror})") from None
    if len(data) > MAX_ICS_BYTES:
        raise ConfigurationError(f"{name}: larger than {MAX_ICS_BYTES} bytes, so not a holiday calendar")
    try:
        calendar = icalendar.Calendar.from_ical(data)
    except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
        raise ConfigurationError(f"{name}: not an iCalendar file ({str(exc)[:120]})") from None
    if getattr(calendar, "name", None) != "VCALENDAR":
        raise ConfigurationError(f"{name}: not an iCalendar file (it must begin with BEGIN:VCALENDAR)")
    days_off: set[date] = set()
    working: set[date] = set()
    skipped = 0
    events = calendar.walk("VEVENT")
    if len(events) > _MAX_EVENTS:
        raise ConfigurationError(f"{name}: more than {_MAX_EVENTS} events, so not a holiday calendar")
    for event in events:
        summary = _ics_text(event.get("SUMMARY"))
        marks = f"{summary} {_ics_text(event.get('CATEGORIES'))}"
        target = working if _WORKING.search(marks) else days_off if _OFF.search(marks) else None
        if target is None:
            skipped += 1
            continue
        broken = [problem for prop, problem in getattr(event, "errors", ()) if prop in ("DTSTART", "DTEND")]
        if broken:
            raise ConfigurationError(f"{name}: the event {summary!r:.60} has a bad date ({broken[0][:80]})")
        if "RRULE" in event or "RDATE" in event:
            raise ConfigurationError(
                f"{name}: the event {summary!r:.60} recurs (RRULE/RDATE); list each year's days as their own events"
            )
        first = _ics_day(event, "DTSTART", name, summary)
        if first is None:
            raise ConfigurationError(f"{name}: the event {summary!r:.60} has no DTSTART")
        end = _ics_day(event, "DTEND", name, summary)
        if end is None and "DURATION" in event:
            duration = event.decoded("DURATION")
            if not isinstance(duration, timedelta):
                raise ConfigurationError(f"{name}: the event {summary!r:.60} has a bad DURATION")
            end = first + timedelta(days=max(duration.days, 1))
        end = end if end is not None else first + timedelta(days=1)
        span = (end - first).days
        if first.year not in _YEARS or span < 1 or span > _MAX_EVENT_DAYS:
            raise ConfigurationError(
                f"{name}: the event {summary!r:.60} runs from {first.isoformat()} to {end.isoformat()} "
                f"(exclusive); it must be 1 to {_MAX_EVENT_DAYS} days in 2000-2199"
            )
        target.update(first + timedelta(days=offset) for offset in range(span))
    both = days_off & working
    if both:
        raise ConfigurationError(f"{name}: {min(both).isoformat()} is listed both as a day off and as a working day")
    per_year: dict[int, int] = {}
    for day in days_off:
        per_year[day.year] = per_year.get(day.year, 0) + 1
    years = frozenset(year for year, count in per_year.items() if count >= _COVERED_MIN_DAYS_OFF)
    return HolidaySchedule(frozenset(days_off), frozenset(working), years, name, skipped)


def _holiday_ics(days_off: Iterable[date], working_days: Iterable[date], *, name: str, description: str = "") -> bytes:
    """An iCalendar file in :func:`read_holiday_ics`'s convention: one all-day event per run of days."""
    import icalendar

    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//aiobligations//holiday calendar//EN")
    calendar.add("version", "2.0")
    calendar.add("x-wr-calname", name)
    if description:
        calendar.add("x-wr-caldesc", description)
    stamp = datetime(2000, 1, 1, tzinfo=UTC)
    for label, kind, days in (("休 day off", "off", sorted(days_off)), ("班 working day", "work", sorted(working_days))):
        runs: list[list[date]] = []
        for day in days:
            if runs and runs[-1][-1] + timedelta(days=1) == day:
                runs[-1].append(day)
            else:
                runs.append([day])
        for run in runs:
            event = icalendar.Event()
            event.add("uid", f"{run[0].isoformat()}-{kind}@aiobligations")
            event.add("dtstamp", stamp)
            event.add("summary", label)
            event.add("dtstart", run[0])
            event.add("dtend", run[-1] + timedelta(days=1))
            event.add("transp", "TRANSPARENT")
            calendar.add_component(event)
    return bytes(calendar.to_ical())


class ChinaCalendar:
    """
    Mainland China's working days: statutory holidays and adjusted working weekends (调休).

    The days come from the State Council General Office's annual notices on holiday arrangements,
    encoded in :data:`CHINA_HOLIDAY_NOTICES`, and from holiday iCalendar files for later years
    (``schedules``, see :func:`read_holiday_ics` and :meth:`from_ics`). For a year that neither
    covers (see :meth:`covers`), Monday to Friday are working days, and a
    ``calendar_year_not_covered`` warning is logged once per year per calendar; load the year's
    file, update the package, or pass the days yourself.

    Args:
        extra_holidays: Further days off (a company holiday, or next year's holidays before the
            package knows them). They win over the notices and the files.
        extra_working_days: Further working days. They win over the notices, the files and
            ``extra_holidays``.
        schedules: Days read from holiday iCalendar files. A year a file covers replaces the
            built-in notice of that year; a day a file lists outside the years it covers (a break
            spilling over from the next year's notice) wins over the built-in notice for that day.

    Raises:
        TypeError: If an extra day is not a :class:`datetime.date`.
        ValueError: If a day is both an extra holiday and an extra working day.
        ConfigurationError: If two schedules disagree on a day.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``schedules`` (holiday iCalendar files).
    """

    def __init__(self, *, extra_holidays: Iterable[date] = (), extra_working_days: Iterable[date] = (),
                 schedules: Iterable[HolidaySchedule] = ()) -> None:
        self._extra_holidays = frozenset(_check_date("extra_holidays item", day) for day in extra_holidays)
        self._extra_working_days = frozenset(_check_date("extra_working_days item", day) for day in extra_working_days)
        both = self._extra_holidays & self._extra_working_days
        if both:
            raise ConfigurationError(
                f"{min(both).isoformat()} is in both extra_holidays and extra_working_days; keep it in one."
            )
        self.schedules = tuple(schedules)
        """The holiday files loaded, in order."""
        days_off: set[date] = set()
        working: set[date] = set()
        for schedule in self.schedules:
            days_off |= schedule.days_off
            working |= schedule.working_days
        clash = days_off & working
        if clash:
            raise ConfigurationError(
                f"the holiday files disagree on {min(clash).isoformat()} (a day off in one, a working day in another)"
            )
        self._file_days_off = frozenset(days_off)
        self._file_working_days = frozenset(working)
        self._file_years = frozenset().union(*(schedule.years for schedule in self.schedules))
        self._warned: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_ics(cls, *sources: str | os.PathLike[str] | bytes, extra_holidays: Iterable[date] = (),
                 extra_working_days: Iterable[date] = ()) -> ChinaCalendar:
        """
        Build the calendar with the days of holiday iCalendar files (see :func:`read_holiday_ics`).

        Example:
            >>> calendar = ChinaCalendar.from_ics("calendars/china-2027.ics")  # doctest: +SKIP
            >>> calendar.covers(2027)  # doctest: +SKIP
            True

        Args:
            *sources: The files' paths, or their bytes.
            extra_holidays: As for the constructor.
            extra_working_days: As for the constructor.

        Returns:
            The calendar.

        Raises:
            ConfigurationError: A file is unusable; the message names it and why.

        .. versionadded:: 0.2.0
        """
        schedules = [read_holiday_ics(source) for source in sources]
        return cls(extra_holidays=extra_holidays, extra_working_days=extra_working_days, schedules=schedules)

    def covers(self, year: int) -> bool:
        """
        Tell whether ``year``'s holidays are known, from a built-in notice or a loaded file.

        Args:
            year: A calendar year.

        Returns:
            ``True`` if the year's holidays and adjusted working days are known.

        .. versionchanged:: 0.2.0 Years covered by loaded holiday files count.
        """
        return year in _CHINA_DATA or year in self._file_years

    @property
    def covered_years(self) -> list[int]:
        """Every year known, built in or from a file, in order.

        .. versionadded:: 0.2.0
        """
        return sorted(set(_CHINA_DATA) | self._file_years)

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
        if day in self._file_working_days:
            return True
        if day in self._file_days_off:
            return False
        if day.year in self._file_years:
            return day.weekday() < 5
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
            covered_years=self.covered_years,
            fallback="monday_to_friday",
            fix="load the year's holiday iCalendar file ([requests] calendar) or upgrade aiobligations",
        )

    def __repr__(self) -> str:
        files = f", files={len(self.schedules)}" if self.schedules else ""
        return (
            f"ChinaCalendar(extra_holidays={len(self._extra_holidays)} days, "
            f"extra_working_days={len(self._extra_working_days)} days{files})"
        )


def calendar_from_profile(profile: Profile) -> ChinaCalendar:
    """
    Mainland China's calendar with the holiday files the profile names.

    ``[requests] calendar`` is a path, or a list of paths, to holiday iCalendar files (see
    :func:`read_holiday_ics`), relative to the profile's folder.

    Args:
        profile: The provider's profile.

    Returns:
        The calendar (the built-in notices only when no file is named).

    Raises:
        ConfigurationError: The setting is not a path or a list of paths, or a file is unusable.

    .. versionadded:: 0.2.0
    """
    section = profile.raw.get("requests", {})
    value = section.get("calendar") if isinstance(section, Mapping) else None
    if value is None:
        return ChinaCalendar()
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(item, str) and item for item in paths):
        raise ConfigurationError(
            f"[requests] calendar must be a path or a list of paths to iCalendar files, got {value!r:.80}"
        )
    base = profile.path.resolve().parent if profile.path is not None else Path.cwd()
    schedules = []
    for item in paths:
        path = Path(os.path.expanduser(item))
        try:
            schedules.append(read_holiday_ics(path if path.is_absolute() else base / path))
        except ConfigurationError as exc:
            raise ConfigurationError(f"[requests] calendar: {exc}") from None
    try:
        return ChinaCalendar(schedules=schedules)
    except ConfigurationError as exc:
        raise ConfigurationError(f"[requests] calendar: {exc}") from None


_NEXT_YEAR_WARNED: set[int] = set()
_NEXT_YEAR_LOCK = threading.Lock()


def warn_if_next_year_uncovered(calendar: ChinaCalendar, *, today: date | None = None) -> bool:
    """
    From 1 December, warn once per process when next year's holidays are not known.

    The warning is the structlog event ``calendar.next_year_uncovered`` (logged once per year
    per process, whichever calendar asks): from 1 January, deadlines would fall back to Monday to
    Friday. The service checks at start-up.

    Args:
        calendar: The calendar in use.
        today: The day to judge at, in Beijing time (default: today in Beijing).

    Returns:
        ``True`` when it is December and next year is not covered (whether or not this call
        logged the warning).

    .. versionadded:: 0.2.0
    """
    today = today if today is not None else datetime.now(DEFAULT_TIMEZONE).date()
    year = today.year + 1
    if today.month != 12 or calendar.covers(year):
        return False
    with _NEXT_YEAR_LOCK:
        if year in _NEXT_YEAR_WARNED:
            return True
        _NEXT_YEAR_WARNED.add(year)
    log.warning(
        "calendar.next_year_uncovered",
        year=year,
        covered_years=calendar.covered_years,
        fallback="monday_to_friday from 1 January",
        fix=f"add the {year} holiday iCalendar file to [requests] calendar once the State Council's notice is out",
    )
    return True


def _local_date(name: str, moment: datetime, tz: tzinfo) -> date:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {moment!r}.")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigurationError(
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
    raise ConfigurationError(
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
        raise ConfigurationError(f"days must be 0 or more, got {days!r}.")
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
