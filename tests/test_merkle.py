"""Tests for aiobligations.ledger.merkle: known answers, public probes, CT proofs, properties."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiobligations.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    InvalidProof,
    MemoryTree,
    decompose,
    inclusion_proof,
    leaf_hash,
    node_hash,
    range_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# Known answers from transparency-dev/merkle and golang/mod, with their provenance in vectors/README.md.
VECTORS = Path(__file__).resolve().parent / "vectors"
PROBES = VECTORS / "rfc6962-transparency-dev"
ARGON = VECTORS / "argon2020-ct"

# The probe count of transparency-dev/merkle testdata/{inclusion,consistency} as copied.
PROBE_COUNT = 196


def _require_vectors() -> None:
    # Fail rather than skip: a suite that silently stops checking the vectors proves nothing.
    if not VECTORS.is_dir():
        pytest.fail(
            f"Test vectors not found at {VECTORS}: the checkout is incomplete.",
            pytrace=False,
        )


def _probe_files(kind: str) -> list[Path]:
    return sorted((PROBES / kind).rglob("*.json"))


def _probe_params(kind: str) -> list[Path]:
    # With no files, one placeholder keeps pytest from skipping the empty parameter set.
    return _probe_files(kind) or [PROBES / kind / "missing.json"]


def _b64(value: str | None) -> bytes:
    # Go marshals a nil byte slice as null; the probes use it for absent hashes.
    return base64.b64decode(value) if value else b""


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _hx(value: str) -> bytes:
    return bytes.fromhex(value)


# Known answers from transparency-dev/merkle testonly/constants.go (the original CT test data,
# also in google/certificate-transparency cpp/merkletree/merkle_tree_test.cc).
CT_LEAVES = [
    _hx(value)
    for value in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    _hx(value)
    for value in [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]
]
CT_NODES = [
    [
        _hx("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        _hx("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        _hx("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        _hx("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        _hx("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        _hx("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        _hx("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        _hx("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        _hx("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        _hx("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        _hx("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        _hx("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        _hx("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        _hx("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [_hx("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
# testonly/constants.go CompactTrees(): the compact range of [0, n) for n = 0..8, as node positions.
CT_COMPACT = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]


# A literal reference implementation of RFC 9162 §2.1, recursion and all, to test against.
def _k(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return ref_path(m, d[:k]) + [ref_mth(d[k:])]
    return ref_path(m - k, d[k:]) + [ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return ref_subproof(m, d[:k], b) + [ref_mth(d[k:])]
    return ref_subproof(m - k, d[k:], False) + [ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def ref_sides(m: int, n: int) -> list[str]:
    """The side of each inclusion proof hash of leaf m in a tree of n, bottom up."""
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return ref_sides(m, k) + ["right"]
    return ref_sides(m - k, n - k) + ["left"]


def ref_consistency_shape(m: int, n: int, whole: bool = True) -> list[str]:
    """What each consistency proof hash (and the seed) feeds, following SUBPROOF, bottom up."""
    if m == n:
        return ["seed is root1"] if whole else ["seed is a proof hash"]
    k = _k(n)
    if m <= k:
        return ref_consistency_shape(m, k, whole) + ["right: new root only"]
    return ref_consistency_shape(m - k, n - k, False) + ["left: both roots"]


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [b"leaf %d %s" % (i, salt) for i in range(n)]


def _flips(value: bytes) -> Iterator[bytes]:
    for bit in range(len(value) * 8):
        flipped = bytearray(value)
        flipped[bit // 8] ^= 1 << (bit % 8)
        yield bytes(flipped)


def _mutations(value: int) -> set[int]:
    return {v for v in (value - 1, value + 1, value * 2, value // 2) if v >= 0} - {value}


class TestVectorsPresent:
    def test_vectors_folder_exists(self) -> None:
        """
        The shared vectors are present; a missing folder fails the suite instead of skipping it.
        """
        _require_vectors()

        found = len(_probe_files("inclusion")) + len(_probe_files("consistency"))

        assert PROBE_COUNT == found
        assert (ARGON / "proof.json").is_file()


class TestKnownAnswers:
    def test_hashes_from_rfc6962_test(self) -> None:
        """
        Leaf and node hashing match transparency-dev's rfc6962_test.go known answers.
        """
        assert _hx("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56") == leaf_hash(
            b"L123456"
        )
        assert _hx("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb") == node_hash(
            b"N123", b"N456"
        )
        assert CT_NODES[0][0] == leaf_hash(b"")
        assert CT_ROOTS[0] == EMPTY_ROOT
        assert HASH_SIZE == len(EMPTY_ROOT)

    @pytest.mark.parametrize("size", range(9))
    def test_roots_of_ct_tree(self, size: int) -> None:
        """
        Every way to compute a root gives the CT constants for sizes 0 to 8.
        """
        tree = MemoryTree(CT_LEAVES)
        compact = CompactRange(0)
        compact.extend(leaf_hash(d) for d in CT_LEAVES[:size])

        assert CT_ROOTS[size] == tree.root(size)
        assert CT_ROOTS[size] == root_of([leaf_hash(d) for d in CT_LEAVES[:size]])
        assert CT_ROOTS[size] == compact.root()
        assert CT_ROOTS[size] == ref_mth(CT_LEAVES[:size])

    @pytest.mark.parametrize("size", range(9))
    def test_compact_ranges_of_ct_tree(self, size: int) -> None:
        """
        Compact ranges match testonly's CompactTrees, position by position.
        """
        compact = CompactRange(0)
        compact.extend(leaf_hash(d) for d in CT_LEAVES[:size])

        assert CT_COMPACT[size] == decompose(0, size)
        assert [CT_NODES[level][index] for level, index in CT_COMPACT[size]] == compact.hashes

    def test_node_hashes_of_ct_tree(self) -> None:
        """
        MemoryTree keeps every perfect subtree's root as listed in NodeHashes.
        """
        tree = MemoryTree(CT_LEAVES)

        nodes = [[tree.subtree(level, i) for i in range(8 >> level)] for level in range(4)]

        assert CT_NODES == nodes


class TestTransparencyDevProbes:
    @pytest.mark.parametrize(
        "path", _probe_params("inclusion"), ids=lambda p: str(p.relative_to(PROBES))
    )
    def test_inclusion_probe(self, path: Path) -> None:
        """
        Inclusion probes verify exactly when wantErr is false.
        """
        _require_vectors()
        probe = _load(path)
        args = (
            _b64(probe["leafHash"]),
            probe["leafIdx"],
            probe["treeSize"],
            [_b64(h) for h in probe["proof"] or []],
            _b64(probe["root"]),
        )

        if probe["wantErr"]:
            with pytest.raises(InvalidProof):
                verify_inclusion(*args)
        else:
            verify_inclusion(*args)

    @pytest.mark.parametrize(
        "path", _probe_params("consistency"), ids=lambda p: str(p.relative_to(PROBES))
    )
    def test_consistency_probe(self, path: Path) -> None:
        """
        Consistency probes verify exactly when wantErr is false.
        """
        _require_vectors()
        probe = _load(path)
        args = (
            probe["size1"],
            probe["size2"],
            [_b64(h) for h in probe["proof"] or []],
            _b64(probe["root1"]),
            _b64(probe["root2"]),
        )

        if probe["wantErr"]:
            with pytest.raises(InvalidProof):
                verify_consistency(*args)
        else:
            verify_consistency(*args)

    @pytest.mark.parametrize("kind", ["inclusion", "consistency"])
    def test_generated_proofs_equal_happy_paths(self, kind: str) -> None:
        """
        Proofs generated over the CT leaves equal the probes' positive cases byte for byte.
        """
        _require_vectors()
        tree = MemoryTree(CT_LEAVES)
        happy = [_load(p) for p in _probe_files(kind) if p.name == "happy-path.json"]

        for probe in happy:
            want = [_b64(h) for h in probe["proof"] or []]
            if kind == "inclusion":
                assert want == tree.inclusion_proof(probe["leafIdx"], probe["treeSize"])
            else:
                assert want == tree.consistency_proof(probe["size1"], probe["size2"])
        assert 5 == len(happy)


class TestArgon2020:
    """Real responses of Google's Argon2020 CT log, as golang/mod's ct_test.go uses them."""

    @pytest.fixture(name="sth")
    def _sth(self) -> dict[str, Any]:
        _require_vectors()
        return _load(ARGON / "sth.json")

    def _inclusion(self) -> tuple[bytes, int, list[bytes]]:
        # get-entries returns leaf_input, which is already the RFC 6962 MerkleTreeLeaf encoding,
        # so its leaf hash is SHA-256(0x00 || leaf_input) with nothing to re-encode.
        entry = _load(ARGON / "entries.json")["entries"][0]
        proof = _load(ARGON / "proof.json")
        return (
            leaf_hash(base64.b64decode(entry["leaf_input"])),
            proof["leaf_index"],
            [base64.b64decode(h) for h in proof["audit_path"]],
        )

    def test_inclusion_of_entry_10000(self, sth: dict[str, Any]) -> None:
        """
        The log's audit path proves entry 10000 in the tree of 961,984,013 entries.
        """
        leaf, index, proof = self._inclusion()
        root = base64.b64decode(sth["sha256_root_hash"])

        verify_inclusion(leaf, index, sth["tree_size"], proof, root)

        assert (10000, 961_984_013, 30) == (index, sth["tree_size"], len(proof))
        for wrong in (index - 1, index + 1, index ^ 2):
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, wrong, sth["tree_size"], proof, root)
        for flipped in _flips(root):
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, index, sth["tree_size"], proof, flipped)

    def test_tree_size_must_come_from_the_checkpoint(self, sth: dict[str, Any]) -> None:
        """
        The same real proof also verifies at sizes 961,984,012 and 961,984,014: size is not bound.

        Entry 10000 sits in the leftmost 2**29 leaves, so every size in (2**29, 2**30] gives the
        same proof shape. This is RFC 9162 behaviour, and the reason index and size must come from
        a signed checkpoint rather than from whoever supplies the proof.
        """
        leaf, index, proof = self._inclusion()
        root = base64.b64decode(sth["sha256_root_hash"])

        for size in (sth["tree_size"] - 1, sth["tree_size"] + 1):
            verify_inclusion(leaf, index, size, proof, root)
        with pytest.raises(InvalidProof):
            verify_inclusion(leaf, index, sth["tree_size"] * 2, proof, root)

    def test_consistency_from_3654490(self, sth: dict[str, Any]) -> None:
        """
        The log's consistency proof links the tree of 3,654,490 entries to the STH.
        """
        proof = [base64.b64decode(h) for h in _load(ARGON / "consistency.json")["consistency"]]
        # The older root is not among the JSON files; golang/mod sumdb/tlog/ct_test.go (commit
        # b5136e5b) hard-codes it, and the copy here is taken from there.
        old_root = base64.b64decode("AuIZ5V6sDUj1vn3Y1K85oOaQ7y+FJJKtyRTl1edIKBQ=")
        root = base64.b64decode(sth["sha256_root_hash"])

        verify_consistency(3_654_490, sth["tree_size"], proof, old_root, root)

        with pytest.raises(InvalidProof):
            verify_consistency(3_654_490, sth["tree_size"], proof, root, old_root)
        for size1 in (3_654_489, 3_654_491):
            with pytest.raises(InvalidProof):
                verify_consistency(size1, sth["tree_size"], proof, old_root, root)
        for position in range(len(proof)):
            broken = list(proof)
            broken[position] = next(_flips(proof[position]))
            with pytest.raises(InvalidProof):
                verify_consistency(3_654_490, sth["tree_size"], broken, old_root, root)


class TestDecompose:
    def test_examples(self) -> None:
        """
        A range splits into the largest aligned subtrees, growing then shrinking.
        """
        assert [] == decompose(5, 5)
        assert [(3, 0)] == decompose(0, 8)
        assert [(0, 3), (2, 1), (2, 2), (0, 12)] == decompose(3, 13)
        assert [(3, 0), (1, 4), (0, 10)] == decompose(0, 11)

    @given(st.integers(0, 5000), st.integers(0, 5000))
    @settings(max_examples=300, deadline=None)
    def test_covers_range_with_maximal_subtrees(self, start: int, length: int) -> None:
        """
        The subtrees tile [start, end) in order, and no two neighbours could be merged.
        """
        end = start + length
        nodes = decompose(start, end)

        position = start
        for level, index in nodes:
            assert position == index << level
            position = (index + 1) << level
        assert end == position
        for (l1, i1), (l2, i2) in zip(nodes, nodes[1:]):
            assert not (l1 == l2 and i1 % 2 == 0 and i2 == i1 + 1)

    @pytest.mark.parametrize("start, end", [(-1, 3), (4, 3)])
    def test_rejects_bad_bounds(self, start: int, end: int) -> None:
        """
        Negative or reversed bounds raise ValueError naming both.
        """
        with pytest.raises(ValueError, match=f"start {start} and end {end}"):
            decompose(start, end)


class TestCompactRange:
    @given(st.integers(0, 300), st.data())
    @settings(max_examples=150, deadline=None)
    def test_merge_of_prefix_and_suffix_equals_whole(self, n: int, data: st.DataObject) -> None:
        """
        Merging the compact ranges of [0, b) and [b, n) gives the compact range of [0, n).
        """
        b = data.draw(st.integers(0, n))
        hashes = [leaf_hash(d) for d in _leaves(n)]
        left, right, whole = CompactRange(0), CompactRange(b), CompactRange(0)
        left.extend(hashes[:b])
        right.extend(hashes[b:])
        whole.extend(hashes)

        left.merge(right)

        assert whole == left
        assert ref_mth(_leaves(n)) == left.root()

    @given(st.integers(0, 700), st.integers(0, 700), st.integers(0, 700))
    @settings(max_examples=150, deadline=None)
    def test_ranges_hold_the_subtree_roots(self, a: int, ab: int, bc: int) -> None:
        """
        Any range holds the roots of decompose's subtrees, and [a, b) + [b, c) = [a, c).
        """
        b, c = a + ab, a + ab + bc
        tree = MemoryTree(_leaves(c))
        hashes = [tree.subtree(0, i) for i in range(c)]
        first, second, whole = CompactRange(a), CompactRange(b), CompactRange(a)
        first.extend(hashes[a:b])
        second.extend(iter(hashes[b:c]))
        whole.extend(hashes[a:c])

        first.merge(second)

        assert [tree.subtree(level, index) for level, index in decompose(a, c)] == whole.hashes
        assert whole == first
        assert whole == CompactRange.from_hashes(a, c, whole.hashes)
        assert (a, c) == (whole.start, whole.end)

    @pytest.mark.parametrize("start", [0, 1, 255, 256, 300, 1000])
    @pytest.mark.parametrize("count", [0, 1, 255, 256, 257, 1300])
    def test_extend_equals_appending_one_by_one(self, start: int, count: int) -> None:
        """
        The block-wise fast path of extend gives the same range as single appends.
        """
        hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(count)]
        fast, slow = CompactRange(start), CompactRange(start)

        fast.extend(hashes)
        for value in hashes:
            slow.append(value)

        assert slow == fast
        assert start + count == fast.end

    def test_extend_in_pieces_crossing_blocks(self) -> None:
        """
        Extending several times, at unaligned ends, gives the root of the whole tree.
        """
        hashes = [hashlib.sha256(os.urandom(8)).digest() for _ in range(3000)]
        compact = CompactRange(0)

        for low, high in [(0, 7), (7, 700), (700, 701), (701, 1537), (1537, 3000)]:
            compact.extend(hashes[low:high])

        assert root_of(hashes) == compact.root()
        assert MemoryTree().root() == CompactRange().root() == EMPTY_ROOT

    @pytest.mark.parametrize("position", [3, 300, 600])
    def test_extend_is_atomic_on_a_bad_hash(self, position: int) -> None:
        """
        A bad hash anywhere leaves the range unchanged and is named in the error.
        """
        hashes = [hashlib.sha256(b"%d" % i).digest() for i in range(700)]
        hashes[position] = hashes[position][:31]
        compact = CompactRange(5)
        compact.extend(hashes[:2])
        before = CompactRange.from_hashes(5, 7, compact.hashes)

        with pytest.raises(ValueError, match=f"leaf hash {position + 7}|32 bytes long"):
            compact.extend(hashes)

        assert before == compact

    def test_extend_rejects_str(self) -> None:
        """
        A str in place of a hash raises TypeError, in the fast path too.
        """
        compact = CompactRange(0)

        with pytest.raises(TypeError, match="must be bytes, got str"):
            compact.extend(["x" * 32] * 256)  # type: ignore[list-item]
        with pytest.raises(TypeError, match="must be bytes, got str"):
            compact.append("x" * 32)  # type: ignore[arg-type]
        assert 0 == compact.end

    def test_from_hashes_validates(self) -> None:
        """
        from_hashes names a wrong count, a wrong length and a wrong type.
        """
        good = leaf_hash(b"x")

        with pytest.raises(ValueError, match=r"\[3, 13\) has 4 hashes, got 3"):
            CompactRange.from_hashes(3, 13, [good] * 3)
        with pytest.raises(ValueError, match=r"hashes\[1\] must be 32 bytes long, got 33"):
            CompactRange.from_hashes(0, 3, [good, good + b"!"])
        with pytest.raises(TypeError, match=r"hashes\[0\] must be bytes"):
            CompactRange.from_hashes(0, 1, [good.hex()])  # type: ignore[list-item]

    def test_root_needs_start_zero(self) -> None:
        """
        Only a range that starts at leaf 0 has a root.
        """
        compact = CompactRange(4)
        compact.append(leaf_hash(b"x"))

        with pytest.raises(ValueError, match="starts at 4"):
            compact.root()

    def test_merge_needs_adjacent_range(self) -> None:
        """
        Merging a range that does not start at this range's end raises ValueError.
        """
        with pytest.raises(ValueError, match="starting at 3 into one ending at 2"):
            CompactRange(2).merge(CompactRange(3))
        with pytest.raises(TypeError):
            CompactRange(2).merge([])  # type: ignore[arg-type]


class TestProofGeneration:
    @given(st.integers(1, 300), st.data())
    @settings(max_examples=150, deadline=None)
    def test_inclusion_matches_reference(self, n: int, data: st.DataObject) -> None:
        """
        Inclusion proofs equal the RFC's PATH byte for byte, at any past size, and verify.
        """
        size = data.draw(st.integers(1, n))
        index = data.draw(st.integers(0, size - 1))
        leaves = _leaves(n)
        tree = MemoryTree(leaves)

        proof = tree.inclusion_proof(index, size)

        assert ref_path(index, leaves[:size]) == proof
        assert proof == inclusion_proof(index, size, tree.subtree)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, ref_mth(leaves[:size]))

    @given(st.integers(1, 300), st.data())
    @settings(max_examples=150, deadline=None)
    def test_consistency_matches_reference(self, n: int, data: st.DataObject) -> None:
        """
        Consistency proofs equal the RFC's PROOF byte for byte and verify.
        """
        size2 = data.draw(st.integers(1, n))
        size1 = data.draw(st.integers(1, size2))
        leaves = _leaves(n)
        tree = MemoryTree(leaves)

        proof = tree.consistency_proof(size1, size2)

        assert ref_proof(size1, leaves[:size2]) == proof
        verify_consistency(size1, size2, proof, ref_mth(leaves[:size1]), ref_mth(leaves[:size2]))

    @given(st.lists(st.binary(max_size=6), max_size=300))
    @settings(max_examples=100, deadline=None)
    def test_roots_match_reference(self, leaves: list[bytes]) -> None:
        """
        Roots equal the RFC's MTH for any leaves, duplicates included.
        """
        hashes = [leaf_hash(d) for d in leaves]

        assert ref_mth(leaves) == root_of(hashes) == MemoryTree(leaves).root()

    @given(st.integers(1, 300), st.data())
    @settings(max_examples=150, deadline=None)
    def test_range_hash_of_rfc_nodes(self, n: int, data: st.DataObject) -> None:
        """
        range_hash from subtree lookups equals MTH for every node of the RFC recursion.
        """
        leaves = _leaves(n)
        tree = MemoryTree(leaves)
        low, high = 0, n
        # Walk from the root to a random leaf, checking every node on the way.
        while True:
            assert ref_mth(leaves[low:high]) == range_hash(low, high, tree.subtree)
            if high - low == 1:
                break
            split = low + _k(high - low)
            low, high = data.draw(st.sampled_from([(low, split), (split, high)]))

    @pytest.mark.parametrize("start, end", [(1, 3), (2, 5), (3, 3), (6, 9)])
    def test_range_hash_rejects_other_ranges(self, start: int, end: int) -> None:
        """
        A range that no RFC tree has as a node raises ValueError.
        """
        tree = MemoryTree(_leaves(16))

        with pytest.raises(ValueError, match="not a node"):
            range_hash(start, end, tree.subtree)

    def test_storage_errors_are_reported(self) -> None:
        """
        A subtree callback returning a short hash raises ValueError naming the position.
        """
        with pytest.raises(ValueError, match=r"subtree\(2, 0\) did not return a 32-byte hash"):
            inclusion_proof(5, 6, lambda level, index: b"short")

    @pytest.mark.parametrize(
        "call",
        [
            lambda t: t.inclusion_proof(4, 4),
            lambda t: t.inclusion_proof(-1, 4),
            lambda t: t.consistency_proof(0, 4),
            lambda t: t.consistency_proof(5, 4),
            lambda t: t.root(9),
            lambda t: t.subtree(3, 1),
        ],
    )
    def test_bad_arguments(self, call: Callable[[MemoryTree], object]) -> None:
        """
        Out-of-range indices and sizes raise ValueError.
        """
        with pytest.raises(ValueError):
            call(MemoryTree(_leaves(8)))

    def test_equal_sizes_give_empty_proof(self) -> None:
        """
        The consistency proof between equal sizes is empty.
        """
        assert [] == MemoryTree(_leaves(5)).consistency_proof(5, 5)


class TestVerification:
    @given(st.integers(1, 130), st.data())
    @settings(max_examples=40, deadline=None)
    def test_inclusion_rejects_every_mutation(self, n: int, data: st.DataObject) -> None:
        """
        Every bit flip is rejected, and so is every other index; other sizes only with a new shape.
        """
        index = data.draw(st.integers(0, n - 1))
        leaves = _leaves(n)
        tree = MemoryTree(leaves)
        proof, root, leaf = tree.inclusion_proof(index), tree.root(), leaf_hash(leaves[index])

        for position, value in enumerate(proof):
            for flipped in _flips(value):
                broken = proof[:position] + [flipped] + proof[position + 1 :]
                with pytest.raises(InvalidProof):
                    verify_inclusion(leaf, index, n, broken, root)
        for flipped in _flips(root):
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, index, n, proof, flipped)
        for flipped in _flips(leaf):
            with pytest.raises(InvalidProof):
                verify_inclusion(flipped, index, n, proof, root)
        for wrong in _mutations(index) | {index ^ 2}:
            with pytest.raises(InvalidProof):
                verify_inclusion(leaf, wrong, n, proof, root)
        for size in _mutations(n):
            # A proof fixes only the shape of the path, not the size (see TestArgon2020).
            same_shape = index < size and ref_sides(index, n) == ref_sides(index, size)
            if same_shape:
                verify_inclusion(leaf, index, size, proof, root)
            else:
                with pytest.raises(InvalidProof):
                    verify_inclusion(leaf, index, size, proof, root)
        for broken in (proof[:-1], proof + [root], [root] + proof, proof + [b""]):
            if broken != proof:
                with pytest.raises(InvalidProof):
                    verify_inclusion(leaf, index, n, broken, root)

    @given(st.integers(2, 130), st.data())
    @settings(max_examples=40, deadline=None)
    def test_consistency_rejects_every_mutation(self, n: int, data: st.DataObject) -> None:
        """
        Every bit flip and swapped roots are rejected; other sizes unless the proof shape is equal.
        """
        size1 = data.draw(st.integers(1, n - 1))
        tree = MemoryTree(_leaves(n))
        proof, root1, root2 = tree.consistency_proof(size1, n), tree.root(size1), tree.root()

        for position, value in enumerate(proof):
            for flipped in _flips(value):
                broken = proof[:position] + [flipped] + proof[position + 1 :]
                with pytest.raises(InvalidProof):
                    verify_consistency(size1, n, broken, root1, root2)
        for flipped in _flips(root1):
            with pytest.raises(InvalidProof):
                verify_consistency(size1, n, proof, flipped, root2)
        for flipped in _flips(root2):
            with pytest.raises(InvalidProof):
                verify_consistency(size1, n, proof, root1, flipped)
        with pytest.raises(InvalidProof):
            verify_consistency(size1, n, proof, root2, root1)
        shape = ref_consistency_shape(size1, n)
        mutated = {(m, n) for m in _mutations(size1) | {size1 ^ 2}}
        mutated |= {(size1, m) for m in _mutations(n)}
        for m1, m2 in mutated:
            # As with inclusion, a proof fixes only its shape: 1 -> 3 also verifies as 1 -> 4.
            if 0 < m1 < m2 and shape == ref_consistency_shape(m1, m2):
                verify_consistency(m1, m2, proof, root1, root2)
            else:
                with pytest.raises(InvalidProof):
                    verify_consistency(m1, m2, proof, root1, root2)
        for broken in (proof[:-1], proof + [root1], [proof[0]] + proof, [b""] + proof, []):
            with pytest.raises(InvalidProof):
                verify_consistency(size1, n, broken, root1, root2)

    def test_inclusion_requires_32_byte_hashes(self) -> None:
        """
        A leaf, proof hash or root of the wrong length fails, even when the arithmetic would pass.
        """
        with pytest.raises(InvalidProof, match="leaf_hash must be 32 bytes long, got 0"):
            verify_inclusion(b"", 0, 1, [], EMPTY_ROOT)
        with pytest.raises(InvalidProof, match="root must be 32 bytes long, got 31"):
            verify_inclusion(EMPTY_ROOT, 0, 1, [], EMPTY_ROOT[:31])
        with pytest.raises(InvalidProof, match=r"proof\[0\] must be 32 bytes long, got 33"):
            verify_inclusion(EMPTY_ROOT, 0, 2, [EMPTY_ROOT + b"!"], EMPTY_ROOT)

    def test_verification_never_returns_a_bool(self) -> None:
        """
        Success returns None and every failure raises, so an ignored result cannot pass silently.
        """
        tree = MemoryTree(_leaves(3))
        leaf, root = tree.subtree(0, 2), tree.root()

        verify_inclusion(leaf, 2, 3, tree.inclusion_proof(2), root)
        verify_consistency(1, 3, tree.consistency_proof(1, 3), tree.root(1), root)
        with pytest.raises(InvalidProof, match="Leaf index 3 is not below the tree size 3"):
            verify_inclusion(leaf, 3, 3, [], root)
        with pytest.raises(InvalidProof, match="index must not be negative"):
            verify_inclusion(leaf, -1, 3, [], root)

    def test_wrong_types_raise_type_error(self) -> None:
        """
        A str hash or a float size is a programming error, reported as TypeError.
        """
        with pytest.raises(TypeError, match="root must be bytes, got str"):
            verify_inclusion(EMPTY_ROOT, 0, 1, [], EMPTY_ROOT.hex())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="size2 must be an integer, got float"):
            verify_consistency(1, 2.0, [], EMPTY_ROOT, EMPTY_ROOT)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="data must be bytes, got str"):
            leaf_hash("text")  # type: ignore[arg-type]

    def test_consistency_edge_cases(self) -> None:
        """
        size1 = 0 always fails; equal sizes need an empty proof and equal roots.
        """
        root = leaf_hash(b"x")

        verify_consistency(4, 4, [], root, root)
        for args in [
            (0, 0, [], EMPTY_ROOT, EMPTY_ROOT),
            (0, 3, [root], EMPTY_ROOT, root),
            (4, 4, [root], root, root),
            (4, 4, [], root, EMPTY_ROOT),
            (5, 4, [], root, root),
            (4, 5, [], root, root),
        ]:
            with pytest.raises(InvalidProof):
                verify_consistency(*args)
