"""Submitting signed txs and waiting for their receipts: one helper for every client (the tx,
import and demo commands). Batches go in one SubmitBatch call; refusals come back at once with
their status; accepted txs are waited for until committed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

from kledger.cluster.client.connect import channel_from_args
from kledger.node.chain.receipt import OK, Receipt, TxResult
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

Submit = Callable[[list[bytes]], Sequence[TxResult | Receipt]]
DEFAULT_COMMIT_TIMEOUT_S = 60.0


def submit_and_wait(
    stub: ledger_pb2_grpc.LedgerStub,
    encodings: Sequence[bytes],
    timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
) -> list[TxResult | Receipt]:
    """One result per tx, in order: the admission refusal (a TxResult), or the committed
    receipt (a Receipt: height, leaf index and result). A tx accepted but not committed within
    timeout_s is reported UNAVAILABLE."""
    reply = stub.SubmitBatch(ledger_pb2.SubmitBatchRequest(txs=list(encodings)), timeout=timeout_s)
    results: list[TxResult | Receipt] = []
    for submitted in reply.results:
        if submitted.status != OK:
            results.append(TxResult(submitted.status, submitted.message))
            continue
        receipt = stub.WaitForCommit(
            ledger_pb2.WaitForCommitRequest(
                tx_hash=submitted.tx_hash, timeout_ms=int(timeout_s * 1000)
            ),
            timeout=timeout_s + 5,
        )
        output = json.loads(receipt.output_json) if receipt.output_json else None
        result = TxResult(receipt.status, receipt.message, output)
        results.append(
            Receipt(receipt.height, receipt.leaf_index, result) if receipt.height else result
        )
    assert len(results) == len(encodings)
    return results


def make_submitter(args: argparse.Namespace) -> Submit:
    """A Submit bound to the node the connection arguments name (cluster/client/connect.py)."""
    stub = ledger_pb2_grpc.LedgerStub(channel_from_args(args))  # type: ignore[no-untyped-call]
    return lambda encodings: submit_and_wait(stub, encodings, max(args.timeout, 30.0))
