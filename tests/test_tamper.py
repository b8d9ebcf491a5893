"""Tamper evidence: every single change to a bundle or a live database is a break naming the right record.

A module-scoped ledger of 40 records (personal data, two erased subjects) is exported once as a
folder bundle. Each example writes a copy of the bundle with ONE change (a byte flipped, deleted
or inserted, two lines swapped, the file cut short) to ``records.jsonl`` or ``hashes.bin``, or
changes one row of a copy of the database, and checks that verification raises
:class:`LedgerBroken` whose ``index`` is the first record the change touches.

How the expected index is computed: the change's first differing byte (comparing the changed file
with the original; the end of the shorter one when one is a prefix of the other) falls in line L of
``records.jsonl`` (or hash L of ``hashes.bin``), and L is the expected index; a change past the
last byte names the first missing record, ``n``. For a flip, a deletion, a swap and a cut this is
exactly "the line the offset falls in" (for a swap: the lower line; for a cut on a line boundary:
the first missing line). For an insertion or a deletion it also covers the case where the byte
equals its neighbour, so the first differing byte lies a little further on (inserting "\\n" just
before a line's own newline leaves that line intact and adds an empty one after it).
"""

from __future__ import annotations

import bisect
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiobligations.cli import main
from aiobligations.errors import LedgerBroken, UnusableInput
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle, verify_database, verify_path
from aiobligations.keys import load_signer
from aiobligations.ledger import merkle
from aiobligations.ledger.records import parse_ts, record_mac_key
from aiobligations.profile import load_profile

ORIGIN = "tamper.example/aiobligations/ledger"
RECORDS = 40
ERASED = ("subject-1", "subject-4")
KINDS = ("flip", "delete", "insert", "swap", "truncate")

PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Fixture:
    """The pristine ledger and its bundle, shared by every example of the module."""

    db: Path
    members: dict[str, bytes]
    signer: Signer
    records: int

    @property
    def line_starts(self) -> list[int]:
        starts = [0]
        data = self.members["records.jsonl"]
        for line in data.splitlines(keepends=True)[:-1]:
            starts.append(starts[-1] + len(line))
        return starts


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    folder = tmp_path_factory.mktemp("tamper")
    signer = Signer.generate(ORIGIN)
    with Ledger(SQLiteStore(folder / "ledger.db"), origin=ORIGIN, signer=signer, master_key=MasterKey.generate()) as ledger:
        for i in range(RECORDS - len(ERASED)):
            ledger.append(
                {
                    "kind": "interaction",
                    "interaction_id": f"id-{i}",
                    "subject": f"subject-{i % 6}",
                    "personal": {"prompt": f"prompt {i}", "output": "out"},
                }
            )
        for subject in ERASED:
            ledger.erase_subject(subject)
        assert RECORDS == ledger.size
    export_bundle(folder / "ledger.db", folder / "bundle")
    members = {p.name: p.read_bytes() for p in (folder / "bundle").iterdir()}
    assert {"records.jsonl", "hashes.bin", "checkpoint", "frontier.json", "verifier.key", "manifest.json"} <= set(members)
    assert RECORDS == members["records.jsonl"].count(b"\n")
    assert 32 * RECORDS == len(members["hashes.bin"])
    # The pristine bundle and database verify: every break found below is the change's doing.
    assert RECORDS == verify_path(folder / "bundle", key=signer.verifier_key).end
    assert RECORDS == verify_database(folder / "ledger.db", key=signer.verifier_key).end
    return Fixture(folder / "ledger.db", members, signer, RECORDS)


@pytest.fixture(autouse=True)
def _cwd(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI picks up ./aiobligations.toml when there is one: run where there is none.
    monkeypatch.chdir(tmp_path_factory.getbasetemp())


# -- helpers -----------------------------------------------------------------------------------


def first_difference(original: bytes, changed: bytes) -> int:
    """The first offset where the two differ, or the shorter length when one is a prefix of the other."""
    shorter = min(len(original), len(changed))
    low, high = 0, shorter
    # Binary search on equal prefixes: the files are a few KiB and there are hundreds of examples.
    while low < high:
        middle = (low + high + 1) // 2
        if original[:middle] == changed[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def expected_line(fixture: Fixture, original: bytes, changed: bytes) -> int:
    offset = first_difference(original, changed)
    if offset >= len(original):
        return fixture.records
    return bisect.bisect_right(fixture.line_starts, offset) - 1


def change_bytes(data: bytes, kind: str, draw: st.DataObject, unit: list[tuple[int, int]]) -> bytes:
    """Apply one change of ``kind`` to ``data``; ``unit`` lists the (start, end) of its lines or hashes."""
    size = len(data)
    if kind == "flip":
        offset = draw.draw(st.integers(0, size - 1), label="offset")
        xor = draw.draw(st.integers(1, 255), label="xor")
        return data[:offset] + bytes([data[offset] ^ xor]) + data[offset + 1 :]
    if kind == "delete":
        offset = draw.draw(st.integers(0, size - 1), label="offset")
        return data[:offset] + data[offset + 1 :]
    if kind == "insert":
        offset = draw.draw(st.integers(0, size), label="offset")
        value = draw.draw(st.integers(0, 255), label="value")
        return data[:offset] + bytes([value]) + data[offset:]
    if kind == "swap":
        first = draw.draw(st.integers(0, len(unit) - 2), label="first")
        second = draw.draw(st.integers(first + 1, len(unit) - 1), label="second")
        pieces = [data[a:b] for a, b in unit]
        assert pieces[first] != pieces[second], "a swap of identical units would be a no-op"
        pieces[first], pieces[second] = pieces[second], pieces[first]
        return b"".join(pieces)
    assert "truncate" == kind
    cut = draw.draw(st.integers(0, size - 1), label="cut")
    return data[:cut]


def write_bundle(fixture: Fixture, folder: Path, **changed: bytes) -> Path:
    """Write the bundle into ``folder``, with members given as ``records_jsonl=...`` replaced."""
    known = {name.replace(".", "_"): name for name in fixture.members}
    assert set(changed) <= set(known), changed.keys()
    bundle = folder / "bundle"
    bundle.mkdir()
    for key, name in known.items():
        (bundle / name).write_bytes(changed.get(key, fixture.members[name]))
    return bundle


def line_units(data: bytes) -> list[tuple[int, int]]:
    units, start = [], 0
    for line in data.splitlines(keepends=True):
        units.append((start, start + len(line)))
        start += len(line)
    return units


def hash_units(data: bytes) -> list[tuple[int, int]]:
    return [(i, i + 32) for i in range(0, len(data), 32)]


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
        yield Path(folder)


def broken(path: Path, key: str) -> LedgerBroken:
    with pytest.raises(LedgerBroken) as caught:
        verify_path(path, key=key)
    return caught.value


# -- the bundle --------------------------------------------------------------------------------


class TestBundleRecords:
    @settings(PROPERTY, max_examples=550)
    @given(kind=st.sampled_from(KINDS), draw=st.data())
    def test_one_change_to_records_names_the_first_touched_record(
        self, pristine: Fixture, kind: str, draw: st.DataObject
    ) -> None:
        """
        Any single change to records.jsonl is a break at the line the change falls in.
        """
        original = pristine.members["records.jsonl"]
        changed = change_bytes(original, kind, draw, line_units(original))
        assert changed != original
        expected = expected_line(pristine, original, changed)

        with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
            bundle = write_bundle(pristine, Path(folder), records_jsonl=changed)
            error = broken(bundle, pristine.signer.verifier_key)

        assert expected == error.index, f"{kind}: {error.reason}"


class TestBundleHashes:
    @settings(PROPERTY, max_examples=300)
    @given(kind=st.sampled_from(KINDS), draw=st.data())
    def test_one_change_to_hashes_names_the_first_touched_hash(
        self, pristine: Fixture, kind: str, draw: st.DataObject
    ) -> None:
        """
        Any single change to hashes.bin is a break at the record whose listed hash it touches.
        """
        original = pristine.members["hashes.bin"]
        changed = change_bytes(original, kind, draw, hash_units(original))
        assert changed != original
        expected = min(first_difference(original, changed) // 32, pristine.records)

        with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
            bundle = write_bundle(pristine, Path(folder), hashes_bin=changed)
            error = broken(bundle, pristine.signer.verifier_key)

        assert expected == error.index, f"{kind}: {error.reason}"


class TestCheckpoint:
    @settings(PROPERTY, max_examples=100)
    @given(draw=st.data())
    def test_a_flip_in_the_signed_text_or_signature_is_a_break_without_an_index(
        self, pristine: Fixture, draw: st.DataObject
    ) -> None:
        """
        A byte flipped in the checkpoint's text or in its signature bytes is a break (index None).

        The first 6 base64 characters of the signature encode the key ID, and the line's key name
        says who signed: a flip there makes the note "signed by another key", reported as unusable
        input (see test_a_flip_in_the_key_name_or_id_is_refused_one_way_or_the_other).
        """
        original = pristine.members["checkpoint"]
        text_end = original.index(b"\n\n") + 1
        signature_start = original.rindex(b" ") + 1 + 6
        offset = draw.draw(
            st.one_of(st.integers(0, text_end), st.integers(signature_start, len(original) - 1)), label="offset"
        )
        xor = draw.draw(st.integers(1, 255), label="xor")
        changed = original[:offset] + bytes([original[offset] ^ xor]) + original[offset + 1 :]

        with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
            bundle = write_bundle(pristine, Path(folder), checkpoint=changed)
            error = broken(bundle, pristine.signer.verifier_key)

        assert error.index is None, error.reason

    @settings(PROPERTY, max_examples=60)
    @given(draw=st.data())
    def test_a_flip_in_the_key_name_or_id_is_refused_one_way_or_the_other(
        self, pristine: Fixture, draw: st.DataObject
    ) -> None:
        """
        A flip in the signature line's key name or key ID never verifies: exit 1 or 2, one line.
        """
        original = pristine.members["checkpoint"]
        start = original.index(b"\n\n") + 2
        end = original.rindex(b" ") + 1 + 6
        offset = draw.draw(st.integers(start, end - 1), label="offset")
        xor = draw.draw(st.integers(1, 255), label="xor")
        changed = original[:offset] + bytes([original[offset] ^ xor]) + original[offset + 1 :]

        with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
            bundle = write_bundle(pristine, Path(folder), checkpoint=changed)
            result = CliRunner().invoke(main, ["verify", str(bundle), "--key", pristine.signer.verifier_key])

        assert result.exit_code in (1, 2), result.output
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr
        assert isinstance(result.exception, SystemExit)

    def test_cli_exits_1_on_a_flipped_checkpoint(self, pristine: Fixture, scratch: Path) -> None:
        original = pristine.members["checkpoint"]
        offset = original.index(b"\n") + 1  # the first digit of the tree size
        changed = original[:offset] + bytes([original[offset] ^ 0x01]) + original[offset + 1 :]
        bundle = write_bundle(pristine, scratch, checkpoint=changed)

        result = CliRunner().invoke(main, ["verify", str(bundle), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        assert ["aiobligations: BROKEN: the checkpoint: the signature does not verify (altered)"] == (
            result.stderr.strip().splitlines()
        )

    def test_a_wrong_pinned_key_is_a_break_exit_1(self, pristine: Fixture, scratch: Path) -> None:
        """Issue 11, defect 12: a checkpoint not signed by the pinned key is a break (exit 1), not unusable input."""
        bundle = write_bundle(pristine, scratch)
        impostor = Signer.generate(ORIGIN)  # same name, another key: another key ID

        with pytest.raises(LedgerBroken, match="signed by another key"):
            verify_path(bundle, key=impostor.verifier_key)
        result = CliRunner().invoke(main, ["verify", str(bundle), "--key", impostor.verifier_key])

        assert 1 == result.exit_code, result.output
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines) and "BROKEN:" in lines[0] and "signed by another key" in lines[0], result.stderr
        assert "Traceback" not in result.output

    def test_a_wrong_key_for_the_database_is_exit_1(self, pristine: Fixture) -> None:
        other = Signer.generate("other.example/log")

        result = CliRunner().invoke(main, ["verify", str(pristine.db), "--key", other.verifier_key])

        assert 1 == result.exit_code, result.output
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr
        assert "signed by another key" in result.stderr

    def test_a_bundle_re_signed_under_another_key_needs_a_pinned_key(self, pristine: Fixture, scratch: Path) -> None:
        """Issue 11, defect 12: checkpoint and verifier.key both replaced by an impostor's. Without a pinned
        key ``verify`` refuses (exit 2, saying the key must be pinned); pinned, it is a break (exit 1);
        only --trust-bundle-key accepts the shipped key, and says so."""
        impostor = Signer.generate(ORIGIN)
        body = pristine.members["checkpoint"].decode().partition("\n\n")[0] + "\n"
        bundle = write_bundle(pristine, scratch, checkpoint=impostor.sign(body).encode())
        (bundle / "verifier.key").write_text(impostor.verifier_key + "\n")

        with pytest.raises(UnusableInput, match="no verifier key is pinned"):
            verify_path(bundle)
        unpinned = CliRunner().invoke(main, ["verify", str(bundle)])
        assert 2 == unpinned.exit_code, unpinned.output
        lines = unpinned.stderr.strip().splitlines()
        assert 1 == len(lines) and "--key" in lines[0] and "--trust-bundle-key" in lines[0], unpinned.stderr
        assert "intact" not in unpinned.output

        pinned = CliRunner().invoke(main, ["verify", str(bundle), "--key", pristine.signer.verifier_key])
        assert 1 == pinned.exit_code, pinned.output
        assert "BROKEN:" in pinned.stderr and "signed by another key" in pinned.stderr

        trusting = CliRunner().invoke(main, ["verify", str(bundle), "--trust-bundle-key"])
        assert 0 == trusting.exit_code, trusting.output
        assert f"signed by {impostor.verifier_key}" in trusting.stdout
        assert "note: trusted the bundle's own verifier.key" in trusting.stdout


class TestBundleCli:
    """A few of the changes above, through ``aiobligations verify``: exit 1 and one line naming the index."""

    @pytest.mark.parametrize(
        ("member", "change", "index"),
        [
            ("records.jsonl", lambda d, s: d[: s[7] + 30] + b"X" + d[s[7] + 31 :], 7),
            ("records.jsonl", lambda d, s: d[: s[3]] + d[s[9] : s[10]] + d[s[4] : s[9]] + d[s[3] : s[4]] + d[s[10] :], 3),
            ("records.jsonl", lambda d, s: d[: s[12]], 12),
            ("records.jsonl", lambda d, s: d[: s[21] - 1] + d[s[21] :], 20),
            ("records.jsonl", lambda d, s: d + b"{}\n", 40),
            ("hashes.bin", lambda d, s: d[: 32 * 33 + 5] + bytes([d[32 * 33 + 5] ^ 0x80]) + d[32 * 33 + 6 :], 33),
            ("hashes.bin", lambda d, s: d[: 32 * 17 + 3], 17),
        ],
        ids=["flip", "swap", "cut-at-boundary", "newline-deleted", "line-added", "hash-flip", "hash-cut"],
    )
    def test_verify_exits_1_naming_the_index(self, pristine: Fixture, scratch: Path, member, change, index) -> None:
        changed = change(pristine.members[member], pristine.line_starts)
        bundle = write_bundle(pristine, scratch, **{member.replace(".", "_"): changed})

        result = CliRunner().invoke(main, ["verify", str(bundle), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), result.stderr
        assert lines[0].startswith(f"aiobligations: BROKEN: first bad index {index}: "), lines[0]
        assert "" == result.stdout

    def test_verify_json_reports_the_index(self, pristine: Fixture, scratch: Path) -> None:
        original = pristine.members["records.jsonl"]
        start = pristine.line_starts[25]
        changed = original[:start] + original[start + 1 :]
        bundle = write_bundle(pristine, scratch, records_jsonl=changed)

        result = CliRunner().invoke(main, ["verify", "--json", str(bundle), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code
        assert '"first_bad_index": 25' in result.stdout


# -- the live database -------------------------------------------------------------------------


def copy_database(fixture: Fixture, folder: Path) -> Path:
    target = folder / "ledger.db"
    shutil.copyfile(fixture.db, target)
    for suffix in ("-wal", "-shm"):
        extra = fixture.db.with_name(fixture.db.name + suffix)
        if extra.exists():
            shutil.copyfile(extra, folder / f"ledger.db{suffix}")
    return target


def tamper(db: Path, *statements: tuple[str, tuple]) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            for sql, args in statements:
                assert 1 <= conn.execute(sql, args).rowcount
    finally:
        conn.close()


def row(db: Path, index: int, column: str) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return bytes(conn.execute(f"SELECT {column} FROM records WHERE idx=?", (index,)).fetchone()[0])
    finally:
        conn.close()


def database_broken(db: Path, key: str) -> LedgerBroken:
    with pytest.raises(LedgerBroken) as caught:
        verify_database(db, key=key)
    return caught.value


class TestDatabase:
    @settings(PROPERTY, max_examples=160)
    @given(kind=st.sampled_from(("flip", "leaf", "delete", "swap")), draw=st.data())
    def test_one_change_to_a_row_names_its_index(self, pristine: Fixture, kind: str, draw: st.DataObject) -> None:
        """
        A byte changed in a record's data or leaf hash, a deleted row (not the last) or two rows'
        data swapped: verify_database names the first row touched.
        """
        with tempfile.TemporaryDirectory(prefix="tamper-db-") as folder:
            db = copy_database(pristine, Path(folder))
            if kind in ("flip", "leaf"):
                index = draw.draw(st.integers(0, pristine.records - 1), label="index")
                column = "data" if kind == "flip" else "leaf"
                value = row(db, index, column)
                offset = draw.draw(st.integers(0, len(value) - 1), label="offset")
                xor = draw.draw(st.integers(1, 255), label="xor")
                value = value[:offset] + bytes([value[offset] ^ xor]) + value[offset + 1 :]
                tamper(db, (f"UPDATE records SET {column}=? WHERE idx=?", (value, index)))
                expected = index
            elif kind == "delete":
                expected = draw.draw(st.integers(0, pristine.records - 2), label="index")
                tamper(db, ("DELETE FROM records WHERE idx=?", (expected,)))
            else:
                expected = draw.draw(st.integers(0, pristine.records - 2), label="first")
                second = draw.draw(st.integers(expected + 1, pristine.records - 1), label="second")
                a, b = row(db, expected, "data"), row(db, second, "data")
                tamper(
                    db,
                    ("UPDATE records SET data=? WHERE idx=?", (b, expected)),
                    ("UPDATE records SET data=? WHERE idx=?", (a, second)),
                )
            error = database_broken(db, pristine.signer.verifier_key)

        assert expected == error.index, f"{kind}: {error.reason}"

    def test_cli_names_a_deleted_row(self, pristine: Fixture, scratch: Path) -> None:
        db = copy_database(pristine, scratch)
        tamper(db, ("DELETE FROM records WHERE idx=?", (11,)))

        result = CliRunner().invoke(main, ["verify", str(db), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        assert ["aiobligations: BROKEN: first bad index 11: the record is missing"] == result.stderr.strip().splitlines()

    def test_cli_names_an_altered_row(self, pristine: Fixture, scratch: Path) -> None:
        db = copy_database(pristine, scratch)
        value = row(db, 29, "data").replace(b'"kind":"interaction"', b'"kind":"interactioN"')
        tamper(db, ("UPDATE records SET data=? WHERE idx=?", (value, 29)))

        result = CliRunner().invoke(main, ["verify", str(db), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines) and lines[0].startswith("aiobligations: BROKEN: first bad index 29: "), lines

    @pytest.mark.parametrize("sql", [
        "UPDATE records SET data = replace(data, 'out', 'OUT') WHERE idx = 13",  # TEXT now
        "UPDATE records SET data = 7 WHERE idx = 13",
        "UPDATE records SET leaf = hex(leaf) WHERE idx = 13",
        "UPDATE records SET leaf = 0 WHERE idx = 13",
    ], ids=["replace-makes-text", "integer-data", "hex-leaf", "integer-leaf"])
    def test_sql_a_person_would_type_is_a_break_naming_the_row(self, pristine: Fixture, scratch: Path,
                                                                sql: str) -> None:
        """SQL that stores another type (SQLite's replace() returns TEXT) is a break at that row, exit 1."""
        db = copy_database(pristine, scratch)
        tamper(db, (sql, ()))

        result = CliRunner().invoke(main, ["verify", str(db), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines) and lines[0].startswith("aiobligations: BROKEN: first bad index 13: "), lines

    @pytest.mark.parametrize("first_deleted", [0, 1, 17, RECORDS - 1])
    def test_deleting_the_last_rows_names_the_first_missing_index(
        self, pristine: Fixture, scratch: Path, first_deleted: int
    ) -> None:
        db = copy_database(pristine, scratch)
        tamper(db, ("DELETE FROM records WHERE idx>=?", (first_deleted,)))

        error = database_broken(db, pristine.signer.verifier_key)

        assert first_deleted == error.index, error.reason

    def test_deleting_the_last_rows_is_still_a_break(self, pristine: Fixture, scratch: Path) -> None:
        """
        Whatever index it names, a truncated database is exit 1, never intact.
        """
        db = copy_database(pristine, scratch)
        tamper(db, ("DELETE FROM records WHERE idx>=?", (30,)))

        result = CliRunner().invoke(main, ["verify", str(db), "--key", pristine.signer.verifier_key])

        assert 1 == result.exit_code, result.output
        assert 1 == len(result.stderr.strip().splitlines())

    def test_a_tampered_interior_hash_is_a_break(self, pristine: Fixture, scratch: Path) -> None:
        db = copy_database(pristine, scratch)
        tamper(db, ("UPDATE nodes SET hash=zeroblob(32) WHERE level=4 AND idx=0", ()))

        error = database_broken(db, pristine.signer.verifier_key)

        assert 0 == error.index

    def test_a_tampered_interior_hash_breaks_a_partial_export(self, pristine: Fixture, scratch: Path) -> None:
        """
        Why the xfail above matters: the bundle exported from that database does not verify.
        """
        db = copy_database(pristine, scratch)
        tamper(db, ("UPDATE nodes SET hash=zeroblob(32) WHERE level=4 AND idx=0", ()))
        twentieth = parse_ts(pristine.members["records.jsonl"].splitlines()[20].split(b'"ts":"')[1].split(b'"')[0].decode())
        export_bundle(db, scratch / "partial", start_time=twentieth)

        with pytest.raises(LedgerBroken):
            verify_path(scratch / "partial", key=pristine.signer.verifier_key)



# -- records' macs: the altered record, named exactly, even with its hashes altered too ----------


class TestRecordMacs:
    """Issue 11, defect 10: a record altered together with every hash stored beside it.

    Without the record key nothing says which record of a subtree it was (the signed root commits
    to them all at once), so verify names the subtree. With the key, each record's mac names it.
    """

    @staticmethod
    def rehashed(pristine: Fixture, index: int, old: bytes, new: bytes) -> dict[str, bytes]:
        """records.jsonl with ``old`` replaced by ``new`` on line ``index``, and hashes.bin to match."""
        lines = pristine.members["records.jsonl"].splitlines(keepends=True)
        assert old in lines[index]
        lines[index] = lines[index].replace(old, new, 1)
        hashes = bytearray(pristine.members["hashes.bin"])
        hashes[32 * index : 32 * index + 32] = merkle.leaf_hash(lines[index][:-1])
        return {"records_jsonl": b"".join(lines), "hashes_bin": bytes(hashes)}

    @settings(PROPERTY, max_examples=60)
    @given(index=st.integers(0, RECORDS - 1), draw=st.data())
    def test_the_record_key_names_the_altered_bundle_record(self, pristine: Fixture, index: int,
                                                            draw: st.DataObject) -> None:
        line = pristine.members["records.jsonl"].splitlines()[index]
        at = draw.draw(st.integers(len(b'{"v":1,"idx":'), len(line) - 1), label="byte")
        new = bytes([line[at] ^ 0x01 if line[at] not in (0x0A ^ 0x01,) else line[at] ^ 0x02])
        key = record_mac_key(pristine.signer.private_key)
        with tempfile.TemporaryDirectory(prefix="tamper-") as folder:
            changed = self.rehashed(pristine, index, line[at - 12 : at + 1], line[at - 12 : at] + new)
            bundle = write_bundle(pristine, Path(folder), **changed)
            with pytest.raises(LedgerBroken) as caught:
                verify_path(bundle, key=pristine.signer.verifier_key, mac_key=key)
        assert index == caught.value.index, caught.value.reason

    def test_without_the_key_the_subtree_is_named_and_with_it_the_record(self, pristine: Fixture, scratch: Path) -> None:
        key = record_mac_key(pristine.signer.private_key)
        bundle = write_bundle(pristine, scratch, **self.rehashed(pristine, 21, b'"kind":"interaction"',
                                                                 b'"kind":"interactiom"'))
        assert 21 != broken(bundle, pristine.signer.verifier_key).index
        with pytest.raises(LedgerBroken, match="the record's mac does not match") as caught:
            verify_path(bundle, key=pristine.signer.verifier_key, mac_key=key)
        assert 21 == caught.value.index

        db = copy_database(pristine, scratch)
        data = sqlite3.connect(db).execute("SELECT data FROM records WHERE idx = 21").fetchone()[0]
        altered = data.replace(b'"kind":"interaction"', b'"kind":"interactiom"')
        tamper(db, ("UPDATE records SET data = ?, leaf = ? WHERE idx = 21", (altered, merkle.leaf_hash(altered))))
        result = CliRunner().invoke(main, ["verify", str(db), "--key", pristine.signer.verifier_key,
                                           "--mac-key", key.hex()])
        assert 1 == result.exit_code
        assert "first bad index 21: the record's mac does not match" in result.stderr, result.stderr

    def test_a_cut_off_mac_and_a_wrong_key(self, pristine: Fixture, scratch: Path) -> None:
        key = record_mac_key(pristine.signer.private_key)
        line = pristine.members["records.jsonl"].splitlines()[7]
        mac = line[line.rindex(b',"mac":') : -1]
        bundle = write_bundle(pristine, scratch, **self.rehashed(pristine, 7, mac, b""))
        with pytest.raises(LedgerBroken, match="the record's mac is missing") as caught:
            verify_path(bundle, key=pristine.signer.verifier_key, mac_key=key)
        assert 7 == caught.value.index
        # Another key: the very first record is named, never "intact".
        (scratch / "intact").mkdir()
        intact = write_bundle(pristine, scratch / "intact")
        with pytest.raises(LedgerBroken, match="mac does not match") as caught:
            verify_path(intact, key=pristine.signer.verifier_key, mac_key=bytes(32))
        assert 0 == caught.value.index
        report = verify_path(intact, key=pristine.signer.verifier_key, mac_key=key)
        assert f"checked the mac of {RECORDS} records with the record key: each is as the log wrote it" in report.notes

    def test_record_key_prints_what_verify_derives_from_the_profile(self, tmp_path: Path) -> None:
        from aiobligations.keys import init_project

        config = init_project(tmp_path / "svc")
        printed = CliRunner().invoke(main, ["record-key", "--config", str(config)])
        assert 0 == printed.exit_code, printed.output
        profile = load_profile(config)
        signer = load_signer(profile.ledger.signing_key, profile.ledger.origin)
        assert record_mac_key(signer.private_key).hex() == printed.stdout.strip()
        wrong = CliRunner().invoke(main, ["verify", str(tmp_path), "--mac-key", "zz", "--config", str(config)])
        assert 2 == wrong.exit_code and "--mac-key is not a record key" in wrong.stderr
