"""Token buckets for the request endpoints: their shape, the defaults and the in-process limiter.

Buckets shared by every worker of a host live in :mod:`aiobligations.sharedstate`, and by every
replica in :mod:`aiobligations.replicastate`; all three have the same interface.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiobligations.errors import ConfigurationError

__all__ = [
    "DEFAULT_ADDRESS_LIMIT",
    "DEFAULT_GLOBAL_LIMIT",
    "DEFAULT_SUBJECT_LIMIT",
    "GLOBAL_KEY",
    "RateLimit",
    "RateLimiter",
]


@dataclass(frozen=True)
class RateLimit:
    """
    A token bucket's shape: ``rate`` requests per ``period`` seconds, at most ``burst`` at once.

    .. versionadded:: 0.1.0
    """

    rate: float
    burst: int
    period: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("rate", "period"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"RateLimit.{name} must be a positive number, got {value!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ConfigurationError(f"RateLimit.burst must be an int, 1 or more, got {self.burst!r}")

    @property
    def per_second(self) -> float:
        """How many requests a bucket regains each second."""
        return self.rate / self.period


DEFAULT_SUBJECT_LIMIT = RateLimit(10, 5)
"""Per subject: 10 requests an hour, 5 at once."""

DEFAULT_ADDRESS_LIMIT = RateLimit(60, 20)
"""Per client address: 60 requests an hour, 20 at once."""

DEFAULT_GLOBAL_LIMIT = RateLimit(600, 120, period=60.0)
"""For the whole service, every subject and address together: 600 ledger-writing POSTs a minute,
120 at once. It bounds what rotating addresses or identities can write to the ledger; size it to
the service (``global_limit=``)."""

GLOBAL_KEY = "all"


class RateLimiter:
    """
    Token buckets in memory, one per key, for at most ``max_keys`` keys (least recently used go).

    An evicted key starts again with a full bucket, so ``max_keys`` should exceed the keys active in
    a ``period``. Thread-safe.

    Args:
        limit: The buckets' shape.
        max_keys: How many keys to remember.
        clock: Monotonic seconds (default :func:`time.monotonic`); tests pass their own.

    .. versionadded:: 0.1.0
    """

    def __init__(self, limit: RateLimit, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(f"max_keys must be an int, 1 or more, got {max_keys!r}")
        self.limit = limit
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.limit.burst)
        tokens, at = entry
        return min(float(self.limit.burst), tokens + max(0.0, now - at) * self.limit.per_second)

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may make a request (0 when it may now). Takes nothing."""
        with self._lock:
            now = self.clock() if now is None else now
            level = self._level(key, now)
            return 0.0 if level >= 1.0 else (1.0 - level) / self.limit.per_second

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s bucket (callers check :meth:`wait` first)."""
        with self._lock:
            now = self.clock() if now is None else now
            self._buckets[key] = (max(0.0, self._level(key, now) - 1.0), now)
            self._buckets.move_to_end(key)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)

    def acquire(self, key: str) -> float:
        """Take one request if allowed and return 0, else take nothing and return the seconds to wait."""
        with self._lock:
            now = self.clock()
            waiting = self.wait(key, now)
            if waiting == 0.0:
                self.take(key, now)
            return waiting
