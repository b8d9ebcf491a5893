"""Parsing XML from untrusted files (XMP packets, OOXML parts) without the classic XML attacks."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

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
    parser = ET.XMLPullParser(events=("start", "end", "start-ns"))
    prefixes: dict[str, str] = {}
    depth = 0
    root: ET.Element | None = None
    try:
        for start in range(0, len(text), 65536):
            parser.feed(text[start : start + 65536])
            # Reading events chunk by chunk stops a deeply nested document before it is all built.
            for event, item in parser.read_events():
                if event == "start":
                    depth += 1
                    if depth > max_depth:
                        raise LabelError(f"{what} nests elements deeper than {max_depth}")
                    if root is None:
                        root = item  # type: ignore[assignment]
                elif event == "end":
                    depth -= 1
                else:
                    prefix, uri = item  # type: ignore[misc]
                    prefixes.setdefault(uri, prefix)
        parser.close()
    except ET.ParseError as exc:
        raise LabelError(f"{what} is not well-formed XML: {exc}") from None
    if root is None:  # pragma: no cover - expat refuses a document without a root element.
        raise LabelError(f"{what} has no root element")
    return root, prefixes
