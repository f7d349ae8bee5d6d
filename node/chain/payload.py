"""Block payloads: the batch of signed transactions a consensus block carries, or the marker
that ends an epoch (docs/design.md §4.8).

    payload = b""                                      no transactions
            | canonical msgpack list of tx encodings   (node/chain/tx.py SignedTx.encoding)
            | canonical msgpack map {"epoch_change": {"epoch": e+1,
                  "validators": [[org str, key bytes32], ...] sorted by org}}

A tx payload is empty or a list, so a map is never a tx batch: `decode_epoch_change` answers
the set for a marker and None for anything else (hostile bytes included, never an exception),
and `decode_payload` refuses a marker like any other non-list.

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

from kledger.consensus.types import Block
from kledger.consensus.validators import ValidatorSet
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


MARKER = "epoch_change"
# A marker names at most this many validators (a set far beyond any cluster this ledger runs;
# checked before the set is built).
MAX_MARKER_VALIDATORS = 256
MAX_MARKER_BYTES = 64 * 1024


def encode_epoch_change(validators: ValidatorSet) -> bytes:
    """The payload of the block that ends the epoch before `validators.epoch`."""
    return canonical.encode(
        {
            MARKER: {
                "epoch": validators.epoch,
                "validators": [[v.node_id, v.public_key] for v in validators.validators],
            }
        }
    )


def decode_epoch_change(payload: bytes) -> ValidatorSet | None:
    """The set an epoch-change marker names, or None when `payload` is not exactly one (tx
    payloads, junk). Total: every input gives a value."""
    if not payload or len(payload) > MAX_MARKER_BYTES or payload[0] & 0xF0 != 0x80:
        return None  # empty, too long, or not a fixmap (a canonical one-key map is one)
    try:
        value = canonical.decode(payload)
    except DecodeError:
        return None
    if not isinstance(value, dict) or set(value) != {MARKER}:
        return None
    body = value[MARKER]
    if not isinstance(body, dict) or set(body) != {"epoch", "validators"}:
        return None
    epoch, members = body["epoch"], body["validators"]
    if type(epoch) is not int or not 0 < epoch < 1 << 63:
        return None
    if type(members) is not list or not 0 < len(members) <= MAX_MARKER_VALIDATORS:
        return None
    pairs: list[tuple[str, bytes]] = []
    for member in members:
        if type(member) is not list or len(member) != 2:
            return None
        org, key = member
        if type(org) is not str or not org or type(key) is not bytes or len(key) != 32:
            return None
        pairs.append((org, key))
    if [org for org, _ in pairs] != sorted({org for org, _ in pairs}):
        return None  # sorted by org, no org twice: one encoding per set
    if len({key for _, key in pairs}) != len(pairs):
        return None
    return ValidatorSet.of(epoch, pairs)


def epoch_change_of(block: Block) -> ValidatorSet | None:
    """The next epoch's set when `block` is its epoch's marker block (a marker naming epoch
    block.epoch + 1), else None: the syntactic rule every node applies to a committed block."""
    marker = decode_epoch_change(block.payload)
    if marker is None or marker.epoch != block.epoch + 1:
        return None
    return marker


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
