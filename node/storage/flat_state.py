"""The flat registry state as the store keeps it (store v6, docs/design.md §6): `s/<key>` holds
the version (8 bytes BE: the height that last wrote the key) of the key's state-tree leaf, and
the value lives once, in that leaf (`z/l/<version><key path>`, in tree/).

Why (docs/bench.md "Values in the leaves (store v6)"): the flat state is the one family of
random keys that grows with the ledger, and LevelDB rewrites every byte of it once per level as
the store grows (about 18 bytes of compaction per byte kept at 10^6 txs). The same value was
also in the leaf, written once, in key order by height, and never rewritten. Keeping only the
leaf's version in `s/` makes the rewritten family a fifth of the bytes; a read is one get in
state/ and one exact get of an append-only record in tree/.

Rules kept here:
- A block's writes name, for every state key they set, the leaf of that key at the block's
  height with the same value (state_tree.update writes one for every changed key); `stored`
  checks it, so `s/` never names a leaf that is not in the same batch.
- A leaf a flat entry names is never pruned: the pruner deletes only leaves a later write made
  stale, and that write moved the flat entry on (node/storage/state_tree.py).
- A flat entry that is not 8 bytes, or names a leaf that is not there, is damage: the reader
  gets StoreCorrupt naming the key (the node stops, node/storage/checked_db.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from kledger.node.errors import StoreCorrupt
from kledger.node.proof.smt import key_path
from kledger.node.storage import keyspace
from kledger.node.storage.state_tree import leaf_key

VERSION_BYTES = 8


class RawReads(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def iterator(self, *, prefix: bytes) -> Iterator[tuple[bytes, bytes]]: ...


def is_flat(key: bytes) -> bool:
    return key.startswith(keyspace.STATE)


def stored(key: bytes, value: bytes, version: int, writes: Mapping[bytes, bytes | None]) -> bytes:
    """What `s/<key>` stores when a block at `version` sets it to `value`: the leaf's version.
    The leaf must be among the same writes (AssertionError otherwise: a caller's bug)."""
    assert writes.get(leaf_key(version, key_path(key))) == value, (
        f"state write {key!r} at {version} without its state-tree leaf"
    )
    return version.to_bytes(VERSION_BYTES, "big")


def value_of(
    db: RawReads, key: bytes, entry: bytes, damaged: Callable[[str], StoreCorrupt]
) -> bytes:
    """The value of the flat entry `entry` of `key`: its leaf's record."""
    if len(entry) != VERSION_BYTES:
        raise damaged(f"registry state {key!r}: {len(entry)} bytes, not a leaf version")
    version = int.from_bytes(entry, "big")
    value = db.get(leaf_key(version, key_path(key)))
    if value is None:
        raise damaged(f"registry state {key!r}: names its leaf at version {version}, missing")
    return value


def get(db: RawReads, key: bytes, damaged: Callable[[str], StoreCorrupt]) -> bytes | None:
    entry = db.get(key)
    return None if entry is None else value_of(db, key, entry, damaged)


def iterate(
    db: RawReads, prefix: bytes, damaged: Callable[[str], StoreCorrupt]
) -> Iterator[tuple[bytes, bytes]]:
    for key, entry in db.iterator(prefix=prefix):
        yield key, value_of(db, key, entry, damaged)
