"""Operator controls: security incidents and their notices (Art. 37), the takeover switch (Art. 52(4)).

Every control is a ledger record; :class:`ControlState` (``obligations.controls``) folds them in and
follows the log, so every worker and replica of a service sees a control within about half a second.

.. versionadded:: 0.2.0
"""

from .errors import ControlError, IncidentClosed, IncidentNotFound, InvalidControl
from .incidents import Incident, IncidentStep
from .notices import authority_notice, user_notice, user_notice_html
from .state import (
    ControlSettings,
    ControlSnapshot,
    ControlState,
    Halt,
    close_incident,
    open_incident,
    takeover_off,
    takeover_on,
    update_incident,
)
from .takeover import Takeover

__all__ = [
    "ControlError",
    "ControlSettings",
    "ControlSnapshot",
    "ControlState",
    "Halt",
    "Incident",
    "IncidentClosed",
    "IncidentNotFound",
    "IncidentStep",
    "InvalidControl",
    "Takeover",
    "authority_notice",
    "close_incident",
    "open_incident",
    "takeover_off",
    "takeover_on",
    "update_incident",
    "user_notice",
    "user_notice_html",
]

