"""GB 45438 implicit labels in MP4, MOV and M4A files: key ``AIGC`` in ``moov/udta/meta``.

``moov/udta`` holds exactly one ``meta`` box after labelling whenever it held at most one before:
the label goes into the existing ``meta`` when there is one, in the layout its handler uses.

- No ``meta`` (or only ``meta`` boxes with other handlers): a ``meta`` is added the way
  ``ffmpeg -movflags use_metadata_tags`` writes one (TC260-PG-20257A and 202510A): its ``hdlr`` has
  handler type ``mdta``, a ``keys`` box names the key ``AIGC`` in namespace ``mdta``, and an
  ``ilst`` item, typed by the key's 1-based index, has a ``data`` box holding the JSON with type
  indicator 1 (UTF-8) and locale 0.
- An ``mdta`` ``meta``: the ``AIGC`` key and item are added to its ``keys`` and ``ilst``.
- An iTunes ``meta`` (handler ``mdir``, what FFmpeg writes for ``-metadata title=...`` and its
  ``encoder`` tag, and what M4A taggers write): the label is a freeform ``----`` item in its ``ilst``
  (created if missing) with ``mean`` ``com.apple.iTunes``, ``name`` ``AIGC`` and the same ``data``
  box. Mutagen reads it as ``----:com.apple.iTunes:AIGC`` and FFmpeg as the container tag ``AIGC``.

Every other item and box is kept. Re-labelling replaces the ``AIGC`` key or item wherever it is
(any ``mean`` for a freeform item); an ``mdta`` ``meta`` left holding nothing by that (one added next
to an iTunes ``meta`` by earlier versions) is removed.

:func:`write_label` only edits ``moov``: every other top-level box, ``mdat`` included, is copied byte
for byte. When ``moov`` changes size, the chunk offsets in every track's ``stco`` and ``co64`` that
point past ``moov`` are moved by the same amount, so they still address the same samples.

Both ``meta`` layouts occur: the ISO full box (4 bytes of version and flags before its children) and
the QuickTime atom (children straight away). They are told apart by the first four bytes, which are
zero only in the full box. A ``udta/meta`` whose handler is neither ``mdta`` nor ``mdir`` (for example
``ID32``) is left alone.

Refused with :class:`~aiobligations.errors.LabelError`: malformed or truncated boxes, more than one
``moov``, fragmented files (``moof``) and files with ``saio`` offsets when ``moov`` would change
size, and ``stco`` offsets that would overflow 32 bits.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

from aiobligations.errors import LabelError

__all__ = ["MEDIA_TYPES", "content_digest", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = (
    "video/mp4",
    "video/quicktime",
    "audio/mp4",
    "audio/x-m4a",
    "audio/m4a",
    "video/x-m4v",
)
"""The media types this module handles."""

_KEY = b"AIGC"
_NAMESPACE = b"mdta"
_ITUNES = b"mdir"  # The handler type of iTunes-style metadata: ilst items named by four-character codes.
_FREEFORM = b"----"  # An iTunes item named by its mean and name boxes rather than its type.
_FREEFORM_MEAN = b"com.apple.iTunes"
_TOP_LEVEL = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})
_MAX_U32 = 0xFFFFFFFF


class _Box(NamedTuple):
    type: bytes
    start: int  # Where the box header starts.
    body: int  # Where the box content starts, after the header.
    end: int  # Where the box ends.
    large: bool  # Whether the header uses a 64-bit size.


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts like an ISO BMFF or QuickTime file."""
    head = bytes(data[:8])
    return len(head) == 8 and head[4:8] in _TOP_LEVEL


def read_labels(data: bytes) -> list[str]:
    """Return every ``AIGC`` value found in ``moov/udta/meta`` (handler ``mdta``), in file order.

    Raises:
        LabelError: The file is not an MP4/MOV file or its boxes are malformed.
    """
    buf = _check_bytes(data)
    moov = _moov(buf, _boxes(buf, 0, len(buf), top=True))
    labels = []
    for udta in _children(buf, moov, b"udta"):
        for meta in _children(buf, udta, b"meta"):
            parsed = _parse_meta(buf, meta)
            if parsed is None:
                continue
            for item in parsed.items:
                if _is_label_item(buf, parsed, item):
                    labels.extend(_data_values(buf, item))
    return labels


def write_label(data: bytes, payload: str) -> bytes:
    """Return the file with exactly one ``AIGC`` value, ``payload``, in ``moov/udta/meta``.

    Raises:
        TypeError: ``data`` is not bytes or ``payload`` is not a string.
        LabelError: The file is not an MP4/MOV file, its boxes are malformed, or it cannot be
            labelled safely (see the module docstring).
    """
    buf = _check_bytes(data)
    if not isinstance(payload, str):
        raise TypeError(f"payload must be str, got {type(payload).__name__}.")
    top = _boxes(buf, 0, len(buf), top=True)
    moov = _moov(buf, top)
    value = payload.encode("utf-8")

    children = _boxes(buf, moov.body, moov.end)
    replaced: dict[int, bytes] = {}
    pending: bytes | None = value
    for child in children:
        if child.type == b"udta":
            new_udta = _rebuild_udta(buf, child, pending)
            pending = None
            if new_udta is not None:
                replaced[child.start] = new_udta
    extra = b""
    if pending is not None:
        extra = _box(b"udta", _new_meta(pending))

    content_len = sum(
        len(replaced[c.start]) if c.start in replaced else c.end - c.start for c in children
    ) + len(extra)
    header = _header(b"moov", content_len, moov.large)
    delta = len(header) + content_len - (moov.end - moov.start)

    moov_bytes = bytearray(buf[moov.start : moov.end])
    if delta and any(box.type == b"moof" for box in top):
        raise LabelError("fragmented MP4 files (with moof boxes) are not supported.")
    # Run even when delta is 0: it also refuses chunk offsets that point inside moov itself.
    _shift_offsets(buf, moov, moov_bytes, delta)

    parts = [bytes(header)]
    for child in children:
        if child.start in replaced:
            parts.append(replaced[child.start])
        else:
            parts.append(bytes(moov_bytes[child.start - moov.start : child.end - moov.start]))
    parts.append(extra)
    return buf[: moov.start] + b"".join(parts) + buf[moov.end :]


def content_digest(data: bytes) -> bytes:
    """Return SHA-256 over the content of every top-level ``mdat`` box, in file order.

    Labelling moves ``mdat`` but never changes its bytes, so the digest is the same before and
    after :func:`write_label`; see :mod:`aiobligations.labels.annex_e` for its use in
    ``ReservedCode1``. The sample tables in ``moov`` are not covered.

    Raises:
        LabelError: The file is not an MP4/MOV file or its boxes are malformed.
    """
    buf = _check_bytes(data)
    top = _boxes(buf, 0, len(buf), top=True)
    _moov(buf, top)
    digest = hashlib.sha256()
    for box in top:
        if box.type == b"mdat":
            digest.update(buf[box.body : box.end])
    return digest.digest()


def _check_bytes(data: bytes) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}.")
    return bytes(data)


def _boxes(
    buf: bytes, offset: int, limit: int, *, top: bool = False, udta: bool = False
) -> list[_Box]:
    """Parse the boxes that exactly fill ``buf[offset:limit]``.

    ``top`` allows a last box of size 0 (to the end of the file); ``udta`` allows QuickTime's
    optional 32-bit zero terminator after the last child.
    """
    boxes = []
    while offset < limit:
        if udta and buf[offset:limit] == b"\x00\x00\x00\x00":
            break
        if limit - offset < 8:
            raise LabelError(f"malformed MP4: {limit - offset} stray bytes at offset {offset}.")
        size, box_type = struct.unpack(">I4s", buf[offset : offset + 8])
        body, large = offset + 8, False
        if size == 1:
            if limit - offset < 16:
                raise LabelError(
                    f"malformed MP4: truncated 64-bit size of box {box_type!r} at {offset}."
                )
            size = struct.unpack(">Q", buf[offset + 8 : offset + 16])[0]
            body, large = offset + 16, True
        elif size == 0:
            # A size of 0 means the box runs to the end of the file. Nested, it would swallow any
            # box added after it, so it is refused there.
            if not top:
                raise LabelError(f"malformed MP4: nested box {box_type!r} at {offset} has size 0.")
            size = limit - offset
        if size < body - offset:
            raise LabelError(f"malformed MP4: box {box_type!r} at offset {offset} has size {size}.")
        end = offset + size
        if end > limit:
            raise LabelError(
                f"malformed MP4: box {box_type!r} at offset {offset} has size {size}, "
                f"past the end of its parent at {limit}."
            )
        boxes.append(_Box(box_type, offset, body, end, large))
        offset = end
    return boxes


def _children(buf: bytes, parent: _Box, box_type: bytes) -> list[_Box]:
    boxes = _boxes(buf, parent.body, parent.end, udta=parent.type == b"udta")
    return [box for box in boxes if box.type == box_type]


def _moov(buf: bytes, top: list[_Box]) -> _Box:
    moovs = [box for box in top if box.type == b"moov"]
    if len(moovs) != 1:
        raise LabelError(f"not a usable MP4/MOV file: expected one moov box, found {len(moovs)}.")
    return moovs[0]


def _header(box_type: bytes, content_len: int, large: bool = False) -> bytes:
    if large or content_len + 8 > _MAX_U32:
        return struct.pack(">I4sQ", 1, box_type, content_len + 16)
    return struct.pack(">I4s", content_len + 8, box_type)


def _box(box_type: bytes, content: bytes) -> bytes:
    return _header(box_type, len(content)) + content


class _Meta(NamedTuple):
    handler: bytes  # b"mdta" or b"mdir".
    full: bool  # ISO full box (version and flags first) rather than a QuickTime atom.
    prefix: bytes  # The version and flags of a full box; empty for a QuickTime atom.
    children: list[_Box]
    keys_box: _Box | None
    keys: list[tuple[bytes, bytes, bytes]]  # (namespace, name, raw entry), in index order; mdta only.
    ilst_box: _Box | None
    items: list[_Box]


def _parse_meta(buf: bytes, meta: _Box) -> _Meta | None:
    """Parse a ``meta`` box; ``None`` when its handler is neither ``mdta`` nor ``mdir``."""
    full = meta.end - meta.body >= 4 and buf[meta.body : meta.body + 4] == b"\x00\x00\x00\x00"
    prefix = buf[meta.body : meta.body + 4] if full else b""
    children = _boxes(buf, meta.body + len(prefix), meta.end)
    handlers = [box for box in children if box.type == b"hdlr"]
    if len(handlers) != 1:
        if not handlers:
            return None
        raise LabelError(f"malformed MP4: a meta box has {len(handlers)} hdlr boxes.")
    hdlr = handlers[0]
    if hdlr.end - hdlr.body < 12:
        raise LabelError(f"malformed MP4: the hdlr box at offset {hdlr.start} is truncated.")
    handler = buf[hdlr.body + 8 : hdlr.body + 12]
    if handler not in (_NAMESPACE, _ITUNES):
        return None
    keys_boxes = [box for box in children if box.type == b"keys"] if handler == _NAMESPACE else []
    ilst_boxes = [box for box in children if box.type == b"ilst"]
    if len(keys_boxes) > 1 or len(ilst_boxes) > 1:
        raise LabelError("malformed MP4: a meta box has more than one keys or ilst box.")
    keys_box = keys_boxes[0] if keys_boxes else None
    ilst_box = ilst_boxes[0] if ilst_boxes else None
    keys = _parse_keys(buf, keys_box) if keys_box else []
    items = _boxes(buf, ilst_box.body, ilst_box.end) if ilst_box else []
    if handler == _ITUNES:
        return _Meta(handler, full, prefix, children, None, [], ilst_box, items)
    for item in items:
        index = struct.unpack(">I", item.type)[0]
        if not 1 <= index <= len(keys):
            raise LabelError(
                f"malformed MP4: ilst item {index} at offset {item.start} names no key "
                f"(keys has {len(keys)} entries)."
            )
    return _Meta(handler, full, prefix, children, keys_box, keys, ilst_box, items)


def _is_label_item(buf: bytes, meta: _Meta, item: _Box) -> bool:
    """Whether ``item`` of ``meta``'s ``ilst`` is an ``AIGC`` item."""
    if meta.handler == _NAMESPACE:
        index: int = struct.unpack(">I", item.type)[0]
        return 1 <= index <= len(meta.keys) and meta.keys[index - 1][1] == _KEY
    if item.type != _FREEFORM:
        return False
    names = [box for box in _boxes(buf, item.body, item.end) if box.type == b"name"]
    # mean and name are full boxes: version and flags, then the string.
    return any(buf[name.body + 4 : name.end] == _KEY for name in names if name.end - name.body >= 4)


def _parse_keys(buf: bytes, keys_box: _Box) -> list[tuple[bytes, bytes, bytes]]:
    if keys_box.end - keys_box.body < 8:
        raise LabelError(f"malformed MP4: the keys box at offset {keys_box.start} is truncated.")
    count = struct.unpack(">I", buf[keys_box.body + 4 : keys_box.body + 8])[0]
    offset = keys_box.body + 8
    if count > (keys_box.end - offset) // 8:
        raise LabelError(f"malformed MP4: the keys box claims {count} entries, more than it holds.")
    keys = []
    for _ in range(count):
        if keys_box.end - offset < 8:
            raise LabelError(f"malformed MP4: a truncated keys entry at offset {offset}.")
        size, namespace = struct.unpack(">I4s", buf[offset : offset + 8])
        if size < 8 or offset + size > keys_box.end:
            raise LabelError(f"malformed MP4: a keys entry at offset {offset} has size {size}.")
        keys.append((namespace, buf[offset + 8 : offset + size], buf[offset : offset + size]))
        offset += size
    return keys


def _data_values(buf: bytes, item: _Box) -> list[str]:
    values = []
    for data in _boxes(buf, item.body, item.end):
        if data.type != b"data":
            continue
        if data.end - data.body < 8:
            raise LabelError(f"malformed MP4: the data box at offset {data.start} is truncated.")
        well_known = int.from_bytes(buf[data.body + 1 : data.body + 4], "big")
        codec = {1: "utf-8", 2: "utf-16-be"}.get(well_known)
        if buf[data.body] != 0 or codec is None:
            continue
        try:
            values.append(buf[data.body + 8 : data.end].decode(codec))
        except UnicodeDecodeError as exc:
            raise LabelError(f"the AIGC value is not valid {codec}: {exc}.") from None
    return values


def _label_item(index: int, value: bytes) -> bytes:
    data = _box(b"data", struct.pack(">II", 1, 0) + value)
    return _box(struct.pack(">I", index), data)


def _freeform_item(value: bytes) -> bytes:
    mean = _box(b"mean", b"\x00\x00\x00\x00" + _FREEFORM_MEAN)
    name = _box(b"name", b"\x00\x00\x00\x00" + _KEY)
    data = _box(b"data", struct.pack(">II", 1, 0) + value)
    return _box(_FREEFORM, mean + name + data)


def _keys_box(prefix: bytes, entries: list[bytes]) -> bytes:
    return _box(b"keys", prefix + struct.pack(">I", len(entries)) + b"".join(entries))


def _new_meta(value: bytes) -> bytes:
    # The hdlr layout ffmpeg writes: version/flags, pre_defined, handler type, 12 reserved, empty name.
    hdlr = _box(b"hdlr", b"\x00" * 8 + _NAMESPACE + b"\x00" * 13)
    entry = struct.pack(">I4s", 8 + len(_KEY), _NAMESPACE) + _KEY
    keys = _keys_box(b"\x00\x00\x00\x00", [entry])
    ilst = _box(b"ilst", _label_item(1, value))
    return _box(b"meta", b"\x00\x00\x00\x00" + hdlr + keys + ilst)


def _rebuild_udta(buf: bytes, udta: _Box, value: bytes | None) -> bytes | None:
    """Return ``udta`` with AIGC removed and ``value`` added (if given), or ``None`` if unchanged."""
    children = _boxes(buf, udta.body, udta.end, udta=True)
    # Keep QuickTime's optional zero terminator last, after any meta box added here.
    terminator = buf[children[-1].end if children else udta.body : udta.end]
    metas = {child.start: _parse_meta(buf, child) for child in children if child.type == b"meta"}
    # The label goes into the first mdta or mdir meta; only when there is none is a meta added.
    target = next((start for start, meta in metas.items() if meta is not None), None)
    parts: list[bytes] = []
    changed = False
    for child in children:
        raw = buf[child.start : child.end]
        meta = metas.get(child.start)
        if meta is not None:
            new_meta = _rebuild_meta(buf, child, meta, value if child.start == target else None)
            if new_meta is not None:
                raw, changed = new_meta, True
        parts.append(raw)
    if target is not None:
        value = None
    if value is not None:
        parts.append(_new_meta(value))
        changed = True
    if not changed:
        return None
    parts.append(terminator)
    return _header(b"udta", sum(map(len, parts)), udta.large) + b"".join(parts)


def _rebuild_meta(buf: bytes, box: _Box, meta: _Meta, value: bytes | None) -> bytes | None:
    """Return the meta box with AIGC removed and ``value`` added, or ``None`` if unchanged.

    An ``mdta`` meta that held nothing but AIGC items, and gets no ``value``, becomes ``b""``.
    """
    if meta.handler == _ITUNES:
        return _rebuild_itunes_meta(buf, box, meta, value)
    removed = {i + 1 for i, (_, name, _) in enumerate(meta.keys) if name == _KEY}
    if not removed and value is None:
        return None
    renumber: dict[int, int] = {}
    entries: list[bytes] = []
    for i, (_, name, raw) in enumerate(meta.keys):
        if i + 1 not in removed:
            entries.append(raw)
            renumber[i + 1] = len(entries)
    items: list[bytes] = []
    for item in meta.items:
        index = struct.unpack(">I", item.type)[0]
        if index in removed:
            continue
        raw = buf[item.start : item.end]
        if renumber[index] != index:
            raw = raw[:4] + struct.pack(">I", renumber[index]) + raw[8:]
        items.append(raw)
    if value is not None:
        entries.append(struct.pack(">I4s", 8 + len(_KEY), _NAMESPACE) + _KEY)
        items.append(_label_item(len(entries), value))
    elif not entries and not items and {c.type for c in meta.children} <= {b"hdlr", b"keys", b"ilst"}:
        return b""

    keys_prefix = b"\x00\x00\x00\x00"
    if meta.keys_box is not None:
        keys_prefix = buf[meta.keys_box.body : meta.keys_box.body + 4]
    new_keys = _keys_box(keys_prefix, entries)
    new_ilst = _box(b"ilst", b"".join(items))
    parts: list[bytes] = []
    for child in meta.children:
        if child.type == b"keys":
            parts.append(new_keys)
        elif child.type == b"ilst":
            parts.append(new_ilst)
        else:
            parts.append(buf[child.start : child.end])
        if child.type == b"hdlr" and meta.keys_box is None:
            parts.append(new_keys)
    if meta.ilst_box is None:
        parts.append(new_ilst)
    return _meta_box(box, meta, parts)


def _rebuild_itunes_meta(buf: bytes, box: _Box, meta: _Meta, value: bytes | None) -> bytes | None:
    """Return an ``mdir`` meta box with AIGC removed and ``value`` added, or ``None`` if unchanged."""
    kept = [item for item in meta.items if not _is_label_item(buf, meta, item)]
    if len(kept) == len(meta.items) and value is None:
        return None
    items = [buf[item.start : item.end] for item in kept]
    if value is not None:
        items.append(_freeform_item(value))
    content = b"".join(items)
    large = meta.ilst_box is not None and meta.ilst_box.large
    new_ilst = _header(b"ilst", len(content), large) + content
    parts = [new_ilst if c.type == b"ilst" else buf[c.start : c.end] for c in meta.children]
    if meta.ilst_box is None:
        parts.append(new_ilst)
    return _meta_box(box, meta, parts)


def _meta_box(box: _Box, meta: _Meta, parts: list[bytes]) -> bytes:
    return (
        _header(b"meta", len(meta.prefix) + sum(map(len, parts)), box.large)
        + meta.prefix
        + b"".join(parts)
    )


def _shift_offsets(buf: bytes, moov: _Box, out: bytearray, delta: int) -> None:
    """Add ``delta`` to every chunk offset that points past ``moov``, patching ``out`` in place."""
    for trak in _children(buf, moov, b"trak"):
        for mdia in _children(buf, trak, b"mdia"):
            for minf in _children(buf, mdia, b"minf"):
                for stbl in _children(buf, minf, b"stbl"):
                    for table in _boxes(buf, stbl.body, stbl.end):
                        if table.type == b"saio" and delta:
                            raise LabelError(
                                "MP4 files with sample auxiliary information offsets (saio) are not "
                                "supported when the label changes the moov size."
                            )
                        if table.type in (b"stco", b"co64"):
                            _shift_table(buf, moov, table, out, delta)


def _shift_table(buf: bytes, moov: _Box, table: _Box, out: bytearray, delta: int) -> None:
    width, fmt = (4, ">I") if table.type == b"stco" else (8, ">Q")
    if table.end - table.body < 8:
        raise LabelError(
            f"malformed MP4: the {table.type.decode()} box at {table.start} is truncated."
        )
    count = struct.unpack(">I", buf[table.body + 4 : table.body + 8])[0]
    first = table.body + 8
    if count * width > table.end - first:
        raise LabelError(
            f"malformed MP4: the {table.type.decode()} box at {table.start} claims {count} entries, "
            "more than it holds."
        )
    for position in range(first, first + count * width, width):
        offset = struct.unpack(fmt, buf[position : position + width])[0]
        if offset < moov.start:
            continue
        if offset < moov.end:
            # The samples would sit inside the box being rewritten (or moov has size 0 and has
            # swallowed mdat): no shift keeps them addressed correctly.
            raise LabelError(f"malformed MP4: chunk offset {offset} points inside the moov box.")
        moved = offset + delta
        if moved > (_MAX_U32 if width == 4 else 0xFFFFFFFFFFFFFFFF):
            raise LabelError(
                f"a chunk offset would overflow stco's 32 bits ({moved}); move moov after mdat first."
            )
        struct.pack_into(fmt, out, position - moov.start, moved)
