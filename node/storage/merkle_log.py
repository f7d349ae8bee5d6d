"""The global append-only RFC 6962 log of committed txs, kept in the node's LevelDB.

Keys (family keyspace.MERKLE):

    m/n <last:8 BE> <level:1>   -> 32-byte hash of the perfect subtree at `level` whose last leaf
                                   is `last`: leaves [last + 1 - 2**level, last]  (level 0 = leaf
                                   hash)
    m/size                      -> log size, 8 bytes BE

A node is keyed by the leaf that completes it, so every append writes keys above every key
already written: the store keeps them in a LevelDB of their own (log/, store v6), whose files
LevelDB moves down its levels without rewriting them (node/storage/store_parts.py).

Rules it keeps:
- Each perfect subtree is written exactly once, when its last leaf arrives, and never changed:
  an append costs one leaf write plus one write per completed parent, 2 writes amortized.
- The right frontier (the perfect subtrees whose fold is the current root) lives in memory, so
  the current root and the next root cost no reads.
- Any proof, and the root of any historical size k, reads O(log n) stored nodes: perfect subtrees
  are read, the ragged right edge of size k is folded from them (node/proof/merkle.py).
- Appends are planned without touching the store (`plan_append`), written into the caller's
  WriteBatch (`write_plan`) so a block and its log nodes commit together, and become the log's
  state only after that batch was written (`install`). A dropped batch leaves the log unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kledger.node.errors import Refused, Status
from kledger.node.proof import merkle
from kledger.node.storage import keyspace

SIZE_KEY = keyspace.MERKLE + b"size"
NODE_KEY = keyspace.MERKLE + b"n"
MAX_LEVEL = 64


class LogCorrupt(ValueError):
    """The stored log does not add up (a node is missing or the size record is malformed)."""


def node_key(level: int, index: int) -> bytes:
    """The key of the perfect subtree at `level` over leaves [index * 2**level, ...)."""
    assert 0 <= level <= MAX_LEVEL and index >= 0
    last = ((index + 1) << level) - 1
    assert last < 2**64, "log position beyond 2**64 leaves"
    return NODE_KEY + last.to_bytes(8, "big") + bytes([level])


def nodes_from(size: int) -> bytes:
    """The first key of the nodes a log of `size` leaves does not hold yet (their last leaf is
    `size` or later): what a dropped append may have left, for the store's trim at open."""
    return NODE_KEY + size.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """What appending some leaves does: the new size and root, the node writes, the frontier."""

    old_size: int
    size: int
    root: bytes
    writes: tuple[tuple[bytes, bytes], ...]
    frontier: tuple[tuple[int, bytes], ...]


class MerkleLog:
    def __init__(self, db: Any) -> None:
        """`db` is an open plyvel.DB (or a prefixed view of one)."""
        self._db = db
        raw = db.get(SIZE_KEY)
        if raw is None:
            size = 0
        elif len(raw) != 8:
            raise LogCorrupt(f"log size record is {len(raw)} bytes, expected 8")
        else:
            size = int.from_bytes(raw, "big")
        frontier = tuple(
            (level, self.node(level, index)) for level, index in merkle.perfect_subtrees(0, size)
        )
        # Size and frontier change together in one assignment, so a reader on another thread
        # (a gRPC proof request) never pairs a new size with an old frontier.
        self._tip: tuple[int, tuple[tuple[int, bytes], ...]] = (size, frontier)

    @property
    def size(self) -> int:
        return self._tip[0]

    def node(self, level: int, index: int) -> bytes:
        value: bytes | None = self._db.get(node_key(level, index))
        if value is None or len(value) != merkle.HASH_BYTES:
            what = "missing" if value is None else f"{len(value)} bytes"
            raise LogCorrupt(f"log node (level {level}, index {index}) is {what}")
        return value

    def leaf_hash(self, index: int) -> bytes:
        assert 0 <= index < self.size
        return self.node(0, index)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all); historical sizes read O(log n) nodes."""
        current_size, frontier = self._tip
        if size is None or size == current_size:
            return _fold(frontier)
        self._check_size(size, "tree_size")
        return merkle.range_root(0, size, self.node)

    def plan_append(self, leaves: Sequence[bytes]) -> AppendPlan:
        """Plan appending leaf data `leaves` (each is hashed as an RFC 6962 leaf)."""
        old_size, old_frontier = self._tip
        frontier = list(old_frontier)
        writes: list[tuple[bytes, bytes]] = []
        position = old_size
        for data in leaves:
            hashed = merkle.leaf_hash(data)
            writes.append((node_key(0, position), hashed))
            frontier.append((0, hashed))
            # Merge equal-level neighbours: each merge completes one perfect subtree.
            while len(frontier) >= 2 and frontier[-1][0] == frontier[-2][0]:
                (level, right), (_, left) = frontier.pop(), frontier.pop()
                parent = merkle.node_hash(left, right)
                writes.append((node_key(level + 1, position >> (level + 1)), parent))
                frontier.append((level + 1, parent))
            position += 1
        if leaves:
            writes.append((SIZE_KEY, position.to_bytes(8, "big")))
        return AppendPlan(old_size, position, _fold(frontier), tuple(writes), tuple(frontier))

    def root_after(self, leaves: Sequence[bytes]) -> tuple[int, bytes]:
        plan = self.plan_append(leaves)
        return plan.size, plan.root

    def write_plan(self, plan: AppendPlan, batch: Any) -> None:
        """Put the plan's writes into a plyvel WriteBatch (nothing is written until it is)."""
        assert plan.old_size == self.size, "plan made against another log size"
        for key, value in plan.writes:
            batch.put(key, value)

    def install(self, plan: AppendPlan) -> None:
        """Adopt the plan after its batch was written."""
        assert plan.old_size == self.size, "plan made against another log size"
        self._tip = (plan.size, plan.frontier)

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> list[bytes]:
        self._check_size(tree_size, "tree_size")
        if not 0 <= leaf_index < tree_size:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"{leaf_index} is not below tree_size {tree_size}",
                "leaf_index",
            )
        return merkle.inclusion_path(leaf_index, tree_size, self.node)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        self._check_size(new_size, "new_size")
        if old_size <= 0:
            raise Refused(
                Status.INVALID_ARGUMENT, "must be > 0 (a proof from 0 proves nothing)", "old_size"
            )
        if old_size > new_size:
            raise Refused(Status.INVALID_ARGUMENT, f"exceeds new_size {new_size}", "old_size")
        return merkle.consistency_proof(old_size, new_size, self.node)

    def _check_size(self, size: int, name: str) -> None:
        current_size = self.size
        if not 0 <= size <= current_size:
            raise Refused(
                Status.INVALID_ARGUMENT, f"{size} exceeds the log size {current_size}", name
            )


def _fold(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    if not frontier:
        return merkle.EMPTY_ROOT
    result = frontier[-1][1]
    for _, left in reversed(frontier[:-1]):
        result = merkle.node_hash(left, result)
    return result
