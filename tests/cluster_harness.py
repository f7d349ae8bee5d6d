"""A local cluster of real node processes for integration tests: `kledger cluster init` in a
temporary directory, processes started and stopped by cluster/local/launcher.py, clients over
gRPC/TLS on 127.0.0.1. Ports are chosen as `cluster init` chooses them (cluster/local/ports.py): a
block below the OS's ephemeral range, free and claimed, so clusters created one after another
(or by test runs side by side) each get their own. Every process it starts is stopped in
`close`; a node that does not serve fails the test with its log tail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc

from kledger.cluster.client.connect import ClientCert, open_channel
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.header import Header
from kledger.node.chain.keys import KeyPair, load_key
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

CHAIN_ID = "kledger-it"
# Short timeouts so view changes happen quickly in tests (the defaults suit real networks).
TEST_CONSENSUS = {
    "round_timeout_ms": 800,
    "empty_block_delay_ms": 150,
    # Real nodes run leader reputation here, so kills and restarts exercise it end to end.
    "leader_reputation_window_rounds": 20,
}
T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = 60.0) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


class LocalCluster:
    def __init__(self, root: Path, nodes: int = 4) -> None:
        self.layout = init_cluster(root, ClusterSpec(orgs=generic_orgs(nodes), chain_id=CHAIN_ID))
        self.orgs = [n.org for n in self.layout.nodes()]
        for org in self.orgs:
            path = self.layout.node_config(org)
            config = json.loads(path.read_text())
            config["consensus"] = TEST_CONSENSUS
            path.write_text(json.dumps(config, indent=2))
        self._channels: dict[str, grpc.Channel] = {}
        self._nonce = 0

    # -- processes ----------------------------------------------------------------------------

    def up(self) -> None:
        failures = launcher.up(self.layout, timeout_s=90)
        assert not failures, "\n".join(failure.report() for failure in failures)

    def kill(self, org: str) -> None:
        assert launcher.kill_node(self.layout, org), f"{org} was not running"
        self._drop_channel(org)

    def stop(self, org: str) -> None:
        launcher.stop_node(self.layout, org)
        self._drop_channel(org)

    def start(self, org: str) -> None:
        launcher.start_node(self.layout, org)
        if launcher.wait_serving(self.layout, [org], timeout_s=90):
            raise AssertionError(launcher.failure(self.layout, org, 90).report())

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        launcher.down(self.layout)

    # -- clients ------------------------------------------------------------------------------

    def _drop_channel(self, org: str) -> None:
        channel = self._channels.pop(org, None)
        if channel is not None:
            channel.close()

    def stub(self, org: str) -> ledger_pb2_grpc.LedgerStub:
        if org not in self._channels:
            node = next(n for n in self.layout.nodes() if n.org == org)
            self._channels[org] = open_channel(
                f"{node.host}:{node.client_port}",
                self.layout.ca_cert.read_bytes(),
                ClientCert.member(self.layout, org),
            )
        return ledger_pb2_grpc.LedgerStub(self._channels[org])  # type: ignore[no-untyped-call]

    def client_key(self, org: str) -> KeyPair:
        return load_key(self.layout.client_key(org))

    def party_tx(self, org: str, key: KeyPair | None = None, chain_id: str = CHAIN_ID) -> SignedTx:
        """A valid RegisterParty by `org`'s client key (a fresh party id each time)."""
        self._nonce += 1
        payload = {
            "party_id": f"{org}-IT{self._nonce:06d}",
            "kind": "person",
            "names": [{"name": f"Integration Test {self._nonce}"}],
            "memberships": [{"society": org, "right": "PR", "territory": "Worldwide"}],
        }
        body = TxBody(chain_id, "RegisterParty", self._nonce, payload)
        return sign_tx(key or self.client_key(org), body)

    def signed_tx(
        self, org: str, tx_type: str, payload: dict[str, object], key: KeyPair | None = None
    ) -> SignedTx:
        """A tx of any type, signed by `org`'s client key unless `key` is given."""
        self._nonce += 1
        body = TxBody(CHAIN_ID, tx_type, self._nonce, payload)
        return sign_tx(key or self.client_key(org), body)

    def submit(self, org: str, txs: list[SignedTx]) -> list[ledger_pb2.TxSubmitResult]:
        request = ledger_pb2.SubmitBatchRequest(txs=[tx.encoding for tx in txs])
        return list(self.stub(org).SubmitBatch(request, timeout=10).results)

    def receipt(self, org: str, tx: SignedTx, timeout_s: float = 60) -> ledger_pb2.Receipt:
        request = ledger_pb2.WaitForCommitRequest(
            tx_hash=tx.tx_hash, timeout_ms=int(timeout_s * 1000)
        )
        reply: ledger_pb2.Receipt = self.stub(org).WaitForCommit(request, timeout=timeout_s + 5)
        return reply

    def status(self, org: str) -> ledger_pb2.NodeStatus:
        reply: ledger_pb2.NodeStatus = self.stub(org).GetStatus(
            ledger_pb2.GetStatusRequest(), timeout=5
        )
        return reply

    def header_at(self, org: str, height: int) -> Header:
        reply = self.stub(org).GetHeader(ledger_pb2.GetHeaderRequest(height=height), timeout=5)
        return Header.decode(reply.header)

    def has_tx(self, org: str, tx: SignedTx) -> bool:
        try:
            self.stub(org).GetTx(ledger_pb2.GetTxRequest(tx_hash=tx.tx_hash), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc  # type: ignore[attr-defined]
            return False
        return True

    def wait_height(self, org: str, height: int, timeout_s: float = 60) -> int:
        return wait_for(
            f"{org} to reach height {height}",
            lambda: h if (h := self.status(org).height) >= height else None,
            timeout_s,
        )
