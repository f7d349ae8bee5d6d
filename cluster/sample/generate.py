"""Generate the sample catalog in cluster/sample/ (deterministic: same files every run).

    python -m kledger.cluster.sample.generate [OUT_DIR]

A small, realistic K-pop catalog in the files the societies really exchange:

  CW260001301_118.V22   CWR 2.2 from the publisher Hanbit Music Publishing (PB 301) to KOMCA:
                        35 works with ISWCs, Hangul titles (NAT) and writer names (NWN), two
                        publisher chains (Hanbit, and Seoul Songs administered by Hanbit), a
                        sub-publisher in Japan (SPT inclusion/exclusion), shares for Korea,
                        Japan and the US only on some works, a modified version (VER), and the
                        recordings (REC, ISRC) each work is embodied in
  CW260001WR0_000.V22   CWR 2.2 from a self-publishing KOSCAP writer: one work
  DSR_KMCA_MELON_Subscription_2026-01_KR_1of1_20260205T090000.tsv
                        a DDEX DSR (Basic Audio Profile) monthly streaming report from Melon:
                        HEAD, SY01.02, one block per recording (AS01.01, MW01.01, SU02.02), FOOT;
                        a few hundred usage lines, some unmatched on purpose, one bad ISRC
  *.jsonl               what has no CWR or DSR form: an AI-generated work and AI provenance,
                        performers, recordings (RIAK), links to Content IDs and UCIs (KMCA),
                        performers' shares, persona consent and claims, an overclaim (KOSCAP)

Writers, publishers, labels and performers have valid IPI name numbers. Load order and the
commands are in docs/registry.md.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from kledger.node.registry.formats import cwr_layout as layout
from kledger.node.registry.formats.cwr_write import grh, grt, hdr, prefix, record, trl
from kledger.node.registry.identifiers import ipi_check, iswc_check_digit

SEED = 20260101
WORKS = 36  # the last is AI-generated: it has no CWR registration (no authorship)
HERE = Path(__file__).resolve().parent
CREATED = "20260105093000"
PUBLISHER_SENDER = "PB301"  # Hanbit Music Publishing's CWR sender id
WORKS_FILE = "CW260001301_118.V22"
KOSCAP_FILE = "CW260001WR0_000.V22"
USAGE_FILE = "DSR_KMCA_MELON_Subscription_2026-01_KR_1of1_20260205T090000.tsv"

SURNAMES = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim", "Han", "Oh"]
HANGUL_SURNAMES = dict(
    zip(
        SURNAMES,
        ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오"],
        strict=True,
    )
)
GIVEN = [
    "Minji",
    "Hyunwoo",
    "Seoyeon",
    "Jiho",
    "Yuna",
    "Dohyun",
    "Haeun",
    "Siwoo",
    "Jiwon",
    "Taeyang",
    "Soyeon",
    "Junho",
]
HANGUL_GIVEN = dict(
    zip(
        GIVEN,
        [
            "민지",
            "현우",
            "서연",
            "지호",
            "유나",
            "도현",
            "하은",
            "시우",
            "지원",
            "태양",
            "소연",
            "준호",
        ],
        strict=True,
    )
)
TITLES = [
    "Spring Rain",
    "Neon Seoul",
    "Blue Hour",
    "Paper Planes",
    "Midnight Subway",
    "Hanriver Lights",
    "First Snow",
    "Afterglow",
    "Echo Chamber",
    "Starlight Letter",
    "Summer Static",
    "Moonwalk Road",
    "Cherry Blossom Ending",
    "Gravity",
    "Polaroid",
    "Daydream",
    "Silver Lining",
    "Velvet Night",
    "Runaway Train",
    "Heartbeat Signal",
    "Lemonade",
    "Golden Hour",
    "Glass Garden",
    "Secret Code",
    "Wildflower",
    "Satellite",
    "Rewind",
    "Firefly",
    "Crosswalk",
    "Ocean Drive",
    "Fever Dream",
    "Last Page",
    "Butterfly Effect",
    "Sunday Morning",
    "Skyline",
    "Synthetic Dawn",
]
HANGUL_TITLES = {0: "봄비", 1: "네온 서울", 6: "첫눈", 12: "벚꽃 엔딩", 29: "오션 드라이브"}


def ipi(rng: random.Random) -> str:
    base = f"{rng.randrange(10**8, 10**9):09d}"
    return base + ipi_check(base)


def iswc(index: int) -> str:
    base = f"{317_000_000 + index * 7919:09d}"
    return f"T{base}{iswc_check_digit(base)}"


def isrc(index: int) -> str:
    return f"KRA40{26 if index % 3 else 25}{index + 1:05d}"


def tx(tx_type: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": tx_type, "payload": payload}, ensure_ascii=False, sort_keys=True)


class CwrFile:
    """Records of one CWR 2.2 file, with the GRT and TRL counts kept as they are written."""

    def __init__(self, sender_type: str, sender_id: str, name: str) -> None:
        self.lines = [hdr(sender_type, sender_id, name, CREATED, "UTF-8"), grh("NWR", 1)]
        self.transactions = 0
        self.sequence = 0

    def work(self, values: dict[str, Any]) -> None:
        self.sequence = 0
        self.lines.append(record(layout.WORK, values, prefix("NWR", self.transactions, 0)))
        self.transactions += 1

    def add(
        self, fields: tuple[layout.Field, ...], record_type: str, values: dict[str, Any]
    ) -> None:
        self.sequence += 1
        self.lines.append(
            record(fields, values, prefix(record_type, self.transactions - 1, self.sequence))
        )

    def text(self) -> str:
        group = len(self.lines) - 1 + 1  # GRH .. GRT
        lines = [
            *self.lines,
            grt(1, self.transactions, group),
            trl(1, self.transactions, group + 2),
        ]
        return "\r\n".join(lines) + "\r\n"


def _writer(rng: random.Random, number: int, society: str) -> dict[str, Any]:
    last, first = rng.choice(SURNAMES), rng.choice(GIVEN)
    return {
        "ip": f"W{number:06d}",
        "last": last,
        "first": first,
        "ipi": ipi(rng),
        "hangul": HANGUL_SURNAMES[last] + HANGUL_GIVEN[first],
        "society": society,
    }


def _territories(  # noqa: PLR0917 (a record's fields, in the record's order)
    cwr: CwrFile,
    fields: tuple[layout.Field, ...],
    record_type: str,
    ip: str,
    territories: list[tuple[str, str, int, int]],
    shares_change: str,
) -> None:
    """SPT or SWT records: (inclusion, TIS code, PR collection, MR collection) each."""
    for sequence, (inclusion, tis, pr_collection, mr_collection) in enumerate(territories, 1):
        cwr.add(
            fields,
            record_type,
            {
                "ip_number": ip,
                "pr_collection_share": pr_collection,
                "mr_collection_share": mr_collection,
                "sr_collection_share": 0,
                "inclusion_exclusion": inclusion,
                "tis_code": tis,
                "shares_change": shares_change,
                "sequence": sequence,
            },
        )


def _swr(  # noqa: PLR0917 (a record's fields, in the record's order)
    cwr: CwrFile,
    writer: dict[str, Any],
    role: str,
    pr: int,
    mr: int,
    chain: int,
    publisher: dict[str, Any] | None,
    territories: list[tuple[str, str, int, int]],
) -> None:
    cwr.add(
        layout.WRITER,
        "SWR",
        {
            "ip_number": writer["ip"],
            "last_name": writer["last"].upper(),
            "first_name": writer["first"].upper(),
            "designation": role,
            "ipi_name_number": writer["ipi"],
            "pr_society": writer["society"],
            "pr_ownership_share": pr,
            "mr_society": writer["society"],
            "mr_ownership_share": mr,
            "sr_ownership_share": 0,
        },
    )
    _territories(cwr, layout.WRITER_TERRITORY, "SWT", writer["ip"], territories, "N")
    cwr.add(layout.NWN, "NWN", {"ip_number": writer["ip"], "last_name": writer["hangul"]})
    if publisher is not None:
        cwr.add(
            layout.PWR,
            "PWR",
            {
                "publisher_ip_number": publisher["ip"],
                "publisher_name": publisher["name"],
                "writer_ip_number": writer["ip"],
                "publisher_sequence": chain,
            },
        )


def _spu(  # noqa: PLR0917 (a record's fields, in the record's order)
    cwr: CwrFile,
    publisher: dict[str, Any],
    chain: int,
    role: str,
    pr: int,
    mr: int,
    territories: list[tuple[str, str, int, int]],
) -> None:
    cwr.add(
        layout.PUBLISHER,
        "SPU",
        {
            "publisher_sequence": chain,
            "ip_number": publisher["ip"],
            "name": publisher["name"],
            "publisher_type": role,
            "ipi_name_number": publisher["ipi"],
            "ipi_base_number": publisher.get("base", ""),
            "pr_society": publisher["society"],
            "pr_ownership_share": pr,
            "mr_society": publisher["society"],
            "mr_ownership_share": mr,
            "sr_ownership_share": 0,
        },
    )
    _territories(
        cwr, layout.PUBLISHER_TERRITORY, "SPT", publisher["ip"], territories,
        "Y" if role == "SE" else "N",
    )  # fmt: skip


def generate(out: Path) -> None:
    rng = random.Random(SEED)
    writers = [_writer(rng, i, "118") for i in range(1, 11)]
    hanbit = {
        "ip": "HB0001",
        "name": "HANBIT MUSIC PUBLISHING",
        "ipi": ipi(rng),
        "base": "I-000301001-5",
        "society": "118",
    }
    seoul = {"ip": "SS0001", "name": "SEOUL SONGS CO", "ipi": ipi(rng), "society": "118"}
    tokyo = {"ip": "TK0001", "name": "TOKYO SONGS KK", "ipi": ipi(rng), "society": "038"}
    koscap_writers = [_writer(rng, i, "") for i in range(1, 4)]
    labels = [
        ("RIAK-L01", "Starship Sound"),
        ("RIAK-L02", "Blue Wave Records"),
        ("RIAK-L03", "Moonlight Entertainment"),
    ]
    performers = [
        (f"FKMP-A{i:03d}", f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}") for i in range(1, 9)
    ]

    cwr = CwrFile("PB", "000000301", "HANBIT MUSIC PUBLISHING")
    works: list[dict[str, Any]] = []
    world = [("I", "2136", 2500, 2500)]
    for index in range(WORKS - 1):
        number = f"HB{index + 1:04d}"
        title = TITLES[index]
        modified = index == 12
        cwr.work(
            {
                "title": title.upper(),
                "language": "KO",
                "submitter_work_number": number,
                "iswc": iswc(index),
                "distribution_category": "POP",
                "duration": f"0003{rng.randrange(0, 60):02d}",
                "recorded_indicator": "Y",
                "version_type": "MOD" if modified else "ORI",
                "music_arrangement": "ORI" if modified else "",
                "lyric_adaptation": "MOD" if modified else "",
            }
        )
        composer, lyricist = rng.sample(writers, 2)
        own = seoul if index % 2 else hanbit
        korea_japan_us = index % 6 == 3
        if korea_japan_us:
            publisher_territories = [("I", t, 5000, 5000) for t in ("0410", "0392", "0840")]
            writer_territories = [("I", t, 2500, 2500) for t in ("0410", "0392", "0840")]
        elif index == 7:  # sub-published in Japan by Tokyo Songs
            publisher_territories = [("I", "2136", 5000, 5000), ("E", "0392", 0, 0)]
            writer_territories = world
        else:
            publisher_territories = [("I", "2136", 5000, 5000)]
            writer_territories = world
        if own is hanbit:
            _spu(cwr, hanbit, 1, "E", 5000, 5000, publisher_territories)
        else:  # Seoul Songs owns, Hanbit administers and collects
            _spu(cwr, seoul, 1, "E", 5000, 5000, [])
            _spu(cwr, hanbit, 1, "AM", 0, 0, publisher_territories)
        if index == 7:
            _spu(cwr, tokyo, 1, "SE", 0, 0, [("I", "0392", 5000, 5000)])
        _swr(cwr, composer, "C", 2500, 2500, 1, own, writer_territories)
        _swr(cwr, lyricist, "AR" if modified else "A", 2500, 2500, 1, own, writer_territories)
        if index % 4 == 0:
            cwr.add(
                layout.ALT, "ALT", {"title": f"{title} (Korean ver.)".upper(), "title_type": "AT"}
            )
        if index in HANGUL_TITLES:
            cwr.add(
                layout.NAT,
                "NAT",
                {"title": HANGUL_TITLES[index], "title_type": "OT", "language": "KO"},
            )
        if modified:
            cwr.add(
                layout.VER, "VER", {"title": TITLES[0].upper(), "iswc": iswc(0), "language": "KO"}
            )
        cwr.add(
            layout.PER,
            "PER",
            {
                "last_name": performers[index % 8][1].split()[0].upper(),
                "first_name": performers[index % 8][1].split()[1].upper(),
            },
        )
        cwr.add(
            layout.REC,
            "REC",
            {
                "release_date": "20260101",
                "isrc": isrc(index),
                "recording_format": "A",
                "recording_technique": "D",
                "media_type": "DW",
                "recording_title": title.upper(),
                "display_artist": performers[index % 8][1].upper(),
                "record_label": labels[index % 3][1].upper(),
            },
        )
        works.append(
            {"work_id": f"{PUBLISHER_SENDER}-{number}", "title": title, "iswc": iswc(index)}
        )
    (out / WORKS_FILE).write_text(cwr.text(), encoding="utf-8", newline="")

    koscap = CwrFile("WR", "000000777", "PARK SEOYEON")
    koscap.work(
        {
            "title": "RIVER OF STARS",
            "language": "KO",
            "submitter_work_number": "WR0001",
            "iswc": iswc(100),
            "distribution_category": "POP",
            "recorded_indicator": "N",
            "version_type": "ORI",
        }
    )
    _swr(koscap, koscap_writers[0], "CA", 10000, 10000, 0, None, [("I", "2136", 10000, 10000)])
    (out / KOSCAP_FILE).write_text(koscap.text(), encoding="utf-8", newline="")

    seoul_id = f"IPI-{seoul['ipi']}"
    ai_work = {"work_id": "KOMCA-W0036", "title": TITLES[WORKS - 1], "iswc": iswc(WORKS - 1)}
    komca_ai = [
        tx(
            "RegisterWork",
            {
                "work_id": ai_work["work_id"],
                "iswc": ai_work["iswc"],
                "titles": [ai_work["title"]],
                "provenance": {
                    "creation_type": "ai_generated",
                    "components": {"composition": {"ai_used": True, "tool": "SongForge 3"}},
                },
            },
        )
    ]
    for index in (5, 17):
        komca_ai.append(
            tx(
                "DeclareProvenance",
                {
                    "subject": {"kind": "work", "id": works[index]["work_id"]},
                    "provenance": {
                        "creation_type": "ai_assisted",
                        "components": {"instrumentation": {"ai_used": True, "tool": "StemGen 2"}},
                        "human_contribution": "human-written melody and lyrics; AI-generated drum stems, edited by the producer",  # noqa: E501
                        "warranty_ref": f"KOMCA-HW-2026-{index + 1:04d}",
                    },
                },
            )
        )
    works.append(ai_work)
    # KOSCAP claims 40 % of PB301-HB0002's PR for its writers while KOMCA's set is 100 %.
    koscap_parties = [
        tx(
            "RegisterParty",
            {
                "party_id": f"KOSCAP-P{i:03d}",
                "kind": "person",
                "names": [{"name": f"{w['first']} {w['last']}", "ipi": w["ipi"]}],
                "memberships": [{"society": "KOSCAP"}],
            },
        )
        for i, w in enumerate(koscap_writers[1:], start=2)
    ]
    overclaim = {
        "subject": {"kind": "work", "id": works[1]["work_id"]},
        "right": "PR",
        "shares": [
            {"party_id": "KOSCAP-P002", "kind": "writer", "role": "CA", "ownership": 4000},
            {"party_id": "KOSCAP-P003", "kind": "writer", "role": "A", "ownership": 1000},
            {"party_id": seoul_id, "kind": "publisher", "role": "E", "ownership": 5000},
        ],
    }
    (out / "koscap-overclaim.jsonl").write_text(
        "\n".join([*koscap_parties, tx("SetShares", overclaim)]) + "\n", encoding="utf-8"
    )

    fkmp = [
        tx(
            "RegisterParty",
            {
                "party_id": pid,
                "kind": "person",
                "names": [{"name": n}],
                "memberships": [{"society": "FKMP"}],
            },
        )
        for pid, n in performers
    ]
    (out / "fkmp-parties.jsonl").write_text("\n".join(fkmp) + "\n", encoding="utf-8")

    riak = [
        tx(
            "RegisterParty",
            {
                "party_id": pid,
                "kind": "company",
                "names": [{"name": n}],
                "memberships": [{"society": "RIAK", "right": "NR_PRODUCER"}],
            },
        )
        for pid, n in labels
    ]
    kmca_links: list[str] = []
    fkmp_rights: list[str] = []
    recordings: list[dict[str, Any]] = []
    for index, work in enumerate(works):
        code = isrc(index)
        cid = f"A{rng.randrange(10**15, 10**16)}"
        uci = f"G8011+RIAK-{2026_0000 + index + 1}"
        artists = [
            performers[index % 8],
            *rng.sample([p for p in performers if p != performers[index % 8]], 2),
        ]
        label = labels[index % 3]
        recordings.append({"isrc": code, "cid": cid, "uci": uci, "work": work})
        riak.append(
            tx(
                "RegisterRecording",
                {
                    "isrc": code,
                    "title": work["title"],
                    "duration_s": rng.randrange(150, 260),
                    "main_artists": [artists[0][1]],
                    "producers": [label[0]],
                    "performers": [
                        {"party_id": artists[0][0], "featured": True},
                        {"party_id": artists[1][0], "featured": True},
                        {"party_id": artists[2][0], "instrument": "guitar"},
                    ],
                    "works": [work["work_id"]],
                    "cids": [cid],
                    "ucis": [uci],
                },
            )
        )
        riak.append(
            tx(
                "SetShares",
                {
                    "subject": {"kind": "recording", "id": code},
                    "right": "NR_PRODUCER",
                    "shares": [{"party_id": label[0], "share": 10_000}],
                },
            )
        )
        kmca_links.append(
            tx(
                "LinkIdentifiers",
                {"from": {"kind": "isrc", "value": code}, "to": {"kind": "cid", "value": cid}},
            )
        )
        kmca_links.append(
            tx(
                "LinkIdentifiers",
                {"from": {"kind": "isrc", "value": code}, "to": {"kind": "uci", "value": uci}},
            )
        )
        fkmp_rights.append(
            tx(
                "SetShares",
                {
                    "subject": {"kind": "recording", "id": code},
                    "right": "NR_PERFORMER",
                    "shares": [
                        {"party_id": artists[0][0], "share": 4000},
                        {"party_id": artists[1][0], "share": 4000},
                        {"party_id": artists[2][0], "share": 2000},
                    ],
                },
            )
        )
        if index % 5 == 0:
            riak.append(
                tx(
                    "SetAiTrainingPolicy",
                    {
                        "subject": {"kind": "recording", "id": code},
                        "consent": "conditional",
                        "scopes": {
                            "ai_training": "constrained",
                            "ai_generative_training": "notAllowed",
                        },
                        "policy_uri": "https://riak.example/ai-policy.json",
                        "conditions": "licence and remuneration via RIAK",
                        "legal_basis": "Copyright Act art. 35-5 (no TDM exception for commercial training)",  # noqa: E501
                    },
                )
            )
    # The ai_generated work's recording: KOMCA confirms the link its CWR could not name.
    komca_links = [
        tx(
            "LinkIdentifiers",
            {
                "from": {"kind": "iswc", "value": ai_work["iswc"]},
                "to": {"kind": "isrc", "value": isrc(WORKS - 1)},
            },
        )
    ]
    for index, work in enumerate(works[:12]):
        komca_links.append(
            tx(
                "SetAiTrainingPolicy",
                {
                    "subject": {"kind": "work", "id": work["work_id"]},
                    "consent": "allow" if index % 3 == 0 else "deny",
                    "territories": ["KR"],
                    "policy_uri": "https://komca.example/tdmrep.json",
                    "legal_basis": "member mandate 2026",
                },
            )
        )
    fkmp_rights.append(
        tx(
            "SetPersonaConsent",
            {
                "party_id": performers[0][0],
                "voice_cloning": "deny",
                "likeness": "conditional",
                "note": "no voice models without written consent",
            },
        )
    )
    fkmp_rights.append(
        tx(
            "RegisterPersonaClaim",
            {
                "claim_id": "FKMP-PC-0001",
                "performer_party_id": performers[0][0],
                "subject": {"kind": "cid", "id": "A9990000000000001"},
                "description": f"AI voice clone of {performers[0][1]} uploaded as a 'new single'",
                "evidence_hashes": ["5f1b" * 16, "a3c9" * 16],
            },
        )
    )
    (out / "komca-ai.jsonl").write_text("\n".join(komca_ai) + "\n", encoding="utf-8")
    (out / "riak-recordings.jsonl").write_text("\n".join(riak) + "\n", encoding="utf-8")
    (out / "komca-links.jsonl").write_text("\n".join(komca_links) + "\n", encoding="utf-8")
    (out / "kmca-links.jsonl").write_text("\n".join(kmca_links) + "\n", encoding="utf-8")
    (out / "fkmp-rights.jsonl").write_text("\n".join(fkmp_rights) + "\n", encoding="utf-8")
    (out / USAGE_FILE).write_text(_dsr(rng, recordings), encoding="utf-8", newline="")


def _dsr(rng: random.Random, recordings: list[dict[str, Any]]) -> str:
    """A Melon monthly report in the DSR Basic Audio Profile: every line an SU02 stream count."""
    blocks: list[list[str]] = []
    total = 0
    for index, rec in enumerate(recordings):
        block = str(index + 1)
        rows = [
            "\t".join(
                [
                    "AS01.01",
                    block,
                    f"R{index + 1}",
                    f"MLN{31_000_000 + index}",
                    rec["isrc"],
                    rec["work"]["title"],
                    "",
                    "Various",
                    "",
                    "PT3M30S",
                    "SoundRecording",
                    "true",
                ]
            ),
            "\t".join(
                [
                    "MW01.01",
                    block,
                    f"MLW{index + 1}",
                    rec["work"]["iswc"],
                    rec["work"]["title"].upper(),
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"MELON::W{index + 1:05d}",
                ]
            ),
        ]
        for day in range(rng.randrange(5, 10)):
            usages = rng.randrange(1_000, 250_000)
            total += usages
            rows.append(
                "\t".join(
                    [
                        "SU02.02",
                        block,
                        "S1",
                        f"T{day + 1:02d}",
                        "",
                        f"R{index + 1}",
                        "true",
                        str(usages),
                        "",
                        "",
                    ]
                )
            )
        blocks.append(rows)
    unmatched: list[str] = []
    for extra in range(12):  # unknown recordings, on purpose
        block = str(len(recordings) + extra + 1)
        usages = rng.randrange(100, 5_000)
        total += usages
        unmatched += [
            "\t".join(
                [
                    "AS01.01",
                    block,
                    "R1",
                    f"MLN{39_000_000 + extra}",
                    f"KRB9926{extra:05d}",
                    f"Unknown Track {extra}",
                    "",
                    "Unknown",
                    "",
                    "PT3M",
                    "SoundRecording",
                    "",
                ]
            ),
            "\t".join(["SU02.02", block, "S1", "T01", "", "R1", "true", str(usages), "", ""]),
        ]
    block = str(len(recordings) + 13)
    total += 10
    bad = [
        "\t".join(
            [
                "AS01.01",
                block,
                "R1",
                "MLN39999999",
                "AA6Q72000047",
                "bad ISRC",
                "",
                "Unknown",
                "",
                "PT3M",
                "SoundRecording",
                "",
            ]
        ),
        "\t".join(["SU02.02", block, "S1", "T01", "", "R1", "true", "10", "", ""]),
    ]
    head = "\t".join(
        [
            "HEAD",
            "dsrf/1.1/1.4.1/1.3",
            "BasicAudioProfile",
            "1.3",
            "MELON-2026-01-KR",
            "2026-02-05T09:00:00Z",
            "1",
            "1",
            "2026-01-01",
            "2026-01-31",
            "PADPIDA2010120701W",
            "Melon",
            "Subscription",
            "PADPIDA2026010501K",
            "KMCA",
            "",
        ]
    )
    summary = "\t".join(
        [
            "SY01.02",
            "S1",
            "Melon",
            "PADPIDA2010120701W",
            "SubscriptionModel",
            "OnDemandStream",
            "KR",
            "Subscription",
            str(total),
            "4200000",
            "KRW",
            "1850000000",
            "",
            "",
            "",
        ]
    )
    rows = [
        head,
        "#HEAD\tMessageVersion\tProfile\tProfileVersion\tMessageId\tMessageCreatedDateTime\tFileNumber\tNumberOfFiles\tUsageStartDate\tUsageEndDate\tSenderPartyId\tSenderName\tServiceDescription\tRecipientPartyId\tRecipientName\tRepresentedRepertoire",
        "#SY01.02\tSummaryRecordId\tDistributionChannel\tDistributionChannelDPID\tCommercialModel\tUseType\tTerritory\tServiceDescription\tTotalUsages\tSubscribers\tCurrencyOfReporting\tNetRevenue\tIndirectValue\tCurrencyOfTransaction\tExchangeRate",
        "#AS01.01\tBlockId\tResourceReference\tDspResourceId\tISRC\tTitle\tSubTitle\tDisplayArtistName\tDisplayArtistPartyId\tDuration\tResourceType\tIsMasterRecording",
        "#MW01.01\tBlockId\tDspWorkId\tISWC\tTitle\tSubTitle\tComposerAuthor\tComposerAuthorPartyId\tArranger\tArrangerPartyId\tMusicPublisher\tMusicPublisherPartyId\tWorkContributor\tWorkContributorPartyId\tDataProvider\tProprietaryWorkId",
        "#SU02.02\tBlockId\tSummaryRecordId\tSalesTransactionId\tTransactedRelease\tTransactedResource\tIsRoyaltyBearing\tNumberOfStreams\tPriceConsumerPaidExcSalesTax\tPromotionalActivity",
        summary,
        *(row for block in blocks for row in block),
        *unmatched,
        *bad,
    ]
    block_count = len(recordings) + 13
    lines = len(rows) + 1
    rows.append(
        "\t".join(["FOOT", str(lines), str(lines), "1", str(block_count), str(block_count)])
    )
    return "\r\n".join(rows) + "\r\n"


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
