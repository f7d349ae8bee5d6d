"""The one shape of a complaint about an outside file: where (line, record, field), why, and at
which level it stops the file (docs/registry.md, bulk formats).

Levels follow CWR's (CISAC CWR 2.2 §3.3): E the entire file is rejected, G the group, T the
transaction, R the record, F the field (rejected and defaulted, the rest goes on). DSR refusals
use E (the file: HEAD, FOOT, counts), T (a summary record and the usage pointing at it) and R
(one row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LEVELS = ("E", "G", "T", "R", "F")
LEVEL_NAMES = {"E": "file", "G": "group", "T": "transaction", "R": "record", "F": "field"}


@dataclass(frozen=True, slots=True)
class Refusal:
    line: int  # 1-based line of the file; 0 when the complaint is about the file as a whole
    record: str  # record type as read ("SPU", "HEAD", ...), "" when it could not be read
    field: str  # the field's name in snake case ("pr_ownership_share"), "" for a whole record
    reason: str
    level: str = "R"

    def __post_init__(self) -> None:
        assert self.level in LEVELS, self.level

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "record": self.record,
            "field": self.field,
            "reason": self.reason,
            "level": LEVEL_NAMES[self.level],
        }

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        name = f"{self.record}.{self.field}" if self.field else self.record or "?"
        return f"{where}: {name}: {self.reason} ({LEVEL_NAMES[self.level]} rejected)"
