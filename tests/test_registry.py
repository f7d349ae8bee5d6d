"""The registry state machine: every transaction type, its rules and its permissions, allowed
and refused; refused txs change no state; determinism of the state root.

`Chain` (also used by the other registry test files) runs real signed txs through
Registry.check_admission and Registry.execute_block over an in-memory store."""

from __future__ import annotations

from typing import Any

import pytest

from node import smt
from node.errors import Refused
from node.keyspace import DictView
from node.receipt import TxResult
from node.registry import BlockContext, Registry
from node.tx import TxBody, sign_tx
from tests.helpers import key, make_genesis

DAY_MS = 86_400_000
START_MS = 1_767_225_600_000  # 2026-01-01


class Chain:
    def __init__(self) -> None:
        self.genesis = make_genesis()
        self.registry = Registry(self.genesis)
        self.view = DictView()
        self.view.apply(self.registry.genesis_writes())
        self.height = 0
        self.time_ms = START_MS
        self.nonce = 0
        self.roots = [self.registry.genesis_state_root()]
        self.blocks: list[tuple[list[Any], BlockContext]] = []

    def signed(self, signer: str, tx_type: str, payload: dict[str, Any]):
        self.nonce += 1
        body = TxBody(self.genesis.chain_id, tx_type, self.nonce, payload)
        return sign_tx(key(signer), body), body

    def block(
        self, *txs: tuple[str, str, dict[str, Any]], advance_ms: int = 1000
    ) -> list[TxResult]:
        self.height += 1
        self.time_ms += advance_ms
        ctx = BlockContext(self.genesis.chain_id, 0, self.height, self.time_ms)
        signed = [self.signed(*tx) for tx in txs]
        outcome = self.registry.execute_block(self.view, signed, ctx)
        self.view.apply(outcome.writes)
        assert self.registry.state_root(self.view) == outcome.state_root
        self.roots.append(outcome.state_root)
        self.blocks.append((signed, ctx))
        self.last_outcome = outcome
        return outcome.results

    def ok(self, signer: str, tx_type: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
        [result] = self.block((signer, tx_type, payload), **kw)
        assert result.ok, result
        return result.output or {}

    def refused(self, signer: str, tx_type: str, payload: dict[str, Any]) -> TxResult:
        before = dict(self.view.data)
        [result] = self.block((signer, tx_type, payload))
        assert not result.ok, f"{tx_type} unexpectedly passed"
        after = {k: v for k, v in self.view.data.items() if k != smt.ROOT_KEY}
        assert after == {k: v for k, v in before.items() if k != smt.ROOT_KEY}  # no state change
        return result

    def admit(self, signer: str, tx_type: str, payload: dict[str, Any]) -> None:
        tx, body = self.signed(signer, tx_type, payload)
        self.registry.check_admission(self.view, tx, body)


def human(warranty: str = "KOMCA-HW-2026-0001") -> dict[str, Any]:
    return {
        "creation_type": "human",
        "human_contribution": "melody and lyrics written by the credited writers",
        "warranty_ref": warranty,
    }


ISWC = "T-034.524.680-1"
ISRC = "KRA341561064"
CID = "A123456789012345"
UCI = "urn:uci:I001+SBSi-B10000083052"


def party(party_id: str, society: str, ipi: str | None = None, kind: str = "person"):
    name: dict[str, Any] = {"name": party_id.title()}
    if ipi:
        name["ipi"] = ipi
    return {
        "party_id": party_id,
        "kind": kind,
        "names": [name],
        "memberships": [{"society": society}],
    }


def catalog(chain: Chain) -> None:
    """The worked example's catalog: one work, one recording, confirmed links, shares."""
    results = chain.block(
        ("KOMCA/client", "RegisterParty", party("composer", "KOMCA", "00662307358")),
        ("KOMCA/client", "RegisterParty", party("lyricist", "KOMCA")),
        ("KOMCA/client", "RegisterParty", party("publisher", "KOMCA", kind="company")),
        ("RIAK/client", "RegisterParty", party("label-a", "RIAK", kind="company")),
        ("RIAK/client", "RegisterParty", party("label-b", "RIAK", kind="company")),
        ("FKMP/client", "RegisterParty", party("singer-1", "FKMP")),
        ("FKMP/client", "RegisterParty", party("singer-2", "FKMP")),
        ("FKMP/client", "RegisterParty", party("guitarist", "FKMP")),
    )
    assert all(r.ok for r in results), results
    chain.ok(
        "KOMCA/client",
        "RegisterWork",
        {
            "work_id": "W1",
            "iswc": ISWC,
            "titles": ["Spring Day"],
            "creators": [
                {"party_id": "composer", "role": "C"},
                {"party_id": "lyricist", "role": "A"},
            ],
            "publishers": [{"party_id": "publisher", "role": "E"}],
            "provenance": human(),
        },
    )
    out = chain.ok(
        "RIAK/client",
        "RegisterRecording",
        {
            "isrc": ISRC,
            "title": "Spring Day",
            "duration_s": 274,
            "main_artists": ["Singer One"],
            "producers": ["label-a", "label-b"],
            "performers": [
                {"party_id": "singer-1", "featured": True},
                {"party_id": "singer-2", "featured": True},
                {"party_id": "guitarist"},
            ],
            "works": ["W1"],
            "cids": [CID],
            "ucis": [UCI],
        },
    )
    assert [link["status"] for link in out["links"]] == ["asserted"] * 3
    results = chain.block(
        ("KOMCA/client", "LinkIdentifiers", {"from": {"kind": "iswc", "value": ISWC}, "to": {"kind": "isrc", "value": ISRC}}),
        ("KMCA/client", "LinkIdentifiers", {"from": {"kind": "cid", "value": CID}, "to": {"kind": "isrc", "value": ISRC}}),
        ("KMCA/client", "LinkIdentifiers", {"from": {"kind": "isrc", "value": ISRC}, "to": {"kind": "uci", "value": UCI}}),
    )  # fmt: skip
    assert [r.output["status"] for r in results if r.output] == ["confirmed"] * 3, results
    results = chain.block(
        ("KOMCA/client", "SetShares", {
            "subject": {"kind": "work", "id": "W1"}, "right": "PR", "shares": [
                {"party_id": "composer", "kind": "writer", "role": "C", "ownership": 2500},
                {"party_id": "lyricist", "kind": "writer", "role": "A", "ownership": 2500},
                {"party_id": "publisher", "kind": "publisher", "role": "E", "ownership": 5000},
            ]}),
        ("RIAK/client", "SetShares", {
            "subject": {"kind": "recording", "id": ISRC}, "right": "NR_PRODUCER", "shares": [
                {"party_id": "label-a", "share": 7000}, {"party_id": "label-b", "share": 3000}]}),
        ("FKMP/client", "SetShares", {
            "subject": {"kind": "recording", "id": ISRC}, "right": "NR_PERFORMER", "shares": [
                {"party_id": "singer-1", "share": 4000}, {"party_id": "singer-2", "share": 4000},
                {"party_id": "guitarist", "share": 2000}]}),
    )  # fmt: skip
    assert all(r.ok for r in results), results


def report(lines: list[dict[str, Any]], report_id: str = "R1", **header: Any) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "period": "2026-01",
        "territory": "KR",
        "service": "Melon",
        "commercial_model": "subscription",
        "use_type": "stream",
        "currency": "KRW",
        "net_revenue_minor": 10_000_000,
        "total_usages": 1_000_000,
        "lines": lines,
        **header,
    }


def test_catalog_builds_and_every_step_is_recorded():
    chain = Chain()
    catalog(chain)
    assert len(set(chain.roots)) == len(chain.roots)  # every block changed the state root


def test_smoke_distribution_of_the_worked_example():
    chain = Chain()
    catalog(chain)
    line = {"line_id": "L1", "code_kind": "isrc", "code": ISRC, "usages": 12_340}
    chain.ok("KMCA/client", "ReportUsage", report([line]))
    out = chain.ok(
        "KOMCA/client",
        "RunDistribution",
        {"distribution_id": "D1", "period": "2026-01", "territory": "KR", "currency": "KRW"},
    )
    assert out["pool_minor"] == 80_210
