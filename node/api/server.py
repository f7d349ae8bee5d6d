"""The node's two gRPC servers (docs/design.md §8):

- the client port: mutual TLS (a client certificate from the cluster CA names the reader), the
  kledger.v1 Ledger service, any further client services (the registry queries),
  grpc.health.v1 and server reflection; every call passes the access tiers first
  (node/api/access.py, docs/node.md "Access");
- the peer port: mutual TLS (client certificate required, chained to the cluster CA), the
  kledger.v1 Peer service and grpc.health.v1.

Health reports NOT_SERVING until the node calls `set_serving(True)` (store checked, driver
running), so `cluster up` and load balancers wait for a ready node. Ports given as 0 are chosen
by the OS and reported back. A port that cannot be bound (taken, or not an address of this host)
is a ValueError naming the setting and the address, before either server starts.

Connections are a limited resource (`connection_options`, docs/node.md "Connections"): each
port caps its concurrent connections (handshaking ones included; gRPC closes one more at
once), the calls per connection, the time to finish a TLS handshake and to stay idle, and how
often a client may ping; the server pings each connection and drops one that does not answer.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kledger.node.api.access import AccessPolicy, EnforceAccessTiers
from kledger.node.api.ledger_service import LedgerServicer
from kledger.node.api.malformed import RejectMalformedRequests
from kledger.node.config import Address, ConnectionSettings, PeerSettings
from kledger.node.net.peer_transport import PeerServicer, server_options
from kledger.node.net.tls import TlsMaterial, client_port_credentials, peer_server_credentials
from kledger.v1 import ledger_pb2, ledger_pb2_grpc, peer_pb2, peer_pb2_grpc

# Largest client request (a SubmitBatch of MAX_BATCH_TXS txs at the default tx size limit fits).
CLIENT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Threads for synchronous handlers (the registry queries read LevelDB snapshots, so they never
# touch state the event loop is changing).
CLIENT_SYNC_THREADS = 4
# How long a server keepalive ping may go unanswered before the connection is dropped.
SERVER_KEEPALIVE_TIMEOUT_MS = 20_000
DEFAULT_CONNECTIONS = ConnectionSettings()
LEDGER_SERVICE = ledger_pb2.DESCRIPTOR.services_by_name["Ledger"].full_name
PEER_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name
# gRPC sets SO_REUSEPORT on its listeners unless told not to, and then a server binds without
# error a port another gRPC server already listens on, the kernel splitting connections between
# the two. A node must own its ports: a taken one is a bind error.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


@dataclass(frozen=True, slots=True)
class ClientService:
    """A further service on the client port: its full name (for health and reflection) and
    the generated add_XServicer_to_server call bound to its servicer."""

    name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass(slots=True)
class NodeServers:
    client: grpc.aio.Server
    peer: grpc.aio.Server
    client_port: int
    peer_port: int
    client_health: health.aio.HealthServicer
    peer_health: health.aio.HealthServicer
    service_names: tuple[str, ...]

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.client_health.set(name, status)
        for name in ("", PEER_SERVICE):
            await self.peer_health.set(name, status)

    async def stop(self, grace_s: float = 1.0) -> None:
        await self.client_health.enter_graceful_shutdown()
        await self.peer_health.enter_graceful_shutdown()
        await self.client.stop(grace_s)
        await self.peer.stop(grace_s)


def check_bindable(setting: str, address: Address) -> None:
    """ValueError naming the setting and address if a listener cannot bind it now. Tried with a
    plain socket (SO_REUSEADDR, as gRPC and the metrics server set it) before gRPC binds, so a
    taken port is one line with the reason: gRPC's own failure is a line from its C core and a
    RuntimeError without the reason."""
    host = address.host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, address.port))
        except OSError as exc:
            raise ValueError(f"{setting}: cannot bind {address}: {exc.strerror or exc}") from None


def _bind(
    server: grpc.aio.Server, setting: str, address: Address, credentials: grpc.ServerCredentials
) -> int:
    try:
        port: int = server.add_secure_port(str(address), credentials)
    except RuntimeError:
        port = 0
    if port == 0:  # taken between the check and here
        raise ValueError(f"{setting}: cannot bind {address}")
    return port


async def start_servers(
    *,
    material: TlsMaterial,
    client_address: Address,
    peer_address: Address,
    ledger: LedgerServicer,
    peer: PeerServicer,
    peer_settings: PeerSettings,
    access: AccessPolicy,
    connections: ConnectionSettings = DEFAULT_CONNECTIONS,
    extra_services: Sequence[ClientService] = (),
) -> NodeServers:
    check_bindable("listen.client", client_address)
    check_bindable("listen.peer", peer_address)
    client = grpc.aio.server(
        migration_thread_pool=ThreadPoolExecutor(CLIENT_SYNC_THREADS, "kledger-query"),
        interceptors=[RejectMalformedRequests(), EnforceAccessTiers(access)],
        options=[
            ("grpc.max_receive_message_length", CLIENT_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", CLIENT_MAX_MESSAGE_BYTES),
            EXCLUSIVE_PORT,
            *connection_options(connections, connections.client_max_connections),
        ],
    )
    ledger_pb2_grpc.add_LedgerServicer_to_server(ledger, client)  # type: ignore[no-untyped-call]
    for service in extra_services:
        service.register(client)
    client_health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(client_health, client)
    service_names = (LEDGER_SERVICE, *(s.name for s in extra_services))
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), client
    )
    client_port = _bind(client, "listen.client", client_address, client_port_credentials(material))

    peer_server = grpc.aio.server(
        options=[
            *server_options(peer_settings),
            *connection_options(connections, connections.peer_max_connections),
            EXCLUSIVE_PORT,
        ],
        interceptors=[RejectMalformedRequests()],
    )
    peer_pb2_grpc.add_PeerServicer_to_server(peer, peer_server)  # type: ignore[no-untyped-call]
    peer_health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(peer_health, peer_server)
    peer_port = _bind(peer_server, "listen.peer", peer_address, peer_server_credentials(material))

    servers = NodeServers(
        client=client,
        peer=peer_server,
        client_port=client_port,
        peer_port=peer_port,
        client_health=client_health,
        peer_health=peer_health,
        service_names=service_names,
    )
    await servers.set_serving(False)
    await client.start()
    await peer_server.start()
    return servers


def connection_options(
    connections: ConnectionSettings, max_connections: int
) -> list[tuple[str, int]]:
    """The gRPC core channel arguments (grpc_types.h) that bound one port's connections; each
    is checked against a real server in tests/test_connection_limits.py."""
    return [
        ("grpc.max_allowed_incoming_connections", max_connections),
        ("grpc.max_concurrent_streams", connections.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", connections.handshake_timeout_ms),
        ("grpc.max_connection_idle_ms", connections.idle_timeout_ms),
        ("grpc.keepalive_time_ms", connections.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", SERVER_KEEPALIVE_TIMEOUT_MS),
        # Pings from a client: without calls too, but not more often than the interval; two
        # strikes and the connection is closed (GOAWAY too_many_pings).
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", connections.min_ping_interval_ms),
        ("grpc.http2.max_ping_strikes", 2),
    ]
