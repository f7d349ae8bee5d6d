"""The node process's garbage-collector settings (node/runtime.py): applied by `kledger node
start` before the node runs and by the pipeline benchmark, and still collecting cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kledger.cluster import cli
from kledger.cluster.bench import pipeline
from kledger.node import app, main, runtime

PROBE = """
import gc
from kledger.node.runtime import YOUNG_THRESHOLD, tune_garbage_collector
tune_garbage_collector()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()  # the imported modules' objects
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
assert gc.collect() >= 2  # cycles are still collected
print("ok")
"""


def test_tuning_raises_the_young_threshold_freezes_the_imports_and_still_collects() -> None:
    # In a process of its own: the test process keeps CPython's defaults.
    done = subprocess.run(
        [sys.executable, "-c", PROBE], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_node_start_tunes_the_collector_before_the_node_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(main, "load_config", lambda path: SimpleNamespace(log_level="INFO"))
    monkeypatch.setattr(main, "configure_logging", lambda level: None)
    monkeypatch.setattr(runtime, "tune_garbage_collector", lambda: calls.append("tune"))

    async def run_node(config: Any) -> None:
        calls.append("run")

    monkeypatch.setattr(app, "run_node", run_node)
    assert main.main(["start", "--config", str(tmp_path / "node.json")]) == 0
    assert calls == ["tune", "run"]


def test_the_pipeline_benchmark_runs_with_the_node_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(pipeline, "tune_garbage_collector", lambda: calls.append("tune"))
    assert cli.main(["bench-pipeline", "--txs", "6", "--block-txs", "6", "--proofs", "0"]) == 0
    assert calls == ["tune"]
