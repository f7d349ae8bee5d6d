"""The sparse Merkle tree over the registry state (docs/design.md §7), the header's state_root:
its hashing rules and the verification of its proofs (what a verifier needs; the records in the
store, updates and proof building are kledger.node.storage.state_tree).

The compact form (as Diem's and Aptos's Jellyfish trees): a subtree holding a single leaf is
that leaf's hash at whatever depth it sits, so a key costs about log2(keys) hashes, not 256.

    path(key)          = SHA-256(state key)          256 bits, most significant bit first
    empty subtree      = EMPTY = 32 zero bytes        at any depth
    one-leaf subtree   = H(0x00 || path || H(value))  at any depth
    two or more leaves = H(0x01 || left || right)     split on the path bit at the node's depth,
                                                      left child = bit 0

The shape is a function of the key set alone (a leaf sits at the shallowest depth where its path
prefix is unique to it), so the root does not depend on the order of updates.

A proof (`Proof`) lists the non-empty siblings on the key's path as (depth, hash), depth 0 = the
root's children, increasing; the walk ends just below the deepest sibling (the sibling of a leaf
or of an empty subtree is never empty, or the parent would have collapsed). There the key's own
leaf proves presence; an empty subtree, or another key's leaf (`other_leaf`: its path and value
hash), proves absence. `verify_proof` needs nothing but the root, the key and the claimed value.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

DEPTH = 256
HASH_BYTES = 32
EMPTY = bytes(HASH_BYTES)
EMPTY_ROOT = EMPTY
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def key_path(state_key: bytes) -> bytes:
    return _sha(state_key)


def leaf_hash(path: bytes, value: bytes) -> bytes:
    return _leaf_hash_of(path, _sha(value))


def leaf_hash_of(path: bytes, value_hash: bytes) -> bytes:
    """A leaf's hash from its value's hash (what a tree page keeps of a leaf)."""
    return _leaf_hash_of(path, value_hash)


def value_hash(value: bytes) -> bytes:
    return _sha(value)


def _leaf_hash_of(path: bytes, value_hash: bytes) -> bytes:
    return _sha(LEAF_PREFIX + path + value_hash)


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha(NODE_PREFIX + left + right)


def path_bit(path: bytes, depth: int) -> int:
    return (path[depth >> 3] >> (7 - (depth & 7))) & 1


@dataclass(frozen=True, slots=True)
class Proof:
    siblings: list[tuple[int, bytes]] = field(default_factory=list)
    # Absence shown by another key's leaf where the key's path ends: (its path, H(its value)).
    other_leaf: tuple[bytes, bytes] | None = None


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
        if any(path_bit(other, depth) != path_bit(path, depth) for depth in range(end)):
            raise ValueError("the other leaf does not lie on the key's path")
        node = _leaf_hash_of(other, other_value_hash)
    for depth in range(end - 1, -1, -1):
        sibling = by_depth.get(depth, EMPTY)
        node = node_hash(sibling, node) if path_bit(path, depth) else node_hash(node, sibling)
    return node


def verify_proof(root: bytes, state_key: bytes, value: bytes | None, proof: Proof) -> bool:
    try:
        return compute_root(state_key, value, proof) == root
    except ValueError:
        return False
