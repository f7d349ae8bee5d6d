"""The national-catalog benchmark's data: a synthetic but realistic catalog, written as the
files societies and producers really send (`kledger bench-catalog`, docs/bench.md "National
catalog import").

    write_catalog(out_dir, CatalogSpec(works, files, orgs, seed)) -> Catalog

What a catalog holds, drawn from one seeded `random.Random` (the same spec writes the same
bytes):
- N works, each with 1-3 writers and 0-2 original publishers drawn from the importing org's
  members: pools that grow with its works (about WORKS_PER_WRITER works per writer and
  WORKS_PER_PUBLISHER per publisher, skewed so a few writers write many works, as in a
  society's membership; each org's pools are its own, see `_members`); valid ISWCs (check digit) and
  IPI name numbers (check digits); PR and MR ownership summing to 100 % per right (writers
  alone 100 %, or writers 50 % and their publishers 50 %), collected world-wide; 1-2 KR ISRCs
  per work (REC records);
- F CWR 2.2 NWR files (cwr_write.registration_lines, as `kledger export cwr` writes them), one
  per society sender (the HDR's SO code cycles through the CISAC societies the ledger names),
  each imported by one cluster org (files dealt to the orgs round-robin); a file never holds
  more than MAX_WORKS_PER_FILE works, the size of a large society delivery;
- JSON-lines files of RegisterRecording txs, one recording per ISRC with its work, registered
  by the next org after the one that imported the work (the recording side confirms the
  work-ISRC link the CWR import asserted, docs/domain.md §3), at most RECORDINGS_PER_FILE
  lines per file (bulk.MAX_JSON_LINES caps a JSON-lines file).

Rules kept here: memory is bounded by one file's works (files are written one at a time, the
works of a file generated in order); every identifier is unique in the catalog (numbered from
the global work and recording counters); work ids are computed the way the CWR import makes
them (node/registry/formats/cwr_ledger.py: `<sender>-<submitter work #>`).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kledger.node.registry.formats import cwr_ledger, cwr_write
from kledger.node.registry.formats.societies import SOCIETIES
from kledger.node.registry.identifiers import ipi_check, iswc_check_digit

MAX_WORKS_PER_FILE = 100_000
DEFAULT_WORKS_PER_FILE = 25_000
RECORDINGS_PER_FILE = 50_000
WORKS_PER_WRITER = 40  # KOMCA: ~4 million works, ~50,000 members, ~2 writers a work
WORKS_PER_PUBLISHER = 800
MIN_WRITERS = 20
MIN_PUBLISHERS = 4
MAX_WORKS = 10_000_000
CREATED = "20260105093000"  # the files' HDR creation time: fixed, so a seed writes the same bytes
ISRC_SERIALS = 100_000  # the 5-digit designation code; a new registrant code after that many
REGISTRANT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Sender societies: the Korean ones first, then the other CISAC codes the ledger names (not
# 000, public domain).
KOREAN = ("KOMCA", "KOSA", "SACK")
SENDERS = KOREAN + tuple(
    name for code, name in sorted(SOCIETIES.items()) if code != "000" and name not in KOREAN
)
FAMILY = ("Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim", "Han")
FAMILY_HANGUL = ("김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한")
GIVEN = ("Min", "Seo", "Ji", "Ha", "Do", "Yu", "Eun", "Jun", "Woo", "Hyun", "Soo", "Young")
GIVEN_HANGUL = ("민", "서", "지", "하", "도", "유", "은", "준", "우", "현", "수", "영")
WORDS = (
    "SARANG", "BAM", "BYEOL", "BADA", "HANEUL", "NORAE", "GAEUL", "BOM", "KKUM", "BIT",
    "GIL", "BARAM", "NUN", "MAEUM", "SEOUL", "NIGHT", "LOVE", "DREAM", "SUMMER", "RAIN",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    works: int
    files: int
    orgs: tuple[str, ...]  # the cluster's orgs, in order; file i is imported by orgs[i % n]
    seed: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.works <= MAX_WORKS:
            raise ValueError(f"--works: must be 1..{MAX_WORKS}, got {self.works}")
        if not 1 <= self.files <= self.works:
            raise ValueError(f"--files: must be 1..{self.works} (the works), got {self.files}")
        if math.ceil(self.works / self.files) > MAX_WORKS_PER_FILE:
            raise ValueError(
                f"--files: {self.files} files of {self.works} works exceed "
                f"{MAX_WORKS_PER_FILE} works a file; give at least "
                f"{math.ceil(self.works / MAX_WORKS_PER_FILE)}"
            )
        if len(self.orgs) < 2:
            raise ValueError(
                "--nodes: at least 2 orgs (a recording confirms its work's link only when "
                "registered by another org than the one that imported the work)"
            )


@dataclass(frozen=True, slots=True)
class CatalogFile:
    path: Path
    org: str  # the org that imports it
    kind: str  # "works" (CWR) or "txs" (JSON lines of RegisterRecording)
    works: int
    txs: int  # recordings in a JSON-lines file; 0 for CWR (bulk plans those)


@dataclass(slots=True)
class Catalog:
    spec: CatalogSpec
    files: list[CatalogFile] = field(default_factory=list)
    writers: int = 0
    publishers: int = 0
    recordings: int = 0
    bytes: int = 0

    def of_kind(self, kind: str) -> list[CatalogFile]:
        return [f for f in self.files if f.kind == kind]


def default_files(works: int, orgs: int) -> int:
    """One file per org at least (the societies send in parallel), DEFAULT_WORKS_PER_FILE
    works a file for a large catalog."""
    return min(works, max(orgs, math.ceil(works / DEFAULT_WORKS_PER_FILE)))


def ipi_name(number: int) -> str:
    base = f"{number:09d}"
    return base + ipi_check(base)


def iswc(number: int) -> str:
    base = f"{number:09d}"
    return f"T{base}{iswc_check_digit(base)}"


def isrc(number: int) -> str:
    """KR ISRCs numbered from 0: a registrant code per ISRC_SERIALS recordings."""
    block, serial = divmod(number, ISRC_SERIALS)
    registrant = "".join(REGISTRANT_ALPHABET[(block // 36**i) % 36] for i in (2, 1, 0))
    return f"KR{registrant}26{serial:05d}"


def _writer(number: int) -> dict[str, Any]:
    family, given = number % len(FAMILY), (number // len(FAMILY)) % len(GIVEN)
    second = (number // (len(FAMILY) * len(GIVEN))) % len(GIVEN)
    ipi = ipi_name(100_000_000 + number)
    return {
        "party_id": f"IPI-{ipi}",
        "kind": "person",
        "names": [
            {"name": f"{GIVEN[given]}{GIVEN[second].lower()} {FAMILY[family]}", "ipi": ipi},
            {"name": f"{FAMILY_HANGUL[family]}{GIVEN_HANGUL[given]}{GIVEN_HANGUL[second]}"},
        ],
        "memberships": [
            {"society": "KOMCA", "right": "PR"},
            {"society": "KOMCA", "right": "MR"},
        ],
    }


def _publisher(number: int) -> dict[str, Any]:
    ipi = ipi_name(700_000_000 + number)
    word = WORDS[number % len(WORDS)]
    return {
        "party_id": f"IPI-{ipi}",
        "kind": "company",
        "names": [{"name": f"{word} MUSIC PUBLISHING {number}", "ipi": ipi}],
        "memberships": [
            {"society": "KOMCA", "right": "PR"},
            {"society": "KOMCA", "right": "MR"},
        ],
    }


def _skewed(rng: random.Random, pool: int) -> int:
    """A pool index, small ones far more often (a few members write most of the works)."""
    return min(pool - 1, int(pool * rng.random() ** 2))


def _split(total: int, parts: int) -> list[int]:
    """`total` in `parts` integer shares that sum to it exactly (the first takes the rest)."""
    each = total // parts
    return [total - each * (parts - 1)] + [each] * (parts - 1)


@dataclass(slots=True)
class _Counters:
    work: int = 0
    recording: int = 0


@dataclass(frozen=True, slots=True)
class _Members:
    """One org's members: writers and publishers numbered from their first numbers."""

    first_writer: int
    writers: int
    first_publisher: int
    publishers: int


def _members(spec: CatalogSpec) -> dict[str, _Members]:
    """Each org's pools, sized by the works it imports; disjoint, because a share set must
    name a member of the org that sets it, and a party is a member of the org that registers
    it first (a writer shared across orgs would make that a race between the importers)."""
    works: dict[str, int] = dict.fromkeys(spec.orgs, 0)
    for index in range(spec.files):
        works[spec.orgs[index % len(spec.orgs)]] += len(_works_of_file(index, spec))
    out: dict[str, _Members] = {}
    first_writer = first_publisher = 0
    for org in spec.orgs:
        writers = max(MIN_WRITERS, works[org] // WORKS_PER_WRITER)
        publishers = max(MIN_PUBLISHERS, works[org] // WORKS_PER_PUBLISHER)
        out[org] = _Members(first_writer, writers, first_publisher, publishers)
        first_writer += writers
        first_publisher += publishers
    return out


def _work_item(
    rng: random.Random, number: int, counters: _Counters, members: _Members
) -> dict[str, Any]:
    """One work in the shape `kledger export cwr` reads from the ledger (registration_lines)."""
    writer_ids = sorted(
        {
            members.first_writer + _skewed(rng, members.writers)
            for _ in range(rng.choice((1, 1, 2, 2, 2, 3)))
        }
    )
    publisher_ids = sorted(
        {
            members.first_publisher + _skewed(rng, members.publishers)
            for _ in range(rng.choice((0, 0, 1, 1, 1, 2)))
        }
    )
    parties = [_writer(w) for w in writer_ids] + [_publisher(p) for p in publisher_ids]
    writer_total = 10_000 if not publisher_ids else 5_000
    entries = [
        {"party_id": party["party_id"], "kind": "writer", "role": role, "ownership": share}
        for party, share, role in zip(
            parties[: len(writer_ids)],
            _split(writer_total, len(writer_ids)),
            ("CA", "C", "A"),
            strict=False,
        )
    ]
    if publisher_ids:
        entries += [
            {"party_id": party["party_id"], "kind": "publisher", "role": "E", "ownership": share}
            for party, share in zip(
                parties[len(writer_ids) :],
                _split(10_000 - writer_total, len(publisher_ids)),
                strict=True,
            )
        ]
    claim = {
        "territories": ["Worldwide"],
        "entries": [{**e, "collection": e["ownership"]} for e in entries],
    }
    words = rng.sample(WORDS, rng.choice((1, 2, 3)))
    isrcs = [isrc(counters.recording + i) for i in range(rng.choice((1, 1, 2)))]
    counters.recording += len(isrcs)
    creators = [
        {
            "party_id": entry["party_id"],
            "role": entry["role"],
            **({"chains": [1 + i % len(publisher_ids)]} if publisher_ids else {}),
        }
        for i, entry in enumerate(entries[: len(writer_ids)])
    ]
    work = {
        "work_id": f"W{number:09d}",
        "titles": [f"{' '.join(words)} {number + 1}"],
        "iswc": iswc(300_000_000 + number),
        "language": "KO",
        "duration_s": rng.randrange(120, 330),
        "category": "POP",
        "submitter": {"work_number": f"W{number:09d}"},
        "creators": creators,
        "publishers": [
            {"party_id": _publisher(p)["party_id"], "role": "E", "chain": i + 1}
            for i, p in enumerate(publisher_ids)
        ],
    }
    return {
        "work": work,
        "parties": {party["party_id"]: party for party in parties},
        "shares": {"PR": [claim], "MR": [claim]},
        "isrcs": isrcs,
    }


def _recording(item: dict[str, Any], work_id: str, code: str, rng: random.Random) -> str:
    work = item["work"]
    first_writer = work["creators"][0]["party_id"]
    payload: dict[str, Any] = {
        "isrc": code,
        "title": work["titles"][0].title(),
        "duration_s": work["duration_s"] + rng.randrange(-10, 10),
        "main_artists": [f"Artist {rng.randrange(5_000)}"],
        "works": [work_id],
    }
    if rng.random() < 0.3:  # a singer-songwriter: the writer performs it
        payload["performers"] = [{"party_id": first_writer, "featured": True}]
    return json.dumps({"type": "RegisterRecording", "payload": payload}, ensure_ascii=False)


def _works_of_file(index: int, spec: CatalogSpec) -> range:
    first = index * spec.works // spec.files
    return range(first, (index + 1) * spec.works // spec.files)


def write_catalog(out: Path, spec: CatalogSpec) -> Catalog:
    """Write the catalog's files under `out` (created); CWR files first in the list, then the
    recordings, each file with the org that imports it."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    members = _members(spec)
    catalog = Catalog(
        spec,
        writers=sum(m.writers for m in members.values()),
        publishers=sum(m.publishers for m in members.values()),
    )
    counters = _Counters()
    recordings: dict[str, list[str]] = {org: [] for org in spec.orgs}
    recording_files: list[CatalogFile] = []

    def flush_recordings(org: str, at_least: int) -> None:
        lines = recordings[org]
        if len(lines) < at_least or not lines:
            return
        number = sum(1 for f in recording_files if f.org == org) + 1
        path = out / f"recordings-{org}-{number:03d}.jsonl"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        recording_files.append(CatalogFile(path, org, "txs", 0, len(lines)))
        lines.clear()

    for index in range(spec.files):
        org = spec.orgs[index % len(spec.orgs)]
        recorder = spec.orgs[(index + 1) % len(spec.orgs)]
        sender = SENDERS[index % len(SENDERS)]
        numbers = _works_of_file(index, spec)
        code = cwr_write.sender_fields(sender)[1][-3:]
        path = out / f"CW26{index + 1:04d}{code}_000.V22"  # CWyynnnnsss_rrr: sender, receiver

        def items(
            numbers: range = numbers,
            sender: str = sender,
            org: str = org,
            recorder: str = recorder,
        ) -> Iterator[dict[str, Any]]:
            for number in numbers:
                item = _work_item(rng, number, counters, members[org])
                work_id = cwr_ledger.token(f"{sender}-{item['work']['submitter']['work_number']}")
                for code in item["isrcs"]:
                    recordings[recorder].append(_recording(item, work_id, code, rng))
                    flush_recordings(recorder, RECORDINGS_PER_FILE)
                yield item

        with path.open("w", encoding="utf-8", newline="\r\n") as file:
            for line in cwr_write.registration_lines(
                items(), sender=sender, sender_name=f"{sender} SOCIETY", created=CREATED
            ):
                file.write(line + "\n")
        catalog.files.append(CatalogFile(path, org, "works", len(numbers), 0))
    for org in spec.orgs:
        flush_recordings(org, 1)
    catalog.files += recording_files
    catalog.recordings = counters.recording
    catalog.bytes = sum(f.path.stat().st_size for f in catalog.files)
    return catalog
