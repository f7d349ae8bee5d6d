"""Where the consensus core starts after a restart: its safety data, the newest stored block
that a stored QC commits, the blocks stored above it (pending) and the committed history that
leader reputation reads, all from the store."""

from __future__ import annotations

from kledger.consensus import Block, QuorumCert, RestoredState, SafetyData, genesis_block
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.storage.store import LedgerStore


def restored_state(
    store: LedgerStore, genesis: Genesis, validators: ValidatorSet, history_blocks: int
) -> RestoredState:
    """The core's starting point: the newest stored block whose stored QC commits it (a crash in
    the middle of a multi-block commit leaves later blocks whose QC names a descendant), else
    genesis. Blocks stored above it are committed again by consensus and skipped as stored."""
    raw = store.load_safety()
    safety = SafetyData.decode(raw) if raw is not None else None
    height = store.last_height()
    while height > 0:
        record = store.block(height)
        assert record is not None, f"store lost height {height}"
        if record.commit_qc:
            block = Block.decode(record.consensus_block)
            qc = QuorumCert.decode(record.commit_qc)
            if qc.commit is not None and qc.commit.id == block.id:
                return RestoredState(
                    safety,
                    block,
                    qc,
                    _pending_blocks(store),
                    _committed_below(store, height, history_blocks),
                )
        height -= 1
    root, root_qc = genesis_block(genesis.chain_id, validators, genesis.genesis_time_ms)
    return RestoredState(safety, root, root_qc, _pending_blocks(store))


def _committed_below(store: LedgerStore, height: int, count: int) -> tuple[Block, ...]:
    """The `count` committed blocks below `height` (leader reputation reads their rounds)."""
    blocks = []
    for below in range(max(1, height - count), height):
        record = store.block(below)
        assert record is not None, f"store lost height {below}"
        blocks.append(Block.decode(record.consensus_block))
    return tuple(blocks)


def _pending_blocks(store: LedgerStore) -> tuple[Block, ...]:
    return tuple(Block.decode(data) for data in store.load_pending_blocks())
