"""Who may submit what (docs/domain.md §7): member keys, their org and roles.

Roles are data (genesis, governance); this module only names the ones the rules refer to. A
signer is a registered key: a member key (roles = its registered roles that its org still
holds) or an org's admin key (no roles; it manages member keys and takes part in governance).
A key of a removed org can do nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from kledger.node.chain import canonical
from kledger.node.errors import Refused, Status
from kledger.node.registry import state
from kledger.node.registry.state import StateReader

AUTHOR_CMO = "AUTHOR_CMO"
PRODUCER_CMO = "PRODUCER_CMO"
PRODUCER_ASSOC = "PRODUCER_ASSOC"
PERFORMER_CMO = "PERFORMER_CMO"
ID_AGENCY = "ID_AGENCY"
REPORTER = "REPORTER"
AUDITOR = "AUDITOR"

CMO_ROLES = frozenset({AUTHOR_CMO, PRODUCER_CMO, PERFORMER_CMO})
# Orgs on the authors' side and on the recordings' side of a link (docs/domain.md §3).
AUTHOR_SIDE = frozenset({AUTHOR_CMO})
RECORDING_SIDE = frozenset({PRODUCER_CMO, PRODUCER_ASSOC, PERFORMER_CMO, ID_AGENCY})


@dataclass(frozen=True, slots=True)
class Signer:
    org: str
    roles: frozenset[str]
    admin: bool

    def has_any(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


# Every tx resolves its signer twice per node (admission, execution), and a few keys sign almost
# every tx: the member and org records are read from the state each time (so a committed change,
# e.g. a revoked key, is seen at once), but what they say is decoded once per distinct stored
# bytes. These are pure functions of the bytes, so the caches are never stale; they are bounded
# and thread-safe (admission runs on the loop, execution on the commit worker thread).
_DECODED_RECORDS = 4_096


@functools.lru_cache(maxsize=_DECODED_RECORDS)
def _member_record(raw: bytes) -> tuple[str, frozenset[str], bool]:
    """(org, roles, admin) of a stored member record."""
    member = canonical.decode_stored(raw)
    return member["org"], frozenset(member["roles"]), bool(member["admin"])


@functools.lru_cache(maxsize=_DECODED_RECORDS)
def _active_org_roles(raw: bytes) -> frozenset[str] | None:
    """The roles of a stored org record, or None when the org is not active."""
    org = canonical.decode_stored(raw)
    return frozenset(org["roles"]) if org["active"] else None


def org_roles(reader: StateReader, org: str) -> frozenset[str]:
    raw = reader.get_raw(state.org_key(org))
    roles = None if raw is None else _active_org_roles(raw)
    return frozenset() if roles is None else roles


def resolve_signer(reader: StateReader, public_key: bytes) -> Signer:
    raw_member = reader.get_raw(state.member_key(public_key))
    if raw_member is None:
        raise Refused(Status.PERMISSION_DENIED, "key is not a registered member key", "signer")
    org, member_roles, admin = _member_record(raw_member)
    raw_org = reader.get_raw(state.org_key(org))
    active_roles = None if raw_org is None else _active_org_roles(raw_org)
    if active_roles is None:
        raise Refused(Status.PERMISSION_DENIED, f"org {org} is not an active member", "signer")
    return Signer(org=org, roles=member_roles & active_roles, admin=admin)


def require_roles(signer: Signer, roles: frozenset[str], tx_type: str) -> None:
    if signer.admin:
        raise Refused(
            Status.PERMISSION_DENIED,
            f"an admin key may not submit {tx_type}; use a member key of {signer.org}",
            "signer",
        )
    if roles and not signer.has_any(roles):
        raise Refused(
            Status.PERMISSION_DENIED,
            f"{tx_type} needs one of the roles {', '.join(sorted(roles))}; "
            f"{signer.org} key holds {', '.join(sorted(signer.roles)) or 'none'}",
            "signer",
        )


def org_side(roles: frozenset[str]) -> frozenset[str]:
    sides = set()
    if roles & AUTHOR_SIDE:
        sides.add("author")
    if roles & RECORDING_SIDE:
        sides.add("recording")
    return frozenset(sides)
