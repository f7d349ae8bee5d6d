"""The mempool: transactions admitted by this node and waiting to be proposed and committed.

Rules it keeps (docs/design.md §3.2, issue 5 point 1):
- bounded by `max_txs` and `max_bytes` (named settings); when full, a new tx is refused with
  RESOURCE_EXHAUSTED and nothing already held is evicted (a client retries; a flood cannot push
  out txs that were acknowledged);
- dedup by tx hash: a hash it holds is refused with ALREADY_EXISTS before any signature work;
- a tx admitted while fewer than `max_decoded_bodies` txs wait keeps the body admission
  decoded, for execution to reuse; that bounds the memory it costs;
- each tx's signature is verified once on this node: at admission, or when it first arrives in a
  proposal (`mark_verified`); `is_verified` answers for mempool txs and a bounded cache of others,
  so a proposal's txs found here need no signature check;
- proposals take FIFO batches skipping hashes in an `exclude` set (txs in pending, uncommitted
  ancestor blocks); txs leave only when committed (`remove_committed`), so a block lost to a view
  change leaves its txs here for the next leader;
- locally submitted txs enter a gossip outbox taken in batches; txs that arrived by gossip are
  not gossiped again (every node sends its own txs to every peer).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from kledger.node.chain.tx import (
    DEFAULT_TX_LIMITS,
    SignedTx,
    TxBody,
    TxLimits,
    check_signature,
    decode_body,
    decode_tx,
    forget_decoded_body,
)
from kledger.node.errors import Refused, Status

# A state-dependent admission check (member key registered, role allowed); raises Refused.
StateCheck = Callable[[SignedTx, TxBody], None]


@dataclass(frozen=True, slots=True)
class MempoolLimits:
    max_txs: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    # Hashes of txs verified outside the mempool (from proposals) remembered at most.
    max_verified_cache: int = 100_000
    # Txs that keep the body admission decoded, for execution to reuse (~1.3 KB each for the
    # bench workload, so ~25 MB at most): a tx admitted behind this many waiting txs drops it
    # and is decoded again when it commits.
    max_decoded_bodies: int = 20_000


def check_costly(
    tx: SignedTx, body: TxBody, check_state: StateCheck | None, *, verify_signature: bool
) -> None:
    """The costly admission checks, in order: the registry's state check, then the Ed25519
    signature (skipped for a tx this node verified before). Reads only, so any thread may run
    it. Raises Refused naming the field."""
    if check_state is not None:
        check_state(tx, body)
    if verify_signature:
        check_signature(tx)


class Mempool:
    def __init__(self, limits: MempoolLimits = MempoolLimits()) -> None:
        assert limits.max_txs > 0 and limits.max_bytes > 0 and limits.max_verified_cache > 0
        assert limits.max_decoded_bodies >= 0
        self.limits = limits
        self._txs: OrderedDict[bytes, SignedTx] = OrderedDict()
        self._bytes = 0
        self._gossip: deque[bytes] = deque()
        self._verified: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: object) -> bool:
        return tx_hash in self._txs

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, tx_hash: bytes) -> SignedTx | None:
        return self._txs.get(tx_hash)

    def admit(
        self,
        data: bytes,
        chain_id: str,
        *,
        limits: TxLimits = DEFAULT_TX_LIMITS,
        is_committed: Callable[[bytes], bool] = lambda _hash: False,
        check_state: StateCheck | None = None,
        local: bool = True,
    ) -> SignedTx:
        """Every admission check in order of cost, then add. Raises Refused naming the field.

        Cheap checks come first so a flood of duplicates or junk costs no signature work:
        size and shape, dedup (mempool, then committed), chain id, capacity, state, signature.
        """
        tx, body = self.screen(data, chain_id, limits=limits, is_committed=is_committed)
        check_costly(tx, body, check_state, verify_signature=not self.is_verified(tx.tx_hash))
        self.add(tx, local=local)
        return tx

    def screen(
        self,
        data: bytes,
        chain_id: str,
        *,
        limits: TxLimits = DEFAULT_TX_LIMITS,
        is_committed: Callable[[bytes], bool] = lambda _hash: False,
    ) -> tuple[SignedTx, TxBody]:
        """The cheap checks, in order: size and shape, dedup (mempool, then committed), chain
        id, capacity. Raises Refused naming the field. What remains (state, signature) may run
        on another thread; `add` then checks dedup and capacity again."""
        tx = decode_tx(data, limits)
        if tx.tx_hash in self._txs:
            raise Refused(Status.ALREADY_EXISTS, "is already in the mempool", "tx_hash")
        if is_committed(tx.tx_hash):
            raise Refused(Status.ALREADY_EXISTS, "is already committed (replay)", "tx_hash")
        body = decode_body(tx, limits)
        if body.chain_id != chain_id:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"is {body.chain_id!r}, this chain is {chain_id!r}",
                "chain_id",
            )
        self._check_capacity(len(tx.encoding))
        return tx, body

    def add(self, tx: SignedTx, *, local: bool) -> None:
        """Add a tx whose signature the caller has verified. Raises Refused when held or full."""
        if tx.tx_hash in self._txs:
            raise Refused(Status.ALREADY_EXISTS, "is already in the mempool", "tx_hash")
        self._check_capacity(len(tx.encoding))
        self._txs[tx.tx_hash] = tx
        self._bytes += len(tx.encoding)
        if len(self._txs) > self.limits.max_decoded_bodies:
            forget_decoded_body(tx)
        self._verified.pop(tx.tx_hash, None)  # membership now answers is_verified
        if local:
            self._gossip.append(tx.tx_hash)
            if len(self._gossip) > 2 * self.limits.max_txs:
                # Hashes committed before they were gossiped linger; drop them so the outbox
                # stays bounded by the mempool itself.
                self._gossip = deque(h for h in self._gossip if h in self._txs)
        assert len(self._txs) <= self.limits.max_txs and self._bytes <= self.limits.max_bytes

    def _check_capacity(self, size_bytes: int) -> None:
        if len(self._txs) >= self.limits.max_txs:
            raise Refused(
                Status.RESOURCE_EXHAUSTED,
                f"mempool holds max_txs={self.limits.max_txs}; retry later",
                "mempool",
            )
        if self._bytes + size_bytes > self.limits.max_bytes:
            raise Refused(
                Status.RESOURCE_EXHAUSTED,
                f"mempool would exceed max_bytes={self.limits.max_bytes}; retry later",
                "mempool",
            )

    def is_verified(self, tx_hash: bytes) -> bool:
        """True when this exact tx (hash covers body, signer and signature) was verified here."""
        return tx_hash in self._txs or tx_hash in self._verified

    def mark_verified(self, tx_hash: bytes) -> None:
        """Remember a signature verified outside admission (a proposal's tx); bounded, LRU."""
        if tx_hash in self._txs:
            return
        self._verified[tx_hash] = None
        self._verified.move_to_end(tx_hash)
        while len(self._verified) > self.limits.max_verified_cache:
            self._verified.popitem(last=False)

    def batch(
        self,
        max_txs: int,
        max_bytes: int | None = None,
        exclude: Collection[bytes] = (),
    ) -> list[SignedTx]:
        """The oldest txs not in `exclude`, at most max_txs and max_bytes; nothing is removed."""
        chosen: list[SignedTx] = []
        total_bytes = 0
        for tx_hash, tx in self._txs.items():
            if len(chosen) >= max_txs:
                break
            if tx_hash in exclude:
                continue
            if max_bytes is not None and total_bytes + len(tx.encoding) > max_bytes:
                break
            chosen.append(tx)
            total_bytes += len(tx.encoding)
        return chosen

    def remove_committed(self, tx_hashes: Iterable[bytes]) -> int:
        """Drop committed txs (held or not); returns how many were held."""
        removed = 0
        for tx_hash in tx_hashes:
            tx = self._txs.pop(tx_hash, None)
            self._verified.pop(tx_hash, None)
            if tx is not None:
                self._bytes -= len(tx.encoding)
                removed += 1
        assert self._bytes >= 0
        return removed

    def take_gossip(self, max_txs: int, max_bytes: int | None = None) -> list[SignedTx]:
        """Up to max_txs (and max_bytes, but at least one tx) locally submitted txs not yet
        gossiped and still held, oldest first."""
        out: list[SignedTx] = []
        total_bytes = 0
        while self._gossip and len(out) < max_txs:
            tx_hash = self._gossip.popleft()
            tx = self._txs.get(tx_hash)
            if tx is None:
                continue
            if out and max_bytes is not None and total_bytes + len(tx.encoding) > max_bytes:
                self._gossip.appendleft(tx_hash)
                break
            out.append(tx)
            total_bytes += len(tx.encoding)
        return out
