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
from typing import IO, Any, TypeGuard

from ..errors import ConfigurationError, LedgerBroken, LedgerError, UnusableInput
from . import merkle
from .bundle import MEMBERS
from .note import BadSignature, Checkpoint, MalformedNote, UnknownKey, Verifier
from .reader import TreeReader
from .records import format_ts, verify_mac
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
        checkpoint_note: The verified checkpoint note, with any witness cosignature lines the
            bundle or database keeps for it (check them with
            :func:`aiobligations.witness.cosignature.check_quorum`).
        checkpoint_timestamps: The RFC 3161 responses kept for that checkpoint, as (TSA URL, DER),
            not verified (check them with :func:`aiobligations.witness.timestamp.verify_timestamp`).
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
    checkpoint_note: str = ""
    checkpoint_timestamps: list[tuple[str, bytes]] = field(default_factory=list)

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
    trust_shipped_key: bool = False,
    mac_key: bytes | None = None,
) -> VerifyReport:
    """Verify a bundle (folder or ``.tar.gz``) or a ledger database, whichever ``path`` is.

    Args:
        path: The bundle or database: a folder, a ``.tar.gz``, a SQLite file, or a PostgreSQL URL
            (``postgresql://…``, whose ledger lives in ``schema``).
        key: The verifier key to trust (``name+id+key``): the auditor pins the key the provider
            gave them. A checkpoint signed by any other key is a break.
        since_checkpoint: An earlier signed checkpoint note the auditor accepted; the log must be
            consistent with it.
        trust_shipped_key: Without ``key``, use the key shipped with the bundle or stored in the
            database (the report says so). Anyone can re-sign an altered log under a key of their
            own and ship that key, so this proves integrity only against a key checked elsewhere.
            Without ``key`` and without this, :class:`UnusableInput` is raised.
        mac_key: The key of the records' ``mac`` (:func:`~aiobligations.ledger.records.record_mac_key`,
            which the provider derives from its signing key and may give its auditors). With it,
            every record's mac is checked, so a record altered together with every hash stored
            beside it is named exactly; without it, such a break is located only to the smallest
            stored subtree.

    Returns:
        A :class:`VerifyReport` when everything checks out.

    Raises:
        LedgerBroken: a record, hash or signature does not match, or the checkpoint is signed by
            another key than ``key``; names the first bad index (or the table and row).
        UnusableInput: the input is missing, foreign or unreadable, ``key`` is malformed, or no key
            is pinned and ``trust_shipped_key`` is false.
    """
    trust: dict[str, Any] = {"trust_shipped_key": trust_shipped_key, "mac_key": mac_key}
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        return verify_postgres(path, schema=schema, key=key, since_checkpoint=since_checkpoint, **trust)
    path = Path(path)
    if path.is_dir():
        return verify_bundle(path, key=key, since_checkpoint=since_checkpoint, **trust)
    if not path.exists():
        raise UnusableInput(f"{path}: no such file or folder")
    if not path.is_file():
        # A FIFO would block the open until a writer came; a device would be read for ever.
        raise UnusableInput(f"{path}: not a regular file, a folder or a postgresql:// URL")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(16)
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot be read ({exc.strerror})") from None
    if magic.startswith(b"\x1f\x8b"):
        return verify_bundle(path, key=key, since_checkpoint=since_checkpoint, **trust)
    if magic.startswith(b"SQLite format 3"):
        return verify_database(path, key=key, since_checkpoint=since_checkpoint, **trust)
    raise UnusableInput(f"{path}: neither an audit bundle nor a ledger database")


def verify_bundle(
    path: str | os.PathLike[str],
    *,
    key: str | None = None,
    since_checkpoint: str | None = None,
    trust_shipped_key: bool = False,
    mac_key: bytes | None = None,
) -> VerifyReport:
    """Verify an audit bundle offline. See :func:`verify_path` for the arguments and errors."""
    path = Path(path)
    if path.is_dir():
        return _verify_folder(path, key, since_checkpoint, trust_shipped_key, mac_key)
    with tempfile.TemporaryDirectory(prefix="aiobligations-verify-") as tmp:
        _unpack(path, Path(tmp))
        return _verify_folder(Path(tmp), key, since_checkpoint, trust_shipped_key, mac_key)


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
                    if name == "records.jsonl":
                        try:
                            _copy_lines(source, handle)
                        except _LongLine:
                            return  # The verifier names the long line's index from the copy.
                    else:
                        shutil.copyfileobj(source, handle, 1 << 20)
            # Read to the end of the gzip stream so that a cut or corrupt trailer (its CRC and
            # length) is noticed even though tar's end-of-archive marker was already seen.
            assert tar.fileobj is not None
            while tar.fileobj.read(1 << 16):
                pass
    except (tarfile.TarError, EOFError, OSError, _zlib_error()) as exc:
        raise UnusableInput(f"{path}: not a readable .tar.gz bundle ({exc})") from None


class _LongLine(Exception):
    """``records.jsonl`` holds a line longer than any record; what was copied shows it."""


def _copy_lines(source: IO[bytes], target: IO[bytes]) -> None:
    """Copy ``records.jsonl`` out of the tarball, stopping just past a line longer than a record
    may be: the verifier reports that line as a break (naming its index) from what was copied, and
    a compression bomb (gigabytes of one endless line in a few megabytes) is never inflated to disk.

    Raises:
        _LongLine: the copy stopped early.
    """
    run = 0  # Bytes since the last newline.
    while chunk := source.read(1 << 20):
        end = chunk.rfind(b"\n")
        run = run + len(chunk) if end < 0 else len(chunk) - 1 - end
        target.write(chunk)
        if run > _MAX_RECORD + 1:
            raise _LongLine


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


_NO_KEY = ("no verifier key is pinned: pass --key with the key the provider gave you "
          "(or --trust-bundle-key to use the key the bundle or database carries, which proves nothing "
          "against whoever could rewrite it)")
"""Why verification without a pinned key is refused (exit 2)."""


def _trusted_verifier(key: str | None, shipped: str | None, source: str,
                      trust_shipped: bool = False) -> tuple[Verifier, bool]:
    """The verifier to check signatures with, and whether the auditor pinned it."""
    if key is None and not trust_shipped:
        raise UnusableInput(_NO_KEY)
    text = key if key is not None else shipped
    if text is None:
        raise UnusableInput(f"{source}: no verifier key is shipped with it (pass --key)")
    try:
        return Verifier.from_key(text.strip()), key is not None
    except ValueError as exc:
        what = "--key" if key is not None else f"{source}: verifier.key"
        raise UnusableInput(f"{what} is not a verifier key ({exc})") from None


def _open_note(verifier: Verifier, note: str, what: str, *, claimed: str | None = None,
               pinned: bool = False) -> Checkpoint:
    """Verify a signed checkpoint note with ``verifier``.

    ``claimed`` is the key the bundle or database says it is signed by: when that is the trusted
    key itself, a note without a valid signature line for it has been altered (exit 1). With a
    ``pinned`` key, a note signed by another key is a break too (exit 1): the log was re-signed or
    replaced, whatever key it ships.
    """
    try:
        return Checkpoint.parse(verifier.verify(note))
    except UnknownKey:
        if claimed is not None and claimed.strip() == verifier.verifier_key:
            raise LedgerBroken(f"{what} has no signature line for its own key (altered)") from None
        if pinned:
            raise LedgerBroken(
                f"{what} is signed by another key, not by the pinned {verifier.name}+{verifier.key_id.hex()} "
                "(re-signed or replaced)"
            ) from None
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


def _verify_folder(folder: Path, key: str | None, since_checkpoint: str | None,
                   trust_shipped: bool = False, mac_key: bytes | None = None) -> VerifyReport:
    for name in MEMBERS:
        _refuse_special(folder / name)
    if not (folder / "records.jsonl").exists() or not (folder / "checkpoint").exists():
        raise UnusableInput(f"{folder}: not an audit bundle (no records.jsonl or checkpoint)")
    shipped = _read_small(folder, "verifier.key", required=False)
    verifier, pinned = _trusted_verifier(key, shipped, str(folder), trust_shipped)
    note = _read_small(folder, "checkpoint") or ""
    checkpoint = _open_note(verifier, note, "the checkpoint", claimed=shipped, pinned=pinned)
    earlier = _since(verifier, since_checkpoint)
    if earlier is not None and earlier.origin != checkpoint.origin:
        raise UnusableInput(f"the earlier checkpoint is for {earlier.origin!r}, not {checkpoint.origin!r}")

    frontier = _json(_read_small(folder, "frontier.json") or "", "frontier.json")
    if not isinstance(frontier, dict) or not isinstance(frontier.get("start"), int) or frontier["start"] < 0:
        raise LedgerBroken("frontier.json has no valid start index")
    start = frontier["start"]
    left = _hashes(frontier.get("hashes", []), "frontier.json hashes", start)
    tree = _compact(0, start, left, "frontier.json hashes", start)

    macs = _Macs(mac_key) if mac_key is not None else None
    count, bad = _stream_records(folder, start, tree, macs)
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
    report = VerifyReport(checkpoint.origin, size, start, end, root, verifier.verifier_key, pinned,
                          checkpoint_note=note,
                          checkpoint_timestamps=_timestamps_member(_read_small(folder, "timestamps.json",
                                                                               required=False)))
    if not pinned:
        report.notes.append("trusted the bundle's own verifier.key (--trust-bundle-key): anyone who can rewrite "
                            "the bundle can re-sign it; pass --key to pin the key you were given")
    if macs is not None:
        report.notes.extend(macs.notes())
    if earlier is not None:
        text = _read_small(folder, "consistency.json", required=False)
        if text is None:
            raise UnusableInput(
                "the bundle has no consistency.json; export it with --since-checkpoint to include one"
            )
        _check_consistency(_json(text, "consistency.json"), earlier, checkpoint)
        report.since = earlier.size
    return report


def _timestamps_member(text: str | None) -> list[tuple[str, bytes]]:
    """The bundle's ``timestamps.json``, read leniently: an entry that is not one is left out (it then
    counts for nothing when the timestamps are checked)."""
    try:
        data = json.loads(text) if text else []
    except ValueError:
        return []
    found = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("tsa"), str) and isinstance(item.get("response"), str):
            try:
                found.append((item["tsa"], base64.b64decode(item["response"], validate=True)))
            except (binascii.Error, ValueError):
                continue
    return found


def _compact(start: int, end: int, hashes: list[bytes], what: str, index: int) -> merkle.CompactRange:
    try:
        return merkle.CompactRange.from_hashes(start, end, hashes)
    except ValueError as exc:
        raise LedgerBroken(f"{what}: {exc}", index=index) from None


def _stream_records(folder: Path, start: int, tree: merkle.CompactRange,
                    macs: _Macs | None = None) -> tuple[int, LedgerBroken | None]:
    """Hash every record into ``tree``; return the count and the first break found, if any."""
    hashes_path = folder / "hashes.bin"
    listed: IO[bytes] | None = open(hashes_path, "rb") if hashes_path.exists() else None
    count = 0
    try:
        with open(folder / "records.jsonl", "rb", buffering=1 << 20) as records:
            while True:
                lines: list[bytes] = []
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
                mac_break = macs.first_break(lines, start + count) if macs is not None else None
                if listed is not None:
                    expected = listed.read(32 * len(leaves))
                    if expected != b"".join(leaves):
                        bad = _first_mismatch(lines, leaves, expected, start + count)
                        if mac_break is not None and (bad.index is None or (
                                mac_break.index is not None and mac_break.index < bad.index)):
                            bad = mac_break
                        return count, bad
                if mac_break is not None:
                    return count, mac_break
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
    trust_shipped_key: bool = False,
    mac_key: bytes | None = None,
) -> VerifyReport:
    """Verify a live ledger database: every record against its hash and its index columns, the
    interior hashes, the interaction-id index, the kept checkpoints, the metadata rows, the tree
    state and the signed root.

    Records written after the latest checkpoint are checked against their stored hashes and
    counted in the report as unsigned. See :func:`verify_path` for arguments and errors.
    """
    store = SQLiteStore(path, create=False, readonly=True)
    try:
        return _verify_store(store, key, since_checkpoint, trust_shipped_key, mac_key)
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
    trust_shipped_key: bool = False,
    mac_key: bytes | None = None,
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
        return _verify_store(store, key, since_checkpoint, trust_shipped_key, mac_key)
    except LedgerError as exc:
        raise UnusableInput(f"{store.path}: {exc}") from None
    finally:
        store.close()


def _select(store: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on either store; ``{t}`` prefixes table names, ``?`` marks parameters."""
    schema = getattr(store, "schema", None)
    rows: list[tuple[Any, ...]]
    if schema is not None:  # PostgreSQL
        rows = store._query(sql.replace("{t}", f"{schema}.").replace("?", "%s"), params)
    else:
        rows = store._reader().execute(sql.replace("{t}", ""), params).fetchall()
    return rows


def _check_meta(store: Any, verifier: Verifier, checkpoint: Checkpoint, shipped: str | None, pinned: bool) -> None:
    """The metadata rows a verifier can check: ``origin`` and ``verifier_key`` against the signed checkpoint."""
    origin = (store.get_meta("origin") or b"").decode("utf-8", "replace")
    if origin != checkpoint.origin:
        raise LedgerBroken(f"table meta, row 'origin': says {origin[:80]!r}, the signed checkpoint is for "
                           f"{checkpoint.origin!r} (altered)")
    if pinned and (shipped or "").strip() != verifier.verifier_key:
        raise LedgerBroken("table meta, row 'verifier_key': not the pinned key that signs the checkpoint (altered)")


def _record_fields(data: bytes, index: int) -> tuple[str, str, str | None]:
    """The ``ts``, ``kind`` and interaction id (as the writer indexes it) carried by record bytes."""
    try:
        value = json.loads(data)
        ts, kind = value["ts"], value["kind"]
    except (ValueError, KeyError, TypeError):
        raise LedgerBroken("the record is not a JSON object with ts and kind", index=index) from None
    ident = value.get("interaction_id") if kind == "interaction" else None
    if not isinstance(ident, str) or len(ident) > 200:
        ident = None
    return ts, kind, ident


def _column_ts_matches(column: object, text: str) -> TypeGuard[float]:
    if type(column) is not float and type(column) is not int:
        return False
    try:
        return format_ts(float(column)) == text
    except (ValueError, OverflowError):
        return False


class _InteractionIndex:
    """Checks the ``interactions`` table (interaction id -> index) against the records, in one pass.

    Receipts and the request desk find an interaction's record through this table, so a row that
    points at another record, or a record missing its row, is a break naming the table and row.
    """

    def __init__(self, store: Any, start: int) -> None:
        self._store = store
        rows = _select(store, "SELECT interaction_id, idx FROM {t}interactions WHERE idx >= ? ORDER BY idx, interaction_id",
                       (start,))
        self._rows = iter(rows)
        self._next = next(self._rows, None)

    def record(self, index: int, ident: str | None) -> None:
        """Check the rows up to ``index``, whose record carries interaction id ``ident`` (or none)."""
        while self._next is not None and self._next[1] <= index:
            row_id, row_index = self._next
            self._next = next(self._rows, None)
            if row_index < index:
                raise LedgerBroken(f"table interactions, row {str(row_id)[:80]!r}: points at record {row_index}, "
                                   "which is missing or not that interaction's record (altered)")
            if row_id != ident:
                raise LedgerBroken(f"table interactions, row {str(row_id)[:80]!r}: points at record {row_index}, "
                                   f"whose interaction id is {ident!r} (altered)")
            return
        if ident is None or "\x00" in ident:
            return  # PostgreSQL text cannot hold NUL: such an id is never indexed.
        first = self._store.find_interaction(ident)
        if first is None or first >= index:
            raise LedgerBroken(f"table interactions: no row for the interaction id {ident[:80]!r} of this record "
                               "(deleted or altered)", index=index)
        # An earlier record holds the id (a replay keeps the first); that row was checked already.

    def finish(self, end: int) -> None:
        """Every row left points past the last stored record."""
        self.record(end, None)


def _check_nodes(store: Any, size: int) -> None:
    """No stored interior hash may lie outside the tree: the writer would collide with it later."""
    for level, count, low, high in _select(store, "SELECT level, count(*), min(idx), max(idx) FROM {t}nodes GROUP BY level"):
        expected = size >> level if isinstance(level, int) and level > 0 and not level % NODE_STRIDE else 0
        if high is not None and (low < 0 or high >= expected or count > expected):
            raise LedgerBroken(f"table nodes: a row at level {level}, index {high if high >= expected else low}, "
                               f"is not a node of the tree of {size} records (altered)")


def _verify_store(store: Any, key: str | None, since_checkpoint: str | None,
                  trust_shipped: bool = False, mac_key: bytes | None = None) -> VerifyReport:
    state = store.open()
    shipped = (store.get_meta("verifier_key") or b"").decode("utf-8", "replace") or None
    verifier, pinned = _trusted_verifier(key, shipped, str(store.path), trust_shipped)
    if not state.checkpoint:
        if state.size or state.stored_end > state.pruned_start:
            # The writer signs with the first batch of records: records without a checkpoint were edited.
            raise LedgerBroken("table meta, row 'checkpoint': missing, yet records are stored (deleted)")
        raise UnusableInput(f"{store.path}: the ledger has no signed checkpoint yet")
    checkpoint = _open_note(verifier, state.checkpoint, "the latest checkpoint", claimed=shipped, pinned=pinned)
    _check_meta(store, verifier, checkpoint, shipped, pinned)
    earlier = _since(verifier, since_checkpoint)
    start = state.pruned_start
    size = checkpoint.size
    try:
        tree = merkle.CompactRange.from_hashes(0, start, state.pruned_frontier)
    except ValueError as exc:
        raise LedgerBroken(f"table meta, row 'pruned': {exc} (altered)") from None
    history = store.checkpoints()
    roots: dict[int, bytes] = {}
    wanted = {size, earlier.size if earlier else None, *(row[0] for row in history if isinstance(row[0], int))}
    stops = sorted({s for s in wanted if s is not None and s >= start})
    roots.update({stop: tree.root() for stop in stops if stop == start})
    nodes = _NodeChecker(store, start)
    index_check = _InteractionIndex(store, start)
    times: dict[int, float] = {}
    needed_times = {s - 1 for s in stops} | {s for s in stops}
    columns = store.kinds_in(start, 1 << 62)
    records = store.iter_records(start, 1 << 62)
    macs = _Macs(mac_key) if mac_key is not None else None
    try:
        expected, last_ts = _stream(records, columns, start, nodes, index_check, tree, stops, roots, needed_times,
                                    times, macs)
    finally:
        for generator in (records, columns):
            close = getattr(generator, "close", None)
            if close is not None:
                close()
    if expected < max(state.size, size):
        raise LedgerBroken("the record is missing", index=expected)
    if expected > state.size:
        raise LedgerBroken("records are stored past the recorded tree size (table meta, row 'tree')",
                           index=state.size)
    index_check.finish(expected)
    intact = roots.get(size) == checkpoint.root
    node_break = nodes.broken(intact)
    if node_break is not None:
        raise node_break
    if not intact:
        raise _misplaced(tree, state, start, size)
    if tree.hashes != state.frontier:
        if state.size > size:
            raise _misplaced(tree, state, size, state.size)
        raise LedgerBroken("the stored tree state does not match the records")
    _check_nodes(store, state.size)
    stored_last = _float(store.get_meta("last_ts"))
    if last_ts is not None and (stored_last is None or stored_last < last_ts):
        raise LedgerBroken(f"table meta, row 'last_ts': {stored_last!r} is before the last record's time "
                           "(altered: the next records would go back in time)")
    _check_history(history, verifier, checkpoint, roots, times, store, state, start)
    from ..witness.client import cosigned_checkpoint

    report = VerifyReport(checkpoint.origin, size, start, size, checkpoint.root, verifier.verifier_key, pinned,
                          checkpoint_note=cosigned_checkpoint(store, state.checkpoint) or state.checkpoint,
                          checkpoint_timestamps=[(tsa, response) for _, tsa, kept, response
                                                 in store.timestamps(size) if kept == state.checkpoint])
    report.unsigned = state.size - size
    if not pinned:
        report.notes.append("trusted the database's own verifier key (--trust-bundle-key): anyone who can write "
                            "the database can re-sign it; pass --key to pin the key you were given")
    if macs is not None:
        report.notes.extend(macs.notes())
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


def _stream(records: Iterator[tuple[int, bytes, bytes]], columns: Iterator[tuple[int, float, str]], start: int,
            nodes: _NodeChecker, index_check: _InteractionIndex, tree: merkle.CompactRange, stops: list[int],
            roots: dict[int, bytes], needed_times: set[int], times: dict[int, float],
            macs: _Macs | None = None) -> tuple[int, float | None]:
    """Check every stored record, in order; return one past the last index and the last record's time."""
    expected = start
    last_ts: float | None = None
    for chunk in _chunks(records, _CHUNK):
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
            if macs is not None and (broken := macs.check(data, index)) is not None:
                raise broken
            column_index, column_ts, column_kind = next(columns, (None, None, None))
            if column_index != index:
                raise LedgerBroken("the record is missing", index=index)  # pragma: no cover - one table
            ts, kind, ident = _record_fields(data, index)
            if not _column_ts_matches(column_ts, ts):
                raise LedgerBroken(f"table records, column ts: {column_ts!r} is not the record's time {ts} (altered)",
                                   index=index)
            if column_kind != kind:
                raise LedgerBroken(f"table records, column kind: {str(column_kind)[:80]!r} is not the record's kind "
                                   f"{str(kind)[:80]!r} (altered)", index=index)
            index_check.record(index, ident)
            last_ts = float(column_ts)
            if index in needed_times:
                times[index] = last_ts
            leaves.append(bytes(leaf))
            expected += 1
        nodes.feed(expected - len(leaves), leaves)
        _extend(tree, leaves, stops, roots)
    return expected, last_ts


class _Macs:
    """Checks each record's ``mac`` under the record key, in index order.

    Records from before records had a mac carry none; once one carries a mac, every later record
    must (a mac cut off is an alteration like any other).
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.checked = 0
        self.without = 0

    def check(self, data: bytes, index: int) -> LedgerBroken | None:
        valid = verify_mac(self.key, data)
        if valid is None and not self.checked:
            self.without += 1
            return None
        if not valid:
            what = "does not match" if valid is False else "is missing"
            return LedgerBroken(f"the record's mac {what}: this record was altered (its stored hashes may have been "
                                "altered with it, but only the record key makes a mac)", index=index)
        self.checked += 1
        return None

    def first_break(self, lines: list[bytes], first: int) -> LedgerBroken | None:
        for offset, line in enumerate(lines):
            broken = self.check(line[:-1], first + offset)
            if broken is not None:
                return broken
        return None

    def notes(self) -> list[str]:
        notes = [f"checked the mac of {self.checked} records with the record key: each is as the log wrote it"]
        if self.without:
            notes.append(f"{self.without} older records were written before records carried a mac")
        return notes


def _float(value: bytes | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _misplaced(tree: merkle.CompactRange, state: Any, start: int, end: int) -> LedgerBroken:
    """The break when every record matches its stored hash but the hashes do not add up.

    The records were altered together with their stored hashes. The stored interior hashes were
    already checked, so the altered record lies under the first subtree of the tree state (the
    compact range the writer stored in the same transaction) that the records no longer give.
    Within one subtree nothing stored says which leaf it was: with a single leaf it is exact,
    otherwise the first record of the smallest subtree is named and the range given.
    """
    subtrees = merkle.decompose(0, state.size)
    if len(subtrees) == len(state.frontier) and len(tree.hashes) == len(subtrees):
        for (level, node), mine, stored in zip(subtrees, tree.hashes, state.frontier):
            first, last = node << level, ((node + 1) << level) - 1
            if mine != stored and last >= start:
                first = max(first, start)
                if first == last:
                    return LedgerBroken("the record was altered together with its stored hash", index=first)
                return LedgerBroken(f"one of records {first}..{last} was altered together with its stored hash "
                                    "(nothing stored tells which)", index=first)
    return LedgerBroken("the stored hashes do not add up to the signed root (altered)", index=start)


def _check_history(history: list[tuple[Any, Any, Any]], verifier: Verifier, checkpoint: Checkpoint,
                   roots: dict[int, bytes], times: dict[int, float], store: Any, state: Any, start: int) -> None:
    """Every kept checkpoint must be signed by the key, for this log, and agree with the records."""
    reader: TreeReader | None = None
    for size, ts, note in history:
        what = f"table checkpoints, row {size!r}"
        if not isinstance(note, str):
            raise LedgerBroken(f"{what}: the note is not text (altered)")
        kept = _open_note(verifier, note, what, claimed=verifier.verifier_key)
        if kept.size > checkpoint.size and kept.origin == checkpoint.origin:
            raise LedgerBroken(f"table meta, row 'checkpoint': older than the kept checkpoint of size {kept.size} "
                               "(rolled back)")
        if kept.size != size or kept.origin != checkpoint.origin or size > state.size:
            raise LedgerBroken(f"{what}: its note is for size {kept.size} of {kept.origin!r} (altered)")
        root = roots.get(size)
        if root is None and size <= checkpoint.size:
            # Inside the pruned prefix: checked by a consistency proof when the kept hashes allow one.
            if reader is None:
                reader = TreeReader(store, state.pruned_start, state.pruned_frontier)
            try:
                proof = reader.consistency_proof(size, checkpoint.size)
            except LedgerError:
                proof = None
            try:
                if proof is not None:
                    merkle.verify_consistency(size, checkpoint.size, proof, kept.root, checkpoint.root)
            except merkle.InvalidProof:
                raise LedgerBroken(f"{what}: not consistent with the latest checkpoint (altered)") from None
        elif root != kept.root:
            raise LedgerBroken(f"{what}: its root is not the root of the first {size} records (altered)")
        low, high = times.get(size - 1), times.get(size)
        if (type(ts) is not float and type(ts) is not int) or (low is not None and ts < low) or (
                high is not None and ts > high):
            raise LedgerBroken(f"{what}, column ts: {ts!r} is not when those records were signed (altered)")


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
        self.mismatch: tuple[bool, int, int, int, int] | None = None
        """(stored hash present, level, index, first record, last record) of the first mismatch."""

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
        if stored != hashes[0] and self.mismatch is None:
            first = parent << parent_level
            last = first + (1 << parent_level) - 1
            # Which is altered, the stored hash or the records under it, is decided against the
            # signed root once every record is read (see ``_verify_store``).
            self.mismatch = (stored is not None and level == 0, parent_level, parent, first, last)
        self._add(parent_level, parent, hashes[0])

    def broken(self, records_intact: bool) -> LedgerBroken | None:
        """The first mismatch found, if any, as a break.

        When the records add up to the signed root, the stored hash is the altered one (or it is
        missing). Otherwise every record under it matched its stored hash (checked first), so one of
        them was altered together with that hash; nothing stored says which one.
        """
        if self.mismatch is None:
            return None
        found, parent_level, parent, first, last = self.mismatch
        if not records_intact and found:
            return LedgerBroken(
                f"the stored interior hash at level {parent_level} over records {first}..{last} does not "
                "match them: one of them was altered together with its stored hash (nothing stored tells which)",
                index=first,
            )
        return LedgerBroken(
            f"table nodes, level {parent_level}, index {parent}: the stored interior hash "
            f"{'does not match the records under it' if found else 'is missing'} (altered)",
            index=first,
        )
