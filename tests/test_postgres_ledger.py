"""What only the PostgreSQL ledger has: the queue, the elected sequencer, exactly-once, migrations,
the profile's url and keys from the environment (the shared behaviour is in test_store_contract.py)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from aiobligations import Obligations
from aiobligations.cli import main
from aiobligations.errors import ConfigurationError, UnusableInput
from aiobligations.keys import init_project, load_signer
from aiobligations.ledger._items import OP_RECORD
from aiobligations.ledger.postgres import MIGRATIONS, PostgresStore, parse_sequenced, sequenced_payload
from aiobligations.profile import load_profile

from test_workers import until

MARKER = "personal-marker-5c1d"


def sql(url: str, statement: str, params: Any = ()) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def test_one_sequencer_and_takeover(make_replica: Any) -> None:
    """Of two replicas exactly one sequences; when it closes, the other takes over and the log goes on."""
    a = make_replica()
    b = make_replica()
    a.append({"kind": "x", "n": 1})
    leaders = until(lambda: [w for w in (a._writer, b._writer) if w.leading], 5, "a sequencer")
    assert len(leaders) == 1
    first, second = (a, b) if a._writer.leading else (b, a)
    first.close()
    started = time.monotonic()
    index = second.append({"kind": "x", "n": 2}, timeout=10)
    assert second._writer.leading
    assert time.monotonic() - started < 5
    assert index == 1
    assert second.read(1)["n"] == 2


def test_personal_data_is_sealed_in_the_queue(make_replica: Any, pg_url: str, pg_schema: str) -> None:
    """A queued record's personal part is sealed (never plaintext in the queue table) and opens once sequenced."""
    ledger = make_replica(candidate=False)  # Nobody sequences: the rows stay in the queue.
    ledger.submit({"kind": "interaction", "subject": "alice", "personal": {"prompt": MARKER}})
    rows = until(lambda: sql(pg_url, f"SELECT pseudonym, sealed, body FROM {pg_schema}.queue"), 5, "the queued row")
    pseudonym, sealed, body = rows[0]
    assert pseudonym != "alice" and MARKER.encode() not in bytes(sealed) and MARKER.encode() not in bytes(body)
    other = make_replica()
    until(lambda: other.durable_size() == 1, 10, "the sequencer to take the row")
    assert other.read(0)["personal"] == {"prompt": MARKER}
    assert not sql(pg_url, f"SELECT 1 FROM {pg_schema}.queue")


def test_a_row_sent_again_is_stored_once(make_replica: Any, pg_url: str, pg_schema: str) -> None:
    """A batch whose commit answer was lost is sent again; the sequencer stores it once."""
    ledger = make_replica()
    writer = ledger._writer
    ledger.append({"kind": "x", "n": 1})
    # The same peer and number again, as after a connection lost in the middle of a commit.
    row = (writer.peer, writer.seq, OP_RECORD, "x", b',"n":1', None, None, None, False)
    row = (*row[:6], writer.queue_seal.seal(row, None), *row[7:])
    with writer.store.connect() as conn:
        writer.store.enqueue(conn, [row])
    ledger.append({"kind": "x", "n": 2})
    assert ledger.flush() == 2
    assert [ledger.read(i)["n"] for i in range(2)] == [1, 2]
    assert not sql(pg_url, f"SELECT 1 FROM {pg_schema}.queue")


def test_a_kind_postgresql_cannot_hold_is_recorded_as_refused(make_replica: Any) -> None:
    """A record PostgreSQL refuses (a NUL in its kind) becomes a ledger.record_refused record; the rest go on."""
    ledger = make_replica()
    bad = ledger.append({"kind": "bad\x00kind", "x": 1})
    good = ledger.append({"kind": "good", "x": 2})
    assert ledger.read(bad)["kind"] == "ledger.record_refused"
    assert "NUL" in ledger.read(bad)["error"]
    assert ledger.read(good)["x"] == 2


def test_prune_runs_on_the_sequencer_by_handover(make_replica: Any) -> None:
    """Maintenance asked on a replica that is not the sequencer runs there after a handover."""
    a = make_replica()
    for n in range(5):
        a.append({"kind": "log", "n": n})
    a.sign_checkpoint()
    b = make_replica()
    until(lambda: a._writer.leading or b._writer.leading, 5, "a sequencer")
    follower = b if a._writer.leading else a
    assert follower.prune(3, now=time.time() + 10 * 365 * 86400) == 3
    assert follower.first_index == 3
    assert follower.read(4)["n"] == 4
    assert follower._writer.leading  # It took the seat to do it.


def test_migrations(pg_url: str, pg_schema: str) -> None:
    """A new schema is created at the latest version once; a newer one is refused with a clear message."""
    store = PostgresStore(pg_url, schema=pg_schema)
    try:
        assert store.version() == 0
        assert store.upgrade() == [m[0] for m in MIGRATIONS]
        assert store.upgrade() == []
        assert store.version() == MIGRATIONS[-1][0]
        sql(pg_url, f"INSERT INTO {pg_schema}.migrations VALUES (999, 'from the future', 0)")
        with pytest.raises(UnusableInput, match="newer than this aiobligations"):
            store.open()
    finally:
        store.close()
    readonly = PostgresStore(pg_url, schema="t_nothing_here", readonly=True)
    try:
        with pytest.raises(UnusableInput, match="no aiobligations ledger"):
            readonly.open()
    finally:
        readonly.close()


def test_migrations_race(pg_url: str, pg_schema: str) -> None:
    """Replicas starting together apply each migration once."""
    stores = [PostgresStore(pg_url, schema=pg_schema) for _ in range(4)]
    applied: list[list[int]] = []
    start = threading.Barrier(4)

    def run(store: PostgresStore) -> None:
        start.wait()
        applied.append(store.upgrade())

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert sorted(map(len, applied)) == [0, 0, 0, len(MIGRATIONS)]


def test_bad_urls_and_schemas() -> None:
    """Configuration mistakes are named at once."""
    with pytest.raises(ConfigurationError, match="postgresql://"):
        PostgresStore("mysql://x/y")
    with pytest.raises(ConfigurationError, match="schema"):
        PostgresStore("postgresql://x/y", schema="Robert'); DROP TABLE students;--")


def test_notification_payload_round_trip() -> None:
    """The sequencer's notification carries progress and indices, and falls back when too long."""
    peer = bytes(range(8))
    text = sequenced_payload(10, [(peer, 7, 0.0)], {8: peer + (5).to_bytes(8, "big")})
    assert parse_sequenced(text) == (10, {peer: (7, {5: 8})})
    many = [(os.urandom(8), n, 0.0) for n in range(400)]
    size, progress = parse_sequenced(sequenced_payload(3, many))
    assert size == 3 and (progress is None or all(v[1] is None for v in progress.values()))


@pytest.fixture
def site(tmp_path: Path, pg_url: str, pg_schema: str) -> Path:
    """A project whose profile keeps its ledger in PostgreSQL, keys given by the environment."""
    config = init_project(tmp_path / "site")
    text = config.read_text()
    text = text.replace("[ledger]", f'[ledger]\nurl = "{pg_url}"\nschema = "{pg_schema}"', 1)
    config.write_text(text)
    return config


def test_profile_url_cli_and_env_keys(site: Path, pg_url: str, pg_schema: str, monkeypatch: Any) -> None:
    """[ledger] url opens a replica; db upgrade/version and verify work on it; keys may come from env."""
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade", "--config", str(site)])
    assert result.exit_code == 0, result.output
    assert "version" in result.output
    assert runner.invoke(main, ["db", "version", "--config", str(site)]).exit_code == 0
    profile = load_profile(site)
    keys = site.parent / "keys"
    monkeypatch.setenv("T_SIGNING", (keys / "ledger.key").read_text())
    monkeypatch.setenv("T_MASTER", (keys / "master.key").read_text())
    text = re.sub(r'(?m)^signing_key = .*$', 'signing_key = "env:T_SIGNING"', site.read_text())
    site.write_text(re.sub(r'(?m)^master_key = .*$', 'master_key = "env:T_MASTER"', text))
    (keys / "master.key").unlink()  # Only the environment has it now.
    with Obligations.from_file(site) as obligations:
        assert type(obligations.ledger._store).__name__ == "PostgresStore"
        obligations.submit({"kind": "test", "n": 1})
        assert obligations.ledger.flush() == 1
    key = load_signer(profile.ledger.signing_key, profile.ledger.origin).verifier_key
    result = runner.invoke(main, ["verify", pg_url, "--schema", pg_schema, "--key", key])
    assert result.exit_code == 0, result.output
    assert "intact: 1 records" in result.output
    monkeypatch.delenv("T_MASTER")
    with pytest.raises(ConfigurationError, match="T_MASTER is not set"):
        Obligations.from_file(site)


def test_keys_callback(site: Path) -> None:
    """A KMS callback gives the keys; a wrong kind of value is refused by name."""
    from aiobligations.ledger.crypto import MasterKey

    keys = site.parent / "keys"
    master_text = (keys / "master.key").read_text()
    asked: list[str] = []

    def kms(kind: str) -> Any:
        asked.append(kind)
        return MasterKey.from_text(master_text) if kind == "master_key" else None

    (keys / "master.key").unlink()
    with Obligations.from_file(site, keys=kms) as obligations:
        assert obligations.ledger.append({"kind": "x"}) == 0
    assert asked == ["signing_key", "master_key"]
    with pytest.raises(ConfigurationError, match="keys callback returned a int"):
        Obligations.from_file(site, keys=lambda kind: 7)


_CHILD = """
import sys, time
from aiobligations.ledger.replica import ReplicaLedger
from aiobligations.ledger.crypto import MasterKey
from aiobligations.ledger.note import Signer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
url, schema, signing, master = sys.argv[1:5]
ledger = ReplicaLedger(url, schema=schema, origin="test.example/aiobligations/ledger",
                       signer=Signer("test.example/aiobligations/ledger",
                                     Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signing))),
                       master_key=MasterKey(bytes.fromhex(master)))
ledger.append({"kind": "child"})
while not ledger._writer.leading:
    time.sleep(0.01)
print("leading", flush=True)
sys.stdin.read()
"""


def test_a_stopped_sequencer_loses_its_seat(pg_url: str, pg_schema: str, make_replica: Any) -> None:
    """A sequencer that stops without dying (SIGSTOP) is cut off by the server within about 10 s,
    and another replica takes over: the log never stays unsequenced for as long as it is stopped."""
    import signal
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from aiobligations.ledger.crypto import MasterKey
    from aiobligations.ledger.note import Signer

    key = Ed25519PrivateKey.generate()
    master = MasterKey.generate()
    signing = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption()).hex()
    child = subprocess.Popen([sys.executable, "-c", _CHILD, pg_url, pg_schema, signing, master._raw.hex()],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        for line in child.stdout:  # structlog's lines come first
            if line.strip() == "leading":
                break
        else:
            pytest.fail("the child never became the sequencer")
        os.kill(child.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        ledger = make_replica(signer=Signer("test.example/aiobligations/ledger", key), master_key=master)
        index = ledger.append({"kind": "after"}, timeout=40)
        took = time.monotonic() - stopped
        print(f"takeover from a stopped sequencer: {took:.1f} s")
        assert index == 1 and ledger._writer.leading
        assert took < 25
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.communicate()


def test_master_key_rotation_with_replicas_on_the_old_key(make_replica: Any) -> None:
    """After one replica rotates the master key, a replica still on the old key keeps queueing (its
    rows open for the new sequencer), never sequences with the old key, and nothing is lost."""
    from aiobligations.ledger.crypto import MasterKey

    new = MasterKey.generate()
    rotating = make_replica()
    old = make_replica()
    rotating.append({"kind": "interaction", "subject": "alice", "personal": {"p": "before"}})
    assert rotating.rotate_master_key(new) == 1
    assert rotating._writer.leading
    index = old.append({"kind": "interaction", "subject": "bob", "personal": {"p": MARKER}}, timeout=10)
    assert rotating.read(index)["personal"] == {"p": MARKER}
    assert rotating.read(0)["personal"] == {"p": "before"}
    rotating.close()  # The old-key replica must not take the seat: the log waits for a current one.
    old.submit({"kind": "interaction", "subject": "carol", "personal": {"p": "queued"}})
    current = make_replica(master_key=new)
    assert current.flush(timeout=20) == 3
    assert current.read(2)["personal"] == {"p": "queued"}
    assert not old._writer.leading


def test_a_row_forged_into_the_queue_is_stored_as_forged(make_replica: Any, pg_url: str, pg_schema: str) -> None:
    """Someone with database access alone cannot make the sequencer sign a record of their making:
    a queue row without the replicas' tag, or with an edited field, is stored as ledger.queue_row_forged."""
    ledger = make_replica(candidate=False)
    ledger.submit({"kind": "genuine", "n": 1})
    until(lambda: sql(pg_url, f"SELECT 1 FROM {pg_schema}.queue"), 5, "the queued row")
    sql(pg_url, f"UPDATE {pg_schema}.queue SET body = %s", (b',"n":2',))  # An edited genuine row.
    sql(pg_url, f"INSERT INTO {pg_schema}.queue (peer, seq, op, kind, body, waits, sealed) "
                "VALUES (%s, 1, 0, 'interaction', %s, false, %s)",
        (b"\x01" * 8, b',"route":"/made-up"', b"\x00" * 16))
    sequencer = make_replica()
    assert sequencer.flush(timeout=20) == 2
    kinds = [sequencer.read(i)["kind"] for i in range(2)]
    assert kinds == ["ledger.queue_row_forged", "ledger.queue_row_forged"]
    assert "made-up" not in str([sequencer.read(i) for i in range(2)])


def test_profile_sequencer_and_migrate_flags(site: Path) -> None:
    """[ledger] migrate = false refuses a schema behind this version; sequencer = false never sequences."""
    text = site.read_text()
    site.write_text(text.replace("[ledger]", "[ledger]\nmigrate = false\nsequencer = false", 1))
    with pytest.raises(UnusableInput, match="no aiobligations ledger"):
        Obligations.from_file(site)
    assert CliRunner().invoke(main, ["db", "upgrade", "--config", str(site)]).exit_code == 0
    with Obligations.from_file(site) as obligations:
        assert obligations.ledger._writer.candidate is False
        obligations.submit({"kind": "x"})
        assert not obligations.ledger._writer.leading
    site.write_text(text.replace("[ledger]", '[ledger]\nmigrate = "yes"', 1))
    with pytest.raises(ConfigurationError, match="migrate must be true or false"):
        load_profile(site)


def test_records_left_when_closing_without_the_database_are_kept_and_queued_later(
        tmp_path: Path, pg_schema: str, make_replica: Any) -> None:
    """A replica that closes while its database is unreachable keeps the records nobody waited on
    in its leftovers file (sealed, never plaintext), and the next replica on the host queues them:
    each is stored once."""
    from _pgproxy import proxied

    leftovers = tmp_path / "ledger.db.leftovers"
    with proxied() as proxy:
        # Records wait half a second before the writer takes them: all five are in its hands
        # when it finds the database gone.
        ledger = make_replica(url=proxy.url(), leftovers=leftovers, candidate=False, batch_delay=0.5)
        proxy.cut()
        for n in range(5):
            ledger.submit({"kind": "left", "n": n, "subject": "dora", "personal": {"p": MARKER}})
        until(lambda: ledger._writer.failing, 10, "the writer to find the database gone")
        ledger.close(timeout=1)
    lines = leftovers.read_bytes()
    assert lines and MARKER.encode() not in lines and b"dora" not in lines
    assert oct(leftovers.stat().st_mode & 0o777) == "0o600"
    later = make_replica(leftovers=leftovers)
    assert not leftovers.exists()
    total = later.flush(timeout=20)
    left = [later.read(i) for i in range(total)]
    assert [r["n"] for r in left] == list(range(5))
    assert all(r["kind"] == "left" and r["personal"] == {"p": MARKER} for r in left)
