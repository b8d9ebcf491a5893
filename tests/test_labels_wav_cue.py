"""WAV's audible cue (issue 12): every RIFF chunk survives it, and every common sample format gets it.

The inputs are written by FFmpeg (through PyAV) and read back by FFmpeg: LIST/INFO metadata, the
sample format and the decoded samples are checked with a reader that is not ours.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_labels_explicit import _segments

from aiobligations.cli import main
from aiobligations.errors import LabelError
from aiobligations.keys import init_project
from aiobligations.labels import explicit
from aiobligations.labels.formats import wav
from aiobligations.labels.labeller import Labeller

FIXTURE = Path(__file__).parent / "fixtures" / "wav_list_info.wav"
META = {"title": "AI tone", "artist": "test suite", "comment": "odd-length comment!"}


def ffmpeg_wav(codec: str, *, layout: str = "mono", rate: int = 8000, seconds: float = 0.25,
               meta: dict[str, str] | None = None, options: dict[str, str] | None = None) -> bytes:
    """A 440 Hz tone (amplitude 0.2) written by FFmpeg's WAV muxer, with ``meta`` as LIST/INFO."""
    out = io.BytesIO()
    with av.open(out, "w", format="wav", options=options or {}) as container:
        container.metadata.update(META if meta is None else meta)
        stream = container.add_stream(codec, rate=rate, layout=layout)
        n = int(rate * seconds)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        channels = len(av.AudioLayout(layout).channels)
        size = stream.codec_context.frame_size or 1024
        for start in range(0, n, size):
            piece = np.ascontiguousarray(np.tile(tone[start : start + size], (channels, 1)))
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Top-level RIFF chunks as (id, the whole chunk: header, data and pad byte)."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8, "the RIFF size is wrong"
    out, pos = [], 12
    while pos < len(data):
        size = struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        end = pos + 8 + size + size % 2
        out.append((data[pos : pos + 4], data[pos:end]))
        pos = end
    return out


def ffprobe(data: bytes) -> tuple[dict[str, str], str, int, int, np.ndarray]:
    """FFmpeg's view: metadata, codec, rate, channels and the samples as float64 (channels, n)."""
    with av.open(io.BytesIO(data), format="wav") as container:
        stream = container.streams.audio[0]
        layout, rate = stream.layout.name, stream.rate
        resampler = av.AudioResampler(format="dblp", layout=layout, rate=rate)
        pieces = [c.to_ndarray() for f in container.decode(stream) for c in resampler.resample(f)]
        samples = np.concatenate(pieces, axis=1)
        return dict(container.metadata), stream.codec_context.name, rate, stream.channels, samples


def cue_frames(rate: int) -> int:
    return round(rate * 0.12) * 9 + round(rate * 0.2)


def labeller() -> Labeller:
    return Labeller(producer="TestProvider", key=Ed25519PrivateKey.generate())


def assert_chunks_kept(before: bytes, after: bytes, *, frames: int | None = None,
                       moved: dict[bytes, bytes] | None = None) -> None:
    """Every chunk but data (and fact's count, if ``frames``) byte for byte, in order; one AIGC label last.

    ``moved`` gives the expected bytes of chunks whose positions the cue moves (``cue ``, ``smpl``, ``bext``).
    """
    old, new = chunks(before), chunks(after)
    assert [cid for cid, _ in old if cid != b"AIGC"] + [b"AIGC"] == [cid for cid, _ in new]
    for (cid, chunk), (_, labelled) in zip([c for c in old if c[0] != b"AIGC"], new, strict=False):
        if cid == b"fact" and frames is not None:
            assert chunk[:8] + struct.pack("<I", frames) + chunk[12:] == labelled
        elif moved and cid in moved:
            assert moved[cid] == labelled, cid
        elif cid != b"data":
            assert chunk == labelled, cid


SUPPORTED = [
    # (codec, layout, rate, sample width, extensible?) as FFmpeg writes them.
    ("pcm_u8", "mono", 8000, 1, False),
    ("pcm_s16le", "stereo", 16000, 2, False),
    ("pcm_s16le", "mono", 96000, 2, True),  # Above 48 kHz FFmpeg writes WAVE_FORMAT_EXTENSIBLE.
    ("pcm_s24le", "mono", 22050, 3, True),  # Issue 12: this file silently got no cue.
    ("pcm_s24le", "stereo", 48000, 3, True),
    ("pcm_s32le", "mono", 8000, 4, True),
    ("pcm_f32le", "mono", 8000, 4, False),
    ("pcm_f64le", "stereo", 8000, 8, False),
    ("pcm_f32le", "quad", 8000, 4, True),  # A multichannel layout makes it WAVE_FORMAT_EXTENSIBLE.
]


@pytest.mark.parametrize(("codec", "layout", "rate", "width", "extensible"), SUPPORTED)
def test_every_pcm_and_float_wav_gets_the_cue_and_keeps_its_chunks(
    codec: str, layout: str, rate: int, width: int, extensible: bool
) -> None:
    original = ffmpeg_wav(codec, layout=layout, rate=rate)
    fmt = wav.sample_format(original)
    assert (fmt.width, fmt.extensible, fmt.rate) == (width, extensible, rate)
    lab = labeller()

    result = lab.label(original, produce_id="wav-1", explicit=True, c2pa=False)

    assert {"kind": "rhythm cue", "pattern": "short long short short", "at": "start"} == result.evidence["explicit"]
    frames = len(wav.sample_data(result.data)) // fmt.block_align
    assert_chunks_kept(original, result.data, frames=frames)
    meta, name, out_rate, channels, samples = ffprobe(result.data)
    old_meta, old_name, _, old_channels, old_samples = ffprobe(original)
    assert (old_meta, old_name, rate, old_channels) == (meta, name, out_rate, channels)
    assert {"title": "AI tone", "artist": "test suite", "comment": "odd-length comment!"}.items() <= meta.items()
    lead = cue_frames(rate)
    assert samples.shape[1] == old_samples.shape[1] + lead
    assert np.array_equal(old_samples, samples[:, lead:]), "the original samples changed"
    cue = samples[:, : round(rate * 0.12) * 9]
    assert np.allclose(cue[0], cue[-1])
    assert abs(np.abs(cue).max() - 0.3) < 0.02, np.abs(cue).max()
    tones = [ms for on, ms in _segments(cue[0], rate) if on]
    assert [1, 3, 1, 1] == [round(ms / 120) for ms in tones], tones
    assert not samples[:, round(rate * 0.12) * 9 : lead].any(), "the pause after the cue is not silent"
    report = lab.inspect(result.data)
    (found,) = report["gb45438"]
    assert "wav-1" == found["fields"]["ProduceID"]
    assert found["reserved_code1"].startswith("verified")
    assert {"checked": True, "present": True, "at": "start", "unit_ms": 120} == report["explicit"]
    assert {"checked": True, "present": False, "at": "start"} == lab.inspect(original)["explicit"]


def test_the_fact_chunk_counts_the_cue_so_ffmpeg_reads_the_whole_file() -> None:
    original = ffmpeg_wav("pcm_f32le", seconds=0.5)
    assert b"fact" in [cid for cid, _ in chunks(original)]

    cued = explicit.add_audio_cue(original)

    (fact,) = [chunk for cid, chunk in chunks(cued) if cid == b"fact"]
    assert struct.unpack("<I", fact[8:12])[0] == 4000 + cue_frames(8000)
    with av.open(io.BytesIO(cued), format="wav") as container:
        stream = container.streams.audio[0]
        assert abs(float(stream.duration * stream.time_base) - (4000 + cue_frames(8000)) / 8000) < 0.01


def test_a_20_bit_sample_in_a_24_bit_container_gets_a_20_bit_cue() -> None:
    data = bytearray(ffmpeg_wav("pcm_s24le", rate=8000))
    fmt_at = data.index(b"fmt ") + 8
    assert 0xFFFE == struct.unpack("<H", data[fmt_at : fmt_at + 2])[0]
    data[fmt_at + 18 : fmt_at + 20] = struct.pack("<H", 20)  # wValidBitsPerSample

    cued = explicit.add_audio_cue(bytes(data))

    cue = np.frombuffer(wav.sample_data(cued)[: round(8000 * 0.12) * 9 * 3], np.uint8).reshape(-1, 3)
    assert not (cue[:, 0] & 0x0F).any(), "the 4 padding bits below the 20 valid bits must be zero"
    assert cue[:, 2].any()


@pytest.mark.parametrize(("codec", "reason"), [("pcm_alaw", "A-law"), ("pcm_mulaw", "mu-law"),
                                               ("adpcm_ms", "Microsoft ADPCM")])
def test_other_wavs_get_no_cue_and_the_evidence_says_why(codec: str, reason: str) -> None:
    original = ffmpeg_wav(codec)
    with pytest.raises(LabelError, match=reason):
        explicit.add_audio_cue(original)

    result = labeller().label(original, produce_id="wav-2", explicit=True, c2pa=False)

    skipped = result.evidence["explicit"]["skipped"]
    assert {"checked": False} == {"checked": labeller().inspect(result.data)["explicit"]["checked"]}
    assert skipped.startswith("no audio cue") and reason in skipped and "PCM 8/16/24/32-bit" in skipped
    assert wav.sample_data(original) == wav.sample_data(result.data)
    assert_chunks_kept(original, result.data)
    assert ffprobe(original)[0] == ffprobe(result.data)[0]
    assert 1 == len(wav.read_labels(result.data))


def riff_chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) % 2)


def test_bext_cue_smpl_and_unknown_chunks_survive_in_order_and_relabelling_keeps_one_label() -> None:
    """Chunks survive in order; the positions they hold move with the audio the cue pushed back."""
    base = ffmpeg_wav("pcm_s16le", meta={"title": "t", "encoded_by": "x", "description": "bext text",
                                         "time_reference": "800000"}, options={"write_bext": "1"})
    assert [b"fmt ", b"bext", b"LIST", b"data"] == [cid for cid, _ in chunks(base)]

    def cue(position: int) -> bytes:
        points = [(1, position, b"data", 0, 0, position), (2, 7, b"slnt", 0, 0, 7)]  # The second: not in data.
        return riff_chunk(b"cue ", struct.pack("<I", 2) + b"".join(struct.pack("<II4sIII", *p) for p in points))

    def smpl(first: int, last: int) -> bytes:
        return riff_chunk(b"smpl", struct.pack("<9I", 0, 0, 125000, 60, 0, 0, 0, 1, 0)
                          + struct.pack("<6I", 1, 0, first, last, 0, 0))

    odd = riff_chunk(b"zzzz", b"odd")
    parts = [chunk for _, chunk in chunks(base)]
    body = b"WAVE" + parts[0] + odd + parts[1] + parts[2] + cue(103) + parts[3] + smpl(10, 1500)
    original = b"RIFF" + struct.pack("<I", len(body)) + body
    lab = labeller()

    once = lab.label(original, produce_id="wav-3", explicit=True, c2pa=False).data
    twice = lab.label(once, produce_id="wav-4", explicit=False, c2pa=False).data

    lead = cue_frames(8000)
    assert [b"fmt ", b"zzzz", b"bext", b"LIST", b"cue ", b"data", b"smpl", b"AIGC"] == [c for c, _ in chunks(twice)]
    bext = bytearray(parts[1])
    struct.pack_into("<Q", bext, 8 + 338, 800000 - lead)
    assert_chunks_kept(original, once, moved={b"cue ": cue(103 + lead), b"smpl": smpl(10 + lead, 1500 + lead),
                                              b"bext": bytes(bext)})
    assert_chunks_kept(once, twice)
    assert wav.sample_data(once) == wav.sample_data(twice)
    assert 1 == len(wav.read_labels(twice))
    meta = ffprobe(twice)[0]
    assert ("t", "bext text", str(800000 - lead)) == (meta["title"], meta["comment"], meta["time_reference"])
    # The cue point still marks the same sample of the original audio.
    before, after = ffprobe(original)[4], ffprobe(once)[4]
    assert before[0, 103] == after[0, 103 + lead] != 0


def test_a_time_reference_shorter_than_the_cue_wraps_to_the_day_before() -> None:
    base = ffmpeg_wav("pcm_s16le", meta={"time_reference": "5"}, options={"write_bext": "1"})
    cued = labeller().label(base, produce_id="wav-5", explicit=True, c2pa=False).data
    assert str(86400 * 8000 + 5 - cue_frames(8000)) == ffprobe(cued)[0]["time_reference"]


def test_cli_labels_the_ffmpeg_fixture_keeping_list_info_and_inspect_finds_the_label(
    tmp_path: Path, monkeypatch
) -> None:
    init_project(tmp_path)  # explicit = true and C2PA: the cue, the implicit label and a manifest.
    monkeypatch.chdir(tmp_path)
    original = FIXTURE.read_bytes()
    (tmp_path / "in.wav").write_bytes(original)

    labelled = CliRunner().invoke(main, ["label", "in.wav", "out.wav"])
    inspected = CliRunner().invoke(main, ["inspect", "out.wav"])

    assert 0 == labelled.exit_code, labelled.output
    assert "skipped: explicit" not in labelled.stdout and "applied: explicit label — rhythm cue" in labelled.stdout
    out = (tmp_path / "out.wav").read_bytes()
    (list_info,) = [chunk for cid, chunk in chunks(original) if cid == b"LIST"]
    assert list_info in [chunk for cid, chunk in chunks(out)]
    ids = [cid for cid, _ in chunks(out)]
    assert ids.index(b"fmt ") < ids.index(b"LIST") < ids.index(b"data") and 1 == ids.count(b"AIGC")
    meta, _, rate, _, samples = ffprobe(out)
    assert ("cue fixture", "aiobligations tests") == (meta["title"], meta["artist"])
    tones = [ms for on, ms in _segments(samples[0, : round(rate * 0.12) * 9], rate) if on]
    assert [1, 3, 1, 1] == [round(ms / 120) for ms in tones], tones
    assert np.array_equal(ffprobe(original)[4], samples[:, cue_frames(rate) :])
    assert 0 == inspected.exit_code, inspected.output
    report = json.loads(inspected.stdout)
    assert 1 == len(report["gb45438"]) and report["c2pa"] is not None
    assert report["explicit"]["present"] is True
    assert json.loads(CliRunner().invoke(main, ["inspect", "in.wav"]).stdout)["explicit"]["present"] is False


@pytest.mark.parametrize(("unit_ms", "silence_ms", "at", "present"), [
    (60, 200, "start", True), (250, 100, "start", True), (120, 200, "end", False), (120, 0, "start", False),
])
def test_find_audio_cue_at_the_start_in_other_timings(unit_ms: int, silence_ms: int, at: str, present: bool) -> None:
    """Other units are found; a cue at the end, or one running straight into louder audio, is not."""
    original = ffmpeg_wav("pcm_s16le", seconds=3.0, meta={})

    found = explicit.find_audio_cue(explicit.add_audio_cue(original, unit_ms=unit_ms, silence_ms=silence_ms,
                                                           at=at))  # type: ignore[arg-type]

    assert present is found["present"], found
    assert not present or abs(found["unit_ms"] - unit_ms) <= 15, found


def test_cli_says_why_an_a_law_wav_gets_no_cue(tmp_path: Path, monkeypatch) -> None:
    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.wav").write_bytes(ffmpeg_wav("pcm_alaw"))

    result = CliRunner().invoke(main, ["label", "in.wav", "out.wav"])

    assert 0 == result.exit_code, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("skipped: explicit")]
    assert line.startswith("skipped: explicit label — no audio cue: ") and "A-law" in line, line
    assert 1 == len(wav.read_labels((tmp_path / "out.wav").read_bytes()))


def test_a_header_declaring_too_many_channels_or_a_huge_cue_gets_no_cue() -> None:
    data = bytearray(ffmpeg_wav("pcm_f64le", layout="stereo"))
    fmt_at = data.index(b"fmt ") + 8
    data[fmt_at + 2 : fmt_at + 14] = struct.pack("<HIIH", 65, 8000, 8000 * 520, 520)
    with pytest.raises(LabelError, match="65 channel"):
        explicit.add_audio_cue(bytes(data))
    data[fmt_at + 2 : fmt_at + 14] = struct.pack("<HIIH", 64, 768000, 768000 * 512, 512)
    with pytest.raises(LabelError, match="no audio cue: it would take"):
        explicit.add_audio_cue(bytes(data))
