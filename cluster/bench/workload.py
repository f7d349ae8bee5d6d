"""The benchmark's workload: realistic registry transactions, signed before the clock starts.

The unit is a song: six txs by one org's client key, in dependency order — RegisterParty (a
writer who is a member of the org), RegisterWork (that writer as composer, a valid ISWC),
RegisterRecording (the writer as featured performer, a KR ISRC), LinkIdentifiers (ISWC to
ISRC), SetShares (the writer holds 100 % PR of the work) and ReportUsage (one line for the
ISRC). Every id is unique across the whole run (the song number is global), so every tx is valid
for the org that signs it when the six of a song commit in order — the bench keeps a song's txs
in one batch to one node, which preserves their order through that node's mempool and gossip.
Songs are dealt to orgs round-robin (generic orgs ORG1..N hold every role).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kledger.node.chain.keys import KeyPair
from kledger.node.chain.tx import SignedTx, TxBody, sign_tx
from kledger.node.registry.identifiers import iswc_check_digit

TXS_PER_SONG = 6
# ISRC designation codes are 5 digits per registrant and year: a new registrant code every
# 100,000 songs keeps them unique for any run size this bench allows.
ISRC_SERIALS = 100_000
MAX_SONGS = 36**3 * ISRC_SERIALS
REGISTRANT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class SignedSong:
    """One song's txs, signed, in the order they must commit."""

    org: str
    encodings: tuple[bytes, ...]
    tx_hashes: tuple[bytes, ...]


def iswc_of(song: int) -> str:
    digits = f"{song + 1:09d}"
    return f"T-{digits[:3]}.{digits[3:6]}.{digits[6:]}-{iswc_check_digit(digits)}"


def isrc_of(song: int) -> str:
    block, serial = divmod(song, ISRC_SERIALS)
    registrant = "".join(REGISTRANT_ALPHABET[(block // 36**i) % 36] for i in (2, 1, 0))
    return f"KR-{registrant}-26-{serial:05d}"


def song_payloads(org: str, song: int) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of the six txs of song number `song`, registered by `org`."""
    assert 0 <= song < MAX_SONGS, song
    party = f"{org}-P{song:08d}"
    work = f"{org}-W{song:08d}"
    iswc, isrc = iswc_of(song), isrc_of(song)
    title = f"Bench Song {song}"
    return [
        (
            "RegisterParty",
            {
                "party_id": party,
                "kind": "person",
                "names": [{"name": f"Writer {song}"}],
                "memberships": [{"society": org, "right": "PR", "territory": "Worldwide"}],
            },
        ),
        (
            "RegisterWork",
            {
                "work_id": work,
                "iswc": iswc,
                "titles": [title],
                "creators": [{"party_id": party, "role": "C"}],
                "provenance": {
                    "creation_type": "human",
                    "human_contribution": "melody and lyrics by the credited writer",
                    "warranty_ref": f"{org}-HW-{song:08d}",
                },
            },
        ),
        (
            "RegisterRecording",
            {
                "isrc": isrc,
                "title": title,
                "duration_s": 180 + song % 120,
                "main_artists": [f"Artist {song % 997}"],
                "performers": [{"party_id": party, "featured": True}],
            },
        ),
        (
            "LinkIdentifiers",
            {"from": {"kind": "iswc", "value": iswc}, "to": {"kind": "isrc", "value": isrc}},
        ),
        (
            "SetShares",
            {
                "subject": {"kind": "work", "id": work},
                "right": "PR",
                "territories": ["Worldwide"],
                "valid_from": "2026-01-01",
                "shares": [{"party_id": party, "kind": "writer", "role": "C", "ownership": 10_000}],
            },
        ),
        (
            "ReportUsage",
            {
                "report_id": f"{org}-R{song:08d}",
                "period": "2026-01",
                "territory": "KR",
                "service": "Melon",
                "commercial_model": "subscription",
                "use_type": "stream",
                "currency": "KRW",
                "net_revenue_minor": 1_000_000 + song,
                "total_usages": 100_000,
                "lines": [
                    {
                        "line_id": "000001",
                        "code_kind": "isrc",
                        "code": isrc,
                        "usages": 1 + song % 5000,
                    }
                ],
            },
        ),
    ]


def sign_songs(
    chain_id: str, keys: dict[str, KeyPair], first_song: int, songs: int
) -> list[SignedSong]:
    """`songs` songs numbered from first_song, dealt to the orgs of `keys` round-robin."""
    orgs = sorted(keys)
    out: list[SignedSong] = []
    for song in range(first_song, first_song + songs):
        org = orgs[song % len(orgs)]
        signed: list[SignedTx] = [
            sign_tx(keys[org], TxBody(chain_id, tx_type, song * TXS_PER_SONG + i, payload))
            for i, (tx_type, payload) in enumerate(song_payloads(org, song))
        ]
        out.append(
            SignedSong(
                org,
                tuple(tx.encoding for tx in signed),
                tuple(tx.tx_hash for tx in signed),
            )
        )
    return out
