"""Retention: how long each class of record must be kept before it may be pruned.

The floors come from the law:

- ``interaction``, ``log`` and every other kind: 6 months (Cybersecurity Law Art. 21: network logs
  kept no less than six months; AI Model Law Art. 49(2));
- ``risk``: 2 years (Art. 41);
- ``assessment``: 5 years (Art. 34).

A provider can lengthen any period in ``aiobligations.toml``, never shorten it below its floor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["FLOORS", "Retention", "parse_duration"]

DAY = 86_400.0

FLOORS: Mapping[str, float] = {
    "default": 183 * DAY,
    "interaction": 183 * DAY,
    "log": 183 * DAY,
    "risk": 2 * 366 * DAY,
    "assessment": 5 * 366 * DAY,
}
"""Minimum retention in seconds per record class. Years count 366 days so a floor is never short."""

_UNITS = {"d": DAY, "w": 7 * DAY, "m": 31 * DAY, "y": 366 * DAY}
_DURATION = re.compile(r"^\s*(\d+)\s*([dwmy])\s*$")


def parse_duration(text: str | int | float) -> float:
    """Parse ``"180d"``, ``"26w"``, ``"6m"`` or ``"2y"`` (or a number of days) into seconds.

    Months count 31 days and years 366, so a period written in them is never shorter than meant.

    Raises:
        ConfigurationError: the text is not a duration.
    """
    if isinstance(text, bool):
        raise ConfigurationError(f"a retention period must be like '6m' or '2y', got {text!r}")
    if isinstance(text, (int, float)):
        return float(text) * DAY
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigurationError(f"a retention period must be like '180d', '6m' or '2y', got {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


class Retention:
    """Retention periods per record class, checked against the legal floors.

    Args:
        periods: Record kind (or ``default``) → a duration (see :func:`parse_duration`).

    Raises:
        ConfigurationError: a period is shorter than its floor.

    .. versionadded:: 0.1.0
    """

    def __init__(self, periods: Mapping[str, str | int | float] | None = None) -> None:
        self._periods = dict(FLOORS)
        for kind, value in (periods or {}).items():
            seconds = parse_duration(value)
            floor = FLOORS.get(kind, FLOORS["default"])
            if seconds < floor:
                raise ConfigurationError(
                    f"retention for {kind!r} is {value!r}, below its legal floor of {floor / DAY:.0f} days"
                )
            self._periods[kind] = seconds

    def period(self, kind: str) -> float:
        """The retention period of records of ``kind``, in seconds."""
        periods = self._periods
        return periods[kind] if kind in periods else periods["default"]

    def describe(self, kind: str) -> str:
        """The period of ``kind`` in days, for messages."""
        return f"{self.period(kind) / DAY:.0f} days"

    def as_dict(self) -> dict[str, float]:
        """Every configured period in seconds."""
        return dict(self._periods)
