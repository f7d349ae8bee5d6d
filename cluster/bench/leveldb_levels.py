"""Where compaction goes: every node's LevelDB figures per level of each of its store's three
LevelDBs (the kledger_leveldb_* gauges, node/storage/leveldb_stats.py), read before and after
the load. Per LevelDB and level ("state/0", "history/3", ...), summed over the nodes read both
times: the compactions' wall seconds, MiB read and MiB written over the load,
and the files and MiB the level holds at the end; and the bytes compaction wrote per committed
tx and node — the LSM tree's write amplification as a byte count (docs/bench.md "Where
compaction goes").

A node restarted during the load starts its counts at 0 again: a level whose count fell is
read from 0 (its delta is its count after), which can only under-count.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kledger.cluster.bench.node_metrics import read_both
from kledger.node.storage.leveldb_stats import MIB

FILES = "kledger_leveldb_files"
BYTES = "kledger_leveldb_bytes"
SECONDS = "kledger_leveldb_compaction_seconds"
READ = "kledger_leveldb_compaction_read_bytes"
WRITTEN = "kledger_leveldb_compaction_written_bytes"
COUNTS = (SECONDS, READ, WRITTEN)  # since the store opened: differenced over the load
NOW = (FILES, BYTES)  # the level as it is: taken from after

# (LevelDB of the store, level) -> metric -> value
Levels = dict[tuple[str, int], dict[str, float]]


def parse(text: str | None) -> Levels | None:
    if text is None:
        return None
    levels: Levels = {}
    for family in text_string_to_metric_families(text):
        if family.name not in COUNTS + NOW:
            continue
        for sample in family.samples:
            try:
                level = int(sample.labels.get("level", ""))
            except ValueError:
                continue
            db = sample.labels.get("db", "")
            levels.setdefault((db, level), {})[family.name] = sample.value
    return levels


def figures(
    before: dict[str, Levels | None], after: dict[str, Levels | None], committed_txs: int
) -> dict[str, Any]:
    """{"levels": {"db/level": {compaction_s, read_mib, written_mib, files, mib}},
    "nodes_read", "written_bytes_per_tx_per_node"}."""
    totals: Levels = {}
    pairs = list(read_both(before, after))
    nodes_read = len(pairs)
    for start, end in pairs:
        for level, now in end.items():
            was = start.get(level, {})
            into = totals.setdefault(level, dict.fromkeys(COUNTS + NOW, 0.0))
            for name in COUNTS:
                value, earlier = now.get(name, 0.0), was.get(name, 0.0)
                into[name] += value - earlier if value >= earlier else value
            for name in NOW:
                into[name] += now.get(name, 0.0)
    written = sum(level[WRITTEN] for level in totals.values())
    return {
        "levels": {
            f"{db}/{level}": {
                "compaction_s": round(t[SECONDS], 1),
                "read_mib": round(t[READ] / MIB),
                "written_mib": round(t[WRITTEN] / MIB),
                "files": int(t[FILES]),
                "mib": round(t[BYTES] / MIB),
            }
            for (db, level), t in sorted(totals.items())
        },
        "nodes_read": nodes_read,
        "written_bytes_per_tx_per_node": round(written / nodes_read / committed_txs)
        if nodes_read and committed_txs
        else None,
    }
