"""Where the latency goes: the nodes' phase histograms (node/telemetry/timeline.py), read from
every node's metrics port before and after the load, merged over the nodes, as one figure per
phase: observations, mean, and p50/p99 estimated from the buckets (linear within a bucket, as
Prometheus's histogram_quantile does).

Block phases are observed by every node for every block it commits; tx phases by the node a
client submitted the tx to, once per tx. A node that does not answer its metrics port is left
out (`nodes_read` says how many answered both times).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kledger.cluster.bench.node_metrics import read_both

METRICS = ("kledger_block_phase_seconds", "kledger_tx_phase_seconds")


@dataclass(frozen=True, slots=True)
class Histogram:
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), +Inf last
    count: float
    total_s: float

    def minus(self, earlier: Histogram) -> Histogram:
        assert [le for le, _ in self.buckets] == [le for le, _ in earlier.buckets]
        return Histogram(
            tuple(
                (le, n - m) for (le, n), (_, m) in zip(self.buckets, earlier.buckets, strict=True)
            ),
            self.count - earlier.count,
            self.total_s - earlier.total_s,
        )

    def plus(self, other: Histogram) -> Histogram:
        return Histogram(
            tuple((le, n + m) for (le, n), (_, m) in zip(self.buckets, other.buckets, strict=True)),
            self.count + other.count,
            self.total_s + other.total_s,
        )

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds, interpolated within its bucket; None when empty."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower  # beyond the last bound: the bound is all we know
                inside = cumulative - below
                return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = le, cumulative
        return lower


# (metric, phase) -> histogram
Snapshot = dict[tuple[str, str], Histogram]


def parse(text: str) -> Snapshot:
    """The phase histograms of one node's exposition text."""
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    counts: dict[tuple[str, str], float] = {}
    sums: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in METRICS:
            continue
        for sample in family.samples:
            key = (family.name, sample.labels.get("phase", ""))
            if sample.name.endswith("_bucket"):
                buckets.setdefault(key, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
            elif sample.name.endswith("_sum"):
                sums[key] = sample.value
    return {
        key: Histogram(tuple(sorted(found)), counts.get(key, 0.0), sums.get(key, 0.0))
        for key, found in buckets.items()
    }


def parse_all(texts: dict[str, str | None]) -> dict[str, Snapshot | None]:
    return {org: None if text is None else parse(text) for org, text in texts.items()}


def figures(
    before: dict[str, Snapshot | None], after: dict[str, Snapshot | None]
) -> dict[str, Any]:
    """Per phase over the load, merged over the nodes read both times: {"block": {phase:
    {count, mean_ms, p50_ms, p99_ms}}, "tx": {...}, "nodes_read": n}."""
    merged: Snapshot = {}
    pairs = list(read_both(before, after))
    nodes_read = len(pairs)
    for start, end in pairs:
        for key, histogram in end.items():
            if key not in start:
                continue
            delta = histogram.minus(start[key])
            merged[key] = merged[key].plus(delta) if key in merged else delta
    out: dict[str, Any] = {"block": {}, "tx": {}, "nodes_read": nodes_read}
    for (metric, phase), histogram in sorted(merged.items()):
        kind = "block" if metric == METRICS[0] else "tx"
        out[kind][phase] = _summary(histogram)
    return out


def _summary(histogram: Histogram) -> dict[str, Any]:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(1000 * seconds, 2)

    count = int(histogram.count)
    return {
        "count": count,
        "mean_ms": ms(histogram.total_s / count) if count else None,
        "p50_ms": ms(histogram.quantile(0.5)),
        "p99_ms": ms(histogram.quantile(0.99)),
    }
