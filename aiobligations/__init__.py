"""aiobligations: a provider's obligations under the AI Model Law 2.0, as code, with evidence."""

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigurationError,
    LabelError,
    LedgerBroken,
    LedgerClosed,
    LedgerError,
    LedgerFull,
    LedgerLocked,
    ObligationError,
    RetentionError,
    UnusableInput,
)

if TYPE_CHECKING:
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
    "LedgerLocked",
    "ObligationError",
    "Obligations",
    "Profile",
    "RetentionError",
    "UnusableInput",
    "__version__",
    "load_profile",
]

# The hub and the profile load on first use, so that `import aiobligations.errors` (the CLI, the
# verifier, the writer process) does not import the whole library.
_LAZY = {"Obligations": ".obligations", "Profile": ".profile", "load_profile": ".profile"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aiobligations' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
