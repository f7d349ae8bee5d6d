"""Block sync: a lagging or restarted node fetches committed blocks from a peer's store and
applies them (docs/design.md §4.7).

Trust nothing the peer says. The core hands over a target QC it has verified, which commits
block G. Fetched blocks must extend our last stored block one height at a time, each naming the
previous one's id as parent. A run of fetched blocks is applied only when a QC that verifies under
its epoch's validator set commits the run's last block: either the target itself or the QC the
peer stored with that block. Block ids hash the whole block, payload included, so the parent-id
chain down from a committed block authenticates every block of the run. A peer can withhold
blocks or stop early; it cannot make us apply a block that was not committed.

Epochs (docs/design.md §4.8): a run never crosses an epoch's end. A fetched marker block (the
epoch's last) ends the sync: it is applied once a QC that commits exactly it verifies, and the
core then starts the next epoch on it (SyncDone), asking again from there. Each QC is checked
with the set of its own epoch (`verify_qc` is the node's epoch-aware check).

Blocks are applied through the node's commit pipeline (node/commit/pipeline.py), one at a time
with the consensus commits, on its worker thread: sync and consensus never write at once, and a
height either of them already stored is skipped by the other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

from kledger.consensus import Block, DecodeError, QuorumCert
from kledger.consensus.validators import NodeId
from kledger.node.chain.payload import epoch_change_of
from kledger.node.commit.committer import CommittedHeight
from kledger.node.commit.pipeline import CommitPipeline
from kledger.node.net.peer_transport import SyncedBlockData
from kledger.node.ordering.driver import SyncResult
from kledger.node.storage.store import LedgerStore
from kledger.node.telemetry.logs import log_event

log = logging.getLogger("kledger.sync")

FetchBlocks = Callable[[str, int, int], AsyncIterator[SyncedBlockData]]
# Called for every block sync applies, with the header certificate bytes the peer sent (or b"").
OnApplied = Callable[[CommittedHeight, bytes], None]


class BlockSync:
    def __init__(
        self,
        *,
        store: LedgerStore,
        pipeline: CommitPipeline,
        fetch: FetchBlocks,
        verify_qc: Callable[[QuorumCert], bool],
        on_applied: OnApplied,
        genesis_id: bytes,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._fetch = fetch
        self._verify_qc = verify_qc
        self._on_applied = on_applied
        self._genesis_id = genesis_id  # the consensus genesis block: parent of height 1

    async def sync(self, peer: NodeId, target: QuorumCert) -> SyncResult:
        """Apply what `peer` serves up to the block `target` commits; returns the newest applied
        block with the QC that commits it (the core's new root) and every block applied, or None
        if nothing was."""
        goal = target.commit
        if goal is None or goal.height <= self._store.last_height():
            return None
        expected_height = self._store.last_height() + 1
        previous_id = self._genesis_id
        if expected_height > 1:
            last = self._store.block(expected_height - 1)
            assert last is not None, "the store always holds its last height"
            previous_id = Block.decode(last.consensus_block).id
        run: list[tuple[Block, SyncedBlockData]] = []
        applied: list[Block] = []
        result: SyncResult = None
        async for synced in self._fetch(peer, expected_height, goal.height):
            block = self._decoded(synced)
            if block is None or (block.height, block.parent_id) != (expected_height, previous_id):
                log_event(log, "sync_refused", logging.WARNING, peer=peer, height=synced.height)
                break
            run.append((block, synced))
            previous_id, expected_height = block.id, expected_height + 1
            qc = self._committing_qc(block, synced, target)
            ends_epoch = epoch_change_of(block) is not None
            if qc is None:
                if ends_epoch:
                    # Nothing past an epoch's end is fetched before the next epoch starts; a
                    # marker whose stored QC commits a suffix block (not stored) is left to
                    # consensus (EpochRequest), which learns the ending certificate.
                    log_event(log, "sync_stopped_at_epoch_end", peer=peer, height=block.height)
                    break
                continue  # not yet proven committed: keep fetching until a QC covers the run
            encoded_qc = qc.encode()
            for queued, data in run:
                # Announced under the pipeline's lock, before any other block is written.
                announce = partial(self._announce, certificate=data.certificate)
                await self._pipeline.apply_block(queued, encoded_qc, announce)
                applied.append(queued)
            run.clear()
            result = (block, qc, tuple(applied))
            if ends_epoch:
                break  # the core starts the next epoch on this block, then syncs again
        return result

    def _announce(self, committed: CommittedHeight, *, certificate: bytes) -> None:
        self._on_applied(committed, certificate)

    @staticmethod
    def _decoded(synced: SyncedBlockData) -> Block | None:
        try:
            return Block.decode(synced.consensus_block)
        except DecodeError:
            return None

    def _committing_qc(
        self, block: Block, synced: SyncedBlockData, target: QuorumCert
    ) -> QuorumCert | None:
        """A QC that commits exactly `block`: the target (verified by the core) or the QC the
        peer stored with the block, if its signatures verify."""
        if target.commit is not None and target.commit.id == block.id:
            return target
        if not synced.commit_qc:
            return None
        try:
            qc = QuorumCert.decode(synced.commit_qc)
        except DecodeError:
            return None
        if qc.commit is None or qc.commit.id != block.id or not self._verify_qc(qc):
            return None
        return qc
