"""Links bind codes into one rights record (docs/domain.md §3).

    embodies   work <-> ISRC     (the work may be named by work id or ISWC)
    cid        ISRC <-> Content ID
    uci        ISRC <-> UCI
    alias      CID <-> CID, UCI <-> UCI

State: asserted (by one org) -> confirmed (by a second org; for embodies the two must cover the
author side and the recording side) or disputed (FileDispute) / retracted (by an org that
asserted or confirmed it). Only confirmed links carry money (distribution matching).
The link id is "<kind>:<value>~<kind>:<value>" in the order above, so both sides name one link.
"""

from __future__ import annotations

from typing import Any

from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import fields, state
from kledger.node.registry.env import Env, denied, exists, precondition
from kledger.node.registry.permissions import org_roles, org_side
from kledger.node.registry.state import StateReader, TxState

ENDPOINT_KINDS = frozenset({"work", "iswc", "isrc", "cid", "uci"})
RELATIONS = {
    ("work", "isrc"): "embodies",
    ("isrc", "cid"): "cid",
    ("isrc", "uci"): "uci",
    ("cid", "cid"): "alias",
    ("uci", "uci"): "alias",
}
MAX_LINKS_PER_CODE = 256


def link_id(a: tuple[str, str], b: tuple[str, str]) -> str:
    return f"{a[0]}:{a[1]}~{b[0]}:{b[1]}"


def _endpoint(p: dict[str, Any], name: str) -> tuple[str, str]:
    raw = fields.obj(p.get(name), name, frozenset({"kind", "value"}))
    kind = fields.choice(raw, "kind", f"{name}.", ENDPOINT_KINDS)
    if kind == "work":
        return kind, fields.token(raw, "value", f"{name}.")
    return kind, fields.code(raw, "value", kind, f"{name}.")


def check_link(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"from", "to"}))
    return {"from": _endpoint(p, "from"), "to": _endpoint(p, "to")}


def _order(
    st: StateReader, a: tuple[str, str], b: tuple[str, str]
) -> tuple[tuple[str, str], tuple[str, str], str]:
    def norm(end: tuple[str, str], field: str) -> tuple[str, str]:
        if end[0] == "iswc":
            target = st.get(state.code_key("iswc", end[1]))
            if target is None:
                raise Refused(Status.NOT_FOUND, f"no work with ISWC {end[1]}", field)
            return "work", target["id"]
        return end

    a, b = norm(a, "payload.from"), norm(b, "payload.to")
    if (a[0], b[0]) not in RELATIONS:
        a, b = b, a
    relation = RELATIONS.get((a[0], b[0]))
    if relation is None:
        raise invalid(f"cannot link {a[0]} with {b[0]} (see the link kinds)", "payload.to")
    if a == b:
        raise invalid("a code cannot be linked to itself", "payload.to")
    if relation == "alias" and b < a:
        a, b = b, a
    return a, b, relation


def _exists_endpoint(
    st: StateReader, end: tuple[str, str], field: str, pending_isrc: bool = False
) -> None:
    if end[0] == "work" and not st.has(state.work_key(end[1])):
        raise Refused(Status.NOT_FOUND, f"no work {end[1]}", field)
    if end[0] == "isrc" and not pending_isrc and not st.has(state.recording_key(end[1])):
        raise Refused(Status.NOT_FOUND, f"no recording with ISRC {end[1]}", field)


def assert_link(st: TxState, env: Env, a: tuple[str, str], b: tuple[str, str]) -> dict[str, str]:
    """Assert a new link, or confirm one asserted by another org. Returns {link_id, status}.
    The author side may assert that a work is embodied in an ISRC no one has registered yet (a
    CWR registration names its recordings before the producers register them); the link
    waits, asserted, until the recording side confirms it, which registering the recording
    with the work does."""
    a, b, relation = _order(st, a, b)
    pending = relation == "embodies" and "author" in org_side(env.signer.roles)
    _exists_endpoint(st, a, "payload.from")
    _exists_endpoint(st, b, "payload.to", pending_isrc=pending)
    lid = link_id(a, b)
    key = state.link_key(lid)
    link = st.get(key)
    org = env.signer.org
    if link is None or link["status"] == "retracted":
        link = {
            "link_id": lid,
            "relation": relation,
            "a": list(a),
            "b": list(b),
            "status": "asserted",
            "asserted_by": org,
            "confirmed_by": "",
            "previous_status": "",
            "height": env.ctx.height,
        }
        for end in (a, b):
            index_key = state.links_of_key(*end)
            ids = st.get(index_key) or []
            if lid not in ids:
                if len(ids) >= MAX_LINKS_PER_CODE:
                    raise Refused(
                        Status.RESOURCE_EXHAUSTED,
                        f"{end[1]} has {MAX_LINKS_PER_CODE} links",
                        "payload",
                    )
                st.put(index_key, sorted([*ids, lid]))
    elif link["status"] == "asserted":
        if link["asserted_by"] == org:
            raise exists(f"link {lid} is already asserted by {org}", "payload")
        if relation == "embodies":
            sides = org_side(org_roles(st, link["asserted_by"])) | org_side(env.signer.roles)
            if sides != {"author", "recording"}:
                raise precondition(
                    f"link {lid} needs confirmation by an org of the other side (author/recording)",
                    "payload",
                )
        link["status"] = "confirmed"
        link["confirmed_by"] = org
    elif link["status"] == "confirmed":
        raise exists(f"link {lid} is already confirmed", "payload")
    else:
        raise precondition(f"link {lid} is {link['status']}", "payload")
    st.put(key, link)
    return {"link_id": lid, "status": link["status"]}


def apply_link(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    return assert_link(st, env, tuple(p["from"]), tuple(p["to"]))  # type: ignore[arg-type]


def check_retract(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"link_id"}))
    value = p.get("link_id")
    if not isinstance(value, str) or not 0 < len(value) <= 300 or "/" in value:
        raise invalid("must be a link id", "payload.link_id")
    return {"link_id": value}


def apply_retract(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    link = st.get(state.link_key(p["link_id"]))
    if link is None:
        raise Refused(Status.NOT_FOUND, f"no link {p['link_id']}", "payload.link_id")
    if env.signer.org not in (link["asserted_by"], link["confirmed_by"]):
        raise denied("only an org that asserted or confirmed a link retracts it")
    if link["status"] in ("retracted", "disputed"):
        raise precondition(f"link is {link['status']}", "payload.link_id")
    link["status"] = "retracted"
    st.put(state.link_key(p["link_id"]), link)
    return {"link_id": p["link_id"], "status": "retracted"}


def links_of(reader: StateReader, kind: str, value: str) -> list[dict[str, Any]]:
    ids = reader.get(state.links_of_key(kind, value)) or []
    return [reader.get(state.link_key(lid)) for lid in ids]


def effective_status(reader: StateReader, link: dict[str, Any], now_ms: int) -> str:
    """A disputed link whose dispute expired unresolved is back to its previous status."""
    if link["status"] != "disputed":
        return str(link["status"])
    dispute = reader.get(state.dispute_key(link["dispute_id"]))
    if dispute is not None and dispute["status"] == "open" and now_ms > dispute["deadline_ms"]:
        return str(link["previous_status"])
    return "disputed"


def confirmed_peers(
    reader: StateReader, kind: str, value: str, peer_kind: str, now_ms: int
) -> list[str]:
    """Codes of `peer_kind` linked to (kind, value) by a confirmed link, sorted."""
    peers = set()
    for link in links_of(reader, kind, value):
        if effective_status(reader, link, now_ms) != "confirmed":
            continue
        for mine, other in ((link["a"], link["b"]), (link["b"], link["a"])):
            if mine == [kind, value] and other[0] == peer_kind:
                peers.add(other[1])
    return sorted(peers)
