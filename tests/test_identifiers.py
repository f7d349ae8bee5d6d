"""Every identifier rule of docs/domain.md §2, valid and invalid, and `kledger id check`."""

from __future__ import annotations

import pytest

from kledger.cluster.client import ident_cli as ident
from kledger.node.errors import Refused, Status
from kledger.node.registry import identifiers as ids


@pytest.mark.parametrize(
    ("kind", "raw", "canonical"),
    [
        ("iswc", "T-034.524.680-1", "T0345246801"),
        ("iswc", "T-000.000.001-0", "T0000000010"),
        ("iswc", "t0345246801", "T0345246801"),
        ("isrc", "KRA341561064", "KRA341561064"),
        ("isrc", "kr-a34-15-61064", "KRA341561064"),
        ("isrc", "ISRC KR-A34-15-61064", "KRA341561064"),
        ("isrc", "KSA001900001", "KSA001900001"),  # IFPI-allocated KS (KMCA)
        ("uci", "urn:uci:I001+SBSi-B10000083052", "I001+SBSi-B10000083052"),
        ("uci", "G8011-KOMCA.123:v2", "G8011-KOMCA.123:v2"),
        ("cid", "A123456789012345", "A123456789012345"),
        ("cid", "xYz_-1", "xYz_-1"),
        ("ipi", "00662307358", "00662307358"),
        ("isni", "0000 0001 2281 955X", "000000012281955X"),
        ("isni", "ISNI 0000000121032683", "0000000121032683"),
        ("territory", "KR", "KR"),
        ("territory", "Worldwide", "Worldwide"),
    ],
)
def test_valid_identifiers_normalize(kind, raw, canonical):
    assert ids.parse_code(kind, raw) == canonical


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("iswc", "T-034.524.680-2", "check digit"),
        ("iswc", "T03452468", "not an ISWC"),
        ("iswc", "X0345246801", "not an ISWC"),
        ("isrc", "AA6Q72000047", "neither an ISO"),
        ("isrc", "KRA3415610", "not an ISRC"),
        ("isrc", "KR!341561064", "not an ISRC"),
        ("uci", "I410-", "not a UCI"),
        ("uci", "-B100", "not a UCI"),
        ("uci", "I410 B100", "not a UCI"),
        ("cid", "A 1", "not a Content ID"),
        ("cid", "A" * 65, "not a Content ID"),
        ("ipi", "00123456789", "check digits"),
        ("ipi", "0066230735", "11 digits"),
        ("isni", "0000 0001 1111 955X", "check character"),
        ("isni", "0000 0001 2281 95", "16 characters"),
        ("territory", "UK", "ISO 3166-1"),
        ("territory", "KOR", "ISO 3166-1"),
        ("territory", "kr", "ISO 3166-1"),
        ("territory", "worldwide", "ISO 3166-1"),
    ],
)
def test_invalid_identifiers_are_refused_naming_the_field(kind, raw, reason):
    with pytest.raises(Refused) as caught:
        ids.parse_code(kind, raw, field="payload.code")
    assert caught.value.status is Status.INVALID_ARGUMENT
    assert caught.value.field == "payload.code"
    assert reason in caught.value.message


def test_non_strings_and_oversize_input_are_refused():
    for kind in ids.PARSERS:
        with pytest.raises(Refused):
            ids.parse_code(kind, 12345)
        with pytest.raises(Refused):
            ids.parse_code(kind, "1" * 1000)
    with pytest.raises(Refused, match="not an identifier kind"):
        ids.parse_code("ean", "123")


def test_check_digit_functions_and_display_forms():
    assert ids.iswc_check_digit("034524680") == 1
    assert ids.ipi_check("006623073") == "58"
    assert ids.isni_check("000000012281955") == "X"
    assert ids.display_iswc("T0345246801") == "T-034.524.680-1"
    assert ids.display_isrc("KRA341561064") == "KR-A34-15-61064"
    assert ids.display_isni("000000012281955X") == "0000 0001 2281 955X"


def test_every_iswc_check_digit_is_the_only_one_accepted():
    for base in ("000000001", "123456789", "999999999", "034524680"):
        good = ids.iswc_check_digit(base)
        for digit in range(10):
            text = f"T{base}{digit}"
            if digit == good:
                assert ids.parse_iswc(text) == text
            else:
                with pytest.raises(Refused):
                    ids.parse_iswc(text)


def test_id_check_cli(capsys):
    assert ident.main(["check", "iswc", "T-034.524.680-1"]) == 0
    assert capsys.readouterr().out.strip() == "T0345246801"
    assert ident.main(["check", "isni", "0000 0001 1111 955X"]) == 1
    assert "check character" in capsys.readouterr().err
