"""The one gate into the mempool, for txs a client submits and txs a peer gossips alike.

Every tx passes the same checks in order of cost (Mempool.admit: size and shape, dedup against
the mempool and the committed ledger, chain id, capacity, the registry's payload and state
checks, then the signature), so a flood of duplicates or junk costs no signature work. Each tx
gets its own answer: a refusal names its field and status, and a tx that hits a bug of ours is
answered INTERNAL (logged with its hash) without failing the others of its batch.

A client learns every refusal. For gossip, a duplicate or a tx already committed is normal and
skipped quietly; any other refusal means the peer sent what its own admission should have
refused: it is dropped and counted (`kledger_dropped_messages_total{reason="gossip.invalid_tx"}`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.receipt import OK
from kledger.node.chain.tx import decode_tx
from kledger.node.errors import Refused, Status, StoreCorrupt
from kledger.node.ordering.mempool import Mempool, StateCheck
from kledger.node.telemetry.logs import log_event
from kledger.node.telemetry.metrics import NodeMetrics

log = logging.getLogger("kledger.admission")

INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class SubmitResult:
    tx_hash: bytes  # empty when the bytes did not decode to a tx
    status: str  # "OK" or a kledger.node.errors.Status name (or INTERNAL for a bug of ours)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @staticmethod
    def refused(tx_hash: bytes, refusal: Refused) -> SubmitResult:
        return SubmitResult(tx_hash, refusal.status.value, refusal.message)


class Admission:
    def __init__(
        self,
        mempool: Mempool,
        genesis: Genesis,
        *,
        is_committed: Callable[[bytes], bool],
        state_check: Callable[[], StateCheck],
        metrics: NodeMetrics,
        on_admitted: Callable[[], None],
    ) -> None:
        """`state_check()` gives the registry's check bound to the committed state of now (one
        per batch); `on_admitted` runs once after a batch that added anything."""
        self._mempool = mempool
        self._genesis = genesis
        self._is_committed = is_committed
        self._state_check = state_check
        self._metrics = metrics
        self._on_admitted = on_admitted

    def submit(self, encodings: Sequence[bytes]) -> list[SubmitResult]:
        """A client's txs: one answer each, in order."""
        check = self._state_check()
        results = []
        for data in encodings:
            try:
                tx_hash = self._admit(data, check, local=True)
                results.append(SubmitResult(tx_hash, OK))
            except Refused as refusal:
                results.append(SubmitResult.refused(hash_or_empty(data), refusal))
            except StoreCorrupt:
                raise
            except Exception:
                tx_hash = hash_or_empty(data)
                log.exception("admission bug: tx %s", tx_hash.hex() or "(undecodable)")
                results.append(SubmitResult(tx_hash, INTERNAL, "admission failed on a node bug"))
        if any(r.ok for r in results):
            self._on_admitted()
        return results

    def gossip(self, sender: str, encodings: Sequence[bytes]) -> int:
        """A peer's txs (not to be gossiped again); returns how many were new."""
        check = self._state_check()
        admitted = 0
        for data in encodings:
            try:
                self._admit(data, check, local=False)
            except Refused as refusal:
                if refusal.status is Status.ALREADY_EXISTS:
                    continue
                if refusal.status is Status.RESOURCE_EXHAUSTED and refusal.field == "mempool":
                    self._metrics.drop("gossip.mempool_full")
                    continue
                self._metrics.drop("gossip.invalid_tx")
                log_event(
                    log, "gossip_tx_refused", logging.WARNING, peer=sender, reason=str(refusal)
                )
                continue
            except StoreCorrupt:
                raise
            except Exception:
                self._metrics.drop("gossip.admission_bug")
                log.exception("admission bug on a tx gossiped by %s", sender)
                continue
            admitted += 1
        if admitted:
            self._on_admitted()
        return admitted

    def _admit(self, data: bytes, check: StateCheck, *, local: bool) -> bytes:
        tx = self._mempool.admit(
            data,
            self._genesis.chain_id,
            limits=self._genesis.tx_limits,
            is_committed=self._is_committed,
            check_state=check,
            local=local,
        )
        return tx.tx_hash


def hash_or_empty(data: bytes) -> bytes:
    """The tx hash of `data`, or b"" when it does not decode to a tx."""
    try:
        return decode_tx(data).tx_hash
    except Refused:
        return b""
