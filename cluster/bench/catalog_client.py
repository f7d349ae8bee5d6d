"""One importing org of `kledger bench-catalog`: a spawned process that imports its files
through the real import path, exactly as `kledger import works|txs FILE --as ORG` does
(bulk.plan_file, then bulk.submit_file with the org's member key, over gRPC with the org's
member certificate, each batch's txs waited for until committed: cluster/client/submit.py),
and samples its progress after every unit.

    run_import(job, ready, go, results)   the process target

Rules kept here: the clock starts only when the parent sets `go` (every importer connected);
times are CLOCK_MONOTONIC (time.monotonic, system-wide on Linux), so the parent can merge the
samples of all importers; a unit's sample is (time, works it committed, txs it committed),
consecutive units decided together (one chunk) collapse into one sample; any exception is
reported as the result's `error`, never lost in a dead process.
"""

from __future__ import annotations

import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Event
from pathlib import Path

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.client.import_cli import open_lines
from kledger.cluster.client.submit import submit_and_wait
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.registry import bulk
from kledger.v1 import ledger_pb2_grpc

COMMIT_TIMEOUT_S = 120.0  # a batch's txs not committed in this long are UNAVAILABLE
SAMPLE_MERGE_S = 0.01  # units decided within this of the last sample extend it
GO_TIMEOUT_S = 600.0
MAX_REFUSAL_EXAMPLES = 5
WORK_TYPES = frozenset({"RegisterWork", "ReviseWork"})


@dataclass(frozen=True, slots=True)
class ImportJob:
    index: int
    org: str
    target: str  # HOST:PORT of the org's own node
    ca_cert: bytes
    client: ClientCert
    key_seed: bytes  # the org's member key
    chain_id: str
    files: tuple[tuple[str, str], ...]  # (path, kind): kind "works" (CWR) or "txs"


@dataclass(slots=True)
class ImportResult:
    index: int
    org: str
    error: str = ""
    files: int = 0
    works: int = 0  # works committed OK
    units: int = 0
    accepted: int = 0
    already: int = 0
    committed_txs: int = 0  # txs with a receipt (committed), whatever their result
    refused: Counter[str] = field(default_factory=Counter)  # the ledger's refusals by status
    not_sent: Counter[str] = field(default_factory=Counter)  # the files' refusals by level
    refusal_examples: list[dict[str, object]] = field(default_factory=list)  # the first few
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, works, txs)
    started_s: float = 0.0
    ended_s: float = 0.0
    submit_s: float = 0.0  # wall time inside submit: SubmitBatch and the commit wait
    batches: int = 0
    cpu_s: float = 0.0  # this process: reading, planning, signing, gRPC client


class Sampler:
    """The on_unit callback: counts what each unit committed, one sample per decided chunk."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result

    def __call__(self, unit: bulk.Unit) -> None:
        r = self.result
        r.units += 1
        txs = sum(1 for tx in unit.txs if tx.height > 0)
        works = sum(
            1 for tx in unit.txs if tx.type in WORK_TYPES and tx.result is not None and tx.result.ok
        )
        r.committed_txs += txs
        r.works += works
        now = time.monotonic()
        if r.samples and now - r.samples[-1][0] < SAMPLE_MERGE_S:
            t, w, n = r.samples[-1]
            r.samples[-1] = (t, w + works, n + txs)
        else:
            r.samples.append((now, works, txs))


def run_import(
    job: ImportJob,
    ready: ProcessQueue[int],
    go: Event,
    results: ProcessQueue[ImportResult],
) -> None:
    result = ImportResult(job.index, job.org)
    try:
        _run(job, ready, go, result)
    except BaseException:  # reported, so the bench names the cause instead of a dead process
        result.error = traceback.format_exc(limit=8)
    results.put(result)


def _run(job: ImportJob, ready: ProcessQueue[int], go: Event, result: ImportResult) -> None:
    key = KeyPair.from_seed(job.key_seed)
    channel = open_channel(job.target, job.ca_cert, job.client)
    try:
        stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]

        def submit(encodings: list[bytes]) -> Sequence[TxResult | Receipt]:
            started = time.monotonic()
            try:
                return submit_and_wait(stub, encodings, COMMIT_TIMEOUT_S)
            finally:
                result.submit_s += time.monotonic() - started
                result.batches += 1

        ready.put(job.index)
        if not go.wait(GO_TIMEOUT_S):
            raise TimeoutError("no start signal")
        cpu_start_s = time.process_time()
        result.started_s = time.monotonic()
        sampler = Sampler(result)
        nonce = time.time_ns() // 1000  # as `kledger import`: from the clock, never a replay
        for path, kind in job.files:
            plan = bulk.plan_file(open_lines(Path(path)), kind, job.org, Path(path).name)
            summary = bulk.submit_file(
                plan, key, job.chain_id, submit, first_nonce=nonce, on_unit=sampler
            )
            signed = summary.accepted + summary.already + len(summary.refused)
            nonce = max(time.time_ns() // 1000, nonce + signed)
            result.files += 1
            result.accepted += summary.accepted
            result.already += summary.already
            result.refused.update(r["status"] for r in summary.refused)
            room = MAX_REFUSAL_EXAMPLES - len(result.refusal_examples)
            result.refusal_examples += [{"file": plan.name, **r} for r in summary.refused[:room]]
            result.not_sent.update(p.level for p in summary.not_sent)
        result.ended_s = time.monotonic()
        result.cpu_s = time.process_time() - cpu_start_s
    finally:
        channel.close()
