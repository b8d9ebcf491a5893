"""Audit bundles: export a range of the log, and verify a bundle or a database offline.

A bundle is a folder or a ``.tar.gz`` holding:

``records.jsonl``
    One record per line, the exact leaf bytes.
``hashes.bin``
    The 32-byte leaf hash of each record, in order. It lets a verifier name the first altered record
    instead of only saying that the root differs: the hashes themselves are checked against the
    signed root, so a record whose hash differs from its listed one is the altered one.
``checkpoint``
    The signed note the range is verified against, followed by every witness cosignature kept for
    it (C2SP tlog-cosignature lines; a verifier ignores lines of keys it does not know).
``frontier.json``
    ``{"start": N, "hashes": [...]}``: the compact range of the records before the bundle. When the
    bundle stops before the checkpoint's size E < n, also ``"end": E`` and ``"right": [...]``,
    the compact range of ``[E, n)``.
``timestamps.json``
    Optional: ``[{"tsa": URL, "response": base64 DER}]``, the RFC 3161 timestamps kept for the
    checkpoint (``aiobligations verify --tsa-root`` checks them).
``verifier.key``
    The log's verifier key (an auditor should pin the key it got from the provider with ``--key``).
``manifest.json``
    What the bundle claims: origin, range, counts, times. Informational; every claim is checked.
``consistency.json``
    Optional: a consistency proof from an auditor's earlier checkpoint.

Verification streams: memory stays flat however long the log is.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tarfile
import tempfile
import time
from hashlib import sha256
from pathlib import Path
from typing import Any

from ..errors import UnusableInput
from .note import Checkpoint, NoteError
from .reader import TreeReader, checkpoint_of
from .records import format_ts
from .store import SQLiteStore, Store

__all__ = ["BUNDLE_FORMAT", "MEMBERS", "export_bundle"]

BUNDLE_FORMAT = "aiobligations-bundle/1"
"""The ``format`` in every manifest this version writes."""

MEMBERS = (
    "checkpoint",
    "timestamps.json",
    "verifier.key",
    "manifest.json",
    "frontier.json",
    "consistency.json",
    "hashes.bin",
    "records.jsonl",
)
"""The members a bundle may hold, in the order a ``.tar.gz`` stores them."""

# -- export ----------------------------------------------------------------------------------


def export_bundle(
    database: str | os.PathLike[str] | Store,
    out: str | os.PathLike[str],
    *,
    start_time: float | None = None,
    end_time: float | None = None,
    since_checkpoint: str | None = None,
) -> dict[str, Any]:
    """Write an audit bundle of a ledger database, reading it without taking a write lock.

    The bundle covers records up to the latest signed checkpoint; records sequenced after it are
    left for the next export, since no signature covers them yet.

    Args:
        database: The ledger's SQLite file (the service may be running), or a :class:`Store` not yet
            opened (any backend: it is opened, read and closed here).
        out: A folder (created; must not exist) or a path ending in ``.tar.gz``.
        start_time: Only records sequenced at or after this Unix time.
        end_time: Only records sequenced before this Unix time.
        since_checkpoint: An auditor's earlier signed checkpoint note; the bundle then includes a
            consistency proof from it.

    Returns:
        The manifest written.

    Raises:
        UnusableInput: the database or the earlier checkpoint is unusable, or ``out`` exists.
    """
    out = Path(out)
    if out.exists():
        raise UnusableInput(f"{out} already exists; choose a new path")
    store = database if isinstance(database, Store) else SQLiteStore(database, create=False, readonly=True)
    try:
        state = store.open()
        if not state.checkpoint:
            raise UnusableInput(f"{database}: the ledger has no signed checkpoint yet")
        checkpoint = checkpoint_of(state.checkpoint)
        size = checkpoint.size
        reader = TreeReader(store, state.pruned_start, state.pruned_frontier)
        first = reader.first_index
        begin = first if start_time is None else reader.index_at(start_time, size)
        finish = size if end_time is None else reader.index_at(end_time, size)
        finish = max(begin, finish)
        consistency = None
        if since_checkpoint is not None:
            consistency = _consistency_member(reader, since_checkpoint, size)
        tarball = out.name.endswith((".tar.gz", ".tgz"))
        folder = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent)) if tarball else out
        try:
            if not tarball:
                folder.mkdir(parents=True)
            manifest = _write_members(
                folder, store, reader, _with_cosignatures(store, state.checkpoint), checkpoint, begin, finish,
                consistency,
                verifier_key=(store.get_meta("verifier_key") or b"").decode(),
            )
            _write_timestamps(folder, store, state.checkpoint, size)
            if tarball:
                _pack(folder, out)
        except BaseException:
            if tarball or folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            if tarball:
                out.unlink(missing_ok=True)
            raise
        if tarball:
            shutil.rmtree(folder, ignore_errors=True)
        return manifest
    finally:
        store.close()


def _with_cosignatures(store: Store, note: str) -> str:
    """The checkpoint note with the witnesses' cosignatures of it appended (none kept: as it is)."""
    from ..witness.client import cosigned_checkpoint

    return cosigned_checkpoint(store, note) or note


def _write_timestamps(folder: Path, store: Store, note: str, size: int) -> None:
    """``timestamps.json``: the RFC 3161 responses kept for exactly this checkpoint, if any."""
    kept = [{"tsa": tsa, "response": base64.b64encode(response).decode()}
            for _, tsa, kept_note, response in store.timestamps(size) if kept_note == note]
    if kept:
        (folder / "timestamps.json").write_text(json.dumps(kept, indent=1) + "\n")


def _consistency_member(reader: TreeReader, note: str, size: int) -> dict[str, Any]:
    try:
        old = checkpoint_of(note)
    except NoteError as exc:
        raise UnusableInput(f"the earlier checkpoint is not a checkpoint note ({exc})") from None
    if not 0 < old.size <= size:
        raise UnusableInput(f"the earlier checkpoint's size {old.size} is not within 1..{size}")
    proof = reader.consistency_proof(old.size, size)
    return {"size1": old.size, "size2": size, "proof": [base64.b64encode(h).decode() for h in proof]}


def _write_members(
    folder: Path,
    store: Store,
    reader: TreeReader,
    note: str,
    checkpoint: Checkpoint,
    begin: int,
    finish: int,
    consistency: dict[str, Any] | None,
    *,
    verifier_key: str,
) -> dict[str, Any]:
    b64 = base64.b64encode
    count = 0
    first_ts = last_ts = None
    digest = sha256()
    with open(folder / "records.jsonl", "wb") as records, open(folder / "hashes.bin", "wb") as hashes:
        for index, leaf, data in store.iter_records(begin, finish):
            if index != begin + count:
                raise UnusableInput(f"the database is missing record {begin + count}; run verify on it")
            line = bytes(data) + b"\n"
            records.write(line)
            digest.update(line)
            hashes.write(leaf)
            count += 1
        if count != finish - begin:
            raise UnusableInput(f"the database is missing record {begin + count}; run verify on it")
    if count:
        first_ts, last_ts = store.ts_at(begin), store.ts_at(finish - 1)
    frontier: dict[str, Any] = {
        "start": begin,
        "hashes": [b64(h).decode() for h in reader.compact_range(0, begin)],
    }
    if finish < checkpoint.size:
        frontier["end"] = finish
        frontier["right"] = [b64(h).decode() for h in reader.compact_range(finish, checkpoint.size)]
    (folder / "frontier.json").write_text(json.dumps(frontier, indent=1) + "\n")
    (folder / "checkpoint").write_text(note, encoding="utf-8")
    (folder / "verifier.key").write_text(verifier_key + "\n", encoding="utf-8")
    if consistency is not None:
        (folder / "consistency.json").write_text(json.dumps(consistency, indent=1) + "\n")
    manifest = {
        "format": BUNDLE_FORMAT,
        "origin": checkpoint.origin,
        "created": format_ts(time.time()),
        "checkpoint_size": checkpoint.size,
        "start": begin,
        "end": finish,
        "records": count,
        "first_record_ts": format_ts(first_ts) if first_ts is not None else None,
        "last_record_ts": format_ts(last_ts) if last_ts is not None else None,
        "records_sha256": digest.hexdigest(),
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _pack(folder: Path, out: Path) -> None:
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            for name in MEMBERS:
                path = folder / name
                if path.exists():
                    info = tar.gettarinfo(str(path), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


