"""TLS for the node: the cluster CA, per-org node certificates, and gRPC credentials.

- The cluster CA (ECDSA P-256) signs every node's certificate. A node certificate has
  CN = the org id and is valid for both server and client auth, with SANs `kledger-node` (the
  name clients and peers check, so a node reached by IP still proves it holds a CA-signed cert),
  `ORG.kledger`, localhost, 127.0.0.1 and any extra host.
- Client certificates (`issue_client_cert`): CN = the org id, client auth only, and one URI SAN
  that says who holds it: `urn:kledger:member:<Ed25519 member public key hex>` binds the
  certificate to one member key of the org (node/api/access.py checks that key is registered to
  the org on every call, so revoking the key revokes the certificate), `urn:kledger:public` is
  the public reader certificate every cluster publishes for the public tier.
- Both ports are mutual TLS: a certificate chaining to the cluster CA is required. On the
  client port the certificate decides what the caller may read (node/api/access.py); on the
  peer port the peer's org id is the CN of a verified *node* certificate (it carries
  `ORG.kledger`; a client certificate never does, so a member cannot pose as its org's node),
  never a claim inside a message. A node dialing a peer checks the peer's certificate for
  `ORG.kledger`, so it knows which org it reached.
- Why the client port requires a certificate even for public reads: gRPC Python's server
  credentials either require and verify a client certificate or never ask for one, so a port
  that lets clients without a certificate in cannot learn who any client is. The public tier
  is served to the published public reader certificate instead.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
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
    """Mutual TLS for the client port: a client certificate chaining to the CA is required; it
    names the reader (member, node or public reader, `certificate_identity`)."""
    return grpc.ssl_server_credentials(
        [(material.key_pem, material.cert_pem)],
        root_certificates=material.ca_pem,
        require_client_auth=True,
    )


def client_channel_credentials(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> grpc.ChannelCredentials:
    """A client's TLS: the CA to check the node against and the client certificate to show."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


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


def _text(raw: object) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def peer_org_of(context: Any) -> str | None:
    """The org id (certificate CN) of the authenticated peer of a server call, or None. Only a
    node certificate counts: its SANs carry `ORG.kledger` for its CN, which no client
    certificate does (a member's certificate has the same CN but must not speak for the node)."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    if len(names) != 1:
        return None
    org = _text(names[0])
    alternative = {_text(name) for name in auth.get("x509_subject_alternative_name") or []}
    return org if org_tls_name(org) in alternative else None


def peer_certificate_of(context: Any) -> bytes | None:
    """The verified client certificate (PEM) of a server call, or None without one."""
    found = context.auth_context().get("x509_pem_cert") or []
    if len(found) != 1:
        return None
    raw = found[0]
    return raw if isinstance(raw, bytes) else str(raw).encode()


@functools.lru_cache(maxsize=256)
def certificate_sha256(cert_pem: bytes) -> bytes:
    """SHA-256 of a certificate's DER bytes: the TLS identity an add_org pins
    (`tls_cert_sha256`), so the joined org's node is that certificate and no other the CA
    might issue for the same name. ValueError for bytes that are no PEM certificate."""
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()


MEMBER_URI_PREFIX = "urn:kledger:member:"
PUBLIC_READER_URI = "urn:kledger:public"
PUBLIC_READER_CN = "public reader"


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """Who a verified certificate names. kind: "member" (org + member key), "node" (org's node
    certificate), "public" (the public reader certificate, or any other CA certificate)."""

    kind: str
    org: str = ""
    member_key: bytes = b""


@functools.lru_cache(maxsize=1024)
def certificate_identity(cert_pem: bytes) -> CertificateIdentity:
    """The identity a CA-verified certificate carries (cached: a connection shows the same
    certificate on every call). A certificate gRPC verified always parses; one that names no
    member key and is no node certificate gets the public tier, never more."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    org = str(names[0].value) if names else ""
    try:
        alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return CertificateIdentity("public")
    uris = alternative.get_values_for_type(x509.UniformResourceIdentifier)
    members = [u.removeprefix(MEMBER_URI_PREFIX) for u in uris if u.startswith(MEMBER_URI_PREFIX)]
    if len(members) == 1 and org:
        try:
            key = bytes.fromhex(members[0])
        except ValueError:
            return CertificateIdentity("public")
        if len(key) == 32:
            return CertificateIdentity("member", org, key)
        return CertificateIdentity("public")
    if org and org_tls_name(org) in alternative.get_values_for_type(x509.DNSName):
        return CertificateIdentity("node", org)
    return CertificateIdentity("public")


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


def _issue(
    authority: Authority,
    common_name: str,
    names: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): a fresh P-256 key certified by `authority` for CN
    `common_name`, these subject alternative names and extended key usages."""
    ca_cert = x509.load_pem_x509_certificate(authority.cert_pem)
    ca_key = serialization.load_pem_private_key(authority.key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue_node_cert(
    authority: Authority, org: str, extra_hosts: tuple[str, ...] = ()
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for org's node: CN=org, server and client auth."""
    names: list[x509.GeneralName] = []
    for host in (TLS_NAME, org_tls_name(org), "localhost", "127.0.0.1", *extra_hosts):
        try:
            general: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            general = x509.DNSName(host)
        if general not in names:
            names.append(general)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return _issue(authority, org, names, usages)


def issue_client_cert(
    authority: Authority, org: str, member_key: bytes | None
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a client: with `member_key`, a member certificate (CN =
    org, URI SAN urn:kledger:member:HEX); with None, the public reader certificate (org is
    ignored). Client auth only, so no node accepts it as a server or a peer."""
    if member_key is None:
        common_name, uri = PUBLIC_READER_CN, PUBLIC_READER_URI
    else:
        assert len(member_key) == 32, "an Ed25519 public key"
        common_name, uri = org, MEMBER_URI_PREFIX + member_key.hex()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    return _issue(authority, common_name, names, [ExtendedKeyUsageOID.CLIENT_AUTH])
