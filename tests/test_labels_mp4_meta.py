"""MP4 labels in files FFmpeg wrote with an iTunes ``moov/udta/meta`` (issue 12).

FFmpeg's MP4 muxer writes ``udta/meta`` with handler ``mdir`` and an ``ilst`` of its tags (here
title, comment and its own encoder tag). The label must go into that ``ilst``: one ``meta`` box in
``udta``, every FFmpeg item kept, sizes and chunk offsets right, and FFmpeg itself (through PyAV)
must still read the tags, find ``AIGC`` and decode the video. The clips come from
``tests/fixtures/ffmpeg-title-faststart.mp4`` (see ``tests/fixtures/README.md``) and from PyAV
here, with ``moov`` before ``mdat`` (``movflags=faststart``) and after it.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from aiobligations.keys import init_project
from aiobligations.labels.formats import mp4

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "ffmpeg-title-faststart.mp4"
TITLE, COMMENT = "Harbour at dusk", "made for a test"
PAYLOAD = '{"Label":"1","ContentProducer":"001191440300708461136T1XGW3","ProduceID":"p-1"}'
OTHER = '{"Label":"1","ContentProducer":"001191440300708461136T1XGW3","ProduceID":"p-2"}'
CONTAINERS = (b"moov", b"udta", b"trak", b"mdia", b"minf", b"stbl", b"ilst", b"edts", b"dinf")


def make_clip(path: Path, *, faststart: bool) -> bytes:
    """Ten 64 x 64 H.264 frames with title and comment tags, muxed by FFmpeg through PyAV.

    This is also how the fixture was made (``faststart=True``).
    """
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        container.metadata["title"] = TITLE
        container.metadata["comment"] = COMMENT
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(10):
            pixels = np.zeros((64, 64, 3), np.uint8)
            pixels[:, : 6 * (index + 1)] = (200, 40 + 20 * index, 90)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int, int]]:
    """An independent box walker: (type, header start, content start, end), which must fill exactly."""
    found = []
    while start < end:
        assert end - start >= 8, f"stray bytes at {start}"
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        assert header <= size and start + size <= end, f"box {kind!r} at {start} overruns its parent"
        found.append((kind, start, start + header, start + size))
        start += size
    assert start == end
    return found


def child(data: bytes, parent: tuple[int, int], kind: bytes) -> list[tuple[int, int, int]]:
    return [(s, b, e) for k, s, b, e in boxes(data, *parent) if k == kind]


def udta_metas(data: bytes) -> list[tuple[int, int, int]]:
    ((_, moov_body, moov_end),) = child(data, (0, len(data)), b"moov")
    metas = []
    for _, body, end in child(data, (moov_body, moov_end), b"udta"):
        metas += child(data, (body, end), b"meta")
    return metas


def ilst_items(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole item bytes) for every item of the one udta/meta's ilst (an ISO full-box meta)."""
    ((_, body, end),) = udta_metas(data)
    assert b"\x00\x00\x00\x00" == data[body : body + 4]
    meta_children = boxes(data, body + 4, end)
    handler = [data[b + 8 : b + 12] for k, _, b, _ in meta_children if k == b"hdlr"]
    assert [b"mdir"] == handler
    ((_, ilst_body, ilst_end),) = child(data, (body + 4, end), b"ilst")
    return [(k, data[s:e]) for k, s, _, e in boxes(data, ilst_body, ilst_end)]


def check_tree(data: bytes) -> None:
    """Every container box down to the ilst items fills its parent exactly."""

    def visit(start: int, end: int) -> None:
        for kind, _, body, stop in boxes(data, start, end):
            if kind in CONTAINERS or (kind[:1] == b"\xa9" or kind == b"----"):
                visit(body, stop)
            elif kind == b"meta":
                visit(body + 4, stop)

    visit(0, len(data))


def chunk_offsets(data: bytes) -> list[int]:
    found = []

    def visit(start: int, end: int) -> None:
        for kind, _, body, stop in boxes(data, start, end):
            if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                visit(body, stop)
            elif kind in (b"stco", b"co64"):
                count = struct.unpack(">I", data[body + 4 : body + 8])[0]
                width, fmt = (4, ">I") if kind == b"stco" else (8, ">Q")
                for i in range(count):
                    at = body + 8 + i * width
                    found.append(struct.unpack(fmt, data[at : at + width])[0])

    visit(0, len(data))
    return found


def probe(data: bytes) -> tuple[dict[str, str], list[np.ndarray]]:
    """FFmpeg's view through PyAV: the container tags and every decoded frame."""
    with av.open(io.BytesIO(data), format="mp4") as container:
        tags = dict(container.metadata)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return tags, frames


@pytest.fixture(scope="module", params=["fixture", "faststart", "moov-last"])
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if request.param == "fixture":
        return FIXTURE.read_bytes()
    path = tmp_path_factory.mktemp("clips") / f"{request.param}.mp4"
    return make_clip(path, faststart=request.param == "faststart")


def test_the_clips_have_an_itunes_meta_and_the_layout_asked_for(clip: bytes) -> None:
    """The inputs are what the issue is about: one mdir udta/meta holding FFmpeg's tags."""
    top = [kind for kind, *_ in boxes(clip, 0, len(clip))]
    assert {b"moov", b"mdat"} <= set(top)
    kinds = [kind for kind, _ in ilst_items(clip)]
    assert {b"\xa9nam", b"\xa9cmt", b"\xa9too"} <= set(kinds)
    assert b"----" not in kinds
    assert [] == mp4.read_labels(clip)


def test_the_label_goes_into_the_existing_meta(clip: bytes) -> None:
    """One meta in udta; FFmpeg's items kept byte for byte; one '----' AIGC item added last."""
    labelled = mp4.write_label(clip, PAYLOAD)

    check_tree(labelled)
    assert 1 == len(udta_metas(labelled))
    before, after = ilst_items(clip), ilst_items(labelled)
    assert before == after[:-1]
    kind, item = after[-1]
    assert b"----" == kind
    assert b"com.apple.iTunes" in item and b"AIGC" in item and item.endswith(PAYLOAD.encode())
    assert [PAYLOAD] == mp4.read_labels(labelled)


def test_sizes_and_chunk_offsets_follow_the_growth(clip: bytes) -> None:
    """moov grows by the item's size; offsets move with mdat when moov precedes it, not otherwise."""
    labelled = mp4.write_label(clip, PAYLOAD)
    grown = len(labelled) - len(clip)
    item = ilst_items(labelled)[-1][1]
    assert grown == len(item)
    top = [kind for kind, *_ in boxes(clip, 0, len(clip))]
    shift = grown if top.index(b"moov") < top.index(b"mdat") else 0
    assert [o + shift for o in chunk_offsets(clip)] == chunk_offsets(labelled)
    (mdat,) = [(b, e) for k, _, b, e in boxes(clip, 0, len(clip)) if k == b"mdat"]
    (new_mdat,) = [(b, e) for k, _, b, e in boxes(labelled, 0, len(labelled)) if k == b"mdat"]
    assert clip[mdat[0] : mdat[1]] == labelled[new_mdat[0] : new_mdat[1]]
    assert mp4.content_digest(clip) == mp4.content_digest(labelled)


def test_ffmpeg_reads_the_tags_and_the_label_and_decodes_the_same_frames(clip: bytes) -> None:
    tags, frames = probe(clip)
    new_tags, new_frames = probe(mp4.write_label(clip, PAYLOAD))

    assert (TITLE, COMMENT) == (new_tags["title"], new_tags["comment"])
    assert PAYLOAD == new_tags["AIGC"]
    assert {k: v for k, v in new_tags.items() if k != "AIGC"} == tags
    assert 10 == len(new_frames) == len(frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, new_frames))


def test_relabelling_replaces_the_item(clip: bytes) -> None:
    once = mp4.write_label(clip, PAYLOAD)
    twice = mp4.write_label(once, OTHER)

    assert [OTHER] == mp4.read_labels(twice)
    assert mp4.write_label(twice, OTHER) == twice
    assert 1 == len(udta_metas(twice))
    assert [b"----"] == [kind for kind, _ in ilst_items(twice) if kind == b"----"]
    assert ilst_items(clip) == ilst_items(twice)[:-1]
    assert OTHER == probe(twice)[0]["AIGC"]


def insert_into_udta(data: bytes, extra: bytes) -> bytes:
    """``data`` with ``extra`` appended to moov/udta: sizes and (moov before mdat) chunk offsets fixed."""
    out = bytearray(data)
    ((moov_start, body, end),) = child(data, (0, len(data)), b"moov")
    ((udta_start, _, udta_end),) = child(data, (body, end), b"udta")
    top = [kind for kind, *_ in boxes(data, 0, len(data))]
    if top.index(b"moov") < top.index(b"mdat"):

        def visit(start: int, stop: int) -> None:
            for kind, _, inner, inner_end in boxes(data, start, stop):
                if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
                    visit(inner, inner_end)
                elif kind == b"stco":
                    count = struct.unpack(">I", data[inner + 4 : inner + 8])[0]
                    for at in range(inner + 8, inner + 8 + 4 * count, 4):
                        value = struct.unpack(">I", data[at : at + 4])[0]
                        struct.pack_into(">I", out, at, value + len(extra))

        visit(0, len(data))
    struct.pack_into(">I", out, udta_start, udta_end - udta_start + len(extra))
    struct.pack_into(">I", out, moov_start, end - moov_start + len(extra))
    return bytes(out[:udta_end]) + extra + bytes(out[udta_end:])


def test_a_second_meta_from_earlier_versions_is_folded_in(clip: bytes) -> None:
    """A file with the mdta meta earlier versions appended next to FFmpeg's is left with one meta."""
    entry = struct.pack(">I4s", 12, b"mdta") + b"AIGC"
    data_box = struct.pack(">I4sII", 16 + len(OTHER), b"data", 1, 0) + OTHER.encode()
    item = struct.pack(">II", 8 + len(data_box), 1) + data_box
    parts = [
        struct.pack(">I4sI", 33, b"hdlr", 0) + b"\x00" * 4 + b"mdta" + b"\x00" * 13,
        struct.pack(">I4sII", 16 + len(entry), b"keys", 0, 1) + entry,
        struct.pack(">I4s", 8 + len(item), b"ilst") + item,
    ]
    extra = struct.pack(">I4sI", 12 + sum(map(len, parts)), b"meta", 0) + b"".join(parts)
    two_metas = insert_into_udta(clip, extra)
    check_tree(two_metas)
    assert 2 == len(udta_metas(two_metas)) and [OTHER] == mp4.read_labels(two_metas)
    assert probe(two_metas)[1][0].shape == (64, 64, 3)

    fixed = mp4.write_label(two_metas, PAYLOAD)
    check_tree(fixed)
    assert 1 == len(udta_metas(fixed))
    assert ilst_items(clip) == ilst_items(fixed)[:-1]
    assert [PAYLOAD] == mp4.read_labels(fixed)
    tags, frames = probe(fixed)
    assert PAYLOAD == tags["AIGC"] and 10 == len(frames)
    assert chunk_offsets(mp4.write_label(clip, PAYLOAD)) == chunk_offsets(fixed)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiobligations.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def check_with_exiftool(path: Path, payload: str) -> None:
    """When ExifTool is installed (it is not required), it sees one AIGC value and no duplicate."""
    exiftool = shutil.which("exiftool")
    if exiftool is None:
        return
    run = subprocess.run([exiftool, "-j", "-a", "-u", "-G1", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert 0 == run.returncode, run.stderr
    (tags,) = json.loads(run.stdout)
    warnings = " ".join(str(v) for k, v in tags.items() if k.endswith("Warning"))
    assert "duplicate" not in warnings.lower()
    assert 1 == sum(value == payload for value in tags.values())


def test_cli_label_and_inspect_on_the_fixture(tmp_path: Path) -> None:
    """``aiobligations label`` (caption, label, C2PA) leaves one meta; ``inspect`` finds the label."""
    init_project(tmp_path)
    (tmp_path / "in.mp4").write_bytes(FIXTURE.read_bytes())
    (tmp_path / "direct.mp4").write_bytes(mp4.write_label(FIXTURE.read_bytes(), PAYLOAD))

    labelled = run_cli("label", "in.mp4", "out.mp4", cwd=tmp_path)
    assert 0 == labelled.returncode, labelled.stderr
    found = run_cli("inspect", "out.mp4", cwd=tmp_path)
    assert 0 == found.returncode, found.stderr
    (label,) = json.loads(found.stdout)["gb45438"]
    assert label["reserved_code1"].startswith("verified")
    out = (tmp_path / "out.mp4").read_bytes()
    check_tree(out)
    assert 1 == len(udta_metas(out))
    kinds = [kind for kind, _ in ilst_items(out)]
    assert b"\xa9too" in kinds and 1 == kinds.count(b"----")
    tags, frames = probe(out)
    assert label["payload"] == tags["AIGC"] and 10 == len(frames)
    check_with_exiftool(tmp_path / "out.mp4", label["payload"])

    direct = run_cli("inspect", "direct.mp4", cwd=tmp_path)
    assert 0 == direct.returncode, direct.stderr
    assert [PAYLOAD] == [found["payload"] for found in json.loads(direct.stdout)["gb45438"]]
    check_with_exiftool(tmp_path / "direct.mp4", PAYLOAD)
