"""The transaction types of docs/domain.md §7: for each, its stateless payload check, who may
submit it, and its state effect. One table, so admission and execution can never disagree."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kledger.node.registry import ai, catalog, governance, links, rights, usage
from kledger.node.registry.env import Env
from kledger.node.registry.permissions import (
    AUTHOR_CMO,
    CMO_ROLES,
    ID_AGENCY,
    PERFORMER_CMO,
    PRODUCER_ASSOC,
    PRODUCER_CMO,
    REPORTER,
)
from kledger.node.registry.state import TxState

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TxType:
    name: str
    check: Callable[[Payload], Payload]
    apply: Callable[[TxState, Env, Payload], Payload]
    # Roles that may submit (any one of them), from the normalized payload; empty = any member.
    roles: Callable[[Payload], frozenset[str]]
    # "member": member keys only; "admin": admin keys only; "any": both (governance votes);
    # "validator": the new validator key the pending set names for the payload's org.
    signer: str = "member"


def _fixed(*roles: str) -> Callable[[Payload], frozenset[str]]:
    chosen = frozenset(roles)
    return lambda _payload: chosen


ANY = _fixed()

TX_TYPES: dict[str, TxType] = {
    t.name: t
    for t in (
        TxType(
            "RegisterMember",
            governance.check_member,
            governance.apply_register_member,
            ANY,
            "admin",
        ),
        TxType(
            "RevokeMember", governance.check_member, governance.apply_revoke_member, ANY, "admin"
        ),
        TxType(
            "RegisterParty",
            catalog.check_register_party,
            catalog.apply_register_party,
            _fixed(*CMO_ROLES),
        ),
        TxType(
            "RegisterWork",
            catalog.check_register_work,
            catalog.apply_register_work,
            _fixed(AUTHOR_CMO),
        ),
        TxType(
            "ReviseWork",
            catalog.check_revise_work,
            catalog.apply_revise_work,
            _fixed(AUTHOR_CMO),
        ),
        TxType(
            "RegisterRecording",
            catalog.check_register_recording,
            catalog.apply_register_recording,
            _fixed(PRODUCER_CMO, PRODUCER_ASSOC, ID_AGENCY),
        ),
        TxType(
            "DeclareProvenance",
            catalog.check_declare_provenance,
            catalog.apply_declare_provenance,
            ANY,
        ),
        TxType("LinkIdentifiers", links.check_link, links.apply_link, ANY),
        TxType("RetractLink", links.check_retract, links.apply_retract, ANY),
        TxType(
            "SetShares", rights.check_set_shares, rights.apply_set_shares, rights.roles_for_shares
        ),
        TxType("FileDispute", rights.check_file_dispute, rights.apply_file_dispute, ANY),
        TxType("ResolveDispute", rights.check_resolve, rights.apply_resolve, ANY),
        TxType("ReportUsage", usage.check_report_usage, usage.apply_report_usage, _fixed(REPORTER)),
        TxType(
            "RunDistribution",
            usage.check_run_distribution,
            usage.apply_run_distribution,
            _fixed(*CMO_ROLES),
        ),
        TxType(
            "SetAiTrainingPolicy",
            ai.check_ai_policy,
            ai.apply_ai_policy,
            _fixed(*CMO_ROLES, PRODUCER_ASSOC),
        ),
        TxType(
            "SetPersonaConsent",
            ai.check_persona_consent,
            ai.apply_persona_consent,
            _fixed(PERFORMER_CMO),
        ),
        TxType(
            "RegisterPersonaClaim",
            ai.check_persona_claim,
            ai.apply_persona_claim,
            _fixed(PERFORMER_CMO, PRODUCER_ASSOC),
        ),
        TxType(
            "ProposeGovernance", governance.check_proposal, governance.apply_proposal, ANY, "any"
        ),
        TxType(
            "ApproveGovernance", governance.check_approval, governance.apply_approval, ANY, "any"
        ),
        TxType("ValidatorReady", governance.check_ready, governance.apply_ready, ANY, "validator"),
    )
}
