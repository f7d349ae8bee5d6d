"""Generating a local cluster directory (`kledger cluster init`), following cluster/layout.py.

What it makes, for the six founding orgs of docs/domain.md §1 (or N generic orgs ORG1..ORGN
holding every role):
- per org: an Ed25519 validator key, an admin key and a client (member) key, all in genesis,
  and a client certificate bound to that member key (node/net/tls.py `issue_client_cert`);
- the public reader certificate (DIR/public/): the public tier for anyone;
- a cluster CA (ECDSA P-256) and per-node TLS certificates (node/net/tls.py: CN = org, server and
  client auth, SANs kledger-node, ORG.kledger, localhost, 127.0.0.1 and the chosen host);
- genesis.json, one node.json per node (paths relative to the node's directory, addresses as
  data), and cluster.json with every node's ports.

Node i uses ports base + 3i, +1, +2 for client, peer and metrics. The base is given, or else
the first free block below the OS's ephemeral range (cluster/local/ports.py says why not ephemeral
ports); either way every port is checked free here, and again by `kledger cluster up`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from kledger.cluster.layout import ClusterLayout, NodeAddress
from kledger.cluster.local.ports import check_free, claim_block
from kledger.node.chain.genesis import ORG_ID, BlockLimits, Genesis, OrgSpec, save_genesis
from kledger.node.chain.keys import KeyPair, load_key, save_key
from kledger.node.chain.tx import TxLimits
from kledger.node.config import Address, Listen, NodeConfig, TlsFiles, save_config
from kledger.node.net.tls import Authority, issue_client_cert, issue_node_cert, make_ca

# docs/domain.md §1: org id, name, roles.
FOUNDING_ORGS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("KOMCA", "Korea Music Copyright Association", ("AUTHOR_CMO", "REPORTER")),
    ("KOSCAP", "Together Music Copyright Association", ("AUTHOR_CMO", "REPORTER")),
    ("RIAK", "Korea Record Industry Association", ("PRODUCER_CMO", "ID_AGENCY", "REPORTER")),
    ("KEPA", "Korea Entertainment Producers Association", ("PRODUCER_ASSOC",)),
    ("FKMP", "Korea Music Performers Federation", ("PERFORMER_CMO", "REPORTER")),
    ("KMCA", "Korea Music Content Association", ("ID_AGENCY", "REPORTER")),
)
ALL_ROLES = (
    "AUTHOR_CMO",
    "PRODUCER_CMO",
    "PRODUCER_ASSOC",
    "PERFORMER_CMO",
    "ID_AGENCY",
    "REPORTER",
)
MAX_NODES = 64
PORTS_PER_NODE = 3
DEFAULT_CHAIN_ID = "kledger-local"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    orgs: tuple[tuple[str, str, tuple[str, ...]], ...] = FOUNDING_ORGS
    chain_id: str = DEFAULT_CHAIN_ID
    host: str = "127.0.0.1"
    base_port: int | None = None


def generic_orgs(nodes: int) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """ORG1..ORGN, each holding every role."""
    if not 1 <= nodes <= MAX_NODES:
        raise ValueError(f"--nodes: must be 1..{MAX_NODES}, got {nodes}")
    return tuple((f"ORG{i}", f"Organization {i}", ALL_ROLES) for i in range(1, nodes + 1))


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the OS reports free right now (held open together so none
    repeats)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_purposes(
    orgs: tuple[tuple[str, str, tuple[str, ...]], ...], ports: list[int]
) -> dict[int, str]:
    """port -> what it is for ('KOMCA client'), in the order init assigns them."""
    kinds = ("client", "peer", "metrics")
    return {
        port: f"{orgs[i // PORTS_PER_NODE][0]} {kinds[i % PORTS_PER_NODE]}"
        for i, port in enumerate(ports)
    }


def init_cluster(root: Path, spec: ClusterSpec = ClusterSpec()) -> ClusterLayout:
    """Create a cluster directory. ValueError if it already holds a cluster or the spec is bad."""
    layout = ClusterLayout(Path(root))
    if layout.manifest.exists():
        raise ValueError(f"{layout.root}: already holds a cluster (cluster.json); pick a new DIR")
    if not spec.chain_id:
        raise ValueError("--chain-id: must not be empty")
    for org_id, _, _ in spec.orgs:
        if not ORG_ID.match(org_id):
            raise ValueError(f"org id {org_id!r} must match {ORG_ID.pattern}")
    count = len(spec.orgs)
    if spec.base_port is not None:
        if not 1024 <= spec.base_port <= 65_535 - PORTS_PER_NODE * count:
            raise ValueError(f"--base-port: {spec.base_port} leaves no room for {count} nodes")
        ports = list(range(spec.base_port, spec.base_port + PORTS_PER_NODE * count))
        check_free(spec.host, port_purposes(spec.orgs, ports))
    else:
        ports = claim_block(PORTS_PER_NODE * count, spec.host, layout.root)

    layout.root.mkdir(parents=True, exist_ok=True)
    authority = make_ca()
    _write_private(layout.ca_key, authority.key_pem)
    layout.ca_cert.write_bytes(authority.cert_pem)

    addresses: list[NodeAddress] = []
    org_specs: list[OrgSpec] = []
    validator_keys: dict[str, KeyPair] = {}
    for index, (org_id, name, roles) in enumerate(spec.orgs):
        client_port, peer_port, metrics_port = ports[PORTS_PER_NODE * index :][:PORTS_PER_NODE]
        addresses.append(NodeAddress(org_id, spec.host, client_port, peer_port, metrics_port))
        validator, admin, client = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
        validator_keys[org_id] = validator
        save_key(layout.admin_key(org_id), admin)
        save_key(layout.client_key(org_id), client)
        write_client_cert(layout, authority, org_id, org_id, client.public_key)
        org_specs.append(
            OrgSpec(
                org_id=org_id,
                name=name,
                roles=tuple(sorted(set(roles))),
                validator_key=validator.public_key,
                admin_key=admin.public_key,
                member_keys=(client.public_key,),
            )
        )
    genesis = Genesis(
        chain_id=spec.chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        orgs=tuple(sorted(org_specs, key=lambda o: o.org_id)),
        tx_limits=TxLimits(),
        block_limits=BlockLimits(),
    )
    save_genesis(layout.genesis, genesis)
    public_cert, public_key = issue_client_cert(authority, "", None)
    layout.public_cert.parent.mkdir(parents=True, exist_ok=True)
    layout.public_cert.write_bytes(public_cert)
    layout.public_tls_key.write_bytes(public_key)  # published on purpose: the public tier

    extra_hosts = () if spec.host in ("127.0.0.1", "localhost") else (spec.host,)
    for node in addresses:
        node_dir = layout.node_dir(node.org)
        node_dir.mkdir(parents=True, exist_ok=True)
        save_key(node_dir / "validator.key", validator_keys[node.org])
        cert_pem, key_pem = issue_node_cert(authority, node.org, extra_hosts)
        (node_dir / "tls.pem").write_bytes(cert_pem)
        _write_private(node_dir / "tls.key", key_pem)
        config = NodeConfig(
            org=node.org,
            genesis=layout.genesis,
            validator_key=node_dir / "validator.key",
            data_dir=node_dir / "data",
            tls=TlsFiles(ca=layout.ca_cert, cert=node_dir / "tls.pem", key=node_dir / "tls.key"),
            listen=Listen(
                client=Address(node.host, node.client_port),
                peer=Address(node.host, node.peer_port),
                metrics=Address(node.host, node.metrics_port),
            ),
            peers={
                other.org: Address(other.host, other.peer_port)
                for other in addresses
                if other.org != node.org
            },
        )
        save_config(layout.node_config(node.org), config)
    _write_manifest(layout, spec.chain_id, addresses)
    return layout


def write_client_cert(
    layout: ClusterLayout, authority: Authority, org: str, name: str, member_key: bytes
) -> None:
    """DIR/clients/NAME.pem and NAME.tls.key: the client certificate of org's member key."""
    cert_pem, key_pem = issue_client_cert(authority, org, member_key)
    _write_private(layout.client_tls_key(name), key_pem)
    layout.client_cert(name).write_bytes(cert_pem)


def issue_client(
    root: Path, org: str, name: str, member_key_file: Path | None = None
) -> tuple[ClusterLayout, KeyPair]:
    """`kledger cluster issue-client`: a client certificate for a further member of org, from
    the cluster CA in DIR/ca. With `member_key_file` the certificate binds that existing member
    key; without, a new Ed25519 member key is made (DIR/clients/NAME.key). Either way the key
    reads nothing until the org's admin registers it (RegisterMember): the node checks on every
    call that the certificate's key is a registered member key of its org. ValueError naming
    the argument for a bad org, name or key."""
    layout = ClusterLayout(Path(root))
    nodes = {node.org for node in layout.nodes()}
    if org not in nodes:
        raise ValueError(f"--org: {org!r} is not an org of {layout.manifest}")
    if not _CLIENT_NAME.match(name):
        raise ValueError(f"--name: {name!r} must match {_CLIENT_NAME.pattern}")
    if member_key_file is None:
        if layout.client_key(name).exists() or layout.client_cert(name).exists():
            raise ValueError(f"--name: {layout.client_key(name)} already exists; pick a new name")
        key = KeyPair.generate()
        save_key(layout.client_key(name), key)
    else:
        key = load_key(member_key_file)
        if layout.client_cert(name).exists():
            raise ValueError(f"--name: {layout.client_cert(name)} already exists")
    try:
        authority = Authority(layout.ca_cert.read_bytes(), layout.ca_key.read_bytes())
    except OSError as exc:
        raise ValueError(f"{exc.filename}: cannot read the cluster CA ({exc.strerror})") from None
    write_client_cert(layout, authority, org, name, key.public_key)
    return layout, key


# A further client's file name under DIR/clients/ (a token: no path separators, no dots).
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_manifest(layout: ClusterLayout, chain_id: str, nodes: list[NodeAddress]) -> None:
    body = {
        "chain_id": chain_id,
        "nodes": [
            {
                "org": n.org,
                "host": n.host,
                "client_port": n.client_port,
                "peer_port": n.peer_port,
                "metrics_port": n.metrics_port,
            }
            for n in nodes
        ],
    }
    layout.manifest.write_text(json.dumps(body, indent=2) + "\n")
