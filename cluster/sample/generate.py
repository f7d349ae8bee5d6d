"""Generate the sample catalog in cluster/sample/ (deterministic: same files every run).

    python -m kledger.cluster.sample.generate [OUT_DIR]

A small, realistic K-pop catalog: 36 works (ISWCs with valid check digits; one modified
version; one ai_generated, two ai_assisted), their recordings (KR ISRCs, UCIs, YouTube Content
IDs), writers, publishers, labels and performers with valid IPI name numbers, confirmed links,
share sets, one overclaim, AI-training policies, persona consent and a deepfake claim, and a
DSR-style usage report of a few hundred lines (some unmatched on purpose). Load order and the
commands are in docs/registry.md.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from kledger.node.registry.identifiers import ipi_check, iswc_check_digit

SEED = 20260101
WORKS = 36
HERE = Path(__file__).resolve().parent

SURNAMES = ["Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim", "Han", "Oh"]
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
TITLES = [
    "Spring Rain", "Neon Seoul", "Blue Hour", "Paper Planes", "Midnight Subway", "Hanriver Lights",
    "First Snow", "Afterglow", "Echo Chamber", "Starlight Letter", "Summer Static", "Moonwalk Road",
    "Cherry Blossom Ending", "Gravity", "Polaroid", "Daydream", "Silver Lining", "Velvet Night",
    "Runaway Train", "Heartbeat Signal", "Lemonade", "Golden Hour", "Glass Garden", "Secret Code",
    "Wildflower", "Satellite", "Rewind", "Firefly", "Crosswalk", "Ocean Drive", "Fever Dream",
    "Last Page", "Butterfly Effect", "Sunday Morning", "Skyline", "Synthetic Dawn",
]  # fmt: skip


def ipi(rng: random.Random) -> str:
    base = f"{rng.randrange(10**8, 10**9):09d}"
    return base + ipi_check(base)


def iswc(index: int) -> str:
    base = f"{317_000_000 + index * 7919:09d}"
    return f"T{base}{iswc_check_digit(base)}"


def name(rng: random.Random) -> str:
    return f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"


def tx(tx_type: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": tx_type, "payload": payload}, ensure_ascii=False, sort_keys=True)


def generate(out: Path) -> None:
    rng = random.Random(SEED)
    writers = [(f"KOMCA-P{i:03d}", name(rng), ipi(rng)) for i in range(1, 11)]
    publishers = [
        ("KOMCA-PUB01", "Hanbit Music Publishing", ipi(rng)),
        ("KOMCA-PUB02", "Seoul Songs Co.", ipi(rng)),
    ]
    koscap_writers = [(f"KOSCAP-P{i:03d}", name(rng), ipi(rng)) for i in range(1, 4)]
    labels = [
        ("RIAK-L01", "Starship Sound"),
        ("RIAK-L02", "Blue Wave Records"),
        ("RIAK-L03", "Moonlight Entertainment"),
    ]
    performers = [(f"FKMP-A{i:03d}", name(rng)) for i in range(1, 9)]

    cwr = ["HDR\tKOMCA\tSAMPLE-2026-01"]
    cwr += [f"PTY\t{pid}\tperson\t{n}\t{i}\tKOMCA" for pid, n, i in writers]
    cwr += [f"PTY\t{pid}\tcompany\t{n}\t{i}\tKOMCA" for pid, n, i in publishers]
    works: list[dict[str, Any]] = []
    for index in range(WORKS):
        work_id = f"KOMCA-W{index + 1:04d}"
        title = TITLES[index]
        creation = "human"
        if index == WORKS - 1:
            creation = "ai_generated"
        elif index in (5, 17):
            creation = "ai_assisted"
        if creation == "ai_generated":
            cwr.append(f"NWR\t{work_id}\t{title}\t{iswc(index)}\tORI\t\tai_generated\t\t")
            works.append(
                {"work_id": work_id, "title": title, "iswc": iswc(index), "creation": creation}
            )
            continue
        statement = "melody, harmony and lyrics written by the credited writers"
        if creation == "ai_assisted":
            statement = (
                "human-written melody and lyrics; AI-generated drum stems, edited by the producer"
            )
        modified = index == 12
        version = "MOD\tKOMCA-W0001" if modified else "ORI\t"
        cwr.append(
            f"NWR\t{work_id}\t{title}\t{iswc(index)}\t{version}\t{creation}\tKOMCA-HW-2026-{index + 1:04d}\t{statement}"  # noqa: E501
        )
        if index % 4 == 0:
            cwr.append(f"ALT\t{title} (Korean ver.)")
        composer, lyricist = rng.sample(writers, 2)
        publisher = publishers[index % 2]
        if modified:
            cwr.append(f"SWR\t{composer[0]}\tC\t02500\t02500")
            cwr.append(f"SWR\t{lyricist[0]}\tAR\t02500\t02500")
        else:
            cwr.append(f"SWR\t{composer[0]}\tC\t02500\t02500")
            cwr.append(f"SWR\t{lyricist[0]}\tA\t02500\t02500")
        cwr.append(f"SPU\t{publisher[0]}\tE\t05000\t05000")
        if index % 6 == 3:
            cwr.append("TER\tKR,JP,US")
        works.append(
            {"work_id": work_id, "title": title, "iswc": iswc(index), "creation": creation}
        )
    cwr.append("TRL")
    (out / "komca-works.cwr").write_text("\n".join(cwr) + "\n", encoding="utf-8")

    koscap = ["HDR\tKOSCAP\tSAMPLE-2026-01"]
    koscap += [f"PTY\t{pid}\tperson\t{n}\t{i}\tKOSCAP" for pid, n, i in koscap_writers]
    koscap.append(
        f"NWR\tKOSCAP-W0001\tRiver of Stars\t{iswc(100)}\tORI\t\thuman\tKOSCAP-HW-0001\twritten by the credited writers"  # noqa: E501
    )
    koscap.append(f"SWR\t{koscap_writers[0][0]}\tCA\t10000\t10000")
    koscap.append("TRL")
    (out / "koscap-works.cwr").write_text("\n".join(koscap) + "\n", encoding="utf-8")
    # KOSCAP claims 40 % of KOMCA-W0002 for its writer while KOMCA's set is 100 %: an overclaim.
    overclaim = {
        "subject": {"kind": "work", "id": "KOMCA-W0002"}, "right": "PR",
        "shares": [
            {"party_id": koscap_writers[1][0], "kind": "writer", "role": "CA", "ownership": 4000},
            {"party_id": koscap_writers[2][0], "kind": "writer", "role": "A", "ownership": 1000},
            {"party_id": "KOMCA-PUB02", "kind": "publisher", "role": "E", "ownership": 5000},
        ],
    }  # fmt: skip
    (out / "koscap-overclaim.jsonl").write_text(tx("SetShares", overclaim) + "\n", encoding="utf-8")

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
    komca_links: list[str] = []
    kmca_links: list[str] = []
    fkmp_rights: list[str] = []
    recordings: list[dict[str, Any]] = []
    for index, work in enumerate(works):
        isrc = f"KRA40{26 if index % 3 else 25}{index + 1:05d}"
        cid = f"A{rng.randrange(10**15, 10**16)}"
        uci = f"G8011+RIAK-{2026_0000 + index + 1}"
        artists = rng.sample(performers, 3)
        label = labels[index % 3]
        recordings.append({"isrc": isrc, "cid": cid, "uci": uci, "work": work})
        riak.append(tx("RegisterRecording", {
            "isrc": isrc, "title": work["title"], "duration_s": rng.randrange(150, 260),
            "main_artists": [artists[0][1]], "producers": [label[0]],
            "performers": [{"party_id": artists[0][0], "featured": True}, {"party_id": artists[1][0], "featured": True}, {"party_id": artists[2][0], "instrument": "guitar"}],  # noqa: E501
            "works": [work["work_id"]], "cids": [cid], "ucis": [uci],
        }))  # fmt: skip
        riak.append(
            tx(
                "SetShares",
                {
                    "subject": {"kind": "recording", "id": isrc},
                    "right": "NR_PRODUCER",
                    "shares": [{"party_id": label[0], "share": 10_000}],
                },
            )
        )
        komca_links.append(
            tx(
                "LinkIdentifiers",
                {
                    "from": {"kind": "iswc", "value": work["iswc"]},
                    "to": {"kind": "isrc", "value": isrc},
                },
            )
        )
        kmca_links.append(
            tx(
                "LinkIdentifiers",
                {"from": {"kind": "isrc", "value": isrc}, "to": {"kind": "cid", "value": cid}},
            )
        )
        kmca_links.append(
            tx(
                "LinkIdentifiers",
                {"from": {"kind": "isrc", "value": isrc}, "to": {"kind": "uci", "value": uci}},
            )
        )
        fkmp_rights.append(tx("SetShares", {"subject": {"kind": "recording", "id": isrc}, "right": "NR_PERFORMER", "shares": [  # noqa: E501
            {"party_id": artists[0][0], "share": 4000}, {"party_id": artists[1][0], "share": 4000}, {"party_id": artists[2][0], "share": 2000}]}))  # fmt: skip  # noqa: E501
        if index % 5 == 0:
            riak.append(
                tx(
                    "SetAiTrainingPolicy",
                    {
                        "subject": {"kind": "recording", "id": isrc},
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
    komca_ai = []
    for index, work in enumerate(works[:12]):
        consent = "allow" if index % 3 == 0 else "deny"
        komca_ai.append(
            tx(
                "SetAiTrainingPolicy",
                {
                    "subject": {"kind": "work", "id": work["work_id"]},
                    "consent": consent,
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
    fkmp_rights.append(tx("RegisterPersonaClaim", {
        "claim_id": "FKMP-PC-0001", "performer_party_id": performers[0][0], "subject": {"kind": "cid", "id": "A9990000000000001"},  # noqa: E501
        "description": f"AI voice clone of {performers[0][1]} uploaded as a 'new single'",
        "evidence_hashes": ["5f1b" * 16, "a3c9" * 16]}))  # fmt: skip
    (out / "riak-recordings.jsonl").write_text("\n".join(riak) + "\n", encoding="utf-8")
    (out / "komca-links.jsonl").write_text(
        "\n".join(komca_links + komca_ai) + "\n", encoding="utf-8"
    )
    (out / "kmca-links.jsonl").write_text("\n".join(kmca_links) + "\n", encoding="utf-8")
    (out / "fkmp-rights.jsonl").write_text("\n".join(fkmp_rights) + "\n", encoding="utf-8")

    dsr = ["# DSR-style monthly streaming report (tab-separated)"]
    dsr.append(
        "HEAD\tMELON-2026-01-KR\t2026-01\tKR\tMelon\tsubscription\tstream\tKRW\t1850000000\t0"
    )
    line = 0
    for rec in recordings:
        for _ in range(rng.randrange(5, 10)):
            line += 1
            usages = rng.randrange(1_000, 250_000)
            columns = [rec["isrc"], "", "", ""]
            pick = rng.randrange(10)
            if pick == 0:
                columns = ["", "", rec["cid"], ""]
            elif pick == 1:
                columns = ["", "", "", "urn:uci:" + rec["uci"]]
            dsr.append(
                f"RU\t{line:06d}\t" + "\t".join(columns) + f"\t{usages}\t{rec['work']['title']}\t"
            )
    for extra in range(12):  # unmatched on purpose: unknown recordings and unlinked assets
        line += 1
        if extra % 2:
            dsr.append(
                f"RU\t{line:06d}\tKRB99260{extra:04d}\t\t\t\t{rng.randrange(100, 5_000)}\tUnknown Track {extra}\t"  # noqa: E501
            )
        else:
            dsr.append(
                f"RU\t{line:06d}\t\t\tAunclaimed{extra:06d}\t\t{rng.randrange(100, 5_000)}\tUGC clip {extra}\t"  # noqa: E501
            )
    line += 1
    dsr.append(
        f"RU\t{line:06d}\tAA6Q72000047\t\t\t\t10\tbad ISRC\t"
    )  # refused at import: not an ISRC
    (out / "usage-2026-01.tsv").write_text("\n".join(dsr) + "\n", encoding="utf-8")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
