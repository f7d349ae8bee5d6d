"""A large synthetic CWR 2.2 file, written line by line (for the import figures and the
bounded-memory test): WORKS works from one publisher, each with two of a pool of writers, one
publisher chain, world-wide shares and a recording.

    python -m kledger.cluster.sample.big OUT_FILE [WORKS]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from kledger.node.registry.formats import cwr_layout as layout
from kledger.node.registry.formats.cwr_write import grh, grt, hdr, prefix, record, trl
from kledger.node.registry.identifiers import ipi_check, iswc_check_digit

WRITERS = 500


def _ipi(number: int) -> str:
    base = f"{number:09d}"
    return base + ipi_check(base)


def cwr_lines(works: int) -> Iterator[str]:
    yield hdr("PB", "000000901", "BIG CATALOGUE PUBLISHING", "20260105093000")
    yield grh("NWR", 1)
    records = 2
    publisher = {
        "ip_number": "BIG001",
        "name": "BIG CATALOGUE PUBLISHING",
        "ipi": _ipi(901_000_001),
    }
    for index in range(works):
        lines = []
        base = f"{400_000_000 + index:09d}"
        lines.append(
            record(
                layout.WORK,
                {
                    "title": f"SONG NUMBER {index + 1}",
                    "submitter_work_number": f"BIG{index + 1:08d}",
                    "iswc": f"T{base}{iswc_check_digit(base)}",
                    "distribution_category": "POP",
                    "recorded_indicator": "Y",
                    "version_type": "ORI",
                    "language": "KO",
                },
                prefix("NWR", index, 0),
            )
        )
        sequence = 0

        def add(
            fields: tuple[layout.Field, ...],
            kind: str,
            values: dict[str, object],
            lines: list[str] = lines,
            index: int = index,
        ) -> None:
            nonlocal sequence
            sequence += 1
            lines.append(record(fields, values, prefix(kind, index, sequence)))

        add(
            layout.PUBLISHER,
            "SPU",
            {
                "publisher_sequence": 1,
                "ip_number": publisher["ip_number"],
                "name": publisher["name"],
                "publisher_type": "E",
                "ipi_name_number": publisher["ipi"],
                "pr_society": "118",
                "pr_ownership_share": 5000,
                "mr_society": "118",
                "mr_ownership_share": 5000,
            },
        )
        add(
            layout.PUBLISHER_TERRITORY,
            "SPT",
            {
                "ip_number": publisher["ip_number"],
                "pr_collection_share": 5000,
                "mr_collection_share": 5000,
                "inclusion_exclusion": "I",
                "tis_code": "2136",
                "sequence": 1,
            },
        )
        for offset, role in ((0, "C"), (1, "A")):
            writer = (index * 7 + offset * 13) % WRITERS
            ip = f"W{writer:06d}"
            add(
                layout.WRITER,
                "SWR",
                {
                    "ip_number": ip,
                    "last_name": f"WRITER{writer}",
                    "first_name": "KIM",
                    "designation": role,
                    "ipi_name_number": _ipi(800_000_000 + writer),
                    "pr_society": "118",
                    "pr_ownership_share": 2500,
                    "mr_society": "118",
                    "mr_ownership_share": 2500,
                },
            )
            add(
                layout.WRITER_TERRITORY,
                "SWT",
                {
                    "ip_number": ip,
                    "pr_collection_share": 2500,
                    "mr_collection_share": 2500,
                    "inclusion_exclusion": "I",
                    "tis_code": "2136",
                    "sequence": 1,
                },
            )
            add(
                layout.PWR,
                "PWR",
                {
                    "publisher_ip_number": publisher["ip_number"],
                    "publisher_name": publisher["name"],
                    "writer_ip_number": ip,
                    "publisher_sequence": 1,
                },
            )
        add(
            layout.REC,
            "REC",
            {
                "isrc": f"KRB99{26 + index // 100_000:02d}{index % 100_000:05d}",
                "recording_format": "A",
            },
        )
        records += len(lines)
        yield from lines
    yield grt(1, works, records)
    yield trl(1, works, records + 2)


def write(path: Path, works: int) -> None:
    with path.open("w", encoding="ascii", newline="\r\n") as file:
        for line in cwr_lines(works):
            file.write(line + "\n")


if __name__ == "__main__":
    write(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 100_000)
