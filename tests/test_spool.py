"""The fail_open spool (aiobligations.ledger.spool): stopping its writer, and sharing one file
between processes.

The process tests start real processes (``python -c``) on one spool file: they wait for a "go"
line so that they all start at once, and replayers replay until told to stop. Nothing waits by
sleeping; timeouts are watchdogs only.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from aiobligations.errors import LedgerFull
from aiobligations.ledger import Ledger, MasterKey, Signer
from aiobligations.ledger.spool import Spool
from conftest import ORIGIN

LABEL = b"aiobligations/spool/v1\n"


class FakeLedger:
    """All a spool needs of a ledger: ``master_key`` and ``submit`` (this one records what it gets).

    Args:
        accept: How many records it takes before raising ``LedgerFull`` (None: all).
    """

    def __init__(self, master: MasterKey, accept: int | None = None) -> None:
        self._master = master
        self.accept = accept
        self.received: list[dict[str, Any]] = []

    @property
    def master_key(self) -> MasterKey:
        return self._master

    def submit(self, record: dict[str, Any]) -> None:
        if self.accept is not None and len(self.received) >= self.accept:
            raise LedgerFull("the test's ledger is full")
        self.received.append(record)


class GatedLedger(FakeLedger):
    """Holds the spool's writer at its first batch (it reads ``master_key`` first) until ``gate`` opens."""

    def __init__(self, master: MasterKey) -> None:
        super().__init__(master)
        self.entered = threading.Event()
        self.gate = threading.Event()

    @property
    def master_key(self) -> MasterKey:
        if threading.current_thread().name == "aiobligations-spool":
            self.entered.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return self._master


class SentinelWatch:
    """The spool's queue, opening ``gate`` once the stop sentinel is in it (after every earlier put)."""

    def __init__(self, queue: Any, gate: threading.Event) -> None:
        self._queue = queue
        self._gate = gate

    def put(self, item: Any) -> None:
        self._queue.put(item)
        if item is None:
            self._gate.set()

    def get(self) -> Any:
        return self._queue.get()

    def get_nowait(self) -> Any:
        return self._queue.get_nowait()

    def empty(self) -> bool:
        return self._queue.empty()


def spooled(path: Path, master: MasterKey) -> list[dict[str, Any]]:
    """The records in a spool file, in order (every line must open)."""
    if not path.exists():
        return []
    return [json.loads(master.unwrap(base64.b64decode(line), LABEL)) for line in path.read_bytes().splitlines()]


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["id"] for record in records]


def record(n: int, tag: str = "r") -> dict[str, Any]:
    return {"kind": "test", "id": f"{tag}-{n}"}


# -- stopping the writer -----------------------------------------------------------------------


def test_a_stop_gathered_into_a_batch_stops_the_writer(tmp_path: Path, master: MasterKey) -> None:
    """Regression: the writer took a stop met while gathering a batch for a record and waited forever."""
    ledger = GatedLedger(master)
    spool = Spool(tmp_path / "ledger.db.spool", ledger)
    spool.put(record(0), reason="LedgerFull")
    assert ledger.entered.wait(30)  # The writer holds [record 0]; what follows waits in the queue.
    for n in range(1, 11):
        spool.put(record(n), reason="LedgerFull")
    spool._queue.put(None)  # What the middleware tests do to stop it: the stop lands mid-batch.
    ledger.gate.set()

    spool._thread.join(30)

    assert not spool._thread.is_alive()
    assert [f"r-{n}" for n in range(11)] == ids(spooled(spool.path, master))


def test_close_writes_everything_queued_then_stops_the_writer(tmp_path: Path, master: MasterKey) -> None:
    ledger = GatedLedger(master)
    spool = Spool(tmp_path / "ledger.db.spool", ledger)
    spool._queue = SentinelWatch(spool._queue, ledger.gate)  # The writer goes on once close() queued its stop.
    spool.put(record(0), reason="LedgerFull")
    assert ledger.entered.wait(30)
    for n in range(1, 3000):
        spool.put(record(n), reason="LedgerFull")
    writer = spool._thread

    started = time.monotonic()
    spool.close(timeout=30)

    assert not writer.is_alive()
    assert time.monotonic() - started < 25  # It returned because the writer stopped, not at the timeout.
    assert [f"r-{n}" for n in range(3000)] == ids(spooled(spool.path, master))
    assert 3000 == spool.pending
    spool.close()  # Idempotent.
    spool.close(timeout=0)


def test_a_record_put_after_close_is_still_written(tmp_path: Path, master: MasterKey) -> None:
    spool = Spool(tmp_path / "ledger.db.spool", FakeLedger(master))
    spool.close()  # Nothing ever started: nothing to do.
    spool.put(record(0), reason="LedgerClosed")
    spool.close()
    spool.put(record(1), reason="LedgerClosed")
    spool.close()

    assert not spool._thread.is_alive()
    assert ["r-0", "r-1"] == ids(spooled(spool.path, master))


def test_records_put_while_closing_are_not_lost(tmp_path: Path, master: MasterKey) -> None:
    spool = Spool(tmp_path / "ledger.db.spool", FakeLedger(master))
    threads, per_thread = 4, 400
    start = threading.Barrier(threads + 1)

    def put_all(worker: int) -> None:
        start.wait()
        for n in range(per_thread):
            spool.put(record(n, f"w{worker}"), reason="LedgerFull")

    putters = [threading.Thread(target=put_all, args=(w,)) for w in range(threads)]
    for putter in putters:
        putter.start()
    start.wait()
    closes = 0
    while any(putter.is_alive() for putter in putters):
        spool.close(timeout=30)
        closes += 1
    for putter in putters:
        putter.join(30)
    spool.close(timeout=30)

    assert not spool._thread.is_alive()
    expected = {f"w{w}-{n}" for w in range(threads) for n in range(per_thread)}
    found = ids(spooled(spool.path, master))
    assert len(expected) == len(found) and expected == set(found), f"after {closes} closes"


# -- one file, several processes ---------------------------------------------------------------

CHILD = r"""
import json
import logging
import sys
import threading

import structlog

from aiobligations.errors import LedgerError, LedgerFull
from aiobligations.ledger import Ledger, MasterKey, Signer
from aiobligations.ledger.spool import Spool

# Errors only, on stderr (a file): stdout carries the protocol.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))

mode, spool_path, key_path, tag, count, origin, db = sys.argv[1:8]
master = MasterKey.load(key_path)


class Refusing:
    master_key = master

    def submit(self, record):
        raise LedgerFull("this worker's ledger takes nothing")


class Recording:
    master_key = master

    def __init__(self):
        self.received = []

    def submit(self, record):
        self.received.append(record["id"])


def real_ledger():
    return Ledger.open(db, origin=origin, signer=Signer.generate(origin), master_key=master)


print("ready", flush=True)
sys.stdin.readline()  # "go": every child starts at once.
if mode.startswith("put"):
    if mode == "put":
        ledger = Refusing()
    else:
        ledger = real_ledger()
        ledger.close()  # Every submit now raises LedgerClosed.
    spool = Spool(spool_path, ledger)
    for n in range(int(count)):
        record = {"kind": "test", "id": f"{tag}-{n}"}
        try:
            ledger.submit(record)  # As Obligations.submit does.
        except LedgerError as exc:
            spool.put(record, reason=type(exc).__name__)
        if n % 10 == 9:
            spool.close(timeout=60)  # One append every ten records: many appends among the replays.
    spool.close(timeout=60)
    print(json.dumps({"writer_alive": spool._thread.is_alive()}), flush=True)
else:
    stop = threading.Event()

    def wait_for_stop():
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    ledger = Recording() if mode == "replay" else real_ledger()
    spool = Spool(spool_path, ledger)
    while not stop.is_set():
        spool.replay()
    spool.replay()  # The putters are done: this takes whatever is left.
    if mode == "replay":
        received = ledger.received
    else:
        ledger.flush(60)
        received = [ledger.read(index)["id"] for index in range(ledger.size)]
        ledger.close()
    print(json.dumps(received), flush=True)
"""


class Children:
    """Child processes on one spool, started together; a watchdog kills them if they hang."""

    def __init__(self, tmp_path: Path, spool_path: Path, key_path: Path) -> None:
        self.tmp_path = tmp_path
        self.spool_path = spool_path
        self.key_path = key_path
        self.children: list[tuple[str, subprocess.Popen[str], Path]] = []
        self.watchdog = threading.Timer(240, self.kill)

    def start(self, mode: str, tag: str, count: int = 0) -> subprocess.Popen[str]:
        err = self.tmp_path / f"{tag}.stderr"
        with open(err, "w") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, mode, str(self.spool_path), str(self.key_path), tag, str(count),
                 ORIGIN, str(self.tmp_path / f"{tag}.db")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        self.children.append((tag, child, err))
        return child

    def go(self) -> None:
        """Wait until every child is ready, then let them all go at once."""
        self.watchdog.start()
        for tag, child, _ in self.children:
            assert "ready\n" == child.stdout.readline(), f"{tag}: {self.errors(tag)}"
        for _, child, _ in self.children:
            child.stdin.write("go\n")
            child.stdin.flush()

    def result(self, child: subprocess.Popen[str], *, stop: bool = False) -> Any:
        tag = next(t for t, c, _ in self.children if c is child)
        if stop:
            child.stdin.write("stop\n")
            child.stdin.flush()
        line = child.stdout.readline()
        assert 0 == child.wait(), f"{tag} failed: {self.errors(tag)}"
        assert line, f"{tag} said nothing: {self.errors(tag)}"
        errors = self.errors(tag)
        assert not errors.strip(), f"{tag} logged errors: {errors}"
        return json.loads(line)

    def errors(self, tag: str) -> str:
        return next(err for t, _, err in self.children if t == tag).read_text(errors="replace")

    def kill(self) -> None:
        for _, child, _ in self.children:
            if child.poll() is None:
                child.kill()

    def close(self) -> None:
        self.watchdog.cancel()
        self.kill()
        for _, child, _ in self.children:
            child.wait()
            child.stdin.close()
            child.stdout.close()


@pytest.fixture
def key_path(tmp_path: Path, master: MasterKey) -> Path:
    path = tmp_path / "master.key"
    master.dump(path)
    return path


def test_processes_share_one_spool_each_record_replayed_exactly_once(tmp_path: Path, key_path: Path) -> None:
    """Three processes spool while two replay, all at once: every record reaches one ledger, once."""
    spool_path = tmp_path / "ledger.db.spool"
    count = 300
    children = Children(tmp_path, spool_path, key_path)
    try:
        putters = [children.start("put", f"p{n}", count) for n in range(3)]
        replayers = [children.start("replay", f"r{n}") for n in range(2)]
        children.go()
        for putter in putters:
            assert {"writer_alive": False} == children.result(putter)
        received = [children.result(replayer, stop=True) for replayer in replayers]
    finally:
        children.close()

    counts = Counter(item for each in received for item in each)
    expected = {f"p{p}-{n}" for p in range(3) for n in range(count)}
    assert expected == set(counts), f"lost: {sorted(expected - set(counts))[:10]}"
    assert {1} == set(counts.values()), f"replayed twice: {[k for k, v in counts.items() if v > 1][:10]}"
    assert not spool_path.exists() or not spool_path.read_bytes().strip()


def test_processes_share_one_spool_with_real_ledgers(
    tmp_path: Path, key_path: Path, signer: Signer, master: MasterKey
) -> None:
    """Workers whose ledger is closed spool; a child and this process replay into real ledgers."""
    spool_path = tmp_path / "ledger.db.spool"
    count = 200
    ledger = Ledger.open(tmp_path / "here.db", origin=ORIGIN, signer=signer, master_key=master)
    try:
        spool = Spool(spool_path, ledger)
        children = Children(tmp_path, spool_path, key_path)
        try:
            putters = [children.start("put-real", f"p{n}", count) for n in range(2)]
            replayer = children.start("replay-real", "r")
            children.go()
            while any(putter.poll() is None for putter in putters):
                spool.replay()
            for putter in putters:
                assert {"writer_alive": False} == children.result(putter)
            spool.replay()
            there = children.result(replayer, stop=True)
        finally:
            children.close()
        spool.replay()
        ledger.flush(60)
        here = [ledger.read(index) for index in range(ledger.size)]
    finally:
        ledger.close()

    assert all("LedgerClosed" == item["spooled"] for item in here)
    counts = Counter(there + ids(here))
    expected = {f"p{p}-{n}" for p in range(2) for n in range(count)}
    assert expected == set(counts), f"lost: {sorted(expected - set(counts))[:10]}"
    assert {1} == set(counts.values()), f"replayed twice: {[k for k, v in counts.items() if v > 1][:10]}"
    assert not spool_path.exists()


def test_a_process_notices_what_another_spooled_with_one_stat_a_second(
    tmp_path: Path, key_path: Path, master: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_path = tmp_path / "ledger.db.spool"
    ledger = FakeLedger(master)
    spool = Spool(spool_path, ledger)
    now = [1000.0]
    spool._clock = lambda: now[0]
    spool.replay()  # Nothing there; it looked at 1000.0.
    assert 0 == spool.pending

    children = Children(tmp_path, spool_path, key_path)
    try:
        putter = children.start("put", "p", 20)
        children.go()
        assert {"writer_alive": False} == children.result(putter)
    finally:
        children.close()

    stats = []
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: (stats.append(path), real_stat(path, *a, **k))[1])
    now[0] += 0.5
    assert [0, 0, 0] == [spool.pending for _ in range(3)]  # Looked less than a second ago.
    now[0] += 0.5
    assert [1, 1, 1] == [spool.pending for _ in range(3)]
    assert spool.might_have_pending()
    monkeypatch.undo()
    assert 1 == stats.count(spool_path), stats

    spool.replay_soon()
    spool.close(timeout=30)  # Waits for the replay.

    assert [f"p-{n}" for n in range(20)] == ids(ledger.received)
    assert {"LedgerFull"} == {item["spooled"] for item in ledger.received}
    assert 0 == spool.pending and not spool.might_have_pending()
    now[0] += 5
    assert 0 == spool.pending


# -- what stays in the file --------------------------------------------------------------------


def write_line(path: Path, master: MasterKey, item: dict[str, Any]) -> bytes:
    line = base64.b64encode(master.wrap(json.dumps(item).encode(), LABEL))
    with open(path, "ab") as handle:
        handle.write(line + b"\n")
    return line


def test_unreadable_lines_are_kept_and_logged_once(tmp_path: Path, master: MasterKey) -> None:
    path = tmp_path / "ledger.db.spool"
    other = write_line(path, MasterKey.generate(), record(0))
    with open(path, "ab") as handle:
        handle.write(b"not base64 at all!\n")
    write_line(path, master, record(1))
    ledger = FakeLedger(master)

    with capture_logs() as logs:
        spool = Spool(path, ledger)  # Replays at open.
        assert 0 == spool.replay()
        spool.replay_soon()  # Nothing it could replay: no thread.
        assert 0 == spool.pending

    assert spool._replay_thread is None
    assert ["r-1"] == ids(ledger.received)
    assert [other, b"not base64 at all!"] == path.read_bytes().splitlines()
    unreadable = [entry for entry in logs if entry["event"] == "spool_line_unreadable"]
    assert 1 == len(unreadable) and 2 == unreadable[0]["lines"]


def test_a_ledger_refusing_mid_replay_keeps_the_rest_in_order(tmp_path: Path, master: MasterKey) -> None:
    path = tmp_path / "ledger.db.spool"
    for n in range(10):
        write_line(path, master, record(n))
    ledger = FakeLedger(master, accept=4)

    spool = Spool(path, ledger)

    assert ["r-0", "r-1", "r-2", "r-3"] == ids(ledger.received)
    assert [f"r-{n}" for n in range(4, 10)] == ids(spooled(path, master))
    assert 6 == spool.pending
    ledger.accept = None
    assert 6 == spool.replay()
    assert [f"r-{n}" for n in range(10)] == ids(ledger.received)
    assert not path.exists() and 0 == spool.pending


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path, master: MasterKey) -> None:
    path = tmp_path / "ledger.db.spool"
    ledger = FakeLedger(master, accept=0)
    spool = Spool(path, ledger)
    whole = write_line(path, master, record(0))
    with open(path, "ab") as handle:
        handle.write(whole[:20])  # A crash in the middle of an append.
    spool.put(record(1), reason="LedgerFull")
    spool.close(timeout=30)
    ledger.accept = None

    assert 2 == spool.replay()

    assert ["r-0", "r-1"] == ids(ledger.received)
    assert [whole[:20]] == path.read_bytes().splitlines()


# -- files ---------------------------------------------------------------------------------------


def test_spool_and_lock_file_are_private(tmp_path: Path, master: MasterKey) -> None:
    path = tmp_path / "ledger.db.spool"
    old = os.umask(0)
    try:
        spool = Spool(path, FakeLedger(master, accept=0))
        spool.put(record(0), reason="LedgerFull")
        spool.close(timeout=30)
    finally:
        os.umask(old)

    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert 0o600 == stat.S_IMODE(spool.lock_path.stat().st_mode)
    assert tmp_path / "ledger.db.spool.lock" == spool.lock_path

    path.chmod(0o644)  # Loosened by hand: the next append tightens it.
    spool.put(record(1), reason="LedgerFull")
    spool.close(timeout=30)
    assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert ["r-0", "r-1"] == ids(spooled(path, master))


@pytest.mark.parametrize("linked", ["ledger.db.spool", "ledger.db.spool.lock"])
def test_a_symlink_in_the_spools_place_is_refused_and_logged(tmp_path: Path, master: MasterKey, linked: str) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (tmp_path / linked).symlink_to(target)
    path = tmp_path / "ledger.db.spool"
    ledger = FakeLedger(master)

    with capture_logs() as logs:
        spool = Spool(path, ledger)
        spool.put(record(0), reason="LedgerFull")
        spool.close(timeout=30)
        assert 0 == spool.replay()

    assert b"" == target.read_bytes()
    assert not spool._thread.is_alive()
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert errors and all("symbolic link" in entry["error"] for entry in errors), errors
    assert any(entry["event"] == "spool_write_failed" and entry["records"] == 1 for entry in errors)

