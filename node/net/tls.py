"""TLS for the node: the cluster CA, per-org node certificates, and gRPC credentials.

- The cluster CA (ECDSA P-256) signs every node's certificate. A node certificate has
  CN = the org id and is valid for both server and client auth, with SANs `kledger-node` (the
  name clients and peers check, so a node reached by IP still proves it holds a CA-signed cert),
  `ORG.kledger`, localhost, 127.0.0.1 and any extra host.
- The client port is TLS with server authentication; the peer port is mutual TLS: the server
  requires a client certificate chaining to the cluster CA, and the peer's org id is the CN of
  that verified certificate (never a claim inside a message). A node dialing a peer checks the
  peer's certificate for `ORG.kledger`, so it knows which org it reached.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Every node certificate carries this DNS name; clients verify against it.
TLS_NAME = "kledger-node"


def org_tls_name(org: str) -> str:
    """The DNS name only org's node certificate carries: a peer dialing org checks it, so a
    misconfigured or hostile address cannot stand in for another org's node."""
    return f"{org.lower()}.kledger"


CERT_VALIDITY_DAYS = 3_650


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes of the CA certificate and this node's certificate and private key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @staticmethod
    def load(ca: Path, cert: Path, key: Path) -> TlsMaterial:
        try:
            material = TlsMaterial(ca.read_bytes(), cert.read_bytes(), key.read_bytes())
        except OSError as exc:
            raise ValueError(f"tls: cannot read {exc.filename} ({exc.strerror})") from None
        for name, pem in (("tls.ca", material.ca_pem), ("tls.cert", material.cert_pem)):
            try:
                x509.load_pem_x509_certificate(pem)
            except ValueError:
                raise ValueError(f"{name}: not a PEM certificate") from None
        try:
            serialization.load_pem_private_key(material.key_pem, password=None)
        except (ValueError, TypeError):
            raise ValueError("tls.key: not an unencrypted PEM private key") from None
        return material

    def common_name(self) -> str:
        return certificate_common_name(self.cert_pem)


def certificate_common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def client_port_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Server TLS for the client port: clients check the node; the node does not check them
    (clients authenticate by signing transactions)."""
    return grpc.ssl_server_credentials([(material.key_pem, material.cert_pem)])


def peer_server_credentials(material: TlsMaterial) -> grpc.ServerCredentials:
    """Mutual TLS for the peer port: a client certificate chaining to the CA is required."""
    return grpc.ssl_server_credentials(
        [(material.key_pem, material.cert_pem)],
        root_certificates=material.ca_pem,
        require_client_auth=True,
    )


def peer_channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_pem,
        private_key=material.key_pem,
        certificate_chain=material.cert_pem,
    )


def peer_org_of(context: Any) -> str | None:
    """The org id (certificate CN) of the authenticated peer of a server call, or None."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return None
    raw = names[0]
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


# -- certificate issuance (cluster init, tests) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Authority:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str = "kledger cluster CA") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_node_cert(
    authority: Authority, org: str, extra_hosts: tuple[str, ...] = ()
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for org's node: CN=org, server and client auth."""
    ca_cert = x509.load_pem_x509_certificate(authority.cert_pem)
    ca_key = serialization.load_pem_private_key(authority.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in (TLS_NAME, org_tls_name(org), "localhost", "127.0.0.1", *extra_hosts):
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            general = x509.DNSName(host)
        if general not in names:
            names.append(general)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, org)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
