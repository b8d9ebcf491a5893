"""The audible label on compressed audio: MP3 and AAC (M4A) get the cue, re-encoded with their codec."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from test_labels_explicit import _segments

from aiobligations.errors import LabelError
from aiobligations.labels.audio import add_cue_encoded, has_video

RATE = 22050


def encode(fmt: str, codec: str, seconds: float = 1.0) -> bytes:
    """A one-second 440 Hz tone, encoded with ``codec`` in a ``fmt`` container."""
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=RATE, layout="mono")
        n = int(RATE * seconds)
        pcm = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / RATE)).astype(np.float32)[None, :]
        size = stream.codec_context.frame_size or 1152
        for start in range(0, n, size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start : start + size]),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def decode(data: bytes, fmt: str) -> tuple[np.ndarray, str, int]:
    with av.open(io.BytesIO(data), format=fmt) as container:
        stream = container.streams.audio[0]
        samples = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
        return samples[0], stream.codec_context.name, stream.rate


@pytest.mark.parametrize(("fmt", "codec"), [("mp3", "libmp3lame"), ("mp4", "aac")])
def test_the_cue_comes_first_then_the_content(fmt: str, codec: str) -> None:
    original = encode(fmt, codec)

    labelled = add_cue_encoded(original, fmt)

    samples, name, rate = decode(labelled, fmt)
    before, _, _ = decode(original, fmt)
    assert RATE == rate and name.startswith("mp3" if fmt == "mp3" else "aac")
    lead = 9 * 120 + 200  # The cue (nine 120 ms units) and the silence after it, in ms.
    assert abs((len(samples) - len(before)) / RATE * 1000 - lead) < 60
    cue = samples[: int(RATE * 1.2)]
    tones = [ms for on, ms in _segments(cue, RATE) if on][:4]
    assert [1, 3, 1, 1] == [round(ms / 120) for ms in tones], tones


def test_audio_only_mp4_has_no_video_and_garbage_is_refused() -> None:
    assert not has_video(encode("mp4", "aac"))
    with pytest.raises(LabelError):
        add_cue_encoded(b"not audio at all" * 10, "mp3")
    with pytest.raises(LabelError):
        has_video(b"\x00" * 64)
