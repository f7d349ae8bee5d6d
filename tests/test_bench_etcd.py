"""The etcd yardstick (cluster/bench/etcd.py): its hand-made put encoding, and a tiny real run of
three etcd members from Debian's package that acknowledges every put and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kledger.cluster.bench import etcd as bench_etcd


def test_a_put_is_encoded_as_etcds_put_request() -> None:
    assert bench_etcd.encode_put(b"k", b"v") == b"\x0a\x01k\x12\x01v"
    value = b"x" * 300  # a length past one varint byte: 300 = 0b10_0101100 -> ac 02
    assert bench_etcd.encode_put(b"", value) == b"\x0a\x00\x12\xac\x02" + value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.integration
def test_a_tiny_etcd_run_acknowledges_every_put_and_stops_its_members(tmp_path: Path) -> None:
    report = bench_etcd.run(tmp_path, members=3, clients=2, puts=301, window=16, value_bytes=64)
    assert report["etcd_version"].startswith("etcd Version: 3.")
    assert report["acked_puts"] == 301 and report["failed_puts"] == {}
    assert report["puts_per_s"] > 0 and report["latency_ms"]["p50"] is not None
    assert len(report["member_pids"]) == 3
    assert not any(_alive(pid) for pid in report["member_pids"])
    assert not any((tmp_path / f"m{i}").exists() for i in (1, 2, 3))  # member data removed
