"""Identifiers of the music-rights world (docs/domain.md §2): parse, validate, normalize.

Each `parse_*` takes what a user typed (the common display forms are accepted) and returns the
canonical form that state stores, or raises Refused(INVALID_ARGUMENT) naming the field and the
rule. A valid check digit proves a code is well formed, never that it is registered.

Canonical forms:
    ISWC       T + 10 digits                     T0345246801   (display T-034.524.680-1)
    ISRC       12 upper-case chars CCXXXYYNNNNN  KRA341561064  (display KR-A34-15-61064)
    UCI        prefix-instance[:qualifier]       I001+SBSi-B10000083052 (the urn:uci: scheme is
               accepted and dropped; RFC 4179 syntax, opaque beyond it)
    CID        opaque YouTube asset id           A123456789012345 (charset and length only)
    IPI        11 digits                         00662307358
    IPI base   I-NNNNNNNNN-C                     I-001635620-7 (the person or company behind
               its IPI name numbers; shape only, the check digit is not verified)
    ISNI       16 chars, last may be X           000000012281955X (display 0000 0001 2281 955X)
    territory  ISO 3166-1 alpha-2, or Worldwide  KR
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import NewType

from kledger.node.errors import Refused, invalid

Iswc = NewType("Iswc", str)
Isrc = NewType("Isrc", str)
Uci = NewType("Uci", str)
Cid = NewType("Cid", str)
Ipi = NewType("Ipi", str)
IpiBase = NewType("IpiBase", str)
Isni = NewType("Isni", str)
Territory = NewType("Territory", str)

WORLDWIDE = "Worldwide"
MAX_CID_CHARS = 64
MAX_UCI_CHARS = 128
MAX_INPUT_CHARS = 160  # anything longer is not an identifier; refuse before any regex work

# ISO 3166-1 alpha-2, officially assigned codes.
ISO_COUNTRIES = frozenset(
    re.findall(
        r"[A-Z]{2}",
        """
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
        BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
        DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
        GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
        KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
        MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
        PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
        SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
        VN VU WF WS YE YT ZA ZM ZW
        """,
    )
)
# ISRC country elements allocated by IFPI outside ISO 3166-1 (KS: allocated to KMCA in Korea;
# QM/QZ/QT: US allocations; UK: legacy for GB; ZZ: IFPI; CP/DG: legacy allocations).
ISRC_ALLOCATED = frozenset({"KS", "QM", "QN", "QT", "QZ", "UK", "ZZ", "CP", "DG"})

_ISWC = re.compile(r"^T(\d{9})(\d)$")
_ISRC = re.compile(r"^([A-Z]{2})([A-Z0-9]{3})(\d{2})(\d{5})$")
_UCI = re.compile(
    r"^(?P<prefix>[A-Za-z0-9+]{1,32})-(?P<instance>[A-Za-z0-9._+-]{1,64})"
    r"(?::(?P<qualifier>[A-Za-z0-9._+-]{1,32}))?$"
)
_CID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DIGITS = re.compile(r"^\d+$")
_IPI_BASE = re.compile(r"^I-?([0-9]{9})-?([0-9])$")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise invalid("must be a string", field)
    if not value or len(value) > MAX_INPUT_CHARS:
        raise invalid(f"must be 1..{MAX_INPUT_CHARS} characters", field)
    return value.strip()


def iswc_check_digit(nine_digits: str) -> int:
    """C = (10 - ((1 + sum(i * d_i for i = 1..9)) mod 10)) mod 10."""
    total = 1 + sum(index * int(digit) for index, digit in enumerate(nine_digits, start=1))
    return (10 - total % 10) % 10


def parse_iswc(value: object, field: str = "iswc") -> Iswc:
    text = _text(value, field).upper().replace("-", "").replace(".", "").replace(" ", "")
    match = _ISWC.match(text)
    if not match:
        raise invalid(f"{value!r} is not an ISWC (T + 10 digits, e.g. T-034.524.680-1)", field)
    expected = iswc_check_digit(match.group(1))
    if int(match.group(2)) != expected:
        raise invalid(
            f"{value!r}: ISWC check digit is {match.group(2)}, expected {expected}", field
        )
    return Iswc(text)


def display_iswc(iswc: str) -> str:
    return f"T-{iswc[1:4]}.{iswc[4:7]}.{iswc[7:10]}-{iswc[10]}"


def parse_isrc(value: object, field: str = "isrc") -> Isrc:
    text = _text(value, field).upper().replace("-", "").replace(" ", "")
    if text.startswith("ISRC"):
        text = text[4:].lstrip(":")
    match = _ISRC.match(text)
    if not match:
        raise invalid(f"{value!r} is not an ISRC (CC-XXX-YY-NNNNN)", field)
    country = match.group(1)
    if country not in ISO_COUNTRIES and country not in ISRC_ALLOCATED:
        raise invalid(
            f"{value!r}: first element {country} is neither an ISO 3166-1 code nor IFPI-allocated",
            field,
        )
    return Isrc(text)


def display_isrc(isrc: str) -> str:
    return f"{isrc[:2]}-{isrc[2:5]}-{isrc[5:7]}-{isrc[7:]}"


def parse_uci(value: object, field: str = "uci") -> Uci:
    text = _text(value, field)
    if text.lower().startswith("urn:uci:"):
        text = text[len("urn:uci:") :]
    if len(text) > MAX_UCI_CHARS or not _UCI.match(text):
        raise invalid(
            f"{value!r} is not a UCI ([urn:uci:]prefix-instance[:qualifier], RFC 4179)", field
        )
    return Uci(text)


def parse_cid(value: object, field: str = "cid") -> Cid:
    text = _text(value, field)
    if not _CID.match(text):
        raise invalid(
            f"{value!r} is not a Content ID asset id (1..{MAX_CID_CHARS} of A-Z a-z 0-9 _ -)",
            field,
        )
    return Cid(text)


def ipi_check(nine_digits: str) -> str:
    """s = sum(d_i * (10 - i)) for the first 9 digits (i = 0..8), mod 101;
    check = ((101 - s) mod 101) mod 100, written as two digits."""
    total = sum(int(digit) * (10 - index) for index, digit in enumerate(nine_digits)) % 101
    return f"{((101 - total) % 101) % 100:02d}"


def parse_ipi(value: object, field: str = "ipi") -> Ipi:
    text = _text(value, field).replace(" ", "").replace(".", "")
    if len(text) != 11 or not _DIGITS.match(text):
        raise invalid(f"{value!r} is not an IPI name number (11 digits)", field)
    expected = ipi_check(text[:9])
    if text[9:] != expected:
        raise invalid(f"{value!r}: IPI check digits are {text[9:]}, expected {expected}", field)
    return Ipi(text)


def parse_ipi_base(value: object, field: str = "ipi_base") -> IpiBase:
    text = _text(value, field).upper().replace(" ", "")
    match = _IPI_BASE.match(text)
    if not match:
        raise invalid(f"{value!r} is not an IPI base number (I-NNNNNNNNN-C)", field)
    return IpiBase(f"I-{match.group(1)}-{match.group(2)}")


def isni_check(fifteen_digits: str) -> str:
    """ISO 7064 MOD 11-2 check character."""
    total = 0
    for digit in fifteen_digits:
        total = (total + int(digit)) * 2
    result = (12 - total % 11) % 11
    return "X" if result == 10 else str(result)


def parse_isni(value: object, field: str = "isni") -> Isni:
    text = _text(value, field).upper().replace(" ", "").replace("-", "")
    if text.startswith("ISNI"):
        text = text[4:]
    if len(text) != 16 or not _DIGITS.match(text[:15]) or not re.match(r"^[0-9X]$", text[15]):
        raise invalid(f"{value!r} is not an ISNI (16 characters, last may be X)", field)
    expected = isni_check(text[:15])
    if text[15] != expected:
        raise invalid(f"{value!r}: ISNI check character is {text[15]}, expected {expected}", field)
    return Isni(text)


def display_isni(isni: str) -> str:
    return " ".join(isni[i : i + 4] for i in range(0, 16, 4))


def parse_territory(value: object, field: str = "territory") -> Territory:
    if not isinstance(value, str):
        raise invalid("must be a string", field)
    if value == WORLDWIDE or value in ISO_COUNTRIES:
        return Territory(value)
    raise invalid(f"{value!r} is not an ISO 3166-1 alpha-2 code (upper case) or Worldwide", field)


PARSERS: dict[str, Callable[[object, str], str]] = {
    "iswc": parse_iswc,
    "isrc": parse_isrc,
    "uci": parse_uci,
    "cid": parse_cid,
    "ipi": parse_ipi,
    "ipi_base": parse_ipi_base,
    "isni": parse_isni,
    "territory": parse_territory,
}


# One song's codes come back in several txs (an ISWC in RegisterWork and LinkIdentifiers, an
# ISRC in three), and each node parses every tx twice (admission, execution): what a text
# parses to is remembered. Parsing is a pure function of kind and text; refusals are not kept.
_PARSED_TEXTS = 16_384


@functools.lru_cache(maxsize=_PARSED_TEXTS)
def _parse_text(kind: str, text: str) -> str:
    return PARSERS[kind](text, kind)


def parse_code(kind: str, value: object, field: str | None = None) -> str:
    """Parse any identifier by kind name (a key of PARSERS)."""
    parser = PARSERS.get(kind)
    if parser is None:
        raise invalid(f"{kind!r} is not an identifier kind ({', '.join(PARSERS)})", field)
    if type(value) is str:
        try:
            return _parse_text(kind, value)
        except Refused:
            pass  # parsed again below, so the refusal names the caller's field
    return parser(value, field or kind)
