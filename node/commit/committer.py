"""Turns committed consensus blocks into ledger heights (docs/design.md §3.4).

For each committed block, in order:
  1. decode its payload (checked when the block was voted on, so failure here is our bug); an
     epoch-change marker block executes as the epoch change with no txs (docs/design.md §4.8);
  2. drop txs already committed (belt and braces: the proposal check refuses them, and every
     honest node applies this same rule to the same chain, so execution stays identical);
  3. execute the txs against the registry state (node/registry), deterministically;
  4. build the header: the Merkle log root after appending the tx encodings, the state root,
     the receipts root, and the next set's digest when execution ended the epoch here;
  5. write block + txs + receipts + log nodes + state in ONE synced LevelDB batch
     (node/storage/store.py);
  6. only then: sign the header (node/commit/certifier.py), free the mempool, wake waiters.

A block at or below the stored height is skipped if its id matches what is stored (after a crash
the consensus core may commit again what the store already holds); a different id there means
consensus safety broke, and the node stops rather than fork.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kledger.consensus.types import Block
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import ZERO_HASH, Header
from kledger.node.chain.payload import decode_payload, epoch_change_of
from kledger.node.chain.receipt import Receipt
from kledger.node.chain.tx import SignedTx, TxBody, decode_body
from kledger.node.proof.receipts import receipts_tree
from kledger.node.registry import BlockContext, Registry
from kledger.node.storage.store import BlockRecord, LedgerStore

log = logging.getLogger("kledger.commit")


class SafetyBroken(RuntimeError):
    """The store holds another block at a height consensus just committed."""


@dataclass(frozen=True, slots=True)
class CommittedHeight:
    header: Header
    txs: tuple[SignedTx, ...]
    receipts: tuple[Receipt, ...]
    validator_change: ValidatorSet | None


class Committer:
    def __init__(
        self,
        store: LedgerStore,
        registry: Registry,
        genesis: Genesis,
    ) -> None:
        self._store = store
        self._registry = registry
        self._genesis = genesis

    def apply_block(self, block: Block, commit_qc: bytes) -> CommittedHeight | None:
        stored_height = self._store.last_height()
        if block.height <= stored_height:
            record = self._store.block(block.height)
            assert record is not None, f"store lost height {block.height}"
            if Block.decode(record.consensus_block).id != block.id:
                raise SafetyBroken(
                    f"height {block.height}: committed block {block.id.hex()} but the store "
                    "holds another; refusing to fork"
                )
            return None
        assert block.height == stored_height + 1, (
            f"commit of height {block.height} on top of {stored_height}"
        )
        # The block's epoch set, from the executed state: the marker that opened the epoch
        # executed before any block of it (docs/design.md §4.8).
        validators = self._registry.validators_of_epoch(self._store.view, block.epoch)
        assert validators is not None, f"no validator set of epoch {block.epoch} in state"
        marker = epoch_change_of(block)
        txs = (
            []
            if marker is not None
            else decode_payload(block.payload, self._genesis.block_limits, self._genesis.tx_limits)
        )
        unique: list[tuple[SignedTx, TxBody]] = []
        seen: set[bytes] = set()
        for tx in txs:
            if tx.tx_hash in seen or self._store.has_tx(tx.tx_hash):
                log.error(
                    "committed block %d repeats tx %s; skipped", block.height, tx.tx_hash.hex()
                )
                continue
            seen.add(tx.tx_hash)
            unique.append((tx, decode_body(tx, self._genesis.tx_limits)))
        context = BlockContext(
            chain_id=self._genesis.chain_id,
            epoch=block.epoch,
            height=block.height,
            timestamp_ms=block.timestamp_ms,
        )
        outcome = (
            self._registry.execute_epoch_change(self._store.view, marker, context)
            if marker is not None
            else self._registry.execute_block(self._store.view, unique, context)
        )
        assert len(outcome.results) == len(unique)
        log_size, log_root = self._store.root_after([tx.encoding for tx, _ in unique])
        # The receipts the store will write (node/storage/store.py asserts they agree).
        first_leaf = log_size - len(unique)
        expected_receipts = [
            Receipt(block.height, first_leaf + offset, result)
            for offset, result in enumerate(outcome.results)
        ]
        change = outcome.validator_change
        # Built once: its root goes into the header, the tree itself into the store (r/).
        receipt_tree = receipts_tree(expected_receipts)
        header = Header(
            chain_id=self._genesis.chain_id,
            epoch=block.epoch,
            height=block.height,
            round=block.round,
            parent_hash=self._store.last_header().hash(),
            tx_log_size=log_size,
            tx_log_root=log_root,
            state_root=outcome.state_root,
            validator_set_hash=validators.digest(),
            next_validator_set_hash=ZERO_HASH if change is None else change.digest(),
            receipts_root=receipt_tree.root(),
            proposer=block.proposer,
            timestamp_ms=block.timestamp_ms,
        )
        receipts = self._store.commit_block(
            BlockRecord(header=header, consensus_block=block.encode(), commit_qc=commit_qc),
            [tx for tx, _ in unique],
            outcome.results,
            outcome.writes,
            change,
            receipt_tree=receipt_tree,
        )
        return CommittedHeight(
            header=header,
            txs=tuple(tx for tx, _ in unique),
            receipts=tuple(receipts),
            validator_change=outcome.validator_change,
        )
