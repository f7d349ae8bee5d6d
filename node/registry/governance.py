"""Member keys and governance (docs/domain.md §7).

Member keys: an org's admin key registers and revokes its member keys, each with a subset of the
org's roles. Governance: a proposal (add org, remove org, change a validator key, set a tariff)
and approvals from distinct orgs of the current validator set; when approvals reach the quorum
of that set (consensus.validators.quorum_size) the action executes in the same block.

A change of the validator set is two-step (docs/design.md §4.8): the approval DECIDES it into
state.NEXT_VALIDATORS_KEY, naming the orgs whose new validator key must still announce itself
(`validator_ready`, signed by that key); consensus ENACTS it later with an epoch-change marker
block, whose execution (`enact_epoch_change`) moves it to state.VALIDATORS_KEY.

Rules kept here:
- at most one pending change; the next set has at least MIN_VALIDATORS orgs with distinct keys;
- a new validator key proves possession (POP_TAG over [chain_id, org_id, key]) at proposal and
  again at execution;
- every epoch's set stays under state.epoch_validators_key(epoch), genesis included.
"""

from __future__ import annotations

import re
from typing import Any

from kledger.consensus.validators import ValidatorSet, quorum_size
from kledger.node.chain import canonical, keys
from kledger.node.chain.genesis import ORG_ID
from kledger.node.errors import Refused, Status, StoreCorrupt, invalid
from kledger.node.registry import fields, state, usage
from kledger.node.registry.env import Env, denied, exists, precondition
from kledger.node.registry.permissions import Signer
from kledger.node.registry.state import StateReader, TxState

ACTIONS = frozenset({"add_org", "remove_org", "change_validator", "set_tariff"})
MAX_ROLES = 16
# n >= 3f + 1 with f >= 1: a smaller set tolerates no fault at all.
MIN_VALIDATORS = 4
HOST_PORT = re.compile(r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")
SIGNATURE_HEX = re.compile(r"^[0-9a-f]{128}$")


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
                {
                    "kind",
                    "org_id",
                    "name",
                    "roles",
                    "admin_key",
                    "validator_key",
                    "validator_pop",
                    "peer_address",
                    "tls_cert_sha256",
                    "member_keys",
                }
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
        out |= _new_validator_fields(action, out["validator_key"], node=True)
    elif kind == "remove_org":
        fields.obj(action, "action", frozenset({"kind", "org_id"}))
        out["org_id"] = _org_id(action, "org_id", "action.")
    elif kind == "change_validator":
        fields.obj(
            action, "action", frozenset({"kind", "org_id", "validator_key", "validator_pop"})
        )
        out["org_id"] = _org_id(action, "org_id", "action.")
        key = action.get("validator_key")
        out["validator_key"] = fields.hex32(key, "action.validator_key") if key else ""
        out |= _new_validator_fields(action, out["validator_key"], node=False)
    else:
        fields.obj(action, "action", frozenset({"kind", "tariff"}))
        out["tariff"] = usage.check_tariff(action.get("tariff"), "action.tariff")
    return {"proposal_id": fields.token(p, "proposal_id"), "action": out}


def _new_validator_fields(action: dict[str, Any], validator_key: str, node: bool) -> dict[str, str]:
    """The proof of possession a new validator key carries and, for an org joining (`node`),
    where its node listens and the SHA-256 of its TLS certificate; all empty without a key."""
    if not validator_key:
        for name in ("validator_pop", "peer_address", "tls_cert_sha256"):
            if action.get(name):
                raise invalid("only with a validator_key", f"payload.action.{name}")
        return {"validator_pop": ""} | ({"peer_address": "", "tls_cert_sha256": ""} if node else {})
    pop = action.get("validator_pop")
    if not isinstance(pop, str) or not SIGNATURE_HEX.match(pop):
        raise invalid(
            "must be the new key's Ed25519 signature (128 lowercase hex chars) over "
            "kledger/pop/v1 [chain_id, org_id, validator_key]",
            "payload.action.validator_pop",
        )
    out = {"validator_pop": pop}
    if node:
        address = action.get("peer_address")
        if (
            not isinstance(address, str)
            or not HOST_PORT.match(address)
            or not 0 < int(address.rsplit(":", 1)[1]) < 65536
        ):
            raise invalid(
                "must be 'host:port' (the new node's peer port)", "payload.action.peer_address"
            )
        out["peer_address"] = address
        out["tls_cert_sha256"] = fields.hex32(
            action.get("tls_cert_sha256"), "action.tls_cert_sha256"
        )
    return out


def pop_message(chain_id: str, org_id: str, validator_key: bytes) -> bytes:
    """What a new validator key signs (under keys.POP_TAG) to prove it is held."""
    return canonical.encode([chain_id, org_id, validator_key])


def sign_pop(key: keys.KeyPair, chain_id: str, org_id: str) -> bytes:
    return key.sign(keys.POP_TAG, pop_message(chain_id, org_id, key.public_key))


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
    _check_action_now(st, env, p["action"])
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
        _check_action_now(st, env, proposal["action"])
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


def _check_action_now(st: StateReader, env: Env, action: dict[str, Any]) -> None:
    """The state-dependent rules of an action, at proposal and again at execution."""
    kind = action["kind"]
    if kind == "set_tariff":
        if st.has(state.tariff_key(action["tariff"]["version"])):
            raise exists(
                f"tariff version {action['tariff']['version']} exists",
                "payload.action.tariff.version",
            )
        return
    _check_validator_change(st, env, action)
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


def _check_validator_change(st: StateReader, env: Env, action: dict[str, Any]) -> None:
    """A set-changing action: no change pending, and a new key proves possession."""
    next_set = st.get(state.NEXT_VALIDATORS_KEY)
    if next_set is not None:
        raise precondition(
            f"a validator-set change is pending for epoch {next_set['epoch']}",
            "payload.action",
        )
    if action.get("validator_key"):
        key = bytes.fromhex(action["validator_key"])
        message = pop_message(env.ctx.chain_id, action["org_id"], key)
        if not keys.verify(key, keys.POP_TAG, message, bytes.fromhex(action["validator_pop"])):
            raise invalid(
                "is not validator_key's signature over kledger/pop/v1 "
                "[chain_id, org_id, validator_key]",
                "payload.action.validator_pop",
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
                "peer_address": action["peer_address"],
                "tls_cert_sha256": action["tls_cert_sha256"],
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
    before = dict(validators["validators"])
    if members == before:
        return  # not a validator-set change (e.g. removing an org without a validator key)
    if len(members) < MIN_VALIDATORS:
        raise precondition(
            f"the next validator set would have {len(members)} validators; at least "
            f"{MIN_VALIDATORS} are needed (n >= 3f + 1, f >= 1)",
            "payload.action",
        )
    if len(set(members.values())) != len(members):
        raise precondition("validator keys must be distinct", "payload.action.validator_key")
    # The orgs whose key is new must announce it (validator_ready) before the epoch changes.
    waiting = sorted(org for org, key in members.items() if before.get(org) != key)
    st.put(
        state.NEXT_VALIDATORS_KEY,
        {
            "epoch": validators["epoch"] + 1,
            "validators": sorted([o, k] for o, k in members.items()),
            "decided_height": env.ctx.height,
            "waiting_for": waiting,
        },
    )


# -- validator_ready -------------------------------------------------------------------------


def check_ready(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"org"}))
    return {"org": _org_id(p, "org", "")}


def ready_signer(reader: StateReader, public_key: bytes, org: str) -> Signer:
    """A validator_ready tx is signed by the new validator key itself, exactly the key the
    pending set names for `org` (it is no member key: admission and execution ask here)."""
    next_set = reader.get(state.NEXT_VALIDATORS_KEY)
    if next_set is None:
        raise precondition("no validator-set change is pending", "payload.org")
    named = dict(next_set["validators"]).get(org)
    if named is None:
        raise precondition(
            f"{org} is not in the validator set of epoch {next_set['epoch']}", "payload.org"
        )
    if named != public_key.hex():
        raise denied(f"validator_ready for {org} must be signed by its new validator key")
    return Signer(org=org, roles=frozenset(), admin=False)


def apply_ready(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    next_set = st.get(state.NEXT_VALIDATORS_KEY)
    if next_set is None or env.signer.org != p["org"]:
        raise precondition("no validator-set change is pending", "payload.org")
    if p["org"] not in next_set["waiting_for"]:
        raise exists(f"{p['org']} already announced its key", "payload.org")
    next_set["waiting_for"] = [o for o in next_set["waiting_for"] if o != p["org"]]
    st.put(state.NEXT_VALIDATORS_KEY, next_set)
    return {"org": p["org"], "epoch": next_set["epoch"], "waiting_for": next_set["waiting_for"]}


# -- the epoch change ------------------------------------------------------------------------


def validator_set_of(record: dict[str, Any]) -> ValidatorSet:
    return ValidatorSet.of(
        record["epoch"], [(org, bytes.fromhex(key)) for org, key in record["validators"]]
    )


def validators_record(validators: ValidatorSet) -> dict[str, Any]:
    """The stored form of a set (state.VALIDATORS_KEY, NEXT, the per-epoch history)."""
    return {
        "epoch": validators.epoch,
        "validators": sorted([v.node_id, v.public_key.hex()] for v in validators.validators),
    }


def ready_next_set(reader: StateReader) -> ValidatorSet | None:
    """The decided next set once every new key announced itself: what the leader proposes as
    the epoch-change marker and what a replica votes for; None otherwise."""
    record = reader.get(state.NEXT_VALIDATORS_KEY)
    if record is None or record["waiting_for"]:
        return None
    return validator_set_of(record)


def enact_epoch_change(st: TxState, marker: ValidatorSet) -> None:
    """Execute the marker block: NEXT becomes the current set and joins the history. The vote
    rule admits only a marker equal to a ready NEXT, so anything else is our bug (StoreCorrupt:
    the node stops rather than fork)."""
    ready = ready_next_set(st)
    if ready is None or ready != marker:
        raise StoreCorrupt(
            f"a committed epoch-change marker for epoch {marker.epoch} does not match the "
            "ready next validator set in state (the vote rule should have refused it)"
        )
    record = validators_record(marker)
    st.put(state.VALIDATORS_KEY, record)
    st.put(state.epoch_validators_key(marker.epoch), record)
    st.delete(state.NEXT_VALIDATORS_KEY)
