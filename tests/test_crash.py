"""kill -9 durability: every record the ledger acknowledged survives a crash, and the log still verifies.

A child process appends at full speed to one SQLite ledger from threads (``append``), asyncio tasks
(``aappend``) and sometimes an eraser thread (two records for a fresh subject, then
``erase_subject``), printing one line per acknowledged operation right after the call returns. The
parent reads a random number of those lines, kills the child with SIGKILL, drains the pipe and
checks the database: the crashed state verifies read-only, every acknowledged index holds its
record (personal data opening, or erased when its erasure was acknowledged), indices are contiguous
from 0. Twenty rounds append to the same database, so the log grows across crashes.

The random choices come from one seed, printed at the start and in every failure message; set
``AIOBLIGATIONS_CRASH_SEED`` to replay a run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore, export_bundle, verify_database, verify_path

ORIGIN = "crash.example/aiobligations/ledger"
ROUNDS = 20
ERASED = "!erased:"

CHILD = r"""
import asyncio
import sys
import threading

from aiobligations.keys import load_signer
from aiobligations.ledger import Ledger, MasterKey, SQLiteStore

db, key_path, master_path, origin, tag, threads, tasks, eraser = sys.argv[1:9]
ledger = Ledger(
    SQLiteStore(db), origin=origin, signer=load_signer(key_path, origin), master_key=MasterKey.load(master_path)
)
out = sys.stdout
lock = threading.Lock()


def ack(index, token):
    # One write and one flush per line, under a lock: lines never interleave, and a line is in
    # the pipe before the next append starts.
    line = f"{index} {token}\n"
    with lock:
        out.write(line)
        out.flush()


def record(pid, subject):
    return {"kind": "interaction", "payload_id": pid, "subject": subject, "personal": {"pid": pid}}


def thread_main(worker):
    n = 0
    while True:
        pid = f"{tag}-t{worker}-{n}"
        ack(ledger.append(record(pid, f"{tag}-user-{worker}")), pid)
        n += 1


def eraser_main():
    n = 0
    while True:
        subject = f"{tag}-gone-{n}"
        for k in range(2):
            pid = f"{subject}-{k}"
            ack(ledger.append(record(pid, subject)), pid)
        ack(ledger.erase_subject(subject), "!erased:" + subject)
        n += 1


async def task_main(worker):
    n = 0
    while True:
        pid = f"{tag}-a{worker}-{n}"
        ack(await ledger.aappend(record(pid, f"{tag}-async-{worker % 4}")), pid)
        n += 1


async def tasks_main(count):
    await asyncio.gather(*(task_main(w) for w in range(count)))


workers = [threading.Thread(target=thread_main, args=(w,), daemon=True) for w in range(int(threads))]
if eraser == "1":
    workers.append(threading.Thread(target=eraser_main, daemon=True))
for worker in workers:
    worker.start()
if int(tasks):
    asyncio.run(tasks_main(int(tasks)))
for worker in workers:
    worker.join()
"""

ACK = re.compile(r"(\d+) (\S+)")


@dataclass
class Keys:
    signing: Path
    master: Path
    signer: Signer
    master_key: MasterKey


@dataclass
class Acks:
    """Every acknowledged operation so far: pid -> index, erased subject -> index of its erasure."""

    records: dict[str, int] = field(default_factory=dict)
    erasures: dict[str, int] = field(default_factory=dict)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    private = Ed25519PrivateKey.generate()
    signing = tmp_path / "ledger.key"
    fd = os.open(signing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    master_key = MasterKey.generate()
    master = tmp_path / "master.key"
    master_key.dump(master)
    return Keys(signing, master, Signer(ORIGIN, private), master_key)


def run_round(db: Path, keys: Keys, rng: random.Random, tag: str, stderr_path: Path, where: str) -> list[tuple[int, str]]:
    """Start a child, read a random number of acks, SIGKILL it, drain the pipe; return every ack."""
    threads = rng.randint(1, 4)
    tasks = rng.choice([0, 0, 8, 32])
    eraser = rng.random() < 0.5
    wanted = rng.randint(50, 3000)
    where = f"{where} threads={threads} tasks={tasks} eraser={eraser} wanted={wanted}"
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(
            [
                sys.executable, "-c", CHILD, str(db), str(keys.signing), str(keys.master), ORIGIN, tag,
                str(threads), str(tasks), "1" if eraser else "0",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    # A watchdog, not a synchronisation: a hung child must fail the test, not hang it.
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    try:
        lines: list[bytes] = []
        assert child.stdout is not None
        while len(lines) < wanted:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        alive = child.poll() is None
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    errors = stderr_path.read_text(errors="replace")
    assert alive and len(lines) == wanted, f"{where}: the child stopped after {len(lines)} acks:\n{errors}"
    assert -signal.SIGKILL == child.returncode, f"{where}: {child.returncode}"
    assert "Traceback" not in errors, f"{where}:\n{errors}"
    # A kill cannot tear a line: each is one small write(2) to the pipe. Keep only whole lines.
    tail = rest.split(b"\n")
    lines.extend(line + b"\n" for line in tail[:-1])
    assert b"" == tail[-1], f"{where}: a torn ack line {tail[-1]!r}"
    acks = []
    for line in lines:
        match = ACK.fullmatch(line.decode().rstrip("\n"))
        assert match, f"{where}: unexpected output {line!r}"
        acks.append((int(match[1]), match[2]))
    return acks


def check(db: Path, keys: Keys, acks: Acks, fresh: list[tuple[int, str]], previous_size: int, where: str) -> int:
    """Check the crashed database against every acknowledgement of this round; return its size."""
    # The crashed state, read-only, exactly as the child left it (WAL and all).
    report = verify_database(db, key=keys.signer.verifier_key)
    assert (0, 0) == (report.start, report.unsigned), f"{where}: {report}"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        count, low, high = conn.execute("SELECT count(*), min(idx), max(idx) FROM records").fetchone()
    finally:
        conn.close()
    assert (0, count - 1) == (low, high), f"{where}: indices are not contiguous: {count} rows, {low}..{high}"
    assert count == report.end, f"{where}: the signed checkpoint covers {report.end} of {count} records"
    indices = [index for index, _ in fresh]
    assert len(set(indices)) == len(indices), f"{where}: an index was acknowledged twice"
    assert all(previous_size <= index < count for index in indices), (
        f"{where}: acknowledged indices {min(indices)}..{max(indices)} outside [{previous_size}, {count})"
    )
    for index, token in fresh:
        if token.startswith(ERASED):
            acks.erasures[token[len(ERASED) :]] = index
        else:
            assert token not in acks.records, f"{where}: {token} acknowledged twice"
            acks.records[token] = index

    with Ledger(SQLiteStore(db), origin=ORIGIN, signer=keys.signer, master_key=keys.master_key) as ledger:
        assert count == ledger.size, where
        check_records(ledger, acks, [token for _, token in fresh], where)
    return count


def check_records(ledger: Ledger, acks: Acks, tokens: list[str], where: str) -> None:
    for token in tokens:
        if token.startswith(ERASED):
            subject = token[len(ERASED) :]
            erasure = ledger.read(acks.erasures[subject])
            assert "subject.erased" == erasure["kind"], f"{where}: {token} -> {erasure}"
            for k in range(2):
                pid = f"{subject}-{k}"
                # The same thread appended both records before the erasure, so they were acknowledged first.
                assert pid in acks.records, f"{where}: {subject} erased before {pid} was acknowledged"
                gone = ledger.read(acks.records[pid])
                assert "personal" not in gone and "sealed" in gone, f"{where}: {pid} still opens after erasure"
                assert erasure["subject"] == gone["subject"], where
            continue
        index = acks.records[token]
        stored = ledger.read(index)
        assert (index, token) == (stored["idx"], stored["payload_id"]), f"{where}: record {index}: {stored}"
        subject = token.rsplit("-", 1)[0]
        if "-gone-" in token and subject in acks.erasures:
            continue  # Checked with its erasure.
        if "-gone-" not in token:
            assert {"pid": token} == stored.get("personal"), f"{where}: record {index} does not open: {stored}"


@pytest.mark.slow
def test_acknowledged_records_survive_kill_9(tmp_path: Path, keys: Keys) -> None:
    seed = int(os.environ.get("AIOBLIGATIONS_CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed: {seed} (replay with AIOBLIGATIONS_CRASH_SEED={seed})")
    rng = random.Random(seed)
    db = tmp_path / "ledger.db"
    acks = Acks()
    size = 0
    total = 0

    for number in range(ROUNDS):
        where = f"seed={seed} round={number}"
        fresh = run_round(db, keys, rng, f"r{number}", tmp_path / f"stderr-{number}.txt", where)
        total += len(fresh)
        before = size
        size = check(db, keys, acks, fresh, size, where)
        # Shown on failure: how many records were durable but not yet acknowledged at the kill.
        print(f"round {number}: {len(fresh)} acknowledged, {size - before - len(fresh)} more stored")
        assert size >= total, f"{where}: {total} acknowledged but only {size} stored"

    # Every acknowledgement of every round, once more against the final log.
    with Ledger(SQLiteStore(db), origin=ORIGIN, signer=keys.signer, master_key=keys.master_key) as ledger:
        check_records(ledger, acks, list(acks.records) + [ERASED + s for s in acks.erasures], f"seed={seed} final")
    export_bundle(db, tmp_path / "bundle.tar.gz")
    report = verify_path(tmp_path / "bundle.tar.gz", key=keys.signer.verifier_key)
    assert size == report.end, f"seed={seed}"
