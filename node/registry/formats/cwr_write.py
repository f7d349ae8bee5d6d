"""Writing CWR 2.2: a society's acknowledgement of an imported file (ACK), and the registry's
works as a registration file (export). Every line written is read back by cwr.py.

    AckWriter(receiver_code, receiver_name, original_header, processing_date, created)
        .transaction(...) per original transaction, then .lines() / .trailer()
    registration_lines(works, sender..., created) -> lines of a CWR 2.2 NWR file

Rules kept here: fields are written at the positions of cwr_layout.py, text upper-cased ASCII
where the field is Roman (non-Roman text goes only into NAT/NPN/NWN records, UTF-8, and the HDR
names the character set), numbers zero-padded, shares as N999v99; counts in GRT and TRL are the
records actually written.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kledger.node.registry.formats import cwr_layout as layout
from kledger.node.registry.formats import territories
from kledger.node.registry.formats.cwr import FileHeader
from kledger.node.registry.formats.cwr_layout import Field
from kledger.node.registry.formats.problems import Refusal
from kledger.node.registry.formats.societies import CODE_OF

SOFTWARE = "kledger"
SOFTWARE_VERSION = "0.1.0"
ACK_STATUSES = frozenset({"AC", "AS", "CO", "DU", "NP", "RA", "RC", "RJ"})


def roman(text: str) -> str:
    """ASCII upper case for a Roman field: accents dropped, other characters become '?'."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return "".join(c if " " <= c <= "~" else "?" for c in ascii_text).upper()


def is_roman(text: str) -> bool:
    return all(
        " " <= c <= "~" or unicodedata.combining(c) for c in unicodedata.normalize("NFKD", text)
    )


def record(fields: tuple[Field, ...], values: dict[str, Any], prefix: str = "") -> str:
    """One fixed-width record: `prefix` (the 19-character record prefix, or the record type of a
    control record) then each field at its position."""
    length = layout.record_length(fields)
    chars = list(prefix.ljust(length)[:length]) if prefix else [" "] * length
    for spec in fields:
        value = values.get(spec.name)
        if value is None or value == "":
            text = ""
        elif spec.kind in ("N", "S"):
            text = f"{int(value):0{spec.size}d}"[-spec.size :]
        else:
            text = str(value)
        if spec.kind in ("N", "S") and text == "" and spec.required == "M":
            text = "0" * spec.size
        chars[spec.start - 1 : spec.end] = list(text.ljust(spec.size)[: spec.size])
    return "".join(chars).rstrip()


def prefix(record_type: str, transaction: int, sequence: int) -> str:
    return f"{record_type}{transaction:08d}{sequence:08d}"


def hdr(sender_type: str, sender_id: str, sender_name: str, created: str, charset: str = "") -> str:
    """`created` is YYYYMMDDHHMMSS."""
    return record(
        layout.HDR,
        {
            "record_type": "HDR",
            "sender_type": sender_type,
            "sender_id": sender_id.zfill(9),
            "sender_name": roman(sender_name),
            "edi_version": "01.10",
            "creation_date": created[:8],
            "creation_time": created[8:14],
            "transmission_date": created[:8],
            "character_set": charset,
            "version": "2.2",
            "revision": 2,
            "software_package": SOFTWARE,
            "software_version": SOFTWARE_VERSION,
        },
    )


def grh(transaction_type: str, group_id: int) -> str:
    return record(
        layout.GRH,
        {
            "record_type": "GRH",
            "transaction_type": transaction_type,
            "group_id": group_id,
            "version_number": "02.20",
        },
    )


def grt(group_id: int, transactions: int, records: int) -> str:
    return record(
        layout.GRT,
        {
            "record_type": "GRT",
            "group_id": group_id,
            "transaction_count": transactions,
            "record_count": records,
        },
    )


def trl(groups: int, transactions: int, records: int) -> str:
    return record(
        layout.TRL,
        {
            "record_type": "TRL",
            "group_count": groups,
            "transaction_count": transactions,
            "record_count": records,
        },
    )


# -- acknowledgements ------------------------------------------------------------------------


@dataclass(slots=True)
class AckWriter:
    """An ACK file for one imported file, written as its transactions are decided: one ACK
    record per original transaction (or one for the file when the HDR/TRL rejects it), MSG
    records for each refusal, and the ledger's work id as the recipient creation #."""

    receiver_type: str  # "SO"
    receiver_code: str  # society code of the importing org
    receiver_name: str
    original: FileHeader | None
    processing_date: str  # YYYYMMDD
    created: str  # YYYYMMDDHHMMSS
    transactions: int = 0
    records: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def head(self) -> list[str]:
        self.records = 2
        return [
            hdr(self.receiver_type, self.receiver_code, self.receiver_name, self.created),
            grh("ACK", 1),
        ]

    def transaction(
        self,
        *,
        group_id: int,
        sequence: int,
        transaction_type: str,
        title: str,
        submitter_number: str,
        recipient_number: str,
        status: str,
        problems: list[Refusal],
        first_line: int,
    ) -> list[str]:
        assert status in ACK_STATUSES, status
        number = self.transactions
        self.transactions += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        original = self.original
        lines = [
            record(
                layout.ACK,
                {
                    "creation_date": original.creation_date if original else self.processing_date,
                    "creation_time": original.creation_time if original else "000000",
                    "original_group_id": group_id,
                    "original_transaction_sequence": sequence,
                    "original_transaction_type": transaction_type,
                    "creation_title": roman(title)[:60],
                    "submitter_creation_number": roman(submitter_number)[:20],
                    "recipient_creation_number": recipient_number
                    if len(recipient_number) <= 20
                    else "",
                    "processing_date": self.processing_date,
                    "transaction_status": status,
                },
                prefix("ACK", number, 0),
            )
        ]
        for index, problem in enumerate(problems[:9_999], start=1):
            lines.append(
                record(
                    layout.MSG,
                    {
                        "message_type": problem.level,
                        "original_record_sequence": max(0, problem.line - first_line),
                        "record_type": problem.record[:3] or transaction_type,
                        "message_level": problem.level,
                        "validation_number": "000",
                        "message_text": roman(
                            f"{problem.field}: {problem.reason}"
                            if problem.field
                            else problem.reason
                        )[:150],
                    },
                    prefix("MSG", number, index),
                )
            )
        self.records += len(lines)
        return lines

    def tail(self) -> list[str]:
        group_records = self.records  # HDR is not the group's, GRT is
        self.records += 2
        return [
            grt(1, self.transactions, group_records - 1 + 1),
            trl(1, self.transactions, self.records),
        ]


# -- registrations (export) ------------------------------------------------------------------


def _share(value: int) -> int:
    return max(0, min(int(value), 10_000))


def sender_fields(sender: str) -> tuple[str, str]:
    """(HDR sender type, sender id) of a sender name as cwr.FileHeader.sender makes it."""
    if sender.startswith("IPI") and sender[3:].isdigit() and len(sender) == 14:
        return sender[3:5], sender[5:]
    if sender[:2] in ("PB", "AA", "WR", "SO") and sender[2:].isdigit():
        return sender[:2], sender[2:].zfill(9)
    code = CODE_OF.get(sender)
    if code is not None:
        return "SO", code.zfill(9)
    return "PB", "0".zfill(9)


def registration_lines(
    works: Iterable[dict[str, Any]],
    *,
    sender: str,
    sender_name: str,
    created: str,
    charset: str = "UTF-8",
) -> Iterator[str]:
    """A CWR 2.2 file of NWR transactions, one per work: {work, parties: {id: party record},
    shares: {right: claim}, isrcs: [...]}, as `kledger export cwr` reads them from the ledger.
    Parties: each share entry becomes an SPU (publisher) or SWR (writer) with its IPI name and
    base numbers and an SPT/SWT per territory (inclusions, then exclusions); unknown parties
    become OPU/OWR with the unknown indicator."""
    sender_type, sender_id = sender_fields(sender)
    yield hdr(sender_type, sender_id, sender_name, created, charset)
    yield grh("NWR", 1)
    records = 2  # GRH + GRT counted for the group below
    count = 0
    for sequence, item in enumerate(works):
        lines = list(_work_lines(item, sequence, sender))
        records += len(lines)
        count += 1
        yield from lines
    yield grt(1, count, records)
    yield trl(1, count, records + 2)


def _work_lines(item: dict[str, Any], sequence: int, sender: str) -> Iterator[str]:
    work = item["work"]
    parties = item.get("parties", {})
    shares = _shares_by_party(item.get("shares", {}))
    number = 0

    def next_prefix(record_type: str) -> str:
        nonlocal number
        number += 1
        return prefix(record_type, sequence, number)

    title = work["titles"][0]
    submitter = work.get("submitter", {}).get("work_number") or work["work_id"]
    modified = work.get("version") == "modified"
    yield record(
        layout.WORK,
        {
            "title": roman(title)[:60],
            "language": work.get("language", ""),
            "submitter_work_number": submitter[:14],
            "iswc": work.get("iswc", ""),
            "distribution_category": work.get("category") or "POP",
            "duration": _hhmmss(work.get("duration_s", 0)),
            "recorded_indicator": "U",
            "version_type": "MOD" if modified else "ORI",
            "music_arrangement": "UNS" if modified else "",
            "lyric_adaptation": "UNS" if modified else "",
        },
        prefix("NWR", sequence, 0),
    )
    ip_numbers: dict[str, str] = {}
    used: set[str] = set()
    unknown_seen = {"publisher": 0, "writer": 0}

    def ip_of(party_id: str, letter: str, index: int) -> str:
        """The submitter's own number back when the id was made of it (<sender>-<ip>)."""
        own = party_id.removeprefix(f"{sender}-") if party_id.startswith(f"{sender}-") else ""
        ip = own if own and len(own) <= 9 and own not in used else f"{letter}{index:06d}"
        used.add(ip)
        return ip

    def shares_of(kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("unknown"):
            unknown_seen[kind] += 1
            return shares.get((f"?{kind}", unknown_seen[kind]), {})
        return shares.get((entry["party_id"], kind), {})

    publishers = work.get("publishers", [])
    for index, entry in enumerate(publishers, start=1):
        found = shares_of("publisher", entry)
        controlled = not entry.get("unknown")
        party = parties.get(entry.get("party_id", ""), {})
        name = party.get("names", [{}])[0] if party else {}
        ip = ip_of(entry["party_id"], "P", index) if controlled else ""
        if controlled:
            ip_numbers[entry["party_id"]] = ip
        yield record(
            layout.PUBLISHER,
            {
                "publisher_sequence": entry.get("chain") or index,
                "ip_number": ip,
                "name": roman(name.get("name", ""))[:45] if controlled else "",
                "unknown_indicator": "" if controlled else "Y",
                "publisher_type": entry["role"],
                "ipi_name_number": name.get("ipi", ""),
                "ipi_base_number": name.get("ipi_base", ""),
                **_ownership(found, _societies(party)),
            },
            next_prefix("SPU" if controlled else "OPU"),
        )
        if controlled:
            yield from _territory_lines(layout.PUBLISHER_TERRITORY, "SPT", ip, found, next_prefix)
            for other in party.get("names", [])[1:2]:
                if not is_roman(other["name"]):
                    yield record(
                        layout.NPN,
                        {
                            "publisher_sequence": entry.get("chain") or index,
                            "ip_number": ip,
                            "name": other["name"],
                        },
                        next_prefix("NPN"),
                    )
    for index, entry in enumerate(work.get("creators", []), start=1):
        found = shares_of("writer", entry)
        controlled = not entry.get("unknown")
        party = parties.get(entry.get("party_id", ""), {})
        name = party.get("names", [{}])[0] if party else {}
        last, first = _split_name(name.get("name", "")) if controlled else ("", "")
        ip = ip_of(entry["party_id"], "W", index) if controlled else ""
        yield record(
            layout.WRITER,
            {
                "ip_number": ip,
                "last_name": roman(last)[:45],
                "first_name": roman(first)[:30],
                "unknown_indicator": "" if controlled else "Y",
                "designation": entry["role"],
                "ipi_name_number": name.get("ipi", ""),
                "ipi_base_number": name.get("ipi_base", ""),
                **_ownership(found, _societies(party)),
            },
            next_prefix("SWR" if controlled else "OWR"),
        )
        if not controlled:
            continue
        yield from _territory_lines(layout.WRITER_TERRITORY, "SWT", ip, found, next_prefix)
        for other in party.get("names", [])[1:2]:
            if not is_roman(other["name"]):
                yield record(
                    layout.NWN, {"ip_number": ip, "last_name": other["name"]}, next_prefix("NWN")
                )
        for chain in entry.get("chains", []):
            owner = next(
                (
                    p
                    for p in publishers
                    if p.get("chain") == chain and p.get("party_id") in ip_numbers
                ),
                None,
            )
            if owner is None:
                continue
            owner_name = parties.get(owner["party_id"], {}).get("names", [{}])[0].get("name", "")
            yield record(
                layout.PWR,
                {
                    "publisher_ip_number": ip_numbers[owner["party_id"]],
                    "publisher_name": roman(owner_name)[:45],
                    "writer_ip_number": ip,
                    "publisher_sequence": chain,
                },
                next_prefix("PWR"),
            )
    for alternate in work.get("alternate_titles", []):
        if alternate.get("non_roman") or not is_roman(alternate["title"]):
            yield record(
                layout.NAT,
                {
                    "title": alternate["title"],
                    "title_type": alternate["type"],
                    "language": alternate.get("language", ""),
                },
                next_prefix("NAT"),
            )
        else:
            yield record(
                layout.ALT,
                {
                    "title": roman(alternate["title"])[:60],
                    "title_type": alternate["type"],
                    "language": alternate.get("language", ""),
                },
                next_prefix("ALT"),
            )
    if modified:
        original = work.get("original", {})
        yield record(
            layout.VER,
            {"title": roman(original.get("title") or title)[:60], "iswc": original.get("iswc", "")},
            next_prefix("VER"),
        )
    for performer in work.get("performers", []):
        last, first = _split_name(performer["name"])
        yield record(
            layout.PER,
            {
                "last_name": roman(last)[:45],
                "first_name": roman(first)[:30],
                "ipi_name_number": performer.get("ipi", ""),
            },
            next_prefix("PER"),
        )
    for isrc in item.get("isrcs", []):
        yield record(layout.REC, {"isrc": isrc, "recording_format": "A"}, next_prefix("REC"))
    origin = work.get("origin", {})
    if origin.get("intended_purpose"):
        yield record(layout.ORN, origin, next_prefix("ORN"))


def _societies(party: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for membership in party.get("memberships", []):
        code = society_code_of(membership["society"])
        if code and membership.get("right") in ("PR", "MR", "SR"):
            out[membership["right"]] = code
    return out


def society_code_of(name: str) -> str:
    if name.startswith("CISAC-"):
        return name.removeprefix("CISAC-")[:3]
    return CODE_OF.get(name, "")


def _hhmmss(seconds: int) -> str:
    if not seconds:
        return ""
    return f"{seconds // 3600:02d}{seconds % 3600 // 60:02d}{seconds % 60:02d}"


def _split_name(name: str) -> tuple[str, str]:
    """(last, first): the ledger keeps one display name "First Last"; CWR wants the last name
    first. A name in one word is all last name."""
    parts = name.split()
    if len(parts) < 2:
        return name, ""
    return parts[-1], " ".join(parts[:-1])


def _ownership(found: dict[str, Any], societies: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for right in ("PR", "MR", "SR"):
        out[f"{right.lower()}_ownership_share"] = _share(found.get("ownership", {}).get(right, 0))
        if right in societies:
            out[f"{right.lower()}_society"] = societies[right]
    return out


def _shares_by_party(claims: dict[str, Any]) -> dict[tuple[str, Any], dict[str, Any]]:
    """(party id, kind) -> {ownership: {right: share}, territories: {(incl, excl): {right:
    collection}}} over the rights' claims; unknown parties by ("?kind", n), the n-th unknown
    entry of that kind in a claim."""
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    for right in ("PR", "MR", "SR"):
        for claim in claims.get(right, []):
            counts = {"publisher": 0, "writer": 0}
            where = (tuple(claim["territories"]), tuple(claim.get("excluded_territories", [])))
            for entry in claim["entries"]:
                if entry.get("unknown"):
                    counts[entry["kind"]] += 1
                    key: tuple[str, Any] = (f"?{entry['kind']}", counts[entry["kind"]])
                else:
                    key = (entry["party_id"], entry["kind"])
                item = out.setdefault(key, {"ownership": {}, "territories": {}})
                item["ownership"].setdefault(right, entry["ownership"])
                item["territories"].setdefault(where, {})[right] = entry["collection"]
    return out


def _territory_lines(
    fields: tuple[Field, ...], record_type: str, ip: str, found: dict[str, Any], next_prefix: Any
) -> Iterator[str]:
    """Territory records in an order that reads back the same: the world and its exclusions
    first, then single countries (an inclusion after an exclusion puts the country back)."""
    sequence = 0
    tis_of = territories.tis_of_country()
    ordered = sorted(
        found.get("territories", {}).items(), key=lambda item: "Worldwide" not in item[0][0]
    )
    for (included, excluded), collection in ordered:
        codes = (
            ["2136"] if "Worldwide" in included else [tis_of[c] for c in included if c in tis_of]
        )
        for code in codes:
            sequence += 1
            yield record(
                fields,
                {
                    "ip_number": ip,
                    "pr_collection_share": _share(collection.get("PR", 0)),
                    "mr_collection_share": _share(collection.get("MR", 0)),
                    "sr_collection_share": _share(collection.get("SR", 0)),
                    "inclusion_exclusion": "I",
                    "tis_code": code,
                    "shares_change": "N",
                    "sequence": sequence,
                },
                next_prefix(record_type),
            )
        for country in excluded:
            if country in tis_of:
                sequence += 1
                yield record(
                    fields,
                    {
                        "ip_number": ip,
                        "inclusion_exclusion": "E",
                        "tis_code": tis_of[country],
                        "shares_change": "N",
                        "sequence": sequence,
                    },
                    next_prefix(record_type),
                )
