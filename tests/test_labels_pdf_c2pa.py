"""PDF with C2PA on: the manifest store is an incremental update, so the original bytes stay a prefix.

The fixtures are real files written by qpdf (through pikepdf) and pypdf (see tests/fixtures/README.md):
a PDF 1.4 with a classic cross-reference table, the same after a pypdf incremental update, a PDF 1.5
whose only cross-reference section is a stream (Info in an object stream), that file after a pypdf
update, and a qpdf file with an attachment (an ``/AF`` array and an indirect ``/EmbeddedFiles`` tree
already there). c2pa-python's Reader (c2pa-rs, which loads the file with lopdf) validates the
manifest; qpdf (no recovery) and strict pypdf are the independent readers of the file.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("c2pa")

import pikepdf
import pypdf
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from aiobligations.demo.models import ToyImageModel
from aiobligations.errors import LabelError
from aiobligations.labels.annex_e import AIGCLabel
from aiobligations.labels.c2pa import C2PAReport, C2PASigner, read, sign
from aiobligations.labels.certs import DevCertificates
from aiobligations.labels.formats import pdf
from aiobligations.labels.labeller import Labeller
from test_labels_c2pa import _anchors, _certs, _signer  # noqa: F401 - the shared test CA's fixtures

FIXTURES = Path(__file__).parent / "fixtures"
TITLES = {
    "qpdf-classic-1.4.pdf": "Harbour at noon",
    "pypdf-classic-incremental.pdf": "Harbour at night",
    "qpdf-xref-stream.pdf": "Harbour at dusk",
    "pypdf-incremental.pdf": "Harbour at dawn",
    "qpdf-attachment.pdf": "Harbour at noon",
}
PRODUCER = "001191440300708461136T1XGW3"
AIGC = {"Label": "1", "ContentProducer": PRODUCER, "ProduceID": "pdf-1"}


@pytest.fixture(name="image_codes", scope="module")
def _image_codes(signer: C2PASigner, anchors: bytes) -> tuple[str, ...]:
    """The status codes a PNG signed by the same signer gets: the baseline for our test CA."""
    png = ToyImageModel().generate("x")
    report = read(sign(png, "image/png", signer=signer, aigc=AIGC), "image/png", trust_anchors=anchors)
    assert report is not None and "Trusted" == report.validation_state
    return report.status_codes


@pytest.fixture(name="labeller", scope="module")
def _labeller(signer: C2PASigner, anchors: bytes) -> Labeller:
    return Labeller(producer=PRODUCER, key=Ed25519PrivateKey.generate(), c2pa_signer=signer, trust_anchors=anchors)


def successes(report: C2PAReport) -> list[str]:
    results = report.manifest_store["validation_results"]["activeManifest"]
    assert [] == results.get("failure", [])
    return [s["code"] for s in results["success"]]


def independent(data: bytes) -> tuple[int, str | None, str | None, list[str]]:
    """Open ``data`` with qpdf (no recovery) and strict pypdf; return pages, /AIGC, /Title and the
    ``/AFRelationship`` of each associated file, as both see them."""
    with pikepdf.open(io.BytesIO(data), attempt_recovery=False) as doc:
        problems = doc.check_pdf_syntax()
        # pypdf's own cross-reference stream leaves itself out; qpdf says so, about pypdf's section only.
        assert all("xref entry for the xref stream itself is missing" in p for p in problems), problems
        pages = len(doc.pages)
        seen = (
            str(doc.docinfo["/AIGC"]) if "/AIGC" in doc.docinfo else None,
            str(doc.docinfo["/Title"]) if "/Title" in doc.docinfo else None,
        )
        relations = [str(spec.get("/AFRelationship")) for spec in doc.Root.get("/AF", [])]
    reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
    meta: Any = reader.metadata or {}
    assert pages == len(reader.pages)
    assert seen == (meta.get("/AIGC"), meta.get("/Title"))
    return pages, seen[0], seen[1], relations


def embedded_store(data: bytes, *, ours: bool = True) -> bytes:
    """The manifest store as qpdf reads it: the C2PA associated file's embedded file stream (``ours``:
    with the specification's ``/Subtype``, which c2pa-rs's own writer leaves out)."""
    with pikepdf.open(io.BytesIO(data)) as doc:
        specs = [s for s in doc.Root.AF if s.get("/AFRelationship") == pikepdf.Name("/C2PA_Manifest")]
        assert 1 == len(specs)
        stream = specs[0].EF.F
        assert "/Filter" not in stream
        if ours:
            assert pikepdf.Name("/application/c2pa") == stream.Subtype
        return bytes(stream.read_raw_bytes())


def test_fixtures_are_what_they_claim() -> None:
    """Classic 1.4, classic plus a pypdf update, an attachment; the xref-stream pair is checked in
    test_labels_pdf_xref."""
    classic = (FIXTURES / "qpdf-classic-1.4.pdf").read_bytes()
    updated = (FIXTURES / "pypdf-classic-incremental.pdf").read_bytes()
    attached = (FIXTURES / "qpdf-attachment.pdf").read_bytes()
    assert classic.startswith(b"%PDF-1.4") and b"\nxref\n" in classic and b"/XRef" not in classic
    assert updated.startswith(classic) and updated[len(classic) :].count(b"/Type /XRef") == 1
    assert b"/Prev %d" % pdf._startxref(classic) in updated[len(classic) :]
    assert re.search(rb"/AF \[ \d+ 0 R \] /Names << /EmbeddedFiles \d+ 0 R >>", attached)
    assert (1, None, "Harbour at noon", []) == independent(classic)
    assert (1, None, "Harbour at night", []) == independent(updated)
    assert (1, None, "Harbour at noon", ["/Unspecified"]) == independent(attached)


@pytest.mark.parametrize("name", sorted(TITLES))
def test_signing_appends_an_update(
    name: str, signer: C2PASigner, anchors: bytes, image_codes: tuple[str, ...]
) -> None:
    original = (FIXTURES / name).read_bytes()
    out = sign(original, "application/pdf", signer=signer, aigc=AIGC)
    assert out.startswith(original)
    report = read(out, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Trusted" == report.validation_state
    assert image_codes == report.status_codes
    assert "assertion.dataHash.match" in successes(report)
    assert report.ai_generated and PRODUCER == (report.aigc or {})["ContentProducer"]
    # The store c2pa validated is the one embedded, byte for byte, once, after the original bytes.
    store = embedded_store(out)
    assert 1 == out.count(store) and out.index(store) > len(original)
    pages, aigc, title, relations = independent(out)
    assert (1, None, TITLES[name]) == (pages, aigc, title)
    assert relations == (["/Unspecified"] if "attachment" in name else []) + ["/C2PA_Manifest"]


@pytest.mark.parametrize("name", sorted(TITLES))
def test_labeller_keeps_the_prefix_and_inspect_finds_both_labels(name: str, labeller: Labeller) -> None:
    original = (FIXTURES / name).read_bytes()
    labelled = labeller.label(original, "application/pdf", produce_id="pdf-1")
    out = labelled.data
    assert out.startswith(original)
    assert "c2pa" in labelled.evidence and "gb45438" in labelled.evidence
    report = labeller.inspect(out, "application/pdf")
    assert report["labelled"] and 1 == len(report["gb45438"])
    assert "pdf-1" == report["gb45438"][0]["fields"]["ProduceID"]
    assert "Trusted" == report["c2pa"]["validation_state"]
    assert "pdf-1" == report["c2pa"]["aigc"]["ProduceID"]
    pages, aigc, title, _ = independent(out)
    assert (1, TITLES[name]) == (pages, title)
    assert aigc is not None and "pdf-1" == AIGCLabel.parse(aigc).produce_id
    # Two updates: the Info dictionary's, then the manifest's.
    assert 2 == out[len(original) :].count(b"startxref")


@pytest.mark.parametrize("name", ["qpdf-classic-1.4.pdf", "pypdf-incremental.pdf", "qpdf-attachment.pdf"])
def test_labelling_twice_replaces_the_manifest(name: str, labeller: Labeller) -> None:
    """As for other formats: one implicit label and one active manifest, the new one; here, also both
    earlier versions as prefixes."""
    original = (FIXTURES / name).read_bytes()
    once = labeller.label(original, "application/pdf", produce_id="pdf-1").data
    twice = labeller.label(once, "application/pdf", produce_id="pdf-2").data
    assert twice.startswith(once) and once.startswith(original)
    first, second = labeller.inspect(once), labeller.inspect(twice)
    assert ["pdf-2"] == [entry["fields"]["ProduceID"] for entry in second["gb45438"]]
    assert "Trusted" == second["c2pa"]["validation_state"]
    assert "pdf-2" == second["c2pa"]["aigc"]["ProduceID"]
    assert first["c2pa"]["manifest_label"] != second["c2pa"]["manifest_label"]
    # The old store is still in the bytes (an update never deletes) but no longer referenced.
    assert embedded_store(once) in twice and embedded_store(once) != embedded_store(twice)
    _, _, title, relations = independent(twice)
    assert TITLES[name] == title and 1 == relations.count("/C2PA_Manifest")
    with pikepdf.open(io.BytesIO(twice)) as doc:
        attachments = sorted(doc.attachments.keys())
    assert attachments == (["notes.txt"] if "attachment" in name else [pdf.C2PA_NAME.decode()])


def test_a_change_to_the_original_bytes_is_caught(signer: C2PASigner, anchors: bytes) -> None:
    original = (FIXTURES / "qpdf-classic-1.4.pdf").read_bytes()
    out = sign(original, "application/pdf", signer=signer, aigc=AIGC)
    tampered = out.replace(b"(Harbour at noon) Tj", b"(Harbour at 3 am) Tj", 1)
    assert tampered != out and len(tampered) == len(out)
    report = read(tampered, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Invalid" == report.validation_state
    assert "assertion.dataHash.mismatch" in report.status_codes
    # A byte changed after the manifest (in the update's own file specification) is caught too.
    assert 1 == out.count(b"/Desc (Content Credentials)")
    tail = out.replace(b"/Desc (Content Credentials)", b"/Desc (Content Credentialz)")
    report = read(tail, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Invalid" == report.validation_state
    assert "assertion.dataHash.mismatch" in report.status_codes


def test_a_callback_signer_reserves_more_and_still_fits(certs: DevCertificates, anchors: bytes) -> None:
    key: Any = load_pem_private_key(certs.signing_key.read_bytes(), password=None)
    calls: list[int] = []

    def remote(data: bytes) -> bytes:
        calls.append(len(data))
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    signer = C2PASigner.from_callback(remote, certs.chain.read_bytes())
    original = (FIXTURES / "qpdf-xref-stream.pdf").read_bytes()
    out = sign(original, "application/pdf", signer=signer, aigc=AIGC)
    assert out.startswith(original) and 1 == len(calls)
    report = read(out, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Trusted" == report.validation_state


def test_embed_c2pa_places_the_store_where_it_says() -> None:
    original = (FIXTURES / "pypdf-classic-incremental.pdf").read_bytes()
    store = b"\x00\x01not a real store\xff" * 3
    out, offset = pdf.embed_c2pa(original, store)
    assert out.startswith(original) and store == out[offset : offset + len(store)]
    assert store == embedded_store(out)
    assert (1, None, "Harbour at night", ["/C2PA_Manifest"]) == independent(out)
    # The Info label still reads through the update, and a label written after it too.
    labelled = pdf.write_label(out, AIGCLabel(content_producer=PRODUCER, produce_id="p").to_json())
    assert 1 == len(pdf.read_labels(labelled)) and store == embedded_store(labelled)


def test_embed_c2pa_refusals() -> None:
    original = (FIXTURES / "qpdf-classic-1.4.pdf").read_bytes()
    with pytest.raises(LabelError, match="encrypted"):
        pdf.embed_c2pa(original.replace(b"/Root 1 0 R", b"/Encrypt 9 0 R /Root 1 0 R"), b"x")
    with pytest.raises(LabelError, match="/Root"):
        pdf.embed_c2pa(original.replace(b"/Root 1 0 R", b"/Rooo 1 0 R"), b"x")
    with pytest.raises(LabelError, match="/AF is not an array"):
        pdf.embed_c2pa(original.replace(b"/Type /Catalog", b"/AF 7         "), b"x")
    with pytest.raises(TypeError):
        pdf.embed_c2pa(original, b"")


def test_a_direct_flat_name_tree_gains_the_store_in_order(signer: C2PASigner, anchors: bytes) -> None:
    """qpdf keeps a direct ``/EmbeddedFiles`` tree direct: the update's catalog lists the store in it,
    sorted, beside the files already there."""
    doc = pikepdf.new()
    doc.add_blank_page(page_size=(72, 72))
    specs = [pikepdf.AttachedFileSpec(doc, b"%d\n" % i, mime_type="text/plain") for i in range(2)]
    doc.Root.Names = pikepdf.Dictionary(
        EmbeddedFiles=pikepdf.Dictionary(
            Names=pikepdf.Array([pikepdf.String("a.txt"), specs[0].obj, pikepdf.String("z.txt"), specs[1].obj])
        )
    )
    buffer = io.BytesIO()
    doc.save(buffer, object_stream_mode=pikepdf.ObjectStreamMode.disable, deterministic_id=True)
    original = buffer.getvalue()
    assert re.search(rb"/Names << /EmbeddedFiles << /Names \[ \(a\.txt\)", original)
    out = sign(original, "application/pdf", signer=signer, aigc=AIGC)
    assert out.startswith(original)
    report = read(out, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Trusted" == report.validation_state
    with pikepdf.open(io.BytesIO(out), attempt_recovery=False) as reopened:
        assert [] == reopened.check_pdf_syntax()
        listed = [str(k) for k in reopened.Root.Names.EmbeddedFiles.Names[::2]]
        assert ["Content Credentials", "a.txt", "z.txt"] == listed
        assert b"1\n" == reopened.attachments["z.txt"].get_file().read_bytes()


def test_without_the_native_calls_signing_falls_back_to_a_rewrite(
    signer: C2PASigner, anchors: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If a c2pa-python release stops exporting the data-hashed calls, PDFs are still signed (by
    c2pa-rs's writer, which rewrites the file: valid, without the prefix)."""
    import aiobligations.labels.c2pa as c2pa_module

    monkeypatch.setitem(c2pa_module._PDF_FFI, "lib", None)
    original = (FIXTURES / "qpdf-classic-1.4.pdf").read_bytes()
    out = sign(original, "application/pdf", signer=signer, aigc=AIGC)
    assert not out.startswith(original)
    report = read(out, "application/pdf", trust_anchors=anchors)
    assert report is not None and "Trusted" == report.validation_state
    # The transplant design does not work: a store signed over c2pa-rs's bytes does not bind ours.
    moved, _ = pdf.embed_c2pa(original, embedded_store(out, ours=False))
    report = read(moved, "application/pdf", trust_anchors=anchors)
    assert report is not None and "assertion.dataHash.mismatch" in report.status_codes


def test_pypdf_reads_our_classic_updates_without_a_warning(
    signer: C2PASigner, caplog: pytest.LogCaptureFixture
) -> None:
    """Each classic update's table starts with object 0's free entry, so pypdf does not take it for
    a mis-numbered table ("Xref table not zero-indexed")."""
    original = (FIXTURES / "qpdf-classic-1.4.pdf").read_bytes()
    labelled = pdf.write_label(original, AIGCLabel(content_producer=PRODUCER, produce_id="p").to_json())
    out = sign(labelled, "application/pdf", signer=signer, aigc=AIGC)
    assert 2 == out[len(original) :].count(b"xref\n0 1\n0000000000 65535 f\r\n")
    with caplog.at_level("WARNING", logger="pypdf"):
        reader = pypdf.PdfReader(io.BytesIO(out), strict=True)
        meta: Any = reader.metadata
        assert 1 == len(reader.pages) and "p" == AIGCLabel.parse(str(meta["/AIGC"])).produce_id
    assert [] == [r.getMessage() for r in caplog.records if r.name.startswith("pypdf")]
