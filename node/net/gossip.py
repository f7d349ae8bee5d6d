"""Tx gossip between mempools (DESIGN.md section 3: a tx submitted to any honest node reaches
every mempool, so the next honest leader includes it).

Rules it keeps:
- only the node a client submitted to gossips a tx, once, to every peer (full mesh), in batches
  of at most `gossip_batch_max_txs` txs and the peer message size limit, every
  `gossip_flush_ms`; txs that arrived by gossip are not forwarded again;
- gossiped txs pass the same admission checks as client txs (each signature verified once on
  each node); a duplicate or already committed tx is normal and silently skipped, any other
  refusal means the peer sent what its own admission should have refused: dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from kledger.node.chain.tx import DEFAULT_TX_LIMITS, TxLimits
from kledger.node.config import BatchingSettings
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.net.peer_transport import PeerTransport, TxGossip
from kledger.node.ordering.mempool import Mempool, StateCheck
from kledger.node.telemetry.logs import log_event
from kledger.node.telemetry.metrics import NodeMetrics

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


def admit_gossip(
    mempool: Mempool,
    sender: str,
    gossip: TxGossip,
    chain_id: str,
    metrics: NodeMetrics,
    *,
    limits: TxLimits = DEFAULT_TX_LIMITS,
    is_committed: Callable[[bytes], bool] = lambda _hash: False,
    check_state: StateCheck | None = None,
) -> int:
    """Admit the txs a peer gossiped (not to be gossiped again); returns how many were new."""
    admitted = 0
    for data in gossip.txs:
        try:
            mempool.admit(
                data,
                chain_id,
                limits=limits,
                is_committed=is_committed,
                check_state=check_state,
                local=False,
            )
        except Refused as refusal:
            if refusal.status is Status.ALREADY_EXISTS:
                continue
            if refusal.status is Status.RESOURCE_EXHAUSTED and refusal.field == "mempool":
                metrics.drop("mempool_full")
                continue
            metrics.drop("invalid")
            log_event(log, "gossip_tx_refused", logging.WARNING, peer=sender, reason=str(refusal))
            continue
        except StoreCorrupt:
            raise
        except Exception:
            # Our bug, reached by a peer's tx: drop that tx, keep the rest of the batch.
            metrics.drop("admission_bug")
            log.exception("admission bug on a tx gossiped by %s", sender)
            continue
        admitted += 1
    return admitted
