"""`kledger cluster init`: the directory follows cluster/layout.py; keys, genesis roles, TLS
certificates (CN, SANs, chain to the CA, both auth usages), client certificates bound to the
member keys, the public reader certificate and node configs all add up; `kledger cluster
issue-client` makes a further member's certificate."""

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
from kledger.node.net.tls import TLS_NAME, CertificateIdentity, certificate_identity


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


def test_client_certificates_bind_member_keys_and_the_public_reader(
    founding: ClusterLayout,
) -> None:
    ca = x509.load_pem_x509_certificate(founding.ca_cert.read_bytes())
    genesis = load_genesis(founding.genesis)
    for org in genesis.orgs:
        pem = founding.client_cert(org.org_id).read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # never a server or a peer
        identity = certificate_identity(pem)
        member = load_key(founding.client_key(org.org_id)).public_key
        assert identity == CertificateIdentity("member", org.org_id, member)
        assert member in org.member_keys
        assert stat.S_IMODE(founding.client_tls_key(org.org_id).stat().st_mode) == 0o600
    public = founding.public_cert.read_bytes()
    x509.load_pem_x509_certificate(public).verify_directly_issued_by(ca)
    assert certificate_identity(public) == CertificateIdentity("public")
    node = founding.node_dir("KOMCA") / "tls.pem"
    assert certificate_identity(node.read_bytes()) == CertificateIdentity("node", "KOMCA")


def test_issue_client_makes_a_member_certificate_and_the_register_tx(
    founding: ClusterLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(founding.root)
    assert kledger(["cluster", "issue-client", root, "--org", "RIAK", "--name", "riak-ops"]) == 0
    key = load_key(founding.client_key("riak-ops"))
    identity = certificate_identity(founding.client_cert("riak-ops").read_bytes())
    assert identity == CertificateIdentity("member", "RIAK", key.public_key)
    register = json.loads((founding.root / "clients" / "riak-ops.register.json").read_text())
    assert register == {
        "type": "RegisterMember",
        "payload": {"org": "RIAK", "public_key": key.public_key.hex()},
    }
    assert "RIAK-admin.key" in capsys.readouterr().out
    # An existing member key is bound, not replaced; bad arguments are refused naming them.
    existing = founding.client_key("KMCA")
    args = ["cluster", "issue-client", root, "--org", "KMCA", "--name", "kmca-2"]
    assert kledger([*args, "--member-key", str(existing)]) == 0
    bound = certificate_identity(founding.client_cert("kmca-2").read_bytes())
    assert bound.member_key == load_key(existing).public_key
    for bad, named in (
        (["--org", "NOPE", "--name", "x"], "--org"),
        (["--org", "RIAK", "--name", "riak-ops"], "--name"),
        (["--org", "RIAK", "--name", "../x"], "--name"),
    ):
        assert kledger(["cluster", "issue-client", root, *bad]) == 2
        assert named in capsys.readouterr().err
