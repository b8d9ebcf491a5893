"""GIF: the label as XMP in an Application Extension ``XMP Data`` / ``XMP``, right after the global colour table.

The XMP specification (part 3, §1.1.2) stores the UTF-8 packet *raw* after the 11-byte application
identifier, followed by a 258-byte "magic trailer" (``0x01``, ``0xFF`` … ``0x00``, then the block
terminator ``0x00``). A GIF reader that walks the packet as data sub-blocks lands inside the trailer's
descending ramp and always ends at its terminator, so the image stays readable. Reading also accepts an
``XMP Data`` block written as ordinary sub-blocks.

Writing merges into the first XMP block, drops every other ``XMP Data`` block and inserts the new one
after the Logical Screen Descriptor and global colour table. All other blocks (image descriptors, LZW
data, other extensions) are copied byte for byte. A ``GIF87a`` header is raised to ``GIF89a``, the
version that defines extensions.
"""

from __future__ import annotations

from typing import NamedTuple

from aiobligations.errors import LabelError
from aiobligations.labels import xmp as _xmp
from aiobligations.labels.annex_e import AIGCLabel

__all__ = ["MEDIA_TYPES", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("image/gif",)
"""The media types this module handles."""

_APP_ID = b"XMP DataXMP"
MAGIC_TRAILER = b"\x01" + bytes(range(255, -1, -1)) + b"\x00"
"""The XMP-in-GIF magic trailer: 258 bytes, ending with the block terminator."""


class _Block(NamedTuple):
    start: int
    end: int
    xmp: (
        bytes | None
    )  # The XMP packet when this is an ``XMP Data`` application extension.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with a GIF87a or GIF89a signature."""
    return bytes(data[:6]) in (b"GIF87a", b"GIF89a")


def _sub_blocks(data: bytes, offset: int) -> int:
    """Skip data sub-blocks from ``offset``; return the offset after the terminator."""
    size = len(data)
    while True:
        if offset >= size:
            raise LabelError(
                f"GIF truncated at offset {offset}: data sub-blocks have no terminator"
            )
        length = data[offset]
        offset += 1
        if length == 0:
            return offset
        offset += length


def _parse(data: bytes) -> tuple[int, list[_Block], int]:
    """Return the end of the screen descriptor and colour table, the blocks, and the offset after ``0x3B``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not sniff(data):
        raise LabelError("not a GIF file: bad signature")
    if len(data) < 13:
        raise LabelError("GIF truncated: no Logical Screen Descriptor")
    packed = data[10]
    head = 13
    if packed & 0x80:
        head += 3 * (2 ** ((packed & 0x07) + 1))
    if head > len(data):
        raise LabelError("GIF truncated inside the global colour table")
    blocks: list[_Block] = []
    offset = head
    size = len(data)
    while True:
        if offset >= size:
            raise LabelError(f"GIF truncated at offset {offset}: no trailer (0x3B)")
        introducer = data[offset]
        if introducer == 0x3B:
            return head, blocks, offset + 1
        start = offset
        if introducer == 0x21:
            if offset + 2 > size:
                raise LabelError(f"GIF extension at offset {offset} is truncated")
            label = data[offset + 1]
            xmp: bytes | None = None
            if (
                label == 0xFF
                and data[offset + 2 : offset + 3] == b"\x0b"
                and data[offset + 3 : offset + 14] == _APP_ID
            ):
                body = offset + 14
                end = _sub_blocks(data, body)
                if (
                    end - body >= len(MAGIC_TRAILER)
                    and data[end - len(MAGIC_TRAILER) : end] == MAGIC_TRAILER
                ):
                    xmp = data[body : end - len(MAGIC_TRAILER)]
                else:
                    xmp = _join_sub_blocks(data, body, end)
            else:
                end = _sub_blocks(data, offset + 2)
            blocks.append(_Block(start, end, xmp))
            offset = end
        elif introducer == 0x2C:
            if offset + 10 > size:
                raise LabelError(
                    f"GIF image descriptor at offset {offset} is truncated"
                )
            local = data[offset + 9]
            offset += 10
            if local & 0x80:
                offset += 3 * (2 ** ((local & 0x07) + 1))
            offset += 1  # LZW minimum code size.
            if offset > size:
                raise LabelError(f"GIF image at offset {start} is truncated")
            end = _sub_blocks(data, offset)
            blocks.append(_Block(start, end, None))
            offset = end
        else:
            raise LabelError(
                f"GIF has an unknown block introducer 0x{introducer:02X} at offset {offset}"
            )


def _join_sub_blocks(data: bytes, offset: int, end: int) -> bytes:
    parts: list[bytes] = []
    total = 0
    while offset < end - 1:
        length = data[offset]
        parts.append(data[offset + 1 : offset + 1 + length])
        total += length
        if total > _xmp.MAX_XMP_SIZE:
            raise LabelError("GIF XMP block is larger than the XMP size limit")
        offset += 1 + length
    return b"".join(parts)


def read_labels(data: bytes) -> list[str]:
    """Return every ``TC260:AIGC`` value found in the GIF's ``XMP Data`` application extensions.

    Raises:
        LabelError: the file is not a well-formed GIF, or its XMP is malformed or hostile.
    """
    _, blocks, _ = _parse(data)
    found: list[str] = []
    for block in blocks:
        if block.xmp is not None:
            found.extend(_xmp.get_aigc(block.xmp))
    return found


def write_label(data: bytes, payload: str) -> bytes:
    """Return the GIF with exactly one label, ``payload``, in an ``XMP Data`` block after the colour table.

    Other properties of the first XMP block are kept; further XMP blocks are removed. Every other block
    is copied unchanged, as are any bytes after the trailer.

    Raises:
        LabelError: the file is malformed, or ``payload`` is not an Annex E label.
    """
    AIGCLabel.parse(payload)
    head, blocks, tail = _parse(data)
    data = bytes(data)
    existing: bytes | None = None
    kept: list[bytes] = []
    for block in blocks:
        if block.xmp is not None:
            if existing is None:
                existing = block.xmp
            continue
        kept.append(data[block.start : block.end])
    packet = _xmp.set_aigc(existing, payload)
    if (
        b"\x00" in packet
    ):  # pragma: no cover - set_aigc refuses NUL in payloads; kept XMP is parsed text.
        raise LabelError("XMP packet contains a NUL byte, which GIF XMP cannot carry")
    extension = b"\x21\xff\x0b" + _APP_ID + packet + MAGIC_TRAILER
    header = b"GIF89a" + data[6:head]
    return b"".join((header, extension, *kept, data[tail - 1 :]))
