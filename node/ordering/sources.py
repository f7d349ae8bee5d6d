"""Budgets and penalties per source of txs (a peer org, or a client connection), so that no one
source can take more than its share of a node's admission work.

Rules it keeps:
- in flight: the txs a source has waiting for or in their checks are at most `per_source_txs`,
  and with `total_txs` all sources' together are at most that; a grant never exceeds either;
- penalty: a source whose batch carried a bad signature is refused for `penalty_ms` (an
  honest peer never gossips one: it checked every tx it forwards; an honest client rarely
  sends one). A new offence while throttled starts the window again. After the window the
  source stays on probation for PROBATION_PENALTIES more windows (`on_probation`): the caller
  may treat it more strictly than a source that never offended;
- bounded memory: a source is remembered while it has txs in flight or a penalty running, and
  at most MAX_THROTTLED_SOURCES penalties are kept (the oldest is forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_THROTTLED_SOURCES = 10_000
# How many penalty windows a source stays on probation after its last offence.
PROBATION_PENALTIES = 6


class SourceBudgets:
    def __init__(
        self,
        per_source_txs: int,
        penalty_ms: int,
        total_txs: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert per_source_txs > 0 and penalty_ms >= 0 and (total_txs is None or total_txs > 0)
        self.per_source_txs = per_source_txs
        self._total_txs = total_txs
        self._penalty_s = penalty_ms / 1000
        self._clock = clock
        self._inflight: dict[str, int] = {}
        self._throttled_until: OrderedDict[str, float] = OrderedDict()
        self._offending_since: dict[str, float] = {}  # first offence of the current probation
        self._inflight_total = 0

    def inflight(self, source: str | None = None) -> int:
        return self._inflight_total if source is None else self._inflight.get(source, 0)

    def throttled_s(self, source: str) -> float:
        """Seconds left of `source`'s penalty; 0.0 when it has none."""
        until = self._throttled_until.get(source)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= -PROBATION_PENALTIES * self._penalty_s:
            del self._throttled_until[source]  # probation over too: forget it
            self._offending_since.pop(source, None)
        return max(left, 0.0)

    def on_probation(self, source: str) -> bool:
        """Whether `source` offended within the last PROBATION_PENALTIES penalty windows."""
        until = self._throttled_until.get(source)
        return until is not None and self._clock() < until + PROBATION_PENALTIES * self._penalty_s

    def offending_since(self, source: str) -> float | None:
        """When `source` first offended in its current probation (clock seconds), or None."""
        return self._offending_since.get(source) if self.on_probation(source) else None

    def penalize(self, source: str) -> None:
        now = self._clock()
        if not self.on_probation(source):
            self._offending_since[source] = now
        self._throttled_until.pop(source, None)
        self._throttled_until[source] = now + self._penalty_s
        while len(self._throttled_until) > MAX_THROTTLED_SOURCES:
            forgotten, _ = self._throttled_until.popitem(last=False)
            self._offending_since.pop(forgotten, None)

    def reserve(self, source: str, wanted: int) -> int:
        """Grant up to `wanted` txs in flight for `source`; returns how many (maybe 0)."""
        room = self.per_source_txs - self._inflight.get(source, 0)
        if self._total_txs is not None:
            room = min(room, self._total_txs - self._inflight_total)
        granted = max(0, min(wanted, room))
        if granted:
            self._inflight[source] = self._inflight.get(source, 0) + granted
            self._inflight_total += granted
        return granted

    def release(self, source: str, count: int) -> None:
        if count == 0:
            return
        left = self._inflight[source] - count
        assert left >= 0, f"{source} released more than it reserved"
        self._inflight_total -= count
        if left:
            self._inflight[source] = left
        else:
            del self._inflight[source]
