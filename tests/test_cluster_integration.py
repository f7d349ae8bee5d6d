"""Real node processes over gRPC/TLS on 127.0.0.1 (docs/design.md §10, integration tier):
a 4-node cluster commits what any node accepts and all nodes agree; kill -9 of a node under load
loses no acknowledged tx and the node catches up; a killed leader costs a view change; with f+1
nodes down nothing commits and nothing forks; bad client input is refused with its status code
and changes nothing; clients read by their certificate (the access tiers, the audit log, a newly
issued member); a node of another CA cannot connect; a corrupted store is refused at start.

The scenarios share one cluster (module fixture) and run in file order; every process started
is stopped by the fixture's finalizer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import plyvel
import pytest

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster, issue_client
from kledger.node.chain import canonical
from kledger.node.chain.header import Header
from kledger.node.chain.keys import KeyPair, load_key
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.net.tls import TLS_NAME, TlsMaterial, peer_channel_credentials
from kledger.node.storage.store import HEADERS
from kledger.node.storage.store_parts import locate
from kledger.v1 import ledger_pb2, ledger_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.cluster_harness import CHAIN_ID, LocalCluster, wait_for

pytestmark = pytest.mark.integration
ORGS = ["ORG1", "ORG2", "ORG3", "ORG4"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster") / "c", nodes=4)
    try:
        local.up()
        yield local
    finally:
        local.close()


def common_header_hashes(cluster: LocalCluster, orgs: list[str]) -> set[bytes]:
    """The header hash every node reports at the lowest height they all have."""
    height = min(cluster.status(org).height for org in orgs)
    return {cluster.header_at(org, height).hash() for org in orgs}


def test_txs_submitted_to_any_node_commit_and_all_nodes_agree(cluster: LocalCluster) -> None:
    txs = {org: cluster.party_tx(org) for org in ORGS}
    for org, tx in txs.items():
        [result] = cluster.submit(org, [tx])
        assert result.status == "OK", result.message
    for org, tx in txs.items():
        receipt = cluster.receipt(org, tx)
        assert receipt.status == "OK", receipt.message
    height = max(cluster.status(org).height for org in ORGS)
    for org in ORGS:
        cluster.wait_height(org, height)
    assert len({cluster.header_at(org, height).hash() for org in ORGS}) == 1
    for tx in txs.values():  # every node holds every tx, whichever node it was sent to
        assert all(cluster.has_tx(org, tx) for org in ORGS)


def test_kill_9_under_load_loses_no_acknowledged_tx(cluster: LocalCluster) -> None:
    acknowledged: list[SignedTx] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        senders = ["ORG1", "ORG2", "ORG3"]
        try:
            while not stop.is_set():
                org = senders[len(acknowledged) % len(senders)]
                batch = [cluster.party_tx(org) for _ in range(5)]
                results = cluster.submit(org, batch)
                assert all(r.status == "OK" for r in results), results
                for tx in batch:
                    if cluster.receipt(org, tx).status == "OK":
                        acknowledged.append(tx)
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    wait_for("load to commit", lambda: len(acknowledged) >= 20)
    cluster.kill("ORG4")
    before = len(acknowledged)
    height = cluster.status("ORG1").height
    wait_for("commits to continue without ORG4", lambda: len(acknowledged) >= before + 30)
    assert cluster.status("ORG1").height > height
    stop.set()
    worker.join(timeout=60)
    assert not errors, errors

    cluster.start("ORG4")
    target = cluster.status("ORG1").height
    cluster.wait_height("ORG4", target, timeout_s=90)
    assert len(common_header_hashes(cluster, ORGS)) == 1
    missing = [tx.tx_hash.hex() for tx in acknowledged if not cluster.has_tx("ORG4", tx)]
    assert missing == []
    assert all(cluster.has_tx("ORG1", tx) for tx in acknowledged)


def test_killed_leader_costs_a_view_change_then_commits_resume(cluster: LocalCluster) -> None:
    leader = cluster.status("ORG1").leader
    alive = [org for org in ORGS if org != leader]
    views_before = sum(cluster.status(org).view_changes for org in alive)
    cluster.kill(leader)
    # Leaders rotate every round: when the dead node's turn comes, its round times out and a
    # timeout certificate moves the others on (a view change); commits go on after it. An idle
    # cluster waits for work first (the heartbeat is 30 s): work arriving ends the wait, so the
    # dead leader costs one round timeout from then on.
    txs = []
    for _ in range(8):
        txs.append(cluster.party_tx(alive[0]))
        assert cluster.submit(alive[0], [txs[-1]])[0].status == "OK"
        time.sleep(0.5)
    wait_for(
        "a view change",
        lambda: sum(cluster.status(org).view_changes for org in alive) > views_before,
        timeout_s=30,
    )
    assert all(cluster.receipt(alive[0], tx).status == "OK" for tx in txs)
    cluster.start(leader)
    cluster.wait_height(leader, cluster.status(alive[0]).height, timeout_s=90)


def test_f_plus_one_down_nothing_commits_nothing_forks(cluster: LocalCluster) -> None:
    down, alive = ["ORG3", "ORG4"], ["ORG1", "ORG2"]
    for org in down:
        cluster.kill(org)
    # Blocks committed before the kill may still be applying (a loaded machine can take
    # seconds): wait until the heights stand still, then nothing more may commit.
    heights = wait_for(
        "the alive nodes' heights to settle", lambda: _settled(cluster, alive), timeout_s=60
    )
    tx = cluster.party_tx("ORG1")
    assert cluster.submit("ORG1", [tx])[0].status == "OK"
    time.sleep(3.0)  # several round timeouts: without a quorum nothing may commit
    # A node may still catch up to a height the other had (committed before the kill), but no
    # height beyond what was committed then appears.
    assert max(cluster.status(org).height for org in alive) == max(heights.values())
    assert not cluster.has_tx("ORG1", tx)
    for org in down:
        cluster.start(org)
    assert cluster.receipt("ORG1", tx).status == "OK"
    height = cluster.status("ORG1").height
    for org in ORGS:
        cluster.wait_height(org, height, timeout_s=90)
    assert len({cluster.header_at(org, height).hash() for org in ORGS}) == 1


def _settled(cluster: LocalCluster, orgs: list[str]) -> dict[str, int] | None:
    before = {org: cluster.status(org).height for org in orgs}
    time.sleep(2.0)
    return before if {org: cluster.status(org).height for org in orgs} == before else None


def _refusal(cluster: LocalCluster, data: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        cluster.stub("ORG1").SubmitTx(ledger_pb2.SubmitTxRequest(tx=data), timeout=10)
    return info.value


def test_bad_client_input_gets_its_status_and_changes_nothing(cluster: LocalCluster) -> None:
    key = cluster.client_key("ORG1")
    good = cluster.party_tx("ORG1")
    tampered_body = good.body.replace(b"Integration", b"IntegratioN")
    stranger = KeyPair.from_seed(bytes(range(32)))
    bad_work = TxBody(
        CHAIN_ID,
        "RegisterWork",
        1,
        {
            "work_id": "ORG1-W1",
            "iswc": "T-034.524.680-2",  # wrong check digit
            "titles": ["x"],
            "creators": [{"party_id": "ORG1-P1", "role": "C"}],
            "provenance": {
                "creation_type": "human",
                "human_contribution": "melody and lyrics",
                "warranty_ref": "ORG1-HW-1",
            },
        },
    )
    member_as_admin = TxBody(
        CHAIN_ID,
        "RegisterMember",
        2,
        {"org": "ORG1", "public_key": stranger.public_key.hex(), "roles": ["REPORTER"]},
    )
    oversize = sign_tx(key, TxBody(CHAIN_ID, "RegisterParty", 3, {"s": "x" * 70_000}))
    cases = [
        (b"\x93\x01", grpc.StatusCode.INVALID_ARGUMENT, "tx: not valid msgpack"),
        (
            cluster.party_tx("ORG1", key=stranger).encoding,
            grpc.StatusCode.PERMISSION_DENIED,
            "signer",
        ),
        (
            cluster.party_tx("ORG1", chain_id="another-chain").encoding,
            grpc.StatusCode.INVALID_ARGUMENT,
            "chain_id",
        ),
        (oversize.encoding, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tx_bytes"),
        (sign_tx(key, member_as_admin).encoding, grpc.StatusCode.PERMISSION_DENIED, "admin"),
        (sign_tx(key, bad_work).encoding, grpc.StatusCode.INVALID_ARGUMENT, "iswc"),
    ]
    before = cluster.status("ORG1")
    for data, code, words in cases:
        error = _refusal(cluster, data)
        assert error.code() == code, (words, error)  # type: ignore[attr-defined]
        assert words in error.details(), error  # type: ignore[attr-defined]
    # A bad signature is refused, and throttles its connection (another one is not).
    node = next(n for n in cluster.layout.nodes() if n.org == "ORG1")
    with open_channel(
        f"{node.host}:{node.client_port}",
        cluster.layout.ca_cert.read_bytes(),
        ClientCert.member(cluster.layout, "ORG1"),
    ) as own:
        stub = ledger_pb2_grpc.LedgerStub(own)  # type: ignore[no-untyped-call]
        for data, code, words in (
            (SignedTx(tampered_body, good.signer, good.signature).encoding,
             grpc.StatusCode.UNAUTHENTICATED, "signature"),
            (cluster.party_tx("ORG1").encoding, grpc.StatusCode.RESOURCE_EXHAUSTED, "throttled"),
        ):  # fmt: skip
            with pytest.raises(grpc.RpcError) as info:
                stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=data), timeout=10)
            assert info.value.code() == code, (words, info.value)  # type: ignore[attr-defined]
            assert words in info.value.details(), info.value  # type: ignore[attr-defined]
    assert cluster.status("ORG1").mempool_txs == before.mempool_txs

    # A list where a choice belongs raised TypeError at admission (INTERNAL for the whole
    # batch, though the first tx was taken) and, proposed by a Byzantine leader, in every
    # node's commit worker. Now it alone is refused, naming the field.
    first, second = cluster.party_tx("ORG1"), cluster.party_tx("ORG1")
    kind_list = sign_tx(key, TxBody(CHAIN_ID, "RegisterParty", 4, {
        **canonical.decode(cluster.party_tx("ORG1").body)["payload"], "kind": [],
    }))  # fmt: skip
    answers = cluster.submit("ORG1", [first, kind_list, second])
    assert [a.status for a in answers] == ["OK", "INVALID_ARGUMENT", "OK"], answers
    assert "payload.kind" in answers[1].message
    assert cluster.receipt("ORG1", second).status == "OK"

    assert cluster.submit("ORG1", [good])[0].status == "OK"
    receipt = cluster.receipt("ORG1", good)
    replay = _refusal(cluster, good.encoding)
    assert replay.code() == grpc.StatusCode.ALREADY_EXISTS  # type: ignore[attr-defined]
    cluster.wait_height("ORG1", receipt.height)
    after = cluster.header_at("ORG1", receipt.height)
    assert after.tx_log_size == receipt.leaf_index + 1  # only the good tx entered the log
    assert cluster.header_at("ORG1", receipt.height - 1).tx_log_size == receipt.leaf_index


def test_real_nodes_read_by_certificate_and_audit_restricted_reads(cluster: LocalCluster) -> None:
    """The access tiers on real nodes (docs/node.md "Access"): the public reader gets headers
    but no tx; a usage report's tx goes to its reporter's member and is refused to another org's
    under usage_revenue, and the reporter's read is in the node's audit log; a certificate that
    `kledger cluster issue-client` made reads nothing until the org's admin registers its key."""
    layout = cluster.layout
    node = next(n for n in layout.nodes() if n.org == "ORG1")
    target, ca = f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes()
    lines = [{"line_id": "L1", "code_kind": "isrc", "code": "KRZ990000001", "usages": 10}]
    payload = {
        "report_id": "IT-ACCESS-R1", "period": "2026-01", "territory": "KR", "service": "Melon",
        "commercial_model": "subscription", "use_type": "stream", "currency": "KRW",
        "net_revenue_minor": 1_850_000_000_00, "total_usages": 10, "lines": lines,
    }  # fmt: skip
    usage = sign_tx(cluster.client_key("ORG1"), TxBody(CHAIN_ID, "ReportUsage", 900_001, payload))
    [result] = cluster.submit("ORG1", [usage])
    assert result.status == "OK", result.message
    assert cluster.receipt("ORG1", usage).status == "OK"

    def call(client: ClientCert, method: str, request: object) -> object:
        with open_channel(target, ca, client) as channel:
            stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            try:
                return getattr(stub, method)(request, timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
                return str(error.details())  # type: ignore[attr-defined]

    get_tx = ledger_pb2.GetTxRequest(tx_hash=usage.tx_hash)
    public = ClientCert.public(layout)
    assert isinstance(
        call(public, "GetHeader", ledger_pb2.GetHeaderRequest()), ledger_pb2.CertifiedHeader
    )
    assert str(call(public, "GetTx", get_tx)).startswith("access.member:")
    assert str(call(ClientCert.member(layout, "ORG2"), "GetTx", get_tx)).startswith(
        "access.usage_revenue:"
    )
    reply = call(ClientCert.member(layout, "ORG1"), "GetTx", get_tx)
    assert isinstance(reply, ledger_pb2.GetTxResponse) and reply.tx == usage.encoding

    def audited() -> list[dict[str, object]] | None:
        log = (layout.node_dir("ORG1") / "node.log").read_text().splitlines()
        found = [json.loads(line) for line in log if '"restricted_read"' in line]
        return found if any(line["rpc"] == "GetTx" for line in found) else None

    # The harness's WaitForCommit (as ORG1) and the GetTx above: each restricted read, once.
    audit = wait_for("the audit line of the reporter's read", audited, 10)
    assert [(line["org"], line["rpc"], line["rule"], line["records"]) for line in audit] == [
        ("ORG1", rpc, "usage_revenue", ["report IT-ACCESS-R1"])
        for rpc in ("WaitForCommit", "GetTx")
    ]
    assert {line["member_key"] for line in audit} == {cluster.client_key("ORG1").public_key.hex()}

    _, new_key = issue_client(layout.root, "ORG3", "ORG3-analyst")
    analyst = ClientCert.member(layout, "ORG3-analyst")
    assert str(call(analyst, "GetStatus", ledger_pb2.GetStatusRequest())).startswith(
        "access.member_key_registered:"
    )
    register = TxBody(
        CHAIN_ID, "RegisterMember", 900_002, {"org": "ORG3", "public_key": new_key.public_key.hex()}
    )
    admin_tx = sign_tx(load_key(layout.admin_key("ORG3")), register)
    [result] = cluster.submit("ORG1", [admin_tx])
    assert result.status == "OK", result.message
    assert cluster.receipt("ORG1", admin_tx).status == "OK"
    block = call(analyst, "GetBlock", ledger_pb2.GetBlockRequest(height=1))
    assert isinstance(block, ledger_pb2.GetBlockResponse)


def test_a_node_with_a_certificate_from_another_ca_cannot_connect(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    other = init_cluster(tmp_path / "other", ClusterSpec(orgs=generic_orgs(4), chain_id="x"))
    node = other.node_dir("ORG2")
    material = TlsMaterial.load(other.ca_cert, node / "tls.pem", node / "tls.key")
    target = next(n for n in cluster.layout.nodes() if n.org == "ORG1")
    channel = grpc.secure_channel(
        f"127.0.0.1:{target.peer_port}",
        peer_channel_credentials(material),
        options=[("grpc.ssl_target_name_override", TLS_NAME)],
    )
    with channel, pytest.raises(grpc.RpcError) as info:
        stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
        list(stub.SyncBlocks(peer_pb2.SyncRequest(from_height=1, to_height=2), timeout=5))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_corrupted_store_is_refused_at_start(cluster: LocalCluster) -> None:
    cluster.wait_height("ORG4", 3)
    cluster.stop("ORG4")
    data_dir = cluster.layout.node_dir("ORG4") / "data"
    part, key = locate(HEADERS + (2).to_bytes(8, "big"))  # history/, height first
    db = plyvel.DB(str(data_dir / part))
    try:
        record = canonical.decode(db.get(key))
        header = Header.decode(record["header"])
        forged = replace(header, timestamp_ms=header.timestamp_ms + 1)  # one field rewritten
        record["header"] = forged.encode()
        db.put(key, canonical.encode(record), sync=True)
    finally:
        db.close()
    started = subprocess.run(
        [
            sys.executable, "-m", "kledger.cluster.cli", "node", "start",
            "--config", str(cluster.layout.node_config("ORG4")),
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode != 0
    assert "refusing to start" in started.stderr, started.stderr[-2000:]
    assert "height 2" in started.stderr, started.stderr[-2000:]  # names what does not add up
