"""GB 45438 implicit labels in MP3 files: an ID3v2 ``TXXX`` frame with description ``AIGC``.

The label lives in the ID3v2 tag at the start of the file (TC260-PG-202510A). :func:`write_label`
keeps the tag's version so that every other frame is copied byte for byte:

- in an ID3v2.4 tag the frame is written with text encoding 3 (UTF-8);
- in an ID3v2.3 tag, which has no UTF-8, it is written with encoding 1 (UTF-16 with a BOM);
- with no tag, a new ID3v2.4 tag holding only the label is prepended.

The MPEG audio frames after the tag are never touched. Tags that use unsynchronisation, an extended
header or ID3v2.2 are refused with :class:`~aiobligations.errors.LabelError`, as are ``TXXX`` frames
that are compressed, encrypted or unsynchronised.
"""

from __future__ import annotations

import array
import hashlib
import re
import struct

from aiobligations.errors import LabelError

__all__ = ["MEDIA_TYPES", "content_digest", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("audio/mpeg", "audio/mp3", "audio/x-mp3")
"""The media types this module handles."""

_DESCRIPTION = "AIGC"
_MAX_TAG = (1 << 28) - 1  # The largest size a 4-byte synchsafe integer holds.
_FRAME_ID = re.compile(rb"[A-Z0-9]{4}\Z")
# Frame format flags that change how the frame body is stored, per version.
_FORMAT_FLAGS = {3: 0x00E0, 4: 0x004F}
_LONGEST_DESCRIPTION = 64  # Bytes: longer descriptions are not ours, so they are never decoded.
_MAX_LABEL = 1 << 20  # An AIGC payload is a few hundred bytes; a larger one is refused, not decoded.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with an ID3v2 tag or an MPEG audio frame header."""
    head = bytes(data[:4])
    return head[:3] == b"ID3" or _is_frame_header(head)


def read_labels(data: bytes) -> list[str]:
    """Return the value of every ``TXXX`` frame whose description is exactly ``AIGC``.

    Raises:
        LabelError: The data is not an MP3 file, or its ID3v2 tag is malformed or unsupported.
    """
    buf = _check_bytes(data)
    if buf[:3] != b"ID3":
        if not _is_frame_header(buf[:4]):
            raise LabelError("not an MP3 file: no ID3v2 tag and no MPEG frame header at the start.")
        return []
    tag = _parse_tag(buf)
    labels = []
    for frame_id, flags, start, end in tag.frames:
        if frame_id == b"TXXX":
            description, value = _parse_txxx(buf, start, end, flags, tag.version)
            if description == _DESCRIPTION and value is not None:
                labels.append(value)
    return labels


def write_label(data: bytes, payload: str) -> bytes:
    """Return the file with exactly one ``TXXX:AIGC`` frame holding ``payload``.

    Raises:
        TypeError: ``data`` is not bytes or ``payload`` is not a string.
        LabelError: The data is not an MP3 file, or its ID3v2 tag is malformed or unsupported.
    """
    buf = _check_bytes(data)
    if not isinstance(payload, str):
        raise TypeError(f"payload must be str, got {type(payload).__name__}.")
    if buf[:3] != b"ID3":
        if not _is_frame_header(buf[:4]):
            raise LabelError("not an MP3 file: no ID3v2 tag and no MPEG frame header at the start.")
        frame = _frame(4, _txxx_body(payload, 4))
        return _header(4, 0, len(frame)) + frame + buf
    tag = _parse_tag(buf)
    # Rebuild from the original bytes of the frames we keep, so they stay byte-identical; views, not
    # copies, so that the output is the only copy made of a large tag.
    view = memoryview(buf)
    frames: list[bytes | memoryview] = [
        view[start:end]
        for (frame_id, flags, body_start, body_end), (start, end) in zip(tag.frames, tag.frame_spans)
        if not (frame_id == b"TXXX"
                and _parse_txxx(buf, body_start, body_end, flags, tag.version)[0] == _DESCRIPTION)
    ]
    frames.append(_frame(tag.version, _txxx_body(payload, tag.version)))
    size = sum(len(frame) for frame in frames) + tag.padding
    if size > _MAX_TAG:
        raise LabelError(
            f"the labelled ID3v2 tag would be {size} bytes, past the 256 MiB limit."
        )
    footer = b""
    if tag.flags & 0x10:
        footer = b"3DI" + _header(tag.version, tag.flags, size)[3:]
    return b"".join([_header(tag.version, tag.flags, size), *frames, b"\x00" * tag.padding, footer,
                     view[tag.end :]])


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over the audio: the bytes after the ID3v2 tag, less a trailing ID3v1 tag.

    Labelling never changes these bytes, so the digest is the same before and after
    :func:`write_label`; see :mod:`aiobligations.labels.annex_e` for its use in ``ReservedCode1``.

    Raises:
        LabelError: The data is not an MP3 file, or its ID3v2 tag is malformed or unsupported.
    """
    buf = _check_bytes(data)
    audio: bytes | memoryview
    if buf[:3] == b"ID3":
        audio = memoryview(buf)[_parse_tag(buf).end :]  # Not a copy of the audio.
    elif _is_frame_header(buf[:4]):
        audio = buf
    else:
        raise LabelError("not an MP3 file: no ID3v2 tag and no MPEG frame header at the start.")
    if len(audio) >= 128 and audio[-128:-125] == b"TAG":
        audio = audio[:-128]
    return hashlib.sha256(audio).digest()


class _Tag:
    """The parts of an ID3v2 tag that write_label and read_labels need."""

    __slots__ = ("end", "flags", "frame_spans", "frames", "padding", "version")

    def __init__(self, version: int, flags: int, end: int) -> None:
        self.version = version
        self.flags = flags
        self.end = end
        self.frames: list[tuple[bytes, int, int, int]] = []
        """(frame ID, flags, body start, body end): offsets, not copies, since a frame may be huge."""
        self.frame_spans: list[tuple[int, int]] = []
        self.padding = 0


def _check_bytes(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}.")
    return bytes(data)


def _is_frame_header(head: bytes) -> bool:
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0x3
    layer = (head[1] >> 1) & 0x3
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x3
    return version != 1 and layer != 0 and bitrate != 0xF and rate != 3


def _synchsafe(raw: bytes, what: str) -> int:
    if any(b & 0x80 for b in raw):
        raise LabelError(f"malformed ID3v2 tag: the {what} {raw.hex()} is not a synchsafe integer.")
    return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]


def _to_synchsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def _header(version: int, flags: int, size: int) -> bytes:
    return b"ID3" + bytes((version, 0, flags)) + _to_synchsafe(size)


def _parse_tag(buf: bytes) -> _Tag:
    if len(buf) < 10:
        raise LabelError(f"truncated ID3v2 tag: {len(buf)} bytes is shorter than its header.")
    version, revision, flags = buf[3], buf[4], buf[5]
    if version == 2:
        raise LabelError("ID3v2.2 tags are not supported; convert the tag to ID3v2.4.")
    if version not in (3, 4) or revision == 0xFF:
        raise LabelError(f"unsupported ID3v2 version 2.{version}.{revision}.")
    allowed = 0xF0 if version == 4 else 0xE0
    if flags & ~allowed:
        raise LabelError(f"malformed ID3v2.{version} tag: unknown header flags 0x{flags:02x}.")
    if flags & 0x80:
        raise LabelError("ID3v2 tags with unsynchronisation are not supported.")
    if flags & 0x40:
        raise LabelError("ID3v2 tags with an extended header are not supported.")
    size = _synchsafe(buf[6:10], "tag size")
    end = 10 + size + (10 if flags & 0x10 else 0)
    if end > len(buf):
        raise LabelError(f"truncated ID3v2 tag: it says {end} bytes, the file has {len(buf)}.")
    tag = _Tag(version, flags, end)
    offset, limit = 10, 10 + size
    while offset < limit:
        if buf[offset] == 0:
            # Padding: the rest of the tag must be zero bytes.
            if any(buf[offset:limit]):
                raise LabelError(f"malformed ID3v2 tag: non-zero bytes in the padding at {offset}.")
            tag.padding = limit - offset
            break
        if limit - offset < 10:
            raise LabelError(f"malformed ID3v2 tag: a truncated frame header at offset {offset}.")
        frame_id = buf[offset : offset + 4]
        if not _FRAME_ID.match(frame_id):
            raise LabelError(
                f"malformed ID3v2 tag: invalid frame ID {frame_id!r} at offset {offset}."
            )
        raw_size = buf[offset + 4 : offset + 8]
        frame_size = (
            _synchsafe(raw_size, "frame size") if version == 4 else struct.unpack(">I", raw_size)[0]
        )
        frame_flags = struct.unpack(">H", buf[offset + 8 : offset + 10])[0]
        start, frame_end = offset + 10, offset + 10 + frame_size
        if frame_end > limit:
            raise LabelError(
                f"malformed ID3v2 tag: frame {frame_id.decode()} at offset {offset} has size "
                f"{frame_size}, past the end of the tag."
            )
        tag.frames.append((frame_id, frame_flags, start, frame_end))
        tag.frame_spans.append((offset, frame_end))
        offset = frame_end
    return tag


def _parse_txxx(buf: bytes, start: int, end: int, flags: int, version: int, *,
                value: bool = True) -> tuple[str | None, str | None]:
    """The description and value of the ``TXXX`` frame whose body is ``buf[start:end]``.

    Nothing is copied but the description, when it is short enough to be ours (``None`` otherwise),
    and the value, only for an ``AIGC`` frame and with ``value``: an unrelated frame can be huge.
    """
    if flags & _FORMAT_FLAGS[version]:
        raise LabelError(
            f"compressed, encrypted or unsynchronised TXXX frames are not supported (flags 0x{flags:04x})."
        )
    if start >= end:
        raise LabelError("malformed TXXX frame: it is empty.")
    encoding, text = buf[start], start + 1
    if encoding in (0, 3):
        terminator = buf.find(b"\x00", text, end)
        if terminator < 0:
            raise LabelError("malformed TXXX frame: the description has no terminator.")
        value_start = terminator + 1
        codec = "latin-1" if encoding == 0 else "utf-8"
    elif encoding in (1, 2):
        terminator = _utf16_zero(buf, text, end)
        if terminator < 0:
            raise LabelError("malformed TXXX frame: the description has no terminator.")
        value_start = terminator + 2
        codec = "utf-16" if encoding == 1 else "utf-16-be"
    else:
        raise LabelError(f"malformed TXXX frame: unknown text encoding {encoding}.")
    description = None
    if terminator - text <= _LONGEST_DESCRIPTION:
        try:
            description = buf[text:terminator].decode(codec)
        except UnicodeDecodeError as exc:
            raise LabelError(f"malformed TXXX frame: the text is not valid {codec}: {exc}.") from None
    if not value or description != _DESCRIPTION:
        return description, None
    if end - value_start > _MAX_LABEL:
        raise LabelError(f"malformed TXXX:AIGC frame: a {end - value_start}-byte label, past the "
                         f"{_MAX_LABEL}-byte limit.")
    raw = buf[value_start:end]
    width = 1 if encoding in (0, 3) else 2
    if len(raw) % width == 0:
        nulls = len(raw) - len(raw.rstrip(b"\x00"))
        raw = raw[: len(raw) - nulls + nulls % width]  # Whole terminators only.
    try:
        return description, raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise LabelError(f"malformed TXXX frame: the text is not valid {codec}: {exc}.") from None


def _utf16_zero(buf: bytes, start: int, end: int) -> int:
    """The offset of the first 16-bit zero in ``buf[start:end]`` (aligned at ``start``), or -1.

    Searched in C a window at a time (a scan in Python took seconds on a 256 MiB frame, and a copy of
    the whole frame cost as much memory as the file).
    """
    view = memoryview(buf)
    window = 1 << 16
    for at in range(start, end - 1, window):
        units = array.array("H")
        units.frombytes(view[at : min(at + window, end - (end - start) % 2)])
        try:
            return at + 2 * units.index(0)
        except ValueError:
            continue
    return -1


def _txxx_body(payload: str, version: int) -> bytes:
    if version == 4:
        return b"\x03" + _DESCRIPTION.encode() + b"\x00" + payload.encode("utf-8")
    bom = b"\xff\xfe"
    return (
        b"\x01"
        + bom
        + _DESCRIPTION.encode("utf-16-le")
        + b"\x00\x00"
        + bom
        + payload.encode("utf-16-le")
    )


def _frame(version: int, body: bytes) -> bytes:
    if len(body) > _MAX_TAG:
        raise LabelError(f"the label is too large for an ID3v2 frame: {len(body)} bytes.")
    size = _to_synchsafe(len(body)) if version == 4 else struct.pack(">I", len(body))
    return b"TXXX" + size + b"\x00\x00" + body
