"""Clock health from the peers' proposal timestamps: the median offset over peers decides
ok / slow / fast against the tolerance; the log says so on each change and at most once a
minute while it lasts."""

from __future__ import annotations

import logging

import pytest

from kledger.node.ordering.clock_health import ClockHealth


def test_the_median_over_peers_decides_and_one_peer_cannot() -> None:
    clock = ClockHealth(tolerance_ms=5_000)
    assert clock.reading().state == "unknown" and clock.reading().offset_ms is None
    clock.observe("A", 10_000 - 40, 10_000, True)
    clock.observe("B", 10_000 - 20, 10_000, True)
    clock.observe("C", 10_000 + 90_000, 10_000, True)  # one peer far off: the median holds
    assert clock.reading().state == "ok"
    clock.observe("A", 20_000 - 70_000, 20_000, True)
    clock.observe("B", 20_000 - 70_000, 20_000, True)  # now two of three see us 70 s ahead
    assert clock.reading().state == "fast" and clock.reading().offset_ms == -70_000


def test_the_log_says_so_on_change_and_then_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ClockHealth(tolerance_ms=5_000)
    with caplog.at_level(logging.INFO, logger="kledger.clock"):
        for second in range(0, 130):
            now = second * 1_000
            clock.observe("A", now + 60_000, now, True)
        clock.observe("A", 200_000, 200_000, True)
    events = [r.getMessage() for r in caplog.records]
    assert events == ["clock_skew", "clock_skew", "clock_skew", "clock_in_step"]
