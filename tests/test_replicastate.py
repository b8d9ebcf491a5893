"""Rate limits shared by replicas through the ledger's PostgreSQL schema (aiobligations.replicastate)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aiobligations.ledger.postgres import PostgresStore
from aiobligations.middleware.requests import RateLimit
from aiobligations.replicastate import PostgresRateLimiter, acquire_all_postgres

SECRET = b"replica-secret"


@pytest.fixture
def stores(pg_url: str, pg_schema: str) -> Iterator[list[PostgresStore]]:
    """Two stores on one schema: what two replicas on two hosts hold."""
    opened = [PostgresStore(pg_url, schema=pg_schema) for _ in range(2)]
    opened[0].open()
    opened[1].open()
    yield opened
    for store in opened:
        store.close()


def test_two_replicas_spend_one_bucket(stores: list[PostgresStore]) -> None:
    """A key's burst is shared: what one replica spent, the other cannot spend again."""
    limit = RateLimit(rate=1, burst=3, period=3600)
    a = PostgresRateLimiter(limit, stores[0], SECRET, "subject")
    b = PostgresRateLimiter(limit, stores[1], SECRET, "subject")
    answers = [a.acquire("user:1"), b.acquire("user:1"), a.acquire("user:1"), b.acquire("user:1")]
    assert answers[:3] == [0.0, 0.0, 0.0]
    assert 3000 < answers[3] <= 3600  # About an hour for the next token at 1 per hour.
    assert b.wait("user:2") == 0.0  # Another key has its own bucket.


def test_concurrent_acquires_are_exact(stores: list[PostgresStore]) -> None:
    """Sixteen threads on two replicas race for one bucket of 5: exactly 5 win."""
    limit = RateLimit(rate=1, burst=5, period=3600)
    limiters = [PostgresRateLimiter(limit, store, SECRET, "address") for store in stores]
    start = threading.Barrier(16)
    won: list[float] = []
    lock = threading.Lock()

    def race(n: int) -> None:
        start.wait()
        wait = limiters[n % 2].acquire("203.0.113.9")
        with lock:
            won.append(wait)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for wait in won if wait == 0.0) == 5


def test_all_or_nothing_and_no_key_stored(stores: list[PostgresStore], pg_url: str) -> None:
    """acquire_all takes from every bucket or from none; the table holds digests, never the keys."""
    subjects = PostgresRateLimiter(RateLimit(rate=1, burst=1, period=3600), stores[0], SECRET, "subject")
    addresses = PostgresRateLimiter(RateLimit(rate=1, burst=5, period=3600), stores[0], SECRET, "address")
    assert acquire_all_postgres([(subjects, "user:9"), (addresses, "198.51.100.1")]) == [0.0, 0.0]
    refused = acquire_all_postgres([(subjects, "user:9"), (addresses, "198.51.100.1")])
    assert refused[0] > 0 and refused[1] == 0.0
    # The address bucket was not spent by the refused call: 4 tokens are left of 5.
    assert [addresses.acquire("198.51.100.1") for _ in range(5)].count(0.0) == 4
    rows = stores[0]._query(f"SELECT namespace, mark FROM {stores[0].schema}.rate_limits")
    assert {ns for ns, _ in rows} == {"subject", "address"}
    for _, mark in rows:
        assert b"user:9" not in bytes(mark) and b"198.51.100.1" not in bytes(mark)


def test_request_endpoints_limit_across_replicas(stores: list[PostgresStore]) -> None:
    """RequestEndpoints given the ledger's store use the shared buckets (not per-process ones)."""
    from aiobligations.middleware.requests import RequestEndpoints

    endpoints = [RequestEndpoints(lambda: None, prefix="/ai", subject_of=lambda scope: "user:1",  # type: ignore[arg-type, return-value]
                                  shared_secret=SECRET, shared_store=store) for store in stores]
    assert all(isinstance(e.subject_limiter, PostgresRateLimiter) for e in endpoints)
    scope = {"client": ("192.0.2.1", 1234)}
    allowed = 0
    for n in range(8):
        try:
            endpoints[n % 2]._limit(scope, "user:1")
            allowed += 1
        except Exception as exc:  # noqa: BLE001 - the 429 is a private exception class.
            assert getattr(exc, "status", None) == 429
    assert allowed == 5  # The default subject burst, shared by both replicas.
