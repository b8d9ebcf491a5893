"""Ledger speed: the measured claims of the ledger, printed as one JSON object.

Run it from the repository root::

    .venv/bin/python benchmarks/ledger.py            # full run (about 2.5 minutes on 2 cores)
    .venv/bin/python benchmarks/ledger.py --quick    # smoke run with small sizes (under a minute)

The JSON object goes to stdout; progress goes to stderr. Every file is written under a fresh
temporary folder (``--tmp``, default ``/tmp``) that is removed at the end, even on failure.

What each figure measures
-------------------------

``machine``
    CPU count, CPU model, memory, Python, SQLite and ``cryptography`` versions, the file system of
    the temporary folder, the interpreter's GIL switch interval, the load average at start and end,
    ``python_loop_ns`` (CPU nanoseconds per iteration of a small Python loop: how fast this machine
    ran the interpreter at the time; compare it before comparing figures from two runs), the git
    commit, ``measured_on`` (the commit, plus "+ uncommitted benchmark changes" and the count of
    other uncommitted files if the working tree differs) with the lists of those files, and a
    SHA-256 of the ledger's source files (this names the code that was measured).

``durable_append``
    Durable appends with the default profile: :func:`ProcessLedger` (``[ledger] writer =
    "process"``), whose records are sealed, hashed and committed by the ledger's one shared writer
    process (``python -m aiobligations.ledger._writer``), into a fresh ledger file (WAL,
    ``synchronous=FULL``) per run. Producers are asyncio tasks awaiting :meth:`Ledger.aappend` in a
    loop; a record counts once its ``aappend`` returned, i.e. once its batch is committed, fsynced
    and acknowledged. Records are "interaction" records of about 1 KiB as stored: a few plain fields
    (interaction id, trace id, route, model, status) plus a ``personal`` part (an ASCII prompt and
    output, ``--personal-chars`` characters in all, default 500: 200 + 300) that the ledger seals
    with AES-GCM under the subject's key (1,000 subjects), so the stored JSON holds base64
    ciphertext: 500 characters of personal data make a stored record of about 1,025 bytes
    (``record_bytes_mean``, read back from the ledger's ``records`` table). Interaction ids are
    UUIDv7, as the middleware makes them (``--ids scattered`` gives the producer-major ids of runs
    before 2026-12-04, which spread each batch over up to 64 pages of the ``interactions`` index).

    Every configuration runs in fresh worker processes (this script again, with ``--worker``):

    - ``one_process``: one process, 64 producers;
    - ``four_processes``: 4 processes × 16 producers on the same ledger file (they share its one
      writer process, which the first of them starts);
    - ``thread_writer`` (context): one process, 64 producers, ``Ledger(SQLiteStore(path))``: the
      in-process writer thread.

    Each worker opens the ledger and runs its producers for an untimed warm-up (1 s), says it is
    ready and waits. When all are ready (a barrier), this process gives all of them the same window
    of ``--window`` seconds (default 5) on the system-wide monotonic clock; each producer starts at
    its beginning, and a record counts if its ``aappend`` returned before its end. ``rate`` is
    the records counted over the window (all processes together); ``four_over_one`` is the median
    rate of ``four_processes`` over the median of ``one_process``. The three configurations are run
    ``--runs`` times each, interleaved in rotating order. Meanwhile this process (idle) reads the
    CPU time of every thread of every worker and of the writer process (``/proc/<pid>/task/*/
    schedstat``) at the window's start and end: ``writer_cpu_us_per_record`` and
    ``serving_cpu_us_per_record`` (all worker processes; ``serving_threads_cpu_us_per_record``
    splits it by thread: ``MainThread`` is the event loop, ``aiobligations-ledger-writer`` the
    thread that sends batches to the writer process, ``aiobligations-ledger-receiver`` the one
    that takes its acknowledgements; for ``thread_writer`` the writer thread is counted as the
    writer), and the same as shares of one core; ``*_runqueue_wait_us_per_record`` is the time their
    threads were runnable but waited for a CPU (``schedstat``'s second field): what other work on
    the machine (or the process's own other threads) delayed them by. ``records_per_commit`` is the
    records counted over the distinct sequencing times among their indices (one per group commit);
    ``aappend_ms_p50`` / ``_p99`` the latency of an ``aappend`` under this load, as each producer
    saw it. After the run the database must hold every record the workers appended.

    ``bare_executemany`` (context; the ≥ 0.35 × target against it is withdrawn): a fresh SQLite
    file, WAL, ``synchronous=FULL``, a table ``(idx INTEGER PRIMARY KEY, data BLOB)``, ``BEGIN`` /
    ``executemany`` of 1,000 (and of 64) rows / ``COMMIT``, inserting the very record bytes of the
    last ``one_process`` run.

``append_latency_low_load``
    One producer, one :meth:`Ledger.append` at a time (``--latency-appends``, default 1,000, after
    50 untimed), in a fresh process: the round trip of a single record (send, seal, commit and
    fsync, acknowledge), p50/p90/p99/p99.9 in microseconds, for the process writer (the figure)
    and the thread writer (context), with each one's CPU per append; and the disk's floor, a
    one-row durable commit in bare SQLite (``bare_sqlite_one_row_commit``).

``submit_latency_us``
    The caller's cost of :meth:`Ledger.submit` (validate, serialise, enqueue: the request path's
    way): 64 asyncio tasks call ``submit`` in a loop, with ``await asyncio.sleep(0)`` every 16
    calls, and each call is timed with ``time.perf_counter_ns()``. The records are the same ~1 KiB
    records as above, into a ledger of the default profile (:func:`ProcessLedger`); ``queue_size``
    is larger than the number of submits, so the queue is never full. p50/p90/p99/p999/max are
    nearest-rank percentiles in microseconds; ``timer_overhead_ns`` is the median of an empty timed
    interval (not subtracted). ``committed_during_loop`` and ``backlog_at_end`` show what the writer
    achieved meanwhile: it has work all along, but a caller that never leaves the GIL can starve
    this process's sending thread (see ``sending_thread_cpu_s_during_loop``, and
    ``writer_process_cpu_s_during_loop``). ``paced`` repeats the measurement with the offered rate
    held at 20,000 submits/s, so that the writer really commits in parallel with the timed calls.
    ``pass`` judges the unpaced figures; ``paced.pass`` the paced ones.

``verify_1m``
    A ledger of ``--bundle-records`` (1,000,000) records is built as fast as the public API allows
    (``submit`` in a tight loop, ``flush()`` every 50,000) with small "log" records of about 200
    bytes as stored, each with a ``personal`` part (sealed, 1,000 subjects); ``close()`` signs the
    final checkpoint. It is exported once as a folder bundle and once as a ``.tar.gz`` bundle (the
    export times and sizes are reported too). Each bundle is then verified with
    ``verify_path(bundle, key=<pinned verifier key>)`` in a separate, fresh Python process; that
    process reports the verification's wall time (imports excluded), its RSS and peak RSS
    (``ru_maxrss``) just before verification started (after imports), and its peak RSS at the end
    (``peak_rss_mb``; ``vm_hwm_mb`` is the kernel's high-water mark, a cross-check): absolute
    figures, nothing subtracted. A process started with ``subprocess`` inherits in ``ru_maxrss``
    the parent's peak RSS at ``exec`` time (here hundreds of MB of benchmark), so the child forks
    once while it is still a bare interpreter and the measuring grandchild starts with fresh
    accounting; ``inherited_maxrss_mb`` shows the figure that was discarded. For the ``.tar.gz``
    form the time includes unpacking the archive to a temporary folder (the verifier's own way).
    The bundle files were just written, so they are in the OS page cache: this measures CPU and
    memory, not a cold disk.

``open_1m``
    In a fresh Python process (so no Python object is cached; the OS page cache is warm, the
    database having just been written), the time of ``Ledger(SQLiteStore(path), ...)`` on the
    1,000,000-record database (``open_s``), and of that plus one durable ``append``
    (``open_plus_first_append_s``); imports are excluded and reported apart. Done ``--runs`` times,
    each in a new process (each adds one record); medians and every run are reported.

``postgres`` (only with ``--postgres URL``; ``--only-postgres`` skips the rest)
    Replicas on PostgreSQL (``ReplicaLedger``), each configuration ``--runs`` times, interleaved:

    - ``four_processes``: 4 worker processes × 16 producers awaiting ``aappend`` on one fresh
      ledger schema, the same 1 KiB records with a ``personal`` part as ``durable_append``, for a
      window of ``--window`` seconds. ``aappend`` returns once the elected sequencer (one of the
      four) has stored the record, so a record counts once it is sequenced and committed, not only
      queued. ``replicas_cpu_us_per_record`` sums every thread of the four processes (split by
      thread name: ``MainThread`` is the event loop making and awaiting records,
      ``aiobligations-ledger-writer`` queues them, ``aiobligations-ledger-sequencer`` the elected
      one's sequencing, ``aiobligations-ledger-listener`` hearing what was sequenced);
      ``postgres_backends_cpu_us_per_record`` sums the PostgreSQL server processes serving them
      (their sessions, found by ``application_name``), so both sides of the work are counted.
    - ``executemany_batches_of_1000``: psycopg's ``executemany`` of rows of the same shape (index,
      time, kind, leaf hash, ~950-byte record) into a plain table, in batches of 1,000 each
      committed, ``synchronous_commit`` on; ``ratio_to_executemany`` is the median rate of
      ``four_processes`` over its median.
    - ``failover``: two replicas; the sequencer is killed with SIGKILL and the survivor appends
      one record at once; ``takeover_s`` is the time from the kill until that ``append`` returned
      (the survivor had to take the seat and store it).

Every ``pass*`` flag compares with the targets of the issues: durable appends, one process, 64
producers >= 30,000 records/s; four processes x 16 producers >= 0.9 x that, measured in the same run;
submit p99 < 50 us; verification >= 300,000 records/s with peak RSS < 200 MB; open + first append
< 1 s. (The target of >= 0.35 x bare executemany is withdrawn; the bare figure stays as context.)
With ``--postgres``: 4 replicas x 16 producers >= 15,000 records/s and >= 0.3 x executemany;
sequencer failover <= 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

from _machine import git_state, python_loop_ns  # noqa: E402 - beside this script

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "bench.example/ledger"
PRODUCERS = 64
PROCESSES = 4  # ... sharing PRODUCERS between them: 4 x 16
SUBJECTS = 1000
BARE_BATCH = 1000
BUILD_CHUNK = 50_000
SUBMIT_PACE = 20_000

TARGET_RATE = 30_000
TARGET_PROCESSES_RATIO = 0.9  # four processes x 16 producers, aggregate, over one process x 64
TARGET_SUBMIT_P99_US = 50.0
TARGET_VERIFY_RATE = 300_000
TARGET_VERIFY_RSS_MB = 200.0
TARGET_OPEN_S = 1.0
TARGET_PG_RATE = 15_000  # 4 replicas x 16 producers into PostgreSQL, durable
TARGET_PG_RATIO = 0.3  # ... over psycopg's executemany of the same rows in batches of 1,000
TARGET_FAILOVER_S = 5.0

_START = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def _quiet_structlog() -> None:
    """Send the ledger's structlog output (errors only) to stderr, keeping stdout pure JSON."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


# -- keys and records -------------------------------------------------------------------------


class Keys:
    """Throwaway benchmark keys, passable to a child process as hex."""

    def __init__(self) -> None:
        self.signing = os.urandom(32)
        self.master = os.urandom(32)

    def signer(self) -> Any:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from aiobligations.ledger import Signer

        return Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(self.signing))

    def master_key(self) -> Any:
        from aiobligations.ledger import MasterKey

        return MasterKey(self.master)

    def as_json(self) -> dict[str, str]:
        return {"signing": self.signing.hex(), "master": self.master.hex()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Keys:
        keys = cls.__new__(cls)
        keys.signing = bytes.fromhex(data["signing"])
        keys.master = bytes.fromhex(data["master"])
        return keys


def _text(seed: int, length: int) -> str:
    """Deterministic ASCII prose-like text of exactly ``length`` characters."""
    words = ("the", "model", "answer", "user", "asks", "about", "ledger", "retention", "provider",
             "service", "output", "label", "synthetic", "content", "explains", "why", "and", "of")
    out = []
    n = seed
    size = 0
    while size < length:
        n = (n * 1103515245 + 12345) & 0x7FFFFFFF
        word = words[n % len(words)]
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


class InteractionRecords:
    """~1 KiB "interaction" records (as stored), with a sealed personal prompt and output.

    ``ids``: ``"uuid7"`` (default) gives each record a fresh UUIDv7, as the middleware does, so
    the ``interactions`` index grows at its right edge; ``"scattered"`` is the scheme of earlier
    runs (producer-major ids: every batch of 64 lands on up to 64 different index pages).
    """

    def __init__(self, personal_chars: int, ids: str = "uuid7", worker: int = 0) -> None:
        prompt_len = personal_chars * 2 // 5
        output_len = personal_chars - prompt_len
        # A few distinct texts, shared between records: building the dicts stays cheap.
        self.prompts = [_text(i, prompt_len) for i in range(16)]
        self.outputs = [_text(1000 + i, output_len) for i in range(16)]
        self.worker = worker
        self.uuid7 = None
        if ids == "uuid7":
            from aiobligations.interaction import uuid7_text

            self.uuid7 = uuid7_text

    def make(self, producer: int, n: int) -> dict[str, Any]:
        producer += self.worker * 1000
        k = producer * 1_000_003 + n
        return {
            "kind": "interaction",
            "interaction_id": self.uuid7() if self.uuid7 is not None
            else f"0193b2c4-{producer:04x}-7{n % 4096:03x}-8000-{k:012x}",
            "trace_id": f"{k:032x}",
            "route": "/v1/chat/completions",
            "model": "toy-1",
            "status": 200,
            "subject": f"user-{k % SUBJECTS}",
            "personal": {"prompt": self.prompts[k % 16], "output": self.outputs[k % 16]},
        }


def small_record(i: int) -> dict[str, Any]:
    """A ~200-byte (as stored) "log" record with a small personal part."""
    return {
        "kind": "log",
        "level": "info",
        "event": "request.done",
        "subject": f"user-{i % SUBJECTS}",
        "personal": {"ip": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"},
    }


# -- measuring helpers ------------------------------------------------------------------------


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _thread_cpu_s(native_id: int | None) -> float | None:
    """User+system CPU seconds of one thread of this process, from /proc."""
    if native_id is None:
        return None
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer_thread_id(ledger: Any) -> int | None:
    """The OS id of the ledger's writer thread (the sending thread, for a writer process's peer).

    A private attribute: ``None`` if it moved.
    """
    thread = getattr(ledger, "_thread", None) or getattr(getattr(ledger, "_writer", None), "thread", None)
    return getattr(thread, "native_id", None)


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(ordered: list[int] | array, fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _ledger(keys: Keys, store: Any, **kwargs: Any) -> Any:
    """A ledger with the thread writer (``Ledger`` over ``store``)."""
    from aiobligations.ledger import Ledger

    return Ledger(store, origin=ORIGIN, signer=keys.signer(), master_key=keys.master_key(), **kwargs)


def _process_ledger(keys: Keys, path: Path, **kwargs: Any) -> Any:
    """A ledger of the default profile: a peer of the shared writer process."""
    from aiobligations.ledger import ProcessLedger

    return ProcessLedger(path, origin=ORIGIN, signer=keys.signer(), master_key=keys.master_key(), **kwargs)


# -- 1. durable appends -----------------------------------------------------------------------
#
# Every durable-append figure runs in fresh worker processes (this file, started again with
# ``--worker``), so that one process and four processes are measured the same way: each worker
# opens the ledger, warms up, says it is ready, and waits; when every worker is ready, this process
# hands all of them the same window [start, end) on the system-wide monotonic clock (a barrier);
# each worker's producers run from ``start`` and count the records whose ``aappend`` returned
# before ``end``. Meanwhile this process, idle, reads the CPU of every worker and of the writer
# process from /proc at ``start`` and at ``end``.


def _task_cpu_ns(pid: int | None) -> dict[int, int]:
    """CPU nanoseconds of every thread of ``pid`` (``/proc/<pid>/task/*/schedstat``); {} if gone."""
    out: dict[int, int] = {}
    if pid is None:
        return out
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out[int(tid)] = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def _cpu_delta(before: dict[int, int], after: dict[int, int]) -> dict[int, int]:
    return {tid: ns - before.get(tid, 0) for tid, ns in after.items()}


def _runqueue_wait_ns(pid: int | None) -> int:
    """Nanoseconds the threads of ``pid`` spent runnable but waiting for a CPU (``schedstat``'s
    second field): what other work on the machine, or the process's own threads, cost it in delay."""
    total = 0
    if pid is None:
        return total
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return total
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total


def _worker_records(args: dict[str, Any]) -> Any:
    """The worker's record maker: ``make(producer, n)``."""
    records = InteractionRecords(args["personal_chars"], ids=args["ids"], worker=args["worker"])
    return records.make


def worker_main() -> int:
    """One worker process (``--worker``): JSON arguments on stdin, JSON lines on stdout."""
    args = json.loads(sys.stdin.readline())
    _quiet_structlog()
    import threading

    from aiobligations.ledger import Ledger, ProcessLedger, SQLiteStore

    keys = Keys.from_json(args)
    if args["mode"] == "bare_commit":
        print(json.dumps(_bare_commit_latency(Path(args["path"]), args["count"])), flush=True)
        return 0
    if args["mode"] == "executemany":
        print(json.dumps(_executemany_rate(args)), flush=True)
        return 0
    if args["writer"] == "replica":
        from aiobligations.ledger.replica import ReplicaLedger

        ledger = ReplicaLedger(args["url"], schema=args["schema"], origin=ORIGIN, signer=keys.signer(),
                               master_key=keys.master_key(), queue_size=1 << 20)
        if args["mode"] == "failover":
            return _failover_worker(ledger)
    elif args["writer"] == "process":
        ledger = ProcessLedger(args["path"], origin=ORIGIN, signer=keys.signer(), master_key=keys.master_key(),
                               queue_size=1 << 20)
    else:
        ledger = Ledger(SQLiteStore(args["path"]), origin=ORIGIN, signer=keys.signer(),
                        master_key=keys.master_key(), queue_size=1 << 20)
    make = _worker_records(args)
    try:
        if args["mode"] == "latency":
            result = _latency_in_worker(ledger, make, args)
            print(json.dumps(result), flush=True)
            return 0
        producers = args["producers"]
        monotonic, perf = time.monotonic, time.perf_counter_ns
        counters = [0] * producers  # records appended so far, per producer (warm-up included)

        async def warm(p: int, until: float) -> None:
            aappend = ledger.aappend
            while monotonic() < until:
                await aappend(make(p, counters[p]))
                counters[p] += 1

        async def warm_all() -> None:
            until = monotonic() + args["warmup_s"]
            await asyncio.gather(*(warm(p, until) for p in range(producers)))

        asyncio.run(warm_all())
        threads = {t.native_id: t.name for t in threading.enumerate()}
        print(json.dumps({"ready": True, "pid": os.getpid(), "writer_pid": ledger.writer_pid,
                          "threads": {str(k): v for k, v in threads.items()}, "size": ledger.size}), flush=True)
        window = json.loads(sys.stdin.readline())
        start, end = window["start"], window["end"]
        latencies = array("q")
        counted = [0]
        late = [0]
        first_index = [1 << 62]
        last_index = [-1]

        async def produce(p: int) -> None:
            aappend = ledger.aappend
            n = counters[p]
            while True:
                t0 = perf()
                index = await aappend(make(p, n))
                n += 1
                if monotonic() >= end:
                    late[0] += 1
                    break
                latencies.append(perf() - t0)
                counted[0] += 1
                first_index[0] = min(first_index[0], index)
                last_index[0] = max(last_index[0], index)
            counters[p] = n

        async def run() -> None:
            await asyncio.sleep(max(0.0, start - monotonic()))
            await asyncio.gather(*(produce(p) for p in range(producers)))

        asyncio.run(run())
        ordered = sorted(latencies)
        result = {
            "counted": counted[0],
            "late": late[0],
            "appended": sum(counters),
            "first_index": first_index[0] if counted[0] else None,
            "last_index": last_index[0] if counted[0] else None,
            "aappend_ms": {
                name: round(_percentile(ordered, f) / 1e6, 3) if ordered else None
                for name, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
            },
        }
        print(json.dumps(result), flush=True)
    finally:
        ledger.close()
    return 0


def _latency_in_worker(ledger: Any, make: Any, args: dict[str, Any]) -> dict[str, Any]:
    """One producer, one ``append`` at a time: the round trip of a single record at low load."""
    for n in range(args["warm"]):
        ledger.append(make(0, n))
    writer_pid = ledger.writer_pid
    clock = time.perf_counter_ns
    count = args["count"]
    latencies = array("q", bytes(8 * count))
    w0 = sum(_task_cpu_ns(writer_pid).values())
    p0 = time.process_time_ns()
    t0 = clock()
    for n in range(count):
        record = make(1, n)
        a = clock()
        ledger.append(record)
        latencies[n] = clock() - a
    seconds = (clock() - t0) / 1e9
    process_cpu = time.process_time_ns() - p0
    writer_cpu = sum(_task_cpu_ns(writer_pid).values()) - w0
    ordered = sorted(latencies)
    return {
        "appends": count,
        "rate": round(count / seconds, 1),
        **{name: _us(_percentile(ordered, f)) for name, f in
           (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999))},
        "max": _us(ordered[-1]),
        # With the thread writer, the serving process's CPU includes its writer thread.
        "serving_process_cpu_us_per_append": round(process_cpu / count / 1000, 1),
        "writer_process_cpu_us_per_append": round(writer_cpu / count / 1000, 1) if writer_pid else None,
    }


def _bare_commit_latency(path: Path, count: int) -> dict[str, Any]:
    """The disk's floor for one record: a one-row durable commit in bare SQLite (WAL, FULL)."""
    _remove_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE records (idx INTEGER PRIMARY KEY, data BLOB)")
        row = os.urandom(1024)
        clock = time.perf_counter_ns
        latencies = array("q")
        for i in range(count + 20):
            a = clock()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO records VALUES (?,?)", (i, row))
            conn.execute("COMMIT")
            if i >= 20:
                latencies.append(clock() - a)
    finally:
        conn.close()
        _remove_db(path)
    ordered = sorted(latencies)
    return {"commits": count, **{name: _us(_percentile(ordered, f)) for name, f in
                                  (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}}


# -- PostgreSQL ----------------------------------------------------------------------------------


def _pg(url: str, sql: str, params: Any = ()) -> list[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _executemany_rate(args: dict[str, Any]) -> dict[str, Any]:
    """psycopg's ``executemany`` of the same rows (index, time, kind, leaf hash, ~1 KiB record) in
    batches of 1,000, each committed (``synchronous_commit`` on), into a plain table."""
    import psycopg

    url, table = args["url"], f"{args['schema']}_executemany"
    make = _worker_records(args)
    from aiobligations.ledger.records import prepare

    rows = []
    for n in range(args["count"]):
        record = prepare(make(n % 16, n))
        data = b'{"v":1,"idx":%d,"ts":"2026-12-04T00:00:00.000000Z","kind":"interaction"%s,"sealed":"%s"}' % (
            n, record.body, base64_of(record.personal or b""))
        rows.append((n, time.time(), "interaction", hashlib.sha256(b"\x00" + data).digest(), data))
    _pg(url, f"CREATE TABLE {table} (idx bigint PRIMARY KEY, ts double precision NOT NULL, kind text NOT NULL, "
             "leaf bytea NOT NULL, data bytea NOT NULL)")
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
            started = time.perf_counter()
            for at in range(0, len(rows), BARE_BATCH):
                with conn.cursor() as cursor:
                    cursor.executemany(f"INSERT INTO {table} VALUES (%s,%s,%s,%s,%s)", rows[at:at + BARE_BATCH])
                conn.commit()
            seconds = time.perf_counter() - started
        mean = sum(len(r[4]) for r in rows) / len(rows)
    finally:
        _pg(url, f"DROP TABLE IF EXISTS {table}")
    return {"rows": len(rows), "seconds": round(seconds, 3), "rate": round(len(rows) / seconds, 1),
            "row_bytes_mean": round(mean, 1)}


def base64_of(data: bytes) -> bytes:
    import base64

    return base64.b64encode(data)


def _failover_worker(ledger: Any) -> int:
    """Say whether this process is the sequencer; on request, append one record and say when it
    returned (the survivor's side of the failover measurement)."""
    deadline = time.monotonic() + 30
    while ledger.size == 0 and time.monotonic() < deadline:
        ledger.append(small_record(0))
    print(json.dumps({"ready": True, "pid": os.getpid(), "leading": ledger._writer.leading}), flush=True)
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        request = json.loads(line)
        if request.get("leading"):
            print(json.dumps({"leading": ledger._writer.leading}), flush=True)
            continue
        index = ledger.append(small_record(1), timeout=60)
        print(json.dumps({"appended": index, "at": time.monotonic(), "leading": ledger._writer.leading}), flush=True)
    ledger.close()
    return 0


def run_pg_window(tmp: Path, keys: Keys, opts: dict[str, Any], url: str, *, processes: int,
                  producers: int) -> dict[str, Any]:
    """``processes`` replicas × ``producers`` producers awaiting ``aappend`` on one fresh PostgreSQL ledger."""
    schema = f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    workers: list[_Worker] = []
    try:
        for w in range(processes):
            workers.append(_Worker(tmp, _payload(keys, tmp / "unused.db", opts, mode="window", writer="replica",
                                                 worker=w, producers=producers, warmup_s=opts["warmup_s"],
                                                 url=url, schema=schema)))
        ready = [worker.line(timeout=120) for worker in workers]
        start = time.monotonic() + 0.2
        end = start + opts["window_s"]
        for worker in workers:
            worker.send({"start": start, "end": end})
        pids = [r["pid"] for r in ready]
        backends = [int(row[0]) for row in _pg(url, "SELECT pid FROM pg_stat_activity WHERE application_name = "
                                                    "'aiobligations' AND datname = current_database()")]
        time.sleep(max(0.0, start - time.monotonic()))
        before = {pid: _task_cpu_ns(pid) for pid in [*pids, *backends]}
        time.sleep(max(0.0, end - time.monotonic()))
        after = {pid: _task_cpu_ns(pid) for pid in before}
        results = [worker.line(timeout=120) for worker in workers]
        for worker in workers:
            worker.finish(timeout=120)
        stored, record_bytes, batches = _pg(url, f"SELECT count(*), avg(length(data)), count(DISTINCT ts) "
                                                 f"FROM {schema}.records")[0]
    finally:
        for worker in workers:
            worker.kill()
        _pg(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    seconds = end - start
    counted = sum(r["counted"] for r in results)
    appended = sum(r["appended"] for r in results)
    if stored != appended:
        raise RuntimeError(f"postgres: {appended} records appended but {stored} stored")
    per_record = 1 / 1000 / max(1, counted)
    delta = {pid: sum(_cpu_delta(before[pid], after[pid]).values()) for pid in before}
    threads: dict[str, float] = {}
    for r in ready:
        for tid, ns in _cpu_delta(before[r["pid"]], after[r["pid"]]).items():
            name = r["threads"].get(str(tid), "other")
            threads[name] = threads.get(name, 0.0) + ns
    return {
        "processes": processes,
        "producers_per_process": producers,
        "window_s": round(seconds, 3),
        "records": counted,
        "rate": round(counted / seconds, 1),
        "rate_per_process": [round(r["counted"] / seconds, 1) for r in results],
        "records_per_sequencer_batch": round(stored / max(1, batches), 1),
        "replicas_cpu_us_per_record": round(sum(delta[pid] for pid in pids) * per_record, 1),
        "replicas_threads_cpu_us_per_record": {name: round(ns * per_record, 1) for name, ns in sorted(threads.items())
                                                if ns},
        "postgres_backends_cpu_us_per_record": round(sum(delta[pid] for pid in backends) * per_record, 1),
        "aappend_ms_p50": round(statistics.median(r["aappend_ms"]["p50"] for r in results), 3),
        "aappend_ms_p99": max(r["aappend_ms"]["p99"] for r in results),
        "record_bytes_mean": round(float(record_bytes or 0), 1),
        "stored": int(stored),
    }


def bench_failover(tmp: Path, keys: Keys, opts: dict[str, Any], url: str, rounds: int) -> dict[str, Any]:
    """Two replicas; ``kill -9`` the sequencer; time until the survivor's next ``append`` returns
    (it can only return once a new sequencer has taken over and stored it)."""
    schema = f"bench_fo_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    times = []
    try:
        for _ in range(rounds):
            workers = [_Worker(tmp, _payload(keys, tmp / "unused.db", opts, mode="failover", writer="replica",
                                             worker=w, url=url, schema=schema)) for w in range(2)]
            try:
                ready = [worker.line(timeout=120) for worker in workers]
                deadline = time.monotonic() + 10
                while not any(r["leading"] for r in ready) and time.monotonic() < deadline:
                    for worker, r in zip(workers, ready):
                        worker.send({"leading": True})
                        r["leading"] = worker.line(timeout=30)["leading"]
                leader = next(i for i, r in enumerate(ready) if r["leading"])
                survivor = workers[1 - leader]
                killed_at = time.monotonic()
                os.kill(ready[leader]["pid"], signal.SIGKILL)
                survivor.send({"append": True})
                answer = survivor.line(timeout=60)
                times.append(answer["at"] - killed_at)
                survivor.process.stdin.close()
                survivor.finish(timeout=60)
            finally:
                for worker in workers:
                    worker.kill()
    finally:
        _pg(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return {"rounds": rounds, "takeover_s": [round(t, 3) for t in times], "max_s": round(max(times), 3),
            "median_s": round(statistics.median(times), 3), "target_s": TARGET_FAILOVER_S,
            "pass": max(times) <= TARGET_FAILOVER_S}


def bench_postgres(tmp: Path, keys: Keys, opts: dict[str, Any], url: str, runs: int) -> dict[str, Any]:
    """4 replicas × 16 producers into PostgreSQL vs. psycopg's executemany of the same rows, interleaved."""
    windows, bare = [], []
    for run in range(runs):
        progress(f"postgres run {run + 1}/{runs}: 4 replicas x 16 producers")
        windows.append(run_pg_window(tmp, keys, opts, url, processes=PROCESSES, producers=PRODUCERS // PROCESSES))
        progress(f"postgres run {run + 1}/{runs}: executemany")
        worker = _Worker(tmp, _payload(keys, tmp / "unused.db", opts, mode="executemany", writer="none", worker=0,
                                       url=url, schema=f"bench_em_{os.getpid()}", count=opts["executemany_rows"]))
        bare.append(worker.line(timeout=300))
        worker.finish(timeout=60)
    rate = statistics.median(w["rate"] for w in windows)
    bare_rate = statistics.median(b["rate"] for b in bare)
    progress("postgres: sequencer failover")
    failover = bench_failover(tmp, keys, opts, url, rounds=3 if opts["quick"] else 5)
    return {
        "url": _redact(url),
        "four_processes": windows,
        "executemany_batches_of_1000": bare,
        "rate_median": rate,
        "executemany_rate_median": bare_rate,
        "ratio_to_executemany": round(rate / bare_rate, 3),
        "targets": {"rate": TARGET_PG_RATE, "ratio_to_executemany": TARGET_PG_RATIO},
        "pass_rate": rate >= TARGET_PG_RATE,
        "pass_ratio": rate / bare_rate >= TARGET_PG_RATIO,
        "failover": failover,
        "pass": rate >= TARGET_PG_RATE and rate / bare_rate >= TARGET_PG_RATIO and failover["pass"],
    }


def _redact(url: str) -> str:
    from aiobligations.ledger.postgres import redact_url

    return redact_url(url)


class _Worker:
    """A worker process running this file with ``--worker``; killed (with its group) if left running."""

    def __init__(self, tmp: Path, payload: dict[str, Any]) -> None:
        env = dict(os.environ, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp),
            start_new_session=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(payload) + "\n")
        self.process.stdin.flush()

    def line(self, timeout: float) -> dict[str, Any]:
        """The worker's next JSON line; raise if it ends or stays silent for ``timeout`` seconds."""
        import selectors

        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise RuntimeError(f"worker {self.process.pid} said nothing for {timeout} s")
        text = self.process.stdout.readline()
        if not text:
            self.process.wait(10)
            err = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"worker {self.process.pid} exited ({self.process.returncode}):\n{err[-4000:]}")
        return json.loads(text)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"worker {self.process.pid} did not exit within {timeout} s") from None
        err = self.process.stderr.read() if self.process.stderr else ""
        if err.strip():
            print(err, file=sys.stderr, end="")
        if self.process.returncode != 0:
            raise RuntimeError(f"worker {self.process.pid} failed ({self.process.returncode})")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _payload(keys: Keys, path: Path, opts: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**keys.as_json(), "path": str(path), "personal_chars": opts["personal_chars"], "ids": opts["ids"],
            **extra}


def run_window(tmp: Path, keys: Keys, opts: dict[str, Any], *, processes: int, producers: int, writer: str,
               tag: str, keep: bool = False) -> dict[str, Any]:
    """``processes`` workers × ``producers`` producers appending to one fresh ledger for one window."""
    path = tmp / f"durable-{tag}.db"
    _remove_db(path)
    workers: list[_Worker] = []
    try:
        for w in range(processes):
            workers.append(_Worker(tmp, _payload(keys, path, opts, mode="window", writer=writer, worker=w,
                                                 producers=producers, warmup_s=opts["warmup_s"])))
        ready = [worker.line(timeout=120) for worker in workers]
        writer_pids = {r["writer_pid"] for r in ready}
        if len(writer_pids) != 1:
            raise RuntimeError(f"the workers use different writer processes: {writer_pids}")
        writer_pid = writer_pids.pop()
        start = time.monotonic() + 0.2
        end = start + opts["window_s"]
        for worker in workers:
            worker.send({"start": start, "end": end})
        pids = [r["pid"] for r in ready]
        time.sleep(max(0.0, start - time.monotonic()))
        before = {pid: _task_cpu_ns(pid) for pid in [*pids, writer_pid] if pid is not None}
        waits_before = {pid: _runqueue_wait_ns(pid) for pid in before}
        load_start = os.getloadavg()[0]
        time.sleep(max(0.0, end - time.monotonic()))
        after = {pid: _task_cpu_ns(pid) for pid in before}
        waits = {pid: _runqueue_wait_ns(pid) - waits_before[pid] for pid in before}
        results = [worker.line(timeout=120) for worker in workers]
        for worker in workers:
            worker.finish(timeout=120)
    finally:
        for worker in workers:
            worker.kill()
    seconds = end - start
    counted = sum(r["counted"] for r in results)
    delta = {pid: _cpu_delta(before[pid], after[pid]) for pid in before}
    serving_ns = sum(sum(delta[pid].values()) for pid in pids)
    threads: dict[str, float] = {}
    for r in ready:
        names = r["threads"]
        for tid, ns in delta[r["pid"]].items():
            name = names.get(str(tid), "other")
            threads[name] = threads.get(name, 0.0) + ns
    writer_ns = sum(delta[writer_pid].values()) if writer_pid is not None else None
    if writer_ns is None:
        # The thread writer: its thread is the writer, the rest of the process serves.
        writer_ns = sum(ns for name, ns in threads.items() if "writer" in name)
        serving_ns -= writer_ns
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        first = min(r["first_index"] for r in results if r["first_index"] is not None)
        last = max(r["last_index"] for r in results if r["last_index"] is not None)
        commits = conn.execute("SELECT count(DISTINCT ts) FROM records WHERE idx BETWEEN ? AND ?",
                               (first, last)).fetchone()[0]
        record_bytes = conn.execute("SELECT avg(length(data)) FROM records").fetchone()[0]
    finally:
        conn.close()
    appended = sum(r["appended"] for r in results)
    if stored != appended:
        raise RuntimeError(f"{tag}: {appended} records appended but {stored} stored")
    if not keep:
        _remove_db(path)
    per_record = 1 / 1000 / max(1, counted)  # ns in all -> us per record
    out = {
        "processes": processes,
        "producers_per_process": producers,
        "writer": writer,
        "window_s": round(seconds, 3),
        "records": counted,
        "rate": round(counted / seconds, 1),
        "rate_per_process": [round(r["counted"] / seconds, 1) for r in results],
        "records_per_commit": round((last - first + 1) / max(1, commits), 1),
        "group_commits_per_s": round(commits / seconds, 1),
        "writer_cpu_us_per_record": round(writer_ns * per_record, 1),
        "writer_cpu_share_of_a_core": round(writer_ns / 1e9 / seconds, 2),
        "serving_cpu_us_per_record": round(serving_ns * per_record, 1),
        "serving_cpu_share_of_a_core": round(serving_ns / 1e9 / seconds, 2),
        # Runnable but not running (other processes on the machine, or their own threads).
        "writer_runqueue_wait_us_per_record": round(waits.get(writer_pid, 0) * per_record, 1)
        if writer_pid is not None else None,
        "serving_runqueue_wait_us_per_record": round(sum(waits[pid] for pid in pids) * per_record, 1),
        "serving_threads_cpu_us_per_record": {
            name: round(ns * per_record, 1) for name, ns in sorted(threads.items()) if "writer" not in name
            or writer_pid is not None},
        "aappend_ms_p50": round(statistics.median(r["aappend_ms"]["p50"] for r in results), 3),
        "aappend_ms_p99": max(r["aappend_ms"]["p99"] for r in results),
        "record_bytes_mean": round(record_bytes, 1),
        "stored": stored,
        "load_average_1m": round(load_start, 2),
    }
    if keep:
        out["path"] = str(path)
    return out


def bench_durable(tmp: Path, keys: Keys, opts: dict[str, Any], runs: int) -> dict[str, Any]:
    """One process × 64 producers vs. 4 processes × 16 producers (and the thread writer), interleaved."""
    configs = {
        "one_process": {"processes": 1, "producers": PRODUCERS, "writer": "process"},
        "four_processes": {"processes": PROCESSES, "producers": PRODUCERS // PROCESSES, "writer": "process"},
        "thread_writer": {"processes": 1, "producers": PRODUCERS, "writer": "thread"},
    }
    names = list(configs)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    kept: Path | None = None
    for run in range(runs):
        order = names[run % len(names):] + names[: run % len(names)]
        for name in order:
            config = configs[name]
            keep = name == "one_process" and run == runs - 1
            progress(f"durable appends: {name}, run {run + 1}/{runs} ({config['processes']} x "
                     f"{config['producers']} producers, {opts['window_s']} s window)")
            result = run_window(tmp, keys, opts, tag=f"{name}-{run}", keep=keep, **config)
            if keep:
                kept = Path(result.pop("path"))
            results[name].append(result)
            progress(f"  {result['rate']:,.0f} records/s, {result['records_per_commit']} records/commit, "
                     f"writer {result['writer_cpu_us_per_record']} us/record, serving "
                     f"{result['serving_cpu_us_per_record']} us/record, aappend p50 {result['aappend_ms_p50']} ms, "
                     f"waiting for a CPU: writer {result['writer_runqueue_wait_us_per_record']}, serving "
                     f"{result['serving_runqueue_wait_us_per_record']} us/record; load {result['load_average_1m']}")
    summary = {name: _summarise(rs) for name, rs in results.items()}
    one, four = summary["one_process"]["rate_median"], summary["four_processes"]["rate_median"]
    pair_ratios = [round(f["rate"] / o["rate"], 3) for o, f in zip(results["one_process"], results["four_processes"])]
    ratio = four / one if one else 0.0
    out: dict[str, Any] = {
        "writer": 'process: ProcessLedger, the default profile ([ledger] writer = "process")',
        "record": f"interaction, {opts['personal_chars']} personal characters sealed, ids {opts['ids']}",
        "record_bytes_mean": results["one_process"][0]["record_bytes_mean"],
        "personal_chars": opts["personal_chars"],
        "interaction_ids": opts["ids"],
        "window_s": opts["window_s"],
        "runs": runs,
        "one_process": summary["one_process"],
        "four_processes": summary["four_processes"],
        "four_over_one": round(ratio, 3),
        "four_over_one_per_run": pair_ratios,
        "thread_writer": summary["thread_writer"],
        "target_rate": TARGET_RATE,
        "target_four_over_one": TARGET_PROCESSES_RATIO,
        "pass_rate": one >= TARGET_RATE,
        "pass_four_over_one": ratio >= TARGET_PROCESSES_RATIO,
    }
    if kept is not None:
        rows = _read_rows(kept)
        _remove_db(kept)
        progress(f"bare SQLite executemany of the same {len(rows)} record bytes (context)")
        bare = run_bare(tmp, rows, "1000")
        bare_small = run_bare(tmp, rows, "64", PRODUCERS)
        out["bare_executemany"] = {
            "batch_1000": bare,
            "batch_64": bare_small,
            "one_process_over_bare_1000": round(one / bare["rate"], 3),
            "note": "context only: the target of >= 0.35 x bare executemany is withdrawn",
        }
        progress(f"  {bare['rate']:,.0f} records/s in batches of 1000, {bare_small['rate']:,.0f} in batches of 64")
    out["pass"] = out["pass_rate"] and out["pass_four_over_one"]
    out["diagnostics"] = results
    return out


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in runs), 1)

    threads: dict[str, list[float]] = {}
    for r in runs:
        for name, v in r["serving_threads_cpu_us_per_record"].items():
            threads.setdefault(name, []).append(v)
    return {
        "processes": runs[0]["processes"],
        "producers_per_process": runs[0]["producers_per_process"],
        "rate_median": med("rate"),
        "rates": [r["rate"] for r in runs],
        "records_per_commit_median": med("records_per_commit"),
        "writer_cpu_us_per_record_median": med("writer_cpu_us_per_record"),
        "writer_cpu_share_of_a_core_median": round(statistics.median(r["writer_cpu_share_of_a_core"] for r in runs), 2),
        "serving_cpu_us_per_record_median": med("serving_cpu_us_per_record"),
        "serving_cpu_share_of_a_core_median": round(statistics.median(r["serving_cpu_share_of_a_core"] for r in runs), 2),
        "writer_runqueue_wait_us_per_record_median": (
            round(statistics.median(r["writer_runqueue_wait_us_per_record"] for r in runs), 1)
            if runs[0]["writer_runqueue_wait_us_per_record"] is not None else None),
        "serving_runqueue_wait_us_per_record_median": med("serving_runqueue_wait_us_per_record"),
        "serving_threads_cpu_us_per_record_median": {k: round(statistics.median(v), 1) for k, v in threads.items()},
        "aappend_ms_p50_median": round(statistics.median(r["aappend_ms_p50"] for r in runs), 3),
        "aappend_ms_p99_median": round(statistics.median(r["aappend_ms_p99"] for r in runs), 3),
    }


def _read_rows(path: Path) -> list[bytes]:
    conn = sqlite3.connect(path)
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT data FROM records ORDER BY idx")]
    finally:
        conn.close()


def run_bare(tmp: Path, rows: list[bytes], tag: str, batch_size: int = BARE_BATCH) -> dict[str, Any]:
    """The SQLite floor: executemany of the same record bytes, ``batch_size`` rows per durable transaction."""
    path = tmp / f"bare-{tag}.db"
    _remove_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE records (idx INTEGER PRIMARY KEY, data BLOB)")
        batches = [[(i, rows[i]) for i in range(s, min(s + batch_size, len(rows)))]
                   for s in range(0, len(rows), batch_size)]
        cpu0 = _process_cpu_s()
        started = time.perf_counter()
        for batch in batches:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO records VALUES (?,?)", batch)
            conn.execute("COMMIT")
        seconds = time.perf_counter() - started
        cpu = _process_cpu_s() - cpu0
        stored = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        assert stored == len(rows)
    finally:
        conn.close()
        _remove_db(path)
    return {
        "records": len(rows),
        "batch": batch_size,
        "seconds": round(seconds, 4),
        "rate": round(len(rows) / seconds, 1),
        "commits": len(batches),
        "cpu_us_per_record": round(cpu / len(rows) * 1e6, 1),
    }


def bench_latency(tmp: Path, keys: Keys, opts: dict[str, Any]) -> dict[str, Any]:
    """p50/p99 of one ``append`` at a time from one producer (process writer, thread writer, bare SQLite)."""
    out: dict[str, Any] = {"producers": 1, "appends": opts["latency_appends"]}
    for writer in ("process", "thread"):
        path = tmp / f"latency-{writer}.db"
        _remove_db(path)
        progress(f"append latency at low load: {writer} writer, {opts['latency_appends']} appends, one producer")
        worker = _Worker(tmp, _payload(keys, path, opts, mode="latency", writer=writer, worker=0, warm=50,
                                       count=opts["latency_appends"]))
        try:
            result = worker.line(timeout=300)
            worker.finish(timeout=60)
        finally:
            worker.kill()
            _remove_db(path)
        out[writer] = result
        progress(f"  p50 {result['p50']} us, p99 {result['p99']} us")
    worker = _Worker(tmp, _payload(keys, tmp / "latency-bare.db", opts, mode="bare_commit", writer="none",
                                   worker=0, count=opts["latency_appends"]))
    try:
        out["bare_sqlite_one_row_commit"] = worker.line(timeout=300)
        worker.finish(timeout=60)
    finally:
        worker.kill()
    progress(f"  bare SQLite one-row commit: p50 {out['bare_sqlite_one_row_commit']['p50']} us")
    out["p50_us"] = out["process"]["p50"]
    out["p99_us"] = out["process"]["p99"]
    return out


# -- 2. submit latency ------------------------------------------------------------------------


def _submit_run(
    tmp: Path, keys: Keys, records: InteractionRecords, total: int, pace: float | None
) -> dict[str, Any]:
    """Time every ``submit`` of ``total`` records from 64 tasks; ``pace`` caps the offered rate."""
    path = tmp / "submit.db"
    _remove_db(path)
    per_producer = total // PRODUCERS
    count = per_producer * PRODUCERS
    ledger = _process_ledger(keys, path, queue_size=max(1 << 20, 2 * count))
    latencies = array("q", bytes(8 * count))
    clock = time.perf_counter_ns
    done = [0]

    # Warm the writer and the code paths (untimed).
    for n in range(2_000):
        ledger.submit(records.make(PRODUCERS + 1, n))
    ledger.flush()
    start_size = ledger.size

    async def producer(p: int, started: float) -> None:
        submit = ledger.submit
        make = records.make
        base = p * per_producer
        for n in range(per_producer):
            record = make(p, n)
            t0 = clock()
            submit(record)
            latencies[base + n] = clock() - t0
            if n % 16 == 15:
                done[0] += 16
                wait = 0.0 if pace is None else started + done[0] / pace - time.perf_counter()
                await asyncio.sleep(max(0.0, wait))

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(producer(p, started) for p in range(PRODUCERS)))
        return time.perf_counter() - started

    writer_id = _writer_thread_id(ledger)
    writer_pid = ledger.writer_pid
    try:
        writer0 = _thread_cpu_s(writer_id)
        process0 = sum(_task_cpu_ns(writer_pid).values())
        seconds = asyncio.run(main())
        writer1 = _thread_cpu_s(writer_id)
        process1 = sum(_task_cpu_ns(writer_pid).values())
        committed = ledger.size - start_size
        drain_started = time.perf_counter()
        ledger.flush()
        drain = time.perf_counter() - drain_started
        assert ledger.size == start_size + count
    finally:
        ledger.close()
        _remove_db(path)
    ordered = sorted(latencies)
    p99 = _percentile(ordered, 0.99)
    return {
        "submits": count,
        "producers": PRODUCERS,
        "offered_rate": pace,
        "p50": _us(_percentile(ordered, 0.50)),
        "p90": _us(_percentile(ordered, 0.90)),
        "p99": _us(p99),
        "p999": _us(_percentile(ordered, 0.999)),
        "max": _us(ordered[-1]),
        "mean": _us(sum(ordered) / len(ordered)),
        "over_50us": sum(1 for v in ordered if v >= 50_000),
        "pass": p99 / 1000 < TARGET_SUBMIT_P99_US,
        "loop_s": round(seconds, 3),
        "submit_loop_rate": round(count / seconds, 1),
        "committed_during_loop": committed,
        "backlog_at_end": count - committed,
        "sending_thread_cpu_s_during_loop": (
            None if writer0 is None or writer1 is None else round(writer1 - writer0, 2)
        ),
        "writer_process_cpu_s_during_loop": round((process1 - process0) / 1e9, 2),
        "drain_s": round(drain, 3),
    }


def _us(ns: float) -> float:
    return round(ns / 1000, 2)


def bench_submit(tmp: Path, keys: Keys, total: int, paced_total: int, personal_chars: int) -> dict[str, Any]:
    records = InteractionRecords(personal_chars)
    clock = time.perf_counter_ns
    overhead = array("q", bytes(8 * 10_000))
    for i in range(len(overhead)):
        t0 = clock()
        overhead[i] = clock() - t0

    progress(f"submit latency: {total} submits from {PRODUCERS} producers, as fast as they go")
    result = _submit_run(tmp, keys, records, total, None)
    progress(f"  p50 {result['p50']} us, p99 {result['p99']} us, p99.9 {result['p999']} us; "
             f"the writer committed {result['committed_during_loop']} meanwhile")
    gc.collect()
    progress(f"submit latency, paced: {paced_total} submits offered at {SUBMIT_PACE:,} records/s")
    paced = _submit_run(tmp, keys, records, paced_total, SUBMIT_PACE)
    progress(f"  p50 {paced['p50']} us, p99 {paced['p99']} us, p99.9 {paced['p999']} us; "
             f"the writer committed {paced['committed_during_loop']} meanwhile")
    result["writer"] = "process (ProcessLedger, the default profile)"
    result["target_p99"] = TARGET_SUBMIT_P99_US
    result["timer_overhead_ns"] = _percentile(sorted(overhead), 0.5)
    result["gil_switch_interval_s"] = sys.getswitchinterval()
    result["paced"] = paced
    return result


# -- 3. a 1M-record ledger: build, export, verify, open ---------------------------------------


def build_big(tmp: Path, keys: Keys, total: int) -> tuple[Path, dict[str, Any]]:
    from aiobligations.ledger import SQLiteStore

    path = tmp / "big.db"
    _remove_db(path)
    progress(f"building a {total}-record ledger (submit + flush every {BUILD_CHUNK})")
    ledger = _ledger(keys, SQLiteStore(path), queue_size=BUILD_CHUNK + 1)
    started = time.perf_counter()
    try:
        submit = ledger.submit
        for chunk in range(0, total, BUILD_CHUNK):
            for i in range(chunk, min(total, chunk + BUILD_CHUNK)):
                submit(small_record(i))
            ledger.flush()
            if chunk and chunk % (BUILD_CHUNK * 4) == 0:
                progress(f"  {chunk:,} records")
    finally:
        ledger.close()
    seconds = time.perf_counter() - started
    conn = sqlite3.connect(path)
    try:
        size = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        sample = [r[0] for r in conn.execute("SELECT length(data) FROM records ORDER BY idx LIMIT 1000")]
    finally:
        conn.close()
    assert size == total, (size, total)
    info = {
        "records": total,
        "record_bytes_mean": round(sum(sample) / len(sample), 1),
        "build_s": round(seconds, 2),
        "build_rate": round(total / seconds, 1),
        "db_bytes": path.stat().st_size,
    }
    progress(f"  built in {seconds:.1f} s ({total / seconds:,.0f} records/s), "
             f"{info['record_bytes_mean']} bytes/record")
    return path, info


# A process started by subprocess (vfork/posix_spawn + exec) inherits, in its ru_maxrss, the peak
# RSS of the parent's address space at exec time: here, the benchmark's own hundreds of MB. So every
# child first forks once, while it is still a bare interpreter: the grandchild has fresh rusage, and
# its ru_maxrss is its own. The child reports what it had inherited, to show the difference.
_FRESH_PROCESS = r"""
import os, resource, sys
inherited_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
_pid = os.fork()
if _pid:
    _, _status = os.waitpid(_pid, 0)
    sys.exit(os.waitstatus_to_exitcode(_status))
"""

_VERIFY_CHILD = _FRESH_PROCESS + r"""
import json, resource, sys, time
def status_mb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
def rss_mb():
    return status_mb("VmRSS")
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from aiobligations.ledger import verify_path
args = json.loads(sys.stdin.read())
before_rss = rss_mb()
before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
report = verify_path(args["bundle"], key=args["key"])
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "records_checked": report.end - report.start,
                  "checkpoint_size": report.checkpoint_size, "key_pinned": report.pinned,
                  "rss_before_mb": before_rss, "peak_rss_before_mb": before_peak,
                  "peak_rss_mb": peak, "vm_hwm_mb": status_mb("VmHWM"), "rss_after_mb": rss_mb(),
                  "inherited_maxrss_mb": inherited_maxrss_mb}))
"""


def _child(code: str, payload: dict[str, Any], tmp: Path, timeout: float) -> dict[str, Any]:
    """Run ``python -c code`` with ``payload`` as JSON on stdin; return its last stdout line as JSON.

    The child runs in its own process group (it forks a grandchild), which is killed if anything
    goes wrong here, so nothing is left running.
    """
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp), start_new_session=True,
    )
    try:
        out, err = child.communicate(json.dumps(payload), timeout=timeout)
    except BaseException:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            pass
        child.wait()
        raise
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"child process failed ({child.returncode}):\n{err[-4000:]}")
    if err.strip():
        print(err, file=sys.stderr, end="")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 3)
    return result


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def bench_verify(tmp: Path, keys: Keys, db: Path, info: dict[str, Any]) -> dict[str, Any]:
    from aiobligations.ledger import export_bundle

    verifier_key = keys.signer().verifier_key
    forms: dict[str, Any] = {}
    for form, out in (("folder", tmp / "bundle"), ("tar_gz", tmp / "bundle.tar.gz")):
        progress(f"exporting the {form} bundle")
        started = time.perf_counter()
        manifest = export_bundle(db, out)
        export_s = time.perf_counter() - started
        assert manifest["records"] == info["records"], manifest
        progress(f"  exported in {export_s:.1f} s; verifying in a child process")
        child = _child(_VERIFY_CHILD, {"bundle": str(out), "key": verifier_key}, tmp, timeout=600)
        assert child["records_checked"] == info["records"], child
        rate = child["records_checked"] / child["seconds"]
        forms[form] = {
            "export_s": round(export_s, 2),
            "bundle_bytes": _dir_bytes(out),
            "records_checked": child["records_checked"],
            "verify_s": round(child["seconds"], 3),
            "rate": round(rate, 1),
            "rss_before_mb": round(child["rss_before_mb"], 1),
            "peak_rss_before_mb": round(child["peak_rss_before_mb"], 1),
            "peak_rss_mb": round(child["peak_rss_mb"], 1),
            "vm_hwm_mb": round(child["vm_hwm_mb"], 1),
            "rss_after_mb": round(child["rss_after_mb"], 1),
            "inherited_maxrss_mb": round(child["inherited_maxrss_mb"], 1),
            "child_process_wall_s": child["process_wall_s"],
            "pass": rate >= TARGET_VERIFY_RATE and child["peak_rss_mb"] < TARGET_VERIFY_RSS_MB,
        }
        progress(f"  {rate:,.0f} records/s, peak RSS {child['peak_rss_mb']:.1f} MB "
                 f"(before: {child['rss_before_mb']:.1f} MB)")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    return {
        "records": info["records"],
        "record_bytes_mean": info["record_bytes_mean"],
        "build_s": info["build_s"],
        "build_rate": info["build_rate"],
        "db_bytes": info["db_bytes"],
        "folder": forms["folder"],
        "tar_gz": forms["tar_gz"],
        "target_rate": TARGET_VERIFY_RATE,
        "target_peak_rss_mb": TARGET_VERIFY_RSS_MB,
        "page_cache": "warm (bundle just written)",
        "pass": forms["folder"]["pass"] and forms["tar_gz"]["pass"],
    }


_OPEN_CHILD = _FRESH_PROCESS + r"""
import json, sys, time
t0 = time.perf_counter()
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from aiobligations.ledger import Ledger, MasterKey, Signer, SQLiteStore
imports = time.perf_counter() - t0
args = json.loads(sys.stdin.read())
signer = Signer(args["origin"], Ed25519PrivateKey.from_private_bytes(bytes.fromhex(args["signing"])))
master = MasterKey(bytes.fromhex(args["master"]))
record = {"kind": "log", "event": "opened", "subject": "user-1", "personal": {"ip": "10.0.0.1"}}
t0 = time.perf_counter()
ledger = Ledger(SQLiteStore(args["path"]), origin=args["origin"], signer=signer, master_key=master)
t1 = time.perf_counter()
index = ledger.append(record)
t2 = time.perf_counter()
size = ledger.size
ledger.close()
t3 = time.perf_counter()
print(json.dumps({"imports_s": imports, "open_s": t1 - t0, "first_append_s": t2 - t1,
                  "open_plus_first_append_s": t2 - t0, "close_s": t3 - t2, "index": index, "size": size}))
"""


def bench_open(tmp: Path, keys: Keys, db: Path, runs: int) -> dict[str, Any]:
    results = []
    for run in range(runs):
        progress(f"opening the {db.name} ledger in a fresh process, run {run + 1}/{runs}")
        payload = {"path": str(db), "origin": ORIGIN, **keys.as_json()}
        child = _child(_OPEN_CHILD, payload, tmp, timeout=120)
        results.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in child.items()})
        progress(f"  open {child['open_s'] * 1000:.1f} ms, + first append "
                 f"{child['open_plus_first_append_s'] * 1000:.1f} ms")
    open_s = statistics.median(r["open_s"] for r in results)
    both = statistics.median(r["open_plus_first_append_s"] for r in results)
    return {
        "records": results[0]["index"],
        "open_s_median": round(open_s, 4),
        "open_plus_first_append_s_median": round(both, 4),
        "imports_s_median": round(statistics.median(r["imports_s"] for r in results), 4),
        "runs": results,
        "target_s": TARGET_OPEN_S,
        "page_cache": "warm (database just written); each run is a fresh Python process",
        "pass_open": open_s < TARGET_OPEN_S,
        "pass": both < TARGET_OPEN_S,
    }


# -- the machine ------------------------------------------------------------------------------


def machine(tmp: Path) -> dict[str, Any]:
    import cryptography

    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    fs = None
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, kind, *_ = line.split()
            if str(tmp).startswith(mount) and len(mount) > len(best):
                best, fs = mount, f"{kind} on {mount}"
    except OSError:
        pass
    digest = hashlib.sha256()
    for source in sorted((ROOT / "aiobligations" / "ledger").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_mb": mem_mb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography": cryptography.__version__,
        "tmp_filesystem": fs,
        "gil_switch_interval_s": sys.getswitchinterval(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python_loop_ns": python_loop_ns(),
        **git_state(),
        "ledger_source_sha256": digest.hexdigest()[:16],
    }


# -- main -------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--worker"] or argv == ["--worker"]:
        return worker_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each durable measurement")
    parser.add_argument("--window", type=float, help="seconds of each durable-append window (default 5; quick 1.5)")
    parser.add_argument("--append-records", type=int,
                        help="deprecated: durable appends now run for --window seconds; this sets nothing")
    parser.add_argument("--latency-appends", type=int, help="one-producer appends timed (default 1000; quick 200)")
    parser.add_argument("--ids", choices=("uuid7", "scattered"), default="uuid7",
                        help="interaction ids of the records: UUIDv7 as the middleware makes them (default), "
                             "or the producer-major ids of earlier runs")
    parser.add_argument("--submits", type=int, help="timed submit calls")
    parser.add_argument("--bundle-records", type=int, help="records in the big ledger")
    parser.add_argument("--personal-chars", type=int, default=500,
                        help="prompt + output characters per 1 KiB record (default 500: ~1 KiB stored)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: durable,latency,submit,big")
    parser.add_argument("--tmp", default="/tmp", help="where the temporary folder goes")
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help="also measure replicas on this PostgreSQL database (e.g. "
                             "postgresql://postgres@127.0.0.1:5432/test); --only-postgres skips the rest")
    parser.add_argument("--only-postgres", action="store_true", help="with --postgres: only that part")
    args = parser.parse_args(argv)
    if args.only_postgres:
        if not args.postgres:
            parser.error("--only-postgres needs --postgres URL")
        args.skip = "durable,latency,submit,big"
    if args.append_records:
        progress("note: --append-records is deprecated and ignored; durable appends run for --window seconds")
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    submits = args.submits or (50_000 if args.quick else 200_000)
    paced = 20_000 if args.quick else 100_000
    big = args.bundle_records or (100_000 if args.quick else 1_000_000)
    runs = max(1, args.runs)
    opts = {
        "window_s": args.window or (1.5 if args.quick else 5.0),
        "warmup_s": 0.3 if args.quick else 1.0,
        "latency_appends": args.latency_appends or (200 if args.quick else 1000),
        "personal_chars": args.personal_chars,
        "ids": args.ids,
        "quick": args.quick,
        "executemany_rows": 20_000 if args.quick else 100_000,
    }

    signal.signal(signal.SIGTERM, _on_sigterm)
    _quiet_structlog()
    tmp = Path(tempfile.mkdtemp(prefix="aiobligations-bench-ledger-", dir=args.tmp))
    started = time.perf_counter()
    try:
        keys = Keys()
        result: dict[str, Any] = {
            "benchmark": "ledger",
            "mode": "quick" if args.quick else "full",
            "machine": machine(tmp),
        }
        checks = []
        if "durable" not in skip:
            result["durable_append"] = bench_durable(tmp, keys, opts, runs)
            checks.append(result["durable_append"]["pass"])
        if "latency" not in skip:
            result["append_latency_low_load"] = bench_latency(tmp, keys, opts)
        gc.collect()
        if "submit" not in skip:
            result["submit_latency_us"] = bench_submit(tmp, keys, submits, paced, args.personal_chars)
            checks.append(result["submit_latency_us"]["pass"])
            gc.collect()
        if "big" not in skip:
            db, info = build_big(tmp, keys, big)
            result["verify_1m"] = bench_verify(tmp, keys, db, info)
            result["open_1m"] = bench_open(tmp, keys, db, runs)
            checks.extend((result["verify_1m"]["pass"], result["open_1m"]["pass"]))
        if args.postgres:
            result["postgres"] = bench_postgres(tmp, keys, opts, args.postgres, runs)
            checks.append(result["postgres"]["pass"])
        result["pass"] = bool(checks) and all(checks)
        result["total_s"] = round(time.perf_counter() - started, 1)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
