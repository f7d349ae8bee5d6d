"""Clients waiting for txs to commit (WaitForCommit, WaitForCommits): who waits for which tx
hash, woken when the node announces a stored height.

Rules kept here:
- one wait per call, however many hashes it names: a call registers once under each hash it
  still misses and holds one future, completed when its last hash is announced; so a wait for n
  hashes costs O(n) to register, to wake and to clean up, never n sequential waits;
- nothing outlives its call: when a wait ends (answered, timed out or cancelled) it leaves every
  hash it was registered under, and a hash with no waiter left is forgotten, so `waiting_hashes`
  is 0 whenever no call waits;
- a receipt is only ever announced after the node's synced write of its height (the caller's
  rule, node/api/ledger_backend.py), so a woken waiter never holds a receipt the store could lose;
- the caller bounds the hashes (node/api/ledger_service.py MAX_WAIT_HASHES and the per-connection
  budget); this module allocates only for what it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from kledger.node.chain.receipt import Receipt


class _Wait:
    """One call's wait: the receipts found so far and the future its last one completes.
    Compared by identity, so one call's entry can be removed from a hash's set in O(1)."""

    __slots__ = ("done", "missing", "receipts")

    def __init__(self, receipts: dict[bytes, Receipt], missing: int) -> None:
        self.receipts = receipts
        self.missing = missing
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def deliver(self, tx_hash: bytes, receipt: Receipt) -> None:
        self.receipts[tx_hash] = receipt
        self.missing -= 1
        if self.missing == 0 and not self.done.done():
            self.done.set_result(None)


class CommitWaiters:
    def __init__(self) -> None:
        self._by_hash: dict[bytes, set[_Wait]] = {}

    @property
    def waiting_hashes(self) -> int:
        """Distinct tx hashes some call is waiting for (0 when no call waits)."""
        return len(self._by_hash)

    def announce(self, committed: Iterable[tuple[bytes, Receipt]]) -> None:
        """These txs are stored with these receipts: wake whoever waits for them."""
        for tx_hash, receipt in committed:
            for wait in self._by_hash.pop(tx_hash, ()):
                wait.deliver(tx_hash, receipt)

    def close(self) -> None:
        """The node stops: every waiting call ends with CancelledError."""
        for waits in self._by_hash.values():
            for wait in waits:
                wait.done.cancel()

    async def wait(
        self,
        tx_hashes: Sequence[bytes],
        stored_receipt: Callable[[bytes], Receipt | None],
        timeout_s: float,
    ) -> list[Receipt | None]:
        """The receipt of each of `tx_hashes` (distinct), in order, once committed; None for
        those not committed within timeout_s. `stored_receipt` reads a tx already committed:
        asked once per hash before waiting, with no await in between, so a commit announced
        after the read still finds this call registered."""
        assert len(set(tx_hashes)) == len(tx_hashes), "the caller passes distinct hashes"
        receipts: dict[bytes, Receipt] = {}
        for tx_hash in tx_hashes:
            found = stored_receipt(tx_hash)
            if found is not None:
                receipts[tx_hash] = found
        missing = [tx_hash for tx_hash in tx_hashes if tx_hash not in receipts]
        if missing:
            await self._wait_for(missing, receipts, timeout_s)
        return [receipts.get(tx_hash) for tx_hash in tx_hashes]

    async def _wait_for(
        self, missing: Sequence[bytes], receipts: dict[bytes, Receipt], timeout_s: float
    ) -> None:
        wait = _Wait(receipts, len(missing))
        for tx_hash in missing:
            self._by_hash.setdefault(tx_hash, set()).add(wait)
        try:
            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a cancellation that
            # arrives as the future completes, which would stall a graceful shutdown.
            async with asyncio.timeout(timeout_s):
                await wait.done
        except TimeoutError:
            pass  # the receipts that did arrive are in `receipts`; the rest stay None
        finally:
            self._leave(wait, missing)

    def _leave(self, wait: _Wait, registered: Sequence[bytes]) -> None:
        """Remove `wait` from every hash it still waits under (announced hashes were popped)."""
        for tx_hash in registered:
            if tx_hash in wait.receipts:
                continue
            waits = self._by_hash.get(tx_hash)
            if waits is None:
                continue
            waits.discard(wait)
            if not waits:
                del self._by_hash[tx_hash]
