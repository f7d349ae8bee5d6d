"""Where the consensus core starts after a restart: its safety data, the newest stored block
that a stored QC commits, the blocks stored above it (pending) and the committed history that
leader reputation reads, all from the store; and the safety record beside the store
(node/storage/safety_record.py), which the store's rollback cannot lower (docs/design.md §6).

Rules kept here:
- The core gets the record's floor whenever there is one: it never votes below it, and it
  follows without voting while the store is behind the height the record names.
- A store behind its record is said at start in one warning line, never silently.
- The core restarts in the epoch its root is in, or in the next one when the root is its
  epoch's marker block (docs/design.md §4.8), whose stored QC may commit a block of the empty
  suffix (never stored) rather than the marker itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from kledger.consensus import (
    Block,
    Height,
    QuorumCert,
    RestoredState,
    Round,
    SafetyData,
    SafetyFloor,
    genesis_block,
)
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.payload import epoch_change_of
from kledger.node.storage.safety_record import SafetyRecord
from kledger.node.storage.store import LedgerStore
from kledger.node.telemetry.logs import log_event

log = logging.getLogger("kledger.restore")


def load_floor(store: LedgerStore, record: SafetyRecord) -> SafetyFloor:
    """The safety floor the core starts with: the record's, raised to what the store holds, and
    saved, so a record exists (and covers the store) before the node sends anything."""
    raw = store.load_safety()
    safety = SafetyData.decode(raw) if raw is not None else None
    height = store.last_height()
    floor = record.load()
    if floor is None:
        if safety is not None or height > 0:
            log_event(
                log,
                "safety_record_missing",
                logging.WARNING,
                path=str(record.path),
                height=height,
                note="an existing store without its safety record: a new record is made from "
                "the store's own safety data, which a lost log tail may have rolled back",
            )
        floor = SafetyFloor(0, Round(0), Round(0), Height(height))
        record.save(floor)
    elif height < floor.committed_height:
        log_event(
            log,
            "store_behind_safety_record",
            logging.WARNING,
            store_height=height,
            record_height=floor.committed_height,
            record_epoch=floor.epoch,
            record_vote_round=floor.highest_vote_round,
            note="the store lost writes it once had (a cut write-ahead log or an old copy): "
            "following peers without voting until the store is back at the record's height",
        )
    if safety is not None:
        record.raise_to(safety, height)
    assert record.floor is not None
    return record.floor


def restored_state(
    store: LedgerStore,
    genesis: Genesis,
    set_of_epoch: Callable[[int], ValidatorSet | None],
    history_blocks: int,
    floor: SafetyFloor | None = None,
) -> tuple[RestoredState, ValidatorSet]:
    """The core's starting point and the set it runs: the newest stored block whose stored QC
    commits it (a crash in the middle of a multi-block commit leaves later blocks whose QC names
    a descendant), else genesis. Blocks stored above it are committed again by consensus and
    skipped as stored."""
    raw = store.load_safety()
    safety = SafetyData.decode(raw) if raw is not None else None
    height = store.last_height()
    while height > 0:
        record = store.block(height)
        assert record is not None, f"store lost height {height}"
        if record.commit_qc:
            block = Block.decode(record.consensus_block)
            qc = QuorumCert.decode(record.commit_qc)
            marker = epoch_change_of(block)
            commits_it = qc.commit is not None and (
                qc.commit.id == block.id
                or (marker is not None and qc.epoch == block.epoch and qc.commit.height > height)
            )
            if commits_it:
                validators = marker if marker is not None else set_of_epoch(block.epoch)
                assert validators is not None, f"no validator set of epoch {block.epoch} stored"
                restored = RestoredState(
                    safety,
                    block,
                    qc,
                    _pending_blocks(store),
                    _committed_below(store, height, history_blocks),
                    floor,
                )
                return restored, validators
        height -= 1
    validators = genesis.validator_set
    root, root_qc = genesis_block(genesis.chain_id, validators, genesis.genesis_time_ms)
    return RestoredState(safety, root, root_qc, _pending_blocks(store), floor=floor), validators


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
