"""Tx gossip between mempools (docs/design.md §3: a tx submitted to any honest node reaches
every mempool, so the next honest leader includes it).

Rules it keeps:
- only the node a client submitted to gossips a tx, once, to every peer (full mesh), in batches
  of at most `gossip_batch_max_txs` txs and the peer message size limit, every
  `gossip_flush_ms`; txs that arrived by gossip are not forwarded again;
- gossiped txs pass the same admission as client txs (kledger.node.ordering.admission: each
  signature verified once on each node).
"""

from __future__ import annotations

import asyncio
import logging

from kledger.node.config import BatchingSettings
from kledger.node.net.peer_transport import PeerTransport, TxGossip
from kledger.node.ordering.mempool import Mempool

log = logging.getLogger("kledger.gossip")

# Room left in a peer message for protobuf framing around the tx encodings.
FRAMING_BYTES_PER_TX = 8


def flush_gossip(
    mempool: Mempool, transport: PeerTransport, max_txs: int, max_message_bytes: int
) -> int:
    """Broadcast every waiting local tx in batches; returns how many txs were sent."""
    sent = 0
    budget = max_message_bytes - FRAMING_BYTES_PER_TX * max_txs
    assert budget > 0, "max_message_bytes too small for a gossip batch"
    while batch := mempool.take_gossip(max_txs, budget):
        transport.broadcast(TxGossip(tuple(tx.encoding for tx in batch)))
        sent += len(batch)
    return sent


async def run_gossip(
    mempool: Mempool,
    transport: PeerTransport,
    batching: BatchingSettings,
    max_message_bytes: int,
) -> None:
    """Forever: flush the gossip outbox every gossip_flush_ms. Cancel the task to stop."""
    while True:
        await asyncio.sleep(batching.gossip_flush_ms / 1000)
        flush_gossip(mempool, transport, batching.gossip_batch_max_txs, max_message_bytes)
