"""DOCX, XLSX and PPTX: the label as the custom document property ``AIGC`` in ``docProps/custom.xml``.

The text guide (TC260-PG-20258A §6.1) stores the direct Annex E object as::

    <property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="N" name="AIGC"><vt:lpwstr>JSON</vt:lpwstr></property>

Writing copies every ZIP member in order, with its name, date, attributes, compression type and content
unchanged (compressed bytes may differ, as members are recompressed), except three parts:

- the custom properties part (found through ``_rels/.rels``, else ``docProps/custom.xml``): existing
  properties are kept, every ``AIGC`` property is removed and one is added with the next free ``pid``;
- ``_rels/.rels`` gets the custom-properties relationship if it lacks one;
- ``[Content_Types].xml`` gets the part's ``Override`` if it lacks one.

These parts are re-serialised (namespace prefixes may change). Zip-bomb limits: at most
:data:`MAX_MEMBERS` members and :data:`MAX_TOTAL_SIZE` bytes uncompressed (declared sizes are checked
before reading and reads are bounded by them); XML is parsed only after refusing any ``<!DOCTYPE`` or
``<!ENTITY`` declaration, with bounded size and depth.
"""

from __future__ import annotations

import io
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from xml.sax.saxutils import escape

from aiobligations.errors import LabelError
from aiobligations.labels._xml import parse_untrusted, serialise
from aiobligations.labels.annex_e import AIGCLabel

__all__ = [
    "MAX_MEMBERS",
    "MAX_TOTAL_SIZE",
    "MEDIA_TYPES",
    "read_labels",
    "sniff",
    "write_label",
]

MEDIA_TYPES: tuple[str, ...] = (
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
)
"""The media types this module handles."""

MAX_MEMBERS = 10_000
"""The most ZIP members accepted."""

MAX_TOTAL_SIZE = 512 * 1024 * 1024
"""The largest total uncompressed size accepted, in bytes."""

MAX_XML_SIZE = 16 * 1024 * 1024
"""The largest XML part parsed, in bytes."""

_MAX_DEPTH = 64
FMTID = "{D5CDD505-2E9C-101B-9397-08002B2CF9AE}"
_CUSTOM_NS = "http://schemas.openxmlformats.org/officeDocument/2006/custom-properties"
_VT_NS = "http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes"
_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_CUSTOM_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"
_CUSTOM_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_DEFAULT_PART = "docProps/custom.xml"
_RELS = "_rels/.rels"
_TYPES = "[Content_Types].xml"
_PREFIXES = {_CUSTOM_NS: "", _VT_NS: "vt", _REL_NS: "", _CT_NS: ""}


def sniff(data: bytes) -> bool:
    """Return whether ``data`` is a ZIP archive that names a ``[Content_Types].xml`` part."""
    return bytes(data[:4]) == b"PK\x03\x04" and b"[Content_Types].xml" in bytes(data)


def _open(data: bytes) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if bytes(data[:4]) != b"PK\x03\x04":
        raise LabelError("not an OOXML file: not a ZIP archive")
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
        infos = archive.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        ValueError,
        OSError,
        EOFError,
        NotImplementedError,
        RuntimeError,
        struct.error,
    ) as exc:
        raise LabelError(f"OOXML file is not a valid ZIP archive: {exc}") from None
    if len(infos) > MAX_MEMBERS:
        raise LabelError(
            f"OOXML archive has {len(infos)} members, more than {MAX_MEMBERS}"
        )
    names = [info.filename.lower() for info in infos]
    if len(set(names)) != len(names):
        raise LabelError("OOXML archive has duplicate member names")
    if sum(info.file_size for info in infos) > MAX_TOTAL_SIZE:
        raise LabelError(
            f"OOXML archive declares more than {MAX_TOTAL_SIZE} bytes uncompressed"
        )
    if not any(name == _TYPES.lower() for name in names):
        raise LabelError("not an OOXML package: no [Content_Types].xml")
    return archive, infos


def _read(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int | None = None
) -> bytes:
    if limit is not None and info.file_size > limit:
        raise LabelError(
            f"OOXML part {info.filename} is {info.file_size} bytes, more than {limit}"
        )
    try:
        with archive.open(info) as stream:
            out = stream.read(info.file_size + 1)
    except (
        zipfile.BadZipFile,
        ValueError,
        OSError,
        EOFError,
        NotImplementedError,
        RuntimeError,
        zlib.error,
        struct.error,
    ) as exc:
        raise LabelError(f"OOXML part {info.filename} cannot be read: {exc}") from None
    if len(out) != info.file_size:
        raise LabelError(f"OOXML part {info.filename} does not have its declared size")
    return out


def _parse(xml: bytes, what: str) -> tuple[ET.Element, dict[str, str]]:
    """Parse an untrusted XML part; refuse declarations, oversize input and deep nesting."""
    if len(xml) > MAX_XML_SIZE:
        raise LabelError(f"{what} is more than {MAX_XML_SIZE} bytes")
    try:
        text = (
            xml.decode("utf-8-sig")
            if not xml.startswith((b"\xff\xfe", b"\xfe\xff"))
            else xml.decode("utf-16")
        )
    except UnicodeDecodeError as exc:
        raise LabelError(f"{what} is not UTF-8 or UTF-16: {exc}") from None
    text = re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)
    return parse_untrusted(text, what, max_depth=_MAX_DEPTH)


def _serialise(root: ET.Element, seen: dict[str, str]) -> bytes:
    """Serialise ``root`` with every namespace declared on it; the root's namespace is the default."""
    body = serialise(root, seen, _PREFIXES, default_namespace=True, self_close=True)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n' + body).encode("utf-8")


def _custom_part(
    archive: zipfile.ZipFile, by_name: dict[str, zipfile.ZipInfo]
) -> tuple[str, ET.Element | None, dict[str, str]]:
    """Return the custom properties part name, and the parsed ``_rels/.rels`` (if any) and its prefixes."""
    info = by_name.get(_RELS.lower())
    if info is None:
        return _DEFAULT_PART, None, {}
    rels, prefixes = _parse(_read(archive, info, MAX_XML_SIZE), _RELS)
    for rel in rels:
        if (
            rel.tag == f"{{{_REL_NS}}}Relationship"
            and rel.get("Type") == _CUSTOM_REL
            and rel.get("TargetMode") != "External"
        ):
            target = (rel.get("Target") or "").lstrip("/")
            if target:
                return target, rels, prefixes
    return _DEFAULT_PART, rels, prefixes


def _labels(root: ET.Element) -> list[str]:
    found: list[str] = []
    for prop in root:
        if prop.tag == f"{{{_CUSTOM_NS}}}property" and prop.get("name") == "AIGC":
            found.append("".join(prop.itertext()))
    return found


def read_labels(data: bytes) -> list[str]:
    """Return every custom property named ``AIGC`` in the package's custom properties part.

    Raises:
        LabelError: the file is not a valid OOXML package, exceeds the size limits, or a part is
            malformed or hostile XML.
    """
    archive, infos = _open(data)
    with archive:
        by_name = {info.filename.lower(): info for info in infos}
        part, _, _ = _custom_part(archive, by_name)
        info = by_name.get(part.lower())
        if info is None:
            return []
        root, _ = _parse(_read(archive, info, MAX_XML_SIZE), part)
        return _labels(root)


def _new_custom(payload: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Properties xmlns="{_CUSTOM_NS}" xmlns:vt="{_VT_NS}">'
        f'<property fmtid="{FMTID}" pid="2" name="AIGC"><vt:lpwstr>{escape(payload)}</vt:lpwstr></property>'
        "</Properties>"
    ).encode()


def _merge_custom(xml: bytes, part: str, payload: str) -> bytes:
    root, prefixes = _parse(xml, part)
    if root.tag != f"{{{_CUSTOM_NS}}}Properties":
        raise LabelError(f"{part} is not a custom properties part")
    pids = [1]  # The first pid is 2.
    for prop in list(root):
        if prop.tag == f"{{{_CUSTOM_NS}}}property" and prop.get("name") == "AIGC":
            root.remove(prop)
            continue
        pid = prop.get("pid", "")
        if pid.isdigit() and len(pid) < 10:
            pids.append(int(pid))
    prop = ET.SubElement(
        root,
        f"{{{_CUSTOM_NS}}}property",
        {"fmtid": FMTID, "pid": str(max(pids) + 1), "name": "AIGC"},
    )
    ET.SubElement(prop, f"{{{_VT_NS}}}lpwstr").text = payload
    return _serialise(root, prefixes)


def write_label(data: bytes, payload: str) -> bytes:
    """Return the package with exactly one ``AIGC`` custom property, ``payload``.

    Raises:
        LabelError: the file is not a valid OOXML package, exceeds the size limits, a part is malformed
            or hostile XML, or ``payload`` is not an Annex E label.
    """
    AIGCLabel.parse(payload)
    if re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", payload):
        raise LabelError("payload contains a character XML cannot carry")
    archive, infos = _open(data)
    with archive:
        by_name = {info.filename.lower(): info for info in infos}
        part, rels, rel_prefixes = _custom_part(archive, by_name)
        replaced: dict[str, bytes] = {}
        custom_info = by_name.get(part.lower())
        if custom_info is None:
            replaced[part.lower()] = _new_custom(payload)
        else:
            replaced[part.lower()] = _merge_custom(
                _read(archive, custom_info, MAX_XML_SIZE), part, payload
            )
        # The relationship from the package to the part.
        if rels is None:
            rels = ET.Element(f"{{{_REL_NS}}}Relationships")
        if not any(
            rel.get("Type") == _CUSTOM_REL and rel.get("TargetMode") != "External"
            for rel in rels
        ):
            ids = {rel.get("Id") for rel in rels}
            number = len(ids) + 1
            while f"rId{number}" in ids:
                number += 1
            ET.SubElement(
                rels,
                f"{{{_REL_NS}}}Relationship",
                {"Id": f"rId{number}", "Type": _CUSTOM_REL, "Target": part},
            )
            replaced[_RELS.lower()] = _serialise(rels, rel_prefixes)
        # The content type of the part.
        types_info = by_name[_TYPES.lower()]
        types, type_prefixes = _parse(_read(archive, types_info, MAX_XML_SIZE), _TYPES)
        part_name = "/" + part
        overrides = [
            item
            for item in types
            if item.tag == f"{{{_CT_NS}}}Override"
            and (item.get("PartName") or "").lower() == part_name.lower()
        ]
        if not overrides or any(
            item.get("ContentType") != _CUSTOM_TYPE for item in overrides
        ):
            for item in overrides:
                types.remove(item)
            ET.SubElement(
                types,
                f"{{{_CT_NS}}}Override",
                {"PartName": part_name, "ContentType": _CUSTOM_TYPE},
            )
            replaced[_TYPES.lower()] = _serialise(types, type_prefixes)

        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as writer:
            for info in infos:
                content = replaced.pop(info.filename.lower(), None)
                if content is None:
                    content = _read(archive, info)
                writer.writestr(info, content, compress_type=info.compress_type)
            for name, content in replaced.items():
                new = zipfile.ZipInfo(
                    part if name == part.lower() else name,
                    date_time=(1980, 1, 1, 0, 0, 0),
                )
                writer.writestr(new, content, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()
