"""Image watermark: speed at 1080p, imperceptibility, robustness and false positives, as one JSON object.

Run it from the repository root::

    .venv/bin/python benchmarks/watermark.py

Needs the ``media`` extra (numpy, PyWavelets, Pillow). Images are synthetic "natural-ish" pictures
(smooth gradients, waves, soft shapes, mild noise) and one with strong fine texture, generated
with fixed seeds by the test suite's helpers, at 1920x1080.

What each figure measures
-------------------------

``embed_ms`` / ``detect_ms``
    Median of 5 runs (after one untimed warm-up) of :func:`aiobligations.labels.watermark.embed`
    and of a blind :func:`~aiobligations.labels.watermark.detect` with a ``produce_id``, at 1080p.
``psnr_db``
    Per image, the PSNR of the marked image against the original.
``bit_accuracy``
    Per image and attack, the fraction of the 64 payload bits recovered right after the vote;
    ``jpeg_q75`` is a Pillow JPEG re-encode at quality 75, ``resize_50_up`` a bilinear downscale to
    50 % and a bilinear upscale back to 1920x1080; ``present`` says whether blind detection found
    the mark (p < 1e-6).
``unmarked_p_values``
    The false-positive probability reported for unmarked images (several seeds) and for a marked
    image read with another key; all should be far above the threshold.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_watermark import jpeg, natural_image, psnr, resize_down_up, textured_image

from aiobligations.labels import watermark as wm

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PRODUCE_ID = "PID-2026-11-28-000042"
TARGETS = {"embed_ms": 400.0, "detect_ms": 250.0, "psnr_db": 38.0, "bit_accuracy": 0.95}


def median_ms(fn, runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 1)


def accuracy(pixels: np.ndarray) -> dict[str, object]:
    detection = wm.detect(pixels, KEY, produce_id=PRODUCE_ID)
    return {
        "bit_accuracy": round((detection.id_bits_matched or 0) / wm.PAYLOAD_BITS, 4),
        "sync_bits_matched": detection.sync_bits_matched,
        "present": detection.present,
        "p_value": detection.false_positive_probability,
    }


def main() -> None:
    images = {
        "natural-1": natural_image(1080, 1920, 1),
        "natural-2": natural_image(1080, 1920, 2),
        "textured": textured_image(1080, 1920, 3),
        "flat-grey": np.full((1080, 1920, 3), 128, np.uint8),
        "flat-white": np.full((1080, 1920, 3), 255, np.uint8),
    }
    img = images["natural-1"]
    embed_ms = median_ms(lambda: wm.embed(img, PRODUCE_ID, KEY))
    marked_img = wm.embed(img, PRODUCE_ID, KEY)
    detect_ms = median_ms(lambda: wm.detect(marked_img, KEY, produce_id=PRODUCE_ID))
    print(f"embed {embed_ms} ms, detect {detect_ms} ms", file=sys.stderr)

    per_image: dict[str, dict[str, object]] = {}
    for name, original in images.items():
        marked = wm.embed(original, PRODUCE_ID, KEY)
        per_image[name] = {
            "psnr_db": round(float(psnr(original, marked)), 2),
            "none": accuracy(marked),
            "jpeg_q75": accuracy(jpeg(marked)),
            "resize_50_up": accuracy(resize_down_up(marked)),
        }
        print(f"{name}: {per_image[name]['psnr_db']} dB", file=sys.stderr)

    unmarked = [
        wm.detect(natural_image(1080, 1920, seed), KEY).false_positive_probability
        for seed in range(10, 16)
    ]
    other_key = wm.detect(marked_img, OTHER_KEY).false_positive_probability

    worst_psnr = min(v["psnr_db"] for v in per_image.values())  # type: ignore[type-var]
    worst_jpeg = min(v["jpeg_q75"]["bit_accuracy"] for v in per_image.values())  # type: ignore[index]
    worst_resize = min(v["resize_50_up"]["bit_accuracy"] for v in per_image.values())  # type: ignore[index]
    result = {
        "size": "1920x1080",
        "strength": wm.DEFAULT_STRENGTH,
        "threshold": wm.DEFAULT_THRESHOLD,
        "embed_ms": embed_ms,
        "detect_ms": detect_ms,
        "images": per_image,
        "unmarked_p_values": [float(f"{p:.3g}") for p in unmarked],
        "other_key_p_value": float(f"{other_key:.3g}"),
        "targets": TARGETS,
        "pass": {
            "embed_ms": embed_ms <= TARGETS["embed_ms"],
            "detect_ms": detect_ms <= TARGETS["detect_ms"],
            "psnr_db": bool(worst_psnr >= TARGETS["psnr_db"]),
            "bit_accuracy_jpeg_q75": worst_jpeg >= TARGETS["bit_accuracy"],
            "bit_accuracy_resize_50_up": worst_resize >= TARGETS["bit_accuracy"],
            "no_false_positives": min(unmarked + [other_key]) > wm.DEFAULT_THRESHOLD,
        },
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
