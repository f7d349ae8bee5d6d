"""DDEX DSR flat files in: the real YouTube UGC test file and the Basic Audio Profile sample read
into ReportUsage lines carrying every identifier, their usages and revenue; escapes, multi-value
cells, namespaced values and `#` rows; tampered copies (a FOOT that does not add up, usage over
the summary's totals) are refused at the right level naming line, record and cell; a report in
two files is one report; a re-sent file is refused line by line; the reader never raises."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kledger.node.registry import bulk
from kledger.node.registry.formats import dsr
from tests.helpers import key
from tests.test_import import submitter
from tests.test_registry import Chain

HERE = Path(__file__).resolve().parent / "samples"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "formats" / "samples"
YOUTUBE = "DSR_TEST_YouTube_AdSupport-music_2015-Q4_IS_1of1_20160121T150926.tsv"
DSR_FILES = sorted(HERE.glob("DSR_*.tsv")) + (
    sorted(SHARED.glob("DSR_*.tsv")) if SHARED.is_dir() else []
)


def plan_of(data: bytes, name: str = "r.tsv") -> bulk.FilePlan:
    return bulk.plan_file(lambda: data.splitlines(keepends=True), "usage", "KMCA", name)


def usage_lines(data: bytes) -> list[dsr.UsageLine]:
    return [i for i in dsr.read_dsr(data.splitlines(keepends=True)) if isinstance(i, dsr.UsageLine)]


def replace_row(data: bytes, prefix: bytes, cell: int, value: bytes, nth: int = 0) -> bytes:
    lines = data.splitlines(keepends=True)
    matching = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    index = matching[nth]
    body = lines[index].rstrip(b"\r\n")
    cells = body.split(b"\t")
    cells[cell - 1] = value
    lines[index] = b"\t".join(cells) + lines[index][len(body) :]
    return b"".join(lines)


def levels(report: dict[str, object]) -> set[tuple[object, ...]]:
    return {(r["level"], r["record"], r["field"]) for r in report["refused"]}  # type: ignore[attr-defined, index]


@pytest.mark.parametrize("path", DSR_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_real_sample_reads_with_its_foot_and_totals(path: Path) -> None:
    report = bulk.dry_run(plan_of(path.read_bytes(), path.name))
    assert report["usage_lines"] > 0 and report["refused"] == [] and report["planned"] >= 1


def test_the_youtube_ugc_file_carries_every_identifier_usage_and_revenue() -> None:
    data = (HERE / YOUTUBE).read_bytes()
    lines = usage_lines(data)
    assert len(lines) == 6
    first = lines[0]
    assert first.report == {
        "report_id": "1453417766009915-1",
        "period": "2015-10",
        "territory": "IS",
        "service": "AdSupport-music",
        "commercial_model": "ad_supported",
        "use_type": "stream",
        "currency": "USD",
        "net_revenue_minor": 409_05 + 359_71 + 3424_29 + 11570_53,
        "total_usages": 1036181 + 575732 + 3834450 + 21613409,
    }
    assert first.usage == {
        "line_id": "1.1.U1",
        "code_kind": "isrc",
        "code": "USSM19803037",
        "usages": 7810,
        "codes": [
            {"kind": "cid", "value": "A935917475088049"},
            {"kind": "proprietary", "value": "myns::4534"},
        ],
        "revenue_minor": 200,
        "title": "Sexual Healing",
    }
    second = lines[1].usage
    assert {"kind": "iswc", "value": "T9109247316"} in second["codes"]
    assert [line.usage["line_id"] for line in lines[2:]] == ["1.3.U1", "1.3.U2", "1.3.U3", "1.3.U4"]
    chain = Chain()
    plan = plan_of(data, YOUTUBE)
    summary = bulk.submit_file(
        plan, key("KMCA/client"), chain.genesis.chain_id, submitter(chain), first_nonce=1
    )
    assert summary.accepted == 1 and summary.matched_lines == 0 and len(summary.unmatched) == 6
    assert "ISRC USSM19803037 is not registered" in summary.unmatched[0]["reason"]
    again = bulk.submit_file(
        plan_of(data, YOUTUBE),
        key("KMCA/client"),
        chain.genesis.chain_id,
        submitter(chain),
        first_nonce=99,
    )
    assert again.accepted == 0 and again.refused[0]["status"] == "ALREADY_EXISTS"


def test_a_foot_that_does_not_add_up_rejects_the_file() -> None:
    data = (HERE / YOUTUBE).read_bytes()
    for cell, name, value in (
        (2, "NumberOfLinesInFile", b"36"),
        (4, "NumberOfSummaryRecords", b"3"),
        (5, "NumberOfBlocksInFile", b"4"),
    ):
        report = bulk.dry_run(plan_of(replace_row(data, b"FOOT", cell, value)))
        assert ("file", "FOOT", name) in levels(report), name
        assert report["planned"] == 0
    lines = data.splitlines(keepends=True)
    report = bulk.dry_run(plan_of(b"".join(lines[:-1])))  # no FOOT: truncated
    assert levels(report) == {("file", "", "")} and "FOOT" in report["refused"][0]["reason"]


def test_usage_over_the_summary_total_refuses_the_summary_and_its_lines() -> None:
    data = replace_row((HERE / YOUTUBE).read_bytes(), b"SU03.01", 6, b"99999999")
    report = bulk.dry_run(plan_of(data))
    assert ("transaction", "SY02.01", "Usages") in levels(report)
    assert report["planned"] == 0
    rich = replace_row((HERE / YOUTUBE).read_bytes(), b"SU03.01", 7, b"99999.00")
    assert ("transaction", "SY02.01", "NetRevenue") in levels(bulk.dry_run(plan_of(rich)))


def test_rows_that_point_nowhere_are_refused_naming_the_cell() -> None:
    data = (HERE / YOUTUBE).read_bytes()
    report = bulk.dry_run(plan_of(replace_row(data, b"SU03.01", 5, b"NOSUCHRESOURCE")))
    assert ("record", "SU03.01", "DspResourceId") in levels(report)
    report = bulk.dry_run(plan_of(replace_row(data, b"SU03.01", 4, b"7")))
    assert ("record", "SU03.01", "SummaryRecordId") in levels(report)
    report = bulk.dry_run(plan_of(replace_row(data, b"RU01", 5, b"1|2")))
    assert ("record", "RU01", "Usages") in levels(report)
    report = bulk.dry_run(plan_of(replace_row(data, b"SY02.01", 11, b"XYZ", nth=1)))
    assert ("transaction", "SY02.01", "CurrencyOfReporting") in levels(report)


def test_escapes_multi_values_and_namespaces() -> None:
    assert dsr.split_cells("a\\|b|c", "|") == ["a|b", "c"]
    assert dsr.values("Lennon|McCartney||") == ["Lennon", "McCartney"]
    assert dsr._raw_cells("x\\\ty\tz") == ["x\ty", "z"]
    assert dsr.single("Let Me Get \\| This") == "Let Me Get | This"
    assert (
        dsr.minor_units("409.05", "USD") == 40905
        and dsr.minor_units("1850000000", "KRW") == 1850000000
    )
    assert dsr.minor_units("1.005", "USD") == 100 and dsr.minor_units("x", "USD") is None


def _report(file_number: int, files: int, block: str, usages: int, foot_report: bool) -> bytes:
    rows = [
        f"HEAD\tdsrf/1.1/1.4.1/1.3\tBasicAudioProfile\t1.3\tMSG-7\t2026-02-01T00:00:00Z\t{file_number}\t{files}\t2026-01-01\t2026-01-31\tPADPIDA1\tMelon\tStreams",
        "SY01.02\tS1\tMelon\t\tSubscriptionModel\tOnDemandStream\tKR\tStreams\t3000\t\tKRW\t9000000",
        f"AS01.01\t{block}\tR1\tM{block}\tKRA40260000{block}\tSong {block}\t\tArtist\t\tPT3M\tSoundRecording",  # noqa: E501
        f"SU02.02\t{block}\tS1\tT1\t\tR1\ttrue\t{usages}",
    ]
    total = len(rows) + 1
    rows.append(f"FOOT\t{total}\t{total if foot_report else ''}\t1\t1\t{2 if foot_report else ''}")
    return ("\n".join(rows) + "\n").encode()


def test_a_report_in_two_files_is_one_report() -> None:
    first, second = _report(1, 2, "1", 1000, False), _report(2, 2, "2", 2000, True)
    chain = Chain()
    for nonce, data in ((1, first), (50, second)):
        report = bulk.dry_run(plan_of(data))
        assert report["refused"] == [], report["refused"]
        summary = bulk.submit_file(
            plan_of(data),
            key("KMCA/client"),
            chain.genesis.chain_id,
            submitter(chain),
            first_nonce=nonce,
        )
        assert summary.accepted == 1 and summary.refused == []
    ids = [line.usage["line_id"] for data in (first, second) for line in usage_lines(data)]
    assert ids == ["1.1.T1", "2.2.T1"]
    assert {line.report["report_id"] for data in (first, second) for line in usage_lines(data)} == {
        "MSG-7-S1"
    }


# -- totality --------------------------------------------------------------------------------


def _check_total(data: bytes) -> None:
    items = list(dsr.read_dsr(data.splitlines(keepends=True)))
    assert isinstance(items[-1], dsr.DsrEnd)
    report = bulk.dry_run(plan_of(data))
    for refusal in report["refused"]:
        assert isinstance(refusal["line"], int) and refusal["level"] in (
            "file",
            "transaction",
            "record",
            "field",
        )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_the_reader_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _check_total(data)
    _check_total(b"HEAD\t" + data)


YOUTUBE_BYTES = (HERE / YOUTUBE).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=12),
    st.text(max_size=10)
    | st.sampled_from(["", "|", "\\", "\\|", "-1", "1e9", "99999999999", "#", "T"]),
)
def test_the_reader_never_raises_on_mutated_cells(line: int, cell: int, value: str) -> None:
    lines = YOUTUBE_BYTES.splitlines(keepends=True)
    index = line % len(lines)
    cells = lines[index].rstrip(b"\n").split(b"\t")
    cells[cell % len(cells)] = value.encode("utf-8", "surrogatepass")
    lines[index] = b"\t".join(cells) + b"\n"
    _check_total(b"".join(lines))
