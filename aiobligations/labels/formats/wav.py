"""GB 45438 implicit labels in WAV files: a RIFF chunk with ID ``AIGC`` holding the JSON payload.

The label is a top-level chunk appended at the end of the ``RIFF``/``WAVE`` form (TC260-PG-202510A).
Every other chunk, the ``data`` chunk included, is copied byte for byte; only the RIFF size changes.
Readers also look for an ``AIGC`` subchunk inside ``LIST``/``INFO``, which some tools write, and
:func:`write_label` removes those too so that exactly one label remains. RF64 and big-endian RIFX
files are refused with :class:`~aiobligations.errors.LabelError`.

The audible cue (:func:`aiobligations.labels.explicit.add_audio_cue`) reads the sample format with
:func:`sample_format` and writes its samples with :func:`replace_samples`, which likewise keeps every
other chunk (``LIST``/``INFO``, ``bext``, ``cue ``, ``smpl``, unknown ones) byte for byte and in order;
only the ``data`` chunk, the frame count in ``fact`` and the RIFF size change, and, when the cue goes
before the audio, the positions other chunks hold move with the audio they point at: each cue point's
``dwPosition`` and ``dwSampleOffset`` (and a non-zero ``dwBlockStart``) in ``cue ``, each loop's start
and end in ``smpl``, and ``bext``'s ``TimeReference`` (the time of the first sample, now the cue's, so
earlier by the cue's length; modulo a day).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from aiobligations.errors import LabelError

__all__ = ["MEDIA_TYPES", "SampleFormat", "content_digest", "leading_channel", "read_labels", "replace_samples",
           "sample_data", "sample_format", "sniff", "write_label"]

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


# ---------------------------------------------------------------------------------------------
# Sample format and sample data, for the audible cue

_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_GUID_TAIL = b"\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"  # KSDATAFORMAT_SUBTYPE_* after the tag.
_TAG_NAMES = {
    0x0002: "Microsoft ADPCM", 0x0006: "A-law", 0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10",
    0x0050: "MPEG", 0x0055: "MPEG Layer III", 0x0092: "Dolby AC-3 SPDIF", 0x0161: "Windows Media Audio",
    0x2000: "AC-3", 0xF1AC: "FLAC",
}
_MAX_CHANNELS = 64  # Bounds the cue's size (at most 64 x 8 bytes x 768 kHz x 1.28 s, 503 MB, at default timing).
_SUPPORTED = "PCM 8/16/24/32-bit and IEEE float 32/64-bit (plain or WAVE_FORMAT_EXTENSIBLE)"


@dataclass(frozen=True)
class SampleFormat:
    """The sample format of a WAV's ``data`` chunk, as :func:`sample_format` reads it from ``fmt ``."""

    rate: int
    channels: int
    width: int
    """Bytes per sample (the container): 1, 2, 3 or 4 for PCM, 4 or 8 for float."""
    kind: str
    """``"pcm"`` (8-bit unsigned, wider signed) or ``"float"`` (IEEE 754, little-endian)."""
    valid_bits: int
    """Significant bits of each PCM sample (WAVE_FORMAT_EXTENSIBLE's ``wValidBitsPerSample``)."""
    extensible: bool

    @property
    def block_align(self) -> int:
        """Bytes per frame: one sample of each channel."""
        return self.width * self.channels


def _tag_name(tag: int) -> str:
    name = _TAG_NAMES.get(tag)
    return f"format tag 0x{tag:04X}" + (f" ({name})" if name else "")


def sample_format(data: bytes) -> SampleFormat:
    """The sample format of a WAV whose samples :func:`replace_samples` can rewrite.

    Raises:
        LabelError: the file is not a WAV file, is malformed, or its samples are not
            PCM 8/16/24/32-bit or IEEE float 32/64-bit (plain or WAVE_FORMAT_EXTENSIBLE);
            the message says which format it is.
    """
    buf = _check_bytes(data)
    fmt = next((buf[start:end] for cid, start, end, _ in _chunks(buf, 12, _riff_end(buf)) if cid == b"fmt "), None)
    if fmt is None:
        raise LabelError("malformed WAV: no 'fmt ' chunk.")
    if not any(cid == b"data" for cid, *_ in _chunks(buf, 12, _riff_end(buf))):
        raise LabelError("malformed WAV: no 'data' chunk.")
    if len(fmt) < 16:
        raise LabelError(f"malformed WAV: the 'fmt ' chunk has {len(fmt)} bytes, fewer than 16.")
    tag, channels, rate, _, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    extensible = tag == _EXTENSIBLE
    valid = bits
    if extensible:
        if len(fmt) < 40:
            raise LabelError(f"malformed WAV: a WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk of {len(fmt)} bytes, not 40.")
        valid = struct.unpack("<H", fmt[18:20])[0] or bits
        if fmt[28:40] != _GUID_TAIL:
            raise LabelError(f"no audio cue: WAVE_FORMAT_EXTENSIBLE with sub-format {fmt[24:40].hex()} "
                             f"is not supported; the cue is written into {_SUPPORTED}.")
        tag = struct.unpack("<I", fmt[24:28])[0]
    if tag not in (_PCM, _FLOAT):
        raise LabelError(f"no audio cue: {'WAVE_FORMAT_EXTENSIBLE with ' if extensible else ''}"
                         f"{_tag_name(tag)} is not supported; the cue is written into {_SUPPORTED}.")
    kind = "pcm" if tag == _PCM else "float"
    if not 1 <= channels <= _MAX_CHANNELS or not 1000 <= rate <= 768_000:
        raise LabelError(f"no audio cue: {channels} channel(s) at {rate} Hz; the cue needs 1 to {_MAX_CHANNELS} "
                         "channels and a rate from 1000 to 768000 Hz.")
    width = block_align // channels
    widths = (1, 2, 3, 4) if kind == "pcm" else (4, 8)
    if block_align != width * channels or width not in widths or not 0 < valid <= bits <= 8 * width \
            or (kind == "float" and valid != 8 * width):
        what = "PCM" if kind == "pcm" else "IEEE float"
        raise LabelError(f"no audio cue: {bits}-bit {what} ({valid} valid bits) in {block_align}-byte frames of "
                         f"{channels} channel(s) is not supported; the cue is written into {_SUPPORTED}.")
    return SampleFormat(rate, channels, width, kind, valid, extensible)


def replace_samples(data: bytes, samples: bytes, frames: int, *, lead: int = 0) -> bytes:
    """Return the file with ``samples`` (``frames`` frames) as the content of its first ``data`` chunk.

    Every other chunk is copied byte for byte and in order, except that a top-level ``fact``
    chunk's sample count (its first 4 bytes) becomes ``frames``; the RIFF size is updated and bytes
    after the RIFF form are kept after it. When ``lead`` frames were put before the original
    samples, the positions in ``cue ``, ``smpl`` and ``bext`` move by as much (see the module's
    description), so that they still point at the same audio.

    Raises:
        LabelError: the file is not a WAV file, is malformed, or the result would not fit RIFF's
            32-bit sizes.
    """
    buf = _check_bytes(data)
    riff_end = _riff_end(buf)
    parts: list[bytes] = [buf[:12]]
    replaced = False
    for chunk_id, start, end, padded_end in _chunks(buf, 12, riff_end):
        if chunk_id == b"data" and not replaced:
            if len(samples) > _MAX_CHUNK:
                raise LabelError(f"the WAV's sample data would be {len(samples)} bytes, past RIFF's 4 GiB limit.")
            parts.append(b"data" + struct.pack("<I", len(samples)) + samples + (b"\x00" if len(samples) % 2 else b""))
            replaced = True
            continue
        chunk = buf[start - 8 : padded_end]
        if chunk_id == b"fact" and end - start >= 4:
            chunk = chunk[:8] + struct.pack("<I", min(frames, _MAX_CHUNK)) + chunk[12:]
        elif lead and chunk_id in _POSITIONS:
            chunk = _POSITIONS[chunk_id](bytearray(chunk), end - start, lead, buf)
        if (end - start) % 2 and padded_end == end:
            chunk += b"\x00"  # The last chunk of some files lacks its pad byte.
        parts.append(chunk)
    if not replaced:
        raise LabelError("malformed WAV: no 'data' chunk.")
    form = b"".join(parts)
    if len(form) - 8 > _MAX_CHUNK:
        raise LabelError(f"the WAV would be {len(form)} bytes, past RIFF's 4 GiB limit.")
    return b"RIFF" + struct.pack("<I", len(form) - 8) + form[8:] + buf[riff_end:]


def _moved(value: int, lead: int) -> int:
    return min(value + lead, _MAX_CHUNK)


def _move_cue_points(chunk: bytearray, size: int, lead: int, buf: bytes) -> bytes:
    """``cue ``: a count, then 24-byte points (name, position, chunk ID, chunk start, block start, offset)."""
    count = struct.unpack_from("<I", chunk, 8)[0] if size >= 4 else 0
    align = sample_format(buf).block_align
    for point in range(min(count, (size - 4) // 24)):
        at = 12 + 24 * point
        _, position, fcc, _, block, offset = struct.unpack_from("<II4sIII", chunk, at)
        if fcc != b"data":
            continue  # A position in a playlist's silence or another chunk: not in the samples we moved.
        block = min(block + lead * align, _MAX_CHUNK) if block else 0
        struct.pack_into("<I", chunk, at + 4, _moved(position, lead))
        struct.pack_into("<II", chunk, at + 16, block, _moved(offset, lead))
    return bytes(chunk)


def _move_loops(chunk: bytearray, size: int, lead: int, buf: bytes) -> bytes:
    """``smpl``: a 36-byte header ending with the loop count, then 24-byte loops (id, type, start, end, …)."""
    count = struct.unpack_from("<I", chunk, 8 + 28)[0] if size >= 36 else 0
    for loop in range(min(count, (size - 36) // 24)):
        at = 8 + 36 + 24 * loop
        first, last = struct.unpack_from("<II", chunk, at + 8)
        struct.pack_into("<II", chunk, at + 8, _moved(first, lead), _moved(last, lead))
    return bytes(chunk)


def _move_time_reference(chunk: bytearray, size: int, lead: int, buf: bytes) -> bytes:
    """``bext``: TimeReference (samples since midnight, 64-bit, at byte 338) of the first sample."""
    if size < 346:
        return bytes(chunk)
    day = 86400 * sample_format(buf).rate
    reference = struct.unpack_from("<Q", chunk, 8 + 338)[0]
    struct.pack_into("<Q", chunk, 8 + 338, (reference - lead) % day)
    return bytes(chunk)


_POSITIONS = {b"cue ": _move_cue_points, b"smpl": _move_loops, b"bext": _move_time_reference}


def leading_channel(data: bytes, seconds: float) -> tuple[SampleFormat, Any]:
    """The sample format and the first channel's first ``seconds`` of samples (float64 in [-1, 1], numpy).

    Only those frames are read (NaN and infinite float samples become 0), so a long or wide file
    costs no more than its opening.

    Raises:
        LabelError: as :func:`sample_format`, or the file has no ``data`` chunk.
    """
    import numpy as np

    buf = _check_bytes(data)
    fmt = sample_format(buf)
    span = next(((start, end) for cid, start, end, _ in _chunks(buf, 12, _riff_end(buf)) if cid == b"data"))
    frames = min((span[1] - span[0]) // fmt.block_align, int(fmt.rate * seconds))
    raw = np.frombuffer(memoryview(buf)[span[0] : span[0] + frames * fmt.block_align], np.uint8)
    first = raw.reshape(frames, fmt.block_align)[:, : fmt.width]
    if fmt.kind == "float":
        values = np.ascontiguousarray(first).view("<f4" if fmt.width == 4 else "<f8")[:, 0].astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    elif fmt.width == 1:
        values = (first[:, 0].astype(np.float64) - 128) / 128
    else:
        ints = np.zeros(frames, np.int64)
        for index in range(fmt.width):
            ints |= first[:, index].astype(np.int64) << (8 * index)
        top = 1 << (8 * fmt.width - 1)
        values = np.where(ints >= top, ints - 2 * top, ints).astype(np.float64) / top
    return fmt, np.clip(values, -1.0, 1.0)


def sample_data(data: bytes) -> bytes:
    """The content of the first ``data`` chunk.

    Raises:
        LabelError: the file is not a WAV file, is malformed, or has no ``data`` chunk.
    """
    buf = _check_bytes(data)
    for chunk_id, start, end, _ in _chunks(buf, 12, _riff_end(buf)):
        if chunk_id == b"data":
            return buf[start:end]
    raise LabelError("malformed WAV: no 'data' chunk.")
