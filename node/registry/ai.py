"""AI-era rights (docs/domain.md §6): AI-training policies, persona consent and claims.

Rules kept here: a policy is set by the rightsholder's CMO (the org that registered the subject or
holds an active share claim on it); policies are versioned, the newest one covering the territory
and date applies; with no policy the answer is deny (no training without consent). For a
recording the answer also takes the works it embodies (confirmed links): deny wins over
conditional, conditional over allow. Persona consent is set by the performer's PERFORMER_CMO;
persona claims come from a PERFORMER_CMO or PRODUCER_ASSOC, with evidence hashes.
"""

from __future__ import annotations

from typing import Any

from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import fields, links, state
from kledger.node.registry.env import (
    Env,
    check_subject,
    claim_orgs,
    denied,
    exists,
    is_member_of,
    require_party,
    require_party_registered,
    subject_record,
)
from kledger.node.registry.shares import RIGHTS
from kledger.node.registry.state import StateReader, TxState

CONSENT = frozenset({"allow", "deny", "conditional"})
SCOPES = ("ai_training", "ai_generative_training", "ai_inference", "data_mining")
SCOPE_VALUES = frozenset({"allowed", "notAllowed", "constrained"})
DEFAULT_SCOPE = {"allow": "allowed", "deny": "notAllowed", "conditional": "constrained"}
MAX_POLICY_VERSIONS = 64
MAX_PERSONA_CLAIMS_PER_SUBJECT = 256
PERSONA_SUBJECT_KINDS = frozenset({"recording", "cid", "uci"})


def check_ai_policy(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p,
        "payload",
        frozenset(
            {
                "subject",
                "consent",
                "scopes",
                "tdm_reservation",
                "policy_uri",
                "territories",
                "valid_from",
                "valid_to",
                "legal_basis",
                "conditions",
            }
        ),
    )
    consent = fields.choice(p, "consent", "", CONSENT)
    raw_scopes = fields.obj(p.get("scopes", {}), "scopes", frozenset(SCOPES))
    scopes = {
        name: fields.choice(raw_scopes, name, "scopes.", SCOPE_VALUES, DEFAULT_SCOPE[consent])
        for name in SCOPES
    }
    valid_from = fields.date(p, "valid_from", "", "0001-01-01")
    valid_to = fields.date(p, "valid_to", "", fields.MAX_DATE)
    if valid_to < valid_from:
        raise invalid("ends before valid_from", "payload.valid_to")
    return {
        "subject": check_subject(p),
        "consent": consent,
        "scopes": scopes,
        "tdm_reservation": fields.boolean(p, "tdm_reservation", "", default=consent != "allow"),
        "policy_uri": fields.text(p, "policy_uri", "", required=False),
        "territories": fields.territories(p, "territories", "", ["Worldwide"]),
        "valid_from": valid_from,
        "valid_to": valid_to,
        "legal_basis": fields.text(p, "legal_basis", "", required=False),
        "conditions": fields.text(p, "conditions", "", required=False),
    }


def apply_ai_policy(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    subject = p["subject"]
    record = subject_record(st, subject)
    holders = {record["registered_by"]} | claim_orgs(st, subject, RIGHTS)
    if env.signer.org not in holders:
        raise denied(
            f"{env.signer.org} is not a rightsholder's CMO of {subject['id']} "
            f"({', '.join(sorted(holders))})"
        )
    key = state.ai_policy_key(subject["kind"], subject["id"])
    policies = st.get(key) or []
    if len(policies) >= MAX_POLICY_VERSIONS:
        raise fields_exhausted()
    version = len(policies) + 1
    policies.append(
        {
            **{k: v for k, v in p.items() if k != "subject"},
            "version": version,
            "set_by": env.signer.org,
            "height": env.ctx.height,
        }
    )
    st.put(key, policies)
    return {"version": version}


def fields_exhausted() -> Exception:
    from kledger.node.errors import Refused, Status

    return Refused(
        Status.RESOURCE_EXHAUSTED,
        f"{MAX_POLICY_VERSIONS} policy versions (MAX_POLICY_VERSIONS)",
        "payload.subject",
    )


def _policy_in_effect(
    reader: StateReader, kind: str, subject_id: str, territory: str, date: str
) -> dict[str, Any] | None:
    best = None
    for policy in reader.get(state.ai_policy_key(kind, subject_id)) or []:
        covers = "Worldwide" in policy["territories"] or territory in policy["territories"]
        if covers and policy["valid_from"] <= date <= policy["valid_to"]:
            best = policy  # versions are in order; the newest covering one wins
    return best


_RANK = {"allow": 0, "conditional": 1, "deny": 2}
_SCOPE_ANSWER = {"allowed": "allow", "constrained": "conditional", "notAllowed": "deny"}


def training_answer(
    reader: StateReader,
    kind: str,
    subject_id: str,
    *,
    territory: str,
    date: str,
    now_ms: int,
    scope: str = "ai_training",
) -> dict[str, Any]:
    """May (kind, subject_id) be used for `scope` in `territory` on `date`? allow / conditional /
    deny, with the policies that decided it."""
    subjects = [(kind, subject_id)]
    if kind == "recording":
        subjects += [
            ("work", w) for w in links.confirmed_peers(reader, "isrc", subject_id, "work", now_ms)
        ]
    answer = "allow"
    decisions = []
    for subject_kind, sid in subjects:
        policy = _policy_in_effect(reader, subject_kind, sid, territory, date)
        if policy is None:
            verdict, reason = (
                "deny",
                "no AI-training policy: deny by default (no training without consent)",
            )
        else:
            verdict = _SCOPE_ANSWER[policy["scopes"][scope]]
            if policy["consent"] == "deny":
                verdict = "deny"
            reason = (
                f"policy v{policy['version']} set by {policy['set_by']}: "
                f"consent {policy['consent']}, {scope} {policy['scopes'][scope]}"
            )
        decisions.append(
            {
                "subject": {"kind": subject_kind, "id": sid},
                "answer": verdict,
                "reason": reason,
                "policy": policy,
            }
        )
        if _RANK[verdict] > _RANK[answer]:
            answer = verdict
    return {
        "answer": answer,
        "scope": scope,
        "territory": territory,
        "date": date,
        "decisions": decisions,
    }


# -- persona ---------------------------------------------------------------------------------


def check_persona_consent(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"party_id", "voice_cloning", "likeness", "note"}))
    return {
        "party_id": fields.token(p, "party_id"),
        "voice_cloning": fields.choice(p, "voice_cloning", "", CONSENT),
        "likeness": fields.choice(p, "likeness", "", CONSENT),
        "note": fields.text(p, "note", "", required=False),
    }


def apply_persona_consent(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    party = require_party(st, p["party_id"], "payload.party_id")
    if not is_member_of(party, env.signer.org):
        raise denied(f"party {p['party_id']} is not a member of {env.signer.org}")
    st.put(
        state.persona_consent_key(p["party_id"]),
        {**p, "set_by": env.signer.org, "height": env.ctx.height},
    )
    return {"party_id": p["party_id"]}


def check_persona_claim(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p,
        "payload",
        frozenset({"claim_id", "performer_party_id", "subject", "description", "evidence_hashes"}),
    )
    raw = fields.obj(p.get("subject"), "subject", frozenset({"kind", "id"}))
    kind = fields.choice(raw, "kind", "subject.", PERSONA_SUBJECT_KINDS)
    subject_id = fields.code(raw, "id", "isrc" if kind == "recording" else kind, "subject.")
    evidence = [
        fields.hex32(e, f"evidence_hashes[{i}]")
        for i, e in enumerate(fields.items(p, "evidence_hashes", ""))
    ]
    return {
        "claim_id": fields.token(p, "claim_id"),
        "performer_party_id": fields.token(p, "performer_party_id"),
        "subject": {"kind": kind, "id": subject_id},
        "description": fields.text(p, "description", ""),
        "evidence_hashes": evidence,
    }


def apply_persona_claim(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    if st.has(state.persona_claim_key(p["claim_id"])):
        raise exists(f"persona claim {p['claim_id']} exists", "payload.claim_id")
    require_party_registered(st, p["performer_party_id"], "payload.performer_party_id")
    subject = p["subject"]
    if subject["kind"] == "recording":
        subject_record(st, subject)
    index = state.persona_of_key(subject["kind"], subject["id"])
    ids = st.get(index) or []
    if len(ids) >= MAX_PERSONA_CLAIMS_PER_SUBJECT:
        raise Refused(
            Status.RESOURCE_EXHAUSTED,
            f"more than MAX_PERSONA_CLAIMS_PER_SUBJECT={MAX_PERSONA_CLAIMS_PER_SUBJECT} claims",
            "payload.subject",
        )
    st.put(index, sorted([*ids, p["claim_id"]]))
    st.put(
        state.persona_claim_key(p["claim_id"]),
        {
            **p,
            "status": "open",
            "filed_by": env.signer.org,
            "height": env.ctx.height,
            "filed_ms": env.ctx.timestamp_ms,
        },
    )
    return {"claim_id": p["claim_id"]}
