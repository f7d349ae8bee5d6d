"""The registry state that queries answer from: the newest height that has both a commit
certificate and a frozen LevelDB snapshot of its state.

Why snapshots: a certificate for height h arrives after h is committed, and by then later
blocks may have changed the live state. Each commit takes a snapshot (cheap in LevelDB: a
sequence number); when h's certificate arrives, h's snapshot becomes the query state, so an
answer, its state proofs and the certified header always describe the same height. Only a few
recent snapshots are kept: each pins old versions of the data.
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
from kledger.node.storage.store import LedgerStore, LevelView

SNAPSHOTS_KEPT = 8


@dataclass(frozen=True, slots=True)
class Snapshot:
    view: ReadView
    header: Header
    certificate: CommitCertificate
    prove: Callable[[bytes], smt.Proof]


class CertifiedState:
    def __init__(self, store: LedgerStore, snapshots_kept: int = SNAPSHOTS_KEPT) -> None:
        self._store = store
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
