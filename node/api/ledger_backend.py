"""The node's side of the ledger service (the LedgerBackend the gRPC servicer calls): client
submissions through the node's admission, receipts as blocks commit, and the committed ledger
read from the store: txs, blocks, headers, certified proofs and the stream of commits.

It runs on the node's event loop. The node announces each committed height (`announce`) after
its synced write, so a waiter never receives a receipt the store could still lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from kledger.node.api.commit_waiters import CommitWaiters
from kledger.node.api.ledger_service import BlockView, CertifiedHeader, NodeStatusView, StoredTx
from kledger.node.chain.receipt import Receipt
from kledger.node.chain.tx import SignedTx
from kledger.node.errors import Refused, Status
from kledger.node.ordering.admission import Admission, SubmitResult
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle
from kledger.node.storage.proofs import build_consistency_bundle, build_inclusion_bundle
from kledger.node.storage.store import LedgerStore


class NodeLedger:
    def __init__(
        self, store: LedgerStore, admission: Admission, status: Callable[[], NodeStatusView]
    ) -> None:
        self._store = store
        self._admission = admission
        self._status = status
        self._waiters = CommitWaiters()
        self._commit_event = asyncio.Event()

    # -- from the node ----------------------------------------------------------------------

    def announce(self, txs: Sequence[SignedTx], receipts: Sequence[Receipt]) -> None:
        """A height is stored: wake its txs' waiters and the commit streams."""
        hashes = [tx.tx_hash for tx in txs]
        self._waiters.announce(zip(hashes, receipts, strict=True))
        self._commit_event.set()
        self._commit_event = asyncio.Event()

    def close(self) -> None:
        self._waiters.close()

    # -- LedgerBackend ----------------------------------------------------------------------

    @property
    def chain_id(self) -> str:
        return self._store.genesis.chain_id

    async def submit(self, encodings: Sequence[bytes], source: str) -> list[SubmitResult]:
        return await self._admission.submit(source, encodings)

    async def wait_for_receipts(
        self, tx_hashes: Sequence[bytes], timeout_s: float
    ) -> list[Receipt | None]:
        return await self._waiters.wait(tx_hashes, self._stored_receipt, timeout_s)

    def _stored_receipt(self, tx_hash: bytes) -> Receipt | None:
        stored = self._store.get_tx(tx_hash)
        return None if stored is None else stored[1]

    def status(self) -> NodeStatusView:
        return self._status()

    def get_tx(self, tx_hash: bytes) -> StoredTx | None:
        stored = self._store.get_tx(tx_hash)
        return None if stored is None else StoredTx(stored[0].encoding, stored[1])

    def get_block(self, height: int) -> BlockView | None:
        found = self._store.block_tx_hashes(height)
        if found is None:
            return None
        header, tx_hashes = found
        return BlockView(
            header=header, certificate=self._store.certificate(height), tx_hashes=tx_hashes
        )

    def get_header(self, height: int | None) -> CertifiedHeader | None:
        if height is None:
            height = self._store.latest_certified_height()
        header = self._store.header(height)
        if header is None:
            return None
        return CertifiedHeader(header, self._store.certificate(height))

    def inclusion_proof(self, tx_hash: bytes) -> InclusionBundle | None:
        return build_inclusion_bundle(self._store, tx_hash)

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyBundle:
        return build_consistency_bundle(
            self._store,
            self._certified_height_of_size(old_size, "old_size"),
            self._certified_height_of_size(new_size, "new_size"),
        )

    async def commits(self, from_height: int) -> AsyncIterator[BlockView]:
        height = max(1, from_height)
        while True:
            while height <= self._store.last_height():
                view = self.get_block(height)
                assert view is not None
                yield view
                height += 1
            await self._commit_event.wait()

    def _certified_height_of_size(self, size: int, field: str) -> int:
        """A certified height whose log size is exactly `size`: sizes only grow with height,
        so a binary search finds the first height of that size; later heights of the same
        size are tried in turn for one that has a certificate."""
        low, high = 0, self._store.latest_certified_height()
        while low < high:
            middle = (low + high) // 2
            header = self._store.header(middle)
            assert header is not None
            if header.tx_log_size < size:
                low = middle + 1
            else:
                high = middle
        height = low
        while (header := self._store.header(height)) is not None and header.tx_log_size == size:
            if self._store.certificate(height) is not None:
                return height
            height += 1
        raise Refused(Status.FAILED_PRECONDITION, f"no certified header has log size {size}", field)
