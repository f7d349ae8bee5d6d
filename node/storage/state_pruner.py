"""The state pruner: deletes, in the background, the state-tree records that only heights older
than the retention window need (docs/design.md §7.3), so the store's size follows the live
state rather than its history. The transaction log and blocks are never pruned.

Rules kept here:
- The window is `storage.state_retention_blocks` (docs/node.md "State retention"): heights
  last - window .. last stay provable; the pruner never deletes what one of them reads.
- Each pass is one LevelDB batch of at most `batch_records` deletes (LedgerStore.prune_state),
  so a crash at any point leaves whole passes done and the rest for the next start: deletes of
  records no kept height reads are idempotent, and the roots do not change.
- Passes run on a worker thread, driven by the node's event loop (`run`); a pass that raises
  (StoreCorrupt) ends `run`, which stops the node. `close()` waits for the pass under way and
  refuses later ones, so the store is never closed under a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

from kledger.node.storage.store import LedgerStore

# Deletes per batch: large enough that a batch's fixed cost is small, small enough that one
# pass holds the LevelDB write lock for a few milliseconds.
PRUNE_BATCH_RECORDS: Final = 5_000
# How long the pruner sleeps when it has caught up (each commit also wakes it).
PRUNE_IDLE_S: Final = 5.0


def keep_from(last_height: int, retention_blocks: int) -> int:
    """The oldest height that stays provable."""
    return max(0, last_height - retention_blocks)


class StatePruner:
    def __init__(
        self,
        store: LedgerStore,
        retention_blocks: int,
        batch_records: int = PRUNE_BATCH_RECORDS,
    ) -> None:
        assert retention_blocks >= 1 and batch_records >= 1
        self._store = store
        self.retention_blocks = retention_blocks
        self._batch = batch_records
        self._lock = threading.Lock()
        self._closed = False
        self._wake = asyncio.Event()
        self.deleted_records = 0

    def keep_from(self) -> int:
        return keep_from(self._store.last_height(), self.retention_blocks)

    def prune_once(self) -> bool:
        """One pass (one batch). Returns whether more remains to delete."""
        with self._lock:
            if self._closed:
                return False
            deleted, more = self._store.prune_state(self.keep_from(), self._batch)
            self.deleted_records += deleted
            return more

    def prune_all(self) -> None:
        """Passes until nothing older than the window is left (start-up catch-up, tools)."""
        while self.prune_once():
            pass

    def notify(self) -> None:
        """On the loop: a height was committed, the window moved."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            more = await asyncio.to_thread(self.prune_once)
            if not more:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PRUNE_IDLE_S)
                self._wake.clear()

    def close(self) -> None:
        """Wait for the pass under way; no pass starts after this."""
        with self._lock:
            self._closed = True
