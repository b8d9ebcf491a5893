"""The ``AI-Disclosure`` header: RFC 9651 Structured Field Dictionaries, written and read.

The header follows draft-abaris-aicdh ("AI Content Disclosure Header"): a Dictionary whose keys are
``mode`` (a Token: ``none``, ``ai-modified``, ``ai-originated`` or ``machine-generated``), ``model``,
``provider``, ``reviewed-by`` (Strings) and ``date`` (a Date, ``@<epoch seconds>``)::

    AI-Disclosure: mode=ai-originated, provider="Example Co", model="m-1", date=@1764331200

The draft's own example separates the keys with ``;``. Under RFC 9651 that makes ``model`` and the
rest *parameters* of the ``mode`` member, not members of their own, although the draft's prose calls
them keys of the dictionary. :func:`serialize_dictionary` writes either form (``form=","`` or
``form=";"``) and :func:`parse_dictionary` reads both into the same flat ``dict``.

RFC 9651 Strings hold printable ASCII only. A non-ASCII value (a Chinese provider name) is an error
rather than something silently mangled: pass it through :func:`ascii_safe` (percent-encoded UTF-8,
reversed by :func:`urllib.parse.unquote`), transliterate it, or mark it :class:`DisplayString`, the
RFC 9651 type for Unicode text (which parsers written for RFC 8941 reject, so it is opt-in).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ..errors import ConfigurationError
from ._structured import Date, DisplayString, Token, _Parser

__all__ = [
    "MODES",
    "Date",
    "DisplayString",
    "Token",
    "ascii_safe",
    "disclosure_header",
    "parse_dictionary",
    "parse_dictionary_members",
    "serialize_dictionary",
]

MODES = ("none", "ai-modified", "ai-originated", "machine-generated")
"""The ``mode`` values of draft-abaris-aicdh, from no AI involvement to no human involvement."""

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*\Z")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*\Z")
_MAX_INT = 999_999_999_999_999
_FORMS = (",", ";")


def ascii_safe(text: str) -> str:
    """Percent-encode ``text`` so that it fits an RFC 9651 String.

    Printable ASCII (0x20-0x7E) passes through, except ``%``; every other character, and ``%``
    itself, becomes the ``%XX`` escapes of its UTF-8 bytes, so ``urllib.parse.unquote`` restores
    the original exactly. ``ascii_safe("示例科技")`` is ``"%E7%A4%BA%E4%BE%8B%E7%A7%91%E6%8A%80"``.

    Args:
        text: Any text, for example a provider's Chinese name.

    Returns:
        The text in printable ASCII.
    """
    out: list[str] = []
    for char in text:
        if " " <= char <= "~" and char != "%":
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


# --- Serialising -------------------------------------------------------------------------------


def _key(key: object) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigurationError(
            f"structured field key {key!r} is invalid: keys are lower-case letters, digits, "
            "'_', '-', '.' and '*', starting with a letter or '*'"
        )
    return key


def _decimal(value: float) -> str:
    if not math.isfinite(value):
        raise ConfigurationError(f"structured field decimal must be finite, got {value!r}")
    rounded = Decimal(repr(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
    if abs(rounded) >= 10**12:
        raise ConfigurationError(f"structured field decimal {value!r} has more than 12 integer digits")
    text = f"{rounded:f}".rstrip("0")
    text = text + "0" if text.endswith(".") else text
    return "0.0" if text in ("-0.0", "0.0") else text


def _string(value: str) -> str:
    for char in value:
        if not " " <= char <= "~":
            raise ConfigurationError(
                f"structured field string {value!r} has the character {char!r}, but RFC 9651 strings "
                "hold printable ASCII only: pass the text through ascii_safe() (percent-encoding), "
                "transliterate it, or mark it DisplayString"
            )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _display_string(value: str) -> str:
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if byte in (0x25, 0x22) or not 0x20 <= byte <= 0x7E:
            out.append(f"%{byte:02x}")
        else:
            out.append(chr(byte))
    return '%"' + "".join(out) + '"'


def _bare_item(value: Any) -> str:
    # Order matters: bool is an int, Date is an int, Token and DisplayString are str.
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, Date):
        if abs(value) > _MAX_INT:
            raise ConfigurationError(f"structured field date {int(value)} is out of range (±{_MAX_INT})")
        return f"@{int(value)}"
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise ConfigurationError(f"structured field integer {value} is out of range (±{_MAX_INT})")
        return str(value)
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, Token):
        if not _TOKEN.match(value):
            raise ConfigurationError(
                f"structured field token {str(value)!r} is invalid: a token starts with a letter "
                "or '*' and continues with letters, digits and !#$%&'*+-.^_`|~:/"
            )
        return str(value)
    if isinstance(value, DisplayString):
        return _display_string(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (bytes, bytearray)):
        return ":" + base64.b64encode(bytes(value)).decode("ascii") + ":"
    raise ConfigurationError(
        f"structured field value {value!r} has unsupported type {type(value).__name__}: use bool, "
        "int, float, str, Token, Date, DisplayString or bytes"
    )


def _member(key: str, value: Any, *, inner_list_ok: bool) -> str:
    if value is True:
        return key
    if isinstance(value, (list, tuple)):
        if not inner_list_ok:
            raise ConfigurationError(f"structured field parameter {key!r} cannot be a list; only the first member can")
        return f"{key}=(" + " ".join(_bare_item(item) for item in value) + ")"
    return f"{key}={_bare_item(value)}"


def serialize_dictionary(members: Mapping[str, Any], *, form: str = ",") -> str:
    """Serialise a mapping as an RFC 9651 Dictionary.

    Values map to Structured Field types: ``bool`` → Boolean (a true member is written as its bare
    key), ``int`` → Integer (±999,999,999,999,999), ``float`` → Decimal (rounded half-even to three
    fractional digits), ``str`` → String (printable ASCII only), :class:`Token` → Token,
    :class:`Date` → Date, :class:`DisplayString` → Display String, ``bytes`` → Byte Sequence, a list
    or tuple of those → Inner List.

    With ``form=","`` every entry is a member: ``a=1, b="x"``. With ``form=";"`` the first entry is
    the only member and the rest are its parameters, as in draft-abaris-aicdh's example:
    ``mode=ai-originated; model="m"``. :func:`parse_dictionary` reads both back to the same mapping.

    Args:
        members: Keys (lower-case sf-keys) to values, in the order to write them.
        form: ``","`` (members) or ``";"`` (one member with parameters).

    Returns:
        The field value, without the field name.

    Raises:
        ValueError: a key or value cannot be represented (the message names it and the fix), or
            ``form`` is neither ``","`` nor ``";"``.
    """
    if form not in _FORMS:
        raise ConfigurationError(f"form must be ',' or ';', got {form!r}")
    parts = [_member(_key(key), value, inner_list_ok=form == "," or index == 0)
             for index, (key, value) in enumerate(members.items())]
    return (", " if form == "," else "; ").join(parts)


def disclosure_header(
    *,
    mode: str = "ai-originated",
    provider: str,
    model: str | None = None,
    date: int | datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    form: str = ",",
) -> str:
    """Build the value of the ``AI-Disclosure`` header (draft-abaris-aicdh).

    ``disclosure_header(provider="Example Co", model="m-1", date=1764331200)`` gives
    ``mode=ai-originated, provider="Example Co", model="m-1", date=@1764331200``.

    Args:
        mode: One of :data:`MODES`.
        provider: Who provides the AI service; printable ASCII (see :func:`ascii_safe`).
        model: The model's name, if disclosed.
        date: When the content was produced: epoch seconds or an aware ``datetime``.
        extra: More members, such as ``{"filing": "Beijing-XX-2025"}`` or ``{"reviewed-by": "..."}``.
        form: ``","`` (every key a member) or ``";"`` (the draft's example form).

    Returns:
        The header value.

    Raises:
        ValueError: an unknown mode, an ``extra`` key that repeats a named argument, or a value
            that is not representable (for example non-ASCII text).
    """
    if mode not in MODES:
        raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    members: dict[str, Any] = {"mode": Token(mode), "provider": provider}
    if model is not None:
        members["model"] = model
    if date is not None:
        if isinstance(date, datetime):
            if date.tzinfo is None:
                raise ConfigurationError("date must be an aware datetime (with a time zone) or epoch seconds")
            date = math.floor(date.timestamp())
        members["date"] = Date(date)
    for key, value in (extra or {}).items():
        if key in ("mode", "provider", "model", "date"):
            raise ConfigurationError(f"extra key {key!r} repeats a named argument; pass it as {key}= instead")
        members[key] = value
    return serialize_dictionary(members, form=form)


# --- Parsing -----------------------------------------------------------------------------------


def _combine(value: str | Iterable[str]) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("a structured field value must be str (decode header bytes as latin-1 first)")
    return ",".join(value)


def parse_dictionary_members(value: str | Iterable[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Parse an RFC 9651 Dictionary exactly, keeping each member's parameters.

    Args:
        value: The field value, or the values of several field lines (joined with ``,``).

    Returns:
        Key → ``(value, parameters)``; an Inner List value is a list of ``(item, parameters)``.
        A repeated key keeps its first position and its last value, as RFC 9651 says.

    Raises:
        ValueError: the text is not a valid Dictionary; the message gives the position.
    """
    text = _combine(value).strip(" ")
    return _Parser(text).dictionary()


def parse_dictionary(value: str | Iterable[str]) -> dict[str, Any]:
    """Parse an ``AI-Disclosure``-style Dictionary into one flat mapping, tolerantly.

    Both forms in use read the same: ``mode=ai-originated, model="m"`` (members) and
    ``mode=ai-originated; model="m"`` (draft-abaris-aicdh's example, where ``model`` is a
    parameter of ``mode``). Parameters are lifted into the result beside the members; a member
    wins over a parameter of the same name. Strings come back unescaped, Tokens as :class:`Token`,
    Dates as :class:`Date`, Inner Lists as lists of values. Tolerance stops at the syntax: an
    unterminated string, a bad escape, an upper-case key or a trailing comma is an error.

    Args:
        value: The field value, or the values of several field lines.

    Returns:
        Key → value, members first.

    Raises:
        ValueError: the text is not a valid Dictionary; the message gives the position.
    """
    members = parse_dictionary_members(value)
    result: dict[str, Any] = {}
    for key, (item, _params) in members.items():
        result[key] = [inner for inner, _ in item] if isinstance(item, list) else item
    for _item, params in members.values():
        for key, item in params.items():
            result.setdefault(key, item)
    return result
