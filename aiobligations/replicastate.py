"""Rate limits shared by every replica of a service, kept in the ledger's PostgreSQL schema.

On one host, the request endpoints' token buckets live in a mapped file
(:class:`aiobligations.sharedstate.SharedRateLimiter`). Replicas on several hosts share no file,
so with ``[ledger] url`` the buckets live in the ledger's database instead: one row per key and
namespace, checked and spent by one call of the schema's ``rate_acquire`` function, under row
locks, on the database's clock (the one clock every host shares). Exact across replicas, at the
cost of one round trip per POST to the request endpoints (never on the AI responses' path).

Keys (a subject's id, a client address) are never stored: a row holds a keyed BLAKE2b digest of
the key under the same secret as the shared-state file.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError, LedgerError

__all__ = ["PostgresRateLimiter", "acquire_all_postgres"]

_SWEEP_EVERY = 1000
"""Every so many calls, rows untouched for a day are deleted (their buckets are full again)."""


class PostgresRateLimiter:
    """Token buckets for every replica using one PostgreSQL ledger: the interface of ``RateLimiter``.

    Args:
        limit: The buckets' shape (``aiobligations.middleware.requests.RateLimit``).
        store: The ledger's :class:`~aiobligations.ledger.postgres.PostgresStore`.
        secret: The digests' key; every replica must use the same one.
        namespace: The table's name (``"subject"``, ``"address"``): keys of two namespaces never
            share a bucket.

    Example:
        >>> limiter = PostgresRateLimiter(RateLimit(10, 5), store, secret, "subject")  # doctest: +SKIP
        >>> limiter.acquire("user:42")  # doctest: +SKIP
        0.0

    .. versionadded:: 0.3.0
    """

    def __init__(self, limit: Any, store: Any, secret: bytes, namespace: str) -> None:
        if not isinstance(namespace, str) or not namespace.isidentifier():
            raise ConfigurationError(f"namespace must be an identifier, got {namespace!r}")
        if not isinstance(secret, bytes) or not secret:
            raise ConfigurationError("secret must be non-empty bytes")
        self.limit = limit
        self.store = store
        self.namespace = namespace
        self._secret = hashlib.blake2b(secret, digest_size=32).digest()
        self._calls = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresRateLimiter({self.namespace!r}, {self.store!r})"

    def mark(self, key: str) -> bytes:
        """The digest that stands for ``key`` in the table."""
        return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), key=self._secret, digest_size=16,
                               person=b"aiob-ratelimit").digest()

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may make a request (0 when it may now). Takes nothing."""
        return _call([(self, key)], spend=False)[0]

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s bucket if it has one (prefer :meth:`acquire`)."""
        _call([(self, key)], spend=True)

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one request if allowed and return 0, else take nothing and return the seconds to wait."""
        return _call([(self, key)], spend=True)[0]

    def close(self) -> None:
        """Nothing to release (the store's connections belong to the ledger)."""


def acquire_all_postgres(checks: Sequence[tuple[PostgresRateLimiter, str]], now: float | None = None) -> list[float]:
    """Take one request from each ``(limiter, key)`` if every one allows it, else take none.

    One call, one transaction: exact for every replica at once. Returns each key's wait, in order
    (all 0.0 when the requests were taken).

    Raises:
        LedgerError: the database cannot be reached.
    """
    return _call(checks, spend=True)


def _call(checks: Sequence[tuple[PostgresRateLimiter, str]], *, spend: bool) -> list[float]:
    if not checks:
        return []
    store = checks[0][0].store
    rows = [(limiter.namespace, limiter.mark(key), float(limiter.limit.burst), limiter.limit.per_second, position)
            for position, (limiter, key) in enumerate(checks)]
    ordered = sorted(rows)  # One global locking order: two callers never wait on each other in a cycle.
    sql = f"SELECT {store.schema}.rate_acquire(%s::text[], %b::bytea[], %s::float8[], %s::float8[], %s)"
    params = ([r[0] for r in ordered], [r[1] for r in ordered], [r[2] for r in ordered], [r[3] for r in ordered], spend)
    waits = store._query(sql, params)[0][0]
    result = [0.0] * len(checks)
    for row, wait in zip(ordered, waits, strict=True):
        result[row[4]] = float(wait)
    limiter = checks[0][0]
    with limiter._lock:
        limiter._calls += 1
        sweep = limiter._calls % _SWEEP_EVERY == 0
    if sweep:
        try:
            store._query(f"DELETE FROM {store.schema}.rate_limits WHERE at < "
                         "extract(epoch FROM clock_timestamp()) - 86400 RETURNING 1")
        except LedgerError:
            pass
    return result
