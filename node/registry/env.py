"""What a transaction handler knows besides its payload: the block context, who signed, the tx
hash (for ids the state machine derives), and small shared lookups and refusals."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from kledger.node.errors import Refused, Status
from kledger.node.registry import fields, state
from kledger.node.registry.permissions import Signer
from kledger.node.registry.state import BlockContext, StateReader

DAY_MS = 86_400_000
DISPUTE_DEADLINE_MS = (60 + 60) * DAY_MS  # docs/domain.md §4: default 60 + 60 days
SUBJECT_KINDS = frozenset({"work", "recording"})


@dataclass(frozen=True, slots=True)
class Env:
    ctx: BlockContext
    signer: Signer
    tx_hash: bytes


def date_of_ms(timestamp_ms: int) -> str:
    """The UTC calendar date of a block time (integer input, so deterministic)."""
    moment = datetime.datetime.fromtimestamp(timestamp_ms // 1000, tz=datetime.UTC)
    return moment.date().isoformat()


def exists(message: str, field: str) -> Refused:
    return Refused(Status.ALREADY_EXISTS, message, field)


def precondition(message: str, field: str) -> Refused:
    return Refused(Status.FAILED_PRECONDITION, message, field)


def denied(message: str, field: str = "signer") -> Refused:
    return Refused(Status.PERMISSION_DENIED, message, field)


def check_subject(payload: dict[str, Any], name: str = "subject") -> dict[str, str]:
    """{kind: work|recording, id}; a recording id is its ISRC (normalized)."""
    raw = fields.obj(payload.get(name), name, frozenset({"kind", "id"}))
    kind = fields.choice(raw, "kind", f"{name}.", SUBJECT_KINDS)
    if kind == "recording":
        return {"kind": kind, "id": fields.code(raw, "id", "isrc", f"{name}.")}
    return {"kind": kind, "id": fields.token(raw, "id", f"{name}.")}


def subject_record(
    reader: StateReader, subject: dict[str, str], field: str = "payload.subject"
) -> Any:
    key = (
        state.work_key(subject["id"])
        if subject["kind"] == "work"
        else state.recording_key(subject["id"])
    )
    record = reader.get(key)
    if record is None:
        raise Refused(Status.NOT_FOUND, f"no {subject['kind']} {subject['id']}", field)
    return record


def require_party(reader: StateReader, party_id: str, field: str) -> Any:
    record = reader.get(state.party_key(party_id))
    if record is None:
        raise precondition(f"party {party_id} is not registered", field)
    return record


def require_party_registered(reader: StateReader, party_id: str, field: str) -> None:
    """`require_party` for a caller that does not need the record (it is not decoded)."""
    if not reader.has(state.party_key(party_id)):
        raise precondition(f"party {party_id} is not registered", field)


def is_member_of(party: dict[str, Any], org: str) -> bool:
    return any(m["society"] == org for m in party["memberships"])


def claim_orgs(reader: StateReader, subject: dict[str, str], rights: frozenset[str]) -> set[str]:
    orgs: set[str] = set()
    for right in sorted(rights):
        record = reader.get(state.shares_key(subject["kind"], subject["id"], right))
        if record:
            orgs |= {c["org"] for c in record["claims"] if c["status"] == "active"}
    return orgs
