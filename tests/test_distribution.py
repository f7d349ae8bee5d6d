"""Distribution (docs/domain.md §5): the worked example to the won, payouts always sum to the
pool (property test), unmatched lines carry reasons, overclaimed money is held, AI-generated
works are not paid as authored, and any org re-running from state gets the same hashes."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from kledger.node.registry import distribution, usage
from kledger.node.registry.state import StateReader
from tests.test_registry import CID, ISRC, ISWC, Chain, catalog, human, link, party, report  # noqa: F401

RUN = {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"}


def _line(line_id: str, usages: int, code_kind: str = "isrc", code: str = ISRC):
    return {"line_id": line_id, "code_kind": code_kind, "code": code, "usages": usages}


def _run(chain: Chain, **extra):
    out = chain.ok("KOMCA/client", "RunDistribution", {**RUN, **extra})
    record = StateReader(chain.view).get(
        b"s/distribution/" + out.get("distribution_id", "D1").encode()
    )
    return record


def test_worked_example_of_domain_section_5():
    chain = Chain()
    catalog(chain)
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 12_340)]))
    record = _run(chain)
    result = record["result"]
    assert result["pool_minor"] == 80_210
    assert dict(result["payouts"]) == {
        "label-a": 41_678,
        "label-b": 17_862,
        "composer": 3_239,
        "lyricist": 3_239,
        "publisher": 6_479,
        "singer-1": 3_085,
        "singer-2": 3_085,
        "guitarist": 1_543,
    }
    assert result["undistributed_minor"] == 0 and result["held"] == []
    # statements per party and period
    statement = StateReader(chain.view).get(b"s/statement/publisher/2026-01")
    assert statement == [
        {"distribution_id": "D1", "territory": "KR", "currency": "KRW", "amount_minor": 6_479}
    ]
    # re-running from the same state gives the same hashes
    tariff = usage.tariff_for(StateReader(chain.view), "2026-01-01")
    assert tariff is not None
    again, inputs_hash, result_hash = distribution.run(
        chain.view, "2026-01", "KR", "KRW", tariff=tariff, now_ms=record["timestamp_ms"]
    )
    assert again == result
    assert result_hash.hex() == record["result_hash"]
    assert inputs_hash.hex() == record["inputs_hash"]


def test_a_distribution_runs_once_per_scope_and_needs_usage():
    chain = Chain()
    catalog(chain)
    assert chain.refused("KOMCA/client", "RunDistribution", RUN).status == "FAILED_PRECONDITION"
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 10)]))
    _run(chain)
    again = chain.refused("KOMCA/client", "RunDistribution", {**RUN, "distribution_id": "D2"})
    assert again.status == "ALREADY_EXISTS"
    assert chain.refused("KEPA/client", "RunDistribution", RUN).status == "PERMISSION_DENIED"


def test_unmatched_lines_are_undistributed_with_reasons():
    chain = Chain()
    catalog(chain)
    lines = [
        _line("L1", 500_000),
        _line("L2", 250_000, "isrc", "KRZ991500001"),  # unknown recording
        _line("L3", 125_000, "cid", "Aunlinked0001"),  # CID without a confirmed link
        _line("L4", 125_000, "cid", CID),  # confirmed CID link -> matched
    ]
    chain.ok("KMCA/client", "ReportUsage", report(lines))
    result = _run(chain)["result"]
    reasons = {(r["line_id"], r["reason"]) for r in result["undistributed"]}
    assert ("L2", "unknown ISRC KRZ991500001") in reasons
    assert ("L3", "no confirmed link from CID Aunlinked0001 to an ISRC") in reasons
    assert not any(r["line_id"] in ("L1", "L4") for r in result["undistributed"])
    assert result["matched_lines"] == 2 and result["lines"] == 4
    paid = sum(a for _, a in result["payouts"])
    assert paid + result["undistributed_minor"] == result["pool_minor"] == 6_500_000
    assert result["undistributed_minor"] == 6_500_000 * 3 // 8


def test_overclaimed_money_is_held_until_the_dispute_resolves():
    chain = Chain()
    catalog(chain)
    chain.ok("KOSCAP/client", "RegisterParty", party("co-writer", "KOSCAP"))
    out = chain.ok(
        "KOSCAP/client",
        "SetShares",
        {
            "subject": {"kind": "work", "id": "W1"},
            "right": "PR",
            "shares": [
                {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 2500},
                {"party_id": "co-writer", "kind": "writer", "role": "A", "ownership": 3000},
                {"party_id": "publisher", "kind": "publisher", "role": "E", "ownership": 4500},
            ],
        },
    )
    assert out["overclaim"] is True
    dispute_id = out["dispute_id"]
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 12_340)]))
    result = _run(chain)["result"]
    payouts = dict(result["payouts"])
    # the composer's 25 % is claimed identically by both: paid; the rest (75 % of 12,957) held
    assert payouts["composer"] == 3_239
    assert "lyricist" not in payouts and "co-writer" not in payouts
    held = dict(result["held"])
    assert held[dispute_id] == 9_718  # 12,957 * 0.75 = 9,717.75 -> largest remainder
    assert sum(payouts.values()) + held[dispute_id] == result["pool_minor"] == 80_210
    # both claimants resolve: reject the later claim; the next period pays KOMCA's split again
    assert (
        chain.refused(
            "RIAK/client", "ResolveDispute", {"dispute_id": dispute_id, "outcome": "reject"}
        ).status
        == "PERMISSION_DENIED"
    )
    first = chain.ok(
        "KOMCA/client", "ResolveDispute", {"dispute_id": dispute_id, "outcome": "reject"}
    )
    assert first["status"] == "open"
    second = chain.ok(
        "KOSCAP/client", "ResolveDispute", {"dispute_id": dispute_id, "outcome": "reject"}
    )
    assert second["status"] == "resolved"
    chain.ok(
        "KMCA/client",
        "ReportUsage",
        report([_line("L1", 12_340)], report_id="R2", period="2026-02"),
    )
    result = _run(chain, distribution_id="D2", period="2026-02")["result"]
    assert dict(result["payouts"])["lyricist"] == 3_239 and result["held"] == []


def test_overclaim_expires_and_the_first_registration_stands():
    chain = Chain()
    catalog(chain)
    chain.ok("KOSCAP/client", "RegisterParty", party("co-writer", "KOSCAP"))
    shares = [
        {"party_id": "co-writer", "kind": "writer", "role": "CA", "ownership": 10_000},
    ]
    out = chain.ok(
        "KOSCAP/client",
        "SetShares",
        {"subject": {"kind": "work", "id": "W1"}, "right": "PR", "shares": shares},
    )
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 12_340)]))
    chain.block(advance_ms=121 * 86_400_000)  # past the 60 + 60 day deadline
    result = _run(chain)["result"]
    assert dict(result["payouts"])["publisher"] == 6_479 and result["held"] == []
    late = chain.refused(
        "KOMCA/client", "ResolveDispute", {"dispute_id": out["dispute_id"], "outcome": "uphold"}
    )
    assert "expired" in late.message


def test_ai_generated_work_is_registered_but_not_paid_as_authored():
    chain = Chain()
    catalog(chain)
    chain.ok(
        "KOMCA/client",
        "RegisterWork",
        {
            "work_id": "W-AI",
            "titles": ["Synthetic Dawn"],
            "provenance": {
                "creation_type": "ai_generated",
                "components": {"composition": {"ai_used": True, "tool": "SongGen 3"}},
            },
        },
    )
    chain.ok(
        "RIAK/client",
        "RegisterRecording",
        {
            "isrc": "KRA342600001",
            "title": "Synthetic Dawn",
            "producers": ["label-a"],
            "works": ["W-AI"],
        },
    )
    chain.ok("KOMCA/client", "LinkIdentifiers", link("work", "W-AI", "isrc", "KRA342600001"))
    refused = chain.refused(
        "KOMCA/client",
        "SetShares",
        {
            "subject": {"kind": "work", "id": "W-AI"},
            "right": "PR",
            "shares": [
                {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 10_000}
            ],
        },
    )
    assert refused.status == "FAILED_PRECONDITION" and "ai_generated" in refused.message
    chain.ok(
        "RIAK/client",
        "SetShares",
        {
            "subject": {"kind": "recording", "id": "KRA342600001"},
            "right": "NR_PRODUCER",
            "shares": [{"party_id": "label-a", "share": 10_000}],
        },
    )
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 1_000, "isrc", "KRA342600001")]))
    result = _run(chain)["result"]
    assert any(
        "ai_generated" in r["reason"] and r["pool"] == "authors" for r in result["undistributed"]
    )
    assert dict(result["payouts"]) == {"label-a": 4_825}


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text("abcdefgh", min_size=1, max_size=3),
        st.fractions(min_value=0, max_value=10**9),
        min_size=1,
        max_size=30,
    )
)
def test_apportion_always_sums_to_the_floor_of_the_pool(amounts):
    paid = distribution.apportion(amounts)
    total = sum(amounts.values(), Fraction(0))
    assert sum(paid.values()) == total.numerator // total.denominator
    for who, amount in amounts.items():
        assert amount - 1 < paid[who] <= amount + 1


@settings(max_examples=15, deadline=None)
@given(
    producer_shares=st.lists(st.integers(1, 5_000), min_size=1, max_size=5),
    usages=st.lists(st.integers(1, 50_000), min_size=1, max_size=6),
    revenue=st.integers(0, 10**10),
)
def test_payouts_sum_to_the_pool_for_random_shares_and_usage(producer_shares, usages, revenue):
    chain = Chain()
    catalog(chain)
    parties = [f"p{i}" for i in range(len(producer_shares))]
    chain.block(*[("RIAK/client", "RegisterParty", party(p, "RIAK")) for p in parties])
    total = sum(producer_shares)
    shares = [
        {"party_id": p, "share": s * 10_000 // total}
        for p, s in zip(parties, producer_shares)  # noqa: B905
    ]
    shares[0]["share"] += 10_000 - sum(s["share"] for s in shares)
    chain.ok(
        "RIAK/client",
        "SetShares",
        {"subject": {"kind": "recording", "id": ISRC}, "right": "NR_PRODUCER", "shares": shares},
    )
    lines = [_line(f"L{i}", u) for i, u in enumerate(usages)]
    lines.append(_line("LX", 7, "iswc", ISWC))  # a work-only line: authors pool paid, others not
    chain.ok(
        "KMCA/client",
        "ReportUsage",
        report(lines, net_revenue_minor=revenue, total_usages=sum(usages) + 7 + 3),
    )
    result = _run(chain)["result"]
    exact = Fraction(revenue * (sum(usages) + 7), sum(usages) + 10) * 6500 / 10_000
    pool = exact.numerator // exact.denominator
    paid = sum(a for _, a in result["payouts"]) + sum(a for _, a in result["held"])
    assert paid + result["undistributed_minor"] == result["pool_minor"] == pool


def test_an_open_authorship_dispute_holds_the_authors_pool_of_the_work():
    chain = Chain()
    catalog(chain)
    body = {
        "dispute_id": "AUTH-1",
        "kind": "authorship",
        "subject": {"kind": "work", "id": "W1"},
        "reason": "co-writer omitted",
        "evidence": ["ab" * 32],
    }
    assert chain.refused("KEPA/client", "FileDispute", body).status == "PERMISSION_DENIED"
    chain.ok("KOSCAP/client", "RegisterParty", party("ghost-writer", "KOSCAP"))
    assert chain.refused("KOSCAP/client", "FileDispute", body).status == "PERMISSION_DENIED"
    chain.ok("KOMCA/client", "FileDispute", body)
    assert chain.refused("KOMCA/client", "FileDispute", body).status == "ALREADY_EXISTS"
    chain.ok("KMCA/client", "ReportUsage", report([_line("L1", 12_340)]))
    result = _run(chain)["result"]
    assert dict(result["held"]) == {"AUTH-1": 12_957}
    assert (
        "composer" not in dict(result["payouts"]) and dict(result["payouts"])["label-a"] == 41_678
    )


def test_a_distribution_over_the_line_limit_is_refused_not_a_bug(monkeypatch):
    """Enough usage lines in one scope is a rule any tx can reach: a RESOURCE_EXHAUSTED receipt
    naming the limit, identical on every node, never an assertion (an INTERNAL receipt)."""
    monkeypatch.setattr(distribution, "MAX_DISTRIBUTION_LINES", 2)
    chain = Chain()
    catalog(chain)
    chain.ok("KMCA/client", "ReportUsage", report([_line(f"L{i}", 10) for i in range(3)]))
    refused = chain.refused("KOMCA/client", "RunDistribution", RUN)
    assert refused.status == "RESOURCE_EXHAUSTED"
    assert "MAX_DISTRIBUTION_LINES=2" in refused.message
