"""Working-day calendars and deadline arithmetic (aiobligations.requests.calendar)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from aiobligations.requests import (
    CHINA_HOLIDAY_NOTICES,
    DEFAULT_DEADLINE_DAYS,
    ChinaCalendar,
    WeekdayCalendar,
    WorkingCalendar,
    add_working_days,
    is_overdue,
    working_days_between,
)

BEIJING = ZoneInfo("Asia/Shanghai")


def end_of(day: date) -> datetime:
    """The last microsecond of ``day`` in Beijing, in UTC."""
    return datetime.combine(day, time.max, tzinfo=BEIJING).astimezone(UTC)


class TestChinaCalendar:
    @pytest.mark.parametrize(
        "day",
        [
            date(2024, 1, 1),  # 元旦, a Monday.
            date(2024, 2, 12),  # 春节, a Monday.
            date(2024, 10, 7),  # 国庆节, a Monday.
            date(2025, 1, 1),  # 元旦, a Wednesday, no adjustment.
            date(2025, 1, 28),  # 除夕: a statutory holiday from 2025.
            date(2025, 5, 5),  # 劳动节, a Monday.
            date(2025, 6, 2),  # 端午节, a Monday.
            date(2025, 10, 8),  # 国庆节、中秋节, a Wednesday.
            date(2026, 1, 2),  # 元旦, a Friday.
            date(2026, 2, 23),  # 春节, the Monday after the break's second weekend.
            date(2026, 5, 5),  # 劳动节, a Tuesday.
            date(2026, 10, 7),  # 国庆节, a Wednesday.
        ],
    )
    def test_holidays_are_not_working_days(self, day: date) -> None:
        """
        Weekdays inside an announced break are days off.
        """
        assert day.weekday() < 5
        assert False is ChinaCalendar().is_working_day(day)

    @pytest.mark.parametrize(
        "day",
        [
            date(2024, 2, 4),  # Sunday.
            date(2024, 5, 11),  # Saturday.
            date(2025, 1, 26),  # Sunday.
            date(2025, 10, 11),  # Saturday.
            date(2026, 1, 4),  # Sunday.
            date(2026, 2, 28),  # Saturday.
            date(2026, 9, 20),  # Sunday.
        ],
    )
    def test_makeup_weekend_days_are_working_days(self, day: date) -> None:
        """
        The weekend days a notice names as working days (调休上班) are working days.
        """
        assert day.weekday() >= 5
        assert True is ChinaCalendar().is_working_day(day)

    def test_spring_festival_2026_spans_nine_days(self) -> None:
        """
        The 2026 Spring Festival break runs from 2月15日 to 2月23日, between two makeup Saturdays.
        """
        calendar = ChinaCalendar()
        days = [date(2026, 2, 13) + timedelta(days=offset) for offset in range(12)]

        working = [calendar.is_working_day(day) for day in days]

        # Fri 13, Sat 14 (makeup), Sun 15 … Mon 23 off, Tue 24.
        assert [True, True] + [False] * 9 + [True] == working

    def test_new_year_eve_2024_is_a_working_day(self) -> None:
        """
        In 2024 the notice only encouraged a day off on 除夕 (2月9日); it is a working day.
        """
        assert True is ChinaCalendar().is_working_day(date(2024, 2, 9))

    def test_ordinary_days(self) -> None:
        """
        Outside the notices, Monday to Friday work and weekends do not.
        """
        calendar = ChinaCalendar()

        assert True is calendar.is_working_day(date(2025, 3, 12))  # Wednesday.
        assert False is calendar.is_working_day(date(2025, 3, 15))  # Saturday.
        assert False is calendar.is_working_day(date(2025, 3, 16))  # Sunday.

    @pytest.mark.parametrize("year", sorted(CHINA_HOLIDAY_NOTICES))
    def test_notice_data_is_consistent(self, year: int) -> None:
        """
        Each year's days fall in that year, makeup days are weekends, and weekday days off minus
        makeup days equal the statutory holiday days (11 before 2025, 13 from 2025).
        """
        days_off, working_days = CHINA_HOLIDAY_NOTICES[year]

        assert {year} == {day.year for day in days_off | working_days}
        assert set() == days_off & working_days
        assert all(day.weekday() >= 5 for day in working_days)
        weekday_days_off = sum(1 for day in days_off if day.weekday() < 5)
        assert (11 if year < 2025 else 13) == weekday_days_off - len(working_days)

    def test_covers(self) -> None:
        """
        covers() reports the years with an encoded notice.
        """
        calendar = ChinaCalendar()

        assert calendar.covers(2024)
        assert calendar.covers(2025)
        assert calendar.covers(2026)
        assert not calendar.covers(2023)
        assert not calendar.covers(2099)

    def test_uncovered_year_falls_back_to_weekdays_and_warns_once(self) -> None:
        """
        A year without a notice uses Monday to Friday and logs one warning for that year.
        """
        calendar = ChinaCalendar()

        with capture_logs() as logs:
            assert True is calendar.is_working_day(date(2099, 1, 1))  # Thursday.
            assert False is calendar.is_working_day(date(2099, 1, 3))  # Saturday.
            assert True is calendar.is_working_day(date(2099, 1, 5))  # Monday.
            assert True is calendar.is_working_day(date(2098, 1, 1))  # Wednesday.

        warnings = [entry for entry in logs if "calendar_year_not_covered" == entry["event"]]
        assert [2099, 2098] == [entry["year"] for entry in warnings]
        assert {"warning"} == {entry["log_level"] for entry in warnings}

    def test_covered_year_does_not_warn(self) -> None:
        """
        Covered years log nothing.
        """
        with capture_logs() as logs:
            ChinaCalendar().is_working_day(date(2025, 7, 1))

        assert [] == logs

    def test_extra_days_override_the_notices(self) -> None:
        """
        Extra holidays and extra working days win over the notices and the weekday rule.
        """
        calendar = ChinaCalendar(
            extra_holidays=[date(2025, 3, 12), date(2099, 1, 1)],
            extra_working_days=[date(2025, 10, 8), date(2025, 3, 15)],
        )

        assert False is calendar.is_working_day(date(2025, 3, 12))
        assert False is calendar.is_working_day(date(2099, 1, 1))
        assert True is calendar.is_working_day(date(2025, 10, 8))
        assert True is calendar.is_working_day(date(2025, 3, 15))

    def test_day_in_both_extras_is_rejected(self) -> None:
        """
        A day cannot be both an extra holiday and an extra working day; the error names it.
        """
        with pytest.raises(ValueError, match="2025-03-12"):
            ChinaCalendar(extra_holidays=[date(2025, 3, 12)], extra_working_days=[date(2025, 3, 12)])

    def test_datetimes_are_rejected(self) -> None:
        """
        A datetime never equals a date, so it is refused instead of silently missing.
        """
        with pytest.raises(TypeError, match="datetime.date"):
            ChinaCalendar(extra_holidays=[datetime(2025, 3, 12)])
        with pytest.raises(TypeError, match="date"):
            ChinaCalendar().is_working_day(datetime(2025, 3, 12))  # type: ignore[arg-type]

    def test_satisfies_the_protocol(self) -> None:
        """
        Both shipped calendars are WorkingCalendars.
        """
        assert isinstance(ChinaCalendar(), WorkingCalendar)
        assert isinstance(WeekdayCalendar(), WorkingCalendar)


class TestWeekdayCalendar:
    def test_monday_to_friday(self) -> None:
        """
        Monday to Friday are working days, weekends are not, holidays do not exist.
        """
        calendar = WeekdayCalendar()
        week = [date(2025, 9, 29) + timedelta(days=offset) for offset in range(7)]  # Mon 29 Sep.

        assert [True] * 5 + [False] * 2 == [calendar.is_working_day(day) for day in week]
        assert True is calendar.is_working_day(date(2025, 10, 1))  # National Day is not special.

    def test_weekend_deadline(self) -> None:
        """
        A request on Friday with 1 working day is due Monday; one on Saturday likewise.
        """
        calendar = WeekdayCalendar()
        friday = datetime(2025, 3, 14, 10, tzinfo=BEIJING)
        saturday = datetime(2025, 3, 15, 10, tzinfo=BEIJING)

        assert end_of(date(2025, 3, 17)) == add_working_days(friday, 1, calendar)
        assert end_of(date(2025, 3, 17)) == add_working_days(saturday, 1, calendar)
        assert end_of(date(2025, 3, 21)) == add_working_days(friday, 5, calendar)


class TestAddWorkingDays:
    def test_fifteen_days_over_national_day_2025(self) -> None:
        """
        15 working days from 30 Sep 2025 skip 1–8 Oct and count Saturday 11 Oct: due 28 Oct.
        """
        received = datetime(2025, 9, 30, 10, tzinfo=BEIJING)

        deadline = add_working_days(received, DEFAULT_DEADLINE_DAYS, ChinaCalendar())

        assert end_of(date(2025, 10, 28)) == deadline
        assert datetime(2025, 10, 28, 15, 59, 59, 999999, tzinfo=UTC) == deadline

    def test_fifteen_days_over_spring_festival_2026(self) -> None:
        """
        From Friday 13 Feb 2026: Sat 14 counts, 15–23 Feb do not, Sat 28 Feb counts: due 12 Mar.
        """
        received = datetime(2026, 2, 13, 9, tzinfo=BEIJING)

        assert end_of(date(2026, 3, 12)) == add_working_days(received, 15, ChinaCalendar())

    def test_request_during_a_holiday_counts_from_the_first_working_day(self) -> None:
        """
        A request on 1 Oct 2024 with 1 working day is due at the end of 8 Oct.
        """
        received = datetime(2024, 10, 1, 12, tzinfo=BEIJING)

        assert end_of(date(2024, 10, 8)) == add_working_days(received, 1, ChinaCalendar())

    def test_zero_days(self) -> None:
        """
        0 days is the end of the day of receipt if it is a working day, else of the next one.
        """
        calendar = ChinaCalendar()

        assert end_of(date(2025, 9, 30)) == add_working_days(datetime(2025, 9, 30, 8, tzinfo=BEIJING), 0, calendar)
        assert end_of(date(2025, 10, 9)) == add_working_days(datetime(2025, 10, 3, 8, tzinfo=BEIJING), 0, calendar)

    def test_day_of_receipt_is_read_in_beijing(self) -> None:
        """
        00:30 on 9 Oct 2025 in Beijing is still 8 Oct (a holiday) in UTC; the Beijing day counts.
        """
        calendar = ChinaCalendar()
        received = datetime(2025, 10, 8, 16, 30, tzinfo=UTC)  # 2025-10-09 00:30 Beijing.

        # Received on Thursday 9 Oct, so counting starts on Friday 10 Oct.
        assert end_of(date(2025, 10, 10)) == add_working_days(received, 1, calendar)
        assert end_of(date(2025, 10, 9)) == add_working_days(received, 0, calendar)

    def test_late_evening_in_beijing(self) -> None:
        """
        23:30 on Friday 7 Mar 2025 in Beijing is Friday there, whatever the caller's zone.
        """
        calendar = ChinaCalendar()
        in_beijing = datetime(2025, 3, 7, 23, 30, tzinfo=BEIJING)
        in_new_york = in_beijing.astimezone(ZoneInfo("America/New_York"))  # Friday 10:30.
        late_utc = datetime(2025, 3, 7, 23, 30, tzinfo=UTC)  # Saturday 07:30 in Beijing.

        assert end_of(date(2025, 3, 10)) == add_working_days(in_beijing, 1, calendar)
        assert end_of(date(2025, 3, 10)) == add_working_days(in_new_york, 1, calendar)
        assert end_of(date(2025, 3, 10)) == add_working_days(late_utc, 1, calendar)
        assert end_of(date(2025, 3, 7)) == add_working_days(in_beijing, 0, calendar)
        assert end_of(date(2025, 3, 10)) == add_working_days(late_utc, 0, calendar)

    def test_other_time_zone(self) -> None:
        """
        With tz given, days begin and end there.
        """
        paris = ZoneInfo("Europe/Paris")
        received = datetime(2025, 3, 7, 23, 30, tzinfo=UTC)  # Saturday 00:30 in Paris.

        deadline = add_working_days(received, 1, WeekdayCalendar(), tz=paris)

        assert datetime(2025, 3, 10, 23, 59, 59, 999999, tzinfo=paris) == deadline
        assert UTC == deadline.tzinfo

    def test_spans_into_an_uncovered_year(self) -> None:
        """
        A deadline that runs past the last notice falls back to weekdays and warns.
        """
        last = max(CHINA_HOLIDAY_NOTICES)
        received = datetime(last, 12, 31, 10, tzinfo=BEIJING)

        with capture_logs() as logs:
            add_working_days(received, 15, ChinaCalendar())

        assert [last + 1] == [entry["year"] for entry in logs if "calendar_year_not_covered" == entry["event"]]

    @pytest.mark.parametrize("days", [-1, -15])
    def test_negative_days_rejected(self, days: int) -> None:
        """
        Negative days raise a ValueError that names the value.
        """
        with pytest.raises(ValueError, match=f"got {days}"):
            add_working_days(datetime(2025, 3, 7, tzinfo=BEIJING), days, ChinaCalendar())

    def test_non_int_days_rejected(self) -> None:
        """
        days must be an int, not a float or a bool.
        """
        with pytest.raises(TypeError, match="days must be an int"):
            add_working_days(datetime(2025, 3, 7, tzinfo=BEIJING), 1.5, ChinaCalendar())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="days must be an int"):
            add_working_days(datetime(2025, 3, 7, tzinfo=BEIJING), True, ChinaCalendar())

    def test_naive_start_rejected(self) -> None:
        """
        A naive datetime has no day of receipt; the error says how to fix it.
        """
        with pytest.raises(ValueError, match="timezone-aware"):
            add_working_days(datetime(2025, 3, 7, 10), 1, ChinaCalendar())
        with pytest.raises(TypeError, match="start must be a datetime"):
            add_working_days(date(2025, 3, 7), 1, ChinaCalendar())  # type: ignore[arg-type]

    def test_calendar_without_working_days(self) -> None:
        """
        A calendar with no working days raises instead of looping forever.
        """

        class Never:
            def is_working_day(self, day: date, /) -> bool:
                return False

        with pytest.raises(ValueError, match="no working day"):
            add_working_days(datetime(2025, 3, 7, tzinfo=BEIJING), 1, Never())


class TestWorkingDaysBetween:
    def test_counts_after_start_up_to_end(self) -> None:
        """
        Working days after the start's day up to and including the end's day.
        """
        calendar = ChinaCalendar()
        start = datetime(2025, 9, 30, 10, tzinfo=BEIJING)

        assert 0 == working_days_between(start, start + timedelta(hours=1), calendar)
        assert 0 == working_days_between(start, datetime(2025, 10, 8, 10, tzinfo=BEIJING), calendar)
        assert 1 == working_days_between(start, datetime(2025, 10, 9, 10, tzinfo=BEIJING), calendar)
        assert 3 == working_days_between(start, datetime(2025, 10, 12, 10, tzinfo=BEIJING), calendar)

    def test_reversed_is_negative(self) -> None:
        """
        An end before the start gives the negative count.
        """
        calendar = WeekdayCalendar()
        monday = datetime(2025, 3, 10, tzinfo=BEIJING)
        friday = datetime(2025, 3, 14, tzinfo=BEIJING)

        assert 4 == working_days_between(monday, friday, calendar)
        assert -4 == working_days_between(friday, monday, calendar)

    def test_naive_rejected(self) -> None:
        """
        Naive datetimes are refused, naming which argument.
        """
        with pytest.raises(ValueError, match="end must be timezone-aware"):
            working_days_between(datetime(2025, 3, 10, tzinfo=UTC), datetime(2025, 3, 11), WeekdayCalendar())


class TestIsOverdue:
    def test_overdue_only_after_the_deadline(self) -> None:
        """
        Not overdue at the deadline itself; overdue a microsecond later.
        """
        deadline = end_of(date(2025, 10, 28))

        assert not is_overdue(deadline, deadline - timedelta(days=1))
        assert not is_overdue(deadline, deadline)
        assert is_overdue(deadline, deadline + timedelta(microseconds=1))
        assert is_overdue(deadline, datetime(2025, 10, 29, 0, 0, tzinfo=BEIJING))

    def test_defaults_to_now(self) -> None:
        """
        Without now, the current time is used.
        """
        assert is_overdue(datetime(2000, 1, 1, tzinfo=UTC))
        assert not is_overdue(datetime.now(UTC) + timedelta(days=1))

    def test_naive_rejected(self) -> None:
        """
        A naive deadline or now is refused.
        """
        with pytest.raises(ValueError, match="deadline must be timezone-aware"):
            is_overdue(datetime(2025, 1, 1), datetime(2025, 1, 1, tzinfo=UTC))
        with pytest.raises(ValueError, match="now must be timezone-aware"):
            is_overdue(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1))


ZONES = st.sampled_from([UTC, BEIJING, ZoneInfo("America/Los_Angeles"), ZoneInfo("Pacific/Kiritimati")])
# Starts stay well inside the covered years so the properties test the notices, not the fallback.
STARTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 10, 31), timezones=ZONES)
CALENDARS = st.sampled_from([ChinaCalendar(), WeekdayCalendar()])


class TestProperties:
    @settings(max_examples=200)
    @given(start=STARTS, days=st.integers(min_value=0, max_value=30), calendar=CALENDARS)
    def test_deadline_is_monotonic_in_days(self, start: datetime, days: int, calendar: WorkingCalendar) -> None:
        """
        One more working day gives a later deadline; strictly later except from 0 to 1 on a day off.
        """
        earlier, later = add_working_days(start, days, calendar), add_working_days(start, days + 1, calendar)

        if 0 == days and not calendar.is_working_day(start.astimezone(BEIJING).date()):
            # Both mean "the end of the first working day after a day off", by definition.
            assert earlier == later
        else:
            assert earlier < later

    @settings(max_examples=200)
    @given(start=STARTS, days=st.integers(min_value=0, max_value=30), calendar=CALENDARS)
    def test_deadline_is_end_of_a_working_day(self, start: datetime, days: int, calendar: WorkingCalendar) -> None:
        """
        The deadline is UTC, and in Beijing it is the last microsecond of a working day after receipt.
        """
        deadline = add_working_days(start, days, calendar)
        local = deadline.astimezone(BEIJING)

        assert UTC == deadline.tzinfo
        assert time.max == local.time()
        assert calendar.is_working_day(local.date())
        assert local.date() >= start.astimezone(BEIJING).date()

    @settings(max_examples=200)
    @given(start=STARTS, days=st.integers(min_value=1, max_value=30), calendar=CALENDARS)
    def test_between_inverts_add(self, start: datetime, days: int, calendar: WorkingCalendar) -> None:
        """
        Counting the working days up to the deadline gives back the days added.
        """
        deadline = add_working_days(start, days, calendar)

        assert days == working_days_between(start, deadline, calendar)

    @settings(max_examples=100)
    @given(start=STARTS, calendar=CALENDARS)
    def test_zero_days_on_a_working_day_is_same_day(self, start: datetime, calendar: WorkingCalendar) -> None:
        """
        0 days: between gives 0 when received on a working day and 1 otherwise.
        """
        received_on = start.astimezone(BEIJING).date()

        deadline = add_working_days(start, 0, calendar)

        expected = 0 if calendar.is_working_day(received_on) else 1
        assert expected == working_days_between(start, deadline, calendar)


# -- holiday iCalendar files (issue 13, part 5) ---------------------------------------------------

from pathlib import Path  # noqa: E402

from aiobligations.errors import ConfigurationError  # noqa: E402
from aiobligations.requests import calendar as calendar_module  # noqa: E402
from aiobligations.requests.calendar import (  # noqa: E402
    MAX_ICS_BYTES,
    HolidaySchedule,
    calendar_from_profile,
    read_holiday_ics,
    warn_if_next_year_uncovered,
)

EXAMPLE_2026 = Path(__file__).resolve().parent.parent / "calendars" / "china-2026.ics"


def ics(*events: str) -> bytes:
    """A calendar of the given VEVENT bodies (each its lines without BEGIN/END)."""
    body = "".join(f"BEGIN:VEVENT\r\n{event.strip()}\r\nEND:VEVENT\r\n" for event in events)
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n{body}END:VCALENDAR\r\n".encode()


# A made-up year (2098) in the styles published feeds use: "休"/"班" in SUMMARY, "补班", "[放假]",
# CATEGORIES, English words. The dates are invented test data, not a notice.
FEED_2098 = ics(
    "SUMMARY:元旦 休\r\nDTSTART;VALUE=DATE:20980101\r\nDTEND;VALUE=DATE:20980104",
    "SUMMARY:春节 假期 第1天/共8天\r\nDTSTART;VALUE=DATE:20980201\r\nDTEND;VALUE=DATE:20980209",
    "SUMMARY:春节 补班\r\nDTSTART;VALUE=DATE:20980131",
    "SUMMARY:[放假]劳动节\r\nDTSTART;VALUE=DATE:20980501\r\nDURATION:P5D",
    "SUMMARY:劳动节调休\r\nCATEGORIES:上班\r\nDTSTART;VALUE=DATE:20980426\r\nDTEND;VALUE=DATE:20980427",
    "SUMMARY:National Day\r\nCATEGORIES:Holiday\r\nDTSTART;VALUE=DATE:20981001\r\nDTEND;VALUE=DATE:20981008",
    "SUMMARY:Make-up working day\r\nDTSTART;VALUE=DATE:20981010\r\nDTEND;VALUE=DATE:20981011",
    "SUMMARY:立春\r\nDTSTART;VALUE=DATE:20980204",
)


class TestHolidayFiles:
    def test_a_feed_in_the_published_styles_is_read(self) -> None:
        """
        休/假/holiday events are days off, 班/make-up events working days, others are skipped.
        """
        schedule = read_holiday_ics(FEED_2098)

        assert date(2098, 2, 8) in schedule.days_off
        assert date(2098, 5, 5) in schedule.days_off  # DURATION:P5D from 1 May.
        assert date(2098, 5, 6) not in schedule.days_off
        assert date(2098, 10, 7) in schedule.days_off
        assert {date(2098, 1, 31), date(2098, 4, 26), date(2098, 10, 10)} == schedule.working_days
        assert 3 + 8 + 5 + 7 == len(schedule.days_off)
        assert 1 == schedule.skipped  # 立春 is neither.
        assert frozenset({2098}) == schedule.years

    def test_the_holiday_cn_style_is_read(self) -> None:
        """
        A feed naming days off "春节假期" and working days "上班(补春节假期)" (both 假 and 班: 班 wins) is read.
        """
        schedule = read_holiday_ics(ics(
            "SUMMARY:春节假期\r\nDTSTART;VALUE=DATE:20980201\r\nDTEND;VALUE=DATE:20980209",
            "SUMMARY:上班(补春节假期)\r\nDTSTART;VALUE=DATE:20980131\r\nDTEND;VALUE=DATE:20980201",
        ))

        assert ({date(2098, 1, 31)}, 8) == (set(schedule.working_days), len(schedule.days_off))

    def test_a_loaded_year_is_covered_and_used(self) -> None:
        """
        A calendar with the file covers its year: its days off and working days count, without a warning.
        """
        calendar = ChinaCalendar.from_ics(FEED_2098)

        with capture_logs() as logs:
            assert calendar.covers(2098)
            assert False is calendar.is_working_day(date(2098, 2, 3))  # A Monday of the break.
            assert True is calendar.is_working_day(date(2098, 4, 26))  # A Sunday made a working day.
            assert True is calendar.is_working_day(date(2098, 3, 3))  # An ordinary Monday.
        assert [] == [entry for entry in logs if entry["event"] == "calendar_year_not_covered"]
        assert not ChinaCalendar().covers(2098)

    def test_the_2026_example_gives_the_built_in_working_days(self) -> None:
        """
        calendars/china-2026.ics round-trips: every day of 2026 is a working day exactly when the built-in notice says so.
        """
        schedule = read_holiday_ics(EXAMPLE_2026)
        from_file = ChinaCalendar(schedules=[schedule])
        built_in = ChinaCalendar()
        day = date(2026, 1, 1)

        assert frozenset({2026}) == schedule.years
        assert (schedule.days_off, schedule.working_days) == CHINA_HOLIDAY_NOTICES[2026]
        while day.year == 2026:
            assert built_in.is_working_day(day) == from_file.is_working_day(day), day
            day += timedelta(days=1)

    def test_a_spill_over_does_not_cover_its_year(self) -> None:
        """
        A few days off in a year (a break starting on 31 December) are used but do not cover that year.
        """
        schedule = read_holiday_ics(ics("SUMMARY:元旦 休\r\nDTSTART;VALUE=DATE:20971231\r\nDTEND;VALUE=DATE:20980102"))
        calendar = ChinaCalendar(schedules=[schedule])

        assert frozenset() == schedule.years
        assert not calendar.covers(2097)
        assert False is calendar.is_working_day(date(2097, 12, 31))  # A Tuesday, off.

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"hello", "not an iCalendar file"),
            (b"\x00\x01\x02\xff", "not an iCalendar file"),
            (b"BEGIN:VEVENT\r\nSUMMARY:\xe4\xbc\x91\r\nEND:VEVENT\r\n", "BEGIN:VCALENDAR"),
            (ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:2098XX01"), "bad date"),
            (ics("SUMMARY:休\r\nDTSTART:20980101T090000"), "time of day"),
            (ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:20980110\r\nDTEND;VALUE=DATE:20980105"), "must be 1 to 60 days"),
            (ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:20980101\r\nDTEND;VALUE=DATE:20990101"), "must be 1 to 60 days"),
            (ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:18980101"), "2000-2199"),
            (ics("SUMMARY:元旦 休\r\nDTSTART;VALUE=DATE:20980101\r\nRRULE:FREQ=YEARLY"), "recurs"),
            (ics("SUMMARY:休\r\nDTEND;VALUE=DATE:20980101"), "no DTSTART"),
            (ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:20980103", "SUMMARY:班\r\nDTSTART;VALUE=DATE:20980103"),
             "both as a day off and as a working day"),
        ],
    )
    def test_bad_files_are_refused_with_a_clear_message(self, data: bytes, message: str) -> None:
        """
        Files that are not iCalendar, or whose marked events are unusable, raise ConfigurationError naming why.
        """
        with pytest.raises(ConfigurationError, match=message):
            read_holiday_ics(data)

    def test_a_huge_file_is_refused_before_parsing(self, tmp_path: Path) -> None:
        """
        A file over MAX_ICS_BYTES is refused by its size; a missing file and a folder by name.
        """
        path = tmp_path / "huge.ics"
        path.write_bytes(b"BEGIN:VCALENDAR\r\n" + b"X-PAD:" + b"a" * MAX_ICS_BYTES + b"\r\nEND:VCALENDAR\r\n")

        with pytest.raises(ConfigurationError, match="larger than"):
            read_holiday_ics(path)
        with pytest.raises(ConfigurationError, match="no such calendar file"):
            read_holiday_ics(tmp_path / "missing.ics")
        with pytest.raises(ConfigurationError, match="is a folder"):
            read_holiday_ics(tmp_path)

    def test_deeply_nested_or_numerous_events_are_refused(self) -> None:
        """
        30,000 nested VEVENTs (under 1 MiB) are refused as too many events, not a crash.
        """
        data = (b"BEGIN:VCALENDAR\r\n" + b"BEGIN:VEVENT\r\n" * 30_000 + b"END:VEVENT\r\n" * 30_000
                + b"END:VCALENDAR\r\n")

        with pytest.raises(ConfigurationError, match="more than 10000 events"):
            read_holiday_ics(data)

    def test_files_that_disagree_are_refused(self) -> None:
        """
        Two files, one with a day off and the other with that day as a working day, cannot be combined.
        """
        first = read_holiday_ics(ics("SUMMARY:休\r\nDTSTART;VALUE=DATE:20980103"))
        second = read_holiday_ics(ics("SUMMARY:班\r\nDTSTART;VALUE=DATE:20980103"))

        with pytest.raises(ConfigurationError, match="disagree on 2098-01-03"):
            ChinaCalendar(schedules=[first, second])

    def test_a_schedule_is_a_value(self) -> None:
        """
        Reading the same bytes twice gives equal schedules.
        """
        assert read_holiday_ics(FEED_2098) == read_holiday_ics(FEED_2098)
        assert isinstance(read_holiday_ics(FEED_2098), HolidaySchedule)


class TestProfileCalendar:
    def profile(self, tmp_path: Path, setting: str) -> Any:
        from aiobligations.keys import init_project
        from aiobligations.profile import load_profile

        config = init_project(tmp_path / "site")
        text = config.read_text()
        config.write_text(text.replace("[requests]\n", f"[requests]\n{setting}\n", 1) if "[requests]\n" in text
                          else f"{text}\n[requests]\n{setting}\n")
        return load_profile(config)

    def test_a_path_relative_to_the_profile_is_loaded(self, tmp_path: Path) -> None:
        """
        [requests] calendar names a file relative to the profile's folder; its year is then covered.
        """
        (tmp_path / "site" / "holidays").mkdir(parents=True)
        (tmp_path / "site" / "holidays" / "2098.ics").write_bytes(FEED_2098)

        calendar = calendar_from_profile(self.profile(tmp_path, 'calendar = "holidays/2098.ics"'))

        assert calendar.covers(2098)
        assert False is calendar.is_working_day(date(2098, 2, 3))

    def test_a_list_of_files_is_loaded(self, tmp_path: Path) -> None:
        """
        A list of paths loads every file.
        """
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "a.ics").write_bytes(FEED_2098)
        (tmp_path / "site" / "b.ics").write_bytes(EXAMPLE_2026.read_bytes())

        calendar = calendar_from_profile(self.profile(tmp_path, 'calendar = ["a.ics", "b.ics"]'))

        assert [2098, 2026] == [schedule.years and min(schedule.years) for schedule in calendar.schedules]

    @pytest.mark.parametrize(
        ("setting", "message"),
        [
            ("calendar = 3", "must be a path or a list of paths"),
            ("calendar = []", "must be a path or a list of paths"),
            ('calendar = ["a.ics", 1]', "must be a path or a list of paths"),
            ('calendar = "missing.ics"', r"\[requests\] calendar: .*missing.ics: no such calendar file"),
            ('calendar = "aiobligations.toml"', r"\[requests\] calendar: .*not an iCalendar file"),
        ],
    )
    def test_a_bad_setting_is_a_configuration_error(self, tmp_path: Path, setting: str, message: str) -> None:
        """
        A setting of the wrong type, a missing file or a hostile file fails with a message naming the setting.
        """
        with pytest.raises(ConfigurationError, match=message):
            calendar_from_profile(self.profile(tmp_path, setting))

    def test_the_hub_refuses_to_start_on_a_bad_calendar(self, tmp_path: Path) -> None:
        """
        The hub loads the calendar at start-up, so a hostile file stops the service before it serves.
        """
        from aiobligations import Obligations

        profile = self.profile(tmp_path, 'calendar = "aiobligations.toml"')
        with pytest.raises(ConfigurationError, match="calendar"):
            Obligations(profile)


class TestNextYearWarning:
    @pytest.fixture(autouse=True)
    def _fresh(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(calendar_module, "_NEXT_YEAR_WARNED", set())

    def test_from_1_december_an_uncovered_next_year_warns_once(self) -> None:
        """
        On 1 December 2097 (a fake clock) 2098 is not covered: one warning, however often asked.
        """
        calendar = ChinaCalendar()

        with capture_logs() as logs:
            assert True is warn_if_next_year_uncovered(calendar, today=date(2097, 12, 1))
            assert True is warn_if_next_year_uncovered(ChinaCalendar(), today=date(2097, 12, 31))

        warnings = [entry for entry in logs if entry["event"] == "calendar.next_year_uncovered"]
        assert [2098] == [entry["year"] for entry in warnings]
        assert "warning" == warnings[0]["log_level"]

    def test_before_december_or_when_covered_nothing_is_said(self) -> None:
        """
        On 30 November, or in December with next year's file loaded, there is no warning.
        """
        with capture_logs() as logs:
            assert False is warn_if_next_year_uncovered(ChinaCalendar(), today=date(2097, 11, 30))
            assert False is warn_if_next_year_uncovered(ChinaCalendar.from_ics(FEED_2098), today=date(2097, 12, 1))
            assert False is warn_if_next_year_uncovered(ChinaCalendar(), today=date(2025, 12, 1))  # 2026 built in.

        assert [] == logs

    def test_the_service_warns_at_start_up_in_december(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """
        Building the middleware (the service's start-up) in December of an uncovered next year logs
        calendar.next_year_uncovered (the real clock, pinned); opening the hub alone, as CLI commands do, does not.
        """
        from starlette.applications import Starlette

        from aiobligations import Obligations
        from aiobligations.keys import init_project
        from aiobligations.middleware import ObligationsMiddleware

        class December2097(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> December2097:  # type: ignore[override]
                return cls(2097, 12, 2, 9, 0, tzinfo=tz)

        monkeypatch.setattr(calendar_module, "datetime", December2097)
        config = init_project(tmp_path / "site")
        config.write_text(config.read_text().replace('writer = "process"', 'writer = "thread"'))
        with capture_logs() as logs:
            hub = Obligations.from_file(config)
            quiet = [entry for entry in logs if entry["event"] == "calendar.next_year_uncovered"]
            try:
                ObligationsMiddleware(Starlette(), obligations=hub)
            finally:
                hub.close()

        assert [] == quiet
        assert [2098] == [entry["year"] for entry in logs if entry["event"] == "calendar.next_year_uncovered"]
