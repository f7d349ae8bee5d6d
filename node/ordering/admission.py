"""The one gate into the mempool, for txs a client submits and txs a peer gossips alike.

Every tx passes the same checks in order of cost, so a flood of duplicates or junk costs no
signature work. Each tx gets its own answer: a refusal names its field and status, and a tx
that hits a bug of ours is answered INTERNAL (logged with its hash) without failing the others
of its batch.

Rules it keeps (docs/design.md §3.1, docs/node.md "Admission"):
- the event loop does the cheap checks (Mempool.screen: size and shape, dedup against the
  mempool and the committed ledger, chain id, capacity) and the mempool's changes; the
  expensive ones (the registry's state check and the Ed25519 signature) run on the
  FairVerifier's worker threads, chunk by chunk, the sources taking turns; survivors are added
  back on the loop, where dedup, capacity and "already committed" are checked again;
- a source is a peer org (its TLS certificate) or a client connection; each has a budget of
  txs in flight (`admission.peer_inflight_txs`, `connection_inflight_txs`, and
  `client_inflight_txs` for all clients): beyond it a client's txs get RESOURCE_EXHAUSTED and
  a peer's batch is dropped and counted ("gossip.over_budget");
- a batch carrying a bad signature throttles its source for `bad_signature_penalty_ms`: its
  queued chunks are dropped, and until the window ends its batches are refused before any
  check (RESOURCE_EXHAUSTED, "client.throttled"; "gossip.throttled"), each after a pause of up
  to `throttled_pause_ms` for a client's call and, for a peer, for the stream that floods: the
  stream that brought the bad signatures, or one the peer opened after offending (the peer's
  older streams, with its consensus messages, are not held). While the peer is on probation
  (it offended in the last few windows) such a stream pauses for a batch over its budget too,
  so the flood cannot burst while its next batch waits to be found bad;
- the batches of one peer are checked in arrival order (their txs keep it in the mempool);
- refusals that mean abuse are logged as one summary line per source and
  `refusal_log_interval_ms` (SummaryLog), never one line per tx.

A client learns every refusal. For gossip, a duplicate or a tx already committed is normal and
skipped quietly; any other refusal means the peer sent what its own admission should have
refused: it is dropped and counted (`kledger_dropped_messages_total{reason="gossip.*"}`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.receipt import OK
from kledger.node.chain.tx import SignedTx, TxBody, decode_tx
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.ordering.mempool import Mempool, StateCheck, check_costly
from kledger.node.ordering.sources import SourceBudgets
from kledger.node.ordering.verifier import Dropped, FairVerifier
from kledger.node.telemetry.logs import SummaryLog
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.node.telemetry.timeline import BlockTimeline

log = logging.getLogger("kledger.admission")

INTERNAL = "INTERNAL"
# Txs per unit of work handed to a verifier thread: small enough that a source's turn is short
# and a throttled source stops within one chunk, large enough that handing over costs little.
VERIFY_CHUNK_TXS = 64
# The field of a refusal that is about the source (throttled, over budget), not the tx.
SOURCE_FIELD = "source"


class StreamRef(Protocol):
    """The peer stream a gossip batch came on (kledger.node.net.peer_transport.InboundStream):
    compared by identity, with the time it opened."""

    @property
    def opened_s(self) -> float: ...


# Streams remembered per peer as having brought bad signatures (the oldest are forgotten).
MAX_OFFENDING_STREAMS = 64


class AdmissionLimits(Protocol):
    """node.json `admission` (kledger.node.config.AdmissionSettings, documented there)."""

    @property
    def verify_threads(self) -> int: ...
    @property
    def peer_inflight_txs(self) -> int: ...
    @property
    def connection_inflight_txs(self) -> int: ...
    @property
    def client_inflight_txs(self) -> int: ...
    @property
    def bad_signature_penalty_ms(self) -> int: ...
    @property
    def refusal_log_interval_ms(self) -> int: ...
    @property
    def throttled_pause_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SubmitResult:
    tx_hash: bytes  # empty when the bytes did not decode to a tx (or were not looked at)
    status: str  # "OK" or a kledger.node.errors.Status name (or INTERNAL for a bug of ours)
    message: str = ""
    field: str = ""  # the refusal's field ("source": throttled or over budget)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @staticmethod
    def refused(tx_hash: bytes, refusal: Refused) -> SubmitResult:
        return SubmitResult(tx_hash, refusal.status.value, refusal.message, refusal.field or "")


@dataclass(frozen=True, slots=True)
class Screened:
    """A tx that passed the cheap checks, at `index` in its batch."""

    index: int
    tx: SignedTx
    body: TxBody
    verify_signature: bool  # False when this node verified this exact tx before


# One answer per screened tx from a verifier thread: None (passed), a refusal, or our bug.
Outcome = Refused | Exception | None


def check_screened(screened: Sequence[Screened], check_state: StateCheck) -> list[Outcome]:
    """On a verifier thread: each tx's registry state check, then its signature. Reads only
    (the committed state, the tx); StoreCorrupt propagates."""
    outcomes: list[Outcome] = []
    for item in screened:
        try:
            check_costly(item.tx, item.body, check_state, verify_signature=item.verify_signature)
            outcomes.append(None)
        except Refused as refusal:
            outcomes.append(refusal)
        except StoreCorrupt:
            raise
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def throttled_refusal(seconds_left: float) -> Refused:
    return Refused(
        Status.RESOURCE_EXHAUSTED,
        f"throttled for {seconds_left:.1f} s more: a recent batch from this source carried "
        "a bad signature",
        SOURCE_FIELD,
    )


def over_budget_refusal(budget_txs: int) -> Refused:
    return Refused(
        Status.RESOURCE_EXHAUSTED,
        f"more than {budget_txs} txs of this source (or of all clients) wait for their "
        "checks; retry later",
        SOURCE_FIELD,
    )


class Admission:
    def __init__(
        self,
        mempool: Mempool,
        genesis: Genesis,
        *,
        is_committed: Callable[[bytes], bool],
        state_check: Callable[[], StateCheck],
        metrics: NodeMetrics,
        on_admitted: Callable[[], None],
        settings: AdmissionLimits,
        verifier: FairVerifier | None = None,
        timeline: BlockTimeline | None = None,
    ) -> None:
        """`state_check()` gives the registry's check bound to the committed state of now (one
        per batch); `on_admitted` runs once after a batch that added anything. `verifier`
        defaults to one of `settings.verify_threads` threads."""
        self._mempool = mempool
        self._genesis = genesis
        self._is_committed = is_committed
        self._state_check = state_check
        self._metrics = metrics
        self._on_admitted = on_admitted
        self._timeline = timeline
        self._pause_s = settings.throttled_pause_ms / 1000
        self._verifier = verifier if verifier is not None else FairVerifier(settings.verify_threads)
        penalty_ms = settings.bad_signature_penalty_ms
        self.peers = SourceBudgets(settings.peer_inflight_txs, penalty_ms)
        self.clients = SourceBudgets(
            settings.connection_inflight_txs, penalty_ms, total_txs=settings.client_inflight_txs
        )
        interval_s = settings.refusal_log_interval_ms / 1000
        self._peer_log = SummaryLog(log, "gossip_txs_refused", "peer", interval_s)
        self._client_log = SummaryLog(log, "client_txs_refused", "client", interval_s)
        self._turns: dict[str, asyncio.Lock] = {}  # one per peer org: its batches in order
        self._offending: dict[str, OrderedDict[StreamRef, None]] = {}
        self._tasks: set[asyncio.Task[int]] = set()

    # -- clients ------------------------------------------------------------------------------

    async def submit(self, source: str, encodings: Sequence[bytes]) -> list[SubmitResult]:
        """A client's txs from one connection (`source`): one answer each, in order. Raises
        Refused (RESOURCE_EXHAUSTED) for the whole batch, after a pause, while the connection
        is throttled: no per-tx work, not even per-tx answers; and for a batch whose bad
        signatures throttled it midway when nothing of it was admitted (the per-tx answers
        would only repeat that)."""
        received = BlockTimeline.now()
        throttled_s = self.clients.throttled_s(source)
        if throttled_s:
            self._metrics.drop("client.throttled", len(encodings))
            refusal = throttled_refusal(throttled_s)
            self._client_log.note(source, "throttled", len(encodings), refusal.message)
            await asyncio.sleep(min(throttled_s, self._pause_s))
            raise refusal
        granted = self.clients.reserve(source, len(encodings))
        over = encodings[granted:]
        if over:
            self._metrics.drop("client.over_budget", len(over))
        refused_over = self._refuse_over_budget(source, over)
        results = await self._admit(source, encodings[:granted], self.clients, local=True)
        if self._timeline is not None:
            self._timeline.client_txs((r.tx_hash for r in results if r.ok), received)
        bad = sum(1 for r in results if r.status == Status.UNAUTHENTICATED.value)
        if bad:
            self._client_log.note(source, "bad_signature", bad, "signature: does not verify")
        unchecked = sum(1 for r in results if r.field == SOURCE_FIELD)
        if unchecked:
            self._metrics.drop("client.throttled", unchecked)
            if not any(r.ok for r in results):
                await asyncio.sleep(self._pause_s)  # as for a call refused at its start
                raise Refused(
                    Status.RESOURCE_EXHAUSTED,
                    f"throttled: {bad} txs of this batch carried a bad signature, "
                    f"{unchecked} were not checked, none was admitted",
                    SOURCE_FIELD,
                )
        return results + refused_over

    def _refuse_over_budget(self, source: str, encodings: Sequence[bytes]) -> list[SubmitResult]:
        if not encodings:
            return []
        refusal = over_budget_refusal(self.clients.per_source_txs)
        self._client_log.note(source, "over_budget", len(encodings), refusal.message)
        return [SubmitResult.refused(b"", refusal)] * len(encodings)

    # -- peers --------------------------------------------------------------------------------

    def gossip(
        self, sender: str, encodings: Sequence[bytes], stream: StreamRef | None = None
    ) -> float:
        """A peer's txs (not to be gossiped again), checked in the background. Never blocks:
        the peer's stream goes on to its next message (consensus messages included). Returns
        how long that stream should pause before reading on: 0.0, or `throttled_pause_ms` for
        a refused batch on a stream that floods, so its sender is held back by flow control
        rather than read and dropped at full speed."""
        if not self._gossip_allowed(sender, len(encodings)):
            return self._pause_s if self._floods(sender, stream) else 0.0
        task = asyncio.get_running_loop().create_task(self._gossip(sender, encodings, stream))
        self._tasks.add(task)
        task.add_done_callback(self._gossip_done)
        return 0.0

    async def admit_gossip(self, sender: str, encodings: Sequence[bytes]) -> int:
        """As `gossip`, waiting for the outcome: how many txs were new."""
        if not self._gossip_allowed(sender, len(encodings)):
            return 0
        return await self._gossip(sender, encodings)

    def _floods(self, sender: str, stream: StreamRef | None) -> bool:
        """Whether `stream` is one of the peer's streams that flood: it brought bad signatures,
        or the peer opened it while on probation."""
        since = self.peers.offending_since(sender)
        if stream is None or since is None:
            return False
        return stream in self._offending.get(sender, ()) or stream.opened_s >= since

    def _gossip_allowed(self, sender: str, count: int) -> bool:
        """Throttle and budget, before any per-tx work; reserves `count` txs when allowed."""
        throttled_s = self.peers.throttled_s(sender)
        if throttled_s:
            self._metrics.drop("gossip.throttled", count)
            self._peer_log.note(sender, "throttled", count, throttled_refusal(throttled_s).message)
            return False
        granted = self.peers.reserve(sender, count)
        if granted < count:
            self.peers.release(sender, granted)
            self._metrics.drop("gossip.over_budget", count)
            self._peer_log.note(
                sender, "over_budget", count, over_budget_refusal(self.peers.per_source_txs).message
            )
            return False
        return True

    async def _gossip(
        self, sender: str, encodings: Sequence[bytes], stream: StreamRef | None = None
    ) -> int:
        """Check a reserved batch after the peer's earlier ones; count what was refused."""
        turn = self._turns.setdefault(sender, asyncio.Lock())
        started = False
        try:
            async with turn:
                started = True  # from here _admit releases the reservation
                results = await self._admit(sender, encodings, self.peers, local=False)
        finally:
            if not started:  # cancelled while an earlier batch had the turn
                self.peers.release(sender, len(encodings))
        admitted = 0
        refused: dict[str, tuple[int, str]] = {}  # cause -> (txs, the last message)
        for result in results:
            if result.ok:
                admitted += 1
                continue
            cause = self._count_gossip_refusal(result)
            if cause is not None:
                refused[cause] = (refused.get(cause, (0, ""))[0] + 1, result.message)
        for cause, (count, message) in refused.items():
            self._peer_log.note(sender, cause, count, message)
        if stream is not None and "bad_signature" in refused:
            offending = self._offending.setdefault(sender, OrderedDict())
            offending[stream] = None
            while len(offending) > MAX_OFFENDING_STREAMS:
                offending.popitem(last=False)
        return admitted

    def _count_gossip_refusal(self, result: SubmitResult) -> str | None:
        """Count a gossiped tx's refusal as its drop reason; returns the cause, or None when
        the refusal is normal (a duplicate, already committed)."""
        if result.status == Status.ALREADY_EXISTS.value:
            return None
        if result.status == INTERNAL:
            self._metrics.drop("gossip.admission_bug")
            return "admission_bug"
        if result.status == Status.UNAUTHENTICATED.value:
            self._metrics.drop("gossip.bad_signature")
            return "bad_signature"
        if result.field == SOURCE_FIELD:
            self._metrics.drop("gossip.throttled")
            return "throttled"
        if result.field == "mempool":
            self._metrics.drop("gossip.mempool_full")
            return "mempool_full"
        self._metrics.drop("gossip.invalid_tx")
        return "invalid_tx"

    def _gossip_done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._metrics.drop("gossip.admission_bug")
            log.error("admission bug on a gossiped batch", exc_info=task.exception())

    # -- both ---------------------------------------------------------------------------------

    async def _admit(
        self, source: str, encodings: Sequence[bytes], budgets: SourceBudgets, *, local: bool
    ) -> list[SubmitResult]:
        """Check `encodings` (already reserved in `budgets`) chunk by chunk: cheap checks here,
        the rest on a verifier thread, survivors added here. Releases the reservation."""
        results: list[SubmitResult] = []
        reserved = len(encodings)
        check = self._state_check()
        try:
            for first in range(0, len(encodings), VERIFY_CHUNK_TXS):
                chunk = encodings[first : first + VERIFY_CHUNK_TXS]
                throttled_s = budgets.throttled_s(source)
                if throttled_s:
                    refusal = throttled_refusal(throttled_s)
                    results += [SubmitResult.refused(b"", refusal)] * (len(encodings) - first)
                    break
                answers = await self._admit_chunk(source, chunk, check, local=local)
                budgets.release(source, len(chunk))
                reserved -= len(chunk)
                results += answers
                if any(r.status == Status.UNAUTHENTICATED.value for r in answers):
                    budgets.penalize(source)
                    self._verifier.drop_queued(source)
        finally:
            budgets.release(source, reserved)
        if any(r.ok for r in results):
            self._on_admitted()
        return results

    async def _admit_chunk(
        self,
        source: str,
        chunk: Sequence[bytes],
        check: StateCheck,
        *,
        local: bool,
    ) -> list[SubmitResult]:
        answers: list[SubmitResult | None] = [None] * len(chunk)
        screened: list[Screened] = []
        for index, data in enumerate(chunk):
            try:
                tx, body = self._mempool.screen(
                    data,
                    self._genesis.chain_id,
                    limits=self._genesis.tx_limits,
                    is_committed=self._is_committed,
                )
            except Refused as refusal:
                answers[index] = SubmitResult.refused(hash_or_empty(data), refusal)
                continue
            except StoreCorrupt:
                raise
            except Exception:
                answers[index] = self._bug(hash_or_empty(data), None)
                continue
            screened.append(Screened(index, tx, body, not self._mempool.is_verified(tx.tx_hash)))
        if screened:
            try:
                outcomes = await self._verifier.run(source, lambda: check_screened(screened, check))
            except Dropped:
                outcomes = [throttled_refusal(self._throttled_s(source))] * len(screened)
            for item, outcome in zip(screened, outcomes, strict=True):
                answers[item.index] = self._settle(item.tx, outcome, local=local)
        assert all(answer is not None for answer in answers)
        return [answer for answer in answers if answer is not None]

    def _settle(self, tx: SignedTx, outcome: Outcome, *, local: bool) -> SubmitResult:
        """Back on the loop: add a tx that passed, or answer why not."""
        if isinstance(outcome, Refused):
            return SubmitResult.refused(tx.tx_hash, outcome)
        if isinstance(outcome, Exception):
            return self._bug(tx.tx_hash, outcome)
        try:
            if self._is_committed(tx.tx_hash):  # committed while it was being checked
                raise Refused(Status.ALREADY_EXISTS, "is already committed (replay)", "tx_hash")
            self._mempool.add(tx, local=local)
        except Refused as refusal:
            return SubmitResult.refused(tx.tx_hash, refusal)
        return SubmitResult(tx.tx_hash, OK)

    def _throttled_s(self, source: str) -> float:
        return max(self.peers.throttled_s(source), self.clients.throttled_s(source))

    def _bug(self, tx_hash: bytes, exc: Exception | None) -> SubmitResult:
        log.error(
            "admission bug: tx %s",
            tx_hash.hex() or "(undecodable)",
            exc_info=exc if exc is not None else True,
        )
        return SubmitResult(tx_hash, INTERNAL, "admission failed on a node bug")

    def flush_logs(self) -> None:
        """Write the refusal summaries that are due (the node calls this every second)."""
        self._peer_log.flush()
        self._client_log.flush()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._verifier.close()


def hash_or_empty(data: bytes) -> bytes:
    """The tx hash of `data`, or b"" when it does not decode to a tx."""
    try:
        return decode_tx(data).tx_hash
    except Refused:
        return b""
