"""Parsing XML from untrusted files (XMP packets, OOXML parts) without the classic XML attacks."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from typing import Any, cast
from xml.sax.saxutils import escape, quoteattr

from ..errors import LabelError

# Any markup declaration other than a comment or CDATA: <!DOCTYPE, <!ENTITY, <!ELEMENT… None of them
# belongs in XMP or OOXML parts, and refusing them rules out entity expansion and external entities.
_DECLARATION = re.compile(r"<!(?!--|\[CDATA\[)")


def parse_untrusted(text: str, what: str, *, max_depth: int) -> tuple[ET.Element, dict[str, str]]:
    """Parse decoded XML text; return the root and the first prefix seen for each namespace URI.

    Raises:
        LabelError: the text has a DTD or other markup declaration, nests deeper than
            ``max_depth``, or is not well-formed. ``what`` names the document in the message.
    """
    if _DECLARATION.search(text):
        raise LabelError(f"{what} contains a DTD or markup declaration (<!DOCTYPE, <!ENTITY, ...); refused")
    # Parsing a str makes expat ignore any encoding declaration; the text is already decoded.
    parser: ET.XMLPullParser[Any] = ET.XMLPullParser(events=("start", "end", "start-ns"))
    prefixes: dict[str, str] = {}
    depth = 0
    root: ET.Element | None = None
    try:
        for start in range(0, len(text), 65536):
            parser.feed(text[start : start + 65536])
            # Reading events chunk by chunk stops a deeply nested document before it is all built.
            # Pairs whose item's type follows the event (typeshed's union cannot say which).
            events = cast("Iterator[tuple[str, Any]]", parser.read_events())
            for event, item in events:
                if event == "start":
                    depth += 1
                    if depth > max_depth:
                        raise LabelError(f"{what} nests elements deeper than {max_depth}")
                    if root is None:
                        root = item
                elif event == "end":
                    depth -= 1
                else:
                    prefix, uri = item
                    prefixes.setdefault(uri, prefix)
        parser.close()
    except ET.ParseError as exc:
        raise LabelError(f"{what} is not well-formed XML: {exc}") from None
    if root is None:  # pragma: no cover - expat refuses a document without a root element.
        raise LabelError(f"{what} has no root element")
    return root, prefixes


_XML_NS = "http://www.w3.org/XML/1998/namespace"
_ATTRIBUTE_ESCAPES = {chr(10): "&#10;", chr(13): "&#13;", chr(9): "&#9;"}


def serialise(root: ET.Element, seen: Mapping[str, str], preferred: Mapping[str, str], *,
              default_namespace: bool = False, self_close: bool = False) -> str:
    """Serialise ``root`` with every namespace declared on it, keeping the file's own prefixes.

    Args:
        root: The element tree (parsed by :func:`parse_untrusted`, then edited).
        seen: The prefix each namespace URI had in the file.
        preferred: Prefixes to use for URIs the file did not name ("" for none).
        default_namespace: Declare the root's namespace as the default (OOXML parts do).
        self_close: Write empty elements as ``<a/>``.
    """
    uris: list[str] = []
    for element in root.iter():
        for name in (element.tag, *element.attrib):
            if isinstance(name, str) and name.startswith("{"):
                uri = name[1:].partition("}")[0]
                if uri != _XML_NS and uri not in uris:
                    uris.append(uri)
    default = root.tag[1:].partition("}")[0] if default_namespace and root.tag.startswith("{") else None
    prefixes: dict[str, str] = {_XML_NS: "xml"}
    used = {"xml", ""}
    for number, uri in enumerate(uris):
        if uri == default:
            prefixes[uri] = ""
            continue
        prefix = seen.get(uri) or preferred.get(uri) or f"ns{number}"
        if prefix in used:
            prefix = f"ns{number}"
            while prefix in used:
                prefix += "_"
        prefixes[uri] = prefix
        used.add(prefix)

    def qname(name: str) -> str:
        if name.startswith("{"):
            uri, _, local = name[1:].partition("}")
            prefix = prefixes[uri]
            return f"{prefix}:{local}" if prefix else local
        return name

    out: list[str] = []

    def write(element: ET.Element, declare: bool) -> None:
        tag = qname(element.tag)
        out.append(f"<{tag}")
        if declare:
            for uri in uris:
                prefix = prefixes[uri]
                out.append(f" xmlns:{prefix}={quoteattr(uri)}" if prefix else f" xmlns={quoteattr(uri)}")
        for name, value in element.attrib.items():
            out.append(f" {qname(name)}={quoteattr(value, _ATTRIBUTE_ESCAPES)}")
        if self_close and len(element) == 0 and not element.text:
            out.append("/>")
            return
        out.append(">")
        out.append(escape(element.text or ""))
        for child in element:
            write(child, False)
            out.append(escape(child.tail or ""))
        out.append(f"</{tag}>")

    # Depth is bounded by parse_untrusted's max_depth, so this recursion is bounded too.
    write(root, True)
    return "".join(out)
