"""A sparse Merkle tree over the registry state (DESIGN.md section 7): the header's state_root.

The compact form (as Diem's and Aptos's Jellyfish trees): a subtree holding a single leaf is
that leaf's hash at whatever depth it sits, so a key costs about log2(keys) hashes, not 256.

    path(key)          = SHA-256(state key)          256 bits, most significant bit first
    empty subtree      = EMPTY = 32 zero bytes        at any depth
    one-leaf subtree   = H(0x00 || path || H(value))  at any depth
    two or more leaves = H(0x01 || left || right)     split on the path bit at the node's depth,
                                                      left child = bit 0

The shape is a function of the key set alone (a leaf sits at the shallowest depth where its path
prefix is unique to it), so the root does not depend on the order of updates.

Records are content-addressed under keyspace.SMT: SMT + hash -> 0x00 || path || value for a leaf
(its hash does not depend on its depth, so a leaf pushed down by a new neighbour keeps its record)
and 0x01 || left || right for an inner node. Nothing is ever overwritten or deleted, so every
committed root stays provable (a proof for an old height walks down from that height's root).
The current root is stored at SMT + b"root".

A proof (`Proof`) lists the non-empty siblings on the key's path as (depth, hash), depth 0 = the
root's children, increasing; the walk ends just below the deepest sibling (the sibling of a leaf
or of an empty subtree is never empty, or the parent would have collapsed). There the key's own
leaf proves presence; an empty subtree, or another key's leaf (`other_leaf`: its path and value
hash), proves absence. `verify_proof` needs nothing but the root, the key and the claimed value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from node import keyspace
from node.keyspace import ReadView, WriteSet

DEPTH = 256
HASH_BYTES = 32
EMPTY = bytes(HASH_BYTES)
EMPTY_ROOT = EMPTY
ROOT_KEY = keyspace.SMT + b"root"
_LEAF = b"\x00"
_NODE = b"\x01"

Item = tuple[bytes, bytes | None]  # (key path, new value or None to delete)
Subtree = tuple[bytes, bool | None]  # (hash, is it one leaf? None = not looked at)


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def key_path(state_key: bytes) -> bytes:
    return _sha(state_key)


def leaf_hash(path: bytes, value: bytes) -> bytes:
    return _leaf_hash_of(path, _sha(value))


def _leaf_hash_of(path: bytes, value_hash: bytes) -> bytes:
    return _sha(_LEAF + path + value_hash)


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha(_NODE + left + right)


def _bit(path: bytes, depth: int) -> int:
    return (path[depth >> 3] >> (7 - (depth & 7))) & 1


@dataclass(frozen=True, slots=True)
class Proof:
    siblings: list[tuple[int, bytes]] = field(default_factory=list)
    # Absence shown by another key's leaf where the key's path ends: (its path, H(its value)).
    other_leaf: tuple[bytes, bytes] | None = None


def stored_root(view: ReadView) -> bytes:
    root = view.get(ROOT_KEY)
    return EMPTY_ROOT if root is None else root


def update(
    view: ReadView, root: bytes, changes: Mapping[bytes, bytes | None]
) -> tuple[bytes, WriteSet]:
    """Apply state changes (state key -> new value or None) to the tree with `root`. Returns the
    new root and the record writes (including the new root pointer). One batch shares the work
    of the paths its keys have in common."""
    writes: WriteSet = {}
    items = sorted((key_path(key), value) for key, value in changes.items())
    assert len({path for path, _ in items}) == len(items)
    new_root = _Updater(view, writes).update(root, 0, items)[0] if items else root
    writes[ROOT_KEY] = new_root
    return new_root, writes


class _Updater:
    def __init__(self, view: ReadView, writes: WriteSet) -> None:
        self._view = view
        self._writes = writes

    def record(self, node: bytes) -> bytes:
        key = keyspace.SMT + node
        record = self._writes.get(key) or self._view.get(key)
        assert record is not None, f"SMT node {node.hex()} missing"
        return record

    def update(self, node: bytes, depth: int, items: list[Item]) -> Subtree:
        """The subtree `node` at `depth` after `items` (sorted by path, all under this node)."""
        if node == EMPTY:
            return self.build(depth, [(p, v) for p, v in items if v is not None], None)
        record = self.record(node)
        if record[:1] == _LEAF:
            path = record[1:33]
            merged = dict(items)
            kept = path not in merged
            if kept:
                merged[path] = record[33:]
            present = sorted((p, v) for p, v in merged.items() if v is not None)
            return self.build(depth, present, (path, node) if kept else None)
        assert depth < DEPTH and record[:1] == _NODE
        split = _split(items, depth)
        low, high = items[:split], items[split:]
        left: Subtree = self.update(record[1:33], depth + 1, low) if low else (record[1:33], None)
        right: Subtree = (
            self.update(record[33:65], depth + 1, high) if high else (record[33:65], None)
        )
        return self.join(left, right)

    def build(
        self, depth: int, present: list[tuple[bytes, bytes]], stored: tuple[bytes, bytes] | None
    ) -> Subtree:
        """A fresh subtree at `depth` of the present leaves (sorted by path); `stored` is the
        (path, hash) of a leaf among them whose record already exists."""
        if not present:
            return EMPTY, False
        if len(present) == 1:
            path, value = present[0]
            if stored is not None and stored[0] == path:
                return stored[1], True
            hashed = leaf_hash(path, value)
            self._writes[keyspace.SMT + hashed] = _LEAF + path + value
            return hashed, True
        assert depth < DEPTH
        split = _split(present, depth)
        return self.join(
            self.build(depth + 1, present[:split], stored),
            self.build(depth + 1, present[split:], stored),
        )

    def join(self, left: Subtree, right: Subtree) -> Subtree:
        """The parent of two subtrees: empty, the one leaf lifted up, or an inner node."""
        if left[0] == EMPTY and right[0] == EMPTY:
            return EMPTY, False
        if left[0] == EMPTY and self.is_leaf(right):
            return right[0], True
        if right[0] == EMPTY and self.is_leaf(left):
            return left[0], True
        hashed = node_hash(left[0], right[0])
        self._writes[keyspace.SMT + hashed] = _NODE + left[0] + right[0]
        return hashed, False

    def is_leaf(self, subtree: Subtree) -> bool:
        if subtree[1] is None:  # an untouched child: read only when its sibling emptied out
            return self.record(subtree[0])[:1] == _LEAF
        return subtree[1]


def _split(items: list[tuple[bytes, bytes | None]] | list[tuple[bytes, bytes]], depth: int) -> int:
    """Index of the first item whose path has bit 1 at `depth` (items sorted by path, sharing
    their first `depth` bits, so the 0s come first)."""
    for index, item in enumerate(items):
        if _bit(item[0], depth):
            return index
    return len(items)


def prove(view: ReadView, root: bytes, state_key: bytes) -> tuple[bytes | None, Proof]:
    """(value at `state_key` under `root` or None, the proof of that)."""
    path = key_path(state_key)
    siblings: list[tuple[int, bytes]] = []
    node = root
    for depth in range(DEPTH + 1):
        if node == EMPTY:
            return None, Proof(siblings)
        record = view.get(keyspace.SMT + node)
        assert record is not None, f"SMT node {node.hex()} missing"
        if record[:1] == _LEAF:
            other, value = record[1:33], record[33:]
            if other == path:
                return value, Proof(siblings)
            return None, Proof(siblings, (other, _sha(value)))
        assert depth < DEPTH and record[:1] == _NODE
        left, right = record[1:33], record[33:65]
        node, sibling = (left, right) if _bit(path, depth) == 0 else (right, left)
        if sibling != EMPTY:
            siblings.append((depth, sibling))
    raise AssertionError("unreachable: distinct paths part before depth 256")


def compute_root(state_key: bytes, value: bytes | None, proof: Proof) -> bytes:
    """The root that a proof implies; raises ValueError for a malformed proof."""
    path = key_path(state_key)
    by_depth: dict[int, bytes] = {}
    previous = -1
    for depth, sibling in proof.siblings:
        if not (isinstance(depth, int) and previous < depth < DEPTH):
            raise ValueError("sibling depths must be increasing integers in 0..255")
        if not (isinstance(sibling, bytes) and len(sibling) == HASH_BYTES):
            raise ValueError(f"sibling at depth {depth} must be {HASH_BYTES} bytes")
        by_depth[depth] = sibling
        previous = depth
    end = previous + 1  # the depth where the key's path ends
    if proof.other_leaf is None:
        node = EMPTY if value is None else leaf_hash(path, value)
    else:
        if value is not None:
            raise ValueError("a proof of a value has no other leaf")
        other, other_value_hash = proof.other_leaf
        if not (len(other) == HASH_BYTES and len(other_value_hash) == HASH_BYTES):
            raise ValueError(f"other leaf path and value hash must be {HASH_BYTES} bytes each")
        if other == path:
            raise ValueError("the other leaf is the key's own leaf")
        if any(_bit(other, depth) != _bit(path, depth) for depth in range(end)):
            raise ValueError("the other leaf does not lie on the key's path")
        node = _leaf_hash_of(other, other_value_hash)
    for depth in range(end - 1, -1, -1):
        sibling = by_depth.get(depth, EMPTY)
        node = node_hash(sibling, node) if _bit(path, depth) else node_hash(node, sibling)
    return node


def verify_proof(root: bytes, state_key: bytes, value: bytes | None, proof: Proof) -> bool:
    try:
        return compute_root(state_key, value, proof) == root
    except ValueError:
        return False
