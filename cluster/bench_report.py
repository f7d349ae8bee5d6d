"""The benchmark's figures: percentiles, the limit this machine sets, the JSON object and the
table printed at the end, and the progress bar on stderr.

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


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(report: dict[str, Any]) -> str:
    """The human summary of one run's JSON object."""
    lat = report["latency_ms"]
    proofs = report.get("proofs") or {}
    catchup = report.get("catchup") or {}
    rows = [
        ("nodes / clients / txs", f"{report['nodes']} / {report['clients']} / {report['txs']}"),
        (
            "committed txs (OK receipts sampled)",
            f"{report['committed_txs']:,} "
            f"({_fmt(report['ok_fraction_sampled'], 3)} of {report['receipts_sampled']} OK)",
        ),
        ("committed tx/s", _fmt(report["committed_tx_per_s"])),
        (
            "latency ms p50 / p95 / p99",
            f"{_fmt(lat['p50'])} / {_fmt(lat['p95'])} / {_fmt(lat['p99'])}",
        ),
        ("Ed25519 verify/s per core", _fmt(report["verify_per_s_per_core"], 0)),
        ("cores", str(report["cores"])),
        ("limit tx/s (cores * verify / n)", _fmt(report["limit_tx_per_s"], 0)),
        ("ratio to limit", _fmt(report["ratio_to_limit"], 3)),
        ("node CPU ms per committed tx (all nodes)", _fmt(report["node_cpu_ms_per_tx"], 3)),
        ("client CPU s (all clients)", _fmt(report["client_cpu_s"], 2)),
        ("bytes on disk per committed tx (per node)", _fmt(report["disk_bytes_per_tx"], 0)),
        (
            "proofs/s (one client) / p50 / p99 ms",
            f"{_fmt(proofs.get('per_s'))} / {_fmt(proofs.get('latency_ms', {}).get('p50'), 2)}"
            f" / {_fmt(proofs.get('latency_ms', {}).get('p99'), 2)}",
        ),
        (
            "catch-up blocks/s / tx/s",
            f"{_fmt(catchup.get('blocks_per_s'))} / {_fmt(catchup.get('tx_per_s'))}",
        ),
        ("catch-up vs cluster commit rate", _fmt(catchup.get("ratio_to_commit_rate"), 2)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("")
    lines.append(
        f"{'node':<8} {'cpu s':>8} {'cpu ms/tx':>10} {'peak RSS MiB':>13} {'disk MiB':>9}"
        f" {'view changes':>13}"
    )
    for node in report["per_node"]:
        lines.append(
            f"{node['org']:<8} {_fmt(node['cpu_s'], 2):>8} {_fmt(node['cpu_ms_per_tx'], 3):>10} "
            f"{_fmt(_mib(node['peak_rss_bytes'])):>13} {_fmt(_mib(node['disk_bytes'])):>9}"
            f" {_fmt(node.get('view_changes')):>13}"
        )
    return "\n".join(lines)


def _mib(value: int | None) -> float | None:
    return None if value is None else value / (1024 * 1024)
