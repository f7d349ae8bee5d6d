"""The benchmark's figures: percentiles, the limit this machine sets, the soak's committed tx/s
per window and memory slope, the table printed at the end, and the progress bars on stderr
(load, soak, preload).

Rules it keeps: every figure has its unit last in its name; a figure that was not measured (a
phase skipped) is None in the JSON and "-" in the table, never a made-up number.
"""

from __future__ import annotations

import math
import sys
from typing import Any, TextIO

PROGRESS_BAR_CHARS = 40


def percentile(samples: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of samples (None when empty)."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_ms(samples_s: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, fraction in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        value = percentile(samples_s, fraction)
        out[name] = None if value is None else round(value * 1000, 2)
    return out


def limit_tx_per_s(cores: int, verify_per_s_per_core: float, nodes: int) -> float:
    """Every node checks every signature once, all on this machine's cores."""
    return cores * verify_per_s_per_core / nodes


def progress(done: int, total: int, elapsed_s: float, out: TextIO = sys.stderr) -> None:
    filled = PROGRESS_BAR_CHARS * min(done, total) // max(total, 1)
    bar = "#" * filled + "-" * (PROGRESS_BAR_CHARS - filled)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    out.write(f"\r[{bar}] {done:>8}/{total} txs committed  {elapsed_s:6.1f} s  {rate:8.0f} tx/s")
    out.flush()


def preload_progress(done: int, total: int, elapsed_s: float, out: TextIO = sys.stderr) -> None:
    filled = PROGRESS_BAR_CHARS * min(done, total) // max(total, 1)
    bar = "#" * filled + "-" * (PROGRESS_BAR_CHARS - filled)
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left_s = (total - done) / rate if rate > 0 else 0.0
    out.write(
        f"\r[{bar}] {done:>9}/{total} txs preloaded  {elapsed_s:7.1f} s  {rate:7.0f} tx/s"
        f"  ETA {left_s:6.0f} s"
    )
    out.flush()


def soak_progress(
    elapsed_s: float, duration_s: float, committed: int, out: TextIO = sys.stderr
) -> None:
    filled = int(PROGRESS_BAR_CHARS * min(elapsed_s / max(duration_s, 1e-9), 1.0))
    bar = "#" * filled + "-" * (PROGRESS_BAR_CHARS - filled)
    rate = committed / elapsed_s if elapsed_s > 0 else 0.0
    out.write(
        f"\r[{bar}] {elapsed_s:6.0f}/{duration_s:.0f} s soak  {committed:>9} txs committed"
        f"  {rate:8.0f} tx/s"
    )
    out.flush()


def windows(
    per_second: dict[int, int], start_s: float, elapsed_s: float, window_s: float
) -> list[dict[str, float]]:
    """Committed txs per window of `window_s` from `start_s` (CLOCK_MONOTONIC) over `elapsed_s`,
    from counts per whole monotonic second (a count is placed at the middle of its second); the
    last window may be shorter."""
    count = max(1, math.ceil(elapsed_s / window_s))
    totals = [0] * count
    for second, txs in per_second.items():
        index = int((second + 0.5 - start_s) // window_s)
        totals[min(max(index, 0), count - 1)] += txs
    out = []
    for index, txs in enumerate(totals):
        begin_s = index * window_s
        length_s = max(min(window_s, elapsed_s - begin_s), 1e-9)
        out.append(
            {
                "start_s": round(begin_s, 1),
                "length_s": round(length_s, 1),
                "committed_txs": txs,
                "tx_per_s": round(txs / length_s, 1),
            }
        )
    return out


def second_half_slope_mib_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of memory (MiB per minute) over the samples of the second half of
    the sampled time (None with fewer than two there)."""
    if not samples:
        return None
    middle_s = (samples[0][0] + samples[-1][0]) / 2
    half = [(t / 60, b / 2**20) for t, b in samples if t >= middle_s]
    if len(half) < 2:
        return None
    mean_t = sum(t for t, _ in half) / len(half)
    mean_m = sum(m for _, m in half) / len(half)
    spread_t = sum((t - mean_t) ** 2 for t, _ in half)
    if spread_t == 0:
        return None
    return round(sum((t - mean_t) * (m - mean_m) for t, m in half) / spread_t, 3)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _proof_row(proofs: dict[str, Any]) -> str:
    latency = proofs.get("latency_ms", {})
    return (
        f"{_fmt(proofs.get('per_s'))} / {_fmt(latency.get('p50'), 2)}"
        f" / {_fmt(latency.get('p99'), 2)}"
    )


def _phase_row(report: dict[str, Any], kind: str) -> str:
    found = (report.get("phases") or {}).get(kind) or {}
    if not found:
        return "-"
    return ", ".join(
        f"{phase} {_fmt(f['mean_ms'], 1)} / {_fmt(f['p99_ms'], 1)}" for phase, f in found.items()
    )


def _leveldb_row(report: dict[str, Any]) -> str:
    found = report.get("leveldb") or {}
    if not found.get("levels"):
        return "-"
    per_level = ", ".join(
        f"{level} {f['written_mib']:,} / {f['compaction_s']}"
        for level, f in found["levels"].items()
    )
    return f"{_fmt(found['written_bytes_per_tx_per_node'], 0)} ({per_level})"


def _own_core_row(report: dict[str, Any]) -> str:
    own = report.get("own_core")
    if not own:
        return "- (all nodes share every core)"
    return f"{own['org']}: {_fmt(own['cores_busy'], 2)} / {_fmt(own['tx_per_s_per_core'])}"


def _paced_row(paced: dict[str, Any] | None) -> str:
    if not paced:
        return "- (as fast as the window allows)"
    return (
        f"{_fmt(paced['offered_tx_per_s'])} / {paced['late_batches']} / "
        f"{_fmt(paced['max_lag_ms'], 1)}"
    )


def table(report: dict[str, Any]) -> str:
    """The human summary of one run's JSON object."""
    lat = report["latency_ms"]
    proofs = report.get("proofs") or {}
    catchup = report.get("catchup") or {}
    preload = report.get("preload") or {}
    soak = report.get("soak") or {}
    rows = [
        ("nodes / clients / txs", f"{report['nodes']} / {report['clients']} / {report['txs']}"),
        (
            "committed txs (OK receipts sampled)",
            f"{report['committed_txs']:,} "
            f"({_fmt(report['ok_fraction_sampled'], 3)} of {report['receipts_sampled']} OK)",
        ),
        ("committed tx/s", _fmt(report["committed_tx_per_s"])),
        ("offered tx/s (paced) / late batches / max lag ms", _paced_row(report.get("paced"))),
        ("first node on its own core: cores busy / tx/s per core", _own_core_row(report)),
        (
            "latency ms p50 / p95 / p99",
            f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])}",
        ),
        ("block phases, mean / p99 ms (all nodes)", _phase_row(report, "block")),
        ("client tx phases, mean / p99 ms", _phase_row(report, "tx")),
        ("Ed25519 verify/s per core", _fmt(report["verify_per_s_per_core"], 0)),
        ("cores", str(report["cores"])),
        ("limit tx/s (cores * verify / n)", _fmt(report["limit_tx_per_s"], 0)),
        ("ratio to limit", _fmt(report["ratio_to_limit"], 3)),
        ("node CPU ms per committed tx (all nodes)", _fmt(report["node_cpu_ms_per_tx"], 3)),
        ("client CPU s (all clients)", _fmt(report["client_cpu_s"], 2)),
        (
            "LevelDB bytes written per tx per node (per level: MiB written / compaction s)",
            _leveldb_row(report),
        ),
        ("bytes on disk per committed tx (per node)", _fmt(report["disk_bytes_per_tx"], 0)),
        (
            "live state keys / bytes on disk per live key (per node)",
            f"{_fmt(report['live_state_keys'])} / {_fmt(report['disk_bytes_per_live_key'], 0)}",
        ),
        ("proofs/s (one client) / p50 / p99 ms", _proof_row(proofs)),
        ("  the same, serving node on its own core", _proof_row(proofs.get("own_core") or {})),
        ("state proofs/s (one client) / p50 / p99 ms", _proof_row(proofs.get("state") or {})),
        (
            "  the same, serving node on its own core",
            _proof_row((proofs.get("state") or {}).get("own_core") or {}),
        ),
        (
            "catch-up blocks/s / tx/s",
            f"{_fmt(catchup.get('blocks_per_s'))} / {_fmt(catchup.get('tx_per_s'))}",
        ),
        ("catch-up vs cluster commit rate", _fmt(catchup.get("ratio_to_commit_rate"), 2)),
        (
            "catch-up txs behind (how)",
            f"{_fmt(catchup.get('behind_txs'))} ({catchup.get('method', '-')})",
        ),
        (
            "preloaded txs / s per 10k txs",
            f"{_fmt(preload.get('txs'))} / {_fmt(preload.get('s_per_10k_txs'), 2)}",
        ),
    ]
    if soak:
        rows.append(("soak s / committed tx/s per window", _soak_windows(soak)))
    if etcd := report.get("etcd"):
        rows.append(("etcd puts/s, same clients (3 members)", _fmt(etcd["puts_per_s"])))
        rows.append(("ratio to etcd", _fmt(report["ratio_to_etcd"], 3)))
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(
        f"{'node':<8} {'cpu s':>8} {'main thread s':>14} {'cpu ms/tx':>10} {'peak RSS MiB':>13}"
        f" {'disk MiB':>9} {'view changes':>13}"
    )
    for node in report["per_node"]:
        lines.append(
            f"{node['org']:<8} {_fmt(node['cpu_s'], 2):>8}"
            f" {_fmt(node.get('main_thread_cpu_s'), 2):>14} {_fmt(node['cpu_ms_per_tx'], 3):>10} "
            f"{_fmt(_mib(node['peak_rss_bytes'])):>13} {_fmt(_mib(node['disk_bytes'])):>9}"
            f" {_fmt(node.get('view_changes')):>13}"
        )
    if soak:
        lines.append("")
        lines.append(
            f"{'soak MiB':<8} {'RSS start':>10} {'end':>8} {'max':>8} {'/min 2nd half':>14}"
            f" {'anon start':>11} {'end':>8} {'max':>8} {'/min 2nd half':>14}"
        )
        for node in soak["per_node"]:
            lines.append(
                f"{node['org']:<8} {_fmt(_mib(node['rss_start_bytes'])):>10}"
                f" {_fmt(_mib(node['rss_end_bytes'])):>8} {_fmt(_mib(node['rss_max_bytes'])):>8}"
                f" {_fmt(node['rss_slope_mib_per_min'], 2):>14}"
                f" {_fmt(_mib(node['anon_start_bytes'])):>11}"
                f" {_fmt(_mib(node['anon_end_bytes'])):>8} {_fmt(_mib(node['anon_max_bytes'])):>8}"
                f" {_fmt(node['anon_slope_mib_per_min'], 2):>14}"
            )
    return "\n".join(lines)


def _soak_windows(soak: dict[str, Any]) -> str:
    rates = " ".join(_fmt(w["tx_per_s"], 0) for w in soak["windows"])
    return f"{_fmt(soak['duration_s'], 0)} / {rates}"


def _mib(value: int | None) -> float | None:
    return None if value is None else value / (1024 * 1024)
