"""Ledger speed: the measured claims of the ledger, printed as one JSON object.

Run it from the repository root::

    .venv/bin/python benchmarks/ledger.py            # full run (under a minute on 2 cores)
    .venv/bin/python benchmarks/ledger.py --quick    # smoke run with small sizes (a few seconds)

The JSON object goes to stdout; progress goes to stderr. Every file is written under a fresh
temporary folder (``--tmp``, default ``/tmp``) that is removed at the end, even on failure.

What each figure measures
-------------------------

``machine``
    CPU count, CPU model, memory, Python, SQLite and ``cryptography`` versions, the file system of
    the temporary folder, the interpreter's GIL switch interval, the load average at start and end,
    the git commit and a SHA-256 of the ledger's source files (the working tree may differ from the
    commit; this names the code that was measured).

``durable_append``
    64 asyncio tasks on one event loop, each awaiting :meth:`Ledger.aappend` in a loop, into a
    fresh ``Ledger(SQLiteStore(path))`` (WAL, ``synchronous=FULL``); a record counts once its
    ``aappend`` returned, i.e. once its batch is committed and fsynced. Records are "interaction"
    records of about 1 KiB as stored: a few plain fields (interaction id, trace id, route, model,
    status) plus a ``personal`` part (an ASCII prompt and output, ``--personal-chars`` characters in
    all, default 500: 200 + 300) that the ledger seals with AES-GCM under the subject's key (1,000
    subjects), so the stored JSON holds base64 ciphertext, 4/3 of the plaintext: 500 characters of
    personal data make a stored record of about 1,025 bytes. ``record_bytes_mean`` is
    ``avg(length(data))`` read back from the ledger's own ``records`` table.

    ``bare_executemany`` is the floor SQLite itself sets on this disk: a fresh SQLite file, WAL,
    ``synchronous=FULL``, a table ``(idx INTEGER PRIMARY KEY, data BLOB)``, ``BEGIN`` /
    ``executemany`` of 1,000 rows / ``COMMIT``, inserting the very record bytes read back from the
    ledger run just before. (The ledger stores more per row: ts, kind and the 32-byte leaf hash, and
    its interior Merkle nodes, tree state and signed checkpoint in the same transaction.)

    The two are run ``--runs`` times each, interleaved (ledger, bare, ledger, bare, ...), after an
    untimed warm-up of each; ``rate_median`` and ``bare_executemany_median`` are the medians and
    ``ratio`` is their quotient. ``diagnostics`` per run tells how many group commits the writer
    made (with 64 producers waiting for their acknowledgement, a batch holds at most 64 records),
    the wall time spent inside ``Store.write_batch`` (SQLite inserts + commit + fsync), and the CPU
    seconds of the writer thread and of the whole process (read from ``/proc``). To get those, the
    ledger's store is ``SQLiteStore`` under a thin subclass that only counts and times
    ``write_batch`` (two ``perf_counter`` calls per group commit, nothing per record).

``submit_latency_us``
    The caller's cost of :meth:`Ledger.submit` (validate, serialise, enqueue: the request path's
    way): 64 asyncio tasks call ``submit`` in a loop, with ``await asyncio.sleep(0)`` every 16
    calls, and each call is timed with ``time.perf_counter_ns()``. The records are the same ~1 KiB
    records as above; ``queue_size`` is larger than the number of submits, so the queue is never
    full. p50/p90/p99/p999/max are nearest-rank percentiles in microseconds; ``timer_overhead_ns``
    is the median of an empty timed interval (not subtracted). ``committed_during_loop`` and
    ``backlog_at_end`` show what the writer thread achieved meanwhile: it has work all along, but
    a caller that never leaves the GIL can starve it (see ``writer_thread_cpu_s_during_loop``).
    ``paced`` repeats the measurement with the offered rate held at 20,000 submits/s, below what
    the writer sustains, so that the writer really commits in parallel with the timed calls.
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

Every ``pass*`` flag compares with the targets of the issue: durable appends >= 30,000 records/s and
>= 0.35 x bare executemany; submit p99 < 50 us; verification >= 300,000 records/s with peak RSS
< 200 MB; open + first append < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
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

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "bench.example/ledger"
PRODUCERS = 64
SUBJECTS = 1000
BARE_BATCH = 1000
BUILD_CHUNK = 50_000
SUBMIT_PACE = 20_000

TARGET_RATE = 30_000
TARGET_RATIO = 0.35
TARGET_SUBMIT_P99_US = 50.0
TARGET_VERIFY_RATE = 300_000
TARGET_VERIFY_RSS_MB = 200.0
TARGET_OPEN_S = 1.0

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
    """~1 KiB "interaction" records (as stored), with a sealed personal prompt and output."""

    def __init__(self, personal_chars: int) -> None:
        prompt_len = personal_chars * 2 // 5
        output_len = personal_chars - prompt_len
        # A few distinct texts, shared between records: building the dicts stays cheap.
        self.prompts = [_text(i, prompt_len) for i in range(16)]
        self.outputs = [_text(1000 + i, output_len) for i in range(16)]

    def make(self, producer: int, n: int) -> dict[str, Any]:
        k = producer * 1_000_003 + n
        return {
            "kind": "interaction",
            "interaction_id": f"0193b2c4-{producer:04x}-7{n % 4096:03x}-8000-{k:012x}",
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
    """The OS id of the ledger's writer thread (a private attribute: ``None`` if it moved)."""
    thread = getattr(ledger, "_thread", None)
    return getattr(thread, "native_id", None)


def _process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_store_class() -> type:
    """``SQLiteStore`` that also counts its group commits and the wall time spent writing them."""
    from aiobligations.ledger import SQLiteStore

    class TimedSQLiteStore(SQLiteStore):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.batches = 0
            self.batch_records = 0
            self.write_s = 0.0

        def write_batch(self, batch: Any) -> None:
            started = time.perf_counter()
            try:
                super().write_batch(batch)
            finally:
                self.write_s += time.perf_counter() - started
                self.batches += 1
                self.batch_records += len(batch.records)

    return TimedSQLiteStore


def _percentile(ordered: list[int] | array, fraction: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def _ledger(keys: Keys, store: Any, **kwargs: Any) -> Any:
    from aiobligations.ledger import Ledger

    return Ledger(store, origin=ORIGIN, signer=keys.signer(), master_key=keys.master_key(), **kwargs)


# -- 1. durable appends -----------------------------------------------------------------------


def run_durable_ledger(
    tmp: Path, keys: Keys, records: InteractionRecords, total: int, tag: str
) -> tuple[dict[str, Any], list[bytes]]:
    """One timed run of 64 producers awaiting ``aappend``; returns the figures and the stored bytes."""
    path = tmp / f"durable-{tag}.db"
    _remove_db(path)
    store = _timed_store_class()(path)
    ledger = _ledger(keys, store, queue_size=1 << 20)
    per_producer = total // PRODUCERS
    count = per_producer * PRODUCERS

    async def producer(p: int) -> None:
        aappend = ledger.aappend
        make = records.make
        for n in range(per_producer):
            await aappend(make(p, n))

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
        return time.perf_counter() - started

    writer_id = _writer_thread_id(ledger)
    cpu0, writer0 = _process_cpu_s(), _thread_cpu_s(writer_id)
    try:
        seconds = asyncio.run(main())
        cpu1, writer1 = _process_cpu_s(), _thread_cpu_s(writer_id)
        assert ledger.size == count, (ledger.size, count)
    finally:
        ledger.close()
    conn = sqlite3.connect(path)
    try:
        rows = [bytes(r[0]) for r in conn.execute("SELECT data FROM records ORDER BY idx")]
        sample = [r[0] for r in conn.execute("SELECT length(data) FROM records ORDER BY idx LIMIT 1000")]
    finally:
        conn.close()
    db_bytes = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())
    _remove_db(path)
    result = {
        "records": count,
        "seconds": round(seconds, 4),
        "rate": round(count / seconds, 1),
        "record_bytes_mean_first_1000": round(sum(sample) / len(sample), 1),
        "record_bytes_mean": round(sum(map(len, rows)) / len(rows), 1),
        "db_bytes": db_bytes,
        "group_commits": store.batches,
        "records_per_commit_mean": round(store.batch_records / max(1, store.batches), 1),
        "store_write_batch_s": round(store.write_s, 3),
        "store_write_batch_share": round(store.write_s / seconds, 3),
        "writer_thread_cpu_s": None if writer0 is None or writer1 is None else round(writer1 - writer0, 2),
        "process_cpu_s": round(cpu1 - cpu0, 2),
    }
    return result, rows


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
        "seconds": round(seconds, 4),
        "rate": round(len(rows) / seconds, 1),
        "commits": len(batches),
        "process_cpu_s": round(cpu, 2),
    }


def bench_durable(tmp: Path, keys: Keys, total: int, runs: int, personal_chars: int) -> dict[str, Any]:
    records = InteractionRecords(personal_chars)
    warm = max(PRODUCERS * 10, total // 10)
    progress(f"durable appends: warm-up ({warm} records, untimed)")
    _, warm_rows = run_durable_ledger(tmp, keys, records, warm, "warmup")
    run_bare(tmp, warm_rows, "warmup")
    del warm_rows
    ledger_runs: list[dict[str, Any]] = []
    bare_runs: list[dict[str, Any]] = []
    bare_small_runs: list[dict[str, Any]] = []
    for run in range(runs):
        progress(f"durable appends: ledger run {run + 1}/{runs} ({total} records, {PRODUCERS} producers)")
        result, rows = run_durable_ledger(tmp, keys, records, total, str(run))
        ledger_runs.append(result)
        progress(f"  {result['rate']:,.0f} records/s, {result['records_per_commit_mean']} records/commit")
        progress(f"durable appends: bare executemany run {run + 1}/{runs}")
        bare = run_bare(tmp, rows, str(run))
        bare_runs.append(bare)
        progress(f"  {bare['rate']:,.0f} records/s")
        # For context: 64 producers that each wait for their own record can never fill a batch
        # beyond 64, so this is the SQLite floor at the batch size the scenario allows.
        progress(f"durable appends: bare executemany in batches of {PRODUCERS}, run {run + 1}/{runs}")
        bare_small_runs.append(run_bare(tmp, rows, f"{run}-small", PRODUCERS))
        progress(f"  {bare_small_runs[-1]['rate']:,.0f} records/s")
        del rows
    rate = statistics.median(r["rate"] for r in ledger_runs)
    bare_rate = statistics.median(r["rate"] for r in bare_runs)
    ratio = rate / bare_rate
    bare_small_rate = statistics.median(r["rate"] for r in bare_small_runs)
    return {
        "producers": PRODUCERS,
        "records_per_run": ledger_runs[0]["records"],
        "record_bytes_mean": ledger_runs[0]["record_bytes_mean"],
        "record_bytes_mean_first_1000": ledger_runs[0]["record_bytes_mean_first_1000"],
        "personal_chars": personal_chars,
        "rate_median": round(rate, 1),
        "runs": [r["rate"] for r in ledger_runs],
        "bare_executemany_median": round(bare_rate, 1),
        "bare_runs": [r["rate"] for r in bare_runs],
        "bare_batch": BARE_BATCH,
        "ratio": round(ratio, 3),
        "bare_executemany_batch_of_producers_median": round(bare_small_rate, 1),
        "ratio_to_batch_of_producers": round(rate / bare_small_rate, 3),
        "target_rate": TARGET_RATE,
        "target_ratio": TARGET_RATIO,
        "pass_rate": rate >= TARGET_RATE,
        "pass_ratio": ratio >= TARGET_RATIO,
        "diagnostics": {"ledger": ledger_runs, "bare": bare_runs, "bare_batch_of_producers": bare_small_runs},
    }


# -- 2. submit latency ------------------------------------------------------------------------


def _submit_run(
    tmp: Path, keys: Keys, records: InteractionRecords, total: int, pace: float | None
) -> dict[str, Any]:
    """Time every ``submit`` of ``total`` records from 64 tasks; ``pace`` caps the offered rate."""
    path = tmp / "submit.db"
    _remove_db(path)
    per_producer = total // PRODUCERS
    count = per_producer * PRODUCERS
    ledger = _ledger(keys, _timed_store_class()(path), queue_size=max(1 << 20, 2 * count))
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
    try:
        writer0 = _thread_cpu_s(writer_id)
        seconds = asyncio.run(main())
        writer1 = _thread_cpu_s(writer_id)
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
        "writer_thread_cpu_s_during_loop": (
            None if writer0 is None or writer1 is None else round(writer1 - writer0, 2)
        ),
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
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
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
        "git_commit": commit,
        "ledger_source_sha256": digest.hexdigest()[:16],
    }


# -- main -------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each durable measurement")
    parser.add_argument("--append-records", type=int, help="records per durable-append run")
    parser.add_argument("--submits", type=int, help="timed submit calls")
    parser.add_argument("--bundle-records", type=int, help="records in the big ledger")
    parser.add_argument("--personal-chars", type=int, default=500,
                        help="prompt + output characters per 1 KiB record (default 500: ~1 KiB stored)")
    parser.add_argument("--tmp", default="/tmp", help="where the temporary folder goes")
    args = parser.parse_args(argv)
    appends = args.append_records or (20_000 if args.quick else 100_000)
    submits = args.submits or (50_000 if args.quick else 200_000)
    paced = 20_000 if args.quick else 100_000
    big = args.bundle_records or (100_000 if args.quick else 1_000_000)
    runs = max(1, args.runs)

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
        result["durable_append"] = bench_durable(tmp, keys, appends, runs, args.personal_chars)
        gc.collect()
        result["submit_latency_us"] = bench_submit(tmp, keys, submits, paced, args.personal_chars)
        gc.collect()
        db, info = build_big(tmp, keys, big)
        result["verify_1m"] = bench_verify(tmp, keys, db, info)
        result["open_1m"] = bench_open(tmp, keys, db, runs)
        result["pass"] = all((
            result["durable_append"]["pass_rate"],
            result["durable_append"]["pass_ratio"],
            result["submit_latency_us"]["pass"],
            result["verify_1m"]["pass"],
            result["open_1m"]["pass"],
        ))
        result["total_s"] = round(time.perf_counter() - started, 1)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))
    progress("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
