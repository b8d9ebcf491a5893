"""PNG: the label as XMP in an ``iTXt`` chunk ``XML:com.adobe.xmp``, placed right after ``IHDR``.

Reading also finds the image guide's Annex B alternative, a ``tEXt`` (or ``zTXt``/``iTXt``) chunk with
keyword ``AIGC`` holding the wrapped JSON. Writing merges into the first XMP chunk, drops any further XMP
chunks and every ``AIGC`` text chunk, so exactly one label remains. Pixel chunks are copied byte for byte.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import NamedTuple

from aiobligations.errors import LabelError
from aiobligations.labels import xmp as _xmp
from aiobligations.labels.annex_e import AIGCLabel

__all__ = ["MEDIA_TYPES", "content_digest", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("image/png",)
"""The media types this module handles."""

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XMP_KEYWORD = b"XML:com.adobe.xmp"
_AIGC_KEYWORD = b"AIGC"
_MAX_CHUNK = 2**31 - 1


class _Chunk(NamedTuple):
    kind: bytes
    data: bytes
    raw: bytes  # Length, type, data and CRC, as in the file.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with the PNG signature."""
    return bytes(data[:8]) == _SIGNATURE


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _chunks(data: bytes) -> tuple[list[_Chunk], bytes]:
    """Split a PNG into chunks, checking lengths and CRCs; return them and any bytes after ``IEND``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not sniff(data):
        raise LabelError("not a PNG file: bad signature")
    chunks: list[_Chunk] = []
    offset = 8
    while True:
        if offset + 12 > len(data):
            raise LabelError(f"PNG truncated at offset {offset}: no IEND chunk")
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        if length > _MAX_CHUNK or length > len(data) - offset - 12:
            raise LabelError(f"PNG chunk at offset {offset} declares {length} bytes, beyond the end of the file")
        if not kind.isalpha() or not kind.isascii():
            raise LabelError(f"PNG chunk at offset {offset} has an invalid type {kind!r}")
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack_from(">I", data, offset + 8 + length)
        if crc != zlib.crc32(kind + body):
            raise LabelError(f"PNG chunk {kind.decode('ascii')} at offset {offset} has a bad CRC")
        end = offset + 12 + length
        chunks.append(_Chunk(kind, body, data[offset:end]))
        offset = end
        if not chunks[0].kind == b"IHDR":
            raise LabelError("PNG does not start with an IHDR chunk")
        if kind == b"IEND":
            return chunks, data[offset:]


def _text_keyword(chunk: _Chunk) -> bytes | None:
    if chunk.kind in (b"tEXt", b"zTXt", b"iTXt"):
        return chunk.data.partition(b"\x00")[0]
    return None


def _inflate(compressed: bytes) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        out = decompressor.decompress(compressed, _xmp.MAX_XMP_SIZE + 1)
    except zlib.error as exc:
        raise LabelError(f"PNG text chunk has bad compressed data: {exc}") from None
    if len(out) > _xmp.MAX_XMP_SIZE:
        raise LabelError("PNG text chunk decompresses to more than the XMP size limit")
    return out


def _text_value(chunk: _Chunk) -> bytes:
    """Return the text of a ``tEXt``, ``zTXt`` or ``iTXt`` chunk, decompressed."""
    keyword, _, rest = chunk.data.partition(b"\x00")
    if chunk.kind == b"tEXt":
        return rest
    if chunk.kind == b"zTXt":
        if rest[:1] != b"\x00":
            raise LabelError("PNG zTXt chunk has an unknown compression method")
        return _inflate(rest[1:])
    if len(rest) < 2:
        raise LabelError(f"PNG iTXt chunk {keyword!r} is truncated")
    flag, method, rest = rest[0], rest[1], rest[2:]
    parts = rest.split(b"\x00", 2)
    if len(parts) != 3:
        raise LabelError(f"PNG iTXt chunk {keyword!r} is truncated")
    text = parts[2]
    if flag == 1:
        if method != 0:
            raise LabelError("PNG iTXt chunk has an unknown compression method")
        return _inflate(text)
    if flag != 0:
        raise LabelError("PNG iTXt chunk has an invalid compression flag")
    return text


def _decode(text: bytes, latin1: bool) -> str:
    try:
        return text.decode("latin-1" if latin1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(f"PNG text chunk is not UTF-8: {exc}") from None


def read_labels(data: bytes) -> list[str]:
    """Return every label payload in the file: XMP ``TC260:AIGC`` values and ``AIGC`` text chunks.

    Raises:
        LabelError: the file is not a well-formed PNG, or its XMP is malformed or hostile.
    """
    chunks, _ = _chunks(data)
    found: list[str] = []
    for chunk in chunks:
        keyword = _text_keyword(chunk)
        if keyword == _XMP_KEYWORD and chunk.kind == b"iTXt":
            found.extend(_xmp.get_aigc(_text_value(chunk)))
        elif keyword == _AIGC_KEYWORD:
            found.append(_decode(_text_value(chunk), chunk.kind != b"iTXt"))
    return found


def write_label(data: bytes, payload: str) -> bytes:
    """Return the PNG with exactly one label, ``payload``, in an XMP ``iTXt`` chunk after ``IHDR``.

    Other XMP properties of the first XMP chunk are kept; further XMP chunks and ``AIGC`` text chunks
    are removed. Every other chunk is copied unchanged.

    Raises:
        LabelError: the file is malformed, or ``payload`` is not an Annex E label.
    """
    AIGCLabel.parse(payload)
    chunks, trailer = _chunks(data)
    existing: bytes | None = None
    kept: list[bytes] = []
    for chunk in chunks:
        keyword = _text_keyword(chunk)
        if keyword == _XMP_KEYWORD:
            if existing is None and chunk.kind == b"iTXt":
                existing = _text_value(chunk)
            continue
        if keyword == _AIGC_KEYWORD:
            continue
        kept.append(chunk.raw)
    packet = _xmp.set_aigc(existing, payload)
    itxt = _chunk(b"iTXt", _XMP_KEYWORD + b"\x00\x00\x00\x00\x00" + packet)
    return b"".join((_SIGNATURE, kept[0], itxt, *kept[1:], trailer))


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over the critical chunks (``IHDR``, ``PLTE``, ``IDAT``, ``IEND``), as stored.

    Labelling never changes these bytes, so the digest is the same before and after
    :func:`write_label`; see :mod:`aiobligations.labels.annex_e` for its use in ``ReservedCode1``.

    Raises:
        LabelError: the file is not a well-formed PNG.
    """
    chunks, _ = _chunks(data)
    digest = hashlib.sha256()
    for chunk in chunks:
        if chunk.kind[:1].isupper():
            digest.update(chunk.raw)
    return digest.digest()
