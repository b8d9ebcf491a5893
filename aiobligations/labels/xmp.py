"""XMP packets carrying the GB 45438 label as ``TC260:AIGC``, parsed safely.

The image guide (TC260-PG-20259A) puts the Annex E string in the property ``AIGC`` of the namespace
``http://www.tc260.org.cn/ns/AIGC/1.0/`` (prefix ``TC260``; other prefixes occur, so matching is by URI).
Both the element form ``<TC260:AIGC>…</TC260:AIGC>`` and the attribute form
``<rdf:Description TC260:AIGC="…">`` are read; :func:`set_aigc` writes the element form and keeps every
other property of an existing packet.

XMP comes from untrusted files, so before :mod:`xml.etree.ElementTree` sees a byte:

- the packet must be UTF-8 and at most :data:`MAX_XMP_SIZE` bytes;
- any markup declaration (``<!DOCTYPE``, ``<!ENTITY``, …) is refused, so no DTD, entity or external
  reference is ever processed; comments and CDATA sections are allowed;
- element nesting deeper than :data:`MAX_DEPTH` is refused while parsing.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

from aiobligations.errors import LabelError
from aiobligations.labels._xml import parse_untrusted, serialise

__all__ = ["MAX_DEPTH", "MAX_XMP_SIZE", "TC260_NS", "build_packet", "get_aigc", "set_aigc"]

TC260_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
"""The namespace URI of the ``TC260:AIGC`` property."""

MAX_XMP_SIZE = 4 * 1024 * 1024
"""The largest XMP packet accepted, in bytes."""

MAX_DEPTH = 64
"""The deepest element nesting accepted."""

_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_X_NS = "adobe:ns:meta/"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_AIGC = f"{{{TC260_NS}}}AIGC"
_DESCRIPTION = f"{{{_RDF_NS}}}Description"
_RDF = f"{{{_RDF_NS}}}RDF"
_PACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
_PACKET_END = '<?xpacket end="w"?>'
_PREFERRED = {_X_NS: "x", _RDF_NS: "rdf", TC260_NS: "TC260"}


def build_packet(payload: str) -> bytes:
    """Return a new UTF-8 XMP packet whose only property is ``TC260:AIGC`` = ``payload``."""
    if not isinstance(payload, str):
        raise TypeError(f"payload must be a str, got {type(payload).__name__}")
    body = (
        f'<x:xmpmeta xmlns:x="{_X_NS}"><rdf:RDF xmlns:rdf="{_RDF_NS}">'
        f'<rdf:Description rdf:about="" xmlns:TC260="{TC260_NS}">'
        f"<TC260:AIGC>{_escape_text(payload)}</TC260:AIGC>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    return (_PACKET_BEGIN + body + _PACKET_END).encode("utf-8")


def _escape_text(text: str) -> str:
    _check_xml_chars(text)
    return escape(text, {'"': "&quot;"})


def _check_xml_chars(text: str) -> None:
    bad = re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", text)
    if bad:
        raise LabelError(f"payload contains {bad.group()!r}, which XML cannot carry")


def _parse(xmp: bytes) -> tuple[ET.Element, dict[str, str]]:
    """Parse untrusted XMP; return the root element and the first prefix seen for each namespace URI."""
    if not isinstance(xmp, (bytes, bytearray, memoryview)):
        raise TypeError(f"xmp must be bytes, got {type(xmp).__name__}")
    if len(xmp) > MAX_XMP_SIZE:
        raise LabelError(f"XMP packet is {len(xmp)} bytes, more than {MAX_XMP_SIZE}")
    try:
        text = bytes(xmp).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LabelError(f"XMP packet is not UTF-8: {exc}") from None
    return parse_untrusted(text.lstrip("\ufeff"), "XMP packet", max_depth=MAX_DEPTH)


def get_aigc(xmp: bytes) -> list[str]:
    """Return every ``AIGC`` property value in the TC260 namespace, element and attribute forms.

    Raises:
        LabelError: the packet is too large, not UTF-8, not well-formed, too deep or has a DTD.
    """
    root, _ = _parse(xmp)
    found: list[str] = []
    for element in root.iter():
        value = element.get(_AIGC)
        if value is not None:
            found.append(value)
        if element.tag == _AIGC:
            found.append("".join(element.itertext()))
    return found


def set_aigc(xmp: bytes | None, payload: str) -> bytes:
    """Return an XMP packet with exactly one ``TC260:AIGC`` property, set to ``payload``.

    With ``xmp`` given, its other properties are kept (namespace URIs and prefixes survive, though the
    text is re-serialised) and every existing TC260 ``AIGC`` property, element or attribute, is replaced.

    Raises:
        LabelError: ``xmp`` cannot be parsed safely or has no ``rdf:RDF`` element.
    """
    if xmp is None:
        return build_packet(payload)
    if not isinstance(payload, str):
        raise TypeError(f"payload must be a str, got {type(payload).__name__}")
    _check_xml_chars(payload)
    root, prefixes = _parse(xmp)
    rdf = root if root.tag == _RDF else root.find(f".//{_RDF}")
    if rdf is None:
        raise LabelError("XMP packet has no rdf:RDF element")
    for element in list(root.iter()):
        element.attrib.pop(_AIGC, None)
        for child in [child for child in element if child.tag == _AIGC]:
            element.remove(child)
    description = rdf.find(_DESCRIPTION)
    if description is None:
        description = ET.SubElement(rdf, _DESCRIPTION, {f"{{{_RDF_NS}}}about": ""})
    ET.SubElement(description, _AIGC).text = payload
    return (_PACKET_BEGIN + _serialise(root, prefixes) + _PACKET_END).encode("utf-8")


def _serialise(root: ET.Element, seen: dict[str, str]) -> str:
    """Serialise with every namespace declared on the root, keeping the file's own prefixes."""
    return serialise(root, seen, _PREFERRED)
