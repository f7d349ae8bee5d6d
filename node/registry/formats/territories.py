"""CISAC TIS territory codes (CWR SPT/SWT/OPT/OWT) as the ledger's territories.

TIS numeric codes of countries are ISO 3166-1 numeric codes (0410 Korea, 0392 Japan); codes from
2100 up are groups (2136 World, 2106 Asia, 2120 Europe, ...). The table and the hierarchy come
from the `music-metadata-territories` package (MIT; the CISAC TIS list and tree as CSV, kept by
the author of django-music-publisher): a code is expanded to the ISO alpha-2 codes of the
countries it holds, and a CWR sequence of inclusions and exclusions becomes a set of countries.
Countries the ledger does not know as ISO codes are left out.

Rules kept here: an unknown code is None (the caller refuses it, naming the field); the world is
`world()`; a set of countries is written back as the ledger's territories: ["Worldwide"] for the
world, ["Worldwide"] with `excluded` for most of it, else the sorted ISO codes.
"""

from __future__ import annotations

import functools

from music_metadata.territories.territory import Territory

from kledger.node.registry.identifiers import ISO_COUNTRIES, WORLDWIDE

WORLD_TIS = "2136"
KOREA_TIS = "0410"
MAX_LISTED = 100  # more countries than this are written as Worldwide minus the rest


@functools.lru_cache(maxsize=512)
def countries_of(tis: str) -> frozenset[str] | None:
    """The ISO alpha-2 codes a TIS numeric code covers, or None for an unknown code."""
    if len(tis) != 4 or not tis.isascii() or not tis.isdigit():
        return None
    found = Territory.get(tis)
    if found is None:
        return None
    if found.is_group:
        return frozenset(t.tis_a for t in found.countries if t.tis_a in ISO_COUNTRIES)
    return frozenset({found.tis_a}) if found.tis_a in ISO_COUNTRIES else frozenset()


def name_of(tis: str) -> str:
    found = Territory.get(tis) if len(tis) == 4 and tis.isascii() and tis.isdigit() else None
    return str(found) if found is not None else tis


@functools.cache
def world() -> frozenset[str]:
    countries = countries_of(WORLD_TIS)
    assert countries, "the TIS table has no World"
    return countries


@functools.cache
def tis_of_country() -> dict[str, str]:
    """ISO alpha-2 -> TIS numeric code (4 digits), for writing CWR."""
    out: dict[str, str] = {}
    for code, territory in Territory.all_tis_n.items():
        if not territory.is_group and territory.tis_a in ISO_COUNTRIES:
            out.setdefault(territory.tis_a, f"{int(code):04d}")
    return out


def as_ledger(countries: frozenset[str]) -> tuple[list[str], list[str]]:
    """(territories, excluded_territories) of a set of countries, in the ledger's terms."""
    everywhere = world()
    if countries >= everywhere:
        return [WORLDWIDE], []
    if len(countries) > MAX_LISTED:
        return [WORLDWIDE], sorted(everywhere - countries)
    return sorted(countries), []


def from_ledger(territories: list[str], excluded: list[str]) -> frozenset[str]:
    """The countries a ledger claim covers (the inverse of as_ledger, over the TIS world)."""
    if WORLDWIDE in territories:
        return world() - frozenset(excluded)
    return frozenset(territories) - frozenset(excluded)
