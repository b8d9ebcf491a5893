"""`aiobligations label` says what it applied and what it skipped; `inspect` finds the visible caption.

The profile is a fresh `aiobligations init` one (every label part on); the CLI runs in-process
through click's runner, in a temporary folder that holds the profile.
"""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aiobligations.cli import label_report, main
from aiobligations.keys import init_project
from aiobligations.labels import explicit


@pytest.fixture(name="folder")
def _folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIOBLIGATIONS_CONFIG", raising=False)
    return tmp_path


def photo(width: int = 640, height: int = 480, fmt: str = "PNG", **options: Any) -> bytes:
    """A photo-like image: smooth colour gradients and a little noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.dstack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64])
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, fmt, **options)
    return out.getvalue()


def pcm_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return out.getvalue()


def label(folder: Path, name: str, data: bytes, *extra: str) -> tuple[list[str], Path]:
    """Run `label`; return its lines after the `wrote` line, and the labelled file."""
    (folder / name).write_bytes(data)
    target = folder / f"labelled-{name}"
    result = CliRunner().invoke(main, ["label", name, target.name, *extra])
    assert 0 == result.exit_code, result.output
    # In-process, a log line (label_skipped) may share standard output with the report: keep the report.
    wrote, *lines = [line for line in result.stdout.splitlines() if line.startswith(("wrote ", "applied: ",
                                                                                       "skipped: "))]
    assert wrote.startswith(f"wrote {target.name}: ")
    assert "using profile" not in result.stderr  # ./aiobligations.toml is in plain sight: not announced.
    return lines, target


def inspect(path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(main, ["inspect", str(path), *extra])
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{"):])


def by_part(lines: list[str]) -> dict[str, str]:
    """``{"implicit": "applied: …", …}``: each line under the part it names."""
    names = {"implicit label": "implicit", "explicit label": "explicit", "watermark": "watermark",
             "C2PA manifest": "c2pa"}
    parts = {}
    for line in lines:
        status, _, rest = line.partition(": ")
        name, _, _ = rest.partition(" — ")
        parts[names[name.split(" (")[0]]] = line
        assert status in ("applied", "skipped"), line
    return parts


class TestLabelSaysWhatItDid:
    def test_a_png_gets_every_part_and_each_is_one_applied_line(self, folder: Path) -> None:
        """Implicit, explicit, watermark and C2PA: four `applied` lines, each with what was done."""
        lines, _ = label(folder, "picture.png", photo())

        parts = by_part(lines)
        assert ["implicit", "explicit", "watermark", "c2pa"] == list(parts), lines
        assert all(line.startswith("applied: ") for line in lines), lines
        assert "ContentProducer Example%20Co" in parts["implicit"] and "ReservedCode1 signed" in parts["implicit"]
        assert "caption 'AI生成', bottom-right" in parts["explicit"]
        assert "payload " in parts["watermark"]
        assert "c2pa.created" in parts["c2pa"] and "bound to the watermark" in parts["c2pa"]

    def test_a_too_small_image_skips_the_watermark_and_says_why(self, folder: Path) -> None:
        """100x60 holds a caption but not the watermark's 384 blocks: one skipped line, with the reason."""
        lines, target = label(folder, "small.png", photo(100, 60))

        parts = by_part(lines)
        assert parts["watermark"].startswith("skipped: watermark — image too small to carry a watermark")
        assert "100x60" in parts["watermark"]
        assert all(parts[part].startswith("applied: ") for part in ("implicit", "explicit", "c2pa")), lines
        assert target.stat().st_size > 0

    def test_a_wav_gets_the_cue_and_no_watermark(self, folder: Path) -> None:
        """Audio: the rhythm cue is applied; the watermark is for images, and the line says so."""
        lines, target = label(folder, "voice.wav", pcm_wav())

        parts = by_part(lines)
        assert parts["explicit"].startswith("applied: explicit label — rhythm cue ·−··")
        assert "skipped: watermark — only PNG, JPEG and WebP images carry the watermark" == parts["watermark"]
        assert parts["implicit"].startswith("applied: ") and parts["c2pa"].startswith("applied: ")
        status, report = inspect(target)
        assert 0 == status and report["explicit"]["present"] is True

    def test_markdown_gets_no_c2pa_and_says_why(self, folder: Path) -> None:
        """Markdown: the text label and the metadata; C2PA and the watermark skipped, each with its reason."""
        lines, target = label(folder, "answer.md", "# Answer\n\nForty-two.\n".encode(), "--media-type",
                              "text/markdown")

        parts = by_part(lines)
        assert "skipped: C2PA manifest — not a C2PA format" == parts["c2pa"]
        assert parts["watermark"].startswith("skipped: watermark — only PNG")
        assert parts["explicit"].startswith("applied: explicit label — text '【本内容由人工智能生成】' at the end")
        assert parts["implicit"].startswith("applied: ")
        assert target.read_text(encoding="utf-8").rstrip().endswith("【本内容由人工智能生成】")

    def test_a_part_off_in_the_profile_is_a_skipped_line_naming_the_setting(self, folder: Path) -> None:
        """[labels] watermark = false: the line says it is off in the profile, not that it failed."""
        profile = folder / "aiobligations.toml"
        text = profile.read_text(encoding="utf-8")
        profile.write_text(text.replace("\nwatermark = true", "\nwatermark = false"), encoding="utf-8")

        lines, _ = label(folder, "picture.png", photo())

        assert "skipped: watermark — off in the profile ([labels] watermark = false)" == by_part(lines)["watermark"]

    def test_the_report_names_a_part_the_labeller_left_out(self) -> None:
        """Never silently absent: an enabled part without evidence still gets a line."""
        lines = label_report({"gb45438": {"ContentProducer": "P", "ProduceID": "1", "ReservedCode1": ""}},
                             {"implicit": True, "explicit": False, "watermark": True, "c2pa": False})

        assert lines[0].startswith("applied: implicit label (GB 45438 metadata) — ContentProducer P")
        assert "skipped: watermark — the labeller recorded nothing for it" == lines[2]
        assert "skipped: C2PA manifest — off in the profile ([labels] c2pa = false)" == lines[3]

    def test_label_help_describes_the_parts_and_the_lines(self) -> None:
        result = CliRunner().invoke(main, ["label", "--help"])

        assert 0 == result.exit_code
        text = " ".join(result.stdout.split())
        for phrase in ("[labels] explicit, watermark, implicit, c2pa", "applied: PART — what",
                       "skipped: PART — why", "Markdown and Office files", "TARGET is written"):
            assert phrase in text, phrase


class TestInspectFindsTheCaption:
    @pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
    def test_a_labelled_image_reports_its_caption(self, folder: Path, fmt: str) -> None:
        """The caption the labeller drew is found in the pixels, with its wording, corner and box."""
        data = photo(1024, 768, fmt, **({"quality": 75} if fmt == "JPEG" else {}))
        _, target = label(folder, f"picture.{fmt.lower()}", data)

        status, report = inspect(target)

        assert 0 == status
        caption = report["explicit"]["caption"]
        assert caption["present"] is True and caption["checked"] is True, caption
        assert "AI生成" == caption["text"] and "bottom-right" == caption["corner"]
        left, top, right, bottom = caption["box"]
        assert 1024 > right > left > 800 and 768 > bottom > top > 650, caption["box"]
        assert "re-rendered 'AI生成'" in caption["how"]

    def test_a_caption_survives_a_jpeg_re_encode_at_quality_75(self, folder: Path) -> None:
        _, target = label(folder, "picture.png", photo())
        out = io.BytesIO()
        Image.open(target).convert("RGB").save(out, "JPEG", quality=75)
        copy = folder / "copy.jpg"
        copy.write_bytes(out.getvalue())

        _, report = inspect(copy)

        assert report["explicit"]["caption"]["present"] is True, report["explicit"]

    @pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
    def test_a_caption_painted_over_is_not_present(self, folder: Path, fmt: str) -> None:
        """The metadata still says AI; the pixels no longer show the caption, and inspect says so."""
        _, target = label(folder, f"picture.{fmt.lower()}", photo(fmt=fmt))
        image = Image.open(target).convert("RGB")
        image.paste((128, 140, 90), tuple(explicit.caption_box(image.size)))
        out = io.BytesIO()
        image.save(out, fmt)
        painted = folder / f"painted.{fmt.lower()}"
        painted.write_bytes(out.getvalue())

        _, report = inspect(painted)

        assert report["explicit"]["caption"]["present"] is False, report["explicit"]
        assert report["explicit"]["caption"]["checked"] is True

    def test_an_image_never_captioned_has_no_caption(self, folder: Path) -> None:
        (folder / "plain.png").write_bytes(photo())

        status, report = inspect(folder / "plain.png")

        assert 1 == status
        assert {"checked": True, "present": False} == {k: report["explicit"]["caption"][k]
                                                       for k in ("checked", "present")}

    def test_another_wording_is_unverified_not_absent(self, folder: Path) -> None:
        """A caption in another wording than the profile's: inspect cannot tell, and says so."""
        (folder / "other.png").write_bytes(explicit.caption_image(photo(800, 600), wording="人工智能合成"))

        _, report = inspect(folder / "other.png")

        caption = report["explicit"]["caption"]
        assert caption["present"] is None and caption["checked"] is False, caption
        assert caption["reason"].startswith("unverified: ")

    def test_the_profile_wording_is_the_one_looked_for(self, folder: Path) -> None:
        profile = folder / "aiobligations.toml"
        text = profile.read_text(encoding="utf-8")
        profile.write_text(text.replace('explicit_wording = "AI生成"', 'explicit_wording = "人工智能合成"'),
                           encoding="utf-8")
        _, target = label(folder, "picture.png", photo())

        _, report = inspect(target)

        assert "人工智能合成" == report["explicit"]["caption"]["text"]
        assert report["explicit"]["caption"]["present"] is True

    def test_without_a_cjk_font_the_caption_is_unverified(self, folder: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        _, target = label(folder, "picture.png", photo())
        monkeypatch.setenv("AIOBLIGATIONS_CJK_FONT", str(folder / "no-such-font.ttf"))

        _, report = inspect(target)

        caption = report["explicit"]["caption"]
        assert caption["present"] is None and "unverified" in caption["reason"], caption
        assert report["labelled"] is True  # The metadata label is still there.


class TestFindCaption:
    """The pixel check itself, on every captioned format and mode."""

    @pytest.mark.parametrize(("fmt", "mode"), [("GIF", "RGB"), ("TIFF", "RGB"), ("WEBP", "RGB"), ("PNG", "RGBA"),
                                               ("PNG", "L"), ("PNG", "P")])
    def test_found_in_every_captioned_format_and_mode(self, fmt: str, mode: str) -> None:
        image = Image.open(io.BytesIO(photo(600, 400))).convert(mode)
        out = io.BytesIO()
        image.save(out, fmt)

        captioned = explicit.caption_image(out.getvalue())
        found = explicit.find_caption(captioned)

        assert found["present"] is True, found
        assert list(explicit.caption_box((600, 400))) == found["box"]
        assert explicit.find_caption(out.getvalue())["present"] is False

    @pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left"])
    def test_any_corner_is_found_and_named(self, corner: str) -> None:
        captioned = explicit.caption_image(photo(), corner=corner)  # type: ignore[arg-type]

        found = explicit.find_caption(captioned)

        assert (True, corner) == (found["present"], found["corner"])

    def test_a_flat_dark_image_is_no_caption_not_unverified(self) -> None:
        """Dark corners alone are not a caption: without light glyph pixels the answer is a plain no."""
        out = io.BytesIO()
        Image.new("RGB", (800, 600), (10, 10, 20)).save(out, "PNG")

        found = explicit.find_caption(out.getvalue())

        assert (True, False) == (found["checked"], found["present"]), found

    def test_an_image_too_small_for_the_caption_has_none_and_says_why(self) -> None:
        out = io.BytesIO()
        Image.new("RGB", (30, 20), "white").save(out, "PNG")

        found = explicit.find_caption(out.getvalue())

        assert (True, False) == (found["checked"], found["present"]) and "too small" in found["how"], found
