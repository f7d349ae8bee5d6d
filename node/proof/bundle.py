"""Certified proof bundles: what a verifier needs to check, offline and trusting only the genesis
validator set (or a checkpoint, node/proof/epochs.py), that a tx is in the ledger with the
result it got (inclusion) or that the ledger only grew (consistency).

Inclusion bundle (JSON, hex for bytes):

    {"format": "kledger-proof/v2", "chain_id": str,
     "leaf": HEX (leaf data = canonical encoding of the signed tx), "leaf_index": int,
     "tree_size": int, "audit_path": [HEX32, ...],
     "header": Header.to_json(), "certificate": CommitCertificate.to_json(),
     "receipt": Receipt.to_json(),
     "receipt_header": Header.to_json(),     the header of the tx's own block (receipt.height)
     "receipt_certificate": CommitCertificate.to_json(),
     "receipt_count": int,                   txs in that block (its receipts tree's size)
     "receipt_path": [HEX32, ...],           the receipt's audit path to its receipts_root
     "epoch_chain": [EpochLink.to_json(), ...]}

Consistency bundle:

    {"format": "kledger-consistency/v2", "chain_id": str,
     "old_header": ..., "old_certificate": ..., "new_header": ..., "new_certificate": ...,
     "proof": [HEX32, ...], "epoch_chain": [...]}

Checks, in order; the first failure is the answer (`*_problem` returns it, None = valid):
chain id; leaf decodes to a signed tx of this chain whose Ed25519 signature verifies;
tree_size == header.tx_log_size; the audit path leads from H(0x00 || leaf) to
header.tx_log_root (RFC 9162 section 2.1.3.2); the receipt names this leaf and a height up to
the header's; receipt_header is at that height and its block holds the leaf (the block's leaves
end at its tx_log_size); H(0x00 || receipt encoding) leads by receipt_path to
receipt_header.receipts_root (so status, message and output are certified); the epoch chain
follows from the trusted set (node/proof/epochs.py); and each certificate signs its header with
a quorum of the set of the header's epoch, the header's height lying in that epoch's span.
Bundles of format v1 (v1 headers, receipts not certified) are refused by name.

Malformed input (missing or ill-typed field, bad hex, wrong hash length) raises DecodeError
naming the field; that is distinct from a well-formed bundle that fails a check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import check_signature, decode_body, decode_tx
from kledger.node.errors import DecodeError, Refused
from kledger.node.proof import merkle
from kledger.node.proof.epochs import (
    EpochLink,
    FollowedEpochs,
    TrustedEpoch,
    chain_to_json,
    follow_epochs,
    parse_chain,
)

INCLUSION_FORMAT = "kledger-proof/v2"
CONSISTENCY_FORMAT = "kledger-consistency/v2"
# Formats this verifier no longer reads, named when refused (never half-checked).
OLD_FORMATS = {
    "kledger-proof/v1": "v1 headers, receipts not certified",
    "kledger-consistency/v1": "v1 headers",
}
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
    receipt_header: Header
    receipt_certificate: CommitCertificate
    receipt_count: int
    receipt_path: tuple[bytes, ...]
    epoch_chain: tuple[EpochLink, ...]

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
            "receipt_header": self.receipt_header.to_json(),
            "receipt_certificate": self.receipt_certificate.to_json(),
            "receipt_count": self.receipt_count,
            "receipt_path": [h.hex() for h in self.receipt_path],
            "epoch_chain": chain_to_json(self.epoch_chain),
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
            receipt_header=Header.from_json(value.get("receipt_header")),
            receipt_certificate=CommitCertificate.from_json(value.get("receipt_certificate")),
            receipt_count=parse_count(value, "receipt_count"),
            receipt_path=parse_hashes(value.get("receipt_path"), "receipt_path"),
            epoch_chain=parse_chain(value.get("epoch_chain")),
        )


@dataclass(frozen=True, slots=True)
class ConsistencyBundle:
    chain_id: str
    old_header: Header
    old_certificate: CommitCertificate
    new_header: Header
    new_certificate: CommitCertificate
    proof: tuple[bytes, ...]
    epoch_chain: tuple[EpochLink, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CONSISTENCY_FORMAT,
            "chain_id": self.chain_id,
            "old_header": self.old_header.to_json(),
            "old_certificate": self.old_certificate.to_json(),
            "new_header": self.new_header.to_json(),
            "new_certificate": self.new_certificate.to_json(),
            "proof": [h.hex() for h in self.proof],
            "epoch_chain": chain_to_json(self.epoch_chain),
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
            epoch_chain=parse_chain(value.get("epoch_chain")),
        )


def parse_bundle(value: Any) -> InclusionBundle | ConsistencyBundle:
    """Either kind of bundle, chosen by its "format". Raises DecodeError."""
    if not isinstance(value, dict):
        raise DecodeError("a bundle is a JSON object", "bundle")
    if value.get("format") in (CONSISTENCY_FORMAT, "kledger-consistency/v1"):
        return ConsistencyBundle.from_json(value)
    return InclusionBundle.from_json(value)


# ---- checks ---------------------------------------------------------------------------------


def inclusion_problem(
    bundle: InclusionBundle, genesis: Genesis, trust: TrustedEpoch | None = None
) -> str | None:
    """The first check the bundle fails, or None when it proves the tx is in the ledger with
    its receipt. `trust` defaults to the genesis set."""
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
    problem = _receipt_problem(bundle, genesis.chain_id)
    if problem:
        return problem
    followed = _followed(bundle.epoch_chain, genesis, trust)
    if isinstance(followed, str):
        return followed
    return followed.header_problem(
        bundle.certificate, header, "certificate"
    ) or followed.header_problem(
        bundle.receipt_certificate, bundle.receipt_header, "receipt_certificate"
    )


def _receipt_problem(bundle: InclusionBundle, chain_id: str) -> str | None:
    """The receipt is a leaf of the receipts tree of the tx's own block's header."""
    receipt, block = bundle.receipt, bundle.receipt_header
    if block.chain_id != chain_id:
        return f"receipt_header is of chain {block.chain_id!r}"
    if block.height != receipt.height:
        return f"receipt_header is at height {block.height}, the receipt names {receipt.height}"
    first_leaf = block.tx_log_size - bundle.receipt_count
    if not 0 <= first_leaf <= receipt.leaf_index < block.tx_log_size:
        return (
            f"leaf {receipt.leaf_index} is not among the {bundle.receipt_count} txs of the "
            f"block at height {block.height} (its leaves end at {block.tx_log_size})"
        )
    problem = merkle.inclusion_problem(
        merkle.leaf_hash(receipt.encode()),
        receipt.leaf_index - first_leaf,
        bundle.receipt_count,
        bundle.receipt_path,
        block.receipts_root,
    )
    if problem:
        return (
            f"receipt of leaf {receipt.leaf_index} (status {receipt.result.status}) does not "
            f"match receipts_root of header {block.height}: {problem}"
        )
    return None


def consistency_problem(
    bundle: ConsistencyBundle, genesis: Genesis, trust: TrustedEpoch | None = None
) -> str | None:
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
    followed = _followed(bundle.epoch_chain, genesis, trust)
    if isinstance(followed, str):
        return followed
    return followed.header_problem(
        bundle.old_certificate, old, "old_certificate"
    ) or followed.header_problem(bundle.new_certificate, new, "new_certificate")


def bundle_problem(
    bundle: InclusionBundle | ConsistencyBundle,
    genesis: Genesis,
    trust: TrustedEpoch | None = None,
) -> str | None:
    if isinstance(bundle, InclusionBundle):
        return inclusion_problem(bundle, genesis, trust)
    return consistency_problem(bundle, genesis, trust)


def followed_epochs(
    bundle: InclusionBundle | ConsistencyBundle,
    genesis: Genesis,
    trust: TrustedEpoch | None = None,
) -> FollowedEpochs | str:
    """The sets the bundle's epoch chain proves from the trust (or its first problem)."""
    return _followed(bundle.epoch_chain, genesis, trust)


def _followed(
    chain: tuple[EpochLink, ...], genesis: Genesis, trust: TrustedEpoch | None
) -> FollowedEpochs | str:
    return follow_epochs(chain, trust or TrustedEpoch.of_genesis(genesis), genesis.chain_id)


# ---- JSON field parsing ---------------------------------------------------------------------


def _expect_format(value: Any, expected: str) -> None:
    if not isinstance(value, dict):
        raise DecodeError("a bundle is a JSON object", "bundle")
    old = value.get("format")
    if isinstance(old, str) and old in OLD_FORMATS:
        raise DecodeError(
            f"{old} ({OLD_FORMATS[old]}) is no longer read; this verifier reads "
            f"{expected}: fetch the proof again from a node of this version",
            "format",
        )
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
