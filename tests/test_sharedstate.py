"""State shared by the worker processes of one host: first-contact marks and rate-limit buckets.

Processes are real (``spawn``, and ``os.fork`` inside a spawned one); they start together on a
barrier and report through pipes, never after a sleep.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import stat
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from aiobligations import Obligations
from aiobligations.errors import ConfigurationError
from aiobligations.keys import init_project
from aiobligations.middleware import ObligationsMiddleware
from aiobligations.middleware.requests import RateLimit, RateLimiter, RequestEndpoints
from aiobligations.sharedstate import (
    MAGIC,
    WAYS,
    FirstContacts,
    SharedRateLimiter,
    acquire_all,
    shared_state_of,
)

SECRET = b"test-secret-of-this-host"
NEVER = 1e9  # A period so long that no bucket refills during a test.


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db.shared")


# -- running code in other processes -------------------------------------------------------------


def _child(conn: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", target(*args)))
    except BaseException as exc:  # Reported to the test, which fails with it.
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def in_processes(calls: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """Run each ``target(*args)`` in its own spawned process, all at once; return their results in order."""
    context = multiprocessing.get_context("spawn")
    started = []
    for target, args in calls:
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(sender, target, args))
        process.start()
        sender.close()
        started.append((process, receiver))
    results = []
    for process, receiver in started:
        assert receiver.poll(120), "a worker process did not answer"
        status, value = receiver.recv()
        process.join(60)
        assert "ok" == status, value
        results.append(value)
    return results


def spawn_barrier(parties: int) -> Any:
    return multiprocessing.get_context("spawn").Barrier(parties)


# -- the workers (module level: a spawned process imports them) ---------------------------------


def _first(path: str, secret: bytes, subjects: list[str], slots: int = 1 << 12) -> list[bool]:
    with FirstContacts(path, secret, slots=slots) as contacts:
        return [contacts.first(subject) for subject in subjects]


ROUNDS = 20  # Each a fresh key, all processes released together: a lost update shows in some round.


def _hammer(path: str, secret: bytes, barrier: Any, attempts: int) -> list[int]:
    limiter = SharedRateLimiter(RateLimit(1, 5, period=NEVER), path, secret, "subject")
    taken = []
    for round_ in range(ROUNDS):
        barrier.wait(60)
        taken.append(sum(limiter.acquire(f"alice-{round_}") == 0.0 for _ in range(attempts)))
    return taken


def _hammer_both(path: str, secret: bytes, barrier: Any, attempts: int, subject: str) -> list[int]:
    subjects = SharedRateLimiter(RateLimit(1, 3, period=NEVER), path, secret, "subject")
    addresses = SharedRateLimiter(RateLimit(1, 5, period=NEVER), path, secret, "address")
    taken = []
    for round_ in range(ROUNDS):
        barrier.wait(60)
        checks = [(subjects, f"{subject}-{round_}"), (addresses, f"203.0.113.{round_}")]
        taken.append(sum(max(acquire_all(checks)) == 0.0 for _ in range(attempts)))
    return taken


def _create_together(path: str, secret: bytes, barrier: Any, name: str) -> tuple[bool, bool]:
    barrier.wait(60)
    contacts = FirstContacts(path, secret, slots=1 << 12)
    limiter = SharedRateLimiter(RateLimit(1, 1, period=NEVER), path, secret, f"ns-{name}", slots=64)
    return contacts.first(name), limiter.acquire("k") == 0.0


def _fork_and_share(path: str, secret: bytes) -> tuple[int, bool, int]:
    """Open both tables, fork; the child marks and spends; the parent sees it."""
    contacts = FirstContacts(path, secret, slots=1 << 12)
    limiter = SharedRateLimiter(RateLimit(1, 5, period=NEVER), path, secret, "subject")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the forked child.
        code = 1
        try:
            marked = contacts.first("forked")
            spent = [limiter.acquire("k") for _ in range(3)]
            code = 0 if marked and spent == [0.0, 0.0, 0.0] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), contacts.first("forked"), sum(
        limiter.acquire("k") == 0.0 for _ in range(10))


async def _completion_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive())["type"] != "http.request":
        pass
    body = json.dumps({"id": "c1", "object": "chat.completion", "model": "toy-1",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _long_notices(app: Any, headers: list[dict[str, str]]) -> list[bool]:
    """POST a chat completion with each set of headers; whether each answer had the long notice."""
    async def flow() -> list[bool]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            answers = [await http.post("/v1/chat/completions", headers=h, json={"model": "toy-1"}) for h in headers]
        return ["first_contact_notice" in answer.json()["ai_disclosure"] for answer in answers]

    return asyncio.run(flow())


def _serve(profile: str, keys: list[str]) -> list[bool]:
    """One worker: its own hub and middleware on the shared profile; one request per API key."""
    hub = Obligations.from_file(profile)
    try:
        app = ObligationsMiddleware(_completion_app, obligations=hub)
        return _long_notices(app, [{"Authorization": f"Bearer {key}"} for key in keys])
    finally:
        hub.close()


# -- first contacts ------------------------------------------------------------------------------


def test_a_subject_is_first_once_and_a_subject_never_marked_always_is(path: str) -> None:
    contacts = FirstContacts(path, SECRET)  # 1 << 20 slots: no bucket of 4 overflows with 10 000.

    assert [True, False, False] == [contacts.first("user:alice") for _ in range(3)]
    assert all(contacts.first(f"user:{i}") for i in range(10_000))
    assert not any(contacts.first(f"user:{i}") for i in range(10_000))
    status = os.stat(path)
    assert 0o600 == stat.S_IMODE(status.st_mode)
    assert status.st_blocks * 512 < status.st_size  # Sparse: only touched pages take space.


def test_no_subject_is_stored_and_another_secret_sees_no_marks(path: str) -> None:
    FirstContacts(path, SECRET).first("user:alice-canary-4711")
    SharedRateLimiter(RateLimit(1, 2), path, SECRET, "address").take("203.0.113.250")

    data = Path(path).read_bytes()
    assert b"alice-canary" not in data and b"203.0.113.250" not in data
    assert [True] == _first(path, b"another-secret", ["user:alice-canary-4711"], slots=1 << 20)


def test_processes_share_marks(path: str) -> None:
    (a,) = in_processes([(_first, (path, SECRET, ["user:a", "user:b"]))])
    b, c = in_processes([(_first, (path, SECRET, ["user:a", "user:c"])),
                         (_first, (path, SECRET, ["user:b", "user:d"]))])

    assert [True, True] == a
    assert [False, True] == b  # B sees what A marked; a subject never marked is first.
    assert [False, True] == c
    assert [False] * 4 == _first(path, SECRET, ["user:a", "user:b", "user:c", "user:d"])


def test_more_subjects_than_slots_only_over_disclose(path: str) -> None:
    contacts = FirstContacts(path, SECRET, slots=64)

    assert all(contacts.first(f"user:{i}") for i in range(5_000))
    again = [contacts.first(f"user:{i}") for i in range(5_000)]
    never = [contacts.first(f"someone-else:{i}") for i in range(5_000)]

    assert all(never)  # Nobody who was never marked is taken for marked.
    assert again.count(False) <= 64  # Most marks were overwritten: those people see the long notice again.


def test_a_fork_shares_the_tables(path: str) -> None:
    (result,) = in_processes([(_fork_and_share, (path, SECRET))])

    assert (0, False, 2) == result  # The child marked and spent 3 of 5; the parent sees both.


def test_processes_creating_the_file_together_share_one(tmp_path: Path, path: str) -> None:
    barrier = spawn_barrier(4)
    results = in_processes([(_create_together, (path, SECRET, barrier, f"p{i}")) for i in range(4)])

    assert [(True, True)] * 4 == results
    assert [False] * 4 == _first(path, SECRET, [f"p{i}" for i in range(4)])
    assert ["ledger.db.shared"] == os.listdir(tmp_path)  # No temporary file left behind.
    head = Path(path).read_bytes()[:4096]
    assert MAGIC == head[:8]
    count = struct.unpack_from("<I", head, 16)[0]
    names = sorted(head[64 + 64 * i:96 + 64 * i].rstrip(b"\0").decode() for i in range(count))
    assert ["first-contacts", "rate/ns-p0", "rate/ns-p1", "rate/ns-p2", "rate/ns-p3"] == names


# -- rate limits ---------------------------------------------------------------------------------


def test_the_limit_holds_exactly_across_four_processes(path: str) -> None:
    barrier = spawn_barrier(4)
    taken = in_processes([(_hammer, (path, SECRET, barrier, 50)) for _ in range(4)])

    assert [5] * ROUNDS == [sum(counts) for counts in zip(*taken, strict=True)]


def test_both_limits_hold_exactly_and_a_refusal_spends_nothing_across_processes(path: str) -> None:
    barrier = spawn_barrier(4)
    taken = in_processes([(_hammer_both, (path, SECRET, barrier, 40, f"s{i}")) for i in range(4)])
    addresses = SharedRateLimiter(RateLimit(1, 5, period=NEVER), path, SECRET, "address")

    # Each round: the address's 5 in all, no subject more than its 3.
    assert [5] * ROUNDS == [sum(counts) for counts in zip(*taken, strict=True)]
    assert max(max(counts) for counts in taken) <= 3
    assert all(addresses.wait(f"203.0.113.{round_}") > 0 for round_ in range(ROUNDS))

    barrier = spawn_barrier(4)
    path2 = path + "2"
    taken = in_processes([(_hammer_both, (path2, SECRET, barrier, 40, "alice")) for _ in range(4)])
    addresses = SharedRateLimiter(RateLimit(1, 5, period=NEVER), path2, SECRET, "address")

    # Each round: Alice's 3; her refused attempts left the address its other 2.
    assert [3] * ROUNDS == [sum(counts) for counts in zip(*taken, strict=True)]
    for round_ in range(ROUNDS):
        address = f"203.0.113.{round_}"
        assert [0.0, 0.0] == [addresses.acquire(address) for _ in range(2)]
        assert 0 < addresses.acquire(address)


def test_the_limit_holds_exactly_across_threads_and_objects_of_one_process(path: str) -> None:
    limiters = [SharedRateLimiter(RateLimit(1, 5, period=NEVER), path, SECRET, "subject") for _ in range(2)]
    counts = [0] * 8
    barrier = threading.Barrier(8)

    def hammer(index: int) -> None:
        barrier.wait(60)
        counts[index] = sum(limiters[index % 2].acquire("alice") == 0.0 for _ in range(200))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert 5 == sum(counts)


def test_the_same_interface_as_rate_limiter(path: str) -> None:
    clock = [1000.0]
    limiter = SharedRateLimiter(RateLimit(2, 2, period=10), path, SECRET, "subject", clock=lambda: clock[0])

    assert 0 == limiter.acquire("a") == limiter.acquire("a")
    assert 5.0 == limiter.acquire("a")  # 2 per 10 s: one every 5 s.
    assert 5.0 == limiter.wait("a")
    clock[0] += 5
    assert 0 == limiter.wait("a") == limiter.acquire("a")
    limiter.take("a")  # Spends even when empty, like RateLimiter.take; never below zero.
    assert 5.0 == limiter.wait("a")
    assert (limiter.limit, limiter.clock()) == (RateLimit(2, 2, period=10), 1005.0)
    # Another process's clock read earlier than the last write: no second is refilled twice.
    assert 5.0 == limiter.wait("a", now=1001.0)


def test_eviction_takes_a_full_bucket_first_else_the_one_full_soonest(path: str) -> None:
    # One bucket of 4 slots; 1 request per 100 s, 2 at once: a bucket refills in 200 s.
    limiter = SharedRateLimiter(RateLimit(1, 2, period=100), path, SECRET, "tiny", slots=WAYS)
    limiter.acquire("a", now=1000.0)  # Full again at 1100.
    for key in "bcd":
        assert [0.0, 0.0] == [limiter.acquire(key, now=1060.0) for _ in range(2)]  # Full again at 1260.

    assert 0.0 == limiter.acquire("e", now=1150.0)  # Takes "a"'s slot: "a" was full again, nothing lost.
    assert all(limiter.wait(key, now=1150.0) > 0 for key in "bcd")
    assert 0.0 == limiter.acquire("f", now=1150.0)  # Evicts "e" (full again at 1250, the soonest).
    assert all(limiter.wait(key, now=1150.0) > 0 for key in "bcd")
    assert 0.0 == limiter.wait("e", now=1150.0)  # The documented cost: an evicted key starts full.


def test_two_endpoints_share_their_limits(tmp_path: Path, path: str) -> None:
    hub = Obligations.from_file(init_project(tmp_path / "project"))
    try:
        clock = [1000.0]

        def app(**options: Any) -> RequestEndpoints:
            return RequestEndpoints(lambda: hub.requests, prefix="/ai", subject_of=lambda scope: "alice",
                                    clock=lambda: clock[0], shared_path=path, shared_secret=SECRET, **options)

        one, two = app(), app()
        assert isinstance(one.subject_limiter, SharedRateLimiter)
        assert isinstance(one.address_limiter, SharedRateLimiter)

        async def post(endpoint: RequestEndpoints) -> int:
            transport = httpx.ASGITransport(app=endpoint, client=("203.0.113.7", 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                return (await http.post("/ai/complaints", json={"category": "general", "text": "Hi."})).status_code

        codes = [asyncio.run(post(endpoint)) for endpoint in (one, two, one, two, one, two)]
        assert [201] * 5 + [429] == codes  # 5 at once per subject, whichever worker answers.
    finally:
        hub.close()


def test_endpoints_fall_back_to_memory_when_the_file_cannot_be_made(tmp_path: Path) -> None:
    no_desk: Any = lambda: None
    with capture_logs() as logs:
        endpoint = RequestEndpoints(no_desk, prefix="/ai", subject_of=lambda scope: None,
                                    shared_path=str(tmp_path / "missing" / "ledger.db.shared"), shared_secret=SECRET)

    assert isinstance(endpoint.subject_limiter, RateLimiter) and isinstance(endpoint.address_limiter, RateLimiter)
    assert [("shared_state_unavailable", "rate_limits")] == [
        (entry["event"], entry["part"]) for entry in logs if entry["log_level"] == "warning"]
    with pytest.raises(ConfigurationError):
        RequestEndpoints(no_desk, prefix="/ai", subject_of=lambda scope: None, shared_path=str(tmp_path / "x.shared"))


# -- files that are not ours ---------------------------------------------------------------------


def _open_both(path: str, slots: int = 1 << 12) -> None:
    FirstContacts(path, SECRET, slots=slots).close()
    SharedRateLimiter(RateLimit(1, 1), path, SECRET, "subject", slots=slots).close()


@pytest.mark.parametrize("opener", [
    lambda path: FirstContacts(path, SECRET, slots=1 << 12),
    lambda path: SharedRateLimiter(RateLimit(1, 1), path, SECRET, "subject", slots=1 << 12),
], ids=["first_contacts", "rate_limiter"])
def test_files_that_are_not_ours_are_refused_and_left_alone(tmp_path: Path, path: str,
                                                            opener: Callable[[str], Any]) -> None:
    real = tmp_path / "real.shared"
    _open_both(str(real))
    before = real.read_bytes()

    os.symlink(real, path)  # Even to a good file: a link could point anywhere.
    with pytest.raises(ConfigurationError, match="symbolic link"):
        opener(path)
    os.unlink(path)
    os.symlink(tmp_path / "nowhere", path)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        opener(path)
    assert not (tmp_path / "nowhere").exists() and before == real.read_bytes()
    os.unlink(path)

    os.mkfifo(path)  # Refused at once: opening a FIFO must not block.
    with pytest.raises(ConfigurationError, match="FIFO"):
        opener(path)
    os.unlink(path)
    os.mkdir(path)
    with pytest.raises(ConfigurationError, match="folder"):
        opener(path)
    os.rmdir(path)

    for foreign in (b"", b"SQLite format 3\0" + bytes(8192)):
        Path(path).write_bytes(foreign)
        with pytest.raises(ConfigurationError, match="not an aiobligations shared-state file"):
            opener(path)
        assert foreign == Path(path).read_bytes()  # Never overwritten.

    newer = bytearray(before)
    newer[8:12] = struct.pack("<I", 2)
    Path(path).write_bytes(bytes(newer))
    with pytest.raises(ConfigurationError, match="layout version 2"):
        opener(path)
    assert bytes(newer) == Path(path).read_bytes()

    Path(path).write_bytes(before[:4096])  # Truncated: its tables no longer fit.
    with pytest.raises(ConfigurationError, match="does not fit"):
        opener(path)

    os.unlink(path)  # The fix the messages give: delete it.
    opener(path).close()


def test_a_table_of_another_size_is_refused(path: str) -> None:
    _open_both(path, slots=1 << 12)

    with pytest.raises(ConfigurationError, match="same sizes"):
        FirstContacts(path, SECRET, slots=1 << 13)
    with pytest.raises(ConfigurationError, match="same sizes"):
        SharedRateLimiter(RateLimit(1, 1), path, SECRET, "subject", slots=1 << 13)
    for bad in (0, 6, True, 2.0):
        with pytest.raises(ConfigurationError):
            FirstContacts(path, SECRET, slots=bad)  # type: ignore[arg-type]
    for secret in (b"", "text"):
        with pytest.raises(ConfigurationError):
            FirstContacts(path, secret)  # type: ignore[arg-type]
    for namespace in ("", "with space", "x" * 28, "é"):
        with pytest.raises(ConfigurationError):
            SharedRateLimiter(RateLimit(1, 1), path, SECRET, namespace)


# -- the middleware ------------------------------------------------------------------------------


def test_two_middlewares_in_two_processes_give_the_long_notice_once(tmp_path: Path) -> None:
    profile = str(init_project(tmp_path))

    # One after the other: a ledger has one writer, so two processes cannot hold it at once.
    (first,) = in_processes([(_serve, (profile, ["sk-alice"]))])
    (second,) = in_processes([(_serve, (profile, ["sk-alice", "sk-bob", "sk-bob"]))])

    assert [True] == first
    assert [False, True, False] == second
    assert (tmp_path / "ledger.db.shared").is_file()


def test_two_middlewares_of_one_process_share_marks_and_a_new_cookie_is_first(tmp_path: Path) -> None:
    hub = Obligations.from_file(init_project(tmp_path))
    try:
        one = ObligationsMiddleware(_completion_app, obligations=hub)
        two = ObligationsMiddleware(_completion_app, obligations=hub)
        alice = {"Authorization": "Bearer sk-alice"}
        assert [True, False] == _long_notices(one, [alice]) + _long_notices(two, [alice])

        async def with_cookie() -> tuple[bool, bool]:
            transport_one = httpx.ASGITransport(app=one)
            transport_two = httpx.ASGITransport(app=two)
            async with httpx.AsyncClient(transport=transport_one, base_url="http://t") as http:
                fresh = await http.post("/v1/chat/completions", json={})
            cookie = fresh.headers["set-cookie"].split(";")[0]
            async with httpx.AsyncClient(transport=transport_two, base_url="http://t") as http:
                again = await http.post("/v1/chat/completions", json={}, headers={"Cookie": cookie})
            return ("first_contact_notice" in fresh.json()["ai_disclosure"],
                    "first_contact_notice" in again.json()["ai_disclosure"])

        assert (True, False) == asyncio.run(with_cookie())
    finally:
        hub.close()


def test_a_symlink_beside_the_ledger_stops_the_middleware(tmp_path: Path) -> None:
    hub = Obligations.from_file(init_project(tmp_path))
    try:
        shared, _ = shared_state_of(hub)
        os.symlink(tmp_path / "elsewhere", shared)
        with pytest.raises(ConfigurationError, match="symbolic link"):
            ObligationsMiddleware(_completion_app, obligations=hub)
        assert not (tmp_path / "elsewhere").exists()
    finally:
        hub.close()


@pytest.fixture
def unwritable() -> Iterator[Callable[[Path], None]]:
    """Make a file unwritable: mode 0400, or ``chattr +i`` for root (who ignores modes)."""
    done: list[Path] = []

    def make(path: Path) -> None:
        if os.geteuid() != 0:
            path.chmod(0o400)
            return
        try:
            result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("chattr is not installed, so a file cannot be made unwritable for root")
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.strip()}")
        done.append(path)

    yield make
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], check=True, timeout=30)


def test_the_middleware_falls_back_to_its_own_marks_when_the_file_cannot_be_opened(
        tmp_path: Path, unwritable: Callable[[Path], None]) -> None:
    hub = Obligations.from_file(init_project(tmp_path))
    try:
        shared = Path(shared_state_of(hub)[0])
        shared.touch()
        unwritable(shared)
        with capture_logs() as logs:
            app = ObligationsMiddleware(_completion_app, obligations=hub)
        warnings = [(entry["event"], entry["part"]) for entry in logs if entry["log_level"] == "warning"]
        alice = {"Authorization": "Bearer sk-alice"}

        assert [True, False] == _long_notices(app, [alice, alice])
        assert [("shared_state_unavailable", "rate_limits"), ("shared_state_unavailable", "first_contacts")] == warnings
        assert isinstance(app.endpoints.requests.subject_limiter, RateLimiter)
        assert b"" == shared.read_bytes()
    finally:
        hub.close()
