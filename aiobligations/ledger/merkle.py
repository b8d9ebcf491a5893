"""RFC 9162 §2.1 Merkle trees: hashing, compact ranges, proofs and their verification."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice

from ..errors import ConfigurationError, ObligationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "InvalidProof",
    "MemoryTree",
    "consistency_proof",
    "decompose",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1)."""

_sha256 = hashlib.sha256
# CompactRange.extend reduces aligned blocks of 256 leaves with list comprehensions, which costs
# far less interpreter time per hash than merging leaves one at a time.
_BLOCK_LEVEL = 8
_BLOCK = 1 << _BLOCK_LEVEL

Subtree = Callable[[int, int], bytes]


class InvalidProof(ObligationError, ValueError):
    """A Merkle proof failed verification."""


def leaf_hash(data: bytes) -> bytes:
    """
    Hash one leaf: SHA-256(0x00 || data).

    Args:
        data: The leaf's bytes, for example a record exactly as stored.

    Returns:
        The 32-byte leaf hash.

    Raises:
        TypeError: If ``data`` is a ``str``.
    """
    if isinstance(data, str):
        raise TypeError("data must be bytes, got str; encode it first.")
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """
    Hash an interior node: SHA-256(0x01 || left || right).

    Args:
        left: The left child's hash.
        right: The right child's hash.

    Returns:
        The 32-byte node hash.
    """
    return _sha256(b"\x01" + left + right).digest()


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """
    Compute the Merkle tree hash (MTH) of leaves that are already hashed.

    Args:
        leaf_hashes: The 32-byte leaf hashes in index order.

    Returns:
        The root; :data:`EMPTY_ROOT` when there are no leaves.

    Raises:
        TypeError: If a leaf hash is not bytes.
        ValueError: If a leaf hash is not 32 bytes long.
    """
    tree = CompactRange(0)
    tree.extend(leaf_hashes)
    return tree.root()


def decompose(start: int, end: int) -> list[tuple[int, int]]:
    """
    List the aligned perfect subtrees that make up the compact range of leaves [start, end).

    The subtree at ``(level, index)`` covers leaves ``[index << level, (index + 1) << level)``;
    each is the largest aligned subtree that starts where the previous one ends and fits.

    Args:
        start: The first leaf of the range.
        end: One past the last leaf of the range.

    Returns:
        ``(level, index)`` pairs, left to right; empty when ``start == end``.

    Raises:
        TypeError: If a bound is not an integer.
        ValueError: If ``0 <= start <= end`` does not hold.
    """
    _check_range(start, end)
    nodes = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            # An aligned subtree cannot be larger than the alignment of its first leaf.
            level = min(level, (start & -start).bit_length() - 1)
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


class CompactRange:
    """
    The compact range (frontier) of leaves [start, end): the roots of its aligned perfect subtrees.

    It holds O(log n) hashes, takes more leaves, merges with the adjacent range and, when it starts
    at leaf 0, gives the tree's root. ``CompactRange(start)`` is the empty range at ``start``.

    Args:
        start: The index of the first leaf.

    Raises:
        TypeError: If ``start`` is not an integer.
        ValueError: If ``start`` is negative.
    """

    __slots__ = ("_end", "_hashes", "_start")
    __hash__ = None  # type: ignore[assignment]  # Mutable, so unhashable.

    def __init__(self, start: int = 0) -> None:
        _check_range(start, start)
        self._start = self._end = start
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, start: int, end: int, hashes: Iterable[bytes]) -> CompactRange:
        """
        Rebuild the compact range of [start, end) from its subtree roots.

        Args:
            start: The first leaf of the range.
            end: One past the last leaf of the range.
            hashes: The roots of the subtrees that :func:`decompose` lists, in its order.

        Returns:
            The compact range.

        Raises:
            TypeError: If a bound or a hash has the wrong type.
            ValueError: If the bounds are invalid, the count of hashes is not the one the range
                needs, or a hash is not 32 bytes long.
        """
        want = len(decompose(start, end))
        hashes = list(hashes)
        if len(hashes) != want:
            raise ConfigurationError(
                f"The compact range of [{start}, {end}) has {want} hashes, got {len(hashes)}."
            )
        compact = cls(start)
        compact._end = end
        compact._hashes = [_check_hash(f"hashes[{i}]", value) for i, value in enumerate(hashes)]
        return compact

    @property
    def start(self) -> int:
        """The index of the first leaf in the range."""
        return self._start

    @property
    def end(self) -> int:
        """One past the index of the last leaf in the range."""
        return self._end

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the subtree roots, left to right (largest first when ``start`` is 0)."""
        return list(self._hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._start, self._end, self._hashes) == (other._start, other._end, other._hashes)

    def __repr__(self) -> str:
        return f"CompactRange(start={self._start}, end={self._end}, hashes={len(self._hashes)})"

    def append(self, leaf_hash: bytes) -> None:
        """
        Add one leaf at index ``end``.

        Args:
            leaf_hash: The leaf's 32-byte hash.

        Raises:
            TypeError: If ``leaf_hash`` is not bytes.
            ValueError: If ``leaf_hash`` is not 32 bytes long.
        """
        self._push(0, self._end, _check_hash("leaf_hash", leaf_hash))
        self._end += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """
        Add leaves at ``end`` in order; fast enough to re-hash millions of records.

        The call is atomic: when a hash is invalid, the range is left as it was.

        Args:
            leaf_hashes: 32-byte leaf hashes, consumed once.

        Raises:
            TypeError: If a leaf hash is not bytes.
            ValueError: If a leaf hash is not 32 bytes long.
        """
        saved = (self._end, list(self._hashes))
        try:
            self._extend(iter(leaf_hashes))
        except BaseException:
            self._end, self._hashes = saved
            raise

    def _extend(self, leaves: Iterator[bytes]) -> None:
        # Take single leaves until the range ends on a block boundary: from there on, every full
        # block is an aligned perfect subtree whose root can be pushed as one node.
        for value in islice(leaves, -self._end % _BLOCK):
            self.append(value)
        block: list[bytes] = []
        while self._end % _BLOCK == 0:
            block = list(islice(leaves, _BLOCK))
            if len(block) < _BLOCK:
                break
            if set(map(len, block)) != {HASH_SIZE} or set(map(type, block)) != {bytes}:
                # The cheap check failed: name the culprit, or let a bytes subclass through.
                block = [_check_hash(f"leaf hash {self._end + i}", h) for i, h in enumerate(block)]
            level, sha256 = block, _sha256
            for _ in range(_BLOCK_LEVEL):
                pairs = iter(level)
                level = [sha256(b"\x01" + lt + rt).digest() for lt, rt in zip(pairs, pairs)]
            self._push(_BLOCK_LEVEL, self._end >> _BLOCK_LEVEL, level[0])
            self._end += _BLOCK
        for value in block:
            self.append(value)

    def merge(self, other: CompactRange) -> None:
        """
        Append the adjacent compact range ``other``, so that this one covers [start, other.end).

        Args:
            other: A compact range that starts where this one ends; it is not changed.

        Raises:
            TypeError: If ``other`` is not a :class:`CompactRange`.
            ValueError: If ``other`` does not start where this range ends.
        """
        if not isinstance(other, CompactRange):
            raise TypeError(f"other must be a CompactRange, got {type(other).__name__}.")
        if other._start != self._end:
            raise ConfigurationError(
                f"Cannot merge a range starting at {other._start} into one ending at {self._end}."
            )
        for (level, index), value in list(zip(decompose(other._start, other._end), other._hashes)):
            self._push(level, index, value)
        self._end = other._end

    def _push(self, level: int, index: int, value: bytes) -> None:
        # The subtree (level, index) starts at self._end. While it is a right child whose left
        # sibling lies inside the range, that sibling is the last hash held: combine the two.
        hashes = self._hashes
        while index & 1 and (index - 1) << level >= self._start:
            value = _sha256(b"\x01" + hashes.pop() + value).digest()
            index >>= 1
            level += 1
        hashes.append(value)

    def root(self) -> bytes:
        """
        Compute the root of the tree of the first ``end`` leaves.

        Returns:
            The Merkle tree hash; :data:`EMPTY_ROOT` for an empty tree.

        Raises:
            ValueError: If the range does not start at leaf 0.
        """
        if self._start != 0:
            raise ConfigurationError(f"Only a range from leaf 0 has a root; this starts at {self._start}.")
        return _fold(self._hashes)


def range_hash(start: int, end: int, subtree: Subtree) -> bytes:
    """
    Compute the MTH of leaves [start, end) from stored perfect subtrees.

    The range must be a node of the RFC 9162 split recursion: ``start`` is a multiple of the
    smallest power of two that is at least ``end - start``. Every range from 0 qualifies.

    Args:
        start: The first leaf of the range.
        end: One past the last leaf of the range.
        subtree: Returns the root of the perfect subtree at ``(level, index)``.

    Returns:
        The hash; :data:`EMPTY_ROOT` for [0, 0).

    Raises:
        ValueError: If the range is no such node, or ``subtree`` returns no 32-byte hash.
    """
    _check_range(start, end)
    size = end - start
    if (size == 0 and start != 0) or start % (1 << (size - 1).bit_length() if size else 1):
        raise ConfigurationError(f"[{start}, {end}) is not a node of the RFC 9162 tree.")
    return _fold([_lookup(subtree, level, index) for level, index in decompose(start, end)])


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """
    Build the inclusion proof of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 PATH).

    Args:
        index: The leaf's index, below ``size``.
        size: The tree size.
        subtree: Returns the root of the perfect subtree at ``(level, index)``.

    Returns:
        The proof hashes, from the leaf's sibling up.

    Raises:
        ValueError: If ``0 <= index < size`` does not hold, or ``subtree`` misbehaves.
    """
    _check_range(index, size, "index", "size")
    if index == size:
        raise ConfigurationError(f"index must be below size, got index {index} and size {size}.")
    proof = []
    low, high = 0, size
    # Walk down the RFC recursion from the root, collecting the sibling of each step.
    while high - low > 1:
        split = low + _largest_power_below(high - low)
        if index < split:
            proof.append(range_hash(split, high, subtree))
            high = split
        else:
            proof.append(range_hash(low, split, subtree))
            low = split
    return proof[::-1]


def consistency_proof(size1: int, size2: int, subtree: Subtree) -> list[bytes]:
    """
    Build the proof that the tree of ``size1`` leaves is a prefix of that of ``size2`` (RFC PROOF).

    Args:
        size1: The older tree size, at least 1.
        size2: The newer tree size, at least ``size1``; equal sizes give an empty proof.
        subtree: Returns the root of the perfect subtree at ``(level, index)``.

    Returns:
        The proof hashes, bottom up.

    Raises:
        ValueError: If ``0 < size1 <= size2`` does not hold, or ``subtree`` misbehaves.
    """
    _check_range(size1, size2, "size1", "size2")
    if size1 == 0:
        raise ConfigurationError("size1 must be at least 1; nothing can be proved about the empty tree.")
    proof = []
    low, high, old, whole = 0, size2, size1, True
    # SUBPROOF, unrolled: `whole` is the RFC's flag b, `old` is m relative to `low`.
    while old != high - low:
        split = _largest_power_below(high - low)
        if old <= split:
            proof.append(range_hash(low + split, high, subtree))
            high = low + split
        else:
            proof.append(range_hash(low, low + split, subtree))
            low, old, whole = low + split, old - split, False
    if not whole:
        proof.append(range_hash(low, high, subtree))
    return proof[::-1]


class MemoryTree:
    """
    A Merkle tree in memory that keeps every perfect subtree's root; for tests and small tools.

    Args:
        leaves: Leaf data to append, each hashed with :func:`leaf_hash`.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for data in leaves:
            self.append(data)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Hash ``data`` as a leaf, append it and return its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, leaf: bytes) -> int:
        """Append an already hashed leaf (32 bytes) and return its index."""
        levels = self._levels
        levels[0].append(_check_hash("leaf", leaf))
        level = 0
        # Each completed pair of siblings completes their parent, and so on upwards.
        while len(levels[level]) % 2 == 0:
            if level + 1 == len(levels):
                levels.append([])
            levels[level + 1].append(node_hash(*levels[level][-2:]))
            level += 1
        return self.size - 1

    def subtree(self, level: int, index: int) -> bytes:
        """Return the root of the perfect subtree at ``(level, index)``, or raise ValueError."""
        if not (0 <= level < len(self._levels) and 0 <= index < len(self._levels[level])):
            raise ConfigurationError(f"The subtree at level {level}, index {index} is not complete.")
        return self._levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        """Return the root of the tree of the first ``size`` leaves (default: all)."""
        return range_hash(0, self._size(size), self.subtree)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return inclusion_proof(index, self._size(size), self.subtree)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """Return the consistency proof from ``size1`` to ``size2`` leaves."""
        return consistency_proof(size1, self._size(size2), self.subtree)

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        _check_range(size, self.size, "size", "the tree's size")
        return size


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """
    Check that ``proof`` places ``leaf_hash`` at ``index`` in the tree of ``size`` and ``root``.

    This is RFC 9162 §2.1.3.2. A proof pins down its shape, not the tree size, so ``index``,
    ``size`` and ``root`` must come from a signed checkpoint, not from whoever sent the proof.

    Args:
        leaf_hash: The leaf's 32-byte hash.
        index: The leaf's index.
        size: The tree size.
        proof: The 32-byte proof hashes.
        root: The tree's 32-byte root.

    Raises:
        InvalidProof: If the proof does not verify, for whatever reason.
        TypeError: If an argument has the wrong type.
    """
    root = _check_hash("root", root, InvalidProof)
    value = _check_hash("leaf_hash", leaf_hash, InvalidProof)
    hashes = _proof_hashes(proof)
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise InvalidProof(f"Leaf index {index} is not below the tree size {size}.")
    fn, sn = index, size - 1
    for sibling in hashes:
        if sn == 0:
            raise InvalidProof(f"The inclusion proof of leaf {index} in {size} is too long.")
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            # RFC 9162 step 4.b.ii: skip the levels where the right border has no sibling.
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    if sn:
        raise InvalidProof(f"The inclusion proof of leaf {index} in {size} is too short.")
    if value != root:
        raise InvalidProof(f"The inclusion proof of leaf {index} does not lead to the root.")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """
    Check that the tree of ``size1`` and ``root1`` is a prefix of that of ``size2`` and ``root2``.

    This is RFC 9162 §2.1.4.2 with transparency-dev/merkle's edge cases: ``size1`` must be at least
    1, and equal sizes need an empty proof and equal roots.

    Args:
        size1: The older tree size.
        size2: The newer tree size.
        proof: The 32-byte proof hashes.
        root1: The older tree's root.
        root2: The newer tree's root.

    Raises:
        InvalidProof: If the proof does not verify, for whatever reason.
        TypeError: If an argument has the wrong type.
    """
    _check_size("size1", size1)
    _check_size("size2", size2)
    hashes = _proof_hashes(proof)
    if size2 < size1:
        raise InvalidProof(f"size2 ({size2}) is smaller than size1 ({size1}).")
    if size1 == 0:
        raise InvalidProof("size1 is 0; a consistency proof from the empty tree proves nothing.")
    if size1 == size2:
        # Only equality is claimed, so any equal byte strings pass, as transparency-dev's probes
        # expect; no hash is computed.
        _check_bytes("root1", root1)
        _check_bytes("root2", root2)
        if hashes:
            raise InvalidProof(f"Both sizes are {size1}, so the proof must be empty.")
        if root1 != root2:
            raise InvalidProof(f"Both sizes are {size1}, but the roots differ.")
        return
    root1 = _check_hash("root1", root1, InvalidProof)
    root2 = _check_hash("root2", root2, InvalidProof)
    if not hashes:
        raise InvalidProof(f"The consistency proof from {size1} to {size2} is empty.")
    if size1 & (size1 - 1) == 0:
        # The older tree is a perfect subtree of the newer one, so the proof leaves out its root.
        hashes.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = hashes[0]
    for value in hashes[1:]:
        if sn == 0:
            raise InvalidProof(f"The consistency proof from {size1} to {size2} is too long.")
        if fn & 1 or fn == sn:
            first = node_hash(value, first)
            second = node_hash(value, second)
            # RFC 9162 step 4.b.ii: skip the levels where the older tree's edge has no sibling.
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            second = node_hash(second, value)
        fn >>= 1
        sn >>= 1
    if sn:
        raise InvalidProof(f"The consistency proof from {size1} to {size2} is too short.")
    if first != root1:
        raise InvalidProof(f"The consistency proof does not lead to the root of size {size1}.")
    if second != root2:
        raise InvalidProof(f"The consistency proof does not lead to the root of size {size2}.")


def _fold(hashes: Sequence[bytes]) -> bytes:
    # A range that is a node of the RFC tree hashes to its compact range folded from the right.
    if not hashes:
        return EMPTY_ROOT
    value = hashes[-1]
    for left in reversed(hashes[:-1]):
        value = _sha256(b"\x01" + left + value).digest()
    return value


def _largest_power_below(n: int) -> int:
    # The RFC's k for n > 1: the largest power of two smaller than n.
    return 1 << ((n - 1).bit_length() - 1)


def _lookup(subtree: Subtree, level: int, index: int) -> bytes:
    value = subtree(level, index)
    if not isinstance(value, (bytes, bytearray)) or len(value) != HASH_SIZE:
        raise ConfigurationError(f"subtree({level}, {index}) did not return a {HASH_SIZE}-byte hash.")
    return bytes(value)


def _check_range(start: int, end: int, first: str = "start", second: str = "end") -> None:
    for name, value in ((first, start), (second, end)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if not 0 <= start <= end:
        raise ConfigurationError(f"Need 0 <= {first} <= {second}, got {first} {start} and {second} {end}.")


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    if value < 0:
        raise InvalidProof(f"{name} must not be negative, got {value}.")


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}.")


def _check_hash(name: str, value: object, error: type[ValueError] = ValueError) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}.")
    if len(value) != HASH_SIZE:
        raise error(f"{name} must be {HASH_SIZE} bytes long, got {len(value)}.")
    return bytes(value)


def _proof_hashes(proof: Sequence[bytes]) -> list[bytes]:
    return [_check_hash(f"proof[{i}]", value, InvalidProof) for i, value in enumerate(proof)]
