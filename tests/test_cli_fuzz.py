"""A fuzz suite over the CLI's file inputs: ``inspect``, ``label``, ``verify`` and ``verify-receipt``.

Every case runs the installed command as a program, as an operator would, on one hostile input: a
special file (FIFO, a link to ``/dev/zero``, a folder, an empty file), a truncated or bit-flipped copy
of a valid file, a compression bomb or an image declaring 40000 x 40000 pixels. The valid files are
made by other tools (Pillow, FFmpeg through PyAV, ``wave``) and labelled by the project itself; the
bundle and the receipt come from a real ledger. Each case must end within 10 s with at most 500 MB
resident (and under a 1.5 GB address-space limit), with an exit status the command documents, and,
when it fails, with exactly one line ``aiobligations: ...`` on standard error and never a traceback.

The mutations are seeded, so a failure names a case that reproduces. ``AIOBLIGATIONS_FUZZ_FLIPS``
raises the number of bit-flipped copies per format for a deeper run (the default keeps the file
under about 90 s on two cores).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tarfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle
from aiobligations.ledger.receipts import make_receipt

from _media import encode_audio
from conftest import ORIGIN

CLI = [sys.executable, "-m", "aiobligations.cli"]
TIME_LIMIT = 10.0
RSS_LIMIT_MB = 500
ADDRESS_SPACE = 1536 << 20
FLIPS = int(os.environ.get("AIOBLIGATIONS_FUZZ_FLIPS", "2"))
EXIT_CODES = {"inspect": {0, 1, 2}, "label": {0, 2}, "verify": {0, 1, 2}, "verify-receipt": {0, 1, 2}}
FORMATS = ("png", "jpeg", "mp3", "wav", "mp4", "pdf", "md")


@dataclass
class Run:
    """What one run of the command did."""

    status: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_cli(args: list[str], cwd: Path) -> Run:
    """Run the CLI with a 1.5 GB address-space limit; kill it at the time limit; measure its peak RSS.

    ``os.wait4`` reaps the child, so its own resource usage is known (not the maximum over every
    child of this test process). A timer kills the child's process group if it runs too long.
    """
    out, err = cwd / ".fuzz-stdout", cwd / ".fuzz-stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        # TMPDIR in the case's folder: what a killed child leaves in temporary files goes with it.
        env = {**os.environ, "PYTHONFAULTHANDLER": "1", "TMPDIR": str(cwd)}
        proc = subprocess.Popen([*CLI, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=stderr, preexec_fn=_limit_address_space, start_new_session=True,
                                env=env)
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(TIME_LIMIT + 1, kill)
    start = time.monotonic()
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    seconds = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert not killed.is_set(), f"{args} still ran after {TIME_LIMIT + 1:.0f} s and was killed"
    return Run(proc.returncode, out.read_text(errors="replace"), err.read_text(errors="replace"), seconds,
               usage.ru_maxrss / 1024)


def check(run: Run, command: str, *, allowed: set[int] | None = None) -> None:
    """The documented exit status, the time and memory bounds, and one clear line on failure."""
    allowed = EXIT_CODES[command] if allowed is None else allowed
    assert run.status in allowed, f"exit {run.status} (allowed {sorted(allowed)}); stderr:\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout, run.stderr[-3000:]
    assert run.seconds < TIME_LIMIT, f"took {run.seconds:.1f} s"
    assert run.max_rss_mb < RSS_LIMIT_MB, f"peak RSS {run.max_rss_mb:.0f} MB"
    lines = run.stderr.strip().splitlines()
    if run.status != 0 and not (command == "inspect" and run.status == 1):
        assert len(lines) == 1 and lines[0].startswith("aiobligations: "), run.stderr[-3000:]
    if command == "inspect" and run.status in (0, 1):
        # Exit 1 is "no label": the answer is the report, labelled false, and nothing on stderr.
        assert json.loads(run.stdout)["labelled"] is (run.status == 0)
        assert lines == []


# ----------------------------------------------------------------------------------------- valid inputs


def _pillow(fmt: str, **options: object) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **options)
    return out.getvalue()


def _video() -> bytes:
    """Twelve 64 x 64 frames of H.264 in MP4, encoded by FFmpeg (libx264) through PyAV."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for index in range(12):
            pixels = np.full((64, 64, 3), index * 20, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(np.random.default_rng(3).integers(-3000, 3000, 4000, dtype=np.int16).tobytes())
    return out.getvalue()


SOURCES: dict[str, Callable[[], bytes]] = {
    "png": lambda: _pillow("PNG"),
    "jpeg": lambda: _pillow("JPEG", quality=90),
    "mp3": lambda: encode_audio("mp3", "libmp3lame"),
    "wav": _wav,
    "mp4": _video,
    "pdf": lambda: _pillow("PDF"),
    "md": lambda: b"---\ntitle: Fuzz\n---\n# Heading\n\nGenerated *text*.\n",
}


@dataclass
class Workspace:
    """A project folder with keys, labelled files of every format, an audit bundle and a receipt."""

    root: Path
    labelled: dict[str, bytes]
    bundle: bytes
    receipt: str
    verifier_key: str


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from aiobligations.keys import init_project
    from aiobligations.obligations import Obligations

    root = tmp_path_factory.mktemp("cli-fuzz")
    init_project(root)
    labelled = {}
    with Obligations.from_file(root / "aiobligations.toml") as obligations:
        for name, make in SOURCES.items():
            # The project's own labels (implicit, C2PA, the watermark on images); no caption, to keep
            # the fixture quick.
            labelled[name] = obligations.label(make(), explicit=False)
    ledger_folder = root / "evidence"
    ledger_folder.mkdir()
    signer = Signer.generate(ORIGIN)
    with Ledger(SQLiteStore(ledger_folder / "ledger.db"), origin=ORIGIN, signer=signer,
                master_key=MasterKey.generate()) as ledger:
        for n in range(12):
            ledger.append({"kind": "log", "n": n})
        ledger.flush()
        receipt = make_receipt(ledger, 5)
    export_bundle(ledger_folder / "ledger.db", ledger_folder / "bundle.tar.gz")
    return Workspace(root, labelled, (ledger_folder / "bundle.tar.gz").read_bytes(), receipt,
                     signer.verifier_key)


def test_the_valid_inputs_pass(workspace: Workspace, tmp_path: Path) -> None:
    """The control: unmutated, each input gets exit 0 (so a mutation's failure is the mutation's)."""
    for name in ("png",):
        (tmp_path / f"ok.{name}").write_bytes(workspace.labelled[name])
        run = run_cli(["inspect", f"ok.{name}", "--config", str(workspace.root / "aiobligations.toml")], tmp_path)
        check(run, "inspect", allowed={0})
    (tmp_path / "ok.tar.gz").write_bytes(workspace.bundle)
    check(run_cli(["verify", "ok.tar.gz", "--key", workspace.verifier_key], tmp_path), "verify", allowed={0})
    (tmp_path / "ok.receipt").write_text(workspace.receipt)
    check(run_cli(["verify-receipt", "ok.receipt", "--key", workspace.verifier_key], tmp_path), "verify-receipt",
          allowed={0})


# ------------------------------------------------------------------------------------------- mutations


def mutations(data: bytes, seed: str, flips: int) -> list[tuple[str, bytes]]:
    """Seeded truncations (half, all but the last byte) and ``flips`` bit-flipped copies."""
    rng = random.Random(seed)
    out = [("cut-half", data[: len(data) // 2]), ("cut-last", data[:-1])]
    for index in range(flips):
        copy = bytearray(data)
        # Flip a few bits, mostly in the first KiB where the structure (headers, labels) lives.
        for _ in range(rng.randint(1, 8)):
            where = rng.randrange(min(len(copy), 1024)) if rng.random() < 0.7 else rng.randrange(len(copy))
            copy[where] ^= 1 << rng.randrange(8)
        out.append((f"flip-{index}", bytes(copy)))
    return out


INSPECT_CASES = [(fmt, name) for fmt in FORMATS for name, _ in mutations(b"x" * 64, fmt, FLIPS)]


@pytest.mark.parametrize(("fmt", "case"), INSPECT_CASES)
def test_inspect_of_a_damaged_file(workspace: Workspace, tmp_path: Path, fmt: str, case: str) -> None:
    data = dict(mutations(workspace.labelled[fmt], fmt, FLIPS))[case]
    (tmp_path / f"input.{fmt}").write_bytes(data)

    run = run_cli(["inspect", f"input.{fmt}", "--config", str(workspace.root / "aiobligations.toml")], tmp_path)

    check(run, "inspect")


# Labelling is slower (C2PA signing, the watermark): one case per format, truncated or flipped.
@pytest.mark.parametrize(("fmt", "case"), [(fmt, ("cut-half", "flip-0")[n % 2]) for n, fmt in enumerate(FORMATS)])
def test_label_of_a_damaged_file(workspace: Workspace, tmp_path: Path, fmt: str, case: str) -> None:
    data = dict(mutations(workspace.labelled[fmt], fmt, FLIPS))[case]
    (tmp_path / f"input.{fmt}").write_bytes(data)

    run = run_cli(["label", f"input.{fmt}", f"out.{fmt}", "--config", str(workspace.root / "aiobligations.toml")],
                  tmp_path)

    check(run, "label")
    assert (tmp_path / f"out.{fmt}").exists() is (run.status == 0)


# ------------------------------------------------------------------------------------- special files


def make_special(path: Path, kind: str) -> None:
    """Put a FIFO, a link to /dev/zero, a folder or an empty file at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        assert kind == "missing"


SPECIALS = ["fifo", "dev-zero", "folder", "empty"]


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("command", ["inspect", "label", "verify", "verify-receipt"])
def test_a_special_file_is_unusable_input(workspace: Workspace, tmp_path: Path, command: str, kind: str,
                                          request: pytest.FixtureRequest) -> None:
    target = tmp_path / "input"
    make_special(target, kind)
    args = {
        "inspect": ["inspect", "input"],
        "label": ["label", "input", "out.png"],
        "verify": ["verify", "input", "--key", workspace.verifier_key],
        "verify-receipt": ["verify-receipt", "input", "--key", workspace.verifier_key],
    }[command]

    run = run_cli([*args, "--config", str(workspace.root / "aiobligations.toml")] if command != "verify-receipt"
                  else args, tmp_path)

    check(run, command, allowed={2})


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_verify_receipt_refuses_a_special_record_file(workspace: Workspace, tmp_path: Path, kind: str) -> None:
    (tmp_path / "ok.receipt").write_text(workspace.receipt)
    make_special(tmp_path / "record", kind)

    run = run_cli(["verify-receipt", "ok.receipt", "--key", workspace.verifier_key, "--record", "record"], tmp_path)

    check(run, "verify-receipt", allowed={2})


# --------------------------------------------------------------------------------- bundles and receipts


@pytest.mark.parametrize("case", [name for name, _ in mutations(b"x" * 64, "bundle", FLIPS)])
def test_verify_of_a_damaged_bundle(workspace: Workspace, tmp_path: Path, case: str) -> None:
    data = dict(mutations(workspace.bundle, "bundle", FLIPS))[case]
    (tmp_path / "bundle.tar.gz").write_bytes(data)

    run = run_cli(["verify", "bundle.tar.gz", "--key", workspace.verifier_key], tmp_path)

    check(run, "verify", allowed={1, 2})


@pytest.mark.parametrize("case", [name for name, _ in mutations(b"x" * 64, "receipt", FLIPS + 1)])
def test_verify_receipt_of_a_damaged_receipt(workspace: Workspace, tmp_path: Path, case: str) -> None:
    data = dict(mutations(workspace.receipt.encode(), "receipt", FLIPS + 1))[case]
    (tmp_path / "damaged.receipt").write_bytes(data)

    run = run_cli(["verify-receipt", "damaged.receipt", "--key", workspace.verifier_key], tmp_path)

    check(run, "verify-receipt", allowed={1, 2})


def _members(bundle: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        return [(member, tar.extractfile(member).read()) for member in tar]  # type: ignore[union-attr]


def _tar_without(bundle: bytes, name: str) -> tuple[bytes, tarfile.TarInfo]:
    """The bundle's tar stream (uncompressed, no end marker) without member ``name``, and that member."""
    out = io.BytesIO()
    replaced = None
    for member, body in _members(bundle):
        if member.name.removeprefix("./") == name:
            replaced = member
            continue
        out.write(member.tobuf(format=tarfile.GNU_FORMAT))
        out.write(body + b"\0" * (-len(body) % 512))
    assert replaced is not None
    return out.getvalue(), replaced


def gzip_bomb(bundle: bytes) -> bytes:
    """A .tar.gz of about 4 MB whose records.jsonl inflates to 4 GiB of zero bytes (256 gzip members)."""
    head, member = _tar_without(bundle, "records.jsonl")
    member.size = 4 << 30
    zeros = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return gzip.compress(head + member.tobuf(format=tarfile.GNU_FORMAT)) + zeros * 256


def sparse_tar(bundle: bytes) -> bytes:
    """A .tar.gz whose records.jsonl is an old-GNU sparse member: 1 GiB long, 512 bytes stored."""
    head, member = _tar_without(bundle, "records.jsonl")
    block = bytearray(member.tobuf(format=tarfile.GNU_FORMAT)[:512])
    size = 1 << 30

    def octal(value: int, width: int) -> bytes:
        return f"{value:0{width - 1}o}".encode() + b"\0"

    block[124:136] = octal(512, 12)  # Stored data: one block.
    block[156:157] = b"S"  # GNUTYPE_SPARSE.
    block[386:410] = octal(size - 512, 12) + octal(512, 12)  # One data region, at the very end.
    block[482:483] = b"\0"  # No extension blocks.
    block[483:495] = octal(size, 12)  # The real size.
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    body = b'{"kind":"log"}\n'.ljust(512, b"\0")
    return gzip.compress(head + bytes(block) + body + b"\0" * 1024)


@pytest.mark.parametrize("make", [
    pytest.param(gzip_bomb, id="gzip-bomb-4GiB"),
    pytest.param(sparse_tar, id="sparse-1GiB"),
])
def test_verify_of_a_bundle_that_inflates_to_a_gigabyte(workspace: Workspace, tmp_path: Path,
                                                         make: Callable[[bytes], bytes]) -> None:
    (tmp_path / "bundle.tar.gz").write_bytes(make(workspace.bundle))
    assert (tmp_path / "bundle.tar.gz").stat().st_size < 4 << 20

    run = run_cli(["verify", "bundle.tar.gz", "--key", workspace.verifier_key], tmp_path)

    check(run, "verify", allowed={1, 2})


# ----------------------------------------------------------------------------------------- huge images


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height``; its IDAT holds almost nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(
        b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A Pillow JPEG with its SOF0 frame header patched to declare ``width`` x ``height``."""
    data = bytearray(_pillow("JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("make", [png_declaring, jpeg_declaring], ids=["png", "jpeg"])
@pytest.mark.parametrize("command", ["inspect", "label"])
def test_an_image_declaring_40000_by_40000(workspace: Workspace, tmp_path: Path, command: str,
                                           make: Callable[[int, int], bytes]) -> None:
    (tmp_path / "huge").write_bytes(make(40_000, 40_000))
    args = ["inspect", "huge"] if command == "inspect" else ["label", "huge", "out"]

    run = run_cli([*args, "--config", str(workspace.root / "aiobligations.toml")], tmp_path)

    check(run, command, allowed={1, 2} if command == "inspect" else {2})


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("option", ["--since-checkpoint", "--key"])
def test_verify_refuses_a_special_file_as_an_option(workspace: Workspace, tmp_path: Path, kind: str,
                                                    option: str) -> None:
    """A FIFO or /dev/zero named by --since-checkpoint or --key never hangs or fills memory."""
    (tmp_path / "bundle.tar.gz").write_bytes(workspace.bundle)
    special = tmp_path / "special"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        special.symlink_to("/dev/zero")
    args = ["verify", "bundle.tar.gz", option, str(special)]
    if option != "--key":
        args += ["--key", workspace.verifier_key]
    run = run_cli(args, tmp_path)
    check(run, "verify", allowed={2})
