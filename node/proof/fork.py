"""Fork evidence (docs/design.md §7.4): two certified headers of one chain at one height with
different hashes prove that safety broke, and the validators whose signatures are on both
certificates are the ones who signed conflicting ledgers.

Input is any JSON object with "header" and "certificate" (what `kledger header` prints, or a
proof bundle's), and optionally the "epoch_chain" that proves the header's set (a bundle's).

Rules kept here:
- Each header is checked exactly as a bundle's: its certificate by a quorum of the set of its
  epoch, its height in that epoch's span, following its own epoch chain from the trust.
- Only then are the two compared: same chain, same height, different hashes. The signers named
  are those on both certificates (every signature on each was verified).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.chain.genesis import Genesis
from kledger.node.chain.header import CommitCertificate, Header
from kledger.node.errors import DecodeError
from kledger.node.proof.epochs import EpochLink, TrustedEpoch, follow_epochs, parse_chain


@dataclass(frozen=True, slots=True)
class CertifiedHeader:
    header: Header
    certificate: CommitCertificate
    epoch_chain: tuple[EpochLink, ...]


@dataclass(frozen=True, slots=True)
class ForkEvidence:
    height: int
    hashes: tuple[bytes, bytes]
    signed_both: tuple[str, ...]


def parse_certified(value: Any, name: str) -> CertifiedHeader:
    """A certified header from JSON. Raises DecodeError naming `name` and the field."""
    if not isinstance(value, dict):
        raise DecodeError("must be a JSON object with header and certificate", name)
    try:
        return CertifiedHeader(
            Header.from_json(value.get("header")),
            CommitCertificate.from_json(value.get("certificate")),
            parse_chain(value.get("epoch_chain", [])),
        )
    except DecodeError as exc:
        raise DecodeError(f"{name}: {exc.message}", name) from None


def fork_evidence(
    first: CertifiedHeader,
    second: CertifiedHeader,
    genesis: Genesis,
    trust: TrustedEpoch | None = None,
) -> ForkEvidence | str:
    """The evidence the two prove, or why they prove no fork."""
    start = trust or TrustedEpoch.of_genesis(genesis)
    for certified, name in ((first, "first"), (second, "second")):
        if certified.header.chain_id != genesis.chain_id:
            return f"{name}: header is of chain {certified.header.chain_id!r}"
        followed = follow_epochs(certified.epoch_chain, start, genesis.chain_id)
        if isinstance(followed, str):
            return f"{name}: {followed}"
        problem = followed.header_problem(certified.certificate, certified.header, name)
        if problem:
            return problem
    a, b = first.header, second.header
    if a.height != b.height:
        return f"the headers are at heights {a.height} and {b.height}: a fork needs one height"
    if a.hash() == b.hash():
        return f"both are the same header at height {a.height}: no fork"
    signers_a = {signer for signer, _ in first.certificate.signatures}
    signers_b = {signer for signer, _ in second.certificate.signatures}
    return ForkEvidence(a.height, (a.hash(), b.hash()), tuple(sorted(signers_a & signers_b)))
