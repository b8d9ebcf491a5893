"""The image watermark on natural photos: crops, tone changes, rescales, screenshots and false positives.

The photos are scikit-image's sample data (``skimage.data``, bundled in its wheel: no download).
``benchmarks/watermark.py`` runs the same attacks as a matrix and the false-positive check over
1,000 unmarked images; here the false-positive check runs over 200 (:data:`FALSE_POSITIVE_IMAGES`).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_watermark import jpeg, psnr

from aiobligations.labels import watermark as wm

Image = pytest.importorskip("PIL.Image")
skimage_data = pytest.importorskip("skimage.data")

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PRODUCE_ID = "PID-2026-11-28-000042"
FALSE_POSITIVE_IMAGES = 200

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")
"""Photos the mark must survive every attack on (chelsea is the smallest, 451x300)."""

TEXTURES = ("grass", "gravel", "brick")
"""Close-ups of texture: used for false positives; the mark is weaker there (see docs/labels.md)."""


def photo(name: str) -> np.ndarray:
    """A scikit-image sample as an RGB ``uint8`` array (grey samples repeated over R, G and B)."""
    pixels = np.asarray(getattr(skimage_data, name)())
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3]).astype(np.uint8)


def crop(pixels: np.ndarray, top: float, right: float, bottom: float, left: float) -> np.ndarray:
    """Cut the given fractions of the height (top, bottom) and width (left, right) away."""
    height, width = pixels.shape[:2]
    return pixels[round(top * height) : height - round(bottom * height), round(left * width) : width - round(right * width)]


def resize(pixels: np.ndarray, scale: float, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    height, width = pixels.shape[:2]
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(pixels).resize(size, resample))


def gain(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Brightness: every channel times ``factor``, clipped (Pillow's ImageEnhance.Brightness)."""
    return np.clip(np.rint(pixels * factor), 0, 255).astype(np.uint8)


def contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Contrast around mid-grey: ``(p - 127.5) * factor + 127.5``, clipped."""
    return np.clip(np.rint((pixels - 127.5) * factor + 127.5), 0, 255).astype(np.uint8)


def screenshot(pixels: np.ndarray) -> np.ndarray:
    """What a screenshot does: shown at 90 % (a browser's zoom), captured as an RGBA PNG, read back."""
    shown = Image.fromarray(resize(pixels, 0.9, Image.Resampling.LANCZOS)).convert("RGBA")
    buf = io.BytesIO()
    shown.save(buf, "PNG")
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


ATTACKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda p: p,
    "jpeg_q75": jpeg,
    "crop_left_20+jpeg_q75": lambda p: jpeg(crop(p, 0, 0, 0, 0.2)),
    "crop_all_edges_10+jpeg_q75": lambda p: jpeg(crop(p, 0.1, 0.1, 0.1, 0.1)),
    "crop_asymmetric_20+jpeg_q75": lambda p: jpeg(crop(p, 0.2, 0.03, 0.07, 0.13)),
    "brightness+15": lambda p: gain(p, 1.15),
    "brightness-15": lambda p: gain(p, 0.85),
    "contrast+15": lambda p: contrast(p, 1.15),
    "contrast-15": lambda p: contrast(p, 0.85),
    "resize_50": lambda p: resize(p, 0.5),
    "resize_50_bicubic+jpeg_q75": lambda p: jpeg(resize(p, 0.5, Image.Resampling.BICUBIC)),
    "screenshot_rgba_png_90": screenshot,
}
"""Attack name -> what it does to the marked pixels. The crops remove 20 % of the width or height."""

CASES = [
    (name, attack)
    for name in PHOTOS
    for attack in sorted(ATTACKS)
    # Chelsea (451x300) halved is 226x150, under the smallest size that carries the payload after
    # a rescale (200 on the short side): its bicubic halving + JPEG passes only just (54 ID bits
    # right where 53 are needed, benchmarks/watermark.py), so only its bilinear halving is asserted.
    if not (name == "chelsea" and attack == "resize_50_bicubic+jpeg_q75")
]


def payload_accuracy(detection: wm.Detection) -> float:
    recovered = np.unpackbits(np.frombuffer(bytes.fromhex(detection.payload_bits), dtype=np.uint8))
    return float(np.mean(recovered == wm.payload_bits(PRODUCE_ID, KEY)))


def assert_one_verdict(detection: wm.Detection) -> None:
    """``present`` is exactly ``p < threshold``, and an ID match implies ``present``."""
    assert detection.present == (detection.false_positive_probability < detection.threshold)
    if detection.id_matches:
        assert detection.present


def unmarked_images(count: int, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` unmarked natural images: random crops, rescales, flips and turns of the samples.

    Every fifth image is the test suite's synthetic "natural-ish" picture instead.
    """
    from test_watermark import natural_image, textured_image

    rng = np.random.default_rng(seed)
    sources = {name: photo(name) for name in PHOTOS + TEXTURES + ("moon", "retina", "coins", "immunohistochemistry")}
    names = sorted(sources)
    for index in range(count):
        if index % 5 == 4:
            height, width = (int(v) for v in rng.integers(256, 640, 2))
            maker = natural_image if index % 2 else textured_image
            yield f"synthetic-{index}", maker(height, width, 1000 + index)
            continue
        name = names[int(rng.integers(len(names)))]
        source = sources[name]
        scale = float(rng.uniform(0.6, 1.4))
        scaled = resize(source, scale, Image.Resampling.BICUBIC)
        height, width = scaled.shape[:2]
        crop_h = int(rng.integers(min(256, height), min(640, height) + 1))
        crop_w = int(rng.integers(min(256, width), min(640, width) + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        image = scaled[top : top + crop_h, left : left + crop_w]
        if rng.random() < 0.5:
            image = image[:, ::-1]
        image = np.rot90(image, int(rng.integers(4)))
        yield f"{name}-{index}", np.ascontiguousarray(image)


@pytest.fixture(scope="module", name="photos")
def _photos() -> dict[str, np.ndarray]:
    return {name: photo(name) for name in PHOTOS}


@pytest.fixture(scope="module", name="marked")
def _marked(photos: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: wm.embed(pixels, PRODUCE_ID, KEY) for name, pixels in photos.items()}


class TestNaturalPhotos:
    @pytest.mark.parametrize("name", PHOTOS)
    def test_invisible_and_found_blind(self, name: str, photos: dict, marked: dict) -> None:
        """
        PSNR >= 38 dB on every photo; blind detection finds the mark at scale 1 with all sync bits.
        """
        detection = wm.detect(marked[name], KEY)

        assert psnr(photos[name], marked[name]) >= 38.0
        assert detection.present
        assert (1.0, 1.0, (0, 0)) == (detection.scale, detection.scale_y, detection.offset)
        assert detection.sync_bits_matched >= 31
        assert payload_accuracy(detection) >= 0.9

    @pytest.mark.parametrize(("name", "attack"), CASES)
    def test_survives(self, name: str, attack: str, marked: dict) -> None:
        """
        After each attack the mark is found blind, and the ProduceID matches when given.
        """
        attacked = ATTACKS[attack](marked[name])

        blind = wm.detect(attacked, KEY)
        checked = wm.detect(attacked, KEY, produce_id=PRODUCE_ID)

        assert blind.present, blind
        assert checked.present and checked.id_matches, checked
        assert payload_accuracy(checked) >= 0.8
        assert_one_verdict(blind)
        assert_one_verdict(checked)

    @pytest.mark.parametrize("name", ["astronaut", "camera"])
    def test_the_found_scale_and_offset_undo_the_attack(self, name: str, marked: dict) -> None:
        """
        A 50 % resize is found at scale 0.5; a crop of 37 rows and 50 columns at offset (-37, -50) mod 128.
        """
        resized = wm.detect(resize(marked[name], 0.5), KEY)
        cropped = wm.detect(marked[name][37:, 50:], KEY)

        assert resized.scale == pytest.approx(0.5, abs=0.005)
        assert resized.scale_y == pytest.approx(0.5, abs=0.005)
        assert ((-37) % wm.TILE, (-50) % wm.TILE) == cropped.offset

    @pytest.mark.parametrize("name", ["coffee", "hubble_deep_field"])
    def test_survives_a_change_of_aspect_ratio(self, name: str, marked: dict) -> None:
        """
        Resized to 90 % of its width and 85 % of its height, the mark is found at those two scales.
        """
        height, width = marked[name].shape[:2]
        size = (round(width * 0.9), round(height * 0.85))
        squeezed = np.asarray(Image.fromarray(marked[name]).resize(size, Image.Resampling.BILINEAR))

        detection = wm.detect(squeezed, KEY, produce_id=PRODUCE_ID)

        assert detection.present and detection.id_matches
        assert 0.9 == pytest.approx(detection.scale, abs=0.005)
        assert 0.85 == pytest.approx(detection.scale_y, abs=0.005)

    @pytest.mark.parametrize(("name", "degrees"), [("astronaut", 2.0), ("camera", -5.0), ("hubble_deep_field", 10.0)])
    def test_survives_a_rotation(self, name: str, degrees: float, marked: dict) -> None:
        """
        Turned by a few degrees (Pillow's rotate, corners filled black) and re-encoded, the mark is
        found at that angle.
        """
        turned = jpeg(np.asarray(Image.fromarray(marked[name]).rotate(degrees, Image.Resampling.BILINEAR)))

        detection = wm.detect(turned, KEY, produce_id=PRODUCE_ID)

        assert detection.present and detection.id_matches
        assert -degrees == pytest.approx(detection.angle, abs=0.2)

    @pytest.mark.parametrize(
        ("orientation", "turn"),
        [
            ("mirrored", lambda p: p[:, ::-1]),
            ("upside down", lambda p: p[::-1]),
            ("turned 90 degrees counter-clockwise", lambda p: np.rot90(p, 1)),
            ("turned 180 degrees", lambda p: np.rot90(p, 2)),
        ],
    )
    def test_survives_mirroring_and_quarter_turns(self, orientation: str, turn: Callable, marked: dict) -> None:
        """
        A mirrored, flipped or quarter-turned photo, re-encoded: found, and the orientation is named.
        """
        detection = wm.detect(jpeg(np.ascontiguousarray(turn(marked["rocket"]))), KEY, produce_id=PRODUCE_ID)

        assert detection.present and detection.id_matches
        assert orientation == detection.orientation

    def test_a_wrong_produce_id_does_not_match(self, marked: dict) -> None:
        """
        A marked photo read with another candidate ID: present (the sync bits), but no ID match.
        """
        detection = wm.detect(jpeg(marked["coffee"]), KEY, produce_id="PID-2026-11-28-000043")

        assert detection.present
        assert detection.id_matches is False
        assert detection.id_bits_matched is not None and detection.id_bits_matched < 48


class TestSizes:
    @pytest.mark.parametrize("side", [256, 1024])
    def test_square_sizes_carry_the_payload(self, side: int) -> None:
        """
        256x256 (the smallest size documented) and 1024x1024 (the demo's) carry the payload, also after JPEG.

        At 256x256 (four tiles) a few payload bits may be wrong; the ID check still matches, which
        is what the payload is for.
        """
        pixels = resize(photo("astronaut"), side / 512, Image.Resampling.LANCZOS)
        marked = wm.embed(pixels, PRODUCE_ID, KEY)

        for attacked in (marked, jpeg(marked)):
            detection = wm.detect(attacked, KEY, produce_id=PRODUCE_ID)
            assert detection.present and detection.id_matches
            assert payload_accuracy(detection) >= (0.9 if side == 256 else 0.98)
        assert psnr(pixels, marked) >= 38.0

    def test_too_small_is_refused(self) -> None:
        """
        Below one tile (128 pixels a side) embed refuses with a LabelError that names the limit.
        """
        from aiobligations.errors import LabelError

        with pytest.raises(LabelError, match="at least 128x128"):
            wm.embed(photo("astronaut")[:127], PRODUCE_ID, KEY)


class TestFalsePositives:
    def test_unmarked_natural_images_are_never_present(self) -> None:
        """
        200 unmarked images (crops, rescales, flips and turns of the samples, synthetic pictures): none
        is reported present, none matches the ID, and the verdict is consistent on each.
        """
        found = []
        smallest = 1.0
        for name, pixels in unmarked_images(FALSE_POSITIVE_IMAGES):
            detection = wm.detect(pixels, KEY, produce_id=PRODUCE_ID)
            assert_one_verdict(detection)
            smallest = min(smallest, detection.false_positive_probability)
            if detection.present or detection.id_matches:
                found.append(name)

        assert [] == found
        assert smallest > wm.DEFAULT_THRESHOLD

    @pytest.mark.parametrize("name", ["astronaut", "rocket"])
    def test_another_key_finds_nothing(self, name: str, marked: dict) -> None:
        """
        A marked photo, read with another provider's key (also after a resize), is not present.
        """
        for pixels in (marked[name], resize(marked[name], 0.5)):
            detection = wm.detect(pixels, OTHER_KEY, produce_id=PRODUCE_ID)
            assert not detection.present
            assert detection.id_matches is False

    def test_the_probability_accounts_for_the_alignments_tried(self, marked: dict) -> None:
        """
        The reported probability is CANDIDATES x the binomial tail (x 2 with an ID), not the bare tail.
        """
        blind = wm.detect(marked["astronaut"], OTHER_KEY)
        checked = wm.detect(marked["astronaut"], OTHER_KEY, produce_id=PRODUCE_ID)

        tail = wm.binomial_tail(blind.sync_bits_matched, wm.SYNC_BITS)
        assert min(1.0, wm.CANDIDATES * tail) <= blind.false_positive_probability
        assert checked.id_bits_matched is not None
        id_tail = wm.binomial_tail(checked.id_bits_matched, wm.PAYLOAD_BITS)
        assert min(1.0, 2 * wm.CANDIDATES * id_tail) == checked.id_false_positive_probability


class TestOneVerdict:
    @staticmethod
    def stripped(data: bytes, brightness: float) -> bytes:
        """The labelled file as a platform would pass it on: metadata gone, brighter, re-saved as PNG."""
        with Image.open(io.BytesIO(data)) as im:
            pixels = np.asarray(im.convert("RGB"))
        buf = io.BytesIO()
        Image.fromarray(gain(pixels, brightness)).save(buf, "PNG")
        return buf.getvalue()

    def test_inspect_and_the_cli_give_one_verdict_after_a_brightness_change(self, tmp_path: Path) -> None:
        """
        The earlier defect: after x1.1 brightness, inspect said id_matches true with present false
        and exited 1. Now the report's present, id_matches and labelled agree, and the CLI exits 0.
        """
        import json
        import subprocess
        import sys

        from aiobligations.keys import init_project

        config = init_project(tmp_path)
        png = io.BytesIO()
        Image.fromarray(photo("coffee")).save(png, "PNG")
        (tmp_path / "in.png").write_bytes(png.getvalue())
        run = [sys.executable, "-m", "aiobligations.cli"]
        labelled = subprocess.run([*run, "label", "in.png", "out.png"], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=120)
        assert 0 == labelled.returncode, labelled.stderr
        out = (tmp_path / "out.png").read_bytes()
        from aiobligations import Obligations

        with Obligations.from_file(config) as hub:
            produce_id = hub.labeller.inspect(out)["gb45438"][0]["fields"]["ProduceID"]
            for factor in (1.1, 0.9):
                (tmp_path / "edited.png").write_bytes(self.stripped(out, factor))
                report = hub.labeller.inspect((tmp_path / "edited.png").read_bytes(), produce_id=produce_id)
                inspected = subprocess.run([*run, "inspect", "edited.png", "--produce-id", produce_id],
                                           cwd=tmp_path, capture_output=True, text=True, timeout=120)

                mark = report["watermark"]
                assert [] == report["gb45438"] and report["c2pa"] is None
                assert (True, True, True) == (mark["present"], mark["id_matches"], report["labelled"])
                assert 0 == inspected.returncode, inspected.stderr
                cli_mark = json.loads(inspected.stdout)["watermark"]
                assert (True, True) == (cli_mark["present"], cli_mark["id_matches"])
