"""Bulk import: CWR-style works, DSR-style usage and JSON-lines files become valid transaction
bodies (bad lines reported with line numbers and reasons); the shipped sample catalog loads
into a registry end to end through signed batches, and resolves, distributes and answers."""

from __future__ import annotations

import io
from pathlib import Path

from kledger.node.chain.receipt import TxResult
from kledger.node.chain.tx import admit_tx
from kledger.node.registry import BlockContext, bulk
from kledger.node.registry.queries import RegistryQueries
from tests.helpers import key
from tests.test_registry import Chain

SAMPLE = Path(__file__).resolve().parent.parent / "cluster" / "sample"
LOAD_ORDER = [
    ("KOMCA", "komca-works.cwr"),
    ("KOSCAP", "koscap-works.cwr"),
    ("FKMP", "fkmp-parties.jsonl"),
    ("RIAK", "riak-recordings.jsonl"),
    ("KOMCA", "komca-links.jsonl"),
    ("KMCA", "kmca-links.jsonl"),
    ("FKMP", "fkmp-rights.jsonl"),
    ("KOSCAP", "koscap-overclaim.jsonl"),
    ("KMCA", "usage-2026-01.tsv"),
]


def plan_file(path: Path) -> bulk.Plan:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".cwr":
        return bulk.plan_cwr(text, path.name)
    if path.suffix == ".tsv":
        return bulk.plan_dsr(text, path.name)
    return bulk.plan_jsonl(text, path.name)


def submitter(chain: Chain):
    def submit(encodings: list[bytes]) -> list[TxResult]:
        txs = [admit_tx(data, chain.genesis.chain_id) for data in encodings]
        for tx, body in txs:
            chain.registry.check_admission(chain.view, tx, body)
        chain.height += 1
        chain.time_ms += 1000
        ctx = BlockContext(chain.genesis.chain_id, 0, chain.height, chain.time_ms)
        outcome = chain.registry.execute_block(chain.view, txs, ctx)
        chain.view.apply(outcome.writes)
        chain.roots.append(outcome.state_root)
        return outcome.results

    return submit


def load_sample(chain: Chain) -> dict[str, bulk.Summary]:
    summaries = {}
    nonce = 1_000
    for org, name in LOAD_ORDER:
        plan = plan_file(SAMPLE / name)
        summary = bulk.submit_plan(
            plan, key(f"{org}/client"), chain.genesis.chain_id, submitter(chain),
            first_nonce=nonce, progress=None,
        )  # fmt: skip
        nonce += len(plan.txs)
        summaries[name] = summary
    return summaries


def test_cwr_records_become_parties_works_and_shares():
    text = (
        "HDR\tKOMCA\tF1\n"
        "PTY\tW-1\tperson\tKim Minji\t00662307358\tKOMCA\n"
        "NWR\tWK1\tSpring\tT-034.524.680-1\tORI\t\thuman\tHW-1\tby the writers\n"
        "ALT\tBom\n"
        "SWR\tW-1\tCA\t05000\t05000\n"
        "SPU\tPUB\tE\t05000\t05000\t05000\t03000\n"
        "SPU\tSUB\tSE\t00000\t02000\n"
        "TER\tKR,JP\n"
        "NWR\tWK2\tBroken\tT-034.524.680-2\tORI\t\thuman\tHW-2\tx\n"
        "SWR\tW-1\tCA\t10000\t10000\n"
        "SWR\tW-2\tCA\t1OOOO\t0\n"
        "XYZ\tjunk\n"
        "TRL\n"
    )
    plan = bulk.plan_cwr(text, "f.cwr")
    types = [(tx.type, tx.origin) for tx in plan.txs]
    assert types == [
        ("RegisterParty", "f.cwr:2"),
        ("RegisterWork", "f.cwr:3"),
        ("SetShares", "f.cwr:3"),
        ("SetShares", "f.cwr:3"),
        ("SetShares", "f.cwr:9"),  # statelessly fine; refused by the node (no work WK2)
        ("SetShares", "f.cwr:9"),
    ]
    work = plan.txs[1].payload
    assert work["titles"] == ["Spring", "Bom"] and work["creators"] == [
        {"party_id": "W-1", "role": "CA"}
    ]
    mr = plan.txs[3].payload
    assert mr["right"] == "MR" and mr["territories"] == ["KR", "JP"]
    assert {
        "party_id": "SUB",
        "kind": "publisher",
        "role": "SE",
        "ownership": 0,
        "collection": 2000,
    } in mr["shares"]
    problems = {p.origin: p.reason for p in plan.problems}
    assert "1OOOO" in problems["f.cwr:11"]
    assert "unknown record type 'XYZ'" in problems["f.cwr:12"]
    assert "check digit" in problems["f.cwr:9"]  # WK2's RegisterWork refused statelessly


def test_dsr_lines_batch_into_usage_reports_with_reasons_for_bad_lines():
    text = (
        "HEAD\tR1\t2026-01\tKR\tMelon\tsubscription\tstream\tKRW\t1000000\t0\n"
        "RU\t1\tKRA341561064\t\t\t\t10\tSong\t\n"
        "RU\t2\t\t\tA12345\t\t20\tClip\t\n"
        "RU\t3\t\t\t\turn:uci:I001+SBSi-B1\t30\t\t\n"
        "RU\t4\t\tT-034.524.680-1\t\t\t40\t\t\n"
        "RU\t5\tAA6Q72000047\t\t\t\t5\t\t\n"
        "RU\t6\t\t\t\t\t5\t\t\n"
        "RU\t7\tKRA341561064\t\t\t\tmany\t\t\n"
    )
    plan = bulk.plan_dsr(text, "u.tsv", usage_batch_lines=3)
    assert [len(tx.payload["lines"]) for tx in plan.txs] == [3, 1]
    assert all(tx.payload["total_usages"] == 100 for tx in plan.txs)
    kinds = [line["code_kind"] for tx in plan.txs for line in tx.payload["lines"]]
    assert kinds == ["isrc", "cid", "uci", "iswc"]
    assert plan.txs[0].origin == "u.tsv:2..4"
    reasons = {p.origin: p.reason for p in plan.problems}
    assert "neither an ISO" in reasons["u.tsv:6"]
    assert "no ISRC, CID, UCI or ISWC" in reasons["u.tsv:7"]
    assert "not an integer" in reasons["u.tsv:8"]


def test_jsonl_and_batches_never_mix_types():
    text = '{"type": "RetractLink", "payload": {"link_id": "x"}}\nnot json\n{"type": "Nope", "payload": {}}\n'  # noqa: E501
    plan = bulk.plan_jsonl(text, "t.jsonl")
    assert len(plan.txs) == 1 and len(plan.problems) == 2
    planned = [bulk.Planned(str(i), t, {}) for i, t in enumerate("AABBBA")]
    assert [[p.type for p in b] for b in bulk.batches(planned, max_txs=2)] == [
        ["A", "A"],
        ["B", "B"],
        ["B"],
        ["A"],
    ]


def test_the_sample_catalog_is_what_the_generator_writes(tmp_path):
    from kledger.cluster.sample.generate import generate

    generate(tmp_path)
    for path in sorted(tmp_path.iterdir()):
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), (
            f"{path.name} is stale: python -m kledger.cluster.sample.generate"
        )


def test_the_sample_catalog_loads_end_to_end():
    chain = Chain()
    summaries = load_sample(chain)
    for name, summary in summaries.items():
        if name == "usage-2026-01.tsv":
            last = len((SAMPLE / name).read_text().splitlines())  # the bad ISRC, on purpose
            assert [p.origin for p in summary.not_sent] == [f"{name}:{last}"]
        else:
            assert summary.not_sent == [], (name, summary.not_sent)
        assert summary.refused == [], (name, summary.refused[:3])
    assert summaries["komca-works.cwr"].accepted == 10 + 2 + 36 + 70
    progress = io.StringIO()
    plan = plan_file(SAMPLE / "usage-2026-01.tsv")
    again = bulk.submit_plan(
        plan,
        key("KMCA/client"),
        chain.genesis.chain_id,
        submitter(chain),
        first_nonce=9_000,
        progress=progress,
    )
    assert again.accepted == 0 and all(
        "ALREADY_EXISTS" in p.reason for p in again.refused
    )  # idempotent
    assert progress.getvalue().endswith(f"{len(plan.txs)}/{len(plan.txs)} txs\n")
    out = chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {
            "distribution_id": "KR-2026-01",
            "period": "2026-01",
            "territory": "KR",
            "currency": "KRW",
        },
    )
    queries = RegistryQueries(chain.view, chain.time_ms)
    record = queries.distribution("KR-2026-01", recompute=True)
    result = record["distribution"]["result"]
    assert out["pool_minor"] == result["pool_minor"]
    paid = sum(a for _, a in result["payouts"]) + sum(a for _, a in result["held"])
    assert paid + result["undistributed_minor"] == result["pool_minor"]
    assert result["held"], "the overclaim holds money"
    reasons = {r["reason"].split(" ")[0] for r in result["undistributed"]}
    assert {"unknown", "no", "work"} <= reasons
    assert record["recomputed"]["result_matches"]
    first = chain.view  # resolve a song from all four codes
    rec = RegistryQueries(first, chain.time_ms).resolve("isrc", "KRA402500001")
    codes = rec["codes"]
    for kind in ("iswc", "cid", "uci"):
        again_codes = RegistryQueries(first, chain.time_ms).resolve(kind, codes[kind][0])["codes"]
        assert again_codes == codes
    unmatched = queries.unmatched_usage("2026-01", "KR")["unmatched"]
    assert len(unmatched) == 12


def test_the_same_blocks_reach_the_same_root_under_different_hash_seeds():
    """Set and dict order never leak into state: two processes with different PYTHONHASHSEED
    load the sample and run a distribution; their state roots are equal."""
    import os
    import subprocess
    import sys

    script = (
        "from tests.test_import import load_sample\n"
        "from tests.test_registry import Chain\n"
        "chain = Chain()\n"
        "load_sample(chain)\n"
        "chain.ok('KOMCA/client', 'RunDistribution', {'distribution_id': 'D', 'period': '2026-01',"
        " 'territory': 'KR', 'currency': 'KRW'})\n"
        "print(chain.roots[-1].hex())\n"
    )
    root_dir = Path(__file__).resolve().parent.parent
    roots = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=root_dir,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        roots.add(done.stdout.strip())
    assert len(roots) == 1 and len(roots.pop()) == 64
