"""The nemesis campaign over real processes (tests/nemesis.py), behind the slow marker:
`./scripts/test --slow` runs it, `./scripts/nemesis --rounds N --seed S` runs a longer one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.nemesis import Nemesis

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_every_acknowledged_tx_survives_rounds_of_faults(tmp_path: Path) -> None:
    seed = int(os.environ.get("KLEDGER_NEMESIS_SEED", "1"))
    rounds = int(os.environ.get("KLEDGER_NEMESIS_ROUNDS", "6"))
    report = Nemesis(tmp_path / "c", seed, fault_s=6.0, resume_timeout_s=90.0).run(rounds)
    print(json.dumps(report.to_json()))
    assert report.acknowledged > 0 and report.heights_checked > 0
    assert report.ok, f"replay: KLEDGER_NEMESIS_SEED={seed} {report.to_json()}"
