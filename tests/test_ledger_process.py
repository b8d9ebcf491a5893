"""The writer-process ledger (:class:`aiobligations.ledger.process.ProcessLedger`) with real children.

Every test starts real ``python -m aiobligations.ledger._writer`` processes and, where it matters,
kills or stops them with signals: the parent must lose nothing and store nothing twice, however
the child dies. Waits are on conditions (a flush, a process exit, a row in the database), never
on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiobligations.errors import ConfigurationError, LedgerError, UnusableInput
from aiobligations.ledger import MasterKey, Retention, Signer, merkle, verify_path
from aiobligations.ledger._items import OP_FLUSH, OP_RECORD, OP_REMOTE, Waiter
from aiobligations.ledger.note import open_checkpoint
from aiobligations.ledger.process import ProcessLedger
from aiobligations.ledger.retention import DAY
from aiobligations.records import InteractionRecord, interaction_record

from conftest import ORIGIN

DEADLINE = 30.0


@pytest.fixture
def open_ledger(tmp_path: Path, signer: Signer, master: MasterKey) -> Iterator[Callable[..., ProcessLedger]]:
    """Open process ledgers (default file ``tmp_path/ledger.db``); all are closed at teardown."""
    opened: list[ProcessLedger] = []

    def make(path: Path | None = None, **kwargs: Any) -> ProcessLedger:
        kwargs.setdefault("origin", ORIGIN)
        kwargs.setdefault("signer", signer)
        kwargs.setdefault("master_key", master)
        ledger = ProcessLedger(path if path is not None else tmp_path / "ledger.db", **kwargs)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        pid = ledger.writer_pid
        if pid is not None and not ledger.closed:
            try:
                os.kill(pid, signal.SIGCONT)  # A test that failed while its child was stopped.
            except ProcessLookupError:
                pass
        ledger.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def records(ledger: ProcessLedger) -> list[dict[str, Any]]:
    return [ledger.read(index) for index in range(ledger.first_index, ledger.size)]


def unacked_ops(ledger: ProcessLedger) -> list[int]:
    with ledger._writer._ack_lock:
        return [op for op, _, _ in ledger._writer._unacked.values()]


def process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def interaction_args(interaction_id: str, request_chunks: list[Any], subject: str = "alice") -> InteractionRecord:
    """What the ASGI middleware hands :func:`interaction_record` for one request."""
    response = b'{"choices":[{"message":{"content":"ok"}}],"usage":{"prompt_tokens":12,"completion_tokens":3}}'
    return InteractionRecord(
        "http", interaction_id, "completed", time.time(), 0.125, subject,
        route="/v1/chat/completions", method="POST", status=200, first_byte=0.04, header_disclosed=True,
        body_notice="injected", first_contact=True, document_version="2026-01", request_bytes=80,
        response_bytes=len(response), capture=True, request_chunks=request_chunks, response_chunks=[response],
        capture_limit=1 << 20,
    )


def local_factory(n: int) -> dict[str, Any]:
    return {"kind": "log", "n": n, "built_in": os.getpid()}


def local_factory_that_raises(n: int) -> dict[str, Any]:
    raise RuntimeError(f"cannot build {n}")


class TestRoundTrip:
    def test_the_ledger_api_works_through_the_writer_process(
        self, open_ledger, make_ledger, tmp_path: Path, signer: Signer
    ) -> None:
        """Append, submit, aappend, checkpoints, proofs and erasure; the file reopens in a thread ledger."""
        ledger = open_ledger()
        assert ledger.writer_pid is not None and ledger.writer_pid != os.getpid()

        assert 0 == ledger.append({"kind": "interaction", "subject": "alice", "personal": {"prompt": "你好"}})
        first = ledger.read(0)
        assert {"prompt": "你好"} == first["personal"] and "sealed" not in first

        for n in range(1000):
            ledger.submit({"kind": "log", "n": n})
        assert 1001 == ledger.flush() == ledger.size

        async def many() -> list[int]:
            return await asyncio.gather(*(ledger.aappend({"kind": "log", "task": i}) for i in range(100)))

        assert list(range(1001, 1101)) == sorted(asyncio.run(many()))

        note = ledger.sign_checkpoint()
        assert "1101" == note.splitlines()[1]
        checkpoint = open_checkpoint(ledger.verifier, note)
        for index in (0, 500, 1100):
            raw = ledger._store.get_record(index)[2]
            proof = ledger.inclusion_proof(index, checkpoint.size)
            merkle.verify_inclusion(merkle.leaf_hash(raw), index, checkpoint.size, proof, checkpoint.root)

        assert 1101 == ledger.erase_subject("alice")
        erased = ledger.read(0)
        assert "sealed" in erased and "personal" not in erased
        assert "subject.erased" == ledger.read(1101)["kind"]

        ledger.close()
        report = verify_path(tmp_path / "ledger.db", key=signer.verifier_key)
        assert (1102, 0) == (report.checkpoint_size, report.unsigned)
        reopened = make_ledger()
        assert 1102 == reopened.size
        assert "sealed" in reopened.read(0)


class TestChildDeath:
    def test_killed_children_lose_nothing_and_store_nothing_twice(self, open_ledger, tmp_path: Path) -> None:
        """Five rounds of SIGKILL at different moments; every record is stored exactly once."""
        ledger = open_ledger()
        submitted = 0
        appended: list[tuple[int, int]] = []
        ack_lost = attempts = 0
        pids = {ledger.writer_pid}

        def submit(count: int) -> None:
            nonlocal submitted
            for _ in range(count):
                ledger.submit({"kind": "log", "n": submitted})
                submitted += 1

        def kill() -> int:
            pid = ledger.writer_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            return pid

        # Round 1: in the middle of a stream of submits.
        submit(700)
        killed = kill()
        submit(700)
        assert submitted == ledger.flush()
        assert ledger.writer_pid not in (killed, None)
        pids.add(ledger.writer_pid)

        # Round 2: with nothing in flight, then straight into new records.
        killed = kill()
        submit(300)
        assert submitted == ledger.flush()
        assert ledger.writer_pid != killed
        pids.add(ledger.writer_pid)

        # Round 3: the new child is killed as soon as it exists, as it receives what was not acknowledged.
        submit(2000)
        killed = kill()
        wait_until(lambda: ledger.writer_pid != killed, "a new writer process")
        kill()
        submit(500)
        assert submitted == ledger.flush()
        pids.add(ledger.writer_pid)

        # Round 4: kills between frequent flushes, with small frames in flight.
        for _ in range(300):
            ledger.submit({"kind": "log", "n": submitted})
            submitted += 1
            if submitted % 50 == 0:
                ledger.flush()
            if submitted % 150 == 0:
                kill()
        assert submitted == ledger.flush()
        pids.add(ledger.writer_pid)

        # Round 5: callers waiting on their records while the child dies.
        stop = threading.Event()
        errors: list[str] = []

        def appender() -> None:
            nonlocal ack_lost, attempts
            while not stop.is_set():
                a = attempts
                attempts += 1
                try:
                    appended.append((ledger.append({"kind": "log", "a": a}), a))
                except LedgerError as exc:
                    if "stored this record" in str(exc):
                        ack_lost += 1
                    else:
                        errors.append(str(exc))

        thread = threading.Thread(target=appender)
        thread.start()
        try:
            submit(1000)
            kill()
            before = len(appended)
            submit(1000)
            wait_until(lambda: len(appended) > before + 20, "appends through the new writer")
        finally:
            stop.set()
            thread.join()
        ledger.flush()
        pids.add(ledger.writer_pid)

        assert [] == errors
        stored = records(ledger)
        assert attempts == len(appended) + ack_lost
        assert submitted + attempts == ledger.size == len(stored)
        counts = Counter(r["n"] for r in stored if "n" in r)
        assert set(range(submitted)) == set(counts) and {1} == set(counts.values())
        a_counts = Counter(r["a"] for r in stored if "a" in r)
        assert set(range(attempts)) == set(a_counts) and {1} == set(a_counts.values())
        for index, a in appended:
            assert a == stored[index]["a"]
        assert len(pids) >= 6
        ledger.close()
        assert ledger.size == verify_path(tmp_path / "ledger.db", trust_shipped_key=True).checkpoint_size

    def test_interrupt_and_terminate_leave_the_writer_to_its_parent(self, open_ledger) -> None:
        """Ctrl-C or a service manager's SIGTERM to the group must not kill the writer before the service closes it."""
        ledger = open_ledger()
        pid = ledger.writer_pid
        assert 0 == ledger.append({"kind": "log", "n": 0})
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        assert 1 == ledger.append({"kind": "log", "n": 1})
        assert pid == ledger.writer_pid  # Same child: it ignored both, the ledger did not restart it.
        os.kill(pid, 0)

    def test_a_stopped_then_killed_child_loses_nothing(self, open_ledger) -> None:
        """SIGSTOP, queue records the child never reads, SIGKILL: all are stored exactly once."""
        ledger = open_ledger()
        ledger.append({"kind": "log", "n": -1})
        pid = ledger.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            for n in range(5000):
                ledger.submit({"kind": "log", "n": n, "pad": "x" * 64})
            wait_until(lambda: len(unacked_ops(ledger)) > 0, "records sent to the stopped child")
            assert 1 == ledger.size
        finally:
            os.kill(pid, signal.SIGKILL)
        assert 5001 == ledger.flush()
        assert ledger.writer_pid != pid
        counts = Counter(r["n"] for r in records(ledger))
        assert set(range(-1, 5000)) == set(counts) and {1} == set(counts.values())

    def test_the_parent_killed_leaves_a_closed_verifiable_ledger(self, tmp_path: Path) -> None:
        """SIGKILL the serving process: its child stores what it has, signs, and exits."""
        path = tmp_path / "ledger.db"
        script = textwrap.dedent(f"""
            import sys
            from aiobligations.ledger import MasterKey, Signer
            from aiobligations.ledger.process import ProcessLedger
            ledger = ProcessLedger({str(path)!r}, origin={ORIGIN!r}, signer=Signer.generate({ORIGIN!r}),
                                   master_key=MasterKey.generate(), checkpoint_interval=3600)
            for n in range(10):
                ledger.append({{"kind": "log", "n": n}})
            print("READY", ledger.writer_pid, flush=True)
            sys.stdin.read()
        """)
        parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = parent.stdout.readline().split()
            assert ["READY"] == line[:1], line
            child = int(line[1])
            assert not process_gone(child)
            parent.kill()
            parent.wait(DEADLINE)
            wait_until(lambda: process_gone(child), f"the orphaned writer process {child} to exit")
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait()
            parent.stdin.close()
            parent.stdout.close()
        report = verify_path(path, trust_shipped_key=True)
        assert report.end >= 10
        assert (10, 0) == (report.checkpoint_size, report.unsigned)


class TestResend:
    """White box: :meth:`ProcessLedger._resend`, called as ``_restart`` calls it."""

    @staticmethod
    def fabricate(ledger: ProcessLedger, entries: list[tuple[int, Any, Any]]) -> list[int]:
        with ledger._writer._ack_lock:
            seqs = []
            for entry in entries:
                seq = ledger._writer._seq
                ledger._writer._seq = seq + 1
                ledger._writer._unacked[seq] = entry
                seqs.append(seq)
        return seqs

    @staticmethod
    def resend(ledger: ProcessLedger, writer_seq: tuple[str, int] | None) -> None:
        with ledger._writer._conn_lock:
            ledger._writer._resend({"size": ledger.size, "checkpoint": ledger.checkpoint,
                            "signed_size": ledger._writer.signed_size, "writer_seq": writer_seq})

    @staticmethod
    def record(label: str) -> tuple[str, bytes, None, None, None]:
        return ("log", b',"label":"%s"' % label.encode(), None, None, None)

    def test_what_the_dead_child_stored_is_dropped_and_the_rest_sent_again(self, open_ledger) -> None:
        """Items up to the stored ``writer_seq`` are released, not resent; later ones are stored once."""
        ledger = open_ledger()
        ledger.append({"kind": "log"})
        size = ledger.flush()
        stored_waiter, stored_flush, later_waiter, later_flush = Waiter(), Waiter(), Waiter(), Waiter()
        seqs = self.fabricate(ledger, [
            (OP_RECORD, self.record("stored-unwaited"), None),
            (OP_RECORD, self.record("stored-waited"), stored_waiter),
            (OP_FLUSH, None, stored_flush),
            (OP_RECORD, self.record("resent-waited"), later_waiter),
            (OP_RECORD, self.record("resent-unwaited"), None),
            (OP_FLUSH, None, later_flush),
        ])

        self.resend(ledger, (ledger._writer._token, seqs[2]))

        assert not set(seqs[:3]) & set(ledger._writer._unacked)
        with pytest.raises(LedgerError, match="stored this record"):
            stored_waiter.wait(5)
        assert size == stored_flush.wait(5)
        assert size == later_waiter.wait(DEADLINE)
        assert size + 2 == later_flush.wait(DEADLINE)
        assert ["resent-waited", "resent-unwaited"] == [r.get("label") for r in records(ledger)[size:]]
        assert not ledger._writer._unacked

    @pytest.mark.parametrize("writer_seq", [("0" * 16, 1 << 40), None], ids=["another-token", "none"])
    def test_a_foreign_or_missing_writer_seq_drops_nothing(self, open_ledger, writer_seq) -> None:
        """Another ledger's token (or none stored) says nothing about our items: all are sent."""
        ledger = open_ledger()
        size = ledger.append({"kind": "log"}) + 1
        waiter, flush = Waiter(), Waiter()
        self.fabricate(ledger, [
            (OP_RECORD, self.record("unwaited"), None),
            (OP_RECORD, self.record("waited"), waiter),
            (OP_FLUSH, None, flush),
        ])

        self.resend(ledger, writer_seq)

        assert size + 1 == waiter.wait(DEADLINE)
        assert size + 2 == flush.wait(DEADLINE)
        assert ["unwaited", "waited"] == [r.get("label") for r in records(ledger)[size:]]
        assert not ledger._writer._unacked


class TestStartFailures:
    @pytest.fixture
    def children(self, monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
        """Every process ``ProcessLedger`` starts during the test."""
        started: list[subprocess.Popen[bytes]] = []
        original = subprocess.Popen

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                started.append(self)

        monkeypatch.setattr("aiobligations.ledger.process.subprocess.Popen", Recording)
        return started

    def test_a_second_ledger_on_the_same_file_shares_its_writer(self, open_ledger, children) -> None:
        """The second opener finds the running writer process and starts none of its own."""
        first = open_ledger()
        second = open_ledger()
        assert 1 == len(children)
        assert first.writer_pid == second.writer_pid
        assert [0, 1] == [first.append({"kind": "log", "n": 0}), second.append({"kind": "log", "n": 1})]
        first.close()
        assert 2 == second.append({"kind": "log", "n": 2})  # The writer stays while a peer remains.
        assert children[0].poll() is None

    def test_a_thread_ledger_holding_the_file_is_named(self, open_ledger, make_ledger, tmp_path: Path) -> None:
        """A writer = "thread" ledger keeps the file to itself; a process ledger says so, in time."""
        held = make_ledger()
        with pytest.raises(LedgerError, match="already open for writing by process"):
            open_ledger(start_timeout=3.0)
        assert 0 == held.append({"kind": "log"})

    def test_another_master_key_is_a_configuration_error(self, open_ledger, children) -> None:
        """The child's ConfigurationError reaches the caller as that class."""
        open_ledger().close()
        with pytest.raises(ConfigurationError, match="master key does not open this ledger"):
            open_ledger(master_key=MasterKey.generate())
        assert children[-1].returncode is not None

    def test_a_missing_folder_is_unusable_input_and_leaves_no_child(self, open_ledger, children,
                                                                      tmp_path: Path) -> None:
        """No folder: UnusableInput naming the lock file; the child has exited and been reaped."""
        folder = tmp_path / "missing"
        with pytest.raises(UnusableInput, match="cannot create the ledger's lock file"):
            open_ledger(folder / "ledger.db")
        assert 1 == len(children)
        assert children[0].returncode is not None
        assert not folder.exists()


class TestDeferred:
    def test_an_aiobligations_factory_is_built_in_the_child(self, open_ledger) -> None:
        """``interaction_record`` goes by name; the child builds the record with its sealed bodies."""
        ledger = open_ledger()
        chunks = [b'{"model":"qwen-max","messages":[{"role":"user","content":"', "你好".encode(), b'"}]}']
        ledger.submit_deferred(interaction_record, interaction_args("0190-aaaa", chunks))
        assert 1 == ledger.flush()

        assert "aiobligations.records:interaction_record" == ledger._writer._factory_names[interaction_record][0]
        record = ledger.read(0)
        assert ("interaction", "0190-aaaa", "qwen-max") == (record["kind"], record["interaction_id"], record["model"])
        assert {"input_tokens": 12, "output_tokens": 3} == record["usage"]
        assert b"".join(chunks).decode() == record["personal"]["request"]["text"]
        assert 0 == ledger._store.find_interaction("0190-aaaa")

    def test_a_factory_that_raises_leaves_a_build_failed_record(self, open_ledger) -> None:
        """Chunks that are not bytes make ``interaction_record`` raise in the child."""
        ledger = open_ledger()
        ledger.submit_deferred(interaction_record, interaction_args("0190-bbbb", [1, 2]))
        assert 1 == ledger.flush()

        record = ledger.read(0)
        assert "record.build_failed" == record["kind"]
        assert "aiobligations.records:interaction_record" == record["factory"]
        assert record["error"].startswith("TypeError")
        assert "subject" not in record and "personal" not in record and "sealed" not in record

    def test_a_factory_outside_aiobligations_is_built_in_the_parent(self, open_ledger) -> None:
        """A test-local function cannot be imported by the child: the parent builds it."""
        ledger = open_ledger()
        ledger.submit_deferred(local_factory, (7,))
        ledger.submit_deferred(local_factory_that_raises, (8,))
        assert 2 == ledger.flush()

        built, failed = ledger.read(0), ledger.read(1)
        assert ("log", 7, os.getpid()) == (built["kind"], built["n"], built["built_in"])
        assert ("record.build_failed", "local_factory_that_raises") == (failed["kind"], failed["factory"])
        assert "cannot build 8" in failed["error"]

    def test_unmarshallable_deferred_args_lose_no_other_record(self, open_ledger) -> None:
        """One deferred record with args marshal cannot encode must not take its batch with it."""
        ledger = open_ledger()
        for n in range(100):
            ledger.submit({"kind": "log", "n": n})
        try:
            ledger.submit_deferred(interaction_record, (datetime.datetime.now(),))
            accepted = 1
        except (TypeError, ValueError):
            accepted = 0
        for n in range(100, 200):
            ledger.submit({"kind": "log", "n": n})
        wait_until(lambda: not ledger._writer.queue, "the writer thread to take the records")

        marker = ledger.append({"kind": "log", "marker": True}, timeout=DEADLINE)

        assert 200 + accepted == marker
        assert set(range(200)) == {r["n"] for r in records(ledger) if "n" in r}


class TestMaintenance:
    def test_rotating_the_master_key_in_the_child(self, open_ledger, make_ledger) -> None:
        """Rotation re-wraps every subject key; sealed records still open, and under the new key only."""
        ledger = open_ledger()
        for subject in ("alice", "bob", "carol"):
            ledger.append({"kind": "interaction", "subject": subject, "personal": {"who": subject}})
        new = MasterKey.generate()

        assert 3 == ledger.rotate_master_key(new)
        assert ledger.master_key is new
        assert {"who": "bob"} == ledger.read(1)["personal"]
        assert 3 == ledger.append({"kind": "interaction", "subject": "dave", "personal": {"who": "dave"}})
        ledger.close()

        with pytest.raises(ConfigurationError, match="master key"):
            make_ledger()
        reopened = make_ledger(master_key=new)
        assert 4 == reopened.size
        assert [{"who": s} for s in ("alice", "bob", "carol", "dave")] == [
            reopened.read(i)["personal"] for i in range(4)
        ]

    def test_pruning_in_the_child(self, open_ledger, tmp_path: Path, signer: Signer) -> None:
        """Expired records go; the parent's reader follows, and proofs of the rest still verify."""
        ledger = open_ledger(max_batch=7)
        for n in range(40):
            ledger.submit({"kind": "log" if n < 30 else "assessment", "n": n})
        ledger.flush()
        old = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        later = ledger._store.ts_at(39) + 200 * DAY

        assert 0 == ledger.prune(now=time.time())
        assert 30 == ledger.prune(now=later) == ledger.first_index
        with pytest.raises(IndexError):
            ledger.read(29)
        for n in range(40, 45):
            ledger.append({"kind": "log", "n": n})
        new = open_checkpoint(ledger.verifier, ledger.sign_checkpoint())
        for index in (30, 35, 44):
            raw = ledger._store.get_record(index)[2]
            merkle.verify_inclusion(merkle.leaf_hash(raw), index, new.size,
                                    ledger.inclusion_proof(index, new.size), new.root)
        merkle.verify_consistency(old.size, new.size, ledger.consistency_proof(old.size, new.size),
                                  old.root, new.root)
        ledger.close()
        report = verify_path(tmp_path / "ledger.db", key=signer.verifier_key)
        assert (30, 45) == (report.start, report.end)

    def test_pruning_honours_a_configured_retention(self, open_ledger) -> None:
        """With an explicit Retention the child must prune what the parent says is prunable."""
        ledger = open_ledger(retention=Retention({"log": "200d"}))
        for n in range(10):
            ledger.submit({"kind": "log", "n": n})
        ledger.flush()
        ledger.sign_checkpoint()
        later = ledger._store.ts_at(9) + 300 * DAY

        assert 10 == ledger.prunable(now=later)
        assert 10 == ledger.prune(now=later)

    def test_a_child_dying_after_a_rotation_it_did_not_acknowledge(self, open_ledger, tmp_path: Path) -> None:
        """The acknowledgement of a committed rotation is lost; the ledger must keep working."""
        ledger = open_ledger()
        for subject in ("alice", "bob"):
            ledger.append({"kind": "interaction", "subject": subject, "personal": {"who": subject}})
        new = MasterKey.generate()
        pid = ledger.writer_pid
        assert pid is not None
        result: dict[str, Any] = {}

        def rotate() -> None:
            try:
                result["count"] = ledger.rotate_master_key(new)
            except LedgerError as exc:
                result["error"] = exc

        os.kill(pid, signal.SIGSTOP)
        thread = threading.Thread(target=rotate)
        try:
            thread.start()
            wait_until(lambda: unacked_ops(ledger).count(OP_REMOTE) == 1, "the rotation to be sent")
            with ledger._writer._conn_lock:
                pass  # The rotation's frame is in the socket.
            assert ledger._writer._sock is not None
            ledger._writer._sock.shutdown(socket.SHUT_RD)  # What the child says from now on is lost.
        finally:
            os.kill(pid, signal.SIGCONT)
        database = sqlite3.connect(f"file:{tmp_path / 'ledger.db'}?mode=ro", uri=True)
        try:
            wait_until(lambda: database.execute("SELECT value FROM meta WHERE key = 'master_id'").fetchone()[0]
                       == new.key_id.encode(), "the child to commit the rotation")
        finally:
            database.close()
        os.kill(pid, signal.SIGKILL)
        thread.join(DEADLINE)
        assert not thread.is_alive()

        assert "cannot start" not in str(result.get("error", ""))
        assert 2 == ledger.append({"kind": "log"}, timeout=DEADLINE)
        assert {"who": "alice"} == ledger.read(0)["personal"]


class TestFork:
    def test_a_forked_child_writes_through_the_shared_writer(self, open_ledger) -> None:
        """gunicorn --preload: a child of a process that opened the ledger becomes a peer of its own."""
        ledger = open_ledger()
        assert 0 == ledger.append({"kind": "log", "n": 0})
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # The child: report what happened through the pipe, then leave at once.
            try:
                os.close(read)
                try:
                    index = ledger.append({"kind": "log", "n": "from the child"}, timeout=DEADLINE)
                    outcome = f"stored at {index}"
                except LedgerError as exc:
                    outcome = str(exc)
                ledger.close()
                os.write(write, outcome.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            outcome = pipe.read().decode()
        assert 0 == os.waitpid(pid, 0)[1]
        assert "stored at 1" == outcome
        assert 2 == ledger.append({"kind": "log", "n": 1})  # The parent's ledger still works.
        assert [0, "from the child", 1] == [ledger.read(i)["n"] for i in range(ledger.size)]

    def test_a_forked_child_cannot_write_or_close_a_thread_ledger(self, make_ledger) -> None:
        """writer = "thread": the child gets a clear error naming the fix; the parent's ledger goes on."""
        ledger = make_ledger()
        assert 0 == ledger.append({"kind": "log", "n": 0})
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read)
                try:
                    ledger.submit({"kind": "log", "n": "from the child"})
                    outcome = "accepted"
                except LedgerError as exc:
                    outcome = str(exc)
                ledger.close()
                os.write(write, outcome.encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            outcome = pipe.read().decode()
        assert 0 == os.waitpid(pid, 0)[1]
        assert "before the process forked" in outcome and "writer" in outcome
        assert 1 == ledger.append({"kind": "log", "n": 1})
        assert [0, 1] == [ledger.read(i)["n"] for i in range(ledger.size)]


class TestPeers:
    def test_a_stopped_peer_does_not_stall_the_others(self, open_ledger, tmp_path: Path, signer: Signer,
                                                      master: MasterKey) -> None:
        """A worker that stops reading (SIGSTOP) must not block the writer's answers to everyone else."""
        path = tmp_path / "ledger.db"
        ledger = open_ledger(path)
        assert 0 == ledger.append({"kind": "log", "n": -1})
        script = textwrap.dedent(f"""
            import sys
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from aiobligations.ledger import MasterKey, Signer
            from aiobligations.ledger.process import ProcessLedger
            signer = Signer({ORIGIN!r}, Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[1])))
            ledger = ProcessLedger({str(path)!r}, origin={ORIGIN!r}, signer=signer,
                                   master_key=MasterKey(bytes.fromhex(sys.argv[2])))
            print("READY", ledger.append({{"kind": "log", "peer": True}}), flush=True)
            sys.stdin.read()
            ledger.close()
            print("CLOSED", flush=True)
        """)
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        key = signer.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
        peer = subprocess.Popen([sys.executable, "-c", script, key, master._raw.hex()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert ["READY", "1"] == peer.stdout.readline().split()
            os.kill(peer.pid, signal.SIGSTOP)
            try:
                # Each append is its own batch and checkpoint: thousands of messages the stopped
                # peer does not read (about 600 KB, more than a socket's buffer holds).
                for n in range(3000):
                    ledger.append({"kind": "log", "n": n}, timeout=DEADLINE)
            finally:
                os.kill(peer.pid, signal.SIGCONT)
            peer.stdin.close()  # Lets it read to the end, then close its ledger.
            assert "CLOSED" == peer.stdout.readline().strip()
            assert 0 == peer.wait(DEADLINE)
        finally:
            if peer.poll() is None:
                peer.kill()
                peer.wait()
            peer.stdout.close()
        assert 3002 == ledger.flush()

    def test_a_starting_writer_drops_the_rows_of_peers_gone_for_a_day(self, open_ledger, tmp_path: Path) -> None:
        """Killed workers never say goodbye; their sequence rows go once they are a day old."""
        path = tmp_path / "ledger.db"
        open_ledger(path).close()
        with sqlite3.connect(path) as conn:
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("writer_seq:gone", b"5 1000"),
                ("writer_seq:recent", b"7 %d" % time.time()),
            ])
        ledger = open_ledger(path)
        assert 0 == ledger.append({"kind": "log"})
        ledger.close()
        with sqlite3.connect(path) as conn:
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'writer_seq:%'"))
        assert ["writer_seq:recent"] == sorted(rows)


class TestLocksAcrossFork:
    def test_a_child_forked_while_the_spawn_lock_is_held_does_not_keep_it(self, tmp_path: Path) -> None:
        """gunicorn forks workers from a master that may be starting the writer: the lock must not leak."""
        from aiobligations.ledger._flock import held

        path = tmp_path / "x.spawn.lock"
        read, write = os.pipe()
        with held(path):
            pid = os.fork()
            if pid == 0:  # The child lives on (as a gunicorn worker would) until told to go.
                try:
                    os.close(write)
                    os.read(read, 1)
                finally:
                    os._exit(0)
        os.close(read)
        try:
            # The parent let go: another process must get the lock while the child still lives.
            probe = subprocess.run(
                [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
                 " fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('got it')", str(path)],
                capture_output=True, text=True, timeout=DEADLINE, check=False)
            assert "got it" == probe.stdout.strip(), probe.stderr
        finally:
            os.write(write, b"x")
            os.close(write)
            os.waitpid(pid, 0)
