"""The store contract: one suite, run against the embedded SQLite store and the PostgreSQL store.

``PostgresStore`` implements the same :class:`~aiobligations.ledger.store.Store` protocol as
``SQLiteStore``, so everything built on the protocol (reads, crypto-shredding, proofs, receipts,
export, verify, pruning, key rotation, named locks, reopening, tamper evidence) must behave the same
on both. Every test here takes the ``backend`` fixture, parametrized over ``sqlite`` and
``postgres``, and never branches on which one it got: a difference between the two is a failure.

- ``sqlite``: a :class:`Ledger` with its own writer thread on ``tmp_path/ledger.db``
  (``make_ledger``); reopening is another ``make_ledger()`` on the same file.
- ``postgres``: a replica (``make_replica``) on a fresh schema of the local test database, whose
  elected sequencer writes the records; reopening is another ``make_replica()`` on the same schema.

The PostgreSQL half needs the database at ``conftest.PG_URL``: without it a local run skips those
cases, and a CI run (``CI=true``) fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ORIGIN

from aiobligations.cli import main
from aiobligations.ledger.records import mac_suffix, record_mac_key
from aiobligations.errors import (
    ConfigurationError,
    LedgerBroken,
    RetentionError,
    UnusableInput,
)
from aiobligations.ledger import (
    Ledger,
    MasterKey,
    Signer,
    SQLiteStore,
    Store,
    VerifyReport,
    export_bundle,
    merkle,
    verify_bundle,
    verify_database,
    verify_path,
)
from aiobligations.ledger.note import open_checkpoint
from aiobligations.ledger.receipts import (
    InvalidReceipt,
    make_receipt,
    parse_receipt,
    receipt_for_interaction,
    verify_receipt,
)
from aiobligations.ledger.records import parse_ts
from aiobligations.ledger.retention import DAY

CANARY = "CANARY-c0ffee-名前-9051"
"""Personal data that must never be stored in clear, in any table of either store."""

WAIT = 10.0
"""The longest any test waits for another thread (only a failing test waits this long)."""


# -- the two backends ----------------------------------------------------------------------------


@dataclass
class Backend:
    """One store kind, and what the tests need to reach around the ledger into it."""

    name: str
    open: Callable[..., Ledger]
    """Open (or reopen) the ledger; keyword arguments as for :class:`Ledger`."""
    readonly_store: Callable[[], Store]
    """A new read-only store on the same database, not yet opened (for export and verify)."""
    verify: Callable[..., VerifyReport]
    """Verify the live database (``verify_database`` or ``verify_postgres``)."""
    target: str
    """What ``verify_path`` and ``aiobligations verify`` take: the file, or the URL."""
    path_options: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for ``verify_path`` (the PostgreSQL schema)."""
    cli_options: list[str] = field(default_factory=list)
    """More arguments for ``aiobligations verify`` (``--schema``)."""
    _connect: Callable[[], Any] | None = None
    _placeholder: str = "?"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL on the ledger's database (unqualified table names; ``?`` placeholders)."""
        assert self._connect is not None
        conn = self._connect()
        try:
            rows = conn.execute(sql.replace("?", self._placeholder), params).fetchall()
        finally:
            conn.close()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]

    def execute(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        """Change the database behind the ledger's back, in one transaction; each statement must hit a row."""
        assert self._connect is not None
        conn = self._connect()
        try:
            with conn:  # Commits (both drivers) when the block ends.
                for sql, params in statements:
                    cursor = conn.execute(sql.replace("?", self._placeholder), params)
                    assert cursor.rowcount >= 1, sql
        finally:
            conn.close()

    def tables(self) -> list[str]:
        if self.name == "sqlite":
            return [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type='table'")]
        return [r[0] for r in self.query("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = current_schema()")]

    def dump(self) -> bytes:
        """Every value of every row of every table of the ledger, as bytes (for 'nothing in clear')."""
        out = []
        for table in self.tables():
            for row in self.query(f"SELECT * FROM {table}"):
                for value in row:
                    out.append(value if isinstance(value, bytes) else str(value).encode())
        return b"\x00".join(out)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, make_ledger: Callable[..., Ledger]) -> Backend:
    """The same ledger API over either store (PostgreSQL fixtures are only requested for ``postgres``)."""
    if request.param == "sqlite":
        db = tmp_path / "ledger.db"
        return Backend(
            name="sqlite",
            open=lambda **kwargs: make_ledger(**kwargs),
            readonly_store=lambda: SQLiteStore(db, create=False, readonly=True),
            verify=lambda **kwargs: verify_database(db, **kwargs),
            target=str(db),
            _connect=lambda: sqlite3.connect(db),
        )
    import psycopg

    from aiobligations.ledger.postgres import PostgresStore
    from aiobligations.ledger.verify import verify_postgres

    url: str = request.getfixturevalue("pg_url")
    schema: str = request.getfixturevalue("pg_schema")
    make_replica: Callable[..., Ledger] = request.getfixturevalue("make_replica")
    return Backend(
        name="postgres",
        open=lambda **kwargs: make_replica(**kwargs),
        readonly_store=lambda: PostgresStore(url, schema=schema, readonly=True),
        verify=lambda **kwargs: verify_postgres(url, schema=schema, **kwargs),
        target=url,
        path_options={"schema": schema},
        cli_options=["--schema", schema],
        _connect=lambda: psycopg.connect(url, options=f"-c search_path={schema}"),
        _placeholder="%s",
    )


@pytest.fixture(autouse=True)
def _no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads ./aiobligations.toml when there is one: run where there is none.
    monkeypatch.chdir(tmp_path)


# -- helpers -----------------------------------------------------------------------------------


def interaction(i: int, subject: str = "alice") -> dict[str, Any]:
    return {
        "kind": "interaction",
        "interaction_id": f"id-{i}",
        "route": "/v1/chat/completions",
        "subject": subject,
        "personal": {"prompt": f"{CANARY} {i}", "output": "echo"},
    }


def fill(ledger: Ledger, count: int, kind: str = "log", start: int = 0) -> int:
    """Submit ``count`` records without waiting, then flush; return the log size."""
    for n in range(start, start + count):
        ledger.submit({"kind": kind, "n": n})
    return ledger.flush(WAIT)


def stored_leaf(backend: Backend, index: int) -> bytes:
    """The leaf hash as stored in the records table."""
    return backend.query("SELECT leaf FROM records WHERE idx = ?", (index,))[0][0]


def verify_cli(backend: Backend, key: str) -> Any:
    return CliRunner().invoke(main, ["verify", backend.target, *backend.cli_options, "--key", key])


# -- writing and reading -------------------------------------------------------------------------


class TestRoundTrip:
    def test_append_submit_flush_and_read(self, backend: Backend) -> None:
        """append returns contiguous indices, submit+flush makes records durable, read gives them back."""
        ledger = backend.open()

        indices = [ledger.append(interaction(i)) for i in range(5)]
        size = fill(ledger, 20, start=5)

        assert [0, 1, 2, 3, 4] == indices
        assert 25 == size == ledger.size
        record = ledger.read(3)
        assert (1, 3, "interaction", "id-3") == (record["v"], record["idx"], record["kind"], record["interaction_id"])
        assert {"prompt": f"{CANARY} 3", "output": "echo"} == record["personal"]
        assert "sealed" not in record and record["subject"] != "alice"
        assert {"v": 1, "idx": 24, "kind": "log", "n": 24} == {k: v for k, v in ledger.read(24).items() if k != "ts"}
        with pytest.raises(IndexError):
            ledger.read(25)

    def test_concurrent_aappend_gets_distinct_contiguous_indices(self, backend: Backend) -> None:
        """Many coroutines appending at once get every index exactly once."""
        ledger = backend.open()

        async def producer(k: int) -> list[int]:
            return [await ledger.aappend({"kind": "log", "k": k, "i": i}) for i in range(5)]

        async def run() -> list[list[int]]:
            return await asyncio.gather(*(producer(k) for k in range(8)))

        results = asyncio.run(run())

        assert list(range(40)) == sorted(i for batch in results for i in batch)
        assert 40 == ledger.durable_size()

    def test_durable_size_and_size_agree_after_a_flush(self, backend: Backend) -> None:
        """durable_size (asks the store) and size (what this process heard) both count every stored record."""
        ledger = backend.open()
        assert (0, 0) == (ledger.size, ledger.durable_size())

        ledger.append({"kind": "log"})
        assert (1, 1) == (ledger.size, ledger.durable_size())
        fill(ledger, 9)

        assert (10, 10) == (ledger.size, ledger.durable_size())
        assert [(10,)] == backend.query("SELECT count(*) FROM records")

    def test_leaf_is_the_exact_stored_bytes(self, backend: Backend) -> None:
        """leaf(i) is the record's exact bytes: compact JSON whose RFC 9162 leaf hash is the stored one."""
        ledger = backend.open()
        ledger.append({"kind": "risk", "summary": "多行\ntext", "score": 3})
        ledger.append(interaction(1))

        for index in (0, 1):
            leaf = ledger.leaf(index)
            assert leaf is not None and leaf.startswith(b'{"v":1,"idx":%d,"ts":"' % index)
            assert b"\n" not in leaf
            assert [(leaf,)] == backend.query("SELECT data FROM records WHERE idx = ?", (index,))
            assert merkle.leaf_hash(leaf) == stored_leaf(backend, index)
        assert ["v", "idx", "ts", "kind", "summary", "score", "mac"] == list(json.loads(ledger.leaf(0) or b""))
        assert ledger.leaf(2) is None

    def test_read_checks_the_mac_and_leaves_it_out(self, backend: Backend) -> None:
        """A record altered in the store (its hash too) no longer reads: its mac does not match."""
        ledger = backend.open()
        ledger.append({"kind": "risk", "summary": "ok", "score": 3})
        assert "mac" not in ledger.read(0)
        altered = (ledger.leaf(0) or b"").replace(b'"score":3', b'"score":4')
        backend.execute(("UPDATE records SET data = ?, leaf = ? WHERE idx = 0", (altered, merkle.leaf_hash(altered))))
        with pytest.raises(LedgerBroken, match="mac does not match") as caught:
            ledger.read(0)
        assert 0 == caught.value.index

    def test_find_interaction(self, backend: Backend) -> None:
        """One lookup finds an interaction record by id; the first record of a repeated id keeps it;
        ids no record could hold (NUL, a lone surrogate, not a string) name nothing."""
        ledger = backend.open()
        for i in range(4):
            ledger.append(interaction(i))
            ledger.append({"kind": "log", "interaction_id": f"id-{i}-log"})
        repeat = ledger.append(interaction(2))

        assert [0, 2, 4, 6] == [ledger.find_interaction(f"id-{i}") for i in range(4)]
        assert 8 == repeat
        assert ledger.find_interaction("id-0-log") is None  # Only interaction records are indexed.
        for missing in ("id-9", "", "id-1\x00", "\ud800", 7):
            assert ledger.find_interaction(missing) is None, missing

    def test_indices_of(self, backend: Backend) -> None:
        """indices_of lists the stored indices of the given kinds in [start, end), in order."""
        ledger = backend.open()
        for kind in ("interaction", "log", "interaction", "log", "interaction", "log", "risk"):
            ledger.append({"kind": kind})

        assert [0, 2, 4] == ledger.indices_of(("interaction",), 0, 7)
        assert [3, 5, 6] == ledger.indices_of(("log", "risk"), 2, 7)
        assert [1, 3] == ledger.indices_of(("log",), 0, 5)
        assert [] == ledger.indices_of(("risk",), 0, 6)
        assert [] == ledger.indices_of(("nothing",), 0, 7)
        assert [] == ledger.indices_of((), 0, 7)

    def test_an_interaction_id_with_nul_is_stored_and_does_not_stop_the_log(self, backend: Backend) -> None:
        """A record whose interaction id holds NUL (which PostgreSQL text cannot) is stored with the id
        intact, and the records after it are taken as usual."""
        ledger = backend.open()
        ledger.append({"kind": "log"})

        index = ledger.append({"kind": "interaction", "interaction_id": "a\x00b"}, timeout=WAIT)

        assert 1 == index
        assert "a\x00b" == ledger.read(index)["interaction_id"]
        assert 2 == ledger.append(interaction(2), timeout=WAIT)
        assert 2 == ledger.find_interaction("id-2")
        assert ledger.find_interaction("a\x00b") in (None, index)  # SQLite indexes it, PostgreSQL cannot.

    def test_a_kind_with_nul_never_stops_the_log(self, backend: Backend, signer: Signer) -> None:
        """A record whose kind holds NUL takes its index: SQLite stores it as given; PostgreSQL, whose text
        cannot hold NUL, stores a ``ledger.record_refused`` record saying why in its place. Either way the
        records after it are taken as usual and the log verifies."""
        ledger = backend.open()

        index = ledger.append({"kind": "lo\x00g", "n": 1}, timeout=WAIT)

        record = ledger.read(index)
        if record["kind"] != "lo\x00g":
            assert "ledger.record_refused" == record["kind"], record
            assert "NUL" in record["error"], record
        assert index + 1 == ledger.append({"kind": "log"}, timeout=WAIT)
        ledger.close()
        assert index + 2 == backend.verify(key=signer.verifier_key).end


# -- personal data -------------------------------------------------------------------------------


class TestPersonalData:
    def test_personal_is_sealed_at_rest_and_opens_on_read(self, backend: Backend) -> None:
        """No table holds the personal data or the subject in clear; each record carries it sealed."""
        ledger = backend.open()
        for i in range(6):
            ledger.append(interaction(i, "alice" if i % 2 else "bob"))

        for (data,) in backend.query("SELECT data FROM records"):
            assert CANARY.encode() not in data and b"alice" not in data and b"bob" not in data
            assert base64.b64decode(json.loads(data)["sealed"])
        dump = backend.dump()
        assert CANARY.encode() not in dump
        assert b"alice" not in dump and b"bob" not in dump
        assert f"{CANARY} 5" == ledger.read(5)["personal"]["prompt"]

    def test_erasure_shreds_the_subject(self, backend: Backend, signer: Signer) -> None:
        """erase_subject deletes the key and appends a PII-free record; the erased records keep their
        sealed value and lose personal; other subjects are untouched; the log still verifies."""
        ledger = backend.open()
        for i in range(6):
            ledger.append(interaction(i, "alice" if i % 2 else "bob"))
        pseudonym = ledger.pseudonym("alice")
        wrapped = backend.query("SELECT wrapped FROM subject_keys WHERE pseudonym = ?", (pseudonym,))[0][0]

        erased_at = ledger.erase_subject("alice")

        assert 6 == erased_at
        erased = ledger.read(erased_at)
        assert ("subject.erased", pseudonym) == (erased["kind"], erased["subject"])
        assert CANARY.encode() not in (ledger.leaf(erased_at) or b"")
        for index in (1, 3, 5):
            record = ledger.read(index)
            assert "personal" not in record and record["sealed"], index
        assert f"{CANARY} 4" == ledger.read(4)["personal"]["prompt"]
        assert [] == backend.query("SELECT pseudonym FROM subject_keys WHERE pseudonym = ?", (pseudonym,))
        assert wrapped not in backend.dump()
        ledger.sign_checkpoint()
        assert 7 == backend.verify(key=signer.verifier_key).checkpoint_size

    def test_a_subject_writing_again_after_erasure_gets_a_new_key(self, backend: Backend) -> None:
        """Records of an erased subject written later are sealed under a new key and readable; the old stay shut."""
        ledger = backend.open()
        ledger.append(interaction(0, "alice"))
        ledger.erase_subject("alice")

        index = ledger.append(interaction(2, "alice"))

        assert f"{CANARY} 2" == ledger.read(index)["personal"]["prompt"]
        assert "personal" not in ledger.read(0)
        assert [(1,)] == backend.query("SELECT count(*) FROM subject_keys WHERE pseudonym = ?",
                                       (ledger.pseudonym("alice"),))

    def test_sealed_data_moved_to_another_record_does_not_open(self, backend: Backend) -> None:
        """A sealed value is bound to its record's index: copied into another record, it is a break.

        The record's mac is made anew with the record key, as its holder could: the sealing's own
        binding is what is tested, not the mac.
        """
        ledger = backend.open()
        ledger.append(interaction(0))
        ledger.append(interaction(1))
        first, second = (json.loads(ledger.leaf(i) or b"") for i in (0, 1))
        second["sealed"] = first["sealed"]
        del second["mac"]
        head = json.dumps(second, ensure_ascii=False, separators=(",", ":")).encode()[:-1]
        backend.execute(("UPDATE records SET data = ? WHERE idx = 1",
                         (head + mac_suffix(record_mac_key(ledger.signer.private_key), head),)))

        with pytest.raises(LedgerBroken, match="sealed data does not open") as caught:
            ledger.read(1)
        assert 1 == caught.value.index

    def test_master_key_rotation_rewraps_without_touching_records(self, backend: Backend, signer: Signer) -> None:
        """rotate_master_key re-wraps every subject key; records stay byte for byte; reads still open; on
        reopen only the new key is accepted."""
        ledger = backend.open()
        for i in range(4):
            ledger.append(interaction(i, f"user-{i}"))
        before = backend.query("SELECT idx, leaf, data FROM records ORDER BY idx")
        keys = dict(backend.query("SELECT pseudonym, wrapped FROM subject_keys"))
        new = MasterKey.generate()

        assert 4 == ledger.rotate_master_key(new)

        assert f"{CANARY} 2" == ledger.read(2)["personal"]["prompt"]
        assert before == backend.query("SELECT idx, leaf, data FROM records ORDER BY idx")
        after = dict(backend.query("SELECT pseudonym, wrapped FROM subject_keys"))
        assert keys.keys() == after.keys() and all(keys[p] != after[p] for p in keys)
        assert {(new.key_id,)} == set(backend.query("SELECT master_id FROM subject_keys"))
        index = ledger.append(interaction(4, "user-0"))
        assert f"{CANARY} 4" == ledger.read(index)["personal"]["prompt"]
        ledger.close()

        with pytest.raises(ConfigurationError, match="master key"):
            backend.open()  # The fixture's old master key no longer opens the ledger.
        reopened = backend.open(master_key=new)
        assert f"{CANARY} 1" == reopened.read(1)["personal"]["prompt"]
        assert 5 == backend.verify(key=signer.verifier_key).checkpoint_size


# -- proofs, checkpoints and receipts ------------------------------------------------------------------


class TestProofs:
    def test_inclusion_and_consistency_proofs_verify(self, backend: Backend) -> None:
        """Inclusion proofs of records and consistency proofs between checkpoints verify (RFC 9162)."""
        ledger = backend.open(max_batch=7)
        checkpoints = []
        for i in range(150):
            ledger.submit({"kind": "log", "n": i})
            if i % 37 == 0:
                ledger.flush(WAIT)
                checkpoints.append(open_checkpoint(ledger.verifier, ledger.sign_checkpoint()))
        final = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        assert 150 == final.size
        assert [1, 38, 75, 112, 149] == [c.size for c in checkpoints]

        for index in (0, 1, 15, 16, 17, 63, 64, 100, 149):
            proof = ledger.inclusion_proof(index, final.size)
            merkle.verify_inclusion(merkle.leaf_hash(ledger.leaf(index) or b""), index, final.size, proof, final.root)
            old = checkpoints[2]
            if index < old.size:
                proof = ledger.inclusion_proof(index, old.size)
                merkle.verify_inclusion(stored_leaf(backend, index), index, old.size, proof, old.root)
        for old in checkpoints:
            proof = ledger.consistency_proof(old.size, final.size)
            merkle.verify_consistency(old.size, final.size, proof, old.root, final.root)
        wrong = ledger.inclusion_proof(3, final.size)
        with pytest.raises(merkle.InvalidProof):
            merkle.verify_inclusion(merkle.leaf_hash(ledger.leaf(4) or b""), 3, final.size, wrong, final.root)

    def test_stored_interior_hashes_equal_a_memory_tree(self, backend: Backend) -> None:
        """Every subtree hash the store serves equals the one of a tree built in memory from the leaves."""
        ledger = backend.open(max_batch=5)
        fill(ledger, 300)
        tree = merkle.MemoryTree(ledger.leaf(i) or b"" for i in range(300))

        for level in range(9):
            for index in range(300 >> level):
                assert tree.subtree(level, index) == ledger.reader.subtree(level, index), (level, index)
        assert {4, 8} == {level for (level,) in backend.query("SELECT DISTINCT level FROM nodes")}

    def test_sign_checkpoint(self, backend: Backend) -> None:
        """sign_checkpoint signs the whole log: origin, size and the Merkle root of every leaf."""
        ledger = backend.open(checkpoint_interval=3600)
        fill(ledger, 20)

        note = ledger.sign_checkpoint()

        checkpoint = open_checkpoint(ledger.verifier, note)
        assert (ORIGIN, 20) == (checkpoint.origin, checkpoint.size)
        assert merkle.root_of(merkle.leaf_hash(ledger.leaf(i) or b"") for i in range(20)) == checkpoint.root
        assert note == ledger.checkpoint
        ledger.append({"kind": "log"})
        assert note == ledger.checkpoint  # Within the interval: no new signature yet.
        assert 21 == open_checkpoint(ledger.verifier, ledger.sign_checkpoint()).size

    def test_checkpoint_history(self, backend: Backend) -> None:
        """checkpoints() keeps the signed history, oldest first, each note signing its own size."""
        ledger = backend.open(history_interval=0)
        for i in range(3):
            ledger.append({"kind": "log", "n": i})
        store = backend.readonly_store()
        try:
            store.open()
            history = store.checkpoints()
        finally:
            store.close()

        assert [1, 2, 3] == [size for size, _, _ in history]
        times = [ts for _, ts, _ in history]
        assert times == sorted(times)
        for size, _, note in history:
            assert size == open_checkpoint(ledger.verifier, note).size
        assert history[-1][2] == ledger.checkpoint

    def test_checkpoint_history_is_thinned_by_history_interval(self, backend: Backend) -> None:
        """With a long history_interval only the first checkpoint of the interval is kept."""
        ledger = backend.open(history_interval=3600)
        for i in range(3):
            ledger.append({"kind": "log", "n": i})

        assert [(1,)] == backend.query("SELECT size FROM checkpoints")


class TestReceipts:
    def test_receipts_verify_for_first_middle_last(self, backend: Backend, signer: Signer) -> None:
        """A receipt carries the record and its inclusion proof against a signed checkpoint, and verifies
        with the public key alone."""
        ledger = backend.open()
        fill(ledger, 9)

        for index in (0, 4, 8):
            text = make_receipt(ledger, index)
            checkpoint = verify_receipt(text, signer.verifier_key)
            assert (ORIGIN, 9) == (checkpoint.origin, checkpoint.size)
            receipt = parse_receipt(text)
            assert (index, ledger.leaf(index)) == (receipt.index, receipt.extra)
            assert checkpoint == verify_receipt(text, signer.verifier_key, record=receipt.extra)

    def test_receipt_for_an_interaction_and_a_forged_one(self, backend: Backend, signer: Signer) -> None:
        """receipt_for_interaction finds the record by id; a receipt whose record was altered does not verify."""
        ledger = backend.open()
        for i in range(5):
            ledger.append(interaction(i))

        text = receipt_for_interaction(ledger, "id-3")

        assert text is not None
        assert 3 == parse_receipt(text).index
        assert 5 == verify_receipt(text, signer.verifier_key).size
        assert receipt_for_interaction(ledger, "id-404") is None
        forged = (ledger.leaf(3) or b"").replace(b'"id-3"', b'"id-4"')
        with pytest.raises(InvalidReceipt):
            verify_receipt(text, signer.verifier_key, record=forged)
        with pytest.raises(InvalidReceipt):
            verify_receipt(text, Signer.generate(ORIGIN).verifier_key)


# -- export and verify -------------------------------------------------------------------------------


class TestExportAndVerify:
    def test_export_bundle_from_the_store_verifies(self, backend: Backend, tmp_path: Path, signer: Signer) -> None:
        """export_bundle reads any Store; the bundle (folder and .tar.gz) verifies with the right counts and
        holds the exact stored bytes, with nothing personal in clear."""
        ledger = backend.open(max_batch=4)
        for i in range(10):
            ledger.append(interaction(i))
        earlier = ledger.sign_checkpoint()
        fill(ledger, 20)
        ledger.sign_checkpoint()

        manifest = export_bundle(backend.readonly_store(), tmp_path / "bundle", since_checkpoint=earlier)
        export_bundle(backend.readonly_store(), tmp_path / "bundle.tar.gz")

        assert (0, 30, 30, ORIGIN) == (manifest["start"], manifest["end"], manifest["records"], manifest["origin"])
        report = verify_bundle(tmp_path / "bundle", key=signer.verifier_key, since_checkpoint=earlier)
        assert (0, 30, 30, 10, True) == (report.start, report.end, report.checkpoint_size, report.since, report.pinned)
        tarred = verify_path(tmp_path / "bundle.tar.gz", key=signer.verifier_key)
        assert (0, 30, 30) == (tarred.start, tarred.end, tarred.checkpoint_size)
        lines = (tmp_path / "bundle" / "records.jsonl").read_bytes()
        assert b"".join((ledger.leaf(i) or b"") + b"\n" for i in range(30)) == lines
        assert CANARY.encode() not in lines
        hashes = (tmp_path / "bundle" / "hashes.bin").read_bytes()
        assert [stored_leaf(backend, i) for i in range(30)] == [hashes[i : i + 32] for i in range(0, 960, 32)]

    def test_a_partial_export_verifies_against_the_latest_checkpoint(self, backend: Backend, tmp_path: Path,
                                                                     signer: Signer) -> None:
        """A time range of the log exports the records in it plus the compact ranges around them."""
        ledger = backend.open(max_batch=4)
        for i in range(30):
            ledger.append({"kind": "log", "n": i})
        ts = [row[0] for row in backend.query("SELECT ts FROM records ORDER BY idx")]  # Exact, not rounded.

        export_bundle(backend.readonly_store(), tmp_path / "part", start_time=ts[9], end_time=ts[20])
        report = verify_path(tmp_path / "part", key=signer.verifier_key)

        assert (ts.index(ts[9]), ts.index(ts[20]), 30) == (report.start, report.end, report.checkpoint_size)

    def test_the_live_database_verifies(self, backend: Backend, signer: Signer) -> None:
        """The live database verifies (API, verify_path on the file or URL, and the CLI, exit 0), also
        against an earlier checkpoint."""
        ledger = backend.open(max_batch=3)
        for i in range(12):
            ledger.append(interaction(i, f"user-{i % 3}"))
        earlier = ledger.sign_checkpoint()
        fill(ledger, 25)
        ledger.erase_subject("user-1")

        report = backend.verify(key=signer.verifier_key, since_checkpoint=earlier)

        assert (0, 38, 38, 0, 12) == (report.start, report.end, report.checkpoint_size, report.unsigned, report.since)
        assert report.pinned and ORIGIN == report.origin
        by_path = verify_path(backend.target, key=signer.verifier_key, **backend.path_options)
        assert (report.root, report.end) == (by_path.root, by_path.end)
        result = verify_cli(backend, signer.verifier_key)
        assert 0 == result.exit_code, result.output
        assert result.stdout.startswith(f"intact: 38 records [0, 38) of {ORIGIN}, tree size 38"), result.stdout

    def test_a_ledger_without_a_checkpoint_is_unusable_input(self, backend: Backend, tmp_path: Path,
                                                              signer: Signer) -> None:
        """A new, empty ledger has nothing signed: verify and export say so (unusable input, exit 2)."""
        backend.open()

        with pytest.raises(UnusableInput, match="no signed checkpoint yet"):
            backend.verify(key=signer.verifier_key)
        with pytest.raises(UnusableInput, match="no signed checkpoint yet"):
            export_bundle(backend.readonly_store(), tmp_path / "bundle")
        assert not (tmp_path / "bundle").exists()
        result = verify_cli(backend, signer.verifier_key)
        assert 2 == result.exit_code, result.output
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr

    def test_verify_refuses_another_key(self, backend: Backend, signer: Signer) -> None:
        """A pinned verifier key that did not sign the ledger is a break (CLI exit 1), never 'intact'."""
        ledger = backend.open()
        ledger.append({"kind": "log"})

        result = verify_cli(backend, Signer.generate(ORIGIN).verifier_key)

        assert 1 == result.exit_code, result.output
        assert "signed by another key" in result.stderr
        assert "intact" not in result.output


# -- retention -----------------------------------------------------------------------------------------


class TestRetention:
    def test_pruning_inside_the_retention_period_is_refused(self, backend: Backend) -> None:
        """prune refuses to delete a record still inside its retention period, and deletes nothing."""
        ledger = backend.open()
        fill(ledger, 10, kind="interaction")

        with pytest.raises(RetentionError, match=r"record 0 \(interaction\) is inside its retention period"):
            ledger.prune(5)
        assert 0 == ledger.first_index
        assert [(10,)] == backend.query("SELECT count(*) FROM records")
        assert 0 == ledger.prune()  # Nothing expired: nothing pruned.

    def test_a_pruned_log_still_verifies_proves_and_exports(self, backend: Backend, tmp_path: Path,
                                                           signer: Signer) -> None:
        """After pruning expired records the rest verify, prove inclusion and consistency against old and
        new checkpoints, export, and survive a reopen."""
        ledger = backend.open(max_batch=3)
        for i in range(40):
            ledger.submit({"kind": "log" if i < 30 else "assessment", "n": i})
        ledger.flush(WAIT)
        old = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        later = parse_ts(ledger.read(39)["ts"]) + 200 * DAY

        assert 30 == ledger.prunable(now=later)  # The assessments (5 years) hold the rest.
        assert 21 == ledger.prune(21, now=later)
        with pytest.raises(RetentionError, match="record 30"):
            ledger.prune(31, now=later)

        assert 21 == ledger.first_index
        assert [(21, 39)] == backend.query("SELECT min(idx), max(idx) FROM records")
        with pytest.raises(IndexError):
            ledger.read(20)
        assert ledger.leaf(20) is None
        with pytest.raises(IndexError):
            make_receipt(ledger, 20)
        for i in range(5):
            ledger.append({"kind": "log", "n": 40 + i})
        new = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        for index in (21, 32, 44):  # 22..31 are test_records_beside_the_pruned_prefix_prove_inclusion.
            proof = ledger.inclusion_proof(index, new.size)
            merkle.verify_inclusion(stored_leaf(backend, index), index, new.size, proof, new.root)
        merkle.verify_consistency(old.size, new.size, ledger.consistency_proof(old.size, new.size), old.root, new.root)
        assert 45 == verify_receipt(make_receipt(ledger, 21), signer.verifier_key).size

        report = backend.verify(key=signer.verifier_key, since_checkpoint=ledger.checkpoint)
        assert (21, 45, 45) == (report.start, report.end, report.checkpoint_size)
        export_bundle(backend.readonly_store(), tmp_path / "bundle")
        bundle = verify_path(tmp_path / "bundle", key=signer.verifier_key)
        assert (21, 45) == (bundle.start, bundle.end)
        ledger.close()

        reopened = backend.open()
        assert (21, 45) == (reopened.first_index, reopened.size)
        assert 45 == reopened.append({"kind": "log", "n": 45})
        assert 46 == backend.verify(key=signer.verifier_key).end


    def test_records_beside_the_pruned_prefix_prove_inclusion(self, backend: Backend, signer: Signer) -> None:
        """Every record still stored after a prune at an unaligned index has an inclusion proof and a receipt."""
        ledger = backend.open(max_batch=8)
        for i in range(45):
            ledger.submit({"kind": "log" if i < 30 else "assessment", "n": i})
        ledger.flush(WAIT)
        later = parse_ts(ledger.read(44)["ts"]) + 200 * DAY
        assert 21 == ledger.prune(21, now=later)
        checkpoint = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())

        for index in range(21, 45):
            proof = ledger.inclusion_proof(index, checkpoint.size)
            merkle.verify_inclusion(stored_leaf(backend, index), index, checkpoint.size, proof, checkpoint.root)
            assert 45 == verify_receipt(make_receipt(ledger, index), signer.verifier_key).size


    def test_verify_since_a_checkpoint_inside_the_pruned_prefix_is_unusable_input(
            self, backend: Backend, tmp_path: Path, signer: Signer, request: pytest.FixtureRequest) -> None:
        """An earlier checkpoint of a size inside the pruned prefix cannot be linked to the log any more:
        verify says so as unusable input (exit 2, one line), never a crash and never 'intact'."""
        ledger = backend.open()
        fill(ledger, 10)
        early = ledger.sign_checkpoint()
        fill(ledger, 35, start=10)
        later = parse_ts(ledger.read(44)["ts"]) + 200 * DAY
        assert 21 == ledger.prune(21, now=later)
        (tmp_path / "early").write_text(early)

        result = CliRunner().invoke(main, ["verify", backend.target, *backend.cli_options, "--key",
                                           signer.verifier_key, "--since-checkpoint", str(tmp_path / "early")])
        with pytest.raises(UnusableInput):
            backend.verify(key=signer.verifier_key, since_checkpoint=early)

        assert 2 == result.exit_code, result.output
        assert 1 == len(result.stderr.strip().splitlines()), result.stderr


# -- locks, reopening, configuration -------------------------------------------------------------------


class TestLocks:
    def test_a_named_lock_excludes_a_second_holder(self, backend: Backend) -> None:
        """While one holder has lock(name), a second waits; it gets the lock once the first lets go."""
        ledger = backend.open()
        trying, acquired = threading.Event(), threading.Event()
        order: list[str] = []

        def second() -> None:
            trying.set()
            with ledger.lock("contract"):
                order.append("second acquired")
                acquired.set()

        thread = threading.Thread(target=second, daemon=True)
        with ledger.lock("contract"):
            thread.start()
            assert trying.wait(WAIT)
            assert not acquired.wait(0.5), "the second holder got the lock while the first held it"
            order.append("first releasing")
        assert acquired.wait(WAIT), "the second holder never got the lock after the first let go"
        thread.join(WAIT)
        assert ["first releasing", "second acquired"] == order

    def test_locks_of_other_names_do_not_exclude_each_other(self, backend: Backend) -> None:
        """lock('a') held does not stop lock('b'); a name must be an identifier."""
        ledger = backend.open()
        acquired = threading.Event()

        def other() -> None:
            with ledger.lock("other_name"):
                acquired.set()

        with ledger.lock("contract"):
            thread = threading.Thread(target=other, daemon=True)
            thread.start()
            assert acquired.wait(WAIT)
        thread.join(WAIT)
        with pytest.raises(ValueError, match="identifier"), ledger.lock("not a name"):
            pass


class TestReopen:
    def test_close_and_reopen_keeps_everything(self, backend: Backend, signer: Signer) -> None:
        """Records, personal data, erasures, interaction ids, the checkpoint and the tree survive a
        close; appends continue at the next index; the reopened log verifies."""
        ledger = backend.open()
        for i in range(37):
            ledger.append(interaction(i, "alice" if i % 2 else "bob"))
        ledger.erase_subject("alice")
        root = open_checkpoint(ledger.verifier, ledger.checkpoint or "").root
        leaves = backend.query("SELECT idx, leaf FROM records ORDER BY idx")
        ledger.close()
        assert ledger.closed

        reopened = backend.open()

        assert (38, 38) == (reopened.size, reopened.durable_size())
        assert root == open_checkpoint(reopened.verifier, reopened.checkpoint or "").root
        assert f"{CANARY} 36" == reopened.read(36)["personal"]["prompt"]
        assert "personal" not in reopened.read(35)
        assert 20 == reopened.find_interaction("id-20")
        assert 38 == reopened.append(interaction(38, "alice"))
        assert f"{CANARY} 38" == reopened.read(38)["personal"]["prompt"]
        assert leaves == backend.query("SELECT idx, leaf FROM records WHERE idx < 38 ORDER BY idx")
        reopened.close()
        assert 39 == backend.verify(key=signer.verifier_key).checkpoint_size

    def test_another_origin_signing_key_or_master_key_is_refused(self, backend: Backend) -> None:
        """Reopening with another origin, another signing key or another master key is a ConfigurationError,
        and leaves the ledger usable with the right ones."""
        ledger = backend.open()
        ledger.append({"kind": "log"})
        ledger.close()

        with pytest.raises(ConfigurationError, match="origin"):
            backend.open(origin="elsewhere.example/log", signer=Signer.generate("elsewhere.example/log"))
        with pytest.raises(ConfigurationError, match="signed by"):
            backend.open(signer=Signer.generate(ORIGIN))
        with pytest.raises(ConfigurationError, match="master key"):
            backend.open(master_key=MasterKey.generate())
        assert 1 == backend.open().append({"kind": "log"})


# -- tamper evidence -----------------------------------------------------------------------------------

RECORDS = 40


def _edit_data(backend: Backend) -> int:
    data = backend.query("SELECT data FROM records WHERE idx = 13")[0][0]
    changed = data.replace(b'"kind":"interaction"', b'"kind":"interactioN"')
    backend.execute(("UPDATE records SET data = ? WHERE idx = 13", (changed,)))
    return 13


def _flip_sealed(backend: Backend) -> int:
    data = backend.query("SELECT data FROM records WHERE idx = 26")[0][0]
    record = json.loads(data)
    sealed = bytearray(base64.b64decode(record["sealed"]))
    sealed[-1] ^= 0x01
    changed = data.replace(record["sealed"].encode(), base64.b64encode(bytes(sealed)))
    backend.execute(("UPDATE records SET data = ? WHERE idx = 26", (changed,)))
    return 26


def _delete_row(backend: Backend) -> int:
    backend.execute(("DELETE FROM records WHERE idx = 11", ()))
    return 11


def _delete_last_row(backend: Backend) -> int:
    backend.execute(("DELETE FROM records WHERE idx = ?", (RECORDS - 1,)))
    return RECORDS - 1


def _swap_data(backend: Backend) -> int:
    a, b = (backend.query("SELECT data FROM records WHERE idx = ?", (i,))[0][0] for i in (5, 20))
    backend.execute(("UPDATE records SET data = ? WHERE idx = 5", (b,)), ("UPDATE records SET data = ? WHERE idx = 20", (a,)))
    return 5


def _reorder_rows(backend: Backend) -> int:
    """Swap two whole rows (data and leaf hash): each row matches its own hash, but not its position."""
    rows = {i: backend.query("SELECT ts, kind, leaf, data FROM records WHERE idx = ?", (i,))[0] for i in (8, 9)}
    sql = "UPDATE records SET ts = ?, kind = ?, leaf = ?, data = ? WHERE idx = ?"
    backend.execute((sql, (*rows[9], 8)), (sql, (*rows[8], 9)))
    return 8


def _alter_leaf(backend: Backend) -> int:
    leaf = bytearray(stored_leaf(backend, 17))
    leaf[0] ^= 0x80
    backend.execute(("UPDATE records SET leaf = ? WHERE idx = 17", (bytes(leaf),)))
    return 17


def _alter_node(backend: Backend) -> int:
    """The stored hash of the perfect subtree over records 16..31 (level 4, index 1)."""
    backend.execute(("UPDATE nodes SET hash = ? WHERE level = 4 AND idx = 1", (bytes(32),)))
    return 16


def _delete_node(backend: Backend) -> int:
    backend.execute(("DELETE FROM nodes WHERE level = 4 AND idx = 1", ()))
    return 16


def _append_row(backend: Backend) -> int:
    """A well-formed record 40, with its own correct hash, added past the signed end of the log."""
    ts, kind, data = backend.query("SELECT ts, kind, data FROM records WHERE idx = ?", (RECORDS - 1,))[0]
    forged = data.replace(b'"idx":%d,' % (RECORDS - 1), b'"idx":%d,' % RECORDS, 1)
    backend.execute(("INSERT INTO records (idx, ts, kind, leaf, data) VALUES (?, ?, ?, ?, ?)",
                     (RECORDS, ts, kind, merkle.leaf_hash(forged), forged)))
    return RECORDS


def _tree(backend: Backend) -> bytes:
    return backend.query("SELECT value FROM meta WHERE key = 'tree'")[0][0]


def _grow_tree_size(backend: Backend) -> int:
    tree = _tree(backend)
    backend.execute(("UPDATE meta SET value = ? WHERE key = 'tree'", ((RECORDS + 1).to_bytes(8, "big") + tree[8:],)))
    return RECORDS  # The tree state claims a record 40 that is not stored.


def _shrink_tree_size(backend: Backend) -> int:
    tree = _tree(backend)
    backend.execute(("UPDATE meta SET value = ? WHERE key = 'tree'", ((RECORDS - 1).to_bytes(8, "big") + tree[8:],)))
    return RECORDS - 1  # Record 39 is stored past the tree state's size.


TAMPERING: dict[str, Callable[[Backend], int]] = {
    "data-edited": _edit_data,
    "sealed-flipped": _flip_sealed,
    "row-deleted": _delete_row,
    "last-row-deleted": _delete_last_row,
    "data-swapped": _swap_data,
    "rows-reordered": _reorder_rows,
    "leaf-altered": _alter_leaf,
    "node-altered": _alter_node,
    "node-deleted": _delete_node,
    "row-appended": _append_row,
    "tree-size-grown": _grow_tree_size,
    "tree-size-shrunk": _shrink_tree_size,
}


@pytest.fixture
def closed_ledger(backend: Backend) -> Iterator[Backend]:
    """A closed ledger of 40 records (personal data, two erased subjects), verified intact first."""
    ledger = backend.open(max_batch=6)
    for i in range(RECORDS - 2):
        ledger.append(interaction(i, f"subject-{i % 6}"))
    ledger.erase_subject("subject-1")
    ledger.erase_subject("subject-4")
    ledger.close()
    report = backend.verify(key=ledger.signer.verifier_key)
    assert (0, RECORDS, 0) == (report.start, report.end, report.unsigned)
    yield backend


class TestTamper:
    @pytest.mark.parametrize("change", list(TAMPERING), ids=list(TAMPERING))
    def test_one_change_is_a_break_naming_the_first_bad_index(self, closed_ledger: Backend, signer: Signer,
                                                               change: str) -> None:
        """One change made with SQL behind the ledger's back: verify raises LedgerBroken naming the first
        bad index, and ``aiobligations verify`` exits 1 with 'BROKEN: first bad index N'."""
        backend = closed_ledger
        expected = TAMPERING[change](backend)

        with pytest.raises(LedgerBroken) as caught:
            backend.verify(key=signer.verifier_key)
        assert expected == caught.value.index, caught.value.reason
        with pytest.raises(LedgerBroken) as by_path:
            verify_path(backend.target, key=signer.verifier_key, **backend.path_options)
        assert expected == by_path.value.index

        result = verify_cli(backend, signer.verifier_key)
        assert 1 == result.exit_code, result.output
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), result.stderr
        assert lines[0].startswith(f"aiobligations: BROKEN: first bad index {expected}: "), lines[0]
        assert "" == result.stdout

    def test_an_altered_tree_frontier_is_a_break(self, closed_ledger: Backend, signer: Signer) -> None:
        """A changed hash in the stored tree state (not its size) is a break; no single record is to blame,
        so it names no index, on either store."""
        backend = closed_ledger
        tree = bytearray(_tree(backend))
        tree[8] ^= 0x01
        backend.execute(("UPDATE meta SET value = ? WHERE key = 'tree'", (bytes(tree),)))

        with pytest.raises(LedgerBroken, match="tree state does not match") as caught:
            backend.verify(key=signer.verifier_key)
        assert caught.value.index is None
        result = verify_cli(backend, signer.verifier_key)
        assert 1 == result.exit_code, result.output
        assert ["aiobligations: BROKEN: the stored tree state does not match the records"] == (
            result.stderr.strip().splitlines())

    def test_an_altered_checkpoint_is_a_break(self, closed_ledger: Backend, signer: Signer) -> None:
        """A stored checkpoint whose signed text was changed (its size) no longer verifies: a break, exit 1."""
        backend = closed_ledger
        note = backend.query("SELECT value FROM meta WHERE key = 'checkpoint'")[0][0]
        changed = note.replace(b"\n%d\n" % RECORDS, b"\n%d\n" % (RECORDS - 1), 1)
        assert changed != note
        backend.execute(("UPDATE meta SET value = ? WHERE key = 'checkpoint'", (changed,)))

        with pytest.raises(LedgerBroken, match="signature does not verify") as caught:
            backend.verify(key=signer.verifier_key)
        assert caught.value.index is None
        result = verify_cli(backend, signer.verifier_key)
        assert 1 == result.exit_code, result.output
        assert ["aiobligations: BROKEN: the latest checkpoint: the signature does not verify (altered)"] == (
            result.stderr.strip().splitlines())

    def test_a_tampered_tree_state_is_refused_on_reopen(self, closed_ledger: Backend) -> None:
        """A ledger whose tree state disagrees with its stored records is not opened for writing."""
        backend = closed_ledger
        _shrink_tree_size(backend)

        with pytest.raises(UnusableInput, match="tree state says 39 records but the last stored index is 39"):
            backend.open()

    def test_an_altered_node_breaks_a_partial_export(self, closed_ledger: Backend, tmp_path: Path,
                                                     signer: Signer) -> None:
        """A bundle exported from a database whose interior hash was altered does not verify."""
        backend = closed_ledger
        # The subtree over records 0..15: the compact range left of record 20 is built from it.
        backend.execute(("UPDATE nodes SET hash = ? WHERE level = 4 AND idx = 0", (bytes(32),)))
        twentieth = backend.query("SELECT ts FROM records WHERE idx = 20")[0][0]

        export_bundle(backend.readonly_store(), tmp_path / "partial", start_time=twentieth)

        with pytest.raises(LedgerBroken):
            verify_path(tmp_path / "partial", key=signer.verifier_key)
