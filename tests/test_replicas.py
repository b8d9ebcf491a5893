"""Replicas on PostgreSQL: several real uvicorn servers, each in a folder of its own, on one ledger.

Every test builds one site (a profile and its keys, ``[ledger] url`` naming the local PostgreSQL,
``schema`` a fresh one per test), copies it into one folder per replica (each keeps its local spool
and shared-counter files there, beside ``[ledger] path``), starts ``uvicorn --workers 2`` in each
folder with the demo app wrapped in ``ObligationsMiddleware`` (:mod:`_workers_app`), loads the
replicas from client threads, and then reads what the ledger holds the way an auditor would: an
``aiobligations export`` bundle, checked by ``aiobligations verify --key``, whose interaction
records must hold every interaction the clients were served exactly once.

No mocks and no fixed sleeps: servers are awaited by polling an endpoint, processes by their exit,
PostgreSQL by querying it, each with a deadline. The only durations set on purpose are the
scenario's own (the 10 s outage). The database outage is made by a loopback proxy in this process
(:mod:`_pgproxy`) that the profile's url points at.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg
import pytest
from _pgproxy import Proxy, proxied
from aiobligations.middleware import CONFIG_ENV
from conftest import PG_URL
from test_workers import (
    CLI,
    ROOT,
    Outcome,
    alive,
    chat,
    children,
    cmdline,
    free_port,
    until,
    wait_exit,
)

from aiobligations.keys import init_project, load_signer
from aiobligations.ledger.postgres import LOCK_SEQUENCER, PostgresStore
from aiobligations.profile import load_profile

APP = "tests._workers_app"
PROBE_PATH = "/_workers/probe"
WORKERS = 2
START_DEADLINE = 90.0  # Two replicas of two workers each importing the package on two busy cores.
STOP_DEADLINE = 60.0
REQUEST_TIMEOUT = 30.0
SETTLED = 2.0  # A killed process may lose what it answered this recently (it had not queued it yet).
FAILOVER_BOUND = 5.0  # From the sequencer's death until a new one has stored a record.
OUTAGE = 10.0
OPERATOR_TOKEN = "replicas-operator-token-0123456789"


# -- the site and its replicas' folders ------------------------------------------------------------------


@dataclass
class Site:
    """One profile (keys, origin) copied into a folder per replica; the ledger is a PostgreSQL schema."""

    folders: list[Path]
    url: str
    schema: str
    verifier_key: str
    root: Path

    @property
    def configs(self) -> list[Path]:
        return [folder / "aiobligations.toml" for folder in self.folders]


def make_site(root: Path, url: str, schema: str, replicas: int = 2) -> Site:
    """``init_project``, with ``[ledger] url`` and ``schema`` added, copied into ``replicas`` folders."""
    config = init_project(root / "site")
    text = config.read_text()
    assert text.count("\n[ledger]\n") == 1, "the template's [ledger] section moved"
    config.write_text(text.replace("\n[ledger]\n", f'\n[ledger]\nurl = "{url}"\nschema = "{schema}"\n', 1))
    profile = load_profile(config)
    assert (url, schema) == (profile.ledger.url, profile.ledger.schema)
    key = load_signer(profile.ledger.signing_key, profile.ledger.origin).verifier_key
    folders = []
    for number in range(replicas):
        folder = root / f"replica-{'ab'[number] if replicas <= 2 else number}"
        shutil.copytree(config.parent, folder)  # Keeps the keys' 0600.
        folders.append(folder)
    return Site(folders=folders, url=url, schema=schema, verifier_key=key, root=root)


def pg_connect() -> Any:
    """A connection of the test's own, straight to PostgreSQL (never through a proxy)."""
    return psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)


# -- a replica ---------------------------------------------------------------------------------------------


class Replica:
    """``uvicorn --workers 2`` serving :mod:`_workers_app` from its own folder, in a session of its own."""

    def __init__(self, name: str, folder: Path, *, variant: str = "app", env: dict[str, str] | None = None) -> None:
        self.name = name
        self.folder = folder
        self.config = folder / "aiobligations.toml"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.variant = variant
        self.log_path = folder / f"{name}.log"
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Replica:
        path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, CONFIG_ENV: str(self.config), "PYTHONPATH": os.pathsep.join(path), **self.extra_env}
        argv = [sys.executable, "-m", "uvicorn", f"{APP}:{self.variant}", "--workers", str(WORKERS),
                "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info", "--no-access-log"]
        with open(self.log_path, "ab") as log:  # Appends: a restarted replica keeps one log.
            log.write(f"\n=== start {self.starts} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(argv, cwd=self.folder, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def probe(self) -> dict[str, Any] | None:
        try:
            response = httpx.get(self.base_url + PROBE_PATH, timeout=5.0)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def workers(self) -> set[int]:
        """The live worker processes (the master's children, less multiprocessing's helper)."""
        return {pid for pid in children(self.pid) if alive(pid) and "resource_tracker" not in cmdline(pid)}

    def wait_ready(self) -> None:
        """Until it answers the probe and runs all its workers."""
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.process.returncode}) while starting:\n{self.log()[-4000:]}")
            return self.probe() is not None and len(self.workers()) == WORKERS

        until(ready, START_DEADLINE, f"{self.name} ({self.base_url}) to answer with {WORKERS} workers")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Ask it to stop, the way an operator does (see :meth:`wait_stopped`)."""
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_stopped(self) -> None:
        """It exits 0 within the deadline."""
        assert self.process is not None
        try:
            returncode = self.process.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not stop within {STOP_DEADLINE} s:\n{self.log()[-4000:]}")
        assert 0 == returncode, f"{self.name} exited with {returncode}:\n{self.log()[-4000:]}"

    def kill(self) -> set[int]:
        """SIGKILL the master and every worker at once (the whole process group); their pids."""
        assert self.process is not None
        victims = {self.pid, *self.workers()}
        os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(30)
        for pid in victims:
            assert wait_exit(pid, 30), f"{self.name}'s process {pid} did not die of SIGKILL"
        return victims

    def cleanup(self) -> None:
        """After a failure: end the replica's process group (which this test started)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.process.wait(30)


@contextlib.contextmanager
def running(*replicas: Replica) -> Iterator[tuple[Replica, ...]]:
    """Start the replicas together and wait for them; whatever happens, end them on the way out."""
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        yield replicas
    finally:
        for replica in replicas:
            replica.cleanup()


def stop_all(*replicas: Replica) -> None:
    """SIGTERM to every replica at once; each must exit 0, its log free of tracebacks and lost records."""
    for replica in replicas:
        replica.stop(signal.SIGTERM)
    for replica in replicas:
        replica.wait_stopped()


def assert_clean_logs(*replicas: Replica) -> None:
    for replica in replicas:
        log = replica.log()
        for bad in ("Traceback", "ledger_records_lost", "ledger_sequencer_failed", "ledger_writer_error"):
            assert bad not in log, f"{replica.name}'s log shows {bad}:\n{log[-4000:]}"


# -- load across replicas ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Sent:
    """One chat completion and the replica it was sent to."""

    replica: str
    outcome: Outcome


class Traffic:
    """Client threads sending chat completions (every other one streamed) round-robin to the replicas
    that are up, each on a new connection (so the kernel spreads them over a replica's workers)."""

    def __init__(self, replicas: list[Replica], threads: int, total: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.urls = {replica.name: replica.base_url for replica in replicas}
        self.up = set(self.urls)
        self.total = total
        self.headers = headers or {}
        self.sent: list[Sent] = []
        self.in_flight: dict[int, str] = {}
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)
        self.stopping = False
        self._next = 0
        self._threads = [threading.Thread(target=self._run, name=f"traffic-{i}", daemon=True) for i in range(threads)]

    def pause(self, name: str) -> None:
        """Send nothing more to ``name`` (it is down)."""
        with self.progress:
            self.up.discard(name)

    def resume(self, name: str) -> None:
        with self.progress:
            self.up.add(name)
            self.progress.notify_all()

    def _take(self) -> tuple[int, str] | None:
        with self.progress:
            while True:
                if self.stopping or (self.total is not None and self._next >= self.total):
                    return None
                if self.up:
                    break
                self.progress.wait(1.0)
            number = self._next
            self._next += 1
            names = sorted(self.up)
            name = names[number // 2 % len(names)]  # Pairs, so each replica gets streams and non-streams.
            self.in_flight[number] = name
            return number, name

    def _run(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0)
        clients = {name: httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits, headers=self.headers)
                   for name, url in self.urls.items()}
        try:
            while (taken := self._take()) is not None:
                number, name = taken
                outcome = chat(clients[name], number, stream=number % 2 == 1)
                with self.progress:
                    del self.in_flight[number]
                    self.sent.append(Sent(name, outcome))
                    self.progress.notify_all()
        finally:
            for client in clients.values():
                client.close()

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float) -> list[Sent]:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        assert not stuck, f"client threads {stuck} did not finish within {timeout} s"
        return sorted(self.sent, key=lambda sent: sent.outcome.number)

    def stop(self, timeout: float) -> list[Sent]:
        with self.progress:
            self.stopping = True
            self.progress.notify_all()
        return self.join(timeout)

    def completed_since(self, moment: float, replica: str | None = None) -> list[Outcome]:
        with self.lock:
            return [s.outcome for s in self.sent if s.outcome.complete and s.outcome.started > moment
                    and (replica is None or s.replica == replica)]

    def wait_answers(self, count: int, after: float, timeout: float, what: str, replica: str | None = None) -> None:
        """Until ``count`` complete answers (from ``replica``, or any) that started after ``after`` came back."""
        def enough() -> bool:
            return sum(1 for s in self.sent if s.outcome.complete and s.outcome.started > after
                       and (replica is None or s.replica == replica)) >= count

        with self.progress:
            if not self.progress.wait_for(enough, timeout):
                pytest.fail(f"fewer than {count} complete answers within {timeout} s {what}")


def official_client_calls(replica: Replica, count: int) -> list[str]:
    """``count`` chat completions through the official ``openai`` client (half streamed); their ids."""
    ids = []
    messages = [{"role": "user", "content": "Which records must a provider keep, and for how long?"}]
    with openai.OpenAI(base_url=f"{replica.base_url}/v1", api_key="sk-demo", max_retries=0,
                       timeout=REQUEST_TIMEOUT) as client:
        for number in range(count):
            raw = client.chat.completions.with_raw_response.create(model="toy-1", messages=messages,
                                                                   stream=number % 2 == 1)
            if number % 2:
                text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
            else:
                text = raw.parse().choices[0].message.content or ""
            assert text, f"an empty answer from {replica.name} through the openai client"
            interaction_id = raw.headers.get("ai-interaction-id")
            assert interaction_id, f"{replica.name} answered the openai client without an AI-Interaction-Id"
            ids.append(interaction_id)
    return ids


# -- what the ledger holds -----------------------------------------------------------------------------------


@dataclass
class Audit:
    """What an exported bundle holds, once ``aiobligations verify`` found it intact."""

    report: dict[str, Any]
    records: int
    interactions: Counter[str] = field(default_factory=Counter)


def export_and_verify(site: Site, config: Path, name: str = "bundle") -> Audit:
    """``aiobligations export --out bundle.tar.gz`` with ``config``, then ``verify --key``: both exit 0;
    the bundle covers every record stored, from 0 to the signed checkpoint, nothing left queued."""
    bundle = site.root / f"{name}.tar.gz"
    export = subprocess.run([CLI, "export", "--config", str(config), "--out", str(bundle)], check=False,
                            capture_output=True, text=True, timeout=120, cwd=config.parent)
    assert 0 == export.returncode, f"export failed:\n{export.stdout}{export.stderr}"
    verify = subprocess.run([CLI, "verify", str(bundle), "--key", site.verifier_key, "--json"], check=False,
                            capture_output=True, text=True, timeout=120, cwd=site.root)
    assert 0 == verify.returncode, f"verify failed ({verify.returncode}):\n{verify.stdout}{verify.stderr}"
    report = json.loads(verify.stdout)
    assert report["intact"] and report["key_pinned"], report
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("records.jsonl")
        assert member is not None, "the bundle has no records.jsonl"
        lines = member.read().splitlines()
    audit = Audit(report=report, records=len(lines))
    indices = []
    for line in lines:
        record = json.loads(line)
        indices.append(record["idx"])
        if record["kind"] == "interaction":
            audit.interactions[record["interaction_id"]] += 1
    assert list(range(report["start"], report["end"])) == indices, "the bundle's indices are not contiguous"
    with pg_connect() as conn:
        stored = conn.execute(f"SELECT count(*), coalesce(max(idx) + 1, 0) FROM {site.schema}.records").fetchone()
        queued = conn.execute(f"SELECT count(*) FROM {site.schema}.queue").fetchone()[0]
    # The last replica to stop signed a final checkpoint over everything: the bundle is the whole log.
    assert (0, stored[0], stored[0]) == (report["start"], report["end"], report["checkpoint_size"]), (report, stored)
    assert stored[0] == stored[1], f"{stored[0]} records stored but the last index is {stored[1] - 1}"
    assert 0 == queued, f"{queued} records are still queued, never sequenced, after every replica stopped"
    return audit


def assert_doubled_none(audit: Audit) -> None:
    doubled = {iid: n for iid, n in audit.interactions.items() if n > 1}
    assert not doubled, f"{len(doubled)} interactions are recorded more than once: {list(doubled.items())[:5]}"


def assert_exactly_once(audit: Audit, ids: list[str], what: str) -> None:
    """Every id in ``ids`` is recorded exactly once, and the ledger holds no other interaction."""
    assert len(ids) == len(set(ids)), f"the replicas handed out an interaction id twice ({what})"
    assert_doubled_none(audit)
    missing = [iid for iid in ids if audit.interactions[iid] == 0]
    assert not missing, f"{len(missing)} of {len(ids)} served interactions ({what}) are not in the ledger: {missing[:5]}"
    extra = set(audit.interactions) - set(ids)
    assert not extra, f"the ledger holds {len(extra)} interactions nobody was served ({what}): {sorted(extra)[:5]}"


def stored_ids(schema: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` the sequencer has stored (a query of the shared tables)."""
    if not ids:
        return set()
    with pg_connect() as conn:
        rows = conn.execute(f"SELECT interaction_id FROM {schema}.interactions WHERE interaction_id = ANY(%s)",
                            (ids,)).fetchall()
    return {iid for (iid,) in rows}


def sequencer_sessions(schema: str) -> list[int]:
    """The backend pids of the PostgreSQL sessions holding this ledger's sequencer lock (a granted
    advisory lock on the schema's lock class, key 1; pg_locks shows the int4 keys as unsigned oids)."""
    lock_class = PostgresStore("postgresql://unused@127.0.0.1/unused", schema=schema)._lock_class
    with pg_connect() as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = %s "
            "AND objid = %s", (lock_class & 0xFFFFFFFF, LOCK_SEQUENCER)).fetchall()]


def spool_lines(folder: Path) -> int:
    spool = folder / "ledger.db.spool"
    return len([line for line in spool.read_bytes().splitlines() if line.strip()]) if spool.exists() else 0


# -- 1. two replicas, a clean stop --------------------------------------------------------------------------


def test_two_replicas_record_every_interaction_once(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    """Two replicas (``uvicorn --workers 2`` each, in folders of their own) share one PostgreSQL ledger.

    200 chat completions from four httpx threads (half streamed) and 24 through the official
    ``openai`` client (half streamed) go to both replicas; one session holds the sequencer's lock
    while they serve. After SIGTERM to both: each exits 0 with a clean log, nothing is left queued
    or spooled, no session holds the lock, the exported bundle verifies with the pinned key (and so
    does the database itself), and its interaction records are exactly the interactions served:
    none lost, none doubled, none invented.
    """
    site = make_site(tmp_path, pg_url, pg_schema)
    a, b = Replica("replica-a", site.folders[0]), Replica("replica-b", site.folders[1])
    with running(a, b):
        traffic = Traffic([a, b], threads=4, total=200).start()
        ids = official_client_calls(a, 12) + official_client_calls(b, 12)
        sent = traffic.join(180)
        bad = [s for s in sent if not (s.outcome.status == 200 and s.outcome.complete and s.outcome.interaction_id)]
        assert not bad, f"{len(bad)} of {len(sent)} requests failed, first: {bad[:3]}"
        ids += [s.outcome.interaction_id for s in sent if s.outcome.interaction_id]
        served_by = Counter((s.replica, s.outcome.pid) for s in sent)
        assert {a.name, b.name} == {name for name, _ in served_by}, f"a replica served nothing: {served_by}"
        assert {pid for _, pid in served_by} <= a.workers() | b.workers(), served_by
        holders = sequencer_sessions(site.schema)
        assert 1 == len(holders), f"not exactly one session holds the sequencer's lock: {holders}"
        store = PostgresStore(pg_url, schema=site.schema, readonly=True)
        try:
            assert holders[0] == store.sequencer_pid(), "PostgresStore.sequencer_pid() does not name the sequencer"
        finally:
            store.close()
        stop_all(a, b)
    assert_clean_logs(a, b)
    assert [] == sequencer_sessions(site.schema), "a session still holds the sequencer's lock after the stop"
    assert [0, 0] == [spool_lines(folder) for folder in site.folders], "records were spooled with the database up"
    audit = export_and_verify(site, site.configs[1])
    assert_exactly_once(audit, ids, "two replicas, clean stop")
    # The database verifies as the bundle does.
    direct = subprocess.run([CLI, "verify", pg_url, "--schema", site.schema, "--key", site.verifier_key, "--json"],
                            check=False, capture_output=True, text=True, timeout=120, cwd=site.root)
    assert 0 == direct.returncode, f"verify of the database failed:\n{direct.stdout}{direct.stderr}"
    assert audit.report["end"] == json.loads(direct.stdout)["end"]


# -- 2. SIGKILL under load -------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One round of the kill test."""

    target: str  # "replica" (master and workers) or "sequencer" (the worker holding the lock)
    replica: str
    pids: set[int]
    at: float
    in_flight: int
    storing_in: float = 0.0  # Until a request made after the kill was stored (a sequencer works again).
    recovered_in: float = 0.0  # Until every worker of both replicas had its answers stored again.


def find_sequencer(replicas: list[Replica], timeout: float = 30.0) -> tuple[Replica, int]:
    """The replica and worker pid whose probe says ``leading`` (probing each replica in turn)."""
    found: list[tuple[Replica, int]] = []

    def probe() -> bool:
        for replica in replicas:
            answer = replica.probe()
            if answer is not None and answer.get("leading") and answer["pid"] in replica.workers():
                found.append((replica, answer["pid"]))
                return True
        return False

    until(probe, timeout, "a worker whose probe says it is the sequencer")
    return found[0]


def test_sigkill_replicas_and_the_sequencer_under_load(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    """Two replicas under load from four client threads; ten SIGKILLs, alternately a whole replica
    (its uvicorn master and workers, then restarted in its folder) and the worker that is the
    sequencer now (found through the probe; uvicorn starts a new worker in its place).

    After each kill: a request made after the kill is stored within ``FAILOVER_BOUND`` seconds (a
    new sequencer took the lock and stores; the time is printed), and every worker of both
    replicas has its answers stored again. After a clean stop of both: the bundle verifies; no
    interaction is recorded twice; every answer from a process that was never killed is recorded,
    and so is every answer a killed process gave more than ``SETTLED`` seconds before its kill (a
    process's records are safe once queued in PostgreSQL; only its last moments may die with it).
    """
    rounds = 10
    site = make_site(tmp_path, pg_url, pg_schema)
    replicas = [Replica("replica-a", site.folders[0]), Replica("replica-b", site.folders[1])]
    kills: list[Kill] = []
    with running(*replicas):
        traffic = Traffic(replicas, threads=4).start()

        def storing_again(moment: float) -> bool:
            """Every worker of both replicas has an answer that started after ``moment`` stored."""
            workers = set().union(*(replica.workers() for replica in replicas))
            with traffic.lock:
                served = [(s.outcome.pid, s.outcome.interaction_id) for s in traffic.sent
                          if s.outcome.complete and s.outcome.started > moment]
            stored = stored_ids(site.schema, [iid for _, iid in served if iid])
            return len(workers) == WORKERS * len(replicas) and workers <= {pid for pid, iid in served if iid in stored}

        def first_stored_after(moment: float) -> bool:
            fresh = [o.interaction_id for o in traffic.completed_since(moment) if o.interaction_id]
            return bool(stored_ids(site.schema, fresh))

        try:
            traffic.wait_answers(20, 0.0, 60, "before the first kill")
            until(lambda: storing_again(0.0), START_DEADLINE, "every worker's answers to be stored")
            for round_ in range(rounds):
                if round_ % 2 == 0:
                    replica = replicas[(round_ // 2) % 2]
                    with traffic.lock:
                        in_flight = sum(1 for name in traffic.in_flight.values() if name == replica.name)
                    at = time.monotonic()
                    pids = replica.kill()
                    traffic.pause(replica.name)
                    kill = Kill("replica", replica.name, pids, at, in_flight)
                else:
                    replica, victim = find_sequencer(replicas)
                    with traffic.lock:
                        kill = Kill("sequencer", replica.name, {victim}, time.monotonic(), len(traffic.in_flight))
                        os.kill(victim, signal.SIGKILL)
                    assert wait_exit(victim, 30), f"the sequencer {victim} did not die of SIGKILL"
                kills.append(kill)
                until(lambda at=kill.at: first_stored_after(at), 30,
                      f"a request made after killing the {kill.target} of {kill.replica} to be stored")
                kill.storing_in = time.monotonic() - kill.at
                if kill.target == "replica":
                    replica.start()
                    replica.wait_ready()
                    traffic.resume(replica.name)
                else:
                    until(lambda r=replica, v=victim: len(r.workers() - {v}) == WORKERS, START_DEADLINE,
                          f"a new worker in {replica.name} in place of {victim}")
                traffic.wait_answers(6, kill.at, 60, f"from {replica.name} after the kill", replica=replica.name)
                until(lambda at=kill.at: storing_again(at), 60,
                      f"every worker's answers to be stored again after killing the {kill.target} of {kill.replica}")
                kill.recovered_in = time.monotonic() - kill.at
        finally:
            sent = traffic.stop(60)
        stop_all(*replicas)
    audit = export_and_verify(site, site.configs[0])
    assert_doubled_none(audit)

    outcomes = [s.outcome for s in sent]
    answered = [o for o in outcomes if o.status == 200]
    no_id = [o for o in answered if not o.interaction_id]
    assert not no_id, f"{len(no_id)} answers with status 200 carry no AI-Interaction-Id: {no_id[:3]}"

    def kill_of(outcome: Outcome) -> Kill | None:
        """The kill of the process that served ``outcome`` (it was alive when the request started)."""
        return next((k for k in kills if outcome.pid in k.pids and k.at >= outcome.started), None)

    complete = [o for o in answered if o.complete]
    missing = [o for o in complete if audit.interactions[o.interaction_id or ""] == 0]
    missing_survivors = [o for o in missing if kill_of(o) is None]
    missing_killed = [(o, kill_of(o)) for o in missing if kill_of(o) is not None]
    settled_missing = [o for o, k in missing_killed if k is not None and k.at - o.ended > SETTLED]
    known = {o.interaction_id for o in answered}
    unknown = set(audit.interactions) - known
    without_headers = sum(1 for o in outcomes if o.status is None)
    failovers = [round(k.storing_in, 2) for k in kills if k.target == "sequencer"]
    summary = (
        f"{len(outcomes)} requests, {len(complete)} answered in full, {without_headers} without an answer, "
        f"{len(answered) - len(complete)} cut-off 200s; kills (target, replica, requests in flight, s until a new "
        f"request was stored, s until every worker stored again): "
        f"{[(k.target, k.replica, k.in_flight, round(k.storing_in, 2), round(k.recovered_in, 1)) for k in kills]}; "
        f"failover after a sequencer kill: {failovers} s; missing from the ledger: {len(missing_survivors)} answered "
        f"by processes never killed, {len(missing_killed)} by killed ones (answered that many s before the kill: "
        f"{sorted(round(k.at - o.ended, 3) for o, k in missing_killed if k is not None)})"
    )
    print(summary)
    assert not missing_survivors, f"answers of processes never killed are missing: {summary}; {missing_survivors[:3]}"
    assert not settled_missing, f"a killed process's settled answers are missing: {summary}; {settled_missing[:3]}"
    assert len(unknown) <= without_headers, (
        f"the ledger holds {len(unknown)} interactions nobody was told of, more than the {without_headers} requests "
        f"that got no answer: {summary}")
    slow = [k for k in kills if k.storing_in > FAILOVER_BOUND]
    assert not slow, f"records were not stored again within {FAILOVER_BOUND} s of a kill: {summary}"
    assert len(complete) >= 12 * rounds, summary


# -- 3. PostgreSQL unreachable for 10 s -------------------------------------------------------------------------


@dataclass
class Policy:
    """One replica serving through the proxy with one failure policy, on a ledger of its own."""

    failure: str
    site: Site
    replica: Replica
    traffic: Traffic | None = None


def test_postgres_unreachable_for_ten_seconds(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    """The database goes away for 10 s (a proxy resets every connection to it and refuses new ones).

    Two services, each a replica of two workers on a ledger of its own, behind the same proxy,
    under load from two threads each: one with the middleware's default ``fail_open``, one with
    ``fail_closed``. During the outage ``fail_open`` answers every request and puts the records it
    cannot queue in the local spool (``<ledger path>.spool``); ``fail_closed`` answers 503. Once the
    database is back and more traffic came, the spool empties (replayed); after a clean stop each
    bundle verifies, and holds every interaction answered with 200, before, during and after the
    outage, exactly once (``fail_open``: every request; ``fail_closed``: every 200, not one
    acknowledged answer lost).
    """
    second_schema = f"{pg_schema}_closed"
    with proxied() as proxy:
        policies = []
        for failure, schema in (("fail_open", pg_schema), ("fail_closed", second_schema)):
            site = make_site(tmp_path / failure, proxy.url(), schema, replicas=1)
            variant = "app" if failure == "fail_open" else "fail_closed_app"
            policies.append(Policy(failure, site, Replica(failure, site.folders[0], variant=variant)))
        try:
            _outage(proxy, policies)
        finally:
            with pg_connect() as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {second_schema} CASCADE")


def _outage(proxy: Proxy, policies: list[Policy]) -> None:
    opened, closed = policies
    with running(*(p.replica for p in policies)):
        for policy in policies:
            policy.traffic = Traffic([policy.replica], threads=2).start()
        assert opened.traffic is not None and closed.traffic is not None
        try:
            for policy in policies:
                assert policy.traffic is not None
                policy.traffic.wait_answers(20, 0.0, 60, f"from {policy.failure} before the outage")
            cut_at = time.monotonic()
            severed = proxy.cut()
            assert severed > 0, "no connection to the database went through the proxy"

            def outage_over() -> bool:
                return (time.monotonic() - cut_at >= OUTAGE and spool_lines(opened.site.folders[0]) > 0
                        and any(s.outcome.status == 503 for s in closed.traffic.sent if s.outcome.started > cut_at))

            until(outage_over, OUTAGE + 30, "the outage to last 10 s, with records spooled and 503s answered")
            spooled = spool_lines(opened.site.folders[0])
            restored_at = time.monotonic()
            proxy.restore()
            for policy in policies:
                assert policy.traffic is not None
                policy.traffic.wait_answers(20, restored_at, 60, f"from {policy.failure} after the outage")
            until(lambda: not (opened.site.folders[0] / "ledger.db.spool").exists(), 60,
                  "the spooled records to be replayed once the database was back")
        finally:
            sent = {policy.failure: policy.traffic.stop(60) for policy in policies if policy.traffic is not None}
        stop_all(*(p.replica for p in policies))
    assert_clean_logs(*(p.replica for p in policies))

    during = {name: [s.outcome for s in batch if cut_at < s.outcome.started and s.outcome.ended < restored_at]
              for name, batch in sent.items()}
    statuses = {name: Counter(o.status for o in outcomes) for name, outcomes in during.items()}
    print(f"outage of {restored_at - cut_at:.1f} s, {severed} connections cut, {proxy.refused} refused; "
          f"{spooled} records spooled by fail_open; answers during the outage: {dict(statuses)}")

    # fail_open: everything answered, during the outage too; every interaction recorded once.
    outcomes = [s.outcome for s in sent["fail_open"]]
    bad = [o for o in outcomes if not (o.status == 200 and o.complete and o.interaction_id)]
    assert not bad, f"fail_open failed {len(bad)} of {len(outcomes)} requests, first: {bad[:3]}"
    assert len(during["fail_open"]) >= 10, f"fail_open answered only {len(during['fail_open'])} during the outage"
    audit = export_and_verify(opened.site, opened.site.configs[0])
    assert_exactly_once(audit, [o.interaction_id for o in outcomes if o.interaction_id], "fail_open")
    assert 0 == spool_lines(opened.site.folders[0])

    # fail_closed: 503 during the outage (once a worker saw the database gone), nothing answered lost.
    outcomes = [s.outcome for s in sent["fail_closed"]]
    answered = [o for o in outcomes if o.status == 200]
    others = Counter(o.status for o in outcomes if o.status != 200)
    assert set(others) <= {503}, f"fail_closed answered {dict(others)} besides 200 and 503"
    assert statuses["fail_closed"][503] >= 10, f"fail_closed answered only {dict(statuses['fail_closed'])} in the outage"
    # A worker learns the database is gone from its first record that cannot be queued: at most a
    # few answers per worker are 200 during the outage (their records wait in memory, not lost).
    assert statuses["fail_closed"][200] <= 4 * WORKERS, f"fail_closed kept answering 200: {dict(statuses['fail_closed'])}"
    incomplete = [o for o in answered if not (o.complete and o.interaction_id)]
    assert not incomplete, f"fail_closed cut off {len(incomplete)} of its 200s: {incomplete[:3]}"
    audit = export_and_verify(closed.site, closed.site.configs[0])
    assert_exactly_once(audit, [o.interaction_id for o in answered if o.interaction_id], "fail_closed")


# -- 4. the requests desk across replicas -------------------------------------------------------------------


def test_the_requests_desk_is_shared_by_replicas(tmp_path: Path, pg_url: str, pg_schema: str) -> None:
    """An explanation request made through replica A is visible through replica B within 1 s, and
    every later step shows on the other replica: a review started on B's operator endpoint, an
    answer given with ``aiobligations requests answer`` from a shell with B's profile (one more
    process on the ledger), a complaint made through B, its resolution on A's operator endpoint.
    Each step's operator is recorded, and the log still verifies."""
    site = make_site(tmp_path, pg_url, pg_schema)
    env = {"AIOBLIGATIONS_OPERATOR_TOKENS": f"op-7:{OPERATOR_TOKEN}"}
    a = Replica("replica-a", site.folders[0], env=env)
    b = Replica("replica-b", site.folders[1], env=env)
    me = {"Authorization": "Bearer alice-api-key"}
    operator = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with running(a, b), httpx.Client(base_url=a.base_url, timeout=REQUEST_TIMEOUT) as on_a, \
            httpx.Client(base_url=b.base_url, timeout=REQUEST_TIMEOUT) as on_b:
        with openai.OpenAI(base_url=f"{a.base_url}/v1", api_key="alice-api-key", max_retries=0,
                           timeout=REQUEST_TIMEOUT) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="toy-1", messages=[{"role": "user", "content": "Why was my loan refused?"}])
        interaction_id = raw.headers["ai-interaction-id"]
        until(lambda: stored_ids(site.schema, [interaction_id]), 30, "the interaction to be stored")

        asked = on_a.post("/ai/explanations", headers=me, json={"interaction_id": interaction_id,
                                                                "question": "Why did it say no?"})
        asked_at = time.monotonic()
        assert 201 == asked.status_code, asked.text
        request_id = asked.json()["id"]

        def seen(client: httpx.Client, status: str) -> Callable[[], bool]:
            def check() -> bool:
                response = client.get(f"/ai/explanations/{request_id}", headers=me)
                return response.status_code == 200 and response.json()["status"] == status
            return check

        until(seen(on_b, "received"), 5, "replica B to show the request made through replica A")
        visible_in = time.monotonic() - asked_at
        print(f"a request made through replica A was visible through replica B after {visible_in:.3f} s")
        assert visible_in <= 1.0, f"replica B showed the request after {visible_in:.2f} s, not within 1 s"
        listed = on_b.get("/ai/operator/requests", headers=operator)
        assert 200 == listed.status_code and request_id in listed.text, listed.text
        reviewed = on_b.post(f"/ai/operator/requests/{request_id}/review", headers=operator)
        assert 200 == reviewed.status_code, reviewed.text
        until(seen(on_a, "in_review"), 5, "replica A to show the review started on replica B")

        answer = subprocess.run([CLI, "requests", "answer", request_id, "--text", "The toy model counts words.",
                                 "--by", "op-1", "--config", str(site.configs[1])],
                                check=False, capture_output=True, text=True, timeout=120, cwd=site.folders[1])
        assert 0 == answer.returncode, f"requests answer failed:\n{answer.stdout}{answer.stderr}"
        answered_at = time.monotonic()
        until(seen(on_a, "answered"), 5, "replica A to show the operator's answer")
        until(seen(on_b, "answered"), 5, "replica B to show the operator's answer")
        print(f"the operator's answer showed on both replicas after {time.monotonic() - answered_at:.3f} s")
        shown = on_a.get(f"/ai/explanations/{request_id}", headers=me).json()
        assert "The toy model counts words." == shown["answer"], shown

        complained = on_b.post(f"/ai/explanations/{request_id}/complaints", headers=me,
                               json={"text": "That does not explain it."})
        assert 200 == complained.status_code, complained.text
        until(seen(on_a, "complained"), 5, "replica A to show the complaint made through replica B")
        resolved = on_a.post(f"/ai/operator/requests/{request_id}/resolve", headers=operator,
                             json={"outcome": "We looked again: the model ignores your data."})
        assert 200 == resolved.status_code, resolved.text
        until(seen(on_b, "resolved"), 5, "replica B to show the resolution made on replica A")
        history = on_b.get(f"/ai/operator/requests/{request_id}", headers=operator).json()["history"]
        assert ["received", "in_review", "answered", "complained", "resolved"] == [s["step"] for s in history], history
        assert [None, "op-7", "op-1", "subject", "op-7"] == [step.get("by") for step in history], history
        stop_all(a, b)
    assert_clean_logs(a, b)
    shown = subprocess.run([CLI, "requests", "show", request_id, "--json", "--config", str(site.configs[0])],
                           check=False, capture_output=True, text=True, timeout=120, cwd=site.folders[0])
    assert 0 == shown.returncode, shown.stderr
    assert "resolved" == json.loads(shown.stdout)["status"]
    export_and_verify(site, site.configs[0])


# -- 5. reads right after the database returns -------------------------------------------------------------


def test_reads_work_at_once_when_the_database_returns(pg_url: str, pg_schema: str) -> None:
    """Pooled read connections that died while idle (an outage as above, a database restart) cost
    no error once the database is back: the request endpoints, receipts, rate limits and the
    sequencer's election all read through the pool, and each dead connection handed out would
    fail one of them (a 503 from the request endpoints) although the database answers again."""
    from aiobligations.ledger.postgres import PostgresStore

    with proxied() as proxy:
        store = PostgresStore(proxy.url(), schema=pg_schema, pool_size=3)
        try:
            store.open()
            # Fill the pool: three reads at once, each holding a connection.
            barrier = threading.Barrier(3)

            def read_together() -> None:
                with store._reads() as conn:
                    barrier.wait(30)
                    conn.execute("SELECT 1")

            readers = [threading.Thread(target=read_together) for _ in range(3)]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(30)
            assert proxy.cut() >= 3, "the pool did not hold three connections"
            proxy.restore()
            assert [(0, None)] * 4 == [store.tree_head() for _ in range(4)]
        finally:
            store.close()
