"""A Byzantine org in a real 4-node cluster: ORG4 proposes, beside honest txs, correctly signed
txs of arbitrary shapes (node.json `testing.byzantine_proposer`). The honest three refuse the
blocks whose txs can never be valid (their rounds time out), keep committing every honest tx
submitted meanwhile, and agree on every height. Before the fix of the chain halt, one such tx
stopped every node's commit worker for good."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest

from kledger.node.chain.tx import SignedTx
from tests.cluster_harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
HONEST = ["ORG1", "ORG2", "ORG3"]
RUN_S = 40


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("byzantine") / "c", nodes=4)
    path = local.layout.node_config("ORG4")
    config = json.loads(path.read_text())
    config["testing"] = {"byzantine_proposer": True, "byzantine_seed": 7}
    path.write_text(json.dumps(config, indent=2))
    try:
        local.up()
        yield local
    finally:
        local.close()


def dropped(cluster: LocalCluster, org: str, reason: str) -> float:
    node = next(n for n in cluster.layout.nodes() if n.org == org)
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10)
    needle = f'kledger_dropped_messages_total{{org="{org}",reason="{reason}"}} '
    for line in text.read().decode().splitlines():
        if line.startswith(needle):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_honest_nodes_keep_committing_beside_a_byzantine_proposer(cluster: LocalCluster) -> None:
    submitted: list[SignedTx] = []
    started = time.monotonic()
    while time.monotonic() - started < RUN_S:
        for org in HONEST:
            tx = cluster.party_tx(org)
            [result] = cluster.submit(org, [tx])
            assert result.status == "OK", result.message
            submitted.append(tx)
        time.sleep(1.0)
    receipts = [cluster.receipt(HONEST[i % 3], tx, timeout_s=120) for i, tx in enumerate(submitted)]
    assert all(r.status == "OK" for r in receipts)
    top = max(r.height for r in receipts)
    for org in HONEST:
        cluster.wait_height(org, top, timeout_s=120)
        assert all(cluster.has_tx(org, tx) for tx in submitted)
    assert len({cluster.header_at(org, top).hash() for org in HONEST}) == 1
    # ORG4's junk reached the others and was refused as a payload no honest replica accepts.
    refused = wait_for(
        "junk proposals refused",
        lambda: sum(dropped(cluster, org, "consensus.invalid_payload") for org in HONEST) or None,
        timeout_s=30,
    )
    assert refused > 0
    assert all(cluster.status(org).height >= top for org in HONEST)
