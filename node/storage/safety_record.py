"""The safety record: a small file beside the store that a lost log tail cannot roll back
(docs/design.md §6, docs/node.md "Damage and recovery").

The store's own safety data (key v/safety) lives in LevelDB, so anything that rolls the store
back (a write-ahead log cut short, a restored backup, a copied directory) rolls it back too, and
a validator with a rolled-back highest vote round can sign a second vote in a round it already
voted in. This file holds the high-water marks (consensus.SafetyFloor): the highest epoch, vote
round and lock the node persisted and the highest height its store had committed then. It is
written atomically (temp file, fsync, rename, fsync of the directory) after the store's synced
batch and BEFORE the vote or timeout it allows leaves the node, and only when a mark rises.

Format (69 bytes): b"KLSR", version u8, epoch u64, highest vote round u64, highest QC round u64,
committed height u64 (big-endian), then SHA-256 of the 37 bytes before it.

Rules kept here:
- The record only rises: `raise_to` merges (SafetyFloor.raised) and never writes a lower one.
- A record that does not check out is StoreCorrupt naming the file, never a guess.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kledger.consensus import Height, Round, SafetyData, SafetyFloor
from kledger.node.errors import StoreCorrupt

MAGIC = b"KLSR"
VERSION = 1
_BODY_BYTES = len(MAGIC) + 1 + 4 * 8
RECORD_BYTES = _BODY_BYTES + 32
DAMAGED_RECOVERY = (
    "restore it from a backup. Without a true record this node could sign a second vote in a "
    "round it already voted in; only if it is certain this node never voted (or every peer is "
    "past the rounds it could have voted in: see the rounds `kledger cluster status` shows), "
    "move the file aside and the node writes a new one from its store"
)


def encode_record(floor: SafetyFloor) -> bytes:
    body = (
        MAGIC
        + bytes([VERSION])
        + b"".join(
            value.to_bytes(8, "big")
            for value in (
                floor.epoch,
                floor.highest_vote_round,
                floor.highest_qc_round,
                floor.committed_height,
            )
        )
    )
    return body + hashlib.sha256(body).digest()


def decode_record(data: bytes) -> SafetyFloor | None:
    """The floor a record holds, or None when the bytes are not a whole, checked record."""
    if len(data) != RECORD_BYTES or not data.startswith(MAGIC) or data[4] != VERSION:
        return None
    body, checksum = data[:_BODY_BYTES], data[_BODY_BYTES:]
    if hashlib.sha256(body).digest() != checksum:
        return None
    epoch, vote_round, qc_round, height = (
        int.from_bytes(body[5 + 8 * i : 13 + 8 * i], "big") for i in range(4)
    )
    return SafetyFloor(epoch, Round(vote_round), Round(qc_round), Height(height))


class SafetyRecord:
    """The record file of one node: load it at start, raise it before each vote leaves."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.floor: SafetyFloor | None = None
        self.writes = 0  # records written by this process (tests and the bench read it)

    def load(self) -> SafetyFloor | None:
        """The stored floor, or None when there is no record file (a new node)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreCorrupt(
                f"{self.path}: cannot read the safety record: {exc}; {DAMAGED_RECOVERY}"
            ) from None
        floor = decode_record(data)
        if floor is None:
            raise StoreCorrupt(
                f"{self.path}: safety record damaged ({len(data)} bytes, not a checked "
                f"{RECORD_BYTES}-byte record); {DAMAGED_RECOVERY}"
            )
        self.floor = floor
        return floor

    def save(self, floor: SafetyFloor) -> None:
        """Write `floor` durably and atomically: a crash leaves the old record or the new."""
        data = encode_record(floor)
        temp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(fd, data)
            assert written == len(data), "short write of a 69-byte file"
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself is durable
        finally:
            os.close(directory)
        self.floor = floor
        self.writes += 1

    def raise_to(self, safety: SafetyData, committed_height: int) -> bool:
        """Raise the record to cover `safety` (just persisted) at `committed_height`; writes
        only when a mark rises. Returns whether it wrote."""
        current = self.floor
        if current is None:
            floor = SafetyFloor(
                safety.epoch,
                safety.highest_vote_round,
                safety.highest_qc_round,
                Height(committed_height),
            )
        else:
            floor = current.raised(safety, committed_height)
            if floor == current:
                return False
        self.save(floor)
        return True
