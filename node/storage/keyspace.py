"""The store's key space, split into key families by a one-byte-plus-slash prefix
(docs/design.md §6). Every module that touches the store takes its prefix from here, so two
families can never collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

BLOCK = b"b/"  # height (8 bytes BE) -> stored block record (header, consensus block, tx hashes)
BLOCK_BY_HASH = b"h/"  # header hash -> height
CERTIFICATE = b"c/"  # height -> commit certificate
TX = b"t/"  # tx hash -> its position: height (8 bytes BE) + index in its block (4 bytes BE)
TX_RECORD = b"T/"  # height (8 bytes BE) + index in block (4 bytes BE) -> tx encoding + receipt
RECEIPT_TREE = b"r/"  # height (8 bytes BE) -> RFC 6962 tree over the block's receipts
MERKLE = b"m/"  # Merkle log nodes and leaves
STATE = b"s/"  # registry state: s/<family>/<key> -> canonical value
SMT = b"z/"  # sparse Merkle tree nodes over the registry state
EPOCH = b"e/"  # ending epoch (8 bytes BE) -> its last height and the next epoch's set
SAFETY = b"v/"  # consensus safety data (highest vote, lock, last vote)
META = b"x/"  # store metadata (format version, genesis digest, last height, ...)

FAMILIES: tuple[bytes, ...] = (TX_RECORD, BLOCK, BLOCK_BY_HASH, CERTIFICATE, TX, RECEIPT_TREE)
FAMILIES += (MERKLE, STATE, SMT, EPOCH, SAFETY, META)
# The tx records sort before every other family (store v4). The reasoning: LevelDB compacts a
# file of one level with every file of the next its key range overlaps; new records of a
# family in the middle of the key space can share a file with the keys below them, whose range
# then spans all the family's older records; a first family has nothing below it. Measured in
# LevelDB alone at 10^6 txs it was no better than T/ after the hash index (docs/bench.md "Tx
# records by position (store v4)"): what counts is keying the records by position at all.
assert min(FAMILIES) == TX_RECORD and len(set(FAMILIES)) == len(FAMILIES)
assert all(len(prefix) == 2 and prefix.endswith(b"/") for prefix in FAMILIES)

# What a state transition writes: raw key -> new value, or None to delete.
WriteSet = dict[bytes, bytes | None]


class ReadView(Protocol):
    """Read access to the store, as the registry state machine sees it."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def range_scan(view: ReadView) -> Callable[[bytes, bytes], Iterator[tuple[bytes, bytes]]]:
    """The records of `view` in [start, stop), in key order, through its prefix scan of the
    bounds' common prefix: for views without a range iterator (tests, tools)."""

    def scan(start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        shared = 0
        while shared < min(len(start), len(stop)) and start[shared] == stop[shared]:
            shared += 1
        for key, value in view.iterate(start[:shared]):
            if key >= stop:
                return
            if key >= start:
                yield key, value

    return scan


class OverlayView:
    """A ReadView with uncommitted writes on top: how a block's transactions see the writes of
    the transactions before them in the same block."""

    def __init__(self, base: ReadView, writes: Mapping[bytes, bytes | None]) -> None:
        self._base = base
        self._writes = writes

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        pending = {k: v for k, v in self._writes.items() if k.startswith(prefix)}
        merged = {k: v for k, v in self._base.iterate(prefix) if k not in pending}
        merged.update({k: v for k, v in pending.items() if v is not None})
        yield from sorted(merged.items())


class DictView:
    """An in-memory ReadView (tests, the simulator, offline re-computation)."""

    def __init__(self, data: Mapping[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted((k, v) for k, v in self.data.items() if k.startswith(prefix))

    def apply(self, writes: Mapping[bytes, bytes | None]) -> None:
        for key, value in writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
