"""aiobligations: a provider's obligations under the AI Model Law 2.0, as code, with evidence."""

from .errors import (
    ConfigurationError,
    LabelError,
    LedgerBroken,
    LedgerClosed,
    LedgerError,
    LedgerFull,
    ObligationError,
    RetentionError,
    UnusableInput,
)
from .obligations import Obligations
from .profile import Profile, load_profile

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "LabelError",
    "LedgerBroken",
    "LedgerClosed",
    "LedgerError",
    "LedgerFull",
    "ObligationError",
    "Obligations",
    "Profile",
    "RetentionError",
    "UnusableInput",
    "__version__",
    "load_profile",
]
