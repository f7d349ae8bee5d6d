"""Certified proof bundles: what a verifier needs to check, offline and trusting only the genesis
validator set, that a tx is in the ledger (inclusion) or that the ledger only grew (consistency).

Inclusion bundle (JSON, hex for bytes):

    {"format": "kledger-proof/v1", "chain_id": str,
     "leaf": HEX (leaf data = canonical encoding of the signed tx), "leaf_index": int,
     "tree_size": int, "audit_path": [HEX32, ...],
     "header": Header.to_json(), "certificate": CommitCertificate.to_json(),
     "receipt": Receipt.to_json()}

Consistency bundle:

    {"format": "kledger-consistency/v1", "chain_id": str,
     "old_header": ..., "old_certificate": ..., "new_header": ..., "new_certificate": ...,
     "proof": [HEX32, ...]}

Checks, in order; the first failure is the answer (`*_problem` returns it, None = valid):
chain id; leaf decodes to a signed tx of this chain whose Ed25519 signature verifies;
tree_size == header.tx_log_size; the audit path leads from H(0x00 || leaf) to
header.tx_log_root (RFC 9162 section 2.1.3.2); the certificate signs header.hash() with a quorum
of distinct validators of the genesis. The receipt's height and leaf index must agree with the
bundle; its result (status, message, output) is carried for the reader and is NOT covered by the
certificate, because headers commit to the txs, not to their receipts.

Malformed input (missing or ill-typed field, bad hex, wrong hash length) raises DecodeError
naming the field; that is distinct from a well-formed bundle that fails a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import CommitCertificate, Header, certificate_problem
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import check_signature, decode_body, decode_tx
from kledger.node.errors import DecodeError, Refused
from kledger.node.proof import merkle

INCLUSION_FORMAT = "kledger-proof/v1"
CONSISTENCY_FORMAT = "kledger-consistency/v1"
# Leaf data beyond this is refused before decoding (a tx is at most genesis max_tx_bytes).
MAX_LEAF_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class InclusionBundle:
    chain_id: str
    leaf: bytes
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]
    header: Header
    certificate: CommitCertificate
    receipt: Receipt

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INCLUSION_FORMAT,
            "chain_id": self.chain_id,
            "leaf": self.leaf.hex(),
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "audit_path": [h.hex() for h in self.audit_path],
            "header": self.header.to_json(),
            "certificate": self.certificate.to_json(),
            "receipt": self.receipt.to_json(),
        }

    @staticmethod
    def from_json(value: Any) -> InclusionBundle:
        """Parse; raises DecodeError naming the malformed field."""
        _expect_format(value, INCLUSION_FORMAT)
        return InclusionBundle(
            chain_id=_string(value, "chain_id"),
            leaf=parse_hex(value.get("leaf"), "leaf", max_bytes=MAX_LEAF_BYTES),
            leaf_index=parse_count(value, "leaf_index"),
            tree_size=parse_count(value, "tree_size"),
            audit_path=parse_hashes(value.get("audit_path"), "audit_path"),
            header=Header.from_json(value.get("header")),
            certificate=CommitCertificate.from_json(value.get("certificate")),
            receipt=_receipt(value.get("receipt")),
        )


@dataclass(frozen=True, slots=True)
class ConsistencyBundle:
    chain_id: str
    old_header: Header
    old_certificate: CommitCertificate
    new_header: Header
    new_certificate: CommitCertificate
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CONSISTENCY_FORMAT,
            "chain_id": self.chain_id,
            "old_header": self.old_header.to_json(),
            "old_certificate": self.old_certificate.to_json(),
            "new_header": self.new_header.to_json(),
            "new_certificate": self.new_certificate.to_json(),
            "proof": [h.hex() for h in self.proof],
        }

    @staticmethod
    def from_json(value: Any) -> ConsistencyBundle:
        _expect_format(value, CONSISTENCY_FORMAT)
        return ConsistencyBundle(
            chain_id=_string(value, "chain_id"),
            old_header=Header.from_json(value.get("old_header")),
            old_certificate=CommitCertificate.from_json(value.get("old_certificate")),
            new_header=Header.from_json(value.get("new_header")),
            new_certificate=CommitCertificate.from_json(value.get("new_certificate")),
            proof=parse_hashes(value.get("proof"), "proof"),
        )


def parse_bundle(value: Any) -> InclusionBundle | ConsistencyBundle:
    """Either kind of bundle, chosen by its "format". Raises DecodeError."""
    if not isinstance(value, dict):
        raise DecodeError("a bundle is a JSON object", "bundle")
    if value.get("format") == CONSISTENCY_FORMAT:
        return ConsistencyBundle.from_json(value)
    return InclusionBundle.from_json(value)


# ---- checks ---------------------------------------------------------------------------------


def inclusion_problem(bundle: InclusionBundle, genesis: Genesis) -> str | None:
    """The first check the bundle fails, or None when it proves the tx is in the ledger."""
    if bundle.chain_id != genesis.chain_id:
        return f"chain_id is {bundle.chain_id!r}, the genesis chain is {genesis.chain_id!r}"
    try:
        tx = decode_tx(bundle.leaf, genesis.tx_limits)
        body = decode_body(tx, genesis.tx_limits)
    except Refused as exc:
        return f"leaf does not decode to a signed tx ({exc.message})"
    if body.chain_id != genesis.chain_id:
        return f"leaf is a tx of chain {body.chain_id!r}"
    try:
        check_signature(tx)
    except Refused:
        return "leaf tx signature does not verify"
    header = bundle.header
    if header.chain_id != genesis.chain_id:
        return f"header is of chain {header.chain_id!r}"
    if bundle.tree_size != header.tx_log_size:
        return f"tree_size {bundle.tree_size} is not the header's tx_log_size {header.tx_log_size}"
    problem = merkle.inclusion_problem(
        merkle.leaf_hash(bundle.leaf),
        bundle.leaf_index,
        bundle.tree_size,
        bundle.audit_path,
        header.tx_log_root,
    )
    if problem:
        return f"inclusion: {problem} (header tx_log_root)"
    receipt = bundle.receipt
    if receipt.leaf_index != bundle.leaf_index:
        return f"receipt leaf_index {receipt.leaf_index} is not the bundle's {bundle.leaf_index}"
    if not 0 < receipt.height <= header.height:
        return f"receipt height {receipt.height} is not in 1..{header.height}"
    return _certificate_problem(bundle.certificate, header, genesis, "certificate")


def consistency_problem(bundle: ConsistencyBundle, genesis: Genesis) -> str | None:
    """The first check the bundle fails, or None when it proves the old certified log is a
    prefix of the new certified log."""
    if bundle.chain_id != genesis.chain_id:
        return f"chain_id is {bundle.chain_id!r}, the genesis chain is {genesis.chain_id!r}"
    old, new = bundle.old_header, bundle.new_header
    for header, name in ((old, "old_header"), (new, "new_header")):
        if header.chain_id != genesis.chain_id:
            return f"{name} is of chain {header.chain_id!r}"
    if old.height > new.height:
        return f"old header height {old.height} is above new header height {new.height}"
    problem = merkle.consistency_problem(
        old.tx_log_size, new.tx_log_size, bundle.proof, old.tx_log_root, new.tx_log_root
    )
    if problem:
        return f"consistency: {problem}"
    return _certificate_problem(
        bundle.old_certificate, old, genesis, "old_certificate"
    ) or _certificate_problem(bundle.new_certificate, new, genesis, "new_certificate")


def bundle_problem(bundle: InclusionBundle | ConsistencyBundle, genesis: Genesis) -> str | None:
    if isinstance(bundle, InclusionBundle):
        return inclusion_problem(bundle, genesis)
    return consistency_problem(bundle, genesis)


def _certificate_problem(
    cert: CommitCertificate, header: Header, genesis: Genesis, name: str
) -> str | None:
    # Epoch changes are not certified yet: a verifier trusts exactly the genesis validator set.
    if header.epoch != 0:
        return f"{name}: header epoch {header.epoch} needs a certified epoch change"
    problem = certificate_problem(cert, header, genesis.validator_set)
    return f"{name}: {problem}" if problem else None


# ---- JSON field parsing ---------------------------------------------------------------------


def _expect_format(value: Any, expected: str) -> None:
    if not isinstance(value, dict):
        raise DecodeError("a bundle is a JSON object", "bundle")
    if value.get("format") != expected:
        raise DecodeError(f'must be "{expected}"', "format")


def _string(value: dict[str, Any], name: str) -> str:
    item = value.get(name)
    if not isinstance(item, str):
        raise DecodeError("must be a string", name)
    return item


def parse_count(value: dict[str, Any], name: str, where: str = "") -> int:
    """A non-negative 64-bit integer field (sizes, indexes, heights)."""
    item = value.get(name)
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= merkle.MAX_TREE_SIZE:
        raise DecodeError("must be an integer in 0..2**64-1", where + name)
    return item


def parse_hex(item: Any, name: str, *, max_bytes: int) -> bytes:
    if not isinstance(item, str):
        raise DecodeError("must be a hex string", name)
    if len(item) > 2 * max_bytes:
        raise DecodeError(f"exceeds {max_bytes} bytes", name)
    try:
        return bytes.fromhex(item)
    except ValueError:
        raise DecodeError("is not valid hex", name) from None


def parse_hash(item: Any, name: str) -> bytes:
    raw = parse_hex(item, name, max_bytes=merkle.HASH_BYTES)
    if len(raw) != merkle.HASH_BYTES:
        raise DecodeError(f"must be {merkle.HASH_BYTES} bytes", name)
    return raw


def parse_hashes(item: Any, name: str) -> tuple[bytes, ...]:
    if not isinstance(item, list):
        raise DecodeError("must be a list of hex hashes", name)
    if len(item) > merkle.MAX_PROOF_HASHES:
        raise DecodeError(f"more than {merkle.MAX_PROOF_HASHES} hashes", name)
    return tuple(parse_hash(entry, f"{name}[{index}]") for index, entry in enumerate(item))


def _receipt(value: Any) -> Receipt:
    if not isinstance(value, dict):
        raise DecodeError("must be an object", "receipt")
    output = value.get("output")
    if output is not None and not isinstance(output, dict):
        raise DecodeError("must be an object or null", "receipt.output")
    for name in ("status", "message"):
        if not isinstance(value.get(name), str):
            raise DecodeError("must be a string", f"receipt.{name}")
    return Receipt(
        height=parse_count(value, "height", "receipt."),
        leaf_index=parse_count(value, "leaf_index", "receipt."),
        result=TxResult(value["status"], value["message"], output),
    )
