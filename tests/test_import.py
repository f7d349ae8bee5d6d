"""Bulk import: CWR 2.2 works, DDEX DSR usage and JSON-lines files become valid transaction
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
WORKS_FILE = "CW260001301_118.V22"
USAGE_FILE = "DSR_KMCA_MELON_Subscription_2026-01_KR_1of1_20260205T090000.tsv"
LOAD_ORDER = [
    ("KOMCA", "works", WORKS_FILE),
    ("KOSCAP", "works", "CW260001WR0_000.V22"),
    ("KOMCA", "txs", "komca-ai.jsonl"),
    ("FKMP", "txs", "fkmp-parties.jsonl"),
    ("RIAK", "txs", "riak-recordings.jsonl"),
    ("KOMCA", "txs", "komca-links.jsonl"),
    ("KMCA", "txs", "kmca-links.jsonl"),
    ("FKMP", "txs", "fkmp-rights.jsonl"),
    ("KOSCAP", "txs", "koscap-overclaim.jsonl"),
    ("KMCA", "usage", USAGE_FILE),
]


def lines_of(path: Path):
    return lambda: path.read_bytes().splitlines(keepends=True)


def plan_file(path: Path, kind: str, org: str = "KOMCA") -> bulk.FilePlan:
    return bulk.plan_file(lines_of(path), kind, org, path.name)


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
    for org, kind, name in LOAD_ORDER:
        plan = plan_file(SAMPLE / name, kind, org)
        summary = bulk.submit_file(
            plan, key(f"{org}/client"), chain.genesis.chain_id, submitter(chain),
            first_nonce=nonce, progress=None,
        )  # fmt: skip
        nonce += 100_000
        summaries[name] = summary
    return summaries


def test_a_file_of_another_format_is_refused_naming_what_it_is():
    plan = plan_file(SAMPLE / USAGE_FILE, "works")
    assert plan.rejected and "DDEX DSR" in plan.problems[0].reason
    plan = plan_file(SAMPLE / WORKS_FILE, "usage")
    assert plan.rejected and "a CWR file" in plan.problems[0].reason
    text = b"HDR\tKOMCA\tF1\nNWR\tWK1\tSpring\n"  # the old tab-separated "CWR-style" file
    plan = bulk.plan_file(lambda: text.splitlines(keepends=True), "works", "KOMCA", "old.cwr")
    assert plan.rejected and "no format this command reads" in plan.problems[0].reason


def test_jsonl_and_batches_never_mix_types():
    text = b'{"type": "RetractLink", "payload": {"link_id": "x"}}\nnot json\n{"type": "Nope", "payload": {}}\n'  # noqa: E501
    plan = bulk.plan_file(lambda: text.splitlines(keepends=True), "txs", "KOMCA", "t.jsonl")
    report = bulk.dry_run(plan)
    assert report["planned"] == 1 and len(report["refused"]) == 2
    assert {r["line"] for r in report["refused"]} == {2, 3}
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
        if name == USAGE_FILE:  # the bad ISRC, on purpose: blanked, the line still reported
            assert [(p.record, p.field, p.level) for p in summary.not_sent] == [
                ("AS01.01", "ISRC", "F")
            ]
        else:
            assert summary.not_sent == [], (name, summary.not_sent)
        assert summary.refused == [], (name, summary.refused[:3])
    works = summaries[WORKS_FILE]
    assert works.works == 35 and works.statuses == {"AS": 35}
    usage = summaries[USAGE_FILE]
    assert usage.usage_lines == 276 and usage.matched_lines == 263  # 13 unmatched on purpose
    assert all(
        "not registered" in u["reason"] or "proprietary" in u["reason"] for u in usage.unmatched
    )
    progress = io.StringIO()
    plan = plan_file(SAMPLE / USAGE_FILE, "usage", "KMCA")
    again = bulk.submit_file(
        plan,
        key("KMCA/client"),
        chain.genesis.chain_id,
        submitter(chain),
        first_nonce=9_000_000,
        progress=progress,
    )
    assert again.accepted == 0 and all(
        "ALREADY_EXISTS" in p["status"] for p in again.refused
    )  # idempotent
    assert progress.getvalue().strip().split()[1] == "276/276"
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
    assert {"unknown", "work", "proprietary"} <= reasons
    assert record["recomputed"]["result_matches"]
    first = chain.view  # resolve a song from all four codes
    rec = RegistryQueries(first, chain.time_ms).resolve("isrc", "KRA402500001")
    codes = rec["codes"]
    for kind in ("iswc", "cid", "uci"):
        again_codes = RegistryQueries(first, chain.time_ms).resolve(kind, codes[kind][0])["codes"]
        assert again_codes == codes
    assert [link["status"] for link in rec["links"] if link["relation"] == "embodies"] == [
        "confirmed"
    ], "the CWR REC asserted the link, the recording's registration confirmed it"
    unmatched = queries.unmatched_usage("2026-01", "KR")["unmatched"]
    assert len(unmatched) == 13


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
