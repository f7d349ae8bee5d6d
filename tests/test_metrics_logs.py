"""Metrics on a per-node registry served over HTTP, refusal -> gRPC status mapping, and
structured JSON-line logs."""

from __future__ import annotations

import io
import json
import logging
import re
import urllib.request
from pathlib import Path

import grpc
import pytest

from kledger.node.api.grpc_status import refusal_code, status_code
from kledger.node.errors import Refused, Status
from kledger.node.telemetry.logs import configure_logging, log_event
from kledger.node.telemetry.metrics import DROP_REASONS, NodeMetrics, start_metrics_server

NODE_DOC = Path(__file__).resolve().parent.parent / "docs" / "node.md"


def test_every_status_maps_to_its_grpc_code() -> None:
    for status in Status:
        assert status_code(status).name == status.name
    assert refusal_code(Refused(Status.UNAUTHENTICATED, "x")) is grpc.StatusCode.UNAUTHENTICATED


def test_metrics_registry_per_node_and_http() -> None:
    first, second = NodeMetrics.create("KOMCA"), NodeMetrics.create("RIAK")
    first.height.set(7)
    first.commits.inc(3)
    first.drop("transport.queue_full", 4)
    first.set_peer_connected("RIAK", True)
    assert second.value("kledger_height") == 0.0  # separate registries: no collision
    assert first.value("kledger_dropped_messages_total", reason="transport.queue_full") == 4.0
    with pytest.raises(AssertionError):
        first.drop("no such reason")
    server = start_metrics_server(first, "127.0.0.1", 0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    finally:
        server.stop()
    for line in (
        'kledger_height{org="KOMCA"} 7.0',
        'kledger_commits_total{org="KOMCA"} 3.0',
        'kledger_dropped_messages_total{org="KOMCA",reason="transport.queue_full"} 4.0',
        'kledger_peer_connected{org="KOMCA",peer="RIAK"} 1.0',
    ):
        assert line in text
    for name in (
        "kledger_round",
        "kledger_committed_txs_total",
        "kledger_mempool_txs",
        "kledger_mempool_bytes",
        "kledger_view_changes_total",
        "kledger_sync_target_height",
        "kledger_synced_blocks_total",
        "kledger_store_bytes",
    ):
        assert f"{name}{{" in text


def test_json_line_logs() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", stream)
    try:
        logger = logging.getLogger("kledger.test")
        log_event(logger, "peer_connected", peer="KOMCA", raw=b"\x01")
        log_event(logger, "hidden", logging.DEBUG)
        logger.warning("plain text")
    finally:
        logging.getLogger("kledger").removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["peer_connected", "plain text"]
    assert lines[0]["peer"] == "KOMCA" and lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "kledger.test" and lines[0]["ts"].endswith("Z")
    assert lines[0]["raw"] == repr(b"\x01")


def counted_reasons() -> set[str]:
    """Every drop reason the code counts: `_drop("x")` in the core, driver and certifier
    (exported with their prefix), `.drop("where.x")` everywhere else."""
    root = Path(__file__).resolve().parent.parent
    prefixed = {
        "consensus": root / "consensus" / "core.py",
        "driver": root / "node" / "ordering" / "driver.py",
        "certifier": root / "node" / "commit" / "certifier.py",
    }
    found = set()
    for where, path in prefixed.items():
        found |= {f"{where}.{cause}" for cause in re.findall(r'_drop\("(\w+)"', path.read_text())}
        found |= {
            f"{where}.{cause}" for cause in re.findall(r'dropped\["(\w+)"\]', path.read_text())
        }
    for path in (root / "node").rglob("*.py"):
        found |= set(re.findall(r'\.drop\("([\w.]+)"', path.read_text()))
    return found


def test_every_drop_reason_has_one_name_and_is_documented() -> None:
    counted = counted_reasons()
    assert len(counted) > 30  # the scan found the counting sites
    assert counted - set(DROP_REASONS) == set(), "counted but not in DROP_REASONS"
    assert set(DROP_REASONS) - counted == set(), "in DROP_REASONS but never counted"
    documented = set(re.findall(r"^\| `([a-z]+\.\w+)` \|", NODE_DOC.read_text(), re.M))
    assert set(DROP_REASONS) <= documented, "missing from docs/node.md"


def test_component_drop_tables_reach_prometheus_by_their_deltas() -> None:
    metrics = NodeMetrics.create("KOMCA")
    core_dropped = {"old_round": 3, "bad_signature": 1}
    exported: dict[str, int] = {}
    metrics.export_drops("consensus", core_dropped, exported)
    core_dropped["old_round"] = 5
    metrics.export_drops("consensus", core_dropped, exported)
    metrics.export_drops("certifier", {"bad_signature": 2}, exported)
    value = metrics.value
    assert value("kledger_dropped_messages_total", reason="consensus.old_round") == 5.0
    assert value("kledger_dropped_messages_total", reason="consensus.bad_signature") == 1.0
    assert value("kledger_dropped_messages_total", reason="certifier.bad_signature") == 2.0
    evidence: dict[str, int] = {}
    metrics.export_equivocations({"RIAK": 1}, evidence)
    metrics.export_equivocations({"RIAK": 2}, evidence)
    assert value("kledger_equivocations_total", author="RIAK") == 2.0
