"""Parties, works, recordings and creation provenance (docs/domain.md §3 and §6).

Rules kept here: party ids, IPI name numbers, work ids, ISWCs and ISRCs are unique
(ALREADY_EXISTS); a CMO registers parties only for its own members; a work carries creation
provenance (a human-creation warranty unless AI-generated); a modified work names its original;
an AI-generated work can be labelled but never made to hold authorship shares; provenance is
replaced only by the registering org, while a PERFORMER_CMO may add a performance statement.
A recording's UCIs, Content IDs and works become links asserted by the registering org.
"""

from __future__ import annotations

import re
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
    precondition,
    require_party_registered,
    subject_record,
)
from kledger.node.registry.permissions import PERFORMER_CMO
from kledger.node.registry.shares import WORK_RIGHTS
from kledger.node.registry.state import TxState

CREATION_TYPES = frozenset({"human", "ai_assisted", "ai_generated"})
COMPONENTS = frozenset({"composition", "lyrics", "vocals", "instrumentation", "post_production"})
PARTY_KINDS = frozenset({"person", "company"})
OPTIONAL_WORK_FIELDS = frozenset(
    {"alternate_titles", "language", "duration_s", "category", "submitter", "original",
     "performers", "origin"}
)  # fmt: skip


# -- RegisterParty ---------------------------------------------------------------------------


def check_register_party(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"party_id", "kind", "names", "isni", "memberships"}))
    names = []
    for i, raw in enumerate(fields.items(p, "names", "")):
        entry = fields.obj(raw, f"names[{i}]", frozenset({"name", "ipi", "ipi_base"}))
        name = {
            "name": fields.text(entry, "name", f"names[{i}]."),
            "ipi": fields.code(entry, "ipi", "ipi", f"names[{i}].", required=False),
        }
        if entry.get("ipi_base") is not None:  # kept only when given: older records stay as
            name["ipi_base"] = fields.code(entry, "ipi_base", "ipi_base", f"names[{i}].")
        names.append(name)
    memberships = []
    for i, raw in enumerate(fields.items(p, "memberships", "")):
        path = f"memberships[{i}]."
        entry = fields.obj(
            raw,
            f"memberships[{i}]",
            frozenset({"society", "right", "territory", "valid_from", "valid_to"}),
        )
        memberships.append(
            {
                "society": fields.token(entry, "society", path),
                "right": fields.choice(
                    entry,
                    "right",
                    path,
                    frozenset({"PR", "MR", "SR", "NR_PRODUCER", "NR_PERFORMER", "ALL"}),
                    "ALL",
                ),
                "territory": fields.code(
                    {"t": entry.get("territory", "Worldwide")}, "t", "territory", path
                ),
                "valid_from": fields.date(entry, "valid_from", path, "0001-01-01"),
                "valid_to": fields.date(entry, "valid_to", path, fields.MAX_DATE),
            }
        )
    return {
        "party_id": fields.token(p, "party_id"),
        "kind": fields.choice(p, "kind", "", PARTY_KINDS, "person"),
        "names": names,
        "isni": fields.code(p, "isni", "isni", required=False),
        "memberships": memberships,
    }


def apply_register_party(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    if st.has(state.party_key(p["party_id"])):
        raise exists(f"party {p['party_id']} is already registered", "payload.party_id")
    if not is_member_of(p, env.signer.org):
        raise denied(
            f"{env.signer.org} registers parties only for its members (memberships.society)"
        )
    for i, name in enumerate(p["names"]):
        if name["ipi"]:
            if st.has(state.ipi_key(name["ipi"])):
                raise exists(f"IPI {name['ipi']} already names a party", f"payload.names[{i}].ipi")
            st.put(state.ipi_key(name["ipi"]), p["party_id"])
    st.put(
        state.party_key(p["party_id"]),
        {**p, "registered_by": env.signer.org, "height": env.ctx.height},
    )
    return {"party_id": p["party_id"]}


# -- provenance ------------------------------------------------------------------------------


def check_provenance(raw: Any, path: str = "provenance") -> dict[str, Any]:
    p = fields.obj(
        raw,
        path,
        frozenset(
            {
                "creation_type",
                "components",
                "human_contribution",
                "warranty_ref",
                "c2pa_manifest_hash",
                "iscc",
            }
        ),
    )
    creation_type = fields.choice(p, "creation_type", f"{path}.", CREATION_TYPES)
    components: dict[str, Any] = {}
    raw_components = fields.obj(p.get("components", {}), f"{path}.components", COMPONENTS)
    for name in sorted(raw_components):
        entry = fields.obj(
            raw_components[name], f"{path}.components.{name}", frozenset({"ai_used", "tool"})
        )
        components[name] = {
            "ai_used": fields.boolean(entry, "ai_used", f"{path}.components.{name}."),
            "tool": fields.text(
                entry, "tool", f"{path}.components.{name}.", required=False, max_chars=128
            ),
        }
    human = fields.text(
        p, "human_contribution", f"{path}.", required=creation_type != "ai_generated"
    )
    warranty = fields.text(
        p, "warranty_ref", f"{path}.", required=creation_type != "ai_generated", max_chars=128
    )
    if creation_type == "human" and any(c["ai_used"] for c in components.values()):
        raise invalid(
            "a human creation declares no AI-used component", f"payload.{path}.creation_type"
        )
    manifest = p.get("c2pa_manifest_hash")
    return {
        "creation_type": creation_type,
        "components": components,
        "human_contribution": human,
        "warranty_ref": warranty,
        "c2pa_manifest_hash": fields.hex32(manifest, f"{path}.c2pa_manifest_hash")
        if manifest is not None
        else "",
        "iscc": fields.text(p, "iscc", f"{path}.", required=False, max_chars=128),
    }


# -- RegisterWork ----------------------------------------------------------------------------


MAX_CHAIN = 99
TITLE_TYPES = frozenset({"AL", "AT", "ET", "FT", "IT", "OL", "OT", "PT", "RT", "TE", "TT"})
LANGUAGE = re.compile(r"^[A-Z]{2}$")
ORIGIN_FIELDS = frozenset({"intended_purpose", "production_title", "library", "cd_identifier"})
MAX_WORK_REVISIONS = 64


def _parties(
    p: dict[str, Any], name: str, roles: frozenset[str], required: bool
) -> list[dict[str, Any]]:
    """Creators or publishers: {party_id, role}, or {unknown: true, role} for a party the
    registration does not identify (CWR: unknown indicator, no name, all-zero IPI); a publisher
    may name its chain (CWR publisher sequence #), a creator the chains it belongs to."""
    out: list[dict[str, Any]] = []
    chain_field = "chain" if name == "publishers" else "chains"
    for i, raw in enumerate(fields.items(p, name, "", required=required)):
        path = f"{name}[{i}]."
        entry = fields.obj(
            raw, f"{name}[{i}]", frozenset({"party_id", "role", "unknown", chain_field})
        )
        if fields.boolean(entry, "unknown", path):
            if "party_id" in entry:
                raise invalid("an unknown party has no party_id", f"payload.{path}party_id")
            item: dict[str, Any] = {
                "unknown": True,
                "role": fields.choice(entry, "role", path, roles),
            }
        else:
            item = {
                "party_id": fields.token(entry, "party_id", path),
                "role": fields.choice(entry, "role", path, roles),
            }
        if chain_field == "chain" and "chain" in entry:
            item["chain"] = fields.integer(entry, "chain", path, 1, MAX_CHAIN)
        elif chain_field == "chains" and "chains" in entry:
            item["chains"] = sorted(
                {
                    fields.integer({"c": c}, "c", f"{path}chains[{j}]", 1, MAX_CHAIN)
                    for j, c in enumerate(fields.items(entry, "chains", path))
                }
            )
        out.append(item)
    return out


def _language(p: dict[str, Any], name: str, path: str) -> str:
    value = p.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or not LANGUAGE.match(value):
        raise invalid(
            "must be a language code of two capital letters", fields.where(f"{path}{name}")
        )
    return value


def _alternate_titles(p: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, raw in enumerate(fields.items(p, "alternate_titles", "", required=False)):
        path = f"alternate_titles[{i}]."
        entry = fields.obj(
            raw, f"alternate_titles[{i}]", frozenset({"title", "type", "language", "non_roman"})
        )
        out.append(
            {
                "title": fields.text(entry, "title", path, max_chars=640),
                "type": fields.choice(entry, "type", path, TITLE_TYPES, "AT"),
                "language": _language(entry, "language", path),
                "non_roman": fields.boolean(entry, "non_roman", path),
            }
        )
    return out


def _registration_details(p: dict[str, Any]) -> dict[str, Any]:
    """The optional fields a CWR registration brings (kept only when given)."""
    out: dict[str, Any] = {}
    if "alternate_titles" in p:
        out["alternate_titles"] = _alternate_titles(p)
    if "language" in p:
        out["language"] = _language(p, "language", "")
    if "duration_s" in p:
        out["duration_s"] = fields.integer(p, "duration_s", "", 0, 86_400)
    if "category" in p:
        out["category"] = fields.text(p, "category", "", max_chars=3)
    if "submitter" in p:
        raw = fields.obj(p["submitter"], "submitter", frozenset({"sender", "work_number"}))
        out["submitter"] = {
            "sender": fields.text(raw, "sender", "submitter.", max_chars=64),
            "work_number": fields.text(raw, "work_number", "submitter.", max_chars=64),
        }
    if "original" in p:
        raw = fields.obj(p["original"], "original", frozenset({"title", "iswc"}))
        out["original"] = {
            "title": fields.text(raw, "title", "original."),
            "iswc": fields.code(raw, "iswc", "iswc", "original.", required=False),
        }
    if "performers" in p:
        performers = []
        for i, raw in enumerate(fields.items(p, "performers", "")):
            entry = fields.obj(raw, f"performers[{i}]", frozenset({"name", "ipi"}))
            performers.append(
                {
                    "name": fields.text(entry, "name", f"performers[{i}]."),
                    "ipi": fields.code(entry, "ipi", "ipi", f"performers[{i}].", required=False),
                }
            )
        out["performers"] = performers
    if "origin" in p:
        raw = fields.obj(p["origin"], "origin", ORIGIN_FIELDS)
        out["origin"] = {
            name: fields.text(raw, name, "origin.", max_chars=128) for name in sorted(raw)
        }
    return out


def check_register_work(p: dict[str, Any]) -> dict[str, Any]:
    from kledger.node.registry.shares import PUBLISHER_ROLES, WRITER_ROLES

    fields.obj(
        p,
        "payload",
        frozenset(
            {
                "work_id",
                "iswc",
                "titles",
                "version",
                "original_work_id",
                "creators",
                "publishers",
                "provenance",
                *OPTIONAL_WORK_FIELDS,
            }
        ),
    )
    titles = [
        fields.text({"t": t}, "t", f"titles[{i}]")
        for i, t in enumerate(fields.items(p, "titles", ""))
    ]
    version = fields.choice(p, "version", "", frozenset({"original", "modified"}), "original")
    provenance = check_provenance(p.get("provenance"))
    creators = _parties(
        p, "creators", WRITER_ROLES, required=provenance["creation_type"] != "ai_generated"
    )
    details = _registration_details(p)
    out = {
        "work_id": fields.token(p, "work_id"),
        "iswc": fields.code(p, "iswc", "iswc", required=False),
        "titles": titles,
        "version": version,
        # a modified work names its original: a registered work, or (CWR VER) its title
        "original_work_id": fields.token(
            p, "original_work_id", required=version == "modified" and "original" not in details
        ),
        "creators": creators,
        "publishers": _parties(p, "publishers", PUBLISHER_ROLES, required=False),
        "provenance": provenance,
        **details,
    }
    return out


def apply_register_work(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    if st.has(state.work_key(p["work_id"])):
        raise exists(f"work {p['work_id']} is already registered", "payload.work_id")
    if p["iswc"] and st.has(state.code_key("iswc", p["iswc"])):
        raise exists(f"ISWC {p['iswc']} is already registered", "payload.iswc")
    _require_named(st, p)
    record = {
        **p,
        "registered_by": env.signer.org,
        "height": env.ctx.height,
        "performance_statement": "",
    }
    st.put(state.work_key(p["work_id"]), record)
    if p["iswc"]:
        st.put(state.code_key("iswc", p["iswc"]), {"kind": "work", "id": p["work_id"]})
    return {"work_id": p["work_id"]}


def _require_named(st: TxState, p: dict[str, Any]) -> None:
    """The original of a modified version and every identified party are registered."""
    if p["original_work_id"] and not st.has(state.work_key(p["original_work_id"])):
        raise precondition(
            f"original work {p['original_work_id']} is not registered", "payload.original_work_id"
        )
    for name in ("creators", "publishers"):
        for i, entry in enumerate(p[name]):
            if not entry.get("unknown"):
                require_party_registered(st, entry["party_id"], f"payload.{name}[{i}].party_id")


# -- ReviseWork ------------------------------------------------------------------------------

WORK_CONTENT = ("iswc", "titles", "version", "original_work_id", "creators", "publishers",
                "provenance", *("alternate_titles", "language", "duration_s", "category",
                                "submitter", "original", "performers", "origin"))  # fmt: skip


def check_revise_work(p: dict[str, Any]) -> dict[str, Any]:
    return check_register_work(p)


def apply_revise_work(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    """A new version of a work (CWR REV: the whole registration again), the earlier versions
    kept in `revisions`; a work not yet in the ledger is registered as its first version, as a
    REV carries everything an NWR does. Only the registering org revises."""
    key = state.work_key(p["work_id"])
    record = st.get(key)
    if record is None:
        output = apply_register_work(st, env, p)
        return {**output, "revision": 1}
    if record["registered_by"] != env.signer.org:
        raise denied(f"only the registering org ({record['registered_by']}) revises the work")
    current = {name: record.get(name) for name in WORK_CONTENT if name in record}
    revised = {name: p[name] for name in WORK_CONTENT if name in p}
    if current == revised:
        raise exists(
            f"identical to revision {record.get('revision', 1)} of {p['work_id']}", "payload"
        )
    revisions = record.get("revisions", [])
    if len(revisions) >= MAX_WORK_REVISIONS:
        raise Refused(
            Status.RESOURCE_EXHAUSTED,
            f"work already has {MAX_WORK_REVISIONS} revisions (MAX_WORK_REVISIONS)",
            "payload.work_id",
        )
    if p["iswc"] != record["iswc"]:
        if p["iswc"] and st.has(state.code_key("iswc", p["iswc"])):
            raise exists(f"ISWC {p['iswc']} is already registered", "payload.iswc")
        if record["iswc"]:
            st.delete(state.code_key("iswc", record["iswc"]))
        if p["iswc"]:
            st.put(state.code_key("iswc", p["iswc"]), {"kind": "work", "id": p["work_id"]})
    _require_named(st, p)
    revision = record.get("revision", 1) + 1
    earlier = {**current, "revision": revision - 1, "height": record["height"]}
    st.put(
        key,
        {
            **revised,
            "work_id": p["work_id"],
            "registered_by": record["registered_by"],
            "height": env.ctx.height,
            "performance_statement": record["performance_statement"],
            "revision": revision,
            "revisions": [*revisions, earlier],
        },
    )
    return {"work_id": p["work_id"], "revision": revision}


# -- RegisterRecording -----------------------------------------------------------------------


def check_register_recording(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p,
        "payload",
        frozenset(
            {
                "isrc",
                "title",
                "duration_s",
                "main_artists",
                "producers",
                "performers",
                "works",
                "ucis",
                "cids",
                "provenance",
            }
        ),
    )
    performers = []
    for i, raw in enumerate(fields.items(p, "performers", "", required=False)):
        entry = fields.obj(
            raw, f"performers[{i}]", frozenset({"party_id", "featured", "instrument"})
        )
        performers.append(
            {
                "party_id": fields.token(entry, "party_id", f"performers[{i}]."),
                "featured": fields.boolean(entry, "featured", f"performers[{i}]."),
                "instrument": fields.text(
                    entry, "instrument", f"performers[{i}].", required=False, max_chars=64
                ),
            }
        )
    provenance = p.get("provenance")
    return {
        "isrc": fields.code(p, "isrc", "isrc"),
        "title": fields.text(p, "title", ""),
        "duration_s": fields.integer(p, "duration_s", "", 0, 86_400, default=0),
        "main_artists": [
            fields.text({"a": a}, "a", f"main_artists[{i}]")
            for i, a in enumerate(fields.items(p, "main_artists", "", required=False))
        ],
        "producers": [
            fields.token({"p": x}, "p", f"producers[{i}]")
            for i, x in enumerate(fields.items(p, "producers", "", required=False))
        ],
        "performers": performers,
        "works": sorted(
            {
                fields.token({"w": w}, "w", f"works[{i}]")
                for i, w in enumerate(fields.items(p, "works", "", required=False))
            }
        ),
        "ucis": sorted(
            {
                fields.code({"u": u}, "u", "uci", f"ucis[{i}]")
                for i, u in enumerate(fields.items(p, "ucis", "", required=False))
            }
        ),
        "cids": sorted(
            {
                fields.code({"c": c}, "c", "cid", f"cids[{i}]")
                for i, c in enumerate(fields.items(p, "cids", "", required=False))
            }
        ),
        "provenance": check_provenance(provenance) if provenance is not None else None,
    }


def apply_register_recording(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    isrc = p["isrc"]
    if st.has(state.recording_key(isrc)):
        raise exists(f"ISRC {isrc} is already registered", "payload.isrc")
    for i, party in enumerate(p["producers"]):
        require_party_registered(st, party, f"payload.producers[{i}]")
    for i, performer in enumerate(p["performers"]):
        require_party_registered(st, performer["party_id"], f"payload.performers[{i}].party_id")
    for i, work_id in enumerate(p["works"]):
        if not st.has(state.work_key(work_id)):
            raise precondition(f"work {work_id} is not registered", f"payload.works[{i}]")
    record = {
        **p,
        "registered_by": env.signer.org,
        "height": env.ctx.height,
        "performance_statement": "",
    }
    st.put(state.recording_key(isrc), record)
    st.put(state.code_key("isrc", isrc), {"kind": "recording", "id": isrc})
    created = []
    for work_id in p["works"]:
        created.append(links.assert_link(st, env, ("work", work_id), ("isrc", isrc)))
    for uci in p["ucis"]:
        created.append(links.assert_link(st, env, ("isrc", isrc), ("uci", uci)))
    for cid in p["cids"]:
        created.append(links.assert_link(st, env, ("isrc", isrc), ("cid", cid)))
    return {"isrc": isrc, "links": created}


# -- DeclareProvenance -----------------------------------------------------------------------


def check_declare_provenance(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"subject", "provenance", "performance_statement"}))
    provenance = p.get("provenance")
    out = {
        "subject": check_subject(p),
        "provenance": check_provenance(provenance) if provenance is not None else None,
        "performance_statement": fields.text(p, "performance_statement", "", required=False),
    }
    if out["provenance"] is None and not out["performance_statement"]:
        raise invalid("give provenance or performance_statement", "payload")
    return out


def apply_declare_provenance(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    subject = p["subject"]
    record = subject_record(st, subject)
    registrar = record["registered_by"] == env.signer.org
    if p["provenance"] is not None:
        if not registrar:
            raise denied(
                f"only the registering org ({record['registered_by']}) declares provenance"
            )
        if (
            subject["kind"] == "work"
            and p["provenance"]["creation_type"] == "ai_generated"
            and claim_orgs(st, subject, WORK_RIGHTS)
        ):
            raise precondition(
                "an ai_generated work holds no authorship shares; shares exist",
                "payload.provenance.creation_type",
            )
        record["provenance"] = p["provenance"]
    if p["performance_statement"]:
        if not (registrar or PERFORMER_CMO in env.signer.roles):
            raise denied(
                "a performance statement comes from the registering org or a PERFORMER_CMO"
            )
        record["performance_statement"] = p["performance_statement"]
    key = (
        state.work_key(subject["id"])
        if subject["kind"] == "work"
        else state.recording_key(subject["id"])
    )
    st.put(key, record)
    return {"subject": subject}
