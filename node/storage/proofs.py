"""Certified proofs read from the store: inclusion and consistency bundles and the epoch chain
each carries (their format and their verification are kledger.node.proof.bundle and
kledger.node.proof.epochs, which need no store).

Rules kept here:
- A bundle carries the links of the epochs before the newest header it certifies, read from the
  store's epoch index; at most MAX_EPOCH_LINKS (the last ones): a verifier of an older start
  passes a checkpoint (docs/design.md §7.4). Building one costs three reads per link.
- The receipt is proven against the header of the tx's own block, which must be certified;
  its audit path comes from the block's stored receipts tree (O(log n) reads of one record).
"""

from __future__ import annotations

from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.errors import Refused, Status
from kledger.node.proof.bundle import ConsistencyBundle, InclusionBundle
from kledger.node.proof.epochs import MAX_EPOCH_LINKS, EpochLink
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
    block_header, block_cert = _certified(store, receipt.height)
    receipt_count, receipt_path = store.receipt_path(receipt)
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
        receipt_header=block_header,
        receipt_certificate=block_cert,
        receipt_count=receipt_count,
        receipt_path=tuple(receipt_path),
        epoch_chain=build_epoch_chain(store, header.epoch),
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
        store.genesis.chain_id,
        old_header,
        old_cert,
        new_header,
        new_cert,
        tuple(proof),
        build_epoch_chain(store, new_header.epoch),
    )


def build_epoch_chain(store: LedgerStore, epoch: int) -> tuple[EpochLink, ...]:
    """The links of the epochs before `epoch` (the last MAX_EPOCH_LINKS of them), each the
    epoch's last header with its certificate and the next set. UNAVAILABLE while an
    epoch-ending header has no certificate yet."""
    links: list[EpochLink] = []
    for end in store.epoch_ends(max(0, epoch - MAX_EPOCH_LINKS)):
        if end.epoch >= epoch:
            break
        header, cert = _certified(store, end.last_height)
        links.append(EpochLink(header, cert, end.next_validators))
    return tuple(links)


def _certified(store: LedgerStore, height: int | None) -> tuple[Header, CommitCertificate]:
    height = store.latest_certified_height() if height is None else height
    cert = store.certificate(height) if height > 0 else None
    header = store.header(height)
    if cert is None or header is None:
        raise Refused(Status.UNAVAILABLE, f"no certified header at height {height}", "height")
    return header, cert
