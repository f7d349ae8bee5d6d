"""Live epoch changes with real node processes (docs/design.md §4.8, integration tier): a 5-org
cluster removes ORG5 under load (every acknowledged tx kept, headers of the new epoch carry the
new set's hash and certificates only its signers, ORG5's peer links refused, commits go on); a
validator key rotation (certificates after the boundary verify with the new key, the old key
signs nothing of the new epoch); a node killed before two epoch changes catches up after them.

The scenarios share one cluster (module fixture) and run in file order; every process started
is stopped by the fixture's finalizer.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from kledger.consensus.validators import ValidatorSet, quorum_size
from kledger.node.chain.header import CommitCertificate, Header, certificate_problem
from kledger.node.chain.keys import KeyPair, load_key, save_key
from kledger.node.chain.tx import SignedTx
from kledger.node.net.tls import TLS_NAME, TlsMaterial, peer_channel_credentials
from kledger.node.registry.governance import sign_pop
from kledger.v1 import ledger_pb2, peer_pb2, peer_pb2_grpc
from tests.cluster_harness import CHAIN_ID, LocalCluster, wait_for

pytestmark = pytest.mark.integration
ORGS = ["ORG1", "ORG2", "ORG3", "ORG4", "ORG5"]
STAYING = ORGS[:4]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("epochs") / "c", nodes=5)
    try:
        local.up()
        yield local
    finally:
        local.close()


def metric(cluster: LocalCluster, org: str, name: str) -> float | None:
    """One gauge from the node's Prometheus endpoint."""
    node = next(n for n in cluster.layout.nodes() if n.org == org)
    url = f"http://127.0.0.1:{node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return None


def validator_key(cluster: LocalCluster, org: str) -> KeyPair:
    return load_key(cluster.layout.node_dir(org) / "validator.key")


def certified(cluster: LocalCluster, org: str, height: int) -> tuple[Header, bytes]:
    reply = cluster.stub(org).GetHeader(ledger_pb2.GetHeaderRequest(height=height), timeout=5)
    return Header.decode(reply.header), reply.certificate


def decide(
    cluster: LocalCluster,
    proposal_id: str,
    action: dict[str, Any],
    voters: list[str],
    set_size: int,
) -> None:
    """Propose by the first voter, approve by the next ones until the quorum of a set of
    `set_size` is reached and the action executes (their client keys)."""
    txs = [
        cluster.signed_tx(
            voters[0], "ProposeGovernance", {"proposal_id": proposal_id, "action": action}
        )
    ]
    txs += [
        cluster.signed_tx(org, "ApproveGovernance", {"proposal_id": proposal_id})
        for org in voters[1 : quorum_size(set_size)]
    ]
    for tx in txs:
        [result] = cluster.submit(voters[0], [tx])
        assert result.status == "OK", result.message
        receipt = cluster.receipt(voters[0], tx)
        assert receipt.status == "OK", receipt.message
    assert json.loads(receipt.output_json)["status"] == "executed", receipt.output_json


def wait_epoch(cluster: LocalCluster, orgs: list[str], epoch: int, timeout_s: float = 90) -> None:
    for org in orgs:

        def reached(org: str = org) -> bool:
            return cluster.status(org).epoch >= epoch

        wait_for(f"{org} to reach epoch {epoch}", reached, timeout_s)


def first_height_of_epoch(cluster: LocalCluster, org: str, epoch: int) -> int:
    height = cluster.status(org).height
    while height > 1 and cluster.header_at(org, height - 1).epoch >= epoch:
        height -= 1
    return height


def set_of(cluster: LocalCluster, epoch: int, keys: dict[str, KeyPair]) -> ValidatorSet:
    return ValidatorSet.of(epoch, [(org, key.public_key) for org, key in keys.items()])


class Load:
    """Party txs to the staying orgs from a thread; remembers each acknowledged (committed OK)."""

    def __init__(self, cluster: LocalCluster, senders: list[str]) -> None:
        self.cluster, self.senders = cluster, senders
        self.acknowledged: list[SignedTx] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        assert not self.errors, self.errors

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                org = self.senders[len(self.acknowledged) % len(self.senders)]
                batch = [self.cluster.party_tx(org) for _ in range(3)]
                results = self.cluster.submit(org, batch)
                assert all(r.status == "OK" for r in results), results
                for tx in batch:
                    if self.cluster.receipt(org, tx).status == "OK":
                        self.acknowledged.append(tx)
        except BaseException as exc:  # surfaced by __exit__
            self.errors.append(exc)


def test_removing_an_org_switches_the_epoch_under_load(cluster: LocalCluster) -> None:
    keys = {org: validator_key(cluster, org) for org in ORGS}
    with Load(cluster, ["ORG1", "ORG2", "ORG3"]) as load:
        wait_for("load to commit", lambda: len(load.acknowledged) >= 9)
        decide(cluster, "RM5", {"kind": "remove_org", "org_id": "ORG5"}, ORGS, 5)
        wait_epoch(cluster, STAYING, 1)
        acknowledged_at_switch = len(load.acknowledged)
        wait_for("commits in epoch 1", lambda: len(load.acknowledged) >= acknowledged_at_switch + 9)
    new_set = set_of(cluster, 1, {org: keys[org] for org in STAYING})
    old_set = set_of(cluster, 0, keys)
    for org in STAYING:
        status = cluster.status(org)
        assert status.epoch == 1 and status.role == "validator" and status.validators == 4
    start = first_height_of_epoch(cluster, "ORG1", 1)
    marker_header, _ = certified(cluster, "ORG1", start - 1)
    assert marker_header.epoch == 0 and marker_header.validator_set_hash == old_set.digest()
    top = cluster.status("ORG1").certified_height
    assert top > start
    checked = 0
    for height in range(start, top + 1):
        header, raw = certified(cluster, "ORG1", height)
        assert header.epoch == 1 and header.validator_set_hash == new_set.digest()
        if raw:
            certificate = CommitCertificate.decode(raw)
            assert certificate_problem(certificate, header, new_set) is None
            assert {signer for signer, _ in certificate.signatures} <= set(STAYING)
            checked += 1
    assert checked > 0
    # Every acknowledged tx is on every staying node.
    height = cluster.status("ORG1").height
    for org in STAYING:
        cluster.wait_height(org, height)
        missing = [tx.tx_hash.hex() for tx in load.acknowledged if not cluster.has_tx(org, tx)]
        assert missing == []
    # ORG5's node is refused by the others, by name, and says so in its log; it may still
    # read the blocks of the epochs it was in (a lagging removed node commits its removal).
    node = cluster.layout.node_dir("ORG5")
    material = TlsMaterial.load(cluster.layout.ca_cert, node / "tls.pem", node / "tls.key")
    target = next(n for n in cluster.layout.nodes() if n.org == "ORG1")
    channel = grpc.secure_channel(
        f"127.0.0.1:{target.peer_port}",
        peer_channel_credentials(material),
        options=[("grpc.ssl_target_name_override", TLS_NAME)],
    )
    with channel:
        stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
        request = peer_pb2.SyncRequest(from_height=start - 2, to_height=start + 5)
        served = [block.height for block in stub.SyncBlocks(request, timeout=5)]
        assert served == [start - 2, start - 1]  # up to the marker, the end of epoch 0
        with pytest.raises(grpc.RpcError) as info:
            request = peer_pb2.SyncRequest(from_height=start, to_height=start + 1)
            list(stub.SyncBlocks(request, timeout=5))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "not a validator" in info.value.details()  # type: ignore[attr-defined]
    wait_for(
        "ORG5's log to show its links refused",
        lambda: "PERMISSION_DENIED" in (node / "node.log").read_text(errors="replace"),
        timeout_s=30,
    )
    # Its own node follows epoch 1 without voting (its client keys no longer work: metrics).
    wait_for(
        "ORG5 to follow epoch 1",
        lambda: (
            metric(cluster, "ORG5", "kledger_epoch") == 1
            and metric(cluster, "ORG5", "kledger_validating") == 0
        ),
    )
    # The cluster keeps committing without ORG5.
    tx = cluster.party_tx("ORG2")
    assert cluster.submit("ORG2", [tx])[0].status == "OK"
    assert cluster.receipt("ORG2", tx).status == "OK"


def _rotate(cluster: LocalCluster, org: str, label: str, epoch: int, down: str = "") -> KeyPair:
    """Rotate `org`'s validator key: the new key goes into node.json as next_validator_key (the
    node restarts to load it), governance decides, the new key announces itself; the staying
    orgs but `down` vote and must reach `epoch`."""
    new = KeyPair.generate()
    node = cluster.layout.node_dir(org)
    save_key(node / f"validator-{label}.key", new)
    config_path = cluster.layout.node_config(org)
    config = json.loads(config_path.read_text())
    config["next_validator_key"] = f"validator-{label}.key"
    config_path.write_text(json.dumps(config, indent=2))
    cluster.stop(org)
    cluster.start(org)
    voters = [o for o in STAYING if o != down]
    action = {
        "kind": "change_validator",
        "org_id": org,
        "validator_key": new.public_key.hex(),
        "validator_pop": sign_pop(new, CHAIN_ID, org).hex(),
    }
    decide(cluster, f"ROT-{org}-{label}", action, voters, len(STAYING))
    ready = cluster.signed_tx(org, "ValidatorReady", {"org": org}, key=new)
    [result] = cluster.submit(voters[0], [ready])
    assert result.status == "OK", result.message
    assert cluster.receipt(voters[0], ready).status == "OK"
    wait_epoch(cluster, voters, epoch)
    return new


def test_a_validator_key_rotation_signs_the_new_epoch_with_the_new_key(
    cluster: LocalCluster,
) -> None:
    old = validator_key(cluster, "ORG4")
    new = _rotate(cluster, "ORG4", "2", epoch=2)
    keys = {org: validator_key(cluster, org) for org in STAYING[:3]} | {"ORG4": new}
    new_set = set_of(cluster, 2, keys)
    for _ in range(4):  # some commits in the new epoch
        tx = cluster.party_tx("ORG1")
        assert cluster.submit("ORG1", [tx])[0].status == "OK"
        assert cluster.receipt("ORG1", tx).status == "OK"
    start = first_height_of_epoch(cluster, "ORG1", 2)
    old_set = set_of(cluster, 1, keys | {"ORG4": old})

    def signed_by_new_key() -> int:
        """Certificates of epoch 2 holding ORG4's signature; each checks under the new set,
        whose key for ORG4 is the new one (the old key's signature would not verify)."""
        count = 0
        for height in range(start, cluster.status("ORG1").certified_height + 1):
            header, raw = certified(cluster, "ORG1", height)
            assert header.epoch == 2 and header.validator_set_hash == new_set.digest()
            if not raw:
                continue
            certificate = CommitCertificate.decode(raw)
            assert certificate_problem(certificate, header, new_set) is None
            assert certificate_problem(certificate, header, old_set) is not None
            count += any(signer == "ORG4" for signer, _ in certificate.signatures)
        return count

    assert new.public_key != old.public_key
    wait_for("ORG4 to sign headers of epoch 2 with its new key", signed_by_new_key)
    assert cluster.status("ORG4").role == "validator"


def test_a_node_down_across_two_epoch_changes_catches_up(cluster: LocalCluster) -> None:
    cluster.kill("ORG3")
    _rotate(cluster, "ORG2", "3", epoch=3, down="ORG3")
    _rotate(cluster, "ORG1", "4", epoch=4, down="ORG3")
    alive = ["ORG1", "ORG2", "ORG4"]
    tx = cluster.party_tx("ORG1")
    assert cluster.submit("ORG1", [tx])[0].status == "OK"
    assert cluster.receipt("ORG1", tx).status == "OK"
    cluster.start("ORG3")
    target = cluster.status("ORG1").height
    cluster.wait_height("ORG3", target, timeout_s=120)
    wait_epoch(cluster, ["ORG3"], 4, timeout_s=120)
    assert cluster.status("ORG3").role == "validator"
    assert cluster.header_at("ORG3", target).hash() == cluster.header_at("ORG1", target).hash()
    assert cluster.has_tx("ORG3", tx)
    # And it votes again: with one of the others down, the three left still commit.
    cluster.kill("ORG4")
    late = cluster.party_tx("ORG3")
    assert cluster.submit("ORG3", [late])[0].status == "OK"
    assert cluster.receipt("ORG3", late).status == "OK"
    cluster.start("ORG4")
    assert all(cluster.status(org).epoch == 4 for org in alive)
