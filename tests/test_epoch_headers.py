"""Header v2 as the committer writes it (docs/design.md §7.2): receipts_root over the block's
receipts in tx order, next_validator_set_hash naming the set execution decided, the store's
epoch index written with that block and checked when the store opens, format v3."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import plyvel
import pytest

from kledger.consensus import Block, BlockId, Height, NodeId, Round, genesis_block
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain import canonical
from kledger.node.chain.header import ZERO_HASH
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import SignedTx, TxBody
from kledger.node.commit.committer import Committer
from kledger.node.errors import StoreCorrupt
from kledger.node.proof import merkle
from kledger.node.proof.receipts import receipts_root
from kledger.node.registry import BlockContext, BlockOutcome, Registry
from kledger.node.storage import keyspace
from kledger.node.storage.keyspace import ReadView
from kledger.node.storage.store import EpochEnd, LedgerStore
from kledger.node.storage.store_parts import locate
from tests.helpers import key, make_genesis
from tests.ledger_builders import make_tx

GENESIS = make_genesis()
ROOT, ROOT_QC = genesis_block(GENESIS.chain_id, GENESIS.validator_set, GENESIS.genesis_time_ms)
# The next set: KOMCA's validator rotated to a new key (what change_validator decides).
NEXT = ValidatorSet.of(
    1,
    [
        (v.node_id, key("KOMCA/validator-2").public_key if v.node_id == "KOMCA" else v.public_key)
        for v in GENESIS.validator_set.validators
    ],
)


class DecidingRegistry(Registry):
    """The real registry, whose outcome for the blocks in `change_at` carries NEXT: how the
    committer sees execution end an epoch, whichever block the node makes that (the approval
    or the marker, docs/design.md §4.8)."""

    def __init__(self, change_at: set[int]) -> None:
        super().__init__(GENESIS)
        self.change_at = change_at

    def execute_block(
        self, view: ReadView, txs: Sequence[tuple[SignedTx, TxBody]], ctx: BlockContext
    ) -> BlockOutcome:
        outcome = super().execute_block(view, txs, ctx)
        change = NEXT if ctx.height in self.change_at else None
        return BlockOutcome(outcome.results, outcome.writes, outcome.state_root, change)


def open_ledger(path: Path, change_at: set[int]) -> tuple[LedgerStore, Committer]:
    registry = DecidingRegistry(change_at)
    store = LedgerStore.open(
        path, GENESIS, registry.genesis_writes(), registry.genesis_state_root()
    )
    return store, Committer(store, registry, GENESIS)


def reopen(path: Path) -> LedgerStore:
    return LedgerStore.open(path, GENESIS, {}, Registry(GENESIS).genesis_state_root())


def chain(tx_counts: list[int]) -> list[Block]:
    out: list[Block] = []
    parent = ROOT
    nonce = 0
    for height, count in enumerate(tx_counts, start=1):
        txs = [make_tx(nonce + i) for i in range(count)]
        nonce += count
        block = Block(
            chain_id=GENESIS.chain_id,
            epoch=0,
            round=Round(height),
            height=Height(height),
            parent_id=BlockId(parent.id),
            proposer=NodeId("KOMCA"),
            timestamp_ms=GENESIS.genesis_time_ms + height,
            payload=encode_payload(txs) if txs else b"",
            qc=ROOT_QC,
        )
        out.append(block)
        parent = block
    return out


def test_receipts_root_covers_each_blocks_receipts_in_order(tmp_path: Path) -> None:
    store, committer = open_ledger(tmp_path / "db", set())
    try:
        committed = [committer.apply_block(b, ROOT_QC.encode()) for b in chain([3, 0, 2])]
        for height, done in enumerate(committed, start=1):
            assert done is not None
            receipts = store.block_receipts(height)
            assert list(done.receipts) == receipts
            assert done.header.receipts_root == receipts_root(receipts)
            assert done.header.next_validator_set_hash == ZERO_HASH
        assert committed[1] is not None and committed[1].header.receipts_root == merkle.EMPTY_ROOT
        # the registry refused these txs (unknown type): the refusal is what the root certifies
        assert committed[0] is not None and committed[0].receipts[0].result.status != "OK"
        reordered = receipts_root(list(reversed(store.block_receipts(1))))
        assert reordered != committed[0].header.receipts_root
        assert store.epoch_end(0) is None and list(store.epoch_ends()) == []
    finally:
        store.close()


def test_a_decided_change_is_named_by_its_header_and_indexed(tmp_path: Path) -> None:
    store, committer = open_ledger(tmp_path / "db", {2})
    try:
        for block in chain([1, 1, 1]):
            committer.apply_block(block, ROOT_QC.encode())
        assert [store.header(h).next_validator_set_hash for h in (1, 2, 3)] == [  # type: ignore[union-attr]
            ZERO_HASH,
            NEXT.digest(),
            ZERO_HASH,
        ]
        assert store.epoch_end(0) == EpochEnd(0, 2, NEXT)
        assert store.epoch_end(1) is None and list(store.epoch_ends()) == [EpochEnd(0, 2, NEXT)]
    finally:
        store.close()
    reopened = reopen(tmp_path / "db")
    assert reopened.epoch_end(0) == EpochEnd(0, 2, NEXT)
    reopened.close()


def _reopen_after(path: Path, key_: bytes, value: bytes) -> StoreCorrupt:
    """Write `value` at `key_` with plain LevelDB (in the store's LevelDB that holds the key,
    under the key it is stored by), open (refused), then undo the write."""
    part, stored = locate(key_)
    db = plyvel.DB(str(path / part))
    original = db.get(stored)
    db.put(stored, value)
    db.close()
    with pytest.raises(StoreCorrupt) as refused:
        reopen(path)
    db = plyvel.DB(str(path / part))
    if original is None:
        db.delete(stored)
    else:
        db.put(stored, original)
    db.close()
    reopen(path).close()
    return refused.value


def test_the_epoch_index_is_checked_at_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store, committer = open_ledger(path, {2})
    for block in chain([1, 1, 1]):
        committer.apply_block(block, ROOT_QC.encode())
    store.close()
    entry = keyspace.EPOCH + (0).to_bytes(8, "big")
    other = ValidatorSet.of(
        1, [(v.node_id, v.public_key) for v in GENESIS.validator_set.validators]
    )
    wrong_set = _reopen_after(path, entry, EpochEnd(0, 2, other).encode())
    assert "not the next_validator_set_hash of height 2" in str(wrong_set)
    wrong_height = _reopen_after(path, entry, EpochEnd(0, 3, NEXT).encode())
    assert "not the next_validator_set_hash of height 3" in str(wrong_height)
    garbage = _reopen_after(path, entry, canonical.encode({"last_height": 2}))
    assert "epoch index (e/) of epoch 0" in str(garbage)
    gap = _reopen_after(
        path, keyspace.EPOCH + (2).to_bytes(8, "big"), EpochEnd(2, 3, NEXT).encode()
    )
    assert "epoch index has no entry for epoch 1" in str(gap)


def test_a_store_with_v1_headers_is_refused_by_name(tmp_path: Path) -> None:
    store, _ = open_ledger(tmp_path / "db", set())
    store._db.put(b"x/format", b"kledger-store/v2")
    store.close()
    with pytest.raises(StoreCorrupt) as refused:
        reopen(tmp_path / "db")
    message = str(refused.value)
    assert "kledger-store/v2" in message and "headers of format v1" in message
    assert "does not convert" in message and "block sync" in message


def test_receipts_served_are_checked_against_the_header(tmp_path: Path) -> None:
    """A tx record whose receipt was rewritten (checksums intact) is refused as damaged when
    its block's receipts are read, never served into a proof."""
    store, committer = open_ledger(tmp_path / "db", set())
    try:
        [block] = chain([3])
        done = committer.apply_block(block, ROOT_QC.encode())
        assert done is not None
        tx_hash = done.txs[1].tx_hash
        position = store._db.get(keyspace.TX + tx_hash)
        assert position is not None
        raw = store._db.get(keyspace.TX_RECORD + position)
        assert raw is not None
        encoding, receipt = canonical.decode(raw)
        forged = Receipt(1, 1, TxResult("OK", "", {"work_id": "W-forged"}))
        assert forged.encode() != receipt
        store._db.put(keyspace.TX_RECORD + position, canonical.encode([encoding, forged.encode()]))
        leaf = "tx record (T/) at height 1, index 1: its receipt is not the leaf"
        with pytest.raises(StoreCorrupt, match=re.escape(leaf)):
            store.block_receipts(1)
        with pytest.raises(StoreCorrupt, match=re.escape(leaf)):
            store.receipt_path(forged)
    finally:
        store.close()
