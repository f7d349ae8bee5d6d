"""Block payloads: the batch of signed transactions a consensus block carries.

    payload = b""                                      no transactions
            | canonical msgpack list of tx encodings   (node/chain/tx.py SignedTx.encoding)

The consensus core treats payloads as opaque bytes; this module is the one place that knows
their shape. Decoding checks limits first (count, bytes) and refuses anything malformed with
DecodeError, so a Byzantine leader's payload can only be refused, never crash a replica.

A node meets each payload several times (proposed or checked before its vote, looked at while
in flight, decoded again at commit), so the txs of the last few payloads encoded or decoded
here are remembered by payload bytes, and a payload's txs that the caller already holds
(`known`: the mempool, whose txs carry their decoded bodies) are taken instead of decoded
again. Both only skip work: a payload gets exactly the txs and refusals that decoding it gives.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from kledger.node.chain import canonical
from kledger.node.chain.genesis import BlockLimits
from kledger.node.chain.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from kledger.node.chain.tx import SignedTx, TxLimits, decode_tx
from kledger.node.errors import DecodeError

EMPTY = b""
# Payloads remembered: enough for the blocks between a vote and the commit of its block (two
# rounds when all goes well; a miss only costs a decode). Their txs stay alive meanwhile.
RECENT_PAYLOADS = 4

# payload bytes -> its txs, in order, most recently used last. The txs are a function of the
# bytes alone; the limits are checked again on every use. The loop (proposals, votes) and the
# commit worker thread (node/commit/pipeline.py) both use it: every access holds the lock.
_recent: OrderedDict[bytes, tuple[SignedTx, ...]] = OrderedDict()
_recent_lock = threading.Lock()


def _remember(payload: bytes, txs: tuple[SignedTx, ...]) -> None:
    with _recent_lock:
        _recent[payload] = txs
        _recent.move_to_end(payload)
        while len(_recent) > RECENT_PAYLOADS:
            _recent.popitem(last=False)


def encode_payload(txs: Sequence[SignedTx]) -> bytes:
    if not txs:
        return EMPTY
    payload = canonical.encode([tx.encoding for tx in txs])
    _remember(payload, tuple(txs))
    return payload


def _recalled(
    payload: bytes, block_limits: BlockLimits, tx_limits: TxLimits
) -> list[SignedTx] | None:
    """The remembered txs of `payload` if every check of `decode_payload` passes on them."""
    with _recent_lock:
        txs = _recent.get(payload)
        if txs is None:
            return None
        _recent.move_to_end(payload)
    if not txs or len(txs) > block_limits.max_block_txs:
        return None  # decode to refuse it with the usual message
    if not all(_decodable(tx, tx_limits) for tx in txs):
        return None
    return list(txs)


def _decodable(tx: SignedTx, tx_limits: TxLimits) -> bool:
    """True when decode_tx(tx.encoding, tx_limits) would give this tx (a SignedTx built by any
    caller has a canonical encoding; decode_tx also checks size and the parts' types)."""
    return (
        len(tx.encoding) <= tx_limits.max_tx_bytes
        and type(tx.body) is bytes
        and type(tx.signer) is bytes
        and len(tx.signer) == PUBLIC_KEY_BYTES
        and type(tx.signature) is bytes
        and len(tx.signature) == SIGNATURE_BYTES
    )


def decode_payload(
    payload: bytes,
    block_limits: BlockLimits,
    tx_limits: TxLimits,
    known: Callable[[bytes], SignedTx | None] | None = None,
) -> list[SignedTx]:
    """The txs of a payload, in order. Raises DecodeError (or Refused for an oversize tx).

    `known(tx_hash)` may return a tx the caller holds; it is used for an item whose bytes are
    exactly that tx's encoding (tx_hash is SHA-256 of the encoding)."""
    if payload == EMPTY:
        return []
    if len(payload) > block_limits.max_block_bytes:
        raise DecodeError(
            f"{len(payload)} bytes exceed max_block_bytes={block_limits.max_block_bytes}",
            "payload",
        )
    recalled = _recalled(payload, block_limits, tx_limits)
    if recalled is not None:
        return recalled
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
        held = None if known is None else known(hashlib.sha256(item).digest())
        if held is not None and held.encoding == item and _decodable(held, tx_limits):
            txs.append(held)
        else:
            txs.append(decode_tx(item, tx_limits))
    _remember(payload, tuple(txs))
    return txs
