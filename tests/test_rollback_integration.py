"""A real node whose write-ahead log is cut while it is stopped (issue #14, point 3), on real
processes: it starts, says in one line that its store is behind its safety record, follows its
peers without voting until it is back at the record's height, then votes again (the cluster
commits with another node down, which needs its votes), and no node ever sees it vote twice in
a round (no equivocation evidence in any log). Its damaged-store refusals are one line, exit 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster_harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("rollback"))
    try:
        local.up()
        yield local
    finally:
        local.close()


def _events(cluster: LocalCluster, org: str) -> list[dict[str, object]]:
    text = (cluster.layout.node_dir(org) / "node.log").read_text(errors="replace")
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def _has_event(cluster: LocalCluster, org: str, name: str) -> dict[str, object] | None:
    return next((e for e in _events(cluster, org) if e.get("event") == name), None)


def _commit_some(cluster: LocalCluster, via: str, count: int) -> int:
    txs = [cluster.party_tx(via) for _ in range(count)]
    assert all(r.status == "OK" for r in cluster.submit(via, txs))
    return max(cluster.receipt(via, tx).height for tx in txs)


def test_a_node_with_a_cut_log_follows_catches_up_and_never_votes_twice(
    cluster: LocalCluster,
) -> None:
    for _ in range(6):
        _commit_some(cluster, "ORG1", 5)
    height = cluster.wait_height("ORG4", 6)
    cluster.stop("ORG4")
    node_dir = cluster.layout.node_dir("ORG4")
    assert (node_dir / "safety.bin").exists()
    (log,) = (node_dir / "data" / "state").glob("*.log")  # state/: the store's commit point
    size = log.stat().st_size
    assert size > 0, "the store's writes should still be in its log (a 64 MiB write buffer)"
    with open(log, "r+b") as file:
        file.truncate(size // 2)

    cluster.start("ORG4")
    behind = wait_for(
        "ORG4 to say its store is behind",
        lambda: _has_event(cluster, "ORG4", "store_behind_safety_record"),
    )
    assert int(str(behind["store_height"])) < int(str(behind["record_height"])) <= height
    # Blocks keep coming (proposals carry the commit QCs it syncs to), and it catches up.
    for _ in range(3):
        _commit_some(cluster, "ORG1", 3)
    wait_for("ORG4 to catch up", lambda: _has_event(cluster, "ORG4", "caught_up"), 90)
    assert cluster.wait_height("ORG4", height) >= height

    # ORG4 votes again: with ORG1 down, nothing commits without its votes (quorum 3 of 4).
    cluster.stop("ORG1")
    try:
        reached = _commit_some(cluster, "ORG2", 3)
        assert cluster.wait_height("ORG4", reached) >= reached
    finally:
        cluster.start("ORG1")
    for org in cluster.orgs:
        evidence = [e for e in _events(cluster, org) if e.get("event") == "equivocation"]
        assert not evidence, f"{org} saw an equivocation: {evidence[:1]}"


def _start_once(cluster: LocalCluster, org: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "kledger.cluster.cli", "node", "start",
            "--config", str(cluster.layout.node_config(org)),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_deleted_current_is_one_line_exit_1_and_nothing_deleted(cluster: LocalCluster) -> None:
    cluster.wait_height("ORG3", 2)
    cluster.stop("ORG3")
    data = cluster.layout.node_dir("ORG3") / "data"
    os.remove(data / "history" / "CURRENT")
    before = sorted(str(p) for p in data.rglob("*") if not p.name.startswith("LOG"))
    started = _start_once(cluster, "ORG3")
    assert started.returncode == 1
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to start" in lines[0], started.stderr[-2000:]
    assert "CURRENT" in lines[0] and "re-syncs every block from its peers" in lines[0]
    assert sorted(str(p) for p in data.rglob("*") if not p.name.startswith("LOG")) == before
    # The documented recovery: move the directory aside, start; it re-syncs, keeps its record.
    os.rename(data, Path(str(data) + ".damaged"))
    cluster.start("ORG3")
    target = cluster.status("ORG1").height
    assert cluster.wait_height("ORG3", target, timeout_s=90) >= target
