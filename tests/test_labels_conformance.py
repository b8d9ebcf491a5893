"""The conformance table in docs/labels.md is generated from the code and checked by exercising it.

Every format is labelled through the real Labeller (implicit label, then C2PA) and inspected; a ✅
in the table must hold here. Run with ``UPDATE_DOCS=1`` to rewrite the table in the page.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_labels_av import make_mp4, make_wav, mpeg_frame, v24_tag
from test_labels_documents import MD_FRONT, make_docx, make_gif, make_pdf, make_tiff

from aiobligations.demo.models import ToyImageModel
from aiobligations.labels import FORMATS, Labeller
from aiobligations.labels.c2pa import C2PASigner
from aiobligations.labels.certs import generate_dev_ca
from aiobligations.labels.conformance import conformance_markdown, conformance_rows

PAGE = Path(__file__).resolve().parents[1] / "docs" / "labels.md"
START, END = "<!-- conformance:start -->\n", "<!-- conformance:end -->"


def samples() -> dict[str, bytes]:
    from test_labels_images import JPEG_2X2, WEBP_LOSSLESS

    return {
        "image/png": ToyImageModel().generate("conformance"),
        "image/jpeg": JPEG_2X2,
        "image/webp": WEBP_LOSSLESS,
        "image/gif": make_gif(),
        "image/tiff": make_tiff("<"),
        "audio/wav": make_wav(),
        "audio/mpeg": v24_tag() + mpeg_frame(1) * 4,
        "video/mp4": make_mp4(),
        "application/pdf": make_pdf(),
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": make_docx(),
        "text/markdown": MD_FRONT,
    }


@pytest.fixture(scope="module")
def labeller(tmp_path_factory: pytest.TempPathFactory) -> Labeller:
    certs = generate_dev_ca(tmp_path_factory.mktemp("ca"), organisation="conformance")
    return Labeller(producer="001191440300708461136T1XGW3", key=Ed25519PrivateKey.generate(),
                    c2pa_signer=C2PASigner.from_files(certs.chain, certs.signing_key),
                    trust_anchors=certs.ca_cert.read_bytes())


def test_every_format_has_a_sample() -> None:
    assert {module.MEDIA_TYPES[0] for module in FORMATS} == set(samples())


@pytest.mark.parametrize("row", [r for r in conformance_rows() if "/" in r["format"] and " " not in r["format"]],
                         ids=lambda r: r["format"].split("/")[-1][:20])
def test_each_claim_in_the_table_holds(row: dict[str, str], labeller: Labeller) -> None:
    data = samples()[row["format"]]
    c2pa = row["c2pa"].startswith("✅")

    labelled = labeller.label(data, row["format"], produce_id="conf-1", c2pa=c2pa).data
    report = labeller.inspect(labelled, row["format"])

    (found,) = report["gb45438"]
    assert "conf-1" == found["fields"]["ProduceID"]
    if c2pa:
        assert "Trusted" == report["c2pa"]["validation_state"]


def test_the_page_holds_the_generated_table() -> None:
    page = PAGE.read_text(encoding="utf-8")
    table = conformance_markdown()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if os.environ.get("UPDATE_DOCS"):
        PAGE.write_text(pattern.sub(lambda _: START + table + END, page), encoding="utf-8")
        page = PAGE.read_text(encoding="utf-8")
    match = pattern.search(page)
    assert match is not None, f"{PAGE} has no {START.strip()} … {END} block"
    assert START + table + END == match.group(0), "docs/labels.md is out of date: run with UPDATE_DOCS=1"
