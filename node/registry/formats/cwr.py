"""Reading CISAC CWR 2.1 / 2.2 files: structure, counts, fields, transactions and the CWR share
rules, at the error levels of the specification (CWR 2.2 Rev. 2 §3.3: E file, G group,
T transaction, R record, F field).

    read_cwr(lines) -> iterator of FileHeader, then Transaction ..., then FileEnd

`lines` are the file's raw lines (bytes, CRLF or LF). The reader is total: any input gives
values and `Refusal`s, never an exception. It is lenient where real senders are (trailing
blanks trimmed, CRLF or LF, blank lines, a 2.2 record in a 2.1 file is passed over as a record
refusal) and strict where the specification is: the first record is HDR, groups are GRH ... GRT,
the last record is TRL; sequence numbers follow; GRT and TRL counts match (a wrong GRT count
rejects its group, a wrong TRL count the file); an unknown record type rejects the file.

Transactions are yielded as they end, before the group and file trailers are read: a consumer
that must not act on a file the trailer rejects reads it twice (`scan` first).

Placeholders for an unknown party (an all-zero IPI name number, blank name fields, the unknown
indicator `Y`) are read as unknown: the party's `unknown` is true and no identifier is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kledger.node.errors import Refused
from kledger.node.registry import identifiers
from kledger.node.registry.formats import cwr_layout as layout
from kledger.node.registry.formats import territories
from kledger.node.registry.formats.cwr_layout import Field
from kledger.node.registry.formats.problems import Refusal
from kledger.node.registry.formats.societies import society_name

FULL = 10_000
TOLERANCE = 6  # CWR: +/- 0.06 %
RIGHTS = ("PR", "MR", "SR")
MAX_LINE_CHARS = 2_000
MAX_RECORDS_PER_TRANSACTION = 2_000
SENDER_TYPES = frozenset({"PB", "SO", "AA", "WR"})
PUBLISHER_TYPES = frozenset({"E", "AM", "SE", "AQ", "PA", "ES"})
OWNING_PUBLISHER_TYPES = frozenset({"E", "AQ"})
WRITER_DESIGNATIONS = frozenset({"A", "AD", "AR", "C", "CA", "PA", "SA", "SR", "TR"})
ORIGINAL_DESIGNATIONS = frozenset({"A", "C", "CA"})
ADAPTING_DESIGNATIONS = frozenset({"AD", "AR", "SA", "SR", "TR"})
TITLE_TYPES = frozenset({"AL", "AT", "ET", "FT", "IT", "OL", "OT", "PT", "RT", "TE", "TT"})
GROUP_TYPES = frozenset({"NWR", "REV", "ISW", "EXC", "ACK", "AGR"})
GROUP_VERSIONS = {"2.1": "02.10", "2.2": "02.20"}
_DIGITS = re.compile(r"^[0-9]+$")
_IPI_BASE = re.compile(r"^I-[0-9]{9}-[0-9]$")
# Records whose rejection leaves the transaction's shares unknowable: their transaction goes too.
SHARE_RECORDS = frozenset({"SPU", "OPU", "SPT", "OPT", "SWR", "OWR", "SWT", "OWT"})


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileHeader:
    line: int
    sender_type: str
    sender_id: str
    sender_name: str
    creation_date: str
    creation_time: str
    transmission_date: str
    character_set: str
    version: str  # "2.1" or "2.2"
    revision: int
    software: str

    @property
    def sender(self) -> str:
        """A short name for the sender: a society's name, else type and number (PB199), or
        IPI + the 11-digit IPNN when the type holds its two leading digits."""
        number = self.sender_id.lstrip("0") or "0"
        if self.sender_type == "SO":
            name = society_name(self.sender_id[-3:])
            return name if not name.startswith("CISAC-") else f"SO{number}"
        if self.sender_type.isdigit():
            return f"IPI{self.sender_type}{self.sender_id}"
        return f"{self.sender_type}{number}"


@dataclass(slots=True)
class Record:
    line: int
    type: str
    transaction_sequence: int
    record_sequence: int
    values: dict[str, Any]

    def text(self, name: str) -> str:
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""

    def number(self, name: str) -> int:
        value = self.values.get(name, 0)
        return value if isinstance(value, int) else 0


@dataclass(slots=True)
class TerritoryShare:
    line: int
    record: str
    included: bool
    tis: str
    collection: dict[str, int]
    shares_change: bool


@dataclass(slots=True)
class Party:
    """One interested party of a work: SPU/OPU (publisher) or SWR/OWR (writer)."""

    line: int
    record: str
    kind: str  # "publisher" | "writer"
    controlled: bool
    ip_number: str
    name: str
    first_name: str
    role: str  # publisher type or writer designation ("" when not given)
    unknown: bool
    ipi_name: str
    ipi_base: str
    societies: dict[str, str]
    ownership: dict[str, int]
    chain: int = 0  # publisher sequence # (publishers); writers: the chains of their PWRs
    chains: list[int] = field(default_factory=list)
    territories: list[TerritoryShare] = field(default_factory=list)
    non_roman_name: str = ""

    @property
    def display_name(self) -> str:
        if self.kind == "writer" and self.first_name:
            return f"{self.first_name} {self.name}".strip()
        return self.name


@dataclass(slots=True)
class Work:
    title: str
    language: str
    submitter_work_number: str
    iswc: str
    version_type: str
    distribution_category: str
    duration_s: int
    recorded: str
    parties: list[Party] = field(default_factory=list)
    alternate_titles: list[dict[str, str]] = field(default_factory=list)
    original: dict[str, str] = field(default_factory=dict)  # VER
    performers: list[dict[str, str]] = field(default_factory=list)
    recordings: list[dict[str, str]] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)
    cross_references: list[dict[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class Transaction:
    group_id: int
    group_type: str
    sequence: int
    header: Record
    details: list[Record] = field(default_factory=list)
    problems: list[Refusal] = field(default_factory=list)
    work: Work | None = None

    @property
    def type(self) -> str:
        return self.header.type

    @property
    def rejected(self) -> bool:
        return any(p.level in "EGT" for p in self.problems)

    @property
    def changed(self) -> bool:
        """Accepted, but a field or a record was rejected on the way (status AC, not AS)."""
        return any(p.level in "RF" for p in self.problems)


@dataclass(slots=True)
class FileEnd:
    problems: list[Refusal]  # file- and group-level
    rejected_groups: set[int]
    groups: int
    transactions: int
    records: int

    @property
    def rejected(self) -> bool:
        return any(p.level == "E" for p in self.problems)


# -- fields ----------------------------------------------------------------------------------


def decode_line(raw: bytes, charset: str) -> tuple[str, str]:
    """(text, problem): bytes as the HDR's character set says; ASCII files with other bytes are
    read as UTF-8, then as Windows-1252 (lenient: real files carry accented names)."""
    body = raw.rstrip(b"\r\n")
    if charset.upper().replace("-", "") in ("UTF8", "UNICODE"):
        try:
            return body.decode("utf-8"), ""
        except UnicodeDecodeError:
            return body.decode("utf-8", "replace"), "not valid UTF-8 as the HDR declares"
    try:
        return body.decode("ascii"), ""
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("utf-8"), ""
    except UnicodeDecodeError:
        return body.decode("cp1252", "replace"), ""


def _slice(text: str, spec: Field) -> str:
    return text[spec.start - 1 : spec.end]


def is_digits(text: str) -> bool:
    return bool(_DIGITS.match(text))


def parse_fields(
    text: str, fields: tuple[Field, ...], line: int, record: str
) -> tuple[dict[str, Any], list[Refusal]]:
    """Slice and type the fields of one record. Numbers and shares become ints (blank -> 0),
    dates and times stay text ('' when blank or zero). A mandatory field left blank or a number
    that is not one rejects the record (R); a bad optional date, time or flag is blanked (F)."""
    values: dict[str, Any] = {}
    problems: list[Refusal] = []
    for spec in fields:
        raw = _slice(text, spec)
        value = raw.strip()
        if spec.kind in ("N", "S"):
            if not value:
                values[spec.name] = 0
            elif is_digits(value):
                values[spec.name] = int(value)
            else:
                problems.append(
                    Refusal(line, record, spec.name, f"{raw.strip()!r} is not a number", "R")
                )
                values[spec.name] = 0
            if spec.kind == "S" and values[spec.name] and len(value) != spec.size:
                problems.append(
                    Refusal(line, record, spec.name, f"share {value!r} is not 5 digits", "R")
                )
        elif spec.kind == "D":
            if value in ("", "00000000"):
                value = ""
            elif not _valid_date(value):
                problems.append(
                    Refusal(line, record, spec.name, f"{value!r} is not a date YYYYMMDD", "F")
                )
                value = ""
            values[spec.name] = value
        elif spec.kind == "T":
            if value in ("", "000000"):
                value = ""
            elif not (len(value) == 6 and is_digits(value) and value[2:4] < "60" > value[4:]):
                problems.append(Refusal(line, record, spec.name, f"{value!r} is not HHMMSS", "F"))
                value = ""
            values[spec.name] = value
        elif spec.kind in ("F", "B"):
            allowed = ("Y", "N", "U") if spec.kind == "F" else ("Y", "N")
            if value and value not in allowed:
                problems.append(
                    Refusal(line, record, spec.name, f"{value!r} is not {'/'.join(allowed)}", "F")
                )
                value = ""
            values[spec.name] = value
        else:
            values[spec.name] = value
        if spec.required == "M" and values[spec.name] in ("", None) and spec.kind not in "NS":
            problems.append(Refusal(line, record, spec.name, "is mandatory", "R"))
    return values, problems


def _valid_date(value: str) -> bool:
    if len(value) != 8 or not is_digits(value):
        return False
    month, day = int(value[4:6]), int(value[6:])
    return 1 <= month <= 12 and 1 <= day <= 31


def duration_s(hhmmss: str) -> int:
    if len(hhmmss) != 6 or not is_digits(hhmmss):
        return 0
    return int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:])


def ipi_name(value: str, line: int, record: str, name: str) -> tuple[str, list[Refusal]]:
    """A valid IPI name number, '' for the unknown placeholders, or '' with a field refusal."""
    if not value or set(value) == {"0"}:
        return "", []
    text = value.zfill(11) if is_digits(value) and len(value) < 11 else value
    try:
        return identifiers.parse_ipi(text, name), []
    except Refused as refusal:
        return "", [Refusal(line, record, name, refusal.message.split(": ", 1)[-1], "F")]


def ipi_base(value: str, line: int, record: str, name: str) -> tuple[str, list[Refusal]]:
    if not value or value.replace("-", "").strip("I0") == "":
        return "", []
    if _IPI_BASE.match(value):
        return value, []
    return "", [
        Refusal(line, record, name, f"{value!r} is not an IPI base number I-NNNNNNNNN-C", "F")
    ]


# -- reading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Group:
    group_id: int
    type: str
    line: int
    transactions: int = 0
    records: int = 1  # the GRH


class _Reader:
    def __init__(self, structure_only: bool = False) -> None:
        # The first of a consumer's two passes needs the file's structure and counts only.
        self.structure_only = structure_only
        self.header: FileHeader | None = None
        self.problems: list[Refusal] = []
        self.rejected_groups: set[int] = set()
        self.group: _Group | None = None
        self.seen_group_types: set[str] = set()
        self.groups = 0
        self.transactions = 0
        self.records = 0
        self.current: Transaction | None = None
        self.last_record_sequence = 0
        self.expected_group_id = 1
        self.done = False  # TRL read, or a file-level problem that stops reading
        self.trailer_seen = False

    @property
    def version(self) -> str:
        return self.header.version if self.header else "2.1"

    def file_problem(self, line: int, record: str, field_name: str, reason: str) -> None:
        self.problems.append(Refusal(line, record, field_name, reason, "E"))
        self.done = True

    def group_problem(self, line: int, record: str, field_name: str, reason: str) -> None:
        self.problems.append(Refusal(line, record, field_name, reason, "G"))
        if self.group is not None:
            self.rejected_groups.add(self.group.group_id)

    def close_transaction(self) -> Transaction | None:
        finished, self.current = self.current, None
        if finished is not None and not self.structure_only:
            validate_transaction(finished, self.version)
        return finished

    def read_hdr(self, number: int, text: str) -> None:
        values, problems = parse_fields(text, layout.HDR, number, "HDR")
        for problem in problems:
            if problem.level == "R" or problem.field in ("creation_date", "transmission_date"):
                self.file_problem(number, "HDR", problem.field, problem.reason)
        sender_type = values["sender_type"]
        if sender_type not in SENDER_TYPES and not (
            len(sender_type) == 2 and is_digits(sender_type)
        ):
            self.file_problem(
                number, "HDR", "sender_type", f"{sender_type!r} is not PB, SO, AA or WR"
            )
        if values["edi_version"] != "01.10":
            self.file_problem(number, "HDR", "edi_version", "must be 01.10")
        version = values["version"] or "2.1"
        if version not in ("2.1", "2.2"):
            self.file_problem(
                number, "HDR", "version", f"{version!r}: this reader takes 2.1 or 2.2"
            )
            version = "2.1"
        self.header = FileHeader(
            line=number,
            sender_type=sender_type,
            sender_id=_slice(text, layout.HDR[2]).strip(),
            sender_name=values["sender_name"],
            creation_date=values["creation_date"],
            creation_time=values["creation_time"],
            transmission_date=values["transmission_date"],
            character_set=values["character_set"],
            version=version,
            revision=values["revision"] if isinstance(values["revision"], int) else 0,
            software=" ".join(
                v for v in (values["software_package"], values["software_version"]) if v
            ),
        )

    def read_grh(self, number: int, text: str) -> None:
        values, problems = parse_fields(text, layout.GRH, number, "GRH")
        group_id = values["group_id"] if isinstance(values["group_id"], int) else 0
        self.group = _Group(group_id, values["transaction_type"], number)
        self.groups += 1
        self.last_record_sequence = 0
        for problem in problems:
            self.group_problem(number, "GRH", problem.field, problem.reason)
        if group_id != self.expected_group_id:
            self.group_problem(
                number, "GRH", "group_id", f"is {group_id}, expected {self.expected_group_id}"
            )
        self.expected_group_id = group_id + 1
        if values["transaction_type"] not in GROUP_TYPES:
            self.group_problem(
                number, "GRH", "transaction_type", f"{values['transaction_type']!r} is unknown"
            )
        elif values["transaction_type"] in self.seen_group_types:
            # GR in the specification; societies' own ACK files repeat the type (PRS): noted.
            self.problems.append(
                Refusal(number, "GRH", "transaction_type", "a second group of this type", "F")
            )
        self.seen_group_types.add(values["transaction_type"])
        want = GROUP_VERSIONS[self.version]
        if values["version_number"] != want:
            self.group_problem(
                number,
                "GRH",
                "version_number",
                f"is {values['version_number']!r}, a CWR {self.version} file has {want}",
            )

    def read_grt(self, number: int, text: str) -> None:
        group = self.group
        assert group is not None
        group.records += 1
        values, problems = parse_fields(text, layout.GRT, number, "GRT")
        for problem in problems:
            self.group_problem(number, "GRT", problem.field, problem.reason)
        if values["group_id"] != group.group_id:
            self.group_problem(
                number, "GRT", "group_id", f"is {values['group_id']}, the GRH has {group.group_id}"
            )
        if values["transaction_count"] != group.transactions:
            self.group_problem(
                number,
                "GRT",
                "transaction_count",
                f"says {values['transaction_count']}, the group has {group.transactions}",
            )
        if values["record_count"] != group.records:
            self.group_problem(
                number,
                "GRT",
                "record_count",
                f"says {values['record_count']}, the group has {group.records} records",
            )
        self.group = None

    def read_trl(self, number: int, text: str) -> None:
        values, problems = parse_fields(text, layout.TRL, number, "TRL")
        for problem in problems:
            self.file_problem(number, "TRL", problem.field, problem.reason)
        self.done = False
        for name, actual in (
            ("group_count", self.groups),
            ("transaction_count", self.transactions),
            ("record_count", self.records),
        ):
            if values[name] != actual:
                self.file_problem(
                    number, "TRL", name, f"says {values[name]}, the file has {actual}"
                )
        self.trailer_seen = True
        self.done = True

    def read_detail(self, number: int, text: str, record_type: str) -> Transaction | None:
        """A transaction header or detail record inside a group; returns a finished
        transaction when this record starts the next one."""
        group = self.group
        assert group is not None
        group.records += 1
        prefix, problems = parse_fields(text, layout.PREFIX, number, record_type)
        if problems:
            self.file_problem(number, record_type, problems[0].field, problems[0].reason)
            return None
        tx_sequence, record_sequence = prefix["transaction_sequence"], prefix["record_sequence"]
        finished: Transaction | None = None
        is_header = record_type in layout.TRANSACTION_HEADERS and not (
            group.type == "ACK" and record_type in layout.WORK_HEADERS
        )
        if is_header:
            finished = self.close_transaction()
            if tx_sequence != group.transactions:
                self.file_problem(
                    number,
                    record_type,
                    "transaction_sequence",
                    f"is {tx_sequence}, expected {group.transactions}",
                )
            if record_sequence != 0:
                self.file_problem(number, record_type, "record_sequence", "must be 0 on a header")
            if group.type not in (record_type, "ACK"):
                # GR in the specification; real files mix NWR and REV in one group: noted.
                self.problems.append(
                    Refusal(number, record_type, "record_type", f"inside a {group.type} group", "F")
                )
            group.transactions += 1
            self.transactions += 1
            self.last_record_sequence = 0
            values, field_problems = self.fields_of(text, record_type, number)
            self.current = Transaction(
                group.group_id,
                group.type,
                tx_sequence,
                Record(number, record_type, tx_sequence, 0, values),
                problems=field_problems,
            )
            return finished
        current = self.current
        if current is None:
            self.file_problem(
                number, record_type, "record_type", "a detail record before any transaction header"
            )
            return None
        if tx_sequence != current.sequence:
            self.file_problem(
                number,
                record_type,
                "transaction_sequence",
                f"is {tx_sequence}, its transaction has {current.sequence}",
            )
        if record_sequence != self.last_record_sequence + 1:
            # ER in the specification; real senders leave gaps where they dropped a record and
            # repeat numbers (PRS, Curve): the records still belong to their transaction by its
            # sequence #, so this is noted, not rejected.
            self.problems.append(
                Refusal(
                    number,
                    record_type,
                    "record_sequence",
                    f"is {record_sequence}, expected {self.last_record_sequence + 1}",
                    "F",
                )
            )
        self.last_record_sequence = record_sequence
        if len(current.details) >= MAX_RECORDS_PER_TRANSACTION:
            current.problems.append(
                Refusal(
                    number,
                    record_type,
                    "",
                    f"more than {MAX_RECORDS_PER_TRANSACTION} records in one transaction",
                    "T",
                )
            )
            return None
        values, field_problems = self.fields_of(text, record_type, number)
        current.problems += field_problems
        current.details.append(Record(number, record_type, tx_sequence, record_sequence, values))
        return None

    def fields_of(
        self, text: str, record_type: str, number: int
    ) -> tuple[dict[str, Any], list[Refusal]]:
        if self.structure_only:
            return {}, []
        if record_type in layout.WORK_HEADERS:
            fields = layout.WORK
        elif record_type == "ACK":
            fields = layout.ACK
        else:
            fields = layout.DETAIL_LAYOUTS.get(record_type, ())
        if record_type in layout.ONLY_IN_22 and self.version == "2.1":
            return {"_skip": True}, [
                Refusal(
                    number,
                    record_type,
                    "record_type",
                    "is a CWR 2.2 record, in a 2.1 file: passed over",
                    "R",
                )
            ]
        if self.version == "2.1" and record_type in layout.LENGTH_21:
            fields = tuple(f for f in fields if f.end <= layout.LENGTH_21[record_type])
        return parse_fields(text, fields, number, record_type)

    def feed(self, number: int, raw: bytes) -> Transaction | None:
        if self.done:
            if raw.strip() and self.trailer_seen:
                self.trailer_seen = False  # said once
                self.problems.append(Refusal(number, "", "", "records after TRL", "E"))
            return None
        if len(raw) > MAX_LINE_CHARS * 4:
            self.file_problem(number, "", "", f"a line of more than {MAX_LINE_CHARS} characters")
            return None
        text, problem = decode_line(raw, self.header.character_set if self.header else "")
        if not text.strip():
            return None  # blank lines are passed over
        if len(text) > MAX_LINE_CHARS:
            self.file_problem(
                number, text[:3], "", f"a line of more than {MAX_LINE_CHARS} characters"
            )
            return None
        self.records += 1
        record_type = text[:3]
        if problem:
            self.file_problem(number, record_type, "", problem)
            return None
        if self.header is None:
            if record_type != "HDR":
                self.file_problem(
                    number, record_type, "record_type", "the first record must be HDR"
                )
                return None
            self.read_hdr(number, text)
            return None
        if record_type == "HDR":
            self.file_problem(number, "HDR", "record_type", "a second HDR")
            return None
        if record_type == "TRL":
            finished = self.close_transaction()
            if self.group is not None:
                self.file_problem(number, "TRL", "record_type", "TRL before the group's GRT")
            self.read_trl(number, text)
            return finished
        if record_type == "GRH":
            if self.group is not None:
                self.file_problem(
                    number, "GRH", "record_type", "GRH before the previous group's GRT"
                )
                return None
            self.read_grh(number, text)
            return None
        if self.group is None:
            self.file_problem(number, record_type, "record_type", "outside a group (GRH ... GRT)")
            return None
        if record_type == "GRT":
            finished = self.close_transaction()
            if self.group.transactions == 0:
                self.file_problem(number, "GRT", "record_type", "a group without transactions")
            self.read_grt(number, text)
            return finished
        known = layout.TRANSACTION_HEADERS | set(layout.DETAIL_LAYOUTS) | layout.PASSED_OVER
        if record_type not in known:
            self.file_problem(
                number, record_type, "record_type", f"{record_type!r} is not a CWR record type"
            )
            return None
        if self.group.transactions == 0 and record_type not in layout.TRANSACTION_HEADERS:
            self.file_problem(
                number, record_type, "record_type", "GRH must be followed by a transaction header"
            )
            return None
        return self.read_detail(number, text, record_type)

    def end(self, last_line: int) -> FileEnd:
        if self.header is None and not self.problems:
            self.problems.append(Refusal(0, "", "", "the file is empty", "E"))
        elif not self.trailer_seen and not any(p.level == "E" for p in self.problems):
            self.problems.append(Refusal(last_line, "", "", "the last record must be TRL", "E"))
        return FileEnd(
            self.problems, self.rejected_groups, self.groups, self.transactions, self.records
        )


Item = FileHeader | Transaction | FileEnd


def read_cwr(lines: Iterable[bytes], structure_only: bool = False) -> Iterator[Item]:
    """FileHeader (when the HDR reads), each Transaction as it ends, and FileEnd last;
    `structure_only` reads records, sequence numbers and counts but not the transactions'
    fields (their `work` stays None)."""
    reader = _Reader(structure_only)
    header_sent = False
    number = 0
    for number, raw in enumerate(lines, start=1):
        finished = reader.feed(number, raw if isinstance(raw, bytes) else bytes(raw))
        if reader.header is not None and not header_sent:
            header_sent = True
            yield reader.header
        if finished is not None:
            yield finished
    if not reader.done:
        finished = reader.close_transaction()
        if finished is not None:
            yield finished
    yield reader.end(number)


def scan(lines: Iterable[bytes]) -> tuple[FileHeader | None, FileEnd, int]:
    """The first pass: header, file end (file- and group-level problems), work transactions."""
    header: FileHeader | None = None
    works = 0
    end = FileEnd([], set(), 0, 0, 0)
    for item in read_cwr(lines, structure_only=True):
        if isinstance(item, FileHeader):
            header = item
        elif isinstance(item, Transaction):
            works += item.type in layout.WORK_HEADERS
        else:
            end = item
    return header, end, works


# -- transactions ----------------------------------------------------------------------------


def _t(tx: Transaction, record: Record, field_name: str, reason: str, level: str = "T") -> None:
    tx.problems.append(Refusal(record.line, record.type, field_name, reason, level))


def _code_or_blank(
    tx: Transaction, record: Record, field_name: str, raw: str, parse: Callable[[str, str], str]
) -> str:
    """An optional code (ISWC, ISRC) in its normal form, or "" with a field-level (F) problem
    when it does not parse: a bad optional code blanks the field, not the record."""
    if not raw:
        return ""
    try:
        return parse(raw, field_name)
    except Refused as refusal:
        _t(tx, record, field_name, refusal.message.split(": ", 1)[-1] + "; blanked", "F")
        return ""


def validate_transaction(tx: Transaction, version: str) -> None:
    """Read a work transaction's records into `tx.work` and apply the record and transaction
    rules; problems go to `tx.problems` at their level."""
    if tx.type not in layout.WORK_HEADERS or tx.group_type == "ACK":
        return
    # A rejected record of the shares rejects the transaction: the shares would not add up.
    for problem in list(tx.problems):
        if (
            problem.level == "R"
            and problem.record in SHARE_RECORDS
            and problem.field != "record_type"
        ):
            tx.problems.append(
                Refusal(
                    problem.line,
                    problem.record,
                    problem.field,
                    "a rejected share record rejects its transaction",
                    "T",
                )
            )
        if problem.level == "R" and problem.record == tx.type:
            tx.problems.append(
                Refusal(
                    problem.line,
                    problem.record,
                    problem.field,
                    "the transaction header is rejected",
                    "T",
                )
            )
    header = tx.header
    h = header.values
    iswc = _code_or_blank(tx, header, "iswc", h.get("iswc", ""), identifiers.parse_iswc)
    version_type = h.get("version_type", "")
    if version_type not in ("ORI", "MOD"):
        _t(tx, header, "version_type", f"{version_type!r} is not ORI or MOD")
    work = Work(
        title=h.get("title", ""),
        language=h.get("language", ""),
        submitter_work_number=h.get("submitter_work_number", ""),
        iswc=iswc,
        version_type=version_type,
        distribution_category=h.get("distribution_category", ""),
        duration_s=duration_s(h.get("duration", "")),
        recorded=h.get("recorded_indicator", ""),
    )
    if work.distribution_category == "SER" and work.duration_s == 0:
        _t(tx, header, "duration", "a SER work needs a duration > 0", "F")
    tx.work = work
    publisher: Party | None = None
    writer: Party | None = None
    chains: dict[int, list[Party]] = {}
    by_ip: dict[str, Party] = {}
    for record in tx.details:
        if record.values.get("_skip"):
            continue
        kind = record.type
        if kind in ("SPU", "OPU"):
            publisher = _publisher(tx, record)
            writer = None
            work.parties.append(publisher)
            chains.setdefault(publisher.chain, []).append(publisher)
            if publisher.ip_number:
                by_ip.setdefault(publisher.ip_number, publisher)
        elif kind in ("SPT", "OPT"):
            _territory_record(tx, record, publisher, "SPU" if kind == "SPT" else "OPU")
        elif kind in ("SWR", "OWR"):
            writer = _writer(tx, record)
            publisher = None
            work.parties.append(writer)
            if writer.ip_number:
                by_ip.setdefault(writer.ip_number, writer)
        elif kind in ("SWT", "OWT"):
            _territory_record(tx, record, writer, "SWR" if kind == "SWT" else "OWR")
        elif kind == "PWR":
            _pwr(tx, record, writer, by_ip, version)
        elif kind == "NPN":
            target = by_ip.get(record.text("ip_number"))
            if target is not None and target.kind == "publisher":
                target.non_roman_name = record.text("name")
        elif kind == "NWN":
            target = by_ip.get(record.text("ip_number"))
            if target is not None and target.kind == "writer":
                target.non_roman_name = " ".join(
                    v for v in (record.text("first_name"), record.text("last_name")) if v
                )
        elif kind in ("ALT", "NAT"):
            _title(tx, record, work)
        elif kind == "VER":
            original_iswc = _code_or_blank(
                tx, record, "iswc", record.text("iswc"), identifiers.parse_iswc
            )
            work.original = {"title": record.text("title"), "iswc": original_iswc}
        elif kind in ("PER", "NPR"):
            name = record.text("last_name") or record.text("name")
            first = record.text("first_name")
            if not name:
                continue
            ipi, problems = ipi_name(
                record.text("ipi_name_number"), record.line, kind, "ipi_name_number"
            )
            tx.problems += problems
            work.performers.append(
                {
                    "name": f"{first} {name}".strip(),
                    "ipi": ipi,
                    "non_roman": "Y" if kind == "NPR" else "",
                }
            )
        elif kind == "REC":
            _recording(tx, record, work)
        elif kind == "ORN":
            work.origin = {
                k: record.text(k)
                for k in ("intended_purpose", "production_title", "library", "cd_identifier")
                if record.text(k)
            }
        elif kind == "XRF":
            work.cross_references.append(
                {
                    k: record.text(k)
                    for k in ("organisation_code", "identifier", "identifier_type", "validity")
                }
            )
    _structure_rules(tx, work, chains)
    if not tx.rejected:
        _share_rules(tx, work)


def _shares(record: Record, suffix: str) -> dict[str, int]:
    return {right: record.number(f"{right.lower()}_{suffix}_share") for right in RIGHTS}


def _societies(record: Record) -> dict[str, str]:
    return {
        right: society_name(record.text(f"{right.lower()}_society"))
        for right in RIGHTS
        if record.text(f"{right.lower()}_society")
    }


def _ipi_numbers(tx: Transaction, record: Record) -> tuple[str, str]:
    """A party record's IPI name and base numbers ('' when unknown or refused as a field)."""
    ipi, problems = ipi_name(
        record.text("ipi_name_number"), record.line, record.type, "ipi_name_number"
    )
    base, more = ipi_base(
        record.text("ipi_base_number"), record.line, record.type, "ipi_base_number"
    )
    tx.problems += problems + more
    return ipi, base


def _publisher(tx: Transaction, record: Record) -> Party:
    controlled = record.type == "SPU"
    name = record.text("name")
    role = record.text("publisher_type")
    ipi, base = _ipi_numbers(tx, record)
    unknown = record.text("unknown_indicator") == "Y" or not name
    ownership = _shares(record, "ownership")
    party = Party(
        record.line,
        record.type,
        "publisher",
        controlled,
        record.text("ip_number"),
        name,
        "",
        role,
        unknown and not controlled,
        ipi,
        base,
        _societies(record),
        ownership,
        chain=record.number("publisher_sequence"),
    )
    if controlled:
        for name_field in ("ip_number", "name"):
            if not record.text(name_field):
                _t(tx, record, name_field, "is mandatory on an SPU")
        if record.text("unknown_indicator") == "Y":
            _t(tx, record, "unknown_indicator", "must be blank on an SPU", "F")
    if role and role not in PUBLISHER_TYPES:
        _t(tx, record, "publisher_type", f"{role!r} is not E, AM, SE, AQ, PA or ES")
    elif not role and controlled:
        _t(tx, record, "publisher_type", "is mandatory on an SPU")
    if party.chain == 0:
        _t(tx, record, "publisher_sequence", "must be 1 or more")
    if ownership["PR"] > FULL // 2:
        _t(
            tx,
            record,
            "pr_ownership_share",
            f"{_pct(ownership['PR'])} %: a publisher owns at most 50 % of PR",
        )
    for right in ("MR", "SR"):
        if ownership[right] > FULL:
            _t(
                tx,
                record,
                f"{right.lower()}_ownership_share",
                f"{_pct(ownership[right])} % is over 100 %",
            )
    if role and role not in OWNING_PUBLISHER_TYPES and any(ownership.values()):
        right = next(r for r in RIGHTS if ownership[r])
        _t(
            tx,
            record,
            f"{right.lower()}_ownership_share",
            f"a publisher of type {role} owns nothing (only E and AQ)",
        )
    return party


def _writer(tx: Transaction, record: Record) -> Party:
    controlled = record.type == "SWR"
    last, first = record.text("last_name"), record.text("first_name")
    ipi, base = _ipi_numbers(tx, record)
    unknown = record.text("unknown_indicator") == "Y" or not last
    role = record.text("designation")
    ownership = _shares(record, "ownership")
    party = Party(
        record.line,
        record.type,
        "writer",
        controlled,
        record.text("ip_number"),
        last,
        first,
        role,
        unknown and not controlled,
        ipi,
        base,
        _societies(record),
        ownership,
    )
    if controlled:
        for name_field in ("ip_number", "last_name", "designation"):
            if not record.text(name_field):
                _t(tx, record, name_field, "is mandatory on an SWR")
        if record.text("unknown_indicator") == "Y":
            _t(tx, record, "unknown_indicator", "must be blank on an SWR", "F")
    if role and role not in WRITER_DESIGNATIONS:
        _t(tx, record, "designation", f"{role!r} is not a writer designation code")
    for right in RIGHTS:
        if ownership[right] > FULL:
            _t(
                tx,
                record,
                f"{right.lower()}_ownership_share",
                f"{_pct(ownership[right])} % is over 100 %",
            )
    return party


def _territory_record(tx: Transaction, record: Record, owner: Party | None, parent: str) -> None:
    """An SPT/OPT/SWT/OWT: it follows its party's record and names the same party."""
    if owner is None or owner.record != parent:
        _t(tx, record, "record_type", f"{record.type} must follow an {parent}")
        return
    if record.text("ip_number") != owner.ip_number:
        _t(
            tx,
            record,
            "ip_number",
            f"is {record.text('ip_number')!r}, its {parent} has {owner.ip_number!r}",
        )
    _territory(tx, record, owner)


def _territory(tx: Transaction, record: Record, owner: Party) -> None:
    included = record.text("inclusion_exclusion")
    tis = record.text("tis_code")
    if included not in ("I", "E"):
        _t(tx, record, "inclusion_exclusion", f"{included!r} is not I or E")
        return
    tis4 = tis.zfill(4) if is_digits(tis) else tis
    if territories.countries_of(tis4) is None:
        _t(tx, record, "tis_code", f"{tis!r} is not a CISAC TIS territory code")
        return
    collection = _shares(record, "collection")
    if included == "E" and any(collection.values()):
        _t(tx, record, "pr_collection_share", "an exclusion (E) carries no shares", "R")
    limit = FULL // 2 if owner.kind == "publisher" and owner.controlled else FULL
    if collection["PR"] > limit and owner.kind == "publisher":
        _t(
            tx,
            record,
            "pr_collection_share",
            f"{_pct(collection['PR'])} %: a publisher collects at most 50 % of PR",
        )
    for right in RIGHTS:
        if collection[right] > FULL:
            _t(
                tx,
                record,
                f"{right.lower()}_collection_share",
                f"{_pct(collection[right])} % is over 100 %",
            )
    owner.territories.append(
        TerritoryShare(
            record.line,
            record.type,
            included == "I",
            tis4,
            collection,
            record.text("shares_change") == "Y",
        )
    )


def _pwr(
    tx: Transaction, record: Record, writer: Party | None, by_ip: dict[str, Party], version: str
) -> None:
    if writer is None:
        _t(tx, record, "record_type", "PWR must follow a writer (SWR/SWT/PWR)")
        return
    publisher = by_ip.get(record.text("publisher_ip_number"))
    if publisher is None or publisher.kind != "publisher":
        _t(
            tx,
            record,
            "publisher_ip_number",
            f"{record.text('publisher_ip_number')!r} is no publisher of this work",
        )
        return
    writer_ip = record.text("writer_ip_number")
    if writer_ip and writer_ip != writer.ip_number:
        _t(
            tx,
            record,
            "writer_ip_number",
            f"is {writer_ip!r}, the writer before it has {writer.ip_number!r}",
        )
    chain = record.number("publisher_sequence") if version == "2.2" else 0
    writer.chains.append(chain or publisher.chain)


def _title(tx: Transaction, record: Record, work: Work) -> None:
    title_type = record.text("title_type")
    language = record.text("language")
    if title_type not in TITLE_TYPES or (record.type == "ALT" and title_type == "OT"):
        _t(tx, record, "title_type", f"{title_type!r} is not an alternate title type", "R")
        return
    if title_type in ("OL", "AL") and not language:
        _t(tx, record, "language", f"a {title_type} title needs its language", "R")
        return
    if not record.text("title"):
        return
    work.alternate_titles.append(
        {
            "title": record.text("title"),
            "type": title_type,
            "language": language,
            "non_roman": "Y" if record.type == "NAT" else "",
        }
    )


def _recording(tx: Transaction, record: Record, work: Work) -> None:
    isrc = _code_or_blank(tx, record, "isrc", record.text("isrc"), identifiers.parse_isrc)
    entry = {
        "isrc": isrc,
        "title": record.text("recording_title") or record.text("album_title"),
        "display_artist": record.text("display_artist"),
        "label": record.text("record_label") or record.text("album_label"),
        "release_date": record.text("release_date"),
        "duration_s": str(duration_s(record.text("release_duration"))),
    }
    work.recordings.append(entry)


def _pct(share: int) -> str:
    return f"{share // 100}.{share % 100:02d}"


def _structure_rules(tx: Transaction, work: Work, chains: dict[int, list[Party]]) -> None:
    header = tx.header
    writers = [p for p in work.parties if p.kind == "writer"]
    if not writers:
        _t(tx, header, "", "a work needs at least one writer record (SWR or OWR)")
        return
    if not any(p.role in ORIGINAL_DESIGNATIONS for p in writers):
        _t(tx, header, "", "at least one writer is a composer or author (CA, C or A)")
    adapting = any(p.role in ADAPTING_DESIGNATIONS for p in writers)
    if work.version_type == "MOD" and not adapting:
        _t(
            tx,
            header,
            "version_type",
            "a modified version (MOD) needs an AR, AD, SR, SA or TR writer",
        )
    if work.version_type == "ORI" and adapting:
        _t(tx, header, "version_type", "an original work (ORI) has no AR, AD, SR, SA or TR writer")
    for number, members in sorted(chains.items()):
        controlled = [p for p in members if p.controlled]
        if controlled and any(not p.controlled for p in members):
            first = next(p for p in members if not p.controlled)
            tx.problems.append(
                Refusal(
                    first.line,
                    first.record,
                    "publisher_sequence",
                    f"an OPU inside the controlled chain {number}",
                    "T",
                )
            )
        originals = [p for p in members if p.role == "E"]
        if len(originals) > 1:
            tx.problems.append(
                Refusal(
                    originals[1].line,
                    originals[1].record,
                    "publisher_type",
                    f"chain {number} has more than one original publisher (E)",
                    "T",
                )
            )
        if controlled and members[0].role not in ("E", "PA", ""):
            tx.problems.append(
                Refusal(
                    members[0].line,
                    members[0].record,
                    "publisher_type",
                    f"chain {number} starts with {members[0].role}, not E or PA",
                    "T",
                )
            )


def collection_by_country(
    party: Party, region: frozenset[str] | None = None
) -> dict[str, dict[str, int]]:
    """country -> {right: collection share} from a party's territory records in their order
    (an inclusion sets the shares there, an exclusion removes the country)."""
    out: dict[str, dict[str, int]] = {}
    for share in party.territories:
        countries = territories.countries_of(share.tis) or frozenset()
        if region is not None:
            countries = countries & region
        for country in countries:
            if share.included:
                out[country] = share.collection
            else:
                out.pop(country, None)
    return out


def regions(work: Work) -> list[frozenset[str]]:
    """The world cut into the pieces where every party's territory records agree."""
    codes = sorted({t.tis for p in work.parties for t in p.territories})
    return _regions(tuple(codes))


_REGION_CACHE: dict[tuple[str, ...], list[frozenset[str]]] = {}


def _regions(codes: tuple[str, ...]) -> list[frozenset[str]]:
    found = _REGION_CACHE.get(codes)
    if found is not None:
        return found
    sets = [territories.countries_of(code) or frozenset() for code in codes]
    pieces: dict[tuple[bool, ...], set[str]] = {}
    for country in sorted(territories.world().union(*sets)):
        pieces.setdefault(tuple(country in s for s in sets), set()).add(country)
    found = [frozenset(countries) for key, countries in sorted(pieces.items()) if any(key)]
    if len(_REGION_CACHE) < 1_024:
        _REGION_CACHE[codes] = found
    return found


def collection_in(party: Party, country: str) -> dict[str, int]:
    """A party's collection shares in one country: its territory records, or, for a party
    without any (non-controlled parties in 2.1), its ownership."""
    if not party.territories:
        return dict(party.ownership) if not party.controlled else dict.fromkeys(RIGHTS, 0)
    return collection_by_country(party, frozenset({country})).get(country, dict.fromkeys(RIGHTS, 0))


def _share_rules(tx: Transaction, work: Work) -> None:
    """CWR 2.2 transaction edits on shares (CWR-LAYOUT.md §9, tolerance 0.06 %)."""
    header = tx.header
    publishers = [p for p in work.parties if p.kind == "publisher"]
    writers = [p for p in work.parties if p.kind == "writer"]
    for right in RIGHTS:
        field_name = f"{right.lower()}_ownership_share"
        published = sum(p.ownership[right] for p in publishers)
        written = sum(p.ownership[right] for p in writers)
        cap = FULL // 2 if right == "PR" else FULL
        if published > cap + TOLERANCE:
            tx.problems.append(
                Refusal(
                    publishers[-1].line,
                    publishers[-1].record,
                    field_name,
                    f"publishers own {_pct(published)} % of {right}, at most {_pct(cap)} %",
                    "T",
                )
            )
        if right == "PR" and written and written < FULL // 2 - TOLERANCE:
            tx.problems.append(
                Refusal(
                    writers[-1].line,
                    writers[-1].record,
                    field_name,
                    f"writers own {_pct(written)} % of PR: 0 or at least 50 %",
                    "T",
                )
            )
        total = published + written
        if total and abs(total - FULL) > TOLERANCE:
            last = work.parties[-1]
            tx.problems.append(
                Refusal(
                    last.line,
                    last.record,
                    field_name,
                    f"{right} ownership totals {_pct(total)} %, must be 100 % (+/- 0.06) or 0 %",
                    "T",
                )
            )
    for region in regions(work):
        country = min(region)
        for right in RIGHTS:
            total = sum(collection_in(p, country)[right] for p in work.parties)
            if total > FULL + TOLERANCE:
                record = next((t for p in work.parties for t in p.territories), None)
                line, name = (record.line, record.record) if record else (header.line, header.type)
                tx.problems.append(
                    Refusal(
                        line,
                        name,
                        f"{right.lower()}_collection_share",
                        f"{right} collection in {territories.name_of(_tis_for(country))} "
                        f"totals {_pct(total)} %, over 100 %",
                        "T",
                    )
                )


def _tis_for(country: str) -> str:
    return territories.tis_of_country().get(country, country)
