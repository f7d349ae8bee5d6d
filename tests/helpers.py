"""Small builders shared by tests: deterministic keys, validator sets, genesis documents."""

from __future__ import annotations

import hashlib

from kledger.node.chain.genesis import BlockLimits, Genesis, OrgSpec
from kledger.node.chain.keys import KeyPair
from kledger.node.chain.tx import TxLimits

FOUNDING_ORGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("KOMCA", ("AUTHOR_CMO", "REPORTER")),
    ("KOSCAP", ("AUTHOR_CMO", "REPORTER")),
    ("RIAK", ("PRODUCER_CMO", "ID_AGENCY", "REPORTER")),
    ("KEPA", ("PRODUCER_ASSOC",)),
    ("FKMP", ("PERFORMER_CMO", "REPORTER")),
    ("KMCA", ("ID_AGENCY", "REPORTER")),
)


def key(label: str) -> KeyPair:
    """A deterministic key per label, so tests and golden vectors are reproducible."""
    return KeyPair.from_seed(hashlib.sha256(b"kledger-test-key/" + label.encode()).digest())


def make_genesis(
    orgs: tuple[tuple[str, tuple[str, ...]], ...] = FOUNDING_ORGS, chain_id: str = "kledger-test"
) -> Genesis:
    return Genesis(
        chain_id=chain_id,
        genesis_time_ms=1_767_225_600_000,
        orgs=tuple(
            sorted(
                (
                    OrgSpec(
                        org_id=org_id,
                        name=org_id,
                        roles=tuple(sorted(roles)),
                        validator_key=key(f"{org_id}/validator").public_key,
                        admin_key=key(f"{org_id}/admin").public_key,
                        member_keys=(key(f"{org_id}/client").public_key,),
                    )
                    for org_id, roles in orgs
                ),
                key=lambda o: o.org_id,
            )
        ),
        tx_limits=TxLimits(),
        block_limits=BlockLimits(),
    )
