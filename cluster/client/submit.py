"""Submitting signed txs and waiting for their receipts: one helper for every client (the tx,
import and demo commands). A batch goes in one SubmitBatch call; refusals come back at once with
their status; the accepted txs are waited for in one WaitForCommits call until committed.
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


class WaitAnswerError(RuntimeError):
    """The node answered WaitForCommits with another number of receipts than hashes asked."""


def submit_and_wait(
    stub: ledger_pb2_grpc.LedgerStub,
    encodings: Sequence[bytes],
    timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
) -> list[TxResult | Receipt]:
    """One result per tx, in order: the admission refusal (a TxResult), or the committed
    receipt (a Receipt: height, leaf index and result). Two calls for the whole batch: one
    SubmitBatch, then one WaitForCommits for the accepted txs. An accepted tx not committed
    within timeout_s fails the wait: grpc.RpcError DEADLINE_EXCEEDED naming it."""
    reply = stub.SubmitBatch(ledger_pb2.SubmitBatchRequest(txs=list(encodings)), timeout=timeout_s)
    accepted = [submitted.tx_hash for submitted in reply.results if submitted.status == OK]
    receipts = iter(_wait_for_commits(stub, accepted, timeout_s))
    results: list[TxResult | Receipt] = [
        _receipt_of(next(receipts))
        if submitted.status == OK
        else TxResult(submitted.status, submitted.message)
        for submitted in reply.results
    ]
    assert len(results) == len(encodings)
    return results


def _wait_for_commits(
    stub: ledger_pb2_grpc.LedgerStub, tx_hashes: list[bytes], timeout_s: float
) -> list[ledger_pb2.Receipt]:
    """The receipts of `tx_hashes` (at most a batch's), in order, from one WaitForCommits."""
    if not tx_hashes:
        return []
    reply = stub.WaitForCommits(
        ledger_pb2.WaitForCommitsRequest(tx_hashes=tx_hashes, timeout_ms=int(timeout_s * 1000)),
        timeout=timeout_s + 5,  # the node answers DEADLINE_EXCEEDED first, naming the txs
    )
    if len(reply.receipts) != len(tx_hashes):  # the node's answer, not our own invariant
        raise WaitAnswerError(
            f"WaitForCommits: {len(reply.receipts)} receipts for {len(tx_hashes)} tx hashes"
        )
    return list(reply.receipts)


def _receipt_of(receipt: ledger_pb2.Receipt) -> TxResult | Receipt:
    output = json.loads(receipt.output_json) if receipt.output_json else None
    result = TxResult(receipt.status, receipt.message, output)
    return Receipt(receipt.height, receipt.leaf_index, result) if receipt.height else result


def make_submitter(args: argparse.Namespace) -> Submit:
    """A Submit bound to the node the connection arguments name (cluster/client/connect.py)."""
    stub = ledger_pb2_grpc.LedgerStub(channel_from_args(args))  # type: ignore[no-untyped-call]
    return lambda encodings: submit_and_wait(stub, encodings, max(args.timeout, 30.0))
