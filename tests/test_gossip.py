"""Tx gossip over the real peer transport: local txs reach the peer's mempool in bounded batches,
are not gossiped again there, duplicates are skipped quietly and forged txs are counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.config import AdmissionSettings
from kledger.node.net.gossip import flush_gossip
from kledger.node.net.peer_transport import TxGossip
from kledger.node.ordering.admission import Admission
from kledger.node.ordering.mempool import Mempool
from kledger.node.telemetry.metrics import NodeMetrics
from tests.helpers import key, make_genesis
from tests.test_peer_transport import SETTINGS, PeerNode

CHAIN = "gossip-test"


def admission(mempool: Mempool, metrics: NodeMetrics) -> Admission:
    """The node's admission without registry rules (these txs are not registry txs)."""
    return Admission(
        mempool,
        make_genesis(chain_id=CHAIN),
        is_committed=lambda _hash: False,
        state_check=lambda: lambda _tx, _body: None,
        metrics=metrics,
        on_admitted=lambda: None,
        settings=AdmissionSettings(),
    )


def make_tx(nonce: int) -> SignedTx:
    body = TxBody(chain_id=CHAIN, type="usage.report", nonce=nonce, payload={"n": nonce})
    return sign_tx(key("gossip/client"), body)


@pytest.mark.asyncio
async def test_local_txs_reach_the_peer_mempool_once(tmp_path: Path) -> None:
    layout = init_cluster(tmp_path / "c", ClusterSpec(orgs=generic_orgs(2), chain_id=CHAIN))
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        transport = one.connect({"ORG2": address})
        local, remote = Mempool(), Mempool()
        txs = [make_tx(n) for n in range(7)]
        for tx in txs:
            local.admit(tx.encoding, CHAIN)
        assert flush_gossip(local, transport, 3, SETTINGS.max_message_bytes) == 7
        assert flush_gossip(local, transport, 3, SETTINGS.max_message_bytes) == 0  # sent once
        sizes = []
        for _ in range(3):
            sender, payload = await two.receive()
            assert sender == "ORG1" and isinstance(payload, TxGossip)
            sizes.append(len(payload.txs))
            await admission(remote, two.metrics).admit_gossip(sender, payload.txs)
        assert sizes == [3, 3, 1]
        assert remote.batch(100) == txs
        assert remote.take_gossip(100) == []  # gossiped txs are not forwarded again

        forged = SignedTx(txs[0].body, txs[0].signer, bytes(64))
        mixed = TxGossip((txs[1].encoding, forged.encoding, make_tx(99).encoding))
        assert await admission(remote, two.metrics).admit_gossip("ORG1", mixed.txs) == 1
        assert (
            two.metrics.value("kledger_dropped_messages_total", reason="gossip.bad_signature")
            == 1.0
        )
    finally:
        await one.close()
        await two.close()


def test_gossip_batches_respect_the_message_size() -> None:
    pool = Mempool()
    txs = [make_tx(n) for n in range(10)]
    for tx in txs:
        pool.admit(tx.encoding, CHAIN)
    size = len(txs[0].encoding)
    batches = []
    while batch := pool.take_gossip(100, max_bytes=3 * size):
        batches.append(len(batch))
    assert batches == [3, 3, 3, 1]
