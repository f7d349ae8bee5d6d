"""The national-catalog benchmark's figures and its table (`kledger bench-catalog`).

    figures(...) -> dict     the JSON object of one run
    table(report) -> str     the same, for a terminal
    rate_window(samples, start_s, total, low, high) -> works/s between two fractions

Rules kept here: every figure has its unit last in its name; the first and last 10 % are
fractions of the works committed, located on the importers' merged samples by linear
interpolation between samples (a sample is one decided chunk of one importer, so at a few
hundred works per chunk a small run's windows are coarse); a figure not measured is None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kledger.cluster.bench.catalog_client import ImportResult

if TYPE_CHECKING:  # only for the annotations: catalog imports this module
    from kledger.cluster.bench.catalog import Settings
    from kledger.cluster.bench.catalog_data import Catalog

WINDOW_FRACTION = 0.10
CURVE_POINTS = 100  # the works phase's progress curve in the JSON, at most this many points


def merged(results: Sequence[ImportResult]) -> list[tuple[float, int]]:
    """(time, works committed by then, all importers together), in time order."""
    points = sorted((t, works) for r in results for t, works, _ in r.samples)
    out: list[tuple[float, int]] = []
    done = 0
    for t, works in points:
        done += works
        out.append((t, done))
    return out


def time_at(curve: list[tuple[float, int]], start_s: float, target: float) -> float | None:
    """When the merged count reaches `target`, interpolated linearly from the sample before."""
    before_t, before_n = start_s, 0
    for t, n in curve:
        if n >= target:
            if n == before_n:
                return t
            return before_t + (t - before_t) * (target - before_n) / (n - before_n)
        before_t, before_n = t, n
    return None


def rate_window(
    curve: list[tuple[float, int]], start_s: float, total: int, low: float, high: float
) -> float | None:
    """Works per second between the moments `low` and `high` (fractions) of `total` works."""
    if total <= 0:
        return None
    begin = start_s if low == 0 else time_at(curve, start_s, low * total)
    end = time_at(curve, start_s, high * total)
    if begin is None or end is None or end <= begin:
        return None
    return (high - low) * total / (end - begin)


def cpu_ms_per_tx_window(
    ticks: list[tuple[int, float]], total_txs: int, total_cpu_s: float, low: float, high: float
) -> float | None:
    """All nodes' CPU ms per tx committed between the fractions `low` and `high` of the
    phase's txs, from the (txs committed, CPU s) read at each progress tick, interpolated."""
    if total_txs <= 0:
        return None
    points = sorted({(0, 0.0), *ticks, (total_txs, total_cpu_s)})

    def cpu_at(txs: float) -> float:
        before = points[0]
        for point in points:
            if point[0] >= txs:
                if point[0] == before[0]:
                    return point[1]
                share = (txs - before[0]) / (point[0] - before[0])
                return before[1] + (point[1] - before[1]) * share
            before = point
        return points[-1][1]

    txs = (high - low) * total_txs
    return 1000 * (cpu_at(high * total_txs) - cpu_at(low * total_txs)) / txs


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _phase(name: str, phase: dict[str, Any], sign_us_per_tx: float) -> dict[str, Any]:
    results: list[ImportResult] = phase["results"]
    start_s = min(r.started_s for r in results)
    end_s = max(r.ended_s for r in results)
    elapsed_s = max(end_s - start_s, 1e-9)
    txs = sum(r.committed_txs for r in results)
    works = sum(r.works for r in results)
    wall_s = sum(r.ended_s - r.started_s for r in results)
    submit_s = sum(r.submit_s for r in results)
    batches = sum(r.batches for r in results)
    node_cpu = [v for v in phase["node_cpu_s"].values() if v is not None]
    out: dict[str, Any] = {
        "importers": len(results),
        "files": sum(r.files for r in results),
        "elapsed_s": round(elapsed_s, 2),
        "works": works,
        "committed_txs": txs,
        "tx_per_s": round(txs / elapsed_s, 1),
        "node_cpu_s": round(sum(node_cpu), 2),
        "node_cpu_ms_per_tx": round(1000 * sum(node_cpu) / max(txs, 1), 3),
        "profile": {
            "importer_wall_s": round(wall_s, 2),
            "in_submit_s": round(submit_s, 2),
            "outside_submit_s": round(wall_s - submit_s, 2),
            "batches": batches,
            "submit_ms_per_batch": round(1000 * submit_s / max(batches, 1), 1),
            "txs_per_batch": round(txs / max(batches, 1), 1),
            "importer_cpu_s": round(sum(r.cpu_s for r in results), 2),
            "signing_s_estimate": round(sign_us_per_tx * txs / 1e6, 2),
        },
    }
    cpu_first = cpu_ms_per_tx_window(phase["cpu_ticks"], txs, sum(node_cpu), 0, WINDOW_FRACTION)
    cpu_last = cpu_ms_per_tx_window(phase["cpu_ticks"], txs, sum(node_cpu), 0.9, 1.0)
    out["first_10pct_node_cpu_ms_per_tx"] = _round(cpu_first, 3)
    out["last_10pct_node_cpu_ms_per_tx"] = _round(cpu_last, 3)
    if name == "works":
        curve = merged(results)
        first = rate_window(curve, start_s, works, 0.0, WINDOW_FRACTION)
        last = rate_window(curve, start_s, works, 1 - WINDOW_FRACTION, 1.0)
        out["works_per_s"] = round(works / elapsed_s, 1)
        out["first_10pct_works_per_s"] = _round(first)
        out["last_10pct_works_per_s"] = _round(last)
        out["last_to_first_ratio"] = None if not first or last is None else round(last / first, 3)
        out["samples"] = len(curve)
        first_commit = curve[0][0] - start_s if curve else None
        out["first_works_committed_after_s"] = _round(first_commit, 2)
        points = curve[:: max(1, len(curve) // CURVE_POINTS)]
        if curve and points[-1] != curve[-1]:
            points.append(curve[-1])
        out["curve_s_works"] = [[round(t - start_s, 2), n] for t, n in points]
    return out


def figures(
    *,
    settings: Settings,
    catalog: Catalog,
    generated_s: float,
    planned: dict[str, dict[str, Any]],
    sign_us_per_tx: float,
    phases: dict[str, dict[str, Any]],
    disk: dict[str, int],
    live_state_keys: int,
    peak_rss: dict[str, int | None],
    cores: int,
) -> dict[str, Any]:
    by_type: Counter[str] = Counter()
    for plan in planned.values():
        by_type.update(plan["planned_by_type"])
    all_results = [r for phase in phases.values() for r in phase["results"]]
    refused: Counter[str] = Counter()
    not_sent: Counter[str] = Counter()
    for r in all_results:
        refused.update(r.refused)
        not_sent.update(r.not_sent)
    per_phase = {name: _phase(name, phase, sign_us_per_tx) for name, phase in phases.items()}
    total_s = sum(p["elapsed_s"] for p in per_phase.values())
    txs = sum(p["committed_txs"] for p in per_phase.values())
    works = per_phase["works"]["works"]
    node_cpu_s = sum(p["node_cpu_s"] for p in per_phase.values())
    mean_disk = sum(disk.values()) / max(len(disk), 1)
    return {
        "works": settings.works,
        "nodes": settings.nodes,
        "files": settings.files,
        "seed": settings.seed,
        "cores": cores,
        "catalog": {
            "cwr_files": len(catalog.of_kind("works")),
            "recording_files": len(catalog.of_kind("txs")),
            "recordings": catalog.recordings,
            "writers_pool": catalog.writers,
            "publishers_pool": catalog.publishers,
            "bytes": catalog.bytes,
            "generated_s": round(generated_s, 1),
            "planned_txs": sum(by_type.values()),
            "planned_by_type": dict(sorted(by_type.items())),
        },
        "imported_works": works,
        "committed_txs": txs,
        "elapsed_s": round(total_s, 2),
        "works_per_s": round(works / max(total_s, 1e-9), 1),
        "tx_per_s": round(txs / max(total_s, 1e-9), 1),
        "first_10pct_works_per_s": per_phase["works"]["first_10pct_works_per_s"],
        "last_10pct_works_per_s": per_phase["works"]["last_10pct_works_per_s"],
        "last_to_first_ratio": per_phase["works"]["last_to_first_ratio"],
        "accepted": sum(r.accepted for r in all_results),
        "already_in_ledger": sum(r.already for r in all_results),
        "refused_by_status": dict(sorted(refused.items())),
        "refusal_examples": [e for r in all_results for e in r.refusal_examples][:10],
        "not_sent_by_level": dict(sorted(not_sent.items())),
        "node_cpu_ms_per_tx": round(1000 * node_cpu_s / max(txs, 1), 3),
        "sign_us_per_tx": round(sign_us_per_tx, 1),
        "disk_bytes_per_work": round(mean_disk / max(works, 1), 1),
        "disk_bytes_per_node": disk,
        "live_state_keys": live_state_keys,
        "live_state_keys_per_work": round(live_state_keys / max(works, 1), 2),
        "peak_rss_bytes": peak_rss,
        "phases": per_phase,
    }


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    w, r = report["phases"]["works"], report["phases"]["recordings"]
    c = report["catalog"]
    rows = [
        ("catalog", f"{_fmt(report['works'])} works, {_fmt(c['recordings'])} recordings in "
                    f"{c['cwr_files']} CWR + {c['recording_files']} JSON-lines files, "
                    f"{_fmt(c['planned_txs'])} txs; written in {_fmt(c['generated_s'])} s"),
        ("cluster", f"{report['nodes']} nodes, {report['cores']} cores"),
        ("whole load", f"{_fmt(report['elapsed_s'])} s: {_fmt(report['works_per_s'])} works/s, "
                       f"{_fmt(report['tx_per_s'])} tx/s"),
        ("works phase", f"{_fmt(w['elapsed_s'])} s: {_fmt(w['works_per_s'])} works/s, "
                        f"{_fmt(w['tx_per_s'])} tx/s ({w['importers']} importers)"),
        ("first / last 10 %", f"{_fmt(w['first_10pct_works_per_s'])} / "
                              f"{_fmt(w['last_10pct_works_per_s'])} works/s, ratio "
                              f"{_fmt(w['last_to_first_ratio'], 2)}"),
        ("recordings phase", f"{_fmt(r['elapsed_s'])} s: {_fmt(r['tx_per_s'])} recordings/s"),
        ("refused", f"{report['refused_by_status'] or 'none'}; not sent "
                    f"{report['not_sent_by_level'] or 'none'}; already in ledger "
                    f"{_fmt(report['already_in_ledger'])}"),
        ("node CPU", f"{_fmt(report['node_cpu_ms_per_tx'])} ms per tx (all nodes); works "
                     f"phase first / last 10 %: {_fmt(w['first_10pct_node_cpu_ms_per_tx'], 2)} / "
                     f"{_fmt(w['last_10pct_node_cpu_ms_per_tx'], 2)}"),
        ("disk", f"{_fmt(report['disk_bytes_per_work'])} bytes per work per node"),
        ("live state keys", f"{_fmt(report['live_state_keys'])} "
                            f"({_fmt(report['live_state_keys_per_work'])} per work)"),
    ]  # fmt: skip
    for name, phase in (("works", w), ("recordings", r)):
        p = phase["profile"]
        rows.append(
            (
                f"{name} profile",
                f"{_fmt(p['in_submit_s'])} s in submit ({p['batches']} batches, "
                f"{_fmt(p['submit_ms_per_batch'])} ms each), {_fmt(p['outside_submit_s'])} s "
                f"outside (signing ≈ {_fmt(p['signing_s_estimate'])} s) of "
                f"{_fmt(p['importer_wall_s'])} importer-s",
            )
        )
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in rows)
