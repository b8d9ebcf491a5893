"""Labels for synthetic content (Art. 38(2), 70(1)): GB 45438-2025 implicit labels and C2PA.

Most users call :meth:`aiobligations.Obligations.label` (or let the middleware label AI media
responses); :class:`Labeller` is the machinery, and :mod:`aiobligations.labels.formats` holds one
module per file format.
"""

from .annex_e import AIGCLabel, check_charset, findings, sign_label, validate_provider_code, verify_label
from .labeller import FORMATS, Labelled, Labeller, detect
from .settings import LabelSettings

__all__ = [
    "FORMATS",
    "AIGCLabel",
    "LabelSettings",
    "Labelled",
    "Labeller",
    "check_charset",
    "detect",
    "findings",
    "sign_label",
    "validate_provider_code",
    "verify_label",
]
