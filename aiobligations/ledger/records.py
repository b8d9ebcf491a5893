"""How a record becomes the exact bytes of a Merkle leaf, and back.

A stored record is one compact JSON object in UTF-8, serialised once, when it is sequenced:

    {"v":1,"idx":42,"ts":"2026-11-28T12:00:00.123456Z","kind":"interaction",...,"subject":"…","sealed":"…"}

``v``, ``idx`` and ``ts`` come first and are written by the ledger, so a verifier can check a record's
position from its first bytes without parsing it. The caller's fields follow in the order given;
``subject`` and ``sealed`` follow when the record has a subject. Compact JSON escapes every control
character, so a record never holds a raw newline and one record per line is safe.

``mac`` closes every record: the first 16 bytes of HMAC-SHA256, under a key derived from the log's
signing key (:func:`record_mac_key`), over every byte before ``,"mac":``, in base64. The signed root
proves that *some* record changed; the mac says *which*, to whoever holds the key (the provider, or an
auditor it gives the key to), even when a record was altered together with every hash stored beside
it. Nobody without the key can make a mac, so an altered record cannot be given a valid one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "FORMAT_VERSION",
    "MAC_BYTES",
    "RESERVED_FIELDS",
    "PreparedRecord",
    "format_ts",
    "mac_suffix",
    "parse_record",
    "parse_ts",
    "prepare",
    "record_mac_key",
    "record_prefix",
    "verify_mac",
]

FORMAT_VERSION = 1
"""The ``v`` of every record this version writes."""

MAC_BYTES = 16
"""How much of the HMAC-SHA256 a record's ``mac`` keeps (128 bits)."""

RESERVED_FIELDS = frozenset({"v", "idx", "ts", "sealed", "mac"})
"""Fields the ledger writes itself; a caller's record must not carry them."""

_SEPARATE = frozenset({"kind", "subject", "personal"})

_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=True
).encode


class PreparedRecord:
    """A caller's record, validated and serialised on the caller's side, waiting to be sequenced.

    Serialising here rather than in the writer means a bad record fails in the caller's hands, with
    its own traceback, instead of being lost later.
    """

    __slots__ = ("body", "interaction_id", "kind", "kind_json", "personal", "subject")

    def __init__(self, kind: str, body: bytes, subject: str | None, personal: bytes | None,
                 interaction_id: str | None = None) -> None:
        self.kind = kind
        #: For ``interaction`` records, their id: the store indexes it so a receipt is one lookup.
        self.interaction_id = interaction_id
        self.kind_json = _dumps(kind).encode()
        #: The caller's other fields as JSON members, with a leading comma (or empty).
        self.body = body
        self.subject = subject
        self.personal = personal


def prepare(record: Mapping[str, Any]) -> PreparedRecord:
    """Validate and serialise a caller's record.

    Args:
        record: A mapping with a ``kind`` string, optional ``subject`` (a string naming the person)
            and ``personal`` (any JSON value, sealed under the subject's key), and other
            JSON-serialisable fields.

    Returns:
        The prepared record.

    Raises:
        TypeError: ``record`` is not a mapping, or a value cannot be serialised as JSON.
        ValueError: ``kind`` is missing or empty, a reserved field is present, or ``personal`` is
            given without ``subject``.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"a ledger record must be a dict, got {type(record).__name__}")
    kind = record.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ConfigurationError(f"a ledger record needs a non-empty string 'kind', got {kind!r}")
    if not RESERVED_FIELDS.isdisjoint(record):
        taken = ", ".join(sorted(RESERVED_FIELDS.intersection(record)))
        raise ConfigurationError(f"{taken}: written by the ledger, a record cannot set it")
    subject = record.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise ConfigurationError("a record's 'subject' must be a non-empty string")
    personal = record.get("personal")
    if personal is not None and subject is None:
        raise ConfigurationError("a record with 'personal' data needs a 'subject' to seal it for")
    fields = {key: value for key, value in record.items() if key not in _SEPARATE}
    try:
        body = b"," + _dumps(fields)[1:-1].encode() if fields else b""
        sealed = _dumps(personal).encode() if personal is not None else None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a ledger record must be JSON-serialisable: {exc}") from None
    interaction_id = record.get("interaction_id") if kind == "interaction" else None
    if not isinstance(interaction_id, str) or len(interaction_id) > 200:
        interaction_id = None
    return PreparedRecord(kind, body, subject, sealed, interaction_id)


_SECOND: tuple[int, str] = (-1, "")
"""The last whole second :func:`format_ts` formatted, and its text (one tuple: read and replaced whole)."""


def format_ts(seconds: float) -> str:
    """Format a Unix time as RFC 3339 UTC with microseconds, e.g. ``2026-11-28T12:00:00.123456Z``."""
    global _SECOND
    whole = math.floor(seconds)
    micros = min(int(round((seconds - whole) * 1_000_000)), 999_999)
    second = _SECOND
    if second[0] != whole:
        second = _SECOND = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{micros:06d}Z"


def parse_ts(text: str) -> float:
    """Parse an RFC 3339 time (``Z`` or an offset) into a Unix time."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def record_mac_key(private_key: Any) -> bytes:
    """The key of records' ``mac``, derived from the log's Ed25519 signing key (32 bytes).

    Args:
        private_key: The log's ``Ed25519PrivateKey`` (``Signer.private_key``).

    .. versionadded:: 0.2.0
    """
    from cryptography.hazmat.primitives import serialization

    raw = private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                    serialization.NoEncryption())
    return hashlib.sha256(b"aiobligations/record-mac/v1\n" + raw).digest()


def mac_suffix(key: bytes, head: bytes) -> bytes:
    """The bytes that close a record whose other bytes are ``head`` (an object without its ``}``).

    .. versionadded:: 0.2.0
    """
    tag = base64.b64encode(hmac.digest(key, head, "sha256")[:MAC_BYTES])
    return b',"mac":"%s"}' % tag


_MAC_LENGTH = len(mac_suffix(bytes(32), b""))


def verify_mac(key: bytes, data: bytes) -> bool | None:
    """Whether record ``data`` carries a valid ``mac`` under ``key``; ``None`` if it carries none.

    A record written before records had a ``mac`` carries none; the caller decides what that means.

    .. versionadded:: 0.2.0
    """
    cut = len(data) - _MAC_LENGTH
    if cut < 0 or data[cut : cut + 8] != b',"mac":"':
        return None
    return hmac.compare_digest(mac_suffix(key, data[:cut]), data[cut:])


def record_prefix(index: int) -> bytes:
    """The first bytes of record ``index``: a verifier checks them without parsing the JSON."""
    return b'{"v":1,"idx":%d,' % index


def parse_record(data: bytes) -> dict[str, Any]:
    """Parse stored record bytes into a dict (``sealed`` is left sealed).

    Raises:
        ValueError: the bytes are not one JSON object.
    """
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ConfigurationError("a record must be a JSON object")
    return value
