"""Explicit labels (GB 45438 §5): text wording and placement, image captions, the audio rhythm cue."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from aiobligations.demo.models import ToyImageModel
from aiobligations.errors import ConfigurationError, LabelError
from aiobligations.labels import explicit, fonts
from aiobligations.labels.explicit import (
    TEXT_WORDING,
    add_audio_cue,
    caption_image,
    label_chat_completion,
    label_text,
    rhythm_cue,
    validate_wording,
)

Image = pytest.importorskip("PIL.Image")

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "labels"


# --- text ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wording", ["AI生成", "人工智能生成", "本内容由AI生成", "AI合成", "人工智能生成合成", "豆包AI生成"]
)
def test_valid_wordings_pass(wording: str) -> None:
    """A wording with an AI element and a generation element is accepted."""
    validate_wording(wording)


@pytest.mark.parametrize(
    ("wording", "missing"),
    [
        ("AI播客", "lacks the generation element"),
        ("人工智能助手", "lacks the generation element"),
        ("本内容由机器生成", "lacks the AI element"),
        ("虚拟主播", "lacks both"),
        ("", "lacks both"),
        ("said生成", "lacks the AI element"),
    ],
)
def test_invalid_wordings_name_what_is_missing(wording: str, missing: str) -> None:
    """A wording without an element raises ConfigurationError naming the missing element."""
    with pytest.raises(ConfigurationError, match=missing):
        validate_wording(wording)


def test_english_wording_needs_opt_in() -> None:
    """GB 45438 names Chinese generation elements; English needs allow_english=True."""
    with pytest.raises(ConfigurationError, match="generation element"):
        validate_wording(TEXT_WORDING["en"])
    validate_wording(TEXT_WORDING["en"], allow_english=True)
    validate_wording(TEXT_WORDING["zh"])
    assert "AI-generated content\nhi" == label_text("hi", wording=TEXT_WORDING["en"], allow_english=True)


def test_label_text_positions() -> None:
    """The label goes before, after or on both sides of the text."""
    w = "【本内容由人工智能生成】"
    assert f"{w}\nHello" == label_text("Hello")
    assert f"Hello\n{w}" == label_text("Hello", position="suffix")
    assert f"{w}\nHello\n{w}" == label_text("Hello", position="both")
    assert "AI生成 Hello" == label_text("Hello", wording="AI生成", separator=" ")
    assert w == label_text("")


@pytest.mark.parametrize("position", ["prefix", "suffix", "both"])
def test_label_text_is_idempotent(position: str) -> None:
    """Labelling a labelled text adds no second identical label."""
    once = label_text("你好", position=position)  # type: ignore[arg-type]
    assert once == label_text(once, position=position)  # type: ignore[arg-type]
    assert (2 if position == "both" else 1) == once.count("本内容由人工智能生成")


def test_label_text_rejects_bad_arguments() -> None:
    """Bad wording or position is a ConfigurationError."""
    with pytest.raises(ConfigurationError):
        label_text("x", wording="AI播客")
    with pytest.raises(ConfigurationError, match="position"):
        label_text("x", position="middle")  # type: ignore[arg-type]


def test_label_chat_completion_in_place() -> None:
    """Each string content in choices[].message is labelled in place; others are left alone."""
    payload = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}},
            {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": []}},
            {"index": 2, "message": {"role": "assistant", "content": "Bye"}},
        ],
    }
    assert 2 == label_chat_completion(payload, "AI生成", "suffix")
    assert "Hi\nAI生成" == payload["choices"][0]["message"]["content"]
    assert payload["choices"][1]["message"]["content"] is None
    assert "Bye\nAI生成" == payload["choices"][2]["message"]["content"]
    label_chat_completion(payload, "AI生成", "suffix")
    assert "Hi\nAI生成" == payload["choices"][0]["message"]["content"]


def test_label_chat_completion_rejects_non_completions() -> None:
    """A payload without a list of choices is a LabelError; a bad wording a ConfigurationError."""
    with pytest.raises(LabelError):
        label_chat_completion({"data": []})
    with pytest.raises(ConfigurationError):
        label_chat_completion({"choices": []}, "虚拟主播")


# --- images ----------------------------------------------------------------------------------


def _synthetic(kind: str, width: int, height: int) -> Image.Image:
    if kind == "light":
        return Image.new("RGB", (width, height), (250, 250, 245))
    if kind == "dark":
        return Image.new("RGB", (width, height), (20, 22, 30))
    rng = np.random.default_rng(width * height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **({"quality": 95} if fmt != "PNG" else {}))
    return out.getvalue()


def _measure_caption(before: np.ndarray, after: np.ndarray, corner: str) -> tuple[tuple[int, int, int, int], int]:
    """Return the caption box (x0, y0, x1, y1) found by difference, and the text ink height in it."""
    changed = np.abs(after.astype(int) - before.astype(int)).max(axis=2) > 24
    ys, xs = np.nonzero(changed)
    assert len(ys), "nothing was drawn"
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    # White text on the dark box: bright pixels, away from the box's anti-aliased rounded edges.
    inset = (y1 - y0) // 4 + 3
    inner = after[y0 + 2 : y1 - 2, x0 + inset : x1 - inset]
    bright = inner.min(axis=2) >= 200
    rows = np.nonzero(bright.any(axis=1))[0]
    assert len(rows), "no text pixels in the caption"
    return (int(x0), int(y0), int(x1), int(y1)), int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("size", [(256, 256), (1024, 1024), (1920, 1080)])
@pytest.mark.parametrize("kind", ["light", "dark", "noisy"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_caption_is_tall_enough_and_in_the_corner(size: tuple[int, int], kind: str, fmt: str) -> None:
    """The caption decodes in the same size and format, sits bottom-right, and is >= 5 % high."""
    width, height = size
    original = _encode(_synthetic(kind, width, height), fmt)
    captioned = caption_image(original)
    with Image.open(io.BytesIO(captioned)) as out:
        assert fmt == out.format
        assert size == out.size
        after = np.asarray(out.convert("RGB"))
    with Image.open(io.BytesIO(original)) as src:
        before = np.asarray(src.convert("RGB"))
    (x0, y0, x1, y1), text_height = _measure_caption(before, after, "bottom-right")
    shortest = min(width, height)
    assert text_height >= 0.05 * shortest
    assert x1 > width * 0.8 and y1 > height * 0.8, "not in the bottom-right corner"
    assert x0 > width / 2 and y0 > height / 2
    # The opposite corner is untouched (bit for bit in PNG, within JPEG's re-encoding error).
    quarter = (slice(0, height // 4), slice(0, width // 4))
    if fmt == "PNG":
        assert np.array_equal(before[quarter], after[quarter])
    else:
        assert np.abs(before[quarter].astype(int) - after[quarter].astype(int)).mean() < 3


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_caption_goes_on_the_chosen_corner(corner: str) -> None:
    """Each corner option puts the box in that quarter of the image."""
    image = _synthetic("light", 400, 300)
    wording = "本内容由AI生成"
    captioned = caption_image(_encode(image, "PNG"), corner=corner, wording=wording)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(captioned)) as out:
        after = np.asarray(out.convert("RGB"))
    (x0, y0, x1, y1), _ = _measure_caption(np.asarray(image), after, corner)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    assert (cx < 200) == corner.endswith("left")
    assert (cy < 150) == corner.startswith("top")


def test_caption_keeps_webp_and_alpha() -> None:
    """WebP stays WebP; an RGBA PNG keeps its alpha channel."""
    image = _synthetic("noisy", 320, 240)
    out = caption_image(_encode(image, "WEBP"))
    with Image.open(io.BytesIO(out)) as decoded:
        assert ("WEBP", (320, 240)) == (decoded.format, decoded.size)
    rgba = Image.new("RGBA", (300, 300), (0, 128, 255, 100))
    out = caption_image(_encode(rgba, "PNG"))
    with Image.open(io.BytesIO(out)) as decoded:
        assert ("PNG", "RGBA") == (decoded.format, decoded.mode)
        assert (0, 128, 255, 100) == decoded.getpixel((5, 5))


def test_caption_toy_model_output_and_save_example() -> None:
    """A toy model image is captioned; the example is kept under test-artifacts/labels/."""
    png = ToyImageModel().generate("a lighthouse at dusk", "1024x1024")
    out = caption_image(png)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "caption-toy-1024.png").write_bytes(out)
    noisy = caption_image(_encode(_synthetic("noisy", 1920, 1080), "JPEG"))
    # The JPEG's corner, saved as PNG for image viewers.
    with Image.open(io.BytesIO(noisy)) as decoded:
        decoded.crop((1280, 720, 1920, 1080)).save(ARTIFACTS / "caption-noisy-jpeg-corner.png")
    with Image.open(io.BytesIO(out)) as decoded:
        assert ("PNG", (1024, 1024)) == (decoded.format, decoded.size)


def test_caption_higher_ratio_gives_taller_text() -> None:
    """min_height_ratio is honoured above the 5 % floor."""
    image = _synthetic("dark", 600, 600)
    out = caption_image(_encode(image, "PNG"), min_height_ratio=0.1)
    with Image.open(io.BytesIO(out)) as decoded:
        after = np.asarray(decoded.convert("RGB"))
    _, text_height = _measure_caption(np.asarray(image), after, "bottom-right")
    assert text_height >= 60


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, _encode(Image.new("RGB", (64, 64)), "PNG")[:60]],
)
def test_caption_malformed_images_raise_label_error(data: bytes) -> None:
    """Undecodable or truncated images raise LabelError."""
    with pytest.raises(LabelError):
        caption_image(data)


def test_caption_rejects_other_formats_and_tiny_images() -> None:
    """BMP is unsupported; an image too small for a 5 % caption is refused, not mislabelled."""
    with pytest.raises(LabelError, match="BMP"):
        caption_image(_encode(Image.new("RGB", (200, 200)), "BMP"))
    with pytest.raises(LabelError, match="too small"):
        caption_image(_encode(Image.new("RGB", (60, 20)), "PNG"), wording="本内容由人工智能生成合成")
    with pytest.raises(ConfigurationError):
        caption_image(_encode(Image.new("RGB", (200, 200)), "PNG"), wording="AI播客")
    with pytest.raises(ConfigurationError):
        caption_image(_encode(Image.new("RGB", (200, 200)), "PNG"), corner="middle")  # type: ignore[arg-type]


def test_font_falls_back_to_system_then_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the package a system font is used; without any, LabelError says what to install."""
    monkeypatch.delenv(fonts.CJK_FONT_ENV, raising=False)
    monkeypatch.setattr(fonts, "_packaged_font", lambda: None)
    wqy = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
    if wqy.is_file():
        assert wqy == fonts.find_cjk_font()
        caption_image(_encode(_synthetic("light", 256, 256), "PNG"))
    monkeypatch.setattr(fonts, "SYSTEM_CJK_FONTS", ())
    with pytest.raises(LabelError, match="no CJK font found: install"):
        fonts.find_cjk_font()
    with pytest.raises(LabelError, match="no CJK font"):
        caption_image(_encode(_synthetic("light", 256, 256), "PNG"))
    monkeypatch.setenv(fonts.CJK_FONT_ENV, str(tmp_path / "missing.ttf"))
    with pytest.raises(LabelError, match="not a file"):
        fonts.find_cjk_font()


# --- audio -----------------------------------------------------------------------------------


def _segments(samples: np.ndarray, rate: int) -> list[tuple[bool, float]]:
    """On/off runs by RMS over 5 ms windows, as (on, duration in ms)."""
    window = round(rate * 0.005)
    n = len(samples) // window
    rms = np.sqrt((samples[: n * window].reshape(n, window) ** 2).mean(axis=1))
    on = rms > 0.2 * rms.max()
    runs: list[tuple[bool, float]] = []
    for state in on:
        if runs and runs[-1][0] == state:
            runs[-1] = (state, runs[-1][1] + 5.0)
        else:
            runs.append((bool(state), 5.0))
    return runs


@pytest.mark.parametrize(("rate", "unit", "frequency"), [(16000, 120, 800.0), (44100, 120, 1046.5), (8000, 100, 800.0)])
def test_rhythm_cue_is_short_long_short_short(rate: int, unit: int, frequency: float) -> None:
    """The envelope shows tones of 1, 3, 1, 1 units with one-unit gaps (within ±10 ms)."""
    cue = rhythm_cue(rate, unit_ms=unit, frequency=frequency)
    assert np.abs(cue).max() <= 0.3 + 1e-9
    assert abs(len(cue) / rate * 1000 - 9 * unit) < 1
    runs = _segments(cue, rate)
    expected = [(True, 1), (False, 1), (True, 3), (False, 1), (True, 1), (False, 1), (True, 1)]
    assert [on for on, _ in expected] == [on for on, _ in runs]
    for (_, units), (_, ms) in zip(expected, runs):
        assert abs(units * unit - ms) <= 10, runs
    # 5 ms fades: the first and last samples of the cue are (near) silent, no click.
    assert abs(cue[0]) < 1e-6 and abs(cue[-1]) < 0.01


def test_rhythm_cue_rejects_bad_parameters() -> None:
    """Out-of-range parameters are ConfigurationErrors."""
    for kwargs in ({"unit_ms": 0}, {"frequency": 9000.0}, {"amplitude": 1.5}):
        with pytest.raises(ConfigurationError):
            rhythm_cue(16000, **kwargs)  # type: ignore[arg-type]


def _wav(rate: int, width: int, channels: int, frames: int = 4000) -> bytes:
    rng = np.random.default_rng(rate + width + channels)
    data = rng.integers(0, 256, frames * width * channels, dtype=np.uint8).tobytes()
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(data)
    return out.getvalue()


def _decode(wav_bytes: bytes) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(io.BytesIO(wav_bytes)) as r:
        return (r.getframerate(), r.getsampwidth(), r.getnchannels()), r.readframes(r.getnframes())


def _to_float(data: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:
        x = np.frombuffer(data, np.uint8).astype(float) - 128
        scale = 128.0
    elif width == 2:
        x, scale = np.frombuffer(data, "<i2").astype(float), 32768.0
    elif width == 3:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3)
        ints = b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16)
        x, scale = np.where(ints >= 1 << 23, ints - (1 << 24), ints).astype(float), float(1 << 23)
    else:
        x, scale = np.frombuffer(data, "<i4").astype(float), float(1 << 31)
    return (x / scale).reshape(-1, channels)


@pytest.mark.parametrize("at", ["start", "end"])
@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(16000, 2, 1), (44100, 2, 2), (8000, 1, 1), (48000, 3, 2), (22050, 4, 1)]
)
def test_add_audio_cue_keeps_format_and_original_samples(at: str, rate: int, width: int, channels: int) -> None:
    """The format is kept, the original data follows (or precedes) the cue bit for bit."""
    original = _wav(rate, width, channels)
    out = add_audio_cue(original, at=at)  # type: ignore[arg-type]
    params, frames = _decode(out)
    _, original_frames = _decode(original)
    assert (rate, width, channels) == params
    frame = width * channels
    cue_frames = round(rate * 0.12) * 9 + round(rate * 0.2)
    assert len(frames) == len(original_frames) + cue_frames * frame
    if at == "start":
        assert original_frames == frames[cue_frames * frame :]
        cue = frames[: round(rate * 0.12) * 9 * frame]
        silence = frames[round(rate * 0.12) * 9 * frame : cue_frames * frame]
    else:
        assert original_frames == frames[: len(original_frames)]
        silence = frames[len(original_frames) : len(original_frames) + round(rate * 0.2) * frame]
        cue = frames[len(original_frames) + round(rate * 0.2) * frame :]
    assert set(silence) == ({0x80} if width == 1 else {0})
    samples = _to_float(cue, width, channels)
    assert np.allclose(samples[:, 0], samples[:, -1])
    assert abs(np.abs(samples).max() - 0.3) < 0.02
    assert [True, False, True, False, True, False, True] == [on for on, _ in _segments(samples[:, 0], rate)]


def test_add_audio_cue_to_empty_wav() -> None:
    """A WAV with no frames gets just the cue and the silence."""
    params, frames = _decode(add_audio_cue(_wav(16000, 2, 1, frames=0)))
    assert (16000, 2, 1) == params
    assert len(frames) == 2 * (1920 * 9 + 3200)


def _alaw_wav() -> bytes:
    data = b"\x00" * 16
    fmt = struct.pack("<HHIIHH", 6, 1, 8000, 8000, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "data",
    [b"", b"RIFF", b"not a wav at all", _wav(16000, 2, 1)[:30], _alaw_wav(), _encode(Image.new("RGB", (8, 8)), "PNG")],
)
def test_add_audio_cue_malformed_raises_label_error(data: bytes) -> None:
    """Garbage, truncated headers and A-law WAVs (neither PCM nor float) raise LabelError."""
    with pytest.raises(LabelError):
        add_audio_cue(data)


def test_add_audio_cue_truncated_data_raises_label_error() -> None:
    """A data chunk shorter than its header says is refused rather than silently shortened."""
    wav_bytes = _wav(16000, 2, 1)
    with pytest.raises(LabelError, match="truncated"):
        add_audio_cue(wav_bytes[:-101])


def test_add_audio_cue_rejects_bad_position() -> None:
    """at must be start or end."""
    with pytest.raises(ConfigurationError):
        add_audio_cue(_wav(16000, 2, 1), at="middle")  # type: ignore[arg-type]


@pytest.mark.parametrize("module", [explicit, fonts])
def test_module_exports(module: object) -> None:
    """__all__ is sorted as the project sorts it (constants, classes, functions) and complete."""
    exported = module.__all__  # type: ignore[attr-defined]

    def group(n: str) -> tuple[int, str]:
        return (0 if n.isupper() else 1 if n[0].isupper() else 2, n)

    assert sorted(exported, key=group) == list(exported)
    assert all(getattr(module, name).__doc__ for name in exported if callable(getattr(module, name)))


def test_caption_is_deterministic_across_threads() -> None:
    """Concurrent captions (the cached font is shared) give the same bytes as a single one."""
    from concurrent.futures import ThreadPoolExecutor

    data = _encode(_synthetic("noisy", 512, 384), "PNG")
    expected = caption_image(data)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: caption_image(data), range(8)))
    assert all(expected == result for result in results)


def test_markdown_gets_a_visible_label_at_the_end_once() -> None:
    from aiobligations.labels.explicit import DEFAULT_TEXT_WORDING, label_markdown

    source = "---\ntitle: x\n---\n# Title\n\nbody\n".encode()

    once = label_markdown(source)
    twice = label_markdown(once)

    assert once == twice
    assert once.decode().startswith("---\ntitle: x\n---\n# Title\n\nbody")
    assert once.decode().rstrip().endswith(DEFAULT_TEXT_WORDING)
    with pytest.raises(LabelError):
        label_markdown(b"\xff\xfe not utf-8")


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_still_gif_and_tiff_get_a_caption_in_their_own_format(fmt: str) -> None:
    from PIL import Image

    source = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 220, 240)).save(source, fmt)

    captioned = explicit.caption_image(source.getvalue())

    with Image.open(io.BytesIO(captioned)) as image:
        assert (fmt, (400, 300)) == (image.format, image.size)
        pixels = np.asarray(image.convert("RGB")).astype(int)
    corner = pixels[-40:, -120:]
    assert (corner.sum(axis=2) < 200).mean() > 0.2  # The dark caption box is there.
    assert (pixels[:100, :100] == (200, 220, 240)).all()  # The opposite corner is untouched.
