"""Verify an audit bundle (folder or ``.tar.gz``) or a live ledger database, offline.

Verification trusts nothing but a verifier key: it re-hashes every record, checks the indices, the
listed hashes, the stored interior hashes of a database, the compact ranges around a partial range,
the root against the signed checkpoint, and, given an earlier checkpoint, the consistency proof. It
streams, so memory stays flat however long the log is. The bundle layout is described in
:mod:`aiobligations.ledger.bundle`.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import os
import shutil
import sqlite3
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigurationError, LedgerBroken, LedgerError, UnusableInput
from . import merkle
from .bundle import MEMBERS
from .note import BadSignature, Checkpoint, MalformedNote, UnknownKey, Verifier
from .reader import TreeReader
from .store import NODE_STRIDE, SQLiteStore

__all__ = ["VerifyReport", "verify_bundle", "verify_database", "verify_path", "verify_postgres"]

_CHUNK = 4096
_MAX_SMALL_FILE = 1 << 20
_MAX_RECORD = 64 << 20
"""The longest record line a bundle may hold: far above any record aiobligations writes (captures
are capped), and a bound on what one line can make the verifier hold in memory."""


@dataclass
class VerifyReport:
    """What a successful verification established.

    Attributes:
        origin: The log's origin.
        checkpoint_size: The tree size of the verified checkpoint.
        start: The first record index checked.
        end: One past the last record index checked.
        root: The verified root hash.
        key: The verifier key that signed the checkpoint.
        pinned: Whether the key came from the auditor rather than from the bundle itself.
        since: The size of the auditor's earlier checkpoint shown consistent, if one was given.
        unsigned: Records stored after the latest checkpoint (databases only); hash-checked, but no
            signature covers them yet.
        notes: Anything else worth telling.
    """

    origin: str
    checkpoint_size: int
    start: int
    end: int
    root: bytes
    key: str
    pinned: bool
    since: int | None = None
    unsigned: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return {
            "origin": self.origin,
            "checkpoint_size": self.checkpoint_size,
            "records_checked": self.end - self.start,
            "start": self.start,
            "end": self.end,
            "root": base64.b64encode(self.root).decode(),
            "key": self.key,
            "key_pinned": self.pinned,
            "consistent_since": self.since,
            "unsigned_records": self.unsigned,
            "notes": self.notes,
        }


# -- verification ----------------------------------------------------------------------------


def verify_path(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    since_checkpoint: str | None = None,
    schema: str = "aiobligations",
) -> VerifyReport:
    """Verify a bundle (folder or ``.tar.gz``) or a ledger database, whichever ``path`` is.

    Args:
        path: The bundle or database: a folder, a ``.tar.gz``, a SQLite file, or a PostgreSQL URL
            (``postgresql://…``, whose ledger lives in ``schema``).
        key: The verifier key to trust (``name+id+key``). Without it the key shipped with the
            bundle or stored in the database is used, and the report says so.
        since_checkpoint: An earlier signed checkpoint note the auditor accepted; the log must be
            consistent with it.

    Returns:
        A :class:`VerifyReport` when everything checks out.

    Raises:
        LedgerBroken: a record, hash or signature does not match; names the first bad index.
        UnusableInput: the input is missing, foreign or unreadable, or the key does not fit it.
    """
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        return verify_postgres(path, schema=schema, key=key, since_checkpoint=since_checkpoint)
    path = Path(path)
    if path.is_dir():
        return verify_bundle(path, key=key, since_checkpoint=since_checkpoint)
    if not path.exists():
        raise UnusableInput(f"{path}: no such file or folder")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(16)
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot be read ({exc.strerror})") from None
    if magic.startswith(b"\x1f\x8b"):
        return verify_bundle(path, key=key, since_checkpoint=since_checkpoint)
    if magic.startswith(b"SQLite format 3"):
        return verify_database(path, key=key, since_checkpoint=since_checkpoint)
    raise UnusableInput(f"{path}: neither an audit bundle nor a ledger database")


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    since_checkpoint: str | None = None,
) -> VerifyReport:
    """Verify an audit bundle offline. See :func:`verify_path` for the arguments and errors."""
    path = Path(path)
    if path.is_dir():
        return _verify_folder(path, key, since_checkpoint)
    with tempfile.TemporaryDirectory(prefix="aiobligations-verify-") as tmp:
        _unpack(path, Path(tmp))
        return _verify_folder(Path(tmp), key, since_checkpoint)


def _unpack(path: Path, into: Path) -> None:
    """Copy the bundle's known members out of a tarball; anything else in it is refused."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name not in MEMBERS or not member.isfile():
                    raise UnusableInput(f"{path}: unexpected member {member.name!r} in the bundle")
                source = tar.extractfile(member)
                if source is None:
                    raise UnusableInput(f"{path}: unreadable member {member.name!r}")
                target = into / name
                if target.exists():
                    raise UnusableInput(f"{path}: member {name!r} appears twice")
                with open(target, "wb") as handle:
                    shutil.copyfileobj(source, handle, 1 << 20)
            # Read to the end of the gzip stream so that a cut or corrupt trailer (its CRC and
            # length) is noticed even though tar's end-of-archive marker was already seen.
            assert tar.fileobj is not None
            while tar.fileobj.read(1 << 16):
                pass
    except (tarfile.TarError, EOFError, OSError, _zlib_error()) as exc:
        raise UnusableInput(f"{path}: not a readable .tar.gz bundle ({exc})") from None


def _zlib_error() -> type[Exception]:
    """The exception class zlib raises for corrupt data."""
    import zlib

    return zlib.error


def _refuse_special(path: Path) -> None:
    """A bundle member must be a regular file, not a link, folder, FIFO or device (e.g. /dev/zero).

    Raises:
        UnusableInput: it exists and is anything but a regular file.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise UnusableInput(f"{path}: not a regular file (a link, folder or device is never a bundle member)")


def _read_small(folder: Path, name: str, *, required: bool = True) -> str | None:
    path = folder / name
    if not path.exists():
        if required:
            raise UnusableInput(f"{folder}: the bundle has no {name}")
        return None
    if path.stat().st_size > _MAX_SMALL_FILE:
        raise LedgerBroken(f"{name} is implausibly large")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LedgerBroken(f"{name} is not UTF-8") from None


def _trusted_verifier(key: str | None, shipped: str | None, source: str) -> tuple[Verifier, bool]:
    text = key if key is not None else shipped
    if text is None:
        raise UnusableInput(f"{source}: no verifier key (pass --key)")
    try:
        return Verifier.from_key(text.strip()), key is not None
    except ValueError as exc:
        what = "--key" if key is not None else f"{source}: verifier.key"
        raise UnusableInput(f"{what} is not a verifier key ({exc})") from None


def _open_note(verifier: Verifier, note: str, what: str, *, claimed: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note with ``verifier``.

    ``claimed`` is the key the bundle or database says it is signed by: when that is the trusted
    key itself, a note without a valid signature line for it has been altered (exit 1), not
    checked with the wrong key (exit 2).
    """
    try:
        return Checkpoint.parse(verifier.verify(note))
    except UnknownKey:
        if claimed is not None and claimed.strip() == verifier.verifier_key:
            raise LedgerBroken(f"{what} has no signature line for its own key (altered)") from None
        raise UnusableInput(
            f"{what} is not signed by {verifier.name}+{verifier.key_id.hex()} (wrong key?)"
        ) from None
    except BadSignature:
        raise LedgerBroken(f"{what}: the signature does not verify (altered)") from None
    except MalformedNote as exc:
        raise LedgerBroken(f"{what} is malformed ({exc})") from None


def _hashes(values: Any, what: str, index: int | None) -> list[bytes]:
    if not isinstance(values, list):
        raise LedgerBroken(f"{what} must be a list of hashes", index=index)
    out = []
    for value in values:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise LedgerBroken(f"{what} holds something that is not a base64 hash", index=index) from None
        if len(raw) != merkle.HASH_SIZE:
            raise LedgerBroken(f"{what} holds a hash of {len(raw)} bytes", index=index)
        out.append(raw)
    return out


def _json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise LedgerBroken(f"{name} is not valid JSON") from None


def _since(verifier: Verifier, since_checkpoint: str | None) -> Checkpoint | None:
    if since_checkpoint is None:
        return None
    return _open_note(verifier, since_checkpoint, "the earlier checkpoint")


def _verify_folder(folder: Path, key: str | None, since_checkpoint: str | None) -> VerifyReport:
    for name in MEMBERS:
        _refuse_special(folder / name)
    if not (folder / "records.jsonl").exists() or not (folder / "checkpoint").exists():
        raise UnusableInput(f"{folder}: not an audit bundle (no records.jsonl or checkpoint)")
    shipped = _read_small(folder, "verifier.key", required=False)
    verifier, pinned = _trusted_verifier(key, shipped, str(folder))
    checkpoint = _open_note(verifier, _read_small(folder, "checkpoint") or "", "the checkpoint", claimed=shipped)
    earlier = _since(verifier, since_checkpoint)
    if earlier is not None and earlier.origin != checkpoint.origin:
        raise UnusableInput(f"the earlier checkpoint is for {earlier.origin!r}, not {checkpoint.origin!r}")

    frontier = _json(_read_small(folder, "frontier.json") or "", "frontier.json")
    if not isinstance(frontier, dict) or not isinstance(frontier.get("start"), int) or frontier["start"] < 0:
        raise LedgerBroken("frontier.json has no valid start index")
    start = frontier["start"]
    left = _hashes(frontier.get("hashes", []), "frontier.json hashes", start)
    tree = _compact(0, start, left, "frontier.json hashes", start)

    count, bad = _stream_records(folder, start, tree)
    end = start + count
    if bad is not None:
        raise bad
    manifest = _read_small(folder, "manifest.json", required=False)
    if manifest is not None:
        _check_manifest(_json(manifest, "manifest.json"), checkpoint, start, end)

    size = checkpoint.size
    if end > size:
        raise LedgerBroken(f"the bundle holds records past the checkpoint's size {size}", index=size)
    if end < size:
        if frontier.get("end") != end:
            raise LedgerBroken(
                f"the checkpoint covers {size} records but the bundle stops at {end}", index=end
            )
        right = _hashes(frontier.get("right", []), "frontier.json right", end)
        tree.merge(_compact(end, size, right, "frontier.json right", end))
    root = tree.root()
    if root != checkpoint.root:
        raise LedgerBroken(
            "the records and hashes.bin agree with each other but not with the signed root: "
            "both were altered, or frontier.json was",
            index=start if count else None,
        )
    report = VerifyReport(checkpoint.origin, size, start, end, root, verifier.verifier_key, pinned)
    if not pinned:
        report.notes.append("trusted the bundle's own verifier.key; pass --key to pin the key you were given")
    if earlier is not None:
        text = _read_small(folder, "consistency.json", required=False)
        if text is None:
            raise UnusableInput(
                "the bundle has no consistency.json; export it with --since-checkpoint to include one"
            )
        _check_consistency(_json(text, "consistency.json"), earlier, checkpoint)
        report.since = earlier.size
    return report


def _compact(start: int, end: int, hashes: list[bytes], what: str, index: int) -> merkle.CompactRange:
    try:
        return merkle.CompactRange.from_hashes(start, end, hashes)
    except ValueError as exc:
        raise LedgerBroken(f"{what}: {exc}", index=index) from None


def _stream_records(folder: Path, start: int, tree: merkle.CompactRange) -> tuple[int, LedgerBroken | None]:
    """Hash every record into ``tree``; return the count and the first break found, if any."""
    hashes_path = folder / "hashes.bin"
    listed: IO[bytes] | None = open(hashes_path, "rb") if hashes_path.exists() else None
    count = 0
    try:
        with open(folder / "records.jsonl", "rb", buffering=1 << 20) as records:
            while True:
                lines = []
                for _ in range(_CHUNK):
                    line = records.readline(_MAX_RECORD + 1)
                    if not line:
                        break
                    if len(line) > _MAX_RECORD:
                        return count + len(lines), LedgerBroken(
                            f"the record is longer than {_MAX_RECORD} bytes (no writer makes one so long)",
                            index=start + count + len(lines),
                        )
                    lines.append(line)
                if not lines:
                    break
                if not lines[-1].endswith(b"\n"):
                    return count + len(lines) - 1, LedgerBroken(
                        "the last record is cut short (no final newline)", index=start + count + len(lines) - 1
                    )
                leaves = [sha256(b"\x00" + line[:-1]).digest() for line in lines]
                if listed is not None:
                    expected = listed.read(32 * len(leaves))
                    if expected != b"".join(leaves):
                        return count, _first_mismatch(lines, leaves, expected, start + count)
                else:
                    for offset, line in enumerate(lines):
                        if not line.startswith(b'{"v":1,"idx":%d,' % (start + count + offset)):
                            return count, LedgerBroken(
                                "the record is not the one expected at this position", index=start + count + offset
                            )
                tree.extend(leaves)
                count += len(lines)
            if listed is not None and listed.read(1):
                return count, LedgerBroken("hashes.bin lists more records than records.jsonl holds", index=start + count)
    finally:
        if listed is not None:
            listed.close()
    return count, None


def _first_mismatch(lines: list[bytes], leaves: list[bytes], expected: bytes, first: int) -> LedgerBroken:
    for offset, leaf in enumerate(leaves):
        if expected[32 * offset : 32 * offset + 32] != leaf:
            index = first + offset
            if len(expected) < 32 * (offset + 1):
                return LedgerBroken("hashes.bin ends before records.jsonl does", index=index)
            if not lines[offset].startswith(b'{"v":1,"idx":%d,' % index):
                return LedgerBroken("the record is not the one expected at this position", index=index)
            return LedgerBroken("the record and its hash in hashes.bin differ (one of them was altered)", index=index)
    return LedgerBroken("hashes.bin does not match records.jsonl", index=first)


def _check_manifest(manifest: Any, checkpoint: Checkpoint, start: int, end: int) -> None:
    if not isinstance(manifest, dict):
        raise LedgerBroken("manifest.json is not an object")
    claims = {"start": start, "end": end, "records": end - start, "checkpoint_size": checkpoint.size,
              "origin": checkpoint.origin}
    for name, actual in claims.items():
        if name in manifest and manifest[name] != actual:
            raise LedgerBroken(f"manifest.json says {name} is {manifest[name]!r}, the bundle has {actual!r}",
                               index=min(start + (end - start), end) if name in ("end", "records") else None)


def _check_consistency(data: Any, earlier: Checkpoint, checkpoint: Checkpoint) -> None:
    if not isinstance(data, dict) or data.get("size1") != earlier.size or data.get("size2") != checkpoint.size:
        raise UnusableInput("consistency.json is not a proof between the earlier checkpoint and this one")
    proof = _hashes(data.get("proof"), "consistency.json proof", None)
    try:
        merkle.verify_consistency(earlier.size, checkpoint.size, proof, earlier.root, checkpoint.root)
    except merkle.InvalidProof as exc:
        raise LedgerBroken(
            f"the log is not consistent with the earlier checkpoint of size {earlier.size}: {exc}"
        ) from None


# -- databases -------------------------------------------------------------------------------


def verify_database(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    since_checkpoint: str | None = None,
) -> VerifyReport:
    """Verify a live ledger database: every record against its hash, the indices, the stored interior
    hashes, the tree state and the signed root.

    Records written after the latest checkpoint are checked against their stored hashes and
    counted in the report as unsigned. See :func:`verify_path` for arguments and errors.
    """
    store = SQLiteStore(path, create=False, readonly=True)
    try:
        return _verify_store(store, key, since_checkpoint)
    except sqlite3.DatabaseError as exc:
        raise UnusableInput(f"{path}: the database cannot be read ({exc})") from None
    except LedgerError as exc:
        raise UnusableInput(f"{path}: {exc}") from None
    finally:
        store.close()


def verify_postgres(
    url: str,
    *,
    schema: str = "aiobligations",
    key: str | None = None,
    since_checkpoint: str | None = None,
) -> VerifyReport:
    """Verify a live ledger kept in PostgreSQL, read-only, exactly as :func:`verify_database` does a
    SQLite file. See :func:`verify_path` for arguments and errors.
    """
    from .postgres import PostgresStore

    try:
        store = PostgresStore(url, schema=schema, readonly=True)
    except ConfigurationError as exc:
        raise UnusableInput(str(exc)) from None
    try:
        return _verify_store(store, key, since_checkpoint)
    except LedgerError as exc:
        raise UnusableInput(f"{store.path}: {exc}") from None
    finally:
        store.close()


def _verify_store(store: Any, key: str | None, since_checkpoint: str | None) -> VerifyReport:
    state = store.open()
    shipped = (store.get_meta("verifier_key") or b"").decode() or None
    verifier, pinned = _trusted_verifier(key, shipped, str(store.path))
    if not state.checkpoint:
        raise UnusableInput(f"{store.path}: the ledger has no signed checkpoint yet")
    checkpoint = _open_note(verifier, state.checkpoint, "the latest checkpoint", claimed=shipped)
    earlier = _since(verifier, since_checkpoint)
    start = state.pruned_start
    size = checkpoint.size
    tree = _compact(0, start, state.pruned_frontier, "the pruned prefix", start)
    roots: dict[int, bytes] = {}
    stops = sorted({s for s in (size, earlier.size if earlier else None) if s is not None and s >= start})
    roots.update({stop: tree.root() for stop in stops if stop == start})
    nodes = _NodeChecker(store, start)
    expected = start
    for chunk in _chunks(store.iter_records(start, 1 << 62), _CHUNK):
        leaves = []
        for index, leaf, data in chunk:
            if index != expected:
                raise LedgerBroken("the record is missing", index=expected)
            if type(data) is not bytes or type(leaf) is not bytes or len(leaf) != 32:
                # The writer stores both as BLOBs; SQL such as replace() or a bare number stores
                # TEXT or INTEGER instead: the row was edited outside aiobligations.
                raise LedgerBroken("the record or its hash is stored with the wrong type (altered)", index=index)
            if not data.startswith(b'{"v":1,"idx":%d,' % index):
                raise LedgerBroken("the record is not the one expected at this position", index=index)
            if sha256(b"\x00" + data).digest() != leaf:
                raise LedgerBroken("the record does not match its stored hash (altered)", index=index)
            leaves.append(bytes(leaf))
            expected += 1
        nodes.feed(expected - len(leaves), leaves)
        _extend(tree, leaves, stops, roots)
    if expected < max(state.size, size):
        raise LedgerBroken("the record is missing", index=expected)
    if expected > state.size:
        raise LedgerBroken("records are stored past the recorded tree size", index=state.size)
    if tree.hashes != state.frontier:
        raise LedgerBroken("the stored tree state does not match the records")
    if roots.get(size) != checkpoint.root:
        raise LedgerBroken("the stored hashes do not add up to the signed root (altered)", index=start)
    report = VerifyReport(checkpoint.origin, size, start, size, checkpoint.root, verifier.verifier_key, pinned)
    report.unsigned = state.size - size
    if not pinned:
        report.notes.append("trusted the database's own verifier key; pass --key to pin it")
    if earlier is not None:
        if earlier.size > size:
            raise LedgerBroken(f"the earlier checkpoint has {earlier.size} records, more than the log's {size}")
        if earlier.size in roots:
            if roots[earlier.size] != earlier.root:
                raise LedgerBroken(f"the log is not consistent with the earlier checkpoint of size {earlier.size}")
        else:
            reader = TreeReader(store, state.pruned_start, state.pruned_frontier)
            proof = reader.consistency_proof(earlier.size, size)
            _check_consistency({"size1": earlier.size, "size2": size,
                                "proof": [base64.b64encode(h).decode() for h in proof]}, earlier, checkpoint)
        report.since = earlier.size
    return report


def _chunks(rows: Iterator[tuple[int, bytes, bytes]], size: int) -> Iterator[list[tuple[int, bytes, bytes]]]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


def _extend(tree: merkle.CompactRange, leaves: list[bytes], stops: list[int], roots: dict[int, bytes]) -> None:
    """Extend ``tree``, noting its root whenever its size passes one of ``stops``."""
    for stop in stops:
        if tree.end < stop <= tree.end + len(leaves):
            cut = stop - tree.end
            tree.extend(leaves[:cut])
            roots[stop] = tree.root()
            leaves = leaves[cut:]
    tree.extend(leaves)


class _NodeChecker:
    """Recomputes the stored interior hashes (every NODE_STRIDE levels) from the leaves.

    A proof or a receipt is built from those stored hashes, so one that was altered must fail
    verification even though the records and the root are intact.
    """

    def __init__(self, store: Any, start: int) -> None:
        self._store = store
        self._width = 1 << NODE_STRIDE
        self._pending: dict[int, list[bytes]] = {}
        self._start = start

    def feed(self, first: int, leaves: list[bytes]) -> None:
        for offset, leaf in enumerate(leaves):
            self._add(0, first + offset, leaf)

    def _add(self, level: int, index: int, value: bytes) -> None:
        pending = self._pending.setdefault(level, [])
        if not pending and index % self._width:
            return  # Only whole, aligned groups below a stored node can be recomputed.
        pending.append(value)
        if len(pending) < self._width:
            return
        hashes = pending
        while len(hashes) > 1:
            hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        self._pending[level] = []
        parent_level = level + NODE_STRIDE
        parent = index // self._width
        try:
            stored = self._store.node_hashes(parent_level, parent, parent + 1)[0]
        except LedgerError:
            stored = None
        if stored != hashes[0]:
            raise LedgerBroken(
                f"the stored interior hash at level {parent_level} does not match the records under it",
                index=parent << parent_level,
            )
        self._add(parent_level, parent, hashes[0])
