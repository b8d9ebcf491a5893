"""GB 45438 §5.4 video captions, on clips synthesised here with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import pytest

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
pytest.importorskip("PIL")

from aiobligations.errors import ConfigurationError, LabelError
from aiobligations.labels.video import _overlay, caption_video

try:
    from aiobligations.labels.fonts import find_cjk_font

    find_cjk_font()
except LabelError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(f"no CJK font: {exc}", allow_module_level=True)

W, H, FPS, SECONDS = 320, 240, 25, 3.0
SAMPLE_RATE = 48000
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "labels"


def _gradient(index: int, width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    red = (xx * 255 // width + index * 4) % 256
    green = (yy * 255 // height) % 256
    blue = np.full_like(xx, (index * 8) % 256)
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def make_clip(
    width: int = W,
    height: int = H,
    fps: int = FPS,
    seconds: float = SECONDS,
    *,
    audio: bool = False,
    pts_step: int = 1,
) -> bytes:
    """An H.264 MP4 of a moving gradient, optionally with a mono AAC 440 Hz tone."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "12"}
        video.codec_context.time_base = Fraction(1, fps)
        sound = container.add_stream("aac", rate=SAMPLE_RATE) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for index in range(round(fps * seconds)):
            frame = av.VideoFrame.from_ndarray(
                _gradient(index, width, height), format="rgb24"
            )
            frame.pts = index * pts_step
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None:
            total = int(SAMPLE_RATE * seconds)
            tone = (
                0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / SAMPLE_RATE)
            ).astype(np.float32)
            for start in range(0, total, 1024):
                frame = av.AudioFrame.from_ndarray(
                    tone[None, start : start + 1024], format="flt", layout="mono"
                )
                frame.sample_rate = SAMPLE_RATE
                frame.pts = start
                container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return buffer.getvalue()


def decode(
    data: bytes,
) -> tuple[list[tuple[float, np.ndarray]], int, tuple[int, int], float]:
    """(time, RGB frame) pairs, decoded audio sample count, frame size and video duration."""
    frames: list[tuple[float, np.ndarray]] = []
    samples = 0
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
        for frame in container.decode(stream):
            frames.append((float(frame.time), frame.to_ndarray(format="rgb24")))
        if container.streams.audio:
            container.seek(0)
            for frame in container.decode(audio=0):
                samples += frame.samples
    return frames, samples, size, duration


def audio_packets(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data)) as container:
        return [bytes(p) for p in container.demux(audio=0) if p.size]


def _interior(region: np.ndarray) -> np.ndarray:
    """The caption box without its rounded ends, where the background shows through."""
    height = region.shape[0]
    return region[:, height // 2 : region.shape[1] - height // 2]


def _text_pixels(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Bright (text) pixels inside the dark caption box."""
    return _luma(_interior(_region(rgb, box))) > 160


def _is_captioned(rgb: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Mostly dark box with some bright text in it."""
    luma = _luma(_interior(_region(rgb, box)))
    bright = (luma > 160).mean()
    return bool((luma < 100).mean() > 0.5 and 0.02 < bright < 0.45)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip()


@pytest.fixture(scope="module")
def captioned(clip: bytes) -> bytes:
    return caption_video(clip)


@pytest.fixture(scope="module")
def box() -> tuple[int, int, int, int]:
    overlay, x0, y0, _ = _overlay("AI生成", W, H, "bottom-right", 0.05, 10)
    return x0, y0, overlay.width, overlay.height


def _region(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, w, h = box
    return rgb[y0 : y0 + h, x0 : x0 + w]


def test_opening_two_seconds_are_captioned_and_the_rest_untouched(
    clip: bytes, captioned: bytes, box: tuple[int, int, int, int]
) -> None:
    before, _, _, _ = decode(clip)
    after, _, _, _ = decode(captioned)
    assert abs(len(after) - len(before)) <= 1
    captioned_times = []
    for (t_in, original), (t_out, labelled) in zip(before, after, strict=False):
        assert abs(t_in - t_out) < 0.5 / FPS
        region_in, region_out = (
            _luma(_region(original, box)),
            _luma(_region(labelled, box)),
        )
        outside = np.abs(labelled.astype(int) - original.astype(int))
        x0, y0, w, h = box
        outside[y0 : y0 + h, x0 : x0 + w] = 0
        assert outside.mean() < 3, f"frame at {t_out:.2f} s changed outside the caption"
        if t_out < 2.0:
            # A dark box: most of the region darker than the gradient beneath; white text in it.
            assert np.median(region_out) < 0.5 * np.median(region_in), (
                f"no box at {t_out:.2f} s"
            )
            assert _is_captioned(labelled, box), f"no caption at {t_out:.2f} s"
            captioned_times.append(t_out)
        else:
            assert np.abs(region_out - region_in).mean() < 4, (
                f"caption left at {t_out:.2f} s"
            )
            assert not _is_captioned(labelled, box)
    assert len(captioned_times) == 2 * FPS
    assert max(captioned_times) >= 2.0 - 1.5 / FPS


def test_frame_count_duration_and_size_are_kept(clip: bytes, captioned: bytes) -> None:
    before, _, size_in, duration_in = decode(clip)
    after, _, size_out, duration_out = decode(captioned)
    assert size_out == size_in == (W, H)
    assert abs(len(after) - len(before)) <= 1
    assert abs(duration_out - duration_in) <= 1 / FPS + 1e-6
    assert abs(duration_out - SECONDS) <= 1 / FPS + 1e-6
    with av.open(io.BytesIO(captioned)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == FPS
    assert captioned[4:8] == b"ftyp"
    assert captioned.index(b"moov") < captioned.index(b"mdat"), "not faststart"


def test_text_is_at_least_five_percent_of_the_shortest_side(
    captioned: bytes, box: tuple[int, int, int, int]
) -> None:
    frames, _, _, _ = decode(captioned)
    _, first = frames[0]
    rows = np.flatnonzero(_text_pixels(first, box).any(axis=1))
    assert rows.size, "no text found"
    text_height = rows[-1] - rows[0] + 1
    assert text_height >= 0.05 * min(W, H), text_height
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(first).save(ARTIFACTS / "video-frame.png")


def test_audio_is_copied_unchanged() -> None:
    clip = make_clip(audio=True)
    out = caption_video(clip)
    _, samples_in, _, _ = decode(clip)
    frames, samples_out, _, _ = decode(out)
    assert samples_in > 0
    assert abs(samples_out - samples_in) <= 1024
    assert audio_packets(out) == audio_packets(clip)
    assert len(frames) == round(FPS * SECONDS)


def test_short_clip_is_captioned_throughout(box: tuple[int, int, int, int]) -> None:
    clip = make_clip(seconds=1.0)
    frames, _, _, _ = decode(caption_video(clip, corner="bottom-right"))
    assert len(frames) == FPS
    for _, rgb in frames:
        assert _is_captioned(rgb, box)


def test_custom_seconds_corner_and_wording(clip: bytes) -> None:
    overlay, x0, y0, _ = _overlay("人工智能生成", W, H, "top-left", 0.05, 10)
    assert x0 < W // 4 and y0 < H // 4
    frames, _, _, _ = decode(
        caption_video(clip, wording="人工智能生成", seconds=1.0, corner="top-left")
    )
    region = (x0, y0, overlay.width, overlay.height)
    marked = [t for t, rgb in frames if _is_captioned(rgb, region)]
    assert marked and max(marked) < 1.0
    assert len(marked) == FPS


@pytest.mark.parametrize(
    "data",
    [b"", b"not a video at all" * 100, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 500],
    ids=["empty", "garbage", "truncated-mp4"],
)
def test_garbage_is_a_label_error(data: bytes) -> None:
    with pytest.raises(LabelError):
        caption_video(data)


def test_truncated_clip_is_a_label_error(clip: bytes) -> None:
    with pytest.raises(LabelError):
        caption_video(clip[: len(clip) // 3])


def test_non_mp4_is_refused() -> None:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, "PNG")
    with pytest.raises(LabelError):
        caption_video(png.getvalue())


def test_bounds_are_enforced() -> None:
    # 2 frames 700 s apart: declared over 10 minutes.
    with pytest.raises(LabelError, match="600"):
        caption_video(make_clip(64, 64, fps=1, seconds=2, pts_step=700))
    with pytest.raises(LabelError, match="4K"):
        caption_video(make_clip(4112, 64, fps=1, seconds=1))


def test_bad_settings_are_configuration_errors(clip: bytes) -> None:
    with pytest.raises(ConfigurationError):
        caption_video(clip, wording="AI播客")
    with pytest.raises(ConfigurationError):
        caption_video(clip, corner="middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        caption_video(clip, seconds=0)
    with pytest.raises(LabelError):
        caption_video("not bytes")  # type: ignore[arg-type]
