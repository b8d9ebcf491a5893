"""Read-only access to a stored log: records, subtree hashes and proofs.

The writer and the read-only tools (``export``, ``verify`` of a live database, receipts) share this
class, so a proof is computed the same way whoever asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import LedgerError
from . import merkle
from .note import Checkpoint, MalformedNote
from .store import NODE_STRIDE, Store

__all__ = ["TreeReader", "checkpoint_of"]


def checkpoint_of(note: str) -> Checkpoint:
    """Parse the checkpoint inside a signed note *without* checking its signature.

    Use it only on notes this process signed or has already verified.

    Raises:
        MalformedNote: the note has no checkpoint body.
    """
    text, sep, _ = note.partition("\n\n")
    if not sep:
        raise MalformedNote("a signed note needs a blank line before its signatures")
    return Checkpoint.parse(text + "\n")


class TreeReader:
    """Hashes and proofs computed from what a :class:`Store` keeps.

    Level-0 hashes come from the records, levels that are multiples of :data:`NODE_STRIDE` from the
    stored interior nodes, and the levels between are folded from the nearest stored level below.
    After pruning, the pruned prefix is known only through its compact range.

    Args:
        store: An opened store.
        pruned_start: The first stored index.
        pruned_frontier: The compact range of ``[0, pruned_start)``.
    """

    def __init__(self, store: Store, pruned_start: int = 0, pruned_frontier: Sequence[bytes] = ()) -> None:
        self.store = store
        self.set_pruned(pruned_start, pruned_frontier)

    def set_pruned(self, start: int, frontier: Sequence[bytes]) -> None:
        """Record that ``[0, start)`` is pruned, known by its compact range ``frontier``."""
        subtrees = merkle.decompose(0, start)
        if len(subtrees) != len(frontier):
            raise LedgerError(f"the pruned prefix [0, {start}) needs {len(subtrees)} hashes, found {len(frontier)}")
        self.first_index = start
        self._pruned = dict(zip(subtrees, frontier))

    @property
    def pruned_frontier(self) -> list[bytes]:
        """The compact range of the pruned prefix ``[0, first_index)``."""
        return [self._pruned[s] for s in merkle.decompose(0, self.first_index)]

    def subtree(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree at ``(level, index)``.

        Raises:
            LedgerError: the hashes it needs were pruned.
        """
        pruned = self._pruned.get((level, index))
        if pruned is not None:
            return pruned
        start = index << level
        if level and start < self.first_index < start + (1 << level):
            # The subtree straddles the pruned prefix's end: its left part is known only through
            # the prefix's compact range, so fold it from its two halves.
            return merkle.node_hash(self.subtree(level - 1, 2 * index), self.subtree(level - 1, 2 * index + 1))
        base = level - level % NODE_STRIDE
        width = 1 << (level - base)
        first = index * width
        if base == 0:
            hashes = self.store.leaf_hashes(first, first + width)
        else:
            hashes = self.store.node_hashes(base, first, first + width)
        node_hash = merkle.node_hash
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def compact_range(self, start: int, end: int) -> list[bytes]:
        """The hashes of the compact range of ``[start, end)``."""
        return [self.subtree(level, index) for level, index in merkle.decompose(start, end)]

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """The RFC 9162 inclusion proof of record ``index`` in the tree of ``size`` records."""
        return merkle.inclusion_proof(index, size, self.subtree)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """The RFC 9162 consistency proof from ``size1`` to ``size2``."""
        return merkle.consistency_proof(size1, size2, self.subtree)

    def index_at(self, ts: float, size: int) -> int:
        """The first index in ``[first_index, size)`` sequenced at or after ``ts`` (``size`` if none).

        Sequencing times never decrease along the log, so this is a binary search.
        """
        low, high = self.first_index, size
        while low < high:
            middle = (low + high) // 2
            value = self.store.ts_at(middle)
            if value is None:
                raise LedgerError(f"record {middle} is missing from the store")
            if value < ts:
                low = middle + 1
            else:
                high = middle
        return low
