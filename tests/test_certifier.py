"""Header signatures become commit certificates only with a quorum over this node's own hash."""

from __future__ import annotations

from kledger.node.chain.header import CommitCertificate, sign_header
from kledger.node.commit.certifier import Certifier, HeaderSignature
from tests.helpers import key, make_genesis

VALIDATORS = make_genesis().validator_set  # six orgs, quorum 4
ORGS = list(VALIDATORS.ids)


def signature(org: str, height: int, header_hash: bytes) -> HeaderSignature:
    return HeaderSignature(
        height, header_hash, org, sign_header(key(f"{org}/validator"), header_hash)
    )


def make() -> tuple[Certifier, dict[int, CommitCertificate]]:
    saved: dict[int, CommitCertificate] = {}
    return Certifier(VALIDATORS, saved.__setitem__), saved


def test_quorum_of_matching_signatures_certifies() -> None:
    certifier, saved = make()
    good = b"\x01" * 32
    assert certifier.executed(1, good) is None
    for org in ORGS[:3]:
        assert certifier.add(signature(org, 1, good)) is None
    cert = certifier.add(signature(ORGS[3], 1, good))
    assert cert is not None and saved[1] == cert
    assert [s for s, _ in cert.signatures] == sorted(ORGS[:4])
    assert certifier.add(signature(ORGS[4], 1, good)) is None  # already certified
    assert certifier.dropped == {"already_certified": 1}


def test_signatures_before_execution_wait_and_conflicts_never_count() -> None:
    certifier, saved = make()
    good, evil = b"\x01" * 32, b"\x02" * 32
    for org in ORGS[:3]:
        certifier.add(signature(org, 1, good))
    certifier.add(signature(ORGS[3], 1, evil))  # a faulty validator signs another header
    assert certifier.executed(1, good) is None  # only 3 match our own hash
    assert certifier.dropped["conflicting_header"] == 1
    assert certifier.add(signature(ORGS[4], 1, good)) is not None
    assert saved[1].header_hash == good


def test_forged_duplicate_and_outsider_signatures_are_dropped() -> None:
    certifier, _ = make()
    good = b"\x01" * 32
    certifier.executed(1, good)
    forged = HeaderSignature(1, good, ORGS[0], sign_header(key("mallory"), good))
    assert certifier.add(forged) is None
    assert certifier.add(HeaderSignature(1, good, "MALLORY", bytes(64))) is None
    certifier.add(signature(ORGS[1], 1, good))
    assert certifier.add(signature(ORGS[1], 1, good)) is None
    assert certifier.dropped == {"bad_signature": 1, "not_a_validator": 1, "duplicate": 1}


def test_window_is_bounded() -> None:
    saved: dict[int, CommitCertificate] = {}
    certifier = Certifier(VALIDATORS, saved.__setitem__, max_heights_ahead=4)
    assert certifier.add(signature(ORGS[0], 50, b"\x01" * 32)) is None
    assert certifier.dropped == {"too_far_ahead": 1}
    for height in range(1, 20):  # heights nobody else signs are given up, not kept forever
        certifier.executed(height, bytes([height]) * 32)
    assert certifier.dropped["uncertified_height_given_up"] == 15
