"""A ledger of three epochs built by really executing blocks (the real Registry, Committer and
LedgerStore): epoch 0 the founding six; epoch 1 KOMCA's validator key rotated and MCST added
(n = 7, q = 5); epoch 2 KMCA removed (n = 6). Each height certified by its epoch's whole set
with that set's keys. The registry's outcome names the next set at the epoch's last block, as
the marker block's execution does (docs/design.md §4.8)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kledger.consensus import Block, BlockId, Height, NodeId, Round, genesis_block
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.header import CommitCertificate, Header, sign_header
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.payload import encode_payload
from kledger.node.chain.tx import SignedTx, TxBody
from kledger.node.commit.committer import Committer
from kledger.node.registry import BlockContext, BlockOutcome, Registry
from kledger.node.storage.keyspace import ReadView
from kledger.node.storage.store import LedgerStore
from tests.helpers import key, make_genesis
from tests.ledger_builders import make_tx

GENESIS = make_genesis()
ROOT, ROOT_QC = genesis_block(GENESIS.chain_id, GENESIS.validator_set, GENESIS.genesis_time_ms)
BLOCKS_PER_EPOCH = 3
TXS_PER_BLOCK = 2

EPOCH_KEYS: list[dict[str, KeyPair]] = []
_founders: dict[str, KeyPair] = {
    str(v.node_id): key(f"{v.node_id}/validator") for v in GENESIS.validator_set.validators
}
EPOCH_KEYS.append(dict(_founders))
EPOCH_KEYS.append({**_founders, "KOMCA": key("KOMCA/validator-2"), "MCST": key("MCST/validator")})
EPOCH_KEYS.append({org: k for org, k in EPOCH_KEYS[1].items() if org != "KMCA"})
SETS = [
    ValidatorSet.of(epoch, [(org, k.public_key) for org, k in keys.items()])
    for epoch, keys in enumerate(EPOCH_KEYS)
]


def sign_with(header: Header, keys: dict[str, KeyPair]) -> CommitCertificate:
    header_hash = header.hash()
    return CommitCertificate(
        header_hash,
        tuple((org, sign_header(keys[org], header_hash)) for org in sorted(keys)),
    )


class EpochRegistry(Registry):
    """The real registry; the outcome of each epoch's last block names the next set."""

    def execute_block(
        self, view: ReadView, txs: Sequence[tuple[SignedTx, TxBody]], ctx: BlockContext
    ) -> BlockOutcome:
        outcome = super().execute_block(view, txs, ctx)
        ends = ctx.height % BLOCKS_PER_EPOCH == 0 and ctx.epoch + 1 < len(SETS)
        change = SETS[ctx.epoch + 1] if ends else None
        return BlockOutcome(outcome.results, outcome.writes, outcome.state_root, change)

    def validators_of_epoch(self, view: ReadView, epoch: int) -> ValidatorSet | None:
        return SETS[epoch] if epoch < len(SETS) else None


@dataclass
class EpochLedger:
    store: LedgerStore
    txs: list[SignedTx]  # every committed tx, in log order

    def epoch_of_height(self, height: int) -> int:
        return min((height - 1) // BLOCKS_PER_EPOCH, len(SETS) - 1)


def build_epoch_ledger(path: Path, extra_blocks: int = 2) -> EpochLedger:
    """Blocks of three full epochs plus `extra_blocks` more in the last, all certified."""
    registry = EpochRegistry(GENESIS)
    store = LedgerStore.open(
        path, GENESIS, registry.genesis_writes(), registry.genesis_state_root()
    )
    epoch = 0
    committer = Committer(store, registry, GENESIS)
    parent = ROOT
    txs: list[SignedTx] = []
    heights = BLOCKS_PER_EPOCH * (len(SETS) - 1) + extra_blocks
    for height in range(1, heights + 1):
        batch = [make_tx(len(txs) + i) for i in range(TXS_PER_BLOCK)]
        block = Block(
            chain_id=GENESIS.chain_id,
            epoch=epoch,
            round=Round(height),
            height=Height(height),
            parent_id=BlockId(parent.id),
            proposer=NodeId("KOSCAP"),
            timestamp_ms=GENESIS.genesis_time_ms + height,
            payload=encode_payload(batch),
            qc=ROOT_QC,
        )
        done = committer.apply_block(block, ROOT_QC.encode())
        assert done is not None
        store.save_certificate(height, sign_with(done.header, EPOCH_KEYS[epoch]))
        txs += batch
        parent = block
        if done.validator_change is not None:
            epoch = done.validator_change.epoch
    return EpochLedger(store, txs)
