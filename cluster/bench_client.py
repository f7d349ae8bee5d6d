"""One benchmark client process: submits its share of the pre-signed txs over SubmitStream and
times each one from submission to the commit of its block.

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
  CLOCK_MONOTONIC is system-wide, so the parent compares these times with its own.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event as ProcessEvent

import grpc
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

from cluster.connect import open_channel
from node.receipt import OK

RETRY_STATUSES = frozenset({"RESOURCE_EXHAUSTED", "UNAVAILABLE"})
ACCEPTED_STATUSES = frozenset({OK, "ALREADY_EXISTS"})
RETRY_PAUSE_S = 0.05
STREAM_TIMEOUT_S = 3_600.0


@dataclass(frozen=True, slots=True)
class Batch:
    node: int
    encodings: tuple[bytes, ...]
    tx_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ClientJob:
    index: int
    targets: tuple[str, ...]  # host:port of each node's client service
    ca_cert: bytes
    batches: tuple[Batch, ...]
    watch_node: int
    from_height: int
    window_txs: int
    timeout_s: float


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


@dataclass(slots=True)
class _Progress:
    condition: threading.Condition = field(default_factory=threading.Condition)
    accepted: int = 0
    committed: int = 0
    commit_time_s: dict[bytes, float] = field(default_factory=dict)
    done: bool = False


def _watch_commits(
    stub: ledger_pb2_grpc.LedgerStub, job: ClientJob, wanted: set[bytes], progress: _Progress
) -> grpc.Future:
    call = stub.StreamCommits(
        ledger_pb2.StreamCommitsRequest(from_height=job.from_height), timeout=STREAM_TIMEOUT_S
    )

    def run() -> None:
        try:
            for block in call:
                now = time.monotonic()
                with progress.condition:
                    for tx_hash in block.tx_hashes:
                        if tx_hash in wanted and tx_hash not in progress.commit_time_s:
                            progress.commit_time_s[tx_hash] = now
                            progress.committed += 1
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
    channels = [open_channel(target, job.ca_cert) for target in job.targets]
    stubs = [ledger_pb2_grpc.LedgerStub(c) for c in channels]  # type: ignore[no-untyped-call]
    wanted = {h for batch in job.batches for h in batch.tx_hashes}
    progress = _Progress()
    submit_time_s: dict[bytes, float] = {}
    refused: dict[str, int] = {}
    retries = 0
    first_submit_s = 0.0
    watcher = _watch_commits(stubs[job.watch_node], job, wanted, progress)
    streams = [_Stream(stub) for stub in stubs]
    error = ""
    try:
        for channel in channels:
            grpc.channel_ready_future(channel).result(timeout=30)
        ready.put(job.index)
        start.wait()
        first_submit_s = time.monotonic()
        deadline = first_submit_s + job.timeout_s
        todo = list(job.batches)
        while todo:
            batch = todo.pop(0)
            with progress.condition:
                while (
                    progress.accepted - progress.committed
                    > max(0, job.window_txs - len(batch.encodings))
                    and not progress.done
                    and time.monotonic() < deadline
                ):
                    progress.condition.wait(0.5)
            sent_s = time.monotonic()
            results = streams[batch.node].submit(batch.encodings)
            assert len(results) == len(batch.encodings), "one result per submitted tx"
            again: list[int] = []
            accepted = 0
            for i, result in enumerate(results):
                if result.status in ACCEPTED_STATUSES:
                    submit_time_s[batch.tx_hashes[i]] = sent_s
                    accepted += 1
                elif result.status in RETRY_STATUSES:
                    again.append(i)
                else:
                    refused[result.status] = refused.get(result.status, 0) + 1
                    wanted.discard(batch.tx_hashes[i])
            with progress.condition:
                progress.accepted += accepted
            if again:
                retries += len(again)
                todo.insert(
                    0,
                    Batch(
                        batch.node,
                        tuple(batch.encodings[i] for i in again),
                        tuple(batch.tx_hashes[i] for i in again),
                    ),
                )
                time.sleep(RETRY_PAUSE_S)
            if time.monotonic() > deadline:
                error = f"timed out after {job.timeout_s}s while submitting"
                break
        with progress.condition:
            while (
                progress.committed < len(submit_time_s)
                and not progress.done
                and time.monotonic() < deadline
            ):
                progress.condition.wait(0.5)
            if progress.committed < len(submit_time_s) and not error:
                error = (
                    f"{len(submit_time_s) - progress.committed} accepted txs not committed "
                    f"within {job.timeout_s}s"
                )
            commit_time_s = dict(progress.commit_time_s)
    except Exception as exc:  # reported to the parent, which stops the run
        error = f"{type(exc).__name__}: {exc}"
        commit_time_s = dict(progress.commit_time_s)
    finally:
        for stream in streams:
            stream.close()
        watcher.cancel()
        for channel in channels:
            channel.close()
    latencies = [commit_time_s[h] - t for h, t in submit_time_s.items() if h in commit_time_s]
    out.put(
        ClientResult(
            index=job.index,
            submitted_txs=len(submit_time_s),
            committed_txs=len(latencies),
            refused=refused,
            latencies_s=latencies,
            first_submit_s=first_submit_s,
            last_commit_s=max(commit_time_s.values(), default=first_submit_s),
            retries=retries,
            cpu_s=time.process_time(),
            error=error,
        )
    )
