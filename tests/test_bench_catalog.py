"""`kledger bench-catalog`: the synthetic national catalog is deterministic for a seed and
passes the CWR and JSON-lines readers with no refusal (valid ISWCs, IPIs, ISRCs, shares of
100 %, every work with 1-3 writers, 0-2 publishers and 1-2 recordings, each org's members its
own); the first/last 10 % windows are located on merged samples as documented; bad arguments
exit 2 naming the flag; a tiny real run (4 node processes, one importer process per org)
imports every work, reports every figure and stops every process.
Never a speed threshold: figures are checked for presence and consistency only."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from kledger.cluster.bench import catalog as bench_catalog
from kledger.cluster.bench import catalog_data, catalog_report
from kledger.cluster.bench.catalog_client import ImportResult
from kledger.cluster.client.import_cli import open_lines
from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local import launcher
from kledger.node.registry import bulk
from kledger.node.registry.identifiers import parse_code

ORGS = ("ORG1", "ORG2", "ORG3", "ORG4")


def _digests(root: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in root.iterdir()}


def test_a_seed_writes_the_same_bytes_and_another_seed_other_bytes(tmp_path: Path) -> None:
    spec = catalog_data.CatalogSpec(300, 3, ORGS, seed=7)
    first = catalog_data.write_catalog(tmp_path / "a", spec)
    catalog_data.write_catalog(tmp_path / "b", spec)
    catalog_data.write_catalog(tmp_path / "c", catalog_data.CatalogSpec(300, 3, ORGS, seed=8))
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a") != _digests(tmp_path / "c")
    assert len(first.of_kind("works")) == 3 and sum(f.works for f in first.files) == 300
    assert sum(f.txs for f in first.of_kind("txs")) == first.recordings


def test_the_generated_files_pass_the_readers_with_no_refusal(tmp_path: Path) -> None:
    spec = catalog_data.CatalogSpec(400, 4, ORGS, seed=1)
    catalog = catalog_data.write_catalog(tmp_path, spec)
    senders = set()
    registered_by: dict[str, str] = {}
    links: Counter[str] = Counter()
    recordings: dict[str, str] = {}
    for item in catalog.files:
        plan = bulk.plan_file(open_lines(item.path), item.kind, item.org, item.path.name)
        report = bulk.dry_run(plan)
        assert report["refused"] == [], (item.path.name, report["refused"][:3])
        if item.kind == "txs":
            assert report["format"] == "JSON lines" and report["planned"] == item.txs
            for unit in plan.units():
                [tx] = unit.txs
                assert tx.type == "RegisterRecording"
                parse_code("isrc", tx.payload["isrc"])
                [work_id] = tx.payload["works"]
                recordings[tx.payload["isrc"]] = work_id
                # The recording side is another org than the one that imported the work.
                assert registered_by[work_id] != item.org
            continue
        assert report["format"] == "CWR 2.2" and report["works"] == item.works
        senders.add(plan.header.sender)
        for unit in plan.units():
            types = Counter(tx.type for tx in unit.txs)
            assert types["RegisterWork"] == 1 and types["SetShares"] == 2  # PR and MR
            assert 1 <= types["LinkIdentifiers"] <= 2
            [work] = [tx.payload for tx in unit.txs if tx.type == "RegisterWork"]
            assert 1 <= len(work["creators"]) <= 3 and len(work.get("publishers", [])) <= 2
            parse_code("iswc", work["iswc"])
            registered_by[work["work_id"]] = item.org
            for tx in unit.txs:
                if tx.type == "SetShares":
                    assert sum(e["ownership"] for e in tx.payload["shares"]) == 10_000
                    assert tx.payload["territories"] == ["Worldwide"]
                if tx.type == "RegisterParty":
                    parse_code("ipi", tx.payload["names"][0]["ipi"])
                if tx.type == "LinkIdentifiers":
                    links[tx.payload["to"]["value"]] += 1
    assert len(senders) == 4  # one society sender a file
    assert len(registered_by) == 400
    # Every ISRC a CWR file names is registered once, with the work that names it.
    assert set(links) == set(recordings) and set(links.values()) == {1}
    assert len(recordings) == catalog.recordings


def test_each_orgs_members_are_its_own_and_grow_with_its_works() -> None:
    small = catalog_data._members(catalog_data.CatalogSpec(400, 4, ORGS))
    large = catalog_data._members(catalog_data.CatalogSpec(400_000, 8, ORGS))
    assert small["ORG1"].writers == catalog_data.MIN_WRITERS
    assert large["ORG1"].writers == 100_000 // catalog_data.WORKS_PER_WRITER
    for members in (small, large):
        spans = sorted((m.first_writer, m.first_writer + m.writers) for m in members.values())
        assert all(end <= start for (_, end), (start, _) in pairwise(spans))


def test_the_spec_refuses_what_the_bench_cannot_run_naming_the_flag() -> None:
    with pytest.raises(ValueError, match="--works"):
        catalog_data.CatalogSpec(0, 1, ORGS)
    with pytest.raises(ValueError, match="--files"):
        catalog_data.CatalogSpec(300_000, 2, ORGS)  # 150,000 works a file
    with pytest.raises(ValueError, match="--nodes"):
        catalog_data.CatalogSpec(10, 1, ("ORG1",))
    assert catalog_data.default_files(200, 4) == 4
    assert catalog_data.default_files(1_000_000, 4) == 40


def test_bad_arguments_exit_2_without_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_catalog.main(["--works", "100", "--nodes", "1"]) == 2
    assert "--nodes" in capsys.readouterr().err
    assert bench_catalog.main(["--works", "100", "--files", "500"]) == 2
    assert "--files" in capsys.readouterr().err


def test_windows_are_fractions_of_the_works_interpolated_between_samples() -> None:
    a = ImportResult(0, "ORG1", samples=[(11.0, 50, 200), (13.0, 50, 200)])
    b = ImportResult(1, "ORG2", samples=[(12.0, 100, 400)])
    curve = catalog_report.merged([a, b])
    assert curve == [(11.0, 50), (12.0, 150), (13.0, 200)]
    # 20 works (10 %) are reached 0.4 s after the start at 10.0: 50 works/s.
    assert catalog_report.rate_window(curve, 10.0, 200, 0.0, 0.1) == pytest.approx(50.0)
    # 180 works at 12.6 s, 200 at 13.0: 20 works in 0.4 s.
    assert catalog_report.rate_window(curve, 10.0, 200, 0.9, 1.0) == pytest.approx(50.0)
    assert catalog_report.rate_window(curve, 10.0, 0, 0.0, 0.1) is None
    assert catalog_report.time_at(curve, 10.0, 201) is None
    # CPU per tx over the first and last 10 % of 1,000 txs, from ticks at 50 and 950 txs.
    ticks = [(50, 1.0), (950, 10.0)]
    first = catalog_report.cpu_ms_per_tx_window(ticks, 1_000, 12.0, 0.0, 0.1)
    assert first == pytest.approx(1000 * 1.5 / 100)  # 1.0 s at 50, 10.0 at 950: 1.5 s at 100
    last = catalog_report.cpu_ms_per_tx_window(ticks, 1_000, 12.0, 0.9, 1.0)
    assert last == pytest.approx(1000 * (12.0 - 9.5) / 100)


@pytest.mark.integration
def test_a_tiny_real_run_imports_every_work_and_reports_every_figure(tmp_path: Path) -> None:
    settings = bench_catalog.Settings(works=200, nodes=4, files=4, seed=1, timeout_s=300)
    report = bench_catalog.run(settings, tmp_path)
    assert report["imported_works"] == 200
    catalog = report["catalog"]
    assert report["committed_txs"] == catalog["planned_txs"] == report["accepted"]
    assert catalog["planned_by_type"]["RegisterWork"] == 200
    assert catalog["planned_by_type"]["RegisterRecording"] == catalog["recordings"]
    assert report["refused_by_status"] == {} and report["not_sent_by_level"] == {}
    assert report["already_in_ledger"] == 0  # each org's members are its own
    for name in ("works_per_s", "tx_per_s", "first_10pct_works_per_s", "last_10pct_works_per_s",
                 "last_to_first_ratio", "node_cpu_ms_per_tx", "sign_us_per_tx",
                 "disk_bytes_per_work"):  # fmt: skip
        assert report[name] > 0, name
    works, recordings = report["phases"]["works"], report["phases"]["recordings"]
    assert works["importers"] == 4 and works["works"] == 200
    assert recordings["committed_txs"] == catalog["recordings"]
    assert works["committed_txs"] + recordings["committed_txs"] == report["committed_txs"]
    for phase in (works, recordings):
        profile = phase["profile"]
        assert profile["batches"] > 0 and 0 < profile["in_submit_s"] <= profile["importer_wall_s"]
        assert phase["first_10pct_node_cpu_ms_per_tx"] > 0
        assert phase["last_10pct_node_cpu_ms_per_tx"] > 0
    # Works, parties, share sets, links, recordings, code indexes: several records a work.
    assert report["live_state_keys"] > 200 * 5
    assert all(size > 0 for size in report["disk_bytes_per_node"].values())
    json.dumps(report)
    assert "first / last 10 %" in catalog_report.table(report)
    layout = ClusterLayout(tmp_path / "cluster")
    assert all(not p.running for p in launcher.processes(layout))
