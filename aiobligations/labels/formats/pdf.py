"""PDF: the label as the string ``/AIGC`` in the Document Information dictionary, by incremental update.

Writing never changes an existing byte: it appends (after a newline, if the file does not end with one)
a new Info dictionary object holding every entry of the current Info dictionary except ``/AIGC``, copied
as raw bytes, plus ``/AIGC (…)``; then a classic cross-reference section for that one object (after
object 0's free entry, so that readers such as pypdf do not take it for a mis-numbered table) and a
trailer that repeats the latest trailer's entries with a new ``/Size``, ``/Info`` and ``/Prev``; then
``startxref`` and ``%%EOF``. Reading follows ``startxref`` and the ``/Prev`` chain to the latest
``/Info`` and returns its ``/AIGC`` strings.

Cross-reference streams (PDF 1.5+ ``/Type /XRef``: ``/W``, ``/Index``, ``/FlateDecode`` with or without
a PNG predictor) are read as well as classic tables, and so are hybrid files (a classic table whose
trailer names an ``/XRefStm``) and objects stored inside object streams (``/Type /ObjStm``), where
writers such as qpdf put the Info dictionary. When the latest section is a cross-reference stream,
the update's own cross-reference section is a cross-reference stream too (uncompressed, ``/W [1 4 2]``,
``/Prev`` at the previous one), since a classic table may not follow a stream.

Limits: encrypted files (``/Encrypt``) are refused with :class:`~aiobligations.errors.LabelError`, and
so are stream filters other than ``/FlateDecode``. The payload is written as a literal string when it
is ASCII and as a UTF-16BE hex string with a byte-order mark otherwise.

C2PA: :func:`embed_c2pa` appends a manifest store as a second incremental update, laid out as the
C2PA specification's PDF embedding asks (an embedded file stream, a file specification with
``/AFRelationship /C2PA_Manifest`` in the catalog's ``/AF`` array, and the ``/EmbeddedFiles`` name
tree when it is direct). :func:`aiobligations.labels.c2pa.sign` uses it with c2pa-rs's data-hashed
signing: a placeholder store goes in, c2pa-rs signs a ``c2pa.hash.data`` assertion whose one
exclusion is exactly the store's bytes, and the signed store (the placeholder's length) replaces the
placeholder. So with C2PA on too, the original bytes are a prefix of the labelled file; c2pa-rs's
reader (lopdf, which follows ``/Prev``) finds the store through the latest catalog's ``/AF`` and
checks that the exclusion is where the store is. Signing again replaces the ``/AF`` entry; the old
store stays in the bytes, unreferenced. A name tree that is indirect or has ``/Kids`` is left as it
is (the store is then reached through ``/AF`` only).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aiobligations.errors import LabelError
from aiobligations.labels.annex_e import AIGCLabel

__all__ = ["C2PA_NAME", "MEDIA_TYPES", "embed_c2pa", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("application/pdf",)
"""The media types this module handles."""

_WS = b"\x00\t\n\x0c\r "
_DELIMITERS = b"()<>[]{}/%"
_MAX_DEPTH = 32
_MAX_SECTIONS = 256
_NUMBER = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)")
_INT = re.compile(rb"\d{1,10}")
_REGULAR = re.compile(rb"[^\x00\t\n\x0c\r ()<>\[\]{}/%]*")
_OBJ_HEAD = re.compile(rb"(\d{1,10})\s+(\d{1,5})\s+obj")
_MAX_STREAM = 64 * 1024 * 1024
_SUBSECTION = re.compile(rb"(\d{1,10})[ \t]+(\d{1,10})")
_ENTRY = re.compile(rb"(\d{1,10})[ \t]+(\d{1,5})[ \t]+([nf])")
_ESCAPES = {
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
    ord("b"): b"\b",
    ord("f"): b"\f",
}


@dataclass(frozen=True)
class _Name:
    name: bytes


@dataclass(frozen=True)
class _Ref:
    number: int
    generation: int


@dataclass
class _Dict:
    entries: list[
        tuple[bytes, Any, bytes, bytes]
    ]  # Decoded name, value, raw key, raw value.

    def get(self, name: bytes) -> Any:
        for key, value, _, _ in self.entries:
            if key == name:
                return value
        return None


def sniff(data: bytes) -> bool:
    """Return whether ``data`` has a ``%PDF-`` header in its first 1024 bytes."""
    return b"%PDF-" in bytes(data[:1024])


def _skip(data: bytes, pos: int) -> int:
    size = len(data)
    while pos < size:
        char = data[pos]
        if char in _WS:
            pos += 1
        elif char == 0x25:  # % comment, to the end of the line.
            while pos < size and data[pos] not in b"\r\n":
                pos += 1
        else:
            break
    return pos


def _decode_name(raw: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        if (
            raw[i] == 0x23
            and i + 2 < len(raw) + 0
            and re.fullmatch(rb"[0-9A-Fa-f]{2}", raw[i + 1 : i + 3])
        ):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _literal(data: bytes, pos: int) -> tuple[bytes, int]:
    """Parse a literal string whose ``(`` is at ``pos``."""
    out = bytearray()
    depth = 1
    pos += 1
    size = len(data)
    while True:
        if pos >= size:
            raise LabelError("PDF literal string is not closed")
        char = data[pos]
        if char == 0x5C:  # Backslash.
            pos += 1
            if pos >= size:
                raise LabelError("PDF literal string is not closed")
            nxt = data[pos]
            if nxt in _ESCAPES:
                out += _ESCAPES[nxt]
                pos += 1
            elif 0x30 <= nxt <= 0x37:
                end = pos
                while end < size and end < pos + 3 and 0x30 <= data[end] <= 0x37:
                    end += 1
                out.append(int(data[pos:end], 8) & 0xFF)
                pos = end
            elif nxt == 0x0D:
                pos += 2 if data[pos + 1 : pos + 2] == b"\n" else 1
            elif nxt == 0x0A:
                pos += 1
            else:
                out.append(nxt)
                pos += 1
            continue
        if char == 0x28:
            depth += 1
        elif char == 0x29:
            depth -= 1
            if depth == 0:
                return bytes(out), pos + 1
        out.append(char)
        pos += 1


def _hex(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b">", pos)
    if end < 0:
        raise LabelError("PDF hex string is not closed")
    digits = bytes(c for c in data[pos + 1 : end] if c not in _WS)
    if not re.fullmatch(rb"[0-9A-Fa-f]*", digits):
        raise LabelError("PDF hex string has a non-hex character")
    if len(digits) % 2:
        digits += b"0"
    return bytes.fromhex(digits.decode("ascii")), end + 1


def _object(data: bytes, pos: int, depth: int = 0) -> tuple[Any, int, int]:
    """Parse one direct object; return it, its start (after whitespace) and its end."""
    if depth > _MAX_DEPTH:
        raise LabelError(f"PDF objects nest deeper than {_MAX_DEPTH}")
    pos = _skip(data, pos)
    if pos >= len(data):
        raise LabelError("PDF truncated: an object was expected")
    start = pos
    char = data[pos]
    if data[pos : pos + 2] == b"<<":
        entries: list[tuple[bytes, Any, bytes, bytes]] = []
        pos += 2
        while True:
            pos = _skip(data, pos)
            if data[pos : pos + 2] == b">>":
                return _Dict(entries), start, pos + 2
            if pos >= len(data) or data[pos] != 0x2F:
                raise LabelError(
                    f"PDF dictionary at offset {start} has a key that is not a name"
                )
            key, key_start, key_end = _object(data, pos, depth + 1)
            value, value_start, pos = _object(data, key_end, depth + 1)
            entries.append(
                (key.name, value, data[key_start:key_end], data[value_start:pos])
            )
    if char == 0x5B:  # [
        items: list[Any] = []
        pos += 1
        while True:
            pos = _skip(data, pos)
            if data[pos : pos + 1] == b"]":
                return items, start, pos + 1
            value, _, pos = _object(data, pos, depth + 1)
            items.append(value)
    if char == 0x28:
        text, end = _literal(data, pos)
        return text, start, end
    if char == 0x3C:
        text, end = _hex(data, pos)
        return text, start, end
    if char == 0x2F:
        match = _REGULAR.match(data, pos + 1)
        assert match is not None
        return _Name(_decode_name(match.group())), start, match.end()
    number = _NUMBER.match(data, pos)
    if number:
        end = number.end()
        if b"." not in number.group() and number.group()[:1] not in b"+-":
            # Maybe ``N G R``.
            after = _skip(data, end)
            generation = _INT.match(data, after)
            if generation:
                keyword = _skip(data, generation.end())
                word_end = _REGULAR.match(data, keyword)
                if data[keyword : keyword + 1] == b"R" and word_end is not None and word_end.end() == keyword + 1:
                    return (
                        _Ref(int(number.group()), int(generation.group())),
                        start,
                        keyword + 1,
                    )
        scalar: Any
        try:
            scalar = int(number.group())
        except ValueError:
            scalar = float(number.group())
        return scalar, start, end
    word = _REGULAR.match(data, pos)
    assert word is not None
    token = word.group()
    if token in (b"true", b"false", b"null"):
        return {b"true": True, b"false": False, b"null": None}[token], start, word.end()
    raise LabelError(f"PDF has an unexpected token {token[:20]!r} at offset {pos}")


def _startxref(data: bytes) -> int:
    index = data.rfind(b"startxref")
    if index < 0:
        raise LabelError("PDF has no startxref")
    match = _INT.match(data, _skip(data, index + 9))
    if not match:
        raise LabelError("PDF startxref has no offset")
    return int(match.group())


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LabelError(f"PDF {what} is not a non-negative integer")
    return value


def _png_unpredict(raw: bytes, columns: int, colors: int, bpc: int) -> bytes:
    """Undo PNG predictors (``/Predictor`` 10-15): each row starts with its filter type byte."""
    bpp = max(1, colors * bpc // 8)
    width = (columns * colors * bpc + 7) // 8
    if width < 1 or width > len(raw):
        raise LabelError("PDF stream /DecodeParms /Columns is not positive or is wider than the data")
    out = bytearray()
    prior = bytearray(width)
    pos = 0
    while pos < len(raw):
        kind = raw[pos]
        row = bytearray(raw[pos + 1 : pos + 1 + width])
        pos += 1 + width
        if len(row) < width:
            row += bytes(width - len(row))
        for i in range(width):
            left = row[i - bpp] if i >= bpp else 0
            up = prior[i]
            if kind == 0:
                continue
            if kind == 1:
                row[i] = (row[i] + left) & 0xFF
            elif kind == 2:
                row[i] = (row[i] + up) & 0xFF
            elif kind == 3:
                row[i] = (row[i] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                corner = prior[i - bpp] if i >= bpp else 0
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                pick = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                row[i] = (row[i] + pick) & 0xFF
            else:
                raise LabelError(f"PDF stream has an unknown PNG predictor row type {kind}")
        out += row
        prior = row
    return bytes(out)


def _stream(
    data: bytes, offset: int, table: dict[int, tuple[int, int, bytes]] | None = None
) -> tuple[int, _Dict, bytes]:
    """Parse the indirect stream object at ``offset``; return its number, dictionary and decoded data."""
    if offset >= len(data):
        raise LabelError(f"PDF object offset {offset} is outside the file")
    head = _OBJ_HEAD.match(data, _skip(data, offset))
    if head is None:
        raise LabelError(f"PDF has no object at offset {offset}")
    value, _, pos = _object(data, head.end())
    if not isinstance(value, _Dict):
        raise LabelError(f"PDF object at offset {offset} is not a stream dictionary")
    pos = _skip(data, pos)
    if data[pos : pos + 6] != b"stream":
        raise LabelError(f"PDF object at offset {offset} is not a stream")
    pos += 6
    if data[pos : pos + 2] == b"\r\n":
        pos += 2
    elif data[pos : pos + 1] in (b"\n", b"\r"):
        pos += 1
    length = value.get(b"Length")
    if isinstance(length, _Ref) and table is not None:
        entry = table.get(length.number)
        length = None
        if entry is not None and entry[2] == b"n" and entry[0] < len(data):
            where = _OBJ_HEAD.match(data, _skip(data, entry[0]))
            if where is not None:
                length, _, _ = _object(data, where.end())
    if isinstance(length, int) and not isinstance(length, bool) and 0 <= length <= len(data) - pos:
        raw = data[pos : pos + length]
    else:  # An indirect or wrong /Length: the data ends at ``endstream``.
        end = data.find(b"endstream", pos)
        if end < 0:
            raise LabelError(f"PDF stream at offset {offset} has no endstream")
        raw = data[pos:end].rstrip(b"\r\n")
    filters = value.get(b"Filter")
    parms = value.get(b"DecodeParms")
    if isinstance(filters, list):
        filters = filters[0] if len(filters) == 1 else filters
        if isinstance(parms, list):
            parms = parms[0] if len(parms) == 1 else None
    if filters is not None:
        if not isinstance(filters, _Name) or filters.name not in (b"FlateDecode", b"Fl"):
            raise LabelError("PDF stream uses a filter other than /FlateDecode, which is not supported")
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(raw, _MAX_STREAM)
        except zlib.error as exc:
            raise LabelError(f"PDF stream at offset {offset} does not inflate: {exc}") from None
        if inflater.unconsumed_tail:
            raise LabelError(f"PDF stream at offset {offset} inflates to more than {_MAX_STREAM} bytes")
        if isinstance(parms, _Dict):
            predictor = parms.get(b"Predictor")
            if isinstance(predictor, int) and predictor >= 10:
                columns = parms.get(b"Columns")
                colors = parms.get(b"Colors")
                bpc = parms.get(b"BitsPerComponent")
                raw = _png_unpredict(
                    raw,
                    _int(columns if columns is not None else 1, "/Columns"),
                    _int(colors if colors is not None else 1, "/Colors"),
                    _int(bpc if bpc is not None else 8, "/BitsPerComponent"),
                )
            elif isinstance(predictor, int) and predictor not in (1,):
                raise LabelError(f"PDF stream predictor {predictor} is not supported")
    return int(head.group(1)), value, raw


def _xref_stream(
    data: bytes, offset: int, table: dict[int, tuple[int, int, bytes]]
) -> _Dict:
    """Parse the cross-reference stream at ``offset`` into ``table`` (older entries never override).

    Entries are ``(offset, generation, b"n")``, ``(0, 0, b"f")`` or, for an object inside an object
    stream, ``(stream number, index, b"c")``. Returns the stream's dictionary, which is its trailer.
    """
    _, trailer, raw = _stream(data, offset)
    if not isinstance(trailer.get(b"Type"), _Name) or trailer.get(b"Type").name != b"XRef":
        raise LabelError(f"PDF object at offset {offset} is not a cross-reference stream")
    widths = trailer.get(b"W")
    if (
        not isinstance(widths, list)
        or len(widths) != 3
        or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 8 for w in widths)
        or sum(widths) == 0
    ):
        raise LabelError("PDF cross-reference stream has no valid /W")
    size = _int(trailer.get(b"Size"), "cross-reference stream /Size")
    index = trailer.get(b"Index")
    if index is None:
        index = [0, size]
    if not isinstance(index, list) or len(index) % 2:
        raise LabelError("PDF cross-reference stream /Index is not pairs of integers")
    row = sum(widths)
    pos = 0
    for i in range(0, len(index), 2):
        first = _int(index[i], "cross-reference stream /Index")
        count = _int(index[i + 1], "cross-reference stream /Index")
        if count * row > len(raw) - pos:
            raise LabelError(
                f"PDF cross-reference stream declares {count} entries, more than it holds"
            )
        for number in range(first, first + count):
            fields = []
            for width in widths:
                fields.append(int.from_bytes(raw[pos : pos + width], "big"))
                pos += width
            kind = fields[0] if widths[0] else 1
            if kind == 1:
                entry = (fields[1], fields[2], b"n")
            elif kind == 2:
                entry = (fields[1], fields[2], b"c")
            else:  # Free, or an unknown type, which readers treat as a null reference.
                entry = (0, 0, b"f")
            table.setdefault(number, entry)
    return trailer


def _section(
    data: bytes, offset: int, table: dict[int, tuple[int, int, bytes]]
) -> tuple[_Dict, bool]:
    """Parse the xref section at ``offset`` (a table or a stream) into ``table``; return its trailer and whether it is a stream."""
    if offset >= len(data):
        raise LabelError(f"PDF cross-reference offset {offset} is outside the file")
    pos = _skip(data, offset)
    if data[pos : pos + 4] != b"xref":
        if _OBJ_HEAD.match(data, pos):
            return _xref_stream(data, pos, table), True
        raise LabelError(f"PDF has no xref table at offset {offset}")
    pos += 4
    local: dict[int, tuple[int, int, bytes]] = {}
    while True:
        pos = _skip(data, pos)
        if data[pos : pos + 7] == b"trailer":
            trailer, _, _ = _object(data, pos + 7)
            if not isinstance(trailer, _Dict):
                raise LabelError("PDF trailer is not a dictionary")
            hybrid = trailer.get(b"XRefStm")
            if hybrid is not None:
                # A hybrid file: the stream holds the objects the table marks free (PDF 32000 7.5.8.4).
                extra: dict[int, tuple[int, int, bytes]] = {}
                _xref_stream(data, _int(hybrid, "trailer /XRefStm"), extra)
                for number, entry in extra.items():
                    if local.get(number, (0, 0, b"f"))[2] == b"f":
                        local[number] = entry
            for number, entry in local.items():
                table.setdefault(number, entry)
            return trailer, False
        match = _SUBSECTION.match(data, pos)
        if not match:
            raise LabelError(f"PDF xref table is malformed at offset {pos}")
        first, count = int(match.group(1)), int(match.group(2))
        if count * 18 > len(data) - match.end():
            raise LabelError(
                f"PDF xref subsection declares {count} entries, more than the file can hold"
            )
        pos = match.end()
        for number in range(first, first + count):
            pos = _skip(data, pos)
            row = _ENTRY.match(data, pos)
            if not row:
                raise LabelError(f"PDF xref entry is malformed at offset {pos}")
            local.setdefault(number, (int(row.group(1)), int(row.group(2)), row.group(3)))
            pos = row.end()


def _indirect(
    data: bytes, number: int, table: dict[int, tuple[int, int, bytes]], what: str = "object"
) -> Any:
    """Return the value of indirect object ``number``, from the file or from its object stream."""
    entry = table.get(number)
    if entry is None or entry[2] == b"f":
        raise LabelError(f"PDF {what} {number} is not in the cross-reference table")
    if entry[2] == b"c":
        container = table.get(entry[0])
        if container is None or container[2] != b"n":
            raise LabelError(f"PDF object stream {entry[0]} is not in the cross-reference table")
        _, head, raw = _stream(data, container[0], table)
        if not isinstance(head.get(b"Type"), _Name) or head.get(b"Type").name != b"ObjStm":
            raise LabelError(f"PDF object {entry[0]} is not an object stream")
        count = _int(head.get(b"N"), "object stream /N")
        first = _int(head.get(b"First"), "object stream /First")
        pairs = [int(n) for n in re.findall(rb"\d{1,10}", raw[:first])]
        if len(pairs) < 2 * count:
            raise LabelError(f"PDF object stream {entry[0]} has a short header")
        for i in range(count):
            if pairs[2 * i] == number:
                value, _, _ = _object(raw, first + pairs[2 * i + 1])
                return value
        raise LabelError(f"PDF {what} {number} is not in object stream {entry[0]}")
    head_match = _OBJ_HEAD.match(data, _skip(data, entry[0])) if entry[0] < len(data) else None
    if head_match is None or int(head_match.group(1)) != number:
        raise LabelError(f"PDF {what} {number} is not at its cross-reference offset")
    value, _, _ = _object(data, head_match.end())
    return value


def _load(
    data: bytes,
) -> tuple[int, _Dict, dict[int, tuple[int, int, bytes]], _Dict | None, bool]:
    """Return the latest startxref, the latest trailer, the merged xref table, the Info dictionary and
    whether the latest cross-reference section is a stream."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if not sniff(data):
        raise LabelError("not a PDF file: no %PDF- header")
    data = bytes(data)
    start = _startxref(data)
    table: dict[int, tuple[int, int, bytes]] = {}
    latest: _Dict | None = None
    is_stream = False
    seen: set[int] = set()
    offset: int | None = start
    while offset is not None:
        if offset in seen or len(seen) >= _MAX_SECTIONS:
            raise LabelError("PDF /Prev chain loops or is too long")
        seen.add(offset)
        trailer, stream = _section(data, offset, table)
        if latest is None:
            latest, is_stream = trailer, stream
        prev = trailer.get(b"Prev")
        if prev is not None and (
            not isinstance(prev, int) or isinstance(prev, bool) or prev < 0
        ):
            raise LabelError("PDF trailer /Prev is not an offset")
        offset = prev
    assert latest is not None
    if latest.get(b"Encrypt") is not None:
        raise LabelError("PDF is encrypted; its Info strings cannot be labelled")
    info = latest.get(b"Info")
    if info is None:
        return start, latest, table, None, is_stream
    if isinstance(info, _Dict):
        return start, latest, table, info, is_stream
    if not isinstance(info, _Ref):
        raise LabelError("PDF trailer /Info is neither a reference nor a dictionary")
    if table.get(info.number, (0, 0, b"f"))[2] == b"f":
        raise LabelError(
            f"PDF Info object {info.number} is not in the cross-reference table"
        )
    value = _indirect(data, info.number, table, "Info object")
    if not isinstance(value, _Dict):
        raise LabelError("PDF Info object is not a dictionary")
    return start, latest, table, value, is_stream


def _text(value: bytes) -> str:
    try:
        if value[:2] == b"\xfe\xff":
            return value[2:].decode("utf-16-be")
        if value[:3] == b"\xef\xbb\xbf":
            return value[3:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(f"PDF /AIGC string is not valid text: {exc}") from None
    return value.decode("latin-1")


def read_labels(data: bytes) -> list[str]:
    """Return every ``/AIGC`` string in the latest Document Information dictionary.

    Raises:
        LabelError: the file is not a well-formed PDF, is encrypted, or its
            ``/AIGC`` value is not a string.
    """
    _, _, _, info, _ = _load(data)
    found: list[str] = []
    if info is None:
        return found
    for key, value, _, _ in info.entries:
        if key == b"AIGC":
            if not isinstance(value, bytes):
                raise LabelError("PDF /AIGC value is not a string")
            found.append(_text(value))
    return found


def _pdf_string(text: str) -> bytes:
    if text.isascii():
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        escaped = escaped.replace("\r", "\\r").replace("\n", "\\n")
        return b"(" + escaped.encode("ascii") + b")"
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode("ascii") + b">"


def _string_bytes(raw: bytes) -> bytes:
    """A PDF string for ``raw``: literal when it is printable ASCII, hex otherwise."""
    if all(0x20 <= c <= 0x7E for c in raw):
        return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"
    return b"<" + raw.hex().upper().encode("ascii") + b">"


def _name_bytes(name: bytes) -> bytes:
    out = bytearray(b"/")
    for char in name:
        if 0x21 <= char <= 0x7E and char not in _DELIMITERS and char != 0x23:
            out.append(char)
        else:
            out += b"#%02X" % char
    return bytes(out)


def _serialize(value: Any) -> bytes:
    """Write a parsed direct object back as PDF syntax (dictionaries keep their raw entries)."""
    if isinstance(value, _Dict):
        return b"<< " + b" ".join(raw_key + b" " + raw_value for _, _, raw_key, raw_value in value.entries) + b" >>"
    if isinstance(value, list):
        return b"[" + b" ".join(_serialize(item) for item in value) + b"]"
    if isinstance(value, _Ref):
        return b"%d %d R" % (value.number, value.generation)
    if isinstance(value, _Name):
        return _name_bytes(value.name)
    if isinstance(value, bytes):
        return _string_bytes(value)
    if value is None:
        return b"null"
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return b"%d" % value
    return format(value, "f").encode("ascii")


def _next_number(trailer: _Dict, table: dict[int, tuple[int, int, bytes]]) -> int:
    size = trailer.get(b"Size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise LabelError("PDF trailer has no valid /Size")
    return max(size, max(table, default=0) + 1)


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Group sorted object numbers into cross-reference subsections ``(first, count)``."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][0] + runs[-1][1] == number:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((number, 1))
    return runs


def _append_update(
    data: bytes,
    start: int,
    trailer: _Dict,
    is_stream: bool,
    objects: list[tuple[int, int, bytes]],
    *,
    info: int | None = None,
) -> tuple[bytes, dict[int, int]]:
    """Append ``objects`` (number, generation, body) and a cross-reference section chained by ``/Prev``.

    The section is a classic table, or a cross-reference stream when the latest one is (a classic
    table may not follow a stream). ``info`` is a new ``/Info`` object number. Returns the new file
    and each object's offset.
    """
    prefix = data if data.endswith((b"\n", b"\r")) else data + b"\n"
    out = bytearray(prefix)
    offsets: dict[int, int] = {}
    generations: dict[int, int] = {}
    for number, generation, body in objects:
        offsets[number] = len(out)
        generations[number] = generation
        out += b"%d %d obj\n" % (number, generation) + body + b"\nendobj\n"
    xref_offset = len(out)
    size = trailer.get(b"Size")
    size = size if isinstance(size, int) and not isinstance(size, bool) else 0
    replaced = (b"Size", b"Prev", b"XRefStm") + ((b"Info",) if info is not None else ())
    if is_stream:
        # A cross-reference stream may only be followed by another one; it lists itself too.
        own = max(size, max(offsets) + 1)
        offsets[own] = xref_offset
        generations[own] = 0
        if xref_offset >= 1 << 32:
            raise LabelError("PDF is too large for a 4-byte cross-reference offset")
        numbers = sorted(offsets)
        rows = b"".join(
            b"\x01" + offsets[n].to_bytes(4, "big") + generations[n].to_bytes(2, "big") for n in numbers
        )
        dropped = replaced + (b"Type", b"W", b"Index", b"Length", b"Filter", b"DecodeParms", b"DL",
                              b"F", b"FFilter", b"FDecodeParms")
        kept = [
            raw_key + b" " + raw_value
            for key, _, raw_key, raw_value in trailer.entries
            if key not in dropped
        ]
        index = b" ".join(b"%d %d" % run for run in _runs(numbers))
        kept = [b"/Type /XRef", b"/Size %d" % (own + 1), b"/Index [%s]" % index,
                b"/W [1 4 2]", b"/Length %d" % len(rows)] + kept
        kept += ([b"/Info %d 0 R" % info] if info is not None else []) + [b"/Prev %d" % start]
        out += (
            b"%d 0 obj\n<< " % own
            + b"\n".join(kept)
            + b" >>\nstream\n"
            + rows
            + b"\nendstream\nendobj\nstartxref\n%d\n%%%%EOF\n" % xref_offset
        )
        del offsets[own]
        return bytes(out), offsets
    numbers = sorted(offsets)
    # Object 0's free entry first: readers such as pypdf take a table whose first subsection does
    # not start at 0 for a mis-numbered one, and warn.
    out += b"xref\n0 1\n0000000000 65535 f\r\n"
    for first, count in _runs(numbers):
        out += b"%d %d\n" % (first, count)
        out += b"".join(b"%010d %05d n\r\n" % (offsets[n], generations[n]) for n in range(first, first + count))
    kept = [
        raw_key + b" " + raw_value
        for key, _, raw_key, raw_value in trailer.entries
        if key not in replaced
    ]
    kept.append(b"/Size %d" % max(size, numbers[-1] + 1))
    kept += ([b"/Info %d 0 R" % info] if info is not None else []) + [b"/Prev %d" % start]
    out += b"trailer\n<< " + b"\n".join(kept) + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref_offset
    return bytes(out), offsets


def write_label(data: bytes, payload: str) -> bytes:
    """Return the PDF with an incremental update whose Info dictionary has exactly one ``/AIGC``.

    The original bytes are an exact prefix of the result.

    Raises:
        LabelError: the file is malformed, is encrypted, or ``payload``
            is not an Annex E label.
    """
    AIGCLabel.parse(payload)
    start, trailer, table, info, is_stream = _load(data)
    number = _next_number(trailer, table)
    parts = [
        raw_key + b" " + raw_value
        for key, _, raw_key, raw_value in (info.entries if info else [])
        if key != b"AIGC"
    ]
    parts.append(b"/AIGC " + _pdf_string(payload))
    body = b"<< " + b"\n".join(parts) + b" >>"
    out, _ = _append_update(bytes(data), start, trailer, is_stream, [(number, 0, body)], info=number)
    return out


C2PA_NAME = b"Content Credentials"
"""The file name, description and ``/EmbeddedFiles`` key of the embedded manifest store (as c2pa-rs
names it, so c2pa-rs finds and replaces ours when it re-signs).

.. versionadded:: 0.2.0
"""


def _is_c2pa_spec(data: bytes, table: dict[int, tuple[int, int, bytes]], item: Any) -> bool:
    """Whether ``item`` is (a reference to) a file specification with ``/AFRelationship /C2PA_Manifest``."""
    if isinstance(item, _Ref):
        try:
            item = _indirect(data, item.number, table, "file specification")
        except LabelError:
            return False
    relationship = item.get(b"AFRelationship") if isinstance(item, _Dict) else None
    return isinstance(relationship, _Name) and relationship.name == b"C2PA_Manifest"


def _embedded_files(
    data: bytes, table: dict[int, tuple[int, int, bytes]], names: Any, spec: int
) -> bytes | None:
    """The catalog's new ``/Names`` value listing the manifest in ``/EmbeddedFiles``, or ``None`` to
    leave ``/Names`` as it is (an indirect dictionary, or a name tree with ``/Kids``)."""
    ours = [(C2PA_NAME, b"%d 0 R" % spec)]
    if names is None:
        return b"<< /EmbeddedFiles << /Names [(Content Credentials) %d 0 R] >> >>" % spec
    if not isinstance(names, _Dict):
        return None
    tree = names.get(b"EmbeddedFiles")
    if tree is not None and (not isinstance(tree, _Dict) or tree.get(b"Kids") is not None):
        return None
    pairs: list[tuple[bytes, bytes]] = []
    flat = tree.get(b"Names") if tree is not None else []
    if not isinstance(flat, list) or len(flat) % 2:
        return None
    for i in range(0, len(flat), 2):
        key, value = flat[i], flat[i + 1]
        if not isinstance(key, bytes):
            return None
        if key == C2PA_NAME or _is_c2pa_spec(data, table, value):
            continue  # The manifest store this update replaces.
        pairs.append((key, _serialize(value)))
    pairs = sorted(pairs + ours)
    listed = b"/Names [" + b" ".join(_string_bytes(k) + b" " + v for k, v in pairs) + b"]"
    kept = [rk + b" " + rv for k, _, rk, rv in (tree.entries if tree is not None else []) if k != b"Names"]
    new_tree = b"<< " + b" ".join(kept + [listed]) + b" >>"
    rest = [rk + b" " + rv for k, _, rk, rv in names.entries if k != b"EmbeddedFiles"]
    return b"<< " + b" ".join(rest + [b"/EmbeddedFiles " + new_tree]) + b" >>"


def embed_c2pa(data: bytes, store: bytes) -> tuple[bytes, int]:
    """Append an incremental update that embeds ``store`` as the file's C2PA manifest store.

    The update follows the C2PA specification's PDF embedding: an embedded file stream
    (``/Type /EmbeddedFile``, ``/Subtype /application#2Fc2pa``, no filter) holding ``store`` byte for
    byte, a file specification with ``/AFRelationship /C2PA_Manifest`` that points at it, and a new
    version of the catalog whose ``/AF`` array lists that file specification (instead of any earlier
    C2PA one: the new store replaces it) and whose ``/EmbeddedFiles`` name tree lists it as
    :data:`C2PA_NAME` when the tree is a direct flat array (or absent). The original bytes are an
    exact prefix of the result. Embedding a same-length store at the returned offset later (the
    signed manifest over a placeholder) keeps the file valid.

    Args:
        data: A PDF.
        store: The manifest store bytes (JUMBF).

    Returns:
        The new file and the offset of the first byte of ``store`` in it.

    Raises:
        LabelError: the file is malformed or encrypted, or its catalog or ``/AF`` is not usable.

    .. versionadded:: 0.2.0
    """
    if not isinstance(store, (bytes, bytearray)) or not store:
        raise TypeError("store must be non-empty bytes")
    start, trailer, table, _, is_stream = _load(data)
    data = bytes(data)
    root = trailer.get(b"Root")
    if not isinstance(root, _Ref):
        raise LabelError("PDF trailer has no /Root reference")
    catalog = _indirect(data, root.number, table, "catalog")
    if not isinstance(catalog, _Dict):
        raise LabelError("PDF catalog is not a dictionary")
    entry = table[root.number]
    generation = entry[1] if entry[2] == b"n" else 0
    number = _next_number(trailer, table)
    stream_number, spec_number = number, number + 1
    associated = catalog.get(b"AF")
    if isinstance(associated, _Ref):
        associated = _indirect(data, associated.number, table, "/AF array")
    if associated is None:
        associated = []
    if not isinstance(associated, list):
        raise LabelError("PDF catalog /AF is not an array")
    files = [_serialize(item) for item in associated if not _is_c2pa_spec(data, table, item)]
    files.append(b"%d 0 R" % spec_number)
    names = _embedded_files(data, table, catalog.get(b"Names"), spec_number)
    replaced = (b"AF", b"Names") if names is not None else (b"AF",)
    entries = [rk + b" " + rv for key, _, rk, rv in catalog.entries if key not in replaced]
    entries.append(b"/AF [" + b" ".join(files) + b"]")
    if names is not None:
        entries.append(b"/Names " + names)
    stamp = datetime.now(timezone.utc).strftime("D:%Y%m%d%H%M%SZ").encode("ascii")
    # No "stream" in this dictionary: c2pa-rs finds the content as the bytes after the first one.
    head = (
        b"<< /Type /EmbeddedFile /Subtype /application#2Fc2pa /Params << /Size %d /ModDate (%s) >>"
        b" /Length %d >>\nstream\n" % (len(store), stamp, len(store))
    )
    spec = (
        b"<< /Type /Filespec /F (Content Credentials) /UF (Content Credentials)"
        b" /Desc (Content Credentials) /AFRelationship /C2PA_Manifest /EF << /F %d 0 R /UF %d 0 R >> >>"
        % (stream_number, stream_number)
    )
    objects = [
        (root.number, generation, b"<< " + b"\n".join(entries) + b" >>"),
        (stream_number, 0, head + bytes(store) + b"\nendstream"),
        (spec_number, 0, spec),
    ]
    out, offsets = _append_update(data, start, trailer, is_stream, objects)
    return out, offsets[stream_number] + len(b"%d 0 obj\n" % stream_number) + len(head)
