"""SetShares (versioned ShareSets with the CWR rules and overclaims) and disputes.

Rules kept here: a work's shares come from an AUTHOR_CMO, a recording's from a PRODUCER_CMO or
PERFORMER_CMO, in each case for a subject where at least one party of the set is a member of the
submitting org ("of an affected member"); an ai_generated work holds no authorship shares; an
overclaim is recorded, flagged and opens a Dispute whose claimants are the orgs involved.
A dispute is open until all claimant orgs resolve it with the same outcome, or its deadline
passes (lazily: "expired" is a function of block time, never a background job):
    shares  uphold -> the flagged claim stands, the conflicting claims are superseded
            reject -> the flagged claim is withdrawn
    link    uphold -> the link is retracted;  reject -> it returns to its previous status
Disputes over authorship hold the authors' money of the work while open; AI-status and persona
disputes are recorded and shown, they hold no money.
"""

from __future__ import annotations

from typing import Any

from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import fields, shares, state
from kledger.node.registry.env import (
    DISPUTE_DEADLINE_MS,
    Env,
    check_subject,
    claim_orgs,
    denied,
    exists,
    is_member_of,
    precondition,
    require_party,
    subject_record,
)
from kledger.node.registry.permissions import AUTHOR_CMO, PERFORMER_CMO, PRODUCER_CMO
from kledger.node.registry.state import StateReader, TxState

DISPUTE_KINDS = frozenset({"shares", "authorship", "link", "ai_status", "persona"})
OUTCOMES = frozenset({"uphold", "reject"})
MAX_EVIDENCE = 32
MAX_DISPUTES_PER_SUBJECT = 256


def roles_for_shares(p: dict[str, Any]) -> frozenset[str]:
    if p["subject"]["kind"] == "work":
        return frozenset({AUTHOR_CMO})
    return frozenset({PRODUCER_CMO, PERFORMER_CMO})


def check_set_shares(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p,
        "payload",
        frozenset(
            {
                "subject",
                "right",
                "territories",
                "excluded_territories",
                "valid_from",
                "valid_to",
                "shares",
            }
        ),
    )
    subject = check_subject(p)
    right = fields.choice(p, "right", "", shares.RIGHTS)
    allowed = shares.WORK_RIGHTS if subject["kind"] == "work" else shares.RECORDING_RIGHTS
    if right not in allowed:
        raise invalid(
            f"a {subject['kind']} has rights {', '.join(sorted(allowed))}", "payload.right"
        )
    valid_from = fields.date(p, "valid_from", "", "0001-01-01")
    valid_to = fields.date(p, "valid_to", "", fields.MAX_DATE)
    if valid_to < valid_from:
        raise invalid("ends before valid_from", "payload.valid_to")
    raw = fields.items(p, "shares", "")
    # The modified-version rule needs state; check it again in apply with the work's version.
    entries = shares.check_entries(subject["kind"], right, raw, modified=False)
    territories = fields.territories(p, "territories", "", ["Worldwide"])
    excluded: list[str] = []
    if "excluded_territories" in p:
        excluded = fields.territories(p, "excluded_territories", "", [])
        if "Worldwide" in excluded:
            raise invalid("the world cannot be excluded", "payload.excluded_territories")
        if "Worldwide" not in territories and set(excluded) - set(territories):
            raise invalid(
                "excludes territories it does not include", "payload.excluded_territories"
            )
    return {
        "subject": subject,
        "right": right,
        "territories": territories,
        "excluded_territories": excluded,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "entries": entries,
    }


def _open_dispute(
    st: TxState,
    env: Env,
    dispute_id: str,
    *,
    kind: str,
    subject: dict[str, str],
    claimants: set[str],
    extra: dict[str, Any],
) -> None:
    record = {
        "dispute_id": dispute_id,
        "kind": kind,
        "subject": subject,
        "claimants": sorted(claimants),
        "filed_by": env.signer.org,
        "status": "open",
        "opened_ms": env.ctx.timestamp_ms,
        "deadline_ms": env.ctx.timestamp_ms + DISPUTE_DEADLINE_MS,
        "votes": {},
        "outcome": "",
        "height": env.ctx.height,
        **extra,
    }
    st.put(state.dispute_key(dispute_id), record)
    index_key = state.disputes_of_key(subject["kind"], subject["id"])
    ids = st.get(index_key) or []
    if len(ids) >= MAX_DISPUTES_PER_SUBJECT:
        raise Refused(
            Status.RESOURCE_EXHAUSTED, f"subject has {len(ids)} disputes", "payload.subject"
        )
    st.put(index_key, sorted([*ids, dispute_id]))


def apply_set_shares(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    subject = p["subject"]
    record = subject_record(st, subject)
    if subject["kind"] == "work":
        if record["provenance"]["creation_type"] == "ai_generated":
            raise precondition("an ai_generated work holds no authorship shares", "payload.subject")
        if record["version"] == "modified" and not any(
            e["role"] in shares.ADAPTING_WRITER_ROLES for e in p["entries"] if e["kind"] == "writer"
        ):
            raise invalid(
                "a modified version needs an AR, AD, SR, SA or TR writer", "payload.shares"
            )
    affected = False
    for i, entry in enumerate(p["entries"]):
        if entry.get("unknown"):
            continue
        party = require_party(st, entry["party_id"], f"payload.shares[{i}].party_id")
        affected = affected or is_member_of(party, env.signer.org)
    if not affected:
        raise denied(f"no party of this share set is a member of {env.signer.org}")
    key = state.shares_key(subject["kind"], subject["id"], p["right"])
    current = st.get(key) or {
        "subject": subject,
        "right": p["right"],
        "claims": [],
        "next_version": 1,
    }
    shares.require_versions_left(current)
    # A new claim supersedes the org's claims it overlaps (territory and dates): an org may
    # hold different shares in different territories (a sub-publisher's in Japan, its own
    # elsewhere) as claims side by side.
    for claim in current["claims"]:
        if (
            claim["org"] == env.signer.org
            and claim["status"] == "active"
            and shares.overlaps(claim, {**p, "org": env.signer.org})
        ):
            same = [claim[k] for k in ("territories", "valid_from", "valid_to", "entries")]
            same.append(claim.get("excluded_territories", []))
            if same == [
                p["territories"], p["valid_from"], p["valid_to"], p["entries"],
                p["excluded_territories"],
            ]:  # fmt: skip
                raise exists(
                    f"identical to version {claim['version']} of {env.signer.org}", "payload.shares"
                )
            claim["status"] = "superseded"
    version = current["next_version"]
    claim = {
        "org": env.signer.org,
        "version": version,
        "territories": p["territories"],
        **(
            {"excluded_territories": p["excluded_territories"]} if p["excluded_territories"] else {}
        ),
        "valid_from": p["valid_from"],
        "valid_to": p["valid_to"],
        "entries": p["entries"],
        "status": "active",
        "flagged": False,
        "dispute_id": "",
        "height": env.ctx.height,
    }
    conflicts = shares.conflicting_claims(current, claim)
    output: dict[str, Any] = {"version": version, "overclaim": bool(conflicts)}
    if conflicts:
        dispute_id = f"OC-{env.tx_hash.hex()[:16]}"
        claim["flagged"] = True
        claim["dispute_id"] = dispute_id
        claimants = {c["org"] for c in conflicts} | {env.signer.org}
        claimed = shares.overclaim_total([*conflicts, claim])
        _open_dispute(
            st, env, dispute_id, kind="shares", subject=subject, claimants=claimants,
            extra={
                "right": p["right"], "claim_version": version,
                "conflicting_versions": sorted(c["version"] for c in conflicts),
                "reason": f"overclaim: {shares.percent(claimed)} %",
                "evidence": [],
            },
        )  # fmt: skip
        output["dispute_id"] = dispute_id
    current["claims"].append(claim)
    current["next_version"] = version + 1
    st.put(key, current)
    return output


# -- FileDispute / ResolveDispute ------------------------------------------------------------


def check_file_dispute(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p, "payload", frozenset({"dispute_id", "kind", "subject", "right", "reason", "evidence"})
    )
    kind = fields.choice(p, "kind", "", DISPUTE_KINDS)
    raw_subject = fields.obj(p.get("subject"), "subject", frozenset({"kind", "id"}))
    subject_kind = fields.choice(
        raw_subject, "kind", "subject.", frozenset({"work", "recording", "link", "persona_claim"})
    )
    if subject_kind in ("work", "recording"):
        subject = check_subject(p)
    else:
        value = raw_subject.get("id")
        if not isinstance(value, str) or not 0 < len(value) <= 300 or "/" in value:
            raise invalid("must be an id", "payload.subject.id")
        subject = {"kind": subject_kind, "id": value}
    if (kind == "link") != (subject_kind == "link") or (kind == "persona") != (
        subject_kind == "persona_claim"
    ):
        raise invalid(f"a {kind} dispute cannot be about a {subject_kind}", "payload.subject.kind")
    evidence = [
        fields.hex32(e, f"evidence[{i}]")
        for i, e in enumerate(fields.items(p, "evidence", "", required=False))
    ]
    if len(evidence) > MAX_EVIDENCE:
        raise invalid(f"at most {MAX_EVIDENCE} evidence hashes", "payload.evidence")
    right = p.get("right")
    return {
        "dispute_id": fields.token(p, "dispute_id"),
        "kind": kind,
        "subject": subject,
        "right": fields.choice(p, "right", "", shares.RIGHTS) if right is not None else "",
        "reason": fields.text(p, "reason", ""),
        "evidence": evidence,
    }


def _interested_orgs(st: StateReader, subject: dict[str, str]) -> set[str]:
    if subject["kind"] == "link":
        link = st.get(state.link_key(subject["id"]))
        if link is None:
            raise Refused(Status.NOT_FOUND, f"no link {subject['id']}", "payload.subject.id")
        return {o for o in (link["asserted_by"], link["confirmed_by"]) if o}
    if subject["kind"] == "persona_claim":
        claim = st.get(state.persona_claim_key(subject["id"]))
        if claim is None:
            raise Refused(
                Status.NOT_FOUND, f"no persona claim {subject['id']}", "payload.subject.id"
            )
        return {claim["filed_by"]}
    record = subject_record(st, subject)
    return {record["registered_by"]} | claim_orgs(st, subject, shares.RIGHTS)


def apply_file_dispute(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    if st.has(state.dispute_key(p["dispute_id"])):
        raise exists(f"dispute {p['dispute_id']} exists", "payload.dispute_id")
    subject = p["subject"]
    interested = _interested_orgs(st, subject)
    org = env.signer.org
    affected = org in interested or (p["kind"] == "persona" and PERFORMER_CMO in env.signer.roles)
    if not affected and subject["kind"] in ("work", "recording"):
        record = subject_record(st, subject)
        parties = [c["party_id"] for c in record.get("creators", [])] + [
            x["party_id"] for x in record.get("performers", [])
        ]
        parties += list(record.get("producers", []))
        affected = any(
            is_member_of(require_party(st, party, "payload.subject"), org) for party in parties
        )
    if not affected:
        raise denied(f"{org} is not affected by {subject['kind']} {subject['id']}")
    if subject["kind"] == "link":
        link = st.get(state.link_key(subject["id"]))
        if link["status"] in ("disputed", "retracted"):
            raise precondition(f"link is {link['status']}", "payload.subject.id")
        link["previous_status"] = link["status"]
        link["status"] = "disputed"
        link["dispute_id"] = p["dispute_id"]
        st.put(state.link_key(subject["id"]), link)
    _open_dispute(
        st, env, p["dispute_id"], kind=p["kind"], subject=subject, claimants=interested | {org},
        extra={"right": p["right"], "reason": p["reason"], "evidence": p["evidence"]},
    )  # fmt: skip
    return {"dispute_id": p["dispute_id"]}


def check_resolve(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"dispute_id", "outcome", "note"}))
    return {
        "dispute_id": fields.token(p, "dispute_id"),
        "outcome": fields.choice(p, "outcome", "", OUTCOMES),
        "note": fields.text(p, "note", "", required=False),
    }


def apply_resolve(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    key = state.dispute_key(p["dispute_id"])
    dispute = st.get(key)
    if dispute is None:
        raise Refused(Status.NOT_FOUND, f"no dispute {p['dispute_id']}", "payload.dispute_id")
    org = env.signer.org
    if org not in dispute["claimants"]:
        raise denied(f"{org} is not a claimant of dispute {p['dispute_id']}")
    if not shares.dispute_open(dispute, env.ctx.timestamp_ms):
        status = dispute["status"] if dispute["status"] != "open" else "expired"
        raise precondition(f"dispute is {status}", "payload.dispute_id")
    dispute["votes"][org] = p["outcome"]
    outcomes = {dispute["votes"].get(c) for c in dispute["claimants"]}
    if len(outcomes) == 1 and None not in outcomes:
        dispute["status"] = "resolved"
        dispute["outcome"] = p["outcome"]
        dispute["resolved_ms"] = env.ctx.timestamp_ms
        _apply_outcome(st, dispute)
    st.put(key, dispute)
    return {"dispute_id": p["dispute_id"], "status": dispute["status"], "votes": dispute["votes"]}


def _apply_outcome(st: TxState, dispute: dict[str, Any]) -> None:
    subject = dispute["subject"]
    if dispute["kind"] == "shares" and "claim_version" in dispute:
        key = state.shares_key(subject["kind"], subject["id"], dispute["right"])
        record = st.get(key)
        for claim in record["claims"]:
            if claim["version"] == dispute["claim_version"]:
                claim["flagged"] = False
                if dispute["outcome"] == "reject":
                    claim["status"] = "withdrawn"
            elif (
                dispute["outcome"] == "uphold"
                and claim["version"] in dispute["conflicting_versions"]
            ):
                claim["status"] = "superseded"
        st.put(key, record)
    elif subject["kind"] == "link":
        link = st.get(state.link_key(subject["id"]))
        link["status"] = "retracted" if dispute["outcome"] == "uphold" else link["previous_status"]
        st.put(state.link_key(subject["id"]), link)
