"""What travels through a ledger's queue: items, waiters, and records built on the writer's side.

An item is a tuple ``(op, payload, waiter)``. The op says what it is (a record, a record to build,
a flush, an erasure, a signature, a maintenance call); the waiter is ``None`` (nobody waits), a
:class:`Waiter` (a thread waits), or ``(loop, future)`` (a coroutine waits). Writers release
waiters with :func:`release` once the item is durable, or failed.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from typing import Any

import structlog

from ..errors import LedgerError
from .records import PreparedRecord, prepare

log = structlog.get_logger("aiobligations.ledger")

OP_RECORD = 0
"""A :class:`PreparedRecord`."""
OP_FLUSH = 1
"""Completes once everything queued before it is durable; its value is the log's size."""
OP_ERASE = 2
"""Crypto-shred a subject (the payload) and append ``subject.erased``."""
ERASE_PSEUDONYM = "\x00pseudonym:"
"""An ``OP_ERASE`` payload that starts with this names the pseudonym itself (shredding every subject
whose id is not known, as a termination does); a subject id never starts with NUL (refused)."""
OP_SIGN = 3
"""Sign a checkpoint for everything queued before it."""
OP_CALL = 4
"""Run a function on the writer's thread, between batches (maintenance)."""
OP_DEFER = 5
"""A record built on the writer's side: payload ``(factory, args)``."""
OP_REMOTE = 6
"""Maintenance a writer process runs by name: payload ``(name, args)``."""

Item = tuple[int, Any, Any]


def erased_pseudonym(payload: str, pseudonym_of: Any) -> str:
    """The pseudonym an ``OP_ERASE`` payload shreds: named with :data:`ERASE_PSEUDONYM`, or of the subject."""
    return payload[len(ERASE_PSEUDONYM):] if payload.startswith(ERASE_PSEUDONYM) else str(pseudonym_of(payload))


class Waiter:
    """A thread's wait for one queued item: a lock released by the writer."""

    __slots__ = ("error", "lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.value: Any = -1
        self.error: BaseException | None = None

    def wait(self, timeout: float | None) -> Any:
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            raise LedgerError(f"the ledger did not confirm the record within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value


def waits(waiter: Any) -> bool:
    """Whether someone waits on an item: a waiter, unless it says otherwise (a writer process's
    stand-in for a peer's item carries ``waits``)."""
    return waiter is not None and getattr(waiter, "waits", True)


def _resolve_futures(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, value in pairs:
        if future.done():
            continue
        if isinstance(value, BaseException):
            future.set_exception(value)
        else:
            future.set_result(value)


def release(results: list[tuple[Any, Any]]) -> None:
    """Hand each waiter its value (an index, a size) or its error; futures on their own loops."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
    for waiter, value in results:
        if waiter is None:
            continue
        if type(waiter) is Waiter:
            if isinstance(value, BaseException):
                waiter.error = value
            else:
                waiter.value = value
            waiter.lock.release()
        else:
            loop, future = waiter
            by_loop.setdefault(loop, []).append((future, value))
    for loop, pairs in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_futures, pairs)
        except RuntimeError:
            pass  # The caller's loop is closed; nobody is waiting any more.


# -- records built on the writer's side ----------------------------------------------------------

_FACTORIES: dict[str, Any] = {}


def resolve_factory(name: str) -> Any:
    """The record factory ``"module:function"`` names; only ``aiobligations`` modules qualify.

    Raises:
        LedgerError: the name is malformed, outside ``aiobligations``, or names nothing callable.
    """
    found = _FACTORIES.get(name)
    if found is not None:
        return found
    module_name, _, attribute = name.partition(":")
    if not attribute or not (module_name == "aiobligations" or module_name.startswith("aiobligations.")):
        raise LedgerError(f"{name!r} is not a record factory of aiobligations")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise LedgerError(f"cannot load the record factory {name!r}: {exc}") from None
    if not callable(found):
        raise LedgerError(f"the record factory {name!r} is not callable")
    _FACTORIES[name] = found
    return found


def factory_name(factory: Any) -> str:
    """The ``"module:function"`` name a writer process resolves ``factory`` by.

    Raises:
        LedgerError: ``factory`` is not a module-level function of an ``aiobligations`` module.
    """
    if isinstance(factory, str):
        resolve_factory(factory)
        return factory
    name = f"{getattr(factory, '__module__', '')}:{getattr(factory, '__qualname__', '')}"
    if resolve_factory(name) is not factory:
        raise LedgerError(f"{name!r} does not name the factory it was given")
    return name


def build(factory: Any, args: tuple[Any, ...]) -> PreparedRecord:
    """Build and prepare a deferred record; a failure becomes a ``record.build_failed`` record."""
    name = factory if isinstance(factory, str) else getattr(factory, "__qualname__", repr(factory))
    try:
        function = resolve_factory(factory) if isinstance(factory, str) else factory
        return prepare(function(*args))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.error("ledger_record_build_failed", factory=name, error=error)
        return prepare({"kind": "record.build_failed", "factory": name, "error": error})
