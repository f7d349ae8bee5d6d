"""The benchmark's proof client: its own process, fetching proofs one at a time.

Two kinds, one run each: inclusion proofs of txs (GetInclusionProof) and state proofs of registry
keys (RegistryService.StateProof against the latest certified header: the answer, the state
tree's path and the certificate, as `kledger verify state` checks them).

Why a process of its own: the figure is the gRPC round trip of GetInclusionProof as one client
sees it; in the bench process it would share the interpreter with the progress bar, the other
channels and whatever the parent does next. Started with "spawn" (no inherited gRPC state).

Rules it keeps: it waits (up to READY_WAIT_S) until the newest sampled tx is provable (its
block's header or a later one is certified) before the clock starts; before the clock starts it
also finds, per tx, an org whose member may read it (a usage report's tx only its reporter and
the orgs paid from it, docs/node.md "Access"), and asks as that org; every reply must carry
the tx it was asked for and an audit path no longer than the tree allows; one call at a time,
each timed with perf_counter from the request to the decoded reply.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as ProcessQueue

import grpc

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.v1 import ledger_pb2, ledger_pb2_grpc, registry_pb2, registry_pb2_grpc

READY_WAIT_S = 30.0
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ProofJob:
    target: str  # host:port of the node's client service
    ca_cert: bytes
    clients: tuple[ClientCert, ...]  # one member per org: inclusion proofs are member tier
    tx_hashes: tuple[bytes, ...]  # spread over the ledger in leaf order; the last is newest
    # With state keys the run fetches state proofs of these instead (after the inclusion run,
    # so the newest tx is provable already; absent keys are proven absent).
    state_keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ProofResult:
    count: int = 0
    tree_size: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    error: str = ""


def _wait_provable(stub: ledger_pb2_grpc.LedgerStub, tx_hash: bytes) -> None:
    deadline = time.monotonic() + READY_WAIT_S
    while True:
        try:
            stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(tx_hash=tx_hash), timeout=CALL_TIMEOUT_S
            )
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # type: ignore[attr-defined]
                return  # provable; only not to this reader
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            time.sleep(0.1)


def fetch_proofs(job: ProofJob) -> ProofResult:
    """Fetch a proof of each of job.tx_hashes (or of each state key), one at a time; never
    raises."""
    if job.state_keys:
        return fetch_state_proofs(job)
    channels = [open_channel(job.target, job.ca_cert, client) for client in job.clients]
    stubs = [ledger_pb2_grpc.LedgerStub(c) for c in channels]  # type: ignore[no-untyped-call]
    try:
        _wait_provable(stubs[0], job.tx_hashes[-1])
        # Untimed: who may read each tx (this also warms the channels and the node's caches).
        readers = [_reader_of(stubs, tx_hash) for tx_hash in job.tx_hashes]
        latencies: list[float] = []
        tree_size = 0
        start = time.perf_counter()
        for tx_hash, stub in zip(job.tx_hashes, readers, strict=True):
            sent = time.perf_counter()
            reply = stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(tx_hash=tx_hash), timeout=CALL_TIMEOUT_S
            )
            latencies.append(time.perf_counter() - sent)
            if (
                hashlib.sha256(reply.leaf).digest() != tx_hash
                or reply.leaf_index >= reply.tree_size
            ):
                return ProofResult(error=f"proof of {tx_hash.hex()} carries another leaf")
            if len(reply.audit_path) > reply.tree_size.bit_length():
                return ProofResult(error=f"proof of {tx_hash.hex()} has a too long audit path")
            tree_size = max(tree_size, int(reply.tree_size))
        elapsed_s = time.perf_counter() - start
        return ProofResult(
            count=len(latencies),
            tree_size=tree_size,
            elapsed_s=elapsed_s,
            latencies_s=latencies,
            cpu_s=time.process_time(),
        )
    except grpc.RpcError as exc:
        return ProofResult(error=f"GetInclusionProof: {exc.code()} {exc.details()}")  # type: ignore[attr-defined]
    finally:
        for channel in channels:
            channel.close()


def fetch_state_proofs(job: ProofJob) -> ProofResult:
    """StateProof of each of job.state_keys, one at a time, as the first member; never raises.
    Each reply must carry one bundle for the asked key and the root it is proven against."""
    channel = open_channel(job.target, job.ca_cert, job.clients[0])
    stub = registry_pb2_grpc.RegistryServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        for key in job.state_keys[: max(1, len(job.state_keys) // 4)]:  # untimed: warm up
            stub.StateProof(registry_pb2.StateProofRequest(key=key), timeout=CALL_TIMEOUT_S)
        latencies: list[float] = []
        start = time.perf_counter()
        for key in job.state_keys:
            sent = time.perf_counter()
            reply = stub.StateProof(registry_pb2.StateProofRequest(key=key), timeout=CALL_TIMEOUT_S)
            latencies.append(time.perf_counter() - sent)
            error = _state_reply_error(key, reply)
            if error:
                return ProofResult(error=error)
        return ProofResult(
            count=len(latencies),
            elapsed_s=time.perf_counter() - start,
            latencies_s=latencies,
            cpu_s=time.process_time(),
        )
    except grpc.RpcError as exc:
        return ProofResult(error=f"StateProof: {exc.code()} {exc.details()}")  # type: ignore[attr-defined]
    finally:
        channel.close()


def _state_reply_error(key: bytes, reply: registry_pb2.QueryReply) -> str:
    """Why `reply` is not a state proof of `key` ("" if it is one)."""
    if len(reply.proofs_json) != 1 or len(reply.state_root) != 32:
        return f"state proof of {key!r}: expected one bundle and a 32-byte root"
    try:
        bundle = json.loads(reply.proofs_json[0])
    except ValueError:
        return f"state proof of {key!r}: the bundle is not JSON"
    if not isinstance(bundle, dict) or bundle.get("key") != key.hex():
        return f"state proof of {key!r} carries another key"
    return ""


def _reader_of(
    stubs: list[ledger_pb2_grpc.LedgerStub], tx_hash: bytes
) -> ledger_pb2_grpc.LedgerStub:
    """The first stub whose member may read the tx's proof (raises its last refusal if none)."""
    for index, stub in enumerate(stubs):
        try:
            stub.GetInclusionProof(
                ledger_pb2.GetInclusionProofRequest(tx_hash=tx_hash), timeout=CALL_TIMEOUT_S
            )
            return stub
        except grpc.RpcError as exc:
            denied = exc.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
            if not denied or index == len(stubs) - 1:
                raise
    raise AssertionError("no stubs")


def run_proof_client(job: ProofJob, out: ProcessQueue[ProofResult]) -> None:
    """Process entry point: fetch the proofs and put one ProofResult on `out`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    out.put(fetch_proofs(job))
