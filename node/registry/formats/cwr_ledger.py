"""A CWR work transaction as the ledger's transactions (docs/registry.md, bulk formats).

    plan_work(tx, header, org, origin) -> [(tx type, payload), ...]

For one NWR / REV / ISW, in the order they must commit:
    RegisterParty  each identified party (publishers and writers, controlled or not)
    RegisterWork   (NWR) or ReviseWork (REV, ISW: a new version, or the work when it is new)
    SetShares      per right (PR, MR, SR) and per territory where the shares differ
    LinkIdentifiers work <-> ISRC for each REC with an ISRC

Ids: a party with an IPI name number is `IPI-<11 digits>` (the same person in every file and
from every sender); without one it is `<sender>-<interested party #>`; a party the file does not
identify (OPU/OWR with the unknown indicator, no name, an all-zero IPI) gets no id: its share is
an `unknown` entry, paid to nobody (undistributed). A work is `<sender>-<submitter work #>`.
The sender is the HDR's (a society's name, or type and number: PB199).

Shares: ownership from SPU/OPU/SWR/OWR; collection per country from the territory records
(SPT/OPT/SWT/OWT, inclusion and exclusion in order, TIS codes expanded by territories.py); a
party without territory records collects its ownership (non-controlled parties in 2.1).
Where the declared collection leaves part of a right uncollected, that part is an unknown
original publisher's (undistributed), so each share set totals 100 % as the ledger requires.
The world is cut into the regions where the collection differs; regions with the same shares
make one SetShares (`territories`, and `excluded_territories` for most of the world).
"""

from __future__ import annotations

import re
from typing import Any

from kledger.node.registry.formats import cwr, territories
from kledger.node.registry.formats.cwr import FileHeader, Party, Transaction, Work

_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._:+-]")
MAX_ID = 64
Planned = tuple[str, dict[str, Any]]


def token(text: str) -> str:
    """An id token from CWR text: blanks and other characters become '_'."""
    cleaned = _NOT_TOKEN.sub("_", text.strip())
    if cleaned and not cleaned[0].isalnum():
        cleaned = "X" + cleaned
    return cleaned[:MAX_ID]


def work_id(header: FileHeader, work: Work) -> str:
    return token(f"{header.sender}-{work.submitter_work_number}")


def party_id(header: FileHeader, party: Party) -> str:
    """'' for a party the file does not identify."""
    if party.unknown:
        return ""
    if party.ipi_name:
        return f"IPI-{party.ipi_name}"
    if party.ip_number:
        return token(f"{header.sender}-{party.ip_number}")
    return ""


def _role(party: Party) -> str:
    if party.role:
        return party.role
    return "E" if party.kind == "publisher" else "CA"


def register_party(header: FileHeader, party: Party, org: str) -> dict[str, Any] | None:
    pid = party_id(header, party)
    if not pid:
        return None
    name: dict[str, Any] = {"name": party.display_name or pid}
    if party.ipi_name:
        name["ipi"] = party.ipi_name
    if party.ipi_base:
        name["ipi_base"] = party.ipi_base
    names = [name]
    if party.non_roman_name:
        names.append({"name": party.non_roman_name})
    memberships: list[dict[str, Any]] = [{"society": org}]
    for right, society in sorted(party.societies.items()):
        if society and society != org:
            memberships.append({"society": token(society), "right": right})
    return {
        "party_id": pid,
        "kind": "company" if party.kind == "publisher" else "person",
        "names": names,
        "memberships": memberships,
    }


def _work_payload(header: FileHeader, tx: Transaction, work: Work, origin: str) -> dict[str, Any]:
    creators: list[dict[str, Any]] = []
    publishers: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for party in work.parties:
        pid = party_id(header, party)
        entry: dict[str, Any] = {"role": _role(party)}
        if pid:
            if (pid, party.kind) in seen:
                continue
            seen.add((pid, party.kind))
            entry["party_id"] = pid
        else:
            entry["unknown"] = True
        if party.kind == "writer":
            if party.chains:
                entry["chains"] = sorted(set(party.chains))
            creators.append(entry)
        else:
            entry["chain"] = party.chain
            publishers.append(entry)
    payload: dict[str, Any] = {
        "work_id": work_id(header, work),
        "titles": [work.title],
        "creators": creators,
        "provenance": {
            "creation_type": "human",
            "human_contribution": f"written by the writers {header.sender} registers"[:512],
            "warranty_ref": f"CWR {header.sender} {work.submitter_work_number}"[:128],
        },
        "submitter": {"sender": header.sender, "work_number": work.submitter_work_number},
    }
    if publishers:
        payload["publishers"] = publishers
    if work.iswc:
        payload["iswc"] = work.iswc
    if work.language:
        payload["language"] = work.language
    if work.duration_s:
        payload["duration_s"] = work.duration_s
    if work.distribution_category:
        payload["category"] = work.distribution_category
    if work.alternate_titles:
        payload["alternate_titles"] = [
            {
                "title": t["title"],
                "type": t["type"],
                **({"language": t["language"]} if t["language"] else {}),
                **({"non_roman": True} if t["non_roman"] else {}),
            }
            for t in work.alternate_titles
        ]
    if work.version_type == "MOD":
        payload["version"] = "modified"
        payload["original"] = {
            "title": work.original.get("title") or work.title,
            **({"iswc": work.original["iswc"]} if work.original.get("iswc") else {}),
        }
    if work.performers:
        payload["performers"] = [
            {"name": p["name"], **({"ipi": p["ipi"]} if p["ipi"] else {})} for p in work.performers
        ]
    if work.origin:
        payload["origin"] = dict(work.origin)
    return payload


def _entries(
    header: FileHeader, work: Work, right: str, country: str
) -> list[dict[str, Any]] | None:
    """The share entries of one right in one country, or None when nobody owns or collects."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    unknown: list[dict[str, Any]] = []
    for party in work.parties:
        collection = cwr.collection_in(party, country)[right]
        ownership = party.ownership[right]
        if party.kind == "publisher" and _role(party) not in cwr.OWNING_PUBLISHER_TYPES:
            ownership = 0
        if not ownership and not collection and party.kind == "publisher":
            continue
        pid = party_id(header, party)
        if not pid:
            unknown.append(
                {
                    "unknown": True,
                    "kind": party.kind,
                    "role": _role(party),
                    "ownership": ownership,
                    "collection": collection,
                }
            )
            continue
        key = (pid, party.kind)
        if key in merged:
            merged[key]["ownership"] += ownership
            merged[key]["collection"] += collection
        else:
            merged[key] = {
                "party_id": pid,
                "kind": party.kind,
                "role": _role(party),
                "ownership": ownership,
                "collection": collection,
            }
    entries = [*merged.values(), *unknown]
    if not any(e["ownership"] or e["collection"] for e in entries):
        return None
    collected = sum(e["collection"] for e in entries)
    if collected and collected < cwr.FULL - cwr.TOLERANCE:
        entries.append(
            {
                "unknown": True,
                "kind": "publisher",
                "role": "E",
                "ownership": 0,
                "collection": cwr.FULL - collected,
            }
        )
    for entry in entries:  # a party the ledger sees once per kind: keep the CWR caps
        entry["ownership"] = min(entry["ownership"], cwr.FULL)
        entry["collection"] = min(entry["collection"], cwr.FULL)
    return entries


def share_sets(header: FileHeader, work: Work, wid: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pieces = cwr.regions(work) or [territories.world()]
    for right in cwr.RIGHTS:
        groups: dict[str, tuple[list[dict[str, Any]], set[str]]] = {}
        for region in pieces:
            entries = _entries(header, work, right, min(region))
            if entries is None:
                continue
            signature = repr(entries)
            groups.setdefault(signature, (entries, set()))[1].update(region)
        for entries, countries in groups.values():
            included, excluded = territories.as_ledger(frozenset(countries))
            payload: dict[str, Any] = {
                "subject": {"kind": "work", "id": wid},
                "right": right,
                "territories": included,
                "shares": entries,
            }
            if excluded:
                payload["excluded_territories"] = excluded
            out.append(payload)
    return out


def plan_work(tx: Transaction, header: FileHeader, org: str, origin: str) -> list[Planned]:
    """The ledger transactions of one accepted CWR work transaction."""
    work = tx.work
    assert work is not None and not tx.rejected
    planned: list[Planned] = []
    seen: set[str] = set()
    for party in work.parties:
        payload = register_party(header, party, org)
        if payload is not None and payload["party_id"] not in seen:
            seen.add(payload["party_id"])
            planned.append(("RegisterParty", payload))
    wid = work_id(header, work)
    kind = "RegisterWork" if tx.type == "NWR" else "ReviseWork"
    planned.append((kind, _work_payload(header, tx, work, origin)))
    planned += [("SetShares", payload) for payload in share_sets(header, work, wid)]
    for isrc in sorted({r["isrc"] for r in work.recordings if r["isrc"]}):
        planned.append(
            (
                "LinkIdentifiers",
                {"from": {"kind": "work", "value": wid}, "to": {"kind": "isrc", "value": isrc}},
            )
        )
    return planned
