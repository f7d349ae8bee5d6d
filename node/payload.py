"""Block payloads: the batch of signed transactions a consensus block carries.

    payload = b""                                      no transactions
            | canonical msgpack list of tx encodings   (node/tx.py SignedTx.encoding)

The consensus core treats payloads as opaque bytes; this module is the one place that knows
their shape. Decoding checks limits first (count, bytes) and refuses anything malformed with
DecodeError, so a Byzantine leader's payload can only be refused, never crash a replica.
"""

from __future__ import annotations

from collections.abc import Sequence

from node import canonical
from node.errors import DecodeError
from node.genesis import BlockLimits
from node.tx import SignedTx, TxLimits, decode_tx

EMPTY = b""


def encode_payload(txs: Sequence[SignedTx]) -> bytes:
    if not txs:
        return EMPTY
    return canonical.encode([tx.encoding for tx in txs])


def decode_payload(
    payload: bytes, block_limits: BlockLimits, tx_limits: TxLimits
) -> list[SignedTx]:
    """The txs of a payload, in order. Raises DecodeError (or Refused for an oversize tx)."""
    if payload == EMPTY:
        return []
    if len(payload) > block_limits.max_block_bytes:
        raise DecodeError(
            f"{len(payload)} bytes exceed max_block_bytes={block_limits.max_block_bytes}",
            "payload",
        )
    items = canonical.decode(payload)
    if not isinstance(items, list) or not items:
        raise DecodeError("must be a non-empty list of tx encodings", "payload")
    if len(items) > block_limits.max_block_txs:
        raise DecodeError(
            f"{len(items)} txs exceed max_block_txs={block_limits.max_block_txs}", "payload"
        )
    txs = []
    for index, item in enumerate(items):
        if not isinstance(item, bytes):
            raise DecodeError("must be bytes", f"payload[{index}]")
        txs.append(decode_tx(item, tx_limits))
    return txs
