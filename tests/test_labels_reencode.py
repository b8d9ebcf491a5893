"""Issue 12: how a label call re-encodes an image.

JPEG: a metadata-only label keeps the input's bytes, so its chroma subsampling; a caption or a
watermark re-encodes it once, without chroma subsampling (4:4:4) and with the input's quantisation
tables. PNG: the caption and the watermark are applied to one decoded image, encoded once; the
metadata label is a chunk insertion that leaves the pixel chunks as they are.
"""

from __future__ import annotations

import io
from fractions import Fraction

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, JpegImagePlugin, PngImagePlugin

from aiobligations.labels import Labeller
from aiobligations.labels.formats import jpeg, png

PRODUCER = "001191440300708461136T1XGW3"
SAMPLINGS = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def _photo(width: int = 640, height: int = 480, seed: int = 3) -> np.ndarray:
    """A photo-like image: gradients, discs and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    for _ in range(8):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(20, 120)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    image += rng.normal(0, 5, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _pillow_jpeg(subsampling: int, quality: int = 85) -> bytes:
    out = io.BytesIO()
    Image.fromarray(_photo()).save(out, "JPEG", quality=quality, subsampling=subsampling)
    return out.getvalue()


def _ffmpeg_jpeg(pix_fmt: str) -> bytes:
    """A JPEG written by FFmpeg's MJPEG encoder (through PyAV), not by libjpeg."""
    import av

    pixels = _photo()
    context = av.CodecContext.create("mjpeg", "w")
    context.height, context.width = pixels.shape[:2]
    context.pix_fmt = pix_fmt
    context.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
    packets = list(context.encode(frame)) + list(context.encode(None))
    return bytes(packets[0])


def _chroma_ratio(data: bytes) -> tuple[int, int]:
    """How many luma samples share one chroma sample, across and down (4:2:0 is (2, 2)).

    FFmpeg writes 4:2:2 and 4:4:4 with factors that ``get_sampling`` does not name (luma 2x2 and
    chroma 1x2, luma 1x2 and chroma 1x2), so the ratio is compared, not the factors.
    """
    with Image.open(io.BytesIO(data)) as image:
        (_, yh, yv, _), (_, ch, cv, _), _ = image.layer
    return yh // ch, yv // cv


def _sampling(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return JpegImagePlugin.get_sampling(image)


def _qtables(data: bytes) -> dict[int, list[int]]:
    with Image.open(io.BytesIO(data)) as image:
        return {index: list(table) for index, table in image.quantization.items()}


@pytest.fixture(scope="module")
def labeller() -> Labeller:
    return Labeller(producer=PRODUCER, key=Ed25519PrivateKey.generate())


SOURCES = [
    pytest.param(lambda: _pillow_jpeg(2), (2, 2), id="pillow-4:2:0"),
    pytest.param(lambda: _pillow_jpeg(1), (2, 1), id="pillow-4:2:2"),
    pytest.param(lambda: _pillow_jpeg(0), (1, 1), id="pillow-4:4:4"),
    pytest.param(lambda: _ffmpeg_jpeg("yuvj420p"), (2, 2), id="ffmpeg-4:2:0"),
    pytest.param(lambda: _ffmpeg_jpeg("yuvj422p"), (2, 1), id="ffmpeg-4:2:2"),
    pytest.param(lambda: _ffmpeg_jpeg("yuvj444p"), (1, 1), id="ffmpeg-4:4:4"),
]


@pytest.mark.parametrize(("make", "ratio"), SOURCES)
def test_jpeg_metadata_label_keeps_the_input_subsampling(labeller: Labeller, make, ratio) -> None:
    """Without a caption or watermark nothing is re-encoded: same sampling, same scan bytes."""
    data = make()
    assert ratio == _chroma_ratio(data), "the test image is not what it says"
    out = labeller.label(data, "image/jpeg", produce_id="p-1", c2pa=False).data
    assert out != data and jpeg.read_labels(out)
    assert ratio == _chroma_ratio(out)
    assert jpeg.content_digest(out) == jpeg.content_digest(data)


@pytest.mark.parametrize(("make", "ratio"), SOURCES)
@pytest.mark.parametrize("what", ["caption", "watermark", "both"])
def test_jpeg_reencode_is_444_with_the_input_tables(labeller: Labeller, make, ratio, what: str) -> None:
    """A caption and/or a watermark re-encode at 4:4:4 (as the caption's docs say), keeping the quality."""
    data = make()
    result = labeller.label(data, "image/jpeg", produce_id="p-1", c2pa=False,
                            explicit=what in ("caption", "both"), watermark=what in ("watermark", "both"))
    out = result.data
    assert 0 == _sampling(out), f"{SAMPLINGS.get(_sampling(out), _sampling(out))} after a re-encode"
    assert (1, 1) == _chroma_ratio(out)
    source_tables = _qtables(data)
    if len(source_tables) >= 2:  # Pillow's files: the output uses the very same tables.
        assert source_tables == _qtables(out)
    else:  # FFmpeg's single table: quality 95, finer than FFmpeg's default.
        assert sum(_qtables(out)[0]) < sum(source_tables[0])
    assert jpeg.read_labels(out)
    if what != "watermark":
        assert result.evidence["explicit"]["kind"] == "caption"
    if what != "caption":
        assert "alg" in result.evidence["watermark"]
        assert labeller.inspect(out, produce_id="p-1")["watermark"]["present"] is True


def test_jpeg_reencode_changes_the_untouched_pixels_little(labeller: Labeller) -> None:
    """4:4:4 with the input's tables: away from the caption, the pixels stay within JPEG rounding."""
    data = _pillow_jpeg(2, quality=90)
    out = labeller.label(data, "image/jpeg", produce_id="p-1", c2pa=False, explicit=True).data
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(out)) as b:
        before, after = np.asarray(a.convert("RGB")).astype(int), np.asarray(b.convert("RGB")).astype(int)
    quarter = (slice(0, 240), slice(0, 320))
    assert np.abs(before[quarter] - after[quarter]).mean() < 1.5
    # A larger file than the 4:2:0 input, but not a blow-up: the tables are the input's.
    assert len(out) < 2 * len(data)


def _png(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "PNG")
    return out.getvalue()


def _count_png_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = PngImagePlugin._save

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(PngImagePlugin, "_save", counting)
    monkeypatch.setitem(Image.SAVE, "PNG", counting)
    return calls


@pytest.mark.parametrize(("explicit", "watermark", "encodes"),
                         [(True, True, 1), (False, True, 1), (True, False, 1), (False, False, 0)])
def test_png_is_encoded_at_most_once(labeller: Labeller, monkeypatch: pytest.MonkeyPatch,
                                     explicit: bool, watermark: bool, encodes: int) -> None:
    data = _png(_photo())
    calls = _count_png_encodes(monkeypatch)
    result = labeller.label(data, "image/png", produce_id="p-1", c2pa=False, explicit=explicit, watermark=watermark)
    assert encodes == len(calls)
    assert png.read_labels(result.data)
    if watermark:
        monkeypatch.undo()
        assert labeller.inspect(result.data, produce_id="p-1")["watermark"]["present"] is True
    if explicit:
        assert result.evidence["explicit"]["kind"] == "caption"


def test_png_metadata_goes_in_without_re_encoding(labeller: Labeller) -> None:
    """The pixel chunks of the full label are those of the caption-and-watermark pass alone."""
    data = _png(_photo())
    pixels_only = labeller.label(data, "image/png", produce_id="p-1", c2pa=False, implicit=False,
                                 explicit=True, watermark=True).data
    full = labeller.label(data, "image/png", produce_id="p-1", c2pa=False, explicit=True, watermark=True).data
    assert png.content_digest(full) == png.content_digest(pixels_only)
    assert not png.read_labels(pixels_only) and png.read_labels(full)


def test_png_alpha_survives_the_watermark_and_caption(labeller: Labeller) -> None:
    rgba = np.dstack([_photo(), np.tile(np.linspace(0, 255, 640).astype(np.uint8), (480, 1))])
    data = _png(rgba, "RGBA")
    out = labeller.label(data, "image/png", produce_id="p-1", c2pa=False, explicit=True, watermark=True).data
    with Image.open(io.BytesIO(out)) as image:
        assert image.mode == "RGBA"
        alpha = np.asarray(image.getchannel("A"))
    assert np.array_equal(alpha[:240, :320], rgba[:240, :320, 3])


@pytest.mark.parametrize("quality", [20, 40])
def test_low_quality_jpeg_keeps_the_watermark(labeller: Labeller, quality: int) -> None:
    """A coarse input's tables are capped at quality 75's steps, which the watermark survives."""
    data = _pillow_jpeg(2, quality=quality)
    out = labeller.label(data, "image/jpeg", produce_id="p-1", c2pa=False, watermark=True).data
    assert 0 == _sampling(out)
    floor = io.BytesIO()
    Image.new("RGB", (8, 8)).save(floor, "JPEG", quality=75, subsampling=0)
    limits = _qtables(floor.getvalue())
    source, written = _qtables(data), _qtables(out)
    for index in (0, 1):
        assert written[index] == [min(a, b) for a, b in zip(source[index], limits[index], strict=True)]
        assert written[index] != source[index]
    assert labeller.inspect(out, produce_id="p-1")["watermark"]["present"] is True
