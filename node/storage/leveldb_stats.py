"""LevelDB's own account of its levels (the `leveldb.stats` property), parsed into numbers, for
the node's metrics (docs/node.md "Metrics") and the benchmark's per-level compaction figures
(docs/bench.md "Where compaction goes").

Per level LevelDB reports, since the store was opened: its files and their size, and the
compactions (memtable flushes included) whose output went into that level — their wall time, the
bytes they read and the bytes they wrote. Written bytes over committed bytes is the write
amplification the LSM tree pays, level by level.

LevelDB prints sizes in whole MiB (1048576-byte units, rounded down) and times in whole
seconds; the figures are coarse, which is fine over a benchmark's load. The parser is total: a
text it does not recognise gives no levels, never an exception (the property's format belongs to
LevelDB, not to us).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
STATS_PROPERTY = b"leveldb.stats"
_COLUMNS = 6  # Level Files Size(MB) Time(sec) Read(MB) Write(MB)


@dataclass(frozen=True, slots=True)
class LevelStats:
    level: int
    files: int
    size_bytes: int
    compaction_s: float
    read_bytes: int
    written_bytes: int


def parse_stats(text: str) -> tuple[LevelStats, ...]:
    """The levels of a `leveldb.stats` text: one row per line of six numbers after the header
    (LevelDB lists only the levels that hold files or had compactions)."""
    levels: list[LevelStats] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != _COLUMNS:
            continue
        try:
            level, files, size_mib = int(fields[0]), int(fields[1]), int(fields[2])
            seconds, read_mib, written_mib = float(fields[3]), int(fields[4]), int(fields[5])
        except ValueError:
            continue  # the header line
        if min(level, files, size_mib, read_mib, written_mib) < 0 or seconds < 0:
            continue
        levels.append(
            LevelStats(level, files, size_mib * MIB, seconds, read_mib * MIB, written_mib * MIB)
        )
    return tuple(levels)
