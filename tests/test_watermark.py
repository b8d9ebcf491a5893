"""The invisible image watermark: imperceptibility, blind detection, ID check and robustness."""

from __future__ import annotations

import io

import numpy as np
import pytest

from aiobligations.errors import ConfigurationError, LabelError
from aiobligations.labels import watermark as wm

Image = pytest.importorskip("PIL.Image")

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PRODUCE_ID = "PID-2026-11-28-000042"


def natural_image(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth gradients and waves, soft-edged shapes and mild noise: a stand-in for a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * np.sin(
            2 * np.pi * (a * x / width + b * y / height) + phase
        )
        img[..., c] += 30 * (x / width - 0.5) * rng.uniform(-1, 1)
    for _ in range(25):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.02, 0.2) * min(height, width)
        colour = rng.uniform(20, 235, 3)
        if rng.random() < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r * r
        else:
            mask = (abs(x - cx) < r) & (abs(y - cy) < r * rng.uniform(0.3, 1))
        img[mask] = 0.7 * img[mask] + 0.3 * colour
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A natural-ish image with strong fine texture (noise and a 10-pixel stripe pattern)."""
    rng = np.random.default_rng(seed)
    base = natural_image(height, width, seed).astype(np.float32)
    stripes = 25 * np.sin(np.arange(width, dtype=np.float32) / 1.7)[None, :, None]
    textured: np.ndarray = np.clip(base + rng.normal(0, 20, base.shape) + stripes, 0, 255).astype(np.uint8)
    return textured


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float(10 * np.log10(255**2 / mse))


def jpeg(pixels: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def resize_down_up(pixels: np.ndarray) -> np.ndarray:
    """Bilinear downscale to 50 %, then bilinear upscale back to the original size."""
    height, width = pixels.shape[:2]
    small = Image.fromarray(pixels).resize((width // 2, height // 2), Image.BILINEAR)
    return np.asarray(small.resize((width, height), Image.BILINEAR))


def payload_accuracy(detection: wm.Detection) -> float:
    recovered = np.unpackbits(
        np.frombuffer(bytes.fromhex(detection.payload_bits), dtype=np.uint8)
    )
    return float(np.mean(recovered == wm.payload_bits(PRODUCE_ID, KEY)))


@pytest.fixture(scope="module", name="images")
def _images() -> dict[str, np.ndarray]:
    return {
        "natural-1": natural_image(540, 960, 1),
        "natural-2": natural_image(600, 800, 2),
        # Strong fine texture (a 10-pixel stripe of amplitude 25 plus noise) is the hardest case
        # for a rescale; at 540x960 it fails the resize test (24 of 32 sync bits), at 1080p it passes.
        "textured": textured_image(1080, 1920, 3),
    }


@pytest.fixture(scope="module", name="marked")
def _marked(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: wm.embed(img, PRODUCE_ID, KEY) for name, img in images.items()}


NAMES = ["natural-1", "natural-2", "textured"]


class TestPayload:
    def test_payload_is_keyed_hmac_of_the_id(self) -> None:
        """
        The payload is deterministic, 64 bits, and changes with the ID or the key.
        """
        bits = wm.payload_bits(PRODUCE_ID, KEY)

        assert (64,) == bits.shape
        assert np.array_equal(bits, wm.payload_bits(PRODUCE_ID, KEY))
        assert not np.array_equal(bits, wm.payload_bits(PRODUCE_ID + "x", KEY))
        assert not np.array_equal(bits, wm.payload_bits(PRODUCE_ID, OTHER_KEY))
        assert not np.array_equal(wm.sync_bits(KEY), wm.sync_bits(OTHER_KEY))

    def test_binomial_tail_is_exact(self) -> None:
        """
        P(X >= k) for Bin(32, 1/2) matches the values in the research notes.
        """
        assert 1.0 == wm.binomial_tail(0, 32)
        assert 2**-32 == wm.binomial_tail(32, 32)
        assert 1.3e-6 == pytest.approx(wm.binomial_tail(29, 32), rel=0.02)
        assert (
            wm.binomial_tail(30, 32) < wm.DEFAULT_THRESHOLD < wm.binomial_tail(29, 32)
        )

    def test_bad_arguments_are_rejected(self) -> None:
        """
        A str key, a short key, a non-RGB array and a tiny image raise with a clear error.
        """
        img = natural_image(400, 400, 9)
        with pytest.raises(TypeError, match="key must be bytes"):
            wm.embed(img, PRODUCE_ID, "secret" * 4)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="at least 16 bytes"):
            wm.embed(img, PRODUCE_ID, b"short")
        with pytest.raises(LabelError, match="uint8 array"):
            wm.embed(img[..., 0], PRODUCE_ID, KEY)
        with pytest.raises(LabelError, match="too small"):
            wm.detect(img[:100, :100], KEY)
        with pytest.raises(ConfigurationError, match="strength"):
            wm.embed(img, PRODUCE_ID, KEY, strength=0)

    def test_soft_binding_assertion_carries_the_payload(self) -> None:
        """
        The C2PA soft-binding value is the hex payload that detection recovers.
        """
        assertion = wm.soft_binding_assertion(PRODUCE_ID, KEY)

        assert "c2pa.soft-binding" == assertion["label"]
        expected = np.packbits(wm.payload_bits(PRODUCE_ID, KEY)).tobytes().hex()
        assert [{"scope": {}, "value": expected}] == assertion["data"]["blocks"]


class TestEmbedAndDetect:
    @pytest.mark.parametrize("name", NAMES)
    def test_invisible_and_blindly_detected(
        self, name: str, images: dict, marked: dict
    ) -> None:
        """
        PSNR >= 38 dB; blind detection finds the mark and recovers the exact payload.
        """
        detection = wm.detect(marked[name], KEY)

        assert psnr(images[name], marked[name]) >= 38.0
        assert images[name].shape == marked[name].shape
        assert detection.present
        assert detection.false_positive_probability < detection.threshold
        assert 32 == detection.sync_bits_matched
        assert (
            np.packbits(wm.payload_bits(PRODUCE_ID, KEY)).tobytes().hex()
            == detection.payload_bits
        )
        assert detection.id_matches is None

    def test_produce_id_is_checked(self, marked: dict) -> None:
        """
        With the right ProduceID all 64 bits match; with a wrong one the ID does not match.
        """
        right = wm.detect(marked["natural-1"], KEY, produce_id=PRODUCE_ID)
        wrong = wm.detect(marked["natural-1"], KEY, produce_id="PID-2026-11-28-000043")

        assert (64, True) == (right.id_bits_matched, right.id_matches)
        assert right.id_false_positive_probability is not None
        assert right.id_false_positive_probability < right.threshold
        assert wrong.present
        assert wrong.id_matches is False
        assert wrong.id_bits_matched is not None and wrong.id_bits_matched < 50

    def test_other_key_finds_nothing(self, marked: dict) -> None:
        """
        A verifier with another key sees no mark.
        """
        detection = wm.detect(marked["natural-1"], OTHER_KEY, produce_id=PRODUCE_ID)

        assert not detection.present
        assert detection.false_positive_probability > 1e-3
        assert detection.id_matches is False

    @pytest.mark.parametrize("seed", [11, 12, 13, 14, 15, 16])
    def test_unmarked_images_are_not_present(self, seed: int) -> None:
        """
        Unmarked images give a large p-value.
        """
        img = (
            natural_image(540, 960, seed)
            if seed % 2
            else textured_image(540, 960, seed)
        )

        detection = wm.detect(img, KEY, produce_id=PRODUCE_ID)

        assert not detection.present
        assert detection.false_positive_probability > 1e-3
        assert detection.id_matches is False


class TestRobustness:
    @pytest.mark.parametrize("name", NAMES)
    def test_survives_jpeg_q75(self, name: str, marked: dict) -> None:
        """
        After a JPEG quality 75 re-encode the payload is >= 95 % right and the mark is found.
        """
        detection = wm.detect(jpeg(marked[name]), KEY, produce_id=PRODUCE_ID)

        assert detection.present
        assert payload_accuracy(detection) >= 0.95
        assert detection.id_matches

    @pytest.mark.parametrize("name", NAMES)
    def test_survives_resize_down_and_back_up(self, name: str, marked: dict) -> None:
        """
        After a 50 % bilinear downscale and an upscale back, the payload is >= 95 % right.
        """
        detection = wm.detect(resize_down_up(marked[name]), KEY, produce_id=PRODUCE_ID)

        assert detection.present
        assert payload_accuracy(detection) >= 0.95
        assert detection.id_matches

    def test_survives_jpeg_after_resize(self, marked: dict) -> None:
        """
        Both attacks in a row still leave a detectable mark.
        """
        detection = wm.detect(
            jpeg(resize_down_up(marked["natural-2"])), KEY, produce_id=PRODUCE_ID
        )

        assert detection.present
        assert payload_accuracy(detection) >= 0.95


class TestFlatImages:
    @pytest.mark.parametrize("level", [0, 128, 250, 255])
    def test_flat_image_is_marked(self, level: int) -> None:
        """
        A flat image (black, grey, near-white, white) still carries the mark through JPEG and resize.

        Black and white blocks are pushed away from the clip limits, so the PSNR there is lower
        (about 43 dB) than on grey (about 47 dB); the change is a faint 16x16 block pattern.
        """
        img = np.full((512, 512, 3), level, np.uint8)

        marked = wm.embed(img, PRODUCE_ID, KEY)

        assert psnr(img, marked) >= 38.0
        for attacked in (marked, jpeg(marked), resize_down_up(marked)):
            detection = wm.detect(attacked, KEY, produce_id=PRODUCE_ID)
            assert detection.present
            assert payload_accuracy(detection) >= 0.95

    def test_unmarked_flat_image_is_not_present(self) -> None:
        """
        An unmarked flat image gives no detection.
        """
        detection = wm.detect(np.full((512, 512, 3), 128, np.uint8), KEY)

        assert not detection.present
        # No bit gets a vote, and a bit without a vote never counts as a match.
        assert 0 == detection.sync_bits_matched


class TestSmoothGradients:
    @staticmethod
    def gradient(height: int = 512, width: int = 512) -> np.ndarray:
        t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        top = np.array([230, 90, 50], np.float32)
        bottom = np.array([90, 170, 190], np.float32)
        row = np.rint(top + (bottom - top) * t)
        return np.broadcast_to(row, (height, width, 3)).astype(np.uint8).copy()

    def test_change_on_a_smooth_gradient_is_faint_and_grey(self) -> None:
        """
        On a clean gradient the change is grey, faint (the texture mask's floor) and has no
        low-frequency part: averaged over 32x32 patches it is under half a grey level.
        """
        img = self.gradient()

        marked = wm.embed(img, PRODUCE_ID, KEY)

        change = marked.astype(np.float64) - img
        assert np.array_equal(change[..., 0], change[..., 1])
        assert np.array_equal(change[..., 1], change[..., 2])
        patch_mean = change[..., 1].reshape(16, 32, 16, 32).mean(axis=(1, 3))
        assert float(np.sqrt(np.mean(patch_mean**2))) < 0.4
        assert float(np.abs(change).max()) <= 4
        assert psnr(img, marked) >= 45.0

    def test_smooth_gradient_mark_survives_jpeg_and_resize(self) -> None:
        """
        The finer lattice on smooth blocks still carries the mark through JPEG, a rescale and both.
        """
        marked = wm.embed(self.gradient(), PRODUCE_ID, KEY)

        for attacked in (marked, jpeg(marked), resize_down_up(marked), jpeg(resize_down_up(marked))):
            detection = wm.detect(attacked, KEY, produce_id=PRODUCE_ID)
            assert detection.present
            assert payload_accuracy(detection) >= 0.95
