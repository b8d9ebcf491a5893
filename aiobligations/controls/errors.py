"""The errors of the operator controls (incidents, the takeover switch), all :class:`ObligationError`.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from ..errors import ObligationError

__all__ = ["ControlError", "IncidentClosed", "IncidentNotFound", "InvalidControl"]


class ControlError(ObligationError):
    """Base class of the controls' errors.

    .. versionadded:: 0.2.0
    """


class InvalidControl(ControlError, ValueError):
    """An argument is unusable: an empty or too long text, a bad route pattern or fallback path.

    .. versionadded:: 0.2.0
    """


class IncidentNotFound(ControlError, LookupError):
    """No incident has this id.

    .. versionadded:: 0.2.0
    """


class IncidentClosed(ControlError):
    """The incident is closed already: it cannot be updated or closed again.

    .. versionadded:: 0.2.0
    """
