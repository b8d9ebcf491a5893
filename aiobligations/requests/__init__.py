"""Users' requests: working-day calendars and the deadlines they set."""

from .calendar import (
    CHINA_HOLIDAY_NOTICES,
    DEFAULT_DEADLINE_DAYS,
    DEFAULT_TIMEZONE,
    ChinaCalendar,
    WeekdayCalendar,
    WorkingCalendar,
    add_working_days,
    is_overdue,
    working_days_between,
)

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
