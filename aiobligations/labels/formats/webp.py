"""WebP: the label as XMP in a RIFF ``XMP `` chunk, with the ``VP8X`` XMP flag set.

A simple file (one ``VP8 `` or ``VP8L`` chunk) is converted to the extended layout: a ``VP8X`` chunk
is added whose canvas size is read from the bitstream header (and, for ``VP8L``, whose alpha flag follows
the bitstream's alpha bit). The ``XMP `` chunk goes last, as the container spec orders chunks; an existing
one is merged into and replaced. Chunks are padded to even length and the RIFF size is rewritten. The
bitstream chunks are copied byte for byte.

An ``EXIF`` chunk whose UserComment holds the wrapped JSON (the Annex B alternative) is read as a label,
and blanked in place when writing; see :mod:`aiobligations.labels.formats.jpeg`.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from aiobligations.errors import LabelError
from aiobligations.labels import xmp as _xmp
from aiobligations.labels.annex_e import AIGCLabel
from aiobligations.labels.formats.jpeg import exif_labels, exif_without_label

__all__ = ["MEDIA_TYPES", "content_digest", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("image/webp",)
"""The media types this module handles."""

_XMP_FLAG = 0x04
_ALPHA_FLAG = 0x10
_EXIF_FLAG = 0x08
_UNSIGNED = frozenset({b"VP8X", b"XMP ", b"EXIF", b"C2PA"})  # C2PA: its manifest is added after the label.
_EXIF_HEADER = b"Exif\x00\x00"


class _Chunk(NamedTuple):
    fourcc: bytes
    data: bytes
    raw: bytes  # Header, data and padding, as in the file.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with a RIFF ``WEBP`` header."""
    return bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WEBP"


def _pack(fourcc: bytes, data: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")


def _chunks(data: bytes) -> list[_Chunk]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 12 or not sniff(data):
        raise LabelError("not a WebP file: no RIFF WEBP header")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size + 8 > len(data) or riff_size < 4 or riff_size % 2:
        raise LabelError(f"WebP RIFF size {riff_size} does not fit the file of {len(data)} bytes")
    end = riff_size + 8
    chunks: list[_Chunk] = []
    offset = 12
    while offset < end:
        if offset + 8 > end:
            raise LabelError(f"WebP truncated inside a chunk header at offset {offset}")
        fourcc = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        padded = size + (size % 2)
        if padded > end - offset - 8:
            raise LabelError(f"WebP chunk {fourcc!r} at offset {offset} declares {size} bytes, beyond the RIFF end")
        stop = offset + 8 + padded
        chunks.append(_Chunk(fourcc, data[offset + 8 : offset + 8 + size], data[offset:stop]))
        offset = stop
    if not chunks or chunks[0].fourcc not in (b"VP8 ", b"VP8L", b"VP8X"):
        raise LabelError("WebP does not start with a VP8, VP8L or VP8X chunk")
    if chunks[0].fourcc == b"VP8X" and len(chunks[0].data) < 10:
        raise LabelError("WebP VP8X chunk is shorter than 10 bytes")
    return chunks


def _canvas(chunk: _Chunk) -> tuple[int, int, bool]:
    """Return width, height and whether the bitstream has alpha, from a VP8 or VP8L header."""
    data = chunk.data
    if chunk.fourcc == b"VP8 ":
        if len(data) < 10 or data[3:6] != b"\x9d\x01\x2a" or data[0] & 1:
            raise LabelError("WebP VP8 bitstream has no key frame header")
        width, height = struct.unpack_from("<HH", data, 6)
        if not width & 0x3FFF or not height & 0x3FFF:
            raise LabelError("WebP VP8 bitstream declares an empty frame")
        return width & 0x3FFF, height & 0x3FFF, False
    if len(data) < 5 or data[0] != 0x2F:
        raise LabelError("WebP VP8L bitstream has no signature")
    (bits,) = struct.unpack_from("<I", data, 1)
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)


def read_labels(data: bytes) -> list[str]:
    """Return every label payload in the file's ``XMP `` chunks.

    Raises:
        LabelError: the file is not a well-formed WebP, or its XMP is malformed or hostile.
    """
    found: list[str] = []
    for chunk in _chunks(data):
        if chunk.fourcc == b"XMP ":
            found.extend(_xmp.get_aigc(chunk.data))
        elif chunk.fourcc == b"EXIF":
            found.extend(exif_labels(chunk.data.removeprefix(_EXIF_HEADER)))
    return found


def write_label(data: bytes, payload: str) -> bytes:
    """Return the WebP with exactly one label, ``payload``, in an ``XMP `` chunk.

    Raises:
        LabelError: the file is malformed or ``payload`` is not an Annex E label.
    """
    AIGCLabel.parse(payload)
    chunks = _chunks(data)
    existing: bytes | None = None
    kept: list[_Chunk] = []
    for chunk in chunks:
        if chunk.fourcc == b"XMP ":
            if existing is None:
                existing = chunk.data
            continue
        if chunk.fourcc == b"EXIF":
            prefix = _EXIF_HEADER if chunk.data.startswith(_EXIF_HEADER) else b""
            tiff = chunk.data[len(prefix) :]
            cleaned = exif_without_label(tiff)
            if cleaned is not tiff:
                exif = prefix + cleaned
                chunk = _Chunk(b"EXIF", exif, _pack(b"EXIF", exif))
        kept.append(chunk)
    if kept[0].fourcc == b"VP8X":
        header = bytearray(kept[0].data)
        header[0] |= _XMP_FLAG
        parts = [_pack(b"VP8X", bytes(header)), *(chunk.raw for chunk in kept[1:])]
    else:
        width, height, alpha = _canvas(kept[0])
        flags = _XMP_FLAG | (_ALPHA_FLAG if alpha else 0)
        if any(chunk.fourcc == b"EXIF" for chunk in kept):
            flags |= _EXIF_FLAG
        flagged = bytes((flags, 0, 0, 0)) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        parts = [_pack(b"VP8X", flagged), *(chunk.raw for chunk in kept)]
    parts.append(_pack(b"XMP ", _xmp.set_aigc(existing, payload)))
    body = b"WEBP" + b"".join(parts)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over every chunk except ``VP8X``, ``XMP ``, ``EXIF`` and ``C2PA``, as stored.

    Labelling never changes these bytes; see :mod:`aiobligations.labels.annex_e`.

    Raises:
        LabelError: the file is not a well-formed WebP.
    """
    digest = hashlib.sha256()
    for chunk in _chunks(data):
        if chunk.fourcc not in _UNSIGNED:
            digest.update(chunk.raw)
    return digest.digest()
