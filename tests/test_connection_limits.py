"""Connections are a limited resource (issue 13 point 4). Each gRPC core option the node sets
is checked against a real server: the port's connection cap (handshaking connections count;
one more is closed at once), the handshake and idle timeouts, the calls per connection and the
ping enforcement; the metrics port's cap; a peer org's open calls. Then a real node process
with a low open-files limit outlives many more idle TCP connections than that limit, keeps
answering GetStatus, and closes handshake-less connections itself; a node whose connection
limits cannot fit its open-files limit refuses to start, naming them. Every bound below is a
wait, never a speed assertion."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kledger.cluster.client.connect import (
    CLUSTER_TLS_NAME,
    ClientCert,
    client_credentials,
    open_channel,
)
from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local import launcher
from kledger.cluster.local.gen import ClusterSpec, generic_orgs, init_cluster
from kledger.node.api.server import connection_options
from kledger.node.chain.genesis import load_genesis
from kledger.node.config import ConnectionSettings
from kledger.node.net.peer_transport import (
    KEEPALIVE_TIME_MS,
    PeerServicer,
    channel_options,
    server_options,
)
from kledger.node.net.tls import (
    client_port_credentials,
    peer_channel_credentials,
    peer_server_credentials,
)
from kledger.node.telemetry.metrics import NodeMetrics, start_metrics_server
from kledger.v1 import ledger_pb2, ledger_pb2_grpc, peer_pb2, peer_pb2_grpc
from tests.cluster_harness import wait_for
from tests.test_peer_transport import SETTINGS, blocks, material_of

WAIT_S = 30.0  # a bound on waiting for what must happen, never a speed assertion


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> ClusterLayout:
    return init_cluster(
        tmp_path_factory.mktemp("conn") / "c", ClusterSpec(orgs=generic_orgs(3), chain_id="cl")
    )


CAP = 4  # connections of the test servers' port


@contextlib.asynccontextmanager
async def serving(layout: ClusterLayout, connections: ConnectionSettings) -> AsyncIterator[int]:
    """A health server on a TLS port with the node's connection options; yields its port."""
    server = grpc.aio.server(options=connection_options(connections, CAP))
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_secure_port(
        "127.0.0.1:0", client_port_credentials(material_of(layout, "ORG1"))
    )
    await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def health_client(
    layout: ClusterLayout, port: int, *options: tuple[str, int]
) -> AsyncIterator[tuple[grpc.aio.Channel, health_pb2_grpc.HealthStub]]:
    credentials = client_credentials(layout.ca_cert.read_bytes(), ClientCert.public(layout))
    channel = grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[("grpc.ssl_target_name_override", CLUSTER_TLS_NAME), *options],
    )
    try:
        yield channel, health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await channel.close()


def raw_connections(port: int, count: int) -> list[socket.socket]:
    """`count` TCP connections that never start TLS."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


async def wait_until(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out after {WAIT_S}s waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_a_port_caps_its_connections_and_closes_handshakeless_ones(
    layout: ClusterLayout,
) -> None:
    async with serving(layout, ConnectionSettings(handshake_timeout_ms=4_000)) as port:
        sockets = raw_connections(port, CAP + 6)
        try:
            # Beyond the cap a connection is closed at once, before the handshake timeout...
            await wait_until("6 closed", lambda: sum(map(closed_by_server, sockets)) >= 6)
            still_open = [s for s in sockets if not closed_by_server(s)]
            assert len(still_open) == CAP
            # ...and those within it are closed when their handshake times out.
            await wait_until("the rest closed", lambda: all(map(closed_by_server, still_open)))
        finally:
            for sock in sockets:
                sock.close()


@pytest.mark.asyncio
async def test_an_idle_connection_is_closed(layout: ClusterLayout) -> None:
    async with (
        serving(layout, ConnectionSettings(idle_timeout_ms=1_000)) as port,
        health_client(layout, port) as (channel, stub),
    ):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=WAIT_S)
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        await wait_until(
            "the server to close the idle connection",
            lambda: channel.get_state() is not grpc.ChannelConnectivity.READY,
        )


@pytest.mark.asyncio
async def test_calls_per_connection_are_capped(layout: ClusterLayout) -> None:
    async with (
        serving(layout, ConnectionSettings(max_streams_per_connection=2)) as port,
        health_client(layout, port) as (_, stub),
    ):
        calls = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(3)]
        answered: list[int] = []

        async def first_answer(index: int) -> None:
            await calls[index].read()
            answered.append(index)

        tasks = [asyncio.create_task(first_answer(i)) for i in range(3)]
        try:
            await wait_until("two calls answered", lambda: len(answered) == 2)
            await asyncio.sleep(0.5)
            assert len(answered) == 2  # the third waits for a stream of the connection
            calls[answered[0]].cancel()
            await wait_until("the third call answered", lambda: len(answered) == 3)
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.asyncio
async def test_a_client_pinging_too_often_is_closed(layout: ClusterLayout) -> None:
    # The node's own peers ping every KEEPALIVE_TIME_MS: the default must let them.
    assert ConnectionSettings().min_ping_interval_ms < KEEPALIVE_TIME_MS
    pinging = (
        ("grpc.keepalive_time_ms", 200),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    )
    async with (
        serving(layout, ConnectionSettings(min_ping_interval_ms=5_000)) as port,
        health_client(layout, port, *pinging) as (_, stub),
    ):
        watch = stub.Watch(health_pb2.HealthCheckRequest())
        await watch.read()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async with asyncio.timeout(WAIT_S):
                await watch.read()
        assert ended.value.code() is grpc.StatusCode.UNAVAILABLE


def test_the_metrics_port_caps_its_connections() -> None:
    metrics = NodeMetrics.create("ORG1")
    server = start_metrics_server(metrics, "127.0.0.1", 0, max_connections=2)
    idle = raw_connections(server.port, 2)
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
        extra.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        assert extra.recv(1024) == b""  # closed: both slots are held by idle connections
        extra.close()
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + WAIT_S
        while True:  # the slots come back once the handler threads see the closes
            probe = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)
            probe.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            reply = probe.recv(1024)
            probe.close()
            if reply.startswith(b"HTTP/1.0 200"):
                break
            assert time.monotonic() < deadline, "metrics never answered again"
            time.sleep(0.05)
    finally:
        for sock in idle:
            sock.close()
        server.stop()


@pytest.mark.asyncio
async def test_a_peer_org_has_a_bounded_number_of_open_calls(layout: ClusterLayout) -> None:
    metrics = NodeMetrics.create("ORG1")
    servicer = PeerServicer(
        on_message=lambda _sender, _payload, _stream: None,
        block_source=blocks,
        is_validator=load_genesis(layout.genesis).validator_set.contains,
        metrics=metrics,
        settings=SETTINGS,
        max_streams_per_peer=1,
    )
    server = grpc.aio.server(options=server_options(SETTINGS))
    peer_pb2_grpc.add_PeerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_secure_port(
        "127.0.0.1:0", peer_server_credentials(material_of(layout, "ORG1"))
    )
    await server.start()
    hold = asyncio.Event()

    async def messages() -> AsyncIterator[peer_pb2.PeerMessage]:
        yield peer_pb2.PeerMessage(consensus=b"x")
        await hold.wait()

    channels = []

    def stub_of(org: str) -> peer_pb2_grpc.PeerStub:
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            peer_channel_credentials(material_of(layout, org)),
            options=channel_options(SETTINGS, "ORG1"),
        )
        channels.append(channel)
        return peer_pb2_grpc.PeerStub(channel)  # type: ignore[no-untyped-call]

    try:
        first = stub_of("ORG2").Stream(messages())
        await wait_until("ORG2's stream open", lambda: servicer.open_calls("ORG2") == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub_of("ORG2").Stream(messages())  # another connection, the same org
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_streams_per_peer" in str(refused.value.details())
        drops = metrics.value("kledger_dropped_messages_total", reason="transport.too_many_streams")
        assert drops == 1.0
        other = stub_of("ORG3").Stream(messages())  # another org has slots of its own
        await wait_until("ORG3's stream open", lambda: servicer.open_calls("ORG3") == 1)
        hold.set()
        assert (await first).received == 1 and (await other).received == 1
        assert servicer.open_calls("ORG2") == 0
    finally:
        hold.set()
        for channel in channels:
            await channel.close()
        await server.stop(0)


# -- a real node process --------------------------------------------------------------------

# The node's descriptors with every port full: 48 + 8 + 4 + RESERVED_DESCRIPTORS (256) = 316.
LOW_LIMITS = {
    "client_max_connections": 48,
    "peer_max_connections": 8,
    "metrics_max_connections": 4,
    "handshake_timeout_ms": 3_000,
    "idle_timeout_ms": 3_000,
}
OPEN_FILES = 400
IDLE_CONNECTIONS = 3 * OPEN_FILES


def one_node(root: Path, **connections: int) -> tuple[ClusterLayout, Path]:
    layout = init_cluster(root, ClusterSpec(orgs=generic_orgs(1), chain_id="cl-node"))
    config_path = layout.node_config("ORG1")
    config = json.loads(config_path.read_text())
    config["connections"] = connections
    config_path.write_text(json.dumps(config))
    return layout, config_path


def with_open_files(open_files: tuple[int, int], *argv: str) -> list[str]:
    """A command line that runs `argv` (a Python module's) under this open-files limit."""
    code = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, {open_files!r}); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
    )
    return [sys.executable, "-c", code, *argv]


def start_node(config_path: Path, open_files: tuple[int, int]) -> subprocess.Popen[bytes]:
    command = ["-m", "kledger.cluster.cli", "node", "start", "--config", str(config_path)]
    log = open(config_path.parent / "node.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            with_open_files(open_files, *command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=config_path.parent,
        )
    finally:
        log.close()


def stop_node(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def get_status(channel: grpc.Channel) -> ledger_pb2.NodeStatus:
    stub = ledger_pb2_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
    reply: ledger_pb2.NodeStatus = stub.GetStatus(ledger_pb2.GetStatusRequest(), timeout=10)
    return reply


@pytest.mark.integration
def test_a_node_outlives_more_idle_connections_than_its_open_files_limit(tmp_path: Path) -> None:
    layout, config_path = one_node(tmp_path / "c", **LOW_LIMITS)
    process = start_node(config_path, (OPEN_FILES - 100, OPEN_FILES))  # soft raised at start
    node = layout.nodes()[0]
    target = f"{node.host}:{node.client_port}"
    sockets: list[socket.socket] = []
    try:
        wait_for("the node to serve", lambda: launcher.is_serving(layout, node), WAIT_S * 3)
        before = open_channel(target, layout.ca_cert.read_bytes(), ClientCert.public(layout))
        assert get_status(before).org == "ORG1"
        sockets = raw_connections(node.client_port, IDLE_CONNECTIONS)
        time.sleep(1.0)  # hold them
        assert process.poll() is None, "the node exited"
        assert get_status(before).org == "ORG1"  # a connection made before still serves
        # The server closes them all: beyond the cap at once, the rest at their handshake
        # timeout.
        wait_for(
            "every idle connection closed by the node",
            lambda: all(map(closed_by_server, sockets)),
            WAIT_S,
        )
        for sock in sockets:
            sock.close()
        sockets = []
        after = open_channel(target, layout.ca_cert.read_bytes(), ClientCert.public(layout))
        assert get_status(after).org == "ORG1" and process.poll() is None
        after.close()
        before.close()
        lines = [json.loads(line) for line in (config_path.parent / "node.log").open()
                 if line.startswith("{")]  # fmt: skip
        [limit] = [line for line in lines if line["event"] == "open_files_limit"]
        assert limit["limit"] == OPEN_FILES  # the soft limit was raised to the hard one
    finally:
        for sock in sockets:
            sock.close()
        stop_node(process)


@pytest.mark.integration
def test_a_node_refuses_to_start_when_its_connections_cannot_fit(tmp_path: Path) -> None:
    _, config_path = one_node(tmp_path / "c", client_max_connections=500)
    process = start_node(config_path, (200, 200))
    try:
        assert process.wait(timeout=60) == 1
    finally:
        stop_node(process)
    text = (config_path.parent / "node.log").read_text()
    assert "refusing to start" in text and "client_max_connections" in text
    assert "limit of 200" in text


def test_the_open_files_soft_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource; from kledger.node.app import raise_open_files_limit; "
        "print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lower = min(soft, 256)
    command = with_open_files((lower, hard), "-c", code)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    expected = hard if hard != resource.RLIM_INFINITY else max(lower, 1 << 20)
    assert out == [str(expected), str(expected)]
