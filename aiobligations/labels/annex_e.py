"""The GB 45438-2025 Annex E implicit label: the seven-field JSON string, its checks and its signature.

The label is a JSON object with seven string elements in a fixed order::

    {"Label":"1","ContentProducer":"…","ProduceID":"…","ReservedCode1":"…",
     "ContentPropagator":"…","PropagateID":"…","ReservedCode2":"…"}

Containers named ``AIGC`` (XMP ``TC260:AIGC``, WAV, MP3, MP4) hold this *direct* form; the image guide's
Annex B carriers (EXIF UserComment, PNG ``tEXt``) hold the *wrapped* form ``{"AIGC":{…}}``.
:meth:`AIGCLabel.parse` accepts both.

ReservedCode1 integrity scheme (version ``v1``)
-----------------------------------------------

Annex E leaves ``ReservedCode1`` to the producer for protecting the content and label. TC260-PG-202511A
describes a richer ``SecurityData`` object; until that is implemented, :func:`sign_label` writes a compact
token that stays inside charset rule j::

    ReservedCode1 = "v1." + base64url(signature)        # no padding, 86 characters of signature

    signature = Ed25519.sign(key, message)
    message   = "aiobligations-aigc-v1|" + Label + "|" + ContentProducer + "|" + ProduceID
                + "|" + hex(content_digest)

``content_digest`` is a SHA-256 digest (32 bytes) of the *content without any label*. The version prefix
lets the algorithm change later. Each format module computes the digest with its ``content_digest(data)``
helper over the bytes that labelling never touches, so the digest is the same before and after
:func:`write_label` and whatever other metadata a platform adds:

- PNG: every critical chunk (``IHDR``, ``PLTE``, ``IDAT``, ``IEND``), length, type, data and CRC;
- JPEG: SOI and every segment except APPn and COM, then the scan data to the end of the file;
- WebP: every RIFF chunk except ``VP8X``, ``XMP ``, ``EXIF`` and ``C2PA``;
- WAV: the ``fmt `` and ``data`` chunks;
- MP3: everything after the ID3v2 tag, less a trailing ID3v1 tag;
- MP4: the content of every top-level ``mdat``.

Other metadata (a C2PA manifest added after the label, a platform's own tags) may change without
breaking the signature; the pixels or samples may not.

The flow is: ``digest = fmt.content_digest(data)``; ``label = sign_label(label, digest, key)``;
``data = fmt.write_label(data, label.to_json())``. A verifier reads the label, recomputes the digest from
the labelled file and calls :func:`verify_label`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aiobligations.errors import LabelError

__all__ = [
    "FIELDS",
    "MAX_LABEL_SIZE",
    "AIGCLabel",
    "check_charset",
    "findings",
    "sign_label",
    "validate_provider_code",
    "verify_label",
]

FIELDS: tuple[str, ...] = (
    "Label",
    "ContentProducer",
    "ProduceID",
    "ReservedCode1",
    "ContentPropagator",
    "PropagateID",
    "ReservedCode2",
)
"""The Annex E element names, in the order the standard prints them."""

_ATTRS: tuple[str, ...] = (
    "label",
    "content_producer",
    "produce_id",
    "reserved_code1",
    "content_propagator",
    "propagate_id",
    "reserved_code2",
)

MAX_LABEL_SIZE = 64 * 1024
"""The largest label string :meth:`AIGCLabel.parse` accepts, in bytes (UTF-8)."""

_LABEL_VALUES = frozenset({"1", "2", "3"})
_PROVIDER_CODE = re.compile(r"00[0-9A-Z]{20}[0-9A-Z]{5}")
_SIGNATURE_PREFIX = "v1."
_MESSAGE_PREFIX = "aiobligations-aigc-v1"


def _allowed(char: str) -> bool:
    # Rule j: code points 0x21, 0x23-0x5B and 0x5D-0x7E, plus the quotation mark (written as \" in JSON).
    code = ord(char)
    return code == 0x21 or code == 0x22 or 0x23 <= code <= 0x5B or 0x5D <= code <= 0x7E


@dataclass(frozen=True)
class AIGCLabel:
    """One GB 45438-2025 Annex E implicit label; every element is a string.

    Args:
        label: ``"1"`` AI-generated, ``"2"`` possibly, ``"3"`` suspected.
        content_producer: Name or (preferably) 27-character code of the generating provider.
        produce_id: The producer's unique ID for this content.
        reserved_code1: The producer's integrity protection, see :func:`sign_label`.
        content_propagator: Name or code of the propagating platform.
        propagate_id: The propagator's unique ID for this content.
        reserved_code2: The propagator's integrity protection.

    .. versionadded:: 0.1.0
    """

    label: str = "1"
    content_producer: str = ""
    produce_id: str = ""
    reserved_code1: str = ""
    content_propagator: str = ""
    propagate_id: str = ""
    reserved_code2: str = ""

    def __post_init__(self) -> None:
        for attr in _ATTRS:
            value = getattr(self, attr)
            if not isinstance(value, str):
                raise TypeError(f"{attr} must be a str, got {type(value).__name__}")

    def as_dict(self) -> dict[str, str]:
        """Return the seven elements keyed by their Annex E names, in Annex E order."""
        return {name: getattr(self, attr) for name, attr in zip(FIELDS, _ATTRS, strict=True)}

    def to_json(self, *, wrapped: bool = False) -> str:
        """Return the compact JSON string, keys in Annex E order.

        Args:
            wrapped: Return ``{"AIGC":{…}}`` (EXIF UserComment, PNG ``tEXt``) instead of the direct object.
        """
        body: Any = self.as_dict()
        if wrapped:
            body = {"AIGC": body}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str | bytes) -> AIGCLabel:
        """Parse a label in the direct or the wrapped form.

        Missing elements become ``""``; use :func:`findings` on the raw string to report them.

        Raises:
            LabelError: the text is too large, not JSON, not a label object, has unknown or duplicate
                keys, or a value that is not a string.
        """
        obj, _ = _load(text)
        return cls(**{attr: obj.get(name, "") for name, attr in zip(FIELDS, _ATTRS, strict=True)})


def _load(text: str | bytes) -> tuple[dict[str, str], list[str]]:
    """Return the label object and its keys in file order."""
    if isinstance(text, bytes):
        if len(text) > MAX_LABEL_SIZE:
            raise LabelError(f"label is {len(text)} bytes, more than {MAX_LABEL_SIZE}")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise LabelError(f"label is not UTF-8: {exc}") from None
    elif not isinstance(text, str):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    if len(text) > MAX_LABEL_SIZE:
        raise LabelError(f"label is {len(text)} characters, more than {MAX_LABEL_SIZE}")
    text = text.strip().lstrip("\ufeff")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise LabelError(f"label has duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        obj = json.loads(text, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, LabelError):
            raise
        raise LabelError(f"label is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise LabelError("label must be a JSON object")
    if list(obj) == ["AIGC"]:
        obj = obj["AIGC"]
        if not isinstance(obj, dict):
            raise LabelError('the "AIGC" member must be a JSON object')
    unknown = [key for key in obj if key not in FIELDS]
    if unknown:
        raise LabelError(f"label has unknown key {unknown[0]!r}")
    if "Label" not in obj:
        raise LabelError('label has no "Label" element')
    for key, value in obj.items():
        if not isinstance(value, str):
            raise LabelError(f"label element {key} must be a string, got {type(value).__name__}")
    return obj, list(obj)


def check_charset(value: str) -> None:
    """Check one element value against Annex E rule j (printable ASCII without space or backslash).

    Raises:
        LabelError: a character is outside the set; the message names it and its position.
    """
    for index, char in enumerate(value):
        if not _allowed(char):
            raise LabelError(
                f"character {char!r} (U+{ord(char):04X}) at position {index} is outside the Annex E charset "
                "(0x21, 0x23-0x5B, 0x5D-0x7E and the quotation mark); use a code instead of a name"
            )


def validate_provider_code(code: str) -> None:
    """Check a 27-character TC260 service provider code (``00`` + 20-character subject + 5-character service).

    Raises:
        LabelError: the code has the wrong length, format code or characters.
    """
    if len(code) != 27:
        raise LabelError(f"provider code must be 27 characters, got {len(code)}: {code!r}")
    if not code.startswith("00"):
        raise LabelError(f"provider code must start with format code '00', got {code[:2]!r}")
    if not _PROVIDER_CODE.fullmatch(code):
        bad = next(char for char in code if not ("0" <= char <= "9" or "A" <= char <= "Z"))
        raise LabelError(f"provider code may hold only digits and upper-case letters, got {bad!r}")


def findings(label: AIGCLabel | str | bytes) -> list[str]:
    """Return the Annex E conformance findings for a label; an empty list means none were found.

    Given the raw string (or bytes), the key set and order are checked as well. Never raises for a
    non-conforming label; unparseable text is reported as a finding.
    """
    result: list[str] = []
    if not isinstance(label, AIGCLabel):
        try:
            obj, keys = _load(label)
        except LabelError as exc:
            return [str(exc)]
        missing = [name for name in FIELDS if name not in obj]
        if missing:
            result.append(f"missing elements: {', '.join(missing)}")
        present = [name for name in FIELDS if name in obj]
        if keys != present:
            result.append(f"elements out of Annex E order: {', '.join(keys)}")
        label = AIGCLabel(**{attr: obj.get(name, "") for name, attr in zip(FIELDS, _ATTRS, strict=True)})
    for name, value in label.as_dict().items():
        try:
            check_charset(value)
        except LabelError as exc:
            result.append(f"{name}: {exc}")
    if label.label not in _LABEL_VALUES:
        result.append(f'Label must be "1", "2" or "3", got {label.label!r}')
    if not label.content_producer:
        result.append("ContentProducer is empty")
    elif _PROVIDER_CODE.fullmatch(label.content_producer) is None:
        result.append("ContentProducer is not a 27-character provider code (a name is allowed but a code is preferred)")
    if not label.produce_id:
        result.append("ProduceID is empty")
    return result


def _message(label: AIGCLabel, content_digest: bytes) -> bytes:
    if not isinstance(content_digest, bytes):
        raise TypeError("content_digest must be bytes")
    if len(content_digest) != 32:
        raise LabelError(f"content_digest must be a 32-byte SHA-256 digest, got {len(content_digest)} bytes")
    parts = (_MESSAGE_PREFIX, label.label, label.content_producer, label.produce_id, content_digest.hex())
    return "|".join(parts).encode("utf-8")


def sign_label(label: AIGCLabel, content_digest: bytes, key: Ed25519PrivateKey) -> AIGCLabel:
    """Return ``label`` with ``ReservedCode1`` set to a ``v1.`` Ed25519 signature token.

    The signature covers Label, ContentProducer, ProduceID and ``content_digest`` (see the module
    docstring); the propagator's fields stay free for platforms to fill in later.

    Raises:
        TypeError: ``content_digest`` is not bytes.
        LabelError: ``content_digest`` is not 32 bytes long.
    """
    signature = key.sign(_message(label, content_digest))
    token = _SIGNATURE_PREFIX + base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")
    return dataclasses.replace(label, reserved_code1=token)


def verify_label(label: AIGCLabel, content_digest: bytes, public_key: Ed25519PublicKey) -> None:
    """Check the ``ReservedCode1`` token of ``label`` against ``content_digest``; return ``None`` or raise.

    Raises:
        LabelError: the token is missing, malformed, of an unknown version, or does not verify.
    """
    token = label.reserved_code1
    if not token.startswith(_SIGNATURE_PREFIX):
        raise LabelError("ReservedCode1 does not hold a v1 signature token")
    encoded = token[len(_SIGNATURE_PREFIX) :]
    if len(encoded) != 86 or not re.fullmatch(r"[A-Za-z0-9_-]+", encoded):
        raise LabelError("ReservedCode1 signature token is malformed")
    try:
        signature = base64.urlsafe_b64decode(encoded + "==")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern above admits only valid base64url.
        raise LabelError("ReservedCode1 signature token is malformed") from None
    try:
        public_key.verify(signature, _message(label, content_digest))
    except InvalidSignature:
        raise LabelError("label signature does not verify") from None
