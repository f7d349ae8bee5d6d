"""ShareSets and the CWR 2.2 share rules (docs/domain.md §4), and which shares are in effect.

A ShareSet is one org's claim on one right of one work or recording, for territories and a date
range. Shares are integers in 1/100 % (5000 = 50.00 %). A new claim by the same org on the same
subject and right supersedes its earlier ones (versioned; history kept). Claims of different orgs
coexist; when claims valid for the same territory and date total more than 100 % (per party the
largest claim), the later claim is flagged as an overclaim and opens a Dispute.

In effect at (territory, date, now):
- no overclaim open: each party's collection share is the largest any active claim gives it,
  normalized by their total;
- an overclaim open: parties that every claim gives the same share are paid it (the undisputed
  part); the rest of 100 % is held under the dispute until it is resolved or expires. An expired
  dispute drops the flagged claim (the earlier registration stands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import fields, state
from kledger.node.registry.state import StateReader

FULL = 10_000
TOLERANCE = 6  # CWR: totals within 100 % +/- 0.06 %
RIGHTS = frozenset({"PR", "MR", "SR", "NR_PRODUCER", "NR_PERFORMER"})
WORK_RIGHTS = frozenset({"PR", "MR", "SR"})
RECORDING_RIGHTS = frozenset({"NR_PRODUCER", "NR_PERFORMER"})
WRITER_ROLES = frozenset({"CA", "A", "C", "AR", "AD", "SR", "SA", "TR", "PA"})
PUBLISHER_ROLES = frozenset({"E", "AQ", "AM", "SE", "ES", "PA"})
OWNING_PUBLISHER_ROLES = frozenset({"E", "AQ"})
ORIGINAL_WRITER_ROLES = frozenset({"CA", "A", "C"})
ADAPTING_WRITER_ROLES = frozenset({"AR", "AD", "SR", "SA", "TR"})
MAX_CLAIM_VERSIONS = 64
MAX_ENTRIES = 100


@dataclass(frozen=True, slots=True)
class Split:
    """Who receives a pool: (recipient, weight) with recipients "party:<id>" or "held:<dispute>";
    each gets pool * weight / denominator."""

    weights: tuple[tuple[str, int], ...]
    denominator: int


def percent(share: int) -> str:
    """1/100 % units as text without float: 5003 -> "50.03"."""
    return f"{share // 100}.{share % 100:02d}"


def _near_full(total: int) -> bool:
    return total == 0 or abs(total - FULL) <= TOLERANCE


def check_entries(
    subject_kind: str, right: str, raw: list[Any], modified: bool
) -> list[dict[str, Any]]:
    """Validate the entries of a ShareSet against the CWR rules; returns normalized entries."""
    if len(raw) > MAX_ENTRIES:
        raise invalid(f"at most {MAX_ENTRIES} entries", "payload.shares")
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, item in enumerate(raw):
        path = f"shares[{index}]."
        entry = fields.obj(
            item,
            f"shares[{index}]",
            frozenset({"party_id", "kind", "role", "ownership", "collection", "share", "unknown"}),
        )
        unknown = subject_kind == "work" and fields.boolean(entry, "unknown", path)
        if unknown and "party_id" in entry:
            raise invalid("an unknown party has no party_id", f"payload.{path}party_id")
        party = "" if unknown else fields.token(entry, "party_id", path)
        if subject_kind == "recording":
            share = fields.integer(entry, "share", path, 0, FULL)
            normalized = {
                "party_id": party,
                "kind": "holder",
                "role": "",
                "ownership": share,
                "collection": share,
            }
        else:
            kind = fields.choice(entry, "kind", path, frozenset({"writer", "publisher"}))
            roles = WRITER_ROLES if kind == "writer" else PUBLISHER_ROLES
            role = fields.choice(entry, "role", path, roles)
            ownership = fields.integer(entry, "ownership", path, 0, FULL)
            collection = fields.integer(entry, "collection", path, 0, FULL, default=ownership)
            if kind == "publisher" and role not in OWNING_PUBLISHER_ROLES and ownership:
                raise invalid(
                    f"only publishers of role E or AQ hold ownership; {role} holds collection only",
                    f"payload.{path}ownership",
                )
            normalized = {
                "party_id": party,
                "kind": kind,
                "role": role,
                "ownership": ownership,
                "collection": collection,
            }
        if unknown:
            # A party the registration does not identify (CWR OPU/OWR unknown): its share is
            # counted in every total and paid to nobody (undistributed).
            normalized["unknown"] = True
        elif (party, normalized["kind"]) in seen:
            raise invalid(f"party {party} appears twice", f"payload.{path}party_id")
        seen.add((party, str(normalized["kind"])))
        entries.append(normalized)
    for measure in ("ownership", "collection"):
        total = sum(e[measure] for e in entries)
        if not _near_full(total):
            raise invalid(
                f"{measure} shares total {percent(total)} %, must be 100 % (+/- 0.06 %) or 0 %",
                "payload.shares",
            )
    if subject_kind == "work":
        writers = [e for e in entries if e["kind"] == "writer"]
        publishers = [e for e in entries if e["kind"] == "publisher"]
        if right == "PR":
            publisher_total = sum(e["ownership"] for e in publishers)
            writer_total = sum(e["ownership"] for e in writers)
            if publisher_total > FULL // 2:
                raise invalid(
                    f"publishers' PR ownership is {percent(publisher_total)} %, at most 50 %",
                    "payload.shares",
                )
            if writer_total and writer_total < FULL // 2:
                raise invalid(
                    f"writers' PR ownership is {percent(writer_total)} %, must be 0 or >= 50 %",
                    "payload.shares",
                )
        if not any(e["role"] in ORIGINAL_WRITER_ROLES for e in writers):
            raise invalid("at least one writer of role CA, A or C", "payload.shares")
        if modified and not any(e["role"] in ADAPTING_WRITER_ROLES for e in writers):
            raise invalid(
                "a modified version needs an AR, AD, SR, SA or TR writer", "payload.shares"
            )
    return entries


# Unknown parties' shares are summed under a key no party id can be (ids start with a letter or
# digit) and paid to the recipient "unknown", which a distribution keeps undistributed.
UNKNOWN = "?unknown"
UNKNOWN_RECIPIENT = "unknown"


def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    worldwide = "Worldwide"
    ta, tb = set(a["territories"]), set(b["territories"])
    xa, xb = set(a.get("excluded_territories", ())), set(b.get("excluded_territories", ()))
    if worldwide in ta and worldwide in tb:
        shared = True  # the world minus two short lists is never empty
    elif worldwide in ta:
        shared = bool(tb - xb - xa)
    elif worldwide in tb:
        shared = bool(ta - xa - xb)
    else:
        shared = bool((ta - xa) & (tb - xb))
    if not shared:
        return False
    return bool(a["valid_from"] <= b["valid_to"] and b["valid_from"] <= a["valid_to"])


def claimed(claim: dict[str, Any]) -> dict[str, int]:
    """A claim's collection per party; the unknown parties' shares summed under UNKNOWN."""
    out: dict[str, int] = {}
    for entry in claim["entries"]:
        if entry.get("unknown"):
            out[UNKNOWN] = out.get(UNKNOWN, 0) + entry["collection"]
        else:
            out[entry["party_id"]] = max(out.get(entry["party_id"], 0), entry["collection"])
    return out


def overclaim_total(claims: list[dict[str, Any]]) -> int:
    """Per party the largest claimed collection share, summed."""
    best: dict[str, int] = {}
    for claim in claims:
        for party, share in claimed(claim).items():
            best[party] = max(best.get(party, 0), share)
    return sum(best.values())


def conflicting_claims(record: dict[str, Any], new_claim: dict[str, Any]) -> list[dict[str, Any]]:
    """Active claims of other orgs that overlap the new claim and overclaim together with it."""
    others = [
        c
        for c in record["claims"]
        if c["status"] == "active" and c["org"] != new_claim["org"] and overlaps(c, new_claim)
    ]
    if others and overclaim_total([*others, new_claim]) > FULL + TOLERANCE:
        return others
    return []


def covers(claim: dict[str, Any], territory: str, date: str) -> bool:
    in_territory = "Worldwide" in claim["territories"] or territory in claim["territories"]
    if territory in claim.get("excluded_territories", ()):
        return False
    return in_territory and claim["valid_from"] <= date <= claim["valid_to"]


def dispute_open(dispute: dict[str, Any] | None, now_ms: int) -> bool:
    return dispute is not None and dispute["status"] == "open" and now_ms <= dispute["deadline_ms"]


def effective_split(
    reader: StateReader,
    kind: str,
    subject_id: str,
    right: str,
    *,
    territory: str,
    date: str,
    now_ms: int,
) -> Split | None:
    record = reader.get(state.shares_key(kind, subject_id, right))
    if record is None:
        return None
    in_effect: list[dict[str, Any]] = []
    open_disputes: list[str] = []
    for claim in record["claims"]:
        if claim["status"] != "active" or not covers(claim, territory, date):
            continue
        if claim["flagged"]:
            dispute = reader.get(state.dispute_key(claim["dispute_id"]))
            if not dispute_open(dispute, now_ms):
                continue  # expired without resolution: the earlier registration stands
            open_disputes.append(claim["dispute_id"])
        in_effect.append(claim)
    if not in_effect:
        return None
    if open_disputes:
        per_claim = [claimed(c) for c in in_effect]
        parties = sorted({party for c in per_claim for party in c})
        weights: list[tuple[str, int]] = []
        for party in parties:
            same = [c.get(party, 0) for c in per_claim]
            if len(set(same)) == 1 and same[0] > 0:
                weights.append((_recipient(party), same[0]))
        undisputed = sum(w for _, w in weights)
        denominator = max(FULL, undisputed)
        if denominator > undisputed:
            weights.append((f"held:{min(open_disputes)}", denominator - undisputed))
        return Split(tuple(weights), denominator)
    best: dict[str, int] = {}
    for claim in in_effect:
        for party, share in claimed(claim).items():
            best[party] = max(best.get(party, 0), share)
    total = sum(best.values())
    if total == 0:
        return None
    return Split(tuple((_recipient(p), w) for p, w in sorted(best.items()) if w), total)


def _recipient(party: str) -> str:
    return UNKNOWN_RECIPIENT if party == UNKNOWN else f"party:{party}"


def require_versions_left(record: dict[str, Any]) -> None:
    if len(record["claims"]) >= MAX_CLAIM_VERSIONS:
        raise Refused(
            Status.RESOURCE_EXHAUSTED,
            f"subject already has {MAX_CLAIM_VERSIONS} share versions (MAX_CLAIM_VERSIONS)",
            "payload.subject",
        )
