"""Usage reports, tariffs and distribution runs.

Rules kept here: a usage line is unique by (report id, line id), a repeat is refused
(ALREADY_EXISTS), so re-sending a batch never double-counts; a report may arrive in several
batches, all with the same header, and its lines never add up to more usages than the report's
total; a distribution runs once per (period, territory, currency) under the tariff in effect on
the period's first day (or a named version), records its result, inputs hash and result hash, and
the payouts per party and period (the statements).
"""

from __future__ import annotations

from typing import Any

from kledger.node.errors import Refused, Status, invalid
from kledger.node.registry import distribution, fields, state
from kledger.node.registry.env import Env, exists, precondition
from kledger.node.registry.shares import FULL, RIGHTS
from kledger.node.registry.state import StateReader, TxState

CODE_KINDS = frozenset({"isrc", "iswc", "cid", "uci"})
# A DSR line may carry only the DSP's or a rights holder's own ids ("ns::value"): kept, never
# matched to a registered work or recording.
PROPRIETARY = "proprietary"
LINE_CODE_KINDS = CODE_KINDS | {PROPRIETARY}
MAX_LINE_CODES = 32
MAX_PROPRIETARY_CHARS = 128
MAX_UNMATCHED_REASONS = 200
MAX_REVENUE_MINOR = 10**15
MAX_USAGES = 10**12
REPORT_HEADER = (
    "period",
    "territory",
    "service",
    "commercial_model",
    "use_type",
    "currency",
    "net_revenue_minor",
    "total_usages",
)
MAX_STATEMENT_ENTRIES = 1_000
CURRENCY = frozenset({"KRW", "USD", "EUR", "JPY", "CNY", "GBP"})


def check_report_usage(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(p, "payload", frozenset({"report_id", "lines", *REPORT_HEADER}))
    lines = []
    seen: set[str] = set()
    for i, raw in enumerate(fields.items(p, "lines", "")):
        path = f"lines[{i}]."
        entry = fields.obj(
            raw,
            f"lines[{i}]",
            frozenset(
                {"line_id", "code_kind", "code", "usages", "codes", "revenue_minor", "title"}
            ),
        )
        kind = fields.choice(entry, "code_kind", path, LINE_CODE_KINDS)
        line_id = fields.token(entry, "line_id", path)
        if line_id in seen:
            raise invalid(f"line {line_id} appears twice in this batch", f"payload.{path}line_id")
        seen.add(line_id)
        line: dict[str, Any] = {
            "line_id": line_id,
            "code_kind": kind,
            "code": _line_code(entry, "code", kind, path),
            "usages": fields.integer(entry, "usages", path, 1, MAX_USAGES),
        }
        if "codes" in entry:  # every other identifier the report gives (kept only when given)
            codes = []
            for j, item in enumerate(fields.items(entry, "codes", path)):
                if j >= MAX_LINE_CODES:
                    raise invalid(f"at most {MAX_LINE_CODES} codes", f"payload.{path}codes")
                code = fields.obj(item, f"{path}codes[{j}]", frozenset({"kind", "value"}))
                code_kind = fields.choice(code, "kind", f"{path}codes[{j}].", LINE_CODE_KINDS)
                codes.append(
                    {
                        "kind": code_kind,
                        "value": _line_code(code, "value", code_kind, f"{path}codes[{j}]."),
                    }
                )
            line["codes"] = codes
        if "revenue_minor" in entry:
            line["revenue_minor"] = fields.integer(
                entry, "revenue_minor", path, 0, MAX_REVENUE_MINOR
            )
        if "title" in entry:
            line["title"] = fields.text(entry, "title", path, max_chars=256)
        lines.append(line)
    territory = fields.code(p, "territory", "territory")
    if territory == "Worldwide":
        raise invalid("usage happens in one country: an ISO 3166-1 code", "payload.territory")
    return {
        "report_id": fields.token(p, "report_id"),
        "period": fields.period(p, "period"),
        "territory": territory,
        "service": fields.text(p, "service", "", max_chars=128),
        "commercial_model": fields.choice(
            p,
            "commercial_model",
            "",
            frozenset({"subscription", "ad_supported", "purchase", "broadcast", "other"}),
        ),
        "use_type": fields.choice(
            p, "use_type", "", frozenset({"stream", "download", "broadcast", "ugc", "other"})
        ),
        "currency": fields.choice(p, "currency", "", CURRENCY),
        "net_revenue_minor": fields.integer(p, "net_revenue_minor", "", 0, MAX_REVENUE_MINOR),
        "total_usages": fields.integer(p, "total_usages", "", 1, MAX_USAGES),
        "lines": lines,
    }


def _line_code(entry: dict[str, Any], name: str, kind: str, path: str) -> str:
    if kind != PROPRIETARY:
        return fields.code(entry, name, kind, path)
    return fields.text(entry, name, path, max_chars=MAX_PROPRIETARY_CHARS)


def line_codes(line: dict[str, Any]) -> list[tuple[str, str]]:
    """A line's identifiers, its own code first."""
    return [(line["code_kind"], line["code"])] + [
        (c["kind"], c["value"]) for c in line.get("codes", ())
    ]


def registered_match(reader: StateReader, line: dict[str, Any]) -> str:
    """'' when one of the line's codes names a registered recording or work (an ISRC, an ISWC,
    a CID or UCI linked to an ISRC), else why not."""
    reasons = []
    for kind, code in line_codes(line):
        if kind in ("isrc", "iswc"):
            if reader.has(state.code_key(kind, code)):
                return ""
            reasons.append(f"{kind.upper()} {code} is not registered")
        elif kind in ("cid", "uci"):
            if reader.get(state.links_of_key(kind, code)):
                return ""
            reasons.append(f"{kind.upper()} {code} is linked to no recording")
    return "; ".join(reasons) or "no ISRC, ISWC, CID or UCI (proprietary ids only)"


def apply_report_usage(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    key = state.report_key(p["report_id"])
    report = st.get(key)
    header = {name: p[name] for name in REPORT_HEADER}
    if report is None:
        report = {
            "report_id": p["report_id"],
            **header,
            "reporter": env.signer.org,
            "lines": 0,
            "usages_reported": 0,
        }
    else:
        if report["reporter"] != env.signer.org:
            raise precondition(
                f"report {p['report_id']} belongs to {report['reporter']}", "payload.report_id"
            )
        for name in REPORT_HEADER:
            if report[name] != p[name]:
                raise precondition(
                    f"differs from the report's earlier batches ({report[name]!r})",
                    f"payload.{name}",
                )
    for i, line in enumerate(p["lines"]):
        line_key = state.usage_key(p["period"], p["territory"], p["report_id"], line["line_id"])
        if st.has(line_key):
            raise exists(
                f"line ({p['report_id']}, {line['line_id']}) was already reported",
                f"payload.lines[{i}].line_id",
            )
        st.put(line_key, {"report_id": p["report_id"], **line})
    report["lines"] += len(p["lines"])
    report["usages_reported"] += sum(line["usages"] for line in p["lines"])
    if report["usages_reported"] > report["total_usages"]:
        raise precondition(
            f"lines add up to {report['usages_reported']} usages, more than total_usages",
            "payload.lines",
        )
    st.put(key, report)
    unmatched = []
    for line in p["lines"]:
        reason = registered_match(st, line)
        if reason:
            unmatched.append({"line_id": line["line_id"], "reason": reason})
    return {
        "report_id": p["report_id"],
        "lines": len(p["lines"]),
        "matched": len(p["lines"]) - len(unmatched),
        "unmatched": unmatched[:MAX_UNMATCHED_REASONS],
    }


# -- tariffs ---------------------------------------------------------------------------------


def check_tariff(raw: Any, path: str = "tariff") -> dict[str, Any]:
    t = fields.obj(raw, path, frozenset({"version", "name", "valid_from", "pools", "retained"}))
    pools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, item in enumerate(fields.items(t, "pools", f"{path}.")):
        where = f"{path}.pools[{i}]."
        pool = fields.obj(
            item, f"{path}.pools[{i}]", frozenset({"pool", "basis_points", "subject", "right"})
        )
        name = fields.token(pool, "pool", where)
        if name in names:
            raise invalid(f"pool {name} appears twice", f"payload.{where}pool")
        names.add(name)
        pools.append(
            {
                "pool": name,
                "basis_points": fields.integer(pool, "basis_points", where, 0, FULL),
                "subject": fields.choice(pool, "subject", where, frozenset({"work", "recording"})),
                "right": fields.choice(pool, "right", where, RIGHTS),
            }
        )
    retained = fields.obj(t.get("retained", {}), f"{path}.retained")
    kept: dict[str, int] = {}
    for name in sorted(retained):
        kept[fields.token({"n": name}, "n", f"{path}.retained")] = fields.integer(
            retained, name, f"{path}.retained.", 0, FULL
        )
    total = sum(p["basis_points"] for p in pools) + sum(kept.values())
    if total != FULL:
        raise invalid(
            f"pools + retained are {total} basis points, must be {FULL}", f"payload.{path}.pools"
        )
    return {
        "version": fields.integer(t, "version", f"{path}.", 1, 10**6),
        "name": fields.text(t, "name", f"{path}.", max_chars=128),
        "valid_from": fields.date(t, "valid_from", f"{path}."),
        "pools": pools,
        "retained": kept,
    }


DEFAULT_TARIFF = {
    "version": 1,
    "name": "Korean music streaming tariff (since 2019)",
    "valid_from": "2019-01-01",
    "pools": [
        {"pool": "producers", "basis_points": 4825, "subject": "recording", "right": "NR_PRODUCER"},
        {"pool": "authors", "basis_points": 1050, "subject": "work", "right": "PR"},
        {
            "pool": "performers",
            "basis_points": 625,
            "subject": "recording",
            "right": "NR_PERFORMER",
        },
    ],
    "retained": {"service": 3500},
}


def tariff_for(reader: StateReader, date: str, version: int = 0) -> dict[str, Any] | None:
    if version:
        found: dict[str, Any] | None = reader.get(state.tariff_key(version))
        return found
    best = None
    for _, tariff in reader.iterate(state.TARIFF_PREFIX):
        if tariff["valid_from"] <= date and (best is None or tariff["version"] > best["version"]):
            best = tariff
    return best


# -- RunDistribution -------------------------------------------------------------------------


def check_run_distribution(p: dict[str, Any]) -> dict[str, Any]:
    fields.obj(
        p,
        "payload",
        frozenset({"distribution_id", "period", "territory", "currency", "tariff_version"}),
    )
    return {
        "distribution_id": fields.token(p, "distribution_id"),
        "period": fields.period(p, "period"),
        "territory": fields.code(p, "territory", "territory"),
        "currency": fields.choice(p, "currency", "", CURRENCY),
        "tariff_version": fields.integer(p, "tariff_version", "", 0, 10**6, default=0),
    }


def apply_run_distribution(st: TxState, env: Env, p: dict[str, Any]) -> dict[str, Any]:
    if st.has(state.distribution_key(p["distribution_id"])):
        raise exists(f"distribution {p['distribution_id']} exists", "payload.distribution_id")
    scope_key = state.distribution_scope_key(p["period"], p["territory"], p["currency"])
    earlier = st.get(scope_key)
    if earlier is not None:
        raise exists(
            f"{p['period']} {p['territory']} {p['currency']} was distributed by {earlier}",
            "payload.period",
        )
    tariff = tariff_for(st, f"{p['period']}-01", p["tariff_version"])
    if tariff is None:
        raise Refused(
            Status.NOT_FOUND, "no tariff in effect for this period", "payload.tariff_version"
        )
    result, inputs_hash, result_hash = distribution.run(
        st.view,
        p["period"],
        p["territory"],
        p["currency"],
        tariff=tariff,
        now_ms=env.ctx.timestamp_ms,
    )
    if result["lines"] == 0:
        raise precondition(
            "no usage lines for this period, territory and currency", "payload.period"
        )
    record = {
        "distribution_id": p["distribution_id"],
        "run_by": env.signer.org,
        "height": env.ctx.height,
        "timestamp_ms": env.ctx.timestamp_ms,
        "inputs_hash": inputs_hash.hex(),
        "result_hash": result_hash.hex(),
        "result": result,
    }
    st.put(state.distribution_key(p["distribution_id"]), record)
    st.put(scope_key, p["distribution_id"])
    for party, amount in result["payouts"]:
        key = state.statement_key(party, p["period"])
        entries = st.get(key) or []
        if len(entries) >= MAX_STATEMENT_ENTRIES:
            raise Refused(
                Status.RESOURCE_EXHAUSTED, f"statement of {party} is full", "payload.period"
            )
        entries.append(
            {
                "distribution_id": p["distribution_id"],
                "territory": p["territory"],
                "currency": p["currency"],
                "amount_minor": amount,
            }
        )
        st.put(key, entries)
    return {
        "distribution_id": p["distribution_id"],
        "result_hash": result_hash.hex(),
        "pool_minor": result["pool_minor"],
    }
