"""A sparse Merkle tree over the registry state (DESIGN.md section 7): the header's state_root.

    path(key)        = SHA-256(state key)           256 bits, most significant bit first
    leaf(key, value) = H(0x00 || path || H(value))  at depth 256
    node(left, right)= H(0x01 || left || right)     left child = bit 0
    empty subtree    = DEFAULT[depth]: DEFAULT[256] = 32 zero bytes,
                       DEFAULT[d] = node(DEFAULT[d+1], DEFAULT[d+1])

Nodes are content-addressed under keyspace.SMT: SMT + hash -> 0x01 || left || right for an
inner node, 0x00 || path || value for a leaf. Nothing is ever overwritten or deleted, so every
committed root stays provable (a proof for an old height walks down from that height's root).
Empty subtrees are never stored. An update of k keys costs at most 256*k node reads and writes
(shared upper nodes are touched once per block). The current root is stored at SMT + b"root".

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
    new_root = _update(view, writes, root, 0, items) if items else root
    writes[ROOT_KEY] = new_root
    return new_root, writes


def _children(view: ReadView, writes: WriteSet, node: bytes, depth: int) -> tuple[bytes, bytes]:
    if node == DEFAULT[depth]:
        return DEFAULT[depth + 1], DEFAULT[depth + 1]
    key = keyspace.SMT + node
    record = writes.get(key) or view.get(key)
    assert record is not None and record[:1] == _NODE, f"SMT node {node.hex()} missing"
    return record[1:33], record[33:65]


def _update(
    view: ReadView,
    writes: WriteSet,
    node: bytes,
    depth: int,
    items: list[tuple[bytes, bytes | None]],
) -> bytes:
    if depth == DEPTH:
        assert len(items) == 1
        path, value = items[0]
        if value is None:
            return DEFAULT[DEPTH]
        leaf = leaf_hash(path, value)
        writes[keyspace.SMT + leaf] = _LEAF + path + value
        return leaf
    left, right = _children(view, writes, node, depth)
    left_items = [item for item in items if _bit(item[0], depth) == 0]
    right_items = [item for item in items if _bit(item[0], depth) == 1]
    if left_items:
        left = _update(view, writes, left, depth + 1, left_items)
    if right_items:
        right = _update(view, writes, right, depth + 1, right_items)
    result = node_hash(left, right)
    if result != DEFAULT[depth]:
        writes[keyspace.SMT + result] = _NODE + left + right
    return result


def prove(
    view: ReadView, root: bytes, state_key: bytes
) -> tuple[bytes | None, list[tuple[int, bytes]]]:
    """(value at `state_key` under `root` or None, non-default siblings as (depth, hash))."""
    path = key_path(state_key)
    siblings: list[tuple[int, bytes]] = []
    node = root
    for depth in range(DEPTH):
        if node == DEFAULT[depth]:
            return None, siblings
        left, right = _children(view, {}, node, depth)
        if _bit(path, depth) == 0:
            node, sibling = left, right
        else:
            node, sibling = right, left
        if sibling != DEFAULT[depth + 1]:
            siblings.append((depth, sibling))
    if node == DEFAULT[DEPTH]:
        return None, siblings
    record = view.get(keyspace.SMT + node)
    assert record is not None and record[:1] == _LEAF and record[1:33] == path
    return record[33:], siblings


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
