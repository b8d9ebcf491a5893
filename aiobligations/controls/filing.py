"""Filing (备案, Art. 47): whether it is due, with which authority, by when, and what it needs.

Art. 47 asks a provider whose AI is not on the negative list to file, within 10 working days of the
day its registered users pass a threshold, with the national AI authority (more than 1,000,000
registered users) or the provincial one (more than 10,000 and fewer than 1,000,000). This module
reads the count the app passes in and the profile; it files nothing (the authority's own system
does). Once the authority gives a number, ``[service] filing_number`` (or ``[provider]``) puts it
in every disclosure and on the transparency page.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..requests.calendar import DEFAULT_TIMEZONE, WorkingCalendar, add_working_days, calendar_from_profile
from .errors import InvalidControl

if TYPE_CHECKING:
    from ..profile import Profile

__all__ = [
    "FILING_DAYS",
    "NATIONAL_THRESHOLD",
    "PROVINCIAL_THRESHOLD",
    "FilingField",
    "FilingStatus",
    "filing_status",
]

NATIONAL_THRESHOLD = 1_000_000
"""More than this many registered users: file with the national AI authority (Art. 47 para. 1)."""

PROVINCIAL_THRESHOLD = 10_000
"""More than this many (and fewer than 1,000,000): file with the provincial authority (Art. 47 para. 2)."""

FILING_DAYS = 10
"""Working days to file, from the day the threshold is passed; also to file a change (Art. 47)."""

_AUTHORITY = {
    "national": ("国家人工智能主管机关", "the national AI authority"),
    "provincial": ("省级人工智能主管机关", "the provincial AI authority"),
}


@dataclass(frozen=True)
class FilingField:
    """
    One piece of information a filing carries (Art. 47 para. 1 (一) to (三)), and where the profile keeps it.

    Attributes:
        name: A short id (``provider_name``, ``algorithm_type``…).
        item: The article's item, e.g. ``"47(1)(二)"``.
        label_zh: The article's words.
        label_en: The same in English.
        setting: The profile setting that holds it, e.g. ``"[filing] algorithm_type"``.
        value: The profile's value (``""`` when missing).

    .. versionadded:: 0.2.0
    """

    name: str
    item: str
    label_zh: str
    label_en: str
    setting: str
    value: str

    @property
    def present(self) -> bool:
        """Whether the profile has it."""
        return bool(self.value)


@dataclass(frozen=True)
class FilingStatus:
    """
    Where a provider stands under Art. 47 for a number of registered users.

    Attributes:
        registered_users: The count judged.
        due: Whether a filing is required at this count.
        authority: ``"national"``, ``"provincial"`` or ``None`` (none required).
        authority_zh: The authority's name in the article's words (``""`` when none).
        crossed_on: The day the threshold was passed (given, or today when not given).
        crossed_on_assumed: Whether ``crossed_on`` was not given and today was assumed.
        due_by: The last day to file (10 working days after ``crossed_on``), or ``None``.
        overdue: Whether ``due_by`` has passed and the profile has no filing number.
        filing_number: The profile's filing number (``""`` when none).
        licence_number: The profile's licence number (``""`` when none).
        fields: What the filing carries and whether the profile has each.
        notes: Sentences an operator should read (the edge cases the article leaves open).

    .. versionadded:: 0.2.0
    """

    registered_users: int
    due: bool
    authority: str | None
    authority_zh: str
    crossed_on: date | None
    crossed_on_assumed: bool
    due_by: date | None
    overdue: bool
    filing_number: str
    licence_number: str
    fields: tuple[FilingField, ...]
    notes: tuple[str, ...] = ()

    @property
    def missing(self) -> list[str]:
        """The profile settings the filing still needs."""
        return [field.setting for field in self.fields if not field.present]

    def as_dict(self) -> dict[str, Any]:
        """The status as JSON-ready data (dates as ``YYYY-MM-DD``)."""
        data = asdict(self)
        for key in ("crossed_on", "due_by"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        data["fields"] = [{**asdict(field), "present": field.present} for field in self.fields]
        data["missing"] = self.missing
        data["notes"] = list(self.notes)
        return data

    def summary(self) -> str:
        """A few lines for a person: what is due, with whom, by when, and what is missing."""
        lines = [f"Registered users: {self.registered_users:,}"]
        if not self.due:
            lines.append(f"Filing (Art. 47): not required at this count (more than {PROVINCIAL_THRESHOLD:,} "
                         "registered users calls for a provincial filing).")
        elif self.authority is not None and self.due_by is not None and self.crossed_on is not None:
            zh, en = _AUTHORITY[self.authority]
            crossed = f"{self.crossed_on.isoformat()}" + (" (assumed today; pass --crossed-on)"
                                                         if self.crossed_on_assumed else "")
            lines.append(f"Filing (Art. 47): required with {en} ({zh}).")
            lines.append(f"Threshold passed on: {crossed}")
            lines.append(f"File by: {self.due_by.isoformat()} (end of the {FILING_DAYS}th working day after)"
                         + ("  OVERDUE" if self.overdue else ""))
        lines.append(f"Filing number: {self.filing_number or '(none yet)'}")
        if self.licence_number:
            lines.append(f"Licence number: {self.licence_number}")
        lines.append("What the filing carries:")
        for field in self.fields:
            mark = "ok     " if field.present else "MISSING"
            lines.append(f"  {mark} {field.item} {field.label_en} ({field.label_zh}): {field.setting}")
        lines.extend(f"Note: {note}" for note in self.notes)
        return "\n".join(lines)


def _filing_table(profile: Profile) -> Mapping[str, Any]:
    section = profile.raw.get("filing", {})
    return section if isinstance(section, Mapping) else {}


def _fields(profile: Profile) -> tuple[FilingField, ...]:
    """Art. 47 para. 1 (一) to (三), with the profile's values."""
    filing = _filing_table(profile)

    def text(key: str) -> str:
        value = filing.get(key, "")
        return value.strip() if isinstance(value, str) else ""

    report = text("self_assessment_report")
    if report and profile.path is not None:
        path = Path(os.path.expanduser(report))
        path = path if path.is_absolute() else profile.path.resolve().parent / path
        report = str(path) if path.is_file() else ""  # Named but absent: still missing.
    provider, service = profile.provider, profile.service
    return (
        FilingField("provider_name", "47(1)(一)", "人工智能提供者的姓名或名称", "the provider's name",
                    "[provider] name_zh", provider.name_zh or provider.name),
        FilingField("provider_contact", "47(1)(一)", "联系方式", "contact details", "[provider] contact",
                    provider.contact),
        FilingField("service_name", "47(1)(二)", "产品、服务的商标或名称", "the product's or service's trademark or name",
                    "[service] name", service.name),
        FilingField("form", "47(1)(二)", "提供形式", "how it is provided (website, app, API…)", "[filing] form",
                    text("form")),
        FilingField("domain", "47(1)(二)", "应用领域", "field of application", "[filing] domain", text("domain")),
        FilingField("algorithm_type", "47(1)(二)", "算法类型", "type of algorithm", "[filing] algorithm_type",
                    text("algorithm_type")),
        FilingField("self_assessment_report", "47(1)(二)", "安全自评估报告", "security self-assessment report (a file)",
                    "[filing] self_assessment_report", report),
        FilingField("public_content", "47(1)(三)", "备案拟公示内容", "what the filing is to make public",
                    "[filing] public_content", text("public_content")),
    )


def filing_status(profile: Profile, registered_users: int, *, crossed_on: date | None = None,
                  today: date | None = None, calendar: WorkingCalendar | None = None) -> FilingStatus:
    """
    Tell whether Art. 47 asks for a filing at ``registered_users``, with whom and by when.

    More than 1,000,000 registered users: the national authority; more than 10,000 and fewer
    than 1,000,000: the provincial one; within 10 working days of the day the threshold was
    passed (``crossed_on``; today when not given, which the result says). Exactly 1,000,000 is in
    neither of the article's ranges ("超过100万" / "不足100万"); it is treated as provincial, and a
    note says so.

    Example:
        >>> status = filing_status(profile, 12_000, crossed_on=date(2026, 9, 1))  # doctest: +SKIP
        >>> status.authority, status.due_by  # doctest: +SKIP
        ('provincial', datetime.date(2026, 9, 15))

    Args:
        profile: The provider's profile (its numbers and its ``[filing]`` table).
        registered_users: The number of registered users now.
        crossed_on: The day the count passed the threshold (in Beijing time).
        today: The day to judge at (default: today in Beijing).
        calendar: Which days are working days (default: the profile's, see
            :func:`~aiobligations.requests.calendar.calendar_from_profile`).

    Returns:
        The status.

    Raises:
        InvalidControl: ``registered_users`` is not a whole number of 0 or more, or a day is not a date.
        ConfigurationError: The profile's ``[requests] calendar`` is unusable.

    .. versionadded:: 0.2.0
    """
    if isinstance(registered_users, bool) or not isinstance(registered_users, int) or registered_users < 0:
        raise InvalidControl(f"registered_users must be a whole number of 0 or more, got {registered_users!r:.40}")
    for name, value in (("crossed_on", crossed_on), ("today", today)):
        if value is not None and (isinstance(value, datetime) or not isinstance(value, date)):
            raise InvalidControl(f"{name} must be a date (YYYY-MM-DD), got {value!r:.40}")
    today = today if today is not None else datetime.now(DEFAULT_TIMEZONE).date()
    calendar = calendar if calendar is not None else calendar_from_profile(profile)
    notes: list[str] = []
    if registered_users > NATIONAL_THRESHOLD:
        authority: str | None = "national"
    elif registered_users > PROVINCIAL_THRESHOLD:
        authority = "provincial"
        if registered_users == NATIONAL_THRESHOLD:
            notes.append("Exactly 1,000,000 is in neither of Art. 47's ranges (more than 1,000,000: national; "
                         "more than 10,000 and fewer than 1,000,000: provincial); treated as provincial.")
    else:
        authority = None
    service = profile.service
    due_by = None
    assumed = False
    if authority is not None:
        if crossed_on is None:
            crossed_on, assumed = today, True
        start = datetime.combine(crossed_on, time(12), tzinfo=DEFAULT_TIMEZONE)
        due_by = add_working_days(start, FILING_DAYS, calendar).astimezone(DEFAULT_TIMEZONE).date()
        covers = getattr(calendar, "covers", None)
        if covers is not None and not all(covers(year) for year in range(crossed_on.year, due_by.year + 1)):
            notes.append(f"The calendar does not cover every year up to {due_by.isoformat()}: Monday to Friday "
                         "stood in for the holidays; load the year's holiday file ([requests] calendar).")
        if service.filing_number:
            notes.append(f"A filing number is set. A change to the filed information is filed within {FILING_DAYS} "
                         "working days of the change (Art. 47); a provincial filing does not cover passing "
                         "1,000,000 users, which calls for the national authority.")
    else:
        crossed_on = None
    if service.licence_number and not service.filing_number:
        notes.append("A licence number is set: AI on the negative list is licensed (Art. 31), and Art. 47's "
                     "filing applies to AI outside it.")
    return FilingStatus(
        registered_users=registered_users,
        due=authority is not None,
        authority=authority,
        authority_zh=_AUTHORITY[authority][0] if authority is not None else "",
        crossed_on=crossed_on,
        crossed_on_assumed=assumed,
        due_by=due_by,
        overdue=due_by is not None and today > due_by and not service.filing_number,
        filing_number=service.filing_number,
        licence_number=service.licence_number,
        fields=_fields(profile),
        notes=tuple(notes),
    )
