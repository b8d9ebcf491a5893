"""The ledger's own behaviour: sequencing, sealing, erasure, proofs, checkpoints, retention."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

import pytest

from aiobligations.errors import ConfigurationError, LedgerBroken, LedgerClosed, RetentionError, UnusableInput
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle, verify_path
from aiobligations.ledger import merkle
from aiobligations.ledger.note import open_checkpoint
from aiobligations.ledger.reader import checkpoint_of
from aiobligations.ledger.records import verify_mac
from aiobligations.ledger.retention import DAY

from conftest import ORIGIN

CANARY = "CANARY-7f3a-名字-4411"


def interaction(i: int, subject: str = "alice") -> dict:
    return {
        "kind": "interaction",
        "interaction_id": f"id-{i}",
        "route": "/v1/chat/completions",
        "subject": subject,
        "personal": {"prompt": f"{CANARY} {i}", "output": "echo"},
    }


def all_bytes(folder: Path) -> bytes:
    """Every byte of every file SQLite keeps for the database (main file, WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


class TestAppend:
    def test_indices_are_contiguous_and_records_read_back(self, make_ledger) -> None:
        ledger = make_ledger()

        indices = [ledger.append(interaction(i)) for i in range(5)]

        assert [0, 1, 2, 3, 4] == indices
        record = ledger.read(3)
        assert {"prompt": f"{CANARY} 3", "output": "echo"} == record["personal"]
        assert "sealed" not in record
        assert record["subject"] != "alice"
        assert (1, 3, "interaction", "id-3") == (record["v"], record["idx"], record["kind"], record["interaction_id"])

    def test_record_bytes_are_compact_json_in_contract_order(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        ledger.append({"kind": "risk", "summary": "多行\ntext", "score": 3})
        ledger.close()

        data = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT data FROM records").fetchone()[0]

        assert data.startswith(b'{"v":1,"idx":0,"ts":"')
        assert b"\n" not in data
        decoded = json.loads(data)
        assert ["v", "idx", "ts", "kind", "summary", "score", "mac"] == list(decoded)
        assert decoded["ts"].endswith("Z")
        # The mac: HMAC-SHA256 under the key derived from the signing key, over every byte before it.
        head = data[: data.rindex(b',"mac":')]
        key = hashlib.sha256(b"aiobligations/record-mac/v1\n" + signer.private_key.private_bytes_raw()).digest()
        assert base64.b64decode(decoded["mac"]) == hmac.digest(key, head, "sha256")[:16]
        assert verify_mac(key, data) is True and verify_mac(bytes(32), data) is False
        assert verify_mac(key, data.replace(b'"score":3', b'"score":4')) is False

    def test_concurrent_aappend_gets_distinct_contiguous_indices(self, make_ledger) -> None:
        ledger = make_ledger()

        async def producer(k: int) -> list[int]:
            return [await ledger.aappend(interaction(i, f"user-{k}")) for i in range(25)]

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(producer(k) for k in range(16)))

        results = asyncio.run(main())

        indices = sorted(i for batch in results for i in batch)
        assert list(range(400)) == indices
        assert 400 == ledger.size

    def test_submit_then_flush_makes_everything_durable(self, make_ledger) -> None:
        ledger = make_ledger()

        for i in range(100):
            ledger.submit(interaction(i))
        size = ledger.flush()

        assert 100 == size
        assert "id-99" == ledger.read(99)["interaction_id"]

    @pytest.mark.parametrize(
        ("record", "error", "message"),
        [
            ({"summary": "no kind"}, ValueError, "kind"),
            ({"kind": ""}, ValueError, "kind"),
            ({"kind": "x", "idx": 3}, ValueError, "idx"),
            ({"kind": "x", "sealed": "a"}, ValueError, "sealed"),
            ({"kind": "x", "personal": {"a": 1}}, ValueError, "subject"),
            ({"kind": "x", "value": object()}, TypeError, "JSON"),
            ({"kind": "x", "value": float("nan")}, TypeError, "JSON"),
            (["kind", "x"], TypeError, "dict"),
        ],
    )
    def test_bad_records_fail_in_the_callers_hands(self, make_ledger, record, error, message) -> None:
        ledger = make_ledger()

        with pytest.raises(error, match=message):
            ledger.submit(record)

        assert 0 == ledger.flush()

    def test_closed_ledger_refuses_records(self, make_ledger) -> None:
        ledger = make_ledger()
        ledger.close()

        with pytest.raises(LedgerClosed):
            ledger.submit({"kind": "x"})
        ledger.close()  # Idempotent.


class TestPersonalData:
    def test_canary_never_reaches_the_disk_in_clear(self, make_ledger, tmp_path: Path) -> None:
        ledger = make_ledger()
        for i in range(20):
            ledger.append(interaction(i))
        ledger.flush()

        assert CANARY.encode() not in all_bytes(tmp_path)
        assert b"alice" not in all_bytes(tmp_path)

    def test_erasure_shreds_the_subject_and_keeps_the_proofs(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        for i in range(6):
            ledger.append(interaction(i, "alice" if i % 2 else "bob"))

        erased_at = ledger.erase_subject("alice")

        assert 6 == erased_at
        erased = ledger.read(erased_at)
        assert "subject.erased" == erased["kind"]
        assert ledger.read(1)["subject"] == erased["subject"]
        assert "personal" not in ledger.read(1) and "sealed" in ledger.read(1)
        assert "personal" in ledger.read(0)
        ledger.close()
        assert CANARY.encode() not in all_bytes(tmp_path)
        report = verify_path(tmp_path / "ledger.db", key=signer.verifier_key)
        assert 7 == report.checkpoint_size

    def test_erased_key_is_gone_from_the_file(self, make_ledger, tmp_path: Path) -> None:
        ledger = make_ledger()
        ledger.append(interaction(0, "alice"))
        wrapped = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT wrapped FROM subject_keys").fetchone()[0]

        ledger.erase_subject("alice")
        ledger.close()

        assert wrapped not in all_bytes(tmp_path)

    def test_a_subject_writing_again_after_erasure_gets_a_new_key(self, make_ledger) -> None:
        ledger = make_ledger()
        ledger.append(interaction(0, "alice"))
        ledger.erase_subject("alice")

        index = ledger.append(interaction(1, "alice"))

        assert "personal" in ledger.read(index)
        assert "personal" not in ledger.read(0)

    def test_master_key_rotation_rewraps_without_touching_records(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        for i in range(4):
            ledger.append(interaction(i, f"user-{i}"))
        leaves = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT leaf FROM records").fetchall()
        new = MasterKey.generate()

        assert 4 == ledger.rotate_master_key(new)
        ledger.close()

        assert leaves == sqlite3.connect(tmp_path / "ledger.db").execute("SELECT leaf FROM records").fetchall()
        with pytest.raises(ConfigurationError, match="master key"):
            make_ledger()  # The fixture's old master key no longer opens the ledger.
        reopened = make_ledger(master_key=new)
        assert f"{CANARY} 2" == reopened.read(2)["personal"]["prompt"]
        assert reopened.read(0)["subject"] == ledger_pseudonym(reopened, "user-0")


def ledger_pseudonym(ledger: Ledger, subject: str) -> str:
    return ledger._crypto.pseudonym(subject)


class TestReopen:
    def test_state_survives_reopen_and_appends_continue(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        for i in range(37):
            ledger.append(interaction(i))
        root = checkpoint_of(ledger.checkpoint).root
        ledger.close()

        reopened = make_ledger()
        assert 37 == reopened.size
        assert root == checkpoint_of(reopened.checkpoint).root
        assert 37 == reopened.append(interaction(37))
        reopened.close()
        assert 38 == verify_path(tmp_path / "ledger.db", key=signer.verifier_key).checkpoint_size

    def test_another_origin_or_key_is_refused(self, make_ledger) -> None:
        make_ledger().close()

        with pytest.raises(ConfigurationError, match="origin"):
            make_ledger(origin="elsewhere.example/log", signer=Signer.generate("elsewhere.example/log"))
        with pytest.raises(ConfigurationError, match="signed by"):
            make_ledger(signer=Signer.generate(ORIGIN))

    @pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"on_full": "drop"}, {"max_batch": 0},
                                        {"checkpoint_interval": -1}, {"origin": ""}])
    def test_bad_arguments_raise(self, make_ledger, kwargs) -> None:
        with pytest.raises(ConfigurationError):
            make_ledger(**kwargs)


class TestProofs:
    def test_inclusion_and_consistency_proofs_verify_against_checkpoints(self, make_ledger, signer) -> None:
        ledger = make_ledger(max_batch=7)
        checkpoints = []
        for i in range(150):
            ledger.submit({"kind": "log", "n": i})
            if i % 37 == 0:
                ledger.flush()
                checkpoints.append(open_checkpoint(ledger.verifier, ledger.sign_checkpoint()))
        final = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        assert 150 == final.size

        for index in (0, 1, 15, 16, 17, 63, 64, 100, 149):
            raw = ledger._store.get_record(index)[2]
            proof = ledger.inclusion_proof(index, final.size)
            merkle.verify_inclusion(merkle.leaf_hash(raw), index, final.size, proof, final.root)
        for old in checkpoints:
            proof = ledger.consistency_proof(old.size, final.size)
            merkle.verify_consistency(old.size, final.size, proof, old.root, final.root)

    def test_stored_interior_hashes_equal_a_memory_tree(self, make_ledger) -> None:
        ledger = make_ledger(max_batch=5)
        tree = merkle.MemoryTree()
        for i in range(300):
            ledger.submit({"kind": "log", "n": i})
        ledger.flush()
        for index in range(300):
            tree.append(ledger._store.get_record(index)[2])

        for level in range(0, 9):
            for index in range(300 >> level):
                assert tree.subtree(level, index) == ledger.reader.subtree(level, index), (level, index)

    def test_checkpoint_interval_signs_lazily_and_on_close(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger(checkpoint_interval=3600)
        ledger.append({"kind": "log"})
        first = ledger.checkpoint
        ledger.append({"kind": "log"})

        assert first == ledger.checkpoint  # Within the interval: no new signature.
        ledger.close()
        assert 2 == verify_path(tmp_path / "ledger.db", key=signer.verifier_key).checkpoint_size


class TestRetention:
    def test_pruning_inside_the_floor_is_refused(self, make_ledger) -> None:
        ledger = make_ledger()
        for i in range(10):
            ledger.append({"kind": "interaction", "n": i})

        with pytest.raises(RetentionError, match="record 0 .interaction. is inside its retention period"):
            ledger.prune(5)
        assert 0 == ledger.first_index

    def test_pruned_log_still_verifies_and_proves(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger(max_batch=3)
        for i in range(40):
            ledger.submit({"kind": "log" if i < 30 else "assessment", "n": i})
        ledger.flush()
        old = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        later = ledger._store.ts_at(39) + 200 * DAY

        assert 30 == ledger.prunable(now=later)  # The assessments (5 years) hold the rest.
        assert 21 == ledger.prune(21, now=later)
        with pytest.raises(RetentionError):
            ledger.prune(31, now=later)
        for i in range(5):
            ledger.append({"kind": "log", "n": 40 + i})
        new = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())

        with pytest.raises(IndexError):
            ledger.read(20)
        proof = ledger.inclusion_proof(21, new.size)
        merkle.verify_inclusion(merkle.leaf_hash(ledger._store.get_record(21)[2]), 21, new.size, proof, new.root)
        merkle.verify_consistency(old.size, new.size, ledger.consistency_proof(old.size, new.size), old.root, new.root)
        ledger.close()
        report = verify_path(tmp_path / "ledger.db", key=signer.verifier_key)
        assert (21, 45) == (report.start, report.end)
        export_bundle(tmp_path / "ledger.db", tmp_path / "bundle")
        assert (21, 45) == (verify_path(tmp_path / "bundle", key=signer.verifier_key).start, 45)

    def test_retention_below_the_floor_is_a_configuration_error(self) -> None:
        from aiobligations.ledger import Retention

        with pytest.raises(ConfigurationError, match="below its legal floor"):
            Retention({"risk": "1y"})
        assert Retention({"risk": "3y"}).period("risk") > Retention().period("risk")


class TestBundles:
    def test_partial_range_verifies_against_the_latest_checkpoint(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger(max_batch=4)
        for i in range(30):
            ledger.append({"kind": "log", "n": i})
        ts = [ledger._store.ts_at(i) for i in range(30)]
        ledger.close()
        start, end = ts[9], ts[20]
        expected_start = ts.index(start)
        expected_end = ts.index(end)

        export_bundle(tmp_path / "ledger.db", tmp_path / "part.tar.gz", start_time=start, end_time=end)
        report = verify_path(tmp_path / "part.tar.gz", key=signer.verifier_key)

        assert (expected_start, expected_end, 30) == (report.start, report.end, report.checkpoint_size)
        assert report.pinned

    def test_since_checkpoint_proves_consistency(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        for i in range(10):
            ledger.append({"kind": "log", "n": i})
        earlier = ledger.sign_checkpoint()
        for i in range(10):
            ledger.append({"kind": "log", "n": i})
        ledger.close()

        export_bundle(tmp_path / "ledger.db", tmp_path / "b", since_checkpoint=earlier)
        assert 10 == verify_path(tmp_path / "b", key=signer.verifier_key, since_checkpoint=earlier).since
        assert 10 == verify_path(tmp_path / "ledger.db", key=signer.verifier_key, since_checkpoint=earlier).since

    def test_unpinned_verification_says_so(self, make_ledger, tmp_path: Path) -> None:
        ledger = make_ledger()
        ledger.append({"kind": "log"})
        ledger.close()
        export_bundle(tmp_path / "ledger.db", tmp_path / "b")

        with pytest.raises(UnusableInput, match="no verifier key is pinned"):
            verify_path(tmp_path / "b")
        report = verify_path(tmp_path / "b", trust_shipped_key=True)

        assert not report.pinned
        assert any("--key" in note for note in report.notes)

    def test_bundle_members_follow_the_contract(self, make_ledger, tmp_path: Path, signer) -> None:
        ledger = make_ledger()
        for i in range(5):
            ledger.append(interaction(i))
        ledger.close()

        export_bundle(tmp_path / "ledger.db", tmp_path / "b")

        folder = tmp_path / "b"
        lines = (folder / "records.jsonl").read_bytes().split(b"\n")
        assert 6 == len(lines) and b"" == lines[-1]
        assert {"start": 0, "hashes": []} == json.loads((folder / "frontier.json").read_text())
        assert signer.verifier_key + "\n" == (folder / "verifier.key").read_text()
        assert (folder / "checkpoint").read_text().startswith(f"{ORIGIN}\n5\n")
        hashes = (folder / "hashes.bin").read_bytes()
        assert [merkle.leaf_hash(line) for line in lines[:-1]] == [hashes[i : i + 32] for i in range(0, 160, 32)]
        manifest = json.loads((folder / "manifest.json").read_text())
        assert ("aiobligations-bundle/1", 0, 5) == (manifest["format"], manifest["start"], manifest["end"])
        assert CANARY.encode() not in (folder / "records.jsonl").read_bytes()
        assert base64.b64decode(json.loads(lines[0])["sealed"])


def test_a_second_writer_is_refused_while_the_first_is_open(make_ledger, tmp_path: Path) -> None:
    from aiobligations.errors import LedgerError

    first = make_ledger()
    first.append({"kind": "log"})

    with pytest.raises(LedgerError, match="already open for writing by process"):
        make_ledger()
    first.close()
    assert 1 == make_ledger().size  # Closing released the lock.


def test_a_bundle_exported_from_a_store_equals_one_exported_from_its_file(make_ledger, tmp_path: Path, signer) -> None:
    """export_bundle takes any Store (the next backends), not only a SQLite path."""
    ledger = make_ledger()
    for n in range(50):
        ledger.append({"kind": "log", "n": n})
    ledger.close()
    by_path = export_bundle(tmp_path / "ledger.db", tmp_path / "by-path")
    by_store = export_bundle(SQLiteStore(tmp_path / "ledger.db", create=False, readonly=True), tmp_path / "by-store")
    assert {**by_path, "created": None} == {**by_store, "created": None}
    for name in ("records.jsonl", "hashes.bin", "checkpoint"):
        assert (tmp_path / "by-path" / name).read_bytes() == (tmp_path / "by-store" / name).read_bytes()
    assert 50 == verify_path(tmp_path / "by-store", key=signer.verifier_key).end
