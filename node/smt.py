"""A sparse Merkle tree over the registry state (DESIGN.md section 7): the header's state_root.

    path(key)        = SHA-256(state key)           256 bits, most significant bit first
    leaf(key, value) = H(0x00 || path || H(value))  at depth 256
    node(left, right)= H(0x01 || left || right)     left child = bit 0
    empty subtree    = DEFAULT[depth]: DEFAULT[256] = 32 zero bytes,
                       DEFAULT[d] = node(DEFAULT[d+1], DEFAULT[d+1])

Nodes are content-addressed under keyspace.SMT: SMT + hash -> 0x01 || left || right for a
subtree that holds two or more leaves; a subtree holding exactly one leaf, at whatever depth,
is stored as 0x00 || path || value (its hash is still the full 256-level hash, so roots and
proofs are those of the plain tree).
Nothing is ever overwritten or deleted, so every committed root stays provable (a proof for an
old height walks down from that height's root). Empty subtrees are never stored. An update of
k keys in a tree of n costs about k*log2(n) node writes and k*256 hashes; the current root is
stored at SMT + b"root".

A proof is the list of non-default siblings as (depth, hash) pairs, depth 0 = the root's child
level; `verify_proof` needs nothing but the root, the key, the claimed value (None = absent).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from node import keyspace
from node.keyspace import ReadView, WriteSet

DEPTH = 256
HASH_BYTES = 32
ROOT_KEY = keyspace.SMT + b"root"
_LEAF = b"\x00"
_NODE = b"\x01"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def key_path(state_key: bytes) -> bytes:
    return _sha(state_key)


def leaf_hash(path: bytes, value: bytes) -> bytes:
    return _sha(_LEAF + path + _sha(value))


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha(_NODE + left + right)


def _defaults() -> tuple[bytes, ...]:
    table = [b""] * (DEPTH + 1)
    table[DEPTH] = bytes(HASH_BYTES)
    for depth in range(DEPTH - 1, -1, -1):
        table[depth] = node_hash(table[depth + 1], table[depth + 1])
    return tuple(table)


DEFAULT = _defaults()
EMPTY_ROOT = DEFAULT[0]


def _bit(path: bytes, depth: int) -> int:
    return (path[depth >> 3] >> (7 - (depth & 7))) & 1


def stored_root(view: ReadView) -> bytes:
    root = view.get(ROOT_KEY)
    return EMPTY_ROOT if root is None else root


def update(
    view: ReadView, root: bytes, changes: Mapping[bytes, bytes | None]
) -> tuple[bytes, WriteSet]:
    """Apply state changes (state key -> new value or None) to the tree with `root`. Returns the
    new root and the node writes (including the new root pointer)."""
    writes: WriteSet = {}
    items = sorted((key_path(key), value) for key, value in changes.items())
    assert len({path for path, _ in items}) == len(items)
    new_root = root
    if items:
        new_root, single = _update(view, writes, root, 0, items)
        if single is not None:
            _write_single(writes, new_root, single)
    writes[ROOT_KEY] = new_root
    return new_root, writes


Single = tuple[bytes, bytes]  # (path, value) of the one leaf of a subtree


def single_subtree_hash(path: bytes, value: bytes, depth: int) -> bytes:
    """The hash of the subtree at `depth` on `path` that holds only this leaf."""
    node = leaf_hash(path, value)
    for level in range(DEPTH - 1, depth - 1, -1):
        sibling = DEFAULT[level + 1]
        node = node_hash(sibling, node) if _bit(path, level) else node_hash(node, sibling)
    return node


def _record(view: ReadView, writes: WriteSet, node: bytes) -> bytes:
    key = keyspace.SMT + node
    record = writes.get(key) or view.get(key)
    assert record is not None, f"SMT node {node.hex()} missing"
    return record


def _write_single(writes: WriteSet, node: bytes, single: Single) -> None:
    writes[keyspace.SMT + node] = _LEAF + single[0] + single[1]


def _update(
    view: ReadView,
    writes: WriteSet,
    node: bytes,
    depth: int,
    items: list[tuple[bytes, bytes | None]],
) -> tuple[bytes, Single | None]:
    """New (hash, the single leaf if the subtree now holds exactly one) of the subtree `node`
    at `depth` after `items`. A subtree holding one leaf is stored as that leaf (one record,
    whatever its depth); the caller writes it only when it does not join a larger single."""
    record = None if node == DEFAULT[depth] else _record(view, writes, node)
    if record is not None and record[:1] == _LEAF:
        path, value = record[1:33], record[33:]
        if all(item[0] != path for item in items):
            items = sorted([*items, (path, value)])
        node, record = DEFAULT[depth], None
    if record is None:
        present = [(path, value) for path, value in items if value is not None]
        if not present:
            return DEFAULT[depth], None
        if len(present) == 1:
            path, value = present[0]
            return single_subtree_hash(path, value, depth), (path, value)
    assert depth < DEPTH
    if record is None:
        left, right = DEFAULT[depth + 1], DEFAULT[depth + 1]
    else:
        assert record[:1] == _NODE
        left, right = record[1:33], record[33:65]
    sides: list[tuple[bytes, Single | None, bool]] = []
    for bit, child in ((0, left), (1, right)):
        chosen = [item for item in items if _bit(item[0], depth) == bit]
        if chosen:
            updated, single = _update(view, writes, child, depth + 1, chosen)
            sides.append((updated, single, True))
        elif child == DEFAULT[depth + 1]:
            sides.append((child, None, False))
        else:
            kept = _record(view, writes, child)
            single = (kept[1:33], kept[33:]) if kept[:1] == _LEAF else None
            sides.append((child, single, False))
    (left, left_single, left_new), (right, right_single, right_new) = sides
    result = node_hash(left, right)
    empty = DEFAULT[depth + 1]
    if left == empty and right == empty:
        return DEFAULT[depth], None
    if right == empty and left_single is not None:
        return result, left_single
    if left == empty and right_single is not None:
        return result, right_single
    if left_single is not None and left_new:
        _write_single(writes, left, left_single)
    if right_single is not None and right_new:
        _write_single(writes, right, right_single)
    writes[keyspace.SMT + result] = _NODE + left + right
    return result, None


def prove(
    view: ReadView, root: bytes, state_key: bytes
) -> tuple[bytes | None, list[tuple[int, bytes]]]:
    """(value at `state_key` under `root` or None, non-default siblings as (depth, hash))."""
    path = key_path(state_key)
    siblings: list[tuple[int, bytes]] = []
    node = root
    for depth in range(DEPTH + 1):
        if node == DEFAULT[depth]:
            return None, siblings
        record = _record(view, {}, node)
        if record[:1] == _LEAF:
            other, value = record[1:33], record[33:]
            if other == path:
                return value, siblings
            # Absence: the other leaf's subtree hangs where the two paths part.
            split = next(d for d in range(depth, DEPTH) if _bit(other, d) != _bit(path, d))
            siblings.append((split, single_subtree_hash(other, value, split + 1)))
            return None, siblings
        assert depth < DEPTH and record[:1] == _NODE
        left, right = record[1:33], record[33:65]
        if _bit(path, depth) == 0:
            node, sibling = left, right
        else:
            node, sibling = right, left
        if sibling != DEFAULT[depth + 1]:
            siblings.append((depth, sibling))
    raise AssertionError("unreachable: depth 256 holds leaves only")


def compute_root(
    state_key: bytes, value: bytes | None, siblings: Iterable[tuple[int, bytes]]
) -> bytes:
    """The root that a proof implies; raises ValueError for a malformed sibling list."""
    path = key_path(state_key)
    by_depth: dict[int, bytes] = {}
    previous = -1
    for depth, sibling in siblings:
        if not (isinstance(depth, int) and previous < depth < DEPTH):
            raise ValueError("sibling depths must be increasing integers in 0..255")
        if not (isinstance(sibling, bytes) and len(sibling) == HASH_BYTES):
            raise ValueError(f"sibling at depth {depth} must be {HASH_BYTES} bytes")
        by_depth[depth] = sibling
        previous = depth
    node = DEFAULT[DEPTH] if value is None else leaf_hash(path, value)
    for depth in range(DEPTH - 1, -1, -1):
        sibling = by_depth.get(depth, DEFAULT[depth + 1])
        node = node_hash(sibling, node) if _bit(path, depth) else node_hash(node, sibling)
    return node


def verify_proof(
    root: bytes, state_key: bytes, value: bytes | None, siblings: Iterable[tuple[int, bytes]]
) -> bool:
    try:
        return compute_root(state_key, value, siblings) == root
    except ValueError:
        return False
