"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification, as pure functions.

    leaf hash   = SHA-256(0x00 || data)
    node hash   = SHA-256(0x01 || left || right)
    MTH({})     = SHA-256("")
    MTH(D[n])   = node(MTH(D[0:k]), MTH(D[k:n])), k = the largest power of two < n

Proof generation never needs the leaves themselves: it asks a `NodeReader` for the hash of a
*perfect* subtree (2**level leaves starting at index * 2**level), which is what a store keeps,
and recomputes the ragged right edge of a tree of any size from O(log n) such nodes. So the same
functions serve the in-memory tree below and the LevelDB log (node/storage/merkle_log.py).

Verification follows RFC 9162 section 2.1.3.2 (inclusion) and 2.1.4.2 (consistency) step by step,
after checking that the proof has exactly the length a proof for those sizes must have (a proof
of any other length is rejected with a message saying so, never "repaired"). The `*_problem`
functions return why a proof fails, or None when it holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_BYTES = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Tree sizes and indexes are unsigned 64-bit, as in every CT log; a proof never exceeds 64 hashes
# per part, so anything longer is refused before any hashing.
MAX_TREE_SIZE = 2**64 - 1
MAX_PROOF_HASHES = 128

# (level, index) -> hash of the perfect subtree over leaves [index * 2**level, (index+1) * 2**level)
NodeReader = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(size: int) -> int:
    """The k of RFC 6962: the largest power of two strictly smaller than size (size >= 2)."""
    assert size >= 2
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The aligned perfect subtrees (level, index) covering leaves [start, end), left to right.

    For start == 0 (or start aligned to a power of two >= end - start, as every right part in
    the RFC recursion is) they are exactly the subtrees whose right-to-left fold is MTH."""
    assert 0 <= start <= end
    out: list[tuple[int, int]] = []
    position = start
    while position < end:
        level = (end - position).bit_length() - 1
        if position:
            level = min(level, (position & -position).bit_length() - 1)
        out.append((level, position >> level))
        position += 1 << level
    return out


def range_root(start: int, end: int, read: NodeReader) -> bytes:
    """MTH(D[start:end]) from stored perfect subtrees (start aligned as in perfect_subtrees)."""
    if start == end:
        return EMPTY_ROOT
    nodes = perfect_subtrees(start, end)
    result = read(*nodes[-1])
    for level, index in reversed(nodes[:-1]):
        result = node_hash(read(level, index), result)
    return result


def _subtree_root(start: int, end: int, read: NodeReader) -> bytes:
    size = end - start
    if size & (size - 1) == 0:  # perfect and, in the RFC recursion, always aligned
        level = size.bit_length() - 1
        assert start % size == 0
        return read(level, start >> level)
    return range_root(start, end, read)


def inclusion_path(index: int, size: int, read: NodeReader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 section 2.1.1 (leaf-to-root order)."""
    assert 0 <= index < size
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index - start < k:
            path.append(_subtree_root(start + k, end, read))
            end = start + k
        else:
            path.append(_subtree_root(start, start + k, read))
            start += k
    path.reverse()
    return path


def consistency_proof(old_size: int, new_size: int, read: NodeReader) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 6962 section 2.1.2; empty when the sizes are equal."""
    assert 0 < old_size <= new_size
    proof: list[bytes] = []
    start, end, complete = 0, new_size, True
    while old_size != end:
        k = split_point(end - start)
        if old_size - start <= k:
            proof.append(_subtree_root(start + k, end, read))
            end = start + k
        else:
            proof.append(_subtree_root(start, start + k, read))
            start += k
            complete = False
    if not complete:
        proof.append(_subtree_root(start, end, read))
    proof.reverse()
    return proof


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes an inclusion proof of `index` in a tree of `size` has."""
    assert 0 <= index < size
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes a consistency proof from old_size to new_size has (0 < old < new)."""
    assert 0 < old_size < new_size
    index = old_size - 1
    inner = (index ^ (new_size - 1)).bit_length()
    border = (index >> inner).bit_count()
    shift = (old_size & -old_size).bit_length() - 1
    starts_with_old_root = old_size == 1 << shift
    return (0 if starts_with_old_root else 1) + inner - shift + border


def _hash_problem(value: bytes, name: str) -> str | None:
    if len(value) != HASH_BYTES:
        return f"{name} is {len(value)} bytes, a SHA-256 hash is {HASH_BYTES}"
    return None


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2 steps 2-4: the root the path leads to (lengths checked first)."""
    fn, sn = index, size - 1
    result = leaf
    for sibling in path:
        assert sn != 0  # the length check guarantees it
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return result


def inclusion_problem(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> str | None:
    """Why `path` does not prove leaf hash `leaf` at `index` in the tree of `size` with `root`."""
    for value, name in ((leaf, "leaf hash"), (root, "root")):
        problem = _hash_problem(value, name)
        if problem:
            return problem
    if not 0 <= index < size:
        return f"leaf index {index} is not below tree size {size}"
    if size > MAX_TREE_SIZE:
        return f"tree size {size} exceeds 2**64-1"
    want = inclusion_proof_length(index, size)
    if len(path) != want:
        return (
            f"audit path has {len(path)} hashes; a proof of index {index} in a tree of "
            f"{size} has {want}"
        )
    for position, sibling in enumerate(path):
        problem = _hash_problem(sibling, f"audit path entry {position}")
        if problem:
            return problem
    if root_from_inclusion(leaf, index, size, path) != root:
        return "audit path does not lead to the root"
    return None


def consistency_problem(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> str | None:
    """Why `proof` does not show the tree (old_size, old_root) is a prefix of
    (new_size, new_root). RFC 9162 section 2.1.4.2; sizes must be 0 < old <= new."""
    for value, name in ((old_root, "old root"), (new_root, "new root")):
        problem = _hash_problem(value, name)
        if problem:
            return problem
    if old_size == 0:
        return "consistency from size 0 proves nothing (RFC 9162 needs 0 < old size)"
    if old_size > new_size:
        return f"old size {old_size} exceeds new size {new_size}"
    if new_size > MAX_TREE_SIZE:
        return f"tree size {new_size} exceeds 2**64-1"
    if old_size == new_size:
        if proof:
            return f"equal sizes need an empty proof, got {len(proof)} hashes"
        if old_root != new_root:
            return "equal sizes but the roots differ"
        return None
    want = consistency_proof_length(old_size, new_size)
    if len(proof) != want:
        return f"proof has {len(proof)} hashes; a proof from {old_size} to {new_size} has {want}"
    for position, value in enumerate(proof):
        problem = _hash_problem(value, f"proof entry {position}")
        if problem:
            return problem
    # RFC 9162 section 2.1.4.2, steps 2-7.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for value in path[1:]:
        assert sn != 0  # the length check guarantees it
        if fn & 1 or fn == sn:
            fr = node_hash(value, fr)
            sr = node_hash(value, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, value)
        fn >>= 1
        sn >>= 1
    assert sn == 0
    if fr != old_root:
        return "proof does not lead to the old root"
    if sr != new_root:
        return "proof does not lead to the new root"
    return None


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    return inclusion_problem(leaf, index, size, path, root) is None


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    return consistency_problem(old_size, new_size, proof, old_root, new_root) is None


class MemoryTree:
    """An append-only RFC 6962 tree in memory, keeping every perfect subtree exactly as the
    LevelDB log does (tests, the simulator, offline recomputation)."""

    def __init__(self) -> None:
        self.levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def append_hash(self, hashed_leaf: bytes) -> None:
        assert len(hashed_leaf) == HASH_BYTES
        self.levels[0].append(hashed_leaf)
        level = 0
        while len(self.levels[level]) % 2 == 0:
            pair = self.levels[level][-2:]
            if len(self.levels) == level + 1:
                self.levels.append([])
            self.levels[level + 1].append(node_hash(pair[0], pair[1]))
            level += 1

    def append(self, data: bytes) -> None:
        self.append_hash(leaf_hash(data))

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        assert 0 <= size <= self.size
        return range_root(0, size, self.node)

    def inclusion_path(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        assert size <= self.size
        return inclusion_path(index, size, self.node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        assert new_size <= self.size
        return consistency_proof(old_size, new_size, self.node)
