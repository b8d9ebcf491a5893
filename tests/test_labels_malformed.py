"""Issue 11: an implicit label that does not parse is a finding, not a label (defect 17), and Markdown
without front matter can be labelled when its type is declared (defect 18).

The media are made by other tools where it matters: MP3 and M4A by FFmpeg (PyAV), PNG, JPEG and PDF
by Pillow, WAV by the standard library's ``wave``.
"""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from aiobligations.cli import main
from aiobligations.labels.annex_e import AIGCLabel
from aiobligations.labels.formats import jpeg, markdown, mp3, mp4, pdf, png, wav
from aiobligations.labels.labeller import Labeller

from _media import encode_audio

CODE = "001191440300708461136T1XGW3"
VALID = AIGCLabel(content_producer=CODE, produce_id="p-1", content_propagator=CODE, propagate_id="p-1").to_json()
BRACKETS = "[" * 200_000  # The issue's case: absurdly large and not the label's JSON.
TRUNCATED = VALID[: len(VALID) // 2]  # Small, but not JSON.
NOT_A_LABEL = '{"Colour":"blue"}'  # JSON, but not an Annex E label.


def make_wav() -> bytes:
    """A short 16-bit mono WAV written by the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(bytes(range(256)) * 8)
    return out.getvalue()


def pillow(fmt: str, **options: object) -> bytes:
    """A small gradient image saved by Pillow in ``fmt``."""
    image = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3))
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


class _Unchecked:
    """Stands in for AIGCLabel in a format module so that its write_label stores any payload."""

    @staticmethod
    def parse(payload: str) -> None:
        return None


def write_raw(module: ModuleType, data: bytes, payload: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """``module.write_label`` without its payload check: how a foreign tool could write a bad label."""
    if hasattr(module, "AIGCLabel"):
        monkeypatch.setattr(module, "AIGCLabel", _Unchecked)
    try:
        return module.write_label(data, payload)
    finally:
        monkeypatch.undo()


def png_with_text_label(payload: str) -> bytes:
    """A Pillow PNG carrying ``payload`` in a ``tEXt`` chunk with keyword ``AIGC``."""
    info = PngInfo()
    info.add_text("AIGC", payload)
    return pillow("PNG", pnginfo=info)


def markdown_with(payload: str) -> bytes:
    return f"---\ntitle: x\nAIGC: {payload}\n---\n# Body\n".encode()


def carrier(kind: str, payload: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A real file of ``kind`` whose implicit label is ``payload``, valid or not."""
    if kind == "mp3":
        return mp3.write_label(encode_audio("mp3", "libmp3lame"), payload)
    if kind == "m4a":
        return mp4.write_label(encode_audio("mp4", "aac"), payload)
    if kind == "wav":
        return wav.write_label(make_wav(), payload)
    if kind == "png":
        return png_with_text_label(payload)
    if kind == "jpeg":
        return write_raw(jpeg, pillow("JPEG", quality=90), payload, monkeypatch)
    if kind == "pdf":
        return write_raw(pdf, pillow("PDF"), payload, monkeypatch)
    assert kind == "markdown"
    return markdown_with(payload)


KINDS = ["mp3", "m4a", "wav", "png", "jpeg", "pdf", "markdown"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", [TRUNCATED, NOT_A_LABEL], ids=["not-json", "not-a-label"])
def test_a_label_that_does_not_parse_is_a_finding_not_a_label(kind: str, payload: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = carrier(kind, payload, monkeypatch)

    report = Labeller(producer="-").inspect(data, watermark=False)

    assert report["labelled"] is False
    [entry] = report["gb45438"]
    assert entry["malformed"] is True and "fields" not in entry
    assert entry["payload"] == payload
    assert any("does not parse" in finding for finding in entry["findings"])
    assert any("not a label" in finding for finding in report["findings"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_file_with_a_valid_label_is_labelled(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The control for the test above: only the payload differs.
    report = Labeller(producer="-").inspect(carrier(kind, VALID, monkeypatch), watermark=False)

    assert report["labelled"] is True
    [entry] = report["gb45438"]
    assert "malformed" not in entry and entry["fields"]["ProduceID"] == "p-1"


@pytest.mark.parametrize("kind", ["mp3", "wav", "markdown"])
def test_an_absurdly_large_label_is_shown_bounded(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report = Labeller(producer="-").inspect(carrier(kind, BRACKETS, monkeypatch), watermark=False)

    assert report["labelled"] is False
    [entry] = report["gb45438"]
    assert entry["payload_truncated"] is True and entry["payload_length"] == len(BRACKETS)
    assert len(entry["payload"]) <= 256
    assert "more than 65536" in entry["findings"][0]


def test_a_malformed_label_beside_a_valid_one_leaves_the_file_labelled() -> None:
    labelled = png.write_label(pillow("PNG"), VALID)
    # Append a foreign tool's tEXt AIGC chunk with a broken value before IEND.
    body = b"AIGC\x00" + TRUNCATED.encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    data = labelled[:-12] + chunk + labelled[-12:]

    report = Labeller(producer="-").inspect(data, watermark=False)

    assert report["labelled"] is True
    assert [entry.get("malformed", False) for entry in report["gb45438"]] == [False, True]
    assert any("more than one implicit label" in finding for finding in report["findings"])


def test_cli_inspect_of_the_issue_mp3_exits_1_with_the_finding(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # No aiobligations.toml here: inspect with no provider keys.
    path = tmp_path / "bad.mp3"
    path.write_bytes(mp3.write_label(encode_audio("mp3", "libmp3lame"), BRACKETS))

    result = CliRunner().invoke(main, ["inspect", str(path)])

    assert 1 == result.exit_code, result.output
    report = json.loads(result.stdout)
    assert report["labelled"] is False and report["gb45438"][0]["malformed"] is True
    assert len(result.stdout) < 4096


def test_labelling_replaces_a_label_that_does_not_parse(tmp_path: Path) -> None:
    data = mp3.write_label(encode_audio("mp3", "libmp3lame"), BRACKETS)

    out = Labeller(producer=CODE).label(data, produce_id="p-2", c2pa=False).data

    [payload] = mp3.read_labels(out)
    assert AIGCLabel.parse(payload).produce_id == "p-2"


# ------------------------------------------------------------------------ defect 18: Markdown without front matter

PLAIN = "# Title\n\nSome *text* body.\n\n---\n\nA thematic break above.\n"


@pytest.mark.parametrize(
    ("name", "source", "head", "newline"),
    [
        ("lf", PLAIN.encode(), b"", "\n"),
        ("bom", b"\xef\xbb\xbf" + PLAIN.encode(), b"\xef\xbb\xbf", "\n"),
        ("crlf", PLAIN.replace("\n", "\r\n").encode(), b"", "\r\n"),
        ("bom-crlf", b"\xef\xbb\xbf" + PLAIN.replace("\n", "\r\n").encode(), b"\xef\xbb\xbf", "\r\n"),
        ("no-newline", b"just one line", b"", "\n"),
    ],
)
def test_cli_labels_markdown_without_front_matter(tmp_path: Path, monkeypatch, name: str, source: bytes,
                                                  head: bytes, newline: str) -> None:
    from aiobligations.keys import init_project

    init_project(tmp_path)
    config = tmp_path / "aiobligations.toml"
    # Only the implicit label: the explicit text label would add a line at the end.
    config.write_text(config.read_text().replace("explicit = true", "explicit = false"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.md").write_bytes(source)

    result = CliRunner().invoke(main, ["label", "in.md", "out.md", "--media-type", "text/markdown"])

    assert 0 == result.exit_code, result.stderr
    out = (tmp_path / "out.md").read_bytes()
    assert out.startswith(head + f"---{newline}AIGC:{newline}".encode())
    front_end = out.index(f"{newline}---{newline}".encode(), len(head)) + len(f"{newline}---{newline}")
    assert out[front_end:] == source[len(head):], "the document after the front matter changed"
    assert all(line.endswith(newline) for line in out[len(head):front_end].decode().splitlines(keepends=True))
    [payload] = markdown.read_labels(out)
    assert AIGCLabel.parse(payload).content_producer

    inspected = CliRunner().invoke(main, ["inspect", "out.md"])
    assert 0 == inspected.exit_code, inspected.stderr
    assert json.loads(inspected.stdout)["labelled"] is True


def test_markdown_without_front_matter_still_needs_its_type_declared() -> None:
    from aiobligations.errors import LabelError
    from aiobligations.labels.labeller import detect

    assert detect(PLAIN.encode(), "text/markdown") is markdown
    assert detect(PLAIN.encode(), "text/markdown; charset=utf-8") is markdown
    with pytest.raises(LabelError, match="not a supported file"):
        detect(PLAIN.encode())
    with pytest.raises(LabelError, match="not a supported file"):
        detect(PLAIN.encode(), "image/png")
    # A declared type never overrides a signature.
    with pytest.raises(LabelError, match="the content is image/png"):
        detect(pillow("PNG"), "text/markdown")
