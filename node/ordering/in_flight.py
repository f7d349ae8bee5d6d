"""The tx hashes of the payloads in flight (a block's uncommitted ancestors, and the blocks
committed but not yet applied), kept from one call to the next.

Every proposal and every vote asks which txs are in flight below the block (node/ordering/
proposals.py). The set changes little between asks: a new block on top, applied blocks leaving
at the bottom. Each payload is decoded once, when it first appears, and its hashes counted
until it leaves; an ask costs one set lookup per pending payload, however many there are.

Why not a cache of the last payloads: while a node's execution is behind, the committed but not
yet applied blocks are as many as the mempool holds txs in them (100,000 txs: ~500 blocks of
200). The 64-payload cache this replaces missed on every one of them once they outnumbered it,
so each proposal and each vote decoded the whole backlog again on the event loop: in a
30-minute soak one node's event loop spent 752 s of CPU against ≈ 128 s for each of the others,
three quarters of it decoding the backlog; its proposals and votes came late, the others' rounds
timed out (570 view changes each) and the cluster's rate fell to a quarter (docs/bench.md
"The 30-minute soak, store v6").
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from kledger.node.chain.payload import decode_epoch_change


class InFlightHashes:
    def __init__(self, tx_hashes_of: Callable[[bytes], frozenset[bytes]]) -> None:
        """`tx_hashes_of`: the hashes of a tx payload's txs (an empty set for one that does
        not decode: none of its txs can be executed, so none is in flight)."""
        self._tx_hashes_of = tx_hashes_of
        self._by_payload: dict[bytes, frozenset[bytes]] = {}
        # How many tracked payloads hold each hash: blocks of two forks may share a tx, and
        # it stays in flight until the last of them leaves.
        self._holders: dict[bytes, int] = {}

    def of(self, pending: Iterable[bytes]) -> Collection[bytes]:
        """The hashes of the txs in `pending` (epoch-change markers and empty payloads hold
        none). Valid until the next call: the answer is updated in place."""
        wanted = {p for p in pending if p and decode_epoch_change(p) is None}
        for payload in [p for p in self._by_payload if p not in wanted]:
            for tx_hash in self._by_payload.pop(payload):
                left = self._holders[tx_hash] - 1
                if left:
                    self._holders[tx_hash] = left
                else:
                    del self._holders[tx_hash]
        for payload in wanted:
            if payload in self._by_payload:
                continue
            hashes = self._tx_hashes_of(payload)
            self._by_payload[payload] = hashes
            for tx_hash in hashes:
                self._holders[tx_hash] = self._holders.get(tx_hash, 0) + 1
        return self._holders.keys()

    def __len__(self) -> int:
        """Payloads tracked (those of the last call)."""
        return len(self._by_payload)
