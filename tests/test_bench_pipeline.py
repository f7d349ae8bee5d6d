"""`kledger bench-pipeline`: a tiny run goes through every phase of one node's hot path on a real
store, commits every tx OK, and reports every figure at every checkpoint. Never a speed
threshold: figures are checked for presence and consistency only."""

from __future__ import annotations

import json

import pytest

from kledger.cluster import cli
from kledger.cluster.bench import pipeline as bench_pipeline
from kledger.cluster.bench.pipeline import PHASES, run


def test_tiny_run_commits_every_tx_ok_and_reports_every_figure() -> None:
    report = run(txs=60, block_txs=25, checkpoints=[30, 60], window_txs=30, proofs=7, orgs=4)
    assert report["committed_txs"] == report["ok_txs"] == 60
    assert report["refused_at_admission"] == 0
    assert report["verify_us"] > 0
    assert [c["ledger_txs"] for c in report["checkpoints"]] == [30, 60]
    for checkpoint in report["checkpoints"]:
        # Blocks never straddle a checkpoint: 25 + 5, then 25 + 5 again.
        assert checkpoint["window_txs"] == 30
        us = checkpoint["us_per_tx"]
        assert set(us) == set(PHASES)
        assert all(us[phase] > 0 for phase in PHASES if phase != "background_threads")
        assert us["background_threads"] >= 0  # LevelDB may not compact at all in a tiny run
        parts = us["admit"] + us["propose_check"] + us["execute"] + us["commit_write"]
        assert parts <= us["total"] + 1.0  # total also frees the mempool; rounding
        assert us["execute_state_tree"] <= us["execute"]
        proofs = checkpoint["proofs"]
        assert proofs["count"] == 7
        assert proofs["per_s"] > 0 and 0 < proofs["p50_ms"] <= proofs["p99_ms"]


# What the tiny run above computes, as the code before any hot-path optimisation computed it:
# state values, receipts and the log are pinned; the state root is left to the state tree's own
# tests (tests/test_smt.py). The receipts changed once on purpose: a ReportUsage receipt says how
# many of its lines match a registered work or recording (state values and the log did not).
# The state values changed once on purpose: genesis also keeps its validator set as the first
# entry of the per-epoch history, `s/validators/<epoch>` (docs/design.md §4.8).
TINY_RUN_FINGERPRINT = {
    "state_values_sha256": "dfc85f163d3ea421318ece40bcde80404cdcdc7bcad146ac9708aad8c3c3e7c4",
    "receipts_sha256": "5365fa7dea0a3bc1253d9b70b67fa483917ebfad8d4f959a033e97fe32cc9b0a",
    "tx_log_root": "e39c2b407f904ab99eabf40939e0cc8462a28b929de913c332cec4a17619b4ec",
}


def test_the_run_computes_the_pinned_state_receipts_and_log() -> None:
    report = run(txs=60, block_txs=25, checkpoints=[30, 60], window_txs=30, proofs=0, orgs=4)
    fingerprint = report["fingerprint"]
    assert {k: fingerprint[k] for k in TINY_RUN_FINGERPRINT} == TINY_RUN_FINGERPRINT
    assert len(bytes.fromhex(fingerprint["state_root"])) == 32


def test_cli_prints_one_json_object(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node's collector settings stay out of the test process (tests/test_runtime.py).
    monkeypatch.setattr(bench_pipeline, "tune_garbage_collector", lambda: None)
    args = ["bench-pipeline", "--txs", "12", "--block-txs", "6", "--proofs", "3", "--json"]
    assert cli.main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["committed_txs"] == report["ok_txs"] == 12
    assert [c["ledger_txs"] for c in report["checkpoints"]] == [12]
    assert report["checkpoints"][0]["proofs"]["count"] == 3


@pytest.mark.parametrize(
    "args",
    [["--txs", "0"], ["--txs", "10", "--checkpoints", "11"], ["--orgs", "0"], ["--proofs", "-1"]],
)
def test_bad_arguments_exit_2_naming_the_flag(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench_pipeline.main(args) == 2
    assert "--" in capsys.readouterr().err
