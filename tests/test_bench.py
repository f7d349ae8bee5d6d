"""`kledger bench`: the workload is valid registry traffic, and a small real run (4 real node
processes, real gRPC, 2 client processes) commits every tx and reports every figure. Never a
speed threshold: the figures are only checked for presence and consistency."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cluster import bench, launcher
from cluster.bench_report import latency_ms, limit_tx_per_s, percentile, table
from cluster.bench_workload import TXS_PER_SONG, isrc_of, iswc_of, sign_songs
from cluster.gen import ALL_ROLES
from cluster.layout import ClusterLayout
from node.keyspace import DictView
from node.registry import BlockContext, Registry
from node.registry.identifiers import PARSERS
from node.tx import decode_body, decode_tx
from tests.helpers import key, make_genesis


def test_workload_executes_ok_for_the_orgs_that_sign_it() -> None:
    orgs = tuple((f"ORG{i}", ALL_ROLES) for i in range(1, 5))
    genesis = make_genesis(orgs)
    registry = Registry(genesis)
    view = DictView({k: v for k, v in registry.genesis_writes().items() if v is not None})
    keys = {org: key(f"{org}/client") for org, _ in orgs}
    songs = sign_songs(genesis.chain_id, keys, 0, 20)
    assert {song.org for song in songs} == set(keys)
    txs = []
    for song in songs:
        assert len(song.encodings) == TXS_PER_SONG
        for encoding in song.encodings:
            tx = decode_tx(encoding)
            body = decode_body(tx)
            registry.check_admission(view, tx, body)
            txs.append((tx, body))
    types = ["RegisterParty", "RegisterWork", "RegisterRecording", "LinkIdentifiers"]
    types += ["SetShares", "ReportUsage"]
    assert Counter(body.type for _, body in txs) == dict.fromkeys(types, 20)
    context = BlockContext(genesis.chain_id, 0, 1, genesis.genesis_time_ms)
    outcome = registry.execute_block(view, txs, context)
    assert [r.status for r in outcome.results] == ["OK"] * len(txs), [
        r.message for r in outcome.results if r.status != "OK"
    ]


def test_identifiers_stay_valid_and_unique_across_registrant_blocks() -> None:
    songs = [0, 1, 99_999, 100_000, 3_700_000]
    assert len({isrc_of(s) for s in songs}) == len(songs)
    assert len({iswc_of(s) for s in songs}) == len(songs)
    for song in songs:
        PARSERS["isrc"](isrc_of(song), "isrc")
        PARSERS["iswc"](iswc_of(song), "iswc")


def test_percentiles_and_limit() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentile(samples, 0.5) == 0.05
    assert latency_ms(samples) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert latency_ms([]) == {"p50": None, "p95": None, "p99": None}
    assert limit_tx_per_s(2, 10_000, 4) == 5_000


def test_bad_arguments_exit_2_without_starting_anything(capsys: object) -> None:
    assert bench.main(["--txs", "3"]) == 2
    assert bench.main(["--batch-txs", "7"]) == 2
    assert bench.main(["--clients", "0"]) == 2


def test_small_real_run_commits_every_tx_and_reports_every_figure(tmp_path: Path) -> None:
    settings = bench.Settings(
        nodes=4,
        txs=240,
        clients=2,
        batch_txs=30,
        window_txs=120,
        proofs=20,
        catchup_txs=60,
        timeout_s=120,
    )
    report = bench.run(settings, tmp_path / "cluster")
    assert report["nodes"] == 4 and report["txs"] == 240
    assert report["committed_txs"] == 240
    assert report["refused"] == {}
    assert report["ok_fraction_sampled"] == 1.0 and report["receipts_sampled"] > 0
    assert report["committed_tx_per_s"] > 0
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
    assert report["verify_per_s_per_core"] > 0 and report["cores"] >= 1
    expected_limit = report["cores"] * report["verify_per_s_per_core"] / 4
    assert abs(report["limit_tx_per_s"] - expected_limit) < 1
    assert report["ratio_to_limit"] > 0
    assert len(report["per_node"]) == 4
    for node in report["per_node"]:
        assert node["cpu_s"] is not None and node["cpu_s"] > 0
        assert node["peak_rss_bytes"] > 0 and node["disk_bytes"] > 0
    assert report["disk_bytes_per_tx"] > 0
    assert report["proofs"]["count"] == 20 and report["proofs"]["tree_size"] >= 240
    catchup = report["catchup"]
    assert catchup["node"] == "ORG4" and catchup["behind_txs"] == 60
    assert catchup["blocks_per_s"] > 0
    # Every process it started is gone.
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))
    assert table(report).count("\n") > 10
