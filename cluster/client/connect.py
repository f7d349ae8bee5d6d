"""How the client CLIs reach a node: `--cluster DIR` (any node of a local cluster, its CA and the
org's client key from the layout) or `--node HOST:PORT --ca FILE` for a node on another host.

Client links are TLS with server authentication against the cluster CA; peer links are mutual
TLS on a separate port (node/net/tls.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc

from kledger.cluster.layout import ClusterLayout

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
    group.add_argument("--timeout", type=float, default=10.0, help="seconds per call")


def resolve_target(args: argparse.Namespace) -> tuple[str, bytes]:
    """(HOST:PORT, CA PEM) from the arguments; ValueError naming the missing argument."""
    if args.node:
        if not args.ca:
            raise ValueError("--node needs --ca (the cluster CA certificate)")
        return args.node, Path(args.ca).read_bytes()
    if not args.cluster:
        raise ValueError("give --cluster DIR or --node HOST:PORT --ca FILE")
    layout = ClusterLayout(Path(args.cluster))
    nodes = layout.nodes()
    chosen = [n for n in nodes if n.org == args.org] if args.org else nodes
    if not chosen:
        raise ValueError(f"--org {args.org}: no such node in {layout.manifest}")
    node = chosen[0]
    return f"{node.host}:{node.client_port}", layout.ca_cert.read_bytes()


def open_channel(target: str, ca_pem: bytes) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [
        ("grpc.ssl_target_name_override", CLUSTER_TLS_NAME),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    return grpc.secure_channel(target, credentials, options=options)


def channel_from_args(args: argparse.Namespace) -> grpc.Channel:
    target, ca_pem = resolve_target(args)
    return open_channel(target, ca_pem)
