"""How the client CLIs reach a node: `--cluster DIR` (any node of a local cluster, its CA and a
client certificate from the layout) or `--node HOST:PORT --ca FILE --cert FILE --cert-key FILE`
for a node on another host.

Client links are mutual TLS: the client checks the node against the cluster CA, the node checks
the client's certificate against the same CA, and that certificate decides what the client may
read (docs/node.md "Access"). With `--cluster` the reader is, in order: `--public` (the public
reader certificate), `--member NAME`, the org of `--as ORG` (the org a command signs for), the
org of `--org` (the node asked), else the first node's org.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import grpc

from kledger.cluster.layout import ClusterLayout
from kledger.node.net.tls import client_channel_credentials

# The name every node certificate carries besides its own host names; clients check it, so a
# node reached by IP address still proves it holds a certificate from the cluster CA.
CLUSTER_TLS_NAME = "kledger-node"


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--cluster", type=Path, help="local cluster directory (kledger cluster init)"
    )
    group.add_argument("--node", help="HOST:PORT of a node's client service")
    group.add_argument("--ca", type=Path, help="CA certificate (PEM) that signed the node's cert")
    group.add_argument("--org", help="with --cluster: which org's node to ask (default: first up)")
    group.add_argument("--cert", type=Path, help="client certificate (PEM) from the cluster CA")
    group.add_argument("--cert-key", type=Path, help="the client certificate's TLS key (PEM)")
    group.add_argument(
        "--member", help="with --cluster: read as member NAME (DIR/clients/NAME.pem)"
    )
    group.add_argument(
        "--public", action="store_true", help="with --cluster: read as the public reader"
    )
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


@dataclass(frozen=True, slots=True)
class ClientCert:
    """A client certificate (PEM) and its TLS private key (PEM): who the client is."""

    cert_pem: bytes
    key_pem: bytes

    @staticmethod
    def load(cert: Path, key: Path) -> ClientCert:
        try:
            return ClientCert(Path(cert).read_bytes(), Path(key).read_bytes())
        except OSError as exc:
            raise ValueError(f"{exc.filename}: cannot read ({exc.strerror})") from None

    @staticmethod
    def member(layout: ClusterLayout, name: str) -> ClientCert:
        """Member NAME's certificate in a cluster directory (an org id for init's members)."""
        return ClientCert.load(layout.client_cert(name), layout.client_tls_key(name))

    @staticmethod
    def public(layout: ClusterLayout) -> ClientCert:
        return ClientCert.load(layout.public_cert, layout.public_tls_key)


@dataclass(frozen=True, slots=True)
class Connection:
    target: str
    ca_pem: bytes
    client: ClientCert


def resolve_target(args: argparse.Namespace) -> Connection:
    """Where to connect and as whom, from the arguments; ValueError naming the missing one."""
    explicit = None
    if args.cert or args.cert_key:
        if not (args.cert and args.cert_key):
            raise ValueError("--cert and --cert-key go together")
        explicit = ClientCert.load(args.cert, args.cert_key)
    if args.node:
        if not args.ca:
            raise ValueError("--node needs --ca (the cluster CA certificate)")
        if explicit is None:
            raise ValueError("--node needs --cert and --cert-key (a client certificate)")
        return Connection(args.node, Path(args.ca).read_bytes(), explicit)
    if not args.cluster:
        raise ValueError("give --cluster DIR or --node HOST:PORT --ca FILE --cert ... --cert-key")
    layout = ClusterLayout(Path(args.cluster))
    nodes = layout.nodes()
    chosen = [n for n in nodes if n.org == args.org] if args.org else nodes
    if not chosen:
        raise ValueError(f"--org {args.org}: no such node in {layout.manifest}")
    node = chosen[0]
    if explicit is not None:
        client = explicit
    elif args.public:
        client = ClientCert.public(layout)
    else:
        reader = args.member or getattr(args, "as_org", None) or node.org
        client = ClientCert.member(layout, reader)
    return Connection(f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes(), client)


def channel_options() -> list[tuple[str, str | int]]:
    return [
        ("grpc.ssl_target_name_override", CLUSTER_TLS_NAME),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]


def client_credentials(ca_pem: bytes, client: ClientCert) -> grpc.ChannelCredentials:
    return client_channel_credentials(ca_pem, client.cert_pem, client.key_pem)


def open_channel(target: str, ca_pem: bytes, client: ClientCert) -> grpc.Channel:
    """A channel to a node's client port that shows `client`'s certificate."""
    credentials = client_credentials(ca_pem, client)
    return grpc.secure_channel(target, credentials, options=channel_options())


def open_aio_channel(target: str, ca_pem: bytes, client: ClientCert) -> grpc.aio.Channel:
    """The asyncio form of `open_channel`."""
    credentials = client_credentials(ca_pem, client)
    return grpc.aio.secure_channel(target, credentials, options=channel_options())


def channel_from_args(args: argparse.Namespace) -> grpc.Channel:
    connection = resolve_target(args)
    return open_channel(connection.target, connection.ca_pem, connection.client)
