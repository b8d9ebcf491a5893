"""GB 45438 labels in GIF, TIFF, PDF, OOXML (DOCX) and Markdown: round trips, content kept, hostile input."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobligations.errors import LabelError
from aiobligations.labels.annex_e import AIGCLabel
from aiobligations.labels.formats import gif, markdown, ooxml, pdf, tiff

PAYLOAD = AIGCLabel(
    label="1",
    content_producer="001191440300708461136T1XGW3",
    produce_id='id-1(x)\\"<&>',
    content_propagator="001191440300708461136T1XGW3",
    propagate_id="id-1",
).to_json()
OTHER = AIGCLabel(
    label="2", content_producer="001191110102MACQD9K64010000", produce_id="p-2"
).to_json()

# --------------------------------------------------------------------------------------------- builders


def make_gif(version: bytes = b"GIF89a", *, comment: bool = True) -> bytes:
    """A 1x1 GIF with a two-entry global colour table, a comment extension and one LZW-coded pixel."""
    out = (
        version + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    )
    if comment and version == b"GIF89a":
        out += b"\x21\xfe\x05hello\x00"
    out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # Graphic Control Extension.
    out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def gif_image_bytes(data: bytes) -> bytes:
    """The image descriptor, LZW data and trailer (everything from the first 0x2C)."""
    return data[data.index(b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00") :]


def make_tiff(order: str) -> bytes:
    """A 2x1 uncompressed RGB TIFF, one strip, in the given byte order (``<`` or ``>``)."""
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    entries = [
        (256, 3, 1, 2),
        (257, 3, 1, 1),
        (258, 3, 3, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, 3),
        (278, 3, 1, 1),
        (279, 4, 1, 6),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = 8 + ifd_size
    strip_offset = bits_offset + 6

    def value(tag: int, kind: int, default: int | None) -> bytes:
        if tag == 258:
            return struct.pack(order + "I", bits_offset)
        if tag == 273:
            return struct.pack(order + "I", strip_offset)
        assert default is not None
        return (
            struct.pack(order + "HH", default, 0)
            if kind == 3
            else struct.pack(order + "I", default)
        )

    ifd = struct.pack(order + "H", len(entries))
    ifd += b"".join(
        struct.pack(order + "HHI", tag, kind, count) + value(tag, kind, v)
        for tag, kind, count, v in entries
    )
    ifd += b"\x00\x00\x00\x00"
    return (
        header + ifd + struct.pack(order + "HHH", 8, 8, 8) + b"\x10\x20\x30\x40\x50\x60"
    )


def make_pdf(*, info: bool = True) -> bytes:
    """A one-page PDF with a classic xref table and (optionally) an Info dictionary."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Contents 4 0 R >>",
        b"<< /Length 8 >>\nstream\n0 0 m S\n\nendstream",
        b"<< /Title (Hello \\(world\\)) /Producer <68616E64> /AIGCx (not a label) >>",
    ]
    out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f\r\n" + b"".join(
        b"%010d 00000 n\r\n" % o for o in offsets
    )
    out += (
        b"trailer\n<< /Size 6 /Root 1 0 R"
        + (b" /Info 5 0 R" if info else b"")
        + b" >>\n"
    )
    return out + b"startxref\n%d\n%%%%EOF\n" % xref


_CT = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/word/document.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>{extra}</Types>'
)
_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="word/document.xml"/>{extra}</Relationships>'
)
_DOC = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    "<w:body><w:p><w:r><w:t>Hello</w:t></w:r></w:p></w:body></w:document>"
)
_CUSTOM = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties" '
    'xmlns:vt="http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes">'
    '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="2" name="Client"><vt:lpwstr>ACME</vt:lpwstr></property>'
    '<property fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}" pid="5" name="AIGC"><vt:lpwstr>old</vt:lpwstr></property>'
    "</Properties>"
)


def make_docx(
    *, custom: bool = False, members: dict[str, str | bytes] | None = None
) -> bytes:
    """A minimal DOCX; with ``custom`` it already has a custom properties part (with a stale AIGC)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        ct_extra = rel_extra = ""
        if custom:
            ct_extra = (
                '<Override PartName="/docProps/custom.xml" '
                'ContentType="application/vnd.openxmlformats-officedocument.custom-properties+xml"/>'
            )
            rel_extra = (
                '<Relationship Id="rId9" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
                'custom-properties" Target="docProps/custom.xml"/>'
            )
        archive.writestr(
            "[Content_Types].xml", _CT.format(extra=ct_extra), zipfile.ZIP_DEFLATED
        )
        archive.writestr(
            "_rels/.rels", _RELS.format(extra=rel_extra), zipfile.ZIP_STORED
        )
        archive.writestr("word/document.xml", _DOC, zipfile.ZIP_DEFLATED)
        archive.writestr(
            "word/media/image1.png", b"\x89PNG fake" * 10, zipfile.ZIP_STORED
        )
        if custom:
            archive.writestr("docProps/custom.xml", _CUSTOM, zipfile.ZIP_DEFLATED)
        for name, content in (members or {}).items():
            archive.writestr(name, content, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


MD_PLAIN = b"# Title\n\nSome *text* body.\n"
MD_FRONT = (
    "---\r\ntitle: \"Report\"\r\nAIGC:\r\n  Label: AIGC\r\n  ProduceID: 'x'  # comment\r\ntags: [a, b]\r\n---\r\n"
    "# Heading\r\n\r\nBody \u4e2d\u6587.\r\n"
).encode("utf-8")

SAMPLES: dict[str, tuple[ModuleType, Callable[[], bytes]]] = {
    "gif": (gif, make_gif),
    "gif87a": (gif, lambda: make_gif(b"GIF87a")),
    "tiff-le": (tiff, lambda: make_tiff("<")),
    "tiff-be": (tiff, lambda: make_tiff(">")),
    "pdf": (pdf, make_pdf),
    "pdf-no-info": (pdf, lambda: make_pdf(info=False)),
    "docx": (ooxml, make_docx),
    "docx-custom": (ooxml, lambda: make_docx(custom=True)),
    "md-plain": (markdown, lambda: MD_PLAIN),
    "md-front": (markdown, lambda: MD_FRONT),
}

# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", list(SAMPLES))
def test_write_read_exactly_one(name: str) -> None:
    module, make = SAMPLES[name]
    original = make()
    once = module.write_label(original, PAYLOAD)
    assert module.read_labels(once) == [PAYLOAD]
    twice = module.write_label(once, OTHER)
    assert module.read_labels(twice) == [OTHER]
    thrice = module.write_label(twice, PAYLOAD)
    assert module.read_labels(thrice) == [PAYLOAD]


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sniff(name: str) -> None:
    module, make = SAMPLES[name]
    data = module.write_label(make(), PAYLOAD)
    assert module.sniff(data)
    for other in (gif, tiff, pdf, ooxml, markdown):
        if other is not module:
            assert not other.sniff(data)


def test_gif_content_kept_and_trailer() -> None:
    original = make_gif()
    out = gif.write_label(original, PAYLOAD)
    assert gif_image_bytes(out) == gif_image_bytes(original)
    assert b"\x21\xfe\x05hello\x00" in out  # The comment extension survives.
    start = out.index(b"\x21\xff\x0bXMP DataXMP")
    assert start == 13 + 6  # Right after the screen descriptor and global colour table.
    assert gif.MAGIC_TRAILER in out and len(gif.MAGIC_TRAILER) == 258
    assert (
        gif.MAGIC_TRAILER[:3] == b"\x01\xff\xfe"
        and gif.MAGIC_TRAILER[-3:] == b"\x01\x00\x00"
    )
    assert gif.write_label(make_gif(b"GIF87a"), PAYLOAD)[:6] == b"GIF89a"


def test_gif_with_pillow() -> None:
    image_module = pytest.importorskip("PIL.Image")
    out = gif.write_label(make_gif(), PAYLOAD)
    with image_module.open(io.BytesIO(out)) as image:
        assert image.size == (1, 1)
        image.load()


def test_gif_reads_sub_block_xmp_and_duplicates() -> None:
    from aiobligations.labels import xmp

    packet = xmp.build_packet(OTHER)
    blocks = b"".join(
        bytes([len(packet[i : i + 255])]) + packet[i : i + 255]
        for i in range(0, len(packet), 255)
    )
    raw = b"\x21\xff\x0bXMP DataXMP" + xmp.build_packet(PAYLOAD) + gif.MAGIC_TRAILER
    sub = b"\x21\xff\x0bXMP DataXMP" + blocks + b"\x00"
    original = make_gif()
    doubled = original[:19] + raw + sub + original[19:]
    assert gif.read_labels(doubled) == [PAYLOAD, OTHER]
    assert gif.read_labels(gif.write_label(doubled, OTHER)) == [OTHER]


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_no_offsets_move(order: str) -> None:
    original = make_tiff(order)
    out = tiff.write_label(original, PAYLOAD)
    assert out[:4] == original[:4]
    assert (
        out[8 : len(original)] == original[8:]
    )  # Only the IFD0 offset in the header changed.
    (ifd,) = struct.unpack_from(order + "I", out, 4)
    assert ifd > len(original) and ifd % 2 == 0
    (count,) = struct.unpack_from(order + "H", out, ifd)
    tags = [
        struct.unpack_from(order + "HH", out, ifd + 2 + 12 * i) for i in range(count)
    ]
    assert [tag for tag, _ in tags] == sorted(tag for tag, _ in tags)
    assert (0x02BC, 7) in tags


@pytest.mark.parametrize("order", ["<", ">"])
def test_tiff_with_pillow(order: str) -> None:
    image_module = pytest.importorskip("PIL.Image")
    out = tiff.write_label(make_tiff(order), PAYLOAD)
    with image_module.open(io.BytesIO(out)) as image:
        assert image.size == (2, 1)
        assert image.convert("RGB").getpixel((1, 0)) == (0x40, 0x50, 0x60)


def test_tiff_bigtiff_refused() -> None:
    with pytest.raises(LabelError, match="BigTIFF"):
        tiff.read_labels(b"II+\x00\x08\x00\x00\x00" + b"\x00" * 16)


def test_pdf_incremental() -> None:
    original = make_pdf()
    out = pdf.write_label(original, PAYLOAD)
    assert out.startswith(original)
    assert out.rstrip().endswith(b"%%EOF")
    appended = out[len(original) :]
    assert b"/Prev %d" % int(original.rsplit(b"startxref", 1)[1].split()[0]) in appended
    assert (
        b"/Title (Hello \\(world\\))" in appended
        and b"/Producer <68616E64>" in appended
    )
    assert b"/Root 1 0 R" in appended
    twice = pdf.write_label(out, OTHER)
    assert twice.startswith(out)
    assert pdf.read_labels(original) == []


def test_pdf_non_ascii_payload_and_no_trailing_newline() -> None:
    label = AIGCLabel(
        label="1", content_producer="\u817e\u8baf", produce_id="x"
    ).to_json()
    original = make_pdf().rstrip(b"\n")
    out = pdf.write_label(original, label)
    assert out.startswith(original)
    assert pdf.read_labels(out) == [label]


def test_pdf_refusals() -> None:
    with pytest.raises(LabelError, match="cross-reference stream"):
        pdf.read_labels(
            b"%PDF-1.5\n1 0 obj\n<< /Type /XRef >>\nstream\nendstream\nendobj\nstartxref\n9\n%%EOF\n"
        )
    encrypted = make_pdf().replace(b"/Root 1 0 R", b"/Encrypt 9 0 R /Root 1 0 R")
    with pytest.raises(LabelError, match="encrypted"):
        pdf.write_label(encrypted, PAYLOAD)
    looped = make_pdf().replace(
        b" >>\nstartxref", b" /Prev %d >>\nstartxref" % make_pdf().index(b"xref\n0 6")
    )
    with pytest.raises(LabelError, match="loops"):
        pdf.read_labels(looped)
    huge = make_pdf().replace(b"xref\n0 6", b"xref\n0 999999999")
    with pytest.raises(LabelError):
        pdf.read_labels(huge)
    with pytest.raises(LabelError, match="deeper"):
        pdf.read_labels(make_pdf().replace(b"/Size 6", b"/Size 6 /X " + b"[" * 5000))


def _members(data: bytes) -> dict[str, tuple[bytes, int]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {
            info.filename: (archive.read(info), info.compress_type)
            for info in archive.infolist()
        }


@pytest.mark.parametrize("custom", [False, True])
def test_docx_members_kept(custom: bool) -> None:
    original = make_docx(custom=custom)
    out = ooxml.write_label(original, PAYLOAD)
    before, after = _members(original), _members(out)
    changed = {"docProps/custom.xml", "_rels/.rels", "[Content_Types].xml"}
    assert [name for name in after if name in before] == list(before)  # Order kept.
    for name, member in before.items():
        if name not in changed:
            assert after[name] == member
    custom_xml = after["docProps/custom.xml"][0].decode("utf-8")
    assert 'name="AIGC"' in custom_xml and "<vt:lpwstr>" in custom_xml
    assert "&lt;&amp;&gt;" in custom_xml
    assert custom_xml.count('name="AIGC"') == 1
    assert 'fmtid="{D5CDD505-2E9C-101B-9397-08002B2CF9AE}"' in custom_xml
    if custom:
        assert 'name="Client"' in custom_xml and 'pid="3"' in custom_xml
    else:
        assert 'pid="2"' in custom_xml
    rels = after["_rels/.rels"][0].decode("utf-8")
    assert (
        rels.count("relationships/custom-properties") == 1
        and 'Target="word/document.xml"' in rels
    )
    types = after["[Content_Types].xml"][0].decode("utf-8")
    assert types.count('PartName="/docProps/custom.xml"') == 1
    assert "custom-properties+xml" in types
    twice = _members(ooxml.write_label(out, OTHER))
    assert list(twice) == list(after)


def test_docx_reads_stale_custom_property() -> None:
    assert ooxml.read_labels(make_docx(custom=True)) == ["old"]
    assert ooxml.read_labels(make_docx()) == []


def test_docx_entity_xml_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        '<Properties xmlns="http://schemas.openxmlformats.org/officeDocument/2006/custom-properties">&lol2;</Properties>'
    )
    data = make_docx(members={"docProps/custom.xml": bomb})
    with pytest.raises(LabelError, match="DTD"):
        ooxml.read_labels(data)
    with pytest.raises(LabelError, match="DTD"):
        ooxml.write_label(data, PAYLOAD)
    external = '<!DOCTYPE r SYSTEM "file:///etc/passwd"><Relationships/>'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", _CT.format(extra=""))
        archive.writestr("_rels/.rels", external)
    with pytest.raises(LabelError):
        ooxml.write_label(buffer.getvalue(), PAYLOAD)


def test_docx_zip_bomb_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_docx(members={"bomb.bin": b"\x00" * (2 * 1024 * 1024)})
    monkeypatch.setattr(ooxml, "MAX_TOTAL_SIZE", 1024 * 1024)
    with pytest.raises(LabelError, match="uncompressed"):
        ooxml.write_label(data, PAYLOAD)
    monkeypatch.setattr(ooxml, "MAX_TOTAL_SIZE", 512 * 1024 * 1024)
    monkeypatch.setattr(ooxml, "MAX_MEMBERS", 3)
    with pytest.raises(LabelError, match="members"):
        ooxml.read_labels(data)


def test_docx_lying_sizes_refused() -> None:
    """A member whose declared size is smaller than its real content is caught, not expanded."""
    data = bytearray(make_docx(members={"bomb.bin": b"\x00" * 100_000}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("bomb.bin")
    # Patch the central directory's and local header's uncompressed size for bomb.bin to 10 bytes.
    name = b"bomb.bin"
    position = bytes(data).rindex(b"PK\x01\x02", 0, bytes(data).rindex(name))
    struct.pack_into("<I", data, position + 24, 10)
    struct.pack_into("<I", data, info.header_offset + 22, 10)
    with pytest.raises(LabelError):
        ooxml.write_label(bytes(data), PAYLOAD)


def test_docx_duplicate_members_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", _CT.format(extra=""))
        # Part names are case-insensitive, so this duplicates the first member.
        archive.writestr("[content_types].XML", _CT.format(extra=""))
    with pytest.raises(LabelError, match="duplicate"):
        ooxml.read_labels(buffer.getvalue())


def test_markdown_body_and_keys_kept() -> None:
    out = markdown.write_label(MD_FRONT, PAYLOAD)
    text = out.decode("utf-8")
    assert text.endswith("---\r\n# Heading\r\n\r\nBody \u4e2d\u6587.\r\n")
    assert 'title: "Report"\r\n' in text and "tags: [a, b]\r\n" in text
    assert text.count("AIGC:") == 1 and "Label: AIGC" not in text
    assert '  Label: "1"\r\n' in text
    assert '  ProduceID: "id-1(x)\\\\\\"<&>"\r\n' in text
    plain = markdown.write_label(MD_PLAIN, PAYLOAD)
    assert plain.endswith(MD_PLAIN) and plain.startswith(b'---\nAIGC:\n  Label: "1"\n')
    bom = markdown.write_label(b"\xef\xbb\xbf" + MD_PLAIN, PAYLOAD)
    assert bom.startswith(b"\xef\xbb\xbf---\n") and markdown.read_labels(bom) == [
        PAYLOAD
    ]


def test_markdown_read_forms() -> None:
    assert markdown.read_labels(MD_FRONT) == ['{"Label":"AIGC","ProduceID":"x"}']
    assert markdown.read_labels(
        b"---\nAIGC: " + PAYLOAD.encode() + b"\n---\nbody\n"
    ) == [PAYLOAD]
    quoted = PAYLOAD.replace("\\", "\\\\").replace('"', '\\"')
    assert markdown.read_labels(b'---\nAIGC: "' + quoted.encode() + b'"\n---\n') == [
        PAYLOAD
    ]
    two = b'---\nAIGC:\n  Label: \'1\'\nx: 1\nAIGC: {"Label":"2"}\n---\n'
    assert markdown.read_labels(two) == ['{"Label":"1"}', '{"Label":"2"}']
    assert markdown.read_labels(markdown.write_label(two, PAYLOAD)) == [PAYLOAD]
    assert markdown.read_labels(b"no front matter\n---\nAIGC: x\n---\n") == []
    assert markdown.read_labels(b'---\nAIGC:\n  Label: "\\u0031"\n---\n') == [
        '{"Label":"1"}'
    ]


@pytest.mark.parametrize(
    "bad",
    [
        b'---\nAIGC:\n  Label: "1\n---\n',
        b'---\nAIGC:\n  Label: "1" trailing\n---\n',
        b'---\nAIGC:\n  Label: "\\q"\n---\n',
        b'---\nAIGC:\n  Label: "1"\n  Label: "2"\n---\n',
        b"---\nAIGC:\n  - item\n---\n",
        b'---\nAIGC:\n  Label: "\\ud800"\n---\n',
        b"\xff\xfe---\n",
    ],
)
def test_markdown_malformed(bad: bytes) -> None:
    with pytest.raises(LabelError):
        markdown.read_labels(bad)


def test_markdown_one_line_value_that_is_not_json_is_returned_for_inspect_to_judge() -> None:
    # A label that does not parse is a finding of inspect, not an unusable file (issue 11, defect 17),
    # and labelling replaces it.
    bad = b"---\nAIGC: {not json\n---\nbody\n"
    assert markdown.read_labels(bad) == ["{not json"]
    assert markdown.read_labels(markdown.write_label(bad, PAYLOAD)) == [PAYLOAD]


def test_markdown_long_lines_fast() -> None:
    line = b"  a" + b" " * 500_000 + b"x"
    with pytest.raises(LabelError):
        markdown.read_labels(b"---\nAIGC:\n" + line + b"\n---\n")
    assert markdown.read_labels(
        b"---\nAIGC:\n  a: b" + b" " * 500_000 + b"\n---\n"
    ) == ['{"a":"b"}']


# --------------------------------------------------------------------------------------------- payload checks


@pytest.mark.parametrize("name", ["gif", "tiff-le", "pdf", "docx", "md-plain"])
def test_bad_payload_refused(name: str) -> None:
    module, make = SAMPLES[name]
    with pytest.raises(LabelError):
        module.write_label(make(), "not json")


# --------------------------------------------------------------------------------------------- hostile input


def _only_label_errors(module: ModuleType, data: bytes) -> None:
    for action in (
        lambda: module.read_labels(data),
        lambda: module.write_label(data, PAYLOAD),
    ):
        try:
            action()
        except LabelError:
            pass


BINARY = ["gif", "tiff-le", "tiff-be", "pdf", "docx"]


@pytest.mark.parametrize("name", BINARY + ["md-front"])
def test_truncation_at_every_offset(name: str) -> None:
    module, make = SAMPLES[name]
    labelled = module.write_label(make(), PAYLOAD)
    step = max(1, len(labelled) // 800)
    for cut in range(0, len(labelled), step):
        _only_label_errors(module, labelled[:cut])


@pytest.mark.parametrize("name", ["gif", "tiff-le", "tiff-be", "pdf"])
def test_truncated_raises(name: str) -> None:
    module, make = SAMPLES[name]
    original = make()
    for cut in range(min(len(original), 60)):
        with pytest.raises(LabelError):
            module.read_labels(original[:cut])


@pytest.mark.parametrize("name", BINARY + ["md-front"])
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_flips(name: str, data: st.DataObject) -> None:
    module, make = SAMPLES[name]
    labelled = bytearray(module.write_label(make(), PAYLOAD))
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(labelled) - 1), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        )
    )
    for position, value in flips:
        labelled[position] = value
    _only_label_errors(module, bytes(labelled))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(blob: bytes) -> None:
    for module, prefix in (
        (gif, b"GIF89a"),
        (tiff, b"II*\x00"),
        (tiff, b"MM\x00*"),
        (pdf, b"%PDF-1.4\n"),
        (markdown, b"---\n"),
    ):
        _only_label_errors(module, prefix + blob)


def test_huge_declared_sizes() -> None:
    # TIFF: IFD0 offset past the end, huge entry count, XMP tag pointing past the end.
    for order in "<>":
        original = make_tiff(order)
        with pytest.raises(LabelError):
            tiff.read_labels(
                original[:4] + struct.pack(order + "I", 0xFFFFFFF0) + original[8:]
            )
        with pytest.raises(LabelError):
            tiff.read_labels(
                original[:8] + struct.pack(order + "H", 0xFFFF) + original[10:]
            )
        labelled = bytearray(tiff.write_label(original, PAYLOAD))
        (ifd,) = struct.unpack_from(order + "I", labelled, 4)
        (count,) = struct.unpack_from(order + "H", labelled, ifd)
        for i in range(count):
            if struct.unpack_from(order + "H", labelled, ifd + 2 + 12 * i)[0] == 0x02BC:
                struct.pack_into(
                    order + "I", labelled, ifd + 2 + 12 * i + 4, 0x7FFFFFFF
                )
        with pytest.raises(LabelError):
            tiff.read_labels(bytes(labelled))
    # GIF: a colour table larger than the file, a sub-block running past the end.
    with pytest.raises(LabelError):
        gif.read_labels(b"GIF89a\x01\x00\x01\x00\x87\x00\x00" + b"\x00" * 30)
    with pytest.raises(LabelError):
        gif.read_labels(make_gif()[:-1][:-2] + b"\xff")
    # PDF: startxref past the end; an Info offset past the end.
    with pytest.raises(LabelError):
        pdf.read_labels(make_pdf().replace(b"startxref\n", b"startxref\n99999999"))
    original = make_pdf()
    last_entry = original.rindex(b" 00000 n\r\n") - 10
    with pytest.raises(LabelError, match="Info object"):
        pdf.read_labels(
            original[:last_entry] + b"9999999999" + original[last_entry + 10 :]
        )
