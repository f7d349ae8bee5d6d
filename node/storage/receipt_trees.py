"""A block's receipts tree as the store keeps it (`r/<height>`, docs/design.md §6): every
perfect subtree's hash of the RFC 6962 tree over the block's receipt encodings
(node/proof/receipts.py), so a receipt's audit path is O(log n) slices of one record and never
a hash of the whole block.

    record = leaf count (4 bytes BE) || level 0 || level 1 || ...
    level k = the hashes of the n >> k perfect subtrees of 2**k leaves, left to right

Rules kept here:
- The hashing is node/proof/merkle.py's, unchanged (leaf H(0x00 || receipt encoding), node
  H(0x01 || left || right), the empty tree H("")); this module only stores and slices.
- Decoding checks the record's length against its count and nothing else: the store checks
  the root against the header's receipts_root (and a served path against it) where it reads one.
"""

from __future__ import annotations

from kledger.node.errors import DecodeError
from kledger.node.proof import merkle

COUNT_BYTES = 4
HASH_BYTES = merkle.HASH_BYTES


def level_sizes(count: int) -> list[int]:
    """How many perfect subtrees each level of a tree of `count` leaves has (none for 0)."""
    assert 0 <= count < 2**32, f"receipt count {count}"
    return [count >> level for level in range(count.bit_length())]


def encode_receipt_tree(tree: merkle.MemoryTree) -> bytes:
    """The record of an in-memory tree (its levels are exactly the perfect subtrees)."""
    sizes = level_sizes(tree.size)
    assert [len(level) for level in tree.levels[: len(sizes)]] == sizes, "not a whole tree"
    parts = [tree.size.to_bytes(COUNT_BYTES, "big")]
    for level, size in enumerate(sizes):
        parts.extend(tree.levels[level][:size])
    return b"".join(parts)


class StoredReceiptTree:
    """A decoded record: slices, no copies of the hashes until one is asked for."""

    __slots__ = ("_record", "_starts", "size")

    def __init__(self, record: bytes) -> None:
        """Raises DecodeError when the record's length does not fit its leaf count."""
        if len(record) < COUNT_BYTES:
            raise DecodeError("shorter than its leaf count", "receipt tree")
        self.size = int.from_bytes(record[:COUNT_BYTES], "big")
        starts: list[int] = []
        offset = COUNT_BYTES
        for size in level_sizes(self.size):
            starts.append(offset)
            offset += size * HASH_BYTES
        if len(record) != offset:
            raise DecodeError(
                f"{len(record)} bytes, a tree of {self.size} leaves takes {offset}",
                "receipt tree",
            )
        self._record = record
        self._starts = starts

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree (level, index): merkle.NodeReader."""
        assert 0 <= index < self.size >> level, f"no node ({level}, {index}) in {self.size}"
        start = self._starts[level] + index * HASH_BYTES
        return self._record[start : start + HASH_BYTES]

    def leaf(self, offset: int) -> bytes:
        return self.node(0, offset)

    def root(self) -> bytes:
        return merkle.range_root(0, self.size, self.node)

    def inclusion_path(self, offset: int) -> list[bytes]:
        assert 0 <= offset < self.size, f"receipt offset {offset} of {self.size}"
        return merkle.inclusion_path(offset, self.size, self.node)
