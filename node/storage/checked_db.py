"""Every read of the store, checksum-verified, in one place (docs/design.md §6).

LevelDB checks a block's CRC only when asked (`verify_checksums`); without it a rewritten value
in a table file is read back as if it were true. CheckedDB wraps the plyvel DB (and its
snapshots) so that every get and every iterator verifies, and turns LevelDB's corruption and I/O
errors into StoreCorrupt naming the key family and the key (height, hash or name): the node
stops rather than serve a damaged record.

Rules kept here:
- No read bypasses verification: the store, the Merkle log and the registry views all read
  through this class; nothing else in node/ holds the raw plyvel handle.
- The error names what was being read, never only LevelDB's message.
- Every damaged read is also told to the listeners (`on_damaged`), whatever thread made it and
  whoever catches the error: the node stops on the first one (node/app.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import plyvel

from kledger.node.errors import StoreCorrupt
from kledger.node.storage import keyspace

# (prefix, what the family holds, how its key reads) for naming a damaged key.
_HEIGHT = "height"
_HASH = "hash"
_NAME = "name"
_EPOCH = "epoch"
_POSITION = "position"
_FAMILIES: tuple[tuple[bytes, str, str], ...] = (
    (keyspace.BLOCK + b"h", "block record (b/h)", _HEIGHT),
    (keyspace.BLOCK + b"c", "block body (b/c)", _HEIGHT),
    (keyspace.BLOCK_BY_HASH, "header hash index (h/)", _HASH),
    (keyspace.CERTIFICATE, "commit certificate (c/)", _HEIGHT),
    (keyspace.TX_RECORD, "tx record (T/)", _POSITION),
    (keyspace.TX, "tx index (t/)", _HASH),
    (keyspace.RECEIPT_TREE, "receipt tree (r/)", _HEIGHT),
    (keyspace.MERKLE, "Merkle log node (m/)", _HASH),
    (keyspace.STATE, "registry state (s/)", _NAME),
    (keyspace.SMT, "state tree node (z/)", _HASH),
    (keyspace.EPOCH, "epoch index (e/)", _EPOCH),
    (keyspace.SAFETY, "consensus safety data (v/)", _NAME),
    (keyspace.META, "store metadata (x/)", _NAME),
)


def describe_key(key: bytes) -> str:
    """A key as an operator reads it: its family and its height, hash or name."""
    for prefix, family, form in _FAMILIES:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if form == _HEIGHT and len(rest) == 8:
                return f"{family} at height {int.from_bytes(rest, 'big')}"
            if form == _POSITION and len(rest) == 12:
                height, index = int.from_bytes(rest[:8], "big"), int.from_bytes(rest[8:], "big")
                return f"{family} at height {height}, index {index}"
            if form == _EPOCH and len(rest) == 8:
                return f"{family} of epoch {int.from_bytes(rest, 'big')}"
            if form == _HASH and not (rest.isascii() and rest.isalpha()):
                return f"{family} {rest[:40].hex()}"
            return f"{family} {rest[:64]!r}"
    return f"key {key[:64]!r}"


def _as_is(key: bytes) -> bytes:
    return key


class CheckedReads:
    """get and iterator of a plyvel DB or snapshot, checksums verified, errors named."""

    def __init__(
        self,
        source: Any,
        where: Path,
        listeners: list[Callable[[StoreCorrupt], None]] | None = None,
        logical: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._source = source
        self._where = where
        self._listeners = listeners if listeners is not None else []
        # How a stored key reads as the store's key (node/storage/store_parts.py stores some
        # families height first): a damaged record is named by the key the code asked for.
        self._logical = logical if logical is not None else _as_is

    def on_damaged(self, listener: Callable[[StoreCorrupt], None]) -> None:
        """Call `listener` with every StoreCorrupt a damaged read raises (any thread)."""
        self._listeners.append(listener)

    def report(self, damage: StoreCorrupt) -> StoreCorrupt:
        """Tell the listeners; returns `damage` for the caller to raise."""
        for listener in list(self._listeners):
            listener(damage)
        return damage

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._source.get(key, verify_checksums=True)
        except plyvel.Error as exc:
            raise self._damaged(describe_key(self._logical(key)), exc) from None
        return value

    def iterator(
        self,
        *,
        prefix: bytes | None = None,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        include_value: bool = True,
    ) -> Iterator[Any]:
        """Like plyvel's iterator (keys, or (key, value) pairs), verified; a damaged block met
        on the way raises StoreCorrupt naming the last key read before it."""
        kwargs: dict[str, Any] = {"reverse": reverse, "include_value": include_value}
        if prefix is not None:
            kwargs["prefix"] = prefix
        else:
            kwargs["start"], kwargs["stop"] = start, stop
        last = prefix if prefix is not None else start or b""
        try:
            with self._source.iterator(verify_checksums=True, **kwargs) as items:
                for item in items:
                    last = item[0] if include_value else item  # named only if damage follows
                    yield item
        except plyvel.Error as exc:
            raise self._damaged(f"a scan at {describe_key(self._logical(last))}", exc) from None

    def _damaged(self, what: str, exc: BaseException) -> StoreCorrupt:
        return self.report(
            StoreCorrupt(
                f"{self._where}: damaged record: {what}: LevelDB says {exc} (the node stops "
                "rather than serve it; see docs/node.md, Damage and recovery)"
            )
        )


class CheckedDB(CheckedReads):
    """One LevelDB handle of the store: verified reads plus the writes the store makes."""

    def __init__(
        self,
        db: Any,
        where: Path,
        listeners: list[Callable[[StoreCorrupt], None]] | None = None,
        logical: Callable[[bytes], bytes] | None = None,
    ) -> None:
        super().__init__(db, where, listeners, logical)
        self._db = db

    def write_batch(self, *, sync: bool = False) -> Any:
        return self._db.write_batch(sync=sync)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._db.put(key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._db.delete(key, sync=sync)

    def snapshot(self) -> CheckedReads:
        return CheckedReads(self._db.snapshot(), self._where, self._listeners, self._logical)

    def compact_range(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        self._db.compact_range(start=start, stop=stop)

    def get_property(self, name: bytes) -> bytes | None:
        """A LevelDB property (e.g. b"leveldb.stats"); None for a name LevelDB does not know."""
        value: bytes | None = self._db.get_property(name)
        return value

    def close(self) -> None:
        self._db.close()
