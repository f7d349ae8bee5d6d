"""The validator set changes in a running cluster of real node processes, by the operator's
commands (docs/node.md "Epochs: changing the validator set"): `kledger cluster add-org` brings
ORG5 in under load (it syncs as a follower, announces ready, and from the next epoch its
signatures are in the certificates); `kledger cluster remove-org` takes it out again (its peer
links are refused from the epoch after); `rotate-key` gives ORG3 a new validator key; every
acknowledged tx is kept throughout and a proof from the last epoch verifies offline from
genesis alone.

One cluster for the module, scenarios in file order; every process is stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kledger.cluster.local import membership
from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.chain.keys import COMMIT_TAG, load_key, verify
from kledger.node.chain.tx import SignedTx
from kledger.v1 import ledger_pb2
from tests.cluster_harness import LocalCluster, wait_for

pytestmark = pytest.mark.integration
FOUNDERS = ["ORG1", "ORG2", "ORG3", "ORG4"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("membership") / "c", nodes=4)
    try:
        local.up()
        yield local
    finally:
        local.close()


class Load:
    """A client thread submitting one party tx at a time through the founders' nodes, keeping
    every tx a node acknowledged (accepted at admission) to check afterwards."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._cluster = cluster
        self.acknowledged: list[tuple[str, SignedTx]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            org = FOUNDERS[turn % len(FOUNDERS)]
            turn += 1
            tx = self._cluster.party_tx(org)
            try:
                if self._cluster.submit(org, [tx])[0].status == "OK":
                    self.acknowledged.append((org, tx))
            except Exception:
                pass
            self._stop.wait(0.05)


def certified(cluster: LocalCluster, org: str, height: int) -> tuple[Header, CommitCertificate]:
    reply = cluster.stub(org).GetHeader(ledger_pb2.GetHeaderRequest(height=height), timeout=5)
    return Header.decode(reply.header), CommitCertificate.decode(reply.certificate)


def newest_certified(cluster: LocalCluster, org: str) -> tuple[Header, CommitCertificate]:
    return certified(cluster, org, cluster.status(org).certified_height)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "kledger.cluster.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_add_org_under_load_brings_a_new_validator_in(cluster: LocalCluster) -> None:
    root = str(cluster.layout.root)
    with Load(cluster) as load:
        wait_for("some load committed", lambda: len(load.acknowledged) >= 5, 60)
        out = run_cli("cluster", "add-org", root, "ORG5", "--name", "Fifth Society").stdout
    assert "ORG5 votes from epoch 1" in out, out
    cluster.orgs.append("ORG5")
    for org in [*FOUNDERS, "ORG5"]:
        status = cluster.status(org)
        assert status.epoch == 1, (org, status)

    # ORG5's signature appears in a certificate of epoch 1, counted against n = 5 (q = 4). A
    # node's certificate holds the first q signatures it got, so every node's newest one is
    # looked at while txs make new heights (the load has stopped; idle, only heartbeats come).
    signed: list[CommitCertificate] = []

    def signed_by_org5() -> bool:
        cluster.submit("ORG1", [cluster.party_tx("ORG1")])
        for org in [*FOUNDERS, "ORG5"]:
            header, cert = newest_certified(cluster, org)
            if header.epoch == 1 and "ORG5" in {signer for signer, _ in cert.signatures}:
                signed.append(cert)
                return True
        return False

    wait_for("a certificate with ORG5's signature", signed_by_org5, 90)
    assert len(signed[-1].signatures) >= 4
    # Every tx a node acknowledged under the switch is committed.
    for org, tx in load.acknowledged:
        assert cluster.receipt(org, tx).height > 0, tx.tx_hash.hex()


def test_remove_org_takes_it_out_and_refuses_its_links(cluster: LocalCluster) -> None:
    root = str(cluster.layout.root)
    with Load(cluster) as load:
        wait_for("some load committed", lambda: len(load.acknowledged) >= 3, 60)
        run_cli("cluster", "remove-org", root, "ORG5")
    for org in FOUNDERS:
        assert cluster.status(org).epoch == 2, org

    # From epoch 2 the founders refuse ORG5's peer links; they keep committing among four.
    def org5_cut_off() -> bool:
        return "ORG5" not in cluster.status("ORG1").connected_peers

    wait_for("ORG1 no longer connected to ORG5", org5_cut_off, 60)
    # The load has stopped (an idle cluster proposes only a heartbeat): a tx shows they commit.
    tx = cluster.party_tx("ORG1")
    assert cluster.submit("ORG1", [tx])[0].status == "OK"
    height = cluster.receipt("ORG1", tx).height
    wait_for("that height certified", lambda: cluster.status("ORG1").certified_height >= height, 60)
    header, cert = newest_certified(cluster, "ORG1")
    assert header.epoch == 2
    assert "ORG5" not in {signer for signer, _ in cert.signatures}
    for org, tx in load.acknowledged:
        assert cluster.receipt(org, tx).height > 0, tx.tx_hash.hex()


def test_rotate_key_gives_a_node_a_new_key_from_the_next_epoch(cluster: LocalCluster) -> None:
    old_key = load_key(cluster.layout.node_dir("ORG3") / "validator.key").public_key
    run_cli("cluster", "rotate-key", str(cluster.layout.root), "ORG3")
    for org in FOUNDERS:
        assert cluster.status(org).epoch == 3, org
    new_key = load_key(cluster.layout.node_dir("ORG3") / "validator-epoch3.key").public_key
    assert new_key != old_key

    # A node's certificate holds the first q signatures it got; any node's newest one may
    # be the one with ORG3's, so all four are looked at while txs make new heights.
    found: list[tuple[Header, bytes]] = []

    def org3_signs_with_its_new_key() -> bool:
        cluster.submit("ORG1", [cluster.party_tx("ORG1")])  # new heights to certify
        for org in FOUNDERS:
            header, cert = newest_certified(cluster, org)
            signature = dict(cert.signatures).get("ORG3")
            if header.epoch == 3 and signature is not None:
                found.append((header, signature))
                return verify(new_key, COMMIT_TAG, header.hash(), signature)
        return False

    wait_for("an epoch-3 certificate with ORG3's new key", org3_signs_with_its_new_key, 90)
    header, signature = found[-1]
    assert not verify(old_key, COMMIT_TAG, header.hash(), signature)


def test_a_proof_from_the_last_epoch_verifies_from_genesis(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    tx = cluster.party_tx("ORG2")
    assert cluster.submit("ORG2", [tx])[0].status == "OK"
    receipt = cluster.receipt("ORG2", tx)
    wait_for(
        "the tx's height certified",
        lambda: cluster.status("ORG2").certified_height >= receipt.height,
        60,
    )
    root = str(cluster.layout.root)
    bundle = tmp_path / "bundle.json"
    run_cli(
        "proof", "get", tx.tx_hash.hex(), "--cluster", root, "--org", "ORG2", "--out", str(bundle)
    )
    verdict = run_cli("verify", "proof", str(bundle), "--genesis", str(cluster.layout.genesis))
    assert "epoch 3" in verdict.stdout, verdict.stdout
    # A forged link (another set named as epoch 1's) is refused by name.
    document = json.loads(bundle.read_text())
    chain = document["epoch_chain"]
    assert len(chain) == 3  # epochs 0, 1, 2 ended by adding ORG5, removing it, rotating ORG3
    chain[0]["next_validators"]["validators"] = chain[1]["next_validators"]["validators"]
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kledger.cluster.cli",
            "verify",
            "proof",
            str(forged),
            "--genesis",
            str(cluster.layout.genesis),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "next_validator_set_hash" in result.stdout + result.stderr


def test_membership_commands_refuse_bad_arguments(cluster: LocalCluster) -> None:
    with pytest.raises(ValueError, match="already a node"):
        membership.prepare_org(cluster.layout.root, "ORG1", "dup")
    with pytest.raises(ValueError, match="must match"):
        membership.prepare_org(cluster.layout.root, "bad id!", "x")
    with pytest.raises(ValueError, match="not a node"):
        membership.remove_org(cluster.layout.root, "ORG9", print)
