"""Member keys and governance (docs/domain.md §7).

Member keys: an org's admin key registers and revokes its member keys, each with a subset of the
org's roles. Governance: a proposal (add org, remove org, change a validator key, set a tariff)
and approvals from distinct orgs of the current validator set; when approvals reach the quorum
of that set (consensus.validators.quorum_size) the action executes in the same block. A change
of the validator set takes effect at the next epoch: execution returns it as the block's
validator_change.
"""

from __future__ import annotations

from typing import Any

from kledger.consensus.validators import ValidatorSet, quorum_size
from kledger.node.chain.genesis import ORG_ID
from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import fields, state, usage
from kledger.node.registry.env import Env, denied, exists, precondition
from kledger.node.registry.state import StateReader, TxState

ACTIONS = frozenset({"add_org", "remove_org", "change_validator", "set_tariff"})
MAX_ROLES = 16


def _org_id(p: dict[str, Any], name: str, path: str) -> str:
    value = p.get(name)
    if not isinstance(value, str) or not ORG_ID.match(value):
        raise invalid(f"must match {ORG_ID.pattern}", fields.where(f"{path}{name}"))
    return value


def _roles(p: dict[str, Any], name: str, path: str, required: bool) -> list[str]:
    raw = fields.items(p, name, path, required=required)
    if len(raw) > MAX_ROLES:
        raise invalid(f"at most {MAX_ROLES} roles", fields.where(f"{path}{name}"))
    return sorted({fields.token({"r": r}, "r", f"{path}{name}[{i}]") for i, r in enumerate(raw)})


# -- RegisterMember / RevokeMember -----------------------------------------------------------


def check_member(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"org", "public_key", "roles"}))
    return {
        "org": _org_id(p, "org", ""),
        "public_key": fields.hex32(p.get("public_key"), "public_key"),
        "roles": _roles(p, "roles", "", required=False) if "roles" in p else None,
    }


def _require_admin(env: Env, org: str) -> None:
    if not env.signer.admin or env.signer.org != org:
        raise denied(f"only the admin key of {org} manages its member keys")


def apply_register_member(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    _require_admin(env, p["org"])
    org = st.get(state.org_key(p["org"]))
    roles = org["roles"] if p["roles"] is None else p["roles"]
    extra = sorted(set(roles) - set(org["roles"]))
    if extra:
        raise denied(f"{p['org']} does not hold role(s) {', '.join(extra)}", "payload.roles")
    key = state.member_key(bytes.fromhex(p["public_key"]))
    if st.has(key):
        raise exists("key is already registered", "payload.public_key")
    st.put(key, {"org": p["org"], "roles": roles, "admin": False})
    return {"public_key": p["public_key"], "roles": roles}


def apply_revoke_member(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    _require_admin(env, p["org"])
    key = state.member_key(bytes.fromhex(p["public_key"]))
    member = st.get(key)
    if member is None or member["org"] != p["org"] or member["admin"]:
        raise Refused(Status.NOT_FOUND, f"not a member key of {p['org']}", "payload.public_key")
    st.delete(key)
    return {"public_key": p["public_key"], "revoked": True}


# -- proposals -------------------------------------------------------------------------------


def check_proposal(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"proposal_id", "action"}))
    action = fields.obj(p.get("action"), "action")
    kind = fields.choice(action, "kind", "action.", ACTIONS)
    out: dict[str, Any] = {"kind": kind}
    if kind == "add_org":
        fields.obj(
            action,
            "action",
            frozenset(
                {"kind", "org_id", "name", "roles", "admin_key", "validator_key", "member_keys"}
            ),
        )
        out |= {
            "org_id": _org_id(action, "org_id", "action."),
            "name": fields.text(action, "name", "action.", max_chars=128),
            "roles": _roles(action, "roles", "action.", required=False),
            "admin_key": fields.hex32(action.get("admin_key"), "action.admin_key"),
            "validator_key": fields.hex32(action["validator_key"], "action.validator_key")
            if action.get("validator_key")
            else "",
            "member_keys": sorted(
                {
                    fields.hex32(k, f"action.member_keys[{i}]")
                    for i, k in enumerate(
                        fields.items(action, "member_keys", "action.", required=False)
                    )
                }
            ),
        }
    elif kind == "remove_org":
        fields.obj(action, "action", frozenset({"kind", "org_id"}))
        out["org_id"] = _org_id(action, "org_id", "action.")
    elif kind == "change_validator":
        fields.obj(action, "action", frozenset({"kind", "org_id", "validator_key"}))
        out["org_id"] = _org_id(action, "org_id", "action.")
        key = action.get("validator_key")
        out["validator_key"] = fields.hex32(key, "action.validator_key") if key else ""
    else:
        fields.obj(action, "action", frozenset({"kind", "tariff"}))
        out["tariff"] = usage.check_tariff(action.get("tariff"), "action.tariff")
    return {"proposal_id": fields.token(p, "proposal_id"), "action": out}


def check_approval(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"proposal_id"}))
    return {"proposal_id": fields.token(p, "proposal_id")}


def current_validators(reader: StateReader) -> dict[str, Any]:
    record: dict[str, Any] = reader.get(state.VALIDATORS_KEY)
    assert record is not None, "genesis writes the validator set"
    return record


def apply_proposal(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    key = state.proposal_key(p["proposal_id"])
    if st.has(key):
        raise exists(f"proposal {p['proposal_id']} exists", "payload.proposal_id")
    _check_action_now(st, p["action"])
    proposal = {
        "proposal_id": p["proposal_id"],
        "action": p["action"],
        "proposed_by": env.signer.org,
        "approvals": [],
        "status": "open",
        "height": env.ctx.height,
    }
    return _approve(st, env, proposal)


def apply_approval(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    proposal = st.get(state.proposal_key(p["proposal_id"]))
    if proposal is None:
        raise Refused(Status.NOT_FOUND, f"no proposal {p['proposal_id']}", "payload.proposal_id")
    if proposal["status"] != "open":
        raise precondition(f"proposal is {proposal['status']}", "payload.proposal_id")
    if env.signer.org in proposal["approvals"]:
        raise exists(f"{env.signer.org} already approved", "payload.proposal_id")
    return _approve(st, env, proposal)


def _approve(st: TxState, env: Env, proposal: dict[str, Any]) -> dict[str, Any]:
    validators = current_validators(st)
    voters = {org for org, _ in validators["validators"]}
    if env.signer.org not in voters:
        raise denied(f"{env.signer.org} is not an org of the validator set; it cannot vote")
    proposal["approvals"] = sorted([*proposal["approvals"], env.signer.org])
    needed = quorum_size(len(voters))
    if len(proposal["approvals"]) >= needed:
        _check_action_now(st, proposal["action"])
        _execute(st, env, proposal["action"], validators)
        proposal["status"] = "executed"
        proposal["executed_height"] = env.ctx.height
    st.put(state.proposal_key(proposal["proposal_id"]), proposal)
    return {
        "proposal_id": proposal["proposal_id"],
        "approvals": len(proposal["approvals"]),
        "quorum": needed,
        "status": proposal["status"],
    }


def _check_action_now(st: StateReader, action: dict[str, Any]) -> None:
    kind = action["kind"]
    if kind == "set_tariff":
        if st.has(state.tariff_key(action["tariff"]["version"])):
            raise exists(
                f"tariff version {action['tariff']['version']} exists",
                "payload.action.tariff.version",
            )
        return
    org = st.get(state.org_key(action["org_id"]))
    if kind == "add_org":
        if org is not None:
            raise exists(f"org {action['org_id']} exists", "payload.action.org_id")
        for name in ("admin_key", "validator_key"):
            if action[name] and st.has(state.member_key(bytes.fromhex(action[name]))):
                raise exists("key is already registered", f"payload.action.{name}")
        for index, member in enumerate(action["member_keys"]):
            if member == action["admin_key"] or st.has(state.member_key(bytes.fromhex(member))):
                raise exists("key is already registered", f"payload.action.member_keys[{index}]")
    elif org is None or not org["active"]:
        raise precondition(
            f"org {action['org_id']} is not an active member", "payload.action.org_id"
        )


def _execute(st: TxState, env: Env, action: dict[str, Any], validators: dict[str, Any]) -> None:
    kind = action["kind"]
    members = dict(validators["validators"])
    if kind == "set_tariff":
        st.put(state.tariff_key(action["tariff"]["version"]), action["tariff"])
        return
    if kind == "add_org":
        st.put(
            state.org_key(action["org_id"]),
            {
                "org": action["org_id"],
                "name": action["name"],
                "roles": action["roles"],
                "admin_key": action["admin_key"],
                "validator_key": action["validator_key"],
                "active": True,
            },
        )
        st.put(
            state.member_key(bytes.fromhex(action["admin_key"])),
            {"org": action["org_id"], "roles": [], "admin": True},
        )
        for member in action["member_keys"]:
            st.put(
                state.member_key(bytes.fromhex(member)),
                {"org": action["org_id"], "roles": action["roles"], "admin": False},
            )
        if action["validator_key"]:
            members[action["org_id"]] = action["validator_key"]
    elif kind == "remove_org":
        org = st.get(state.org_key(action["org_id"]))
        org["active"] = False
        st.put(state.org_key(action["org_id"]), org)
        members.pop(action["org_id"], None)
    else:
        org = st.get(state.org_key(action["org_id"]))
        org["validator_key"] = action["validator_key"]
        st.put(state.org_key(action["org_id"]), org)
        if action["validator_key"]:
            members[action["org_id"]] = action["validator_key"]
        else:
            members.pop(action["org_id"], None)
    if not members:
        raise precondition("the validator set would be empty", "payload.action")
    if len(set(members.values())) != len(members):
        raise precondition("validator keys must be distinct", "payload.action")
    if sorted(members.items()) != sorted(tuple(v) for v in validators["validators"]):
        st.put(
            state.VALIDATORS_KEY,
            {"epoch": env.ctx.epoch + 1, "validators": sorted([o, k] for o, k in members.items())},
        )


def validator_set_of(record: dict[str, Any]) -> ValidatorSet:
    return ValidatorSet.of(
        record["epoch"], [(org, bytes.fromhex(key)) for org, key in record["validators"]]
    )
