"""Headers and commit certificates: golden hash, JSON round trip, quorum checks."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from kledger.consensus.validators import ValidatorSet
from kledger.node.chain.header import (
    ZERO_HASH,
    CommitCertificate,
    Header,
    certificate_problem,
    sign_header,
)
from kledger.node.chain.keys import KeyPair
from kledger.node.errors import DecodeError
from tests.helpers import key, make_genesis

GOLDEN_HEADER = Header(
    "kledger-test", 0, 1, 3, ZERO_HASH, 1, hashlib.sha256(b"x").digest(), bytes(32), bytes(32),
    ZERO_HASH, hashlib.sha256(b"").digest(), "KOMCA", 1_767_225_600_000,
)  # fmt: skip


def test_header_hash_is_pinned() -> None:
    assert GOLDEN_HEADER.hash().hex() == (
        "e2451052d3d2d2f521a9b19f82bc4b599adce0008e93cecc50a9cc642ad434f1"
    )
    assert Header.decode(GOLDEN_HEADER.encode()) == GOLDEN_HEADER
    assert Header.from_json(GOLDEN_HEADER.to_json()) == GOLDEN_HEADER


def test_header_decode_rejects_bad_fields() -> None:
    bad = GOLDEN_HEADER.to_json() | {"tx_log_root": "00"}
    with pytest.raises(DecodeError) as info:
        Header.from_json(bad)
    assert info.value.field == "header.tx_log_root"
    with pytest.raises(DecodeError):
        Header.from_json(GOLDEN_HEADER.to_json() | {"height": -1})


def _certified(signers: list[str]) -> tuple[Header, CommitCertificate, ValidatorSet]:
    validators = make_genesis().validator_set
    header = Header(**{**GOLDEN_HEADER.to_json(), "validator_set_hash": validators.digest()} | {
        "parent_hash": ZERO_HASH, "tx_log_root": GOLDEN_HEADER.tx_log_root,
        "state_root": bytes(32), "next_validator_set_hash": ZERO_HASH,
        "receipts_root": GOLDEN_HEADER.receipts_root,
    })  # fmt: skip
    sigs = tuple((s, sign_header(key(f"{s}/validator"), header.hash())) for s in sorted(signers))
    return header, CommitCertificate(header.hash(), sigs), validators


def test_quorum_of_six_is_four() -> None:
    header, cert, validators = _certified(["KOMCA", "KOSCAP", "RIAK", "KEPA"])
    assert validators.quorum == 4
    assert certificate_problem(cert, header, validators) is None
    assert CommitCertificate.from_json(cert.to_json()) == cert
    assert CommitCertificate.decode(cert.encode()) == cert


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: CommitCertificate(c.header_hash, c.signatures[:3]), "quorum"),
        (lambda c: CommitCertificate(c.header_hash, (*c.signatures[:3], c.signatures[0])), "twice"),
        (lambda c: CommitCertificate(bytes(32), c.signatures), "another header"),
        (
            lambda c: CommitCertificate(
                c.header_hash, (*c.signatures[:3], ("MALLORY", c.signatures[3][1]))
            ),
            "not a validator",
        ),
        (
            lambda c: CommitCertificate(
                c.header_hash, (*c.signatures[:3], (c.signatures[3][0], bytes(64)))
            ),
            "does not verify",
        ),
    ],
)
def test_bad_certificates_are_refused(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    header, cert, validators = _certified(["KOMCA", "KOSCAP", "RIAK", "KEPA"])
    problem = certificate_problem(mutate(cert), header, validators)
    assert problem is not None and reason in problem


def test_signature_by_a_non_validator_key_does_not_count() -> None:
    header, cert, validators = _certified(["KOMCA", "KOSCAP", "RIAK"])
    outsider = KeyPair.from_seed(bytes(32))
    forged = CommitCertificate(
        cert.header_hash, (*cert.signatures, ("KEPA", sign_header(outsider, header.hash())))
    )
    assert "does not verify" in (certificate_problem(forged, header, validators) or "")


def test_v1_header_is_refused_by_name() -> None:
    """A header without the v2 fields (an old bundle's) is named as v1, not just "bad fields"."""
    old = GOLDEN_HEADER.to_json()
    del old["next_validator_set_hash"], old["receipts_root"]
    with pytest.raises(DecodeError) as info:
        Header.from_json(old)
    assert "v1 header" in info.value.message and info.value.field == "header"


def test_header_names_the_end_of_its_epoch() -> None:
    assert not GOLDEN_HEADER.ends_epoch
    ending = dataclasses.replace(GOLDEN_HEADER, next_validator_set_hash=b"\x01" * 32)
    assert ending.ends_epoch and ending.hash() != GOLDEN_HEADER.hash()
