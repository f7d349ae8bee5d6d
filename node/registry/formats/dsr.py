"""Reading DDEX DSR flat files (sales and usage reports from DSPs and YouTube) as the ledger's
ReportUsage lines (layouts: /work/shared/formats/DSR-LAYOUT.md, from the DDEX DSRF schemas).

    read_dsr(lines) -> iterator of DsrHeader, Summary ..., UsageLine ..., then DsrEnd

A file is HEAD, summary records (SY01, SY02, SY04, SY05, SY09), blocks of release, resource and
work records (RE, AS, MW) with their usage records (SU01, SU02, SU03; RU and LI are read and
checked, they add no usage), then FOOT. Cells are TAB-separated; `|` separates the values of a
multi-value cell; a backslash escapes TAB, `|` and itself; `ns::value` is a namespaced value
(proprietary ids); rows whose first cell starts with `#` are headings; LF or CRLF. Record types
are read by their name and major version (`SY02.01` and `SY02.03` alike, cells by position), so
the Basic Audio Profile, the UGC Profile and the older UGC 1.0 test files read the same way.

Checks: HEAD first and FOOT last (file, level E); FOOT's counts of lines, summary records and
blocks (E); every usage names a summary record of the file and a resource or release of its
block (R); each summary's detail usages and revenue do not exceed its totals (T: its lines are
refused); numbers, dates, currencies and territories (R or T). Refusals name the line, the
record and the cell. The reader is total: any bytes give values and refusals, never an
exception; a consumer that must not act on a file its FOOT rejects reads it twice (`scan`).

Each usage record becomes one UsageLine: report `<MessageId>-<SummaryRecordId>` with the
summary's service, territory, commercial model, use type, currency, revenue and usages as the
report header; line `<file>.<block>.<SalesTransactionId>` (so a re-sent file is refused line by
line), the usages, the revenue when the record gives it, and every identifier of the resource
and its works: ISRCs, ISWCs, the DSP's resource id (a YouTube Content ID for YouTube reports)
and proprietary ids.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from kledger.node.errors import Refused
from kledger.node.registry import identifiers
from kledger.node.registry.formats.problems import Refusal

MAX_LINE_CHARS = 1_000_000
MAX_VALUES = 1_000
MAX_CODES = 32
_TYPE = re.compile(r"^([A-Z]{2}[0-9]{2}|HEAD|FOOT)(\.[0-9]{2})?$")
_DATE = re.compile(r"^([0-9]{4})-([0-9]{2})(-[0-9]{2})?$")
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9._:+-]")
CURRENCY_DIGITS = {"KRW": 0, "JPY": 0, "USD": 2, "EUR": 2, "GBP": 2, "CNY": 2}
YOUTUBE_DPIDS = frozenset({"PADPIDA2013020802I"})
COMMERCIAL_MODELS = {
    "advertisementsupportedmodel": "ad_supported",
    "subscriptionmodel": "subscription",
    "payasyougomodel": "purchase",
    "pertransactionmodel": "purchase",
    "rightsclaimmodel": "other",
    "freeofchargemodel": "other",
}
USE_TYPES = {
    "stream": "stream",
    "ondemandstream": "stream",
    "noninteractivestream": "stream",
    "permanentdownload": "download",
    "download": "download",
    "conditionaldownload": "download",
    "tetheredddownload": "download",
    "usermadeclip": "ugc",
    "broadcast": "broadcast",
}
# Summary records: cell positions (1-based as in the DSR pages) of what a report header needs.
SUMMARY_CELLS: dict[str, dict[str, int]] = {
    "SY01": {
        "id": 2,
        "model": 5,
        "use": 6,
        "territory": 7,
        "service": 8,
        "usages": 9,
        "currency": 11,
        "revenue": 12,
    },
    "SY02": {
        "id": 2,
        "model": 5,
        "use": 6,
        "territory": 7,
        "service": 8,
        "usages": 9,
        "currency": 11,
        "revenue": 12,
    },
    "SY04": {
        "id": 2,
        "model": 5,
        "use": 6,
        "territory": 7,
        "service": 8,
        "usages": 14,
        "currency": 15,
        "revenue": 19,
    },
    "SY05": {
        "id": 2,
        "model": 5,
        "use": 6,
        "territory": 7,
        "service": 8,
        "usages": 12,
        "currency": 18,
        "revenue": 16,
    },
    "SY09": {
        "id": 2,
        "model": 3,
        "use": 4,
        "territory": 5,
        "service": 6,
        "usages": 11,
        "currency": 16,
        "revenue": 13,
    },
}
# Usage records: (summary id, sales transaction id, release ref, resource ref, usages, revenue)
USAGE_CELLS: dict[str, dict[str, int]] = {
    "SU01": {"summary": 3, "id": 4, "release": 5, "resource": 6, "usages": 9},
    "SU02": {"summary": 3, "id": 4, "release": 5, "resource": 6, "usages": 8},
    "SU03": {"summary": 4, "id": 3, "dsp_resource": 5, "usages": 6, "revenue": 7},
}
DETAIL_TYPES = frozenset(
    {"RE01", "RE02", "RE03", "AS01", "AS02", "AS03", "MW01", "RU01", "RU02", "LI01", "CU01"}
)


@dataclass(frozen=True, slots=True)
class DsrHeader:
    line: int
    message_version: str
    profile: str
    profile_version: str
    message_id: str
    file_number: int
    number_of_files: int
    usage_start: str
    usage_end: str
    sender_id: str
    sender_name: str
    service: str

    @property
    def period(self) -> str:
        """The ledger's month for the report: the month usage starts in."""
        return self.usage_start[:7]

    @property
    def youtube(self) -> bool:
        return self.sender_id in YOUTUBE_DPIDS or self.sender_name.lower() == "youtube"


@dataclass(slots=True)
class Summary:
    line: int
    summary_id: str
    record: str
    commercial_model: str
    use_type: str
    territory: str
    service: str
    currency: str
    usages: int
    revenue_minor: int
    problems: list[Refusal] = field(default_factory=list)


@dataclass(slots=True)
class UsageLine:
    line: int
    record: str
    report: dict[str, Any]  # the ReportUsage header (report_id, period, territory, ...)
    usage: dict[str, Any]  # the ReportUsage line (line_id, code_kind, code, usages, ...)
    summary_id: str


@dataclass(slots=True)
class DsrEnd:
    problems: list[Refusal]  # file level (E) and summary level (T)
    refused_summaries: set[str]
    lines: int
    summaries: int
    blocks: int
    usage_lines: int
    used: dict[str, list[int]] = field(default_factory=dict)  # summary -> [usages, revenue]

    @property
    def rejected(self) -> bool:
        return any(p.level == "E" for p in self.problems)


def split_cells(text: str, separator: str, keep_escapes: bool = False) -> list[str]:
    """Split on unescaped `separator`; a backslash makes the next character literal. With
    `keep_escapes` (TAB cells) escapes of other characters stay, for the multi-value split."""
    cells: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char if not keep_escapes or char == separator else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            cells.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        current.append("\\")
    cells.append("".join(current))
    return cells


def _raw_cells(text: str) -> list[str]:
    """TAB-separated cells, the multi-value escapes left in place for `values`."""
    return split_cells(text, "\t", keep_escapes=True)


def values(cell: str) -> list[str]:
    """The values of a multi-value cell (empty values dropped)."""
    return [v for v in split_cells(cell, "|") if v][:MAX_VALUES]


def single(cell: str) -> str:
    return "|".join(split_cells(cell, "|"))


def _cell(cells: list[str], position: int) -> str:
    return single(cells[position - 1]).strip() if position - 1 < len(cells) else ""


def _integer(text: str) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)
    return None


def minor_units(text: str, currency: str) -> int | None:
    """A decimal amount in minor units of the currency (half-even rounding), or None."""
    if not text or len(text) > 40 or not re.match(r"^-?[0-9]+(\.[0-9]+)?$", text):
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    digits = CURRENCY_DIGITS.get(currency, 2)
    return int((amount * (10**digits)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def token(text: str) -> str:
    cleaned = _TOKEN_BAD.sub("_", text.strip())[:64]
    return cleaned if cleaned and cleaned[0].isalnum() else ("X" + cleaned)[:64]


@dataclass(slots=True)
class _Block:
    block_id: str
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # by reference
    by_dsp_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_resource: dict[str, Any] | None = None
    usages: list[tuple[int, str, list[str]]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)


class _Reader:
    def __init__(self) -> None:
        self.header: DsrHeader | None = None
        self.summaries: dict[str, Summary] = {}
        self.summary_records = 0
        self.problems: list[Refusal] = []
        self.block: _Block | None = None
        self.blocks_seen: set[str] = set()
        self.lines = 0
        self.foot: tuple[int, list[str]] | None = None
        self.usage_lines = 0
        self.used: dict[str, list[int]] = {}  # summary id -> [usages, revenue_minor]
        self.done = False

    def refuse(self, line: int, record: str, cell: str, reason: str, level: str = "R") -> None:
        self.problems.append(Refusal(line, record, cell, reason, level))
        if level == "E":
            self.done = True

    def read_head(self, number: int, cells: list[str]) -> None:
        def cell(position: int) -> str:
            return _cell(cells, position)

        file_number, files = _integer(cell(7)), _integer(cell(8))
        for name, position in (("FileNumber", 7), ("NumberOfFiles", 8)):
            if _integer(cell(position)) is None:
                self.refuse(number, "HEAD", name, f"{cell(position)!r} is not a number", "E")
        start, end = cell(9), cell(10)
        for name, text in (("UsageStartDate", start), ("UsageEndDate", end)):
            match = _DATE.match(text)
            if not match or not 1 <= int(match.group(2)) <= 12:
                self.refuse(number, "HEAD", name, f"{text!r} is not a date YYYY-MM-DD", "E")
        if not cell(5):
            self.refuse(number, "HEAD", "MessageId", "is mandatory", "E")
        self.header = DsrHeader(
            number,
            cell(2),
            cell(3),
            cell(4),
            cell(5),
            file_number or 0,
            files or 0,
            start,
            end,
            cell(11),
            cell(12),
            cell(13),
        )

    def read_summary(self, number: int, record: str, base: str, cells: list[str]) -> None:
        spec = SUMMARY_CELLS[base]

        def cell(name: str) -> str:
            return _cell(cells, spec[name])

        self.summary_records += 1
        summary_id = cell("id")
        if not summary_id:
            self.refuse(number, record, "SummaryRecordId", "is mandatory")
            return
        currency = cell("currency")
        summary = Summary(
            number,
            summary_id,
            record,
            COMMERCIAL_MODELS.get(cell("model").lower(), "other"),
            USE_TYPES.get(cell("use").lower(), "other"),
            cell("territory"),
            cell("service") or (self.header.service if self.header else ""),
            currency,
            0,
            0,
        )
        usages = _integer(cell("usages") or "0")
        revenue = minor_units(cell("revenue") or "0", currency)
        if usages is None:
            summary.problems.append(
                Refusal(number, record, "Usages", f"{cell('usages')!r} is not a number", "T")
            )
        if revenue is None:
            summary.problems.append(
                Refusal(number, record, "NetRevenue", f"{cell('revenue')!r} is not an amount", "T")
            )
        if currency not in CURRENCY_DIGITS:
            summary.problems.append(
                Refusal(
                    number,
                    record,
                    "CurrencyOfReporting",
                    f"{currency!r} is not one the ledger books "
                    f"({', '.join(sorted(CURRENCY_DIGITS))})",
                    "T",
                )
            )
        territory = summary.territory
        if territory not in identifiers.ISO_COUNTRIES:
            summary.problems.append(
                Refusal(
                    number,
                    record,
                    "Territory",
                    f"{territory!r}: usage is booked per country (ISO 3166-1 alpha-2)",
                    "T",
                )
            )
        earlier = self.summaries.get(summary_id)
        if earlier is not None:
            # One summary, allocated to several rights controllers (SY02 per controller).
            for name in ("commercial_model", "use_type", "territory", "currency"):
                if getattr(earlier, name) != getattr(summary, name):
                    earlier.problems.append(
                        Refusal(
                            number,
                            record,
                            name,
                            f"differs from summary record {summary_id} on line {earlier.line}",
                            "T",
                        )
                    )
            earlier.usages += usages or 0
            earlier.revenue_minor += revenue or 0
            earlier.problems += summary.problems
            return
        summary.usages, summary.revenue_minor = usages or 0, revenue or 0
        self.summaries[summary_id] = summary

    def read_detail(self, number: int, record: str, base: str, cells: list[str]) -> list[UsageLine]:
        block_id = _cell(cells, 2)
        if not block_id:
            self.refuse(number, record, "BlockId", "is mandatory")
            return []
        finished: list[UsageLine] = []
        if self.block is None or self.block.block_id != block_id:
            if self.block is not None:
                finished = self.close_block()
            if block_id in self.blocks_seen:
                self.refuse(
                    number,
                    record,
                    "BlockId",
                    f"block {block_id} continues after another block",
                    "E",
                )
                return finished
            self.blocks_seen.add(block_id)
            self.block = _Block(block_id)
        block = self.block
        if base.startswith("RE"):
            block.releases[_cell(cells, 3)] = {
                "icpn": _cell(cells, 7),
                "proprietary": values(cells[4]) if len(cells) > 4 else [],
            }
        elif base.startswith("AS"):
            resource = self.resource(number, record, base, cells)
            block.resources[_cell(cells, 3)] = resource
            block.by_dsp_id[_cell(cells, 4)] = resource
            block.last_resource = resource
        elif base == "MW01":
            if block.last_resource is None:
                self.refuse(
                    number, record, "BlockId", "a work record before any resource of its block"
                )
            else:
                self.work(number, record, cells, block.last_resource)
        elif base.startswith("SU"):
            block.usages.append((number, record, cells))
        elif base.startswith("RU"):
            ids, counts = (
                (values(cells[3]) if len(cells) > 3 else []),
                (values(cells[4]) if len(cells) > 4 else []),
            )
            if base == "RU01" and len(ids) != len(counts):
                self.refuse(
                    number, record, "Usages", f"{len(counts)} usages for {len(ids)} releases"
                )
            elif any(_integer(c) is None for c in counts):
                self.refuse(number, record, "Usages", "not all numbers")
        return finished

    def resource(self, number: int, record: str, base: str, cells: list[str]) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "title": _cell(cells, 6),
            "artist": _cell(cells, 8),
            "isrcs": [],
            "iswcs": [],
            "proprietary": [],
            "dsp_id": _cell(cells, 4),
        }
        for raw in values(cells[4]) if len(cells) > 4 else []:
            try:
                resource["isrcs"].append(identifiers.parse_isrc(raw, "ISRC"))
            except Refused as refusal:
                self.refuse(number, record, "ISRC", refusal.message.split(": ", 1)[-1], "F")
        if base == "AS02":
            self.add_iswc(number, record, _cell(cells, 12), resource)
            if _cell(cells, 21):
                resource["proprietary"].append(_cell(cells, 21))
        return resource

    def work(self, number: int, record: str, cells: list[str], resource: dict[str, Any]) -> None:
        self.add_iswc(number, record, _cell(cells, 4), resource)
        resource.setdefault("work_title", _cell(cells, 5))
        # Proprietary work ids (cell 16) are `ns::value`; real test files put them earlier too.
        for cell in cells[5:]:
            for value in values(cell):
                if "::" in value and value not in resource["proprietary"]:
                    resource["proprietary"].append(value.strip())

    def add_iswc(self, number: int, record: str, text: str, resource: dict[str, Any]) -> None:
        if not text:
            return
        try:
            iswc = identifiers.parse_iswc(text, "ISWC")
        except Refused as refusal:
            self.refuse(number, record, "ISWC", refusal.message.split(": ", 1)[-1], "F")
            return
        if iswc not in resource["iswcs"]:
            resource["iswcs"].append(iswc)

    def close_block(self) -> list[UsageLine]:
        block, self.block = self.block, None
        if block is None or self.header is None:
            return []
        out = []
        for number, record, cells in block.usages:
            line = self.usage(block, number, record, cells)
            if line is not None:
                out.append(line)
        return out

    def usage(self, block: _Block, number: int, record: str, cells: list[str]) -> UsageLine | None:
        header = self.header
        assert header is not None
        spec = USAGE_CELLS.get(record[:4])
        if spec is None:
            self.refuse(
                number, record, "RecordType", f"{record} is not a usage record this reader books"
            )
            return None

        def cell(name: str) -> str:
            return _cell(cells, spec[name]) if name in spec else ""

        summary = self.summaries.get(cell("summary"))
        if summary is None:
            self.refuse(
                number,
                record,
                "SummaryRecordId",
                f"{cell('summary')!r} names no summary record of this file",
            )
            return None
        usages = _integer(cell("usages"))
        if usages is None or usages == 0:
            self.refuse(number, record, "Usages", f"{cell('usages')!r} is not a positive number")
            return None
        transaction = cell("id")
        if not transaction:
            self.refuse(number, record, "SalesTransactionId", "is mandatory")
            return None
        if transaction in block.seen_ids:
            self.refuse(
                number,
                record,
                "SalesTransactionId",
                f"{transaction} appears twice in block {block.block_id}",
            )
            return None
        block.seen_ids.add(transaction)
        resource: dict[str, Any] | None = None
        release: dict[str, Any] | None = None
        # What the usage points at: the DSP's resource id (SU03), else its resource or its
        # release reference in the block (SU01, SU02: exactly one of the two).
        pointers = (
            ("dsp_resource", "DspResourceId", block.by_dsp_id, "resource"),
            ("resource", "TransactedResource", block.resources, "resource"),
            ("release", "TransactedRelease", block.releases, "release"),
        )
        for name, cell_name, table, what in pointers:
            if name not in spec or (name != "dsp_resource" and not cell(name)):
                continue
            target = table.get(cell(name))
            if target is None:
                self.refuse(
                    number,
                    record,
                    cell_name,
                    f"{cell(name)!r} is no {what} of block {block.block_id}",
                )
                return None
            resource, release = (target, None) if what == "resource" else (None, target)
            break
        else:
            self.refuse(
                number, record, "TransactedResource", "names neither a release nor a resource"
            )
            return None
        revenue: int | None = None
        if "revenue" in spec and cell("revenue"):
            revenue = minor_units(cell("revenue"), summary.currency)
            if revenue is None or revenue < 0:
                self.refuse(number, record, "NetRevenue", f"{cell('revenue')!r} is not an amount")
                return None
        codes: list[dict[str, str]] = []
        if resource is not None:
            codes += [{"kind": "isrc", "value": v} for v in resource["isrcs"]]
            codes += [{"kind": "iswc", "value": v} for v in resource["iswcs"]]
            if header.youtube and resource["dsp_id"]:
                with contextlib.suppress(Refused):  # not a Content ID: the DSP's id only
                    codes.append(
                        {"kind": "cid", "value": identifiers.parse_cid(resource["dsp_id"], "cid")}
                    )
            codes += [{"kind": "proprietary", "value": v[:128]} for v in resource["proprietary"]]
        elif release is not None:
            codes += (
                [{"kind": "proprietary", "value": f"ICPN::{release['icpn']}"}]
                if release["icpn"]
                else []
            )
            codes += [{"kind": "proprietary", "value": v[:128]} for v in release["proprietary"]]
        codes = codes[:MAX_CODES]
        used = self.used.setdefault(summary.summary_id, [0, 0])
        used[0] += usages
        used[1] += revenue or 0
        self.usage_lines += 1
        primary = next((c for c in codes if c["kind"] in ("isrc", "iswc", "cid", "uci")), None)
        primary = primary or (
            codes[0]
            if codes
            else {"kind": "proprietary", "value": f"{header.message_id}:{block.block_id}"[:128]}
        )
        line: dict[str, Any] = {
            "line_id": token(f"{header.file_number}.{block.block_id}.{transaction}"),
            "code_kind": primary["kind"],
            "code": primary["value"],
            "usages": usages,
        }
        others = [c for c in codes if c != primary]
        if others:
            line["codes"] = others
        if revenue is not None:
            line["revenue_minor"] = revenue
        title = resource["title"] if resource else ""
        if title:
            line["title"] = title[:256]
        report = {
            "report_id": token(f"{header.message_id}-{summary.summary_id}"),
            "period": header.period,
            "territory": summary.territory,
            "service": (summary.service or header.sender_name or "DSP")[:128],
            "commercial_model": summary.commercial_model,
            "use_type": summary.use_type,
            "currency": summary.currency,
            "net_revenue_minor": summary.revenue_minor,
            "total_usages": summary.usages,
        }
        return UsageLine(number, record, report, line, summary.summary_id)

    def feed(self, number: int, raw: bytes) -> list[UsageLine]:
        self.lines += 1
        if self.done:
            if raw.strip() and self.foot is not None:
                self.refuse(number, "", "", "rows after FOOT", "E")
            return []
        body = raw.rstrip(b"\r\n")
        if len(body) > MAX_LINE_CHARS:
            self.refuse(number, "", "", f"a row of more than {MAX_LINE_CHARS} characters")
            return []
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            self.refuse(number, "", "", "not UTF-8")
            return []
        if not text.strip() or text.startswith("#"):
            return []
        cells = _raw_cells(text)
        record = cells[0].strip()
        match = _TYPE.match(record)
        if self.header is None:
            if record != "HEAD":
                self.refuse(number, record[:16], "RecordType", "the first record must be HEAD", "E")
                return []
            self.read_head(number, cells)
            return []
        if match is None:
            self.refuse(
                number, record[:16], "RecordType", f"{record[:16]!r} is not a DSR record type"
            )
            return []
        base = match.group(1)
        if base == "HEAD":
            self.refuse(number, "HEAD", "RecordType", "a second HEAD", "E")
            return []
        if base == "FOOT":
            finished = self.close_block()
            self.foot = (number, cells)
            self.done = True
            return finished
        if base in SUMMARY_CELLS:
            if self.blocks_seen:
                self.refuse(
                    number, record, "RecordType", "a summary record after the blocks began", "E"
                )
                return []
            self.read_summary(number, record, base, cells)
            return []
        if base in DETAIL_TYPES or base in USAGE_CELLS:
            return self.read_detail(number, record, base, cells)
        self.refuse(number, record, "RecordType", f"{record} is not a record this reader takes")
        return []

    def end(self, last_line: int) -> DsrEnd:
        refused: set[str] = set()
        if self.header is None:
            if not self.problems:
                self.refuse(0, "", "", "the file is empty", "E")
        elif self.foot is None:
            if not any(p.level == "E" for p in self.problems):
                self.refuse(last_line, "", "", "the last record must be FOOT", "E")
        else:
            self.check_foot()
        for summary in self.summaries.values():
            problems = list(summary.problems)
            usages, revenue = self.used.get(summary.summary_id, [0, 0])
            if summary.usages and usages > summary.usages:
                problems.append(
                    Refusal(
                        summary.line,
                        summary.record,
                        "Usages",
                        f"the usage records add up to {usages}, "
                        f"more than the summary's {summary.usages}",
                        "T",
                    )
                )
            if revenue > summary.revenue_minor:
                problems.append(
                    Refusal(
                        summary.line,
                        summary.record,
                        "NetRevenue",
                        f"the usage records' revenue adds up to {revenue} minor units, "
                        f"more than the summary's {summary.revenue_minor}",
                        "T",
                    )
                )
            if problems:
                refused.add(summary.summary_id)
                self.problems += problems
        return DsrEnd(
            self.problems,
            refused,
            self.lines,
            self.summary_records,
            len(self.blocks_seen),
            self.usage_lines,
            self.used,
        )

    def check_foot(self) -> None:
        assert self.foot is not None and self.header is not None
        number, cells = self.foot
        single_file = self.header.number_of_files == 1
        expected = {
            2: ("NumberOfLinesInFile", self.lines),
            4: ("NumberOfSummaryRecords", self.summary_records),
            5: ("NumberOfBlocksInFile", len(self.blocks_seen)),
        }
        if single_file:
            expected[3] = ("NumberOfLinesInReport", self.lines)
            expected[6] = ("NumberOfBlocksInReport", len(self.blocks_seen))
        for position, (name, actual) in sorted(expected.items()):
            text = _cell(cells, position)
            if not text and position in (3, 6):
                continue  # report totals are only mandatory in the last file
            if _integer(text) != actual:
                self.refuse(number, "FOOT", name, f"says {text!r}, the file has {actual}", "E")


Item = DsrHeader | Summary | UsageLine | DsrEnd


def read_dsr(lines: Iterable[bytes]) -> Iterator[Item]:
    """DsrHeader, the Summary records (once the blocks begin), each UsageLine as its block
    ends, and DsrEnd last."""
    reader = _Reader()
    sent_header = sent_summaries = False
    number = 0
    for number, raw in enumerate(lines, start=1):
        finished = reader.feed(number, raw if isinstance(raw, bytes) else bytes(raw))
        if reader.header is not None and not sent_header:
            sent_header = True
            yield reader.header
        if (reader.blocks_seen or reader.done) and not sent_summaries:
            sent_summaries = True
            yield from reader.summaries.values()
        yield from finished
    yield from reader.close_block()
    if not sent_summaries:
        yield from reader.summaries.values()
    yield reader.end(number)


def scan(lines: Iterable[bytes]) -> tuple[DsrHeader | None, DsrEnd]:
    header: DsrHeader | None = None
    end = DsrEnd([], set(), 0, 0, 0, 0)
    for item in read_dsr(lines):
        if isinstance(item, DsrHeader):
            header = item
        elif isinstance(item, DsrEnd):
            end = item
    return header, end
