"""Bulk input people really have: works from a CWR-style file, usage from a DSR-style file, and
any transactions from a JSON-lines file, turned into transaction bodies; then signed and
submitted in batches with a progress bar and a summary of accepted and refused lines.

CWR-style (after CISAC CWR 2.2 record names; tab-separated instead of fixed width, UTF-8):
    HDR  sender  file_id                                          header (optional)
    PTY  party_id  kind(person|company)  name  ipi  society      -> RegisterParty
    NWR  work_id  title  iswc  version(ORI|MOD)  original_work_id  creation_type
         warranty_ref  human_contribution                        -> RegisterWork
    ALT  title                                                   alternate title of the work
    SWR  party_id  role(CA|A|C|AR|AD|SR|SA|TR|PA)  pr_share  mr_share     writer
    SPU  party_id  role(E|AQ|AM|SE|ES|PA)  pr_share  mr_share  [pr_collection  mr_collection]
    TER  territory[,territory...]                                 territories of the shares
    TRL                                                           trailer (optional)
  Shares are CWR's 5-digit 1/100 % (05000 = 50.00 %). Each NWR group yields a RegisterWork and,
  when its shares are not all 0, one SetShares per right (PR, MR). Publishers of roles other
  than E/AQ get collection shares only (ownership 0), as CWR requires; an E/AQ publisher's
  collection share defaults to its ownership share unless the collection columns are given.

DSR-style (after DDEX DSR flat files; tab-separated, UTF-8):
    HEAD  report_id  period(YYYY-MM)  territory  service  commercial_model  use_type
          currency  net_revenue_minor  total_usages(0 = sum of the lines)
    RU    line_id  isrc  iswc  cid  uci  usages  [title  artist]
  A line's code is the first non-empty of ISRC, CID, UCI, ISWC. Lines are sent as ReportUsage
  batches of at most `usage_batch_lines` lines.

JSON lines: one {"type", "payload"} per line (blank lines and lines starting with # skipped).

Every line that cannot become a valid transaction is reported with its line number and reason
(the same stateless checks as node admission) and the rest goes on. Batches never mix
transaction types, and each batch is committed before the next is sent, so parties exist before
the works that name them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import TxResult
from kledger.node.chain.tx import TxBody, sign_tx
from kledger.node.errors import Refused
from kledger.node.registry import identifiers
from kledger.node.registry.tx_file import check_body

MAX_LINES = 200_000
USAGE_BATCH_LINES = 200
SUBMIT_BATCH_TXS = 50


@dataclass(frozen=True, slots=True)
class Planned:
    origin: str  # "file:line" of the record(s) it came from
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    origin: str
    reason: str


@dataclass(slots=True)
class Plan:
    txs: list[Planned] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def add(self, origin: str, tx_type: str, payload: dict[str, Any]) -> None:
        refusal = check_body(tx_type, payload)
        if refusal is None:
            self.txs.append(Planned(origin, tx_type, payload))
        else:
            self.problems.append(Problem(origin, f"{tx_type}: {refusal.message}"))


def _rows(text: str, name: str) -> list[tuple[str, list[str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if number > MAX_LINES:
            raise ValueError(f"{name}: more than {MAX_LINES} lines")
        if line.strip() and not line.startswith("#"):
            rows.append((f"{name}:{number}", [cell.strip() for cell in line.split("\t")]))
    return rows


def _cell(cells: list[str], index: int) -> str:
    return cells[index] if index < len(cells) else ""


def _share(text: str, origin: str) -> int:
    if not text:
        return 0
    if not text.isdigit() or int(text) > 10_000:
        raise ValueError(f"{origin}: share {text!r} is not 00000..10000 (1/100 %)")
    return int(text)


# -- CWR-style works -------------------------------------------------------------------------


def plan_cwr(text: str, name: str = "works.cwr") -> Plan:
    plan = Plan()
    parties: list[tuple[str, dict[str, Any]]] = []
    works: list[tuple[str, dict[str, Any]]] = []
    shares: list[tuple[str, dict[str, Any]]] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        nonlocal current
        if current is None:
            return
        work, group = current["work"], current
        works.append((group["origin"], work))
        for right, column in (("PR", "pr"), ("MR", "mr")):
            entries = []
            for kind, party_id, role, values in group["interested"]:
                ownership, collection = values[column], values[f"{column}_collection"]
                assert ownership is not None
                entry: dict[str, Any] = {
                    "party_id": party_id,
                    "kind": kind,
                    "role": role,
                    "ownership": ownership,
                }
                if kind == "publisher" and role not in ("E", "AQ"):
                    entry["ownership"] = 0
                    entry["collection"] = ownership if collection is None else collection
                elif collection is not None:
                    entry["collection"] = collection
                entries.append(entry)
            if any(e.get("collection", e["ownership"]) for e in entries):
                payload = {
                    "subject": {"kind": "work", "id": work["work_id"]},
                    "right": right,
                    "territories": group["territories"],
                    "shares": entries,
                }
                shares.append((group["origin"], payload))
        current = None

    for origin, cells in _rows(text, name):
        record = cells[0].upper()
        try:
            if record in ("HDR", "TRL"):
                continue
            if record == "PTY":
                close()
                payload: dict[str, Any] = {
                    "party_id": _cell(cells, 1),
                    "kind": _cell(cells, 2) or "person",
                    "names": [
                        {
                            "name": _cell(cells, 3),
                            **({"ipi": _cell(cells, 4)} if _cell(cells, 4) else {}),
                        }
                    ],
                    "memberships": [{"society": _cell(cells, 5)}],
                }
                parties.append((origin, payload))
            elif record == "NWR":
                close()
                creation = _cell(cells, 6) or "human"
                provenance: dict[str, Any] = {"creation_type": creation}
                if _cell(cells, 7):
                    provenance["warranty_ref"] = _cell(cells, 7)
                if _cell(cells, 8):
                    provenance["human_contribution"] = _cell(cells, 8)
                work: dict[str, Any] = {
                    "work_id": _cell(cells, 1),
                    "titles": [_cell(cells, 2)],
                    "provenance": provenance,
                    "creators": [],
                    "publishers": [],
                }
                if _cell(cells, 3):
                    work["iswc"] = _cell(cells, 3)
                if _cell(cells, 4).upper() == "MOD":
                    work["version"] = "modified"
                    work["original_work_id"] = _cell(cells, 5)
                current = {
                    "origin": origin,
                    "work": work,
                    "interested": [],
                    "territories": ["Worldwide"],
                }
            elif current is None:
                raise ValueError(f"{origin}: {record} outside a work (no NWR before it)")
            elif record == "ALT":
                current["work"]["titles"].append(_cell(cells, 1))
            elif record in ("SWR", "SPU"):
                kind = "writer" if record == "SWR" else "publisher"
                party_id, role = _cell(cells, 1), _cell(cells, 2).upper()
                values: dict[str, int | None] = {
                    "pr": _share(_cell(cells, 3), origin),
                    "mr": _share(_cell(cells, 4), origin),
                    "pr_collection": _share(_cell(cells, 5), origin) if _cell(cells, 5) else None,
                    "mr_collection": _share(_cell(cells, 6), origin) if _cell(cells, 6) else None,
                }
                current["interested"].append((kind, party_id, role, values))
                current["work"]["creators" if kind == "writer" else "publishers"].append(
                    {"party_id": party_id, "role": role}
                )
            elif record == "TER":
                current["territories"] = [
                    t.strip() for t in _cell(cells, 1).split(",") if t.strip()
                ]
            else:
                raise ValueError(f"{origin}: unknown record type {record!r}")
        except ValueError as error:
            plan.problems.append(Problem(origin, str(error).removeprefix(f"{origin}: ")))
    close()
    for origin, payload in parties:
        plan.add(origin, "RegisterParty", payload)
    for origin, payload in works:
        if not payload["publishers"]:
            del payload["publishers"]
        plan.add(origin, "RegisterWork", payload)
    for origin, payload in shares:
        plan.add(origin, "SetShares", payload)
    return plan


# -- DSR-style usage -------------------------------------------------------------------------

_CODE_COLUMNS = (("isrc", 2), ("cid", 4), ("uci", 5), ("iswc", 3))


def plan_dsr(
    text: str, name: str = "usage.tsv", usage_batch_lines: int = USAGE_BATCH_LINES
) -> Plan:
    plan = Plan()
    reports: list[dict[str, Any]] = []
    for origin, cells in _rows(text, name):
        record = cells[0].upper()
        if record == "HEAD":
            try:
                names = ("report_id", "period", "territory", "service", "commercial_model")
                header: dict[str, Any] = {n: _cell(cells, i) for i, n in enumerate(names, start=1)}
                header["use_type"] = _cell(cells, 6)
                header["currency"] = _cell(cells, 7)
                header["net_revenue_minor"] = int(_cell(cells, 8) or "-1")
                header["total_usages"] = int(_cell(cells, 9) or "0")
            except ValueError:
                plan.problems.append(
                    Problem(origin, "net_revenue_minor and total_usages must be integers")
                )
                reports.append({"header": None, "lines": []})
                continue
            reports.append({"origin": origin, "header": header, "lines": []})
        elif record == "RU":
            if not reports or reports[-1]["header"] is None:
                plan.problems.append(Problem(origin, "RU line without a valid HEAD before it"))
                continue
            try:
                usages = int(_cell(cells, 6))
            except ValueError:
                plan.problems.append(
                    Problem(origin, f"usages {_cell(cells, 6)!r} is not an integer")
                )
                continue
            code = next(((k, _cell(cells, i)) for k, i in _CODE_COLUMNS if _cell(cells, i)), None)
            if code is None:
                plan.problems.append(Problem(origin, "no ISRC, CID, UCI or ISWC on the line"))
                continue
            try:
                canonical = identifiers.parse_code(code[0], code[1])
            except Refused as refusal:
                plan.problems.append(Problem(origin, refusal.message))
                continue
            line = {
                "line_id": _cell(cells, 1),
                "code_kind": code[0],
                "code": canonical,
                "usages": usages,
            }
            reports[-1]["lines"].append((origin, line))
        else:
            plan.problems.append(Problem(origin, f"unknown record type {record!r} (HEAD or RU)"))
    for report in reports:
        if report["header"] is None:
            continue
        header, lines = report["header"], report["lines"]
        if not lines:
            plan.problems.append(Problem(report["origin"], "report has no valid RU lines"))
            continue
        if header["total_usages"] == 0:
            header["total_usages"] = sum(line["usages"] for _, line in lines)
        for start in range(0, len(lines), usage_batch_lines):
            chunk = lines[start : start + usage_batch_lines]
            origin = f"{chunk[0][0]}..{chunk[-1][0].rsplit(':', 1)[1]}"
            plan.add(origin, "ReportUsage", {**header, "lines": [line for _, line in chunk]})
    return plan


# -- JSON lines ------------------------------------------------------------------------------


def plan_jsonl(text: str, name: str = "txs.jsonl") -> Plan:
    plan = Plan()
    for origin, cells in _rows(text, name):
        try:
            document = json.loads("\t".join(cells))
        except ValueError as error:
            plan.problems.append(Problem(origin, f"not JSON: {error}"))
            continue
        if not isinstance(document, dict) or set(document) != {"type", "payload"}:
            plan.problems.append(Problem(origin, 'a line is {"type": NAME, "payload": {...}}'))
            continue
        plan.add(origin, str(document["type"]), document["payload"])
    return plan


# -- signing and submitting ------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    accepted: int = 0
    refused: list[Problem] = field(default_factory=list)
    not_sent: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "refused": [{"origin": p.origin, "reason": p.reason} for p in self.refused],
            "not_sent": [{"origin": p.origin, "reason": p.reason} for p in self.not_sent],
        }


def batches(txs: Sequence[Planned], max_txs: int = SUBMIT_BATCH_TXS) -> list[list[Planned]]:
    """Consecutive runs of one tx type, cut at `max_txs`."""
    out: list[list[Planned]] = []
    for tx in txs:
        if out and out[-1][0].type == tx.type and len(out[-1]) < max_txs:
            out[-1].append(tx)
        else:
            out.append([tx])
    return out


def _progress(stream: TextIO | None, done: int, total: int, width: int = 30) -> None:
    if stream is None or total == 0:
        return
    filled = width * done // total
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} txs")
    if done == total:
        stream.write("\n")
    stream.flush()


def submit_plan(
    plan: Plan,
    key: KeyPair,
    chain_id: str,
    submit: Callable[[list[bytes]], list[TxResult]],
    *,
    first_nonce: int,
    max_batch_txs: int = SUBMIT_BATCH_TXS,
    progress: TextIO | None = None,
) -> Summary:
    """Sign each planned tx (nonces first_nonce, first_nonce+1, ...) and send batch by batch.
    `submit` takes signed tx encodings and returns one committed TxResult per tx, in order."""
    summary = Summary(not_sent=list(plan.problems))
    nonce = first_nonce
    done = 0
    for batch in batches(plan.txs, max_batch_txs):
        encodings = []
        for tx in batch:
            encodings.append(sign_tx(key, TxBody(chain_id, tx.type, nonce, tx.payload)).encoding)
            nonce += 1
        results = submit(encodings)
        assert len(results) == len(batch), "submit returns one result per tx"
        for tx, result in zip(batch, results, strict=True):
            if result.ok:
                summary.accepted += 1
            else:
                summary.refused.append(
                    Problem(tx.origin, f"{tx.type}: {result.status}: {result.message}")
                )
        done += len(batch)
        _progress(progress, done, len(plan.txs))
    return summary
