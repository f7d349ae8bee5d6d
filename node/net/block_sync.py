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
epoch's last) ends the sync, and the core then starts the next epoch on it (SyncDone), asking
again from there. Each QC is checked with the set of its own epoch (`verify_qc` is the node's
epoch-aware check). The QC that committed a marker may name a block of its empty suffix, which
no store keeps (a round timed out inside the suffix): a verified QC of the marker's epoch that
commits a height above the marker's proves the epoch's committed chain reaches past that
height, so the block at the marker's height on it is the epoch's last; what cannot be checked
without the suffix is that the peer's marker block is that very block. So a marker is applied
only when the run below it is applied and it names exactly the ready next set of this node's
executed state (`ready_marker`): a lying peer can then at worst hand over a marker block with
other header fields, which the next epoch's blocks do not extend (this node stalls; it never
executes another set, and never stops on the peer's bytes).

Blocks are applied through the node's commit pipeline (node/commit/pipeline.py), one at a time
with the consensus commits, on its worker thread: sync and consensus never write at once, and a
height either of them already stored is skipped by the other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from functools import partial

from kledger.consensus import Block, DecodeError, QuorumCert
from kledger.consensus.validators import NodeId, ValidatorSet
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
        ready_marker: Callable[[], ValidatorSet | None] = lambda: None,
    ) -> None:
        self._store = store
        self._pipeline = pipeline
        self._fetch = fetch
        self._verify_qc = verify_qc
        self._on_applied = on_applied
        self._genesis_id = genesis_id  # the consensus genesis block: parent of height 1
        self._ready_marker = ready_marker

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
                    # Nothing past an epoch's end is applied before the next epoch starts.
                    log_event(log, "sync_stopped_at_epoch_end", peer=peer, height=block.height)
                    break
                continue  # not yet proven committed: keep fetching until a QC covers the run
            encoded_qc = qc.encode()
            for queued, data in run:
                marker = epoch_change_of(queued)
                if marker is not None and marker != self._ready_marker():
                    log_event(
                        log,
                        "sync_refused",
                        logging.WARNING,
                        peer=peer,
                        height=queued.height,
                        rule="a marker must name the ready next set of the executed state",
                    )
                    return result  # the blocks applied below it are committed again later
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
        peer stored with the block, if its signatures verify. For a marker block, also a QC of
        its epoch committing a block of its empty suffix (see the module docstring)."""
        if target.commit is not None and target.commit.id == block.id:
            return target
        marker = epoch_change_of(block) is not None
        if marker and self._commits_suffix(target, block):
            return target
        if not synced.commit_qc:
            return None
        try:
            qc = QuorumCert.decode(synced.commit_qc)
        except DecodeError:
            return None
        if qc.commit is None or not self._verify_qc(qc):
            return None
        if qc.commit.id == block.id or (marker and self._commits_suffix(qc, block)):
            return qc
        return None

    @staticmethod
    def _commits_suffix(qc: QuorumCert, marker: Block) -> bool:
        return (
            qc.commit is not None and qc.epoch == marker.epoch and qc.commit.height > marker.height
        )
