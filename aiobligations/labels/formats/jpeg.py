"""JPEG: the label as XMP in an APP1 segment with the header ``http://ns.adobe.com/xap/1.0/\\0``.

The segment is placed after SOI and any leading APP0 (JFIF) and APP1 EXIF segments; an existing XMP
segment is merged into and replaced. Segments are walked up to SOS; the scan data and everything after it
is copied byte for byte.

The image guide's Annex B alternative, an EXIF UserComment (tag 0x9286) holding the wrapped JSON, is read
too; when writing, such a comment is blanked in place (same length, so no EXIF offset moves) so exactly one
label remains. EXIF is parsed leniently: a damaged EXIF block is treated as holding no label, because
camera EXIF is often slightly broken and that must not stop labelling.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from aiobligations.errors import LabelError
from aiobligations.labels import xmp as _xmp
from aiobligations.labels.annex_e import AIGCLabel

__all__ = [
    "MAX_XMP_SEGMENT",
    "MEDIA_TYPES",
    "content_digest",
    "exif_labels",
    "exif_without_label",
    "read_labels",
    "sniff",
    "write_label",
]

MEDIA_TYPES: tuple[str, ...] = ("image/jpeg",)
"""The media types this module handles."""

MAX_XMP_SEGMENT = 65533
"""The largest APP1 payload (XMP header and packet), in bytes: the 16-bit length less its own 2 bytes."""

_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_EXIF_HEADER = b"Exif\x00\x00"
_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_APP0, _APP1, _SOS, _COM = 0xE0, 0xE1, 0xDA, 0xFE


class _Segment(NamedTuple):
    marker: int
    body: bytes  # The segment payload, without marker and length.
    raw: bytes  # Marker, length and payload, as in the file.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with a JPEG SOI marker followed by another marker."""
    return bytes(data[:3]) == b"\xff\xd8\xff"


def _segments(data: bytes) -> tuple[list[_Segment], bytes]:
    """Split a JPEG into its header segments and the rest, from the SOS marker to the end of the file."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:2] != _SOI:
        raise LabelError("not a JPEG file: no SOI marker")
    segments: list[_Segment] = []
    offset = 2
    while True:
        if offset >= len(data):
            raise LabelError(f"JPEG truncated at offset {offset}: no SOS marker")
        if data[offset] != 0xFF:
            raise LabelError(f"JPEG has no marker at offset {offset} (found 0x{data[offset]:02X})")
        start = offset
        while offset < len(data) and data[offset] == 0xFF:  # Fill bytes may precede a marker.
            offset += 1
        if offset >= len(data):
            raise LabelError("JPEG truncated inside a marker")
        marker = data[offset]
        offset += 1
        if marker == 0x00 or 0xD0 <= marker <= 0xD9 or marker == 0x01:
            raise LabelError(f"JPEG has an unexpected marker 0xFF{marker:02X} before SOS at offset {start}")
        if offset + 2 > len(data):
            raise LabelError("JPEG truncated inside a segment length")
        (length,) = struct.unpack_from(">H", data, offset)
        if length < 2 or offset + length > len(data):
            raise LabelError(f"JPEG segment 0xFF{marker:02X} at offset {start} has a bad length {length}")
        end = offset + length
        if marker == _SOS:
            rest = data[start:]
            if data.find(_EOI, end) < 0:
                raise LabelError("JPEG truncated: no EOI marker after the scan data")
            return segments, rest
        segments.append(_Segment(marker, data[offset + 2 : end], data[start:end]))
        offset = end


def _user_comment(tiff: bytes) -> tuple[int, int] | None:
    """Return the (start, end) of the EXIF UserComment value in a TIFF block, or ``None``."""
    if len(tiff) < 8 or tiff[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"

    def entries(offset: int) -> list[tuple[int, int, int, int]]:
        if offset + 2 > len(tiff):
            return []
        (count,) = struct.unpack_from(order + "H", tiff, offset)
        result = []
        for index in range(count):
            at = offset + 2 + 12 * index
            if at + 12 > len(tiff):
                break
            tag, kind, number = struct.unpack_from(order + "HHI", tiff, at)
            result.append((tag, kind, number, at + 8))
        return result

    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    for tag, _, _, value_at in entries(ifd0):
        if tag == 0x8769:  # The Exif IFD pointer.
            (exif_ifd,) = struct.unpack_from(order + "I", tiff, value_at)
            for inner, kind, number, inner_at in entries(exif_ifd):
                if inner == 0x9286 and kind == 7:
                    start = inner_at if number <= 4 else struct.unpack_from(order + "I", tiff, inner_at)[0]
                    if start + number <= len(tiff):
                        return start, start + number
    return None


def _comment_label(tiff: bytes, span: tuple[int, int]) -> str | None:
    """Return the UserComment text if it holds an AIGC label, else ``None``."""
    raw = tiff[span[0] : span[1]]
    charset, body = raw[:8], raw[8:]
    if charset == b"UNICODE\x00":
        text = body.decode("utf-16-le" if tiff[:2] == b"II" else "utf-16-be", "replace")
    else:
        text = body.decode("utf-8", "replace")
    text = text.strip("\x00 \t\r\n")
    return text if text.startswith("{") and '"AIGC"' in text else None


def exif_labels(tiff: bytes) -> list[str]:
    """Return the AIGC label in an EXIF (TIFF) block's UserComment, if any; damaged EXIF yields ``[]``."""
    span = _user_comment(tiff)
    if span is None:
        return []
    label = _comment_label(tiff, span)
    return [] if label is None else [label]


def exif_without_label(tiff: bytes) -> bytes:
    """Return the EXIF block with an AIGC UserComment blanked to zero bytes, keeping every offset."""
    span = _user_comment(tiff)
    if span is None or _comment_label(tiff, span) is None:
        return tiff
    return tiff[: span[0]] + bytes(span[1] - span[0]) + tiff[span[1] :]


def _is_xmp(segment: _Segment) -> bool:
    return segment.marker == _APP1 and segment.body.startswith(_XMP_HEADER)


def read_labels(data: bytes) -> list[str]:
    """Return every label payload in the file's XMP APP1 segments.

    Raises:
        LabelError: the file is not a well-formed JPEG, or its XMP is malformed or hostile.
    """
    segments, _ = _segments(data)
    found: list[str] = []
    for segment in segments:
        if _is_xmp(segment):
            found.extend(_xmp.get_aigc(segment.body[len(_XMP_HEADER) :]))
        elif segment.marker == _APP1 and segment.body.startswith(_EXIF_HEADER):
            found.extend(exif_labels(segment.body[len(_EXIF_HEADER) :]))
    return found


def write_label(data: bytes, payload: str) -> bytes:
    """Return the JPEG with exactly one label, ``payload``, in an XMP APP1 segment.

    The first existing XMP segment is merged into (its other properties kept); further XMP segments are
    dropped. The new segment follows SOI and any leading APP0 and EXIF APP1 segments.

    Raises:
        LabelError: the file is malformed, ``payload`` is not an Annex E label, or the XMP packet would
            exceed :data:`MAX_XMP_SEGMENT`.
    """
    AIGCLabel.parse(payload)
    segments, rest = _segments(data)
    existing: bytes | None = None
    kept: list[_Segment] = []
    for segment in segments:
        if _is_xmp(segment):
            if existing is None:
                existing = segment.body[len(_XMP_HEADER) :]
            continue
        if segment.marker == _APP1 and segment.body.startswith(_EXIF_HEADER):
            tiff = segment.body[len(_EXIF_HEADER) :]
            cleaned = exif_without_label(tiff)
            if cleaned is not tiff:
                header = segment.raw[: len(segment.raw) - len(segment.body)]
                segment = _Segment(_APP1, _EXIF_HEADER + cleaned, header + _EXIF_HEADER + cleaned)
        kept.append(segment)
    body = _XMP_HEADER + _xmp.set_aigc(existing, payload)
    if len(body) > MAX_XMP_SEGMENT:
        raise LabelError(f"XMP segment would be {len(body)} bytes, more than {MAX_XMP_SEGMENT}")
    new = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
    position = 0
    while position < len(kept) and (
        kept[position].marker == _APP0
        or (kept[position].marker == _APP1 and kept[position].body.startswith(_EXIF_HEADER))
    ):
        position += 1
    raws = [segment.raw for segment in kept]
    return b"".join((_SOI, *raws[:position], new, *raws[position:], rest))


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over SOI, every segment except APPn and COM, and the scan data to the end.

    Labelling never changes these bytes; see :mod:`aiobligations.labels.annex_e`.

    Raises:
        LabelError: the file is not a well-formed JPEG.
    """
    segments, rest = _segments(data)
    digest = hashlib.sha256(_SOI)
    for segment in segments:
        if not (0xE0 <= segment.marker <= 0xEF or segment.marker == _COM):
            digest.update(segment.raw)
    digest.update(rest)
    return digest.digest()
