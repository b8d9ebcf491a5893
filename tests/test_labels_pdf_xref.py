"""PDF 1.5+ files written by other tools: cross-reference streams, object streams, incremental updates.

The fixtures are real files (see tests/fixtures/README.md): one written by qpdf with object streams
(its Info dictionary sits inside an ``/ObjStm`` and its cross-reference section is a FlateDecode
``/XRef`` stream with a PNG predictor), and the same file after pypdf appended an incremental update
(a second cross-reference stream with ``/Prev``). qpdf (through pikepdf) and pypdf, strict, are the
independent readers of what we write.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pikepdf
import pypdf
import pytest

from aiobligations.errors import LabelError
from aiobligations.keys import init_project
from aiobligations.labels.annex_e import AIGCLabel
from aiobligations.labels.formats import pdf

FIXTURES = Path(__file__).parent / "fixtures"
PAYLOAD = AIGCLabel(
    label="1",
    content_producer="001191440300708461136T1XGW3",
    produce_id='id-1(x)\\"<&>',
    content_propagator="001191440300708461136T1XGW3",
    propagate_id="id-1",
).to_json()
OTHER = AIGCLabel(label="2", content_producer="001191110102MACQD9K64010000", produce_id="p-2").to_json()
TITLES = {"qpdf-xref-stream.pdf": "Harbour at dusk", "pypdf-incremental.pdf": "Harbour at dawn"}


PYPDF_QUIRK = "xref entry for the xref stream itself is missing"


def independent(data: bytes, *, pypdf_quirk: bool = False) -> tuple[str | None, str | None]:
    """Open ``data`` with qpdf (no xref recovery) and with strict pypdf; return /AIGC and /Title as both see them.

    qpdf must report no problem, except (``pypdf_quirk``) the one of pypdf's own update, whose
    cross-reference stream leaves itself out; anything we append must not.
    """
    with pikepdf.open(io.BytesIO(data), attempt_recovery=False) as doc:
        problems = doc.check_pdf_syntax()
        if pypdf_quirk:
            assert 1 == len(problems) and PYPDF_QUIRK in problems[0]
        else:
            assert [] == problems
        assert 1 == len(doc.pages)
        seen = (
            str(doc.docinfo["/AIGC"]) if "/AIGC" in doc.docinfo else None,
            str(doc.docinfo["/Title"]) if "/Title" in doc.docinfo else None,
        )
    reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
    meta = reader.metadata or {}
    assert 1 == len(reader.pages)
    assert seen == (meta.get("/AIGC"), meta.get("/Title"))
    return seen


def test_fixtures_are_what_they_claim() -> None:
    """The qpdf file's only cross-reference section is a stream and its Info is in an object stream;
    the pypdf file is the qpdf file, byte for byte, plus one appended update."""
    first = (FIXTURES / "qpdf-xref-stream.pdf").read_bytes()
    second = (FIXTURES / "pypdf-incremental.pdf").read_bytes()
    assert first.startswith(b"%PDF-1.5") and b"\nxref" not in first
    assert b"/Type /ObjStm" in first and b"/Type /XRef" in first and b"/Predictor 12" in first
    assert not re.search(rb"\d+ 0 obj\s*<<[^>]*/Title", first)  # Info is compressed.
    assert second.startswith(first) and second[len(first) :].count(b"/Type /XRef") == 1
    assert b"/Prev" in second[len(first) :]
    assert (None, "Harbour at dusk") == independent(first)
    assert (None, "Harbour at dawn") == independent(second, pypdf_quirk=True)


@pytest.mark.parametrize("name", sorted(TITLES))
def test_label_real_xref_stream_pdfs_as_an_incremental_update(name: str) -> None:
    original = (FIXTURES / name).read_bytes()
    assert [] == pdf.read_labels(original)
    out = pdf.write_label(original, PAYLOAD)
    assert out.startswith(original)
    assert [PAYLOAD] == pdf.read_labels(out)
    update = out[len(original) :]
    # The update's cross-reference section is a stream (a classic table may not follow one) with /Prev.
    assert not re.search(rb"(^|[\r\n])xref[\r\n]", update) and b"trailer" not in update
    assert b"/Type /XRef" in update and b"/Prev %d" % pdf._startxref(original) in update
    assert (PAYLOAD, TITLES[name]) == independent(out)
    # Labelling again appends another update that replaces the label; both prefixes hold.
    twice = pdf.write_label(out, OTHER)
    assert twice.startswith(out)
    assert [OTHER] == pdf.read_labels(twice)
    assert (OTHER, TITLES[name]) == independent(twice)


def test_a_non_ascii_label_in_an_xref_stream_pdf() -> None:
    label = AIGCLabel(label="1", content_producer="示例科技", produce_id="编号-1").to_json()
    original = (FIXTURES / "qpdf-xref-stream.pdf").read_bytes()
    out = pdf.write_label(original, label)
    assert out.startswith(original) and [label] == pdf.read_labels(out)
    assert label == independent(out)[0]


def make_hybrid() -> bytes:
    """A hybrid-reference file (PDF 32000 7.5.8.4): the classic table leaves the Info object out and
    the trailer's /XRefStm names a cross-reference stream that says where it is."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 72 72] /Resources << >> >>",
        b"<< /Title (Hybrid) >>",
    ]
    out = b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    rows = b"\x01" + offsets[3].to_bytes(2, "big") + b"\x00"
    stream_offset = len(out)
    packed = zlib.compress(rows)
    out += (
        b"5 0 obj\n<< /Type /XRef /Size 6 /Index [4 1] /W [1 2 1] /Filter /FlateDecode /Length %d >>\n"
        b"stream\n" % len(packed) + packed + b"\nendstream\nendobj\n"
    )
    xref = len(out)
    out += b"xref\n0 4\n0000000000 65535 f\r\n"
    out += b"".join(b"%010d 00000 n\r\n" % o for o in offsets[:3])
    out += b"5 1\n%010d 00000 n\r\n" % stream_offset
    out += b"trailer\n<< /Size 6 /Root 1 0 R /Info 4 0 R /XRefStm %d >>\n" % stream_offset
    return out + b"startxref\n%d\n%%%%EOF\n" % xref


def test_a_hybrid_file_is_read_through_its_xrefstm() -> None:
    original = make_hybrid()
    assert (None, "Hybrid") == independent(original)
    out = pdf.write_label(original, PAYLOAD)
    assert out.startswith(original)
    assert [PAYLOAD] == pdf.read_labels(out)
    assert (PAYLOAD, "Hybrid") == independent(out)
    # Its Info entries were found and copied: without the /XRefStm the Info object is nowhere.
    assert b"/Title (Hybrid)" in out[len(original) :]
    with pytest.raises(LabelError, match="not in the cross-reference table"):
        pdf.read_labels(original.replace(b" /XRefStm", b" /XRefStx"))


def test_damaged_xref_stream_files_raise_label_error_only() -> None:
    """Truncations and byte changes of the real files: a LabelError or a reading, never a crash."""
    for name in TITLES:
        original = (FIXTURES / name).read_bytes()
        for cut in range(0, len(original), 7):
            try:
                pdf.read_labels(original[:cut])
            except LabelError:
                pass
        for at in range(len(original)):
            damaged = bytearray(original)
            damaged[at] ^= 0x5A
            try:
                pdf.read_labels(bytes(damaged))
            except LabelError:
                pass
    # A predictor row wider than the stream is refused before anything is allocated for it.
    wide = (FIXTURES / "qpdf-xref-stream.pdf").read_bytes().replace(b"/Columns 4 ", b"/Columns 99999 ")
    with pytest.raises(LabelError):
        pdf.read_labels(wide)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(TITLES))
def test_cli_label_then_inspect_without_c2pa_keeps_the_prefix(tmp_path: Path, name: str) -> None:
    config = init_project(tmp_path)
    text = config.read_text(encoding="utf-8")
    assert "\nc2pa = true" in text
    config.write_text(text.replace("\nc2pa = true", "\nc2pa = false", 1), encoding="utf-8")
    original = (FIXTURES / name).read_bytes()
    (tmp_path / "in.pdf").write_bytes(original)

    labelled = run_cli("label", "in.pdf", "out.pdf", cwd=tmp_path)
    assert 0 == labelled.returncode, labelled.stderr
    found = run_cli("inspect", "out.pdf", cwd=tmp_path)
    assert 0 == found.returncode, found.stderr
    report = json.loads(found.stdout)
    assert report["labelled"] and 1 == len(report["gb45438"]) and report["c2pa"] is None

    out = (tmp_path / "out.pdf").read_bytes()
    assert out.startswith(original)
    aigc, title = independent(out)
    assert (aigc, title) == (report["gb45438"][0]["payload"], TITLES[name])


@pytest.mark.parametrize("name", sorted(TITLES))
def test_cli_label_then_inspect_with_c2pa(tmp_path: Path, name: str) -> None:
    """C2PA on: both labels are found and the file still parses. (c2pa-python rewrites PDFs, so the
    original bytes are not a prefix here: see the module docstring.)"""
    init_project(tmp_path)
    (tmp_path / "in.pdf").write_bytes((FIXTURES / name).read_bytes())
    labelled = run_cli("label", "in.pdf", "out.pdf", cwd=tmp_path)
    assert 0 == labelled.returncode, labelled.stderr
    found = run_cli("inspect", "out.pdf", cwd=tmp_path)
    assert 0 == found.returncode, found.stderr
    report = json.loads(found.stdout)
    assert 1 == len(report["gb45438"]) and "Trusted" == report["c2pa"]["validation_state"]
    aigc, title = independent((tmp_path / "out.pdf").read_bytes())
    assert (aigc, title) == (report["gb45438"][0]["payload"], TITLES[name])
