"""Markdown: the label as an ``AIGC:`` mapping in the YAML front matter at the head of the file.

The text guide (TC260-PG-20258A §6.5) puts the seven Annex E elements in front matter::

    ---
    title: Example
    AIGC:
      Label: "1"
      ContentProducer: "001191440300708461136T1XGW3"
      ProduceID: "..."
      ReservedCode1: ""
      ContentPropagator: "..."
      PropagateID: "..."
      ReservedCode2: ""
    ---

No YAML library is used: this module reads and writes a restricted form itself. Reading accepts a
top-level ``AIGC:`` key followed either by an indented block of ``Key: scalar`` lines (double-quoted,
single-quoted or plain scalars) or by a value on the same line (JSON, or a quoted string holding JSON).
A block is returned as the compact JSON object of its keys in file order; a one-line value is returned
as written. Writing removes every top-level ``AIGC`` key with its block and appends one block, values
as YAML double-quoted strings in Annex E order, at the end of the front matter; other front-matter
lines and the body are kept byte for byte. Without front matter, a new one is put at the head of the
file (after a UTF-8 byte-order mark, if any). The line ending follows the file's first line.
"""

from __future__ import annotations

import json
import re

from aiobligations.errors import LabelError
from aiobligations.labels.annex_e import AIGCLabel

__all__ = ["MEDIA_TYPES", "read_labels", "sniff", "write_label"]

MEDIA_TYPES: tuple[str, ...] = ("text/markdown",)
"""The media types this module handles."""

MAX_SIZE = 64 * 1024 * 1024
"""The largest Markdown file accepted, in bytes."""

_BOM = "\ufeff"
# Patterns written to match in linear time: no two adjacent parts can consume the same characters.
_KEY = re.compile(r"""(?:AIGC|"AIGC"|'AIGC')[ \t]*:(?:[ \t](.*))?$""")
_ENTRY = re.compile(
    r"""([ \t]+)("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s:#'"][^:]*):(?:[ \t](.*))?$"""
)
_SIMPLE_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _text(data: bytes) -> str:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if len(data) > MAX_SIZE:
        raise LabelError(f"Markdown file is {len(data)} bytes, more than {MAX_SIZE}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(f"Markdown file is not UTF-8: {exc}") from None
    if "\0" in text:
        raise LabelError("Markdown file contains a NUL character")
    return text


def sniff(data: bytes) -> bool:
    """Return whether ``data`` starts with a YAML front matter delimiter (``---``), after any BOM.

    Markdown has no signature, so a file without front matter is labelled only when its media type
    is given explicitly.
    """
    head = bytes(data[:8])
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return head.startswith((b"---\n", b"---\r\n"))


def _is_delimiter(line: str, closing: bool) -> bool:
    stripped = line.rstrip("\r\n").rstrip(" \t")
    return stripped == "---" or (closing and stripped == "...")


def _split(text: str) -> tuple[str, list[str] | None, list[str]]:
    """Return the BOM, the front-matter lines (with both delimiters) or ``None``, and the rest."""
    bom = _BOM if text.startswith(_BOM) else ""
    lines = text[len(bom) :].splitlines(keepends=True)
    if (
        lines
        and _is_delimiter(lines[0], False)
        and lines[0].rstrip(" \t").endswith("\n")
    ):
        for index in range(1, len(lines)):
            if _is_delimiter(lines[index], True):
                return bom, lines[: index + 1], lines[index + 1 :]
    return bom, None, lines


def _double_quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            code = text[pos + 1 : pos + 2]
            if code in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[code])
                pos += 2
                continue
            if code in _HEX_ESCAPES:
                digits = text[pos + 2 : pos + 2 + _HEX_ESCAPES[code]]
                if len(digits) != _HEX_ESCAPES[code] or not re.fullmatch(
                    r"[0-9A-Fa-f]+", digits
                ):
                    raise LabelError(f"front matter has a bad \\{code} escape")
                value = int(digits, 16)
                if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                    raise LabelError(
                        f"front matter escape \\{code}{digits} is not a character"
                    )
                out.append(chr(value))
                pos += 2 + len(digits)
                continue
            raise LabelError(f"front matter has an unknown escape \\{code}")
        out.append(char)
        pos += 1
    raise LabelError("front matter has an unterminated double-quoted string")


def _scalar(raw: str | None) -> str:
    """Decode a one-line YAML scalar: double-quoted, single-quoted or plain (comments removed)."""
    if raw is None:
        return ""
    raw = raw.strip(" \t")
    if raw.startswith('"'):
        value, end = _double_quoted(raw, 0)
    elif raw.startswith("'"):
        match = re.match(r"'((?:[^']|'')*)'", raw)
        if not match:
            raise LabelError("front matter has an unterminated single-quoted string")
        value, end = match.group(1).replace("''", "'"), match.end()
    else:
        return (
            re.split(r"[ \t]#", raw, maxsplit=1)[0].rstrip(" \t")
            if not raw.startswith("#")
            else ""
        )
    rest = raw[end:].strip(" \t")
    if rest and not rest.startswith("#"):
        raise LabelError(f"front matter has text after a quoted string: {rest[:20]!r}")
    return value


def _blocks(front: list[str]) -> list[tuple[int, int, str]]:
    """Return ``(first, last + 1, label)`` for every top-level ``AIGC`` key among the inner lines."""
    found: list[tuple[int, int, str]] = []
    index = 0
    while index < len(front):
        line = front[index].rstrip("\r\n")
        match = _KEY.match(line)
        index += 1
        if not match:
            continue
        first = index - 1
        value = (match.group(1) or "").strip(" \t")
        if value and not value.startswith("#"):
            if value.startswith(("{", "[")):
                # Returned as written, even when it is not JSON: a label that does not parse is a
                # finding of inspect, and labelling replaces it, rather than making the file unusable.
                found.append((first, index, value))
            else:
                found.append((first, index, _scalar(value)))
            continue
        entries: dict[str, str] = {}
        end = index
        indent: str | None = None
        while index < len(front):
            inner = front[index].rstrip("\r\n")
            if not inner.strip() or inner.lstrip(" \t").startswith("#"):
                index += 1
                continue
            if inner[:1] not in (" ", "\t"):
                break
            entry = _ENTRY.match(inner)
            if not entry or (indent is not None and entry.group(1) != indent):
                raise LabelError(
                    f"front matter AIGC block has a line that is not 'Key: value': {inner[:40]!r}"
                )
            indent = entry.group(1)
            key = _scalar(entry.group(2).rstrip(" \t"))
            if key in entries:
                raise LabelError(f"front matter AIGC block has a duplicate key {key!r}")
            entries[key] = _scalar(entry.group(3))
            index += 1
            end = index
        found.append(
            (first, end, json.dumps(entries, ensure_ascii=False, separators=(",", ":")))
        )
        index = end
    return found


def read_labels(data: bytes) -> list[str]:
    """Return every ``AIGC`` label in the front matter (none when there is no front matter).

    Raises:
        LabelError: the file is not UTF-8, too large, or an ``AIGC`` entry is malformed.
    """
    _, front, _ = _split(_text(data))
    if front is None:
        return []
    return [label for _, _, label in _blocks(front[1:-1])]


def _quote(value: str) -> str:
    out = ['"']
    for char in value:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02X}")
        elif char in "\x85\u2028\u2029\ufeff" or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def write_label(data: bytes, payload: str) -> bytes:
    """Return the Markdown file with exactly one ``AIGC`` block in its front matter, from ``payload``.

    Raises:
        LabelError: the file is not UTF-8 or has a malformed ``AIGC`` entry, or ``payload`` is not an
            Annex E label.
    """
    label = AIGCLabel.parse(payload)
    bom, front, rest = _split(_text(data))
    newline = "\r\n" if (front or rest or [""])[0].endswith("\r\n") else "\n"
    block = [f"AIGC:{newline}"] + [
        f"  {key}: {_quote(value)}{newline}" for key, value in label.as_dict().items()
    ]
    if front is None:
        lines = [f"---{newline}", *block, f"---{newline}"]
    else:
        inner = front[1:-1]
        for first, end, _ in reversed(_blocks(inner)):
            del inner[first:end]
        lines = [front[0], *inner, *block, front[-1]]
    return (bom + "".join(lines) + "".join(rest)).encode("utf-8")
