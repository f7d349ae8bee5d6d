"""The mutual-TLS peer transport over real gRPC on 127.0.0.1, with certificates made by
`kledger cluster init`: messages flow both ways with the sender taken from the TLS certificate;
a certificate from another CA cannot connect; a CA-signed certificate of a non-validator is
refused and counted; a restarted peer is reconnected to; a flood beyond the queue bound is dropped
and counted with the queue bounded; oversize messages are refused; block sync is limited."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import pytest

from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local.gen import ClusterSpec, free_ports, generic_orgs, init_cluster
from kledger.node.chain.genesis import load_genesis
from kledger.node.config import Address, PeerSettings
from kledger.node.net.peer_transport import (
    ConsensusBytes,
    HeaderVote,
    InboundHandler,
    InboundStream,
    PeerPayload,
    PeerServicer,
    PeerTransport,
    SyncedBlockData,
    TxGossip,
    channel_options,
    server_options,
)
from kledger.node.net.tls import (
    Authority,
    TlsMaterial,
    certificate_sha256,
    issue_node_cert,
    make_ca,
    peer_channel_credentials,
    peer_server_credentials,
)
from kledger.node.telemetry.metrics import NodeMetrics
from kledger.v1 import peer_pb2, peer_pb2_grpc

SETTINGS = PeerSettings(
    queue_max_messages=50,
    max_message_bytes=64 * 1024,
    reconnect_min_ms=20,
    reconnect_max_ms=200,
    sync_max_blocks=5,
)
WAIT_S = 20.0  # an upper bound on waiting for delivery, not a performance assertion


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> ClusterLayout:
    return init_cluster(
        tmp_path_factory.mktemp("peers") / "c", ClusterSpec(orgs=generic_orgs(3), chain_id="p")
    )


def material_of(layout: ClusterLayout, org: str) -> TlsMaterial:
    node = layout.node_dir(org)
    return TlsMaterial.load(layout.ca_cert, node / "tls.pem", node / "tls.key")


def cluster_authority(layout: ClusterLayout) -> Authority:
    return Authority(layout.ca_cert.read_bytes(), layout.ca_key.read_bytes())


def blocks(first: int, last: int) -> Iterable[SyncedBlockData]:
    for height in range(first, min(last, 100) + 1):
        yield SyncedBlockData(height, b"block%d" % height, b"qc", b"header", b"")


class PeerNode:
    """One org's peer port (server) and transport (client side), as the node wires them."""

    def __init__(
        self,
        layout: ClusterLayout,
        org: str,
        on_message: InboundHandler | None = None,
        admitted: Callable[[str], bool] | None = None,
        pins: dict[str, bytes] | None = None,
        former_limits: dict[str, int] | None = None,
    ) -> None:
        self.org = org
        self.material = material_of(layout, org)
        self.metrics = NodeMetrics.create(org)
        self.inbox: asyncio.Queue[tuple[str, PeerPayload]] = asyncio.Queue()
        validators = load_genesis(layout.genesis).validator_set
        self.servicer = PeerServicer(
            on_message=on_message or (lambda sender, p, _: self.inbox.put_nowait((sender, p))),
            block_source=blocks,
            is_validator=admitted or validators.contains,
            metrics=self.metrics,
            settings=SETTINGS,
            certificate_pin=(pins or {}).get,
            former_member_limit=(former_limits or {}).get,
        )
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.transport: PeerTransport | None = None

    async def serve(self, port: int = 0) -> Address:
        self.server = grpc.aio.server(options=server_options(SETTINGS))
        peer_pb2_grpc.add_PeerServicer_to_server(self.servicer, self.server)  # type: ignore[no-untyped-call]
        self.port = self.server.add_secure_port(
            f"127.0.0.1:{port}", peer_server_credentials(self.material)
        )
        await self.server.start()
        return Address("127.0.0.1", self.port)

    def connect(self, peers: dict[str, Address]) -> PeerTransport:
        self.transport = PeerTransport(
            org=self.org,
            material=self.material,
            peers=peers,
            metrics=self.metrics,
            settings=SETTINGS,
        )
        self.transport.start()
        return self.transport

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.stop()
        if self.server is not None:
            await self.server.stop(0)

    async def receive(self) -> tuple[str, PeerPayload]:
        async with asyncio.timeout(WAIT_S):
            return await self.inbox.get()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


async def raw_stream(
    material: TlsMaterial, address: Address, messages: list[peer_pb2.PeerMessage]
) -> peer_pb2.PeerAck:
    """A hand-made client stream, for credentials or messages the transport would not send."""
    options = [*channel_options(SETTINGS, "ORG2"), ("grpc.max_send_message_length", 1 << 24)]
    async with grpc.aio.secure_channel(
        str(address), peer_channel_credentials(material), options=options
    ) as channel:
        stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
        ack: peer_pb2.PeerAck = await stub.Stream(iter(messages), timeout=WAIT_S)
        return ack


@pytest.mark.asyncio
async def test_messages_flow_both_ways_with_sender(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address_one, address_two = await one.serve(), await two.serve()
        one.connect({"ORG2": address_two})
        two.connect({"ORG1": address_one})
        assert one.transport is not None and two.transport is not None
        assert one.transport.send("ORG2", ConsensusBytes(b"proposal"))
        two.transport.broadcast(TxGossip((b"tx-a", b"tx-b")))
        assert two.transport.send("ORG1", HeaderVote(3, b"h" * 32, b"s" * 64))
        assert await two.receive() == ("ORG1", ConsensusBytes(b"proposal"))
        assert await one.receive() == ("ORG2", TxGossip((b"tx-a", b"tx-b")))
        assert await one.receive() == ("ORG2", HeaderVote(3, b"h" * 32, b"s" * 64))
        assert one.transport.is_connected("ORG2")
        assert one.metrics.value("kledger_peer_connected", peer="ORG2") == 1.0
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_certificate_from_another_ca_cannot_connect(layout: ClusterLayout) -> None:
    two = PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        cert, key = issue_node_cert(make_ca("another CA"), "ORG1")
        impostor = TlsMaterial(make_ca("another CA").cert_pem, cert, key)
        # Trusting the real CA but presenting a foreign-CA certificate: the handshake fails.
        impostor_with_real_root = TlsMaterial(layout.ca_cert.read_bytes(), cert, key)
        for material in (impostor, impostor_with_real_root):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw_stream(material, address, [peer_pb2.PeerMessage(consensus=b"x")])
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert two.inbox.empty()
    finally:
        await two.close()


@pytest.mark.asyncio
async def test_non_validator_certificate_is_refused_and_counted(layout: ClusterLayout) -> None:
    two = PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        cert, key = issue_node_cert(cluster_authority(layout), "ORG9")
        outsider = TlsMaterial(layout.ca_cert.read_bytes(), cert, key)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw_stream(outsider, address, [peer_pb2.PeerMessage(consensus=b"x")])
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "ORG9" in (info.value.details() or "")
        assert two.metrics.value("kledger_refused_peer_connections_total", peer="ORG9") == 1.0
        assert two.inbox.empty()
        # Block sync is refused to it as well.
        async with grpc.aio.secure_channel(
            str(address),
            peer_channel_credentials(outsider),
            options=channel_options(SETTINGS, "ORG2"),
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as sync_info:
                stub = peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]
                async for _ in stub.SyncBlocks(peer_pb2.SyncRequest(from_height=1, to_height=2)):
                    pass
            assert sync_info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await two.close()


@pytest.mark.asyncio
async def test_a_joined_org_is_admitted_only_with_its_pinned_certificate(
    layout: ClusterLayout,
) -> None:
    """ORG9 joined by add_org with its certificate's SHA-256: that certificate is admitted;
    another one the same CA issues for ORG9 is refused by name and counted."""
    authority = cluster_authority(layout)
    pinned_cert, pinned_key = issue_node_cert(authority, "ORG9")
    other_cert, other_key = issue_node_cert(authority, "ORG9")
    two = PeerNode(
        layout,
        "ORG2",
        admitted=lambda org: org in {"ORG1", "ORG2", "ORG3", "ORG4", "ORG9"},
        pins={"ORG9": certificate_sha256(pinned_cert)},
    )
    try:
        address = await two.serve()
        pinned = TlsMaterial(layout.ca_cert.read_bytes(), pinned_cert, pinned_key)
        await raw_stream(pinned, address, [peer_pb2.PeerMessage(consensus=b"x")])
        assert (await two.receive())[0] == "ORG9"
        impostor = TlsMaterial(layout.ca_cert.read_bytes(), other_cert, other_key)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw_stream(impostor, address, [peer_pb2.PeerMessage(consensus=b"y")])
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "pinned" in (info.value.details() or "")
        assert two.metrics.value("kledger_refused_peer_connections_total", peer="ORG9") == 1.0
        assert two.inbox.empty()
    finally:
        await two.close()


@pytest.mark.asyncio
async def test_dialing_checks_which_org_answers(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address_two = await two.serve()
        # ORG1 believes ORG3 lives at ORG2's address: ORG2's certificate does not name ORG3.
        transport = one.connect({"ORG3": address_two})
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [b async for b in transport.fetch_blocks("ORG3", 1, 2)]
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE  # the handshake failed
        transport.send("ORG3", ConsensusBytes(b"for ORG3"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(two.inbox.get(), 1.0)
        assert transport.connections("ORG3") == 0 and transport.queued("ORG3") == 1
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_restarted_peer_is_reconnected(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        transport = one.connect({"ORG2": address})
        transport.send("ORG2", ConsensusBytes(b"before"))
        assert await two.receive() == ("ORG1", ConsensusBytes(b"before"))
        assert two.server is not None
        await two.server.stop(0)
        await until(lambda: not transport.is_connected("ORG2"))
        await two.serve(address.port)
        await until(lambda: transport.connections("ORG2") == 2)
        transport.send("ORG2", ConsensusBytes(b"after"))
        while (received := await two.receive()) != ("ORG1", ConsensusBytes(b"after")):
            assert received[0] == "ORG1"
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_flood_beyond_queue_bound_is_dropped_and_counted(layout: ClusterLayout) -> None:
    one = PeerNode(layout, "ORG1")
    try:
        (unreachable,) = free_ports(1)  # nothing listens there: the queue can only fill
        transport = one.connect({"ORG2": Address("127.0.0.1", unreachable)})
        sent = [transport.send("ORG2", ConsensusBytes(b"m%d" % i)) for i in range(500)]
        assert sent.count(True) == SETTINGS.queue_max_messages
        assert transport.queued("ORG2") == SETTINGS.queue_max_messages
        transport.broadcast(ConsensusBytes(b"more"))
        dropped = one.metrics.value("kledger_dropped_messages_total", reason="transport.queue_full")
        assert dropped == 500 - SETTINGS.queue_max_messages + 1
        assert transport.send("ORG3", ConsensusBytes(b"x")) is False  # not a configured peer
    finally:
        await one.close()


@pytest.mark.asyncio
async def test_oversize_messages_are_refused(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        transport = one.connect({"ORG2": address})
        huge = ConsensusBytes(bytes(SETTINGS.max_message_bytes + 1))
        assert transport.send("ORG2", huge) is False
        assert (
            one.metrics.value("kledger_dropped_messages_total", reason="transport.oversize") == 1.0
        )
        # A sender that ignores the limit is cut off by the receiving server.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw_stream(one.material, address, [peer_pb2.PeerMessage(consensus=huge.data)])
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert two.inbox.empty()
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_failing_handler_does_not_cut_the_stream(layout: ClusterLayout) -> None:
    seen: list[bytes] = []

    def handler(sender: str, payload: PeerPayload, _stream: InboundStream) -> None:
        assert isinstance(payload, ConsensusBytes)
        if payload.data == b"boom":
            raise ValueError("handler bug")
        seen.append(payload.data)

    two = PeerNode(layout, "ORG2", on_message=handler)
    one = PeerNode(layout, "ORG1")
    try:
        address = await two.serve()
        messages = [
            peer_pb2.PeerMessage(consensus=b"boom"),
            peer_pb2.PeerMessage(),  # empty oneof
            peer_pb2.PeerMessage(consensus=b"fine"),
        ]
        ack = await raw_stream(one.material, address, messages)
        assert ack.received == 3
        assert seen == [b"fine"]
        assert (
            two.metrics.value("kledger_dropped_messages_total", reason="transport.handler_bug")
            == 1.0
        )
        assert (
            two.metrics.value("kledger_dropped_messages_total", reason="transport.undecodable")
            == 1.0
        )
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_fetch_blocks_is_limited_per_request(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        address = await two.serve()
        transport = one.connect({"ORG2": address})
        got = [b async for b in transport.fetch_blocks("ORG2", 3, 50)]
        assert [b.height for b in got] == [3, 4, 5, 6, 7]  # sync_max_blocks = 5
        assert got[0] == SyncedBlockData(3, b"block3", b"qc", b"header", b"")
        tail = [b.height async for b in transport.fetch_blocks("ORG2", 99, 120)]
        assert tail == [99, 100]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [b async for b in transport.fetch_blocks("ORG2", 9, 3)]
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_an_org_that_left_is_cut_at_once_and_its_node_backs_off(
    layout: ClusterLayout,
) -> None:
    """ORG1 leaves the set while its stream to ORG2 is open and idle: revoke_departed cuts it
    (PERMISSION_DENIED, counted) without waiting for a message, and ORG1's link counts each
    refused redial as a failure (so it backs off) instead of starting over at every connect."""
    members = {"ORG1", "ORG2", "ORG3"}
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2", admitted=members.__contains__)
    try:
        transport = one.connect({"ORG2": await two.serve()})
        await until(lambda: two.servicer.open_calls("ORG1") == 1)
        members.discard("ORG1")
        two.servicer.revoke_departed()
        await until(lambda: two.servicer.open_calls("ORG1") == 0)
        refused = "kledger_refused_peer_connections_total"
        await until(lambda: two.metrics.value(refused, peer="ORG1") >= 3)
        assert transport.failures("ORG2") >= 2
        assert two.inbox.empty()
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_a_retired_link_writes_its_farewell_first(layout: ClusterLayout) -> None:
    one, two = PeerNode(layout, "ORG1"), PeerNode(layout, "ORG2")
    try:
        transport = one.connect({"ORG2": await two.serve()})
        await until(lambda: transport.is_connected("ORG2"))
        assert await transport.retire_peer("ORG2", ConsensusBytes(b"how epoch 0 ended"))
        assert await two.receive() == ("ORG1", ConsensusBytes(b"how epoch 0 ended"))
        assert transport.peers == ()
        assert not await transport.retire_peer("ORG2", ConsensusBytes(b"again"))
    finally:
        await one.close()
        await two.close()


@pytest.mark.asyncio
async def test_a_former_validator_syncs_only_the_epochs_it_was_in(layout: ClusterLayout) -> None:
    """ORG1 is no validator now; its last epoch ended at height 7: it is served blocks up to 7
    (a removed node that lagged commits its own removal), refused by name past it."""
    one = PeerNode(layout, "ORG1")
    two = PeerNode(
        layout, "ORG2", admitted={"ORG2", "ORG3"}.__contains__, former_limits={"ORG1": 7}
    )
    try:
        address = await two.serve()
        transport = one.connect({"ORG2": address})
        got = [b.height async for b in transport.fetch_blocks("ORG2", 3, 50)]
        assert got == [3, 4, 5, 6, 7]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            _ = [b async for b in transport.fetch_blocks("ORG2", 8, 9)]
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "not a validator" in (info.value.details() or "")
        # Its streams stay refused: it may read, never write.
        with pytest.raises(grpc.aio.AioRpcError) as stream_info:
            await raw_stream(one.material, address, [])
        assert stream_info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    finally:
        await one.close()
        await two.close()


def test_tls_material_errors_name_the_setting(tmp_path: Path, layout: ClusterLayout) -> None:
    node = layout.node_dir("ORG1")
    with pytest.raises(ValueError, match="cannot read"):
        TlsMaterial.load(tmp_path / "missing.pem", node / "tls.pem", node / "tls.key")
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(ValueError, match=r"tls\.cert"):
        TlsMaterial.load(layout.ca_cert, tmp_path / "junk.pem", node / "tls.key")
    with pytest.raises(ValueError, match=r"tls\.key"):
        TlsMaterial.load(layout.ca_cert, node / "tls.pem", tmp_path / "junk.pem")
    assert material_of(layout, "ORG1").common_name() == "ORG1"
