"""Registry queries (issue point 5): JSON-able answers read from one consistent state view.

Every point read is remembered (`keys_read`), so the service can attach a state proof of each
key the answer rests on, presence or absence, against a certified header. Scans (overclaims,
unmatched usage) prove each record they return, not that the list is complete: a sparse Merkle
tree proves keys, not ranges.

Codes resolve through the code index and links: ISWC -> work -> recordings (embodies links);
ISRC -> recording -> works, CIDs, UCIs; CID or UCI -> the recordings linked to it (any link
status is shown; only confirmed links carry money).
"""

from __future__ import annotations

from typing import Any

from kledger.node.errors import Refused, Status
from kledger.node.registry import ai, distribution, fields, identifiers, links, shares, state, usage
from kledger.node.registry.env import date_of_ms
from kledger.node.registry.state import StateReader
from kledger.node.storage.keyspace import ReadView

MAX_SCAN_RESULTS = 1_000
MAX_WORKS_PAGE = 200


def submitter_of(work: dict[str, Any]) -> dict[str, str]:
    """Where a work's CWR registration came from: its sender and submitter work number; a work
    registered another way is its org's, numbered by its id less the org's prefix."""
    found = work.get("submitter")
    if found:
        return {"sender": found["sender"], "work_number": found["work_number"]}
    org = work["registered_by"]
    return {"sender": org, "work_number": work["work_id"].removeprefix(f"{org}-")}


class _Recorder(StateReader):
    def __init__(self, view: ReadView) -> None:
        super().__init__(view)
        self.keys: list[bytes] = []

    def get_raw(self, key: bytes) -> bytes | None:
        # Every read (decoded by `get` or raw) is a key the answer's proofs must cover.
        if key not in self.keys:
            self.keys.append(key)
        return super().get_raw(key)


def _id(value: str, field: str) -> str:
    """A query's id argument, checked before it becomes part of a store key."""
    if not fields.ID_TOKEN.match(value):
        raise Refused(
            Status.INVALID_ARGUMENT,
            f"must be an id of 1..{fields.MAX_ID_CHARS} chars [A-Za-z0-9._:+-]",
            field,
        )
    return value


def _period(value: str, field: str = "period") -> str:
    match = fields.PERIOD.match(value)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise Refused(Status.INVALID_ARGUMENT, "must be a period YYYY-MM", field)
    return value


def _not_found(message: str, field: str) -> Refused:
    return Refused(Status.NOT_FOUND, message, field)


class RegistryQueries:
    def __init__(self, view: ReadView, now_ms: int = 0) -> None:
        self._reader = _Recorder(view)
        self.now_ms = now_ms

    @property
    def keys_read(self) -> list[bytes]:
        return list(self._reader.keys)

    def _today(self, date: str) -> str:
        """The asked date (checked) or, by default, the date of the answering header."""
        if not date:
            return date_of_ms(self.now_ms)
        try:
            return fields.date({"date": date}, "date", "")
        except Refused as refusal:  # name the query's field, not a tx payload's
            raise Refused(refusal.status, "must be a date YYYY-MM-DD", "date") from None

    # -- resolving codes -------------------------------------------------------------------

    def subjects_of(self, kind: str, value: str) -> tuple[list[str], list[str]]:
        """(work ids, ISRCs) that a code names."""
        r = self._reader
        code = identifiers.parse_code(kind, value, "code") if kind != "work" else _id(value, "code")
        if kind in ("iswc", "isrc"):
            target = r.get(state.code_key(kind, code))
            if target is None:
                raise _not_found(f"no {kind.upper()} {code} in the registry", "code")
            return ([target["id"]], []) if kind == "iswc" else ([], [target["id"]])
        if kind == "work":
            if not r.has(state.work_key(code)):
                raise _not_found(f"no work {code}", "code")
            return [code], []
        if kind not in ("cid", "uci"):
            raise Refused(
                Status.INVALID_ARGUMENT, "kind must be iswc, isrc, cid, uci or work", "kind"
            )
        isrcs = sorted(
            {
                end[1]
                for link in links.links_of(r, kind, code)
                for end in (link["a"], link["b"])
                if end[0] == "isrc"
            }
        )
        if not isrcs:
            raise _not_found(f"no recording is linked to {kind.upper()} {code}", "code")
        return [], isrcs

    def resolve(
        self, kind: str, value: str, territory: str = "KR", date: str = ""
    ) -> dict[str, Any]:
        """The whole rights record behind any ISWC, ISRC, CID or UCI."""
        r = self._reader
        date = self._today(date)
        identifiers.parse_territory(territory)
        work_ids, isrcs = self.subjects_of(kind, value)
        for isrc in list(isrcs):
            for link in links.links_of(r, "isrc", isrc):
                for end in (link["a"], link["b"]):
                    if end[0] == "work" and end[1] not in work_ids:
                        work_ids.append(end[1])
        for work_id in list(work_ids):
            for link in links.links_of(r, "work", work_id):
                for end in (link["a"], link["b"]):
                    if end[0] == "isrc" and end[1] not in isrcs:
                        isrcs.append(end[1])
        all_links: dict[str, Any] = {}
        for work_id in work_ids:
            all_links |= {link["link_id"]: link for link in links.links_of(r, "work", work_id)}
        for isrc in isrcs:
            all_links |= {link["link_id"]: link for link in links.links_of(r, "isrc", isrc)}
        for link in list(all_links.values()):
            for end in (link["a"], link["b"]):
                if end[0] in ("cid", "uci"):
                    all_links |= {x["link_id"]: x for x in links.links_of(r, end[0], end[1])}
        for link in all_links.values():
            link["effective_status"] = links.effective_status(r, link, self.now_ms)
        works = [self._subject("work", w, territory, date) for w in sorted(work_ids)]
        recordings = [self._subject("recording", i, territory, date) for i in sorted(isrcs)]
        codes: dict[str, list[str]] = {"iswc": [], "isrc": sorted(isrcs), "cid": [], "uci": []}
        codes["iswc"] = sorted(w["record"]["iswc"] for w in works if w["record"]["iswc"])
        for link in all_links.values():
            for end in (link["a"], link["b"]):
                if end[0] in ("cid", "uci") and end[1] not in codes[end[0]]:
                    codes[end[0]].append(end[1])
        return {
            "query": {"kind": kind, "value": value, "territory": territory, "date": date},
            "codes": {k: sorted(v) for k, v in codes.items()},
            "works": works,
            "recordings": recordings,
            "links": [all_links[k] for k in sorted(all_links)],
        }

    def _subject(self, kind: str, subject_id: str, territory: str, date: str) -> dict[str, Any]:
        r = self._reader
        key = state.work_key(subject_id) if kind == "work" else state.recording_key(subject_id)
        record = r.get(key)
        rights = shares.WORK_RIGHTS if kind == "work" else shares.RECORDING_RIGHTS
        current = {}
        for right in sorted(rights):
            split = shares.effective_split(
                r, kind, subject_id, right, territory=territory, date=date, now_ms=self.now_ms
            )
            if split is not None:
                current[right] = _split_json(split)
        disputes = []
        for dispute_id in r.get(state.disputes_of_key(kind, subject_id)) or []:
            dispute = r.get(state.dispute_key(dispute_id))
            if shares.dispute_open(dispute, self.now_ms):
                disputes.append(dispute)
        policy = ai.training_answer(
            r, kind, subject_id, territory=territory, date=date, now_ms=self.now_ms
        )
        return {
            "kind": kind,
            "id": subject_id,
            "record": record,
            "provenance": record["provenance"] if record else None,
            "current_shares": current,
            "ai_training": policy,
            "open_disputes": disputes,
        }

    # -- shares, overclaims, usage, statements ----------------------------------------------

    def shares_at(
        self, kind: str, value: str, right: str, territory: str, date: str = ""
    ) -> dict[str, Any]:
        date = self._today(date)
        identifiers.parse_territory(territory)
        if right not in shares.RIGHTS:
            raise Refused(
                Status.INVALID_ARGUMENT, f"right must be one of {sorted(shares.RIGHTS)}", "right"
            )
        work_ids, isrcs = self.subjects_of(kind, value)
        subjects = [("work", w) for w in work_ids] + [("recording", i) for i in isrcs]
        answers = []
        for subject_kind, subject_id in subjects:
            record = self._reader.get(state.shares_key(subject_kind, subject_id, right))
            claims = [
                c for c in (record or {"claims": []})["claims"] if shares.covers(c, territory, date)
            ]
            split = shares.effective_split(
                self._reader,
                subject_kind,
                subject_id,
                right,
                territory=territory,
                date=date,
                now_ms=self.now_ms,
            )
            answers.append(
                {
                    "subject": {"kind": subject_kind, "id": subject_id},
                    "in_effect": _split_json(split) if split else None,
                    "claims": claims,
                }
            )
        return {"right": right, "territory": territory, "date": date, "subjects": answers}

    def overclaims(self, include_closed: bool = False) -> dict[str, Any]:
        found = []
        for _, dispute in self._reader.iterate(state.DISPUTE_PREFIX):
            if dispute["kind"] != "shares" or "claim_version" not in dispute:
                continue
            is_open = shares.dispute_open(dispute, self.now_ms)
            status = dispute["status"] if dispute["status"] != "open" or is_open else "expired"
            if include_closed or status == "open":
                found.append({**dispute, "status": status})
                self._reader.keys.append(state.dispute_key(dispute["dispute_id"]))
            if len(found) >= MAX_SCAN_RESULTS:
                break
        return {"overclaims": found}

    def unmatched_usage(self, period: str, territory: str) -> dict[str, Any]:
        _period(period)
        identifiers.parse_territory(territory)
        unmatched = []
        lines = 0
        for key, line in self._reader.iterate(state.usage_prefix(period, territory)):
            lines += 1
            _, _, reason = distribution._match(self._reader, line, self.now_ms)
            if reason:
                unmatched.append({**line, "reason": reason})
                self._reader.keys.append(key)
            if len(unmatched) >= MAX_SCAN_RESULTS:
                break
        return {"period": period, "territory": territory, "lines": lines, "unmatched": unmatched}

    def works(
        self, registered_by: str = "", sender: str = "", after: str = "", limit: int = 100
    ) -> dict[str, Any]:
        """A page of works in id order (for `kledger export cwr`): each with the parties it
        names, the registering org's active share claims per work right, and the ISRCs of its
        embodies links. `next` is the last id of a full page ('' at the end). Filters: the
        registering org, the CWR sender it came from (works registered another way count as
        their org's)."""
        limit = max(1, min(limit, MAX_WORKS_PAGE))
        prefix = state.work_key("x")[: -len("x")]
        found: list[dict[str, Any]] = []
        last = ""
        for key, record in self._reader.iterate(prefix):
            work_id = key[len(prefix) :].decode()
            if work_id <= after:
                continue
            if registered_by and record["registered_by"] != registered_by:
                continue
            if sender and submitter_of(record)["sender"] != sender:
                continue
            found.append(self._work_for_export(record))
            last = work_id
            if len(found) >= limit:
                break
        return {"works": found, "next": last if len(found) >= limit else ""}

    def _work_for_export(self, record: dict[str, Any]) -> dict[str, Any]:
        r = self._reader
        org = record["registered_by"]
        claims: dict[str, list[dict[str, Any]]] = {}
        party_ids = {
            e["party_id"] for e in record["creators"] + record["publishers"] if "party_id" in e
        }
        for right in sorted(shares.WORK_RIGHTS):
            found = r.get(state.shares_key("work", record["work_id"], right))
            active = [
                c
                for c in (found or {}).get("claims", [])
                if c["status"] == "active" and c["org"] == org
            ]
            if active:
                claims[right] = active
                party_ids |= {e["party_id"] for c in active for e in c["entries"] if e["party_id"]}
        parties = {pid: r.get(state.party_key(pid)) for pid in sorted(party_ids)}
        isrcs = sorted(
            end[1]
            for link in links.links_of(r, "work", record["work_id"])
            if link["relation"] == "embodies" and link["status"] in ("asserted", "confirmed")
            for end in (link["a"], link["b"])
            if end[0] == "isrc"
        )
        return {
            "work": {**record, "submitter": submitter_of(record)},
            "parties": {pid: party for pid, party in parties.items() if party is not None},
            "shares": claims,
            "isrcs": isrcs,
        }

    def statement(self, party_id: str, period: str) -> dict[str, Any]:
        _id(party_id, "party_id")
        _period(period)
        party = self._reader.get(state.party_key(party_id))
        if party is None:
            raise _not_found(f"no party {party_id}", "party_id")
        entries = self._reader.get(state.statement_key(party_id, period)) or []
        totals: dict[str, int] = {}
        for entry in entries:
            totals[entry["currency"]] = totals.get(entry["currency"], 0) + entry["amount_minor"]
        return {
            "party_id": party_id,
            "party": party,
            "period": period,
            "entries": entries,
            "totals_minor": totals,
        }

    def distribution(self, distribution_id: str, recompute: bool = False) -> dict[str, Any]:
        _id(distribution_id, "distribution_id")
        record = self._reader.get(state.distribution_key(distribution_id))
        if record is None:
            raise _not_found(f"no distribution {distribution_id}", "distribution_id")
        answer: dict[str, Any] = {"distribution": record}
        if recompute:
            result = record["result"]
            tariff = usage.tariff_for(self._reader, result["usage_date"], result["tariff_version"])
            assert tariff is not None
            _, inputs_hash, result_hash = distribution.run(
                self._reader.view, result["period"], result["territory"], result["currency"],
                tariff=tariff, now_ms=record["timestamp_ms"],
            )  # fmt: skip
            answer["recomputed"] = {
                "inputs_hash": inputs_hash.hex(),
                "result_hash": result_hash.hex(),
                "inputs_unchanged": inputs_hash.hex() == record["inputs_hash"],
                "result_matches": result_hash.hex() == record["result_hash"],
            }
        return answer

    # -- AI and persona ---------------------------------------------------------------------

    def ai_training(
        self, kind: str, value: str, territory: str, date: str = "", scope: str = "ai_training"
    ) -> dict[str, Any]:
        if scope not in ai.SCOPES:
            raise Refused(
                Status.INVALID_ARGUMENT, f"scope must be one of {', '.join(ai.SCOPES)}", "scope"
            )
        identifiers.parse_territory(territory)
        date = self._today(date)
        work_ids, isrcs = self.subjects_of(kind, value)
        subjects = [("recording", i) for i in isrcs] + [("work", w) for w in work_ids]
        answers = [
            ai.training_answer(
                self._reader, k, s, territory=territory, date=date, now_ms=self.now_ms, scope=scope
            )
            for k, s in subjects
        ]
        rank = {"allow": 0, "conditional": 1, "deny": 2}
        overall = max((a["answer"] for a in answers), key=lambda x: rank[x])
        return {
            "question": f"may {kind.upper()} {value} be used for {scope} in {territory} on {date}?",
            "answer": overall,
            "subjects": answers,
        }

    def persona_claims(self, kind: str, value: str) -> dict[str, Any]:
        code = identifiers.parse_code("isrc" if kind == "recording" else kind, value, "code")
        subject_kind = "recording" if kind in ("isrc", "recording") else kind
        ids = self._reader.get(state.persona_of_key(subject_kind, code)) or []
        claims = [self._reader.get(state.persona_claim_key(i)) for i in ids]
        consents = {}
        for claim in claims:
            performer = claim["performer_party_id"]
            consents[performer] = self._reader.get(state.persona_consent_key(performer))
        return {
            "subject": {"kind": subject_kind, "id": code},
            "claims": claims,
            "consents": consents,
        }


def _split_json(split: shares.Split) -> dict[str, Any]:
    return {
        "denominator": split.denominator,
        "recipients": [{"recipient": who, "weight": weight} for who, weight in split.weights],
    }
