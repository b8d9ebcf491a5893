"""Tamper evidence on the live database: every column of every table, changed with SQL a person would type.

Issue 11 (defects 10 and 11). Each case opens a ledger of 40 records (interactions with personal
data, two erased subjects, every signed checkpoint kept in the history table) on SQLite and on
PostgreSQL (the ``backend`` fixture of ``test_store_contract``), closes it, runs one or two SQL
statements typed by hand, and runs ``aiobligations verify --key``: it must exit 1 and name the
altered record (``first bad index N``) or the table and row.

What no hash covers, and what happens instead (asserted below, documented in docs/ledger.md):

- ``subject_keys`` (any column, or a deleted row): verify still passes; the subject's personal data
  no longer opens. Deleting a key is how erasure works, so the log cannot treat it as damage.
- ``checkpoints``: a deleted history row is not noticed (the history is a convenience); a changed
  one is a break.
- PostgreSQL ``records.entry`` (which queued record of which replica a row is): only replicas
  waiting on their own records read it; verify passes.
- ``meta`` row ``schema``: the file is refused as unusable input (exit 2), not a break.
- Records altered together with their stored hash, inside a run of records under one stored
  interior hash: nothing stored says which of them it was, so verify names the run
  ("one of records 16..31"), its first index as the first bad one; with the record key
  (``--mac-key``, or the profile's signing key), each record's mac names the altered record itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_store_contract import Backend, backend, interaction  # noqa: F401 - the parametrized fixture

from aiobligations.cli import main
from aiobligations.errors import LedgerBroken, LedgerError
from aiobligations.ledger import Signer, merkle
from aiobligations.ledger.receipts import receipt_for_interaction
from aiobligations.ledger.records import record_mac_key

RECORDS = 40


@pytest.fixture(autouse=True)
def _no_config_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def live(backend: Backend, signer: Signer) -> Backend:  # noqa: F811 - the imported fixture
    """A closed ledger of 40 records, verified intact first."""
    ledger = backend.open(max_batch=6, history_interval=0)
    for i in range(RECORDS - 2):
        ledger.append(interaction(i, f"subject-{i % 6}"))
    ledger.erase_subject("subject-1")
    ledger.erase_subject("subject-4")
    ledger.close()
    assert RECORDS == backend.verify(key=signer.verifier_key).end
    assert len(backend.query("SELECT size FROM checkpoints")) >= 2
    return backend


def run_sql(db: Backend, *statements: str) -> None:
    """Run SQL typed by hand, no parameters; each statement must change at least one row."""
    db.execute(*((sql, ()) for sql in statements))


def verify(db: Backend, key: str) -> Any:
    return CliRunner().invoke(main, ["verify", db.target, *db.cli_options, "--key", key])


def edited(db: Backend, idx: int) -> tuple[str, str]:
    """SQL for (new data, its leaf hash) of record ``idx`` with 'chat' replaced by 'chap' in its route."""
    if db.name == "postgres":
        data = "convert_to(replace(convert_from(data, 'UTF8'), 'chat', 'chap'), 'UTF8')"
        return data, f"sha256('\\x00'::bytea || {data})"
    # SQLite has no sha256(): a person computes the hash beside the shell and pastes it.
    stored = db.query(f"SELECT data FROM records WHERE idx = {idx}")[0][0]
    changed = stored.replace(b"chat", b"chap")
    return f"x'{changed.hex()}'", f"x'{merkle.leaf_hash(changed).hex()}'"


def blob(db: Backend, raw: bytes) -> str:
    return f"'\\x{raw.hex()}'::bytea" if db.name == "postgres" else f"x'{raw.hex()}'"


# Each case: SQL for a backend, and what the one line on stderr must say after "BROKEN: ".
Case = Callable[[Backend], tuple[list[str], str]]

CASES: dict[str, Case] = {
    # -- records ----------------------------------------------------------------------------------
    "records.ts": lambda b: (["UPDATE records SET ts = 0 WHERE idx = 3"], "first bad index 3: table records, column ts"),
    "records.kind": lambda b: (["UPDATE records SET kind = 'log' WHERE idx = 5"],
                               "first bad index 5: table records, column kind"),
    "records.ts+kind-all-rows": lambda b: (["UPDATE records SET ts = 0, kind = 'log'"],
                                           "first bad index 0: table records, column ts"),
    "records.kind-to-a-desk-kind": lambda b: (["UPDATE records SET kind = 'explanation' WHERE idx = 30"],
                                              "first bad index 30: table records, column kind"),
    "records.leaf": lambda b: (["UPDATE records SET leaf = (SELECT leaf FROM records WHERE idx = 8) WHERE idx = 7"],
                               "first bad index 7: the record does not match its stored hash"),
    "records.data": lambda b: ([f"UPDATE records SET data = {edited(b, 9)[0]} WHERE idx = 9"],
                               "first bad index 9: the record does not match its stored hash"),
    "records.data-replace-everywhere": lambda b: (
        [f"UPDATE records SET data = {'replace(data, ' if b.name == 'sqlite' else 'convert_to(replace(convert_from(data, ' + chr(39) + 'UTF8' + chr(39) + '), '}'chat', 'chap'){'' if b.name == 'sqlite' else ', ' + chr(39) + 'UTF8' + chr(39) + ')'}"],
        "first bad index 0: "),
    "records.data+leaf-under-a-stored-node": lambda b: (
        ["UPDATE records SET data = {0}, leaf = {1} WHERE idx = 21".format(*edited(b, 21))],
        "first bad index 16: the stored interior hash at level 4 over records 16..31 does not match them"),
    "records.data+leaf-in-the-tail": lambda b: (
        ["UPDATE records SET data = {0}, leaf = {1} WHERE idx = 35".format(*edited(b, 35))],
        "first bad index 32: one of records 32..39 was altered together with its stored hash"),
    "records.idx": lambda b: (["UPDATE records SET idx = 100 WHERE idx = 39"], "first bad index 39: the record is missing"),
    "records.row-deleted": lambda b: (["DELETE FROM records WHERE idx = 12"], "first bad index 12: the record is missing"),
    # -- nodes ------------------------------------------------------------------------------------
    "nodes.hash": lambda b: (
        ["UPDATE nodes SET hash = (SELECT hash FROM nodes WHERE level = 4 AND idx = 0) WHERE level = 4 AND idx = 1"],
        "first bad index 16: table nodes, level 4, index 1"),
    "nodes.level": lambda b: (["UPDATE nodes SET level = 8 WHERE level = 4 AND idx = 1"],
                              "first bad index 16: table nodes, level 4, index 1: the stored interior hash is missing"),
    "nodes.idx": lambda b: (["UPDATE nodes SET idx = 7 WHERE level = 4 AND idx = 1"],
                            "first bad index 16: table nodes, level 4, index 1: the stored interior hash is missing"),
    "nodes.row-deleted": lambda b: (["DELETE FROM nodes WHERE level = 4 AND idx = 0"],
                                    "first bad index 0: table nodes, level 4, index 0"),
    "nodes.row-added": lambda b: ([f"INSERT INTO nodes VALUES (4, 9, {blob(b, bytes(32))})"],
                                  "table nodes: a row at level 4, index 9, is not a node of the tree"),
    # -- meta -------------------------------------------------------------------------------------
    "meta.tree": lambda b: ([f"UPDATE meta SET value = {'CAST(' if b.name == 'sqlite' else ''}"
                             f"{blob(b, (RECORDS - 1).to_bytes(8, 'big'))} || "
                             f"{'substr(value, 9) AS BLOB)' if b.name == 'sqlite' else 'substring(value from 9)'} "
                             "WHERE key = 'tree'"],
                            "first bad index 39: records are stored past the recorded tree size (table meta, row 'tree')"),
    "meta.checkpoint": lambda b: (["UPDATE meta SET value = (SELECT note FROM checkpoints ORDER BY size LIMIT 1)"
                                   + ("" if b.name == "sqlite" else "::bytea") + " WHERE key = 'checkpoint'"],
                                  "table meta, row 'checkpoint'" if False else "the stored hashes"),
    "meta.checkpoint-deleted": lambda b: (["DELETE FROM meta WHERE key = 'checkpoint'"],
                                          "table meta, row 'checkpoint': missing, yet records are stored"),
    "meta.last_ts": lambda b: (["UPDATE meta SET value = '0' WHERE key = 'last_ts'"], "table meta, row 'last_ts'"),
    "meta.origin": lambda b: (["UPDATE meta SET value = 'evil.example/log' WHERE key = 'origin'"],
                              "table meta, row 'origin'"),
    "meta.verifier_key": lambda b: (["UPDATE meta SET value = 'evil.example/log+00000000+AAAA' WHERE key = 'verifier_key'"],
                                    "table meta, row 'verifier_key'"),
    "meta.pruned": lambda b: ([f"INSERT INTO meta VALUES ('pruned', {blob(b, (8).to_bytes(8, 'big'))})"],
                              "table meta, row 'pruned'"),
    # -- checkpoints --------------------------------------------------------------------------------
    "checkpoints.size": lambda b: (["UPDATE checkpoints SET size = size + 1000"], "table checkpoints, row 10"),
    "checkpoints.ts": lambda b: (["UPDATE checkpoints SET ts = 0"], "table checkpoints, row"),
    "checkpoints.note": lambda b: (["UPDATE checkpoints SET note = (SELECT value FROM meta WHERE key = 'origin')"
                                    + ("" if b.name == "sqlite" else "::text")], "table checkpoints, row"),
    # -- interactions ---------------------------------------------------------------------------------
    "interactions.idx": lambda b: (["UPDATE interactions SET idx = 5 WHERE interaction_id = 'id-13'"],
                                   "table interactions, row 'id-13': points at record 5"),
    "interactions.interaction_id": lambda b: (["UPDATE interactions SET interaction_id = 'forged' WHERE idx = 13"],
                                              "table interactions, row 'forged': points at record 13"),
    "interactions.row-deleted": lambda b: (["DELETE FROM interactions WHERE idx = 13"],
                                           "first bad index 13: table interactions: no row for the interaction id 'id-13'"),
    "interactions.row-added": lambda b: (["INSERT INTO interactions VALUES ('forged', 3)"],
                                         "table interactions, row 'forged': points at record 3"),
}


class TestEveryColumn:
    @pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
    def test_sql_typed_by_hand_is_a_break_naming_the_index_or_the_row(self, live: Backend, signer: Signer,
                                                                       case: str) -> None:
        statements, says = CASES[case](live)
        if case == "meta.checkpoint":
            # The oldest kept note is validly signed, for a smaller size: a rollback.
            says = "table meta, row 'checkpoint': older than the kept checkpoint"
            if live.name == "sqlite":
                statements = ["UPDATE meta SET value = CAST((SELECT note FROM checkpoints ORDER BY size LIMIT 1) "
                              "AS BLOB) WHERE key = 'checkpoint'"]
        if case == "checkpoints.size":
            says = "table checkpoints, row " + str(live.query("SELECT min(size) FROM checkpoints")[0][0] + 1000)
        run_sql(live, *statements)

        result = verify(live, signer.verifier_key)

        assert 1 == result.exit_code, (case, result.output)
        lines = result.stderr.strip().splitlines()
        assert 1 == len(lines), result.stderr
        assert lines[0].startswith("aiobligations: BROKEN: "), lines[0]
        assert says in lines[0], lines[0]
        assert "" == result.stdout

    @pytest.mark.parametrize("idx", [21, 35])
    def test_with_the_record_key_a_record_altered_with_its_hash_is_named_exactly(
            self, live: Backend, signer: Signer, idx: int) -> None:
        """Defect 10: the subtree ("16..31") without the key; the record itself with it."""
        run_sql(live, "UPDATE records SET data = {0}, leaf = {1} WHERE idx = {2}".format(*edited(live, idx), idx))
        key = record_mac_key(signer.private_key).hex()

        result = CliRunner().invoke(main, ["verify", live.target, *live.cli_options, "--key", signer.verifier_key,
                                           "--mac-key", key])

        assert 1 == result.exit_code, result.output
        assert f"BROKEN: first bad index {idx}: the record's mac does not match" in result.stderr, result.stderr

    def test_the_cases_cover_every_column_of_every_ledger_table(self, live: Backend) -> None:
        """A new column or table fails here until a case (or a documented exception) covers it."""
        documented = {"subject_keys.pseudonym", "subject_keys.wrapped", "subject_keys.master_id", "records.entry",
                      "meta.key", "meta.value", "checkpoints.size", "checkpoints.ts", "checkpoints.note"}
        tables = ("meta", "records", "nodes", "checkpoints", "interactions", "subject_keys")
        if live.name == "sqlite":
            columns = {f"{t}.{row[1]}" for t in tables for row in live.query(f"PRAGMA table_info({t})")}
        else:
            columns = {f"{t}.{c}" for t, c in live.query(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name IN ('meta', 'records', 'nodes', 'checkpoints', 'interactions', 'subject_keys')")}
        covered = {name.split("-")[0].split("+")[0] for name in CASES} | documented
        assert columns <= covered, columns - covered
        meta = {row[0] for row in live.query("SELECT key FROM meta")}
        assert {"tree", "checkpoint", "last_ts", "origin", "verifier_key"} <= meta

    def test_a_deleted_or_altered_subject_key_still_verifies_but_the_data_no_longer_opens(
            self, live: Backend, signer: Signer) -> None:
        """Documented: subject keys are outside the hashes (erasure deletes them); verify passes, and the
        deleted subject's personal data no longer opens; an altered wrapped key stops the ledger opening."""
        def sealed_shut() -> int:
            ledger = live.open()
            try:
                return sum(ledger.read(i).get("personal") is None for i in range(RECORDS - 2))
            finally:
                ledger.close()

        before = sealed_shut()
        run_sql(live, "DELETE FROM subject_keys WHERE pseudonym = (SELECT min(pseudonym) FROM subject_keys)")
        assert 0 == verify(live, signer.verifier_key).exit_code
        assert sealed_shut() > before

        run_sql(live, "UPDATE subject_keys SET wrapped = (SELECT wrapped FROM subject_keys ORDER BY pseudonym LIMIT 1)")
        assert 0 == verify(live, signer.verifier_key).exit_code
        with pytest.raises(LedgerError, match="does not open"):
            sealed_shut()

    def test_a_deleted_history_checkpoint_and_an_entry_still_verify(self, live: Backend, signer: Signer) -> None:
        """Documented: the kept history is a convenience; PostgreSQL's entry column serves waiting replicas."""
        run_sql(live, "DELETE FROM checkpoints WHERE size = (SELECT min(size) FROM checkpoints)")
        if live.name == "postgres":
            live.execute(("UPDATE records SET entry = NULL WHERE idx = 3", ()))
        assert 0 == verify(live, signer.verifier_key).exit_code


class TestReceipts:
    def test_a_receipt_never_proves_another_record(self, live: Backend, signer: Signer) -> None:
        """Issue 11, defect 11: an interactions row pointed at another record makes the receipt refuse."""
        run_sql(live, "UPDATE interactions SET idx = 5 WHERE interaction_id = 'id-13'")
        ledger = live.open()

        with pytest.raises(LedgerBroken, match="interactions table was altered") as caught:
            receipt_for_interaction(ledger, "id-13")
        assert 5 == caught.value.index
        assert receipt_for_interaction(ledger, "id-5") is not None
