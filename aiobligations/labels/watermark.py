"""An invisible, keyed, blind image watermark (periodic spread spectrum) that carries a ProduceID tag.

The mark lives in the luminance of decoded pixels (``uint8`` arrays of shape ``(H, W, 3)``, RGB);
the caller decodes and encodes files. It carries a fixed 96-bit code:

* 32 **sync** bits derived from the provider's key alone, which let :func:`detect` say "a mark
  made with this key is present" without knowing anything else, with a stated false-positive
  probability;
* 64 **payload** bits, ``HMAC-SHA256(key, produce_id)`` truncated (:func:`payload_bits`), which let
  the provider check a candidate ProduceID against the mark.

How it is embedded (additive spread spectrum, Cox et al. 1997, tiled periodically as in Kutter's
self-reference watermark, 1998):

1. A 128x128-pixel **tile** is cut into 32x32 cells of 4x4 pixels. A keyed permutation gives 12
   cells to each sync bit, 6 to each payload bit (the blind test needs 30 of 32 sync bits right,
   the ID test 53 of 64) and the other 256 to a **template** that carries no data. Every cell
   gets a keyed sign (+1/-1, zero mean); a code cell's sign is flipped when its bit is 1.
   The cell values are interpolated bilinearly between cell centres, so the pattern has no edges
   and its energy sits at mid frequencies (periods of about 8 pixels), which JPEG at quality 75
   and a 50 % downscale keep.
2. The tile is repeated over the whole image from its top-left corner and added to the luminance
   ``Y = 0.299 R + 0.587 G + 0.114 B``, scaled per pixel by a texture mask: ``strength`` x 0.5 on
   flat areas, rising with the RMS of ``Y``'s fine detail over 8x8 patches up to ``strength`` x 1.2
   on texture, which hides it (and keeps the PSNR above 38 dB). The change is added equally to R,
   G and B (grey; the chroma is untouched) and rounded.

How it is detected, blind (no original needed):

1. **Whiten**: subtract a local mean (5x5) from ``Y`` and keep the sign of the residual, so every
   pixel votes with the same weight (edges and heavy texture cannot outvote the rest). A gain or
   offset on the pixels (brightness, contrast) changes nothing but the clipped parts.
2. **Fold**: sum the residual over all 128x128 tiles. A crop only shifts the folded tile
   cyclically, so any crop that leaves about two tiles keeps the mark.
3. **Align**: the cyclic shift is the peak of the FFT cross-correlation of the folded tile with the
   template (Pereira and Pun's template idea, applied to a periodic mark). Periodic image texture
   that happens to fit the tile shows up in the fold as a few strong spectral lines; each is
   capped at three times the median magnitude first.
4. **Scale**: first at scale 1 (crops, re-encodes, tone changes). If that does not find the mark,
   the scale is read from the autocorrelation of the residual, whose peaks sit at multiples of the
   tile period (Kutter 1998): for periods of 51 to 205 pixels (scales 0.4 to 1.6), the three
   strongest peaks common to both axes, the two strongest of each axis (paired: the aspect ratio
   may have changed) and the three strongest up to 15 degrees off the axis (a rotation) give
   candidate geometries; for each, every pixel is folded into the tile position it came from in
   the marked image, and the three with the highest template peak have their bits read. Each
   folded tile is laid on the template in its eight orientations (an image mirrored, flipped or
   turned by quarter turns folds into the tile mirrored, flipped or transposed), keeping the best.
5. **Decode**: each code bit is the sign of the correlation of its cells with their keyed signs;
   a bit with no vote at all (a flat image) never counts as a match.

False positives (the multiple-comparison problem): the alignment (shift, scale, rotation and
orientation) is chosen with the residual and the template alone, never with the code bits, and
every cell's keyed sign is independent of the image, so at a chosen alignment each code bit agrees
with the expected one with probability exactly 1/2 on an image that does not carry this key's
mark. At most :data:`CANDIDATES` (4) alignments are
tested, so the reported probability is ``4 x P(X >= matched)``, ``X ~ Bin(32, 1/2)``, minimised
over the alignments tested (a Bonferroni bound). With a candidate ProduceID two tests are made (the
sync bits, the 64 ID bits), so both probabilities are doubled. ``present`` is
``false_positive_probability < threshold``, where ``false_positive_probability`` is the smaller of
the two, so an ID match (``id_matches``) always implies ``present``: one verdict.

It survives (measured on scikit-image's sample photos, ``benchmarks/watermark.py``): crops of up to
20 % from any edges combined with JPEG at quality 75; brightness and contrast changes of 15 %; a
rescale between 0.5 and 1.33 that is not undone (with or without JPEG); a screenshot-like re-save
(RGBA PNG, a slightly different size); a change of aspect ratio; a rotation of up to 15 degrees;
mirroring and quarter turns. It does **not** survive other rotations, perspective or shearing, nor
crops or rescales that leave less than about 200 pixels on the short side; the smallest image that carries the payload is 256x256 (:data:`MIN_SIDE` is the hard
limit, 128). Close-ups of irregular texture (grass, gravel) hide the mark from the detector as
well as from the eye: found unattacked, often lost after JPEG, crops or a halving.

In C2PA the mark is recorded as a ``c2pa.soft-binding`` assertion plus a
``c2pa.watermarked.bound`` action (:func:`soft_binding_assertion`); embed first, then sign, so
the hard-binding hash covers the marked pixels.

.. versionadded:: 0.1.0
.. versionchanged:: 0.2.0
   Periodic spread spectrum (``com.aiobligations.periodic-ss.2``) instead of DWT-SVD with QIM.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigurationError, LabelError

__all__ = [
    "CANDIDATES",
    "CODE_BITS",
    "DEFAULT_STRENGTH",
    "DEFAULT_THRESHOLD",
    "MIN_SIDE",
    "PAYLOAD_BITS",
    "SOFT_BINDING_ALG",
    "SYNC_BITS",
    "TILE",
    "Detection",
    "binomial_tail",
    "detect",
    "embed",
    "payload_bits",
    "soft_binding_assertion",
    "sync_bits",
]

SYNC_BITS = 32
"""Bits derived from the key alone; blind detection counts how many of them match."""

PAYLOAD_BITS = 64
"""Bits derived from the key and the ProduceID."""

CODE_BITS = SYNC_BITS + PAYLOAD_BITS
"""Length of the embedded code."""

DEFAULT_STRENGTH = 2.5
"""Amplitude of the pattern in grey levels (RMS) before the texture mask (x 0.5 on flat areas, up to x 1.2 on texture); about 40 dB PSNR on photos."""

DEFAULT_THRESHOLD = 1e-6
"""False-positive probability under which a mark (or an ID) is reported as found."""

SOFT_BINDING_ALG = "com.aiobligations.periodic-ss.2"
"""The ``alg`` written in ``c2pa.soft-binding``. Not (yet) on the C2PA soft-binding algorithm list."""

TILE = 128
"""Period of the mark in pixels (both directions), at the size it was embedded."""

MIN_SIDE = 128
"""Smallest width and height :func:`embed` and :func:`detect` accept (one tile); 256 is the smallest that carries the payload reliably."""

CANDIDATES = 4
"""Most alignments (shift, scale, rotation, orientation) whose bits :func:`detect` tests; the false-positive bound multiplies by it."""

_CELL = 4
_CELLS = TILE // _CELL
_PER_SYNC_BIT = 12  # the blind test needs 30 of 32 sync bits, the ID test 53 of 64: more cells per sync bit
_PER_PAYLOAD_BIT = 6
_LAYOUT_DOMAIN = b"aiobligations.watermark.v2."
_DOMAIN = b"aiobligations.watermark.v1."  # the code bits (and so the soft-binding value) are unchanged
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_MASK_FLOOR = 0.5
_MASK_TEXTURE = 10.0  # the mask rises by 1 per 10 grey levels of RMS fine detail
_MASK_TOP = 1.2  # so heavy texture stays above 38 dB PSNR at the default strength
_ACF_PEAKS = CANDIDATES - 1
_SCALES = (0.4, 1.6)
_MAX_STRENGTH = 50.0
_LINE_CAP = 3.0
_SEARCH_SIDE = 2048
_MAX_ANGLE = 15.0  # degrees either way that the rotation search covers
_MIN_ANGLE = 0.25  # a smaller rotation is found without turning back
_ROTATIONS = 3  # rotated candidates from the autocorrelation
_ROTATED_SIDE = 1024  # a rotated candidate is folded from the central 1024x1024 pixels


_Decoded = tuple[tuple[int, int], float, np.ndarray, float, str]
"""What :func:`_decode` finds in a folded tile: the offset, the template's peak score, the code bits' votes, their noise and the orientation."""

_ORIENTATIONS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("as marked", lambda tile: tile),
    ("mirrored", lambda tile: tile[:, ::-1]),
    ("upside down", lambda tile: tile[::-1, :]),
    ("turned 180 degrees", lambda tile: tile[::-1, ::-1]),
    ("transposed", lambda tile: tile.T),
    ("turned 90 degrees counter-clockwise", lambda tile: tile.T[:, ::-1]),
    ("turned 90 degrees clockwise", lambda tile: tile.T[::-1, :]),
    ("transposed the other way", lambda tile: tile.T[::-1, ::-1]),
)
"""The eight ways to lay the folded tile on the template (the image mirrored, flipped or turned by quarter turns)."""


@dataclass(frozen=True)
class Detection:
    """
    What :func:`detect` found.

    Attributes:
        present: ``True`` when ``false_positive_probability < threshold``; always true when
            ``id_matches`` is.
        sync_bits_matched: Sync bits recovered equal to the key's sync pattern, at the alignment
            reported.
        sync_bits: Number of sync bits (32).
        payload_bits: The recovered 64 payload bits as 16 hex digits (meaningful only if present).
        false_positive_probability: Bound on the probability that an image without this key's mark
            is reported present: ``CANDIDATES x P(X >= sync_bits_matched)``, ``X ~ Bin(32, 1/2)``
            (doubled with a ``produce_id``, and the smaller of that and
            ``id_false_positive_probability``), capped at 1.
        threshold: The probability under which a mark is reported present.
        margin: Mean absolute soft vote over the code bits, in units of the votes' noise: about
            0.8 on an unmarked image, 2 or more for a clear mark. Diagnostic only.
        id_bits_matched: When a ``produce_id`` was given, payload bits equal to
            ``payload_bits(produce_id, key)``; otherwise ``None``.
        id_false_positive_probability: ``2 x CANDIDATES x P(X >= id_bits_matched)``,
            ``X ~ Bin(64, 1/2)``, capped at 1; ``None`` without a ``produce_id``.
        id_matches: ``id_false_positive_probability < threshold`` (at least 53 of 64 bits with
            the default threshold); ``None`` without a ``produce_id``.
        scale: The scale the mark was found at (received size / embedded size), horizontally.
        scale_y: The same, vertically.
        offset: Where the tile's origin lies in the received image (after undoing the scale),
            ``(row, column)`` modulo the tile.
        template_score: Height of the template's correlation peak in standard deviations of the
            correlation (about 4 on an unmarked image, 8 or more on a marked one). Diagnostic only.
        angle: The rotation the mark was found at, in degrees (positive: turned clockwise as
            seen, Pillow's ``rotate`` with a negative angle); 0 when it was not rotated.
        orientation: How the image lies compared with the marked one: ``"as marked"``,
            ``"mirrored"``, ``"upside down"``, ``"turned 180 degrees"``, ``"turned 90 degrees
            clockwise"`` (or counter-clockwise), ``"transposed"`` or ``"transposed the other way"``.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       ``scale``, ``scale_y``, ``offset``, ``template_score``, ``angle`` and ``orientation``;
       the probabilities are corrected for the alignments tried.
    """

    present: bool
    sync_bits_matched: int
    sync_bits: int
    payload_bits: str
    false_positive_probability: float
    threshold: float
    margin: float
    id_bits_matched: int | None = None
    id_false_positive_probability: float | None = None
    id_matches: bool | None = None
    scale: float = 1.0
    scale_y: float = 1.0
    offset: tuple[int, int] = (0, 0)
    template_score: float = 0.0
    angle: float = 0.0
    orientation: str = "as marked"


def binomial_tail(matched: int, total: int) -> float:
    """
    Return ``P(X >= matched)`` for ``X ~ Bin(total, 1/2)``, computed exactly.

    Args:
        matched: Number of matching bits.
        total: Number of bits compared.

    Returns:
        The probability that random bits match at least ``matched`` of ``total``.

    .. versionadded:: 0.1.0
    """
    if not 0 <= matched <= total:
        raise ConfigurationError(f"matched must be in [0, {total}], got {matched!r}.")
    tail: float = sum(math.comb(total, k) for k in range(matched, total + 1)) / 2**total
    return tail


def payload_bits(produce_id: str, key: bytes, bits: int = PAYLOAD_BITS) -> np.ndarray:
    """
    Return the keyed payload for ``produce_id``: ``HMAC-SHA256(key, produce_id)``, first ``bits`` bits.

    Args:
        produce_id: The ProduceID of the content (GB 45438-2025 implicit label).
        key: The provider's watermark key (bytes, at least 16).
        bits: How many bits to return (1 to 256).

    Returns:
        A ``uint8`` array of 0s and 1s.

    Raises:
        TypeError: ``key`` is not bytes or ``produce_id`` is not a string.

    .. versionadded:: 0.1.0
    """
    _check_key(key)
    if not isinstance(produce_id, str):
        raise TypeError(f"produce_id must be a str, got {type(produce_id).__name__}.")
    if not 1 <= bits <= 256:
        raise ConfigurationError(f"bits must be between 1 and 256, got {bits!r}.")
    digest = hmac.new(
        key, _DOMAIN + b"payload." + produce_id.encode("utf-8"), hashlib.sha256
    ).digest()
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:bits].copy()


def sync_bits(key: bytes) -> np.ndarray:
    """
    Return the 32 sync bits for ``key`` (derived from the key alone).

    .. versionadded:: 0.1.0
    """
    _check_key(key)
    digest = hmac.new(key, _DOMAIN + b"sync", hashlib.sha256).digest()
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8))[:SYNC_BITS].copy()


def embed(
    pixels: np.ndarray,
    produce_id: str,
    key: bytes,
    *,
    strength: float = DEFAULT_STRENGTH,
) -> np.ndarray:
    """
    Return a copy of ``pixels`` carrying the watermark for ``produce_id`` under ``key``.

    Args:
        pixels: Decoded image, ``uint8``, shape ``(H, W, 3)`` RGB, at least :data:`MIN_SIDE`
            pixels on each side (256 or more to carry the payload reliably).
        produce_id: The ProduceID to carry (as ``payload_bits(produce_id, key)``).
        key: The provider's watermark key (bytes, at least 16).
        strength: RMS amplitude of the pattern in grey levels before the texture mask (which
            scales it by 0.5 on flat areas and up to 1.2 on texture); larger is more robust
            and more visible. At the default the PSNR is about 39 to 45 dB on photos.

    Returns:
        A new ``uint8`` array of the same shape.

    Raises:
        LabelError: ``pixels`` is not an ``(H, W, 3)`` ``uint8`` array or is too small.
        ConfigurationError: ``strength`` is not in (0, 50].
        TypeError: ``key`` is not bytes or ``produce_id`` is not a string.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Periodic spread spectrum; ``strength`` is an amplitude in grey levels.
    """
    if not (isinstance(strength, (int, float)) and 0 < strength <= _MAX_STRENGTH):
        raise ConfigurationError(f"strength must be a number in (0, {_MAX_STRENGTH:g}], got {strength!r}.")
    code = np.concatenate([sync_bits(key), payload_bits(produce_id, key)])
    luma = _luma(pixels)
    height, width = luma.shape
    tile = _pattern(key, code)
    tiled = np.tile(tile, (-(-height // TILE), -(-width // TILE)))[:height, :width]
    change = (strength * _mask(luma)) * tiled
    out = pixels.astype(np.float32)
    out += change[:, :, None]
    return np.clip(np.rint(out, out=out), 0, 255, out=out).astype(np.uint8)


def detect(
    pixels: np.ndarray,
    key: bytes,
    *,
    produce_id: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> Detection:
    """
    Look for the watermark of ``key`` in ``pixels``, blind; optionally check a ProduceID.

    The image may have been cropped, re-encoded, brightened, had its contrast changed, been
    rescaled (0.4 to 1.6) or turned (up to 15 degrees) since it was marked; see the module
    documentation for what survives. Detection first tries scale 1, then the scales and
    rotations read from the residual's autocorrelation
    (ranked by the template alone); at most :data:`CANDIDATES` alignments have their bits
    tested, and the probabilities reported account for all of them.

    Args:
        pixels: Decoded image, ``uint8``, shape ``(H, W, 3)`` RGB, at least :data:`MIN_SIDE`
            pixels on each side.
        key: The provider's watermark key.
        produce_id: Optional candidate ProduceID; when given, the recovered payload is checked
            against ``payload_bits(produce_id, key)``.
        threshold: False-positive probability under which the mark (and the ID) is reported.

    Returns:
        A :class:`Detection`; ``present`` and ``id_matches`` never contradict each other (an ID
        match implies ``present``).

    Raises:
        LabelError: ``pixels`` is not an ``(H, W, 3)`` ``uint8`` array or is too small.
        ConfigurationError: ``threshold`` is not a float in (0, 1).
        TypeError: ``key`` is not bytes or ``produce_id`` is not a string.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Finds the mark after crops, tone changes, rescales and rotations; the ``strength`` argument is gone
       (detection does not depend on it).
    """
    if not (isinstance(threshold, float) and 0 < threshold < 1):
        raise ConfigurationError(f"threshold must be a float in (0, 1), got {threshold!r}.")
    expected_sync = sync_bits(key)
    expected_id = None if produce_id is None else payload_bits(produce_id, key)
    # Without a candidate ID the payload half is compared with zeros and ignored.
    no_id = np.zeros(PAYLOAD_BITS, np.uint8)
    expected = np.concatenate([expected_sync, no_id if expected_id is None else expected_id])
    owner, signs = _layout(key)
    template_f = np.conj(np.fft.rfft2(_smooth(np.where(owner < 0, signs, 0.0))))
    residual = _whiten(_luma(pixels))
    # A large image is searched for its scale on its centre: 2048 pixels a side hold plenty of tiles.
    search = _centre(residual, _SEARCH_SIDE)
    tests = 1 if expected_id is None else 2

    def align(scale_y: float, scale_x: float, angle: float) -> tuple[float, float, float, _Decoded]:
        if angle:
            folded = _fold_rotated(_centre(search, _ROTATED_SIDE), scale_x, angle)
        elif (scale_y, scale_x) == (1.0, 1.0):
            folded = _fold(residual)
        else:
            folded = _fold_scaled(search, scale_y, scale_x)
        return scale_y, scale_x, angle, _decode(folded, template_f, owner, signs)

    def at(scale_y: float, scale_x: float, angle: float, decoded: _Decoded) -> Detection:
        offset, score, votes, noise, orientation = decoded
        recovered = (votes < 0).astype(np.uint8)
        # A bit with no vote at all (a flat image) is an erasure: it never counts as a match.
        agrees = (recovered == expected) & (votes != 0)
        matched = int(np.sum(agrees[:SYNC_BITS]))
        p_value = min(1.0, tests * CANDIDATES * binomial_tail(matched, SYNC_BITS))
        id_matched = id_p = None
        if expected_id is not None:
            id_matched = int(np.sum(agrees[SYNC_BITS:]))
            id_p = min(1.0, tests * CANDIDATES * binomial_tail(id_matched, PAYLOAD_BITS))
            p_value = min(p_value, id_p)
        return Detection(
            present=p_value < threshold,
            sync_bits_matched=matched,
            sync_bits=SYNC_BITS,
            payload_bits=np.packbits(recovered[SYNC_BITS:]).tobytes().hex(),
            false_positive_probability=p_value,
            threshold=threshold,
            margin=round(float(np.mean(np.abs(votes))) / noise, 3),
            id_bits_matched=id_matched,
            id_false_positive_probability=id_p,
            id_matches=None if id_p is None else id_p < threshold,
            scale=round(scale_x, 4),
            scale_y=round(scale_y, 4),
            offset=offset,
            template_score=round(score, 2),
            angle=round(angle, 2),
            orientation=orientation,
        )

    best = at(*align(1.0, 1.0, 0.0))
    if best.present:
        return best
    # Not at scale 1: the image may have been rescaled. Candidate scales come from the
    # autocorrelation; the three whose template peak is highest have their bits tested. Both
    # choices look at the residual and the template only, never at the code bits.
    aligned = [align(*geometry) for geometry in _acf_geometries(search)]
    aligned.sort(key=lambda candidate: -candidate[3][1])
    for candidate in aligned[:_ACF_PEAKS]:
        found = at(*candidate)
        if (found.false_positive_probability, -found.template_score) < (
            best.false_positive_probability, -best.template_score
        ):
            best = found
        if best.present:
            break
    return best


def soft_binding_assertion(produce_id: str, key: bytes) -> dict[str, Any]:
    """
    Return the C2PA ``c2pa.soft-binding`` assertion describing the mark for ``produce_id``.

    Add it to the manifest's ``assertions`` together with a ``c2pa.watermarked.bound`` action in
    ``c2pa.actions`` (c2pa-rs rejects the action without the assertion). The value is the 64
    payload bits in hex, which is what :attr:`Detection.payload_bits` recovers.

    .. versionadded:: 0.1.0
    """
    value = np.packbits(payload_bits(produce_id, key)).tobytes().hex()
    return {
        "label": "c2pa.soft-binding",
        "data": {
            "alg": SOFT_BINDING_ALG,
            "blocks": [{"scope": {}, "value": value}],
            "pad": [],
        },
    }


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"key must be bytes, got {type(key).__name__}.")
    if len(key) < 16:
        raise ConfigurationError(f"key must be at least 16 bytes, got {len(key)}.")




def _luma(pixels: np.ndarray) -> np.ndarray:
    """The luminance of an RGB ``uint8`` image as float32, after checking its type and size."""
    if (
        not isinstance(pixels, np.ndarray)
        or pixels.dtype != np.uint8
        or pixels.ndim != 3
        or pixels.shape[2] != 3
    ):
        shape = getattr(pixels, "shape", None)
        dtype = getattr(pixels, "dtype", type(pixels).__name__)
        raise LabelError(f"pixels must be a uint8 array of shape (H, W, 3), got {dtype} {shape}.")
    if min(pixels.shape[:2]) < MIN_SIDE:
        raise LabelError(
            f"image too small to carry a watermark: {pixels.shape[1]}x{pixels.shape[0]}, "
            f"need at least {MIN_SIDE}x{MIN_SIDE} (256x256 to carry the payload reliably)."
        )
    return np.asarray(pixels @ _LUMA, dtype=np.float32)


def _box(values: np.ndarray, radius: int) -> np.ndarray:
    """The mean over a ``(2 radius + 1)`` square window at every pixel (edges replicated), float32."""
    size = 2 * radius + 1
    padded = np.pad(values.astype(np.float32, copy=False), radius, mode="edge")
    height, width = values.shape
    rows = padded[:height].copy()
    for shift in range(1, size):
        rows += padded[shift : shift + height]
    out = rows[:, :width].copy()
    for shift in range(1, size):
        out += rows[:, shift : shift + width]
    out *= 1.0 / (size * size)
    return out


def _local_rms(values: np.ndarray, block: int) -> np.ndarray:
    """The RMS of ``values`` over ``block`` x ``block`` patches, interpolated back to every pixel."""
    from PIL import Image

    height, width = values.shape
    rows, cols = -(-height // block), -(-width // block)
    padded = np.pad(values, ((0, rows * block - height), (0, cols * block - width)), mode="reflect")
    means = (padded * padded).reshape(rows, block, cols, block).mean(axis=(1, 3), dtype=np.float32)
    field = Image.fromarray(np.sqrt(means, dtype=np.float32), "F")
    # Upsample the patch grid (patch centres) to the pixel grid; the edges reach half a patch out.
    up = field.resize((cols * block, rows * block), Image.Resampling.BILINEAR)
    return np.asarray(up, dtype=np.float32)[:height, :width]


def _mask(luma: np.ndarray) -> np.ndarray:
    """Per pixel, the factor on the pattern: 0.5 on flat areas, rising with texture up to 1.2."""
    activity = _local_rms(luma - _box(luma, 2), 8)
    return _MASK_FLOOR + np.minimum(activity / _MASK_TEXTURE, _MASK_TOP - _MASK_FLOOR)


def _whiten(luma: np.ndarray) -> np.ndarray:
    """The detector's view: the sign of the luminance minus its local mean (5x5).

    Keeping only the sign makes every pixel vote with the same weight, so edges and heavy texture
    (large residuals that the mark does not control) cannot outvote the rest; a gain or offset on
    the pixels changes nothing.
    """
    detail = luma - _box(luma, 2)
    # Rounding noise in the mean of a flat patch is no vote.
    detail[np.abs(detail) < 1e-3] = 0.0
    signs: np.ndarray = np.sign(detail)
    return signs


def _layout(key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Keyed owner of every cell (a code bit, or -1 for the template) and keyed cell signs."""
    seed = hmac.new(key, _LAYOUT_DOMAIN + b"layout", hashlib.sha256).digest()
    rng = np.random.default_rng(np.frombuffer(seed, dtype=np.uint64))
    order = rng.permutation(_CELLS * _CELLS)
    owner = np.full(_CELLS * _CELLS, -1)
    sync = np.arange(SYNC_BITS * _PER_SYNC_BIT) % SYNC_BITS
    payload = SYNC_BITS + np.arange(PAYLOAD_BITS * _PER_PAYLOAD_BIT) % PAYLOAD_BITS
    owner[order[: len(sync) + len(payload)]] = np.concatenate([sync, payload])
    signs = rng.integers(0, 2, _CELLS * _CELLS) * 2.0 - 1.0
    return owner.reshape(_CELLS, _CELLS), signs.reshape(_CELLS, _CELLS)


def _kernel() -> np.ndarray:
    """The spectrum of the bilinear hat that spreads a cell's value between cell centres."""
    hat = np.array([1, 2, 3, 4, 3, 2, 1], np.float64) / _CELL
    kernel = np.zeros((TILE, TILE))
    index = np.arange(-3, 4) % TILE
    kernel[np.ix_(index, index)] = np.outer(hat, hat)
    return np.fft.rfft2(kernel)


_KERNEL = _kernel()


def _smooth(cells: np.ndarray) -> np.ndarray:
    """Cell values (32x32) as a smooth, periodic 128x128 pattern (bilinear between cell centres)."""
    grid = np.zeros((TILE, TILE))
    grid[_CELL // 2 :: _CELL, _CELL // 2 :: _CELL] = cells
    return np.fft.irfft2(np.fft.rfft2(grid) * _KERNEL, s=(TILE, TILE))


def _pattern(key: bytes, code: np.ndarray) -> np.ndarray:
    """The tile for ``code`` under ``key``: template and code cells, unit RMS, float32."""
    owner, signs = _layout(key)
    flips = np.where(owner >= 0, 1.0 - 2.0 * code[np.maximum(owner, 0)], 1.0)
    tile = _smooth(signs * flips)
    unit: np.ndarray = (tile / np.sqrt(np.mean(tile**2))).astype(np.float32)
    return unit


def _fold(residual: np.ndarray) -> np.ndarray:
    """The sum of ``residual`` over all tiles (the last row and column of tiles padded with zeros)."""
    height, width = residual.shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    padded = np.zeros((rows * TILE, cols * TILE), np.float64)
    padded[:height, :width] = residual
    folded: np.ndarray = padded.reshape(rows, TILE, cols, TILE).sum(axis=(0, 2))
    return folded


def _decode(folded: np.ndarray, template_f: np.ndarray, owner: np.ndarray, signs: np.ndarray) -> _Decoded:
    """Align the folded tile with the template; return the offset, peak score, bit votes, vote noise and orientation.

    A mirrored, flipped or quarter-turned image folds into the same tile mirrored, flipped or
    transposed (up to a shift), so the eight orientations of the tile are tried and the one with
    the highest template peak is kept: a choice that looks at the template alone.
    """
    best: tuple[float, int, int, np.ndarray, str] | None = None
    for name, orient in _ORIENTATIONS:
        spectrum = np.fft.rfft2(orient(folded))
        # Periodic image texture (stripes, bricks) that happens to fit the tile adds up in the fold
        # as a few strong spectral lines; the mark is spread over the whole spectrum. Cap every
        # line at a few times the median magnitude.
        magnitude = np.abs(spectrum)
        cap = _LINE_CAP * float(np.median(magnitude))
        if cap > 0:
            spectrum *= np.minimum(1.0, cap / np.maximum(magnitude, 1e-12))
        correlation = np.fft.irfft2(spectrum * template_f, s=(TILE, TILE))
        peak = int(np.argmax(correlation))
        spread = float(correlation.std())
        score = float((correlation.flat[peak] - correlation.mean()) / spread) if spread > 0 else 0.0
        if best is None or score > best[0]:
            best = (score, *divmod(peak, TILE), spectrum, name)
    score, row, col, spectrum, orientation = best  # type: ignore[misc]
    # The response of every cell: the folded tile correlated with the cell's hat, at the cell centres.
    response = np.fft.irfft2(spectrum * np.conj(_KERNEL), s=(TILE, TILE))
    response = np.roll(response, (-int(row), -int(col)), axis=(0, 1))
    cells = response[_CELL // 2 :: _CELL, _CELL // 2 :: _CELL] * signs
    code = owner >= 0
    votes = np.bincount(owner[code], weights=cells[code], minlength=CODE_BITS)
    noise = float(np.std(cells)) * math.sqrt(np.mean(np.bincount(owner[code]))) or 1.0
    return (int(row), int(col)), score, votes, noise, orientation


def _centre(values: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` pixels of ``values`` (all of it where it is smaller)."""
    height, width = values.shape
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return values[top : top + side, left : left + side]


def _fold_rotated(residual: np.ndarray, scale: float, degrees: float) -> np.ndarray:
    """The fold of ``residual`` as if it had been rotated back by ``degrees`` and resized by ``1 / scale``."""
    height, width = residual.shape
    turn = math.radians(degrees)
    cos, sin = math.cos(turn) / scale, math.sin(turn) / scale
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    across = np.floor(x * cos + y * sin).astype(np.int64) % TILE
    down = np.floor(y * cos - x * sin).astype(np.int64) % TILE
    index = (down * TILE + across).ravel()
    return np.bincount(index, weights=residual.ravel(), minlength=TILE * TILE).reshape(TILE, TILE)


def _fold_scaled(residual: np.ndarray, scale_y: float, scale_x: float) -> np.ndarray:
    """The fold of ``residual`` as if it had been resized by ``1 / scale`` first.

    Every pixel is added to the tile position of the marked image it came from (nearest
    position); no resampled copy of the image is made. The hat the cells are read with
    interpolates between the positions a downscaled image leaves empty.
    """
    folded = residual.astype(np.float64, copy=False)
    for axis, scale in ((1, scale_x), (0, scale_y)):
        size = folded.shape[axis]
        positions = np.floor((np.arange(size) + 0.5) / scale).astype(np.int64) % TILE
        order = np.argsort(positions, kind="stable")
        ordered = positions[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        sums = np.add.reduceat(np.take(folded, order, axis=axis), starts, axis=axis)
        shape = list(folded.shape)
        shape[axis] = TILE
        out = np.zeros(shape)
        index: list[slice | np.ndarray] = [slice(None), slice(None)]
        index[axis] = ordered[starts]
        out[tuple(index)] = sums
        folded = out
    return folded


def _acf_geometries(residual: np.ndarray) -> list[tuple[float, float, float]]:
    """Candidate geometries ``(scale_y, scale_x, angle)``, from the autocorrelation of the residual.

    A periodic mark puts peaks in the autocorrelation at multiples of its period along both of its
    axes; the image's own correlation decays with the lag and is removed as a moving average.
    """
    height, width = residual.shape
    crop_h, crop_w = min(height, 1024), min(width, 1024)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = residual[top : top + crop_h, left : left + crop_w].astype(np.float64)
    crop -= crop.mean()
    acf = np.fft.irfft2(np.abs(np.fft.rfft2(crop)) ** 2, s=crop.shape)
    if acf[0, 0] <= 0:
        return []
    acf /= acf[0, 0]
    low = int(TILE * _SCALES[0])
    high = min(int(TILE * _SCALES[1]) + 2, crop_h // 2 - 2, crop_w // 2 - 2)
    if high - low < 3:
        return []
    along_x = acf[0, : high + 2] + 0.5 * (acf[1, : high + 2] + acf[-1, : high + 2])
    along_y = acf[: high + 2, 0] + 0.5 * (acf[: high + 2, 1] + acf[: high + 2, -1])
    # The same scale on both axes (the usual resize): the peaks of the two axes' sum ...
    found = [(_vertex(along_y, lag) / TILE, _vertex(along_x, lag) / TILE, 0.0)
             for lag in _peaks(along_x + along_y, low, high)[:_ACF_PEAKS]]
    # ... then the aspect ratio changed: the two strongest peaks of each axis, paired ...
    found += [(_vertex(along_y, row) / TILE, _vertex(along_x, col) / TILE, 0.0)
              for row in _peaks(along_y, low, high)[:2] for col in _peaks(along_x, low, high)[:2]]
    # ... then a rotation: the strongest peaks off the axis, within a few degrees of it.
    found += _rotated_peaks(acf, low, high)
    unique: list[tuple[float, float, float]] = []
    for scale_y, scale_x, angle in found:
        if all(
            abs(scale_y - y) > 0.003 * y or abs(scale_x - x) > 0.003 * x or abs(angle - a) > 0.1
            for y, x, a in unique
        ):
            unique.append((scale_y, scale_x, angle))
    return unique


def _rotated_peaks(acf: np.ndarray, low: int, high: int) -> list[tuple[float, float, float]]:
    """The autocorrelation's strongest peaks within :data:`_MAX_ANGLE` of the x axis, as rotations.

    Returns up to :data:`_ROTATIONS` ``(scale, scale, angle in degrees)``, leaving out peaks on the
    axis (those are the unrotated candidates).
    """
    rows = np.arange(-high, high + 1)
    cols = np.arange(low, high + 1)
    window = acf[np.ix_(rows % acf.shape[0], cols)]
    radius = np.hypot(rows[:, None], cols[None, :])
    angle = np.degrees(np.arctan2(rows[:, None], cols[None, :]))
    inside = (radius >= low) & (radius <= high) & (np.abs(angle) <= _MAX_ANGLE)
    # The image's own correlation falls with the distance: compare each lag with the mean at its radius.
    ring = np.minimum(np.rint(radius).astype(np.int64), high + 1)
    totals = np.bincount(ring[inside], weights=window[inside], minlength=high + 2)
    counts = np.bincount(ring[inside], minlength=high + 2)
    above = np.where(inside, window - (totals / np.maximum(counts, 1))[ring], -np.inf)
    # Local maxima (3x3) inside the window, strongest first.
    core = above[1:-1, 1:-1]
    neighbours = np.max(
        [above[1 + dy : above.shape[0] - 1 + dy, 1 + dx : above.shape[1] - 1 + dx]
         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx],
        axis=0,
    )
    peak_rows, peak_cols = np.nonzero(np.isfinite(core) & (core > neighbours))
    order = np.argsort(core[peak_rows, peak_cols])[::-1]
    found = []
    for row, col in zip(peak_rows[order] + 1, peak_cols[order] + 1):
        dy = rows[row] + _vertex(window[:, col], int(row)) - row
        dx = cols[col] + _vertex(window[row, :], int(col)) - col
        degrees = float(np.degrees(np.arctan2(dy, dx)))
        if abs(degrees) >= _MIN_ANGLE:
            scale = float(np.hypot(dy, dx)) / TILE
            found.append((scale, scale, degrees))
        if len(found) == _ROTATIONS:
            break
    return found


def _peaks(values: np.ndarray, low: int, high: int) -> list[int]:
    """The local maxima of ``values`` between ``low`` and ``high``, above the local trend, strongest first."""
    above = values - np.convolve(values, np.ones(9) / 9, mode="same")
    lags = np.arange(low, high)
    lags = lags[(above[lags] > above[lags - 1]) & (above[lags] >= above[lags + 1])]
    return [int(lag) for lag in lags[np.argsort(above[lags])[::-1]]]


def _vertex(values: np.ndarray, index: int) -> float:
    """The sub-sample position of the peak at ``index`` (a parabola through three samples)."""
    curve = values[index - 1] - 2 * values[index] + values[index + 1]
    if curve >= 0:
        return float(index)
    return index + 0.5 * float(values[index - 1] - values[index + 1]) / float(curve)
