"""The store's four LevelDBs behind one key space (store v6, docs/design.md §6).

Why four: LevelDB moves a table file down a level without rewriting it only when no file of
the next level overlaps its keys. Records keyed by height (a block's tx records, its block
record and receipts tree, the state-tree pages and leaves a block writes) arrive in rising key
order, so in a LevelDB of their own every new file sits above every old one and goes down the
levels untouched; in one LevelDB with the hash-keyed and sequential-per-family records (the tx
index, the registry state, the log) every new file spans old keys and the levels rewrite the
whole history again and again. Measured by a replay of a node's writes (docs/bench.md "Where
compaction goes"): at 6 x 10^5 txs, 3,330 MiB written by compaction instead of 19,980, and
86 % less of its CPU.

    state/    the flat registry state (s/: each key's leaf version), the tx index (t/), the
              Merkle log's size (m/size), the hash index (h/), certificates (c/), the epoch
              index (e/), consensus safety data (v/), metadata (x/), the state tree's root
              references and stale index (z/r, z/x, z/root): what is read by key or by
              family. Its last height (x/last_height) is the store's commit point.
    history/  per height: the tx records (T/), the block record and body (b/h, b/c) and the
              receipts tree (r/). Never deleted.
    tree/     per version: the state tree's pages and leaves (z/n/, z/l/). The pruner deletes
              the old ones at its front, which is why they are not in history/: its deletes
              would make history's files overlap (node/storage/state_pruner.py).
    log/      the Merkle log's nodes (m/n), keyed by the leaf that completes each, so their
              keys rise with every append as history's do; in state/ they were a fifth of its
              bytes, rewritten at every level (docs/bench.md "Values in the leaves (store v6)").

Callers see one key space: the logical keys of node/storage/keyspace.py. A key of a family
kept by height is stored with its height first (`_physical`): <height><family prefix><rest>.

Rules kept here:
- A block's writes are one SplitBatch; `write()` writes tree/, history/ and log/ (synced)
  before state/: state/ names nothing that is not on disk. A crash in between leaves records
  above state/'s last height (log nodes past its log size) in the others, which `trim_above`
  deletes when the store opens.
- Reads of a family kept by height are exact gets or scans of one height (`prefix` naming the
  height); every read is checksum-verified and a damaged one names the logical key
  (node/storage/checked_db.py).
- A snapshot takes state/ first, so the others hold every record the state it sees names, and
  never across a prune pass: a state-tree leaf a flat entry names is in it
  (node/storage/flat_state.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from kledger.node.errors import StoreCorrupt
from kledger.node.storage import keyspace
from kledger.node.storage.checked_db import CheckedDB, CheckedReads

STATE_PART: Final = "state"
HISTORY_PART: Final = "history"
TREE_PART: Final = "tree"
LOG_PART: Final = "log"
PARTS: Final = (STATE_PART, HISTORY_PART, TREE_PART, LOG_PART)
# Written first, read last: the order of a batch's writes (state/ is the commit point).
WRITE_ORDER: Final = (TREE_PART, HISTORY_PART, LOG_PART, STATE_PART)
# The Merkle log's nodes, keyed by the leaf that completes each (node/storage/merkle_log.py):
# stored in log/ as they are, their keys rising with every append.
LOG_NODES: Final = keyspace.MERKLE + b"n"

HEIGHT_BYTES: Final = 8
# (logical prefix, part): families whose logical key is prefix + height (8 bytes BE) + rest.
HEIGHT_FAMILIES: Final[tuple[tuple[bytes, str], ...]] = (
    (keyspace.TX_RECORD, HISTORY_PART),
    (keyspace.BLOCK + b"h", HISTORY_PART),
    (keyspace.BLOCK + b"c", HISTORY_PART),
    (keyspace.RECEIPT_TREE, HISTORY_PART),
    (keyspace.SMT + b"n/", TREE_PART),
    (keyspace.SMT + b"l/", TREE_PART),
)
assert not any(
    a != b and a.startswith(b) for a, _ in HEIGHT_FAMILIES for b, _ in HEIGHT_FAMILIES
), "no family prefix is a prefix of another"


_HEIGHT_PREFIXES: Final = tuple(prefix for prefix, _ in HEIGHT_FAMILIES)
# The families kept by height by their first two bytes: every key of a block's batch is routed,
# and most (s/, t/, m/) are told apart by one slice and one dict miss.
_BY_LEAD: Final[dict[bytes, tuple[tuple[bytes, str], ...]]] = {}
for _prefix, _part in HEIGHT_FAMILIES:
    _BY_LEAD[_prefix[:2]] = (*_BY_LEAD.get(_prefix[:2], ()), (_prefix, _part))


def _family(key: bytes) -> tuple[bytes, str] | None:
    for prefix, part in _BY_LEAD.get(key[:2], ()):
        if key.startswith(prefix):
            return prefix, part
    return None


def _physical(prefix: bytes, key: bytes) -> bytes:
    """<height><prefix><rest> of the logical key (or key prefix) prefix + height + rest."""
    height = key[len(prefix) : len(prefix) + HEIGHT_BYTES]
    assert len(height) == HEIGHT_BYTES, f"a key of {prefix!r} names no height: {key[:40]!r}"
    return height + prefix + key[len(prefix) + HEIGHT_BYTES :]


def logical_key(physical: bytes) -> bytes:
    """The logical key of a record stored in history/ or tree/ (a stray key comes back as it
    is, so that naming a damaged record never fails)."""
    rest = physical[HEIGHT_BYTES:]
    for prefix, _ in HEIGHT_FAMILIES:
        if rest.startswith(prefix):
            return prefix + physical[:HEIGHT_BYTES] + rest[len(prefix) :]
    return physical


def _unprefixed_part(key: bytes) -> str:
    """The part of a key stored as it is (not kept by height)."""
    return LOG_PART if key.startswith(LOG_NODES) else STATE_PART


def locate(key: bytes) -> tuple[str, bytes]:
    """The part that holds a logical key and the key it is stored under there."""
    family = _family(key)
    if family is None:
        return _unprefixed_part(key), key
    prefix, part = family
    return part, _physical(prefix, key)


class SplitReads:
    """Verified reads over the four parts (a store's live parts, or a snapshot of each)."""

    def __init__(self, parts: dict[str, CheckedReads]) -> None:
        assert set(parts) == set(PARTS)
        self._parts = parts

    def get(self, key: bytes) -> bytes | None:
        part, physical = locate(key)
        return self._parts[part].get(physical)

    def iterator(
        self,
        *,
        prefix: bytes | None = None,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        include_value: bool = True,
    ) -> Iterator[Any]:
        """Like CheckedReads.iterator over logical keys. A family kept by height is scanned
        one height at a time: `prefix` must name the height (prefix + 8 bytes at least)."""
        where = prefix if prefix is not None else start or b""
        assert prefix is None or not any(
            fp.startswith(prefix) and fp != prefix for fp in (*_HEIGHT_PREFIXES, LOG_NODES)
        ), "a scan across parts"
        family = _family(where)
        if family is None:
            part = _unprefixed_part(where)
            for probe in (stop, start):
                assert probe is None or (
                    _family(probe) is None and _unprefixed_part(probe) == part
                ), "a scan across parts"
            yield from self._parts[part].iterator(
                prefix=prefix, start=start, stop=stop, reverse=reverse, include_value=include_value
            )
            return
        assert prefix is not None and start is None and stop is None, (
            "a family kept by height is scanned by a prefix naming the height"
        )
        family_prefix, part = family
        items = self._parts[part].iterator(
            prefix=_physical(family_prefix, prefix), reverse=reverse, include_value=include_value
        )
        for item in items:
            if include_value:
                yield logical_key(item[0]), item[1]
            else:
                yield logical_key(item)

    def on_damaged(self, listener: Callable[[StoreCorrupt], None]) -> None:
        """Call `listener` with every StoreCorrupt a damaged read of any part raises (the
        parts share one list of listeners)."""
        self._parts[STATE_PART].on_damaged(listener)

    def report(self, damage: StoreCorrupt) -> StoreCorrupt:
        return self._parts[STATE_PART].report(damage)


class SplitBatch:
    """One block's (or one prune pass's) writes across the parts, written part by part in
    WRITE_ORDER; usable as a context manager, as plyvel's WriteBatch (written on a clean
    exit)."""

    def __init__(
        self, parts: dict[str, CheckedDB], sync: bool, lock: threading.Lock | None
    ) -> None:
        self._parts = parts
        self._sync = sync
        self._lock = lock
        self._batches: dict[str, Any] = {}

    def _batch(self, part: str) -> Any:
        batch = self._batches.get(part)
        if batch is None:
            batch = self._batches[part] = self._parts[part].write_batch(sync=self._sync)
        return batch

    def put(self, key: bytes, value: bytes) -> None:
        part, physical = locate(key)
        self._batch(part).put(physical, value)

    def delete(self, key: bytes) -> None:
        part, physical = locate(key)
        self._batch(part).delete(physical)

    def write(self) -> None:
        if self._lock is None:
            self._write()
            return
        with self._lock:  # no snapshot sees some parts of this batch and not the others
            self._write()

    def _write(self) -> None:
        for part in WRITE_ORDER:
            batch = self._batches.get(part)
            if batch is not None:
                batch.write()

    def __enter__(self) -> SplitBatch:
        return self

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        if exc_type is None:
            self.write()


class SplitDB(SplitReads):
    """The store's four LevelDB handles as one: verified reads, routed writes."""

    def __init__(self, parts: dict[str, CheckedDB]) -> None:
        super().__init__(dict(parts))
        self._dbs = parts
        self._prune_lock = threading.Lock()

    def part(self, name: str) -> CheckedDB:
        return self._dbs[name]

    def write_batch(self, *, sync: bool = False, deletes_tree: bool = False) -> SplitBatch:
        """A batch over the parts; `deletes_tree` for one that deletes state-tree records (a
        prune pass), which no snapshot may see half written (see `snapshot`)."""
        return SplitBatch(self._dbs, sync, self._prune_lock if deletes_tree else None)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        part, physical = locate(key)
        self._dbs[part].put(physical, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        part, physical = locate(key)
        self._dbs[part].delete(physical, sync=sync)

    def snapshot(self) -> SplitReads:
        # state/ first: a commit writes it last, so the others hold all it names; and never
        # across a prune pass, which could delete a leaf that state/'s snapshot names between
        # the two snapshots. (Commits are not held up: they only add records.)
        with self._prune_lock:
            return SplitReads({name: self._dbs[name].snapshot() for name in PARTS})

    def trim_above(self, height: int, log_from: bytes) -> int:
        """Delete (synced) the records of heights above `height` in history/ and tree/, and the
        log nodes from key `log_from` on in log/: what a crash between a block's writes left of
        a block whose state/ write never happened. Returns how many were deleted."""
        start = (height + 1).to_bytes(HEIGHT_BYTES, "big")
        deleted = 0
        for name, first in ((HISTORY_PART, start), (TREE_PART, start), (LOG_PART, log_from)):
            db = self._dbs[name]
            keys = list(db.iterator(start=first, include_value=False))
            if keys:
                with db.write_batch(sync=True) as batch:
                    for key in keys:
                        batch.delete(key)
            deleted += len(keys)
        return deleted

    def compact_range(self) -> None:
        for db in self._dbs.values():
            db.compact_range()

    def flush_memtables(self) -> None:
        """Write each part's memtable out and push it into level 1: a compaction of one key,
        each part's last (written by the last block, so in the memtable): LevelDB first
        flushes the memtable, then merges the level-0 files holding that key (the flushed one
        spans it) into level 1, and one file per level below. What is left to do then (a full
        level 1) LevelDB's background thread does as it would after any flush."""
        for db in self._dbs.values():
            for last in db.iterator(reverse=True, include_value=False):
                db.compact_range(start=last, stop=last)
                break

    def get_property(self, name: bytes) -> dict[str, bytes | None]:
        """A LevelDB property of each part."""
        return {part: db.get_property(name) for part, db in self._dbs.items()}

    def close(self) -> None:
        for db in self._dbs.values():
            db.close()


def is_empty(db: CheckedReads) -> bool:
    for _ in db.iterator(include_value=False):
        return False
    return True


def part_paths(path: Path) -> dict[str, Path]:
    return {name: path / name for name in PARTS}
