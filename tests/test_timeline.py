"""The block timeline: each phase of a block's life and of a client tx's, observed once when
the block is announced, on the clock the timeline reads (node/telemetry/timeline.py). The real
nodes' figures are checked end to end by tests/test_bench.py (the bench reads them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from kledger.cluster.bench import phases
from kledger.node.telemetry import timeline as timeline_module
from kledger.node.telemetry.timeline import BLOCK_PHASES, TX_PHASES, BlockTimeline


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def at(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock()
    monkeypatch.setattr(BlockTimeline, "now", staticmethod(fake))
    yield fake


def figures(registry: CollectorRegistry, metric: str) -> Callable[[str], tuple[float, float]]:
    def of(phase: str) -> tuple[float, float]:
        labels = {"org": "ORG1", "phase": phase}
        count = registry.get_sample_value(f"{metric}_count", labels) or 0.0
        total = registry.get_sample_value(f"{metric}_sum", labels) or 0.0
        return count, round(total, 6)

    return of


def test_every_phase_of_a_block_and_of_its_client_tx_is_observed_once(clock: Clock) -> None:
    registry = CollectorRegistry()
    timeline = BlockTimeline("ORG1", registry)
    block = figures(registry, "kledger_block_phase_seconds")
    tx = figures(registry, "kledger_tx_phase_seconds")
    assert all(block(p) == (0.0, 0.0) for p in BLOCK_PHASES)  # every phase exported from start
    clock.at(10.5)
    timeline.client_txs([b"tx-1"], received=10.0)
    clock.at(11.0)
    timeline.proposal(b"B1", b"B0")
    timeline.proposal(b"B1", b"B0")  # the same proposal again: the first arrival counts
    clock.at(11.2)
    timeline.proposal(b"B2", b"B1")  # the child carries B1's QC: B1 is certified
    clock.at(11.3)
    timeline.committed([(b"B1", 5)])
    clock.at(11.35)
    timeline.executing(5)
    clock.at(11.6)
    timeline.executed(5)
    clock.at(11.7)
    timeline.announced(5, [b"tx-1", b"gossiped-from-elsewhere"])
    assert block("proposal_to_certified") == (1.0, 0.2)
    assert block("certified_to_committed") == (1.0, 0.1)
    assert block("commit_queue") == (1.0, 0.05)
    assert block("execute") == (1.0, 0.25)
    assert block("announce") == (1.0, 0.1)
    assert tx("admission") == (1.0, 0.5)
    assert tx("admitted_to_proposal") == (1.0, 0.5)
    assert tx("proposal_to_announced") == (1.0, 0.7)
    assert tx("received_to_announced") == (1.0, 1.7)
    # Announced once: the height and its tx are forgotten, a repeat observes nothing.
    timeline.announced(5, [b"tx-1"])
    assert block("execute") == (1.0, 0.25) and tx("admission") == (1.0, 0.5)


def test_a_height_it_never_saw_proposed_observes_only_what_it_saw(clock: Clock) -> None:
    registry = CollectorRegistry()
    timeline = BlockTimeline("ORG1", registry)
    block = figures(registry, "kledger_block_phase_seconds")
    tx = figures(registry, "kledger_tx_phase_seconds")
    timeline.client_txs([b"tx-1"], received=99.0)
    timeline.committed([(b"B7", 7)])  # e.g. its proposal arrived before a restart
    clock.at(100.5)
    timeline.executing(7)
    timeline.executed(7)
    timeline.announced(7, [b"tx-1"])
    timeline.announced(8, [])  # block sync: no step seen at all
    assert block("proposal_to_certified") == (0.0, 0.0)
    assert block("commit_queue")[0] == 1.0 and block("announce")[0] == 1.0
    assert tx("received_to_announced") == (1.0, 1.5)
    assert tx("admitted_to_proposal") == (0.0, 0.0)  # no proposal moment to measure from
    assert set(TX_PHASES) == {"admission", "admitted_to_proposal", "proposal_to_announced",
                              "received_to_announced"}  # fmt: skip


def test_what_it_remembers_is_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeline_module, "MAX_TRACKED_TXS", 3)
    monkeypatch.setattr(timeline_module, "MAX_TRACKED_BLOCKS", 2)
    registry = CollectorRegistry()
    timeline = BlockTimeline("ORG1", registry)
    tx = figures(registry, "kledger_tx_phase_seconds")
    timeline.client_txs([b"a", b"b", b"c", b"d"], received=100.0)  # "a" is forgotten
    for index in range(5):  # proposals of blocks that never commit (lost to view changes)
        timeline.proposal(bytes([index]), b"")
    timeline.committed([(bytes([9]), height) for height in range(5)])  # never announced
    assert len(timeline._txs) == 3 and len(timeline._blocks) <= 2
    assert len(timeline._by_height) <= 2
    timeline.announced(99, [b"a", b"b"])
    assert tx("admission")[0] == 1.0  # only "b" was still remembered


def test_the_bench_reads_the_phases_back_from_the_exposition_text(clock: Clock) -> None:
    """cluster/bench/phases.py: what a node exports, parsed, differenced and merged."""
    registry = CollectorRegistry()
    timeline = BlockTimeline("ORG1", registry)
    before = {"ORG1": phases.parse(generate_latest(registry).decode()), "ORG2": None}
    for height, execute_s in enumerate((0.004, 0.004, 0.004, 0.4), start=1):
        block_id = bytes([height])
        timeline.committed([(block_id, height)])
        timeline.executing(height)
        clock.at(clock.t + execute_s)
        timeline.executed(height)
        timeline.announced(height, [])
    after = {"ORG1": phases.parse(generate_latest(registry).decode()), "ORG2": None}
    found = phases.figures(before, after)
    assert found["nodes_read"] == 1  # ORG2 did not answer
    execute = found["block"]["execute"]
    assert execute["count"] == 4 and execute["mean_ms"] == pytest.approx(103.0)
    assert 2.0 <= execute["p50_ms"] <= 5.0  # inside the 2-5 ms bucket
    assert 300.0 <= execute["p99_ms"] <= 500.0  # inside the 300-500 ms bucket
    assert found["tx"]["admission"]["count"] == 0 and found["tx"]["admission"]["p50_ms"] is None
