"""Is this node's clock in step with the others? Every proposal carries its leader's clock
(block.timestamp_ms); the gap to our clock when it arrives, per peer, tells.

A proposal more than `max_clock_skew_ms` ahead of our clock is refused (the core counts
`timestamp_ahead`), so a node whose clock runs slow stops voting, and one whose clock runs fast
proposes blocks every replica refuses. Neither shows in the node's own behaviour, so the node
watches: the median over peers of (their latest proposal's timestamp - our clock on arrival)
is near zero (minus the network delay) when clocks agree, far positive when ours is slow, far
negative when ours is fast. Past the tolerance the node says so in its log (on each change of
state, and at most once a minute while it lasts), in GetStatus and in a metric.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

from kledger.node.telemetry.logs import log_event

log = logging.getLogger("kledger.clock")

REPEAT_WARNING_MS = 60_000


@dataclass(frozen=True, slots=True)
class ClockReading:
    state: str  # "ok", "slow", "fast", or "unknown" (no proposal from a peer seen yet)
    offset_ms: int | None  # median over peers of their clock minus ours


class ClockHealth:
    def __init__(self, tolerance_ms: int) -> None:
        self._tolerance_ms = tolerance_ms
        self._offsets: dict[str, int] = {}  # the latest sample per peer: bounded by the set
        self._reported = "unknown"
        self._warned_at_ms: int | None = None

    def observe(self, peer: str, timestamp_ms: int, local_ms: int, is_peer: bool) -> None:
        """A proposal from `peer` stamped `timestamp_ms` arrived at our `local_ms`. Only
        validators' proposals count (`is_peer`), so the samples stay bounded by the set."""
        if not is_peer:
            return
        self._offsets[peer] = timestamp_ms - local_ms
        self._report(local_ms)

    def reading(self) -> ClockReading:
        if not self._offsets:
            return ClockReading("unknown", None)
        offset = int(statistics.median(self._offsets.values()))
        if offset > self._tolerance_ms:
            return ClockReading("slow", offset)
        if offset < -self._tolerance_ms:
            return ClockReading("fast", offset)
        return ClockReading("ok", offset)

    def _report(self, local_ms: int) -> None:
        reading = self.reading()
        changed = reading.state != self._reported
        repeat = (
            reading.state in ("slow", "fast")
            and self._warned_at_ms is not None
            and local_ms - self._warned_at_ms >= REPEAT_WARNING_MS
        )
        if not (changed or repeat):
            return
        self._reported = reading.state
        if reading.state in ("slow", "fast"):
            self._warned_at_ms = local_ms
            log_event(
                log,
                "clock_skew",
                logging.WARNING,
                state=reading.state,
                offset_ms=reading.offset_ms,
                tolerance_ms=self._tolerance_ms,
                effect=(
                    "peers' proposals look ahead: this node refuses them and does not vote"
                    if reading.state == "slow"
                    else "this node's proposals look ahead to its peers: they refuse them"
                ),
            )
        elif changed and reading.state == "ok":
            self._warned_at_ms = None
            log_event(log, "clock_in_step", offset_ms=reading.offset_ms)
