"""Media files written by FFmpeg (through PyAV) for the label tests: real encoders, not ours."""

from __future__ import annotations

import io

import numpy as np


def encode_audio(fmt: str, codec: str) -> bytes:
    """Half a second of a 440 Hz tone, encoded by FFmpeg (PyAV) with ``codec`` in a ``fmt`` container."""
    import av

    rate = 44100
    pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate // 2) / rate)).astype(np.float32)[None, :]
    out = io.BytesIO()
    with av.open(out, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        size = stream.codec_context.frame_size or 1024
        for start in range(0, pcm.shape[1], size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, start : start + size]),
                                               format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()
