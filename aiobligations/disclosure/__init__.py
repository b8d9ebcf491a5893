"""Disclosure (Art. 38(1)(3), 31, 47, 70, 35): headers, notices, the transparency document, security.txt."""

from .document import (
    ARTICLES,
    LAW,
    SECURITY_TXT_PATH,
    WELL_KNOWN_PATH,
    document_version,
    transparency_document,
    with_incidents,
    with_witness_conflicts,
)
from .header import (
    MODES,
    Date,
    DisplayString,
    Token,
    ascii_safe,
    disclosure_header,
    parse_dictionary,
    parse_dictionary_members,
    serialize_dictionary,
)
from .notices import (
    FIRST_CONTACT_NOTICE,
    META_VALUES,
    SHORT_NOTICE,
    banner_html,
    first_contact_notice,
    meta_tag,
    short_notice,
)
from .page import negotiate_language, render_transparency_page
from .securitytxt import DEFAULT_EXPIRY, security_txt
from .settings import LANGUAGES, TEMPLATE, DisclosureSettings, SecuritySettings, Text, TransparencySettings

__all__ = [
    "ARTICLES",
    "DEFAULT_EXPIRY",
    "FIRST_CONTACT_NOTICE",
    "LANGUAGES",
    "LAW",
    "META_VALUES",
    "MODES",
    "SECURITY_TXT_PATH",
    "SHORT_NOTICE",
    "TEMPLATE",
    "WELL_KNOWN_PATH",
    "Date",
    "DisclosureSettings",
    "DisplayString",
    "SecuritySettings",
    "Text",
    "Token",
    "TransparencySettings",
    "ascii_safe",
    "banner_html",
    "disclosure_header",
    "document_version",
    "first_contact_notice",
    "meta_tag",
    "negotiate_language",
    "parse_dictionary",
    "parse_dictionary_members",
    "render_transparency_page",
    "security_txt",
    "serialize_dictionary",
    "short_notice",
    "transparency_document",
    "with_incidents",
    "with_witness_conflicts",
]
