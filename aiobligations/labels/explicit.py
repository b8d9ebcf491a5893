"""Explicit (visible, audible) labels for AI-generated content: GB 45438-2025 §5 (video: :mod:`.video`).

- Text (§5.1): a prompt before or after the content, whose wording holds both an AI element
  ("人工智能" or "AI") and a generation element ("生成" or "合成").
- Images (§5.2): a caption with that wording on an edge or corner, text at least 5 % of the
  shortest side high, legible on any background.
- Audio (§5.3): the rhythm cue "短长短短" (Morse "AI", · − · ·) at the start or the end. The
  standard fixes no timing or pitch; the defaults follow existing implementations (a 120 ms unit,
  800 Hz) and are configurable.

Video captions (§5.4: ≥ 2 s on the opening frames, ≥ 5 % high) are in :mod:`.video`.
:func:`find_caption` looks for an image's caption in its pixels, for ``inspect``.

Explicit labels change the content, so apply them *before* implicit labels and C2PA: re-encoding
an image keeps no XMP (a WAV's cue keeps its other RIFF chunks, but C2PA must sign the result).
"""

from __future__ import annotations

import io
import math
import threading
import zlib
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Literal, cast

from ..errors import ConfigurationError, LabelError

if TYPE_CHECKING:
    import numpy as np
    from numpy import ndarray  # Functions that import numpy lazily name it np locally.

__all__ = [
    "AI_ELEMENTS",
    "DEFAULT_TEXT_WORDING",
    "GENERATION_ELEMENTS",
    "TEXT_WORDING",
    "ImageTooLarge",
    "add_audio_cue",
    "caption_box",
    "caption_image",
    "draw_caption",
    "encode_like",
    "find_audio_cue",
    "find_caption",
    "has_alpha",
    "jpeg_options",
    "label_chat_completion",
    "label_markdown",
    "label_text",
    "open_still",
    "rhythm_cue",
    "validate_wording",
]

AI_ELEMENTS = ("人工智能", "AI")
"""Strings of which a label's wording must contain one (GB 45438 §5: the AI element)."""

GENERATION_ELEMENTS = ("生成", "合成")
"""Strings of which a label's wording must contain one (GB 45438 §5: the generation element)."""

_ENGLISH_GENERATION_ELEMENTS = ("generated", "synthesized", "synthesised", "synthetic")

TEXT_WORDING = {"zh": "本内容由人工智能生成", "en": "AI-generated content"}
"""Ready-made wordings. The English one needs ``allow_english=True``: GB 45438 names only the
Chinese generation elements, so an English-only label is a choice the provider makes knowingly."""

DEFAULT_TEXT_WORDING = "【本内容由人工智能生成】"
"""The wording :func:`label_text` and :func:`label_chat_completion` use by default."""

Position = Literal["prefix", "suffix", "both"]
Corner = Literal["bottom-right", "bottom-left", "top-right", "top-left"]

# ---------------------------------------------------------------------------------------------
# Text


def validate_wording(text: str, *, allow_english: bool = False) -> None:
    """Check that ``text`` holds an AI element and a generation element (GB 45438 §5).

    Valid: "AI生成", "人工智能生成", "本内容由AI生成", "AI合成". Invalid: "AI播客" (no generation
    element), "虚拟主播" (neither). "AI" must be upper-case, so that words such as "said" do not
    count.

    Args:
        text: The label's wording.
        allow_english: Also accept "generated", "synthesized" or "synthetic" (any case) as the
            generation element, for an English-only label such as "AI-generated content".

    Raises:
        ConfigurationError: an element is missing; the message names which.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"label wording must be a string, got {type(text).__name__}")
    has_ai = any(element in text for element in AI_ELEMENTS)
    has_generation = any(element in text for element in GENERATION_ELEMENTS) or (
        allow_english and any(element in text.lower() for element in _ENGLISH_GENERATION_ELEMENTS)
    )
    ai = "the AI element (人工智能 or AI)"
    generation = "the generation element (生成 or 合成)"
    if not has_ai and not has_generation:
        raise ConfigurationError(f"label wording {text!r} lacks both {ai} and {generation}")
    if not has_ai:
        raise ConfigurationError(f"label wording {text!r} lacks {ai}")
    if not has_generation:
        raise ConfigurationError(f"label wording {text!r} lacks {generation}")


def label_text(
    text: str,
    *,
    wording: str = DEFAULT_TEXT_WORDING,
    position: Position = "prefix",
    separator: str = "\n",
    allow_english: bool = False,
) -> str:
    """Return ``text`` with the label ``wording`` before it, after it or both (GB 45438 §5.1).

    Idempotent: a text that already starts (for a prefix) or ends (for a suffix) with ``wording``
    gets no second copy there. An empty text becomes the wording alone.

    Args:
        text: The generated text.
        wording: The label; checked by :func:`validate_wording`.
        position: ``"prefix"``, ``"suffix"`` or ``"both"``.
        separator: Put between the label and the text.
        allow_english: Passed to :func:`validate_wording`.

    Raises:
        ConfigurationError: the wording lacks an element, or ``position`` is unknown.
    """
    validate_wording(wording, allow_english=allow_english)
    if position not in ("prefix", "suffix", "both"):
        raise ConfigurationError(f"position must be 'prefix', 'suffix' or 'both', got {position!r}")
    if not text:
        return wording
    if position in ("prefix", "both") and not text.startswith(wording):
        text = f"{wording}{separator}{text}"
    if position in ("suffix", "both") and not text.endswith(wording):
        text = f"{text}{separator}{wording}"
    return text


def label_markdown(data: bytes, *, wording: str = DEFAULT_TEXT_WORDING) -> bytes:
    """Append the visible text label to a Markdown file, at the end (TC260-PG-20258A for Markdown).

    The front matter (where the implicit label goes) and the body are kept; the label is added as a
    final paragraph, once.

    Raises:
        LabelError: the file is not UTF-8 text.
        ConfigurationError: the wording lacks an element.
    """
    validate_wording(wording)
    try:
        text = data.decode("utf-8-sig") if data.startswith(b"\xef\xbb\xbf") else data.decode("utf-8")
    except UnicodeDecodeError:
        raise LabelError("a Markdown file must be UTF-8 text") from None
    newline = "\r\n" if "\r\n" in text else "\n"
    stripped = text.rstrip()
    if stripped.endswith(wording):
        return data
    labelled = f"{stripped}{newline}{newline}{wording}{newline}"
    prefix = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    return prefix + labelled.encode("utf-8")


def label_chat_completion(
    payload: MutableMapping[str, Any],
    wording: str = DEFAULT_TEXT_WORDING,
    position: Position = "prefix",
    *,
    separator: str = "\n",
    allow_english: bool = False,
) -> int:
    """Label, in place, each ``choices[i].message.content`` string of an OpenAI chat.completion.

    Choices whose content is not a string (``None`` for tool calls, a list of parts) are left
    alone. Labelling is idempotent, as with :func:`label_text`.

    Returns:
        The number of message contents that now carry the label.

    Raises:
        ConfigurationError: as :func:`label_text`.
        LabelError: ``payload`` is not a mapping with a list of ``choices``.
    """
    validate_wording(wording, allow_english=allow_english)
    if not isinstance(payload, MutableMapping) or not isinstance(payload.get("choices"), list):
        raise LabelError("not a chat.completion: expected a JSON object with a list of choices")
    labelled = 0
    for choice in payload["choices"]:
        message = choice.get("message") if isinstance(choice, MutableMapping) else None
        if isinstance(message, MutableMapping) and isinstance(message.get("content"), str):
            message["content"] = label_text(
                message["content"],
                wording=wording,
                position=position,
                separator=separator,
                allow_english=allow_english,
            )
            labelled += 1
    return labelled


# ---------------------------------------------------------------------------------------------
# Images

_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF")
_BOX_RGBA = (0, 0, 0, 184)  # ~72 % opaque black: white text stays readable over white or noise.
_TEXT_RGBA = (255, 255, 255, 255)
_FONT_LOCK = threading.Lock()


def _text_height(font: Any, wording: str) -> int:
    """The rendered ink height of ``wording`` above its baseline (cap height for Latin text)."""
    top: int = font.getbbox(wording, anchor="ls")[1]
    return max(0, -top)


def _fit_font(wording: str, target: int) -> Any:
    """The smallest CJK font size whose rendered text is at least ``target`` pixels high."""
    from .fonts import cjk_font

    size = max(4, math.ceil(target / 0.7))
    for _ in range(64):
        font = cjk_font(size)
        height = _text_height(font, wording)
        if height >= target:
            return font
        size += max(1, math.ceil((target - height) / 0.7))
    raise LabelError(f"cannot render {wording!r} {target} px high with the CJK font")  # pragma: no cover


def _check_caption_args(wording: str, corner: str, min_height_ratio: float, min_text_px: int,
                        allow_english: bool) -> None:
    validate_wording(wording, allow_english=allow_english)
    if corner not in ("bottom-right", "bottom-left", "top-right", "top-left"):
        raise ConfigurationError(f"corner must be top-left, top-right, bottom-left or bottom-right, got {corner!r}")
    if not 0 < min_height_ratio < 0.5:
        raise ConfigurationError(f"min_height_ratio must be between 0 and 0.5, got {min_height_ratio!r}")
    if not 1 <= min_text_px <= 1000:
        raise ConfigurationError(f"min_text_px must be from 1 to 1000, got {min_text_px!r}")


def open_still(data: bytes) -> Any:
    """Decode a still PNG, JPEG, WebP, GIF or TIFF with Pillow (loaded; ``.format`` says which).

    Raises:
        LabelError: not a decodable image of those formats, or animated.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with the media extra
        raise LabelError("image captions need Pillow: pip install 'aiobligations[media]'") from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LabelError(f"expected image bytes, got {type(data).__name__}")
    try:
        source = Image.open(io.BytesIO(data))
        fmt = source.format
        if fmt not in _IMAGE_FORMATS:
            raise LabelError(f"cannot caption {fmt or 'unknown'} images: only PNG, JPEG, WebP, GIF and TIFF")
        if getattr(source, "n_frames", 1) > 1:
            raise LabelError(f"cannot caption an animated {fmt}")
        source.load()
    except LabelError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"an image too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise LabelError(f"cannot decode the image: {exc}") from exc
    return source


class ImageTooLarge(LabelError):
    """The image declares more pixels than may safely be decoded (a decompression bomb): hostile
    input, refused whole, never labelled in part."""


def has_alpha(source: Any) -> bool:
    """Whether a decoded image has an alpha channel (or a palette transparency) to keep."""
    return source.mode in ("RGBA", "LA", "PA") or (source.mode == "P" and "transparency" in source.info)


def _caption_tile(size: tuple[int, int], wording: str, min_height_ratio: float, min_text_px: int) -> tuple[Any, int]:
    """The caption as an RGBA tile (box and text) for an image of ``size``, and its margin from the edges.

    Raises:
        LabelError: too small for a legible caption, or no CJK font.
    """
    from PIL import Image, ImageDraw

    width, height = size
    shortest = min(width, height)
    target = max(math.ceil(min_height_ratio * shortest), min_text_px)
    pad_x, pad_y = max(2, round(0.4 * target)), max(2, round(0.3 * target))
    margin = max(2, round(0.02 * shortest))
    # FreeType faces are shared (cached) and not safe to render from two threads at once.
    with _FONT_LOCK:
        font = _fit_font(wording, target)
        left, top, right, bottom = font.getbbox(wording, anchor="ls")
        box_w, box_h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
        if box_w + 2 * margin > width or box_h + 2 * margin > height:
            raise LabelError(
                f"a {width}x{height} image is too small for {wording!r} at {target} px: use a shorter wording"
            )
        overlay = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=max(1, box_h // 4), fill=_BOX_RGBA)
        draw.text((pad_x - left, pad_y - top), wording, font=font, fill=_TEXT_RGBA, anchor="ls")
    return overlay, margin


def _caption_origin(size: tuple[int, int], tile: tuple[int, int], corner: str, margin: int) -> tuple[int, int]:
    """Where the caption tile's top-left corner goes on an image of ``size``."""
    x0 = margin if corner.endswith("left") else size[0] - margin - tile[0]
    y0 = margin if corner.startswith("top") else size[1] - margin - tile[1]
    return x0, y0


def _caption_overlay(size: tuple[int, int], wording: str, corner: str, min_height_ratio: float,
                     min_text_px: int) -> tuple[Any, tuple[int, int]]:
    """The caption tile and where its top-left corner goes on an image of ``size``.

    Raises:
        LabelError: too small for a legible caption, or no CJK font.
    """
    overlay, margin = _caption_tile(size, wording, min_height_ratio, min_text_px)
    return overlay, _caption_origin(size, overlay.size, corner, margin)


def draw_caption(
    source: Any,
    *,
    wording: str = "AI生成",
    corner: Corner = "bottom-right",
    min_height_ratio: float = 0.05,
    min_text_px: int = 10,
    allow_english: bool = False,
) -> Any:
    """Return a copy of the decoded image ``source`` with the caption drawn (see :func:`caption_image`).

    The copy is RGB for an RGB source, RGBA for any other.

    Raises:
        ConfigurationError: bad wording, corner or ratio.
        LabelError: too small for a legible caption, or no CJK font.
    """
    _check_caption_args(wording, corner, min_height_ratio, min_text_px, allow_english)
    overlay, (x0, y0) = _caption_overlay(source.size, wording, corner, min_height_ratio, min_text_px)
    box_w, box_h = overlay.size
    if source.mode == "RGB":
        # Only the box's pixels change: composite there, not over a whole RGBA copy of the frame.
        canvas = source.copy()
        region = canvas.crop((x0, y0, x0 + box_w, y0 + box_h)).convert("RGBA")
        region.alpha_composite(overlay)
        canvas.paste(region.convert("RGB"), (x0, y0))
        return canvas
    canvas = source.convert("RGBA")
    canvas.alpha_composite(overlay, (x0, y0))
    return canvas


def caption_box(size: tuple[int, int], *, wording: str = "AI生成", corner: Corner = "bottom-right",
                min_height_ratio: float = 0.05, min_text_px: int = 10) -> tuple[int, int, int, int]:
    """Where :func:`draw_caption` puts the caption on an image of ``size``: ``(left, top, right, bottom)``.

    Raises:
        LabelError: too small for a legible caption, or no CJK font.

    .. versionadded:: 0.2.0
    """
    overlay, (x0, y0) = _caption_overlay(size, wording, corner, min_height_ratio, min_text_px)
    return x0, y0, x0 + overlay.size[0], y0 + overlay.size[1]


# A drawn caption's text is white and its box darkens what is under it to 28 %: after a JPEG
# encode at quality 75 (and the watermark), text pixels stay above _LIGHT and box pixels below _DARK.
_LIGHT, _DARK, _MATCH = 160, 110, 0.9
_CORNERS: tuple[Corner, ...] = ("bottom-right", "bottom-left", "top-right", "top-left")


def _caption_masks(overlay: Any) -> tuple[Any, Any, Any]:
    """Boolean masks of the caption tile: the glyphs' inner pixels, the box away from the glyphs, the whole box."""
    import numpy as np
    from PIL import ImageFilter

    alpha = overlay.getchannel("A")
    glyphs = alpha.point(lambda a: 255 if a == 255 else 0)
    inner = glyphs.filter(ImageFilter.MinFilter(3))  # Away from the glyphs' anti-aliased edges.
    if np.count_nonzero(np.asarray(inner)) < 20:  # Thin strokes of a small caption: keep them whole.
        inner = glyphs
    near_glyphs = np.asarray(glyphs.filter(ImageFilter.MaxFilter(7))) > 0
    box = np.asarray(alpha.point(lambda a: 255 if a == _BOX_RGBA[3] else 0).filter(ImageFilter.MinFilter(5))) > 0
    return np.asarray(inner) > 0, box & ~near_glyphs, np.asarray(alpha) > 0


def _caption_scores(region: Any, masks: tuple[Any, Any, Any]) -> tuple[float, float, float]:
    """How well a greyscale ``region`` (the tile's size) matches the caption tile's ``masks``.

    Returns:
        The share of the glyphs' inner pixels that are light, the share of the box's pixels away
        from the glyphs that are dark, and the share of all the box's pixels that are light.
    """
    import numpy as np

    grey = np.asarray(region)
    text_pixels, box_pixels, inside = (grey[mask] for mask in masks)
    return (float((text_pixels >= _LIGHT).mean()) if text_pixels.size else 0.0,
            float((box_pixels <= _DARK).mean()) if box_pixels.size else 0.0,
            float((inside >= _LIGHT).mean()) if inside.size else 0.0)


def find_caption(
    source: Any,
    *,
    wording: str = "AI生成",
    corners: tuple[Corner, ...] = _CORNERS,
    min_height_ratio: float = 0.05,
    min_text_px: int = 10,
) -> dict[str, Any]:
    """Look for the caption :func:`draw_caption` draws, in the pixels: evidence, not a claim from metadata.

    The caption is rendered again (same wording, size rule and font) for each corner, and the
    image's pixels there are compared with it: the glyphs' inner pixels must be light and the
    box's other pixels dark (each for at least 90 % of them), which survives a JPEG re-encode at
    quality 75 and the watermark. A caption painted over, or an image without one, fails.

    Args:
        source: A decoded image (:func:`open_still`), or its encoded bytes.
        wording: The wording to look for (the profile's ``[labels] explicit_wording``).
        corners: The corners to look in, in order.
        min_height_ratio: As given to :func:`draw_caption`.
        min_text_px: As given to :func:`draw_caption`.

    Returns:
        ``{"checked": True, "present": True, "text": ..., "corner": ..., "box": [l, t, r, b],
        "how": ...}`` when found; ``{"checked": True, "present": False, "text": ..., "how": ...}``
        when no corner holds a dark box with light marks; ``{"checked": False, "present": None,
        "reason": ...}`` (unverified) when there is no CJK font to render with, or when a corner
        holds a dark box with light marks that are not these glyphs: another wording, font or
        size than this profile's and machine's. An image too small for the caption has none
        (``present`` false, ``how`` says why).

    Raises:
        LabelError: ``source`` is bytes that do not decode as a still image.

    .. versionadded:: 0.2.0
    """
    from .fonts import find_cjk_font

    image = open_still(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
    alpha = has_alpha(image)
    try:
        font_name = find_cjk_font().name
        overlay, margin = _caption_tile(image.size, wording, min_height_ratio, min_text_px)
    except LabelError as exc:
        if "too small" in str(exc):  # No caption of this wording fits: the labeller drew none.
            return {"checked": True, "present": False, "text": wording, "how": str(exc)}
        return {"checked": False, "present": None, "reason": f"unverified: {exc}"}
    masks = _caption_masks(overlay)
    lookalike = None
    for corner in corners:
        x0, y0 = _caption_origin(image.size, overlay.size, corner, margin)
        # Only the box's pixels are converted: the frame around it is never touched.
        region = image.crop((x0, y0, x0 + overlay.size[0], y0 + overlay.size[1]))
        region = region.convert("RGBA").convert("L") if alpha else region.convert("L")
        text, box, light = _caption_scores(region, masks)
        scores = f"{text:.0%} of the glyphs' pixels light, {box:.0%} of the box's dark"
        if text >= _MATCH and box >= _MATCH:
            return {"checked": True, "present": True, "text": wording, "corner": corner,
                    "box": [x0, y0, x0 + overlay.size[0], y0 + overlay.size[1]],
                    "how": f"re-rendered {wording!r} in {font_name} in the {corner} box and compared the "
                           f"pixels: {scores}"}
        if lookalike is None and box >= _MATCH * 0.8 and light >= 0.03:
            lookalike = (corner, scores)
    if lookalike is not None:
        corner, scores = lookalike
        return {"checked": False, "present": None, "corner": corner,
                "reason": f"unverified: a dark box with light marks in the {corner} corner, but not {wording!r} "
                          f"as {font_name} renders it ({scores}): another wording, font or size than this "
                          "profile's"}
    return {"checked": True, "present": False, "text": wording,
            "how": f"re-rendered {wording!r} in {font_name} in each corner's box: no dark box with these glyphs"}


_FLOOR_QUALITY = 75  # The watermark is made to survive JPEG at quality 75 (see watermark.py).
_floor_tables: list[list[int]] = []


def _quality_floor() -> list[list[int]]:
    """libjpeg's luma and chroma tables at :data:`_FLOOR_QUALITY`, as Pillow reads them back."""
    if not _floor_tables:
        from PIL import Image, JpegImagePlugin

        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, "JPEG", quality=_FLOOR_QUALITY, subsampling=0)
        with Image.open(out, formats=["JPEG"]) as probe:
            # A JPEG just written opens as the JPEG plugin's class, which holds the tables.
            tables = cast(JpegImagePlugin.JpegImageFile, probe).quantization
            _floor_tables[:] = [list(tables[index]) for index in sorted(tables)][:2]
    return _floor_tables


def jpeg_options(source: Any) -> dict[str, Any]:
    """The Pillow JPEG save options for a re-encode of ``source`` (a caption, a watermark): 4:4:4.

    A re-encoded JPEG has no chroma subsampling (4:4:4), whatever the input's (4:2:0, 4:2:2 or
    4:4:4): subsampling the decoded colour again would blur it a second time. A JPEG source keeps
    its own quantisation tables (its quality), each step no coarser than at quality 75, so a
    watermark survives the encode of a low-quality input; any other source, and a JPEG with a
    single table, is written at quality 95. (A label that does not re-encode, the metadata alone,
    leaves the input's bytes and so its subsampling as they are.)
    """
    tables = (getattr(source, "quantization", None) or {}) if getattr(source, "format", None) == "JPEG" else {}
    if len(tables) >= 2:
        own = [list(tables[index]) for index in sorted(tables)][:2]
        floor = _quality_floor()
        if all(len(table) == len(limit) == 64 for table, limit in zip(own, floor, strict=True)):
            kept = [[min(step, limit) for step, limit in zip(table, bound, strict=True)]
                    for table, bound in zip(own, floor, strict=True)]
            return {"subsampling": 0, "qtables": kept}
    return {"quality": 95, "subsampling": 0}


def _as(image: Any, mode: str) -> Any:
    """``image`` in ``mode``: itself when it is already (no copy of the frame), else converted."""
    return image if image.mode == mode else image.convert(mode)


def encode_like(image: Any, source: Any, data: bytes) -> bytes:
    """Encode ``image`` (changed pixels of ``source``, decoded from ``data``) once, in ``source``'s format.

    PNG stays PNG (RGB, or RGBA where the source had alpha; deflate with zlib's ``Z_RLE`` strategy),
    JPEG stays JPEG (4:4:4, the source's
    quantisation tables, see :func:`jpeg_options`), WebP stays WebP (lossless if the
    source was), a still GIF stays GIF (quantised to 256 colours) and TIFF stays TIFF
    (uncompressed). ICC profiles and EXIF are kept; other metadata is not.
    """
    from PIL import Image

    fmt = source.format
    alpha = has_alpha(source)
    out = io.BytesIO()
    keep = {key: source.info[key] for key in ("icc_profile", "exif") if source.info.get(key)}
    if fmt == "JPEG":
        _as(image, "RGB").save(out, "JPEG", **jpeg_options(source), **keep)
    elif fmt == "PNG":
        # zlib's run-length strategy: on photo-like images as small as the default deflate and
        # about half the time (170 vs 310 ms at 1080p); flat graphics come out ~25 % larger.
        _as(image, "RGBA" if alpha else "RGB").save(out, "PNG", optimize=False,
                                                        compress_type=zlib.Z_RLE, **keep)
    elif fmt == "GIF":
        # GIF holds a palette: the captioned frame is quantised back to 256 colours.
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, "GIF")
    elif fmt == "TIFF":
        image.convert("RGBA" if alpha else "RGB").save(out, "TIFF", compression="raw", **keep)
    else:
        lossless = b"VP8L" in bytes(data[:4096])
        converted = image.convert("RGBA") if alpha else image.convert("RGB")
        if lossless:
            converted.save(out, "WEBP", lossless=True, **keep)
        else:
            converted.save(out, "WEBP", quality=95, **keep)
    return out.getvalue()


def caption_image(
    data: bytes,
    *,
    wording: str = "AI生成",
    corner: Corner = "bottom-right",
    min_height_ratio: float = 0.05,
    min_text_px: int = 10,
    allow_english: bool = False,
) -> bytes:
    """Return the image with ``wording`` drawn on a corner, in the same format (GB 45438 §5.2).

    The text is white on a ~72 % opaque black rounded box, so it reads on light, dark and busy
    backgrounds alike. Its rendered height above the baseline (for CJK text, nearly the full
    glyph; for Latin, the cap height) is at least ``min_height_ratio`` of the shortest side and at
    least ``min_text_px`` pixels, below which no text is legible.
    The image is decoded once and encoded once (:func:`encode_like`).
    PNG stays PNG (the mode is kept where it has colour and alpha: RGB, RGBA; palette and grey
    images become RGB or RGBA), JPEG stays JPEG without chroma subsampling (4:4:4, whatever the
    input's) and with the input's quantisation tables (quality 95 for a JPEG with fewer than two), WebP stays WebP (lossless if the input was), a still GIF stays GIF (quantised to 256
    colours) and TIFF stays TIFF (uncompressed). ICC profiles and EXIF are kept; other metadata is not.

    Raises:
        ConfigurationError: bad wording, corner or ratio.
        LabelError: not a decodable PNG, JPEG, WebP, GIF or TIFF; animated; too small for a legible caption;
            or no CJK font (the message says what to install).
    """
    _check_caption_args(wording, corner, min_height_ratio, min_text_px, allow_english)
    source = open_still(data)
    canvas = draw_caption(source, wording=wording, corner=corner, min_height_ratio=min_height_ratio,
                          min_text_px=min_text_px, allow_english=allow_english)
    return encode_like(canvas, source, data)


# ---------------------------------------------------------------------------------------------
# Audio


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy comes with the media extra
        raise LabelError("audio cues need numpy: pip install 'aiobligations[media]'") from exc
    return numpy


_MAX_CUE_BYTES = 256 << 20  # A WAV cue larger than this (e.g. 64 channels at 768 kHz) is refused.
_PATTERN = (1, 3, 1, 1)  # 短长短短: Morse "AI" (· − · ·), in units; gaps are one unit.
_FADE_S = 0.005


def rhythm_cue(
    sample_rate: int = 16000,
    *,
    unit_ms: int = 120,
    frequency: float = 800.0,
    amplitude: float = 0.3,
) -> np.ndarray:
    """Return the rhythm cue "短长短短" (GB 45438 §5.3 c) as mono float64 samples in [-1, 1].

    Tones of 1, 3, 1 and 1 units with one-unit gaps (9 units, 1.08 s at the default 120 ms);
    each tone fades in and out over 5 ms, so there are no clicks. The standard fixes neither
    timing nor pitch; 1046.5 Hz (C6) is the other value in use.

    Raises:
        ConfigurationError: a parameter is out of range.
    """
    np = _numpy()
    if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= 768_000:
        raise ConfigurationError(f"sample_rate must be an int from 1000 to 768000, got {sample_rate!r}")
    if not 20 <= unit_ms <= 1000:
        raise ConfigurationError(f"unit_ms must be from 20 to 1000, got {unit_ms!r}")
    if not 0 < frequency < sample_rate / 2:
        raise ConfigurationError(f"frequency must be above 0 and below {sample_rate / 2} Hz, got {frequency!r}")
    if not 0 < amplitude <= 1:
        raise ConfigurationError(f"amplitude must be in (0, 1], got {amplitude!r}")
    unit = round(sample_rate * unit_ms / 1000)
    fade = min(round(sample_rate * _FADE_S), unit // 2)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade) if fade else np.empty(0)
    parts = []
    for index, units in enumerate(_PATTERN):
        n = units * unit
        tone = amplitude * np.sin(2 * np.pi * frequency * np.arange(n) / sample_rate)
        if fade:
            tone[:fade] *= ramp
            tone[n - fade :] *= ramp[::-1]
        parts.append(tone)
        if index < len(_PATTERN) - 1:
            parts.append(np.zeros(unit))
    cue: ndarray = np.concatenate(parts)
    return cue


def _encode_pcm(samples: np.ndarray, sampwidth: int, channels: int, *, kind: str = "pcm",
                valid_bits: int | None = None) -> bytes:
    """Little-endian interleaved samples for float samples in [-1, 1].

    ``kind="pcm"``: integers of ``sampwidth`` bytes (8-bit is unsigned), quantised to
    ``valid_bits`` significant bits (default: the whole sample) in the high bits, as
    WAVE_FORMAT_EXTENSIBLE asks. ``kind="float"``: IEEE float of 4 or 8 bytes.
    """
    np = _numpy()
    clipped = np.clip(samples, -1.0, 1.0)
    if kind == "float":
        frames = clipped.astype("<f4" if sampwidth == 4 else "<f8")
    else:
        bits = 8 * sampwidth if valid_bits is None else valid_bits
        ints = np.round(clipped * ((1 << (bits - 1)) - 1)).astype(np.int64) << (8 * sampwidth - bits)
        if sampwidth == 1:
            frames = (ints + 128).astype(np.uint8)
        elif sampwidth == 2:
            frames = ints.astype("<i2")
        elif sampwidth == 3:
            frames = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        else:
            frames = ints.astype("<i4")
    frames = np.repeat(frames, channels, axis=0) if frames.ndim == 2 else np.repeat(frames, channels)
    data: bytes = np.ascontiguousarray(frames).tobytes()
    return data


_FIND_SECONDS = 4.0  # The opening searched for the cue: nine units of up to 300 ms and the pause.


def find_audio_cue(wav_bytes: bytes) -> dict[str, Any]:
    """Look for the rhythm cue at the start of a WAV (as :func:`add_audio_cue` puts it there).

    The first channel's opening (up to 4 s) is cut into 5 ms windows; the cue is found when its
    loud and quiet runs are tone, gap, tone, gap, tone, gap, tone of 1, 1, 3, 1, 1, 1, 1 units
    (a unit of 20 to 300 ms, each run within 20 % or 15 ms), from the first 20 ms on, and the last
    tone ends in a quiet run (the pause). A cue at the end is not looked for.

    Returns:
        ``{"checked": True, "present": bool, "at": "start", "unit_ms": ...}`` (``unit_ms`` when
        present), or ``{"checked": False, "reason": ...}`` for a WAV whose samples cannot be
        read (A-law, ADPCM, …).
    """
    from .formats import wav

    np = _numpy()
    try:
        fmt, samples = wav.leading_channel(bytes(wav_bytes), _FIND_SECONDS)
    except LabelError as exc:
        return {"checked": False, "reason": str(exc).removeprefix("no audio cue: ")}
    window = max(1, round(fmt.rate * 0.005))
    n = len(samples) // window
    if n == 0:
        return {"checked": True, "present": False, "at": "start"}
    rms = np.sqrt((samples[: n * window].reshape(n, window) ** 2).mean(axis=1))
    loud = rms > max(0.2 * rms.max(), 1e-3)
    runs: list[list[Any]] = []
    for state in loud.tolist():
        if runs and runs[-1][0] == state:
            runs[-1][1] += 5.0
        else:
            runs.append([state, 5.0])
    if runs and not runs[0][0] and runs[0][1] <= 20:
        runs = runs[1:]
    present = False
    unit = runs[0][1] if runs and runs[0][0] else 0.0
    if 20 <= unit <= 300 and len(runs) >= 7:
        expected = [(on, units * unit) for on, units in zip([True, False] * 4, (1, 1, 3, 1, 1, 1, 1), strict=False)]
        present = all(on == run[0] and abs(run[1] - ms) <= max(15.0, 0.2 * ms)
                      for (on, ms), run in zip(expected, runs[:7], strict=True))
        present = present and (len(runs) == 7 or not runs[7][0])
    return {"checked": True, "present": present, "at": "start", **({"unit_ms": round(unit)} if present else {})}


def add_audio_cue(
    wav_bytes: bytes,
    *,
    at: Literal["start", "end"] = "start",
    unit_ms: int = 120,
    frequency: float = 800.0,
    amplitude: float = 0.3,
    silence_ms: int = 200,
) -> bytes:
    """Return the WAV with :func:`rhythm_cue` and ``silence_ms`` of silence before or after its audio.

    Supported: PCM 8/16/24/32-bit and IEEE float 32/64-bit, plain or WAVE_FORMAT_EXTENSIBLE (see
    :func:`aiobligations.labels.formats.wav.sample_format`). The rate, sample format and channel
    count are kept; the original sample data follow the cue (``at="start"``) or precede it
    (``at="end"``) bit for bit. Every other RIFF chunk (``LIST``/``INFO``, ``bext``, ``cue ``,
    ``smpl``, an ``AIGC`` implicit label, unknown ones) is kept byte for byte and in order; only the
    ``data`` chunk, a ``fact`` chunk's frame count and the RIFF size change; with the cue at the start,
    the positions other chunks hold (cue points, loops, ``bext``'s time reference) move by the cue's
    length, so they still point at the same audio.

    Raises:
        ConfigurationError: ``at`` or a cue parameter is invalid.
        LabelError: not a WAV, malformed, truncated sample data, or a sample format the cue is not
            written into (A-law, ADPCM, …); the message says which.
    """
    from .formats import wav

    if at not in ("start", "end"):
        raise ConfigurationError(f"at must be 'start' or 'end', got {at!r}")
    if not 0 <= silence_ms <= 10_000:
        raise ConfigurationError(f"silence_ms must be from 0 to 10000, got {silence_ms!r}")
    if not isinstance(wav_bytes, (bytes, bytearray, memoryview)):
        raise LabelError(f"expected WAV bytes, got {type(wav_bytes).__name__}")
    data = bytes(wav_bytes)
    if not wav.sniff(data):
        raise LabelError("not a RIFF/WAVE file")
    fmt = wav.sample_format(data)
    cue_bytes = (round(fmt.rate * unit_ms / 1000) * 9 + round(fmt.rate * silence_ms / 1000)) * fmt.block_align
    if cue_bytes > _MAX_CUE_BYTES:
        raise LabelError(f"no audio cue: it would take {cue_bytes} bytes at {fmt.rate} Hz in {fmt.block_align}-byte "
                         f"frames, more than {_MAX_CUE_BYTES}")
    original = wav.sample_data(data)
    if len(original) % fmt.block_align:
        raise LabelError(
            f"malformed WAV: the data chunk's {len(original)} bytes are not whole {fmt.block_align}-byte frames"
        )
    cue = _encode_pcm(rhythm_cue(fmt.rate, unit_ms=unit_ms, frequency=frequency, amplitude=amplitude),
                      fmt.width, fmt.channels, kind=fmt.kind, valid_bits=fmt.valid_bits)
    silent_byte = b"\x80" if fmt.kind == "pcm" and fmt.width == 1 else b"\x00"
    silence = silent_byte * (round(fmt.rate * silence_ms / 1000) * fmt.block_align)
    body = cue + silence + original if at == "start" else original + silence + cue
    lead = (len(cue) + len(silence)) // fmt.block_align if at == "start" else 0
    return wav.replace_samples(data, body, len(body) // fmt.block_align, lead=lead)
