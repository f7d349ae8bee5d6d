"""The asyncio driver of the consensus core: the one task that owns it (docs/style.md §4).

Inputs (peer messages, timers, "the mempool has txs", "sync finished") go into one queue; the run
task takes them one at a time, calls `core.step`, and carries out the effects in order:

- Persist and SaveBlock: gathered and written in ONE synced LevelDB batch, done BEFORE any
  Send/Broadcast/Commit that follows them in the same list — the safety rule that stops a
  restarted node from voting twice in a round or losing the block its lock points at;
- Send / Broadcast: handed to the peer transport, which never blocks (bounded queues);
- SetTimer: `loop.call_later` that feeds TimerFired back into the queue (timers are never
  cancelled; the core ignores stale ones);
- Commit: handed to the commit pipeline (node/commit/pipeline.py), which executes and stores it
  on its worker thread, in order; the driver does not wait, so votes, proposals and timeouts go
  on while a block executes. The store may therefore lag the core's committed root: the payload
  source counts committed-but-unapplied blocks as in flight (node/ordering/proposals.py);
- RequestSync: one background sync at a time; its result comes back as SyncDone.

No protocol logic lives here; the simulator (cluster/sim/simulator.py) drives the same core.
Peer messages beyond `max_inbox_messages` waiting are dropped and counted: a flooding peer costs
bounded memory, and consensus tolerates loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import assert_never

from kledger.consensus.core import (
    Applied,
    Broadcast,
    Commit,
    Core,
    Deliver,
    Effect,
    Equivocation,
    Input,
    PayloadAvailable,
    Persist,
    RequestSync,
    SaveBlock,
    Send,
    SetTimer,
    SyncDone,
    TimerFired,
)
from kledger.consensus.messages import Proposal, decode_message, encode_message
from kledger.consensus.types import Block, DecodeError, Height, QuorumCert
from kledger.consensus.validators import NodeId
from kledger.node.ordering.clock_health import ClockHealth
from kledger.node.telemetry.logs import log_event
from kledger.node.telemetry.timeline import BlockTimeline

log = logging.getLogger("kledger.driver")

# (new root, the QC that commits it, every block applied by the sync) or None.
SyncResult = tuple[Block, QuorumCert, tuple[Block, ...]] | None
# (safety data or None, [(height, block id, block encoding)]) -> durable on return.
PersistConsensus = Callable[[bytes | None, list[tuple[int, bytes, bytes]]], None]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ConsensusDriver:
    def __init__(
        self,
        core: Core,
        *,
        persist: PersistConsensus,
        send: Callable[[NodeId, bytes], None],
        broadcast: Callable[[bytes], None],
        commit: Callable[[Sequence[Block], QuorumCert], None],  # must not block
        sync: Callable[[NodeId, QuorumCert], Awaitable[SyncResult]],
        clock_ms: Callable[[], int] = wall_clock_ms,
        max_inbox_messages: int = 10_000,
        timeline: BlockTimeline | None = None,
    ) -> None:
        self.core = core
        self._persist = persist
        self._send = send
        self._broadcast = broadcast
        self._commit = commit
        self._sync = sync
        self._clock_ms = clock_ms
        self._max_inbox_messages = max_inbox_messages
        self._timeline = timeline
        self._inbox: asyncio.Queue[Input] = asyncio.Queue()
        self._queued_messages = 0
        self._payload_signal_queued = False
        self._sync_task: asyncio.Task[None] | None = None
        self._stopped = False
        self.dropped: dict[str, int] = {}
        self.evidence: dict[str, int] = {}  # equivocations reported by the core, per author
        self.clock = ClockHealth(core.config.max_clock_skew_ms)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # -- inputs -------------------------------------------------------------------------------

    def deliver(self, sender: str, data: bytes) -> None:
        """A consensus message from an authenticated peer. Never raises."""
        if self._queued_messages >= self._max_inbox_messages:
            self._drop("inbox_full")
            return
        try:
            message = decode_message(data)
        except DecodeError:
            self._drop("malformed")
            return
        self._queued_messages += 1
        now_ms = self._clock_ms()
        if isinstance(message, Proposal):
            self.clock.observe(
                sender, message.block.timestamp_ms, now_ms, self.core.validators.contains(sender)
            )
            self._note_proposal(message)
        self._inbox.put_nowait(Deliver(NodeId(sender), message, now_ms))

    def applied(self, height: int) -> None:
        """The node stored every height up to `height` and freed their txs from the mempool
        (consensus Applied). Never dropped: one per committed height, not per peer message."""
        self._inbox.put_nowait(Applied(Height(height), self._clock_ms()))

    def payload_available(self) -> None:
        """The mempool received txs; coalesced so a burst of submissions is one input."""
        if not self._payload_signal_queued:
            self._payload_signal_queued = True
            self._inbox.put_nowait(PayloadAvailable(self._clock_ms()))

    # -- the run task -------------------------------------------------------------------------

    async def run(self) -> None:
        following = self.core.following
        self._apply(self.core.start(self._clock_ms()))
        while not self._stopped:
            event = await self._inbox.get()
            if isinstance(event, Deliver):
                self._queued_messages -= 1
            elif isinstance(event, PayloadAvailable):
                self._payload_signal_queued = False
            self._apply(self.core.step(event))
            if following and not self.core.following:
                # A store that was behind its safety record is back: the core votes again.
                following = False
                log_event(
                    log, "caught_up", height=self.core.committed_height, round=self.core.round
                )

    def stop(self) -> None:
        self._stopped = True
        if self._sync_task is not None:
            self._sync_task.cancel()
        # Wake the run task so it sees the flag.
        self._inbox.put_nowait(PayloadAvailable(self._clock_ms()))

    def _apply(self, effects: list[Effect]) -> None:
        safety: bytes | None = None
        blocks: list[tuple[int, bytes, bytes]] = []
        for effect in effects:
            if isinstance(effect, Persist):
                safety = effect.safety.encode()  # a later Persist supersedes an earlier one
                continue
            if isinstance(effect, SaveBlock):
                block = effect.block
                blocks.append((block.height, block.id, block.encode()))
                continue
            if safety is not None or blocks:
                self._persist(safety, blocks)  # durable before anything leaves the node
                safety, blocks = None, []
            match effect:
                case Send(to=to, message=message):
                    self._send(to, encode_message(message))
                case Broadcast(message=message):
                    if isinstance(message, Proposal):
                        self._note_proposal(message)
                    self._broadcast(encode_message(message))
                case SetTimer(timer=timer, at_ms=at_ms):
                    self._set_timer(timer, at_ms)
                case Commit(blocks=committed, qc=qc):
                    if self._timeline is not None:
                        self._timeline.committed((block.id, block.height) for block in committed)
                    self._commit(committed, qc)
                case RequestSync(peer=peer, target=target):
                    self._start_sync(peer, target)
                case Equivocation():
                    self._log_evidence(effect)
                case _:
                    assert_never(effect)
        if safety is not None or blocks:
            self._persist(safety, blocks)

    def _note_proposal(self, proposal: Proposal) -> None:
        if self._timeline is not None:
            block = proposal.block
            self._timeline.proposal(block.id, block.qc.block_id)

    def _set_timer(self, timer: object, at_ms: int) -> None:
        delay_s = max(0.0, (at_ms - self._clock_ms()) / 1000)
        loop = asyncio.get_running_loop()
        loop.call_later(
            delay_s,
            lambda: self._inbox.put_nowait(TimerFired(timer, self._clock_ms())),  # type: ignore[arg-type]
        )

    def _log_evidence(self, evidence: Equivocation) -> None:
        """Both signed messages go to the log, so an operator can prove the equivocation to
        anyone (each verifies against the author's validator key in genesis.json)."""
        self.evidence[evidence.author] = self.evidence.get(evidence.author, 0) + 1
        log_event(
            log,
            "equivocation",
            logging.WARNING,
            author=evidence.author,
            round=evidence.round,
            kind=type(evidence.second).__name__,
            first=encode_message(evidence.first).hex(),
            second=encode_message(evidence.second).hex(),
        )

    def _start_sync(self, peer: NodeId, target: QuorumCert) -> None:
        if self._sync_task is not None and not self._sync_task.done():
            return  # one sync at a time; the core asks again if it is still behind
        self._sync_task = asyncio.get_running_loop().create_task(self._run_sync(peer, target))

    async def _run_sync(self, peer: NodeId, target: QuorumCert) -> None:
        try:
            result = await self._sync(peer, target)
        except asyncio.CancelledError:
            raise
        except Exception:  # a peer that serves bad blocks must not kill the node
            log.exception("block sync from %s failed", peer)
            self._drop("sync_failed")
            return
        if result is not None:
            root, root_qc, blocks = result
            self._inbox.put_nowait(SyncDone(root, root_qc, self._clock_ms(), blocks))
