"""A Byzantine proposer, for tests and fault campaigns only: the node's proposals carry, beside
the honest txs of its mempool, correctly signed txs of arbitrary shapes (every tx type, fields
of every msgpack type, `"kind": []`, unknown fields, oversized numbers...), as a malicious org
could craft them. Honest replicas must refuse every such block whose txs can never be valid
(the round times out; the next leader proposes), and execute any that pass the stateless checks
into failure receipts; they must never stop. Enabled only by the node.json setting
`testing.byzantine_proposer` (the node says so loudly in its log at start).

Deterministic from a seed, so a failing run can be replayed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from kledger.consensus.types import Block, QuorumCert
from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.genesis import Genesis
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.payload import decode_epoch_change, decode_payload, encode_payload
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.ordering.proposals import MempoolPayloads
from kledger.node.registry.txtypes import TX_TYPES

FIELD_NAMES = (
    "kind", "id", "party_id", "work_id", "isrc", "iswc", "role", "right", "territory",
    "territories", "shares", "lines", "subject", "value", "code", "code_kind", "ownership",
    "usages", "names", "memberships", "action", "tariff", "pools", "society", "ipi", "from", "to",
    "provenance", "creators", "titles", "period", "report_id", "proposal_id", "org", "public_key",
)  # fmt: skip
JUNK_TXS_PER_PROPOSAL = 3


class ByzantinePayloads:
    """Wraps the node's payload source: honest txs, then junk ones (half the proposals)."""

    def __init__(self, honest: MempoolPayloads, genesis: Genesis, seed: int) -> None:
        self._honest = honest
        self._genesis = genesis
        self._rng = random.Random(seed)
        self._key = KeyPair.from_seed(self._rng.randbytes(32))
        self._nonce = 0
        self.junk_txs = 0

    def next_payload(self, pending: Sequence[bytes]) -> bytes:
        payload = self._honest.next_payload(pending)
        if self._rng.random() < 0.5 or decode_epoch_change(payload) is not None:
            return payload  # an epoch-change marker goes out as it is
        limits = self._genesis.block_limits, self._genesis.tx_limits
        junk = [self._junk_tx() for _ in range(JUNK_TXS_PER_PROPOSAL)]
        txs = [*decode_payload(payload, *limits), *junk]
        self.junk_txs += JUNK_TXS_PER_PROPOSAL
        return encode_payload(txs)

    def has_payload(self, pending: Sequence[bytes]) -> bool:
        return self._honest.has_payload(pending)

    def is_valid_payload(self, payload: bytes, pending: Sequence[bytes]) -> bool:
        return self._honest.is_valid_payload(payload, pending)

    def validator_set_after(self, block: Block) -> ValidatorSet | None:
        return self._honest.validator_set_after(block)

    def epoch_ending_qc(self, epoch: int) -> QuorumCert | None:
        return self._honest.epoch_ending_qc(epoch)

    def _junk_tx(self) -> SignedTx:
        self._nonce += 1
        tx_type = self._rng.choice(sorted(TX_TYPES))
        names = [self._rng.choice(FIELD_NAMES) for _ in range(self._rng.randint(0, 6))]
        payload = {name: self._value(2) for name in names}
        return sign_tx(self._key, TxBody(self._genesis.chain_id, tx_type, self._nonce, payload))

    def _value(self, depth: int) -> Any:
        pick = self._rng.randrange(9 if depth > 0 else 7)
        if pick == 0:
            return None
        if pick == 1:
            return self._rng.random() < 0.5
        if pick == 2:
            return self._rng.choice([0, -1, 1, 10_000, 2**63 - 1, -(2**63), 2**64 - 1])
        if pick == 3:
            return self._rng.choice(["", " ", "a/b", "KR", "PR", "work", "recording", "x" * 600])
        if pick == 4:
            return self._rng.randbytes(self._rng.randint(0, 8))
        if pick == 5:
            return self._rng.choice(FIELD_NAMES)
        if pick == 6:
            return []
        if pick == 7:
            return [self._value(depth - 1) for _ in range(self._rng.randint(0, 3))]
        return {self._rng.choice(FIELD_NAMES): self._value(depth - 1) for _ in range(3)}
