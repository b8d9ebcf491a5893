"""TIFF: the label as XMP in IFD0 tag 700 (``0x02BC``, type 7 UNDEFINED), little- or big-endian.

Writing never moves a byte: the XMP packet and a new copy of IFD0 (its entries copied verbatim, tag 700
added or replaced, entries kept in ascending tag order, the next-IFD pointer kept) are appended to the
end of the file, word-aligned, and the header's IFD0 offset is pointed at the new IFD. The old IFD0 and
old XMP stay in the file, unreferenced. Classic TIFF only: BigTIFF (version 43) is refused.
"""

from __future__ import annotations

import struct

from aiobligations.errors import LabelError
from aiobligations.labels import xmp as _xmp
from aiobligations.labels.annex_e import AIGCLabel

__all__ = ["MEDIA_TYPES", "XMP_TAG", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("image/tiff",)
"""The media types this module handles."""

XMP_TAG = 0x02BC
"""The TIFF tag that holds an XMP packet."""

_MAX_ENTRIES = 4096
_MAX_OFFSET = 0xFFFFFFFF


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with a classic or BigTIFF header, either byte order."""
    return bytes(data[:4]) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _ifd0(data: bytes) -> tuple[str, int, list[bytes], bytes]:
    """Return the byte order, IFD0's offset, its raw 12-byte entries and its raw next-IFD pointer."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not sniff(data):
        raise LabelError("not a TIFF file: bad header")
    if data[2:4] in (b"+\x00", b"\x00+"):
        raise LabelError("BigTIFF is not supported for labelling")
    if len(data) < 8:
        raise LabelError("TIFF truncated: header shorter than 8 bytes")
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", data, 4)
    if offset < 8 or offset + 2 > len(data):
        raise LabelError(f"TIFF IFD0 offset {offset} is outside the file")
    (count,) = struct.unpack_from(order + "H", data, offset)
    if count == 0 or count > _MAX_ENTRIES:
        raise LabelError(f"TIFF IFD0 declares {count} entries")
    end = offset + 2 + 12 * count
    if end + 4 > len(data):
        raise LabelError(
            f"TIFF IFD0 at offset {offset} with {count} entries runs past the end of the file"
        )
    entries = [
        bytes(data[offset + 2 + 12 * i : offset + 14 + 12 * i]) for i in range(count)
    ]
    return order, offset, entries, bytes(data[end : end + 4])


def _tag(order: str, entry: bytes) -> int:
    return int(struct.unpack_from(order + "H", entry, 0)[0])


def _xmp_value(data: bytes, order: str, entry: bytes) -> bytes:
    _, kind, count, value = struct.unpack(order + "HHII", entry)
    if kind not in (1, 7):
        raise LabelError(
            f"TIFF XMP tag has field type {kind}, expected 7 (UNDEFINED) or 1 (BYTE)"
        )
    if count > _xmp.MAX_XMP_SIZE:
        raise LabelError(
            f"TIFF XMP tag declares {count} bytes, more than the XMP size limit"
        )
    if count <= 4:
        return entry[8 : 8 + count]
    if value + count > len(data):
        raise LabelError(
            f"TIFF XMP tag points at {count} bytes at offset {value}, past the end of the file"
        )
    return bytes(data[value : value + count])


def read_labels(data: bytes) -> list[str]:
    """Return every ``TC260:AIGC`` value in the XMP of IFD0 (each tag 700 entry, if duplicated).

    Raises:
        LabelError: the file is not a well-formed classic TIFF, or its XMP is malformed or hostile.
    """
    order, _, entries, _ = _ifd0(data)
    found: list[str] = []
    for entry in entries:
        if _tag(order, entry) == XMP_TAG:
            found.extend(_xmp.get_aigc(_xmp_value(data, order, entry)))
    return found


def write_label(data: bytes, payload: str) -> bytes:
    """Return the TIFF with exactly one label, ``payload``, in IFD0's XMP tag, appended at the end.

    Other properties of an existing XMP packet are kept. No existing byte but the header's IFD0 offset
    changes.

    Raises:
        LabelError: the file is malformed or BigTIFF, the result would exceed 4 GiB, or ``payload`` is
            not an Annex E label.
    """
    AIGCLabel.parse(payload)
    order, _, entries, next_ifd = _ifd0(data)
    data = bytes(data)
    existing: bytes | None = None
    kept: list[bytes] = []
    for entry in entries:
        if _tag(order, entry) == XMP_TAG:
            if existing is None:
                existing = _xmp_value(data, order, entry)
            continue
        kept.append(entry)
    packet = _xmp.set_aigc(existing, payload)
    out = bytearray(data)
    if len(out) % 2:
        out += b"\x00"
    xmp_offset = len(out)
    out += packet
    if len(out) % 2:
        out += b"\x00"
    ifd_offset = len(out)
    new_entry = struct.pack(order + "HHII", XMP_TAG, 7, len(packet), xmp_offset)
    position = next(
        (i for i, entry in enumerate(kept) if _tag(order, entry) > XMP_TAG), len(kept)
    )
    kept.insert(position, new_entry)
    out += struct.pack(order + "H", len(kept)) + b"".join(kept) + next_ifd
    if len(out) > _MAX_OFFSET:
        raise LabelError(
            "labelled TIFF would be larger than 4 GiB; classic TIFF cannot address it"
        )
    struct.pack_into(order + "I", out, 4, ifd_offset)
    return bytes(out)
