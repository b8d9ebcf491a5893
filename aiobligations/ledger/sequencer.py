"""The sequencer: turns a batch of queued items into one :class:`~aiobligations.ledger.store.Batch`.

Pure bookkeeping, no threads and no writes: it assigns contiguous indices and the sequencing time,
seals personal data under each subject's key, serialises each record once, extends the Merkle
tree's compact range (noting the interior hashes a store keeps), and signs a checkpoint when one is
due. The caller writes the batch to a store and, only once it is durable, calls :meth:`adopt`; a
failed write leaves the sequencer as it was. A thread writer, the shared writer process and (next)
a sequencer elected among replicas all run this same code.
"""

from __future__ import annotations

import binascii
import os
from hmac import digest as hmac_digest
import time
from collections.abc import Callable, Sequence
from hashlib import sha256
from typing import Any

from . import merkle
from ._items import OP_DEFER, OP_ERASE, OP_RECORD, OP_SIGN, Item, build, erased_pseudonym
from .crypto import SubjectCrypto, sealing_aad
from .note import Checkpoint, Signer
from .reader import checkpoint_of
from .records import PreparedRecord, format_ts, record_mac_key
from .store import NODE_STRIDE, Batch, StoreState

__all__ = ["Sequencer"]

KeyLookup = Callable[[Sequence[str]], dict[str, tuple[bytes, str]]]


class Sequencer:
    """The tree's state and the rules that extend it.

    Args:
        origin: The log's name (the first line of every checkpoint).
        signer: Signs checkpoints.
        crypto: Pseudonyms and subject keys.
        state: The store's state when it was opened.
        get_keys: Looks up wrapped subject keys (``Store.get_keys``).
        checkpoint_interval: 0 signs after every batch; else at most this often (seconds).
        history_interval: Keep a checkpoint in the store's history at most this often (seconds).
    """

    def __init__(self, *, origin: str, signer: Signer, crypto: SubjectCrypto, state: StoreState,
                 get_keys: KeyLookup, checkpoint_interval: float, history_interval: float,
                 pseudonymous: bool = False) -> None:
        self.origin = origin
        #: Subjects arrive as pseudonyms already (from a replica's queue), not as the person's id.
        self.pseudonymous = pseudonymous
        self.signer = signer
        self.crypto = crypto
        self._get_keys = get_keys
        self.interval = checkpoint_interval
        self.history_interval = history_interval
        self.size = state.size
        self.frontier = state.frontier
        self.last_ts = state.last_ts
        self.checkpoint = state.checkpoint
        self.signed_size = checkpoint_of(state.checkpoint).size if state.checkpoint else 0
        self.last_sign = 0.0
        self.last_history = 0.0
        # Everything of the sealing associated data but the index and the pseudonym.
        self._aad_prefix = sealing_aad(origin, 0, "")[:-2]
        self._mac_key = record_mac_key(signer.private_key)

    def idle_timeout(self) -> float | None:
        """How long the writer may sleep before a due checkpoint must be signed (``None``: forever)."""
        if self.interval and self.signed_size < self.size:
            return max(0.0, self.last_sign + self.interval - time.time())
        return None

    @property
    def unsigned(self) -> bool:
        """Whether records exist that no checkpoint covers yet."""
        return self.signed_size < self.size

    def build_deferred(self, items: list[Item]) -> None:
        """Build the records of deferred items in place (once: a retried item is the built record)."""
        for position, item in enumerate(items):
            if item[0] == OP_DEFER:
                items[position] = (OP_RECORD, build(*item[1]), item[2])

    def sequence(self, items: list[Item], new_keys: dict[str, bytes], *, sign: bool = False,
                 extra_meta: list[tuple[str, bytes]] | None = None) -> tuple[Batch, list[tuple[Any, Any]]]:
        """The batch for ``items`` and each waiter's value (its index, or the size for a flush).

        Subject keys created on the way are added to ``new_keys`` (the caller forgets them with
        :meth:`forget_keys` if the batch does not commit). Nothing of the sequencer's state changes.
        """
        # This loop is the ledger's hot path: every name it uses per record is a local.
        crypto = self.crypto
        pseudonym_of = str if self.pseudonymous else crypto.pseudonym
        ts = max(time.time(), self.last_ts)
        ts_text = format_ts(ts).encode()
        aad_prefix = self._aad_prefix
        index = self.size
        frontier = list(self.frontier)
        rows: list[tuple[int, float, str, bytes, bytes]] = []
        nodes: list[tuple[int, int, bytes]] = []
        results: list[tuple[Any, Any]] = []
        erased: list[str] = []
        interactions: list[tuple[str, int]] = []
        ciphers = self._ciphers(items, new_keys)
        nonces = os.urandom(12 * len(items))
        node_hash = merkle.node_hash
        b64 = binascii.b2a_base64
        mac_key = self._mac_key
        for position, (op, payload, waiter) in enumerate(items):
            known = None
            if op == OP_ERASE:
                pseudonym = known = erased_pseudonym(payload, pseudonym_of)
                erased.append(pseudonym)
                crypto.forget(pseudonym)
                ciphers.pop(pseudonym, None)
                new_keys.pop(pseudonym, None)
                payload = PreparedRecord("subject.erased", b"", payload, None)
            elif op != OP_RECORD:
                sign = sign or op == OP_SIGN
                results.append((waiter, index))
                continue
            tail = b""
            subject = payload.subject
            if subject is not None:
                pseudonym = known if known is not None else pseudonym_of(subject)
                tail = b',"subject":"%s"' % pseudonym.encode()
                if payload.personal is not None:
                    cipher = ciphers.get(pseudonym)
                    if cipher is None:
                        # The subject was erased earlier in this very batch: a fresh key.
                        key = os.urandom(32)
                        new_keys[pseudonym] = key
                        cipher = ciphers[pseudonym] = crypto.remember(pseudonym, key)
                    aead, key_id = cipher
                    nonce = nonces[12 * position : 12 * position + 12]
                    aad = b"%s%d\n%s" % (aad_prefix, index, pseudonym.encode())
                    sealed = b64(key_id + nonce + aead.encrypt(nonce, payload.personal, aad), newline=False)
                    tail += b',"sealed":"%s"' % sealed
            head = b'{"v":1,"idx":%d,"ts":"%s","kind":%s%s%s' % (
                index, ts_text, payload.kind_json, payload.body, tail
            )
            # The mac (records.mac_suffix, inlined on this hot path): which record changed, for the key's holder.
            data = b'%s,"mac":"%s"}' % (head, b64(hmac_digest(mac_key, head, "sha256")[:16], newline=False))
            leaf = sha256(b"\x00" + data).digest()
            # Add the leaf to the compact range, noting the stored subtrees it completes.
            node = leaf
            level = 0
            at = index
            while at & 1:
                node = node_hash(frontier.pop(), node)
                level += 1
                at >>= 1
                if not level % NODE_STRIDE:
                    nodes.append((level, at, node))
            frontier.append(node)
            rows.append((index, ts, payload.kind, leaf, data))
            if payload.interaction_id is not None:
                interactions.append((payload.interaction_id, index))
            results.append((waiter, index))
            index += 1

        checkpoint = None
        history = False
        if rows or sign:
            if sign or not self.interval or ts - self.last_sign >= self.interval:
                root = merkle.CompactRange.from_hashes(0, index, frontier).root()
                checkpoint = self.signer.sign(Checkpoint(self.origin, index, root).to_text())
                history = ts - self.last_history >= self.history_interval
        master = crypto.master
        batch = Batch(
            records=rows,
            nodes=nodes,
            size=index,
            frontier=frontier,
            new_keys=[(p, master.wrap(k, SubjectCrypto.wrap_label(p)), master.key_id) for p, k in new_keys.items()],
            erased=erased,
            interactions=interactions,
            checkpoint=checkpoint,
            checkpoint_history=history,
            last_ts=ts,
            extra_meta=extra_meta or [],
        )
        return batch, results

    def adopt(self, batch: Batch) -> None:
        """The batch is durable: make its state the sequencer's."""
        self.size = batch.size
        self.frontier = batch.frontier
        self.last_ts = batch.last_ts
        if batch.checkpoint is not None:
            self.checkpoint = batch.checkpoint
            self.signed_size = batch.size
            self.last_sign = batch.last_ts
            if batch.checkpoint_history:
                self.last_history = batch.last_ts

    def forget_keys(self, new_keys: dict[str, bytes]) -> None:
        """A batch did not commit: the keys it created do not exist."""
        for pseudonym in new_keys:
            self.crypto.forget(pseudonym)

    def _ciphers(self, items: list[Item], created: dict[str, bytes]) -> dict[str, Any]:
        """Open the key of every subject with personal data in ``items``.

        Returns the ciphers by pseudonym; keys created for subjects that had none are added to
        ``created``, to be wrapped and stored with the batch.
        """
        crypto = self.crypto
        pseudonym_of = str if self.pseudonymous else crypto.pseudonym
        ciphers: dict[str, Any] = {}
        missing: list[str] = []
        for op, payload, _ in items:
            if op == OP_RECORD and payload.personal is not None:
                pseudonym = pseudonym_of(payload.subject)
                if pseudonym not in ciphers:
                    aead = crypto.cached_aead(pseudonym)
                    if aead is None:
                        missing.append(pseudonym)
                    else:
                        ciphers[pseudonym] = aead
        if missing:
            stored = self._get_keys(missing)
            for pseudonym in dict.fromkeys(missing):
                found = stored.get(pseudonym)
                if found is not None:
                    key = crypto.master.unwrap(found[0], SubjectCrypto.wrap_label(pseudonym))
                else:
                    key = created[pseudonym] = os.urandom(32)
                ciphers[pseudonym] = crypto.remember(pseudonym, key)
        return ciphers
