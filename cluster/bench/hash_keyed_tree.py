"""The state tree's previous layout (store format v1), kept only as the baseline that
`./scripts/bench_state_tree` measures the position-keyed pages against: binary records,
content-addressed (keyed by their hash), never deleted. Not used by the node.

Records under a bench-only prefix: SMT + hash -> 0x00 || path || value for a leaf and
0x01 || left || right for an inner node; the current root at SMT + b"root".
"""

from __future__ import annotations

from collections.abc import Mapping

from kledger.node.proof.smt import (
    DEPTH,
    EMPTY,
    EMPTY_ROOT,
    LEAF_PREFIX,
    NODE_PREFIX,
    Proof,
    key_path,
    leaf_hash,
    node_hash,
    path_bit,
    value_hash,
)
from kledger.node.storage import keyspace
from kledger.node.storage.keyspace import ReadView, WriteSet

ROOT_KEY = keyspace.SMT + b"root"

Item = tuple[bytes, bytes | None]  # (key path, new value or None to delete)
Subtree = tuple[bytes, bool | None]  # (hash, is it one leaf? None = not looked at)


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
        if record[:1] == LEAF_PREFIX:
            path = record[1:33]
            merged = dict(items)
            kept = path not in merged
            if kept:
                merged[path] = record[33:]
            present = sorted((p, v) for p, v in merged.items() if v is not None)
            return self.build(depth, present, (path, node) if kept else None)
        assert depth < DEPTH and record[:1] == NODE_PREFIX
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
            self._writes[keyspace.SMT + hashed] = LEAF_PREFIX + path + value
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
        self._writes[keyspace.SMT + hashed] = NODE_PREFIX + left[0] + right[0]
        return hashed, False

    def is_leaf(self, subtree: Subtree) -> bool:
        if subtree[1] is None:  # an untouched child: read only when its sibling emptied out
            return self.record(subtree[0])[:1] == LEAF_PREFIX
        return subtree[1]


def _split(items: list[tuple[bytes, bytes | None]] | list[tuple[bytes, bytes]], depth: int) -> int:
    """Index of the first item whose path has bit 1 at `depth` (items sorted by path, sharing
    their first `depth` bits, so the 0s come first)."""
    for index, item in enumerate(items):
        if path_bit(item[0], depth):
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
        if record[:1] == LEAF_PREFIX:
            other, value = record[1:33], record[33:]
            if other == path:
                return value, Proof(siblings)
            return None, Proof(siblings, (other, value_hash(value)))
        assert depth < DEPTH and record[:1] == NODE_PREFIX
        left, right = record[1:33], record[33:65]
        node, sibling = (left, right) if path_bit(path, depth) == 0 else (right, left)
        if sibling != EMPTY:
            siblings.append((depth, sibling))
    raise AssertionError("unreachable: distinct paths part before depth 256")
