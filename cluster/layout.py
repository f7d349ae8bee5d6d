"""The layout of a local cluster directory, shared by `kledger cluster`, the client CLIs, the
demo and the tests:

    DIR/cluster.json              {"chain_id", "nodes": [{"org", "host", "client_port",
                                   "peer_port", "metrics_port"}]}
    DIR/genesis.json              the genesis (kledger.node.chain.genesis)
    DIR/ca/ca.pem, ca.key         the cluster CA that signs every node's TLS certificate
    DIR/nodes/ORG/node.json       the node's config (node.config)
    DIR/nodes/ORG/validator.key   the org's validator key (kledger.node.chain.keys format)
    DIR/nodes/ORG/tls.pem, tls.key
    DIR/nodes/ORG/data/           the node's LevelDB
    DIR/nodes/ORG/node.log, node.pid
    DIR/clients/ORG.key           a member (client) key of each org, registered in genesis
    DIR/clients/ORG.pem, ORG.tls.key  that member's client certificate (CA-signed, bound to the
                                  member key) and its TLS key: what it shows on the client port
    DIR/clients/ORG-admin.key     the org's admin key
    DIR/clients/NAME.key, NAME.pem, NAME.tls.key  a further member (`kledger cluster issue-client`)
    DIR/public/reader.pem, reader.key  the public reader certificate and key: anyone may have
                                  them (with ca.pem) to read the public tier
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class NodeAddress:
    org: str
    host: str
    client_port: int
    peer_port: int
    metrics_port: int


@dataclass(frozen=True, slots=True)
class ClusterLayout:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "cluster.json"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    def node_dir(self, org: str) -> Path:
        return self.root / "nodes" / org

    def node_config(self, org: str) -> Path:
        return self.node_dir(org) / "node.json"

    def client_key(self, org: str) -> Path:
        return self.root / "clients" / f"{org}.key"

    def client_cert(self, name: str) -> Path:
        """The client certificate of member `name` (an org id for the member init made)."""
        return self.root / "clients" / f"{name}.pem"

    def client_tls_key(self, name: str) -> Path:
        return self.root / "clients" / f"{name}.tls.key"

    @property
    def public_cert(self) -> Path:
        return self.root / "public" / "reader.pem"

    @property
    def public_tls_key(self) -> Path:
        return self.root / "public" / "reader.key"

    def admin_key(self, org: str) -> Path:
        return self.root / "clients" / f"{org}-admin.key"

    def nodes(self) -> list[NodeAddress]:
        try:
            raw = json.loads(self.manifest.read_text())
            return [NodeAddress(**n) for n in raw["nodes"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.manifest}: not a kledger cluster manifest ({exc})") from None

    def chain_id(self) -> str:
        return str(json.loads(self.manifest.read_text())["chain_id"])
