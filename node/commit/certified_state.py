"""The registry state that queries answer from: the newest height that has both a commit
certificate and a frozen LevelDB snapshot of its state.

Why snapshots: a certificate for height h arrives after h is committed, and by then later
blocks may have changed the live state. Each commit takes a snapshot (cheap in LevelDB: a
sequence number); when h's certificate arrives, h's snapshot becomes the query state, so an
answer, its state proofs and the certified header always describe the same height. Only a few
recent snapshots are kept: each pins old versions of the data.

Older heights answer single-key proofs only (`proof_at`): the state tree keeps every version a
height in the retention window reads (docs/design.md §7.3), the flat table only the current
values, so a query over many keys runs at the certified height alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.errors import Refused, Status
from kledger.node.proof import smt
from kledger.node.storage import state_tree
from kledger.node.storage.keyspace import ReadView
from kledger.node.storage.state_pruner import keep_from
from kledger.node.storage.store import LedgerStore, LevelView

SNAPSHOTS_KEPT = 8
MAX_STATE_KEY_BYTES = 1_024  # as node/proof/state_proof.py accepts


@dataclass(frozen=True, slots=True)
class HistoricProof:
    """A key's value (or absence) at a certified height, with the proof and what certifies it."""

    key: bytes
    value: bytes | None
    proof: smt.Proof
    header: Header
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class Snapshot:
    view: ReadView
    header: Header
    certificate: CommitCertificate
    prove: Callable[[bytes], smt.Proof]


class CertifiedState:
    def __init__(
        self,
        store: LedgerStore,
        retention_blocks: int,
        snapshots_kept: int = SNAPSHOTS_KEPT,
    ) -> None:
        self._store = store
        self._retention = retention_blocks
        self._kept = snapshots_kept
        self._recent: OrderedDict[int, LevelView] = OrderedDict()
        self._current: Snapshot | None = None
        if store.latest_certified_height() == store.last_height():
            self._promote(store.last_height(), store.snapshot_view())

    def committed(self, height: int) -> None:
        """Height `height` was just written: freeze its state until its certificate comes."""
        self._recent[height] = self._store.snapshot_view()
        while len(self._recent) > self._kept:
            self._recent.popitem(last=False)

    def certified(self, height: int) -> None:
        """Height `height` got its certificate: answer from it if it is newer."""
        view = self._recent.get(height)
        if view is not None:
            self._promote(height, view)

    def current(self) -> Snapshot:
        snapshot = self._current
        if snapshot is None:
            raise Refused(Status.UNAVAILABLE, "no certified state yet; retry shortly")
        return snapshot

    def proof_at(self, height: int, key: bytes) -> HistoricProof:
        """The proof of `key` at certified `height` (0: the latest certified height); refused
        by name when the height is pruned (older than the retention window) or not certified."""
        if not key.startswith(b"s/") or len(key) > MAX_STATE_KEY_BYTES:
            raise Refused(
                Status.INVALID_ARGUMENT,
                f"must be a registry state key (s/...) of at most {MAX_STATE_KEY_BYTES} bytes",
                "key",
            )
        # Last height read before the snapshot and the window after it: the snapshot then
        # holds that height's root and nothing the pruner removed that the height reads.
        newest = self._store.last_height()
        view = self._store.snapshot_view()
        if height == 0:
            height = self.current().header.height
        oldest = keep_from(self._store.last_height(), self._retention)
        if height < oldest:
            raise Refused(
                Status.FAILED_PRECONDITION,
                f"state at height {height} is pruned; the window is {self._retention} blocks "
                f"(oldest kept: {oldest})",
                "height",
            )
        header = self._store.header(height) if height <= newest else None
        certificate = self._store.certificate(height) if header is not None else None
        if header is None or certificate is None:
            raise Refused(
                Status.NOT_FOUND, f"height {height} has no certified header yet", "height"
            )
        value, proof = state_tree.prove(view, height, key)
        return HistoricProof(key, value, proof, header, certificate)

    def _promote(self, height: int, view: LevelView) -> None:
        header = self._store.header(height)
        certificate = self._store.certificate(height)
        if header is None or certificate is None:
            return
        if self._current is not None and self._current.header.height >= height:
            return
        self._current = Snapshot(
            view=view,
            header=header,
            certificate=certificate,
            prove=lambda key: state_tree.prove(view, height, key)[1],
        )
