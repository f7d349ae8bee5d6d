"""Applies committed blocks to the store on one dedicated worker thread, so that the event loop
keeps serving consensus messages, gossip and client RPCs while a block executes
(docs/design.md §3.4; the execution itself is node/commit/committer.py).

Rules it keeps:
- One block at a time, through one door: consensus commits (queued by `submit` in the core's
  commit order and taken by the one `run` task) and block sync both go through `apply_block`,
  whose lock admits one block until it is written AND announced. The committer skips a block
  that is already stored (same id), so the two may carry the same heights; each height is
  written, and announced, exactly once.
- Durable before announced: the worker returns only after the block's synced WriteBatch was
  written; `announce` (header signature, certificate state snapshot, mempool, receipt waiters)
  then runs on the loop before the next block starts, so it sees the store at exactly that
  height. Readers that ask the store directly (GetTx, StreamCommits, GetStatus) cannot see a
  height earlier either: LevelDB publishes a synced batch only after its sync, and the store's
  tip moves after the batch.
- One writer of the store's in-memory tip: only the worker thread executes and installs blocks
  (LedgerStore last header, MerkleLog size + frontier, each replaced by one reference
  assignment after the batch was written). Readers on the loop read LevelDB (safe under
  concurrent writes; a batch becomes visible whole, after its sync) and those published
  references; the registry keeps no state of its own between calls.
- The GIL: the worker adds no CPU; the loop gets the GIL back within the interpreter's switch
  interval (default 5 ms, kept: 1 ms and 0.5 ms measured no lower loop lag, see the commit
  that added this module) and whenever the worker waits on LevelDB.
- Shutdown: `close` never starts another block and waits for a running one to finish its write.
  A kill -9 at any moment still leaves whole blocks only (one synced batch per block).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kledger.consensus.types import Block, QuorumCert
from kledger.node.commit.committer import CommittedHeight, Committer
from kledger.node.telemetry.timeline import BlockTimeline

# Runs on the loop for each height written, before the next block starts.
Announce = Callable[[CommittedHeight], None]


class CommitPipelineClosed(RuntimeError):
    """A block was handed over after `close`; the node is stopping."""


class CommitPipeline:
    def __init__(self, committer: Committer, timeline: BlockTimeline | None = None) -> None:
        self._committer = committer
        self._timeline = timeline
        # One thread: blocks must execute in order against the state their parent left.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kledger-commit")
        self._commits: asyncio.Queue[tuple[tuple[Block, ...], QuorumCert]] = asyncio.Queue()
        self._one_block = asyncio.Lock()
        self._closed = False

    @property
    def queued_commits(self) -> int:
        """Commits handed over by consensus and not taken by the run task yet."""
        return self._commits.qsize()

    def submit(self, blocks: Sequence[Block], qc: QuorumCert) -> None:
        """A Commit effect of the consensus core: applied later, in submission order. Never
        blocks, so the driver goes on with its next input at once."""
        if self._closed:
            return  # stopping: the blocks stay committed in consensus and are applied on restart
        self._commits.put_nowait((tuple(blocks), qc))

    async def run(self, announce: Announce, after_commit: Callable[[], None]) -> None:
        """The one task that applies consensus commits; `after_commit` runs after each one."""
        while True:
            blocks, qc = await self._commits.get()
            # The QC names the last block; earlier blocks of the batch are proven by the
            # parent-id chain down from it, so each stores the same QC (a restart after a crash
            # in the middle of a batch resumes from the last block whose QC names it).
            commit_qc = qc.encode()
            for block in blocks:
                await self.apply_block(block, commit_qc, announce)
            after_commit()

    async def apply_block(
        self, block: Block, commit_qc: bytes, announce: Announce
    ) -> CommittedHeight | None:
        """Execute and store one committed block on the worker, then `announce` it on the loop;
        None if the store already held it. Raises what the committer raises (SafetyBroken, our
        own assertion errors)."""
        async with self._one_block:
            if self._closed:
                raise CommitPipelineClosed("the node is stopping")
            if self._timeline is not None:
                self._timeline.executing(block.height)
            job = self._worker.submit(self._committer.apply_block, block, commit_qc)
            # If this task is cancelled while the job runs, the job still finishes its write
            # (a thread cannot be interrupted) and `close` waits for it; if the job has not
            # started yet, the cancellation reaches it and it never starts.
            committed = await asyncio.wrap_future(job)
            if committed is not None:
                announce(committed)
            return committed

    async def close(self) -> None:
        """Start no more blocks; return once a running one has finished its write."""
        self._closed = True
        await asyncio.to_thread(self._worker.shutdown, wait=True, cancel_futures=True)
