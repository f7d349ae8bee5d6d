"""`kledger cluster init`: the directory follows cluster/layout.py; keys, genesis roles, TLS
certificates (CN, SANs, chain to the CA, both auth usages) and node configs all add up."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kledger.cluster.cli import main as kledger
from kledger.cluster.layout import ClusterLayout
from kledger.cluster.local.gen import ALL_ROLES, ClusterSpec, generic_orgs, init_cluster
from kledger.node.chain.genesis import load_genesis
from kledger.node.chain.keys import load_key
from kledger.node.config import load_config
from kledger.node.net.tls import TLS_NAME


@pytest.fixture(scope="module")
def founding(tmp_path_factory: pytest.TempPathFactory) -> ClusterLayout:
    root = tmp_path_factory.mktemp("cluster") / "c"
    assert kledger(["cluster", "init", str(root), "--chain-id", "kledger-test"]) == 0
    return ClusterLayout(root)


def test_founding_orgs_and_roles(founding: ClusterLayout) -> None:
    genesis = load_genesis(founding.genesis)
    assert genesis.chain_id == "kledger-test" == founding.chain_id()
    roles = {o.org_id: o.roles for o in genesis.orgs}
    assert roles == {
        "FKMP": ("PERFORMER_CMO", "REPORTER"),
        "KEPA": ("PRODUCER_ASSOC",),
        "KMCA": ("ID_AGENCY", "REPORTER"),
        "KOMCA": ("AUTHOR_CMO", "REPORTER"),
        "KOSCAP": ("AUTHOR_CMO", "REPORTER"),
        "RIAK": ("ID_AGENCY", "PRODUCER_CMO", "REPORTER"),
    }
    assert genesis.validator_set.size == 6 and genesis.validator_set.quorum == 4


def test_keys_match_genesis(founding: ClusterLayout) -> None:
    genesis = load_genesis(founding.genesis)
    for org in genesis.orgs:
        assert load_key(founding.node_dir(org.org_id) / "validator.key").public_key == (
            org.validator_key
        )
        assert load_key(founding.admin_key(org.org_id)).public_key == org.admin_key
        assert load_key(founding.client_key(org.org_id)).public_key in org.member_keys
        for private in ("validator.key", "tls.key"):
            mode = (founding.node_dir(org.org_id) / private).stat().st_mode
            assert stat.S_IMODE(mode) == 0o600


def test_tls_certificates(founding: ClusterLayout) -> None:
    ca = x509.load_pem_x509_certificate(founding.ca_cert.read_bytes())
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    for node in founding.nodes():
        cert_path = founding.node_dir(node.org) / "tls.pem"
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node.org
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {TLS_NAME, f"{node.org.lower()}.kledger", "localhost"} <= set(
            sans.get_values_for_type(x509.DNSName)
        )
        assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)


def test_node_configs(founding: ClusterLayout) -> None:
    nodes = founding.nodes()
    ports = [p for n in nodes for p in (n.client_port, n.peer_port, n.metrics_port)]
    assert len(set(ports)) == len(ports) == 18
    for node in nodes:
        config = load_config(founding.node_config(node.org))
        assert config.org == node.org
        assert config.genesis.resolve() == founding.genesis.resolve()
        assert config.tls.ca.resolve() == founding.ca_cert.resolve()
        assert config.tls.cert.exists() and config.tls.key.exists()
        assert config.validator_key.exists()
        assert config.listen.client.port == node.client_port
        assert config.listen.peer.port == node.peer_port
        assert config.listen.metrics.port == node.metrics_port
        assert {org: a.port for org, a in config.peers.items()} == {
            other.org: other.peer_port for other in nodes if other.org != node.org
        }
        # Paths in the file are relative: the directory can move.
        raw = json.loads(founding.node_config(node.org).read_text())
        assert not Path(raw["genesis"]).is_absolute()


def test_generic_orgs_base_port_and_host(tmp_path: Path) -> None:
    spec = ClusterSpec(orgs=generic_orgs(4), chain_id="c4", host="ledger.example", base_port=20_000)
    layout = init_cluster(tmp_path / "c4", spec)
    genesis = load_genesis(layout.genesis)
    assert [o.org_id for o in genesis.orgs] == ["ORG1", "ORG2", "ORG3", "ORG4"]
    assert all(o.roles == tuple(sorted(ALL_ROLES)) for o in genesis.orgs)
    nodes = layout.nodes()
    assert [(n.client_port, n.peer_port, n.metrics_port) for n in nodes][:2] == [
        (20_000, 20_001, 20_002),
        (20_003, 20_004, 20_005),
    ]
    assert load_config(layout.node_config("ORG2")).peers["ORG1"].host == "ledger.example"
    cert = x509.load_pem_x509_certificate((layout.node_dir("ORG1") / "tls.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "ledger.example" in sans.get_values_for_type(x509.DNSName)


def test_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert kledger(["cluster", "init", str(tmp_path / "a"), "--nodes", "1"]) == 0
    assert kledger(["cluster", "init", str(tmp_path / "a"), "--nodes", "1"]) == 2
    assert "already holds a cluster" in capsys.readouterr().err
    assert kledger(["cluster", "init", str(tmp_path / "b"), "--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err
    assert kledger(["cluster", "init", str(tmp_path / "c"), "--base-port", "80"]) == 2
    assert "--base-port" in capsys.readouterr().err
