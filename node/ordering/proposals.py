"""The consensus core's payload source on a real node: proposals from the mempool, and the
check every replica makes of a proposed payload before voting (docs/design.md §3).

A payload is valid when it decodes within the block limits, every tx decodes within the tx
limits, is for this chain, carries a valid signature (checked once per node: txs that came
through admission or an earlier proposal are in the verified cache), and no tx repeats within the
payload, in an uncommitted ancestor, in a block committed but not yet stored, or in the stored
ledger, and passes the registry's stateless checks (type, payload shape and identifiers): a
tx that fails them can never be valid, so a block holding one gets no vote and its round times
out. Rules that depend on state are not checked here: a tx that breaks one is committed with a
failure receipt, identically on every node.

Committed but not yet applied: the node applies commits on a worker thread
(node/commit/pipeline.py) while consensus goes on, so several committed blocks can wait behind a
running execution. The consensus core keeps their payloads in `pending` until the node reports
the height applied (consensus Applied: stored AND its txs removed from the mempool), so this
source is a pure query with no record of what was committed. Dropping them when the store alone
has them would let a proposal pick a committed tx still in the mempool (the store's tip moves
on the worker thread, the mempool on the loop after it), a proposal every replica, the proposer
included, refuses.

Epoch changes (docs/design.md §4.8): once the executed committed state holds a decided next set
that waits for nobody, the leader proposes the epoch-change marker as the whole payload; a
replica votes for a marker only if it names epoch e+1 (the block is of epoch e), no uncommitted
ancestor holds a marker, and its own executed state has that very set ready (a replica whose
execution lags refuses now and votes in a later round). Blocks above an uncommitted marker are
its empty suffix: they exist to commit it and carry b"". A marker in `pending` that names the
current epoch or an earlier one is committed already (it ended the epoch before), so it no
longer holds blocks empty.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from kledger.consensus.types import Block, QuorumCert
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.payload import (
    EMPTY,
    decode_epoch_change,
    decode_payload,
    encode_epoch_change,
    encode_payload,
    epoch_change_of,
)
from kledger.node.chain.tx import TxBody, check_signature, decode_body
from kledger.node.errors import Refused
from kledger.node.ordering.in_flight import InFlightHashes
from kledger.node.ordering.mempool import Mempool


class EpochFacts(Protocol):
    """What the payload source asks about epochs (node/ordering/epochs.py EpochSets)."""

    def ready_next_set(self) -> ValidatorSet | None: ...

    def ending_qc(self, epoch: int) -> QuorumCert | None: ...

    def entered(self, validators: ValidatorSet) -> None: ...


class MempoolPayloads:
    def __init__(
        self,
        mempool: Mempool,
        genesis: Genesis,
        is_committed: Callable[[bytes], bool],
        proposal_max_txs: int,
        *,
        check_payload: Callable[[TxBody], None],
        max_payload_bytes: int,
        epochs: EpochFacts | None = None,
        epoch: int | None = None,
    ) -> None:
        """`max_payload_bytes` is the consensus core's limit (CoreConfig.max_payload_bytes): a
        proposal never exceeds it nor the genesis block limit, whichever is smaller. (It once
        followed the block limit alone, 4 MiB, and the core asserted its 1 MiB: a leader holding
        a few large txs crashed, and so did every next leader holding them.)"""
        self._mempool = mempool
        self._check_payload = check_payload
        self._genesis = genesis
        self._is_committed = is_committed
        self._max_txs = min(proposal_max_txs, genesis.block_limits.max_block_txs)
        # Room for the msgpack list and bin headers around the tx encodings.
        self._max_bytes = min(genesis.block_limits.max_block_bytes, max_payload_bytes) - 64 * 1024
        # Each pending payload is looked at by every proposal and every vote: decoded once.
        self._in_flight_hashes = InFlightHashes(self._hashes_of)
        # Without `epochs` the node never changes its epoch (tests, the bench's pipeline).
        self._epochs = epochs
        # The epoch the consensus core runs: the start epoch, then each validator_set_after.
        self.epoch = genesis.validator_set.epoch if epoch is None else epoch

    def _marker_in_flight(self, pending: Sequence[bytes]) -> bool:
        """Whether an uncommitted ancestor ends the epoch (a marker of the next epoch)."""
        for payload in pending:
            marker = decode_epoch_change(payload)
            if marker is not None and marker.epoch > self.epoch:
                return True
        return False

    def _marker_to_propose(self) -> ValidatorSet | None:
        if self._epochs is None:
            return None
        ready = self._epochs.ready_next_set()
        return ready if ready is not None and ready.epoch == self.epoch + 1 else None

    def _hashes_of(self, payload: bytes) -> frozenset[bytes]:
        try:
            txs = decode_payload(payload, self._genesis.block_limits, self._genesis.tx_limits)
        except Refused:
            return frozenset()  # none of its txs can be executed: none is in flight
        return frozenset(tx.tx_hash for tx in txs)

    def _in_flight(self, pending: Sequence[bytes]) -> Collection[bytes]:
        return self._in_flight_hashes.of(pending)

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        if self._marker_in_flight(pending):
            return EMPTY  # the empty suffix that commits the epoch's marker block
        marker = self._marker_to_propose()
        if marker is not None:
            return encode_epoch_change(marker)
        txs = self._mempool.batch(self._max_txs, self._max_bytes, self._in_flight(pending))
        return encode_payload(txs)

    def has_payload(self, pending: Sequence[bytes]) -> bool:
        if self._marker_to_propose() is not None and not self._marker_in_flight(pending):
            return True  # the epoch-change marker waits to be proposed
        if not len(self._mempool):
            return False  # the idle case, answered without decoding anything in flight
        return bool(self._mempool.batch(1, None, self._in_flight(pending)))

    def is_valid_payload(self, payload: bytes, pending: Sequence[bytes]) -> bool:
        if self._marker_in_flight(pending):
            return payload == EMPTY  # no txs (and no second marker) above a marker
        marker = decode_epoch_change(payload)
        if marker is not None:
            return marker == self._marker_to_propose()
        try:
            # Txs this node admitted come from the mempool (with their decoded bodies, which
            # the committer reuses) instead of being decoded again.
            txs = decode_payload(
                payload, self._genesis.block_limits, self._genesis.tx_limits, self._mempool.get
            )
            in_flight = self._in_flight(pending)
            seen: set[bytes] = set()
            for tx in txs:
                if tx.tx_hash in seen or tx.tx_hash in in_flight or self._is_committed(tx.tx_hash):
                    return False
                seen.add(tx.tx_hash)
                if self._mempool.is_verified(tx.tx_hash):
                    continue
                body = decode_body(tx, self._genesis.tx_limits)
                if body.chain_id != self._genesis.chain_id:
                    return False
                self._check_payload(body)
                check_signature(tx)
                # Verified now means: signed, for this chain, and its payload checks pass
                # (what admission established for the txs the mempool holds).
                self._mempool.mark_verified(tx.tx_hash)
        except Refused:
            return False
        return True

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        """The marker's set when `block` is its epoch's marker block, else None. Syntactic, no
        waiting: a committed marker was checked by the honest voters of its QC."""
        marker = epoch_change_of(block)
        if marker is None or self._epochs is None:
            return None
        self.epoch = marker.epoch
        self._epochs.entered(marker)
        return marker

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        return None if self._epochs is None else self._epochs.ending_qc(epoch)
