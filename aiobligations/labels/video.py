"""Explicit (visible) labels for AI-generated video: GB 45438-2025 §5.4.

A text prompt holding both an AI element ("人工智能" or "AI") and a generation element ("生成" or
"合成") on the opening frames, shown for at least 2 s at normal playback speed, its text at least
5 % of the shortest side high. :func:`caption_video` burns such a caption into the first
``seconds`` of an MP4 (H.264) file, with the same look as :func:`~.explicit.caption_image`.

It needs PyAV (``pip install av``; the wheel bundles FFmpeg with libx264), numpy and Pillow.

Explicit labels change the content, so apply them *before* implicit labels and C2PA: the file is
rewritten and keeps no container metadata.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from typing import Any

from ..errors import ConfigurationError, LabelError
from .explicit import (
    _BOX_RGBA,
    _FONT_LOCK,
    _TEXT_RGBA,
    Corner,
    _fit_font,
    validate_wording,
)

__all__ = ["MAX_VIDEO_SECONDS", "MAX_VIDEO_SIDES", "caption_video"]

MAX_VIDEO_SECONDS = 600.0
"""The longest video :func:`caption_video` accepts (10 minutes)."""

MAX_VIDEO_SIDES = (4096, 2160)
"""The largest frame :func:`caption_video` accepts: long side ≤ 4096, short side ≤ 2160 (4K,
landscape or portrait)."""

_MAX_FPS = 240
_MAX_INPUT_BYTES = 4 * 1024**3
_MP4_DEMUXER = "mp4"  # FFmpeg's demuxer is named "mov,mp4,m4a,3gp,3g2,mj2".
_VIDEO_CODECS = {"h264"}
_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


def _modules() -> tuple[Any, Any]:
    try:
        import av
        import numpy
    except ImportError as exc:  # pragma: no cover - PyAV comes with the media extra
        raise LabelError(
            "video captions need PyAV and numpy: pip install 'aiobligations[media]'"
        ) from exc
    return av, numpy


def _overlay(
    wording: str, width: int, height: int, corner: str, ratio: float, min_text_px: int
) -> tuple[Any, int, int, int]:
    """The caption as an RGBA image, its top-left corner (even coordinates) and text height."""
    from PIL import Image, ImageDraw

    shortest = min(width, height)
    target = max(math.ceil(ratio * shortest), min_text_px)
    pad_x, pad_y = max(2, round(0.4 * target)), max(2, round(0.3 * target))
    margin = max(2, round(0.02 * shortest))
    with _FONT_LOCK:  # FreeType faces are shared and not thread-safe.
        font = _fit_font(wording, target)
        left, top, right, bottom = font.getbbox(wording, anchor="ls")
        box_w, box_h = right - left + 2 * pad_x, bottom - top + 2 * pad_y
        box_w += (
            box_w % 2
        )  # Even sizes and positions keep the box aligned with 4:2:0 chroma.
        box_h += box_h % 2
        if box_w + 2 * margin > width or box_h + 2 * margin > height:
            raise LabelError(
                f"a {width}x{height} video is too small for {wording!r} at {target} px: use a shorter wording"
            )
        overlay = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        draw.rounded_rectangle(
            (0, 0, box_w - 1, box_h - 1), radius=max(1, box_h // 4), fill=_BOX_RGBA
        )
        draw.text(
            (pad_x - left, pad_y - top),
            wording,
            font=font,
            fill=_TEXT_RGBA,
            anchor="ls",
        )
    x0 = margin if corner.endswith("left") else width - margin - box_w
    y0 = margin if corner.startswith("top") else height - margin - box_h
    return overlay, x0 - x0 % 2, y0 - y0 % 2, target


class _Blender:
    """Alpha-blends the grey caption straight into yuv420p planes (limited range).

    The caption is black and white only, so its chroma is neutral (128) whatever the colour
    matrix, and blending in YUV avoids an RGB round trip.
    """

    def __init__(self, np: Any, overlay: Any, x0: int, y0: int) -> None:
        rgba = np.asarray(overlay, dtype=np.float32)
        alpha = rgba[..., 3] / 255.0
        grey = rgba[..., 0]
        self.h, self.w = alpha.shape
        self.x0, self.y0 = x0, y0
        self.alpha_y = alpha
        self.value_y = (16.0 + grey * (219.0 / 255.0)) * alpha
        self.alpha_c = alpha.reshape(self.h // 2, 2, self.w // 2, 2).mean(axis=(1, 3))
        self.value_c = 128.0 * self.alpha_c
        self.np = np

    def apply(self, planes: Any, width: int, height: int) -> None:
        """Blend into ``planes``, the (h * 3/2, w) uint8 array of a yuv420p frame, in place."""
        np = self.np
        x, y, w, h = self.x0, self.y0, self.w, self.h
        luma = planes[y : y + h, x : x + w].astype(np.float32)
        planes[y : y + h, x : x + w] = np.clip(
            luma * (1 - self.alpha_y) + self.value_y + 0.5, 0, 255
        )
        cw, ch = width // 2, height // 2
        chroma = planes[height:].reshape(2, ch, cw)  # U then V, each (h/2, w/2).
        region = chroma[:, y // 2 : (y + h) // 2, x // 2 : (x + w) // 2].astype(
            np.float32
        )
        chroma[:, y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = np.clip(
            region * (1 - self.alpha_c) + self.value_c + 0.5, 0, 255
        )


def caption_video(
    data: bytes,
    *,
    wording: str = "AI生成",
    seconds: float = 2.0,
    corner: Corner = "bottom-right",
    min_height_ratio: float = 0.05,
    min_text_px: int = 10,
    crf: int = 18,
    preset: str = "veryfast",
    allow_english: bool = False,
) -> bytes:
    """Return the MP4 with ``wording`` burnt into a corner of its opening frames (GB 45438 §5.4).

    Every video frame whose presentation time, counted from the first frame, is below
    ``seconds`` gets the caption: white text on a ~72 % opaque black rounded box, as
    :func:`~.explicit.caption_image` draws it, its text at least ``min_height_ratio`` of the
    shortest side and at least ``min_text_px`` pixels high. A video shorter than ``seconds`` is
    captioned throughout - it then cannot show the label for the 2 s that §5.4 asks, so label such
    clips another way as well (around the player, for instance).

    The video stream is re-encoded with libx264 (yuv420p, ``crf``, ``preset``) at the same size,
    frame rate and timestamps; every audio stream is copied packet for packet. The output is an
    MP4 with its index at the front (``movflags=faststart``). Subtitle and data streams, container
    metadata, rotation side data, HDR and 10-bit/4:4:4 sampling are not kept (frames become
    8-bit 4:2:0).

    Args:
        data: An MP4 (or MOV) file whose first video stream is H.264.
        wording: The caption; checked by :func:`~.explicit.validate_wording`.
        seconds: How long the caption shows; GB 45438 asks for at least 2 s.
        corner: ``"bottom-right"``, ``"bottom-left"``, ``"top-right"`` or ``"top-left"``.
        min_height_ratio: Text height over the shortest side; GB 45438 asks for at least 0.05.
        min_text_px: The smallest text height in pixels.
        crf: libx264 constant rate factor, 0-51 (lower is better; 18 is visually lossless).
        preset: libx264 speed preset (``"ultrafast"`` … ``"veryslow"``).
        allow_english: Passed to :func:`~.explicit.validate_wording`.

    Raises:
        ConfigurationError: bad wording, corner, duration, ratio or encoder setting.
        LabelError: not a decodable MP4 with an H.264 video stream; longer than 10 minutes or
            larger than 4K; too small for a legible caption; or no CJK font.
    """
    validate_wording(wording, allow_english=allow_english)
    if corner not in _CORNERS:
        raise ConfigurationError(
            f"corner must be top-left, top-right, bottom-left or bottom-right, got {corner!r}"
        )
    if not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_VIDEO_SECONDS:
        raise ConfigurationError(
            f"seconds must be above 0 and at most {MAX_VIDEO_SECONDS:g}, got {seconds!r}"
        )
    if not 0 < min_height_ratio < 0.5:
        raise ConfigurationError(
            f"min_height_ratio must be between 0 and 0.5, got {min_height_ratio!r}"
        )
    if not 1 <= min_text_px <= 1000:
        raise ConfigurationError(
            f"min_text_px must be from 1 to 1000, got {min_text_px!r}"
        )
    if not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ConfigurationError(f"crf must be an int from 0 to 51, got {crf!r}")
    presets = (
        "ultrafast",
        "superfast",
        "veryfast",
        "faster",
        "fast",
        "medium",
        "slow",
        "slower",
        "veryslow",
    )
    if preset not in presets:
        raise ConfigurationError(
            f"preset must be one of {', '.join(presets)}, got {preset!r}"
        )
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise LabelError(f"expected MP4 bytes, got {type(data).__name__}")
    if len(data) > _MAX_INPUT_BYTES:
        raise LabelError(
            f"the video is {len(data)} bytes; at most {_MAX_INPUT_BYTES} are accepted"
        )
    av, np = _modules()
    try:
        return _caption(
            av,
            np,
            bytes(data),
            wording,
            float(seconds),
            corner,
            min_height_ratio,
            min_text_px,
            crf,
            preset,
        )
    except (LabelError, ConfigurationError):
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LabelError(f"cannot caption the video: {message}") from exc


def _caption(
    av: Any,
    np: Any,
    data: bytes,
    wording: str,
    seconds: float,
    corner: str,
    ratio: float,
    min_text_px: int,
    crf: int,
    preset: str,
) -> bytes:
    try:
        source = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as exc:
        raise LabelError(
            f"not a readable MP4 video: {str(exc).splitlines()[0]}"
        ) from exc
    with source:
        if _MP4_DEMUXER not in source.format.name.split(","):
            raise LabelError(
                f"cannot caption {source.format.name} files: only MP4 (H.264)"
            )
        if not source.streams.video:
            raise LabelError("the MP4 has no video stream")
        video_in = source.streams.video[0]
        codec = video_in.codec_context.name
        if codec not in _VIDEO_CODECS:
            raise LabelError(f"cannot caption {codec} video: only H.264")
        width, height = video_in.codec_context.width, video_in.codec_context.height
        _check_size(width, height)
        if width % 2 or height % 2:
            raise LabelError(
                f"cannot caption a {width}x{height} video: width and height must be even"
            )
        duration = _declared_duration(source, video_in)
        if duration is not None and duration > MAX_VIDEO_SECONDS + 0.5:
            raise LabelError(
                f"the video lasts {duration:.1f} s; at most {MAX_VIDEO_SECONDS:g} s are accepted"
            )
        rate = video_in.average_rate or video_in.guessed_rate or video_in.base_rate
        if not rate or rate <= 0 or rate > _MAX_FPS:
            raise LabelError(f"unsupported frame rate {rate!r}")
        time_base = video_in.time_base

        overlay, x0, y0, _ = _overlay(
            wording, width, height, corner, ratio, min_text_px
        )
        blender = _Blender(np, overlay, x0, y0)

        # faststart rewrites the file to move the index to the front, so it needs a real file.
        with tempfile.TemporaryDirectory(prefix="aiobligations-video-") as scratch:
            target = os.path.join(scratch, "captioned.mp4")
            with av.open(
                target, mode="w", format="mp4", options={"movflags": "+faststart"}
            ) as sink:
                _transcode(
                    av,
                    np,
                    source,
                    sink,
                    seconds,
                    blender,
                    width,
                    height,
                    rate,
                    time_base,
                    crf,
                    preset,
                )
            with open(target, "rb") as handle:
                return handle.read()


def _transcode(
    av: Any,
    np: Any,
    source: Any,
    sink: Any,
    seconds: float,
    blender: _Blender,
    width: int,
    height: int,
    rate: Any,
    time_base: Any,
    crf: int,
    preset: str,
) -> None:
    video_in = source.streams.video[0]
    video_out = sink.add_stream("libx264", rate=rate)
    video_out.width, video_out.height = width, height
    video_out.pix_fmt = "yuv420p"
    video_out.time_base = time_base
    video_out.codec_context.time_base = time_base
    video_out.options = {"crf": str(crf), "preset": preset}
    audio = {}
    for stream in source.streams.audio:
        audio[stream.index] = sink.add_stream_from_template(stream)
    wanted = [video_in, *source.streams.audio]

    origin = None
    last_pts = None
    frames = 0
    limit = int(MAX_VIDEO_SECONDS * float(rate)) + 2
    step = max(1, round(1 / (float(rate) * float(time_base))))
    for packet in source.demux(wanted):
        if packet.stream.index in audio:
            if packet.dts is None:  # The demuxer's flush packet.
                continue
            packet.stream = audio[packet.stream.index]
            sink.mux(packet)
            continue
        for frame in packet.decode():
            pts = (
                frame.pts
                if frame.pts is not None
                else (last_pts + step if last_pts is not None else 0)
            )
            if origin is None:
                origin = pts
            frames += 1
            elapsed = float((pts - origin) * time_base)
            if frames > limit or elapsed > MAX_VIDEO_SECONDS + 0.5:
                raise LabelError(
                    f"the video lasts over {MAX_VIDEO_SECONDS:g} s; it is refused"
                )
            if (
                frame.width != width
                or frame.height != height
                or frame.format.name != "yuv420p"
            ):
                frame = frame.reformat(width=width, height=height, format="yuv420p")
            planes = frame.to_ndarray(format="yuv420p")
            if elapsed < seconds:
                blender.apply(planes, width, height)
            fresh = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            fresh.pts = pts
            fresh.time_base = time_base
            last_pts = pts
            sink.mux(video_out.encode(fresh))
    if origin is None:
        raise LabelError("the video stream holds no decodable frame")
    sink.mux(video_out.encode(None))


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise LabelError(f"the video stream declares no frame size ({width}x{height})")
    if (
        max(width, height) > MAX_VIDEO_SIDES[0]
        or min(width, height) > MAX_VIDEO_SIDES[1]
    ):
        raise LabelError(
            f"a {width}x{height} video is larger than 4K (4096x2160); it is refused"
        )


def _declared_duration(source: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if source.duration is not None:
        seconds: float = source.duration / 1_000_000  # av gives the container's duration in microseconds.
        return seconds
    return None
