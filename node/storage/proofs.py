"""Certified proofs read from the store: inclusion and consistency bundles (their format and
their verification are kledger.node.proof.bundle, which needs no store)."""

from __future__ import annotations

from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.errors import Refused, Status
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle
from kledger.node.storage.store import LedgerStore


def build_inclusion_bundle(
    store: LedgerStore, tx_hash: bytes, height: int | None = None
) -> InclusionBundle:
    """Bundle for a committed tx against the certified header at `height` (default: the latest
    certified header). Refused NOT_FOUND for an unknown tx, UNAVAILABLE when no certified header
    covers it yet."""
    found = store.get_tx(tx_hash)
    if found is None:
        raise Refused(Status.NOT_FOUND, "no committed tx with this hash", "tx_hash")
    tx, receipt = found
    header, cert = _certified(store, height)
    if header.tx_log_size <= receipt.leaf_index:
        raise Refused(
            Status.UNAVAILABLE,
            f"tx committed at height {receipt.height}; the certified header at height "
            f"{header.height} does not cover it yet",
            "tx_hash",
        )
    path = store.inclusion_proof(receipt.leaf_index, header.tx_log_size)
    return InclusionBundle(
        chain_id=store.genesis.chain_id,
        leaf=tx.encoding,
        leaf_index=receipt.leaf_index,
        tree_size=header.tx_log_size,
        audit_path=tuple(path),
        header=header,
        certificate=cert,
        receipt=receipt,
    )


def build_consistency_bundle(
    store: LedgerStore, old_height: int, new_height: int | None = None
) -> ConsistencyBundle:
    """Bundle proving the log at certified `old_height` is a prefix of the log at certified
    `new_height` (default: the latest certified header)."""
    old_header, old_cert = _certified(store, old_height)
    new_header, new_cert = _certified(store, new_height)
    if old_header.height > new_header.height:
        raise Refused(Status.INVALID_ARGUMENT, "is above the new height", "old_height")
    if old_header.tx_log_size == 0:
        raise Refused(Status.FAILED_PRECONDITION, "the log was empty at that height", "old_height")
    proof = store.consistency_proof(old_header.tx_log_size, new_header.tx_log_size)
    return ConsistencyBundle(
        store.genesis.chain_id, old_header, old_cert, new_header, new_cert, tuple(proof)
    )


def _certified(store: LedgerStore, height: int | None) -> tuple[Header, CommitCertificate]:
    height = store.latest_certified_height() if height is None else height
    cert = store.certificate(height) if height > 0 else None
    header = store.header(height)
    if cert is None or header is None:
        raise Refused(Status.UNAVAILABLE, f"no certified header at height {height}", "height")
    return header, cert
