"""CWR 2.1 / 2.2 in: the real sample files (tests/samples/, and the project's shared
formats/samples folder when it is beside the checkout) read and import with the works, parties,
shares, territories and links they declare; tampered copies are refused at the CWR error level
with line, record and field; REV makes a new version and a re-sent file changes nothing; the ACK
reads back as CWR; a distribution pays the shares the file declared; the export round-trips;
a big file is planned in bounded memory; the reader never raises, whatever the bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kledger.node.registry import bulk, state
from kledger.node.registry.formats import cwr, cwr_write
from kledger.node.registry.formats.problems import LEVELS, Refusal
from kledger.node.registry.queries import RegistryQueries
from kledger.node.registry.state import StateReader
from tests.helpers import key
from tests.test_import import SAMPLE, WORKS_FILE, submitter
from tests.test_registry import Chain

HERE = Path(__file__).resolve().parent / "samples"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "formats" / "samples"
CWR_FILES = sorted(HERE.glob("*.V2[12]"))
SHARED_CWR = sorted(SHARED.glob("*.V2[12]")) if SHARED.is_dir() else []


def read(name: str) -> bytes:
    return (HERE / name).read_bytes()


def plan_of(data: bytes, name: str = "f.V21", org: str = "KOMCA") -> bulk.FilePlan:
    return bulk.plan_file(lambda: data.splitlines(keepends=True), "works", org, name)


def tamper(data: bytes, line: int, start: int, new: bytes) -> bytes:
    """Line `line` (1-based) with `new` written from column `start` (1-based)."""
    lines = data.splitlines(keepends=True)
    body = lines[line - 1].rstrip(b"\r\n")
    ending = lines[line - 1][len(body) :]
    lines[line - 1] = body[: start - 1] + new + body[start - 1 + len(new) :] + ending
    return b"".join(lines)


def load(
    chain: Chain, data: bytes, org: str = "KOMCA", nonce: int = 1_000
) -> tuple[bulk.Summary, list[bulk.Unit]]:
    units: list[bulk.Unit] = []
    summary = bulk.submit_file(
        plan_of(data, org=org),
        key(f"{org}/client"),
        chain.genesis.chain_id,
        submitter(chain),
        first_nonce=nonce,
        on_unit=units.append,
    )
    return summary, units


def claim(chain: Chain, work_id: str, right: str) -> list[dict[str, Any]]:
    record = StateReader(chain.view).get(state.shares_key("work", work_id, right))
    return [c for c in record["claims"] if c["status"] == "active"] if record else []


def entries(found: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (e["party_id"] or "?", e["kind"], e["role"], e["ownership"], e["collection"])
        for e in found["entries"]
    ]


def levels(report: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {(r["level"], r["record"], r["field"]) for r in report["refused"]}


# -- the real files --------------------------------------------------------------------------


@pytest.mark.parametrize("path", CWR_FILES + SHARED_CWR, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_sample_imports(path: Path) -> None:
    data = path.read_bytes()
    report = bulk.dry_run(plan_of(data, path.name))
    assert report["works"] >= 1 and report["planned"] > report["works"]
    assert all(r["level"] in ("field", "record") for r in report["refused"]), report["refused"]
    chain = Chain()
    summary, units = load(chain, data)
    assert summary.refused == [] and summary.accepted == report["planned"]
    assert {bulk.ack_status(u)[0] for u in units} <= {"AS", "AC"}
    for unit in units:
        assert StateReader(chain.view).has(state.work_key(unit.work_id))


def test_a_publisher_chain_with_an_administrator_and_a_non_controlled_writer() -> None:
    chain = Chain()
    load(chain, read("nwrexample2.V21"))
    work = StateReader(chain.view).get(state.work_key("PB199-CLAIMDIGITAL01"))
    assert work["titles"] == ["THE WORK"] and work["submitter"] == {
        "sender": "PB199",
        "work_number": "CLAIMDIGITAL01",
    }
    assert work["publishers"] == [
        {"party_id": "IPI-00000000297", "role": "E", "chain": 1},
        {"party_id": "IPI-00000000199", "role": "AM", "chain": 1},
    ]
    assert work["creators"] == [
        {"party_id": "IPI-00000000395", "role": "CA", "chains": [1]},
        {"party_id": "PB199-JZL2GMGV3", "role": "CA"},  # no IPI: the sender's own number
    ]
    [pr] = claim(chain, "PB199-CLAIMDIGITAL01", "PR")
    assert pr["territories"] == ["Worldwide"]
    # The original publisher owns, the administrator collects (SPT), the OWR collects its own.
    assert entries(pr) == [
        ("IPI-00000000297", "publisher", "E", 2500, 0),
        ("IPI-00000000199", "publisher", "AM", 0, 2500),
        ("IPI-00000000395", "writer", "CA", 2500, 2500),
        ("PB199-JZL2GMGV3", "writer", "CA", 5000, 5000),
    ]
    [mr] = claim(chain, "PB199-CLAIMDIGITAL01", "MR")
    assert entries(mr) == [
        ("IPI-00000000297", "publisher", "E", 5000, 0),
        ("IPI-00000000199", "publisher", "AM", 0, 5000),
        ("IPI-00000000395", "writer", "CA", 0, 0),
        ("PB199-JZL2GMGV3", "writer", "CA", 5000, 5000),
    ]
    party = StateReader(chain.view).get(state.party_key("IPI-00000000199"))
    assert party["names"] == [{"name": "THE SENDER", "ipi": "00000000199"}]
    assert {"society": "ASCAP", "right": "PR"} in [
        {k: m[k] for k in ("society", "right")} for m in party["memberships"]
    ]


def test_unknown_parties_are_unknown_never_identifiers() -> None:
    chain = Chain()
    load(chain, read("CW220001DMP_000.V21"))
    reader = StateReader(chain.view)
    wid = "IPI09000000020-DMP000001"
    work = reader.get(state.work_key(wid))
    assert work["iswc"] == "T1234567894" and work["version"] == "modified"
    assert work["original"] == {"title": "MUSIC PUB CARTOONS", "iswc": ""}
    assert [t["type"] for t in work["alternate_titles"]] == ["TE", "AT", "AT", "AT", "AT"]
    assert work["origin"] == {
        "intended_purpose": "LIB",
        "library": "MUSIC LIBRARY",
        "cd_identifier": "ML001",
    }
    assert {"unknown": True, "role": "E", "chain": 2} in work["publishers"]
    assert {"unknown": True, "role": "CA"} in work["creators"]
    assert not reader.has(state.ipi_key("00000000000"))  # the all-zero placeholder
    writer = reader.get(state.party_key("IPI-00000000199"))
    assert writer["names"][0] == {
        "name": "MATIJA KOLARIC",
        "ipi": "00000000199",
        "ipi_base": "I-123456789-3",
    }
    [pr] = claim(chain, wid, "PR")
    assert ("?", "publisher", "E", 1250, 1250) in entries(pr)  # the unknown OPU's share


def test_rev_is_a_new_version_and_a_re_sent_file_changes_nothing() -> None:
    chain = Chain()
    data = read("revexample.V21")
    _, units = load(chain, data)
    assert [bulk.ack_status(u)[0] for u in units] == ["AS", "AS"]
    reader = StateReader(chain.view)
    assert reader.get(state.work_key("PB199-DMP000001"))["titles"] == ["THE ONE"]
    root = chain.roots[-1]
    again, units = load(chain, data, nonce=50_000)
    assert again.accepted == 0 and [bulk.ack_status(u)[0] for u in units] == ["DU", "DU"]
    assert chain.roots[-1] == root, "a re-sent file changed state"
    revised = tamper(data, 3, 20, b"THE ONLY ONE")
    _, units = load(chain, revised, nonce=90_000)
    assert [bulk.ack_status(u)[0] for u in units] == ["AS", "DU"]
    work = StateReader(chain.view).get(state.work_key("PB199-DMP000001"))
    assert work["titles"] == ["THE ONLY ONE"] and work["revision"] == 2
    assert work["revisions"][0]["titles"] == ["THE ONE"] and work["revisions"][0]["revision"] == 1


# -- tampered copies -------------------------------------------------------------------------


def test_a_share_total_of_101_percent_rejects_the_transaction() -> None:
    data = tamper(read("nwrexample2.V21"), 10, 130, b"05100")  # OWR PR ownership 50 -> 51 %
    report = bulk.dry_run(plan_of(data))
    assert ("transaction", "OWR", "pr_ownership_share") in levels(report)
    [problem] = [r for r in report["refused"] if r["field"] == "pr_ownership_share"]
    assert problem["line"] == 10 and "PR ownership totals 101.00 %" in problem["reason"]
    assert ("transaction", "OWR", "pr_collection_share") not in levels(report)  # no SPT/SWT
    assert report["planned"] == 0
    chain = Chain()
    summary, units = load(chain, data)
    assert summary.accepted == 0 and [bulk.ack_status(u)[0] for u in units] == ["RJ"]


def test_a_bad_iswc_check_digit_is_a_field_rejected_and_blanked() -> None:
    data = tamper(read("CW220001DMP_000.V21"), 3, 96, b"T1234567895")
    report = bulk.dry_run(plan_of(data))
    assert levels(report) == {("field", "NWR", "iswc")}
    assert "check digit" in report["refused"][0]["reason"]
    chain = Chain()
    _, units = load(chain, data)
    assert [bulk.ack_status(u)[0] for u in units] == ["AC"]  # accepted with changes
    assert StateReader(chain.view).get(state.work_key("IPI09000000020-DMP000001"))["iswc"] == ""


def test_a_truncated_record_rejects_the_record_and_its_transaction() -> None:
    lines = read("nwrexample2.V21").splitlines(keepends=True)
    lines[3] = lines[3][:118] + b"\n"  # the SPU cut inside its PR ownership share
    report = bulk.dry_run(plan_of(b"".join(lines)))
    assert {
        ("record", "SPU", "pr_ownership_share"),
        ("transaction", "SPU", "pr_ownership_share"),
    } <= levels(report)
    assert report["planned"] == 0


def test_a_wrong_trl_count_rejects_the_file_and_nothing_is_sent() -> None:
    data = tamper(read("nwrexample2.V21"), 12, 17, b"00000013")
    report = bulk.dry_run(plan_of(data))
    assert levels(report) == {("file", "TRL", "record_count")}
    assert report["planned"] == 0 and "says 13, the file has 12" in report["refused"][0]["reason"]
    chain = Chain()
    before = dict(chain.view.data)
    summary, units = load(chain, data)
    assert units == [] and summary.accepted == 0 and chain.view.data == before


def test_a_wrong_grt_count_rejects_the_group() -> None:
    data = tamper(read("revexample.V21"), 24, 9, b"00000003")
    report = bulk.dry_run(plan_of(data))
    assert ("group", "GRT", "transaction_count") in levels(report)
    assert report["planned"] == 0 and report["works"] == 2


def test_unknown_records_and_territories_are_refused_at_their_level() -> None:
    data = read("nwrexample2.V21")
    lines = data.splitlines(keepends=True)
    junk = b"".join([*lines[:5], b"XYZ0000000000000006JUNK\n", *lines[5:]])
    assert levels(bulk.dry_run(plan_of(junk))) == {("file", "XYZ", "record_type")}
    bad_tis = tamper(data, 6, 51, b"9999")
    assert ("transaction", "SPT", "tis_code") in levels(bulk.dry_run(plan_of(bad_tis)))
    assert levels(bulk.dry_run(plan_of(b""))) == {("file", "", "")}
    no_group = lines[0] + b"".join(lines[2:])  # HDR, then a transaction without its GRH
    assert ("file", "NWR", "record_type") in levels(bulk.dry_run(plan_of(no_group)))


# -- the ACK ---------------------------------------------------------------------------------


def test_the_ack_is_cwr_with_a_status_per_transaction_and_a_msg_per_problem() -> None:
    good = read("revexample.V21")
    bad = tamper(good, 3, 96, b"T0000000000")  # a bad ISWC on the first work: AC
    bad = tamper(bad, 19, 130, b"03500")  # the second work's writer: PR totals 110 %
    chain = Chain()
    plan = plan_of(bad, "revexample.V21")
    header = plan.header
    writer = cwr_write.AckWriter("SO", "118", "KOMCA", header, "20260201", "20260201120000")
    lines = writer.head()

    def on_unit(unit: bulk.Unit) -> None:
        lines.extend(bulk.ack_lines(writer, unit))

    bulk.submit_file(
        plan,
        key("KOMCA/client"),
        chain.genesis.chain_id,
        submitter(chain),
        first_nonce=1,
        on_unit=on_unit,
    )
    lines += writer.tail()
    text = "\r\n".join(lines).encode() + b"\r\n"
    items = list(cwr.read_cwr(text.splitlines(keepends=True)))
    end = items[-1]
    assert isinstance(end, cwr.FileEnd)
    assert end.problems == [], end.problems
    acks = [line for line in lines if line.startswith("ACK")]
    assert [a[157:159] for a in acks] == ["AC", "RJ"]
    assert acks[0][129:149].strip() == "PB199-DMP000001" and acks[1][129:149].strip() == ""
    messages = [line for line in lines if line.startswith("MSG")]
    assert messages[0][19] == "F" and "ISWC" in messages[0][35:].upper()
    assert any(m[19] == "T" and "PR OWNERSHIP" in m[35:].upper() for m in messages)


# -- money: the distribution pays what the CWR file declared --------------------------------


def _usage_file(isrc: str, usages: int) -> bytes:
    rows = [
        "HEAD\tdsrf/1.1/1.4.1/1.3\tBasicAudioProfile\t1.3\tT-1\t2026-02-01T00:00:00Z\t1\t1\t2026-01-01\t2026-01-31\tPADPIDA1\tMelon\tStreams",
        f"SY01.02\tS1\tMelon\t\tSubscriptionModel\tOnDemandStream\tKR\tStreams\t{usages}\t\tKRW\t10000000",
        f"AS01.01\t1\tR1\tM1\t{isrc}\tThe Work\t\tArtist\t\tPT3M\tSoundRecording",
        f"SU02.02\t1\tS1\tT1\t\tR1\ttrue\t{usages}",
    ]
    rows.append(f"FOOT\t{len(rows) + 1}\t{len(rows) + 1}\t1\t1\t1")
    return ("\n".join(rows) + "\n").encode()


def test_the_distribution_pays_the_shares_the_cwr_file_declared() -> None:
    chain = Chain()
    load(chain, read("nwrexample2.V21"))
    chain.ok(
        "RIAK/client",
        "RegisterRecording",
        {
            "isrc": "KRA402600077",
            "title": "The Work",
            "works": ["PB199-CLAIMDIGITAL01"],
        },
    )
    chain.ok(
        "KOMCA/client",
        "LinkIdentifiers",
        {
            "from": {"kind": "work", "value": "PB199-CLAIMDIGITAL01"},
            "to": {"kind": "isrc", "value": "KRA402600077"},
        },
    )
    usage = _usage_file("KRA402600077", 1000)
    plan = bulk.plan_file(lambda: usage.splitlines(keepends=True), "usage", "KMCA", "u.tsv")
    summary = bulk.submit_file(
        plan, key("KMCA/client"), chain.genesis.chain_id, submitter(chain), first_nonce=7
    )
    assert summary.matched_lines == 1 and summary.refused == []
    chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    result = RegistryQueries(chain.view, chain.time_ms).distribution("D")["distribution"]["result"]
    paid = dict(result["payouts"])
    authors = 10_000_000 * 1050 // 10_000  # the authors' pool of the tariff: 10.50 %
    # PR collection as declared: the administrator 25 %, the writer 25 %, the OWR 50 %.
    assert paid["IPI-00000000199"] == authors // 4
    assert paid["IPI-00000000395"] == authors // 4
    assert paid["PB199-JZL2GMGV3"] == authors // 2
    assert "IPI-00000000297" not in paid  # the original publisher owns but does not collect


def test_an_unknown_partys_share_is_kept_undistributed() -> None:
    chain = Chain()
    load(chain, read("CW220001DMP_000.V21"))
    chain.ok(
        "KOMCA/client",
        "LinkIdentifiers",
        {
            "from": {"kind": "work", "value": "IPI09000000020-DMP000001"},
            "to": {"kind": "isrc", "value": "KRA402600078"},
        },
    )
    chain.ok(
        "RIAK/client",
        "RegisterRecording",
        {"isrc": "KRA402600078", "title": "x", "works": ["IPI09000000020-DMP000001"]},
    )
    usage = _usage_file("KRA402600078", 500)
    plan = bulk.plan_file(lambda: usage.splitlines(keepends=True), "usage", "KMCA", "u.tsv")
    bulk.submit_file(
        plan, key("KMCA/client"), chain.genesis.chain_id, submitter(chain), first_nonce=7
    )
    chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    result = RegistryQueries(chain.view, chain.time_ms).distribution("D")["distribution"]["result"]
    authors = 10_000_000 * 1050 // 10_000
    paid = dict(result["payouts"])
    assert paid["IPI-09000000020"] == authors * 3750 // 10_000
    unknown = [r for r in result["undistributed"] if "does not name" in r["reason"]]
    assert [r["pool"] for r in unknown] == ["authors"]


def test_territory_records_become_claims_side_by_side() -> None:
    chain = Chain()
    load(chain, (SAMPLE / WORKS_FILE).read_bytes())
    claims = claim(chain, "PB301-HB0008", "PR")  # sub-published in Japan by Tokyo Songs
    where = {(tuple(c["territories"]), tuple(c.get("excluded_territories", []))): c for c in claims}
    assert set(where) == {(("Worldwide",), ("JP",)), (("JP",), ())}
    japan = {e["party_id"]: e["collection"] for e in where[(("JP",), ())]["entries"]}
    elsewhere = {
        e["party_id"]: e["collection"] for e in where[(("Worldwide",), ("JP",))]["entries"]
    }
    tokyo = {p for p, c in japan.items() if c == 5000}
    hanbit = {p for p, c in elsewhere.items() if c == 5000}
    assert len(tokyo) == len(hanbit) == 1 and tokyo != hanbit  # the sub-publisher in Japan only
    assert sum(japan.values()) == sum(elsewhere.values()) == 10_000
    [kr_only] = claim(chain, "PB301-HB0004", "PR")  # Korea, Japan and the US only
    assert kr_only["territories"] == ["JP", "KR", "US"]


# -- totality --------------------------------------------------------------------------------


def _check_total(data: bytes) -> None:
    items = list(cwr.read_cwr(data.splitlines(keepends=True)))
    assert isinstance(items[-1], cwr.FileEnd)
    report = bulk.dry_run(plan_of(data))
    for refusal in report["refused"]:
        assert isinstance(refusal["line"], int) and refusal["line"] >= 0
        assert refusal["level"] in ("file", "group", "transaction", "record", "field")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_the_reader_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _check_total(data)
    _check_total(b"HDR" + data)


SAMPLE_BYTES = [path.read_bytes() for path in CWR_FILES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SAMPLE_BYTES))),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=300),
    st.binary(min_size=0, max_size=12)
    | st.sampled_from([b"0", b"9", b"Y", b" ", b"E", b"I", b"\xff", b"00000", b"99999", b"\r"]),
    st.booleans(),
)
def test_the_reader_never_raises_on_mutated_real_files(
    which: int, line: int, column: int, new: bytes, cut: bool
) -> None:
    lines = SAMPLE_BYTES[which].splitlines(keepends=True)
    index = line % len(lines)
    body = lines[index]
    lines[index] = body[:column] + new + (b"\n" if cut else body[column + len(new) :])
    _check_total(b"".join(lines))


def test_refusal_levels_are_the_cwr_levels() -> None:
    assert LEVELS == ("E", "G", "T", "R", "F")
    assert Refusal(3, "SPU", "pr_ownership_share", "x", "T").to_json()["level"] == "transaction"


# -- export: CWR out, and back in ------------------------------------------------------------


def _registry_state(chain: Chain) -> dict[str, Any]:
    """Works, parties, active share claims and links, without what only says when (heights,
    versions) — what a round trip must give back."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if k not in ("height", "version")}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    out: dict[str, Any] = {}
    reader = StateReader(chain.view)
    for family in (b"work/", b"party/", b"ipi/", b"code/", b"link/", b"links/"):
        for raw_key, value in reader.iterate(state.S + family):
            out[raw_key.decode()] = clean(value)
    for raw_key, value in reader.iterate(state.S + b"shares/"):
        out[raw_key.decode()] = clean([c for c in value["claims"] if c["status"] == "active"])
    return out


def test_export_then_import_into_a_fresh_ledger_gives_the_same_state(tmp_path: Path) -> None:
    from kledger.cluster.client import export_cli

    first = Chain()
    sources = [(SAMPLE / WORKS_FILE).read_bytes(), *(path.read_bytes() for path in CWR_FILES)]
    for number, data in enumerate(sources):
        summary, _ = load(first, data, nonce=1_000 + number * 100_000)
        assert summary.refused == []

    def fetch(org: str, sender: str, after: str) -> dict[str, Any]:
        return RegistryQueries(first.view, first.time_ms).works(org, sender, after, 7)

    senders = export_cli.senders(fetch, "KOMCA")
    assert senders == ["IPI09000000020", "PB199", "PB301"]
    again = Chain()
    for number, sender in enumerate(senders):
        out = tmp_path / f"{sender}.V22"
        assert export_cli.main(["cwr", "--out", str(out), "--sender", sender], fetch=fetch) == 0
        report = bulk.dry_run(plan_of(out.read_bytes()))
        assert report["refused"] == [] and report["format"] == "CWR 2.2"
        summary, units = load(again, out.read_bytes(), nonce=5_000_000 + number * 100_000)
        assert summary.refused == [] and {bulk.ack_status(u)[0] for u in units} == {"AS"}
    assert _registry_state(again) == _registry_state(first)
    with pytest.raises(ValueError, match="3 senders"):
        export_cli.export(fetch, tmp_path / "all.V22", "", "", "")


# -- big files -------------------------------------------------------------------------------

_PEAK = """
import resource, sys
from pathlib import Path
from kledger.cluster.sample.big import write
from kledger.node.registry import bulk
path = Path(sys.argv[1]); write(path, int(sys.argv[2]))
report = bulk.dry_run(bulk.plan_file(lambda: path.open("rb"), "works", "KOMCA", path.name))
assert report["works"] == int(sys.argv[2]) and report["refused"] == [], report["refused"][:3]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, path.stat().st_size)
"""


def test_a_big_file_is_planned_in_bounded_memory(tmp_path: Path) -> None:
    """Planning reads a file twice, unit by unit: eight times the works costs about the same
    peak memory (the bounded identifier cache aside), far less than the file or its plan."""
    import subprocess
    import sys

    peaks = []
    for works in (1_000, 8_000):
        done = subprocess.run(
            [sys.executable, "-c", _PEAK, str(tmp_path / f"big{works}.V22"), str(works)],
            capture_output=True,
            text=True,
            check=True,
        )
        rss_kib, size = (int(x) for x in done.stdout.split())
        peaks.append((rss_kib, size))
    (small, _), (large, large_size) = peaks
    assert large - small < 16 * 1024, peaks  # KiB
    assert (large - small) * 1024 < large_size, peaks


@pytest.mark.slow
def test_a_100000_work_file_imports(capsys: pytest.CaptureFixture[str]) -> None:
    """The figure of docs/registry.md: `python -m kledger.cluster.sample.measure --cwr-works
    100000` (works per second are printed, never asserted)."""
    from kledger.cluster.sample.measure import measure_cwr

    measure_cwr(100_000)
    out = capsys.readouterr().out
    assert "refused 0" in out and "accepted 400501" in out
