"""Where a block's submit-to-commit time goes on this node: the moments it sees each step of a
block's life, observed as phase histograms when the block is announced (docs/node.md
"Metrics", docs/bench.md "Where the latency goes"; issue #12 point 4).

Steps, on this node's monotonic clock:
- `proposed`: the block's proposal reached the driver (the leader: it made it);
- `certified`: the first proposal that carries a QC for it (its child's) reached the driver, or
  the leader made that child; a QC the node forms from votes is proposed at once, so that is
  the moment it is known here;
- `committed`: the core's Commit effect named it (the 2-chain rule: its child is certified);
- `executing` / `executed`: the commit worker took it / its synced write returned;
- `announced`: receipts, mempool, certificate and commit stream were told.
Per tx submitted by a client to this node: `received` (the SubmitBatch/SubmitStream call
reached admission) and `admitted` (admission answered).

Phases (the `phase` label of kledger_block_phase_seconds, one observation per committed
block, and of kledger_tx_phase_seconds, one per client tx):
  block: proposal_to_certified, certified_to_committed, commit_queue, execute, announce
  tx:    admission, admitted_to_proposal, proposal_to_announced, received_to_announced

Bounded: at most MAX_TRACKED_BLOCKS blocks and MAX_TRACKED_TXS txs are remembered; the oldest
are forgotten first (a block lost in a view change never commits; a tx refused later, or
committed through another node's proposal while this one restarted, never shows). Costs a dict
entry per tx and one histogram observation per tx and phase.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

MAX_TRACKED_BLOCKS = 1_024
MAX_TRACKED_TXS = 200_000  # twice the default mempool.max_txs
# Seconds: from a fast local round (1 ms) to a view change (several round timeouts).
BUCKETS_S = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
    10.0,
)
BLOCK_PHASES = (
    "proposal_to_certified",
    "certified_to_committed",
    "commit_queue",
    "execute",
    "announce",
)
TX_PHASES = ("admission", "admitted_to_proposal", "proposal_to_announced", "received_to_announced")


@dataclass(slots=True)
class _BlockSteps:
    proposed: float | None = None
    certified: float | None = None
    committed: float | None = None
    executing: float | None = None
    executed: float | None = None


@dataclass(slots=True)
class _TxSteps:
    received: float
    admitted: float


class BlockTimeline:
    def __init__(self, org: str, registry: CollectorRegistry) -> None:
        block = Histogram(
            "kledger_block_phase_seconds",
            "per committed block, the time between two steps of its life on this node",
            ("org", "phase"),
            registry=registry,
            buckets=BUCKETS_S,
        )
        tx = Histogram(
            "kledger_tx_phase_seconds",
            "per tx a client submitted to this node, the time between two steps of its life",
            ("org", "phase"),
            registry=registry,
            buckets=BUCKETS_S,
        )
        self._block_phase = {p: block.labels(org=org, phase=p) for p in BLOCK_PHASES}
        self._tx_phase = {p: tx.labels(org=org, phase=p) for p in TX_PHASES}
        self._blocks: OrderedDict[bytes, _BlockSteps] = OrderedDict()
        self._by_height: dict[int, bytes] = {}
        self._txs: OrderedDict[bytes, _TxSteps] = OrderedDict()

    @staticmethod
    def now() -> float:
        """This timeline's clock (the `received` argument of `client_txs`)."""
        return time.monotonic()

    def _steps(self, block_id: bytes) -> _BlockSteps:
        steps = self._blocks.get(block_id)
        if steps is None:
            steps = self._blocks[block_id] = _BlockSteps()
            if len(self._blocks) > MAX_TRACKED_BLOCKS:
                self._blocks.popitem(last=False)
        return steps

    # -- consensus (the driver) ----------------------------------------------------------------

    def proposal(self, block_id: bytes, parent_id: bytes) -> None:
        """A proposal of `block_id` reached the driver or left it: it is proposed, and the
        parent its QC names is certified."""
        now = self.now()
        steps = self._steps(block_id)
        if steps.proposed is None:
            steps.proposed = now
        parent = self._blocks.get(parent_id)
        if parent is not None and parent.certified is None:
            parent.certified = now

    def committed(self, blocks: Iterable[tuple[bytes, int]]) -> None:
        """The core committed these (block id, height)."""
        now = self.now()
        for block_id, height in blocks:
            self._steps(block_id).committed = now
            self._by_height[height] = block_id
        if len(self._by_height) > MAX_TRACKED_BLOCKS:  # heights the pipeline never announced
            for height in sorted(self._by_height)[: len(self._by_height) - MAX_TRACKED_BLOCKS]:
                del self._by_height[height]

    # -- the commit pipeline -------------------------------------------------------------------

    def executing(self, height: int) -> None:
        steps = self._at(height)
        if steps is not None:
            steps.executing = self.now()

    def executed(self, height: int) -> None:
        steps = self._at(height)
        if steps is not None:
            steps.executed = self.now()

    def announced(self, height: int, tx_hashes: Iterable[bytes]) -> None:
        """The height is announced: observe its phases and its client txs'; forget them."""
        now = self.now()
        block_id = self._by_height.pop(height, None)
        steps = self._blocks.pop(block_id, None) if block_id is not None else None
        proposed = steps.proposed if steps is not None else None
        if steps is not None:
            marks: tuple[float | None, ...] = (
                steps.proposed,
                steps.certified,
                steps.committed,
                steps.executing,
                steps.executed,
                now,
            )
            for phase, start, end in zip(BLOCK_PHASES, marks, marks[1:], strict=False):
                if start is not None and end is not None and end >= start:
                    self._block_phase[phase].observe(end - start)
        children = self._tx_phase
        for tx_hash in tx_hashes:
            tx = self._txs.pop(tx_hash, None)
            if tx is None:
                continue  # not submitted here, or forgotten
            children["admission"].observe(tx.admitted - tx.received)
            children["received_to_announced"].observe(now - tx.received)
            if proposed is not None and proposed >= tx.admitted:
                children["admitted_to_proposal"].observe(proposed - tx.admitted)
                children["proposal_to_announced"].observe(now - proposed)

    def _at(self, height: int) -> _BlockSteps | None:
        block_id = self._by_height.get(height)
        return self._blocks.get(block_id) if block_id is not None else None

    # -- admission -----------------------------------------------------------------------------

    def client_txs(self, tx_hashes: Iterable[bytes], received: float) -> None:
        """Txs a client submitted here, admitted now (they had reached admission at
        `received`, on this clock: `now()`)."""
        admitted = self.now()
        for tx_hash in tx_hashes:
            self._txs[tx_hash] = _TxSteps(received, admitted)
        while len(self._txs) > MAX_TRACKED_TXS:
            self._txs.popitem(last=False)
