"""Request-path state shared by every worker process of one host: first contacts and rate limits.

A model server runs several workers (``uvicorn --workers N``, ``gunicorn -w N``) on one profile. Two
things the middleware decides per request must hold for the host, not for one process:

- :class:`FirstContacts`: who already got the long first-contact notice (else a person could get it
  once per worker);
- :class:`SharedRateLimiter`: the token buckets of the subject's POSTs (else each limit would be N
  times looser).

Both live in one file beside the ledger, ``<ledger path>.shared``, mapped into each process with
``mmap``. Requests only touch memory (the page cache; rate limits add a ``lockf`` system call):
nothing is read from or synced to disk on the request path, and the state need not survive a
reboot (losing it means a repeated notice and fresh buckets, both harmless). Processes that fork
after opening the file keep sharing it, since the mapping is shared.

The file: a 4096-byte header (magic ``AIOBSHST``, version, and a directory of up to 63 named tables)
followed by the tables, each a fixed number of slots in groups of :data:`WAYS` slots. A table is
added to the directory (and the file grown with ``ftruncate``, so its pages are sparse zeros) the
first time a process asks for it. No key is ever stored: a slot holds 8 bytes of a keyed BLAKE2b
digest of the key (keyed with a secret the caller derives from the ledger's keys), and 8 further
bytes of the digest pick the group. Zero marks an empty slot. The file is made whole under a
temporary name and then linked into place, so the folder must allow hard links.

A file that is not ours (a symlink, a FIFO or another non-regular file, the wrong magic) or that
is damaged (another version, a header that does not fit the file, the same table with another
size) is never changed or replaced: opening it raises :class:`~aiobligations.errors.ConfigurationError`
naming the file. Its content is disposable, so deleting it (with the workers stopped) is the fix.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import secrets
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .middleware.requests import RateLimit
    from .obligations import Obligations

__all__ = [
    "DEFAULT_FIRST_CONTACT_SLOTS",
    "DEFAULT_RATE_SLOTS",
    "MAGIC",
    "SECRET_LABEL",
    "SUFFIX",
    "VERSION",
    "WAYS",
    "FirstContacts",
    "SharedRateLimiter",
    "acquire_all",
    "shared_state_of",
]

MAGIC = b"AIOBSHST"
"""The first 8 bytes of a shared-state file."""

VERSION = 1
"""The layout version in a shared-state file's header."""

WAYS = 4
"""Slots per group: a key lives in one of the ``WAYS`` slots of the group its digest picks."""

DEFAULT_FIRST_CONTACT_SLOTS = 1 << 20
"""Slots of the first-contact table (8 MiB of sparse file)."""

DEFAULT_RATE_SLOTS = 1 << 18
"""Slots of one rate-limit table (8 MiB of sparse file)."""

SECRET_LABEL = "aiobligations/shared-state"
"""What :func:`shared_state_of` asks the ledger to pseudonymise to get the digests' secret."""

SUFFIX = ".shared"
"""The shared-state file is the ledger's path with this suffix."""

_HEADER_SIZE = 4096
_HEADER = struct.Struct("<8sIIII")  # magic, version, header size, table count, reserved
_COUNT_AT = 16
_ENTRY = struct.Struct("<32sQQII8x")  # name, offset, slots, slot size, ways
_ENTRIES_AT = 64
_MAX_TABLES = (_HEADER_SIZE - _ENTRIES_AT) // _ENTRY.size
_ALIGN = max(mmap.ALLOCATIONGRANULARITY, mmap.PAGESIZE)
_FIRST_CONTACTS = "first-contacts"
_FIRST_CONTACT_SLOT = 8  # the digest
_RATE_SLOT = struct.Struct("<Qddd")  # digest, tokens, at (clock seconds), full at (clock seconds)
_RATE_PREFIX = "rate/"
_DIGEST = struct.Struct("<QQ")  # a digest's two halves: the mark, and what picks the group
_MARKS = struct.Struct(f"{WAYS}Q")  # a first-contact group, native: each slot one 8-byte load
_GROUP = WAYS * _RATE_SLOT.size
_PERSON = b"aiob-shared-v1"


def shared_state_of(obligations: Obligations) -> tuple[str, bytes]:
    """The shared-state file and secret of a hub: beside its ledger, keyed by the ledger's keys.

    The secret is the ledger's pseudonym of :data:`SECRET_LABEL`: the same in every process that
    opens this ledger with its keys, and unknown to anyone without them.

    Example:
        >>> path, secret = shared_state_of(obligations)  # doctest: +SKIP
        >>> contacts = FirstContacts(path, secret)  # doctest: +SKIP
    """
    return f"{obligations.profile.ledger.path}{SUFFIX}", obligations.ledger.pseudonym(SECRET_LABEL).encode()


# -- per-process bookkeeping -------------------------------------------------------------------


class _Inode:
    """One file's lock for the threads of this process.

    ``fcntl.lockf`` locks belong to a process, so two threads of one process do not exclude each
    other with them: each thread takes this lock first, and holds it while it holds any ``lockf``
    lock on the file. Closing any descriptor of a file drops every ``lockf`` lock this process
    holds on it (an ``mmap`` holds such a descriptor too), so descriptors and maps are closed only
    under this lock, when no thread of this process holds one.
    """

    __slots__ = ("key", "lock")

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key  # (st_dev, st_ino): the same in every process, so it orders locks host-wide.
        self.lock = threading.Lock()


_INODES: dict[tuple[int, int], _Inode] = {}
_INODES_LOCK = threading.Lock()


def _inode(status: os.stat_result) -> _Inode:
    with _INODES_LOCK:
        key = (status.st_dev, status.st_ino)
        found = _INODES.get(key)
        if found is None:
            found = _INODES[key] = _Inode(key)
        return found


def _after_fork_in_child() -> None:
    """A forked child holds no ``lockf`` lock (they are not inherited): none of its locks is held."""
    global _INODES_LOCK
    _INODES_LOCK = threading.Lock()
    for entry in _INODES.values():
        entry.lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def _locked(ranges: Sequence[tuple[_Inode, int, int, int]]) -> Iterator[None]:
    """Hold ``(inode, fd, start, length)`` byte ranges with ``lockf``, and their inodes' thread locks.

    Locks are taken in one global order (inode, then offset), so two callers never deadlock.
    """
    if len(ranges) == 1:
        inode, fd, start, length = ranges[0]
        with inode.lock:
            fcntl.lockf(fd, fcntl.LOCK_EX, length, start, os.SEEK_SET)
            try:
                yield
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)
        return
    unique = sorted({(inode.key, start): (inode, fd, start, length)
                     for inode, fd, start, length in ranges}.items(), key=lambda item: item[0])
    inodes = list({key: inode for (key, _), (inode, _, _, _) in unique}.values())
    held: list[threading.Lock] = []
    locked: list[tuple[int, int, int]] = []
    try:
        for inode in inodes:
            inode.lock.acquire()
            held.append(inode.lock)
        for _, (_, fd, start, length) in unique:
            fcntl.lockf(fd, fcntl.LOCK_EX, length, start, os.SEEK_SET)
            locked.append((fd, start, length))
        yield
    finally:
        for fd, start, length in reversed(locked):
            fcntl.lockf(fd, fcntl.LOCK_UN, length, start, os.SEEK_SET)
        for lock in reversed(held):
            lock.release()


def _key(secret: bytes, namespace: bytes) -> hashlib.blake2b:
    """A keyed BLAKE2b state with ``namespace`` already fed in; ``copy()`` it per key."""
    if not isinstance(secret, bytes) or not secret:
        raise ConfigurationError("the shared-state secret must be non-empty bytes")
    if len(secret) > hashlib.blake2b.MAX_KEY_SIZE:
        secret = hashlib.blake2b(secret).digest()
    state = hashlib.blake2b(key=secret, digest_size=16, person=_PERSON)
    state.update(namespace)
    return state


def _slots(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < WAYS or value % WAYS:
        raise ConfigurationError(f"{name} must be an int, a multiple of {WAYS} and {WAYS} or more, got {value!r}")
    return value


# -- the file ----------------------------------------------------------------------------------


def _create(path: str) -> None:
    """Make the file with an empty directory, atomically: a temporary file, then ``os.link``.

    Several processes may race here; one link wins, the others find the file made.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, _HEADER.pack(MAGIC, VERSION, _HEADER_SIZE, 0, 0), 0)
        os.ftruncate(fd, _HEADER_SIZE)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _not_regular(path: str, mode: int) -> ConfigurationError:
    kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device")
    return ConfigurationError(f"{path}: is {kind}, not a regular file; refusing to use it as shared state "
                              "(remove it, and aiobligations creates the file it needs)")


def _open(path: str) -> tuple[int, os.stat_result]:
    """Open (creating if missing) the regular file ``path`` for reading and writing, never following a link."""
    for _ in range(5):
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            _create(path)
            continue
        if not stat.S_ISREG(status.st_mode):
            raise _not_regular(path, status.st_mode)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:  # Removed since lstat: try again.
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # Replaced by a symlink since lstat.
                raise _not_regular(path, stat.S_IFLNK) from None
            raise
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)  # Not a regular file: this process holds no lock on it.
            raise _not_regular(path, status.st_mode)
        return fd, status
    raise OSError(errno.EAGAIN, "the shared-state file keeps disappearing", path)


def _damaged(path: str, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"{path}: {what}; stop the workers and delete it (it holds only first-contact marks and "
        "rate-limit buckets, which start again empty)"
    )


def _table(fd: int, inode: _Inode, path: str, name: str, slots: int, slot_size: int) -> int:
    """Find the table ``name`` in the file's directory, adding it if missing; return its offset.

    Raises:
        ConfigurationError: The file is not a shared-state file of this version, is damaged, has
            the table with another size, or has no room for another table.
    """
    with _locked([(inode, fd, 0, _HEADER_SIZE)]):
        size = os.fstat(fd).st_size
        head = os.pread(fd, _HEADER_SIZE, 0)
        if len(head) < _HEADER.size or head[:len(MAGIC)] != MAGIC:
            raise ConfigurationError(
                f"{path}: not an aiobligations shared-state file (no {MAGIC.decode()} header); refusing "
                "to overwrite it: move it away, and aiobligations creates the file it needs"
            )
        _, version, header_size, count, _ = _HEADER.unpack_from(head)
        if version != VERSION:
            raise _damaged(path, f"a shared-state file of layout version {version}, not {VERSION}")
        if header_size != _HEADER_SIZE or len(head) < _HEADER_SIZE or count > _MAX_TABLES:
            raise _damaged(path, "its header is damaged")
        end = _HEADER_SIZE
        tables: dict[str, tuple[int, int, int]] = {}
        spans: list[tuple[int, int]] = []
        for index in range(count):
            raw, offset, found_slots, found_size, ways = _ENTRY.unpack_from(head, _ENTRIES_AT + index * _ENTRY.size)
            length = found_slots * found_size
            if (ways != WAYS or found_slots < WAYS or found_slots % WAYS or found_size < 8
                    or offset % _ALIGN or offset < _HEADER_SIZE or offset + length > size):
                raise _damaged(path, f"table {index} does not fit the file ({size} bytes)")
            spans.append((offset, offset + length))
            tables[raw.rstrip(b"\0").decode("ascii", "replace")] = (offset, found_slots, found_size)
            end = max(end, offset + length)
        spans.sort()
        if any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
            raise _damaged(path, "two of its tables overlap")
        if name in tables:
            offset, found_slots, found_size = tables[name]
            if (found_slots, found_size) != (slots, slot_size):
                raise ConfigurationError(
                    f"{path}: table {name!r} has {found_slots} slots of {found_size} bytes, but {slots} of "
                    f"{slot_size} were asked for; every process must use the same sizes (or stop them all "
                    "and delete the file)"
                )
            return offset
        if count == _MAX_TABLES:
            raise _damaged(path, f"it already has {_MAX_TABLES} tables")
        offset = -(-end // _ALIGN) * _ALIGN
        # Grow first, then write the entry, then the count: a crash in between leaves a file that
        # reads as before (at worst with some unused space at its end).
        os.ftruncate(fd, max(size, offset + slots * slot_size))
        os.pwrite(fd, _ENTRY.pack(name.encode("ascii"), offset, slots, slot_size, WAYS),
                  _ENTRIES_AT + count * _ENTRY.size)
        os.pwrite(fd, struct.pack("<I", count + 1), _COUNT_AT)
        return offset


class _Mapped:
    """One table of a shared-state file, mapped into this process."""

    def __init__(self, path: str, name: str, slots: int, slot_size: int) -> None:
        fd, status = _open(path)
        inode = _inode(status)
        try:
            offset = _table(fd, inode, path, name, slots, slot_size)
            try:
                mapped = mmap.mmap(fd, slots * slot_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                                   offset=offset)
            except ValueError:  # Shrunk since _table looked: someone truncated it.
                raise _damaged(path, "it is shorter than its tables") from None
        except BaseException:
            with inode.lock:
                os.close(fd)
            raise
        self.path = path
        self.fd = fd
        self.inode = inode
        self.offset = offset
        self.map: mmap.mmap | None = mapped

    def close(self, *views: memoryview) -> None:
        """Unmap and close, under the inode's lock (closing drops this process's ``lockf`` locks)."""
        with self.inode.lock:
            for view in views:
                view.release()
            if self.map is not None:
                self.map.close()
                self.map = None
                os.close(self.fd)


# -- first contacts ----------------------------------------------------------------------------


class FirstContacts:
    """Who already got the long first-contact notice, for every process using one file.

    :meth:`first` answers ``True`` for a subject not marked yet, and marks it. Marks live in a
    table of ``slots`` 8-byte slots in groups of :data:`WAYS`, in the mapped file ``path``
    (created if missing, mode 0600): every process and thread that opens the same file, and every
    process forked after opening it, sees the same marks. A mark is 8 bytes of a BLAKE2b digest
    keyed with ``secret``; the group comes from 8 other bytes of it. The subject itself is never
    stored, and without the secret nobody can tell which subjects are marked. Thread-safe (a race
    can only over-disclose, see below).

    Cost: 1.5 to 2 µs a call (a keyed digest, four 8-byte reads, at most one 8-byte write; no system
    call, no lock): medians of 1.5 µs for a subject already marked and 1.7 µs for a new one on a
    quiet 2-core x86-64 VM with Python 3.11, in a tight loop of 300 000 subjects; up to 2.1 µs with
    the machine busy.

    Args:
        path: The file, ``<ledger path>.shared`` (see :func:`shared_state_of`).
        secret: The digests' key; every process must use the same one (see :func:`shared_state_of`).
        slots: How many marks the table holds: a multiple of :data:`WAYS`. Every process using the
            file must pass the same number. The default takes 8 MiB of (sparse) file.

    Raises:
        ConfigurationError: ``slots`` or ``secret`` is invalid; ``path`` is a symbolic link, a FIFO
            or another non-regular file, not a shared-state file, damaged, or has this table with
            another size. The file is left as it is.
        OSError: The file cannot be created or opened (a read-only folder, say).

    Example:
        >>> contacts = FirstContacts("ledger.db.shared", secret)  # doctest: +SKIP
        >>> contacts.first("user:42"), contacts.first("user:42")  # doctest: +SKIP
        (True, False)

    What it cannot do:
        - Promise a second ``False``: when more than :data:`WAYS` subjects land in one group, a
          mark is overwritten and its subject gets ``True`` (the long notice) again; two processes
          (or threads) asking for the same new subject at once may both get ``True``, and two marking
          different new subjects in one group at once may lose one mark. All over-disclose, which
          is safe.
        - Rule out, absolutely, taking a subject never marked for a marked one: ``first`` answers
          ``False`` for it only if its 64-bit mark equals one of the 4 marks in its group, a chance
          below 2^-61 (4 × 10^-19) a call. The digest is keyed with the secret, so nobody can aim
          for a collision.
        - Survive a reboot, or a deleted file: marks then start again, and people get the long
          notice once more.
        - Guarantee no disk wait: the table lives in the page cache and is never synced, but the
          first write to a page, or a write while the kernel writes that page back, may wait on the
          filesystem (usually microseconds).

    .. versionadded:: 0.2.0
    """

    def __init__(self, path: str | os.PathLike[str], secret: bytes, *,
                 slots: int = DEFAULT_FIRST_CONTACT_SLOTS) -> None:
        self.slots = _slots(slots, "slots")
        self._hash = _key(secret, b"fc\0")
        self._mapped = _Mapped(os.fspath(path), _FIRST_CONTACTS, self.slots, _FIRST_CONTACT_SLOT)
        assert self._mapped.map is not None
        self._table = memoryview(self._mapped.map).cast("Q")
        self._groups = self.slots // WAYS
        self.path = self._mapped.path

    def __repr__(self) -> str:
        return f"FirstContacts({self.path!r}, slots={self.slots})"

    def first(self, subject: str) -> bool:
        """Whether ``subject`` was not marked yet (mark it now); ``False`` once it was.

        Raises:
            ValueError: This object is closed.
        """
        state = self._hash.copy()
        state.update(subject.encode("utf-8", "surrogatepass"))
        mark, pick = _DIGEST.unpack(state.digest())
        mark = mark or 1
        base = pick % self._groups * WAYS
        a, b, c, d = _MARKS.unpack_from(self._table, base * 8)
        if mark == a or mark == b or mark == c or mark == d:
            return False
        # The first empty slot, else one the mark picks: an overwritten subject gets the notice again.
        way = 0 if not a else 1 if not b else 2 if not c else 3 if not d else mark >> 62
        self._table[base + way] = mark  # One aligned 8-byte store.
        return True

    def close(self) -> None:
        """Unmap the table (the marks stay in the file). Idempotent."""
        self._mapped.close(self._table)

    def __enter__(self) -> FirstContacts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- rate limits -------------------------------------------------------------------------------


class SharedRateLimiter:
    """Token buckets for every process using one file: the same interface as ``RateLimiter``.

    A bucket per key, in a table of ``slots`` slots (in groups of :data:`WAYS`) named after
    ``namespace`` in the mapped file ``path``. Each slot holds a mark of the key (8 bytes of a BLAKE2b
    digest keyed with ``secret``; the key itself is never stored), its tokens, when they were
    counted and when the bucket will be full again, on the clock :func:`time.monotonic` (one clock
    for the whole host on Linux). Every read-modify-write holds an ``fcntl.lockf`` lock on the
    key's slot group, so :meth:`acquire` and :func:`acquire_all` are exact across processes: the
    requests they allow a key over any span of ``t`` seconds are at most ``burst + t × rate /
    period``, however many processes ask at once, as long as the key keeps its slot (next
    paragraph). Thread-safe; keeps working across ``os.fork``.

    A key's slot is one of the :data:`WAYS` slots of the group its digest picks. A new key whose
    group is taken reuses the slot of a bucket that is full again (losing nothing: a full bucket is
    what an unknown key gets), else the slot of the bucket that will be full soonest. Only in that
    second case can a limit be exceeded: when more than :data:`WAYS` keys with partly spent buckets
    share one group, the key evicted starts full again, so it gains what it had spent, at most
    ``burst`` requests, once per eviction. With the default 2^18 slots (65 536 groups) and 10 000
    keys partly spent at once, a given group overflows with a chance of 6 × 10^-7 (0.04 groups of
    the table expected); with 100 000 such keys, 2 % of groups.

    Cost: about 9 to 11 µs for :meth:`acquire`, :meth:`wait` or :meth:`take` (a keyed digest, a
    thread lock, two ``lockf`` system calls, a slot group read and one slot written), and 25 to
    30 µs for :func:`acquire_all` of two keys, measured in a tight loop on a 2-core x86-64 VM with
    Python 3.11. Meant for rare requests (the subject's POSTs), not for every AI response.

    Args:
        limit: The buckets' shape (``RateLimit``). Every process should use the same one; each
            computes levels with its own.
        path: The file, ``<ledger path>.shared`` (see :func:`shared_state_of`).
        secret: The digests' key; every process must use the same one.
        namespace: The table's name (``"subject"``, ``"address"``…): 1 to 27 ASCII letters, digits,
            ``-`` or ``_``. Keys of two namespaces never share a bucket.
        slots: How many keys the table holds: a multiple of :data:`WAYS`, the same in every process.
        clock: Monotonic seconds, the same clock in every process (default :func:`time.monotonic`).

    Raises:
        ConfigurationError: An argument is invalid; ``path`` is a symbolic link, a FIFO or another
            non-regular file, not a shared-state file, damaged, or has this table with another size.
        OSError: The file cannot be created or opened (a read-only folder, say).

    Example:
        >>> limiter = SharedRateLimiter(RateLimit(10, 5), "ledger.db.shared", secret, "subject")  # doctest: +SKIP
        >>> limiter.acquire("user:42")  # doctest: +SKIP
        0.0

    What it cannot do:
        - Make :meth:`wait` then :meth:`take` exact: another process may spend the last token
          between the two (``take`` then leaves the bucket empty, not negative), so with ``P``
          processes up to ``P - 1`` extra requests slip through each time a bucket runs dry. Use
          :meth:`acquire`, or :func:`acquire_all` for several buckets, which check and spend under
          one lock (``RequestEndpoints`` does).
        - Survive a reboot or a deleted file: buckets then start full.
        - Mix clocks: a level counts from the latest time any process wrote, so a process on
          another clock (or a test's fake clock) would see wrong levels.
        - Bound the wait for a lock: another process holds it for microseconds, but one stopped
          (``SIGSTOP``, a debugger) inside :meth:`acquire` would stall every other until it runs.

    .. versionadded:: 0.2.0
    """

    def __init__(self, limit: RateLimit, path: str | os.PathLike[str], secret: bytes, namespace: str, *,
                 slots: int = DEFAULT_RATE_SLOTS, clock: Callable[[], float] = time.monotonic) -> None:
        if (not isinstance(namespace, str) or not 1 <= len(namespace) <= 32 - len(_RATE_PREFIX)
                or not all(c.isascii() and (c.isalnum() or c in "-_") for c in namespace)):
            raise ConfigurationError(f"namespace must be 1 to 27 ASCII letters, digits, '-' or '_', got {namespace!r}")
        self.limit = limit
        self.clock = clock
        self.namespace = namespace
        self.slots = _slots(slots, "slots")
        self._hash = _key(secret, b"rl\0" + namespace.encode() + b"\0")
        self._groups = self.slots // WAYS
        self._mapped = _Mapped(os.fspath(path), _RATE_PREFIX + namespace, self.slots, _RATE_SLOT.size)
        self.path = self._mapped.path

    def __repr__(self) -> str:
        return f"SharedRateLimiter({self.limit!r}, {self.path!r}, namespace={self.namespace!r}, slots={self.slots})"

    # -- one slot group, under its lock ------------------------------------------------------------

    def _locate(self, key: str) -> tuple[int, int]:
        """The key's mark and the byte offset (in the table) of its group."""
        state = self._hash.copy()
        state.update(key.encode("utf-8", "surrogatepass"))
        mark, pick = _DIGEST.unpack(state.digest())
        return mark or 1, pick % self._groups * _GROUP

    def _range(self, group: int) -> tuple[_Inode, int, int, int]:
        """The group's byte range in the file, for :func:`_locked`."""
        mapped = self._mapped
        return mapped.inode, mapped.fd, mapped.offset + group, _GROUP

    def _map(self) -> mmap.mmap:
        table = self._mapped.map
        if table is None:
            raise ConfigurationError(f"{self!r} is closed")
        return table

    def _level(self, table: mmap.mmap, mark: int, group: int, now: float) -> tuple[float, float, int | None]:
        """The key's level, the time it is counted at and its way (``None``: not stored, so full)."""
        for way in range(WAYS):
            found, tokens, at, _ = _RATE_SLOT.unpack_from(table, group + way * _RATE_SLOT.size)
            if found == mark:
                # Another process may have written after this caller read its clock: count from the
                # later time, so no second is refilled twice.
                counted = max(at, now)
                return min(float(self.limit.burst), tokens + (counted - at) * self.limit.per_second), counted, way
        return float(self.limit.burst), now, None

    @staticmethod
    def _victim(table: mmap.mmap, group: int, now: float) -> int:
        """The way a new key takes: empty, else full again (nothing lost), else full again soonest."""
        best, best_full = 0, float("inf")
        for way in range(WAYS):
            found, _, _, full = _RATE_SLOT.unpack_from(table, group + way * _RATE_SLOT.size)
            if found == 0 or full <= now:
                return way
            if full < best_full:
                best, best_full = way, full
        return best

    def _spend(self, table: mmap.mmap, mark: int, group: int, now: float, *, check: bool) -> float:
        """Spend one token (if ``check``, only when there is one); return the wait (0 when spent)."""
        level, counted, way = self._level(table, mark, group, now)
        if check and level < 1.0:
            return (1.0 - level) / self.limit.per_second
        tokens = max(0.0, level - 1.0)
        full = counted + (self.limit.burst - tokens) / self.limit.per_second
        if way is None:
            way = self._victim(table, group, counted)
        _RATE_SLOT.pack_into(table, group + way * _RATE_SLOT.size, mark, tokens, counted, full)
        return 0.0

    # -- the RateLimiter interface -------------------------------------------------------------

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may make a request (0 when it may now). Takes nothing.

        Raises:
            ValueError: This limiter is closed.
        """
        now = self.clock() if now is None else now
        mark, group = self._locate(key)
        table = self._map()
        with _locked([self._range(group)]):
            level, _, _ = self._level(table, mark, group, now)
        return 0.0 if level >= 1.0 else (1.0 - level) / self.limit.per_second

    def take(self, key: str, now: float | None = None) -> None:
        """Spend one request of ``key``'s bucket, even if it is empty (callers check :meth:`wait` first).

        Raises:
            ValueError: This limiter is closed.
        """
        now = self.clock() if now is None else now
        mark, group = self._locate(key)
        table = self._map()
        with _locked([self._range(group)]):
            self._spend(table, mark, group, now, check=False)

    def acquire(self, key: str, now: float | None = None) -> float:
        """Take one request if allowed and return 0, else take nothing and return the seconds to wait.

        Checks and spends under the lock of the key's slot group: exact across processes.

        Raises:
            ValueError: This limiter is closed.
        """
        now = self.clock() if now is None else now
        mark, group = self._locate(key)
        table = self._map()
        with _locked([self._range(group)]):
            return self._spend(table, mark, group, now, check=True)

    def close(self) -> None:
        """Unmap the table (the buckets stay in the file). Idempotent."""
        self._mapped.close()

    def __enter__(self) -> SharedRateLimiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def acquire_all(checks: Sequence[tuple[SharedRateLimiter, str]], now: float | None = None) -> list[float]:
    """Take one request from each ``(limiter, key)`` if every one allows it, else take none.

    All the buckets are locked together (in one global order, so callers never deadlock), so the
    check and the spending are one step for every process: exact, like
    :meth:`SharedRateLimiter.acquire`, for several limits at once (a subject's and its address's).

    Args:
        checks: The buckets, e.g. ``[(subject_limiter, subject), (address_limiter, address)]``.
        now: The time on the limiters' clock (default: the first limiter's clock).

    Returns:
        Each key's wait in seconds, in order: all 0.0 when the requests were taken; otherwise
        nothing was taken, and the waits that are not 0 say which limits refused and for how long.

    Raises:
        ValueError: A limiter is closed.

    Example:
        >>> waits = acquire_all([(subjects, "user:42"), (addresses, "203.0.113.9")])  # doctest: +SKIP
        >>> allowed = max(waits) == 0.0  # doctest: +SKIP

    .. versionadded:: 0.2.0
    """
    if not checks:
        return []
    now = checks[0][0].clock() if now is None else now
    located = [(limiter, limiter._map(), *limiter._locate(key)) for limiter, key in checks]
    with _locked([limiter._range(group) for limiter, _, _, group in located]):
        saved = [(table, group, table[group:group + _GROUP]) for _, table, _, group in located]
        waits = [limiter._spend(table, mark, group, now, check=True) for limiter, table, mark, group in located]
        if any(waits):  # One refused: put every slot group back as it was, still under the locks.
            for table, group, data in reversed(saved):
                table[group:group + _GROUP] = data
    return waits
