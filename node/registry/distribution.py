"""Distribution (docs/domain.md §5): deterministic, exact, re-computable by every org.

    1. match each usage line to a recording and its works through confirmed links; a line (or a
       pool of it) that cannot be matched is undistributed, with a reason;
    2. line revenue = report net revenue * line usages / report total usages (exact fractions);
    3. tariff pools: each pool takes basis points of the line revenue (the rest is retained);
    4. each pool is split by the ShareSet in effect on the usage date (first day of the period)
       and territory; a recording embodying several works splits the authors' pool equally;
       money on an open overclaim or authorship dispute is held under the dispute id;
    5. all amounts stay exact (fractions.Fraction of integers, never float) until the end; then
       every recipient's total is floored to minor units and the leftover units go one each to
       the largest remainders, ties to the lower recipient id. The payouts, holds and the
       undistributed amount sum exactly to the pool, floor(sum of payable amounts).

Every state value read is recorded; `inputs_hash` is SHA-256 over those (key, value) pairs and
`result_hash` over the canonical result, so any org re-running from the same state gets the same
hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from kledger.node.chain import canonical
from kledger.node.errors import Refused, Status
from kledger.node.registry import links, shares, state
from kledger.node.registry.state import StateReader
from kledger.node.storage.keyspace import ReadView

UNDISTRIBUTED = "undistributed"
MAX_DISTRIBUTION_LINES = 50_000
MAX_REASONS = 2_000


class RecordingReader(StateReader):
    """A StateReader that remembers every raw value it read (the run's inputs)."""

    def __init__(self, view: ReadView) -> None:
        super().__init__(view)
        self.read: dict[bytes, bytes | None] = {}

    def get_raw(self, key: bytes) -> bytes | None:
        # Every read (decoded by `get` or raw) is an input of the run.
        raw = self.view.get(key)
        self.read[key] = raw
        return raw

    def iterate(self, prefix: bytes) -> Iterator[tuple[bytes, Any]]:
        for key, raw in self.view.iterate(prefix):
            self.read[key] = raw
            yield key, canonical.decode_stored(raw)

    def inputs_hash(self) -> bytes:
        pairs = [[key, self.read[key]] for key in sorted(self.read)]
        return hashlib.sha256(
            b"kledger/distribution-inputs/v1\x00" + canonical.encode(pairs)
        ).digest()


def apportion(amounts: dict[str, Fraction]) -> dict[str, int]:
    """Floor each amount; hand the leftover units (floor of the total minus the floors) one each
    to the largest remainders, ties to the lower id. The result sums to floor(total)."""
    total = sum(amounts.values(), Fraction(0))
    target = total.numerator // total.denominator
    floors = {who: amount.numerator // amount.denominator for who, amount in amounts.items()}
    leftover = target - sum(floors.values())
    assert 0 <= leftover <= len(amounts)
    by_remainder = sorted(amounts, key=lambda who: (-(amounts[who] - floors[who]), who))
    for who in by_remainder[:leftover]:
        floors[who] += 1
    assert sum(floors.values()) == target
    return floors


def _match(
    reader: StateReader, line: dict[str, Any], now_ms: int
) -> tuple[str | None, list[str], str]:
    """(recording ISRC or None, work ids, reason when nothing matched), trying the line's codes
    in order (its own code first): the first that matches decides."""
    reasons = []
    for kind, code in [(line["code_kind"], line["code"])] + [
        (c["kind"], c["value"]) for c in line.get("codes", ())
    ]:
        isrc, works, reason = _match_code(reader, kind, code, now_ms)
        if not reason:
            return isrc, works, ""
        reasons.append(reason)
    return None, [], "; ".join(reasons)


def _match_code(
    reader: StateReader, kind: str, code: str, now_ms: int
) -> tuple[str | None, list[str], str]:
    if kind == "proprietary":
        return None, [], f"proprietary id {code} names nothing registered"
    if kind == "iswc":
        target = reader.get(state.code_key("iswc", code))
        if target is None:
            return None, [], f"unknown ISWC {code}"
        return None, [target["id"]], ""
    if kind == "isrc":
        isrc = code if reader.has(state.recording_key(code)) else None
        if isrc is None:
            return None, [], f"unknown ISRC {code}"
    else:
        peers = links.confirmed_peers(reader, kind, code, "isrc", now_ms)
        if not peers:
            return None, [], f"no confirmed link from {kind.upper()} {code} to an ISRC"
        isrc = peers[0]
    return isrc, links.confirmed_peers(reader, "isrc", isrc, "work", now_ms), ""


def compute(
    reader: StateReader,
    period: str,
    territory: str,
    currency: str,
    *,
    tariff: dict[str, Any],
    now_ms: int,
) -> dict[str, Any]:
    usage_date = f"{period}-01"
    amounts: dict[str, Fraction] = {}
    reasons: list[dict[str, str]] = []
    reports: dict[str, Any] = {}
    line_count = 0
    matched = 0

    def credit(who: str, amount: Fraction) -> None:
        amounts[who] = amounts.get(who, Fraction(0)) + amount

    def undistributed(line: dict[str, Any], pool: str, amount: Fraction, reason: str) -> None:
        credit(UNDISTRIBUTED, amount)
        if len(reasons) < MAX_REASONS:
            reasons.append(
                {
                    "report_id": line["report_id"],
                    "line_id": line["line_id"],
                    "pool": pool,
                    "reason": reason,
                }
            )

    def split(line: dict[str, Any], pool: str, pool_amount: Fraction, split_: shares.Split) -> None:
        for who, weight in split_.weights:
            amount = pool_amount * weight / split_.denominator
            if who == shares.UNKNOWN_RECIPIENT:
                undistributed(line, pool, amount, "share of a party the registration does not name")
            else:
                credit(who, amount)
        rest = split_.denominator - sum(w for _, w in split_.weights)
        assert rest == 0

    def pay(
        line: dict[str, Any],
        pool: dict[str, Any],
        subject: tuple[str, str],
        amount: Fraction,
        missing: str,
    ) -> None:
        """Split `amount` by the subject's (kind, id) shares in effect, or keep it
        undistributed."""
        kind, subject_id = subject
        found = shares.effective_split(
            reader, kind, subject_id, pool["right"], territory=territory, date=usage_date,
            now_ms=now_ms,
        )  # fmt: skip
        if found is None:
            undistributed(line, pool["pool"], amount, missing)
        else:
            split(line, pool["pool"], amount, found)

    for _, line in reader.iterate(state.usage_prefix(period, territory)):
        report = reports.get(line["report_id"])
        if report is None:
            report = reports[line["report_id"]] = reader.get(state.report_key(line["report_id"]))
        if report["currency"] != currency:
            continue
        line_count += 1
        if line_count > MAX_DISTRIBUTION_LINES:
            # A rule any tx can reach (enough usage lines in one scope), so a refusal, never an
            # assertion: it must fail identically on every node as a receipt.
            raise Refused(
                Status.RESOURCE_EXHAUSTED,
                f"more than MAX_DISTRIBUTION_LINES={MAX_DISTRIBUTION_LINES} usage lines in "
                f"{period} {territory}",
                "payload.period",
            )
        if "revenue_minor" in line:  # the report gives the line's own revenue (DSR SU03)
            revenue = Fraction(line["revenue_minor"])
        else:
            revenue = Fraction(report["net_revenue_minor"] * line["usages"], report["total_usages"])
        isrc, works, reason = _match(reader, line, now_ms)
        if reason:
            for pool in tariff["pools"]:
                undistributed(
                    line, pool["pool"], revenue * pool["basis_points"] / shares.FULL, reason
                )
            continue
        matched += 1
        for pool in tariff["pools"]:
            pool_amount = revenue * pool["basis_points"] / shares.FULL
            if pool["subject"] == "recording":
                if isrc is None:
                    undistributed(
                        line, pool["pool"], pool_amount, "usage names a work, not a recording"
                    )
                    continue
                pay(
                    line,
                    pool,
                    ("recording", isrc),
                    pool_amount,
                    f"no {pool['right']} shares for {isrc}",
                )
                continue
            if not works:
                undistributed(line, pool["pool"], pool_amount, f"no confirmed work link for {isrc}")
                continue
            per_work = pool_amount / len(works)
            for work_id in works:
                work = reader.get(state.work_key(work_id))
                held = _authorship_dispute(reader, work_id, now_ms)
                if work["provenance"]["creation_type"] == "ai_generated":
                    undistributed(
                        line,
                        pool["pool"],
                        per_work,
                        f"work {work_id} is ai_generated: no authorship",
                    )
                elif held:
                    credit(f"held:{held}", per_work)
                else:
                    pay(
                        line,
                        pool,
                        ("work", work_id),
                        per_work,
                        f"no {pool['right']} shares for work {work_id}",
                    )
    paid = apportion(amounts) if amounts else {}
    payouts = sorted(
        [who.removeprefix("party:"), amount]
        for who, amount in paid.items()
        if who.startswith("party:")
    )
    held_out = sorted(
        [who.removeprefix("held:"), amount]
        for who, amount in paid.items()
        if who.startswith("held:")
    )
    return {
        "period": period,
        "territory": territory,
        "currency": currency,
        "tariff_version": tariff["version"],
        "usage_date": usage_date,
        "lines": line_count,
        "matched_lines": matched,
        "pool_minor": sum(paid.values()),
        "payouts": payouts,
        "held": held_out,
        "undistributed_minor": paid.get(UNDISTRIBUTED, 0),
        "undistributed": reasons,
    }


def _authorship_dispute(reader: StateReader, work_id: str, now_ms: int) -> str:
    for dispute_id in reader.get(state.disputes_of_key("work", work_id)) or []:
        dispute = reader.get(state.dispute_key(dispute_id))
        if dispute["kind"] == "authorship" and shares.dispute_open(dispute, now_ms):
            return str(dispute_id)
    return ""


def result_hash(result: dict[str, Any]) -> bytes:
    return hashlib.sha256(b"kledger/distribution-result/v1\x00" + canonical.encode(result)).digest()


def run(
    view: ReadView,
    period: str,
    territory: str,
    currency: str,
    *,
    tariff: dict[str, Any],
    now_ms: int,
) -> tuple[dict[str, Any], bytes, bytes]:
    """(result, inputs hash, result hash) of a distribution over `view`."""
    reader = RecordingReader(view)
    result = compute(reader, period, territory, currency, tariff=tariff, now_ms=now_ms)
    return result, reader.inputs_hash(), result_hash(result)
