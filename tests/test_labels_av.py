"""GB 45438 implicit labels in WAV, MP3 and MP4 files, on files built here byte by byte."""

from __future__ import annotations

import io
import struct
import tracemalloc
import wave
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobligations.errors import LabelError
from aiobligations.labels.formats import mp3, mp4, wav

PAYLOAD = (
    '{"Label":"1","ContentProducer":"001191440300708461136T1XGW3","ProduceID":"p-1",'
    '"ReservedCode1":"","ContentPropagator":"001191440300708461136T1XGW3","PropagateID":"p-1",'
    '"ReservedCode2":""}'
)
OTHER = PAYLOAD.replace("p-1", "p-22")  # Different length, so sizes change on replacement.

HOSTILE = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def _label_or_error(module: object, data: bytes) -> None:
    """Write and read ``data``; anything but success or LabelError fails the test."""
    write: Callable[[bytes, str], bytes] = module.write_label  # type: ignore[attr-defined]
    read: Callable[[bytes], list[str]] = module.read_labels  # type: ignore[attr-defined]
    try:
        read(data)
    except LabelError:
        pass
    try:
        out = write(data, PAYLOAD)
    except LabelError:
        return
    assert [PAYLOAD] == read(out)


# ---------------------------------------------------------------------------------------------- WAV

PCM = bytes(range(256)) * 4 + b"\x01"  # An odd length would need a pad byte; frames keep it even.


def make_wav(frames: bytes = PCM[:1024]) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return out.getvalue()


def riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """An independent RIFF walker for the tests."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] + 8 == len(data)
    chunks, offset = [], 12
    while offset < len(data):
        cid, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        chunks.append((cid, data[offset + 8 : offset + 8 + size]))
        offset += 8 + size + size % 2
    assert offset == len(data)
    return chunks


def riff_chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def riff(*chunks: bytes) -> bytes:
    form = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(form)) + form


class TestWAV:
    def test_sniff(self) -> None:
        """A stdlib-written WAV is recognised; an MP3 is not."""
        assert wav.sniff(make_wav())
        assert not wav.sniff(b"ID3\x04\x00\x00\x00\x00\x00\x00")
        assert "audio/wav" in wav.MEDIA_TYPES

    def test_write_then_read_one_label(self) -> None:
        """The label is one AIGC chunk; the data chunk and the rest are byte-identical."""
        original = make_wav()
        labelled = wav.write_label(original, PAYLOAD)

        assert [PAYLOAD] == wav.read_labels(labelled)
        before, after = riff_chunks(original), riff_chunks(labelled)
        assert before == after[:-1]
        assert (b"AIGC", PAYLOAD.encode()) == after[-1]
        assert labelled.startswith(b"RIFF") and labelled[8 : len(original)] == original[8:]

    def test_relabel_keeps_one(self) -> None:
        """Labelling twice replaces the label, and odd payload lengths are padded."""
        odd = PAYLOAD if len(PAYLOAD.encode()) % 2 else PAYLOAD + " "
        assert len(odd.encode()) % 2 == 1
        once = wav.write_label(make_wav(), odd)
        twice = wav.write_label(once, OTHER)

        assert [odd] == wav.read_labels(once)
        assert [OTHER] == wav.read_labels(twice)
        assert [c for c in riff_chunks(once) if c[0] == b"data"] == [
            c for c in riff_chunks(twice) if c[0] == b"data"
        ]

    def test_label_in_list_info_is_read_and_replaced(self) -> None:
        """An AIGC subchunk in LIST/INFO counts, and writing leaves only the top-level one."""
        info = riff_chunk(
            b"LIST",
            b"INFO"
            + riff_chunk(b"INAM", b"title\x00")
            + riff_chunk(b"AIGC", OTHER.encode() + b"\x00"),
        )
        fmt = riff_chunks(make_wav())[0]
        data = riff(
            riff_chunk(*fmt),
            info,
            riff_chunk(b"data", PCM[:64]),
            riff_chunk(b"AIGC", PAYLOAD.encode()),
        )

        assert [OTHER, PAYLOAD] == wav.read_labels(data)
        out = wav.write_label(data, PAYLOAD)
        assert [PAYLOAD] == wav.read_labels(out)
        chunks = riff_chunks(out)
        assert (b"LIST", b"INFO" + riff_chunk(b"INAM", b"title\x00")) in chunks
        assert (b"data", PCM[:64]) in chunks

    def test_missing_final_pad_byte_is_tolerated(self) -> None:
        """A last odd-sized chunk without its pad byte still gets an aligned label."""
        fmt = riff_chunks(make_wav())[0]
        body = b"WAVE" + riff_chunk(*fmt) + b"data" + struct.pack("<I", 3) + b"abc"
        data = b"RIFF" + struct.pack("<I", len(body)) + body

        out = wav.write_label(data, PAYLOAD)
        assert [PAYLOAD] == wav.read_labels(out)
        assert (b"data", b"abc") in riff_chunks(out)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"RIFF",
            b"RF64\xff\xff\xff\xffWAVEds64",
            b"RIFX\x04\x00\x00\x00WAVE",
            riff(b"fmt \xff\xff\xff\xff"),
            b"RIFF\xff\xff\xff\xffWAVE",
            riff(b"data\x10\x00\x00\x00abc"),
            riff(b"dat"),
        ],
    )
    def test_hostile_inputs_raise_label_error(self, data: bytes) -> None:
        """Truncated, oversized, RF64/RIFX and stray-byte inputs raise LabelError."""
        with pytest.raises(LabelError):
            wav.read_labels(data)
        with pytest.raises(LabelError):
            wav.write_label(data, PAYLOAD)

    def test_undecodable_label_raises_label_error(self) -> None:
        """An AIGC chunk that is not UTF-8 cannot be read; writing replaces it."""
        data = riff(riff_chunk(b"AIGC", b"\xff\xfe"))
        with pytest.raises(LabelError):
            wav.read_labels(data)
        assert [PAYLOAD] == wav.read_labels(wav.write_label(data, PAYLOAD))

    def test_every_truncation_raises(self) -> None:
        """A WAV cut at any offset is refused."""
        data = wav.write_label(make_wav(PCM[:40]), PAYLOAD)
        for cut in range(len(data)):
            with pytest.raises(LabelError):
                wav.read_labels(data[:cut])
            with pytest.raises(LabelError):
                wav.write_label(data[:cut], PAYLOAD)

    def test_deep_list_nesting(self) -> None:
        """10,000 nested LIST chunks are opaque data, not recursion."""
        inner = b""
        for _ in range(10_000):
            inner = riff_chunk(b"LIST", b"adtl" + inner)
        _label_or_error(wav, riff(riff_chunk(*riff_chunks(make_wav())[0]), inner))

    def test_type_errors(self) -> None:
        """A str for data or bytes for payload is a TypeError."""
        with pytest.raises(TypeError):
            wav.write_label("RIFF", PAYLOAD)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            wav.write_label(make_wav(), PAYLOAD.encode())  # type: ignore[arg-type]

    @HOSTILE
    @given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
    def test_random_flips(self, flips: list[tuple[int, int]]) -> None:
        """Byte flips anywhere give a label or a LabelError, nothing else."""
        data = bytearray(wav.write_label(make_wav(PCM[:40]), PAYLOAD))
        for position, value in flips:
            data[position % len(data)] = value
        _label_or_error(wav, bytes(data))


# ---------------------------------------------------------------------------------------------- MP3


def mpeg_frame(fill: int) -> bytes:
    """One MPEG-1 Layer III frame, 128 kbit/s, 44.1 kHz, joint stereo: 417 bytes, silent side info."""
    header = b"\xff\xfb\x90\x64"
    return header + b"\x00" * 32 + bytes([fill]) * (417 - 36)


AUDIO = mpeg_frame(0) + mpeg_frame(1) + mpeg_frame(2)


def synchsafe(n: int) -> bytes:
    return bytes(((n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F))


def unsynchsafe(raw: bytes) -> int:
    return (raw[0] << 21) | (raw[1] << 14) | (raw[2] << 7) | raw[3]


def id3_frame(version: int, fid: bytes, body: bytes) -> bytes:
    size = synchsafe(len(body)) if version == 4 else struct.pack(">I", len(body))
    return fid + size + b"\x00\x00" + body


def id3_tag(version: int, frames: bytes, padding: int = 0, flags: int = 0) -> bytes:
    content = frames + b"\x00" * padding
    return b"ID3" + bytes((version, 0, flags)) + synchsafe(len(content)) + content


def v23_tag() -> bytes:
    return id3_tag(
        3,
        id3_frame(3, b"TIT2", b"\x00Title")
        + id3_frame(3, b"TXXX", b"\x01\xff\xfeO\x00t\x00h\x00\x00\x00\xff\xfev\x00")
        + id3_frame(3, b"TXXX", b"\x00AIGC\x00" + OTHER.encode()),
        padding=64,
    )


def v24_tag() -> bytes:
    return id3_tag(
        4,
        id3_frame(4, b"TIT2", b"\x03T\xc3\xadtulo")
        + id3_frame(4, b"TXXX", b"\x03aigc\x00lower-case is another key"),
        padding=16,
    )


class TestMP3:
    def test_sniff(self) -> None:
        """Both a bare frame and an ID3 tag are recognised; a WAV is not."""
        assert mp3.sniff(AUDIO)
        assert mp3.sniff(v24_tag() + AUDIO)
        assert not mp3.sniff(make_wav())
        assert "audio/mpeg" in mp3.MEDIA_TYPES

    def test_no_tag_gets_an_id3v24_tag(self) -> None:
        """A bare MPEG stream gets a new ID3v2.4 tag; the frames follow it unchanged."""
        out = mp3.write_label(AUDIO, PAYLOAD)

        assert out.startswith(b"ID3\x04\x00\x00") and out.endswith(AUDIO)
        tag_len = 10 + unsynchsafe(out[6:10])
        assert out[tag_len:] == AUDIO
        assert [PAYLOAD] == mp3.read_labels(out)
        assert b"TXXX" in out and b"\x03AIGC\x00" + PAYLOAD.encode() in out
        assert [] == mp3.read_labels(AUDIO)

    @pytest.mark.parametrize("make_tag", [v23_tag, v24_tag], ids=["v2.3", "v2.4"])
    def test_existing_tag_is_kept(self, make_tag: Callable[[], bytes]) -> None:
        """Other frames stay byte-identical, the audio too, and relabelling keeps one label."""
        tag = make_tag()
        original = tag + AUDIO
        once = mp3.write_label(original, PAYLOAD)
        twice = mp3.write_label(once, OTHER)

        assert [PAYLOAD] == mp3.read_labels(once)
        assert [OTHER] == mp3.read_labels(twice)
        assert once.endswith(AUDIO) and twice.endswith(AUDIO)
        assert once[3] == tag[3]  # The tag keeps its version.
        assert (
            id3_frame(tag[3], b"TIT2", b"\x00Title" if tag[3] == 3 else b"\x03T\xc3\xadtulo")
            in once
        )
        if tag[3] == 4:
            assert b"\x03aigc\x00lower-case is another key" in twice
        else:
            assert b"\x01\xff\xfeA\x00I\x00G\x00C\x00\x00\x00\xff\xfe" in once

    def test_v23_label_was_read_before_write(self) -> None:
        """A Latin-1 TXXX:AIGC in a v2.3 tag is read."""
        assert [OTHER] == mp3.read_labels(v23_tag() + AUDIO)

    def test_footer_is_rewritten(self) -> None:
        """A v2.4 tag with a footer keeps a matching footer."""
        content = id3_frame(4, b"TIT2", b"\x03x")
        tag = b"ID3\x04\x00\x10" + synchsafe(len(content)) + content
        tag += b"3DI" + tag[3:10]
        out = mp3.write_label(tag + AUDIO, PAYLOAD)

        assert [PAYLOAD] == mp3.read_labels(out)
        size = unsynchsafe(out[6:10])
        assert b"3DI" + out[3:10] == out[10 + size : 20 + size]
        assert out[20 + size :] == AUDIO

    @pytest.mark.parametrize("encoding", [1, 3], ids=["utf-16", "utf-8"])
    def test_a_huge_frame_is_read_and_relabelled_without_copies(self, encoding: int) -> None:
        """A 40 MB TXXX frame once cost 209 MB to read; now reading copies nothing, labelling one output."""
        text = "d" * 20_000_000
        body = bytes([encoding]) + (text.encode("utf-16") + b"\x00\x00" + "v".encode("utf-16")[2:]
                                    if encoding == 1 else text.encode() + b"\x00v")
        data = id3_tag(4, id3_frame(4, b"TXXX", body)) + AUDIO
        tracemalloc.start()
        try:
            assert [] == mp3.read_labels(data)
            mp3.content_digest(data)
            read_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            out = mp3.write_label(data, PAYLOAD)
            write_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert read_peak < 1_000_000, read_peak
        assert write_peak < len(out) + 1_000_000, (write_peak, len(out))
        assert [PAYLOAD] == mp3.read_labels(out) and out.endswith(AUDIO)

    def test_an_implausibly_large_aigc_label_is_refused_not_decoded(self) -> None:
        data = id3_tag(4, id3_frame(4, b"TXXX", b"\x03AIGC\x00" + b"x" * (2 << 20))) + AUDIO
        with pytest.raises(LabelError, match="past the 1048576-byte limit"):
            mp3.read_labels(data)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"ID3",
            b"not an mp3 at all",
            b"ID3\x02\x00\x00\x00\x00\x00\x00" + AUDIO,
            id3_tag(4, b"", flags=0x80) + AUDIO,
            id3_tag(3, b"\x00\x00\x00\x06" + b"\x00" * 6, flags=0x40) + AUDIO,
            b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + AUDIO,
            b"ID3\x04\x00\x00\x80\x00\x00\x00" + AUDIO,
            id3_tag(3, b"TXXX\xff\xff\xff\xff\x00\x00") + AUDIO,
            id3_tag(4, b"TXXX\x7f\x7f\x7f\x7f\x00\x00") + AUDIO,
            id3_tag(4, id3_frame(4, b"TX!X", b"\x03a\x00b")) + AUDIO,
            id3_tag(4, id3_frame(4, b"TXXX", b"\x03AIGC")) + AUDIO,
            id3_tag(4, id3_frame(4, b"TXXX", b"\x07AIGC\x00x")) + AUDIO,
            id3_tag(4, id3_frame(4, b"TXXX", b"")) + AUDIO,
            id3_tag(4, id3_frame(4, b"TXXX", b"\x03AIGC\x00\xff")) + AUDIO,
            id3_tag(4, b"TXXX" + synchsafe(3) + b"\x00\x08" + b"\x03a\x00") + AUDIO,
            id3_tag(4, id3_frame(4, b"TIT2", b"\x03x") + b"\x00\x00\x01") + AUDIO,
        ],
    )
    def test_hostile_inputs_raise_label_error(self, data: bytes) -> None:
        """Malformed, oversized, unsynchronised or unsupported tags raise LabelError."""
        with pytest.raises(LabelError):
            mp3.read_labels(data)
        with pytest.raises(LabelError):
            mp3.write_label(data, PAYLOAD)

    def test_every_truncation_of_the_tag_raises(self) -> None:
        """A file cut inside its tag is refused; cut in the audio, it is labelled."""
        data = v24_tag() + AUDIO
        tag_len = len(v24_tag())
        for cut in range(len(data)):
            if cut < tag_len:
                with pytest.raises(LabelError):
                    mp3.read_labels(data[:cut])
                with pytest.raises(LabelError):
                    mp3.write_label(data[:cut], PAYLOAD)
            else:
                assert mp3.write_label(data[:cut], PAYLOAD).endswith(data[tag_len:cut])

    @HOSTILE
    @given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
    def test_random_flips(self, flips: list[tuple[int, int]]) -> None:
        """Byte flips in tag or audio give a label or a LabelError, nothing else."""
        data = bytearray(mp3.write_label(v23_tag() + AUDIO[:40], PAYLOAD))
        for position, value in flips:
            data[position % len(data)] = value
        _label_or_error(mp3, bytes(data))


# ---------------------------------------------------------------------------------------------- MP4

SAMPLES = [b"SAMPLE-zero-", b"SAMPLE-one--", b"SAMPLE-two--"]


def box(box_type: bytes, *content: bytes) -> bytes:
    body = b"".join(content)
    return struct.pack(">I4s", 8 + len(body), box_type) + body


def full(box_type: bytes, *content: bytes, flags: int = 0) -> bytes:
    return box(box_type, struct.pack(">I", flags), *content)


MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def make_moov(offsets: list[int], *, co64: bool = False, udta: bytes = b"") -> bytes:
    sizes = struct.pack(">III", 0, len(SAMPLES), len(SAMPLES)) + b"".join(
        struct.pack(">I", len(s)) for s in SAMPLES
    )
    if co64:
        chunk_offsets = full(
            b"co64", struct.pack(">I", len(offsets)), *(struct.pack(">Q", o) for o in offsets)
        )
    else:
        chunk_offsets = full(
            b"stco", struct.pack(">I", len(offsets)), *(struct.pack(">I", o) for o in offsets)
        )
    entry = box(
        b"mp4a",
        b"\x00" * 6,
        struct.pack(">H", 1),
        b"\x00" * 8,
        struct.pack(">HHHHI", 2, 16, 0, 0, 44100 << 16),
        box(b"btrt", struct.pack(">III", 0, 128000, 128000)),
    )
    stbl = box(
        b"stbl",
        full(b"stsd", struct.pack(">I", 1), entry),
        full(b"stts", struct.pack(">III", 1, len(SAMPLES), 1024)),
        full(b"stsc", struct.pack(">IIII", 1, 1, 1, 1)),
        box(b"stsz", sizes),
        chunk_offsets,
    )
    minf = box(
        b"minf",
        full(b"smhd", b"\x00" * 4),
        box(b"dinf", full(b"dref", struct.pack(">I", 1), full(b"url ", flags=1))),
        stbl,
    )
    mdia = box(
        b"mdia",
        full(b"mdhd", struct.pack(">IIII", 0, 0, 44100, 3072), b"\x55\xc4\x00\x00"),
        full(b"hdlr", b"\x00" * 4, b"soun", b"\x00" * 12, b"SoundHandler\x00"),
        minf,
    )
    tkhd = full(
        b"tkhd",
        struct.pack(">IIIII", 0, 0, 1, 0, 70),
        b"\x00" * 8,
        struct.pack(">HHHH", 0, 0, 0x100, 0),
        MATRIX,
        b"\x00" * 8,
        flags=3,
    )
    mvhd = full(
        b"mvhd",
        struct.pack(">IIII", 0, 0, 1000, 70),
        struct.pack(">IH", 0x10000, 0x100),
        b"\x00" * 10,
        MATRIX,
        b"\x00" * 24,
        struct.pack(">I", 2),
    )
    return box(b"moov", mvhd, box(b"trak", tkhd, mdia), udta)


FTYP = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2mp41")
MDAT = box(b"mdat", *SAMPLES)


def sample_offsets(base: int) -> list[int]:
    offsets, at = [], base
    for sample in SAMPLES:
        offsets.append(at)
        at += len(sample)
    return offsets


def make_mp4(layout: str = "moov-first", *, co64: bool = False, udta: bytes = b"") -> bytes:
    moov_len = len(make_moov([0, 0, 0], co64=co64, udta=udta))
    if layout == "moov-first":
        base = len(FTYP) + moov_len + 8
        return FTYP + make_moov(sample_offsets(base), co64=co64, udta=udta) + MDAT
    base = len(FTYP) + 8
    return FTYP + MDAT + make_moov(sample_offsets(base), co64=co64, udta=udta)


def walk(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """An independent box walker: type -> [(content start, end)]."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    while start < end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        found.setdefault(kind, []).append((start + header, start + size))
        start += size
    assert start == end
    return found


def find(data: bytes, path: list[bytes]) -> tuple[int, int]:
    start, end = 0, len(data)
    for kind in path:
        start, end = walk(data, start, end)[kind][0]
    return start, end


def read_samples(data: bytes) -> list[bytes]:
    """The bytes the chunk offsets address, one sample per chunk."""
    stbl = find(data, [b"moov", b"trak", b"mdia", b"minf", b"stbl"])
    tables = walk(data, *stbl)
    kind = b"stco" if b"stco" in tables else b"co64"
    start, _ = tables[kind][0]
    count = struct.unpack(">I", data[start + 4 : start + 8])[0]
    width, fmt = (4, ">I") if kind == b"stco" else (8, ">Q")
    offsets = [
        struct.unpack(fmt, data[start + 8 + i * width : start + 8 + (i + 1) * width])[0]
        for i in range(count)
    ]
    return [data[o : o + len(s)] for o, s in zip(offsets, SAMPLES)]


def mdta_meta(
    keys: list[bytes], items: list[tuple[int, bytes]], *, quicktime: bool = False
) -> bytes:
    entries = b"".join(struct.pack(">I4s", 8 + len(k), b"mdta") + k for k in keys)
    ilst = box(
        b"ilst",
        *(box(struct.pack(">I", i), box(b"data", struct.pack(">II", 1, 0), v)) for i, v in items),
    )
    parts = [
        full(b"hdlr", b"\x00" * 4, b"mdta", b"\x00" * 13),
        full(b"keys", struct.pack(">I", len(keys)), entries),
        ilst,
    ]
    return box(b"meta", *parts) if quicktime else full(b"meta", *parts)


class TestMP4:
    def test_sniff(self) -> None:
        """ftyp-led files are recognised; a WAV is not."""
        assert mp4.sniff(make_mp4())
        assert not mp4.sniff(make_wav())
        assert "video/mp4" in mp4.MEDIA_TYPES

    def test_builder_is_consistent(self) -> None:
        """The test files' own offsets address the samples."""
        for layout in ("moov-first", "moov-last"):
            assert SAMPLES == read_samples(make_mp4(layout))
            assert [] == mp4.read_labels(make_mp4(layout))

    @pytest.mark.parametrize("co64", [False, True], ids=["stco", "co64"])
    @pytest.mark.parametrize("layout", ["moov-first", "moov-last"])
    def test_write_then_read(self, layout: str, co64: bool) -> None:
        """One label after one or two writes; offsets still address the same samples."""
        original = make_mp4(layout, co64=co64)
        once = mp4.write_label(original, PAYLOAD)
        twice = mp4.write_label(once, OTHER)
        thrice = mp4.write_label(twice, OTHER)

        assert [PAYLOAD] == mp4.read_labels(once)
        assert [OTHER] == mp4.read_labels(twice)
        assert thrice == twice
        for labelled in (once, twice):
            assert SAMPLES == read_samples(labelled)
            assert labelled.startswith(FTYP)
            mdat = find(labelled, [b"mdat"])
            assert b"".join(SAMPLES) == labelled[mdat[0] : mdat[1]]
        if layout == "moov-last":
            assert once[: len(FTYP) + len(MDAT)] == original[: len(FTYP) + len(MDAT)]
            stco = find(original, [b"moov", b"trak", b"mdia", b"minf", b"stbl"])
            new_stco = find(once, [b"moov", b"trak", b"mdia", b"minf", b"stbl"])
            assert original[stco[0] : stco[1]] == once[new_stco[0] : new_stco[1]]

    def test_structure_matches_ffmpeg(self) -> None:
        """udta/meta is a full box with hdlr mdta, keys 'mdta' 'AIGC' and ilst item 1 with data type 1."""
        out = mp4.write_label(make_mp4(), PAYLOAD)
        start, end = find(out, [b"moov", b"udta", b"meta"])
        assert b"\x00\x00\x00\x00" == out[start : start + 4]
        children = walk(out, start + 4, end)
        hdlr = children[b"hdlr"][0]
        assert b"mdta" == out[hdlr[0] + 8 : hdlr[0] + 12]
        keys = children[b"keys"][0]
        assert (
            struct.pack(">II", 0, 1) + struct.pack(">I4s", 12, b"mdta") + b"AIGC"
            == out[keys[0] : keys[1]]
        )
        ilst = children[b"ilst"][0]
        item = walk(out, *ilst)[struct.pack(">I", 1)][0]
        data = walk(out, *item)[b"data"][0]
        assert struct.pack(">II", 1, 0) + PAYLOAD.encode() == out[data[0] : data[1]]

    @pytest.mark.parametrize("quicktime", [False, True], ids=["iso-meta", "quicktime-meta"])
    def test_existing_keys_are_kept_and_renumbered(self, quicktime: bool) -> None:
        """Other keys survive; AIGC is replaced; an item after it is renumbered."""
        meta = mdta_meta(
            [b"com.apple.quicktime.title", b"AIGC", b"encoder"],
            [(1, b"Title"), (2, OTHER.encode()), (3, b"Lavf")],
            quicktime=quicktime,
        )
        original = make_mp4(udta=box(b"udta", box(b"\xa9too", b"x"), meta))
        assert [OTHER] == mp4.read_labels(original)
        out = mp4.write_label(original, PAYLOAD)

        assert [PAYLOAD] == mp4.read_labels(out)
        assert SAMPLES == read_samples(out)
        start, end = find(out, [b"moov", b"udta", b"meta"])
        assert quicktime == (out[start : start + 4] != b"\x00\x00\x00\x00")
        children = walk(out, start + (0 if quicktime else 4), end)
        items = walk(out, *children[b"ilst"][0])
        assert sorted(items) == [struct.pack(">I", i) for i in (1, 2, 3)]
        encoder_item = items[struct.pack(">I", 2)][0]
        assert out[encoder_item[0] : encoder_item[1]].endswith(b"Lavf")
        assert box(b"\xa9too", b"x") in out

    def test_itunes_meta_gets_a_freeform_item(self) -> None:
        """An iTunes udta/meta (handler mdir) takes the label as a '----' item; no second meta."""
        song = box(b"\xa9nam", box(b"data", struct.pack(">II", 1, 0), b"Song"))
        hdlr = full(b"hdlr", b"\x00" * 4, b"mdir", b"appl", b"\x00" * 9)
        itunes = full(b"meta", hdlr, box(b"ilst", song))
        for layout in ("moov-first", "moov-last"):
            original = make_mp4(layout, udta=box(b"udta", itunes))
            once = mp4.write_label(original, PAYLOAD)
            twice = mp4.write_label(once, OTHER)

            assert [PAYLOAD] == mp4.read_labels(once)
            assert [OTHER] == mp4.read_labels(twice)
            assert mp4.write_label(twice, OTHER) == twice
            assert SAMPLES == read_samples(twice)
            udta = find(twice, [b"moov", b"udta"])
            assert [b"meta"] == list(walk(twice, *udta))
            meta = walk(twice, *udta)[b"meta"][0]
            children = walk(twice, meta[0] + 4, meta[1])
            assert [b"hdlr", b"ilst"] == list(children)
            assert hdlr == twice[children[b"hdlr"][0][0] - 8 : children[b"hdlr"][0][1]]
            items = walk(twice, *children[b"ilst"][0])
            assert [b"\xa9nam", b"----"] == list(items)
            assert [1] == [len(v) for v in items.values()][1:]
            freeform = items[b"----"][0]
            assert (
                full(b"mean", b"com.apple.iTunes")
                + full(b"name", b"AIGC")
                + box(b"data", struct.pack(">II", 1, 0), OTHER.encode())
                == twice[freeform[0] : freeform[1]]
            )
            assert song in twice

    @pytest.mark.parametrize("quicktime", [False, True], ids=["iso-meta", "quicktime-meta"])
    def test_itunes_meta_without_ilst_gets_one(self, quicktime: bool) -> None:
        """An mdir meta holding only its hdlr gets an ilst with the label."""
        hdlr = full(b"hdlr", b"\x00" * 4, b"mdir", b"appl", b"\x00" * 9)
        meta = box(b"meta", hdlr) if quicktime else full(b"meta", hdlr)
        out = mp4.write_label(make_mp4("moov-last", udta=box(b"udta", meta)), PAYLOAD)

        assert [PAYLOAD] == mp4.read_labels(out)
        assert SAMPLES == read_samples(out)
        start, end = find(out, [b"moov", b"udta", b"meta"])
        children = walk(out, start + (0 if quicktime else 4), end)
        assert [b"hdlr", b"ilst"] == list(children)
        assert [b"----"] == list(walk(out, *children[b"ilst"][0]))

    def test_second_meta_from_earlier_versions_is_merged(self) -> None:
        """mdir meta plus an AIGC-only mdta meta (what earlier versions wrote) becomes one meta."""
        song = box(b"\xa9nam", box(b"data", struct.pack(">II", 1, 0), b"Song"))
        itunes = full(b"meta", full(b"hdlr", b"\x00" * 4, b"mdir", b"appl", b"\x00" * 9),
                      box(b"ilst", song))
        original = make_mp4(udta=box(b"udta", itunes, mdta_meta([b"AIGC"], [(1, OTHER.encode())])))
        assert [OTHER] == mp4.read_labels(original)
        out = mp4.write_label(original, PAYLOAD)

        assert [PAYLOAD] == mp4.read_labels(out)
        assert SAMPLES == read_samples(out)
        udta = walk(out, *find(out, [b"moov", b"udta"]))
        assert 1 == len(udta[b"meta"])
        assert song in out and b"mdta" not in out[udta[b"meta"][0][0] : udta[b"meta"][0][1]]

    def test_freeform_aigc_with_another_mean_is_replaced(self) -> None:
        """A '----' AIGC item under another mean is read, and replaced rather than duplicated."""
        other = box(b"----", full(b"mean", b"org.example"), full(b"name", b"AIGC"),
                    box(b"data", struct.pack(">II", 1, 0), OTHER.encode()))
        keep = box(b"----", full(b"mean", b"com.apple.iTunes"), full(b"name", b"AIGC-note"),
                   box(b"data", struct.pack(">II", 1, 0), b"kept"))
        itunes = full(b"meta", full(b"hdlr", b"\x00" * 4, b"mdir", b"appl", b"\x00" * 9),
                      box(b"ilst", other, keep))
        original = make_mp4(udta=box(b"udta", itunes))
        assert [OTHER] == mp4.read_labels(original)
        out = mp4.write_label(original, PAYLOAD)
        assert [PAYLOAD] == mp4.read_labels(out)
        assert keep in out and other not in out

    def test_itunes_meta_in_a_terminated_quicktime_udta(self) -> None:
        """The freeform item goes into the mdir meta; QuickTime's zero terminator stays last."""
        itunes = box(b"meta", full(b"hdlr", b"\x00" * 4, b"mdir", b"appl", b"\x00" * 9), box(b"ilst"))
        udta = box(b"udta", box(b"\xa9day", b"2026"), itunes, b"\x00\x00\x00\x00")
        out = mp4.write_label(make_mp4("moov-last", udta=udta), PAYLOAD)

        assert [PAYLOAD] == mp4.read_labels(out)
        start, end = find(out, [b"moov", b"udta"])
        assert out[start:end].startswith(box(b"\xa9day", b"2026"))
        assert out[start:end].endswith(b"\x00\x00\x00\x00")
        assert 1 == len(walk(out, start, end - 4)[b"meta"])
        assert SAMPLES == read_samples(out)

    def test_meta_with_another_handler_is_left_alone(self) -> None:
        """A udta/meta whose handler is neither mdta nor mdir (ID32) stays; an mdta meta is added."""
        id32 = full(b"meta", full(b"hdlr", b"\x00" * 4, b"ID32", b"\x00" * 13), box(b"ID32", b"x"))
        out = mp4.write_label(make_mp4(udta=box(b"udta", id32)), PAYLOAD)
        assert id32 in out
        assert [PAYLOAD] == mp4.read_labels(out)
        assert 2 == len(walk(out, *find(out, [b"moov", b"udta"]))[b"meta"])

    def test_large_sizes_and_size_zero(self) -> None:
        """A 64-bit mdat size and a final moov of size 0 (to end of file) are handled."""
        large_mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + len(b"".join(SAMPLES))) + b"".join(
            SAMPLES
        )
        moov = make_moov(sample_offsets(len(FTYP) + 16))
        data = FTYP + large_mdat + b"\x00\x00\x00\x00" + moov[4:]
        out = mp4.write_label(data, PAYLOAD)
        assert [PAYLOAD] == mp4.read_labels(out)
        assert SAMPLES == read_samples(out)

        moov = make_moov([0, 0, 0])
        data = FTYP + make_moov(sample_offsets(len(FTYP) + len(moov) + 16)) + large_mdat
        out = mp4.write_label(data, PAYLOAD)
        assert SAMPLES == read_samples(out)

    def test_quicktime_udta_terminator_stays_last(self) -> None:
        """A udta ending in QuickTime's 32-bit zero terminator gets the meta before it."""
        udta = box(b"udta", box(b"\xa9day", b"2026"), b"\x00\x00\x00\x00")
        out = mp4.write_label(make_mp4(udta=udta), PAYLOAD)

        assert [PAYLOAD] == mp4.read_labels(out)
        start, end = find(out, [b"moov", b"udta"])
        assert out[start:end].startswith(box(b"\xa9day", b"2026"))
        assert out[start:end].endswith(b"\x00\x00\x00\x00")
        assert SAMPLES == read_samples(out)

    def test_nested_size_zero_is_refused(self) -> None:
        """A nested box of size 0 would swallow the added udta: refused."""
        moov = make_moov([0, 0, 0])
        data = FTYP + moov[:8] + b"\x00\x00\x00\x00" + moov[12:] + MDAT
        with pytest.raises(LabelError, match="size 0"):
            mp4.write_label(data, PAYLOAD)

    def test_moov_of_size_zero_swallowing_mdat_is_refused(self) -> None:
        """A top-level moov of size 0 followed by mdat holds the samples: no fix can be right."""
        data = make_mp4()
        moov_at = len(FTYP)
        data = data[:moov_at] + b"\x00\x00\x00\x00" + data[moov_at + 4 :]
        with pytest.raises(LabelError, match="inside the moov"):
            mp4.write_label(data, PAYLOAD)

    def test_fragmented_file_is_refused(self) -> None:
        """A moof after a growing moov would need tfhd/tfra fixes: refused."""
        with pytest.raises(LabelError, match="fragmented"):
            mp4.write_label(make_mp4() + box(b"moof", box(b"mfhd", b"\x00" * 8)), PAYLOAD)

    def test_stco_overflow_is_refused(self) -> None:
        """An offset that would pass 2**32 - 1 is a LabelError, not a wrapped offset."""
        moov = make_moov([0xFFFFFFF0, 0xFFFFFFF8, 0xFFFFFFFF])
        with pytest.raises(LabelError, match="overflow"):
            mp4.write_label(FTYP + moov + MDAT, PAYLOAD)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x00\x00\x00\x08ftyp",
            FTYP,
            FTYP + struct.pack(">I4s", 0xFFFFFFFF, b"moov"),
            FTYP + struct.pack(">I4sQ", 1, b"moov", 2**63),
            FTYP + struct.pack(">I4s", 4, b"moov"),
            FTYP + struct.pack(">I4sQ", 1, b"moov", 8),
            FTYP + box(b"moov") + box(b"moov"),
            FTYP + box(b"moov", box(b"udta", struct.pack(">I4s", 0xFFFFFFFF, b"meta"))),
            FTYP + box(b"moov", box(b"udta", full(b"meta", full(b"hdlr", b"\x00")))),
            FTYP + box(b"moov", box(b"udta", mdta_meta([b"AIGC"], [(2, b"x")]))),
            FTYP
            + box(
                b"moov",
                box(
                    b"udta",
                    full(
                        b"meta",
                        full(b"hdlr", b"\x00" * 4, b"mdta"),
                        full(b"keys", struct.pack(">I", 0xFFFFFFFF)),
                    ),
                ),
            ),
            FTYP
            + box(
                b"moov",
                box(
                    b"udta",
                    full(
                        b"meta",
                        full(b"hdlr", b"\x00" * 4, b"mdta"),
                        full(b"keys", struct.pack(">II4s", 1, 0xFFFFFFFF, b"mdta")),
                    ),
                ),
            ),
            b"junk" * 10,
        ],
    )
    def test_hostile_inputs_raise_label_error(self, data: bytes) -> None:
        """Bad sizes (2**32 - 1, 2**63, too small), bad counts and bad items raise LabelError."""
        with pytest.raises(LabelError):
            mp4.read_labels(data)
        with pytest.raises(LabelError):
            mp4.write_label(data, PAYLOAD)

    def test_bad_chunk_offset_table_refuses_write(self) -> None:
        """An stco claiming 2**32 - 1 entries is refused when offsets must move (reading ignores it)."""
        stbl = box(b"stbl", full(b"stco", struct.pack(">I", 0xFFFFFFFF)))
        data = FTYP + box(b"moov", box(b"trak", box(b"mdia", box(b"minf", stbl)))) + MDAT
        assert [] == mp4.read_labels(data)
        with pytest.raises(LabelError, match="entries"):
            mp4.write_label(data, PAYLOAD)

    def test_undecodable_label_raises_label_error(self) -> None:
        """An AIGC value that is not UTF-8 cannot be read; writing replaces it."""
        data = make_mp4(udta=box(b"udta", mdta_meta([b"AIGC"], [(1, b"\xff")])))
        with pytest.raises(LabelError):
            mp4.read_labels(data)
        out = mp4.write_label(data, PAYLOAD)
        assert [PAYLOAD] == mp4.read_labels(out)
        assert SAMPLES == read_samples(out)

    def test_every_truncation(self) -> None:
        """Cut anywhere, a file is refused, or (cut at a box boundary) labelled correctly."""
        data = mp4.write_label(make_mp4(), PAYLOAD)
        refused = 0
        for cut in range(len(data)):
            try:
                out = mp4.write_label(data[:cut], PAYLOAD)
            except LabelError:
                refused += 1
                with pytest.raises(LabelError):
                    mp4.read_labels(data[:cut])
                continue
            assert [PAYLOAD] == mp4.read_labels(out)
        assert refused >= len(data) - 2

    @pytest.mark.parametrize("container", [b"udta", b"trak", b"meta", b"moov"])
    def test_deep_nesting(self, container: bytes) -> None:
        """10,000 nested boxes never recurse or hang."""
        inner = b""
        for _ in range(10_000):
            inner = box(container, inner)
        _label_or_error(mp4, FTYP + box(b"moov", inner) + MDAT)
        _label_or_error(mp4, FTYP + box(b"moov", box(b"udta", inner)) + MDAT)

    @HOSTILE
    @given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
    def test_random_flips(self, flips: list[tuple[int, int]]) -> None:
        """Byte flips anywhere give a label or a LabelError, nothing else."""
        data = bytearray(
            mp4.write_label(
                make_mp4(udta=box(b"udta", mdta_meta([b"title"], [(1, b"T")]))), PAYLOAD
            )
        )
        for position, value in flips:
            data[position % len(data)] = value
        _label_or_error(mp4, bytes(data))


# ------------------------------------------------------------------------------------ content_digest


@pytest.mark.parametrize(
    ("module", "make", "change"),
    [
        (wav, make_wav, lambda d: d[:-1] + bytes([d[-1] ^ 1])),
        (mp3, lambda: v23_tag() + AUDIO, lambda d: d[:-1] + bytes([d[-1] ^ 1])),
        (mp3, lambda: AUDIO + b"TAG" + b"\x00" * 125, lambda d: d[:-129] + b"\x01" + d[-128:]),
        (mp4, make_mp4, lambda d: d.replace(b"SAMPLE-one", b"SAMPLE-ONE")),
        (mp4, lambda: make_mp4("moov-last"), lambda d: d.replace(b"SAMPLE-one", b"SAMPLE-ONE")),
    ],
)
def test_content_digest_ignores_the_label_and_covers_the_samples(
    module: object, make: Callable[[], bytes], change: Callable[[bytes], bytes]
) -> None:
    """The digest is the same before and after labelling and changes with one media byte."""
    digest: Callable[[bytes], bytes] = module.content_digest  # type: ignore[attr-defined]
    write: Callable[[bytes, str], bytes] = module.write_label  # type: ignore[attr-defined]
    original = make()

    assert 32 == len(digest(original))
    assert digest(original) == digest(write(original, PAYLOAD))
    assert digest(original) == digest(write(write(original, PAYLOAD), OTHER))
    assert digest(original) != digest(change(original))


@pytest.mark.parametrize("module", [wav, mp3, mp4])
def test_content_digest_refuses_garbage(module: object) -> None:
    """A file of another format is a LabelError."""
    with pytest.raises(LabelError):
        module.content_digest(b"junk" * 10)  # type: ignore[attr-defined]
