"""LevelDB's `leveldb.stats`, read from real LevelDB files, as numbers per level: the store's
leveldb_levels(), the node's kledger_leveldb_* gauges, and a parser that refuses what it does
not recognise by giving no levels."""

from __future__ import annotations

import os
from dataclasses import asdict

import plyvel
from prometheus_client import generate_latest

from kledger.cluster.bench import leveldb_levels
from kledger.node.storage.leveldb_stats import MIB, STATS_PROPERTY, LevelStats, parse_stats
from kledger.node.telemetry.metrics import LEVELDB_LEVEL_FIGURES, NodeMetrics
from tests.ledger_builders import commit, make_tx, open_store


def export(metrics: NodeMetrics, levels: list[LevelStats], db: str = "history") -> None:
    """What the node's metrics tick does with one of the store's LevelDBs (node/app.py)."""
    for level in levels:
        metrics.set_leveldb_level(db=db, **asdict(level))


def test_a_real_leveldb_reports_what_it_wrote_per_level(tmp_path):
    db = plyvel.DB(str(tmp_path / "raw"), create_if_missing=True, write_buffer_size=1 * MIB)
    for _ in range(6_000):
        db.put(os.urandom(16), os.urandom(1_000))
    db.compact_range()
    levels = parse_stats(db.get_property(STATS_PROPERTY).decode())
    db.close()
    assert levels, "no level parsed from LevelDB's own text"
    assert sum(row.files for row in levels) >= 1
    # ≈ 6 MB went in: flushes and compactions wrote at least that much, somewhere.
    assert sum(row.written_bytes for row in levels) >= 5 * MIB
    assert all(row.level in range(7) for row in levels)


def test_the_store_reports_its_levels_after_a_compaction(tmp_path):
    store = open_store(tmp_path / "db")
    commit(store, [make_tx(i) for i in range(5)])
    # all in the memtables: no level of the four LevelDBs holds a file yet
    assert store.leveldb_levels() == {"state": (), "history": (), "tree": (), "log": ()}
    store.compact()
    levels = store.leveldb_levels()
    assert sum(row.files for row in levels["state"]) >= 1  # the tx index, metadata
    assert sum(row.files for row in levels["history"]) >= 1  # the blocks and tx records
    assert sum(row.files for row in levels["log"]) >= 1  # the Merkle log's nodes
    store.close()


def test_unrecognised_text_gives_no_levels():
    assert parse_stats("") == ()
    assert parse_stats("Level Files Size(MB) Time(sec) Read(MB) Write(MB)\n") == ()
    assert parse_stats("  0  1  2  3  4\n  x  1  2  3  4  5\n  -1  1  2  3  4  5\n") == ()
    assert parse_stats("  2  3  4  0.5  6  7\n") == (
        LevelStats(2, 3, 4 * MIB, 0.5, 6 * MIB, 7 * MIB),
    )


def test_the_levels_reach_the_metrics_registry():
    metrics = NodeMetrics.create("ORG1")
    export(metrics, [LevelStats(1, 3, 4 * MIB, 2.0, 5 * MIB, 6 * MIB)])
    assert metrics.value("kledger_leveldb_files", db="history", level="1") == 3
    assert metrics.value("kledger_leveldb_compaction_written_bytes", db="history", level="1") == (
        6 * MIB
    )
    assert metrics.value("kledger_leveldb_compaction_seconds", db="history", level="1") == 2.0
    assert set(LEVELDB_LEVEL_FIGURES) == {
        family.name
        for family in metrics.registry.collect()
        if family.name.startswith("kledger_leveldb")
    }


def test_the_bench_differences_the_levels_over_the_load():
    """cluster/bench/leveldb_levels.py on two nodes' exposition text: counts differenced, a
    restarted node's counts read from 0, files and sizes taken from after, a silent node left
    out."""
    one, two = NodeMetrics.create("ORG1"), NodeMetrics.create("ORG2")

    def text(metrics: NodeMetrics) -> str:
        return generate_latest(metrics.registry).decode()

    export(one, [LevelStats(0, 2, 8 * MIB, 1.0, 0, 64 * MIB)])
    export(two, [LevelStats(0, 1, 4 * MIB, 5.0, 0, 640 * MIB)])
    before = {"ORG1": leveldb_levels.parse(text(one)), "ORG2": leveldb_levels.parse(text(two))}
    before["ORG3"] = None
    export(
        one,
        [
            LevelStats(0, 1, 4 * MIB, 2.0, 0, 128 * MIB),
            LevelStats(1, 5, 20 * MIB, 3.0, 30 * MIB, 40 * MIB),
        ],
    )
    export(two, [LevelStats(0, 1, 4 * MIB, 0.5, 0, 64 * MIB)])  # restarted: from 0
    after = {"ORG1": leveldb_levels.parse(text(one)), "ORG2": leveldb_levels.parse(text(two))}
    after["ORG3"] = leveldb_levels.parse(None)
    found = leveldb_levels.figures(before, after, committed_txs=1024)
    assert found["nodes_read"] == 2
    assert found["levels"]["history/0"] == {
        "compaction_s": 1.5,
        "read_mib": 0,
        "written_mib": 64 + 64,
        "files": 2,
        "mib": 8,
    }
    assert found["levels"]["history/1"]["written_mib"] == 40
    assert found["levels"]["history/1"]["files"] == 5
    assert found["written_bytes_per_tx_per_node"] == (64 + 64 + 40) * MIB // 2 // 1024
