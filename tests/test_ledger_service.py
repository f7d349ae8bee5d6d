"""The client ledger service over real gRPC + TLS on 127.0.0.1 (node/api/server.py), backed by an
in-memory ledger defined here (real mempool, real Ed25519, a real RFC 6962 tree and commit
certificates signed by a quorum, and the node's own commit waiters): proto <-> domain
translation, every refusal's status code with the field named, INTERNAL for unexpected errors
without killing the server, commit waits for one tx and for many (receipts in order, timeouts
naming the missing hashes, the per-connection bound on hashes waited for, no waiter left after a
timeout or a cancelled call), health and reflection."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kledger.cluster.client.connect import (
    ClientCert,
    channel_options,
    client_credentials,
    open_aio_channel,
)
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.api.access import AccessPolicy
from kledger.node.api.commit_waiters import CommitWaiters
from kledger.node.api.ledger_service import (
    MAX_WAIT_HASHES,
    MAX_WAIT_MS,
    BlockView,
    CertifiedHeader,
    LedgerServicer,
    NodeStatusView,
    StoredTx,
    inclusion_to_json,
)
from kledger.node.api.server import NodeServers, start_servers
from kledger.node.chain import canonical
from kledger.node.chain.genesis import load_genesis
from kledger.node.chain.header import (
    ZERO_HASH,
    CommitCertificate,
    Header,
    certificate_problem,
    sign_header,
)
from kledger.node.chain.keys import load_key
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.config import Address, PeerSettings
from kledger.node.errors import Refused, Status
from kledger.node.net.peer_transport import PeerServicer
from kledger.node.net.tls import TlsMaterial
from kledger.node.ordering.admission import SubmitResult
from kledger.node.ordering.mempool import Mempool
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle
from kledger.node.registry import Registry
from kledger.node.storage.keyspace import DictView
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import ledger_pb2, ledger_pb2_grpc

WAIT_S = 20.0


# -- RFC 6962 reference (test side) -------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if index < k:
        return [*path(index, leaves[:k]), root(leaves[k:])]
    return [*path(index - k, leaves[k:]), root(leaves[:k])]


def subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = split(n)
    if m <= k:
        return [*subproof(m, leaves[:k], complete), root(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), root(leaves[:k])]


def root_from_path(index: int, size: int, leaf: bytes, audit: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2."""
    fn, sn, result = index, size - 1, leaf_hash(leaf)
    for sibling in audit:
        assert sn != 0
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0
    return result


# -- the in-memory ledger ---------------------------------------------------------------------


class MemoryLedger:
    """A LedgerBackend: mempool admission, blocks committed on demand, headers certified by a
    quorum of the cluster's validator keys."""

    def __init__(self, layout_root: Path) -> None:
        self.genesis = load_genesis(layout_root / "genesis.json")
        self.validators = self.genesis.validator_set
        self.keys = [
            load_key(layout_root / "nodes" / v / "validator.key") for v in self.validators.ids
        ]
        self.members = {k for o in self.genesis.orgs for k in o.member_keys}
        self.mempool = Mempool()
        self.leaves: list[bytes] = []
        self.txs: dict[bytes, StoredTx] = {}
        self.blocks: list[BlockView] = []
        self.changed = asyncio.Condition()
        self.waiters = CommitWaiters()  # the node's own (node/api/ledger_backend.py)
        self.broken_height = 666  # get_block raises here: an unexpected error

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def check_member(self, tx: SignedTx, body: TxBody) -> None:
        if tx.signer not in self.members:
            raise Refused(Status.PERMISSION_DENIED, "is not a registered member key", "signer")

    async def submit(self, encodings: Sequence[bytes], source: str) -> list[SubmitResult]:
        results = []
        for data in encodings:
            try:
                tx = self.mempool.admit(
                    data,
                    self.chain_id,
                    is_committed=self.txs.__contains__,
                    check_state=self.check_member,
                )
            except Refused as refusal:
                results.append(SubmitResult.refused(b"", refusal))
            else:
                results.append(SubmitResult(tx.tx_hash, "OK"))
        return results

    async def commit_block(self) -> BlockView:
        batch = self.mempool.batch(1000)
        height = len(self.blocks) + 1
        hashes = []
        for tx in batch:
            result = TxResult("OK", "", {"n": len(self.leaves)})
            self.txs[tx.tx_hash] = StoredTx(tx.encoding, Receipt(height, len(self.leaves), result))
            self.leaves.append(tx.encoding)
            hashes.append(tx.tx_hash)
        self.mempool.remove_committed(hashes)
        header = Header(
            chain_id=self.chain_id,
            epoch=0,
            height=height,
            round=height,
            parent_hash=self.blocks[-1].header.hash() if self.blocks else ZERO_HASH,
            tx_log_size=len(self.leaves),
            tx_log_root=root(self.leaves),
            state_root=ZERO_HASH,
            validator_set_hash=self.validators.digest(),
            next_validator_set_hash=ZERO_HASH,
            receipts_root=ZERO_HASH,
            proposer=self.validators.ids[height % self.validators.size],
            timestamp_ms=height,
        )
        signers = zip(self.validators.ids, self.keys, strict=True)
        certificate = CommitCertificate(
            header.hash(),
            tuple(
                (v, sign_header(k, header.hash()))
                for v, k in list(signers)[: self.validators.quorum]
            ),
        )
        block = BlockView(header, certificate, tuple(hashes))
        async with self.changed:
            self.blocks.append(block)
            self.changed.notify_all()
        self.waiters.announce((h, self.txs[h].receipt) for h in hashes)
        return block

    async def wait_for_receipts(
        self, tx_hashes: Sequence[bytes], timeout_s: float
    ) -> list[Receipt | None]:
        return await self.waiters.wait(tx_hashes, self.stored_receipt, timeout_s)

    def stored_receipt(self, tx_hash: bytes) -> Receipt | None:
        stored = self.txs.get(tx_hash)
        return None if stored is None else stored.receipt

    def get_tx(self, tx_hash: bytes) -> StoredTx | None:
        return self.txs.get(tx_hash)

    def get_block(self, height: int) -> BlockView | None:
        if height == self.broken_height:
            raise RuntimeError("a bug in the backend")
        return self.blocks[height - 1] if 0 < height <= len(self.blocks) else None

    def status(self) -> NodeStatusView:
        last = self.blocks[-1]
        return NodeStatusView(
            org="ORG1",
            epoch=0,
            round=len(self.blocks) + 1,
            leader="ORG2",
            last_header=last.header,
            certified_height=last.header.height,
            mempool_txs=len(self.mempool),
            view_changes=0,
            connected_peers=("ORG2", "ORG3"),
        )

    def get_header(self, height: int | None) -> CertifiedHeader | None:
        block = self.blocks[-1] if height is None and self.blocks else None
        if height is not None:
            block = self.get_block(height)
        return None if block is None else CertifiedHeader(block.header, block.certificate)

    def inclusion_proof(self, tx_hash: bytes) -> InclusionBundle | None:
        stored = self.txs.get(tx_hash)
        if stored is None:
            return None
        block = self.blocks[-1]
        assert block.certificate is not None
        size, index = block.header.tx_log_size, stored.receipt.leaf_index
        return InclusionBundle(
            self.chain_id,
            stored.encoding,
            index,
            size,
            tuple(path(index, self.leaves[:size])),
            block.header,
            block.certificate,
            stored.receipt,
            # the wire conversion is under test here, not the receipt proof
            block.header,
            block.certificate,
            1,
            (),
            (),
        )

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyBundle:
        by_size = {b.header.tx_log_size: b for b in self.blocks}
        if old_size not in by_size:
            raise Refused(Status.FAILED_PRECONDITION, "is not a certified log size", "old_size")
        if new_size not in by_size:
            raise Refused(Status.FAILED_PRECONDITION, "is not a certified log size", "new_size")
        old, new = by_size[old_size], by_size[new_size]
        assert old.certificate is not None and new.certificate is not None
        return ConsistencyBundle(
            self.chain_id,
            old.header,
            old.certificate,
            new.header,
            new.certificate,
            tuple(subproof(old_size, self.leaves[:new_size], True)),
        )

    async def commits(self, from_height: int) -> AsyncIterator[BlockView]:
        height = max(from_height, 1)
        while True:
            async with self.changed:
                await self.changed.wait_for(lambda h=height: len(self.blocks) >= h)  # type: ignore[misc]
            yield self.blocks[height - 1]
            height += 1


# -- harness ----------------------------------------------------------------------------------


class Harness:
    def __init__(self, root_dir: Path, **servicer_options: int) -> None:
        self.servicer_options = servicer_options
        layout = init_cluster(root_dir, ClusterSpec(orgs=generic_orgs(4), chain_id="ledger-t"))
        node = layout.node_dir("ORG1")
        self.material = TlsMaterial.load(layout.ca_cert, node / "tls.pem", node / "tls.key")
        self.ledger = MemoryLedger(layout.root)
        self.client_key = load_key(layout.client_key("ORG1"))
        self.layout = layout
        # The registry state the access policy checks member keys against: genesis.
        self.state = DictView()
        self.state.apply(Registry(load_genesis(layout.genesis)).genesis_writes())
        self.stranger_key = load_key(layout.node_dir("ORG1") / "validator.key")
        self.servers: NodeServers | None = None
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> Harness:
        metrics = self.metrics = NodeMetrics.create("ORG1")
        access = AccessPolicy(lambda: self.state, metrics)
        self.servers = await start_servers(
            material=self.material,
            client_address=Address("127.0.0.1", 0),
            peer_address=Address("127.0.0.1", 0),
            access=access,
            ledger=LedgerServicer(self.ledger, access, metrics, **self.servicer_options),
            peer=PeerServicer(
                on_message=lambda s, p, _: None,
                block_source=lambda a, b: [],
                is_validator=self.ledger.validators.contains,
                metrics=metrics,
                settings=PeerSettings(),
            ),
            peer_settings=PeerSettings(),
        )
        self.channel = open_aio_channel(
            f"127.0.0.1:{self.servers.client_port}",
            self.material.ca_pem,
            ClientCert.member(self.layout, "ORG1"),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.channel is not None and self.servers is not None
        await self.channel.close()
        await self.servers.stop(0)

    def other_connection(self) -> grpc.aio.Channel:
        """A second channel as ORG1's member on a connection of its own (gRPC shares one
        connection between a process's channels to one target unless told not to)."""
        assert self.servers is not None
        return grpc.aio.secure_channel(
            f"127.0.0.1:{self.servers.client_port}",
            client_credentials(self.material.ca_pem, ClientCert.member(self.layout, "ORG1")),
            options=[*channel_options(), ("grpc.use_local_subchannel_pool", 1)],
        )

    @property
    def stub(self) -> ledger_pb2_grpc.LedgerStub:
        return ledger_pb2_grpc.LedgerStub(self.channel)  # type: ignore[no-untyped-call]

    def tx(self, nonce: int, chain_id: str = "ledger-t", signer: object = None) -> SignedTx:
        body = TxBody(chain_id=chain_id, type="usage.report", nonce=nonce, payload={"n": nonce})
        return sign_tx(self.client_key if signer is None else signer, body)  # type: ignore[arg-type]


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


@pytest.mark.asyncio
async def test_submit_refusals_map_to_status_codes(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        good = h.tx(1)
        reply = await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=good.encoding))
        assert reply.tx_hash == good.tx_hash
        forged = SignedTx(good.body, good.signer, bytes(64))
        oversize = b"\x00" * (h.ledger.genesis.tx_limits.max_tx_bytes + 1)
        cases = [
            (b"\xc1", grpc.StatusCode.INVALID_ARGUMENT, ""),
            (canonical.encode([1, 2, 3]), grpc.StatusCode.INVALID_ARGUMENT, "body"),
            (SignedTx(h.tx(2).body, good.signer, bytes(64)).encoding,
             grpc.StatusCode.UNAUTHENTICATED, "signature"),
            (h.tx(3, chain_id="elsewhere").encoding, grpc.StatusCode.INVALID_ARGUMENT,
             "chain_id"),
            (h.tx(4, signer=h.stranger_key).encoding, grpc.StatusCode.PERMISSION_DENIED,
             "signer"),
            (good.encoding, grpc.StatusCode.ALREADY_EXISTS, "tx_hash"),
            (oversize, grpc.StatusCode.RESOURCE_EXHAUSTED, "max_tx_bytes"),
        ]  # fmt: skip
        assert forged.tx_hash != good.tx_hash
        for data, code, named in cases:
            error = await refusal(h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=data)))
            assert error.code() is code, (data[:20], error.details())
            assert named in (error.details() or "")
        assert len(h.ledger.mempool) == 1  # the refusals changed nothing
        assert h.metrics.value("kledger_submitted_txs_total", status="OK") == 1.0
        assert h.metrics.value("kledger_submitted_txs_total", status="UNAUTHENTICATED") == 1.0
        await h.ledger.commit_block()
        replay = await refusal(h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=good.encoding)))
        assert replay.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "replay" in (replay.details() or "")


@pytest.mark.asyncio
async def test_batch_and_stream_report_per_tx(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        first, second = h.tx(1), h.tx(2)
        batch = await h.stub.SubmitBatch(
            ledger_pb2.SubmitBatchRequest(txs=[first.encoding, b"junk", first.encoding])
        )
        assert [(r.tx_hash, r.status) for r in batch.results] == [
            (first.tx_hash, "OK"),
            (b"", "INVALID_ARGUMENT"),
            (b"", "ALREADY_EXISTS"),
        ]
        assert "tx_hash" in batch.results[2].message

        async def requests() -> AsyncIterator[ledger_pb2.SubmitBatchRequest]:
            yield ledger_pb2.SubmitBatchRequest(txs=[second.encoding])
            yield ledger_pb2.SubmitBatchRequest(txs=[h.tx(3).encoding, h.tx(4).encoding])

        replies = [r async for r in h.stub.SubmitStream(requests())]
        assert [[x.status for x in r.results] for r in replies] == [["OK"], ["OK", "OK"]]
        assert replies[0].results[0].tx_hash == second.tx_hash
        assert len(h.ledger.mempool) == 4


@pytest.mark.asyncio
async def test_wait_get_and_proofs(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        txs = [h.tx(n) for n in range(5)]
        for tx in txs[:3]:
            await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        waiting = asyncio.ensure_future(
            h.stub.WaitForCommit(
                ledger_pb2.WaitForCommitRequest(tx_hash=txs[1].tx_hash, timeout_ms=20_000)
            )
        )
        await asyncio.sleep(0)
        await h.ledger.commit_block()
        receipt = await asyncio.wait_for(waiting, WAIT_S)
        assert (receipt.height, receipt.leaf_index, receipt.status) == (1, 1, "OK")
        assert json.loads(receipt.output_json) == {"n": 1}
        for tx in txs[3:]:
            await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        block2 = await h.ledger.commit_block()

        got = await h.stub.GetTx(ledger_pb2.GetTxRequest(tx_hash=txs[4].tx_hash))
        assert got.tx == txs[4].encoding and got.receipt.leaf_index == 4
        block = await h.stub.GetBlock(ledger_pb2.GetBlockRequest(height=2))
        assert Header.decode(block.header) == block2.header
        assert list(block.tx_hashes) == [txs[3].tx_hash, txs[4].tx_hash]
        latest = await h.stub.GetHeader(ledger_pb2.GetHeaderRequest())
        header = Header.decode(latest.header)
        certificate = CommitCertificate.decode(latest.certificate)
        assert header.height == 2
        assert certificate_problem(certificate, header, h.ledger.validators) is None
        first = await h.stub.GetHeader(ledger_pb2.GetHeaderRequest(height=1))
        assert Header.decode(first.header).tx_log_size == 3

        proof = await h.stub.GetInclusionProof(
            ledger_pb2.GetInclusionProofRequest(tx_hash=txs[1].tx_hash)
        )
        bundle = inclusion_to_json(proof)
        expected = h.ledger.inclusion_proof(txs[1].tx_hash)
        assert expected is not None and bundle == expected.to_json()
        assert bundle["format"] == "kledger-proof/v2" and bundle["tree_size"] == 5
        assert Header.from_json(bundle["header"]) == header
        audit = [bytes.fromhex(x) for x in bundle["audit_path"]]
        leaf = bytes.fromhex(bundle["leaf"])
        assert root_from_path(1, 5, leaf, audit) == header.tx_log_root

        consistency = await h.stub.GetConsistencyProof(
            ledger_pb2.GetConsistencyProofRequest(old_size=3, new_size=5)
        )
        assert consistency.chain_id == "ledger-t"
        assert list(consistency.proof) == subproof(3, h.ledger.leaves, True)
        assert Header.decode(consistency.old_header.header).tx_log_size == 3
        assert Header.decode(consistency.new_header.header) == header


@pytest.mark.asyncio
async def test_not_found_bad_requests_and_internal(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        missing = await refusal(h.stub.GetHeader(ledger_pb2.GetHeaderRequest()))
        assert missing.code() is grpc.StatusCode.NOT_FOUND
        cases = [
            (h.stub.GetTx(ledger_pb2.GetTxRequest(tx_hash=b"\x01" * 32)),
             grpc.StatusCode.NOT_FOUND, "tx_hash"),
            (h.stub.GetTx(ledger_pb2.GetTxRequest(tx_hash=b"short")),
             grpc.StatusCode.INVALID_ARGUMENT, "tx_hash"),
            (h.stub.GetBlock(ledger_pb2.GetBlockRequest(height=9)),
             grpc.StatusCode.NOT_FOUND, "height"),
            (h.stub.GetInclusionProof(ledger_pb2.GetInclusionProofRequest(tx_hash=b"\x02" * 32)),
             grpc.StatusCode.NOT_FOUND, "tx_hash"),
            (h.stub.GetConsistencyProof(ledger_pb2.GetConsistencyProofRequest(old_size=0)),
             grpc.StatusCode.INVALID_ARGUMENT, "old_size"),
            (h.stub.GetConsistencyProof(
                ledger_pb2.GetConsistencyProofRequest(old_size=2, new_size=4)),
             grpc.StatusCode.FAILED_PRECONDITION, "old_size"),
            (h.stub.WaitForCommit(
                ledger_pb2.WaitForCommitRequest(tx_hash=b"\x03" * 32, timeout_ms=10)),
             grpc.StatusCode.DEADLINE_EXCEEDED, "timeout_ms"),
            (h.stub.WaitForCommit(
                ledger_pb2.WaitForCommitRequest(tx_hash=b"\x03" * 32, timeout_ms=10**9)),
             grpc.StatusCode.INVALID_ARGUMENT, "timeout_ms"),
            (h.stub.SubmitBatch(ledger_pb2.SubmitBatchRequest(txs=[b""] * 10_001)),
             grpc.StatusCode.RESOURCE_EXHAUSTED, "txs"),
        ]  # fmt: skip
        for call, code, named in cases:
            error = await refusal(call)
            assert error.code() is code, error.details()
            assert named in (error.details() or ""), error.details()
        internal = await refusal(h.stub.GetBlock(ledger_pb2.GetBlockRequest(height=666)))
        assert internal.code() is grpc.StatusCode.INTERNAL
        assert "a bug" not in (internal.details() or "")  # internals are logged, not leaked
        # The server still serves.
        reply = await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=h.tx(1).encoding))
        assert len(reply.tx_hash) == 32


@pytest.mark.asyncio
async def test_requests_that_do_not_parse_are_invalid_arguments(tmp_path: Path) -> None:
    """Protobuf garbage (and invalid UTF-8 in a string field) once reached the client as
    UNKNOWN with the parser's exception text; now INVALID_ARGUMENT naming the request, for
    unary, server-streaming and bidirectional methods alike."""
    async with Harness(tmp_path / "c") as h:
        assert h.channel is not None
        garbage = b"\xff\xff\xff\xff"  # field 31 with a wire type that does not exist
        raw_calls = [
            h.channel.unary_unary("/kledger.v1.Ledger/SubmitTx")(garbage),
            h.channel.unary_unary("/kledger.v1.Ledger/WaitForCommits")(garbage),
            h.channel.unary_stream("/kledger.v1.Ledger/StreamCommits")(garbage),
        ]
        for call in raw_calls:
            error = await refusal(call if not hasattr(call, "read") else _drain(call))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
            assert "not a valid" in (error.details() or "")
            assert "DecodeError" not in (error.details() or "")

        async def requests() -> AsyncIterator[bytes]:
            yield ledger_pb2.SubmitBatchRequest(txs=[h.tx(1).encoding]).SerializeToString()
            yield garbage

        stream = h.channel.stream_stream("/kledger.v1.Ledger/SubmitStream")(requests())
        error = await refusal(_drain(stream))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        reply = await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=h.tx(2).encoding))
        assert len(reply.tx_hash) == 32  # the server still serves


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


async def until(condition: Callable[[], bool]) -> None:
    """Poll until `condition` holds: the server runs on this test's loop, so it moves on while
    the test sleeps."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.005)


def wait_request(
    hashes: Sequence[bytes], timeout_ms: int = 20_000
) -> ledger_pb2.WaitForCommitsRequest:
    return ledger_pb2.WaitForCommitsRequest(tx_hashes=list(hashes), timeout_ms=timeout_ms)


@pytest.mark.asyncio
async def test_batch_wait_answers_every_receipt_in_the_request_order(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        txs = [h.tx(n) for n in range(5)]
        for tx in txs[:3]:
            await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        await h.ledger.commit_block()  # leaves 0, 1, 2 at height 1
        for tx in txs[3:]:
            await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        order = [txs[4], txs[1], txs[3], txs[1], txs[0]]  # committed and not, one repeated
        waiting = asyncio.ensure_future(
            h.stub.WaitForCommits(wait_request([tx.tx_hash for tx in order]))
        )
        # The committed ones are read from the store; the other two wait, once each.
        await until(lambda: h.ledger.waiters.waiting_hashes == 2)
        await h.ledger.commit_block()  # leaves 3, 4 at height 2
        reply = await asyncio.wait_for(waiting, WAIT_S)
        assert [(r.height, r.leaf_index, r.status) for r in reply.receipts] == [
            (2, 4, "OK"), (1, 1, "OK"), (2, 3, "OK"), (1, 1, "OK"), (1, 0, "OK"),
        ]  # fmt: skip
        assert [json.loads(r.output_json)["n"] for r in reply.receipts] == [4, 1, 3, 1, 0]
        assert h.ledger.waiters.waiting_hashes == 0
        empty = await h.stub.WaitForCommits(ledger_pb2.WaitForCommitsRequest())
        assert list(empty.receipts) == []
        # As many hashes as one SubmitBatch may carry, and no more.
        full = await h.stub.WaitForCommits(wait_request([txs[0].tx_hash] * MAX_WAIT_HASHES))
        assert len(full.receipts) == MAX_WAIT_HASHES


@pytest.mark.asyncio
async def test_batch_wait_refusals_name_the_field(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        tx = h.tx(1)
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        await h.ledger.commit_block()
        good = tx.tx_hash
        cases = [
            (wait_request([good] * (MAX_WAIT_HASHES + 1)), grpc.StatusCode.INVALID_ARGUMENT,
             f"tx_hashes: {MAX_WAIT_HASHES + 1} hashes exceed MAX_WAIT_HASHES={MAX_WAIT_HASHES}"),
            (wait_request([good, good, b"short", b""]), grpc.StatusCode.INVALID_ARGUMENT,
             "tx_hashes[2]: must be 32 bytes"),
            (wait_request([good], timeout_ms=MAX_WAIT_MS + 1), grpc.StatusCode.INVALID_ARGUMENT,
             f"timeout_ms: must be at most MAX_WAIT_MS={MAX_WAIT_MS}"),
        ]  # fmt: skip
        for request, code, details in cases:
            error = await refusal(h.stub.WaitForCommits(request))
            assert (error.code(), error.details()) == (code, details)
        assert h.ledger.waiters.waiting_hashes == 0  # nothing was registered for a refusal


@pytest.mark.asyncio
async def test_batch_wait_times_out_naming_what_did_not_commit_and_leaves_no_waiter(
    tmp_path: Path,
) -> None:
    async with Harness(tmp_path / "c") as h:
        committed, pending = h.tx(1), h.tx(2)
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=committed.encoding))
        await h.ledger.commit_block()
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=pending.encoding))
        never = b"\x07" * 32
        hashes = [committed.tx_hash, pending.tx_hash, never, pending.tx_hash]
        error = await refusal(h.stub.WaitForCommits(wait_request(hashes, timeout_ms=50)))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert error.details() == (
            "tx_hashes[1], tx_hashes[2], tx_hashes[3]: not committed within timeout_ms=50 (3 of 4)"
        )
        assert h.ledger.waiters.waiting_hashes == 0
        # Many missing: the first few are named, the rest counted.
        many = [bytes([n]) * 32 for n in range(1, 21)]
        error = await refusal(h.stub.WaitForCommits(wait_request(many, timeout_ms=20)))
        named = ", ".join(f"tx_hashes[{n}]" for n in range(8))
        assert (
            error.details() == f"{named} and 12 more: not committed within timeout_ms=20 (20 of 20)"
        )
        assert h.ledger.waiters.waiting_hashes == 0
        # A client that gives up takes its waiters with it.
        call = h.stub.WaitForCommits(wait_request([pending.tx_hash, never]))
        await until(lambda: h.ledger.waiters.waiting_hashes == 2)
        call.cancel()
        await until(lambda: h.ledger.waiters.waiting_hashes == 0)
        await h.ledger.commit_block()
        reply = await h.stub.WaitForCommits(wait_request([pending.tx_hash]))
        assert [(r.height, r.leaf_index) for r in reply.receipts] == [(2, 1)]


@pytest.mark.asyncio
async def test_commit_waits_are_bounded_per_hash_not_per_call(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c", waiting_hashes_per_connection=3, waiting_hashes=5) as h:
        a, b, c, d = (bytes([n]) * 32 for n in range(1, 5))
        holding = asyncio.ensure_future(h.stub.WaitForCommits(wait_request([a, b, c, a])))
        await until(lambda: h.ledger.waiters.waiting_hashes == 3)  # a repeated hash counts once
        for call, field in (
            (h.stub.WaitForCommits(wait_request([d], timeout_ms=10)), "tx_hashes"),
            (h.stub.WaitForCommit(ledger_pb2.WaitForCommitRequest(tx_hash=d, timeout_ms=10)),
             "tx_hash"),
        ):  # fmt: skip
            error = await refusal(call)
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
            assert (error.details() or "").startswith(f"{field}: 1 more hashes"), error.details()
        # Another connection has a budget of its own, within the total of 5.
        other = h.other_connection()
        try:
            other_stub = ledger_pb2_grpc.LedgerStub(other)  # type: ignore[no-untyped-call]
            late = await refusal(other_stub.WaitForCommits(wait_request([c, d], timeout_ms=10)))
            assert late.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # admitted, then timed out
            full = await refusal(other_stub.WaitForCommits(wait_request([a, b, d], timeout_ms=10)))
            assert full.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # 3 + 3 > 5
        finally:
            await other.close()
        holding.cancel()
        await until(lambda: h.ledger.waiters.waiting_hashes == 0)
        # Released: the connection's whole budget again.
        error = await refusal(h.stub.WaitForCommits(wait_request([b, c, d], timeout_ms=10)))
        assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.asyncio
async def test_commit_waiters_wake_each_call_once_and_forget_every_ended_wait() -> None:
    """The node's waiter registry itself (node/api/commit_waiters.py), without gRPC."""
    waiters = CommitWaiters()
    a, b, c = (bytes([n]) * 32 for n in range(1, 4))
    receipts = {h: Receipt(1, n, TxResult("OK", "")) for n, h in enumerate((a, b, c))}

    def nothing_stored(_tx_hash: bytes) -> Receipt | None:
        return None

    first = asyncio.ensure_future(waiters.wait([a, b], nothing_stored, WAIT_S))
    second = asyncio.ensure_future(waiters.wait([b, c], nothing_stored, 0.05))
    await asyncio.sleep(0)
    assert waiters.waiting_hashes == 3
    waiters.announce([(b, receipts[b])])  # wakes both calls' b, completes neither
    assert await second == [receipts[b], None]  # timed out on c
    assert waiters.waiting_hashes == 1  # c forgotten with its only waiter; a still waited for
    waiters.announce([(a, receipts[a]), (c, receipts[c])])
    assert await first == [receipts[a], receipts[b]]
    assert waiters.waiting_hashes == 0

    cancelled = asyncio.ensure_future(waiters.wait([a, c], nothing_stored, WAIT_S))
    await asyncio.sleep(0)
    assert waiters.waiting_hashes == 2
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert waiters.waiting_hashes == 0

    closing = asyncio.ensure_future(waiters.wait([c], nothing_stored, WAIT_S))
    await asyncio.sleep(0)
    waiters.close()  # the node stops
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert waiters.waiting_hashes == 0

    # Already stored: answered without registering anything.
    assert await waiters.wait([c, a], receipts.get, WAIT_S) == [receipts[c], receipts[a]]
    assert waiters.waiting_hashes == 0


@pytest.mark.asyncio
async def test_stream_of_commits(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=h.tx(1).encoding))
        await h.ledger.commit_block()
        await h.ledger.commit_block()
        stream = h.stub.StreamCommits(ledger_pb2.StreamCommitsRequest(from_height=2))
        first = await asyncio.wait_for(stream.read(), WAIT_S)
        assert Header.decode(first.header).height == 2
        tx = h.tx(2)
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=tx.encoding))
        await h.ledger.commit_block()
        second = await asyncio.wait_for(stream.read(), WAIT_S)
        assert Header.decode(second.header).height == 3
        assert list(second.tx_hashes) == [tx.tx_hash]
        assert CommitCertificate.decode(second.certificate).header_hash == (
            Header.decode(second.header).hash()
        )
        stream.cancel()


@pytest.mark.asyncio
async def test_status_reports_what_the_node_sees(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=h.tx(1).encoding))
        await h.ledger.commit_block()
        await h.stub.SubmitTx(ledger_pb2.SubmitTxRequest(tx=h.tx(2).encoding))
        status = await h.stub.GetStatus(ledger_pb2.GetStatusRequest())
        last = h.ledger.blocks[-1].header
        assert (status.org, status.chain_id, status.height) == ("ORG1", "ledger-t", last.height)
        assert status.last_header_hash == last.hash() and status.tx_log_root == last.tx_log_root
        assert status.mempool_txs == 1 and status.leader == "ORG2"
        assert list(status.connected_peers) == ["ORG2", "ORG3"]


@pytest.mark.asyncio
async def test_health_and_reflection(tmp_path: Path) -> None:
    async with Harness(tmp_path / "c") as h:
        assert h.servers is not None
        health = health_pb2_grpc.HealthStub(h.channel)
        request = health_pb2.HealthCheckRequest(service="kledger.v1.Ledger")
        before = await health.Check(request)
        assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await h.servers.set_serving(True)
        after = await health.Check(request)
        assert after.status == health_pb2.HealthCheckResponse.SERVING

        reflection = reflection_pb2_grpc.ServerReflectionStub(h.channel)

        async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        replies = [r async for r in reflection.ServerReflectionInfo(ask())]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"kledger.v1.Ledger", "grpc.health.v1.Health"} <= names
