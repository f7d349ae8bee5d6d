"""Governance decides validator-set changes into the pending next set (docs/design.md §4.8,
docs/domain.md §7.4): `s/validators/next` with the orgs still to announce their new key,
ValidatorReady signed by that key, the guards (one pending change, n >= 4, distinct keys, proof
of possession), and the marker block's execution moving the set on and into the history."""

from __future__ import annotations

from typing import Any

import pytest

from kledger.consensus.validators import ValidatorSet
from kledger.node.errors import StoreCorrupt
from kledger.node.registry import BlockContext, state
from kledger.node.registry.governance import sign_pop
from kledger.node.registry.state import StateReader
from tests.helpers import key
from tests.test_registry import Chain

APPROVERS = ("RIAK/client", "FKMP/client", "KMCA/admin")


def _add_mcst(chain: Chain, **override: Any) -> dict[str, Any]:
    new = key("MCST/validator")
    return {
        "kind": "add_org",
        "org_id": "MCST",
        "name": "Ministry",
        "roles": ["AUDITOR"],
        "admin_key": key("MCST/admin").public_key.hex(),
        "validator_key": new.public_key.hex(),
        "validator_pop": sign_pop(new, chain.genesis.chain_id, "MCST").hex(),
        "peer_address": "127.0.0.1:7005",
        "tls_cert_sha256": "ab" * 32,
    } | override


def _decide(chain: Chain, proposal_id: str, action: dict[str, Any]) -> None:
    chain.ok("KOMCA/client", "ProposeGovernance", {"proposal_id": proposal_id, "action": action})
    for approver in APPROVERS:
        out = chain.ok(approver, "ApproveGovernance", {"proposal_id": proposal_id})
    assert out["status"] == "executed"


def _next(chain: Chain) -> Any:
    return StateReader(chain.view).get(state.NEXT_VALIDATORS_KEY)


def _current(chain: Chain) -> Any:
    return StateReader(chain.view).get(state.VALIDATORS_KEY)


def test_add_org_decides_the_next_set_and_waits_for_the_new_key() -> None:
    chain = Chain()
    _decide(chain, "G1", _add_mcst(chain))
    pending = _next(chain)
    assert pending["epoch"] == 1 and pending["waiting_for"] == ["MCST"]
    assert pending["decided_height"] == chain.height
    assert ["MCST", key("MCST/validator").public_key.hex()] in pending["validators"]
    assert _current(chain)["epoch"] == 0 and len(_current(chain)["validators"]) == 6
    assert chain.registry.ready_next_set(chain.view) is None  # not ready: nothing to propose
    org = StateReader(chain.view).get(state.org_key("MCST"))
    assert org["peer_address"] == "127.0.0.1:7005" and org["tls_cert_sha256"] == "ab" * 32
    # Only the new key itself announces it.
    refused = chain.refused("MCST/admin", "ValidatorReady", {"org": "MCST"})
    assert refused.status == "PERMISSION_DENIED" and "signer" in refused.message
    refused = chain.refused("KOMCA/validator", "ValidatorReady", {"org": "MCST"})
    assert refused.status == "PERMISSION_DENIED"
    unchanged = chain.refused("KOMCA/validator", "ValidatorReady", {"org": "KOMCA"})
    assert unchanged.status == "ALREADY_EXISTS"  # its key is not new: nothing to announce
    chain.ok("MCST/validator", "ValidatorReady", {"org": "MCST"})
    assert _next(chain)["waiting_for"] == []
    again = chain.refused("MCST/validator", "ValidatorReady", {"org": "MCST"})
    assert again.status == "ALREADY_EXISTS" and "payload.org" in again.message
    ready = chain.registry.ready_next_set(chain.view)
    assert ready is not None and ready.epoch == 1 and ready.size == 7


def test_the_marker_block_enacts_the_set_and_keeps_every_epoch_in_the_history() -> None:
    chain = Chain()
    genesis_record = StateReader(chain.view).get(state.epoch_validators_key(0))
    assert genesis_record == _current(chain)
    _decide(chain, "G1", _add_mcst(chain))
    assert chain.last_outcome.validator_change is None  # the approval block changes no epoch
    chain.ok("MCST/validator", "ValidatorReady", {"org": "MCST"})
    marker = chain.epoch_change()
    assert chain.last_outcome.results == []
    assert _next(chain) is None
    assert _current(chain)["epoch"] == 1 and len(_current(chain)["validators"]) == 7
    assert chain.registry.validators_of_epoch(chain.view, 1) == marker
    assert chain.registry.validators_of_epoch(chain.view, 0) == chain.genesis.validator_set
    # The new set votes now: a tariff needs 5 of 7, and MCST's admin is one of the voters.
    assert chain.ok("MCST/admin", "ProposeGovernance", {
        "proposal_id": "T", "action": {"kind": "remove_org", "org_id": "KEPA"}
    })["quorum"] == 5  # fmt: skip


def test_a_marker_that_is_not_the_ready_next_set_stops_the_node() -> None:
    chain = Chain()
    ctx = BlockContext(chain.genesis.chain_id, 0, 1, 1)
    other = ValidatorSet.of(1, [(f"O{i}", key(f"O{i}").public_key) for i in range(4)])
    with pytest.raises(StoreCorrupt, match="does not match"):
        chain.registry.execute_epoch_change(chain.view, other, ctx)
    _decide(chain, "G1", _add_mcst(chain))  # decided but still waiting for MCST
    with pytest.raises(StoreCorrupt):
        chain.registry.execute_epoch_change(chain.view, other, ctx)


def test_one_pending_change_at_a_time_at_proposal_and_at_execution() -> None:
    chain = Chain()
    # Both proposed while nothing is pending; the second's last approval comes too late.
    chain.ok(
        "KOMCA/client",
        "ProposeGovernance",
        {"proposal_id": "R", "action": {"kind": "remove_org", "org_id": "KEPA"}},
    )
    _decide(chain, "G1", _add_mcst(chain))
    for approver in APPROVERS[:2]:
        chain.ok(approver, "ApproveGovernance", {"proposal_id": "R"})
    late = chain.refused("KMCA/admin", "ApproveGovernance", {"proposal_id": "R"})
    assert late.status == "FAILED_PRECONDITION"
    assert "pending for epoch 1" in late.message and "payload.action" in late.message
    early = chain.refused(
        "KOMCA/client",
        "ProposeGovernance",
        {"proposal_id": "R2", "action": {"kind": "remove_org", "org_id": "RIAK"}},
    )
    assert early.status == "FAILED_PRECONDITION" and "pending" in early.message


def test_the_next_set_keeps_at_least_four_validators() -> None:
    chain = Chain()
    for index, org in enumerate(("KEPA", "KMCA")):
        _decide(chain, f"R{index}", {"kind": "remove_org", "org_id": org})
        assert _next(chain)["waiting_for"] == []  # no new key: ready at once
        chain.epoch_change()
    assert len(_current(chain)["validators"]) == 4
    chain.ok(
        "KOMCA/client",
        "ProposeGovernance",
        {"proposal_id": "R9", "action": {"kind": "remove_org", "org_id": "FKMP"}},
    )
    chain.ok("RIAK/client", "ApproveGovernance", {"proposal_id": "R9"})  # quorum of 4 is 3
    small = chain.refused("FKMP/client", "ApproveGovernance", {"proposal_id": "R9"})
    assert small.status == "FAILED_PRECONDITION" and "at least 4" in small.message


def test_validator_keys_stay_distinct_and_prove_possession() -> None:
    chain = Chain()
    riak = key("RIAK/validator")
    taken = {
        "kind": "change_validator",
        "org_id": "KEPA",
        "validator_key": riak.public_key.hex(),
        "validator_pop": sign_pop(riak, chain.genesis.chain_id, "KEPA").hex(),
    }
    chain.ok("KOMCA/client", "ProposeGovernance", {"proposal_id": "D", "action": taken})
    for approver in APPROVERS[:2]:
        chain.ok(approver, "ApproveGovernance", {"proposal_id": "D"})
    clash = chain.refused("KMCA/admin", "ApproveGovernance", {"proposal_id": "D"})
    assert clash.status == "FAILED_PRECONDITION" and "distinct" in clash.message
    # A proof by another key, or for another org, or another chain, is refused by name.
    forged = [
        _add_mcst(chain, validator_pop=sign_pop(key("x"), chain.genesis.chain_id, "MCST").hex()),
        _add_mcst(chain, validator_pop=sign_pop(key("MCST/validator"), "other", "MCST").hex()),
        _add_mcst(
            chain,
            validator_pop=sign_pop(key("MCST/validator"), chain.genesis.chain_id, "KOMCA").hex(),
        ),
    ]
    for index, action in enumerate(forged):
        bad = chain.refused(
            "KOMCA/client", "ProposeGovernance", {"proposal_id": f"P{index}", "action": action}
        )
        assert bad.status == "INVALID_ARGUMENT" and "validator_pop" in bad.message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"validator_pop": None}, "validator_pop"),
        ({"validator_pop": "zz"}, "validator_pop"),
        ({"peer_address": None}, "peer_address"),
        ({"peer_address": "no-port"}, "peer_address"),
        ({"peer_address": "h:70000"}, "peer_address"),
        ({"tls_cert_sha256": "AB"}, "tls_cert_sha256"),
        ({"validator_key": None}, "validator_pop"),  # a pop without a key is refused
    ],
)
def test_add_org_fields_are_checked_by_name(override: dict[str, Any], field: str) -> None:
    chain = Chain()
    action = {k: v for k, v in _add_mcst(chain, **override).items() if v is not None}
    bad = chain.refused("KOMCA/client", "ProposeGovernance", {"proposal_id": "P", "action": action})
    assert bad.status == "INVALID_ARGUMENT" and f"payload.action.{field}" in bad.message


def test_a_key_rotation_waits_for_the_new_key_and_removal_does_not() -> None:
    chain = Chain()
    new = key("KEPA/validator2")
    _decide(
        chain,
        "C",
        {
            "kind": "change_validator",
            "org_id": "KEPA",
            "validator_key": new.public_key.hex(),
            "validator_pop": sign_pop(new, chain.genesis.chain_id, "KEPA").hex(),
        },
    )
    assert _next(chain)["waiting_for"] == ["KEPA"]
    old_key = chain.refused("KEPA/validator", "ValidatorReady", {"org": "KEPA"})
    assert old_key.status == "PERMISSION_DENIED"
    chain.ok("KEPA/validator2", "ValidatorReady", {"org": "KEPA"})
    rotated = chain.epoch_change()
    assert rotated.public_key("KEPA") == new.public_key and rotated.size == 6
