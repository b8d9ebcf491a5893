"""A ledger that asks witnesses: real witnesses served by uvicorn on loopback ports, real ledgers
(a writer thread, the shared writer process through the profile, PostgreSQL replicas)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from _serve import _Server
from click.testing import CliRunner
from conftest import ORIGIN
from structlog.testing import capture_logs
from test_workers import free_port, until

from aiobligations import Obligations
from aiobligations.cli import main
from aiobligations.keys import init_project
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle
from aiobligations.ledger.note import Verifier
from aiobligations.ledger.reader import checkpoint_of
from aiobligations.ledger.receipts import make_receipt, parse_receipt, verify_receipt
from aiobligations.disclosure import render_transparency_page, with_witness_conflicts
from aiobligations.witness.client import ConflictWatch, WitnessServer, WitnessSettings
from aiobligations.witness.cosignature import WitnessSigner, check_quorum
from aiobligations.witness.server import WitnessApp, WitnessState


class Witness:
    """A witness on a fixed loopback port that can be stopped and started again (same state)."""

    def __init__(self, folder: Path, logs: list[str], name: str = "witness.test/w1") -> None:
        self.signer = WitnessSigner.generate(name)
        self.path = folder / f"{name.replace('/', '_')}.db"
        self.logs = [Verifier.from_key(key) for key in logs]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None
        self.state: WitnessState | None = None

    @property
    def vkey(self) -> str:
        return self.signer.verifier_key

    def start(self) -> None:
        self.state = WitnessState(self.path)
        app = WitnessApp(self.signer, self.logs, self.state, rate=1000, burst=1000)
        self.server = _Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                             lifespan="on", ws="none"))
        self.thread = threading.Thread(target=self.server.run, name="witness", daemon=True)
        self.thread.start()
        until(lambda: self.server is not None and self.server.ready.is_set(), 15, "the witness to listen")

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None and self.state is not None
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive()
        self.state.close()
        self.server = None

    def settings(self, **options: Any) -> WitnessSettings:
        options.setdefault("interval", 0.05)
        options.setdefault("lagging_after", 0.3)
        options.setdefault("timeout", 2.0)
        options.setdefault("max_backoff", 0.2)
        return WitnessSettings((WitnessServer(self.url, self.signer.verifier),), quorum=1, **options)


@contextmanager
def running(witness: Witness) -> Iterator[Witness]:
    witness.start()
    try:
        yield witness
    finally:
        if witness.server is not None:
            witness.stop()


def _cosigned_at(ledger: Ledger, size: int) -> list[str]:
    return ledger.cosignatures(size)


def _latest_cosigned(ledger: Ledger) -> int:
    note = ledger.witnessed_checkpoint
    return checkpoint_of(note).size if note else -1


def test_a_ledger_collects_cosignatures_of_its_checkpoints(make_ledger: Any, signer: Signer, tmp_path: Path) -> None:
    with running(Witness(tmp_path, [signer.verifier_key])) as witness:
        ledger = make_ledger(witnesses=witness.settings())
        for i in range(5):
            ledger.append({"kind": "log", "i": i})
        note = ledger.sign_checkpoint()
        size = checkpoint_of(note).size
        until(lambda: _latest_cosigned(ledger) == size, 15, "a cosignature of the latest checkpoint")
        cosigned = ledger.witnessed_checkpoint
        assert cosigned is not None and cosigned.startswith(note)
        found, missing = check_quorum(cosigned, [witness.signer.verifier], 1)
        assert 1 == len(found) and not missing
        assert abs(found[0].timestamp - time.time()) < 60
        # The log's own signature still verifies on the cosigned note.
        assert size == checkpoint_of(cosigned).size
        Verifier.from_key(signer.verifier_key).verify(cosigned)
        # Receipts carry the cosignatures of the checkpoint they prove against.
        receipt = make_receipt(ledger, 2)
        assert check_quorum(parse_receipt(receipt).checkpoint, [witness.signer.verifier], 1)[0]
        verify_receipt(receipt, signer.verifier_key)
        assert witness.state is not None and size == witness.state.latest(ORIGIN)[0]  # type: ignore[index]


def test_a_witness_down_for_a_while_catches_up_and_nothing_is_lost(make_ledger: Any, signer: Signer,
                                                                   tmp_path: Path) -> None:
    witness = Witness(tmp_path, [signer.verifier_key])
    witness.start()
    ledger = make_ledger(witnesses=witness.settings())
    for i in range(3):
        ledger.append({"kind": "log", "i": i})
    first = checkpoint_of(ledger.sign_checkpoint()).size
    until(lambda: _latest_cosigned(ledger) == first, 15, "the first cosignature")
    witness.stop()
    with capture_logs() as logs:
        started = time.monotonic()
        for i in range(3, 200):
            ledger.append({"kind": "log", "i": i}, timeout=5)
            if i % 20 == 0:
                ledger.sign_checkpoint()
        appending = time.monotonic() - started
        last = checkpoint_of(ledger.sign_checkpoint()).size
        until(lambda: any(e["event"] == "witness.lagging" for e in logs), 15, "a witness.lagging warning")
        assert any(e["event"] == "witness.failed" for e in logs)
    assert appending < 30  # Appends never waited on the dead witness (each would have taken its timeout).
    assert first == _latest_cosigned(ledger)
    witness.start()
    try:
        until(lambda: _latest_cosigned(ledger) == last, 20, "the cosignatures to catch up")
    finally:
        witness.stop()
    assert 200 == last == ledger.size
    assert [ledger.read(i)["i"] for i in range(200)] == list(range(200))
    # The witness saw one consistent history: no fork was recorded.
    state = WitnessState(witness.path)
    assert [] == state.forks()
    assert last == state.latest(ORIGIN)[0]  # type: ignore[index]
    state.close()


def test_a_forked_log_gets_a_conflict_and_its_bundle_is_refused(tmp_path: Path, signer: Signer,
                                                                master: MasterKey) -> None:
    with running(Witness(tmp_path, [signer.verifier_key])) as witness:
        honest = Ledger(SQLiteStore(tmp_path / "honest.db"), origin=ORIGIN, signer=signer, master_key=master,
                        witnesses=witness.settings())
        try:
            for i in range(10):
                honest.append({"kind": "log", "i": i})
            size = checkpoint_of(honest.sign_checkpoint()).size
            until(lambda: _latest_cosigned(honest) == size, 15, "the honest log's cosignature")
            export_bundle(tmp_path / "honest.db", tmp_path / "honest.tar.gz")
        finally:
            honest.close()
        # The provider rebuilds its history under the same key, and shows it to the same witness.
        with capture_logs() as logs:
            forked = Ledger(SQLiteStore(tmp_path / "forked.db"), origin=ORIGIN, signer=signer,
                            master_key=master, witnesses=witness.settings())
            try:
                for i in range(12):
                    forked.append({"kind": "log", "i": i, "rewritten": True})
                forked.sign_checkpoint()
                until(lambda: forked.indices_of(("witness.conflict",), 0, forked.size), 15,
                      "a witness.conflict record")
                conflict = forked.read(forked.indices_of(("witness.conflict",), 0, forked.size)[0])
                assert witness.vkey == conflict["witness"]
                assert 10 == conflict["witness_size"]
                assert [] == forked.cosignatures(checkpoint_of(forked.sign_checkpoint()).size)
                # Shown the larger forked tree with a proof from its own size, the witness keeps it as evidence.
                assert witness.state is not None
                until(lambda: witness.state.forks(ORIGIN), 15, "the witness to record the fork")  # type: ignore[union-attr]
                # The transparency document and page say so.
                conflicts = until(lambda: ConflictWatch(forked).refresh(), 5, "the conflict to be read")
                assert witness.vkey == conflicts[0]["witness"]
                document = with_witness_conflicts({"ledger": {"origin": ORIGIN}}, list(conflicts))
                assert "a fork" in document["witness_conflicts"]["statement"]["en"]
                assert witness.vkey == document["witness_conflicts"]["conflicts"][0]["witness"]
                page = render_transparency_page(document, "en")
                assert 'role="alert"' in page and "rollback or a fork" in page
            finally:
                forked.close()
        errors = [e for e in logs if e["event"] == "witness.conflict"]
        assert errors and "error" == errors[0]["log_level"]
        # The witness kept the forked checkpoint as evidence, and still holds the honest one.
        assert witness.state is not None
        forks = witness.state.forks(ORIGIN)
        assert forks and forks[0].reason.startswith("inconsistent")
        assert 10 == witness.state.latest(ORIGIN)[0]  # type: ignore[index]
    export_bundle(tmp_path / "forked.db", tmp_path / "forked.tar.gz")
    runner = CliRunner()
    refused = runner.invoke(main, ["verify", str(tmp_path / "forked.tar.gz"), "--key", signer.verifier_key,
                                   "--witness", witness.vkey, "--quorum", "1"])
    assert 1 == refused.exit_code, refused.output
    assert "NOT WITNESSED" in refused.output and witness.vkey.split("+")[0] in refused.output
    accepted = runner.invoke(main, ["verify", str(tmp_path / "honest.tar.gz"), "--key", signer.verifier_key,
                                    "--witness", witness.vkey, "--quorum", "1"])
    assert 0 == accepted.exit_code, accepted.output
    assert "intact: 10 records" in accepted.output
    assert f"cosigned by {witness.vkey.split('+')[0]}+{witness.signer.key_id.hex()} at " in accepted.output
    # The database itself verifies with its witnesses too; a quorum of two needs a second witness.
    database = runner.invoke(main, ["verify", str(tmp_path / "honest.db"), "--key", signer.verifier_key,
                                    "--witness", witness.vkey])
    assert 0 == database.exit_code, database.output
    other = WitnessSigner.generate("witness.test/w2").verifier_key
    two = runner.invoke(main, ["verify", str(tmp_path / "honest.tar.gz"), "--key", signer.verifier_key,
                               "--witness", witness.vkey, "--witness", other, "--quorum", "2"])
    assert 1 == two.exit_code
    assert "1 of the required 2" in two.output and "witness.test/w2" in two.output
    bad_quorum = runner.invoke(main, ["verify", str(tmp_path / "honest.tar.gz"), "--key", signer.verifier_key,
                                      "--witness", witness.vkey, "--quorum", "3"])
    assert 2 == bad_quorum.exit_code


def test_the_profile_s_witnesses_are_asked_by_the_writer_process(tmp_path: Path) -> None:
    config = init_project(tmp_path)
    signing = Obligations.from_file(config)
    log_key = signing.ledger.signer.verifier_key
    signing.close()
    witness = Witness(tmp_path, [log_key])
    with running(witness):
        with open(config, "a", encoding="utf-8") as handle:
            handle.write(f'\n[witnesses]\nquorum = 1\ninterval = 0.05\nlagging_after = 1\n'
                         f'servers = [{{ url = "{witness.url}", key = "{witness.vkey}" }}]\n')
        obligations = Obligations.from_file(config)
        try:
            ledger = obligations.ledger
            assert ledger.writer_pid is not None  # The shared writer process signs, and asks.
            index = ledger.append({"kind": "log"})
            size = checkpoint_of(ledger.sign_checkpoint()).size
            until(lambda: _latest_cosigned(ledger) == size, 20, "the writer process's cosignature")
            from aiobligations.middleware import ObligationsMiddleware

            async def app(scope: Any, receive: Any, send: Any) -> None:
                raise AssertionError("not reached")

            wrapped = ObligationsMiddleware(app, obligations=obligations)
            served = asyncio.run(_get(wrapped, "/ai/checkpoint"))
            assert check_quorum(served, [witness.signer.verifier], 1)[0]
            assert served.startswith(ledger.witnessed_checkpoint.split("\n\n")[0])  # type: ignore[union-attr]
            document = json.loads(asyncio.run(_get(wrapped, "/.well-known/ai-transparency")))
            assert {"quorum": 1, "keys": [witness.vkey]} == document["ledger"]["witnesses"]
            assert "witness_conflicts" not in document
            receipt = make_receipt(ledger, index)
            assert check_quorum(parse_receipt(receipt).checkpoint, [witness.signer.verifier], 1)[0]
            (tmp_path / "receipt.txt").write_text(receipt)
            result = CliRunner().invoke(main, ["verify-receipt", str(tmp_path / "receipt.txt"), "--key", log_key,
                                               "--witness", witness.vkey, "--quorum", "1"])
            assert 0 == result.exit_code, result.output
            assert "cosigned by witness.test/w1" in result.output
        finally:
            obligations.close()


async def _get(app: Any, path: str) -> str:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    assert 200 == sent[0]["status"], sent
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()


def test_settings_from_the_profile_are_checked() -> None:
    key = WitnessSigner.generate("w.test/w").verifier_key
    good = WitnessSettings.from_dict({"quorum": 1, "servers": [{"url": "http://127.0.0.1:7380/", "key": key}]})
    assert "http://127.0.0.1:7380" == good.servers[0].url and 10.0 == good.interval
    assert good == WitnessSettings.from_dict(good.as_dict())
    from aiobligations.errors import ConfigurationError

    for bad in ({"quorum": 2, "servers": [{"url": "http://x", "key": key}]},
                {"quorum": 1, "servers": []},
                {"quorum": 1, "servers": [{"url": "ftp://x", "key": key}]},
                {"quorum": 1, "servers": [{"url": "http://x", "key": "a/b+12345678+AwEB"}]},  # Not Ed25519.
                {"quorum": 1, "interval": 0, "servers": [{"url": "http://x", "key": key}]}):
        with pytest.raises(ConfigurationError):
            WitnessSettings.from_dict(bad)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_stores_keep_cosignatures_alike(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Store protocol parity: both backends keep, replace and list cosignatures and timestamps alike."""
    if backend == "sqlite":
        store: Any = SQLiteStore(tmp_path / "cosign.db")
    else:
        from aiobligations.ledger.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_url"), schema=request.getfixturevalue("pg_schema"))
    store.open()
    try:
        assert ([], {}) == (store.cosignatures(), store.witness_sizes())
        store.add_cosignature(3, "w1", "note3", "line-a\n")
        store.add_cosignature(5, "w1", "note5", "line-b\n")
        store.add_cosignature(5, "w2", "note5", "line-c\n")
        store.add_cosignature(5, "w2", "note5", "line-d\n")  # Replaces the line before it.
        assert [(5, "w1", "note5", "line-b\n"), (5, "w2", "note5", "line-d\n")] == store.cosignatures(5)
        assert 3 == len(store.cosignatures())
        assert {"w1": 5, "w2": 5} == store.witness_sizes()
        assert [] == store.timestamps()
        store.add_timestamp(5, "http://tsa", "note5", b"\x30\x00")
        store.add_timestamp(5, "http://tsa", "note5", b"\x30\x01")  # Replaces the response before it.
        store.add_timestamp(6, "http://tsa", "note6", b"\x30\x02")
        assert [(5, "http://tsa", "note5", b"\x30\x01")] == store.timestamps(5)
        assert 2 == len(store.timestamps())
    finally:
        store.close()


def test_the_replicas_elected_sequencer_asks_the_witnesses(make_replica: Any, signer: Signer, tmp_path: Path) -> None:
    with running(Witness(tmp_path, [signer.verifier_key])) as witness:
        first = make_replica(witnesses=witness.settings())
        second = make_replica(witnesses=witness.settings())
        for i in range(6):
            (first if i % 2 else second).append({"kind": "log", "i": i})
        size = checkpoint_of(first.sign_checkpoint()).size
        until(lambda: _latest_cosigned(second) == size, 20, "the sequencer's cosignature")
        assert check_quorum(first.witnessed_checkpoint or "", [witness.signer.verifier], 1)[0]
        assert witness.state is not None and size == witness.state.latest(ORIGIN)[0]  # type: ignore[index]



def test_a_witness_behind_a_pruned_gap_is_reported_not_fatal(make_ledger: Any, signer: Signer, tmp_path: Path) -> None:
    """When the records a proof from the witness's size needs were pruned, the client says so and backs
    off; the ledger goes on."""
    with running(Witness(tmp_path, [signer.verifier_key])) as witness:
        ledger = make_ledger(witnesses=witness.settings())
        for i in range(100):
            ledger.append({"kind": "log", "i": i})
        first = checkpoint_of(ledger.sign_checkpoint()).size
        until(lambda: _latest_cosigned(ledger) == first, 15, "the first cosignature")
        assert ledger.witnesses is not None
        ledger.witnesses.close()  # The witness hears nothing while the log grows and is pruned.
        for i in range(100):
            ledger.append({"kind": "log", "i": 100 + i})
        ledger.prune(150, now=time.time() + 10 * 366 * 86400)
        last = checkpoint_of(ledger.sign_checkpoint()).size
        with capture_logs() as logs:
            client = ledger.start_witnesses(witness.settings())
            client.round()
        failed = [e for e in logs if e["event"] == "witness.failed"]
        assert failed and "no consistency proof from the witness's size 100" in failed[0]["error"]
        assert first == _latest_cosigned(ledger)
        assert last == ledger.append({"kind": "log"})  # Appends go on.
