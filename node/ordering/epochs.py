"""The one place that answers "the validator set of epoch e" on a live node (docs/design.md
§4.8), and the facts about epochs the payload source, certifier, peer admission and block sync
need: the ready next set (what a leader proposes as the marker and a replica votes for), the
orgs that are joining, the height of an epoch's last block and the certificate that ended it.

Rules kept here:
- a set comes from the executed committed state (`s/validators/<e>`, written by the marker
  block's execution) or, for the epoch the core entered before its marker executed, from what
  validator_set_after just returned (`entered`): both are committed facts, so every honest node
  gives the same answer;
- the answers about the ready next set read the executed committed state of now, so a node
  whose execution lags says "not ready" (it votes in a later round), never something else;
- sets are immutable once known, so they are cached (bounded: MAX_CACHED_EPOCHS).
"""

from __future__ import annotations

import threading
from typing import Any

from kledger.consensus import DecodeError, QuorumCert
from kledger.consensus.validators import ValidatorSet
from kledger.node.registry import Registry
from kledger.node.storage.store import LedgerStore

MAX_CACHED_EPOCHS = 1024


class EpochSets:
    def __init__(self, store: LedgerStore, registry: Registry) -> None:
        self._store = store
        self._registry = registry
        self._lock = threading.Lock()  # the loop and the commit worker thread both ask
        self._sets: dict[int, ValidatorSet] = {}
        current = registry.current_set(store.view)
        self._current = current
        self._entered = current

    # -- sets --------------------------------------------------------------------------------

    def set_of(self, epoch: int) -> ValidatorSet | None:
        """The validator set of `epoch`, or None if this node does not know it (yet)."""
        with self._lock:
            known = self._sets.get(epoch)
            if known is not None:
                return known
            if self._entered.epoch == epoch:
                return self._entered
        found = self._registry.validators_of_epoch(self._store.view, epoch)
        if found is not None:
            with self._lock:
                if len(self._sets) >= MAX_CACHED_EPOCHS:
                    self._sets.clear()
                self._sets[epoch] = found
        return found

    def entered(self, validators: ValidatorSet) -> None:
        """The consensus core runs `validators` now (validator_set_after returned it, or the
        node restarted into it): its set is known before its marker block executes."""
        with self._lock:
            if validators.epoch >= self._entered.epoch:
                self._entered = validators

    @property
    def current(self) -> ValidatorSet:
        """The set of the epoch consensus runs now."""
        with self._lock:
            return self._entered

    # -- the pending change ------------------------------------------------------------------

    def ready_next_set(self) -> ValidatorSet | None:
        """The decided next set once every new key announced itself, in the executed state."""
        return self._registry.ready_next_set(self._store.view)

    def pending_record(self) -> dict[str, Any] | None:
        """The decided next set as stored (epoch, validators, decided_height, waiting_for)."""
        return self._registry.next_set_record(self._store.view)

    def joining_orgs(self) -> frozenset[str]:
        """Orgs of the pending next set that are not in the current set: they sync as
        followers before their epoch, so peers admit them."""
        record = self.pending_record()
        if record is None:
            return frozenset()
        current = self.current
        return frozenset(org for org, _ in record["validators"] if not current.contains(org))

    # -- how epochs ended --------------------------------------------------------------------

    def members_last_heights(self) -> dict[str, int]:
        """Every org that was a member of an ended epoch -> the last height of the last ended
        epoch it was a member of (what a former validator may still sync). One read of the
        epoch index per ended epoch (the sets are cached)."""
        last: dict[str, int] = {}
        for epoch in range(self.current.epoch):
            validators, height = self.set_of(epoch), self.ending_height(epoch)
            if validators is not None and height is not None:
                last.update(dict.fromkeys(validators.ids, height))
        return last

    def ending_height(self, epoch: int) -> int | None:
        """The height of `epoch`'s last block (its marker block) in this node's store, or None
        while the epoch runs here: the store's epoch index, written in that block's batch."""
        end = self._store.epoch_end(epoch)
        return None if end is None else end.last_height

    def ending_qc(self, epoch: int) -> QuorumCert | None:
        """The commit certificate stored with `epoch`'s last block (it commits that block or a
        block of its empty suffix): answers a peer's EpochRequest."""
        height = self.ending_height(epoch)
        if height is None:
            return None
        record = self._store.block(height)
        if record is None or not record.commit_qc:
            return None
        try:
            qc = QuorumCert.decode(record.commit_qc)
        except DecodeError:
            return None
        return qc if qc.epoch == epoch else None
