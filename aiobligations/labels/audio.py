"""The audible explicit label for compressed audio (MP3, AAC in MP4/M4A): the rhythm cue, re-encoded.

WAV gets its cue without a codec (:func:`aiobligations.labels.explicit.add_audio_cue`); compressed
audio has to be decoded, given the cue, and encoded again with the same codec, sample rate and
channel layout (PyAV, from the ``media`` extra). Adding an explicit label is the one reason the
audio is re-encoded.
"""

from __future__ import annotations

import io
from typing import Any

from ..errors import LabelError
from .explicit import rhythm_cue

__all__ = ["MAX_AUDIO_SECONDS", "add_cue_encoded", "has_video"]

MAX_AUDIO_SECONDS = 3600
"""The longest audio given a cue; longer input is refused rather than decoded into memory."""

_CODECS = {"mp3": ("mp3", "libmp3lame"), "mp4": ("mp4", "aac")}


def _av() -> Any:
    try:
        import av
    except ImportError:  # pragma: no cover - without the media extra.
        raise LabelError("audio cues for compressed audio need PyAV: pip install 'aiobligations[media]'") from None
    return av


def has_video(data: bytes) -> bool:
    """Whether an MP4/MOV file has a video stream (else it is audio only, e.g. M4A).

    Raises:
        LabelError: the file cannot be opened.
    """
    av = _av()
    try:
        with av.open(io.BytesIO(data), format="mp4") as container:
            return bool(container.streams.video)
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise LabelError(f"the file cannot be read: {str(exc).splitlines()[0]}") from None


def add_cue_encoded(data: bytes, container: str, *, unit_ms: int = 120, frequency: float = 800.0,
                    amplitude: float = 0.3, silence_ms: int = 200) -> bytes:
    """Put the "short long short short" cue and a short silence before compressed audio.

    Args:
        data: An MP3 file (``container="mp3"``) or an MP4/M4A with an AAC stream (``"mp4"``).
        container: ``"mp3"`` or ``"mp4"``.
        unit_ms, frequency, amplitude: The cue, as :func:`aiobligations.labels.explicit.rhythm_cue`.
        silence_ms: The pause between the cue and the content.

    Returns:
        The file, re-encoded with the same codec, rate and channel layout.

    Raises:
        LabelError: the input has no audio, cannot be decoded, or is too long.
    """
    import numpy as np

    av = _av()
    if container not in _CODECS:
        raise LabelError(f"audio cues support mp3 and mp4 containers, not {container!r}")
    fmt, codec = _CODECS[container]
    try:
        with av.open(io.BytesIO(data), format=fmt) as source:
            if not source.streams.audio:
                raise LabelError("the file has no audio stream")
            stream = source.streams.audio[0]
            rate, layout = stream.rate, stream.layout.name
            if stream.duration is not None and stream.time_base is not None:
                if float(stream.duration * stream.time_base) > MAX_AUDIO_SECONDS:
                    raise LabelError(f"the audio is longer than {MAX_AUDIO_SECONDS} s")
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
            pieces = []
            total = 0
            for frame in source.decode(stream):
                for converted in resampler.resample(frame):
                    array = converted.to_ndarray()
                    pieces.append(array)
                    total += array.shape[1]
                    if total > MAX_AUDIO_SECONDS * rate:
                        raise LabelError(f"the audio is longer than {MAX_AUDIO_SECONDS} s")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise LabelError(f"the audio cannot be decoded: {str(exc).splitlines()[0]}") from None
    channels = pieces[0].shape[0] if pieces else len(av.AudioLayout(layout).channels)
    cue = rhythm_cue(rate, unit_ms=unit_ms, frequency=frequency, amplitude=amplitude).astype(np.float32)
    silence = np.zeros(int(rate * silence_ms / 1000), dtype=np.float32)
    lead = np.tile(np.concatenate([cue, silence]), (channels, 1))
    samples = np.concatenate([lead, *pieces], axis=1).astype(np.float32) if pieces else lead
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as target:
        encoder = target.add_stream(codec, rate=rate, layout=layout)
        size = encoder.codec_context.frame_size or 1152
        for start in range(0, samples.shape[1], size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start : start + size]),
                                               format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in encoder.encode(frame):
                target.mux(packet)
        for packet in encoder.encode(None):
            target.mux(packet)
    return out.getvalue()
