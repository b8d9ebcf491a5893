"""Users' requests: explanation requests and complaints (the desk), working-day calendars and deadlines."""

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
from .workflow import (
    COMPLAINT_CATEGORIES,
    Complaint,
    Explainer,
    Explanation,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    Request,
    RequestDesk,
    Step,
)

__all__ = [
    "CHINA_HOLIDAY_NOTICES",
    "COMPLAINT_CATEGORIES",
    "DEFAULT_DEADLINE_DAYS",
    "DEFAULT_TIMEZONE",
    "ChinaCalendar",
    "Complaint",
    "Explainer",
    "Explanation",
    "InvalidRequest",
    "InvalidTransition",
    "NotFound",
    "Request",
    "RequestDesk",
    "Step",
    "WeekdayCalendar",
    "WorkingCalendar",
    "add_working_days",
    "is_overdue",
    "working_days_between",
]
