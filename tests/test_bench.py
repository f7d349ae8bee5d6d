"""`kledger bench`: the workload is valid registry traffic; a preloaded ledger is one a real node
accepts and resumes exactly as after a restart (one copy older for the catch-up); small real runs
(4 real node processes, real gRPC, client processes) commit every tx and report every figure:
pre-signed load with a kill-restart catch-up, and preload + soak + catch-up from the older copy;
a tiny flood run's junk is refused and its sources throttled (`kledger bench-flood`).
Never a speed threshold: the figures are only checked for presence and consistency."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from kledger.cluster.bench import flood
from kledger.cluster.bench import idle as bench_idle
from kledger.cluster.bench import main as bench
from kledger.cluster.bench import probe as bench_probe
from kledger.cluster.bench.client import LATE_AFTER_S, _Pacer, _Sample
from kledger.cluster.bench.preload import PreloadPlan, block_limits, preload
from kledger.cluster.bench.report import (
    latency_ms,
    limit_tx_per_s,
    percentile,
    second_half_slope_mib_per_min,
    table,
    windows,
)
from kledger.cluster.bench.workload import TXS_PER_SONG, isrc_of, iswc_of, sign_songs
from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import ALL_ROLES, ClusterSpec, generic_orgs, init_cluster
from kledger.consensus import Block, QuorumCert, SafetyData
from kledger.consensus.types import vote_sign_bytes
from kledger.node.app import Node
from kledger.node.chain.header import certificate_problem
from kledger.node.chain.keys import CONSENSUS_TAG, verify
from kledger.node.chain.tx import decode_body, decode_tx
from kledger.node.config import load_config
from kledger.node.registry import BlockContext, Registry
from kledger.node.registry.identifiers import PARSERS
from kledger.node.registry.state import recording_key
from kledger.node.storage.keyspace import DictView
from kledger.node.telemetry.timeline import BLOCK_PHASES, TX_PHASES
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
    assert bench.main(["--preload-txs", "-6"]) == 2
    assert bench.main(["--soak-s", "-1"]) == 2
    assert bench.main(["--rate", "-5"]) == 2


def test_pacer_holds_each_batch_to_its_slot_and_counts_late_ones() -> None:
    start = time.monotonic()
    pacer = _Pacer(start, rate_tx_per_s=1_000.0)
    for _ in range(3):
        pacer.wait_turn(20)  # slots at 0, 20 and 40 ms
        pacer.sent()
    assert time.monotonic() - start >= 0.040
    assert pacer.late_batches == 0
    time.sleep(LATE_AFTER_S + 0.02)  # the 4th slot (60 ms) is long past: it leaves late
    pacer.wait_turn(20)
    pacer.sent()
    assert pacer.late_batches == 1 and pacer.max_lag_s > LATE_AFTER_S
    unpaced = _Pacer(time.monotonic(), rate_tx_per_s=0.0)
    unpaced.wait_turn(10_000)
    unpaced.sent()
    assert unpaced.late_batches == 0 and unpaced.max_lag_s == 0.0


def test_soak_figures_windows_and_memory_slope() -> None:
    # 95 s of commits, 10 txs in each second, from monotonic second 1000.3 on.
    per_second = {1000 + i: 10 for i in range(95)}
    found = windows(per_second, 1000.3, 95.0, 30.0)
    assert [w["start_s"] for w in found] == [0.0, 30.0, 60.0, 90.0]
    assert [w["length_s"] for w in found] == [30.0, 30.0, 30.0, 5.0]
    assert sum(w["committed_txs"] for w in found) == 950
    assert found[0]["tx_per_s"] == 10.0
    mib = 2**20
    flat_then_growing = [(float(t), 100 * mib) for t in range(0, 60, 5)]
    flat_then_growing += [(float(t), (100 + (t - 60)) * mib) for t in range(60, 121, 5)]
    assert second_half_slope_mib_per_min(flat_then_growing) == 60.0  # 1 MiB/s in the 2nd half
    assert second_half_slope_mib_per_min([(0.0, mib), (60.0, mib)]) is None  # one in 2nd half
    assert second_half_slope_mib_per_min([]) is None


def test_client_hash_sample_stays_bounded_and_even() -> None:
    sample = _Sample(limit=8)
    items = [i.to_bytes(4, "big") for i in range(1_000)]
    for item in items:
        sample.add(item)
    assert 8 <= len(sample.items) < 16
    indices = [int.from_bytes(i, "big") for i in sample.items]
    gaps = {b - a for a, b in pairwise(indices)}
    assert len(gaps) == 1 and indices[0] == 0  # evenly spread from the first


def test_proof_sample_spreads_over_preloaded_and_loaded_parts() -> None:
    preloaded = [b"p%d" % i for i in range(100)]
    loaded = [b"l%d" % i for i in range(300)]
    sample = bench.proof_sample(preloaded, 9_000, loaded, 3_000, 40)
    assert len(sample) == 40
    assert sum(h.startswith(b"p") for h in sample) == 30  # 3/4 of the ledger was preloaded
    assert sample[:30] == bench.spread(preloaded, 30)
    assert bench.proof_sample([], 0, loaded, 300, 500) == loaded


def test_pin_moves_every_thread_of_a_process_and_skips_one_that_is_gone() -> None:
    cpu = min(os.sched_getaffinity(0))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        bench_probe.pin(child.pid, {cpu})
        assert os.sched_getaffinity(child.pid) == {cpu}
    finally:
        child.kill()
        child.wait()
    bench_probe.pin(child.pid, {cpu})  # gone: no error
    bench_probe.pin(None, {cpu})


def test_preloaded_ledger_is_what_a_restarted_node_resumes_from(tmp_path: Path) -> None:
    layout = init_cluster(
        tmp_path / "cluster", ClusterSpec(orgs=generic_orgs(4), chain_id="kledger-bench")
    )
    _, block_bytes = block_limits(layout)
    plan = PreloadPlan(
        txs=300, block_txs=60, block_bytes=block_bytes, behind_txs=120, sample_leaves=[0, 61, 299]
    )
    seen: list[int] = []
    result = preload(layout, plan, lambda done, total, elapsed_s: seen.append(done))
    assert result.txs == 300 and result.height == 5 and seen[-1] == 300
    assert result.behind is not None
    assert (result.behind.org, result.behind.height, result.behind.txs) == ("ORG4", 3, 180)
    assert not (tmp_path / "cluster" / "preload-staging").exists()
    blocks_at: dict[int, bytes] = {}
    for org in ("ORG1", "ORG2", "ORG3", "ORG4"):
        # The real node start-up: store self-check, state root against the last header, and
        # the consensus core restored from the store (node/app.py).
        node = Node(load_config(layout.node_config(org)))
        try:
            store, core = node.store, node.core
            height = 3 if org == "ORG4" else 5
            assert store.last_height() == height and store.log_size() == height * 60
            assert store.latest_certified_height() == height
            for h in range(1, height + 1):
                header = store.header(h)
                record = store.block(h)
                certificate = store.certificate(h)
                assert header is not None and record is not None and certificate is not None
                assert certificate_problem(certificate, header, node.core.validators) is None
                block = Block.decode(record.consensus_block)
                assert QuorumCert.decode(record.commit_qc).commit == block.info
                assert core.verify_qc(QuorumCert.decode(record.commit_qc))
                assert blocks_at.setdefault(h, block.id) == block.id  # one chain on every node
            assert core.committed_height == height
            # The block after the last committed one is in the core's tree, so the next leader
            # can extend the high QC, and this node's stored vote is on it.
            pending = core.block(core.high_qc.block_id)
            assert pending is not None and pending.height == height + 1
            raw = store.load_safety()
            assert raw is not None
            safety = SafetyData.decode(raw)
            assert safety.last_vote is not None and safety.last_vote.author == org
            assert safety.last_vote.data.certified == pending.info
            assert safety.highest_vote_round == pending.round
            assert safety.highest_qc_round == pending.qc.round
            assert verify(
                node.core.validators.public_key(org) or b"",
                CONSENSUS_TAG,
                vote_sign_bytes("kledger-bench", safety.last_vote.data),
                safety.last_vote.signature,
            )
            if org == "ORG4":
                assert pending.id == blocks_at[4]  # the real block 4, the others committed it
            else:
                assert pending.payload == b""  # an empty block: no tx beyond the preload
            for index, tx_hash in zip((0, 61, 299), result.sampled_hashes, strict=True):
                found = store.get_tx(tx_hash)
                if index < store.log_size():
                    assert found is not None and found[1].leaf_index == index
                    assert found[1].result.status == "OK"
        finally:
            node.store.close()


def test_a_tiny_flood_run_is_refused_throttled_and_reports_every_figure(tmp_path: Path) -> None:
    args = flood._parser().parse_args(["--phase-s", "3", "--client-batch-txs", "500"])
    report = flood.run(args, tmp_path / "cluster")
    assert report["flooding_org"] == "ORG4" and len(report["rounds"]) == 1
    assert [p["phase"] for p in report["phases"]] == ["undisturbed", "flooded", "undisturbed"]
    before, flooded, after = report["phases"]
    assert before["flooders"] == after["flooders"] == []
    assert before["honest_committed_txs"] > 0 and after["honest_committed_txs"] > 0
    assert {f["kind"] for f in flooded["flooders"]} == {"peer", "client"}
    assert all(f["batches"] > 0 for f in flooded["flooders"])
    # The honest nodes refused the junk and throttled its sources; the cluster went on.
    assert flooded["drops"].get("gossip.bad_signature", 0) > 0
    assert (
        flooded["drops"].get("gossip.throttled", 0) + flooded["drops"].get("gossip.over_budget", 0)
        > 0
    )
    [client] = [f for f in flooded["flooders"] if f["kind"] == "client"]
    assert (
        client["answers"].get("UNAUTHENTICATED", 0)
        + client["answers"].get("call:RESOURCE_EXHAUSTED", 0)
        > 0
    )
    [one] = report["rounds"]
    assert one["commit_rate_fraction"] == report["commit_rate_fraction"] >= 0
    for phase in report["phases"]:
        assert phase["get_status_ms"]["p50"] > 0 and phase["get_status_ms"]["failures"] == 0
    assert "flooded / undisturbed" in flood.report(report)
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))


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
        own_core=len(os.sched_getaffinity(0)) >= 2,
    )
    report = bench.run(settings, tmp_path / "cluster")
    assert report["nodes"] == 4 and report["txs"] == 240
    if settings.own_core:  # ORG1 alone on the first core: how busy, and the rate per core
        assert report["own_core"]["org"] == "ORG1"
        assert 0 < report["own_core"]["cores_busy"] <= 1.05
        assert report["own_core"]["tx_per_s_per_core"] >= report["committed_tx_per_s"]
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
    # 40 songs of 6 txs: at least a party, work, recording, share set and link record each.
    assert report["live_state_keys"] >= 5 * 40 and report["disk_bytes_per_live_key"] > 0
    assert report["proofs"]["count"] == 20 and report["proofs"]["tree_size"] >= 240
    assert report["proofs"]["settle_s"] >= 0 and report["proofs"]["serving_node_cores_busy"] > 0
    assert report["proofs"]["other_nodes_cores_busy"] >= 0
    # Where the latency went, from the nodes' own phase histograms over the load.
    phases = report["phases"]
    assert phases["nodes_read"] == 4
    assert set(phases["block"]) == set(BLOCK_PHASES) and set(phases["tx"]) == set(TX_PHASES)
    assert all(f["count"] > 0 and f["mean_ms"] >= 0 for f in phases["block"].values())
    # Every client tx is observed once, by the node it was submitted to (a node may announce
    # the last block after the client saw it committed on the node it follows).
    assert 0 < phases["tx"]["received_to_announced"]["count"] <= report["committed_txs"]
    # LevelDB's per-level figures were read from every node (a 240-tx load flushes nothing).
    assert report["leveldb"]["nodes_read"] == 4
    state = report["proofs"]["state"]  # as many StateProof calls, each for the asked key
    assert state["count"] == 20 and set(state["latency_ms"]) == {"p50", "p95", "p99"}
    for figures in (report["proofs"], state):
        own_core = figures["own_core"]
        if len(os.sched_getaffinity(0)) >= 2:
            assert own_core["count"] == 20 and set(own_core["latency_ms"]) == {"p50", "p95", "p99"}
        else:
            assert own_core is None
    catchup = report["catchup"]
    assert catchup["node"] == "ORG4" and catchup["behind_txs"] == 60
    assert catchup["method"] == "kill_restart"
    assert catchup["blocks_per_s"] > 0 and catchup["tx_per_s"] > 0
    # The ratio is the catch-up rate over the load's (rounded to 2 places: a slow catch-up on a
    # loaded machine may show 0.0, which is no missing figure).
    ratio = catchup["tx_per_s"] / report["committed_tx_per_s"]
    assert abs(catchup["ratio_to_commit_rate"] - ratio) <= 0.006
    assert report["preload"] is None and report["soak"] is None
    # Every process it started is gone.
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))
    assert table(report).count("\n") > 10


def test_preload_soak_and_catchup_from_an_older_copy_report_every_figure(tmp_path: Path) -> None:
    settings = bench.Settings(
        nodes=4,
        txs=6,  # not used by a soak
        clients=2,
        batch_txs=30,
        window_txs=120,
        proofs=20,
        catchup_txs=120,
        timeout_s=120,
        preload_txs=300,
        soak_s=3.0,
        rate_tx_per_s=120.0,  # paced: 2 clients, one 30-tx batch each per 0.5 s
    )
    report = bench.run(settings, tmp_path / "cluster")
    preloaded = report["preload"]
    assert report["preload_txs"] == 300 and preloaded["txs"] == 300
    assert preloaded["blocks"] >= 1 and preloaded["s_per_10k_txs"] > 0
    # The soak: every tx it submitted committed OK; `txs` is what it submitted.
    assert report["committed_txs"] == report["submitted_txs"] == report["txs"] > 0
    assert report["refused"] == {}
    assert report["ok_fraction_sampled"] == 1.0 and report["receipts_sampled"] > 0
    soak = report["soak"]
    assert soak["duration_s"] == 3.0 and soak["windows"]
    # Paced: no more than the schedule allows (3 s at 120 tx/s, plus each client's first batch).
    assert report["paced"]["offered_tx_per_s"] == 120.0
    assert report["paced"]["late_batches"] >= 0 and report["paced"]["max_lag_ms"] >= 0
    assert report["submitted_txs"] <= 120 * 3 + 2 * 30
    assert sum(w["committed_txs"] for w in soak["windows"]) == report["committed_txs"]
    assert [n["org"] for n in soak["per_node"]] == ["ORG1", "ORG2", "ORG3", "ORG4"]
    for node in soak["per_node"]:
        assert node["rss_start_bytes"] > 0 and node["rss_end_bytes"] > 0
        assert 0 < node["anon_start_bytes"] <= node["rss_start_bytes"]
        assert len(node["rss_mib"]) >= 2 and len(node["anon_mib"]) >= 2
    # The last node started on the ledger 120 txs older and caught up by block sync.
    catchup = report["catchup"]
    assert catchup["method"] == "preloaded_copy" and catchup["node"] == "ORG4"
    assert catchup["behind_txs"] == 120 and catchup["behind_blocks"] >= 1
    assert catchup["tx_per_s"] > 0 and catchup["ratio_to_commit_rate"] > 0
    # Proofs come from the whole ledger, preloaded part included.
    proofs = report["proofs"]
    assert proofs["count"] == 20 and proofs["from_preload"] > 0
    assert proofs["tree_size"] >= 300 + report["committed_txs"]
    assert set(proofs["latency_ms"]) == {"p50", "p95", "p99"}
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))
    assert "soak" in table(report)


def test_state_proof_keys_spread_over_both_parts_with_absent_ones() -> None:
    keys = bench.state_proof_keys(preloaded_songs=50, first_song=60, end_song=110, count=20)
    assert len(keys) == 20 and len(set(keys)) == 20
    present = {recording_key(isrc_of(s)) for s in [*range(50), *range(60, 110)]}
    absent = [k for k in keys if k not in present]
    assert len(absent) == 20 // bench.ABSENT_KEY_EVERY  # one in ten proves an absence
    assert recording_key(isrc_of(0)) in keys  # the preloaded part
    assert any(recording_key(isrc_of(s)) in keys for s in range(60, 110))  # the load's
    assert bench.state_proof_keys(0, 0, 0, 20) == [] and bench.state_proof_keys(5, 5, 9, 0) == []


def test_an_idle_run_reports_blocks_bytes_and_the_first_tx(tmp_path: Path) -> None:
    report = bench_idle.run(4, 2.0, tmp_path / "cluster")
    assert report["nodes"] == 4 and report["idle_s"] >= 2.0
    assert [n["org"] for n in report["per_node"]] == ["ORG1", "ORG2", "ORG3", "ORG4"]
    # Idle with the 30 s heartbeat: a 2 s window holds at most one heartbeat block per node.
    assert all(0 <= n["blocks_per_idle_min"] <= 30 for n in report["per_node"])
    assert report["first_tx_ms"] > 0 and report["first_tx_height"] >= 1
    assert report["next_tx_ms"] > 0
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))
    assert "first tx after the idle window" in bench_idle.table(report)


def test_a_node_that_exits_during_the_load_fails_the_run(tmp_path: Path) -> None:
    settings = bench.Settings(
        nodes=4,
        txs=6_000,
        clients=1,
        batch_txs=60,
        window_txs=120,
        proofs=0,
        catchup_txs=0,
        timeout_s=120,
    )
    run = bench.Bench(tmp_path / "cluster", settings)
    layout = run.layout
    try:
        run.start()
        songs = run.sign(0, settings.txs // TXS_PER_SONG)

        def kill_after_first_commit() -> None:
            node = layout.nodes()[0]
            while launcher.node_status(layout, node).tx_log_size == 0:
                time.sleep(0.05)
            launcher.kill_node(layout, "ORG4")

        killer = threading.Thread(target=kill_after_first_commit, daemon=True)
        killer.start()
        with pytest.raises(bench.BenchError, match=r"node process exited.*ORG4"):
            run.load(songs, 0)
        killer.join(timeout=10)
    finally:
        run.close()
    assert all(not p.running for p in launcher.processes(layout))
