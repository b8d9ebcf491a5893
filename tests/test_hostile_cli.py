"""Hostile bundles given to ``aiobligations verify``: special files and endless lines end at once.

A member that is a link to ``/dev/zero`` once made verify read forever, a folder in its place
raised ``IsADirectoryError`` (exit 1 where 2 is documented), and one endless line was read whole.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiobligations.cli import main
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle

from conftest import ORIGIN


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("hostile-cli")
    signer = Signer.generate(ORIGIN)
    with Ledger(SQLiteStore(folder / "ledger.db"), origin=ORIGIN, signer=signer,
                master_key=MasterKey.generate()) as ledger:
        for n in range(20):
            ledger.append({"kind": "log", "n": n})
    export_bundle(folder / "ledger.db", folder / "bundle")
    return folder / "bundle", signer.verifier_key


def verify(path: Path, key: str):
    return CliRunner().invoke(main, ["verify", str(path), "--key", key])


@pytest.mark.parametrize("member", ["records.jsonl", "hashes.bin", "checkpoint", "frontier.json"])
@pytest.mark.parametrize("special", ["dev-zero", "folder", "fifo"])
def test_a_member_that_is_not_a_regular_file_is_unusable_input(bundle, tmp_path: Path, member: str,
                                                                special: str) -> None:
    source, key = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    (copy / member).unlink()
    if special == "dev-zero":
        (copy / member).symlink_to("/dev/zero")
    elif special == "folder":
        (copy / member).mkdir()
    else:
        os.mkfifo(copy / member)

    result = verify(copy, key)

    assert 2 == result.exit_code, result.output
    assert "not a regular file" in result.stderr and 1 == len(result.stderr.strip().splitlines())


def test_an_endless_line_is_a_break_with_bounded_memory(bundle, tmp_path: Path) -> None:
    source, key = bundle
    copy = tmp_path / "bundle"
    shutil.copytree(source, copy)
    with open(copy / "records.jsonl", "ab") as handle:
        chunk = b"x" * (1 << 20)
        for _ in range(80):  # 80 MiB without a newline, past the 64 MiB bound.
            handle.write(chunk)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    result = verify(copy, key)

    assert 1 == result.exit_code, result.output
    assert "first bad index 20" in result.stderr and "longer than" in result.stderr
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"verify grew by {grown_mb:.0f} MB"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions: a signature, an IHDR and an IEND, nothing to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("command", ["inspect", "label"])
def test_a_decompression_bomb_is_unusable_input(tmp_path: Path, command: str, monkeypatch) -> None:
    from aiobligations.keys import init_project

    init_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(40_000, 40_000))
    args = [command, str(bomb)] + ([str(tmp_path / "out.png")] if command == "label" else [])

    result = CliRunner().invoke(main, args)

    assert 2 == result.exit_code, result.output
    assert "too large to decode safely" in result.stderr and 1 == len(result.stderr.strip().splitlines())


@pytest.mark.parametrize("command", ["inspect", "label"])
@pytest.mark.parametrize("special", ["dev-zero", "fifo"])
def test_inspect_and_label_refuse_what_is_not_a_regular_file(tmp_path: Path, command: str, special: str) -> None:
    target = tmp_path / "input.png"
    if special == "dev-zero":
        target.symlink_to("/dev/zero")
    else:
        os.mkfifo(target)
    args = [command, str(target)] + ([str(tmp_path / "out.png")] if command == "label" else [])

    result = CliRunner().invoke(main, args)

    assert 2 == result.exit_code, result.output
    assert "not a regular file" in result.stderr
