"""One benchmark client process: submits its share of the txs over SubmitStream and times each
one from submission to the commit of its block.

Rules it keeps:
- it is its own OS process (started with the "spawn" method, so no gRPC state is inherited from
  the parent) and touches nothing but the nodes' client ports;
- it connects, reports ready, and sends nothing until the parent's start event: connection set-up
  is outside the measured time;
- batches go round-robin to the nodes the parent assigned them, one open SubmitStream per node;
- at most `window_txs` accepted txs are uncommitted at a time, so the cluster is kept busy without
  the latency figure measuring only the queue the client built;
- a refusal that means "later" (RESOURCE_EXHAUSTED, UNAVAILABLE) is retried after a pause; any
  other refusal is counted by status and that tx is not waited for;
- commit times come from one StreamCommits subscription (the block's arrival at this client);
  CLOCK_MONOTONIC is system-wide, so the parent compares these times with its own;
- soak mode (`ClientJob.soak`): no pre-signed batches; the client signs its songs one batch ahead
  of need (the next batch is signed while the window is full, before the cluster asks for it)
  and submits for `soak.duration_s`, then waits for what is in flight. Memory stays flat over
  any duration: a tx's timestamps are dropped once its latency is taken, and only a bounded,
  evenly spread sample of committed tx hashes is kept for the parent's receipts and proofs.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event as ProcessEvent

import grpc

from kledger.cluster.bench.workload import sign_songs
from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import OK
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

RETRY_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})
ACCEPTED_STATUSES = frozenset({OK, "ALREADY_EXISTS"})
RETRY_PAUSE_S = 0.05
STREAM_TIMEOUT_S = 24 * 3_600.0
# Committed tx hashes a client hands back (evenly spread over what it committed).
MAX_SAMPLED_HASHES = 4_096
# A paced batch leaving this much after its slot counts as late.
LATE_AFTER_S = 0.05


@dataclass(frozen=True, slots=True)
class Batch:
    node: int
    encodings: tuple[bytes, ...]
    tx_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SoakWork:
    """What a soak client signs: global batch numbers index, index + clients, ... each of
    `songs_per_batch` songs numbered from `first_song`, sent to node (batch number mod nodes),
    as the pre-signed load deals them."""

    chain_id: str
    client_seeds: tuple[tuple[str, bytes], ...]  # (org, client key seed)
    first_song: int
    songs_per_batch: int
    clients: int
    nodes: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class ClientJob:
    index: int
    targets: tuple[str, ...]  # host:port of each node's client service
    ca_cert: bytes
    client: ClientCert  # the member certificate the job shows on the client port
    batches: tuple[Batch, ...]
    watch_node: int
    from_height: int
    window_txs: int
    timeout_s: float
    soak: SoakWork | None = None
    # Paced mode (`kledger bench --rate`): this client's share of the offered rate; batch k is
    # sent no earlier than k batches' worth of that rate after the start (0: as fast as the
    # window allows). The window still caps what is in flight.
    rate_tx_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClientResult:
    index: int
    submitted_txs: int
    committed_txs: int
    refused: dict[str, int]
    latencies_s: list[float]
    first_submit_s: float  # CLOCK_MONOTONIC
    last_commit_s: float
    retries: int
    cpu_s: float
    error: str = ""
    commits_per_s: dict[int, int] = field(default_factory=dict)  # int(monotonic s) -> txs
    sampled_hashes: list[bytes] = field(default_factory=list)  # committed, evenly spread
    # Paced mode: batches sent later than their schedule (the window was full or the client
    # itself fell behind), and the worst lag: a paced run whose lag grows measured no rate.
    late_batches: int = 0
    max_lag_s: float = 0.0


@dataclass(slots=True)
class _Progress:
    condition: threading.Condition = field(default_factory=threading.Condition)
    wanted: set[bytes] = field(default_factory=set)
    accepted: int = 0
    committed: int = 0
    commit_time_s: dict[bytes, float] = field(default_factory=dict)
    commits_per_s: dict[int, int] = field(default_factory=dict)
    done: bool = False


class _Sample:
    """An evenly spread sample of at most 2 * limit items of a stream of unknown length: keep
    every stride-th item; when the sample doubles the limit, drop every other one and double
    the stride."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._stride = 1
        self._seen = 0
        self.items: list[bytes] = []

    def add(self, item: bytes) -> None:
        if self._seen % self._stride == 0:
            self.items.append(item)
            if len(self.items) >= 2 * self._limit:
                self.items = self.items[::2]
                self._stride *= 2
        self._seen += 1


def _watch_commits(
    stub: ledger_pb2_grpc.LedgerStub, job: ClientJob, progress: _Progress
) -> grpc.Future:
    call = stub.StreamCommits(
        ledger_pb2.StreamCommitsRequest(from_height=job.from_height), timeout=STREAM_TIMEOUT_S
    )

    def run() -> None:
        try:
            for block in call:
                now = time.monotonic()
                with progress.condition:
                    seen = 0
                    for tx_hash in block.tx_hashes:
                        if tx_hash in progress.wanted and tx_hash not in progress.commit_time_s:
                            progress.commit_time_s[tx_hash] = now
                            seen += 1
                    if seen:
                        progress.committed += seen
                        second = int(now)
                        progress.commits_per_s[second] = (
                            progress.commits_per_s.get(second, 0) + seen
                        )
                    progress.condition.notify_all()
        except grpc.RpcError:
            pass  # cancelled when this client is done, or the node went away
        finally:
            with progress.condition:
                progress.done = True
                progress.condition.notify_all()

    threading.Thread(target=run, name="commits", daemon=True).start()
    return call  # type: ignore[no-any-return]


class _Stream:
    """One SubmitStream to one node, used in lockstep: a request out, its response back."""

    def __init__(self, stub: ledger_pb2_grpc.LedgerStub) -> None:
        self._requests: queue.Queue[ledger_pb2.SubmitBatchRequest | None] = queue.Queue()
        self._responses: Iterator[ledger_pb2.SubmitBatchResponse] = stub.SubmitStream(
            self._pending(), timeout=STREAM_TIMEOUT_S
        )

    def _pending(self) -> Iterator[ledger_pb2.SubmitBatchRequest]:
        while (request := self._requests.get()) is not None:
            yield request

    def submit(self, encodings: tuple[bytes, ...]) -> list[ledger_pb2.TxSubmitResult]:
        self._requests.put(ledger_pb2.SubmitBatchRequest(txs=list(encodings)))
        return list(next(self._responses).results)

    def close(self) -> None:
        self._requests.put(None)


def _soak_batches(job: ClientJob, work: SoakWork) -> Iterator[Batch]:
    keys = {org: KeyPair.from_seed(seed) for org, seed in work.client_seeds}
    number = job.index
    while True:
        first = work.first_song + number * work.songs_per_batch
        songs = sign_songs(work.chain_id, keys, first, work.songs_per_batch)
        yield Batch(
            node=number % work.nodes,
            encodings=tuple(e for song in songs for e in song.encodings),
            tx_hashes=tuple(h for song in songs for h in song.tx_hashes),
        )
        number += work.clients


class _Pacer:
    """Open-loop pacing for `--rate`: the schedule is fixed from the start (batch k at
    k * batch / rate), so a slow cluster shows up as lag and latency, never as a lower offered
    rate that hides it."""

    def __init__(self, start_s: float, rate_tx_per_s: float) -> None:
        self._rate = rate_tx_per_s
        self._due_s = start_s
        self._scheduled_s = start_s
        self.late_batches = 0
        self.max_lag_s = 0.0

    def wait_turn(self, txs: int) -> None:
        if self._rate <= 0:
            return
        pause = self._due_s - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        self._scheduled_s = self._due_s
        self._due_s += txs / self._rate

    def sent(self) -> None:
        """The batch waited its turn and the window: how late it leaves against its slot."""
        if self._rate <= 0:
            return
        lag = time.monotonic() - self._scheduled_s
        if lag > LATE_AFTER_S:
            self.late_batches += 1
        self.max_lag_s = max(self.max_lag_s, lag)


class _Submitter:
    """The submitting side of one client: window, retries, latency bookkeeping."""

    def __init__(self, job: ClientJob, progress: _Progress, streams: list[_Stream]) -> None:
        self.job = job
        self.progress = progress
        self.streams = streams
        self.submit_time_s: dict[bytes, float] = {}
        self.latencies_s: list[float] = []
        self.sample = _Sample(MAX_SAMPLED_HASHES // 2)
        self.refused: dict[str, int] = {}
        self.retries = 0
        self.submitted = 0
        self.last_commit_s = 0.0

    def settle(self) -> None:
        """Turn every tx both submitted and seen committed into a latency, and forget it."""
        progress = self.progress
        with progress.condition:
            done = [(h, t) for h, t in progress.commit_time_s.items() if h in self.submit_time_s]
            for tx_hash, _ in done:
                del progress.commit_time_s[tx_hash]
                progress.wanted.discard(tx_hash)
        for tx_hash, committed_s in done:
            self.latencies_s.append(committed_s - self.submit_time_s.pop(tx_hash))
            self.last_commit_s = max(self.last_commit_s, committed_s)
            self.sample.add(tx_hash)

    def wait_window(self, batch_txs: int, deadline_s: float) -> None:
        progress = self.progress
        with progress.condition:
            while (
                progress.accepted - progress.committed > max(0, self.job.window_txs - batch_txs)
                and not progress.done
                and time.monotonic() < deadline_s
            ):
                progress.condition.wait(0.5)

    def send(self, batch: Batch) -> Batch | None:
        """Submit one batch; returns the txs to retry later (None if none)."""
        with self.progress.condition:
            self.progress.wanted.update(batch.tx_hashes)
        sent_s = time.monotonic()
        results = self.streams[batch.node].submit(batch.encodings)
        assert len(results) == len(batch.encodings), "one result per submitted tx"
        again: list[int] = []
        accepted = 0
        refused: list[bytes] = []
        for i, result in enumerate(results):
            if result.status in ACCEPTED_STATUSES:
                self.submit_time_s[batch.tx_hashes[i]] = sent_s
                accepted += 1
            elif result.status in RETRY_STATUSES:
                again.append(i)
            else:
                self.refused[result.status] = self.refused.get(result.status, 0) + 1
                refused.append(batch.tx_hashes[i])
        self.submitted += accepted
        with self.progress.condition:
            self.progress.accepted += accepted
            self.progress.wanted.difference_update(refused)
        if not again:
            return None
        self.retries += len(again)
        return Batch(
            batch.node,
            tuple(batch.encodings[i] for i in again),
            tuple(batch.tx_hashes[i] for i in again),
        )

    def wait_committed(self, deadline_s: float) -> str:
        """Wait until every accepted tx is seen committed; an error message if not."""
        progress = self.progress
        with progress.condition:
            while (
                progress.committed < progress.accepted
                and not progress.done
                and time.monotonic() < deadline_s
            ):
                progress.condition.wait(0.5)
            missing = progress.accepted - progress.committed
        self.settle()
        if missing > 0:
            return f"{missing} accepted txs not committed within {self.job.timeout_s}s"
        return ""


def run_client(
    job: ClientJob,
    ready: ProcessQueue[int],
    start: ProcessEvent,
    out: ProcessQueue[ClientResult],
) -> None:
    """Process entry point: connect, report ready, wait for start, submit, report a
    ClientResult on `out` (also on failure, with `error` set)."""
    # Ctrl-C reaches the whole process group; the parent stops the run and terminates clients.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channels = [open_channel(target, job.ca_cert, job.client) for target in job.targets]
    stubs = [ledger_pb2_grpc.LedgerStub(c) for c in channels]  # type: ignore[no-untyped-call]
    progress = _Progress()
    if job.soak is None:
        progress.wanted = {h for batch in job.batches for h in batch.tx_hashes}
    watcher = _watch_commits(stubs[job.watch_node], job, progress)
    streams = [_Stream(stub) for stub in stubs]
    submitter = _Submitter(job, progress, streams)
    first_submit_s = 0.0
    error = ""
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)
        source: Iterator[Batch] = (
            iter(job.batches) if job.soak is None else _soak_batches(job, job.soak)
        )
        upcoming = next(source, None)  # signed ahead of need (soak mode signs here)
        ready.put(job.index)
        start.wait()
        first_submit_s = time.monotonic()
        submit_until_s = first_submit_s + (job.soak.duration_s if job.soak else job.timeout_s)
        deadline_s = first_submit_s + job.timeout_s + (job.soak.duration_s if job.soak else 0)
        retry: deque[Batch] = deque()
        pacer = _Pacer(first_submit_s, job.rate_tx_per_s)
        while (retry or upcoming is not None) and time.monotonic() < submit_until_s:
            if retry:
                batch = retry.popleft()
            else:
                assert upcoming is not None
                batch, upcoming = upcoming, None
                pacer.wait_turn(len(batch.encodings))
            if upcoming is None and not retry:
                upcoming = next(source, None)  # while the window may be full anyway
            submitter.wait_window(len(batch.encodings), deadline_s)
            pacer.sent()
            again = submitter.send(batch)
            if again is not None:
                retry.append(again)
                time.sleep(RETRY_PAUSE_S)
            submitter.settle()
        if job.soak is None and (retry or upcoming is not None):
            error = f"timed out after {job.timeout_s}s while submitting"
        error = submitter.wait_committed(deadline_s) or error
    except Exception as exc:  # reported to the parent, which stops the run
        error = f"{type(exc).__name__}: {exc}"
    finally:
        for stream in streams:
            stream.close()
        watcher.cancel()
        for channel in channels:
            channel.close()
    submitter.settle()
    with progress.condition:
        commits_per_s = dict(progress.commits_per_s)
    out.put(
        ClientResult(
            index=job.index,
            submitted_txs=submitter.submitted,
            committed_txs=len(submitter.latencies_s),
            refused=submitter.refused,
            latencies_s=submitter.latencies_s,
            first_submit_s=first_submit_s,
            last_commit_s=submitter.last_commit_s or first_submit_s,
            retries=submitter.retries,
            cpu_s=time.process_time(),
            error=error,
            commits_per_s=commits_per_s,
            sampled_hashes=submitter.sample.items,
            late_batches=pacer.late_batches,
            max_lag_s=pacer.max_lag_s,
        )
    )
