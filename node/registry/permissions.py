"""Who may submit what (DOMAIN.md section 7): member keys, their org and roles.

Roles are data (genesis, governance); this module only names the ones the rules refer to. A
signer is a registered key: a member key (roles = its registered roles that its org still
holds) or an org's admin key (no roles; it manages member keys and takes part in governance).
A key of a removed org can do nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import Refused, Status
from node.registry import state
from node.registry.state import StateReader

AUTHOR_CMO = "AUTHOR_CMO"
PRODUCER_CMO = "PRODUCER_CMO"
PRODUCER_ASSOC = "PRODUCER_ASSOC"
PERFORMER_CMO = "PERFORMER_CMO"
ID_AGENCY = "ID_AGENCY"
REPORTER = "REPORTER"
AUDITOR = "AUDITOR"

CMO_ROLES = frozenset({AUTHOR_CMO, PRODUCER_CMO, PERFORMER_CMO})
# Orgs on the authors' side and on the recordings' side of a link (DOMAIN.md section 3).
AUTHOR_SIDE = frozenset({AUTHOR_CMO})
RECORDING_SIDE = frozenset({PRODUCER_CMO, PRODUCER_ASSOC, PERFORMER_CMO, ID_AGENCY})


@dataclass(frozen=True, slots=True)
class Signer:
    org: str
    roles: frozenset[str]
    admin: bool

    def has_any(self, roles: frozenset[str]) -> bool:
        return bool(self.roles & roles)


def org_roles(reader: StateReader, org: str) -> frozenset[str]:
    record = reader.get(state.org_key(org))
    if record is None or not record["active"]:
        return frozenset()
    return frozenset(record["roles"])


def resolve_signer(reader: StateReader, public_key: bytes) -> Signer:
    member = reader.get(state.member_key(public_key))
    if member is None:
        raise Refused(Status.PERMISSION_DENIED, "key is not a registered member key", "signer")
    org = reader.get(state.org_key(member["org"]))
    if org is None or not org["active"]:
        raise Refused(
            Status.PERMISSION_DENIED, f"org {member['org']} is not an active member", "signer"
        )
    roles = frozenset(member["roles"]) & frozenset(org["roles"])
    return Signer(org=member["org"], roles=roles, admin=bool(member["admin"]))


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
