"""GB 45438 implicit labels in WAV files: a RIFF chunk with ID ``AIGC`` holding the JSON payload.

The label is a top-level chunk appended at the end of the ``RIFF``/``WAVE`` form (TC260-PG-202510A).
Every other chunk, the ``data`` chunk included, is copied byte for byte; only the RIFF size changes.
Readers also look for an ``AIGC`` subchunk inside ``LIST``/``INFO``, which some tools write, and
:func:`write_label` removes those too so that exactly one label remains. RF64 and big-endian RIFX
files are refused with :class:`~aiobligations.errors.LabelError`.
"""

from __future__ import annotations

import hashlib
import struct

from aiobligations.errors import LabelError

__all__ = ["MEDIA_TYPES", "content_digest", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("audio/wav", "audio/wave", "audio/x-wav", "audio/vnd.wave")
"""The media types this module handles."""

_LABEL_ID = b"AIGC"
_MAX_CHUNK = 0xFFFFFFFF


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts like a RIFF/WAVE file (RF64 included, though it is refused)."""
    head = bytes(data[:12])
    return len(head) == 12 and head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE"


def read_labels(data: bytes) -> list[str]:
    """Return every ``AIGC`` payload in the file, top-level chunks first, in file order.

    Raises:
        LabelError: The file is not a WAV file, or its chunk structure is malformed.
    """
    buf = _check_bytes(data)
    labels: list[str] = []
    for chunk_id, start, end, _ in _chunks(buf, 12, _riff_end(buf)):
        if chunk_id == _LABEL_ID:
            labels.append(_decode(buf[start:end]))
        elif chunk_id == b"LIST" and end - start >= 4 and buf[start : start + 4] == b"INFO":
            for sub_id, sub_start, sub_end, _ in _chunks(buf, start + 4, end):
                if sub_id == _LABEL_ID:
                    labels.append(_decode(buf[sub_start:sub_end]))
    return labels


def write_label(data: bytes, payload: str) -> bytes:
    """Return the file with exactly one ``AIGC`` chunk holding ``payload``.

    Existing ``AIGC`` chunks (top level or in ``LIST``/``INFO``) are removed, and a new chunk is
    appended at the end of the RIFF form. Bytes after the RIFF form, if any, are kept after it.

    Raises:
        TypeError: ``data`` is not bytes or ``payload`` is not a string.
        LabelError: The file is not a WAV file, its chunk structure is malformed, or the result
            would not fit RIFF's 32-bit sizes.
    """
    buf = _check_bytes(data)
    if not isinstance(payload, str):
        raise TypeError(f"payload must be str, got {type(payload).__name__}.")
    riff_end = _riff_end(buf)
    parts: list[bytes] = [buf[:12]]
    for chunk_id, start, end, padded_end in _chunks(buf, 12, riff_end):
        if chunk_id == _LABEL_ID:
            continue
        if chunk_id == b"LIST" and end - start >= 4 and buf[start : start + 4] == b"INFO":
            parts.append(_without_label(buf, start, end, padded_end))
            continue
        chunk = buf[start - 8 : padded_end]
        if (end - start) % 2 and padded_end == end:
            # The last chunk of some files lacks its pad byte; add it so the label stays aligned.
            chunk += b"\x00"
        parts.append(chunk)
    body = payload.encode("utf-8")
    parts.append(
        _LABEL_ID + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")
    )
    form = b"".join(parts)
    if len(form) - 8 > _MAX_CHUNK:
        raise LabelError(f"the labelled WAV would be {len(form)} bytes, past RIFF's 4 GiB limit.")
    return b"RIFF" + struct.pack("<I", len(form) - 8) + form[8:] + buf[riff_end:]


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over the ``fmt `` and ``data`` chunks (ID, size and data), in file order.

    Labelling never changes these bytes, so the digest is the same before and after
    :func:`write_label`; see :mod:`aiobligations.labels.annex_e` for its use in ``ReservedCode1``.

    Raises:
        LabelError: The file is not a WAV file, or its chunk structure is malformed.
    """
    buf = _check_bytes(data)
    digest = hashlib.sha256()
    for chunk_id, start, end, _ in _chunks(buf, 12, _riff_end(buf)):
        if chunk_id in (b"fmt ", b"data"):
            digest.update(buf[start - 8 : end])
    return digest.digest()


def _check_bytes(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}.")
    return bytes(data)


def _riff_end(buf: bytes) -> int:
    """Check the RIFF header and return where the RIFF form ends."""
    if len(buf) < 12:
        raise LabelError(f"not a WAV file: {len(buf)} bytes is shorter than a RIFF header.")
    if buf[:4] == b"RF64":
        raise LabelError("RF64 (64-bit WAV) files are not supported; convert to RIFF WAV first.")
    if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise LabelError(f"not a RIFF/WAVE file: header {buf[:4]!r}…{buf[8:12]!r}.")
    end = 8 + int(struct.unpack("<I", buf[4:8])[0])
    if end > len(buf):
        raise LabelError(f"truncated WAV: the RIFF size says {end} bytes, the file has {len(buf)}.")
    return end


def _chunks(buf: bytes, offset: int, limit: int) -> list[tuple[bytes, int, int, int]]:
    """Return ``(id, data_start, data_end, padded_end)`` for each chunk in ``buf[offset:limit]``."""
    chunks = []
    while offset < limit:
        if limit - offset < 8:
            raise LabelError(f"malformed WAV: {limit - offset} stray bytes at offset {offset}.")
        chunk_id = buf[offset : offset + 4]
        size = struct.unpack("<I", buf[offset + 4 : offset + 8])[0]
        start = offset + 8
        end = start + size
        if end > limit:
            raise LabelError(
                f"malformed WAV: chunk {chunk_id!r} at offset {offset} has size {size}, "
                f"past the end of its parent at {limit}."
            )
        # Chunks are word-aligned; tolerate a missing pad byte only on the last chunk.
        padded_end = min(end + (size % 2), limit)
        chunks.append((chunk_id, start, end, padded_end))
        offset = padded_end
    return chunks


def _without_label(buf: bytes, start: int, end: int, padded_end: int) -> bytes:
    """Return a ``LIST``/``INFO`` chunk with its ``AIGC`` subchunks removed (unchanged if none)."""
    subs = _chunks(buf, start + 4, end)
    if not any(sub_id == _LABEL_ID for sub_id, *_ in subs):
        chunk = buf[start - 8 : padded_end]
        return chunk + b"\x00" if (end - start) % 2 and padded_end == end else chunk
    kept = []
    for sub_id, sub_start, sub_end, sub_padded in subs:
        if sub_id != _LABEL_ID:
            sub = buf[sub_start - 8 : sub_padded]
            kept.append(
                sub + b"\x00" if (sub_end - sub_start) % 2 and sub_padded == sub_end else sub
            )
    content = b"INFO" + b"".join(kept)
    return b"LIST" + struct.pack("<I", len(content)) + content


def _decode(raw: bytes) -> str:
    # INFO strings are usually NUL-terminated; the terminator is not part of the payload.
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(f"the AIGC chunk is not valid UTF-8: {exc}.") from None
