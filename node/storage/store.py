"""The ledger store: four LevelDBs per node (node/storage/store_parts.py) holding blocks, txs
with their receipts, the Merkle log, commit certificates, registry state, consensus safety data
and metadata (docs/design.md §6).

Keys (prefixes from node/storage/keyspace.py; heights are 8 bytes big-endian so they sort; the
families kept by height live in history/ and tree/, height first, the rest in state/):

    b/h<height>      canonical {header, tx_hashes}
    b/c<height>      canonical [head, tail, commit_qc]: the consensus block is head + payload +
                     tail, the payload rebuilt from the block's T/ records (BODY_WITHOUT_PAYLOAD);
                     or [consensus_block, commit_qc] when its payload is not exactly its txs
    h/<header hash>  height
    T/<height><index in block (4 bytes BE)>
                     canonical [tx encoding, receipt bytes]: a block's txs are adjacent keys,
                     after every earlier block's, the first family of all (TX_RECORDS_BY_POSITION)
    t/<tx hash>      its position: height (8 bytes BE) + index in block (4 bytes BE)
    r/<height>       the block's receipts tree (node/storage/receipt_trees.py)
    c/<height>       commit certificate (CommitCertificate.encode())
    e/<epoch>        canonical {"last_height", "next_epoch", "validators": [[org, key], ...]}:
                     the epoch's last block and the set that follows it (written with that block)
    m/...            Merkle log (node/storage/merkle_log.py)
    s/...            registry state: the version of the key's state-tree leaf, which holds
                     the value (node/storage/flat_state.py)
    z/...            the state tree (node/storage/state_tree.py; written by the registry)
    v/safety         consensus safety data (opaque bytes)
    x/format, x/genesis, x/last_height, x/tx_count

Rules it keeps:
- A committed block and everything it changes (block record, hash index, tx records, tx index,
  receipts tree, log nodes, state writes, metadata) go into ONE SplitBatch, synced: tree/,
  history/ and log/ first, then state/, whose last height is the commit point. A crash leaves
  the block committed, or records above state/'s last height (log nodes past its log size)
  that the next open deletes (trim_above).
  In-memory state (last header, log frontier) changes only after that batch was written.
- Heights are contiguous from genesis (0); each header names its parent's hash; each header's
  tx_log_size/tx_log_root are the log after its block's txs, its receipts_root the root over its
  receipts; a tx hash is stored at most once.
- An epoch ends at the block whose header names a next set (next_validator_set_hash); the epoch
  index entry for it goes into that block's batch, so index and headers never disagree.
- On open the store checks itself and refuses, with StoreCorrupt naming the problem, a store
  that does not add up: genesis digest and genesis header, every header's height and parent
  link (or those of the last `check_blocks`), the hash index, tx counts, log size and root
  against the last header, the last block's tx records against its tx hashes, the tx index,
  the log leaves and its receipts tree, the latest certificate's header hash, and every epoch
  index entry against the header it names. `deep_check=True` also recomputes every log node
  from the tx encodings, every header's root and every block's receipts tree (O(n)).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import plyvel

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import HASH_BYTES, ZERO_HASH, CommitCertificate, Header
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import SignedTx, decode_tx
from kledger.node.errors import DecodeError, StoreCorrupt
from kledger.node.proof import merkle
from kledger.node.proof.receipts import receipts_tree
from kledger.node.storage import flat_state, keyspace, state_tree
from kledger.node.storage.checked_db import CheckedDB
from kledger.node.storage.leveldb_files import RECOVERY, check_store_files, is_new_store_dir
from kledger.node.storage.leveldb_stats import STATS_PROPERTY, LevelStats, parse_stats
from kledger.node.storage.merkle_log import AppendPlan, LogCorrupt, MerkleLog
from kledger.node.storage.merkle_log import nodes_from as merkle_log_nodes_from
from kledger.node.storage.read_cache import ReadCache
from kledger.node.storage.receipt_trees import StoredReceiptTree, encode_receipt_tree
from kledger.node.storage.store_parts import (
    STATE_PART,
    WRITE_ORDER,
    SplitDB,
    SplitReads,
    is_empty,
    logical_key,
    part_paths,
)

FORMAT = b"kledger-store/v6"
# v1 kept the state tree content-addressed (records by hash); v2 keeps it by position and
# version (node/storage/state_tree.py); v3 stores header format v2 (next_validator_set_hash,
# receipts_root) and the epoch index; v4 keys tx records by position (T/), indexes them by
# hash (t/) and stores each block's receipts tree (r/); v5 splits the store into three
# LevelDBs, the records kept by height in two of their own (node/storage/store_parts.py); v6
# keeps each state value once, in its state-tree leaf, the flat entry naming the leaf's version
# (node/storage/flat_state.py) and the Merkle log's nodes, keyed by the leaf that completes
# each, in a fourth LevelDB (log/). An older store is refused by name, never converted.
OLD_FORMATS = {
    b"kledger-store/v1": "state tree stored by hash",
    b"kledger-store/v2": "headers of format v1, without next_validator_set_hash and receipts_root",
    b"kledger-store/v3": "tx records keyed by tx hash, without receipt trees",
    b"kledger-store/v4": "one LevelDB for every record, the height-keyed ones among the rest",
    b"kledger-store/v5": "three LevelDBs, the state values kept twice and the log in state/",
}
FORMAT_KEY = keyspace.META + b"format"
GENESIS_KEY = keyspace.META + b"genesis"
LAST_HEIGHT_KEY = keyspace.META + b"last_height"
TX_COUNT_KEY = keyspace.META + b"tx_count"
SAFETY_KEY = keyspace.SAFETY + b"safety"
# Uncommitted consensus blocks the core asked to keep (SaveBlock): v/p/<height u64><block id>.
PENDING_BLOCK = keyspace.SAFETY + b"p/"
STATE_FAMILIES = (keyspace.STATE, keyspace.SMT)
# LevelDB tuning: a bloom filter makes the lookups that miss (has_tx for every new tx) skip the
# table files; the block cache keeps the upper Merkle levels and recent blocks in memory.
BLOOM_FILTER_BITS = 10
BLOCK_CACHE_BYTES = 32 * 1024 * 1024
# Compaction, on LevelDB's background thread, is the largest CPU cost per tx once the ledger
# outgrows the write buffer: the state tree's records have random (hash) keys, so every level
# is rewritten again and again. Measured with `scripts/bench_pipeline --txs 100000
# --checkpoints 100000 --window-txs 20000`: LevelDB's defaults (4 MiB buffer, 2 MiB files,
# snappy) cost 288 us/tx of background CPU; these settings 51 us/tx, for about 35 % more disk
# and up to two write buffers of memory. CPU is what binds a node on this machine.
WRITE_BUFFER_BYTES = 64 * 1024 * 1024
# TX_RECORDS_BY_POSITION: the tx records are the bulk of the store (about 1 KB per tx). Keyed
# by tx hash (v3) they landed all over the key space, so every LevelDB level rewrote them again
# and again: at 10^6 txs the compaction thread used more CPU than the commit worker
# (docs/bench.md "Tx records by position (store v4)"). Keyed by (height, index) a block's
# records are one run of keys after every earlier one (T/ sorts before every other family,
# node/storage/keyspace.py), so compaction merges them with few older ones; the hash index t/
# holds 12 bytes per tx. Measured: it made inclusion proofs 5-8x faster at 10^6 txs, not
# compaction (the records are ≈ 470 of ≈ 5,100 B per tx; docs/bench.md says where to look next).
POSITION_BYTES = 12
# Receipt trees of recent heights kept, checked, for receipt proofs (clients ask for proofs of
# the txs of one recent block together); a tree is one read of ≈ 64 B per tx, ≈ 0.3 ms for a
# block of 2,000 txs, so a miss costs little.
RECEIPT_TREES_CACHED = 16
# BODY_WITHOUT_PAYLOAD: the consensus block (block sync and restart hand out its exact bytes,
# which its id hashes) carries the payload, the same tx encodings as the T/ records: stored
# whole, every tx's bytes would be written and compacted twice. The body keeps the bytes around
# the payload, and the payload is rebuilt from the T/ records, each checked against the tx hash
# the block record lists. Only a payload that is exactly the committed txs is cut out (a
# committed block whose payload repeats a tx the chain holds, or a marker block, is kept
# whole), and the cut is found in the block's own bytes, so the rebuilt block is byte for byte
# the one handed in whatever the consensus codec.
TABLE_FILE_BYTES = 32 * 1024 * 1024
# state/ alone keeps LevelDB's 2 MiB table files. Its keys are random (the tx index by hash, the
# flat state by record key), so an upper-level file spans the whole key range and merging it
# down rewrites every overlapping file below: with 32 MiB files the level above the last held
# one file, and each such merge rewrote the whole last level (≈ 0.5 GB per node at 10^6 txs).
# Measured with `kledger bench --nodes 4 --txs 20000 --preload-txs 1000000 --catchup-txs 0`:
# 2 MiB halved state/'s compaction writes during the load (1,992 -> 952 MiB over 4 nodes) and
# gave 449 tx/s against 368 (docs/bench.md "The preloaded 10^6 cluster"). history/ and tree/
# are keyed by height, so their files go down the levels without being rewritten.
STATE_TABLE_FILE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """What the node hands over for one committed block."""

    header: Header
    consensus_block: bytes  # opaque bytes of the consensus block (for block sync)
    commit_qc: bytes  # opaque bytes of the QC that committed it (b"" allowed)


def _height_key(prefix: bytes, height: int) -> bytes:
    assert 0 <= height < 2**64
    return prefix + height.to_bytes(8, "big")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class EpochEnd:
    """An epoch's last block and the set that follows it (the store's epoch index)."""

    epoch: int
    last_height: int
    next_validators: ValidatorSet

    def encode(self) -> bytes:
        return canonical.encode(
            {
                "last_height": self.last_height,
                "next_epoch": self.next_validators.epoch,
                "validators": [[v.node_id, v.public_key] for v in self.next_validators.validators],
            }
        )

    @staticmethod
    def decode(epoch: int, data: bytes) -> EpochEnd:
        """Raises DecodeError when the record is not an epoch index entry."""
        value = canonical.decode(data)
        if not isinstance(value, dict) or set(value) != {"last_height", "next_epoch", "validators"}:
            raise DecodeError("not an epoch index entry", "epoch")
        last_height, next_epoch, members = (
            value["last_height"],
            value["next_epoch"],
            value["validators"],
        )
        if not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (last_height, next_epoch)
        ):
            raise DecodeError("last_height and next_epoch must be integers", "epoch")
        if not isinstance(members, list) or not all(
            isinstance(m, list)
            and len(m) == 2
            and isinstance(m[0], str)
            and isinstance(m[1], bytes)
            and len(m[1]) == HASH_BYTES
            for m in members
        ):
            raise DecodeError("validators must be [[org, 32-byte key], ...]", "epoch.validators")
        try:
            validators = ValidatorSet.of(next_epoch, [(m[0], m[1]) for m in members])
        except ValueError as exc:
            raise DecodeError(str(exc), "epoch.validators") from None
        return EpochEnd(epoch, last_height, validators)


def _epoch_key(epoch: int) -> bytes:
    return _height_key(keyspace.EPOCH, epoch)


def _position(height: int, index: int) -> bytes:
    """A tx's position, the t/ index's value and the T/ key's suffix."""
    assert 0 <= height < 2**64 - 1 and 0 <= index < 2**32
    return _u64(height) + index.to_bytes(4, "big")


def _encode_tx_record(tx: SignedTx, receipt: Receipt) -> bytes:
    return canonical.encode([tx.encoding, receipt.encode()])


def _decode_tx_record(raw: bytes) -> tuple[bytes, bytes]:
    """(tx encoding, receipt encoding) of a T/ record; raises DecodeError."""
    value = canonical.decode(raw)
    if not (
        isinstance(value, list) and len(value) == 2 and all(isinstance(v, bytes) for v in value)
    ):
        raise DecodeError("not [tx, receipt]", "tx record")
    return value[0], value[1]


HEADERS = keyspace.BLOCK + b"h"  # b/h<height> -> header and tx hashes (walked at open)
BODIES = keyspace.BLOCK + b"c"  # b/c<height> -> consensus block and commit QC (block sync)


@dataclass(frozen=True, slots=True)
class _StoredBlock:
    """The part of a block record the self-check walks: kept apart from the (large) consensus
    block bytes so that walking the chain reads headers, not every block's payload."""

    header: Header
    tx_hashes: tuple[bytes, ...]

    def encode(self) -> bytes:
        return canonical.encode({"header": self.header.encode(), "tx_hashes": list(self.tx_hashes)})

    @staticmethod
    def decode(data: bytes) -> _StoredBlock:
        value = canonical.decode(data)
        if not isinstance(value, dict) or set(value) != {"header", "tx_hashes"}:
            raise DecodeError("not a header record", "block")
        hashes = value["tx_hashes"]
        if not isinstance(hashes, list) or not all(
            isinstance(h, bytes) and len(h) == HASH_BYTES for h in hashes
        ):
            raise DecodeError("must be a list of 32-byte hashes", "block.tx_hashes")
        if not isinstance(value["header"], bytes):
            raise DecodeError("must be bytes", "block.header")
        return _StoredBlock(Header.decode(value["header"]), tuple(hashes))


def _tx_payload_bytes(encodings: Sequence[bytes]) -> bytes:
    """The payload of a block that carries exactly these tx encodings (node/chain/payload.py's
    format: empty, or their canonical list)."""
    return canonical.encode(list(encodings)) if encodings else b""


def _encode_body(record: BlockRecord, txs: Sequence[SignedTx]) -> bytes:
    """The body record: [consensus block, commit QC], or, when the consensus block's bytes hold
    the payload of exactly the committed txs, [head, tail, commit QC] with the block = head +
    payload + tail (see BODY_WITHOUT_PAYLOAD)."""
    payload = _tx_payload_bytes([tx.encoding for tx in txs])
    at = _find(record.consensus_block, payload) if payload else -1
    if at < 0:
        return canonical.encode([record.consensus_block, record.commit_qc])
    head, tail = record.consensus_block[:at], record.consensus_block[at + len(payload) :]
    return canonical.encode([head, tail, record.commit_qc])


def _find(data: bytes, part: bytes) -> int:
    """Where `part` (a block payload, megabytes) sits in `data`, or -1: candidates by a short
    prefix, then compared in place (no copy, no search table of the whole part)."""
    view, probe = memoryview(data), part[:64]
    at = data.find(probe)
    while at >= 0 and view[at : at + len(part)] != part:
        at = data.find(probe, at + 1)
    return at


def _decode_body(data: bytes) -> tuple[bytes, bytes, bytes | None]:
    """(consensus block or its head, commit QC, its tail or None when the block is whole)."""
    value = canonical.decode(data)
    if not (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(isinstance(v, bytes) for v in value)
    ):
        raise DecodeError("not [consensus_block, commit_qc] nor [head, tail, commit_qc]", "body")
    if len(value) == 2:
        return value[0], value[1], None
    return value[0], value[2], value[1]


class LevelView:
    """The committed registry state, read straight from LevelDB (keyspace.ReadView), checksums
    verified (a damaged record raises StoreCorrupt naming it). `page_cache` (shared by the store
    and its snapshots) keeps the current tree's page records (parsed on demand): tree records
    never change once written, so every view of one store may share it. `read_cache` (the
    store's live view only) keeps the latest committed values of recently read state keys
    (node/storage/read_cache.py)."""

    def __init__(
        self,
        db: SplitReads,
        page_cache: state_tree.PageCache | None = None,
        read_cache: ReadCache | None = None,
    ) -> None:
        self._db = db
        self.page_cache = page_cache
        self._read_cache = read_cache

    def get(self, key: bytes) -> bytes | None:
        assert key.startswith(STATE_FAMILIES), "registry reads stay in its key families"
        if not flat_state.is_flat(key):
            return self._db.get(key)
        if self._read_cache is None:
            return self._flat_get(key)
        return self._read_cache.get(key, self._flat_get)

    def _flat_get(self, key: bytes) -> bytes | None:
        return flat_state.get(self._db, key, self._damaged)

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        assert prefix.startswith(STATE_FAMILIES), "registry reads stay in its key families"
        if flat_state.is_flat(prefix):
            yield from flat_state.iterate(self._db, prefix, self._damaged)
        else:
            yield from self._db.iterator(prefix=prefix)

    def _damaged(self, what: str) -> StoreCorrupt:
        return self._db.report(StoreCorrupt(f"damaged record: {what}"))


class PreparedCommit:
    """A block commit built into a WriteBatch but not written yet. `apply()` writes it (synced)
    and adopts the new state; dropping it instead is exactly what a crash before the write does.
    """

    def __init__(
        self,
        store: LedgerStore,
        batch: Any,
        block: _StoredBlock,
        plan: AppendPlan,
        receipts: list[Receipt],
        *,
        cached: Sequence[tuple[bytes, bytes | None]],
    ) -> None:
        self._store = store
        self._batch = batch
        self._block = block
        self._plan = plan
        self._cached = cached  # what the store's read cache learns once the batch is written
        self._applied = False
        self.receipts = receipts

    def apply(self) -> list[Receipt]:
        # A stale commit (prepared against another tip, or applied twice) must never be written.
        assert not self._applied, "commit applied twice"
        assert self._store.last_header().hash() == self._block.header.parent_hash, (
            "prepared on another tip"
        )
        self._applied = True
        self._batch.write()
        self._store._install(self._block, self._plan, self._cached)
        return self.receipts


class LedgerStore:
    def __init__(
        self,
        *,
        db: SplitDB,
        path: Path,
        genesis: Genesis,
        log: MerkleLog,
        last_header: Header,
    ) -> None:
        """Use LedgerStore.open."""
        self._db = db
        self._path = path
        self._genesis = genesis
        self._page_cache = state_tree.PageCache()
        self._prune_cursor = state_tree.PruneCursor()  # prune_state's, on the pruner's thread
        # Saved uncommitted blocks below this height are deleted (prune_pending_blocks'; both it
        # and save_consensus run on the event loop). A restart scans from the start once.
        self._pending_pruned_below = 0
        self._read_cache = ReadCache()
        self.view = LevelView(db, self._page_cache, self._read_cache)
        self._log = log
        self._last_header = last_header
        self._receipt_trees: OrderedDict[int, StoredReceiptTree] = OrderedDict()
        self._receipt_trees_lock = threading.Lock()

    # ---- opening and self-check -----------------------------------------------------------

    @staticmethod
    def open(
        path: Path,
        genesis: Genesis,
        genesis_writes: keyspace.WriteSet,
        genesis_state_root: bytes,
        *,
        check_blocks: int | None = None,
        deep_check: bool = False,
    ) -> LedgerStore:
        """Open (creating it only in a directory that never held a store) and check the store;
        raise StoreCorrupt if it does not add up. `genesis_writes`/`genesis_state_root` are used
        only when creating. An existing directory is checked file by file before LevelDB sees
        it (node/storage/leveldb_files.py) and opened with create_if_missing off and paranoid
        checks on; every read verifies checksums (node/storage/checked_db.py).

        The header chain walk is linear in the height (about 0.1 ms per block): `check_blocks`
        limits it to the genesis header and the last N headers (None = the whole chain).
        `deep_check` rebuilds the whole log and every header's root (O(n) in txs)."""
        assert check_blocks is None or check_blocks >= 1, "check_blocks must be >= 1"
        path = Path(path)
        _refuse_single_leveldb(path)
        db = _open_parts(path)
        try:
            if db.get(FORMAT_KEY) is None and is_empty(db.part(STATE_PART)):
                # Never created, or its creation cut short before state/ (written last): what
                # the other parts hold can only be creation's first writes.
                db.trim_above(-1, merkle_log_nodes_from(0))
                _create(db, genesis, genesis_writes, genesis_state_root)
            store = LedgerStore._checked(
                db,
                path,
                genesis,
                genesis_state_root,
                check_blocks=check_blocks,
                deep_check=deep_check,
            )
        except BaseException:
            db.close()
            raise
        return store

    @staticmethod
    def _checked(
        db: SplitDB,
        path: Path,
        genesis: Genesis,
        genesis_state_root: bytes,
        *,
        check_blocks: int | None,
        deep_check: bool,
    ) -> LedgerStore:
        fmt = db.get(FORMAT_KEY)
        if fmt in OLD_FORMATS:
            raise _old_format(path, fmt)
        if fmt != FORMAT:
            raise StoreCorrupt(f"{path}: format is {fmt!r}, expected {FORMAT!r}")
        if db.get(GENESIS_KEY) != genesis.digest():
            raise StoreCorrupt(f"{path}: genesis digest differs from this genesis file")
        last_height = _read_u64(db, LAST_HEIGHT_KEY, "last height")
        tx_count = _read_u64(db, TX_COUNT_KEY, "tx count")
        # a block whose state/ write a crash cut off
        db.trim_above(last_height, merkle_log_nodes_from(tx_count))
        try:
            log = MerkleLog(db)
        except LogCorrupt as exc:
            raise StoreCorrupt(f"{path}: Merkle log: {exc}") from None

        expected_genesis = _genesis_header(genesis, genesis_state_root)
        header = _check_chain(db, path, last_height, expected_genesis, check_blocks)
        store = LedgerStore(db=db, path=path, genesis=genesis, log=log, last_header=header)
        if tx_count != header.tx_log_size:
            raise StoreCorrupt(
                f"{path}: {tx_count} committed txs but the last header says "
                f"tx_log_size {header.tx_log_size}"
            )
        if log.size != tx_count:
            raise StoreCorrupt(f"{path}: Merkle log holds {log.size} leaves, {tx_count} txs")
        if log.root() != header.tx_log_root:
            raise StoreCorrupt(
                f"{path}: Merkle log root differs from the tx_log_root of the last header "
                f"(height {header.height})"
            )
        store._check_tip_leaves(header.height)
        store._check_latest_certificate()
        store._check_epoch_index()
        if deep_check:
            store._check_deep()
        return store

    def _check_tip_leaves(self, height: int) -> None:
        """The last block's tx records are its listed txs, indexed by hash at their position,
        the last leaves of the log, and their receipts the leaves of its receipts tree."""
        block = self._block(height)
        assert block is not None
        tree = self._checked_receipts_tree(block)
        first = block.header.tx_log_size - len(block.tx_hashes)
        for index, (tx, receipt) in enumerate(self._block_tx_records(block)):
            if self._db.get(keyspace.TX + tx.tx_hash) != _position(height, index):
                raise StoreCorrupt(
                    f"{self._path}: tx index (t/) of tx {tx.tx_hash.hex()} does not name "
                    f"height {height}, index {index}"
                )
            self._check_receipt_leaf(height, index, receipt, tree)
            if self._node(0, first + index) != merkle.leaf_hash(tx.encoding):
                raise StoreCorrupt(
                    f"{self._path}: log leaf {first + index} is not the hash of tx "
                    f"{tx.tx_hash.hex()}"
                )

    def _check_latest_certificate(self) -> None:
        height = self.latest_certified_height()
        if height == 0:
            return
        if height > self.last_height():
            raise StoreCorrupt(f"{self._path}: certificate for height {height} beyond the chain")
        cert = self.certificate(height)
        header = self.header(height)
        assert cert is not None and header is not None
        if cert.header_hash != header.hash():
            raise StoreCorrupt(f"{self._path}: certificate at height {height} signs another header")

    def _check_epoch_index(self) -> None:
        """Entries are epochs 0, 1, ... with rising last heights, each naming a stored header
        whose next_validator_set_hash is the digest of the set the entry holds."""
        previous = -1
        for expected, end in enumerate(self.epoch_ends()):
            if end.epoch != expected:
                raise StoreCorrupt(f"{self._path}: epoch index has no entry for epoch {expected}")
            header = self.header(end.last_height)
            if end.last_height <= previous or header is None:
                raise StoreCorrupt(
                    f"{self._path}: epoch index entry of epoch {end.epoch} names height "
                    f"{end.last_height}, which is not a later stored height"
                )
            if header.next_validator_set_hash != end.next_validators.digest():
                raise StoreCorrupt(
                    f"{self._path}: epoch index entry of epoch {end.epoch} holds a set whose "
                    f"digest is not the next_validator_set_hash of height {end.last_height}"
                )
            previous = end.last_height

    def _check_deep(self) -> None:
        """O(n): rebuild the whole log from the tx encodings and compare every stored node and
        every header's root; rebuild every block's receipts tree and compare its record; read
        every state value through its flat entry (each names a leaf that is there)."""
        for _ in self.view.iterate(keyspace.STATE):
            pass
        tree = merkle.MemoryTree()
        for height in range(self.last_height() + 1):
            block = self._block(height)
            assert block is not None
            records = self._block_tx_records(block)
            for tx, _ in records:
                tree.append(tx.encoding)
            header = block.header
            if tree.root(header.tx_log_size) != header.tx_log_root:
                raise StoreCorrupt(
                    f"{self._path}: header at height {height} has a wrong tx_log_root"
                )
            rebuilt = encode_receipt_tree(receipts_tree([receipt for _, receipt in records]))
            if self._db.get(_height_key(keyspace.RECEIPT_TREE, height)) != rebuilt:
                raise StoreCorrupt(
                    f"{self._path}: receipt tree (r/) at height {height} is not the tree of "
                    "its block's receipts"
                )
        for level, hashes in enumerate(tree.levels):
            for index, expected in enumerate(hashes):
                if self._node(level, index) != expected:
                    raise StoreCorrupt(
                        f"{self._path}: log node (level {level}, index {index}) is wrong"
                    )

    def _node(self, level: int, index: int) -> bytes:
        try:
            return self._log.node(level, index)
        except LogCorrupt as exc:
            raise StoreCorrupt(f"{self._path}: {exc}") from None

    def on_damaged(self, listener: Callable[[StoreCorrupt], None]) -> None:
        """Call `listener` (from whatever thread read it) for every damaged record a read
        meets after the open: the node stops on the first (docs/node.md, Damage and recovery)."""
        self._db.on_damaged(listener)

    def close(self) -> None:
        self._db.close()

    def compact(self) -> None:
        """Rewrite every record into LevelDB's lower levels (memtable included). A node never
        needs this (LevelDB compacts in the background)."""
        self._db.compact_range()

    def settle(
        self, *, poll_s: float = 1.0, quiet_polls: int = 5, timeout_s: float = 1800.0
    ) -> bool:
        """Write the memtables out (`SplitDB.flush_memtables`), then wait until LevelDB's
        background compactions are done: no table file under the store appears, grows or goes
        for `quiet_polls` polls in a row (a running compaction writes its output file as it
        goes; LevelDB's own figures change only when it ends). False if files still moved after
        `timeout_s`. A store built in one go and copied to several nodes
        (cluster/bench/preload.py) needs this, or each copy would redo that work first; unlike
        `compact`, it leaves the levels as a node that grew the store itself has them.

        Why the flush: without it the last memtable (up to a write buffer of state/, random
        keys) stayed in the log, every copy flushed it when its node opened and merged it down
        through the full levels below during the measured load: in `kledger bench
        --preload-txs 1000000` that merge was most of the compaction the load was charged
        with (docs/bench.md "Values in the leaves (store v6)")."""
        self._db.flush_memtables()
        deadline = time.monotonic() + timeout_s
        last, quiet = self._table_files(), 0
        while quiet < quiet_polls:
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
            now = self._table_files()
            quiet = quiet + 1 if now == last else 0
            last = now
        return True

    def _table_files(self) -> frozenset[tuple[str, int]]:
        """(path, size) of every LevelDB table file of the store."""
        return frozenset(f for f in self._files() if f[0].endswith((".ldb", ".sst")))

    def _files(self) -> Iterator[tuple[str, int]]:
        """(path, size) of every file of the store's four LevelDBs, as listed now."""
        for part in part_paths(self._path).values():
            for entry in os.scandir(part):
                try:
                    if entry.is_file():
                        yield entry.path, entry.stat().st_size
                except FileNotFoundError:
                    continue  # LevelDB compaction deleted it after the directory was listed

    # ---- reads ----------------------------------------------------------------------------

    @property
    def genesis(self) -> Genesis:
        return self._genesis

    def last_height(self) -> int:
        return self._last_header.height

    def last_header(self) -> Header:
        return self._last_header

    def header(self, height: int) -> Header | None:
        block = self._indexed_block(height)
        return None if block is None else block.header

    def block(self, height: int) -> BlockRecord | None:
        block = self._indexed_block(height)
        if block is None:
            return None
        raw = self._db.get(_height_key(BODIES, height))
        if raw is None:
            raise StoreCorrupt(f"{self._path}: block body at height {height} is missing")
        try:
            head, commit_qc, tail = _decode_body(raw)
        except DecodeError as exc:
            raise StoreCorrupt(f"{self._path}: block body at height {height}: {exc}") from None
        if tail is None:
            return BlockRecord(block.header, head, commit_qc)
        payload = _tx_payload_bytes(self._block_encodings(block))
        return BlockRecord(block.header, head + payload + tail, commit_qc)

    def _block_encodings(self, block: _StoredBlock) -> list[bytes]:
        """A block's tx encodings in order, each hashing to the tx hash its block record lists
        (the payload rebuilt from them must be the certified one, byte for byte)."""
        height = block.header.height
        encodings = []
        for index, raw in self._block_records(height, len(block.tx_hashes)):
            try:
                encoding = _decode_tx_record(raw)[0]
            except DecodeError as exc:
                where = f"tx record (T/) at height {height}, index {index}"
                raise self._damaged(f"{where}: {exc}") from None
            if hashlib.sha256(encoding).digest() != block.tx_hashes[index]:
                raise self._damaged(
                    f"tx record (T/) at height {height}, index {index}: holds another tx than "
                    f"the block's {block.tx_hashes[index].hex()}"
                )
            encodings.append(encoding)
        return encodings

    def block_tx_hashes(self, height: int) -> tuple[Header, tuple[bytes, ...]] | None:
        """The header and tx hashes of a height, from its small block record alone (no body,
        no tx reads): what commit followers need."""
        block = self._block(height)
        return None if block is None else (block.header, block.tx_hashes)

    def block_txs(self, height: int) -> list[SignedTx]:
        """A height's txs in block order: one scan of its adjacent T/ records, each checked
        against the tx hash its block record lists."""
        block = self._block(height)
        if block is None:
            return []
        return [tx for tx, _ in self._block_tx_records(block)]

    def _block_tx_records(self, block: _StoredBlock) -> list[tuple[SignedTx, Receipt]]:
        """A block's txs and receipts, each the tx its block record lists, its receipt naming
        that tx's leaf."""
        height = block.header.height
        first_leaf = block.header.tx_log_size - len(block.tx_hashes)
        out = []
        for index, raw in self._block_records(height, len(block.tx_hashes)):
            tx, receipt = self._decode_record(height, index, raw)
            if tx.tx_hash != block.tx_hashes[index]:
                raise self._damaged(
                    f"tx record (T/) at height {height}, index {index}: holds tx "
                    f"{tx.tx_hash.hex()}, not the block's {block.tx_hashes[index].hex()}"
                )
            if receipt.leaf_index != first_leaf + index:
                raise self._damaged(
                    f"tx record (T/) at height {height}, index {index}: its receipt names log "
                    f"leaf {receipt.leaf_index}, not {first_leaf + index}"
                )
            out.append((tx, receipt))
        return out

    def block_receipts(self, height: int) -> list[Receipt]:
        """The receipts of a height's txs in tx order (the leaves of its receipts_root): one
        scan of its T/ records, each receipt checked against its leaf in the receipts tree."""
        block = self._block(height)
        if block is None:
            return []
        tree = self._checked_receipts_tree(block)
        receipts = []
        for index, raw in self._block_records(height, len(block.tx_hashes)):
            receipt = self._decode_receipt(height, index, raw)
            self._check_receipt_leaf(height, index, receipt, tree)
            receipts.append(receipt)
        return receipts

    def receipts_tree(self, height: int) -> StoredReceiptTree | None:
        """A height's receipts tree (r/), its root checked against the header's receipts_root."""
        block = self._block(height)
        return None if block is None else self._checked_receipts_tree(block)

    def receipt_path(self, receipt: Receipt) -> tuple[int, list[bytes]]:
        """(txs in the receipt's block, the audit path of the receipt in its receipts tree),
        from the stored tree: O(log n) slices and hashes. The receipt must be the one stored
        at its leaf (its hash is the tree's leaf) and the path must reach the header's root,
        or the record that does not add up is refused as damaged."""
        block = self._block(receipt.height)
        assert block is not None, f"no block at the receipt's height {receipt.height}"
        header = block.header
        tree = self._checked_receipts_tree(block)
        offset = receipt.leaf_index - (header.tx_log_size - tree.size)
        assert 0 <= offset < tree.size, f"receipt of leaf {receipt.leaf_index} out of its block"
        self._check_receipt_leaf(receipt.height, offset, receipt, tree)
        path = tree.inclusion_path(offset)
        if merkle.inclusion_problem(
            tree.leaf(offset), offset, tree.size, path, header.receipts_root
        ):
            raise self._damaged(
                f"receipt tree (r/) at height {receipt.height}: the audit path of receipt "
                f"{offset} does not reach the receipts_root of the header there"
            )
        return tree.size, path

    def _checked_receipts_tree(self, block: _StoredBlock) -> StoredReceiptTree:
        height = block.header.height
        with self._receipt_trees_lock:
            cached = self._receipt_trees.get(height)
            if cached is not None:
                self._receipt_trees.move_to_end(height)
                return cached
        tree = self._read_receipts_tree(block)
        with self._receipt_trees_lock:
            self._receipt_trees[height] = tree
            while len(self._receipt_trees) > RECEIPT_TREES_CACHED:
                self._receipt_trees.popitem(last=False)
        return tree

    def _read_receipts_tree(self, block: _StoredBlock) -> StoredReceiptTree:
        height = block.header.height
        raw = self._db.get(_height_key(keyspace.RECEIPT_TREE, height))
        if raw is None:
            raise StoreCorrupt(f"{self._path}: receipt tree (r/) at height {height} is missing")
        try:
            tree = StoredReceiptTree(raw)
        except DecodeError as exc:
            raise self._damaged(f"receipt tree (r/) at height {height}: {exc}") from None
        if tree.size != len(block.tx_hashes) or tree.root() != block.header.receipts_root:
            raise self._damaged(
                f"receipt tree (r/) at height {height}: its {tree.size} leaves do not hash to "
                f"the receipts_root of the header there ({len(block.tx_hashes)} txs)"
            )
        return tree

    def _check_receipt_leaf(
        self, height: int, index: int, receipt: Receipt, tree: StoredReceiptTree
    ) -> None:
        if merkle.leaf_hash(receipt.encode()) != tree.leaf(index):
            raise self._damaged(
                f"tx record (T/) at height {height}, index {index}: its receipt is not the "
                "leaf the block's receipts tree holds there"
            )

    def _block_records(self, height: int, count: int) -> Iterator[tuple[int, bytes]]:
        """(index, raw T/ record) of a height's txs, in order: exactly `count` adjacent keys."""
        expected = 0
        prefix = _height_key(keyspace.TX_RECORD, height)
        for key, raw in self._db.iterator(prefix=prefix):
            whole = len(key) == len(prefix) + 4
            index = int.from_bytes(key[len(prefix) :], "big")
            if whole and expected < min(index, count):
                break  # the record at `expected` is missing
            if not whole or index != expected or index >= count:
                raise StoreCorrupt(
                    f"{self._path}: tx record (T/) at height {height}: key {key[2:].hex()} "
                    f"where record {expected} of {count} was expected"
                )
            yield index, raw
            expected += 1
        if expected != count:
            raise StoreCorrupt(
                f"{self._path}: tx record (T/) at height {height}, index {expected} is missing "
                f"({count} txs)"
            )

    def _decode_record(self, height: int, index: int, raw: bytes) -> tuple[SignedTx, Receipt]:
        """A T/ record's tx and receipt, the receipt of the record's height."""
        where = f"tx record (T/) at height {height}, index {index}"
        try:
            encoding, receipt_bytes = _decode_tx_record(raw)
            tx = decode_tx(encoding, self._genesis.tx_limits)
            receipt = Receipt.decode(receipt_bytes)
        except DecodeError as exc:
            raise self._damaged(f"{where}: {exc}") from None
        if receipt.height != height:
            raise self._damaged(f"{where}: its receipt says height {receipt.height}")
        return tx, receipt

    def _decode_receipt(self, height: int, index: int, raw: bytes) -> Receipt:
        """The receipt of a T/ record, the tx left undecoded."""
        try:
            return Receipt.decode(_decode_tx_record(raw)[1])
        except DecodeError as exc:
            raise self._damaged(
                f"tx record (T/) at height {height}, index {index}: {exc}"
            ) from None

    def _damaged(self, what: str) -> StoreCorrupt:
        """A record that LevelDB's checksums pass but that does not add up, told to the node."""
        return self._db.report(StoreCorrupt(f"{self._path}: damaged record: {what}"))

    def height_of(self, header_hash: bytes) -> int | None:
        raw = self._db.get(keyspace.BLOCK_BY_HASH + header_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def log_size(self) -> int:
        return self._log.size

    def log_root(self, size: int | None = None) -> bytes:
        return self._log.root(size)

    def root_after(self, leaves: Sequence[bytes]) -> tuple[int, bytes]:
        """Log size and root after appending leaf data `leaves`, without writing anything."""
        return self._log.root_after(leaves)

    def has_tx(self, tx_hash: bytes) -> bool:
        """At most one get of the small t/ index (the bloom filter answers most misses) for
        the several times a node asks about a tx (node/storage/read_cache.py)."""
        return self._read_cache.get(keyspace.TX + tx_hash, self._db.get) is not None

    def get_tx(self, tx_hash: bytes) -> tuple[SignedTx, Receipt] | None:
        """The tx and its receipt (two gets: the t/ index, the T/ record), checked against the
        log: the leaf its receipt names is the hash of this tx (a record that LevelDB's
        checksums pass but that does not belong where it claims is refused, not served)."""
        found = self._read_tx(tx_hash)
        if found is None:
            return None
        tx, receipt = found
        # Read whatever the size in memory says: a block's batch holds its txs and leaves, so
        # a tx visible here has its leaf visible too, also before the commit installs the tip.
        try:
            leaf: bytes | None = self._log.node(0, receipt.leaf_index)
        except LogCorrupt:
            leaf = None
        if leaf != merkle.leaf_hash(tx.encoding):
            raise self._damaged(
                f"tx record (T/) of tx {tx_hash.hex()}: its receipt names log leaf "
                f"{receipt.leaf_index}, which is not this tx"
            )
        return found

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> list[bytes]:
        """Audit path of a leaf in the log at any size up to the current one (Refused if the
        arguments are out of range)."""
        return self._log.inclusion_proof(leaf_index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return self._log.consistency_proof(old_size, new_size)

    def certificate(self, height: int) -> CommitCertificate | None:
        raw = self._db.get(_height_key(keyspace.CERTIFICATE, height))
        if raw is None:
            return None
        try:
            cert = CommitCertificate.decode(raw)
        except DecodeError as exc:
            raise StoreCorrupt(f"{self._path}: certificate at height {height}: {exc}") from None
        header = self._block(height)
        if header is not None and cert.header_hash != header.header.hash():
            raise self._db.report(
                StoreCorrupt(
                    f"{self._path}: damaged record: commit certificate (c/): certificate at "
                    f"height {height} signs another header than the one stored there"
                )
            )
        return cert

    def epoch_end(self, epoch: int) -> EpochEnd | None:
        """The last block of `epoch` and the set after it, or None while the epoch runs."""
        if not 0 <= epoch < 2**64:
            return None
        raw = self._db.get(_epoch_key(epoch))
        return None if raw is None else self._decode_epoch_end(epoch, raw)

    def epoch_ends(self, first_epoch: int = 0) -> Iterator[EpochEnd]:
        """The epoch index from `first_epoch` on, in epoch order."""
        start = _epoch_key(max(0, first_epoch))
        for key, raw in self._db.iterator(start=start, stop=keyspace.EPOCH + b"\xff" * 9):
            yield self._decode_epoch_end(int.from_bytes(key[len(keyspace.EPOCH) :], "big"), raw)

    def _decode_epoch_end(self, epoch: int, raw: bytes) -> EpochEnd:
        try:
            return EpochEnd.decode(epoch, raw)
        except DecodeError as exc:
            raise self._db.report(
                StoreCorrupt(
                    f"{self._path}: damaged record: epoch index (e/) of epoch {epoch}: {exc}"
                )
            ) from None

    def latest_certified_height(self) -> int:
        """The highest height with a stored certificate (0 if none)."""
        for key in self._db.iterator(
            prefix=keyspace.CERTIFICATE, reverse=True, include_value=False
        ):
            return int.from_bytes(key[len(keyspace.CERTIFICATE) :], "big")
        return 0

    def load_safety(self) -> bytes | None:
        value: bytes | None = self._db.get(SAFETY_KEY)
        return value

    def size_bytes(self) -> int:
        """Bytes of the store's files on disk (its four LevelDBs)."""
        return sum(size for _, size in self._files())

    def leveldb_levels(self) -> dict[str, tuple[LevelStats, ...]]:
        """Per LevelDB of the store (state, history, tree, log): its per-level files, sizes and
        compaction totals since the store opened."""
        return {
            part: parse_stats(raw.decode("ascii", "replace")) if raw else ()
            for part, raw in self._db.get_property(STATS_PROPERTY).items()
        }

    # ---- writes ---------------------------------------------------------------------------

    def prepare_commit(
        self,
        record: BlockRecord,
        txs: Sequence[SignedTx],
        results: Sequence[TxResult],
        state_writes: keyspace.WriteSet,
        validator_change: ValidatorSet | None = None,
        *,
        receipt_tree: merkle.MemoryTree | None = None,
    ) -> PreparedCommit:
        """Build the one WriteBatch of a block commit without writing it. `validator_change`
        is the next epoch's set when this block ends its epoch (its header names the set).
        `receipt_tree` is the tree the header's receipts_root was taken from, when the caller
        built one (the committer): then it is stored as it is, else built from the receipts."""
        header = record.header
        last = self._last_header
        assert header.height == last.height + 1, f"height {header.height} after {last.height}"
        assert header.parent_hash == last.hash(), "parent_hash is not the last header's hash"
        assert header.chain_id == self._genesis.chain_id, "header of another chain"
        assert len(results) == len(txs), "one result per tx"
        hashes = [tx.tx_hash for tx in txs]
        assert len(set(hashes)) == len(hashes), "a tx appears twice in the block"
        for tx_hash in hashes:
            assert not self.has_tx(tx_hash), f"tx {tx_hash.hex()} is already committed"
        plan = self._log.plan_append([tx.encoding for tx in txs])
        assert header.tx_log_size == plan.size, (
            f"header tx_log_size {header.tx_log_size}, appending gives {plan.size}"
        )
        assert header.tx_log_root == plan.root, "header tx_log_root is not the log root"
        for key in state_writes:
            assert key.startswith(STATE_FAMILIES), f"state write outside s/ and z/: {key!r}"

        block = _StoredBlock(header, tuple(hashes))
        receipts = [
            Receipt(header.height, plan.old_size + offset, result)
            for offset, result in enumerate(results)
        ]
        # A tree handed in is not hashed again here: the committer built it from these same
        # results and leaf positions, and serving a receipt checks it (receipt_path).
        if receipt_tree is None:
            receipt_tree = receipts_tree(receipts)
        assert receipt_tree.size == len(receipts), "receipts tree of another block"
        assert receipt_tree.root() == header.receipts_root, "header receipts_root is not the tree's"
        expected_next = ZERO_HASH if validator_change is None else validator_change.digest()
        assert header.next_validator_set_hash == expected_next, (
            "header next_validator_set_hash does not name the validator change"
        )
        batch = self._db.write_batch(sync=True)
        if validator_change is not None:
            ended = validator_change.epoch - 1
            assert ended >= 0 and self.epoch_end(ended) is None, f"epoch {ended} ends twice"
            assert ended == 0 or self.epoch_end(ended - 1) is not None, (
                f"epoch {ended} ends before epoch {ended - 1}"
            )
            batch.put(_epoch_key(ended), EpochEnd(ended, header.height, validator_change).encode())
        batch.put(_height_key(HEADERS, header.height), block.encode())
        batch.put(_height_key(BODIES, header.height), _encode_body(record, txs))
        batch.put(keyspace.BLOCK_BY_HASH + header.hash(), _u64(header.height))
        for index, (tx, receipt) in enumerate(zip(txs, receipts, strict=True)):
            position = _position(header.height, index)
            batch.put(keyspace.TX_RECORD + position, _encode_tx_record(tx, receipt))
            batch.put(keyspace.TX + tx.tx_hash, position)
        batch.put(
            _height_key(keyspace.RECEIPT_TREE, header.height), encode_receipt_tree(receipt_tree)
        )
        self._log.write_plan(plan, batch)
        _put_state(batch, state_writes, header.height)
        batch.put(TX_COUNT_KEY, _u64(plan.size))
        batch.put(LAST_HEIGHT_KEY, _u64(header.height))
        cached: list[tuple[bytes, bytes | None]] = [
            (keyspace.TX + tx_hash, _position(header.height, index))
            for index, tx_hash in enumerate(hashes)
        ]
        cached += [(key, value) for key, value in state_writes.items() if flat_state.is_flat(key)]
        return PreparedCommit(self, batch, block, plan, receipts, cached=cached)

    def commit_block(
        self,
        record: BlockRecord,
        txs: Sequence[SignedTx],
        results: Sequence[TxResult],
        state_writes: keyspace.WriteSet,
        validator_change: ValidatorSet | None = None,
        *,
        receipt_tree: merkle.MemoryTree | None = None,
    ) -> list[Receipt]:
        """Commit a block and everything it changes in one synced WriteBatch."""
        return self.prepare_commit(
            record, txs, results, state_writes, validator_change, receipt_tree=receipt_tree
        ).apply()

    def _install(
        self, block: _StoredBlock, plan: AppendPlan, cached: Sequence[tuple[bytes, bytes | None]]
    ) -> None:
        self._read_cache.committed(cached)
        self._log.install(plan)
        self._page_cache.promote()  # the state-tree pages this block wrote are on disk now
        self._last_header = block.header

    def save_certificate(self, height: int, cert: CommitCertificate) -> None:
        """Store the commit certificate of a committed header (synced). The caller has checked
        its signatures; the store checks it names the header at that height."""
        header = self.header(height)
        assert header is not None, f"no header at height {height}"
        assert cert.header_hash == header.hash(), "certificate signs another header"
        self._db.put(_height_key(keyspace.CERTIFICATE, height), cert.encode(), sync=True)

    def snapshot_view(self) -> LevelView:
        """The committed registry state as of now, frozen (a LevelDB snapshot): later commits do
        not change what it reads. Queries answer from one so answer and proof agree."""
        return LevelView(self._db.snapshot(), self._page_cache)

    def prune_state(self, keep_from: int, max_records: int) -> tuple[int, bool]:
        """Delete, in one batch, up to `max_records` state-tree records that no height >=
        `keep_from` needs (state_tree.prune_writes). Not synced: a batch lost in a crash only
        leaves records the next pass deletes. Returns (records deleted, whether more remain)."""
        assert keep_from <= self._last_header.height, "pruning above the committed height"
        deletes, more, cursor = state_tree.prune_writes(
            self._scan_range, keep_from, max_records, self._prune_cursor
        )
        if deletes:
            with self._db.write_batch(deletes_tree=True) as batch:
                for key in deletes:
                    batch.delete(key)
        # After the batch: a pass that raised left the cursor where it was. A restart starts
        # from the families' beginning again (a lost unsynced pass is redone then).
        self._prune_cursor = cursor
        return len(deletes), more

    def _scan_range(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        return cast(Iterator[tuple[bytes, bytes]], self._db.iterator(start=start, stop=stop))

    def save_consensus(
        self, safety: bytes | None, blocks: Sequence[tuple[int, bytes, bytes]]
    ) -> None:
        """Safety data and uncommitted blocks ((height, block id, encoding)) in ONE synced
        write: durable before the vote or proposal that depends on them leaves the node."""
        with self._db.write_batch(sync=True) as batch:
            if safety is not None:
                batch.put(SAFETY_KEY, safety)
            for height, block_id, encoding in blocks:
                batch.put(PENDING_BLOCK + _u64(height) + block_id, encoding)
        # A block saved at a height already pruned past (a late proposal): the next pass
        # starts there, so it is deleted too.
        lowest = min((height for height, _, _ in blocks), default=self._pending_pruned_below)
        self._pending_pruned_below = min(self._pending_pruned_below, lowest)

    def load_pending_blocks(self) -> list[bytes]:
        """Encodings of the saved uncommitted blocks above the committed height."""
        start = PENDING_BLOCK + _u64(self._last_header.height + 1)
        return [
            value for _, value in self._db.iterator(start=start, stop=PENDING_BLOCK + b"\xff" * 8)
        ]

    def prune_pending_blocks(self) -> None:
        """Forget saved blocks at or below the committed height (no longer needed). A pass
        starts where the last one stopped: LevelDB keeps a deleted key as a tombstone until a
        compaction reaches it, and a pass from the family's start walked every delete before
        it, on the event loop after every block (6.6 % of one node's loop 16 minutes into a
        soak: docs/bench.md "The 30-minute soak, store v6")."""
        below = self._last_header.height + 1
        if below <= self._pending_pruned_below:
            return
        keys = list(
            self._db.iterator(
                start=PENDING_BLOCK + _u64(self._pending_pruned_below),
                stop=PENDING_BLOCK + _u64(below),
                include_value=False,
            )
        )
        if keys:
            with self._db.write_batch() as batch:
                for key in keys:
                    batch.delete(key)
        self._pending_pruned_below = below

    # ---- internals ------------------------------------------------------------------------

    def _block(self, height: int) -> _StoredBlock | None:
        if not 0 <= height <= self._last_header.height:
            return None
        raw = self._db.get(_height_key(HEADERS, height))
        if raw is None:
            raise StoreCorrupt(f"{self._path}: block record at height {height} is missing")
        try:
            return _StoredBlock.decode(raw)
        except DecodeError as exc:
            raise StoreCorrupt(f"{self._path}: block record at height {height}: {exc}") from None

    def _indexed_block(self, height: int) -> _StoredBlock | None:
        """A block record checked against the hash index (header hash -> height): a header
        rewritten in place no longer hashes to a key that names its height."""
        block = self._block(height)
        if block is not None and self._db.get(keyspace.BLOCK_BY_HASH + block.header.hash()) != _u64(
            height
        ):
            raise self._db.report(
                StoreCorrupt(
                    f"{self._path}: damaged record: block record (b/h) at height {height}: its "
                    "header's hash is not indexed at that height"
                )
            )
        return block

    def _read_tx(self, tx_hash: bytes) -> tuple[SignedTx, Receipt] | None:
        position = self._db.get(keyspace.TX + tx_hash)
        if position is None:
            return None
        if len(position) != POSITION_BYTES:
            raise self._damaged(f"tx index (t/) {tx_hash.hex()}: {len(position)} bytes")
        height = int.from_bytes(position[:8], "big")
        index = int.from_bytes(position[8:], "big")
        raw = self._db.get(keyspace.TX_RECORD + position)
        if raw is None:
            raise self._damaged(
                f"tx index (t/) {tx_hash.hex()}: names height {height}, index {index}, where "
                "no tx record is"
            )
        tx, receipt = self._decode_record(height, index, raw)
        if tx.tx_hash != tx_hash:
            raise self._damaged(
                f"tx index (t/) {tx_hash.hex()}: names height {height}, index {index}, which "
                "holds another tx"
            )
        return tx, receipt


def _check_chain(
    db: SplitDB, where: Path, last_height: int, expected_genesis: Header, check_blocks: int | None
) -> Header:
    """Walk the header records: contiguous heights, parent links, hash index, tx counts; the
    whole chain, or the genesis header and the last `check_blocks` headers."""

    def decode(height: int, value: bytes) -> _StoredBlock:
        try:
            return _StoredBlock.decode(value)
        except DecodeError as exc:
            raise StoreCorrupt(f"{where}: block record at height {height}: {exc}") from None

    genesis_raw = db.get(_height_key(HEADERS, 0))
    if genesis_raw is None:
        raise StoreCorrupt(f"{where}: block record at height 0 is missing")
    if decode(0, genesis_raw).header != expected_genesis:
        raise StoreCorrupt(f"{where}: genesis header differs from this genesis")
    first = 0 if check_blocks is None else max(0, last_height - check_blocks)
    previous: Header | None = None
    # One get per height: history/ keeps a height's records together, so the block records are
    # not one run of keys to scan (and nothing lies above last_height once it is trimmed).
    for height in range(first, last_height + 1):
        value = db.get(_height_key(HEADERS, height))
        if value is None:
            raise StoreCorrupt(f"{where}: block record at height {height} is missing")
        block = decode(height, value)
        header = block.header
        if header.height != height:
            raise StoreCorrupt(f"{where}: header at height {height} says height {header.height}")
        if previous is not None:
            if header.parent_hash != previous.hash():
                raise StoreCorrupt(
                    f"{where}: header at height {height} does not link to its parent "
                    "(parent_hash differs from the hash of the header before it)"
                )
            if header.tx_log_size != previous.tx_log_size + len(block.tx_hashes):
                raise StoreCorrupt(
                    f"{where}: header at height {height} says tx_log_size "
                    f"{header.tx_log_size}, its parent {previous.tx_log_size} plus "
                    f"{len(block.tx_hashes)} txs"
                )
        indexed = db.get(keyspace.BLOCK_BY_HASH + header.hash())
        if indexed != _u64(height):
            raise StoreCorrupt(f"{where}: hash index does not point to height {height}")
        previous = header
    if db.get(_height_key(BODIES, last_height)) is None:
        raise StoreCorrupt(f"{where}: block body at height {last_height} is missing")
    assert previous is not None
    return previous


def _old_format(path: Path, fmt: bytes) -> StoreCorrupt:
    return StoreCorrupt(
        f"{path}: format is {fmt!r} ({OLD_FORMATS[fmt]}); this node reads only {FORMAT!r} and "
        "does not convert: move the data_dir away and let the node rebuild it by block sync "
        'from its peers (docs/node.md "Store format")'
    )


def _refuse_single_leveldb(path: Path) -> None:
    """A store of format v1-v4 is one LevelDB in the data directory itself: refuse it by its
    format's name (read, nothing written), as every older format is."""
    if is_new_store_dir(path):
        return
    fmt = _refuse_old_format(path, path)
    raise StoreCorrupt(
        f"{path}: holds a LevelDB of format {fmt!r}, not a store of format {FORMAT!r} (its "
        f"LevelDBs are the directories {', '.join(part_paths(path))})"
    )


def _refuse_old_format(leveldb: Path, store: Path) -> bytes | None:
    """Read (nothing written) the format record of the LevelDB at `leveldb` and refuse the
    store at `store` by that format's name if it is an older one; else return the record."""
    check_store_files(leveldb)
    db = _open_leveldb(leveldb, new=False)
    try:
        fmt = CheckedDB(db, leveldb).get(FORMAT_KEY)
    finally:
        db.close()
    if fmt in OLD_FORMATS:
        raise _old_format(store, fmt)
    return fmt


def _open_parts(path: Path) -> SplitDB:
    """The store's four LevelDBs, each checked file by file before any is opened. A new
    store's parts are created state/ last, so a part missing next to the others is damage
    (or a creation cut short), refused with nothing created or changed."""
    paths = part_paths(path)
    new = {name: is_new_store_dir(where) for name, where in paths.items()}
    if any(new.values()) and not all(new.values()):
        if not new[STATE_PART]:  # an older store of fewer LevelDBs (v5 had no log/)?
            _refuse_old_format(paths[STATE_PART], path)
        missing = ", ".join(str(paths[name]) for name, fresh in new.items() if fresh)
        raise StoreCorrupt(
            f"{path}: the store's LevelDB {missing} is missing while the others hold records "
            f"(damaged, or its creation was cut short); {RECOVERY}"
        )
    for name, where in paths.items():
        if not new[name]:
            check_store_files(where)
    listeners: list[Callable[[StoreCorrupt], None]] = []
    opened: dict[str, CheckedDB] = {}
    try:
        for name in WRITE_ORDER:  # state/ last (see above)
            logical = None if name == STATE_PART else logical_key
            db = _open_leveldb(paths[name], new[name], _table_file_bytes(name))
            opened[name] = CheckedDB(db, paths[name], listeners, logical)
    except BaseException:
        for db in opened.values():
            db.close()
        raise
    return SplitDB(opened)


def _table_file_bytes(part: str) -> int:
    return STATE_TABLE_FILE_BYTES if part == STATE_PART else TABLE_FILE_BYTES


def _open_leveldb(path: Path, new: bool, table_file_bytes: int = TABLE_FILE_BYTES) -> Any:
    """The plyvel DB of `path`: created only when the directory never held a store; otherwise
    (checked file by file first, by the caller) opened without create_if_missing, so LevelDB's
    recovery never runs on (and deletes files of) a store whose CURRENT or MANIFEST is gone."""
    options: dict[str, Any] = {
        "paranoid_checks": True,
        "bloom_filter_bits": BLOOM_FILTER_BITS,
        "lru_cache_size": BLOCK_CACHE_BYTES,
        "write_buffer_size": WRITE_BUFFER_BYTES,
        "max_file_size": table_file_bytes,
        "compression": None,
    }
    if new:
        path.mkdir(parents=True, exist_ok=True)
    try:
        return plyvel.DB(str(path), create_if_missing=new, error_if_exists=new, **options)
    except plyvel.Error as exc:
        raise StoreCorrupt(
            f"{path}: LevelDB refuses to open the store: {exc}; {RECOVERY}"
        ) from None


def _read_u64(db: SplitDB, key: bytes, name: str) -> int:
    raw = db.get(key)
    if raw is None or len(raw) != 8:
        raise StoreCorrupt(f"store metadata {name} is {'missing' if raw is None else 'malformed'}")
    return int.from_bytes(raw, "big")


def _genesis_header(genesis: Genesis, state_root: bytes) -> Header:
    return Header(
        chain_id=genesis.chain_id,
        epoch=0,
        height=0,
        round=0,
        parent_hash=ZERO_HASH,
        tx_log_size=0,
        tx_log_root=merkle.EMPTY_ROOT,
        state_root=state_root,
        validator_set_hash=genesis.validator_set.digest(),
        next_validator_set_hash=ZERO_HASH,
        receipts_root=merkle.EMPTY_ROOT,
        proposer="",
        timestamp_ms=genesis.genesis_time_ms,
    )


def _put_state(batch: Any, writes: keyspace.WriteSet, height: int) -> None:
    """A block's state writes into its batch: tree records as they are, each flat entry as
    the version of its leaf (node/storage/flat_state.py)."""
    for key, value in writes.items():
        if value is None:
            batch.delete(key)
        elif flat_state.is_flat(key):
            batch.put(key, flat_state.stored(key, value, height, writes))
        else:
            batch.put(key, value)


def _create(
    db: SplitDB, genesis: Genesis, genesis_writes: keyspace.WriteSet, state_root: bytes
) -> None:
    assert len(state_root) == HASH_BYTES, "genesis state root must be 32 bytes"
    header = _genesis_header(genesis, state_root)
    block = _StoredBlock(header, ())
    batch = db.write_batch(sync=True)
    for key in genesis_writes:
        assert key.startswith(STATE_FAMILIES), f"genesis write outside s/ and z/: {key!r}"
    _put_state(batch, {k: v for k, v in genesis_writes.items() if v is not None}, 0)
    batch.put(_height_key(HEADERS, 0), block.encode())
    batch.put(_height_key(BODIES, 0), _encode_body(BlockRecord(header, b"", b""), ()))
    batch.put(_height_key(keyspace.RECEIPT_TREE, 0), encode_receipt_tree(receipts_tree([])))
    batch.put(keyspace.BLOCK_BY_HASH + header.hash(), _u64(0))
    batch.put(GENESIS_KEY, genesis.digest())
    batch.put(TX_COUNT_KEY, _u64(0))
    batch.put(LAST_HEIGHT_KEY, _u64(0))
    # Written last in the same batch: a store with a format record was fully created.
    batch.put(FORMAT_KEY, FORMAT)
    batch.write()
