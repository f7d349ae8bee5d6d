"""cluster/client/submit.py `submit_and_wait`, the helper of `kledger import` and the other
batch clients, over real gRPC + TLS against the ledger service of tests/test_ledger_service.py
(real mempool admission, the node's commit waiters): one result per tx in the batch's order, a
TxResult for each refusal and a Receipt for each committed tx, the accepted txs waited for in
one WaitForCommits call, and a wait that times out fails naming the txs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.client.submit import submit_and_wait
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.v1 import ledger_pb2, ledger_pb2_grpc
from tests.test_ledger_service import WAIT_S, Harness, until


@contextmanager
def sync_stub(h: Harness) -> Iterator[ledger_pb2_grpc.LedgerStub]:
    """A stub on the blocking channel the CLI uses (its calls run in a thread beside the
    server's loop), as ORG1's member; the channel is closed after."""
    assert h.servers is not None
    channel = open_channel(
        f"127.0.0.1:{h.servers.client_port}",
        h.material.ca_pem,
        ClientCert.member(h.layout, "ORG1"),
    )
    try:
        yield ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
    finally:
        channel.close()


@pytest.mark.asyncio
async def test_a_mixed_batch_comes_back_in_order_after_one_wait(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        in_mempool = h.tx(1)
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=in_mempool.encoding))
        first, second = h.tx(2), h.tx(3)
        batch = [first.encoding, b"junk", in_mempool.encoding, second.encoding]
        with sync_stub(h) as stub:
            submitting = asyncio.ensure_future(
                asyncio.to_thread(submit_and_wait, stub, batch, WAIT_S)
            )
            # Both accepted txs are waited for at once: one call, not one per tx.
            await until(lambda: h.ledger.waiters.waiting_hashes == 2)
            await h.ledger.commit_block()
            results = await asyncio.wait_for(submitting, WAIT_S)
        assert [type(r) for r in results] == [Receipt, TxResult, TxResult, Receipt]
        committed, junk, duplicate, last = results
        assert isinstance(committed, Receipt) and isinstance(last, Receipt)
        assert isinstance(junk, TxResult) and isinstance(duplicate, TxResult)
        assert (committed.height, committed.leaf_index) == (1, 1)
        assert (last.height, last.leaf_index) == (1, 2)
        assert committed.result == TxResult("OK", "", {"n": 1})
        assert last.result == TxResult("OK", "", {"n": 2})
        assert junk.status == "INVALID_ARGUMENT" and junk.output is None
        assert duplicate.status == "ALREADY_EXISTS" and "tx_hash" in duplicate.message
        assert h.ledger.waiters.waiting_hashes == 0


@pytest.mark.asyncio
async def test_a_batch_refused_whole_waits_for_nothing(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        with sync_stub(h) as stub:
            results = await asyncio.to_thread(submit_and_wait, stub, [b"junk", b""], WAIT_S)
        assert [r.status for r in results if isinstance(r, TxResult)] == [
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
        ]


@pytest.mark.asyncio
async def test_a_batch_not_committed_in_time_fails_naming_its_txs(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        batch = [b"junk", h.tx(1).encoding, h.tx(2).encoding]
        with sync_stub(h) as stub, pytest.raises(grpc.RpcError) as info:
            await asyncio.to_thread(submit_and_wait, stub, batch, 0.05)
        error = info.value
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        # Indexes into the wait (the accepted txs), not into the batch.
        assert error.details() == (  # type: ignore[attr-defined]
            "tx_hashes[0], tx_hashes[1]: not committed within timeout_ms=50 (2 of 2)"
        )
        assert h.ledger.waiters.waiting_hashes == 0
