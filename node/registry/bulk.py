"""Bulk input the societies really have, turned into signed batches: works from CISAC CWR 2.1 /
2.2 files, usage from DDEX DSR flat files (readers: node/registry/formats/), and any
transactions from a JSON-lines file; with a progress bar, a summary, and for CWR the
acknowledgement a society sends back.

    plan_file(open_lines, kind, org, name) -> FilePlan     the format read from the content
    dry_run(plan) -> dict                                   what would be sent, every refusal
    submit_file(plan, key, chain_id, submit, ...) -> Summary

`open_lines` opens the file again on each call: a file is read twice, once to check what
rejects it as a whole (CWR TRL and GRT counts, DSR FOOT counts and summary totals) and once to
plan and send it, unit by unit (one CWR transaction, or one ReportUsage batch), so memory stays
bounded whatever the file's size.

Rules kept here: nothing of a file the specification rejects as a whole is sent; a unit's
transactions go in type order (parties, works, shares, links), batches never mix types and each
is committed before the next; a party already planned earlier in the import is not sent again;
every refusal names the line, the record and the field; ALREADY_EXISTS on a party, a share set
or a link means the ledger holds it already (a re-sent file changes nothing), on a work it is a
duplicate (CWR status DU).

JSON lines: one {"type", "payload"} per line (blank lines and lines starting with # skipped).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from kledger.node.chain.keys import KeyPair
from kledger.node.chain.receipt import Receipt, TxResult
from kledger.node.chain.tx import TxBody, sign_tx
from kledger.node.registry.formats import cwr, cwr_ledger, cwr_write, dsr
from kledger.node.registry.formats.cwr_layout import WORK_HEADERS
from kledger.node.registry.formats.problems import Refusal
from kledger.node.registry.tx_file import check_body

MAX_JSON_LINES = 200_000
USAGE_BATCH_LINES = 200
SUBMIT_BATCH_TXS = 500  # one SubmitBatch call, committed before the next
CHUNK_TXS = 2_000  # planned txs gathered before they are sent in type order
TYPE_ORDER = {
    "RegisterParty": 0,
    "RegisterWork": 1,
    "ReviseWork": 1,
    "SetShares": 2,
    "LinkIdentifiers": 3,
}
Lines = Callable[[], Iterable[bytes]]
Submit = Callable[[list[bytes]], Sequence[TxResult | Receipt]]


@dataclass(slots=True)
class Planned:
    origin: str  # "file:line" of the record it came from
    type: str
    payload: dict[str, Any]
    line: int = 0
    record: str = ""
    result: TxResult | None = None
    tx_hash: str = ""
    height: int = 0


@dataclass(slots=True)
class Unit:
    """What is decided together: one CWR transaction, one usage batch, one JSON line."""

    line: int
    record: str
    txs: list[Planned] = field(default_factory=list)
    problems: list[Refusal] = field(default_factory=list)
    transaction: cwr.Transaction | None = None
    work_id: str = ""
    usage_lines: int = 0

    @property
    def refused(self) -> bool:
        return not self.txs and any(p.level in "EGT" for p in self.problems)

    @property
    def weight(self) -> int:
        """What the progress bar counts: a work, the usage lines of a batch, a JSON line."""
        return self.usage_lines if self.usage_lines or self.row_problems else 1

    row_problems: bool = False  # a unit that only carries a DSR file's row refusals


@dataclass(slots=True)
class FilePlan:
    name: str
    format: str  # "CWR 2.1", "CWR 2.2", "DSR", "JSON lines"
    header: Any
    works: int
    usage_lines: int
    problems: list[Refusal]  # what the first pass found about the file as a whole
    units: Callable[[], Iterator[Unit]]
    total_units: int

    @property
    def rejected(self) -> bool:
        return any(p.level == "E" for p in self.problems)


def detect(first_record: bytes) -> str:
    """The format from a file's first non-blank line: cwr, dsr, jsonl or unknown."""
    text = first_record.lstrip(b"\xef\xbb\xbf").rstrip(b"\r\n")
    if text.startswith(b"HDR") and b"\t" not in text[:20]:
        return "cwr"
    if text.startswith(b"HEAD\t"):
        return "dsr"
    if text.lstrip().startswith(b"{"):
        return "jsonl"
    return "unknown"


def _first_record(lines: Lines) -> bytes:
    for raw in lines():
        if raw.strip() and not raw.startswith(b"#"):
            return raw
    return b""


def plan_file(lines: Lines, kind: str, org: str, name: str) -> FilePlan:
    """`kind` is what the user asked for (works, usage, txs); the format comes from the
    content, and a file of another kind is refused naming what it is."""
    found = detect(_first_record(lines))
    wanted = {"works": "cwr", "usage": "dsr", "txs": "jsonl"}[kind]
    if found != wanted:
        names = {"cwr": "a CWR file", "dsr": "a DDEX DSR file", "jsonl": "JSON lines"}
        what = names.get(found, "no format this command reads")
        problem = Refusal(1, "", "", f"this is {what}; `import {kind}` reads {names[wanted]}", "E")
        return FilePlan(name, found, None, 0, 0, [problem], lambda: iter(()), 0)
    if found == "cwr":
        return _plan_cwr(lines, org, name)
    if found == "dsr":
        return _plan_dsr(lines, name)
    return _plan_jsonl(lines, name)


# -- CWR -------------------------------------------------------------------------------------


def _plan_cwr(lines: Lines, org: str, name: str) -> FilePlan:
    header, end, works = cwr.scan(lines())
    version = f"CWR {header.version}" if header else "CWR"
    problems = list(end.problems)

    def units() -> Iterator[Unit]:
        if header is None or end.rejected:
            return
        for item in cwr.read_cwr(lines()):
            if not isinstance(item, cwr.Transaction) or item.type not in WORK_HEADERS:
                continue
            unit = Unit(item.header.line, item.type, transaction=item)
            unit.problems = list(item.problems)
            if item.group_id in end.rejected_groups:
                unit.problems += [p for p in end.problems if p.level == "G"]
                yield unit
                continue
            if item.work is not None:
                unit.work_id = cwr_ledger.work_id(header, item.work)
            if item.rejected or item.type == "EXC":
                if item.type == "EXC":
                    unit.problems.append(
                        Refusal(
                            item.header.line,
                            "EXC",
                            "",
                            "a work in conflict is information, not a registration",
                            "T",
                        )
                    )
                yield unit
                continue
            origin = f"{name}:{item.header.line}"
            for tx_type, payload in cwr_ledger.plan_work(item, header, org, name):
                unit.txs.append(Planned(origin, tx_type, payload, item.header.line, item.type))
            _check_unit(unit)
            yield unit

    return FilePlan(name, version, header, works, 0, problems, units, works)


def _check_unit(unit: Unit) -> None:
    """The node's stateless checks, before anything is sent: a unit with a tx the node would
    refuse is not sent at all (its problems say why)."""
    for tx in unit.txs:
        refusal = check_body(tx.type, tx.payload)
        if refusal is not None:
            unit.problems.append(
                Refusal(
                    tx.line, tx.record, refusal.field or "", f"{tx.type}: {refusal.message}", "T"
                )
            )
    if any(p.level in "EGT" for p in unit.problems):
        unit.txs = []


# -- DSR -------------------------------------------------------------------------------------


def _plan_dsr(lines: Lines, name: str, batch_lines: int = USAGE_BATCH_LINES) -> FilePlan:
    header, end = dsr.scan(lines())
    problems = [p for p in end.problems if p.level == "E"]
    row_problems = [p for p in end.problems if p.level != "E"]

    def units() -> Iterator[Unit]:
        if header is None or end.rejected:
            return
        if row_problems:
            yield Unit(
                row_problems[0].line,
                row_problems[0].record,
                problems=list(row_problems),
                row_problems=True,
            )
        batch: list[dsr.UsageLine] = []

        def flush() -> Iterator[Unit]:
            if not batch:
                return
            first = batch[0]
            report = dict(first.report)
            if report["total_usages"] == 0:  # the summary gives none: the lines' sum
                report["total_usages"] = end.used.get(first.summary_id, [0, 0])[0]
            payload = {**report, "lines": [line.usage for line in batch]}
            unit = Unit(first.line, first.record, usage_lines=len(batch))
            unit.txs.append(
                Planned(
                    f"{name}:{first.line}..{batch[-1].line}",
                    "ReportUsage",
                    payload,
                    first.line,
                    first.record,
                )
            )
            _check_unit(unit)
            batch.clear()
            yield unit

        for item in dsr.read_dsr(lines()):
            if not isinstance(item, dsr.UsageLine):
                continue
            if item.summary_id in end.refused_summaries:
                yield Unit(
                    item.line,
                    item.record,
                    usage_lines=1,
                    problems=[
                        Refusal(
                            item.line,
                            item.record,
                            "SummaryRecordId",
                            f"summary {item.summary_id} is refused",
                            "T",
                        )
                    ],
                )
                continue
            if batch and (
                len(batch) >= batch_lines
                or batch[0].report["report_id"] != item.report["report_id"]
            ):
                yield from flush()
            batch.append(item)
        yield from flush()

    return FilePlan(name, "DSR", header, 0, end.usage_lines, problems, units, end.usage_lines)


# -- JSON lines ------------------------------------------------------------------------------


def _plan_jsonl(lines: Lines, name: str) -> FilePlan:
    count = sum(1 for raw in lines() if raw.strip() and not raw.startswith(b"#"))
    problems = []
    if count > MAX_JSON_LINES:
        problems.append(Refusal(0, "", "", f"more than {MAX_JSON_LINES} lines", "E"))

    def units() -> Iterator[Unit]:
        if problems:
            return
        for number, raw in enumerate(lines(), start=1):
            if not raw.strip() or raw.startswith(b"#"):
                continue
            unit = Unit(number, "")
            try:
                document = json.loads(raw)
            except ValueError as error:
                unit.problems.append(Refusal(number, "", "", f"not JSON: {error}", "R"))
                yield unit
                continue
            if not isinstance(document, dict) or set(document) != {"type", "payload"}:
                unit.problems.append(
                    Refusal(number, "", "", 'a line is {"type": NAME, "payload": {...}}', "R")
                )
                yield unit
                continue
            tx_type = str(document["type"])
            unit.record = tx_type
            unit.txs.append(
                Planned(f"{name}:{number}", tx_type, document["payload"], number, tx_type)
            )
            _check_unit(unit)
            yield unit

    return FilePlan(name, "JSON lines", None, 0, 0, problems, units, count)


# -- dry run ---------------------------------------------------------------------------------


def dry_run(plan: FilePlan) -> dict[str, Any]:
    """The plan as one JSON object: what the file holds, what would be sent, every refusal."""
    planned: Counter[str] = Counter()
    refused = list(plan.problems)
    seen_parties: set[str] = set()
    for unit in plan.units():
        refused += unit.problems
        for tx in unit.txs:
            if tx.type == "RegisterParty":
                if tx.payload["party_id"] in seen_parties:
                    continue
                seen_parties.add(tx.payload["party_id"])
            planned[tx.type] += 1
    return {
        "file": plan.name,
        "format": plan.format,
        "works": plan.works,
        "usage_lines": plan.usage_lines,
        "planned": sum(planned.values()),
        "planned_by_type": dict(sorted(planned.items())),
        "refused": [p.to_json() for p in refused],
    }


# -- signing and submitting ------------------------------------------------------------------


@dataclass(slots=True)
class Summary:
    file: str = ""
    format: str = ""
    works: int = 0
    usage_lines: int = 0
    accepted: int = 0
    already: int = 0  # ALREADY_EXISTS of parties, shares, links: the ledger holds them
    refused: list[dict[str, Any]] = field(default_factory=list)  # the ledger said no
    not_sent: list[Refusal] = field(default_factory=list)  # the file's own refusals
    matched_lines: int = 0
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # CWR ACK statuses
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "format": self.format,
            "works": self.works,
            "usage_lines": self.usage_lines,
            "accepted": self.accepted,
            "already_in_ledger": self.already,
            "refused": self.refused,
            "not_sent": [p.to_json() for p in self.not_sent],
        }
        if self.usage_lines:
            out["matched_lines"] = self.matched_lines
            out["unmatched_lines"] = self.unmatched
        if self.statuses:
            out["ack_statuses"] = dict(sorted(self.statuses.items()))
        if self.elapsed_s:
            per_s = (self.works or self.usage_lines) / self.elapsed_s
            out["elapsed_s"] = round(self.elapsed_s, 2)
            out["per_s"] = round(per_s, 1)
        return out


def batches(txs: Sequence[Planned], max_txs: int = SUBMIT_BATCH_TXS) -> list[list[Planned]]:
    """Consecutive runs of one tx type, cut at `max_txs`."""
    out: list[list[Planned]] = []
    for tx in txs:
        if out and out[-1][0].type == tx.type and len(out[-1]) < max_txs:
            out[-1].append(tx)
        else:
            out.append([tx])
    return out


def progress_line(done: int, total: int, unit: str, started: float, width: int = 30) -> str:
    filled = width * done // total if total else width
    elapsed = max(time.monotonic() - started, 1e-9)
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}  {done / elapsed:,.0f}/s"
    )


def submit_file(
    plan: FilePlan,
    key: KeyPair,
    chain_id: str,
    submit: Submit,
    *,
    first_nonce: int,
    max_batch_txs: int = SUBMIT_BATCH_TXS,
    progress: TextIO | None = None,
    on_unit: Callable[[Unit], None] | None = None,
) -> Summary:
    """Sign each planned tx (nonces first_nonce, first_nonce+1, ...) and send chunk by chunk;
    `on_unit` sees every unit once its txs are decided (in file order), e.g. to write the ACK.
    `submit` returns one TxResult (or Receipt, which adds the height) per encoding, in order."""
    started = time.monotonic()
    summary = Summary(plan.name, plan.format, plan.works, plan.usage_lines)
    summary.not_sent += plan.problems
    noun = "works" if plan.works else "usage lines" if plan.usage_lines else "lines"
    nonce = first_nonce
    done_units = 0
    seen_parties: set[str] = set()
    chunk: list[Unit] = []

    def send(units: list[Unit]) -> None:
        nonlocal nonce, done_units
        txs = [tx for unit in units for tx in unit.txs]
        # A CWR transaction's txs go parties first, then works, shares and links; other files
        # are sent in their own order (a JSON-lines file orders its txs itself).
        cwr_units = all(unit.transaction is not None for unit in units)
        ordered = sorted(txs, key=lambda tx: TYPE_ORDER.get(tx.type, 9)) if cwr_units else txs
        for batch in batches(ordered, max_batch_txs):
            encodings = []
            for tx in batch:
                signed = sign_tx(key, TxBody(chain_id, tx.type, nonce, tx.payload))
                tx.tx_hash = signed.tx_hash.hex()
                encodings.append(signed.encoding)
                nonce += 1
            results = submit(encodings)
            assert len(results) == len(batch), "submit returns one result per tx"
            for tx, outcome in zip(batch, results, strict=True):
                if isinstance(outcome, Receipt):
                    tx.result, tx.height = outcome.result, outcome.height
                else:
                    tx.result = outcome
        for unit in units:
            _account(summary, unit)
            if on_unit is not None:
                on_unit(unit)
        done_units += sum(unit.weight for unit in units)
        if progress is not None:
            progress.write(progress_line(done_units, plan.total_units, noun, started))
            progress.flush()

    for unit in plan.units():
        kept = []
        for tx in unit.txs:
            if tx.type == "RegisterParty":
                if tx.payload["party_id"] in seen_parties:
                    continue
                seen_parties.add(tx.payload["party_id"])
            kept.append(tx)
        unit.txs = kept
        chunk.append(unit)
        if sum(len(u.txs) for u in chunk) >= CHUNK_TXS:
            send(chunk)
            chunk = []
    send(chunk)
    if progress is not None:
        progress.write("\n")
        progress.flush()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _account(summary: Summary, unit: Unit) -> None:
    summary.not_sent += unit.problems
    for tx in unit.txs:
        result = tx.result
        assert result is not None
        if result.ok:
            summary.accepted += 1
            if tx.type == "ReportUsage" and result.output:
                summary.matched_lines += int(result.output.get("matched", 0))
                summary.unmatched += [
                    {"origin": tx.origin, **u} for u in result.output.get("unmatched", [])
                ][: max(0, 1_000 - len(summary.unmatched))]
        elif result.status == "ALREADY_EXISTS" and tx.type not in ("RegisterWork", "ReportUsage"):
            summary.already += 1
        else:
            summary.refused.append(
                {
                    "line": tx.line,
                    "record": tx.record,
                    "type": tx.type,
                    "status": result.status,
                    "reason": result.message,
                }
            )
    if unit.transaction is not None:
        summary.statuses[ack_status(unit)[0]] += 1


def ack_status(unit: Unit) -> tuple[str, list[Refusal]]:
    """The CWR transaction status of a unit and the problems its MSG records report: RJ
    rejected (by the file's rules or the ledger's), DU a work the ledger already holds as
    sent, CO shares in conflict with another org's claim (an overclaim), AC accepted with a
    field or record rejected on the way, AS accepted."""
    problems = list(unit.problems)
    if not unit.txs:
        return "RJ", problems
    work = next((tx for tx in unit.txs if tx.type in ("RegisterWork", "ReviseWork")), None)
    status = "AS"
    if work is not None and work.result is not None and not work.result.ok:
        if work.result.status == "ALREADY_EXISTS":
            return "DU", problems
        problems.append(
            Refusal(
                work.line,
                work.record,
                "",
                f"ledger: {work.result.status}: {work.result.message}",
                "T",
            )
        )
        return "RJ", problems
    for tx in unit.txs:
        result = tx.result
        if result is None or tx is work:
            continue
        if (
            result.ok
            and tx.type == "SetShares"
            and result.output
            and result.output.get("overclaim")
        ):
            status = "CO"
            problems.append(
                Refusal(
                    tx.line,
                    "SPU",
                    "",
                    "shares conflict with another org's claim: dispute "
                    f"{result.output.get('dispute_id', '')}",
                    "R",
                )
            )
        elif not result.ok and result.status != "ALREADY_EXISTS":
            problems.append(
                Refusal(
                    tx.line,
                    tx.record,
                    "",
                    f"ledger: {tx.type}: {result.status}: {result.message}",
                    "R",
                )
            )
    if status == "AS" and any(p.level in "RF" for p in problems):
        status = "AC"
    return status, problems


ACCEPTED = frozenset({"AS", "AC", "CO", "DU"})


def ack_lines(writer: cwr_write.AckWriter, unit: Unit) -> list[str]:
    """The ACK and MSG records of one CWR unit, with the ledger's work id when accepted."""
    tx = unit.transaction
    if tx is None:
        return []
    status, problems = ack_status(unit)
    work = tx.work
    return writer.transaction(
        group_id=tx.group_id,
        sequence=tx.sequence,
        transaction_type=tx.type,
        title=work.title if work else tx.header.text("title"),
        submitter_number=work.submitter_work_number
        if work
        else tx.header.text("submitter_work_number"),
        recipient_number=unit.work_id if status in ACCEPTED else "",
        status=status,
        problems=problems,
        first_line=tx.header.line,
    )
